//! Errors of the plugin. Every variant has a stable `kind` string; over IPC, FFI and JNI an
//! error is serialized as `{ "kind": "...", "message": "..." }` so callers can branch on it.

use serde::{ser::SerializeStruct, Serialize, Serializer};

/// The error underneath a storage, migration or network error (`std::error::Error::source`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the plugin's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something the plugin cannot accept (bad method, path, priority, JSON...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A URL or host outside the configured API origins, or plain http to a non-loopback host.
    #[error("origin not allowed: {0}")]
    OriginNotAllowed(String),
    /// A payload or the queue is over its configured limit.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// `configure` was never called on this database.
    #[error("not configured: call configure() with the API base URL first")]
    NotConfigured,
    /// No mutation (or dead letter) with that id.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation needs a state the row is not in (e.g. editing a row that is not dead).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database file is not a database, is corrupt, read-only, locked, or the disk is full;
    /// or a file could not be read or copied. `source`: the SQLite or I/O error underneath.
    #[error("storage error: {message}")]
    Storage {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Data stored in the database cannot be read back (a damaged or hand-edited file): never
    /// read as a default. `what` names the data; the parse error is kept as the source.
    #[error("stored {what} is unreadable (the database file was damaged or edited): {source}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The database schema is newer or older than this build can migrate. `source`: sqlx's
    /// migration error.
    #[error("migration error: {message}")]
    Migration {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A network-level failure outside a drain (e.g. token refresh). `source`: the HTTP
    /// client's error.
    #[error("network error: {message}")]
    Network {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Authentication missing or refused.
    #[error("auth error: {0}")]
    Auth(String),
    /// Another drain holds the lease on this database.
    #[error("a drain is already running on this database")]
    AlreadyRunning,
    /// The host (Tauri, OS scheduler) failed.
    #[error("platform error: {0}")]
    Platform(String),
    /// A bug: a panic caught at an FFI boundary, or an invariant broken.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Stable machine-readable name, the `kind` field seen by JS and FFI callers.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalidInput",
            Error::OriginNotAllowed(_) => "originNotAllowed",
            Error::LimitExceeded(_) => "limitExceeded",
            Error::NotConfigured => "notConfigured",
            Error::NotFound(_) => "notFound",
            Error::Conflict(_) => "conflict",
            Error::Storage { .. } => "storage",
            Error::Corrupt { .. } => "corrupt",
            Error::Migration { .. } => "migration",
            Error::Network { .. } => "network",
            Error::Auth(_) => "auth",
            Error::AlreadyRunning => "alreadyRunning",
            Error::Platform(_) => "platform",
            Error::Internal(_) => "internal",
        }
    }

    /// A storage error that says what failed, keeping the error underneath.
    pub(crate) fn storage(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Storage {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A network error that says what failed, keeping the error underneath.
    pub(crate) fn network(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Network {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    /// For `map_err` on the parse of stored JSON: `what` names the data in the message.
    pub(crate) fn corrupt(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Error::Corrupt {
            what: what.to_string(),
            source,
        }
    }
}

impl Serialize for Error {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Error", 2)?;
        s.serialize_field("kind", self.kind())?;
        s.serialize_field("message", &self.to_string())?;
        s.end()
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED (and their extended codes): someone else holds the file.
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

impl Error {
    /// SQLite gave up waiting for a lock another connection holds (its busy timeout ran out).
    pub(crate) fn is_lock_timeout(&self) -> bool {
        matches!(self, Error::Storage { source: Some(s), .. }
            if s.downcast_ref::<sqlx::Error>().is_some_and(is_busy))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        let message = match &e {
            sqlx::Error::RowNotFound => return Error::NotFound("row".into()),
            sqlx::Error::Database(db) => storage_hint(db.message()),
            sqlx::Error::Io(io) => format!("I/O: {io}"),
            sqlx::Error::PoolTimedOut => {
                "timed out waiting for the database (locked by another process?)".into()
            }
            other => storage_hint(&other.to_string()),
        };
        Error::storage(message, e)
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        let msg = e.to_string();
        if msg.contains("not a database") || msg.contains("malformed") || msg.contains("locked") {
            Error::storage(storage_hint(&msg), e)
        } else {
            Error::Migration {
                message: msg,
                source: Some(e.into()),
            }
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::InvalidInput(format!("JSON: {e}"))
    }
}

/// SQLite's messages are terse; say what the user can do about the common ones.
fn storage_hint(msg: &str) -> String {
    let lower = msg.to_ascii_lowercase();
    let hint = if lower.contains("not a database") || lower.contains("malformed") {
        " (the database file is corrupt or not a SQLite database)"
    } else if lower.contains("readonly") || lower.contains("read-only") {
        " (the database file or its folder is read-only)"
    } else if lower.contains("locked") || lower.contains("busy") {
        " (the database is locked by another connection or process)"
    } else if lower.contains("full") {
        " (the disk is full; nothing queued was lost)"
    } else if lower.contains("unable to open") {
        " (the path cannot be opened: missing folder or no permission)"
    } else {
        ""
    };
    format!("{msg}{hint}")
}

/// Result alias used throughout the plugin.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_kind_and_message() {
        let v = serde_json::to_value(Error::OriginNotAllowed("https://evil.example".into())).unwrap();
        assert_eq!(v["kind"], "originNotAllowed");
        assert_eq!(v["message"], "origin not allowed: https://evil.example");
    }

    #[test]
    fn storage_and_network_errors_keep_what_is_underneath() {
        let e: Error = sqlx::Error::PoolTimedOut.into();
        assert_eq!(e.kind(), "storage");
        assert!(e
            .to_string()
            .starts_with("storage error: timed out waiting for the database"));
        let under = std::error::Error::source(&e).expect("the sqlx error is kept");
        assert!(under.to_string().contains("pool timed out"), "{under}");
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::storage("cannot copy x for upload: denied", io);
        assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "denied");
        assert_eq!(
            serde_json::to_value(&e).unwrap()["message"],
            "storage error: cannot copy x for upload: denied"
        );
    }

    #[test]
    fn storage_errors_explain_themselves() {
        assert!(storage_hint("file is not a database").contains("corrupt"));
        assert!(storage_hint("database or disk is full").contains("disk is full"));
    }
}

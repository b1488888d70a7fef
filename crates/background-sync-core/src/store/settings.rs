//! Settings: the configuration, credentials, the background toggle and the last run's summary,
//! one row each in `settings`.

use super::Store;
use crate::error::{Error, Result};
use crate::models::{AuthConfig, SyncConfig};
use crate::secret::{self, CredentialStorage};

/// The credential storage mode of one open database, and the credentials of `MemoryOnly`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    pub(super) storage: CredentialStorage,
    memory: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Credentials {
    pub(crate) fn new(storage: CredentialStorage) -> Self {
        Self {
            storage,
            memory: Default::default(),
        }
    }
}

pub(super) const KEY_CONFIG: &str = "config";

pub(super) const KEY_AUTH: &str = "auth";

pub(super) const KEY_ENABLED: &str = "enabled";

pub(super) const KEY_LAST_SYNC: &str = "last_sync_at";

pub(super) const KEY_LAST_ERROR: &str = "last_error";

/// Stored credentials; none stored is the default (no token), unreadable ones are an error.
fn parse_auth(stored: Option<String>) -> Result<AuthConfig> {
    match stored {
        None => Ok(AuthConfig::default()),
        Some(s) => serde_json::from_str(&s).map_err(Error::corrupt("credentials")),
    }
}

/// Insert or replace one setting (on the pool or inside a transaction).
pub(super) async fn put_setting<'e>(
    conn: impl sqlx::SqliteExecutor<'e>,
    key: &str,
    value: &str,
) -> Result<()> {
    // language=SQLite
    sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    pub(super) async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        // language=SQLite
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(super) async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        put_setting(&self.pool, key, value).await
    }

    pub(crate) async fn load_config(&self) -> Result<Option<SyncConfig>> {
        match self.get_setting(KEY_CONFIG).await? {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(Error::corrupt("configuration")),
        }
    }

    /// The stored configuration as JSON text (cheap to compare with a cached copy).
    pub(crate) async fn load_config_raw(&self) -> Result<Option<String>> {
        self.get_setting(KEY_CONFIG).await
    }

    pub(crate) async fn save_config(&self, cfg: &SyncConfig) -> Result<()> {
        self.set_setting(KEY_CONFIG, &serde_json::to_string(cfg)?).await
    }

    /// The stored credentials as JSON, read through the credential storage mode: a sealed row
    /// opens with the key; without the key (or with another one) it is an `auth` error, so a
    /// drain sends nothing rather than requests without the app's token.
    fn open_auth(&self, stored: Option<String>) -> Result<Option<String>> {
        let Some(s) = stored else { return Ok(None) };
        if !secret::is_sealed(&s) {
            return Ok(Some(s));
        }
        match &self.credentials.storage {
            CredentialStorage::Sealed(key) => secret::open(key, &s).map(Some).ok_or_else(|| {
                Error::Auth(
                    "the stored credentials do not open with this device's key (restored from another \
                     device, or the key was reset): sign in again (setAuth)"
                        .into(),
                )
            }),
            _ => Err(Error::Auth(
                "the stored credentials are sealed and this process has no key for them (the native \
                 shim did not hand its key over): see docs/guarantees.md"
                    .into(),
            )),
        }
    }

    /// What to write for these credentials (`None`: nothing goes to the file).
    fn at_rest(&self, json: &str) -> Result<Option<String>> {
        match &self.credentials.storage {
            CredentialStorage::Plaintext => Ok(Some(json.to_string())),
            CredentialStorage::Sealed(key) => secret::seal(key, json).map(Some),
            CredentialStorage::MemoryOnly => Ok(None),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.credentials.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn load_auth(&self) -> Result<AuthConfig> {
        let json = match self.credentials.storage {
            CredentialStorage::MemoryOnly => self.memory().clone(),
            _ => self.open_auth(self.get_setting(KEY_AUTH).await?)?,
        };
        parse_auth(json)
    }

    pub(crate) async fn save_auth(&self, auth: &AuthConfig) -> Result<()> {
        let json = serde_json::to_string(auth)?;
        match self.at_rest(&json)? {
            Some(v) => self.set_setting(KEY_AUTH, &v).await,
            None => {
                *self.memory() = Some(json);
                Ok(())
            }
        }
    }

    /// Store `new` only if the stored credentials are still `old` (a token refresh must not
    /// overwrite a sign-out or another user's sign-in that happened meanwhile).
    pub(crate) async fn replace_auth(&self, old: &AuthConfig, new: &AuthConfig) -> Result<bool> {
        let old_json = serde_json::to_string(old)?;
        if let CredentialStorage::MemoryOnly = self.credentials.storage {
            let mut mem = self.memory();
            if serde_json::to_string(&parse_auth(mem.clone())?)? != old_json {
                return Ok(false);
            }
            *mem = Some(serde_json::to_string(new)?);
            return Ok(true);
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // language=SQLite
        let stored: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(KEY_AUTH)
            .fetch_optional(&mut *tx)
            .await?;
        let current = parse_auth(self.open_auth(stored)?)?;
        if serde_json::to_string(&current)? != old_json {
            return Ok(false);
        }
        let value = self
            .at_rest(&serde_json::to_string(new)?)?
            .expect("file-backed modes write a value");
        put_setting(&mut *tx, KEY_AUTH, &value).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Bring the credentials row in line with the storage mode when the database opens: seal a
    /// plaintext row (Sealed), or remove it (MemoryOnly, which keeps nothing in the file). The
    /// old bytes are overwritten (`secure_delete`) and the WAL is checkpointed and truncated,
    /// so the plaintext does not linger in free space or in the log.
    pub(super) async fn secure_credentials_at_rest(&self) -> Result<()> {
        if let CredentialStorage::Plaintext = self.credentials.storage {
            return Ok(());
        }
        let Some(stored) = self.get_setting(KEY_AUTH).await? else {
            return Ok(());
        };
        if secret::is_sealed(&stored) {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        // language=SQLite
        sqlx::query("PRAGMA secure_delete = ON")
            .execute(&mut *conn)
            .await?;
        let result = async {
            match self.at_rest(&stored)? {
                Some(sealed) => put_setting(&mut *conn, KEY_AUTH, &sealed).await?,
                None => {
                    *self.memory() = Some(stored.clone());
                    // language=SQLite
                    sqlx::query("DELETE FROM settings WHERE key = ?")
                        .bind(KEY_AUTH)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            // language=SQLite
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await?;
            Ok::<_, Error>(())
        }
        .await;
        // language=SQLite
        sqlx::query("PRAGMA secure_delete = OFF")
            .execute(&mut *conn)
            .await?;
        result
    }

    pub(crate) async fn enabled(&self) -> Result<bool> {
        Ok(self.get_setting(KEY_ENABLED).await?.as_deref() == Some("1"))
    }

    pub(crate) async fn set_enabled(&self, on: bool) -> Result<()> {
        self.set_setting(KEY_ENABLED, if on { "1" } else { "0" }).await
    }

    pub(crate) async fn set_last_error(&self, message: &str) -> Result<()> {
        self.set_setting(KEY_LAST_ERROR, message).await
    }

    pub(crate) async fn last_sync(&self) -> Result<(Option<i64>, Option<String>)> {
        let at = self
            .get_setting(KEY_LAST_SYNC)
            .await?
            .and_then(|s| s.parse().ok());
        let err = self.get_setting(KEY_LAST_ERROR).await?.filter(|s| !s.is_empty());
        Ok((at, err))
    }
}

//! The outbox store: one SQLite file (WAL), embedded migrations, and every statement the engine
//! runs. Write transactions start with `BEGIN IMMEDIATE` so a reader never has to upgrade to a
//! writer mid-transaction (which SQLite answers with SQLITE_BUSY instead of waiting).
//! Time is always passed in (`now` in ms since the epoch).
//!
//! This file opens the database (pragmas, migrations, the two pools); each child holds the
//! statements of one job, as `impl Store` blocks: `settings`, `outbox` (enqueue and the app's
//! edits), `ledger` (lease, claim, outcomes, recovery), `uploads` (the same for files),
//! `outcomes` (what the app reads back), `runs` (history, prune), `rows` (row readers).

use crate::error::{is_busy, Error, Result};
use crate::models::{Delivered, Durability, EntityRef, StatusEvent, SyncConfig};
use crate::per_path::PerPath;
use crate::secret::CredentialStorage;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

mod ledger;
mod outbox;
mod outcomes;
mod rows;
mod runs;
mod settings;
mod uploads;

pub(crate) use ledger::{Claimed, Outcome};
pub(crate) use outbox::Prepared;
pub(crate) use outcomes::SettledCursor;
use settings::KEY_CONFIG;
pub(crate) use uploads::{ClaimedUpload, PreparedUpload, Target, UploadOutcome, UploadSettled};

/// The two queues the drain claims from. Their lifecycle columns (`state`, `owner`, attempts,
/// dead letters) have the same names, so lease recovery and revival are written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    Outbox,
    Uploads,
}

impl Queue {
    pub(crate) const ALL: [Queue; 2] = [Queue::Outbox, Queue::Uploads];

    /// The table's name, for the statements shared by both queues (never user input).
    fn table(self) -> &'static str {
        match self {
            Queue::Outbox => "outbox",
            Queue::Uploads => "uploads",
        }
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: SqlitePool,
    /// Drain bookkeeping (lease, claim, outcomes) on one connection with `synchronous=NORMAL`:
    /// losing its last commits to a power cut only means resending with the same idempotency
    /// key (the server replays), so an fsync per outcome buys nothing. Enqueues stay on `pool`
    /// (FULL by default): an acknowledged write must survive power loss.
    drain: SqlitePool,
    path: PathBuf,
    credentials: settings::Credentials,
    /// Enqueue calls waiting for the next commit (shared by clones of this handle's store).
    writes: std::sync::Arc<outbox::WriteQueue>,
}

/// Whether an outcome was written (this drainer still owned the row), and what the app is told.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Applied {
    /// Not ours any more (the lease moved on): nothing written.
    No,
    /// Written (rescheduled or released).
    Yes,
    /// The row first, then the mutations coalesced into it, in enqueue order.
    Delivered(Vec<Delivered>),
    Dead {
        id: String,
        entity: EntityRef,
        status: Option<u16>,
        error: String,
        /// Ids of the mutations coalesced into the row, dead with it.
        absorbed: Vec<String>,
    },
    /// An upload finished or moved to the dead letter, as the app is told it
    /// (`StatusEvent::Uploaded` / `StatusEvent::UploadDead`).
    Upload(StatusEvent),
}

impl Applied {
    pub(crate) fn written(&self) -> bool {
        !matches!(self, Applied::No)
    }
}

impl Store {
    /// Open (creating if needed) and migrate. `durability` overrides the persisted setting.
    pub(crate) async fn open(
        path: &Path,
        durability: Option<Durability>,
        key: Option<&str>,
        credentials: CredentialStorage,
    ) -> Result<Self> {
        if path.as_os_str().is_empty() {
            return Err(Error::invalid("database path is empty"));
        }
        let mut base =
            SqliteConnectOptions::from_str("sqlite://").map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(k) = key {
            if !cfg!(any(feature = "sqlcipher", feature = "sqlcipher-vendored")) {
                return Err(Error::invalid(
                    "an encryption key needs the `sqlcipher` cargo feature (this build would write plaintext)",
                ));
            }
            if k.is_empty() {
                return Err(Error::invalid("the encryption key is empty"));
            }
            // sqlx issues `key` first on every connection, before any other pragma. A raw key
            // (`x'<64 hex>'`) is double-quoted as SQLCipher expects; a passphrase is a string.
            let raw = k.len() == 67
                && k.starts_with("x'")
                && k.ends_with('\'')
                && k[2..66].chars().all(|c| c.is_ascii_hexdigit());
            let value = if raw {
                format!("\"{k}\"")
            } else {
                format!("'{}'", k.replace('\'', "''"))
            };
            base = base.pragma("key", value);
        }
        if let Some(k) = key {
            encrypt_plaintext_file(path, k).await?;
        }
        let base = base
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // Read the persisted durability on a first connection, so the pool is built right.
        let migrated = durability.is_none();
        let durability = match durability {
            Some(d) => d,
            None => {
                let probe = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(base.clone().synchronous(SqliteSynchronous::Full))
                    .await?;
                MIGRATOR.run(&probe).await?;
                // language=SQLite
                let cfg: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                    .bind(KEY_CONFIG)
                    .fetch_optional(&probe)
                    .await?;
                close_fully(&probe).await;
                cfg.and_then(|c| serde_json::from_str::<SyncConfig>(&c).ok())
                    .map(|c| c.durability)
                    .unwrap_or_default()
            }
        };
        let sync = match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Relaxed => SqliteSynchronous::Normal,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            // An in-process file cannot drop a connection the way a server can: a liveness ping
            // before every use would cost a worker-thread round trip per statement for nothing.
            .test_before_acquire(false)
            .connect_with(base.clone().synchronous(sync))
            .await?;
        if !migrated {
            MIGRATOR.run(&pool).await?;
        }
        let drain = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .connect_with(base.synchronous(SqliteSynchronous::Normal))
            .await?;
        let store = Self {
            pool,
            drain,
            path: path.to_path_buf(),
            credentials: settings::Credentials::new(credentials),
            writes: Default::default(),
        };
        store.secure_credentials_at_rest().await?;
        Ok(store)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn close(&self) {
        close_fully(&self.drain).await;
        close_fully(&self.pool).await;
    }
}

/// Close a pool and wait until its last connection is gone. sqlx's `Pool::close` can return
/// while a connection is still being given back (it then lands in the closed pool's idle queue
/// and stays open: launchbadge/sqlx#3217); a second call closes such stragglers. Bounded: a
/// connection held by a caller that never lets go is not waited for past 2 s.
async fn close_fully(pool: &SqlitePool) {
    let give_up = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        pool.close().await;
        if pool.size() == 0 || std::time::Instant::now() >= give_up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The header every plaintext SQLite file starts with (SQLCipher files start with random salt).
const PLAINTEXT_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The first 16 bytes of the file at `path`, if it exists and has them.
fn file_header(path: &Path) -> Option<[u8; 16]> {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .ok()
        .map(|_| head)
}

/// Whether `path` is an existing SQLite file that is not plaintext (encrypted, as far as a host
/// can tell without the key).
pub(crate) fn looks_encrypted(path: &Path) -> bool {
    file_header(path).is_some_and(|h| &h != PLAINTEXT_HEADER)
}

/// How long the first open with a key waits for other connections to the plaintext file (another
/// process, or another handle of this one encrypting it right now) to go away.
const ENCRYPT_ALONE_WAIT: Duration = Duration::from_secs(5);

/// A plaintext database opened with a key (an app that turned encryption on in an update) is
/// encrypted in place first: exported into a new encrypted file with SQLCipher's
/// `sqlcipher_export`, which then replaces it by an atomic rename. A crash before the rename
/// leaves the plaintext file as it was (the next open starts over); after it, the encrypted one.
///
/// Only a connection that has the file alone may do it: a connection opened on the old file
/// before the rename would go on writing there (acknowledged writes lost) and into the `-wal`
/// file that the new one then shares by name (the new file corrupt). Another handle of this
/// process opening at the same time waits here and finds the file encrypted.
async fn encrypt_plaintext_file(path: &Path, key: &str) -> Result<()> {
    let plaintext = || file_header(path).is_some_and(|h| &h == PLAINTEXT_HEADER);
    if !plaintext() {
        return Ok(());
    }
    let give_up = std::time::Instant::now() + ENCRYPT_ALONE_WAIT;
    // One attempt per file at a time in this process: two handles trying at once would each
    // see the other's connection and give way until both gave up.
    // Waiting for the turn counts against the same bound; past it, the attempt below answers.
    static TURNS: PerPath<tokio::sync::Mutex<()>> = PerPath::new();
    let file_turn = TURNS.get(path);
    let _turn = tokio::time::timeout_at(give_up.into(), file_turn.lock()).await;
    loop {
        if !plaintext() {
            return Ok(());
        }
        let attempt = match encrypt_alone(path, key).await {
            // Another process replaced the file between the look at its header and the attempt.
            Err(_) if !plaintext() => return Ok(()),
            other => other?,
        };
        match attempt {
            Alone::Done => return Ok(()),
            Alone::NotAlone if std::time::Instant::now() < give_up => {
                // Jittered, so two processes trying at once do not keep meeting.
                let pause = 20 + rand::random::<u64>() % 80;
                tokio::time::sleep(Duration::from_millis(pause)).await
            }
            Alone::NotAlone => {
                return Err(Error::Storage {
                    message: format!(
                        "{} is still open elsewhere (another process, or a handle opened without the \
                         key): a plaintext outbox is encrypted only when nothing else has it open; \
                         nothing was changed, open it again once the other one has closed it",
                        path.display()
                    ),
                    source: None,
                })
            }
        }
    }
}

enum Alone {
    Done,
    NotAlone,
}

/// One attempt of `encrypt_plaintext_file`: leave WAL mode (SQLite allows it only to the last
/// connection, which then also folds the `-wal` file in and deletes it) and keep an exclusive
/// lock on the old file until the encrypted copy has replaced it.
async fn encrypt_alone(path: &Path, key: &str) -> Result<Alone> {
    use sqlx::sqlite::{SqliteConnection, SqliteLockingMode};
    use sqlx::{Connection, Executor};
    let io = |what: &str, e: std::io::Error| {
        Error::storage(format!("encrypting {}: {what}: {e}", path.display()), e)
    };
    // No busy wait: a lock held elsewhere is the answer ("not alone"), retried by the caller.
    // create_if_missing: ATTACH opens with the main connection's flags, and must create the copy.
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .locking_mode(SqliteLockingMode::Exclusive)
        .busy_timeout(Duration::ZERO);
    let mut conn = match SqliteConnection::connect_with(&opts).await {
        Ok(c) => c,
        Err(e) if is_busy(&e) => return Ok(Alone::NotAlone),
        Err(e) => return Err(e.into()),
    };
    let attempt = async {
        // language=SQLite
        let mode: String = match sqlx::query_scalar("PRAGMA journal_mode = DELETE")
            .fetch_one(&mut conn)
            .await
        {
            Ok(m) => m,
            Err(e) if is_busy(&e) => return Ok(Alone::NotAlone),
            Err(e) => return Err(e.into()),
        };
        // SQLite answers with the mode it kept when it could not change it.
        if !mode.eq_ignore_ascii_case("delete") {
            return Ok(Alone::NotAlone);
        }
        // In exclusive locking mode the lock taken here is kept until the connection closes.
        match conn.execute("BEGIN EXCLUSIVE; COMMIT").await {
            Ok(_) => {}
            Err(e) if is_busy(&e) => return Ok(Alone::NotAlone),
            Err(e) => return Err(e.into()),
        }
        // Alone from here on: a copy left by an interrupted attempt can go.
        let tmp = path.with_extension("encrypting");
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("removing a stale copy", e)),
            _ => {}
        }
        // language=SQLite
        sqlx::query("ATTACH DATABASE ? AS encrypted KEY ?")
            .bind(tmp.to_string_lossy().into_owned())
            .bind(key)
            .execute(&mut conn)
            .await?;
        // language=SQLite
        sqlx::query("SELECT sqlcipher_export('encrypted')")
            .execute(&mut conn)
            .await?;
        // language=SQLite
        sqlx::query("DETACH DATABASE encrypted")
            .execute(&mut conn)
            .await?;
        // Still holding the old file's lock: nobody can have written to it since the export.
        std::fs::rename(&tmp, path).map_err(|e| io("replacing the plaintext file", e))?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("syncing the directory", e))?;
        }
        Ok(Alone::Done)
    }
    .await;
    let _ = conn.close().await;
    if let Ok(Alone::Done) = attempt {
        tracing::info!(path = %path.display(), "encrypted the existing plaintext database");
    }
    attempt
}

#[cfg(test)]
mod tests;

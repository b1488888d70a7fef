//! Settings: the configuration, credentials, the background toggle and the last run's summary,
//! one row each in `settings`.

use super::Store;
use crate::error::{Error, Result};
use crate::models::{AuthConfig, SyncConfig};

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

    pub(crate) async fn load_auth(&self) -> Result<AuthConfig> {
        parse_auth(self.get_setting(KEY_AUTH).await?)
    }

    pub(crate) async fn save_auth(&self, auth: &AuthConfig) -> Result<()> {
        self.set_setting(KEY_AUTH, &serde_json::to_string(auth)?).await
    }

    /// Store `new` only if the stored credentials are still `old` (a token refresh must not
    /// overwrite a sign-out or another user's sign-in that happened meanwhile).
    pub(crate) async fn replace_auth(&self, old: &AuthConfig, new: &AuthConfig) -> Result<bool> {
        let old_json = serde_json::to_string(old)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // language=SQLite
        let stored: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(KEY_AUTH)
            .fetch_optional(&mut *tx)
            .await?;
        let current = parse_auth(stored)?;
        if serde_json::to_string(&current)? != old_json {
            return Ok(false);
        }
        put_setting(&mut *tx, KEY_AUTH, &serde_json::to_string(new)?).await?;
        tx.commit().await?;
        Ok(true)
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

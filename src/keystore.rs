//! Desktop: the key that seals the stored credentials lives in the OS keyring (Secret Service
//! over D-Bus on Linux, the Keychain on macOS, Credential Manager on Windows), one per database
//! file, made on first use. The keyring can be absent (a headless Linux box has no Secret
//! Service), locked behind a prompt nobody answers, or hung: after `TIMEOUT` the credentials
//! are kept in memory only, never in plaintext, and the log says why.

use crate::{CredentialStorage, SecretKey};
use std::path::Path;
use std::time::Duration;

/// The keyring's service name; the account is the database's absolute path.
pub(crate) const SERVICE: &str = "tauri-plugin-background-sync";

const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the credentials of the database at `db` are kept: sealed with the keyring's key, or in
/// memory when the keyring cannot be used (with the reason).
pub(crate) async fn desktop_credentials(db: &Path) -> (CredentialStorage, Option<String>) {
    let account = std::path::absolute(db)
        .unwrap_or_else(|_| db.to_path_buf())
        .display()
        .to_string();
    let lookup = tokio::task::spawn_blocking(move || key_for(&account));
    match tokio::time::timeout(TIMEOUT, lookup).await {
        Ok(Ok(Ok(key))) => (CredentialStorage::Sealed(key), None),
        Ok(Ok(Err(e))) => (CredentialStorage::MemoryOnly, Some(e)),
        Ok(Err(e)) => (
            CredentialStorage::MemoryOnly,
            Some(format!("keyring task failed: {e}")),
        ),
        Err(_) => (
            CredentialStorage::MemoryOnly,
            Some(format!("the OS keyring did not answer within {TIMEOUT:?}")),
        ),
    }
}

fn key_for(account: &str) -> Result<SecretKey, String> {
    let entry = keyring::Entry::new(SERVICE, account).map_err(|e| format!("OS keyring: {e}"))?;
    match entry.get_secret() {
        Ok(bytes) => SecretKey::from_slice(&bytes).map_err(|e| format!("the keyring's entry: {e}")),
        Err(keyring::Error::NoEntry) => {
            let key = SecretKey::generate().map_err(|e| e.to_string())?;
            entry
                .set_secret(key.as_bytes())
                .map_err(|e| format!("OS keyring (storing a new key): {e}"))?;
            // Read it back: a keyring that accepts writes it cannot return would lose the
            // credentials at the next start.
            match entry.get_secret() {
                Ok(b) if b == key.as_bytes() => Ok(key),
                Ok(_) => Err("the OS keyring returned another key than it stored".into()),
                Err(e) => Err(format!("OS keyring (reading the new key back): {e}")),
            }
        }
        Err(e) => Err(format!("OS keyring: {e}")),
    }
}

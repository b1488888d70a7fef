//! Headless entry: everything a background process needs, from a database path alone (no
//! AppHandle, no webview). Blocking functions that build their own small tokio runtime; the
//! JSON variants are what the C ABI (iOS) and JNI (Android) wrappers return, and they never
//! panic: a panic is caught and reported as an `internal` error.

use crate::diagnose::{Diagnostics, PlatformFacts};
use crate::drain::DrainOptions;
use crate::engine::{BackgroundSync, OpenOptions};
use crate::error::{Error, Result};
use crate::models::{DrainReport, Enqueued, NewMutation, StatusEvent, SyncConfig, SyncStatus};
use crate::secret::{CredentialStorage, SecretKey};
use serde_json::{json, Value};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest budget accepted from a background caller (WorkManager stops work at 10 minutes).
pub const MAX_BUDGET_MS: u64 = 9 * 60_000;

fn block_on<F: Future + Send>(f: F) -> Result<F::Output>
where
    F::Output: Send,
{
    let run = move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Platform(format!("cannot start the async runtime: {e}")))?;
        let out = rt.block_on(f);
        // Do not wait for blocking tasks on the way out: a `getaddrinfo` that never answers
        // (hung DNS) would hold the caller past its budget. They finish on their own threads.
        rt.shutdown_background();
        Ok(out)
    };
    // Called from inside a runtime (a host that is itself async): a runtime cannot be nested
    // on one thread, so run on a scoped helper thread.
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join())
            .unwrap_or_else(|_| Err(Error::Internal("panic in the headless entry".into())))
    } else {
        run()
    }
}

/// The key the native shim read from the platform's secure store (Android Keystore, iOS
/// Keychain), for every database this process opens through the entries.
static SECRET_KEY: std::sync::RwLock<Option<SecretKey>> = std::sync::RwLock::new(None);

/// Hand over the key that seals the stored credentials (see [`CredentialStorage::Sealed`]);
/// `None` forgets it. The shims call this once per process, before any other entry: the plugin's
/// constructor in the foreground, the worker / BGTask handler in a background process. Without
/// a key, sealed credentials cannot be read (a drain then stops `authFailed` and sends
/// nothing) and credentials written through the entries would be plaintext. Since: unreleased.
pub fn set_secret_key(key: Option<SecretKey>) {
    *SECRET_KEY.write().unwrap_or_else(|p| p.into_inner()) = key;
}

/// The credential storage for databases opened in this process: sealed with the shim's key
/// if it gave one.
pub fn credential_storage() -> CredentialStorage {
    match &*SECRET_KEY.read().unwrap_or_else(|p| p.into_inner()) {
        Some(k) => CredentialStorage::Sealed(k.clone()),
        None => CredentialStorage::Plaintext,
    }
}

async fn open(path: &Path) -> Result<BackgroundSync> {
    let storage = credential_storage();
    let mut opts = OpenOptions::default();
    // A database the app encrypted (the plugin's `Builder::encrypt_database`) opens with the key
    // derived from the same platform key.
    if let CredentialStorage::Sealed(k) = &storage {
        if cfg!(any(feature = "sqlcipher", feature = "sqlcipher-vendored"))
            && crate::store::looks_encrypted(path)
        {
            opts = opts.encryption_key(k.database_key());
        }
    }
    BackgroundSync::open_with(path, opts.credentials(storage)).await
}

fn check_path(db_path: &str) -> Result<&Path> {
    if db_path.is_empty() {
        return Err(Error::invalid("database path is empty"));
    }
    Ok(Path::new(db_path))
}

/// Persist the configuration (merged over the stored one, like `configure` in JS).
pub fn configure(db_path: &str, config: Value) -> Result<()> {
    let path = check_path(db_path)?;
    block_on(async {
        let bs = open(path).await?;
        let merged = crate::models::merge_config(bs.config().await?, config)?;
        bs.configure(merged).await
    })?
}

pub fn enqueue(db_path: &str, mutation: NewMutation) -> Result<Enqueued> {
    let path = check_path(db_path)?;
    block_on(async { open(path).await?.enqueue(mutation).await })?
}

pub fn status(db_path: &str) -> Result<SyncStatus> {
    let path = check_path(db_path)?;
    block_on(async { open(path).await?.status().await })?
}

/// What will run and why not (see `BackgroundSync::diagnostics`), with the platform facts a
/// native host collected (`{"platform": "ios", ...}` as the Swift shim's `diagnostics` answers)
/// or none (`Headless`).
pub fn diagnostics(db_path: &str, facts: Option<PlatformFacts>) -> Result<Diagnostics> {
    let path = check_path(db_path)?;
    let facts = facts.unwrap_or(PlatformFacts::Headless);
    block_on(async { open(path).await?.diagnostics(facts).await })?
}

/// Outcomes no listener heard (see `BackgroundSync::catch_up`), one page: up to 500 delivered,
/// 500 dead and 500 upload outcomes with their `settled`, marked told as they are returned. A
/// native host that shows outcomes itself calls this until it returns no events; outcomes it
/// takes are not replayed to the webview.
pub fn take_outcomes(db_path: &str) -> Result<Vec<StatusEvent>> {
    let path = check_path(db_path)?;
    block_on(async {
        let mut events = Vec::new();
        open(path)
            .await?
            .replay(1, |e| {
                events.push(e);
                true
            })
            .await?;
        Ok(events)
    })?
}

pub fn set_enabled(db_path: &str, enabled: bool) -> Result<()> {
    let path = check_path(db_path)?;
    block_on(async { open(path).await?.set_enabled(enabled).await })?
}

/// Drain within `budget_ms`. A trigger other than `foreground` is a background run: it does
/// nothing (and says so in the report) when background sync is disabled.
pub fn drain(db_path: &str, budget_ms: u64, trigger: &str, cancel: CancellationToken) -> Result<DrainReport> {
    let path = check_path(db_path)?;
    let trigger = if trigger.is_empty() { "background" } else { trigger };
    let opts = DrainOptions {
        budget: Duration::from_millis(budget_ms.min(MAX_BUDGET_MS)),
        cancel,
        trigger: trigger.to_string(),
        respect_toggle: trigger != "foreground",
        network_available: None,
    };
    block_on(async {
        let bs = open(path).await?;
        let r = bs.drain(opts).await;
        bs.close().await;
        r
    })?
}

/// Run `f`, turning errors and panics into the JSON envelope.
fn envelope(f: impl FnOnce() -> Result<Value>) -> String {
    let v = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(mut v)) => {
            if let Value::Object(m) = &mut v {
                m.insert("ok".into(), Value::Bool(true));
            }
            v
        }
        Ok(Err(e)) => json!({ "ok": false, "error": e }),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            json!({ "ok": false, "error": Error::Internal(msg) })
        }
    };
    v.to_string()
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::invalid(format!("{what} is not valid JSON for its type: {e}")))
}

pub fn configure_json(db_path: &str, config_json: &str) -> String {
    envelope(|| {
        let v: Value = parse("config", config_json)?;
        configure(db_path, v)?;
        Ok(json!({}))
    })
}

pub fn enqueue_json(db_path: &str, mutation_json: &str) -> String {
    envelope(|| {
        let m: NewMutation = parse("mutation", mutation_json)?;
        Ok(json!({ "enqueued": enqueue(db_path, m)? }))
    })
}

pub fn drain_json(db_path: &str, budget_ms: u64, trigger: &str, cancel: CancellationToken) -> String {
    envelope(|| Ok(json!({ "report": drain(db_path, budget_ms, trigger, cancel)? })))
}

pub fn status_json(db_path: &str) -> String {
    envelope(|| Ok(json!({ "status": status(db_path)? })))
}

/// `facts_json`: the platform's facts, or `None` for the engine alone.
pub fn diagnostics_json(db_path: &str, facts_json: Option<&str>) -> String {
    envelope(|| {
        let facts = facts_json
            .map(|f| {
                serde_json::from_str::<PlatformFacts>(f)
                    .map_err(|e| Error::invalid(format!("facts_json: {e}")))
            })
            .transpose()?;
        Ok(json!({ "diagnostics": diagnostics(db_path, facts)? }))
    })
}

/// `key`: exactly 32 bytes, or empty to forget the key.
pub fn set_secret_key_json(key: &[u8]) -> String {
    envelope(|| {
        let key = if key.is_empty() {
            None
        } else {
            Some(SecretKey::from_slice(key)?)
        };
        set_secret_key(key);
        Ok(json!({}))
    })
}

pub fn take_outcomes_json(db_path: &str) -> String {
    envelope(|| Ok(json!({ "events": take_outcomes(db_path)? })))
}

pub fn set_enabled_json(db_path: &str, enabled: bool) -> String {
    envelope(|| {
        set_enabled(db_path, enabled)?;
        Ok(json!({}))
    })
}

/// The configuration a cold process would use, for diagnostics.
pub fn config(db_path: &str) -> Result<Option<SyncConfig>> {
    let path = check_path(db_path)?;
    block_on(async { open(path).await?.config().await })?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, defect 6: tokio's resolver runs `getaddrinfo` on a blocking thread; with a
    /// resolver that never answers, dropping the runtime used to wait for it (a 2 s drain
    /// returned after 12 s). The headless entries must return when their future does.
    #[test]
    fn the_headless_runtime_does_not_wait_for_hung_blocking_work() {
        let t = std::time::Instant::now();
        block_on(async {
            let _hung = tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(5)));
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
        .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the entry returned {:?} after its work ended",
            t.elapsed()
        );
    }
}

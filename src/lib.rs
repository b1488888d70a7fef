//! # tauri-plugin-background-sync
//!
//! A durable mutation outbox for offline-first Tauri apps, drained push-only to the app's REST
//! API: while the app is open, when connectivity returns, and when the OS wakes the app in the
//! background (Android WorkManager, iOS BGTaskScheduler, a timer on desktop).
//!
//! - From JS: the `tauri-plugin-background-sync-api` package (see README).
//! - From Rust: [`BackgroundSyncExt::background_sync`] on any `Manager`, or [`BackgroundSync`]
//!   directly on a database path (no Tauri needed).
//! - From a background process with no webview: [`entry`] (blocking) and the C ABI / JNI
//!   entries expanded by [`export_native_entries!`].

use serde::Deserialize;
use std::path::PathBuf;
use tauri::{
    plugin::{Builder as PluginBuilder, TauriPlugin},
    Manager, RunEvent, Runtime,
};

mod commands;
mod scheduler;

#[cfg(desktop)]
mod desktop;
#[cfg(desktop)]
mod keystore;
#[cfg(mobile)]
mod mobile;

// The engine's public API, unchanged: apps depend on this crate only.
pub use background_sync_core::*;
pub use scheduler::Scheduler;

/// Plugin configuration from `tauri.conf.json` > `plugins` > `background-sync`. Every
/// [`SyncConfig`] field may appear here (camelCase); they are merged over the stored
/// configuration at startup.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    /// Database file name inside the app data directory (default `background-sync.db`).
    #[serde(default)]
    pub database: Option<String>,
    #[serde(flatten)]
    pub sync: serde_json::Map<String, serde_json::Value>,
}

/// Default database file name in the app data directory.
pub const DEFAULT_DATABASE: &str = "background-sync.db";

/// Access the plugin from Rust app code (same operations as the JS API).
pub trait BackgroundSyncExt<R: Runtime> {
    fn background_sync(&self) -> &Plugin<R>;
}

impl<R: Runtime, T: Manager<R>> BackgroundSyncExt<R> for T {
    fn background_sync(&self) -> &Plugin<R> {
        self.state::<Plugin<R>>().inner()
    }
}

/// The managed plugin state: the engine, its scheduler and the platform hooks.
pub struct Plugin<R: Runtime> {
    engine: BackgroundSync,
    scheduler: Scheduler,
    #[cfg(desktop)]
    platform: desktop::Platform<R>,
    #[cfg(mobile)]
    platform: mobile::Platform<R>,
    subscriptions: std::sync::Mutex<std::collections::HashMap<u32, tauri::async_runtime::JoinHandle<()>>>,
    /// Directories the webview may upload files from (app data, local data, cache).
    upload_roots: Vec<std::path::PathBuf>,
    /// `tauri.conf.json` settings that could not be applied at startup because they have no
    /// `baseUrl` and nothing was configured yet: merged under the first `configure` call.
    pending_conf: std::sync::Mutex<Option<serde_json::Value>>,
}

impl<R: Runtime> Plugin<R> {
    /// The engine over the app's outbox database.
    pub fn engine(&self) -> &BackgroundSync {
        &self.engine
    }

    /// The foreground scheduler (timer, reconnect, after-enqueue drains).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// What will run in the background and why not, on this platform (README "Diagnostics"):
    /// the engine's side and the facts the OS gives (WorkManager and power settings on
    /// Android, Background App Refresh and pending BGTask requests on iOS, the scheduler on
    /// desktop), with a `problems` list of stable codes.
    pub async fn diagnostics(&self) -> Result<Diagnostics> {
        let (os, unavailable) = self.platform.facts(&self.scheduler).await;
        let mut d = self.engine.diagnostics(os).await?;
        if let Some(why) = unavailable {
            d.problems.push(Problem {
                code: "platformUnavailable".into(),
                message: format!("The OS could not be asked about background work: {why}"),
                fix: "Try again after the app has fully started; report it if it stays.".into(),
            });
        }
        Ok(d)
    }

    /// Turn background sync on: persist the toggle, register OS work, start the timer.
    pub async fn enable(&self) -> Result<()> {
        self.engine.set_enabled(true).await?;
        self.platform.register(&self.engine, true).await?;
        self.scheduler.wake();
        Ok(())
    }

    /// Turn background sync off. OS work stays registered and checks the toggle when it runs
    /// (the "always register, check in callback" pattern), so nothing is left half-cancelled.
    pub async fn disable(&self) -> Result<()> {
        self.engine.set_enabled(false).await?;
        self.scheduler.wake();
        Ok(())
    }

    /// Merge a partial configuration (camelCase JSON, as from JS) over the stored one and
    /// persist it. `null` resets a field to its default.
    pub async fn configure(&self, patch: serde_json::Value) -> Result<()> {
        let merged = merge_config(self.current_config().await?, patch)?;
        self.apply_config(merged).await
    }

    /// Change the stored configuration in place, typed: `edit` gets the current configuration
    /// (the defaults and any `tauri.conf.json` settings if nothing is stored yet) and what it
    /// leaves is validated and persisted, like [`Plugin::configure`]. Only the fields `edit`
    /// touches change.
    pub async fn update_config(&self, edit: impl FnOnce(&mut SyncConfig)) -> Result<()> {
        let mut config = self.current_config().await?.unwrap_or_default();
        edit(&mut config);
        self.apply_config(config).await
    }

    /// The stored configuration, or, before the first configure, the `tauri.conf.json` settings
    /// kept for it.
    async fn current_config(&self) -> Result<Option<SyncConfig>> {
        // An unreadable stored configuration (damaged file) is replaced by what the app
        // configures now, merged over the defaults, instead of failing every configure.
        let stored = match self.engine.config().await {
            Err(Error::Corrupt { .. }) => {
                tracing::warn!("the stored configuration is unreadable: configure replaces it");
                None
            }
            other => other?,
        };
        let pending = self
            .pending_conf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match pending {
            Some(conf) if stored.is_none() => Ok(Some(merge_config(None, conf)?)),
            _ => Ok(stored),
        }
    }

    async fn apply_config(&self, config: SyncConfig) -> Result<()> {
        self.engine.configure(config).await?;
        self.pending_conf.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.platform.register(&self.engine, false).await?;
        self.scheduler.wake();
        Ok(())
    }

    /// Queue mutations; wakes the scheduler (at once for high/critical priority).
    pub async fn enqueue_many(&self, mutations: Vec<NewMutation>) -> Result<Vec<Enqueued>> {
        let urgent = mutations.iter().any(|m| m.priority >= Priority::High);
        let out = self.engine.enqueue_many(mutations).await?;
        self.scheduler.after_enqueue(urgent);
        Ok(out)
    }

    /// Queue a file upload (any readable file: Rust code is trusted). Wakes the scheduler.
    pub async fn enqueue_upload(&self, upload: NewUpload) -> Result<EnqueuedUpload> {
        let urgent = upload.priority >= Priority::High;
        let out = self.engine.enqueue_upload(upload).await?;
        self.scheduler.after_enqueue(urgent);
        Ok(out)
    }

    /// Queue a file upload on behalf of the webview: the file must be inside the app's data
    /// or cache directories or `uploads.allowedDirs`, so a script injected into the webview
    /// cannot send arbitrary files (SSH keys, other apps' data) to the API.
    pub async fn enqueue_upload_from_webview(&self, upload: NewUpload) -> Result<EnqueuedUpload> {
        let extra: Vec<std::path::PathBuf> = self
            .engine
            .config()
            .await?
            .map(|c| c.uploads.allowed_dirs.iter().map(Into::into).collect())
            .unwrap_or_default();
        let file = std::fs::canonicalize(&upload.file_path)
            .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", upload.file_path)))?;
        let allowed = self
            .upload_roots
            .iter()
            .chain(&extra)
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .any(|root| file.starts_with(root));
        if !allowed {
            return Err(Error::InvalidInput(
                "the webview may only upload files inside the app's data or cache directories \
                 or uploads.allowedDirs"
                    .into(),
            ));
        }
        if self.is_private(&file) {
            return Err(Error::InvalidInput(
                "the webview may not upload the sync database, its journal files or the plugin's copies"
                    .into(),
            ));
        }
        // The checked path, not the given one: a symlink swapped later cannot redirect the read.
        let mut upload = upload;
        upload.file_path = file.to_string_lossy().into_owned();
        self.enqueue_upload(upload).await
    }

    /// The outbox database (with its WAL/SHM/journal) or a file in the plugin's copy folder,
    /// compared by canonical path and, on Unix, by inode (a hard link is the same file).
    fn is_private(&self, file: &std::path::Path) -> bool {
        let (files, copies) = self.engine.private_paths();
        if std::fs::canonicalize(&copies).is_ok_and(|c| file.starts_with(c)) {
            return true;
        }
        #[cfg(unix)]
        let id = |p: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
        };
        files.iter().any(|f| {
            std::fs::canonicalize(f).is_ok_and(|c| c == file) || {
                #[cfg(unix)]
                {
                    id(f).is_some() && id(f) == id(file)
                }
                #[cfg(not(unix))]
                {
                    false
                }
            }
        })
    }

    /// Drain now in the foreground and return the report.
    pub async fn sync_now(&self, budget: Option<std::time::Duration>) -> Result<DrainReport> {
        let opts = DrainOptions {
            budget: budget.unwrap_or(std::time::Duration::from_secs(25)),
            trigger: "foreground".into(),
            ..Default::default()
        };
        self.scheduler.drain_now(opts).await
    }
}

/// Initializes the plugin with the settings of `tauri.conf.json` (the shortcut for
/// `Builder::new().build()`).
pub fn init<R: Runtime>() -> TauriPlugin<R, Option<PluginConfig>> {
    Builder::new().build()
}

/// Typed plugin setup from Rust, for what `tauri.conf.json` cannot say or should not:
///
/// ```no_run
/// # use tauri_plugin_background_sync::{Builder, PluginConfig, SyncConfig};
/// fn plugin<R: tauri::Runtime>() -> tauri::plugin::TauriPlugin<R, Option<PluginConfig>> {
///     Builder::new()
///         .database("field-outbox.db")
///         .config(SyncConfig { base_url: "https://api.example.com/v1".into(), ..Default::default() })
///         .build()
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    database: Option<PathBuf>,
    config: Option<SyncConfig>,
    credentials: Option<CredentialStorage>,
    encryption: Option<DatabaseEncryption>,
}

/// How the whole database file is encrypted (SQLCipher), when it is.
#[derive(Clone)]
enum DatabaseEncryption {
    /// Derived from the platform key that seals the credentials: every process of the app,
    /// the Android worker and the iOS BGTask included, derives the same one.
    PlatformKey,
    /// The app's own passphrase or `x'…'` raw key.
    Key(String),
}

impl std::fmt::Debug for DatabaseEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatabaseEncryption::PlatformKey => "PlatformKey",
            DatabaseEncryption::Key(_) => "Key(<redacted>)",
        })
    }
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The outbox file: a name in the app data directory, or an absolute path. Takes
    /// precedence over `tauri.conf.json`'s `database`. The background hooks get the same path.
    pub fn database(mut self, path: impl Into<PathBuf>) -> Self {
        self.database = Some(path.into());
        self
    }

    /// The configuration, written over the stored one at every start (the code is the source
    /// of truth; runtime `configure` calls last until the next start). Settings in
    /// `tauri.conf.json` are merged over it. `base_url` is required: an empty one fails the
    /// plugin's setup.
    pub fn config(mut self, config: SyncConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Where `setAuth`'s credentials are kept (README "Credentials at rest"). The default is
    /// the platform's secure store: sealed with a key kept in the OS keyring on desktop, in the
    /// Android Keystore or the iOS Keychain on mobile (the shims hand it to the background
    /// runs), and in memory only when that store cannot be reached. Override it on desktop
    /// only, e.g. with [`CredentialStorage::Sealed`] and a key from your own secret store:
    /// Android's and iOS's background runs always use the shim's key. Since: unreleased.
    pub fn credentials(mut self, storage: CredentialStorage) -> Self {
        self.credentials = Some(storage);
        self
    }

    /// Encrypt the whole database file with SQLCipher under a key derived from the platform key
    /// of [`Builder::credentials`]'s default (Android Keystore, iOS Keychain, the desktop
    /// keyring), so the background runs open it too. Needs the `sqlcipher-vendored` (mobile) or
    /// `sqlcipher` cargo feature; without it, or without a platform key, the plugin's setup
    /// fails rather than writing plaintext. An existing plaintext database is encrypted in place
    /// at the first start. README "At-rest encryption". Since: unreleased.
    pub fn encrypt_database(mut self) -> Self {
        self.encryption = Some(DatabaseEncryption::PlatformKey);
        self
    }

    /// Encrypt the whole database with SQLCipher under the app's own key (a passphrase, or
    /// `x'…'` hex for a raw 256-bit key). Desktop only: Android's worker and iOS's BGTask open
    /// the file without the app's code, so there use [`Builder::encrypt_database`]. Since: unreleased.
    pub fn encryption_key(mut self, key: impl Into<String>) -> Self {
        self.encryption = Some(DatabaseEncryption::Key(key.into()));
        self
    }

    pub fn build<R: Runtime>(self) -> TauriPlugin<R, Option<PluginConfig>> {
        let Builder {
            database,
            config,
            credentials,
            encryption,
        } = self;
        PluginBuilder::<R, Option<PluginConfig>>::new("background-sync")
            .invoke_handler(tauri::generate_handler![
                commands::enable,
                commands::disable,
                commands::is_enabled,
                commands::configure,
                commands::set_auth,
                commands::clear_auth,
                commands::enqueue,
                commands::enqueue_many,
                commands::sync_now,
                commands::status,
                commands::pending,
                commands::dead_letters,
                commands::retry,
                commands::discard,
                commands::edit,
                commands::subscribe,
                commands::unsubscribe,
                commands::history,
                commands::delivered,
                commands::resolve_temp_id,
                commands::enqueue_upload,
                commands::uploads,
                commands::retry_upload,
                commands::discard_upload,
                commands::diagnostics,
            ])
            .setup(move |app, api| {
                let conf_owned = api.config().clone();
                let conf = conf_owned.as_ref();
                let file = database
                    .clone()
                    .or_else(|| conf.and_then(|c| c.database.clone()).map(PathBuf::from))
                    .unwrap_or_else(|| DEFAULT_DATABASE.into());
                let dir = app.path().app_data_dir()?;
                // An absolute `file` replaces `dir`.
                let path = dir.join(file);
                let code_config = config.clone();
                // The platform first: on Android/iOS its shim hands over the credentials key
                // while the plugin is registered.
                #[cfg(desktop)]
                let platform = desktop::init(app, api)?;
                #[cfg(mobile)]
                let platform = mobile::init(app, api)?;
                let chosen = credentials.clone();
                let encryption = encryption.clone();
                let (engine, pending_conf) = tauri::async_runtime::block_on(async {
                    let storage = match chosen {
                        Some(s) => s,
                        None => platform.credential_storage(&path).await,
                    };
                    let mut opts = OpenOptions::default();
                    match (&encryption, &storage) {
                        (None, _) => {}
                        (Some(DatabaseEncryption::Key(k)), _) => opts = opts.encryption_key(k.clone()),
                        (Some(DatabaseEncryption::PlatformKey), CredentialStorage::Sealed(k)) => {
                            opts = opts.encryption_key(k.database_key())
                        }
                        (Some(DatabaseEncryption::PlatformKey), _) => {
                            return Err(Error::Platform(
                                "Builder::encrypt_database: the platform's secure store gave no key (see the log); \
                                 the database was not opened"
                                    .into(),
                            ))
                        }
                    }
                    let engine = BackgroundSync::open_with(&path, opts.credentials(storage)).await?;
                    let mut pending = None;
                    let patch = conf
                        .filter(|c| !c.sync.is_empty())
                        .map(|c| serde_json::Value::Object(c.sync.clone()));
                    match (code_config, patch) {
                        (Some(code), patch) => {
                            let merged = match patch {
                                Some(patch) => merge_config(Some(code), patch)?,
                                None => code,
                            };
                            if merged.base_url.is_empty() {
                                return Err(Error::InvalidInput(
                                "Builder::config: base_url is required (set it there or in tauri.conf.json)".into(),
                            ));
                            }
                            engine.configure(merged).await?;
                        }
                        (None, Some(patch)) => {
                            let stored = engine.config().await?;
                            let merged = merge_config(stored.clone(), patch.clone())?;
                            if stored.is_none() && merged.base_url.is_empty() {
                                // The app sets baseUrl at runtime (e.g. per tenant): keep these
                                // settings for its first configure call.
                                pending = Some(patch);
                            } else {
                                engine.configure(merged).await?;
                            }
                        }
                        (None, None) => {}
                    }
                    Ok::<_, Error>((engine, pending))
                })?;
                let scheduler = Scheduler::start(engine.clone(), platform.connectivity());
                let paths = app.path();
                let upload_roots = [
                    paths.app_data_dir(),
                    paths.app_local_data_dir(),
                    paths.app_cache_dir(),
                ]
                .into_iter()
                .filter_map(std::result::Result::ok)
                .collect();
                let plugin = Plugin {
                    engine,
                    scheduler,
                    platform,
                    subscriptions: Default::default(),
                    upload_roots,
                    pending_conf: std::sync::Mutex::new(pending_conf),
                };
                app.manage(plugin);
                // Always register OS work when configured (it checks the toggle when it runs). Off
                // the setup thread, and a failure shows in status.lastError instead of vanishing.
                let handle = app.clone();
                tauri::async_runtime::spawn(async move {
                    let p = handle.state::<Plugin<R>>();
                    if let Err(e) = p.platform.register(&p.engine, false).await {
                        tracing::error!(error = %e, "registering OS background work failed");
                        let _ = p
                            .engine
                            .record_platform_error(&format!("registering OS background work failed: {e}"))
                            .await;
                    }
                });
                Ok(())
            })
            .on_event(|app, event| {
                if let RunEvent::Exit = event {
                    if let Some(p) = app.try_state::<Plugin<R>>() {
                        p.scheduler.shutdown();
                    }
                }
            })
            .build()
    }
}

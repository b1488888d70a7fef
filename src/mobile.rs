//! Android and iOS: the Kotlin/Swift shims register OS background work that calls the headless
//! entry (JNI / C ABI) in a process that may have no webview. Here we only hand them what a
//! cold process needs: the database path (and, on Android, the native library's name).

use crate::scheduler::{ConnectivityFactory, Scheduler};
use crate::Result;
use crate::{BackgroundSync, CredentialStorage, PlatformFacts};
use serde::{de::DeserializeOwned, Serialize};
use tauri::{
    plugin::{PluginApi, PluginHandle},
    AppHandle, Runtime,
};

#[cfg(target_os = "ios")]
tauri::ios_plugin_binding!(init_plugin_background_sync);

#[cfg(target_os = "android")]
const PLUGIN_IDENTIFIER: &str = "app.tauri.backgroundsync";

pub(crate) fn init<R: Runtime, C: DeserializeOwned>(
    _app: &AppHandle<R>,
    api: PluginApi<R, C>,
) -> Result<Platform<R>> {
    #[cfg(target_os = "android")]
    let handle = api.register_android_plugin(PLUGIN_IDENTIFIER, "BackgroundSyncPlugin")?;
    #[cfg(target_os = "ios")]
    let handle = api.register_ios_plugin(init_plugin_background_sync)?;
    Ok(Platform { handle })
}

pub(crate) struct Platform<R: Runtime> {
    handle: PluginHandle<R>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegisterArgs {
    db_path: String,
    library_name: Option<String>,
    interval_minutes: u32,
    requires_network: bool,
    requires_charging: bool,
    requires_battery_not_low: bool,
    budget_ms: u64,
    run_now: bool,
}

impl<R: Runtime> Platform<R> {
    /// (Re-)register OS background work with the current settings. Idempotent (Android uses
    /// `ExistingPeriodicWorkPolicy.UPDATE`; iOS replaces pending requests).
    pub(crate) async fn register(&self, engine: &BackgroundSync, run_now: bool) -> Result<()> {
        let Some(cfg) = engine.config().await? else {
            return Ok(()); // nothing to drain until configured
        };
        #[cfg(target_os = "android")]
        let library_name = crate::jni_entry::native_library_name();
        #[cfg(not(target_os = "android"))]
        let library_name = None;
        let args = RegisterArgs {
            db_path: engine.path().to_string_lossy().into_owned(),
            library_name,
            interval_minutes: cfg.background.interval_minutes.max(15),
            requires_network: cfg.background.requires_network,
            requires_charging: cfg.background.requires_charging,
            requires_battery_not_low: cfg.background.requires_battery_not_low,
            budget_ms: cfg.background.budget_ms,
            run_now,
        };
        // The async variant: the blocking one would hold a runtime worker while the shim runs.
        let answer = self
            .handle
            .run_mobile_plugin_async::<serde_json::Value>("register", args)
            .await?;
        // iOS answers which BGTask identifiers Info.plist lacks (the handlers are then never
        // called): say so in status instead of only in the device log.
        let missing: Vec<String> = answer
            .get("missingIdentifiers")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default();
        if !missing.is_empty() {
            engine
                .record_platform_error(&format!(
                    "background sync cannot run: Info.plist lacks BGTaskSchedulerPermittedIdentifiers {}",
                    missing.join(", ")
                ))
                .await?;
        }
        // Android answers why its last background run could not start (the worker could not
        // load the app's library), which otherwise shows only in logcat.
        if let Some(failure) = answer.get("workerFailure").and_then(|f| f.as_str()) {
            engine
                .record_platform_error(&format!("the last background run could not start: {failure}"))
                .await?;
        }
        Ok(())
    }

    /// The key the shim read from the Android Keystore / iOS Keychain and handed over while
    /// it was constructed (`NativeBridge.setSecretKey` / `bgsync_set_secret_key`); memory only
    /// when it could not (the shim logs why).
    pub(crate) async fn credential_storage(&self, _db: &std::path::Path) -> CredentialStorage {
        match crate::entry::credential_storage() {
            CredentialStorage::Plaintext => {
                tracing::warn!(
                    "the native shim gave no credentials key: credentials are kept in memory only"
                );
                CredentialStorage::MemoryOnly
            }
            sealed => sealed,
        }
    }

    /// What the shim reads from the OS (`diagnostics` in BackgroundSyncPlugin.kt / .swift); when
    /// it cannot answer, the platform's facts are all unknown and the reason comes back.
    pub(crate) async fn facts(&self, _scheduler: &Scheduler) -> (PlatformFacts, Option<String>) {
        let unknown = || {
            if cfg!(target_os = "android") {
                PlatformFacts::Android(Default::default())
            } else {
                PlatformFacts::Ios(Default::default())
            }
        };
        match self
            .handle
            .run_mobile_plugin_async::<serde_json::Value>("diagnostics", ())
            .await
        {
            Ok(v) => match serde_json::from_value::<PlatformFacts>(v) {
                Ok(f) => (f, None),
                Err(e) => (unknown(), Some(format!("unreadable answer: {e}"))),
            },
            Err(e) => (unknown(), Some(e.to_string())),
        }
    }

    /// Connectivity on mobile is watched natively (NetworkCallback / NWPathMonitor), which
    /// schedules a drain through the OS work.
    pub(crate) fn connectivity(&self) -> ConnectivityFactory {
        Box::new(|| None)
    }
}

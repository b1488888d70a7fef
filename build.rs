// Keep in sync with the #[command] list in src/commands.rs and guest-js/index.ts.
const COMMANDS: &[&str] = &[
    "enable",
    "disable",
    "is_enabled",
    "configure",
    "set_auth",
    "clear_auth",
    "enqueue",
    "enqueue_many",
    "sync_now",
    "status",
    "pending",
    "dead_letters",
    "retry",
    "discard",
    "edit",
    "subscribe",
    "unsubscribe",
    "history",
    "delivered",
    "resolve_temp_id",
    "enqueue_upload",
    "uploads",
    "retry_upload",
    "discard_upload",
    "diagnostics",
];

fn main() {
    // sqlx::migrate! embeds migrations/ at compile time; without this a new migration file
    // can be missed by an incremental build (sqlx's documented advice).
    println!("cargo:rerun-if-changed=migrations");
    tauri_plugin::Builder::new(COMMANDS)
        .android_path("android")
        .ios_path("ios")
        .build();
    // iOS: the app's generated Info.plist gets the BGTaskScheduler identifiers and background
    // modes the Swift shim registers. Without them iOS skips the handlers silently, and apps
    // find out in production. `$(PRODUCT_BUNDLE_IDENTIFIER)` is expanded by Xcode when it
    // processes Info.plist, so the ids follow the bundle id (as the shim derives them). A no-op
    // unless the Tauri CLI builds for iOS (it sets TAURI_IOS_PROJECT_PATH / TAURI_IOS_APP_NAME);
    // tauri-plugin offers it on macOS hosts only (where iOS builds happen).
    #[cfg(target_os = "macos")]
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("ios") {
        tauri_plugin::mobile::update_info_plist(add_info_plist_entries)
            .expect("failed to add the background-sync entries to Info.plist");
    }
}

#[cfg(target_os = "macos")]
include!("ios/info_plist_entries.rs");

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
    "enqueue_upload",
    "uploads",
    "retry_upload",
    "discard_upload",
];

fn main() {
    // sqlx::migrate! embeds migrations/ at compile time; without this a new migration file
    // can be missed by an incremental build (sqlx's documented advice).
    println!("cargo:rerun-if-changed=migrations");
    tauri_plugin::Builder::new(COMMANDS)
        .android_path("android")
        .ios_path("ios")
        .build();
}

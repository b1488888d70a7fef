package app.tauri.backgroundsync

/**
 * The Rust headless entry (crates/background-sync-core/src/jni_entry.rs), exported from the app's own native library by
 * `tauri_plugin_background_sync::export_native_entries!()`. Every call returns the JSON
 * envelope `{"ok":true,...}` / `{"ok":false,"error":{kind,message}}`; none throws.
 */
object NativeBridge {
    @Volatile private var loaded: String? = null

    /** Loads the app's library once (a cold WorkManager process has no Activity to do it). */
    @Synchronized
    fun ensureLoaded(libraryName: String) {
        if (loaded == libraryName) return
        System.loadLibrary(libraryName)
        loaded = libraryName
    }

    @JvmStatic external fun configure(dbPath: String, configJson: String): String
    @JvmStatic external fun enqueue(dbPath: String, mutationJson: String): String
    @JvmStatic external fun drain(dbPath: String, budgetMs: Long, trigger: String, cancelHandle: Long): String
    @JvmStatic external fun status(dbPath: String): String
    @JvmStatic external fun setEnabled(dbPath: String, enabled: Boolean): String
    /** The credentials key (32 bytes; null forgets it), once per process before other calls. */
    @JvmStatic external fun setSecretKey(key: ByteArray?): String
    @JvmStatic external fun newCancelHandle(): Long
    @JvmStatic external fun cancel(handle: Long)
    @JvmStatic external fun freeCancelHandle(handle: Long)
}

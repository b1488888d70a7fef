import app.tauri.backgroundsync.NativeBridge

/** Loads the Rust library through the real NativeBridge.kt and calls it (args: db path). */
fun main(args: Array<String>) {
    NativeBridge.ensureLoaded("bgsync_ffi_host")
    val r = NativeBridge.status(args[0])
    val h = NativeBridge.newCancelHandle()
    NativeBridge.cancel(h)
    NativeBridge.freeCancelHandle(h)
    val keyed = NativeBridge.setSecretKey(ByteArray(32) { it.toByte() })
    val forgotten = NativeBridge.setSecretKey(null)
    if (!keyed.contains("\"ok\":true") || !forgotten.contains("\"ok\":true")) {
        println("FAIL NativeBridge.kt setSecretKey: $keyed $forgotten")
        System.exit(1)
    }
    if (!r.contains("\"ok\":true")) {
        println("FAIL NativeBridge.kt status: $r")
        System.exit(1)
    }
    println("ok   NativeBridge.kt loads the library and calls status/cancel handles/setSecretKey")
}

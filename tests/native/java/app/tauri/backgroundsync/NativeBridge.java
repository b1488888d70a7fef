package app.tauri.backgroundsync;

/**
 * Host-JVM twin of android/.../NativeBridge.kt: same package, class name and static native
 * signatures, so loading the Rust library and calling these proves the JNI names and types.
 */
public final class NativeBridge {
    private NativeBridge() {}

    public static native String configure(String dbPath, String configJson);
    public static native String enqueue(String dbPath, String mutationJson);
    public static native String drain(String dbPath, long budgetMs, String trigger, long cancelHandle);
    public static native String status(String dbPath);
    public static native String setEnabled(String dbPath, boolean enabled);
    public static native String setSecretKey(byte[] key);
    public static native long newCancelHandle();
    public static native void cancel(long handle);
    public static native void freeCancelHandle(long handle);
}

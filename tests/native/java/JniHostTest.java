import app.tauri.backgroundsync.NativeBridge;
import java.io.*;
import java.net.*;
import java.nio.file.*;

/** Runs the JNI entry on the host JVM against the reference server (args: server base URL, slow server base URL). */
public class JniHostTest {
    static int passed = 0, failed = 0;

    static void check(String name, boolean ok, String detail) {
        if (ok) { passed++; System.out.println("ok   " + name); }
        else { failed++; System.out.println("FAIL " + name + " " + detail); }
    }

    static String mutation(int i) {
        return "{\"method\":\"PUT\",\"path\":\"/visits/" + i + "\",\"body\":{\"n\":" + i + "},\"entity\":{\"kind\":\"visit\",\"id\":\"" + i + "\"}}";
    }

    static String get(String url) throws IOException {
        try (InputStream in = new URL(url).openStream()) { return new String(in.readAllBytes()); }
    }

    public static void main(String[] args) throws Exception {
        System.loadLibrary("bgsync_ffi_host");
        String base = args[0], slow = args[1];
        Path dir = Files.createTempDirectory("jni");
        String db = dir.resolve("outbox.db").toString();

        String r = NativeBridge.configure(db, "{\"baseUrl\":\"" + base + "\"}");
        check("configure", r.contains("\"ok\":true"), r);
        for (int i = 0; i < 20; i++) r = NativeBridge.enqueue(db, mutation(i));
        check("enqueue", r.contains("\"idempotencyKey\""), r);
        r = NativeBridge.drain(db, 10_000, "android-worker", 0);
        check("disabled toggle is checked first", r.contains("\"stopReason\":\"disabled\""), r);
        NativeBridge.setEnabled(db, true);
        r = NativeBridge.drain(db, 10_000, "android-worker", 0);
        check("worker drain delivers", r.contains("\"done\":20") && r.contains("\"stopReason\":\"empty\""), r);
        String log = get(base + "/_admin/log");
        check("server applied 20", log.split("idempotencyKey").length - 1 == 20, log.length() + "");
        r = NativeBridge.status(db);
        check("status", r.contains("\"pending\":0"), r);
        r = NativeBridge.enqueue(null, mutation(1));
        check("null dbPath is a typed error", r.contains("\"kind\":\"invalidInput\""), r);
        r = NativeBridge.enqueue(db, "{oops");
        check("bad JSON is a typed error", r.contains("\"kind\":\"invalidInput\""), r);

        // The credentials key, as CredentialsKey.handOver gives it: 32 bytes, or null to forget.
        r = NativeBridge.setSecretKey(new byte[31]);
        check("setSecretKey: 31 bytes is a typed error", r.contains("\"kind\":\"invalidInput\""), r);
        byte[] key = new byte[32];
        new java.security.SecureRandom().nextBytes(key);
        r = NativeBridge.setSecretKey(key);
        check("setSecretKey: 32 bytes", r.contains("\"ok\":true"), r);
        r = NativeBridge.status(db);
        check("status with a key set", r.contains("\"pending\":0"), r);
        r = NativeBridge.setSecretKey(null);
        check("setSecretKey: null forgets", r.contains("\"ok\":true"), r);

        // Cancellation through a handle, as SyncWorker.onStopped does.
        String db2 = dir.resolve("cancel.db").toString();
        NativeBridge.configure(db2, "{\"baseUrl\":\"" + slow + "\",\"concurrency\":2}");
        NativeBridge.setEnabled(db2, true);
        for (int i = 0; i < 40; i++) NativeBridge.enqueue(db2, mutation(i));
        long h = NativeBridge.newCancelHandle();
        String[] out = new String[1];
        Thread t = new Thread(() -> out[0] = NativeBridge.drain(db2, 60_000, "android-worker", h));
        long t0 = System.nanoTime();
        t.start();
        Thread.sleep(300);
        NativeBridge.cancel(h);
        t.join(10_000);
        long ms = (System.nanoTime() - t0) / 1_000_000;
        NativeBridge.freeCancelHandle(h);
        check("cancel handle stops the drain", out[0] != null && out[0].contains("\"stopReason\":\"cancelled\""), String.valueOf(out[0]));
        check("cancel is prompt", ms < 1500, ms + " ms");
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}

// android.util.Log for the host run only: android-all's Log writes to logcat through native
// methods a desktop JVM does not have. Put ahead of android-all on the class path; prints to
// stderr with the same static signatures the shim was compiled against. Logging is not a
// platform rule, so nothing here stands in for one.
package android.util

object Log {
    private fun out(level: String, tag: String?, msg: String?, tr: Throwable? = null): Int {
        System.err.println("$level/$tag: $msg" + (tr?.let { " ($it)" } ?: ""))
        return 0
    }
    @JvmStatic fun i(tag: String?, msg: String?) = out("I", tag, msg)
    @JvmStatic fun w(tag: String?, msg: String?) = out("W", tag, msg)
    @JvmStatic fun w(tag: String?, msg: String?, tr: Throwable?) = out("W", tag, msg, tr)
    @JvmStatic fun e(tag: String?, msg: String?) = out("E", tag, msg)
    @JvmStatic fun e(tag: String?, msg: String?, tr: Throwable?) = out("E", tag, msg, tr)
}

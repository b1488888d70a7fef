package app.tauri.backgroundsync

import android.content.Context
import android.util.Log
import androidx.work.CoroutineWorker
import androidx.work.ForegroundInfo
import androidx.work.WorkerParameters
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * Runs the Rust drain in a possibly cold process: no Activity, no webview, no Tauri runtime.
 * It loads the app's native library itself and calls the JNI entry with a budget under
 * WorkManager's 10-minute limit; a stop request cancels the drain, whose unconfirmed rows stay
 * pending. The persisted enabled toggle is checked inside Rust (always register, check in
 * callback).
 */
class SyncWorker(context: Context, params: WorkerParameters) : CoroutineWorker(context, params) {
    override suspend fun doWork(): Result {
        val args = Prefs.load(applicationContext) ?: return Result.success() // never registered
        // The name the foreground recorded, then the one Tauri's app template uses (`app_lib`,
        // what the CLI passes as WRY_ANDROID_LIBRARY): a failed lookup must not turn every
        // run into a silent success.
        val candidates = listOfNotNull(args.libraryName, DEFAULT_LIBRARY).distinct()
        val loaded = candidates.firstOrNull { lib ->
            try {
                NativeBridge.ensureLoaded(lib)
                true
            } catch (e: UnsatisfiedLinkError) {
                Log.e(TAG, "cannot load lib$lib.so: did the app expand export_native_entries!()?", e)
                false
            }
        }
        if (loaded == null) {
            Prefs.recordFailure(applicationContext, "cannot load the app's native library (tried ${candidates.joinToString()})")
            return Result.failure()
        }
        Prefs.clearFailure(applicationContext)
        // Before the drain opens the database: the sealed credentials need the Keystore's key.
        CredentialsKey.handOver(applicationContext)
        val plan = WorkPlanner.plan(args)
        val trigger = inputData.getString(KEY_TRIGGER) ?: "android-worker"
        val handle = NativeBridge.newCancelHandle()
        try {
            val report = coroutineScope {
                // CoroutineWorker turns a stop request into coroutine cancellation; the JNI call
                // is blocking, so a watcher forwards the cancellation to Rust, which returns
                // promptly and leaves unconfirmed rows pending.
                val watcher = launch {
                    try { awaitCancellation() } finally { NativeBridge.cancel(handle) }
                }
                val r = withContext(Dispatchers.IO) {
                    NativeBridge.drain(args.dbPath, plan.workerBudgetMs, trigger, handle)
                }
                watcher.cancel()
                r
            }
            Log.i(TAG, "drain: $report") // reports never contain tokens
            return when (WorkPlanner.outcome(report)) {
                WorkOutcome.SUCCESS -> Result.success()
                WorkOutcome.RETRY -> Result.retry()
            }
        } finally {
            NativeBridge.freeCancelHandle(handle)
        }
    }

    /** Expedited work on Android < 12 runs as a foreground service, which needs a notification. */
    override suspend fun getForegroundInfo(): ForegroundInfo = Notifications.foregroundInfo(applicationContext)

    companion object {
        const val TAG = "BackgroundSync"
        const val KEY_TRIGGER = "trigger"
        const val DEFAULT_LIBRARY = "app_lib"
    }
}

package app.tauri.backgroundsync

import android.app.Activity
import android.content.Context
import android.net.ConnectivityManager
import android.net.Network
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import android.util.Log
import android.webkit.WebView
import androidx.work.ExistingPeriodicWorkPolicy
import androidx.work.ExistingWorkPolicy
import androidx.work.WorkManager
import app.tauri.annotation.Command
import app.tauri.annotation.InvokeArg
import app.tauri.annotation.TauriPlugin
import app.tauri.plugin.Invoke
import app.tauri.plugin.JSObject
import app.tauri.plugin.Plugin

@InvokeArg
class RegisterInvokeArgs {
    lateinit var dbPath: String
    var libraryName: String? = null
    var intervalMinutes: Int = 15
    var requiresNetwork: Boolean = true
    var requiresCharging: Boolean = false
    var requiresBatteryNotLow: Boolean = true
    var budgetMs: Long = 25_000
    var runNow: Boolean = false
}

/**
 * Registers the OS work that runs the Rust drain: unique periodic work (always registered;
 * the worker checks the persisted toggle) and a one-off expedited run when a validated network
 * comes back. All policy is in Rust; this class only translates.
 */
@TauriPlugin
class BackgroundSyncPlugin(private val activity: Activity) : Plugin(activity) {
    private val ctx: Context get() = activity.applicationContext
    private val networkCallback = Registration<ConnectivityManager.NetworkCallback>(
        register = { cb -> connectivity().registerNetworkCallback(validatedInternet(), cb) },
        unregister = { cb -> connectivity().unregisterNetworkCallback(cb) },
    )

    init {
        // Tauri constructs the plugin while Rust's setup waits (register_android_plugin), and
        // Rust opens the database right after: the credentials key must be there by then.
        CredentialsKey.handOver(activity.applicationContext)
    }

    override fun load(webView: WebView) {
        watchConnectivity()
    }

    @Command
    fun register(invoke: Invoke) {
        try {
            val a = invoke.parseArgs(RegisterInvokeArgs::class.java)
            val args = RegisterArgs(a.dbPath, a.libraryName, a.intervalMinutes, a.requiresNetwork,
                a.requiresCharging, a.requiresBatteryNotLow, a.budgetMs, a.runNow)
            Prefs.save(ctx, args)
            val plan = WorkPlanner.plan(args)
            // UPDATE keeps the schedule of an existing registration and applies new constraints.
            WorkManager.getInstance(ctx).enqueueUniquePeriodicWork(PERIODIC, ExistingPeriodicWorkPolicy.UPDATE, WorkRequests.periodic(plan))
            if (args.runNow) runOnce("android-enable")
            // Why the last background run could not start (its library did not load), for
            // Rust to show in status.lastError: the worker's own log is not where users look.
            val answer = JSObject()
            Prefs.lastFailure(ctx)?.let { answer.put("workerFailure", it) }
            invoke.resolve(answer)
        } catch (e: Exception) {
            Log.e(TAG, "register failed", e)
            invoke.reject("cannot register background work: ${e.message}")
        }
    }

    @Command
    fun unregister(invoke: Invoke) {
        WorkManager.getInstance(ctx).cancelUniqueWork(PERIODIC)
        WorkManager.getInstance(ctx).cancelUniqueWork(ONE_OFF)
        invoke.resolve()
    }

    @Command
    fun runNow(invoke: Invoke) {
        try {
            runOnce("android-run-now")
            invoke.resolve()
        } catch (e: Exception) {
            Log.e(TAG, "run now failed", e)
            invoke.reject("cannot schedule a run: ${e.message}")
        }
    }

    /** Facts for `diagnostics()`; WorkManager's query blocks, so it runs on a thread of its own. */
    @Command
    fun diagnostics(invoke: Invoke) {
        Thread {
            try {
                invoke.resolve(DiagnosticsFacts.collect(ctx, PERIODIC))
            } catch (e: Exception) {
                Log.e(TAG, "diagnostics failed", e)
                invoke.reject("cannot read the background work state: ${e.message}")
            }
        }.start()
    }

    private fun runOnce(trigger: String) {
        val args = Prefs.load(ctx) ?: return
        // KEEP: a burst of network flaps queues one run, not ten.
        WorkManager.getInstance(ctx).enqueueUniqueWork(ONE_OFF, ExistingWorkPolicy.KEEP, WorkRequests.oneOff(WorkPlanner.plan(args), trigger))
    }

    /**
     * One callback per plugin instance, unregistered in [onDestroy]. Wi-Fi and cellular overlap,
     * so "online" is the set of validated networks, not one flag: losing Wi-Fi while cellular
     * stays up is not a reconnect. An exception here would kill the app on ConnectivityManager's
     * thread, so every callback is guarded.
     */
    private fun connectivity() = ctx.getSystemService(Context.CONNECTIVITY_SERVICE) as ConnectivityManager

    private fun validatedInternet(): NetworkRequest = NetworkRequest.Builder()
        .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
        .addCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED)
        .build()

    private fun watchConnectivity() {
        val failed = networkCallback.start {
            val networks = NetworkSet()
            object : ConnectivityManager.NetworkCallback() {
                override fun onAvailable(network: Network) {
                    guarded("onAvailable") { if (networks.add(network.toString())) runOnce("reconnect") }
                }
                override fun onLost(network: Network) {
                    guarded("onLost") { networks.remove(network.toString()) }
                }
            }
        }
        if (failed != null) Log.e(TAG, "cannot watch connectivity; reconnect runs rely on the periodic work", failed)
    }

    override fun onDestroy() {
        networkCallback.stop()?.let { Log.w(TAG, "unregistering the network callback failed", it) }
        super.onDestroy()
    }

    private inline fun guarded(what: String, block: () -> Unit) {
        try {
            block()
        } catch (e: Exception) {
            Log.e(TAG, "network callback $what failed", e)
        }
    }

    companion object {
        const val TAG = "BackgroundSync"
        const val PERIODIC = "app.tauri.backgroundsync.periodic"
        const val ONE_OFF = "app.tauri.backgroundsync.once"
    }
}

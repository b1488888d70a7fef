package app.tauri.backgroundsync

import android.app.Activity
import android.content.Context
import android.net.ConnectivityManager
import android.net.Network
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import android.webkit.WebView
import androidx.work.BackoffPolicy
import androidx.work.Constraints
import androidx.work.Data
import androidx.work.ExistingPeriodicWorkPolicy
import androidx.work.ExistingWorkPolicy
import androidx.work.NetworkType
import androidx.work.OneTimeWorkRequestBuilder
import androidx.work.OutOfQuotaPolicy
import androidx.work.PeriodicWorkRequestBuilder
import androidx.work.WorkManager
import app.tauri.annotation.Command
import app.tauri.annotation.InvokeArg
import app.tauri.annotation.TauriPlugin
import app.tauri.plugin.Invoke
import app.tauri.plugin.Plugin
import java.util.concurrent.TimeUnit

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
    private var networkCallback: ConnectivityManager.NetworkCallback? = null

    override fun load(webView: WebView) {
        watchConnectivity()
    }

    @Command
    fun register(invoke: Invoke) {
        val a = invoke.parseArgs(RegisterInvokeArgs::class.java)
        val args = RegisterArgs(a.dbPath, a.libraryName, a.intervalMinutes, a.requiresNetwork,
            a.requiresCharging, a.requiresBatteryNotLow, a.budgetMs, a.runNow)
        Prefs.save(ctx, args)
        val plan = WorkPlanner.plan(args)
        val request = PeriodicWorkRequestBuilder<SyncWorker>(plan.periodMinutes, TimeUnit.MINUTES, plan.flexMinutes, TimeUnit.MINUTES)
            .setConstraints(constraints(plan))
            .setBackoffCriteria(BackoffPolicy.EXPONENTIAL, 30, TimeUnit.SECONDS)
            .setInputData(Data.Builder().putString(SyncWorker.KEY_TRIGGER, "android-periodic").build())
            .build()
        // UPDATE keeps the schedule of an existing registration and applies new constraints.
        WorkManager.getInstance(ctx).enqueueUniquePeriodicWork(PERIODIC, ExistingPeriodicWorkPolicy.UPDATE, request)
        if (args.runNow) runOnce("android-enable")
        invoke.resolve()
    }

    @Command
    fun unregister(invoke: Invoke) {
        WorkManager.getInstance(ctx).cancelUniqueWork(PERIODIC)
        WorkManager.getInstance(ctx).cancelUniqueWork(ONE_OFF)
        invoke.resolve()
    }

    @Command
    fun runNow(invoke: Invoke) {
        runOnce("android-run-now")
        invoke.resolve()
    }

    private fun constraints(plan: WorkPlan): Constraints = Constraints.Builder()
        .setRequiredNetworkType(if (plan.requireConnected) NetworkType.CONNECTED else NetworkType.NOT_REQUIRED)
        .setRequiresCharging(plan.requireCharging)
        .setRequiresBatteryNotLow(plan.requireBatteryNotLow)
        .build()

    private fun runOnce(trigger: String) {
        val args = Prefs.load(ctx) ?: return
        val plan = WorkPlanner.plan(args)
        val request = OneTimeWorkRequestBuilder<SyncWorker>()
            .setConstraints(constraints(plan))
            .setExpedited(OutOfQuotaPolicy.RUN_AS_NON_EXPEDITED_WORK_REQUEST)
            .setInputData(Data.Builder().putString(SyncWorker.KEY_TRIGGER, trigger).build())
            .build()
        // KEEP: a burst of network flaps queues one run, not ten.
        WorkManager.getInstance(ctx).enqueueUniqueWork(ONE_OFF, ExistingWorkPolicy.KEEP, request)
    }

    private fun watchConnectivity() {
        val cm = ctx.getSystemService(Context.CONNECTIVITY_SERVICE) as ConnectivityManager
        val request = NetworkRequest.Builder()
            .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            .addCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED)
            .build()
        val cb = object : ConnectivityManager.NetworkCallback() {
            @Volatile private var online = true
            override fun onAvailable(network: Network) {
                if (!online) runOnce("reconnect")
                online = true
            }
            override fun onLost(network: Network) {
                online = false
            }
        }
        cm.registerNetworkCallback(request, cb)
        networkCallback = cb
    }

    companion object {
        const val PERIODIC = "app.tauri.backgroundsync.periodic"
        const val ONE_OFF = "app.tauri.backgroundsync.once"
    }
}

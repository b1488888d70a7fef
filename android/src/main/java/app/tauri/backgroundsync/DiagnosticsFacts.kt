package app.tauri.backgroundsync

import android.app.ActivityManager
import android.app.NotificationManager
import android.app.usage.UsageStatsManager
import android.content.Context
import android.os.Build
import android.os.PowerManager
import android.util.Log
import androidx.work.WorkInfo
import androidx.work.WorkManager
import app.tauri.plugin.JSObject
import java.util.concurrent.TimeUnit

/**
 * The facts `diagnostics()` judges; the rules are in Rust (crates/background-sync-core/src/
 * diagnose.rs), where the host tests them. Each fact is read on its own: one this API level
 * lacks, or whose call throws, is left out, and Rust then says nothing about it instead of
 * guessing. Blocks on WorkManager's query: call it off the main thread.
 */
object DiagnosticsFacts {
    fun collect(ctx: Context, periodicWork: String): JSObject {
        val o = JSObject()
        o.put("platform", "android")
        o.put("sdkInt", Build.VERSION.SDK_INT)
        fact("work state") {
            val infos = WorkManager.getInstance(ctx).getWorkInfosForUniqueWork(periodicWork).get(5, TimeUnit.SECONDS)
            // Unique work keeps one live request; finished ones linger until pruned.
            val info = infos.firstOrNull { !it.state.isFinished } ?: infos.lastOrNull()
            o.put("workState", info?.state?.name ?: "NONE")
            if (info != null && info.nextScheduleTimeMillis != Long.MAX_VALUE) {
                o.put("nextScheduleAt", info.nextScheduleTimeMillis)
            }
            // WorkInfo.stopReason is @RequiresApi(31).
            if (info != null && Build.VERSION.SDK_INT >= 31 && info.stopReason != WorkInfo.STOP_REASON_NOT_STOPPED) {
                o.put("stopReason", info.stopReason)
            }
        }
        val power = ctx.getSystemService(Context.POWER_SERVICE) as PowerManager
        fact("battery optimisation") {
            o.put("ignoringBatteryOptimizations", power.isIgnoringBatteryOptimizations(ctx.packageName))
        }
        fact("power save") { o.put("powerSaveMode", power.isPowerSaveMode) }
        if (Build.VERSION.SDK_INT >= 28) {
            fact("background restriction") {
                val am = ctx.getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager
                o.put("backgroundRestricted", am.isBackgroundRestricted)
            }
            fact("standby bucket") {
                val usage = ctx.getSystemService(Context.USAGE_STATS_SERVICE) as UsageStatsManager
                o.put("standbyBucket", usage.appStandbyBucket)
            }
        }
        fact("notifications") {
            val nm = ctx.getSystemService(Context.NOTIFICATION_SERVICE) as NotificationManager
            o.put("notificationsEnabled", nm.areNotificationsEnabled())
        }
        return o
    }

    private inline fun fact(what: String, read: () -> Unit) {
        try {
            read()
        } catch (e: Exception) {
            Log.w(BackgroundSyncPlugin.TAG, "diagnostics: cannot read $what", e)
        }
    }
}

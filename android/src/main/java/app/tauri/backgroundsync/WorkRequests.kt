package app.tauri.backgroundsync

import androidx.work.BackoffPolicy
import androidx.work.Constraints
import androidx.work.Data
import androidx.work.NetworkType
import androidx.work.OneTimeWorkRequest
import androidx.work.OneTimeWorkRequestBuilder
import androidx.work.OutOfQuotaPolicy
import androidx.work.PeriodicWorkRequest
import androidx.work.PeriodicWorkRequestBuilder
import java.util.concurrent.TimeUnit

/**
 * Every WorkManager request the shim enqueues, built from a [WorkPlan] without a Context, so
 * the host-side rule check (tests/native/android-rules) builds each one against stubs that
 * enforce WorkManager's runtime rules.
 */
object WorkRequests {
    /** The periodic run: every constraint the app configured. */
    fun periodic(plan: WorkPlan): PeriodicWorkRequest =
        PeriodicWorkRequestBuilder<SyncWorker>(plan.periodMinutes, TimeUnit.MINUTES, plan.flexMinutes, TimeUnit.MINUTES)
            .setConstraints(
                Constraints.Builder()
                    .setRequiredNetworkType(network(plan))
                    .setRequiresCharging(plan.requireCharging)
                    .setRequiresBatteryNotLow(plan.requireBatteryNotLow)
                    .build(),
            )
            .setBackoffCriteria(BackoffPolicy.EXPONENTIAL, 30, TimeUnit.SECONDS)
            .setInputData(Data.Builder().putString(SyncWorker.KEY_TRIGGER, "android-periodic").build())
            .build()

    /**
     * A run now (enable, run-now, a network that came back): expedited, so network constraints
     * only — WorkManager rejects an expedited request with charging or battery constraints
     * ("Expedited jobs only support network and storage constraints"). The battery and charging
     * wishes apply to the periodic run; this one is what the user or a reconnect asked for.
     */
    fun oneOff(plan: WorkPlan, trigger: String): OneTimeWorkRequest =
        OneTimeWorkRequestBuilder<SyncWorker>()
            .setConstraints(Constraints.Builder().setRequiredNetworkType(network(plan)).build())
            .setExpedited(OutOfQuotaPolicy.RUN_AS_NON_EXPEDITED_WORK_REQUEST)
            .setInputData(Data.Builder().putString(SyncWorker.KEY_TRIGGER, trigger).build())
            .build()

    private fun network(plan: WorkPlan) = if (plan.requireConnected) NetworkType.CONNECTED else NetworkType.NOT_REQUIRED
}

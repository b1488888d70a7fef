// Compile-only stubs of the androidx.work (WorkManager 2.9, work-runtime + work-runtime-ktx)
// API the Android shim uses; WorkManager is on Google Maven only. Signatures follow
// developer.android.com/reference/androidx/work; bodies never run, except the request
// builders, which enforce WorkManager's runtime rules (see below).
// Each declaration below was checked against the metalava API signature file of that release,
// androidx/androidx work/work-runtime/api/2.9.0-beta01.txt (the 2.9.x public API): names,
// parameter and return types, nullability, final/open/abstract (the Java statics of
// ListenableWorker.Result and WorkManager are companion @JvmStatic here: Kotlin callers write
// them the same way). Members the shim does not use are left out, so using one fails here
// first (a false alarm, never a false pass).
// Mirrors:
//   https://developer.android.com/reference/androidx/work/WorkManager
//   https://developer.android.com/reference/androidx/work/CoroutineWorker
//   https://developer.android.com/reference/androidx/work/ListenableWorker
//   https://developer.android.com/reference/androidx/work/ListenableWorker.Result
//   https://developer.android.com/reference/androidx/work/WorkerParameters
//   https://developer.android.com/reference/androidx/work/Constraints.Builder
//   https://developer.android.com/reference/androidx/work/Data.Builder
//   https://developer.android.com/reference/androidx/work/ForegroundInfo
//   https://developer.android.com/reference/androidx/work/WorkRequest.Builder
//   https://developer.android.com/reference/androidx/work/OneTimeWorkRequest.Builder
//   https://developer.android.com/reference/androidx/work/PeriodicWorkRequest.Builder
//   https://developer.android.com/reference/kotlin/androidx/work/package-summary#OneTimeWorkRequestBuilder()
//   https://developer.android.com/reference/kotlin/androidx/work/package-summary#PeriodicWorkRequestBuilder(kotlin.Long,java.util.concurrent.TimeUnit,kotlin.Long,java.util.concurrent.TimeUnit)
//   https://developer.android.com/reference/androidx/work/NetworkType
//   https://developer.android.com/reference/androidx/work/BackoffPolicy
//   https://developer.android.com/reference/androidx/work/ExistingPeriodicWorkPolicy
//   https://developer.android.com/reference/androidx/work/ExistingWorkPolicy
//   https://developer.android.com/reference/androidx/work/OutOfQuotaPolicy
//   https://developer.android.com/reference/androidx/work/Operation
//   https://developer.android.com/reference/androidx/work/WorkInfo (2.9.0-beta01.txt: state,
//     nextScheduleTimeMillis, stopReason @RequiresApi(31), STOP_REASON_NOT_STOPPED = -256;
//     WorkInfo.State and isFinished). The API-31 requirement is lint's, not the compiler's:
//     the shim reads stopReason only under SDK_INT >= 31.
@file:Suppress("unused", "UNUSED_PARAMETER")

package androidx.work

import android.app.Notification
import android.content.Context
import com.google.common.util.concurrent.ListenableFuture
import java.util.UUID
import java.util.concurrent.TimeUnit

enum class NetworkType { NOT_REQUIRED, CONNECTED, UNMETERED, NOT_ROAMING, METERED, TEMPORARILY_UNMETERED }
enum class BackoffPolicy { EXPONENTIAL, LINEAR }
enum class ExistingPeriodicWorkPolicy { REPLACE, KEEP, UPDATE, CANCEL_AND_REENQUEUE }
enum class ExistingWorkPolicy { REPLACE, KEEP, APPEND, APPEND_OR_REPLACE }
enum class OutOfQuotaPolicy { RUN_AS_NON_EXPEDITED_WORK_REQUEST, DROP_WORK_REQUEST }

// Runtime rules: the builders below keep their state and `build()` enforces what androidx's
// own `WorkRequest.Builder.build()` enforces (androidx/androidx
// work/work-runtime/src/main/java/androidx/work/WorkRequest.kt): an expedited request may
// carry network and storage constraints only — charging, battery-not-low, device-idle (and
// content-URI triggers) make it throw IllegalArgumentException("Expedited jobs only support
// network and storage constraints") — and may not have an initial delay ("Expedited jobs
// cannot be delayed"). tests/native/android-rules runs the shim's request factories against
// them, so a request the real WorkManager would reject fails on the host too.
class Constraints private constructor(
    val requiredNetworkType: NetworkType,
    val requiresCharging: Boolean,
    val requiresBatteryNotLow: Boolean,
    val requiresDeviceIdle: Boolean,
    val requiresStorageNotLow: Boolean,
) {
    fun requiresCharging(): Boolean = requiresCharging
    fun requiresBatteryNotLow(): Boolean = requiresBatteryNotLow
    fun requiresDeviceIdle(): Boolean = requiresDeviceIdle

    class Builder {
        private var network = NetworkType.NOT_REQUIRED
        private var charging = false
        private var batteryNotLow = false
        private var idle = false
        private var storageNotLow = false
        fun setRequiredNetworkType(networkType: NetworkType): Builder = apply { network = networkType }
        fun setRequiresCharging(requiresCharging: Boolean): Builder = apply { charging = requiresCharging }
        fun setRequiresBatteryNotLow(requiresBatteryNotLow: Boolean): Builder = apply { batteryNotLow = requiresBatteryNotLow }
        fun setRequiresDeviceIdle(requiresDeviceIdle: Boolean): Builder = apply { idle = requiresDeviceIdle }
        fun setRequiresStorageNotLow(requiresStorageNotLow: Boolean): Builder = apply { storageNotLow = requiresStorageNotLow }
        fun build(): Constraints = Constraints(network, charging, batteryNotLow, idle, storageNotLow)
    }

    companion object {
        @JvmField val NONE: Constraints = Builder().build()
    }
}

class Data private constructor() {
    fun getString(key: String): String? = throw UnsupportedOperationException()
    class Builder {
        fun putString(key: String, value: String?): Builder = this
        fun putLong(key: String, value: Long): Builder = this
        fun build(): Data = Data()
    }
}

class ForegroundInfo {
    constructor(notificationId: Int, notification: Notification)
    constructor(notificationId: Int, notification: Notification, foregroundServiceType: Int)
}

class WorkerParameters private constructor()

abstract class ListenableWorker(appContext: Context, workerParams: WorkerParameters) {
    val applicationContext: Context get() = throw UnsupportedOperationException()
    val inputData: Data get() = throw UnsupportedOperationException()
    val id: UUID get() = throw UnsupportedOperationException()

    abstract class Result internal constructor() {
        companion object {
            @JvmStatic fun success(): Result = throw UnsupportedOperationException()
            @JvmStatic fun success(outputData: Data): Result = throw UnsupportedOperationException()
            @JvmStatic fun retry(): Result = throw UnsupportedOperationException()
            @JvmStatic fun failure(): Result = throw UnsupportedOperationException()
        }
    }
}

abstract class CoroutineWorker(appContext: Context, params: WorkerParameters) : ListenableWorker(appContext, params) {
    abstract suspend fun doWork(): Result
    open suspend fun getForegroundInfo(): ForegroundInfo = throw UnsupportedOperationException()
}

interface Operation

abstract class WorkRequest internal constructor() {
    /** What the host-side rule checks read back (not in the real API). */
    var constraints: Constraints = Constraints.NONE
        internal set
    var expedited: Boolean = false
        internal set

    abstract class Builder<B : Builder<B, *>, W : WorkRequest> internal constructor() {
        private var constraints: Constraints = Constraints.NONE
        private var expedited = false
        private var initialDelayMs = 0L
        @Suppress("UNCHECKED_CAST")
        private val self: B get() = this as B
        fun setConstraints(constraints: Constraints): B = self.also { this.constraints = constraints }
        fun setBackoffCriteria(backoffPolicy: BackoffPolicy, backoffDelay: Long, timeUnit: TimeUnit): B = self
        fun setInputData(inputData: Data): B = self
        open fun setExpedited(policy: OutOfQuotaPolicy): B = self.also { expedited = true }
        open fun setInitialDelay(duration: Long, timeUnit: TimeUnit): B = self.also { initialDelayMs = timeUnit.toMillis(duration) }
        fun addTag(tag: String): B = self
        internal abstract fun buildInternal(): W
        fun build(): W {
            val c = constraints
            if (expedited) {
                require(!(c.requiresBatteryNotLow() || c.requiresCharging() || c.requiresDeviceIdle())) {
                    "Expedited jobs only support network and storage constraints"
                }
                require(initialDelayMs <= 0) { "Expedited jobs cannot be delayed" }
            }
            return buildInternal().also {
                it.constraints = c
                it.expedited = expedited
            }
        }
    }
}

class OneTimeWorkRequest internal constructor() : WorkRequest() {
    class Builder(workerClass: Class<out ListenableWorker>) : WorkRequest.Builder<Builder, OneTimeWorkRequest>() {
        override fun buildInternal(): OneTimeWorkRequest = OneTimeWorkRequest()
    }
}

class PeriodicWorkRequest internal constructor() : WorkRequest() {
    class Builder(
        workerClass: Class<out ListenableWorker>,
        repeatInterval: Long,
        repeatIntervalTimeUnit: TimeUnit,
        flexInterval: Long,
        flexIntervalTimeUnit: TimeUnit,
    ) : WorkRequest.Builder<Builder, PeriodicWorkRequest>() {
        override fun buildInternal(): PeriodicWorkRequest = PeriodicWorkRequest()
    }
}

/** work-runtime-ktx: `OneTimeWorkRequestBuilder<W>()`. */
inline fun <reified W : ListenableWorker> OneTimeWorkRequestBuilder(): OneTimeWorkRequest.Builder =
    OneTimeWorkRequest.Builder(W::class.java)

/** work-runtime-ktx: `PeriodicWorkRequestBuilder<W>(interval, unit, flex, flexUnit)`. */
inline fun <reified W : ListenableWorker> PeriodicWorkRequestBuilder(
    repeatInterval: Long,
    repeatIntervalTimeUnit: TimeUnit,
    flexTimeInterval: Long,
    flexTimeIntervalUnit: TimeUnit,
): PeriodicWorkRequest.Builder =
    PeriodicWorkRequest.Builder(W::class.java, repeatInterval, repeatIntervalTimeUnit, flexTimeInterval, flexTimeIntervalUnit)

abstract class WorkManager internal constructor() {
    abstract fun enqueueUniquePeriodicWork(
        uniqueWorkName: String,
        existingPeriodicWorkPolicy: ExistingPeriodicWorkPolicy,
        periodicWork: PeriodicWorkRequest,
    ): Operation
    open fun enqueueUniqueWork(
        uniqueWorkName: String,
        existingWorkPolicy: ExistingWorkPolicy,
        work: OneTimeWorkRequest,
    ): Operation = throw UnsupportedOperationException()
    abstract fun cancelUniqueWork(uniqueWorkName: String): Operation
    abstract fun getWorkInfosForUniqueWork(uniqueWorkName: String): ListenableFuture<List<WorkInfo>>

    companion object {
        @JvmStatic fun getInstance(context: Context): WorkManager = throw UnsupportedOperationException()
    }
}

class WorkInfo private constructor() {
    val state: State get() = throw UnsupportedOperationException()
    val nextScheduleTimeMillis: Long get() = throw UnsupportedOperationException()
    val stopReason: Int get() = throw UnsupportedOperationException()

    enum class State {
        ENQUEUED, RUNNING, SUCCEEDED, FAILED, BLOCKED, CANCELLED;

        val isFinished: Boolean get() = this == SUCCEEDED || this == FAILED || this == CANCELLED
    }

    companion object {
        const val STOP_REASON_NOT_STOPPED: Int = -256
    }
}

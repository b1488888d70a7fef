package app.tauri.backgroundsync

import org.json.JSONObject

/** What the foreground hands over (persisted, because the worker may run in a cold process). */
data class RegisterArgs(
    val dbPath: String,
    val libraryName: String?,
    val intervalMinutes: Int,
    val requiresNetwork: Boolean,
    val requiresCharging: Boolean,
    val requiresBatteryNotLow: Boolean,
    val budgetMs: Long,
    val runNow: Boolean,
)

/** The WorkManager requests derived from [RegisterArgs], free of Android types so it is unit-tested on the JVM. */
data class WorkPlan(
    val periodMinutes: Long,
    val flexMinutes: Long,
    val requireConnected: Boolean,
    val requireCharging: Boolean,
    val requireBatteryNotLow: Boolean,
    val workerBudgetMs: Long,
)

/** What the worker reports back to WorkManager. */
enum class WorkOutcome { SUCCESS, RETRY }

object WorkPlanner {
    /** WorkManager's floor for periodic work. */
    const val MIN_PERIOD_MINUTES = 15L
    /** WorkManager stops a worker after 10 minutes; leave a margin to record the report. */
    const val MAX_BUDGET_MS = 9L * 60_000L

    fun plan(a: RegisterArgs): WorkPlan {
        val period = maxOf(MIN_PERIOD_MINUTES, a.intervalMinutes.toLong())
        return WorkPlan(
            periodMinutes = period,
            // Let the OS batch the run within the last third of the period.
            flexMinutes = maxOf(5L, period / 3),
            requireConnected = a.requiresNetwork,
            requireCharging = a.requiresCharging,
            requireBatteryNotLow = a.requiresBatteryNotLow,
            workerBudgetMs = a.budgetMs.coerceIn(1_000L, MAX_BUDGET_MS),
        )
    }

    /**
     * Map a drain report to a WorkManager result. Nothing to do, disabled, not configured or
     * auth failing are successes (retrying soon would not help; the seeds' "graceful skip");
     * a run cut short with work left is retried with WorkManager's backoff.
     */
    fun outcome(reportJson: String): WorkOutcome {
        val env = try { JSONObject(reportJson) } catch (e: Exception) { return WorkOutcome.RETRY }
        if (!env.optBoolean("ok", false)) {
            val error = env.optJSONObject("error")
            val kind = error?.optString("kind") ?: ""
            // A corrupt or missing database will not heal by retrying in 30 s; one locked by
            // another connection will (the engine's storage errors say "locked" then).
            val locked = kind == "storage" && (error?.optString("message") ?: "").contains("locked")
            val lasting = !locked && (kind == "storage" || kind == "corrupt" || kind == "invalidInput")
            return if (lasting) WorkOutcome.SUCCESS else WorkOutcome.RETRY
        }
        val report = env.optJSONObject("report") ?: return WorkOutcome.RETRY
        val remaining = report.optLong("remaining", 0)
        return when (report.optString("stopReason")) {
            "empty", "waiting", "disabled", "notConfigured", "authFailed" -> WorkOutcome.SUCCESS
            "deadline", "cancelled", "noNetwork", "alreadyRunning", "error" ->
                if (remaining > 0) WorkOutcome.RETRY else WorkOutcome.SUCCESS
            else -> WorkOutcome.SUCCESS
        }
    }
}

/**
 * Which validated networks are up (a pure helper for the network callback): Wi-Fi and cellular
 * overlap, so a reconnect is the first network after none, not every network that appears.
 */
class NetworkSet {
    private val up = HashSet<String>()

    /** Record [id] as up; true when it is the first one (the device came back online). */
    @Synchronized fun add(id: String): Boolean {
        val wasOffline = up.isEmpty()
        return up.add(id) && wasOffline
    }

    @Synchronized fun remove(id: String) {
        up.remove(id)
    }

    @Synchronized fun isOnline(): Boolean = up.isNotEmpty()
}

/**
 * The network callback's registration (a pure helper: [register] and [unregister] are
 * ConnectivityManager's in the plugin): at most one registration at a time however often
 * [start] is called, released by [stop], and a registration that throws leaves the app running
 * (reconnect runs then rely on the periodic work).
 */
class Registration<C : Any>(
    private val register: (C) -> Unit,
    private val unregister: (C) -> Unit,
) {
    private var current: C? = null

    /** Register [make]'s callback unless one is registered; what registering threw, if it did. */
    @Synchronized fun start(make: () -> C): Exception? {
        if (current != null) return null
        val cb = make()
        return try {
            register(cb)
            current = cb
            null
        } catch (e: Exception) {
            e
        }
    }

    /** Unregister what is registered; what unregistering threw, if it did (nothing is held
     *  afterwards either way: the callback is not retried). */
    @Synchronized fun stop(): Exception? {
        val cb = current ?: return null
        current = null
        return try {
            unregister(cb)
            null
        } catch (e: Exception) {
            e
        }
    }

    @Synchronized fun isRegistered(): Boolean = current != null
}

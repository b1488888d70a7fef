package app.tauri.backgroundsync

import org.junit.Assert.assertEquals
import org.junit.Test

class WorkPlannerTest {
    private fun args(interval: Int = 15, budget: Long = 25_000, net: Boolean = true, charging: Boolean = false, battery: Boolean = true) =
        RegisterArgs("/data/db", "app_lib", interval, net, charging, battery, budget, false)

    @Test fun periodIsClampedToWorkManagersFloor() {
        assertEquals(15L, WorkPlanner.plan(args(interval = 1)).periodMinutes)
        assertEquals(60L, WorkPlanner.plan(args(interval = 60)).periodMinutes)
        assertEquals(20L, WorkPlanner.plan(args(interval = 60)).flexMinutes)
    }

    @Test fun budgetStaysUnderTheTenMinuteLimit() {
        assertEquals(9L * 60_000L, WorkPlanner.plan(args(budget = 3_600_000)).workerBudgetMs)
        assertEquals(1_000L, WorkPlanner.plan(args(budget = 0)).workerBudgetMs)
    }

    @Test fun constraintsFollowConfig() {
        val p = WorkPlanner.plan(args(net = false, charging = true, battery = false))
        assertEquals(false, p.requireConnected)
        assertEquals(true, p.requireCharging)
        assertEquals(false, p.requireBatteryNotLow)
    }

    @Test fun reportsMapToResults() {
        fun r(reason: String, remaining: Int) = """{"ok":true,"report":{"stopReason":"$reason","remaining":$remaining}}"""
        assertEquals(WorkOutcome.SUCCESS, WorkPlanner.outcome(r("empty", 0)))
        assertEquals(WorkOutcome.SUCCESS, WorkPlanner.outcome(r("disabled", 12)))
        assertEquals(WorkOutcome.SUCCESS, WorkPlanner.outcome(r("authFailed", 12)))
        assertEquals(WorkOutcome.RETRY, WorkPlanner.outcome(r("deadline", 12)))
        assertEquals(WorkOutcome.RETRY, WorkPlanner.outcome(r("cancelled", 3)))
        assertEquals(WorkOutcome.SUCCESS, WorkPlanner.outcome(r("cancelled", 0)))
        assertEquals(WorkOutcome.RETRY, WorkPlanner.outcome(r("noNetwork", 3)))
        assertEquals(WorkOutcome.SUCCESS, WorkPlanner.outcome("""{"ok":false,"error":{"kind":"storage","message":"corrupt"}}"""))
        assertEquals(WorkOutcome.SUCCESS, WorkPlanner.outcome("""{"ok":false,"error":{"kind":"corrupt","message":"stored credentials"}}"""))
        assertEquals(WorkOutcome.RETRY, WorkPlanner.outcome("not json"))
        // A database locked by another connection heals by itself: the engine's own wording for a
        // run cut while it waited, and for a statement that gave up waiting (error.rs hint).
        val cut = "the drain was cancelled while it was still waiting, most likely for the outbox database " +
            "(locked by another connection or process); nothing queued was lost, the next drain carries on"
        assertEquals(WorkOutcome.RETRY, WorkPlanner.outcome("""{"ok":false,"error":{"kind":"storage","message":"$cut"}}"""))
        val busy = "storage error: database is locked (the database is locked by another connection or process)"
        assertEquals(WorkOutcome.RETRY, WorkPlanner.outcome("""{"ok":false,"error":{"kind":"storage","message":"$busy"}}"""))
    }
}

// Builds every WorkManager request the shim can enqueue (tests/native/android_compile.sh runs
// this on the host JVM) against the AndroidX stubs, whose builders enforce WorkManager's
// runtime rules as androidx's WorkRequest.kt states them. A request the real WorkManager would
// reject on a device (e.g. an expedited run with a battery constraint) fails here.
import androidx.work.Constraints
import androidx.work.OneTimeWorkRequestBuilder
import androidx.work.OutOfQuotaPolicy
import app.tauri.backgroundsync.NetworkSet
import app.tauri.backgroundsync.Registration
import app.tauri.backgroundsync.RegisterArgs
import app.tauri.backgroundsync.SyncWorker
import app.tauri.backgroundsync.WorkPlanner
import app.tauri.backgroundsync.WorkRequests
import kotlin.system.exitProcess

fun main() {
    var built = 0
    val failures = mutableListOf<String>()
    // The stub rule is live: the request the real library rejects is rejected here too.
    try {
        OneTimeWorkRequestBuilder<SyncWorker>()
            .setConstraints(Constraints.Builder().setRequiresBatteryNotLow(true).build())
            .setExpedited(OutOfQuotaPolicy.RUN_AS_NON_EXPEDITED_WORK_REQUEST)
            .build()
        failures += "the stubs accept an expedited request with a battery constraint (rule not enforced)"
    } catch (e: IllegalArgumentException) {
        // expected
    }
    for (network in listOf(true, false)) for (charging in listOf(true, false)) for (battery in listOf(true, false)) {
        for (interval in listOf(1, 15, 60)) {
            val plan = WorkPlanner.plan(RegisterArgs("/db", "app_lib", interval, network, charging, battery, 25_000, true))
            val cases = listOf<Pair<String, () -> Any>>(
                "periodic" to { WorkRequests.periodic(plan) },
                "one-off" to { WorkRequests.oneOff(plan, "reconnect") },
            )
            for ((name, build) in cases) {
                try {
                    build()
                    built++
                } catch (e: IllegalArgumentException) {
                    failures += "$name request (network=$network charging=$charging batteryNotLow=$battery): ${e.message}"
                }
            }
            val once = runCatching { WorkRequests.oneOff(plan, "reconnect") }.getOrNull()
            if (once != null && !once.expedited) failures += "the one-off run is not expedited"
        }
    }
    // Overlapping networks: Wi-Fi and cellular both up, one lost, one back: no second reconnect.
    val nets = NetworkSet()
    val reconnects = listOf(nets.add("wifi"), nets.add("cell")).count { it }
    nets.remove("wifi")
    val again = nets.add("wifi")
    nets.remove("wifi"); nets.remove("cell")
    val back = nets.add("cell")
    if (reconnects != 1 || again || !back) {
        failures += "network set: reconnects=$reconnects, wifi back while cell up counted=$again, back after offline=$back"
    }
    // The callback's registration: one at a time (a plugin started twice registers once),
    // released on destroy, registered again after; a throwing register leaves nothing held.
    val registered = mutableListOf<String>()
    var made = 0
    val reg = Registration<String>(register = { registered += it }, unregister = { registered -= it })
    reg.start { "cb${++made}" }; reg.start { "cb${++made}" }
    val once = registered.toList()
    reg.stop(); reg.stop()
    val afterStop = registered.toList()
    reg.start { "cb${++made}" }
    val reRegistered = registered.toList()
    val failing = Registration<String>(register = { throw SecurityException("no ACCESS_NETWORK_STATE") }, unregister = {})
    val threw = failing.start { "x" } != null
    val failingStop = Registration<String>(register = {}, unregister = { throw IllegalArgumentException("not registered") })
    failingStop.start { "y" }
    val stopReported = failingStop.stop() != null
    if (once != listOf("cb1") || afterStop.isNotEmpty() || reRegistered != listOf("cb2") || !threw || failing.isRegistered() ||
        !stopReported || failingStop.isRegistered()) {
        failures += "callback registration: first=$once afterStop=$afterStop again=$reRegistered throwing register reported=$threw " +
            "kept=${failing.isRegistered()} throwing unregister reported=$stopReported kept=${failingStop.isRegistered()}"
    }
    if (failures.isNotEmpty()) {
        failures.forEach { println("FAIL: $it") }
        println("WorkManager rules: ${failures.size} failed")
        exitProcess(1)
    }
    println("WorkManager rules: $built requests built and accepted; network set ok; callback registration ok")
}

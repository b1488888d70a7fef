// Runs the iOS shim's DrainRun (ios/Sources/BackgroundSyncPlugin/DrainRun.swift, compiled in
// unchanged) against the real C ABI (examples/ffi-host, the engine as an app links it) and a
// reference server, while another thread plays iOS: it fetches the task's expiration handler at
// a random moment and runs it a moment later, as BGTaskScheduler may when the deadline comes
// while the drain is finishing. Built with -sanitize=address: a write through a freed cancel
// flag aborts with "heap-use-after-free".
//
//   swift-drain-asan <baseUrl> <workDir> <runs> fixed    the shim's DrainRun: must pass
//   swift-drain-asan <baseUrl> <workDir> <runs> legacy   defect 3 put back: must be caught
import BackgroundSyncFFI
import Foundation

/// Stands in for BGTask: the expiration handler behind a lock, as the OS reads it from its
/// own thread, and the completion.
final class FakeTask {
    private let lock = NSLock()
    private var handler: (() -> Void)?
    private(set) var completed: Bool?
    private(set) var handlerSetAtCompletion = false
    /// How the deadline met the run: before completion, after it with the handler gone, or
    /// after it through a handler fetched before it was cleared (the window of defect 3).
    private(set) var expiredLate = false
    private(set) var expiredThroughStaleHandler = false

    func setExpiration(_ h: (() -> Void)?) {
        lock.lock(); handler = h; lock.unlock()
    }

    /// What iOS does at the deadline: take the handler, run it (a moment later).
    func expire(after delayUs: UInt32) {
        lock.lock(); let h = handler; lock.unlock()
        usleep(delayUs)
        lock.lock(); let late = completed != nil; lock.unlock()
        expiredLate = late
        expiredThroughStaleHandler = late && h != nil
        h?()
    }

    /// The worst case, made certain: the OS fetches the handler while the drain runs and runs
    /// it only once the task has completed.
    func expireAfterCompletion() {
        lock.lock(); let h = handler; lock.unlock()
        while true {
            lock.lock(); let done = completed != nil; lock.unlock()
            if done { break }
            usleep(200)
        }
        expiredLate = true
        expiredThroughStaleHandler = h != nil
        h?()
    }

    func setTaskCompleted(success: Bool) {
        lock.lock()
        handlerSetAtCompletion = handler != nil
        completed = success
        lock.unlock()
    }
}

/// Defect 3 as it shipped: a raw flag freed when the drain returns, the handler left set.
func legacyStart(task: FakeTask, drain: @escaping (UnsafeMutablePointer<Int32>) -> [String: Any]?,
                 done: @escaping () -> Void) {
    let flag = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    flag.initialize(to: 0)
    task.setExpiration { flag.pointee = 1 }
    DispatchQueue.global(qos: .utility).async {
        let report = drain(flag)
        flag.deallocate()
        task.setTaskCompleted(success: DrainRun.succeeded(report))
        done()
    }
}

func call(_ s: UnsafeMutablePointer<CChar>?) -> String {
    guard let s = s else { fatalError("the C ABI returned NULL") }
    defer { bgsync_free(s) }
    return String(cString: s)
}

let args = CommandLine.arguments
guard args.count == 5, let runs = Int(args[3]), ["fixed", "legacy"].contains(args[4]) else {
    print("usage: swift-drain-asan <baseUrl> <workDir> <runs> fixed|legacy")
    exit(2)
}
let (baseUrl, workDir, mode) = (args[1], args[2], args[4])
var reasons: [String: Int] = [:]
var expiredLate = 0
var expiredThroughStale = 0
let reasonsLock = NSLock()

for i in 0..<runs {
    let db = "\(workDir)/run-\(i).db"
    let configured = call(bgsync_configure(db, "{\"baseUrl\":\"\(baseUrl)\",\"concurrency\":2}"))
    precondition(configured.contains("\"ok\":true"), configured)
    _ = call(bgsync_set_enabled(db, 1))
    for m in 0..<3 {
        let mutation = "{\"method\":\"PUT\",\"path\":\"/visits/v\(i)-\(m)\",\"body\":{\"n\":\(m)},\"entity\":{\"kind\":\"visit\",\"id\":\"v\(i)-\(m)\"}}"
        let enqueued = call(bgsync_enqueue(db, mutation))
        precondition(enqueued.contains("\"ok\":true"), enqueued)
    }
    let task = FakeTask()
    let finished = DispatchSemaphore(value: 0)
    let drain: (UnsafeMutablePointer<Int32>) -> [String: Any]? = { flag in
        DrainRun.drain(db, 5_000, "ios-refresh", flag)
    }
    if mode == "fixed" {
        DrainRun.start(setExpiration: task.setExpiration, drain: drain) { report in
            task.setTaskCompleted(success: DrainRun.succeeded(report))
            reasonsLock.lock()
            reasons[report?["stopReason"] as? String ?? "nil", default: 0] += 1
            reasonsLock.unlock()
            finished.signal()
        }
    } else {
        legacyStart(task: task, drain: drain) { finished.signal() }
    }
    // iOS: the deadline comes at a random moment, before, during or just after the drain
    // (which takes tens of milliseconds here), and the handler may run a moment after the OS
    // fetched it.
    // Every tenth run the handler is fetched at once and run after completion.
    let os = Thread {
        if i % 10 == 9 {
            task.expireAfterCompletion()
        } else {
            usleep(UInt32.random(in: 0...150_000))
            task.expire(after: UInt32.random(in: 0...20_000))
        }
    }
    os.start()
    finished.wait()
    // Let the "OS" thread finish before the next run (its handler may run after completion).
    while !os.isFinished { usleep(200) }
    expiredLate += task.expiredLate ? 1 : 0
    expiredThroughStale += task.expiredThroughStaleHandler ? 1 : 0
    if mode == "fixed" {
        precondition(task.completed != nil, "run \(i): never completed")
        precondition(!task.handlerSetAtCompletion, "run \(i): the expiration handler was still set at completion")
    }
}
print("SWIFT-DRAIN \(mode): \(runs) runs; stop reasons \(reasons.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); expiration after completion \(expiredLate) (through a handler fetched before it was cleared: \(expiredThroughStale))")

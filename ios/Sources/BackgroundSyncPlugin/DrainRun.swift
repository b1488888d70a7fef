import BackgroundSyncFFI
import Foundation

// The part of the iOS shim that decides when memory is freed and in which order a background
// run ends. It imports no Apple-only framework (no UIKit, BackgroundTasks, Tauri), so the same
// file is compiled and run on Linux under AddressSanitizer against the real C ABI
// (tests/native/swift_drain_asan.sh), with the OS's expiration handler played by another thread.

/// The cancel flag Rust polls (`const volatile int32_t *`), owned by an object: whoever holds
/// the last reference (an expiration handler the OS is still running, or the drain) frees it,
/// never while the other can write.
final class CancelFlag {
    let pointer: UnsafeMutablePointer<Int32>

    init() {
        pointer = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        pointer.initialize(to: 0)
    }

    func raise() {
        pointer.pointee = 1
    }

    deinit {
        pointer.deinitialize(count: 1)
        pointer.deallocate()
    }
}

/// One drain with an OS deadline (a BGTask's expiration handler, a background task's grace
/// period): the handler raises the cancel flag, the drain runs on a background queue, and the
/// run ends in this order: the handler is cleared, then `completion` reports (the BGTask is
/// completed there). The handler retains the flag, so a handler the OS fetched before it was
/// cleared and runs after the drain returned still writes to live memory.
enum DrainRun {
    /// `setExpiration(handler)` installs the OS's expiration handler; `setExpiration(nil)`
    /// clears it. `drain` gets the flag to pass to the C ABI.
    static func start(
        queue: DispatchQueue = .global(qos: .utility),
        setExpiration: @escaping ((() -> Void)?) -> Void,
        drain: @escaping (UnsafeMutablePointer<Int32>) -> [String: Any]?,
        completion: @escaping (_ report: [String: Any]?) -> Void
    ) {
        let flag = CancelFlag()
        setExpiration { flag.raise() }
        queue.async {
            let report = drain(flag.pointer)
            setExpiration(nil)
            completion(report)
            withExtendedLifetime(flag) {}
        }
    }

    /// Whether the OS should count the run as successful: anything but a failure or a cut run
    /// (a cut run leaves rows pending, and the next run picks them up).
    static func succeeded(_ report: [String: Any]?) -> Bool {
        let reason = report?["stopReason"] as? String ?? "error"
        return reason != "error" && reason != "cancelled"
    }

    /// The blocking drain through the C ABI: the report object, or nil when the call failed.
    static func drain(_ db: String, _ budgetMs: UInt64, _ trigger: String, _ flag: UnsafeMutablePointer<Int32>?) -> [String: Any]? {
        guard let raw = bgsync_drain_with_trigger(db, budgetMs, trigger, flag) else { return nil }
        defer { bgsync_free(raw) }
        let json = String(cString: raw)
        guard let obj = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { return nil }
        return obj["report"] as? [String: Any]
    }
}

import BackgroundTasks
import Foundation
import Network
import Tauri
import UIKit
import os.log

private let log = OSLog(subsystem: "app.tauri.backgroundsync", category: "BackgroundSync")

struct RegisterArgs: Decodable, Equatable {
    let dbPath: String
    var intervalMinutes: Int = 15
    var requiresNetwork: Bool = true
    var requiresCharging: Bool = false
    var budgetMs: UInt64 = 25_000
    var runNow: Bool = false
}

/// Registers BGTaskScheduler handlers that run the Rust drain through the C ABI. Handlers must be
/// registered before the app finishes launching: the plugin object is created during Tauri's
/// `Builder::build`, before `UIApplicationMain`, which is early enough.
class BackgroundSyncPlugin: Plugin {
    static let defaultsKey = "app.tauri.backgroundsync.register"
    let refreshId: String
    let processingId: String
    private let monitor = NWPathMonitor()
    private var wasSatisfied = true

    override init() {
        let bundle = Bundle.main.bundleIdentifier ?? "app"
        refreshId = "\(bundle).background-sync.refresh"
        processingId = "\(bundle).background-sync.processing"
        super.init()
        // Tauri creates the plugin while Rust's setup waits (register_ios_plugin), and Rust opens
        // the database right after; BGTask handlers run in this same process later.
        if !CredentialsKey.handOver(SystemKeychain(), random: SystemKeychain.random) {
            os_log("no credentials key from the Keychain: credentials stay in memory this run", log: log, type: .error)
        }
        registerHandlers()
        watchNetwork()
    }

    /// The identifiers must be listed in Info.plist or `register` traps at runtime; say so loudly
    /// instead (the most reported failure with BGTaskScheduler wrappers).
    private func permitted() -> Set<String> {
        let ids = Bundle.main.object(forInfoDictionaryKey: "BGTaskSchedulerPermittedIdentifiers") as? [String] ?? []
        return Set(ids)
    }

    private func registerHandlers() {
        let ids = permitted()
        for id in [refreshId, processingId] where !ids.contains(id) {
            os_log("background sync disabled: add %{public}@ to BGTaskSchedulerPermittedIdentifiers in Info.plist (see Info.ios.plist)", log: log, type: .error, id)
        }
        if ids.contains(refreshId) {
            BGTaskScheduler.shared.register(forTaskWithIdentifier: refreshId, using: nil) { task in
                self.run(task: task, trigger: "ios-refresh", budgetMs: 25_000)
            }
        }
        if ids.contains(processingId) {
            BGTaskScheduler.shared.register(forTaskWithIdentifier: processingId, using: nil) { task in
                self.run(task: task, trigger: "ios-processing", budgetMs: 5 * 60_000)
            }
        }
    }

    private func savedArgs() -> RegisterArgs? {
        guard let data = UserDefaults.standard.data(forKey: Self.defaultsKey) else { return nil }
        return try? JSONDecoder().decode(RegisterArgs.self, from: data)
    }

    /// Runs the drain on a background queue; the expiration handler raises the cancel flag,
    /// which Rust polls, and the task completes from the report. Order and ownership are in
    /// `DrainRun` (DrainRun.swift, run under AddressSanitizer on Linux): the handler is cleared
    /// before the task completes, and it retains the flag.
    private func run(task: BGTask, trigger: String, budgetMs: UInt64) {
        guard let args = savedArgs() else {
            task.setTaskCompleted(success: true)
            return
        }
        schedule(args, force: true) // this run consumed the pending request: ask for the next
        DrainRun.start(
            setExpiration: { task.expirationHandler = $0 },
            drain: { DrainRun.drain(args.dbPath, min(budgetMs, args.budgetMs), trigger, $0) },
            completion: { report in
                let reason = report?["stopReason"] as? String ?? "error"
                os_log("drain %{public}@: %{public}@", log: log, type: .info, trigger, reason)
                task.setTaskCompleted(success: DrainRun.succeeded(report))
            }
        )
    }

    /// A drain while the app runs (reconnect, run-now, enable): iOS suspends a backgrounded app
    /// within seconds, requests and all, so it runs inside `beginBackgroundTask`, whose
    /// expiration cancels the drain (rows stay pending).
    private func foregroundDrain(_ args: RegisterArgs, trigger: String) {
        let flag = CancelFlag()
        DispatchQueue.main.async {
            var id = UIBackgroundTaskIdentifier.invalid
            id = UIApplication.shared.beginBackgroundTask(withName: "background-sync \(trigger)") {
                flag.raise()
                if id != .invalid { UIApplication.shared.endBackgroundTask(id) }
                id = .invalid
            }
            DispatchQueue.global(qos: .utility).async {
                _ = DrainRun.drain(args.dbPath, args.budgetMs, trigger, flag.pointer)
                DispatchQueue.main.async {
                    if id != .invalid { UIApplication.shared.endBackgroundTask(id) }
                    id = .invalid
                }
            }
        }
    }

    /// Submit the refresh and processing requests. A submit replaces the pending request and
    /// restarts its `earliestBeginDate`, so a launch or a configure that changed nothing must not
    /// submit again (frequent launches would starve background refresh): only when `force`
    /// (after a run), when the settings changed, or when nothing is pending.
    private func schedule(_ args: RegisterArgs, force: Bool = false) {
        if force {
            submit(args)
            return
        }
        BGTaskScheduler.shared.getPendingTaskRequests { pending in
            let ids = Set(pending.map { $0.identifier })
            if !ids.contains(self.refreshId) || !ids.contains(self.processingId) {
                self.submit(args)
            }
        }
    }

    private func submit(_ args: RegisterArgs) {
        let ids = permitted()
        if ids.contains(refreshId) {
            let r = BGAppRefreshTaskRequest(identifier: refreshId)
            r.earliestBeginDate = Date(timeIntervalSinceNow: TimeInterval(max(15, args.intervalMinutes) * 60))
            do { try BGTaskScheduler.shared.submit(r) } catch {
                os_log("cannot schedule app refresh: %{public}@", log: log, type: .error, error.localizedDescription)
            }
        }
        if ids.contains(processingId) {
            let p = BGProcessingTaskRequest(identifier: processingId)
            p.requiresNetworkConnectivity = args.requiresNetwork
            p.requiresExternalPower = args.requiresCharging
            do { try BGTaskScheduler.shared.submit(p) } catch {
                os_log("cannot schedule processing: %{public}@", log: log, type: .error, error.localizedDescription)
            }
        }
    }

    /// A network that becomes usable again triggers a foreground drain (the app is running).
    private func watchNetwork() {
        monitor.pathUpdateHandler = { [weak self] path in
            guard let self = self else { return }
            let satisfied = path.status == .satisfied
            defer { self.wasSatisfied = satisfied }
            guard satisfied, !self.wasSatisfied, let args = self.savedArgs() else { return }
            self.foregroundDrain(args, trigger: "reconnect")
        }
        monitor.start(queue: DispatchQueue(label: "app.tauri.backgroundsync.path"))
    }

    @objc public func register(_ invoke: Invoke) throws {
        let args = try invoke.parseArgs(RegisterArgs.self)
        var stored = args
        stored.runNow = false
        let changed = savedArgs() != stored
        if let data = try? JSONEncoder().encode(EncodableArgs(args)) {
            UserDefaults.standard.set(data, forKey: Self.defaultsKey)
        }
        schedule(args, force: changed)
        if args.runNow {
            foregroundDrain(args, trigger: "ios-enable")
        }
        // Rust records missing identifiers in status.lastError: the app sees why nothing runs.
        let ids = permitted()
        invoke.resolve(RegisterResult(missingIdentifiers: [refreshId, processingId].filter { !ids.contains($0) }))
    }

    @objc public func unregister(_ invoke: Invoke) throws {
        BGTaskScheduler.shared.cancel(taskRequestWithIdentifier: refreshId)
        BGTaskScheduler.shared.cancel(taskRequestWithIdentifier: processingId)
        invoke.resolve()
    }

    /// Facts for `diagnostics()`; every judgement is in Rust (crates/background-sync-core/src/
    /// diagnose.rs). `getPendingTaskRequests` answers on a background queue; UIApplication is
    /// read on the main thread.
    @objc public func diagnostics(_ invoke: Invoke) throws {
        let ids = permitted()
        let missing = [refreshId, processingId].filter { !ids.contains($0) }
        BGTaskScheduler.shared.getPendingTaskRequests { requests in
            let pending = requests.map { r in
                PendingTaskFact(identifier: r.identifier,
                                earliestBeginAt: r.earliestBeginDate.map { Int64($0.timeIntervalSince1970 * 1000) })
            }
            DispatchQueue.main.async {
                let status: String
                switch UIApplication.shared.backgroundRefreshStatus {
                case .available: status = "available"
                case .denied: status = "denied"
                case .restricted: status = "restricted"
                @unknown default: status = "unknown"
                }
                invoke.resolve(DiagnosticsFacts(backgroundRefreshStatus: status, missingIdentifiers: missing,
                                                pendingRequests: pending,
                                                lowPowerMode: ProcessInfo.processInfo.isLowPowerModeEnabled))
            }
        }
    }

    @objc public func runNow(_ invoke: Invoke) throws {
        guard let args = savedArgs() else { return invoke.reject("register first") }
        foregroundDrain(args, trigger: "ios-run-now")
        invoke.resolve()
    }
}

/// What `register` answers: the BGTask identifiers Info.plist does not permit.
struct RegisterResult: Encodable {
    let missingIdentifiers: [String]
}

/// What `diagnostics` answers (read by Rust as `PlatformFacts::Ios`).
struct DiagnosticsFacts: Encodable {
    let platform = "ios"
    let backgroundRefreshStatus: String
    let missingIdentifiers: [String]
    let pendingRequests: [PendingTaskFact]
    let lowPowerMode: Bool
}

struct PendingTaskFact: Encodable {
    let identifier: String
    let earliestBeginAt: Int64?
}

/// RegisterArgs round-trips through UserDefaults.
private struct EncodableArgs: Encodable {
    let dbPath: String, intervalMinutes: Int, requiresNetwork: Bool, requiresCharging: Bool, budgetMs: UInt64, runNow: Bool
    init(_ a: RegisterArgs) {
        dbPath = a.dbPath; intervalMinutes = a.intervalMinutes; requiresNetwork = a.requiresNetwork
        requiresCharging = a.requiresCharging; budgetMs = a.budgetMs; runNow = false
    }
}

@_cdecl("init_plugin_background_sync")
func initPlugin() -> Plugin {
    return BackgroundSyncPlugin()
}

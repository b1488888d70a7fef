// Compile-only stand-in for Apple's BackgroundTasks framework (iOS 13+), written from its
// reference: https://developer.apple.com/documentation/backgroundtasks (BGTaskScheduler,
// BGTask, BGTaskRequest and their subclasses). Signatures as Swift imports them from the SDK;
// Objective-C methods import with discardable results. Nothing here runs.
import Dispatch
import Foundation

open class BGTask {
    /// https://developer.apple.com/documentation/backgroundtasks/bgtask/identifier
    open var identifier: String { fatalError("compile-only stub") }
    /// https://developer.apple.com/documentation/backgroundtasks/bgtask/expirationhandler
    /// "The system calls this handler shortly before the task's background time expires."
    open var expirationHandler: (() -> Void)?
    /// https://developer.apple.com/documentation/backgroundtasks/bgtask/settaskcompleted(success:)
    open func setTaskCompleted(success: Bool) { fatalError("compile-only stub") }
}

open class BGAppRefreshTask: BGTask {}
open class BGProcessingTask: BGTask {}

open class BGTaskRequest {
    /// https://developer.apple.com/documentation/backgroundtasks/bgtaskrequest/identifier
    public let identifier: String
    /// https://developer.apple.com/documentation/backgroundtasks/bgtaskrequest/earliestbegindate
    open var earliestBeginDate: Date?
    init(identifier: String) { self.identifier = identifier }
}

/// https://developer.apple.com/documentation/backgroundtasks/bgapprefreshtaskrequest
open class BGAppRefreshTaskRequest: BGTaskRequest {
    public override init(identifier: String) { super.init(identifier: identifier) }
}

/// https://developer.apple.com/documentation/backgroundtasks/bgprocessingtaskrequest
open class BGProcessingTaskRequest: BGTaskRequest {
    open var requiresNetworkConnectivity: Bool = false
    open var requiresExternalPower: Bool = false
    public override init(identifier: String) { super.init(identifier: identifier) }
}

open class BGTaskScheduler {
    /// https://developer.apple.com/documentation/backgroundtasks/bgtaskscheduler/shared
    public static let shared = BGTaskScheduler()

    /// https://developer.apple.com/documentation/backgroundtasks/bgtaskscheduler/error
    public struct Error: Swift.Error {
        public enum Code: Int {
            case unavailable = 1, tooManyPendingTaskRequests = 2, notPermitted = 3
        }
        public let code: Code
    }

    /// https://developer.apple.com/documentation/backgroundtasks/bgtaskscheduler/register(fortaskwithidentifier:using:launchhandler:)
    /// Must be called before the app finishes launching; the identifier must be listed in
    /// BGTaskSchedulerPermittedIdentifiers.
    @discardableResult
    open func register(forTaskWithIdentifier identifier: String, using queue: DispatchQueue?,
                       launchHandler: @escaping (BGTask) -> Void) -> Bool { fatalError("compile-only stub") }

    /// https://developer.apple.com/documentation/backgroundtasks/bgtaskscheduler/submit(_:)
    /// Throws BGTaskScheduler.Error; replaces a pending request with the same identifier.
    open func submit(_ taskRequest: BGTaskRequest) throws { fatalError("compile-only stub") }

    /// https://developer.apple.com/documentation/backgroundtasks/bgtaskscheduler/cancel(taskrequestwithidentifier:)
    open func cancel(taskRequestWithIdentifier identifier: String) { fatalError("compile-only stub") }

    open func cancelAllTaskRequests() { fatalError("compile-only stub") }

    /// https://developer.apple.com/documentation/backgroundtasks/bgtaskscheduler/getpendingtaskrequests(completionhandler:)
    open func getPendingTaskRequests(completionHandler: @escaping ([BGTaskRequest]) -> Void) {
        fatalError("compile-only stub")
    }
}

// Compile-only stand-in for Apple's Network framework (iOS 12+): the path monitor, from
// https://developer.apple.com/documentation/network/nwpathmonitor and
// https://developer.apple.com/documentation/network/nwpath. Nothing here runs.
import Dispatch

public struct NWPath {
    /// https://developer.apple.com/documentation/network/nwpath/status-swift.enum
    public enum Status: Equatable {
        case satisfied, unsatisfied, requiresConnection
    }
    public let status: Status
}

public final class NWPathMonitor {
    public init() {}
    /// https://developer.apple.com/documentation/network/nwpathmonitor/pathupdatehandler
    public var pathUpdateHandler: ((NWPath) -> Void)?
    public var currentPath: NWPath { fatalError("compile-only stub") }
    /// https://developer.apple.com/documentation/network/nwpathmonitor/start(queue:)
    public func start(queue: DispatchQueue) { fatalError("compile-only stub") }
    public func cancel() { fatalError("compile-only stub") }
}

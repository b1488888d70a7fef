// Compile-only stand-in for the parts of UIKit (and Apple-only Foundation members) the plugin
// and Tauri's Swift API use, from https://developer.apple.com/documentation/uikit/uiapplication
// and https://developer.apple.com/documentation/foundation/processinfo/islowpowermodeenabled.
// Nothing here runs.
// Like the SDK's UIKit, it re-exports Foundation.
@_exported import Foundation

/// https://developer.apple.com/documentation/uikit/uibackgroundtaskidentifier
public struct UIBackgroundTaskIdentifier: RawRepresentable, Equatable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// https://developer.apple.com/documentation/uikit/uibackgroundtaskidentifier/invalid
    public static let invalid = UIBackgroundTaskIdentifier(rawValue: 0)
}

/// https://developer.apple.com/documentation/uikit/uibackgroundrefreshstatus
public enum UIBackgroundRefreshStatus: Int {
    case restricted = 0, denied = 1, available = 2
}

open class UIApplication {
    /// https://developer.apple.com/documentation/uikit/uiapplication/shared (main thread only)
    open class var shared: UIApplication { fatalError("compile-only stub") }
    /// https://developer.apple.com/documentation/uikit/uiapplication/beginbackgroundtask(withname:expirationhandler:)
    open func beginBackgroundTask(withName taskName: String?, expirationHandler handler: (() -> Void)? = nil)
        -> UIBackgroundTaskIdentifier { fatalError("compile-only stub") }
    /// https://developer.apple.com/documentation/uikit/uiapplication/endbackgroundtask(_:)
    open func endBackgroundTask(_ identifier: UIBackgroundTaskIdentifier) { fatalError("compile-only stub") }
    /// https://developer.apple.com/documentation/uikit/uiapplication/backgroundrefreshstatus (main thread only)
    open var backgroundRefreshStatus: UIBackgroundRefreshStatus { fatalError("compile-only stub") }
}

open class UIViewController {}

extension ProcessInfo {
    /// Apple-only (iOS 9+); not in swift-corelibs-foundation.
    public var isLowPowerModeEnabled: Bool { fatalError("compile-only stub") }
}

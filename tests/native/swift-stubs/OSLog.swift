// Compile-only stand-in for Apple's os.log Swift API (https://developer.apple.com/documentation/os/oslog,
// https://developer.apple.com/documentation/os/os_log(_:log:type:_:)). Swift cannot declare a
// submodule, so the check imports this module where the sources say `import os.log`.
public final class OSLog {
    public init(subsystem: String, category: String) {}
    public static let `default` = OSLog(subsystem: "", category: "")
}

public struct OSLogType: Equatable {
    let raw: UInt8
    public static let `default` = OSLogType(raw: 0), info = OSLogType(raw: 1), debug = OSLogType(raw: 2),
        error = OSLogType(raw: 16), fault = OSLogType(raw: 17)
}

public func os_log(_ message: StaticString, log: OSLog = .default, type: OSLogType = .default, _ args: CVarArg...) {}
public func os_log(_ type: OSLogType, log: OSLog = .default, _ message: StaticString, _ args: CVarArg...) {}

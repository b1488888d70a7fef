// Stands in for Tauri's Tauri.swift (the IPC glue that finds commands through the Objective-C
// runtime: Selector, responds(to:), method(for:), which Linux's Foundation does not have). The
// plugin API itself (Plugin.swift, Invoke.swift, Channel.swift, JSTypes.swift, JsonValue.swift)
// is type-checked from the tauri crate's real sources.
import Foundation
import UIKit

public class PluginManager {
    static let shared: PluginManager = PluginManager()
    public var viewController: UIViewController?
}

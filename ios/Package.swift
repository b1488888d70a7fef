// swift-tools-version:5.3
import PackageDescription

let package = Package(
    name: "tauri-plugin-background-sync",
    // Tauri's plugin template: swift-rs builds the package for the host (macOS) too.
    platforms: [.iOS(.v13), .macOS(.v10_13)],
    products: [
        .library(name: "tauri-plugin-background-sync", type: .static, targets: ["BackgroundSyncPlugin"]),
    ],
    dependencies: [
        .package(name: "Tauri", path: "../.tauri/tauri-api"),
    ],
    targets: [
        // Declarations of the C ABI (include/bgsync.h). The symbols are defined in the app's
        // Rust static library by `export_native_entries!()` and resolved when the app links.
        .target(name: "BackgroundSyncFFI", path: "Sources/BackgroundSyncFFI"),
        .target(
            name: "BackgroundSyncPlugin",
            dependencies: [.byName(name: "Tauri"), "BackgroundSyncFFI"],
            path: "Sources/BackgroundSyncPlugin"
        ),
    ]
)

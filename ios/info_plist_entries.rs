// What the Swift shim needs in the app's Info.plist: included by build.rs (which writes these
// into the generated Info.plist on iOS builds) and by tests/info_plist.rs (which checks them
// against the identifiers BackgroundSyncPlugin.swift registers and against ios/Info.ios.plist).
// Xcode expands `$(PRODUCT_BUNDLE_IDENTIFIER)` when it processes Info.plist, so the identifiers
// follow the app's bundle id, as the shim derives them at run time.
#[allow(dead_code)]
fn info_plist_entries() -> [(&'static str, [&'static str; 2]); 2] {
    [
        (
            "BGTaskSchedulerPermittedIdentifiers",
            [
                "$(PRODUCT_BUNDLE_IDENTIFIER).background-sync.refresh",
                "$(PRODUCT_BUNDLE_IDENTIFIER).background-sync.processing",
            ],
        ),
        // BGAppRefreshTask needs "fetch", BGProcessingTask needs "processing".
        ("UIBackgroundModes", ["fetch", "processing"]),
    ]
}

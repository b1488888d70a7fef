// What the Swift shim needs in the app's Info.plist: included by build.rs (which writes these
// into the generated Info.plist on iOS builds) and by tests/info_plist.rs (which checks them
// against the identifiers BackgroundSyncPlugin.swift registers and against ios/Info.ios.plist,
// and runs the writer on an app's Info.plist).
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

/// Adds the entries to an app's Info.plist, as build.rs does on every iOS build: what the app
/// already lists stays, and nothing is added twice.
#[allow(dead_code)]
fn add_info_plist_entries(plist: &mut plist::Dictionary) {
    for (key, wanted) in info_plist_entries() {
        let mut values = plist
            .get(key)
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        for w in wanted {
            if !values.iter().any(|v| v.as_string() == Some(w)) {
                values.push(w.into());
            }
        }
        plist.insert(key.into(), values.into());
    }
}

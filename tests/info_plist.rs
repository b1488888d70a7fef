//! Issue 12, defect 5: the Info.plist entries the plugin writes at build time (ios/
//! info_plist_entries.rs, used by build.rs), the identifiers the Swift shim registers, and the
//! template in ios/Info.ios.plist must agree, or iOS skips the handlers silently. (The
//! build-time write itself runs only on a macOS host building for iOS.)

include!("../ios/info_plist_entries.rs");

fn entries(key: &str) -> Vec<String> {
    info_plist_entries()
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn the_identifiers_the_shim_registers_are_the_ones_info_plist_gets() {
    let swift =
        std::fs::read_to_string("ios/Sources/BackgroundSyncPlugin/BackgroundSyncPlugin.swift").unwrap();
    let ids = entries("BGTaskSchedulerPermittedIdentifiers");
    assert_eq!(ids.len(), 2);
    for id in &ids {
        // The shim builds "\(bundle).background-sync.refresh" from Bundle.main.bundleIdentifier.
        let swift_form = id.replace("$(PRODUCT_BUNDLE_IDENTIFIER)", "\\(bundle)");
        assert!(
            swift.contains(&format!("\"{swift_form}\"")),
            "the Swift shim does not register {id}"
        );
    }
    let modes = entries("UIBackgroundModes");
    for m in ["fetch", "processing"] {
        assert!(modes.iter().any(|x| x == m), "UIBackgroundModes lacks {m}");
    }
}

#[test]
fn the_info_plist_template_lists_every_entry() {
    let plist = std::fs::read_to_string("ios/Info.ios.plist").unwrap();
    for (key, values) in info_plist_entries() {
        assert!(
            plist.contains(&format!("<key>{key}</key>")),
            "ios/Info.ios.plist lacks {key}"
        );
        for v in values {
            assert!(
                plist.contains(&format!("<string>{v}</string>")),
                "ios/Info.ios.plist lacks {v} under {key}"
            );
        }
    }
}

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

/// build.rs's writer (run on every iOS build) on an Info.plist as an app's iOS project has it,
/// with a background mode of its own: the app's mode stays, ours are added once however many
/// builds run it, and the identifiers expand with the bundle id as the shim derives them.
#[test]
fn the_build_time_writer_adds_the_entries_to_an_apps_info_plist_once() {
    let app_plist = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>CFBundleIdentifier</key>
  <string>$(PRODUCT_BUNDLE_IDENTIFIER)</string>
  <key>UIBackgroundModes</key>
  <array><string>remote-notification</string></array>
</dict>
</plist>"#;
    let mut dict: plist::Dictionary = plist::from_bytes(app_plist.as_bytes()).unwrap();
    add_info_plist_entries(&mut dict);
    add_info_plist_entries(&mut dict);
    let mut written = Vec::new();
    plist::to_writer_xml(&mut written, &dict).unwrap();
    let back: plist::Dictionary = plist::from_bytes(&written).unwrap();
    let strings = |key: &str| -> Vec<String> {
        back.get(key)
            .and_then(|v| v.as_array())
            .unwrap_or_else(|| panic!("{key} missing"))
            .iter()
            .map(|v| v.as_string().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        strings("UIBackgroundModes"),
        ["remote-notification", "fetch", "processing"]
    );
    let bundle = "com.example.fieldvisits";
    let ids: Vec<String> = strings("BGTaskSchedulerPermittedIdentifiers")
        .iter()
        .map(|id| id.replace("$(PRODUCT_BUNDLE_IDENTIFIER)", bundle))
        .collect();
    assert_eq!(
        ids,
        [
            format!("{bundle}.background-sync.refresh"),
            format!("{bundle}.background-sync.processing")
        ]
    );
    assert_eq!(
        back.get("CFBundleIdentifier").and_then(|v| v.as_string()),
        Some("$(PRODUCT_BUNDLE_IDENTIFIER)")
    );
}

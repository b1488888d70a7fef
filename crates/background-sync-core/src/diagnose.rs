//! "Will a background run happen, and if not, why": pure rules over what the engine knows (the
//! configuration, the toggle, the queue, the last runs) and what the platform reports (Android's
//! WorkManager and power settings, iOS's Background App Refresh and BGTaskScheduler, the desktop
//! scheduler). The shims only collect facts; every judgement is here, where the host can test
//! it. Codes are stable: an app may switch on them to show its own words.

use serde::{Deserialize, Serialize};

/// One reason background sync will not run, or will run late, with what the user can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable, camelCase (see the README's diagnostics table).
    pub code: String,
    /// What is wrong, in words a field worker understands.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// What the platform says, as collected by the Kotlin/Swift shim or the desktop scheduler. A
/// fact the platform could not give (an older OS, a call that failed) is absent and yields no
/// problem: diagnostics never guess.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "camelCase")]
pub enum PlatformFacts {
    Android(AndroidFacts),
    Ios(IosFacts),
    Desktop(DesktopFacts),
    /// The engine alone (a CLI, the C ABI): no scheduler of its own.
    Headless,
}

/// Android (`BackgroundSyncPlugin.kt` `diagnostics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AndroidFacts {
    /// `Build.VERSION.SDK_INT`.
    pub sdk_int: Option<u32>,
    /// State of the periodic unique work (`WorkInfo.State` name: `ENQUEUED`, `RUNNING`,
    /// `BLOCKED`, `SUCCEEDED`, `FAILED`, `CANCELLED`), or `NONE` when nothing is enqueued.
    pub work_state: Option<String>,
    /// `WorkInfo.nextScheduleTimeMillis` (ms since the epoch) of the periodic work.
    pub next_schedule_at: Option<i64>,
    /// Why the OS last stopped the work: `WorkInfo.stopReason` (API 31+) as WorkManager gives
    /// it (`STOP_REASON_*`: 10 quota, 11 background restriction, 12 app standby, -256 not
    /// stopped, ...).
    pub stop_reason: Option<i32>,
    /// `PowerManager.isIgnoringBatteryOptimizations`.
    pub ignoring_battery_optimizations: Option<bool>,
    /// `ActivityManager.isBackgroundRestricted` (API 28+).
    pub background_restricted: Option<bool>,
    /// `UsageStatsManager.getAppStandbyBucket` (API 28+): 10 active … 45 restricted.
    pub standby_bucket: Option<i32>,
    /// `PowerManager.isPowerSaveMode`.
    pub power_save_mode: Option<bool>,
    /// `NotificationManagerCompat.areNotificationsEnabled`.
    pub notifications_enabled: Option<bool>,
}

/// iOS (`BackgroundSyncPlugin.swift` `diagnostics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IosFacts {
    /// `UIApplication.backgroundRefreshStatus`: `available`, `denied` or `restricted`.
    pub background_refresh_status: Option<String>,
    /// The plugin's BGTask identifiers missing from `BGTaskSchedulerPermittedIdentifiers`.
    pub missing_identifiers: Vec<String>,
    /// `BGTaskScheduler.getPendingTaskRequests`: what iOS holds for this app.
    pub pending_requests: Option<Vec<PendingTask>>,
    /// `ProcessInfo.isLowPowerModeEnabled`.
    pub low_power_mode: Option<bool>,
}

/// A BGTask request iOS holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingTask {
    pub identifier: String,
    /// `earliestBeginDate` (ms since the epoch), if set.
    pub earliest_begin_at: Option<i64>,
}

/// The desktop scheduler (the plugin is its own background worker there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DesktopFacts {
    /// The scheduler task is alive (false after the app began to exit).
    pub scheduler_running: bool,
    /// When it next wakes on its own (ms since the epoch): the interval, a backoff's end, an
    /// offline re-probe. Enqueues and reconnects wake it sooner.
    pub next_wake_at: Option<i64>,
    /// Network changes come from the OS (if-watch); without them only the timer notices.
    pub watching_network: bool,
}

/// What the engine knows, read from its database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EngineFacts {
    pub(crate) configured: bool,
    pub(crate) background_enabled: bool,
    pub(crate) auto_sync: bool,
    pub(crate) pending: u64,
    pub(crate) dead: u64,
    /// Stop reason of the newest run (camelCase, as in `DrainReport`).
    pub(crate) last_stop: Option<String>,
}

/// `diagnostics()`: what will run and why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    pub configured: bool,
    /// The persisted toggle for OS-started runs (`enable()`).
    pub background_enabled: bool,
    /// Foreground automation (`autoSync`).
    pub auto_sync: bool,
    pub pending: u64,
    pub dead: u64,
    /// Newest run of any kind (ms since the epoch).
    pub last_run_at: Option<i64>,
    /// Newest run the OS or the desktop timer started (trigger `android-worker`, `ios-refresh`,
    /// `ios-processing`, `background`, `timer`).
    pub last_background_run_at: Option<i64>,
    /// The platform's facts as collected.
    pub os: PlatformFacts,
    /// Empty when nothing stands in the way.
    pub problems: Vec<Problem>,
}

/// Triggers of runs nobody in the app asked for.
pub(crate) fn is_background_trigger(trigger: &str) -> bool {
    matches!(
        trigger,
        "android-worker" | "ios-refresh" | "ios-processing" | "background" | "timer"
    )
}

fn problem(code: &str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        code: code.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// Android's `UsageStatsManager.STANDBY_BUCKET_RARE` and `STANDBY_BUCKET_RESTRICTED`.
const BUCKET_RARE: i32 = 40;
const BUCKET_RESTRICTED: i32 = 45;

/// Every problem the facts show, most blocking first.
pub(crate) fn problems(engine: &EngineFacts, os: &PlatformFacts) -> Vec<Problem> {
    let mut out = Vec::new();
    if !engine.configured {
        out.push(problem(
            "notConfigured",
            "Sync has no server address yet, so nothing is sent.",
            "Call configure({ baseUrl }) (or set it in tauri.conf.json).",
        ));
    }
    if engine.last_stop.as_deref() == Some("authFailed") {
        out.push(problem(
            "signInExpired",
            "The server refused the sign-in on the last try; changes wait on this device.",
            "Sign in again (setAuth with fresh tokens).",
        ));
    }
    if engine.dead > 0 {
        out.push(problem(
            "changesRejected",
            format!(
                "The server rejected {} change{}; they wait for a decision.",
                engine.dead,
                if engine.dead == 1 { "" } else { "s" }
            ),
            "Review them in deadLetters(): edit and retry, or discard.",
        ));
    }
    if !engine.auto_sync && !engine.background_enabled {
        out.push(problem(
            "autoSyncOff",
            "Automatic sync is off: changes go out only when the app calls syncNow().",
            "Set autoSync: true, or call enable().",
        ));
    }
    let background = engine.configured && engine.background_enabled;
    if !engine.background_enabled {
        out.push(problem(
            "backgroundOff",
            "Background sync is off: changes go out only while the app is open.",
            "Call enable() (for example from a settings switch).",
        ));
    }
    match os {
        PlatformFacts::Android(a) => android(a, background, &mut out),
        PlatformFacts::Ios(i) => ios(i, background, &mut out),
        PlatformFacts::Desktop(d) => desktop(d, engine, &mut out),
        PlatformFacts::Headless => {}
    }
    out
}

fn android(a: &AndroidFacts, background: bool, out: &mut Vec<Problem>) {
    if a.background_restricted == Some(true) {
        out.push(problem(
            "backgroundRestricted",
            "Android restricts this app's background activity: background sync will not run.",
            "Settings › Apps › this app › Battery: allow background usage (Unrestricted or Optimized).",
        ));
    }
    if background {
        match a.work_state.as_deref() {
            Some("NONE") | Some("CANCELLED") | Some("FAILED") => out.push(problem(
                "workNotScheduled",
                "No background sync is scheduled with Android.",
                "Open the app once (it schedules the work at start); if this stays, call enable() again.",
            )),
            _ => {}
        }
    }
    if let Some(reason) = a.stop_reason {
        // androidx.work.WorkInfo's STOP_REASON_* values (work-runtime WorkInfo.kt); those not
        // listed (not stopped, unknown, cancelled by the app, preempted, ...) say nothing the
        // user can act on.
        let why = match reason {
            10 => Some("its background time quota was used up"),
            11 => Some("background activity is restricted"),
            12 => Some("the app is in a low standby bucket"),
            4 => Some("the device went into Doze or battery saver"),
            7 => Some("the network went away"),
            5 => Some("the battery got low"),
            6 => Some("the phone was unplugged"),
            3 | -128 => Some("it ran out of time"),
            13 => Some("the user stopped the app"),
            _ => None,
        };
        if let Some(why) = why {
            out.push(problem(
                "stoppedByAndroid",
                format!("Android stopped the last background sync: {why}. It will try again later."),
                "Nothing to do now; if it repeats, see the other problems listed (battery, restrictions).",
            ));
        }
    }
    if a.standby_bucket.is_some_and(|b| b >= BUCKET_RESTRICTED) {
        out.push(problem(
            "restrictedBucket",
            "Android put the app in its restricted standby bucket: background sync runs about once a day.",
            "Open the app regularly; Android raises the bucket with use.",
        ));
    } else if a.standby_bucket.is_some_and(|b| b >= BUCKET_RARE) {
        out.push(problem(
            "rareBucket",
            "Android rarely runs background work for this app (standby bucket \"rare\"): syncs may wait hours.",
            "Open the app regularly; Android raises the bucket with use.",
        ));
    }
    if background && a.ignoring_battery_optimizations == Some(false) {
        out.push(problem(
            "batteryOptimized",
            "Battery optimisation may hold background sync for hours while the phone is idle (Doze).",
            "Settings › Apps › this app › Battery › Unrestricted, if changes must go out within minutes.",
        ));
    }
    if background && a.power_save_mode == Some(true) {
        out.push(problem(
            "batterySaver",
            "Battery Saver is on: Android defers background sync.",
            "Turn Battery Saver off, or open the app to sync.",
        ));
    }
    // Below Android 12, an expedited run (on reconnect, enable, run-now) is a foreground
    // service that must show a notification.
    if background && a.notifications_enabled == Some(false) && a.sdk_int.is_some_and(|s| s < 31) {
        out.push(problem(
            "notificationsOff",
            "Notifications are off for this app: the \"Syncing\" notice of a quick sync cannot be shown.",
            "Settings › Apps › this app › Notifications: allow them.",
        ));
    }
}

fn ios(i: &IosFacts, background: bool, out: &mut Vec<Problem>) {
    match i.background_refresh_status.as_deref() {
        Some("denied") => out.push(problem(
            "backgroundRefreshOff",
            "Background App Refresh is off for this app: iOS will not run background sync.",
            "Settings › General › Background App Refresh: turn it on, and on for this app.",
        )),
        Some("restricted") => out.push(problem(
            "backgroundRefreshRestricted",
            "Background App Refresh is restricted on this device (Screen Time, a device policy, or Low Power Mode).",
            "Turn Low Power Mode off, or ask the device's administrator.",
        )),
        _ => {}
    }
    if !i.missing_identifiers.is_empty() {
        out.push(problem(
            "identifierMissing",
            format!(
                "The app's Info.plist lacks the background task identifier{} {}: iOS never runs background sync.",
                if i.missing_identifiers.len() == 1 { "" } else { "s" },
                i.missing_identifiers.join(", ")
            ),
            "Rebuild with the plugin's build step (it writes BGTaskSchedulerPermittedIdentifiers); see the README's iOS setup.",
        ));
    }
    if background
        && i.missing_identifiers.is_empty()
        && i.pending_requests.as_ref().is_some_and(Vec::is_empty)
    {
        out.push(problem(
            "nothingScheduled",
            "No background run is scheduled with iOS.",
            "Open the app once (it schedules one at start); if this stays, call enable() again.",
        ));
    }
    if background && i.low_power_mode == Some(true) {
        out.push(problem(
            "lowPowerMode",
            "Low Power Mode is on: iOS pauses background refresh.",
            "Turn Low Power Mode off, or open the app to sync.",
        ));
    }
}

fn desktop(d: &DesktopFacts, engine: &EngineFacts, out: &mut Vec<Problem>) {
    if engine.configured && !d.scheduler_running {
        out.push(problem(
            "schedulerStopped",
            "The sync scheduler has stopped (the app is closing): nothing more is sent until it starts again.",
            "Start the app again.",
        ));
    }
    if engine.background_enabled {
        out.push(problem(
            "desktopNeedsApp",
            "On a computer, background sync runs only while the app is running (a minimised window is enough).",
            "Keep the app running, or start it at login.",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(engine: &EngineFacts, os: &PlatformFacts) -> Vec<String> {
        problems(engine, os).into_iter().map(|p| p.code).collect()
    }

    fn ready() -> EngineFacts {
        EngineFacts {
            configured: true,
            background_enabled: true,
            auto_sync: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_healthy_phone_has_no_problems() {
        let android = PlatformFacts::Android(AndroidFacts {
            sdk_int: Some(34),
            work_state: Some("ENQUEUED".into()),
            ignoring_battery_optimizations: Some(true),
            background_restricted: Some(false),
            standby_bucket: Some(10),
            power_save_mode: Some(false),
            notifications_enabled: Some(true),
            ..Default::default()
        });
        assert!(codes(&ready(), &android).is_empty());
        let ios = PlatformFacts::Ios(IosFacts {
            background_refresh_status: Some("available".into()),
            pending_requests: Some(vec![PendingTask {
                identifier: "x.sync.refresh".into(),
                earliest_begin_at: Some(1),
            }]),
            low_power_mode: Some(false),
            ..Default::default()
        });
        assert!(codes(&ready(), &ios).is_empty());
        assert!(codes(&ready(), &PlatformFacts::Headless).is_empty());
    }

    #[test]
    fn unknown_facts_yield_no_problems() {
        // An old Android or a failed call gives no fact; diagnostics do not guess.
        assert!(codes(&ready(), &PlatformFacts::Android(AndroidFacts::default())).is_empty());
        assert!(codes(&ready(), &PlatformFacts::Ios(IosFacts::default())).is_empty());
    }

    #[test]
    fn each_android_fact_has_its_code() {
        let cases: Vec<(AndroidFacts, &str)> = vec![
            (
                AndroidFacts {
                    background_restricted: Some(true),
                    ..Default::default()
                },
                "backgroundRestricted",
            ),
            (
                AndroidFacts {
                    work_state: Some("NONE".into()),
                    ..Default::default()
                },
                "workNotScheduled",
            ),
            (
                AndroidFacts {
                    work_state: Some("CANCELLED".into()),
                    ..Default::default()
                },
                "workNotScheduled",
            ),
            (
                AndroidFacts {
                    stop_reason: Some(10),
                    ..Default::default()
                },
                "stoppedByAndroid",
            ),
            (
                AndroidFacts {
                    standby_bucket: Some(45),
                    ..Default::default()
                },
                "restrictedBucket",
            ),
            (
                AndroidFacts {
                    standby_bucket: Some(40),
                    ..Default::default()
                },
                "rareBucket",
            ),
            (
                AndroidFacts {
                    ignoring_battery_optimizations: Some(false),
                    ..Default::default()
                },
                "batteryOptimized",
            ),
            (
                AndroidFacts {
                    power_save_mode: Some(true),
                    ..Default::default()
                },
                "batterySaver",
            ),
            (
                AndroidFacts {
                    notifications_enabled: Some(false),
                    sdk_int: Some(29),
                    ..Default::default()
                },
                "notificationsOff",
            ),
        ];
        for (facts, code) in cases {
            assert_eq!(
                codes(&ready(), &PlatformFacts::Android(facts.clone())),
                vec![code],
                "{facts:?}"
            );
        }
        // Android 12+ runs expedited work as a job, without a notification.
        let quiet = AndroidFacts {
            notifications_enabled: Some(false),
            sdk_int: Some(33),
            ..Default::default()
        };
        assert!(codes(&ready(), &PlatformFacts::Android(quiet)).is_empty());
        // WorkInfo.STOP_REASON_NOT_STOPPED (-256), _UNKNOWN (-512), _CANCELLED_BY_APP (1).
        for reason in [-256, -512, 1] {
            let f = AndroidFacts {
                stop_reason: Some(reason),
                ..Default::default()
            };
            assert!(codes(&ready(), &PlatformFacts::Android(f)).is_empty(), "{reason}");
        }
        // Work running or blocked on constraints is scheduled.
        for state in ["ENQUEUED", "RUNNING", "BLOCKED"] {
            let f = AndroidFacts {
                work_state: Some(state.into()),
                ..Default::default()
            };
            assert!(codes(&ready(), &PlatformFacts::Android(f)).is_empty(), "{state}");
        }
    }

    #[test]
    fn each_ios_fact_has_its_code() {
        let cases: Vec<(IosFacts, &str)> = vec![
            (
                IosFacts {
                    background_refresh_status: Some("denied".into()),
                    ..Default::default()
                },
                "backgroundRefreshOff",
            ),
            (
                IosFacts {
                    background_refresh_status: Some("restricted".into()),
                    ..Default::default()
                },
                "backgroundRefreshRestricted",
            ),
            (
                IosFacts {
                    missing_identifiers: vec!["app.sync.refresh".into()],
                    pending_requests: Some(vec![]),
                    ..Default::default()
                },
                "identifierMissing",
            ),
            (
                IosFacts {
                    pending_requests: Some(vec![]),
                    ..Default::default()
                },
                "nothingScheduled",
            ),
            (
                IosFacts {
                    low_power_mode: Some(true),
                    ..Default::default()
                },
                "lowPowerMode",
            ),
        ];
        for (facts, code) in cases {
            assert_eq!(
                codes(&ready(), &PlatformFacts::Ios(facts.clone())),
                vec![code],
                "{facts:?}"
            );
        }
    }

    #[test]
    fn the_engine_side_and_the_toggle() {
        let off = EngineFacts {
            background_enabled: false,
            ..ready()
        };
        // With background off, what the OS would do is moot: no workNotScheduled, no battery.
        let android = PlatformFacts::Android(AndroidFacts {
            work_state: Some("NONE".into()),
            ignoring_battery_optimizations: Some(false),
            ..Default::default()
        });
        assert_eq!(codes(&off, &android), vec!["backgroundOff"]);
        let manual = EngineFacts {
            auto_sync: false,
            ..off.clone()
        };
        assert_eq!(
            codes(&manual, &PlatformFacts::Headless),
            vec!["autoSyncOff", "backgroundOff"]
        );
        let troubled = EngineFacts {
            configured: false,
            dead: 2,
            last_stop: Some("authFailed".into()),
            ..ready()
        };
        assert_eq!(
            codes(&troubled, &PlatformFacts::Headless),
            vec!["notConfigured", "signInExpired", "changesRejected"]
        );
        let p = problems(&troubled, &PlatformFacts::Headless);
        assert!(p[2].message.contains("2 changes"), "{}", p[2].message);
    }

    #[test]
    fn desktop_says_the_app_must_run_and_when_the_scheduler_stopped() {
        let running = PlatformFacts::Desktop(DesktopFacts {
            scheduler_running: true,
            next_wake_at: Some(1),
            watching_network: true,
        });
        assert_eq!(codes(&ready(), &running), vec!["desktopNeedsApp"]);
        let stopped = PlatformFacts::Desktop(DesktopFacts::default());
        assert_eq!(
            codes(&ready(), &stopped),
            vec!["schedulerStopped", "desktopNeedsApp"]
        );
    }

    #[test]
    fn shim_json_reads_into_facts() {
        let f: PlatformFacts = serde_json::from_value(serde_json::json!({
            "platform": "android", "sdkInt": 34, "workState": "ENQUEUED", "nextScheduleAt": 5,
            "stopReason": 10, "ignoringBatteryOptimizations": false, "backgroundRestricted": false,
            "standbyBucket": 10, "powerSaveMode": false, "notificationsEnabled": true
        }))
        .unwrap();
        assert_eq!(
            f,
            PlatformFacts::Android(AndroidFacts {
                sdk_int: Some(34),
                work_state: Some("ENQUEUED".into()),
                next_schedule_at: Some(5),
                stop_reason: Some(10),
                ignoring_battery_optimizations: Some(false),
                background_restricted: Some(false),
                standby_bucket: Some(10),
                power_save_mode: Some(false),
                notifications_enabled: Some(true),
            })
        );
        let f: PlatformFacts = serde_json::from_value(serde_json::json!({
            "platform": "ios", "backgroundRefreshStatus": "denied",
            "missingIdentifiers": ["a"], "pendingRequests": [{"identifier": "b", "earliestBeginAt": null}]
        }))
        .unwrap();
        let PlatformFacts::Ios(i) = f else { panic!() };
        assert_eq!(i.pending_requests.unwrap()[0].identifier, "b");
        // Unknown fields from a newer shim are ignored, not an error.
        let f: PlatformFacts =
            serde_json::from_value(serde_json::json!({"platform": "android", "somethingNew": 1})).unwrap();
        assert_eq!(f, PlatformFacts::Android(AndroidFacts::default()));
    }
}

//! Property-based fuzzing of everything that takes outside input: the JSON entries (what the
//! JNI bridge calls), the C ABI (what Swift calls) with arbitrary bytes and NULLs, and enqueue
//! and configure with hostile field values. Properties: never a panic or abort, always a JSON
//! answer `{"ok": ...}` with a known error kind, nothing half-written, and the queue keeps
//! working afterwards. PROPTEST_CASES raises the case count (default 48 per property).

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::ffi::{c_char, CStr, CString};
use tauri_plugin_background_sync::{entry, ffi};

const KINDS: [&str; 13] = [
    "invalidInput",
    "originNotAllowed",
    "limitExceeded",
    "notConfigured",
    "notFound",
    "conflict",
    "storage",
    "migration",
    "network",
    "auth",
    "alreadyRunning",
    "platform",
    "internal",
];

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// An answer of the JSON/C entries: `{"ok":true,...}` or `{"ok":false,"error":{kind,message}}`.
fn check_answer(s: &str) -> bool {
    let v: Value = serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"));
    match v["ok"].as_bool() {
        Some(true) => true,
        Some(false) => {
            let kind = v["error"]["kind"].as_str().unwrap_or_default();
            assert!(KINDS.contains(&kind), "unknown kind in {s}");
            assert!(v["error"]["message"].is_string(), "{s}");
            false
        }
        None => panic!("no ok field: {s}"),
    }
}

/// Strings that break naive code: control characters, CR/LF, NUL, quotes, unicode, long runs.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        "\\PC{0,30}",
        Just("\r\nX-Injected: 1".to_string()),
        Just("\0".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("//evil.example.com/x".to_string()),
        Just("https://evil.example.com/x".to_string()),
        Just("http://127.0.0.1:9/".to_string()),
        Just("tmp-1".to_string()),
        "[a-z/]{1,8}".prop_map(|s| format!("/{s}")),
        Just("x".repeat(20_000)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Mutation-shaped JSON: each field valid most of the time, hostile otherwise, so both the
/// accept and the refuse paths are exercised (checked by the generator test below).
fn mutation_json() -> impl Strategy<Value = Value> {
    let simple = || "[a-z][a-z0-9_]{0,7}";
    (
        prop_oneof![
            4 => prop::sample::select(vec!["POST", "PUT", "PATCH", "DELETE", "put"]).prop_map(str::to_string),
            1 => nasty_string()
        ],
        prop_oneof![
            4 => (simple(), prop::option::of(simple())).prop_map(|(a, b)| match b {
                Some(b) => format!("/{a}/{b}"),
                None => format!("/{a}"),
            }),
            1 => nasty_string()
        ],
        prop::option::of(json_value()),
        prop_oneof![
            4 => Just(std::collections::BTreeMap::new()),
            1 => prop::collection::btree_map(nasty_string(), nasty_string(), 1..3),
            1 => prop::collection::btree_map("x-[a-z]{1,6}", "[ -~]{0,10}", 1..3),
        ],
        prop_oneof![
            4 => prop::sample::select(vec!["low", "normal", "high", "critical"]).prop_map(|p| json!(p)),
            1 => prop_oneof![Just(json!("urgent")), Just(json!(3)), Just(Value::Null)]
        ],
        prop_oneof![4 => (simple(), simple()), 1 => (nasty_string(), nasty_string())],
        prop_oneof![4 => Just(None), 1 => prop::option::of(nasty_string())],
    )
        .prop_map(|(method, path, body, headers, priority, (kind, id), temp)| {
            let mut m = json!({
                "method": method, "path": path, "headers": headers, "priority": priority,
                "entity": {"kind": kind, "id": id},
            });
            if let Some(b) = body {
                m["body"] = b;
            }
            if let Some(t) = temp {
                m["tempId"] = json!(t);
            }
            m
        })
}

fn configured_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fuzz.db").to_string_lossy().into_owned();
    let answer = entry::configure_json(&db, r#"{"baseUrl":"http://127.0.0.1:9"}"#);
    assert!(check_answer(&answer), "{answer}");
    (dir, db)
}

fn pending(db: &str) -> u64 {
    let s: Value = serde_json::from_str(&entry::status_json(db)).unwrap();
    s["status"]["pending"]
        .as_u64()
        .or_else(|| s["pending"].as_u64())
        .unwrap_or_else(|| panic!("{s}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Any JSON value as a mutation: a typed answer; a refused one leaves the queue unchanged.
    #[test]
    fn enqueue_json_never_panics(v in prop_oneof![json_value(), mutation_json()]) {
        let (_dir, db) = configured_db();
        let answer = entry::enqueue_json(&db, &v.to_string());
        let ok = check_answer(&answer);
        prop_assert_eq!(pending(&db), u64::from(ok), "{}", answer);
        if ok {
            // What was accepted is safe to send: no line breaks can reach a header or the path.
            let m = serde_json::from_str::<Value>(&answer).unwrap();
            prop_assert!(m.to_string().len() < 4_000_000);
            let mutation: Value = v.clone();
            for (k, val) in mutation["headers"].as_object().into_iter().flatten() {
                prop_assert!(!k.contains(['\r', '\n']) && !val.as_str().unwrap_or("").contains(['\r', '\n']));
            }
            prop_assert!(!mutation["path"].as_str().unwrap_or("").contains(['\r', '\n', '\0']));
        }
    }

    /// Any JSON as a configuration: a typed answer; a refused one keeps the previous config.
    #[test]
    fn configure_json_never_panics(v in json_value(), base in nasty_string()) {
        let (_dir, db) = configured_db();
        let mut patch = v.clone();
        if let Value::Object(o) = &mut patch {
            o.insert("baseUrl".into(), json!(base));
        }
        let answer = entry::configure_json(&db, &patch.to_string());
        let ok = check_answer(&answer);
        let cfg = entry::config(&db).unwrap().expect("still configured");
        if !ok {
            prop_assert_eq!(cfg.base_url, "http://127.0.0.1:9");
        }
        // The queue still works either way.
        let again = entry::enqueue_json(&db, &json!({"method":"PUT","path":"/v/1","entity":{"kind":"v","id":"1"}}).to_string());
        let _ = check_answer(&again);
    }

    /// The C ABI with arbitrary bytes (invalid UTF-8 included) and NULLs: always a JSON answer.
    #[test]
    fn c_abi_never_panics(
        path in prop::collection::vec(1u8..=255, 0..40),
        payload in prop::collection::vec(1u8..=255, 0..200),
        null_path in any::<bool>(),
        null_payload in any::<bool>(),
        budget in any::<u64>(),
        enabled in any::<i32>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Arbitrary bytes as a path would write anywhere: keep them inside the temp dir.
        let mut full = dir.path().as_os_str().as_encoded_bytes().to_vec();
        full.push(b'/');
        full.extend(path.iter().map(|b| if *b == b'/' { b'_' } else { *b }));
        let p = CString::new(full).unwrap();
        let q = CString::new(payload).unwrap();
        let pp: *const c_char = if null_path { std::ptr::null() } else { p.as_ptr() };
        let qp: *const c_char = if null_payload { std::ptr::null() } else { q.as_ptr() };
        unsafe {
            for out in [
                ffi::configure(pp, qp),
                ffi::enqueue(pp, qp),
                ffi::status(pp),
                ffi::set_enabled(pp, enabled),
                ffi::drain(pp, budget % 2_000, qp, std::ptr::null()),
            ] {
                prop_assert!(!out.is_null());
                let s = CStr::from_ptr(out).to_str().expect("UTF-8 answer").to_string();
                ffi::free(out);
                check_answer(&s);
            }
            ffi::free(std::ptr::null_mut());
        }
    }
}

/// The fuzz properties can fail: a known-bad answer is rejected by the checker.
#[test]
#[should_panic(expected = "unknown kind")]
fn the_checker_rejects_an_unknown_error_kind() {
    check_answer(r#"{"ok":false,"error":{"kind":"oops","message":"x"}}"#);
}

/// And a valid mutation from the fuzzer's alphabet is accepted and delivered.
#[tokio::test]
async fn a_valid_mutation_still_goes_through_after_fuzzing() {
    let server = server(FaultConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config(&server.base_url)).await;
    bs.enqueue(mutation("PUT", "/v/1", Some(json!({"s": "\r\n\0é"})), "v", "1"))
        .await
        .unwrap();
    let r = bs.drain(Default::default()).await.unwrap();
    assert_eq!(r.done, 1);
    server.shutdown().await;
}

/// The generator reaches both sides: some hostile-looking mutations are valid and accepted,
/// most are refused (otherwise the properties above would test only one path).
#[test]
fn the_mutation_generator_covers_accept_and_refuse() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let (_dir, db) = configured_db();
    let mut runner = TestRunner::deterministic();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..300 {
        let v = mutation_json().new_tree(&mut runner).unwrap().current();
        if check_answer(&entry::enqueue_json(&db, &v.to_string())) {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    println!("fuzz generator: {accepted} accepted, {refused} refused of 300");
    assert!(
        accepted >= 5 && refused >= 100,
        "{accepted} accepted, {refused} refused"
    );
}

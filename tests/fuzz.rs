//! Property-based fuzzing of everything that takes outside input: the JSON entries (what the
//! JNI bridge calls), the C ABI (what Swift calls) with arbitrary bytes and NULLs, enqueue and
//! configure with hostile field values, and drains of whatever was accepted. Properties: never
//! a panic or abort (a panic caught at the boundary comes back as kind `internal`, which fails
//! here), always a JSON answer `{"ok": ...}` with a known error kind, nothing half-written,
//! and the queue keeps working afterwards. Plus one end-to-end property of id rewriting and
//! per-entity order through the reference server with injected faults.
//!
//! `PROPTEST_CASES` sets the case count (default 48 per property; the end-to-end backlog
//! property runs a quarter of it, at least 4). The configuration generator reaches every u64
//! (the overflow bugs pinned by the `*_is_bounded_issue11` tests at the end are fixed).

mod common;

use background_sync_core::{entry, ffi, BatchConfig, CancellationToken, DrainOptions, StopReason};
use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::ffi::{c_char, CStr, CString};
use std::sync::OnceLock;
use std::time::Duration;

/// The error kinds a caller may see. `internal` is deliberately absent: it means a panic was
/// caught (or an invariant broke), which is a failure of every property here.
const KINDS: [&str; 12] = [
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
];

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// A runtime for the servers the properties drain against (the entries build their own).
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A reference server that fails 40 % of mutating requests with 503/429 + `Retry-After: 1 h`:
/// a row can be sent at most once per drain.
fn flaky_server() -> &'static RunningServer {
    static S: OnceLock<RunningServer> = OnceLock::new();
    S.get_or_init(|| {
        rt().block_on(server(FaultConfig {
            seed: 5,
            error_rate: 0.4,
            error_statuses: vec![503, 429],
            retry_after_secs: Some(3_600),
            ..Default::default()
        }))
    })
}

/// A healthy reference server.
fn plain_server() -> &'static RunningServer {
    static S: OnceLock<RunningServer> = OnceLock::new();
    S.get_or_init(|| rt().block_on(server(FaultConfig::default())))
}

/// An answer of the JSON/C entries: `{"ok":true,...}` or `{"ok":false,"error":{kind,message}}`.
/// Returns whether it was a success.
fn check_answer(s: &str) -> bool {
    let v: Value = serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"));
    match v["ok"].as_bool() {
        Some(true) => true,
        Some(false) => {
            let kind = v["error"]["kind"].as_str().unwrap_or_default();
            assert!(kind != "internal", "a panic was caught (kind internal): {s}");
            assert!(KINDS.contains(&kind), "unknown kind in {s}");
            assert!(v["error"]["message"].is_string(), "{s}");
            false
        }
        None => panic!("no ok field: {s}"),
    }
}

fn kind_of(s: &str) -> String {
    let v: Value = serde_json::from_str(s).unwrap();
    if v["ok"] == json!(true) {
        "ok".into()
    } else {
        v["error"]["kind"].as_str().unwrap_or_default().to_string()
    }
}

/// Strings that break naive code: control characters, CR/LF, NUL, quotes, unicode, long runs.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        "\\PC{0,30}",
        any::<String>(),
        Just("\r\nX-Injected: 1".to_string()),
        Just("\0".to_string()),
        Just("\u{feff}\u{202e}\u{fffd}".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("//evil.example.com/x".to_string()),
        Just("https://evil.example.com/x".to_string()),
        Just("http://user:pw@127.0.0.1/x".to_string()),
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
        prop::option::of(prop_oneof![
            8 => json_value(),
            1 => Just(json!({"big": "y".repeat(1_100_000)})),
        ]),
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
        prop_oneof![4 => Just(None), 1 => prop::option::of(nasty_string())],
    )
        .prop_map(|(method, path, body, headers, priority, (kind, id), temp, key)| {
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
            if let Some(k) = key {
                m["idempotencyKey"] = json!(k);
            }
            m
        })
}

/// Text that is almost JSON, or JSON that breaks parsers: truncated or garbled documents,
/// deep nesting, numbers beyond f64, BOMs, lone surrogates, arbitrary unicode.
fn raw_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => "\\PC{0,200}",
        1 => (mutation_json(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let s = v.to_string();
            let cut = i.index(s.len() + 1);
            let cut = (0..=cut).rev().find(|c| s.is_char_boundary(*c)).unwrap_or(0);
            s[..cut].to_string()
        }),
        // Valid JSON (often an acceptable mutation), so the accept path is reached too.
        6 => mutation_json().prop_map(|v| serde_json::to_string_pretty(&v).unwrap()),
        1 => mutation_json().prop_map(|v| format!("\u{feff}{v}")),
        1 => mutation_json().prop_map(|v| format!("{v} trailing")),
        2 => prop_oneof![1usize..200, 1usize..3_000].prop_map(|d| format!(
            r#"{{"method":"PUT","path":"/v/1","entity":{{"kind":"v","id":"1"}},"body":{}1{}}}"#,
            "[".repeat(d),
            "]".repeat(d)
        )),
        1 => (1usize..3_000).prop_map(|d| "{\"a\":".repeat(d) + "1" + &"}".repeat(d)),
        1 => "-?[0-9]{15,400}(\\.[0-9]{1,5})?(e[+-]?[0-9]{1,4})?".prop_map(|n| format!(
            r#"{{"method":"PUT","path":"/v/1","entity":{{"kind":"v","id":"1"}},"body":{n}}}"#
        )),
        1 => "-?[0-9]{15,400}(e[+-]?[0-9]{1,4})?"
            .prop_map(|n| format!(r#"{{"baseUrl":"http://127.0.0.1:9","maxAttempts":{n}}}"#)),
        1 => Just(r#"{"method":"PUT","path":"/v/1","entity":{"kind":"v","id":"\ud800"}}"#.to_string()),
        1 => Just(
            r#"{"method":"PUT","method":"DELETE","path":"/v/1","entity":{"kind":"v","id":"1"}}"#.to_string()
        ),
        1 => Just(r#"{"baseUrl":null}"#.to_string()),
        1 => Just(r#"{"backoff":{"maxMs":null}}"#.to_string()),
        1 => Just(String::new()),
        1 => Just("null".to_string()),
    ]
}

fn configured_db_at(base: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fuzz.db").to_string_lossy().into_owned();
    let answer = entry::configure_json(&db, &json!({ "baseUrl": base }).to_string());
    assert!(check_answer(&answer), "{answer}");
    (dir, db)
}

fn configured_db() -> (tempfile::TempDir, String) {
    configured_db_at("http://127.0.0.1:9")
}

fn status(db: &str) -> Value {
    let s: Value = serde_json::from_str(&entry::status_json(db)).unwrap();
    s["status"].clone()
}

fn pending(db: &str) -> u64 {
    let s = status(db);
    s["pending"].as_u64().unwrap_or_else(|| panic!("{s}"))
}

/// A u64 field: mostly plausible, sometimes anything up to `cap`, sometimes not a u64 at all.
fn hostile_u64(cap: u64) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..200_000).prop_map(move |n| json!(n.min(cap))),
        2 => any::<u64>().prop_map(move |n| json!(n.min(cap))),
        1 => Just(json!(cap)),
        1 => prop::sample::select(vec![json!(-1), json!(1e300), json!(0.5), json!("1000"), Value::Null, json!(i64::MIN)]),
    ]
}

fn hostile_u32() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u32..100).prop_map(|n| json!(n)),
        2 => any::<u32>().prop_map(|n| json!(n)),
        1 => prop::sample::select(vec![json!(u32::MAX), json!(u64::MAX), json!(-1), json!(2.5), json!("4"), Value::Null]),
    ]
}

/// The largest u64 setting the generator tries (every one since issue 11 bounded them).
fn known_bug_cap() -> u64 {
    u64::MAX
}

/// One field of a configuration patch, valid or hostile.
fn config_field() -> impl Strategy<Value = (String, Value)> {
    let cap = known_bug_cap();
    let f = |k: &'static str, v: BoxedStrategy<Value>| v.prop_map(move |v| (k.to_string(), v));
    prop_oneof![
        f("allowedOrigins", prop::collection::vec(nasty_string(), 0..3).prop_map(|v| json!(v)).boxed()),
        f("allowInsecureHttp", prop_oneof![any::<bool>().prop_map(Value::Bool), Just(json!("yes"))].boxed()),
        f("idPointer", prop_oneof![Just(json!("/data/id")), nasty_string().prop_map(Value::String)].boxed()),
        // Valid timeouts start at 2 s here: a 100 ms timeout on a loaded 2-core machine is a
        // legitimate transient failure, which would make "sent at most once" flaky.
        f("requestTimeoutMs", prop_oneof![
            3 => (2_000u64..=600_000).prop_map(|n| json!(n)),
            1 => prop::sample::select(vec![json!(0), json!(99), json!(600_001), json!(u64::MAX), json!(-5), json!("5000")]),
        ].boxed()),
        f("maxAttempts", hostile_u32().boxed()),
        f("backoff", (hostile_u64(cap), hostile_u64(cap), prop_oneof![
            (1.0f64..10.0).prop_map(|m| json!(m)),
            prop::sample::select(vec![json!(0.5), json!(1e308), json!(-1.0), json!("2"), Value::Null]),
        ]).prop_map(|(i, m, x)| json!({"initialMs": i, "maxMs": m, "multiplier": x})).boxed()),
        f("concurrency", hostile_u32().boxed()),
        f("batch", prop_oneof![
            Just(Value::Null),
            (prop_oneof![Just("/batch".to_string()), nasty_string()], hostile_u32())
                .prop_map(|(p, n)| json!({"path": p, "maxItems": n})),
        ].boxed()),
        f("retentionMs", hostile_u64(cap).boxed()),
        f("maxPayloadBytes", hostile_u64(u64::MAX).boxed()),
        f("maxQueueLen", hostile_u64(u64::MAX).boxed()),
        f("defaultHeaders", prop_oneof![
            prop::collection::btree_map(nasty_string(), nasty_string(), 0..3),
            prop::collection::btree_map("x-[a-z]{1,6}", "[ -~]{0,10}", 0..3),
        ].prop_map(|m| json!(m)).boxed()),
        f("background", (hostile_u32(), hostile_u64(u64::MAX), any::<bool>())
            .prop_map(|(i, b, n)| json!({"intervalMinutes": i, "budgetMs": b, "requiresNetwork": n})).boxed()),
        f("durability", prop_oneof![Just(json!("full")), Just(json!("relaxed")), nasty_string().prop_map(Value::String)].boxed()),
        f("leaseTtlMs", hostile_u64(cap).boxed()),
        f("uploads", (nasty_string(), hostile_u32(), hostile_u32(), prop::collection::vec(nasty_string(), 0..2), hostile_u64(u64::MAX))
            .prop_map(|(p, b, c, o, m)| json!({"signPath": p, "signBatchSize": b, "concurrency": c, "storageOrigins": o, "maxFileBytes": m})).boxed()),
        f("bogus", json_value().boxed()),
    ]
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
            // What was accepted is safe to send: no line breaks can reach a header, the key
            // header or the path.
            for (k, val) in v["headers"].as_object().into_iter().flatten() {
                prop_assert!(!k.contains(['\r', '\n']) && !val.as_str().unwrap_or("").contains(['\r', '\n', '\0']));
            }
            prop_assert!(!v["path"].as_str().unwrap_or("").contains(['\r', '\n', '\0']));
            prop_assert!(!v["idempotencyKey"].as_str().unwrap_or("").contains(['\r', '\n', '\0', ' ']));
        }
    }

    /// Text that is not (quite) JSON into every JSON entry, with hostile database paths: a
    /// typed answer each time; refusals change nothing.
    #[test]
    fn raw_text_into_every_json_entry(
        text in raw_text(),
        path_kind in 0u8..6,
        enabled in any::<bool>(),
        cancelled in any::<bool>(),
    ) {
        let (dir, db) = configured_db();
        let path = match path_kind {
            0..=2 => db.clone(),
            3 => String::new(),
            4 => dir.path().to_string_lossy().into_owned(), // a directory
            _ => format!("{}/a\0b.db", dir.path().display()),
        };
        let before = entry::config(&db).unwrap();
        let configured = check_answer(&entry::configure_json(&path, &text));
        if path == db && !configured {
            prop_assert_eq!(entry::config(&db).unwrap(), before, "a refused configure changed nothing");
        }
        let queued = pending(&db);
        let enq = check_answer(&entry::enqueue_json(&path, &text));
        prop_assert_eq!(pending(&db), queued + u64::from(enq && path == db));
        check_answer(&entry::status_json(&path));
        check_answer(&entry::set_enabled_json(&path, enabled));
        let cancel = CancellationToken::new();
        if cancelled {
            cancel.cancel();
        }
        // Whatever configure accepted, only drain towards loopback.
        let cfg = entry::config(&db).unwrap().unwrap();
        if cfg.base_url.starts_with("http://127.0.0.1:9") {
            let trigger: String = text.chars().take(40).collect();
            check_answer(&entry::drain_json(&path, 300, &trigger, cancel));
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

    /// Configuration-shaped patches with hostile values, then a drain of one mutation against
    /// a server answering 40 % of requests 503/429 with `Retry-After: 1 h`: the configure is
    /// typed and all-or-nothing, and whatever was accepted drains without a panic, sends a row
    /// at most once (the server asked for an hour), and leaves nothing in flight.
    #[test]
    fn hostile_configuration_then_drain(
        fields in prop::collection::vec(config_field(), 0..8),
        n in 0u32..1_000_000,
    ) {
        let srv = flaky_server();
        let (_dir, db) = configured_db_at(&srv.base_url);
        let before = entry::config(&db).unwrap().unwrap();
        let patch = Value::Object(fields.into_iter().collect());
        let answer = entry::configure_json(&db, &patch.to_string());
        let ok = check_answer(&answer);
        let cfg = entry::config(&db).unwrap().unwrap();
        if !ok {
            prop_assert_eq!(&cfg, &before, "refused: {}", answer);
        }
        let e = entry::enqueue_json(&db, &json!({
            "method": "PUT", "path": format!("/fz/{n}"), "entity": {"kind": "fz", "id": n.to_string()},
        }).to_string());
        if !check_answer(&e) || cfg.base_url != srv.base_url {
            return Ok(());
        }
        let d = entry::drain_json(&db, 1_500, "foreground", CancellationToken::new());
        prop_assert!(check_answer(&d), "patch {} -> drain {}", patch, d);
        let report = &serde_json::from_str::<Value>(&d).unwrap()["report"];
        let sent = report["sent"].as_u64().unwrap();
        if cfg.batch.is_none() {
            prop_assert!(sent <= 1, "sent {} times in one drain despite Retry-After: 1 h; patch {} -> {}", sent, patch, d);
        } else {
            prop_assert!(sent <= u64::from(cfg.max_attempts), "patch {} -> {}", patch, d);
        }
        let st = status(&db);
        if report["stopReason"] != "error" {
            prop_assert_eq!(&st["inFlight"], &json!(0), "patch {} -> {} / {}", patch, d, st);
        }
        let left = st["pending"].as_u64().unwrap() + st["inFlight"].as_u64().unwrap() + st["dead"].as_u64().unwrap();
        prop_assert_eq!(left + report["done"].as_u64().unwrap(), 1, "patch {} -> {} / {}", patch, d, st);
    }

    /// Whatever enqueue accepts, a drain to the reference server handles: no panic, a typed
    /// outcome, nothing left in flight, applied at most once.
    #[test]
    fn accepted_mutations_drain_cleanly(v in mutation_json()) {
        let srv = plain_server();
        let (_dir, db) = configured_db_at(&srv.base_url);
        if !check_answer(&entry::enqueue_json(&db, &v.to_string())) {
            return Ok(());
        }
        let d = entry::drain_json(&db, 2_000, "foreground", CancellationToken::new());
        prop_assert!(check_answer(&d), "{} -> {}", v, d);
        let report = &serde_json::from_str::<Value>(&d).unwrap()["report"];
        let st = status(&db);
        prop_assert_eq!(&st["inFlight"], &json!(0), "{} -> {}", v, d);
        prop_assert!(report["sent"].as_u64().unwrap() <= 1, "{} -> {}", v, d);
        let left = st["pending"].as_u64().unwrap() + st["dead"].as_u64().unwrap();
        prop_assert_eq!(left + report["done"].as_u64().unwrap(), 1, "{} -> {} / {}", v, d, st);
    }

    /// The C ABI with arbitrary bytes (invalid UTF-8 included), NULLs, a cancel flag and an
    /// optional valid configuration first: always a JSON answer of a known kind.
    #[test]
    fn c_abi_never_panics(
        path in prop::collection::vec(1u8..=255, 0..40),
        payload in prop::collection::vec(1u8..=255, 0..200),
        null_path in any::<bool>(),
        null_payload in any::<bool>(),
        null_trigger in any::<bool>(),
        preconfigure in any::<bool>(),
        cancel_flag in prop::option::of(any::<bool>()),
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
        let tp: *const c_char = if null_trigger { std::ptr::null() } else { qp };
        let flag: i32 = cancel_flag.map_or(0, i32::from);
        let fp: *const i32 = if cancel_flag.is_some() { &flag } else { std::ptr::null() };
        let valid = CString::new(r#"{"baseUrl":"http://127.0.0.1:9"}"#).unwrap();
        unsafe {
            let mut outs = Vec::new();
            if preconfigure {
                outs.push(ffi::configure(pp, valid.as_ptr()));
            }
            outs.extend([
                ffi::configure(pp, qp),
                ffi::enqueue(pp, qp),
                ffi::status(pp),
                ffi::set_enabled(pp, enabled),
                ffi::drain(pp, budget % 1_000, tp, fp),
            ]);
            for out in outs {
                prop_assert!(!out.is_null());
                let s = CStr::from_ptr(out).to_str().expect("UTF-8 answer").to_string();
                ffi::free(out);
                check_answer(&s);
            }
            ffi::free(std::ptr::null_mut());
        }
    }
}

/// An offline session like `common::backlog`, driven by proptest (so a failure shrinks to the
/// shortest session): `entities` visits created with temp ids, then per step on visit
/// `e % entities` (skipped once it is deleted): roll < 75 a PATCH, < 97 a note whose body
/// references the visit's temp id, else a DELETE; priority low/normal/high. (`common::backlog`
/// itself loops forever when every visit is deleted before its total is reached, which small
/// entity counts make likely.)
fn offline_session(entities: usize, steps: &[(usize, u8, u8)]) -> Backlog {
    use background_sync_core::Priority;
    let prios = [Priority::Low, Priority::Normal, Priority::High];
    let mut mutations = Vec::new();
    let mut visits = std::collections::BTreeMap::new();
    let mut notes = std::collections::BTreeMap::new();
    for e in 0..entities {
        let tmp = format!("tmp-visit-{e}");
        let body = json!({ "site": format!("site {e}"), "v": 0 });
        let mut m = mutation("POST", "/visits", Some(body.clone()), "visit", &tmp);
        m.temp_id = Some(tmp.clone());
        m.priority = prios[e % 3];
        mutations.push(m);
        visits.insert(tmp, Some(body));
    }
    for (n, &(e, roll, p)) in steps.iter().enumerate() {
        let tmp = format!("tmp-visit-{}", e % entities);
        let Some(Some(current)) = visits.get(&tmp).cloned() else {
            continue;
        };
        let prio = prios[usize::from(p) % 3];
        if roll < 75 {
            let patch = json!({ "v": n + 1, "note": format!("update {n}") });
            let mut m = mutation(
                "PATCH",
                &format!("/visits/{tmp}"),
                Some(patch.clone()),
                "visit",
                &tmp,
            );
            m.priority = prio;
            mutations.push(m);
            let mut merged: Value = current;
            for (k, v) in patch.as_object().unwrap() {
                merged[k] = v.clone();
            }
            visits.insert(tmp, Some(merged));
        } else if roll < 97 {
            let note_tmp = format!("tmp-note-{n}");
            let body = json!({ "visit": tmp.clone(), "text": format!("note {n}") });
            let mut m = mutation("POST", "/notes", Some(body.clone()), "note", &note_tmp);
            m.temp_id = Some(note_tmp.clone());
            m.priority = prio;
            mutations.push(m);
            notes.insert(note_tmp, body);
        } else {
            let mut m = mutation("DELETE", &format!("/visits/{tmp}"), None, "visit", &tmp);
            m.priority = prio;
            mutations.push(m);
            visits.insert(tmp, None);
        }
    }
    Backlog {
        mutations,
        expected_visits: visits,
        expected_notes: notes,
    }
}

/// Per-entity order: for each entity, the applied log lists its mutations in enqueue order.
async fn assert_entity_order(server: &RunningServer, expected: &[(String, String)]) {
    let log = server.applied_log().await;
    let pos: std::collections::HashMap<&str, usize> = log
        .iter()
        .enumerate()
        .map(|(i, e)| (e.idempotency_key.as_str(), i))
        .collect();
    let mut last: std::collections::HashMap<&str, usize> = Default::default();
    for (entity, key) in expected {
        let p = *pos
            .get(key.as_str())
            .unwrap_or_else(|| panic!("{key} never applied"));
        if let Some(&prev) = last.get(entity.as_str()) {
            assert!(
                prev < p,
                "entity {entity}: {key} applied before an earlier mutation"
            );
        }
        last.insert(entity.as_str(), p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (cases() / 4).max(4), failure_persistence: None, ..ProptestConfig::default() })]

    /// End to end: a random offline backlog (creates with temp ids, updates and notes that
    /// reference them, deletes, three priorities), enqueued one by one or as a batch, drained
    /// with random concurrency, optionally through the batch endpoint, against a server with
    /// random transient errors, dropped connections and lost responses. The server ends in the
    /// expected state, every mutation applied exactly once, per-entity order held, no temp id
    /// reached the server.
    #[test]
    fn backlog_with_temp_ids_delivered_once_in_order(
        seed in any::<u64>(),
        entities in 1usize..6,
        steps in prop::collection::vec((0usize..6, 0u8..100, 0u8..3), 0..30),
        concurrency in 1u32..9,
        batch in prop::option::of(1u32..8),
        one_by_one in any::<bool>(),
        error_rate in 0.0f64..0.3,
        drop_rate in 0.0f64..0.08,
        lost_rate in 0.0f64..0.08,
    ) {
        rt().block_on(async move {
            let server = server(FaultConfig {
                seed,
                error_rate,
                drop_rate,
                commit_then_drop_rate: lost_rate,
                ..Default::default()
            })
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(&server.base_url);
            cfg.concurrency = concurrency;
            cfg.batch = batch.map(|max_items| BatchConfig { path: "/batch".into(), max_items });
            let bs = engine(&dir, cfg).await;
            let b = offline_session(entities, &steps);
            let enq = if one_by_one {
                let mut v = Vec::new();
                for m in &b.mutations {
                    v.push(bs.enqueue(m.clone()).await.unwrap());
                }
                v
            } else {
                bs.enqueue_many(b.mutations.clone()).await.unwrap()
            };
            let order: Vec<(String, String)> = b
                .mutations
                .iter()
                .zip(&enq)
                .map(|(m, e)| (format!("{}/{}", m.entity.kind, m.entity.id), e.idempotency_key.clone()))
                .collect();
            let mut runs = 0;
            loop {
                runs += 1;
                let r = bs
                    .drain(DrainOptions { budget: Duration::from_secs(20), ..Default::default() })
                    .await
                    .unwrap();
                if r.stop_reason == StopReason::Empty {
                    break;
                }
                assert!(runs < 30, "backlog did not drain: {r:?}");
            }
            let st = bs.status().await.unwrap();
            assert_eq!((st.pending, st.in_flight, st.dead), (0, 0, 0), "{st:?}");
            assert_state_matches(&bs, &server, &b).await;
            assert_applied_once(&server, b.mutations.len()).await;
            assert_entity_order(&server, &order).await;
            for e in server.applied_log().await {
                let body = e.body.map(|b| b.to_string()).unwrap_or_default();
                assert!(!e.path.contains("tmp-") && !body.contains("tmp-"), "a temp id reached the server: {} {body}", e.path);
            }
            server.shutdown().await;
        });
    }
}

/// Fixed hostile inputs with known answers (the properties above only check the shape).
#[test]
fn edge_inputs_get_the_expected_kind() {
    let (_dir, db) = configured_db();
    let m = |body: &str| {
        format!(r#"{{"method":"PUT","path":"/v/1","entity":{{"kind":"v","id":"1"}},"body":{body}}}"#)
    };
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let big = format!("\"{}\"", "z".repeat(1_100_000));
    let huge_int = "9".repeat(400);
    let cases: Vec<(&str, String, &str)> = vec![
        ("100,000 nested arrays", m(&deep), "invalidInput"),
        ("1e400", m("1e400"), "invalidInput"),
        ("a 400-digit integer", m(&huge_int), "invalidInput"),
        ("u64::MAX + 1", m("18446744073709551616"), "ok"),
        ("1.1 MB body (limit 1 MiB)", m(&big), "limitExceeded"),
        ("lone surrogate", m(r#""\ud800""#), "invalidInput"),
        ("NUL in a body string", m(r#""a\u0000b""#), "ok"),
        ("NUL in the path", r#"{"method":"PUT","path":"/v/1\u0000","entity":{"kind":"v","id":"1"}}"#.into(), "invalidInput"),
        ("NUL in the entity id", r#"{"method":"PUT","path":"/v/1","entity":{"kind":"v","id":"1\u0000"}}"#.into(), "invalidInput"),
        ("CRLF in a header", r#"{"method":"PUT","path":"/v/1","headers":{"x-a":"1\r\nHost: evil"},"entity":{"kind":"v","id":"1"}}"#.into(), "invalidInput"),
        ("CRLF in the key", r#"{"method":"PUT","path":"/v/1","idempotencyKey":"k\r\nx: 1","entity":{"kind":"v","id":"1"}}"#.into(), "invalidInput"),
        ("BOM", format!("\u{feff}{}", m("1")), "invalidInput"),
        ("trailing garbage", format!("{} x", m("1")), "invalidInput"),
        ("duplicate field", r#"{"method":"PUT","method":"DELETE","path":"/v/1","entity":{"kind":"v","id":"1"}}"#.into(), "invalidInput"),
        ("unknown field", r#"{"method":"PUT","path":"/v/1","entity":{"kind":"v","id":"1"},"x":1}"#.into(), "invalidInput"),
        ("empty", String::new(), "invalidInput"),
        ("null", "null".into(), "invalidInput"),
    ];
    let mut queued = 0;
    for (what, input, want) in cases {
        let answer = entry::enqueue_json(&db, &input);
        check_answer(&answer);
        let excerpt: String = answer.chars().take(200).collect();
        assert_eq!(kind_of(&answer), want, "{what}: {excerpt}");
        queued += u64::from(want == "ok");
        assert_eq!(pending(&db), queued, "{what}");
    }
    // Configuration: numbers beyond their type, deep nesting, nested null (a reset).
    for (what, input) in [
        ("maxAttempts 1e400", r#"{"maxAttempts":1e400}"#.to_string()),
        (
            "maxAttempts u64::MAX",
            r#"{"maxAttempts":18446744073709551615}"#.into(),
        ),
        ("requestTimeoutMs -1", r#"{"requestTimeoutMs":-1}"#.into()),
        ("deep", "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000)),
    ] {
        let answer = entry::configure_json(&db, &input);
        assert_eq!(kind_of(&answer), "invalidInput", "{what}: {answer}");
    }
}

/// The fuzz properties can fail: known-bad answers are rejected by the checker.
#[test]
#[should_panic(expected = "unknown kind")]
fn the_checker_rejects_an_unknown_error_kind() {
    check_answer(r#"{"ok":false,"error":{"kind":"oops","message":"x"}}"#);
}

#[test]
#[should_panic(expected = "a panic was caught")]
fn the_checker_rejects_a_caught_panic() {
    check_answer(
        r#"{"ok":false,"error":{"kind":"internal","message":"internal error: panic in the headless entry"}}"#,
    );
}

/// And a valid mutation from the fuzzer's alphabet is accepted and delivered.
#[tokio::test]
async fn a_valid_mutation_still_goes_through_after_fuzzing() {
    let server = server(FaultConfig::default()).await;
    let (_dir, bs) = engine_for(&server).await;
    bs.enqueue(mutation("PUT", "/v/1", Some(json!({"s": "\r\n\0é"})), "v", "1"))
        .await
        .unwrap();
    let r = bs.drain(Default::default()).await.unwrap();
    assert_eq!(r.done, 1);
    server.shutdown().await;
}

/// The generators reach both sides: some hostile-looking mutations and configurations are
/// valid and accepted, most are refused (otherwise the properties would test only one path).
#[test]
fn the_generators_cover_accept_and_refuse() {
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
    let (mut cfg_ok, mut cfg_refused) = (0, 0);
    let fields = prop::collection::vec(config_field(), 0..8);
    for _ in 0..200 {
        let patch = Value::Object(
            fields
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .into_iter()
                .collect(),
        );
        if check_answer(&entry::configure_json(&db, &patch.to_string())) {
            cfg_ok += 1;
        } else {
            cfg_refused += 1;
        }
    }
    println!("fuzz generators: mutations {accepted} accepted, {refused} refused of 300; configurations {cfg_ok} accepted, {cfg_refused} refused of 200");
    assert!(
        accepted >= 5 && refused >= 100,
        "{accepted} accepted, {refused} refused"
    );
    assert!(
        cfg_ok >= 20 && cfg_refused >= 20,
        "{cfg_ok} accepted, {cfg_refused} refused"
    );
}

// Known engine bugs found by `hostile_configuration_then_drain` with
// BGSYNC_FUZZ_KNOWN_BUGS=1: `validate::config` puts no upper bound on three u64 settings that
// the engine then casts to i64 (`as i64`) and adds or multiplies. Each test below passes once
// the value is either refused at `configure` (invalidInput) or handled; run them with
// `cargo test -p background-sync-core --test fuzz -- --ignored`.

/// Configure `patch` over a fresh database pointing at `server`, enqueue one mutation, drain
/// once. Returns the configure answer, the drain answer (if configure succeeded), the path.
fn configure_enqueue_drain(
    dir: &tempfile::TempDir,
    server: &RunningServer,
    patch: Value,
) -> (String, Option<String>, String) {
    let db = dir.path().join("bug.db").to_string_lossy().into_owned();
    let mut p = patch;
    p["baseUrl"] = json!(server.base_url);
    let configured = entry::configure_json(&db, &p.to_string());
    if kind_of(&configured) != "ok" {
        return (configured, None, db);
    }
    let e = entry::enqueue_json(
        &db,
        r#"{"method":"PUT","path":"/v/1","entity":{"kind":"v","id":"1"}}"#,
    );
    assert_eq!(kind_of(&e), "ok", "{e}");
    let d = entry::drain_json(&db, 2_000, "foreground", CancellationToken::new());
    (configured, Some(d), db)
}

/// `leaseTtlMs` ≥ 2^62 is accepted; `acquire_lease` computes `ttl_ms * 2` in i64: debug builds
/// panic ("attempt to multiply with overflow", crates/background-sync-core/src/store/ledger.rs `acquire_lease`), so every
/// drain fails with kind `internal` and the row is never delivered; release builds wrap to a
/// negative number, which makes the lease look implausible, so any other drainer takes it
/// over (the single-drainer guarantee is gone).
#[test]
fn lease_ttl_is_bounded_issue11() {
    let dir = tempfile::tempdir().unwrap();
    let (configured, drain, _db) =
        configure_enqueue_drain(&dir, plain_server(), json!({"leaseTtlMs": 1u64 << 62}));
    if let Some(d) = drain {
        assert_eq!(
            kind_of(&d),
            "ok",
            "configure accepted leaseTtlMs 2^62 ({configured}), then the drain: {d}"
        );
    }
}

/// `retentionMs` ≥ 2^63 is accepted; `prune` computes `now - retention_ms as i64`: debug
/// builds panic at the end of every drain ("attempt to subtract with overflow",
/// crates/background-sync-core/src/store/runs.rs `prune`), after delivering but before `release_lease`, so the lease stays
/// held and every drain for the next `leaseTtlMs` answers `alreadyRunning`. (Values near
/// u64::MAX cast to small negative numbers instead: "keep forever" prunes all history and
/// resolved temp ids at once.)
#[test]
fn retention_is_bounded_issue11() {
    let dir = tempfile::tempdir().unwrap();
    let (configured, drain, db) =
        configure_enqueue_drain(&dir, plain_server(), json!({"retentionMs": 1u64 << 63}));
    if let Some(d) = drain {
        assert_eq!(
            kind_of(&d),
            "ok",
            "configure accepted retentionMs 2^63 ({configured}), then the drain: {d}"
        );
        let again = entry::drain_json(&db, 2_000, "foreground", CancellationToken::new());
        let r: Value = serde_json::from_str(&again).unwrap();
        assert_ne!(
            r["report"]["stopReason"], "alreadyRunning",
            "lease left held: {again}"
        );
    }
}

/// `backoff.maxMs` ≥ 2^63 is accepted; `max_plausible_wait_ms` casts it to a negative i64, so
/// every stored `next_attempt_at` counts as implausible and due at once: backoff and even a
/// server's `Retry-After` are ignored, and a transient outage dead-letters every row within
/// milliseconds (10 attempts in ~10 ms here).
#[test]
fn backoff_max_is_bounded_issue11() {
    let dir = tempfile::tempdir().unwrap();
    let server = rt().block_on(server(FaultConfig {
        error_rate: 1.0,
        error_statuses: vec![503],
        retry_after_secs: Some(60),
        ..Default::default()
    }));
    let (configured, drain, _db) = configure_enqueue_drain(
        &dir,
        &server,
        json!({"backoff": {"initialMs": 60_000, "maxMs": u64::MAX}}),
    );
    if let Some(d) = drain {
        let r: Value = serde_json::from_str(&d).unwrap();
        assert_eq!(
            (r["report"]["sent"].as_u64(), r["report"]["dead"].as_u64()),
            (Some(1), Some(0)),
            "configure accepted maxMs u64::MAX ({configured}); a 503 with Retry-After: 60 was retried at once: {d}"
        );
    }
}

//! Shared helpers for the integration suites: a real reference server on 127.0.0.1 and a real
//! SQLite file per test.
#![allow(dead_code)]

use background_sync_core::{BackgroundSync, EntityRef, NewMutation, OpenOptions, Priority, SyncConfig};
pub use bgsync_reference_server::{AuthSetup, FaultConfig, RunningServer, ServerConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub async fn server(faults: FaultConfig) -> RunningServer {
    bgsync_reference_server::spawn(ServerConfig {
        faults,
        ..Default::default()
    })
    .await
    .expect("reference server starts")
}

pub async fn server_with_auth(faults: FaultConfig, auth: AuthSetup) -> RunningServer {
    bgsync_reference_server::spawn(ServerConfig {
        faults,
        auth: Some(auth),
        ..Default::default()
    })
    .await
    .expect("reference server starts")
}

pub fn config(base_url: &str) -> SyncConfig {
    let mut c = SyncConfig {
        base_url: base_url.to_string(),
        ..Default::default()
    };
    // Tests retry fast; the production default starts at 1 s.
    c.backoff.initial_ms = 20;
    c.backoff.max_ms = 200;
    c.request_timeout_ms = 5_000;
    c.max_attempts = 50;
    c
}

pub async fn engine(dir: &tempfile::TempDir, cfg: SyncConfig) -> BackgroundSync {
    let bs = BackgroundSync::open_with(dir.path().join("outbox.db"), OpenOptions::default().seed(7))
        .await
        .expect("open outbox");
    bs.configure(cfg).await.expect("configure");
    bs
}

/// A fresh database in a temp folder, configured for `server` with the test defaults of
/// `config` (the setup most tests start with).
pub async fn engine_for(server: &RunningServer) -> (tempfile::TempDir, BackgroundSync) {
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config(&server.base_url)).await;
    (dir, bs)
}

/// `PUT /visits/{i}` for each `i` in `ids`, one visit entity each.
pub async fn enqueue_visits(bs: &BackgroundSync, ids: std::ops::Range<usize>) {
    for i in ids {
        bs.enqueue(mutation(
            "PUT",
            &format!("/visits/{i}"),
            Some(json!({"v": i})),
            "visit",
            &i.to_string(),
        ))
        .await
        .unwrap();
    }
}

pub fn mutation(method: &str, path: &str, body: Option<Value>, kind: &str, id: &str) -> NewMutation {
    NewMutation {
        method: method.into(),
        path: path.into(),
        body,
        headers: BTreeMap::new(),
        priority: Priority::Normal,
        entity: EntityRef {
            kind: kind.into(),
            id: id.into(),
        },
        temp_id: None,
        idempotency_key: None,
        coalesce: None,
    }
}

/// A realistic offline backlog: `entities` visits created offline (temp ids), then a mix of
/// updates, notes that reference the visit's temp id, and some deletes, with three priorities.
/// Returns the mutations and the expected final server state keyed by temp id.
pub struct Backlog {
    pub mutations: Vec<NewMutation>,
    /// temp id → expected fields (None = deleted)
    pub expected_visits: BTreeMap<String, Option<Value>>,
    /// note temp id → expected note body (with the visit's *temp* id; resolve before comparing)
    pub expected_notes: BTreeMap<String, Value>,
}

pub fn backlog(total: usize, entities: usize, seed: u64) -> Backlog {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let prios = [Priority::Low, Priority::Normal, Priority::High];
    let mut mutations = Vec::with_capacity(total);
    let mut visits: BTreeMap<String, Option<Value>> = BTreeMap::new();
    let mut notes = BTreeMap::new();
    for e in 0..entities {
        let tmp = format!("tmp-visit-{seed}-{e}");
        let body = json!({ "site": format!("site {e}"), "v": 0 });
        let mut m = mutation("POST", "/visits", Some(body.clone()), "visit", &tmp);
        m.temp_id = Some(tmp.clone());
        m.priority = prios[e % 3];
        mutations.push(m);
        visits.insert(tmp, Some(body));
    }
    let keys: Vec<String> = visits.keys().cloned().collect();
    let mut n = 0;
    while mutations.len() < total {
        n += 1;
        let tmp = keys[rng.gen_range(0..keys.len())].clone();
        let Some(Some(current)) = visits.get(&tmp).cloned() else {
            continue;
        };
        let roll = rng.gen_range(0..100);
        let prio = prios[rng.gen_range(0..3)];
        if roll < 75 {
            let patch = json!({ "v": n, "note": format!("update {n}") });
            let mut m = mutation(
                "PATCH",
                &format!("/visits/{tmp}"),
                Some(patch.clone()),
                "visit",
                &tmp,
            );
            m.priority = prio;
            mutations.push(m);
            let mut merged = current.clone();
            for (k, v) in patch.as_object().unwrap() {
                merged[k] = v.clone();
            }
            visits.insert(tmp, Some(merged));
        } else if roll < 97 {
            let note_tmp = format!("tmp-note-{seed}-{n}");
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

/// Compare the server's state with the backlog's expectation, resolving temp ids through the
/// engine's id map.
pub async fn assert_state_matches(bs: &BackgroundSync, server: &RunningServer, b: &Backlog) {
    let state = server.state().await;
    let mut resolved = BTreeMap::new();
    for tmp in b.expected_visits.keys().chain(b.expected_notes.keys()) {
        let id = bs.resolve_temp_id(tmp).await.unwrap();
        resolved.insert(
            tmp.clone(),
            id.unwrap_or_else(|| panic!("{tmp} was never created")),
        );
    }
    let fix = |v: &Value| -> Value {
        let mut v = v.clone();
        for (_, x) in v.as_object_mut().unwrap().iter_mut() {
            if let Some(s) = x.as_str() {
                if let Some(r) = resolved.get(s) {
                    *x = Value::String(r.clone());
                }
            }
        }
        v
    };
    let visits = state.get("visits").cloned().unwrap_or(json!({}));
    let live = b.expected_visits.values().filter(|v| v.is_some()).count();
    assert_eq!(
        visits.as_object().map_or(0, |o| o.len()),
        live,
        "number of live visits"
    );
    for (tmp, expected) in &b.expected_visits {
        let sid = &resolved[tmp];
        match expected {
            None => assert!(visits.get(sid).is_none(), "{tmp} ({sid}) should be deleted"),
            Some(exp) => {
                let got = visits
                    .get(sid)
                    .unwrap_or_else(|| panic!("{tmp} ({sid}) missing on the server"));
                let mut exp = fix(exp);
                exp["id"] = Value::String(sid.clone());
                assert_eq!(got, &exp, "visit {tmp}");
            }
        }
    }
    let server_notes = state.get("notes").cloned().unwrap_or(json!({}));
    assert_eq!(
        server_notes.as_object().map_or(0, |o| o.len()),
        b.expected_notes.len(),
        "number of notes"
    );
    for (tmp, body) in &b.expected_notes {
        let sid = &resolved[tmp];
        let mut exp = fix(body);
        exp["id"] = Value::String(sid.clone());
        assert_eq!(server_notes.get(sid), Some(&exp), "note {tmp}");
    }
}

/// Every idempotency key was applied at most once, and exactly the expected number.
pub async fn assert_applied_once(server: &RunningServer, expected: usize) {
    let log = server.applied_log().await;
    let mut seen = std::collections::HashSet::new();
    for e in &log {
        assert!(
            seen.insert(e.idempotency_key.clone()),
            "key {} applied twice",
            e.idempotency_key
        );
    }
    assert_eq!(log.len(), expected, "applied mutations");
}

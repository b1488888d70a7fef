//! Outcomes back to the app (README "Outcomes"): per-mutation `delivered`/`dead` events on the
//! status stream, one `settled` per durable round, `delivered()` and `resolve_temp_id()` from
//! the database, also after a background drain in another handle that had no listener. Against
//! the reference server on 127.0.0.1 with real SQLite files; with faults, so rounds settle
//! mixed outcomes.

mod common;

use background_sync_core::{BackgroundSync, DeliveredQuery, DrainOptions, EntityRef, StatusEvent};
use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Three visits created offline under temp ids, an update of each through its temp id, and one
/// mutation the server rejects (422). Returns (enqueued ids by name, the rejected id).
async fn field_day(bs: &BackgroundSync) -> (BTreeMap<String, String>, String) {
    let mut ids = BTreeMap::new();
    for v in 1..=3 {
        let tmp = format!("tmp-v{v}");
        let mut create = mutation("POST", "/visits", Some(json!({"site": v})), "visit", &tmp);
        create.temp_id = Some(tmp.clone());
        ids.insert(format!("create-{v}"), bs.enqueue(create).await.unwrap().id);
        let update = mutation(
            "PATCH",
            &format!("/visits/{tmp}"),
            Some(json!({"done": true})),
            "visit",
            &tmp,
        );
        ids.insert(format!("update-{v}"), bs.enqueue(update).await.unwrap().id);
    }
    let bad = mutation("POST", "/rejected/x", Some(json!({"n": 1})), "rejected", "x");
    let bad_id = bs.enqueue(bad).await.unwrap().id;
    (ids, bad_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_is_told_once_and_each_round_settles_after_its_events() {
    let server = server(FaultConfig {
        seed: 3,
        error_rate: 0.3,
        drop_rate: 0.1,
        commit_then_drop_rate: 0.1,
        reject_paths: vec!["/rejected".into()],
        ..Default::default()
    })
    .await;
    let (_dir, bs) = engine_for(&server).await;
    let (ids, bad_id) = field_day(&bs).await;
    let mut events = bs.subscribe();
    for _ in 0..20 {
        let r = bs.drain(DrainOptions::default()).await.unwrap();
        if r.remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(bs.status().await.unwrap().pending, 0, "everything settled");

    let mut delivered = BTreeMap::new();
    let mut dead = BTreeMap::new();
    let mut told_since_settle: BTreeSet<String> = BTreeSet::new();
    let mut settled: Vec<String> = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            StatusEvent::Delivered(d) => {
                assert!(
                    told_since_settle.insert(d.id.clone()),
                    "{} told twice in a round",
                    d.id
                );
                assert!(
                    delivered.insert(d.id.clone(), d).is_none(),
                    "delivered told twice"
                );
            }
            StatusEvent::Dead {
                id,
                entity,
                status,
                error,
            } => {
                assert!(told_since_settle.insert(id.clone()));
                assert_eq!(entity.kind, "rejected");
                assert_eq!(status, Some(422));
                assert!(!error.is_empty());
                assert!(dead.insert(id, ()).is_none(), "dead told twice");
            }
            StatusEvent::Settled {
                delivered: d,
                dead: x,
                ..
            } => {
                let round: BTreeSet<String> = d.iter().chain(x.iter()).cloned().collect();
                assert_eq!(
                    round, told_since_settle,
                    "a settled event lists exactly the outcomes told before it"
                );
                settled.extend(round);
                told_since_settle.clear();
            }
            _ => {}
        }
    }
    assert!(
        told_since_settle.is_empty(),
        "every outcome is followed by its settled event"
    );
    assert_eq!(dead.keys().cloned().collect::<Vec<_>>(), vec![bad_id.clone()]);
    let want: BTreeSet<String> = ids.values().cloned().collect();
    assert_eq!(
        delivered.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "one delivered event per mutation"
    );
    assert_eq!(
        settled.len(),
        want.len() + 1,
        "settled events cover every outcome once"
    );

    // The server's ids replace the temp ids, in the events and in the database.
    let state = server.state().await;
    for v in 1..=3 {
        let tmp = format!("tmp-v{v}");
        let create = &delivered[&ids[&format!("create-{v}")]];
        assert_eq!(create.temp_id.as_deref(), Some(tmp.as_str()));
        let sid = create
            .server_id
            .clone()
            .expect("a create's delivered event carries the server id");
        assert!(!sid.starts_with("tmp-"));
        assert_eq!(
            state["visits"][&sid]["done"], true,
            "the update went to the server id"
        );
        assert_eq!(
            create.entity,
            EntityRef {
                kind: "visit".into(),
                id: tmp.clone()
            }
        );
        assert!((200..300).contains(&create.status));
        assert_eq!(bs.resolve_temp_id(&tmp).await.unwrap(), Some(sid));
        let update = &delivered[&ids[&format!("update-{v}")]];
        assert_eq!(update.temp_id, None, "only the create carries the temp id");
    }
    assert_eq!(bs.resolve_temp_id("tmp-never").await.unwrap(), None);

    // The same outcomes from the database, in confirmation order, filtered.
    let rows = bs.delivered(DeliveredQuery::default()).await.unwrap();
    assert_eq!(rows.len(), want.len());
    assert!(rows.windows(2).all(|w| w[0].delivered_at <= w[1].delivered_at));
    for r in &rows {
        assert_eq!(&delivered[&r.id], r, "delivered() returns what the event said");
    }
    let one = bs
        .delivered(DeliveredQuery {
            entity: Some(EntityRef {
                kind: "visit".into(),
                id: "tmp-v2".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids_v2: BTreeSet<String> = [ids["create-2"].clone(), ids["update-2"].clone()].into();
    assert_eq!(one.iter().map(|d| d.id.clone()).collect::<BTreeSet<_>>(), ids_v2);
    let later = bs
        .delivered(DeliveredQuery {
            since: Some(rows.last().unwrap().delivered_at + 1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(later.is_empty());
    let limited = bs
        .delivered(DeliveredQuery {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(limited, rows[..2].to_vec());
}

/// The field day queued by the app, then drained by the blocking entry the OS hooks call (its
/// own handle, nobody listening). Returns the file, the ids, the rejected id and the report.
fn field_day_in_the_background(
    rt: &tokio::runtime::Runtime,
    base_url: &str,
    dir: &tempfile::TempDir,
) -> (
    std::path::PathBuf,
    BTreeMap<String, String>,
    String,
    background_sync_core::DrainReport,
) {
    let path = dir.path().join("outbox.db");
    let (ids, bad_id) = rt.block_on(async {
        let bs = engine(dir, config(base_url)).await;
        bs.set_enabled(true).await.unwrap(); // background entries run only when enabled
        let out = field_day(&bs).await;
        bs.close().await;
        out
    });
    let report = background_sync_core::entry::drain(
        path.to_str().unwrap(),
        10_000,
        "android-worker",
        background_sync_core::CancellationToken::new(),
    )
    .unwrap();
    (path, ids, bad_id, report)
}

/// A background run (the blocking entry the OS hooks call, no listener, its own handle) delivers
/// while the app is not listening; the app, opening the file afterwards, learns every outcome and
/// server id from the database.
#[test]
fn a_background_run_without_listeners_is_caught_up_from_the_database() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(server(FaultConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let (path, ids, _bad, report) = field_day_in_the_background(&rt, &server.base_url, &dir);
    assert_eq!(report.done, 6, "{report:?}");
    rt.block_on(async {
        let bs = BackgroundSync::open(&path).await.unwrap();
        let rows = bs.delivered(DeliveredQuery::default()).await.unwrap();
        assert_eq!(
            rows.iter().map(|d| d.id.clone()).collect::<BTreeSet<_>>(),
            ids.values().cloned().collect::<BTreeSet<_>>()
        );
        for v in 1..=3 {
            let create = rows.iter().find(|d| d.id == ids[&format!("create-{v}")]).unwrap();
            let sid = create.server_id.clone().unwrap();
            assert_eq!(bs.resolve_temp_id(&format!("tmp-v{v}")).await.unwrap(), Some(sid));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_for_one_entity_answers_what_is_not_synced_yet() {
    let server = server(FaultConfig::default()).await;
    let (_dir, bs) = engine_for(&server).await;
    let (ids, bad_id) = field_day(&bs).await;
    let visit = |id: &str| EntityRef {
        kind: "visit".into(),
        id: id.into(),
    };
    let of = |e: EntityRef| {
        let bs = bs.clone();
        async move {
            bs.pending_for(&e, 100, 0)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        of(visit("tmp-v2")).await,
        vec![ids["create-2"].clone(), ids["update-2"].clone()]
    );
    assert_eq!(
        bs.pending_for(&visit("tmp-v2"), 1, 1).await.unwrap()[0].id,
        ids["update-2"]
    );
    assert!(of(visit("tmp-v9")).await.is_empty());
    bs.drain(DrainOptions::default()).await.unwrap();
    assert!(of(visit("tmp-v2")).await.is_empty(), "synced: nothing pending");
    // A dead letter is not pending: it needs attention (dead_letters), not a sync.
    let rejected = EntityRef {
        kind: "rejected".into(),
        id: "x".into(),
    };
    assert!(of(rejected).await.is_empty());
    assert_eq!(bs.dead_letters(10, 0).await.unwrap()[0].id, bad_id);
}

/// What each replayed or live event says, as (kind, id): "delivered"/"dead" per mutation, and
/// "settled" with the ids it lists.
fn told(events: &[StatusEvent]) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let (mut delivered, mut dead, mut settled) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for e in events {
        match e {
            StatusEvent::Delivered(d) => assert!(delivered.insert(d.id.clone()), "{} told twice", d.id),
            StatusEvent::Dead { id, .. } => assert!(dead.insert(id.clone()), "{id} told dead twice"),
            StatusEvent::Settled { delivered, dead, .. } => {
                settled.extend(delivered.iter().chain(dead).cloned())
            }
            _ => {}
        }
    }
    (delivered, dead, settled)
}

/// README "Outcomes": what a background run settled while nobody listened (the OS woke the app,
/// no webview) is told to the next listener from the database — every delivered and dead
/// mutation once, then a `settled` listing them — and never again, also after a restart. A
/// listener that cannot take the events leaves them for the next one.
#[test]
fn outcomes_nobody_heard_are_replayed_once_to_the_next_listener() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(server(FaultConfig {
        reject_paths: vec!["/rejected".into()],
        ..Default::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    let (path, ids, bad_id, report) = field_day_in_the_background(&rt, &server.base_url, &dir);
    assert_eq!((report.done, report.dead), (6, 1), "{report:?}");
    rt.block_on(async {
        let bs = BackgroundSync::open(&path).await.unwrap();
        // A webview that is gone before it takes the first event: nothing counts as told.
        assert_eq!(bs.catch_up(|_| false).await.unwrap(), 0);
        let mut events = Vec::new();
        let n = bs
            .catch_up(|e| {
                events.push(e);
                true
            })
            .await
            .unwrap();
        assert_eq!(n, 7, "six delivered and one dead: {events:?}");
        let (delivered, dead, settled) = told(&events);
        assert_eq!(delivered, ids.values().cloned().collect::<BTreeSet<_>>());
        assert_eq!(dead, BTreeSet::from([bad_id.clone()]));
        assert_eq!(settled, delivered.union(&dead).cloned().collect::<BTreeSet<_>>());
        assert!(
            matches!(events.last(), Some(StatusEvent::Settled { .. })),
            "settled comes after the events it lists"
        );
        for v in 1..=3 {
            let create = events
                .iter()
                .find_map(|e| match e {
                    StatusEvent::Delivered(d) if d.id == ids[&format!("create-{v}")] => Some(d.clone()),
                    _ => None,
                })
                .unwrap();
            assert_eq!(create.temp_id.as_deref(), Some(format!("tmp-v{v}").as_str()));
            assert_eq!(
                bs.resolve_temp_id(&format!("tmp-v{v}")).await.unwrap(),
                create.server_id
            );
        }
        let mut again = Vec::new();
        assert_eq!(
            bs.catch_up(|e| {
                again.push(e);
                true
            })
            .await
            .unwrap(),
            0,
            "{again:?}"
        );
        bs.close().await;
        let bs = BackgroundSync::open(&path).await.unwrap();
        assert_eq!(
            bs.catch_up(|_| true).await.unwrap(),
            0,
            "told stays told across a restart"
        );

        // A run with a listener tells it live; nothing is left to replay.
        let mut rx = bs.subscribe();
        let live = bs
            .enqueue(mutation(
                "POST",
                "/visits",
                Some(json!({"site": 9})),
                "visit",
                "v9",
            ))
            .await
            .unwrap()
            .id;
        bs.drain(DrainOptions::default()).await.unwrap();
        let mut heard = Vec::new();
        while let Ok(e) = rx.try_recv() {
            heard.push(e);
        }
        assert_eq!(told(&heard).0, BTreeSet::from([live]));
        assert_eq!(bs.catch_up(|_| true).await.unwrap(), 0);
    });
}

/// On Android the OS runs the worker in the app's own process when the app is alive; its drain
/// opens its own handle on the same file. The app's listener must hear those outcomes as they
/// happen, not only on its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_through_another_handle_in_this_process_reaches_the_apps_listener() {
    let server = server(FaultConfig {
        reject_paths: vec!["/rejected".into()],
        ..Default::default()
    })
    .await;
    let (_dir, bs) = engine_for(&server).await;
    bs.set_enabled(true).await.unwrap();
    let (ids, bad_id) = field_day(&bs).await;
    let mut rx = bs.subscribe();
    let path = bs.path().to_str().unwrap().to_string();
    let report = tokio::task::spawn_blocking(move || {
        background_sync_core::entry::drain(
            &path,
            10_000,
            "android-worker",
            background_sync_core::CancellationToken::new(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!((report.done, report.dead), (6, 1), "{report:?}");
    let mut heard = Vec::new();
    while let Ok(e) = rx.try_recv() {
        heard.push(e);
    }
    let (delivered, dead, settled) = told(&heard);
    assert_eq!(delivered, ids.values().cloned().collect::<BTreeSet<_>>());
    assert_eq!(dead, BTreeSet::from([bad_id]));
    assert_eq!(settled, delivered.union(&dead).cloned().collect::<BTreeSet<_>>());
    assert_eq!(
        bs.catch_up(|_| true).await.unwrap(),
        0,
        "told live: nothing to replay"
    );
}

fn heard(rx: &mut tokio::sync::broadcast::Receiver<StatusEvent>) -> Vec<StatusEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

async fn replayed(bs: &BackgroundSync) -> Vec<StatusEvent> {
    let mut out = Vec::new();
    bs.catch_up(|e| {
        out.push(e);
        true
    })
    .await
    .unwrap();
    out
}

/// README "Outcomes": a `dead` event per new dead letter, however it became one. Discarding a
/// create buries the mutations that wait for its temp id; each is told `dead` (live to a
/// listener, or replayed to the next one when nobody listened), then one `settled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_buried_with_a_discarded_create_are_told_dead() {
    let dir = tempfile::tempdir().unwrap();
    // Never drained: nothing reaches a server.
    let bs = engine(&dir, config("http://127.0.0.1:9")).await;
    let queue = |tmp: &'static str| {
        let bs = bs.clone();
        async move {
            let mut create = mutation("POST", "/visits", Some(json!({"site": tmp})), "visit", tmp);
            create.temp_id = Some(tmp.into());
            let create = bs.enqueue(create).await.unwrap().id;
            let update = mutation(
                "PATCH",
                &format!("/visits/{tmp}"),
                Some(json!({"done": true})),
                "visit",
                tmp,
            );
            (create, bs.enqueue(update).await.unwrap().id)
        }
    };
    let mut rx = bs.subscribe();
    let (create_a, update_a) = queue("tmp-a").await;
    assert_eq!(bs.discard(&create_a).await.unwrap(), 1);
    let live = heard(&mut rx);
    let (delivered, dead, settled) = told(&live);
    assert!(delivered.is_empty(), "{live:?}");
    assert_eq!(dead, BTreeSet::from([update_a.clone()]), "{live:?}");
    assert_eq!(settled, dead, "{live:?}");
    assert!(live.iter().any(|e| matches!(e,
        StatusEvent::Dead { id, error, .. } if *id == update_a && error.contains("discarded"))));
    assert!(replayed(&bs).await.is_empty(), "heard live: nothing to replay");

    drop(rx);
    let (create_b, update_b) = queue("tmp-b").await;
    assert_eq!(bs.discard(&create_b).await.unwrap(), 1);
    let later = replayed(&bs).await;
    assert_eq!(told(&later).1, BTreeSet::from([update_b]), "{later:?}");
    assert!(replayed(&bs).await.is_empty(), "told once");
}

fn small_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![7u8; 2048]).unwrap();
    p
}

fn signed_upload(path: &std::path::Path) -> background_sync_core::NewUpload {
    background_sync_core::NewUpload {
        file_path: path.to_string_lossy().into_owned(),
        copy: false,
        content_type: "image/jpeg".into(),
        file_name: None,
        destination: background_sync_core::UploadDestination::Signed,
        priority: background_sync_core::Priority::Normal,
        entity: None,
        placeholder: None,
        idempotency_key: None,
    }
}

/// README "Outcomes" for files: an `uploaded` event per finished upload (its placeholder and
/// the URL or id that replaces it) and an `uploadDead` per upload moved to the dead letter,
/// live to a listener and replayed, once, to the next listener when nobody listened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_outcomes_are_told_live_and_replayed_once() {
    let server = server(FaultConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.uploads.storage_origins = vec![server.storage_url.clone()];
    let bs = engine(&dir, cfg).await;

    let mut rx = bs.subscribe();
    let ok = bs
        .enqueue_upload(signed_upload(&small_file(files.path(), "a.jpg")))
        .await
        .unwrap();
    let gone_path = small_file(files.path(), "gone.jpg");
    let gone = bs.enqueue_upload(signed_upload(&gone_path)).await.unwrap();
    std::fs::remove_file(&gone_path).unwrap(); // the user deleted the photo: nothing a retry fixes
    bs.drain(DrainOptions::default()).await.unwrap();
    let live = heard(&mut rx);
    let uploaded: Vec<_> = live
        .iter()
        .filter_map(|e| match e {
            StatusEvent::Uploaded {
                id,
                placeholder,
                result,
                ..
            } => Some((id.clone(), placeholder.clone(), result.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(uploaded.len(), 1, "{live:?}");
    assert_eq!((&uploaded[0].0, &uploaded[0].1), (&ok.id, &ok.placeholder));
    assert_eq!(
        bs.resolve_temp_id(&ok.placeholder).await.unwrap().as_deref(),
        Some(uploaded[0].2.as_str()),
        "the event names what the placeholder resolved to"
    );
    let dead: Vec<_> = live
        .iter()
        .filter_map(|e| match e {
            StatusEvent::UploadDead { id, placeholder, .. } => Some((id.clone(), placeholder.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        dead,
        vec![(gone.id.clone(), gone.placeholder.clone())],
        "{live:?}"
    );
    // As the webview receives them (guest-js `UploadedEvent` / `UploadDeadEvent`).
    let wire: Vec<serde_json::Value> = live
        .iter()
        .filter(|e| matches!(e, StatusEvent::Uploaded { .. } | StatusEvent::UploadDead { .. }))
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    let uploaded_wire = wire.iter().find(|v| v["type"] == "uploaded").unwrap();
    assert_eq!(
        keys(uploaded_wire),
        ["type", "id", "placeholder", "status", "result"]
            .map(String::from)
            .into()
    );
    let dead_wire = wire.iter().find(|v| v["type"] == "uploadDead").unwrap();
    assert_eq!(
        keys(dead_wire),
        ["type", "id", "placeholder", "status", "error"]
            .map(String::from)
            .into()
    );
    assert!(replayed(&bs).await.is_empty(), "heard live: nothing to replay");

    drop(rx);
    let later = bs
        .enqueue_upload(signed_upload(&small_file(files.path(), "b.jpg")))
        .await
        .unwrap();
    bs.drain(DrainOptions::default()).await.unwrap();
    let first = replayed(&bs).await;
    let ids: Vec<_> = first
        .iter()
        .filter_map(|e| match e {
            StatusEvent::Uploaded { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![later.id], "{first:?}");
    assert!(replayed(&bs).await.is_empty(), "told once");
}

/// README "Outcomes": `delivered` events carry the response body only when the app asked for it
/// (`outcomeBodyMaxBytes`, off by default) and only when it fits; the same body comes from
/// `delivered()` and from a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_events_carry_the_response_body_only_when_asked_and_small_enough() {
    let server = server(FaultConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    let bs = engine(&dir, cfg.clone()).await;
    let create = |n: u32| {
        let bs = bs.clone();
        async move {
            let tmp = format!("tmp-b{n}");
            let mut m = mutation("POST", "/visits", Some(json!({"site": n})), "visit", &tmp);
            m.temp_id = Some(tmp);
            bs.enqueue(m).await.unwrap().id
        }
    };
    let delivered_event = |events: &[StatusEvent], id: &str| {
        events
            .iter()
            .find_map(|e| match e {
                StatusEvent::Delivered(d) if d.id == id => Some(d.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no delivered event for {id}: {events:?}"))
    };
    let mut rx = bs.subscribe();

    let off = create(1).await;
    bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!(
        delivered_event(&heard(&mut rx), &off).body,
        None,
        "off by default"
    );

    cfg.outcome_body_max_bytes = 4096;
    bs.configure(cfg.clone()).await.unwrap();
    let on = create(2).await;
    bs.drain(DrainOptions::default()).await.unwrap();
    let d = delivered_event(&heard(&mut rx), &on);
    let body = d.body.clone().expect("the body, asked for and small");
    assert_eq!(body["id"].as_str(), d.server_id.as_deref(), "{body}");
    assert_eq!(
        serde_json::to_value(StatusEvent::Delivered(d.clone())).unwrap()["body"],
        body,
        "as the webview receives it (guest-js `Delivered.body`)"
    );
    let rows = bs.delivered(DeliveredQuery::default()).await.unwrap();
    assert_eq!(rows.iter().find(|r| r.id == on).unwrap().body, Some(body.clone()));
    assert_eq!(rows.iter().find(|r| r.id == off).unwrap().body, None);

    cfg.outcome_body_max_bytes = 8;
    bs.configure(cfg.clone()).await.unwrap();
    let big = create(3).await;
    bs.drain(DrainOptions::default()).await.unwrap();
    let d = delivered_event(&heard(&mut rx), &big);
    assert_eq!(
        d.body, None,
        "larger than the cap: left out, the event still comes"
    );
    assert!(d.server_id.is_some());

    // Replayed with its body when nobody listened.
    drop(rx);
    cfg.outcome_body_max_bytes = 4096;
    bs.configure(cfg).await.unwrap();
    let quiet = create(4).await;
    bs.drain(DrainOptions::default()).await.unwrap();
    let r = delivered_event(&replayed(&bs).await, &quiet);
    assert_eq!(
        r.body.as_ref().and_then(|b| b["id"].as_str()),
        r.server_id.as_deref()
    );
}

/// README "Outcomes": a listener that falls further behind than the stream holds (a webview busy
/// while a big backlog drains) still gets every outcome: `forward` re-reads what settled since
/// its last event from the database, then carries on live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_fell_behind_the_stream_still_gets_every_outcome() {
    let server = server(FaultConfig {
        reject_paths: vec!["/rejected".into()],
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.concurrency = 8;
    let bs = engine(&dir, cfg).await;
    let mut ids = BTreeSet::new();
    for i in 0..400 {
        let m = mutation(
            "PUT",
            &format!("/visits/{i}"),
            Some(json!({"v": i})),
            "visit",
            &i.to_string(),
        );
        ids.insert(bs.enqueue(m).await.unwrap().id);
    }
    let mut rejected = BTreeSet::new();
    for i in 0..5 {
        let m = mutation(
            "POST",
            &format!("/rejected/{i}"),
            Some(json!({})),
            "rejected",
            &i.to_string(),
        );
        rejected.insert(bs.enqueue(m).await.unwrap().id);
    }
    // Subscribed, but reading nothing while the whole backlog drains: the stream overflows.
    let rx = bs.subscribe();
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!((r.done, r.dead), (400, 5), "{r:?}");
    // One more outcome after the overflow, live: the listener stops when it has heard it.
    let last = bs
        .enqueue(mutation("PUT", "/visits/last", Some(json!({})), "visit", "last"))
        .await
        .unwrap()
        .id;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = {
        let (bs, got, last) = (bs.clone(), got.clone(), last.clone());
        tokio::spawn(async move {
            bs.forward(rx, |e| {
                let stop = matches!(&e, StatusEvent::Delivered(d) if d.id == last);
                got.lock().unwrap().push(e);
                !stop
            })
            .await
        })
    };
    bs.drain(DrainOptions::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), listener)
        .await
        .expect("the listener hears the last outcome")
        .unwrap();
    let got = got.lock().unwrap().clone();
    let mut delivered = BTreeSet::new();
    let mut dead = BTreeSet::new();
    for e in &got {
        match e {
            StatusEvent::Delivered(d) => {
                delivered.insert(d.id.clone());
            }
            StatusEvent::Dead { id, .. } => {
                dead.insert(id.clone());
            }
            _ => {}
        }
    }
    ids.insert(last);
    let missing: Vec<_> = ids.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} delivered outcomes never told, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    assert_eq!(dead, rejected, "every dead letter told");
}

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
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config(&server.base_url)).await;
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
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config(&server.base_url)).await;
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
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config(&server.base_url)).await;
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

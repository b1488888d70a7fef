//! The delivery contract against the reference server on 127.0.0.1.

mod common;

use background_sync_core::{AuthConfig, DrainOptions, Priority, StopReason, SyncConfig};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn opts(budget_s: u64) -> DrainOptions {
    DrainOptions {
        budget: Duration::from_secs(budget_s),
        ..Default::default()
    }
}

/// Per-entity order: for each entity, the applied log lists its mutations in enqueue order.
async fn assert_entity_order(server: &RunningServer, expected: &[(String, String)]) {
    // expected: (entity key, idempotency key) in enqueue order
    let log = server.applied_log().await;
    let pos: std::collections::HashMap<&str, usize> = log
        .iter()
        .enumerate()
        .map(|(i, e)| (e.idempotency_key.as_str(), i))
        .collect();
    let mut last: std::collections::HashMap<&str, usize> = Default::default();
    for (entity, key) in expected {
        let Some(&p) = pos.get(key.as_str()) else { continue };
        if let Some(&prev) = last.get(entity.as_str()) {
            assert!(
                prev < p,
                "entity {entity}: {key} applied before an earlier mutation"
            );
        }
        last.insert(entity.as_str(), p);
    }
}

async fn run_backlog(faults: FaultConfig, cfg_edit: impl FnOnce(&mut SyncConfig)) {
    let server = server(faults).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.concurrency = 8;
    cfg_edit(&mut cfg);
    let bs = engine(&dir, cfg).await;
    let b = backlog(1_000, 50, 11);
    let enq = bs.enqueue_many(b.mutations.clone()).await.unwrap();
    let order: Vec<(String, String)> = b
        .mutations
        .iter()
        .zip(&enq)
        .map(|(m, e)| {
            (
                format!("{}/{}", m.entity.kind, m.entity.id),
                e.idempotency_key.clone(),
            )
        })
        .collect();
    let start = Instant::now();
    let mut runs = 0;
    loop {
        runs += 1;
        let r = bs.drain(opts(60)).await.unwrap();
        if r.stop_reason == StopReason::Empty {
            break;
        }
        assert!(
            runs < 20 && start.elapsed() < Duration::from_secs(120),
            "backlog did not drain: {r:?}"
        );
    }
    let st = bs.status().await.unwrap();
    assert_eq!((st.pending, st.in_flight, st.dead), (0, 0, 0));
    assert_state_matches(&bs, &server, &b).await;
    assert_applied_once(&server, 1_000).await;
    assert_entity_order(&server, &order).await;
    let stats = server.stats();
    eprintln!(
        "backlog drained in {:?} over {runs} run(s); server stats {stats:?}",
        start.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_backlog_reaches_expected_state() {
    run_backlog(FaultConfig::default(), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_transient_faults_change_nothing() {
    let faults = FaultConfig {
        seed: 3,
        error_rate: 0.3,
        drop_rate: 0.05,
        commit_then_drop_rate: 0.05,
        ..Default::default()
    };
    run_backlog(faults, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_endpoint_with_faults_gives_the_same_result() {
    let faults = FaultConfig {
        seed: 5,
        error_rate: 0.3,
        ..Default::default()
    };
    run_backlog(faults, |c| {
        c.batch = Some(background_sync_core::BatchConfig {
            path: "/batch".into(),
            max_items: 25,
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_4xx_dead_letters_and_blocks_only_its_entity() {
    let server = server(FaultConfig::default()).await;
    let (_dir, bs) = engine_for(&server).await;
    let bad = bs
        .enqueue(mutation(
            "PUT",
            "/visits/a",
            Some(json!({"__reject": true})),
            "visit",
            "a",
        ))
        .await
        .unwrap();
    let blocked = bs
        .enqueue(mutation("PUT", "/visits/a", Some(json!({"v": 2})), "visit", "a"))
        .await
        .unwrap();
    for i in 0..5 {
        bs.enqueue(mutation(
            "PUT",
            &format!("/visits/b{i}"),
            Some(json!({"v": i})),
            "visit",
            &format!("b{i}"),
        ))
        .await
        .unwrap();
    }
    let r = bs.drain(opts(10)).await.unwrap();
    assert_eq!(r.done, 5, "{r:?}");
    assert_eq!(r.dead, 1);
    assert_eq!(
        r.stop_reason,
        StopReason::Waiting,
        "the blocked mutation is still queued"
    );
    let dead = bs.dead_letters(10, 0).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, bad.id);
    assert_eq!(dead[0].last_status, Some(422));
    let err = dead[0].last_error.as_deref().unwrap();
    assert!(err.contains("422") && err.contains("validation failed"), "{err}");
    assert_eq!(dead[0].attempts, 1, "no retries for a permanent failure");
    let pending = bs.pending(10, 0).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, blocked.id);
    // The user fixes the body: the entity unblocks in order.
    bs.edit(&bad.id, Some(json!({"v": 1}))).await.unwrap();
    let r = bs.drain(opts(10)).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (2, StopReason::Empty), "{r:?}");
    assert_eq!(server.state().await["visits"]["a"]["v"], 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let server = server(FaultConfig {
        fail_next: vec![429],
        retry_after_secs: Some(2),
        ..Default::default()
    })
    .await;
    let (_dir, bs) = engine_for(&server).await;
    bs.enqueue(mutation("PUT", "/visits/x", Some(json!({"v": 1})), "visit", "x"))
        .await
        .unwrap();
    let t = Instant::now();
    let r = bs.drain(opts(10)).await.unwrap();
    let took = t.elapsed();
    assert_eq!((r.done, r.retried), (1, 1), "{r:?}");
    assert!(
        took >= Duration::from_millis(1_950),
        "retried after {took:?}, before Retry-After: 2"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_http_date_beyond_budget_leaves_row_waiting() {
    let server = server(FaultConfig {
        fail_next: vec![503],
        retry_after_secs: Some(30),
        retry_after_http_date: true,
        ..Default::default()
    })
    .await;
    let (_dir, bs) = engine_for(&server).await;
    bs.enqueue(mutation("PUT", "/visits/x", Some(json!({"v": 1})), "visit", "x"))
        .await
        .unwrap();
    let r = bs.drain(opts(3)).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::Waiting, "{r:?}");
    let next = r.next_attempt_at.expect("next attempt time");
    assert!(
        next - r.finished_at > 25_000,
        "HTTP-date Retry-After honoured: {}",
        next - r.finished_at
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_refreshes_once_then_retries() {
    let server = server_with_auth(
        FaultConfig::default(),
        AuthSetup {
            access_tokens: vec!["good".into()],
            refresh_token: "rt-1".into(),
            ..Default::default()
        },
    )
    .await;
    let (_dir, bs) = engine_for(&server).await;
    bs.set_auth(AuthConfig {
        access_token: Some("expired".into()),
        refresh_token: Some("rt-1".into()),
        refresh_url: Some("/auth/refresh".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    enqueue_visits(&bs, 0..10).await;
    let r = bs.drain(opts(10)).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (10, StopReason::Empty), "{r:?}");
    assert_eq!(
        server.stats().refreshes,
        1,
        "exactly one refresh for a burst of 401s"
    );

    // A 401 storm that a refresh does not cure: stop, keep everything pending, refresh once.
    server.revoke_tokens();
    bs.set_auth(AuthConfig {
        access_token: Some("revoked".into()),
        refresh_token: Some("wrong".into()),
        refresh_url: Some("/auth/refresh".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    bs.enqueue(mutation("PUT", "/visits/z", Some(json!({"v": 1})), "visit", "z"))
        .await
        .unwrap();
    let r = bs.drain(opts(10)).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::AuthFailed, "{r:?}");
    assert_eq!(r.remaining, 1);
    assert_eq!(
        bs.dead_letters(10, 0).await.unwrap().len(),
        0,
        "auth failures are not the mutation's fault"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_stops_in_time_and_leaves_rest_pending() {
    let server = server(FaultConfig {
        delay_ms: 200,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.concurrency = 2;
    let bs = engine(&dir, cfg).await;
    for i in 0..200 {
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
    let t = Instant::now();
    let r = bs
        .drain(DrainOptions {
            budget: Duration::from_secs(2),
            ..Default::default()
        })
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(r.stop_reason, StopReason::Deadline, "{r:?}");
    assert!(took <= Duration::from_millis(2_300), "stopped after {took:?}");
    assert!(r.done >= 10, "made progress: {r:?}");
    let st = bs.status().await.unwrap();
    assert_eq!(st.in_flight, 0, "nothing left in flight");
    assert_eq!(st.pending as u32 + r.done, 200);
    assert_eq!(
        server.applied_log().await.len() as u32,
        r.done,
        "every applied mutation was recorded as done"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_promptly() {
    let server = server(FaultConfig {
        delay_ms: 300,
        ..Default::default()
    })
    .await;
    let (_dir, bs) = engine_for(&server).await;
    for i in 0..50 {
        bs.enqueue(mutation(
            "PUT",
            &format!("/v/{i}"),
            Some(json!({"v": i})),
            "v",
            &i.to_string(),
        ))
        .await
        .unwrap();
    }
    let o = DrainOptions {
        budget: Duration::from_secs(30),
        ..Default::default()
    };
    let cancel = o.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        cancel.cancel();
    });
    let t = Instant::now();
    let r = bs.drain(o).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::Cancelled);
    assert!(t.elapsed() < Duration::from_millis(1_200), "{:?}", t.elapsed());
    let st = bs.status().await.unwrap();
    assert_eq!(st.in_flight, 0);
    assert_eq!(st.pending as u32 + r.done, 50);
    // The next drain delivers the rest, with no duplicate applies.
    let r2 = bs.drain(opts(60)).await.unwrap();
    assert_eq!(r2.stop_reason, StopReason::Empty, "{r2:?}");
    assert_applied_once(&server, 50).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_then_fifo_across_entities() {
    let server = server(FaultConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.concurrency = 1;
    let bs = engine(&dir, cfg).await;
    let plan = [
        ("a", Priority::Low),
        ("b", Priority::Normal),
        ("c", Priority::Critical),
        ("d", Priority::High),
        ("e", Priority::Critical),
        ("f", Priority::Normal),
    ];
    for (id, p) in plan {
        let mut m = mutation("PUT", &format!("/items/{id}"), Some(json!({})), "item", id);
        m.priority = p;
        bs.enqueue(m).await.unwrap();
    }
    bs.drain(opts(10)).await.unwrap();
    let order: Vec<String> = server
        .applied_log()
        .await
        .into_iter()
        .map(|e| e.entity_id)
        .collect();
    assert_eq!(order, ["c", "e", "d", "b", "f", "a"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolved_temp_id_waits_for_its_create() {
    let server = server(FaultConfig {
        fail_next: vec![503, 503],
        ..Default::default()
    })
    .await;
    let (_dir, bs) = engine_for(&server).await;
    // The note is critical and enqueued later, but it references the visit's temp id.
    let mut create = mutation("POST", "/visits", Some(json!({"site": "x"})), "visit", "tmp-v1");
    create.temp_id = Some("tmp-v1".into());
    create.priority = Priority::Low;
    bs.enqueue(create).await.unwrap();
    let mut note = mutation(
        "POST",
        "/notes",
        Some(json!({"visit": "tmp-v1", "tags": ["tmp-v1"]})),
        "note",
        "n1",
    );
    note.priority = Priority::Critical;
    bs.enqueue(note).await.unwrap();
    bs.enqueue(mutation(
        "PATCH",
        "/visits/tmp-v1",
        Some(json!({"done": true})),
        "visit",
        "tmp-v1",
    ))
    .await
    .unwrap();
    let st = bs.status().await.unwrap();
    assert_eq!(st.blocked, 2, "both wait for the create");
    let pending = bs.pending(10, 0).await.unwrap();
    assert_eq!(pending[1].waiting_for, vec!["tmp-v1".to_string()]);
    let r = bs.drain(opts(10)).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::Empty, "{r:?}");
    let sid = bs.resolve_temp_id("tmp-v1").await.unwrap().expect("resolved");
    let log = server.applied_log().await;
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].path, "/visits");
    assert!(
        log.iter().all(|e| !e.path.contains("tmp-v1")),
        "no temp id in any path: {log:?}"
    );
    let note = log.iter().find(|e| e.collection == "notes").unwrap();
    assert_eq!(note.body.as_ref().unwrap()["visit"], sid.as_str());
    assert_eq!(note.body.as_ref().unwrap()["tags"][0], sid.as_str());
    assert_eq!(server.state().await["visits"][&sid]["done"], true);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_past_the_limit_go_to_dead_letter() {
    let server = server(FaultConfig {
        error_rate: 1.0,
        error_statuses: vec![500],
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.max_attempts = 3;
    cfg.backoff.initial_ms = 1;
    cfg.backoff.max_ms = 5;
    let bs = engine(&dir, cfg).await;
    bs.enqueue(mutation("PUT", "/v/1", Some(json!({})), "v", "1"))
        .await
        .unwrap();
    let r = bs.drain(opts(10)).await.unwrap();
    assert_eq!((r.retried, r.dead), (2, 1), "{r:?}");
    let d = &bs.dead_letters(10, 0).await.unwrap()[0];
    assert_eq!(d.attempts, 3);
    assert_eq!(d.last_status, Some(500));
    assert!(d
        .last_error
        .as_deref()
        .unwrap()
        .contains("gave up after 3 attempts"));
    // retry() gives it a fresh budget; with the server healthy it goes through.
    server.set_faults(FaultConfig::default());
    bs.retry(&d.id).await.unwrap();
    let r = bs.drain(opts(10)).await.unwrap();
    assert_eq!(r.done, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_drainers_never_send_the_same_row() {
    let server = server(FaultConfig {
        delay_ms: 5,
        ..Default::default()
    })
    .await;
    let (_dir, bs) = engine_for(&server).await;
    for i in 0..200 {
        bs.enqueue(mutation(
            "PUT",
            &format!("/v/{i}"),
            Some(json!({"v": i})),
            "v",
            &i.to_string(),
        ))
        .await
        .unwrap();
    }
    // Separate handles on the same file, as foreground and background would have.
    let path = bs.path().to_path_buf();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let h = background_sync_core::BackgroundSync::open(&path).await.unwrap();
            let mut done = 0;
            for _ in 0..50 {
                let r = h.drain(opts(30)).await.unwrap();
                done += r.done;
                if r.stop_reason == StopReason::Empty {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 200);
    assert_applied_once(&server, 200).await;
    assert_eq!(server.stats().replayed, 0, "no row was even sent twice");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_events_stream_progress_and_report() {
    let server = server(FaultConfig::default()).await;
    let (_dir, bs) = engine_for(&server).await;
    let mut rx = bs.subscribe();
    for i in 0..5 {
        bs.enqueue(mutation(
            "PUT",
            &format!("/v/{i}"),
            Some(json!({})),
            "v",
            &i.to_string(),
        ))
        .await
        .unwrap();
    }
    bs.drain(opts(10)).await.unwrap();
    let mut saw_running = false;
    let mut progress = 0;
    let mut last_done = 0;
    let mut report = None;
    while let Ok(e) = rx.try_recv() {
        match e {
            background_sync_core::StatusEvent::Status(s) => {
                saw_running |= s.state == background_sync_core::SyncState::Running
            }
            background_sync_core::StatusEvent::Progress { done, .. } => {
                progress += 1;
                last_done = done
            }
            background_sync_core::StatusEvent::Report(r) => report = Some(r),
            _ => {}
        }
    }
    assert!(saw_running);
    // One event per settled round of requests (several finished requests settle together).
    assert!((1..=5).contains(&progress), "{progress}");
    assert_eq!(last_done, 5);
    assert_eq!(report.unwrap().done, 5);
    let st = bs.status().await.unwrap();
    assert_eq!(st.state, background_sync_core::SyncState::Completed);
    assert!(st.last_sync_at.is_some());
    assert_eq!(bs.history(5).await.unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_costs_no_attempts_and_says_no_network() {
    // Nothing listens on this port: every connect is refused, as when the device is offline.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("http://127.0.0.1:9");
    cfg.max_attempts = 2;
    let bs = engine(&dir, cfg).await;
    for i in 0..5 {
        bs.enqueue(mutation(
            "PUT",
            &format!("/v/{i}"),
            Some(json!({})),
            "v",
            &i.to_string(),
        ))
        .await
        .unwrap();
    }
    for _ in 0..5 {
        let r = bs.drain(opts(5)).await.unwrap();
        assert_eq!(r.stop_reason, StopReason::NoNetwork, "{r:?}");
        assert!(
            r.last_error.as_deref().unwrap().contains("cannot reach the API"),
            "{r:?}"
        );
        assert!(
            r.sent <= 4,
            "stops after the first refusals, not one per row: {r:?}"
        );
    }
    let st = bs.status().await.unwrap();
    assert_eq!(
        (st.pending, st.dead),
        (5, 0),
        "a long offline spell must not dead-letter anything"
    );
    assert!(bs.pending(10, 0).await.unwrap().iter().all(|m| m.attempts == 0));
}

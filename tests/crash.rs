//! Crash suite: child processes enqueue and drain against the reference server and are killed
//! with SIGKILL at random points (mid-transaction, mid-request, after the server committed but
//! before the client recorded it). Afterwards: every acknowledged enqueue is delivered, no
//! idempotency key is applied twice, per-entity order holds, nothing is stuck in flight.
//!
//! Cycles: `BGSYNC_CRASH_CYCLES` (default 50; CI-sized). `BGSYNC_CRASH_CYCLES=1000` for a long run.

mod common;

use background_sync_core::{BackgroundSync, DrainOptions, StopReason};
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "BGSYNC_CRASH_CHILD_DB";

/// Child mode: runs only when the parent test re-executes this binary with CHILD_ENV set.
#[test]
fn crash_child() {
    let Ok(db) = std::env::var(CHILD_ENV) else { return };
    let cycle: u64 = std::env::var("BGSYNC_CRASH_CYCLE").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let bs = BackgroundSync::open(&db).await.unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cycle);
        let out = std::io::stdout();
        let note_tmp = format!("tmp-note-{cycle}");
        let mut created_note = false;
        // Two more writers on the same handle at once (an app's `Promise.all`): their calls
        // share commits with each other and with the loop's (group commit); each is
        // acknowledged only after the commit that holds it.
        for task in 0..2u64 {
            let bs = bs.clone();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cycle * 10 + task + 1);
            tokio::spawn(async move {
                for n in 0..25u64 {
                    let e = format!("c{task}x{}", n % 3);
                    let m = mutation(
                        "PUT",
                        &format!("/items/{e}"),
                        Some(json!({"cycle": cycle, "i": n})),
                        "item",
                        &e,
                    );
                    let enq = bs.enqueue(m).await.unwrap();
                    {
                        let out = std::io::stdout();
                        let mut o = out.lock();
                        writeln!(o, "ACK {}", enq.idempotency_key).unwrap();
                        o.flush().unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..8))).await;
                }
            });
        }
        for i in 0u64.. {
            let mut batch = Vec::new();
            for j in 0..rng.gen_range(1..4u64) {
                let seqno = i * 10 + j;
                if !created_note && rng.gen_bool(0.3) {
                    let mut m = mutation("POST", "/notes", Some(json!({"cycle": cycle})), "note", &note_tmp);
                    m.temp_id = Some(note_tmp.clone());
                    batch.push(m);
                    created_note = true;
                } else if created_note && rng.gen_bool(0.2) {
                    batch.push(mutation(
                        "PATCH",
                        &format!("/notes/{note_tmp}"),
                        Some(json!({"cycle": cycle, "i": seqno})),
                        "note",
                        &note_tmp,
                    ));
                } else {
                    let e = format!("e{}", rng.gen_range(0..8));
                    let path = format!("/items/{e}");
                    batch.push(mutation(
                        "PUT",
                        &path,
                        Some(json!({"cycle": cycle, "i": seqno})),
                        "item",
                        &e,
                    ));
                }
            }
            let enq = bs.enqueue_many(batch).await.unwrap();
            {
                let mut o = out.lock();
                for e in enq {
                    writeln!(o, "ACK {}", e.idempotency_key).unwrap();
                }
                o.flush().unwrap();
            }
            if rng.gen_bool(0.5) {
                let budget = Duration::from_millis(rng.gen_range(50..500));
                let _ = bs
                    .drain(DrainOptions {
                        budget,
                        ..Default::default()
                    })
                    .await;
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let cycles: u64 = std::env::var("BGSYNC_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let server = server(FaultConfig {
        seed: 17,
        error_rate: 0.1,
        commit_then_drop_rate: 0.05,
        delay_ms: 3,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.lease_ttl_ms = 1_000;
    cfg.concurrency = 4;
    let bs = engine(&dir, cfg).await;
    let db = bs.path().to_str().unwrap().to_string();
    bs.close().await;
    drop(bs);

    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let start = Instant::now();
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, &db)
            .env("BGSYNC_CRASH_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                // The harness prints "test crash_child ... " before the child's first line.
                .filter_map(|l| l.split_once("ACK ").map(|(_, k)| k.to_string()))
                .collect::<Vec<_>>()
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..400))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());
    }
    let crash_time = start.elapsed();

    // Recovery: a fresh process view drains everything (after the dead child's lease expires).
    let bs = BackgroundSync::open(&db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = bs
            .drain(DrainOptions {
                budget: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .unwrap();
        if r.stop_reason == StopReason::Empty {
            break;
        }
        if Instant::now() >= deadline || (r.stop_reason == StopReason::Waiting && r.next_attempt_at.is_none())
        {
            let dead = bs.dead_letters(5, 0).await.unwrap();
            let pending = bs.pending(3, 0).await.unwrap();
            panic!("could not drain after the crashes: {r:?}\ndead: {dead:#?}\npending: {pending:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = bs.status().await.unwrap();
    assert_eq!((st.pending, st.in_flight, st.dead), (0, 0, 0), "{st:?}");

    let log = server.applied_log().await;
    let mut applied = HashSet::new();
    for e in &log {
        assert!(
            applied.insert(e.idempotency_key.as_str()),
            "key {} applied twice",
            e.idempotency_key
        );
    }
    let lost: Vec<&String> = acked.iter().filter(|k| !applied.contains(k.as_str())).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged mutations lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // Per-entity order: (cycle, i) increases within each item.
    let mut last: HashMap<String, (u64, u64)> = HashMap::new();
    for e in log.iter().filter(|e| e.collection == "items") {
        let b = e.body.as_ref().unwrap();
        let k = (b["cycle"].as_u64().unwrap(), b["i"].as_u64().unwrap());
        if let Some(prev) = last.insert(e.entity_id.clone(), k) {
            assert!(
                prev < k,
                "item {} applied out of order: {prev:?} then {k:?}",
                e.entity_id
            );
        }
    }
    // No temp id ever reached the server.
    assert!(
        log.iter().all(|e| !e.path.contains("tmp-")),
        "a temp id was sent unresolved"
    );
    let stats = server.stats();
    eprintln!(
        "crash suite: {cycles} SIGKILL cycles in {crash_time:?}; {} acknowledged, {} applied, 0 lost, 0 duplicated; \
         server injected {} errors and {} commit-then-drops, replayed {}",
        acked.len(),
        log.len(),
        stats.injected_errors,
        stats.injected_commit_then_drops,
        stats.replayed
    );
    assert!(acked.len() as u64 >= cycles, "children made progress");
    server.shutdown().await;
}

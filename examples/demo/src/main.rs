//! Headless demo: a field worker's offline day, drained to the bundled reference server.
//!
//! `cargo run -p bgsync-demo [-- --mutations N --faults 0.2]`
//!
//! It starts the reference server on 127.0.0.1 with fault injection, queues a realistic offline
//! backlog (visits created offline with temp ids, updates, notes that reference the visits,
//! a few invalid records, three priorities), then drains it the way a background wake-up would
//! (25 s budgets, headless), with a progress bar, and checks the server against the outbox.

use background_sync_core::{
    BackgroundSync, DrainOptions, EntityRef, NewMutation, Priority, StatusEvent, StopReason, SyncConfig,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::time::{Duration, Instant};

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn m(method: &str, path: String, body: serde_json::Value, kind: &str, id: &str, p: Priority) -> NewMutation {
    NewMutation {
        method: method.into(),
        path,
        body: Some(body),
        headers: Default::default(),
        priority: p,
        entity: EntityRef {
            kind: kind.into(),
            id: id.into(),
        },
        temp_id: None,
        idempotency_key: None,
        coalesce: None,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total = arg("--mutations", 2_000.0) as usize;
    let fault_rate = arg("--faults", 0.2);
    let server = bgsync_reference_server::spawn(bgsync_reference_server::ServerConfig {
        faults: bgsync_reference_server::FaultConfig {
            seed: 1,
            error_rate: fault_rate,
            retry_after_secs: Some(1),
            drop_rate: fault_rate / 10.0,
            commit_then_drop_rate: fault_rate / 10.0,
            delay_ms: 2,
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    println!(
        "reference server: {} (faults: {:.0}% transient)",
        server.base_url,
        fault_rate * 100.0
    );

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("outbox.db");
    let bs = BackgroundSync::open(&db).await?;
    let mut cfg = SyncConfig {
        base_url: server.base_url.clone(),
        concurrency: 8,
        ..Default::default()
    };
    cfg.backoff.initial_ms = 100;
    cfg.backoff.max_ms = 2_000;
    bs.configure(cfg).await?;

    // The offline day: 40 sites visited, each visit created offline, then checklists, notes,
    // photos' metadata; some records fail server validation.
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(total);
    let visits = 40.min(total.max(1));
    for v in 0..visits {
        let tmp = format!("tmp-visit-{v}");
        let mut c = m(
            "POST",
            "/visits".into(),
            json!({"site": format!("Site {v}"), "status": "started"}),
            "visit",
            &tmp,
            Priority::Normal,
        );
        c.temp_id = Some(tmp);
        batch.push(c);
    }
    let mut i = 0;
    while batch.len() < total {
        i += 1;
        let v = i % visits;
        let tmp = format!("tmp-visit-{v}");
        let p = match i % 10 {
            0 => Priority::Critical,
            1..=3 => Priority::High,
            4..=6 => Priority::Normal,
            _ => Priority::Low,
        };
        let mut body = json!({"checklist": i, "at": format!("10:{:02}", i % 60)});
        if i % 97 == 0 {
            body["__reject"] = json!(true); // the server's validation will refuse it
        }
        let mut mm = if i % 3 == 0 {
            m(
                "POST",
                "/notes".into(),
                json!({"visit": tmp, "text": format!("note {i}")}),
                "note",
                &format!("n{i}"),
                p,
            )
        } else {
            m("PATCH", format!("/visits/{tmp}"), body, "visit", &tmp, p)
        };
        mm.priority = p;
        batch.push(mm);
    }
    bs.enqueue_many(batch).await?;
    let st = bs.status().await?;
    println!(
        "queued {} mutations offline in {:?} ({} waiting for temp ids)",
        st.pending,
        t0.elapsed(),
        st.blocked
    );

    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
    )?);
    let mut rx = bs.subscribe();
    let b2 = bar.clone();
    let watcher = tokio::spawn(async move {
        let mut base = 0u64;
        while let Ok(e) = rx.recv().await {
            match e {
                StatusEvent::Progress { done, dead, .. } => {
                    b2.set_position(base + u64::from(done + dead));
                    b2.set_message(format!("{dead} dead letters this run"));
                }
                StatusEvent::Report(r) => base += u64::from(r.done + r.dead),
                _ => {}
            }
        }
    });

    let t1 = Instant::now();
    let mut runs = 0;
    let mut retried = 0;
    loop {
        runs += 1;
        let r = bs
            .drain(DrainOptions {
                budget: Duration::from_secs(25),
                trigger: "demo-background".into(),
                ..Default::default()
            })
            .await?;
        retried += r.retried;
        // Stop when empty, or when only rows blocked behind dead letters are left.
        let idle = r.done == 0 && r.dead == 0 && r.retried == 0;
        if r.stop_reason == StopReason::Empty || (r.stop_reason == StopReason::Waiting && idle) {
            break;
        }
        if runs > 20 {
            break;
        }
    }
    let elapsed = t1.elapsed();
    bar.finish();
    watcher.abort();

    let st = bs.status().await?;
    let stats = server.stats();
    let log = server.applied_log().await;
    let mut keys = std::collections::HashSet::new();
    let dupes = log
        .iter()
        .filter(|e| !keys.insert(e.idempotency_key.clone()))
        .count();
    println!("\nsummary");
    println!(
        "  drained in {elapsed:?} over {runs} background run(s), {:.0} mutations/s",
        log.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  delivered: {}  retried: {retried}  dead letters: {}  blocked behind them: {}",
        log.len(),
        st.dead,
        st.pending
    );
    println!(
        "  server: {} requests, {} applied, {} idempotent replays, {} injected errors, {} dropped connections, {} commit-then-drop",
        stats.requests, stats.applied, stats.replayed, stats.injected_errors, stats.injected_drops, stats.injected_commit_then_drops
    );
    println!(
        "  duplicates applied: {dupes}  temp ids leaked to the server: {}",
        log.iter().filter(|e| e.path.contains("tmp-")).count()
    );
    for d in bs.dead_letters(3, 0).await? {
        println!(
            "  dead letter {} {} -> {}",
            d.method,
            d.path,
            d.last_error.unwrap_or_default()
        );
    }
    server.shutdown().await;
    if dupes > 0 {
        return Err("duplicates applied".into());
    }
    Ok(())
}

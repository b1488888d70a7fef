//! Background file uploads against the reference server: signed-URL batches on a separate
//! storage origin, streamed bodies, bounded concurrency, faults, expiry, deadlines, linking.
//! Knob: BGSYNC_UPLOAD_BIG_FILES (default 4) files of 51+ MB in the 200-file run.

mod common;

use background_sync_core::{
    BackgroundSync, DrainOptions, EntityRef, NewUpload, Priority, StatusEvent, StopReason, SyncConfig,
    UploadDestination, UploadState,
};
use bgsync_reference_server::StorageFaults;
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MB: u64 = 1024 * 1024;

fn opts(budget: Duration) -> DrainOptions {
    DrainOptions {
        budget,
        ..Default::default()
    }
}

fn upload_config(server: &RunningServer) -> SyncConfig {
    let mut c = config(&server.base_url);
    c.uploads.storage_origins = vec![server.storage_url.clone()];
    c
}

/// Write a file of `size` pseudo-random bytes without holding it in memory.
fn make_file(dir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    path
}

fn new_upload(path: &Path, copy: bool) -> NewUpload {
    NewUpload {
        file_path: path.to_string_lossy().into_owned(),
        copy,
        content_type: "image/jpeg".into(),
        file_name: None,
        destination: UploadDestination::Signed,
        priority: Priority::Normal,
        entity: None,
        placeholder: None,
        idempotency_key: None,
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Drain until nothing is left (bounded), returning the total uploads and run count.
async fn drain_all(bs: &BackgroundSync, budget: Duration, max_runs: usize) -> (u32, usize) {
    let mut uploaded = 0;
    for run in 1..=max_runs {
        let r = bs.drain(opts(budget)).await.unwrap();
        uploaded += r.uploaded;
        let st = bs.status().await.unwrap();
        if st.uploads_pending == 0 && st.pending == 0 && st.in_flight == 0 {
            return (uploaded, run);
        }
    }
    let st = bs.status().await.unwrap();
    panic!("not drained after {max_runs} runs: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_files_through_faults_each_once_then_their_mutations() {
    let big: usize = std::env::var("BGSYNC_UPLOAD_BIG_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let total = 200;
    let server = server(FaultConfig {
        seed: 11,
        error_rate: 0.1,
        ..Default::default()
    })
    .await;
    server.set_storage_faults(StorageFaults {
        seed: 12,
        error_rate: 0.08,
        drop_rate: 0.04,
        commit_then_drop_rate: 0.04,
        expire_next: 1,
        // Loopback is fast; at 100 MB/s per upload a big file spans several progress ticks.
        bytes_per_sec: 100_000_000,
        ..Default::default()
    });
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, upload_config(&server)).await;
    let mut events = bs.subscribe();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let finished_files = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (p2, f2) = (progress.clone(), finished_files.clone());
    let listener = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(StatusEvent::UploadProgress {
                    bytes_sent, total, ..
                }) => {
                    assert!(bytes_sent <= total);
                    p2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if bytes_sent == total {
                        f2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut expected: Vec<(String, String, u64)> = Vec::new(); // (upload id, photo id, size)
    let mut biggest = 0;
    for i in 0..total {
        let size = if i < big {
            51 * MB + rng.gen_range(0..4 * MB)
        } else {
            rng.gen_range(1..512 * 1024)
        };
        biggest = biggest.max(size);
        let path = make_file(files.path(), &format!("photo-{i}.jpg"), size, i as u64);
        // Big files are uploaded in place; small ones copied (the default).
        let mut u = new_upload(&path, i >= big);
        u.priority = if i % 10 == 0 {
            Priority::High
        } else {
            Priority::Normal
        };
        u.entity = Some(EntityRef {
            kind: "photo".into(),
            id: format!("p{i}"),
        });
        let q = bs.enqueue_upload(u).await.unwrap();
        if i >= big {
            std::fs::remove_file(&path).unwrap(); // the copy must be what gets uploaded
        }
        // The record that references the photo, enqueued right after it.
        bs.enqueue(mutation(
            "PUT",
            &format!("/photos/p{i}"),
            Some(json!({"url": q.placeholder, "n": i})),
            "photo",
            &format!("p{i}"),
        ))
        .await
        .unwrap();
        expected.push((q.id, format!("p{i}"), size));
    }
    let st = bs.status().await.unwrap();
    assert_eq!(st.uploads_pending, total as u64);
    assert_eq!(st.blocked, total as u64, "every record waits for its file");

    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let (uploaded, runs) = drain_all(&bs, Duration::from_secs(60), 40).await;
    let elapsed = started.elapsed();
    let rss_growth_mib = (peak_rss_kib().saturating_sub(rss_before)) as f64 / 1024.0;

    assert!(
        rss_growth_mib < (biggest / MB) as f64 / 2.0,
        "peak RSS grew {rss_growth_mib:.1} MiB for files of up to {} MiB",
        biggest / MB
    );
    let objects: HashMap<String, bgsync_reference_server::StoredObject> =
        server.objects().into_iter().map(|o| (o.key.clone(), o)).collect();
    let stats = server.storage_stats();
    let state = server.state().await;
    let photos = state["photos"].as_object().cloned().unwrap_or_default();
    for (id, photo, size) in &expected {
        let o = objects
            .get(id)
            .unwrap_or_else(|| panic!("upload {id} not stored"));
        assert_eq!(o.size, *size, "stored size of {id}");
        let rec = &photos[photo.as_str()];
        assert_eq!(
            rec["url"],
            Value::String(o.url.clone()),
            "{photo} points at its file"
        );
    }
    assert_eq!(objects.len(), total, "one object per upload, no strays");
    let rewrites: u64 = objects.values().map(|o| o.writes - 1).sum();
    assert!(
        rewrites <= stats.injected_commit_then_drops,
        "a file is stored again only after its response was lost ({rewrites} > {})",
        stats.injected_commit_then_drops
    );
    assert!(
        !state.to_string().contains("att_"),
        "no placeholder reached the server"
    );
    assert_applied_once(&server, total).await;
    assert!(
        stats.max_concurrent <= 10,
        "at most 10 in flight, saw {}",
        stats.max_concurrent
    );
    assert!(
        stats.max_concurrent >= 2,
        "uploads overlap, saw {}",
        stats.max_concurrent
    );
    assert!(stats.expired_rejections >= 1 && stats.sign_requests < total as u64 / 2);
    for (id, ..) in &expected {
        let u = bs.get_upload(id).await.unwrap();
        assert_eq!(u.state, UploadState::Done);
        assert!(
            !Path::new(&u.file_path).exists() || u.file_path.contains("photo-"),
            "copies are deleted"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    listener.abort();
    let progress = progress.load(std::sync::atomic::Ordering::Relaxed);
    let finished_files = finished_files.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        finished_files >= total,
        "a final progress event per file: {finished_files}"
    );
    assert!(
        progress > finished_files,
        "intermediate progress for big files: {progress}"
    );
    let bytes: u64 = expected.iter().map(|e| e.2).sum();
    println!(
        "uploads: {total} files ({big} over 50 MiB, {:.1} MiB in all) in {runs} drains, {:.1} s; \
         {uploaded} uploaded; storage saw {} puts, {} errors, {} drops, {} commit-then-drops, {} expired, \
         {} sign requests for {} URLs, max {} concurrent; {progress} progress events; \
         peak RSS +{rss_growth_mib:.1} MiB; lost 0, duplicated records 0",
        bytes as f64 / MB as f64,
        elapsed.as_secs_f64(),
        stats.puts,
        stats.injected_errors,
        stats.injected_drops,
        stats.injected_commit_then_drops,
        stats.expired_rejections,
        stats.sign_requests,
        stats.signed_urls,
        stats.max_concurrent,
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_deadline_stops_in_time_and_skips_files_that_cannot_finish() {
    let server = server(FaultConfig::default()).await;
    server.set_storage_faults(StorageFaults {
        bytes_per_sec: 4 * MB,
        ..Default::default()
    });
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = upload_config(&server);
    cfg.uploads.concurrency = 2;
    let bs = engine(&dir, cfg).await;
    // A first run measures the throughput on one 1 MiB file.
    let f = make_file(files.path(), "warm.bin", MB, 1);
    bs.enqueue_upload(new_upload(&f, true)).await.unwrap();
    let r = bs.drain(opts(Duration::from_secs(10))).await.unwrap();
    assert_eq!(r.uploaded, 1);

    // 12 MiB at ~4 MiB/s needs ~3 s: it must not start in a 1.5 s window, but the small
    // files must.
    let big = make_file(files.path(), "big.bin", 12 * MB, 2);
    let big_id = bs.enqueue_upload(new_upload(&big, true)).await.unwrap().id;
    for i in 0..6 {
        let f = make_file(files.path(), &format!("s{i}.bin"), 256 * 1024, 10 + i);
        bs.enqueue_upload(new_upload(&f, true)).await.unwrap();
    }
    let started = Instant::now();
    let r = bs.drain(opts(Duration::from_millis(1_500))).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_000),
        "drain took {took:?} for a 1.5 s budget"
    );
    assert_eq!(r.uploaded, 6, "{r:?}");
    assert_eq!(r.stop_reason, StopReason::Deadline, "{r:?}");
    let big_row = bs.get_upload(&big_id).await.unwrap();
    assert_eq!(
        (big_row.state, big_row.attempts),
        (UploadState::Pending, 0),
        "never started"
    );
    assert_eq!(r.uploads_remaining, 1);

    // With room, it goes.
    let r = bs.drain(opts(Duration::from_secs(20))).await.unwrap();
    assert_eq!(r.uploaded, 1);
    assert_eq!(server.objects().len(), 8);
    println!("deadline: 1.5 s budget returned in {took:?}; 12 MiB file deferred, 6 small files sent");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_mid_upload_returns_promptly_and_costs_no_attempt() {
    let server = server(FaultConfig::default()).await;
    server.set_storage_faults(StorageFaults {
        bytes_per_sec: MB,
        ..Default::default()
    });
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, upload_config(&server)).await;
    let f = make_file(files.path(), "slow.bin", 8 * MB, 3);
    let id = bs.enqueue_upload(new_upload(&f, false)).await.unwrap().id;
    let o = opts(Duration::from_secs(30));
    let cancel = o.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let r = bs.drain(o).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.stop_reason, StopReason::Cancelled);
    let u = bs.get_upload(&id).await.unwrap();
    assert_eq!((u.state, u.attempts), (UploadState::Pending, 0));
    server.set_storage_faults(StorageFaults::default());
    let r = bs.drain(opts(Duration::from_secs(30))).await.unwrap();
    assert_eq!(r.uploaded, 1);
    assert_eq!(server.objects()[0].size, 8 * MB);
    server.shutdown().await;
}

#[tokio::test]
async fn direct_uploads_carry_the_token_and_refresh_once() {
    let server = server_with_auth(
        FaultConfig::default(),
        AuthSetup {
            access_tokens: vec!["t1".into()],
            refresh_token: "r1".into(),
            ..Default::default()
        },
    )
    .await;
    let files = tempfile::tempdir().unwrap();
    let (_dir, bs) = engine_for(&server).await;
    bs.set_auth(background_sync_core::AuthConfig {
        access_token: Some("t1".into()),
        refresh_token: Some("r1".into()),
        refresh_url: Some("/auth/refresh".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let f = make_file(files.path(), &format!("d{i}.bin"), 10_000 + i, i);
        let mut u = new_upload(&f, true);
        u.placeholder = Some(format!("sig-{i}"));
        u.destination = UploadDestination::Direct {
            url: format!("/files/sig{i}"),
            method: "PUT".into(),
        };
        ids.push(bs.enqueue_upload(u).await.unwrap().id);
        bs.enqueue(mutation(
            "POST",
            "/visits",
            Some(json!({"signature": format!("sig-{i}")})),
            "visit",
            &format!("v{i}"),
        ))
        .await
        .unwrap();
    }
    server.revoke_tokens(); // a 401 storm: one refresh must fix every request
    let r = bs.drain(opts(Duration::from_secs(20))).await.unwrap();
    assert_eq!((r.uploaded, r.done), (3, 3), "{r:?}");
    assert_eq!(server.stats().refreshes, 1);
    let state = server.state().await;
    for i in 0..3u64 {
        let url = format!("{}/o/sig{i}", server.storage_url);
        assert!(state["visits"]
            .as_object()
            .unwrap()
            .values()
            .any(|v| v["signature"] == url));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn signed_urls_outside_storage_origins_are_refused_and_nothing_is_sent() {
    let server = server(FaultConfig::default()).await;
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No storageOrigins: the storage listener's origin is not allowed.
    let bs = engine(&dir, config(&server.base_url)).await;
    let f = make_file(files.path(), "x.bin", 1_000, 1);
    let q = bs.enqueue_upload(new_upload(&f, true)).await.unwrap();
    bs.enqueue(mutation(
        "POST",
        "/notes",
        Some(json!({"file": q.placeholder})),
        "note",
        "n1",
    ))
    .await
    .unwrap();
    let r = bs.drain(opts(Duration::from_secs(10))).await.unwrap();
    assert_eq!(r.upload_dead, 1, "{r:?}");
    let u = bs.get_upload(&q.id).await.unwrap();
    assert_eq!(u.state, UploadState::Dead);
    assert!(u.last_error.unwrap().contains("storageOrigins"));
    assert_eq!(server.storage_stats().puts, 0, "no byte left for a foreign host");
    assert_eq!(server.applied_log().await.len(), 0, "the note still waits");
    // Discarding the dead upload surfaces the note for review instead of blocking it forever.
    assert_eq!(bs.discard_upload(&q.id).await.unwrap(), 1);
    assert_eq!(bs.dead_letters(10, 0).await.unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_uploads_fail_with_typed_errors() {
    let server = server(FaultConfig::default()).await;
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = upload_config(&server);
    cfg.uploads.max_file_bytes = 1_000;
    let bs = engine(&dir, cfg).await;
    let ok = make_file(files.path(), "ok.bin", 10, 1);
    let kind = |e: background_sync_core::Error| e.kind();
    let mut u = new_upload(&files.path().join("missing.bin"), true);
    assert_eq!(
        kind(bs.enqueue_upload(u.clone()).await.unwrap_err()),
        "invalidInput"
    );
    u.file_path = "relative.bin".into();
    assert_eq!(kind(bs.enqueue_upload(u).await.unwrap_err()), "invalidInput");
    let big = make_file(files.path(), "big.bin", 2_000, 1);
    assert_eq!(
        kind(bs.enqueue_upload(new_upload(&big, true)).await.unwrap_err()),
        "limitExceeded"
    );
    let mut u = new_upload(&ok, true);
    u.destination = UploadDestination::Direct {
        url: "https://evil.example.com/steal".into(),
        method: "PUT".into(),
    };
    assert_eq!(kind(bs.enqueue_upload(u).await.unwrap_err()), "originNotAllowed");
    let mut u = new_upload(&ok, true);
    u.content_type = "image/jpeg\r\nX-Injected: 1".into();
    assert_eq!(kind(bs.enqueue_upload(u).await.unwrap_err()), "invalidInput");
    let mut u = new_upload(&ok, true);
    u.placeholder = Some("has space".into());
    assert_eq!(
        kind(bs.enqueue_upload(u.clone()).await.unwrap_err()),
        "invalidInput"
    );
    u.placeholder = Some("att-1".into());
    bs.enqueue_upload(u.clone()).await.unwrap();
    assert_eq!(kind(bs.enqueue_upload(u).await.unwrap_err()), "conflict");
    // A caller key makes a repeated enqueue a no-op (and leaves no second copy behind).
    let mut u = new_upload(&ok, true);
    u.idempotency_key = Some("photo-42".into());
    let a = bs.enqueue_upload(u.clone()).await.unwrap();
    let b = bs.enqueue_upload(u).await.unwrap();
    assert_eq!(a, b);
    let copies = std::fs::read_dir(dir.path().join("outbox.db-uploads"))
        .unwrap()
        .count();
    assert_eq!(copies, 2, "one copy per queued upload");
    // A file deleted before its upload (copy: false) is a dead letter, not a crash.
    let gone = make_file(files.path(), "gone.bin", 10, 2);
    let id = bs.enqueue_upload(new_upload(&gone, false)).await.unwrap().id;
    std::fs::remove_file(&gone).unwrap();
    bs.drain(opts(Duration::from_secs(10))).await.unwrap();
    let u = bs.get_upload(&id).await.unwrap();
    assert_eq!(u.state, UploadState::Dead);
    assert!(u.last_error.unwrap().contains("cannot read the file"));
    assert_eq!(bs.uploads(&[UploadState::Done], 10, 0).await.unwrap().len(), 2);
    server.shutdown().await;
}

/// A host that takes the whole file and never answers costs an attempt per try (the response
/// timeout), not the whole budget of every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_swallows_uploads_costs_attempts_not_budgets() {
    use tokio::io::AsyncReadExt;
    let swallow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = swallow.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = swallow.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&format!("http://{addr}"));
    cfg.request_timeout_ms = 300;
    cfg.max_attempts = 3;
    let bs = engine(&dir, cfg).await;
    let f = make_file(files.path(), "f.bin", 100_000, 9);
    let mut u = new_upload(&f, true);
    u.destination = UploadDestination::Direct {
        url: "/files/f".into(),
        method: "PUT".into(),
    };
    let id = bs.enqueue_upload(u).await.unwrap().id;
    let started = Instant::now();
    let r = bs.drain(opts(Duration::from_secs(10))).await.unwrap();
    let took = started.elapsed();
    let up = bs.get_upload(&id).await.unwrap();
    assert_eq!(up.state, UploadState::Dead, "{up:?}");
    assert_eq!(up.attempts, 3);
    assert!(up
        .last_error
        .unwrap()
        .contains("no response after the whole file was sent"));
    assert!(
        took < Duration::from_secs(5),
        "3 attempts of ~0.3 s, not the 10 s budget: {took:?}"
    );
    assert_eq!(r.upload_dead, 1);
    task.abort();
}

/// Signed URLs that live shorter than the drain's budget are used while valid, not re-signed in
/// a loop (the check is against the upload's expected duration, not the whole budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_signed_urls_are_used_not_resigned_forever() {
    let server = server(FaultConfig::default()).await;
    server.set_storage_faults(StorageFaults {
        sign_ttl_ms: 8_000,
        ..Default::default()
    });
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, upload_config(&server)).await;
    for i in 0..10 {
        let f = make_file(files.path(), &format!("s{i}.bin"), 50_000, i);
        bs.enqueue_upload(new_upload(&f, true)).await.unwrap();
    }
    let started = Instant::now();
    let r = bs.drain(opts(Duration::from_secs(60))).await.unwrap();
    assert_eq!((r.uploaded, r.stop_reason), (10, StopReason::Empty), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let stats = server.storage_stats();
    assert!(stats.sign_requests <= 2, "{stats:?}");
    server.shutdown().await;
}

//! One test per contract defect of issue 11, each written from the README's contract and seen
//! failing on the code before its fix (the issue's number is in each test's name).
//! They run against `tests/common/oracle.rs` (a contract-following server on 127.0.0.1) or a
//! raw TCP listener where a host must misbehave below HTTP.

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use background_sync_core::{
    AuthConfig, BackgroundSync, BatchConfig, CancellationToken, DrainOptions, NewUpload, OpenOptions,
    Priority, StopReason, SyncConfig, UploadDestination,
};
use common::{config, mutation};
use oracle::{Fate, Oracle};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "BGSYNC_CONTRACT_CHILD_DB";

fn opts(budget: Duration) -> DrainOptions {
    DrainOptions {
        budget,
        ..Default::default()
    }
}

async fn open(dir: &tempfile::TempDir, cfg: SyncConfig) -> BackgroundSync {
    let bs = BackgroundSync::open_with(dir.path().join("outbox.db"), OpenOptions::default().seed(3))
        .await
        .unwrap();
    bs.configure(cfg).await.unwrap();
    bs
}

fn with_mid(mut m: background_sync_core::NewMutation, mid: u64) -> background_sync_core::NewMutation {
    m.headers.insert("X-Mid".into(), mid.to_string());
    m
}

/// An upload of `f` read in place (no copy), normal priority.
fn in_place(f: &std::path::Path, content_type: &str, destination: UploadDestination) -> NewUpload {
    NewUpload {
        file_path: f.to_string_lossy().into_owned(),
        copy: false,
        content_type: content_type.into(),
        file_name: None,
        destination,
        priority: Priority::Normal,
        entity: None,
        placeholder: None,
        idempotency_key: None,
    }
}

fn direct(url: &str) -> UploadDestination {
    UploadDestination::Direct {
        url: url.into(),
        method: "PUT".into(),
    }
}

/// A TCP host that accepts and reads, and never answers.
async fn silent_host() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, h)
}

// ---- 1: the upload pass returns at its deadline with claimed uploads left --------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d01_upload_pass_returns_at_the_deadline_with_claimed_uploads_left() {
    let (addr, _h) = silent_host().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&format!("http://{addr}"));
    cfg.uploads.concurrency = 1;
    let bs = open(&dir, cfg).await;
    for i in 0..2 {
        let f = dir.path().join(format!("f{i}.bin"));
        std::fs::write(&f, vec![7u8; 1024]).unwrap();
        bs.enqueue_upload(in_place(
            &f,
            "application/octet-stream",
            direct(&format!("/files/f{i}")),
        ))
        .await
        .unwrap();
    }
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(8), bs.drain(opts(Duration::from_secs(1)))).await;
    let took = t.elapsed();
    assert!(r.is_ok(), "a 1 s drain had not returned after 8 s");
    assert!(
        took < Duration::from_millis(2_000),
        "a 1 s drain returned after {took:?}"
    );
    let ups = bs.uploads(&[], 10, 0).await.unwrap();
    assert!(
        ups.iter().all(|u| format!("{:?}", u.state) == "Pending"),
        "{ups:?}"
    );
    // And the lock is free again: the next drain runs.
    let r2 = bs.drain(opts(Duration::from_millis(300))).await.unwrap();
    assert_ne!(r2.stop_reason, StopReason::AlreadyRunning);
}

// ---- 2: no lower-priority row goes while a higher one is sendable ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d02_a_critical_entity_goes_before_low_rows_of_other_entities() {
    let oracle = Oracle::start(Box::new(|_| Fate::Ok)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&oracle.base_url);
    cfg.concurrency = 1;
    let bs = open(&dir, cfg).await;
    for i in 1..=4 {
        let mut m = with_mid(
            mutation("PUT", &format!("/b/{i}"), Some(json!({})), "b", &i.to_string()),
            100 + i,
        );
        m.priority = Priority::Low;
        bs.enqueue(m).await.unwrap();
    }
    for i in 1..=4 {
        let mut m = with_mid(mutation("PUT", "/a/1", Some(json!({"i": i})), "a", "1"), i);
        m.priority = Priority::Critical;
        bs.enqueue(m).await.unwrap();
    }
    bs.drain(opts(Duration::from_secs(5))).await.unwrap();
    let order: Vec<u64> = oracle.arrivals().iter().filter_map(|a| a.mid).collect();
    assert_eq!(
        order,
        vec![1, 2, 3, 4, 101, 102, 103, 104],
        "server saw {order:?}"
    );
}

// ---- 3: a live drain keeps its lease; a second drainer never sends the same key -------------

#[test]
fn contract_child() {
    let Ok(db) = std::env::var(CHILD_ENV) else { return };
    let budget: u64 = std::env::var("BGSYNC_CONTRACT_CHILD_BUDGET")
        .unwrap()
        .parse()
        .unwrap();
    let r = background_sync_core::entry::drain(&db, budget, "foreground", CancellationToken::new());
    println!("child: {:?}", r.map(|r| r.stop_reason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d03_a_second_process_cannot_take_a_live_drains_lease() {
    // The first request takes 4 s; the lease TTL is 1 s; a second process drains at 1.5 s.
    let oracle = Oracle::start(Box::new(|a| match a.mid {
        Some(1) => Fate::Slow(4_000),
        _ => Fate::Ok,
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&oracle.base_url);
    cfg.lease_ttl_ms = 1_000;
    cfg.request_timeout_ms = 5_000;
    let bs = open(&dir, cfg).await;
    bs.enqueue(with_mid(
        mutation("POST", "/visits", Some(json!({})), "v", "1"),
        1,
    ))
    .await
    .unwrap();
    let db = dir.path().join("outbox.db");
    let child = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1_500));
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "contract_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &db)
            .env("BGSYNC_CONTRACT_CHILD_BUDGET", "3000")
            .output()
            .unwrap()
    });
    let r = bs.drain(opts(Duration::from_secs(6))).await.unwrap();
    let out = child.join().unwrap();
    let arrivals: Vec<_> = oracle
        .arrivals()
        .into_iter()
        .filter(|a| a.mid == Some(1))
        .collect();
    assert_eq!(
        arrivals.len(),
        1,
        "the same mutation was sent {} times while the first request was in progress (child: {})",
        arrivals.len(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(r.done, 1, "{r:?}");
}

// ---- 4: temp ids are remembered after retention ---------------------------------------------

struct Offset(std::sync::atomic::AtomicI64);
impl background_sync_core::Clock for Offset {
    fn now_ms(&self) -> i64 {
        background_sync_core::SystemClock.now_ms() + self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d04_a_temp_id_is_rewritten_long_after_its_create_was_delivered() {
    let oracle = Oracle::start(Box::new(|_| Fate::Ok)).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Offset(Default::default()));
    let bs = BackgroundSync::open_with(
        dir.path().join("outbox.db"),
        OpenOptions::default().clock(clock.clone()),
    )
    .await
    .unwrap();
    let mut cfg = config(&oracle.base_url);
    cfg.retention_ms = 60_000;
    bs.configure(cfg).await.unwrap();
    let mut create = mutation("POST", "/visits", Some(json!({"site": 1})), "visit", "tmp-v1");
    create.temp_id = Some("tmp-v1".into());
    bs.enqueue(create).await.unwrap();
    bs.drain(opts(Duration::from_secs(3))).await.unwrap();
    // Two retention periods later (prune runs at the end of every drain).
    clock.0.store(120_000, std::sync::atomic::Ordering::SeqCst);
    bs.drain(opts(Duration::from_secs(1))).await.unwrap();
    bs.enqueue(mutation(
        "PATCH",
        "/visits/tmp-v1",
        Some(json!({"site": 2})),
        "visit",
        "tmp-v1",
    ))
    .await
    .unwrap();
    bs.drain(opts(Duration::from_secs(3))).await.unwrap();
    assert_eq!(oracle.violations(), Vec::<String>::new());
    let last = oracle.arrivals().last().cloned().unwrap();
    assert_eq!(last.path, "/visits/srv-1");
    assert_eq!(
        bs.resolve_temp_id("tmp-v1").await.unwrap().as_deref(),
        Some("srv-1")
    );
}

// ---- 5: enqueueMany with a reference before its create --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d05_enqueue_many_with_a_reference_before_its_create_waits_for_it() {
    let oracle = Oracle::start(Box::new(|_| Fate::Ok)).await;
    let dir = tempfile::tempdir().unwrap();
    let bs = open(&dir, config(&oracle.base_url)).await;
    let mut note = mutation("POST", "/notes", Some(json!({"visit": "tmp-v2"})), "note", "n1");
    note.priority = Priority::Critical;
    let mut create = mutation("POST", "/visits", Some(json!({})), "visit", "tmp-v2");
    create.temp_id = Some("tmp-v2".into());
    bs.enqueue_many(vec![note, create]).await.unwrap();
    bs.drain(opts(Duration::from_secs(3))).await.unwrap();
    assert_eq!(oracle.violations(), Vec::<String>::new());
    let a = oracle.arrivals();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].path, "/visits");
    assert_eq!(a[1].body.as_ref().unwrap()["visit"], "srv-1");
    // In its own entity it could never be sent (its create waits behind it): refused.
    let patch = mutation("PATCH", "/visits/tmp-v3", Some(json!({})), "visit", "tmp-v3");
    let mut create = mutation("POST", "/visits", Some(json!({})), "visit", "tmp-v3");
    create.temp_id = Some("tmp-v3".into());
    let err = bs.enqueue_many(vec![patch, create]).await.unwrap_err();
    assert_eq!(err.kind(), "invalidInput", "{err}");
}

// ---- 7: a sign request obeys cancellation and costs no attempt when cut ----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d07_a_hung_sign_request_is_cancelled_promptly_without_an_attempt() {
    let oracle = Oracle::start(Box::new(|a| {
        if a.path.starts_with("/uploads/sign") {
            Fate::BlackHole
        } else {
            Fate::Ok
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&oracle.base_url);
    cfg.request_timeout_ms = 5_000;
    let bs = open(&dir, cfg).await;
    let f = dir.path().join("photo.jpg");
    std::fs::write(&f, [1u8; 100]).unwrap();
    bs.enqueue_upload(in_place(&f, "image/jpeg", UploadDestination::Signed))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.cancel();
    });
    let t = Instant::now();
    let r = bs
        .drain(DrainOptions {
            budget: Duration::from_secs(10),
            cancel,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1_200),
        "returned after {:?}",
        t.elapsed()
    );
    assert_eq!(r.stop_reason, StopReason::Cancelled);
    let u = &bs.uploads(&[], 10, 0).await.unwrap()[0];
    assert_eq!(u.attempts, 0, "a cancelled sign request cost an attempt: {u:?}");
}

// ---- 10: batch items carry their headers -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d10_batch_items_carry_their_headers() {
    let oracle = Oracle::start(Box::new(|_| Fate::Ok)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&oracle.base_url);
    cfg.batch = Some(BatchConfig {
        path: "/batch".into(),
        max_items: 10,
    });
    let bs = open(&dir, cfg).await;
    let mut m = mutation("PATCH", "/visits/7", Some(json!({"x": 1})), "visit", "7");
    m.headers.insert("If-Match".into(), "\"v3\"".into());
    bs.enqueue(m).await.unwrap();
    let _ = bs.drain(opts(Duration::from_secs(2))).await.unwrap();
    let batch = oracle
        .arrivals()
        .into_iter()
        .find(|a| a.path == "/batch")
        .expect("a batch request");
    let item = &batch.body.unwrap()["items"][0];
    assert_eq!(item["headers"]["If-Match"], "\"v3\"", "batch item: {item}");
}

// ---- 11: clearAuth during a drain, and no refreshed tokens written back ----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d11_clear_auth_during_a_drain_takes_effect_and_is_not_overwritten() {
    let oracle = Oracle::start(Box::new(|a| {
        if a.path == "/auth/refresh" {
            Fate::Slow(600)
        } else if a.authorization.as_deref() == Some("Bearer old") {
            Fate::Reject(401)
        } else {
            Fate::Slow(150)
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&oracle.base_url);
    cfg.concurrency = 1;
    let bs = open(&dir, cfg).await;
    bs.set_auth(AuthConfig {
        access_token: Some("old".into()),
        refresh_token: Some("r-old".into()),
        refresh_url: Some("/auth/refresh".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..6 {
        bs.enqueue(with_mid(
            mutation(
                "PUT",
                &format!("/items/{i}"),
                Some(json!({})),
                "item",
                &i.to_string(),
            ),
            i,
        ))
        .await
        .unwrap();
    }
    let b2 = bs.clone();
    let cleared = Arc::new(Mutex::new(None));
    let c2 = cleared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await; // while the refresh is running
        b2.clear_auth().await.unwrap();
        *c2.lock().unwrap() = Some(Instant::now());
    });
    bs.drain(opts(Duration::from_secs(4))).await.unwrap();
    bs.drain(opts(Duration::from_secs(4))).await.unwrap();
    let at = cleared.lock().unwrap().expect("cleared");
    let late: Vec<_> = oracle
        .arrivals()
        .into_iter()
        .filter(|a| a.at > at + Duration::from_millis(50) && a.authorization.is_some())
        .map(|a| format!("{} {} {:?}", a.method, a.path, a.authorization))
        .collect();
    assert!(late.is_empty(), "sent with credentials after clearAuth: {late:?}");
}

// ---- 12: token characters, refreshed tokens, TLS failures ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d12_bad_tokens_are_refused_and_a_tls_failure_is_an_error_not_offline() {
    let dir = tempfile::tempdir().unwrap();
    // A plain-text host on the https port: the handshake fails.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let bs = open(&dir, config(&format!("https://{addr}"))).await;
    for bad in ["abc\u{1}def", "two words", "tab\there", ""] {
        let err = bs
            .set_auth(AuthConfig {
                access_token: Some(bad.into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalidInput", "{bad:?} accepted");
    }
    bs.enqueue(mutation("PUT", "/x/1", Some(json!({})), "x", "1"))
        .await
        .unwrap();
    let r = bs.drain(opts(Duration::from_secs(3))).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::Error, "{r:?}");
    assert!(r.last_error.as_deref().unwrap_or("").contains("TLS"), "{r:?}");
    let p = &bs.pending(10, 0).await.unwrap()[0];
    assert_eq!(p.attempts, 0, "{p:?}");
}

// ---- 13: batch.path must be a path -----------------------------------------------------------

#[tokio::test]
async fn d13_a_batch_path_with_a_space_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bs = BackgroundSync::open(dir.path().join("o.db")).await.unwrap();
    for bad in ["/batch x", "/batch?x=1", "/b#f"] {
        let mut cfg = config("http://127.0.0.1:9");
        cfg.batch = Some(BatchConfig {
            path: bad.into(),
            max_items: 10,
        });
        let err = bs.configure(cfg).await.unwrap_err();
        assert_eq!(err.kind(), "invalidInput", "{bad:?} accepted");
    }
}

// ---- 15: a nested null resets to that field's default ----------------------------------------

#[test]
fn d15_a_nested_null_resets_to_the_nested_default() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o.db");
    let db = db.to_str().unwrap();
    background_sync_core::entry::configure(
        db,
        json!({"baseUrl": "http://127.0.0.1:9", "uploads": {"concurrency": 2}, "backoff": {"maxMs": 5000}}),
    )
    .unwrap();
    background_sync_core::entry::configure(
        db,
        json!({"uploads": {"concurrency": null}, "backoff": {"maxMs": null}}),
    )
    .unwrap();
    let c = background_sync_core::entry::config(db).unwrap().unwrap();
    let d = SyncConfig::default();
    assert_eq!(c.uploads.concurrency, d.uploads.concurrency);
    assert_eq!(c.backoff.max_ms, d.backoff.max_ms);
}

// ---- the IETF draft's 409: a request with this key is still in progress ----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d16_a_409_in_progress_is_retried_with_the_same_key_and_applied_once() {
    // The first request outlives the client's timeout; the retry meets "in progress" (409).
    // 3 s of "in progress" against a 0.5 s timeout: a retry lands inside it even on a starved
    // machine (at 1.5 s, under `nice -n 19` beside a build, none did).
    let oracle = Oracle::start(Box::new(|_| Fate::Slow(3_000))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&oracle.base_url);
    cfg.request_timeout_ms = 500;
    cfg.max_attempts = 10;
    let bs = open(&dir, cfg).await;
    bs.enqueue(with_mid(
        mutation("POST", "/visits", Some(json!({})), "v", "1"),
        1,
    ))
    .await
    .unwrap();
    let r = bs.drain(opts(Duration::from_secs(6))).await.unwrap();
    let statuses: Vec<_> = oracle.arrivals().iter().map(|a| a.status).collect();
    assert!(
        statuses.contains(&Some(409)),
        "the scenario needs a 409: {statuses:?}"
    );
    assert!(
        bs.dead_letters(10, 0).await.unwrap().is_empty(),
        "409 made a dead letter"
    );
    assert_eq!(r.done, 1, "{r:?} {statuses:?}");
    assert_eq!(oracle.violations(), Vec::<String>::new());
}

// ---- the stop reason's error is the one reported -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d17_last_error_explains_the_stop_reason() {
    let oracle = Oracle::start(Box::new(|a| match a.mid {
        Some(1) => Fate::Reject(401),
        _ => Fate::SlowStatus(300, 503),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&oracle.base_url);
    cfg.concurrency = 2;
    let bs = open(&dir, cfg).await;
    bs.enqueue(with_mid(mutation("PUT", "/a/1", Some(json!({})), "a", "1"), 1))
        .await
        .unwrap();
    bs.enqueue(with_mid(mutation("PUT", "/b/1", Some(json!({})), "b", "1"), 2))
        .await
        .unwrap();
    let r = bs.drain(opts(Duration::from_secs(3))).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::AuthFailed, "{r:?}");
    let e = r.last_error.unwrap_or_default();
    assert!(
        !e.contains("503"),
        "authFailed reported with an unrelated error: {e}"
    );
}

// ---- 8: a file too big for the window is not restarted from byte 0 every run ----------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d08_a_file_too_big_for_the_window_waits_instead_of_restarting() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::AsyncReadExt;
    // A storage host that reads about 256 KiB/s and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let r2 = received.clone();
    let a2 = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            a2.fetch_add(1, Ordering::SeqCst);
            let r = r2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            r.fetch_add(n as u64, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(62)).await;
                        }
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let bs = open(&dir, config(&format!("http://{addr}"))).await;
    let f = dir.path().join("video.bin");
    std::fs::write(&f, vec![5u8; 24 * 1024 * 1024]).unwrap();
    bs.enqueue_upload(in_place(&f, "video/mp4", direct("/files/video")))
        .await
        .unwrap();
    let first = bs.drain(opts(Duration::from_secs(2))).await.unwrap();
    assert!(
        received.load(Ordering::SeqCst) > 0,
        "the first run starts the transfer: {first:?}"
    );
    let connections = accepted.load(Ordering::SeqCst);
    let second = bs.drain(opts(Duration::from_secs(2))).await.unwrap();
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        connections,
        "the second 2 s run restarted the 24 MiB upload from byte 0: {second:?}"
    );
    assert!(
        second
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("longer window"),
        "the report says why the file waits: {second:?}"
    );
    let u = &bs.uploads(&[], 10, 0).await.unwrap()[0];
    assert_eq!(u.attempts, 0, "cut by the deadline, not failed: {u:?}");
}

// ---- a backoff across a backward clock step ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d18_a_backoff_survives_the_clock_going_back_an_hour() {
    let storm = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let s2 = storm.clone();
    let oracle = Oracle::start(Box::new(move |_| {
        if s2.load(std::sync::atomic::Ordering::SeqCst) {
            Fate::Transient(503, Some(1))
        } else {
            Fate::Ok
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Offset(Default::default()));
    let bs = BackgroundSync::open_with(
        dir.path().join("outbox.db"),
        OpenOptions::default().clock(clock.clone()),
    )
    .await
    .unwrap();
    bs.configure(config(&oracle.base_url)).await.unwrap();
    bs.enqueue(mutation("PUT", "/items/1", Some(json!({})), "item", "1"))
        .await
        .unwrap();
    let r = bs.drain(opts(Duration::from_millis(500))).await.unwrap();
    assert_eq!(r.retried, 1, "{r:?}");
    storm.store(false, std::sync::atomic::Ordering::SeqCst);
    clock.0.store(-3_600_000, std::sync::atomic::Ordering::SeqCst);
    let r = bs.drain(opts(Duration::from_secs(4))).await.unwrap();
    assert_eq!(
        r.done, 1,
        "the row waits its Retry-After, not the hour the clock went back: {r:?}"
    );
}

// ---- 6: a resolver that never answers does not hold a headless drain past its budget ----------

const DNS_CHILD_ENV: &str = "BGSYNC_CONTRACT_DNS_CHILD_DB";

/// Runs inside a private network and mount namespace (see d06): a UDP socket on 127.0.0.1:53
/// that never answers is the only name server, so `getaddrinfo` hangs.
#[test]
fn contract_dns_child() {
    let Ok(db) = std::env::var(DNS_CHILD_ENV) else {
        return;
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind the silent resolver");
    background_sync_core::entry::configure(&db, json!({"baseUrl": "https://api.hung-dns.test"})).unwrap();
    background_sync_core::entry::enqueue(&db, mutation("PUT", "/x/1", Some(json!({})), "x", "1")).unwrap();
    let t = Instant::now();
    let r = background_sync_core::entry::drain(&db, 2_000, "foreground", CancellationToken::new());
    println!(
        "DNS-CHILD elapsed_ms={} result={:?}",
        t.elapsed().as_millis(),
        r.map(|r| r.stop_reason)
    );
    drop(sock);
}

#[test]
fn d06_a_hung_resolver_does_not_hold_the_headless_drain_past_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:5 attempts:3\n").unwrap();
    let script = r#"ip link set lo up && mount --bind "$RESOLV" /etc/resolv.conf && exec "$EXE" --exact contract_dns_child --nocapture --test-threads=1"#;
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--net", "sh", "-c", script])
        .env("RESOLV", &resolv)
        .env("EXE", std::env::current_exe().unwrap())
        .env(DNS_CHILD_ENV, dir.path().join("outbox.db"))
        .output();
    let Ok(out) = out else {
        println!("SKIPPED: no unshare here (needs root and util-linux)");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let Some(line) = text
        .lines()
        .find_map(|l| l.find("DNS-CHILD").map(|i| l[i..].to_string()))
    else {
        // No private namespace could be made (not root, or a sandbox that forbids it).
        println!(
            "SKIPPED: no private network namespace: {} {}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    };
    let ms: u64 = line
        .split("elapsed_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    println!("{line}");
    assert!(
        ms < 3_000,
        "a 2 s drain with a hung resolver returned after {ms} ms: {line}"
    );
}

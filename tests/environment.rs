//! Bad environment: the database locked by another process, a full disk, the wall clock
//! jumping backwards and forwards, an API that redirects elsewhere. Each: a typed error (no
//! panic), nothing acknowledged is lost, and the engine works again once the condition clears.

mod common;

use background_sync_core::{
    AuthConfig, BackgroundSync, BatchConfig, Clock, DrainOptions, MutationState, OpenOptions, StopReason,
};
use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn opts(budget: Duration) -> DrainOptions {
    DrainOptions {
        budget,
        ..Default::default()
    }
}

/// Another process (python3's sqlite3) holds a write lock on the outbox for `secs` seconds.
fn lock_from_another_process(db: &std::path::Path, secs: f64) -> std::process::Child {
    let script = format!(
        "import sqlite3,sys,time\nc=sqlite3.connect({db:?}, isolation_level=None, timeout=30)\n\
         c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep({secs})\nc.execute('COMMIT')\n",
        db = db.to_str().unwrap()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_locked_by_another_process() {
    let server = server(FaultConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let bs = engine(&dir, config(&server.base_url)).await;
    let first = bs
        .enqueue(mutation("PUT", "/visits/1", Some(json!({"v": 1})), "visit", "1"))
        .await
        .unwrap();

    // A short lock (under the 5 s busy timeout): the enqueue waits and succeeds.
    let mut child = lock_from_another_process(&db, 1.0);
    let t = Instant::now();
    bs.enqueue(mutation("PUT", "/visits/2", Some(json!({"v": 2})), "visit", "2"))
        .await
        .unwrap();
    let short_wait = t.elapsed();
    assert!(
        short_wait >= Duration::from_millis(700),
        "it waited for the lock: {short_wait:?}"
    );
    child.wait().unwrap();

    // A long lock: a typed storage error after the busy timeout; a drain started while the
    // lock is still held waits for it (within the busy timeout) and then delivers.
    let mut child = lock_from_another_process(&db, 7.0);
    let t = Instant::now();
    let e = bs
        .enqueue(mutation("PUT", "/visits/3", Some(json!({"v": 3})), "visit", "3"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "storage", "{e}");
    assert!(e.to_string().contains("locked"), "{e}");
    let waited = t.elapsed();
    assert!(
        child.try_wait().unwrap().is_none(),
        "still locked when the drain starts"
    );
    let r = bs.drain(opts(Duration::from_secs(10))).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (2, StopReason::Empty), "{r:?}");
    child.wait().unwrap();

    // The lock is gone: the refused mutation can be queued again and goes out.
    let again = bs
        .enqueue(mutation("PUT", "/visits/3", Some(json!({"v": 3})), "visit", "3"))
        .await
        .unwrap();
    let r = bs.drain(opts(Duration::from_secs(10))).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (1, StopReason::Empty), "{r:?}");
    assert_applied_once(&server, 3).await;
    assert!(
        bs.get(&first.id).await.is_err() && bs.get(&again.id).await.is_err(),
        "delivered rows left the queue"
    );
    println!("locked db: a 1 s lock -> the enqueue waited {short_wait:?} and succeeded; a 7 s lock -> storage error after {waited:?}, a drain waited for it; 3/3 delivered once");
    server.shutdown().await;
}

/// Three queued visits for a server that answers each request after 1 s: requests are in
/// flight long enough for another process to take the lock under them.
async fn three_visits_for_a_slow_server() -> (RunningServer, tempfile::TempDir, BackgroundSync) {
    let server = server(FaultConfig {
        delay_ms: 1_000,
        ..Default::default()
    })
    .await;
    let (dir, bs) = engine_for(&server).await;
    enqueue_visits(&bs, 0..3).await;
    (server, dir, bs)
}

/// Drains until the queue is empty: a cut drain's lease is given back once the lock is gone (or
/// expires), so the first drains after it may stop `alreadyRunning`. Bounded: 30 s.
async fn drain_until_empty(bs: &BackgroundSync) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = bs.drain(opts(Duration::from_secs(10))).await.unwrap();
        if r.stop_reason == StopReason::Empty {
            return;
        }
        assert!(Instant::now() < until, "never drained: {r:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// README: an enqueue waits up to 5 s for a lock another process holds, then fails typed. Calls
/// that queue behind one already waiting for the same lock get their answer with it, instead of
/// starting a wait of their own (they used to wait up to 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_queued_behind_a_lock_wait_no_longer_than_the_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let bs = engine(&dir, config("http://127.0.0.1:9")).await;
    let mut child = lock_from_another_process(&db, 12.0);
    let calls: Vec<_> = (0..4u64)
        .map(|i| {
            let bs = bs.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1_000 * i)).await;
                let t = Instant::now();
                let r = bs
                    .enqueue(mutation(
                        "PUT",
                        &format!("/visits/{i}"),
                        Some(json!({"v": i})),
                        "visit",
                        &i.to_string(),
                    ))
                    .await;
                (i, t.elapsed(), r)
            })
        })
        .collect();
    for c in calls {
        let (i, waited, r) = c.await.unwrap();
        let e = r.expect_err("the lock outlasts every call's wait");
        assert!(
            e.kind() == "storage" && e.to_string().contains("locked"),
            "call {i}: {e}"
        );
        assert!(
            waited <= Duration::from_millis(6_000),
            "call {i}, started {i} s into the lock, waited {waited:?}"
        );
        println!("call {i}: locked after {waited:?}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    enqueue_visits(&bs, 0..1).await;
}

/// The budget bounds a drain whatever it waits for, SQLite's busy wait included: a lock taken
/// by another process while requests are in flight (their outcomes cannot be written) does not
/// keep the drain past its budget + 1 s; nothing acknowledged is lost and the next drains
/// deliver every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_mid_drain_does_not_stretch_the_budget() {
    let (server, dir, bs) = three_visits_for_a_slow_server().await;
    let db = dir.path().join("outbox.db");
    let bs2 = bs.clone();
    let t = Instant::now();
    let drain = tokio::spawn(async move { bs2.drain(opts(Duration::from_secs(2))).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut child = lock_from_another_process(&db, 6.0);
    let outcome = drain.await.unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(3_000),
        "a 2 s drain returned after {took:?}: {outcome:?}"
    );
    match &outcome {
        Ok(r) => assert!(
            r.stop_reason == StopReason::Error
                && r.last_error.as_deref().unwrap_or_default().contains("locked"),
            "{r:?}"
        ),
        Err(e) => assert!(e.kind() == "storage" && e.to_string().contains("locked"), "{e}"),
    }
    child.wait().unwrap();
    drain_until_empty(&bs).await;
    assert_applied_once(&server, 3).await;
    println!("a 6 s lock taken mid-drain: a 2 s drain returned after {took:?}; the next drains delivered 3, applied once");
    server.shutdown().await;
}

/// The journal mode a new connection gets when it asks to leave WAL mode: "delete" only if no
/// other connection has the file open, "wal" (or a busy error) otherwise.
async fn alone_on(db: &std::path::Path) -> String {
    use sqlx::Connection;
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::ZERO);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let mode = sqlx::query_scalar::<_, String>("PRAGMA journal_mode = DELETE")
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| e.to_string());
    conn.close().await.unwrap();
    mode
}

/// `close` lets go of the file: when it returns no connection is left, so the app may move,
/// delete or encrypt the outbox. sqlx's pool close alone could return with a connection still
/// open (launchbadge/sqlx#3217).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_lets_go_of_the_file() {
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let bs = engine(&dir, config("http://127.0.0.1:9")).await;
        // Several connections busy at once, as an app's concurrent calls make them.
        let calls = (0..6).map(|i| {
            let bs = bs.clone();
            tokio::spawn(async move {
                enqueue_visits(&bs, i..i + 1).await;
                bs.status().await.unwrap();
            })
        });
        for c in calls.collect::<Vec<_>>() {
            c.await.unwrap();
        }
        bs.close().await;
        // SQLite lets a connection leave WAL mode only when it is the last one on the file.
        let mode = alone_on(&dir.path().join("outbox.db")).await;
        assert_eq!(mode, "delete", "round {round}: a connection outlived close");
    }
}

/// A cancellation bounds a drain whatever it waits for (README: "within 0.7 s of a
/// cancellation"), SQLite's busy wait included: the iOS expiration handler cancels while another
/// process holds the database, and the drain must answer before the system's grace ends. Nothing
/// acknowledged is lost; the next drains deliver every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_under_a_lock_returns_within_its_bound() {
    let (server, dir, bs) = three_visits_for_a_slow_server().await;
    let db = dir.path().join("outbox.db");
    let cancel = background_sync_core::CancellationToken::new();
    let bs2 = bs.clone();
    let run_opts = DrainOptions {
        budget: Duration::from_secs(20),
        cancel: cancel.clone(),
        ..Default::default()
    };
    let drain = tokio::spawn(async move { bs2.drain(run_opts).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut child = lock_from_another_process(&db, 6.0);
    // The requests answer at ~1 s; their outcomes then wait for the lock. Cancel after that.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let t = Instant::now();
    cancel.cancel();
    let outcome = drain.await.unwrap();
    let took = t.elapsed();
    assert!(
        took <= Duration::from_millis(700),
        "a drain cancelled under a lock returned {took:?} after the cancellation: {outcome:?}"
    );
    match &outcome {
        Ok(r) => assert!(
            matches!(r.stop_reason, StopReason::Cancelled | StopReason::Error),
            "{r:?}"
        ),
        Err(e) => assert!(e.kind() == "storage" && e.to_string().contains("locked"), "{e}"),
    }
    child.wait().unwrap();
    drain_until_empty(&bs).await;
    assert_applied_once(&server, 3).await;
    println!("a drain cancelled under a 6 s lock returned {took:?} after the cancellation; the next drains delivered 3, applied once");
    server.shutdown().await;
}

/// The drain side of a lock held by another process: a drain that starts under a long lock
/// fails typed (nothing sent); a lock taken while requests are in flight (the server has
/// applied them, the engine cannot record it) stops the drain with a visible storage error,
/// keeps the rows, and the next drain resends them under the same key (applied once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_while_another_process_holds_the_lock() {
    let server = server(FaultConfig {
        delay_ms: 1_500,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let bs = engine(&dir, config(&server.base_url)).await;
    let mut acked = Vec::new();
    for i in 0..3 {
        acked.push(
            bs.enqueue(mutation(
                "PUT",
                &format!("/v/{i}"),
                Some(json!({"v": i})),
                "v",
                &i.to_string(),
            ))
            .await
            .unwrap(),
        );
    }

    // (a) The drain starts under a 7 s lock: a typed storage error within its 3 s budget + 1 s
    // (the contract's bound holds for SQLite's busy wait too), nothing sent.
    let mut child = lock_from_another_process(&db, 7.0);
    let t = Instant::now();
    let e = bs.drain(opts(Duration::from_secs(3))).await.unwrap_err();
    let under_lock = t.elapsed();
    assert_eq!(e.kind(), "storage", "{e}");
    assert!(e.to_string().contains("locked"), "{e}");
    assert!(
        under_lock < Duration::from_millis(4_000),
        "returned within budget + 1 s, while the lock was held: {under_lock:?}"
    );
    assert_eq!(server.stats().mutating_requests, 0, "nothing sent");
    child.wait().unwrap();
    for a in &acked {
        assert_eq!(bs.get(&a.id).await.unwrap().state, MutationState::Pending);
    }

    // (b) The lock is taken while the three requests are in flight (the server holds each for
    // 1.5 s, then applies it); the engine cannot record the results for longer than its busy
    // timeout.
    let bs2 = bs.clone();
    let drain = tokio::spawn(async move { bs2.drain(opts(Duration::from_secs(30))).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut child = lock_from_another_process(&db, 7.5);
    let outcome = drain.await.unwrap();
    let described = match &outcome {
        Ok(r) => {
            assert_eq!(r.stop_reason, StopReason::Error, "{r:?}");
            assert_eq!(r.done, 0, "{r:?}");
            let err = r.last_error.clone().unwrap_or_default();
            assert!(
                err.starts_with("storage error") && err.contains("locked"),
                "{r:?}"
            );
            format!("Ok(stopReason=error, lastError={err:?})")
        }
        Err(e) => {
            assert_eq!(e.kind(), "storage", "{e}");
            format!("Err({}: {e})", e.kind())
        }
    };
    child.wait().unwrap();
    // Nothing acknowledged is lost: the rows are still queued (left in flight by the failed
    // record, or back to pending).
    let mut states = Vec::new();
    for a in &acked {
        let m = bs.get(&a.id).await.unwrap();
        assert!(
            matches!(m.state, MutationState::InFlight | MutationState::Pending),
            "{m:?}"
        );
        states.push(format!("{:?}", m.state));
    }
    // The lock is gone: the next drain recovers them and the server's idempotency absorbs the
    // resend.
    let r = bs.drain(opts(Duration::from_secs(30))).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (3, StopReason::Empty), "{r:?}");
    let st = bs.status().await.unwrap();
    assert_eq!((st.pending, st.in_flight, st.dead), (0, 0, 0), "{st:?}");
    assert_applied_once(&server, 3).await;
    let replayed = server.stats().replayed;
    assert!(replayed <= 3, "{replayed}");
    println!(
        "drain under a 7 s lock (budget 3 s): {} error after {under_lock:?}, 0 sent; lock taken mid-request: {described}, rows left {states:?}, next drain delivered 3 (server replayed {replayed} under the same key, applied once)",
        e.kind()
    );
    server.shutdown().await;
}

/// Fill a small file system until enqueues fail. Returns the acknowledged (id, key) pairs.
async fn fill_until_full(bs: &BackgroundSync) -> (Vec<(String, String)>, background_sync_core::Error) {
    let mut acked = Vec::new();
    let pad = "x".repeat(4_000);
    for i in 0..100_000 {
        match bs
            .enqueue(mutation(
                "PUT",
                &format!("/notes/{i}"),
                Some(json!({"pad": pad, "i": i})),
                "note",
                &i.to_string(),
            ))
            .await
        {
            Ok(e) => acked.push((e.id, e.idempotency_key)),
            Err(e) => return (acked, e),
        }
    }
    panic!("the disk never filled");
}

/// A drain on the full disk: whatever it manages, the outcome is typed (an `Err` of a known
/// kind, or a report), never a panic. Described for the log.
async fn drain_on_full_disk(bs: &BackgroundSync) -> String {
    match bs.drain(opts(Duration::from_secs(5))).await {
        Ok(r) => format!(
            "Ok(done={}, stopReason={:?}, lastError={:?})",
            r.done, r.stop_reason, r.last_error
        ),
        Err(e) => format!("Err({}: {e})", e.kind()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk() {
    if std::env::var("BGSYNC_ENV_CHILD").as_deref() == Ok("fsize") {
        return fsize_child().await;
    }
    let server = server(FaultConfig::default()).await;
    let mnt = tempfile::tempdir().unwrap();
    // BGSYNC_ENV_NO_MOUNT=1 forces the fallback (what runs where mounting is not allowed).
    let mounted = std::env::var("BGSYNC_ENV_NO_MOUNT").is_err()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(mnt.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let (acked, err, full_drain, method) = if mounted {
        let db = mnt.path().join("outbox.db");
        let bs = BackgroundSync::open(&db).await.unwrap();
        bs.configure(config(&server.base_url)).await.unwrap();
        let (acked, err) = fill_until_full(&bs).await;
        let full_drain = drain_on_full_disk(&bs).await;
        bs.close().await;
        (
            acked,
            err.kind().to_string() + ": " + &err.to_string(),
            full_drain,
            "tmpfs of 3 MiB",
        )
    } else {
        // No mount allowed: a child process whose file size limit (RLIMIT_FSIZE) is 3 MiB.
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "full_disk", "--nocapture", "--test-threads=1"])
            .env("BGSYNC_ENV_CHILD", "fsize")
            .env("BGSYNC_ENV_DIR", mnt.path())
            .env("BGSYNC_ENV_URL", &server.base_url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.split_once("FSIZE-RESULT ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("child said: {text} {}", String::from_utf8_lossy(&out.stderr)));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let acked = v["acked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x[0].as_str().unwrap().to_string(),
                    x[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (
            acked,
            v["error"].as_str().unwrap().to_string(),
            v["drain"].as_str().unwrap().to_string(),
            "RLIMIT_FSIZE of 3 MiB",
        )
    };
    assert!(err.starts_with("storage:"), "typed error: {err}");
    assert!(acked.len() > 50, "some enqueues succeeded before the disk filled");
    assert!(
        full_drain.starts_with("Err(storage:") || full_drain.starts_with("Ok("),
        "a drain on the full disk fails typed: {full_drain}"
    );

    // Space again (a bigger file system / no limit): every acknowledged row is there (or was
    // delivered by the drain on the full disk), and the queue works and drains.
    let db = mnt.path().join("outbox.db");
    if mounted {
        Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(mnt.path())
            .status()
            .unwrap();
    }
    let bs = BackgroundSync::open(&db).await.unwrap();
    let applied: std::collections::HashSet<String> = server
        .applied_log()
        .await
        .into_iter()
        .map(|e| e.idempotency_key)
        .collect();
    let mut already_applied = 0;
    for (id, key) in &acked {
        match bs.get(id).await {
            Ok(m) => assert!(
                matches!(m.state, MutationState::Pending | MutationState::InFlight),
                "acknowledged {id} kept: {m:?}"
            ),
            Err(e) => {
                assert_eq!(e.kind(), "notFound", "{e}");
                assert!(
                    applied.contains(key),
                    "acknowledged {id} gone but never delivered"
                );
                already_applied += 1;
            }
        }
    }
    bs.enqueue(mutation(
        "PUT",
        "/notes/after",
        Some(json!({"ok": true})),
        "note",
        "after",
    ))
    .await
    .unwrap();
    for _ in 0..20 {
        bs.drain(opts(Duration::from_secs(20))).await.unwrap();
        if bs.status().await.unwrap().pending == 0 {
            break;
        }
    }
    let st = bs.status().await.unwrap();
    assert_eq!((st.pending, st.in_flight, st.dead), (0, 0, 0), "{st:?}");
    assert_applied_once(&server, acked.len() + 1).await;
    println!(
        "full disk ({method}): {} acknowledged before '{err}'; a drain on the full disk: {full_drain} ({already_applied} recorded as delivered); all kept and each delivered once after space returned (server replays: {})",
        acked.len(),
        server.stats().replayed
    );
    bs.close().await;
    if mounted {
        let _ = Command::new("umount").arg(mnt.path()).status();
    }
    server.shutdown().await;
}

async fn fsize_child() {
    let dir = std::path::PathBuf::from(std::env::var("BGSYNC_ENV_DIR").unwrap());
    let url = std::env::var("BGSYNC_ENV_URL").unwrap();
    let bs = BackgroundSync::open(dir.join("outbox.db")).await.unwrap();
    bs.configure(config(&url)).await.unwrap();
    unsafe {
        // Exceeding the limit must be an error (EFBIG), not a signal.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 3 * 1024 * 1024,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
    }
    let (acked, e) = fill_until_full(&bs).await;
    let drain = drain_on_full_disk(&bs).await;
    let line = json!({"acked": acked, "error": format!("{}: {e}", e.kind()), "drain": drain});
    let mut out = std::io::stdout();
    writeln!(out, "FSIZE-RESULT {line}").unwrap();
    out.flush().unwrap();
}

/// A wall clock the test moves.
struct TestClock(AtomicI64);
impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumps_backwards_and_forwards() {
    const HOUR: i64 = 3_600_000;
    let server = server(FaultConfig {
        fail_next: vec![503, 503],
        retry_after_secs: Some(3_600),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let clock = Arc::new(TestClock(AtomicI64::new(start)));
    let bs = BackgroundSync::open_with(
        dir.path().join("outbox.db"),
        OpenOptions::default().clock(clock.clone()).seed(3),
    )
    .await
    .unwrap();
    bs.configure(config(&server.base_url)).await.unwrap();
    let a = bs
        .enqueue(mutation("PUT", "/visits/a", Some(json!({"v": 1})), "visit", "a"))
        .await
        .unwrap();
    let b = bs
        .enqueue(mutation("PUT", "/visits/b", Some(json!({"v": 1})), "visit", "b"))
        .await
        .unwrap();
    // Both get a 503 with Retry-After: 1 h.
    let r = bs.drain(opts(Duration::from_secs(2))).await.unwrap();
    assert_eq!((r.retried, r.stop_reason), (2, StopReason::Waiting), "{r:?}");
    let due = bs.get(&a.id).await.unwrap().next_attempt_at;
    assert!(due >= start + HOUR, "backoff honours Retry-After");

    // Backwards by 1 h: still waiting (the wait is plausible), nothing lost, nothing sent.
    clock.0.store(start - HOUR, Ordering::SeqCst);
    let r = bs.drain(opts(Duration::from_secs(2))).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (0, StopReason::Waiting), "{r:?}");
    // Backwards by 3 days: the backoff restarts from now with the delay it was given (the
    // server's Retry-After), instead of stranding the rows for days.
    clock.0.store(start - 72 * HOUR, Ordering::SeqCst);
    let r = bs.drain(opts(Duration::from_secs(2))).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (0, StopReason::Waiting), "{r:?}");
    let due = bs.get(&a.id).await.unwrap().next_attempt_at;
    assert!(
        due <= start - 71 * HOUR + 60_000,
        "waits the scheduled hour, not days"
    );
    clock.0.store(start - 71 * HOUR + 60_000, Ordering::SeqCst);
    let r = bs.drain(opts(Duration::from_secs(5))).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (2, StopReason::Empty), "{r:?}");

    // Forwards by 30 days: newly queued rows go at once, nothing is dead-lettered for age.
    clock.0.store(start + 30 * 24 * HOUR, Ordering::SeqCst);
    let c = bs
        .enqueue(mutation("PUT", "/visits/c", Some(json!({"v": 2})), "visit", "c"))
        .await
        .unwrap();
    let r = bs.drain(opts(Duration::from_secs(5))).await.unwrap();
    assert_eq!((r.done, r.dead), (1, 0), "{r:?}");
    // And back to now: the delivered history is not resent.
    clock.0.store(start, Ordering::SeqCst);
    let r = bs.drain(opts(Duration::from_secs(2))).await.unwrap();
    assert_eq!((r.sent, r.stop_reason), (0, StopReason::Empty), "{r:?}");
    assert_applied_once(&server, 3).await;
    for id in [&a.id, &b.id, &c.id] {
        assert!(bs.get(id).await.is_err(), "{id} delivered");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_to_another_origin() {
    // The "other origin" counts every connection it gets: it must stay at 0.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_addr = other.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let other_task = tokio::spawn(async move {
        while let Ok((_s, _)) = other.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The API redirects there: `/r/<status>` with that status, the batch endpoint with a 307,
    // the token refresh endpoint with a 307; `/needs-auth` answers 401 (to make the engine
    // refresh its token).
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api.local_addr().unwrap();
    let api_task = tokio::spawn(async move {
        while let Ok((mut s, _)) = api.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                let (status, reason) = if let Some(code) = path.strip_prefix("/r/") {
                    (code.parse::<u16>().unwrap_or(307), "Redirect")
                } else if path == "/needs-auth" {
                    (401, "Unauthorized")
                } else {
                    (307, "Temporary Redirect")
                };
                let resp = format!(
                    "HTTP/1.1 {status} {reason}\r\nLocation: http://{other_addr}/steal{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let base = format!("http://{api_addr}");

    // Single requests: every redirect status is a visible dead letter with that status.
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config(&base)).await;
    let codes = [301u16, 302, 303, 307, 308];
    let mut ids = Vec::new();
    for code in codes {
        let m = bs
            .enqueue(mutation(
                "POST",
                &format!("/r/{code}"),
                Some(json!({"secret": "field data"})),
                "visit",
                &code.to_string(),
            ))
            .await
            .unwrap();
        ids.push((code, m.id));
    }
    let r = bs.drain(opts(Duration::from_secs(5))).await.unwrap();
    assert_eq!((r.dead, r.done), (codes.len() as u32, 0), "{r:?}");
    for (code, id) in &ids {
        let dead = bs.get(id).await.unwrap();
        assert_eq!(dead.state, MutationState::Dead);
        assert_eq!(dead.last_status, Some(*code), "{dead:?}");
        assert_eq!(dead.attempts, 1, "not retried: {dead:?}");
    }

    // Through the batch endpoint: the batch answered 307 is not followed either. A batch-level
    // 3xx/4xx is the endpoint's fault, not the mutations', so the engine retries it (recorded
    // as a synthetic 503 whose error names the real status) and buries the rows only at the
    // retry limit.
    let dir_b = tempfile::tempdir().unwrap();
    let mut cfg = config(&base);
    cfg.max_attempts = 3;
    cfg.batch = Some(BatchConfig {
        path: "/batch".into(),
        max_items: 10,
    });
    let bs_b = engine(&dir_b, cfg).await;
    for i in 0..3 {
        bs_b.enqueue(mutation(
            "PUT",
            &format!("/v/{i}"),
            Some(json!({"i": i})),
            "v",
            &i.to_string(),
        ))
        .await
        .unwrap();
    }
    let rb = bs_b.drain(opts(Duration::from_secs(5))).await.unwrap();
    assert_eq!(rb.done, 0, "{rb:?}");
    let dead_b = bs_b.dead_letters(10, 0).await.unwrap();
    assert_eq!(dead_b.len(), 3, "{rb:?}");
    for m in &dead_b {
        assert_eq!(m.attempts, 3, "{m:?}");
        let err = m.last_error.as_deref().unwrap_or_default();
        assert!(err.contains("batch endpoint answered HTTP 307"), "{m:?}");
    }

    // The token refresh after a 401: the refresh endpoint's 307 is not followed (the refresh
    // token would go with it); the drain stops with an auth failure, the row stays queued.
    let dir_a = tempfile::tempdir().unwrap();
    let bs_a = engine(&dir_a, config(&base)).await;
    bs_a.set_auth(AuthConfig {
        access_token: Some("expired".into()),
        refresh_token: Some("refresh-secret".into()),
        refresh_url: Some("/auth/refresh".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let ma = bs_a
        .enqueue(mutation("PUT", "/needs-auth", Some(json!({"x": 1})), "v", "a"))
        .await
        .unwrap();
    let ra = bs_a.drain(opts(Duration::from_secs(5))).await.unwrap();
    assert_eq!(ra.stop_reason, StopReason::AuthFailed, "{ra:?}");
    assert!(ra.last_error.is_some(), "{ra:?}");
    assert_eq!(bs_a.get(&ma.id).await.unwrap().state, MutationState::Pending);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the redirect target"
    );
    println!(
        "redirects: {codes:?} -> {} dead letters with their status, batch 307 -> {} dead after 3 attempts, refresh 307 -> {:?} ({:?}); 0 connections to the other origin",
        r.dead,
        dead_b.len(),
        ra.stop_reason,
        ra.last_error
    );
    other_task.abort();
    api_task.abort();
}

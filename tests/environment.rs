//! Bad environment: the database locked by another process, a full disk, the wall clock
//! jumping backwards and forwards, an API that redirects elsewhere. Each: a typed error (no
//! panic), nothing acknowledged is lost, and the engine works again once the condition clears.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tauri_plugin_background_sync::{
    BackgroundSync, Clock, DrainOptions, MutationState, OpenOptions, StopReason,
};
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

/// Fill a small file system until enqueues fail, then free space.
async fn fill_until_full(bs: &BackgroundSync) -> (Vec<String>, tauri_plugin_background_sync::Error) {
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
            Ok(e) => acked.push(e.id),
            Err(e) => return (acked, e),
        }
    }
    panic!("the disk never filled");
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
    let (acked, err, method) = if mounted {
        let db = mnt.path().join("outbox.db");
        let bs = BackgroundSync::open(&db).await.unwrap();
        bs.configure(config(&server.base_url)).await.unwrap();
        let (acked, err) = fill_until_full(&bs).await;
        bs.close().await;
        (
            acked,
            err.kind().to_string() + ": " + &err.to_string(),
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
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        (
            acked,
            v["error"].as_str().unwrap().to_string(),
            "RLIMIT_FSIZE of 3 MiB",
        )
    };
    assert!(err.starts_with("storage:"), "typed error: {err}");
    assert!(acked.len() > 50, "some enqueues succeeded before the disk filled");

    // Space again (a bigger file system / no limit): every acknowledged row is there, and
    // the queue works and drains.
    let db = mnt.path().join("outbox.db");
    if mounted {
        Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(mnt.path())
            .status()
            .unwrap();
    }
    let bs = BackgroundSync::open(&db).await.unwrap();
    for id in &acked {
        assert_eq!(
            bs.get(id).await.unwrap().state,
            MutationState::Pending,
            "acknowledged {id} kept"
        );
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
    let mut delivered = 0;
    for _ in 0..20 {
        delivered += bs.drain(opts(Duration::from_secs(20))).await.unwrap().done;
        if bs.status().await.unwrap().pending == 0 {
            break;
        }
    }
    assert_eq!(delivered as usize, acked.len() + 1);
    assert_applied_once(&server, acked.len() + 1).await;
    println!(
        "full disk ({method}): {} acknowledged before '{err}'; all kept and delivered after",
        acked.len()
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
    let line = json!({"acked": acked, "error": format!("{}: {e}", e.kind())});
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
    // Backwards by 3 days: the stored time is implausibly far ahead, so it counts as due
    // instead of stranding the rows for days.
    clock.0.store(start - 72 * HOUR, Ordering::SeqCst);
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

#[tokio::test]
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
    // The API answers every request with a redirect there.
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api.local_addr().unwrap();
    let api_task = tokio::spawn(async move {
        while let Ok((mut s, _)) = api.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{other_addr}/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config(&format!("http://{api_addr}"))).await;
    let m = bs
        .enqueue(mutation(
            "POST",
            "/visits",
            Some(json!({"secret": "field data"})),
            "visit",
            "v",
        ))
        .await
        .unwrap();
    let r = bs.drain(opts(Duration::from_secs(5))).await.unwrap();
    assert_eq!(r.dead, 1, "{r:?}");
    let dead = bs.get(&m.id).await.unwrap();
    assert_eq!(dead.state, MutationState::Dead);
    assert_eq!(dead.last_status, Some(307));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the redirect target"
    );
    other_task.abort();
    api_task.abort();
}

//! At-rest encryption with SQLCipher (`--features sqlcipher`): the file holds no plaintext,
//! a wrong key is a typed error that touches nothing, the right key reads and drains.
#![cfg(any(feature = "sqlcipher", feature = "sqlcipher-vendored"))]

mod common;

use background_sync_core::{entry, BackgroundSync, CredentialStorage, DrainOptions, OpenOptions, SecretKey};
use common::*;
use serde_json::json;

const SECRET: &str = "field-note-that-must-not-leak-7f3a";

async fn open(path: &std::path::Path, key: &str) -> background_sync_core::Result<BackgroundSync> {
    BackgroundSync::open_with(path, OpenOptions::default().encryption_key(key)).await
}

/// A plaintext outbox at `<dir>/outbox.db` holding `visits` queued visits, closed (an app from
/// before it turned encryption on).
async fn plaintext_outbox(dir: &tempfile::TempDir, visits: usize) -> std::path::PathBuf {
    let db = dir.path().join("outbox.db");
    let bs = BackgroundSync::open(&db).await.unwrap();
    bs.configure(config("http://127.0.0.1:9")).await.unwrap();
    enqueue_visits(&bs, 0..visits).await;
    bs.close().await;
    db
}

/// Whether the file starts with SQLite's plaintext header.
fn is_plaintext(path: &std::path::Path) -> bool {
    std::fs::read(path).unwrap().starts_with(b"SQLite format 3")
}

#[tokio::test]
async fn encrypted_outbox_round_trip() {
    let server = server(FaultConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secret.db");
    let bs = open(&db, "correct horse battery staple").await.unwrap();
    bs.configure(config(&server.base_url)).await.unwrap();
    let id = bs
        .enqueue(mutation(
            "POST",
            "/notes",
            Some(json!({"text": SECRET})),
            "note",
            "n1",
        ))
        .await
        .unwrap()
        .id;
    bs.close().await;

    // No SQLite header and no plaintext anywhere in the files (database and WAL).
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!bytes.starts_with(b"SQLite format 3"), "plaintext header");
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "plaintext body"
        );
    }

    // Wrong key, no key: typed errors, nothing changed.
    let e = open(&db, "wrong").await.err().expect("wrong key refused");
    assert_eq!(e.kind(), "storage", "{e}");
    let e = BackgroundSync::open(&db).await.err().expect("no key refused");
    assert_eq!(e.kind(), "storage", "{e}");

    // Right key: the row is there and goes out.
    let bs = open(&db, "correct horse battery staple").await.unwrap();
    assert_eq!(bs.get(&id).await.unwrap().body.unwrap()["text"], SECRET);
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!(r.done, 1);
    assert_applied_once(&server, 1).await;
    bs.close().await;

    // A raw 256-bit key works too.
    let raw = format!("x'{}'", "ab".repeat(32));
    let other = dir.path().join("raw.db");
    let bs = open(&other, &raw).await.unwrap();
    bs.configure(config(&server.base_url)).await.unwrap();
    bs.close().await;
    assert!(open(&other, &raw).await.is_ok());
    assert!(open(&other, &format!("x'{}'", "cd".repeat(32))).await.is_err());
    server.shutdown().await;
}

/// An app that turns encryption on in an update: the plaintext database it already has (queued
/// rows, credentials) is encrypted in place at the first open with a key, and nothing is lost.
#[tokio::test]
async fn a_plaintext_database_is_encrypted_in_place_at_the_first_open_with_a_key() {
    let server = server(FaultConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let bs = BackgroundSync::open(&db).await.unwrap();
    bs.configure(config(&server.base_url)).await.unwrap();
    for i in 0..3 {
        bs.enqueue(mutation(
            "POST",
            "/notes",
            Some(json!({"text": SECRET, "i": i})),
            "note",
            &format!("n{i}"),
        ))
        .await
        .unwrap();
    }
    bs.close().await;
    assert!(is_plaintext(&db));

    let key = SecretKey::from_bytes([5; 32]).database_key();
    let bs = open(&db, &key).await.unwrap();
    assert_eq!(bs.status().await.unwrap().pending, 3);
    bs.close().await;
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let p = f.unwrap().path();
        assert_ne!(
            p.extension().and_then(|e| e.to_str()),
            Some("encrypting"),
            "copy left behind"
        );
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.starts_with(b"SQLite format 3"),
            "{} is plaintext",
            p.display()
        );
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the body",
            p.display()
        );
    }
    let bs = open(&db, &key).await.unwrap();
    assert_eq!(bs.drain(DrainOptions::default()).await.unwrap().done, 3);
    assert_applied_once(&server, 3).await;
    bs.close().await;
}

/// The headless entries (what the Android worker and the iOS BGTask call) open a database the
/// plugin encrypted with the key derived from the platform key they were handed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headless_entries_open_a_database_encrypted_with_the_platform_key() {
    let server = server(FaultConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let platform = SecretKey::from_bytes([9; 32]);
    let bs = BackgroundSync::open_with(
        &db,
        OpenOptions::default()
            .encryption_key(platform.database_key())
            .credentials(CredentialStorage::Sealed(platform.clone())),
    )
    .await
    .unwrap();
    bs.configure(config(&server.base_url)).await.unwrap();
    bs.enqueue(mutation(
        "POST",
        "/notes",
        Some(json!({"text": SECRET})),
        "note",
        "n1",
    ))
    .await
    .unwrap();
    bs.close().await;

    let path = db.to_str().unwrap().to_string();
    let status = tokio::task::spawn_blocking({
        let path = path.clone();
        move || entry::status(&path)
    })
    .await
    .unwrap();
    assert_eq!(status.expect_err("no key: refused").kind(), "storage");
    entry::set_secret_key(Some(platform));
    let report =
        tokio::task::spawn_blocking(move || entry::drain(&path, 5_000, "foreground", Default::default()))
            .await
            .unwrap()
            .unwrap();
    entry::set_secret_key(None);
    assert_eq!(report.done, 1, "{report:?}");
    assert_applied_once(&server, 1).await;
}

const WRITER_ENV: &str = "BGSYNC_ENCRYPTION_WRITER_DB";

/// The other process of `a_process_writing_during_the_encryption_loses_nothing`: a plaintext
/// handle (an instance started without the key) that enqueues every 10 ms for 4 s and prints
/// each acknowledged id. Does nothing when run as a test of its own.
#[tokio::test]
async fn plaintext_writer_child() {
    let Ok(db) = std::env::var(WRITER_ENV) else {
        return;
    };
    let bs = BackgroundSync::open(&db).await.unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let mut i = 0;
    while std::time::Instant::now() < until {
        i += 1;
        match bs
            .enqueue(mutation(
                "POST",
                "/notes",
                Some(json!({"i": i})),
                "w",
                &i.to_string(),
            ))
            .await
        {
            Ok(e) => println!("acked {}", e.id),
            Err(e) => println!("refused {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Every id the child printed as acknowledged.
fn acked_ids(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("acked "))
        .map(str::to_string)
        .collect()
}

/// An app turns encryption on while another process still has the plaintext outbox open and
/// writes to it. Whatever the open with a key answers, no acknowledged enqueue (the other
/// process's or this one's) is lost and the encrypted file is sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_writing_during_the_encryption_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = plaintext_outbox(&dir, 0).await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "plaintext_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_ENV, &db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its output is read as it comes; the open with a key starts once the writer has the file
    // open and a first enqueue acknowledged (a slow start would otherwise find it encrypted).
    let stdout = child.stdout.take().unwrap();
    let (first_ack, acked_once) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut out = String::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("acked ") {
                let _ = first_ack.send(());
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    });
    tokio::task::spawn_blocking(move || acked_once.recv_timeout(std::time::Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the writer acknowledged a first enqueue");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let key = SecretKey::from_bytes([3; 32]).database_key();
    let mut acked = Vec::new();
    let opened = tokio::time::timeout(std::time::Duration::from_secs(20), open(&db, &key))
        .await
        .expect("the open with a key answers");
    if let Ok(bs) = &opened {
        for i in 0..5 {
            acked.push(
                bs.enqueue(mutation(
                    "POST",
                    "/notes",
                    Some(json!({"p": i})),
                    "p",
                    &i.to_string(),
                ))
                .await
                .unwrap()
                .id,
            );
        }
        bs.close().await;
    }
    let out = tokio::task::spawn_blocking(move || {
        child.wait().unwrap();
        reader.join().unwrap()
    })
    .await
    .unwrap();
    let from_child = acked_ids(&out);
    assert!(from_child.len() > 20, "the writer barely ran:\n{out}");
    let refused = out.lines().filter(|l| l.starts_with("refused")).count();
    acked.extend(from_child);

    // Once the other process is gone the key opens the outbox (encrypting it now if it had to
    // wait), and every acknowledged row is there.
    let bs = open(&db, &key).await.unwrap_or_else(|e| {
        panic!(
            "reopen with the key: {e} (first open: {:?})",
            opened.as_ref().err()
        )
    });
    let mut missing = Vec::new();
    for id in &acked {
        if bs.get(id).await.is_err() {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged enqueues lost (first open: {:?}): {:?}",
        missing.len(),
        acked.len(),
        opened.as_ref().err(),
        &missing[..missing.len().min(5)]
    );
    assert!(!is_plaintext(&db), "still plaintext");
    println!(
        "{} acknowledged enqueues kept ({refused} of the other process's refused meanwhile); the first open \
         with a key answered {:?}",
        acked.len(),
        opened.as_ref().map(|_| "ok").map_err(|e| e.to_string())
    );
    bs.close().await;
}

/// Two handles of one process open a plaintext outbox with the key at once (Android: the
/// worker and the plugin at the first start after an update): both open, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_encrypting_at_once_both_open() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let db = plaintext_outbox(&dir, 20).await;
        let key = SecretKey::from_bytes([4; 32]).database_key();
        let (a, b) = tokio::join!(open(&db, &key), open(&db, &key));
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("round {round}: first handle: {e:?}")),
            b.unwrap_or_else(|e| panic!("round {round}: second handle: {e:?}")),
        );
        assert_eq!(a.status().await.unwrap().pending, 20, "round {round}");
        assert_eq!(b.status().await.unwrap().pending, 20, "round {round}");
        a.close().await;
        b.close().await;
    }
}

/// While another process keeps the plaintext outbox open past the wait, the open with a key
/// fails typed and touches nothing; once it has gone, the next open encrypts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_held_open_elsewhere_is_left_as_it_is() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = plaintext_outbox(&dir, 4).await;
    let script = format!(
        "import sqlite3,time\nc=sqlite3.connect({:?})\nc.execute('SELECT count(*) FROM outbox').fetchall()\n\
         print('open', flush=True)\ntime.sleep(8)\n",
        db.to_str().unwrap()
    );
    let mut holder = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let key = SecretKey::from_bytes([6; 32]).database_key();
    let t = std::time::Instant::now();
    let e = open(&db, &key).await.err().expect("refused while held open");
    let waited = t.elapsed();
    assert_eq!(e.kind(), "storage", "{e}");
    assert!(e.to_string().contains("still open elsewhere"), "{e}");
    assert!(waited < std::time::Duration::from_secs(7), "waited {waited:?}");
    assert!(is_plaintext(&db), "changed");
    holder.wait().unwrap();
    let bs = open(&db, &key).await.unwrap();
    assert_eq!(bs.status().await.unwrap().pending, 4);
    bs.close().await;
    assert!(!is_plaintext(&db), "still plaintext");
    println!("held open elsewhere: refused after {waited:?}; encrypted at the next open, 4 rows kept");
}

/// A connection opened on the plaintext file before the encryption but not yet used holds no
/// lock, so it cannot stop it; afterwards it must not write to the replaced file (its writes
/// would be lost, and a `-wal` would be the new file's by name). The file is left in rollback
/// mode, where SQLite refuses writes to a file moved since it was opened (SQLITE_READONLY_DBMOVED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_the_encryption_cannot_write_to_the_old_file() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let db = plaintext_outbox(&dir, 2).await;
    // sqlite3.connect opens the file and reads nothing until the first statement.
    let script = format!(
        "import sqlite3,sys\nc=sqlite3.connect({:?}, isolation_level=None, timeout=10)\n\
         print('connected', flush=True)\nsys.stdin.readline()\n\
         try:\n    c.execute(\"INSERT INTO settings(key, value) VALUES('late', 'write')\")\n    print('wrote')\n\
         except Exception as e:\n    print('refused', e)\n",
        db.to_str().unwrap()
    );
    let mut late = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdout = std::io::BufReader::new(late.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "connected");
    let key = SecretKey::from_bytes([8; 32]).database_key();
    let bs = open(&db, &key).await.unwrap();
    writeln!(late.stdin.as_mut().unwrap()).unwrap();
    let mut answer = String::new();
    stdout.read_line(&mut answer).unwrap();
    late.wait().unwrap();
    assert!(
        answer.starts_with("refused"),
        "the connection opened before the encryption wrote to the replaced file: {answer}"
    );
    assert_eq!(bs.status().await.unwrap().pending, 2);
    bs.close().await;
    println!("a connection opened before the encryption: {}", answer.trim());
}

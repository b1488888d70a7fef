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
    assert!(std::fs::read(&db).unwrap().starts_with(b"SQLite format 3"));

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

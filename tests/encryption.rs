//! At-rest encryption with SQLCipher (`--features sqlcipher`): the file holds no plaintext,
//! a wrong key is a typed error that touches nothing, the right key reads and drains.
#![cfg(any(feature = "sqlcipher", feature = "sqlcipher-vendored"))]

mod common;

use background_sync_core::{BackgroundSync, DrainOptions, OpenOptions};
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

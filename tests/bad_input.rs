//! Every bad input gets a typed error with a clear message; nothing panics; queued rows survive.

mod common;

use background_sync_core::{entry, BackgroundSync, Error};
use common::*;
use serde_json::json;

async fn setup() -> (tempfile::TempDir, BackgroundSync) {
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config("http://127.0.0.1:9")).await;
    bs.enqueue(mutation(
        "PUT",
        "/visits/keep",
        Some(json!({"v": 1})),
        "visit",
        "keep",
    ))
    .await
    .unwrap();
    (dir, bs)
}

async fn still_has_the_row(bs: &BackgroundSync) {
    let p = bs.pending(10, 0).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].entity.id, "keep");
}

#[tokio::test]
async fn invalid_mutations_are_typed_errors() {
    let (_d, bs) = setup().await;
    let cases: Vec<(background_sync_core::NewMutation, &str, &str)> = vec![
        (mutation("GET", "/v/1", None, "v", "1"), "invalidInput", "method"),
        (
            mutation("POST", "v/1", None, "v", "1"),
            "invalidInput",
            "path must start",
        ),
        (
            mutation("POST", "https://evil.example.com/x", None, "v", "1"),
            "originNotAllowed",
            "evil.example.com",
        ),
        (
            mutation("POST", "http://10.0.0.1/x", None, "v", "1"),
            "originNotAllowed",
            "not the configured",
        ),
        (
            mutation("POST", "/v\r\nHost: evil", None, "v", "1"),
            "invalidInput",
            "control",
        ),
        (
            mutation("POST", "/v", Some(json!({"x": "y".repeat(2 << 20)})), "v", "1"),
            "limitExceeded",
            "maxPayloadBytes",
        ),
        (
            mutation("POST", "/v", None, "", "1"),
            "invalidInput",
            "entity.kind",
        ),
    ];
    for (m, kind, needle) in cases {
        let e = bs
            .enqueue(m.clone())
            .await
            .expect_err(&format!("{m:?} should fail"));
        assert_eq!(e.kind(), kind, "{m:?}: {e}");
        assert!(e.to_string().contains(needle), "{e} should mention {needle}");
    }
    let mut h = mutation("POST", "/v", None, "v", "1");
    h.headers.insert("Authorization".into(), "Bearer stolen".into());
    assert!(matches!(bs.enqueue(h).await, Err(Error::InvalidInput(_))));
    still_has_the_row(&bs).await;
}

#[tokio::test]
async fn malformed_json_and_unknown_priority_through_the_json_entry() {
    let (dir, bs) = setup().await;
    let db = bs.path().to_str().unwrap().to_string();
    bs.close().await;
    let cases = [
        ("{\"method\": \"POST\", ", "invalidInput"),
        ("[]", "invalidInput"),
        (
            r#"{"method":"POST","path":"/v","entity":{"kind":"v","id":"1"},"priority":"urgent"}"#,
            "invalidInput",
        ),
        (
            r#"{"method":"POST","path":"/v","entity":{"kind":"v","id":"1"},"bogus":1}"#,
            "invalidInput",
        ),
        (r#"{"method":"POST","path":"/v"}"#, "invalidInput"),
    ];
    for (input, kind) in cases {
        let out: serde_json::Value = serde_json::from_str(&entry::enqueue_json(&db, input)).unwrap();
        assert_eq!(out["ok"], false, "{input}");
        assert_eq!(out["error"]["kind"], kind, "{input}: {out}");
        assert!(out["error"]["message"].as_str().unwrap().len() > 10);
    }
    let out: serde_json::Value =
        serde_json::from_str(&entry::configure_json(&db, r#"{"baseUrl": 5}"#)).unwrap();
    assert_eq!(out["error"]["kind"], "invalidInput");
    let out: serde_json::Value = serde_json::from_str(&entry::configure_json(
        &db,
        r#"{"baseUrl": "http://api.example.com"}"#,
    ))
    .unwrap();
    assert_eq!(out["error"]["kind"], "invalidInput");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("loopback"),
        "{out}"
    );
    let bs = BackgroundSync::open(dir.path().join("outbox.db")).await.unwrap();
    still_has_the_row(&bs).await;
}

#[tokio::test]
async fn enqueue_before_configure_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bs = BackgroundSync::open(dir.path().join("x.db")).await.unwrap();
    let e = bs
        .enqueue(mutation("POST", "/v", None, "v", "1"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "notConfigured");
}

#[tokio::test]
async fn corrupt_database_file_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.db");
    std::fs::write(
        &path,
        b"this is not a sqlite database, just some bytes...............".repeat(100),
    )
    .unwrap();
    let e = BackgroundSync::open(&path)
        .await
        .err()
        .expect("corrupt file must not open");
    assert_eq!(e.kind(), "storage", "{e}");
    assert!(
        e.to_string().contains("corrupt") || e.to_string().contains("not a database"),
        "{e}"
    );
    // The same through the C-ABI-facing JSON entry.
    let out: serde_json::Value = serde_json::from_str(&entry::status_json(path.to_str().unwrap())).unwrap();
    assert_eq!(out["error"]["kind"], "storage");
}

#[tokio::test]
async fn unopenable_path_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be.
    let path = dir.path().join("adir");
    std::fs::create_dir(&path).unwrap();
    let e = BackgroundSync::open(&path)
        .await
        .err()
        .expect("a directory is not a database");
    assert_eq!(e.kind(), "storage", "{e}");
    let out: serde_json::Value = serde_json::from_str(&entry::status_json("")).unwrap();
    assert_eq!(out["error"]["kind"], "invalidInput");
}

#[tokio::test]
async fn read_only_database_is_a_storage_error_and_rows_survive() {
    let (dir, bs) = setup().await;
    let path = bs.path().to_path_buf();
    bs.close().await;
    // Root ignores file modes; the immutable attribute binds root too (ext4 here).
    let immutable =
        matches!(std::process::Command::new("chattr").arg("+i").arg(&path).status(), Ok(s) if s.success());
    if !immutable {
        let mut perm = std::fs::metadata(&path).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&path, perm).unwrap();
        assert!(
            unsafe { libc::geteuid() } != 0,
            "need chattr (e2fsprogs) to make a file read-only for root"
        );
    }
    let r = async {
        let bs = BackgroundSync::open(&path).await?;
        bs.enqueue(mutation("PUT", "/visits/new", None, "visit", "new"))
            .await
    }
    .await;
    let _ = std::process::Command::new("chattr").arg("-i").arg(&path).status();
    let e = r.expect_err("writing to a read-only database must fail");
    assert_eq!(e.kind(), "storage", "{e}");
    let bs = BackgroundSync::open(dir.path().join("outbox.db")).await.unwrap();
    still_has_the_row(&bs).await;
}

#[tokio::test]
async fn queue_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("http://127.0.0.1:9");
    cfg.max_queue_len = 3;
    let bs = engine(&dir, cfg).await;
    let many: Vec<_> = (0..3)
        .map(|i| mutation("PUT", &format!("/v/{i}"), None, "v", &i.to_string()))
        .collect();
    bs.enqueue_many(many).await.unwrap();
    let e = bs
        .enqueue(mutation("PUT", "/v/x", None, "v", "x"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "limitExceeded");
    assert_eq!(bs.status().await.unwrap().pending, 3);
}

#[tokio::test]
async fn enqueue_many_is_all_or_nothing() {
    let (_d, bs) = setup().await;
    let mut batch = vec![
        mutation("PUT", "/v/1", None, "v", "1"),
        mutation("PUT", "/v/2", None, "v", "2"),
    ];
    let mut dup = mutation("POST", "/v", None, "v", "t");
    dup.temp_id = Some("tmp-1".into());
    batch.push(dup.clone());
    batch.push(dup);
    assert!(bs.enqueue_many(batch).await.is_err());
    still_has_the_row(&bs).await;
}

#[tokio::test]
async fn caller_idempotency_key_dedupes_enqueue() {
    let (_d, bs) = setup().await;
    let mut m = mutation("PUT", "/v/1", None, "v", "1");
    m.idempotency_key = Some("form-42-submit".into());
    let a = bs.enqueue(m.clone()).await.unwrap();
    let b = bs.enqueue(m).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(bs.status().await.unwrap().pending, 2);
}

/// Without the sqlcipher feature a key must not be silently ignored (plaintext on disk).
#[cfg(not(any(feature = "sqlcipher", feature = "sqlcipher-vendored")))]
#[tokio::test]
async fn an_encryption_key_without_sqlcipher_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = background_sync_core::BackgroundSync::open_with(
        dir.path().join("x.db"),
        background_sync_core::OpenOptions::default().encryption_key("k"),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(e.kind(), "invalidInput");
    assert!(!dir.path().join("x.db").exists(), "nothing written");
}

/// Overwrites one row of the settings table the way a damaged or hand-edited file would.
async fn damage_setting(dir: &tempfile::TempDir, key: &str) {
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE settings SET value = '{\"accessToken\": ' WHERE key = ?")
        .bind(key)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// Stored data that cannot be read back is a `corrupt` error that keeps its cause, never read
/// as a default: credentials read as "none" would send the field worker's queue without the
/// app's token, and a configuration error must not look like a disk problem.
#[tokio::test]
async fn damaged_stored_credentials_and_configuration_are_corrupt_errors() {
    let (dir, bs) = setup().await;
    bs.set_auth(background_sync_core::AuthConfig {
        access_token: Some("t0k3n".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    damage_setting(&dir, "auth").await;
    let e = bs
        .drain(background_sync_core::DrainOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "corrupt", "{e}");
    assert!(e.to_string().contains("credentials"), "{e}");
    assert!(
        std::error::Error::source(&e).is_some(),
        "the JSON error is kept as the source"
    );
    assert!(!e.to_string().contains("t0k3n"), "no token in the message: {e}");
    still_has_the_row(&bs).await;
    // Stored again by the app, the credentials work again.
    bs.set_auth(background_sync_core::AuthConfig {
        access_token: Some("t0k3n".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    bs.drain(background_sync_core::DrainOptions::default())
        .await
        .unwrap();

    damage_setting(&dir, "config").await;
    let e = bs.status().await.unwrap_err();
    assert_eq!(e.kind(), "corrupt", "{e}");
    assert!(e.to_string().contains("configuration"), "{e}");
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["kind"], "corrupt");
    bs.configure(config("http://127.0.0.1:9")).await.unwrap();
    bs.status().await.unwrap();
    still_has_the_row(&bs).await;
}

/// An enqueue is checked against the configuration stored when it is written, not against one
/// this handle parsed earlier: another handle (or process) may have reconfigured the file.
#[tokio::test]
async fn enqueue_obeys_a_configuration_changed_by_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("http://127.0.0.1:9");
    cfg.allowed_origins = vec!["https://files.example".into()];
    let a = engine(&dir, cfg.clone()).await;
    // `a` has now parsed a configuration that allows the second origin and 1,000 rows.
    a.enqueue(mutation("PUT", "https://files.example/f/1", None, "f", "1"))
        .await
        .unwrap();
    let b = BackgroundSync::open(dir.path().join("outbox.db")).await.unwrap();
    cfg.allowed_origins.clear();
    b.configure(cfg.clone()).await.unwrap();
    let e = a
        .enqueue(mutation("PUT", "https://files.example/f/2", None, "f", "2"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "originNotAllowed", "{e}");
    cfg.max_queue_len = 1;
    b.configure(cfg).await.unwrap();
    let e = a
        .enqueue(mutation("PUT", "/v/1", None, "v", "1"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "limitExceeded", "{e}");
    assert_eq!(a.status().await.unwrap().pending, 1);
}

/// Concurrent calls on one handle (an app's `Promise.all`) may share a commit; each call is
/// still all or none and acknowledged only with its rows. Seeded: tasks enqueue batches of 1–4,
/// some holding a create whose temp id another task also uses (only one such create can
/// exist), under a queue limit smaller than everything attempted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_are_each_all_or_nothing() {
    use rand::{Rng, SeedableRng};
    let cases: u64 = std::env::var("CONCURRENT_ENQUEUE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for seed in 0..cases {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config("http://127.0.0.1:9");
        cfg.max_queue_len = 60;
        let bs = engine(&dir, cfg).await;
        // Its own connections: it sees only what was committed.
        let observer = BackgroundSync::open(dir.path().join("outbox.db")).await.unwrap();
        let tasks: Vec<_> = (0..8u64)
            .map(|task| {
                let bs = bs.clone();
                let observer = observer.clone();
                tokio::spawn(async move {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed * 100 + task);
                    let mut calls = Vec::new();
                    for call in 0..6 {
                        let size = rng.gen_range(1..=4);
                        let batch: Vec<_> = (0..size)
                            .map(|i| {
                                let id = format!("t{task}c{call}m{i}");
                                let mut m = mutation("POST", "/v", Some(json!({ "id": id })), "v", &id);
                                if rng.gen_bool(0.2) {
                                    // Eight tasks draw from five shared temp ids.
                                    m.temp_id = Some(format!("shared-{}", rng.gen_range(0..5)));
                                    m.entity.id =
                                        format!("{}-{task}-{call}-{i}", m.temp_id.as_ref().unwrap());
                                }
                                m
                            })
                            .collect();
                        let keys: Vec<String> = batch
                            .iter()
                            .map(|m| m.body.as_ref().unwrap()["id"].as_str().unwrap().to_string())
                            .collect();
                        let temps: Vec<String> = batch.iter().filter_map(|m| m.temp_id.clone()).collect();
                        let r = bs.enqueue_many(batch).await;
                        if let Ok(enqueued) = &r {
                            // Acknowledged means committed: visible to another connection now.
                            for e in enqueued {
                                assert!(
                                    observer.get(&e.id).await.is_ok(),
                                    "seed {seed}: acknowledged {} not committed",
                                    e.id
                                );
                            }
                        }
                        calls.push((keys, temps, r.map(|e| e.len())));
                    }
                    calls
                })
            })
            .collect();
        let mut calls = Vec::new();
        for t in tasks {
            calls.extend(t.await.unwrap());
        }
        let queued = bs.pending(1_000, 0).await.unwrap();
        let stored: std::collections::HashSet<String> = queued
            .iter()
            .map(|m| m.body.as_ref().unwrap()["id"].as_str().unwrap().to_string())
            .collect();
        let mut acked = 0;
        let mut creates: std::collections::HashMap<String, usize> = Default::default();
        for (keys, temps, r) in &calls {
            match r {
                Ok(n) => {
                    assert_eq!(*n, keys.len(), "seed {seed}");
                    assert!(
                        keys.iter().all(|k| stored.contains(k)),
                        "seed {seed}: acknowledged call {keys:?} not all stored"
                    );
                    acked += keys.len();
                    for t in temps {
                        *creates.entry(t.clone()).or_default() += 1;
                    }
                }
                Err(e) => {
                    assert!(
                        matches!(e.kind(), "conflict" | "limitExceeded"),
                        "seed {seed}: {e}"
                    );
                    assert!(
                        keys.iter().all(|k| !stored.contains(k)),
                        "seed {seed}: failed call {keys:?} left rows ({e})"
                    );
                }
            }
        }
        assert_eq!(
            stored.len(),
            acked,
            "seed {seed}: stored rows are exactly the acknowledged ones"
        );
        assert!(acked <= 60, "seed {seed}: {acked} rows under a limit of 60");
        assert!(
            creates.values().all(|n| *n <= 1),
            "seed {seed}: a temp id created twice: {creates:?}"
        );
        assert!(
            calls.iter().any(|c| c.2.is_err()),
            "seed {seed}: no call failed, the case proves nothing"
        );
    }
}

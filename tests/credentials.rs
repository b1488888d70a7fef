//! Credentials at rest (README "Credentials at rest", docs/guarantees.md): with a key from the
//! platform's secure store, no access or refresh token is readable in the database file or its
//! WAL — not after `set_auth`, not after a refresh rotates them, not left over from a version
//! that stored them in plaintext — and a process without the key (or with another one) sends
//! nothing instead of requests without the app's token.

mod common;

use background_sync_core::{
    AuthConfig, BackgroundSync, CredentialStorage, DrainOptions, OpenOptions, RefreshMode, SecretKey,
    StopReason,
};
use common::*;
use std::path::Path;

const ACCESS: &str = "at-field-worker-4c1d9e";
const REFRESH: &str = "rt-1";

async fn open(path: &Path, storage: CredentialStorage) -> BackgroundSync {
    BackgroundSync::open_with(path, OpenOptions::default().seed(3).credentials(storage))
        .await
        .expect("open outbox")
}

fn auth(access: &str) -> AuthConfig {
    AuthConfig {
        access_token: Some(access.into()),
        refresh_token: Some(REFRESH.into()),
        refresh_url: Some("/oauth/token".into()),
        refresh_mode: RefreshMode::OAuth2,
        client_id: Some("field-app".into()),
        ..Default::default()
    }
}

async fn auth_server(access: &[&str], rotate: bool) -> RunningServer {
    server_with_auth(
        FaultConfig::default(),
        AuthSetup {
            access_tokens: access.iter().map(|t| t.to_string()).collect(),
            refresh_token: REFRESH.into(),
            oauth_client_id: Some("field-app".into()),
            rotate_refresh_tokens: rotate,
        },
    )
    .await
}

/// Every byte of the database, its WAL and its shared memory file.
fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|f| {
            let p = f.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect()
}

fn assert_not_in_files(dir: &Path, secrets: &[&str]) {
    for (name, bytes) in file_bytes(dir) {
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} is readable in {name}"
            );
        }
    }
}

fn assert_in_files(dir: &Path, secret: &str) {
    assert!(
        file_bytes(dir)
            .iter()
            .any(|(_, b)| b.windows(secret.len()).any(|w| w == secret.as_bytes())),
        "{secret} not found in any file (the check itself would pass vacuously)"
    );
}

/// The raw credentials row, read with SQLite directly.
async fn stored_auth_row(db: &Path) -> Option<String> {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    // language=SQLite
    let v = sqlx::query_scalar("SELECT value FROM settings WHERE key = 'auth'")
        .fetch_optional(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_tokens_are_not_in_the_file_and_rotated_ones_neither() {
    let server = auth_server(&[], true).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let key = SecretKey::generate().unwrap();
    let bs = open(&db, CredentialStorage::Sealed(key.clone())).await;
    bs.configure(config(&server.base_url)).await.unwrap();
    // A stale access token: the first request gets a 401, the refresh rotates both tokens.
    bs.set_auth(auth(ACCESS)).await.unwrap();
    enqueue_visits(&bs, 0..3).await;
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!(r.done, 3, "{r:?}");
    assert_eq!(server.stats().refreshes, 1);
    bs.close().await;

    let row = stored_auth_row(&db).await.expect("credentials stored");
    assert!(
        row.starts_with("sealed:v1:"),
        "the rotated credentials are sealed: {row}"
    );
    assert_not_in_files(dir.path(), &[ACCESS, "\"refreshToken\"", "accessToken"]);

    // The same key opens them again: the next drain needs no refresh.
    let bs = open(&db, CredentialStorage::Sealed(key)).await;
    enqueue_visits(&bs, 3..5).await;
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!(r.done, 2, "{r:?}");
    assert_eq!(server.stats().refreshes, 1, "the rotated token was kept");
    assert_eq!(server.stats().unauthorized, 1);
    bs.close().await;
}

/// A server that accepts `ACCESS`, and a database opened with `storage`, configured for it, holding
/// `ACCESS` set through `set_auth`.
async fn signed_in(
    storage: CredentialStorage,
) -> (
    RunningServer,
    tempfile::TempDir,
    std::path::PathBuf,
    BackgroundSync,
) {
    let server = auth_server(&[ACCESS], false).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let bs = open(&db, storage).await;
    bs.configure(config(&server.base_url)).await.unwrap();
    bs.set_auth(auth(ACCESS)).await.unwrap();
    (server, dir, db, bs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_key_or_with_another_nothing_is_sent() {
    let (server, _dir, db, bs) = signed_in(CredentialStorage::Sealed(SecretKey::generate().unwrap())).await;
    enqueue_visits(&bs, 0..2).await;
    bs.close().await;

    for storage in [
        CredentialStorage::Plaintext,
        CredentialStorage::Sealed(SecretKey::generate().unwrap()),
    ] {
        let what = storage.describe();
        let bs = open(&db, storage).await;
        let r = bs.drain(DrainOptions::default()).await.unwrap();
        assert_eq!(r.stop_reason, StopReason::AuthFailed, "{what}: {r:?}");
        assert_eq!((r.requests, r.remaining), (0, 2), "{what}: {r:?}");
        let status = bs.status().await.unwrap();
        let last = status.last_error.unwrap_or_default();
        assert!(
            last.contains("sign in again") || last.contains("no key"),
            "{what}: {last}"
        );
        assert!(!last.contains(ACCESS), "{what}: {last}");
        assert_eq!(server.stats().applied, 0, "{what}: nothing sent");
        assert_eq!(
            server.stats().unauthorized,
            0,
            "{what}: no request without the token"
        );
        bs.close().await;
    }
    // setAuth again (the user signs in on the restored device) replaces what cannot be read.
    let bs = open(&db, CredentialStorage::Sealed(SecretKey::generate().unwrap())).await;
    bs.set_auth(auth(ACCESS)).await.unwrap();
    assert_eq!(bs.drain(DrainOptions::default()).await.unwrap().done, 2);
    bs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_left_by_an_earlier_version_is_sealed_and_scrubbed_when_opened_with_a_key() {
    let (_server, dir, db, bs) = signed_in(CredentialStorage::Plaintext).await;
    enqueue_visits(&bs, 0..2).await;
    bs.close().await;
    assert_in_files(dir.path(), ACCESS);

    let bs = open(&db, CredentialStorage::Sealed(SecretKey::generate().unwrap())).await;
    assert_not_in_files(dir.path(), &[ACCESS]);
    assert_eq!(bs.drain(DrainOptions::default()).await.unwrap().done, 2);
    bs.close().await;
    assert_not_in_files(dir.path(), &[ACCESS]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_only_keeps_nothing_in_the_file_and_forgets_at_exit() {
    // A plaintext row from before: moved into memory and scrubbed from the file.
    let (server, dir, db, bs) = signed_in(CredentialStorage::Plaintext).await;
    bs.close().await;

    let bs = open(&db, CredentialStorage::MemoryOnly).await;
    assert_not_in_files(dir.path(), &[ACCESS]);
    enqueue_visits(&bs, 0..2).await;
    assert_eq!(bs.drain(DrainOptions::default()).await.unwrap().done, 2);
    bs.set_auth(auth(ACCESS)).await.unwrap();
    enqueue_visits(&bs, 2..3).await;
    assert_eq!(bs.drain(DrainOptions::default()).await.unwrap().done, 1);
    bs.close().await;
    assert_eq!(stored_auth_row(&db).await, None);
    assert_not_in_files(dir.path(), &[ACCESS]);

    // The next process has no credentials until the app sets them: requests go without a
    // token and the server answers 401 (what an app that signs in at start expects).
    let bs = open(&db, CredentialStorage::MemoryOnly).await;
    enqueue_visits(&bs, 3..4).await;
    let r = bs
        .drain(DrainOptions {
            budget: std::time::Duration::from_secs(2),
            ..Default::default()
        })
        .await;
    assert!(server.stats().unauthorized >= 1, "{r:?}");
    assert_eq!(server.stats().applied, 3);
    bs.close().await;
}

//! Token refresh (README "Authentication"): the OAuth 2.0 refresh grant (RFC 6749 §6, answered
//! as §5.1/§5.2) against the reference server's `POST /oauth/token`, rotation of refresh
//! tokens, refresh ahead of a known expiry (no 401 spent), one refresh for many lanes, and
//! tokens that never reach a report, the history, an event or the log.

mod common;

use background_sync_core::{AuthConfig, DrainOptions, Error, RefreshMode, StopReason};
use common::*;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

fn oauth(access: &str, refresh: &str) -> AuthConfig {
    AuthConfig {
        access_token: Some(access.into()),
        refresh_token: Some(refresh.into()),
        refresh_url: Some("/oauth/token".into()),
        refresh_mode: RefreshMode::OAuth2,
        client_id: Some("field-app".into()),
        ..Default::default()
    }
}

async fn oauth_server(access_tokens: &[&str], rotate: bool) -> RunningServer {
    server_with_auth(
        FaultConfig::default(),
        AuthSetup {
            access_tokens: access_tokens.iter().map(|t| t.to_string()).collect(),
            refresh_token: "rt-1".into(),
            oauth_client_id: Some("field-app".into()),
            rotate_refresh_tokens: rotate,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_refresh_grant_after_a_401_is_form_encoded_and_rotation_is_kept() {
    let server = oauth_server(&[], true).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.concurrency = 4;
    let bs = engine(&dir, cfg).await;
    bs.set_auth(AuthConfig {
        scope: Some("visits:write files".into()),
        ..oauth("stale", "rt-1")
    })
    .await
    .unwrap();
    enqueue_visits(&bs, 0..12).await;

    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (12, StopReason::Empty), "{r:?}");
    assert_eq!(server.stats().refreshes, 1, "one refresh for a burst of 401s");
    let grants = server.oauth_grants();
    assert_eq!(grants.len(), 1, "{grants:?}");
    let g = &grants[0];
    assert!(
        g.content_type.starts_with("application/x-www-form-urlencoded"),
        "§6 uses the form encoding of Appendix B: {g:?}"
    );
    assert_eq!(g.grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(g.client_id.as_deref(), Some("field-app"));
    assert_eq!(g.scope.as_deref(), Some("visits:write files"));
    assert!(g.accepted);

    // The server rotated the refresh token (and revokes the access token it minted): the next
    // refresh must present the rotated one, which only a stored rotation can do — in a new
    // process too.
    server.revoke_tokens();
    bs.close().await;
    let bs = engine(&dir, config(&server.base_url)).await;
    enqueue_visits(&bs, 100..103).await;
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (3, StopReason::Empty), "{r:?}");
    let grants = server.oauth_grants();
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert!(
        grants[1].accepted,
        "the rotated refresh token was used: {grants:?}"
    );
    assert_eq!(server.stats().applied, 15);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_known_to_expire_is_refreshed_before_any_request() {
    // The server accepts no access token the app has: without the refresh ahead of time every
    // lane would first spend a request on a 401.
    let server = oauth_server(&[], false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.concurrency = 4;
    let bs = engine(&dir, cfg).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    bs.set_auth(AuthConfig {
        // Expires in 20 s: inside the minute of margin.
        expires_at: Some(now_ms + 20_000),
        ..oauth("about-to-expire", "rt-1")
    })
    .await
    .unwrap();
    enqueue_visits(&bs, 0..8).await;
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (8, StopReason::Empty), "{r:?}");
    let s = server.stats();
    assert_eq!(s.refreshes, 1, "{s:?}");
    assert_eq!(
        s.unauthorized, 0,
        "no request went out with the expiring token: {s:?}"
    );

    // The refreshed token came with expires_in 3600: the next run refreshes nothing.
    enqueue_visits(&bs, 100..102).await;
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!(r.done, 2, "{r:?}");
    assert_eq!(server.stats().refreshes, 1, "a token valid for an hour is kept");
    assert_eq!(server.stats().unauthorized, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ahead_of_time_refresh_still_tries_the_token_and_stops_on_its_401() {
    // The refresh token is wrong (invalid_grant): the app's token is tried anyway (the server
    // has the last word), its 401 stops the run without a second refresh, nothing is lost.
    let server = oauth_server(&[], false).await;
    let (_dir, bs) = engine_for(&server).await;
    bs.set_auth(AuthConfig {
        expires_at: Some(0),
        ..oauth("expired", "not-the-refresh-token")
    })
    .await
    .unwrap();
    enqueue_visits(&bs, 0..3).await;
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::AuthFailed, "{r:?}");
    assert_eq!(r.remaining, 3);
    assert_eq!(server.oauth_grants().len(), 1, "one refresh per run");
    assert_eq!(bs.dead_letters(10, 0).await.unwrap().len(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_oauth_error_code_is_reported_and_its_free_text_is_not() {
    let server = server_with_auth(
        FaultConfig::default(),
        AuthSetup {
            access_tokens: vec![],
            refresh_token: "rt-1".into(),
            oauth_client_id: Some("another-client".into()),
            rotate_refresh_tokens: false,
        },
    )
    .await;
    let (_dir, bs) = engine_for(&server).await;
    bs.set_auth(oauth("stale", "rt-1")).await.unwrap();
    enqueue_visits(&bs, 0..1).await;
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::AuthFailed, "{r:?}");
    let why = r.last_error.unwrap_or_default();
    assert!(why.contains("invalid_client"), "{why}");
    assert!(!why.contains("RFC"), "error_description stays out: {why}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_exchange_stays_the_default() {
    let server = server_with_auth(
        FaultConfig::default(),
        AuthSetup {
            access_tokens: vec![],
            refresh_token: "rt-1".into(),
            ..Default::default()
        },
    )
    .await;
    let (_dir, bs) = engine_for(&server).await;
    // As JS sends it: no refreshMode.
    let auth: AuthConfig = serde_json::from_value(json!({
        "accessToken": "stale", "refreshToken": "rt-1", "refreshUrl": "/auth/refresh"
    }))
    .unwrap();
    assert_eq!(auth.refresh_mode, RefreshMode::Json);
    bs.set_auth(auth).await.unwrap();
    enqueue_visits(&bs, 0..2).await;
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!((r.done, r.stop_reason), (2, StopReason::Empty), "{r:?}");
    assert_eq!(server.stats().refreshes, 1);
    assert!(server.oauth_grants().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_settings_are_checked_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config("http://127.0.0.1:9")).await;
    let bad = [
        AuthConfig {
            client_id: None,
            ..oauth("a", "r")
        },
        AuthConfig {
            client_id: Some(String::new()),
            ..oauth("a", "r")
        },
        AuthConfig {
            client_id: Some("line\nbreak".into()),
            ..oauth("a", "r")
        },
        AuthConfig {
            scope: Some("two  spaces".into()),
            ..oauth("a", "r")
        },
        AuthConfig {
            scope: Some("quote\"d".into()),
            ..oauth("a", "r")
        },
    ];
    for auth in bad {
        let e = bs.set_auth(auth.clone()).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{auth:?}: {e:?}");
    }
    bs.set_auth(AuthConfig {
        scope: Some("a b:c".into()),
        ..oauth("a", "r")
    })
    .await
    .unwrap();
    // From JS: the mode's spelling.
    let auth: AuthConfig =
        serde_json::from_value(json!({"refreshMode": "oauth2", "clientId": "x", "expiresAt": 5})).unwrap();
    assert_eq!(
        (auth.refresh_mode, auth.expires_at),
        (RefreshMode::OAuth2, Some(5))
    );
}

/// Captures everything the engine logs (all levels) for the secrecy check.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: `set_default` captures only what this thread logs, and every task of the engine
// and of the server runs on it.
#[tokio::test(flavor = "current_thread")]
async fn tokens_never_reach_reports_history_events_or_logs() {
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // Refresh ahead, a refresh after a 401 and a failing refresh, all in one process.
    let server = oauth_server(&[], true).await;
    let (_dir, bs) = engine_for(&server).await;
    let mut events = bs.subscribe();
    bs.set_auth(AuthConfig {
        expires_at: Some(0),
        ..oauth("secret-access-0", "rt-1")
    })
    .await
    .unwrap();
    enqueue_visits(&bs, 0..3).await;
    assert_eq!(bs.drain(DrainOptions::default()).await.unwrap().done, 3);
    server.revoke_tokens();
    enqueue_visits(&bs, 10..11).await;
    assert_eq!(bs.drain(DrainOptions::default()).await.unwrap().done, 1);
    server.revoke_tokens();
    bs.set_auth(oauth("secret-access-1", "secret-refresh-wrong"))
        .await
        .unwrap();
    enqueue_visits(&bs, 20..21).await;
    let failed = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!(failed.stop_reason, StopReason::AuthFailed, "{failed:?}");
    assert_eq!(server.oauth_grants().len(), 3);

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(serde_json::to_string(&e).unwrap());
    }
    assert!(!seen.is_empty(), "events were emitted");
    let texts = [
        serde_json::to_string(&bs.history(50).await.unwrap()).unwrap(),
        serde_json::to_string(&bs.status().await.unwrap()).unwrap(),
        serde_json::to_string(&failed).unwrap(),
        seen.join("\n"),
        String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned(),
    ];
    assert!(
        texts[4].contains("refreshed"),
        "the log was captured: {}",
        texts[4]
    );
    for text in &texts {
        for secret in ["secret-", "oauth-access-", "oauth-refresh-", "rt-1"] {
            assert!(!text.contains(secret), "{secret} leaked into: {text}");
        }
    }
    server.shutdown().await;
}

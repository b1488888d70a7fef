//! TLS trust (README "Configuration", `tls`): the reference server on 127.0.0.1 behind rustls
//! with a private CA made for this run. Without the CA's root the drain is refused and nothing
//! reaches the server; with `tls.extraRootsPem` it delivers once, also in a cold process that
//! only has the database (the C ABI / JNI entry), and also with the bundled roots turned off.

mod common;

use background_sync_core::{entry, DrainOptions, Error, StopReason, SyncConfig, TlsConfig};
use bgsync_reference_server::{ServerConfig, TestPki};
use common::*;
use serde_json::json;

async fn tls_server(pki: &TestPki) -> RunningServer {
    bgsync_reference_server::spawn(ServerConfig {
        tls: Some(pki.server.clone()),
        ..Default::default()
    })
    .await
    .expect("reference server starts with TLS")
}

fn trusting(base_url: &str, ca_pem: &str, built_in_roots: bool) -> SyncConfig {
    let mut c = config(base_url);
    c.tls = TlsConfig {
        extra_roots_pem: vec![ca_pem.to_string()],
        built_in_roots,
    };
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_refused_without_its_root_and_trusted_with_it() {
    let pki = TestPki::generate().unwrap();
    let server = tls_server(&pki).await;
    assert!(server.base_url.starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();

    // Bundled Mozilla roots only: the handshake fails, the drain stops, nothing is applied and
    // the mutation waits (a TLS failure is not the mutation's fault).
    let bs = engine(&dir, config(&server.base_url)).await;
    bs.enqueue(mutation("POST", "/visits", Some(json!({"n": 1})), "visit", "v1"))
        .await
        .unwrap();
    let refused = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!(refused.stop_reason, StopReason::Error, "{refused:?}");
    assert_eq!(refused.done, 0);
    let why = refused.last_error.clone().unwrap_or_default();
    assert!(why.contains("TLS"), "the report says why: {why}");
    assert!(
        server.stats().tls_handshakes >= 1,
        "the client did reach the TLS listener"
    );
    assert_eq!(server.stats().applied, 0);
    assert_eq!(bs.status().await.unwrap().pending, 1);

    // The private root added: delivered once.
    bs.configure(trusting(&server.base_url, &pki.ca_pem, true))
        .await
        .unwrap();
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!((r.done, r.remaining), (1, 0), "{r:?}");
    assert_eq!(server.stats().applied, 1);
    assert_eq!(server.applied_log().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_background_process_trusts_the_configured_root_from_the_database() {
    let pki = TestPki::generate().unwrap();
    let server = tls_server(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db").to_str().unwrap().to_string();
    // What the app does through JS (camelCase JSON, merged), then what a background wake-up
    // does through the C ABI / JNI: open the file and drain, with nothing from the webview.
    let cfg = json!({
        "baseUrl": server.base_url,
        "tls": { "extraRootsPem": [pki.ca_pem], "builtInRoots": false }
    });
    let db2 = db.clone();
    let report = tokio::task::spawn_blocking(move || {
        entry::configure(&db2, cfg).unwrap();
        entry::set_enabled(&db2, true).unwrap();
        entry::enqueue(
            &db2,
            mutation("PUT", "/visits/v1", Some(json!({"done": true})), "visit", "v1"),
        )
        .unwrap();
        entry::drain(&db2, 10_000, "background", Default::default()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!((report.done, report.remaining), (1, 0), "{report:?}");
    assert_eq!(server.stats().applied, 1);
}

#[tokio::test]
async fn unusable_trust_settings_fail_configure() {
    let dir = tempfile::tempdir().unwrap();
    let bs = engine(&dir, config("https://api.example.com")).await;
    let pki = TestPki::generate().unwrap();
    let cases: Vec<(&str, TlsConfig)> = vec![
        (
            "not PEM at all",
            TlsConfig {
                extra_roots_pem: vec!["hello".into()],
                built_in_roots: true,
            },
        ),
        (
            "a PEM block that is not a certificate",
            TlsConfig {
                extra_roots_pem: vec![pki.server.key_pem.clone()],
                built_in_roots: true,
            },
        ),
        (
            "a CERTIFICATE block with garbage inside",
            TlsConfig {
                extra_roots_pem: vec!["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into()],
                built_in_roots: true,
            },
        ),
        (
            "no roots at all",
            TlsConfig {
                extra_roots_pem: vec![],
                built_in_roots: false,
            },
        ),
        (
            "a bundle too large",
            TlsConfig {
                extra_roots_pem: vec![pki.ca_pem.repeat(1024)],
                built_in_roots: true,
            },
        ),
    ];
    for (what, tls) in cases {
        let mut c = config("https://api.example.com");
        c.tls = tls;
        match bs.configure(c).await {
            Err(Error::InvalidInput(m)) => assert!(m.contains("tls."), "{what}: {m}"),
            other => panic!("{what}: expected invalidInput, got {other:?}"),
        }
    }
    // A bundle of several roots (the private CA twice and another CA) is fine.
    let other = TestPki::generate().unwrap();
    let mut c = config("https://api.example.com");
    c.tls.extra_roots_pem = vec![format!("{}{}", pki.ca_pem, other.ca_pem), pki.ca_pem.clone()];
    bs.configure(c.clone()).await.unwrap();
    assert_eq!(bs.config().await.unwrap(), Some(c), "persisted as given");
}

/// A phone pays for every TLS handshake (round trips, CPU, radio time). Against a server that
/// offers HTTP/2, a drain with many lanes sends them as streams over one connection: one
/// handshake, not one per lane (docs/benchmarks.md, "mobile-tls").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_share_one_tls_connection_when_the_server_speaks_http2() {
    let pki = TestPki::generate().unwrap();
    let server = bgsync_reference_server::spawn(ServerConfig {
        tls: Some(pki.server.clone()),
        http2: true,
        faults: bgsync_reference_server::FaultConfig {
            delay_ms: 20,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = trusting(&server.base_url, &pki.ca_pem, true);
    cfg.concurrency = 16;
    let bs = engine(&dir, cfg).await;
    for i in 0..64 {
        bs.enqueue(mutation(
            "PUT",
            &format!("/visits/{i}"),
            Some(json!({"n": i})),
            "visit",
            &i.to_string(),
        ))
        .await
        .unwrap();
    }
    let r = bs.drain(DrainOptions::default()).await.unwrap();
    assert_eq!((r.done, r.remaining), (64, 0), "{r:?}");
    let s = server.stats();
    assert_eq!(s.applied, 64);
    assert_eq!(
        (s.tls_handshakes, s.http2_connections),
        (1, 1),
        "16 lanes over one HTTP/2 connection: {s:?}"
    );
}

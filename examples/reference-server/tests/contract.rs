//! The reference server honours the contract it documents (real HTTP on 127.0.0.1).

use bgsync_reference_server::{spawn, AuthSetup, FaultConfig, ServerConfig};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

async fn send(
    base: &str,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> reqwest::Result<reqwest::Response> {
    let mut r = client().request(method, format!("{base}{path}")).json(&body);
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    r.send().await
}

#[tokio::test]
async fn create_assigns_ids_and_replays_by_key() {
    let s = spawn(ServerConfig::default()).await.unwrap();
    let r = send(
        &s.base_url,
        reqwest::Method::POST,
        "/visits",
        Some("k1"),
        json!({"site": "A"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["id"], "srv_1");
    let r = send(
        &s.base_url,
        reqwest::Method::POST,
        "/visits",
        Some("k1"),
        json!({"site": "A"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.json::<Value>().await.unwrap(), b);
    assert_eq!(s.applied_log().await.len(), 1, "a replay applies nothing");
    // Same key, different request.
    let r = send(
        &s.base_url,
        reqwest::Method::POST,
        "/visits",
        Some("k1"),
        json!({"site": "B"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    // Missing key.
    let r = send(&s.base_url, reqwest::Method::POST, "/visits", None, json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Validation failure is permanent and replays as such.
    for _ in 0..2 {
        let r = send(
            &s.base_url,
            reqwest::Method::PUT,
            "/visits/x",
            Some("k2"),
            json!({"__reject": true}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 422);
    }
    let r = send(
        &s.base_url,
        reqwest::Method::PATCH,
        "/visits/missing",
        Some("k3"),
        json!({"a": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = send(
        &s.base_url,
        reqwest::Method::PATCH,
        "/visits/srv_1",
        Some("k4"),
        json!({"a": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.state().await["visits"]["srv_1"],
        json!({"id": "srv_1", "site": "A", "a": 1})
    );
    let r = send(
        &s.base_url,
        reqwest::Method::DELETE,
        "/visits/srv_1",
        Some("k5"),
        Value::Null,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    s.shutdown().await;
}

#[tokio::test]
async fn injected_faults_store_nothing_and_commit_then_drop_replays() {
    let s = spawn(ServerConfig {
        faults: FaultConfig {
            fail_next: vec![503],
            retry_after_secs: Some(2),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let r = send(&s.base_url, reqwest::Method::PUT, "/v/1", Some("a"), json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    let r = send(&s.base_url, reqwest::Method::PUT, "/v/1", Some("a"), json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the retry applies: the fault stored nothing");

    s.set_faults(FaultConfig {
        drop_rate: 1.0,
        ..Default::default()
    });
    assert!(
        send(&s.base_url, reqwest::Method::PUT, "/v/2", Some("b"), json!({}))
            .await
            .is_err(),
        "a real TCP drop"
    );
    assert_eq!(s.applied_log().await.len(), 1);

    s.set_faults(FaultConfig {
        commit_then_drop_rate: 1.0,
        ..Default::default()
    });
    assert!(send(
        &s.base_url,
        reqwest::Method::PUT,
        "/v/3",
        Some("c"),
        json!({"x": 1})
    )
    .await
    .is_err());
    s.set_faults(FaultConfig::default());
    let r = send(
        &s.base_url,
        reqwest::Method::PUT,
        "/v/3",
        Some("c"),
        json!({"x": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(
        s.applied_log().await.len(),
        2,
        "committed once, replayed after the lost response"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn batch_items_are_independent() {
    let s = spawn(ServerConfig::default()).await.unwrap();
    let body = json!({"items": [
        {"idempotencyKey": "a", "method": "POST", "path": "/notes", "body": {"t": 1}},
        {"idempotencyKey": "b", "method": "PUT", "path": "/notes/x", "body": {"__reject": true}},
        {"idempotencyKey": "c", "method": "PUT", "path": "/notes/y", "body": {"t": 3}},
    ]});
    let r = client()
        .post(format!("{}/batch", s.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let st: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(st, vec![201, 422, 200]);
    assert_eq!(s.applied_log().await.len(), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn auth_refresh_and_revocation() {
    let s = spawn(ServerConfig {
        auth: Some(AuthSetup {
            access_tokens: vec!["t0".into()],
            refresh_token: "r".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let put = |tok: Option<String>, key: &'static str| {
        let mut r = client()
            .put(format!("{}/v/1", s.base_url))
            .header("Idempotency-Key", key)
            .json(&json!({}));
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(put(None, "a").await.unwrap().status(), 401);
    assert_eq!(put(Some("t0".into()), "a").await.unwrap().status(), 200);
    s.revoke_tokens();
    assert_eq!(put(Some("t0".into()), "b").await.unwrap().status(), 401);
    let bad = client()
        .post(format!("{}/auth/refresh", s.base_url))
        .json(&json!({"refreshToken": "no"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let ok: Value = client()
        .post(format!("{}/auth/refresh", s.base_url))
        .json(&json!({"refreshToken": "r"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = ok["accessToken"].as_str().unwrap().to_string();
    assert_eq!(put(Some(t), "b").await.unwrap().status(), 200);
    assert_eq!(s.stats().refreshes, 1);
    s.shutdown().await;
}

#[test]
fn binary_prints_its_address() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bgsync-reference-server"))
        .args(["--port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
}

//! Network fault suite: a fault-injecting TCP proxy between the engine and the reference server
//! (latency, bandwidth limits and slow bodies, resets mid-request and mid-response, truncated
//! responses, half-open connections that never answer), combined with server-side faults
//! (500/503/429 with Retry-After, dropped connections, responses lost after commit, 401 storms).
//! Every scenario drains a temp-id backlog through bounded repeated drains and asserts: nothing
//! lost (server state equals the expected state), nothing applied twice, per-entity order held.
//!
//! Knobs: BGSYNC_SOAK_MUTATIONS (e.g. 10000: one long soak mixing every fault),
//! BGSYNC_FAULT_SEED (default 1).

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};
use tauri_plugin_background_sync::{AuthConfig, BackgroundSync, DrainOptions, SyncConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---- the proxy ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    Clean,
    /// One-way delay added to every chunk, both directions.
    Latency,
    /// Bytes dribbled at `bytes_per_sec` in small pieces, both directions (slow bodies).
    Throttle,
    /// Half the first request chunk reaches the server, then both sides get a RST.
    ResetRequest,
    /// The request goes through; half the first response chunk reaches the client, then RST.
    ResetResponse,
    /// Half the first response chunk, then a clean close (FIN): a cut body.
    Truncate,
    /// Accepted, never answered, never closed: only the client's timeout ends it.
    HalfOpen,
}

const KINDS: [Fault; 7] = [
    Fault::Clean,
    Fault::Latency,
    Fault::Throttle,
    Fault::ResetRequest,
    Fault::ResetResponse,
    Fault::Truncate,
    Fault::HalfOpen,
];

/// Probability of each fault per request (the rest are clean).
#[derive(Debug, Clone, Copy, Default)]
struct Mix {
    latency: f64,
    throttle: f64,
    reset_request: f64,
    reset_response: f64,
    truncate: f64,
    half_open: f64,
    latency_ms: u64,
    bytes_per_sec: u64,
}

type Counts = Arc<HashMap<Fault, AtomicU64>>;

struct Proxy {
    addr: SocketAddr,
    counts: Counts,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listen on 127.0.0.1 and forward to `upstream`; a fault is drawn for every request from
    /// a ChaCha RNG seeded with `seed` (in arrival order: the sequence of faults is fixed, which
    /// request gets which depends on timing).
    async fn start(upstream: SocketAddr, seed: u64, mix: Mix) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Counts = Arc::new(KINDS.iter().map(|k| (*k, AtomicU64::new(0))).collect());
        let rng = Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed)));
        let c = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(handle(client, upstream, rng.clone(), mix, c.clone()));
            }
        });
        Proxy { addr, counts, task }
    }

    fn count(&self, f: Fault) -> u64 {
        self.counts[&f].load(Ordering::Relaxed)
    }

    fn faults(&self) -> u64 {
        KINDS
            .iter()
            .filter(|k| **k != Fault::Clean)
            .map(|k| self.count(*k))
            .sum()
    }

    fn summary(&self) -> String {
        // "requests" counts what the proxy saw start; a request cut by a fault may be resent.
        KINDS
            .iter()
            .map(|k| format!("{k:?} {}", self.count(*k)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection, both directions in one loop. HTTP/1.1 without pipelining (what reqwest
/// sends): client bytes that follow response bytes start a new request, and every request
/// draws its own fault, so kept-alive connections are not spared.
async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    rng: Arc<Mutex<ChaCha8Rng>>,
    mix: Mix,
    counts: Counts,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut sbuf = vec![0u8; 16 * 1024];
    let mut fault = Fault::Clean;
    let mut new_request = true;
    loop {
        tokio::select! {
            r = client.read(&mut cbuf) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                if new_request {
                    fault = roll(&rng, &mix);
                    counts[&fault].fetch_add(1, Ordering::Relaxed);
                    new_request = false;
                }
                let chunk = &cbuf[..n];
                match fault {
                    Fault::HalfOpen => {
                        // Swallow everything, answer nothing, keep the socket open until the
                        // client gives up.
                        drop(server);
                        while matches!(client.read(&mut cbuf).await, Ok(n) if n > 0) {}
                        return;
                    }
                    Fault::ResetRequest => {
                        let _ = server.write_all(&chunk[..n / 2]).await;
                        reset(client, server);
                        return;
                    }
                    _ => {
                        if !forward(&mut server, chunk, fault, &mix).await {
                            return;
                        }
                    }
                }
            }
            r = server.read(&mut sbuf) => {
                let n = match r { Ok(0) | Err(_) => { let _ = client.shutdown().await; return } Ok(n) => n };
                new_request = true;
                let chunk = &sbuf[..n];
                match fault {
                    Fault::ResetResponse => {
                        let _ = client.write_all(&chunk[..n / 2]).await;
                        reset(client, server);
                        return;
                    }
                    Fault::Truncate => {
                        let _ = client.write_all(&chunk[..n / 2]).await;
                        let _ = client.shutdown().await;
                        return;
                    }
                    _ => {
                        if !forward(&mut client, chunk, fault, &mix).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}

fn roll(rng: &Mutex<ChaCha8Rng>, mix: &Mix) -> Fault {
    let x: f64 = rng.lock().unwrap().gen();
    let table = [
        (mix.latency, Fault::Latency),
        (mix.throttle, Fault::Throttle),
        (mix.reset_request, Fault::ResetRequest),
        (mix.reset_response, Fault::ResetResponse),
        (mix.truncate, Fault::Truncate),
        (mix.half_open, Fault::HalfOpen),
    ];
    let mut acc = 0.0;
    table
        .iter()
        .find(|(p, _)| {
            acc += p;
            x < acc
        })
        .map_or(Fault::Clean, |(_, f)| *f)
}

/// Both sockets closed with RST (SO_LINGER 0), not FIN.
fn reset(a: TcpStream, b: TcpStream) {
    for s in [&a, &b] {
        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    }
}

async fn forward(to: &mut TcpStream, chunk: &[u8], fault: Fault, mix: &Mix) -> bool {
    match fault {
        Fault::Latency => {
            tokio::time::sleep(Duration::from_millis(mix.latency_ms)).await;
            to.write_all(chunk).await.is_ok()
        }
        Fault::Throttle => {
            for piece in chunk.chunks(256) {
                if to.write_all(piece).await.is_err() {
                    return false;
                }
                tokio::time::sleep(Duration::from_secs_f64(
                    piece.len() as f64 / mix.bytes_per_sec as f64,
                ))
                .await;
            }
            true
        }
        _ => to.write_all(chunk).await.is_ok(),
    }
}

// ---- scenarios ---------------------------------------------------------------------------------

fn seed() -> u64 {
    std::env::var("BGSYNC_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

struct Scenario {
    name: &'static str,
    mutations: usize,
    entities: usize,
    mix: Mix,
    server: FaultConfig,
    /// Revoke every access token this often (a 401 storm); refresh must keep up.
    revoke_every: Option<Duration>,
    request_timeout_ms: u64,
}

async fn run(s: Scenario) {
    let seed = seed();
    let auth = s.revoke_every.map(|_| AuthSetup {
        access_tokens: vec!["t0".into()],
        refresh_token: "r0".into(),
    });
    let server = match auth {
        Some(a) => server_with_auth(s.server.clone(), a).await,
        None => server(s.server.clone()).await,
    };
    let proxy = Proxy::start(server.addr, seed, s.mix).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: SyncConfig = config(&format!("http://{}", proxy.addr));
    cfg.concurrency = 8;
    cfg.request_timeout_ms = s.request_timeout_ms;
    cfg.max_attempts = 1_000; // the suite is about loss and duplicates, not giving up
    let bs = engine(&dir, cfg).await;
    if s.revoke_every.is_some() {
        bs.set_auth(AuthConfig {
            access_token: Some("t0".into()),
            refresh_token: Some("r0".into()),
            refresh_url: Some("/auth/refresh".into()),
        })
        .await
        .unwrap();
    }
    let b = backlog(s.mutations, s.entities, seed);
    let enq = bs.enqueue_many(b.mutations.clone()).await.unwrap();
    let order: Vec<(String, String)> = b
        .mutations
        .iter()
        .zip(&enq)
        .map(|(m, e)| {
            (
                format!("{}/{}", m.entity.kind, m.entity.id),
                e.idempotency_key.clone(),
            )
        })
        .collect();

    // The 401 storm: every access token revoked periodically, also in the middle of drains.
    let storm = s.revoke_every.map(|every| {
        let admin = server.addr;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Ok(mut c) = TcpStream::connect(admin).await {
                    let _ = c
                        .write_all(
                            b"POST /_admin/revoke-tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    let mut sink = Vec::new();
                    let _ = c.read_to_end(&mut sink).await;
                }
            }
        })
    });
    let started = Instant::now();
    let drains = drain_until_empty(&bs, s.mutations).await;
    let elapsed = started.elapsed();
    if let Some(t) = storm {
        t.abort();
    }

    assert_state_matches(&bs, &server, &b).await;
    assert_applied_once(&server, s.mutations).await;
    assert_entity_order(&server, &order).await;
    let st = server.stats();
    println!(
        "fault[{}] seed {seed}: {} mutations, {} drains, {:.1} s; proxy: {} faults in {} requests ({}); \
         server: {} errors, {} drops, {} lost responses, {} replays, {} 401s, {} refreshes; lost 0, duplicated 0",
        s.name,
        s.mutations,
        drains,
        elapsed.as_secs_f64(),
        proxy.faults(),
        proxy.faults() + proxy.count(Fault::Clean),
        proxy.summary(),
        st.injected_errors,
        st.injected_drops,
        st.injected_commit_then_drops,
        st.replayed,
        st.unauthorized,
        st.refreshes,
    );
    assert!(proxy.faults() > 0, "the scenario injected nothing");
    server.shutdown().await;
}

/// Drain until the queue is empty (bounded).
async fn drain_until_empty(bs: &BackgroundSync, mutations: usize) -> usize {
    let max_drains = 50 + mutations / 20;
    for n in 1..=max_drains {
        let r = bs
            .drain(DrainOptions {
                budget: Duration::from_secs(10),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(r.dead, 0, "no dead letters expected: {:?}", r.last_error);
        let st = bs.status().await.unwrap();
        if st.pending == 0 && st.in_flight == 0 && st.dead == 0 {
            return n;
        }
    }
    panic!(
        "not drained after {max_drains} drains: {:?}",
        bs.status().await.unwrap()
    );
}

/// Per entity, the server applied the mutations in enqueue order.
async fn assert_entity_order(server: &RunningServer, expected: &[(String, String)]) {
    let log = server.applied_log().await;
    let pos: HashMap<&str, usize> = log
        .iter()
        .enumerate()
        .map(|(i, e)| (e.idempotency_key.as_str(), i))
        .collect();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (entity, key) in expected {
        let p = *pos
            .get(key.as_str())
            .unwrap_or_else(|| panic!("{key} never applied"));
        if let Some(&prev) = last.get(entity.as_str()) {
            assert!(
                prev < p,
                "entity {entity}: {key} applied before an earlier mutation"
            );
        }
        last.insert(entity.as_str(), p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_bandwidth_and_slow_bodies() {
    run(Scenario {
        name: "latency+bandwidth",
        mutations: 200,
        entities: 25,
        mix: Mix {
            latency: 0.3,
            throttle: 0.2,
            latency_ms: 40,
            bytes_per_sec: 20_000,
            ..Default::default()
        },
        server: FaultConfig::default(),
        revoke_every: None,
        request_timeout_ms: 5_000,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_truncated_responses() {
    run(Scenario {
        name: "resets+truncation",
        mutations: 300,
        entities: 30,
        mix: Mix {
            reset_request: 0.08,
            reset_response: 0.08,
            truncate: 0.08,
            ..Default::default()
        },
        server: FaultConfig::default(),
        revoke_every: None,
        request_timeout_ms: 2_000,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_cost_a_timeout_not_a_mutation() {
    run(Scenario {
        name: "half-open",
        mutations: 150,
        entities: 20,
        mix: Mix {
            half_open: 0.1,
            ..Default::default()
        },
        server: FaultConfig::default(),
        revoke_every: None,
        request_timeout_ms: 500,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_and_server_faults_and_a_401_storm_together() {
    run(Scenario {
        name: "everything",
        mutations: 300,
        entities: 30,
        mix: everything(),
        server: server_faults(seed()),
        revoke_every: Some(Duration::from_millis(400)),
        request_timeout_ms: 1_000,
    })
    .await;
}

fn everything() -> Mix {
    Mix {
        latency: 0.1,
        throttle: 0.05,
        reset_request: 0.04,
        reset_response: 0.04,
        truncate: 0.04,
        half_open: 0.03,
        latency_ms: 20,
        bytes_per_sec: 50_000,
    }
}

fn server_faults(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        error_rate: 0.1,
        error_statuses: vec![500, 503, 429],
        retry_after_secs: Some(1),
        drop_rate: 0.03,
        commit_then_drop_rate: 0.05,
        ..Default::default()
    }
}

/// The long soak: `BGSYNC_SOAK_MUTATIONS=10000 cargo test --test fault soak -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let Some(n) = std::env::var("BGSYNC_SOAK_MUTATIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        println!("soak skipped (set BGSYNC_SOAK_MUTATIONS, e.g. 10000)");
        return;
    };
    let mut server = server_faults(seed());
    server.retry_after_secs = None; // keep a long soak from idling on Retry-After floors
    run(Scenario {
        name: "soak",
        mutations: n,
        entities: (n / 20).max(10),
        mix: everything(),
        server,
        revoke_every: Some(Duration::from_secs(2)),
        request_timeout_ms: 1_000,
    })
    .await;
}

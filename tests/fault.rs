//! Network fault suite: a fault-injecting HTTP/1.1 proxy (tests/common/proxy.rs) between the
//! engine and the reference server on 127.0.0.1 — added latency, bandwidth limits with bodies
//! dribbled in small pieces, resets on accept, resets mid-request and mid-response, truncated
//! responses, half-open connections, responses withheld after the commit, requests delivered
//! after the client gave up — alone and combined with server faults (500/503/429 with
//! Retry-After, dropped connections, responses lost after the commit) and a 401 storm.
//!
//! Every scenario queues a temp-id backlog (creates, updates, notes referencing the temp ids,
//! deletes), drains it through a bounded number of drains with a small budget each, and checks:
//! nothing lost (the server's state equals the expected state), nothing applied twice, each
//! entity's mutations applied in enqueue order, no dead letters. One line of figures per scenario
//! (`--nocapture` shows them). The mutant tests make the proxy lie and check that the same checks
//! catch it.
//!
//! Knobs: `BGSYNC_SOAK_MUTATIONS` (e.g. 10000) runs one long soak mixing every fault;
//! `BGSYNC_FAULT_SEED` (default 1) seeds the backlog, the proxy and the server.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use background_sync_core::{AuthConfig, BackgroundSync, BatchConfig, DrainOptions};
use common::*;
use futures_util::FutureExt;
use proxy::{Fault, Head, Mix, Proxy};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn seed() -> u64 {
    std::env::var("BGSYNC_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

// ---- scenarios ---------------------------------------------------------------------------------

struct Scenario {
    name: &'static str,
    mutations: usize,
    entities: usize,
    /// Bytes added to every note's text: bodies big enough to be dribbled and cut mid-body.
    pad: usize,
    mix: Mix,
    server: FaultConfig,
    /// Revoke every access token this often (a 401 storm); the refresh path must keep up.
    storm: Option<Duration>,
    timeout_ms: u64,
    budget_ms: u64,
    batch: Option<u32>,
}

/// Slack over a drain's budget for scheduling noise and the final bookkeeping.
const OVERRUN_SLACK: Duration = Duration::from_millis(1_000);

impl Scenario {
    fn new(name: &'static str, mutations: usize, entities: usize, mix: Mix) -> Self {
        Self {
            name,
            mutations,
            entities,
            pad: 0,
            mix,
            server: FaultConfig::default(),
            storm: None,
            timeout_ms: 2_000,
            budget_ms: 5_000,
            batch: None,
        }
    }
}

/// What a scenario measured. `lost`..`order_violations` are computed from the server's log,
/// before any assertion runs, so a failing run still prints them.
#[derive(Debug, Default)]
struct Figures {
    lost: usize,
    duplicated: usize,
    order_violations: usize,
    dead: u64,
    pending: u64,
    drains: usize,
    wall: Duration,
    /// Longest a drain ran past its budget.
    max_overrun: Duration,
    stops: BTreeMap<String, usize>,
    /// The first `lastError` seen with each stop reason other than `Empty`.
    why: BTreeMap<String, String>,
}

struct Done {
    name: &'static str,
    /// How far past its budget a drain may return.
    overrun_limit: Duration,
    seed: u64,
    mutations: usize,
    figures: Figures,
    bs: BackgroundSync,
    server: Arc<RunningServer>,
    proxy: Proxy,
    backlog: Backlog,
    _dir: tempfile::TempDir,
}

async fn run(s: Scenario) -> Done {
    let seed = seed();
    let server = Arc::new(match s.storm {
        Some(_) => {
            server_with_auth(
                s.server.clone(),
                AuthSetup {
                    access_tokens: vec!["t0".into()],
                    refresh_token: "r0".into(),
                    ..Default::default()
                },
            )
            .await
        }
        None => server(s.server.clone()).await,
    });
    let proxy = Proxy::start(server.addr, seed, s.mix.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&format!("http://{}", proxy.addr));
    cfg.concurrency = 8;
    cfg.request_timeout_ms = s.timeout_ms;
    cfg.max_attempts = 1_000; // this suite is about loss and duplicates, not about giving up
    cfg.batch = s.batch.map(|n| BatchConfig {
        path: "/batch".into(),
        max_items: n,
    });
    let bs = engine(&dir, cfg).await;
    if s.storm.is_some() {
        bs.set_auth(AuthConfig {
            access_token: Some("t0".into()),
            refresh_token: Some("r0".into()),
            refresh_url: Some("/auth/refresh".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let b = padded(backlog(s.mutations, s.entities, seed), s.pad);
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

    let storm = s.storm.map(|every| {
        let server = server.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                server.revoke_tokens();
            }
        })
    });
    let budget = Duration::from_millis(s.budget_ms);
    let max_drains = 30 + s.mutations / 10;
    let mut f = Figures::default();
    let started = Instant::now();
    while f.drains < max_drains {
        f.drains += 1;
        let t = Instant::now();
        let r = bs
            .drain(DrainOptions {
                budget,
                ..Default::default()
            })
            .await
            .unwrap();
        f.max_overrun = f.max_overrun.max(t.elapsed().saturating_sub(budget));
        let reason = format!("{:?}", r.stop_reason);
        *f.stops.entry(reason.clone()).or_default() += 1;
        if reason != "Empty" {
            f.why
                .entry(reason)
                .or_insert_with(|| r.last_error.clone().unwrap_or_default());
        }
        let st = bs.status().await.unwrap();
        if st.pending == 0 && st.in_flight == 0 {
            break;
        }
    }
    f.wall = started.elapsed();
    if let Some(t) = storm {
        t.abort();
        let _ = t.await;
    }
    let st = bs.status().await.unwrap();
    (f.dead, f.pending) = (st.dead, st.pending + st.in_flight);
    count_log(&server, &order, &mut f).await;

    let ss = server.stats();
    let stops: Vec<String> = f.stops.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "fault[{}] seed {seed}: {} mutations, lost {}, duplicated {}, out of order {}, dead {}, \
         left {}; {} drains ({}), {:.1} s to drain, max overrun {} ms; proxy: {} faults over {} \
         requests on {} connections ({}); server: {} errors, {} drops, {} lost responses, {} \
         replays, {} 401s, {} refreshes",
        s.name,
        s.mutations,
        f.lost,
        f.duplicated,
        f.order_violations,
        f.dead,
        f.pending,
        f.drains,
        stops.join(", "),
        f.wall.as_secs_f64(),
        f.max_overrun.as_millis(),
        proxy.faults(),
        proxy.decisions() - proxy.count(Fault::ResetOnAccept),
        proxy.connections(),
        proxy.summary(),
        ss.injected_errors,
        ss.injected_drops,
        ss.injected_commit_then_drops,
        ss.replayed,
        ss.unauthorized,
        ss.refreshes,
    );
    for (reason, error) in &f.why {
        println!(
            "fault[{}]   last error of the first {reason} drain: {error}",
            s.name
        );
    }
    // A token refresh is not clamped to the budget (see the known issue at the end): with a 401
    // storm a drain may overrun by one request timeout.
    let overrun_limit = OVERRUN_SLACK
        + s.storm
            .map_or(Duration::ZERO, |_| Duration::from_millis(s.timeout_ms));
    Done {
        name: s.name,
        overrun_limit,
        seed,
        mutations: s.mutations,
        figures: f,
        bs,
        server,
        proxy,
        backlog: b,
        _dir: dir,
    }
}

impl Done {
    /// The delivery promise under faults: everything delivered, once, in order.
    async fn check(self) {
        let f = &self.figures;
        let ctx = format!("scenario {} (seed {})", self.name, self.seed);
        assert_eq!(f.pending, 0, "{ctx}: not drained after {} drains", f.drains);
        assert_eq!(
            f.dead,
            0,
            "{ctx}: dead letters: {:?}",
            self.bs.dead_letters(10, 0).await
        );
        assert_eq!(f.lost, 0, "{ctx}: mutations lost");
        assert_eq!(f.duplicated, 0, "{ctx}: mutations applied twice");
        assert_eq!(f.order_violations, 0, "{ctx}: per-entity order broken");
        assert!(
            f.max_overrun <= self.overrun_limit,
            "{ctx}: a drain ran {:?} past its budget",
            f.max_overrun
        );
        assert_state_matches(&self.bs, &self.server, &self.backlog).await;
        assert_applied_once(&self.server, self.mutations).await;
        assert!(self.proxy.faults() > 0, "{ctx}: the proxy injected nothing");
        if let Ok(server) = Arc::try_unwrap(self.server) {
            server.shutdown().await;
        }
    }
}

/// Bigger notes (text padded), in the mutations and in the expectation alike.
fn padded(mut b: Backlog, pad: usize) -> Backlog {
    if pad == 0 {
        return b;
    }
    let filler: String = "field notes ".chars().cycle().take(pad).collect();
    for m in b.mutations.iter_mut().filter(|m| m.entity.kind == "note") {
        let Some(Value::Object(body)) = &mut m.body else {
            continue;
        };
        if let Some(Value::String(t)) = body.get_mut("text") {
            t.push_str(&filler);
        }
        if let Some(Value::Object(exp)) = m.temp_id.as_ref().and_then(|t| b.expected_notes.get_mut(t)) {
            if let Some(Value::String(t)) = exp.get_mut("text") {
                t.push_str(&filler);
            }
        }
    }
    b
}

/// Lost, duplicated and out-of-order mutations, from the server's log of applied changes.
async fn count_log(server: &RunningServer, order: &[(String, String)], f: &mut Figures) {
    let log = server.applied_log().await;
    let mut applied: HashMap<&str, (usize, usize)> = HashMap::new(); // key → (times, first seq)
    for (i, e) in log.iter().enumerate() {
        applied.entry(e.idempotency_key.as_str()).or_insert((0, i)).0 += 1;
    }
    let expected: std::collections::HashSet<&str> = order.iter().map(|(_, k)| k.as_str()).collect();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (entity, key) in order {
        match applied.get(key.as_str()) {
            None => f.lost += 1,
            Some(&(times, pos)) => {
                f.duplicated += times - 1;
                if last.get(entity.as_str()).is_some_and(|&prev| prev > pos) {
                    f.order_violations += 1;
                }
                last.insert(entity.as_str(), pos);
            }
        }
    }
    // A change under a key the engine never used is a copy of something (applied twice).
    f.duplicated += log
        .iter()
        .filter(|e| !expected.contains(e.idempotency_key.as_str()))
        .count();
}

/// Every network fault at once (the soak and the combined scenario).
fn every_network_fault(timeout_ms: u64) -> Mix {
    Mix {
        faults: vec![
            (Fault::Latency, 0.08),
            (Fault::Throttle, 0.05),
            (Fault::ResetRequest, 0.03),
            (Fault::ResetResponse, 0.03),
            (Fault::Truncate, 0.03),
            (Fault::HalfOpen, 0.015),
            (Fault::Stall, 0.015),
            (Fault::Late, 0.015),
        ],
        reset_on_accept: 0.03,
        latency_ms: 20,
        bytes_per_sec: 128 * 1024,
        piece: 64,
        late_ms: timeout_ms + 300,
        target: None,
    }
}

fn server_faults(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        error_rate: 0.08,
        error_statuses: vec![500, 503, 429],
        retry_after_secs: Some(1),
        drop_rate: 0.03,
        commit_then_drop_rate: 0.04,
        ..Default::default()
    }
}

// ---- the default run ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_bandwidth_and_slow_bodies() {
    let mut s = Scenario::new(
        "latency+bandwidth",
        150,
        20,
        Mix {
            faults: vec![(Fault::Latency, 0.3), (Fault::Throttle, 0.25)],
            latency_ms: 40,
            // A 4 KiB note takes ~200 ms each way, 64 bytes at a time.
            bytes_per_sec: 20 * 1024,
            piece: 64,
            ..Default::default()
        },
    );
    s.pad = 4_096;
    s.timeout_ms = 3_000;
    run(s).await.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_truncated_responses() {
    let mut s = Scenario::new(
        "resets+truncation",
        250,
        25,
        Mix {
            faults: vec![
                (Fault::ResetRequest, 0.08),
                (Fault::ResetResponse, 0.08),
                (Fault::Truncate, 0.08),
            ],
            reset_on_accept: 0.1,
            ..Default::default()
        },
    );
    s.pad = 2_048; // cuts land mid-body, not only in the head
    run(s).await.check().await;
}

/// Half-open connections, responses withheld after the commit and requests that reach the
/// server after the client gave up: each costs one request timeout, never a mutation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_stalled_and_late_requests() {
    let timeout_ms = 300;
    let mut s = Scenario::new(
        "half-open+stall+late",
        150,
        20,
        Mix {
            faults: vec![(Fault::HalfOpen, 0.05), (Fault::Stall, 0.05), (Fault::Late, 0.05)],
            late_ms: timeout_ms + 200,
            ..Default::default()
        },
    );
    s.timeout_ms = timeout_ms;
    s.budget_ms = 3_000;
    run(s).await.check().await;
}

/// The batch endpoint: a cut or withheld batch response is resent whole; the server replays
/// the items it already applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_endpoint_through_resets_and_stalls() {
    let timeout_ms = 500;
    let mut s = Scenario::new(
        "batch",
        200,
        25,
        Mix {
            faults: vec![
                (Fault::ResetRequest, 0.1),
                (Fault::ResetResponse, 0.1),
                (Fault::Truncate, 0.1),
                (Fault::Stall, 0.05),
                (Fault::Late, 0.05),
            ],
            late_ms: timeout_ms + 200,
            ..Default::default()
        },
    );
    s.batch = Some(10);
    s.timeout_ms = timeout_ms;
    s.budget_ms = 3_000;
    run(s).await.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_and_server_faults_and_a_401_storm_together() {
    let timeout_ms = 600;
    let mut s = Scenario::new("everything", 250, 25, every_network_fault(timeout_ms));
    s.pad = 1_024;
    s.server = server_faults(seed());
    s.storm = Some(Duration::from_millis(400));
    s.timeout_ms = timeout_ms;
    s.budget_ms = 3_000;
    run(s).await.check().await;
}

// ---- the checks catch a lying network ----------------------------------------------------------

/// Mutants: a proxy that acknowledges updates without forwarding them (lost), and one that
/// forwards new notes a second time under another key (duplicated). The figures count exactly
/// what the proxy did, and the scenario's checks fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_catch_lost_and_duplicated_mutations() {
    let lying = |fault: Fault, method: &'static str, prefix: &'static str| Mix {
        faults: vec![(fault, 0.2)],
        target: Some(Arc::new(move |h: &Head| {
            h.method == method && h.path.starts_with(prefix)
        })),
        ..Default::default()
    };

    let d = run(Scenario::new(
        "mutant: fake acks",
        100,
        10,
        lying(Fault::FakeAck, "PATCH", "/visits/"),
    ))
    .await;
    let acked = d.proxy.count(Fault::FakeAck);
    assert!(acked > 0);
    assert_eq!(d.figures.lost as u64, acked);
    assert_eq!(d.figures.duplicated, 0);
    println!("(the panics printed below are the checks catching the mutants, as expected)");
    let caught = AssertUnwindSafe(d.check()).catch_unwind().await;
    assert!(caught.is_err(), "the checks missed {acked} lost updates");

    let d = run(Scenario::new(
        "mutant: duplicates",
        100,
        10,
        lying(Fault::DupFreshKey, "POST", "/notes"),
    ))
    .await;
    let copies = d.proxy.count(Fault::DupFreshKey);
    assert!(copies > 0);
    assert_eq!(d.figures.duplicated as u64, copies);
    assert_eq!(d.figures.lost, 0);
    // The shared helpers alone catch it too (one more note than expected, a key applied twice).
    let state = AssertUnwindSafe(assert_state_matches(&d.bs, &d.server, &d.backlog))
        .catch_unwind()
        .await;
    assert!(
        state.is_err(),
        "assert_state_matches missed {copies} duplicated notes"
    );
    let once = AssertUnwindSafe(assert_applied_once(&d.server, d.mutations))
        .catch_unwind()
        .await;
    assert!(
        once.is_err(),
        "assert_applied_once missed {copies} duplicated notes"
    );
}

// ---- the soak ----------------------------------------------------------------------------------

/// `BGSYNC_SOAK_MUTATIONS=10000 cargo test -p background-sync-core --test fault soak -- --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let Some(n) = std::env::var("BGSYNC_SOAK_MUTATIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        println!("fault[soak] skipped (set BGSYNC_SOAK_MUTATIONS, e.g. 10000)");
        return;
    };
    let timeout_ms = 800;
    let mut s = Scenario::new("soak", n, (n / 20).max(10), every_network_fault(timeout_ms));
    s.pad = 1_024;
    s.server = server_faults(seed());
    s.storm = Some(Duration::from_secs(2));
    s.timeout_ms = timeout_ms;
    s.budget_ms = 10_000;
    run(s).await.check().await;
}

// ---- fixed in issue 11 (were #[ignore]d reproductions; the text says what they caught) -------------

/// A token refresh that hangs (a half-open connection on `refreshUrl`) holds the drain for the
/// full `requestTimeoutMs`: the refresh is neither clamped to the drain's remaining budget nor
/// raced against cancellation (crates/background-sync-core/src/drain.rs `Run::settle` and crates/background-sync-core/src/uploads.rs call
/// `AuthCell::unauthorized` with `request_timeout_ms`). Seen: a 1 s budget, cancelled at 1.5 s,
/// returned after 4.0 s (= requestTimeoutMs). With the defaults (10 s timeout, 25 s background
/// budget) a drain can run ~35 s, past iOS's ~30 s background window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_token_refresh_obeys_budget_and_cancel_issue11() {
    let server = server_with_auth(
        FaultConfig::default(),
        AuthSetup {
            access_tokens: vec!["t0".into()],
            refresh_token: "r0".into(),
            ..Default::default()
        },
    )
    .await;
    let proxy = Proxy::start(
        server.addr,
        seed(),
        Mix {
            faults: vec![(Fault::HalfOpen, 1.0)],
            target: Some(Arc::new(|h: &Head| h.path == "/auth/refresh")),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&format!("http://{}", proxy.addr));
    cfg.request_timeout_ms = 4_000;
    let bs = engine(&dir, cfg).await;
    bs.set_auth(AuthConfig {
        access_token: Some("t0".into()),
        refresh_token: Some("r0".into()),
        refresh_url: Some("/auth/refresh".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    bs.enqueue_many(backlog(20, 5, seed()).mutations).await.unwrap();
    server.revoke_tokens(); // the first request gets a 401, the refresh hangs
    let cancel = background_sync_core::CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        c.cancel();
    });
    let t = Instant::now();
    let r = bs
        .drain(DrainOptions {
            budget: Duration::from_secs(1),
            cancel,
            ..Default::default()
        })
        .await
        .unwrap();
    let took = t.elapsed();
    println!(
        "fault[refresh hang] 1 s budget, cancelled at 1.5 s: returned after {:.2} s ({:?}, {:?}); proxy {}",
        took.as_secs_f64(),
        r.stop_reason,
        r.last_error,
        proxy.summary()
    );
    assert_eq!(proxy.count(Fault::HalfOpen), 1, "the refresh was not attempted");
    assert!(
        took < Duration::from_millis(1_700),
        "a 1 s drain cancelled at 1.5 s ran {took:?}"
    );
}

/// A fresh connection that the peer resets right after accepting it ("tcp connect error:
/// Connection reset by peer") is classified `Unreachable` (reqwest's `is_connect()`), so the
/// whole drain stops with `noNetwork`, although the API answers every other connection; the
/// desktop scheduler then backs off as if offline (30 s, 1 min, ...). Only connections the proxy
/// resets before the client's connect future completes take this path (a race: ~1 in 4 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_connect_is_not_offline_issue11() {
    let s = Scenario::new(
        "reset on accept",
        200,
        25,
        Mix {
            reset_on_accept: 0.3,
            ..Default::default()
        },
    );
    let d = run(s).await;
    let offline = d.figures.stops.get("NoNetwork").copied().unwrap_or(0);
    assert_eq!(
        offline, 0,
        "{offline} drains stopped as 'no network' while the API was reachable"
    );
    d.check().await;
}

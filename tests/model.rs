//! Model-based checker of the delivery contract (README "Delivery contract", DESIGN.md).
//!
//! Each case is a seeded random program of operations — enqueue and enqueueMany (references in
//! any order, temp ids), retry/edit/discard of dead letters, setAuth/clearAuth (also in the
//! middle of a drain), configure, time passing beyond `retentionMs`, wall-clock steps, drains
//! with random budgets and cancellations, and two drainers in separate processes — run against
//! `tests/common/oracle.rs`, a server that picks a random fate for every request (2xx, 4xx,
//! 409 while a key is in progress, 5xx/429 with Retry-After, answers slower than the client's
//! timeout, drops before and after commit, black holes).
//!
//! The oracle is written from the contract, not from the code. After every operation:
//! - per entity, mutations take effect in enqueue order, and never past a dead letter;
//! - a mutation takes effect at most once (under any key), and never with an unresolved temp id;
//! - with one lane, no request starts while a sendable row of higher (inherited) priority waits;
//! - a drain returns within budget + `SLACK`, and within `CANCEL_BOUND` of a cancellation;
//! - nothing is sent with credentials the app cleared.
//!
//! At the end the server heals, dead letters are retried, and every mutation that was not
//! discarded must have taken effect exactly once: nothing acknowledged is lost.
//!
//! A failure prints the seed and a shrunk operation list. Knobs: `BGSYNC_MODEL_CASES` (default
//! 8), `BGSYNC_MODEL_SEED` (run one seed), `BGSYNC_MODEL_OPS` (operations per case, default 16).

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use background_sync_core::{
    AuthConfig, BackgroundSync, CancellationToken, Clock, DrainOptions, OpenOptions, Priority, SyncConfig,
    SystemClock,
};
use common::mutation;
use oracle::{Arrival, Fate, Oracle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How far past its budget a drain may return (documented in README "Deadlines").
const SLACK: Duration = Duration::from_millis(1_000);
/// How soon after a cancellation a drain must return.
const CANCEL_BOUND: Duration = Duration::from_millis(700);
const RETENTION_MS: u64 = 60_000;
const TIMEOUT_MS: u64 = 600;
const CHILD_ENV: &str = "BGSYNC_MODEL_CHILD_DB";

/// Wall clock the test can step; the engine never sees real time jump otherwise.
struct StepClock(AtomicI64);
impl Clock for StepClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
enum Spec {
    CreateVisit {
        v: usize,
    },
    PatchVisit {
        v: usize,
    },
    DeleteVisit {
        v: usize,
    },
    /// A note (its own entity) that references visit `v`'s temp id in its body.
    Note {
        n: usize,
        v: usize,
    },
    /// A plain update of an entity of its own (bursts of work).
    Item {
        i: usize,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(Vec<(Spec, Priority)>),
    Drain {
        budget_ms: u64,
        cancel_ms: Option<u64>,
    },
    /// A second process drains the same file while this one does.
    DrainTwo {
        budget_ms: u64,
    },
    /// clearAuth while a drain is running.
    ClearAuthMidDrain {
        budget_ms: u64,
        at_ms: u64,
    },
    SetAuth,
    ClearAuth,
    Retry(usize),
    Edit(usize),
    Discard(usize),
    Configure {
        concurrency: u32,
    },
    /// Time passes (beyond retention): the engine's clock moves forward for good.
    Advance(i64),
    /// The wall clock is stepped (NTP, the user): forward or backward.
    Step(i64),
}

fn prio(rng: &mut ChaCha8Rng) -> Priority {
    [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ][rng.gen_range(0..4)]
}

fn gen_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ops = Vec::new();
    let mut visits = 0usize;
    let mut notes = 0usize;
    let mut created: Vec<usize> = Vec::new();
    let spec = |rng: &mut ChaCha8Rng, visits: &mut usize, notes: &mut usize, created: &mut Vec<usize>| {
        let r = rng.gen_range(0..100);
        if created.is_empty() || r < 30 {
            *visits += 1;
            created.push(*visits);
            Spec::CreateVisit { v: *visits }
        } else {
            let v = created[rng.gen_range(0..created.len())];
            if r < 70 {
                Spec::PatchVisit { v }
            } else if r < 92 {
                *notes += 1;
                Spec::Note { n: *notes, v }
            } else {
                created.retain(|c| *c != v);
                Spec::DeleteVisit { v }
            }
        }
    };
    while ops.len() < n {
        let r = rng.gen_range(0..100);
        let op = match r {
            0..=29 => {
                let k = if rng.gen_bool(0.4) { rng.gen_range(2..6) } else { 1 };
                let mut items: Vec<(Spec, Priority)> = (0..k)
                    .map(|_| {
                        (
                            spec(&mut rng, &mut visits, &mut notes, &mut created),
                            prio(&mut rng),
                        )
                    })
                    .collect();
                // enqueueMany with references placed before their create.
                if k > 1 && rng.gen_bool(0.3) {
                    items.reverse();
                }
                Op::Enqueue(items)
            }
            30..=54 => Op::Drain {
                budget_ms: rng.gen_range(300..2_500),
                cancel_ms: rng.gen_bool(0.25).then(|| rng.gen_range(50..1_500)),
            },
            55..=59 => Op::DrainTwo {
                budget_ms: rng.gen_range(2_500..4_000),
            },
            60..=62 => Op::ClearAuthMidDrain {
                budget_ms: rng.gen_range(800..2_000),
                at_ms: rng.gen_range(50..600),
            },
            63..=66 => Op::SetAuth,
            67..=68 => Op::ClearAuth,
            69..=75 => Op::Retry(rng.gen_range(0..8)),
            76..=79 => Op::Edit(rng.gen_range(0..8)),
            80..=82 => Op::Discard(rng.gen_range(0..8)),
            83..=88 => Op::Configure {
                concurrency: rng.gen_range(1..4),
            },
            89..=93 => Op::Advance(RETENTION_MS as i64 * 2),
            _ => Op::Step(if rng.gen_bool(0.5) { 3_600_000 } else { -3_600_000 }),
        };
        ops.push(op);
    }
    ops
}

fn fate(rng: &mut ChaCha8Rng) -> Fate {
    match rng.gen_range(0..100) {
        0..=59 => Fate::Ok,
        60..=67 => Fate::Transient(503, rng.gen_bool(0.5).then_some(0)),
        68..=71 => Fate::Transient(429, Some(rng.gen_range(0..2))),
        72..=74 => Fate::Reject(422),
        75..=83 => Fate::Slow(rng.gen_range(50..1_200)),
        84..=89 => Fate::DropBefore,
        90..=96 => Fate::CommitThenDrop,
        _ => Fate::BlackHole,
    }
}

/// The server's fate for each request, from the case's RNG. `slow`: every mutation is answered
/// slowly (but within the client's timeout), so a drain is mid-request most of the time: what a
/// second drainer must never interrupt.
fn chooser(rng: Arc<Mutex<ChaCha8Rng>>, mode: Mode) -> oracle::Chooser {
    Box::new(move |a: &Arrival| {
        if a.mid.is_none() {
            return Fate::Ok;
        }
        let mut r = rng.lock().unwrap();
        match mode {
            Mode::Random => fate(&mut r),
            Mode::Slow => Fate::Slow(r.gen_range(200..450)),
            Mode::Storm => Fate::Transient(503, Some(1)),
        }
    })
}

#[derive(Clone, Copy)]
enum Mode {
    Random,
    /// Every mutation answered slowly, within the client's timeout.
    Slow,
    /// Every mutation answered 503 with Retry-After: 1.
    Storm,
}

/// What the model knows of one enqueued mutation.
#[derive(Debug, Clone)]
struct M {
    mid: u64,
    id: String,
    entity: String,
    prio: Priority,
    /// Mids of the creates it references (other entities).
    refs: Vec<u64>,
    enqueued: Instant,
    discarded: Option<Instant>,
    is_create: bool,
}

struct World {
    seed: u64,
    oracle: Oracle,
    bs: BackgroundSync,
    db: std::path::PathBuf,
    clock: Arc<StepClock>,
    cfg: SyncConfig,
    muts: Vec<M>,
    /// visit index → mid of its create
    visit_create: HashMap<usize, u64>,
    next_mid: u64,
    auth_on: bool,
    /// Drains with one lane: (start, end) — checked for priority order.
    single_lane: Vec<(Instant, Instant)>,
    failures: Vec<String>,
    fate_rng: Arc<Mutex<ChaCha8Rng>>,
    next_item: usize,
    _dir: tempfile::TempDir,
}

fn visit_temp(v: usize) -> String {
    format!("tmp-v{v}")
}

impl World {
    async fn new(seed: u64) -> World {
        let rng = Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x5eed)));
        let oracle = Oracle::start(chooser(rng.clone(), Mode::Random)).await;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("outbox.db");
        let clock = Arc::new(StepClock(AtomicI64::new(0)));
        let bs = BackgroundSync::open_with(&db, OpenOptions::default().seed(seed).clock(clock.clone()))
            .await
            .unwrap();
        let mut cfg = SyncConfig {
            base_url: oracle.base_url.clone(),
            ..Default::default()
        };
        cfg.backoff.initial_ms = 20;
        cfg.backoff.max_ms = 400;
        cfg.request_timeout_ms = TIMEOUT_MS;
        cfg.max_attempts = 4;
        cfg.retention_ms = RETENTION_MS;
        cfg.lease_ttl_ms = 1_000;
        cfg.concurrency = 1;
        bs.configure(cfg.clone()).await.unwrap();
        World {
            seed,
            oracle,
            bs,
            db,
            clock,
            cfg,
            muts: Vec::new(),
            visit_create: HashMap::new(),
            next_mid: 0,
            auth_on: false,
            single_lane: Vec::new(),
            failures: Vec::new(),
            fate_rng: rng,
            next_item: 0,
            _dir: dir,
        }
    }

    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    async fn enqueue(&mut self, items: &[(Spec, Priority)]) {
        let mut batch = Vec::new();
        let mut metas = Vec::new();
        // Creates of this call, wherever they stand in it (a reference may come first).
        let first_mid = self.next_mid + 1;
        let creates_here: HashMap<usize, u64> = items
            .iter()
            .enumerate()
            .filter_map(|(i, (spec, _))| match spec {
                Spec::CreateVisit { v } => Some((*v, first_mid + i as u64)),
                _ => None,
            })
            .collect();
        // An update of a visit placed before its own create in one call could never be sent
        // (it would wait behind itself): the contract says the call is refused.
        let refused = items.iter().enumerate().any(|(i, (spec, _))| match spec {
            Spec::PatchVisit { v } | Spec::DeleteVisit { v } => items
                .iter()
                .skip(i + 1)
                .any(|(later, _)| matches!(later, Spec::CreateVisit { v: c } if c == v)),
            _ => false,
        });
        for (spec, p) in items {
            self.next_mid += 1;
            let mid = self.next_mid;
            let known = |v: &usize, here: &HashMap<usize, u64>, vc: &HashMap<usize, u64>| {
                here.contains_key(v) || vc.contains_key(v)
            };
            let (mut m, entity, refs, is_create) = match spec {
                Spec::CreateVisit { v } => {
                    let mut m = mutation(
                        "POST",
                        "/visits",
                        Some(json!({"site": v})),
                        "visit",
                        &visit_temp(*v),
                    );
                    m.temp_id = Some(visit_temp(*v));
                    (m, format!("visit/{v}"), vec![], true)
                }
                Spec::PatchVisit { v } | Spec::DeleteVisit { v } => {
                    // A shrunk program may have lost the create: skip what a real app could not do.
                    if !known(v, &creates_here, &self.visit_create) {
                        continue;
                    }
                    let m = if matches!(spec, Spec::PatchVisit { .. }) {
                        mutation(
                            "PATCH",
                            &format!("/visits/{}", visit_temp(*v)),
                            Some(json!({"m": mid})),
                            "visit",
                            &visit_temp(*v),
                        )
                    } else {
                        mutation(
                            "DELETE",
                            &format!("/visits/{}", visit_temp(*v)),
                            None,
                            "visit",
                            &visit_temp(*v),
                        )
                    };
                    (m, format!("visit/{v}"), vec![], false)
                }
                Spec::Item { i } => (
                    mutation(
                        "PUT",
                        &format!("/items/{i}"),
                        Some(json!({"i": i})),
                        "item",
                        &i.to_string(),
                    ),
                    format!("item/{i}"),
                    vec![],
                    false,
                ),
                Spec::Note { n, v } => {
                    if !known(v, &creates_here, &self.visit_create) {
                        continue;
                    }
                    let t = format!("tmp-n{n}");
                    let mut m = mutation(
                        "POST",
                        "/notes",
                        Some(json!({"visit": visit_temp(*v)})),
                        "note",
                        &t,
                    );
                    m.temp_id = Some(t);
                    let create = creates_here.get(v).or(self.visit_create.get(v)).copied();
                    (m, format!("note/{n}"), create.into_iter().collect(), true)
                }
            };
            m.priority = *p;
            m.headers.insert("X-Mid".into(), mid.to_string());
            batch.push(m);
            metas.push((mid, entity, *p, refs, is_create));
        }
        if batch.is_empty() {
            return;
        }
        if refused {
            match self.bs.enqueue_many(batch).await {
                Err(e) if e.kind() == "invalidInput" => {}
                other => self.fail(format!(
                    "enqueueMany with an update before its own create was not refused: {other:?}"
                )),
            }
            return;
        }
        match self.bs.enqueue_many(batch).await {
            Ok(out) => {
                let now = Instant::now();
                for ((mid, entity, p, refs, is_create), e) in metas.into_iter().zip(out) {
                    self.muts.push(M {
                        mid,
                        id: e.id,
                        entity,
                        prio: p,
                        refs,
                        enqueued: now,
                        discarded: None,
                        is_create,
                    });
                }
                self.visit_create.extend(creates_here);
            }
            Err(e) => self.fail(format!("enqueue refused: {e}")),
        }
    }

    async fn timed_drain(&mut self, budget_ms: u64, cancel_ms: Option<u64>) {
        let cancel = CancellationToken::new();
        if let Some(ms) = cancel_ms {
            let c = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                c.cancel();
            });
        }
        let lanes = self.cfg.concurrency;
        let start = Instant::now();
        let budget = Duration::from_millis(budget_ms);
        let r = tokio::time::timeout(
            budget + Duration::from_secs(20),
            self.bs.drain(DrainOptions {
                budget,
                cancel,
                ..Default::default()
            }),
        )
        .await;
        let took = start.elapsed();
        match r {
            Err(_) => self.fail(format!("drain of {budget_ms} ms has not returned after {took:?}")),
            // The documented cut (README "Deadlines"): a run still waiting for SQLite (the other
            // drainer process holds the lock) at its bound answers with this error; the time
            // bound below and the end state still hold it to the contract.
            Ok(Err(e)) if e.kind() == "storage" && e.to_string().contains("while it was still waiting") => {}
            Ok(Err(e)) => self.fail(format!("drain failed: {e}")),
            Ok(Ok(_)) => {}
        }
        let bound = match cancel_ms {
            Some(c) if c < budget_ms => Duration::from_millis(c) + CANCEL_BOUND,
            _ => budget + SLACK,
        };
        if took > bound {
            self.fail(format!(
                "drain (budget {budget_ms} ms, cancel {cancel_ms:?}) returned after {took:?} > {bound:?}"
            ));
        }
        if lanes == 1 {
            self.single_lane.push((start, Instant::now()));
        }
    }

    async fn run(&mut self, op: &Op) {
        match op {
            Op::Enqueue(items) => self.enqueue(items).await,
            Op::Drain { budget_ms, cancel_ms } => self.timed_drain(*budget_ms, *cancel_ms).await,
            Op::DrainTwo { budget_ms } => {
                // Slow answers for the length of this drain: it is mid-request when the lease
                // would lapse if it were not renewed.
                self.oracle
                    .set_chooser(chooser(self.fate_rng.clone(), Mode::Slow));
                // Enough work that the drain is still sending when its lease would lapse.
                let burst: Vec<(Spec, Priority)> = (0..10 * self.cfg.concurrency as usize)
                    .map(|_| {
                        self.next_item += 1;
                        (Spec::Item { i: self.next_item }, Priority::Normal)
                    })
                    .collect();
                self.enqueue(&burst).await;
                let exe = std::env::current_exe().unwrap();
                let mut child = tokio::process::Command::new(exe)
                    .args(["--exact", "model_child", "--nocapture", "--test-threads=1"])
                    .env(CHILD_ENV, &self.db)
                    .env("BGSYNC_MODEL_CHILD_BUDGET", budget_ms.to_string())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
                self.timed_drain(*budget_ms, None).await;
                self.oracle
                    .set_chooser(chooser(self.fate_rng.clone(), Mode::Random));
                if tokio::time::timeout(Duration::from_millis(budget_ms + 15_000), child.wait())
                    .await
                    .is_err()
                {
                    self.fail("the second drainer process did not return".into());
                }
            }
            Op::ClearAuthMidDrain { budget_ms, at_ms } => {
                let bs = self.bs.clone();
                let oracle = self.oracle.clone();
                let at = *at_ms;
                let h = tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(at)).await;
                    bs.clear_auth().await.unwrap();
                    // A request already on the wire may still arrive; a new one may not.
                    oracle.forbid_auth(Some(Instant::now() + Duration::from_millis(100)));
                });
                self.timed_drain(*budget_ms, None).await;
                let _ = h.await;
                self.auth_on = false;
            }
            Op::SetAuth => {
                self.oracle.forbid_auth(None);
                self.bs
                    .set_auth(AuthConfig {
                        access_token: Some(format!("token-{}", self.seed)),
                        refresh_token: None,
                        refresh_url: None,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                self.auth_on = true;
            }
            Op::ClearAuth => {
                self.bs.clear_auth().await.unwrap();
                self.oracle.forbid_auth(Some(Instant::now()));
                self.auth_on = false;
            }
            Op::Retry(k) | Op::Edit(k) | Op::Discard(k) => {
                let dead = self.bs.dead_letters(100, 0).await.unwrap();
                if dead.is_empty() {
                    return;
                }
                let d = &dead[k % dead.len()];
                match op {
                    Op::Retry(_) => self.bs.retry(&d.id).await.unwrap(),
                    Op::Edit(_) => {
                        let Some(mut body) = d.body.clone() else { return };
                        body["edited"] = json!(true);
                        self.bs.edit(&d.id, Some(body)).await.unwrap();
                    }
                    _ => {
                        // Discarding a create would strand what references it: apps discard
                        // edits, not the records others point at.
                        let Some(m) = self.muts.iter_mut().find(|m| m.id == d.id) else {
                            return;
                        };
                        if m.is_create {
                            return;
                        }
                        m.discarded = Some(Instant::now());
                        self.bs.discard(&d.id).await.unwrap();
                    }
                }
            }
            Op::Configure { concurrency } => {
                self.cfg.concurrency = *concurrency;
                self.bs.configure(self.cfg.clone()).await.unwrap();
            }
            Op::Step(ms) if *ms < 0 => {
                // A 503 storm leaves rows in backoff, then the clock is corrected back.
                self.oracle
                    .set_chooser(chooser(self.fate_rng.clone(), Mode::Storm));
                self.timed_drain(500, None).await;
                self.oracle
                    .set_chooser(chooser(self.fate_rng.clone(), Mode::Random));
                self.clock.0.fetch_add(*ms, Ordering::SeqCst);
            }
            Op::Advance(ms) | Op::Step(ms) => {
                self.clock.0.fetch_add(*ms, Ordering::SeqCst);
            }
        }
    }

    /// The invariants that hold after every operation.
    fn check(&mut self) {
        for v in self.oracle.violations() {
            self.fail(v);
        }
        let arrivals = self.oracle.arrivals();
        let applied = self.oracle.applied();
        let by_mid: HashMap<u64, &M> = self.muts.iter().map(|m| (m.mid, m)).collect();
        let applied_at: HashMap<u64, Instant> = applied.iter().map(|(m, t)| (*m, *t)).collect();
        // Per-entity order, and never past a dead letter or an unapplied create it references.
        for (mid, at) in &applied {
            let Some(m) = by_mid.get(mid) else { continue };
            for e in self.muts.iter().filter(|e| e.entity == m.entity && e.mid < m.mid) {
                let gone = e.discarded.is_some_and(|d| d < *at);
                let before = applied_at.get(&e.mid).is_some_and(|t| t <= at);
                if !gone && !before {
                    self.failures.push(format!(
                        "{}: mid {} took effect before the earlier mid {} of its entity",
                        m.entity, m.mid, e.mid
                    ));
                }
            }
            for r in &m.refs {
                if applied_at.get(r).is_none_or(|t| t > at) {
                    self.failures.push(format!(
                        "mid {} took effect before the create {r} it references",
                        m.mid
                    ));
                }
            }
        }
        // Priority: with one lane, a request may start only if no sendable row of higher
        // inherited priority waits. "Sendable" is taken conservatively: never sent yet, every
        // earlier row of its entity and every create it references answered 2xx before.
        let eff = |m: &M, at: Instant| -> Priority {
            self.muts
                .iter()
                .filter(|o| o.entity == m.entity && o.mid >= m.mid && o.enqueued <= at)
                .map(|o| o.prio)
                .max()
                .unwrap_or(m.prio)
        };
        let ok_before = |mid: u64, at: Instant| {
            arrivals.iter().any(|a| {
                a.mid == Some(mid)
                    && a.at < at
                    && matches!(a.status, Some(s) if (200..300).contains(&s))
                    && matches!(a.fate, Some(Fate::Ok) | None)
            })
        };
        let mut inversions = Vec::new();
        for (start, end) in &self.single_lane {
            for b in arrivals.iter().filter(|a| a.at >= *start && a.at <= *end) {
                let Some(bm) = b.mid.and_then(|m| by_mid.get(&m)) else {
                    continue;
                };
                let bp = eff(bm, b.at);
                for x in &self.muts {
                    if x.mid == bm.mid || x.enqueued > *start || x.discarded.is_some_and(|d| d < b.at) {
                        continue;
                    }
                    if arrivals.iter().any(|a| a.mid == Some(x.mid) && a.at <= b.at) {
                        continue;
                    }
                    let ready = self
                        .muts
                        .iter()
                        .filter(|e| e.entity == x.entity && e.mid < x.mid)
                        .all(|e| e.discarded.is_some_and(|d| d < b.at) || ok_before(e.mid, b.at))
                        && x.refs.iter().all(|r| ok_before(*r, b.at));
                    let xp = eff(x, b.at);
                    if ready && xp > bp {
                        inversions.push(format!(
                            "request #{} sent mid {} ({:?}) while mid {} ({:?}) was sendable",
                            b.n, bm.mid, bp, x.mid, xp
                        ));
                    }
                }
            }
        }
        inversions.dedup();
        self.failures.extend(inversions.into_iter().take(3));
    }

    /// Heal the server, retry what is dead, drain to the end: every mutation not discarded
    /// took effect exactly once.
    async fn finish(&mut self) {
        self.oracle.heal();
        self.oracle.forbid_auth(None);
        for _ in 0..12 {
            for d in self.bs.dead_letters(1_000, 0).await.unwrap() {
                self.bs.retry(&d.id).await.unwrap();
            }
            let r = self
                .bs
                .drain(DrainOptions {
                    budget: Duration::from_secs(5),
                    ..Default::default()
                })
                .await
                .unwrap();
            let open =
                self.bs.pending(1, 0).await.unwrap().len() + self.bs.dead_letters(1, 0).await.unwrap().len();
            if open == 0 && r.remaining == 0 {
                break;
            }
        }
        self.check();
        for m in self.muts.clone() {
            if m.discarded.is_none() && !self.oracle.is_applied(m.mid) {
                let state = self
                    .bs
                    .get(&m.id)
                    .await
                    .map(|x| format!("{:?} {:?}", x.state, x.last_error));
                self.fail(format!(
                    "mid {} ({}) never took effect after healing; engine: {state:?}",
                    m.mid, m.entity
                ));
            }
        }
    }
}

/// Child mode of `Op::DrainTwo`: a second process draining the same file (headless entry).
#[test]
fn model_child() {
    let Ok(db) = std::env::var(CHILD_ENV) else { return };
    let budget: u64 = std::env::var("BGSYNC_MODEL_CHILD_BUDGET")
        .unwrap()
        .parse()
        .unwrap();
    // Keep trying for the lease while the other drain runs (as a second app process would),
    // starting once that drain has it.
    let until = Instant::now() + Duration::from_millis(budget);
    std::thread::sleep(Duration::from_millis(400));
    while Instant::now() < until {
        let r = background_sync_core::entry::drain(&db, 800, "foreground", CancellationToken::new());
        if !matches!(r, Ok(ref r) if r.stop_reason == background_sync_core::StopReason::AlreadyRunning) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a case exercised (printed in the summary, so a checker that stopped testing shows).
#[derive(Default, Debug)]
struct Figures {
    requests: usize,
    faults: usize,
    conflicts_409: usize,
    applied: usize,
    mutations: usize,
}

async fn run_case(seed: u64, ops: &[Op], figures: &mut Figures) -> Vec<String> {
    let mut w = World::new(seed).await;
    for (i, op) in ops.iter().enumerate() {
        w.run(op).await;
        w.check();
        if !w.failures.is_empty() {
            return w
                .failures
                .iter()
                .map(|f| format!("after op {i} ({op:?}): {f}"))
                .collect();
        }
    }
    w.finish().await;
    let arrivals = w.oracle.arrivals();
    figures.requests += arrivals.len();
    figures.faults += arrivals
        .iter()
        .filter(|a| a.fate.as_ref().is_some_and(|f| *f != Fate::Ok))
        .count();
    figures.conflicts_409 += arrivals.iter().filter(|a| a.status == Some(409)).count();
    figures.applied += w.oracle.applied().len();
    figures.mutations += w.muts.len();
    w.failures.clone()
}

/// The kind of a failure, so shrinking keeps looking for the same one.
fn category(f: &str) -> &'static str {
    const KINDS: [&str; 10] = [
        "took effect before",
        "was sendable",
        "still live",
        "never took effect",
        "returned after",
        "has not returned",
        "applied twice",
        "unresolved temp id",
        "after clearAuth",
        "refused",
    ];
    KINDS.iter().find(|k| f.contains(*k)).copied().unwrap_or("other")
}

/// Greedy shrink: drop operations one at a time while the case still fails the same way
/// (time-bounded).
async fn shrink(seed: u64, ops: Vec<Op>, first: &str) -> (Vec<Op>, Vec<String>) {
    let started = Instant::now();
    let kind = category(first);
    let mut best = ops;
    let mut why = run_case(seed, &best, &mut Figures::default()).await;
    let mut i = 0;
    while i < best.len() && started.elapsed() < Duration::from_secs(90) {
        let mut cand = best.clone();
        cand.remove(i);
        let f = run_case(seed, &cand, &mut Figures::default()).await;
        if f.iter().any(|x| category(x) == kind) {
            best = cand;
            why = f;
        } else {
            i += 1;
        }
    }
    (best, why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_keeps_the_delivery_contract() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cases: u64 = std::env::var("BGSYNC_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let n_ops: usize = std::env::var("BGSYNC_MODEL_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let base: u64 = std::env::var("BGSYNC_MODEL_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seeds: Vec<u64> = match std::env::var("BGSYNC_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(s) => vec![s],
        None => (base..base + cases).collect(),
    };
    let started = Instant::now();
    let mut total_ops = 0;
    let mut figures = Figures::default();
    for seed in seeds.iter().copied() {
        let ops = gen_ops(seed, n_ops);
        total_ops += ops.len();
        let failures = run_case(seed, &ops, &mut figures).await;
        if !failures.is_empty() {
            println!("model: seed {seed} FAILED: {}", failures[0]);
            let (small, why) = shrink(seed, ops, &failures[0]).await;
            let listing: Vec<String> = small.iter().map(|o| format!("  {o:?}")).collect();
            panic!(
                "model checker: seed {seed} fails (rerun: BGSYNC_MODEL_SEED={seed}).\n\
                 shrunk to {} operations:\n{}\nfailures:\n  {}",
                small.len(),
                listing.join("\n"),
                why.join("\n  ")
            );
        }
    }
    println!(
        "model: {} cases, {total_ops} operations, {} mutations, {} requests ({} with an injected fault, \
         {} answered 409), {} applied; all invariants held ({:.1} s)",
        seeds.len(),
        figures.mutations,
        figures.requests,
        figures.faults,
        figures.conflicts_409,
        figures.applied,
        started.elapsed().as_secs_f64()
    );
    assert!(
        figures.faults > 0 && figures.applied > 0,
        "the checker exercised nothing: {figures:?}"
    );
}

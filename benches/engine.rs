//! Side-by-side benchmark: the engine against the physical limits measured in the same run
//! (a bare SQLite insert loop with the same pragmas, a bare reqwest loop to the same server),
//! reported as ratios. Absolute numbers on shared machines are noise; ratios are the result.
//!
//! `cargo bench -p background-sync-core --bench engine` (full) or `cargo bench -p background-sync-core --bench engine -- --smoke` (seconds).
//! Writes bench-results/benchmarks.{json,md}.

use background_sync_core::{
    BackgroundSync, BatchConfig, DrainOptions, EntityRef, NewMutation, Priority, StopReason, SyncConfig,
};
use bgsync_reference_server::{spawn, FaultConfig, ServerConfig};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::{Duration, Instant};

mod wakeups;

struct Row {
    section: &'static str,
    case: String,
    engine: f64,
    limit: Option<f64>,
    unit: &'static str,
    note: String,
}

fn m(i: usize, entities: usize) -> NewMutation {
    let e = (i % entities).to_string();
    NewMutation {
        method: "PUT".into(),
        path: format!("/items/{e}"),
        body: Some(json!({ "n": i, "text": "field note with a little realistic payload text" })),
        headers: Default::default(),
        priority: Priority::Normal,
        entity: EntityRef {
            kind: "item".into(),
            id: e,
        },
        temp_id: None,
        idempotency_key: None,
        coalesce: None,
    }
}

/// What crossed a `latency_pipe`: (when it was delivered, client→server?, bytes, connection).
#[derive(Default)]
struct PipeLog(
    std::sync::Mutex<Vec<(Instant, bool, usize, usize)>>,
    std::sync::atomic::AtomicUsize,
);

impl PipeLog {
    fn take(&self) -> Vec<(Instant, bool, usize, usize)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Radio-active time of a transfer: first to last byte, with gaps under 1 s merged (a phone's
/// radio stays up that long after traffic anyway) and longer gaps left out.
fn radio_active(log: &[(Instant, bool, usize, usize)]) -> Duration {
    let mut times: Vec<Instant> = log.iter().map(|e| e.0).collect();
    times.sort();
    let mut total = Duration::ZERO;
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        if gap < Duration::from_secs(1) {
            total += gap;
        }
    }
    total
}

/// A TCP pipe on 127.0.0.1 that delays every chunk by `one_way` in each direction, so a round
/// trip costs 2 × `one_way` as on a mobile link (bandwidth is not limited, order is kept). TLS
/// goes through it untouched. Loopback's TCP handshake is instant; a real one costs a round
/// trip before the first byte, so each connection's first client bytes wait one more. Every
/// chunk is logged when it is delivered.
async fn latency_pipe(
    upstream: std::net::SocketAddr,
    one_way: Duration,
) -> (std::net::SocketAddr, std::sync::Arc<PipeLog>) {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn carry(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        one_way: Duration,
        first_extra: Duration,
        log: Arc<PipeLog>,
        up: bool,
        conn: usize,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
        let writer = tokio::spawn(async move {
            while let Some((at, bytes)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
                log.0
                    .lock()
                    .unwrap()
                    .push((Instant::now(), up, bytes.len(), conn));
            }
            let _ = to.shutdown().await;
        });
        let mut buf = vec![0u8; 64 * 1024];
        let mut extra = first_extra;
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let at = tokio::time::Instant::now() + one_way + extra;
                    extra = Duration::ZERO;
                    if tx.send((at, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        drop(tx);
        let _ = writer.await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(PipeLog::default());
    let pipe_log = log.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = pipe_log.clone();
            let conn = log.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(
                    carry(cr, sw, one_way, 2 * one_way, log.clone(), true, conn),
                    carry(sr, cw, one_way, Duration::ZERO, log, false, conn)
                );
            });
        }
    });
    (addr, log)
}

/// The reference server over TLS (a private CA; `h2`: it offers HTTP/2) behind a
/// `latency_pipe` with round trip `rtt_ms`: the server, the address to use, the pipe's log.
async fn tls_behind_pipe(
    pki: &bgsync_reference_server::TestPki,
    h2: bool,
    rtt_ms: u64,
) -> (
    bgsync_reference_server::RunningServer,
    std::net::SocketAddr,
    std::sync::Arc<PipeLog>,
) {
    let tls = spawn(ServerConfig {
        tls: Some(pki.server.clone()),
        http2: h2,
        ..Default::default()
    })
    .await
    .unwrap();
    let (pipe, log) = latency_pipe(tls.addr, Duration::from_millis(rtt_ms / 2)).await;
    (tls, pipe, log)
}

/// 10,000 mutations across `entities` queued, then one drain of `window`: (report, time used).
async fn backlog_drain(
    bs: &BackgroundSync,
    entities: usize,
    window: Duration,
) -> (background_sync_core::DrainReport, Duration) {
    let backlog: Vec<_> = (0..10_000).map(|i| m(i, entities)).collect();
    for c in backlog.chunks(1_000) {
        bs.enqueue_many(c.to_vec()).await.unwrap();
    }
    let t = Instant::now();
    let r = bs
        .drain(DrainOptions {
            budget: window,
            ..Default::default()
        })
        .await
        .unwrap();
    (r, t.elapsed())
}

async fn engine_at(
    dir: &std::path::Path,
    name: &str,
    base: &str,
    f: impl FnOnce(&mut SyncConfig),
) -> BackgroundSync {
    let bs = BackgroundSync::open(dir.join(name)).await.unwrap();
    let mut c = SyncConfig {
        base_url: base.into(),
        max_queue_len: 10_000_000,
        ..Default::default()
    };
    f(&mut c);
    bs.configure(c).await.unwrap();
    bs
}

/// A fresh file with the engine's pragmas (WAL, `synchronous=FULL`, 5 s busy timeout) and a
/// plain table of the outbox's row shape: what the bare limits write to.
async fn bare_table(file: &std::path::Path, connections: u32) -> sqlx::SqlitePool {
    let opts = SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(connections)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE q (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, key TEXT UNIQUE, prio INTEGER, \
         entity TEXT, method TEXT, path TEXT, body TEXT, created INTEGER)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// Row `i` of the bare limits: the outbox's row shape, 50 entities.
async fn bare_insert<'e, E: sqlx::Executor<'e, Database = sqlx::Sqlite>>(ex: E, i: usize, body: &str) {
    sqlx::query("INSERT INTO q (id, key, prio, entity, method, path, body, created) VALUES (?, ?, 1, ?, 'PUT', ?, ?, 0)")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(format!("item\u{1f}{}", i % 50))
        .bind(format!("/items/{}", i % 50))
        .bind(body)
        .execute(ex)
        .await
        .unwrap();
}

/// The physical limit for enqueue: the same durability, a plain row insert per commit.
async fn bare_sqlite(dir: &std::path::Path, n: usize, per_tx: usize) -> f64 {
    let pool = bare_table(&dir.join(format!("bare-{n}-{per_tx}.db")), 1).await;
    let body = json!({ "n": 0, "text": "field note with a little realistic payload text" }).to_string();
    let t = Instant::now();
    for chunk in 0..n / per_tx {
        let mut tx = pool.begin().await.unwrap();
        for j in 0..per_tx {
            let i = chunk * per_tx + j;
            bare_insert(&mut *tx, i, &body).await;
        }
        tx.commit().await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// A peer durable SQLite job queue doing the equivalent push: apalis-sql's `SqliteStorage`
/// (one INSERT per push), on a file with the same pragmas (WAL, `synchronous=FULL`; its own
/// `setup` would switch to NORMAL, which is set back).
async fn peer_apalis(dir: &std::path::Path, n: usize) -> f64 {
    use apalis_core::storage::Storage;
    let opts = SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(dir.join(format!("apalis-{n}.db")))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    apalis_sql::sqlite::SqliteStorage::<()>::setup(&pool)
        .await
        .unwrap();
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(&pool)
        .await
        .unwrap();
    let mut storage: apalis_sql::sqlite::SqliteStorage<Value> = apalis_sql::sqlite::SqliteStorage::new(pool);
    let t = Instant::now();
    for i in 0..n {
        storage
            .push(json!({ "method": "PUT", "path": format!("/items/{}", i % 50),
                          "body": { "n": i, "text": "field note with a little realistic payload text" } }))
            .await
            .unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// `writers` tasks each enqueue `n / writers` mutations through one handle at once (what an
/// app's `Promise.all` of enqueues becomes): mutations per second.
async fn engine_concurrent(bs: &BackgroundSync, n: usize, writers: usize, offset: usize) -> f64 {
    let per = n / writers;
    let t = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let bs = bs.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    bs.enqueue(m(offset + w * per + i, 50)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (per * writers) as f64 / t.elapsed().as_secs_f64()
}

/// The same concurrent writers on bare SQLite (same pragmas, same row as `bare_sqlite`), pool
/// of 4 connections like the engine's: with `group`, one writer task commits whatever rows are
/// waiting in one transaction and answers each caller after that commit (a group commit at
/// equal durability); without, every insert is its own commit and the writers contend for
/// SQLite's write lock.
async fn bare_concurrent(dir: &std::path::Path, n: usize, writers: usize, group: bool) -> f64 {
    let pool = bare_table(&dir.join(format!("bare-conc-{n}-{group}.db")), 4).await;
    let body = json!({ "n": 0, "text": "field note with a little realistic payload text" }).to_string();
    let per = n / writers;
    type Ack = tokio::sync::oneshot::Sender<()>;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Ack)>();
    let committer = group.then(|| {
        let pool = pool.clone();
        let body = body.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiting = vec![first];
                while let Ok(more) = rx.try_recv() {
                    waiting.push(more);
                }
                let mut t = pool.begin().await.unwrap();
                for (i, _) in &waiting {
                    bare_insert(&mut *t, *i, &body).await;
                }
                t.commit().await.unwrap();
                for (_, ack) in waiting {
                    let _ = ack.send(());
                }
            }
        })
    });
    let t = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let pool = pool.clone();
            let body = body.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for j in 0..per {
                    let i = w * per + j;
                    if group {
                        let (ack, done) = tokio::sync::oneshot::channel();
                        tx.send((i, ack)).unwrap();
                        done.await.unwrap();
                    } else {
                        bare_insert(&pool, i, &body).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (per * writers) as f64 / t.elapsed().as_secs_f64();
    drop(tx);
    if let Some(c) = committer {
        c.await.unwrap();
    }
    rate
}

/// Drain rate of the engine with `lanes` lanes and of the bare loop with as many workers,
/// alternating in rounds.
async fn interleaved(dir: &std::path::Path, base: &str, n: usize, lanes: u32) -> (f64, f64) {
    const ROUNDS: usize = 5;
    let per = n / ROUNDS;
    let (mut engine_s, mut bare_s) = (0.0, 0.0);
    for round in 0..ROUNDS {
        let bs = engine_at(dir, &format!("il-{lanes}-{round}.db"), base, |c| {
            c.concurrency = lanes
        })
        .await;
        engine_s += per as f64 / drain_rate(&bs, per, 50).await;
        bs.close().await;
        bare_s += per as f64 / bare_http(base, per, lanes as usize).await;
    }
    ((per * ROUNDS) as f64 / engine_s, (per * ROUNDS) as f64 / bare_s)
}

/// The physical limit for delivery: the same PUTs with reqwest, `conc` at a time.
async fn bare_http(base: &str, n: usize, conc: usize) -> f64 {
    let client = reqwest::Client::new();
    let t = Instant::now();
    let per = n / conc;
    let mut tasks = Vec::new();
    for w in 0..conc {
        let client = client.clone();
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let r = client
                    .put(format!("{base}/bare/{w}"))
                    .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({ "n": i, "text": "field note with a little realistic payload text" }))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (per * conc) as f64 / t.elapsed().as_secs_f64()
}

async fn drain_rate(bs: &BackgroundSync, n: usize, entities: usize) -> f64 {
    let batch: Vec<_> = (0..n).map(|i| m(i, entities)).collect();
    for c in batch.chunks(1_000) {
        bs.enqueue_many(c.to_vec()).await.unwrap();
    }
    let t = Instant::now();
    let r = bs
        .drain(DrainOptions {
            budget: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.stop_reason, StopReason::Empty, "{r:?}");
    n as f64 / t.elapsed().as_secs_f64()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Child process: enqueue a backlog of n, drain it, print JSON figures (own process so the
/// peak RSS belongs to this backlog alone).
async fn scale_child(n: usize, base: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bs = engine_at(dir.path(), "scale.db", base, |c| c.concurrency = 8).await;
    let rss0 = vm_hwm_kib();
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        bs.enqueue_many(chunk.iter().map(|&i| m(i, 1_000)).collect())
            .await
            .unwrap();
    }
    let enq_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let db_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let rss_enq = vm_hwm_kib();
    let t = Instant::now();
    let r = bs
        .drain(DrainOptions {
            budget: Duration::from_secs(900),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.stop_reason, StopReason::Empty, "{r:?}");
    let drain_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "{}",
        json!({ "n": n, "enqueue_us": enq_us, "drain_us": drain_us, "db_bytes_per": db_bytes as f64 / n as f64,
                "rss_base_kib": rss0, "rss_enqueue_kib": rss_enq, "rss_peak_kib": vm_hwm_kib() })
    );
}

/// Child process for the cold start: open the outbox and drain once (the OS-wake path).
fn cold_child(db: &str) {
    // "foreground" skips the enabled toggle (a background trigger on a disabled outbox sends nothing).
    let _ = background_sync_core::entry::drain(db, 5_000, "foreground", Default::default());
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scale-child") {
        return scale_child(args[i + 1].parse().unwrap(), &args[i + 2]).await;
    }
    if let Some(i) = args.iter().position(|a| a == "--cold-child") {
        return cold_child(&args[i + 1]);
    }
    let smoke = args.iter().any(|a| a == "--smoke") || std::env::var("BGSYNC_BENCH_SMOKE").is_ok();
    let k = if smoke { 1 } else { 10 };
    // `--only drain` (or enqueue, claim, ios-window, scale, cold-start, wakeups, ...) runs one section.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let want = |s: &str| only.as_deref().is_none_or(|o| o == s);
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerConfig::default()).await.unwrap();
    let base = server.base_url.clone();
    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();

    // 1. Enqueue.
    if want("enqueue") {
        // Engine, bare SQLite and the peer queue alternate in 5 rounds (see `interleaved`).
        let n1 = 200 * k;
        let per = n1 / 5;
        let bs = engine_at(dir.path(), "enq1.db", &base, |_| {}).await;
        let (mut eng_s, mut bare_s, mut peer_s) = (0.0, 0.0, 0.0);
        for round in 0..5 {
            let t = Instant::now();
            for i in 0..per {
                bs.enqueue(m(round * per + i, 50)).await.unwrap();
            }
            eng_s += t.elapsed().as_secs_f64();
            let d = dir.path().join(format!("enq-round-{round}"));
            std::fs::create_dir_all(&d).unwrap();
            bare_s += per as f64 / bare_sqlite(&d, per, 1).await;
            peer_s += per as f64 / peer_apalis(&d, per).await;
        }
        let total = (per * 5) as f64;
        let (eng1, bare1, peer1) = (total / eng_s, total / bare_s, total / peer_s);
        rows.push(Row {
            section: "enqueue",
            case: "single durable enqueue (FULL)".into(),
            engine: eng1,
            limit: Some(bare1),
            unit: "ops/s",
            note: "bare: one INSERT per commit, same pragmas; 5 alternating rounds".into(),
        });
        rows.push(Row {
            section: "enqueue",
            case: "single durable enqueue vs peer queue".into(),
            engine: eng1,
            limit: Some(peer1),
            unit: "ops/s",
            note: "limit column = apalis-sql 0.7.3 SqliteStorage::push, same file pragmas (FULL); >100% = engine faster".into(),
        });
        let nb = 2_000 * k;
        let bs = engine_at(dir.path(), "enqb.db", &base, |_| {}).await;
        let batch: Vec<_> = (0..nb).map(|i| m(i, 50)).collect();
        let t = Instant::now();
        for c in batch.chunks(100) {
            bs.enqueue_many(c.to_vec()).await.unwrap();
        }
        let engb = nb as f64 / t.elapsed().as_secs_f64();
        let bareb = bare_sqlite(dir.path(), nb, 100).await;
        rows.push(Row {
            section: "enqueue",
            case: "enqueue_many of 100".into(),
            engine: engb,
            limit: Some(bareb),
            unit: "mutations/s",
            note: "bare: 100 INSERTs per commit".into(),
        });
    }
    // 1b. Concurrent enqueues (an app's `Promise.all`): one commit each vs a group commit.
    if want("enqueue-concurrent") {
        const WRITERS: usize = 8;
        let n = 80 * k;
        let bs = engine_at(dir.path(), "enqc.db", &base, |_| {}).await;
        let (mut eng_s, mut each_s, mut group_s) = (0.0, 0.0, 0.0);
        for round in 0..3 {
            eng_s += n as f64 / engine_concurrent(&bs, n, WRITERS, round * n).await;
            let d = dir.path().join(format!("enqc-round-{round}"));
            std::fs::create_dir_all(&d).unwrap();
            each_s += n as f64 / bare_concurrent(&d, n, WRITERS, false).await;
            group_s += n as f64 / bare_concurrent(&d, n, WRITERS, true).await;
        }
        let total = (n * 3) as f64;
        let (eng, each, group) = (total / eng_s, total / each_s, total / group_s);
        rows.push(Row {
            section: "enqueue-concurrent",
            case: format!("{WRITERS} concurrent enqueuers vs bare, one commit each"),
            engine: eng,
            limit: Some(each),
            unit: "mutations/s",
            note: "one handle, 8 tasks; bare: 8 tasks, autocommit INSERTs on a pool of 4, FULL; 3 alternating rounds".into(),
        });
        rows.push(Row {
            section: "enqueue-concurrent",
            case: format!("{WRITERS} concurrent enqueuers vs bare group commit"),
            engine: eng,
            limit: Some(group),
            unit: "mutations/s",
            note: "bare: one writer commits every waiting row in one transaction, each caller answered after it (same durability)".into(),
        });
    }
    // 2. Drain on loopback.
    if want("drain") {
        let nd = 500 * k;
        // Engine and bare loop alternate in 5 rounds and the rates are totals over the rounds:
        // the shared machine's speed drifts within seconds, and back-to-back blocks would
        // charge that drift to one side.
        let (seq, bare_seq) = interleaved(dir.path(), &base, nd, 1).await;
        rows.push(Row {
            section: "drain",
            case: "sequential (concurrency 1)".into(),
            engine: seq,
            limit: Some(bare_seq),
            unit: "mutations/s",
            note: "bare: reqwest PUT loop; 5 alternating rounds".into(),
        });
        let (conc, bare_conc) = interleaved(dir.path(), &base, nd, 8).await;
        rows.push(Row {
            section: "drain",
            case: "concurrent lanes (8)".into(),
            engine: conc,
            limit: Some(bare_conc),
            unit: "mutations/s",
            note: "bare: 8 reqwest loops; 5 alternating rounds".into(),
        });
        let batch = drain_rate(
            &engine_at(dir.path(), "db.db", &base, |c| {
                c.batch = Some(BatchConfig {
                    path: "/batch".into(),
                    max_items: 50,
                })
            })
            .await,
            nd,
            500,
        )
        .await;
        rows.push(Row {
            section: "drain",
            case: "batch endpoint (50/request)".into(),
            engine: batch,
            limit: Some(bare_seq),
            unit: "mutations/s",
            note: "vs bare sequential single requests".into(),
        });
    }
    // 3. The iOS window: 100 ms per request.
    if want("ios-window") {
        let slow = spawn(ServerConfig {
            faults: FaultConfig {
                delay_ms: 100,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let window = if smoke {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(30)
        };
        for (case, f) in [
            (
                "sequential",
                Box::new(|c: &mut SyncConfig| c.concurrency = 1) as Box<dyn Fn(&mut SyncConfig)>,
            ),
            ("concurrent 8", Box::new(|c: &mut SyncConfig| c.concurrency = 8)),
            ("concurrent 32", Box::new(|c: &mut SyncConfig| c.concurrency = 32)),
            (
                "batch 50 x 8",
                Box::new(|c: &mut SyncConfig| {
                    c.concurrency = 8;
                    c.batch = Some(BatchConfig {
                        path: "/batch".into(),
                        max_items: 50,
                    });
                }),
            ),
        ] {
            let bs = engine_at(
                dir.path(),
                &format!("ios-{}.db", case.replace(' ', "-")),
                &slow.base_url,
                |c| f(c),
            )
            .await;
            let (r, took) = backlog_drain(&bs, 2_000, window).await;
            let per_30s = r.done as f64 * 30.0 / window.as_secs_f64();
            rows.push(Row {
                section: "ios-window",
                case: format!("{case}, 100 ms RTT"),
                engine: per_30s,
                limit: None,
                unit: "delivered per 30 s",
                note: format!(
                    "{} in {:.1} s budget (stopped after {:.2} s, {:?}){}",
                    r.done,
                    window.as_secs_f64(),
                    took.as_secs_f64(),
                    r.stop_reason,
                    if smoke {
                        "; scaled ×10 from a 3 s smoke window"
                    } else {
                        ""
                    }
                ),
            });
        }
        slow.shutdown().await;
    }

    // 3a. A phone's link (issue 16 item 3): TLS through a pipe that adds a mobile round trip,
    // 10,000 mutations across 1,000 entities, no batch endpoint unless said; HTTP/1.1 (one
    // connection per lane) against HTTP/2 (streams over one connection), as the server offers.
    if want("mobile-tls") {
        let pki = bgsync_reference_server::TestPki::generate().unwrap();
        let window = if smoke {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(30)
        };
        let cases: Vec<(u64, bool, u32, bool)> = vec![
            // (RTT ms, server offers h2, lanes, batch endpoint)
            (100, false, 8, false),
            (100, false, 64, false),
            (100, true, 8, false),
            (100, true, 64, false),
            (300, true, 64, false),
            (300, false, 8, true),
            (300, true, 8, true),
        ];
        for (rtt, h2, lanes, batch) in cases {
            let (tls, pipe, _) = tls_behind_pipe(&pki, h2, rtt).await;
            let name = format!("tls-{rtt}-{h2}-{lanes}-{batch}.db");
            let bs = engine_at(dir.path(), &name, &format!("https://{pipe}"), |c| {
                c.concurrency = lanes;
                c.tls.extra_roots_pem = vec![pki.ca_pem.clone()];
                c.request_timeout_ms = 30_000;
                if batch {
                    c.batch = Some(BatchConfig {
                        path: "/batch".into(),
                        max_items: 50,
                    });
                }
            })
            .await;
            let before = tls.stats();
            let (r, took) = backlog_drain(&bs, 1_000, window).await;
            let after = tls.stats();
            let per_30s = r.done as f64 * 30.0 / window.as_secs_f64();
            let conns = after.tls_handshakes - before.tls_handshakes;
            let h2_conns = after.http2_connections - before.http2_connections;
            rows.push(Row {
                section: "mobile-tls",
                case: format!(
                    "TLS, {rtt} ms RTT, {}, {lanes} lanes{}",
                    if h2 { "server offers HTTP/2" } else { "HTTP/1.1 only" },
                    if batch { ", batch 50" } else { "" }
                ),
                engine: per_30s,
                limit: None,
                unit: "delivered per 30 s",
                note: format!(
                    "{} in {:.0} s ({:.2} s used, {:?}); {conns} TCP connections = TLS handshakes, {h2_conns} of them HTTP/2; {} requests{}",
                    r.done,
                    window.as_secs_f64(),
                    took.as_secs_f64(),
                    r.stop_reason,
                    after.requests - before.requests,
                    if smoke { "; scaled ×10 from a 3 s smoke window" } else { "" }
                ),
            });
            bs.close().await;
            tls.shutdown().await;
        }
    }

    // 3a'. Energy proxies (issue 16 item 5): a field worker's day (200 edits of 40 visits) over
    // TLS at 100 ms RTT, counted at the pipe: bytes on the wire and radio-active time.
    if want("energy") {
        let pki = bgsync_reference_server::TestPki::generate().unwrap();
        for h2 in [false, true] {
            let (tls, pipe, log) = tls_behind_pipe(&pki, h2, 100).await;
            let bs = engine_at(
                dir.path(),
                &format!("energy-{h2}.db"),
                &format!("https://{pipe}"),
                |c| {
                    c.tls.extra_roots_pem = vec![pki.ca_pem.clone()];
                },
            )
            .await;
            let n = 200;
            bs.enqueue_many((0..n).map(|i| m(i, 40)).collect()).await.unwrap();
            let before = tls.stats();
            let r = bs
                .drain(DrainOptions {
                    budget: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(r.done as usize, n, "{r:?}");
            let after = tls.stats();
            let events = log.take();
            let up: usize = events.iter().filter(|e| e.1).map(|e| e.2).sum();
            let down: usize = events.iter().filter(|e| !e.1).map(|e| e.2).sum();
            let radio = radio_active(&events);
            let proto = if h2 { "HTTP/2" } else { "HTTP/1.1" };
            rows.push(Row {
                section: "energy",
                case: format!("{proto}: bytes on the wire per mutation (TLS, up + down)"),
                engine: (up + down) as f64 / n as f64,
                limit: None,
                unit: "bytes",
                note: format!(
                    "{} up + {} down per mutation (body ~80 bytes); {} requests for {n} mutations; {} TLS handshakes",
                    up / n,
                    down / n,
                    after.requests - before.requests,
                    after.tls_handshakes - before.tls_handshakes
                ),
            });
            rows.push(Row {
                section: "energy",
                case: format!("{proto}: radio-active time for the day's drain (100 ms RTT, 4 lanes)"),
                engine: radio.as_secs_f64(),
                limit: None,
                unit: "s",
                note: format!(
                    "first to last byte, gaps < 1 s merged; {:.1} ms per mutation",
                    radio.as_secs_f64() * 1000.0 / n as f64
                ),
            });
            bs.close().await;
            tls.shutdown().await;
        }
    }

    // 3a'''. Wake-ups of the desktop scheduler over a simulated hour (issue 16 item 5): its
    // own rules on a virtual clock (benches/wakeups.rs), the rule before this change beside it.
    if want("wakeups") {
        use wakeups::{simulate, Rule};
        let seeds = if smoke { 3 } else { 50 };
        for (name, scenario) in [
            (
                "a field worker's hour (6 visits)",
                wakeups::field_hour as fn(u64) -> Vec<wakeups::Write>,
            ),
            ("two minutes of typing, autosave every second", wakeups::autosave),
        ] {
            let (mut now, mut before) = (wakeups::Stats::default(), wakeups::Stats::default());
            for seed in 0..seeds {
                let writes = scenario(seed);
                for (rule, acc) in [(Rule::Plan, &mut now), (Rule::Before, &mut before)] {
                    let st = simulate(&writes, rule, 100);
                    assert_eq!(
                        st.latencies_ms.len(),
                        st.writes,
                        "seed {seed}: a write was not delivered"
                    );
                    acc.writes += st.writes;
                    acc.drains += st.drains;
                    acc.sending_drains += st.sending_drains;
                    acc.radio_wakeups += st.radio_wakeups;
                    acc.radio_on_ms += st.radio_on_ms;
                    acc.latencies_ms.extend(st.latencies_ms);
                }
            }
            let (p95_now, p95_before) = (now.latency_pct(0.95), before.latency_pct(0.95));
            let (p50_now, p50_before) = (now.latency_pct(0.5), before.latency_pct(0.5));
            rows.push(Row {
                section: "wakeups",
                case: format!("{name}: radio powered (sends + 10 s tail), per run"),
                engine: now.radio_on_ms as f64 / 1000.0 / seeds as f64,
                limit: None,
                unit: "s",
                note: format!(
                    "before this change {:.1} s",
                    before.radio_on_ms as f64 / 1000.0 / seeds as f64
                ),
            });
            rows.push(Row {
                section: "wakeups",
                case: format!("{name}: drains that send"),
                engine: now.per_100_writes(now.sending_drains),
                limit: None,
                unit: "per 100 writes",
                note: format!(
                    "before this change {:.0}; {} writes in {seeds} seeded runs, 100 ms RTT, 4 lanes",
                    before.per_100_writes(before.sending_drains),
                    now.writes
                ),
            });
            rows.push(Row {
                section: "wakeups",
                case: format!("{name}: radio wake-ups (idle >= 10 s before)"),
                engine: now.per_100_writes(now.radio_wakeups),
                limit: None,
                unit: "per 100 writes",
                note: format!(
                    "before this change {:.0}; scheduler runs (drains, sending or not) {:.0} per 100 writes, before {:.0}",
                    before.per_100_writes(before.radio_wakeups),
                    now.per_100_writes(now.drains),
                    before.per_100_writes(before.drains)
                ),
            });
            rows.push(Row {
                section: "wakeups",
                case: format!("{name}: write -> delivered, p50 / p95"),
                engine: p95_now as f64,
                limit: None,
                unit: "ms (p95)",
                note: format!(
                    "p50 {p50_now} ms; before this change p50 {p50_before} ms, p95 {p95_before} ms"
                ),
            });
        }
    }

    // 3a''. A cold background process over TLS (issue 16 item 4): each run a new process, as
    // the OS starts it, at 100 ms RTT to a server that offers HTTP/2.
    if want("cold-tls") {
        let pki = bgsync_reference_server::TestPki::generate().unwrap();
        let (tls, pipe, log) = tls_behind_pipe(&pki, true, 100).await;
        let cold_dir = tempfile::tempdir().unwrap();
        let cold_db = cold_dir.path().join("cold-tls.db");
        let exe = std::env::current_exe().unwrap();
        let (mut connect, mut first_request, mut exit) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..(if smoke { 3 } else { 10 }) {
            {
                let bs = engine_at(cold_dir.path(), "cold-tls.db", &format!("https://{pipe}"), |c| {
                    c.tls.extra_roots_pem = vec![pki.ca_pem.clone()];
                })
                .await;
                bs.enqueue(m(run, 1_000)).await.unwrap();
                bs.close().await;
            }
            let applied = tls.stats().applied;
            // The previous run's last bytes (its TLS close) may still be in the pipe: count
            // only this run's connections.
            let first_conn = log.1.load(std::sync::atomic::Ordering::Relaxed);
            let t0 = Instant::now();
            let status = std::process::Command::new(&exe)
                .args(["--cold-child", cold_db.to_str().unwrap()])
                .status()
                .unwrap();
            exit.push(t0.elapsed().as_secs_f64() * 1000.0);
            assert!(status.success());
            assert_eq!(
                tls.stats().applied,
                applied + 1,
                "the cold run delivered its mutation"
            );
            let ups: Vec<Instant> = log
                .take()
                .into_iter()
                .filter(|e| e.1 && e.3 >= first_conn)
                .map(|e| e.0)
                .collect();
            // Client→server flights: the ClientHello, then (TLS 1.3, one round trip later) the
            // client's Finished with the first request right behind it.
            connect.push((ups[0] - t0).as_secs_f64() * 1000.0);
            first_request.push((ups[1.min(ups.len() - 1)] - t0).as_secs_f64() * 1000.0);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let (c, f, e) = (
            median(&mut connect),
            median(&mut first_request),
            median(&mut exit),
        );
        for (case, value, note) in [
            (
                "process start → ClientHello at the server (median)",
                c,
                "exec, runtime, SQLite open, claim, TCP connect (one round trip)",
            ),
            (
                "process start → first request bytes at the server (median)",
                f,
                "+ the TLS 1.3 handshake (one more round trip)",
            ),
            (
                "process start → delivered, report written, process gone (median)",
                e,
                "+ the request's round trip and the outcome's commit",
            ),
        ] {
            rows.push(Row {
                section: "cold-tls",
                case: format!("{case}, 100 ms RTT"),
                engine: value,
                limit: None,
                unit: "ms",
                note: format!(
                    "{} runs, each a new process (no TLS session carried over); {note}",
                    exit.len()
                ),
            });
        }
        tls.shutdown().await;
    }

    // 3b. Claim cost independent of rows that cannot go (issue 11, item 14): N entities whose
    // heads are backing off (a 503 storm with Retry-After: 1 h) and one due row, against a
    // queue holding just that row; and enqueue with a status listener subscribed.
    if want("claim") {
        let n = if smoke { 2_000 } else { 50_000 };
        let storm = spawn(ServerConfig {
            faults: FaultConfig {
                error_rate: 1.0,
                error_statuses: vec![503],
                retry_after_secs: Some(3_600),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let big = engine_at(dir.path(), "claim-big.db", &storm.base_url, |c| c.concurrency = 8).await;
        let small = engine_at(dir.path(), "claim-small.db", &storm.base_url, |c| {
            c.concurrency = 8
        })
        .await;
        for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
            big.enqueue_many(chunk.iter().map(|&i| m(i, n)).collect())
                .await
                .unwrap();
        }
        let mut retried = 0;
        while retried < n as u32 {
            let r = big
                .drain(DrainOptions {
                    budget: Duration::from_secs(60),
                    ..Default::default()
                })
                .await
                .unwrap();
            retried += r.retried;
            if r.sent == 0 {
                break;
            }
        }
        storm.set_faults(FaultConfig::default());
        // One due row on a new entity, delivered by a drain: median of alternating rounds.
        let one = |i: usize| {
            let mut x = m(i, usize::MAX);
            x.entity.id = format!("due-{i}");
            x.path = format!("/items/due-{i}");
            x
        };
        let (mut with_storm, mut alone) = (Vec::new(), Vec::new());
        for round in 0..(if smoke { 5 } else { 21 }) {
            for (bs, out) in [(&big, &mut with_storm), (&small, &mut alone)] {
                bs.enqueue(one(round)).await.unwrap();
                let t = Instant::now();
                let r = bs.drain(DrainOptions::default()).await.unwrap();
                out.push(t.elapsed().as_secs_f64() * 1e3);
                assert_eq!(r.done, 1, "the due row is delivered: {r:?}");
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        rows.push(Row {
            section: "claim",
            case: format!("drain of 1 due row with {n} heads backing off"),
            engine: median(&mut with_storm),
            limit: Some(median(&mut alone)),
            unit: "ms",
            note: format!("limit: the same drain on a queue holding only that row; target ≤ 2×; {retried} rows put in backoff by 503 + Retry-After"),
        });
        // Enqueue while a listener is subscribed (every enqueue emits a status snapshot).
        let listener = big.subscribe();
        let count = if smoke { 200 } else { 1_000 };
        let t = Instant::now();
        for i in 0..count {
            big.enqueue(one(1_000_000 + i)).await.unwrap();
        }
        let with_listener = count as f64 / t.elapsed().as_secs_f64();
        drop(listener);
        let t = Instant::now();
        for i in 0..count {
            big.enqueue(one(2_000_000 + i)).await.unwrap();
        }
        let without = count as f64 / t.elapsed().as_secs_f64();
        rows.push(Row {
            section: "claim",
            case: format!("enqueue with a status listener, {n} rows queued"),
            engine: with_listener,
            limit: Some(without),
            unit: "mutations/s",
            note: "limit: the same enqueues without a listener (no status snapshot per enqueue)".into(),
        });
        storm.shutdown().await;
    }
    // 4. Scale, each backlog in its own process.
    let exe = std::env::current_exe().unwrap();
    if want("scale") {
        let sizes: &[usize] = if smoke {
            &[1_000, 5_000]
        } else {
            &[1_000, 10_000, 100_000]
        };
        for &n in sizes {
            let out = std::process::Command::new(&exe)
                .args(["--scale-child", &n.to_string(), &base])
                .output()
                .unwrap();
            let line = String::from_utf8_lossy(&out.stdout);
            let v: Value = serde_json::from_str(line.lines().last().unwrap_or("{}")).unwrap_or(Value::Null);
            assert!(
                out.status.success() && v.is_object(),
                "scale child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            rows.push(Row {
                section: "scale",
                case: format!("{n}: enqueue per item"),
                engine: v["enqueue_us"].as_f64().unwrap(),
                limit: None,
                unit: "µs",
                note: "enqueue_many in chunks of 1000".into(),
            });
            rows.push(Row {
                section: "scale",
                case: format!("{n}: claim + send per item"),
                engine: v["drain_us"].as_f64().unwrap(),
                limit: None,
                unit: "µs",
                note: "concurrency 8, 1000 entities, loopback".into(),
            });
            rows.push(Row {
                section: "scale",
                case: format!("{n}: peak RSS"),
                engine: v["rss_peak_kib"].as_f64().unwrap() / 1024.0,
                limit: None,
                unit: "MiB",
                note: format!(
                    "after enqueue {:.1} MiB",
                    v["rss_enqueue_kib"].as_f64().unwrap() / 1024.0
                ),
            });
            rows.push(Row {
                section: "scale",
                case: format!("{n}: database size per mutation"),
                engine: v["db_bytes_per"].as_f64().unwrap(),
                limit: None,
                unit: "bytes",
                note: "db + WAL after enqueue".into(),
            });
        }
    }
    // 5. Cold start: process spawn → first HTTP request of a headless drain.
    if want("cold-start") {
        let cold_dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cold_db = cold_dir.path().join("cold.db");
        {
            let bs = engine_at(cold_dir.path(), "cold.db", &url, |_| {}).await;
            bs.enqueue(m(0, 1)).await.unwrap();
            bs.close().await;
        }
        let mut samples = Vec::new();
        for _ in 0..(if smoke { 3 } else { 10 }) {
            let t0 = Instant::now();
            let mut child = std::process::Command::new(&exe)
                .args(["--cold-child", cold_db.to_str().unwrap()])
                .spawn()
                .unwrap();
            let (mut sock, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
                .await
                .expect("the cold-start child never sent a request")
                .unwrap();
            samples.push(t0.elapsed().as_secs_f64() * 1000.0);
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            // 401 with no refresh configured: the drain stops at once (authFailed) and the row stays
            // queued, so the next sample measures the same path with no retry in flight.
            let _ = sock
                .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            drop(sock);
            let _ = child.wait();
        }
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = samples[samples.len() / 2];
        rows.push(Row { section: "cold-start", case: "spawn → first request (median)".into(), engine: median, limit: None, unit: "ms", note: format!("{} runs, min {:.1} ms; includes exec, runtime, SQLite open + migration check, claim, TCP connect", samples.len(), samples[0]) });
    }

    // Report.
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let machine = format!(
        "{} × {cpu}, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let mut md = format!(
        "Machine: {machine}. Mode: {}. Total {:.0} s.\n\n| section | case | engine | limit (same run) | ratio | unit | note |\n|---|---|---:|---:|---:|---|---|\n",
        if smoke { "smoke" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    let mut js = Vec::new();
    for r in &rows {
        let ratio = r.limit.map(|l| r.engine / l);
        md.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |\n",
            r.section,
            r.case,
            r.engine,
            r.limit.map(|l| format!("{l:.1}")).unwrap_or_else(|| "—".into()),
            ratio
                .map(|x| format!("{:.0}%", x * 100.0))
                .unwrap_or_else(|| "—".into()),
            r.unit,
            r.note
        ));
        js.push(json!({"section": r.section, "case": r.case, "engine": r.engine, "limit": r.limit, "ratio": ratio, "unit": r.unit, "note": r.note}));
    }
    println!("\n{md}");
    // Cargo runs a bench in its package's folder (crates/background-sync-core): results go to
    // the repository's top-level bench-results/, where scripts and docs look.
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench-results");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("benchmarks.md"), &md).unwrap();
    std::fs::write(
        out.join("benchmarks.json"),
        serde_json::to_string_pretty(&json!({"machine": machine, "smoke": smoke, "rows": js})).unwrap(),
    )
    .unwrap();
    server.shutdown().await;
}

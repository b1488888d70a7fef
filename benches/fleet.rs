//! The backend's view of a fleet (issue 16 item 7): 100,000 simulated phones with offline
//! backlogs through a 30-minute API outage and its recovery, each running the engine's own
//! retry rule (`background_sync_core::sim::after_response`, i.e. `policy::verdict`: full-jitter
//! backoff, `Retry-After` as a floor, `maxAttempts`) with an injected clock and seeded RNG — no
//! sockets. Compared with a naive client that retries every 5 s (PowerSync's upload retry).
//!
//! Model of one phone: 1–4 entities (lanes, each ≤ the default 4 lanes so all go at once),
//! 1–5 queued mutations each; it comes online at a uniform time inside the outage and drains
//! in the foreground (a retry goes out when its backoff ends, the next mutation of a lane right
//! after the previous one's answer); 200 ms per request. The backend is down (503) for 30
//! minutes, then serves `capacity` requests per second and answers 503 to the rest (load
//! shedding), with `Retry-After: 60` where the variant sends it.
//!
//! `cargo bench -p background-sync-core --bench fleet` (100,000 phones, ~1 min) or with
//! `BGSYNC_FLEET_DEVICES=n`; `BGSYNC_BENCH_SMOKE=1` (in `make test`) runs 2,000 phones.
//! Writes bench-results/fleet.{md,csv}; `scripts/plot-fleet.sh` draws docs/fleet.png from the
//! CSV.

use background_sync_core::sim::{after_response, Next};
use background_sync_core::SyncConfig;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

const OUTAGE_MS: i64 = 30 * 60_000;
const RTT_MS: i64 = 200;
const HORIZON_S: usize = 8 * 3600;
const RETRY_AFTER: &str = "60";

#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// The plugin's policy; whether the backend sends `Retry-After` on its 503s.
    Plugin { retry_after: bool, max_attempts: u32 },
    /// Fixed 5 s between retries, forever, `Retry-After` ignored.
    Fixed5s,
}

struct Outcome {
    name: String,
    /// Requests the backend saw, per second.
    offered: Vec<u32>,
    requests: u64,
    requests_in_outage: u64,
    delivered: u64,
    /// Mutations left behind a dead letter (waiting for a user's retry).
    stranded: u64,
    /// Time from recovery until the last delivery (s).
    drained_after_s: f64,
}

fn simulate(devices: u32, capacity: u32, client: Client, name: &str, seed: u64) -> Outcome {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let cfg = match client {
        Client::Plugin { max_attempts, .. } => SyncConfig {
            max_attempts,
            ..SyncConfig::default()
        },
        Client::Fixed5s => SyncConfig::default(),
    };
    // Per lane (phone × 4 + entity): mutations left, attempts of its head.
    let lanes = devices as usize * 4;
    let mut left = vec![0u8; lanes];
    let mut attempts = vec![0u32; lanes];
    let mut queue: BinaryHeap<Reverse<(i64, u32)>> = BinaryHeap::new();
    let mut total = 0u64;
    for d in 0..devices {
        let online = rng.gen_range(0..OUTAGE_MS);
        for e in 0..rng.gen_range(1..=4u32) {
            let lane = d * 4 + e;
            left[lane as usize] = rng.gen_range(1..=5);
            total += u64::from(left[lane as usize]);
            queue.push(Reverse((online, lane)));
        }
    }
    let mut offered = vec![0u32; HORIZON_S];
    let mut accepted = vec![0u32; HORIZON_S];
    let (mut requests, mut in_outage, mut delivered, mut stranded, mut last_delivery) =
        (0u64, 0u64, 0u64, 0u64, 0i64);
    while let Some(Reverse((t, lane))) = queue.pop() {
        let sec = (t / 1000) as usize;
        if sec >= HORIZON_S {
            // Past the horizon: what is still queued counts as not delivered.
            stranded += u64::from(left[lane as usize]);
            continue;
        }
        offered[sec] += 1;
        requests += 1;
        let up = t >= OUTAGE_MS;
        if !up {
            in_outage += 1;
        }
        let ok = up && accepted[sec] < capacity;
        let answered = t + RTT_MS;
        let l = lane as usize;
        if ok {
            accepted[sec] += 1;
            delivered += 1;
            last_delivery = last_delivery.max(answered);
            left[l] -= 1;
            attempts[l] = 0;
            if left[l] > 0 {
                queue.push(Reverse((answered, lane)));
            }
            continue;
        }
        match client {
            Client::Fixed5s => queue.push(Reverse((answered + 5_000, lane))),
            Client::Plugin { retry_after, .. } => {
                let header = retry_after.then_some(RETRY_AFTER);
                match after_response(503, header, attempts[l], &cfg, answered, &mut rng) {
                    Next::RetryAt { at, attempts: n } => {
                        attempts[l] = n;
                        queue.push(Reverse((at, lane)));
                    }
                    Next::Dead => stranded += u64::from(left[l]),
                    Next::Delivered | Next::Unauthorized => unreachable!("a 503 is neither"),
                }
            }
        }
    }
    assert_eq!(
        delivered + stranded,
        total,
        "{name}: every mutation delivered or stranded"
    );
    Outcome {
        name: name.into(),
        offered,
        requests,
        requests_in_outage: in_outage,
        delivered,
        stranded,
        drained_after_s: (last_delivery - OUTAGE_MS).max(0) as f64 / 1000.0,
    }
}

/// Peak and 99th percentile of the per-second request rate from recovery until drained.
fn after_recovery(o: &Outcome) -> (u32, u32) {
    let from = (OUTAGE_MS / 1000) as usize;
    let to = (from + o.drained_after_s.ceil() as usize + 1).min(HORIZON_S);
    let mut window: Vec<u32> = o.offered[from..to].to_vec();
    window.sort_unstable();
    let peak = *window.last().unwrap_or(&0);
    let p99 = window
        .get(((window.len() as f64) * 0.99) as usize)
        .copied()
        .unwrap_or(peak);
    (peak, p99)
}

fn main() {
    let smoke = std::env::var("BGSYNC_BENCH_SMOKE").is_ok();
    let devices: u32 = std::env::var("BGSYNC_FLEET_DEVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 2_000 } else { 100_000 });
    // 2,000 requests/s for 100,000 phones: a backlog of ~750,000 mutations takes ≥ 6 min.
    let capacity = (devices / 50).max(1);
    let started = std::time::Instant::now();
    let plugin = |retry_after, max_attempts| Client::Plugin {
        retry_after,
        max_attempts,
    };
    let variants = [
        (
            plugin(true, 100),
            "plugin defaults (maxAttempts 100), backend sends Retry-After: 60",
        ),
        (
            plugin(false, 100),
            "plugin defaults (maxAttempts 100), no Retry-After",
        ),
        (Client::Fixed5s, "naive fixed 5 s retry, forever"),
        (
            plugin(true, 10),
            "plugin with maxAttempts 10 (the default before), Retry-After: 60",
        ),
        (
            plugin(false, 10),
            "plugin with maxAttempts 10 (the default before), no Retry-After",
        ),
    ];
    let outcomes: Vec<Outcome> = variants
        .iter()
        .enumerate()
        .map(|(i, (c, name))| simulate(devices, capacity, *c, name, 16 + i as u64))
        .collect();

    let mut md = format!(
        "{devices} phones, 30-minute outage, backend capacity {capacity} requests/s after it, 200 ms per request. \
         Simulated in {:.1} s.\n\n| client | requests | in the outage | peak req/s after recovery | p99 req/s after recovery | \
         drained after recovery | delivered | left in dead letters |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        started.elapsed().as_secs_f64()
    );
    for o in &outcomes {
        let (peak, p99) = after_recovery(o);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {peak} ({:.1}× capacity) | {p99} | {:.1} min | {} | {} ({:.1} %) |",
            o.name,
            o.requests,
            o.requests_in_outage,
            peak as f64 / capacity as f64,
            o.drained_after_s / 60.0,
            o.delivered,
            o.stranded,
            100.0 * o.stranded as f64 / (o.delivered + o.stranded) as f64
        );
    }
    println!("\n{md}");
    // Requests per second, in 10 s steps, for the plot.
    let mut csv = String::from("minute");
    for o in &outcomes {
        let _ = write!(csv, ",{}", o.name.replace(',', ";"));
    }
    csv.push('\n');
    let last = outcomes
        .iter()
        .map(|o| (OUTAGE_MS / 1000) as usize + o.drained_after_s as usize + 120)
        .max()
        .unwrap_or(0)
        .min(HORIZON_S);
    for start in (0..last).step_by(10) {
        let _ = write!(csv, "{:.3}", start as f64 / 60.0);
        for o in &outcomes {
            let sum: u32 = o.offered[start..(start + 10).min(HORIZON_S)].iter().sum();
            let _ = write!(csv, ",{:.1}", sum as f64 / 10.0);
        }
        csv.push('\n');
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench-results");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("fleet.md"), &md).unwrap();
    std::fs::write(out.join("fleet.csv"), &csv).unwrap();
    // The smoke run keeps the simulation honest: the naive client must load the backend more
    // in the outage than the plugin does, and everything is accounted for (asserted above).
    assert!(outcomes[2].requests_in_outage > outcomes[0].requests_in_outage);
}

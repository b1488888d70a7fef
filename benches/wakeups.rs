//! Wake-ups of the desktop (foreground) scheduler over a simulated hour, issue 16 item 5.
//!
//! No sockets and no sleeping: the plugin's own scheduling rules (`schedule::Plan`, which
//! the scheduler task in `src/scheduler.rs` runs) on a virtual clock, fed the writes of a
//! field worker's hour from a seeded RNG. A drain delivers what was queued when it started and
//! takes one round trip per request (the first alone, then `LANES` at a time); writes made
//! while it runs reach the scheduler after it, as they do in the task. The rule before this
//! change (a normal write waited 1.5 s unless any other write came first) runs beside it.

use background_sync_core::schedule::{next_wake, Action, Event, Plan};
use background_sync_core::{DrainReport, StopReason};
use rand::{Rng, SeedableRng};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(15 * 60);
const LANES: i64 = 4;
/// A radio that has been idle this long is asleep: the next send wakes it (an LTE RRC
/// inactivity tail is ~10 s).
const RADIO_TAIL_MS: i64 = 10_000;

/// A write at a time (ms), urgent (high/critical priority) or not.
pub type Write = (i64, bool);

/// A field worker's hour: a visit every ~10 minutes; at each, an urgent check-in, then 6–10
/// saves of the visit form 15–90 s apart, each 1–4 writes 50–400 ms apart (one save touches
/// several rows), and a check-out.
pub fn field_hour(seed: u64) -> Vec<Write> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut visit = rng.gen_range(0..120_000);
    while visit < 3_600_000 {
        out.push((visit, true));
        let mut t = visit;
        for _ in 0..rng.gen_range(6..=10) {
            t += rng.gen_range(15_000..90_000);
            for _ in 0..rng.gen_range(1..=4) {
                out.push((t, false));
                t += rng.gen_range(50..400);
            }
        }
        out.push((t + rng.gen_range(5_000..30_000), false));
        visit += rng.gen_range(480_000..720_000);
    }
    out.retain(|w| w.0 < 3_600_000);
    out
}

/// Typing in a notes field with an autosave every second for two minutes.
pub fn autosave(_seed: u64) -> Vec<Write> {
    (0..120).map(|i| (60_000 + i * 1_000, false)).collect()
}

#[derive(Debug, Default)]
pub struct Stats {
    pub writes: usize,
    pub drains: usize,
    pub sending_drains: usize,
    pub radio_wakeups: usize,
    /// Time the radio is powered: each sending drain plus the tail after it, overlaps merged.
    pub radio_on_ms: i64,
    pub latencies_ms: Vec<i64>,
}

impl Stats {
    pub fn per_100_writes(&self, n: usize) -> f64 {
        100.0 * n as f64 / self.writes.max(1) as f64
    }
    pub fn latency_pct(&mut self, p: f64) -> i64 {
        self.latencies_ms.sort_unstable();
        let i = ((self.latencies_ms.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_ms.get(i).copied().unwrap_or(0)
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum Rule {
    /// `schedule::Plan`: what the scheduler does now.
    Plan,
    /// Before: a normal write waited 1.5 s, and any write in that time cut the wait short.
    Before,
}

fn drain_ms(n: usize, rtt: i64) -> i64 {
    if n == 0 {
        5
    } else {
        rtt * (1 + (n as i64 - 1 + LANES - 1) / LANES) + 10
    }
}

fn report(now: i64) -> DrainReport {
    let mut r: DrainReport = serde_json::from_value(serde_json::json!({
        "runId": "sim", "trigger": "sim", "startedAt": now, "finishedAt": now,
        "requests": 0, "sent": 0, "done": 0, "retried": 0, "dead": 0, "remaining": 0,
        "deadTotal": 0, "stopReason": "empty"
    }))
    .unwrap();
    r.stop_reason = StopReason::Empty;
    r
}

/// Runs an hour of `writes` (sorted by time) through `rule` at `rtt` ms per round trip.
pub fn simulate(writes: &[Write], rule: Rule, rtt: i64) -> Stats {
    // A minute past the hour: the last writes still go out.
    let end = 3_660_000;
    let mut st = Stats {
        writes: writes.len(),
        ..Default::default()
    };
    let mut queued: Vec<i64> = Vec::new();
    let mut next = 0; // the next write not yet made
    let mut last_send_end = i64::MIN / 2;
    let mut now = 0i64;
    let (mut plan, mut action) = Plan::start();
    // The rule before: its timer, and the end of a debounce in progress.
    let (mut before_timer, mut before_debounce) = (0i64, None::<i64>);
    loop {
        let due_at = match (rule, action) {
            (Rule::Plan, Action::Drain { .. }) => now,
            (Rule::Plan, Action::SleepUntil(t)) => t,
            (Rule::Before, _) => before_debounce.unwrap_or(before_timer),
        };
        if due_at <= now {
            // A drain at `now` sends what is queued.
            let n = queued.len();
            let took = drain_ms(n, rtt);
            st.drains += 1;
            if n > 0 {
                st.sending_drains += 1;
                if now - last_send_end >= RADIO_TAIL_MS {
                    st.radio_wakeups += 1;
                }
                let powered_until = last_send_end + RADIO_TAIL_MS;
                st.radio_on_ms +=
                    now + took + RADIO_TAIL_MS - now.max(powered_until).min(now + took + RADIO_TAIL_MS);
                last_send_end = now + took;
            }
            st.latencies_ms.extend(queued.drain(..).map(|t| now + took - t));
            now += took;
            // Writes made while it ran are queued, and reach the scheduler after it.
            let mut during: Option<bool> = None;
            while next < writes.len() && writes[next].0 <= now {
                queued.push(writes[next].0);
                during = Some(during.unwrap_or(false) || writes[next].1);
                next += 1;
            }
            let r = report(now);
            match rule {
                Rule::Plan => {
                    action = plan.after_drain(Some(&r), INTERVAL, now);
                    if let Some(urgent) = during {
                        action = plan.on(Event::Write { urgent }, now);
                    }
                }
                Rule::Before => {
                    before_timer = now + next_wake(&r, INTERVAL, 0).0.as_millis() as i64;
                    before_debounce = during.map(|urgent| if urgent { now } else { now + 1_500 });
                }
            }
            continue;
        }
        let write_at = writes.get(next).map_or(i64::MAX, |w| w.0);
        if due_at.min(write_at) >= end {
            break;
        }
        if write_at < due_at {
            now = write_at;
            let urgent = writes[next].1;
            queued.push(now);
            next += 1;
            match rule {
                Rule::Plan => action = plan.on(Event::Write { urgent }, now),
                // An urgent write, or any write while a debounce runs, drained at once.
                Rule::Before => {
                    before_debounce = Some(if urgent || before_debounce.is_some() {
                        now
                    } else {
                        now + 1_500
                    })
                }
            }
        } else {
            now = due_at;
            if rule == Rule::Plan {
                action = plan.on(Event::Timer, now);
            }
        }
    }
    st
}

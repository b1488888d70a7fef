//! When the foreground scheduler drains, as a pure state machine: the plugin's scheduler task
//! feeds it what happened (a write, the network back, its timer) and does what it answers
//! (drain now, or sleep until a time). Time is milliseconds on a monotonic clock the caller
//! picks, so the same rules run in the plugin and, on a virtual clock, in simulations
//! (`benches/engine.rs`, section `wakeups`).
//!
//! Every drain that sends wakes the phone's radio, and a radio stays powered for seconds after
//! the last byte: the rules send a burst of writes together and never poll faster than needed.

use crate::models::{DrainReport, StopReason};
use std::time::Duration;

/// A normal-priority write waits until the app has written nothing for this long, so one save
/// of a form (several writes a few hundred ms apart) goes out in one drain...
pub const WRITES_QUIET: Duration = Duration::from_millis(1_500);
/// ...but never longer than this after the first write of the burst, so a steady stream of
/// writes (an autosave every second) still goes out.
pub const WRITES_MAX_WAIT: Duration = Duration::from_secs(10);
/// Give a new network a moment (DHCP, captive portal checks) before draining.
pub const NETWORK_SETTLE: Duration = Duration::from_millis(1_000);
/// First re-probe after the API was unreachable; doubles per run still offline, up to the
/// interval.
pub const OFFLINE_PROBE: Duration = Duration::from_secs(30);
/// Shortest sleep after a drain (a backoff that ends at once must not spin the task).
pub const MIN_SLEEP: Duration = Duration::from_millis(200);

/// What happened while the scheduler slept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The time it asked to sleep until has come.
    Timer,
    /// The app queued something; `urgent` for high and critical priority.
    Write { urgent: bool },
    /// The toggle or the configuration changed: look again now.
    Wake,
    /// The OS reports a network that may reach the API.
    NetworkUp,
}

/// What the scheduler does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Drain now; the trigger names why, for history.
    Drain { trigger: &'static str },
    /// Sleep until this time (ms on the caller's clock) or the next event.
    SleepUntil(i64),
}

/// The scheduler's state between events.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The scheduler's own next run: the interval, a backoff's end, an offline probe.
    timer_at: i64,
    /// Normal-priority writes waiting to be sent together: first and latest write.
    burst: Option<(i64, i64)>,
    /// A network came up; drain once it has settled.
    settled_at: Option<i64>,
    /// Runs in a row that found the API unreachable.
    offline_streak: u32,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Plan {
    /// At start-up: drain at once (what a previous process left queued).
    pub fn start() -> (Self, Action) {
        let plan = Plan {
            timer_at: i64::MAX,
            burst: None,
            settled_at: None,
            offline_streak: 0,
        };
        (plan, Action::Drain { trigger: "startup" })
    }

    /// After a drain at `now`: `report` is `None` when none ran (not configured, toggle off,
    /// or the drain failed), which sleeps the interval. Writes and network changes seen
    /// before the drain were covered by it.
    pub fn after_drain(&mut self, report: Option<&DrainReport>, interval: Duration, now: i64) -> Action {
        self.burst = None;
        self.settled_at = None;
        let sleep = match report {
            Some(r) => {
                let (sleep, streak) = next_wake(r, interval, self.offline_streak);
                self.offline_streak = streak;
                sleep
            }
            None => interval,
        };
        self.timer_at = now.saturating_add(ms(sleep));
        self.next(now)
    }

    /// An event at `now`.
    pub fn on(&mut self, event: Event, now: i64) -> Action {
        match event {
            Event::Write { urgent: true } => return Action::Drain { trigger: "enqueue" },
            Event::Wake => return Action::Drain { trigger: "wake" },
            Event::Write { urgent: false } => {
                let first = self.burst.map_or(now, |(first, _)| first);
                self.burst = Some((first, now));
            }
            Event::NetworkUp => {
                self.settled_at
                    .get_or_insert(now.saturating_add(ms(NETWORK_SETTLE)));
            }
            Event::Timer => {}
        }
        self.next(now)
    }

    /// Drain if something is due at `now`, else sleep until the first thing that will be.
    fn next(&self, now: i64) -> Action {
        let burst_due = self.burst.map(|(first, last)| {
            (last.saturating_add(ms(WRITES_QUIET))).min(first.saturating_add(ms(WRITES_MAX_WAIT)))
        });
        let due = [
            (burst_due, "enqueue"),
            (self.settled_at, "reconnect"),
            (Some(self.timer_at), "timer"),
        ];
        if let Some((_, trigger)) = due.iter().find(|(at, _)| at.is_some_and(|at| at <= now)) {
            return Action::Drain { trigger };
        }
        Action::SleepUntil(due.iter().filter_map(|(at, _)| *at).min().unwrap_or(i64::MAX))
    }
}

/// How long the scheduler sleeps after a drain: the interval, less when a backoff ends sooner
/// (never under [`MIN_SLEEP`]), at most a second when the run was cut short or another drainer
/// held the lease, and, while the API is unreachable, a probe on a growing delay (30 s, 1 min,
/// … up to the interval; a network-up signal from the OS cuts it short). Returns the sleep and
/// the new count of offline runs in a row.
pub fn next_wake(r: &DrainReport, interval: Duration, offline_streak: u32) -> (Duration, u32) {
    let mut sleep_for = interval;
    if let Some(next) = r.next_attempt_at {
        let wait = crate::time::span(next.saturating_sub(r.finished_at));
        sleep_for = sleep_for.min(wait.max(MIN_SLEEP));
    }
    if r.stop_reason == StopReason::Deadline || r.stop_reason == StopReason::AlreadyRunning {
        sleep_for = sleep_for.min(Duration::from_secs(1));
    }
    if r.stop_reason == StopReason::NoNetwork {
        let streak = (offline_streak + 1).min(8);
        (sleep_for.min(OFFLINE_PROBE * 2u32.pow(streak - 1)), streak)
    } else {
        (sleep_for, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stop: StopReason, next_in_ms: Option<i64>) -> DrainReport {
        let mut r: DrainReport = serde_json::from_value(serde_json::json!({
            "runId": "r", "trigger": "timer", "startedAt": 1_000, "finishedAt": 1_000,
            "requests": 0, "sent": 0, "done": 0, "retried": 0, "dead": 0, "remaining": 0,
            "deadTotal": 0, "stopReason": "empty"
        }))
        .unwrap();
        r.stop_reason = stop;
        r.next_attempt_at = next_in_ms.map(|ms| r.finished_at + ms);
        r
    }

    const HOUR: Duration = Duration::from_secs(3_600);

    /// A plan that has drained once at `now` and sleeps the interval.
    fn idle(now: i64) -> Plan {
        let (mut plan, first) = Plan::start();
        assert_eq!(first, Action::Drain { trigger: "startup" });
        assert_eq!(
            plan.after_drain(Some(&report(StopReason::Empty, None)), HOUR, now),
            Action::SleepUntil(now + 3_600_000)
        );
        plan
    }

    #[test]
    fn a_burst_of_writes_goes_out_once_the_writes_pause() {
        let mut plan = idle(0);
        let write = Event::Write { urgent: false };
        // One save of a form: five writes 200 ms apart; each pushes the drain back.
        for t in [0, 200, 400, 600, 800] {
            assert_eq!(plan.on(write, t), Action::SleepUntil(t + 1_500));
        }
        // Woken early (a spurious timer): still waiting.
        assert_eq!(plan.on(Event::Timer, 2_000), Action::SleepUntil(2_300));
        assert_eq!(plan.on(Event::Timer, 2_300), Action::Drain { trigger: "enqueue" });
        // The drain covered them: back to the interval.
        assert_eq!(
            plan.after_drain(Some(&report(StopReason::Empty, None)), HOUR, 2_500),
            Action::SleepUntil(2_500 + 3_600_000)
        );
    }

    #[test]
    fn a_steady_stream_of_writes_still_goes_out_within_the_longest_wait() {
        let mut plan = idle(0);
        let mut drained_at = None;
        for t in (0..20_000).step_by(1_000) {
            if let Action::Drain { trigger } = plan.on(Event::Write { urgent: false }, t) {
                assert_eq!(trigger, "enqueue");
                drained_at = Some(t);
                break;
            }
        }
        assert_eq!(
            drained_at,
            Some(10_000),
            "the first write waited longer than 10 s"
        );
    }

    #[test]
    fn urgent_writes_and_wakes_drain_at_once_and_a_network_drains_once_settled() {
        let mut plan = idle(0);
        plan.on(Event::Write { urgent: false }, 100);
        assert_eq!(
            plan.on(Event::Write { urgent: true }, 200),
            Action::Drain { trigger: "enqueue" }
        );
        let mut plan = idle(0);
        assert_eq!(plan.on(Event::Wake, 50), Action::Drain { trigger: "wake" });
        let mut plan = idle(0);
        assert_eq!(plan.on(Event::NetworkUp, 1_000), Action::SleepUntil(2_000));
        // A second network (Wi-Fi after cellular) does not push the drain back.
        assert_eq!(plan.on(Event::NetworkUp, 1_500), Action::SleepUntil(2_000));
        assert_eq!(
            plan.on(Event::Timer, 2_000),
            Action::Drain { trigger: "reconnect" }
        );
        // Not configured (no drain ran): the interval.
        assert_eq!(
            plan.after_drain(None, HOUR, 2_100),
            Action::SleepUntil(2_100 + 3_600_000)
        );
    }

    #[test]
    fn the_next_wake_follows_backoff_cuts_and_offline_probes() {
        let hour = HOUR;
        let s = Duration::from_secs;
        assert_eq!(next_wake(&report(StopReason::Empty, None), hour, 3), (hour, 0));
        // A backoff that ends in 5 s, one that already ended (200 ms, not a busy loop).
        assert_eq!(
            next_wake(&report(StopReason::Waiting, Some(5_000)), hour, 0).0,
            s(5)
        );
        assert_eq!(
            next_wake(&report(StopReason::Waiting, Some(-50)), hour, 0).0,
            Duration::from_millis(200)
        );
        assert_eq!(
            next_wake(&report(StopReason::Deadline, Some(60_000)), hour, 0).0,
            s(1)
        );
        assert_eq!(
            next_wake(&report(StopReason::AlreadyRunning, None), hour, 0).0,
            s(1)
        );
        // Offline: 30 s, 1 min, 2 min, … capped by the interval, and reset by a run that reached it.
        let mut streak = 0;
        let mut sleeps = Vec::new();
        for _ in 0..9 {
            let (sleep, n) = next_wake(&report(StopReason::NoNetwork, None), hour, streak);
            sleeps.push(sleep.as_secs());
            streak = n;
        }
        assert_eq!(sleeps, [30, 60, 120, 240, 480, 960, 1_920, 3_600, 3_600]);
        assert_eq!(next_wake(&report(StopReason::Empty, None), hour, streak).1, 0);
    }
}

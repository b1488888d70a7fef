//! Foreground scheduler: while the app runs, drain on a timer, when a backoff expires, when the
//! network comes back, and shortly after an enqueue (at once for high/critical priority).
//! On by default (`autoSync`), independent of the background toggle, which gates only work the
//! OS starts; with `autoSync: false` it runs only while the toggle is on (the desktop's
//! "background" timer). Never two drains at once (the engine's lock and lease), and it stops on
//! app exit, cancelling a drain in progress.

use crate::BackgroundSync;
use crate::DrainOptions;
use crate::Result;
use crate::{DrainReport, StopReason};
use futures_util::stream::{BoxStream, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Coalesce normal-priority enqueues for this long before draining.
const ENQUEUE_DEBOUNCE: Duration = Duration::from_millis(1_500);
/// Give a new network a moment (DHCP, captive portal checks) before draining.
const RECONNECT_DELAY: Duration = Duration::from_millis(1_000);

/// First re-probe after the API was unreachable.
const OFFLINE_PROBE: Duration = Duration::from_secs(30);

const KICK_NONE: u8 = 0;
const KICK_SOON: u8 = 1;
const KICK_NOW: u8 = 2;

/// Stream of "the network may have come back" signals.
pub(crate) type Connectivity = Option<BoxStream<'static, ()>>;
/// Built inside the runtime (OS watchers need its reactor; plugin setup runs outside it).
pub(crate) type ConnectivityFactory = Box<dyn FnOnce() -> Connectivity + Send>;

/// Handle on the scheduler task.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Shared>,
}

struct Shared {
    engine: BackgroundSync,
    wake: Notify,
    kick: AtomicU8,
    shutdown: CancellationToken,
    /// For `diagnostics()`: the task is alive, when it next wakes on its own (ms since the
    /// epoch, 0 = not known yet), and whether the OS reports network changes.
    running: AtomicBool,
    next_wake_at: AtomicI64,
    watching_network: AtomicBool,
}

impl Scheduler {
    pub(crate) fn start(engine: BackgroundSync, connectivity: ConnectivityFactory) -> Self {
        let inner = Arc::new(Shared {
            engine,
            wake: Notify::new(),
            kick: AtomicU8::new(KICK_NONE),
            shutdown: CancellationToken::new(),
            running: AtomicBool::new(true),
            next_wake_at: AtomicI64::new(0),
            watching_network: AtomicBool::new(false),
        });
        let task = inner.clone();
        tauri::async_runtime::spawn(async move {
            task.clone().run(connectivity()).await;
            task.running.store(false, Ordering::SeqCst);
        });
        Self { inner }
    }

    /// What the scheduler will do next, for `diagnostics()`.
    pub fn facts(&self) -> crate::DesktopFacts {
        let next = self.inner.next_wake_at.load(Ordering::SeqCst);
        crate::DesktopFacts {
            scheduler_running: self.inner.running.load(Ordering::SeqCst)
                && !self.inner.shutdown.is_cancelled(),
            next_wake_at: (next > 0).then_some(next),
            watching_network: self.inner.watching_network.load(Ordering::SeqCst),
        }
    }

    /// Re-read the toggle and configuration now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Called after an enqueue.
    pub fn after_enqueue(&self, urgent: bool) {
        let k = if urgent { KICK_NOW } else { KICK_SOON };
        self.inner.kick.fetch_max(k, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Stop the task (app exit); a drain in progress is cancelled and its rows stay pending.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// A foreground drain (`syncNow`): waits for a scheduled drain in progress to finish
    /// rather than failing with `alreadyRunning`.
    pub async fn drain_now(&self, mut opts: DrainOptions) -> Result<DrainReport> {
        let give_up = tokio::time::Instant::now() + opts.budget;
        let cancel = self.inner.shutdown.child_token();
        let caller = opts.cancel.clone();
        opts.cancel = cancel.clone();
        // Forward the caller's cancellation only while this call runs: the helper task ends
        // with it (it used to wait for a cancellation that never came, one task per syncNow).
        let finished = CancellationToken::new();
        let _finished = finished.clone().drop_guard();
        tauri::async_runtime::spawn(async move {
            tokio::select! {
                _ = caller.cancelled() => cancel.cancel(),
                _ = finished.cancelled() => {}
            }
        });
        loop {
            let r = self.inner.engine.drain(opts.clone()).await?;
            if r.stop_reason != StopReason::AlreadyRunning || tokio::time::Instant::now() >= give_up {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Shared {
    async fn run(self: Arc<Self>, mut connectivity: Connectivity) {
        self.watching_network
            .store(connectivity.is_some(), Ordering::SeqCst);
        let mut trigger = "startup";
        let mut offline_streak = 0u32;
        loop {
            let enabled = self.engine.is_enabled().await.unwrap_or(false);
            let cfg = self.engine.config().await.ok().flatten();
            let mut sleep_for = Duration::from_secs(3600);
            if let Some(cfg) = cfg.filter(|c| c.auto_sync || enabled) {
                let opts = DrainOptions {
                    budget: Duration::from_millis(cfg.background.budget_ms),
                    cancel: self.shutdown.child_token(),
                    trigger: trigger.to_string(),
                    // Automatic foreground sync does not depend on the background toggle.
                    respect_toggle: !cfg.auto_sync,
                    network_available: None,
                };
                let report = self.engine.drain(opts).await;
                let interval = Duration::from_secs(u64::from(cfg.background.interval_minutes.max(1)) * 60);
                sleep_for = interval;
                match report {
                    Ok(r) => (sleep_for, offline_streak) = next_wake(&r, interval, offline_streak),
                    Err(e) => tracing::warn!(error = %e, "scheduled drain failed"),
                }
                self.engine.mark_scheduled().await;
            }
            if self.shutdown.is_cancelled() {
                return;
            }
            let wall_now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.next_wake_at
                .store(wall_now + sleep_for.as_millis() as i64, Ordering::SeqCst);
            trigger = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(sleep_for) => "timer",
                _ = self.wake.notified() => {
                    match self.kick.swap(KICK_NONE, Ordering::SeqCst) {
                        KICK_NOW => "enqueue",
                        KICK_SOON => {
                            // Coalesce a burst of writes; an urgent one cuts the wait short.
                            tokio::select! {
                                _ = self.shutdown.cancelled() => return,
                                _ = tokio::time::sleep(ENQUEUE_DEBOUNCE) => {}
                                _ = self.wake.notified() => {}
                            }
                            self.kick.store(KICK_NONE, Ordering::SeqCst);
                            "enqueue"
                        }
                        _ => "wake",
                    }
                }
                Some(()) = next_signal(&mut connectivity) => {
                    // A wake (e.g. an urgent enqueue) cuts the settling delay short.
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                        _ = self.wake.notified() => {}
                    }
                    "reconnect"
                }
            };
        }
    }
}

/// How long the scheduler sleeps after a drain (pure): the interval, less when a backoff ends
/// sooner (never under 200 ms), at most a second when the run was cut short or another drainer
/// held the lease, and, while the API is unreachable, a probe on a growing delay (30 s, 1 min,
/// … up to the interval; a network-up signal from the OS cuts it short). Returns the sleep and
/// the new count of offline runs in a row.
fn next_wake(r: &DrainReport, interval: Duration, offline_streak: u32) -> (Duration, u32) {
    let mut sleep_for = interval;
    if let Some(next) = r.next_attempt_at {
        let wait = (next - r.finished_at).max(0) as u64;
        sleep_for = sleep_for.min(Duration::from_millis(wait.max(200)));
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

async fn next_signal(c: &mut Connectivity) -> Option<()> {
    match c {
        Some(s) => s.next().await,
        None => std::future::pending().await,
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

    #[test]
    fn the_next_wake_follows_backoff_cuts_and_offline_probes() {
        let hour = Duration::from_secs(3_600);
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

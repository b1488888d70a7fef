//! Foreground scheduler: while the app runs, drain on a timer, when a backoff expires, when the
//! network comes back, and once a burst of enqueues pauses (at once for high/critical
//! priority). What to do when is the engine's pure `schedule::Plan`; this task only sleeps,
//! listens and drains.
//! On by default (`autoSync`), independent of the background toggle, which gates only work the
//! OS starts; with `autoSync: false` it runs only while the toggle is on (the desktop's
//! "background" timer). Never two drains at once (the engine's lock and lease), and it stops on
//! app exit, cancelling a drain in progress.

use crate::schedule::{Action, Event, Plan};
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

/// Sleep when the outbox is not configured (a `configure` wakes the task).
const UNCONFIGURED_SLEEP: Duration = Duration::from_secs(3_600);
/// Longest single sleep (a timer far ahead is re-armed, not slept in one piece).
const MAX_SLEEP_MS: i64 = 24 * 3_600_000;

/// What woke the task, strongest first when several writes came: kept in an `AtomicU8` so
/// that `after_enqueue` never blocks (`fetch_max` keeps the most urgent).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Kick {
    /// A wake that is not a write (configure, enable).
    None = 0,
    /// A normal-priority write: sent with the burst.
    Soon = 1,
    /// A high or critical write: sent at once.
    Now = 2,
}

impl Kick {
    fn from_u8(v: u8) -> Kick {
        match v {
            2 => Kick::Now,
            1 => Kick::Soon,
            _ => Kick::None,
        }
    }
}

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
            kick: AtomicU8::new(Kick::None as u8),
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
        let k = if urgent { Kick::Now } else { Kick::Soon };
        self.inner.kick.fetch_max(k as u8, Ordering::SeqCst);
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
        // The plan's clock: milliseconds since the task started, monotonic.
        let origin = tokio::time::Instant::now();
        let now = || i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (mut plan, mut action) = Plan::start();
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            action = match action {
                Action::Drain { trigger } => {
                    let (report, interval) = self.drain(trigger).await;
                    plan.after_drain(report.as_ref(), interval, now())
                }
                Action::SleepUntil(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now()).clamp(0, MAX_SLEEP_MS) as u64);
                    let wall_now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    self.next_wake_at
                        .store(wall_now + wait.as_millis() as i64, Ordering::SeqCst);
                    let event = tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => Event::Timer,
                        _ = self.wake.notified() => match Kick::from_u8(self.kick.swap(Kick::None as u8, Ordering::SeqCst)) {
                            Kick::Now => Event::Write { urgent: true },
                            Kick::Soon => Event::Write { urgent: false },
                            Kick::None => Event::Wake,
                        },
                        Some(()) = next_signal(&mut connectivity) => Event::NetworkUp,
                    };
                    plan.on(event, now())
                }
            };
        }
    }

    /// One scheduled drain, if the outbox is configured and automatic sync (or the background
    /// toggle) allows it. Returns its report (none when no drain ran or it failed) and the
    /// interval to sleep when nothing sooner is due.
    async fn drain(&self, trigger: &str) -> (Option<DrainReport>, Duration) {
        let enabled = self.engine.is_enabled().await.unwrap_or(false);
        let cfg = self.engine.config().await.ok().flatten();
        let Some(cfg) = cfg.filter(|c| c.auto_sync || enabled) else {
            return (None, UNCONFIGURED_SLEEP);
        };
        let opts = DrainOptions {
            budget: Duration::from_millis(cfg.background.budget_ms),
            cancel: self.shutdown.child_token(),
            trigger: trigger.to_string(),
            // Automatic foreground sync does not depend on the background toggle.
            respect_toggle: !cfg.auto_sync,
            network_available: None,
        };
        let report = self.engine.drain(opts).await;
        self.engine.mark_scheduled().await;
        let interval = Duration::from_secs(u64::from(cfg.background.interval_minutes.max(1)) * 60);
        match report {
            Ok(r) => (Some(r), interval),
            Err(e) => {
                tracing::warn!(error = %e, "scheduled drain failed");
                (None, interval)
            }
        }
    }
}

async fn next_signal(c: &mut Connectivity) -> Option<()> {
    match c {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

//! What every part of a drain shares with the facade: the store, the injected clock and RNG,
//! the event channel, the in-memory state and the parsed-configuration cache.
//! Imported by the facade (`engine`) and the drain; imports neither.

use crate::error::{Error, Result};
use crate::models::{DrainReport, StatusEvent, StopReason, SyncConfig, SyncState, SyncStatus};
use crate::policy::Clock;
use crate::store::Store;
use crate::validate::OriginPolicy;
use rand::rngs::StdRng;
use std::sync::{Arc, Mutex as StdMutex};
use tokio::sync::{broadcast, Mutex};

pub(crate) type ParsedConfig = Arc<(SyncConfig, OriginPolicy)>;

/// What every handle on the same database file in this process shares: one drain at a time,
/// and one event stream, so a drain through another handle (Android runs its worker in the
/// app's process while the app is alive) reaches the app's listeners as it happens.
pub(crate) struct PerFile {
    pub(crate) drain_lock: Arc<Mutex<()>>,
    pub(crate) events: broadcast::Sender<StatusEvent>,
}

impl Default for PerFile {
    fn default() -> Self {
        PerFile {
            drain_lock: Arc::new(Mutex::new(())),
            events: broadcast::channel(256).0,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    clock: Arc<dyn Clock>,
    pub(crate) rng: Mutex<StdRng>,
    events: broadcast::Sender<StatusEvent>,
    state: StdMutex<SyncState>,
    last_report: StdMutex<Option<DrainReport>>,
    /// Shared by every handle on the same file in this process.
    pub(crate) drain_lock: Arc<Mutex<()>>,
    /// Keeps the per-file registry entry alive while this handle lives.
    _file: Arc<PerFile>,
    /// The last parsed configuration and its origin policy, keyed by the stored JSON: an
    /// enqueue then costs one small read instead of a parse (another process may configure
    /// the same file, so the stored text is always read).
    config_cache: StdMutex<Option<(String, ParsedConfig)>>,
    /// Bumped by every setAuth/clearAuth through this handle, so a running drain switches to
    /// (or drops) the credentials for its next request.
    auth_epoch: std::sync::atomic::AtomicU64,
}

impl Inner {
    pub(crate) fn new(store: Store, clock: Arc<dyn Clock>, rng: StdRng, file: Arc<PerFile>) -> Self {
        Inner {
            drain_lock: file.drain_lock.clone(),
            events: file.events.clone(),
            _file: file,
            store,
            clock,
            rng: Mutex::new(rng),
            state: StdMutex::new(SyncState::Idle),
            last_report: StdMutex::new(None),
            config_cache: StdMutex::new(None),
            auth_epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.events.subscribe()
    }

    pub(crate) async fn config_and_policy(&self) -> Result<ParsedConfig> {
        let raw = self.store.load_config_raw().await?.ok_or(Error::NotConfigured)?;
        let mut cache = self.config_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((text, parsed)) = cache.as_ref() {
            if *text == raw {
                return Ok(parsed.clone());
            }
        }
        let cfg: SyncConfig = serde_json::from_str(&raw).map_err(Error::corrupt("configuration"))?;
        let policy = OriginPolicy::new(&cfg)?;
        let parsed = Arc::new((cfg, policy));
        *cache = Some((raw, parsed.clone()));
        Ok(parsed)
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn has_listeners(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub(crate) fn emit(&self, e: StatusEvent) {
        // No receivers is fine (headless runs).
        let _ = self.events.send(e);
    }

    pub(crate) fn auth_epoch(&self) -> u64 {
        self.auth_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn bump_auth_epoch(&self) {
        self.auth_epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) async fn set_state(&self, s: SyncState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.emit_status().await;
    }

    pub(crate) async fn emit_status(&self) {
        if self.events.receiver_count() == 0 {
            return;
        }
        if let Ok(s) = self.status().await {
            self.emit(StatusEvent::Status(s));
        }
    }

    pub(crate) async fn status(&self) -> Result<SyncStatus> {
        let counts = self.store.counts().await?;
        let (last_sync_at, last_error) = self.store.last_sync().await?;
        let configured = self.store.load_config().await?.is_some();
        let enabled = self.store.enabled().await?;
        let next_attempt_at = self.store.next_due().await?;
        let state = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut last_report = self.last_report.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if last_report.is_none() {
            last_report = self.store.history(1).await?.into_iter().next();
        }
        let (uploads_pending, uploads_dead) = self.store.upload_counts().await?;
        let next_attempt_at = match (next_attempt_at, self.store.next_upload_due(self.now()).await?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(SyncStatus {
            uploads_pending,
            uploads_dead,
            state,
            enabled,
            configured,
            pending: counts.pending,
            in_flight: counts.in_flight,
            dead: counts.dead,
            blocked: counts.blocked,
            last_sync_at,
            last_error,
            next_attempt_at,
            last_report,
        })
    }

    pub(crate) async fn finish(&self, mut report: DrainReport, reason: StopReason) -> Result<DrainReport> {
        report.finished_at = self.now();
        report.stop_reason = reason;
        if let (Ok(c), Ok((uploads, _))) = (self.store.counts().await, self.store.upload_counts().await) {
            report.uploads_remaining = uploads;
            report.remaining = c.pending + c.in_flight + uploads;
            report.dead_total = c.dead;
            if reason == StopReason::Deadline && report.remaining == 0 {
                report.stop_reason = StopReason::Empty;
            }
        }
        let upload_due = self
            .store
            .next_upload_due(report.finished_at)
            .await
            .ok()
            .flatten();
        report.next_attempt_at = match (self.store.next_due().await.ok().flatten(), upload_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if reason != StopReason::AlreadyRunning {
            if let Err(e) = self.store.record_run(&report).await {
                tracing::warn!(error = %e, "could not record the drain report");
            }
        }
        tracing::info!(
            run = %report.run_id, trigger = %report.trigger, reason = ?report.stop_reason,
            done = report.done, retried = report.retried, dead = report.dead, remaining = report.remaining,
            "drain finished"
        );
        *self.last_report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        let state = match report.stop_reason {
            StopReason::Error | StopReason::AuthFailed => SyncState::Failed,
            StopReason::AlreadyRunning => *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            _ => SyncState::Completed,
        };
        self.emit(StatusEvent::Report(report.clone()));
        self.set_state(state).await;
        Ok(report)
    }
}

//! The push-only drain: claim sendable rows, send them (bounded concurrency across entities,
//! one at a time per entity), settle each outcome, until the queue is empty, the deadline is
//! near, or the caller cancels. Every row that is not confirmed stays pending.
//!
//! This file holds the gates (configured, toggle, network, one drainer per file and per
//! process), takes and keeps the lease, runs the two passes side by side (`outbox`, the
//! mutations; `uploads`, the files) and finishes the report.

use crate::context::Inner;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::models::{DrainReport, StopReason, SyncState};
use crate::transport::Transport;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod options;
mod outbox;
mod outcomes;
mod shared;
mod uploads;

pub use options::DrainOptions;
pub(crate) use outcomes::outcome_events;
use shared::{AuthCell, UploadSignal};

/// How far past its budget a drain may return (the contract's bound is 1 s): the run is cut
/// here, whatever it is waiting for, with time left to answer.
const OVERRUN: Duration = Duration::from_millis(700);
/// How long a cancelled drain may take to wind down before it is cut (the contract's bound is
/// 0.7 s; giving rows back and writing the report take milliseconds unless SQLite waits).
const CANCEL_GRACE: Duration = Duration::from_millis(450);

/// One drain, bounded by its budget and by a cancellation whatever it waits for. Requests, DNS,
/// TLS and token refreshes are clamped inside the run; what cannot be clamped (SQLite waiting up
/// to its busy timeout for a lock another process holds) is cut here. A cut run's claimed rows
/// stay in flight and the next run re-queues them; its lease is given back when the database
/// frees up (or expires); its outcomes not yet written are sent again under the same keys.
pub(crate) async fn run(inner: &Inner, opts: DrainOptions) -> Result<DrainReport> {
    let started = Instant::now();
    let run_id = uuid::Uuid::now_v7().to_string();
    let cancel = opts.cancel.clone();
    let hard_stop = started.checked_add(opts.budget + OVERRUN);
    let budget_out = async {
        match hard_stop {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    let cancel_out = async {
        cancel.cancelled().await;
        tokio::time::sleep(CANCEL_GRACE).await
    };
    let why = tokio::select! {
        biased;
        r = run_within(inner, opts, started, run_id.clone()) => return r,
        _ = budget_out => "the drain's budget ran out",
        _ = cancel_out => "the drain was cancelled",
    };
    tracing::warn!(run = %run_id, "{why} while the run was still waiting (most likely for a database lock): cut");
    let store = inner.store.clone();
    // Detached: it waits for the lock the run could not get, never for the caller.
    tokio::spawn(async move {
        let _ = store.release_lease(&run_id).await;
    });
    // The state changes at once; the status event that follows reads the database (reads are
    // not blocked by a writer in WAL mode) and gets what is left of the bound.
    let _ = tokio::time::timeout(Duration::from_millis(100), inner.set_state(SyncState::Failed)).await;
    // "locked" in the message: the Android worker retries such storage errors (WorkPlan.kt).
    Err(Error::Storage {
        message: format!(
            "{why} while it was still waiting, most likely for the outbox database (locked by another \
             connection or process); nothing queued was lost, the next drain carries on"
        ),
        source: None,
    })
}

async fn run_within(
    inner: &Inner,
    opts: DrainOptions,
    started: Instant,
    run_id: String,
) -> Result<DrainReport> {
    let deadline = started + opts.budget;
    let now = inner.now();
    let report = DrainReport {
        run_id: run_id.clone(),
        trigger: opts.trigger.clone(),
        started_at: now,
        finished_at: now,
        requests: 0,
        sent: 0,
        done: 0,
        retried: 0,
        dead: 0,
        remaining: 0,
        dead_total: 0,
        stop_reason: StopReason::Empty,
        next_attempt_at: None,
        last_error: None,
        uploaded: 0,
        upload_retried: 0,
        upload_dead: 0,
        bytes_uploaded: 0,
        uploads_remaining: 0,
    };

    let Some(cfg) = inner.store.load_config().await? else {
        return inner.finish(report, StopReason::NotConfigured).await;
    };
    if opts.respect_toggle && !inner.store.enabled().await? {
        return inner.finish(report, StopReason::Disabled).await;
    }
    if opts.network_available == Some(false) {
        return inner.finish(report, StopReason::NoNetwork).await;
    }
    // Credentials that cannot be read (sealed, and this process has no key or another one)
    // stop the run before any request: sending without the app's token only earns 401s.
    // The epoch first: a `setAuth` after this read (even during the load below) makes the cell
    // reload before the next request, instead of sending stale (or no) credentials.
    let auth_epoch = inner.auth_epoch();
    let stored_auth = match inner.store.load_auth().await {
        Ok(a) => a,
        Err(e @ Error::Auth(_)) => {
            let mut report = report;
            report.last_error = Some(e.to_string());
            return inner.finish(report, StopReason::AuthFailed).await;
        }
        Err(e) => return Err(e),
    };
    let Ok(_local) = inner.drain_lock.clone().try_lock_owned() else {
        return inner.finish(report, StopReason::AlreadyRunning).await;
    };
    let Some(lease) = Lease::acquire(&inner.store, &run_id, &cfg).await? else {
        return inner.finish(report, StopReason::AlreadyRunning).await;
    };
    // From here on the lease is ours: a failure must give it back, or every drain of the next
    // minutes (another process's included) would stop with `AlreadyRunning`.
    let prepared = async {
        let rebased = inner.store.rebase_backoff(now).await?;
        if rebased > 0 {
            tracing::info!(rebased, "the wall clock went back: backoffs restart from now");
        }
        let recovered = inner.store.recover_in_flight().await?;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "re-queued mutations left in flight by an interrupted drain"
            );
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = prepared {
        let _ = inner.store.release_lease(&run_id).await;
        return Err(e);
    }
    inner.set_state(SyncState::Running).await;

    // The passes stop on the caller's cancellation or when the lease is lost.
    let pass_cancel = opts.cancel.child_token();
    let auth = AuthCell::new(stored_auth, auth_epoch, deadline, pass_cancel.clone());
    let transport = match Transport::new(&cfg) {
        Ok(t) => std::sync::Arc::new(t),
        Err(e) => {
            let mut report = report;
            report.last_error = Some(e.to_string());
            let _ = inner.store.release_lease(&run_id).await;
            return inner.finish(report, StopReason::Error).await;
        }
    };
    let pass_opts = DrainOptions {
        cancel: pass_cancel.clone(),
        ..opts.clone()
    };
    let signal = UploadSignal::default();
    signal.active.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut run = outbox::Pass::new(inner, &cfg, &run_id, report, &auth, &signal, &lease);
    let mut pass = uploads::Pass::new(inner, &cfg, &run_id, &auth, &signal, transport.clone(), &lease);
    let passes_done = CancellationToken::new();
    let passes = async {
        let r = tokio::join!(run.drive(&pass_opts, deadline, &transport), async {
            let r = pass.drive(&pass_opts, deadline).await;
            signal.active.store(false, std::sync::atomic::Ordering::SeqCst);
            signal.finished_one.notify_one();
            r
        });
        passes_done.cancel();
        r
    };
    let ((outcome, upload_outcome), ()) = tokio::join!(
        passes,
        lease.keep(&inner.store, &passes_done, || pass_cancel.cancel())
    );
    let mut report = run.report;
    let stop_of = |outcome: Result<StopReason>, report: &mut DrainReport| match outcome {
        Ok(reason) => reason,
        Err(e) => {
            tracing::error!(error = %e, "drain stopped by a storage error");
            report.last_error = Some(e.to_string());
            StopReason::Error
        }
    };
    let stop = stop_of(outcome, &mut report);
    let upload_stop = stop_of(upload_outcome, &mut report);
    pass.merge_into(&mut report);
    let combined = combine(stop, upload_stop);
    // The error that explains the reported stop reason, when the mutation pass gave it.
    if let Some(e) = run.stop_error.filter(|_| combined == stop) {
        report.last_error = Some(e);
    }
    let mut stop = combined;
    if lease.is_lost() {
        stop = StopReason::Error;
        report.last_error = Some("lost the drain lease (another drainer took over): stopped sending".into());
    }
    let _ = inner.store.prune(inner.now(), cfg.retention_ms).await;
    let _ = inner.store.release_lease(lease.owner()).await;
    inner.finish(report, stop).await
}

/// The run's stop reason from its two passes: the more serious one wins.
pub(crate) fn combine(a: StopReason, b: StopReason) -> StopReason {
    fn rank(r: StopReason) -> u8 {
        match r {
            StopReason::Error => 9,
            StopReason::AuthFailed => 8,
            StopReason::Cancelled => 7,
            StopReason::NoNetwork => 6,
            StopReason::Deadline => 5,
            StopReason::Waiting => 4,
            _ => 0,
        }
    }
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

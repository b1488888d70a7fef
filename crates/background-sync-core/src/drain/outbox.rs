//! The mutation pass: claim sendable rows, send them (bounded concurrency across entities, one
//! at a time per entity), settle each outcome with the next claim, until the outbox is empty, the
//! deadline is near, the lease is lost or the caller cancels.

use super::options::DrainOptions;
use super::outcomes::{kept_body, outcome_events};
use super::shared::{AfterUnauthorized, AuthCell, UploadSignal, MIN_WINDOW};
use crate::context::Inner;
use crate::error::{Error, Result};
use crate::idmap;
use crate::lease::Lease;
use crate::models::{AuthConfig, DrainReport, StatusEvent, StopReason, SyncConfig};
use crate::policy::{self, Observed, Verdict};
use crate::store::{Applied, Claimed, Outcome, Queue};
use crate::time;
use crate::transport::{Outgoing, Sent, Transport};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// Until a request has been timed in this run, assume one takes this long.
const INITIAL_ESTIMATE: Duration = Duration::from_millis(250);

/// What to do with one claimed row after its request: write its outcome, or stop the pass
/// (the row is released unchanged: not the mutation's fault, so it costs no attempt).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    Settle(Outcome),
    /// The API is unreachable: the drain stops.
    Offline(String),
    /// The API answered, but not so that any mutation could be sent (TLS handshake refused):
    /// the drain stops with an error.
    Fatal(String),
    Unauthorized,
}

/// Pure decision for one row, given what was observed: the shared retry rule, then what a
/// success means for a mutation (a create must name its server id).
pub(crate) fn decide(
    row: &Claimed,
    observed: &Observed,
    body: Option<&[u8]>,
    cfg: &SyncConfig,
    now: i64,
    rng: &mut impl rand::Rng,
) -> Effect {
    let seq = row.seq;
    let verdict = policy::verdict(
        observed,
        body,
        row.attempts,
        cfg.max_attempts,
        &cfg.backoff,
        now,
        rng,
    );
    Effect::Settle(match verdict {
        Verdict::Done { status } => {
            let server_id = body
                .filter(|_| row.temp_id.is_some())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .and_then(|v| idmap::extract_server_id(&v, &cfg.id_pointer));
            if row.temp_id.is_some() && server_id.is_none() {
                Outcome::Bury {
                    seq,
                    attempts: row.attempts + 1,
                    status: Some(status),
                    error: format!(
                        "HTTP {status} but the response has no server id at '{}' (set idPointer): {}",
                        cfg.id_pointer,
                        body.map(policy::excerpt).unwrap_or_default()
                    ),
                    now,
                }
            } else {
                Outcome::Complete {
                    seq,
                    status,
                    server_id,
                    now,
                    had_deps: row.has_deps,
                    body: kept_body(body, cfg.outcome_body_max_bytes),
                }
            }
        }
        Verdict::Retry {
            attempts,
            next_at,
            status,
            error,
        } => Outcome::Reschedule {
            seq,
            attempts,
            next_at,
            status,
            error,
        },
        Verdict::Bury {
            attempts,
            status,
            error,
        } => Outcome::Bury {
            seq,
            attempts,
            status,
            error,
            now,
        },
        Verdict::Unauthorized => return Effect::Unauthorized,
        Verdict::Offline(e) => return Effect::Offline(e),
        Verdict::Fatal(e) => return Effect::Fatal(e),
    })
}

type Flight = Pin<Box<dyn Future<Output = FlightResult> + Send>>;
/// One (observed, body) per row of a request.
type RowOutcomes = Vec<(Observed, Option<Vec<u8>>)>;

struct FlightResult {
    rows: Vec<Claimed>,
    /// One (observed, body) per row, or one for the whole batch.
    outcome: std::result::Result<RowOutcomes, Error>,
    /// The request was cut by the deadline clamp rather than the configured timeout.
    clamped: bool,
    elapsed: Duration,
    auth_generation: u64,
}

pub(super) struct Pass<'a> {
    inner: &'a Inner,
    cfg: SyncConfig,
    owner: String,
    pub(super) report: DrainReport,
    auth: &'a AuthCell,
    uploads: &'a UploadSignal,
    lease: &'a Lease,
    /// The error that explains why the pass stopped (no network, auth, lease): later outcomes
    /// must not replace it in the report.
    pub(super) stop_error: Option<String>,
    /// Outcomes decided but not yet written: they go out with the next claim, in the same
    /// transaction (or on their own when nothing is claimed next).
    deferred: Vec<(Outcome, Tally)>,
}

/// Which report counter an outcome moves, once it is known to have been applied.
#[derive(Clone, Copy)]
enum Tally {
    Done,
    Retried,
    Dead,
    None,
}

impl Tally {
    fn of(o: &Outcome) -> Tally {
        match o {
            Outcome::Complete { .. } => Tally::Done,
            Outcome::Reschedule { .. } => Tally::Retried,
            Outcome::Bury { .. } => Tally::Dead,
            Outcome::Release { .. } => Tally::None,
        }
    }
}

impl<'a> Pass<'a> {
    pub(super) fn new(
        inner: &'a Inner,
        cfg: &SyncConfig,
        owner: &str,
        report: DrainReport,
        auth: &'a AuthCell,
        uploads: &'a UploadSignal,
        lease: &'a Lease,
    ) -> Self {
        Pass {
            inner,
            cfg: cfg.clone(),
            owner: owner.to_string(),
            report,
            auth,
            uploads,
            lease,
            stop_error: None,
            deferred: Vec::new(),
        }
    }

    pub(super) async fn drive(
        &mut self,
        opts: &DrainOptions,
        deadline: Instant,
        transport: &std::sync::Arc<Transport>,
    ) -> Result<StopReason> {
        let transport = transport.clone();
        let timeout = Duration::from_millis(self.cfg.request_timeout_ms);
        let slots = self.cfg.concurrency.max(1) as usize;
        let per_request = self.cfg.batch.as_ref().map_or(1, |b| b.max_items.max(1));
        let max_wait = policy::max_plausible_wait_ms(&self.cfg.backoff);
        let mut flights: FuturesUnordered<Flight> = FuturesUnordered::new();
        // Claimed, not yet sent: one entry per request.
        let mut ready: std::collections::VecDeque<Vec<Claimed>> = Default::default();
        let mut estimate = INITIAL_ESTIMATE;
        let mut stop: Option<StopReason> = None;
        // One request until the first answer: a client with no connection yet opens one per
        // concurrent request, so an HTTP/2 server got a TLS handshake per lane instead of
        // streams over one connection (64 handshakes for 64 lanes at 100 ms RTT; see
        // docs/benchmarks.md). Costs one round trip at the start of a drain.
        let mut answered = slots == 1;

        loop {
            let lanes = if answered { slots } else { 1 };
            if opts.cancel.is_cancelled() {
                return self.abandon(flights).await;
            }
            // Fill free slots, unless stopping or too close to the deadline. Every send is the
            // best row sendable at that moment: rows are claimed when a lane is free, never
            // ahead (a row claimed ahead would go before a higher-priority row that became
            // sendable meanwhile).
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut claimed_any = false;
            if stop.is_none() && remaining >= estimate.max(MIN_WINDOW) {
                while flights.len() < lanes {
                    let rows = match ready.pop_front() {
                        Some(rows) => rows,
                        None => {
                            // Without a batch endpoint, one claim fills every free slot (each
                            // row is the head of a different entity, so they may go in parallel).
                            let limit = match self.cfg.batch {
                                Some(_) => per_request,
                                None => (lanes - flights.len()) as u32,
                            };
                            let rows = self.settle_and_claim(limit, max_wait).await?;
                            if rows.is_empty() {
                                break;
                            }
                            claimed_any = true;
                            self.group(rows, &mut ready);
                            continue;
                        }
                    };
                    // First: it may wait for (or do) a token refresh, which takes time.
                    let auth = self.auth.current(self.inner, &transport, timeout).await?;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let t = timeout.min(remaining);
                    if remaining < MIN_WINDOW {
                        ready.push_front(rows);
                        break;
                    }
                    if !self.lease.allows(t) {
                        // The lease could not be renewed in time: a request now could outlive
                        // it and overlap with the next drainer's.
                        ready.push_front(rows);
                        self.stop_error
                            .get_or_insert_with(|| "the drain lease could not be renewed in time".into());
                        stop = Some(StopReason::Error);
                        break;
                    }
                    flights.push(self.launch(transport.clone(), rows, t, t < timeout, auth));
                }
                // Claimed for a lane that is no longer free (or no longer usable): back, untouched.
                for row in ready.drain(..).flatten() {
                    self.deferred
                        .push((Outcome::Release { seq: row.seq }, Tally::None));
                }
            } else if stop.is_none() && flights.is_empty() {
                // Too close to the deadline to start anything.
                stop = Some(StopReason::Deadline);
            }

            if flights.is_empty() {
                // Rows claimed ahead that will not be sent now go back untouched; outcomes not
                // yet written decide what is pending or due below.
                for row in ready.drain(..).flatten() {
                    self.deferred
                        .push((Outcome::Release { seq: row.seq }, Tally::None));
                }
                self.flush().await?;
                if let Some(s) = stop {
                    return Ok(s);
                }
                if claimed_any {
                    continue;
                }
                // Nothing sendable now. Wait in this run if something becomes due in time, or
                // while uploads that blocked rows reference are still going.
                let now = self.inner.now();
                let remaining = deadline.saturating_duration_since(Instant::now());
                let uploading = self.uploads.active.load(std::sync::atomic::Ordering::SeqCst)
                    && self.inner.store.counts().await?.blocked > 0;
                let due = self.inner.store.next_due().await?;
                let due_wait = due
                    .map(|d| time::until(now, d))
                    .filter(|w| *w + estimate < remaining);
                if uploading {
                    let wait = due_wait.unwrap_or(remaining);
                    tokio::select! {
                        _ = opts.cancel.cancelled() => return Ok(StopReason::Cancelled),
                        _ = self.uploads.finished_one.notified() => continue,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
                match due {
                    Some(_) if due_wait.is_some() => {
                        tokio::select! {
                            _ = opts.cancel.cancelled() => return Ok(StopReason::Cancelled),
                            _ = tokio::time::sleep(due_wait.unwrap_or_default()) => continue,
                        }
                    }
                    Some(_) => return Ok(StopReason::Waiting),
                    None => {
                        let counts = self.inner.store.counts().await?;
                        return Ok(if counts.pending == 0 {
                            StopReason::Empty
                        } else {
                            StopReason::Waiting
                        });
                    }
                }
            }

            // Wait for the next request to finish, or cancellation.
            let next = tokio::select! {
                r = flights.next() => Some(r),
                _ = opts.cancel.cancelled() => None,
            };
            let Some(next) = next else {
                return self.abandon(flights).await;
            };
            if let Some(r) = next {
                answered = true;
                // Settle every request that has finished by now in one transaction.
                let mut done = vec![r];
                while let Some(Some(r)) = futures_util::FutureExt::now_or_never(flights.next()) {
                    done.push(r);
                }
                for r in &done {
                    estimate = policy::next_request_estimate(estimate, r.elapsed, MIN_WINDOW);
                }
                if let Some(s) = self.settle(done, &transport).await? {
                    stop.get_or_insert(s);
                }
            }
        }
    }

    /// Cancellation: drop the requests in flight (the connections close) and put their rows
    /// back to pending. The server may have applied some; the idempotency key makes the resend
    /// harmless.
    async fn abandon(&mut self, flights: FuturesUnordered<Flight>) -> Result<StopReason> {
        drop(flights);
        self.flush().await?;
        self.inner.store.recover_owned(Queue::Outbox, &self.owner).await?;
        Ok(StopReason::Cancelled)
    }

    fn launch(
        &mut self,
        transport: std::sync::Arc<Transport>,
        rows: Vec<Claimed>,
        timeout: Duration,
        clamped: bool,
        (auth, generation): (AuthConfig, u64),
    ) -> Flight {
        self.report.requests += 1;
        self.report.sent += rows.len() as u32;
        let batch = self.cfg.batch.is_some();
        Box::pin(async move {
            let start = Instant::now();
            let outcome = send_rows(&transport, &rows, timeout, &auth, batch).await;
            FlightResult {
                rows,
                outcome,
                clamped,
                elapsed: start.elapsed(),
                auth_generation: generation,
            }
        })
    }

    /// Apply finished requests' outcomes (one transaction). Returns a reason to stop, if any.
    async fn settle(
        &mut self,
        results: Vec<FlightResult>,
        transport: &Transport,
    ) -> Result<Option<StopReason>> {
        let mut ops = Vec::new();
        let mut tallies = Vec::new();
        let mut stop = None;
        // The oldest token generation a 401 was seen with (one refresh covers them all).
        let mut unauthorized: Option<u64> = None;
        for r in results {
            let outcomes = match r.outcome {
                Ok(o) => o,
                Err(e) => {
                    // The request could not even be built (origin no longer allowed, bad stored
                    // data): permanent for these rows.
                    let msg = e.to_string();
                    for row in &r.rows {
                        ops.push(Outcome::Bury {
                            seq: row.seq,
                            attempts: row.attempts + 1,
                            status: None,
                            error: msg.clone(),
                            now: self.inner.now(),
                        });
                        tallies.push(Tally::Dead);
                    }
                    continue;
                }
            };
            for (row, (observed, body)) in r.rows.iter().zip(outcomes) {
                let timed_out = matches!(&observed, Observed::TransportError(e) if e.contains("timed out"));
                let effect = if r.clamped && timed_out {
                    Effect::Settle(Outcome::Release { seq: row.seq })
                } else {
                    let now = self.inner.now();
                    let mut rng = self.inner.rng.lock().await;
                    decide(row, &observed, body.as_deref(), &self.cfg, now, &mut *rng)
                };
                let op = match effect {
                    Effect::Settle(o) => {
                        match &o {
                            Outcome::Reschedule { attempts, error, .. } => {
                                tracing::debug!(id = %row.id, attempts, %error, "transient failure, rescheduled");
                                self.report.last_error = Some(error.clone());
                            }
                            Outcome::Bury { status, error, .. } => {
                                tracing::warn!(id = %row.id, ?status, %error, "mutation moved to the dead letter");
                                self.report.last_error = Some(error.clone());
                            }
                            Outcome::Complete { .. } | Outcome::Release { .. } => {}
                        }
                        o
                    }
                    Effect::Offline(error) => {
                        let e = format!("cannot reach the API: {error}");
                        self.report.last_error = Some(e.clone());
                        self.stop_error.get_or_insert(e);
                        stop.get_or_insert(StopReason::NoNetwork);
                        Outcome::Release { seq: row.seq }
                    }
                    Effect::Fatal(error) => {
                        // Not the mutation's fault and not offline either (a TLS handshake
                        // failure): stop, surface it, cost no attempt.
                        self.report.last_error = Some(error.clone());
                        self.stop_error.get_or_insert(error);
                        stop = Some(StopReason::Error);
                        Outcome::Release { seq: row.seq }
                    }
                    Effect::Unauthorized => {
                        unauthorized =
                            Some(unauthorized.map_or(r.auth_generation, |g| g.min(r.auth_generation)));
                        Outcome::Release { seq: row.seq }
                    }
                };
                let tally = Tally::of(&op);
                ops.push(op);
                tallies.push(tally);
            }
        }
        self.deferred.extend(ops.into_iter().zip(tallies));
        if let Some(generation) = unauthorized {
            let timeout = Duration::from_millis(self.cfg.request_timeout_ms);
            if let AfterUnauthorized::Stop(e) = self
                .auth
                .unauthorized(generation, self.inner, transport, timeout)
                .await?
            {
                self.report.last_error = Some(e.clone());
                self.stop_error.get_or_insert(e);
                stop = Some(StopReason::AuthFailed);
            }
        }
        Ok(stop)
    }

    /// Split claimed rows into requests: one batch, or one request per row.
    fn group(&self, rows: Vec<Claimed>, ready: &mut std::collections::VecDeque<Vec<Claimed>>) {
        if rows.is_empty() {
            return;
        }
        if self.cfg.batch.is_some() {
            ready.push_back(rows);
        } else {
            ready.extend(rows.into_iter().map(|r| vec![r]));
        }
    }

    /// Write the deferred outcomes and claim up to `limit` rows, in one transaction.
    async fn settle_and_claim(&mut self, limit: u32, max_wait: i64) -> Result<Vec<Claimed>> {
        let deferred = std::mem::take(&mut self.deferred);
        let (ops, tallies): (Vec<Outcome>, Vec<Tally>) = deferred.into_iter().unzip();
        let (applied, rows) = self
            .inner
            .store
            .settle_and_claim(
                &self.owner,
                &ops,
                self.inner.has_listeners(),
                self.inner.now(),
                limit,
                max_wait,
            )
            .await?;
        self.count(&tallies, &applied).await;
        Ok(rows)
    }

    /// Write the deferred outcomes on their own.
    async fn flush(&mut self) -> Result<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let deferred = std::mem::take(&mut self.deferred);
        let (ops, tallies): (Vec<Outcome>, Vec<Tally>) = deferred.into_iter().unzip();
        let applied = self
            .inner
            .store
            .settle(&self.owner, &ops, self.inner.has_listeners())
            .await?;
        self.count(&tallies, &applied).await;
        Ok(())
    }

    async fn count(&mut self, tallies: &[Tally], applied: &[Applied]) {
        if tallies.is_empty() {
            return;
        }
        for (tally, ours) in tallies.iter().zip(applied) {
            match (tally, ours.written()) {
                (Tally::Done, true) => self.report.done += 1,
                (Tally::Retried, true) => self.report.retried += 1,
                (Tally::Dead, true) => self.report.dead += 1,
                _ => {}
            }
        }
        self.outcomes(applied);
        self.progress().await;
    }

    /// The app's view of a durable round (see `outcome_events`).
    fn outcomes(&self, applied: &[Applied]) {
        if !self.inner.has_listeners() {
            return;
        }
        for e in outcome_events(applied, &self.owner) {
            self.inner.emit(e);
        }
    }

    async fn progress(&self) {
        if !self.inner.has_listeners() {
            return;
        }
        // Cheap: a counter row and an index range count, not a table scan per mutation.
        let remaining = self.inner.store.open_not_dead().await.unwrap_or(0);
        self.inner.emit(StatusEvent::Progress {
            run_id: self.owner.clone(),
            done: self.report.done,
            dead: self.report.dead,
            remaining,
        });
    }
}

async fn send_rows(
    transport: &Transport,
    rows: &[Claimed],
    timeout: Duration,
    auth: &AuthConfig,
    batch: bool,
) -> std::result::Result<RowOutcomes, Error> {
    let outgoing: Vec<Outgoing> = rows.iter().map(Outgoing::from_claimed).collect::<Result<_>>()?;
    if !batch {
        let mut out = Vec::with_capacity(rows.len());
        for (row, o) in rows.iter().zip(&outgoing) {
            let Sent { observed, body } = transport.send(row, o, timeout, auth).await?;
            out.push((observed, body));
        }
        return Ok(out);
    }
    let items: Vec<(&Claimed, Outgoing)> = rows.iter().zip(outgoing).collect();
    let Sent { observed, body } = transport.send_batch(&items, timeout, auth).await?;
    let keys: Vec<&str> = rows.iter().map(|r| r.idempotency_key.as_str()).collect();
    Ok(policy::split_batch(&keys, observed, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{BackoffConfig, Priority};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashMap;

    fn row(temp: Option<&str>, attempts: u32) -> Claimed {
        Claimed {
            seq: 1,
            id: "m1".into(),
            idempotency_key: "k1".into(),
            priority: Priority::Normal,
            method: "POST".into(),
            path: "/visits".into(),
            headers: Default::default(),
            body: None,
            temp_id: temp.map(str::to_string),
            attempts,
            mapping: HashMap::new(),
            has_deps: false,
        }
    }

    fn cfg() -> SyncConfig {
        SyncConfig {
            base_url: "https://api.example.com".into(),
            max_attempts: 3,
            backoff: BackoffConfig {
                initial_ms: 1_000,
                max_ms: 8_000,
                multiplier: 2.0,
            },
            ..Default::default()
        }
    }

    fn resp(status: u16) -> Observed {
        Observed::Response {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn create_records_server_id_or_buries() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let e = decide(
            &row(Some("tmp-1"), 0),
            &resp(201),
            Some(br#"{"id":"srv_7"}"#),
            &cfg(),
            0,
            &mut rng,
        );
        assert!(
            matches!(e, Effect::Settle(Outcome::Complete { status: 201, ref server_id, .. })
                if server_id.as_deref() == Some("srv_7")),
            "{e:?}"
        );
        let e = decide(
            &row(Some("tmp-1"), 0),
            &resp(201),
            Some(b"{}"),
            &cfg(),
            0,
            &mut rng,
        );
        assert!(
            matches!(e, Effect::Settle(Outcome::Bury { ref error, .. }) if error.contains("no server id at '/id'")),
            "{e:?}"
        );
    }

    #[test]
    fn transient_reschedules_then_buries_at_limit() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = 10_000;
        match decide(&row(None, 0), &resp(503), None, &cfg(), now, &mut rng) {
            Effect::Settle(Outcome::Reschedule {
                attempts,
                next_at,
                status,
                ..
            }) => {
                assert_eq!(attempts, 1);
                assert_eq!(status, Some(503));
                assert!((now..=now + 1_000).contains(&next_at));
            }
            e => panic!("{e:?}"),
        }
        let e = decide(
            &row(None, 2),
            &Observed::TransportError("reset".into()),
            None,
            &cfg(),
            now,
            &mut rng,
        );
        assert!(
            matches!(e, Effect::Settle(Outcome::Bury { attempts: 3, status: None, ref error, .. }) if error.contains("gave up after 3")),
            "{e:?}"
        );
    }

    #[test]
    fn unreachable_costs_no_attempt() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let o = Observed::Unreachable("tcp connect error: Connection refused".into());
        assert!(matches!(
            decide(&row(None, 9), &o, None, &cfg(), 0, &mut rng),
            Effect::Offline(_)
        ));
    }

    #[test]
    fn retry_after_sets_the_floor() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let o = Observed::Response {
            status: 429,
            retry_after: Some("30".into()),
        };
        match decide(&row(None, 0), &o, None, &cfg(), 0, &mut rng) {
            Effect::Settle(Outcome::Reschedule { next_at, .. }) => assert_eq!(next_at, 30_000),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn permanent_keeps_status_and_excerpt() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let body = format!(r#"{{"error":"validation failed","pad":"{}"}}"#, "x".repeat(2_000));
        match decide(
            &row(None, 0),
            &resp(422),
            Some(body.as_bytes()),
            &cfg(),
            0,
            &mut rng,
        ) {
            Effect::Settle(Outcome::Bury {
                status,
                error,
                attempts,
                ..
            }) => {
                assert_eq!(status, Some(422));
                assert_eq!(attempts, 1);
                assert!(error.starts_with("HTTP 422: {\"error\":\"validation failed\""));
                assert!(error.len() < 600, "excerpt is bounded");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            decide(&row(None, 0), &resp(401), None, &cfg(), 0, &mut rng),
            Effect::Unauthorized
        );
    }
}

//! The upload pass of a drain: claims due files (priority, then enqueue order), gets signed
//! URLs for many files in one request, streams each file from disk with bounded concurrency,
//! and settles each outcome. Runs beside the mutation pass under the same lease, budget and
//! cancellation; a finished upload resolves its placeholder so waiting mutations can go.

use super::options::DrainOptions;
use super::outcomes::outcome_events;
use super::shared::{AfterUnauthorized, AuthCell, UploadSignal};
use crate::context::Inner;
use crate::error::{Error, Result};
use crate::files;
use crate::idmap;
use crate::lease::Lease;
use crate::models::{DrainReport, StatusEvent, StopReason, SyncConfig, UploadDestination};
use crate::policy::{self, Observed, Verdict};
use crate::store::{Applied, ClaimedUpload, Queue, Target, UploadOutcome, UploadSettled};
use crate::time;
use crate::transport::{ByteCounter, Sent, Transport};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Never start an upload with less than this left (more than `shared::MIN_WINDOW`, a request's).
const MIN_UPLOAD_WINDOW: Duration = Duration::from_millis(50);
/// A signed URL must stay valid this long past the expected end of the upload.
const EXPIRY_MARGIN_MS: i64 = 5_000;
/// Progress events at most this often per file.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Files smaller than this say little about throughput (latency dominates).
const MEASURE_MIN_BYTES: u64 = 256 * 1024;
/// A copy with no upload row is an enqueue that never committed (or one still copying):
/// deleted once this old.
const ORPHAN_COPY_AGE: Duration = Duration::from_secs(3_600);

/// What to do with one upload after its request: write its outcome, or stop the pass (the
/// upload is released unchanged, costing no attempt).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UploadEffect {
    Settle(UploadOutcome),
    Offline(String),
    /// TLS refused: the pass stops with an error.
    Fatal(String),
    Unauthorized,
}

/// Pure decision for one upload, given what was observed: a refused signature first (signed
/// uploads), then the shared retry rule, then what a success means for an upload (its result).
pub(crate) fn decide(
    u: &ClaimedUpload,
    observed: &Observed,
    body: Option<&[u8]>,
    cfg: &SyncConfig,
    now: i64,
    rng: &mut impl rand::Rng,
) -> UploadEffect {
    let status = match observed {
        Observed::Response { status, .. } => Some(*status),
        _ => None,
    };
    let signed = matches!(u.destination, UploadDestination::Signed);
    let attempts = u.attempts + 1;
    let seq = u.seq;
    // Storage hosts answer an expired or otherwise refused signature with 401/403 (S3, GCS,
    // Cloudinary): not the file's fault, and a new URL usually fixes it.
    if signed && matches!(status, Some(401 | 403)) {
        let described = policy::describe(observed, body);
        return UploadEffect::Settle(if attempts >= cfg.max_attempts {
            UploadOutcome::Bury {
                seq,
                attempts,
                status,
                error: format!("the storage host kept refusing fresh signed URLs; last: {described}"),
                now,
            }
        } else {
            UploadOutcome::Reschedule {
                seq,
                attempts,
                next_at: now,
                status,
                error: format!("signed URL refused (expired?), signing again: {described}"),
                resign: true,
            }
        });
    }
    let verdict = policy::verdict(
        observed,
        body,
        u.attempts,
        cfg.max_attempts,
        &cfg.backoff,
        now,
        rng,
    );
    UploadEffect::Settle(match verdict {
        Verdict::Done { status } => {
            let from_body = body
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .and_then(|v| idmap::extract_server_id(&v, &cfg.uploads.result_pointer));
            let from_sign = u.target.as_ref().and_then(|t| t.result_url.clone());
            let from_url = u.target.as_ref().map(|t| strip_query(&t.url));
            match from_body.or(from_sign).or(from_url) {
                Some(result) => UploadOutcome::Complete {
                    seq,
                    status,
                    result,
                    now,
                },
                None => UploadOutcome::Bury {
                    seq,
                    attempts,
                    status: Some(status),
                    error: format!(
                        "uploaded, but the response has no result at '{}' (set uploads.resultPointer): {}",
                        cfg.uploads.result_pointer,
                        body.map(policy::excerpt).unwrap_or_default()
                    ),
                    now,
                },
            }
        }
        Verdict::Retry {
            attempts,
            next_at,
            status,
            error,
        } => UploadOutcome::Reschedule {
            seq,
            attempts,
            next_at,
            status,
            error,
            resign: false,
        },
        Verdict::Bury {
            attempts,
            status,
            error,
        } => UploadOutcome::Bury {
            seq,
            attempts,
            status,
            error,
            now,
        },
        Verdict::Unauthorized => return UploadEffect::Unauthorized,
        Verdict::Offline(e) => return UploadEffect::Offline(e),
        Verdict::Fatal(e) => return UploadEffect::Fatal(e),
    })
}

fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

/// The sign endpoint's answer for one file.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedItem {
    id: String,
    #[serde(flatten)]
    target: Target,
    /// Seconds, as an alternative to `expiresAt`.
    expires_in: Option<i64>,
}

type UploadFlight = Pin<Box<dyn Future<Output = FlightResult> + Send>>;

struct FlightResult {
    upload: ClaimedUpload,
    outcome: std::result::Result<Sent, Error>,
    stalled: bool,
    clamped: bool,
    elapsed: Duration,
    auth_generation: u64,
}

struct Active {
    placeholder: String,
    sent: ByteCounter,
    total: u64,
    last: u64,
}

pub(crate) struct Pass<'a> {
    inner: &'a Inner,
    cfg: SyncConfig,
    owner: String,
    auth: &'a AuthCell,
    signal: &'a UploadSignal,
    transport: Arc<Transport>,
    lease: &'a Lease,
    /// Bytes per millisecond, smoothed, persisted across runs.
    throughput: Option<f64>,
    active: HashMap<String, Active>,
    uploaded: u32,
    retried: u32,
    dead: u32,
    bytes: u64,
    requests: u32,
    last_error: Option<String>,
}

impl<'a> Pass<'a> {
    pub(crate) fn new(
        inner: &'a Inner,
        cfg: &SyncConfig,
        owner: &str,
        auth: &'a AuthCell,
        signal: &'a UploadSignal,
        transport: Arc<Transport>,
        lease: &'a Lease,
    ) -> Self {
        Self {
            inner,
            cfg: cfg.clone(),
            owner: owner.to_string(),
            auth,
            signal,
            transport,
            lease,
            throughput: None,
            active: HashMap::new(),
            uploaded: 0,
            retried: 0,
            dead: 0,
            bytes: 0,
            requests: 0,
            last_error: None,
        }
    }

    pub(crate) fn merge_into(&self, report: &mut DrainReport) {
        report.requests += self.requests;
        report.uploaded += self.uploaded;
        report.upload_retried += self.retried;
        report.upload_dead += self.dead;
        report.bytes_uploaded += self.bytes;
        if report.last_error.is_none() {
            report.last_error = self.last_error.clone();
        }
    }

    pub(crate) async fn drive(&mut self, opts: &DrainOptions, deadline: Instant) -> Result<StopReason> {
        self.throughput = self.inner.store.upload_throughput().await?;
        match self.inner.store.owned_copies().await {
            Ok(owned) => {
                // Housekeeping on a blocking thread, waited for at most a second (and never past
                // the deadline): a slow or hung file system must not hold the drain's budget.
                let dir = self.inner.store.uploads_dir();
                let sweep =
                    tokio::task::spawn_blocking(move || files::sweep_copies(&dir, &owned, ORPHAN_COPY_AGE));
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1));
                match tokio::time::timeout(wait, sweep).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        tracing::info!(removed = n, "deleted copies of finished or never-queued uploads")
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "the upload copy sweep failed"),
                    Err(_) => tracing::warn!("the upload copy sweep is slow; it goes on without the drain"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not sweep upload copies"),
        }
        let result = self.run(opts, deadline).await;
        // Claimed but not sent (deadline, stop): back to pending, untouched.
        self.inner
            .store
            .recover_owned(Queue::Uploads, &self.owner)
            .await?;
        if let Some(t) = self.throughput {
            let _ = self.inner.store.set_upload_throughput(t).await;
        }
        result
    }

    async fn run(&mut self, opts: &DrainOptions, deadline: Instant) -> Result<StopReason> {
        let slots = self.cfg.uploads.concurrency.max(1) as usize;
        // Claim (and sign) in batches, send from a local queue as slots free up: one sign
        // request covers many files.
        let batch = slots.max(self.cfg.uploads.sign_batch_size as usize);
        let max_wait = policy::max_plausible_wait_ms(&self.cfg.backoff);
        let mut flights: FuturesUnordered<UploadFlight> = FuturesUnordered::new();
        let mut ready: VecDeque<ClaimedUpload> = VecDeque::new();
        let mut stop: Option<StopReason> = None;
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if opts.cancel.is_cancelled() {
                return self.abandon(flights).await;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut claimed_any = false;
            if stop.is_none() && remaining > MIN_UPLOAD_WINDOW {
                if ready.is_empty() && flights.len() < slots {
                    let now = self.inner.now();
                    let claimed = self
                        .inner
                        .store
                        .claim_uploads(&self.owner, now, batch as u32, self.fits_in(remaining), max_wait)
                        .await?;
                    claimed_any = !claimed.is_empty();
                    match self.ensure_signed(claimed, remaining, &opts.cancel).await? {
                        Ok(signed) => ready.extend(signed),
                        Err(reason) => stop = Some(reason),
                    }
                }
                while flights.len() < slots && stop.is_none() {
                    let Some(u) = ready.pop_front() else { break };
                    // First: it may wait for (or do) a token refresh, which takes time.
                    let auth = self
                        .auth
                        .current(
                            self.inner,
                            &self.transport,
                            Duration::from_millis(self.cfg.request_timeout_ms),
                        )
                        .await?;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let needed = self.expected_ms(u.size, remaining);
                    let expires_too_soon = !u.signed_now
                        && u.target
                            .as_ref()
                            .and_then(|t| t.expires_at)
                            .is_some_and(|e| e <= self.inner.now() + needed + EXPIRY_MARGIN_MS);
                    if u.size > self.fits_in(remaining) || remaining <= MIN_UPLOAD_WINDOW || expires_too_soon
                    {
                        // Not this run (or sign again next time): untouched, no attempt counted.
                        self.inner.store.release_upload(u.seq, &self.owner).await?;
                        continue;
                    }
                    // The upload may stream until the deadline: the lease must last that long.
                    if !self.lease.cover(&self.inner.store, remaining).await? {
                        self.inner.store.release_upload(u.seq, &self.owner).await?;
                        self.last_error = Some("the drain lease could not be renewed in time".into());
                        stop = Some(StopReason::Error);
                        break;
                    }
                    flights.push(self.launch(u, remaining, auth));
                }
            }
            // Claimed but not startable now (deadline passed, stopping): back to pending at
            // once, or the loop below would wait for them forever.
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !ready.is_empty() && (stop.is_some() || remaining <= MIN_UPLOAD_WINDOW) {
                for u in ready.drain(..) {
                    self.inner.store.release_upload(u.seq, &self.owner).await?;
                }
            }

            if flights.is_empty() {
                if let Some(s) = stop {
                    return Ok(s);
                }
                if claimed_any || !ready.is_empty() {
                    continue;
                }
                let now = self.inner.now();
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining <= MIN_UPLOAD_WINDOW {
                    return self.left_or(StopReason::Deadline).await;
                }
                match self.inner.store.next_upload_due(now).await? {
                    Some(due) if time::until(now, due) + MIN_UPLOAD_WINDOW < remaining => {
                        let wait = time::until(now, due);
                        tokio::select! {
                            _ = opts.cancel.cancelled() => return Ok(StopReason::Cancelled),
                            _ = tokio::time::sleep(wait) => continue,
                        }
                    }
                    Some(_) => return Ok(StopReason::Waiting),
                    // Due now but nothing claimed: every due file is too big for what is left.
                    None if self.inner.store.uploads_due_by(now, 0).await? => {
                        if let Some(bpms) = self.throughput.filter(|_| self.started_nothing()) {
                            let whole = opts.budget;
                            self.last_error = Some(format!(
                                "a queued file needs a longer window than this run's {:.0} s at the measured \
                                 {:.0} KB/s: it waits for a longer run (a processing task, the app in the \
                                 foreground) instead of restarting",
                                whole.as_secs_f64(),
                                bpms
                            ));
                        }
                        return Ok(StopReason::Deadline);
                    }
                    None => return self.left_or(StopReason::Empty).await,
                }
            }

            tokio::select! {
                r = flights.next() => {
                    if let Some(r) = r {
                        if let Some(s) = self.settle(r).await? {
                            stop.get_or_insert(s);
                        }
                    }
                }
                _ = ticker.tick() => self.emit_progress(),
                _ = opts.cancel.cancelled() => return self.abandon(flights).await,
            }
        }
    }

    fn started_nothing(&self) -> bool {
        self.requests == 0 && self.uploaded == 0
    }

    /// Empty, unless uploads are left (dead ones do not count).
    async fn left_or(&self, reason: StopReason) -> Result<StopReason> {
        let (open, _) = self.inner.store.upload_counts().await?;
        Ok(if open == 0 { StopReason::Empty } else { reason })
    }

    /// How long an upload of `size` bytes should take (at most what is left of the budget): a
    /// signed URL must stay valid that long. (Not the whole budget: a storage host whose URLs
    /// live shorter than the budget would otherwise be re-signed forever.)
    fn expected_ms(&self, size: u64, remaining: Duration) -> i64 {
        policy::expected_upload_ms(self.throughput, size, self.cfg.request_timeout_ms, remaining)
    }

    fn fits_in(&self, remaining: Duration) -> u64 {
        policy::fits_in(self.throughput, remaining)
    }

    /// Get URLs for the claimed signed uploads that have none (or whose URL will expire before
    /// the upload could finish), batched. Returns the uploads ready to send, or a reason to stop.
    async fn ensure_signed(
        &mut self,
        claimed: Vec<ClaimedUpload>,
        remaining: Duration,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<std::result::Result<Vec<ClaimedUpload>, StopReason>> {
        let entered = Instant::now();
        let now = self.inner.now();
        let (mut ready, mut unsigned): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|u| {
            let horizon = now + self.expected_ms(u.size, remaining) + EXPIRY_MARGIN_MS;
            !matches!(u.destination, UploadDestination::Signed)
                || u.target
                    .as_ref()
                    .is_some_and(|t| t.expires_at.is_none_or(|e| e > horizon))
        });
        if unsigned.is_empty() {
            return Ok(Ok(ready));
        }
        let batch = self.cfg.uploads.sign_batch_size.max(1) as usize;
        let configured_timeout = Duration::from_millis(self.cfg.request_timeout_ms);
        let timeout = configured_timeout.min(remaining);
        let mut stop = None;
        while !unsigned.is_empty() {
            let chunk: Vec<ClaimedUpload> = unsigned.drain(..unsigned.len().min(batch)).collect();
            if stop.is_some() {
                for u in &chunk {
                    self.inner.store.release_upload(u.seq, &self.owner).await?;
                }
                continue;
            }
            let (auth, generation) = self.auth.current(self.inner, &self.transport, timeout).await?;
            // Waiting for a token refresh used some of the time this request had.
            let timeout = timeout.min(remaining.saturating_sub(entered.elapsed()));
            if timeout < MIN_UPLOAD_WINDOW {
                for u in &chunk {
                    self.inner.store.release_upload(u.seq, &self.owner).await?;
                }
                stop = Some(StopReason::Deadline);
                continue;
            }
            if !self.lease.allows(timeout) {
                for u in &chunk {
                    self.inner.store.release_upload(u.seq, &self.owner).await?;
                }
                self.last_error = Some("the drain lease could not be renewed in time".into());
                stop = Some(StopReason::Error);
                continue;
            }
            self.requests += 1;
            let refs: Vec<&ClaimedUpload> = chunk.iter().collect();
            let started = Instant::now();
            let signed = tokio::select! {
                r = self.transport.sign_uploads(&refs, timeout, &auth) => Some(r),
                _ = cancel.cancelled() => None,
            };
            let Some(signed) = signed else {
                // Cancelled: nothing was decided about these files.
                for u in &chunk {
                    self.inner.store.release_upload(u.seq, &self.owner).await?;
                }
                stop = Some(StopReason::Cancelled);
                continue;
            };
            let cut_by_deadline = timeout < configured_timeout
                && started.elapsed() + Duration::from_millis(5) >= timeout
                && matches!(&signed, Ok(s) if matches!(&s.observed, Observed::TransportError(e) if e.contains("timed out")));
            if cut_by_deadline {
                // The run ended, not the sign endpoint's fault: no attempt counted.
                for u in &chunk {
                    self.inner.store.release_upload(u.seq, &self.owner).await?;
                }
                stop = Some(StopReason::Deadline);
                continue;
            }
            let sent = match signed {
                Ok(s) => s,
                Err(e) => {
                    // The sign path itself is not allowed: a configuration error.
                    self.last_error = Some(e.to_string());
                    for u in &chunk {
                        self.inner.store.release_upload(u.seq, &self.owner).await?;
                    }
                    stop = Some(StopReason::Error);
                    continue;
                }
            };
            let items = match (&sent.observed, &sent.body) {
                (Observed::Response { status, .. }, Some(body)) if (200..300).contains(status) => {
                    serde_json::from_slice::<serde_json::Value>(body)
                        .ok()
                        .and_then(|v| v.get("uploads").cloned())
                        .and_then(|v| serde_json::from_value::<Vec<serde_json::Value>>(v).ok())
                }
                _ => None,
            };
            let Some(items) = items else {
                // The sign request as a whole failed: every file in it shares the outcome.
                if let Some(s) = self.settle_sign_failure(&chunk, &sent, generation).await? {
                    stop = Some(s);
                }
                continue;
            };
            let mut by_id: HashMap<String, SignedItem> = HashMap::new();
            for it in items {
                if let Ok(item) = serde_json::from_value::<SignedItem>(it) {
                    by_id.insert(item.id.clone(), item);
                }
            }
            for mut u in chunk {
                match by_id.remove(&u.id) {
                    Some(item) => {
                        let mut t = item.target;
                        if t.expires_at.is_none() {
                            t.expires_at = item.expires_in.map(|s| now + s.saturating_mul(1000));
                        }
                        self.inner.store.set_upload_target(u.seq, &self.owner, &t).await?;
                        u.target = Some(t);
                        u.signed_now = true;
                        ready.push(u);
                    }
                    None => {
                        let effect = self
                            .decide_for(
                                &u,
                                &Observed::TransportError(
                                    "the sign response has no URL for this file".into(),
                                ),
                                None,
                            )
                            .await;
                        self.apply(&u, effect, generation).await?;
                    }
                }
            }
        }
        Ok(match stop {
            Some(s) => {
                for u in &ready {
                    self.inner.store.release_upload(u.seq, &self.owner).await?;
                }
                Err(s)
            }
            None => Ok(ready),
        })
    }

    async fn settle_sign_failure(
        &mut self,
        chunk: &[ClaimedUpload],
        sent: &Sent,
        generation: u64,
    ) -> Result<Option<StopReason>> {
        let observed = match &sent.observed {
            // 2xx without a usable body: a broken sign endpoint, retried with backoff.
            Observed::Response { status, .. } if (200..300).contains(status) => Observed::TransportError(
                format!("sign endpoint answered HTTP {status} without an uploads array"),
            ),
            o => o.clone(),
        };
        let body = sent
            .body
            .as_deref()
            .map(|b| format!("sign endpoint: {}", policy::excerpt(b)).into_bytes());
        let mut stop = None;
        let mut refreshed = false;
        for u in chunk {
            // Decide as if the file were a direct upload: a 401/403 from the API is about the
            // app's token, not a storage signature.
            let mut as_direct = u.clone();
            as_direct.destination = UploadDestination::Direct {
                url: String::new(),
                method: String::new(),
            };
            let effect = self.decide_for(&as_direct, &observed, body.as_deref()).await;
            if effect == UploadEffect::Unauthorized && refreshed {
                self.inner.store.release_upload(u.seq, &self.owner).await?;
                continue;
            }
            refreshed |= effect == UploadEffect::Unauthorized;
            if let Some(s) = self.apply(u, effect, generation).await? {
                stop = Some(s);
            }
        }
        Ok(stop)
    }

    async fn decide_for(&self, u: &ClaimedUpload, observed: &Observed, body: Option<&[u8]>) -> UploadEffect {
        let now = self.inner.now();
        let mut rng = self.inner.rng.lock().await;
        decide(u, observed, body, &self.cfg, now, &mut *rng)
    }

    fn launch(
        &mut self,
        u: ClaimedUpload,
        remaining: Duration,
        (auth, generation): (crate::models::AuthConfig, u64),
    ) -> UploadFlight {
        self.requests += 1;
        let sent: ByteCounter = Arc::default();
        self.active.insert(
            u.id.clone(),
            Active {
                placeholder: u.placeholder.clone(),
                sent: sent.clone(),
                total: u.size,
                last: 0,
            },
        );
        // The whole upload must fit in the budget; a stall (no bytes moving for the request
        // timeout) ends it early.
        let timeout = remaining;
        let stall_after = Duration::from_millis(self.cfg.request_timeout_ms);
        let transport = self.transport.clone();
        Box::pin(async move {
            let start = Instant::now();
            let mut stalled = false;
            let outcome = tokio::select! {
                r = transport.upload(&u, timeout, &auth, sent.clone()) => r,
                _ = stall(sent.clone(), u.size, stall_after) => {
                    stalled = true;
                    let what = if sent.load(Ordering::Relaxed) >= u.size {
                        "no response after the whole file was sent"
                    } else {
                        "no bytes moved"
                    };
                    Ok(Sent {
                        observed: Observed::TransportError(format!("upload stalled: {what} for {} ms", stall_after.as_millis())),
                        body: None,
                    })
                }
            };
            FlightResult {
                upload: u,
                outcome,
                stalled,
                clamped: true,
                elapsed: start.elapsed(),
                auth_generation: generation,
            }
        })
    }

    /// The app's view of one durable upload outcome (see `drain::outcome_events`).
    fn tell(&self, told: Applied) {
        if self.inner.has_listeners() {
            for e in outcome_events(&[told], &self.owner) {
                self.inner.emit(e);
            }
        }
    }

    async fn settle(&mut self, r: FlightResult) -> Result<Option<StopReason>> {
        let bytes_sent = self
            .active
            .remove(&r.upload.id)
            .map_or(0, |a| a.sent.load(std::sync::atomic::Ordering::Relaxed));
        let u = &r.upload;
        let sent = match r.outcome {
            Ok(s) => s,
            Err(e) => {
                // The file is gone or the URL is not allowed: nothing a retry would fix.
                let msg = e.to_string();
                tracing::warn!(id = %u.id, error = %msg, "upload moved to the dead letter");
                let bury = UploadOutcome::Bury {
                    seq: u.seq,
                    attempts: u.attempts + 1,
                    status: None,
                    error: msg.clone(),
                    now: self.inner.now(),
                };
                let heard = self.inner.has_listeners();
                if let UploadSettled::Dead(told) =
                    self.inner.store.settle_upload(&self.owner, &bury, heard).await?
                {
                    self.dead += 1;
                    self.tell(told);
                }
                self.last_error = Some(msg);
                return Ok(None);
            }
        };
        let timed_out =
            !r.stalled && matches!(&sent.observed, Observed::TransportError(e) if e.contains("timed out"));
        let effect = if r.clamped && timed_out {
            // Cut by the deadline: what got through still measures the link, so a file too big
            // for the window is not restarted from byte 0 every run (it waits for a longer one).
            if bytes_sent >= MEASURE_MIN_BYTES && r.elapsed.as_millis() > 0 {
                let bpms = bytes_sent as f64 / r.elapsed.as_millis() as f64;
                self.throughput = Some(policy::throughput_after_cut(self.throughput, bpms));
            }
            UploadEffect::Settle(UploadOutcome::Release { seq: u.seq })
        } else {
            self.decide_for(u, &sent.observed, sent.body.as_deref()).await
        };
        if let UploadEffect::Settle(UploadOutcome::Complete { .. }) = effect {
            if u.size >= MEASURE_MIN_BYTES && r.elapsed.as_millis() > 0 {
                let bpms = u.size as f64 / r.elapsed.as_millis() as f64;
                self.throughput = Some(policy::throughput_after_upload(self.throughput, bpms));
            }
        }
        self.apply(u, effect, r.auth_generation).await
    }

    async fn apply(
        &mut self,
        u: &ClaimedUpload,
        effect: UploadEffect,
        generation: u64,
    ) -> Result<Option<StopReason>> {
        match effect {
            UploadEffect::Settle(o) => {
                match &o {
                    UploadOutcome::Reschedule { attempts, error, .. } => {
                        tracing::debug!(id = %u.id, attempts, %error, "upload failed, rescheduled");
                        self.last_error = Some(error.clone());
                    }
                    UploadOutcome::Bury { status, error, .. } => {
                        tracing::warn!(id = %u.id, ?status, %error, "upload moved to the dead letter");
                        self.last_error = Some(error.clone());
                    }
                    UploadOutcome::Complete { .. } | UploadOutcome::Release { .. } => {}
                }
                let heard = self.inner.has_listeners();
                match self.inner.store.settle_upload(&self.owner, &o, heard).await? {
                    UploadSettled::Done { file, owned, told } => {
                        self.uploaded += 1;
                        self.bytes += u.size;
                        if owned {
                            if let Err(e) = tokio::fs::remove_file(&file).await {
                                tracing::warn!(error = %e, "could not delete the uploaded copy");
                            }
                        }
                        if self.inner.has_listeners() {
                            self.inner.emit(StatusEvent::UploadProgress {
                                id: u.id.clone(),
                                placeholder: u.placeholder.clone(),
                                bytes_sent: u.size,
                                total: u.size,
                            });
                        }
                        self.tell(told);
                        self.signal.finished_one.notify_one();
                    }
                    UploadSettled::Dead(told) => {
                        self.dead += 1;
                        self.tell(told);
                    }
                    UploadSettled::Yes if matches!(o, UploadOutcome::Reschedule { .. }) => self.retried += 1,
                    UploadSettled::Yes | UploadSettled::No => {}
                }
                Ok(None)
            }
            UploadEffect::Offline(e) => {
                self.inner.store.release_upload(u.seq, &self.owner).await?;
                self.last_error = Some(format!("cannot reach the upload host: {e}"));
                Ok(Some(StopReason::NoNetwork))
            }
            UploadEffect::Fatal(e) => {
                self.inner.store.release_upload(u.seq, &self.owner).await?;
                self.last_error = Some(e);
                Ok(Some(StopReason::Error))
            }
            UploadEffect::Unauthorized => {
                self.inner.store.release_upload(u.seq, &self.owner).await?;
                let timeout = Duration::from_millis(self.cfg.request_timeout_ms);
                match self
                    .auth
                    .unauthorized(generation, self.inner, &self.transport, timeout)
                    .await?
                {
                    AfterUnauthorized::SendAgain => Ok(None),
                    AfterUnauthorized::Stop(e) => {
                        self.last_error = Some(e);
                        Ok(Some(StopReason::AuthFailed))
                    }
                }
            }
        }
    }

    fn emit_progress(&mut self) {
        if !self.inner.has_listeners() {
            return;
        }
        for (id, a) in self.active.iter_mut() {
            let now = a.sent.load(Ordering::Relaxed).min(a.total);
            if now != a.last {
                a.last = now;
                self.inner.emit(StatusEvent::UploadProgress {
                    id: id.clone(),
                    placeholder: a.placeholder.clone(),
                    bytes_sent: now,
                    total: a.total,
                });
            }
        }
    }

    /// Cancellation: drop the uploads in flight (connections close) and put them back.
    async fn abandon(&mut self, flights: FuturesUnordered<UploadFlight>) -> Result<StopReason> {
        drop(flights);
        self.active.clear();
        self.inner
            .store
            .recover_owned(Queue::Uploads, &self.owner)
            .await?;
        Ok(StopReason::Cancelled)
    }
}

/// Resolves when no body bytes have moved for `after` while some remain to send, or when no
/// response came within `after` once the whole body was sent (a server that swallows uploads
/// must cost an attempt, not the whole budget of every run).
async fn stall(sent: ByteCounter, total: u64, after: Duration) {
    let mut last = sent.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(after).await;
        let now = sent.load(Ordering::Relaxed);
        if now >= total || now == last {
            return;
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::BackoffConfig;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn upload(signed: bool, attempts: u32) -> ClaimedUpload {
        ClaimedUpload {
            seq: 1,
            id: "u1".into(),
            placeholder: "att_1".into(),
            idempotency_key: "k".into(),
            file_path: "/tmp/x".into(),
            file_name: None,
            content_type: "image/jpeg".into(),
            size: 10,
            destination: if signed {
                UploadDestination::Signed
            } else {
                UploadDestination::Direct {
                    url: "/files/u1".into(),
                    method: "PUT".into(),
                }
            },
            target: signed.then(|| Target {
                url: "https://storage.example.com/o/u1?sig=abc".into(),
                method: "PUT".into(),
                headers: Default::default(),
                fields: None,
                file_field: None,
                expires_at: Some(1_000),
                result_url: None,
            }),
            attempts,
            signed_now: false,
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
    fn result_from_body_then_sign_then_url() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let e = decide(
            &upload(true, 0),
            &resp(200),
            Some(br#"{"url":"https://cdn/x.jpg"}"#),
            &cfg(),
            0,
            &mut rng,
        );
        assert!(
            matches!(e, UploadEffect::Settle(UploadOutcome::Complete { status: 200, ref result, .. })
                if result == "https://cdn/x.jpg"),
            "{e:?}"
        );
        let mut u = upload(true, 0);
        u.target.as_mut().unwrap().result_url = Some("https://cdn/y.jpg".into());
        let e = decide(&u, &resp(200), Some(b""), &cfg(), 0, &mut rng);
        assert!(
            matches!(e, UploadEffect::Settle(UploadOutcome::Complete { status: 200, ref result, .. })
                if result == "https://cdn/y.jpg"),
            "{e:?}"
        );
        let e = decide(&upload(true, 0), &resp(204), None, &cfg(), 0, &mut rng);
        assert!(
            matches!(e, UploadEffect::Settle(UploadOutcome::Complete { status: 204, ref result, .. })
                if result == "https://storage.example.com/o/u1"),
            "{e:?}"
        );
        // A direct upload with no result anywhere is a dead letter with a hint.
        let e = decide(&upload(false, 0), &resp(200), Some(b"{}"), &cfg(), 0, &mut rng);
        assert!(
            matches!(e, UploadEffect::Settle(UploadOutcome::Bury { ref error, .. }) if error.contains("resultPointer")),
            "{e:?}"
        );
    }

    #[test]
    fn refused_signature_resigns_without_delay_until_the_limit() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        match decide(
            &upload(true, 0),
            &resp(403),
            Some(b"expired"),
            &cfg(),
            500,
            &mut rng,
        ) {
            UploadEffect::Settle(UploadOutcome::Reschedule {
                resign,
                next_at,
                attempts,
                ..
            }) => {
                assert!(resign);
                assert_eq!(next_at, 500);
                assert_eq!(attempts, 1);
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            decide(&upload(true, 2), &resp(403), None, &cfg(), 0, &mut rng),
            UploadEffect::Settle(UploadOutcome::Bury { .. })
        ));
        // A direct upload's 401 is about the app's token.
        assert_eq!(
            decide(&upload(false, 0), &resp(401), None, &cfg(), 0, &mut rng),
            UploadEffect::Unauthorized
        );
        assert!(matches!(
            decide(&upload(false, 0), &resp(403), None, &cfg(), 0, &mut rng),
            UploadEffect::Settle(UploadOutcome::Bury { .. })
        ));
    }

    #[test]
    fn transient_backs_off_and_unreachable_costs_nothing() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        match decide(&upload(true, 0), &resp(503), None, &cfg(), 10_000, &mut rng) {
            UploadEffect::Settle(UploadOutcome::Reschedule { resign, next_at, .. }) => {
                assert!(!resign);
                assert!((10_000..=11_000).contains(&next_at));
            }
            e => panic!("{e:?}"),
        }
        let o = Observed::Unreachable("connection refused".into());
        assert!(matches!(
            decide(&upload(true, 9), &o, None, &cfg(), 0, &mut rng),
            UploadEffect::Offline(_)
        ));
    }
}

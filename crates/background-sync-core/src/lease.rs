//! The single-drainer lease of one run: taken before anything is claimed, renewed by a timer
//! beside both passes (never by one loop), and checked before every request starts.
//!
//! Rules (README "One drainer at a time"):
//! - The lease lives on the system's monotonic clock, which every process of one boot shares
//!   and which no wall-clock step moves; a lease further ahead than it was granted for (a
//!   reboot reset the clock) counts as expired.
//! - It is granted for `max(leaseTtlMs, 2 × requestTimeoutMs + 1 s)` and renewed every quarter
//!   of that. A request starts only if the lease outlives the request's time bound by a margin,
//!   so when a drainer stops renewing (frozen, killed, its database busy), its last request has
//!   ended before anyone else can take over. An upload longer than that extends the lease first.
//! - The fencing token is the run id: claims require the lease row to name it, and outcomes are
//!   written only to rows it claimed, so a drainer that lost the lease cannot claim, settle or
//!   reset anything another holder owns.

use crate::error::Result;
use crate::models::SyncConfig;
use crate::store::Store;
use crate::time;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a request's time bound must leave before the lease ends.
const MARGIN_MS: i64 = 500;

/// Milliseconds on the lease clock: `CLOCK_MONOTONIC` (the clock tokio's timers use; shared by
/// all processes of one boot). Elsewhere, the wall clock.
pub(crate) fn clock_ms() -> i64 {
    #[cfg(unix)]
    {
        #[cfg(target_vendor = "apple")]
        let id = libc::CLOCK_UPTIME_RAW;
        #[cfg(not(target_vendor = "apple"))]
        let id = libc::CLOCK_MONOTONIC;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
        if unsafe { libc::clock_gettime(id, &mut ts) } == 0 {
            // time_t and c_long are 32-bit on 32-bit Android (armv7): the casts are not no-ops there.
            #[allow(clippy::unnecessary_cast)]
            return ts.tv_sec as i64 * 1_000 + ts.tv_nsec as i64 / 1_000_000;
        }
    }
    use crate::policy::Clock;
    crate::policy::SystemClock.now_ms()
}

/// How long a lease is granted for under `cfg` (documented rule).
pub(crate) fn ttl_ms(cfg: &SyncConfig) -> i64 {
    (cfg.lease_ttl_ms as i64).max(cfg.request_timeout_ms as i64 * 2 + 1_000)
}

pub(crate) struct Lease {
    owner: String,
    ttl_ms: i64,
    /// Lease-clock time up to which the lease is known to be ours.
    valid_until: AtomicI64,
    lost: CancellationToken,
}

impl Lease {
    /// Take the lease for `owner`, or `None` when another drainer holds it.
    pub(crate) async fn acquire(store: &Store, owner: &str, cfg: &SyncConfig) -> Result<Option<Lease>> {
        let ttl = ttl_ms(cfg);
        let now = clock_ms();
        if !store.acquire_lease(owner, now, ttl).await? {
            return Ok(None);
        }
        Ok(Some(Lease {
            owner: owner.to_string(),
            ttl_ms: ttl,
            valid_until: AtomicI64::new(now + ttl),
            lost: CancellationToken::new(),
        }))
    }

    /// Whether a request that may take up to `bound` may start now.
    pub(crate) fn allows(&self, bound: Duration) -> bool {
        !self.lost.is_cancelled()
            && time::after(clock_ms(), bound).saturating_add(MARGIN_MS)
                <= self.valid_until.load(Ordering::SeqCst)
    }

    /// Make sure the lease covers a request of `bound` (a long upload), extending it first.
    pub(crate) async fn cover(&self, store: &Store, bound: Duration) -> Result<bool> {
        if self.allows(bound) {
            return Ok(true);
        }
        if self.lost.is_cancelled() {
            return Ok(false);
        }
        let now = clock_ms();
        let ttl = time::after(2 * MARGIN_MS, bound).max(self.ttl_ms);
        if store.renew_lease(&self.owner, now, ttl).await? {
            self.valid_until.fetch_max(now + ttl, Ordering::SeqCst);
            Ok(self.allows(bound))
        } else {
            self.lost.cancel();
            Ok(false)
        }
    }

    /// Renew every quarter TTL until `done` is cancelled. Calls `on_lost` once if the lease
    /// turns out to be someone else's. A renewal that fails or hangs (a busy database) simply
    /// does not extend `valid_until`, so no new request starts that could outlive the lease.
    pub(crate) async fn keep(&self, store: &Store, done: &CancellationToken, on_lost: impl FnOnce()) {
        let every = time::span((self.ttl_ms / 4).max(100));
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = clock_ms();
            let renewed = tokio::select! {
                _ = done.cancelled() => return,
                r = store.renew_lease(&self.owner, now, self.ttl_ms) => r,
            };
            match renewed {
                Ok(true) => {
                    self.valid_until.fetch_max(now + self.ttl_ms, Ordering::SeqCst);
                }
                Ok(false) => {
                    tracing::error!("the drain lease was taken over: this drainer stops sending");
                    self.lost.cancel();
                    on_lost();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the drain lease"),
            }
        }
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }
}

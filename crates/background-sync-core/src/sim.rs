//! Not API (hidden from the docs, may change at any time): the engine's own retry rule for
//! simulations that run it without sockets, such as the fleet simulation in
//! `benches/fleet.rs`. It is `policy::verdict` on an HTTP status, nothing added.

use crate::models::SyncConfig;
use crate::policy::{self, Observed, Verdict};
use rand::Rng;

/// What the drain does after one answered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Pending again, due at this time (ms), with this many attempts made.
    RetryAt {
        at: i64,
        attempts: u32,
    },
    /// A dead letter (refused, or out of attempts): its entity waits for the user.
    Dead,
    /// 401: refresh and retry (not simulated).
    Unauthorized,
}

/// The verdict of the drain for `status` (with the server's `Retry-After` header, if any) on
/// a row that has had `attempts` attempts before this one.
pub fn after_response(
    status: u16,
    retry_after: Option<&str>,
    attempts: u32,
    cfg: &SyncConfig,
    now: i64,
    rng: &mut impl Rng,
) -> Next {
    let observed = Observed::Response {
        status,
        retry_after: retry_after.map(str::to_string),
    };
    match policy::verdict(
        &observed,
        None,
        attempts,
        cfg.max_attempts,
        &cfg.backoff,
        now,
        rng,
    ) {
        Verdict::Done { .. } => Next::Delivered,
        Verdict::Retry {
            attempts, next_at, ..
        } => Next::RetryAt {
            at: next_at,
            attempts,
        },
        Verdict::Bury { .. } => Next::Dead,
        Verdict::Unauthorized => Next::Unauthorized,
        Verdict::Offline(_) | Verdict::Fatal(_) => unreachable!("an answered request is neither"),
    }
}

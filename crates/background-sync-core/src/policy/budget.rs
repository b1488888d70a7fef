//! The time budget, pure: how long the next request is expected to take, what fits in what is
//! left of a run, and how a measured upload throughput (bytes per ms) updates the estimate.

use crate::time;
use std::time::Duration;

/// Assumed time to set up a request, added to the size-based estimate of an upload.
pub(crate) const REQUEST_OVERHEAD_MS: f64 = 200.0;

/// The expected duration of the next request after one took `elapsed`: slow responses are
/// tracked at once (with 20 % headroom), fast ones forgotten slowly (10 % per answer), never
/// below `floor`.
pub(crate) fn next_request_estimate(estimate: Duration, elapsed: Duration, floor: Duration) -> Duration {
    elapsed.mul_f32(1.2).max(estimate.mul_f32(0.9)).max(floor)
}

/// The largest file that can finish in `remaining` at `throughput` bytes/ms. Unknown
/// throughput: anything (an upload cut by the deadline is released, not failed).
pub(crate) fn fits_in(throughput: Option<f64>, remaining: Duration) -> u64 {
    match throughput {
        None => u64::MAX,
        Some(bpms) => {
            let ms = remaining.as_millis() as f64 - REQUEST_OVERHEAD_MS;
            if ms <= 0.0 {
                0
            } else {
                // 20% headroom for a slower network than measured.
                (ms * bpms / 1.2) as u64
            }
        }
    }
}

/// How long an upload of `size` bytes should take at `throughput` (the request timeout when
/// unknown), at most what is left of the budget.
pub(crate) fn expected_upload_ms(
    throughput: Option<f64>,
    size: u64,
    request_timeout_ms: u64,
    remaining: Duration,
) -> i64 {
    let estimate = match throughput {
        Some(bpms) => (size as f64 / bpms * 1.2 + REQUEST_OVERHEAD_MS) as i64,
        None => request_timeout_ms as i64,
    };
    estimate.min(time::ms(remaining))
}

/// After a finished upload measured `measured`: a slower link is trusted at once, a faster
/// one gradually (30 % per upload), so one lucky file does not promise too much.
pub(crate) fn throughput_after_upload(previous: Option<f64>, measured: f64) -> f64 {
    match previous {
        Some(t) if measured > t => t * 0.7 + measured * 0.3,
        _ => measured,
    }
}

/// After an upload cut by the deadline measured `measured` on what got through: only ever
/// slower, so a file too big for the window waits for a longer one instead of restarting.
pub(crate) fn throughput_after_cut(previous: Option<f64>, measured: f64) -> f64 {
    previous.map_or(measured, |t| t.min(measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_bounds_what_is_claimed() {
        let ms = Duration::from_millis;
        assert_eq!(fits_in(None, ms(10)), u64::MAX);
        assert_eq!(fits_in(Some(1_000.0), ms(100)), 0);
        // 10 s usable at 1.2 MB/s, with 20% headroom: 10 MB.
        assert_eq!(fits_in(Some(1_200.0), ms(10_200)), 10_000_000);
    }

    #[test]
    fn estimates_follow_slow_answers_at_once_and_fast_ones_slowly() {
        let ms = Duration::from_millis;
        // f32 factors: equal to the microsecond.
        let near = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_micros(1);
        assert!(near(next_request_estimate(ms(250), ms(1_000), ms(20)), ms(1_200)));
        assert!(near(next_request_estimate(ms(1_000), ms(10), ms(20)), ms(900)));
        assert_eq!(next_request_estimate(ms(10), ms(1), ms(20)), ms(20));
        assert_eq!(throughput_after_upload(Some(100.0), 50.0), 50.0);
        assert_eq!(throughput_after_upload(Some(100.0), 200.0), 130.0);
        assert_eq!(throughput_after_upload(None, 200.0), 200.0);
        assert_eq!(throughput_after_cut(Some(100.0), 200.0), 100.0);
        assert_eq!(throughput_after_cut(Some(100.0), 40.0), 40.0);
        assert_eq!(expected_upload_ms(None, 1, 30_000, ms(5_000)), 5_000);
        assert_eq!(
            expected_upload_ms(Some(1_000.0), 1_000_000, 30_000, ms(60_000)),
            1_400
        );
    }
}

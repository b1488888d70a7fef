//! Time as the engine keeps it: an instant is milliseconds since the Unix epoch on the engine's
//! clock (`i64`, what SQLite stores and the public API shows); a span is a `Duration`. These
//! conversions saturate instead of wrapping or panicking, so a stepped clock or a huge setting
//! cannot overflow (the fuzz suite once found `attempt to multiply with overflow` in the lease).

use std::time::Duration;

/// The span from `now` until `at`; zero when `at` is not in the future.
pub(crate) fn until(now: i64, at: i64) -> Duration {
    Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

/// The instant `span` after `at`.
pub(crate) fn after(at: i64, span: Duration) -> i64 {
    at.saturating_add(ms(span))
}

/// The instant `span` before `at`.
pub(crate) fn before(at: i64, span: Duration) -> i64 {
    at.saturating_sub(ms(span))
}

/// A span in whole milliseconds.
pub(crate) fn ms(span: Duration) -> i64 {
    i64::try_from(span.as_millis()).unwrap_or(i64::MAX)
}

/// A span of `ms` milliseconds; zero when negative.
pub(crate) fn span(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_instead_of_wrapping() {
        assert_eq!(until(1_000, 1_250), Duration::from_millis(250));
        assert_eq!(until(1_000, 900), Duration::ZERO);
        assert_eq!(until(i64::MIN, i64::MAX), Duration::from_millis(i64::MAX as u64));
        assert_eq!(after(10, Duration::from_secs(1)), 1_010);
        assert_eq!(after(i64::MAX - 1, Duration::from_secs(1)), i64::MAX);
        assert_eq!(after(0, Duration::MAX), i64::MAX);
        assert_eq!(before(10, Duration::from_secs(1)), -990);
        assert_eq!(before(i64::MIN + 1, Duration::MAX), i64::MIN);
        assert_eq!(span(-5), Duration::ZERO);
        assert_eq!(span(5), Duration::from_millis(5));
    }
}

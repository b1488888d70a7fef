//! Delivery policy, free of I/O: how an HTTP outcome is classified and when a retry happens
//! (here), the batch endpoint's answer split per mutation (`batch`), the time budget
//! (`budget`), and when the foreground scheduler drains (`schedule`). Time and randomness are
//! passed in, so every rule is tested without sleeping.

use crate::models::BackoffConfig;
use crate::time;
use rand::Rng;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod batch;
mod budget;
pub mod schedule;

pub(crate) use batch::split_batch;
pub(crate) use budget::{
    expected_upload_ms, fits_in, next_request_estimate, throughput_after_cut, throughput_after_upload,
};

/// Longest wait the plugin accepts from a server's `Retry-After` (a day); longer values are
/// clamped so a misbehaving server cannot park the queue for weeks.
pub(crate) const MAX_RETRY_AFTER_MS: u64 = 24 * 3_600_000;

/// What the transport saw for one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Observed {
    Response {
        status: u16,
        retry_after: Option<String>,
    },
    /// Timed out, reset, TLS failure, body cut short... after the connection was made.
    TransportError(String),
    /// No connection could be made (no network, DNS failure, refused). Says nothing about the
    /// mutation, so it costs no attempt: a day offline must not turn the queue into dead letters.
    Unreachable(String),
    /// The TLS handshake with the API failed (untrusted certificate, interception, a plain
    /// HTTP port): not offline, not the mutation's fault.
    Tls(String),
}

/// What the drain does about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Class {
    /// 2xx: delivered.
    Done,
    /// Try again later; `retry_after_ms` is the server's minimum wait, if it gave one.
    Transient { retry_after_ms: Option<u64> },
    /// 401: refresh the token once, then retry.
    Unauthorized,
    /// Any other 4xx (and unexpected 1xx/3xx): the request itself is wrong; dead letter at once.
    Permanent,
    /// The API cannot be reached at all: stop the drain, keep everything pending.
    Unreachable,
    /// Nothing can be sent until the app or the network is fixed (TLS refused): stop the drain
    /// with an error, keep everything pending, cost no attempt.
    Fatal,
}

impl Class {
    /// Whether sending the same request again may succeed.
    #[cfg(test)]
    pub(crate) fn can_retry(&self) -> bool {
        !matches!(self, Class::Permanent | Class::Done | Class::Fatal)
    }
}

/// Classify one outcome. `now_ms` is needed to turn an HTTP-date `Retry-After` into a delay.
pub(crate) fn classify(observed: &Observed, now_ms: i64) -> Class {
    match observed {
        Observed::TransportError(_) => Class::Transient { retry_after_ms: None },
        Observed::Unreachable(_) => Class::Unreachable,
        Observed::Tls(_) => Class::Fatal,
        Observed::Response { status, retry_after } => match *status {
            200..=299 => Class::Done,
            401 => Class::Unauthorized,
            // 409: the IETF Idempotency-Key draft's "a request with this key is still being
            // processed" (a retry that overtook a slow original): retry later, same key.
            408 | 409 | 425 | 429 | 500..=599 => Class::Transient {
                retry_after_ms: retry_after.as_deref().and_then(|v| parse_retry_after(v, now_ms)),
            },
            _ => Class::Permanent,
        },
    }
}

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now_ms: i64) -> Option<u64> {
    let value = value.trim();
    let ms = if let Ok(secs) = value.parse::<u64>() {
        secs.saturating_mul(1000)
    } else {
        let when = httpdate::parse_http_date(value).ok()?;
        let when_ms = time::ms(when.duration_since(UNIX_EPOCH).ok()?);
        time::until(now_ms, when_ms)
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX)
    };
    Some(ms.min(MAX_RETRY_AFTER_MS))
}

/// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
/// Jitter"): the ceiling for retry `n` (0-based) is `min(max, initial * multiplier^n)` and the
/// wait is uniform in `[0, ceiling]`. Full jitter spreads a fleet of phones that all regain
/// network at once.
pub(crate) fn backoff_ceiling_ms(cfg: &BackoffConfig, retry: u32) -> u64 {
    let exp = cfg.multiplier.max(1.0).powi(retry.min(64) as i32);
    let ceiling = (cfg.initial_ms as f64) * exp;
    if !ceiling.is_finite() || ceiling >= cfg.max_ms as f64 {
        cfg.max_ms
    } else {
        ceiling as u64
    }
}

/// The delay before retry `n`, never shorter than the server's `Retry-After`.
pub(crate) fn retry_delay_ms(
    cfg: &BackoffConfig,
    retry: u32,
    retry_after_ms: Option<u64>,
    rng: &mut impl Rng,
) -> u64 {
    let ceiling = backoff_ceiling_ms(cfg, retry);
    let jittered = if ceiling == 0 {
        0
    } else {
        rng.gen_range(0..=ceiling)
    };
    jittered.max(retry_after_ms.unwrap_or(0))
}

/// Longest body excerpt kept in a dead letter's message.
pub(crate) const EXCERPT_BYTES: usize = 512;

/// The first bytes of a body, as text, for dead-letter messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(EXCERPT_BYTES)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if body.len() > EXCERPT_BYTES {
        s.push('…');
    }
    s
}

/// What one request's outcome means for its item (a mutation or an upload), before the
/// item-specific reading of a success (a server id, an upload's result).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// 2xx: the caller reads the body.
    Done {
        status: u16,
    },
    /// Pending again at `next_at` (ms), attempt counted.
    Retry {
        attempts: u32,
        next_at: i64,
        status: Option<u16>,
        error: String,
    },
    /// Dead letter: refused, or out of retries.
    Bury {
        attempts: u32,
        status: Option<u16>,
        error: String,
    },
    Unauthorized,
    /// Unreachable: pending, no attempt; the pass stops.
    Offline(String),
    /// TLS refused: pending, no attempt; the pass stops with an error.
    Fatal(String),
}

/// How an outcome reads in a report or a dead letter: `HTTP 422: {body excerpt}` or the
/// transport's message.
pub(crate) fn describe(observed: &Observed, body: Option<&[u8]>) -> String {
    match observed {
        Observed::Response { status, .. } => match body.map(excerpt).filter(|e| !e.is_empty()) {
            Some(ex) => format!("HTTP {status}: {ex}"),
            None => format!("HTTP {status}"),
        },
        Observed::TransportError(e) | Observed::Unreachable(e) | Observed::Tls(e) => e.clone(),
    }
}

/// The one retry rule for mutations and uploads: `attempts` is the count before this request.
pub(crate) fn verdict(
    observed: &Observed,
    body: Option<&[u8]>,
    attempts: u32,
    max_attempts: u32,
    backoff: &BackoffConfig,
    now: i64,
    rng: &mut impl Rng,
) -> Verdict {
    let status = match observed {
        Observed::Response { status, .. } => Some(*status),
        Observed::TransportError(_) | Observed::Unreachable(_) | Observed::Tls(_) => None,
    };
    let attempts = attempts + 1;
    match classify(observed, now) {
        Class::Done => Verdict::Done {
            status: status.unwrap_or(200),
        },
        Class::Unauthorized => Verdict::Unauthorized,
        Class::Unreachable => Verdict::Offline(describe(observed, body)),
        Class::Fatal => Verdict::Fatal(describe(observed, body)),
        Class::Permanent => Verdict::Bury {
            attempts,
            status,
            error: describe(observed, body),
        },
        Class::Transient { .. } if attempts >= max_attempts => Verdict::Bury {
            attempts,
            status,
            error: format!(
                "gave up after {attempts} attempts; last: {}",
                describe(observed, body)
            ),
        },
        Class::Transient { retry_after_ms } => Verdict::Retry {
            attempts,
            next_at: time::after(
                now,
                Duration::from_millis(retry_delay_ms(backoff, attempts - 1, retry_after_ms, rng)),
            ),
            status,
            error: describe(observed, body),
        },
    }
}

/// The backoff schedule as an iterator of ceilings, for docs and tests.
#[cfg(test)]
pub(crate) fn backoff_ceilings(cfg: &BackoffConfig) -> impl Iterator<Item = u64> + '_ {
    (0u32..).map(move |n| backoff_ceiling_ms(cfg, n))
}

/// Wall clock, injectable for tests.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        time::ms(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO),
        )
    }
}

/// Whether a stored `next_attempt_at` should be believed. A wall clock that jumped backwards
/// leaves timestamps far in the future; anything beyond the longest wait we ever schedule is
/// treated as due rather than stranding the row.
pub(crate) fn max_plausible_wait_ms(cfg: &BackoffConfig) -> i64 {
    (cfg.max_ms.max(MAX_RETRY_AFTER_MS) as i64).saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn resp(status: u16) -> Observed {
        Observed::Response {
            status,
            retry_after: None,
        }
    }

    proptest! {
        /// The one retry rule both passes use: a 2xx is done; a refusal buries at once; a
        /// transient outcome retries no earlier than Retry-After and no later than the backoff
        /// ceiling, until the attempt that reaches `max_attempts`, which buries; unreachable and
        /// TLS never count an attempt.
        #[test]
        fn verdict_follows_the_retry_rule(status in 100u16..600, attempts in 0u32..12, max in 1u32..12,
                                          wait in proptest::option::of(0u64..120), seed in any::<u64>()) {
            let cfg = BackoffConfig::default();
            let now = 1_700_000_000_000;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let observed = Observed::Response { status, retry_after: wait.map(|w| w.to_string()) };
            let v = verdict(&observed, Some(b"{\"error\":\"x\"}"), attempts, max, &cfg, now, &mut rng);
            match classify(&observed, now) {
                Class::Done => prop_assert_eq!(v, Verdict::Done { status }),
                Class::Unauthorized => prop_assert_eq!(v, Verdict::Unauthorized),
                Class::Permanent => prop_assert_eq!(v, Verdict::Bury {
                    attempts: attempts + 1, status: Some(status), error: format!("HTTP {status}: {{\"error\":\"x\"}}"),
                }),
                Class::Transient { retry_after_ms } if attempts + 1 >= max => {
                    let buried = matches!(v, Verdict::Bury { attempts: a, .. } if a == attempts + 1);
                    prop_assert!(buried, "{:?}", v);
                    let _ = retry_after_ms;
                }
                Class::Transient { retry_after_ms } => match v {
                    Verdict::Retry { attempts: a, next_at, status: s, .. } => {
                        prop_assert_eq!(a, attempts + 1);
                        prop_assert_eq!(s, Some(status));
                        let delay = (next_at - now) as u64;
                        prop_assert!(delay >= retry_after_ms.unwrap_or(0));
                        prop_assert!(delay <= backoff_ceiling_ms(&cfg, attempts).max(retry_after_ms.unwrap_or(0)));
                    }
                    other => prop_assert!(false, "transient gave {:?}", other),
                },
                other => prop_assert!(false, "a response classified {:?}", other),
            }
            for o in [Observed::Unreachable("refused".into()), Observed::Tls("bad cert".into())] {
                let v = verdict(&o, None, attempts, max, &cfg, now, &mut rng);
                prop_assert!(matches!(v, Verdict::Offline(_) | Verdict::Fatal(_)), "{:?}", v);
            }
        }
    }

    #[test]
    fn classification_table() {
        let now = 1_700_000_000_000;
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify(&resp(s), now), Class::Done, "{s}");
        }
        for s in [408, 409, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                classify(&resp(s), now),
                Class::Transient { retry_after_ms: None },
                "{s}"
            );
        }
        assert_eq!(classify(&resp(401), now), Class::Unauthorized);
        for s in [100, 301, 302, 304, 400, 403, 404, 405, 410, 413, 422, 451, 499] {
            assert_eq!(classify(&resp(s), now), Class::Permanent, "{s}");
        }
        let err = Observed::TransportError("connection reset".into());
        assert_eq!(classify(&err, now), Class::Transient { retry_after_ms: None });
        let off = Observed::Unreachable("connection refused".into());
        assert_eq!(classify(&off, now), Class::Unreachable);
        assert!(Class::Unreachable.can_retry());
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = 1_700_000_000_000; // 2023-11-14T22:13:20Z
        let o = Observed::Response {
            status: 429,
            retry_after: Some("7".into()),
        };
        assert_eq!(
            classify(&o, now),
            Class::Transient {
                retry_after_ms: Some(7_000)
            }
        );
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(now as u64 + 30_000));
        assert_eq!(parse_retry_after(&date, now), Some(30_000));
        // A date in the past means "now".
        let past = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(now as u64 - 5_000));
        assert_eq!(parse_retry_after(&past, now), Some(0));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999999", now), Some(MAX_RETRY_AFTER_MS));
        // Retry-After on a permanent status changes nothing.
        let p = Observed::Response {
            status: 400,
            retry_after: Some("3".into()),
        };
        assert_eq!(classify(&p, now), Class::Permanent);
    }

    #[test]
    fn can_retry_matches_class() {
        assert!(Class::Transient { retry_after_ms: None }.can_retry());
        assert!(Class::Unauthorized.can_retry());
        assert!(!Class::Permanent.can_retry());
        assert!(!Class::Done.can_retry());
    }

    #[test]
    fn backoff_defaults_documented() {
        let cfg = BackoffConfig::default();
        let first: Vec<u64> = backoff_ceilings(&cfg).take(10).collect();
        assert_eq!(
            first,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000]
        );
        assert_eq!(backoff_ceiling_ms(&cfg, 10_000), 300_000);
    }

    #[test]
    fn retry_after_wins_over_shorter_jitter() {
        let cfg = BackoffConfig {
            initial_ms: 100,
            max_ms: 1_000,
            multiplier: 2.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for retry in 0..20 {
            assert!(retry_delay_ms(&cfg, retry, Some(5_000), &mut rng) >= 5_000);
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let cfg = BackoffConfig {
            initial_ms: 1_000,
            max_ms: 1_000,
            multiplier: 2.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let samples: Vec<u64> = (0..2_000)
            .map(|_| retry_delay_ms(&cfg, 3, None, &mut rng))
            .collect();
        let low = samples.iter().filter(|&&d| d < 250).count();
        let high = samples.iter().filter(|&&d| d > 750).count();
        // Uniform: about a quarter in each tail; a fixed or "equal jitter" delay would fail this.
        assert!((350..650).contains(&low), "low tail {low}");
        assert!((350..650).contains(&high), "high tail {high}");
    }

    proptest! {
        #[test]
        fn delay_within_bounds(initial in 0u64..10_000, max in 0u64..1_000_000, mult in 1.0f64..4.0,
                               retry in 0u32..200, seed: u64, ra in proptest::option::of(0u64..100_000)) {
            let cfg = BackoffConfig { initial_ms: initial, max_ms: max, multiplier: mult };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let d = retry_delay_ms(&cfg, retry, ra, &mut rng);
            let ceiling = backoff_ceiling_ms(&cfg, retry);
            prop_assert!(ceiling <= max);
            prop_assert!(d <= ceiling.max(ra.unwrap_or(0)));
            prop_assert!(d >= ra.unwrap_or(0));
        }

        #[test]
        fn ceilings_never_decrease(initial in 0u64..10_000, max in 0u64..1_000_000, mult in 1.0f64..4.0) {
            let cfg = BackoffConfig { initial_ms: initial, max_ms: max, multiplier: mult };
            let v: Vec<u64> = backoff_ceilings(&cfg).take(80).collect();
            prop_assert!(v.windows(2).all(|w| w[0] <= w[1]));
        }

        #[test]
        fn every_status_has_exactly_one_class(status in 100u16..600) {
            let c = classify(&resp(status), 0);
            let expected = match status {
                200..=299 => Class::Done,
                401 => Class::Unauthorized,
                408 | 409 | 425 | 429 | 500..=599 => Class::Transient { retry_after_ms: None },
                _ => Class::Permanent,
            };
            prop_assert_eq!(c, expected);
        }
    }
}

//! Retry configuration, the backoff formula and the give-up rule of Cloud Tasks.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::status::Status;

pub const DEFAULT_MAX_ATTEMPTS: i32 = 100;
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_DOUBLINGS: i32 = 16;

/// A resolved retry configuration: every field has its effective value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Total attempts allowed, the first included; -1 means unlimited.
    pub max_attempts: i32,
    pub max_retry_duration: Option<Duration>,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub max_doublings: i32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_retry_duration: None,
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_doublings: DEFAULT_MAX_DOUBLINGS,
        }
    }
}

/// Retry settings as a caller wrote them: zero means "not set", durations are signed
/// microseconds so that negative input can be refused with a clear message.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetrySpec {
    pub max_attempts: i32,
    pub max_retry_duration_micros: i64,
    pub min_backoff_micros: i64,
    pub max_backoff_micros: i64,
    pub max_doublings: i32,
}

fn non_negative(field: &str, micros: i64) -> Result<Option<Duration>, Status> {
    match micros {
        0 => Ok(None),
        m if m < 0 => Err(Status::invalid_argument(format!("RetryConfig.{field} cannot be negative."))),
        m => Ok(Some(Duration::from_micros(m as u64))),
    }
}

impl RetrySpec {
    /// Validate and fill defaults, with the real service's texts.
    pub fn resolve(&self) -> Result<RetryConfig, Status> {
        if self.max_attempts < -1 {
            return Err(Status::invalid_argument("RetryConfig.maxAttempts must be greater or equal to -1."));
        }
        if self.max_doublings < 0 {
            return Err(Status::invalid_argument("RetryConfig.maxDoublings cannot be negative."));
        }
        let max_retry_duration = non_negative("max_retry_duration.seconds", self.max_retry_duration_micros)?;
        if self.max_retry_duration_micros % 1_000_000 != 0 {
            return Err(Status::invalid_argument("RetryConfig.max_retry_duration.nanos cannot be set."));
        }
        let min_backoff = non_negative("minBackoff", self.min_backoff_micros)?.unwrap_or(DEFAULT_MIN_BACKOFF);
        let max_backoff = non_negative("maxBackoff", self.max_backoff_micros)?.unwrap_or(DEFAULT_MAX_BACKOFF);
        if min_backoff > max_backoff {
            return Err(Status::invalid_argument(
                "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.",
            ));
        }
        Ok(RetryConfig {
            max_attempts: if self.max_attempts == 0 { DEFAULT_MAX_ATTEMPTS } else { self.max_attempts },
            max_retry_duration,
            min_backoff,
            max_backoff,
            max_doublings: if self.max_doublings == 0 { DEFAULT_MAX_DOUBLINGS } else { self.max_doublings },
        })
    }
}

impl From<&RetryConfig> for RetrySpec {
    fn from(c: &RetryConfig) -> Self {
        RetrySpec {
            max_attempts: c.max_attempts,
            max_retry_duration_micros: c.max_retry_duration.map_or(0, crate::clock::duration_micros),
            min_backoff_micros: crate::clock::duration_micros(c.min_backoff),
            max_backoff_micros: crate::clock::duration_micros(c.max_backoff),
            max_doublings: c.max_doublings,
        }
    }
}

impl RetryConfig {
    /// The wait before retry number `retry` (1 for the first retry), measured from the failure.
    ///
    /// The interval doubles `max_doublings` times, then grows linearly:
    /// `min(max_backoff, min_backoff * 2^k * (n - k))` with `k = min(n - 1, max_doublings)`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let n = f64::from(retry.max(1));
        let k = (n - 1.0).min(f64::from(self.max_doublings.max(0)));
        let secs = self.min_backoff.as_secs_f64() * 2f64.powf(k) * (n - k);
        let max = self.max_backoff.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            return self.max_backoff;
        }
        Duration::from_secs_f64(secs)
    }

    /// Whether a task gives up after a failed attempt: once both limits are exhausted. With
    /// unlimited attempts (`-1`) only the duration limits, as the real service does: a
    /// `max_retry_duration` then stops the task once it has passed since the first attempt.
    /// `attempts` counts every attempt so far, the failed one included.
    pub fn gives_up(&self, attempts: u32, first_attempt: Timestamp, now: Timestamp) -> bool {
        let attempts_exhausted = match self.max_attempts {
            -1 => self.max_retry_duration.is_some(),
            max => i64::from(attempts) >= i64::from(max),
        };
        let duration_exhausted = match self.max_retry_duration {
            None => true,
            Some(limit) => now.since(first_attempt) >= limit,
        };
        attempts_exhausted && duration_exhausted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min_ms: u64, max_ms: u64, doublings: i32) -> RetryConfig {
        RetryConfig {
            min_backoff: Duration::from_millis(min_ms),
            max_backoff: Duration::from_millis(max_ms),
            max_doublings: doublings,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn backoff_table() {
        // The documented example: min 10 s, max 300 s, 3 doublings: 10, 20, 40, 80, 160, 240, 300, 300.
        let c = config(10_000, 300_000, 3);
        let got: Vec<u64> = (1..=8).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(got, vec![10, 20, 40, 80, 160, 240, 300, 300]);

        let d = RetryConfig::default();
        assert_eq!(d.backoff(1), Duration::from_millis(100));
        assert_eq!(d.backoff(2), Duration::from_millis(200));
        assert_eq!(d.backoff(3), Duration::from_millis(400));
        assert_eq!(d.backoff(100), Duration::from_secs(3600));
        assert_eq!(d.backoff(u32::MAX), Duration::from_secs(3600));

        let no_doubling = config(1_000, 60_000, 0);
        let got: Vec<u64> = (1..=4).map(|n| no_doubling.backoff(n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    #[test]
    fn backoff_is_monotonic_and_bounded() {
        // A property over a grid of configurations: never shrinks, never passes max_backoff.
        for (min, max, doublings) in [(100, 3_600_000, 16), (1, 5, 2), (250, 250, 5), (1000, 10_000, 0)] {
            let c = config(min, max, doublings);
            let mut previous = Duration::ZERO;
            for n in 1..200 {
                let b = c.backoff(n);
                assert!(b >= previous, "{c:?} retry {n}");
                assert!(b <= c.max_backoff, "{c:?} retry {n}");
                assert!(b >= c.min_backoff.min(c.max_backoff), "{c:?} retry {n}");
                previous = b;
            }
        }
    }

    #[test]
    fn give_up_rule() {
        let t0 = Timestamp::from_secs(1_000);
        let check = |max_attempts: i32, duration_s: Option<u64>, attempts: u32, elapsed_s: i64, expected: bool| {
            let c = RetryConfig {
                max_attempts,
                max_retry_duration: duration_s.map(Duration::from_secs),
                ..RetryConfig::default()
            };
            let now = Timestamp::from_secs(1_000 + elapsed_s);
            assert_eq!(
                c.gives_up(attempts, t0, now),
                expected,
                "max_attempts {max_attempts} duration {duration_s:?} attempts {attempts} elapsed {elapsed_s}"
            );
        };
        check(3, None, 2, 0, false);
        check(3, None, 3, 0, true);
        check(1, None, 1, 0, true);
        check(-1, None, 10_000, 1_000_000, false);
        check(-1, Some(10), 10_000, 9, false);
        check(-1, Some(10), 3, 10, true);
        check(-1, Some(3), 3, 3, true);
        check(3, Some(60), 3, 59, false);
        check(3, Some(60), 3, 60, true);
        check(3, Some(60), 2, 600, false);
    }

    #[test]
    fn spec_resolution() {
        let ok = RetrySpec::default().resolve().unwrap();
        assert_eq!(ok, RetryConfig::default());

        let custom =
            RetrySpec { max_attempts: -1, min_backoff_micros: 2_000_000, ..Default::default() }.resolve().unwrap();
        assert_eq!(custom.max_attempts, -1);
        assert_eq!(custom.min_backoff, Duration::from_secs(2));

        let err = |spec: RetrySpec, text: &str| {
            let e = spec.resolve().unwrap_err();
            assert_eq!(e.message, text);
        };
        err(
            RetrySpec { max_attempts: -2, ..Default::default() },
            "RetryConfig.maxAttempts must be greater or equal to -1.",
        );
        err(RetrySpec { max_doublings: -1, ..Default::default() }, "RetryConfig.maxDoublings cannot be negative.");
        err(RetrySpec { min_backoff_micros: -1, ..Default::default() }, "RetryConfig.minBackoff cannot be negative.");
        err(RetrySpec { max_backoff_micros: -1, ..Default::default() }, "RetryConfig.maxBackoff cannot be negative.");
        err(
            RetrySpec { max_retry_duration_micros: -5, ..Default::default() },
            "RetryConfig.max_retry_duration.seconds cannot be negative.",
        );
        err(
            RetrySpec { max_retry_duration_micros: 30_900_000, ..Default::default() },
            "RetryConfig.max_retry_duration.nanos cannot be set.",
        );
        let order = "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.";
        err(RetrySpec { min_backoff_micros: 10_000_000, max_backoff_micros: 5_000_000, ..Default::default() }, order);
        // An unset max_backoff defaults to 3600 s, so a min_backoff above it is refused.
        err(RetrySpec { min_backoff_micros: 3_601_000_000, ..Default::default() }, order);
    }
}

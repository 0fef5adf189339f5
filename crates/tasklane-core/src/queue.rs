//! Queue configuration: defaults, bounds, and the update-mask rules of `UpdateQueue`.

use crate::clock::Timestamp;
use crate::name::QueueName;
use crate::retry::{RetryConfig, RetrySpec};
use crate::status::Status;
use crate::target::HttpTarget;

pub const DEFAULT_MAX_DISPATCHES_PER_SECOND: f64 = 500.0;
pub const MAX_DISPATCHES_PER_SECOND: f64 = 500.0;
pub const DEFAULT_MAX_CONCURRENT_DISPATCHES: i32 = 1000;
pub const MAX_CONCURRENT_DISPATCHES: i32 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueState {
    Running,
    Paused,
    Disabled,
}

impl QueueState {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Running => "running",
            QueueState::Paused => "paused",
            QueueState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<QueueState> {
        match s {
            "running" => Some(QueueState::Running),
            "paused" => Some(QueueState::Paused),
            "disabled" => Some(QueueState::Disabled),
            _ => None,
        }
    }
}

/// How a queue's tasks reach workers: pushed over HTTP, or leased by pull workers.
/// Fixed when the queue is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueKind {
    #[default]
    Push,
    Pull,
}

impl QueueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Push => "push",
            QueueKind::Pull => "pull",
        }
    }

    pub fn parse(s: &str) -> Option<QueueKind> {
        match s {
            "push" => Some(QueueKind::Push),
            "pull" => Some(QueueKind::Pull),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub max_dispatches_per_second: f64,
    pub max_burst_size: i32,
    pub max_concurrent_dispatches: i32,
}

impl RateLimits {
    /// The burst the real service derives from the rate: max(10, floor(rate / 5)).
    pub fn burst_for(rate: f64) -> i32 {
        ((rate / 5.0).floor() as i32).max(10)
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            max_dispatches_per_second: DEFAULT_MAX_DISPATCHES_PER_SECOND,
            max_burst_size: RateLimits::burst_for(DEFAULT_MAX_DISPATCHES_PER_SECOND),
            max_concurrent_dispatches: DEFAULT_MAX_CONCURRENT_DISPATCHES,
        }
    }
}

/// A queue with every setting resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: QueueName,
    pub rate_limits: RateLimits,
    pub retry_config: RetryConfig,
    pub state: QueueState,
    pub purge_time: Option<Timestamp>,
    pub logging_sampling_ratio: f64,
    pub http_target: Option<HttpTarget>,
    pub kind: QueueKind,
}

/// Rate settings as a caller wrote them; zero means "not set".
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateSpec {
    pub max_dispatches_per_second: f64,
    pub max_concurrent_dispatches: i32,
}

/// The settable part of a queue, as a caller wrote it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueSpec {
    pub rate: RateSpec,
    pub retry: RetrySpec,
    pub logging_sampling_ratio: f64,
    pub http_target: Option<HttpTarget>,
}

impl RateSpec {
    pub fn resolve(&self) -> Result<RateLimits, Status> {
        let rate = self.max_dispatches_per_second;
        if !rate.is_finite() || rate < 0.0 {
            return Err(Status::invalid_argument("rate_limits.max_dispatches_per_second must be a positive number"));
        }
        if rate > MAX_DISPATCHES_PER_SECOND {
            return Err(Status::invalid_argument(format!(
                "rate_limits.max_dispatches_per_second is {rate}, but must be at most {MAX_DISPATCHES_PER_SECOND}"
            )));
        }
        let concurrency = self.max_concurrent_dispatches;
        if concurrency < 0 {
            return Err(Status::invalid_argument("rate_limits.max_concurrent_dispatches must not be negative"));
        }
        if concurrency > MAX_CONCURRENT_DISPATCHES {
            return Err(Status::invalid_argument(format!(
                "rate_limits.max_concurrent_dispatches is {concurrency}, but must be at most {MAX_CONCURRENT_DISPATCHES}"
            )));
        }
        let rate = if rate == 0.0 { DEFAULT_MAX_DISPATCHES_PER_SECOND } else { rate };
        Ok(RateLimits {
            max_dispatches_per_second: rate,
            max_burst_size: RateLimits::burst_for(rate),
            max_concurrent_dispatches: if concurrency == 0 { DEFAULT_MAX_CONCURRENT_DISPATCHES } else { concurrency },
        })
    }
}

impl QueueSpec {
    /// Validate and fill defaults.
    pub fn resolve(&self, name: QueueName, state: QueueState, purge_time: Option<Timestamp>) -> Result<Queue, Status> {
        let ratio = self.logging_sampling_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(Status::invalid_argument(
                "stackdriver_logging_config.sampling_ratio must be between 0.0 and 1.0",
            ));
        }
        Ok(Queue {
            name,
            rate_limits: self.rate.resolve()?,
            retry_config: self.retry.resolve()?,
            state,
            purge_time,
            logging_sampling_ratio: ratio,
            http_target: self.http_target.clone().map(HttpTarget::validate).transpose()?,
            kind: QueueKind::Push,
        })
    }

    /// The spec that resolves to this queue's current settings.
    pub fn of(queue: &Queue) -> QueueSpec {
        QueueSpec {
            rate: RateSpec {
                max_dispatches_per_second: queue.rate_limits.max_dispatches_per_second,
                max_concurrent_dispatches: queue.rate_limits.max_concurrent_dispatches,
            },
            retry: RetrySpec::from(&queue.retry_config),
            logging_sampling_ratio: queue.logging_sampling_ratio,
            http_target: queue.http_target.clone(),
        }
    }

    /// Apply `patch` over `base` as `UpdateQueue` does. No mask replaces every settable
    /// field; an empty mask changes nothing; a path names a field or a whole sub-message.
    /// Output-only fields (`state`, `purge_time`, `name`) are accepted and ignored.
    pub fn apply_mask(base: QueueSpec, patch: QueueSpec, mask: Option<&[String]>) -> Result<QueueSpec, Status> {
        let Some(paths) = mask else { return Ok(patch) };
        let mut out = base;
        for raw in paths {
            let path = snake_case_path(raw.trim());
            match path.as_str() {
                "" | "name" | "state" | "purge_time" | "rate_limits.max_burst_size" => {}
                "rate_limits" => out.rate = patch.rate,
                "rate_limits.max_dispatches_per_second" => {
                    out.rate.max_dispatches_per_second = patch.rate.max_dispatches_per_second
                }
                "rate_limits.max_concurrent_dispatches" => {
                    out.rate.max_concurrent_dispatches = patch.rate.max_concurrent_dispatches
                }
                "retry_config" => out.retry = patch.retry,
                "retry_config.max_attempts" => out.retry.max_attempts = patch.retry.max_attempts,
                "retry_config.max_retry_duration" => {
                    out.retry.max_retry_duration_micros = patch.retry.max_retry_duration_micros
                }
                "retry_config.min_backoff" => out.retry.min_backoff_micros = patch.retry.min_backoff_micros,
                "retry_config.max_backoff" => out.retry.max_backoff_micros = patch.retry.max_backoff_micros,
                "retry_config.max_doublings" => out.retry.max_doublings = patch.retry.max_doublings,
                "stackdriver_logging_config" | "stackdriver_logging_config.sampling_ratio" => {
                    out.logging_sampling_ratio = patch.logging_sampling_ratio
                }
                "http_target" => out.http_target = patch.http_target.clone(),
                "http_target.uri_override"
                | "http_target.http_method"
                | "http_target.header_overrides"
                | "http_target.oauth_token"
                | "http_target.oidc_token" => {
                    let from = patch.http_target.clone().unwrap_or_default();
                    let to = out.http_target.get_or_insert_with(Default::default);
                    match path.as_str() {
                        "http_target.uri_override" => to.uri_override = from.uri_override,
                        "http_target.http_method" => to.method = from.method,
                        "http_target.header_overrides" => to.headers = from.headers,
                        _ => to.auth = from.auth,
                    }
                    if *to == HttpTarget::default() {
                        out.http_target = None;
                    }
                }
                other => {
                    return Err(Status::invalid_argument(format!(
                        "update_mask path \"{other}\" is not a field of Queue; valid paths are rate_limits, \
                         retry_config, stackdriver_logging_config, http_target and their fields"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// A `ListQueues` filter. The service filters on `state`: `state: PAUSED`, `state = PAUSED`,
/// `state != PAUSED`, `NOT state: PAUSED`, `-state: PAUSED`, with the enum name in any case
/// (quoted or not), or nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueFilter {
    #[default]
    All,
    StateIs(QueueState),
    StateIsNot(QueueState),
}

impl QueueFilter {
    pub fn parse(filter: &str) -> Result<QueueFilter, Status> {
        let f = filter.trim();
        if f.is_empty() {
            return Ok(QueueFilter::All);
        }
        let bad = || {
            Status::invalid_argument(format!(
                "Invalid filter \"{filter}\": queues can be filtered by state, for example \"state: PAUSED\" or \"state != PAUSED\""
            ))
        };
        // `NOT state: X` and `-state: X` negate, as in Google's filter syntax.
        let (not, f) = match f.strip_prefix("NOT ").or_else(|| f.strip_prefix('-')) {
            Some(rest) => (true, rest.trim_start()),
            None => (false, f),
        };
        let rest = f.strip_prefix("state").ok_or_else(bad)?.trim_start();
        let (negated, value) = if let Some(v) = rest.strip_prefix("!=") {
            (!not, v)
        } else if let Some(v) = rest.strip_prefix(':').or_else(|| rest.strip_prefix('=')) {
            (not, v)
        } else {
            return Err(bad());
        };
        let value = value.trim().trim_matches('"');
        let state = match value.to_ascii_uppercase().as_str() {
            "RUNNING" => QueueState::Running,
            "PAUSED" => QueueState::Paused,
            "DISABLED" => QueueState::Disabled,
            _ => return Err(bad()),
        };
        Ok(if negated { QueueFilter::StateIsNot(state) } else { QueueFilter::StateIs(state) })
    }

    pub fn matches(&self, queue: &Queue) -> bool {
        match self {
            QueueFilter::All => true,
            QueueFilter::StateIs(s) => queue.state == *s,
            QueueFilter::StateIsNot(s) => queue.state != *s,
        }
    }
}

/// `rateLimits.maxDispatchesPerSecond` → `rate_limits.max_dispatches_per_second`.
pub fn snake_case_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn name() -> QueueName {
        QueueName::parse("projects/p/locations/l/queues/q").unwrap()
    }

    #[test]
    fn defaults() {
        let q = QueueSpec::default().resolve(name(), QueueState::Running, None).unwrap();
        assert_eq!(q.rate_limits.max_dispatches_per_second, 500.0);
        assert_eq!(q.rate_limits.max_burst_size, 100);
        assert_eq!(q.rate_limits.max_concurrent_dispatches, 1000);
        assert_eq!(q.retry_config.max_attempts, 100);
        assert_eq!(q.retry_config.min_backoff, Duration::from_millis(100));
        assert_eq!(q.retry_config.max_backoff, Duration::from_secs(3600));
        assert_eq!(q.retry_config.max_doublings, 16);
        assert_eq!(q.retry_config.max_retry_duration, None);
    }

    #[test]
    fn burst_table() {
        for (rate, burst) in
            [(1.0, 10), (10.0, 10), (49.0, 10), (50.0, 10), (55.0, 11), (200.0, 40), (500.0, 100), (0.5, 10)]
        {
            assert_eq!(RateLimits::burst_for(rate), burst, "rate {rate}");
        }
    }

    #[test]
    fn rate_bounds() {
        let check = |rate: f64, concurrency: i32, needle: Option<&str>| {
            let r = RateSpec { max_dispatches_per_second: rate, max_concurrent_dispatches: concurrency }.resolve();
            match needle {
                None => assert!(r.is_ok(), "{rate} {concurrency}: {r:?}"),
                Some(n) => assert!(r.unwrap_err().message.contains(n), "{rate} {concurrency}"),
            }
        };
        check(500.0, 5000, None);
        check(0.01, 1, None);
        check(500.5, 0, Some("at most 500"));
        check(-1.0, 0, Some("positive"));
        check(f64::NAN, 0, Some("positive"));
        check(10.0, 5001, Some("at most 5000"));
        check(10.0, -1, Some("must not be negative"));
    }

    #[test]
    fn update_mask_rules() {
        use crate::target::{HttpTarget, UriOverride};
        let base = QueueSpec {
            rate: RateSpec { max_dispatches_per_second: 10.0, max_concurrent_dispatches: 5 },
            retry: RetrySpec { max_attempts: 7, max_doublings: 3, ..Default::default() },
            logging_sampling_ratio: 0.5,
            http_target: Some(HttpTarget { headers: vec![("X-A".into(), "1".into())], ..Default::default() }),
        };
        let patch = QueueSpec {
            rate: RateSpec { max_dispatches_per_second: 20.0, max_concurrent_dispatches: 0 },
            retry: RetrySpec { max_attempts: 9, ..Default::default() },
            logging_sampling_ratio: 0.0,
            http_target: Some(HttpTarget {
                uri_override: Some(UriOverride { host: Some("h".into()), ..Default::default() }),
                ..Default::default()
            }),
        };
        let apply = |mask: Option<&[String]>| QueueSpec::apply_mask(base.clone(), patch.clone(), mask);
        // No mask: the patch replaces everything.
        assert_eq!(apply(None).unwrap(), patch);
        // Empty mask: nothing changes.
        assert_eq!(apply(Some(&[])).unwrap(), base);
        // A leaf path changes only that leaf (camelCase accepted).
        let leaf = apply(Some(&["rateLimits.maxDispatchesPerSecond".into()])).unwrap();
        assert_eq!(leaf.rate.max_dispatches_per_second, 20.0);
        assert_eq!(leaf.rate.max_concurrent_dispatches, 5);
        assert_eq!(leaf.retry, base.retry);
        // A sub-message path replaces the whole sub-message.
        let whole = apply(Some(&["retry_config".into()])).unwrap();
        assert_eq!(whole.retry, patch.retry);
        assert_eq!(whole.rate, base.rate);
        // http_target: whole, or one of its fields.
        assert_eq!(apply(Some(&["http_target".into()])).unwrap().http_target, patch.http_target);
        let uri = apply(Some(&["httpTarget.uriOverride".into()])).unwrap().http_target.unwrap();
        assert_eq!(uri.headers, base.http_target.as_ref().unwrap().headers);
        assert_eq!(uri.uri_override, patch.http_target.as_ref().unwrap().uri_override);
        let cleared = apply(Some(&["http_target.header_overrides".into()])).unwrap();
        assert_eq!(cleared.http_target, None, "a target with nothing left is no target");
        // Output-only paths are ignored; unknown ones are refused.
        assert_eq!(apply(Some(&["state".into()])).unwrap(), base);
        let err = apply(Some(&["retry_config.bogus".into()])).unwrap_err();
        assert!(err.message.contains("retry_config.bogus"));
    }

    #[test]
    fn filters() {
        let check = |input: &str, expected: Option<QueueFilter>| {
            assert_eq!(QueueFilter::parse(input).ok(), expected, "{input:?}");
        };
        check("", Some(QueueFilter::All));
        check("state: PAUSED", Some(QueueFilter::StateIs(QueueState::Paused)));
        check("state:paused", Some(QueueFilter::StateIs(QueueState::Paused)));
        check("state = RUNNING", Some(QueueFilter::StateIs(QueueState::Running)));
        check("state != PAUSED", Some(QueueFilter::StateIsNot(QueueState::Paused)));
        check("state: \"DISABLED\"", Some(QueueFilter::StateIs(QueueState::Disabled)));
        check("NOT state: PAUSED", Some(QueueFilter::StateIsNot(QueueState::Paused)));
        check("-state:running", Some(QueueFilter::StateIsNot(QueueState::Running)));
        check("NOT state != PAUSED", Some(QueueFilter::StateIs(QueueState::Paused)));
        check("state: SLEEPING", None);
        check("name: x", None);
        check("state PAUSED", None);
        let q = QueueSpec::default().resolve(name(), QueueState::Paused, None).unwrap();
        assert!(QueueFilter::StateIs(QueueState::Paused).matches(&q));
        assert!(!QueueFilter::StateIsNot(QueueState::Paused).matches(&q));
    }

    #[test]
    fn spec_round_trips_through_queue() {
        let spec = QueueSpec {
            rate: RateSpec { max_dispatches_per_second: 3.5, max_concurrent_dispatches: 7 },
            retry: RetrySpec { max_attempts: -1, max_retry_duration_micros: 60_000_000, ..Default::default() },
            logging_sampling_ratio: 1.0,
            http_target: Some(crate::target::HttpTarget {
                method: Some(crate::task::HttpMethod::Put),
                ..Default::default()
            }),
        };
        let q = spec.resolve(name(), QueueState::Paused, None).unwrap();
        let again = QueueSpec::of(&q).resolve(name(), QueueState::Paused, None).unwrap();
        assert_eq!(q, again);
    }
}

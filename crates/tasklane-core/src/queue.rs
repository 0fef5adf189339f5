//! Queue configuration: defaults, bounds, and the update-mask rules of `UpdateQueue`.

use crate::clock::Timestamp;
use crate::name::QueueName;
use crate::retry::{RetryConfig, RetrySpec};
use crate::status::Status;
use crate::target::HttpTarget;

/// The texts the real service answers about queues and their tasks' existence.
pub mod texts {
    /// NOT_FOUND for a queue that is not there, wherever the queue is needed.
    pub const QUEUE_MISSING: &str =
        "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize.";
    /// NOT_FOUND for what DeleteQueue, DeleteTask and RunTask cannot find.
    pub const NOT_FOUND: &str = "Requested entity was not found.";
    pub const QUEUE_EXISTS: &str = "Queue already exists";
    /// GetTask, for a task that completed or was deleted within the tombstone window.
    pub const TASK_GONE: &str = "The task no longer exists, though a task with this name existed recently. \
                                 The task either successfully completed or was deleted.";
    pub const TASK_TOO_RECENT: &str = "The task cannot be created because a task with this name existed too \
        recently. For more information about task de-duplication see \
        https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks/create#body.request_body.FIELDS.task.";
    pub const TASK_EXISTS: &str = "Requested entity already exists";
    pub const QUEUE_TOO_RECENT: &str =
        "The queue cannot be created because a queue with this name existed too recently.";
}

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
            return Err(Status::invalid_argument("RateLimits.maxDispatchesPerSecond cannot be negative."));
        }
        if rate > MAX_DISPATCHES_PER_SECOND {
            return Err(Status::invalid_argument(
                "RateLimits.maxDispatchesPerSecond must be less than or equal to 500.",
            ));
        }
        let concurrency = self.max_concurrent_dispatches;
        if concurrency < 0 {
            return Err(Status::invalid_argument("RateLimits.maxConcurrentDispatches cannot be negative."));
        }
        if concurrency > MAX_CONCURRENT_DISPATCHES {
            return Err(Status::invalid_argument(
                "RateLimits.maxConcurrentDispatches must be less than or equal to 5000.",
            ));
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
    /// Check what a request wrote before it is merged into anything: its `http_target`
    /// whole, even where an update mask leaves it out (the real service does).
    pub fn check_request(&self) -> Result<(), Status> {
        match &self.http_target {
            Some(t) => t.clone().validate().map(drop),
            None => Ok(()),
        }
    }

    /// Validate and fill defaults. A request's own `http_target` has passed
    /// [`QueueSpec::check_request`]; a merged one must still say something.
    pub fn resolve(&self, name: QueueName, state: QueueState, purge_time: Option<Timestamp>) -> Result<Queue, Status> {
        let ratio = self.logging_sampling_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(Status::invalid_argument("sampling_ratio must be between 0.0 and 1.0."));
        }
        Ok(Queue {
            name,
            rate_limits: self.rate.resolve()?,
            retry_config: self.retry.resolve()?,
            state,
            purge_time,
            logging_sampling_ratio: ratio,
            http_target: match &self.http_target {
                Some(t) => {
                    t.check_uri_override()?;
                    Some(t.clone())
                }
                None => None,
            },
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
                Some(n) => assert_eq!(r.unwrap_err().message, n, "{rate} {concurrency}"),
            }
        };
        check(500.0, 5000, None);
        check(0.01, 1, None);
        check(500.5, 0, Some("RateLimits.maxDispatchesPerSecond must be less than or equal to 500."));
        check(-1.0, 0, Some("RateLimits.maxDispatchesPerSecond cannot be negative."));
        check(f64::NAN, 0, Some("RateLimits.maxDispatchesPerSecond cannot be negative."));
        check(10.0, 5001, Some("RateLimits.maxConcurrentDispatches must be less than or equal to 5000."));
        check(10.0, -1, Some("RateLimits.maxConcurrentDispatches cannot be negative."));
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

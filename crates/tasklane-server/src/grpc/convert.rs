//! Protobuf messages to core types and back. The checks here are the ones REST makes in
//! `rest/wire.rs`, with the same texts, so the two transports answer alike.

use tasklane_core::clock::duration_micros;
use tasklane_core::queue::{QueueSpec, RateSpec};
use tasklane_core::retry::{RetryConfig, RetrySpec};
use tasklane_core::task::{Attempt, AuthToken, TaskSpec};
use tasklane_core::{HttpMethod, Queue, QueueState, Status, Task, TaskView, Timestamp};

use super::messages as m;
use crate::rest::wire::texts;

const MICROS_PER_SECOND: i64 = 1_000_000;

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0.div_euclid(MICROS_PER_SECOND),
        nanos: (t.0.rem_euclid(MICROS_PER_SECOND) * 1000) as i32,
    }
}

pub fn duration(micros: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: micros / MICROS_PER_SECOND, nanos: ((micros % MICROS_PER_SECOND) * 1000) as i32 }
}

fn timestamp_from(field: &str, t: &prost_types::Timestamp) -> Result<Timestamp, Status> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Status::invalid_argument(format!("{field}.nanos must be between 0 and 999,999,999")));
    }
    t.seconds
        .checked_mul(MICROS_PER_SECOND)
        .and_then(|s| s.checked_add(i64::from(t.nanos) / 1000))
        .map(Timestamp)
        .ok_or_else(|| Status::invalid_argument(format!("{field} is out of range")))
}

fn duration_from(field: &str, d: &prost_types::Duration) -> Result<i64, Status> {
    if d.nanos.abs() >= 1_000_000_000 || (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err(Status::invalid_argument(format!("{field} is not a valid duration")));
    }
    d.seconds
        .checked_mul(MICROS_PER_SECOND)
        .and_then(|s| s.checked_add(i64::from(d.nanos) / 1000))
        .ok_or_else(|| Status::invalid_argument(format!("{field} is out of range")))
}

fn opt_duration(field: &str, d: &Option<prost_types::Duration>) -> Result<i64, Status> {
    d.as_ref().map_or(Ok(0), |d| duration_from(field, d))
}

pub fn view(n: i32) -> TaskView {
    crate::rest::wire::view_from(Some(n))
}

pub fn retry_spec(r: &m::RetryConfig) -> Result<RetrySpec, Status> {
    Ok(RetrySpec {
        max_attempts: r.max_attempts,
        max_retry_duration_micros: opt_duration("retry_config.max_retry_duration", &r.max_retry_duration)?,
        min_backoff_micros: opt_duration("retry_config.min_backoff", &r.min_backoff)?,
        max_backoff_micros: opt_duration("retry_config.max_backoff", &r.max_backoff)?,
        max_doublings: r.max_doublings,
    })
}

/// Read a `Queue` message: its name (possibly empty) and settable fields.
pub fn queue_spec(q: &m::Queue) -> Result<(String, QueueSpec), Status> {
    let mut spec = QueueSpec::default();
    if let Some(r) = &q.rate_limits {
        spec.rate = RateSpec {
            max_dispatches_per_second: r.max_dispatches_per_second,
            max_concurrent_dispatches: r.max_concurrent_dispatches,
        };
    }
    if let Some(r) = &q.retry_config {
        spec.retry = retry_spec(r)?;
    }
    if let Some(l) = &q.stackdriver_logging_config {
        spec.logging_sampling_ratio = l.sampling_ratio;
    }
    if q.http_target.is_some() {
        return Err(texts::queue_http_target_unsupported());
    }
    Ok((q.name.clone(), spec))
}

fn auth_from(oidc: &Option<m::OidcToken>, oauth: &Option<m::OAuthToken>) -> Result<Option<AuthToken>, Status> {
    match (oidc, oauth) {
        (Some(_), Some(_)) => Err(Status::invalid_argument(texts::BOTH_TOKENS)),
        (Some(o), None) => Ok(Some(AuthToken::Oidc {
            service_account_email: o.service_account_email.clone(),
            audience: o.audience.clone(),
        })),
        (None, Some(o)) => Ok(Some(AuthToken::OAuth {
            service_account_email: o.service_account_email.clone(),
            scope: o.scope.clone(),
        })),
        (None, None) => Ok(None),
    }
}

/// Read a `Task` message of a create request.
pub fn task_spec(t: Option<m::Task>) -> Result<TaskSpec, Status> {
    let Some(t) = t else {
        return Err(Status::invalid_argument(texts::TASK_REQUIRED));
    };
    if t.app_engine_http_request.is_some() {
        return Err(Status::invalid_argument(texts::APP_ENGINE_UNSUPPORTED));
    }
    let Some(r) = t.http_request else {
        return Err(Status::invalid_argument(texts::HTTP_REQUEST_REQUIRED));
    };
    let method = match r.http_method {
        0 => None,
        n => Some(HttpMethod::from_i32(n).ok_or_else(|| texts::bad_enum("task.http_request.http_method", n))?),
    };
    let auth = auth_from(&r.oidc_token, &r.oauth_token)?;
    let schedule_time = t.schedule_time.as_ref().map(|s| timestamp_from("task.schedule_time", s)).transpose()?;
    let dispatch_deadline_micros =
        t.dispatch_deadline.as_ref().map(|d| duration_from("task.dispatch_deadline", d)).transpose()?;
    Ok(TaskSpec {
        name: (!t.name.is_empty()).then_some(t.name),
        url: r.url,
        method,
        headers: r.headers.into_iter().collect(),
        body: r.body,
        auth,
        schedule_time,
        dispatch_deadline_micros,
    })
}

fn retry_message(c: &RetryConfig) -> m::RetryConfig {
    m::RetryConfig {
        max_attempts: c.max_attempts,
        max_retry_duration: c.max_retry_duration.map(|d| duration(duration_micros(d))),
        min_backoff: Some(duration(duration_micros(c.min_backoff))),
        max_backoff: Some(duration(duration_micros(c.max_backoff))),
        max_doublings: c.max_doublings,
    }
}

pub fn queue(q: &Queue) -> m::Queue {
    let r = &q.rate_limits;
    m::Queue {
        name: q.name.to_string(),
        app_engine_routing_override: None,
        http_target: None,
        rate_limits: Some(m::RateLimits {
            max_dispatches_per_second: r.max_dispatches_per_second,
            max_burst_size: r.max_burst_size,
            max_concurrent_dispatches: r.max_concurrent_dispatches,
        }),
        retry_config: Some(retry_message(&q.retry_config)),
        state: match q.state {
            QueueState::Running => 1,
            QueueState::Paused => 2,
            QueueState::Disabled => 3,
        },
        purge_time: q.purge_time.map(timestamp),
        stackdriver_logging_config: (q.logging_sampling_ratio > 0.0)
            .then_some(m::StackdriverLoggingConfig { sampling_ratio: q.logging_sampling_ratio }),
    }
}

fn attempt(a: &Attempt) -> m::Attempt {
    m::Attempt {
        schedule_time: a.schedule_time.map(timestamp),
        dispatch_time: a.dispatch_time.map(timestamp),
        response_time: a.response_time.map(timestamp),
        response_status: a.response_status.as_ref().map(|s| m::RpcStatus {
            code: s.code as i32,
            message: s.message.clone(),
            details: Vec::new(),
        }),
    }
}

pub fn task(t: &Task, view: TaskView) -> m::Task {
    let r = &t.http_request;
    let (oidc_token, oauth_token) = match &r.auth {
        Some(AuthToken::Oidc { service_account_email, audience }) => (
            Some(m::OidcToken { service_account_email: service_account_email.clone(), audience: audience.clone() }),
            None,
        ),
        Some(AuthToken::OAuth { service_account_email, scope }) => {
            (None, Some(m::OAuthToken { service_account_email: service_account_email.clone(), scope: scope.clone() }))
        }
        None => (None, None),
    };
    m::Task {
        name: t.name.to_string(),
        app_engine_http_request: None,
        http_request: Some(m::HttpRequest {
            url: r.url.clone(),
            http_method: r.method as i32,
            headers: r.headers.iter().cloned().collect(),
            body: if view == TaskView::Full { r.body.clone() } else { Vec::new() },
            oauth_token,
            oidc_token,
        }),
        schedule_time: Some(timestamp(t.schedule_time)),
        create_time: Some(timestamp(t.create_time)),
        dispatch_deadline: Some(duration(duration_micros(t.dispatch_deadline))),
        dispatch_count: t.dispatch_count,
        response_count: t.response_count,
        first_attempt: t.first_attempt.as_ref().map(attempt),
        last_attempt: t.last_attempt.as_ref().map(attempt),
        view: if view == TaskView::Full { 2 } else { 1 },
        retry_config: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_seconds_and_nanos_also_before_1970() {
        for micros in [0, 1, 999_999, 1_000_000, 1_700_000_000_123_456, -1, -1_000_001] {
            let t = timestamp(Timestamp(micros));
            assert!((0..1_000_000_000).contains(&t.nanos), "{t:?}");
            assert_eq!(timestamp_from("t", &t).unwrap(), Timestamp(micros));
        }
    }

    #[test]
    fn durations_with_mixed_signs_or_too_many_nanos_are_refused() {
        assert_eq!(duration_from("d", &duration(1_500_000)).unwrap(), 1_500_000);
        assert_eq!(
            duration_from("d", &prost_types::Duration { seconds: -1, nanos: -500_000_000 }).unwrap(),
            -1_500_000
        );
        for bad in [(1, -1), (-1, 1), (0, 1_000_000_000)] {
            let d = prost_types::Duration { seconds: bad.0, nanos: bad.1 };
            let e = duration_from("task.dispatch_deadline", &d).unwrap_err();
            assert!(e.message.starts_with("task.dispatch_deadline"), "{e:?}");
        }
    }
}

//! Core types to their protobuf messages and back: the one mapping the gRPC edge renders
//! with and the services keep records in (batch operations).

use prost::Message;
use tasklane_core::clock::duration_micros;
use tasklane_core::retry::{RetryConfig, RetrySpec};
use tasklane_core::status::Detail;
use tasklane_core::target::{HttpTarget, Scheme};
use tasklane_core::task::{Attempt, AuthToken, HttpRequest, ResponseStatus, texts};
use tasklane_core::{HttpMethod, LocationName, Queue, QueueState, Status, Task, TaskName, TaskView, Timestamp};

use super::messages as m;
use crate::service::operations::{BatchKind, BatchOperation, BatchState};

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

pub fn timestamp_from(field: &str, t: &prost_types::Timestamp) -> Result<Timestamp, Status> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Status::invalid_argument(format!("{field}.nanos must be between 0 and 999,999,999")));
    }
    t.seconds
        .checked_mul(MICROS_PER_SECOND)
        .and_then(|s| s.checked_add(i64::from(t.nanos) / 1000))
        .map(Timestamp)
        .ok_or_else(|| Status::invalid_argument(format!("{field} is out of range")))
}

pub fn duration_from(field: &str, d: &prost_types::Duration) -> Result<i64, Status> {
    if d.nanos.abs() >= 1_000_000_000 || (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err(Status::invalid_argument(format!("{field} is not a valid duration")));
    }
    d.seconds
        .checked_mul(MICROS_PER_SECOND)
        // Rounded down, so a negative duration under a microsecond stays negative (refused).
        .and_then(|s| s.checked_add(i64::from(d.nanos).div_euclid(1000)))
        .ok_or_else(|| Status::invalid_argument(format!("{field} is out of range")))
}

pub fn view(n: i32) -> TaskView {
    if n == 2 { TaskView::Full } else { TaskView::Basic }
}

pub fn http_target_message(t: &HttpTarget) -> m::HttpTarget {
    let (oidc_token, oauth_token) = auth_messages(&t.auth);
    m::HttpTarget {
        uri_override: t.uri_override.as_ref().map(|u| m::UriOverride {
            scheme: u.scheme.map(Scheme::number),
            host: u.host.clone(),
            port: u.port,
            path_override: u.path.as_ref().map(|p| m::PathOverride { path: p.clone() }),
            query_override: u.query.as_ref().map(|q| m::QueryOverride { query_params: q.clone() }),
            uri_override_enforce_mode: u.mode.number(),
        }),
        http_method: t.method.map_or(0, |m| m as i32),
        header_overrides: t
            .headers
            .iter()
            .map(|(k, v)| m::HeaderOverride { header: Some(m::Header { key: k.clone(), value: v.clone() }) })
            .collect(),
        oauth_token,
        oidc_token,
    }
}

pub fn auth_messages(auth: &Option<AuthToken>) -> (Option<m::OidcToken>, Option<m::OAuthToken>) {
    match auth {
        Some(AuthToken::Oidc { service_account_email, audience }) => (
            Some(m::OidcToken { service_account_email: service_account_email.clone(), audience: audience.clone() }),
            None,
        ),
        Some(AuthToken::OAuth { service_account_email, scope }) => {
            (None, Some(m::OAuthToken { service_account_email: service_account_email.clone(), scope: scope.clone() }))
        }
        None => (None, None),
    }
}

pub fn auth_from(oidc: &Option<m::OidcToken>, oauth: &Option<m::OAuthToken>) -> Result<Option<AuthToken>, Status> {
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

pub fn retry_message(c: &RetryConfig) -> m::RetryConfig {
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
        http_target: q.http_target.as_ref().map(http_target_message),
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

pub fn attempt(a: &Attempt) -> m::Attempt {
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
    let (oidc_token, oauth_token) = auth_messages(&r.auth);
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
        retry_config: t.retry_config.as_ref().map(retry_message),
    }
}

pub fn location(l: &LocationName) -> m::Location {
    m::Location {
        name: l.to_string(),
        location_id: l.location.clone(),
        display_name: l.location.clone(),
        labels: Default::default(),
        metadata: None,
    }
}

pub const TYPE_PREFIX: &str = "type.googleapis.com/";

pub const CREATE_METADATA: &str = "google.cloud.tasks.v2.BatchCreateTasksMetadata";

pub const CREATE_RESPONSE: &str = "google.cloud.tasks.v2.BatchCreateTasksResponse";

pub const DELETE_METADATA: &str = "google.cloud.tasks.v2.BatchDeleteTasksMetadata";

pub const EMPTY: &str = "google.protobuf.Empty";

pub fn any(type_name: &str, message: &impl prost::Message) -> prost_types::Any {
    prost_types::Any { type_url: format!("{TYPE_PREFIX}{type_name}"), value: message.encode_to_vec() }
}

/// The `State` enum numbers of the two metadata messages differ. A delete that failed
/// for every name is PARTIALLY_SUCCEEDED with an error, as the real service reports it.
pub fn batch_state_number(kind: BatchKind, state: BatchState) -> i32 {
    match (kind, state) {
        (_, BatchState::Succeeded) => 2,
        (BatchKind::Create, BatchState::PartiallySucceeded) => 5,
        (BatchKind::Create, BatchState::Failed) => 3,
        (BatchKind::Delete, BatchState::PartiallySucceeded | BatchState::Failed) => 3,
    }
}

/// What a finished batch's operation holds besides its metadata: the created tasks,
/// nothing (every create failed), or for a delete that removed nothing, an error.
pub enum BatchResult<'a> {
    Created(&'a [(Task, TaskView)]),
    Deleted,
    Nothing,
    NoneDeleted,
}

pub fn batch_result(op: &BatchOperation) -> BatchResult<'_> {
    match (op.kind, op.state) {
        (BatchKind::Create, BatchState::Failed) => BatchResult::Nothing,
        (BatchKind::Create, _) => BatchResult::Created(&op.tasks),
        (BatchKind::Delete, BatchState::Failed) => BatchResult::NoneDeleted,
        (BatchKind::Delete, _) => BatchResult::Deleted,
    }
}

/// The error of a delete batch that removed nothing.
pub fn none_deleted() -> Status {
    Status::aborted(crate::operations::NONE_DELETED)
}

pub fn batch_state_from(kind: BatchKind, n: i32) -> Option<BatchState> {
    [BatchState::Succeeded, BatchState::PartiallySucceeded, BatchState::Failed]
        .into_iter()
        .find(|s| batch_state_number(kind, *s) == n)
}

pub fn rpc_status(s: &Status) -> m::RpcStatus {
    m::RpcStatus { code: s.code as i32, message: s.message.clone(), details: s.details.iter().map(detail).collect() }
}

/// An error detail as the `Any` Google's clients decode.
pub fn detail(d: &Detail) -> prost_types::Any {
    match d {
        Detail::ErrorInfo { reason, domain, metadata } => any(
            "google.rpc.ErrorInfo",
            &m::ErrorInfo {
                reason: reason.clone(),
                domain: domain.clone(),
                metadata: metadata.iter().cloned().collect(),
            },
        ),
        Detail::Help { links } => any(
            "google.rpc.Help",
            &m::Help {
                links: links
                    .iter()
                    .map(|(description, url)| m::HelpLink { description: description.clone(), url: url.clone() })
                    .collect(),
            },
        ),
        Detail::BadRequest { violations } => any(
            "google.rpc.BadRequest",
            &m::BadRequest {
                field_violations: violations
                    .iter()
                    .map(|(field, description)| m::FieldViolation {
                        field: field.clone(),
                        description: description.clone(),
                    })
                    .collect(),
            },
        ),
        Detail::LocalizedMessage { locale, message } => any(
            "google.rpc.LocalizedMessage",
            &m::LocalizedMessage { locale: locale.clone(), message: message.clone() },
        ),
    }
}

pub fn operation(op: &BatchOperation) -> m::Operation {
    let metadata = m::BatchMetadata {
        start_time: Some(timestamp(op.start_time)),
        end_time: Some(timestamp(op.end_time)),
        state: batch_state_number(op.kind, op.state),
        failed_requests: op.failed.iter().map(|(i, s)| (*i, rpc_status(s))).collect(),
    };
    let metadata_type = match op.kind {
        BatchKind::Create => CREATE_METADATA,
        BatchKind::Delete => DELETE_METADATA,
    };
    let (response, error) = match batch_result(op) {
        BatchResult::Created(tasks) => (
            Some(any(
                CREATE_RESPONSE,
                &m::BatchCreateTasksResponse { tasks: tasks.iter().map(|(t, v)| task(t, *v)).collect() },
            )),
            None,
        ),
        BatchResult::Deleted => (Some(any(EMPTY, &())), None),
        BatchResult::Nothing => (None, None),
        BatchResult::NoneDeleted => (None, Some(rpc_status(&none_deleted()))),
    };
    m::Operation { name: op.name.clone(), metadata: Some(any(metadata_type, &metadata)), done: true, error, response }
}

pub fn corrupt(what: &str) -> Status {
    Status::internal(format!("a stored operation is unreadable: {what}"))
}

/// Read back an operation this module wrote.
pub fn operation_from(op: m::Operation) -> Result<BatchOperation, Status> {
    let metadata = op.metadata.ok_or_else(|| corrupt("no metadata"))?;
    let kind = match metadata.type_url.strip_prefix(TYPE_PREFIX) {
        Some(CREATE_METADATA) => BatchKind::Create,
        Some(DELETE_METADATA) => BatchKind::Delete,
        _ => return Err(corrupt(&metadata.type_url)),
    };
    let meta = m::BatchMetadata::decode(metadata.value.as_slice()).map_err(|e| corrupt(&e.to_string()))?;
    let none_deleted = kind == BatchKind::Delete && op.error.is_some();
    let tasks = match (kind, op.response) {
        (BatchKind::Create, Some(r)) => m::BatchCreateTasksResponse::decode(r.value.as_slice())
            .map_err(|e| corrupt(&e.to_string()))?
            .tasks
            .into_iter()
            .map(task_from)
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let time = |t: Option<prost_types::Timestamp>| {
        t.as_ref().map(|t| timestamp_from("time", t)).transpose()?.ok_or_else(|| corrupt("no time"))
    };
    Ok(BatchOperation {
        name: op.name,
        kind,
        start_time: time(meta.start_time)?,
        end_time: time(meta.end_time)?,
        state: if none_deleted {
            BatchState::Failed
        } else {
            batch_state_from(kind, meta.state).ok_or_else(|| corrupt("state"))?
        },
        failed: meta
            .failed_requests
            .into_iter()
            .map(|(i, s)| {
                (
                    i,
                    Status::new(
                        tasklane_core::Code::from_i32(s.code).unwrap_or(tasklane_core::Code::Unknown),
                        s.message,
                    ),
                )
            })
            .collect(),
        tasks,
    })
}

pub fn attempt_from(a: m::Attempt) -> Result<Attempt, Status> {
    let time = |t: Option<prost_types::Timestamp>| t.as_ref().map(|t| timestamp_from("attempt", t)).transpose();
    Ok(Attempt {
        schedule_time: time(a.schedule_time)?,
        dispatch_time: time(a.dispatch_time)?,
        response_time: time(a.response_time)?,
        response_status: a.response_status.map(|s| ResponseStatus {
            code: tasklane_core::Code::from_i32(s.code).unwrap_or(tasklane_core::Code::Unknown),
            message: s.message,
        }),
    })
}

/// A task message this module wrote, back to core (for stored operations).
pub fn task_from(t: m::Task) -> Result<(Task, TaskView), Status> {
    let r = t.http_request.ok_or_else(|| corrupt("a task without http_request"))?;
    let auth = auth_from(&r.oidc_token, &r.oauth_token)?;
    let time = |t: Option<prost_types::Timestamp>| {
        t.as_ref().map(|t| timestamp_from("task", t)).transpose()?.ok_or_else(|| corrupt("a task time"))
    };
    let deadline = t.dispatch_deadline.as_ref().map(|d| duration_from("task", d)).transpose()?.unwrap_or(0);
    let task = Task {
        name: TaskName::parse(&t.name)?,
        http_request: HttpRequest {
            url: r.url,
            method: HttpMethod::from_i32(r.http_method).ok_or_else(|| corrupt("a task method"))?,
            headers: r.headers.into_iter().collect(),
            body: r.body,
            auth,
        },
        schedule_time: time(t.schedule_time)?,
        create_time: time(t.create_time)?,
        dispatch_deadline: std::time::Duration::from_micros(deadline.max(0) as u64),
        dispatch_count: t.dispatch_count,
        response_count: t.response_count,
        execution_count: 0,
        last_http_status: 0,
        first_attempt: t.first_attempt.map(attempt_from).transpose()?,
        last_attempt: t.last_attempt.map(attempt_from).transpose()?,
        retry_config: t.retry_config.as_ref().map(retry_spec).transpose()?.map(|r| r.resolve()).transpose()?,
        job_id: None,
        tag: None,
        env: Vec::new(),
    };
    Ok((task, view(t.view)))
}

pub fn opt_duration(field: &str, d: &Option<prost_types::Duration>) -> Result<i64, Status> {
    d.as_ref().map_or(Ok(0), |d| duration_from(field, d))
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

//! Mapping between rows and core types.

use std::time::Duration;

use rusqlite::Row;
use tasklane_core::queue::{Queue, QueueState, RateLimits};
use tasklane_core::retry::RetryConfig;
use tasklane_core::task::{Attempt, AuthToken, HttpMethod, HttpRequest, ResponseStatus, Task};
use tasklane_core::{Code, QueueName, TaskName, Timestamp};

pub const QUEUE_COLUMNS: &str = "name, state, max_dispatches_per_second, max_burst_size, max_concurrent_dispatches, \
     max_attempts, max_retry_duration_us, min_backoff_us, max_backoff_us, max_doublings, logging_sampling_ratio, purge_time";

/// The task columns shared by `tasks` and `dead_letters`, in the order `task_from_row` reads them.
pub const TASK_COLUMNS: &str = "queue, task_id, url, method, headers, body, auth_kind, auth_email, auth_param, \
     schedule_time, create_time, dispatch_deadline_us, dispatch_count, response_count, execution_count, \
     last_http_status, first_dispatch_time, last_schedule_time, last_dispatch_time, last_response_time, last_code, last_message";

fn corrupt(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("stored {what} {value:?} is not valid").into(),
    )
}

fn micros(d: Duration) -> i64 {
    tasklane_core::clock::duration_micros(d)
}

pub fn duration_from(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

pub fn queue_from_row(row: &Row<'_>) -> rusqlite::Result<Queue> {
    let name: String = row.get(0)?;
    let state: String = row.get(1)?;
    let retry_us: Option<i64> = row.get(6)?;
    Ok(Queue {
        name: QueueName::parse(&name).map_err(|_| corrupt("queue name", &name))?,
        state: QueueState::parse(&state).ok_or_else(|| corrupt("queue state", &state))?,
        rate_limits: RateLimits {
            max_dispatches_per_second: row.get(2)?,
            max_burst_size: row.get(3)?,
            max_concurrent_dispatches: row.get(4)?,
        },
        retry_config: RetryConfig {
            max_attempts: row.get(5)?,
            max_retry_duration: retry_us.map(duration_from),
            min_backoff: duration_from(row.get(7)?),
            max_backoff: duration_from(row.get(8)?),
            max_doublings: row.get(9)?,
        },
        logging_sampling_ratio: row.get(10)?,
        purge_time: row.get::<_, Option<i64>>(11)?.map(Timestamp),
    })
}

/// The settings columns of a queue, in `QUEUE_SETTINGS` order.
pub fn queue_settings(q: &Queue) -> (f64, i32, i32, i32, Option<i64>, i64, i64, i32, f64) {
    (
        q.rate_limits.max_dispatches_per_second,
        q.rate_limits.max_burst_size,
        q.rate_limits.max_concurrent_dispatches,
        q.retry_config.max_attempts,
        q.retry_config.max_retry_duration.map(micros),
        micros(q.retry_config.min_backoff),
        micros(q.retry_config.max_backoff),
        q.retry_config.max_doublings,
        q.logging_sampling_ratio,
    )
}

/// Headers are stored one `name: value` per line; sanitised values hold no CR or LF.
pub fn encode_headers(headers: &[(String, String)]) -> String {
    let mut out = String::new();
    for (n, v) in headers {
        out.push_str(n);
        out.push_str(": ");
        out.push_str(v);
        out.push('\n');
    }
    out
}

pub fn decode_headers(s: &str) -> Vec<(String, String)> {
    s.lines().filter_map(|line| line.split_once(": ").map(|(n, v)| (n.to_string(), v.to_string()))).collect()
}

pub fn auth_columns(auth: &Option<AuthToken>) -> (Option<&'static str>, Option<&str>, Option<&str>) {
    match auth {
        None => (None, None, None),
        Some(AuthToken::Oidc { service_account_email, audience }) => {
            (Some("oidc"), Some(service_account_email), Some(audience))
        }
        Some(AuthToken::OAuth { service_account_email, scope }) => {
            (Some("oauth"), Some(service_account_email), Some(scope))
        }
    }
}

pub fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let queue: String = row.get(0)?;
    let task_id: String = row.get(1)?;
    let queue_name = QueueName::parse(&queue).map_err(|_| corrupt("queue name", &queue))?;
    let name = TaskName { queue: queue_name, task: task_id };
    let method: String = row.get(3)?;
    let headers: String = row.get(4)?;
    let auth_kind: Option<String> = row.get(6)?;
    let auth_email: Option<String> = row.get(7)?;
    let auth_param: Option<String> = row.get(8)?;
    let auth = match auth_kind.as_deref() {
        None => None,
        Some("oidc") => Some(AuthToken::Oidc {
            service_account_email: auth_email.unwrap_or_default(),
            audience: auth_param.unwrap_or_default(),
        }),
        Some("oauth") => Some(AuthToken::OAuth {
            service_account_email: auth_email.unwrap_or_default(),
            scope: auth_param.unwrap_or_default(),
        }),
        Some(other) => return Err(corrupt("auth kind", other)),
    };
    let first_dispatch: Option<i64> = row.get(16)?;
    let last_schedule: Option<i64> = row.get(17)?;
    let last_dispatch: Option<i64> = row.get(18)?;
    let last_response: Option<i64> = row.get(19)?;
    let last_code: Option<i32> = row.get(20)?;
    let last_message: Option<String> = row.get(21)?;
    let last_attempt = last_dispatch.map(|dispatch| Attempt {
        schedule_time: last_schedule.map(Timestamp),
        dispatch_time: Some(Timestamp(dispatch)),
        response_time: last_response.map(Timestamp),
        response_status: last_code.map(|c| ResponseStatus {
            code: Code::from_i32(c).unwrap_or(Code::Unknown),
            message: last_message.clone().unwrap_or_default(),
        }),
    });
    Ok(Task {
        name,
        http_request: HttpRequest {
            url: row.get(2)?,
            method: HttpMethod::parse(&method).ok_or_else(|| corrupt("method", &method))?,
            headers: decode_headers(&headers),
            body: row.get(5)?,
            auth,
        },
        schedule_time: Timestamp(row.get(9)?),
        create_time: Timestamp(row.get(10)?),
        dispatch_deadline: duration_from(row.get(11)?),
        dispatch_count: row.get(12)?,
        response_count: row.get(13)?,
        execution_count: row.get(14)?,
        last_http_status: row.get::<_, i64>(15)?.clamp(0, 999) as u16,
        first_attempt: first_dispatch.map(|t| Attempt { dispatch_time: Some(Timestamp(t)), ..Attempt::default() }),
        last_attempt,
    })
}

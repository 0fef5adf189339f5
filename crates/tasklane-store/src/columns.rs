//! Rows of the store, independent of the database: the column lists every backend
//! selects, and the one mapping from a row to core types, over a small getter trait
//! that each backend implements for its own row type.

use std::time::Duration;

use serde_json::{Value, json};
use tasklane_core::queue::{Queue, QueueKind, QueueState, RateLimits};
use tasklane_core::retry::RetryConfig;
use tasklane_core::target::{EnforceMode, HttpTarget, Scheme, UriOverride};
use tasklane_core::task::{Attempt, AuthToken, HttpMethod, HttpRequest, ResponseStatus, Task};
use tasklane_core::{Code, QueueName, TaskName, Timestamp};

pub const QUEUE_COLUMNS: &str = "name, state, max_dispatches_per_second, max_burst_size, max_concurrent_dispatches, \
     max_attempts, max_retry_duration_us, min_backoff_us, max_backoff_us, max_doublings, logging_sampling_ratio, purge_time, http_target, kind";

/// The task columns shared by `tasks` and `dead_letters`, in the order `task_from` reads them.
pub const TASK_COLUMNS: &str = "queue, task_id, url, method, headers, body, auth_kind, auth_email, auth_param, \
     schedule_time, create_time, dispatch_deadline_us, dispatch_count, response_count, execution_count, \
     last_http_status, first_dispatch_time, last_schedule_time, last_dispatch_time, last_response_time, last_code, last_message, \
     retry_config, job_id, tag, env";

/// How many columns `TASK_COLUMNS` has: the index of the first column a query selects after them.
pub const TASK_COLUMN_COUNT: usize = 26;

/// Column list with a table alias: `t.queue, t.task_id, …`.
pub fn prefixed(columns: &str, alias: &str) -> String {
    columns.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// A row read from column `by` on, so the shared mappings can follow extra leading columns.
pub struct Shifted<'a, R> {
    pub row: &'a R,
    pub by: usize,
}

impl<R: Columns> Columns for Shifted<'_, R> {
    type Error = R::Error;

    fn int(&self, i: usize) -> Result<i32, R::Error> {
        self.row.int(i + self.by)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i32>, R::Error> {
        self.row.opt_int(i + self.by)
    }
    fn big(&self, i: usize) -> Result<i64, R::Error> {
        self.row.big(i + self.by)
    }
    fn opt_big(&self, i: usize) -> Result<Option<i64>, R::Error> {
        self.row.opt_big(i + self.by)
    }
    fn real(&self, i: usize) -> Result<f64, R::Error> {
        self.row.real(i + self.by)
    }
    fn text(&self, i: usize) -> Result<String, R::Error> {
        self.row.text(i + self.by)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, R::Error> {
        self.row.opt_text(i + self.by)
    }
    fn blob(&self, i: usize) -> Result<Vec<u8>, R::Error> {
        self.row.blob(i + self.by)
    }
    fn corrupt(what: &str, value: &str) -> R::Error {
        R::corrupt(what, value)
    }
}

/// Typed access to a row's columns by position.
pub trait Columns {
    type Error;
    fn int(&self, i: usize) -> Result<i32, Self::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i32>, Self::Error>;
    fn big(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_big(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    fn real(&self, i: usize) -> Result<f64, Self::Error>;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn blob(&self, i: usize) -> Result<Vec<u8>, Self::Error>;
    fn corrupt(what: &str, value: &str) -> Self::Error;
}

pub fn duration_from(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

fn micros(d: Duration) -> i64 {
    tasklane_core::clock::duration_micros(d)
}

pub fn queue_from<R: Columns>(row: &R) -> Result<Queue, R::Error> {
    let name = row.text(0)?;
    let state = row.text(1)?;
    Ok(Queue {
        name: QueueName::parse(&name).map_err(|_| R::corrupt("queue name", &name))?,
        state: QueueState::parse(&state).ok_or_else(|| R::corrupt("queue state", &state))?,
        rate_limits: RateLimits {
            max_dispatches_per_second: row.real(2)?,
            max_burst_size: row.int(3)?,
            max_concurrent_dispatches: row.int(4)?,
        },
        retry_config: RetryConfig {
            max_attempts: row.int(5)?,
            max_retry_duration: row.opt_big(6)?.map(duration_from),
            min_backoff: duration_from(row.big(7)?),
            max_backoff: duration_from(row.big(8)?),
            max_doublings: row.int(9)?,
        },
        logging_sampling_ratio: row.real(10)?,
        purge_time: row.opt_big(11)?.map(Timestamp),
        http_target: match row.opt_text(12)? {
            None => None,
            Some(text) => Some(decode_target(&text).ok_or_else(|| R::corrupt("http_target", &text))?),
        },
        kind: {
            let kind = row.text(13)?;
            QueueKind::parse(&kind).ok_or_else(|| R::corrupt("queue kind", &kind))?
        },
    })
}

/// A queue's settings columns: rate, burst, concurrency, max attempts, max retry duration,
/// min backoff, max backoff, max doublings, sampling ratio, http target.
pub type QueueSettings = (f64, i32, i32, i32, Option<i64>, i64, i64, i32, f64, Option<String>);

pub fn queue_settings(q: &Queue) -> QueueSettings {
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
        q.http_target.as_ref().map(encode_target),
    )
}

fn auth_json(auth: &Option<AuthToken>) -> Value {
    match auth {
        None => Value::Null,
        Some(AuthToken::Oidc { service_account_email, audience }) => {
            json!({"kind": "oidc", "email": service_account_email, "param": audience})
        }
        Some(AuthToken::OAuth { service_account_email, scope }) => {
            json!({"kind": "oauth", "email": service_account_email, "param": scope})
        }
    }
}

fn auth_from_json(v: &Value) -> Option<Option<AuthToken>> {
    if v.is_null() {
        return Some(None);
    }
    let email = v["email"].as_str()?.to_string();
    let param = v["param"].as_str()?.to_string();
    match v["kind"].as_str()? {
        "oidc" => Some(Some(AuthToken::Oidc { service_account_email: email, audience: param })),
        "oauth" => Some(Some(AuthToken::OAuth { service_account_email: email, scope: param })),
        _ => None,
    }
}

/// A queue's `http_target`, stored as a JSON document in one column.
pub fn encode_target(t: &HttpTarget) -> String {
    let uri = t.uri_override.as_ref().map(|u| {
        json!({
            "scheme": u.scheme.map(Scheme::as_str),
            "host": u.host,
            "port": u.port,
            "path": u.path,
            "query": u.query,
            "mode": u.mode.number(),
        })
    });
    json!({
        "uri": uri,
        "method": t.method.map(HttpMethod::as_str),
        "headers": encode_headers(&t.headers),
        "auth": auth_json(&t.auth),
    })
    .to_string()
}

pub fn decode_target(text: &str) -> Option<HttpTarget> {
    let v: Value = serde_json::from_str(text).ok()?;
    let opt_str = |v: &Value| v.as_str().map(String::from);
    let uri_override = match &v["uri"] {
        Value::Null => None,
        u => Some(UriOverride {
            scheme: match u["scheme"].as_str() {
                None => None,
                Some("unspecified") => Some(Scheme::Unspecified),
                Some("http") => Some(Scheme::Http),
                Some("https") => Some(Scheme::Https),
                Some(_) => return None,
            },
            host: opt_str(&u["host"]),
            port: u["port"].as_i64(),
            path: opt_str(&u["path"]),
            query: opt_str(&u["query"]),
            // Targets written before the mode was kept as given had only `if_not_exists`.
            mode: match u["mode"].as_i64() {
                Some(n) => EnforceMode::from_number(i32::try_from(n).ok()?).ok()?,
                None if u["if_not_exists"].as_bool()? => EnforceMode::IfNotExists,
                None => EnforceMode::Always,
            },
        }),
    };
    let method = match v["method"].as_str() {
        None => None,
        Some(m) => Some(HttpMethod::parse(m)?),
    };
    Some(HttpTarget {
        uri_override,
        method,
        headers: decode_headers(v["headers"].as_str()?),
        auth: auth_from_json(&v["auth"])?,
    })
}

/// A task's own retry config, stored as a JSON document in one column.
pub fn encode_retry(c: &RetryConfig) -> String {
    json!({
        "max_attempts": c.max_attempts,
        "max_retry_duration_us": c.max_retry_duration.map(micros),
        "min_backoff_us": micros(c.min_backoff),
        "max_backoff_us": micros(c.max_backoff),
        "max_doublings": c.max_doublings,
    })
    .to_string()
}

pub fn decode_retry(text: &str) -> Option<RetryConfig> {
    let v: Value = serde_json::from_str(text).ok()?;
    Some(RetryConfig {
        max_attempts: i32::try_from(v["max_attempts"].as_i64()?).ok()?,
        max_retry_duration: v["max_retry_duration_us"].as_i64().map(duration_from),
        min_backoff: duration_from(v["min_backoff_us"].as_i64()?),
        max_backoff: duration_from(v["max_backoff_us"].as_i64()?),
        max_doublings: i32::try_from(v["max_doublings"].as_i64()?).ok()?,
    })
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

pub fn task_from<R: Columns>(row: &R) -> Result<Task, R::Error> {
    let queue = row.text(0)?;
    let queue_name = QueueName::parse(&queue).map_err(|_| R::corrupt("queue name", &queue))?;
    let name = TaskName { queue: queue_name, task: row.text(1)? };
    let method = row.text(3)?;
    let auth_email = row.opt_text(7)?;
    let auth_param = row.opt_text(8)?;
    let auth = match row.opt_text(6)?.as_deref() {
        None => None,
        Some("oidc") => Some(AuthToken::Oidc {
            service_account_email: auth_email.unwrap_or_default(),
            audience: auth_param.unwrap_or_default(),
        }),
        Some("oauth") => Some(AuthToken::OAuth {
            service_account_email: auth_email.unwrap_or_default(),
            scope: auth_param.unwrap_or_default(),
        }),
        Some(other) => return Err(R::corrupt("auth kind", other)),
    };
    let first_dispatch = row.opt_big(16)?;
    let last_schedule = row.opt_big(17)?;
    let last_dispatch = row.opt_big(18)?;
    let last_response = row.opt_big(19)?;
    let last_code = row.opt_int(20)?;
    let last_message = row.opt_text(21)?;
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
            url: row.text(2)?,
            method: HttpMethod::parse(&method).ok_or_else(|| R::corrupt("method", &method))?,
            headers: decode_headers(&row.text(4)?),
            body: row.blob(5)?,
            auth,
        },
        schedule_time: Timestamp(row.big(9)?),
        create_time: Timestamp(row.big(10)?),
        dispatch_deadline: duration_from(row.big(11)?),
        dispatch_count: row.int(12)?,
        response_count: row.int(13)?,
        execution_count: row.int(14)?,
        last_http_status: row.int(15)?.clamp(0, 999) as u16,
        first_attempt: first_dispatch.map(|t| Attempt { dispatch_time: Some(Timestamp(t)), ..Attempt::default() }),
        last_attempt,
        retry_config: match row.opt_text(22)? {
            None => None,
            Some(text) => Some(decode_retry(&text).ok_or_else(|| R::corrupt("retry_config", &text))?),
        },
        job_id: row.opt_text(23)?,
        tag: row.opt_text(24)?,
        env: decode_headers(&row.opt_text(25)?.unwrap_or_default()),
    })
}

/// Append one attempt to a task's log (JSON lines); the log stops growing at 64 KB.
/// `$3` is the line to append.
pub const ATTEMPT_LOG_APPEND: &str = "attempts = CASE WHEN length(coalesce(attempts, '')) < 65536 \
     THEN coalesce(attempts, '') || $LINE ELSE attempts END";

/// The longest body excerpt kept per attempt in the log.
pub const LOG_EXCERPT: usize = 512;

pub fn attempt_line(a: &crate::AttemptResult) -> String {
    let mut excerpt = a.body_excerpt.clone();
    if excerpt.len() > LOG_EXCERPT {
        let mut end = LOG_EXCERPT;
        while !excerpt.is_char_boundary(end) {
            end -= 1;
        }
        excerpt.truncate(end);
    }
    let mut line = json!({
        "dispatch_time": a.dispatch_time.0,
        "response_time": a.response_time.0,
        "http_status": a.http_status,
        "code": a.status.code as i32,
        "message": a.status.message,
        "body": excerpt,
    })
    .to_string();
    line.push('\n');
    line
}

pub fn attempt_log(text: Option<&str>) -> Vec<crate::AttemptLog> {
    text.unwrap_or("")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| crate::AttemptLog {
            dispatch_time: Timestamp(v["dispatch_time"].as_i64().unwrap_or(0)),
            response_time: Timestamp(v["response_time"].as_i64().unwrap_or(0)),
            http_status: v["http_status"].as_u64().unwrap_or(0).min(999) as u16,
            code: v["code"].as_i64().and_then(|c| Code::from_i32(c as i32)).unwrap_or(Code::Unknown),
            message: v["message"].as_str().unwrap_or("").to_string(),
            body_excerpt: v["body"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

/// A pull task's environment, stored like headers (one `NAME: value` per line; values hold no newline).
pub fn encode_env(env: &[(String, String)]) -> Option<String> {
    (!env.is_empty()).then(|| encode_headers(env))
}

/// The `SET` clause that leases a task at `now` until `now + length` (both SQL expressions;
/// `alias` qualifies the task's own columns): a new lease id, one more dispatch, and the
/// attempt's times. Dispatcher claims and pull leases alike.
pub fn lease_set(now: &str, length: &str, alias: &str) -> String {
    let a = if alias.is_empty() { String::new() } else { format!("{alias}.") };
    format!(
        "state = 'leased', lease_id = {a}lease_id + 1, due_at = {now} + {length}, \
         dispatch_count = {a}dispatch_count + 1, first_dispatch_time = coalesce({a}first_dispatch_time, {now}), \
         last_schedule_time = {a}schedule_time, last_dispatch_time = {now}, last_response_time = NULL, \
         last_code = NULL, last_message = NULL"
    )
}

/// A dispatcher's lease lasts the task's dispatch deadline and `grace` more.
pub fn push_lease_length(grace: &str, alias: &str) -> String {
    let a = if alias.is_empty() { String::new() } else { format!("{alias}.") };
    format!("{a}dispatch_deadline_us + {grace}")
}

/// The order claims and pull leases take due tasks in, on both stores: earliest due first,
/// then the order the tasks were made.
pub const CLAIM_ORDER: &str = "ORDER BY due_at, id";

/// The condition of a claim on queue `$1` at `$2` by node `{owner}` (a null node: an
/// embedded store, which has no owners): that node holds the queue's ownership lease.
pub fn claim_owned(owner: &str) -> String {
    format!(
        "(CAST({owner} AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM queue_owners o \
         WHERE o.queue = $1 AND o.node_id = {owner} AND o.lease_until > $2))"
    )
}

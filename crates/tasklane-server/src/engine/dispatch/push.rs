//! One HTTP push attempt: build the request Cloud Tasks would send, send it with the
//! task's dispatch deadline, and classify what came back. Never fails: every worker
//! behaviour (hang, reset, garbage, redirect loop) becomes an attempt result.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tasklane_core::header::USER_AGENT;
use tasklane_core::{HttpRequest, Task, Timestamp};

/// Longest part of a worker's response body that is read (and kept for inspection).
pub const RESPONSE_EXCERPT: usize = 4 * 1024;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(720 * 3600);

/// What one push came to: core's `Answer`, which `decide` turns into an outcome.
pub type PushResult = tasklane_core::outcome::Answer;

const QUEUE_NAME: HeaderName = HeaderName::from_static("x-cloudtasks-queuename");
const TASK_NAME: HeaderName = HeaderName::from_static("x-cloudtasks-taskname");
const RETRY_COUNT: HeaderName = HeaderName::from_static("x-cloudtasks-taskretrycount");
const EXECUTION_COUNT: HeaderName = HeaderName::from_static("x-cloudtasks-taskexecutioncount");
const ETA: HeaderName = HeaderName::from_static("x-cloudtasks-tasketa");
const PREVIOUS_RESPONSE: HeaderName = HeaderName::from_static("x-cloudtasks-taskpreviousresponse");
const RETRY_REASON: HeaderName = HeaderName::from_static("x-cloudtasks-taskretryreason");

/// The headers of one dispatch of `task` as `request` (the task's request after its
/// queue's overrides): the request's own, a signed token if it has one, those Cloud
/// Tasks adds, and `extra` (tasklane's own). Built straight into the map the client
/// sends: names are static where they can be, and each value is one allocation at most.
/// A header of the task's that is not valid HTTP is left out.
pub fn dispatch_headers(
    task: &Task,
    request: &HttpRequest,
    bearer: Option<&str>,
    extra: &[(String, String)],
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(request.headers.len() + extra.len() + 10);
    // tasklane's own headers come only from `extra`, and Cloud Tasks' only from here: a
    // task may store `X-CloudTasks-TaskName`, as the real service lets it, but never send it.
    // The stored `User-Agent` is always Cloud Tasks' own, set below: skip it here.
    let own = request
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("user-agent") && !tasklane_core::header::is_dispatcher_header(n));
    for (n, v) in own.chain(extra) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
            h.insert(name, value);
        }
    }
    if !request.body.is_empty() && !h.contains_key(CONTENT_TYPE) {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    }
    if let Some(token) = bearer
        && let Ok(value) = HeaderValue::try_from(format!("Bearer {token}"))
    {
        h.insert(AUTHORIZATION, value);
    }
    h.insert(reqwest::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    let text = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
    h.insert(QUEUE_NAME, text(&task.name.queue.queue));
    h.insert(TASK_NAME, text(&task.name.task));
    // dispatch_count already includes this attempt.
    h.insert(RETRY_COUNT, HeaderValue::from((task.dispatch_count - 1).max(0)));
    h.insert(EXECUTION_COUNT, HeaderValue::from(task.execution_count));
    let eta = eta_header(task.schedule_time);
    h.insert(ETA, HeaderValue::try_from(eta).unwrap_or_else(|_| HeaderValue::from_static("")));
    if task.dispatch_count > 1 {
        h.insert(PREVIOUS_RESPONSE, HeaderValue::from(task.last_http_status));
        h.insert(RETRY_REASON, retry_reason(task));
    }
    h
}

/// `X-CloudTasks-TaskETA`: seconds since the epoch with the fraction's trailing zeros
/// trimmed, as the real service writes it (`1700000000.12`).
fn eta_header(t: Timestamp) -> String {
    let mut eta = format!("{}.{:06}", t.0.div_euclid(1_000_000), t.0.rem_euclid(1_000_000));
    while eta.ends_with('0') {
        eta.pop();
    }
    eta.trim_end_matches('.').to_string()
}

/// Why the task is being tried again: its last attempt's answer. (A lease clears the last
/// attempt's status, as the real service's dispatched task shows none, so the HTTP status
/// kept beside it says; 0 is a worker that could not be reached.)
fn retry_reason(task: &Task) -> HeaderValue {
    let reason = match task.last_http_status {
        0 => "The worker could not be reached".to_string(),
        status => status_message(status),
    };
    HeaderValue::try_from(reason).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `HTTP status code 500 Internal Server Error`: how an attempt's answer is recorded.
fn status_message(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    format!("HTTP status code {status} {reason}").trim_end().to_string()
}

/// Task URLs parsed once: a queue's tasks mostly go to a few URLs, and parsing one
/// (host, IDNA, percent-encoding) cost more than building the rest of the request.
pub struct ParsedUrls {
    parsed: Mutex<HashMap<String, reqwest::Url>>,
}

/// URLs remembered before the cache starts over.
const MAX_PARSED_URLS: usize = 4096;

impl ParsedUrls {
    pub fn new() -> Self {
        ParsedUrls { parsed: Mutex::new(HashMap::new()) }
    }

    /// `url` parsed, or `None` if it does not parse (the client then reports why).
    pub fn get(&self, url: &str) -> Option<reqwest::Url> {
        if let Ok(parsed) = self.parsed.lock()
            && let Some(u) = parsed.get(url)
        {
            return Some(u.clone());
        }
        let u = reqwest::Url::parse(url).ok()?;
        if let Ok(mut parsed) = self.parsed.lock() {
            if parsed.len() >= MAX_PARSED_URLS {
                parsed.clear();
            }
            parsed.insert(url.to_string(), u.clone());
        }
        Some(u)
    }
}

impl Default for ParsedUrls {
    fn default() -> Self {
        ParsedUrls::new()
    }
}

/// `Retry-After` as seconds or as an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let date = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let at = Timestamp::from_micros(i64::try_from(date.unix_timestamp_nanos() / 1000).ok()?);
    Some(at.since(now).min(MAX_RETRY_AFTER))
}

/// One attempt to send: the task, the request to send for it, and its bearer token.
pub struct Attempt<'a> {
    pub task: &'a Task,
    pub request: &'a HttpRequest,
    pub bearer: Option<&'a str>,
    /// tasklane's own headers (a job's id and token).
    pub extra: &'a [(String, String)],
    /// `request.url` parsed, when it parses.
    pub url: Option<reqwest::Url>,
    pub egress: &'a tasklane_core::egress::EgressPolicy,
}

/// Send one attempt. `timeout` is the task's deadline, or less when its lease ends sooner.
pub async fn push(
    client: &reqwest::Client,
    attempt: Attempt<'_>,
    timeout: Duration,
    now: impl Fn() -> Timestamp,
) -> PushResult {
    let r = attempt.request;
    if !attempt.egress.open {
        let host = attempt.url.as_ref().and_then(|u| u.host_str().map(str::to_string));
        if let Some(Err(why)) = host.map(|h| attempt.egress.check_host(&h)) {
            return PushResult {
                http_status: 0,
                responded: false,
                retry_after: None,
                message: format!("not sent: egress policy: {why}"),
                excerpt: String::new(),
            };
        }
    }
    if !r.body.is_empty() && !r.method.allows_body() {
        // A queue's method override without a body (GET) over a task with one: the real
        // service does not send such a request, and the attempt fails.
        return PushResult::no_answer(
            0,
            format!("not sent: a {} request cannot carry the task's body", r.method.as_str()),
        );
    }
    let method = reqwest::Method::from_bytes(r.method.as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
    let headers = dispatch_headers(attempt.task, r, attempt.bearer, attempt.extra);
    let request = match attempt.url {
        Some(url) => client.request(method, url),
        None => client.request(method, &r.url),
    };
    let mut request = request.headers(headers).timeout(timeout);
    if !r.body.is_empty() {
        request = request.body(r.body.clone());
    }
    let response = match request.send().await {
        Ok(resp) => resp,
        Err(e) => return failure(&e),
    };
    let status = response.status().as_u16();
    let retry_after = if status == 429 || status == 503 {
        response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now()))
    } else {
        None
    };
    let mut response = response;
    let mut excerpt = Vec::new();
    // Read the body to its end, keeping its start; the deadline still applies while
    // reading. A body that stops short of its declared length (the worker died mid-answer)
    // is a failed attempt, whatever the status said.
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_EXCERPT.saturating_sub(excerpt.len());
                excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => return failure(&e),
        }
    }
    PushResult {
        http_status: status,
        responded: true,
        retry_after,
        message: tasklane_core::outcome::attempt_code(status, true).attempt_message(status),
        excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
    }
}

fn failure(e: &reqwest::Error) -> PushResult {
    if e.is_timeout() {
        return PushResult::no_answer(504, "The worker did not answer within the dispatch deadline".into());
    }
    let what = if e.is_redirect() {
        "a redirect was not followed".to_string()
    } else if e.is_connect() {
        "could not connect to the worker".to_string()
    } else {
        "the worker's response could not be read".to_string()
    };
    let mut detail = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        // tasklane's own refusal keeps its own words (there is no Cloud Tasks text for it).
        if let Some(refused) = s.downcast_ref::<crate::egress::EgressRefused>() {
            let why = if e.is_redirect() {
                format!("a redirect was not followed: {refused}")
            } else {
                format!("not sent: {refused}")
            };
            return PushResult { message: why.clone(), ..PushResult::no_answer(0, why) };
        }
        detail = s.to_string();
        source = s.source();
    }
    PushResult::no_answer(0, if detail.is_empty() { what } else { format!("{what}: {detail}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasklane_core::{QueueName, TaskSpec};

    fn task() -> Task {
        let q = QueueName::parse("projects/p/locations/l/queues/my-queue").unwrap();
        TaskSpec {
            name: Some(format!("{q}/tasks/job-7")),
            url: "http://h/".into(),
            body: b"{}".to_vec(),
            // A task may store a Cloud Tasks header, but the worker gets only the dispatcher's.
            headers: vec![("X-App".into(), "1".into()), ("X-CloudTasks-TaskRetryReason".into(), "forged".into())],
            schedule_time: Some(Timestamp(1_700_000_000_250_000)),
            ..Default::default()
        }
        .validate(&q, Timestamp(1_699_999_000_000_000), || "x".into())
        .unwrap()
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name.to_ascii_lowercase()).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn first_attempt_headers() {
        let mut t = task();
        t.dispatch_count = 1;
        let h = dispatch_headers(&t, &t.http_request, None, &[]);
        assert_eq!(get(&h, "X-App"), Some("1"));
        assert_eq!(get(&h, "Content-Type"), Some("application/octet-stream"));
        assert_eq!(get(&h, "User-Agent"), Some("Google-Cloud-Tasks"));
        assert_eq!(get(&h, "X-CloudTasks-QueueName"), Some("my-queue"));
        assert_eq!(get(&h, "X-CloudTasks-TaskName"), Some("job-7"));
        assert_eq!(get(&h, "X-CloudTasks-TaskRetryCount"), Some("0"));
        assert_eq!(get(&h, "X-CloudTasks-TaskExecutionCount"), Some("0"));
        assert_eq!(get(&h, "X-CloudTasks-TaskETA"), Some("1700000000.25"));
        assert_eq!(eta_header(Timestamp(1_700_000_000_123_456)), "1700000000.123456");
        assert_eq!(eta_header(Timestamp::from_secs(1_700_000_000)), "1700000000");
        assert_eq!(get(&h, "X-CloudTasks-TaskPreviousResponse"), None);
        assert_eq!(get(&h, "X-CloudTasks-TaskRetryReason"), None);
    }

    #[test]
    fn retry_headers() {
        let mut t = task();
        t.dispatch_count = 3;
        t.execution_count = 1;
        t.last_http_status = 504;
        t.http_request.headers.push(("content-type".into(), "application/json".into()));
        let h = dispatch_headers(&t, &t.http_request, None, &[]);
        assert_eq!(get(&h, "Content-Type"), Some("application/json"));
        assert_eq!(get(&h, "X-CloudTasks-TaskRetryCount"), Some("2"));
        assert_eq!(get(&h, "X-CloudTasks-TaskExecutionCount"), Some("1"));
        assert_eq!(get(&h, "X-CloudTasks-TaskPreviousResponse"), Some("504"));
        assert_eq!(get(&h, "X-CloudTasks-TaskRetryReason"), Some("HTTP status code 504 Gateway Timeout"));
        t.last_http_status = 0;
        let h = dispatch_headers(&t, &t.http_request, None, &[]);
        assert_eq!(get(&h, "X-CloudTasks-TaskRetryReason"), Some("The worker could not be reached"));
    }

    #[test]
    fn retry_after_forms() {
        let now = Timestamp::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:40:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999999", now), Some(MAX_RETRY_AFTER));
    }
}

//! Tasks: the HTTP request they carry, their attempts, and the validation of a new task.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::header;
use crate::name::{QueueName, TaskName};
use crate::retry::{RetryConfig, RetrySpec};
use crate::status::{Code, Status};

pub const MAX_URL_LEN: usize = 2083;
pub const MAX_TASK_SIZE: usize = 1024 * 1024;
pub const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(720 * 3600);
pub const DEFAULT_DISPATCH_DEADLINE: Duration = Duration::from_secs(600);
pub const MIN_DISPATCH_DEADLINE: Duration = Duration::from_secs(15);
pub const MAX_DISPATCH_DEADLINE: Duration = Duration::from_secs(1800);

/// google.cloud.tasks.v2.HttpMethod, with the published numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Post = 1,
    Get = 2,
    Head = 3,
    Put = 4,
    Delete = 5,
    Patch = 6,
    Options = 7,
}

impl HttpMethod {
    pub const ALL: [HttpMethod; 7] = [
        HttpMethod::Post,
        HttpMethod::Get,
        HttpMethod::Head,
        HttpMethod::Put,
        HttpMethod::Delete,
        HttpMethod::Patch,
        HttpMethod::Options,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Options => "OPTIONS",
        }
    }

    pub fn parse(s: &str) -> Option<HttpMethod> {
        HttpMethod::ALL.into_iter().find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    pub fn from_i32(n: i32) -> Option<HttpMethod> {
        HttpMethod::ALL.into_iter().find(|m| *m as i32 == n)
    }

    pub fn allows_body(self) -> bool {
        matches!(self, HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch)
    }
}

/// How the dispatcher authenticates to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthToken {
    Oidc { service_account_email: String, audience: String },
    OAuth { service_account_email: String, scope: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    pub method: HttpMethod,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub auth: Option<AuthToken>,
}

/// The outcome recorded for an attempt, as `google.rpc.Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseStatus {
    pub code: Code,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attempt {
    pub schedule_time: Option<Timestamp>,
    pub dispatch_time: Option<Timestamp>,
    pub response_time: Option<Timestamp>,
    pub response_status: Option<ResponseStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub name: TaskName,
    pub http_request: HttpRequest,
    pub schedule_time: Timestamp,
    pub create_time: Timestamp,
    pub dispatch_deadline: Duration,
    pub dispatch_count: i32,
    pub response_count: i32,
    /// Responses that were not 5xx: `X-CloudTasks-TaskExecutionCount`.
    pub execution_count: i32,
    /// The worker's HTTP status of the last attempt (504 after a deadline, 0 if unreachable).
    pub last_http_status: u16,
    /// Only `dispatch_time` is kept for the first attempt, as the real service does.
    pub first_attempt: Option<Attempt>,
    pub last_attempt: Option<Attempt>,
    /// The task's own retry settings, which replace its queue's.
    pub retry_config: Option<RetryConfig>,
    /// The job the task belongs to, if it was created through the jobs API.
    pub job_id: Option<String>,
    /// A pull task's tag, which lease requests may filter on.
    pub tag: Option<String>,
    /// A pull task's environment for the command that runs it (`tasklane work`).
    pub env: Vec<(String, String)>,
}

/// Which fields a task read returns; BASIC leaves out the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskView {
    #[default]
    Basic,
    Full,
}

impl Task {
    pub fn with_view(mut self, view: TaskView) -> Task {
        if view == TaskView::Basic {
            self.http_request.body = Vec::new();
        }
        self
    }

    /// The approximate stored size, checked against `MAX_TASK_SIZE`.
    pub fn size(&self) -> usize {
        let r = &self.http_request;
        self.name.to_string().len()
            + r.url.len()
            + r.body.len()
            + r.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>()
    }
}

/// A new task as a caller wrote it, before validation.
#[derive(Debug, Clone, Default)]
pub struct TaskSpec {
    /// The full task name, if the caller chose one.
    pub name: Option<String>,
    pub url: String,
    pub method: Option<HttpMethod>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub auth: Option<AuthToken>,
    pub schedule_time: Option<Timestamp>,
    /// Signed microseconds, so negative input gets a clear message.
    pub dispatch_deadline_micros: Option<i64>,
    pub retry: Option<RetrySpec>,
}

fn validate_url(url: &str) -> Result<(), Status> {
    if url.is_empty() {
        return Err(Status::invalid_argument("http_request.url is required"));
    }
    if url.len() > MAX_URL_LEN {
        return Err(Status::invalid_argument(format!(
            "http_request.url is {} characters long; it may be at most {MAX_URL_LEN}",
            url.len()
        )));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| Status::invalid_argument("http_request.url must start with 'http://' or 'https://'"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err(Status::invalid_argument(format!("http_request.url \"{url}\" has no host")));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Status::invalid_argument(
            "http_request.url must not contain spaces or control characters; percent-encode them",
        ));
    }
    // The parser the dispatcher uses: a URL accepted here is one every attempt can send to.
    url::Url::parse(url)
        .map_err(|e| Status::invalid_argument(format!("http_request.url \"{url}\" is not a valid URL: {e}")))?;
    Ok(())
}

impl TaskSpec {
    /// Validate a new task for `queue`. `generated_id` names the task when the caller did not.
    pub fn validate(
        self,
        queue: &QueueName,
        now: Timestamp,
        generated_id: impl FnOnce() -> String,
    ) -> Result<Task, Status> {
        let name = match &self.name {
            Some(n) if !n.is_empty() => {
                let name = TaskName::parse(n)?;
                if &name.queue != queue {
                    return Err(Status::invalid_argument(format!(
                        "The task name \"{n}\" does not belong to the queue \"{queue}\" named as its parent"
                    )));
                }
                name
            }
            _ => queue.task(generated_id())?,
        };
        validate_url(&self.url)?;
        let method = self.method.unwrap_or(HttpMethod::Post);
        if !self.body.is_empty() && !method.allows_body() {
            return Err(Status::invalid_argument(format!(
                "http_request.body can only be set for POST, PUT or PATCH requests, not {}",
                method.as_str()
            )));
        }
        let headers = header::sanitize(self.headers).map_err(Status::invalid_argument)?;
        if let Some(AuthToken::Oidc { service_account_email, .. } | AuthToken::OAuth { service_account_email, .. }) =
            &self.auth
            && service_account_email.is_empty()
        {
            return Err(Status::invalid_argument("service_account_email is required for an OIDC or OAuth token"));
        }
        let auth = match self.auth {
            Some(AuthToken::Oidc { service_account_email, audience }) if audience.is_empty() => {
                Some(AuthToken::Oidc { service_account_email, audience: self.url.clone() })
            }
            other => other,
        };
        let schedule_time = match self.schedule_time {
            Some(t) if t > now => {
                if t.since(now) > MAX_SCHEDULE_AHEAD {
                    return Err(Status::invalid_argument(
                        "schedule_time is more than 720 hours (30 days) in the future",
                    ));
                }
                t
            }
            _ => now,
        };
        let dispatch_deadline = match self.dispatch_deadline_micros {
            None | Some(0) => DEFAULT_DISPATCH_DEADLINE,
            Some(m) => {
                let d = Duration::from_micros(m.max(0) as u64);
                if m < 0 || d < MIN_DISPATCH_DEADLINE || d > MAX_DISPATCH_DEADLINE {
                    return Err(Status::invalid_argument(
                        "dispatch_deadline must be between 15 seconds and 30 minutes",
                    ));
                }
                d
            }
        };
        let task = Task {
            name,
            http_request: HttpRequest { url: self.url, method, headers, body: self.body, auth },
            schedule_time,
            create_time: now,
            dispatch_deadline,
            dispatch_count: 0,
            response_count: 0,
            execution_count: 0,
            last_http_status: 0,
            first_attempt: None,
            last_attempt: None,
            retry_config: self.retry.as_ref().map(RetrySpec::resolve).transpose()?,
            job_id: None,
            tag: None,
            env: Vec::new(),
        };
        let size = task.size();
        if size > MAX_TASK_SIZE {
            return Err(Status::invalid_argument(format!(
                "Task size too large: the task is {size} bytes and may be at most {MAX_TASK_SIZE} bytes"
            )));
        }
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueName {
        QueueName::parse("projects/p/locations/l/queues/q").unwrap()
    }

    fn spec(url: &str) -> TaskSpec {
        TaskSpec { url: url.to_string(), ..Default::default() }
    }

    fn now() -> Timestamp {
        Timestamp::from_secs(1_700_000_000)
    }

    fn check_err(spec: TaskSpec, needle: &str) {
        let err = spec.validate(&queue(), now(), || "1".into()).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert!(err.message.contains(needle), "expected {needle:?} in {:?}", err.message);
    }

    #[test]
    fn defaults_of_a_new_task() {
        let t = spec("http://127.0.0.1:9000/work").validate(&queue(), now(), || "42".into()).unwrap();
        assert_eq!(t.name.to_string(), "projects/p/locations/l/queues/q/tasks/42");
        assert_eq!(t.http_request.method, HttpMethod::Post);
        assert_eq!(t.schedule_time, now());
        assert_eq!(t.dispatch_deadline, Duration::from_secs(600));
        assert_eq!(t.dispatch_count, 0);
    }

    #[test]
    fn url_rules() {
        check_err(spec(""), "url is required");
        check_err(spec("ftp://x/y"), "must start with 'http://' or 'https://'");
        check_err(spec("http:///path"), "has no host");
        check_err(spec("http://a b/"), "must not contain spaces");
        check_err(spec(&format!("https://h/{}", "a".repeat(MAX_URL_LEN))), "at most 2083");
        check_err(spec("http://[::1"), "is not a valid URL: invalid IPv6 address");
        check_err(spec("http://127.0.0.1:99999/"), "is not a valid URL: invalid port number");
        check_err(spec("http://%zz/"), "is not a valid URL");
        check_err(spec("http://exa mple/"), "must not contain spaces");
        assert!(spec("https://user@host:8443/p?q=1").validate(&queue(), now(), || "1".into()).is_ok());
        assert!(spec("http://[::1]:65535/").validate(&queue(), now(), || "1".into()).is_ok());
    }

    #[test]
    fn body_only_with_post_put_patch() {
        for method in HttpMethod::ALL {
            let s = TaskSpec { method: Some(method), body: b"x".to_vec(), ..spec("http://h/") };
            let r = s.validate(&queue(), now(), || "1".into());
            assert_eq!(r.is_ok(), method.allows_body(), "{method:?}");
        }
        check_err(TaskSpec { method: Some(HttpMethod::Get), body: b"x".to_vec(), ..spec("http://h/") }, "not GET");
    }

    #[test]
    fn schedule_time_rules() {
        let past = TaskSpec { schedule_time: Some(Timestamp::from_secs(5)), ..spec("http://h/") };
        assert_eq!(past.validate(&queue(), now(), || "1".into()).unwrap().schedule_time, now());
        let ahead = now().saturating_add(MAX_SCHEDULE_AHEAD);
        let edge = TaskSpec { schedule_time: Some(ahead), ..spec("http://h/") };
        assert_eq!(edge.validate(&queue(), now(), || "1".into()).unwrap().schedule_time, ahead);
        let too_far =
            TaskSpec { schedule_time: Some(ahead.saturating_add(Duration::from_secs(1))), ..spec("http://h/") };
        check_err(too_far, "720 hours");
    }

    #[test]
    fn dispatch_deadline_rules() {
        let with = |micros: i64| TaskSpec { dispatch_deadline_micros: Some(micros), ..spec("http://h/") };
        assert_eq!(
            with(15_000_000).validate(&queue(), now(), || "1".into()).unwrap().dispatch_deadline,
            Duration::from_secs(15)
        );
        assert_eq!(
            with(1_800_000_000).validate(&queue(), now(), || "1".into()).unwrap().dispatch_deadline,
            Duration::from_secs(1800)
        );
        check_err(with(14_999_999), "between 15 seconds and 30 minutes");
        check_err(with(1_800_000_001), "between 15 seconds and 30 minutes");
        check_err(with(-1), "between 15 seconds and 30 minutes");
    }

    #[test]
    fn size_and_names() {
        let big = TaskSpec { body: vec![b'x'; MAX_TASK_SIZE + 1], ..spec("http://h/") };
        check_err(big, "Task size too large");
        let other = TaskSpec { name: Some("projects/p/locations/l/queues/other/tasks/t".into()), ..spec("http://h/") };
        check_err(other, "does not belong to the queue");
        let bad = TaskSpec { name: Some("projects/p/locations/l/queues/q/tasks/a.b".into()), ..spec("http://h/") };
        check_err(bad, "Invalid task name");
        let named = TaskSpec { name: Some("projects/p/locations/l/queues/q/tasks/job_1".into()), ..spec("http://h/") };
        assert_eq!(named.validate(&queue(), now(), || "1".into()).unwrap().name.task, "job_1");
    }

    #[test]
    fn oidc_audience_defaults_to_url() {
        let s = TaskSpec {
            auth: Some(AuthToken::Oidc { service_account_email: "sa@p.iam".into(), audience: String::new() }),
            ..spec("https://worker.example/run")
        };
        let t = s.validate(&queue(), now(), || "1".into()).unwrap();
        assert_eq!(
            t.http_request.auth,
            Some(AuthToken::Oidc {
                service_account_email: "sa@p.iam".into(),
                audience: "https://worker.example/run".into()
            })
        );
    }

    #[test]
    fn basic_view_drops_the_body() {
        let s = TaskSpec { body: b"payload".to_vec(), ..spec("http://h/") };
        let t = s.validate(&queue(), now(), || "1".into()).unwrap();
        assert_eq!(t.clone().with_view(TaskView::Full).http_request.body, b"payload");
        assert!(t.with_view(TaskView::Basic).http_request.body.is_empty());
    }
}

pub const MAX_TAG_LEN: usize = 500;
pub const MAX_ENV_VARS: usize = 64;

/// A new pull task as a caller wrote it: a payload for a worker that leases it.
#[derive(Debug, Clone, Default)]
pub struct PullSpec {
    pub name: Option<String>,
    pub payload: Vec<u8>,
    pub tag: Option<String>,
    pub env: Vec<(String, String)>,
    pub schedule_time: Option<Timestamp>,
}

fn env_name_ok(k: &str) -> bool {
    let mut bytes = k.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && k.len() <= 128
}

impl PullSpec {
    /// Validate a new pull task for `queue`; `generated_id` names it when the caller did not.
    pub fn validate(
        self,
        queue: &QueueName,
        now: Timestamp,
        generated_id: impl FnOnce() -> String,
    ) -> Result<Task, Status> {
        if let Some(tag) = &self.tag
            && (tag.is_empty() || tag.len() > MAX_TAG_LEN)
        {
            return Err(Status::invalid_argument(format!("tag must be 1 to {MAX_TAG_LEN} bytes")));
        }
        if self.env.len() > MAX_ENV_VARS {
            return Err(Status::invalid_argument(format!("env may have at most {MAX_ENV_VARS} variables")));
        }
        if let Some((k, _)) = self.env.iter().find(|(k, _)| !env_name_ok(k)) {
            return Err(Status::invalid_argument(format!(
                "env variable \"{k}\" must be letters, digits and '_', not starting with a digit"
            )));
        }
        if let Some((k, _)) = self.env.iter().find(|(k, _)| k.starts_with("TASKLANE_")) {
            return Err(Status::invalid_argument(format!("env variable \"{k}\": TASKLANE_ names are set by tasklane")));
        }
        if self.env.iter().any(|(_, v)| v.contains(['\0', '\n', '\r'])) {
            return Err(Status::invalid_argument("env values must not contain line breaks or NUL characters"));
        }
        // The shared task rules (name, schedule, size) apply; a pull task has no URL.
        let mut task = TaskSpec {
            name: self.name,
            url: "http://pull.invalid/".into(),
            body: self.payload,
            schedule_time: self.schedule_time,
            ..TaskSpec::default()
        }
        .validate(queue, now, generated_id)?;
        task.http_request.url = String::new();
        task.tag = self.tag;
        task.env = self.env;
        Ok(task)
    }
}

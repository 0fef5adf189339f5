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

impl AuthToken {
    /// The token as the real service completes it for a request to `url`: an OIDC token
    /// without an audience gets the URL, an OAuth token without a scope `cloud-platform`.
    pub fn with_defaults(self, url: &str) -> AuthToken {
        match self {
            AuthToken::Oidc { service_account_email, audience } if audience.is_empty() => {
                AuthToken::Oidc { service_account_email, audience: url.to_string() }
            }
            AuthToken::OAuth { service_account_email, scope } if scope.is_empty() => {
                AuthToken::OAuth { service_account_email, scope: DEFAULT_OAUTH_SCOPE.to_string() }
            }
            other => other,
        }
    }
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

    /// The approximate stored size, checked against `MAX_TASK_SIZE`: the name, URL, body
    /// and headers, and what the real service charges for the other fields (measured: 53
    /// bytes beyond its `User-Agent` header).
    pub fn size(&self) -> usize {
        const OTHER_FIELDS: usize = 53;
        let r = &self.http_request;
        OTHER_FIELDS
            + self.name.to_string().len()
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

/// The scope an OAuth token gets when it names none, as the real service stores it.
pub const DEFAULT_OAUTH_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The texts the real service answers a bad new task with.
pub mod texts {
    pub const PAYLOAD_NOT_SET: &str = "Task.payload_type is not set.";
    /// The same fault in a `BatchCreateTasks` entry.
    pub const BATCH_PAYLOAD_NOT_SET: &str = "Payload type must be set.";
    pub const URL_REQUIRED: &str = "HttpRequest.url is required.";
    pub const URL_SCHEME: &str = "HttpTarget.url must start with 'http://' or 'https://'.";
    pub const BODY_METHOD: &str = "Body can only be set if the http_method is POST, PUT, or PATCH.";
    pub const DEADLINE_RANGE: &str = "Task.dispatchDeadline must be between [15s, 30m].";
    pub const EMAIL_REQUIRED: &str = "service_account_email must be set.";
    pub const OAUTH_HOST: &str =
        "Invalid url for HttpRequest.oauth_token. The hostname in the url must end with \".googleapis.com\"";
    pub const TOO_LARGE: &str = "Task size too large";
    /// tasklane's own: it serves HTTP tasks only.
    pub const APP_ENGINE_UNSUPPORTED: &str =
        "App Engine tasks are not supported by tasklane; use http_request with the worker's URL";
    /// tasklane's own: the two tokens are one field (a oneof) in the API.
    pub const BOTH_TOKENS: &str = "http_request may have an oidc_token or an oauth_token, not both";
    /// Google's front end's answer for a value it cannot take, without saying which.
    pub const INVALID_ARGUMENT: &str = "Request contains an invalid argument.";
}

/// Whether `email` looks like an address: one `@` with text on both sides.
fn valid_email(email: &str) -> bool {
    matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
}

/// Check a token's service account, as both a task and a queue are checked.
pub fn check_token_email(auth: Option<&AuthToken>) -> Result<(), Status> {
    if let Some(AuthToken::Oidc { service_account_email, .. } | AuthToken::OAuth { service_account_email, .. }) = auth {
        if service_account_email.is_empty() {
            return Err(Status::invalid_argument(texts::EMAIL_REQUIRED));
        }
        if !valid_email(service_account_email) {
            return Err(Status::invalid_argument(texts::INVALID_ARGUMENT));
        }
    }
    Ok(())
}

/// An OAuth token is only sent to Google APIs: the URL's host must end `.googleapis.com`.
pub fn check_oauth_url(auth: Option<&AuthToken>, url: &str) -> Result<(), Status> {
    if !matches!(auth, Some(AuthToken::OAuth { .. })) {
        return Ok(());
    }
    let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)).unwrap_or_default();
    if host.ends_with(".googleapis.com") { Ok(()) } else { Err(Status::invalid_argument(texts::OAUTH_HOST)) }
}

/// A task named in a queue other than the one it is created in (or deleted from, in a batch).
pub fn other_queue(parent: &QueueName, named: &QueueName) -> Status {
    Status::invalid_argument(format!(
        "The queue name from request ('{parent}') must be the same as the queue name in the named task ('{named}')."
    ))
}

/// The latest schedule time the real service takes (the end of year 9999).
const LAST_TIME: Timestamp = Timestamp(253_402_300_799_999_999);

fn validate_url(url: &str) -> Result<(), Status> {
    if url.is_empty() {
        return Err(Status::invalid_argument(texts::URL_REQUIRED));
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
        .ok_or_else(|| Status::invalid_argument(texts::URL_SCHEME))?;
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
                    return Err(other_queue(queue, &name.queue));
                }
                name
            }
            _ => queue.task(generated_id())?,
        };
        validate_url(&self.url)?;
        let method = self.method.unwrap_or(HttpMethod::Post);
        if !self.body.is_empty() && !method.allows_body() {
            return Err(Status::invalid_argument(texts::BODY_METHOD));
        }
        let headers = header::clean_task_headers(self.headers);
        check_token_email(self.auth.as_ref())?;
        check_oauth_url(self.auth.as_ref(), &self.url)?;
        let auth = self.auth.map(|a| a.with_defaults(&self.url));
        let schedule_time = match self.schedule_time {
            Some(t) if t > LAST_TIME => return Err(Status::invalid_argument(texts::INVALID_ARGUMENT)),
            Some(t) if t > now => {
                if t.since(now) > MAX_SCHEDULE_AHEAD {
                    return Err(Status::invalid_argument(format!(
                        "The Task.scheduleTime, {}, is too far in the future. Schedule time must be no more than \
                         720h in the future.",
                        crate::clock::pacific_time(t)
                    )));
                }
                t
            }
            _ => now,
        };
        let dispatch_deadline = match self.dispatch_deadline_micros {
            None | Some(0) => DEFAULT_DISPATCH_DEADLINE,
            Some(m) => {
                let asked = Duration::from_micros(m.max(0) as u64);
                if m < 0 || asked < MIN_DISPATCH_DEADLINE || asked > MAX_DISPATCH_DEADLINE {
                    return Err(Status::invalid_argument(texts::DEADLINE_RANGE));
                }
                // The real service keeps milliseconds.
                Duration::from_millis(asked.as_millis() as u64)
            }
        };
        let task = Task {
            name,
            http_request: HttpRequest { url: self.url, method, headers, body: self.body, auth },
            schedule_time,
            // The real service answers whole seconds.
            create_time: Timestamp::from_secs(now.0.div_euclid(1_000_000)),
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
        if task.size() > MAX_TASK_SIZE {
            return Err(Status::invalid_argument(texts::TOO_LARGE));
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
        check_err(
            TaskSpec { method: Some(HttpMethod::Get), body: b"x".to_vec(), ..spec("http://h/") },
            texts::BODY_METHOD,
        );
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
        check_err(too_far, "is too far in the future. Schedule time must be no more than 720h in the future.");
        // 2100-01-01T00:00:00Z is written in Pacific time.
        let at_2100 = TaskSpec { schedule_time: Some(Timestamp::from_secs(4_102_444_800)), ..spec("http://h/") };
        check_err(
            at_2100,
            "The Task.scheduleTime, 2099-12-31T16:00:00-08:00, is too far in the future. Schedule time must be no \
             more than 720h in the future.",
        );
        let past_9999 = TaskSpec { schedule_time: Some(Timestamp(LAST_TIME.0 + 1)), ..spec("http://h/") };
        check_err(past_9999, texts::INVALID_ARGUMENT);
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
        check_err(with(14_999_999), texts::DEADLINE_RANGE);
        check_err(with(1_800_000_001), texts::DEADLINE_RANGE);
        check_err(with(-1), texts::DEADLINE_RANGE);
        // Kept to the millisecond, as the real service keeps it.
        assert_eq!(
            with(20_123_456).validate(&queue(), now(), || "1".into()).unwrap().dispatch_deadline,
            Duration::from_millis(20_123)
        );
    }

    #[test]
    fn size_and_names() {
        let big = TaskSpec { body: vec![b'x'; MAX_TASK_SIZE + 1], ..spec("http://h/") };
        check_err(big, "Task size too large");
        let other = TaskSpec { name: Some("projects/p/locations/l/queues/other/tasks/t".into()), ..spec("http://h/") };
        check_err(
            other,
            "The queue name from request ('projects/p/locations/l/queues/q') must be the same as the queue name in \
             the named task ('projects/p/locations/l/queues/other').",
        );
        let bad = TaskSpec { name: Some("projects/p/locations/l/queues/q/tasks/a.b".into()), ..spec("http://h/") };
        check_err(bad, "Task ID \"a.b\" can contain only");
        let named = TaskSpec { name: Some("projects/p/locations/l/queues/q/tasks/job_1".into()), ..spec("http://h/") };
        assert_eq!(named.validate(&queue(), now(), || "1".into()).unwrap().name.task, "job_1");
    }

    #[test]
    fn create_time_is_whole_seconds_and_user_agent_is_stored() {
        let t = spec("http://h/").validate(&queue(), Timestamp(1_700_000_000_654_321), || "1".into()).unwrap();
        assert_eq!(t.create_time, Timestamp::from_secs(1_700_000_000));
        assert_eq!(t.schedule_time, Timestamp(1_700_000_000_654_321));
        assert_eq!(t.http_request.headers, vec![("User-Agent".to_string(), "Google-Cloud-Tasks".to_string())]);
    }

    #[test]
    fn token_rules() {
        let oidc = |email: &str| AuthToken::Oidc { service_account_email: email.into(), audience: String::new() };
        let oauth = |email: &str| AuthToken::OAuth { service_account_email: email.into(), scope: String::new() };
        for bad in ["not-an-email", "tasks@", "@example.com", "tasks@a@example.com"] {
            check_err(TaskSpec { auth: Some(oidc(bad)), ..spec("http://h/") }, texts::INVALID_ARGUMENT);
            check_err(
                TaskSpec { auth: Some(oauth(bad)), ..spec("https://x.googleapis.com/") },
                texts::INVALID_ARGUMENT,
            );
        }
        check_err(TaskSpec { auth: Some(oidc("")), ..spec("http://h/") }, texts::EMAIL_REQUIRED);
        for host in ["https://example.com/", "https://googleapis.com/", "https://evilgoogleapis.com/"] {
            check_err(TaskSpec { auth: Some(oauth("a@b.c")), ..spec(host) }, texts::OAUTH_HOST);
        }
        let t = TaskSpec { auth: Some(oauth("a@b.c")), ..spec("https://tasks.googleapis.com/v1") }
            .validate(&queue(), now(), || "1".into())
            .unwrap();
        assert_eq!(
            t.http_request.auth,
            Some(AuthToken::OAuth { service_account_email: "a@b.c".into(), scope: DEFAULT_OAUTH_SCOPE.into() })
        );
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

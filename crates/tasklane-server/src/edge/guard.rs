//! The checks every request passes before its handler. First the browser guard
//! (`browser`): a web page the user visits must not drive tasklane, so a foreign `Host`
//! (DNS rebinding), a foreign `Origin`, and a state change sent as a form or plain text
//! are refused. Then `check`: who is calling (`Access`), whether the token's scope allows
//! what the route does, and whether a resource named in the path is within the token's
//! limits. Resources named only in a body (gRPC messages, a job's queue) are checked by
//! their handlers against the `Principal` left in the request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tasklane_core::Status;
use tasklane_core::access::Action;

use crate::access::{Access, Principal};
use crate::grpc;
use crate::rest::ApiError;

/// What a route does; `None` for routes anyone may call (health, key discovery, the API
/// description) and for workers' job reports, which carry their job's own token.
pub fn action_of(method: &Method, path: &str, is_grpc: bool) -> Option<Action> {
    if is_grpc {
        let name = path.rsplit('/').next().unwrap_or("");
        return Some(if name.starts_with("Get") || name.starts_with("List") || name == "TestIamPermissions" {
            Action::Read
        } else if name == "CreateTask" || name == "BatchCreateTasks" {
            Action::Enqueue
        } else {
            Action::Manage
        });
    }
    if matches!(path, "/healthz" | "/readyz" | "/v1/openapi.json") || path.starts_with("/.well-known/") {
        return None;
    }
    let verb = path.rsplit('/').next().and_then(|last| last.split_once(':')).map(|(_, v)| v);
    if let Some(rest) = path.strip_prefix("/v1/jobs/")
        && (rest.ends_with("/progress") || rest.ends_with("/result") || rest.ends_with("/fail"))
    {
        return None;
    }
    if ["/v1/tokens", "/v1/identities", "/v1/egress", "/v1/keys"].iter().any(|p| path.starts_with(p)) {
        return Some(Action::Admin);
    }
    if *method == Method::GET || *method == Method::HEAD {
        return Some(Action::Read);
    }
    Some(match verb {
        Some("getIamPolicy" | "testIamPermissions") => Action::Read,
        Some("batchCreate") => Action::Enqueue,
        Some("lease" | "acknowledge" | "fail" | "renew" | "cancelLease") => Action::Work,
        Some("cancel") if path.starts_with("/v1/jobs/") => Action::Enqueue,
        _ if *method == Method::POST && (path.ends_with("/tasks") || path == "/v1/jobs") => Action::Enqueue,
        _ => Action::Manage,
    })
}

/// The resource a path names, to check against a token's limits; `None` when the path
/// names none (its handler checks what the body or the stored record names).
fn resource_of(path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("/v2/") {
        let name = match rest.rsplit_once('/') {
            Some((head, last)) => format!("{head}/{}", last.split(':').next().unwrap_or(last)),
            None => rest.split(':').next().unwrap_or(rest).to_string(),
        };
        return Some(name);
    }
    let queue = path.strip_prefix("/v1/queues/")?;
    let id = queue.split('/').next()?.split(':').next()?;
    crate::jobs::queue_name(id).ok().map(|q| q.to_string())
}

fn bearer(req: &Request) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (kind, token) = value.trim().split_once(' ')?;
        return kind.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string());
    }
    // A browser's EventSource cannot set headers: event streams also take the token in the query.
    if req.method() == Method::GET && req.uri().path().ends_with("/events") {
        let query = req.uri().query()?;
        return query.split('&').find_map(|pair| pair.strip_prefix("access_token=")).map(|t| t.to_string());
    }
    None
}

fn refuse(status: Status, is_grpc: bool) -> Response {
    let unauthenticated = status.code == tasklane_core::Code::Unauthenticated;
    let mut response =
        if is_grpc { grpc::to_tonic(status).into_http::<Body>() } else { ApiError(status).into_response() };
    if unauthenticated {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tasklane\""));
    }
    response
}

/// Who may reach tasklane from a browser, and by which names.
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    /// Origins (`https://console.example`) whose pages may call the API, with CORS.
    pub allowed_origins: Vec<String>,
    /// Host names besides IP addresses, `localhost` and the public URL's host that requests
    /// may name (`tasks.internal`, `*.example.com`, or `*` for any).
    pub allowed_hosts: Vec<String>,
    /// The host of `--public-url`, always allowed.
    pub public_host: Option<String>,
}

impl BrowserPolicy {
    /// Whether a `Host` (without its port) is one tasklane serves. IP literals cannot be
    /// rebound, so only DNS names need to be known.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host.parse::<std::net::IpAddr>().is_ok()
            || (host.starts_with('[') && host.ends_with(']'))
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.public_host.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(&host))
            || self.allowed_hosts.iter().any(|pattern| {
                let pattern = pattern.to_ascii_lowercase();
                pattern == "*"
                    || pattern == host
                    || pattern.strip_prefix("*.").is_some_and(|suffix| host.ends_with(&format!(".{suffix}")))
            })
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// `host[:port]` without its port, IPv6 brackets kept.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_once(']').map_or(authority, |(h, _)| &authority[..h.len() + 1]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn guard_refusal(http: u16, message: String, is_grpc: bool) -> Response {
    if is_grpc {
        return grpc::to_tonic(Status::new(tasklane_core::Code::PermissionDenied, message)).into_http::<Body>();
    }
    let code = axum::http::StatusCode::from_u16(http).unwrap_or(axum::http::StatusCode::FORBIDDEN);
    let status = if http == 415 { "INVALID_ARGUMENT" } else { "PERMISSION_DENIED" };
    let body = serde_json::json!({ "error": { "code": http, "message": message, "status": status } });
    (code, axum::Json(body)).into_response()
}

/// Whether a request changes state with a body a browser form or `text/plain` can send.
fn form_like(req: &Request) -> Option<String> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    match req.headers().get(header::CONTENT_TYPE) {
        Some(v) => {
            let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
            let essence = v.split(';').next().unwrap_or("").trim();
            let json =
                essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
            (!json && !essence.starts_with("application/grpc")).then(|| essence.to_string())
        }
        None => {
            let empty = req.headers().get(header::CONTENT_LENGTH).is_none_or(|l| l.as_bytes() == b"0")
                && req.headers().get(header::TRANSFER_ENCODING).is_none();
            (!empty).then(String::new)
        }
    }
}

const CORS_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const CORS_HEADERS: &str = "authorization, content-type, last-event-id, x-tasklane-job-token";

/// What the guard needs: the browser policy and who may call.
#[derive(Clone)]
pub struct Guard {
    pub browser: Arc<BrowserPolicy>,
    pub access: Arc<Access>,
}

/// The middleware: the browser checks, then the caller's, then the handler; CORS headers
/// on the way out for an allowed origin. One layer, so a request pays for one boxed future.
pub async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let is_grpc = grpc::is_grpc(&req);
    let cors = match browser(&g.browser, &req, is_grpc) {
        Ok(cors) => cors,
        Err(refused) => return *refused,
    };
    if let Err(refused) = caller(&g.access, &mut req, is_grpc).await {
        return *refused;
    }
    let mut response = next.run(req).await;
    if let Some(origin) = cors
        && let Ok(v) = HeaderValue::from_str(&origin)
    {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// The browser checks: a refusal, or the origin to send CORS headers to.
fn browser(policy: &BrowserPolicy, req: &Request, is_grpc: bool) -> Result<Option<String>, Box<Response>> {
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Some(authority) = authority
        && !policy.host_allowed(strip_port(authority))
    {
        return Err(Box::new(guard_refusal(
            403,
            format!(
                "Host \"{}\" is not a name tasklane serves. If it is yours, add it with --allowed-hosts (or set \
                 --public-url); a foreign Host is how DNS rebinding lets a web page reach a local server.",
                strip_port(authority)
            ),
            is_grpc,
        )));
    }
    let mut cors = None;
    if let Some(origin) = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let public =
            action_of(req.method(), req.uri().path(), is_grpc).is_none() && !req.uri().path().starts_with("/v1/jobs/");
        // A page tasklane serves itself may call it (a console, later).
        let same_origin = authority.is_some_and(|a| {
            origin.eq_ignore_ascii_case(&format!("http://{a}")) || origin.eq_ignore_ascii_case(&format!("https://{a}"))
        });
        if policy.origin_allowed(origin) {
            cors = Some(origin.to_string());
        } else if !same_origin && !public {
            return Err(Box::new(guard_refusal(
                403,
                format!(
                    "Requests from web pages at {origin} are not allowed. If that page is yours, add its origin \
                     with --allowed-origins."
                ),
                is_grpc,
            )));
        }
    }
    if let Some(origin) = &cors
        && req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut r = axum::http::StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(CORS_METHODS));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(CORS_HEADERS));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        return Err(Box::new(r));
    }
    if let Some(kind) = form_like(req) {
        let shown =
            if kind.is_empty() { "a body without a Content-Type".to_string() } else { format!("Content-Type {kind}") };
        return Err(Box::new(guard_refusal(
            415,
            format!(
                "This request changes state and carries {shown}; send its body as JSON with \
                 \"Content-Type: application/json\" (gRPC: application/grpc)."
            ),
            is_grpc,
        )));
    }
    Ok(cors)
}

/// Authenticate, check the scope and the path's resource, and leave a token's `Principal`
/// for the handler (no `Principal` means an open server).
async fn caller(access: &Access, req: &mut Request, is_grpc: bool) -> Result<(), Box<Response>> {
    let Some(action) = action_of(req.method(), req.uri().path(), is_grpc) else {
        return Ok(());
    };
    let principal = access.authenticate(bearer(req).as_deref()).await.map_err(|e| Box::new(refuse(e, is_grpc)))?;
    let Principal::Token(_) = &principal else { return Ok(()) };
    let mut checked = principal.may(action);
    let path = req.uri().path();
    if checked.is_ok() && !is_grpc {
        if let Some(resource) = resource_of(path) {
            checked = principal.within(&resource);
        } else if action == Action::Admin || path == "/v1/cluster" {
            // Tokens, identities, egress and the cluster span every project: no limited token.
            checked = principal.within("");
        }
    }
    checked.map_err(|e| Box::new(refuse(e, is_grpc)))?;
    req.extensions_mut().insert(principal);
    Ok(())
}

/// The caller a handler serves: the guard's `Principal`, or open where no guard ran
/// (in-process tests of a bare router).
pub fn principal_of(ext: Option<axum::Extension<Principal>>) -> Principal {
    ext.map(|axum::Extension(p)| p).unwrap_or(Principal::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_actions() {
        let v2 = "/v2/projects/p/locations/l/queues/q";
        let cases: &[(Method, &str, Option<Action>)] = &[
            (Method::GET, "/healthz", None),
            (Method::GET, "/.well-known/jwks.json", None),
            (Method::POST, "/v1/jobs/job_1/progress", None),
            (Method::GET, v2, Some(Action::Read)),
            (Method::POST, "/v2/projects/p/locations/l/queues", Some(Action::Manage)),
            (Method::PATCH, v2, Some(Action::Manage)),
            (Method::POST, &format!("{v2}:purge"), Some(Action::Manage)),
            (Method::POST, &format!("{v2}:getIamPolicy"), Some(Action::Read)),
            (Method::POST, &format!("{v2}/tasks"), Some(Action::Enqueue)),
            (Method::POST, &format!("{v2}/tasks:batchCreate"), Some(Action::Enqueue)),
            (Method::POST, &format!("{v2}/tasks:batchDelete"), Some(Action::Manage)),
            (Method::POST, &format!("{v2}/tasks/t:run"), Some(Action::Manage)),
            (Method::DELETE, &format!("{v2}/tasks/t"), Some(Action::Manage)),
            (Method::POST, "/v1/queues", Some(Action::Manage)),
            (Method::POST, "/v1/queues/q/tasks", Some(Action::Enqueue)),
            (Method::POST, "/v1/queues/q/tasks:lease", Some(Action::Work)),
            (Method::POST, "/v1/queues/q/tasks:acknowledge", Some(Action::Work)),
            (Method::POST, "/v1/queues/q/dead-letters:redrive", Some(Action::Manage)),
            (Method::POST, "/v1/jobs", Some(Action::Enqueue)),
            (Method::POST, "/v1/jobs/job_1:cancel", Some(Action::Enqueue)),
            (Method::GET, "/v1/jobs/job_1/events", Some(Action::Read)),
            (Method::GET, "/v1/tokens", Some(Action::Admin)),
            (Method::PUT, "/v1/identities", Some(Action::Admin)),
            (Method::POST, "/v1/keys:rotate", Some(Action::Admin)),
            (Method::GET, "/v1/egress", Some(Action::Admin)),
        ];
        for (method, path, want) in cases {
            assert_eq!(action_of(method, path, false), *want, "{method} {path}");
        }
        let g = |m: &str| action_of(&Method::POST, &format!("/google.cloud.tasks.v2.CloudTasks/{m}"), true);
        assert_eq!(g("ListTasks"), Some(Action::Read));
        assert_eq!(g("TestIamPermissions"), Some(Action::Read));
        assert_eq!(g("CreateTask"), Some(Action::Enqueue));
        assert_eq!(g("PurgeQueue"), Some(Action::Manage));
        assert_eq!(g("SetIamPolicy"), Some(Action::Manage));
    }

    #[test]
    fn hosts_are_ip_addresses_localhost_or_named() {
        let policy = BrowserPolicy {
            allowed_origins: vec![],
            allowed_hosts: vec!["tasks.internal".into(), "*.example.com".into()],
            public_host: Some("tasklane.example.org".into()),
        };
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "[::1]",
            "localhost",
            "app.localhost",
            "tasks.internal",
            "a.example.com",
            "TASKLANE.example.org",
        ] {
            assert!(policy.host_allowed(ok), "{ok}");
        }
        for refused in ["evil.example", "example.com", "localhost.evil.example", "tasks.internal.evil"] {
            assert!(!policy.host_allowed(refused), "{refused}");
        }
        assert!(
            BrowserPolicy { allowed_hosts: vec!["*".into()], ..Default::default() }.host_allowed("anything.example")
        );
        assert_eq!(strip_port("127.0.0.1:8790"), "127.0.0.1");
        assert_eq!(strip_port("[::1]:8790"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("localhost"), "localhost");
    }

    #[test]
    fn state_changes_must_be_json_or_grpc() {
        let req = |method: Method, ct: Option<&str>, len: Option<&str>| {
            let mut b = axum::http::Request::builder().method(method).uri("/v1/jobs");
            if let Some(ct) = ct {
                b = b.header(header::CONTENT_TYPE, ct);
            }
            if let Some(len) = len {
                b = b.header(header::CONTENT_LENGTH, len);
            }
            b.body(Body::empty()).unwrap()
        };
        assert_eq!(form_like(&req(Method::POST, Some("application/json"), None)), None);
        assert_eq!(form_like(&req(Method::POST, Some("application/json; charset=utf-8"), None)), None);
        assert_eq!(form_like(&req(Method::POST, Some("application/grpc+proto"), None)), None);
        assert_eq!(form_like(&req(Method::POST, None, Some("0"))), None, "an empty POST (:pause)");
        assert_eq!(form_like(&req(Method::DELETE, None, None)), None);
        assert_eq!(form_like(&req(Method::GET, Some("text/plain"), None)), None, "reads are not state changes");
        assert_eq!(form_like(&req(Method::POST, Some("text/plain"), None)).as_deref(), Some("text/plain"));
        assert_eq!(
            form_like(&req(Method::POST, Some("application/x-www-form-urlencoded"), None)).as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            form_like(&req(Method::POST, Some("multipart/form-data; boundary=x"), None)).as_deref(),
            Some("multipart/form-data")
        );
        assert_eq!(form_like(&req(Method::POST, None, Some("12"))).as_deref(), Some(""));
    }

    #[test]
    fn paths_name_their_resources() {
        assert_eq!(
            resource_of("/v2/projects/p/locations/l/queues/q/tasks/t:run").as_deref(),
            Some("projects/p/locations/l/queues/q/tasks/t")
        );
        assert_eq!(
            resource_of("/v2/projects/p/locations/l/queues/q:pause").as_deref(),
            Some("projects/p/locations/l/queues/q")
        );
        assert_eq!(resource_of("/v2/projects/p/locations").as_deref(), Some("projects/p/locations"));
        assert_eq!(resource_of("/v1/queues/q/tasks:lease").as_deref(), Some("projects/local/locations/local/queues/q"));
        assert_eq!(resource_of("/v1/jobs/j"), None);
    }
}

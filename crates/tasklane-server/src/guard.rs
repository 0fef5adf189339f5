//! The checks every request passes before its handler: who is calling (`Access`), whether
//! the token's scope allows what the route does, and whether a resource named in the path
//! is within the token's limits. Resources named only in a body (gRPC messages, a job's
//! queue) are checked by their handlers against the `Principal` left in the request.

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
    if path.starts_with("/v1/tokens") || path.starts_with("/v1/identities") {
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

/// The middleware: authenticate, check the scope and the path's resource, and leave the
/// `Principal` for the handler.
pub async fn check(State(access): State<Arc<Access>>, mut req: Request, next: Next) -> Response {
    let is_grpc = grpc::is_grpc(&req);
    let path = req.uri().path().to_string();
    let Some(action) = action_of(req.method(), &path, is_grpc) else {
        return next.run(req).await;
    };
    let principal = match access.authenticate(bearer(&req).as_deref()).await {
        Ok(p) => p,
        Err(e) => return refuse(e, is_grpc),
    };
    let mut checked = principal.may(action);
    if checked.is_ok() && !is_grpc {
        if let Some(resource) = resource_of(&path) {
            checked = principal.within(&resource);
        } else if action == Action::Admin || path == "/v1/cluster" {
            // Tokens, identities and the cluster span every project: no limited token.
            checked = principal.within("");
        }
    }
    if let Err(e) = checked {
        return refuse(e, is_grpc);
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
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

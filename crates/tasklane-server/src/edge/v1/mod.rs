//! tasklane's native API under `/v1`: jobs, workers' reports, and job event streams
//! (Server-Sent Events). JSON in snake_case; errors in the same Google shape as `/v2`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tasklane_core::job::{FailurePolicy, Job, JobStatus, Progress};
use tasklane_core::task::{AuthToken, TaskSpec};
use tasklane_core::{HttpMethod, Status, Timestamp};
use tasklane_store::{Callback, DeadLetter, DeadLetterSelect, JobEvent, JobReportKind};

use crate::dead_letters::DeadLetters;
use crate::dispatch::JOB_TOKEN_HEADER;
use crate::guard::principal_of;
use crate::jobs::{JobQuery, JobSpec, JobTask, Jobs, WorkerReport};
use crate::pull::{Failed, LeaseRef, LeaseRequest, Leased, Pull};
use crate::rest::ApiError;
use crate::rest::proto_json::{Obj, decode_base64, encode_base64, format_timestamp, parse_timestamp};

mod dead_letters;
mod jobs;
mod pull;

use dead_letters::*;
use jobs::*;
use pull::*;

/// A batch of 10,000 tasks with bodies fits; larger requests are refused before parsing.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Events read from the store at a time by a stream.
const EVENT_PAGE: usize = 500;
/// A stream re-reads its job this often even without a wake-up.
const STREAM_POLL: Duration = Duration::from_secs(5);

type ApiResult = Result<Response, ApiError>;

/// The caller, as the guard found it.
type Who = Option<axum::Extension<crate::access::Principal>>;

/// A list or stream across queues: a token limited to some queues must name one of them.
fn within_filter(who: &crate::access::Principal, queue: Option<String>) -> Result<(), Status> {
    match queue {
        Some(q) => who.within(&q),
        None => who.within("").map_err(|_| {
            Status::new(
                tasklane_core::Code::PermissionDenied,
                "Permission denied: this API token is limited to some projects or queues; name one with ?queue=",
            )
        }),
    }
}

/// The OpenAPI document of this API, served at `/v1/openapi.json`.
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Everything `/v1` serves from.
#[derive(Clone)]
pub struct V1 {
    pub jobs: Jobs,
    pub dead: DeadLetters,
    pub pull: Pull,
    pub tasks: crate::service::CloudTasks,
}

pub fn router(v1: V1) -> Router {
    let V1 { jobs, dead, pull, tasks } = v1;
    let pull_routes = Router::new().route("/v1/queues", post(create_queue)).with_state(tasks).merge(
        Router::new()
            .route("/v1/queues/{queue}/tasks", post(create_pull_tasks))
            .route("/v1/queues/{queue}/tasks:lease", post(lease_tasks))
            .route("/v1/queues/{queue}/tasks:acknowledge", post(acknowledge_tasks))
            .route("/v1/queues/{queue}/tasks:fail", post(fail_tasks))
            .route("/v1/queues/{queue}/tasks:renew", post(renew_tasks))
            .route("/v1/queues/{queue}/tasks:cancelLease", post(cancel_leases))
            .with_state(pull),
    );
    let dead_letters = Router::new()
        .route("/v1/queues/{queue}/dead-letters", get(list_dead_letters))
        .route("/v1/queues/{queue}/dead-letters:redrive", post(redrive_dead_letters))
        .route("/v1/queues/{queue}/dead-letters:purge", post(purge_dead_letters))
        .route("/v1/queues/{queue}/dead-letters/{id}", get(get_dead_letter).delete(delete_dead_letter))
        .with_state(dead);
    Router::new()
        .route("/v1/jobs", post(create_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job).post(job_verb))
        .route("/v1/jobs/{id}/progress", post(report_progress))
        .route("/v1/jobs/{id}/result", post(report_result))
        .route("/v1/jobs/{id}/fail", post(report_failure))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/events", get(all_events))
        .route("/v1/openapi.json", get(openapi))
        .with_state(jobs)
        .merge(dead_letters)
        .merge(pull_routes)
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn body_json(body: Result<Bytes, BytesRejection>) -> Result<Value, Status> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Status::invalid_argument(format!("The request is larger than {MAX_BODY} bytes."))
        } else {
            Status::invalid_argument(format!("Could not read the request body: {e}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(&body).map_err(|e| Status::invalid_argument(format!("Invalid JSON payload received. {e}")))
}

/// `"90s"`, `"1.5s"`, `"500ms"`, `"10m"`, `"24h"`, `"7d"`.
pub fn parse_duration(field: &str, s: &str) -> Result<Duration, Status> {
    let bad =
        || Status::invalid_argument(format!("{field} \"{s}\" is not a duration; write it like 90s, 10m, 24h or 7d"));
    let (number, unit_micros) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else if let Some(n) = s.strip_suffix('d') {
        (n, 86_400e6)
    } else {
        return Err(bad());
    };
    let n: f64 = number.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_micros((n * unit_micros) as u64))
}

fn opt_timestamp(o: &mut Obj<'_>, field: &str) -> Result<Option<Timestamp>, Status> {
    o.timestamp(field)
}

/// Every `/v1` body reader on one value, for the fuzz targets in `fuzz/`: whatever the
/// input, each must answer with a value or an error, never panic.
pub fn read_any_body(body: &Value) {
    if let Ok(spec) = job_spec(body) {
        for t in spec.tasks {
            if let JobTask::Push(t) = t
                && let Ok(q) = tasklane_core::QueueName::parse("projects/p/locations/l/queues/q")
            {
                let _ = t.validate(&q, Timestamp::from_secs(1_800_000_000), || "1".into());
            }
        }
    }
    let _ = pull_spec("task", body);
    let _ = lease_refs(body, &["error"]);
    let _ = selection(body);
}

fn time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(format_timestamp(t)))
}

pub use crate::engine::callbacks::job_json;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (path, method) the `/v1` routers serve, read from their `.route(...)` calls, so
    /// no list is kept by hand: a route added without its document fails the test below.
    fn served() -> std::collections::BTreeSet<(String, String)> {
        let source = [include_str!("mod.rs"), include_str!("../v1_access.rs")].concat();
        let mut served = std::collections::BTreeSet::new();
        for call in source.split(".route(\"").skip(1) {
            let Some((path, rest)) = call.split_once('"') else { continue };
            if !path.starts_with("/v1/") {
                continue; // this test's own text
            }
            let line = rest.lines().next().unwrap_or("");
            for method in ["get", "post", "put", "patch", "delete"] {
                if line.contains(&format!("{method}(")) {
                    served.insert((path.to_string(), method.to_string()));
                }
            }
        }
        served
    }

    #[test]
    fn the_openapi_document_describes_every_route_and_no_other() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let served = served();
        assert!(served.len() >= 25, "the routes were not found in the source: {served:?}");
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let methods = ["get", "post", "put", "patch", "delete"];
            for method in item.as_object().expect("a path item").keys().filter(|k| methods.contains(&k.as_str())) {
                documented.insert((path.clone(), method.clone()));
            }
        }
        // A custom verb after a path parameter (`/v1/jobs/{id}:cancel`) is served by the
        // parameter's route, which reads the verb itself.
        let route_of = |path: &str| match path.rsplit_once("}:") {
            Some((head, _)) => format!("{head}}}"),
            None => path.to_string(),
        };
        for (path, method) in &documented {
            assert!(
                served.contains(&(route_of(path), method.clone())),
                "openapi.json documents {method} {path}, which no route serves"
            );
        }
        for (path, method) in &served {
            let described = documented.iter().any(|(p, m)| m == method && route_of(p) == *path);
            assert!(described, "{method} {path} is served but not in openapi.json");
        }
        // Every reference points at something defined.
        let text = OPENAPI;
        for reference in text.split("\"$ref\": \"#/").skip(1) {
            let pointer = format!("/{}", reference.split('"').next().unwrap_or(""));
            assert!(doc.pointer(&pointer).is_some(), "dangling $ref {pointer}");
        }
    }

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("d", "90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("d", "1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("d", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("d", "24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("d", "7d").unwrap(), Duration::from_secs(7 * 86_400));
        for bad in ["", "5", "-1s", "soon", "1w"] {
            assert!(parse_duration("result_ttl", bad).unwrap_err().message.contains("result_ttl"), "{bad}");
        }
    }
}

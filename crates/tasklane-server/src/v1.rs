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
use crate::rest::proto_json::{
    Obj, decode_base64, encode_base64, format_duration_micros, format_timestamp, parse_timestamp,
};

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

/// One task of a job: `{"url", "method", "headers", "body" | "body_base64", "schedule_time",
/// "dispatch_deadline", "oidc_token", "oauth_token"}`.
fn task_spec(path: &str, value: &Value) -> Result<TaskSpec, Status> {
    let mut t = Obj::new(path, Some(value))?;
    let mut spec = TaskSpec { url: t.string("url")?.unwrap_or_default(), ..TaskSpec::default() };
    if let Some(m) = t.string("method")? {
        spec.method = Some(
            HttpMethod::parse(&m)
                .ok_or_else(|| Status::invalid_argument(format!("{path}.method \"{m}\" is not an HTTP method")))?,
        );
    }
    spec.headers = t.string_map("headers")?;
    let text = t.string("body")?;
    let binary = t.string("body_base64")?;
    spec.body = match (text, binary) {
        (Some(_), Some(_)) => {
            return Err(Status::invalid_argument(format!("{path} may have body or body_base64, not both")));
        }
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => decode_base64(&b64)
            .ok_or_else(|| Status::invalid_argument(format!("{path}.body_base64 is not valid base64")))?,
        (None, None) => Vec::new(),
    };
    spec.schedule_time = opt_timestamp(&mut t, "schedule_time")?;
    if let Some(d) = t.string("dispatch_deadline")? {
        spec.dispatch_deadline_micros =
            Some(tasklane_core::clock::duration_micros(parse_duration(&format!("{path}.dispatch_deadline"), &d)?));
    }
    if let Some(mut o) = t.object("oidc_token")? {
        spec.auth = Some(AuthToken::Oidc {
            service_account_email: o.string("service_account_email")?.unwrap_or_default(),
            audience: o.string("audience")?.unwrap_or_default(),
        });
        o.finish()?;
    }
    t.finish()?;
    Ok(spec)
}

/// A job's task: a payload (for a pull queue) or an HTTP request (for a push queue).
fn job_task(path: &str, value: &Value) -> Result<JobTask, Status> {
    let pull = value.get("payload").is_some() || value.get("payload_base64").is_some();
    if pull { Ok(JobTask::Pull(pull_spec(path, value)?)) } else { Ok(JobTask::Push(task_spec(path, value)?)) }
}

fn job_spec(body: &Value) -> Result<JobSpec, Status> {
    let mut o = Obj::new("", Some(body))?;
    let mut spec = JobSpec { queue: o.string("queue")?.unwrap_or_default(), ..JobSpec::default() };
    let single = body.get("task");
    let many = body.get("tasks");
    o.ignore("task");
    o.ignore("tasks");
    spec.tasks = match (single, many) {
        (Some(_), Some(_)) => return Err(Status::invalid_argument("a job has task or tasks, not both")),
        (Some(t), None) => vec![job_task("task", t)?],
        (None, Some(Value::Array(items))) => {
            if items.len() > tasklane_core::job::MAX_BATCH_TASKS {
                return Err(Status::invalid_argument(format!(
                    "tasks has {} entries; a job may have at most {}",
                    items.len(),
                    tasklane_core::job::MAX_BATCH_TASKS
                )));
            }
            items.iter().enumerate().map(|(i, t)| job_task(&format!("tasks[{i}]"), t)).collect::<Result<_, _>>()?
        }
        (None, Some(_)) => return Err(Status::invalid_argument("tasks must be a list of tasks")),
        (None, None) => return Err(Status::invalid_argument("a job needs a task, or tasks with at least one")),
    };
    spec.labels = o.string_map("labels")?;
    spec.idempotency_key = o.string("idempotency_key")?;
    if let Some(ttl) = o.string("result_ttl")? {
        spec.result_ttl = Some(parse_duration("result_ttl", &ttl)?);
    }
    if let Some(p) = o.string("failure_policy")? {
        spec.policy = FailurePolicy::parse(&p).ok_or_else(|| {
            Status::invalid_argument(format!("failure_policy \"{p}\" must be finish_all or fail_fast"))
        })?;
    }
    if let Some(r) = o.object("retry")? {
        spec.retry = Some(crate::rest::wire::retry_spec(r)?);
    }
    spec.callback_url = o.string("callback_url")?;
    o.finish()?;
    Ok(spec)
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

pub fn job_json(j: &Job) -> Value {
    let labels: Map<String, Value> = j.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let result = j.result.as_deref().map_or(Value::Null, |r| serde_json::from_str(r).unwrap_or(json!(r)));
    json!({
        "id": j.id,
        "queue": j.queue.to_string(),
        "status": j.status.as_str(),
        "labels": labels,
        "idempotency_key": j.idempotency_key,
        "failure_policy": j.policy.as_str(),
        "counts": {
            "total": j.total,
            "succeeded": j.succeeded,
            "failed": j.failed,
            "running": j.running,
            "pending": j.pending(),
            "cancelled": j.cancelled,
        },
        "percentage": j.percentage(),
        "progress": {
            "percent": j.progress.percent,
            "step": j.progress.step,
            "step_number": j.progress.step_number,
            "message": j.progress.message,
        },
        "result": result,
        "error": j.error,
        "created_at": format_timestamp(j.created_at),
        "started_at": time(j.started_at),
        "finished_at": time(j.finished_at),
        "result_ttl": format_duration_micros(tasklane_core::clock::duration_micros(j.result_ttl)),
        "callback_url": j.callback_url,
    })
}

fn callback_json(c: &Callback) -> Value {
    json!({
        "id": c.id,
        "type": c.kind,
        "task": c.task,
        "state": c.state.as_str(),
        "attempts": c.attempts,
        "last_status": c.last_status,
        "last_error": c.last_error,
        "created_at": format_timestamp(c.created_at),
        "delivered_at": time(c.delivered_at),
    })
}

async fn create_job(State(jobs): State<Jobs>, who: Who, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let spec = job_spec(&body_json(body)?)?;
    principal_of(who).within(&crate::jobs::queue_name(&spec.queue)?.to_string())?;
    let (job, existed) = jobs.create(spec).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, axum::Json(job_json(&job))).into_response())
}

async fn get_job(State(jobs): State<Jobs>, who: Who, Path(id): Path<String>) -> ApiResult {
    let job = jobs.get(&id).await?;
    principal_of(who).within(&job.queue.to_string())?;
    let mut out = job_json(&job);
    let callbacks = jobs.callbacks(&id).await?;
    if !callbacks.is_empty() {
        out["callbacks"] = Value::Array(callbacks.iter().map(callback_json).collect());
    }
    Ok(axum::Json(out).into_response())
}

async fn job_verb(State(jobs): State<Jobs>, who: Who, Path(segment): Path<String>) -> ApiResult {
    match segment.split_once(':') {
        Some((id, "cancel")) => {
            principal_of(who).within(&jobs.get(id).await?.queue.to_string())?;
            Ok(axum::Json(job_json(&jobs.cancel(id).await?)).into_response())
        }
        _ => Err(Status::not_found(format!("Unknown method POST /v1/jobs/{segment}; jobs support :cancel")).into()),
    }
}

async fn list_jobs(
    State(jobs): State<Jobs>,
    who: Who,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let Query(pairs) = q.map_err(|e| Status::invalid_argument(format!("Invalid query string: {e}")))?;
    let mut query = JobQuery::default();
    for (k, v) in &pairs {
        match k.as_str() {
            "status" => {
                query.status = Some(JobStatus::parse(v).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "status \"{v}\" must be pending, running, succeeded, failed or cancelled"
                    ))
                })?)
            }
            "queue" => query.queue = Some(v.clone()),
            "label" => {
                let (key, value) = v.split_once(':').ok_or_else(|| {
                    Status::invalid_argument(format!("label \"{v}\" must be KEY:VALUE, for example user:42"))
                })?;
                query.label = Some((key.to_string(), value.to_string()));
            }
            "created_after" | "created_before" => {
                let t = parse_timestamp(v).ok_or_else(|| {
                    Status::invalid_argument(format!("{k} \"{v}\" must be an RFC 3339 time like 2026-11-23T10:00:00Z"))
                })?;
                if k == "created_after" {
                    query.created_after = Some(t);
                } else {
                    query.created_before = Some(t);
                }
            }
            "page_size" => {
                query.page_size = v.parse().map_err(|_| Status::invalid_argument("page_size must be a number"))?
            }
            "page_token" => query.page_token = v.clone(),
            other => {
                return Err(Status::invalid_argument(format!(
                    "Unknown query parameter \"{other}\"; jobs are filtered by status, queue, label, created_after \
                     and created_before, and paged with page_size and page_token"
                ))
                .into());
            }
        }
    }
    let limited_to = query.queue.as_deref().map(crate::jobs::queue_name).transpose()?.map(|q| q.to_string());
    within_filter(&principal_of(who), limited_to)?;
    let (list, next) = jobs.list(query).await?;
    let mut out = json!({ "jobs": list.iter().map(job_json).collect::<Vec<_>>() });
    if !next.is_empty() {
        out["next_page_token"] = json!(next);
    }
    Ok(axum::Json(out).into_response())
}

/// The token a worker sends: `X-Tasklane-Job-Token`, or `Authorization: Bearer`.
fn worker_token(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    header(JOB_TOKEN_HEADER)
        .or_else(|| header("authorization").and_then(|v| v.strip_prefix("Bearer ")))
        .map(String::from)
}

async fn report(jobs: Jobs, id: String, headers: HeaderMap, kind: JobReportKind) -> ApiResult {
    let job = jobs.report(WorkerReport { job: id, token: worker_token(&headers), kind }).await?;
    Ok(axum::Json(job_json(&job)).into_response())
}

async fn report_progress(
    State(jobs): State<Jobs>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_json(body)?;
    let mut o = Obj::new("", Some(&body))?;
    let progress = Progress {
        percent: o.f64("percent")?.ok_or_else(|| Status::invalid_argument("percent is required"))?,
        step: o.string("step")?.unwrap_or_default(),
        step_number: o.i32("step_number")?.unwrap_or(0),
        message: o.string("message")?.unwrap_or_default(),
    };
    let allow_decrease = match body.get("allow_decrease") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Status::invalid_argument("allow_decrease must be true or false").into()),
    };
    o.ignore("allow_decrease");
    o.finish()?;
    report(jobs, id, headers, JobReportKind::Progress { progress, allow_decrease }).await
}

async fn report_result(
    State(jobs): State<Jobs>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_json(body)?;
    let mut o = Obj::new("", Some(&body))?;
    let result = body.get("result").cloned().ok_or_else(|| Status::invalid_argument("result is required"))?;
    o.ignore("result");
    o.finish()?;
    report(jobs, id, headers, JobReportKind::Result(result.to_string())).await
}

async fn report_failure(
    State(jobs): State<Jobs>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_json(body)?;
    let mut o = Obj::new("", Some(&body))?;
    let error =
        o.string("error")?.filter(|e| !e.is_empty()).ok_or_else(|| Status::invalid_argument("error is required"))?;
    o.finish()?;
    report(jobs, id, headers, JobReportKind::Fail(error)).await
}

/// An event as SSE: its id is what a reader resumes after.
fn sse_event(e: &JobEvent, id: String) -> Event {
    let data = json!({ "seq": e.seq, "kind": e.kind, "at": format_timestamp(e.at), "job": job_json(&e.job) });
    Event::default().id(id).event(e.kind.clone()).data(data.to_string())
}

struct Watch {
    _slot: tokio::sync::OwnedSemaphorePermit,
    jobs: Jobs,
    id: String,
    last_seq: i64,
    changes: tokio::sync::broadcast::Receiver<String>,
    ready: VecDeque<JobEvent>,
    /// The job has finished and its last event was sent.
    ended: bool,
}

impl Watch {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Watch)> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                self.last_seq = e.seq;
                if e.job.status.is_final() && self.ready.is_empty() {
                    self.ended = true;
                }
                return Some((Ok(sse_event(&e, e.seq.to_string())), self));
            }
            match self.jobs.events(&self.id, self.last_seq, EVENT_PAGE).await {
                Ok(events) if !events.is_empty() => {
                    self.ended = false;
                    self.ready.extend(events);
                    continue;
                }
                Ok(_) if self.ended => return None,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job = %self.id, error = %e.message, "job event stream stopped");
                    return None;
                }
            }
            // Wait for this job to change (on any node), or poll.
            let id = self.id.clone();
            let wait = async {
                loop {
                    match self.changes.recv().await {
                        Ok(changed) if changed == id => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(STREAM_POLL, wait).await;
        }
    }
}

/// `GET /v1/jobs/{id}/events`: every change of the job as an SSE event whose id is its
/// number. Resumes after `Last-Event-ID` (or `?after=N`). Ends once the job has finished.
async fn job_events(
    State(jobs): State<Jobs>,
    who: Who,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let Query(pairs) = q.map_err(|e| Status::invalid_argument(format!("Invalid query string: {e}")))?;
    let changes = jobs.changes();
    principal_of(who).within(&jobs.get(&id).await?.queue.to_string())?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| pairs.iter().find(|(k, _)| k == "after").map(|(_, v)| v.clone()));
    let last_seq = match resume {
        None => 0,
        Some(v) => v.trim().parse::<i64>().map_err(|_| {
            Status::invalid_argument(format!("Last-Event-ID \"{v}\" must be the id of an event of this stream"))
        })?,
    };
    let watch = Watch { _slot: jobs.stream_slot()?, jobs, id, last_seq, changes, ready: VecDeque::new(), ended: false };
    let stream = futures_util::stream::unfold(watch, Watch::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

fn dead_letter_json(d: &DeadLetter) -> Value {
    let t = &d.task;
    let r = &t.http_request;
    let headers: Map<String, Value> = r.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let attempts: Vec<Value> = d
        .attempts
        .iter()
        .map(|a| {
            json!({
                "dispatch_time": format_timestamp(a.dispatch_time),
                "response_time": format_timestamp(a.response_time),
                "http_status": a.http_status,
                "code": a.code.name(),
                "message": a.message,
                "body_excerpt": a.body_excerpt,
            })
        })
        .collect();
    let last = t.last_attempt.as_ref().and_then(|a| a.response_status.as_ref());
    json!({
        "id": d.id,
        "task": t.name.to_string(),
        "queue": t.name.queue.to_string(),
        "died_at": format_timestamp(d.died_at),
        "job_id": t.job_id,
        "request": {
            "url": r.url,
            "method": r.method.as_str(),
            "headers": headers,
            "body_base64": encode_base64(&r.body),
        },
        "created_at": format_timestamp(t.create_time),
        "dispatch_count": t.dispatch_count,
        "response_count": t.response_count,
        "last_response": {
            "http_status": t.last_http_status,
            "code": last.map(|s| s.code.name()),
            "message": last.map(|s| s.message.clone()),
            "body_excerpt": d.attempts.last().map(|a| a.body_excerpt.clone()),
        },
        "attempts": attempts,
    })
}

async fn list_dead_letters(
    State(dead): State<DeadLetters>,
    Path(queue): Path<String>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let Query(pairs) = q.map_err(|e| Status::invalid_argument(format!("Invalid query string: {e}")))?;
    let mut page_size = 0;
    let mut page_token = String::new();
    for (k, v) in pairs {
        match k.as_str() {
            "page_size" => page_size = v.parse().map_err(|_| Status::invalid_argument("page_size must be a number"))?,
            "page_token" => page_token = v,
            other => {
                return Err(Status::invalid_argument(format!(
                    "Unknown query parameter \"{other}\"; dead letters are paged with page_size and page_token"
                ))
                .into());
            }
        }
    }
    let (list, next) = dead.list(&queue, page_size, &page_token).await?;
    let mut out = json!({ "dead_letters": list.iter().map(dead_letter_json).collect::<Vec<_>>() });
    if !next.is_empty() {
        out["next_page_token"] = json!(next);
    }
    Ok(axum::Json(out).into_response())
}

fn dead_letter_id(id: &str) -> Result<i64, Status> {
    id.parse().map_err(|_| Status::invalid_argument(format!("\"{id}\" is not a dead letter id; ids are numbers")))
}

async fn get_dead_letter(State(dead): State<DeadLetters>, Path((queue, id)): Path<(String, String)>) -> ApiResult {
    Ok(axum::Json(dead_letter_json(&dead.get(&queue, dead_letter_id(&id)?).await?)).into_response())
}

async fn delete_dead_letter(State(dead): State<DeadLetters>, Path((queue, id)): Path<(String, String)>) -> ApiResult {
    let id = dead_letter_id(&id)?;
    if dead.purge(&queue, DeadLetterSelect::Ids(vec![id])).await? == 0 {
        return Err(Status::not_found(format!("Dead letter {id} was not found.")).into());
    }
    Ok(axum::Json(json!({})).into_response())
}

/// `{"ids": [1, 2]}` or `{"all": true}`.
fn selection(body: &Value) -> Result<DeadLetterSelect, Status> {
    let mut o = Obj::new("", Some(body))?;
    let all = match body.get("all") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Status::invalid_argument("all must be true or false")),
    };
    o.ignore("all");
    let ids = match body.get("ids") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_i64().ok_or_else(|| Status::invalid_argument("ids must be a list of dead letter ids")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(Status::invalid_argument("ids must be a list of dead letter ids")),
    };
    o.ignore("ids");
    o.finish()?;
    match (all, ids) {
        (true, None) => Ok(DeadLetterSelect::All),
        (false, Some(ids)) if !ids.is_empty() => Ok(DeadLetterSelect::Ids(ids)),
        (true, Some(_)) => Err(Status::invalid_argument("send ids or all, not both")),
        _ => Err(Status::invalid_argument("say which dead letters: {\"ids\": [1, 2]} or {\"all\": true}")),
    }
}

async fn redrive_dead_letters(
    State(dead): State<DeadLetters>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let select = selection(&body_json(body)?)?;
    let redriven = dead.redrive(&queue, select).await?;
    Ok(axum::Json(json!({
        "redriven": redriven.tasks.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "conflicts": redriven.conflicts,
    }))
    .into_response())
}

async fn purge_dead_letters(
    State(dead): State<DeadLetters>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let select = selection(&body_json(body)?)?;
    let purged = dead.purge(&queue, select).await?;
    Ok(axum::Json(json!({ "purged": purged })).into_response())
}

/// Which jobs a dashboard stream follows.
struct JobFilter {
    queue: Option<tasklane_core::QueueName>,
    label: Option<(String, String)>,
}

impl JobFilter {
    fn matches(&self, job: &Job) -> bool {
        self.queue.as_ref().is_none_or(|q| &job.queue == q)
            && self.label.as_ref().is_none_or(|(k, v)| job.labels.iter().any(|(jk, jv)| jk == k && jv == v))
    }
}

struct Dashboard {
    _slot: tokio::sync::OwnedSemaphorePermit,
    jobs: Jobs,
    filter: JobFilter,
    /// Events before the stream opened are not sent.
    since: Timestamp,
    /// Per job: whether it matches, and the last event sent.
    seen: std::collections::HashMap<String, (bool, i64)>,
    changes: tokio::sync::broadcast::Receiver<String>,
    ready: VecDeque<JobEvent>,
}

impl Dashboard {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Dashboard)> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                let id = format!("{}:{}", e.job.id, e.seq);
                return Some((Ok(sse_event(&e, id)), self));
            }
            let changed = match self.changes.recv().await {
                Ok(id) => id,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "a dashboard stream fell behind; some jobs' changes were skipped");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            let (matches, last) = match self.seen.get(&changed) {
                Some(seen) => *seen,
                None => match self.jobs.get(&changed).await {
                    Ok(job) => (self.filter.matches(&job), 0),
                    Err(_) => continue,
                },
            };
            self.seen.insert(changed.clone(), (matches, last));
            if !matches {
                continue;
            }
            let Ok(events) = self.jobs.events(&changed, last, EVENT_PAGE).await else { continue };
            if let Some(e) = events.last() {
                self.seen.insert(changed, (true, e.seq));
            }
            let since = self.since;
            self.ready.extend(events.into_iter().filter(|e| e.at >= since));
        }
    }
}

/// `GET /v1/events?queue=Q&label=KEY:VALUE`: the changes of every job that matches, from now
/// on, for dashboards. Event ids are `JOB:SEQ`; to catch up on one job after a disconnect,
/// read that job's own stream.
async fn all_events(
    State(jobs): State<Jobs>,
    who: Who,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let Query(pairs) = q.map_err(|e| Status::invalid_argument(format!("Invalid query string: {e}")))?;
    let mut filter = JobFilter { queue: None, label: None };
    for (k, v) in pairs {
        match k.as_str() {
            "queue" => filter.queue = Some(crate::jobs::queue_name(&v)?),
            "label" => {
                let (key, value) = v.split_once(':').ok_or_else(|| {
                    Status::invalid_argument(format!("label \"{v}\" must be KEY:VALUE, for example user:42"))
                })?;
                filter.label = Some((key.to_string(), value.to_string()));
            }
            // The guard read it: a browser's EventSource cannot send headers.
            "access_token" => {}
            other => {
                return Err(Status::invalid_argument(format!(
                    "Unknown query parameter \"{other}\"; the event stream is filtered by queue and label"
                ))
                .into());
            }
        }
    }
    within_filter(&principal_of(who), filter.queue.as_ref().map(|q| q.to_string()))?;
    let dashboard = Dashboard {
        _slot: jobs.stream_slot()?,
        changes: jobs.changes(),
        since: jobs.now(),
        jobs,
        filter,
        seen: Default::default(),
        ready: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(dashboard, Dashboard::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// `POST /v1/queues`: a Cloud Tasks queue (its JSON, as for `/v2`) with a `type`, `push`
/// (the default) or `pull`. The type is fixed once the queue exists.
async fn create_queue(
    State(tasks): State<crate::service::CloudTasks>,
    who: Who,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut body = body_json(body)?;
    let kind = match body.as_object_mut().and_then(|o| o.remove("type")) {
        None | Some(Value::Null) => tasklane_core::QueueKind::Push,
        Some(Value::String(t)) => tasklane_core::QueueKind::parse(&t)
            .ok_or_else(|| Status::invalid_argument(format!("type \"{t}\" must be push or pull")))?,
        Some(_) => return Err(Status::invalid_argument("type must be push or pull").into()),
    };
    let (name, spec) = crate::rest::wire::queue_spec("queue", Some(&body))?;
    let full = crate::jobs::queue_name(&name)?;
    principal_of(who).within(&full.to_string())?;
    let queue = tasks.create_queue_of_kind(&full.parent.to_string(), &full.to_string(), spec, kind).await?;
    let mut out = crate::rest::wire::queue_json(&queue, crate::rest::wire::Render::default());
    out["type"] = json!(queue.kind.as_str());
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// A pull task: `{"name", "payload" | "payload_base64", "tag", "env", "schedule_time"}`.
fn pull_spec(path: &str, value: &Value) -> Result<tasklane_core::PullSpec, Status> {
    let mut t = Obj::new(path, Some(value))?;
    let mut spec = tasklane_core::PullSpec { name: t.string("name")?, ..Default::default() };
    spec.payload = match (t.string("payload")?, t.string("payload_base64")?) {
        (Some(_), Some(_)) => {
            return Err(Status::invalid_argument(format!("{path} may have payload or payload_base64, not both")));
        }
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => decode_base64(&b64)
            .ok_or_else(|| Status::invalid_argument(format!("{path}.payload_base64 is not valid base64")))?,
        (None, None) => Vec::new(),
    };
    spec.tag = t.string("tag")?;
    spec.env = t.string_map("env")?;
    spec.schedule_time = t.timestamp("schedule_time")?;
    t.finish()?;
    Ok(spec)
}

fn pull_task_json(t: &tasklane_core::Task) -> Value {
    let env: Map<String, Value> = t.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "name": t.name.to_string(),
        "id": t.name.task,
        "payload_base64": encode_base64(&t.http_request.body),
        "tag": t.tag,
        "env": env,
        "schedule_time": format_timestamp(t.schedule_time),
        "attempt": t.dispatch_count,
        "job_id": t.job_id,
    })
}

async fn create_pull_tasks(
    State(pull): State<Pull>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_json(body)?;
    let (specs, single) = match body.get("tasks") {
        Some(Value::Array(items)) => {
            if body.as_object().is_some_and(|o| o.len() > 1) {
                return Err(Status::invalid_argument("a request has tasks, or one task's fields, not both").into());
            }
            (
                items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| pull_spec(&format!("tasks[{i}]"), t))
                    .collect::<Result<Vec<_>, _>>()?,
                false,
            )
        }
        Some(_) => return Err(Status::invalid_argument("tasks must be a list of tasks").into()),
        None => (vec![pull_spec("task", &body)?], true),
    };
    let results = pull.create(&queue, specs).await?;
    if single {
        let task = results.into_iter().next().ok_or_else(|| Status::internal("no result"))??;
        return Ok((StatusCode::CREATED, axum::Json(pull_task_json(&task))).into_response());
    }
    let (mut created, mut failed) = (Vec::new(), Vec::new());
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(t) => created.push(pull_task_json(t)),
            Err(e) => failed.push(json!({"index": i, "status": e.code.name(), "message": e.message})),
        }
    }
    Ok(axum::Json(json!({"tasks": created, "failed": failed})).into_response())
}

fn leased_json(l: &Leased) -> Value {
    let mut out = pull_task_json(&l.task);
    out["lease_id"] = json!(l.lease_id);
    out["lease_expires_at"] = json!(format_timestamp(l.lease_expires_at));
    out["job_token"] = json!(l.job_token);
    out
}

async fn lease_tasks(
    State(pull): State<Pull>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_json(body)?;
    let mut o = Obj::new("", Some(&body))?;
    let max_tasks = o.i64("max_tasks")?.unwrap_or(1);
    let lease = match o.string("lease_duration")? {
        Some(d) => parse_duration("lease_duration", &d)?,
        None => crate::pull::DEFAULT_LEASE,
    };
    let wait = match o.string("wait")? {
        Some(d) => parse_duration("wait", &d)?,
        None => Duration::ZERO,
    };
    let tag = o.string("tag")?;
    o.finish()?;
    let request = LeaseRequest { queue, max_tasks: usize::try_from(max_tasks).unwrap_or(0), lease, tag, wait };
    let leased = pull.lease(request).await?;
    Ok(axum::Json(json!({ "tasks": leased.iter().map(leased_json).collect::<Vec<_>>() })).into_response())
}

/// The `tasks` of a lease operation: `[{"name", "lease_id", ...}]`, with each item's extra fields.
/// Each named task with the extra fields its item had.
type LeaseItems = Vec<(LeaseRef, Map<String, Value>)>;

fn lease_refs(body: &Value, extra: &[&str]) -> Result<LeaseItems, Status> {
    let mut o = Obj::new("", Some(body))?;
    let mut out = Vec::new();
    for (i, mut item) in o.objects("tasks")?.into_iter().enumerate() {
        let name = item
            .string("name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Status::invalid_argument(format!("tasks[{i}].name is required")))?;
        let lease_id = item
            .i64("lease_id")?
            .ok_or_else(|| Status::invalid_argument(format!("tasks[{i}].lease_id is required")))?;
        let mut fields = Map::new();
        for f in extra {
            if let Some(v) = item.string(f)? {
                fields.insert((*f).to_string(), json!(v));
            }
        }
        item.finish()?;
        out.push((LeaseRef { name, lease_id }, fields));
    }
    o.ignore("lease_duration");
    o.finish()?;
    if out.is_empty() {
        return Err(Status::invalid_argument("tasks must name at least one task with its lease_id"));
    }
    Ok(out)
}

/// Answer a lease operation: one refused task is an error; otherwise done and refused lists.
fn lease_answer(done_key: &str, done: Vec<Value>, mut refused: Vec<(String, Status)>, asked: usize) -> ApiResult {
    if asked == 1 && !refused.is_empty() {
        let (_, e) = refused.remove(0);
        return Err(e.into());
    }
    let refused: Vec<Value> = refused
        .into_iter()
        .map(|(name, e)| json!({"name": name, "status": e.code.name(), "reason": e.message}))
        .collect();
    let mut out = Map::new();
    out.insert(done_key.to_string(), Value::Array(done));
    out.insert("refused".into(), Value::Array(refused));
    Ok(axum::Json(Value::Object(out)).into_response())
}

/// Run `op` on every named task at once (the store commits them together); split what was
/// done from what was refused.
async fn each<'a, T, F, Fut>(items: &'a LeaseItems, op: F) -> (Vec<T>, Vec<(String, Status)>)
where
    F: Fn(&'a LeaseRef, &'a Map<String, Value>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>> + 'a,
{
    let results = futures_util::future::join_all(items.iter().map(|(r, extra)| op(r, extra))).await;
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    for ((r, _), result) in items.iter().zip(results) {
        match result {
            Ok(v) => done.push(v),
            Err(e) => refused.push((r.name.clone(), e)),
        }
    }
    (done, refused)
}

async fn acknowledge_tasks(
    State(pull): State<Pull>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let refs = lease_refs(&body_json(body)?, &[])?;
    let q = pull.queue(&queue).await?;
    let (done, refused) = each(&refs, |r, _| pull.acknowledge(&q, r)).await;
    let done = done.iter().map(|name| json!(name.to_string())).collect();
    lease_answer("acknowledged", done, refused, refs.len())
}

async fn fail_tasks(
    State(pull): State<Pull>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let refs = lease_refs(&body_json(body)?, &["reason"])?;
    let q = pull.queue(&queue).await?;
    let (done, refused) =
        each(&refs, |r, extra| pull.fail(&q, r, extra.get("reason").and_then(Value::as_str).unwrap_or(""))).await;
    let done = done
        .into_iter()
        .map(|(name, failed)| match failed {
            Failed::Retry { at } => json!({"name": name.to_string(), "retry_at": format_timestamp(at)}),
            Failed::DeadLettered => json!({"name": name.to_string(), "dead_lettered": true}),
        })
        .collect();
    lease_answer("failed", done, refused, refs.len())
}

async fn renew_tasks(
    State(pull): State<Pull>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_json(body)?;
    let lease = match body.get("lease_duration").and_then(Value::as_str) {
        Some(d) => parse_duration("lease_duration", d)?,
        None => crate::pull::DEFAULT_LEASE,
    };
    let refs = lease_refs(&body, &[])?;
    let q = pull.queue(&queue).await?;
    let (done, refused) = each(&refs, |r, _| pull.renew(&q, r, lease)).await;
    let done = done
        .into_iter()
        .map(|(name, until)| json!({"name": name.to_string(), "lease_expires_at": format_timestamp(until)}))
        .collect();
    lease_answer("renewed", done, refused, refs.len())
}

async fn cancel_leases(
    State(pull): State<Pull>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let refs = lease_refs(&body_json(body)?, &[])?;
    let q = pull.queue(&queue).await?;
    let (done, refused) = each(&refs, |r, _| pull.cancel_lease(&q, r)).await;
    let done = done.iter().map(|name| json!(name.to_string())).collect();
    lease_answer("released", done, refused, refs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (path, method) the `/v1` routers serve, read from their `.route(...)` calls, so
    /// no list is kept by hand: a route added without its document fails the test below.
    fn served() -> std::collections::BTreeSet<(String, String)> {
        let source = [include_str!("v1.rs"), include_str!("v1_access.rs")].concat();
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

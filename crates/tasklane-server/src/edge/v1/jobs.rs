//! `/v1/jobs…`: jobs, workers' reports, event streams (one job's and the dashboard's`.

use super::*;

/// One task of a job: `{"url", "method", "headers", "body" | "body_base64", "schedule_time",
/// "dispatch_deadline", "oidc_token", "oauth_token"}`.
pub(super) fn task_spec(path: &str, value: &Value) -> Result<TaskSpec, Status> {
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
pub(super) fn job_task(path: &str, value: &Value) -> Result<JobTask, Status> {
    let pull = value.get("payload").is_some() || value.get("payload_base64").is_some();
    if pull { Ok(JobTask::Pull(pull_spec(path, value)?)) } else { Ok(JobTask::Push(task_spec(path, value)?)) }
}

pub(super) fn job_spec(body: &Value) -> Result<JobSpec, Status> {
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

pub(super) fn callback_json(c: &Callback) -> Value {
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

pub(super) async fn create_job(State(jobs): State<Jobs>, who: Who, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let spec = job_spec(&body_json(body)?)?;
    principal_of(who).within(&crate::jobs::queue_name(&spec.queue)?.to_string())?;
    let (job, existed) = jobs.create(spec).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, axum::Json(job_json(&job))).into_response())
}

pub(super) async fn get_job(State(jobs): State<Jobs>, who: Who, Path(id): Path<String>) -> ApiResult {
    let job = jobs.get(&id).await?;
    principal_of(who).within(&job.queue.to_string())?;
    let mut out = job_json(&job);
    let callbacks = jobs.callbacks(&id).await?;
    if !callbacks.is_empty() {
        out["callbacks"] = Value::Array(callbacks.iter().map(callback_json).collect());
    }
    Ok(axum::Json(out).into_response())
}

pub(super) async fn job_verb(State(jobs): State<Jobs>, who: Who, Path(segment): Path<String>) -> ApiResult {
    match segment.split_once(':') {
        Some((id, "cancel")) => {
            principal_of(who).within(&jobs.get(id).await?.queue.to_string())?;
            Ok(axum::Json(job_json(&jobs.cancel(id).await?)).into_response())
        }
        _ => Err(Status::not_found(format!("Unknown method POST /v1/jobs/{segment}; jobs support :cancel")).into()),
    }
}

pub(super) async fn list_jobs(
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
pub(super) fn worker_token(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    header(JOB_TOKEN_HEADER)
        .or_else(|| header("authorization").and_then(|v| v.strip_prefix("Bearer ")))
        .map(String::from)
}

pub(super) async fn report(jobs: Jobs, id: String, headers: HeaderMap, kind: JobReportKind) -> ApiResult {
    let job = jobs.report(WorkerReport { job: id, token: worker_token(&headers), kind }).await?;
    Ok(axum::Json(job_json(&job)).into_response())
}

pub(super) async fn report_progress(
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

pub(super) async fn report_result(
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

pub(super) async fn report_failure(
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
pub(super) fn sse_event(e: &JobEvent, id: String) -> Event {
    let data = json!({ "seq": e.seq, "kind": e.kind, "at": format_timestamp(e.at), "job": job_json(&e.job) });
    Event::default().id(id).event(e.kind.clone()).data(data.to_string())
}

pub(super) struct Watch {
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
pub(super) async fn job_events(
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

/// Which jobs a dashboard stream follows.
pub(super) struct JobFilter {
    queue: Option<tasklane_core::QueueName>,
    label: Option<(String, String)>,
}

impl JobFilter {
    fn matches(&self, job: &Job) -> bool {
        self.queue.as_ref().is_none_or(|q| &job.queue == q)
            && self.label.as_ref().is_none_or(|(k, v)| job.labels.iter().any(|(jk, jv)| jk == k && jv == v))
    }
}

pub(super) struct Dashboard {
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
pub(super) async fn all_events(
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

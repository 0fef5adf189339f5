//! `/v1/queues…` for pull queues: created, their tasks added, leased, acknowledged, failed, renewed and given back`.

use super::*;

/// `POST /v1/queues`: a Cloud Tasks queue (its JSON, as for `/v2`) with a `type`, `push`
/// (the default) or `pull`. The type is fixed once the queue exists.
pub(super) async fn create_queue(
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
pub(super) fn pull_spec(path: &str, value: &Value) -> Result<tasklane_core::PullSpec, Status> {
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

pub(super) fn pull_task_json(t: &tasklane_core::Task) -> Value {
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

pub(super) async fn create_pull_tasks(
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

pub(super) fn leased_json(l: &Leased) -> Value {
    let mut out = pull_task_json(&l.task);
    out["lease_id"] = json!(l.lease_id);
    out["lease_expires_at"] = json!(format_timestamp(l.lease_expires_at));
    out["job_token"] = json!(l.job_token);
    out
}

pub(super) async fn lease_tasks(
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

pub(super) fn lease_refs(body: &Value, extra: &[&str]) -> Result<LeaseItems, Status> {
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
pub(super) fn lease_answer(
    done_key: &str,
    done: Vec<Value>,
    mut refused: Vec<(String, Status)>,
    asked: usize,
) -> ApiResult {
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
pub(super) async fn each<'a, T, F, Fut>(items: &'a LeaseItems, op: F) -> (Vec<T>, Vec<(String, Status)>)
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

pub(super) async fn acknowledge_tasks(
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

pub(super) async fn fail_tasks(
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

pub(super) async fn renew_tasks(
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

pub(super) async fn cancel_leases(
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

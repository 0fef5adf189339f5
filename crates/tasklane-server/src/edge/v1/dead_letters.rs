//! `/v1/queues/{queue}/dead-letters…`: a queue's dead letters, read, redriven and purged`.

use super::*;

pub(super) fn dead_letter_json(d: &DeadLetter) -> Value {
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

pub(super) async fn list_dead_letters(
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

pub(super) fn dead_letter_id(id: &str) -> Result<i64, Status> {
    id.parse().map_err(|_| Status::invalid_argument(format!("\"{id}\" is not a dead letter id; ids are numbers")))
}

pub(super) async fn get_dead_letter(
    State(dead): State<DeadLetters>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(axum::Json(dead_letter_json(&dead.get(&queue, dead_letter_id(&id)?).await?)).into_response())
}

pub(super) async fn delete_dead_letter(
    State(dead): State<DeadLetters>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult {
    let id = dead_letter_id(&id)?;
    if dead.purge(&queue, DeadLetterSelect::Ids(vec![id])).await? == 0 {
        return Err(Status::not_found(format!("Dead letter {id} was not found.")).into());
    }
    Ok(axum::Json(json!({})).into_response())
}

/// `{"ids": [1, 2]}` or `{"all": true}`.
pub(super) fn selection(body: &Value) -> Result<DeadLetterSelect, Status> {
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

pub(super) async fn redrive_dead_letters(
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

pub(super) async fn purge_dead_letters(
    State(dead): State<DeadLetters>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let select = selection(&body_json(body)?)?;
    let purged = dead.purge(&queue, select).await?;
    Ok(axum::Json(json!({ "purged": purged })).into_response())
}

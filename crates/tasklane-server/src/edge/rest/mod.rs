//! The Cloud Tasks v2 REST/JSON API: routes, request parsing and Google-shaped errors.
//! Every handler parses into core types and calls `CloudTasks`; nothing here decides.

pub mod proto_json;
pub mod wire;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tasklane_core::{Code, Status};

use crate::grpc::messages;
use crate::operations::BatchCreateItem;
use crate::service::CloudTasks;
use proto_json::Obj;
use wire::Render;

/// Largest request body accepted: a 1 MB task body grows by a third in base64.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// An error answered in Google's JSON shape.
#[derive(Debug)]
pub struct ApiError(pub Status);

impl From<Status> for ApiError {
    fn from(s: Status) -> Self {
        ApiError(s)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let http = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut error = serde_json::Map::new();
        error.insert("code".into(), json!(code.http_status()));
        error.insert("message".into(), json!(self.0.message));
        error.insert("status".into(), json!(code.name()));
        if !self.0.details.is_empty() {
            error.insert("details".into(), self.0.details.iter().map(wire::detail_json).collect());
        }
        (http, pretty_json(&json!({ "error": error }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Query parameters every Google API takes, whatever the method.
const STANDARD_PARAMETERS: [&str; 16] = [
    "$alt",
    "alt",
    "$.xgafv",
    "access_token",
    "callback",
    "fields",
    "$fields",
    "key",
    "oauth_token",
    "prettyPrint",
    "$prettyPrint",
    "quotaUser",
    "$quotaUser",
    "upload_protocol",
    "uploadType",
    "$callback",
];

/// Query parameters of a request, and the rendering they ask for.
struct Params {
    pairs: Vec<(String, String)>,
    render: Render,
}

impl Params {
    /// The query of a request whose message binds `fields` (camelCase) from the query;
    /// any other parameter but Google's standard ones is refused, as Google's front end does.
    fn from(q: Result<Query<Vec<(String, String)>>, QueryRejection>, fields: &[&str]) -> Result<Params, ApiError> {
        let Query(pairs) = q.map_err(|e| Status::invalid_argument(format!("Invalid query string: {e}")))?;
        for (name, _) in &pairs {
            let snake = tasklane_core::queue::snake_case_path(name);
            let bound = fields.iter().any(|f| f == name || tasklane_core::queue::snake_case_path(f) == snake);
            if !bound && !STANDARD_PARAMETERS.contains(&name.as_str()) {
                let text = format!(
                    "Invalid JSON payload received. Unknown name \"{name}\": Cannot bind query parameter. Field \
                     '{name}' could not be found in request message."
                );
                return Err(proto_json::parse_error(vec![(String::new(), text)]).into());
            }
        }
        let enums_as_int =
            pairs.iter().any(|(k, v)| k == "$alt" && v.split(';').any(|p| p.trim() == "enum-encoding=int"));
        Ok(Params { pairs, render: Render { enums_as_int } })
    }

    fn get(&self, name: &str) -> Option<&str> {
        let snake = tasklane_core::queue::snake_case_path(name);
        self.pairs.iter().find(|(k, _)| k == name || *k == snake).map(|(_, v)| v.as_str())
    }

    fn i32(&self, name: &str) -> Result<i32, Status> {
        match self.get(name) {
            None | Some("") => Ok(0),
            Some(v) => v.parse().map_err(|_| {
                let field = tasklane_core::queue::snake_case_path(name);
                Status::invalid_argument(format!("Invalid value at '{field}' (TYPE_INT32), \"{v}\""))
            }),
        }
    }

    fn update_mask(&self) -> Option<Vec<String>> {
        // JSON writes a mask's paths in camelCase; the service takes them in snake_case.
        self.get("updateMask")
            .map(|m| proto_json::split_mask(m).iter().map(|p| tasklane_core::queue::snake_case_path(p)).collect())
    }

    fn json(&self, v: Value) -> Response {
        pretty_json(&v).into_response()
    }
}

/// A JSON answer as Google's front end writes it by default: two-space indents and a
/// final newline (`?prettyPrint=false` compacts it, see [`compact_on_request`]).
fn pretty_json(v: &Value) -> impl IntoResponse + use<> {
    // One buffer sized for a task's answer, so the common case writes without regrowing.
    let mut text = Vec::with_capacity(1024);
    if serde_json::to_writer_pretty(&mut text, v).is_err() {
        text.clear();
    }
    text.push(b'\n');
    ([(axum::http::header::CONTENT_TYPE, "application/json; charset=UTF-8")], text)
}

/// `?prettyPrint=false` asks for compact JSON without the final newline. Rare, so the
/// pretty answer is re-encoded here rather than every handler knowing the parameter.
async fn compact_on_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let compact = request.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "prettyPrint" && (v == "false" || v == "0"))
    });
    let response = next.run(request).await;
    if !compact {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REQUEST_BYTES * 2).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let text = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => serde_json::to_vec(&v).unwrap_or_default(),
        Err(_) => bytes.to_vec(),
    };
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(text))
}

fn body_json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Status::invalid_argument(format!("Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes."))
        } else {
            Status::invalid_argument(format!("Could not read the request body: {e}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError(Status::invalid_argument(format!("Invalid JSON payload received. {e}"))))?;
    if !value.is_object() {
        return Err(proto_json::not_a_message().into());
    }
    Ok(value)
}

fn location(project: &str, location: &str) -> String {
    format!("projects/{project}/locations/{location}")
}

/// Split `queue:verb` (custom methods are the last path segment's suffix).
fn verb(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once(':') {
        Some((name, verb)) => (name, Some(verb)),
        None => (segment, None),
    }
}

pub fn router(service: CloudTasks) -> Router {
    let base = "/v2/projects/{project}/locations/{location}";
    Router::new()
        .route(&format!("{base}/queues"), get(list_queues).post(create_queue))
        .route(
            &format!("{base}/queues/{{queue}}"),
            get(get_queue).patch(update_queue).delete(delete_queue).post(queue_verb),
        )
        .route(&format!("{base}/queues/{{queue}}/tasks"), get(list_tasks).post(create_task))
        .route(&format!("{base}/queues/{{queue}}/tasks:batchCreate"), post(batch_create_tasks))
        .route(&format!("{base}/queues/{{queue}}/tasks:batchDelete"), post(batch_delete_tasks))
        .route(&format!("{base}/operations/{{operation}}"), get(get_operation))
        .route(&format!("{base}/cmekConfig"), get(get_cmek_config).patch(update_cmek_config))
        .route(base, get(get_location))
        .route("/v2/projects/{project}/locations", get(list_locations))
        .route(&format!("{base}/queues/{{queue}}/tasks/{{task}}"), get(get_task).delete(delete_task).post(task_verb))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn(compact_on_request))
        .with_state(service)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/v2/") || uri.path() == "/v2" {
        return page_not_found(uri.path());
    }
    ApiError(Status::new(Code::NotFound, format!("The requested URL {} was not found on this server.", uri.path())))
        .into_response()
}

/// What Google's front end answers for a path or method no API method has: a plain HTML
/// page, not a JSON error.
fn page_not_found(path: &str) -> Response {
    let path = path.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let page = format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n  \
         <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>{path}</code> was not found on this \
         server.  <ins>That’s all we know.</ins>\n"
    );
    (StatusCode::NOT_FOUND, [(axum::http::header::CONTENT_TYPE, "text/html; charset=UTF-8")], page).into_response()
}

/// Whether a path segment carries a custom verb (`queues/q:pause`) on a route that takes
/// none: no API method has that path.
fn has_verb(segment: &str) -> bool {
    segment.contains(':')
}

async fn list_queues(
    State(s): State<CloudTasks>,
    Path((project, loc)): Path<(String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::from(q, &["filter", "pageSize", "pageToken", "readMask"])?;
    let (queues, next) = s
        .list_queues(
            &location(&project, &loc),
            p.get("filter").unwrap_or(""),
            p.i32("pageSize")?,
            p.get("pageToken").unwrap_or(""),
        )
        .await?;
    let mut out = serde_json::Map::new();
    if !queues.is_empty() {
        out.insert("queues".into(), queues.iter().map(|q| wire::queue_json(q, p.render)).collect());
    }
    if !next.is_empty() {
        out.insert("nextPageToken".into(), json!(next));
    }
    Ok(p.json(Value::Object(out)))
}

async fn create_queue(
    State(s): State<CloudTasks>,
    Path((project, loc)): Path<(String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let p = Params::from(q, &[])?;
    let body = body_json(body)?;
    let (name, spec) = wire::queue_spec("queue", Some(&body))?;
    let queue = s.create_queue(&location(&project, &loc), &name, spec).await?;
    Ok(p.json(wire::queue_json(&queue, p.render)))
}

async fn get_queue(
    State(s): State<CloudTasks>,
    uri: axum::http::Uri,
    Path((project, loc, queue)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    if has_verb(&queue) {
        return Ok(page_not_found(uri.path()));
    }
    let p = Params::from(q, &["readMask"])?;
    let queue = s.get_queue(&format!("{}/queues/{queue}", location(&project, &loc))).await?;
    Ok(p.json(wire::queue_json(&queue, p.render)))
}

async fn update_queue(
    State(s): State<CloudTasks>,
    uri: axum::http::Uri,
    Path((project, loc, queue)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    if has_verb(&queue) {
        return Ok(page_not_found(uri.path()));
    }
    let p = Params::from(q, &["updateMask"])?;
    let body = body_json(body)?;
    let (body_name, spec) = wire::queue_spec("queue", Some(&body))?;
    let name = format!("{}/queues/{queue}", location(&project, &loc));
    if !body_name.is_empty() && body_name != name {
        return Err(Status::invalid_argument(format!(
            "queue.name \"{body_name}\" does not match the queue in the URL \"{name}\""
        ))
        .into());
    }
    let queue = s.update_queue(&name, spec, p.update_mask()).await?;
    Ok(p.json(wire::queue_json(&queue, p.render)))
}

async fn delete_queue(
    State(s): State<CloudTasks>,
    uri: axum::http::Uri,
    Path((project, loc, queue)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    if has_verb(&queue) {
        return Ok(page_not_found(uri.path()));
    }
    let p = Params::from(q, &[])?;
    s.delete_queue(&format!("{}/queues/{queue}", location(&project, &loc))).await?;
    Ok(p.json(json!({})))
}

/// The custom methods of a queue.
const QUEUE_VERBS: [&str; 6] = ["pause", "resume", "purge", "getIamPolicy", "setIamPolicy", "testIamPermissions"];

async fn queue_verb(
    State(s): State<CloudTasks>,
    uri: axum::http::Uri,
    Path((project, loc, segment)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    if !verb(&segment).1.is_some_and(|v| QUEUE_VERBS.contains(&v)) {
        return Ok(page_not_found(uri.path()));
    }
    let p = Params::from(q, &[])?;
    let body = body_json(body)?;
    let (queue, verb) = verb(&segment);
    let name = format!("{}/queues/{queue}", location(&project, &loc));
    let mut o = Obj::new("", Some(&body))?;
    match verb {
        Some("getIamPolicy") => {
            if let Some(mut options) = o.object("options")? {
                options.ignore("requestedPolicyVersion");
                options.finish()?;
            }
            o.finish()?;
            return Ok(p.json(wire::policy_json(&s.get_iam_policy(&name).await?, p.render)));
        }
        Some("setIamPolicy") => {
            let policy = wire::policy("policy", body.get("policy"))?;
            o.ignore("policy");
            let mask = o.field_mask("updateMask")?;
            o.finish()?;
            return Ok(p.json(wire::policy_json(&s.set_iam_policy(&name, policy, mask).await?, p.render)));
        }
        Some("testIamPermissions") => {
            let permissions = o.strings("permissions")?;
            o.finish()?;
            let granted = s.test_iam_permissions(&name, permissions).await?;
            let out = if granted.is_empty() { json!({}) } else { json!({ "permissions": granted }) };
            return Ok(p.json(out));
        }
        _ => {}
    }
    o.ignore("name");
    o.finish()?;
    let queue = match verb {
        Some("pause") => s.pause_queue(&name).await?,
        Some("resume") => s.resume_queue(&name).await?,
        _ => s.purge_queue(&name).await?,
    };
    Ok(p.json(wire::queue_json(&queue, p.render)))
}

async fn list_tasks(
    State(s): State<CloudTasks>,
    Path((project, loc, queue)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::from(q, &["responseView", "pageSize", "pageToken"])?;
    let view = wire::view_param(p.get("responseView"))?;
    let parent = format!("{}/queues/{queue}", location(&project, &loc));
    let (tasks, next) = s.list_tasks(&parent, p.i32("pageSize")?, p.get("pageToken").unwrap_or(""), view).await?;
    let mut out = serde_json::Map::new();
    if !tasks.is_empty() {
        out.insert("tasks".into(), tasks.iter().map(|t| wire::task_json(t, view, p.render)).collect());
    }
    if !next.is_empty() {
        out.insert("nextPageToken".into(), json!(next));
    }
    Ok(p.json(Value::Object(out)))
}

async fn create_task(
    State(s): State<CloudTasks>,
    Path((project, loc, queue)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let p = Params::from(q, &[])?;
    let body = body_json(body)?;
    let mut req = Obj::new("", Some(&body))?;
    let view = wire::response_view_field(&mut req)?;
    req.ignore("parent");
    let task_value = body.get("task");
    req.ignore("task");
    req.finish()?;
    let spec = wire::task_spec("task", task_value)?;
    let parent = format!("{}/queues/{queue}", location(&project, &loc));
    let task = s.create_task(&parent, spec, view).await?;
    Ok(p.json(wire::task_json(&task, view, p.render)))
}

async fn get_task(
    State(s): State<CloudTasks>,
    uri: axum::http::Uri,
    Path((project, loc, queue, task)): Path<(String, String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    if has_verb(&task) {
        return Ok(page_not_found(uri.path()));
    }
    let p = Params::from(q, &["responseView"])?;
    let view = wire::view_param(p.get("responseView"))?;
    let name = format!("{}/queues/{queue}/tasks/{task}", location(&project, &loc));
    let task = s.get_task(&name, view).await?;
    Ok(p.json(wire::task_json(&task, view, p.render)))
}

async fn delete_task(
    State(s): State<CloudTasks>,
    uri: axum::http::Uri,
    Path((project, loc, queue, task)): Path<(String, String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    if has_verb(&task) {
        return Ok(page_not_found(uri.path()));
    }
    let p = Params::from(q, &[])?;
    s.delete_task(&format!("{}/queues/{queue}/tasks/{task}", location(&project, &loc))).await?;
    Ok(p.json(json!({})))
}

async fn task_verb(
    State(s): State<CloudTasks>,
    uri: axum::http::Uri,
    Path((project, loc, queue, segment)): Path<(String, String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let p = Params::from(q, &[])?;
    let body = body_json(body)?;
    let (task, verb) = verb(&segment);
    let name = format!("{}/queues/{queue}/tasks/{task}", location(&project, &loc));
    if verb != Some("run") {
        return Ok(page_not_found(uri.path()));
    }
    let mut o = Obj::new("", Some(&body))?;
    let view = wire::response_view_field(&mut o)?;
    o.ignore("name");
    o.finish()?;
    let task = s.run_task(&name, view).await?;
    Ok(p.json(wire::task_json(&task, view, p.render)))
}

async fn batch_create_tasks(
    State(s): State<CloudTasks>,
    Path((project, loc, queue)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let p = Params::from(q, &[])?;
    let body = body_json(body)?;
    let mut o = Obj::new("", Some(&body))?;
    o.ignore("parent");
    let request_id = o.string("requestId")?.unwrap_or_default();
    let mut items = Vec::new();
    for (i, mut r) in o.objects("requests")?.into_iter().enumerate() {
        let parent = r.string("parent")?.unwrap_or_default();
        let view = wire::response_view_field(&mut r)?;
        let task_value = body["requests"][i].get("task");
        r.ignore("task");
        r.finish()?;
        items.push(BatchCreateItem { parent, spec: wire::task_spec(&format!("requests[{i}].task"), task_value), view });
    }
    o.finish()?;
    let parent = format!("{}/queues/{queue}", location(&project, &loc));
    let op = s.batch_create_tasks(&parent, items, &request_id).await?;
    Ok(p.json(wire::operation_json(&op, p.render)))
}

async fn batch_delete_tasks(
    State(s): State<CloudTasks>,
    Path((project, loc, queue)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let p = Params::from(q, &[])?;
    let body = body_json(body)?;
    let mut o = Obj::new("", Some(&body))?;
    o.ignore("parent");
    let request_id = o.string("requestId")?.unwrap_or_default();
    let names = o.strings("names")?;
    o.finish()?;
    let parent = format!("{}/queues/{queue}", location(&project, &loc));
    let op = s.batch_delete_tasks(&parent, names, &request_id).await?;
    Ok(p.json(wire::operation_json(&op, p.render)))
}

async fn get_operation(
    State(s): State<CloudTasks>,
    Path((project, loc, operation)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::from(q, &[])?;
    let op = s.get_operation(&format!("{}/operations/{operation}", location(&project, &loc))).await?;
    Ok(p.json(wire::operation_json(&op, p.render)))
}

async fn get_cmek_config(
    State(s): State<CloudTasks>,
    Path((project, loc)): Path<(String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::from(q, &[])?;
    let config = s.get_cmek_config(&format!("{}/cmekConfig", location(&project, &loc))).await?;
    Ok(p.json(wire::cmek_json(&config)))
}

async fn update_cmek_config(
    State(s): State<CloudTasks>,
    Path((project, loc)): Path<(String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let p = Params::from(q, &["updateMask"])?;
    let body = body_json(body)?;
    let mut o = Obj::new("cmek_config", Some(&body))?;
    let url_name = format!("{}/cmekConfig", location(&project, &loc));
    let name = o.string("name")?.filter(|n| !n.is_empty()).unwrap_or_else(|| url_name.clone());
    if name != url_name {
        return Err(Status::invalid_argument(format!(
            "cmek_config.name \"{name}\" does not match the config in the URL \"{url_name}\""
        ))
        .into());
    }
    let kms_key = o.string("kmsKey")?.unwrap_or_default();
    o.finish()?;
    let config = s.update_cmek_config(Some(messages::CmekConfig { name, kms_key }), p.update_mask()).await?;
    Ok(p.json(wire::cmek_json(&config)))
}

async fn get_location(
    State(s): State<CloudTasks>,
    Path((project, loc)): Path<(String, String)>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::from(q, &[])?;
    Ok(p.json(wire::location_json(&s.get_location(&location(&project, &loc)).await?)))
}

async fn list_locations(
    State(s): State<CloudTasks>,
    Path(project): Path<String>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::from(q, &["filter", "pageSize", "pageToken", "extraLocationTypes"])?;
    let locations = s.list_locations(&format!("projects/{project}")).await?;
    let out = if locations.is_empty() {
        json!({})
    } else {
        json!({ "locations": locations.iter().map(wire::location_json).collect::<Vec<_>>() })
    };
    Ok(p.json(out))
}

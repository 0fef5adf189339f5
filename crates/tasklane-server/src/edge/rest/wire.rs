//! Cloud Tasks v2 messages in JSON: requests read into core specs, core types rendered
//! with the field names and value formats of the real API.

use serde_json::{Map, Value, json};
use tasklane_core::queue::{QueueSpec, RateSpec};
use tasklane_core::retry::{RetryConfig, RetrySpec};
use tasklane_core::status::Detail;
use tasklane_core::target::{EnforceMode, HttpTarget, Scheme, UriOverride, texts as target_texts};
use tasklane_core::task::{Attempt, AuthToken, TaskSpec, texts};
use tasklane_core::{HttpMethod, LocationName, Queue, QueueState, Status, Task, TaskView};

use crate::grpc::{convert, messages as m};
use crate::operations::{BatchKind, BatchOperation};

use super::proto_json::{Obj, encode_base64, format_duration_micros, format_timestamp};

const QUEUE_STATES: [(&str, i32); 4] = [("STATE_UNSPECIFIED", 0), ("RUNNING", 1), ("PAUSED", 2), ("DISABLED", 3)];
const VIEWS: [(&str, i32); 3] = [("VIEW_UNSPECIFIED", 0), ("BASIC", 1), ("FULL", 2)];
const METHODS: [(&str, i32); 8] = [
    ("HTTP_METHOD_UNSPECIFIED", 0),
    ("POST", 1),
    ("GET", 2),
    ("HEAD", 3),
    ("PUT", 4),
    ("DELETE", 5),
    ("PATCH", 6),
    ("OPTIONS", 7),
];

/// How enums are written back: by name, or by number when the client asked for
/// `$alt=json;enum-encoding=int` (the official REST transports do).
#[derive(Debug, Clone, Copy, Default)]
pub struct Render {
    pub enums_as_int: bool,
}

impl Render {
    fn enumeration(self, names: &[(&str, i32)], n: i32) -> Value {
        if self.enums_as_int {
            return Value::from(n);
        }
        Value::from(names.iter().find(|(_, v)| *v == n).map_or("", |(s, _)| *s))
    }
}

pub fn view_from(n: Option<i32>) -> TaskView {
    if n == Some(2) { TaskView::Full } else { TaskView::Basic }
}

/// A `responseView` query parameter, by name or number.
pub fn view_param(value: Option<&str>) -> Result<TaskView, Status> {
    match value {
        None | Some("") => Ok(TaskView::Basic),
        Some(v) => {
            let n = VIEWS.iter().find(|(name, num)| *name == v || num.to_string() == v).map(|(_, n)| *n);
            n.map(|n| view_from(Some(n))).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "Invalid value at 'response_view' (type.googleapis.com/google.cloud.tasks.v2.Task.View), \"{v}\""
                ))
            })
        }
    }
}

/// Read a `Queue` message; returns its name (possibly empty) and settable fields.
pub fn queue_spec(path: &str, value: Option<&Value>) -> Result<(String, QueueSpec), Status> {
    let mut q = Obj::new(path, value)?;
    let name = q.string("name")?.unwrap_or_default();
    let mut spec = QueueSpec::default();
    if let Some(mut r) = q.object("rateLimits")? {
        spec.rate = RateSpec {
            max_dispatches_per_second: r.f64("maxDispatchesPerSecond")?.unwrap_or(0.0),
            max_concurrent_dispatches: r.i32("maxConcurrentDispatches")?.unwrap_or(0),
        };
        r.ignore("maxBurstSize"); // output only: derived from the rate
        r.finish()?;
    }
    if let Some(r) = q.object("retryConfig")? {
        spec.retry = retry_spec(r)?;
    }
    if let Some(mut l) = q.object("stackdriverLoggingConfig")? {
        spec.logging_sampling_ratio = l.f64("samplingRatio")?.unwrap_or(0.0);
        l.finish()?;
    }
    if let Some(t) = q.object("httpTarget")? {
        spec.http_target = Some(http_target(t)?);
    }
    // Output-only fields are accepted and ignored, as the real service does.
    q.ignore("state");
    q.ignore("purgeTime");
    q.ignore("appEngineRoutingOverride");
    q.finish()?;
    Ok((name, spec))
}

pub(crate) fn retry_spec(mut r: Obj<'_>) -> Result<RetrySpec, Status> {
    let spec = RetrySpec {
        max_attempts: r.i32("maxAttempts")?.unwrap_or(0),
        max_retry_duration_micros: r.duration_micros("maxRetryDuration")?.unwrap_or(0),
        min_backoff_micros: r.duration_micros("minBackoff")?.unwrap_or(0),
        max_backoff_micros: r.duration_micros("maxBackoff")?.unwrap_or(0),
        max_doublings: r.i32("maxDoublings")?.unwrap_or(0),
    };
    r.finish()?;
    Ok(spec)
}

const SCHEMES: [(&str, i32); 3] = [("SCHEME_UNSPECIFIED", 0), ("HTTP", 1), ("HTTPS", 2)];
const ENFORCE_MODES: [(&str, i32); 3] =
    [("URI_OVERRIDE_ENFORCE_MODE_UNSPECIFIED", 0), ("IF_NOT_EXISTS", 1), ("ALWAYS", 2)];

fn token(oidc: Option<Obj<'_>>, oauth: Option<Obj<'_>>) -> Result<Option<AuthToken>, Status> {
    match (oidc, oauth) {
        (Some(_), Some(_)) => Err(Status::invalid_argument(texts::BOTH_TOKENS)),
        (Some(mut o), None) => {
            let token = AuthToken::Oidc {
                service_account_email: o.string("serviceAccountEmail")?.unwrap_or_default(),
                audience: o.string("audience")?.unwrap_or_default(),
            };
            o.finish()?;
            Ok(Some(token))
        }
        (None, Some(mut o)) => {
            let token = AuthToken::OAuth {
                service_account_email: o.string("serviceAccountEmail")?.unwrap_or_default(),
                scope: o.string("scope")?.unwrap_or_default(),
            };
            o.finish()?;
            Ok(Some(token))
        }
        (None, None) => Ok(None),
    }
}

/// Read a queue's `HttpTarget`.
fn http_target(mut t: Obj<'_>) -> Result<HttpTarget, Status> {
    let uri_override = match t.object("uriOverride")? {
        None => None,
        Some(mut u) => {
            let scheme =
                Scheme::from_number(u.enumeration("scheme", "google.cloud.tasks.v2.UriOverride.Scheme", &SCHEMES)?)?;
            let path = match u.object("pathOverride")? {
                None => None,
                Some(mut p) => {
                    let path = p.string("path")?.unwrap_or_default();
                    p.finish()?;
                    Some(path)
                }
            };
            let query = match u.object("queryOverride")? {
                None => None,
                Some(mut q) => {
                    let query = q.string("queryParams")?.unwrap_or_default();
                    q.finish()?;
                    Some(query)
                }
            };
            let mode = u.enumeration(
                "uriOverrideEnforceMode",
                "google.cloud.tasks.v2.UriOverride.UriOverrideEnforceMode",
                &ENFORCE_MODES,
            )?;
            let o = UriOverride {
                scheme,
                host: u.string("host")?,
                port: u.i64("port")?,
                path,
                query,
                mode: EnforceMode::from_number(mode.unwrap_or(0))?,
            };
            u.finish()?;
            Some(o)
        }
    };
    let method = match t.enumeration("httpMethod", "google.cloud.tasks.v2.HttpMethod", &METHODS)? {
        None | Some(0) => None,
        Some(n) => Some(HttpMethod::from_i32(n).ok_or_else(|| target_texts::error(target_texts::BAD_TARGET))?),
    };
    let mut headers = Vec::new();
    for mut o in t.objects("headerOverrides")? {
        if let Some(mut h) = o.object("header")? {
            headers.push((h.string("key")?.unwrap_or_default(), h.string("value")?.unwrap_or_default()));
            h.finish()?;
        }
        o.finish()?;
    }
    let oidc = t.object("oidcToken")?;
    let oauth = t.object("oauthToken")?;
    let auth = token(oidc, oauth)?;
    t.finish()?;
    Ok(HttpTarget { uri_override, method, headers, auth })
}

fn auth_json(auth: &Option<AuthToken>, out: &mut Map<String, Value>) {
    match auth {
        Some(AuthToken::Oidc { service_account_email, audience }) => {
            out.insert("oidcToken".into(), json!({"serviceAccountEmail": service_account_email, "audience": audience}));
        }
        Some(AuthToken::OAuth { service_account_email, scope }) => {
            out.insert("oauthToken".into(), json!({"serviceAccountEmail": service_account_email, "scope": scope}));
        }
        None => {}
    }
}

fn http_target_json(t: &HttpTarget, render: Render) -> Value {
    let mut out = Map::new();
    if let Some(u) = &t.uri_override {
        let mut o = Map::new();
        if let Some(s) = u.scheme {
            o.insert("scheme".into(), render.enumeration(&SCHEMES, s.number()));
        }
        if let Some(h) = &u.host {
            o.insert("host".into(), json!(h));
        }
        if let Some(p) = u.port {
            o.insert("port".into(), json!(p.to_string()));
        }
        if let Some(p) = &u.path {
            o.insert("pathOverride".into(), json!({ "path": p }));
        }
        if let Some(q) = &u.query {
            o.insert("queryOverride".into(), json!({ "queryParams": q }));
        }
        // An unspecified mode is the enum's zero, which proto3 JSON leaves out.
        if u.mode != EnforceMode::Unspecified {
            o.insert("uriOverrideEnforceMode".into(), render.enumeration(&ENFORCE_MODES, u.mode.number()));
        }
        out.insert("uriOverride".into(), Value::Object(o));
    }
    if let Some(m) = t.method {
        out.insert("httpMethod".into(), render.enumeration(&METHODS, m as i32));
    }
    if !t.headers.is_empty() {
        let headers: Vec<Value> = t.headers.iter().map(|(k, v)| json!({"header": {"key": k, "value": v}})).collect();
        out.insert("headerOverrides".into(), Value::Array(headers));
    }
    auth_json(&t.auth, &mut out);
    Value::Object(out)
}

fn retry_json(c: &RetryConfig) -> Value {
    let micros = tasklane_core::clock::duration_micros;
    let mut retry = Map::new();
    retry.insert("maxAttempts".into(), json!(c.max_attempts));
    if let Some(d) = c.max_retry_duration {
        retry.insert("maxRetryDuration".into(), json!(format_duration_micros(micros(d))));
    }
    retry.insert("minBackoff".into(), json!(format_duration_micros(micros(c.min_backoff))));
    retry.insert("maxBackoff".into(), json!(format_duration_micros(micros(c.max_backoff))));
    retry.insert("maxDoublings".into(), json!(c.max_doublings));
    Value::Object(retry)
}

/// Read a `Task` message.
pub fn task_spec(path: &str, value: Option<&Value>) -> Result<TaskSpec, Status> {
    let mut t = Obj::new(path, value)?;
    if !t.is_present() {
        return Err(Status::invalid_argument(texts::PAYLOAD_NOT_SET));
    }
    let mut spec = TaskSpec { name: t.string("name")?, ..TaskSpec::default() };
    if t.object("appEngineHttpRequest")?.is_some() {
        return Err(Status::invalid_argument(texts::APP_ENGINE_UNSUPPORTED));
    }
    let Some(mut r) = t.object("httpRequest")? else {
        return Err(Status::invalid_argument(texts::PAYLOAD_NOT_SET));
    };
    spec.url = r.string("url")?.unwrap_or_default();
    // A method number the API lacks is taken as POST, as the real service takes it.
    spec.method = match r.enumeration("httpMethod", "google.cloud.tasks.v2.HttpMethod", &METHODS)? {
        None | Some(0) => None,
        Some(n) => Some(HttpMethod::from_i32(n).unwrap_or(HttpMethod::Post)),
    };
    spec.headers = r.string_map("headers")?;
    spec.body = r.bytes("body")?.unwrap_or_default();
    let oidc = r.object("oidcToken")?;
    let oauth = r.object("oauthToken")?;
    spec.auth = token(oidc, oauth)?;
    r.finish()?;
    if let Some(c) = t.object("retryConfig")? {
        spec.retry = Some(retry_spec(c)?);
    }
    spec.schedule_time = t.timestamp("scheduleTime")?;
    spec.dispatch_deadline_micros = t.duration_micros("dispatchDeadline")?;
    for output_only in ["createTime", "dispatchCount", "responseCount", "firstAttempt", "lastAttempt", "view"] {
        t.ignore(output_only);
    }
    t.finish()?;
    Ok(spec)
}

/// Read the `responseView` field of a request body.
pub fn response_view_field(o: &mut Obj<'_>) -> Result<TaskView, Status> {
    Ok(view_from(o.enumeration("responseView", "google.cloud.tasks.v2.Task.View", &VIEWS)?))
}

pub fn queue_json(q: &Queue, render: Render) -> Value {
    let r = &q.rate_limits;
    let state = match q.state {
        QueueState::Running => 1,
        QueueState::Paused => 2,
        QueueState::Disabled => 3,
    };
    let mut out = Map::new();
    out.insert("name".into(), json!(q.name.to_string()));
    out.insert(
        "rateLimits".into(),
        json!({
            "maxDispatchesPerSecond": double(r.max_dispatches_per_second),
            "maxBurstSize": r.max_burst_size,
            "maxConcurrentDispatches": r.max_concurrent_dispatches,
        }),
    );
    out.insert("retryConfig".into(), retry_json(&q.retry_config));
    out.insert("state".into(), render.enumeration(&QUEUE_STATES, state));
    if let Some(t) = q.purge_time {
        out.insert("purgeTime".into(), json!(format_timestamp(t)));
    }
    if q.logging_sampling_ratio > 0.0 {
        out.insert("stackdriverLoggingConfig".into(), json!({ "samplingRatio": double(q.logging_sampling_ratio) }));
    }
    if let Some(t) = &q.http_target {
        out.insert("httpTarget".into(), http_target_json(t, render));
    }
    Value::Object(out)
}

/// A double as proto3 JSON writes it: integral values without a fraction (`500`, not `500.0`).
fn double(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 { Value::from(f as i64) } else { Value::from(f) }
}

fn attempt_json(a: &Attempt) -> Value {
    let mut out = Map::new();
    if let Some(t) = a.schedule_time {
        out.insert("scheduleTime".into(), json!(format_timestamp(t)));
    }
    if let Some(t) = a.dispatch_time {
        out.insert("dispatchTime".into(), json!(format_timestamp(t)));
    }
    if let Some(t) = a.response_time {
        out.insert("responseTime".into(), json!(format_timestamp(t)));
    }
    if let Some(s) = &a.response_status {
        let mut status = Map::new();
        if s.code as i32 != 0 {
            status.insert("code".into(), json!(s.code as i32));
        }
        if !s.message.is_empty() {
            status.insert("message".into(), json!(s.message));
        }
        out.insert("responseStatus".into(), Value::Object(status));
    }
    Value::Object(out)
}

pub fn task_json(t: &Task, view: TaskView, render: Render) -> Value {
    let r = &t.http_request;
    let mut req = Map::new();
    req.insert("url".into(), json!(r.url));
    req.insert("httpMethod".into(), render.enumeration(&METHODS, r.method as i32));
    if !r.headers.is_empty() {
        let headers: Map<String, Value> = r.headers.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
        req.insert("headers".into(), Value::Object(headers));
    }
    if view == TaskView::Full && !r.body.is_empty() {
        req.insert("body".into(), json!(encode_base64(&r.body)));
    }
    auth_json(&r.auth, &mut req);
    let mut out = Map::new();
    out.insert("name".into(), json!(t.name.to_string()));
    out.insert("httpRequest".into(), Value::Object(req));
    out.insert("scheduleTime".into(), json!(format_timestamp(t.schedule_time)));
    out.insert("createTime".into(), json!(format_timestamp(t.create_time)));
    out.insert(
        "dispatchDeadline".into(),
        json!(format_duration_micros(tasklane_core::clock::duration_micros(t.dispatch_deadline))),
    );
    if t.dispatch_count != 0 {
        out.insert("dispatchCount".into(), json!(t.dispatch_count));
    }
    if t.response_count != 0 {
        out.insert("responseCount".into(), json!(t.response_count));
    }
    if let Some(a) = &t.first_attempt {
        out.insert("firstAttempt".into(), attempt_json(a));
    }
    if let Some(a) = &t.last_attempt {
        out.insert("lastAttempt".into(), attempt_json(a));
    }
    if let Some(c) = &t.retry_config {
        out.insert("retryConfig".into(), retry_json(c));
    }
    let view_n = if view == TaskView::Full { 2 } else { 1 };
    out.insert("view".into(), render.enumeration(&VIEWS, view_n));
    Value::Object(out)
}

const CREATE_STATES: [(&str, i32); 6] = [
    ("STATE_UNSPECIFIED", 0),
    ("RUNNING", 1),
    ("SUCCEEDED", 2),
    ("FAILED", 3),
    ("CANCELLED", 4),
    ("PARTIALLY_SUCCEEDED", 5),
];
const DELETE_STATES: [(&str, i32); 5] =
    [("STATE_UNSPECIFIED", 0), ("RUNNING", 1), ("SUCCEEDED", 2), ("PARTIALLY_SUCCEEDED", 3), ("FAILED", 4)];

fn type_url(name: &str) -> String {
    format!("{}{name}", convert::TYPE_PREFIX)
}

fn status_json(s: &Status) -> Value {
    json!({ "code": s.code as i32, "message": s.message })
}

/// A `google.longrunning.Operation` of a batch, with its metadata and response.
pub fn operation_json(op: &BatchOperation, render: Render) -> Value {
    let (metadata_type, states): (&str, &[(&str, i32)]) = match op.kind {
        BatchKind::Create => (convert::CREATE_METADATA, &CREATE_STATES),
        BatchKind::Delete => (convert::DELETE_METADATA, &DELETE_STATES),
    };
    let mut metadata = Map::new();
    metadata.insert("@type".into(), json!(type_url(metadata_type)));
    metadata.insert("startTime".into(), json!(format_timestamp(op.start_time)));
    metadata.insert("endTime".into(), json!(format_timestamp(op.end_time)));
    metadata.insert("state".into(), render.enumeration(states, convert::batch_state_number(op.kind, op.state)));
    if !op.failed.is_empty() {
        let failed: Map<String, Value> = op.failed.iter().map(|(i, s)| (i.to_string(), status_json(s))).collect();
        metadata.insert("failedRequests".into(), Value::Object(failed));
    }
    let mut out = Map::new();
    out.insert("name".into(), json!(op.name));
    out.insert("metadata".into(), Value::Object(metadata));
    out.insert("done".into(), json!(true));
    match convert::batch_result(op) {
        convert::BatchResult::Created(tasks) => {
            let tasks: Vec<Value> = tasks.iter().map(|(t, v)| task_json(t, *v, render)).collect();
            out.insert("response".into(), json!({ "@type": type_url(convert::CREATE_RESPONSE), "tasks": tasks }));
        }
        convert::BatchResult::Deleted => {
            out.insert("response".into(), json!({ "@type": type_url(convert::EMPTY) }));
        }
        convert::BatchResult::Nothing => {}
        convert::BatchResult::NoneDeleted => {
            out.insert("error".into(), status_json(&convert::none_deleted()));
        }
    }
    Value::Object(out)
}

/// Read a `google.iam.v1.Policy`.
pub fn policy(path: &str, value: Option<&Value>) -> Result<Option<m::Policy>, Status> {
    let mut o = Obj::new(path, value)?;
    if !o.is_present() {
        return Ok(None);
    }
    let mut p = m::Policy { version: o.i32("version")?.unwrap_or(0), ..Default::default() };
    for mut b in o.objects("bindings")? {
        let mut binding =
            m::Binding { role: b.string("role")?.unwrap_or_default(), members: b.strings("members")?, condition: None };
        if let Some(mut c) = b.object("condition")? {
            binding.condition = Some(m::Expr {
                expression: c.string("expression")?.unwrap_or_default(),
                title: c.string("title")?.unwrap_or_default(),
                description: c.string("description")?.unwrap_or_default(),
                location: c.string("location")?.unwrap_or_default(),
            });
            c.finish()?;
        }
        b.finish()?;
        p.bindings.push(binding);
    }
    for mut a in o.objects("auditConfigs")? {
        let mut config =
            m::AuditConfig { service: a.string("service")?.unwrap_or_default(), audit_log_configs: Vec::new() };
        for mut l in a.objects("auditLogConfigs")? {
            config.audit_log_configs.push(m::AuditLogConfig {
                log_type: l.enumeration("logType", "google.iam.v1.AuditLogConfig.LogType", &LOG_TYPES)?.unwrap_or(0),
                exempted_members: l.strings("exemptedMembers")?,
            });
            l.finish()?;
        }
        a.finish()?;
        p.audit_configs.push(config);
    }
    p.etag = o.bytes("etag")?.unwrap_or_default();
    o.finish()?;
    Ok(Some(p))
}

const LOG_TYPES: [(&str, i32); 4] =
    [("LOG_TYPE_UNSPECIFIED", 0), ("ADMIN_READ", 1), ("DATA_WRITE", 2), ("DATA_READ", 3)];

pub fn policy_json(p: &m::Policy, render: Render) -> Value {
    let mut out = Map::new();
    if p.version != 0 {
        out.insert("version".into(), json!(p.version));
    }
    out.insert("etag".into(), json!(encode_base64(&p.etag)));
    if !p.bindings.is_empty() {
        let bindings: Vec<Value> = p
            .bindings
            .iter()
            .map(|b| {
                let mut o = Map::new();
                o.insert("role".into(), json!(b.role));
                o.insert("members".into(), json!(b.members));
                if let Some(c) = &b.condition {
                    o.insert(
                        "condition".into(),
                        json!({"expression": c.expression, "title": c.title, "description": c.description, "location": c.location}),
                    );
                }
                Value::Object(o)
            })
            .collect();
        out.insert("bindings".into(), Value::Array(bindings));
    }
    if !p.audit_configs.is_empty() {
        let configs: Vec<Value> = p
            .audit_configs
            .iter()
            .map(|a| {
                let logs: Vec<Value> = a
                    .audit_log_configs
                    .iter()
                    .map(|l| json!({"logType": render.enumeration(&LOG_TYPES, l.log_type), "exemptedMembers": l.exempted_members}))
                    .collect();
                json!({"service": a.service, "auditLogConfigs": logs})
            })
            .collect();
        out.insert("auditConfigs".into(), Value::Array(configs));
    }
    Value::Object(out)
}

pub fn cmek_json(c: &m::CmekConfig) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(c.name));
    if !c.kms_key.is_empty() {
        out.insert("kmsKey".into(), json!(c.kms_key));
    }
    Value::Object(out)
}

/// An error detail as Google writes it in a JSON error's `details`.
pub fn detail_json(d: &Detail) -> Value {
    let typed = |name: &str| json!(format!("type.googleapis.com/google.rpc.{name}"));
    let mut out = Map::new();
    match d {
        Detail::ErrorInfo { reason, domain, metadata } => {
            out.insert("@type".into(), typed("ErrorInfo"));
            out.insert("reason".into(), json!(reason));
            out.insert("domain".into(), json!(domain));
            if !metadata.is_empty() {
                let m: Map<String, Value> = metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                out.insert("metadata".into(), Value::Object(m));
            }
        }
        Detail::Help { links } => {
            out.insert("@type".into(), typed("Help"));
            let links: Vec<Value> =
                links.iter().map(|(description, url)| json!({"description": description, "url": url})).collect();
            out.insert("links".into(), Value::Array(links));
        }
        Detail::BadRequest { violations } => {
            out.insert("@type".into(), typed("BadRequest"));
            let violations: Vec<Value> = violations
                .iter()
                .map(|(field, description)| {
                    let mut v = Map::new();
                    if !field.is_empty() {
                        v.insert("field".into(), json!(field));
                    }
                    v.insert("description".into(), json!(description));
                    Value::Object(v)
                })
                .collect();
            out.insert("fieldViolations".into(), Value::Array(violations));
        }
        Detail::LocalizedMessage { locale, message } => {
            out.insert("@type".into(), typed("LocalizedMessage"));
            out.insert("locale".into(), json!(locale));
            out.insert("message".into(), json!(message));
        }
    }
    Value::Object(out)
}

pub fn location_json(l: &LocationName) -> Value {
    json!({ "name": l.to_string(), "locationId": l.location, "displayName": l.location })
}

//! Requests in protobuf to core specs. The checks here are the ones REST makes in
//! `rest/wire.rs`, with the same texts, so the two transports answer alike; rendering
//! goes through the protobuf model (`service::proto::convert`), re-exported here.

use tasklane_core::queue::{QueueSpec, RateSpec};
use tasklane_core::target::{EnforceMode, HttpTarget, Scheme, UriOverride, texts as target_texts};
use tasklane_core::task::{TaskSpec, texts};
use tasklane_core::{HttpMethod, Status};

use super::messages as m;
pub use crate::service::proto::convert::*;

/// A task answered for a view number the API lacks: BASIC content, as the real service
/// gives, with the view it was asked for left unspecified (GetTask, CreateTask).
pub fn unknown_view(mut task: m::Task, asked: i32) -> m::Task {
    if !(0..=2).contains(&asked) {
        task.view = 0;
    }
    task
}

/// Read a `Queue` message: its name (possibly empty) and settable fields.
pub fn queue_spec(q: &m::Queue) -> Result<(String, QueueSpec), Status> {
    let mut spec = QueueSpec::default();
    if let Some(r) = &q.rate_limits {
        spec.rate = RateSpec {
            max_dispatches_per_second: r.max_dispatches_per_second,
            max_concurrent_dispatches: r.max_concurrent_dispatches,
        };
    }
    if let Some(r) = &q.retry_config {
        spec.retry = retry_spec(r)?;
    }
    if let Some(l) = &q.stackdriver_logging_config {
        spec.logging_sampling_ratio = l.sampling_ratio;
    }
    if let Some(t) = &q.http_target {
        spec.http_target = Some(http_target_from(t)?);
    }
    Ok((q.name.clone(), spec))
}

fn http_target_from(t: &m::HttpTarget) -> Result<HttpTarget, Status> {
    let uri_override = match &t.uri_override {
        None => None,
        Some(u) => Some(UriOverride {
            scheme: Scheme::from_number(u.scheme)?,
            host: u.host.clone(),
            port: u.port,
            path: u.path_override.as_ref().map(|p| p.path.clone()),
            query: u.query_override.as_ref().map(|q| q.query_params.clone()),
            mode: EnforceMode::from_number(u.uri_override_enforce_mode)?,
        }),
    };
    let method = match t.http_method {
        0 => None,
        n => Some(HttpMethod::from_i32(n).ok_or_else(|| target_texts::error(target_texts::BAD_TARGET))?),
    };
    let headers =
        t.header_overrides.iter().filter_map(|o| o.header.as_ref()).map(|h| (h.key.clone(), h.value.clone())).collect();
    Ok(HttpTarget { uri_override, method, headers, auth: auth_from(&t.oidc_token, &t.oauth_token)? })
}

/// Read a `Task` message of a create request.
pub fn task_spec(t: Option<m::Task>) -> Result<TaskSpec, Status> {
    let Some(t) = t else {
        return Err(Status::invalid_argument(texts::PAYLOAD_NOT_SET));
    };
    if t.app_engine_http_request.is_some() {
        return Err(Status::invalid_argument(texts::APP_ENGINE_UNSUPPORTED));
    }
    let Some(r) = t.http_request else {
        return Err(Status::invalid_argument(texts::PAYLOAD_NOT_SET));
    };
    // A method number the API lacks is taken as POST, as the real service takes it.
    let method = match r.http_method {
        0 => None,
        n => Some(HttpMethod::from_i32(n).unwrap_or(HttpMethod::Post)),
    };
    let auth = auth_from(&r.oidc_token, &r.oauth_token)?;
    let schedule_time = t.schedule_time.as_ref().map(|s| timestamp_from("task.schedule_time", s)).transpose()?;
    let dispatch_deadline_micros =
        t.dispatch_deadline.as_ref().map(|d| duration_from("task.dispatch_deadline", d)).transpose()?;
    let retry = t.retry_config.as_ref().map(retry_spec).transpose()?;
    Ok(TaskSpec {
        retry,
        name: (!t.name.is_empty()).then_some(t.name),
        url: r.url,
        method,
        headers: r.headers.into_iter().collect(),
        body: r.body,
        auth,
        schedule_time,
        dispatch_deadline_micros,
    })
}

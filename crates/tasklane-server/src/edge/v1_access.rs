//! `/v1/tokens`, `/v1/identities`, `/v1/egress` and `/v1/keys:rotate`: API tokens, the
//! identities tasks may use, where they may be sent, and the signing keys, over HTTP for an admin token (the guard allows nothing
//! less). JSON in snake_case.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};
use tasklane_core::Status;
use tasklane_core::access::{Grant, IdentityPolicy, Scope};
use tasklane_core::egress::Rule;

use crate::access::{Access, StoredEgress, token_json};
use crate::oidc::TokenSigner;
use crate::rest::ApiError;

type ApiResult = Result<Response, ApiError>;

pub fn router(access: Arc<Access>, signer: Arc<TokenSigner>) -> Router {
    Router::new()
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{token}", delete(revoke_token))
        .route("/v1/identities", get(get_identities).put(put_identities))
        .route("/v1/egress", get(get_egress).put(put_egress))
        .with_state(access.clone())
        .route("/v1/keys:rotate", post(move || rotate_keys(access, signer)))
}

/// Replace the signing and job-token keys; every node reads the new ones at once.
async fn rotate_keys(access: Arc<Access>, signer: Arc<TokenSigner>) -> ApiResult {
    let kid = signer.rotate().await?;
    access.changed();
    Ok(axum::Json(json!({ "kid": kid, "previous_kept_for": "2h", "previous_job_key_kept_for": "24h" })).into_response())
}

fn body_object(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Map<String, Value>, Status> {
    let body = body.map_err(|e| Status::invalid_argument(format!("Could not read the request body: {e}")))?;
    match serde_json::from_slice(&body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Status::invalid_argument("Expected a JSON object")),
        Err(e) => Err(Status::invalid_argument(format!("Invalid JSON payload received. {e}"))),
    }
}

fn strings(o: &serde_json::Map<String, Value>, key: &str) -> Result<Vec<String>, Status> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Status::invalid_argument(format!("{key} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(Status::invalid_argument(format!("{key} must be a list of strings"))),
    }
}

async fn list_tokens(State(access): State<Arc<Access>>) -> ApiResult {
    let tokens = access.token_list().await?;
    Ok(axum::Json(json!({ "tokens": tokens.iter().map(token_json).collect::<Vec<_>>() })).into_response())
}

/// `{"name", "scope", "projects"?, "queues"?}` → the token with its secret, shown this once.
async fn create_token(State(access): State<Arc<Access>>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let o = body_object(body)?;
    for key in o.keys() {
        if !matches!(key.as_str(), "name" | "scope" | "projects" | "queues") {
            return Err(Status::invalid_argument(format!(
                "Unknown field \"{key}\"; a token takes name, scope, projects and queues"
            ))
            .into());
        }
    }
    let name = o.get("name").and_then(Value::as_str).ok_or_else(|| Status::invalid_argument("name is required"))?;
    let scope = o
        .get("scope")
        .and_then(Value::as_str)
        .ok_or_else(|| Status::invalid_argument("scope is required: one of admin, enqueue, read or worker"))?;
    let grant = Grant {
        name: name.to_string(),
        scope: Scope::parse(scope)?,
        projects: strings(&o, "projects")?,
        queues: strings(&o, "queues")?,
    };
    let made = access.token_create(grant).await?;
    let mut out = token_json(&made.info);
    out["token"] = json!(made.secret);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn revoke_token(State(access): State<Arc<Access>>, Path(token): Path<String>) -> ApiResult {
    Ok(axum::Json(token_json(&access.token_revoke(&token).await?)).into_response())
}

fn egress_json(access: &Access, stored: &StoredEgress) -> Value {
    let text = |list: &[Rule]| list.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    let mut out = json!({ "allow": text(&stored.allow), "deny": text(&stored.deny) });
    match access.egress_flags() {
        Some((allow, deny)) => out["flags"] = json!({ "allow": allow, "deny": deny }),
        None => out["open"] = json!(true),
    }
    out
}

async fn get_egress(State(access): State<Arc<Access>>) -> ApiResult {
    Ok(axum::Json(egress_json(&access, &access.egress_stored().await?)).into_response())
}

/// Replace the stored egress rules: `{"allow": ["10.0.0.0/8", "worker.internal"], "deny": [...]}`.
async fn put_egress(State(access): State<Arc<Access>>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let o = body_object(body)?;
    for key in o.keys() {
        if !matches!(key.as_str(), "allow" | "deny") {
            return Err(
                Status::invalid_argument(format!("Unknown field \"{key}\"; egress rules take allow and deny")).into()
            );
        }
    }
    let rules = |key: &str| -> Result<Vec<Rule>, Status> {
        strings(&o, key)?
            .iter()
            .map(|r| Rule::parse(r).map_err(|e| Status::invalid_argument(format!("{key}: {e}"))))
            .collect()
    };
    let stored = access.egress_set(StoredEgress { allow: rules("allow")?, deny: rules("deny")? }).await?;
    Ok(axum::Json(egress_json(&access, &stored)).into_response())
}

fn identities_json(p: &IdentityPolicy) -> Value {
    json!({ "service_accounts": p.service_accounts, "audiences": p.audiences })
}

async fn get_identities(State(access): State<Arc<Access>>) -> ApiResult {
    Ok(axum::Json(identities_json(&access.identities().await?)).into_response())
}

/// Replace the policy: `{"service_accounts": [...], "audiences": [...]}`.
async fn put_identities(State(access): State<Arc<Access>>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let o = body_object(body)?;
    for key in o.keys() {
        if !matches!(key.as_str(), "service_accounts" | "audiences") {
            return Err(Status::invalid_argument(format!(
                "Unknown field \"{key}\"; the identity policy takes service_accounts and audiences"
            ))
            .into());
        }
    }
    let policy =
        IdentityPolicy { service_accounts: strings(&o, "service_accounts")?, audiences: strings(&o, "audiences")? };
    Ok(axum::Json(identities_json(&access.identities_set(policy).await?)).into_response())
}

//! Operational endpoints: liveness, readiness, and the cluster's nodes and queue owners.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tasklane_core::Clock;
use tasklane_store::{QueueList, Store};

use crate::oidc::TokenSigner;
use crate::rest::ApiError;
use crate::rest::proto_json::format_timestamp;
use crate::service::store_status;

#[derive(Clone)]
struct Admin {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// How recent a heartbeat must be for a node to count as alive.
    alive_within: std::time::Duration,
    /// When `/readyz` last saw a write go through: probes within a second reuse it, so a
    /// flood of unauthenticated probes cannot turn into a flood of (fsynced) writes.
    wrote: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How long a successful write check answers for.
const WRITE_CHECK_REUSED: std::time::Duration = std::time::Duration::from_secs(1);

pub fn router(store: Arc<dyn Store>, clock: Arc<dyn Clock>, alive_within: std::time::Duration) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/v1/cluster", get(cluster))
        .with_state(Admin { store, clock, alive_within, wrote: Arc::default() })
}

/// Ready when the store answers a read and takes a write (a full disk fails the write).
async fn readyz(State(a): State<Admin>) -> Response {
    let recent = a.wrote.lock().ok().and_then(|w| *w).is_some_and(|at| at.elapsed() < WRITE_CHECK_REUSED);
    let checked = match a.store.queue_list(QueueList { parent: None, after: None, limit: 1 }).await {
        Ok(_) if recent => Ok(()),
        Ok(_) => a.store.write_check(a.clock.now()).await,
        Err(e) => Err(e),
    };
    if let Ok(mut wrote) = a.wrote.lock() {
        match &checked {
            Ok(()) if !recent => *wrote = Some(std::time::Instant::now()),
            Ok(()) => {}
            Err(_) => *wrote = None,
        }
    }
    match checked {
        Ok(()) => "ready".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response(),
    }
}

async fn cluster(State(a): State<Admin>) -> Result<Response, ApiError> {
    let now = a.clock.now();
    let nodes = a.store.node_list(now.saturating_sub(a.alive_within)).await.map_err(store_status)?;
    let owners = a.store.queue_owner_list().await.map_err(store_status)?;
    let nodes: Vec<_> = nodes
        .iter()
        .map(|n| {
            let queues: Vec<_> = owners
                .iter()
                .filter(|o| o.node_id == n.node_id)
                .map(|o| {
                    json!({
                        "queue": o.queue.to_string(),
                        "leaseUntil": format_timestamp(o.lease_until),
                        "leaseRemainingMs": (o.lease_until.0 - now.0) / 1000,
                    })
                })
                .collect();
            json!({
                "nodeId": n.node_id,
                "address": n.address,
                "startedAt": format_timestamp(n.started_at),
                "heartbeatAt": format_timestamp(n.heartbeat_at),
                "heartbeatAgeMs": (now.0 - n.heartbeat_at.0) / 1000,
                "queues": queues,
            })
        })
        .collect();
    let unowned = owners.iter().filter(|o| o.lease_until < now).count();
    Ok(axum::Json(json!({ "nodes": nodes, "expiredQueueLeases": unowned })).into_response())
}

/// OIDC discovery and the JWKS that verifies the tokens tasks carry.
pub fn oidc_router(signer: Arc<TokenSigner>) -> Router {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|State(s): State<Arc<TokenSigner>>| async move { axum::Json(s.discovery()) }),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(signer)
}

async fn jwks(State(s): State<Arc<TokenSigner>>) -> Result<Response, ApiError> {
    Ok(axum::Json(s.jwks().await?).into_response())
}

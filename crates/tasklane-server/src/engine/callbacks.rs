//! Delivers jobs' callbacks: when a job finishes or one of its tasks dead-letters, the store
//! queues a notification in the same transaction; this sender (one per node; a claim leases
//! each notification to one sender) POSTs it as JSON, signed, and retries with backoff.
//!
//! The signature is a JWT in `X-Tasklane-Signature`, signed with the key tasklane publishes at
//! `/.well-known/jwks.json`; its `body_sha256` claim binds it to the exact body sent.
//! Delivery is at least once: a node that dies mid-delivery leaves the notification to be
//! sent again when its lease ends.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use tasklane_core::clock::{duration_micros, format_duration_micros, format_rfc3339};
use tasklane_core::job::Job;
use tasklane_core::{Clock, Timestamp};
use tasklane_store::{Callback, CallbackAttempt, CallbackState, Store};
use tokio::sync::watch;

use crate::engine::oidc::TokenSigner;

/// Attempts before a callback is given up (recorded as failed on the job).
pub const MAX_ATTEMPTS: i32 = 10;
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a sender holds a callback it is delivering.
const LEASE: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(10);
const BATCH: usize = 32;
/// Callbacks are looked for this often, and whenever a job changes on this node.
const POLL: Duration = Duration::from_secs(1);

pub struct CallbackSender {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub signer: Arc<TokenSigner>,
    pub client: reqwest::Client,
    pub job_changes: tokio::sync::broadcast::Receiver<String>,
}

/// The delay before attempt `attempts + 1`: 1 s, 2 s, 4 s, … at most an hour.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 12)).min(MAX_BACKOFF)
}

impl CallbackSender {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let now = self.clock.now();
            match self.store.callback_claim(now, now.saturating_add(LEASE), BATCH).await {
                Ok(due) if !due.is_empty() => {
                    let sends = due.into_iter().map(|c| self.deliver(c));
                    futures_util::future::join_all(sends).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "look for callbacks to deliver"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(POLL) => {}
                changed = self.job_changes.recv() => {
                    // Without wake-ups (the dispatcher is gone), the poll alone paces the sender.
                    if matches!(changed, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
        }
    }

    async fn deliver(&self, c: Callback) {
        let attempt = c.attempts + 1;
        let result = self.send(&c, attempt).await;
        let now = self.clock.now();
        let (state, next_at, status, error) = match result {
            Ok(status) if (200..300).contains(&status) => (CallbackState::Delivered, now, Some(status), None),
            outcome => {
                let (status, error) = match outcome {
                    Ok(status) => (Some(status), format!("the receiver answered HTTP {status}")),
                    Err(e) => (None, e),
                };
                let state = if attempt >= MAX_ATTEMPTS { CallbackState::Failed } else { CallbackState::Pending };
                tracing::info!(callback = c.id, job = %c.job_id, attempt, error = %error, "callback not delivered");
                (state, now.saturating_add(backoff(c.attempts)), status, Some(error))
            }
        };
        let record = CallbackAttempt { id: c.id, state, next_at, http_status: status, error, now };
        if let Err(e) = self.store.callback_record(record).await {
            tracing::warn!(callback = c.id, error = %e, "record a callback attempt; it will be sent again");
        }
    }

    /// POST the notification; the receiver's HTTP status, or why there was none.
    async fn send(&self, c: &Callback, attempt: i32) -> Result<i32, String> {
        let now = self.clock.now();
        let job = match self.store.job_get(&c.job_id, now).await {
            Ok(Some(job)) => job_json(&job),
            Ok(None) => return Err("the job has expired".into()),
            Err(e) => return Err(format!("read the job: {e}")),
        };
        let body = json!({
            "type": c.kind,
            "delivery_id": c.id,
            "attempt": attempt,
            "task": c.task,
            "job": job,
        })
        .to_string();
        let iat = now.0.div_euclid(1_000_000);
        let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
        let claims = json!({
            "iss": self.signer.issuer(),
            "iat": iat,
            "exp": iat + 300,
            "aud": c.url,
            "sub": c.job_id,
            "delivery_id": c.id,
            "body_sha256": URL_SAFE_NO_PAD.encode(digest.as_ref()),
        });
        let signature = self.signer.sign(&claims).await.map_err(|e| format!("sign: {}", e.message))?;
        let response = self
            .client
            .post(&c.url)
            .timeout(TIMEOUT)
            .header("content-type", "application/json")
            .header("user-agent", "tasklane")
            .header("x-tasklane-event", &c.kind)
            .header("x-tasklane-delivery", c.id.to_string())
            .header("x-tasklane-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("could not reach the callback URL: {e}"))?;
        Ok(i32::from(response.status().as_u16()))
    }
}

/// Whether `url` can receive callbacks.
pub fn check_url(url: &str) -> Result<(), tasklane_core::Status> {
    let valid = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2083
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if valid {
        Ok(())
    } else {
        Err(tasklane_core::Status::invalid_argument(format!(
            "callback_url \"{url}\" must be an http:// or https:// URL with a host"
        )))
    }
}

fn time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(format_rfc3339(t)))
}

/// A job as a JSON document: the body of its callbacks, and what `/v1` answers for it.
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
        "created_at": format_rfc3339(j.created_at),
        "started_at": time(j.started_at),
        "finished_at": time(j.finished_at),
        "result_ttl": format_duration_micros(duration_micros(j.result_ttl)),
        "callback_url": j.callback_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }

    #[test]
    fn callback_urls_are_checked() {
        assert!(check_url("https://app.example/hooks/jobs").is_ok());
        for bad in ["ftp://x", "http://", "http:///path", "http://a b", "notaurl"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}

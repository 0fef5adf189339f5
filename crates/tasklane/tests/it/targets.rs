//! Queue-level `http_target` overrides, signed OIDC tokens that verify against tasklane's
//! JWKS, and a task's own `retry_config`, against the real binary.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{PROJECT_LOCATION, TasklaneProcess, Worker, client};

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

pub(crate) async fn get_json(url: &str) -> Value {
    let body = client().get(url).send().await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Check an RS256 JWT against a JWKS the way an OIDC library does; returns its claims.
pub(crate) fn verify(token: &str, jwks: &Value) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    let header: Value = serde_json::from_slice(&b64(parts[0])).unwrap();
    assert_eq!(header["alg"], "RS256");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is in the JWKS");
    let public = ring::signature::RsaPublicKeyComponents {
        n: b64(key["n"].as_str().unwrap()),
        e: b64(key["e"].as_str().unwrap()),
    };
    let signed = format!("{}.{}", parts[0], parts[1]);
    public
        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &b64(parts[2]))
        .expect("the signature verifies with the published key");
    serde_json::from_slice(&b64(parts[1])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_target_overrides_reach_existing_tasks_with_a_verifiable_token() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    let api = server.api();
    api.create_queue("targeted", json!({})).await;
    api.queue_verb("targeted", "pause").await;
    // Created before the override exists, aimed at a port nothing listens on.
    api.create_task(
        "targeted",
        json!({"name": format!("{PROJECT_LOCATION}/queues/targeted/tasks/t1"),
               "httpRequest": {"url": "http://127.0.0.1:9/old/path?x=1", "headers": {"X-Env": "dev", "Authorization": "Basic stale"},
                               "body": "aGk="}}),
    )
    .await;
    let port = worker.addr.port();
    let queue = api
        .ok(
            Method::PATCH,
            &format!("{PROJECT_LOCATION}/queues/targeted?updateMask=httpTarget"),
            Some(json!({"httpTarget": {
                "uriOverride": {"host": "127.0.0.1", "port": port.to_string(), "pathOverride": {"path": "/new"},
                                "uriOverrideEnforceMode": "ALWAYS"},
                "headerOverrides": [{"header": {"key": "X-Env", "value": "prod"}}],
                "oidcToken": {"serviceAccountEmail": "worker@proj.iam.gserviceaccount.com", "audience": "https://worker.example"}
            }})),
        )
        .await;
    assert_eq!(queue["httpTarget"]["uriOverride"]["port"], port.to_string(), "{queue}");
    assert_eq!(queue["httpTarget"]["uriOverride"]["uriOverrideEnforceMode"], "ALWAYS");
    api.queue_verb("targeted", "resume").await;

    let got = worker.wait_for(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(r.path, "/new");
    assert_eq!(r.header("x-env"), Some("prod"));
    assert_eq!(&r.body[..], b"hi");
    let bearer = r.header("authorization").expect("an Authorization header");
    let token = bearer.strip_prefix("Bearer ").expect("a bearer token replaced the stored header");

    let base = format!("http://{}", server.addr);
    let discovery = get_json(&format!("{base}/.well-known/openid-configuration")).await;
    assert_eq!(discovery["issuer"], base);
    let jwks = get_json(discovery["jwks_uri"].as_str().unwrap()).await;
    let claims = verify(token, &jwks);
    assert_eq!(claims["iss"], base);
    assert_eq!(claims["aud"], "https://worker.example");
    assert_eq!(claims["email"], "worker@proj.iam.gserviceaccount.com");
    assert_eq!(claims["email_verified"], true);
    // `sub` and `azp`: the account's stable numeric id, as Google gives one (docs/clients.md).
    let sub = claims["sub"].as_str().unwrap_or_default();
    assert!(sub.len() == 21 && sub.bytes().all(|b| b.is_ascii_digit()), "sub is a numeric id: {sub}");
    assert_eq!(claims["azp"], sub);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);

    // The key is kept in the store: after a restart the same JWKS verifies new tokens.
    let dir = server.kill_hard();
    let server = TasklaneProcess::start_in(dir);
    let again = get_json(&format!("http://{}/.well-known/jwks.json", server.addr)).await;
    assert_eq!(again["keys"][0]["n"], jwks["keys"][0]["n"], "the signing key survives a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_retry_config_replaces_its_queue_s() {
    let server = TasklaneProcess::start();
    let worker = Worker::start(Arc::new(|_, _| (500, Duration::ZERO))).await;
    let api = server.api();
    api.create_queue(
        "retries",
        json!({"retryConfig": {"maxAttempts": 50, "minBackoff": "0.1s", "maxBackoff": "0.1s"}}),
    )
    .await;
    let name = format!("{PROJECT_LOCATION}/queues/retries/tasks/own");
    let created = api
        .create_task(
            "retries",
            json!({"name": name, "httpRequest": {"url": worker.url("/fail")},
                   "retryConfig": {"maxAttempts": 2, "minBackoff": "0.1s", "maxBackoff": "0.2s"}}),
        )
        .await;
    assert_eq!(created["retryConfig"]["maxAttempts"], 2, "{created}");
    worker.wait_for(2, Duration::from_secs(10)).await;
    // After its second failure the task gives up (the queue would allow 50).
    crate::support::eventually("the task to give up", Duration::from_secs(10), || async {
        let (status, body) = api.call(Method::GET, &name, None).await;
        status == 404 && body["error"]["message"].as_str().unwrap_or("").contains("no longer exists")
    })
    .await;
    // It became a dead letter with its two attempts, in the write that removed it.
    let dead = api
        .ok(Method::GET, "../v1/queues/projects%2Ftest%2Flocations%2Fhere%2Fqueues%2Fretries/dead-letters", None)
        .await;
    assert_eq!(dead["dead_letters"][0]["attempts"].as_array().map(Vec::len), Some(2), "{dead}");
    assert_eq!(worker.received().len(), 2, "no attempt after the task's own max_attempts");
}

//! Pull queues against the real binary: the lease API, long polling, and `tasklane work`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{PROJECT_LOCATION, TasklaneProcess, client};

pub struct V1 {
    pub base: String,
}

impl V1 {
    pub fn new(server: &TasklaneProcess) -> V1 {
        V1 { base: format!("http://{}/v1", server.addr) }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = client().request(method, format!("{}/{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.expect("call tasklane");
        let status = resp.status().as_u16();
        (status, serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null))
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {value}");
        value
    }

    /// A pull queue with this retry config.
    pub async fn pull_queue(&self, id: &str, retry: Value) -> String {
        let name = format!("{PROJECT_LOCATION}/queues/{id}");
        let queue =
            self.ok(Method::POST, "queues", Some(json!({"name": name, "type": "pull", "retryConfig": retry}))).await;
        assert_eq!(queue["type"], "pull");
        name.replace('/', "%2F")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_tasks_are_leased_acknowledged_renewed_given_back_and_fenced() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("work", json!({"maxAttempts": 2, "minBackoff": "0.1s", "maxBackoff": "0.1s"})).await;
    let created = v1
        .ok(
            Method::POST,
            &format!("queues/{q}/tasks"),
            Some(json!({"tasks": [
                {"payload": "one", "tag": "red", "env": {"TARGET_FILE_ID": "f1"}},
                {"payload": "two"},
                {"payload": "three", "tag": "red"},
            ]})),
        )
        .await;
    assert_eq!(created["tasks"].as_array().map(Vec::len), Some(3), "{created}");
    let lease = |body: Value| {
        let (v1, q) = (&v1, &q);
        async move { v1.ok(Method::POST, &format!("queues/{q}/tasks:lease"), Some(body)).await["tasks"].clone() }
    };
    let mut red = lease(json!({"max_tasks": 10, "tag": "red", "lease_duration": "30s"})).await;
    assert_eq!(red.as_array().map(Vec::len), Some(2), "{red}");
    // Tasks created at the same moment come in any order: put "one" first.
    if red[0]["payload_base64"] != "b25l" {
        red.as_array_mut().unwrap().swap(0, 1);
    }
    assert_eq!(red[0]["env"]["TARGET_FILE_ID"], "f1");
    assert_eq!(red[0]["payload_base64"], "b25l");
    assert_eq!(red[0]["attempt"], 1);
    let item = |t: &Value| json!({"name": t["name"], "lease_id": t["lease_id"]});

    // Acknowledge one; acknowledging it again with the same lease is refused.
    let path = |verb: &str| format!("queues/{q}/tasks:{verb}");
    let acked = v1.ok(Method::POST, &path("acknowledge"), Some(json!({"tasks": [item(&red[0])]}))).await;
    assert_eq!(acked["acknowledged"], json!([red[0]["name"]]));
    let (status, stale) = v1.call(Method::POST, &path("acknowledge"), Some(json!({"tasks": [item(&red[0])]}))).await;
    assert_eq!((status, stale["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{stale}");
    assert!(stale["error"]["message"].as_str().unwrap().contains("no longer held"), "{stale}");

    // Renew the other; give it back; it can be leased again at once, and the give-back did not count.
    let renewed =
        v1.ok(Method::POST, &path("renew"), Some(json!({"tasks": [item(&red[1])], "lease_duration": "120s"}))).await;
    assert_eq!(renewed["renewed"].as_array().map(Vec::len), Some(1), "{renewed}");
    v1.ok(Method::POST, &path("cancelLease"), Some(json!({"tasks": [item(&red[1])]}))).await;
    let again = lease(json!({"max_tasks": 10, "tag": "red"})).await;
    assert_eq!((again[0]["name"].clone(), again[0]["attempt"].clone()), (red[1]["name"].clone(), json!(1)));

    // Fail it twice: the first is retried by the backoff, the second (max_attempts 2) dead-letters it.
    let failed = v1
        .ok(
            Method::POST,
            &path("fail"),
            Some(
                json!({"tasks": [{"name": again[0]["name"], "lease_id": again[0]["lease_id"], "reason": "disk full"}]}),
            ),
        )
        .await;
    assert!(failed["failed"][0]["retry_at"].is_string(), "{failed}");
    // The retry comes due after the 0.1 s backoff; a long poll waits for it.
    let retried = lease(json!({"tag": "red", "wait": "5s"})).await;
    assert_eq!(retried.as_array().map(Vec::len), Some(1), "{retried}");
    assert_eq!(retried[0]["attempt"], 2);
    let failed = v1
        .ok(Method::POST, &path("fail"), Some(json!({"tasks": [{"name": retried[0]["name"], "lease_id": retried[0]["lease_id"], "reason": "disk full"}]})))
        .await;
    assert_eq!(failed["failed"][0]["dead_lettered"], true, "{failed}");
    let dead = v1.ok(Method::GET, &format!("queues/{q}/dead-letters"), None).await;
    assert_eq!(dead["dead_letters"][0]["last_response"]["message"], "disk full");

    // Bad input says what to fix.
    let (status, body) = v1.call(Method::POST, &path("lease"), Some(json!({"max_tasks": 0}))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = v1.call(Method::POST, &path("lease"), Some(json!({"wait": "2m"}))).await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("60s"), "{body}");
    let (status, _) = v1.call(Method::POST, &path("acknowledge"), Some(json!({"tasks": []}))).await;
    assert_eq!(status, 400);
    server.api().create_queue("pushy", json!({})).await;
    let (status, body) = v1
        .call(
            Method::POST,
            &format!("queues/{}/tasks:lease", format!("{PROJECT_LOCATION}/queues/pushy").replace('/', "%2F")),
            Some(json!({})),
        )
        .await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("push queue"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_a_task_is_created() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("poll", json!({})).await;
    let poll = tokio::spawn({
        let v1 = V1 { base: v1.base.clone() };
        let q = q.clone();
        async move {
            let leased = v1.ok(Method::POST, &format!("queues/{q}/tasks:lease"), Some(json!({"wait": "20s"}))).await;
            (Instant::now(), leased)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "the poll returned before any task existed");
    let created_at = Instant::now();
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"payload": "now"}))).await;
    let (returned_at, leased) = poll.await.unwrap();
    assert_eq!(leased["tasks"].as_array().map(Vec::len), Some(1), "{leased}");
    let latency = returned_at.saturating_duration_since(created_at);
    assert!(latency < Duration::from_millis(50), "the long poll returned {latency:?} after the create");
}

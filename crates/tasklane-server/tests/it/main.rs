//! In-process API tests: the REST router over a real SQLite store, driven with `oneshot`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tasklane_core::{Clock, ManualClock, Timestamp};
use tasklane_server::dispatch::{DispatchConfig, Dispatcher, http_client};
use tasklane_server::{CloudTasks, rest};
use tasklane_store::{SqliteStore, Store};
use tower::ServiceExt;

mod fidelity;
mod layers;
mod stepped;

/// Wait until `check` holds `looks` times in a row (1: as soon as it holds; more, for a state
/// that must have settled), or fail after 20 s naming `what`.
async fn until_steady(what: &str, looks: usize, check: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    let mut seen = 0;
    while seen < looks {
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        seen = if check() { seen + 1 } else { 0 };
        if seen < looks {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

const LOC: &str = "/v2/projects/p/locations/l";

struct Api {
    router: axum::Router,
    store: Arc<dyn Store>,
    clock: ManualClock,
    dispatcher: Dispatcher,
    dir: std::path::PathBuf,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn api() -> Api {
    api_with(Duration::ZERO).await
}

/// An API whose deleted queues' names stay reserved for `queue_tombstones`.
async fn api_with(queue_tombstones: Duration) -> Api {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir =
        std::env::temp_dir().join(format!("tasklane-api-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    // A directory an earlier run with the same process id left behind starts empty again.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.join("db")).unwrap());
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let dispatcher =
        Dispatcher::new(store.clone(), clock_dyn.clone(), http_client().unwrap(), DispatchConfig::default());
    let service = CloudTasks::new(store.clone(), clock_dyn, dispatcher.clone(), Duration::from_secs(3600))
        .with_queue_tombstone_window(queue_tombstones);
    Api { router: rest::router(service), store, clock, dispatcher, dir }
}

impl Api {
    async fn send(&self, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        let (status, _, text) = self.send_raw(method, uri, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The answer's status, content type and body as sent.
    async fn send_raw(&self, method: &str, uri: &str, body: &str) -> (StatusCode, String, String) {
        let req = Request::builder().method(method).uri(uri).body(Body::from(body.to_string())).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, content_type, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Expect an error with this HTTP status, Google status name, and a message containing `needle`.
    async fn check_err(&self, method: &str, uri: &str, body: &str, status: u16, name: &str, needle: &str) {
        let (got, v) = self.send(method, uri, body).await;
        assert_eq!(got.as_u16(), status, "{method} {uri} {body}: {v}");
        assert_eq!(v["error"]["code"], status, "{v}");
        assert_eq!(v["error"]["status"], name, "{method} {uri}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{method} {uri} {body}: expected {needle:?} in {message:?}");
    }

    async fn ok(&self, method: &str, uri: &str, body: &str) -> Value {
        let (status, v) = self.send(method, uri, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {uri} {body}: {v}");
        v
    }

    async fn queue(&self, id: &str) {
        self.ok(
            "POST",
            &format!("{LOC}/queues"),
            &json!({"name": format!("projects/p/locations/l/queues/{id}")}).to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn bad_queue_requests_are_refused_with_what_to_fix() {
    let api = api().await;
    let create = format!("{LOC}/queues");
    let q = |extra: Value| {
        let mut v = json!({"name": "projects/p/locations/l/queues/q"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v.to_string()
    };
    api.check_err("POST", &create, "{not json", 400, "INVALID_ARGUMENT", "Invalid JSON payload received.").await;
    api.check_err("POST", &create, "[1]", 400, "INVALID_ARGUMENT", "Root element must be a message.").await;
    api.check_err(
        "POST",
        &create,
        "{}",
        400,
        "INVALID_ARGUMENT",
        "Queue name must be formatted: \"projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>\".",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        r#"{"name": "projects/p/locations/l/queues/bad_id"}"#,
        400,
        "INVALID_ARGUMENT",
        "Queue ID \"bad_id\" can contain only letters ([A-Za-z]), numbers ([0-9]), or hyphens (-).",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        r#"{"name": "projects/p/locations/other/queues/q"}"#,
        400,
        "INVALID_ARGUMENT",
        "projects/p/locations/other/queues/q must begin with projects/p/locations/l.",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &q(json!({"rateLimits": {"maxDispatchesPerSecond": 501}})),
        400,
        "INVALID_ARGUMENT",
        "RateLimits.maxDispatchesPerSecond must be less than or equal to 500.",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &q(json!({"rateLimits": {"maxConcurrentDispatches": 5001}})),
        400,
        "INVALID_ARGUMENT",
        "RateLimits.maxConcurrentDispatches must be less than or equal to 5000.",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &q(json!({"retryConfig": {"maxAttempts": -2}})),
        400,
        "INVALID_ARGUMENT",
        "RetryConfig.maxAttempts must be greater or equal to -1.",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &q(json!({"retryConfig": {"minBackoff": "-1s"}})),
        400,
        "INVALID_ARGUMENT",
        "RetryConfig.minBackoff cannot be negative.",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &q(json!({"retryConfig": {"minBackoff": "20s", "maxBackoff": "10s"}})),
        400,
        "INVALID_ARGUMENT",
        "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &q(json!({"retryConfig": {"minBackoff": "soon"}})),
        400,
        "INVALID_ARGUMENT",
        "retry_config.min_backoff",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &q(json!({"retryConfig": {"maxAttempts": "x"}})),
        400,
        "INVALID_ARGUMENT",
        "retry_config.max_attempts",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &q(json!({"rateLimits": {"bogus": 1}})),
        400,
        "INVALID_ARGUMENT",
        "Unknown name \"bogus\" at 'queue.rate_limits'",
    )
    .await;
    let missing =
        "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize.";
    api.check_err("GET", &format!("{LOC}/queues/nope"), "", 404, "NOT_FOUND", missing).await;
    api.check_err("POST", &format!("{LOC}/queues/nope:pause"), "", 404, "NOT_FOUND", missing).await;
    // An unknown custom method has no route: the front end's HTML 404 (see fidelity.rs).
    let (status, _, page) = api.send_raw("POST", &format!("{LOC}/queues/nope:explode"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    api.check_err(
        "GET",
        &format!("{LOC}/queues?pageSize=-1"),
        "",
        400,
        "INVALID_ARGUMENT",
        "ListQueuesRequest.pageSize cannot be negative.",
    )
    .await;
    api.check_err("GET", &format!("{LOC}/queues?pageToken=!!!"), "", 400, "INVALID_ARGUMENT", "Invalid page_token")
        .await;
    api.check_err(
        "GET",
        &format!("{LOC}/queues?filter=color:red"),
        "",
        400,
        "INVALID_ARGUMENT",
        "Field not found: 'color'.",
    )
    .await;
    api.check_err("GET", "/v3/whatever", "", 404, "NOT_FOUND", "/v3/whatever").await;
    // Nothing above created anything.
    let listed = api.ok("GET", &format!("{LOC}/queues"), "").await;
    assert_eq!(listed, json!({}));
    api.ok("POST", &create, &q(json!({}))).await;
    api.check_err("POST", &create, &q(json!({})), 409, "ALREADY_EXISTS", "Queue already exists").await;
}

#[tokio::test]
async fn bad_task_requests_are_refused_and_change_nothing() {
    let api = api().await;
    api.queue("q").await;
    let create = format!("{LOC}/queues/q/tasks");
    let t = |task: Value| json!({ "task": task }).to_string();
    api.check_err("POST", &create, "{}", 400, "INVALID_ARGUMENT", "Task.payload_type is not set.").await;
    api.check_err("POST", &create, &t(json!({})), 400, "INVALID_ARGUMENT", "Task.payload_type is not set.").await;
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {}})),
        400,
        "INVALID_ARGUMENT",
        "HttpRequest.url is required.",
    )
    .await;
    api.check_err("POST", &create, &t(json!({"httpRequest": {"url": "ftp://x/"}})), 400, "INVALID_ARGUMENT", "http://")
        .await;
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/", "httpMethod": "FETCH"}})),
        400,
        "INVALID_ARGUMENT",
        "http_request.http_method",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/", "httpMethod": "GET", "body": "aGk="}})),
        400,
        "INVALID_ARGUMENT",
        "Body can only be set if the http_method is POST, PUT, or PATCH.",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/", "body": "@@@"}})),
        400,
        "INVALID_ARGUMENT",
        "task.http_request.body",
    )
    .await;
    for url in ["http://[::1", "http://127.0.0.1:99999/", "http://%zz/"] {
        api.check_err(
            "POST",
            &create,
            &t(json!({"httpRequest": {"url": url}})),
            400,
            "INVALID_ARGUMENT",
            "not a valid URL",
        )
        .await;
    }
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/"}, "dispatchDeadline": "5s"})),
        400,
        "INVALID_ARGUMENT",
        "Task.dispatchDeadline must be between [15s, 30m].",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/"}, "scheduleTime": "2099-01-01T00:00:00Z"})),
        400,
        "INVALID_ARGUMENT",
        "The Task.scheduleTime, 2098-12-31T16:00:00-08:00, is too far in the future. Schedule time must be no more \
         than 720h in the future.",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/"}, "scheduleTime": "tomorrow"})),
        400,
        "INVALID_ARGUMENT",
        "task.schedule_time",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &t(json!({"name": "projects/p/locations/l/queues/q/tasks/a.b", "httpRequest": {"url": "http://127.0.0.1:9/"}})),
        400,
        "INVALID_ARGUMENT",
        "Task ID \"",
    )
    .await;
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/"}, "appEngineHttpRequest": {}})),
        400,
        "INVALID_ARGUMENT",
        "App Engine",
    )
    .await;
    let big = "A".repeat(1_500_000);
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/", "body": big}})),
        400,
        "INVALID_ARGUMENT",
        "Task size too large",
    )
    .await;
    let huge = "A".repeat(5_000_000);
    api.check_err(
        "POST",
        &create,
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/", "body": huge}})),
        400,
        "INVALID_ARGUMENT",
        "payload size exceeds the limit",
    )
    .await;
    api.check_err(
        "POST",
        &format!("{LOC}/queues/missing/tasks"),
        &t(json!({"httpRequest": {"url": "http://127.0.0.1:9/"}})),
        404,
        "NOT_FOUND",
        "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize.",
    )
    .await;
    api.check_err(
        "GET",
        &format!("{LOC}/queues/missing/tasks"),
        "",
        404,
        "NOT_FOUND",
        "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize.",
    )
    .await;
    api.check_err(
        "GET",
        &format!("{LOC}/queues/q/tasks/nope"),
        "",
        404,
        "NOT_FOUND",
        "Requested entity was not found.",
    )
    .await;
    api.check_err(
        "DELETE",
        &format!("{LOC}/queues/q/tasks/nope"),
        "",
        404,
        "NOT_FOUND",
        "Requested entity was not found.",
    )
    .await;
    api.check_err(
        "POST",
        &format!("{LOC}/queues/q/tasks/nope:run"),
        "",
        404,
        "NOT_FOUND",
        "Requested entity was not found.",
    )
    .await;
    api.check_err(
        "GET",
        &format!("{LOC}/queues/q/tasks?responseView=HUGE"),
        "",
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'response_view' (type.googleapis.com/google.cloud.tasks.v2.Task.View), \"HUGE\"",
    )
    .await;
    let listed = api.ok("GET", &format!("{LOC}/queues/q/tasks"), "").await;
    assert_eq!(listed, json!({}), "no bad request created a task");
}

#[tokio::test]
async fn task_round_trip_views_paging_and_tombstones() {
    let api = api().await;
    api.queue("q").await;
    let create = format!("{LOC}/queues/q/tasks");
    let body = json!({"task": {
        "name": "projects/p/locations/l/queues/q/tasks/t1",
        "scheduleTime": "2027-01-15T08:00:00.5Z",
        "dispatchDeadline": "30s",
        "httpRequest": {"url": "http://127.0.0.1:9/x", "httpMethod": "PATCH", "body": "aGk=", "headers": {"A": "1", "X-Tasklane-Job-Token": "forged", "x-tasklane-job-id": "j"},
                        "oidcToken": {"serviceAccountEmail": "sa@p.example"}}
    }, "responseView": "FULL"});
    let t = api.ok("POST", &create, &body.to_string()).await;
    assert_eq!(t["name"], "projects/p/locations/l/queues/q/tasks/t1");
    assert_eq!(t["scheduleTime"], "2027-01-15T08:00:00.500Z");
    assert_eq!(t["createTime"], "2027-01-15T08:00:00Z");
    assert_eq!(t["dispatchDeadline"], "30s");
    assert_eq!(t["view"], "FULL");
    assert_eq!(t["httpRequest"]["body"], "aGk=");
    assert_eq!(t["httpRequest"]["httpMethod"], "PATCH");
    assert_eq!(t["httpRequest"]["headers"]["A"], "1");
    assert!(
        t["httpRequest"]["headers"].as_object().unwrap().keys().all(|k| !k.to_lowercase().starts_with("x-tasklane-")),
        "tasklane's own headers are reserved: {}",
        t["httpRequest"]["headers"]
    );
    assert_eq!(t["httpRequest"]["oidcToken"]["audience"], "http://127.0.0.1:9/x", "audience defaults to the URL");
    let basic = api.ok("GET", &format!("{LOC}/queues/q/tasks/t1"), "").await;
    assert!(basic["httpRequest"].get("body").is_none());
    assert_eq!(basic["view"], "BASIC");
    let ints = api.ok("GET", &format!("{LOC}/queues/q/tasks/t1?responseView=2&$alt=json;enum-encoding=int"), "").await;
    assert_eq!(ints["view"], 2);
    assert_eq!(ints["httpRequest"]["httpMethod"], 6);
    assert_eq!(ints["httpRequest"]["body"], "aGk=");

    // A generated name is numeric.
    let generated =
        api.ok("POST", &create, &json!({"task": {"httpRequest": {"url": "http://127.0.0.1:9/"}}}).to_string()).await;
    let id = generated["name"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()), "{id}");

    for i in 0..5 {
        api.ok("POST", &create, &json!({"task": {"name": format!("projects/p/locations/l/queues/q/tasks/p{i}"), "httpRequest": {"url": "http://127.0.0.1:9/"}}}).to_string()).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = api.ok("GET", &format!("{LOC}/queues/q/tasks?pageSize=3&pageToken={token}"), "").await;
        let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
        pages.push(tasks.len());
        for t in tasks {
            seen.push(t["name"].as_str().unwrap().to_string());
        }
        match page.get("nextPageToken") {
            Some(Value::String(next)) => token = next.clone(),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 7);
    // As the real service pages: a token with every non-empty page, the last included.
    assert_eq!(pages, [3, 3, 1, 0]);

    api.ok("DELETE", &format!("{LOC}/queues/q/tasks/t1"), "").await;
    api.check_err("GET", &format!("{LOC}/queues/q/tasks/t1"), "", 404, "NOT_FOUND", "existed recently").await;
    api.check_err("POST", &create, &body.to_string(), 409, "ALREADY_EXISTS", "existed too recently").await;
    // After the tombstone window the name can be used again.
    api.clock.advance(Duration::from_secs(3601));
    api.ok("POST", &create, &body.to_string().replace("2027-01-15T08:00:00.5Z", "2027-01-15T09:00:00.5Z")).await;
}

#[tokio::test]
async fn update_queue_follows_the_mask_rules_and_keeps_state() {
    let api = api().await;
    let path = format!("{LOC}/queues/q");
    // UpdateQueue creates a missing queue.
    let q = api.ok("PATCH", &path, &json!({"name": "projects/p/locations/l/queues/q", "rateLimits": {"maxDispatchesPerSecond": 10}, "retryConfig": {"maxAttempts": 3}}).to_string()).await;
    assert_eq!(q["rateLimits"]["maxDispatchesPerSecond"], 10.0);
    assert_eq!(q["rateLimits"]["maxBurstSize"], 10);
    assert_eq!(q["state"], "RUNNING");
    api.ok("POST", &format!("{path}:pause"), "{}").await;
    // A leaf path changes only that field; state is kept.
    let q = api
        .ok(
            "PATCH",
            &format!("{path}?updateMask=retryConfig.maxDoublings"),
            r#"{"retryConfig": {"maxDoublings": 4, "maxAttempts": 99}}"#,
        )
        .await;
    assert_eq!(q["retryConfig"]["maxDoublings"], 4);
    assert_eq!(q["retryConfig"]["maxAttempts"], 3);
    assert_eq!(q["rateLimits"]["maxDispatchesPerSecond"], 10.0);
    assert_eq!(q["state"], "PAUSED");
    // A sub-message path replaces the whole sub-message.
    let q =
        api.ok("PATCH", &format!("{path}?updateMask=retryConfig"), r#"{"retryConfig": {"minBackoff": "1s"}}"#).await;
    assert_eq!(
        q["retryConfig"],
        json!({"maxAttempts": 100, "minBackoff": "1s", "maxBackoff": "3600s", "maxDoublings": 16})
    );
    // An empty mask changes nothing; no mask replaces everything; output-only fields are ignored.
    let same =
        api.ok("PATCH", &format!("{path}?updateMask="), r#"{"rateLimits": {"maxDispatchesPerSecond": 1}}"#).await;
    assert_eq!(same, q);
    let all = api.ok("PATCH", &path, r#"{"state": "RUNNING", "rateLimits": {"maxDispatchesPerSecond": 2}}"#).await;
    assert_eq!(all["rateLimits"]["maxDispatchesPerSecond"], 2.0);
    assert_eq!(all["retryConfig"]["minBackoff"], "0.100s");
    assert_eq!(all["state"], "PAUSED");
    api.check_err("PATCH", &format!("{path}?updateMask=colour"), "{}", 400, "INVALID_ARGUMENT", "Invalid mask: colour")
        .await;
    api.check_err(
        "PATCH",
        &path,
        r#"{"name": "projects/p/locations/l/queues/other"}"#,
        400,
        "INVALID_ARGUMENT",
        "does not match",
    )
    .await;
    // Filters.
    api.queue("running").await;
    let paused = api.ok("GET", &format!("{LOC}/queues?filter=state:%20PAUSED"), "").await;
    let names: Vec<&str> = paused["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["projects/p/locations/l/queues/q"]);
    let not_paused = api.ok("GET", &format!("{LOC}/queues?filter=state%20!%3D%20paused"), "").await;
    assert_eq!(not_paused["queues"].as_array().unwrap().len(), 1);
    assert_eq!(not_paused["queues"][0]["name"], "projects/p/locations/l/queues/running");
    // Purge keeps the state and records the time.
    let purged = api.ok("POST", &format!("{path}:purge"), "").await;
    assert_eq!(purged["state"], "PAUSED");
    assert_eq!(purged["purgeTime"], "2027-01-15T08:00:00Z");
}

/// A queue handed over while its settings were still loading must not start a loop:
/// on this single-threaded runtime the reload runs only after both calls below.
#[tokio::test]
async fn a_cluster_node_never_starts_a_queue_it_no_longer_holds() {
    let dir = std::env::temp_dir().join(format!("tasklane-owned-{}", std::process::id()));
    // A directory an earlier run with the same process id left behind starts empty again.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.join("db")).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_secs(1_800_000_000)));
    let name = tasklane_core::QueueName::parse("projects/p/locations/l/queues/q").unwrap();
    let queue = tasklane_core::queue::QueueSpec::default()
        .resolve(name.clone(), tasklane_core::QueueState::Running, None)
        .unwrap();
    store.queue_create(tasklane_store::QueueCreate { queue, now: clock.now() }).await.unwrap();
    let (notifier, _wakes) = tokio::sync::mpsc::unbounded_channel();
    let dispatcher = Dispatcher::clustered(
        store,
        clock,
        http_client().unwrap(),
        DispatchConfig::default(),
        tasklane_server::events::Events::new(Some(notifier)),
    );

    dispatcher.set_owned(std::slice::from_ref(&name));
    dispatcher.set_owned(&[]);
    // Once the reload has read the queue and done what it would (quiet counts reloads).
    until_steady("the reload to finish", 1, || dispatcher.quiet()).await;
    assert!(dispatcher.owned().is_empty(), "a late reload started a queue that was handed over");

    dispatcher.set_owned(std::slice::from_ref(&name));
    until_steady("a held queue to start", 1, || !dispatcher.owned().is_empty()).await;
    assert_eq!(dispatcher.owned(), vec![name], "a held queue does start");
    dispatcher.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

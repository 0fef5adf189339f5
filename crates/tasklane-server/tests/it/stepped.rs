//! The dispatcher stepped by hand (issue 15): a real store and a real worker, but time is a
//! `ManualClock` that moves only when a test advances it. Between steps the test waits for
//! the dispatcher to be quiet (every loop parked, nothing in flight, no wake-up due), so it
//! can assert exactly what was sent at each moment, and what was not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tasklane_core::{Clock, Timestamp};
use tasklane_server::dispatch::{DispatchConfig, Dispatcher, http_client};
use tasklane_server::rest::proto_json::format_timestamp;

use tasklane_store::{SqliteStore, Store, TaskClaimByName, TaskFinish, TaskOutcome};
use tower::ServiceExt;

const LOC: &str = "/v2/projects/p/locations/l";

/// A worker on loopback: counts what it gets, answers with `status`, and holds each request
/// while `held` is set.
#[derive(Clone, Default)]
struct Worker {
    got: Arc<Mutex<Vec<String>>>,
    status: Arc<AtomicUsize>,
    held: Arc<tokio::sync::RwLock<()>>,
}

impl Worker {
    async fn start(status: u16) -> (Worker, SocketAddr) {
        let worker = Worker::default();
        worker.status.store(status as usize, Ordering::SeqCst);
        let w = worker.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let w = w.clone();
            async move {
                w.got.lock().unwrap().push(uri.path().to_string());
                let _hold = w.held.read().await;
                StatusCode::from_u16(w.status.load(Ordering::SeqCst) as u16).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (worker, addr)
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn paths(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }
}

/// The in-process API (`super::api`) with its dispatcher on a `ManualClock`.
struct Stepped {
    api: super::Api,
}

async fn stepped() -> Stepped {
    Stepped { api: super::api().await }
}

impl std::ops::Deref for Stepped {
    type Target = super::Api;
    fn deref(&self) -> &super::Api {
        &self.api
    }
}

impl Stepped {
    async fn send(&self, method: &str, uri: &str, body: Value) -> Value {
        let req = Request::builder().method(method).uri(uri).body(Body::from(body.to_string())).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "{method} {uri}: {value}");
        value
    }

    async fn queue(&self, id: &str, settings: Value) {
        let mut body = json!({"name": format!("projects/p/locations/l/queues/{id}")});
        body.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
        self.send("POST", &format!("{LOC}/queues"), body).await;
    }

    async fn task(&self, queue: &str, url: String, extra: Value) {
        let mut task = json!({"httpRequest": {"url": url}});
        task.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        self.send("POST", &format!("{LOC}/queues/{queue}/tasks"), json!({"task": task})).await;
    }

    /// Wait until the dispatcher has done everything it can at this moment (quiet several
    /// looks in a row).
    async fn settle(&self) {
        self.until(|d| d.quiet(), "quiet").await;
    }

    /// Wait until `state` holds several looks in a row.
    async fn until(&self, state: impl Fn(&Dispatcher) -> bool, what: &str) {
        super::until_steady(&format!("the dispatcher to be {what}"), 5, || state(&self.dispatcher)).await;
    }

    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.settle().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_sends_its_burst_then_one_task_per_token() {
    let t = stepped().await;
    let (worker, addr) = Worker::start(200).await;
    // 2 a second; the burst is the real service's max(10, rate / 5) = 10.
    t.queue("rated", json!({"rateLimits": {"maxDispatchesPerSecond": 2}})).await;
    t.send("POST", &format!("{LOC}/queues/rated:pause"), json!({})).await;
    for i in 0..16 {
        t.task("rated", format!("http://{addr}/{i}"), json!({})).await;
    }
    t.send("POST", &format!("{LOC}/queues/rated:resume"), json!({})).await;
    t.settle().await;
    assert_eq!(worker.count(), 10, "the burst, and not one more while time stands still");
    t.advance(Duration::from_millis(499)).await;
    assert_eq!(worker.count(), 10, "a token takes half a second");
    t.advance(Duration::from_millis(1)).await;
    assert_eq!(worker.count(), 11, "one token, one task");
    t.advance(Duration::from_millis(1500)).await;
    assert_eq!(worker.count(), 14, "three more tokens in 1.5 s");
    t.advance(Duration::from_secs(60)).await;
    assert_eq!(worker.count(), 16, "the rest, and nothing twice");
    let mut paths = worker.paths();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_waits_out_its_backoff_to_the_microsecond() {
    let t = stepped().await;
    let (worker, addr) = Worker::start(503).await;
    let retry = json!({"minBackoff": "10s", "maxBackoff": "10s", "maxAttempts": 3});
    t.queue("backoff", json!({"retryConfig": retry})).await;
    t.task("backoff", format!("http://{addr}/flaky"), json!({})).await;
    t.settle().await;
    assert_eq!(worker.count(), 1);
    t.advance(Duration::from_micros(9_999_999)).await;
    assert_eq!(worker.count(), 1, "not before the backoff");
    t.advance(Duration::from_micros(1)).await;
    assert_eq!(worker.count(), 2, "at the backoff");
    t.advance(Duration::from_secs(10)).await;
    assert_eq!(worker.count(), 3);
    t.advance(Duration::from_secs(3600)).await;
    assert_eq!(worker.count(), 3, "no attempt after max_attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_cap_holds_and_a_finished_delivery_frees_its_place() {
    let t = stepped().await;
    let (worker, addr) = Worker::start(200).await;
    t.queue("capped", json!({"rateLimits": {"maxConcurrentDispatches": 2}})).await;
    let gate = worker.held.clone().write_owned().await;
    for i in 0..5 {
        t.task("capped", format!("http://{addr}/{i}"), json!({})).await;
    }
    // Two in flight, held by the worker: the dispatcher is busy, not quiet; wait for the two.
    super::until_steady("the first two deliveries", 1, || worker.count() >= 2).await;
    t.clock.advance(Duration::from_secs(5));
    t.until(|d| d.parked() && d.in_flight() == 2, "parked with two in flight").await;
    assert_eq!(worker.count(), 2, "no third delivery while two are in flight, however much time passes");
    drop(gate);
    t.settle().await;
    assert_eq!(worker.count(), 5, "each finished delivery let the next one go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_sends_nothing_however_long_it_waits_and_a_scheduled_task_waits_for_its_time() {
    let t = stepped().await;
    let (worker, addr) = Worker::start(200).await;
    t.queue("paused", json!({})).await;
    t.send("POST", &format!("{LOC}/queues/paused:pause"), json!({})).await;
    t.task("paused", format!("http://{addr}/p"), json!({})).await;
    t.advance(Duration::from_secs(24 * 3600)).await;
    assert_eq!(worker.count(), 0, "a day of a paused queue");
    t.send("POST", &format!("{LOC}/queues/paused:resume"), json!({})).await;
    t.settle().await;
    assert_eq!(worker.paths(), ["/p"]);

    // Scheduled a minute ahead: not a microsecond early.
    let schedule = format_timestamp(Timestamp(t.clock.now().0 + 60_000_000));
    t.task("paused", format!("http://{addr}/later"), json!({"scheduleTime": schedule})).await;
    t.advance(Duration::from_micros(59_999_999)).await;
    assert_eq!(worker.count(), 1, "not before its schedule time");
    t.advance(Duration::from_micros(1)).await;
    assert_eq!(worker.paths(), ["/p", "/later"]);
}

/// A delivery whose process died holds its lease until the lease ends; then the task is
/// sent again, not a microsecond before, and the dead delivery's outcome no longer counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_runs_out_is_delivered_again_when_it_ends() {
    let t = stepped().await;
    let (worker, addr) = Worker::start(200).await;
    t.queue("leased", json!({})).await;
    t.send("POST", &format!("{LOC}/queues/leased:pause"), json!({})).await;
    let name = "projects/p/locations/l/queues/leased/tasks/t1";
    t.task("leased", format!("http://{addr}/again"), json!({"name": name, "dispatchDeadline": "60s"})).await;
    // Leased by a process that is gone: the lease is in the store, and no outcome will come.
    let grace = Duration::from_secs(5);
    let name = tasklane_core::TaskName::parse(name).unwrap();
    let lost = TaskClaimByName { name: name.clone(), grace, now: t.clock.now() };
    let lost = t.store.task_claim_by_name(lost).await.unwrap();
    t.send("POST", &format!("{LOC}/queues/leased:resume"), json!({})).await;
    t.settle().await;
    assert_eq!(worker.count(), 0, "the lease holds the task");
    t.advance(Duration::from_secs(65) - Duration::from_micros(1)).await;
    assert_eq!(worker.count(), 0, "not before the lease ends");
    t.advance(Duration::from_micros(1)).await;
    assert_eq!(worker.paths(), ["/again"], "sent again when the lease ended");
    let done = TaskOutcome::Succeeded { tombstone_until: t.clock.now() };
    let late = TaskFinish { name, lease_id: lost.lease_id, outcome: done, now: t.clock.now() };
    assert!(!t.store.task_finish(late).await.unwrap(), "the dead delivery's outcome is refused");
}

/// Idle queues cost nothing: each waits on one scheduler entry for its next due task, and
/// no loop runs while nothing is due (this was a 5-second poll per queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_queues_wait_on_one_scheduler_and_do_nothing_until_due() {
    let t = stepped().await;
    let (worker, addr) = Worker::start(200).await;
    let schedule = format_timestamp(Timestamp(t.clock.now().0 + 24 * 3600 * 1_000_000));
    for q in 0..200 {
        t.queue(&format!("idle{q}"), json!({})).await;
        t.task(&format!("idle{q}"), format!("http://{addr}/{q}"), json!({"scheduleTime": schedule})).await;
    }
    t.settle().await;
    assert_eq!(t.dispatcher.scheduled_wakeups(), 200, "one pending wake-up per queue, held by the scheduler");
    t.advance(Duration::from_secs(23 * 3600)).await;
    assert_eq!(worker.count(), 0);
    t.advance(Duration::from_secs(3600)).await;
    assert_eq!(worker.count(), 200, "every queue woke when its task fell due");
    let by_path: HashMap<String, usize> = worker.paths().into_iter().fold(HashMap::new(), |mut m, p| {
        *m.entry(p).or_default() += 1;
        m
    });
    assert!(by_path.values().all(|n| *n == 1), "each once");
    assert_eq!(t.dispatcher.scheduled_wakeups(), 0, "nothing left to wake for");
}

/// A long poll returns as soon as a task is created, woken by the create rather than by the
/// end of its wait: the create is made once the poll is known to be parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_woken_by_a_create() {
    let t = stepped().await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(t.dir.join("pull.db")).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(t.clock.clone());
    let dispatcher = Dispatcher::new(store.clone(), clock.clone(), http_client().unwrap(), DispatchConfig::default());
    let pull = tasklane_server::pull::Pull::new(store.clone(), clock.clone(), dispatcher, Duration::from_secs(3600));
    let name = tasklane_core::QueueName::parse("projects/p/locations/l/queues/polled").unwrap();
    let mut queue = tasklane_core::queue::QueueSpec::default()
        .resolve(name.clone(), tasklane_core::QueueState::Running, None)
        .unwrap();
    queue.kind = tasklane_core::QueueKind::Pull;
    store.queue_create(tasklane_store::QueueCreate { queue, now: clock.now() }).await.unwrap();
    let poll = tokio::spawn({
        let pull = pull.clone();
        let queue = name.to_string();
        async move {
            let request = tasklane_server::pull::LeaseRequest {
                queue,
                max_tasks: 1,
                lease: Duration::from_secs(60),
                tag: None,
                wait: Duration::from_secs(30),
            };
            let asked = std::time::Instant::now();
            (pull.lease(request).await.unwrap(), asked.elapsed())
        }
    });
    super::until_steady("the poll to park", 1, || pull.parked_polls() == 1).await;
    let spec = tasklane_core::PullSpec { payload: b"now".to_vec(), ..Default::default() };
    let created = pull.create(&name.to_string(), vec![spec]).await.unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let (leased, took) = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("the poll returned").unwrap();
    assert_eq!(leased.len(), 1, "it returned with the new task");
    assert!(took < Duration::from_secs(30), "woken by the create, not by the end of its 30 s wait ({took:?})");
    assert_eq!(pull.parked_polls(), 0);
}

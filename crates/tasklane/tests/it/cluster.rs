//! Several nodes on one PostgreSQL database (`support::test_database_url`); each test works
//! in a schema of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasklane_store::PgStore;

use crate::support::{CuttableProxy, PROJECT_LOCATION, TasklaneProcess, Worker, eventually};

/// A URL whose connections use a fresh schema, or `None` when PostgreSQL is not configured.
pub(crate) async fn fresh_database(tag: &str) -> Option<(String, PgStore, String)> {
    let url = crate::support::test_database_url()?;
    let schema = tasklane_store::scratch_schema(&format!("e2e_{tag}"));
    let store = PgStore::connect(&url, Some(&schema)).await.unwrap_or_else(|e| {
        panic!("cannot use PostgreSQL at {url}: {e}; set TASKLANE_TEST_DATABASE_URL, or to none to skip these tests")
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    Some((format!("{url}{sep}options=-c%20search_path%3D{schema}"), store, schema))
}

/// A proxy to the database at `url` that a test can cut or silence, and a URL for the same
/// database and `schema` through it.
pub(crate) async fn proxied_database(url: &str, schema: &str) -> (CuttableProxy, String) {
    let config: tokio_postgres::Config = url.parse().expect("database URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let upstream = tokio::net::lookup_host((host.as_str(), port)).await.unwrap().next().unwrap();
    let proxy = CuttableProxy::start(upstream).await;
    let mut proxied = format!(
        "host=127.0.0.1 port={} user={} dbname={} options='-c search_path={schema}'",
        proxy.port,
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres"),
    );
    if let Some(password) = config.get_password() {
        proxied.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
    }
    (proxy, proxied)
}

/// When each task was delivered.
#[derive(Default)]
struct Ledger {
    deliveries: HashMap<String, Vec<Instant>>,
}

/// How long the worker takes to answer: a second delivery of a task that arrives
/// sooner after the first would mean two attempts were in flight at once.
const SERVICE_TIME: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_deliver_everything_and_survive_a_kill_9() {
    let Some((url, schema_store, schema)) = fresh_database("kill").await else { return };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let l = ledger.clone();
    let worker = Worker::start(Arc::new(move |r, _| {
        let name = r.header("x-cloudtasks-taskname").unwrap_or("").to_string();
        l.lock().unwrap().deliveries.entry(name).or_default().push(r.at);
        (200, SERVICE_TIME)
    }))
    .await;
    let nodes: Vec<TasklaneProcess> = (0..3).map(|_| TasklaneProcess::start_node(&url)).collect();
    let apis: Vec<_> = nodes.iter().map(|n| n.api()).collect();
    const QUEUES: usize = 6;
    const PER_QUEUE: usize = 3334;
    for q in 0..QUEUES {
        apis[q % 3].create_queue(&format!("c{q}"), json!({})).await;
    }
    // Every node takes its share of the queues.
    eventually("queues to spread over the three nodes", Duration::from_secs(15), || async {
        let status = apis[0].ok(reqwest::Method::GET, "../v1/cluster", None).await;
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        nodes.len() == 3 && nodes.iter().all(|n| n["queues"].as_array().is_some_and(|q| q.len() == 2))
    })
    .await;

    let start = Instant::now();
    let mut handles = Vec::new();
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    for q in 0..QUEUES {
        for chunk in 0..5 {
            let url = worker.url("/");
            let addrs = addrs.clone();
            handles.push(tokio::spawn(async move {
                let client = crate::support::client();
                for i in (chunk * PER_QUEUE / 5)..((chunk + 1) * PER_QUEUE / 5) {
                    let task = json!({"task": {
                        "name": format!("{PROJECT_LOCATION}/queues/c{q}/tasks/t{q}x{i}"),
                        "dispatchDeadline": "15s",
                        "httpRequest": {"url": url},
                    }});
                    // Like a real client: when a node is gone, send the same named task to
                    // another. 409 means an earlier try was accepted, so the name is safe to retry.
                    let mut accepted = false;
                    for attempt in 0..6 {
                        let addr = addrs[(q + chunk + attempt) % addrs.len()];
                        let url = format!("http://{addr}/v2/{PROJECT_LOCATION}/queues/c{q}/tasks");
                        let sent = client
                            .post(url)
                            .header("content-type", "application/json")
                            .body(task.to_string())
                            .send()
                            .await;
                        if let Ok(resp) = sent
                            && (resp.status() == 200 || resp.status() == 409)
                        {
                            accepted = true;
                            break;
                        }
                    }
                    assert!(accepted, "no node accepted task t{q}x{i}");
                }
            }));
        }
    }
    // Kill one node once a third of the work is done.
    let total = QUEUES * PER_QUEUE;
    eventually("a third of the tasks to be delivered", Duration::from_secs(60), || {
        let ledger = ledger.clone();
        async move { ledger.lock().unwrap().deliveries.len() >= total / 3 }
    })
    .await;
    let mut nodes = nodes;
    let killed = nodes.remove(0);
    killed.kill_hard();
    for h in handles {
        h.await.expect("every task is accepted by some node");
    }
    // Tasks whose creates went to the killed node before it died are in the store too;
    // tasks whose creates failed were never accepted. Check against what the store holds.
    let api = nodes[0].api();
    eventually("every accepted task to be delivered", Duration::from_secs(90), || {
        let api = &api;
        async move {
            let mut pending = 0;
            for q in 0..QUEUES {
                pending += api.task_count(&format!("c{q}")).await;
            }
            pending == 0
        }
    })
    .await;
    let elapsed = start.elapsed();
    let deliveries = std::mem::take(&mut ledger.lock().unwrap().deliveries);
    let delivered = deliveries.len();
    let duplicates: usize = deliveries.values().map(|t| t.len() - 1).sum();
    eprintln!("cluster: {delivered} tasks delivered, {duplicates} duplicates, in {elapsed:?}");
    let missing: Vec<String> = (0..QUEUES)
        .flat_map(|q| (0..PER_QUEUE).map(move |i| format!("t{q}x{i}")))
        .filter(|id| !deliveries.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "{} tasks never delivered, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    // No task was ever in flight twice at once: a second delivery starts only after the
    // first one was answered (or abandoned when its lease ran out).
    for (name, times) in &deliveries {
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            assert!(gap >= SERVICE_TIME, "{name} was delivered twice {gap:?} apart, overlapping");
        }
    }
    drop(nodes);
    let _ = schema_store.drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_across_three_nodes() {
    let Some((url, schema_store, schema)) = fresh_database("rate").await else { return };
    let worker = Worker::ok().await;
    let nodes: Vec<TasklaneProcess> = (0..3).map(|_| TasklaneProcess::start_node(&url)).collect();
    let api = nodes[0].api();
    api.create_queue("limited", json!({"rateLimits": {"maxDispatchesPerSecond": 50}})).await;
    api.queue_verb("limited", "pause").await;
    for i in 0..200 {
        nodes[i % 3].api().create_task("limited", json!({"httpRequest": {"url": worker.url(&format!("/{i}"))}})).await;
    }
    let start = Instant::now();
    api.queue_verb("limited", "resume").await;
    let got = worker.wait_for(200, Duration::from_secs(30)).await;
    let span = got[199].at.duration_since(start);
    // A burst of 10, then 190 at 50 per second: about 3.8 s.
    assert!(span >= Duration::from_secs(3), "200 tasks at 50/s took only {span:?}");
    let after_burst = got[199].at.duration_since(got[9].at).as_secs_f64();
    let rate = 190.0 / after_burst;
    assert!((40.0..=52.5).contains(&rate), "{rate:.1}/s after the burst against a limit of 50/s");
    let times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| u.duration_since(*t) < Duration::from_secs(1)).count();
        assert!(in_window <= 62, "{in_window} deliveries within one second at 50/s (burst 10)");
    }
    let status: Value = api.ok(reqwest::Method::GET, "../v1/cluster", None).await;
    let owners: usize = status["nodes"].as_array().unwrap().iter().map(|n| n["queues"].as_array().unwrap().len()).sum();
    assert_eq!(owners, 1, "one node dispatches the queue: {status}");
    // A concurrency cap holds across the nodes too.
    let slow = Worker::start(Arc::new(|_, _| (200, Duration::from_millis(100)))).await;
    api.create_queue("capped", json!({"rateLimits": {"maxConcurrentDispatches": 2}})).await;
    for i in 0..30 {
        nodes[i % 3].api().create_task("capped", json!({"httpRequest": {"url": slow.url(&format!("/{i}"))}})).await;
    }
    slow.wait_for(30, Duration::from_secs(30)).await;
    assert_eq!(slow.max_in_flight(), 2, "two requests in flight at most, from any node");
    drop(nodes);
    let _ = schema_store.drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_stop_and_recover_when_the_database_goes_away() {
    let Some((url, schema_store, schema)) = fresh_database("outage").await else { return };
    // Reach the database through a proxy the test can cut.
    let (proxy, proxied) = proxied_database(&url, &schema).await;

    let worker = Worker::ok().await;
    let nodes: Vec<TasklaneProcess> = (0..2).map(|_| TasklaneProcess::start_node(&proxied)).collect();
    let api = nodes[0].api();
    api.create_queue("steady", json!({"rateLimits": {"maxDispatchesPerSecond": 40}})).await;
    for i in 0..120 {
        let name = format!("{PROJECT_LOCATION}/queues/steady/tasks/s{i}");
        nodes[i % 2]
            .api()
            .create_task(
                "steady",
                json!({"name": name, "dispatchDeadline": "15s", "httpRequest": {"url": worker.url("/")}}),
            )
            .await;
    }
    worker.wait_for(20, Duration::from_secs(15)).await;

    proxy.cut();
    let client = crate::support::client();
    let ready = |addr: std::net::SocketAddr| {
        let client = client.clone();
        async move { client.get(format!("http://{addr}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    eventually("both nodes to report not ready", Duration::from_secs(10), || async {
        ready(nodes[0].addr).await == 503 && ready(nodes[1].addr).await == 503
    })
    .await;
    proxy.restore();
    eventually("both nodes to be ready again", Duration::from_secs(15), || async {
        ready(nodes[0].addr).await == 200 && ready(nodes[1].addr).await == 200
    })
    .await;
    eventually("every task to be delivered after the outage", Duration::from_secs(60), || {
        let api = &api;
        async move { api.task_count("steady").await == 0 }
    })
    .await;
    let names: std::collections::HashSet<String> =
        worker.received().iter().filter_map(|r| r.header("x-cloudtasks-taskname").map(String::from)).collect();
    for i in 0..120 {
        assert!(names.contains(&format!("s{i}")), "task s{i} was never delivered");
    }
    drop(nodes);
    drop(proxy);
    let _ = schema_store.drop_schema(&schema).await;
}

#[test]
fn a_wrong_database_url_fails_at_start_with_a_clear_message() {
    let check = |url: &str, expected: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
            .output()
            .expect("run tasklane");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url} should not start");
        assert!(stderr.contains("cannot use the database at"), "{stderr}");
        assert!(stderr.contains(expected), "expected {expected:?} in {stderr}");
        assert!(!stderr.contains("s3cret"), "the password is hidden: {stderr}");
    };
    // Nothing listens on port 1 of loopback.
    check("postgres://someone:s3cret@127.0.0.1:1/db", "Connection refused");
    check("postgres:/not a url", "invalid database URL");
    if let Some(url) = crate::support::test_database_url() {
        let config: tokio_postgres::Config = url.parse().expect("database URL");
        let port = config.get_ports().first().copied().unwrap_or(5432);
        check(&format!("postgres://no_such_role_here:s3cret@127.0.0.1:{port}/test"), "no_such_role_here");
    }
}

/// Work and settings sent to a node that does not own the queue reach its owner at once,
/// not at the owner's 5-second safety poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_nodes_wake_the_owner_for_creates_and_settings() {
    let Some((url, schema_store, schema)) = fresh_database("wake").await else { return };
    let worker = Worker::ok().await;
    let nodes: Vec<TasklaneProcess> = (0..2).map(|_| TasklaneProcess::start_node(&url)).collect();
    nodes[0].api().create_queue("woken", json!({})).await;
    // Find the node that does not own the queue.
    let started = Instant::now();
    let other = loop {
        let status = nodes[0].api().ok(reqwest::Method::GET, "../v1/cluster", None).await;
        let owner = status["nodes"].as_array().and_then(|nodes| {
            nodes.iter().find(|n| n["queues"].as_array().is_some_and(|q| !q.is_empty())).map(|n| n["address"].clone())
        });
        if let Some(owner) = owner {
            break nodes.iter().position(|n| Value::String(n.addr.to_string()) != owner).expect("two nodes");
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no node took the queue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let api = nodes[other].api();
    let task = |id: &str| json!({"name": format!("{PROJECT_LOCATION}/queues/woken/tasks/{id}"), "httpRequest": {"url": worker.url("/")}});
    for i in 0..5 {
        // The owner has recorded every delivery so far (the queue is empty), so its loop has
        // claimed nothing more and waits to be woken: only the wake can bring it the next task.
        eventually("the owner to record the last delivery", Duration::from_secs(10), || async {
            api.task_count("woken").await == 0
        })
        .await;
        let sent = Instant::now();
        api.create_task("woken", task(&format!("w{i}"))).await;
        worker.wait_for(i + 1, Duration::from_secs(10)).await;
        // Woken: an idle loop has no poll that would find the task otherwise.
        assert!(
            sent.elapsed() < Duration::from_millis(2500),
            "create {i} reached the owner after {:?}",
            sent.elapsed()
        );
    }
    // A resume sent to the other node restarts the owner at once. (That a paused queue is
    // not dispatched needs no waiting to show: the claim statement itself leases nothing from
    // a queue paused in the store, whatever the owner believes; the store suite tests it.)
    api.queue_verb("woken", "pause").await;
    api.create_task("woken", task("paused")).await;
    let sent = Instant::now();
    api.queue_verb("woken", "resume").await;
    worker.wait_for(6, Duration::from_secs(10)).await;
    assert!(sent.elapsed() < Duration::from_millis(2500), "the resume reached the owner after {:?}", sent.elapsed());
    drop(nodes);
    let _ = schema_store.drop_schema(&schema).await;
}

/// A job created on one node is dispatched by the queue's owner and followed live from
/// the other: job changes travel between nodes over the same relay as wake-ups.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_s_events_reach_watchers_on_every_node() {
    let Some((url, schema_store, schema)) = fresh_database("jobs").await else { return };
    let worker = Worker::start(Arc::new(|_, _| (200, Duration::from_millis(50)))).await;
    let nodes: Vec<TasklaneProcess> = (0..2).map(|_| TasklaneProcess::start_node(&url)).collect();
    nodes[0].api().create_queue("shared", json!({})).await;
    let http = crate::support::client();
    let tasks: Vec<Value> = (0..20).map(|i| json!({"url": worker.url(&format!("/{i}"))})).collect();
    let body = json!({"queue": format!("{PROJECT_LOCATION}/queues/shared"), "tasks": tasks});
    let created = http
        .post(format!("http://{}/v1/jobs", nodes[0].addr))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let job: Value = serde_json::from_slice(&created.bytes().await.unwrap()).unwrap();
    let id = job["id"].as_str().unwrap();
    // Watch from the other node; the stream ends when the job has finished.
    let mut stream = http.get(format!("http://{}/v1/jobs/{id}/events", nodes[1].addr)).send().await.unwrap();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the other node's stream follows the job to its end");
    let kinds: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event:")).map(str::trim).collect();
    assert_eq!(kinds.last(), Some(&"succeeded"), "{kinds:?}");
    let succeeded = kinds.iter().filter(|k| **k == "task_succeeded").count();
    assert_eq!(succeeded, 20, "one event per task outcome, as on the embedded store: {kinds:?}");
    let ids: Vec<i64> = text.lines().filter_map(|l| l.strip_prefix("id:")).map(|v| v.trim().parse().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "in order, none missing");
    let last: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .map(|d| serde_json::from_str(d.trim()).expect("event data is JSON"))
        .expect("a last event");
    assert_eq!(
        last["job"]["counts"],
        json!({"total": 20, "succeeded": 20, "failed": 0, "running": 0, "pending": 0, "cancelled": 0}),
        "{last}"
    );
    drop(nodes);
    let _ = schema_store.drop_schema(&schema).await;
}

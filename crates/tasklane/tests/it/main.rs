//! End-to-end tests: the real binary on a free port, pushing to a local worker.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step should stop the test

mod cluster;
mod compat;
mod connections;
mod examples;
mod faults;
mod grpc;
mod jobs;
mod promises;
mod pull;
mod security;
mod support;
mod targets;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::{PROJECT_LOCATION, TasklaneProcess, Worker, eventually};

fn task_name(queue: &str, id: &str) -> String {
    format!("{PROJECT_LOCATION}/queues/{queue}/tasks/{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_a_task_with_cloud_tasks_headers_and_body() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    let api = server.api();
    api.create_queue("deliver", json!({})).await;
    let created = api
        .create_task(
            "deliver",
            json!({
                "name": task_name("deliver", "job-1"),
                "httpRequest": {
                    "url": worker.url("/hooks/render?x=1"),
                    "httpMethod": "PUT",
                    "headers": {"Content-Type": "application/json", "X-Custom": "yes", "Host": "evil.example", "User-Agent": "me"},
                    "body": "eyJoZWxsbyI6IndvcmxkIn0="
                }
            }),
        )
        .await;
    assert_eq!(created["name"], task_name("deliver", "job-1"));
    assert_eq!(created["view"], "BASIC");
    assert!(created["httpRequest"].get("body").is_none(), "BASIC view has no body: {created}");

    let got = worker.wait_for(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(r.path, "/hooks/render");
    assert_eq!(&r.body[..], br#"{"hello":"world"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-custom"), Some("yes"));
    assert_eq!(r.header("user-agent"), Some("Google-Cloud-Tasks"));
    assert_ne!(r.header("host"), Some("evil.example"));
    assert_eq!(r.header("x-cloudtasks-queuename"), Some("deliver"));
    assert_eq!(r.header("x-cloudtasks-taskname"), Some("job-1"));
    assert_eq!(r.header("x-cloudtasks-taskretrycount"), Some("0"));
    assert_eq!(r.header("x-cloudtasks-taskexecutioncount"), Some("0"));
    // The ETA header is the task's schedule time in seconds, its fraction without trailing zeros.
    let scheduled = time::OffsetDateTime::parse(
        created["scheduleTime"].as_str().expect("a schedule time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("an RFC 3339 schedule time");
    let micros = scheduled.unix_timestamp_nanos() / 1000;
    let expected = format!("{}.{:06}", micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let expected = expected.trim_end_matches('0').trim_end_matches('.');
    assert_eq!(r.header("x-cloudtasks-tasketa"), Some(expected));
    assert_eq!(r.header("x-cloudtasks-taskpreviousresponse"), None);

    // Delivered tasks leave the queue, and their name stays reserved.
    eventually("the task to finish", Duration::from_secs(5), || async { api.task_count("deliver").await == 0 }).await;
    let (status, err) = api
        .call(
            Method::POST,
            &format!("{PROJECT_LOCATION}/queues/deliver/tasks"),
            Some(json!({"task": {"name": task_name("deliver", "job-1"), "httpRequest": {"url": worker.url("/")}}})),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["status"], "ALREADY_EXISTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_worker_sees_retry_headers_and_backoff_gaps() {
    let server = TasklaneProcess::start();
    // 500, then 404, then 200.
    let worker = Worker::start(Arc::new(|_, i| match i {
        0 => (500, Duration::ZERO),
        1 => (404, Duration::ZERO),
        _ => (200, Duration::ZERO),
    }))
    .await;
    let api = server.api();
    api.create_queue("retry", json!({"retryConfig": {"minBackoff": "1s", "maxBackoff": "10s", "maxDoublings": 2}}))
        .await;
    api.create_task("retry", json!({"name": task_name("retry", "t"), "httpRequest": {"url": worker.url("/w")}})).await;

    let got = worker.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(got[1].header("x-cloudtasks-taskretrycount"), Some("1"));
    assert_eq!(got[1].header("x-cloudtasks-taskpreviousresponse"), Some("500"));
    assert_eq!(got[1].header("x-cloudtasks-taskretryreason"), Some("HTTP status code 500 Internal Server Error"));
    assert_eq!(got[2].header("x-cloudtasks-taskretryreason"), Some("HTTP status code 404 Not Found"));
    assert_eq!(got[1].header("x-cloudtasks-taskexecutioncount"), Some("0"), "a 5xx is not an execution");
    assert_eq!(got[2].header("x-cloudtasks-taskretrycount"), Some("2"));
    assert_eq!(got[2].header("x-cloudtasks-taskpreviousresponse"), Some("404"));
    assert_eq!(got[2].header("x-cloudtasks-taskexecutioncount"), Some("1"));
    // Backoff: 1 s after the first failure, 2 s after the second.
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(gap1 >= Duration::from_millis(950) && gap1 < Duration::from_millis(2500), "first gap {gap1:?}");
    assert!(gap2 >= Duration::from_millis(1950) && gap2 < Duration::from_millis(3500), "second gap {gap2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_recorded_and_a_task_gives_up_after_max_attempts() {
    let server = TasklaneProcess::start();
    let worker = Worker::start(Arc::new(|_, _| (503, Duration::ZERO))).await;
    let api = server.api();
    api.create_queue("giveup", json!({"retryConfig": {"maxAttempts": 2, "minBackoff": "0.2s"}})).await;
    api.create_task("giveup", json!({"name": task_name("giveup", "t"), "httpRequest": {"url": worker.url("/")}})).await;
    worker.wait_for(2, Duration::from_secs(10)).await;
    eventually("the task to give up", Duration::from_secs(5), || async { api.task_count("giveup").await == 0 }).await;
    // It left the queue for the dead letters with exactly its two attempts, in the same
    // write: nothing is left to attempt a third time.
    let dead = api
        .ok(Method::GET, "../v1/queues/projects%2Ftest%2Flocations%2Fhere%2Fqueues%2Fgiveup/dead-letters", None)
        .await;
    let attempts = dead["dead_letters"][0]["attempts"].as_array().map(Vec::len);
    assert_eq!(attempts, Some(2), "no attempt after max_attempts: {dead}");
    assert_eq!(worker.received().len(), 2, "no attempt after max_attempts");
    let (status, err) = api.call(Method::GET, &task_name("giveup", "t"), None).await;
    assert_eq!(status, 404);
    assert!(err["error"]["message"].as_str().unwrap().contains("existed recently"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_delivery_and_resume_restarts_it() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    let api = server.api();
    api.create_queue("pausing", json!({})).await;
    let paused = api.queue_verb("pausing", "pause").await;
    assert_eq!(paused["state"], "PAUSED");
    for i in 0..5 {
        api.create_task("pausing", json!({"httpRequest": {"url": worker.url(&format!("/{i}"))}})).await;
    }
    // A task created after them in a running queue arrives; theirs do not.
    api.create_queue("running", json!({})).await;
    api.create_task("running", json!({"httpRequest": {"url": worker.url("/later")}})).await;
    let got = worker.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/later"],
        "a paused queue dispatches nothing"
    );
    let listed = api.ok(Method::GET, &format!("{PROJECT_LOCATION}/queues/pausing/tasks"), None).await;
    let tasks = listed["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 5);
    assert!(tasks.iter().all(|t| t["dispatchCount"].as_i64().unwrap_or(0) == 0), "none was even leased: {listed}");

    // RunTask dispatches even while paused.
    let listed = api.ok(Method::GET, &format!("{PROJECT_LOCATION}/queues/pausing/tasks"), None).await;
    let first = listed["tasks"][0]["name"].as_str().unwrap().to_string();
    let ran = api.ok(Method::POST, &format!("{first}:run"), Some(json!({}))).await;
    assert_eq!(ran["dispatchCount"], 1);
    worker.wait_for(2, Duration::from_secs(5)).await;

    let resumed = api.queue_verb("pausing", "resume").await;
    assert_eq!(resumed["state"], "RUNNING");
    worker.wait_for(6, Duration::from_secs(10)).await;
    eventually("all tasks to finish", Duration::from_secs(5), || async { api.task_count("pausing").await == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spreads_sixty_tasks_over_about_six_seconds() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    let api = server.api();
    api.create_queue("rated", json!({"rateLimits": {"maxDispatchesPerSecond": 10}})).await;
    api.queue_verb("rated", "pause").await;
    for i in 0..60 {
        api.create_task("rated", json!({"httpRequest": {"url": worker.url(&format!("/{i}"))}})).await;
    }
    let start = Instant::now();
    api.queue_verb("rated", "resume").await;
    let got = worker.wait_for(60, Duration::from_secs(20)).await;
    let span = got[59].at.duration_since(start);
    // A burst of 10, then 50 more at 10 per second: about 5 s; generous band.
    assert!(span >= Duration::from_secs(4) && span <= Duration::from_secs(9), "60 tasks took {span:?}");
    // After the burst the rate is the limit: never above it (by more than the clock's
    // grain), and not far below on a loaded machine.
    let after_burst = got[59].at.duration_since(got[9].at).as_secs_f64();
    let rate = 50.0 / after_burst;
    assert!((8.0..=10.5).contains(&rate), "{rate:.2}/s after the burst against a limit of 10/s");
    // In no one-second window are there more than burst + rate deliveries.
    let times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| u.duration_since(*t) < Duration::from_secs(1)).count();
        assert!(in_window <= 21, "{in_window} deliveries within one second");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_dispatches_caps_tasks_in_flight() {
    let server = TasklaneProcess::start();
    let worker = Worker::start(Arc::new(|_, _| (200, Duration::from_millis(150)))).await;
    let api = server.api();
    api.create_queue("narrow", json!({"rateLimits": {"maxConcurrentDispatches": 2}})).await;
    for i in 0..12 {
        api.create_task("narrow", json!({"httpRequest": {"url": worker.url(&format!("/{i}"))}})).await;
    }
    worker.wait_for(12, Duration::from_secs(15)).await;
    assert_eq!(worker.max_in_flight(), 2, "never more than 2 in flight, and the limit is used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_task_scheduled_or_in_flight() {
    let server = TasklaneProcess::start();
    let answered: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let seen = answered.clone();
    // In-flight tasks hang on their first attempt so the kill lands mid-delivery.
    let worker = Worker::start(Arc::new(move |r, _| {
        let id = r.header("x-cloudtasks-taskname").unwrap_or("").to_string();
        let first = r.header("x-cloudtasks-taskretrycount") == Some("0");
        if id.starts_with("slow") && first {
            return (200, Duration::from_secs(30));
        }
        seen.lock().unwrap().insert(id);
        (200, Duration::ZERO)
    }))
    .await;
    let api = server.api();
    api.create_queue("durable", json!({})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = format!("slow{i}");
        api.create_task("durable", json!({"name": task_name("durable", &id), "httpRequest": {"url": worker.url("/")}}))
            .await;
        ids.push(id);
    }
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let soon = soon.format(&time::format_description::well_known::Rfc3339).unwrap();
    for i in 0..20 {
        let id = format!("later{i}");
        api.create_task(
            "durable",
            json!({"name": task_name("durable", &id), "scheduleTime": soon, "httpRequest": {"url": worker.url("/")}}),
        )
        .await;
        ids.push(id);
    }
    worker.wait_for(5, Duration::from_secs(10)).await; // the slow ones are in flight
    let data_dir = server.kill_hard();

    let restarted = TasklaneProcess::start_in(data_dir.clone());
    let api = restarted.api();
    let want: HashSet<String> = ids.into_iter().collect();
    eventually("every task to be delivered after the restart", Duration::from_secs(20), || {
        let answered = answered.clone();
        let want = want.clone();
        async move { want.is_subset(&answered.lock().unwrap()) }
    })
    .await;
    eventually("the queue to drain", Duration::from_secs(5), || async { api.task_count("durable").await == 0 }).await;
    drop(restarted);
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_workers_cost_one_attempt_each() {
    let server = TasklaneProcess::start();
    let api = server.api();
    // A listener that resets every connection, and a worker that redirects forever.
    let reset = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reset_addr = reset.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in reset.incoming().flatten().take(50) {
            drop(stream);
        }
    });
    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in garbage.incoming().flatten().take(50) {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"this is not HTTP\r\n\r\n");
        }
    });
    // A worker that promises 1,000 bytes of a 200, sends 7 and hangs up: not a success.
    let truncated = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let truncated_addr = truncated.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in truncated.incoming().flatten().take(50) {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n1234567");
        }
    });
    let redirect_app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        axum::response::Redirect::temporary(&format!("{}x", uri.path()))
    });
    let redirect_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_addr = redirect_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(redirect_listener, redirect_app).await });

    api.create_queue("bad-workers", json!({"retryConfig": {"minBackoff": "60s"}})).await;
    for (id, url) in [
        ("reset", format!("http://{reset_addr}/")),
        ("garbage", format!("http://{garbage_addr}/")),
        ("redirect", format!("http://{redirect_addr}/loop")),
        ("closed", "http://127.0.0.1:9/".to_string()),
        ("truncated", format!("http://{truncated_addr}/")),
    ] {
        api.create_task("bad-workers", json!({"name": task_name("bad-workers", id), "httpRequest": {"url": url}}))
            .await;
    }
    let mut results: HashMap<String, Value> = HashMap::new();
    let start = Instant::now();
    while results.len() < 5 {
        assert!(start.elapsed() < Duration::from_secs(15), "only {:?} recorded an attempt", results.keys());
        // A task that succeeded would be gone, and this read would fail.
        for id in ["reset", "garbage", "redirect", "closed", "truncated"] {
            let t = api.ok(Method::GET, &task_name("bad-workers", id), None).await;
            if t.pointer("/lastAttempt/responseStatus").is_some() {
                results.insert(id.to_string(), t);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, t) in &results {
        assert_eq!(t["dispatchCount"], 1, "{id}: {t}");
        assert_eq!(t.pointer("/lastAttempt/responseStatus/code"), Some(&json!(2)), "{id} is UNKNOWN: {t}");
        assert!(t.get("responseCount").is_none(), "{id} got no response: {t}");
    }
    // The server is still healthy and dispatching.
    let ok = Worker::ok().await;
    api.create_queue("after", json!({})).await;
    api.create_task("after", json!({"httpRequest": {"url": ok.url("/")}})).await;
    ok.wait_for(1, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_deliveries_in_flight_and_data_survives_restart() {
    let server = TasklaneProcess::start();
    // A delivery that takes 1.5 s is in flight when SIGTERM arrives.
    let worker = Worker::start(Arc::new(|_, _| (200, Duration::from_millis(1500)))).await;
    let api = server.api();
    api.create_queue("kept", json!({"rateLimits": {"maxDispatchesPerSecond": 7}})).await;
    api.create_task("kept", json!({"name": task_name("kept", "inflight"), "httpRequest": {"url": worker.url("/")}}))
        .await;
    worker.wait_for(1, Duration::from_secs(5)).await;
    api.queue_verb("kept", "pause").await;
    api.create_task("kept", json!({"name": task_name("kept", "stays"), "httpRequest": {"url": "http://127.0.0.1:9/"}}))
        .await;
    let dir = server.data_dir.clone();
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() >= Duration::from_millis(1000), "shutdown waited for the delivery in flight");

    let again = TasklaneProcess::start_in(dir.clone());
    let api = again.api();
    let q = api.ok(Method::GET, &format!("{PROJECT_LOCATION}/queues/kept"), None).await;
    assert_eq!(q["state"], "PAUSED");
    assert_eq!(q["rateLimits"]["maxDispatchesPerSecond"], 7.0);
    let t = api.ok(Method::GET, &task_name("kept", "stays"), None).await;
    assert_eq!(t["name"], task_name("kept", "stays"));
    // The drained delivery was recorded as done: it is not run again.
    let (status, _) = api.call(Method::GET, &task_name("kept", "inflight"), None).await;
    assert_eq!(status, 404, "the delivered task is finished");
    // Once the queue runs again (its other task is attempted), still one delivery.
    api.queue_verb("kept", "resume").await;
    eventually("the queue to dispatch after the restart", Duration::from_secs(10), || async {
        api.ok(Method::GET, &task_name("kept", "stays"), None).await["dispatchCount"].as_i64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(worker.received().len(), 1, "no second delivery after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_mirrors_gcloud_tasks() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    let endpoint = format!("http://{}", server.addr);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
            .args(args)
            .args(["--endpoint", &endpoint, "--project", "test", "--location", "here"])
            .output()
            .expect("run tasklane");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) =
        run(&["queues", "create", "cli-q", "--max-dispatches-per-second", "20", "--max-attempts", "5"]);
    assert!(ok, "{err}");
    assert!(out.contains("maxDispatchesPerSecond: 20"), "{out}");
    let (ok, out, _) = run(&["queues", "update", "cli-q", "--min-backoff", "2s", "--format", "json"]);
    assert!(ok);
    let q: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(q["retryConfig"]["minBackoff"], "2s");
    assert_eq!(q["retryConfig"]["maxAttempts"], 5, "update changes only the flags given");
    let (ok, out, _) = run(&["queues", "list"]);
    assert!(ok && out.contains("cli-q") && out.contains("RUNNING"), "{out}");
    let (ok, _, err) = run(&["queues", "pause", "cli-q"]);
    assert!(ok && err.contains("Paused queue [cli-q]"), "{err}");
    let url = worker.url("/cli");
    let (ok, _, err) = run(&[
        "tasks",
        "create-http-task",
        "first",
        "--queue",
        "cli-q",
        "--url",
        &url,
        "--body-content",
        "hi",
        "--header",
        "X-A: b",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["tasks", "describe", "first", "--queue", "cli-q", "--format", "json"]);
    assert!(ok);
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t["httpRequest"]["body"], "aGk=");
    assert_eq!(t["httpRequest"]["headers"]["X-A"], "b");
    let (ok, out, _) = run(&["tasks", "list", "--queue", "cli-q"]);
    assert!(ok && out.contains("first"), "{out}");
    let (ok, _, _) = run(&["tasks", "run", "first", "--queue", "cli-q"]);
    assert!(ok);
    let got = worker.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(&got[0].body[..], b"hi");
    let (ok, _, err) = run(&["queues", "describe", "missing"]);
    assert!(!ok && err.contains("NOT_FOUND"), "{err}");
    let (ok, _, err) = run(&["queues", "create", "bad_name"]);
    assert!(!ok && err.contains("INVALID_ARGUMENT") && err.contains("Queue ID \"bad_name\""), "{err}");
    let (ok, _, _) = run(&["queues", "delete", "cli-q"]);
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_holds_back_only_the_queues_that_send_to_it() {
    // Two connections per worker; the slow worker takes 3 s per request.
    let server = TasklaneProcess::start_with(&["--max-connections-per-host", "2"]);
    let slow = Worker::start(Arc::new(|_, _| (200, Duration::from_secs(3)))).await;
    let fast = Worker::ok().await;
    let api = server.api();
    api.create_queue("slow", json!({})).await;
    api.create_queue("fast", json!({})).await;
    for i in 0..300 {
        let name = task_name("slow", &format!("s{i}"));
        api.create_task("slow", json!({"name": name, "httpRequest": {"url": slow.url("/")}})).await;
    }
    for i in 0..5 {
        let name = task_name("fast", &format!("f{i}"));
        api.create_task("fast", json!({"name": name, "httpRequest": {"url": fast.url("/")}})).await;
    }
    // The other worker's queue is not held back...
    fast.wait_for(5, Duration::from_secs(10)).await;
    // ...the slow one never has more than its two connections...
    assert!(slow.max_in_flight() <= 2, "{} requests in flight to the slow worker", slow.max_in_flight());
    // ...and its queue claimed until 64 deliveries waited (beside the two in flight), then
    // stopped: most of its tasks are still in the store, never leased, not waiting in memory.
    let leased = || async {
        let listed = api.ok(Method::GET, &format!("{PROJECT_LOCATION}/queues/slow/tasks?pageSize=1000"), None).await;
        let tasks = listed["tasks"].as_array().cloned().unwrap_or_default();
        assert_eq!(tasks.len(), 300);
        tasks.iter().filter(|t| t["dispatchCount"].as_i64().unwrap_or(0) > 0).count()
    };
    eventually("the slow queue to fill its 64 waiting places", Duration::from_secs(10), || async {
        leased().await >= 64 + 2
    })
    .await;
    let leased = leased().await;
    assert!(leased <= 100, "{leased} of 300 tasks were leased: the queue kept claiming past its waiting limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_worker_costs_one_attempt_at_the_deadline() {
    let server = TasklaneProcess::start();
    // The first attempt hangs past the 15 s deadline (the shortest allowed); the retry succeeds.
    let worker =
        Worker::start(Arc::new(|_, i| if i == 0 { (200, Duration::from_secs(25)) } else { (200, Duration::ZERO) }))
            .await;
    let api = server.api();
    api.create_queue("hang", json!({"retryConfig": {"minBackoff": "0.1s"}})).await;
    api.create_task(
        "hang",
        json!({"name": task_name("hang", "t"), "dispatchDeadline": "15s", "httpRequest": {"url": worker.url("/")}}),
    )
    .await;
    let got = worker.wait_for(2, Duration::from_secs(30)).await;
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_secs(15) && gap < Duration::from_secs(20), "retry came after {gap:?}");
    assert_eq!(got[1].header("x-cloudtasks-taskpreviousresponse"), Some("504"));
    assert_eq!(got[1].header("x-cloudtasks-taskretrycount"), Some("1"));
    assert_eq!(got[1].header("x-cloudtasks-taskexecutioncount"), Some("0"));
    eventually("the task to finish", Duration::from_secs(5), || async { api.task_count("hang").await == 0 }).await;
}

/// Small defects new users met (issue 14.10): panics on huge durations, `inf` taken as a
/// rate, `jobs watch` on an unknown job exiting like a failed one, colour codes in logs,
/// and the last attempt's status shown as a bare number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_what_it_cannot_mean_and_logs_plain_text() {
    let dir = support::fresh_dir("plain-logs");
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "info", "--data-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tasklane");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(serve.stdout.take().expect("stdout")), &mut first)
        .expect("the listening line");
    let endpoint = first.trim().trim_start_matches("tasklane listening on ").to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
            .args(args)
            .args(["--endpoint", &endpoint])
            .output()
            .expect("run tasklane");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = run(&["queues", "create", "q", "--max-dispatches-per-second", "inf"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a finite number"), "{err}");
    let (code, err) = run(&["queues", "create", "q", "--min-backoff", "100000000000000000000000s"]);
    assert_eq!(code, Some(2), "a usage error, not a panic (101): {err}");
    assert!(err.contains("too large"), "{err}");
    let (code, err) = run(&["jobs", "watch", "job_nope"]);
    assert_eq!(code, Some(3), "an unknown job is not a failed one: {err}");
    let (code, _) = run(&["queues", "create", "q"]);
    assert_eq!(code, Some(0));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["tasks", "create-http-task", "--queue", "q", "--url", "http://127.0.0.1:9/", "--endpoint", &endpoint])
        .output()
        .expect("create a task");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The task's first attempt (to a closed port) fails; its status is then listed by name.
    eventually("the last attempt's status by name in tasks list", Duration::from_secs(10), || async {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
            .args(["tasks", "list", "--queue", "q", "--endpoint", &endpoint])
            .output()
            .expect("list tasks");
        let listed = String::from_utf8_lossy(&out.stdout).to_string();
        listed.contains("UNAVAILABLE") || listed.contains("UNKNOWN")
    })
    .await;
    let _ = serve.kill();
    let _ = serve.wait();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().expect("stderr"), &mut logs).expect("logs");
    assert!(logs.contains("tasklane is serving"), "{logs}");
    assert!(!logs.contains('\x1b'), "no colour codes when stderr is not a terminal: {logs:?}");
    let _ = std::fs::remove_dir_all(dir);
}

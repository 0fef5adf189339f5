//! What the README and the docs promise that no other test held (issue 17): a worker failing
//! its job and `jobs watch` saying so, one job per idempotency key under concurrency, bulk
//! pull creates, refused settings changes, the dead-letter and cluster commands, the serve
//! flags and their `TASKLANE_*` variables, retries bounded by time, fail-fast jobs, and a
//! `tasklane work` command that outlives its lease.

use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{PROJECT_LOCATION, TasklaneProcess, Worker, client, eventually, fresh_dir};

fn queue(id: &str) -> String {
    format!("{PROJECT_LOCATION}/queues/{id}")
}

/// `tasklane ARGS… --endpoint` against `server`: (exit code, stdout, stderr).
fn cli(server: &TasklaneProcess, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(args)
        .args(["--endpoint", &format!("http://{}", server.addr), "--project", "test", "--location", "here"])
        .output()
        .expect("run tasklane");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_fails_its_job_with_its_token_and_watch_exits_1() {
    let server = TasklaneProcess::start();
    // The worker reports while its delivery is still open, as a long job's worker does.
    let worker = Worker::start(Arc::new(|_, _| (200, Duration::from_secs(2)))).await;
    let api = server.api();
    api.create_queue("failing", json!({})).await;
    api.queue_verb("failing", "pause").await;
    let (status, job) = api
        .call(Method::POST, "../v1/jobs", Some(json!({"queue": queue("failing"), "task": {"url": worker.url("/")}})))
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    api.queue_verb("failing", "resume").await;
    let got = worker.wait_for(1, Duration::from_secs(10)).await;
    let token = got[0].header("x-tasklane-job-token").expect("a job token").to_string();
    let fail = |token: &str| {
        client()
            .post(format!("http://{}/v1/jobs/{id}/fail", server.addr))
            .header("content-type", "application/json")
            .header("x-tasklane-job-token", token.to_string())
            .body(json!({"error": "the render farm is out of GPUs"}).to_string())
            .send()
    };
    let refused = fail("bogus").await.unwrap();
    assert_eq!(refused.status(), 401, "a report needs the job's token");
    let failed = fail(&token).await.unwrap();
    assert_eq!(failed.status(), 200);
    let job = api.ok(Method::GET, &format!("../v1/jobs/{id}"), None).await;
    assert_eq!(
        (job["status"].as_str(), job["error"].as_str()),
        (Some("failed"), Some("the render farm is out of GPUs"))
    );
    let (code, out, _) = cli(&server, &["jobs", "watch", &id]);
    assert_eq!(code, Some(1), "watch exits 1 for a failed job: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_with_one_idempotency_key_make_one_job() {
    let server = TasklaneProcess::start();
    let api = server.api();
    api.create_queue("keyed", json!({})).await;
    api.queue_verb("keyed", "pause").await;
    let body = json!({"queue": queue("keyed"), "task": {"url": "http://127.0.0.1:9/"}, "idempotency_key": "order-42"});
    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (addr, body) = (server.addr, body.clone());
        creates.spawn(async move {
            let resp = client()
                .post(format!("http://{addr}/v1/jobs"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).unwrap())
        });
    }
    let answers: Vec<(u16, Value)> = creates.join_all().await;
    let ids: std::collections::HashSet<&str> = answers.iter().filter_map(|(_, j)| j["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one job for one key: {answers:?}");
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!((created, answers.iter().filter(|(s, _)| *s == 200).count()), (1, 7), "{answers:?}");
    assert_eq!(api.task_count("keyed").await, 1, "one task, not eight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_pull_create_reports_each_failure_and_refuses_a_malformed_request_whole() {
    let server = TasklaneProcess::start();
    let v1 = crate::pull::V1::new(&server);
    let q = v1.pull_queue("bulk", json!({})).await;
    let name = |id: &str| format!("{}/tasks/{id}", queue("bulk"));
    let (status, answer) = v1
        .call(
            Method::POST,
            &format!("queues/{q}/tasks"),
            Some(json!({"tasks": [{"name": name("a"), "payload": "1"}, {"name": name("a"), "payload": "2"}, {"payload": "3"}]})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tasks"].as_array().map(Vec::len), Some(2), "the other two were created: {answer}");
    assert_eq!(answer["failed"][0]["index"], 1);
    assert_eq!(answer["failed"][0]["status"], "ALREADY_EXISTS");
    // An item that cannot be read refuses the request before anything is created.
    let (status, answer) = v1
        .call(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"tasks": [{"payload": "4"}, {"payload": 5}]})))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap_or("").contains("tasks[1]"), "names the bad item: {answer}");
    assert_eq!(server.api().task_count("bulk").await, 2, "nothing of the refused request was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_queue_update_changes_nothing() {
    let server = TasklaneProcess::start();
    let api = server.api();
    let before = api.create_queue("settled", json!({"rateLimits": {"maxDispatchesPerSecond": 7}})).await;
    let path = queue("settled");
    for (change, mask) in [
        (json!({"rateLimits": {"maxDispatchesPerSecond": -1}}), ""),
        (json!({"retryConfig": {"maxAttempts": -2}}), ""),
        (json!({"rateLimits": {"maxDispatchesPerSecond": 9}, "retryConfig": {"minBackoff": "nonsense"}}), ""),
        (json!({"rateLimits": {"maxDispatchesPerSecond": 9}}), "?updateMask=rateLimits.noSuchField"),
    ] {
        let (status, answer) = api.call(Method::PATCH, &format!("{path}{mask}"), Some(change.clone())).await;
        assert_eq!(status, 400, "{change} {mask}: {answer}");
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");
        let now = api.ok(Method::GET, &path, None).await;
        assert_eq!(now, before, "a refused update ({change} {mask}) left the queue as it was");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letters_and_cluster_commands_work_against_a_server() {
    let server = TasklaneProcess::start();
    let worker = Worker::start(Arc::new(|_, i| (if i == 0 { 500 } else { 200 }, Duration::ZERO))).await;
    let api = server.api();
    api.create_queue("dl", json!({"retryConfig": {"maxAttempts": 1}})).await;
    api.create_task(
        "dl",
        json!({"name": format!("{}/tasks/broken", queue("dl")), "httpRequest": {"url": worker.url("/")}}),
    )
    .await;
    eventually("the task to become a dead letter", Duration::from_secs(10), || async {
        cli(&server, &["dead-letters", "list", "--queue", "dl"]).1.contains("broken")
    })
    .await;
    let (code, out, err) = cli(&server, &["dead-letters", "list", "--queue", "dl", "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    let id = listed["dead_letters"][0]["id"].as_i64().or_else(|| listed[0]["id"].as_i64()).expect("an id");
    let (code, out, err) = cli(&server, &["dead-letters", "show", &id.to_string(), "--queue", "dl"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("500"), "the attempt's status is shown: {out}");
    let (code, _, err) = cli(&server, &["dead-letters", "redrive", &id.to_string(), "--queue", "dl"]);
    assert_eq!(code, Some(0), "{err}");
    worker.wait_for(2, Duration::from_secs(10)).await;
    eventually("the redriven task to succeed", Duration::from_secs(10), || async { api.task_count("dl").await == 0 })
        .await;
    let (code, out, _) = cli(&server, &["dead-letters", "list", "--queue", "dl", "--format", "json"]);
    assert_eq!(code, Some(0));
    assert!(!out.contains("broken"), "a redriven letter leaves the list: {out}");
    let (code, out, err) = cli(&server, &["cluster", "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("embedded store"), "{out}");
}

/// `--tombstone-window`, `--log-format json` and a `TASKLANE_*` variable in place of a flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_flags_and_their_variables_take_effect() {
    let dir = fresh_dir("flags");
    let log = dir.join("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["serve", "--data-dir", &dir.join("data").display().to_string(), "--log-format", "json"])
        .env("TASKLANE_LISTEN", "127.0.0.1:0")
        .env("TASKLANE_TOMBSTONE_WINDOW", "1s")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start tasklane");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    let addr = first.trim().trim_start_matches("tasklane listening on http://").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "TASKLANE_LISTEN was read: {first}");
    let base = format!("http://{addr}/v2/{PROJECT_LOCATION}");
    let http = client();
    let post = |path: String, body: Value| {
        http.post(path).header("content-type", "application/json").body(body.to_string()).send()
    };
    let resp = post(format!("{base}/queues"), json!({"name": queue("tomb")})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let task = json!({"task": {"name": format!("{}/tasks/once", queue("tomb")), "httpRequest": {"url": "http://127.0.0.1:9/"}}});
    assert_eq!(post(format!("{base}/queues/tomb/tasks"), task.clone()).await.unwrap().status(), 200);
    let deleted = http.delete(format!("{base}/queues/tomb/tasks/once")).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        post(format!("{base}/queues/tomb/tasks"), task.clone()).await.unwrap().status(),
        409,
        "the name is reserved"
    );
    eventually("the name to be free after the 1 s window", Duration::from_secs(10), || async {
        post(format!("{base}/queues/tomb/tasks"), task.clone()).await.unwrap().status() == 200
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "something was logged");
    for line in lines {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(parsed["level"].is_string() && parsed["timestamp"].is_string(), "{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--shutdown-grace`: SIGTERM waits that long for a delivery in flight, no longer, and the
/// task is delivered again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_wait_for_deliveries_in_flight() {
    let server = TasklaneProcess::start_with(&["--shutdown-grace", "1s"]);
    let worker =
        Worker::start(Arc::new(|_, i| (200, if i == 0 { Duration::from_secs(30) } else { Duration::ZERO }))).await;
    let api = server.api();
    api.create_queue("graceful", json!({})).await;
    api.create_task(
        "graceful",
        json!({"name": format!("{}/tasks/long", queue("graceful")), "httpRequest": {"url": worker.url("/")}}),
    )
    .await;
    worker.wait_for(1, Duration::from_secs(10)).await;
    let dir = server.data_dir.clone();
    let stopping = std::time::Instant::now();
    assert!(server.terminate().success());
    let took = stopping.elapsed();
    assert!(took >= Duration::from_millis(900), "it waited for the delivery in flight ({took:?})");
    assert!(took < Duration::from_secs(10), "it waited {took:?}, past its 1 s grace");
    let again = TasklaneProcess::start_in(dir);
    worker.wait_for(2, Duration::from_secs(10)).await;
    eventually("the task to finish after the restart", Duration::from_secs(10), || async {
        again.api().task_count("graceful").await == 0
    })
    .await;
}

/// `max_attempts: -1` with `max_retry_duration`: a task that always fails stops on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_attempts_stop_at_the_max_retry_duration() {
    let server = TasklaneProcess::start();
    let worker = Worker::start(Arc::new(|_, _| (500, Duration::ZERO))).await;
    let api = server.api();
    let retry = json!({"maxAttempts": -1, "maxRetryDuration": "2s", "minBackoff": "0.2s", "maxBackoff": "0.2s"});
    api.create_queue("timed", json!({"retryConfig": retry})).await;
    api.create_task(
        "timed",
        json!({"name": format!("{}/tasks/t", queue("timed")), "httpRequest": {"url": worker.url("/")}}),
    )
    .await;
    eventually("the task to give up", Duration::from_secs(20), || async { api.task_count("timed").await == 0 }).await;
    let got = worker.received();
    let span = got.last().unwrap().at.duration_since(got[0].at);
    assert!(got.len() >= 5, "it kept retrying until the duration was up: {} attempts", got.len());
    assert!(span >= Duration::from_secs(2), "it gave up after {span:?}, before 2 s of retries");
    assert!(span < Duration::from_secs(4), "it retried for {span:?}, past 2 s and a backoff");
}

/// `"failure_policy": "fail_fast"` through the API: the first failure fails the job and
/// cancels the tasks that have not started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_fast_job_stops_at_its_first_failure() {
    let server = TasklaneProcess::start();
    let worker = Worker::start(Arc::new(|r, _| (if r.path == "/bad" { 500 } else { 200 }, Duration::ZERO))).await;
    let api = server.api();
    let one_at_a_time = json!({"rateLimits": {"maxConcurrentDispatches": 1}, "retryConfig": {"maxAttempts": 1}});
    api.create_queue("strict", one_at_a_time).await;
    api.queue_verb("strict", "pause").await;
    let mut tasks = vec![json!({"url": worker.url("/bad")})];
    tasks.extend((0..5).map(|i| json!({"url": worker.url(&format!("/ok/{i}"))})));
    let body = json!({"queue": queue("strict"), "tasks": tasks, "failure_policy": "fail_fast"});
    let (status, job) = api.call(Method::POST, "../v1/jobs", Some(body)).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    api.queue_verb("strict", "resume").await;
    eventually("the job to fail", Duration::from_secs(10), || async {
        api.ok(Method::GET, &format!("../v1/jobs/{id}"), None).await["status"] == "failed"
    })
    .await;
    let job = api.ok(Method::GET, &format!("../v1/jobs/{id}"), None).await;
    let counts = &job["counts"];
    assert_eq!(counts["failed"], 1, "{job}");
    assert_eq!(
        counts["succeeded"].as_i64().unwrap()
            + counts["cancelled"].as_i64().unwrap()
            + counts["running"].as_i64().unwrap(),
        5,
        "every other task succeeded before the failure, was cancelled, or was running: {job}"
    );
    assert!(counts["cancelled"].as_i64().unwrap() >= 1, "tasks that had not started were cancelled: {job}");
}

/// A `tasklane work` command that runs longer than its lease keeps the task: its worker
/// renews the lease, so no other worker starts it, and it is acknowledged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_longer_than_its_lease_keeps_its_task_by_renewing() {
    let server = TasklaneProcess::start();
    let v1 = crate::pull::V1::new(&server);
    let q = v1.pull_queue("long", json!({})).await;
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"payload": "x"}))).await;
    let out = fresh_dir("long-lease");
    let script = format!("echo run >> {}/runs; sleep 7", out.display());
    let queue = queue("long");
    let workers: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
                .args([
                    "work",
                    "--queue",
                    &queue,
                    "--endpoint",
                    &format!("http://{}", server.addr),
                    "--lease",
                    "3s",
                    "--drain",
                ])
                .args(["--", "sh", "-c", &script])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start tasklane work")
        })
        .collect();
    let mut acknowledged = 0;
    for w in workers {
        let output = tokio::task::spawn_blocking(move || w.wait_with_output()).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&output.stderr).to_string();
        let line =
            text.lines().rev().find(|l| l.contains("succeeded,")).unwrap_or_else(|| panic!("no summary: {text}"));
        acknowledged += line.split_whitespace().nth(2).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    let runs = std::fs::read_to_string(out.join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the 7 s command ran once under a 3 s lease");
    assert_eq!(acknowledged, 1);
    assert_eq!(server.api().task_count("long").await, 0);
}

/// `--dead-letter-retention`: letters older than it are deleted by maintenance (which runs at
/// start, then every minute), younger ones kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_go_after_their_retention() {
    let server = TasklaneProcess::start();
    let api = server.api();
    api.create_queue("retained", json!({"retryConfig": {"maxAttempts": 1}})).await;
    api.create_task(
        "retained",
        json!({"name": format!("{}/tasks/old", queue("retained")), "httpRequest": {"url": "http://127.0.0.1:9/"}}),
    )
    .await;
    let letters = "../v1/queues/projects%2Ftest%2Flocations%2Fhere%2Fqueues%2Fretained/dead-letters";
    eventually("a dead letter", Duration::from_secs(10), || async {
        api.ok(Method::GET, letters, None).await["dead_letters"].as_array().is_some_and(|d| d.len() == 1)
    })
    .await;
    let dir = server.kill_hard();
    // Kept by a retention longer than its age...
    let server = TasklaneProcess::start_in_with(dir, &["--dead-letter-retention", "1h"]);
    let kept = server.api().ok(Method::GET, letters, None).await;
    assert_eq!(kept["dead_letters"].as_array().map(Vec::len), Some(1), "{kept}");
    let died = kept["dead_letters"][0]["died_at"].as_str().expect("a death time").to_string();
    let died = time::OffsetDateTime::parse(&died, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    let dir = server.kill_hard();
    // ...and deleted by one shorter than it, once it is older.
    eventually("the letter to be over a second old", Duration::from_secs(10), || async {
        time::OffsetDateTime::now_utc() - died > time::Duration::seconds(1)
    })
    .await;
    let server = TasklaneProcess::start_in_with(dir, &["--dead-letter-retention", "1s"]);
    eventually("the old letter to be deleted", Duration::from_secs(10), || async {
        server.api().ok(Method::GET, letters, None).await["dead_letters"] == json!([])
    })
    .await;
}

/// A worker's `Retry-After` spaces the next attempt by at least that long, beyond a shorter backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_from_the_worker_delays_the_next_attempt() {
    let times = Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let seen = times.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            let mut t = seen.lock().unwrap();
            t.push(std::time::Instant::now());
            if t.len() == 1 {
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "2")]).into_response()
            } else {
                axum::http::StatusCode::OK.into_response()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = TasklaneProcess::start();
    let api = server.api();
    api.create_queue("after", json!({"retryConfig": {"minBackoff": "0.1s", "maxBackoff": "0.1s"}})).await;
    api.create_task("after", json!({"httpRequest": {"url": format!("http://{addr}/")}})).await;
    eventually("the second attempt", Duration::from_secs(15), || async { times.lock().unwrap().len() >= 2 }).await;
    let t = times.lock().unwrap().clone();
    let gap = t[1].duration_since(t[0]);
    assert!(gap >= Duration::from_secs(2), "the retry came {gap:?} after a Retry-After of 2 s");
}

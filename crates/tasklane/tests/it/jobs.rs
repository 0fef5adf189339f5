//! Jobs against the real binary: batches with exact counts, workers' progress reports with
//! their job token, event streams that resume, cancellation, and bad input.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{PROJECT_LOCATION, TasklaneProcess, Worker, client, eventually};

struct V1 {
    base: String,
}

impl V1 {
    fn new(server: &TasklaneProcess) -> V1 {
        V1 { base: format!("http://{}/v1", server.addr) }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
        let mut req = client().request(method, format!("{}/{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        if let Some(t) = token {
            req = req.header("X-Tasklane-Job-Token", t);
        }
        let resp = req.send().await.expect("call tasklane");
        let status = resp.status().as_u16();
        (status, serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null))
    }

    async fn job(&self, id: &str) -> Value {
        let (status, job) = self.call(Method::GET, &format!("jobs/{id}"), None, None).await;
        assert_eq!(status, 200, "{job}");
        job
    }

    /// Read a job's event stream to its end: (id, kind, job) of each event.
    async fn events(&self, id: &str, last_event_id: Option<i64>) -> Vec<(i64, String, Value)> {
        let mut req = client().get(format!("{}/jobs/{id}/events", self.base));
        if let Some(last) = last_event_id {
            req = req.header("Last-Event-ID", last.to_string());
        }
        let mut resp = req.send().await.expect("open the event stream");
        assert_eq!(resp.status(), 200);
        let mut text = String::new();
        let read = async {
            while let Some(chunk) = resp.chunk().await.expect("read the stream") {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read).await.expect("the stream ends when the job finishes");
        text.split("\n\n")
            .filter(|block| block.contains("data:"))
            .map(|block| {
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
                };
                let data: Value = serde_json::from_str(&field("data:")).expect("event data is JSON");
                (field("id:").parse().expect("event id"), field("event:"), data["job"].clone())
            })
            .collect()
    }
}

/// The test queue `dlq`, named in full (URL-encoded) as the dead-letter routes take it.
const DLQ: &str = "projects%2Ftest%2Flocations%2Fhere%2Fqueues%2Fdlq";

fn queue(id: &str) -> String {
    format!("{PROJECT_LOCATION}/queues/{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_failing_tasks_ends_failed_with_exact_counts_and_a_complete_event_stream() {
    let server = TasklaneProcess::start();
    let worker = Worker::start(Arc::new(|r, _| {
        (if r.path.starts_with("/fail") { 500 } else { 200 }, Duration::from_millis(20))
    }))
    .await;
    let api = server.api();
    api.create_queue(
        "batch",
        json!({"retryConfig": {"maxAttempts": 2, "minBackoff": "0.1s", "maxBackoff": "0.1s"},
               "rateLimits": {"maxConcurrentDispatches": 4}}),
    )
    .await;
    api.queue_verb("batch", "pause").await;
    let v1 = V1::new(&server);
    let tasks: Vec<Value> = (0..50)
        .map(|i| {
            let path = if [7, 21, 44].contains(&i) { format!("/fail/{i}") } else { format!("/ok/{i}") };
            json!({"url": worker.url(&path), "body": format!("item {i}")})
        })
        .collect();
    let (status, job) = v1
        .call(
            Method::POST,
            "jobs",
            Some(json!({"queue": queue("batch"), "tasks": tasks, "labels": {"user": "42"}})),
            None,
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!((job["status"].as_str(), job["counts"]["pending"].as_i64()), (Some("pending"), Some(50)));

    // Watch from the start (a stream opened later replays what it missed), let the queue run.
    let watcher = tokio::spawn({
        let v1 = V1 { base: v1.base.clone() };
        let id = id.clone();
        async move { v1.events(&id, None).await }
    });
    api.queue_verb("batch", "resume").await;
    // The worker reports the batch's progress with the token its first task came with.
    let first = worker.wait_for(1, Duration::from_secs(10)).await;
    let token = first[0].header("x-tasklane-job-token").expect("a job token").to_string();
    let report = json!({"percent": 10, "step": "batch", "step_number": 1, "message": "first item done"});
    let (status, body) = v1.call(Method::POST, &format!("jobs/{id}/progress"), Some(report), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let events = watcher.await.unwrap();

    let done = v1.job(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        done["counts"],
        json!({"total": 50, "succeeded": 47, "failed": 3, "running": 0, "pending": 0, "cancelled": 0})
    );
    assert_eq!(done["percentage"], 100.0);
    assert_eq!(done["labels"]["user"], "42");
    assert!(done["error"].is_null(), "finish_all reports failures in the counts, not as the job's error");
    // Each task ran: 47 once, 3 twice (max_attempts 2).
    assert_eq!(worker.received().len(), 47 + 3 * 2);

    let seqs: Vec<i64> = events.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "every event, in order, none missing");
    let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"created"));
    assert_eq!(kinds.get(1), Some(&"running"));
    assert_eq!(kinds.last(), Some(&"failed"));
    assert_eq!(kinds.iter().filter(|k| **k == "task_succeeded").count(), 47);
    assert_eq!(kinds.iter().filter(|k| **k == "task_failed").count(), 3);
    assert_eq!(kinds.iter().filter(|k| **k == "progress").count(), 1, "the worker's report is an event");
    assert_eq!(done["progress"]["message"], "first item done");
    let (_, _, last) = events.last().unwrap();
    assert_eq!((last["counts"]["succeeded"].as_i64(), last["counts"]["failed"].as_i64()), (Some(47), Some(3)));

    // A watcher that lost its connection resumes after the last event it saw.
    let resumed = v1.events(&id, Some(10)).await;
    assert_eq!(resumed.first().map(|e| e.0), Some(11));
    assert_eq!(resumed.last().map(|e| e.0), seqs.last().copied());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reports_progress_and_a_result_with_its_token() {
    let server = TasklaneProcess::start();
    // The worker takes a while, so the test can report for it while the task runs.
    let worker = Worker::start(Arc::new(|_, _| (200, Duration::from_millis(1500)))).await;
    server.api().create_queue("work", json!({})).await;
    let v1 = V1::new(&server);
    let (status, job) = v1
        .call(Method::POST, "jobs", Some(json!({"queue": queue("work"), "task": {"url": worker.url("/render")}})), None)
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let got = worker.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-tasklane-job-id"), Some(id.as_str()));
    let token = got[0].header("x-tasklane-job-token").expect("a job token").to_string();

    let progress = |percent: f64| json!({"percent": percent, "step": "render", "step_number": 2, "message": "frames"});
    let (status, body) =
        v1.call(Method::POST, &format!("jobs/{id}/progress"), Some(progress(40.0)), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["status"].as_str(), body["progress"]["percent"].as_f64()), (Some("running"), Some(40.0)));
    let (status, body) =
        v1.call(Method::POST, &format!("jobs/{id}/progress"), Some(progress(20.0)), Some(&token)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("backwards"), "{body}");
    let (status, body) =
        v1.call(Method::POST, &format!("jobs/{id}/progress"), Some(progress(90.0)), Some("1.bogus")).await;
    assert_eq!((status, body["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")), "{body}");
    let (status, _) = v1.call(Method::POST, &format!("jobs/{id}/progress"), Some(progress(90.0)), None).await;
    assert_eq!(status, 401, "no token, no report");
    let huge = json!({"result": {"log": "x".repeat(300 * 1024)}});
    let (status, body) = v1.call(Method::POST, &format!("jobs/{id}/result"), Some(huge), Some(&token)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("at most"), "an oversized result is refused: {body}");
    let (status, body) = v1
        .call(
            Method::POST,
            &format!("jobs/{id}/result"),
            Some(json!({"result": {"url": "s3://out/1.mp4"}})),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    eventually("the job to succeed", Duration::from_secs(10), || async { v1.job(&id).await["status"] == "succeeded" })
        .await;
    let done = v1.job(&id).await;
    assert_eq!(done["result"], json!({"url": "s3://out/1.mp4"}));
    assert_eq!(done["progress"]["step"], "render");
    let (status, body) =
        v1.call(Method::POST, &format!("jobs/{id}/progress"), Some(progress(95.0)), Some(&token)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("already succeeded"),
        "a late report is refused: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_s_pending_tasks_never_reach_the_worker() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    let api = server.api();
    api.create_queue("held", json!({})).await;
    api.queue_verb("held", "pause").await;
    let v1 = V1::new(&server);
    let tasks: Vec<Value> = (0..5).map(|i| json!({"url": worker.url(&format!("/t/{i}"))})).collect();
    let (_, job) = v1.call(Method::POST, "jobs", Some(json!({"queue": queue("held"), "tasks": tasks})), None).await;
    let id = job["id"].as_str().unwrap();
    let (status, cancelled) = v1.call(Method::POST, &format!("jobs/{id}:cancel"), None, None).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!((cancelled["status"].as_str(), cancelled["counts"]["cancelled"].as_i64()), (Some("cancelled"), Some(5)));
    // A task created after the cancel is delivered in order behind the cancelled ones had
    // they been left: once it arrives, none of them can still come.
    api.create_task("held", json!({"httpRequest": {"url": worker.url("/marker")}})).await;
    api.queue_verb("held", "resume").await;
    let got = worker.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/marker"], "cancelled tasks were delivered");
    let (status, body) = v1.call(Method::POST, &format!("jobs/{id}:cancel"), None, None).await;
    assert_eq!((status, body["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{body}");
}

/// Tasks removed through `/v2` (PurgeQueue with one in flight, DeleteTask, DeleteQueue) count as
/// cancelled: the job ends, its stream and `jobs watch` end, and its callback is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_tasks_are_purged_or_deleted_through_v2_ends_cancelled() {
    let server = TasklaneProcess::start();
    // The worker holds each delivery long enough to purge while it is in flight.
    let worker = Worker::start(Arc::new(|_, _| (200, Duration::from_secs(2)))).await;
    let receiver = Worker::ok().await;
    let api = server.api();
    api.create_queue("busy", json!({"rateLimits": {"maxConcurrentDispatches": 1}})).await;
    let v1 = V1::new(&server);
    let tasks: Vec<Value> = (0..3).map(|i| json!({"url": worker.url(&format!("/t/{i}"))})).collect();
    let body = json!({"queue": queue("busy"), "tasks": tasks, "callback_url": receiver.url("/hook")});
    let (status, job) = v1.call(Method::POST, "jobs", Some(body), None).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    worker.wait_for(1, Duration::from_secs(20)).await;
    api.queue_verb("busy", "purge").await;
    let events = v1.events(&id, None).await;
    let kinds: Vec<&str> = events.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds.last().copied(), Some("cancelled"), "the stream ends with the job: {kinds:?}");
    assert!(kinds.contains(&"tasks_removed"), "{kinds:?}");
    let job = v1.job(&id).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(
        job["counts"],
        json!({"total": 3, "succeeded": 0, "failed": 0, "cancelled": 3, "running": 0, "pending": 0})
    );
    assert_eq!(job["error"], "3 tasks were removed by PurgeQueue before they finished");
    let hooks = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(hooks[0].header("x-tasklane-event"), Some("job.finished"));
    // The delivery that was in flight ends, and counts nothing more.
    eventually("the worker to answer the purged delivery", Duration::from_secs(20), || async {
        worker.in_flight() == 0
    })
    .await;
    assert_eq!(v1.job(&id).await["counts"], job["counts"]);

    // DeleteTask on the only task of a job; `jobs watch` ends with the cancelled code.
    api.create_queue("held", json!({})).await;
    api.queue_verb("held", "pause").await;
    let (_, job) = v1
        .call(Method::POST, "jobs", Some(json!({"queue": queue("held"), "task": {"url": worker.url("/d")}})), None)
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let listed = api.ok(Method::GET, &format!("{}/tasks", queue("held")), None).await;
    let task = listed["tasks"][0]["name"].as_str().expect("the job's task is listed").to_string();
    let (status, body) = api.call(Method::DELETE, &task, None).await;
    assert_eq!(status, 200, "{body}");
    let watched = tokio::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["jobs", "watch", &id, "--endpoint", &format!("http://{}", server.addr)])
        .output();
    let watched = tokio::time::timeout(Duration::from_secs(30), watched).await.expect("watch ends").expect("run watch");
    assert_eq!(watched.status.code(), Some(2), "{}", String::from_utf8_lossy(&watched.stdout));

    // DeleteQueue with a job's two tasks queued.
    let (_, job) = v1
        .call(
            Method::POST,
            "jobs",
            Some(json!({"queue": queue("held"), "tasks": [{"url": worker.url("/a")}, {"url": worker.url("/b")}]})),
            None,
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let (status, body) = api.call(Method::DELETE, &queue("held"), None).await;
    assert_eq!(status, 200, "{body}");
    let job = v1.job(&id).await;
    assert_eq!((job["status"].as_str(), job["counts"]["cancelled"].as_i64()), (Some("cancelled"), Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_refuse_bad_input_clearly_and_honour_idempotency_keys() {
    let server = TasklaneProcess::start();
    server.api().create_queue("q", json!({})).await;
    server.api().queue_verb("q", "pause").await;
    let v1 = V1::new(&server);
    let task = json!({"url": "http://127.0.0.1:9/x"});
    let cases = [
        (json!({"queue": queue("missing"), "task": task}), 400, "Queue does not exist"),
        (json!({"task": task}), 400, "queue is required"),
        (json!({"queue": queue("q")}), 400, "needs a task"),
        (json!({"queue": queue("q"), "tasks": []}), 400, "needs a task"),
        (json!({"queue": queue("q"), "tasks": "x"}), 400, "list of tasks"),
        (json!({"queue": queue("q"), "task": {"url": "ftp://x"}}), 400, "tasks[0]: HttpTarget.url must start with"),
        (json!({"queue": queue("q"), "task": task, "labels": {"bad key": "v"}}), 400, "label key"),
        (json!({"queue": queue("q"), "task": task, "result_ttl": "forever"}), 400, "result_ttl"),
        (json!({"queue": queue("q"), "task": task, "failure_policy": "maybe"}), 400, "failure_policy"),
        (json!({"queue": queue("q"), "task": task, "callback_url": "ftp://x/"}), 400, "callback_url"),
        (json!({"queue": queue("q"), "task": task, "colour": "red"}), 400, "Unknown name \"colour\""),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = v1.call(Method::POST, "jobs", Some(body.clone()), None).await;
        assert_eq!(got, status, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{body}: expected {needle:?} in {message:?}");
    }
    let too_many: Vec<Value> = (0..10_001).map(|_| task.clone()).collect();
    let (got, answer) =
        v1.call(Method::POST, "jobs", Some(json!({"queue": queue("q"), "tasks": too_many})), None).await;
    assert_eq!(got, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("at most 10000"));
    let (got, list) = v1.call(Method::GET, "jobs", None, None).await;
    assert_eq!((got, list["jobs"].as_array().map(Vec::len)), (200, Some(0)), "nothing was half-written: {list}");
    let (got, _) = v1.call(Method::GET, "jobs/job_nope", None, None).await;
    assert_eq!(got, 404);

    let keyed = json!({"queue": queue("q"), "task": task, "idempotency_key": "order-7"});
    let (first, a) = v1.call(Method::POST, "jobs", Some(keyed.clone()), None).await;
    let (second, b) = v1.call(Method::POST, "jobs", Some(keyed), None).await;
    assert_eq!((first, second), (201, 200));
    assert_eq!(a["id"], b["id"]);
    let (_, list) = v1.call(Method::GET, "jobs?label=user:1", None, None).await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(0));
    let (_, list) = v1.call(Method::GET, "jobs?status=pending", None, None).await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_every_attempt_and_a_redriven_one_succeeds() {
    let server = TasklaneProcess::start();
    // Two failures, then the worker is fixed.
    let worker = Worker::start(Arc::new(|_, i| (if i < 2 { 503 } else { 200 }, Duration::ZERO))).await;
    let api = server.api();
    api.create_queue("dlq", json!({"retryConfig": {"maxAttempts": 2, "minBackoff": "0.1s", "maxBackoff": "0.1s"}}))
        .await;
    let name = format!("{}/tasks/flaky", queue("dlq"));
    api.create_task("dlq", json!({"name": name, "httpRequest": {"url": worker.url("/flaky"), "body": "aGk="}})).await;
    let v1 = V1::new(&server);
    eventually("the task to become a dead letter", Duration::from_secs(10), || async {
        let listed = v1.call(Method::GET, &format!("queues/{DLQ}/dead-letters"), None, None).await.1;
        listed["dead_letters"].as_array().is_some_and(|d| d.len() == 1)
    })
    .await;
    let listed = v1.call(Method::GET, &format!("queues/{DLQ}/dead-letters"), None, None).await.1;
    let dead = &listed["dead_letters"][0];
    assert_eq!(dead["task"], name);
    assert_eq!(dead["request"]["body_base64"], "aGk=");
    assert_eq!(dead["last_response"]["http_status"], 503);
    let attempts = dead["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{dead}");
    assert!(attempts.iter().all(|a| a["http_status"] == 503 && a["body_excerpt"] == "worker says 503"), "{dead}");
    let id = dead["id"].as_i64().unwrap();
    let (status, one) = v1.call(Method::GET, &format!("queues/{DLQ}/dead-letters/{id}"), None, None).await;
    assert_eq!((status, &one["id"]), (200, &dead["id"]));

    let (status, redriven) =
        v1.call(Method::POST, &format!("queues/{DLQ}/dead-letters:redrive"), Some(json!({"ids": [id]})), None).await;
    assert_eq!(status, 200, "{redriven}");
    assert_eq!(redriven["redriven"], json!([name]));
    worker.wait_for(3, Duration::from_secs(10)).await;
    eventually("the redriven task to succeed", Duration::from_secs(10), || async {
        let (status, body) = api.call(Method::GET, &name, None).await;
        status == 404 && body["error"]["message"].as_str().unwrap_or("").contains("no longer exists")
    })
    .await;
    let (_, after) = v1.call(Method::GET, &format!("queues/{DLQ}/dead-letters"), None, None).await;
    assert_eq!(after["dead_letters"], json!([]), "a redriven task that succeeds leaves no dead letter");

    let (status, body) =
        v1.call(Method::POST, &format!("queues/{DLQ}/dead-letters:purge"), Some(json!({})), None).await;
    assert_eq!(status, 400, "a purge must say what: {body}");
    let (status, body) =
        v1.call(Method::POST, &format!("queues/{DLQ}/dead-letters:purge"), Some(json!({"all": true})), None).await;
    assert_eq!((status, body["purged"].as_i64()), (200, Some(0)));
    let (status, _) = v1.call(Method::GET, "queues/nope/dead-letters", None, None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_the_middle_of_a_batch_loses_no_count_and_no_task() {
    let server = TasklaneProcess::start();
    let worker = Worker::start(Arc::new(|_, _| (200, Duration::from_millis(20)))).await;
    server.api().create_queue("crash", json!({"rateLimits": {"maxConcurrentDispatches": 20}})).await;
    let v1 = V1::new(&server);
    let tasks: Vec<Value> = (0..300).map(|i| json!({"url": worker.url(&format!("/item/{i}"))})).collect();
    let (status, job) =
        v1.call(Method::POST, "jobs", Some(json!({"queue": queue("crash"), "tasks": tasks})), None).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    eventually("part of the batch to run", Duration::from_secs(20), || async { worker.received().len() >= 100 }).await;
    let dir = server.kill_hard();
    let before = worker.received().len();
    assert!(before < 300, "the batch finished before the kill; nothing was tested");

    let server = TasklaneProcess::start_in(dir);
    let v1 = V1::new(&server);
    eventually("the batch to finish after the restart", Duration::from_secs(60), || async {
        v1.job(&id).await["status"] == "succeeded"
    })
    .await;
    let done = v1.job(&id).await;
    assert_eq!(
        done["counts"],
        json!({"total": 300, "succeeded": 300, "failed": 0, "running": 0, "pending": 0, "cancelled": 0})
    );
    let mut paths: Vec<String> = worker.received().into_iter().map(|r| r.path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 300, "every task reached the worker at least once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_gone_after_its_result_ttl() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    server.api().create_queue("short", json!({})).await;
    let v1 = V1::new(&server);
    let body = json!({"queue": queue("short"), "task": {"url": worker.url("/x")}, "result_ttl": "1s"});
    let (_, job) = v1.call(Method::POST, "jobs", Some(body), None).await;
    let id = job["id"].as_str().unwrap().to_string();
    eventually("the job to succeed", Duration::from_secs(10), || async {
        v1.call(Method::GET, &format!("jobs/{id}"), None, None).await.1["status"] == "succeeded"
    })
    .await;
    eventually("the job to expire", Duration::from_secs(5), || async {
        v1.call(Method::GET, &format!("jobs/{id}"), None, None).await.0 == 404
    })
    .await;
    let (_, list) = v1.call(Method::GET, "jobs", None, None).await;
    assert_eq!(list["jobs"], json!([]), "an expired job is not listed");
    let (status, _) = v1.call(Method::GET, &format!("jobs/{id}/events"), None, None).await;
    assert_eq!(status, 404, "nor streamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_arrive_signed_once_per_finish_and_are_retried_when_the_receiver_fails() {
    use base64::Engine;
    let server = TasklaneProcess::start();
    let worker =
        Worker::start(Arc::new(|r, _| (if r.path.starts_with("/bad") { 500 } else { 200 }, Duration::ZERO))).await;
    // The receiver fails its first call, then accepts.
    let receiver = Worker::start(Arc::new(|_, i| (if i == 0 { 503 } else { 200 }, Duration::ZERO))).await;
    server.api().create_queue("cb", json!({"retryConfig": {"maxAttempts": 1}})).await;
    let v1 = V1::new(&server);
    let body = json!({
        "queue": queue("cb"),
        "tasks": [{"url": worker.url("/good")}, {"url": worker.url("/bad")}],
        "callback_url": receiver.url("/hooks/jobs"),
    });
    let (status, job) = v1.call(Method::POST, "jobs", Some(body), None).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["callback_url"], receiver.url("/hooks/jobs"));
    eventually("both callbacks to be delivered", Duration::from_secs(20), || async {
        let job = v1.job(&id).await;
        job["callbacks"].as_array().is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["state"] == "delivered"))
    })
    .await;
    let job = v1.job(&id).await;
    assert_eq!(job["status"], "failed");
    let types: Vec<&str> = job["callbacks"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["task.dead_lettered", "job.finished"]);
    let received = receiver.received();
    assert_eq!(received.len(), 3, "two notifications, one of them sent twice after a 503");
    let attempts: i64 = job["callbacks"].as_array().unwrap().iter().map(|c| c["attempts"].as_i64().unwrap()).sum();
    assert_eq!(attempts, 3);

    let jwks = crate::targets::get_json(&format!("http://{}/.well-known/jwks.json", server.addr)).await;
    for r in &received {
        let claims = crate::targets::verify(r.header("x-tasklane-signature").expect("signed"), &jwks);
        let digest = ring::digest::digest(&ring::digest::SHA256, &r.body);
        assert_eq!(claims["body_sha256"], base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()));
        assert_eq!(claims["sub"], id.as_str());
        let note: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(note["job"]["id"], id.as_str());
        assert_eq!(note["type"], r.header("x-tasklane-event").unwrap());
    }
    let finished: Vec<&crate::support::Received> =
        received.iter().filter(|r| r.header("x-tasklane-event") == Some("job.finished")).collect();
    assert!(!finished.is_empty());
    let note: Value = serde_json::from_slice(&finished.last().unwrap().body).unwrap();
    assert_eq!((note["job"]["status"].as_str(), note["job"]["counts"]["failed"].as_i64()), (Some("failed"), Some(1)));
    let (status, body) = v1
        .call(
            Method::POST,
            "jobs",
            Some(json!({"queue": queue("cb"), "task": {"url": worker.url("/x")}, "callback_url": "ftp://nope"})),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("callback_url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_stream_follows_the_jobs_that_match_its_filter() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    server.api().create_queue("dash", json!({})).await;
    let v1 = V1::new(&server);
    let mut stream =
        client().get(format!("{}/events?label=team:a", v1.base)).send().await.expect("open the dashboard stream");
    assert_eq!(stream.status(), 200);
    let mut ids = Vec::new();
    for team in ["b", "a"] {
        let body = json!({"queue": queue("dash"), "task": {"url": worker.url("/x")}, "labels": {"team": team}});
        let (status, job) = v1.call(Method::POST, "jobs", Some(body), None).await;
        assert_eq!(status, 201, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let mut text = String::new();
    let read = async {
        while !text.contains("event: succeeded") {
            match stream.chunk().await.expect("read the stream") {
                Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
                None => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("team a's job finishes on the stream");
    let event_ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id:")).map(str::trim).collect();
    assert!(!event_ids.is_empty());
    assert!(event_ids.iter().all(|id| id.starts_with(&format!("{}:", ids[1]))), "only team a's job: {event_ids:?}");
    let kinds: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event:")).map(str::trim).collect();
    assert_eq!(kinds.first(), Some(&"created"));
    assert_eq!(kinds.last(), Some(&"succeeded"));
}

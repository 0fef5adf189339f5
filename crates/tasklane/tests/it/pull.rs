//! Pull queues against the real binary: the lease API, long polling, and `tasklane work`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{CuttableProxy, PROJECT_LOCATION, TasklaneProcess, client, eventually};

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

/// `tasklane work` against `server`, running `script` with `sh -c` for each task.
fn work(server: &TasklaneProcess, queue: &str, script: &str, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"));
    cmd.args(["work", "--queue", queue, "--endpoint", &format!("http://{}", server.addr)])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// The summary line `tasklane work` prints when it exits: (succeeded, failed, given back).
fn summary(stderr: &[u8]) -> (u64, u64, u64) {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|l| l.contains("succeeded,")).unwrap_or_else(|| panic!("no summary in {text}"));
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    (numbers[0], numbers[1], numbers[2])
}

/// Whether process `pid` still runs (a zombie waiting for its parent does not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn out_dir(tag: &str) -> std::path::PathBuf {
    crate::support::fresh_dir(tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_drain_a_thousand_tasks_each_acknowledged_once() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("drain", json!({})).await;
    let tasks: Vec<Value> = (0..1000).map(|i| json!({"payload": format!("item-{i}\n")})).collect();
    let created = v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"tasks": tasks}))).await;
    assert_eq!(created["failed"], json!([]));
    let out = out_dir("drain");
    let script = format!("cat >> {}/\"$TASKLANE_TASK_ID\"", out.display());
    let queue = format!("{PROJECT_LOCATION}/queues/drain");
    let workers: Vec<std::process::Child> = (0..4)
        .map(|_| {
            work(&server, &queue, &script, &["--concurrency", "4", "--drain"]).spawn().expect("start tasklane work")
        })
        .collect();
    let mut acknowledged = 0;
    for w in workers {
        let output =
            tokio::task::spawn_blocking(move || w.wait_with_output()).await.unwrap().expect("tasklane work ends");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let (ok, failed, _) = summary(&output.stderr);
        assert_eq!(failed, 0);
        acknowledged += ok;
    }
    assert_eq!(acknowledged, 1000, "every task was acknowledged exactly once");
    let ran = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(ran, 1000, "every task ran at least once");
    let left = v1.ok(Method::POST, &format!("queues/{q}/tasks:lease"), Some(json!({"max_tasks": 10}))).await;
    assert_eq!(left["tasks"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_killed_worker_comes_back_after_its_lease_and_completes_elsewhere() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("crashy", json!({})).await;
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"payload": "x"}))).await;
    let out = out_dir("crashy");
    // The first attempt hangs (its worker gets killed); later ones finish.
    let script = format!(
        "echo $$ > {0}/pid-$TASKLANE_ATTEMPT; touch {0}/started-$TASKLANE_ATTEMPT; \
         if [ \"$TASKLANE_ATTEMPT\" = 1 ]; then exec sleep 31.7; fi; touch {0}/done",
        out.display()
    );
    let queue = format!("{PROJECT_LOCATION}/queues/crashy");
    let mut first = work(&server, &queue, &script, &["--lease", "3s"]).spawn().unwrap();
    let started = out.join("started-1");
    crate::support::eventually("the first attempt to start", Duration::from_secs(10), || async { started.exists() })
        .await;
    first.kill().unwrap(); // SIGKILL: no cleanup, the lease stays
    let _ = first.wait();
    // Its command dies with it (issue 14.4).
    let orphan = std::fs::read_to_string(out.join("pid-1")).unwrap().trim().to_string();
    eventually("the killed worker's command to die with it", Duration::from_secs(10), || async { !alive(&orphan) })
        .await;
    let second = work(&server, &queue, &script, &["--lease", "3s"]).spawn().unwrap();
    let done = out.join("done");
    crate::support::eventually("the task to complete on the other worker", Duration::from_secs(15), || async {
        done.exists()
    })
    .await;
    assert!(out.join("started-2").exists(), "the task ran again, as attempt 2");
    // Once the task is acknowledged, SIGTERM: the worker stops leasing and exits with its summary.
    eventually("the task to be acknowledged", Duration::from_secs(10), || async {
        server.api().task_count("crashy").await == 0
    })
    .await;
    let term = std::process::Command::new("kill").args(["-TERM", &second.id().to_string()]).status().unwrap();
    assert!(term.success());
    let output = tokio::task::spawn_blocking(move || second.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(summary(&output.stderr), (1, 0, 0), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_3_is_retried_then_dead_lettered_with_its_stderr() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("failing", json!({"maxAttempts": 3, "minBackoff": "0.1s", "maxBackoff": "0.2s"})).await;
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"payload": "x", "env": {"TARGET_FILE_ID": "f7"}})))
        .await;
    let queue = format!("{PROJECT_LOCATION}/queues/failing");
    let script = "echo \"cannot open $TARGET_FILE_ID (attempt $TASKLANE_ATTEMPT)\" >&2; exit 3";
    let worker = work(&server, &queue, script, &["--drain"]).spawn().unwrap();
    let output = tokio::task::spawn_blocking(move || worker.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(summary(&output.stderr), (0, 3, 0), "{}", String::from_utf8_lossy(&output.stderr));
    let dead = v1.ok(Method::GET, &format!("queues/{q}/dead-letters"), None).await;
    let d = &dead["dead_letters"][0];
    assert_eq!(d["attempts"].as_array().map(Vec::len), Some(3), "{dead}");
    let message = d["last_response"]["message"].as_str().unwrap();
    assert!(message.contains("exited with status 3") && message.contains("cannot open f7 (attempt 3)"), "{message}");
    // The backoff (min 0.1 s) spaced the attempts: each lease came at least that long after the one before.
    let times: Vec<time::OffsetDateTime> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let at = a["dispatch_time"].as_str().unwrap();
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).expect("an RFC 3339 time")
        })
        .collect();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= time::Duration::milliseconds(100), "attempts {gap} apart, less than the backoff: {times:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_job_reports_progress_from_its_command_s_output() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    v1.pull_queue("pjobs", json!({})).await;
    let queue = format!("{PROJECT_LOCATION}/queues/pjobs");
    let job = v1.ok(Method::POST, "jobs", Some(json!({"queue": queue, "task": {"payload": "video.mp4"}}))).await;
    let id = job["id"].as_str().unwrap().to_string();
    let script = "read -r name; echo \"::progress 50 encoding $name\"; echo ordinary output";
    let worker = work(&server, &queue, script, &["--drain"]).spawn().unwrap();
    let output = tokio::task::spawn_blocking(move || worker.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(summary(&output.stderr), (1, 0, 0), "{}", String::from_utf8_lossy(&output.stderr));
    let done = v1.ok(Method::GET, &format!("jobs/{id}"), None).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        (done["progress"]["percent"].as_f64(), done["progress"]["message"].as_str()),
        (Some(50.0), Some("encoding video.mp4"))
    );
    let (status, body) =
        v1.call(Method::POST, "jobs", Some(json!({"queue": queue, "task": {"url": "http://127.0.0.1:9/"}}))).await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("pull queue"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_a_worker_gives_back_what_outlives_its_grace() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("graceful", json!({})).await;
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"payload": "slow"}))).await;
    let out = out_dir("graceful");
    let script = format!("touch {}/started; exec sleep 32.3", out.display());
    let queue = format!("{PROJECT_LOCATION}/queues/graceful");
    let worker = work(&server, &queue, &script, &["--grace", "1s"]).spawn().unwrap();
    let started = out.join("started");
    crate::support::eventually("the command to start", Duration::from_secs(10), || async { started.exists() }).await;
    let term = std::process::Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    assert!(term.success());
    let output = tokio::task::spawn_blocking(move || worker.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(summary(&output.stderr), (0, 0, 1), "{}", String::from_utf8_lossy(&output.stderr));
    // Given back, not failed: it can be leased at once and its attempt did not count.
    let leased = v1.ok(Method::POST, &format!("queues/{q}/tasks:lease"), Some(json!({}))).await;
    assert_eq!(leased["tasks"][0]["attempt"], 1, "{leased}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_pull_worker_example_leases_reports_and_acknowledges() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("thumbnails", json!({})).await;
    let tasks = json!({"tasks": [{"payload": "a.png"}, {"payload": "b.png"}]});
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(tasks)).await;
    let queue = format!("{PROJECT_LOCATION}/queues/thumbnails");
    let job = v1.ok(Method::POST, "jobs", Some(json!({"queue": queue, "task": {"payload": "c.png"}}))).await;
    let example = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/pull-worker/worker.py");
    let run = std::process::Command::new("python3")
        .arg(example)
        .env("TASKLANE", format!("http://{}", server.addr))
        .env("QUEUE", &queue)
        .env("DRAIN", "1")
        .output()
        .expect("run the example");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("acknowledged 3"), "{stderr}");
    let done = v1.ok(Method::GET, &format!("jobs/{}", job["id"].as_str().unwrap()), None).await;
    assert_eq!((done["status"].as_str(), done["progress"]["message"].as_str()), (Some("succeeded"), Some("c.png")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_fails_its_task_rather_than_acknowledging_it() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("missing-cmd", json!({"maxAttempts": 1})).await;
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"payload": "x"}))).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["work", "--queue", &format!("{PROJECT_LOCATION}/queues/missing-cmd"), "--drain"])
        .args(["--endpoint", &format!("http://{}", server.addr), "--", "/nonexistent/command"])
        .output()
        .unwrap();
    assert_eq!(summary(&output.stderr), (0, 1, 0), "{}", String::from_utf8_lossy(&output.stderr));
    let dead = v1.ok(Method::GET, &format!("queues/{q}/dead-letters"), None).await;
    assert!(
        dead["dead_letters"][0]["last_response"]["message"].as_str().unwrap().contains("could not run the command")
    );
}

/// Issue 14.3: a restart of the embedded store releases the dispatcher's leases, not a pull
/// worker's (whose command may still be running), and SIGTERM ends long polls at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_pull_leases_and_sigterm_ends_long_polls_at_once() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("kept", json!({})).await;
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"payload": "render"}))).await;
    let leased = v1.ok(Method::POST, &format!("queues/{q}/tasks:lease"), Some(json!({"lease_duration": "60s"}))).await;
    let task = leased["tasks"][0].clone();
    assert!(task["lease_id"].is_number(), "{leased}");

    // The long poll on a connection of its own, so its answer can be watched for.
    let mut poll = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let body = json!({"wait": "20s"}).to_string();
    let request = format!(
        "POST /v1/queues/{q}/tasks:lease HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut poll, request.as_bytes()).await.unwrap();
    // A request on a later connection answered: the server accepted the poll's before it.
    let health = client().get(format!("http://{}/healthz", server.addr)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let mut byte = [0u8; 1];
    let early = poll.try_read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the poll answered before its wait ended or a task came: {early:?}"
    );
    let dir = server.data_dir.clone();
    let stopping = Instant::now();
    let exit = server.terminate();
    assert!(exit.success(), "SIGTERM stops tasklane cleanly");
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown waited {took:?} for a long poll");
    // The poll was answered, at once and with nothing (a poll that never reached the
    // handler would get no answer at all, and fail here rather than pass).
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut poll, &mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"tasks":[]}"#), "{answer}");

    let server = TasklaneProcess::start_in(dir);
    let v1 = V1::new(&server);
    let again = v1.ok(Method::POST, &format!("queues/{q}/tasks:lease"), Some(json!({}))).await;
    assert_eq!(again["tasks"], json!([]), "the task is still leased to its worker after the restart");
    let item = json!({"name": task["name"], "lease_id": task["lease_id"]});
    let acked = v1.ok(Method::POST, &format!("queues/{q}/tasks:acknowledge"), Some(json!({"tasks": [item]}))).await;
    assert_eq!(acked["acknowledged"], json!([task["name"]]), "the worker's lease still holds");
}

/// Issue 14.4: a timeout kills the command's whole process group, a background child of the
/// command included, and the failure says how the command ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_command_s_whole_process_group() {
    let server = TasklaneProcess::start();
    let v1 = V1::new(&server);
    let q = v1.pull_queue("slow", json!({"maxAttempts": 1})).await;
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"payload": "x"}))).await;
    let out = out_dir("slow");
    let script = format!("sleep 29.3 & echo $! > {0}/grandchild; echo $$ > {0}/command; wait", out.display());
    let queue = format!("{PROJECT_LOCATION}/queues/slow");
    let worker = work(&server, &queue, &script, &["--timeout", "1s", "--drain"]).spawn().unwrap();
    let output = tokio::task::spawn_blocking(move || worker.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(summary(&output.stderr), (0, 1, 0), "{}", String::from_utf8_lossy(&output.stderr));
    for which in ["command", "grandchild"] {
        let pid = std::fs::read_to_string(out.join(which)).unwrap().trim().to_string();
        eventually(&format!("the {which} to be killed"), Duration::from_secs(10), || async { !alive(&pid) }).await;
    }
    let dead = v1.ok(Method::GET, &format!("queues/{q}/dead-letters"), None).await;
    let message = dead["dead_letters"][0]["last_response"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("ran longer than 1s"), "{dead}");
}

/// Issue 14.4: an acknowledgement that cannot reach the server is sent again until it can,
/// within the lease, so the task does not run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_during_a_brief_outage_is_retried_and_the_task_runs_once() {
    let server = TasklaneProcess::start();
    let proxy = CuttableProxy::start(server.addr).await;
    let v1 = V1::new(&server);
    let q = v1.pull_queue("blip", json!({})).await;
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"payload": "x"}))).await;
    let out = out_dir("blip");
    let script =
        format!("touch {0}/started-$TASKLANE_ATTEMPT; while [ ! -e {0}/release ]; do sleep 0.05; done", out.display());
    let queue = format!("{PROJECT_LOCATION}/queues/blip");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"));
    cmd.args(["work", "--queue", &queue, "--endpoint", &format!("http://127.0.0.1:{}", proxy.port)])
        .args(["--lease", "30s", "--drain", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let worker = cmd.spawn().unwrap();
    let started = out.join("started-1");
    eventually("the command to start", Duration::from_secs(10), || async { started.exists() }).await;
    proxy.cut();
    std::fs::write(out.join("release"), "").unwrap();
    // The acknowledgement is refused at least twice while the server cannot be reached.
    eventually("the worker to try and fail to report", Duration::from_secs(10), || async { proxy.refused() >= 2 })
        .await;
    proxy.restore();
    let output = tokio::task::spawn_blocking(move || worker.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(summary(&output.stderr), (1, 0, 0), "{stderr}");
    assert!(stderr.contains("acknowledge") && stderr.contains("retrying"), "{stderr}");
    assert!(!out.join("started-2").exists(), "the task ran twice:\n{stderr}");
    let left = v1.ok(Method::POST, &format!("queues/{q}/tasks:lease"), Some(json!({"max_tasks": 10}))).await;
    assert_eq!(left["tasks"], json!([]), "the task was acknowledged");
    let dead = v1.ok(Method::GET, &format!("queues/{q}/dead-letters"), None).await;
    assert_eq!(dead["dead_letters"], json!([]));
}

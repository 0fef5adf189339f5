//! The fault suite (issue 14): tasklane under a full disk, `kill -9`s, lost workers and a
//! database that goes away, each checked for what a user would see: every accepted task
//! delivered, exact counts, clear errors, and recovery without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde_json::json;

use crate::support::{PROJECT_LOCATION, TasklaneProcess, Worker, client, eventually, fresh_dir};

/// A small tmpfs mounted for one test, unmounted when dropped. `None` where this machine
/// does not allow mounting one (not root, no tmpfs): the test then says it skipped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = fresh_dir("tmpfs");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            Some(Tmpfs { dir })
        } else {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Write `path` until the filesystem is full; returns how many bytes it took.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let mut written = 0u64;
    // Large writes first, then smaller ones for the last bytes.
    for size in [64 * 1024, 4096, 512, 1] {
        let chunk = vec![0u8; size];
        while let Ok(n) = file.write(&chunk) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
    }
    let _ = file.sync_all();
    written
}

async fn ready(addr: std::net::SocketAddr) -> (u16, String) {
    let response = client().get(format!("http://{addr}/readyz")).send().await.expect("call /readyz");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// Issue 14.5: on a full disk, writes answer RESOURCE_EXHAUSTED with the reason, `/readyz`
/// fails, the log says so a few times rather than hundreds, and once there is room again
/// everything accepted is delivered without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_recovers_when_space_returns() {
    let Some(disk) = Tmpfs::mount("24m") else {
        eprintln!(
            "SKIPPED a_full_disk_refuses_writes_clearly_and_recovers_when_space_returns: cannot mount a tmpfs here"
        );
        return;
    };
    let data = disk.dir.join("data");
    let log = fresh_dir("full-disk-log").join("tasklane.log");
    let server = TasklaneProcess::start_in_logging_to(data, &log);
    let worker = Worker::ok().await;
    let api = server.api();
    api.create_queue("full", json!({})).await;
    api.queue_verb("full", "pause").await;
    let queue = format!("{PROJECT_LOCATION}/queues/full");
    let body = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 48 * 1024]);
    let tasks = format!("{queue}/tasks");
    let create = |i: usize| {
        let task = json!({"task": {"httpRequest": {"url": worker.url(&format!("/t/{i}")), "body": body}}});
        api.call(Method::POST, &tasks, Some(task))
    };

    // Tasks accepted before the disk fills, waiting in the paused queue.
    let mut accepted = 0;
    while accepted < 20 {
        let (status, answer) = create(accepted).await;
        assert_eq!(status, 200, "{answer}");
        accepted += 1;
    }
    let filler = disk.dir.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the filler took the disk");
    let refusal = loop {
        let (status, answer) = create(accepted).await;
        if status != 200 {
            break (status, answer);
        }
        accepted += 1;
        assert!(accepted < 1000, "a full disk never refused a create");
    };
    assert_eq!(refusal.0, 429, "{}", refusal.1);
    assert_eq!(refusal.1["error"]["status"], "RESOURCE_EXHAUSTED", "{}", refusal.1);
    let message = refusal.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("out of space") && message.contains("full"), "{message}");
    let (status, text) = ready(server.addr).await;
    assert_eq!(status, 503, "/readyz while writes fail: {text}");
    // A settings change may still fit in what is left; changes go on until one does not,
    // and that one is refused whole.
    let mut last = api.ok(Method::GET, &queue, None).await["rateLimits"]["maxDispatchesPerSecond"].clone();
    let mut rate = 1;
    let refused = loop {
        let change = json!({"rateLimits": {"maxDispatchesPerSecond": rate}});
        let (status, answer) = api.call(Method::PATCH, &queue, Some(change)).await;
        if status != 200 {
            break (status, answer);
        }
        last = json!(rate);
        rate += 1;
        assert!(rate < 2000, "a full disk never refused a settings change");
    };
    assert_eq!((refused.0, refused.1["error"]["status"].as_str()), (429, Some("RESOURCE_EXHAUSTED")), "{}", refused.1);
    let kept = api.ok(Method::GET, &queue, None).await;
    assert_eq!(kept["rateLimits"]["maxDispatchesPerSecond"], last, "the refused change left nothing: {kept}");
    // Stay full until the first failed checkpoint is two seconds old: the checkpointer tries ten
    // times a second, and each try used to log a warning.
    eventually("two seconds of failed checkpoints", Duration::from_secs(20), || async {
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let first = logged.lines().find(|l| l.contains("checkpoint failed")).and_then(|l| l.split_whitespace().next());
        first
            .and_then(|at| time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok())
            .is_some_and(|at| time::OffsetDateTime::now_utc() - at >= time::Duration::seconds(2))
    })
    .await;

    // A little room comes back: no restart needed.
    let file = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
    file.set_len(filled.saturating_sub(4 * 1024 * 1024)).unwrap();
    drop(file);
    eventually("/readyz to say ready again", Duration::from_secs(20), || async { ready(server.addr).await.0 == 200 })
        .await;
    let (status, answer) = create(accepted).await;
    assert_eq!(status, 200, "creates work again: {answer}");
    accepted += 1;
    api.queue_verb("full", "resume").await;
    let got = worker.wait_for(accepted, Duration::from_secs(30)).await;
    let mut paths: Vec<String> = got.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), accepted, "every accepted task was delivered");
    eventually("the queue to be empty", Duration::from_secs(20), || async { api.task_count("full").await == 0 }).await;

    eventually("the log to say checkpoints work again", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("checkpoints work again")
    })
    .await;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings = logged.lines().filter(|l| l.contains("checkpoint failed")).count();
    assert!((1..=3).contains(&warnings), "{warnings} checkpoint warnings for a few seconds:\n{logged}");
    drop(server);
}

/// The node that holds `queue`, from `/v1/cluster`.
async fn owner_of(node: &TasklaneProcess, queue: &str) -> Option<String> {
    let (status, body) = node.api().call(Method::GET, "../v1/cluster", None).await;
    if status != 200 {
        return None;
    }
    body["nodes"].as_array()?.iter().find_map(|n| {
        let holds = n["queues"].as_array()?.iter().any(|q| q["queue"].as_str().is_some_and(|q| q.ends_with(queue)));
        holds.then(|| n["nodeId"].as_str().unwrap_or_default().to_string())
    })
}

/// Issue 14.8: when a node dies, the node that takes its queues puts that node's deliveries
/// back at once and in their place, instead of after their dispatch deadline and behind the
/// backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_node_s_deliveries_are_requeued_at_takeover_in_their_order() {
    let Some((url, schema_store, schema)) = crate::cluster::fresh_database("takeover").await else { return };
    // The first delivery of t0 never answers (its node is killed meanwhile); the rest do.
    let worker = Worker::start(std::sync::Arc::new(|r, _| {
        let first_t0 =
            r.header("x-cloudtasks-taskname") == Some("t0") && r.header("x-cloudtasks-taskretrycount") == Some("0");
        (200, if first_t0 { Duration::from_secs(300) } else { Duration::ZERO })
    }))
    .await;
    let first = TasklaneProcess::start_node(&url);
    let api = first.api();
    api.create_queue("order", json!({"rateLimits": {"maxConcurrentDispatches": 1}})).await;
    eventually("the first node to own the queue", Duration::from_secs(15), || async {
        owner_of(&first, "order").await.is_some()
    })
    .await;
    for i in 0..5 {
        let name = format!("{PROJECT_LOCATION}/queues/order/tasks/t{i}");
        api.create_task("order", json!({"name": name, "httpRequest": {"url": worker.url("/")}})).await;
        if i == 0 {
            worker.wait_for(1, Duration::from_secs(15)).await;
        }
    }
    let second = TasklaneProcess::start_node(&url);
    let dead = owner_of(&first, "order").await.expect("an owner");
    let killed = std::time::Instant::now();
    first.kill_hard();
    eventually("the second node to take the queue", Duration::from_secs(20), || async {
        owner_of(&second, "order").await.is_some_and(|o| o != dead)
    })
    .await;
    // The documented failover: the dead node's 5 s queue lease, then the next keeper tick.
    let failover = killed.elapsed();
    assert!(failover < Duration::from_secs(9), "the queue was taken over {failover:?} after the kill");
    // Everything arrives well within the dead node's lease (600 s + 1 s): t0 again, first.
    let got = worker.wait_for(6, Duration::from_secs(20)).await;
    let order: Vec<&str> = got.iter().map(|r| r.header("x-cloudtasks-taskname").unwrap_or("")).collect();
    assert_eq!(order, ["t0", "t0", "t1", "t2", "t3", "t4"], "the dead node's delivery comes back first, once");
    drop(second);
    let _ = schema_store.drop_schema(&schema).await;
}

/// Issue 14.9: a node cut off from the database by a silent partition (connections open, no
/// bytes pass) answers its API with 503 within its database timeout, stops dispatching before
/// its queue leases can end, and never delivers a queue another node has taken; when the
/// network heals, every task is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_silently_partitioned_from_the_database_stops_in_time_and_fails_fast() {
    let Some((url, schema_store, schema)) = crate::cluster::fresh_database("silent").await else { return };
    let (proxy, proxied) = crate::cluster::proxied_database(&url, &schema).await;
    let worker = Worker::start(std::sync::Arc::new(|_, _| (200, Duration::from_millis(20)))).await;
    let cut_off = TasklaneProcess::start_node_with(&proxied, &["--database-timeout", "2s"]);
    let api = cut_off.api();
    // One dispatch at a time: two nodes delivering the queue at once would show as two
    // requests in flight at the worker.
    api.create_queue("steady", json!({"rateLimits": {"maxConcurrentDispatches": 1, "maxDispatchesPerSecond": 30}}))
        .await;
    eventually("the node behind the proxy to own the queue", Duration::from_secs(15), || async {
        owner_of(&cut_off, "steady").await.is_some()
    })
    .await;
    let other = TasklaneProcess::start_node(&url);
    // All the work is there before dispatch starts: ten seconds of it at 30 a second.
    other.api().queue_verb("steady", "pause").await;
    for i in 0..300 {
        let name = format!("{PROJECT_LOCATION}/queues/steady/tasks/s{i}");
        other.api().create_task("steady", json!({"name": name, "httpRequest": {"url": worker.url("/")}})).await;
    }
    other.api().queue_verb("steady", "resume").await;
    worker.wait_for(20, Duration::from_secs(15)).await;

    proxy.silence();
    let asked = std::time::Instant::now();
    let (status, body) = api.call(Method::GET, &format!("{PROJECT_LOCATION}/queues/steady"), None).await;
    let took = asked.elapsed();
    assert_eq!((status, body["error"]["status"].as_str()), (503, Some("UNAVAILABLE")), "{body}");
    assert!(took < Duration::from_secs(8), "the API answered after {took:?}, not within its database timeout");
    let (status, text) = ready(cut_off.addr).await;
    assert_eq!(status, 503, "{text}");
    // The other node takes the queue once the lease lapses, and delivers it.
    let before = worker.received().len();
    eventually("the other node to deliver the queue", Duration::from_secs(30), || async {
        worker.received().len() >= before + 30
    })
    .await;
    proxy.restore();
    eventually("every task to be delivered", Duration::from_secs(60), || async {
        other.api().task_count("steady").await == 0
    })
    .await;
    let names: std::collections::HashMap<String, usize> =
        worker.received().iter().fold(Default::default(), |mut seen, r| {
            *seen.entry(r.header("x-cloudtasks-taskname").unwrap_or("").to_string()).or_default() += 1;
            seen
        });
    for i in 0..300 {
        assert!(names.contains_key(&format!("s{i}")), "s{i} was never delivered");
    }
    let twice: Vec<_> = names.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.len() <= 1, "only a delivery in flight at the partition may run twice: {twice:?}");
    assert_eq!(worker.max_in_flight(), 1, "two nodes delivered the queue at once");
    drop((cut_off, other, proxy));
    let _ = schema_store.drop_schema(&schema).await;
}

/// Which tasks a worker got, and how often: a fault test's ledger.
fn deliveries(worker: &Worker) -> std::collections::HashMap<String, usize> {
    worker.received().iter().fold(Default::default(), |mut seen, r| {
        *seen.entry(r.header("x-cloudtasks-taskname").unwrap_or("").to_string()).or_default() += 1;
        seen
    })
}

/// Creates and dispatch against the embedded store through four `kill -9`s, each in the
/// middle of creates and deliveries: every task whose create was answered is delivered, and
/// only deliveries in flight at a kill run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_and_deliveries_survive_repeated_kill_9s() {
    const CONCURRENCY: usize = 8;
    const KILLS: usize = 4;
    let worker = Worker::start(std::sync::Arc::new(|_, _| (200, Duration::from_millis(5)))).await;
    let mut server = TasklaneProcess::start();
    let rate = json!({"rateLimits": {"maxConcurrentDispatches": CONCURRENCY, "maxDispatchesPerSecond": 500}});
    server.api().create_queue("crashy", rate).await;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut next = 0usize;
    for _ in 0..KILLS {
        // A creator that keeps going until the server under it dies.
        let base = format!("http://{}/v2/{PROJECT_LOCATION}/queues/crashy/tasks", server.addr);
        let (url, kept, first) = (worker.url("/"), accepted.clone(), next);
        let creator = tokio::spawn(async move {
            let client = client();
            for i in first.. {
                let id = format!("k{i}");
                let task = json!({"task": {"name": format!("{PROJECT_LOCATION}/queues/crashy/tasks/{id}"),
                    "httpRequest": {"url": url}}});
                match client.post(&base).header("content-type", "application/json").body(task.to_string()).send().await
                {
                    Ok(r) if r.status() == 200 => kept.lock().unwrap().push(id),
                    _ => return i + 1,
                }
            }
            first
        });
        let seen = worker.received().len();
        eventually("deliveries to be under way", Duration::from_secs(20), || async {
            worker.received().len() >= seen + 150
        })
        .await;
        let dir = server.kill_hard();
        next = creator.await.unwrap();
        server = TasklaneProcess::start_in(dir);
    }
    eventually("every accepted task to be delivered", Duration::from_secs(60), || async {
        server.api().task_count("crashy").await == 0
    })
    .await;
    let seen = deliveries(&worker);
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() > 600, "only {} creates were accepted; the test did too little", accepted.len());
    let lost: Vec<&String> = accepted.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} accepted tasks were never delivered, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let twice: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        twice <= KILLS * CONCURRENCY,
        "{twice} duplicates; at most {} deliveries were in flight at the kills",
        KILLS * CONCURRENCY
    );
}

/// A batch job through three `kill -9`s keeps exact counts: each task is counted once, as
/// succeeded or failed, and the job ends as its tasks did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_keeps_exact_counts_through_repeated_kill_9s() {
    let worker = Worker::start(std::sync::Arc::new(|r, _| {
        (if r.path.starts_with("/fail") { 500 } else { 200 }, Duration::from_millis(10))
    }))
    .await;
    let mut server = TasklaneProcess::start();
    let settings = json!({"rateLimits": {"maxConcurrentDispatches": 10}, "retryConfig": {"maxAttempts": 1}});
    server.api().create_queue("counted", settings).await;
    let tasks: Vec<serde_json::Value> = (0..400)
        .map(|i| json!({"url": worker.url(&format!("/{}/{i}", if i % 10 == 0 { "fail" } else { "ok" }))}))
        .collect();
    let body = json!({"queue": format!("{PROJECT_LOCATION}/queues/counted"), "tasks": tasks});
    let (status, job) = server.api().call(Method::POST, "../v1/jobs", Some(body)).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    for round in 1..=3 {
        eventually("part of the batch to run", Duration::from_secs(20), || async {
            worker.received().len() >= round * 100
        })
        .await;
        let dir = server.kill_hard();
        server = TasklaneProcess::start_in(dir);
    }
    let job_path = format!("../v1/jobs/{id}");
    eventually("the job to finish", Duration::from_secs(60), || async {
        server.api().call(Method::GET, &job_path, None).await.1["status"] == "failed"
    })
    .await;
    let (_, done) = server.api().call(Method::GET, &job_path, None).await;
    assert_eq!(
        done["counts"],
        json!({"total": 400, "succeeded": 360, "failed": 40, "running": 0, "pending": 0, "cancelled": 0}),
        "{done}"
    );
    let paths: std::collections::HashSet<String> = worker.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 400, "every task reached the worker");
}

/// Pull workers through `kill -9`s of the server and of a worker: every task is acknowledged,
/// none is left or dead-lettered, and no task is ever run by two workers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pull_workers_and_the_server_killed_leave_every_task_done_once_at_a_time() {
    let mut server = TasklaneProcess::start();
    let port = server.addr.port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let v1 = crate::pull::V1::new(&server);
    let q = v1.pull_queue("killed", json!({})).await;
    let tasks: Vec<serde_json::Value> = (0..150).map(|i| json!({"payload": format!("{i}")})).collect();
    v1.ok(Method::POST, &format!("queues/{q}/tasks"), Some(json!({"tasks": tasks}))).await;
    let out = fresh_dir("pull-kills");
    // Each run records its start and, if it is not killed, its end.
    let script = format!(
        "echo \"$TASKLANE_TASK_ID start $(date +%s%N)\" >> {0}/runs; sleep 0.1; \
         echo \"$TASKLANE_TASK_ID end $(date +%s%N)\" >> {0}/runs",
        out.display()
    );
    let queue = format!("{PROJECT_LOCATION}/queues/killed");
    let endpoint = format!("http://{listen}");
    let start_worker = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tasklane"))
            .args(["work", "--queue", &queue, "--endpoint", &endpoint, "--concurrency", "2", "--lease", "4s"])
            .args(["--", "sh", "-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tasklane work")
    };
    let mut workers: Vec<std::process::Child> = (0..3).map(|_| start_worker()).collect();
    let runs = out.join("runs");
    // How many tasks finished a run.
    let ran = || {
        let text = std::fs::read_to_string(&runs).unwrap_or_default();
        let ended: std::collections::HashSet<&str> =
            text.lines().filter(|l| l.contains(" end ")).filter_map(|l| l.split_whitespace().next()).collect();
        ended.len()
    };
    for round in 1..=2 {
        eventually("commands to run", Duration::from_secs(30), || async { ran() >= round * 40 }).await;
        let dir = server.kill_hard();
        server = TasklaneProcess::start_in_with(dir, &["--listen", &listen]);
    }
    // A worker killed mid-command: its command dies with it; the lease ends and another runs it.
    workers[0].kill().unwrap();
    let _ = workers[0].wait();
    workers[0] = start_worker();
    let v1 = crate::pull::V1::new(&server);
    eventually("every task to be acknowledged", Duration::from_secs(60), || async {
        server.api().task_count("killed").await == 0
    })
    .await;
    let (_, dead) = v1.call(Method::GET, &format!("queues/{q}/dead-letters"), None).await;
    assert_eq!(dead["dead_letters"], json!([]), "no task gave up");
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    // Per task, its runs in order of start: none starts before the one before it ended.
    let mut by_task: std::collections::HashMap<String, Vec<(u128, Option<u128>)>> = Default::default();
    let text = std::fs::read_to_string(&runs).unwrap();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(id), Some(kind), Some(at)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let at: u128 = at.parse().unwrap();
        let entry = by_task.entry(id.to_string()).or_default();
        if kind == "start" {
            entry.push((at, None));
        } else if let Some(open) = entry.iter_mut().rev().find(|(_, end)| end.is_none()) {
            open.1 = Some(at);
        }
    }
    assert_eq!(by_task.len(), 150, "every task ran");
    for (id, runs) in &by_task {
        assert!(runs.iter().any(|(_, end)| end.is_some()), "{id} never finished a run");
        for pair in runs.windows(2) {
            if let (Some(end), next) = (pair[0].1, pair[1].0) {
                assert!(next >= end, "{id} ran twice at once: {runs:?}");
            }
        }
    }
}

/// Every connection of two nodes is terminated twice, as a database restart does: both
/// nodes recover by themselves and every task is delivered, duplicates only for deliveries
/// in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_recovers_from_its_database_restarting() {
    let Some((url, schema_store, schema)) = crate::cluster::fresh_database("restart").await else { return };
    let app = format!("tl_restart_{}", std::process::id());
    let node_url = format!("{url}&application_name={app}");
    let worker = Worker::start(std::sync::Arc::new(|_, _| (200, Duration::from_millis(5)))).await;
    let nodes: Vec<TasklaneProcess> = (0..2).map(|_| TasklaneProcess::start_node(&node_url)).collect();
    let api = nodes[0].api();
    api.create_queue("restarts", json!({"rateLimits": {"maxDispatchesPerSecond": 60, "maxConcurrentDispatches": 5}}))
        .await;
    for i in 0..240 {
        let name = format!("{PROJECT_LOCATION}/queues/restarts/tasks/r{i}");
        nodes[i % 2]
            .api()
            .create_task("restarts", json!({"name": name, "httpRequest": {"url": worker.url("/")}}))
            .await;
    }
    for round in 1..=2 {
        // Restart once deliveries are under way and the nodes are connected (ready) again.
        eventually("deliveries to be under way on ready nodes", Duration::from_secs(30), || async {
            worker.received().len() >= round * 60
                && ready(nodes[0].addr).await.0 == 200
                && ready(nodes[1].addr).await.0 == 200
        })
        .await;
        let terminated =
            schema_store.terminate_application(&app, false).await.expect("terminate the nodes' connections");
        assert!(terminated > 0, "round {round}: no connection of the nodes was found to terminate");
    }
    eventually("every task to be delivered", Duration::from_secs(60), || async {
        nodes[1].api().call(Method::GET, &format!("{PROJECT_LOCATION}/queues/restarts/tasks"), None).await.0 == 200
            && api.task_count("restarts").await == 0
    })
    .await;
    let seen = deliveries(&worker);
    for i in 0..240 {
        assert!(seen.contains_key(&format!("r{i}")), "r{i} was never delivered");
    }
    let twice: usize = seen.values().map(|n| n - 1).sum();
    assert!(twice <= 2 * 5, "{twice} duplicates; at most 10 deliveries were in flight at the restarts");
    for node in &nodes {
        assert_eq!(ready(node.addr).await.0, 200, "every node is ready again");
    }
    drop(nodes);
    let _ = schema_store.drop_schema(&schema).await;
}

/// A node stopped with SIGTERM hands its queues over at once (it deletes its leases), not
/// after they lapse, and its deliveries in flight finish first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_gracefully_hands_its_queues_over_at_once() {
    let Some((url, schema_store, schema)) = crate::cluster::fresh_database("handover").await else { return };
    let worker = Worker::ok().await;
    let first = TasklaneProcess::start_node(&url);
    first.api().create_queue("handed", json!({})).await;
    eventually("the first node to own the queue", Duration::from_secs(15), || async {
        owner_of(&first, "handed").await.is_some()
    })
    .await;
    let second = TasklaneProcess::start_node(&url);
    let stopping = std::time::Instant::now();
    assert!(first.terminate().success(), "SIGTERM stops the node cleanly");
    eventually("the second node to take the queue", Duration::from_secs(10), || async {
        owner_of(&second, "handed").await.is_some()
    })
    .await;
    let handover = stopping.elapsed();
    assert!(handover < Duration::from_secs(4), "handed over {handover:?} after SIGTERM, as if its lease had lapsed");
    second.api().create_task("handed", json!({"httpRequest": {"url": worker.url("/after")}})).await;
    worker.wait_for(1, Duration::from_secs(10)).await;
    drop(second);
    let _ = schema_store.drop_schema(&schema).await;
}

/// A job's callback that could not be delivered before a `kill -9` is delivered after the
/// restart, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_callback_survives_a_kill_9_and_is_delivered_once() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    // The receiver refuses until told otherwise.
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    let receiver = Worker::start(std::sync::Arc::new(move |_, _| {
        (if gate.load(std::sync::atomic::Ordering::SeqCst) { 200 } else { 503 }, Duration::ZERO)
    }))
    .await;
    server.api().create_queue("hooked", json!({})).await;
    let body = json!({"queue": format!("{PROJECT_LOCATION}/queues/hooked"), "task": {"url": worker.url("/")},
        "callback_url": receiver.url("/hook")});
    let (status, job) = server.api().call(Method::POST, "../v1/jobs", Some(body)).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    receiver.wait_for(1, Duration::from_secs(20)).await; // the first try, refused
    // Kill once that try is on record: a kill between the receiver's answer and the record
    // would lose the record of a try that did happen, which no server can keep.
    let path = format!("../v1/jobs/{id}");
    eventually("the refused try to be recorded", Duration::from_secs(20), || async {
        let job = server.api().ok(Method::GET, &path, None).await;
        job["callbacks"][0]["attempts"].as_i64() >= Some(1)
    })
    .await;
    let dir = server.kill_hard();
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let server = TasklaneProcess::start_in(dir);
    // If the kill landed while an attempt was out, that attempt's 60 s lease must end first.
    eventually("the callback to be delivered after the restart", Duration::from_secs(90), || async {
        let job = server.api().ok(Method::GET, &path, None).await;
        job["callbacks"][0]["state"] == "delivered"
    })
    .await;
    let delivered = receiver.received().len();
    let job = server.api().ok(Method::GET, &path, None).await;
    assert_eq!(job["callbacks"].as_array().map(Vec::len), Some(1), "{job}");
    assert_eq!(
        job["callbacks"][0]["attempts"].as_i64(),
        Some(delivered as i64),
        "every try was recorded, the refused ones and the one that got through"
    );
}

/// A `kill -9` while a full BatchCreateTasks is being written leaves all of it or none: the
/// server is killed at points of the request's journey (before a byte of it arrived, with half
/// of it through, with all of it through, after it was answered), each seen through a proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_during_a_batch_create_leaves_all_of_it_or_none() {
    let mut outcomes = Vec::new();
    for point in ["none arrived", "half through", "all through", "answered"] {
        let server = TasklaneProcess::start();
        server.api().create_queue("batched", json!({})).await;
        server.api().queue_verb("batched", "pause").await;
        let proxy = crate::support::CuttableProxy::start(server.addr).await;
        // The largest batch (100 requests), with bodies big enough that writing it takes a while.
        let body = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 20 * 1024]);
        let requests: Vec<serde_json::Value> = (0..100)
            .map(|i| {
                json!({"parent": format!("{PROJECT_LOCATION}/queues/batched"),
                "task": {"name": format!("{PROJECT_LOCATION}/queues/batched/tasks/b{i}"),
                "httpRequest": {"url": "http://127.0.0.1:9/", "body": body}}})
            })
            .collect();
        let body = json!({"requests": requests}).to_string();
        let size = body.len();
        let url = format!("http://127.0.0.1:{}/v2/{PROJECT_LOCATION}/queues/batched/tasks:batchCreate", proxy.port);
        let sent = tokio::spawn(async move {
            let answer = client().post(url).header("content-type", "application/json").body(body).send().await;
            match answer {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(_) => (0, String::new()),
            }
        });
        let (answered, text) = match point {
            "none arrived" => (0, String::new()),
            "half through" | "all through" => {
                let need = if point == "half through" { size / 2 } else { size };
                eventually(point, Duration::from_secs(20), || async { proxy.forwarded() >= need }).await;
                (0, String::new())
            }
            _ => sent.await.unwrap(),
        };
        let passed = proxy.forwarded();
        let dir = server.kill_hard();
        drop(proxy);
        let server = TasklaneProcess::start_in(dir);
        let mut count = 0;
        let mut token = String::new();
        loop {
            let path = format!("{PROJECT_LOCATION}/queues/batched/tasks?pageSize=1000&pageToken={token}");
            let page = server.api().ok(Method::GET, &path, None).await;
            count += page["tasks"].as_array().map_or(0, Vec::len);
            token = page["nextPageToken"].as_str().unwrap_or_default().to_string();
            if token.is_empty() {
                break;
            }
        }
        assert!(count == 0 || count == 100, "killed with {point}: {count} of 100 tasks of one batch survived");
        assert!(matches!(answered, 0 | 200), "the batch was refused ({answered}), not killed: {text}");
        if answered == 200 {
            assert_eq!(count, 100, "an answered batch is whole");
        }
        if passed == 0 {
            assert_eq!(count, 0, "nothing arrived, nothing was created");
        }
        outcomes.push((point, count));
    }
    eprintln!("batch create through kill -9 (moment, tasks kept): {outcomes:?}");
}

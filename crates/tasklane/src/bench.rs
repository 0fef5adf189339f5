//! `tasklane bench`: start tasklane (`tasklane serve`, a child process) and a no-op HTTP
//! sink in this process, run bounded workloads over loopback, and print throughput,
//! latency, and tasklane's CPU time and peak memory per scenario. Every scenario also
//! checks correctness: each task reaches the sink exactly once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

const LOCATION: &str = "projects/bench/locations/local";

#[derive(Args)]
pub struct BenchArgs {
    /// Small counts, for CI: checks that every task is delivered once, timings are not meaningful.
    #[arg(long)]
    quick: bool,
    /// Also run the push scenario on this PostgreSQL database (in a fresh schema, dropped after).
    #[arg(long, env = "TASKLANE_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Tasks in the push scenarios.
    #[arg(long)]
    tasks: Option<usize>,
    /// Tasks held in the scheduled-tasks scenario (default 1,000,000; 10,000 with --quick).
    #[arg(long)]
    held: Option<usize>,
    /// Run only these scenarios (comma-separated): bound, push, idle, rate, pull, held, queues.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Queues in the idle-cost scenario (default 10,000; 500 with --quick).
    #[arg(long)]
    queues: Option<usize>,
    /// The tasklane binary to measure (default: this one), to compare two builds in one run.
    #[arg(long)]
    serve_binary: Option<std::path::PathBuf>,
    /// Also write the rows as JSON to this file (for bench/peers/run.sh).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Bound,
    Push,
    Idle,
    Rate,
    Pull,
    Held,
    Queues,
}

/// The binary `ServerProcess` starts: `--serve-binary`, or this one.
static SERVE_BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Arrival times at the sink, by task id, and counts the bench can poll cheaply.
#[derive(Default)]
struct Sink {
    arrivals: Mutex<HashMap<String, Vec<Instant>>>,
    /// Tasks that arrived at least once.
    distinct: std::sync::atomic::AtomicUsize,
    /// Arrivals of a task that had arrived before.
    repeats: std::sync::atomic::AtomicUsize,
}

async fn start_sink() -> anyhow::Result<(SocketAddr, Arc<Sink>)> {
    let sink = Arc::new(Sink::default());
    let s = sink.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let s = s.clone();
        async move {
            let at = Instant::now();
            if let Some(name) = headers.get("x-cloudtasks-taskname").and_then(|v| v.to_str().ok())
                && let Ok(mut arrivals) = s.arrivals.lock()
            {
                let times = arrivals.entry(name.to_string()).or_default();
                let counter = if times.is_empty() { &s.distinct } else { &s.repeats };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                times.push(at);
            }
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind the sink")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, sink))
}

#[derive(serde::Serialize)]
struct Row {
    scenario: String,
    tasks: usize,
    seconds: f64,
    throughput: f64,
    latency: Option<[f64; 3]>,
    /// tasklane's CPU seconds and peak resident MB over the scenario.
    server: Option<Usage>,
    note: String,
}

impl Row {
    /// A row whose figure is `tasks` over `seconds`, with no latency columns.
    fn rate(scenario: String, tasks: usize, seconds: f64, server: Option<Usage>, note: String) -> Row {
        Row { scenario, tasks, seconds, throughput: tasks as f64 / seconds, latency: None, server, note }
    }
}

#[derive(Clone, Copy, serde::Serialize)]
struct Usage {
    cpu_seconds: f64,
    peak_rss_mb: f64,
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A `Vm…:` line of a process's status, in MB: `VmHWM` (peak resident) or `VmRSS` (now).
fn memory_mb(pid: &str, field: &str) -> f64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0.0 };
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// tasklane under test: `tasklane serve` in a child process on a free loopback port.
struct ServerProcess {
    child: tokio::process::Child,
    pid: String,
    api: String,
}

impl ServerProcess {
    async fn start(args: &[String]) -> anyhow::Result<ServerProcess> {
        use tokio::io::AsyncBufReadExt;
        let exe = match SERVE_BINARY.get() {
            Some(path) => path.clone(),
            None => std::env::current_exe().context("find the tasklane binary")?,
        };
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start tasklane serve")?;
        let stdout = child.stdout.take().context("tasklane's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("tasklane did not start within 60 s")??
            .context("tasklane exited before listening")?;
        let addr = first
            .strip_prefix("tasklane listening on http://")
            .with_context(|| format!("unexpected line {first:?}"))?;
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let pid = child.id().context("tasklane's pid")?.to_string();
        Ok(ServerProcess { child, pid, api: addr.to_string() })
    }

    /// Start measuring a scenario: the kernel's peak-memory mark is reset to now.
    fn mark(&self) -> f64 {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5");
        cpu_seconds(&self.pid)
    }

    fn usage(&self, cpu_mark: f64) -> Usage {
        Usage { cpu_seconds: cpu_seconds(&self.pid) - cpu_mark, peak_rss_mb: memory_mb(&self.pid, "VmHWM:") }
    }

    /// Stop as an operator would (SIGTERM) and wait.
    async fn stop(mut self) -> anyhow::Result<()> {
        let status = tokio::process::Command::new("kill").args(["-TERM", &self.pid]).status().await?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.pid);
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.context("tasklane did not stop")??;
        Ok(())
    }

    /// Crash it (SIGKILL) and wait.
    async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("kill -9 tasklane")
    }
}

fn percentiles(mut ms: Vec<f64>) -> Option<[f64; 3]> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    Some([at(0.50), at(0.95), at(0.99)])
}

#[derive(Clone)]
struct Bench {
    api: String,
    client: reqwest::Client,
    sink_url: String,
    sink: Arc<Sink>,
}

impl Bench {
    /// POST to `/{version}/{path}` and return the JSON answer.
    async fn request(&self, version: &str, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .client
            .post(format!("{}/{version}/{path}", self.api))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("POST /{version}/{path}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST /{version}/{path}: {status} {text}");
        }
        serde_json::from_str(&text).context("a JSON answer")
    }

    /// A Cloud Tasks REST call.
    async fn post_json(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.request("v2", path, body).await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        self.post_json(path, body).await.map(drop)
    }

    /// A tasklane `/v1` call.
    async fn v1(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.request("v1", path, body).await
    }

    async fn queue(&self, id: &str, rate: f64, paused: bool) -> anyhow::Result<()> {
        let name = format!("{LOCATION}/queues/{id}");
        self.post(&format!("{LOCATION}/queues"), json!({"name": name, "rateLimits": {"maxDispatchesPerSecond": rate}}))
            .await?;
        if paused {
            self.post(&format!("{name}:pause"), json!({})).await?;
        }
        Ok(())
    }

    /// Create `ids` (task id, queue id) with `concurrency` requests in flight; returns when each was acknowledged.
    async fn create(&self, ids: Vec<(String, String)>, concurrency: usize) -> anyhow::Result<()> {
        let ids = Arc::new(Mutex::new(ids));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let ids = ids.clone();
            let (client, api, url) = (self.client.clone(), self.api.clone(), self.sink_url.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let next = ids.lock().ok().and_then(|mut v| v.pop());
                    let Some((task, queue)) = next else { return Ok::<(), anyhow::Error>(()) };
                    let body = json!({"task": {"name": format!("{LOCATION}/queues/{queue}/tasks/{task}"), "httpRequest": {"url": url}}});
                    let resp = client
                        .post(format!("{api}/v2/{LOCATION}/queues/{queue}/tasks"))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await?;
                    if !resp.status().is_success() {
                        bail!("create {task}: {}", resp.status());
                    }
                }
            }));
        }
        for w in workers {
            w.await.context("create worker")??;
        }
        Ok(())
    }

    /// Wait until every id reached the sink; fail if any came twice or some never came.
    /// Polls the sink's counters (`base` = distinct arrivals before these ids were sent),
    /// then checks each id once at the end.
    async fn wait_delivered(&self, ids: &[String], base: usize, timeout: Duration) -> anyhow::Result<Instant> {
        use std::sync::atomic::Ordering::Relaxed;
        let start = Instant::now();
        let repeats_before = self.sink.repeats.load(Relaxed);
        while self.sink.distinct.load(Relaxed) < base + ids.len() {
            // A second arrival fails at once rather than after the wait.
            let repeats = self.sink.repeats.load(Relaxed) - repeats_before;
            anyhow::ensure!(repeats == 0, "{repeats} tasks arrived more than once");
            if start.elapsed() > timeout {
                bail!(
                    "only {} of {} tasks were delivered within {timeout:?}",
                    self.sink.distinct.load(Relaxed) - base,
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let arrivals = self.sink.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let missing = ids.iter().filter(|id| !arrivals.contains_key(*id)).count();
        let twice = ids.iter().filter(|id| arrivals.get(*id).is_some_and(|t| t.len() > 1)).count();
        if missing > 0 || twice > 0 || self.sink.repeats.load(Relaxed) != repeats_before {
            bail!("{missing} tasks never arrived and {twice} arrived more than once");
        }
        ids.iter().filter_map(|id| arrivals.get(id).and_then(|t| t.first())).max().copied().context("no arrivals")
    }

    /// Wait until `queues` hold no tasks (every outcome recorded); when that was seen.
    async fn wait_recorded(&self, queues: &[String], timeout: Duration) -> anyhow::Result<Instant> {
        let start = Instant::now();
        let mut left: Vec<&String> = queues.iter().collect();
        while !left.is_empty() {
            if start.elapsed() > timeout {
                bail!("{} queues still hold tasks after {timeout:?}", left.len());
            }
            let mut still = Vec::new();
            for q in left {
                let path = format!("{}/v2/{LOCATION}/queues/{q}/tasks?pageSize=1", self.api);
                let text = self.client.get(&path).send().await?.error_for_status()?.text().await?;
                let page: serde_json::Value = serde_json::from_str(&text).context("a JSON answer")?;
                if page["tasks"].as_array().is_some_and(|t| !t.is_empty()) {
                    still.push(q);
                }
            }
            left = still;
            if !left.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Instant::now())
    }

    /// How many tasks `queue` holds, paging through ListTasks.
    async fn count_tasks(&self, queue: &str) -> anyhow::Result<usize> {
        let mut count = 0;
        let mut token = String::new();
        loop {
            let path = format!("{}/v2/{LOCATION}/queues/{queue}/tasks?pageSize=1000&pageToken={token}", self.api);
            let text = self.client.get(&path).send().await?.error_for_status()?.text().await?;
            let page: serde_json::Value = serde_json::from_str(&text).context("a JSON answer")?;
            let tasks = page["tasks"].as_array().map_or(0, Vec::len);
            count += tasks;
            token = page["nextPageToken"].as_str().unwrap_or_default().to_string();
            if token.is_empty() || tasks == 0 {
                return Ok(count);
            }
        }
    }

    fn distinct(&self) -> usize {
        self.sink.distinct.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn arrival(&self, id: &str) -> Option<Instant> {
        self.sink.arrivals.lock().ok().and_then(|a| a.get(id).and_then(|t| t.first().copied()))
    }
}

/// Push: tasks created into paused queues, then every queue resumed; measures the drain.
/// `settle` gives a cluster node time to take the new queues before the clock starts.
async fn push(
    b: &Bench,
    server: &ServerProcess,
    label: &str,
    prefix: &str,
    n: usize,
    queues: usize,
    settle: Duration,
) -> anyhow::Result<Vec<Row>> {
    for q in 0..queues {
        b.queue(&format!("{prefix}-q{q}"), 500.0, true).await?;
    }
    tokio::time::sleep(settle).await;
    let ids: Vec<(String, String)> =
        (0..n).map(|i| (format!("{prefix}-{i}"), format!("{prefix}-q{}", i % queues))).collect();
    let names: Vec<String> = ids.iter().map(|(t, _)| t.clone()).collect();
    let base = b.distinct();
    let mark = server.mark();
    let created_at = Instant::now();
    b.create(ids, 64).await?;
    let create_secs = created_at.elapsed().as_secs_f64();
    let create_usage = server.usage(mark);
    let mark = server.mark();
    let start = Instant::now();
    let own_cpu = cpu_seconds("self");
    for q in 0..queues {
        b.post(&format!("{LOCATION}/queues/{prefix}-q{q}:resume"), json!({})).await?;
    }
    // At least 500 a second, however slow the machine: a stall fails in a minute, not ten.
    let deadline = Duration::from_secs(60).max(Duration::from_secs_f64(n as f64 / 500.0));
    let last = b.wait_delivered(&names, base, deadline).await?;
    let secs = last.duration_since(start).as_secs_f64();
    let queue_ids: Vec<String> = (0..queues).map(|q| format!("{prefix}-q{q}")).collect();
    let recorded = b.wait_recorded(&queue_ids, Duration::from_secs(60)).await?;
    let drain_usage = server.usage(mark);
    let sink_cpu = cpu_seconds("self") - own_cpu;
    let latency: Vec<f64> =
        names.iter().filter_map(|id| b.arrival(id).map(|t| t.duration_since(start).as_secs_f64() * 1000.0)).collect();
    Ok(vec![
        Row::rate(
            format!("create, one task per request ({label})"),
            n,
            create_secs,
            Some(create_usage),
            "64 concurrent HTTP clients".into(),
        ),
        Row {
            scenario: format!("HTTP push drain ({label})"),
            tasks: n,
            seconds: secs,
            throughput: n as f64 / secs,
            latency: percentiles(latency),
            server: Some(drain_usage),
            note: format!(
                "{queues} queues at 500/s; latency from resume to arrival; every outcome recorded {} ms after the last \
                 arrival; the sink used {sink_cpu:.1} s CPU",
                recorded.duration_since(last).as_millis()
            ),
        },
    ])
}

/// Idle queue: tasks created one at a time at a steady, low rate; create-acknowledged to arrival.
async fn idle_latency(b: &Bench, server: &ServerProcess, n: usize, per_second: f64) -> anyhow::Result<Row> {
    b.queue("idle", 500.0, false).await?;
    let mark = server.mark();
    let mut latencies = Vec::with_capacity(n);
    let gap = Duration::from_secs_f64(1.0 / per_second);
    let started = Instant::now();
    for i in 0..n {
        let id = format!("idle-{i}");
        let sent = Instant::now();
        b.post(
            &format!("{LOCATION}/queues/idle/tasks"),
            json!({"task": {"name": format!("{LOCATION}/queues/idle/tasks/{id}"), "httpRequest": {"url": b.sink_url}}}),
        )
        .await?;
        let arrived = loop {
            if let Some(t) = b.arrival(&id) {
                break t;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                bail!("idle task {id} not delivered within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(arrived.duration_since(sent).as_secs_f64() * 1000.0);
        let next = started + gap * (i as u32 + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    {
        let arrivals = b.sink.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let twice = (0..n).filter(|i| arrivals.get(&format!("idle-{i}")).is_some_and(|t| t.len() > 1)).count();
        anyhow::ensure!(twice == 0, "{twice} idle tasks arrived more than once");
    }
    Ok(Row {
        scenario: "idle queue latency, create to dispatch".into(),
        tasks: n,
        seconds: started.elapsed().as_secs_f64(),
        throughput: n as f64 / started.elapsed().as_secs_f64(),
        latency: percentiles(latencies),
        server: Some(server.usage(mark)),
        note: format!("{per_second}/s, one create at a time; from the create request to arrival"),
    })
}

/// How far a measured rate may be from its limit before the bench fails: the quiet-machine
/// figure is within 0.15% (BENCHMARKS.md); this leaves room for a loaded CI machine and the
/// two-second quick run, while a limiter that ignores bursts or drifts by a tick fails.
const RATE_TOLERANCE_PERCENT: f64 = 5.0;

/// Rate accuracy: a queue at `rate`/s drained for `secs` after its initial burst.
async fn rate_accuracy(b: &Bench, server: &ServerProcess, rate: f64, secs: u64) -> anyhow::Result<Row> {
    b.queue("rated", rate, true).await?;
    let mark = server.mark();
    let burst = ((rate / 5.0).floor() as usize).max(10);
    let n = burst + (rate as usize) * secs as usize + (rate as usize); // one extra second of work
    let ids: Vec<(String, String)> = (0..n).map(|i| (format!("rated-{i}"), "rated".to_string())).collect();
    b.create(ids, 32).await?;
    let start = Instant::now();
    b.post(&format!("{LOCATION}/queues/rated:resume"), json!({})).await?;
    tokio::time::sleep(Duration::from_secs(secs) + Duration::from_millis(1500)).await;
    let mut times: Vec<Instant> = {
        let arrivals = b.sink.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let twice = arrivals.iter().filter(|(k, t)| k.starts_with("rated-") && t.len() > 1).count();
        anyhow::ensure!(twice == 0, "{twice} rate-limited tasks arrived more than once");
        arrivals.iter().filter(|(k, _)| k.starts_with("rated-")).filter_map(|(_, t)| t.first().copied()).collect()
    };
    times.sort();
    if times.len() <= burst {
        bail!("only {} deliveries at {rate}/s", times.len());
    }
    // Measure from the end of the initial burst, over `secs` seconds.
    let from = times[burst - 1];
    let until = from + Duration::from_secs(secs);
    let count = times.iter().filter(|t| **t > from && **t <= until).count();
    let measured = count as f64 / secs as f64;
    let error = (measured - rate) / rate * 100.0;
    anyhow::ensure!(
        error.abs() <= RATE_TOLERANCE_PERCENT,
        "the queue ran at {measured:.1}/s against a limit of {rate}/s ({error:+.2}%, more than {RATE_TOLERANCE_PERCENT}% off)"
    );
    Ok(Row {
        scenario: format!("rate limit accuracy at {rate}/s"),
        tasks: count,
        seconds: secs as f64,
        throughput: measured,
        latency: None,
        server: Some(server.usage(mark)),
        note: format!(
            "{error:+.2}% off the limit over {secs} s after the burst of {burst}; started {:?} after resume",
            from.duration_since(start)
        ),
    })
}

/// Batched creates, then pull workers: `n` pull tasks created 1,000 per request, then
/// drained by 4 consumers that lease 100 and acknowledge 100 per call. Checks that every
/// task was leased and acknowledged exactly once.
async fn pull(b: &Bench, server: &ServerProcess, n: usize) -> anyhow::Result<Vec<Row>> {
    let name = format!("{LOCATION}/queues/pulled");
    b.v1("queues", json!({"name": name, "type": "pull"})).await?;
    let path = name.replace('/', "%2F");
    let mark = server.mark();
    let started = Instant::now();
    let batches: Vec<Vec<serde_json::Value>> = (0..n)
        .map(|i| json!({"name": format!("{name}/tasks/p-{i}"), "payload": format!("{i}")}))
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[serde_json::Value]>::to_vec)
        .collect();
    let mut creating = tokio::task::JoinSet::new();
    for batch in batches {
        let b = b.clone();
        let path = path.clone();
        creating.spawn(async move {
            let out = b.v1(&format!("queues/{path}/tasks"), json!({"tasks": batch})).await?;
            let failed = out["failed"].as_array().map_or(0, Vec::len);
            anyhow::ensure!(failed == 0, "{failed} creates failed: {}", out["failed"]);
            anyhow::Ok(())
        });
        // Two requests in flight at a time.
        if creating.len() >= 2 {
            creating.join_next().await.context("a create batch")???;
        }
    }
    while let Some(r) = creating.join_next().await {
        r??;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let create_usage = server.usage(mark);

    let mark = server.mark();
    let drained = Instant::now();
    let own_cpu = cpu_seconds("self");
    let acked = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let b = b.clone();
        let path = path.clone();
        let acked = acked.clone();
        consumers.spawn(async move {
            loop {
                let leased = b
                    .v1(&format!("queues/{path}/tasks:lease"), json!({"max_tasks": 100, "lease_duration": "600s"}))
                    .await?;
                let tasks = leased["tasks"].as_array().cloned().unwrap_or_default();
                if tasks.is_empty() {
                    return anyhow::Ok(());
                }
                let items: Vec<serde_json::Value> =
                    tasks.iter().map(|t| json!({"name": t["name"], "lease_id": t["lease_id"]})).collect();
                let out = b.v1(&format!("queues/{path}/tasks:acknowledge"), json!({"tasks": items})).await?;
                let refused = out["refused"].as_array().map_or(0, Vec::len);
                anyhow::ensure!(refused == 0, "{refused} acknowledgements were refused");
                let mut acked = acked.lock().map_err(|_| anyhow::anyhow!("lock"))?;
                for t in &tasks {
                    let id = t["id"].as_str().unwrap_or("").to_string();
                    anyhow::ensure!(acked.insert(id.clone()), "task {id} was leased and acknowledged twice");
                }
            }
        });
    }
    while let Some(r) = consumers.join_next().await {
        r??;
    }
    let drain_secs = drained.elapsed().as_secs_f64();
    let drain_usage = server.usage(mark);
    let consumers_cpu = cpu_seconds("self") - own_cpu;
    let done = acked.lock().map_err(|_| anyhow::anyhow!("lock"))?.len();
    if done != n {
        bail!("pull: {done} of {n} tasks were acknowledged");
    }
    Ok(vec![
        Row::rate(
            "create, 1,000 pull tasks per request (embedded)".into(),
            n,
            create_secs,
            Some(create_usage),
            "2 requests in flight".into(),
        ),
        Row::rate(
            "pull: lease 100 + acknowledge 100 per call (embedded)".into(),
            n,
            drain_secs,
            Some(drain_usage),
            format!("4 consumers, which used {consumers_cpu:.1} s CPU; every task acknowledged once"),
        ),
    ])
}

/// The bound under every push figure: the same HTTP client settings as tasklane's
/// dispatcher sending `n` requests straight to the sink, `concurrency` at a time. No
/// tasklane, no store: what this machine's loopback HTTP costs on its own.
async fn loopback_bound(b: &Bench, n: usize, concurrency: usize) -> anyhow::Result<Row> {
    let client = tasklane_server::dispatch::http_client().map_err(anyhow::Error::msg)?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, next) = (client.clone(), b.sink_url.clone(), next.clone());
        senders.spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let resp = client.post(&url).send().await?;
                anyhow::ensure!(resp.status().is_success(), "the sink answered {}", resp.status());
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = senders.join_next().await {
        r??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Row::rate(
        "bound: loopback HTTP round trips, no tasklane".into(),
        n,
        secs,
        None,
        format!("{concurrency} in flight from tasklane's HTTP client settings to the sink"),
    ))
}

/// `n` tasks scheduled an hour ahead, held; then tasklane is killed (`kill -9`) and
/// started again, and the time from starting it to the first dispatch of a task that fell
/// due while it was down is measured.
async fn held(b: &mut Bench, dir: &std::path::Path, n: usize) -> anyhow::Result<Vec<Row>> {
    let data = dir.join("held");
    let args = vec!["--data-dir".to_string(), data.display().to_string()];
    let server = ServerProcess::start(&args).await?;
    b.api = format!("http://{}", server.api);
    b.queue("held", 500.0, false).await?;
    b.queue("wake", 500.0, false).await?;
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let later = later.format(&time::format_description::well_known::Rfc3339)?;
    let mark = server.mark();
    let started = Instant::now();
    let batches: Vec<std::ops::Range<usize>> = (0..n).step_by(100).map(|i| i..(i + 100).min(n)).collect();
    let batches = Arc::new(Mutex::new(batches));
    let mut creating = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (b, batches, later) = (b.clone(), batches.clone(), later.clone());
        creating.spawn(async move {
            loop {
                let Some(range) = batches.lock().ok().and_then(|mut v| v.pop()) else { return anyhow::Ok(()) };
                let size = range.len();
                let requests: Vec<serde_json::Value> = range
                    .map(|i| {
                        json!({"parent": format!("{LOCATION}/queues/held"),
                                "task": {"name": format!("{LOCATION}/queues/held/tasks/h-{i}"),
                                "httpRequest": {"url": b.sink_url}, "scheduleTime": later}})
                    })
                    .collect();
                let op = b
                    .post_json(&format!("{LOCATION}/queues/held/tasks:batchCreate"), json!({"requests": requests}))
                    .await?;
                let created = op["response"]["tasks"].as_array().map_or(0, Vec::len);
                anyhow::ensure!(
                    created == size && op["metadata"].get("failedRequests").is_none(),
                    "a batch created {created} of {size}: {}",
                    op["metadata"]
                );
            }
        });
    }
    while let Some(r) = creating.join_next().await {
        r??;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let create_usage = server.usage(mark);
    let rss_held = memory_mb(&server.pid, "VmRSS:");

    // One task falls due while tasklane is down; the clock runs from the restart to its arrival.
    let due = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let due = due.format(&time::format_description::well_known::Rfc3339)?;
    let marker = "wake-1";
    b.post(
        &format!("{LOCATION}/queues/wake/tasks"),
        json!({"task": {"name": format!("{LOCATION}/queues/wake/tasks/{marker}"),
                "httpRequest": {"url": b.sink_url}, "scheduleTime": due}}),
    )
    .await?;
    server.kill().await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    anyhow::ensure!(b.arrival(marker).is_none(), "the marker was delivered before the kill");
    let restarted = Instant::now();
    let server = ServerProcess::start(&args).await?;
    let mark = server.mark();
    b.api = format!("http://{}", server.api);
    let first = loop {
        if let Some(t) = b.arrival(marker) {
            break t;
        }
        anyhow::ensure!(restarted.elapsed() < Duration::from_secs(120), "no dispatch within 120 s of the restart");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let to_first = first.duration_since(restarted).as_secs_f64();
    let after = server.usage(mark);
    let rss_after = memory_mb(&server.pid, "VmRSS:");
    // None of the held tasks may have been dispatched.
    let early =
        b.sink.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?.keys().filter(|k| k.starts_with("h-")).count();
    anyhow::ensure!(early == 0, "{early} held tasks were dispatched before their time");
    // And every one of them is still there after the kill.
    let kept = b.count_tasks("held").await?;
    anyhow::ensure!(kept == n, "{kept} of {n} held tasks survived the kill -9");
    server.stop().await?;
    Ok(vec![
        Row::rate(
            format!("create {n} scheduled tasks, 100 per BatchCreateTasks"),
            n,
            create_secs,
            Some(create_usage),
            format!("8 requests in flight; {rss_held:.0} MB resident with all of them held"),
        ),
        Row {
            scenario: format!("restart (kill -9) to first dispatch, {n} held"),
            tasks: 1,
            seconds: to_first,
            throughput: 0.0,
            latency: None,
            server: Some(after),
            note: format!(
                "{:.0} ms from starting the process to the arrival; {rss_after:.0} MB resident then",
                to_first * 1000.0
            ),
        },
    ])
}

/// Idle cost: `n` queues, each holding one task due in an hour, and nothing else to do; the
/// server's CPU over `window`. An idle queue should cost nothing, however many there are.
async fn idle_queues(b: &Bench, dir: &std::path::Path, n: usize, window: Duration) -> anyhow::Result<Row> {
    let data = dir.join("queues");
    let server = ServerProcess::start(&["--data-dir".to_string(), data.display().to_string()]).await?;
    let b = Bench { api: format!("http://{}", server.api), ..b.clone() };
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let later = later.format(&time::format_description::well_known::Rfc3339)?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut creating = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (b, next, later) = (b.clone(), next.clone(), later.clone());
        creating.spawn(async move {
            loop {
                let q = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if q >= n {
                    return anyhow::Ok(());
                }
                b.queue(&format!("idle-{q}"), 500.0, false).await?;
                let task = json!({"task": {"name": format!("{LOCATION}/queues/idle-{q}/tasks/later"),
                    "httpRequest": {"url": b.sink_url}, "scheduleTime": later}});
                b.post(&format!("{LOCATION}/queues/idle-{q}/tasks"), task).await?;
            }
        });
    }
    while let Some(r) = creating.join_next().await {
        r??;
    }
    // Let the loops settle after the creates, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = server.mark();
    tokio::time::sleep(window).await;
    let usage = server.usage(mark);
    let rss = memory_mb(&server.pid, "VmRSS:");
    let early = b.sink.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?.keys().filter(|k| *k == "later").count();
    anyhow::ensure!(early == 0, "{early} tasks due in an hour were dispatched");
    server.stop().await?;
    Ok(Row {
        scenario: format!("idle cost, {n} queues each holding a task due in 1 h"),
        tasks: n,
        seconds: window.as_secs_f64(),
        throughput: 0.0,
        latency: None,
        server: Some(usage),
        note: format!(
            "{:.2}% of one core while idle; {rss:.0} MB resident",
            usage.cpu_seconds / window.as_secs_f64() * 100.0
        ),
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.serve_binary {
        let _ = SERVE_BINARY.set(path.clone());
    }
    let (sink_addr, sink) = start_sink().await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().context("client")?;
    let n = args.tasks.unwrap_or(if args.quick { 2_000 } else { 100_000 });
    let held_n = args.held.unwrap_or(if args.quick { 10_000 } else { 1_000_000 });
    let (idle_n, rate_secs) = if args.quick { (50, 2) } else { (500, 10) };
    let runs = |s: Scenario| args.only.is_empty() || args.only.contains(&s);
    let mut rows = Vec::new();

    let dir = std::env::temp_dir().join(format!("tasklane-bench-{}", std::process::id()));
    let mut bench =
        Bench { api: String::new(), client: client.clone(), sink_url: format!("http://{sink_addr}/"), sink };
    let result = async {
        if runs(Scenario::Bound) {
            eprintln!("bench: loopback HTTP bound, {n} requests");
            rows.push(loopback_bound(&bench, n, 256).await?);
        }
        if [Scenario::Push, Scenario::Idle, Scenario::Rate, Scenario::Pull].into_iter().any(runs) {
            let server = ServerProcess::start(&["--data-dir".into(), dir.join("main").display().to_string()]).await?;
            bench.api = format!("http://{}", server.api);
            if runs(Scenario::Push) {
                eprintln!("bench: push on the embedded store, {n} tasks");
                rows.extend(push(&bench, &server, "embedded", "e", n, 50, Duration::ZERO).await?);
            }
            if runs(Scenario::Idle) {
                eprintln!("bench: idle-queue latency");
                rows.push(idle_latency(&bench, &server, idle_n, 50.0).await?);
            }
            if runs(Scenario::Rate) {
                eprintln!("bench: rate-limit accuracy");
                rows.push(rate_accuracy(&bench, &server, 200.0, rate_secs).await?);
            }
            if runs(Scenario::Pull) {
                eprintln!("bench: batched creates and pull workers, {n} tasks");
                rows.extend(pull(&bench, &server, n).await?);
            }
            server.stop().await?;
        }
        if runs(Scenario::Queues) {
            let queues_n = args.queues.unwrap_or(if args.quick { 500 } else { 10_000 });
            let window = if args.quick { Duration::from_secs(2) } else { Duration::from_secs(20) };
            eprintln!("bench: idle cost of {queues_n} queues");
            rows.push(idle_queues(&bench, &dir, queues_n, window).await?);
        }
        if runs(Scenario::Held) {
            eprintln!("bench: {held_n} scheduled tasks held, then kill -9 and restart");
            rows.extend(held(&mut bench, &dir, held_n).await?);
        }
        if let Some(url) = args.database_url.as_ref().filter(|_| runs(Scenario::Push)) {
            let schema = tasklane_store::scratch_schema("bench");
            let pg = tasklane_store::PgStore::connect(url, Some(&schema)).await.context("prepare the bench schema")?;
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
            let result = async {
                let server = ServerProcess::start(&["--database-url".into(), url]).await?;
                bench.api = format!("http://{}", server.api);
                eprintln!("bench: push on PostgreSQL, {n} tasks");
                // The node takes the new queues at its next keeper tick (every second).
                let r = push(&bench, &server, "postgres", "p", n, 50, Duration::from_millis(1500)).await;
                server.stop().await?;
                r
            }
            .await;
            let _ = pg.drop_schema(&schema).await;
            rows.extend(result?);
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;

    println!(
        "{:<56} {:>8} {:>9} {:>10} {:>28} {:>8} {:>8}  notes",
        "scenario", "tasks", "seconds", "tasks/s", "latency ms p50 / p95 / p99", "cpu s", "peak MB"
    );
    for r in &rows {
        let latency = r.latency.map_or("-".to_string(), |[a, b, c]| format!("{a:.2} / {b:.2} / {c:.2}"));
        let (cpu, peak) = r
            .server
            .map_or(("-".into(), "-".into()), |u| (format!("{:.1}", u.cpu_seconds), format!("{:.0}", u.peak_rss_mb)));
        let throughput = if r.throughput > 0.0 { format!("{:.0}", r.throughput) } else { "-".into() };
        println!(
            "{:<56} {:>8} {:>9.2} {:>10} {:>28} {:>8} {:>8}  {}",
            r.scenario, r.tasks, r.seconds, throughput, latency, cpu, peak, r.note
        );
    }
    println!("cpu s and peak MB are tasklane's own (the serve process), over each scenario");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if args.quick && args.only.is_empty() {
        println!(
            "quick mode: checked that every pushed, pulled, idle and rate-limited task arrived exactly once, the rate \
             held within {RATE_TOLERANCE_PERCENT}%, and every held task survived the kill -9 undispatched; timings are \
             not meaningful at these counts"
        );
    }
    Ok(())
}

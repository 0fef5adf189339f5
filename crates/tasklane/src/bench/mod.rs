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

mod scenarios;
use scenarios::{RATE_TOLERANCE_PERCENT, held, idle_latency, idle_queues, loopback_bound, pull, push, rate_accuracy};

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

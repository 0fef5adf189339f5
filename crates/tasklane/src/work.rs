//! `tasklane work --queue Q -- COMMAND [ARGS…]`: lease tasks from a pull queue and run
//! COMMAND once per task, with the payload on stdin and the task in the environment.
//!
//! Exit 0 acknowledges the task; any other exit fails it with the end of stderr as the reason
//! (an attempt, under the queue's backoff and give-up rules). The lease is renewed while the
//! command runs; `--timeout` kills a command that runs too long. A line `::progress PERCENT
//! MESSAGE` on stdout reports the progress of the task's job. On SIGTERM or Ctrl-C the worker
//! stops leasing, lets running commands finish for `--grace`, then kills them and gives their
//! tasks back.
//!
//! An outcome that cannot reach the server (a restart, a network blip) is sent again with
//! backoff until the task's lease ends, so finished work is not run twice. On Linux each
//! command runs in a process group of its own under `tasklane supervise`, which dies with the
//! worker (`PR_SET_PDEATHSIG`) and takes the group with it; a timeout kills the whole group.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, watch};

use crate::client::{ClientArgs, parse_cli_duration};

/// The end of stderr kept as a failure's reason.
const REASON_TAIL: usize = 2048;

#[derive(Args)]
pub struct WorkArgs {
    #[arg(long)]
    queue: String,
    /// Commands run at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Only tasks with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// How long a lease lasts before it is renewed (the task returns to the queue if this worker dies).
    #[arg(long, default_value = "60s", value_parser = parse_cli_duration)]
    lease: Duration,
    /// Kill a command that runs longer, and fail its task.
    #[arg(long, default_value = "1h", value_parser = parse_cli_duration)]
    timeout: Duration,
    /// On SIGTERM, how long running commands may finish before they are killed and their tasks given back.
    #[arg(long, default_value = "30s", value_parser = parse_cli_duration)]
    grace: Duration,
    /// Exit once the queue has nothing due and no command runs.
    #[arg(long)]
    drain: bool,
    #[command(flatten)]
    client: ClientArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Default)]
struct Tally {
    succeeded: AtomicU64,
    failed: AtomicU64,
    given_back: AtomicU64,
}

struct Worker {
    client: ClientArgs,
    queue_path: String,
    command: Vec<String>,
    lease: Duration,
    timeout: Duration,
    tally: Tally,
}

enum Outcome {
    Exited(std::process::ExitStatus, String),
    /// The command could not be run at all.
    Broken(String),
    TimedOut,
    Stopped,
    LeaseLost,
}

impl Worker {
    async fn call(&self, verb: &str, body: Value) -> anyhow::Result<Value> {
        self.client.call_url(Method::POST, &format!("{}/tasks:{verb}", self.queue_path), Some(body)).await
    }

    /// Run one leased task; its lease was asked for at `leased_at`.
    async fn run_task(self: Arc<Self>, task: Value, leased_at: Instant, mut stop: watch::Receiver<bool>) {
        let name = task["name"].as_str().unwrap_or("").to_string();
        let item = json!({"name": name, "lease_id": task["lease_id"]});
        let mut lease_ends = leased_at + self.lease;
        let outcome = match self.execute(&task, &item, &mut lease_ends, &mut stop).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Broken(format!("could not run the command: {e:#}")),
        };
        let fail = |reason: String| json!({"tasks": [{"name": name, "lease_id": task["lease_id"], "reason": reason}]});
        let (verb, body) = match outcome {
            Outcome::Exited(status, _) if status.success() => {
                self.tally.succeeded.fetch_add(1, Ordering::Relaxed);
                ("acknowledge", json!({"tasks": [item]}))
            }
            Outcome::Exited(status, tail) => {
                self.tally.failed.fetch_add(1, Ordering::Relaxed);
                ("fail", fail(format!("the command {}: {tail}", exit_text(status))))
            }
            Outcome::Broken(reason) => {
                self.tally.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("tasklane work: {reason}");
                ("fail", fail(reason))
            }
            Outcome::TimedOut => {
                self.tally.failed.fetch_add(1, Ordering::Relaxed);
                ("fail", fail(format!("the command ran longer than {:?} and was killed", self.timeout)))
            }
            Outcome::Stopped => {
                self.tally.given_back.fetch_add(1, Ordering::Relaxed);
                ("cancelLease", json!({"tasks": [item]}))
            }
            Outcome::LeaseLost => {
                eprintln!("tasklane work: the lease on {name} was lost; the command was stopped");
                return;
            }
        };
        if let Err(e) = self.report(verb, body, &name, lease_ends).await {
            eprintln!("tasklane work: {verb} {name}: {e:#}");
        }
    }

    /// Send a task's outcome; while the server cannot be reached (or answers that it is
    /// unavailable), send it again with backoff until the lease ends, after which the task
    /// is another worker's to run.
    async fn report(&self, verb: &str, body: Value, name: &str, lease_ends: Instant) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match self.call(verb, body.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if !worth_retrying(&error) {
                return Err(error);
            }
            if Instant::now() + backoff >= lease_ends {
                return Err(error.context("gave up: the lease ended before the server could be reached"));
            }
            eprintln!("tasklane work: {verb} {name}: {error:#}; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn execute(
        &self,
        task: &Value,
        item: &Value,
        lease_ends: &mut Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Outcome> {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(task["payload_base64"].as_str().unwrap_or(""))
            .context("decode the payload")?;
        let name = task["name"].as_str().unwrap_or("");
        let mut cmd = supervised(&self.command)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(env) = task["env"].as_object() {
            for (k, v) in env {
                cmd.env(k, v.as_str().unwrap_or(""));
            }
        }
        cmd.env("TASKLANE_TASK_ID", task["id"].as_str().unwrap_or(""))
            .env("TASKLANE_TASK_NAME", name)
            .env("TASKLANE_QUEUE", name.split("/tasks/").next().unwrap_or(""))
            .env("TASKLANE_ATTEMPT", task["attempt"].to_string())
            .env("TASKLANE_JOB_ID", task["job_id"].as_str().unwrap_or(""))
            .env("TASKLANE_ENDPOINT", &self.client.endpoint);
        let mut child = Group::spawn(&mut cmd).with_context(|| format!("start {}", self.command[0]))?;
        if let Some(mut stdin) = child.stdin() {
            tokio::spawn(async move {
                let _ = stdin.write_all(&payload).await;
            });
        }
        // stdout: progress lines for the job, the rest passed through.
        let stdout = child.stdout().context("the command's stdout")?;
        let job = task["job_id"].as_str().map(String::from);
        let token = task["job_token"].as_str().map(String::from);
        let client = self.client.clone();
        let lines = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match (progress_line(&line), &job, &token) {
                    (Some((percent, message)), Some(job), Some(token)) => {
                        let body = json!({"percent": percent, "message": message, "allow_decrease": true});
                        if let Err(e) = report_progress(&client, job, token, body).await {
                            eprintln!("tasklane work: progress of {job}: {e:#}");
                        }
                    }
                    (Some(_), _, _) => {}
                    _ => println!("{line}"),
                }
            }
        });
        // stderr: passed through, the tail kept as a failure's reason.
        let mut stderr = child.stderr().context("the command's stderr")?;
        let tail = tokio::spawn(async move {
            let mut kept: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let _ = std::io::Write::write_all(&mut std::io::stderr(), &buf[..n]);
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > REASON_TAIL {
                    kept.drain(..kept.len() - REASON_TAIL);
                }
            }
            String::from_utf8_lossy(&kept).trim().to_string()
        });
        let renew_every = self.lease / 3;
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let outcome = loop {
            tokio::select! {
                status = child.wait() => {
                    let status = status.context("wait for the command")?;
                    let _ = lines.await;
                    break Outcome::Exited(status, tail.await.unwrap_or_default());
                }
                _ = &mut deadline => {
                    child.kill().await;
                    break Outcome::TimedOut;
                }
                _ = tokio::time::sleep(renew_every) => {
                    let body = json!({"tasks": [item], "lease_duration": format!("{}s", self.lease.as_secs())});
                    // The lease runs from when the renewal was asked for.
                    let asked = Instant::now();
                    match self.call("renew", body).await {
                        Ok(_) => *lease_ends = asked + self.lease,
                        Err(e) if e.to_string().contains("no longer held") => {
                            child.kill().await;
                            break Outcome::LeaseLost;
                        }
                        Err(e) => eprintln!("tasklane work: renew the lease on {name}: {e:#}"),
                    }
                }
                _ = stopped(stop) => {
                    child.kill().await;
                    break Outcome::Stopped;
                }
            }
        };
        Ok(outcome)
    }
}

/// Whether a failed call may succeed if sent again: the server could not be reached, or said
/// it is unavailable or overloaded. A refusal (a lost lease, say) is final.
fn worth_retrying(error: &anyhow::Error) -> bool {
    match error.downcast_ref::<crate::client::ApiFailure>() {
        Some(failure) => {
            matches!(failure.status.as_str(), "UNAVAILABLE" | "RESOURCE_EXHAUSTED" | "DEADLINE_EXCEEDED" | "ERROR")
        }
        None => true,
    }
}

/// How a command ended, for a failure's reason. Under `tasklane supervise` a command killed
/// by signal N ends with status 128 + N, as in a shell.
fn exit_text(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) if (129..=192).contains(&code) => format!("was killed by signal {}", code - 128),
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    }
}

/// The command to run for a task: on Linux under `tasklane supervise`, in a process group of
/// its own; elsewhere as it is.
fn supervised(command: &[String]) -> anyhow::Result<tokio::process::Command> {
    #[cfg(target_os = "linux")]
    {
        let me = std::env::current_exe().context("find the tasklane binary")?;
        let mut cmd = tokio::process::Command::new(me);
        cmd.arg("supervise").arg(std::process::id().to_string()).arg("--").args(command).process_group(0);
        Ok(cmd)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..]);
        Ok(cmd)
    }
}

/// A running command and, on Linux, its process group: killing it kills every process of the
/// group, and so does dropping it before the command was waited for.
struct Group {
    child: tokio::process::Child,
    /// The group's id while it may still have members; `None` once the command was waited for
    /// (the id may then be reused).
    pgid: Option<u32>,
}

impl Group {
    fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<Group> {
        let child = cmd.kill_on_drop(true).spawn()?;
        let pgid = if cfg!(target_os = "linux") { child.id() } else { None };
        Ok(Group { child, pgid })
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let status = self.child.wait().await;
        self.pgid = None;
        status
    }

    async fn kill(&mut self) {
        self.kill_group();
        let _ = self.child.kill().await;
        self.pgid = None;
    }

    fn kill_group(&self) {
        #[cfg(target_os = "linux")]
        if let Some(pgid) = self.pgid.and_then(|id| rustix::process::Pid::from_raw(id as i32)) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }

    fn stdin(&mut self) -> Option<tokio::process::ChildStdin> {
        self.child.stdin.take()
    }

    fn stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }

    fn stderr(&mut self) -> Option<tokio::process::ChildStderr> {
        self.child.stderr.take()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// `tasklane supervise PARENT -- COMMAND…`: run COMMAND for `tasklane work` (process PARENT),
/// and when that worker dies, however it dies, kill COMMAND's whole process group. It exits
/// as COMMAND did (128 + N if a signal N ended it).
#[derive(Args)]
pub struct SuperviseArgs {
    parent: u32,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn supervise(a: SuperviseArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tasklane supervise: start the async runtime: {e}");
            return ExitCode::from(126);
        }
    };
    runtime.block_on(async {
        // SIGTERM (handled below) when the worker goes; asked before checking it is still
        // there, so a worker that died in between is seen one way or the other.
        #[cfg(unix)]
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tasklane supervise: handle SIGTERM: {e}");
                return ExitCode::from(126);
            }
        };
        #[cfg(target_os = "linux")]
        {
            use rustix::process::{Signal, getppid, set_parent_process_death_signal};
            if let Err(e) = set_parent_process_death_signal(Some(Signal::TERM)) {
                eprintln!("tasklane supervise: ask to be told when the worker dies: {e}");
                return ExitCode::from(126);
            }
            if getppid().map(|p| p.as_raw_nonzero().get()) != Some(a.parent as i32) {
                return ExitCode::from(126); // the worker is gone already: run nothing
            }
        }
        let mut child = match tokio::process::Command::new(&a.command[0]).args(&a.command[1..]).spawn() {
            Ok(child) => child,
            Err(e) => {
                eprintln!("tasklane work: could not run the command: start {}: {e}", a.command[0]);
                return ExitCode::from(127);
            }
        };
        #[cfg(unix)]
        let worker_gone = term.recv();
        #[cfg(not(unix))]
        let worker_gone = std::future::pending::<Option<()>>();
        tokio::select! {
            status = child.wait() => match status {
                Ok(status) => ExitCode::from(exit_code(status)),
                Err(_) => ExitCode::from(126),
            },
            _ = worker_gone => {
                #[cfg(target_os = "linux")]
                let _ = rustix::process::kill_process_group(rustix::process::getpgrp(), rustix::process::Signal::KILL);
                let _ = child.kill().await;
                ExitCode::from(137)
            }
        }
    })
}

/// A command's status as one exit code, as a shell gives it: 128 + N after signal N.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return (128 + signal).clamp(0, 255) as u8;
    }
    status.code().map_or(1, |c| c.clamp(0, 255) as u8)
}

/// Resolves once `stop` is set.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        let set = *stop.borrow_and_update();
        if set {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// `::progress 40 rendering frames` → (40.0, "rendering frames").
pub fn progress_line(line: &str) -> Option<(f64, String)> {
    let rest = line.strip_prefix("::progress ")?.trim();
    let (percent, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let percent: f64 = percent.trim_end_matches('%').parse().ok()?;
    Some((percent, message.trim().to_string()))
}

async fn report_progress(client: &ClientArgs, job: &str, token: &str, body: Value) -> anyhow::Result<()> {
    let url = format!("{}/v1/jobs/{job}/progress", client.endpoint.trim_end_matches('/'));
    let response = crate::client::http_client()?
        .post(url)
        .header("content-type", "application/json")
        .header("x-tasklane-job-token", token)
        .body(body.to_string())
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("HTTP {}: {}", response.status(), response.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Resolves once SIGTERM or Ctrl-C arrives.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn run(a: WorkArgs) -> anyhow::Result<()> {
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if a.lease < Duration::from_secs(3) {
        bail!("--lease must be at least 3s, so it can be renewed while a command runs");
    }
    let worker = Arc::new(Worker {
        queue_path: format!("v1/queues/{}", a.client.queue_path(&a.queue).replace('/', "%2F")),
        client: a.client.clone(),
        command: a.command.clone(),
        lease: a.lease,
        timeout: a.timeout,
        tally: Tally::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(a.concurrency));
    let mut running = tokio::task::JoinSet::new();
    let stopping = stop_signal();
    tokio::pin!(stopping);
    loop {
        // Reap finished commands.
        while running.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = &mut stopping => break,
                _ = running.join_next() => continue,
            }
        }
        // Draining, a short poll tells sooner that nothing is left.
        let wait = if a.drain { "1s" } else { "20s" };
        let mut body = json!({"max_tasks": free, "lease_duration": format!("{}s", a.lease.as_secs()), "wait": wait});
        if let Some(tag) = &a.tag {
            body["tag"] = json!(tag);
        }
        let leased_at = Instant::now();
        let leased = tokio::select! {
            _ = &mut stopping => break,
            leased = worker.call("lease", body) => leased,
        };
        let tasks = match leased {
            Ok(v) => v["tasks"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                eprintln!("tasklane work: lease: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if tasks.is_empty() && a.drain && running.is_empty() {
            break;
        }
        for task in tasks {
            let permit = slots.clone().acquire_owned().await.context("the worker's slots")?;
            let worker = worker.clone();
            let stop = stop_rx.clone();
            running.spawn(async move {
                worker.run_task(task, leased_at, stop).await;
                drop(permit);
            });
        }
    }
    // Stop leasing; let running commands finish for the grace period, then give their tasks back.
    if !running.is_empty() {
        eprintln!("tasklane work: stopping; waiting up to {:?} for {} running command(s)", a.grace, running.len());
        let finished = tokio::time::timeout(a.grace, async { while running.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            stop_tx.send_replace(true);
            while running.join_next().await.is_some() {}
        }
    }
    let t = &worker.tally;
    eprintln!(
        "tasklane work: {} succeeded, {} failed, {} given back",
        t.succeeded.load(Ordering::Relaxed),
        t.failed.load(Ordering::Relaxed),
        t.given_back.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_recognised() {
        assert_eq!(progress_line("::progress 40 rendering frames"), Some((40.0, "rendering frames".into())));
        assert_eq!(progress_line("::progress 12.5%"), Some((12.5, String::new())));
        assert_eq!(progress_line("::progress soon"), None);
        assert_eq!(progress_line("progress 40"), None);
    }
}

//! `tasklane jobs …` and `tasklane dead-letters …`: clients of the `/v1` API.

use std::io::{IsTerminal, Write};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::{ClientArgs, Format};
use crate::output;

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Create a job of one task (`--url`) or a batch (`--tasks-file`).
    Create(CreateArgs),
    /// Show a job: status, counts, progress, result, callbacks.
    Get(JobRef),
    /// List jobs, newest last.
    List(ListArgs),
    /// Follow a job live with a progress bar; exit 0 if it succeeds, 1 if it fails, 2 if
    /// cancelled, 3 if there is no such job.
    Watch(JobRef),
    /// Cancel a job: its tasks that have not started never run.
    Cancel(JobRef),
}

#[derive(Args)]
pub struct JobRef {
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(long)]
    queue: String,
    /// The URL of a one-task job.
    #[arg(long, conflicts_with = "tasks_file", required_unless_present = "tasks_file")]
    url: Option<String>,
    #[arg(long, default_value = "POST")]
    method: String,
    /// The body of a one-task job.
    #[arg(long)]
    body: Option<String>,
    /// A JSON file holding a list of tasks (`[{"url": …, "body": …}, …]`) for a batch.
    #[arg(long)]
    tasks_file: Option<std::path::PathBuf>,
    /// `key=value`; repeat for more labels.
    #[arg(long = "label")]
    labels: Vec<String>,
    #[arg(long)]
    idempotency_key: Option<String>,
    #[arg(long)]
    callback_url: Option<String>,
    /// `finish_all` (default) or `fail_fast`.
    #[arg(long)]
    failure_policy: Option<String>,
    /// How long the job is kept after it finishes, for example `24h`.
    #[arg(long)]
    result_ttl: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    queue: Option<String>,
    /// `key=value`.
    #[arg(long)]
    label: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    client: ClientArgs,
}

fn label_pair(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => bail!("label {s:?} must be key=value"),
    }
}

fn print_job(format: Format, job: &Value) {
    match format {
        Format::Json => output::resource(format, job),
        Format::Human => {
            let mut view = job.clone();
            if let Some(map) = view.as_object_mut() {
                // Callbacks print as a table below.
                map.remove("callbacks");
            }
            output::resource(format, &view);
            if let Some(callbacks) = job["callbacks"].as_array() {
                println!("callbacks:");
                let rows: Vec<Vec<String>> = callbacks
                    .iter()
                    .map(|c| {
                        ["/type", "/state", "/attempts", "/last_status", "/delivered_at"]
                            .iter()
                            .map(|p| output::field(c, p))
                            .collect()
                    })
                    .collect();
                output::table(&["TYPE", "STATE", "ATTEMPTS", "LAST STATUS", "DELIVERED"], &rows);
            }
        }
    }
}

pub async fn run(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::Create(a) => {
            let queue = a.client.queue_path(&a.queue);
            let mut body = Map::new();
            body.insert("queue".into(), json!(queue));
            if let Some(url) = a.url {
                let mut task = json!({"url": url, "method": a.method});
                if let Some(b) = a.body {
                    task["body"] = json!(b);
                }
                body.insert("task".into(), task);
            }
            if let Some(path) = a.tasks_file {
                let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
                let tasks: Value =
                    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
                body.insert("tasks".into(), tasks);
            }
            let labels = a.labels.iter().map(|l| label_pair(l)).collect::<anyhow::Result<Vec<_>>>()?;
            if !labels.is_empty() {
                let labels: Map<String, Value> = labels.into_iter().map(|(k, v)| (k, json!(v))).collect();
                body.insert("labels".into(), Value::Object(labels));
            }
            for (key, value) in [
                ("idempotency_key", a.idempotency_key),
                ("callback_url", a.callback_url),
                ("failure_policy", a.failure_policy),
                ("result_ttl", a.result_ttl),
            ] {
                if let Some(v) = value {
                    body.insert(key.into(), json!(v));
                }
            }
            let job = a.client.call_url(Method::POST, "v1/jobs", Some(Value::Object(body))).await?;
            print_job(a.client.format, &job);
        }
        JobsCommand::Get(r) => {
            print_job(r.client.format, &r.client.call_url(Method::GET, &format!("v1/jobs/{}", r.id), None).await?)
        }
        JobsCommand::Cancel(r) => {
            let job = r.client.call_url(Method::POST, &format!("v1/jobs/{}:cancel", r.id), None).await?;
            print_job(r.client.format, &job);
        }
        JobsCommand::List(a) => {
            let mut query = vec![format!("page_size={}", a.limit)];
            if let Some(s) = a.status {
                query.push(format!("status={s}"));
            }
            if let Some(q) = a.queue {
                query.push(format!("queue={}", a.client.queue_path(&q)));
            }
            if let Some(l) = a.label {
                let (k, v) = label_pair(&l)?;
                query.push(format!("label={k}:{v}"));
            }
            let list = a.client.call_url(Method::GET, &format!("v1/jobs?{}", query.join("&")), None).await?;
            match a.client.format {
                Format::Json => output::resource(Format::Json, &list),
                Format::Human => {
                    let rows: Vec<Vec<String>> = list["jobs"]
                        .as_array()
                        .map(|jobs| {
                            jobs.iter()
                                .map(|j| {
                                    vec![
                                        output::field(j, "/id"),
                                        output::field(j, "/status"),
                                        format!(
                                            "{}/{}",
                                            output::field(j, "/counts/succeeded"),
                                            output::field(j, "/counts/total")
                                        ),
                                        output::field(j, "/counts/failed"),
                                        output::short(&output::field(j, "/queue")),
                                        output::field(j, "/created_at"),
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    output::table(&["ID", "STATUS", "DONE", "FAILED", "QUEUE", "CREATED"], &rows);
                }
            }
        }
        JobsCommand::Watch(r) => {
            let status = match watch(&r.client, &r.id).await {
                Ok(status) => status,
                Err(e) if e.downcast_ref::<crate::client::ApiFailure>().is_some_and(|f| f.status == "NOT_FOUND") => {
                    eprintln!("ERROR: {e:#}");
                    std::process::exit(3)
                }
                Err(e) => return Err(e),
            };
            match status.as_str() {
                "succeeded" => {}
                "cancelled" => std::process::exit(2),
                _ => std::process::exit(1),
            }
        }
    }
    Ok(())
}

/// One line for a job's state: a bar, counts and the worker's progress.
pub fn progress_line(job: &Value) -> String {
    let percent = job["percentage"].as_f64().unwrap_or(0.0);
    let total = job["counts"]["total"].as_i64().unwrap_or(0);
    // A single-task job shows the worker's own progress.
    let shown = if total == 1 && job["counts"]["succeeded"].as_i64() == Some(0) {
        job["progress"]["percent"].as_f64().unwrap_or(0.0)
    } else {
        percent
    };
    let filled = ((shown / 100.0) * 30.0).round().clamp(0.0, 30.0) as usize;
    let mut line = format!(
        "[{}{}] {:>5.1}%  {} {}  done {}/{}  failed {}",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        shown,
        job["status"].as_str().unwrap_or("?"),
        job["id"].as_str().unwrap_or(""),
        job["counts"]["succeeded"].as_i64().unwrap_or(0) + job["counts"]["failed"].as_i64().unwrap_or(0),
        total,
        job["counts"]["failed"].as_i64().unwrap_or(0),
    );
    let step = job["progress"]["step"].as_str().unwrap_or("");
    let message = job["progress"]["message"].as_str().unwrap_or("");
    if !step.is_empty() || !message.is_empty() {
        line.push_str(&format!("  {step} {message}"));
    }
    line
}

/// Follow the job's event stream to its end, resuming after a dropped connection;
/// returns the job's final status.
async fn watch(client: &ClientArgs, id: &str) -> anyhow::Result<String> {
    let http = crate::client::http_client()?;
    let tty = std::io::stdout().is_terminal() && client.format == Format::Human;
    let url = format!("{}/v1/jobs/{id}/events", client.endpoint.trim_end_matches('/'));
    let mut last_id: Option<String> = None;
    let mut last_job = client.call_url(Method::GET, &format!("v1/jobs/{id}"), None).await?;
    let mut failures = 0;
    loop {
        let mut request = client.authorized(http.get(&url));
        if let Some(last) = &last_id {
            request = request.header("Last-Event-ID", last);
        }
        let mut response = match request.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => bail!("(tasklane) the event stream answered HTTP {}", r.status()),
            Err(e) if failures < 10 => {
                failures += 1;
                eprintln!("lost the stream ({e}); reconnecting");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e).context("follow the job's events"),
        };
        let mut buffer = String::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(_) => break,
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
                let Some(data) = field("data:") else { continue };
                last_id = field("id:").or(last_id.take());
                let event: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                last_job = event["job"].clone();
                match client.format {
                    Format::Json => println!("{data}"),
                    Format::Human if tty => {
                        print!("\r\x1b[2K{}", progress_line(&last_job));
                        let _ = std::io::stdout().flush();
                    }
                    Format::Human => {
                        println!("{:<16} {}", event["kind"].as_str().unwrap_or(""), progress_line(&last_job))
                    }
                }
            }
        }
        let status = last_job["status"].as_str().unwrap_or("").to_string();
        if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
            if tty {
                println!();
            }
            if let Some(error) = last_job["error"].as_str() {
                eprintln!("error: {error}");
            }
            return Ok(status);
        }
        // The stream ended before the job did (a restart): resume where it stopped.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// List a queue's dead letters.
    List(DeadListArgs),
    /// Show one dead letter with every attempt.
    Show(DeadRef),
    /// Put dead letters back in their queue as new tasks (a new attempt series).
    Redrive(DeadSelect),
    /// Delete dead letters.
    Purge(DeadSelect),
}

#[derive(Args)]
pub struct DeadListArgs {
    #[arg(long)]
    queue: String,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct DeadRef {
    id: i64,
    #[arg(long)]
    queue: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct DeadSelect {
    /// Dead letter ids; or `--all`.
    ids: Vec<i64>,
    #[arg(long)]
    queue: String,
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn dead_path(client: &ClientArgs, queue: &str) -> String {
    format!("v1/queues/{}/dead-letters", client.queue_path(queue).replace('/', "%2F"))
}

fn selection(s: &DeadSelect) -> anyhow::Result<Value> {
    match (s.all, s.ids.is_empty()) {
        (true, _) => Ok(json!({"all": true})),
        (false, false) => Ok(json!({"ids": s.ids})),
        (false, true) => bail!("name the dead letters by id, or pass --all"),
    }
}

pub async fn run_dead_letters(cmd: DeadLettersCommand) -> anyhow::Result<()> {
    match cmd {
        DeadLettersCommand::List(a) => {
            let path = format!("{}?page_size={}", dead_path(&a.client, &a.queue), a.limit);
            let list = a.client.call_url(Method::GET, &path, None).await?;
            match a.client.format {
                Format::Json => output::resource(Format::Json, &list),
                Format::Human => {
                    let rows: Vec<Vec<String>> = list["dead_letters"]
                        .as_array()
                        .map(|dead| {
                            dead.iter()
                                .map(|d| {
                                    vec![
                                        output::field(d, "/id"),
                                        output::short(&output::field(d, "/task")),
                                        output::field(d, "/died_at"),
                                        output::field(d, "/dispatch_count"),
                                        output::field(d, "/last_response/http_status"),
                                        output::field(d, "/last_response/message"),
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    output::table(&["ID", "TASK", "DIED", "ATTEMPTS", "LAST STATUS", "MESSAGE"], &rows);
                }
            }
        }
        DeadLettersCommand::Show(r) => {
            let d =
                r.client.call_url(Method::GET, &format!("{}/{}", dead_path(&r.client, &r.queue), r.id), None).await?;
            output::resource(r.client.format, &d);
        }
        DeadLettersCommand::Redrive(s) => {
            let path = format!("{}:redrive", dead_path(&s.client, &s.queue));
            let out = s.client.call_url(Method::POST, &path, Some(selection(&s)?)).await?;
            output::resource(s.client.format, &out);
        }
        DeadLettersCommand::Purge(s) => {
            let path = format!("{}:purge", dead_path(&s.client, &s.queue));
            let out = s.client.call_url(Method::POST, &path, Some(selection(&s)?)).await?;
            output::resource(s.client.format, &out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_shows_the_bar_counts_and_step() {
        let job = json!({"id": "job_1", "status": "running", "percentage": 50.0,
            "counts": {"total": 4, "succeeded": 1, "failed": 1},
            "progress": {"percent": 0.0, "step": "", "message": ""}});
        let line = progress_line(&job);
        assert!(line.starts_with(&format!("[{}{}]", "#".repeat(15), "-".repeat(15))), "{line}");
        assert!(line.contains("done 2/4") && line.contains("failed 1") && line.contains(" 50.0%"), "{line}");
        let single = json!({"id": "job_2", "status": "running", "percentage": 0.0,
            "counts": {"total": 1, "succeeded": 0, "failed": 0},
            "progress": {"percent": 40.0, "step": "render", "message": "frame 40"}});
        let line = progress_line(&single);
        assert!(
            line.contains(" 40.0%") && line.ends_with("render frame 40"),
            "a one-task job shows its worker's progress: {line}"
        );
    }
}

//! `tasklane queues …`, after `gcloud tasks queues …`.

use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::{ClientArgs, api_duration, parse_cli_duration};
use crate::output;

#[derive(Subcommand)]
pub enum QueuesCommand {
    /// Create a queue.
    Create(QueueWithSettings),
    /// Show a queue.
    Describe(QueueRef),
    /// List queues.
    List(ListArgs),
    /// Change a queue's settings (only the flags given), creating it if missing.
    Update(QueueWithSettings),
    /// Stop dispatching; tasks can still be created.
    Pause(QueueRef),
    /// Start dispatching again.
    Resume(QueueRef),
    /// Delete every task created until now.
    Purge(QueueRef),
    /// Delete a queue and its tasks.
    Delete(QueueRef),
}

#[derive(Args)]
pub struct QueueRef {
    /// Queue id or full name.
    queue: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// Most queues to show.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct QueueWithSettings {
    /// Queue id or full name.
    queue: String,
    #[arg(long, value_parser = crate::client::parse_finite)]
    max_dispatches_per_second: Option<f64>,
    #[arg(long)]
    max_concurrent_dispatches: Option<i32>,
    /// -1 for unlimited.
    #[arg(long, allow_hyphen_values = true)]
    max_attempts: Option<i32>,
    #[arg(long, value_parser = parse_cli_duration)]
    min_backoff: Option<Duration>,
    #[arg(long, value_parser = parse_cli_duration)]
    max_backoff: Option<Duration>,
    #[arg(long)]
    max_doublings: Option<i32>,
    #[arg(long, value_parser = parse_cli_duration)]
    max_retry_duration: Option<Duration>,
    #[command(flatten)]
    client: ClientArgs,
}

impl QueueWithSettings {
    /// The queue body and the update mask naming the fields given.
    fn body(&self, name: &str) -> (Value, Vec<&'static str>) {
        let mut rate = Map::new();
        let mut retry = Map::new();
        let mut mask = Vec::new();
        if let Some(v) = self.max_dispatches_per_second {
            rate.insert("maxDispatchesPerSecond".into(), json!(v));
            mask.push("rateLimits.maxDispatchesPerSecond");
        }
        if let Some(v) = self.max_concurrent_dispatches {
            rate.insert("maxConcurrentDispatches".into(), json!(v));
            mask.push("rateLimits.maxConcurrentDispatches");
        }
        if let Some(v) = self.max_attempts {
            retry.insert("maxAttempts".into(), json!(v));
            mask.push("retryConfig.maxAttempts");
        }
        for (flag, field) in [
            (self.min_backoff, "minBackoff"),
            (self.max_backoff, "maxBackoff"),
            (self.max_retry_duration, "maxRetryDuration"),
        ] {
            if let Some(d) = flag {
                retry.insert(field.into(), json!(api_duration(d)));
                mask.push(match field {
                    "minBackoff" => "retryConfig.minBackoff",
                    "maxBackoff" => "retryConfig.maxBackoff",
                    _ => "retryConfig.maxRetryDuration",
                });
            }
        }
        if let Some(v) = self.max_doublings {
            retry.insert("maxDoublings".into(), json!(v));
            mask.push("retryConfig.maxDoublings");
        }
        let mut queue = Map::new();
        queue.insert("name".into(), json!(name));
        if !rate.is_empty() {
            queue.insert("rateLimits".into(), Value::Object(rate));
        }
        if !retry.is_empty() {
            queue.insert("retryConfig".into(), Value::Object(retry));
        }
        (Value::Object(queue), mask)
    }
}

pub async fn run(cmd: QueuesCommand) -> anyhow::Result<()> {
    match cmd {
        QueuesCommand::Create(a) => {
            let name = a.client.queue_path(&a.queue);
            let (body, _) = a.body(&name);
            let parent = name.rsplit_once("/queues/").map_or(a.client.location_path(), |(p, _)| p.to_string());
            let q = a.client.call(Method::POST, &format!("{parent}/queues"), Some(body)).await?;
            eprintln!("Created queue [{}].", output::short(&name));
            output::resource(a.client.format, &q);
        }
        QueuesCommand::Update(a) => {
            let name = a.client.queue_path(&a.queue);
            let (body, mask) = a.body(&name);
            let path = format!("{name}?updateMask={}", mask.join(","));
            let q = a.client.call(Method::PATCH, &path, Some(body)).await?;
            eprintln!("Updated queue [{}].", output::short(&name));
            output::resource(a.client.format, &q);
        }
        QueuesCommand::Describe(a) => {
            let q = a.client.call(Method::GET, &a.client.queue_path(&a.queue), None).await?;
            output::resource(a.client.format, &q);
        }
        QueuesCommand::List(a) => list(a).await?,
        QueuesCommand::Pause(a) => verb(a, "pause", "Paused").await?,
        QueuesCommand::Resume(a) => verb(a, "resume", "Resumed").await?,
        QueuesCommand::Purge(a) => verb(a, "purge", "Purged").await?,
        QueuesCommand::Delete(a) => {
            let name = a.client.queue_path(&a.queue);
            a.client.call(Method::DELETE, &name, None).await?;
            eprintln!("Deleted queue [{}].", output::short(&name));
        }
    }
    Ok(())
}

async fn verb(a: QueueRef, verb: &str, done: &str) -> anyhow::Result<()> {
    let name = a.client.queue_path(&a.queue);
    let q = a.client.call(Method::POST, &format!("{name}:{verb}"), Some(json!({}))).await?;
    eprintln!("{done} queue [{}].", output::short(&name));
    if a.client.format == crate::client::Format::Json {
        output::resource(a.client.format, &q);
    }
    Ok(())
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let limit = a.limit.unwrap_or(usize::MAX);
    let mut queues: Vec<Value> = Vec::new();
    let mut token = String::new();
    loop {
        let path = format!("{}/queues?pageToken={token}", a.client.location_path());
        let page = a.client.call(Method::GET, &path, None).await?;
        queues.extend(page.get("queues").and_then(Value::as_array).cloned().unwrap_or_default());
        token = page.get("nextPageToken").and_then(Value::as_str).unwrap_or("").to_string();
        if token.is_empty() || queues.len() >= limit {
            break;
        }
    }
    queues.truncate(limit);
    if a.client.format == crate::client::Format::Json {
        output::resource(a.client.format, &Value::Array(queues));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                output::short(&output::field(q, "/name")),
                output::field(q, "/state"),
                output::field(q, "/rateLimits/maxConcurrentDispatches"),
                output::field(q, "/rateLimits/maxDispatchesPerSecond"),
                output::field(q, "/retryConfig/maxAttempts"),
            ]
        })
        .collect();
    output::table(&["QUEUE_NAME", "STATE", "MAX_NUM_OF_TASKS", "MAX_RATE (/sec)", "MAX_ATTEMPTS"], &rows);
    Ok(())
}

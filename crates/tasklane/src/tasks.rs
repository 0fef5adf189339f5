//! `tasklane tasks …`, after `gcloud tasks …`.

use base64::Engine;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::{ClientArgs, Format};
use crate::output;

#[derive(Subcommand)]
pub enum TasksCommand {
    /// Create a task that calls an HTTP endpoint.
    CreateHttpTask(CreateArgs),
    /// List the tasks of a queue.
    List(ListArgs),
    /// Show a task.
    Describe(TaskRef),
    /// Dispatch a task now, even if its queue is paused.
    Run(TaskRef),
    /// Delete a task.
    Delete(TaskRef),
}

#[derive(Args)]
pub struct TaskRef {
    /// Task id or full name.
    task: String,
    #[arg(long)]
    queue: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    queue: String,
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Task id; generated when left out.
    task: Option<String>,
    #[arg(long)]
    queue: String,
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "POST")]
    method: String,
    /// `Name: value`; repeat for more headers.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[arg(long, conflicts_with = "body_file")]
    body_content: Option<String>,
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// RFC 3339 time, for example 2030-01-01T12:00:00Z.
    #[arg(long)]
    schedule_time: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(cmd: TasksCommand) -> anyhow::Result<()> {
    match cmd {
        TasksCommand::CreateHttpTask(a) => create(a).await,
        TasksCommand::List(a) => list(a).await,
        TasksCommand::Describe(a) => {
            let t = a
                .client
                .call(Method::GET, &format!("{}?responseView=FULL", a.client.task_path(&a.queue, &a.task)), None)
                .await?;
            output::resource(a.client.format, &t);
            Ok(())
        }
        TasksCommand::Run(a) => {
            let name = a.client.task_path(&a.queue, &a.task);
            let t = a.client.call(Method::POST, &format!("{name}:run"), Some(json!({}))).await?;
            output::resource(a.client.format, &t);
            Ok(())
        }
        TasksCommand::Delete(a) => {
            let name = a.client.task_path(&a.queue, &a.task);
            a.client.call(Method::DELETE, &name, None).await?;
            eprintln!("Deleted task [{}].", output::short(&name));
            Ok(())
        }
    }
}

async fn create(a: CreateArgs) -> anyhow::Result<()> {
    let queue = a.client.queue_path(&a.queue);
    let mut headers = Map::new();
    for h in &a.headers {
        let (name, value) =
            h.split_once(':').ok_or_else(|| anyhow::anyhow!("--header {h:?} must look like 'Name: value'"))?;
        headers.insert(name.trim().to_string(), json!(value.trim()));
    }
    let body = match (&a.body_content, &a.body_file) {
        (Some(s), _) => s.clone().into_bytes(),
        (None, Some(path)) => {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("read --body-file {}: {e}", path.display()))?
        }
        (None, None) => Vec::new(),
    };
    let mut request = Map::new();
    request.insert("url".into(), json!(a.url));
    request.insert("httpMethod".into(), json!(a.method.to_ascii_uppercase()));
    if !headers.is_empty() {
        request.insert("headers".into(), Value::Object(headers));
    }
    if !body.is_empty() {
        request.insert("body".into(), json!(base64::engine::general_purpose::STANDARD.encode(body)));
    }
    let mut task = Map::new();
    task.insert("httpRequest".into(), Value::Object(request));
    if let Some(id) = &a.task {
        task.insert("name".into(), json!(a.client.task_path(&a.queue, id)));
    }
    if let Some(t) = &a.schedule_time {
        task.insert("scheduleTime".into(), json!(t));
    }
    let created = a.client.call(Method::POST, &format!("{queue}/tasks"), Some(json!({ "task": task }))).await?;
    eprintln!("Created task [{}].", output::short(&output::field(&created, "/name")));
    output::resource(a.client.format, &created);
    Ok(())
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let limit = a.limit.unwrap_or(usize::MAX);
    let queue = a.client.queue_path(&a.queue);
    let mut tasks: Vec<Value> = Vec::new();
    let mut token = String::new();
    loop {
        let page = a.client.call(Method::GET, &format!("{queue}/tasks?pageToken={token}"), None).await?;
        tasks.extend(page.get("tasks").and_then(Value::as_array).cloned().unwrap_or_default());
        token = page.get("nextPageToken").and_then(Value::as_str).unwrap_or("").to_string();
        if token.is_empty() || tasks.len() >= limit {
            break;
        }
    }
    tasks.truncate(limit);
    if a.client.format == Format::Json {
        output::resource(a.client.format, &Value::Array(tasks));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let status =
                t.pointer("/lastAttempt/responseStatus/code").and_then(Value::as_i64).map_or("-".to_string(), |c| {
                    i32::try_from(c)
                        .ok()
                        .and_then(tasklane_core::Code::from_i32)
                        .map_or(c.to_string(), |code| code.name().to_string())
                });
            vec![
                output::short(&output::field(t, "/name")),
                "HTTP".into(),
                output::field(t, "/createTime"),
                t.get("dispatchCount").map_or("0".into(), |v| v.to_string()),
                t.get("responseCount").map_or("0".into(), |v| v.to_string()),
                status,
            ]
        })
        .collect();
    output::table(
        &["TASK_NAME", "TYPE", "CREATE_TIME", "DISPATCH_COUNT", "RESPONSE_COUNT", "LAST_ATTEMPT_STATUS"],
        &rows,
    );
    Ok(())
}

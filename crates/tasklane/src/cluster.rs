//! `tasklane cluster status`: the nodes sharing a database, their queues and lease ages.

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{ClientArgs, Format};
use crate::output;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the live nodes and the queues each dispatches.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Status(a) = cmd;
    let status = a.client.call_url(reqwest::Method::GET, "v1/cluster", None).await?;
    if a.client.format == Format::Json {
        output::resource(Format::Json, &status);
        return Ok(());
    }
    let nodes = status.get("nodes").and_then(Value::as_array).cloned().unwrap_or_default();
    if nodes.is_empty() {
        println!("No live nodes share a database with this server (it runs on the embedded store).");
        return Ok(());
    }
    let mut rows = Vec::new();
    for n in &nodes {
        let queues = n.get("queues").and_then(Value::as_array).cloned().unwrap_or_default();
        let names: Vec<String> = queues.iter().map(|q| output::short(&output::field(q, "/queue"))).collect();
        let min_lease = queues.iter().filter_map(|q| q.get("leaseRemainingMs").and_then(Value::as_i64)).min();
        rows.push(vec![
            output::field(n, "/nodeId"),
            output::field(n, "/address"),
            format!("{}ms", output::field(n, "/heartbeatAgeMs")),
            names.len().to_string(),
            min_lease.map_or("-".into(), |ms| format!("{ms}ms")),
            if names.is_empty() { "-".into() } else { names.join(",") },
        ]);
    }
    output::table(&["NODE", "ADDRESS", "HEARTBEAT_AGE", "QUEUES", "MIN_LEASE_LEFT", "QUEUE_NAMES"], &rows);
    Ok(())
}

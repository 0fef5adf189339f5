//! `tasklane serve`: flags and environment into a `ServerConfig`, logs, signals.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tasklane_server::{Server, ServerConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TASKLANE_LISTEN", default_value = "127.0.0.1:8790")]
    listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "TASKLANE_DATA_DIR", default_value = ".tasklane")]
    data_dir: PathBuf,
    /// PostgreSQL URL: run as one node of a cluster sharing this database instead of the embedded store.
    #[arg(long, env = "TASKLANE_DATABASE_URL")]
    database_url: Option<String>,
    /// Added to a task's dispatch deadline to form its lease; after that a task is run again.
    #[arg(long, env = "TASKLANE_LEASE_GRACE", default_value = "30s", value_parser = crate::client::parse_cli_duration)]
    lease_grace: std::time::Duration,
    /// Log filter, for example `info` or `tasklane_server=debug`.
    #[arg(long, env = "TASKLANE_LOG", default_value = "info")]
    log_level: String,
    #[arg(long, env = "TASKLANE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// How long a finished or deleted task's name stays reserved, for example `1h`.
    #[arg(long, env = "TASKLANE_TOMBSTONE_WINDOW", default_value = "1h", value_parser = crate::client::parse_cli_duration)]
    tombstone_window: std::time::Duration,
    /// The base URL workers reach tasklane at: the issuer of the OIDC tokens tasks carry,
    /// whose `/.well-known/openid-configuration` verifies them. Default: `http://` and the listen address.
    #[arg(long, env = "TASKLANE_PUBLIC_URL")]
    public_url: Option<String>,
    /// How long tasks that gave up are kept as dead letters, for example `30d`.
    #[arg(long, env = "TASKLANE_DEAD_LETTER_RETENTION", default_value = "30d", value_parser = crate::client::parse_cli_duration)]
    dead_letter_retention: std::time::Duration,
    /// Most push requests in flight to one worker (scheme, host and port); more wait for a
    /// free connection. 0 removes the cap.
    #[arg(long, env = "TASKLANE_MAX_CONNECTIONS_PER_HOST", default_value_t = tasklane_server::dispatch::DEFAULT_MAX_CONNECTIONS_PER_HOST)]
    max_connections_per_host: usize,
    /// How long shutdown waits for deliveries in flight.
    #[arg(long, env = "TASKLANE_SHUTDOWN_GRACE", default_value = "10s", value_parser = crate::client::parse_cli_duration)]
    shutdown_grace: std::time::Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level {:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        lease_grace: args.lease_grace,
        tombstone_window: args.tombstone_window,
        shutdown_grace: args.shutdown_grace,
        public_url: args.public_url,
        dead_letter_retention: args.dead_letter_retention,
        max_connections_per_host: args.max_connections_per_host,
        ..ServerConfig::default()
    };
    let server = Server::start(config).await.context("start tasklane")?;
    // Tests and scripts read the first line to learn the port when listening on port 0.
    // A closed stdout must not stop the server, so write errors are ignored.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "tasklane listening on http://{}", server.local_addr);
        if let Some(node) = &server.node_id {
            let _ = writeln!(out, "tasklane node {node}");
        }
        let _ = out.flush();
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                return;
            }
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

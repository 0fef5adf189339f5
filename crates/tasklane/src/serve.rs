//! `tasklane serve`: flags and environment into a `ServerConfig`, logs, signals.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tasklane_server::{ConnectionLimits, Server, ServerConfig};

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
    /// With --database-url: how long any one call to the database may take before tasklane
    /// answers 503 and the caller may retry (a silent network partition otherwise hangs calls).
    #[arg(long, env = "TASKLANE_DATABASE_TIMEOUT", default_value = "5s", value_parser = crate::client::parse_cli_duration)]
    database_timeout: std::time::Duration,
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
    /// How long a deleted queue's name stays reserved, as in Cloud Tasks (up to 3 days);
    /// `0s` frees it at once, which suits local development.
    #[arg(long, env = "TASKLANE_QUEUE_TOMBSTONE_WINDOW", default_value = "3d", value_parser = crate::client::parse_cli_duration)]
    queue_tombstone_window: std::time::Duration,
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
    /// A PEM certificate (chain) to serve the API over TLS (with `--tls-key`); HTTP/2 and
    /// HTTP/1.1 are offered by ALPN.
    #[arg(long, env = "TASKLANE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "TASKLANE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most API connections open at once; more are closed when accepted. 0 removes the cap.
    #[arg(long, env = "TASKLANE_MAX_CONNECTIONS", default_value_t = ConnectionLimits::default().max_connections)]
    max_connections: usize,
    /// Most job event streams (Server-Sent Events) open at once; more are refused with 429.
    #[arg(long, env = "TASKLANE_MAX_EVENT_STREAMS", default_value_t = tasklane_server::jobs::DEFAULT_MAX_EVENT_STREAMS)]
    max_event_streams: usize,
    /// Time a client has to send a request header (also an idle HTTP/1.1 connection's
    /// life, and a TLS handshake's).
    #[arg(long, env = "TASKLANE_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = crate::client::parse_cli_duration)]
    header_read_timeout: std::time::Duration,
    /// Time a client has to send a request body after its header.
    #[arg(long, env = "TASKLANE_BODY_READ_TIMEOUT", default_value = "60s", value_parser = crate::client::parse_cli_duration)]
    body_read_timeout: std::time::Duration,
    /// Serve requests without an API token while none exists, although the listen address
    /// is not loopback. Only for a network that is itself trusted: anyone who reaches the
    /// port can then create tasks and have tasklane sign tokens for any identity.
    #[arg(long, env = "TASKLANE_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
    /// Origins whose web pages may call the API, with CORS (comma-separated,
    /// `https://console.example`). Requests from any other page are refused.
    #[arg(long, env = "TASKLANE_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Host names requests may be sent to besides IP addresses, `localhost` and the
    /// `--public-url` host (comma-separated; `*.example.com`, or `*` for any). Other names
    /// are refused, which stops DNS rebinding.
    #[arg(long, env = "TASKLANE_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// Targets pushes and callbacks may reach although private or loopback (comma-separated
    /// address ranges or host names: `10.0.0.0/8`, `worker.internal`, `*.svc`). Only for a
    /// server listening beyond loopback: one on loopback may reach anything.
    #[arg(long, env = "TASKLANE_EGRESS_ALLOW", value_delimiter = ',')]
    egress_allow: Vec<String>,
    /// Targets pushes and callbacks may never reach (comma-separated ranges or host names);
    /// wins over --egress-allow. Link-local and cloud metadata addresses are always denied
    /// beyond loopback.
    #[arg(long, env = "TASKLANE_EGRESS_DENY", value_delimiter = ',')]
    egress_deny: Vec<String>,
    /// A file (mode 0600, at least 32 random bytes) holding the master key that seals the
    /// token signing keys in the store. Keys already stored in plain text are sealed at start.
    #[arg(long, env = "TASKLANE_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
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
    // Colour codes only for a person at a terminal, never in a log file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if args.database_timeout < std::time::Duration::from_millis(100) {
        anyhow::bail!("--database-timeout must be at least 100ms: a shorter one fails every call to the database");
    }
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        database_timeout: args.database_timeout,
        lease_grace: args.lease_grace,
        tombstone_window: args.tombstone_window,
        queue_tombstone_window: args.queue_tombstone_window,
        shutdown_grace: args.shutdown_grace,
        public_url: args.public_url,
        dead_letter_retention: args.dead_letter_retention,
        max_connections_per_host: args.max_connections_per_host,
        connections: ConnectionLimits {
            max_connections: args.max_connections,
            header_read_timeout: args.header_read_timeout,
            body_read_timeout: args.body_read_timeout,
            ..ConnectionLimits::default()
        },
        tls: args.tls_cert.zip(args.tls_key),
        allow_unauthenticated: args.allow_unauthenticated,
        allowed_origins: args.allowed_origins,
        allowed_hosts: args.allowed_hosts,
        egress_allow: args.egress_allow,
        egress_deny: args.egress_deny,
        secret_key_file: args.secret_key_file,
        max_event_streams: args.max_event_streams,
        ..ServerConfig::default()
    };
    let server = Server::start(config).await.context("start tasklane")?;
    // Tests and scripts read the first line to learn the port when listening on port 0.
    // A closed stdout must not stop the server, so write errors are ignored.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let scheme = if server.tls { "https" } else { "http" };
        let _ = writeln!(out, "tasklane listening on {scheme}://{}", server.local_addr);
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

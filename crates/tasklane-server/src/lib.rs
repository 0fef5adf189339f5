//! The tasklane server: the Cloud Tasks service, the dispatcher, the REST API and the
//! background maintenance, assembled by `Server::start`.

pub mod edge;
pub mod engine;
pub mod service;

// The modules by their old, flat names, which the binary and the tests use.
pub use edge::{admin, connections, grpc, guard, rest, v1, v1_access};
pub use engine::{callbacks, cluster, dispatch, egress, events, oidc, sealing};
pub use service::{access, dead_letters, jobs, operations, page_token, policy, pull};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tasklane_core::{Clock, SystemClock, Timestamp};
use tasklane_store::{PgStore, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use cluster::ClusterConfig;
pub use connections::ConnectionLimits;
pub use dispatch::{DispatchConfig, Dispatcher};
pub use service::cloud_tasks::CloudTasks;

/// The Cloud Tasks API on one router: gRPC requests (by content type) go to `grpc`,
/// everything else to the REST routes.
pub fn api(service: CloudTasks) -> Router {
    let grpc_service = service.clone();
    rest::router(service).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let service = grpc_service.clone();
            async move { if grpc::is_grpc(&req) { grpc::serve(service, req).await } else { next.run(req).await } }
        },
    ))
}

/// How long a deleted queue's name stays reserved unless told otherwise: the real
/// service's "up to 3 days".
pub const DEFAULT_QUEUE_TOMBSTONE_WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The embedded store's directory (unused with `database_url`).
    pub data_dir: PathBuf,
    /// A PostgreSQL URL: run as one node of a cluster sharing that database.
    pub database_url: Option<String>,
    /// How long one call to PostgreSQL may take before it answers `Unavailable`.
    pub database_timeout: Duration,
    pub tombstone_window: Duration,
    /// How long a deleted queue's name stays reserved (the real service: up to 3 days).
    pub queue_tombstone_window: Duration,
    pub lease_grace: Duration,
    /// How long shutdown waits for deliveries in flight.
    pub shutdown_grace: Duration,
    pub cluster: ClusterConfig,
    /// The base URL workers reach tasklane at: the `iss` of task tokens and the home of
    /// the OIDC discovery document. Defaults to `http://` and the listening address.
    pub public_url: Option<String>,
    /// How long dead letters are kept.
    pub dead_letter_retention: Duration,
    /// Most push requests in flight to one destination (scheme, host, port); 0: no cap.
    pub max_connections_per_host: usize,
    /// Limits on the API port's connections: how many, and how long a client may take.
    pub connections: ConnectionLimits,
    /// A certificate and key (PEM files) to serve the API over TLS instead of cleartext.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve requests without a token while no token exists, on a listen address that is
    /// not loopback (loopback is open that way by default).
    pub allow_unauthenticated: bool,
    /// Origins whose web pages may call the API (with CORS); all others are refused.
    pub allowed_origins: Vec<String>,
    /// Host names requests may name besides IP addresses, `localhost` and the public URL's.
    pub allowed_hosts: Vec<String>,
    /// Targets pushes and callbacks may reach beyond the default (address ranges or host
    /// names); ignored when serving only on loopback, where every target is allowed.
    pub egress_allow: Vec<String>,
    /// Targets pushes and callbacks may never reach; wins over `egress_allow`.
    pub egress_deny: Vec<String>,
    /// A file holding the master key that seals the signing keys in the store.
    pub secret_key_file: Option<PathBuf>,
    /// Most job event streams (Server-Sent Events) open at once.
    pub max_event_streams: usize,
}

/// `http://ADDR` (or `https://`), with a wildcard address replaced by loopback.
fn default_public_url(addr: SocketAddr, tls: bool) -> String {
    let ip = if addr.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { addr.ip() };
    format!("{}://{}", if tls { "https" } else { "http" }, SocketAddr::new(ip, addr.port()))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            data_dir: PathBuf::from(".tasklane"),
            database_url: None,
            database_timeout: Duration::from_secs(5),
            tombstone_window: Duration::from_secs(3600),
            queue_tombstone_window: DEFAULT_QUEUE_TOMBSTONE_WINDOW,
            lease_grace: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            cluster: ClusterConfig::default(),
            public_url: None,
            dead_letter_retention: Duration::from_secs(30 * 24 * 3600),
            max_connections_per_host: dispatch::DEFAULT_MAX_CONNECTIONS_PER_HOST,
            connections: ConnectionLimits::default(),
            tls: None,
            allow_unauthenticated: false,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            egress_allow: Vec::new(),
            egress_deny: Vec::new(),
            secret_key_file: None,
            max_event_streams: jobs::DEFAULT_MAX_EVENT_STREAMS,
        }
    }
}

/// Where pushes and callbacks may go: anywhere for a server reachable only on loopback
/// (local workers are the point); otherwise the default rules with the configured ones.
fn egress_policy(
    config: &ServerConfig,
    local_addr: SocketAddr,
) -> Result<tasklane_core::egress::EgressPolicy, StartError> {
    use tasklane_core::egress::{EgressPolicy, Rule};
    if local_addr.ip().is_loopback() {
        return Ok(EgressPolicy::open());
    }
    let rules = |list: &[String], flag: &str| -> Result<Vec<Rule>, StartError> {
        list.iter().map(|r| Rule::parse(r).map_err(|e| StartError::Egress(format!("{flag}: {e}")))).collect()
    };
    Ok(EgressPolicy {
        open: false,
        allow: rules(&config.egress_allow, "--egress-allow")?,
        deny: rules(&config.egress_deny, "--egress-deny")?,
    })
}

/// tasklane's default port: clear of PostgreSQL, Redis and the usual development ports.
pub const DEFAULT_PORT: u16 = 8790;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("another tasklane process is using the data directory {0}; stop it or choose another --data-dir")]
    Locked(PathBuf),
    #[error("open the store: {0}")]
    Store(#[from] tasklane_store::StoreError),
    #[error("cannot use the database at {url}: {error}")]
    Database { url: String, error: tasklane_store::StoreError },
    #[error("listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Http(String),
    #[error("{0}")]
    Tls(String),
    #[error(
        "tasklane would serve {0} with no credential: anyone who reaches it could create tasks and have \
         tasklane sign tokens for any identity. Create an API token first (tasklane tokens create admin \
         --scope admin, with this --data-dir or --database-url), or pass --allow-unauthenticated if the \
         network itself is trusted"
    )]
    Unauthenticated(SocketAddr),
    #[error("{0}")]
    Egress(String),
    #[error("{0}")]
    SecretKey(String),
    #[error("read the API tokens: {0}")]
    Access(String),
}

/// A database URL with its password hidden, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

enum Backend {
    Embedded { sqlite: SqliteStore, _lock: std::fs::File },
    Cluster { node_id: String, keeper: tokio::task::JoinHandle<()> },
}

/// A running server. Dropping it does not stop it; call `shutdown`.
pub struct Server {
    pub local_addr: SocketAddr,
    /// This node's id in a cluster; `None` on the embedded store.
    pub node_id: Option<String>,
    /// Whether the API is served over TLS.
    pub tls: bool,
    store: Arc<dyn Store>,
    dispatcher: Dispatcher,
    stop: watch::Sender<bool>,
    http: tokio::task::JoinHandle<()>,
    backend: Backend,
    shutdown_grace: Duration,
}

fn new_node_id(clock: &dyn Clock) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_i64(clock.now().0);
    format!("node-{:012x}", h.finish() & 0xffff_ffff_ffff)
}

impl Server {
    /// Open the store, start the dispatcher and serve the API.
    pub async fn start(config: ServerConfig) -> Result<Server, StartError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let tls = match &config.tls {
            Some((cert, key)) => Some(connections::tls_acceptor(cert, key).map_err(StartError::Tls)?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let egress = egress::EgressGate::new(egress_policy(&config, local_addr)?);
        let client = egress::http_client(egress.clone()).map_err(StartError::Http)?;
        let sealer = match &config.secret_key_file {
            Some(path) => Some(Arc::new(sealing::Sealer::from_file(path).map_err(StartError::SecretKey)?)),
            None => None,
        };
        // A cluster node's id: its claims are fenced by the queue leases it holds under it.
        let cluster_node = config.database_url.as_ref().map(|_| new_node_id(&*clock));
        let dispatch_config = DispatchConfig {
            node_id: cluster_node.clone(),
            sealer,
            egress: egress.clone(),
            lease_grace: config.lease_grace,
            tombstone_window: config.tombstone_window,
            token_issuer: config
                .public_url
                .clone()
                .unwrap_or_else(|| default_public_url(local_addr, config.tls.is_some())),
            max_connections_per_host: config.max_connections_per_host,
        };
        let (stop, stop_rx) = watch::channel(false);

        let mut relay = None;
        let mut pg_listen = None;
        let (store, dispatcher, backend, node_id): (Arc<dyn Store>, Dispatcher, Backend, Option<String>) = match &config
            .database_url
        {
            None => {
                let (sqlite, lock) = open_embedded(&config.data_dir)?;
                let store: Arc<dyn Store> = Arc::new(sqlite.clone());
                // Leases left by a previous process of this store cannot be held by anyone now.
                let released = store.task_lease_release(None, clock.now()).await?;
                if released > 0 {
                    tracing::info!(tasks = released, "returned tasks leased by the previous run to their queues");
                }
                let dispatcher = Dispatcher::new(store.clone(), clock.clone(), client, dispatch_config);
                dispatcher.start().await?;
                (store, dispatcher, Backend::Embedded { sqlite, _lock: lock }, None)
            }
            Some(url) => {
                let pg = PgStore::connect(url, None)
                    .await
                    .map_err(|error| StartError::Database { url: redact(url), error })?;
                let store: Arc<dyn Store> =
                    Arc::new(tasklane_store::Deadline::new(Arc::new(pg.clone()), config.database_timeout));
                let node_id = cluster_node.clone().unwrap_or_else(|| new_node_id(&*clock));
                let notifier = cluster::wake_relay(pg.clone(), stop_rx.clone());
                relay = Some(notifier.clone());
                pg_listen = Some(pg.clone());
                let events = engine::events::Events::new(Some(notifier));
                let dispatcher = Dispatcher::clustered(store.clone(), clock.clone(), client, dispatch_config, events);
                let keeper = cluster::OwnershipKeeper {
                    store: store.clone(),
                    clock: clock.clone(),
                    dispatcher: dispatcher.clone(),
                    node_id: node_id.clone(),
                    address: local_addr.to_string(),
                    config: config.cluster.clone(),
                };
                let keeper = tokio::spawn(keeper.run(stop_rx.clone()));
                (store, dispatcher, Backend::Cluster { node_id: node_id.clone(), keeper }, Some(node_id))
            }
        };
        let browser = guard::BrowserPolicy {
            allowed_origins: config.allowed_origins.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            public_host: config
                .public_url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| u.host_str().map(str::to_string)),
        };
        let open = local_addr.ip().is_loopback() || config.allow_unauthenticated;
        let refresh = if relay.is_some() { access::REFRESH_CLUSTER } else { access::REFRESH_EMBEDDED };
        let access =
            Arc::new(access::Access::new(store.clone(), clock.clone(), open, refresh).with_egress(egress.clone()));
        // One read of tokens and settings: egress rules kept in the store are in force
        // before the first task is sent, and a server that is not open needs a token.
        let has_tokens = access.has_tokens().await.map_err(|e| StartError::Access(e.message))?;
        if !open && !has_tokens {
            return Err(StartError::Unauthenticated(local_addr));
        }
        if let Some(relay) = &relay {
            access.announce_with(relay.clone());
        }
        if let Some(pg) = &pg_listen {
            let reloaded = access.clone();
            cluster::listen(pg, dispatcher.clone(), move || {
                let access = reloaded.clone();
                async move { access.reload().await }
            });
        }
        dispatcher.signer().check_stored().await.map_err(|e| StartError::SecretKey(e.message))?;
        let service = CloudTasks::new(store.clone(), clock.clone(), dispatcher.clone(), config.tombstone_window)
            .with_queue_tombstone_window(config.queue_tombstone_window)
            .with_access(access.clone());
        let maintained_access = access.clone();
        let app = Router::new()
            .merge(admin::router(store.clone(), clock.clone(), config.cluster.lease))
            .merge(admin::oidc_router(dispatcher.signer()))
            .merge(v1::router(v1::V1 {
                jobs: jobs::Jobs::new(store.clone(), clock.clone(), dispatcher.clone())
                    .with_access(access.clone())
                    .with_stream_limit(config.max_event_streams),
                dead: dead_letters::DeadLetters::new(store.clone(), clock.clone(), dispatcher.clone()),
                pull: pull::Pull::new(store.clone(), clock.clone(), dispatcher.clone(), config.tombstone_window),
                tasks: service.clone(),
            }))
            .merge(api(service))
            .merge(v1_access::router(access.clone(), dispatcher.signer()))
            .layer(axum::middleware::from_fn_with_state(
                guard::Guard { browser: Arc::new(browser), access },
                guard::guard,
            ));

        let http = tokio::spawn(connections::serve(listener, app, config.connections.clone(), tls, stop_rx.clone()));
        let sender = callbacks::CallbackSender {
            store: store.clone(),
            clock: clock.clone(),
            signer: dispatcher.signer(),
            client: egress::http_client(egress.clone()).map_err(StartError::Http)?,
            job_changes: dispatcher.events().job_changes(),
        };
        tokio::spawn(sender.run(stop_rx.clone()));
        spawn_maintenance(store.clone(), clock.clone(), config.dead_letter_retention, maintained_access, stop_rx);
        tracing::info!(addr = %local_addr, node = node_id.as_deref().unwrap_or("embedded"), "tasklane is serving");
        Ok(Server {
            local_addr,
            node_id,
            tls: config.tls.is_some(),
            store,
            dispatcher,
            stop,
            http,
            backend,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// Stop taking requests and new work, let deliveries in flight finish (up to the
    /// grace period), hand queues over to other nodes, then close the store. Tasks not
    /// finished keep their leases and run again after them.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        self.dispatcher.shutdown(self.shutdown_grace).await;
        match self.backend {
            Backend::Embedded { sqlite, _lock } => {
                let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
                sqlite.close();
            }
            Backend::Cluster { node_id, keeper } => {
                let _ = keeper.await;
                cluster::OwnershipKeeper::leave(&*self.store, &node_id).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
            }
        }
        tracing::info!("tasklane stopped");
    }
}

/// Create the embedded store's directory, readable by its owner only (0700): it holds the
/// keys tasklane signs tokens with. A looser directory from before is tightened, with a warning.
pub fn secure_data_dir(data_dir: &std::path::Path) -> Result<(), StartError> {
    let failed = |source| StartError::DataDir { path: data_dir.to_path_buf(), source };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir).map_err(failed)?;
        let mode = std::fs::metadata(data_dir).map_err(failed)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %data_dir.display(), mode = format!("{mode:o}"), "the data directory was open to others; made it 0700");
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(data_dir).map_err(failed)?;
    Ok(())
}

fn open_embedded(data_dir: &std::path::Path) -> Result<(SqliteStore, std::fs::File), StartError> {
    secure_data_dir(data_dir)?;
    let lock_path = data_dir.join("tasklane.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StartError::DataDir { path: lock_path.clone(), source })?;
    // One process owns an embedded store: its leases are then known to be its own.
    if lock.try_lock().is_err() {
        return Err(StartError::Locked(data_dir.to_path_buf()));
    }
    let sqlite = SqliteStore::open(data_dir.join("tasklane.db"))?;
    Ok((sqlite, lock))
}

fn spawn_maintenance(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    dead_letter_retention: Duration,
    access: Arc<access::Access>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAINTENANCE_TICK);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            ticks += 1;
            // Rules changed straight in the store reach a server with no API traffic too.
            if let Err(e) = access.required().await {
                tracing::warn!(error = %e.message, "re-read tokens and egress rules");
            }
            match store.store_maintain(clock.now()).await {
                Ok(done) => {
                    for what in done {
                        tracing::debug!(%what, "maintenance");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "store maintenance"),
            }
            if ticks % 6 == 1 {
                match store.tombstone_expire(clock.now()).await {
                    Ok(n) if n > 0 => tracing::debug!(expired = n, "expired task-name tombstones"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expire tombstones"),
                }
                let cutoff = Timestamp(
                    clock.now().0.saturating_sub(tasklane_core::clock::duration_micros(dead_letter_retention)),
                );
                match store.dead_letter_expire(cutoff).await {
                    Ok(n) if n > 0 => tracing::info!(expired = n, "dead letters past their retention were deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expire dead letters"),
                }
            }
        }
    });
}

/// How often maintenance runs (tombstones expire every sixth tick).
const MAINTENANCE_TICK: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    #[test]
    fn database_urls_are_redacted() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("host=h user=u"), "host=h user=u");
    }
}

//! The tasklane server: the Cloud Tasks service, the dispatcher, the REST API and the
//! background maintenance, assembled by `Server::start`.

pub mod dispatch;
mod page_token;
pub mod rest;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tasklane_core::{Clock, SystemClock};
use tasklane_store::{SqliteStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use dispatch::{DispatchConfig, Dispatcher};
pub use service::CloudTasks;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tombstone_window: Duration,
    pub lease_grace: Duration,
    /// How long shutdown waits for deliveries in flight.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            data_dir: PathBuf::from(".tasklane"),
            tombstone_window: Duration::from_secs(3600),
            lease_grace: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
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
    #[error("listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Http(String),
}

/// A running server. Dropping it does not stop it; call `shutdown`.
pub struct Server {
    pub local_addr: SocketAddr,
    dispatcher: Dispatcher,
    stop: watch::Sender<bool>,
    http: tokio::task::JoinHandle<()>,
    store: SqliteStore,
    _lock: std::fs::File,
    shutdown_grace: Duration,
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(axum::extract::State(store): axum::extract::State<Arc<dyn Store>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let probe = tasklane_store::QueueList { parent: None, after: None, limit: 1 };
    match store.queue_list(probe).await {
        Ok(_) => "ready".into_response(),
        Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {e}")).into_response(),
    }
}

impl Server {
    /// Open the embedded store, start the dispatcher and serve the API.
    pub async fn start(config: ServerConfig) -> Result<Server, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        let lock_path = config.data_dir.join("tasklane.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StartError::DataDir { path: lock_path.clone(), source })?;
        // One process owns an embedded store: its leases are then known to be its own.
        if lock.try_lock().is_err() {
            return Err(StartError::Locked(config.data_dir.clone()));
        }
        let sqlite = SqliteStore::open(config.data_dir.join("tasklane.db"))?;
        let store: Arc<dyn Store> = Arc::new(sqlite.clone());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // Leases left by a previous process of this store cannot be held by anyone now.
        let released = store.task_lease_release_all(clock.now()).await?;
        if released > 0 {
            tracing::info!(tasks = released, "returned tasks leased by the previous run to their queues");
        }
        let client = dispatch::http_client().map_err(StartError::Http)?;
        let dispatcher = Dispatcher::new(
            store.clone(),
            clock.clone(),
            client,
            DispatchConfig { lease_grace: config.lease_grace, tombstone_window: config.tombstone_window },
        );
        dispatcher.start().await?;
        let service = CloudTasks::new(store.clone(), clock.clone(), dispatcher.clone(), config.tombstone_window);

        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz).with_state(store.clone()))
            .merge(rest::router(service));
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let (stop, mut stop_rx) = watch::channel(false);
        let mut maintenance_stop = stop.subscribe();
        let http = tokio::spawn(async move {
            let graceful = async move {
                let _ = stop_rx.changed().await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(graceful).await {
                tracing::error!(error = %e, "http server stopped");
            }
        });
        let maintenance_store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        match maintenance_store.tombstone_expire(clock.now()).await {
                            Ok(n) if n > 0 => tracing::debug!(expired = n, "expired task-name tombstones"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "expire tombstones"),
                        }
                    }
                    _ = maintenance_stop.changed() => break,
                }
            }
        });
        tracing::info!(addr = %local_addr, data_dir = %config.data_dir.display(), "tasklane is serving");
        Ok(Server {
            local_addr,
            dispatcher,
            stop,
            http,
            store: sqlite,
            _lock: lock,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// Stop taking requests and new work, let deliveries in flight finish (up to the
    /// grace period), then close the store. Tasks not finished keep their leases.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        self.dispatcher.shutdown(self.shutdown_grace).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        self.store.close();
        tracing::info!("tasklane stopped");
    }
}

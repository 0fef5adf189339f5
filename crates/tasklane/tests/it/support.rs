//! Test harness: the real `tasklane` binary on a free port, a recording HTTP worker, and
//! a small API client. Everything listens on loopback and stops when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub use tasklane_store::test_database_url;

pub const PROJECT_LOCATION: &str = "projects/test/locations/here";

pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tasklane-e2e-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// A `tasklane serve` process. Killed (not gracefully) when dropped.
pub struct TasklaneProcess {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    owns_dir: bool,
}

impl TasklaneProcess {
    pub fn start() -> TasklaneProcess {
        TasklaneProcess::start_in(fresh_dir("data"))
    }

    /// Start on a fresh data directory with extra `serve` flags.
    pub fn start_with(flags: &[&str]) -> TasklaneProcess {
        let data_dir = fresh_dir("data");
        let mut args = vec!["--data-dir".to_string(), data_dir.display().to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        TasklaneProcess::spawn(&args, data_dir)
    }

    /// Start on an existing data directory with extra `serve` flags.
    pub fn start_in_with(data_dir: PathBuf, flags: &[&str]) -> TasklaneProcess {
        let mut args = vec!["--data-dir".to_string(), data_dir.display().to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        TasklaneProcess::spawn(&args, data_dir)
    }

    /// Start on an existing data directory (to restart after a crash).
    pub fn start_in(data_dir: PathBuf) -> TasklaneProcess {
        let args = vec!["--data-dir".to_string(), data_dir.display().to_string()];
        TasklaneProcess::spawn(&args, data_dir)
    }

    /// Start a cluster node on a PostgreSQL URL, with a short lease grace so tasks of a
    /// killed node come back quickly.
    pub fn start_node(database_url: &str) -> TasklaneProcess {
        TasklaneProcess::start_node_with(database_url, &[])
    }

    /// `start_node` with extra `serve` flags.
    pub fn start_node_with(database_url: &str, flags: &[&str]) -> TasklaneProcess {
        let mut args: Vec<String> = ["--database-url", database_url, "--lease-grace", "1s"].map(String::from).to_vec();
        args.extend(flags.iter().map(|f| f.to_string()));
        TasklaneProcess::spawn(&args, fresh_dir("node"))
    }

    /// Start on an existing data directory, its log (stderr) written to `log`.
    pub fn start_in_logging_to(data_dir: PathBuf, log: &std::path::Path) -> TasklaneProcess {
        let args = vec!["--data-dir".to_string(), data_dir.display().to_string()];
        let file = std::fs::File::create(log).expect("create the log file");
        TasklaneProcess::spawn_logging(&args, data_dir, Stdio::from(file), "info")
    }

    fn spawn(extra: &[String], data_dir: PathBuf) -> TasklaneProcess {
        TasklaneProcess::spawn_logging(extra, data_dir, Stdio::inherit(), "warn,tasklane_server=info")
    }

    fn spawn_logging(extra: &[String], data_dir: PathBuf, log: Stdio, level: &str) -> TasklaneProcess {
        let listen: &[&str] = if extra.iter().any(|a| a == "--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_tasklane"))
            .args(["serve", "--log-level", level])
            .args(listen)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start tasklane");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).expect("read the listening line");
        // Keep reading so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr = line
            .trim()
            .strip_prefix("tasklane listening on http://")
            .or_else(|| line.trim().strip_prefix("tasklane listening on https://"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        TasklaneProcess { child, addr, data_dir, owns_dir: true }
    }

    pub fn api(&self) -> Api {
        Api { base: format!("http://{}/v2", self.addr), client: client() }
    }

    /// `kill -9`: no chance to finish anything.
    pub fn kill_hard(mut self) -> PathBuf {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        self.owns_dir = false;
        self.data_dir.clone()
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("send SIGTERM");
        self.owns_dir = false; // the caller restarts on this directory
        self.child.wait().expect("wait")
    }
}

impl Drop for TasklaneProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}/{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.expect("call tasklane");
        let status = resp.status().as_u16();
        let value = serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method.clone(), path, body).await;
        assert_eq!(status, 200, "{method} {path}: {value}");
        value
    }

    pub async fn create_queue(&self, id: &str, extra: Value) -> Value {
        let mut queue = json!({ "name": format!("{PROJECT_LOCATION}/queues/{id}") });
        if let (Some(q), Some(e)) = (queue.as_object_mut(), extra.as_object()) {
            q.extend(e.clone());
        }
        self.ok(reqwest::Method::POST, &format!("{PROJECT_LOCATION}/queues"), Some(queue)).await
    }

    pub async fn create_task(&self, queue: &str, task: Value) -> Value {
        self.ok(
            reqwest::Method::POST,
            &format!("{PROJECT_LOCATION}/queues/{queue}/tasks"),
            Some(json!({ "task": task })),
        )
        .await
    }

    pub async fn queue_verb(&self, queue: &str, verb: &str) -> Value {
        self.ok(reqwest::Method::POST, &format!("{PROJECT_LOCATION}/queues/{queue}:{verb}"), Some(json!({}))).await
    }

    pub async fn task_count(&self, queue: &str) -> usize {
        let v = self
            .ok(reqwest::Method::GET, &format!("{PROJECT_LOCATION}/queues/{queue}/tasks?pageSize=1000"), None)
            .await;
        v.get("tasks").and_then(Value::as_array).map_or(0, Vec::len)
    }
}

/// One request the worker received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Decides the worker's answer: (status, delay before answering, extra headers).
pub type Behaviour = Arc<dyn Fn(&Received, usize) -> (u16, Duration) + Send + Sync>;

#[derive(Clone)]
struct WorkerState {
    log: Arc<Mutex<Vec<Received>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    behaviour: Behaviour,
}

/// A local HTTP worker that records every request and answers as told.
pub struct Worker {
    pub addr: SocketAddr,
    state: WorkerState,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    pub async fn start(behaviour: Behaviour) -> Worker {
        let state = WorkerState {
            log: Arc::new(Mutex::new(Vec::new())),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: Arc::new(AtomicUsize::new(0)),
            behaviour,
        };
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
        let addr = listener.local_addr().expect("worker addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Worker { addr, state, task }
    }

    pub async fn ok() -> Worker {
        Worker::start(Arc::new(|_, _| (200, Duration::ZERO))).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().expect("log").clone()
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Wait until `n` requests arrived, or panic after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(start.elapsed() < timeout, "worker got {} of {n} requests in {timeout:?}", got.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(state): State<WorkerState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let received = Received { at: Instant::now(), path: uri.path().to_string(), headers, body };
    let index = {
        let mut log = state.log.lock().expect("log");
        log.push(received.clone());
        log.len() - 1
    };
    let (status, delay) = (state.behaviour)(&received, index);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A failure says why in its body, as real workers do (tasklane keeps an excerpt).
    if status >= 300 { (code, format!("worker says {status}")).into_response() } else { code.into_response() }
}

/// Poll `check` until it holds, or panic after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy on loopback that can cut every connection through it and refuse new
/// ones, or go silent (connections stay open, no bytes pass, nothing is reset: a network
/// partition as a client sees it), to take a database away from tasklane without touching
/// the database itself.
pub struct CuttableProxy {
    pub port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    silent: Arc<std::sync::atomic::AtomicBool>,
    /// Connections turned away while cut.
    refused: Arc<AtomicUsize>,
    /// Bytes passed on from clients to the upstream.
    forwarded: Arc<AtomicUsize>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

/// Copy `from` to `to`, holding each chunk while `silent` is set; counts what it passed on.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<std::sync::atomic::AtomicBool>,
    passed: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        passed.fetch_add(n, Ordering::SeqCst);
    }
}

impl CuttableProxy {
    pub async fn start(upstream: SocketAddr) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let (c, quiet, r, conns) = (cut.clone(), silent.clone(), refused.clone(), connections.clone());
        let up = forwarded.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                    continue; // dropped: the client sees the connection close
                }
                let (quiet, up) = (quiet.clone(), up.clone());
                let handle = tokio::spawn(async move {
                    // A silent network does not connect either.
                    while quiet.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let (in_read, in_write) = inbound.into_split();
                        let (out_read, out_write) = outbound.into_split();
                        tokio::join!(
                            forward(in_read, out_write, quiet.clone(), up),
                            forward(out_read, in_write, quiet, Arc::default())
                        );
                    }
                });
                conns.lock().expect("connections").push(handle);
            }
        });
        CuttableProxy { port, cut, silent, refused, forwarded, connections, accept }
    }

    /// How many connections were turned away while cut.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// How many bytes clients have sent through to the upstream.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// Close every connection and refuse new ones until `restore`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for handle in self.connections.lock().expect("connections").drain(..) {
            handle.abort();
        }
    }

    /// Pass no bytes, in either direction, on any connection, until `restore`.
    pub fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.silent.store(false, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A gRPC message framed for the wire: uncompressed, its length, then its bytes.
pub fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
    message.encode(&mut frame).expect("encode");
    frame
}

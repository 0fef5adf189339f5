//! Serving HTTP connections: accept with a cap on open connections, `TCP_NODELAY` on
//! every socket, deadlines for slow or silent clients, optional TLS, and the choice of
//! HTTP/1.1 or HTTP/2 (by ALPN over TLS, by the connection preface in cleartext, so gRPC's
//! h2c and REST share one port).
//!
//! Why not `axum::serve`: it sets no timeouts (a client that never finishes its request
//! header holds a socket forever), no connection cap, and leaves Nagle's algorithm on
//! accepted sockets, which with delayed ACKs held gRPC answers over ~250 bytes for 40 ms.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Limits on the connections the API port accepts.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Most connections open at once; more are closed as soon as they are accepted. 0: no cap.
    pub max_connections: usize,
    /// Time a client has to send a request's header, also the most an HTTP/1.1 connection
    /// may sit idle between requests and the time for a TLS handshake.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body, from the end of its header.
    pub body_read_timeout: Duration,
    /// An HTTP/2 connection is pinged this often when quiet, and closed when a ping is not
    /// answered within as long again: a peer that vanished does not hold its socket.
    pub http2_keep_alive: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            http2_keep_alive: Duration::from_secs(60),
        }
    }
}

/// Accept connections on `listener` and serve `app` on each until `stop` turns true;
/// then stop accepting, ask every connection to finish what it is doing, and return once
/// they have all closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    // 0 means no cap; a million open connections is more than any one process holds.
    let cap = if limits.max_connections == 0 { 1 << 20 } else { limits.max_connections };
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(cap));
    let mut refused_logged: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or the peer left before we took it: wait a
                // moment rather than spin, then go on.
                tracing::warn!(error = %e, "accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let now = tokio::time::Instant::now();
            if refused_logged.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection refused: too many open connections (raise --max-connections if they are legitimate)"
                );
                refused_logged = Some(now);
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, app, &limits, tls, stop).await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
            drop(slot);
        });
    }
    // Every connection holds one slot until it closes.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

async fn connection(
    mut stream: TcpStream,
    app: Router,
    limits: &ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    match tls {
        Some(acceptor) => {
            let tls = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake within the header timeout"))??;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            drive(tls, h2, app, limits, stop).await
        }
        None => {
            let preface = tokio::time::timeout(limits.header_read_timeout, sniff(&mut stream))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request within the header timeout"))??;
            let h2 = preface == H2_PREFACE;
            drive(Prefixed { prefix: preface, pos: 0, inner: stream }, h2, app, limits, stop).await
        }
    }
}

/// The first bytes of an HTTP/2 connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Read until the bytes either differ from HTTP/2's preface or are all of it.
async fn sniff(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut read = Vec::with_capacity(H2_PREFACE.len());
    let mut chunk = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.read(&mut chunk[..H2_PREFACE.len() - read.len()]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        read.extend_from_slice(&chunk[..n]);
        if read.len() == H2_PREFACE.len() || !H2_PREFACE.starts_with(&read) {
            return Ok(read);
        }
    }
}

async fn drive<S>(
    io: S,
    h2: bool,
    app: Router,
    limits: &ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_read_timeout;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut app = app.clone();
        let req = req.map(|body| Body::new(TimedBody::new(body, body_timeout)));
        async move { tower_service::Service::call(&mut app, req).await }
    });
    let io = TokioIo::new(io);
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.http2_keep_alive)
            .keep_alive_timeout(limits.http2_keep_alive)
            .serve_connection(io, service);
        run(conn, &mut stop, |c| c.graceful_shutdown()).await
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(io, service)
            .with_upgrades();
        run(conn, &mut stop, |c| c.graceful_shutdown()).await
    }
}

/// Drive a connection to its end, asking it to finish gracefully once `stop` turns true.
async fn run<C, E>(conn: C, stop: &mut watch::Receiver<bool>, graceful: impl FnOnce(Pin<&mut C>)) -> io::Result<()>
where
    C: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::pin!(conn);
    let stopping = async {
        if !*stop.borrow() {
            let _ = stop.changed().await;
        }
    };
    tokio::select! {
        r = conn.as_mut() => return r.map_err(io::Error::other),
        _ = stopping => {}
    }
    graceful(conn.as_mut());
    conn.await.map_err(io::Error::other)
}

/// A stream that first replays the bytes read to choose the protocol.
struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            buf.put_slice(&self.prefix[self.pos..self.pos + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must arrive within a deadline from the end of the header. The timer
/// is armed only when the body is not already there: most bodies arrive with their header,
/// and a timer per request cost a tenth of a single create's CPU.
struct TimedBody {
    inner: Incoming,
    started: tokio::time::Instant,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody { inner, started: tokio::time::Instant::now(), deadline: None, timeout }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let at = self.started + self.timeout;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let secs = self.timeout.as_secs();
                Poll::Ready(Some(Err(format!("the request body did not arrive within {secs} s").into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TLS acceptor for `cert` and `key` (PEM files), offering HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("read the TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("the TLS certificate file {} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("read the TLS key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

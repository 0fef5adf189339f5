//! The egress policy (`tasklane_core::egress`) applied to every request tasklane sends to
//! a worker or a callback receiver: targets checked when a task or queue is created, each
//! host resolved once per connection with every address checked and the connection made
//! to the checked addresses (no second lookup to rebind), and every redirect hop checked.
//!
//! The rules in force are the flags' (`--egress-allow`, `--egress-deny`) and the store's
//! (`tasklane egress …`), kept in an `EgressGate` every check reads, so a change made
//! through the API takes effect without a restart.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tasklane_core::egress::{EgressPolicy, Rule};
use tasklane_core::{Code, Status};

/// The policy in force: the flags' rules with the store's added.
#[derive(Debug, Clone)]
pub struct EgressGate {
    flags: Arc<EgressPolicy>,
    current: Arc<RwLock<Arc<EgressPolicy>>>,
}

impl EgressGate {
    pub fn new(flags: EgressPolicy) -> EgressGate {
        let flags = Arc::new(flags);
        EgressGate { current: Arc::new(RwLock::new(flags.clone())), flags }
    }

    /// Everything allowed: a server reachable only on loopback.
    pub fn open() -> EgressGate {
        EgressGate::new(EgressPolicy::open())
    }

    pub fn current(&self) -> Arc<EgressPolicy> {
        self.current.read().map(|p| p.clone()).unwrap_or_else(|_| self.flags.clone())
    }

    /// The flags' rules (what the store cannot take away).
    pub fn flags(&self) -> &EgressPolicy {
        &self.flags
    }

    /// Put the store's rules in force beside the flags'. An open gate stays open.
    pub fn apply_stored(&self, allow: &[Rule], deny: &[Rule]) {
        if self.flags.open {
            return;
        }
        let merged = EgressPolicy {
            open: false,
            allow: self.flags.allow.iter().chain(allow).cloned().collect(),
            deny: self.flags.deny.iter().chain(deny).cloned().collect(),
        };
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(merged);
        }
    }
}

/// Check a target URL against the rules that need no lookup: its host name, or its
/// address when the host is one.
pub fn check_url(policy: &EgressPolicy, field: &str, url: &str) -> Result<(), Status> {
    if policy.open || url.is_empty() {
        return Ok(());
    }
    let Some(host) = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)) else {
        return Ok(()); // an unparseable URL is refused by the task's own validation
    };
    policy.check_host(&host).map_err(|why| {
        Status::new(Code::PermissionDenied, format!("{field} \"{url}\" is not an allowed target: {why}"))
    })
}

/// A request the egress policy refused, told apart from a worker that could not be
/// reached: the attempt records tasklane's reason rather than the real service's text.
#[derive(Debug)]
pub struct EgressRefused(pub String);

impl std::fmt::Display for EgressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "egress policy: {}", self.0)
    }
}

impl std::error::Error for EgressRefused {}

/// Resolves a host once and refuses it unless every address is allowed.
struct CheckedResolver {
    gate: EgressGate,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.gate.current();
        let host = name.as_str().to_string();
        Box::pin(async move {
            policy.check_host(&host).map_err(EgressRefused)?;
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for a in &addrs {
                policy.check_ip(&host, a.ip()).map_err(EgressRefused)?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Most redirects followed for one attempt.
const MAX_REDIRECTS: usize = 10;

/// The HTTP client for pushes and callbacks under the gate's policy.
pub fn http_client(gate: EgressGate) -> Result<reqwest::Client, String> {
    // One TLS stack: rustls on ring. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(10));
    if gate.flags().open {
        builder = builder.redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS));
    } else {
        let hops = gate.clone();
        builder = builder
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match attempt.url().host_str().map(|h| hops.current().check_host(h)) {
                    Some(Err(why)) => attempt.error(EgressRefused(why)),
                    _ => attempt.follow(),
                }
            }))
            .dns_resolver(Arc::new(CheckedResolver { gate }));
    }
    builder.build().map_err(|e| format!("build HTTP client: {e}"))
}

//! The egress policy (`tasklane_core::egress`) applied to every request tasklane sends to
//! a worker or a callback receiver: targets checked when a task or queue is created, each
//! host resolved once per connection with every address checked and the connection made
//! to the checked addresses (no second lookup to rebind), and every redirect hop checked.

use std::net::SocketAddr;
use std::sync::Arc;

use tasklane_core::egress::EgressPolicy;
use tasklane_core::{Code, Status};

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

/// Resolves a host once and refuses it unless every address is allowed.
struct CheckedResolver {
    policy: Arc<EgressPolicy>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            policy.check_host(&host).map_err(|why| format!("egress policy: {why}"))?;
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for a in &addrs {
                policy.check_ip(&host, a.ip()).map_err(|why| format!("egress policy: {why}"))?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Most redirects followed for one attempt.
const MAX_REDIRECTS: usize = 10;

/// The HTTP client for pushes and callbacks under `policy`.
pub fn http_client(policy: Arc<EgressPolicy>) -> Result<reqwest::Client, String> {
    // One TLS stack: rustls on ring. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(10));
    if policy.open {
        builder = builder.redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS));
    } else {
        let hops = policy.clone();
        builder = builder
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match attempt.url().host_str().map(|h| hops.check_host(h)) {
                    Some(Err(why)) => attempt.error(format!("egress policy: {why}")),
                    _ => attempt.follow(),
                }
            }))
            .dns_resolver(Arc::new(CheckedResolver { policy }));
    }
    builder.build().map_err(|e| format!("build HTTP client: {e}"))
}

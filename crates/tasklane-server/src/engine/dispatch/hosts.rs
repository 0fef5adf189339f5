//! A cap on the requests in flight to each destination (scheme, host and port).
//!
//! Without it, fifty busy queues pointed at one worker open thousands of connections at
//! once; the worker's listen backlog overflows, the kernel drops the SYNs, and the
//! dropped connections retry after 1, 3 and 7 seconds: throughput falls and a few tasks
//! wait seconds for nothing. With a cap, deliveries beyond it wait here for a pooled
//! keep-alive connection instead.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Destinations remembered before idle ones are forgotten.
const MAX_REMEMBERED: usize = 10_000;

pub struct HostLimits {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// `scheme://authority` of a URL: the part connections are pooled by.
pub fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..].find(['/', '?', '#']).map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

impl HostLimits {
    /// `per_host` requests at most in flight to one destination; 0 means no cap.
    pub fn new(per_host: usize) -> Self {
        HostLimits { per_host, hosts: Mutex::new(HashMap::new()) }
    }

    /// Wait for a slot to `url`'s destination; the slot is held until the permit drops.
    /// `None` when there is no cap. `waiting` counts this request while it waits (its
    /// queue's count: a queue stops claiming while many of its own deliveries wait).
    pub async fn acquire(&self, url: &str, waiting: &AtomicUsize) -> Option<OwnedSemaphorePermit> {
        if self.per_host == 0 {
            return None;
        }
        let semaphore = {
            let mut hosts = self.hosts.lock().ok()?;
            let key = origin(url);
            match hosts.get(key) {
                Some(s) => s.clone(),
                None => {
                    if hosts.len() >= MAX_REMEMBERED {
                        // Forget destinations nobody is waiting on or sending to.
                        hosts.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < self.per_host);
                    }
                    let s = Arc::new(Semaphore::new(self.per_host));
                    hosts.insert(key.to_string(), s.clone());
                    s
                }
            }
        };
        // Counted while waiting, also when the wait is given up (the future dropped).
        let _waiting = super::Counted::new(waiting);
        semaphore.acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn origins() {
        assert_eq!(origin("http://127.0.0.1:9000/a/b?x=1"), "http://127.0.0.1:9000");
        assert_eq!(origin("https://example.com"), "https://example.com");
        assert_eq!(origin("https://example.com?q"), "https://example.com");
        assert_eq!(origin("http://user@host:1#frag"), "http://user@host:1");
    }

    #[tokio::test]
    async fn caps_each_destination_separately() {
        let limits = HostLimits::new(2);
        let waiting = AtomicUsize::new(0);
        let a1 = limits.acquire("http://a:1/x", &waiting).await;
        let _a2 = limits.acquire("http://a:1/y", &waiting).await;
        assert_eq!(waiting.load(Ordering::Relaxed), 0, "requests that got a slot are not waiting");
        // A third request to the same destination waits, and is counted while it does...
        let mut third = Box::pin(limits.acquire("http://a:1/z", &waiting));
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut third).await.is_err(), "it must wait");
        assert_eq!(waiting.load(Ordering::Relaxed), 1);
        drop(third);
        assert_eq!(waiting.load(Ordering::Relaxed), 0, "a request that stopped waiting is not counted");
        // ...while another destination has its own slots.
        assert!(limits.acquire("http://b:1/", &waiting).await.is_some());
        drop(a1);
        let third = tokio::time::timeout(Duration::from_millis(500), limits.acquire("http://a:1/z", &waiting)).await;
        assert!(matches!(third, Ok(Some(_))), "a freed slot goes to the waiting request");
    }

    #[tokio::test]
    async fn zero_means_no_cap() {
        let limits = HostLimits::new(0);
        let waiting = AtomicUsize::new(0);
        for _ in 0..5 {
            assert!(limits.acquire("http://a:1/", &waiting).await.is_none());
        }
    }
}

//! The event bus: what the rest of a node is told when a job changes or a queue gets tasks
//! (job streams, long polls and the callback sender listen), and, in a cluster, what goes to
//! the other nodes over the database's `LISTEN`/`NOTIFY` relay and comes back from it.
//! Services and the dispatcher publish; nobody needs to know who listens.

use std::sync::Arc;

use tasklane_core::QueueName;
use tokio::sync::{broadcast, mpsc};

/// A relayed notice that names a changed job: `job:` and its id.
const JOB_PREFIX: &str = "job:";

#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    job_changes: broadcast::Sender<String>,
    queue_activity: broadcast::Sender<QueueName>,
    /// A cluster node's relay to the other nodes; none on an embedded store.
    relay: Option<mpsc::UnboundedSender<String>>,
}

impl Events {
    /// One node's bus; with `relay`, a cluster node's, which also tells the others.
    pub fn new(relay: Option<mpsc::UnboundedSender<String>>) -> Events {
        Events {
            inner: Arc::new(Inner {
                job_changes: broadcast::channel(4096).0,
                queue_activity: broadcast::channel(4096).0,
                relay,
            }),
        }
    }

    /// Whether this node is one of a cluster's.
    pub fn clustered(&self) -> bool {
        self.inner.relay.is_some()
    }

    /// Tell watchers of `job`, on every node, that it has new events.
    pub fn job_changed(&self, job: &str) {
        let _ = self.inner.job_changes.send(job.to_string());
        self.relay(format!("{JOB_PREFIX}{job}"));
    }

    /// Tell long polls on this node that `queue` got tasks.
    pub fn tasks_arrived(&self, queue: &QueueName) {
        let _ = self.inner.queue_activity.send(queue.clone());
    }

    /// Ids of jobs as they change.
    pub fn job_changes(&self) -> broadcast::Receiver<String> {
        self.inner.job_changes.subscribe()
    }

    /// Queues as they get tasks.
    pub fn queue_activity(&self) -> broadcast::Receiver<QueueName> {
        self.inner.queue_activity.subscribe()
    }

    /// Send `notice` to the other nodes, if this node has any.
    pub fn relay(&self, notice: String) {
        if let Some(relay) = &self.inner.relay {
            let _ = relay.send(notice);
        }
    }

    /// A notice from another node: whether it was a changed job, now told to this node's
    /// watchers (anything else is the dispatcher's).
    pub fn received(&self, notice: &str) -> bool {
        match notice.strip_prefix(JOB_PREFIX) {
            Some(job) => {
                let _ = self.inner.job_changes.send(job.to_string());
                true
            }
            None => false,
        }
    }
}

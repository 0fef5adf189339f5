//! Running as one node of a cluster on a shared PostgreSQL database.
//!
//! The `OwnershipKeeper` gives each queue to one node at a time, so a queue's rate and
//! concurrency limits hold across the cluster: every tick it signs the node's heartbeat,
//! renews the queue leases it holds, takes free or expired queues up to a fair share,
//! and gives one back when it holds more than its share. If it cannot renew before its
//! leases end, it stops dispatching them. The `WakeRelay` carries wake-ups between nodes
//! over `LISTEN/NOTIFY`, coalescing repeated names.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tasklane_core::{Clock, QueueName, Timestamp};
use tasklane_store::{
    NodeHeartbeat, PgStore, QueueList, QueueOwner, QueueOwnerAcquire, QueueOwnerRelease, QueueOwnerRenew, Store,
    StoreError,
};
use tokio::sync::{mpsc, watch};

use crate::dispatch::Dispatcher;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How long a queue lease lasts without renewal.
    pub lease: Duration,
    /// How often the keeper renews and rebalances.
    pub tick: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { lease: Duration::from_secs(5), tick: Duration::from_secs(1) }
    }
}

pub struct OwnershipKeeper {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub dispatcher: Dispatcher,
    pub node_id: String,
    pub address: String,
    pub config: ClusterConfig,
}

/// A stable per-node order of queues, so nodes prefer different queues when taking.
fn preference(node: &str, queue: &QueueName) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    queue.hash(&mut h);
    h.finish()
}

impl OwnershipKeeper {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        // When this node's queue leases end, counted from the *start* of the renewal that set
        // them; it stops dispatching `margin` before that, on its own clock, whether or not
        // the database answers (a silent partition answers nothing).
        let mut held_until: Option<Timestamp> = None;
        let margin = self.config.tick.min(self.config.lease / 2);
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
                _ = self.until_stop(held_until, margin) => {
                    self.stop_dispatching();
                    held_until = None;
                    continue;
                }
            }
            let outcome = tokio::select! {
                outcome = self.step() => outcome,
                _ = stop.changed() => break,
                _ = self.until_stop(held_until, margin) => {
                    self.stop_dispatching();
                    held_until = None;
                    continue;
                }
            };
            match outcome {
                // A renewal that answered too late to leave any time is no renewal.
                Ok((until, owned)) if self.clock.now().saturating_add(margin) < until => {
                    self.dispatcher.set_owned(&owned);
                    held_until = Some(until);
                }
                Ok(_) => tracing::warn!("queue leases were renewed too late to use; trying again"),
                Err(e) => tracing::warn!(error = %e, "renew queue ownership"),
            }
        }
    }

    /// Resolves `margin` before `held_until` (never, when nothing is held).
    async fn until_stop(&self, held_until: Option<Timestamp>, margin: Duration) {
        match held_until {
            Some(until) => tokio::time::sleep(until.saturating_sub(margin).since(self.clock.now())).await,
            None => std::future::pending().await,
        }
    }

    fn stop_dispatching(&self) {
        if !self.dispatcher.owned().is_empty() {
            tracing::warn!("queue leases could not be renewed in time; dispatching stops until the database answers");
        }
        self.dispatcher.set_owned(&[]);
    }

    /// Give every queue back and leave the cluster (after the dispatcher has drained).
    pub async fn leave(store: &dyn Store, node_id: &str) {
        if let Err(e) = store.node_remove(node_id).await {
            tracing::warn!(error = %e, "leave the cluster; other nodes take the queues when the leases end");
        }
    }

    /// Sign the heartbeat, renew, take and hand over queues: the queues held, and until when
    /// (counted from when this step started).
    async fn step(&self) -> Result<(Timestamp, Vec<QueueName>), StoreError> {
        let now = self.clock.now();
        let until = now.saturating_add(self.config.lease);
        self.store
            .node_heartbeat(NodeHeartbeat { node_id: self.node_id.clone(), address: self.address.clone(), now })
            .await?;
        let mut owned =
            self.store.queue_owner_renew(QueueOwnerRenew { node_id: self.node_id.clone(), until, now }).await?;
        let alive: HashSet<String> =
            self.store.node_list(now.saturating_sub(self.config.lease)).await?.into_iter().map(|n| n.node_id).collect();
        let queues = all_queues(&*self.store).await?;
        let target = queues.len().div_ceil(alive.len().max(1));
        if owned.len() < target {
            let owners: HashMap<QueueName, QueueOwner> =
                self.store.queue_owner_list().await?.into_iter().map(|o| (o.queue.clone(), o)).collect();
            let held: HashSet<QueueName> = owned.iter().cloned().collect();
            let mut free: Vec<&QueueName> = queues
                .iter()
                .filter(|q| !held.contains(*q) && owners.get(*q).is_none_or(|o| o.lease_until < now))
                .collect();
            free.sort_by_key(|q| preference(&self.node_id, q));
            for q in free {
                if owned.len() >= target {
                    break;
                }
                let acquire = QueueOwnerAcquire { node_id: self.node_id.clone(), queue: q.clone(), until, now };
                if !self.store.queue_owner_acquire(acquire).await? {
                    continue;
                }
                tracing::info!(queue = %q, "took queue");
                // A dead node's deliveries will never be recorded: put its leased tasks back
                // now, where they were in the queue, rather than after their leases. A late
                // outcome from it is refused (it holds an old lease id).
                if let Some(dead) = owners.get(q).filter(|o| o.node_id != self.node_id && !alive.contains(&o.node_id)) {
                    let back = self.store.task_lease_release(Some(q.clone()), now).await?;
                    if back > 0 {
                        tracing::info!(queue = %q, node = %dead.node_id, tasks = back, "re-queued a dead node's deliveries");
                    }
                }
                owned.push(q.clone());
            }
        } else if owned.len() > target && alive.len() > 1 {
            // Hand one queue over per tick, so a node that joined gets its share.
            if let Some(q) = owned.pop() {
                tracing::info!(queue = %q, "handing queue over");
                // Stop dispatching it before another node can take it.
                self.dispatcher.set_owned(&owned);
                self.store
                    .queue_owner_release(QueueOwnerRelease { node_id: self.node_id.clone(), queue: Some(q) })
                    .await?;
            }
        }
        Ok((until, owned))
    }
}

async fn all_queues(store: &dyn Store) -> Result<Vec<QueueName>, StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.queue_list(QueueList { parent: None, after: after.clone(), limit: 1000 }).await?;
        let done = page.len() < 1000;
        for q in page {
            after = Some(q.name.clone());
            out.push(q.name);
        }
        if done {
            return Ok(out);
        }
    }
}

/// Carry wake-ups between nodes: names sent to the returned sender are coalesced and
/// published with `NOTIFY`; notifications received wake this node's dispatcher.
pub fn wake_relay(store: PgStore, stop: watch::Receiver<bool>) -> mpsc::UnboundedSender<String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut stop = stop;
        loop {
            let first = tokio::select! {
                name = rx.recv() => match name { Some(n) => n, None => return },
                _ = stop.changed() => return,
            };
            // Coalesce what arrives within a millisecond into one NOTIFY per queue.
            let mut names: HashSet<String> = HashSet::from([first]);
            let window = tokio::time::sleep(Duration::from_millis(1));
            tokio::pin!(window);
            loop {
                tokio::select! {
                    name = rx.recv() => match name { Some(n) => { names.insert(n); } None => break },
                    _ = &mut window => break,
                }
            }
            let names: Vec<String> = names.into_iter().collect();
            if let Err(e) = store.notify(&names).await {
                tracing::warn!(error = %e, "notify other nodes; they will see the work at their next poll");
            }
        }
    });
    tx
}

/// The notice that API tokens, identities or keys changed (any other notice names a queue).
pub const ACCESS_CHANGED: &str = "!access";

/// Deliver notifications from other nodes: wake-ups to this node's dispatcher, changes of
/// tokens, identities or keys to its `Access` and token signer. An empty notice (the listener reconnected, and
/// may have missed some) goes to both.
pub fn listen<R, F>(store: &PgStore, dispatcher: Dispatcher, reload_access: R)
where
    R: Fn() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    let mut rx = store.listen();
    tokio::spawn(async move {
        while let Some(notice) = rx.recv().await {
            if notice == ACCESS_CHANGED || notice.is_empty() {
                reload_access().await;
                dispatcher.signer().invalidate().await;
            }
            if notice == ACCESS_CHANGED {
                continue;
            }
            dispatcher.woken(&notice);
        }
    });
}

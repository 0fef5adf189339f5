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
    NodeHeartbeat, PgStore, QueueList, QueueOwnerAcquire, QueueOwnerRelease, QueueOwnerRenew, Store, StoreError,
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
        let mut held_until: Option<Timestamp> = None;
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            match self.step().await {
                Ok(until) => held_until = Some(until),
                Err(e) => {
                    tracing::warn!(error = %e, "renew queue ownership");
                    // Without a renewal our leases end; stop before another node may start.
                    let margin = self.config.tick;
                    if held_until.is_some_and(|u| self.clock.now().saturating_add(margin) >= u) {
                        if !self.dispatcher.owned().is_empty() {
                            tracing::warn!(
                                "queue leases could not be renewed; dispatching stops until the database is back"
                            );
                        }
                        self.dispatcher.set_owned(&[]);
                        held_until = None;
                    }
                }
            }
        }
    }

    /// Give every queue back and leave the cluster (after the dispatcher has drained).
    pub async fn leave(store: &dyn Store, node_id: &str) {
        if let Err(e) = store.node_remove(node_id).await {
            tracing::warn!(error = %e, "leave the cluster; other nodes take the queues when the leases end");
        }
    }

    async fn step(&self) -> Result<Timestamp, StoreError> {
        let now = self.clock.now();
        let until = now.saturating_add(self.config.lease);
        self.store
            .node_heartbeat(NodeHeartbeat { node_id: self.node_id.clone(), address: self.address.clone(), now })
            .await?;
        let mut owned =
            self.store.queue_owner_renew(QueueOwnerRenew { node_id: self.node_id.clone(), until, now }).await?;
        let alive = self.store.node_list(now.saturating_sub(self.config.lease)).await?.len().max(1);
        let queues = all_queues(&*self.store).await?;
        let target = queues.len().div_ceil(alive);
        if owned.len() < target {
            let owners: HashMap<QueueName, Timestamp> =
                self.store.queue_owner_list().await?.into_iter().map(|o| (o.queue, o.lease_until)).collect();
            let held: HashSet<QueueName> = owned.iter().cloned().collect();
            let mut free: Vec<&QueueName> = queues
                .iter()
                .filter(|q| !held.contains(*q) && owners.get(*q).is_none_or(|until| *until < now))
                .collect();
            free.sort_by_key(|q| preference(&self.node_id, q));
            for q in free {
                if owned.len() >= target {
                    break;
                }
                let acquire = QueueOwnerAcquire { node_id: self.node_id.clone(), queue: q.clone(), until, now };
                if self.store.queue_owner_acquire(acquire).await? {
                    tracing::info!(queue = %q, "took queue");
                    owned.push(q.clone());
                }
            }
        } else if owned.len() > target && alive > 1 {
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
        self.dispatcher.set_owned(&owned);
        Ok(until)
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

/// Deliver notifications from other nodes: wake-ups to this node's dispatcher, changes of
/// tokens, identities or keys to its `Access` and token signer. An empty notice (the listener reconnected, and
/// may have missed some) goes to both.
pub fn listen(store: &PgStore, dispatcher: Dispatcher, access: Arc<crate::access::Access>) {
    let mut rx = store.listen();
    tokio::spawn(async move {
        while let Some(notice) = rx.recv().await {
            if notice == crate::access::CHANGED_NOTICE || notice.is_empty() {
                access.reload().await;
                dispatcher.signer().invalidate().await;
            }
            if notice == crate::access::CHANGED_NOTICE {
                continue;
            }
            dispatcher.woken(&notice);
        }
    });
}

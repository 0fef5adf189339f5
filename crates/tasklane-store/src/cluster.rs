//! The cluster's tables: nodes and their heartbeats, and the queue leases that give each
//! queue one dispatching node at a time.

use tasklane_core::{QueueName, Timestamp};

use crate::StoreResult;
use crate::columns::Columns;
use crate::sql::{Conn, args};

/// A node's periodic sign of life, with the address it serves on.
#[derive(Debug, Clone)]
pub struct NodeHeartbeat {
    pub node_id: String,
    pub address: String,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node_id: String,
    pub address: String,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
}

/// Extend every queue lease this node holds until `until`; returns the queues it holds.
#[derive(Debug, Clone)]
pub struct QueueOwnerRenew {
    pub node_id: String,
    pub until: Timestamp,
    pub now: Timestamp,
}

/// Take a queue's lease if nobody holds it or its lease ended before `now`.
#[derive(Debug, Clone)]
pub struct QueueOwnerAcquire {
    pub node_id: String,
    pub queue: QueueName,
    pub until: Timestamp,
    pub now: Timestamp,
}

/// Give back one queue, or every queue this node holds.
#[derive(Debug, Clone)]
pub struct QueueOwnerRelease {
    pub node_id: String,
    pub queue: Option<QueueName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOwner {
    pub queue: QueueName,
    pub node_id: String,
    pub lease_until: Timestamp,
}

const NODE_HEARTBEAT: &str = "INSERT INTO nodes (node_id, address, started_at, heartbeat_at) VALUES ($1, $2, $3, $3) \
     ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, heartbeat_at = excluded.heartbeat_at";
const NODE_LIST: &str =
    "SELECT node_id, address, started_at, heartbeat_at FROM nodes WHERE heartbeat_at >= $1 ORDER BY node_id";
const NODE_REMOVE_OWNERS: &str = "DELETE FROM queue_owners WHERE node_id = $1";
const NODE_REMOVE: &str = "DELETE FROM nodes WHERE node_id = $1";
const OWNER_RENEW: &str = "UPDATE queue_owners SET lease_until = $2 WHERE node_id = $1 RETURNING queue";
/// Take the lease of an existing queue that is free, ended before `$4`, or already ours.
const OWNER_ACQUIRE: &str = "INSERT INTO queue_owners (queue, node_id, lease_until) \
     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM queues WHERE name = $1) \
     ON CONFLICT (queue) DO UPDATE SET node_id = excluded.node_id, lease_until = excluded.lease_until \
     WHERE queue_owners.lease_until < $4 OR queue_owners.node_id = excluded.node_id";
const OWNER_RELEASE_ONE: &str = "DELETE FROM queue_owners WHERE node_id = $1 AND queue = $2";
const OWNER_LIST: &str = "SELECT queue, node_id, lease_until FROM queue_owners ORDER BY queue";

pub(crate) async fn node_heartbeat(c: &mut impl Conn, p: NodeHeartbeat) -> StoreResult<()> {
    c.execute(NODE_HEARTBEAT, args![&p.node_id, &p.address, p.now.0]).await.map(|_| ())
}

pub(crate) async fn node_list(c: &mut impl Conn, alive_since: Timestamp) -> StoreResult<Vec<Node>> {
    c.query(NODE_LIST, args![alive_since.0], |r| {
        Ok(Node {
            node_id: r.text(0)?,
            address: r.text(1)?,
            started_at: Timestamp(r.big(2)?),
            heartbeat_at: Timestamp(r.big(3)?),
        })
    })
    .await
}

/// Two statements: run it in a transaction.
pub(crate) async fn node_remove(c: &mut impl Conn, node_id: &str) -> StoreResult<()> {
    c.execute(NODE_REMOVE_OWNERS, args![node_id]).await?;
    c.execute(NODE_REMOVE, args![node_id]).await.map(|_| ())
}

pub(crate) async fn owner_renew(c: &mut impl Conn, p: QueueOwnerRenew) -> StoreResult<Vec<QueueName>> {
    let names = c.query(OWNER_RENEW, args![&p.node_id, p.until.0], |r| r.text(0)).await?;
    let mut out: Vec<QueueName> = names.iter().filter_map(|n| QueueName::parse(n).ok()).collect();
    out.sort();
    Ok(out)
}

pub(crate) async fn owner_acquire(c: &mut impl Conn, p: QueueOwnerAcquire) -> StoreResult<bool> {
    let queue = p.queue.to_string();
    Ok(c.execute(OWNER_ACQUIRE, args![&queue, &p.node_id, p.until.0, p.now.0]).await? == 1)
}

pub(crate) async fn owner_release(c: &mut impl Conn, p: QueueOwnerRelease) -> StoreResult<()> {
    match &p.queue {
        Some(q) => c.execute(OWNER_RELEASE_ONE, args![&p.node_id, &q.to_string()]).await,
        None => c.execute(NODE_REMOVE_OWNERS, args![&p.node_id]).await,
    }
    .map(|_| ())
}

pub(crate) async fn owner_list(c: &mut impl Conn) -> StoreResult<Vec<QueueOwner>> {
    let rows = c.query(OWNER_LIST, args![], |r| Ok((r.text(0)?, r.text(1)?, r.big(2)?))).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(q, node_id, until)| {
            QueueName::parse(&q).ok().map(|queue| QueueOwner { queue, node_id, lease_until: Timestamp(until) })
        })
        .collect())
}

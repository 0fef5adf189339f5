//! The cluster's tables: heartbeats and queue ownership.

use super::*;

/// In a cluster a claim leases nothing unless the claiming node holds the queue's ownership
/// lease at that moment: a node that lost its queue during a partition cannot deliver from
/// it when its queued claims finally reach the database.
pub async fn a_claim_leases_only_for_the_node_that_owns_the_queue(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "a", T0).await;
    make_task(&store, "q", "b", T0).await;
    let claim =
        |owner: &str, now| TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now, owner: Some(owner.to_string()) };
    assert!(store.task_claim(claim("n1", at(1))).await.unwrap().is_empty(), "nobody owns the queue yet");
    let acquire = |node: &str, until, now| QueueOwnerAcquire { node_id: node.into(), queue: qname("q"), until, now };
    assert!(store.queue_owner_acquire(acquire("n1", at(10), at(1))).await.unwrap());
    assert!(store.task_claim(claim("n2", at(2))).await.unwrap().is_empty(), "another node's queue");
    assert_eq!(store.task_claim(claim("n1", at(2))).await.unwrap().len(), 1, "its owner claims");
    assert!(store.task_claim(claim("n1", at(10))).await.unwrap().is_empty(), "not once its lease has ended");
    assert!(store.queue_owner_acquire(acquire("n2", at(20), at(11))).await.unwrap());
    assert!(store.task_claim(claim("n1", at(12))).await.unwrap().is_empty(), "not after another node took it");
    assert_eq!(store.task_claim(claim("n2", at(12))).await.unwrap().len(), 1);
}

pub async fn nodes_heartbeat_list_and_leave(store: Arc<dyn Store>) {
    let beat = |id: &str, now| NodeHeartbeat { node_id: id.into(), address: format!("{id}:1"), now };
    store.node_heartbeat(beat("a", T0)).await.unwrap();
    store.node_heartbeat(beat("b", at(5))).await.unwrap();
    store.node_heartbeat(beat("a", at(6))).await.unwrap();
    let nodes = store.node_list(at(1)).await.unwrap();
    let ids: Vec<_> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(nodes[0].started_at, T0, "a heartbeat keeps the start time");
    assert_eq!(nodes[0].heartbeat_at, at(6));
    assert_eq!(store.node_list(at(6)).await.unwrap().len(), 1);
    make_queue(&store, "q").await;
    assert!(
        store
            .queue_owner_acquire(QueueOwnerAcquire {
                node_id: "b".into(),
                queue: qname("q"),
                until: at(10),
                now: at(5)
            })
            .await
            .unwrap()
    );
    store.node_remove("b").await.unwrap();
    assert_eq!(store.node_list(T0).await.unwrap().len(), 1);
    assert!(store.queue_owner_list().await.unwrap().is_empty(), "a node that leaves gives its queues back");
}

pub async fn queue_ownership_is_exclusive_until_the_lease_ends(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_queue(&store, "r").await;
    let acquire =
        |node: &str, q: &str, until, now| QueueOwnerAcquire { node_id: node.into(), queue: qname(q), until, now };
    assert!(store.queue_owner_acquire(acquire("a", "q", at(5), T0)).await.unwrap());
    assert!(!store.queue_owner_acquire(acquire("b", "q", at(6), at(1))).await.unwrap(), "held by a");
    assert!(store.queue_owner_acquire(acquire("a", "q", at(6), at(1))).await.unwrap(), "the holder may take it again");
    assert!(!store.queue_owner_acquire(acquire("a", "missing", at(6), at(1))).await.unwrap(), "only existing queues");
    let renewed =
        store.queue_owner_renew(QueueOwnerRenew { node_id: "a".into(), until: at(8), now: at(2) }).await.unwrap();
    assert_eq!(renewed, vec![qname("q")]);
    assert!(!store.queue_owner_acquire(acquire("b", "q", at(10), at(7))).await.unwrap(), "renewed until 8");
    // a stops renewing: after its lease ends b takes over, and a's renew no longer returns it.
    assert!(store.queue_owner_acquire(acquire("b", "q", at(12), at(9))).await.unwrap());
    assert!(
        store
            .queue_owner_renew(QueueOwnerRenew { node_id: "a".into(), until: at(14), now: at(10) })
            .await
            .unwrap()
            .is_empty()
    );
    let owners = store.queue_owner_list().await.unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!((owners[0].node_id.as_str(), owners[0].lease_until), ("b", at(12)));
    // Release hands a queue over at once.
    assert!(store.queue_owner_acquire(acquire("b", "r", at(12), at(9))).await.unwrap());
    store.queue_owner_release(QueueOwnerRelease { node_id: "b".into(), queue: Some(qname("r")) }).await.unwrap();
    assert!(store.queue_owner_acquire(acquire("a", "r", at(12), at(9))).await.unwrap());
    store.queue_owner_release(QueueOwnerRelease { node_id: "b".into(), queue: None }).await.unwrap();
    assert!(store.queue_owner_acquire(acquire("a", "q", at(12), at(9))).await.unwrap());
    // Deleting a queue removes its ownership.
    store.queue_delete(QueueDelete { name: qname("q"), now: at(9) }).await.unwrap();
    let owners = store.queue_owner_list().await.unwrap();
    let queues: Vec<_> = owners.iter().map(|o| o.queue.queue.as_str()).collect();
    assert_eq!(queues, ["r"]);
}

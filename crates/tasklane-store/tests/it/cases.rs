//! Backend-independent cases of the store conformance suite.

use std::sync::Arc;
use std::time::Duration;

use tasklane_core::queue::QueueSpec;
use tasklane_core::task::ResponseStatus;
use tasklane_core::{Code, LocationName, Queue, QueueName, QueueState, Task, TaskName, TaskSpec, Timestamp};
use tasklane_store::{
    AttemptResult, NodeHeartbeat, QueueCreate, QueueDelete, QueueList, QueueOwnerAcquire, QueueOwnerRelease,
    QueueOwnerRenew, QueuePurge, QueueSettingsPut, QueueStateSet, RecordCondition, RecordPut, Store, StoreError,
    TaskClaim, TaskClaimByName, TaskCreate, TaskDelete, TaskFinish, TaskList, TaskLookup, TaskOutcome,
};

const T0: Timestamp = Timestamp(1_700_000_000_000_000);
const GRACE: Duration = Duration::from_secs(5);

fn at(secs: i64) -> Timestamp {
    Timestamp(T0.0 + secs * 1_000_000)
}

fn qname(id: &str) -> QueueName {
    LocationName::new("p", "l").unwrap().queue(id).unwrap()
}

fn queue(id: &str) -> Queue {
    QueueSpec::default().resolve(qname(id), QueueState::Running, None).unwrap()
}

fn task(queue: &str, id: &str, schedule: Timestamp, now: Timestamp) -> Task {
    TaskSpec {
        name: Some(format!("{}/tasks/{id}", qname(queue))),
        url: "http://127.0.0.1:1/work".into(),
        body: id.as_bytes().to_vec(),
        headers: vec![("X-Id".into(), id.into())],
        schedule_time: Some(schedule),
        ..Default::default()
    }
    .validate(&qname(queue), now, || unreachable!())
    .unwrap()
}

async fn make_queue(store: &Arc<dyn Store>, id: &str) {
    store.queue_create(QueueCreate { queue: queue(id), now: T0 }).await.unwrap();
}

async fn make_task(store: &Arc<dyn Store>, q: &str, id: &str, schedule: Timestamp) -> Task {
    store.task_create(TaskCreate { task: task(q, id, schedule, T0), now: T0 }).await.unwrap()
}

fn failure(status: u16, now: Timestamp) -> AttemptResult {
    AttemptResult {
        http_status: status,
        responded: status != 0,
        status: ResponseStatus { code: Code::from_worker_http_status(status), message: format!("HTTP {status}") },
        response_time: now,
    }
}

fn tname(q: &str, id: &str) -> TaskName {
    qname(q).task(id).unwrap()
}

pub async fn queue_create_get_list(store: Arc<dyn Store>) {
    for id in ["b", "a", "c"] {
        make_queue(&store, id).await;
    }
    let other = LocationName::new("p", "elsewhere").unwrap().queue("z").unwrap();
    store
        .queue_create(QueueCreate {
            queue: QueueSpec::default().resolve(other, QueueState::Running, None).unwrap(),
            now: T0,
        })
        .await
        .unwrap();
    let got = store.queue_get(&qname("a")).await.unwrap().unwrap();
    assert_eq!(got, queue("a"));
    assert_eq!(store.queue_get(&qname("nope")).await.unwrap(), None);

    let parent = Some(LocationName::new("p", "l").unwrap());
    let page1 = store.queue_list(QueueList { parent: parent.clone(), after: None, limit: 2 }).await.unwrap();
    let ids: Vec<_> = page1.iter().map(|q| q.name.queue.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let page2 = store
        .queue_list(QueueList { parent: parent.clone(), after: Some(page1[1].name.clone()), limit: 2 })
        .await
        .unwrap();
    let ids: Vec<_> = page2.iter().map(|q| q.name.queue.as_str()).collect();
    assert_eq!(ids, ["c"]);
    let all = store.queue_list(QueueList { parent: None, after: None, limit: 100 }).await.unwrap();
    assert_eq!(all.len(), 4);
}

pub async fn queue_create_twice_is_refused(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    let err = store.queue_create(QueueCreate { queue: queue("q"), now: T0 }).await.unwrap_err();
    assert_eq!(err, StoreError::QueueAlreadyExists);
}

pub async fn queue_settings_put_keeps_state_and_upserts(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    store.queue_state_set(QueueStateSet { name: qname("q"), state: QueueState::Paused, now: T0 }).await.unwrap();
    let mut changed = queue("q");
    changed.rate_limits.max_dispatches_per_second = 3.0;
    changed.retry_config.max_attempts = 4;
    changed.state = QueueState::Running; // ignored: settings never change the state
    let got = store
        .queue_settings_put(QueueSettingsPut { queue: changed.clone(), create_if_missing: false, now: at(1) })
        .await
        .unwrap();
    assert_eq!(got.state, QueueState::Paused);
    assert_eq!(got.rate_limits.max_dispatches_per_second, 3.0);
    assert_eq!(got.retry_config.max_attempts, 4);

    let missing = store
        .queue_settings_put(QueueSettingsPut { queue: queue("new"), create_if_missing: false, now: at(1) })
        .await
        .unwrap_err();
    assert_eq!(missing, StoreError::QueueNotFound);
    let created = store
        .queue_settings_put(QueueSettingsPut { queue: queue("new"), create_if_missing: true, now: at(1) })
        .await
        .unwrap();
    assert_eq!(created, queue("new"));
}

pub async fn queue_state_set_and_missing_queue(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    let paused =
        store.queue_state_set(QueueStateSet { name: qname("q"), state: QueueState::Paused, now: T0 }).await.unwrap();
    assert_eq!(paused.state, QueueState::Paused);
    let resumed =
        store.queue_state_set(QueueStateSet { name: qname("q"), state: QueueState::Running, now: T0 }).await.unwrap();
    assert_eq!(resumed.state, QueueState::Running);
    let err = store
        .queue_state_set(QueueStateSet { name: qname("nope"), state: QueueState::Paused, now: T0 })
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::QueueNotFound);
}

pub async fn queue_purge_deletes_older_tasks_only(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "old", T0).await;
    let purged =
        store.queue_purge(QueuePurge { name: qname("q"), tombstone_until: at(3600), now: at(1) }).await.unwrap();
    assert_eq!(purged.purge_time, Some(at(1)));
    assert_eq!(purged.state, QueueState::Running);
    let newer = task("q", "new", at(2), at(2));
    store.task_create(TaskCreate { task: newer, now: at(2) }).await.unwrap();
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 1);
    assert_eq!(store.task_get(&tname("q", "old"), at(2)).await.unwrap(), TaskLookup::Tombstoned);
    let err = store.queue_purge(QueuePurge { name: qname("x"), tombstone_until: at(9), now: at(1) }).await.unwrap_err();
    assert_eq!(err, StoreError::QueueNotFound);
}

pub async fn queue_delete_removes_tasks(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", T0).await;
    store.queue_delete(QueueDelete { name: qname("q"), now: T0 }).await.unwrap();
    assert_eq!(store.queue_get(&qname("q")).await.unwrap(), None);
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 0);
    let err = store.queue_delete(QueueDelete { name: qname("q"), now: T0 }).await.unwrap_err();
    assert_eq!(err, StoreError::QueueNotFound);
}

pub async fn task_create_needs_queue_and_unique_name(store: Arc<dyn Store>) {
    let err = store.task_create(TaskCreate { task: task("q", "t", T0, T0), now: T0 }).await.unwrap_err();
    assert_eq!(err, StoreError::QueueNotFound);
    make_queue(&store, "q").await;
    let created = make_task(&store, "q", "t", T0).await;
    let err = store.task_create(TaskCreate { task: task("q", "t", T0, T0), now: T0 }).await.unwrap_err();
    assert_eq!(err, StoreError::TaskAlreadyExists);
    match store.task_get(&tname("q", "t"), T0).await.unwrap() {
        TaskLookup::Found(t) => assert_eq!(*t, created),
        other => panic!("expected the task, got {other:?}"),
    }
}

pub async fn task_names_are_tombstoned_for_the_window(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", T0).await;
    store.task_delete(TaskDelete { name: tname("q", "t"), tombstone_until: at(3600), now: at(1) }).await.unwrap();
    let err = store.task_create(TaskCreate { task: task("q", "t", at(2), at(2)), now: at(2) }).await.unwrap_err();
    assert_eq!(err, StoreError::TaskTombstoned);
    // After the window the name is free again, and maintenance forgets the tombstone.
    store.task_create(TaskCreate { task: task("q", "t", at(3600), at(3600)), now: at(3600) }).await.unwrap();
    assert_eq!(store.tombstone_expire(at(3601)).await.unwrap(), 1);
    assert_eq!(store.tombstone_expire(at(3601)).await.unwrap(), 0);
}

pub async fn task_list_pages_by_name(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_queue(&store, "other").await;
    for id in ["c", "a", "d", "b"] {
        make_task(&store, "q", id, T0).await;
    }
    make_task(&store, "other", "x", T0).await;
    let page = store.task_list(TaskList { queue: qname("q"), after: None, limit: 3 }).await.unwrap();
    let ids: Vec<_> = page.iter().map(|t| t.name.task.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(page[0].http_request.body, b"a");
    assert_eq!(page[0].http_request.headers, vec![("X-Id".to_string(), "a".to_string())]);
    let page = store.task_list(TaskList { queue: qname("q"), after: Some("c".into()), limit: 3 }).await.unwrap();
    let ids: Vec<_> = page.iter().map(|t| t.name.task.as_str()).collect();
    assert_eq!(ids, ["d"]);
}

pub async fn task_claim_takes_due_tasks_in_order(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "late", at(10)).await;
    make_task(&store, "q", "second", at(2)).await;
    make_task(&store, "q", "first", at(1)).await;
    let claim = |now| TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now };
    assert!(store.task_claim(claim(T0)).await.unwrap().is_empty());
    let got = store.task_claim(claim(at(5))).await.unwrap();
    let ids: Vec<_> = got.iter().map(|c| c.task.name.task.as_str()).collect();
    assert_eq!(ids, ["first", "second"]);
    assert_eq!(got[0].task.dispatch_count, 1);
    let attempt = got[0].task.last_attempt.clone().unwrap();
    assert_eq!(attempt.dispatch_time, Some(at(5)));
    assert_eq!(attempt.schedule_time, Some(at(1)));
    assert_eq!(got[0].task.first_attempt.clone().unwrap().dispatch_time, Some(at(5)));
    assert_eq!(store.task_next_due(&qname("q")).await.unwrap(), Some(at(10)));
}

pub async fn task_claim_respects_limit_and_leases(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    for i in 0..5 {
        make_task(&store, "q", &format!("t{i}"), T0).await;
    }
    let claim = |limit, now| TaskClaim { queue: qname("q"), limit, grace: GRACE, now };
    assert_eq!(store.task_claim(claim(2, T0)).await.unwrap().len(), 2);
    assert_eq!(store.task_claim(claim(10, T0)).await.unwrap().len(), 3);
    // Everything is leased now: nothing more to claim until the leases end.
    assert!(store.task_claim(claim(10, at(1))).await.unwrap().is_empty());
    let lease_end = T0.saturating_add(Duration::from_secs(600) + GRACE);
    assert_eq!(store.task_next_due(&qname("q")).await.unwrap(), Some(lease_end));
}

pub async fn task_claim_takes_nothing_from_a_paused_queue(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", T0).await;
    store.queue_state_set(QueueStateSet { name: qname("q"), state: QueueState::Paused, now: T0 }).await.unwrap();
    let claim = || TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(1) };
    assert!(store.task_claim(claim()).await.unwrap().is_empty(), "a paused queue leases nothing");
    // RunTask still works on a paused queue.
    let run =
        store.task_claim_by_name(TaskClaimByName { name: tname("q", "t"), grace: GRACE, now: at(1) }).await.unwrap();
    assert_eq!(run.task.dispatch_count, 1);
    store.queue_state_set(QueueStateSet { name: qname("q"), state: QueueState::Running, now: at(2) }).await.unwrap();
    let later = TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(3600) };
    assert_eq!(store.task_claim(later).await.unwrap().len(), 1, "resumed, and the RunTask lease ended");
}

pub async fn task_finish_is_fenced_by_lease(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", T0).await;
    let claimed = store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: T0 }).await.unwrap();
    let lease = claimed[0].lease_id;
    let finish = |lease_id| TaskFinish {
        name: tname("q", "t"),
        lease_id,
        outcome: TaskOutcome::Succeeded { tombstone_until: at(3600) },
        now: at(1),
    };
    assert!(!store.task_finish(finish(lease + 1)).await.unwrap(), "a wrong lease changes nothing");
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 1);
    assert!(store.task_finish(finish(lease)).await.unwrap());
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 0);
    assert!(!store.task_finish(finish(lease)).await.unwrap(), "a duplicate outcome changes nothing");
    assert_eq!(store.task_get(&tname("q", "t"), at(2)).await.unwrap(), TaskLookup::Tombstoned);
}

pub async fn task_retry_reschedules_and_counts(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", T0).await;
    let c = store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: T0 }).await.unwrap();
    let retry = TaskFinish {
        name: tname("q", "t"),
        lease_id: c[0].lease_id,
        outcome: TaskOutcome::Retry { attempt: failure(503, at(1)), retry_at: at(3) },
        now: at(1),
    };
    assert!(store.task_finish(retry).await.unwrap());
    assert!(
        store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: at(2) }).await.unwrap().is_empty()
    );
    let c = store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: at(3) }).await.unwrap();
    let t = &c[0].task;
    assert_eq!(t.dispatch_count, 2);
    assert_eq!(t.response_count, 1);
    assert_eq!(t.execution_count, 0, "a 5xx is not an execution");
    assert_eq!(t.last_http_status, 503);
    assert_eq!(t.schedule_time, at(3));
    assert_eq!(t.first_attempt.clone().unwrap().dispatch_time, Some(T0));
    let retry = TaskFinish {
        name: tname("q", "t"),
        lease_id: c[0].lease_id,
        outcome: TaskOutcome::Retry { attempt: failure(404, at(4)), retry_at: at(5) },
        now: at(4),
    };
    assert!(store.task_finish(retry).await.unwrap());
    let TaskLookup::Found(t) = store.task_get(&tname("q", "t"), at(4)).await.unwrap() else { panic!("task gone") };
    assert_eq!((t.response_count, t.execution_count), (2, 1));
    let last = t.last_attempt.unwrap();
    assert_eq!(last.response_time, Some(at(4)));
    assert_eq!(last.response_status.unwrap().code, Code::NotFound);
}

pub async fn task_expired_lease_is_claimed_again(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", T0).await;
    let first = store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: T0 }).await.unwrap();
    let after_lease = T0.saturating_add(Duration::from_secs(600) + GRACE);
    let second =
        store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: after_lease }).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].lease_id, second[0].lease_id);
    assert_eq!(second[0].task.dispatch_count, 2);
    // The first lease is stale now: its outcome is refused.
    let stale = TaskFinish {
        name: tname("q", "t"),
        lease_id: first[0].lease_id,
        outcome: TaskOutcome::Succeeded { tombstone_until: at(9999) },
        now: after_lease,
    };
    assert!(!store.task_finish(stale).await.unwrap());
}

pub async fn task_give_up_moves_to_dead_letters(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", T0).await;
    let c = store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: T0 }).await.unwrap();
    let give_up = TaskFinish {
        name: tname("q", "t"),
        lease_id: c[0].lease_id,
        outcome: TaskOutcome::GaveUp { attempt: failure(500, at(1)), tombstone_until: at(3600) },
        now: at(1),
    };
    assert!(store.task_finish(give_up).await.unwrap());
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 0);
    let dead = store.dead_letter_list(&qname("q"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].died_at, at(1));
    assert_eq!(dead[0].task.name, tname("q", "t"));
    assert_eq!(dead[0].task.http_request.body, b"t");
    assert_eq!(dead[0].task.last_http_status, 500);
    assert_eq!(dead[0].task.last_attempt.clone().unwrap().response_status.unwrap().code, Code::Internal);
    assert_eq!(store.task_get(&tname("q", "t"), at(2)).await.unwrap(), TaskLookup::Tombstoned);
}

pub async fn task_claim_by_name_ignores_schedule(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", at(1000)).await;
    let c = store.task_claim_by_name(TaskClaimByName { name: tname("q", "t"), grace: GRACE, now: T0 }).await.unwrap();
    assert_eq!(c.task.dispatch_count, 1);
    // Even a task that is leased can be run again; the newer lease wins.
    let again =
        store.task_claim_by_name(TaskClaimByName { name: tname("q", "t"), grace: GRACE, now: T0 }).await.unwrap();
    assert!(again.lease_id > c.lease_id);
    let err = store
        .task_claim_by_name(TaskClaimByName { name: tname("q", "missing"), grace: GRACE, now: T0 })
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::TaskNotFound);
}

pub async fn task_delete_and_lookup(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", T0).await;
    let del = |now| TaskDelete { name: tname("q", "t"), tombstone_until: at(3600), now };
    store.task_delete(del(at(1))).await.unwrap();
    assert_eq!(store.task_delete(del(at(2))).await.unwrap_err(), StoreError::TaskTombstoned);
    assert_eq!(store.task_get(&tname("q", "t"), at(2)).await.unwrap(), TaskLookup::Tombstoned);
    assert_eq!(store.task_get(&tname("q", "t"), at(3600)).await.unwrap(), TaskLookup::Missing);
    let err = store
        .task_delete(TaskDelete { name: tname("q", "never"), tombstone_until: at(3600), now: T0 })
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::TaskNotFound);
}

pub async fn concurrent_creates_are_all_committed(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    let mut handles = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            // Every tenth create is a duplicate and must fail without harming its batch.
            let id = if i % 10 == 9 { format!("t{}", i - 1) } else { format!("t{i}") };
            store.task_create(TaskCreate { task: task("q", &id, T0, T0), now: T0 }).await
        }));
    }
    let mut ok = 0;
    let mut dup = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::TaskAlreadyExists) => dup += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, dup), (450, 50));
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 450);
}

pub async fn task_lease_release_all_requeues_leased_tasks(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "leased", T0).await;
    make_task(&store, "q", "later", at(100)).await;
    let c = store.task_claim(TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: T0 }).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(store.task_lease_release_all(at(1)).await.unwrap(), 1);
    // The released task is due at once; the scheduled one keeps its time.
    let again = store.task_claim(TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(1) }).await.unwrap();
    let ids: Vec<_> = again.iter().map(|c| c.task.name.task.as_str()).collect();
    assert_eq!(ids, ["leased"]);
    assert_eq!(again[0].task.dispatch_count, 2);
    // The old lease no longer holds.
    let stale = TaskFinish {
        name: tname("q", "leased"),
        lease_id: c[0].lease_id,
        outcome: TaskOutcome::Succeeded { tombstone_until: at(3600) },
        now: at(2),
    };
    assert!(!store.task_finish(stale).await.unwrap());
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

pub async fn concurrent_finishes_are_each_fenced(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    for i in 0..200 {
        make_task(&store, "q", &format!("t{i:03}"), T0).await;
    }
    let claimed = store.task_claim(TaskClaim { queue: qname("q"), limit: 200, grace: GRACE, now: T0 }).await.unwrap();
    assert_eq!(claimed.len(), 200);
    let mut handles = Vec::new();
    for (i, c) in claimed.into_iter().enumerate() {
        let store = store.clone();
        // Every other outcome carries a stale lease and must change nothing.
        let lease_id = if i % 2 == 0 { c.lease_id } else { c.lease_id - 1 };
        handles.push(tokio::spawn(async move {
            let finish = TaskFinish {
                name: c.task.name.clone(),
                lease_id,
                outcome: TaskOutcome::Succeeded { tombstone_until: at(3600) },
                now: at(1),
            };
            (i, store.task_finish(finish).await.unwrap())
        }));
    }
    for h in handles {
        let (i, held) = h.await.unwrap();
        assert_eq!(held, i % 2 == 0, "outcome {i}");
    }
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 100);
}

pub async fn seed_queue_and_task(store: &dyn Store) {
    store.queue_create(QueueCreate { queue: queue("q"), now: T0 }).await.unwrap();
    store.task_create(TaskCreate { task: task("q", "t", T0, T0), now: T0 }).await.unwrap();
}

pub async fn check_seeded(store: &dyn Store) {
    assert_eq!(store.queue_get(&qname("q")).await.unwrap(), Some(queue("q")));
    assert_eq!(
        store.task_get(&tname("q", "t"), T0).await.unwrap(),
        TaskLookup::Found(Box::new(task("q", "t", T0, T0)))
    );
}

/// Run `rounds` of `per_round` tasks through create, claim and success, with store
/// maintenance after each round; returns `measure()` after each round.
pub async fn churn_rounds<F, Fut>(store: Arc<dyn Store>, rounds: usize, per_round: usize, measure: F) -> Vec<i64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    make_queue(&store, "churn").await;
    let mut sizes = Vec::new();
    for round in 0..rounds {
        let now = at(round as i64 * 10);
        let mut creates = Vec::new();
        for i in 0..per_round {
            let store = store.clone();
            creates.push(tokio::spawn(async move {
                let t = task("churn", &format!("r{round}x{i}"), now, now);
                store.task_create(TaskCreate { task: t, now }).await.unwrap();
            }));
        }
        for c in creates {
            c.await.unwrap();
        }
        let claimed =
            store.task_claim(TaskClaim { queue: qname("churn"), limit: per_round, grace: GRACE, now }).await.unwrap();
        assert_eq!(claimed.len(), per_round);
        let mut finishes = Vec::new();
        for c in claimed {
            let store = store.clone();
            finishes.push(tokio::spawn(async move {
                let outcome = TaskOutcome::Succeeded { tombstone_until: now };
                let finish = TaskFinish { name: c.task.name, lease_id: c.lease_id, outcome, now };
                assert!(store.task_finish(finish).await.unwrap());
            }));
        }
        for f in finishes {
            f.await.unwrap();
        }
        // Statistics reach the server about once a second; maintenance reads them.
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        store.store_maintain(now).await.unwrap();
        store.tombstone_expire(now.saturating_add(std::time::Duration::from_secs(1))).await.unwrap();
        sizes.push(measure().await);
    }
    sizes
}

pub async fn records_are_versioned_conditional_and_expire(store: Arc<dyn Store>) {
    let put = |key: &str, value: &str, condition, expires_at| RecordPut {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        condition,
        expires_at,
        now: at(0),
    };
    assert_eq!(store.record_get("a", at(0)).await.unwrap(), None);
    let first = store.record_put(put("a", "one", RecordCondition::Absent, None)).await.unwrap();
    assert_eq!((first.version, first.value.as_slice()), (1, b"one".as_slice()));
    assert_eq!(
        store.record_put(put("a", "again", RecordCondition::Absent, None)).await,
        Err(StoreError::RecordConflict),
        "Absent must not overwrite a live record"
    );
    assert_eq!(
        store.record_put(put("a", "stale", RecordCondition::Version(7), None)).await,
        Err(StoreError::RecordConflict),
        "a stale version must not overwrite"
    );
    let second = store.record_put(put("a", "two", RecordCondition::Version(1), None)).await.unwrap();
    assert_eq!(second.version, 2);
    let third = store.record_put(put("a", "three", RecordCondition::Always, None)).await.unwrap();
    assert_eq!(third.version, 3);
    assert_eq!(store.record_get("a", at(0)).await.unwrap().unwrap().value, b"three");
    assert_eq!(
        store.record_put(put("missing", "x", RecordCondition::Version(1), None)).await,
        Err(StoreError::RecordConflict)
    );

    // An expired record reads as absent, may be replaced by Absent, and maintenance deletes it.
    store.record_put(put("e", "old", RecordCondition::Absent, Some(at(10)))).await.unwrap();
    assert!(store.record_get("e", at(9)).await.unwrap().is_some());
    assert_eq!(store.record_get("e", at(10)).await.unwrap(), None);
    let mut later = put("e", "new", RecordCondition::Absent, Some(at(100)));
    later.now = at(20);
    assert_eq!(store.record_put(later).await.unwrap().value, b"new");
    store.record_put(put("gone", "x", RecordCondition::Absent, Some(at(10)))).await.unwrap();
    assert!(store.tombstone_expire(at(50)).await.unwrap() >= 1);
    assert_eq!(store.record_get("gone", at(0)).await.unwrap(), None, "expired records are deleted");
    assert!(store.record_get("e", at(50)).await.unwrap().is_some(), "a live record survives maintenance");

    store.record_delete("a").await.unwrap();
    assert_eq!(store.record_get("a", at(0)).await.unwrap(), None);
}

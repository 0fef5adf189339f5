//! Backend-independent cases of the store conformance suite.

use std::sync::Arc;
use std::time::Duration;

use tasklane_core::job::{FailurePolicy, Job, JobStatus, Progress};
use tasklane_core::queue::QueueSpec;
use tasklane_core::task::ResponseStatus;
use tasklane_core::{Code, LocationName, Queue, QueueName, QueueState, Task, TaskName, TaskSpec, Timestamp};
use tasklane_store::{
    AttemptResult, CallbackAttempt, CallbackState, ClaimedTask, DeadLetterList, DeadLetterRedrive, DeadLetterSelect,
    JobCreate, JobList, JobReport, JobReportKind, NodeHeartbeat, QueueCreate, QueueDelete, QueueList,
    QueueOwnerAcquire, QueueOwnerRelease, QueueOwnerRenew, QueuePurge, QueueSettingsPut, QueueStateSet,
    RecordCondition, RecordPut, Store, StoreError, TaskClaim, TaskClaimByName, TaskCreate, TaskDelete, TaskFinish,
    TaskLease, TaskList, TaskLookup, TaskOutcome, TaskRelease, TaskRenew,
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
        dispatch_time: now,
        response_time: now,
        body_excerpt: format!("body of {status}"),
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
    assert_eq!(purged.queue.purge_time, Some(at(1)));
    assert_eq!(purged.queue.state, QueueState::Running);
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

pub async fn task_create_many_settles_each_create_alone(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "taken", T0).await;
    make_task(&store, "q", "gone", T0).await;
    store.task_delete(TaskDelete { name: tname("q", "gone"), tombstone_until: at(3600), now: at(1) }).await.unwrap();
    let create = |queue: &str, id: &str| TaskCreate { task: task(queue, id, at(2), at(2)), now: at(2) };
    let results = store
        .task_create_many(vec![
            create("q", "a"),
            create("q", "taken"),
            create("q", "gone"),
            create("missing", "x"),
            create("q", "b"),
        ])
        .await;
    let outcomes: Vec<Result<String, StoreError>> = results.into_iter().map(|r| r.map(|t| t.name.task)).collect();
    assert_eq!(
        outcomes,
        vec![
            Ok("a".to_string()),
            Err(StoreError::TaskAlreadyExists),
            Err(StoreError::TaskTombstoned),
            Err(StoreError::QueueNotFound),
            Ok("b".to_string()),
        ]
    );
    let page = store.task_list(TaskList { queue: qname("q"), after: None, limit: 10 }).await.unwrap();
    let ids: Vec<_> = page.iter().map(|t| t.name.task.as_str()).collect();
    assert_eq!(ids, ["a", "b", "taken"]);
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
    let header = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(page[0].http_request.headers, vec![header("X-Id", "a"), header("User-Agent", "Google-Cloud-Tasks")]);
    let page = store.task_list(TaskList { queue: qname("q"), after: Some("c".into()), limit: 3 }).await.unwrap();
    let ids: Vec<_> = page.iter().map(|t| t.name.task.as_str()).collect();
    assert_eq!(ids, ["d"]);
}

pub async fn task_claim_takes_due_tasks_in_order(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "late", at(10)).await;
    make_task(&store, "q", "second", at(2)).await;
    make_task(&store, "q", "first", at(1)).await;
    let claim = |now| TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now, owner: None };
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

/// One claim order on both stores: earliest due first, then the order the tasks were made.
/// A task whose lease ran out is due when the lease ended, not at its schedule time; and a
/// pull task given back is due when it was given back.
pub async fn task_claims_come_due_first_then_in_creation_order(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "expired", T0).await;
    let claim = |limit, now| TaskClaim { queue: qname("q"), limit, grace: GRACE, now, owner: None };
    assert_eq!(store.task_claim(claim(1, T0)).await.unwrap().len(), 1);
    // Made later and named against their creation order; both due before the lease ends.
    make_task(&store, "q", "zeta", at(300)).await;
    make_task(&store, "q", "alpha", at(300)).await;
    let names = |got: Vec<ClaimedTask>| got.into_iter().map(|c| c.task.name.task).collect::<Vec<_>>();
    assert_eq!(names(store.task_claim(claim(10, at(1000))).await.unwrap()), ["zeta", "alpha", "expired"]);

    let mut q = queue("pull");
    q.kind = tasklane_core::QueueKind::Pull;
    store.queue_create(QueueCreate { queue: q, now: T0 }).await.unwrap();
    for (id, schedule) in [("given-back", T0), ("omega", at(20)), ("beta", at(20))] {
        let spec = tasklane_core::PullSpec {
            name: Some(format!("{}/tasks/{id}", qname("pull"))),
            payload: id.as_bytes().to_vec(),
            tag: None,
            env: Vec::new(),
            schedule_time: Some(schedule),
        };
        let task = spec.validate(&qname("pull"), T0, || unreachable!()).unwrap();
        store.task_create(TaskCreate { task, now: T0 }).await.unwrap();
    }
    let lease = |limit, now| TaskLease { queue: qname("pull"), limit, lease: Duration::from_secs(30), tag: None, now };
    let first = store.task_lease(lease(1, at(1))).await.unwrap();
    assert_eq!(names(first.clone()), ["given-back"]);
    let back = TaskRelease { name: first[0].task.name.clone(), lease_id: first[0].lease_id, now: at(40) };
    assert!(store.task_release(back).await.unwrap());
    assert_eq!(names(store.task_lease(lease(10, at(50))).await.unwrap()), ["omega", "beta", "given-back"]);
}

pub async fn task_claim_respects_limit_and_leases(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    for i in 0..5 {
        make_task(&store, "q", &format!("t{i}"), T0).await;
    }
    let claim = |limit, now| TaskClaim { queue: qname("q"), limit, grace: GRACE, now, owner: None };
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
    let claim = || TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(1), owner: None };
    assert!(store.task_claim(claim()).await.unwrap().is_empty(), "a paused queue leases nothing");
    // RunTask still works on a paused queue.
    let run =
        store.task_claim_by_name(TaskClaimByName { name: tname("q", "t"), grace: GRACE, now: at(1) }).await.unwrap();
    assert_eq!(run.task.dispatch_count, 1);
    store.queue_state_set(QueueStateSet { name: qname("q"), state: QueueState::Running, now: at(2) }).await.unwrap();
    let later = TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(3600), owner: None };
    assert_eq!(store.task_claim(later).await.unwrap().len(), 1, "resumed, and the RunTask lease ended");
}

pub async fn task_finish_is_fenced_by_lease(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "t", T0).await;
    let claimed =
        store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: T0, owner: None }).await.unwrap();
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
    let c =
        store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: T0, owner: None }).await.unwrap();
    let retry = TaskFinish {
        name: tname("q", "t"),
        lease_id: c[0].lease_id,
        outcome: TaskOutcome::Retry { attempt: failure(503, at(1)), retry_at: at(3) },
        now: at(1),
    };
    assert!(store.task_finish(retry).await.unwrap());
    assert!(
        store
            .task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: at(2), owner: None })
            .await
            .unwrap()
            .is_empty()
    );
    let c = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: at(3), owner: None })
        .await
        .unwrap();
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
    let first =
        store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: T0, owner: None }).await.unwrap();
    let after_lease = T0.saturating_add(Duration::from_secs(600) + GRACE);
    let second = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: after_lease, owner: None })
        .await
        .unwrap();
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
    let c =
        store.task_claim(TaskClaim { queue: qname("q"), limit: 1, grace: GRACE, now: T0, owner: None }).await.unwrap();
    let give_up = TaskFinish {
        name: tname("q", "t"),
        lease_id: c[0].lease_id,
        outcome: TaskOutcome::GaveUp { attempt: failure(500, at(1)), tombstone_until: at(3600) },
        now: at(1),
    };
    assert!(store.task_finish(give_up).await.unwrap());
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 0);
    let dead = store.dead_letter_list(DeadLetterList { queue: qname("q"), after: None, limit: 10 }).await.unwrap();
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

pub async fn task_lease_release_requeues_leased_tasks_in_their_order(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_queue(&store, "other").await;
    make_task(&store, "q", "leased", T0).await;
    make_task(&store, "q", "backlog", at(1)).await;
    make_task(&store, "q", "later", at(100)).await;
    make_task(&store, "other", "elsewhere", T0).await;
    let claim = |q: &str, limit, now| TaskClaim { queue: qname(q), limit, grace: GRACE, now, owner: None };
    let c = store.task_claim(claim("q", 1, at(1))).await.unwrap();
    assert_eq!(c.iter().map(|c| c.task.name.task.as_str()).collect::<Vec<_>>(), ["leased"]);
    assert_eq!(store.task_claim(claim("other", 10, at(1))).await.unwrap().len(), 1);
    // A queue's leases only (a cluster taking over a dead node's queue).
    assert_eq!(store.task_lease_release(Some(qname("q")), at(5)).await.unwrap(), 1);
    assert!(store.task_claim(claim("other", 10, at(5))).await.unwrap().is_empty(), "another queue's lease holds");
    // The released task is due where it was, ahead of the backlog; the scheduled one keeps its time.
    let again = store.task_claim(claim("q", 1, at(5))).await.unwrap();
    assert_eq!(again.iter().map(|c| c.task.name.task.as_str()).collect::<Vec<_>>(), ["leased"], "in its order");
    assert_eq!(again[0].task.dispatch_count, 2);
    let next = store.task_claim(claim("q", 10, at(5))).await.unwrap();
    assert_eq!(next.iter().map(|c| c.task.name.task.as_str()).collect::<Vec<_>>(), ["backlog"]);
    // The old lease no longer holds.
    let stale = TaskFinish {
        name: tname("q", "leased"),
        lease_id: c[0].lease_id,
        outcome: TaskOutcome::Succeeded { tombstone_until: at(3600) },
        now: at(6),
    };
    assert!(!store.task_finish(stale).await.unwrap());
    // Every queue's (an embedded store at start).
    assert_eq!(store.task_lease_release(None, at(7)).await.unwrap(), 3);
}

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

pub async fn concurrent_finishes_are_each_fenced(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    for i in 0..200 {
        make_task(&store, "q", &format!("t{i:03}"), T0).await;
    }
    let claimed = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 200, grace: GRACE, now: T0, owner: None })
        .await
        .unwrap();
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
        let claimed = store
            .task_claim(TaskClaim { queue: qname("churn"), limit: per_round, grace: GRACE, now, owner: None })
            .await
            .unwrap();
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
        // Statistics reach the server about once a second, and maintenance reads them: ask
        // until it has vacuumed the round's dead tasks.
        crate::eventually("maintenance to vacuum the churned tasks", std::time::Duration::from_secs(20), || {
            let store = store.clone();
            async move { store.store_maintain(now).await.unwrap().iter().any(|d| d.starts_with("vacuumed tasks ")) }
        })
        .await;
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

    // Listing by prefix: live records only, in key order, and nothing outside the prefix.
    for key in ["tok:b", "tok:a", "tok_x", "to", "tok:c"] {
        store.record_put(put(key, key, RecordCondition::Always, None)).await.unwrap();
    }
    store.record_put(put("tok:old", "x", RecordCondition::Always, Some(at(5)))).await.unwrap();
    let listed = store.record_list("tok:", at(10)).await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["tok:a", "tok:b", "tok:c"]);
    assert_eq!(listed[0].value, b"tok:a");
    assert_eq!(store.record_list("tok:", at(0)).await.unwrap().len(), 4, "not yet expired: listed");
    assert!(store.record_list("nothing:", at(0)).await.unwrap().is_empty());
}

fn job(id: &str, q: &str, total: i64, policy: FailurePolicy) -> Job {
    Job {
        id: id.into(),
        queue: qname(q),
        status: JobStatus::Pending,
        labels: vec![("user".into(), format!("u-{id}"))],
        idempotency_key: None,
        policy,
        total,
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        running: 0,
        progress: Progress::default(),
        result: None,
        error: None,
        callback_url: None,
        created_at: T0,
        started_at: None,
        finished_at: None,
        result_ttl: Duration::from_secs(3600),
    }
}

fn job_tasks(j: &Job, q: &str, n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| {
            let mut t = task(q, &format!("{}-{i}", j.id), T0, T0);
            t.job_id = Some(j.id.clone());
            t
        })
        .collect()
}

async fn create_job(store: &Arc<dyn Store>, j: Job, tasks: usize) -> Job {
    let q = j.queue.queue.clone();
    let tasks = job_tasks(&j, &q, tasks);
    store.job_create(JobCreate { job: j, tasks, now: T0 }).await.unwrap().job
}

async fn event_kinds(store: &Arc<dyn Store>, id: &str) -> Vec<String> {
    store.job_events(id, 0, 1000).await.unwrap().into_iter().map(|e| e.kind).collect()
}

pub async fn task_finish_job_names_the_job_of_a_recorded_outcome(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    create_job(&store, job("j1", "q", 1, FailurePolicy::FinishAll), 1).await;
    make_task(&store, "q", "plain", T0).await;
    let claimed = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(1), owner: None })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let ok = TaskOutcome::Succeeded { tombstone_until: at(100) };
    let finish =
        |c: &ClaimedTask, lease_id| TaskFinish { name: c.task.name.clone(), lease_id, outcome: ok.clone(), now: at(2) };
    let of_job = claimed.iter().find(|c| c.task.job_id.is_some()).unwrap();
    let plain = claimed.iter().find(|c| c.task.job_id.is_none()).unwrap();
    assert_eq!(store.task_finish_job(finish(of_job, of_job.lease_id + 1)).await.unwrap(), None, "a wrong lease");
    assert_eq!(store.task_finish_job(finish(of_job, of_job.lease_id)).await.unwrap(), Some(Some("j1".to_string())));
    assert_eq!(store.task_finish_job(finish(plain, plain.lease_id)).await.unwrap(), Some(None));
    assert_eq!(store.task_finish_job(finish(plain, plain.lease_id)).await.unwrap(), None, "a duplicate outcome");
    // The outcome was recorded: the job counted it.
    assert_eq!(store.job_get("j1", at(2)).await.unwrap().unwrap().succeeded, 1);
}

pub async fn jobs_count_outcomes_and_settle_with_events_in_order(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    let created = create_job(&store, job("j1", "q", 3, FailurePolicy::FinishAll), 3).await;
    assert_eq!((created.status, created.total, created.running), (JobStatus::Pending, 3, 0));
    let claimed = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(1), owner: None })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|c| c.task.job_id.as_deref() == Some("j1")), "claimed tasks carry their job");
    let running = store.job_get("j1", at(1)).await.unwrap().unwrap();
    assert_eq!((running.status, running.running, running.started_at), (JobStatus::Running, 3, Some(at(1))));
    let by_id = |id: &str| claimed.iter().find(|c| c.task.name.task == id).unwrap().clone();
    let finish =
        |c: &ClaimedTask, outcome, now| TaskFinish { name: c.task.name.clone(), lease_id: c.lease_id, outcome, now };
    let ok = TaskOutcome::Succeeded { tombstone_until: at(100) };
    assert!(store.task_finish(finish(&by_id("j1-0"), ok.clone(), at(2))).await.unwrap());
    // A stale outcome counts nothing.
    let mut stale = by_id("j1-0");
    stale.lease_id += 7;
    assert!(!store.task_finish(finish(&stale, ok.clone(), at(2))).await.unwrap());
    let gave_up = TaskOutcome::GaveUp { attempt: failure(500, at(3)), tombstone_until: at(100) };
    assert!(store.task_finish(finish(&by_id("j1-1"), gave_up, at(3))).await.unwrap());
    let retry = TaskOutcome::Retry { attempt: failure(503, at(4)), retry_at: at(5) };
    assert!(store.task_finish(finish(&by_id("j1-2"), retry, at(4))).await.unwrap());
    let mid = store.job_get("j1", at(4)).await.unwrap().unwrap();
    assert_eq!((mid.status, mid.succeeded, mid.failed, mid.running, mid.pending()), (JobStatus::Running, 1, 1, 0, 1));
    let again = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(6), owner: None })
        .await
        .unwrap();
    assert!(store.task_finish(finish(&again[0], ok, at(7))).await.unwrap());
    let done = store.job_get("j1", at(7)).await.unwrap().unwrap();
    assert_eq!((done.status, done.succeeded, done.failed, done.finished_at), (JobStatus::Failed, 2, 1, Some(at(7))));
    assert_eq!(
        event_kinds(&store, "j1").await,
        ["created", "running", "task_succeeded", "task_failed", "task_succeeded", "failed"],
        "every change is an event, in order"
    );
    let events = store.job_events("j1", 4, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6], "events resume after a number");
    assert_eq!(
        (events[1].job.status, events[1].job.succeeded),
        (JobStatus::Failed, 2),
        "an event holds the job as it was"
    );
}

/// Every way a job's task can end counts it: PurgeQueue (a delivery in flight included),
/// DeleteTask and DeleteQueue count the tasks they remove as cancelled, and the job ends.
pub async fn jobs_end_when_their_tasks_are_removed(store: Arc<dyn Store>) {
    let ok = TaskOutcome::Succeeded { tombstone_until: at(100) };
    let finish =
        |c: &ClaimedTask, outcome, now| TaskFinish { name: c.task.name.clone(), lease_id: c.lease_id, outcome, now };
    // PurgeQueue while one task of three is being delivered.
    make_queue(&store, "purged").await;
    let mut j = job("pj", "purged", 3, FailurePolicy::FinishAll);
    j.callback_url = Some("http://127.0.0.1:1/hook".into());
    create_job(&store, j, 3).await;
    let claimed = store
        .task_claim(TaskClaim { queue: qname("purged"), limit: 1, grace: GRACE, now: at(1), owner: None })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store.queue_purge(QueuePurge { name: qname("purged"), tombstone_until: at(100), now: at(2) }).await.unwrap();
    let purged = store.job_get("pj", at(2)).await.unwrap().unwrap();
    assert_eq!(
        (purged.status, purged.succeeded, purged.failed, purged.cancelled, purged.running, purged.pending()),
        (JobStatus::Cancelled, 0, 0, 3, 0, 0),
        "a purge counts every task it removes, the one in flight included"
    );
    assert_eq!(purged.finished_at, Some(at(2)));
    assert_eq!(purged.error.as_deref(), Some("3 tasks were removed by PurgeQueue before they finished"));
    assert!(!store.task_finish(finish(&claimed[0], ok.clone(), at(3))).await.unwrap(), "the late outcome is refused");
    let after = store.job_get("pj", at(3)).await.unwrap().unwrap();
    assert_eq!((after.succeeded, after.cancelled), (0, 3), "and counts nothing twice");
    assert_eq!(event_kinds(&store, "pj").await, ["created", "running", "tasks_removed", "cancelled"]);
    let callbacks = store.callback_list("pj").await.unwrap();
    assert_eq!(callbacks.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>(), ["job.finished"]);

    // DeleteTask of the last task left, after one succeeded.
    make_queue(&store, "deleted").await;
    create_job(&store, job("dj", "deleted", 2, FailurePolicy::FinishAll), 2).await;
    let claimed = store
        .task_claim(TaskClaim { queue: qname("deleted"), limit: 1, grace: GRACE, now: at(1), owner: None })
        .await
        .unwrap();
    assert!(store.task_finish(finish(&claimed[0], ok.clone(), at(2))).await.unwrap());
    let left = if claimed[0].task.name.task == "dj-0" { "dj-1" } else { "dj-0" };
    let name = TaskName::parse(&format!("{}/tasks/{left}", qname("deleted"))).unwrap();
    store.task_delete(TaskDelete { name, tombstone_until: at(100), now: at(3) }).await.unwrap();
    let deleted = store.job_get("dj", at(3)).await.unwrap().unwrap();
    assert_eq!(
        (deleted.status, deleted.succeeded, deleted.cancelled, deleted.pending()),
        (JobStatus::Cancelled, 1, 1, 0)
    );
    assert_eq!(deleted.error.as_deref(), Some("1 task was removed by DeleteTask before it finished"));

    // DeleteQueue, with a job of two queued tasks; a job in another queue is untouched.
    make_queue(&store, "gone").await;
    create_job(&store, job("gj", "gone", 2, FailurePolicy::FinishAll), 2).await;
    create_job(&store, job("kept", "deleted", 1, FailurePolicy::FinishAll), 1).await;
    store.queue_delete(QueueDelete { name: qname("gone"), now: at(4) }).await.unwrap();
    let gone = store.job_get("gj", at(4)).await.unwrap().unwrap();
    assert_eq!((gone.status, gone.cancelled, gone.pending()), (JobStatus::Cancelled, 2, 0));
    assert_eq!(gone.error.as_deref(), Some("2 tasks were removed by DeleteQueue before they finished"));
    let kept = store.job_get("kept", at(4)).await.unwrap().unwrap();
    assert_eq!((kept.status, kept.cancelled, kept.pending()), (JobStatus::Pending, 0, 1));

    // A job cancelled by its owner keeps its status when its running task is purged later,
    // and its counts still add up.
    create_job(&store, job("cj", "purged", 2, FailurePolicy::FinishAll), 2).await;
    store
        .task_claim(TaskClaim { queue: qname("purged"), limit: 1, grace: GRACE, now: at(5), owner: None })
        .await
        .unwrap();
    store.job_cancel("cj", at(5)).await.unwrap();
    store.queue_purge(QueuePurge { name: qname("purged"), tombstone_until: at(100), now: at(6) }).await.unwrap();
    let cancelled = store.job_get("cj", at(6)).await.unwrap().unwrap();
    assert_eq!((cancelled.status, cancelled.cancelled, cancelled.pending()), (JobStatus::Cancelled, 2, 0));
    assert_eq!(cancelled.error, None, "an owner's cancel is not blamed on the purge");
}

/// Many tasks of one job finishing at once (PostgreSQL group-commits them) still count one
/// by one: exact counts, and one event per task outcome, on both backends.
pub async fn a_job_s_concurrent_outcomes_are_each_counted_and_recorded(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    create_job(&store, job("many", "q", 40, FailurePolicy::FinishAll), 40).await;
    let claimed = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 100, grace: GRACE, now: at(1), owner: None })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 40);
    let finishes = claimed.iter().map(|c| {
        let store = store.clone();
        let finish = TaskFinish {
            name: c.task.name.clone(),
            lease_id: c.lease_id,
            outcome: TaskOutcome::Succeeded { tombstone_until: at(100) },
            now: at(2),
        };
        async move { store.task_finish(finish).await.unwrap() }
    });
    let held = futures_util::future::join_all(finishes).await;
    assert!(held.iter().all(|h| *h), "every outcome was recorded");
    let done = store.job_get("many", at(2)).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.succeeded, done.failed, done.running, done.pending()),
        (JobStatus::Succeeded, 40, 0, 0, 0)
    );
    let events = store.job_events("many", 0, 1000).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "task_succeeded").count(), 40, "one event per outcome: {kinds:?}");
    assert_eq!((kinds[0], kinds[1], *kinds.last().unwrap()), ("created", "running", "succeeded"));
    assert_eq!(kinds.len(), 43);
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=43).collect::<Vec<i64>>(), "numbered without gaps");
    let counted: Vec<i64> = events.iter().filter(|e| e.kind == "task_succeeded").map(|e| e.job.succeeded).collect();
    assert_eq!(counted, (1..=40).collect::<Vec<i64>>(), "each event holds the count after its outcome");
}

pub async fn jobs_fail_fast_cancels_the_tasks_not_started(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    create_job(&store, job("ff", "q", 4, FailurePolicy::FailFast), 4).await;
    let claimed = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 2, grace: GRACE, now: at(1), owner: None })
        .await
        .unwrap();
    let gave_up = TaskOutcome::GaveUp { attempt: failure(500, at(2)), tombstone_until: at(100) };
    let c = &claimed[0];
    store
        .task_finish(TaskFinish { name: c.task.name.clone(), lease_id: c.lease_id, outcome: gave_up, now: at(2) })
        .await
        .unwrap();
    let failed = store.job_get("ff", at(2)).await.unwrap().unwrap();
    assert_eq!((failed.status, failed.failed, failed.cancelled, failed.running), (JobStatus::Failed, 1, 2, 1));
    assert!(failed.error.as_deref().unwrap_or("").contains("failed for good"), "{failed:?}");
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 1, "only the running task is left");
    // The running task still finishes and counts; the job stays failed.
    let c = &claimed[1];
    let ok = TaskOutcome::Succeeded { tombstone_until: at(100) };
    store
        .task_finish(TaskFinish { name: c.task.name.clone(), lease_id: c.lease_id, outcome: ok, now: at(3) })
        .await
        .unwrap();
    let last = store.job_get("ff", at(3)).await.unwrap().unwrap();
    assert_eq!((last.status, last.succeeded, last.pending()), (JobStatus::Failed, 1, 0));
}

pub async fn jobs_take_reports_and_cancel(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    create_job(&store, job("r", "q", 2, FailurePolicy::FinishAll), 2).await;
    let report = |kind| JobReport { id: "r".into(), kind, now: at(1) };
    let progress = |percent: f64, allow_decrease| JobReportKind::Progress {
        progress: Progress { percent, step: "render".into(), step_number: 2, message: "frames".into() },
        allow_decrease,
    };
    let p = store.job_report(report(progress(40.0, false))).await.unwrap();
    assert_eq!((p.status, p.progress.percent, p.progress.step_number), (JobStatus::Running, 40.0, 2));
    assert!(matches!(store.job_report(report(progress(10.0, false))).await, Err(StoreError::JobProgressBackwards(_))));
    assert_eq!(store.job_report(report(progress(10.0, true))).await.unwrap().progress.percent, 10.0);
    let r = store.job_report(report(JobReportKind::Result(r#"{"url":"x"}"#.into()))).await.unwrap();
    assert_eq!(r.result.as_deref(), Some(r#"{"url":"x"}"#));
    let cancelled = store.job_cancel("r", at(2)).await.unwrap();
    assert_eq!((cancelled.status, cancelled.cancelled), (JobStatus::Cancelled, 2));
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 0, "a cancelled job's tasks never run");
    assert_eq!(store.job_cancel("r", at(3)).await, Err(StoreError::JobFinished(JobStatus::Cancelled)));
    assert_eq!(
        store.job_report(report(progress(90.0, false))).await.unwrap_err(),
        StoreError::JobFinished(JobStatus::Cancelled),
        "a late report is refused"
    );
    assert_eq!(store.job_cancel("nope", at(3)).await, Err(StoreError::JobNotFound));
    assert_eq!(event_kinds(&store, "r").await, ["created", "progress", "progress", "result", "cancelled"]);
    let last = store.job_events("r", 4, 10).await.unwrap();
    assert_eq!(last[0].job.cancelled, 2, "the final event holds the cancelled count");
    // A worker may fail a job outright.
    create_job(&store, job("f", "q", 1, FailurePolicy::FinishAll), 1).await;
    let failed = store
        .job_report(JobReport { id: "f".into(), kind: JobReportKind::Fail("out of memory".into()), now: at(4) })
        .await
        .unwrap();
    assert_eq!(
        (failed.status, failed.error.as_deref(), failed.cancelled),
        (JobStatus::Failed, Some("out of memory"), 1)
    );
}

pub async fn jobs_are_created_whole_or_not_at_all_and_idempotently(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_task(&store, "q", "taken", T0).await;
    let j = job("whole", "q", 3, FailurePolicy::FinishAll);
    let mut tasks = job_tasks(&j, "q", 2);
    let mut clash = task("q", "taken", T0, T0);
    clash.job_id = Some("whole".into());
    tasks.push(clash);
    let r = store.job_create(JobCreate { job: j, tasks, now: T0 }).await;
    assert_eq!(r.unwrap_err(), StoreError::TaskAlreadyExists);
    assert_eq!(store.job_get("whole", T0).await.unwrap(), None, "no job is left behind");
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 1, "no task of the refused job is left behind");
    let missing = store
        .job_create(JobCreate { job: job("m", "nope", 0, FailurePolicy::FinishAll), tasks: vec![], now: T0 })
        .await;
    assert_eq!(missing.unwrap_err(), StoreError::QueueNotFound);

    let mut keyed = job("k1", "q", 1, FailurePolicy::FinishAll);
    keyed.idempotency_key = Some("order-7".into());
    let first =
        store.job_create(JobCreate { tasks: job_tasks(&keyed, "q", 1), job: keyed.clone(), now: T0 }).await.unwrap();
    assert!(!first.existed);
    let mut retry = keyed.clone();
    retry.id = "k2".into();
    let second = store.job_create(JobCreate { tasks: job_tasks(&retry, "q", 1), job: retry, now: T0 }).await.unwrap();
    assert!(second.existed);
    assert_eq!(second.job.id, "k1", "the same key answers with the first job");
    assert_eq!(store.task_count(&qname("q")).await.unwrap(), 2, "the retried request created no task");
}

pub async fn jobs_list_by_filter_and_expire(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    make_queue(&store, "other").await;
    for id in ["a", "b", "c"] {
        create_job(&store, job(id, "q", 1, FailurePolicy::FinishAll), 1).await;
    }
    create_job(&store, job("d", "other", 1, FailurePolicy::FinishAll), 1).await;
    store.job_cancel("b", at(10)).await.unwrap();
    let list = |f: JobList| {
        let store = store.clone();
        async move { store.job_list(JobList { limit: 10, now: at(11), ..f }).await.unwrap() }
    };
    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(list(JobList::default()).await), ["a", "b", "c", "d"]);
    assert_eq!(ids(list(JobList { status: Some(JobStatus::Cancelled), ..Default::default() }).await), ["b"]);
    assert_eq!(ids(list(JobList { queue: Some(qname("other")), ..Default::default() }).await), ["d"]);
    assert_eq!(ids(list(JobList { label: Some(("user".into(), "u-c".into())), ..Default::default() }).await), ["c"]);
    let page = list(JobList { after: Some((T0, "b".into())), ..Default::default() }).await;
    assert_eq!(ids(page), ["c", "d"]);
    assert_eq!(ids(list(JobList { created_before: Some(T0), ..Default::default() }).await), Vec::<String>::new());
    // b finished at 10 with a one-hour TTL: gone after that, from every table.
    assert!(store.job_get("b", at(3609)).await.unwrap().is_some());
    assert_eq!(store.job_get("b", at(3610)).await.unwrap(), None);
    store.tombstone_expire(at(3610)).await.unwrap();
    assert!(store.job_events("b", 0, 10).await.unwrap().is_empty(), "expired jobs lose their events");
    assert_eq!(ids(list(JobList { now: T0, ..Default::default() }).await), ["a", "c", "d"]);
}

/// A large body (kept apart from the task's row by SQLite) comes back whole through every
/// read: get, list, claim, dead letter and redrive.
pub async fn large_bodies_come_back_whole_everywhere(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    let body: Vec<u8> = (0..48 * 1024).map(|i| (i % 251) as u8).collect();
    let mut big = task("q", "big", T0, T0);
    big.http_request.body = body.clone();
    store.task_create(TaskCreate { task: big.clone(), now: T0 }).await.unwrap();
    make_task(&store, "q", "small", T0).await;
    let TaskLookup::Found(got) = store.task_get(&big.name, T0).await.unwrap() else { panic!("the task is there") };
    assert_eq!(got.http_request.body, body, "get");
    let listed = store.task_list(TaskList { queue: qname("q"), after: None, limit: 10 }).await.unwrap();
    assert_eq!(listed.iter().map(|t| t.http_request.body.len()).collect::<Vec<_>>(), [body.len(), 5], "list");
    let claim = |now| TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now, owner: None };
    let claimed = store.task_claim(claim(at(1))).await.unwrap();
    let c = claimed.iter().find(|c| c.task.name == big.name).unwrap();
    assert_eq!(c.task.http_request.body, body, "claim");
    let retry = TaskOutcome::Retry { attempt: failure(503, at(2)), retry_at: at(2) };
    let finish =
        |c: &ClaimedTask, outcome, now| TaskFinish { name: c.task.name.clone(), lease_id: c.lease_id, outcome, now };
    assert!(store.task_finish(finish(c, retry, at(2))).await.unwrap());
    let again = store.task_claim(claim(at(3))).await.unwrap();
    let c = again.iter().find(|c| c.task.name == big.name).unwrap();
    assert_eq!(c.task.http_request.body, body, "a claim after a retry");
    let gave_up = TaskOutcome::GaveUp { attempt: failure(500, at(4)), tombstone_until: at(5) };
    assert!(store.task_finish(finish(c, gave_up, at(4))).await.unwrap());
    let dead = store.dead_letter_list(DeadLetterList { queue: qname("q"), after: None, limit: 10 }).await.unwrap();
    assert_eq!(dead[0].task.http_request.body, body, "dead letter");
    let redrive = DeadLetterRedrive { queue: qname("q"), select: DeadLetterSelect::Ids(vec![dead[0].id]), now: at(6) };
    store.dead_letter_redrive(redrive).await.unwrap();
    let TaskLookup::Found(back) = store.task_get(&big.name, at(6)).await.unwrap() else { panic!("redriven") };
    assert_eq!(back.http_request.body, body, "redriven");
}

pub async fn dead_letters_keep_every_attempt_and_can_be_redriven_or_purged(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    for id in ["a", "b", "c"] {
        make_task(&store, "q", id, T0).await;
    }
    // Each task fails twice: once retried, once for good.
    for (round, outcome_at) in [(0, 1), (1, 3)] {
        let claim = TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(outcome_at - 1), owner: None };
        let claimed = store.task_claim(claim).await.unwrap();
        assert_eq!(claimed.len(), 3);
        for c in claimed {
            let outcome = if round == 0 {
                TaskOutcome::Retry { attempt: failure(503, at(outcome_at)), retry_at: at(outcome_at) }
            } else {
                TaskOutcome::GaveUp { attempt: failure(500, at(outcome_at)), tombstone_until: at(3600) }
            };
            let finish = TaskFinish { name: c.task.name.clone(), lease_id: c.lease_id, outcome, now: at(outcome_at) };
            assert!(store.task_finish(finish).await.unwrap());
        }
    }
    let list = |after| DeadLetterList { queue: qname("q"), after, limit: 2 };
    let first = store.dead_letter_list(list(None)).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = store.dead_letter_list(list(Some(first[1].id))).await.unwrap();
    assert_eq!(rest.len(), 1, "pages by id");
    let dead = &first[0];
    let log: Vec<(u16, &str)> = dead.attempts.iter().map(|a| (a.http_status, a.body_excerpt.as_str())).collect();
    assert_eq!(log, [(503, "body of 503"), (500, "body of 500")], "every attempt is kept, oldest first");
    assert_eq!(dead.attempts[1].code, Code::Internal);
    assert_eq!(store.dead_letter_get(&qname("q"), dead.id).await.unwrap().as_ref(), Some(dead));
    assert_eq!(store.dead_letter_get(&qname("other"), dead.id).await.unwrap(), None, "ids belong to their queue");

    // Redrive one: the same name comes back as a new task, due now, with a new attempt series.
    let redriven = store
        .dead_letter_redrive(DeadLetterRedrive {
            queue: qname("q"),
            select: DeadLetterSelect::Ids(vec![dead.id]),
            now: at(10),
        })
        .await
        .unwrap();
    assert_eq!(redriven.tasks, std::slice::from_ref(&dead.task.name));
    let TaskLookup::Found(back) = store.task_get(&dead.task.name, at(10)).await.unwrap() else {
        panic!("the redriven task is live")
    };
    assert_eq!(
        (back.dispatch_count, back.schedule_time, back.http_request.body.clone()),
        (0, at(10), dead.task.http_request.body.clone())
    );
    // A live task with its name keeps a dead letter where it is.
    let blocker = rest[0].task.name.task.clone();
    store.task_create(TaskCreate { task: task("q", &blocker, at(3601), at(3601)), now: at(3601) }).await.unwrap();
    let blocked = store
        .dead_letter_redrive(DeadLetterRedrive { queue: qname("q"), select: DeadLetterSelect::All, now: at(3601) })
        .await
        .unwrap();
    assert_eq!(blocked.conflicts, [rest[0].id]);
    assert_eq!(blocked.tasks.len(), 1, "the other dead letter was redriven");
    let purged = store.dead_letter_purge(&qname("q"), DeadLetterSelect::Ids(vec![rest[0].id])).await.unwrap();
    assert_eq!(purged, 1);
    assert!(store.dead_letter_list(list(None)).await.unwrap().is_empty());
    // Retention: dead letters that died before the cut-off go.
    make_task(&store, "q", "late", T0).await;
    let c = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(5000), owner: None })
        .await
        .unwrap();
    let late = c.iter().find(|c| c.task.name.task == "late").unwrap();
    let gave_up = TaskOutcome::GaveUp { attempt: failure(500, at(5000)), tombstone_until: at(9000) };
    store
        .task_finish(TaskFinish {
            name: late.task.name.clone(),
            lease_id: late.lease_id,
            outcome: gave_up,
            now: at(5000),
        })
        .await
        .unwrap();
    let newest = store.dead_letter_list(list(None)).await.unwrap()[0].id;
    assert_eq!(store.dead_letter_expire(at(5000)).await.unwrap(), 0);
    assert_eq!(store.dead_letter_expire(at(5001)).await.unwrap(), 1);
    assert!(store.dead_letter_list(list(None)).await.unwrap().is_empty());
    // An id is never given twice, even once the newest letter is gone.
    make_task(&store, "q", "later", at(6000)).await;
    let c = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(6000), owner: None })
        .await
        .unwrap();
    let later = c.iter().find(|c| c.task.name.task == "later").unwrap();
    let gave_up = TaskOutcome::GaveUp { attempt: failure(500, at(6000)), tombstone_until: at(9000) };
    let finish =
        TaskFinish { name: later.task.name.clone(), lease_id: later.lease_id, outcome: gave_up, now: at(6000) };
    assert!(store.task_finish(finish).await.unwrap());
    let letters = store.dead_letter_list(list(None)).await.unwrap();
    assert!(letters[0].id > newest, "id {} was given before (newest was {newest})", letters[0].id);
}

pub async fn callbacks_are_queued_with_the_outcome_and_delivered_once(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    let mut j = job("cb", "q", 2, FailurePolicy::FinishAll);
    j.callback_url = Some("http://127.0.0.1:1/hook".into());
    create_job(&store, j, 2).await;
    create_job(&store, job("quiet", "q", 1, FailurePolicy::FinishAll), 1).await;
    let claimed = store
        .task_claim(TaskClaim { queue: qname("q"), limit: 10, grace: GRACE, now: at(1), owner: None })
        .await
        .unwrap();
    for c in &claimed {
        let outcome = if c.task.name.task == "cb-0" {
            TaskOutcome::GaveUp { attempt: failure(500, at(2)), tombstone_until: at(100) }
        } else {
            TaskOutcome::Succeeded { tombstone_until: at(100) }
        };
        store
            .task_finish(TaskFinish { name: c.task.name.clone(), lease_id: c.lease_id, outcome, now: at(2) })
            .await
            .unwrap();
    }
    let queued = store.callback_list("cb").await.unwrap();
    let kinds: Vec<(&str, Option<&str>)> = queued.iter().map(|c| (c.kind.as_str(), c.task.as_deref())).collect();
    let dead_task = tname("q", "cb-0").to_string();
    assert_eq!(kinds, [("task.dead_lettered", Some(dead_task.as_str())), ("job.finished", None)]);
    assert!(store.callback_list("quiet").await.unwrap().is_empty(), "no callback URL, no callbacks");

    let first = store.callback_claim(at(3), at(63), 10).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(
        store.callback_claim(at(4), at(64), 10).await.unwrap().is_empty(),
        "a claimed callback is not handed out twice"
    );
    let retry = CallbackAttempt {
        id: first[1].id,
        state: CallbackState::Pending,
        next_at: at(10),
        http_status: Some(503),
        error: Some("HTTP 503".into()),
        now: at(5),
    };
    store.callback_record(retry).await.unwrap();
    let delivered = |id, now| CallbackAttempt {
        id,
        state: CallbackState::Delivered,
        next_at: now,
        http_status: Some(200),
        error: None,
        now,
    };
    store.callback_record(delivered(first[0].id, at(5))).await.unwrap();
    assert!(store.callback_claim(at(9), at(69), 10).await.unwrap().is_empty());
    let again = store.callback_claim(at(10), at(70), 10).await.unwrap();
    assert_eq!(again.iter().map(|c| c.id).collect::<Vec<_>>(), [first[1].id]);
    store.callback_record(delivered(first[1].id, at(11))).await.unwrap();
    let done = store.callback_list("cb").await.unwrap();
    assert!(done.iter().all(|c| c.state == CallbackState::Delivered));
    assert_eq!(done[1].attempts, 2);
    assert_eq!((done[1].last_status, done[1].delivered_at), (Some(200), Some(at(11))));
}

pub async fn pull_tasks_are_leased_by_tag_renewed_released_and_fenced(store: Arc<dyn Store>) {
    let mut q = queue("pull");
    q.kind = tasklane_core::QueueKind::Pull;
    store.queue_create(QueueCreate { queue: q, now: T0 }).await.unwrap();
    assert_eq!(store.queue_get(&qname("pull")).await.unwrap().unwrap().kind, tasklane_core::QueueKind::Pull);
    for (id, tag) in [("a", Some("red")), ("b", None), ("c", Some("red"))] {
        let spec = tasklane_core::PullSpec {
            name: Some(format!("{}/tasks/{id}", qname("pull"))),
            payload: id.as_bytes().to_vec(),
            tag: tag.map(String::from),
            env: vec![("TARGET_FILE_ID".into(), format!("file-{id}"))],
            schedule_time: None,
        };
        let task = spec.validate(&qname("pull"), T0, || unreachable!()).unwrap();
        store.task_create(TaskCreate { task, now: T0 }).await.unwrap();
    }
    let lease = |limit, tag: Option<&str>, now| TaskLease {
        queue: qname("pull"),
        limit,
        lease: Duration::from_secs(30),
        tag: tag.map(String::from),
        now,
    };
    let red = store.task_lease(lease(10, Some("red"), at(1))).await.unwrap();
    assert_eq!(red.iter().map(|c| c.task.name.task.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(red[0].task.env, [("TARGET_FILE_ID".to_string(), "file-a".to_string())]);
    assert_eq!((red[0].task.tag.as_deref(), red[0].task.dispatch_count), (Some("red"), 1));
    assert_eq!(red[0].task.http_request.body, b"a");
    // Leased tasks are not leased again while their lease runs.
    let rest = store.task_lease(lease(10, None, at(2))).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.task.name.task.as_str()).collect::<Vec<_>>(), ["b"]);
    // A restart of the embedded store releases the dispatcher's leases, never a pull
    // worker's: those have their own expiry, and the worker may still be running.
    assert_eq!(store.task_lease_release(None, at(3)).await.unwrap(), 0);
    assert!(store.task_lease(lease(10, None, at(4))).await.unwrap().is_empty(), "pull leases survive a restart");
    // Renew a, release c; a stale lease id changes nothing.
    let (a, c) = (&red[0], &red[1]);
    assert!(
        store.task_renew(TaskRenew { name: a.task.name.clone(), lease_id: a.lease_id, until: at(100) }).await.unwrap()
    );
    assert!(
        !store
            .task_renew(TaskRenew { name: a.task.name.clone(), lease_id: a.lease_id + 1, until: at(100) })
            .await
            .unwrap()
    );
    assert!(
        store.task_release(TaskRelease { name: c.task.name.clone(), lease_id: c.lease_id, now: at(3) }).await.unwrap()
    );
    assert!(
        !store.task_release(TaskRelease { name: c.task.name.clone(), lease_id: c.lease_id, now: at(3) }).await.unwrap()
    );
    let again = store.task_lease(lease(10, None, at(40))).await.unwrap();
    let mut names: Vec<&str> = again.iter().map(|c| c.task.name.task.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["b", "c"], "c was given back, b's lease ended at 32 s, a's was renewed to 100 s");
    let c2 = again.iter().find(|x| x.task.name.task == "c").unwrap();
    assert_eq!(c2.task.dispatch_count, 1, "a released lease does not count as an attempt");
    let b2 = again.iter().find(|x| x.task.name.task == "b").unwrap();
    assert_eq!(b2.task.dispatch_count, 2, "an expired lease counts as an attempt");
    // Acknowledging with the old lease of b is refused; with the new one it works.
    let ack = |c: &ClaimedTask, lease_id| TaskFinish {
        name: c.task.name.clone(),
        lease_id,
        outcome: TaskOutcome::Succeeded { tombstone_until: at(1000) },
        now: at(41),
    };
    let b1 = &rest[0];
    assert!(!store.task_finish(ack(b1, b1.lease_id)).await.unwrap(), "a stale acknowledgement is refused");
    assert!(store.task_finish(ack(b2, b2.lease_id)).await.unwrap());
}

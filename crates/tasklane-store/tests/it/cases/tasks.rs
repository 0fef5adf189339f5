//! Tasks: creation, names, leases and their order, outcomes and what they cost, pull leases.

use super::*;

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

/// Record `outcome` for task `id` under `lease_id`; what it answered and how many statements
/// it ran.
async fn finish_counted(
    store: &Arc<dyn Store>,
    id: &str,
    lease_id: i64,
    outcome: TaskOutcome,
) -> (Option<Option<String>>, u64) {
    let before = statements_run();
    let finish = TaskFinish { name: tname("q", id), lease_id, outcome, now: at(1) };
    let answer = store.task_finish_job(finish).await.unwrap();
    (answer, statements_run() - before)
}

/// What recording an outcome costs, in statements, on both stores. An acknowledgement is
/// one write with no read before it: the delete that checks the lease and names the job,
/// and the name's tombstone. A retry is one statement (it checks the lease, records the
/// answer and queues the task again); a give-up is four. A lost lease costs one and
/// changes nothing.
pub async fn an_outcome_costs_a_fixed_number_of_statements(store: Arc<dyn Store>) {
    make_queue(&store, "q").await;
    for id in ["ok", "again", "dead"] {
        make_task(&store, "q", id, T0).await;
    }
    let claim = TaskClaim { queue: qname("q"), limit: 3, grace: GRACE, now: T0, owner: None };
    let claimed = store.task_claim(claim).await.unwrap();
    let lease = |id: &str| claimed.iter().find(|c| c.task.name.task == id).unwrap().lease_id;
    let done = TaskOutcome::Succeeded { tombstone_until: at(99) };
    assert_eq!(finish_counted(&store, "ok", lease("ok"), done.clone()).await, (Some(None), 2));
    let retry = TaskOutcome::Retry { attempt: failure(500, at(1)), retry_at: at(5) };
    assert_eq!(finish_counted(&store, "again", lease("again"), retry).await, (Some(None), 1));
    let give_up = TaskOutcome::GaveUp { attempt: failure(500, at(1)), tombstone_until: at(99) };
    assert_eq!(finish_counted(&store, "dead", lease("dead"), give_up).await, (Some(None), 4));
    assert_eq!(finish_counted(&store, "again", lease("again"), done).await, (None, 1), "a stale lease");
    let left = store.task_list(TaskList { queue: qname("q"), after: None, limit: 10 }).await.unwrap();
    assert_eq!(left.iter().map(|t| t.name.task.as_str()).collect::<Vec<_>>(), ["again"]);
    assert_eq!(left[0].dispatch_count, 1);
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

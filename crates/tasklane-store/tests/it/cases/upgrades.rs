//! Records, and what survives a restart, churn or an upgrade.

use super::*;

/// Rows as the previous release wrote them, with `{body}` the task body's literal.
pub const PREVIOUS_ROWS: &str = "INSERT INTO queues (name, parent, state, max_dispatches_per_second, \
     max_burst_size, max_concurrent_dispatches, max_attempts, max_retry_duration_us, min_backoff_us, max_backoff_us, \
     max_doublings, logging_sampling_ratio, purge_time, created_at, updated_at, http_target, kind) VALUES \
     ('projects/p/locations/l/queues/old', 'projects/p/locations/l', 'running', 500, 100, 1000, 100, NULL, \
     100000, 3600000000, 16, 1, NULL, 0, 0, NULL, 'push'); \
     INSERT INTO tasks (queue, task_id, state, due_at, url, method, headers, body, schedule_time, create_time, \
     dispatch_deadline_us) VALUES ('projects/p/locations/l/queues/old', 'kept', 'queued', 5, 'http://127.0.0.1:1/w', \
     'POST', 'X-Id: kept', {body}, 5, 1, 600000000);";

/// A database the previous release made, now opened by this one: its rows read back and
/// every operation works on them.
pub async fn previous_release_rows_work(store: Arc<dyn Store>) {
    let old = qname("old");
    let queue = store.queue_get(&old).await.unwrap().expect("the old queue");
    assert_eq!((queue.rate_limits.max_dispatches_per_second, queue.retry_config.max_attempts), (500.0, 100));
    let TaskLookup::Found(kept) = store.task_get(&old.task("kept").unwrap(), at(0)).await.unwrap() else {
        panic!("the old task is gone")
    };
    assert_eq!((kept.http_request.body.as_slice(), kept.schedule_time), (b"hi".as_slice(), Timestamp(5)));
    assert_eq!(kept.http_request.headers, [("X-Id".to_string(), "kept".to_string())]);
    store.task_create(TaskCreate { task: task("old", "new", at(1), at(1)), now: at(1) }).await.unwrap();
    let claim = TaskClaim { queue: old.clone(), limit: 10, grace: GRACE, now: at(2), owner: None };
    let claimed = store.task_claim(claim).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.task.name.task.as_str()).collect::<Vec<_>>(), ["kept", "new"]);
    for c in claimed {
        let done = TaskOutcome::Succeeded { tombstone_until: at(99) };
        let finish = TaskFinish { name: c.task.name, lease_id: c.lease_id, outcome: done, now: at(3) };
        assert!(store.task_finish(finish).await.unwrap());
    }
    assert_eq!(store.task_count(&old).await.unwrap(), 0);
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

//! Queues: create, settings, state, purge and delete.

use super::*;

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

//! Jobs: counts, events, endings, reports, and their callbacks.

use super::*;

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

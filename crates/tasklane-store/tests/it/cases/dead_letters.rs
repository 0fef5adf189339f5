//! Dead letters: every attempt kept, redrive and purge.

use super::*;

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

//! Backend-independent cases of the store conformance suite, one file per concern of the
//! store, over helpers shared here.

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
    TaskLease, TaskList, TaskLookup, TaskOutcome, TaskRelease, TaskRenew, statements_run,
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

mod cluster;
mod dead_letters;
mod jobs;
mod queues;
mod tasks;
mod upgrades;

pub use cluster::*;
pub use dead_letters::*;
pub use jobs::*;
pub use queues::*;
pub use tasks::*;
pub use upgrades::*;

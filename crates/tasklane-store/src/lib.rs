//! The store seam: every durable operation tasklane performs, behind one async trait,
//! with one backend per database. This is the only crate that knows SQL.
//!
//! Operations read noun first and take one parameter struct that carries `now`, so
//! time is always an input and a test can drive it by hand.

use std::time::Duration;

use async_trait::async_trait;
use tasklane_core::job::{Job, JobStatus, Progress};
use tasklane_core::{LocationName, Queue, QueueName, QueueState, Task, TaskName, Timestamp};

mod callbacks;
mod cluster;
mod columns;
mod deadline;
mod jobs;
pub mod postgres;
mod records;
mod sql;
pub mod sqlite;

pub use callbacks::{Callback, CallbackAttempt, CallbackState};
pub use cluster::{Node, NodeHeartbeat, QueueOwner, QueueOwnerAcquire, QueueOwnerRelease, QueueOwnerRenew};
pub use deadline::Deadline;
pub use postgres::{PgStore, WAKE_CHANNEL, scratch_schema, test_database_url};
pub use records::{Record, RecordCondition, RecordPut};
pub use sqlite::SqliteStore;
/// What an attempt came to is decided in core; the store records it.
pub use tasklane_core::outcome::{AttemptResult, TaskOutcome};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("queue not found")]
    QueueNotFound,
    #[error("queue already exists")]
    QueueAlreadyExists,
    #[error("task not found")]
    TaskNotFound,
    /// The name belongs to a task that finished or was deleted within the tombstone window.
    #[error("task name recently used")]
    TaskTombstoned,
    #[error("task already exists")]
    TaskAlreadyExists,
    #[error("job not found")]
    JobNotFound,
    /// The job already reached this final status: reports and cancels come too late.
    #[error("job already {}", .0.as_str())]
    JobFinished(JobStatus),
    /// A progress report below the job's current percent, without `allow_decrease`.
    #[error("progress may not go backwards from {0}%")]
    JobProgressBackwards(String),
    /// A `record_put` whose condition did not hold.
    #[error("record changed concurrently")]
    RecordConflict,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store cannot write: its disk (or the database's) is full. Reads still work, and
    /// writes succeed again once there is room.
    #[error("store out of space: {0}")]
    Full(String),
    #[error("store failure: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `task_finish_job` for a backend whose finish does not name the job: read the task, then
/// finish it (a read and a write).
pub async fn finish_job_by_reading<S: Store + ?Sized>(store: &S, p: TaskFinish) -> StoreResult<Option<Option<String>>> {
    let job = match store.task_get(&p.name, p.now).await? {
        TaskLookup::Found(task) => task.job_id,
        _ => return Ok(None),
    };
    Ok(store.task_finish(p).await?.then_some(job))
}

/// Lease up to `limit` due tasks of a pull queue for `lease`, optionally only those with `tag`.
#[derive(Debug, Clone)]
pub struct TaskLease {
    pub queue: QueueName,
    pub limit: usize,
    pub lease: Duration,
    pub tag: Option<String>,
    pub now: Timestamp,
}

/// Extend a lease to `until`, if it is still held.
#[derive(Debug, Clone)]
pub struct TaskRenew {
    pub name: TaskName,
    pub lease_id: i64,
    pub until: Timestamp,
}

/// Give a leased task back now, without counting the attempt.
#[derive(Debug, Clone)]
pub struct TaskRelease {
    pub name: TaskName,
    pub lease_id: i64,
    pub now: Timestamp,
}

/// Create a job and its tasks, all or nothing. With an idempotency key that an existing
/// job has, nothing is created and that job is returned.
#[derive(Debug, Clone)]
pub struct JobCreate {
    pub job: Job,
    pub tasks: Vec<Task>,
    pub now: Timestamp,
}

#[derive(Debug, Clone)]
pub struct JobCreated {
    pub job: Job,
    /// The idempotency key matched an existing job, which is `job`.
    pub existed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JobList {
    pub status: Option<JobStatus>,
    pub queue: Option<QueueName>,
    pub label: Option<(String, String)>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    /// Return jobs after this one in (created_at, id) order.
    pub after: Option<(Timestamp, String)>,
    pub limit: usize,
    pub now: Timestamp,
}

/// What a worker reports for a job.
#[derive(Debug, Clone)]
pub enum JobReportKind {
    Progress {
        progress: Progress,
        allow_decrease: bool,
    },
    /// A JSON document.
    Result(String),
    /// The job failed: it finishes now and its tasks that have not run are cancelled.
    Fail(String),
}

#[derive(Debug, Clone)]
pub struct JobReport {
    pub id: String,
    pub kind: JobReportKind,
    pub now: Timestamp,
}

/// One change of a job: its number, when, what happened, and the job right after it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub seq: i64,
    pub at: Timestamp,
    pub kind: String,
    pub job: Job,
}

#[derive(Debug, Clone)]
pub struct QueueCreate {
    pub queue: Queue,
    pub now: Timestamp,
}

/// Write a queue's settings (rate limits, retry config, logging). The state and purge
/// time of an existing queue are kept; a missing queue is created `running` when
/// `create_if_missing`, as `UpdateQueue` does.
#[derive(Debug, Clone)]
pub struct QueueSettingsPut {
    pub queue: Queue,
    pub create_if_missing: bool,
    pub now: Timestamp,
}

#[derive(Debug, Clone)]
pub struct QueueList {
    pub parent: Option<LocationName>,
    /// Return queues whose name sorts after this one.
    pub after: Option<QueueName>,
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct QueueStateSet {
    pub name: QueueName,
    pub state: QueueState,
    pub now: Timestamp,
}

/// Delete every task created at or before `now` and record `now` as the purge time.
#[derive(Debug, Clone)]
pub struct QueuePurge {
    pub name: QueueName,
    pub tombstone_until: Timestamp,
    pub now: Timestamp,
}

/// A purged queue, and the jobs whose tasks the purge removed (they count them as cancelled).
#[derive(Debug, Clone)]
pub struct Purged {
    pub queue: Queue,
    pub jobs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct QueueDelete {
    pub name: QueueName,
    pub now: Timestamp,
}

#[derive(Debug, Clone)]
pub struct TaskCreate {
    pub task: Task,
    pub now: Timestamp,
}

#[derive(Debug, Clone)]
pub struct TaskList {
    pub queue: QueueName,
    pub after: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct TaskDelete {
    pub name: TaskName,
    pub tombstone_until: Timestamp,
    pub now: Timestamp,
}

/// Lease up to `limit` due tasks of a queue, earliest due first. A task whose lease
/// expired is due again. Each lease lasts the task's dispatch deadline plus `grace`.
/// Nothing is leased unless the queue is running, checked in the same statement, so a
/// pause takes effect at once whatever the dispatcher last saw.
#[derive(Debug, Clone)]
pub struct TaskClaim {
    pub queue: QueueName,
    pub limit: usize,
    pub grace: Duration,
    pub now: Timestamp,
    /// In a cluster, the node claiming: the claim leases nothing unless this node holds the
    /// queue's ownership lease at `now`, checked in the same statement.
    pub owner: Option<String>,
}

/// Lease one task now, whatever its schedule or lease, as `RunTask` does.
#[derive(Debug, Clone)]
pub struct TaskClaimByName {
    pub name: TaskName,
    pub grace: Duration,
    pub now: Timestamp,
}

/// A leased task: the task as it is after the claim, and the lease that fences its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    pub task: Task,
    pub lease_id: i64,
}

/// Record an attempt's outcome, only if `lease_id` still holds the task.
#[derive(Debug, Clone)]
pub struct TaskFinish {
    pub name: TaskName,
    pub lease_id: i64,
    pub outcome: TaskOutcome,
    pub now: Timestamp,
}

/// The result of a task read: distinguishes a name that was used recently.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskLookup {
    Found(Box<Task>),
    Tombstoned,
    Missing,
}

/// A task that gave up, kept for inspection.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    pub task: Task,
    pub died_at: Timestamp,
    /// Every attempt, oldest first (the first 64 KB of the log).
    pub attempts: Vec<AttemptLog>,
}

/// One attempt as the attempt log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLog {
    pub dispatch_time: Timestamp,
    pub response_time: Timestamp,
    pub http_status: u16,
    pub code: tasklane_core::Code,
    pub message: String,
    pub body_excerpt: String,
}

#[derive(Debug, Clone)]
pub struct DeadLetterList {
    pub queue: QueueName,
    /// Return dead letters after this id.
    pub after: Option<i64>,
    pub limit: usize,
}

/// Which dead letters of a queue an operation takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSelect {
    All,
    Ids(Vec<i64>),
}

/// Put dead letters back in their queue as new tasks with the same names and a new
/// attempt series (due now), and remove them from the dead letters.
#[derive(Debug, Clone)]
pub struct DeadLetterRedrive {
    pub queue: QueueName,
    pub select: DeadLetterSelect,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redriven {
    pub tasks: Vec<TaskName>,
    /// Dead letters left where they are because a live task has their name.
    pub conflicts: Vec<i64>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn queue_create(&self, p: QueueCreate) -> StoreResult<Queue>;
    async fn queue_settings_put(&self, p: QueueSettingsPut) -> StoreResult<Queue>;
    async fn queue_get(&self, name: &QueueName) -> StoreResult<Option<Queue>>;
    async fn queue_list(&self, p: QueueList) -> StoreResult<Vec<Queue>>;
    async fn queue_state_set(&self, p: QueueStateSet) -> StoreResult<Queue>;
    async fn queue_purge(&self, p: QueuePurge) -> StoreResult<Purged>;
    /// Returns the jobs whose tasks it removed (they count them as cancelled).
    async fn queue_delete(&self, p: QueueDelete) -> StoreResult<Vec<String>>;

    async fn task_create(&self, p: TaskCreate) -> StoreResult<Task>;
    /// Create several tasks; each succeeds or fails alone, as `task_create` would, and the
    /// results come back in order. Backends that can do it in one write override this.
    async fn task_create_many(&self, creates: Vec<TaskCreate>) -> Vec<StoreResult<Task>> {
        futures_util::future::join_all(creates.into_iter().map(|c| self.task_create(c))).await
    }
    async fn task_get(&self, name: &TaskName, now: Timestamp) -> StoreResult<TaskLookup>;
    async fn task_list(&self, p: TaskList) -> StoreResult<Vec<Task>>;
    /// Returns the task's job, which counts it as cancelled.
    async fn task_delete(&self, p: TaskDelete) -> StoreResult<Option<String>>;
    async fn task_claim(&self, p: TaskClaim) -> StoreResult<Vec<ClaimedTask>>;
    async fn task_claim_by_name(&self, p: TaskClaimByName) -> StoreResult<ClaimedTask>;
    /// Returns false when the lease was lost, in which case nothing changed.
    async fn task_finish(&self, p: TaskFinish) -> StoreResult<bool>;
    /// `task_finish` that also names the task's job: `None` when the lease was lost (and
    /// nothing changed), `Some(job)` when the outcome was recorded. Backends that know the
    /// job inside the finish override this; the default reads the task first.
    async fn task_finish_job(&self, p: TaskFinish) -> StoreResult<Option<Option<String>>> {
        finish_job_by_reading(self, p).await
    }
    /// When the queue's earliest task is due (a leased task is due when its lease ends).
    async fn task_next_due(&self, queue: &QueueName) -> StoreResult<Option<Timestamp>>;
    async fn task_count(&self, queue: &QueueName) -> StoreResult<u64>;

    /// Return the tasks a dispatcher leased, in `queue` or in every queue, to their queues,
    /// due where they were before (their schedule time, or `now` if that is later), so
    /// they keep their order ahead of the backlog. Their old lease ids no longer hold.
    /// Only when no delivery of theirs can still be recorded as live: an embedded store at
    /// start (one process owns it), or a cluster queue whose owner's heartbeat expired.
    /// Pull tasks keep their leases: a worker outside the process may still hold one, and
    /// it ends by its own expiry.
    async fn task_lease_release(&self, queue: Option<QueueName>, now: Timestamp) -> StoreResult<u64>;

    async fn dead_letter_list(&self, p: DeadLetterList) -> StoreResult<Vec<DeadLetter>>;
    async fn dead_letter_get(&self, queue: &QueueName, id: i64) -> StoreResult<Option<DeadLetter>>;
    async fn dead_letter_redrive(&self, p: DeadLetterRedrive) -> StoreResult<Redriven>;
    /// Delete dead letters; returns how many.
    async fn dead_letter_purge(&self, queue: &QueueName, select: DeadLetterSelect) -> StoreResult<u64>;
    /// Delete dead letters that died before `before` (retention).
    async fn dead_letter_expire(&self, before: Timestamp) -> StoreResult<u64>;
    /// Forget task-name tombstones that ended before `now`; returns how many.
    /// Delete tombstones and records that expired at or before `now`.
    async fn tombstone_expire(&self, now: Timestamp) -> StoreResult<u64>;

    async fn task_lease(&self, p: TaskLease) -> StoreResult<Vec<ClaimedTask>>;
    async fn task_renew(&self, p: TaskRenew) -> StoreResult<bool>;
    async fn task_release(&self, p: TaskRelease) -> StoreResult<bool>;

    async fn job_create(&self, p: JobCreate) -> StoreResult<JobCreated>;
    /// A job that has not expired at `now`, with its running count.
    async fn job_get(&self, id: &str, now: Timestamp) -> StoreResult<Option<Job>>;
    async fn job_list(&self, p: JobList) -> StoreResult<Vec<Job>>;
    /// Cancel a job: its tasks that have not started are deleted; running ones finish.
    async fn job_cancel(&self, id: &str, now: Timestamp) -> StoreResult<Job>;
    async fn job_report(&self, p: JobReport) -> StoreResult<Job>;
    /// A job's events after `after_seq`, in order.
    async fn job_events(&self, id: &str, after_seq: i64, limit: usize) -> StoreResult<Vec<JobEvent>>;

    /// Lease due callbacks until `until` (so one sender delivers each).
    async fn callback_claim(&self, now: Timestamp, until: Timestamp, limit: usize) -> StoreResult<Vec<Callback>>;
    async fn callback_record(&self, p: CallbackAttempt) -> StoreResult<()>;
    async fn callback_list(&self, job: &str) -> StoreResult<Vec<Callback>>;

    /// A live record (not expired at `now`).
    async fn record_get(&self, key: &str, now: Timestamp) -> StoreResult<Option<Record>>;
    /// The live records whose key starts with `prefix`, ordered by key.
    async fn record_list(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<Record>>;
    /// Write a record if `condition` holds, else `RecordConflict`.
    async fn record_put(&self, p: RecordPut) -> StoreResult<Record>;
    async fn record_delete(&self, key: &str) -> StoreResult<()>;

    /// Keep storage healthy under churn; returns what was done, for the log.
    /// PostgreSQL vacuums the hot tables once dead rows pile up; SQLite reuses freed pages itself.
    async fn store_maintain(&self, now: Timestamp) -> StoreResult<Vec<String>>;
    /// A small write, for readiness: fails while the store cannot write (a full disk).
    async fn write_check(&self, now: Timestamp) -> StoreResult<()>;

    async fn node_heartbeat(&self, p: NodeHeartbeat) -> StoreResult<()>;
    /// Nodes whose last heartbeat is at or after `alive_since`.
    async fn node_list(&self, alive_since: Timestamp) -> StoreResult<Vec<Node>>;
    async fn node_remove(&self, node_id: &str) -> StoreResult<()>;
    async fn queue_owner_renew(&self, p: QueueOwnerRenew) -> StoreResult<Vec<QueueName>>;
    async fn queue_owner_acquire(&self, p: QueueOwnerAcquire) -> StoreResult<bool>;
    async fn queue_owner_release(&self, p: QueueOwnerRelease) -> StoreResult<()>;
    async fn queue_owner_list(&self) -> StoreResult<Vec<QueueOwner>>;
}

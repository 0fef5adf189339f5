//! The store seam: every durable operation tasklane performs, behind one async trait,
//! with one backend per database. This is the only crate that knows SQL.
//!
//! Operations read noun first and take one parameter struct that carries `now`, so
//! time is always an input and a test can drive it by hand.

use async_trait::async_trait;
use tasklane_core::job::{Job, JobStatus};
use tasklane_core::{Queue, QueueName, Task, TaskName, Timestamp};

mod callbacks;
mod cluster;
mod columns;
mod dead_letters;
mod deadline;
mod jobs;
pub mod postgres;
mod queues;
mod records;
mod schema;
mod sql;
pub mod sqlite;
mod tasks;
mod upkeep;

pub use callbacks::{Callback, CallbackAttempt, CallbackState};
pub use cluster::{Node, NodeHeartbeat, QueueOwner, QueueOwnerAcquire, QueueOwnerRelease, QueueOwnerRenew};
pub use dead_letters::{AttemptLog, DeadLetter, DeadLetterList, DeadLetterRedrive, DeadLetterSelect, Redriven};
pub use deadline::Deadline;
pub use jobs::{JobCreate, JobCreated, JobEvent, JobList, JobReport, JobReportKind};
pub use postgres::{PgStore, WAKE_CHANNEL, scratch_schema, test_database_url};
pub use queues::{Purged, QueueCreate, QueueDelete, QueueList, QueuePurge, QueueSettingsPut, QueueStateSet};
pub use records::{Record, RecordCondition, RecordPut};
pub use sql::statements_run;
pub use sqlite::SqliteStore;
/// What an attempt came to is decided in core; the store records it.
pub use tasklane_core::outcome::{AttemptResult, TaskOutcome};
pub use tasks::{
    ClaimedTask, TaskClaim, TaskClaimByName, TaskCreate, TaskDelete, TaskFinish, TaskLease, TaskList, TaskLookup,
    TaskRelease, TaskRenew,
};

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
    /// Record an attempt's outcome with its job's counts, in one write, if `lease_id` still
    /// holds the task: `None` when the lease was lost (and nothing changed), `Some(job)`
    /// when the outcome was recorded.
    async fn task_finish_job(&self, p: TaskFinish) -> StoreResult<Option<Option<String>>>;
    /// `task_finish_job` without the job: false when the lease was lost.
    async fn task_finish(&self, p: TaskFinish) -> StoreResult<bool> {
        Ok(self.task_finish_job(p).await?.is_some())
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

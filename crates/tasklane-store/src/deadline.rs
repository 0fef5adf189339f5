//! A time limit on every call of a store: `Deadline` wraps a store so that a database that
//! stops answering (a silent network partition keeps connections open and passes no bytes,
//! which TCP notices only after its keepalive, two hours by default) turns each call into
//! `Unavailable` after the limit, instead of a request that hangs for the whole partition.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tasklane_core::{Queue, QueueName, Task, TaskName, Timestamp};

use crate::*;

pub struct Deadline {
    inner: Arc<dyn Store>,
    limit: Duration,
    /// For `store_maintain`, which may vacuum a large table.
    maintenance_limit: Duration,
}

impl Deadline {
    pub fn new(inner: Arc<dyn Store>, limit: Duration) -> Deadline {
        Deadline { inner, limit, maintenance_limit: limit.max(Duration::from_secs(300)) }
    }

    async fn within<T>(&self, limit: Duration, call: &str, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(limit, f).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!("the database did not answer {call} within {limit:?}"))),
        }
    }
}

/// Each listed call of the inner store, within the limit.
macro_rules! limited {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        #[async_trait]
        impl Store for Deadline {
            $(
                async fn $name(&self, $($arg: $ty),*) -> StoreResult<$ret> {
                    self.within(self.limit, stringify!($name), self.inner.$name($($arg),*)).await
                }
            )*

            async fn task_create_many(&self, creates: Vec<TaskCreate>) -> Vec<StoreResult<Task>> {
                let n = creates.len();
                match tokio::time::timeout(self.limit, self.inner.task_create_many(creates)).await {
                    Ok(results) => results,
                    Err(_) => {
                        let e = format!("the database did not answer task_create_many within {:?}", self.limit);
                        (0..n).map(|_| Err(StoreError::Unavailable(e.clone()))).collect()
                    }
                }
            }

            async fn store_maintain(&self, now: Timestamp) -> StoreResult<Vec<String>> {
                self.within(self.maintenance_limit, "store_maintain", self.inner.store_maintain(now)).await
            }
        }
    };
}

limited! {
    queue_create(p: QueueCreate) -> Queue;
    queue_settings_put(p: QueueSettingsPut) -> Queue;
    queue_get(name: &QueueName) -> Option<Queue>;
    queue_list(p: QueueList) -> Vec<Queue>;
    queue_state_set(p: QueueStateSet) -> Queue;
    queue_purge(p: QueuePurge) -> Purged;
    queue_delete(p: QueueDelete) -> Vec<String>;
    task_create(p: TaskCreate) -> Task;
    task_get(name: &TaskName, now: Timestamp) -> TaskLookup;
    task_list(p: TaskList) -> Vec<Task>;
    task_delete(p: TaskDelete) -> Option<String>;
    task_claim(p: TaskClaim) -> Vec<ClaimedTask>;
    task_claim_by_name(p: TaskClaimByName) -> ClaimedTask;
    task_finish(p: TaskFinish) -> bool;
    task_finish_job(p: TaskFinish) -> Option<Option<String>>;
    task_next_due(queue: &QueueName) -> Option<Timestamp>;
    task_count(queue: &QueueName) -> u64;
    task_lease_release(queue: Option<QueueName>, now: Timestamp) -> u64;
    dead_letter_list(p: DeadLetterList) -> Vec<DeadLetter>;
    dead_letter_get(queue: &QueueName, id: i64) -> Option<DeadLetter>;
    dead_letter_redrive(p: DeadLetterRedrive) -> Redriven;
    dead_letter_purge(queue: &QueueName, select: DeadLetterSelect) -> u64;
    dead_letter_expire(before: Timestamp) -> u64;
    tombstone_expire(now: Timestamp) -> u64;
    task_lease(p: TaskLease) -> Vec<ClaimedTask>;
    task_renew(p: TaskRenew) -> bool;
    task_release(p: TaskRelease) -> bool;
    job_create(p: JobCreate) -> JobCreated;
    job_get(id: &str, now: Timestamp) -> Option<Job>;
    job_list(p: JobList) -> Vec<Job>;
    job_cancel(id: &str, now: Timestamp) -> Job;
    job_report(p: JobReport) -> Job;
    job_events(id: &str, after_seq: i64, limit: usize) -> Vec<JobEvent>;
    callback_claim(now: Timestamp, until: Timestamp, limit: usize) -> Vec<Callback>;
    callback_record(p: CallbackAttempt) -> ();
    callback_list(job: &str) -> Vec<Callback>;
    record_get(key: &str, now: Timestamp) -> Option<Record>;
    record_list(prefix: &str, now: Timestamp) -> Vec<Record>;
    record_put(p: RecordPut) -> Record;
    record_delete(key: &str) -> ();
    write_check(now: Timestamp) -> ();
    node_heartbeat(p: NodeHeartbeat) -> ();
    node_list(alive_since: Timestamp) -> Vec<Node>;
    node_remove(node_id: &str) -> ();
    queue_owner_renew(p: QueueOwnerRenew) -> Vec<QueueName>;
    queue_owner_acquire(p: QueueOwnerAcquire) -> bool;
    queue_owner_release(p: QueueOwnerRelease) -> ();
    queue_owner_list() -> Vec<QueueOwner>;
}

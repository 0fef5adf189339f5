//! Queues: their settings and state, purges (which tombstone the names they remove), and
//! deletion with everything the queue held. Removed tasks of jobs count as cancelled.

use tasklane_core::{LocationName, Queue, QueueName, QueueState, Timestamp};

use crate::columns::{self, Columns, QUEUE_COLUMNS};
use crate::sql::{Arg, Conn, args};
use crate::{StoreError, StoreResult, jobs};

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

/// Insert a queue: `$1` name, `$2` parent, `$3` state, `$4`…`$12` settings, `$13` purge
/// time, `$14` now, `$15` HTTP target, `$16` kind; `on_conflict` decides what a clash does.
fn insert(on_conflict: &str) -> String {
    format!(
        "INSERT INTO queues (name, parent, state, max_dispatches_per_second, max_burst_size, max_concurrent_dispatches, \
         max_attempts, max_retry_duration_us, min_backoff_us, max_backoff_us, max_doublings, logging_sampling_ratio, \
         purge_time, created_at, updated_at, http_target, kind) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16) {on_conflict} \
         RETURNING {QUEUE_COLUMNS}"
    )
}

static CREATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert("ON CONFLICT (name) DO NOTHING"));
/// `UpdateQueue` of a missing queue creates it; of an existing one, changes only its settings.
static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    insert(
        "ON CONFLICT (name) DO UPDATE SET max_dispatches_per_second = excluded.max_dispatches_per_second, \
         max_burst_size = excluded.max_burst_size, max_concurrent_dispatches = excluded.max_concurrent_dispatches, \
         max_attempts = excluded.max_attempts, max_retry_duration_us = excluded.max_retry_duration_us, \
         min_backoff_us = excluded.min_backoff_us, max_backoff_us = excluded.max_backoff_us, \
         max_doublings = excluded.max_doublings, logging_sampling_ratio = excluded.logging_sampling_ratio, \
         updated_at = excluded.updated_at, http_target = excluded.http_target",
    )
});
static SETTINGS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE queues SET max_dispatches_per_second = $2, max_burst_size = $3, max_concurrent_dispatches = $4, \
         max_attempts = $5, max_retry_duration_us = $6, min_backoff_us = $7, max_backoff_us = $8, \
         max_doublings = $9, logging_sampling_ratio = $10, updated_at = $11, http_target = $12 \
         WHERE name = $1 RETURNING {QUEUE_COLUMNS}"
    )
});
static GET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = $1"));
static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {QUEUE_COLUMNS} FROM queues WHERE (CAST($1 AS TEXT) IS NULL OR parent = $1) AND name > $2 \
         ORDER BY name LIMIT $3"
    )
});
static STATE_SET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("UPDATE queues SET state = $2, updated_at = $3 WHERE name = $1 RETURNING {QUEUE_COLUMNS}")
});
static PURGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("UPDATE queues SET purge_time = $2, updated_at = $2 WHERE name = $1 RETURNING {QUEUE_COLUMNS}")
});
/// `$1` queue, `$2` purge time, `$3` until: the names a purge removes stay reserved.
const PURGE_TOMBSTONES: &str = "INSERT INTO tombstones (queue, task_id, expires_at) \
     SELECT queue, task_id, $3 FROM tasks WHERE queue = $1 AND create_time <= $2 \
     ON CONFLICT (queue, task_id) DO UPDATE SET expires_at = \
     CASE WHEN excluded.expires_at > tombstones.expires_at THEN excluded.expires_at ELSE tombstones.expires_at END";
const DELETE: &str = "DELETE FROM queues WHERE name = $1";
const DELETE_TOMBSTONES: &str = "DELETE FROM tombstones WHERE queue = $1";
const DELETE_OWNER: &str = "DELETE FROM queue_owners WHERE queue = $1";

/// The tasks a removal takes: first those of no job, then the rest, returning their jobs.
/// In that order a job's task committed in between is still counted.
struct Removal {
    loose: &'static str,
    of_jobs: &'static str,
}

const PURGE_REMOVAL: Removal = Removal {
    loose: "DELETE FROM tasks WHERE queue = $1 AND create_time <= $2 AND job_id IS NULL",
    of_jobs: "DELETE FROM tasks WHERE queue = $1 AND create_time <= $2 RETURNING job_id",
};
const DELETE_REMOVAL: Removal = Removal {
    loose: "DELETE FROM tasks WHERE queue = $1 AND job_id IS NULL",
    of_jobs: "DELETE FROM tasks WHERE queue = $1 RETURNING job_id",
};

/// Delete the tasks `removal` takes; those of jobs count as cancelled by `how` and each of
/// their jobs settles, in job order. Returns the jobs.
async fn remove_tasks(
    c: &mut impl Conn,
    removal: &Removal,
    args: &[Arg<'_>],
    how: &str,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    c.execute(removal.loose, args).await?;
    let mut removed: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for job in c.query(removal.of_jobs, args, |r| r.opt_text(0)).await?.into_iter().flatten() {
        *removed.entry(job).or_default() += 1;
    }
    for (job, n) in &removed {
        jobs::tasks_removed(c, job, *n, how, now).await?;
    }
    Ok(removed.into_keys().collect())
}

/// Run `statement` (an `insert`) with the columns of `q` in `state`; the row it wrote, if any.
async fn write(
    c: &mut impl Conn,
    statement: &'static str,
    q: &Queue,
    state: &str,
    now: Timestamp,
) -> StoreResult<Option<Queue>> {
    let s = columns::queue_settings(q);
    let (name, parent) = (q.name.to_string(), q.name.parent.to_string());
    let args = args![
        &name,
        &parent,
        state,
        s.0,
        s.1,
        s.2,
        s.3,
        s.4,
        s.5,
        s.6,
        s.7,
        s.8,
        q.purge_time.map(|t| t.0),
        now.0,
        s.9.as_deref(),
        q.kind.as_str(),
    ];
    c.query_opt(statement, args, |r| columns::queue_from(r)).await
}

pub(crate) async fn create(c: &mut impl Conn, p: QueueCreate) -> StoreResult<Queue> {
    write(c, &CREATE, &p.queue, p.queue.state.as_str(), p.now).await?.ok_or(StoreError::QueueAlreadyExists)
}

pub(crate) async fn settings_put(c: &mut impl Conn, p: QueueSettingsPut) -> StoreResult<Queue> {
    if p.create_if_missing {
        return write(c, &UPSERT, &p.queue, "running", p.now).await?.ok_or(StoreError::QueueNotFound);
    }
    let (name, s) = (p.queue.name.to_string(), columns::queue_settings(&p.queue));
    let args = args![&name, s.0, s.1, s.2, s.3, s.4, s.5, s.6, s.7, s.8, p.now.0, s.9.as_deref()];
    c.query_opt(&SETTINGS, args, |r| columns::queue_from(r)).await?.ok_or(StoreError::QueueNotFound)
}

pub(crate) async fn get(c: &mut impl Conn, name: &QueueName) -> StoreResult<Option<Queue>> {
    c.query_opt(&GET, args![&name.to_string()], |r| columns::queue_from(r)).await
}

pub(crate) async fn list(c: &mut impl Conn, p: QueueList) -> StoreResult<Vec<Queue>> {
    let parent = p.parent.map(|l| l.to_string());
    let after = p.after.map(|n| n.to_string()).unwrap_or_default();
    c.query(&LIST, args![parent.as_deref(), &after, p.limit as i64], |r| columns::queue_from(r)).await
}

pub(crate) async fn state_set(c: &mut impl Conn, p: QueueStateSet) -> StoreResult<Queue> {
    let name = p.name.to_string();
    let args = args![&name, p.state.as_str(), p.now.0];
    c.query_opt(&STATE_SET, args, |r| columns::queue_from(r)).await?.ok_or(StoreError::QueueNotFound)
}

pub(crate) async fn purge(c: &mut impl Conn, p: QueuePurge) -> StoreResult<Purged> {
    let name = p.name.to_string();
    let queue = c.query_opt(&PURGE, args![&name, p.now.0], |r| columns::queue_from(r)).await?;
    let queue = queue.ok_or(StoreError::QueueNotFound)?;
    c.execute(PURGE_TOMBSTONES, args![&name, p.now.0, p.tombstone_until.0]).await?;
    let jobs = remove_tasks(c, &PURGE_REMOVAL, args![&name, p.now.0], "PurgeQueue", p.now).await?;
    Ok(Purged { queue, jobs })
}

/// Returns the jobs whose tasks it removed.
pub(crate) async fn delete(c: &mut impl Conn, p: QueueDelete) -> StoreResult<Vec<String>> {
    let name = p.name.to_string();
    if c.execute(DELETE, args![&name]).await? == 0 {
        return Err(StoreError::QueueNotFound);
    }
    let jobs = remove_tasks(c, &DELETE_REMOVAL, args![&name], "DeleteQueue", p.now).await?;
    c.execute(DELETE_TOMBSTONES, args![&name]).await?;
    c.execute(DELETE_OWNER, args![&name]).await?;
    Ok(jobs)
}

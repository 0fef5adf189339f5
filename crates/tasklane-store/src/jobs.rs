//! The SQL of jobs, shared by both backends (SQLite reads `$n` as `?n`), and the mapping
//! from a job row to `Job`. Every change of a job bumps its `seq` and copies its changing
//! columns into `job_events` under that number, in the same transaction as the change.

use std::sync::LazyLock;
use std::time::Duration;

use tasklane_core::job::{FailurePolicy, Job, JobStatus, Progress};
use tasklane_core::{QueueName, Task, Timestamp};

use crate::columns::{Columns, decode_headers, duration_from, encode_headers};
use crate::sql::{Arg, Conn, args};
use crate::{ClaimedTask, StoreError, StoreResult, callbacks, tasks};

/// Columns fixed at creation.
const STATIC: [&str; 8] =
    ["id", "queue", "labels", "idempotency_key", "policy", "callback_url", "created_at", "result_ttl_us"];
/// Columns that change, copied into each event.
pub const DYNAMIC: &str = "status, total, succeeded, failed, cancelled, percent, step, step_number, message, \
     result, error, started_at, finished_at";

/// Every job column, static then dynamic, in the order `job_from` reads them; `alias` prefixes
/// the static ones and `dynamic_alias` the dynamic ones.
pub fn columns(alias: &str, dynamic_alias: &str) -> String {
    let prefix = |a: &str, c: &str| if a.is_empty() { c.to_string() } else { format!("{a}.{c}") };
    let mut all: Vec<String> = STATIC.iter().map(|c| prefix(alias, c)).collect();
    all.extend(DYNAMIC.split(", ").map(|c| prefix(dynamic_alias, c)));
    all.join(", ")
}

pub const JOB_INSERT: &str = "INSERT INTO jobs (id, queue, labels, idempotency_key, policy, callback_url, created_at, \
     result_ttl_us, status, total, succeeded, failed, cancelled, percent, step, step_number, message, seq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, 0, 0, 0, 0, '', 0, '', 0) ON CONFLICT DO NOTHING";
pub const LABEL_INSERT: &str = "INSERT INTO job_labels (job_id, key, value) VALUES ($1, $2, $3)";

/// Record an event for the change just made: `$1` job, `$2` at, `$3` kind.
pub const EVENT_INSERT: &str = "INSERT INTO job_events (job_id, seq, at, kind, status, total, succeeded, failed, \
     cancelled, percent, step, step_number, message, result, error, started_at, finished_at) \
     SELECT id, seq, $2, $3, status, total, succeeded, failed, cancelled, percent, step, step_number, message, \
     result, error, started_at, finished_at FROM jobs WHERE id = $1";

const LIVE: &str = "status IN ('pending', 'running')";

/// `$1` job, `$2` now: the first task of a job was leased.
pub const START: &str = "UPDATE jobs SET status = 'running', started_at = $2, seq = seq + 1 WHERE id = $1 AND status = 'pending' RETURNING id";
/// `$1` job, `$2` succeeded, `$3` failed: count task outcomes.
pub const COUNT: &str =
    "UPDATE jobs SET succeeded = succeeded + $2, failed = failed + $3, seq = seq + 1 WHERE id = $1 RETURNING policy";

fn finish_set(status: &str) -> String {
    format!("status = {status}, finished_at = $2, expires_at = $2 + result_ttl_us, seq = seq + 1")
}

/// `$1` job, `$2` now: once every task has an outcome, the job ends: failed if a task failed,
/// cancelled if a task was removed before it ran, else succeeded.
pub(crate) static SETTLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET {} WHERE id = $1 AND {LIVE} AND succeeded + failed + cancelled >= total RETURNING status",
        finish_set("CASE WHEN failed > 0 THEN 'failed' WHEN cancelled > 0 THEN 'cancelled' ELSE 'succeeded' END")
    )
});

/// The event of tasks removed from a job through the Cloud Tasks API.
pub const TASKS_REMOVED: &str = "tasks_removed";

/// `$1` job, `$2` how many of its tasks were deleted or purged, `$3` why: they count as
/// cancelled, and a live job records why it will not succeed.
pub const REMOVED: &str = "UPDATE jobs SET cancelled = cancelled + $2, \
     error = CASE WHEN status IN ('pending', 'running') THEN coalesce(error, $3) ELSE error END, seq = seq + 1 \
     WHERE id = $1 RETURNING id";

/// Why a job lost tasks, for its `error`.
fn removed_reason(n: i64, how: &str) -> String {
    if n == 1 {
        format!("1 task was removed by {how} before it finished")
    } else {
        format!("{n} tasks were removed by {how} before they finished")
    }
}

/// `$1` job, `$2` now, `$3` error: a fail-fast job fails at its first failed task.
pub(crate) static FAIL_FAST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET {}, error = coalesce(error, $3) WHERE id = $1 AND {LIVE} AND policy = 'fail_fast' RETURNING id",
        finish_set("'failed'")
    )
});

/// `$1` job, `$2` now, `$3` error: the worker reported the job failed.
pub(crate) static FAIL: LazyLock<String> = LazyLock::new(|| {
    format!("UPDATE jobs SET {}, error = $3 WHERE id = $1 AND {LIVE} RETURNING id", finish_set("'failed'"))
});

/// `$1` job, `$2` now: cancel.
pub(crate) static CANCEL: LazyLock<String> =
    LazyLock::new(|| format!("UPDATE jobs SET {} WHERE id = $1 AND {LIVE} RETURNING id", finish_set("'cancelled'")));

/// `$1` job: drop the job's tasks that have not started; returns them.
pub const CANCEL_TASKS: &str = "DELETE FROM tasks WHERE job_id = $1 AND state = 'queued' RETURNING task_id";
/// `$1` job, `$2` how many were cancelled.
pub const COUNT_CANCELLED: &str = "UPDATE jobs SET cancelled = cancelled + $2 WHERE id = $1";

/// `$1` job, `$2` percent, `$3` step, `$4` step number, `$5` message, `$6` allow decrease, `$7` now.
pub const PROGRESS: &str = "UPDATE jobs SET percent = $2, step = $3, step_number = $4, message = $5, \
     status = 'running', started_at = coalesce(started_at, $7), seq = seq + 1 \
     WHERE id = $1 AND status IN ('pending', 'running') AND (percent <= $2 OR $6) RETURNING id";
/// `$1` job, `$2` result.
pub const RESULT: &str =
    "UPDATE jobs SET result = $2, seq = seq + 1 WHERE id = $1 AND status IN ('pending', 'running') RETURNING id";

/// `$1` job.
pub const RUNNING: &str = "SELECT count(*) FROM tasks WHERE job_id = $1 AND state = 'leased'";
/// `$1` now: jobs past their expiry, with their labels and events.
pub const EXPIRED: &str = "SELECT id FROM jobs WHERE expires_at <= $1";
pub const DELETE_JOB: [&str; 4] = [
    "DELETE FROM callbacks WHERE job_id = $1",
    "DELETE FROM job_events WHERE job_id = $1",
    "DELETE FROM job_labels WHERE job_id = $1",
    "DELETE FROM jobs WHERE id = $1",
];

/// `SELECT` for lists: `$1` status, `$2` queue, `$3` label key, `$4` label value, `$5` created after,
/// `$6` created before, `$7` cursor time, `$8` cursor id, `$9` limit, `$10` now.
static LIST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM jobs WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
         AND (CAST($2 AS TEXT) IS NULL OR queue = $2) \
         AND (CAST($3 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id \
         AND l.key = $3 AND l.value = $4)) \
         AND created_at > $5 AND created_at < $6 AND (created_at > $7 OR (created_at = $7 AND id > $8)) \
         AND (expires_at IS NULL OR expires_at > $10) ORDER BY created_at, id LIMIT $9",
        columns("", "")
    )
});

/// `$1` job, `$2` after seq, `$3` limit.
static EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT e.seq, e.at, e.kind, {} FROM job_events e JOIN jobs j ON j.id = e.job_id \
         WHERE e.job_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3",
        columns("j", "e")
    )
});

pub fn labels_text(labels: &[(String, String)]) -> String {
    encode_headers(labels)
}

/// A job from a row whose columns start at `at` in the order of `columns`.
pub fn job_from<R: Columns>(row: &R, at: usize) -> Result<Job, R::Error> {
    let queue = row.text(at + 1)?;
    let policy = row.text(at + 4)?;
    let status = row.text(at + 8)?;
    Ok(Job {
        id: row.text(at)?,
        queue: QueueName::parse(&queue).map_err(|_| R::corrupt("job queue", &queue))?,
        labels: decode_headers(&row.text(at + 2)?),
        idempotency_key: row.opt_text(at + 3)?,
        policy: FailurePolicy::parse(&policy).ok_or_else(|| R::corrupt("job policy", &policy))?,
        callback_url: row.opt_text(at + 5)?,
        created_at: Timestamp(row.big(at + 6)?),
        result_ttl: duration_from(row.big(at + 7)?),
        status: JobStatus::parse(&status).ok_or_else(|| R::corrupt("job status", &status))?,
        total: row.big(at + 9)?,
        succeeded: row.big(at + 10)?,
        failed: row.big(at + 11)?,
        cancelled: row.big(at + 12)?,
        progress: Progress {
            percent: row.real(at + 13)?,
            step: row.text(at + 14)?,
            step_number: row.int(at + 15)?,
            message: row.text(at + 16)?,
        },
        result: row.opt_text(at + 17)?,
        error: row.opt_text(at + 18)?,
        started_at: row.opt_big(at + 19)?.map(Timestamp),
        finished_at: row.opt_big(at + 20)?.map(Timestamp),
        running: 0,
    })
}

pub fn ttl_micros(d: Duration) -> i64 {
    tasklane_core::clock::duration_micros(d)
}

pub const JOB_FINISHED: &str = "job.finished";
pub const TASK_DEAD_LETTERED: &str = "task.dead_lettered";

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

const BY_KEY: &str = "SELECT id FROM jobs WHERE idempotency_key = $1";
const FIRST_SEQ: &str = "UPDATE jobs SET seq = 1 WHERE id = $1";
static READ: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {} FROM jobs WHERE id = $1 AND (expires_at IS NULL OR expires_at > $2)", columns("", ""))
});

/// Record an event for the change just made to `job`.
async fn event(c: &mut impl Conn, job: &str, now: Timestamp, kind: &str) -> StoreResult<()> {
    c.execute(EVENT_INSERT, args![job, now.0, kind]).await.map(|_| ())
}

/// Run an update of a job that returns a row when it applied.
async fn update(c: &mut impl Conn, statement: &'static str, args: &[Arg<'_>]) -> StoreResult<bool> {
    Ok(c.query_opt(statement, args, |_| Ok(())).await?.is_some())
}

/// Run an update of `job` that returns a row when it applied; record `kind` if it did.
async fn change(
    c: &mut impl Conn,
    job: &str,
    statement: &'static str,
    args: &[Arg<'_>],
    kind: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let changed = update(c, statement, args).await?;
    if changed {
        event(c, job, now, kind).await?;
    }
    Ok(changed)
}

/// End a job with an update that applies; its tasks that have not started are cancelled,
/// `kind` is recorded and its callback queued.
async fn end(
    c: &mut impl Conn,
    job: &str,
    statement: &'static str,
    args: &[Arg<'_>],
    kind: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let ended = update(c, statement, args).await?;
    if ended {
        let n = c.query(CANCEL_TASKS, args![job], |_| Ok(())).await?.len() as i64;
        if n > 0 {
            c.execute(COUNT_CANCELLED, args![job, n]).await?;
        }
        event(c, job, now, kind).await?;
        callbacks::queue(c, job, JOB_FINISHED, None, now).await?;
    }
    Ok(ended)
}

/// End `job` if every task has an outcome.
async fn settle(c: &mut impl Conn, job: &str, now: Timestamp) -> StoreResult<()> {
    if let Some(status) = c.query_opt(&SETTLE, args![job, now.0], |r| r.text(0)).await? {
        event(c, job, now, &status).await?;
        callbacks::queue(c, job, JOB_FINISHED, None, now).await?;
    }
    Ok(())
}

/// Tasks of `job` reached final outcomes: count them, apply fail-fast, settle the job. A
/// task that went to the dead letters (`dead_lettered`, its name) also queues a callback.
pub(crate) async fn tasks_done(
    c: &mut impl Conn,
    job: &str,
    succeeded: i64,
    failed: i64,
    error: &str,
    dead_lettered: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    if let Some(task) = dead_lettered {
        callbacks::queue(c, job, TASK_DEAD_LETTERED, Some(task), now).await?;
    }
    let kind = if failed > 0 { "task_failed" } else { "task_succeeded" };
    change(c, job, COUNT, args![job, succeeded, failed], kind, now).await?;
    if failed > 0 && end(c, job, &FAIL_FAST, args![job, now.0, error], "failed", now).await? {
        return Ok(());
    }
    settle(c, job, now).await
}

/// `n` tasks of `job` were removed by `how`: they count as cancelled, and the job settles.
pub(crate) async fn tasks_removed(c: &mut impl Conn, job: &str, n: i64, how: &str, now: Timestamp) -> StoreResult<()> {
    let reason = removed_reason(n, how);
    change(c, job, REMOVED, args![job, n, &reason], TASKS_REMOVED, now).await?;
    settle(c, job, now).await
}

/// Jobs whose first task was just leased start running, each once, in job order.
pub(crate) async fn started(c: &mut impl Conn, leased: &[ClaimedTask], now: Timestamp) -> StoreResult<()> {
    let mut started: Vec<&str> = leased.iter().filter_map(|c| c.task.job_id.as_deref()).collect();
    started.sort_unstable();
    started.dedup();
    for job in started {
        change(c, job, START, args![job, now.0], "running", now).await?;
    }
    Ok(())
}

/// Whether any of the leased tasks belongs to a job (so `started` has work).
pub(crate) fn any_of_jobs(leased: &[ClaimedTask]) -> bool {
    leased.iter().any(|c| c.task.job_id.is_some())
}

async fn running(c: &mut impl Conn, id: &str) -> StoreResult<i64> {
    Ok(c.query_opt(RUNNING, args![id], |r| r.big(0)).await?.unwrap_or(0))
}

pub(crate) async fn read(c: &mut impl Conn, id: &str, now: Timestamp) -> StoreResult<Option<Job>> {
    let Some(mut job) = c.query_opt(&READ, args![id, now.0], |r| job_from(r, 0)).await? else { return Ok(None) };
    job.running = running(c, id).await?;
    Ok(Some(job))
}

/// Why a job update did not apply.
async fn refusal(c: &mut impl Conn, id: &str, now: Timestamp) -> StoreError {
    match read(c, id, now).await {
        Ok(None) => StoreError::JobNotFound,
        Ok(Some(job)) if job.status.is_final() => StoreError::JobFinished(job.status),
        Ok(Some(job)) => StoreError::JobProgressBackwards(job.progress.percent.to_string()),
        Err(e) => e,
    }
}

/// The job an idempotency key names, if any.
async fn by_key(c: &mut impl Conn, key: &str, now: Timestamp) -> StoreResult<Option<Job>> {
    let Some(id) = c.query_opt(BY_KEY, args![key], |r| r.text(0)).await? else { return Ok(None) };
    read(c, &id, now).await
}

/// Create a job and its tasks in the caller's transaction, or answer with the job its
/// idempotency key already names.
pub(crate) async fn create(c: &mut impl Conn, p: &JobCreate) -> StoreResult<JobCreated> {
    let job = &p.job;
    if let Some(key) = &job.idempotency_key
        && let Some(existing) = by_key(c, key, p.now).await?
    {
        return Ok(JobCreated { job: existing, existed: true });
    }
    let queue = job.queue.to_string();
    if !tasks::queue_exists(c, &queue).await? {
        return Err(StoreError::QueueNotFound);
    }
    let labels = labels_text(&job.labels);
    let insert = args![
        &job.id,
        &queue,
        &labels,
        job.idempotency_key.as_deref(),
        job.policy.as_str(),
        job.callback_url.as_deref(),
        job.created_at.0,
        ttl_micros(job.result_ttl),
        job.total,
    ];
    if c.execute(JOB_INSERT, insert).await? != 1 {
        // Another create with the same idempotency key committed first (the insert waited
        // for it): answer with its job.
        let key = job.idempotency_key.as_deref().unwrap_or_default();
        let existing = by_key(c, key, p.now).await?.ok_or(StoreError::JobNotFound)?;
        return Ok(JobCreated { job: existing, existed: true });
    }
    for (k, v) in &job.labels {
        c.execute(LABEL_INSERT, args![&job.id, k, v]).await?;
    }
    c.execute(FIRST_SEQ, args![&job.id]).await?;
    event(c, &job.id, p.now, "created").await?;
    for t in &p.tasks {
        if tasks::tombstoned(c, &t.name.queue.to_string(), &t.name.task, p.now).await? {
            return Err(StoreError::TaskTombstoned);
        }
        if !tasks::insert_task(c, t, None).await? {
            return Err(StoreError::TaskAlreadyExists);
        }
    }
    let created = read(c, &job.id, p.now).await?.ok_or(StoreError::JobNotFound)?;
    Ok(JobCreated { job: created, existed: false })
}

pub(crate) async fn list(c: &mut impl Conn, p: &JobList) -> StoreResult<Vec<Job>> {
    let (label_key, label_value) = p.label.clone().unzip();
    let (cursor_at, cursor_id) = p.after.clone().map_or((i64::MIN, String::new()), |(t, id)| (t.0, id));
    let queue = p.queue.as_ref().map(|q| q.to_string());
    let args = args![
        p.status.map(|s| s.as_str()),
        queue.as_deref(),
        label_key.as_deref(),
        label_value.as_deref(),
        p.created_after.map_or(i64::MIN, |t| t.0),
        p.created_before.map_or(i64::MAX, |t| t.0),
        cursor_at,
        &cursor_id,
        p.limit as i64,
        p.now.0,
    ];
    let mut jobs = c.query(&LIST, args, |r| job_from(r, 0)).await?;
    for job in &mut jobs {
        job.running = running(c, &job.id).await?;
    }
    Ok(jobs)
}

pub(crate) async fn cancel(c: &mut impl Conn, id: &str, now: Timestamp) -> StoreResult<Job> {
    if !end(c, id, &CANCEL, args![id, now.0], "cancelled", now).await? {
        return Err(refusal(c, id, now).await);
    }
    read(c, id, now).await?.ok_or(StoreError::JobNotFound)
}

pub(crate) async fn report(c: &mut impl Conn, p: &JobReport) -> StoreResult<Job> {
    let (id, now) = (p.id.as_str(), p.now);
    let applied = match &p.kind {
        JobReportKind::Progress { progress: g, allow_decrease } => {
            let args = args![id, g.percent, &g.step, g.step_number, &g.message, *allow_decrease, now.0];
            change(c, id, PROGRESS, args, "progress", now).await?
        }
        JobReportKind::Result(result) => change(c, id, RESULT, args![id, result], "result", now).await?,
        JobReportKind::Fail(error) => end(c, id, &FAIL, args![id, now.0, error], "failed", now).await?,
    };
    if !applied {
        return Err(refusal(c, id, now).await);
    }
    read(c, id, now).await?.ok_or(StoreError::JobNotFound)
}

pub(crate) async fn events(c: &mut impl Conn, id: &str, after_seq: i64, limit: usize) -> StoreResult<Vec<JobEvent>> {
    c.query(&EVENTS, args![id, after_seq, limit as i64], |r| {
        Ok(JobEvent { seq: r.big(0)?, at: Timestamp(r.big(1)?), kind: r.text(2)?, job: job_from(r, 3)? })
    })
    .await
}

/// Delete the jobs past their expiry, with their labels, events and callbacks; how many.
pub(crate) async fn expire(c: &mut impl Conn, now: Timestamp) -> StoreResult<u64> {
    let expired = c.query(EXPIRED, args![now.0], |r| r.text(0)).await?;
    for id in &expired {
        for statement in DELETE_JOB {
            c.execute(statement, args![id]).await?;
        }
    }
    Ok(expired.len() as u64)
}

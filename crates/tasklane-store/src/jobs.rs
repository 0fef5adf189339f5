//! The SQL of jobs, shared by both backends (SQLite reads `$n` as `?n`), and the mapping
//! from a job row to `Job`. Every change of a job bumps its `seq` and copies its changing
//! columns into `job_events` under that number, in the same transaction as the change.

use std::time::Duration;

use tasklane_core::job::{FailurePolicy, Job, JobStatus, Progress};
use tasklane_core::{QueueName, Timestamp};

use crate::columns::{Columns, decode_headers, duration_from, encode_headers};

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
pub fn settle() -> String {
    format!(
        "UPDATE jobs SET {} WHERE id = $1 AND {LIVE} AND succeeded + failed + cancelled >= total RETURNING status",
        finish_set("CASE WHEN failed > 0 THEN 'failed' WHEN cancelled > 0 THEN 'cancelled' ELSE 'succeeded' END")
    )
}

/// The event of tasks removed from a job through the Cloud Tasks API.
pub const TASKS_REMOVED: &str = "tasks_removed";

/// `$1` job, `$2` how many of its tasks were deleted or purged, `$3` why: they count as
/// cancelled, and a live job records why it will not succeed.
pub const REMOVED: &str = "UPDATE jobs SET cancelled = cancelled + $2, \
     error = CASE WHEN status IN ('pending', 'running') THEN coalesce(error, $3) ELSE error END, seq = seq + 1 \
     WHERE id = $1 RETURNING id";

/// The jobs of the tasks `condition` picks, with how many each has there. SQLite reads this
/// before deleting the tasks in the same write (it has one writer, so nothing comes between).
pub fn removed_count(condition: &str) -> String {
    format!("SELECT job_id, count(*) FROM tasks WHERE ({condition}) AND job_id IS NOT NULL GROUP BY job_id")
}

/// PostgreSQL deletes the tasks `condition` picks and counts their jobs in one statement, so a
/// task committed between a count and a delete cannot be missed.
pub fn removed_delete(condition: &str) -> String {
    format!(
        "WITH gone AS (DELETE FROM tasks WHERE {condition} RETURNING job_id) \
         SELECT job_id, count(*) FROM gone WHERE job_id IS NOT NULL GROUP BY job_id"
    )
}

/// Why a job lost tasks, for its `error`.
pub fn removed_reason(n: i64, how: &str) -> String {
    if n == 1 {
        format!("1 task was removed by {how} before it finished")
    } else {
        format!("{n} tasks were removed by {how} before they finished")
    }
}

/// `$1` job, `$2` now, `$3` error: a fail-fast job fails at its first failed task.
pub fn fail_fast() -> String {
    format!(
        "UPDATE jobs SET {}, error = coalesce(error, $3) WHERE id = $1 AND {LIVE} AND policy = 'fail_fast' RETURNING id",
        finish_set("'failed'")
    )
}

/// `$1` job, `$2` now, `$3` error: the worker reported the job failed.
pub fn fail() -> String {
    format!("UPDATE jobs SET {}, error = $3 WHERE id = $1 AND {LIVE} RETURNING id", finish_set("'failed'"))
}

/// `$1` job, `$2` now: cancel.
pub fn cancel() -> String {
    format!("UPDATE jobs SET {} WHERE id = $1 AND {LIVE} RETURNING id", finish_set("'cancelled'"))
}

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
/// `$6` created before, `$7` cursor time, `$8` cursor id, `$9` limit, `$10` now. `cast` is the
/// backend's way to type a text parameter that may be null.
pub fn list(cast: &str) -> String {
    format!(
        "SELECT {} FROM jobs WHERE ($1{cast} IS NULL OR status = $1) AND ($2{cast} IS NULL OR queue = $2) \
         AND ($3{cast} IS NULL OR EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id AND l.key = $3 AND l.value = $4)) \
         AND created_at > $5 AND created_at < $6 AND (created_at > $7 OR (created_at = $7 AND id > $8)) \
         AND (expires_at IS NULL OR expires_at > $10) ORDER BY created_at, id LIMIT $9",
        columns("", "")
    )
}

/// `$1` job, `$2` after seq, `$3` limit.
pub fn events() -> String {
    format!(
        "SELECT e.seq, e.at, e.kind, {} FROM job_events e JOIN jobs j ON j.id = e.job_id \
         WHERE e.job_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3",
        columns("j", "e")
    )
}

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

//! Dead letters: tasks that gave up, kept with every attempt for inspection, and put back
//! in their queue (redriven) or purged on request or after their retention.

use tasklane_core::{QueueName, Task, TaskName, Timestamp};

use crate::columns::{Columns, TASK_COLUMN_COUNT, TASK_COLUMNS, attempt_log, task_from};
use crate::sql::{Conn, Dialects, args};
use crate::{StoreResult, tasks};

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

/// The task a redriven dead letter becomes: same name and request, a new attempt series due now.
fn redriven_task(mut t: Task, now: Timestamp) -> Task {
    t.schedule_time = now;
    t.dispatch_count = 0;
    t.response_count = 0;
    t.execution_count = 0;
    t.last_http_status = 0;
    t.first_attempt = None;
    t.last_attempt = None;
    t.job_id = None;
    t
}

/// Dead letters' columns after `TASK_COLUMNS`: died at, id, attempt log.
fn dead_letter_columns() -> String {
    format!("{TASK_COLUMNS}, died_at, id, attempts")
}

fn dead_letter_from<R: Columns>(row: &R) -> Result<DeadLetter, R::Error> {
    Ok(DeadLetter {
        task: task_from(row)?,
        died_at: Timestamp(row.big(TASK_COLUMN_COUNT)?),
        id: row.big(TASK_COLUMN_COUNT + 1)?,
        attempts: attempt_log(row.opt_text(TASK_COLUMN_COUNT + 2)?.as_deref()),
    })
}

static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {} FROM dead_letters WHERE queue = $1 AND id > $2 ORDER BY id LIMIT $3", dead_letter_columns())
});
static GET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {} FROM dead_letters WHERE queue = $1 AND id = $2", dead_letter_columns())
});
/// A queue's dead letters, by id; PostgreSQL locks them against a concurrent redrive.
static IDS: Dialects = Dialects::new(
    || "SELECT id FROM dead_letters WHERE queue = $1 ORDER BY id".into(),
    || "SELECT id FROM dead_letters WHERE queue = $1 ORDER BY id FOR UPDATE".into(),
);
const DELETE_ONE: &str = "DELETE FROM dead_letters WHERE queue = $1 AND id = $2";
const DELETE_ALL: &str = "DELETE FROM dead_letters WHERE queue = $1";
const EXPIRE: &str = "DELETE FROM dead_letters WHERE died_at < $1";
const TOMBSTONE_DROP: &str = "DELETE FROM tombstones WHERE queue = $1 AND task_id = $2";

pub(crate) async fn list(c: &mut impl Conn, p: DeadLetterList) -> StoreResult<Vec<DeadLetter>> {
    let queue = p.queue.to_string();
    c.query(&LIST, args![&queue, p.after.unwrap_or(0), p.limit as i64], |r| dead_letter_from(r)).await
}

pub(crate) async fn get(c: &mut impl Conn, queue: &QueueName, id: i64) -> StoreResult<Option<DeadLetter>> {
    c.query_opt(&GET, args![&queue.to_string(), id], |r| dead_letter_from(r)).await
}

/// The ids a selection names that exist in `queue`, in order.
async fn ids(c: &mut impl Conn, queue: &str, select: &DeadLetterSelect) -> StoreResult<Vec<i64>> {
    let statement = IDS.of(c);
    let all = c.query(statement, args![queue], |r| r.big(0)).await?;
    Ok(match select {
        DeadLetterSelect::All => all,
        DeadLetterSelect::Ids(ids) => all.into_iter().filter(|id| ids.contains(id)).collect(),
    })
}

/// Run in one transaction.
pub(crate) async fn redrive(c: &mut impl Conn, p: DeadLetterRedrive) -> StoreResult<Redriven> {
    let queue = p.queue.to_string();
    let mut out = Redriven::default();
    for id in ids(c, &queue, &p.select).await? {
        let Some(dead) = get(c, &p.queue, id).await? else { continue };
        let task = redriven_task(dead.task, p.now);
        c.execute(TOMBSTONE_DROP, args![&queue, &task.name.task]).await?;
        if !tasks::insert_task(c, &task, None).await? {
            out.conflicts.push(id);
            continue;
        }
        c.execute(DELETE_ONE, args![&queue, id]).await?;
        out.tasks.push(task.name);
    }
    Ok(out)
}

/// Delete dead letters; how many.
pub(crate) async fn purge(c: &mut impl Conn, queue: &QueueName, select: DeadLetterSelect) -> StoreResult<u64> {
    let queue = queue.to_string();
    match select {
        DeadLetterSelect::All => c.execute(DELETE_ALL, args![&queue]).await,
        DeadLetterSelect::Ids(ids) => {
            let mut n = 0;
            for id in ids {
                n += c.execute(DELETE_ONE, args![&queue, id]).await?;
            }
            Ok(n)
        }
    }
}

pub(crate) async fn expire(c: &mut impl Conn, before: Timestamp) -> StoreResult<u64> {
    c.execute(EXPIRE, args![before.0]).await
}

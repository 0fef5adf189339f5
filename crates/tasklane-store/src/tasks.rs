//! Tasks: creation under a live queue and a free name, reads, deletion with its tombstone,
//! leases (a dispatcher's claim, a pull worker's lease, `RunTask`'s claim by name), and the
//! outcome of an attempt, recorded under the lease that fences it with its job's counts.
//!
//! Two things differ by dialect and are written side by side here: SQLite keeps a body over
//! `INLINE_BODY_MAX` bytes in `task_bodies` (a claim rewrites the whole row), and a claim on
//! PostgreSQL is one statement that skips rows another node holds, while SQLite lists the
//! due ids first and then leases exactly those (one writer, so nothing comes between).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use tasklane_core::{QueueName, Task, TaskName, Timestamp};

use crate::columns::{self, CLAIM_ORDER, Columns, Shifted, TASK_COLUMN_COUNT, TASK_COLUMNS};
use crate::sql::{Conn, Dialect, Dialects, args};
use crate::{AttemptResult, StoreError, StoreResult, TaskOutcome, jobs};

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

/// Bodies longer than this live in SQLite's `task_bodies`, not in the task's row: a row is
/// rewritten whole by every claim and outcome, and a 48 KB body made each of those write 27
/// pages to the WAL instead of 2. PostgreSQL keeps large values apart by itself (TOAST).
const INLINE_BODY_MAX: usize = 512;

/// `TASK_COLUMNS` for reading a task row: on SQLite the body comes from `task_bodies` when
/// it is kept apart.
pub(crate) static SELECT: Dialects = Dialects::new(
    || {
        TASK_COLUMNS.replacen(
            " body,",
            " CASE WHEN body_apart = 1 THEN (SELECT b.body FROM task_bodies b WHERE b.id = tasks.id) ELSE body END,",
            1,
        )
    },
    || TASK_COLUMNS.to_string(),
);

/// Insert a task unless its name is taken: `$1`…`$16` its columns, then on SQLite `$17`
/// whether its body is kept apart. Guarded (PostgreSQL only), `$17` is the time it was
/// accepted, and the insert also needs its queue to exist and its name to be free of
/// tombstones then: one round trip. SQLite checks those first instead, in the same write:
/// an `INSERT … SELECT` there opens a statement journal for every task (a quarter more CPU
/// per batched create, measured), where `INSERT … VALUES` of one row needs none.
fn insert(dialect: Dialect, guarded: bool) -> String {
    const COLUMNS: &str = "queue, task_id, state, due_at, url, method, headers, body, auth_kind, auth_email, \
         auth_param, schedule_time, create_time, dispatch_deadline_us, retry_config, job_id, tag, env";
    const VALUES: &str = "$1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $3, $11, $12, $13, $14, $15, $16";
    match (dialect, guarded) {
        (Dialect::Sqlite, _) => format!(
            "INSERT INTO tasks ({COLUMNS}, body_apart) VALUES ({VALUES}, $17) ON CONFLICT (queue, task_id) DO NOTHING"
        ),
        (Dialect::Postgres, false) => {
            format!("INSERT INTO tasks ({COLUMNS}) VALUES ({VALUES}) ON CONFLICT (queue, task_id) DO NOTHING")
        }
        (Dialect::Postgres, true) => format!(
            "INSERT INTO tasks ({COLUMNS}) SELECT {VALUES} WHERE EXISTS (SELECT 1 FROM queues WHERE name = $1) \
             AND NOT EXISTS (SELECT 1 FROM tombstones WHERE queue = $1 AND task_id = $2 AND expires_at > $17) \
             ON CONFLICT (queue, task_id) DO NOTHING"
        ),
    }
}
static INSERT: Dialects = Dialects::new(|| insert(Dialect::Sqlite, false), || insert(Dialect::Postgres, false));
static INSERT_GUARDED: LazyLock<String> = LazyLock::new(|| insert(Dialect::Postgres, true));
const BODY_INSERT: &str = "INSERT INTO task_bodies (id, body) VALUES (last_insert_rowid(), $1)";

const QUEUE_EXISTS: &str = "SELECT 1 FROM queues WHERE name = $1";
const TOMBSTONED: &str = "SELECT 1 FROM tombstones WHERE queue = $1 AND task_id = $2 AND expires_at > $3";
/// `$1` queue, `$2` task, `$3` until: a tombstone only ever lengthens.
pub(crate) const TOMBSTONE_PUT: &str = "INSERT INTO tombstones (queue, task_id, expires_at) VALUES ($1, $2, $3) \
     ON CONFLICT (queue, task_id) DO UPDATE SET expires_at = \
     CASE WHEN excluded.expires_at > tombstones.expires_at THEN excluded.expires_at ELSE tombstones.expires_at END";

static GET: Dialects = Dialects::new(
    || format!("SELECT {} FROM tasks WHERE queue = $1 AND task_id = $2", SELECT.sqlite()),
    || format!("SELECT {TASK_COLUMNS} FROM tasks WHERE queue = $1 AND task_id = $2"),
);
static LIST: Dialects = Dialects::new(
    || format!("SELECT {} FROM tasks WHERE queue = $1 AND task_id > $2 ORDER BY task_id LIMIT $3", SELECT.sqlite()),
    || format!("SELECT {TASK_COLUMNS} FROM tasks WHERE queue = $1 AND task_id > $2 ORDER BY task_id LIMIT $3"),
);
const DELETE: &str = "DELETE FROM tasks WHERE queue = $1 AND task_id = $2 RETURNING job_id";

/// The due tasks of queue `$1` at `$2` a claim may take (`$4` of them at most): while the
/// queue runs and, given an owner `$5`, while that node holds the queue.
fn claim_due() -> String {
    format!(
        "SELECT id, due_at FROM tasks WHERE queue = $1 AND due_at <= $2 \
         AND EXISTS (SELECT 1 FROM queues WHERE name = $1 AND state = 'running') AND {} {CLAIM_ORDER} LIMIT $4",
        columns::claim_owned("$5")
    )
}

/// A pull lease's tasks: up to `$4` due tasks of queue `$1` at `$2`, with tag `$5` if given.
fn lease_due() -> String {
    format!(
        "SELECT id, due_at FROM tasks WHERE queue = $1 AND due_at <= $2 AND (CAST($5 AS TEXT) IS NULL OR tag = $5) \
         AND EXISTS (SELECT 1 FROM queues WHERE name = $1 AND state = 'running') {CLAIM_ORDER} LIMIT $4"
    )
}

/// Lease what `due` picks, at `$2` for `length`. SQLite: the lease id and row id follow the
/// task's columns. PostgreSQL: the due time, row id and lease id come first.
fn lease_statement(dialect: Dialect, due: &str, length: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "UPDATE tasks SET {} WHERE id IN (SELECT id FROM ({due})) RETURNING {}, lease_id, id",
            columns::lease_set("$2", length, ""),
            SELECT.sqlite()
        ),
        Dialect::Postgres => format!(
            "WITH due AS ({due} FOR UPDATE OF tasks SKIP LOCKED) \
             UPDATE tasks t SET {} FROM due WHERE t.id = due.id RETURNING due.due_at, t.id, t.lease_id, {}",
            columns::lease_set("$2", &length.replace("dispatch_deadline_us", "t.dispatch_deadline_us"), "t"),
            columns::prefixed(TASK_COLUMNS, "t")
        ),
    }
}

/// `$1` queue, `$2` now, `$3` grace, `$4` limit, `$5` owner.
static CLAIM_DUE: LazyLock<String> = LazyLock::new(claim_due);
static CLAIM: Dialects = Dialects::new(
    || lease_statement(Dialect::Sqlite, &claim_due(), &columns::push_lease_length("$3", "")),
    || lease_statement(Dialect::Postgres, &claim_due(), &columns::push_lease_length("$3", "")),
);
/// `$1` queue, `$2` now, `$3` lease, `$4` limit, `$5` tag.
static LEASE_DUE: LazyLock<String> = LazyLock::new(lease_due);
static LEASE: Dialects = Dialects::new(
    || lease_statement(Dialect::Sqlite, &lease_due(), "$3"),
    || lease_statement(Dialect::Postgres, &lease_due(), "$3"),
);
/// `$1` queue, `$2` task, `$3` now, `$4` grace; the lease id comes first.
static CLAIM_BY_NAME: Dialects = Dialects::new(
    || {
        format!(
            "UPDATE tasks SET {} WHERE queue = $1 AND task_id = $2 RETURNING lease_id, {}",
            columns::lease_set("$3", &columns::push_lease_length("$4", ""), ""),
            SELECT.sqlite()
        )
    },
    || {
        format!(
            "UPDATE tasks t SET {} WHERE t.queue = $1 AND t.task_id = $2 RETURNING t.lease_id, {}",
            columns::lease_set("$3", &columns::push_lease_length("$4", "t"), "t"),
            columns::prefixed(TASK_COLUMNS, "t")
        )
    },
);

/// `$1` queue, `$2` task, `$3` until, `$4` lease id.
const RENEW: &str =
    "UPDATE tasks SET due_at = $3 WHERE queue = $1 AND task_id = $2 AND state = 'leased' AND lease_id = $4";
/// `$1` queue, `$2` task, `$3` now, `$4` lease id: give back without counting the attempt.
const RELEASE: &str = "UPDATE tasks SET state = 'queued', due_at = $3, \
     dispatch_count = CASE WHEN dispatch_count > 0 THEN dispatch_count - 1 ELSE 0 END \
     WHERE queue = $1 AND task_id = $2 AND state = 'leased' AND lease_id = $4";
/// `$1` now, `$2` a queue or null for all: see `Store::task_lease_release`.
const LEASE_RELEASE: &str = "UPDATE tasks SET state = 'queued', \
     due_at = CASE WHEN schedule_time < $1 THEN schedule_time ELSE $1 END \
     WHERE state = 'leased' AND (CAST($2 AS TEXT) IS NULL OR queue = $2) \
     AND queue NOT IN (SELECT name FROM queues WHERE kind = 'pull')";
const NEXT_DUE: &str = "SELECT min(due_at) FROM tasks WHERE queue = $1";
const COUNT: &str = "SELECT count(*) FROM tasks WHERE queue = $1";

/// A success: the delete that checks the lease names the job.
const FINISH_SUCCEEDED: &str =
    "DELETE FROM tasks WHERE queue = $1 AND task_id = $2 AND state = 'leased' AND lease_id = $3 RETURNING job_id";
/// An attempt's answer, recorded while lease `$3` holds task `$2` of queue `$1`: `$4`
/// responded, `$5` executed, `$6` HTTP status, `$7` response time, `$8` code, `$9` message,
/// `$10` the attempt log's line; a retry also queues the task again at `$11`.
fn record_attempt(retry: bool) -> String {
    let requeue = if retry { ", state = 'queued', due_at = $11, schedule_time = $11" } else { "" };
    format!(
        "UPDATE tasks SET response_count = response_count + $4, execution_count = execution_count + $5, \
         last_http_status = $6, last_response_time = $7, last_code = $8, last_message = $9, {}{requeue} \
         WHERE queue = $1 AND task_id = $2 AND state = 'leased' AND lease_id = $3 RETURNING job_id",
        columns::ATTEMPT_LOG_APPEND.replace("$LINE", "$10")
    )
}
static FINISH_RETRY: LazyLock<String> = LazyLock::new(|| record_attempt(true));
static FINISH_ATTEMPT: LazyLock<String> = LazyLock::new(|| record_attempt(false));
/// `$1` queue, `$2` task, `$3` now: copy the task, with its attempt log, to the dead letters.
static DEAD_LETTER: Dialects = Dialects::new(
    || {
        format!(
            "INSERT INTO dead_letters (died_at, {TASK_COLUMNS}, attempts) \
             SELECT $3, {}, attempts FROM tasks WHERE queue = $1 AND task_id = $2",
            SELECT.sqlite()
        )
    },
    || {
        format!(
            "INSERT INTO dead_letters (died_at, {TASK_COLUMNS}, attempts) \
             SELECT $3, {TASK_COLUMNS}, attempts FROM tasks WHERE queue = $1 AND task_id = $2"
        )
    },
);
const REMOVE: &str = "DELETE FROM tasks WHERE queue = $1 AND task_id = $2";

fn queue_of(name: &TaskName) -> String {
    name.queue.to_string()
}

/// Insert `t` unless its name is taken (and, given `accepted_at`, on PostgreSQL only, unless
/// its queue is missing or its name tombstoned then); whether it was inserted.
pub(crate) async fn insert_task(c: &mut impl Conn, t: &Task, accepted_at: Option<Timestamp>) -> StoreResult<bool> {
    let (auth_kind, auth_email, auth_param) = columns::auth_columns(&t.http_request.auth);
    let (queue, headers) = (queue_of(&t.name), columns::encode_headers(&t.http_request.headers));
    let deadline = tasklane_core::clock::duration_micros(t.dispatch_deadline);
    let retry = t.retry_config.as_ref().map(columns::encode_retry);
    let env = columns::encode_env(&t.env);
    let body = t.http_request.body.as_slice();
    let apart = c.dialect() == Dialect::Sqlite && body.len() > INLINE_BODY_MAX;
    let inline: &[u8] = if apart { &[] } else { body };
    let mut args = args![
        &queue,
        &t.name.task,
        t.schedule_time.0,
        &t.http_request.url,
        t.http_request.method.as_str(),
        &headers,
        inline,
        auth_kind,
        auth_email,
        auth_param,
        t.create_time.0,
        deadline,
        retry.as_deref(),
        t.job_id.as_deref(),
        t.tag.as_deref(),
        env.as_deref(),
    ]
    .to_vec();
    if c.dialect() == Dialect::Sqlite {
        args.push(i32::from(apart).into());
    }
    let inserted = match accepted_at {
        Some(at) => {
            args.push(at.0.into());
            c.execute(&INSERT_GUARDED, &args).await?
        }
        None => {
            let statement = INSERT.of(c);
            c.execute(statement, &args).await?
        }
    };
    if inserted == 1 && apart {
        c.execute(BODY_INSERT, args![body]).await?;
    }
    Ok(inserted == 1)
}

/// Whether a task name is reserved at `now` by a tombstone.
pub(crate) async fn tombstoned(c: &mut impl Conn, queue: &str, task_id: &str, now: Timestamp) -> StoreResult<bool> {
    Ok(c.query_opt(TOMBSTONED, args![queue, task_id, now.0], |_| Ok(())).await?.is_some())
}

pub(crate) async fn tombstone_put(c: &mut impl Conn, queue: &str, task_id: &str, until: Timestamp) -> StoreResult<()> {
    c.execute(TOMBSTONE_PUT, args![queue, task_id, until.0]).await.map(|_| ())
}

pub(crate) async fn queue_exists(c: &mut impl Conn, queue: &str) -> StoreResult<bool> {
    Ok(c.query_opt(QUEUE_EXISTS, args![queue], |_| Ok(())).await?.is_some())
}

/// Create one task: its queue must exist and its name be neither in use nor tombstoned.
/// On PostgreSQL one statement when it succeeds (a refusal reads why); on SQLite, whose
/// writer nothing can come between, the checks and then the insert.
pub(crate) async fn create(c: &mut impl Conn, p: TaskCreate) -> StoreResult<Task> {
    let queue = queue_of(&p.task.name);
    let guarded = c.dialect() == Dialect::Postgres;
    if guarded && insert_task(c, &p.task, Some(p.now)).await? {
        return Ok(p.task);
    }
    if !queue_exists(c, &queue).await? {
        return Err(StoreError::QueueNotFound);
    }
    if tombstoned(c, &queue, &p.task.name.task, p.now).await? {
        return Err(StoreError::TaskTombstoned);
    }
    if !guarded && insert_task(c, &p.task, None).await? {
        return Ok(p.task);
    }
    Err(StoreError::TaskAlreadyExists)
}

/// Create several tasks in one transaction; each succeeds or is refused alone, and any
/// other error fails them all (`Err`).
pub(crate) async fn create_many(c: &mut impl Conn, creates: Vec<TaskCreate>) -> StoreResult<Vec<StoreResult<Task>>> {
    let mut results = Vec::with_capacity(creates.len());
    for p in creates {
        match create(c, p).await {
            r @ (Ok(_)
            | Err(StoreError::QueueNotFound | StoreError::TaskTombstoned | StoreError::TaskAlreadyExists)) => {
                results.push(r)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(results)
}

/// Every task result as one error, for a `create_many` that failed whole.
pub(crate) fn all_failed(n: usize, results: StoreResult<Vec<StoreResult<Task>>>) -> Vec<StoreResult<Task>> {
    match results {
        Ok(results) => results,
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    }
}

pub(crate) async fn get(c: &mut impl Conn, name: &TaskName, now: Timestamp) -> StoreResult<TaskLookup> {
    let queue = queue_of(name);
    let statement = GET.of(c);
    if let Some(task) = c.query_opt(statement, args![&queue, &name.task], |r| columns::task_from(r)).await? {
        return Ok(TaskLookup::Found(Box::new(task)));
    }
    Ok(if tombstoned(c, &queue, &name.task, now).await? { TaskLookup::Tombstoned } else { TaskLookup::Missing })
}

pub(crate) async fn list(c: &mut impl Conn, p: TaskList) -> StoreResult<Vec<Task>> {
    let (queue, after) = (p.queue.to_string(), p.after.unwrap_or_default());
    let statement = LIST.of(c);
    c.query(statement, args![&queue, &after, p.limit as i64], |r| columns::task_from(r)).await
}

/// Delete a task and tombstone its name; its job counts it as cancelled. Returns the job.
pub(crate) async fn delete(c: &mut impl Conn, p: TaskDelete) -> StoreResult<Option<String>> {
    let queue = queue_of(&p.name);
    let Some(job) = c.query_opt(DELETE, args![&queue, &p.name.task], |r| r.opt_text(0)).await? else {
        let tombstoned = tombstoned(c, &queue, &p.name.task, p.now).await?;
        return Err(if tombstoned { StoreError::TaskTombstoned } else { StoreError::TaskNotFound });
    };
    tombstone_put(c, &queue, &p.name.task, p.tombstone_until).await?;
    if let Some(job) = &job {
        jobs::tasks_removed(c, job, 1, "DeleteTask", p.now).await?;
    }
    Ok(job)
}

/// Lease tasks in claim order, due first then creation order: PostgreSQL in one statement
/// (its RETURNING has no order, so the rows are sorted by the due time and id they carry);
/// SQLite lists the ids in order, then leases exactly those.
async fn lease_in_order(
    c: &mut impl Conn,
    due: &'static str,
    lease: &'static Dialects,
    args: &[crate::sql::Arg<'_>],
) -> StoreResult<Vec<ClaimedTask>> {
    let mut leased = match c.dialect() {
        Dialect::Sqlite => {
            let order: HashMap<i64, i64> =
                c.query(due, args, |r| r.big(0)).await?.into_iter().zip(0..).collect::<HashMap<_, _>>();
            if order.is_empty() {
                return Ok(Vec::new());
            }
            let statement = lease.of(c);
            c.query(statement, args, |r| {
                let id = r.big(TASK_COLUMN_COUNT + 1)?;
                let task = ClaimedTask { task: columns::task_from(r)?, lease_id: r.big(TASK_COLUMN_COUNT)? };
                Ok(((order.get(&id).copied().unwrap_or(i64::MAX), 0), task))
            })
            .await?
        }
        Dialect::Postgres => {
            let statement = lease.of(c);
            c.query(statement, args, |r| {
                let task = columns::task_from(&Shifted { row: r, by: 3 })?;
                Ok(((r.big(0)?, r.big(1)?), ClaimedTask { task, lease_id: r.big(2)? }))
            })
            .await?
        }
    };
    leased.sort_by_key(|(order, _)| *order);
    Ok(leased.into_iter().map(|(_, c)| c).collect())
}

/// A dispatcher's claim. The caller then starts the claimed tasks' jobs (`jobs::started`).
pub(crate) async fn claim(c: &mut impl Conn, p: &TaskClaim) -> StoreResult<Vec<ClaimedTask>> {
    let (queue, grace) = (p.queue.to_string(), tasklane_core::clock::duration_micros(p.grace));
    let args = args![&queue, p.now.0, grace, p.limit as i64, p.owner.as_deref()];
    lease_in_order(c, &CLAIM_DUE, &CLAIM, args).await
}

/// A pull worker's lease. The caller then starts the leased tasks' jobs (`jobs::started`).
pub(crate) async fn lease(c: &mut impl Conn, p: &TaskLease) -> StoreResult<Vec<ClaimedTask>> {
    let (queue, length) = (p.queue.to_string(), tasklane_core::clock::duration_micros(p.lease));
    let args = args![&queue, p.now.0, length, p.limit as i64, p.tag.as_deref()];
    lease_in_order(c, &LEASE_DUE, &LEASE, args).await
}

pub(crate) async fn claim_by_name(c: &mut impl Conn, p: TaskClaimByName) -> StoreResult<ClaimedTask> {
    let queue = queue_of(&p.name);
    let grace = tasklane_core::clock::duration_micros(p.grace);
    let statement = CLAIM_BY_NAME.of(c);
    let claimed = c
        .query_opt(statement, args![&queue, &p.name.task, p.now.0, grace], |r| {
            Ok(ClaimedTask { lease_id: r.big(0)?, task: columns::task_from(&Shifted { row: r, by: 1 })? })
        })
        .await?;
    match claimed {
        Some(claimed) => Ok(claimed),
        None if tombstoned(c, &queue, &p.name.task, p.now).await? => Err(StoreError::TaskTombstoned),
        None => Err(StoreError::TaskNotFound),
    }
}

pub(crate) async fn renew(c: &mut impl Conn, p: TaskRenew) -> StoreResult<bool> {
    Ok(c.execute(RENEW, args![&queue_of(&p.name), &p.name.task, p.until.0, p.lease_id]).await? == 1)
}

pub(crate) async fn release(c: &mut impl Conn, p: TaskRelease) -> StoreResult<bool> {
    Ok(c.execute(RELEASE, args![&queue_of(&p.name), &p.name.task, p.now.0, p.lease_id]).await? == 1)
}

pub(crate) async fn lease_release(c: &mut impl Conn, queue: Option<QueueName>, now: Timestamp) -> StoreResult<u64> {
    let queue = queue.map(|q| q.to_string());
    c.execute(LEASE_RELEASE, args![now.0, queue.as_deref()]).await
}

pub(crate) async fn next_due(c: &mut impl Conn, queue: &QueueName) -> StoreResult<Option<Timestamp>> {
    let due = c.query_opt(NEXT_DUE, args![&queue.to_string()], |r| r.opt_big(0)).await?;
    Ok(due.flatten().map(Timestamp))
}

pub(crate) async fn count(c: &mut impl Conn, queue: &QueueName) -> StoreResult<u64> {
    let n = c.query_opt(COUNT, args![&queue.to_string()], |r| r.big(0)).await?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// Record an attempt's outcome under its lease, with its job's counts, in one transaction:
/// `None` when the lease was lost (nothing changed), else `Some` of the task's job. Each
/// outcome's first statement both checks the lease and writes: a success deletes the task,
/// a retry records the answer and queues the task again, a give-up records the answer
/// before the task moves to the dead letters.
pub(crate) async fn finish(c: &mut impl Conn, p: &TaskFinish) -> StoreResult<Option<Option<String>>> {
    let queue = queue_of(&p.name);
    let task_id = p.name.task.as_str();
    match &p.outcome {
        TaskOutcome::Succeeded { tombstone_until } => {
            let Some(job) =
                c.query_opt(FINISH_SUCCEEDED, args![&queue, task_id, p.lease_id], |r| r.opt_text(0)).await?
            else {
                return Ok(None);
            };
            tombstone_put(c, &queue, task_id, *tombstone_until).await?;
            if let Some(job) = &job {
                jobs::tasks_done(c, job, 1, 0, "", None, p.now).await?;
            }
            Ok(Some(job))
        }
        TaskOutcome::Retry { attempt, retry_at } => {
            let answer = Answer::of(attempt);
            let mut args = answer.args(&queue, task_id, p.lease_id);
            args.push(retry_at.0.into());
            Ok(c.query_opt(&FINISH_RETRY, &args, |r| r.opt_text(0)).await?)
        }
        TaskOutcome::GaveUp { attempt, tombstone_until } => {
            let answer = Answer::of(attempt);
            let recorded =
                c.query_opt(&FINISH_ATTEMPT, &answer.args(&queue, task_id, p.lease_id), |r| r.opt_text(0)).await?;
            let Some(job) = recorded else { return Ok(None) };
            let statement = DEAD_LETTER.of(c);
            c.execute(statement, args![&queue, task_id, p.now.0]).await?;
            c.execute(REMOVE, args![&queue, task_id]).await?;
            tombstone_put(c, &queue, task_id, *tombstone_until).await?;
            if let Some(job) = &job {
                let error = format!("task {task_id} failed for good: {}", attempt.status.message);
                jobs::tasks_done(c, job, 0, 1, &error, Some(&p.name.to_string()), p.now).await?;
            }
            Ok(Some(job))
        }
    }
}

/// An attempt's answer as `record_attempt`'s arguments.
struct Answer {
    responded: i32,
    executed: i32,
    http_status: i32,
    response_time: i64,
    code: i32,
    message: String,
    line: String,
}

impl Answer {
    fn of(a: &AttemptResult) -> Answer {
        Answer {
            responded: i32::from(a.responded),
            executed: i32::from(a.responded && a.http_status < 500),
            http_status: i32::from(a.http_status),
            response_time: a.response_time.0,
            code: a.status.code as i32,
            message: a.status.message.clone(),
            line: columns::attempt_line(a),
        }
    }

    fn args<'a>(&'a self, queue: &'a str, task_id: &'a str, lease_id: i64) -> Vec<crate::sql::Arg<'a>> {
        args![
            queue,
            task_id,
            lease_id,
            self.responded,
            self.executed,
            self.http_status,
            self.response_time,
            self.code,
            &self.message,
            &self.line,
        ]
        .to_vec()
    }
}

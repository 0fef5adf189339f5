//! The embedded backend: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that group-commits: it takes every write
//! waiting in its channel (up to `MAX_BATCH`), runs them in one transaction, commits
//! once, and only then answers the callers. A failed write undoes only its own changes
//! and leaves the others in the batch untouched: API writes each run inside their own
//! savepoint; the dispatcher's bookkeeping runs without (a savepoint copies every page a
//! write touches, which cost the writer a sixth of its time) and, if one of it fails, the
//! batch is rolled back and run again with a savepoint each. Reads run on a small pool
//! of reader threads with their own connections.
//!
//! A commit that holds an accepted task or an API change is fsynced before anyone hears
//! back. A commit that holds only the dispatcher's bookkeeping (claims, outcomes, leases)
//! is written to the WAL but not fsynced: a crashed process loses none of it, and a power
//! cut can undo only the latest of it, which runs those tasks again (at least once, as
//! promised). The next fsynced commit or checkpoint makes it durable too.

mod conn;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tasklane_core::{Queue, QueueName, Task, TaskName, Timestamp};
use tokio::sync::oneshot;

use crate::callbacks;
use crate::cluster;
use crate::columns::{self, CLAIM_ORDER, QUEUE_COLUMNS, TASK_COLUMNS};
use crate::jobs;
use crate::records;
use crate::sql::ready;
use crate::{
    Callback, CallbackAttempt, ClaimedTask, DeadLetter, DeadLetterList, DeadLetterRedrive, DeadLetterSelect, JobCreate,
    JobCreated, JobEvent, JobList, JobReport, JobReportKind, Node, NodeHeartbeat, Purged, QueueCreate, QueueDelete,
    QueueList, QueueOwner, QueueOwnerAcquire, QueueOwnerRelease, QueueOwnerRenew, QueuePurge, QueueSettingsPut,
    QueueStateSet, Record, RecordPut, Redriven, Store, StoreError, StoreResult, TaskClaim, TaskClaimByName, TaskCreate,
    TaskDelete, TaskFinish, TaskLease, TaskList, TaskLookup, TaskOutcome, TaskRelease, TaskRenew,
};
use conn::Lite;
use tasklane_core::job::Job;

const MAX_BATCH: usize = 1024;
/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// WAL pages after which the writer checkpoints by itself: a safety net for when the
/// checkpointer falls behind (about 40 MB).
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;
const READERS: usize = 2;
const SCHEMA: &str = include_str!("schema.sql");

/// When a write reaches the disk; see the module comment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// fsynced before the caller hears back.
    Synced,
    /// Written before the caller hears back; fsynced with a later commit or checkpoint.
    Relaxed,
}

/// A write waiting for the writer thread.
trait Write: Send {
    fn durability(&self) -> Durability;
    /// Run inside the open transaction; whether it succeeded. `isolated`: inside its own
    /// savepoint, so a failure undoes only this write; otherwise a failure leaves the
    /// transaction to be rolled back. A relaxed write can run again after a rollback; a
    /// synced one runs once, isolated.
    fn run(&mut self, conn: &Connection, isolated: bool) -> bool;
    /// Tell the caller how it ended: `commit` is the transaction's outcome.
    fn reply(self: Box<Self>, commit: Result<(), StoreError>);
}

struct PendingWrite<R, F> {
    durability: Durability,
    f: F,
    result: Option<StoreResult<R>>,
    tx: oneshot::Sender<StoreResult<R>>,
}

impl<R, F> Write for PendingWrite<R, F>
where
    R: Send,
    F: FnMut(&Connection) -> StoreResult<R> + Send,
{
    fn durability(&self) -> Durability {
        self.durability
    }

    fn run(&mut self, conn: &Connection, isolated: bool) -> bool {
        let result = if isolated { in_savepoint(conn, &mut self.f) } else { (self.f)(conn) };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn reply(self: Box<Self>, commit: Result<(), StoreError>) {
        let result = self.result.unwrap_or_else(|| Err(StoreError::Unavailable("the write was not run".into())));
        let _ = self.tx.send(commit.and(result));
    }
}

/// Run `f` inside its own savepoint: if it fails, its changes are undone.
fn in_savepoint<R>(conn: &Connection, f: &mut impl FnMut(&Connection) -> StoreResult<R>) -> StoreResult<R> {
    let step = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map_err(backend);
    step("SAVEPOINT op")?;
    let r = f(conn);
    if r.is_err() {
        step("ROLLBACK TO op")?;
    }
    step("RELEASE op")?;
    r
}

type WriteJob = Box<dyn Write>;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    /// Dropping it stops the checkpointer.
    checkpointer: Mutex<Option<mpsc::Sender<()>>>,
    readers: Mutex<Option<mpsc::Sender<ReadJob>>>,
    path: PathBuf,
    /// Why a write or a checkpoint last failed for want of space, until a checkpoint goes
    /// through: while the WAL cannot be checkpointed, writes fail or soon will, so the
    /// store is not ready.
    out_of_space: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish()
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

fn open(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // Keep each statement's plan: otherwise a new LIMIT or range value bound to a cached
    // statement makes SQLite compile it again (the claim spent a quarter of the writer's
    // time re-preparing).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32000;",
    )?;
    Ok(conn)
}

/// Make the database file, and its WAL and shared-memory files if they exist, readable by
/// their owner only: the store holds the token signing keys. SQLite gives the WAL and
/// shared-memory files it creates the database file's mode, so a new file made 0600
/// keeps them 0600 too. Looser files from before are tightened, with a warning.
fn owner_only(path: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let create = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path);
        create.map_err(|e| StoreError::Unavailable(format!("open {}: {e}", path.display())))?;
        let names = ["", "-wal", "-shm", "-journal"];
        for suffix in names {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            let Ok(meta) = std::fs::metadata(&file) else { continue };
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(file = %file.display(), mode = format!("{mode:o}"), "the store file was readable by others; made it 0600");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| StoreError::Unavailable(format!("restrict {}: {e}", file.display())))?;
            }
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database file at `path` and start its threads.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        owner_only(&path)?;
        let write_conn = open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)
            .map_err(|e| StoreError::Unavailable(format!("open {}: {e}", path.display())))?;
        write_conn.execute_batch(SCHEMA).map_err(backend)?;
        add_missing_columns(&write_conn).map_err(backend)?;
        dead_letter_ids_never_reused(&write_conn)?;
        // Checkpoints (and their fsyncs) run on their own thread, off the writer's path.
        write_conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES).map_err(backend)?;
        let checkpoint_conn = open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(backend)?;
        let (checkpoint_tx, checkpoint_rx) = mpsc::channel::<()>();
        let out_of_space = Arc::new(Mutex::new(None));
        thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn({
                let out_of_space = out_of_space.clone();
                move || checkpointer_loop(checkpoint_conn, checkpoint_rx, out_of_space)
            })
            .map_err(|e| StoreError::Backend(format!("start checkpointer thread: {e}")))?;

        let (write_tx, write_rx) = mpsc::channel::<WriteJob>();
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(write_conn, write_rx))
            .map_err(|e| StoreError::Backend(format!("start writer thread: {e}")))?;

        let (read_tx, read_rx) = mpsc::channel::<ReadJob>();
        let read_rx = Arc::new(Mutex::new(read_rx));
        for i in 0..READERS {
            let conn = open(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(backend)?;
            let rx = read_rx.clone();
            thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || reader_loop(conn, rx))
                .map_err(|e| StoreError::Backend(format!("start reader thread: {e}")))?;
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(Some(write_tx)),
                checkpointer: Mutex::new(Some(checkpoint_tx)),
                readers: Mutex::new(Some(read_tx)),
                path,
                out_of_space,
            }),
        })
    }

    /// Stop accepting work; the threads finish what is queued and close their connections.
    pub fn close(&self) {
        if let Ok(mut w) = self.inner.writer.lock() {
            w.take();
        }
        if let Ok(mut r) = self.inner.readers.lock() {
            r.take();
        }
        if let Ok(mut c) = self.inner.checkpointer.lock() {
            c.take();
        }
    }

    /// A write that is fsynced before it returns.
    async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        // Synced writes run once, in their own savepoint.
        let mut f = Some(f);
        let once = move |conn: &Connection| match f.take() {
            Some(f) => f(conn),
            None => Err(StoreError::Backend("a synced write was run twice".into())),
        };
        self.write_with(Durability::Synced, once).await
    }

    /// A write of the dispatcher's bookkeeping: see `Durability::Relaxed`. It may run
    /// more than once (only the last run's changes are committed).
    async fn write_relaxed<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnMut(&Connection) -> StoreResult<R> + Send + 'static,
    {
        self.write_with(Durability::Relaxed, f).await
    }

    async fn write_with<R, F>(&self, durability: Durability, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnMut(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send_write(Box::new(PendingWrite { durability, f, result: None, tx }))?;
        let result =
            rx.await.map_err(|_| StoreError::Unavailable("the write could not be run; see the server log".into()))?;
        if let Err(StoreError::Full(e)) = &result
            && let Ok(mut full) = self.inner.out_of_space.lock()
        {
            // Not ready until a checkpoint goes through (the checkpointer clears it).
            *full = Some(e.clone());
        }
        result
    }

    fn send_write(&self, job: WriteJob) -> StoreResult<()> {
        let guard = self.inner.writer.lock().map_err(|_| StoreError::Unavailable("writer lock poisoned".into()))?;
        let sender = guard.as_ref().ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        sender.send(job).map_err(|_| StoreError::Unavailable("the store writer stopped".into()))
    }

    /// Run a lease update (`$1` queue, `$2` task, `$3` time, `$4` lease id); whether the lease was held.
    async fn lease_write(
        &self,
        statement: &'static str,
        name: TaskName,
        at: Timestamp,
        lease_id: i64,
    ) -> StoreResult<bool> {
        self.write_relaxed(move |conn| {
            conn.prepare_cached(&sql(statement))
                .and_then(|mut s| s.execute(params![queue_name_of(&name), name.task, at.0, lease_id]))
                .map(|n| n == 1)
                .map_err(backend)
        })
        .await
    }

    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        {
            let guard =
                self.inner.readers.lock().map_err(|_| StoreError::Unavailable("reader lock poisoned".into()))?;
            let sender = guard.as_ref().ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            sender.send(job).map_err(|_| StoreError::Unavailable("the store readers stopped".into()))?;
        }
        rx.await.map_err(|_| StoreError::Unavailable("the store reader stopped".into()))?
    }
}

/// Columns added after the first release: `ALTER TABLE` for databases that lack them
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`).
const ADDED_COLUMNS: [(&str, &str, &str); 13] = [
    ("queues", "http_target", "TEXT"),
    ("tasks", "retry_config", "TEXT"),
    ("dead_letters", "retry_config", "TEXT"),
    ("tasks", "job_id", "TEXT"),
    ("dead_letters", "job_id", "TEXT"),
    ("tasks", "attempts", "TEXT"),
    ("dead_letters", "attempts", "TEXT"),
    ("queues", "kind", "TEXT NOT NULL DEFAULT 'push'"),
    ("tasks", "tag", "TEXT"),
    ("tasks", "env", "TEXT"),
    ("dead_letters", "tag", "TEXT"),
    ("dead_letters", "env", "TEXT"),
    ("tasks", "body_apart", "INTEGER NOT NULL DEFAULT 0"),
];

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, ty) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            [table, column],
            |r| r.get(0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
        }
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS tasks_job ON tasks (job_id) WHERE job_id IS NOT NULL; \
         CREATE INDEX IF NOT EXISTS tasks_tag ON tasks (queue, tag, due_at) WHERE tag IS NOT NULL; \
         CREATE TABLE IF NOT EXISTS task_bodies (id INTEGER PRIMARY KEY, body BLOB NOT NULL); \
         CREATE TRIGGER IF NOT EXISTS task_bodies_go_with_their_task AFTER DELETE ON tasks \
         WHEN old.body_apart = 1 BEGIN DELETE FROM task_bodies WHERE id = old.id; END;",
    )?;
    Ok(())
}

/// Dead-letter ids are never given twice, so a script cannot act on another letter than the
/// one it read: the table is `AUTOINCREMENT`. A database made before that has its table rebuilt
/// once, every row and id kept.
fn dead_letter_ids_never_reused(conn: &Connection) -> StoreResult<()> {
    let table: String = conn
        .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'dead_letters'", [], |r| r.get(0))
        .map_err(backend)?;
    if table.contains("AUTOINCREMENT") {
        return Ok(());
    }
    let rebuilt = table.replacen("CREATE TABLE dead_letters (", "CREATE TABLE dead_letters_rebuilt (", 1).replacen(
        "id INTEGER PRIMARY KEY,",
        "id INTEGER PRIMARY KEY AUTOINCREMENT,",
        1,
    );
    if !rebuilt.contains("dead_letters_rebuilt") || !rebuilt.contains("AUTOINCREMENT") {
        return Err(StoreError::Backend(format!("cannot upgrade the dead_letters table, made as: {table}")));
    }
    conn.execute_batch(&format!(
        "BEGIN; {rebuilt}; INSERT INTO dead_letters_rebuilt SELECT * FROM dead_letters; DROP TABLE dead_letters; \
         ALTER TABLE dead_letters_rebuilt RENAME TO dead_letters; \
         CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, id); COMMIT;"
    ))
    .map_err(backend)
}

fn sql(statement: &str) -> String {
    statement.replace('$', "?")
}

fn job_event(conn: &Connection, job: &str, now: Timestamp, kind: &str) -> StoreResult<()> {
    conn.prepare_cached(&sql(jobs::EVENT_INSERT))
        .and_then(|mut s| s.execute(params![job, now.0, kind]))
        .map_err(backend)?;
    Ok(())
}

/// Run an update of `job` that returns a row when it applied; record `kind` if it did.
fn job_change(
    conn: &Connection,
    job: &str,
    statement: &str,
    args: &[&dyn rusqlite::ToSql],
    kind: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let changed = job_update(conn, statement, args)?;
    if changed {
        job_event(conn, job, now, kind)?;
    }
    Ok(changed)
}

/// Run an update that returns a row when it applied.
fn job_update(conn: &Connection, statement: &str, args: &[&dyn rusqlite::ToSql]) -> StoreResult<bool> {
    conn.prepare_cached(&sql(statement)).and_then(|mut s| s.query(args)?.next().map(|r| r.is_some())).map_err(backend)
}

/// End a job with an update that cancels its tasks that have not started, then record `kind`.
fn job_end(
    conn: &Connection,
    job: &str,
    statement: &str,
    args: &[&dyn rusqlite::ToSql],
    kind: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let ended = job_update(conn, statement, args)?;
    if ended {
        job_cancel_tasks(conn, job)?;
        job_event(conn, job, now, kind)?;
        ready(callbacks::queue(&mut Lite(conn), job, jobs::JOB_FINISHED, None, now))?;
    }
    Ok(ended)
}

/// Cancel the job's tasks that have not started; returns how many.
fn job_cancel_tasks(conn: &Connection, job: &str) -> StoreResult<i64> {
    let cancelled = conn
        .prepare_cached(&sql(jobs::CANCEL_TASKS))
        .and_then(|mut s| s.query_map([job], |_| Ok(()))?.collect::<Result<Vec<()>, _>>())
        .map_err(backend)?;
    let n = cancelled.len() as i64;
    if n > 0 {
        conn.prepare_cached(&sql(jobs::COUNT_CANCELLED))
            .and_then(|mut s| s.execute(params![job, n]))
            .map_err(backend)?;
    }
    Ok(n)
}

/// A task of `job` reached a final outcome: count it, apply fail-fast, settle the job.
fn job_task_done(
    conn: &Connection,
    job: &str,
    task: &str,
    succeeded: bool,
    error: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let (s, f) = if succeeded { (1i64, 0i64) } else { (0, 1) };
    if !succeeded {
        ready(callbacks::queue(&mut Lite(conn), job, jobs::TASK_DEAD_LETTERED, Some(task), now))?;
    }
    let kind = if succeeded { "task_succeeded" } else { "task_failed" };
    job_change(conn, job, jobs::COUNT, &[&job, &s, &f], kind, now)?;
    if !succeeded && job_end(conn, job, &jobs::fail_fast(), &[&job, &now.0, &error], "failed", now)? {
        return Ok(());
    }
    job_settle(conn, job, now)
}

/// End `job` if every task has an outcome.
fn job_settle(conn: &Connection, job: &str, now: Timestamp) -> StoreResult<()> {
    let settled: Option<String> = conn
        .prepare_cached(&sql(&jobs::settle()))
        .and_then(|mut st| st.query_row(params![job, now.0], |r| r.get(0)).optional())
        .map_err(backend)?;
    if let Some(status) = settled {
        job_event(conn, job, now, &status)?;
        ready(callbacks::queue(&mut Lite(conn), job, jobs::JOB_FINISHED, None, now))?;
    }
    Ok(())
}

/// The jobs of the tasks `condition` picks, with how many each has there: read before those
/// tasks are deleted, in the same write, and handed to `jobs_removed` after.
fn jobs_of(conn: &Connection, condition: &str, args: &[&dyn rusqlite::ToSql]) -> StoreResult<Vec<(String, i64)>> {
    conn.prepare_cached(&sql(&jobs::removed_count(condition)))
        .and_then(|mut s| s.query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>())
        .map_err(backend)
}

/// Tasks of these jobs were removed by `how`: they count as cancelled, and each job settles.
/// Returns the jobs.
fn jobs_removed(conn: &Connection, removed: Vec<(String, i64)>, how: &str, now: Timestamp) -> StoreResult<Vec<String>> {
    for (job, n) in &removed {
        let reason = jobs::removed_reason(*n, how);
        job_change(conn, job, jobs::REMOVED, &[job, n, &reason], jobs::TASKS_REMOVED, now)?;
        job_settle(conn, job, now)?;
    }
    Ok(removed.into_iter().map(|(job, _)| job).collect())
}

fn job_read(conn: &Connection, id: &str, now: Timestamp) -> StoreResult<Option<Job>> {
    let statement =
        format!("SELECT {} FROM jobs WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)", jobs::columns("", ""));
    let job = conn
        .prepare_cached(&statement)
        .and_then(|mut s| s.query_row(params![id, now.0], |r| jobs::job_from(r, 0)).optional())
        .map_err(backend)?;
    let Some(mut job) = job else { return Ok(None) };
    job.running =
        conn.prepare_cached(&sql(jobs::RUNNING)).and_then(|mut s| s.query_row([id], |r| r.get(0))).map_err(backend)?;
    Ok(Some(job))
}

/// Why a job update did not apply.
fn job_refusal(conn: &Connection, id: &str, now: Timestamp) -> StoreError {
    match job_read(conn, id, now) {
        Ok(None) => StoreError::JobNotFound,
        Ok(Some(job)) if job.status.is_final() => StoreError::JobFinished(job.status),
        Ok(Some(job)) => StoreError::JobProgressBackwards(job.progress.percent.to_string()),
        Err(e) => e,
    }
}

/// Record an outcome under its lease: `None` when the lease was lost, else the task's job.
fn task_finish_in(conn: &Connection, p: &TaskFinish) -> StoreResult<Option<Option<String>>> {
    let queue = queue_name_of(&p.name);
    let task_id = &p.name.task;
    // A success deletes the task in the statement that checks the lease; other
    // outcomes read the job first and then change the row.
    let held_statement = match &p.outcome {
        TaskOutcome::Succeeded { .. } => {
            "DELETE FROM tasks WHERE queue = ?1 AND task_id = ?2 AND state = 'leased' AND lease_id = ?3 \
             RETURNING job_id"
        }
        _ => "SELECT job_id FROM tasks WHERE queue = ?1 AND task_id = ?2 AND state = 'leased' AND lease_id = ?3",
    };
    let held: Option<Option<String>> = conn
        .prepare_cached(held_statement)
        .and_then(|mut s| s.query_row(params![queue, task_id, p.lease_id], |r| r.get(0)).optional())
        .map_err(backend)?;
    let Some(job) = held else {
        return Ok(None);
    };
    match &p.outcome {
        TaskOutcome::Succeeded { tombstone_until } => {
            tombstone_put(conn, &queue, task_id, *tombstone_until)?;
            if let Some(job) = &job {
                job_task_done(conn, job, task_id, true, "", p.now)?;
            }
        }
        TaskOutcome::Retry { attempt, retry_at } => {
            record_attempt(conn, &queue, task_id, attempt)?;
            conn.prepare_cached(
                "UPDATE tasks SET state = 'queued', due_at = ?3, schedule_time = ?3 \
                 WHERE queue = ?1 AND task_id = ?2",
            )
            .and_then(|mut s| s.execute(params![queue, task_id, retry_at.0]))
            .map_err(backend)?;
        }
        TaskOutcome::GaveUp { attempt, tombstone_until } => {
            record_attempt(conn, &queue, task_id, attempt)?;
            let sql = format!(
                "INSERT INTO dead_letters (died_at, {TASK_COLUMNS}, attempts) \
                 SELECT ?3, {}, attempts FROM tasks WHERE queue = ?1 AND task_id = ?2",
                *TASK_SELECT
            );
            conn.prepare_cached(&sql).and_then(|mut s| s.execute(params![queue, task_id, p.now.0])).map_err(backend)?;
            conn.prepare_cached("DELETE FROM tasks WHERE queue = ?1 AND task_id = ?2")
                .and_then(|mut s| s.execute(params![queue, task_id]))
                .map_err(backend)?;
            tombstone_put(conn, &queue, task_id, *tombstone_until)?;
            if let Some(job) = &job {
                let error = format!("task {task_id} failed for good: {}", attempt.status.message);
                job_task_done(conn, job, &p.name.to_string(), false, &error, p.now)?;
            }
        }
    }
    Ok(Some(job))
}

/// Create one task: its queue must exist and its name be neither in use nor tombstoned.
fn task_create_one(conn: &Connection, p: TaskCreate) -> StoreResult<Task> {
    let t = &p.task;
    let queue = queue_name_of(&t.name);
    if !queue_exists(conn, &queue)? {
        return Err(StoreError::QueueNotFound);
    }
    if tombstoned(conn, &queue, &t.name.task, p.now)? {
        return Err(StoreError::TaskTombstoned);
    }
    if task_insert(conn, t)? == 0 {
        return Err(StoreError::TaskAlreadyExists);
    }
    Ok(p.task)
}

/// Bodies longer than this live in `task_bodies`, not in the task's row: a row is rewritten
/// whole by every claim and outcome, and a 48 KB body made each of those write 27 pages
/// to the WAL instead of 2.
const INLINE_BODY_MAX: usize = 512;

/// `TASK_COLUMNS` for reading a task row, its body fetched from `task_bodies` when kept apart.
static TASK_SELECT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    TASK_COLUMNS.replacen(
        " body,",
        " CASE WHEN body_apart = 1 THEN (SELECT b.body FROM task_bodies b WHERE b.id = tasks.id) ELSE body END,",
        1,
    )
});

/// The tasks a claim takes, in claim order: up to `?4` tasks of queue `?1` due at `?2`,
/// while the queue runs and, given an owner `?5`, while that node holds the queue.
static CLAIM_DUE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT id FROM tasks WHERE queue = ?1 AND due_at <= ?2 \
         AND EXISTS (SELECT 1 FROM queues WHERE name = ?1 AND state = 'running') AND {} {CLAIM_ORDER} LIMIT ?4",
        sql(&columns::claim_owned("?5")),
    )
});

/// Lease what `CLAIM_DUE` picks with grace `?3`; the lease id and the row id come last.
static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("UPDATE tasks SET {} WHERE id IN ({}) RETURNING {}, lease_id, id", *LEASE_SET, *CLAIM_DUE, *TASK_SELECT)
});

/// A pull lease's tasks, in claim order: up to `?4` tasks of queue `?1` due at `?2`, with tag
/// `?5` if given.
static LEASE_DUE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT id FROM tasks WHERE queue = ?1 AND due_at <= ?2 AND (?5 IS NULL OR tag = ?5) \
         AND EXISTS (SELECT 1 FROM queues WHERE name = ?1 AND state = 'running') {CLAIM_ORDER} LIMIT ?4"
    )
});

/// Lease what `LEASE_DUE` picks for `?3`; the lease id and the row id come last.
static LEASE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE tasks SET {} WHERE id IN ({}) RETURNING {}, lease_id, id",
        sql(&columns::lease_set("?2", "?3", "")),
        *LEASE_DUE,
        *TASK_SELECT
    )
});

/// Lease the tasks `due` picks and hand them out in its order (RETURNING has none). One
/// writer runs both statements, so the update takes exactly the rows the read listed.
fn lease_in_order(
    conn: &Connection,
    due: &str,
    lease: &str,
    args: &[&dyn rusqlite::ToSql],
    now: Timestamp,
) -> StoreResult<Vec<ClaimedTask>> {
    let order: std::collections::HashMap<i64, usize> = conn
        .prepare_cached(due)
        .and_then(|mut s| s.query_map(args, |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>())
        .map_err(backend)?
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    if order.is_empty() {
        return Ok(Vec::new());
    }
    let mut leased = conn
        .prepare_cached(lease)
        .and_then(|mut s| {
            s.query_map(args, |r| {
                let claimed =
                    ClaimedTask { task: conn::task_from_row(r)?, lease_id: r.get(columns::TASK_COLUMN_COUNT)? };
                Ok((r.get::<_, i64>(columns::TASK_COLUMN_COUNT + 1)?, claimed))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(backend)?;
    leased.sort_by_key(|(id, _)| order.get(id).copied().unwrap_or(usize::MAX));
    let leased: Vec<ClaimedTask> = leased.into_iter().map(|(_, c)| c).collect();
    jobs_started(conn, &leased, now)?;
    Ok(leased)
}

fn task_insert(conn: &Connection, t: &Task) -> StoreResult<usize> {
    let queue = queue_name_of(&t.name);
    let (auth_kind, auth_email, auth_param) = columns::auth_columns(&t.http_request.auth);
    let apart = t.http_request.body.len() > INLINE_BODY_MAX;
    let inline: &[u8] = if apart { &[] } else { &t.http_request.body };
    let inserted = conn
        .prepare_cached(
            "INSERT INTO tasks (queue, task_id, state, due_at, url, method, headers, body, auth_kind, \
         auth_email, auth_param, schedule_time, create_time, dispatch_deadline_us, retry_config, job_id, tag, env, \
         body_apart) \
         VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?3, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT (queue, task_id) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                queue,
                t.name.task,
                t.schedule_time.0,
                t.http_request.url,
                t.http_request.method.as_str(),
                columns::encode_headers(&t.http_request.headers),
                inline,
                auth_kind,
                auth_email,
                auth_param,
                t.create_time.0,
                tasklane_core::clock::duration_micros(t.dispatch_deadline),
                t.retry_config.as_ref().map(columns::encode_retry),
                t.job_id,
                t.tag,
                columns::encode_env(&t.env),
                apart,
            ])
        })
        .map_err(backend)?;
    if inserted == 1 && apart {
        conn.prepare_cached("INSERT INTO task_bodies (id, body) VALUES (last_insert_rowid(), ?1)")
            .and_then(|mut s| s.execute([&t.http_request.body]))
            .map_err(backend)?;
    }
    Ok(inserted)
}

fn dead_letter_read(conn: &Connection, queue: &str, id: i64) -> StoreResult<Option<DeadLetter>> {
    let statement = format!("SELECT {} FROM dead_letters WHERE queue = ?1 AND id = ?2", columns::dead_letter_columns());
    conn.prepare_cached(&statement)
        .and_then(|mut s| s.query_row(params![queue, id], |r| columns::dead_letter_from(r)).optional())
        .map_err(backend)
}

/// The ids a selection names that exist in `queue`.
fn dead_letter_ids(conn: &Connection, queue: &str, select: &DeadLetterSelect) -> StoreResult<Vec<i64>> {
    let all: Vec<i64> = conn
        .prepare_cached("SELECT id FROM dead_letters WHERE queue = ?1 ORDER BY id")
        .and_then(|mut s| s.query_map([queue], |r| r.get(0))?.collect())
        .map_err(backend)?;
    Ok(match select {
        DeadLetterSelect::All => all,
        DeadLetterSelect::Ids(ids) => all.into_iter().filter(|id| ids.contains(id)).collect(),
    })
}

/// Jobs whose first task was just leased start running.
fn jobs_started(conn: &Connection, leased: &[ClaimedTask], now: Timestamp) -> StoreResult<()> {
    let mut started: Vec<&str> = leased.iter().filter_map(|c| c.task.job_id.as_deref()).collect();
    started.sort_unstable();
    started.dedup();
    for job in started {
        job_change(conn, job, jobs::START, &[&job, &now.0], "running", now)?;
    }
    Ok(())
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<WriteJob>) {
    let mut synced = true; // the connection opens with synchronous = FULL
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Bookkeeping commits first and on its own: it runs without savepoints and may
        // have to run again, which the API's writes cannot.
        let (relaxed, api): (Vec<_>, Vec<_>) = batch.into_iter().partition(|j| j.durability() == Durability::Relaxed);
        if !relaxed.is_empty() && set_synchronous(&conn, &mut synced, false) {
            commit_batch(&conn, relaxed, false);
        }
        if !api.is_empty() && set_synchronous(&conn, &mut synced, true) {
            commit_batch(&conn, api, true);
        }
    }
}

/// Switch fsync on commit on or off; false if the writes that need it cannot have it.
fn set_synchronous(conn: &Connection, synced: &mut bool, sync: bool) -> bool {
    if *synced == sync {
        return true;
    }
    let pragma = if sync { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" };
    match conn.execute_batch(pragma) {
        Ok(()) => {
            *synced = sync;
            true
        }
        Err(e) if sync => {
            // These writes were promised an fsync: refuse them rather than commit without.
            tracing::error!(error = %e, "sqlite could not turn fsync back on");
            false
        }
        // Still FULL: slower, never less safe.
        Err(e) => {
            tracing::warn!(error = %e, "sqlite could not turn fsync off for bookkeeping");
            true
        }
    }
}

/// Run `batch` in one transaction and answer each write once it committed. `isolated`:
/// each write in its own savepoint from the start; otherwise they run bare and, if one
/// fails, the transaction is rolled back and they all run again, isolated.
/// Dropping a write unanswered tells its caller it did not run.
fn commit_batch(conn: &Connection, mut batch: Vec<WriteJob>, isolated: bool) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, writes = batch.len(), "sqlite begin failed");
        return;
    }
    let ran_bare = !isolated && batch.iter_mut().all(|j| j.run(conn, false));
    if !ran_bare {
        if !isolated {
            // Some error may have ended the transaction already; begin again either way.
            let _ = conn.execute_batch("ROLLBACK");
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                tracing::error!(error = %e, writes = batch.len(), "sqlite begin failed");
                return;
            }
        }
        for job in &mut batch {
            job.run(conn, true);
        }
    }
    let commit = conn.execute_batch("COMMIT").map_err(backend);
    if commit.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for job in batch {
        job.reply(commit.clone());
    }
}

/// Copy committed WAL frames into the database file every `CHECKPOINT_EVERY`, without
/// blocking the writer (PASSIVE), until the store closes.
fn checkpointer_loop(conn: Connection, stop: mpsc::Receiver<()>, out_of_space: Arc<Mutex<Option<String>>>) {
    // A full disk fails every checkpoint until there is room: say so once a minute, not ten
    // times a second, and say when it works again.
    let warned = tasklane_core::throttle::Throttle::new(std::time::Duration::from_secs(60));
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(backend);
        if let Ok(mut full) = out_of_space.lock() {
            match &result {
                Err(StoreError::Full(e)) => *full = Some(e.clone()),
                Ok(()) => *full = None,
                Err(_) => {}
            }
        }
        match result {
            Ok(()) if failing => {
                failing = false;
                warned.reset();
                tracing::info!("sqlite checkpoints work again");
            }
            Ok(()) => {}
            Err(e) => {
                failing = true;
                if let Some(held_back) = warned.allow(std::time::Instant::now()) {
                    tracing::warn!(error = %e, held_back, "sqlite checkpoint failed");
                }
            }
        }
    }
}

fn reader_loop(conn: Connection, rx: Arc<Mutex<mpsc::Receiver<ReadJob>>>) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        job(&conn);
    }
}

fn queue_exists(conn: &Connection, name: &str) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM queues WHERE name = ?1").and_then(|mut s| s.exists([name])).map_err(backend)
}

fn queue_read(conn: &Connection, name: &str) -> StoreResult<Option<Queue>> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = ?1");
    conn.prepare_cached(&sql).and_then(|mut s| s.query_row([name], conn::queue_from_row).optional()).map_err(backend)
}

/// Run a statement whose one parameter is `now`; returns how many rows it changed.
fn rows_changed(conn: &Connection, sql: &str, now: Timestamp) -> StoreResult<u64> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([now.0])).map(|n| n as u64).map_err(backend)
}

/// Whether a task name is reserved at `now` by a tombstone.
fn tombstoned(conn: &Connection, queue: &str, task_id: &str, now: Timestamp) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM tombstones WHERE queue = ?1 AND task_id = ?2 AND expires_at > ?3")
        .and_then(|mut s| s.exists(params![queue, task_id, now.0]))
        .map_err(backend)
}

fn tombstone_put(conn: &Connection, queue: &str, task_id: &str, until: Timestamp) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO tombstones (queue, task_id, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (queue, task_id) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
    )
    .and_then(|mut s| s.execute(params![queue, task_id, until.0]))
    .map_err(backend)?;
    Ok(())
}

fn task_read(conn: &Connection, queue: &str, task_id: &str) -> StoreResult<Option<Task>> {
    let sql = format!("SELECT {} FROM tasks WHERE queue = ?1 AND task_id = ?2", *TASK_SELECT);
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_row([queue, task_id], conn::task_from_row).optional())
        .map_err(backend)
}

/// What leasing a task at `?2` with grace `?3` sets: one more dispatch, a fresh lease id,
/// a new last attempt.
/// The dispatcher's lease: `?2` now, `?3` grace.
static LEASE_SET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql(&columns::lease_set("$2", &columns::push_lease_length("$3", ""), "")));

fn lease_row(conn: &Connection, id: i64, now: Timestamp, grace_us: i64) -> StoreResult<i64> {
    conn.prepare_cached(&format!("UPDATE tasks SET {} WHERE id = ?1 RETURNING lease_id", *LEASE_SET))
        .and_then(|mut s| s.query_row(params![id, now.0, grace_us], |r| r.get(0)))
        .map_err(backend)
}

fn queue_name_of(name: &TaskName) -> String {
    name.queue.to_string()
}

#[async_trait]
impl Store for SqliteStore {
    async fn queue_create(&self, p: QueueCreate) -> StoreResult<Queue> {
        self.write(move |conn| {
            let name = p.queue.name.to_string();
            if queue_exists(conn, &name)? {
                return Err(StoreError::QueueAlreadyExists);
            }
            let s = columns::queue_settings(&p.queue);
            conn.prepare_cached(
                "INSERT INTO queues (name, parent, state, max_dispatches_per_second, max_burst_size, \
                 max_concurrent_dispatches, max_attempts, max_retry_duration_us, min_backoff_us, max_backoff_us, \
                 max_doublings, logging_sampling_ratio, purge_time, created_at, updated_at, http_target, kind) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    name,
                    p.queue.name.parent.to_string(),
                    p.queue.state.as_str(),
                    s.0,
                    s.1,
                    s.2,
                    s.3,
                    s.4,
                    s.5,
                    s.6,
                    s.7,
                    s.8,
                    p.queue.purge_time.map(|t| t.0),
                    p.now.0,
                    s.9,
                    p.queue.kind.as_str()
                ])
            })
            .map_err(backend)?;
            queue_read(conn, &name)?.ok_or(StoreError::QueueNotFound)
        })
        .await
    }

    async fn queue_settings_put(&self, p: QueueSettingsPut) -> StoreResult<Queue> {
        self.write(move |conn| {
            let name = p.queue.name.to_string();
            let s = columns::queue_settings(&p.queue);
            let updated = conn
                .prepare_cached(
                    "UPDATE queues SET max_dispatches_per_second = ?2, max_burst_size = ?3, \
                     max_concurrent_dispatches = ?4, max_attempts = ?5, max_retry_duration_us = ?6, \
                     min_backoff_us = ?7, max_backoff_us = ?8, max_doublings = ?9, logging_sampling_ratio = ?10, \
                     updated_at = ?11, http_target = ?12 WHERE name = ?1",
                )
                .and_then(|mut st| st.execute(params![name, s.0, s.1, s.2, s.3, s.4, s.5, s.6, s.7, s.8, p.now.0, s.9]))
                .map_err(backend)?;
            if updated == 0 {
                if !p.create_if_missing {
                    return Err(StoreError::QueueNotFound);
                }
                conn.prepare_cached(
                    "INSERT INTO queues (name, parent, state, max_dispatches_per_second, max_burst_size, \
                     max_concurrent_dispatches, max_attempts, max_retry_duration_us, min_backoff_us, max_backoff_us, \
                     max_doublings, logging_sampling_ratio, purge_time, created_at, updated_at, http_target) \
                     VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?12, ?12, ?13)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        name,
                        p.queue.name.parent.to_string(),
                        s.0,
                        s.1,
                        s.2,
                        s.3,
                        s.4,
                        s.5,
                        s.6,
                        s.7,
                        s.8,
                        p.now.0,
                        s.9
                    ])
                })
                .map_err(backend)?;
            }
            queue_read(conn, &name)?.ok_or(StoreError::QueueNotFound)
        })
        .await
    }

    async fn queue_get(&self, name: &QueueName) -> StoreResult<Option<Queue>> {
        let name = name.to_string();
        self.read(move |conn| queue_read(conn, &name)).await
    }

    async fn queue_list(&self, p: QueueList) -> StoreResult<Vec<Queue>> {
        self.read(move |conn| {
            let parent = p.parent.map(|l| l.to_string());
            let after = p.after.map(|n| n.to_string()).unwrap_or_default();
            let sql = format!(
                "SELECT {QUEUE_COLUMNS} FROM queues WHERE (?1 IS NULL OR parent = ?1) AND name > ?2 \
                 ORDER BY name LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            let rows = stmt
                .query_map(params![parent, after, p.limit as i64], conn::queue_from_row)
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    async fn queue_state_set(&self, p: QueueStateSet) -> StoreResult<Queue> {
        self.write(move |conn| {
            let name = p.name.to_string();
            let n = conn
                .prepare_cached("UPDATE queues SET state = ?2, updated_at = ?3 WHERE name = ?1")
                .and_then(|mut s| s.execute(params![name, p.state.as_str(), p.now.0]))
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::QueueNotFound);
            }
            queue_read(conn, &name)?.ok_or(StoreError::QueueNotFound)
        })
        .await
    }

    async fn queue_purge(&self, p: QueuePurge) -> StoreResult<Purged> {
        self.write(move |conn| {
            let name = p.name.to_string();
            let n = conn
                .prepare_cached("UPDATE queues SET purge_time = ?2, updated_at = ?2 WHERE name = ?1")
                .and_then(|mut s| s.execute(params![name, p.now.0]))
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::QueueNotFound);
            }
            conn.prepare_cached(
                "INSERT INTO tombstones (queue, task_id, expires_at) \
                 SELECT queue, task_id, ?3 FROM tasks WHERE queue = ?1 AND create_time <= ?2 \
                 ON CONFLICT (queue, task_id) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
            )
            .and_then(|mut s| s.execute(params![name, p.now.0, p.tombstone_until.0]))
            .map_err(backend)?;
            let removed = jobs_of(conn, "queue = ?1 AND create_time <= ?2", &[&name, &p.now.0])?;
            conn.prepare_cached("DELETE FROM tasks WHERE queue = ?1 AND create_time <= ?2")
                .and_then(|mut s| s.execute(params![name, p.now.0]))
                .map_err(backend)?;
            let jobs = jobs_removed(conn, removed, "PurgeQueue", p.now)?;
            Ok(Purged { queue: queue_read(conn, &name)?.ok_or(StoreError::QueueNotFound)?, jobs })
        })
        .await
    }

    async fn queue_delete(&self, p: QueueDelete) -> StoreResult<Vec<String>> {
        self.write(move |conn| {
            let name = p.name.to_string();
            let n = conn.execute("DELETE FROM queues WHERE name = ?1", [&name]).map_err(backend)?;
            if n == 0 {
                return Err(StoreError::QueueNotFound);
            }
            let removed = jobs_of(conn, "queue = ?1", &[&name])?;
            conn.execute("DELETE FROM tasks WHERE queue = ?1", [&name]).map_err(backend)?;
            let jobs = jobs_removed(conn, removed, "DeleteQueue", p.now)?;
            conn.execute("DELETE FROM tombstones WHERE queue = ?1", [&name]).map_err(backend)?;
            conn.execute("DELETE FROM queue_owners WHERE queue = ?1", [&name]).map_err(backend)?;
            Ok(jobs)
        })
        .await
    }

    async fn task_create(&self, p: TaskCreate) -> StoreResult<Task> {
        self.write(move |conn| task_create_one(conn, p)).await
    }

    async fn task_create_many(&self, creates: Vec<TaskCreate>) -> Vec<StoreResult<Task>> {
        let n = creates.len();
        // One write for all: each create's checks make its own outcome, so one that fails
        // leaves the others in place; only a backend error fails them all.
        let results = self
            .write(move |conn| {
                let mut results = Vec::with_capacity(creates.len());
                for p in creates {
                    match task_create_one(conn, p) {
                        Err(StoreError::Backend(e)) => return Err(StoreError::Backend(e)),
                        other => results.push(other),
                    }
                }
                Ok(results)
            })
            .await;
        match results {
            Ok(results) => results,
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn task_get(&self, name: &TaskName, now: Timestamp) -> StoreResult<TaskLookup> {
        let queue = queue_name_of(name);
        let task_id = name.task.clone();
        self.read(move |conn| {
            if let Some(task) = task_read(conn, &queue, &task_id)? {
                return Ok(TaskLookup::Found(Box::new(task)));
            }
            let tombstoned = tombstoned(conn, &queue, &task_id, now)?;
            Ok(if tombstoned { TaskLookup::Tombstoned } else { TaskLookup::Missing })
        })
        .await
    }

    async fn task_list(&self, p: TaskList) -> StoreResult<Vec<Task>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM tasks WHERE queue = ?1 AND task_id > ?2 ORDER BY task_id LIMIT ?3",
                *TASK_SELECT
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            let rows = stmt
                .query_map(
                    params![p.queue.to_string(), p.after.unwrap_or_default(), p.limit as i64],
                    conn::task_from_row,
                )
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    async fn task_delete(&self, p: TaskDelete) -> StoreResult<Option<String>> {
        self.write(move |conn| {
            let queue = queue_name_of(&p.name);
            let job: Option<Option<String>> = conn
                .prepare_cached("DELETE FROM tasks WHERE queue = ?1 AND task_id = ?2 RETURNING job_id")
                .and_then(|mut s| s.query_row(params![queue, p.name.task], |r| r.get(0)).optional())
                .map_err(backend)?;
            let Some(job) = job else {
                let tombstoned = tombstoned(conn, &queue, &p.name.task, p.now)?;
                return Err(if tombstoned { StoreError::TaskTombstoned } else { StoreError::TaskNotFound });
            };
            tombstone_put(conn, &queue, &p.name.task, p.tombstone_until)?;
            let jobs = jobs_removed(conn, job.map(|j| (j, 1)).into_iter().collect(), "DeleteTask", p.now)?;
            Ok(jobs.into_iter().next())
        })
        .await
    }

    async fn task_claim(&self, p: TaskClaim) -> StoreResult<Vec<ClaimedTask>> {
        self.write_relaxed(move |conn| {
            let queue = p.queue.to_string();
            let grace = tasklane_core::clock::duration_micros(p.grace);
            lease_in_order(conn, &CLAIM_DUE, &CLAIM, params![queue, p.now.0, grace, p.limit as i64, p.owner], p.now)
        })
        .await
    }

    async fn task_lease(&self, p: TaskLease) -> StoreResult<Vec<ClaimedTask>> {
        self.write_relaxed(move |conn| {
            let queue = p.queue.to_string();
            let lease = tasklane_core::clock::duration_micros(p.lease);
            lease_in_order(conn, &LEASE_DUE, &LEASE, params![queue, p.now.0, lease, p.limit as i64, p.tag], p.now)
        })
        .await
    }

    async fn task_renew(&self, p: TaskRenew) -> StoreResult<bool> {
        self.lease_write(columns::TASK_RENEW, p.name, p.until, p.lease_id).await
    }

    async fn task_release(&self, p: TaskRelease) -> StoreResult<bool> {
        self.lease_write(columns::TASK_RELEASE, p.name, p.now, p.lease_id).await
    }

    async fn task_claim_by_name(&self, p: TaskClaimByName) -> StoreResult<ClaimedTask> {
        self.write(move |conn| {
            let queue = queue_name_of(&p.name);
            let id: Option<i64> = conn
                .prepare_cached("SELECT id FROM tasks WHERE queue = ?1 AND task_id = ?2")
                .and_then(|mut s| s.query_row(params![queue, p.name.task], |r| r.get(0)).optional())
                .map_err(backend)?;
            let Some(id) = id else {
                let tombstoned = tombstoned(conn, &queue, &p.name.task, p.now)?;
                return Err(if tombstoned { StoreError::TaskTombstoned } else { StoreError::TaskNotFound });
            };
            let lease_id = lease_row(conn, id, p.now, tasklane_core::clock::duration_micros(p.grace))?;
            let task = task_read(conn, &queue, &p.name.task)?.ok_or(StoreError::TaskNotFound)?;
            Ok(ClaimedTask { task, lease_id })
        })
        .await
    }

    async fn task_finish(&self, p: TaskFinish) -> StoreResult<bool> {
        self.write_relaxed(move |conn| task_finish_in(conn, &p)).await.map(|held| held.is_some())
    }

    async fn task_finish_job(&self, p: TaskFinish) -> StoreResult<Option<Option<String>>> {
        self.write_relaxed(move |conn| task_finish_in(conn, &p)).await
    }

    async fn task_next_due(&self, queue: &QueueName) -> StoreResult<Option<Timestamp>> {
        let queue = queue.to_string();
        self.read(move |conn| {
            conn.prepare_cached("SELECT min(due_at) FROM tasks WHERE queue = ?1")
                .and_then(|mut s| s.query_row([queue], |r| r.get::<_, Option<i64>>(0)))
                .map(|t| t.map(Timestamp))
                .map_err(backend)
        })
        .await
    }

    async fn task_count(&self, queue: &QueueName) -> StoreResult<u64> {
        let queue = queue.to_string();
        self.read(move |conn| {
            conn.prepare_cached("SELECT count(*) FROM tasks WHERE queue = ?1")
                .and_then(|mut s| s.query_row([queue], |r| r.get::<_, i64>(0)))
                .map(|n| n.max(0) as u64)
                .map_err(backend)
        })
        .await
    }

    async fn task_lease_release(&self, queue: Option<QueueName>, now: Timestamp) -> StoreResult<u64> {
        self.write(move |conn| {
            conn.prepare_cached(&sql(columns::LEASE_RELEASE))
                .and_then(|mut s| s.execute(params![now.0, queue.map(|q| q.to_string())]))
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }

    async fn dead_letter_list(&self, p: DeadLetterList) -> StoreResult<Vec<DeadLetter>> {
        self.read(move |conn| {
            let statement = format!(
                "SELECT {} FROM dead_letters WHERE queue = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                columns::dead_letter_columns()
            );
            let mut stmt = conn.prepare_cached(&statement).map_err(backend)?;
            stmt.query_map(params![p.queue.to_string(), p.after.unwrap_or(0), p.limit as i64], |r| {
                columns::dead_letter_from(r)
            })
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(backend)
        })
        .await
    }

    async fn dead_letter_get(&self, queue: &QueueName, id: i64) -> StoreResult<Option<DeadLetter>> {
        let queue = queue.to_string();
        self.read(move |conn| dead_letter_read(conn, &queue, id)).await
    }

    async fn dead_letter_redrive(&self, p: DeadLetterRedrive) -> StoreResult<Redriven> {
        self.write(move |conn| {
            let queue = p.queue.to_string();
            let ids = dead_letter_ids(conn, &queue, &p.select)?;
            let mut out = Redriven::default();
            for id in ids {
                let Some(dead) = dead_letter_read(conn, &queue, id)? else { continue };
                let task = columns::redriven_task(dead.task, p.now);
                conn.prepare_cached("DELETE FROM tombstones WHERE queue = ?1 AND task_id = ?2")
                    .and_then(|mut s| s.execute(params![queue, task.name.task]))
                    .map_err(backend)?;
                if task_insert(conn, &task)? == 0 {
                    out.conflicts.push(id);
                    continue;
                }
                conn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")
                    .and_then(|mut s| s.execute([id]))
                    .map_err(backend)?;
                out.tasks.push(task.name);
            }
            Ok(out)
        })
        .await
    }

    async fn dead_letter_purge(&self, queue: &QueueName, select: DeadLetterSelect) -> StoreResult<u64> {
        let queue = queue.to_string();
        self.write(move |conn| {
            let ids = dead_letter_ids(conn, &queue, &select)?;
            for id in &ids {
                conn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")
                    .and_then(|mut s| s.execute([id]))
                    .map_err(backend)?;
            }
            Ok(ids.len() as u64)
        })
        .await
    }

    async fn dead_letter_expire(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |conn| rows_changed(conn, "DELETE FROM dead_letters WHERE died_at < ?1", before)).await
    }

    async fn tombstone_expire(&self, now: Timestamp) -> StoreResult<u64> {
        self.write(move |conn| {
            let expired: Vec<String> = conn
                .prepare_cached(&sql(jobs::EXPIRED))
                .and_then(|mut s| s.query_map([now.0], |r| r.get(0))?.collect())
                .map_err(backend)?;
            for id in &expired {
                for statement in jobs::DELETE_JOB {
                    conn.prepare_cached(&sql(statement)).and_then(|mut s| s.execute([id])).map_err(backend)?;
                }
            }
            Ok(rows_changed(conn, "DELETE FROM tombstones WHERE expires_at <= ?1", now)?
                + rows_changed(conn, "DELETE FROM records WHERE expires_at <= ?1", now)?
                + expired.len() as u64)
        })
        .await
    }

    async fn job_create(&self, p: JobCreate) -> StoreResult<JobCreated> {
        self.write(move |conn| {
            let job = &p.job;
            if let Some(key) = &job.idempotency_key {
                let existing: Option<String> = conn
                    .prepare_cached("SELECT id FROM jobs WHERE idempotency_key = ?1")
                    .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
                    .map_err(backend)?;
                if let Some(id) = existing {
                    let job = job_read(conn, &id, p.now)?.ok_or(StoreError::JobNotFound)?;
                    return Ok(JobCreated { job, existed: true });
                }
            }
            if !queue_exists(conn, &job.queue.to_string())? {
                return Err(StoreError::QueueNotFound);
            }
            conn.prepare_cached(&sql(jobs::JOB_INSERT))
                .and_then(|mut s| {
                    s.execute(params![
                        job.id,
                        job.queue.to_string(),
                        jobs::labels_text(&job.labels),
                        job.idempotency_key,
                        job.policy.as_str(),
                        job.callback_url,
                        job.created_at.0,
                        jobs::ttl_micros(job.result_ttl),
                        job.total,
                    ])
                })
                .map_err(backend)?;
            for (k, v) in &job.labels {
                conn.prepare_cached(&sql(jobs::LABEL_INSERT))
                    .and_then(|mut s| s.execute(params![job.id, k, v]))
                    .map_err(backend)?;
            }
            conn.prepare_cached("UPDATE jobs SET seq = 1 WHERE id = ?1")
                .and_then(|mut s| s.execute([&job.id]))
                .map_err(backend)?;
            job_event(conn, &job.id, p.now, "created")?;
            for t in &p.tasks {
                if tombstoned(conn, &queue_name_of(&t.name), &t.name.task, p.now)? {
                    return Err(StoreError::TaskTombstoned);
                }
                if task_insert(conn, t)? == 0 {
                    return Err(StoreError::TaskAlreadyExists);
                }
            }
            let job = job_read(conn, &job.id, p.now)?.ok_or(StoreError::JobNotFound)?;
            Ok(JobCreated { job, existed: false })
        })
        .await
    }

    async fn job_get(&self, id: &str, now: Timestamp) -> StoreResult<Option<Job>> {
        let id = id.to_string();
        self.read(move |conn| job_read(conn, &id, now)).await
    }

    async fn job_list(&self, p: JobList) -> StoreResult<Vec<Job>> {
        self.read(move |conn| {
            let (label_key, label_value) = p.label.clone().unzip();
            let (cursor_at, cursor_id) = p.after.clone().map_or((i64::MIN, String::new()), |(t, id)| (t.0, id));
            let mut stmt = conn.prepare_cached(&sql(&jobs::list(""))).map_err(backend)?;
            let mut jobs = stmt
                .query_map(
                    params![
                        p.status.map(|s| s.as_str()),
                        p.queue.as_ref().map(|q| q.to_string()),
                        label_key,
                        label_value,
                        p.created_after.map_or(i64::MIN, |t| t.0),
                        p.created_before.map_or(i64::MAX, |t| t.0),
                        cursor_at,
                        cursor_id,
                        p.limit as i64,
                        p.now.0,
                    ],
                    |r| jobs::job_from(r, 0),
                )
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(backend)?;
            for job in &mut jobs {
                job.running = conn
                    .prepare_cached(&sql(jobs::RUNNING))
                    .and_then(|mut s| s.query_row([&job.id], |r| r.get(0)))
                    .map_err(backend)?;
            }
            Ok(jobs)
        })
        .await
    }

    async fn job_cancel(&self, id: &str, now: Timestamp) -> StoreResult<Job> {
        let id = id.to_string();
        self.write(move |conn| {
            if !job_end(conn, &id, &jobs::cancel(), &[&id, &now.0], "cancelled", now)? {
                return Err(job_refusal(conn, &id, now));
            }
            job_read(conn, &id, now)?.ok_or(StoreError::JobNotFound)
        })
        .await
    }

    async fn job_report(&self, p: JobReport) -> StoreResult<Job> {
        self.write(move |conn| {
            let (id, now) = (&p.id, p.now);
            let applied = match &p.kind {
                JobReportKind::Progress { progress: g, allow_decrease } => job_change(
                    conn,
                    id,
                    jobs::PROGRESS,
                    &[id, &g.percent, &g.step, &g.step_number, &g.message, allow_decrease, &now.0],
                    "progress",
                    now,
                )?,
                JobReportKind::Result(result) => job_change(conn, id, jobs::RESULT, &[id, result], "result", now)?,
                JobReportKind::Fail(error) => job_end(conn, id, &jobs::fail(), &[id, &now.0, error], "failed", now)?,
            };
            if !applied {
                return Err(job_refusal(conn, id, now));
            }
            job_read(conn, id, now)?.ok_or(StoreError::JobNotFound)
        })
        .await
    }

    async fn job_events(&self, id: &str, after_seq: i64, limit: usize) -> StoreResult<Vec<JobEvent>> {
        let id = id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql(&jobs::events())).map_err(backend)?;
            stmt.query_map(params![id, after_seq, limit as i64], |r| {
                Ok(JobEvent { seq: r.get(0)?, at: Timestamp(r.get(1)?), kind: r.get(2)?, job: jobs::job_from(r, 3)? })
            })
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(backend)
        })
        .await
    }

    async fn callback_claim(&self, now: Timestamp, until: Timestamp, limit: usize) -> StoreResult<Vec<Callback>> {
        self.write(move |conn| ready(callbacks::claim_due(&mut Lite(conn), now, until, limit))).await
    }

    async fn callback_record(&self, p: CallbackAttempt) -> StoreResult<()> {
        self.write(move |conn| ready(callbacks::record(&mut Lite(conn), p))).await
    }

    async fn callback_list(&self, job: &str) -> StoreResult<Vec<Callback>> {
        let job = job.to_string();
        self.read(move |conn| ready(callbacks::list(&mut Lite(conn), &job))).await
    }

    async fn record_get(&self, key: &str, now: Timestamp) -> StoreResult<Option<Record>> {
        let key = key.to_string();
        self.read(move |conn| ready(records::get(&mut Lite(conn), &key, now))).await
    }

    async fn record_list(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<Record>> {
        let prefix = prefix.to_string();
        self.read(move |conn| ready(records::list(&mut Lite(conn), &prefix, now))).await
    }

    async fn record_put(&self, p: RecordPut) -> StoreResult<Record> {
        self.write(move |conn| ready(records::put(&mut Lite(conn), p))).await
    }

    async fn record_delete(&self, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.write(move |conn| ready(records::delete(&mut Lite(conn), &key))).await
    }

    async fn store_maintain(&self, _now: Timestamp) -> StoreResult<Vec<String>> {
        // Deleted rows' pages go to SQLite's freelist and are reused by later inserts, and
        // the WAL is checkpointed automatically, so there is nothing to do on a timer.
        Ok(Vec::new())
    }

    async fn write_check(&self, now: Timestamp) -> StoreResult<()> {
        if let Some(e) = self.inner.out_of_space.lock().ok().and_then(|full| full.clone()) {
            return Err(StoreError::Full(e));
        }
        self.write(move |conn| {
            conn.prepare_cached(&sql(columns::WRITE_CHECK))
                .and_then(|mut s| s.execute([now.0.to_string()]))
                .map(|_| ())
                .map_err(backend)
        })
        .await
    }

    async fn node_heartbeat(&self, p: NodeHeartbeat) -> StoreResult<()> {
        self.write(move |conn| ready(cluster::node_heartbeat(&mut Lite(conn), p))).await
    }

    async fn node_list(&self, alive_since: Timestamp) -> StoreResult<Vec<Node>> {
        self.read(move |conn| ready(cluster::node_list(&mut Lite(conn), alive_since))).await
    }

    async fn node_remove(&self, node_id: &str) -> StoreResult<()> {
        let node_id = node_id.to_string();
        self.write(move |conn| ready(cluster::node_remove(&mut Lite(conn), &node_id))).await
    }

    async fn queue_owner_renew(&self, p: QueueOwnerRenew) -> StoreResult<Vec<QueueName>> {
        self.write(move |conn| ready(cluster::owner_renew(&mut Lite(conn), p))).await
    }

    async fn queue_owner_acquire(&self, p: QueueOwnerAcquire) -> StoreResult<bool> {
        self.write(move |conn| ready(cluster::owner_acquire(&mut Lite(conn), p))).await
    }

    async fn queue_owner_release(&self, p: QueueOwnerRelease) -> StoreResult<()> {
        self.write(move |conn| ready(cluster::owner_release(&mut Lite(conn), p))).await
    }

    async fn queue_owner_list(&self) -> StoreResult<Vec<QueueOwner>> {
        self.read(move |conn| ready(cluster::owner_list(&mut Lite(conn)))).await
    }
}

fn record_attempt(conn: &Connection, queue: &str, task_id: &str, a: &crate::AttemptResult) -> StoreResult<()> {
    let responded = i64::from(a.responded);
    let executed = i64::from(a.responded && a.http_status < 500);
    let statement = format!(
        "UPDATE tasks SET response_count = response_count + ?3, execution_count = execution_count + ?4, \
         last_http_status = ?5, last_response_time = ?6, last_code = ?7, last_message = ?8, {} \
         WHERE queue = ?1 AND task_id = ?2",
        columns::ATTEMPT_LOG_APPEND.replace("$LINE", "?9")
    );
    conn.prepare_cached(&statement)
        .and_then(|mut s| {
            s.execute(params![
                queue,
                task_id,
                responded,
                executed,
                i64::from(a.http_status),
                a.response_time.0,
                a.status.code as i32,
                a.status.message,
                columns::attempt_line(a),
            ])
        })
        .map_err(backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that inserts `n` into `t` and then fails if `fail`; counts its runs.
    fn insert(
        durability: Durability,
        n: i64,
        fail: bool,
        runs: Arc<Mutex<u32>>,
    ) -> (WriteJob, oneshot::Receiver<StoreResult<()>>) {
        let (tx, rx) = oneshot::channel();
        let f = move |conn: &Connection| {
            *runs.lock().unwrap() += 1;
            conn.execute("INSERT INTO t (n) VALUES (?1)", [n]).map_err(backend)?;
            if fail { Err(StoreError::Backend("refused".into())) } else { Ok(()) }
        };
        (Box::new(PendingWrite { durability, f, result: None, tx }), rx)
    }

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)").unwrap();
        conn
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut s = conn.prepare("SELECT n FROM t ORDER BY n").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_dead_letters_table_made_before_autoincrement_is_rebuilt_with_its_rows_and_ids() {
        let dir = std::env::temp_dir().join(format!("tasklane-dl-upgrade-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tasklane.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&SCHEMA.replace("PRIMARY KEY AUTOINCREMENT", "PRIMARY KEY")).unwrap();
            add_missing_columns(&conn).unwrap();
            let insert = "INSERT INTO dead_letters (id, died_at, queue, task_id, url, method, headers, body, \
                 schedule_time, create_time, dispatch_deadline_us, dispatch_count, response_count, execution_count, \
                 last_http_status) VALUES (?1, 1, 'q', ?2, 'http://x/', 'POST', '', x'', 0, 0, 0, 1, 1, 1, 500)";
            conn.execute(insert, params![1, "a"]).unwrap();
            conn.execute(insert, params![7, "b"]).unwrap();
            // The newest letter goes: without AUTOINCREMENT its id would be given again.
            conn.execute("DELETE FROM dead_letters WHERE id = 7", []).unwrap();
            conn.execute(insert, params![7, "c"]).unwrap();
            conn.execute("DELETE FROM dead_letters WHERE id = 7", []).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        store.close();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let table: String =
            conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'dead_letters'", [], |r| r.get(0)).unwrap();
        assert!(table.contains("AUTOINCREMENT"), "{table}");
        let kept: Vec<(i64, String)> = conn
            .prepare("SELECT id, task_id FROM dead_letters")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kept, [(1, "a".to_string())]);
        let index: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'dead_letters_queue'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(index, 1, "the index is made again");
        // The ids given before the upgrade are not all known; those after it start past the kept ones.
        conn.execute(
            "INSERT INTO dead_letters (died_at, queue, task_id, url, method, headers, body, schedule_time, \
             create_time, dispatch_deadline_us, dispatch_count, response_count, execution_count, last_http_status) \
             VALUES (1, 'q', 'd', 'http://x/', 'POST', '', x'', 0, 0, 0, 1, 1, 1, 500)",
            [],
        )
        .unwrap();
        conn.execute("DELETE FROM dead_letters WHERE task_id = 'd'", []).unwrap();
        conn.execute(
            "INSERT INTO dead_letters (died_at, queue, task_id, url, method, headers, body, schedule_time, \
             create_time, dispatch_deadline_us, dispatch_count, response_count, execution_count, last_http_status) \
             VALUES (1, 'q', 'e', 'http://x/', 'POST', '', x'', 0, 0, 0, 1, 1, 1, 500)",
            [],
        )
        .unwrap();
        let e: i64 = conn.query_row("SELECT id FROM dead_letters WHERE task_id = 'e'", [], |r| r.get(0)).unwrap();
        assert_eq!(e, 3, "after the upgrade an id is never given twice");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 14.5: a claim must not rewrite a large body (it filled the WAL on a nearly full
    /// disk and stalled dispatch): the body lives apart from the row a claim updates.
    #[test]
    fn a_claim_does_not_rewrite_a_large_body() {
        let dir = std::env::temp_dir().join(format!("tasklane-claim-pages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conn =
            open(&dir.join("tasklane.db"), OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        add_missing_columns(&conn).unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute(
            "INSERT INTO queues (name, parent, state, max_dispatches_per_second, max_burst_size, \
             max_concurrent_dispatches, max_attempts, min_backoff_us, max_backoff_us, max_doublings, \
             logging_sampling_ratio, created_at, updated_at) VALUES ('projects/p/locations/l/queues/q', \
             'projects/p/locations/l', 'running', 1, 1, 1, 1, 1, 1, 1, 1, 0, 0)",
            [],
        )
        .unwrap();
        let name = QueueName::parse("projects/p/locations/l/queues/q").unwrap();
        let body = vec![7u8; 48 * 1024];
        let mut task = tasklane_core::TaskSpec { url: "http://h/".into(), body: body.clone(), ..Default::default() }
            .validate(&name, Timestamp(0), || "big".into())
            .unwrap();
        task.schedule_time = Timestamp(0);
        assert_eq!(task_insert(&conn, &task).unwrap(), 1);
        let _: (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        let claimed: Vec<Vec<u8>> = conn
            .prepare(&CLAIM)
            .unwrap()
            .query_map(params![name.to_string(), 1i64, 0i64, 10i64, None::<String>], |r| r.get(5))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(claimed, [body], "the claim returns the whole body");
        let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap();
        assert!(frames <= 4, "the claim wrote {frames} pages; a 48 KB body rewritten is 12 or more");
        conn.execute("DELETE FROM tasks", []).unwrap();
        let left: i64 = conn.query_row("SELECT count(*) FROM task_bodies", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "a body goes with its task");
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bookkeeping_runs_bare_and_commits_once() {
        let conn = table();
        let runs = Arc::new(Mutex::new(0));
        let (jobs, mut replies): (Vec<_>, Vec<_>) =
            (1..=3).map(|n| insert(Durability::Relaxed, n, false, runs.clone())).unzip();
        commit_batch(&conn, jobs, false);
        assert_eq!(rows(&conn), [1, 2, 3]);
        assert_eq!(*runs.lock().unwrap(), 3, "each write ran once");
        for r in &mut replies {
            assert!(matches!(r.try_recv(), Ok(Ok(()))));
        }
    }

    #[test]
    fn a_failed_bookkeeping_write_reruns_the_batch_isolated_and_undoes_only_itself() {
        let conn = table();
        let runs = Arc::new(Mutex::new(0));
        let (a, mut ra) = insert(Durability::Relaxed, 1, false, runs.clone());
        let (b, mut rb) = insert(Durability::Relaxed, 2, true, runs.clone());
        let (c, mut rc) = insert(Durability::Relaxed, 3, false, runs.clone());
        commit_batch(&conn, vec![a, b, c], false);
        // The bare pass stopped at the failure (a, b); the isolated pass ran all three.
        assert_eq!(*runs.lock().unwrap(), 5);
        assert_eq!(rows(&conn), [1, 3], "the failed write's insert was undone, the others kept once");
        assert!(matches!(ra.try_recv(), Ok(Ok(()))));
        assert!(matches!(rb.try_recv(), Ok(Err(StoreError::Backend(m))) if m == "refused"));
        assert!(matches!(rc.try_recv(), Ok(Ok(()))));
    }

    #[test]
    fn a_failed_synced_write_undoes_only_itself_without_a_rerun() {
        let conn = table();
        let runs = Arc::new(Mutex::new(0));
        let (a, mut ra) = insert(Durability::Synced, 1, true, runs.clone());
        let (b, mut rb) = insert(Durability::Synced, 2, false, runs.clone());
        commit_batch(&conn, vec![a, b], true);
        assert_eq!(*runs.lock().unwrap(), 2);
        assert_eq!(rows(&conn), [2]);
        assert!(matches!(ra.try_recv(), Ok(Err(_))));
        assert!(matches!(rb.try_recv(), Ok(Ok(()))));
    }
}

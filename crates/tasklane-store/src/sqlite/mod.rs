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
mod migrations;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tasklane_core::{Queue, QueueName, Task, TaskName, Timestamp};
use tokio::sync::oneshot;

use crate::callbacks;
use crate::cluster;
use crate::records;
use crate::sql::ready;
use crate::{
    Callback, CallbackAttempt, ClaimedTask, DeadLetter, DeadLetterList, DeadLetterRedrive, DeadLetterSelect, JobCreate,
    JobCreated, JobEvent, JobList, JobReport, Node, NodeHeartbeat, Purged, QueueCreate, QueueDelete, QueueList,
    QueueOwner, QueueOwnerAcquire, QueueOwnerRelease, QueueOwnerRenew, QueuePurge, QueueSettingsPut, QueueStateSet,
    Record, RecordPut, Redriven, Store, StoreError, StoreResult, TaskClaim, TaskClaimByName, TaskCreate, TaskDelete,
    TaskFinish, TaskLease, TaskList, TaskLookup, TaskRelease, TaskRenew,
};
use crate::{dead_letters, jobs, queues, tasks, upkeep};
use conn::Lite;
use tasklane_core::job::Job;

const MAX_BATCH: usize = 1024;
/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// WAL pages after which the writer checkpoints by itself: a safety net for when the
/// checkpointer falls behind (about 40 MB).
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;
const READERS: usize = 2;

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
    // Room for every statement the store has, so none is compiled twice (the default is 16).
    conn.set_prepared_statement_cache_capacity(256);
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
        migrations::migrate(&write_conn)?;
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

#[async_trait]
impl Store for SqliteStore {
    async fn queue_create(&self, p: QueueCreate) -> StoreResult<Queue> {
        self.write(move |c| ready(queues::create(&mut Lite(c), p))).await
    }

    async fn queue_settings_put(&self, p: QueueSettingsPut) -> StoreResult<Queue> {
        self.write(move |c| ready(queues::settings_put(&mut Lite(c), p))).await
    }

    async fn queue_get(&self, name: &QueueName) -> StoreResult<Option<Queue>> {
        let name = name.clone();
        self.read(move |c| ready(queues::get(&mut Lite(c), &name))).await
    }

    async fn queue_list(&self, p: QueueList) -> StoreResult<Vec<Queue>> {
        self.read(move |c| ready(queues::list(&mut Lite(c), p))).await
    }

    async fn queue_state_set(&self, p: QueueStateSet) -> StoreResult<Queue> {
        self.write(move |c| ready(queues::state_set(&mut Lite(c), p))).await
    }

    async fn queue_purge(&self, p: QueuePurge) -> StoreResult<Purged> {
        self.write(move |c| ready(queues::purge(&mut Lite(c), p))).await
    }

    async fn queue_delete(&self, p: QueueDelete) -> StoreResult<Vec<String>> {
        self.write(move |c| ready(queues::delete(&mut Lite(c), p))).await
    }

    async fn task_create(&self, p: TaskCreate) -> StoreResult<Task> {
        self.write(move |c| ready(tasks::create(&mut Lite(c), p))).await
    }

    async fn task_create_many(&self, creates: Vec<TaskCreate>) -> Vec<StoreResult<Task>> {
        // One write for all: each create's checks make its own outcome, so one that is
        // refused leaves the others in place; only another error fails them all.
        let n = creates.len();
        tasks::all_failed(n, self.write(move |c| ready(tasks::create_many(&mut Lite(c), creates))).await)
    }

    async fn task_get(&self, name: &TaskName, now: Timestamp) -> StoreResult<TaskLookup> {
        let name = name.clone();
        self.read(move |c| ready(tasks::get(&mut Lite(c), &name, now))).await
    }

    async fn task_list(&self, p: TaskList) -> StoreResult<Vec<Task>> {
        self.read(move |c| ready(tasks::list(&mut Lite(c), p))).await
    }

    async fn task_delete(&self, p: TaskDelete) -> StoreResult<Option<String>> {
        self.write(move |c| ready(tasks::delete(&mut Lite(c), p))).await
    }

    async fn task_claim(&self, p: TaskClaim) -> StoreResult<Vec<ClaimedTask>> {
        self.write_relaxed(move |c| {
            let claimed = ready(tasks::claim(&mut Lite(c), &p))?;
            ready(jobs::started(&mut Lite(c), &claimed, p.now))?;
            Ok(claimed)
        })
        .await
    }

    async fn task_lease(&self, p: TaskLease) -> StoreResult<Vec<ClaimedTask>> {
        self.write_relaxed(move |c| {
            let leased = ready(tasks::lease(&mut Lite(c), &p))?;
            ready(jobs::started(&mut Lite(c), &leased, p.now))?;
            Ok(leased)
        })
        .await
    }

    async fn task_renew(&self, p: TaskRenew) -> StoreResult<bool> {
        self.write_relaxed(move |c| ready(tasks::renew(&mut Lite(c), p.clone()))).await
    }

    async fn task_release(&self, p: TaskRelease) -> StoreResult<bool> {
        self.write_relaxed(move |c| ready(tasks::release(&mut Lite(c), p.clone()))).await
    }

    async fn task_claim_by_name(&self, p: TaskClaimByName) -> StoreResult<ClaimedTask> {
        self.write(move |c| ready(tasks::claim_by_name(&mut Lite(c), p))).await
    }

    async fn task_finish_job(&self, p: TaskFinish) -> StoreResult<Option<Option<String>>> {
        self.write_relaxed(move |c| ready(tasks::finish(&mut Lite(c), &p))).await
    }

    async fn task_next_due(&self, queue: &QueueName) -> StoreResult<Option<Timestamp>> {
        let queue = queue.clone();
        self.read(move |c| ready(tasks::next_due(&mut Lite(c), &queue))).await
    }

    async fn task_count(&self, queue: &QueueName) -> StoreResult<u64> {
        let queue = queue.clone();
        self.read(move |c| ready(tasks::count(&mut Lite(c), &queue))).await
    }

    async fn task_lease_release(&self, queue: Option<QueueName>, now: Timestamp) -> StoreResult<u64> {
        self.write(move |c| ready(tasks::lease_release(&mut Lite(c), queue, now))).await
    }

    async fn dead_letter_list(&self, p: DeadLetterList) -> StoreResult<Vec<DeadLetter>> {
        self.read(move |c| ready(dead_letters::list(&mut Lite(c), p))).await
    }

    async fn dead_letter_get(&self, queue: &QueueName, id: i64) -> StoreResult<Option<DeadLetter>> {
        let queue = queue.clone();
        self.read(move |c| ready(dead_letters::get(&mut Lite(c), &queue, id))).await
    }

    async fn dead_letter_redrive(&self, p: DeadLetterRedrive) -> StoreResult<Redriven> {
        self.write(move |c| ready(dead_letters::redrive(&mut Lite(c), p))).await
    }

    async fn dead_letter_purge(&self, queue: &QueueName, select: DeadLetterSelect) -> StoreResult<u64> {
        let queue = queue.clone();
        self.write(move |c| ready(dead_letters::purge(&mut Lite(c), &queue, select))).await
    }

    async fn dead_letter_expire(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |c| ready(dead_letters::expire(&mut Lite(c), before))).await
    }

    async fn tombstone_expire(&self, now: Timestamp) -> StoreResult<u64> {
        self.write(move |c| ready(upkeep::expire(&mut Lite(c), now))).await
    }

    async fn job_create(&self, p: JobCreate) -> StoreResult<JobCreated> {
        self.write(move |c| ready(jobs::create(&mut Lite(c), &p))).await
    }

    async fn job_get(&self, id: &str, now: Timestamp) -> StoreResult<Option<Job>> {
        let id = id.to_string();
        self.read(move |c| ready(jobs::read(&mut Lite(c), &id, now))).await
    }

    async fn job_list(&self, p: JobList) -> StoreResult<Vec<Job>> {
        self.read(move |c| ready(jobs::list(&mut Lite(c), &p))).await
    }

    async fn job_cancel(&self, id: &str, now: Timestamp) -> StoreResult<Job> {
        let id = id.to_string();
        self.write(move |c| ready(jobs::cancel(&mut Lite(c), &id, now))).await
    }

    async fn job_report(&self, p: JobReport) -> StoreResult<Job> {
        self.write(move |c| ready(jobs::report(&mut Lite(c), &p))).await
    }

    async fn job_events(&self, id: &str, after_seq: i64, limit: usize) -> StoreResult<Vec<JobEvent>> {
        let id = id.to_string();
        self.read(move |c| ready(jobs::events(&mut Lite(c), &id, after_seq, limit))).await
    }

    async fn callback_claim(&self, now: Timestamp, until: Timestamp, limit: usize) -> StoreResult<Vec<Callback>> {
        self.write(move |c| ready(callbacks::claim_due(&mut Lite(c), now, until, limit))).await
    }

    async fn callback_record(&self, p: CallbackAttempt) -> StoreResult<()> {
        self.write(move |c| ready(callbacks::record(&mut Lite(c), p))).await
    }

    async fn callback_list(&self, job: &str) -> StoreResult<Vec<Callback>> {
        let job = job.to_string();
        self.read(move |c| ready(callbacks::list(&mut Lite(c), &job))).await
    }

    async fn record_get(&self, key: &str, now: Timestamp) -> StoreResult<Option<Record>> {
        let key = key.to_string();
        self.read(move |c| ready(records::get(&mut Lite(c), &key, now))).await
    }

    async fn record_list(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<Record>> {
        let prefix = prefix.to_string();
        self.read(move |c| ready(records::list(&mut Lite(c), &prefix, now))).await
    }

    async fn record_put(&self, p: RecordPut) -> StoreResult<Record> {
        self.write(move |c| ready(records::put(&mut Lite(c), p))).await
    }

    async fn record_delete(&self, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.write(move |c| ready(records::delete(&mut Lite(c), &key))).await
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
        self.write(move |c| ready(upkeep::write_check(&mut Lite(c), now))).await
    }

    async fn node_heartbeat(&self, p: NodeHeartbeat) -> StoreResult<()> {
        self.write(move |c| ready(cluster::node_heartbeat(&mut Lite(c), p))).await
    }

    async fn node_list(&self, alive_since: Timestamp) -> StoreResult<Vec<Node>> {
        self.read(move |c| ready(cluster::node_list(&mut Lite(c), alive_since))).await
    }

    async fn node_remove(&self, node_id: &str) -> StoreResult<()> {
        let node_id = node_id.to_string();
        self.write(move |c| ready(cluster::node_remove(&mut Lite(c), &node_id))).await
    }

    async fn queue_owner_renew(&self, p: QueueOwnerRenew) -> StoreResult<Vec<QueueName>> {
        self.write(move |c| ready(cluster::owner_renew(&mut Lite(c), p))).await
    }

    async fn queue_owner_acquire(&self, p: QueueOwnerAcquire) -> StoreResult<bool> {
        self.write(move |c| ready(cluster::owner_acquire(&mut Lite(c), p))).await
    }

    async fn queue_owner_release(&self, p: QueueOwnerRelease) -> StoreResult<()> {
        self.write(move |c| ready(cluster::owner_release(&mut Lite(c), p))).await
    }

    async fn queue_owner_list(&self) -> StoreResult<Vec<QueueOwner>> {
        self.read(move |c| ready(cluster::owner_list(&mut Lite(c)))).await
    }
}

#[cfg(test)]
mod tests;

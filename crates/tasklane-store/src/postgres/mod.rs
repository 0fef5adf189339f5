//! The PostgreSQL backend, for several tasklane nodes sharing one database.
//!
//! Claims lease due tasks in one statement with `FOR UPDATE SKIP LOCKED`, so nodes never
//! lease the same task twice; every outcome is written under its lease id. The schema is
//! created on connect under an advisory lock, so nodes that start together are safe.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tasklane_core::{Queue, QueueName, Task, TaskName, Timestamp};
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;

mod conn;
mod tls;

use crate::callbacks;
use crate::cluster;
use crate::columns::{self, CLAIM_ORDER, Columns, QUEUE_COLUMNS, TASK_COLUMNS};
use crate::jobs;
use crate::records;
use crate::{
    AttemptResult, Callback, CallbackAttempt, ClaimedTask, DeadLetter, DeadLetterList, DeadLetterRedrive,
    DeadLetterSelect, JobCreate, JobCreated, JobEvent, JobList, JobReport, JobReportKind, Node, NodeHeartbeat, Purged,
    QueueCreate, QueueDelete, QueueList, QueueOwner, QueueOwnerAcquire, QueueOwnerRelease, QueueOwnerRenew, QueuePurge,
    QueueSettingsPut, QueueStateSet, Record, RecordPut, Redriven, Store, StoreError, StoreResult, TaskClaim,
    TaskClaimByName, TaskCreate, TaskDelete, TaskFinish, TaskLease, TaskList, TaskLookup, TaskOutcome, TaskRelease,
    TaskRenew,
};
use conn::Pg;
use deadpool_postgres::GenericClient;
use tasklane_core::job::Job;
use tokio_postgres::types::ToSql;

const SCHEMA: &str = include_str!("schema.sql");
/// Serialises schema creation across nodes starting at once.
const MIGRATION_LOCK: i64 = 0x7461_736b_6c61_6e65; // "tasklane"
/// How long to wait for a connection from the pool, or for a new one to be made.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_SIZE: usize = 16;
/// Connections for the dispatcher's bookkeeping (see `PgStore::bookkeeping`).
const BOOKKEEPING_POOL_SIZE: usize = 8;

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Claims, successful outcomes and lease changes commit without waiting for the WAL
    /// flush (`synchronous_commit = off`): a crashed database server can undo the latest
    /// of them, which only runs those tasks again (delivery is at least once). Creates and
    /// every API change use `pool` and wait for the flush.
    bookkeeping: Pool,
    config: tokio_postgres::Config,
    /// TLS as the URL's `sslmode` asks (cleartext by default).
    tls: MakeRustlsConnect,
    finisher: tokio::sync::mpsc::UnboundedSender<Finished>,
}

/// A successful outcome waiting to be group-committed.
struct Finished {
    queue: String,
    task_id: String,
    lease_id: i64,
    tombstone_until: i64,
    now: i64,
    /// `None`: the lease was lost; `Some(job)`: recorded, and the task's job if it has one.
    reply: tokio::sync::oneshot::Sender<StoreResult<Option<Option<String>>>>,
}

/// Tables whose rows come and go all the time: vacuumed by `store_maintain`.
const HOT_TABLES: [&str; 3] = ["tasks", "tombstones", "queue_owners"];
/// Dead rows a hot table may hold before `store_maintain` vacuums it.
const VACUUM_MIN_DEAD: i64 = 1000;

/// Most successful outcomes committed together.
const FINISH_BATCH: usize = 1000;

/// The channel nodes use to wake each other: the payload is a queue name.
pub const WAKE_CHANNEL: &str = "tasklane_wake";

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// An error with its causes, so "db error" says which error.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The PostgreSQL the project's tests use: `TASKLANE_TEST_DATABASE_URL`, or the local
/// server's `test` database when it is unset (every machine this project is tested on runs
/// one), so the README's test command never passes quietly without it. `none` skips those
/// tests on purpose.
pub fn test_database_url() -> Option<String> {
    match std::env::var("TASKLANE_TEST_DATABASE_URL") {
        Ok(url) if url == "none" => {
            eprintln!("TASKLANE_TEST_DATABASE_URL=none: skipping a PostgreSQL test");
            None
        }
        Ok(url) => Some(url),
        Err(_) => Some("postgres://postgres@127.0.0.1:5432/test".to_string()),
    }
}

/// A schema name no other run will pick: `{prefix}_{process}_{clock}_{n}`. The process id
/// alone is not enough: ids are reused (32,768 of them on many machines), and a schema left
/// by a run that stopped before its cleanup would hand its rows to a later test.
pub fn scratch_schema(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    use tasklane_core::clock::{Clock, SystemClock};
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{:x}_{n}", std::process::id(), SystemClock.now().0)
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error().filter(|_| !e.is_closed()) else {
        return StoreError::Unavailable(with_causes(&e));
    };
    // The server going away or out of room is the database being unavailable, which a
    // client should retry (503), not an internal error: class 08 (connection exception),
    // 53 (insufficient resources: too many connections, disk full) and 57 (operator
    // intervention: "terminating connection due to administrator command", a shutdown).
    if db.code() == &tokio_postgres::error::SqlState::DISK_FULL {
        return StoreError::Full(db.to_string());
    }
    if matches!(db.code().code().get(..2), Some("08" | "53" | "57")) {
        return StoreError::Unavailable(db.to_string());
    }
    StoreError::Backend(db.to_string())
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(with_causes(&e))
}

/// Column list with a table alias: `t.queue, t.task_id, …`.
fn prefixed(columns: &str, alias: &str) -> String {
    columns.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

fn queue_name_of(name: &TaskName) -> String {
    name.queue.to_string()
}

impl PgStore {
    /// Record a success through the finisher, which commits waiting successes together:
    /// `None` if the lease was lost, else the task's job if it has one.
    async fn finish_success(&self, p: &TaskFinish, tombstone_until: Timestamp) -> StoreResult<Option<Option<String>>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Finished {
            queue: queue_name_of(&p.name),
            task_id: p.name.task.clone(),
            lease_id: p.lease_id,
            tombstone_until: tombstone_until.0,
            now: p.now.0,
            reply,
        };
        self.finisher.send(job).map_err(|_| StoreError::Unavailable("the outcome writer stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the outcome writer stopped".into()))?
    }

    /// Connect, in `schema` when given (created if missing), and create the tables.
    pub async fn connect(url: &str, schema: Option<&str>) -> StoreResult<PgStore> {
        let tls::PgTls { url, ssl_mode, connector: tls } = tls::from_url(url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::Unavailable(format!("invalid database URL: {e}")))?;
        config.ssl_mode(ssl_mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECTION_TIMEOUT);
        }
        // A database that stops answering must not hold a connection for TCP's two hours:
        // keepalive probes after 10 s idle, and unacknowledged data gives up after 10 s.
        config.keepalives(true).keepalives_idle(Duration::from_secs(10)).keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3).tcp_user_timeout(Duration::from_secs(10));
        // And the server ends a transaction whose client went quiet, freeing its row locks.
        let quiet = "-c idle_in_transaction_session_timeout=15s";
        config.options(format!("{} {quiet}", config.get_options().unwrap_or("")).trim_start());
        if let Some(schema) = schema {
            if !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(StoreError::Backend(format!("invalid schema name {schema:?}")));
            }
            let (client, connection) = config.connect(tls.clone()).await.map_err(backend)?;
            let task = tokio::spawn(connection);
            client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await.map_err(backend)?;
            drop(client);
            let _ = task.await;
            config.options(format!("{} -c search_path={schema}", config.get_options().unwrap_or("")).trim_start());
        }
        let build = |config: tokio_postgres::Config, size: usize| {
            let manager =
                Manager::from_config(config, tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
            // Waiting for a connection, and making one (login included), are bounded too.
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(CONNECTION_TIMEOUT))
                .create_timeout(Some(CONNECTION_TIMEOUT))
                .recycle_timeout(Some(CONNECTION_TIMEOUT))
                .build()
                .map_err(|e| StoreError::Unavailable(format!("build connection pool: {e}")))
        };
        let pool = build(config.clone(), POOL_SIZE)?;
        let mut relaxed = config.clone();
        relaxed.options(format!("{} -c synchronous_commit=off", config.get_options().unwrap_or("")).trim_start());
        let bookkeeping = build(relaxed, BOOKKEEPING_POOL_SIZE)?;
        let finisher = spawn_finisher(bookkeeping.clone());
        let store = PgStore { pool, bookkeeping, config, tls, finisher };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(backend)?;
        tx.batch_execute(SCHEMA).await.map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    /// Whether this store's connections to PostgreSQL are encrypted, and the server's
    /// TLS settings as it reports them: (encrypted, `ssl`, `ssl_cert_file`).
    pub async fn tls_status(&self) -> StoreResult<(bool, String, String)> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false), \
                 current_setting('ssl'), current_setting('ssl_cert_file')",
                &[],
            )
            .await
            .map_err(backend)?;
        Ok((row.get(0), row.get(1), row.get(2)))
    }

    /// Keep one connection busy for `seconds` (for fault tests: a statement in flight).
    pub async fn hold(&self, seconds: f64) -> StoreResult<()> {
        let client = self.client().await?;
        client.execute("SELECT pg_sleep($1)", &[&seconds]).await.map_err(backend)?;
        Ok(())
    }

    /// Terminate every connection whose `application_name` is `name` (for fault tests);
    /// returns how many.
    pub async fn terminate_application(&self, name: &str) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .map_err(backend)?;
        Ok(row.get(0))
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn bookkeeping_client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.bookkeeping.get().await.map_err(pool_error)
    }

    /// Wake the queues' owners, wherever they run: one `NOTIFY` per queue name.
    pub async fn notify(&self, queues: &[String]) -> StoreResult<()> {
        let client = self.client().await?;
        for q in queues {
            client.execute("SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, q]).await.map_err(backend)?;
        }
        Ok(())
    }

    /// Listen for wake-ups on a dedicated connection, reconnecting with backoff when it
    /// drops. Each notification's payload (a queue name) is sent to the returned channel.
    pub fn listen(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let config = self.config.clone();
        let tls = self.tls.clone();
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            while !tx.is_closed() {
                match listen_once(&config, tls.clone(), &tx).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %e, "wake-up listener lost its connection");
                    }
                }
                let wait = Duration::from_millis(200u64.saturating_mul(1 << failures.min(5)));
                tokio::time::sleep(wait).await;
            }
        });
        rx
    }

    /// A table's size on disk with its indexes and TOAST, in bytes (for measurements).
    pub async fn relation_size(&self, table: &str) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT pg_total_relation_size(($1::text)::regclass)", &[&table])
            .await
            .map_err(backend)?;
        row.try_get(0).map_err(backend)
    }

    /// Drop every table of this store (tests use it to clean their schema).
    pub async fn drop_schema(&self, schema: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.map_err(backend)
    }
}

/// A hot statement from the connection's cache: PostgreSQL parses and plans it once per
/// connection instead of on every call (a text query costs a Parse and a Describe each
/// time). Only for statements whose text does not vary with the data, or the cache grows.
async fn cached(c: &impl GenericClient, sql: &str) -> StoreResult<tokio_postgres::Statement> {
    c.prepare_cached(sql).await.map_err(backend)
}

/// Commit successful outcomes in batches: everything waiting is written by one
/// transaction, so a busy node pays one commit per batch rather than per task.
fn spawn_finisher(pool: Pool) -> tokio::sync::mpsc::UnboundedSender<Finished> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Finished>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < FINISH_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            match finish_batch(&pool, &batch).await {
                Ok(mut done) => {
                    for job in batch {
                        let held = done.remove(&(job.queue, job.task_id));
                        let _ = job.reply.send(Ok(held));
                    }
                }
                Err(e) => {
                    for job in batch {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    });
    tx
}

/// The tasks of `batch` whose leases held, each with its job (if it has one).
type FinishedTasks = std::collections::HashMap<(String, String), Option<String>>;

async fn finish_batch(pool: &Pool, batch: &[Finished]) -> StoreResult<FinishedTasks> {
    let queues: Vec<&str> = batch.iter().map(|j| j.queue.as_str()).collect();
    let ids: Vec<&str> = batch.iter().map(|j| j.task_id.as_str()).collect();
    let leases: Vec<i64> = batch.iter().map(|j| j.lease_id).collect();
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(backend)?;
    let delete = cached(
        &tx,
        "DELETE FROM tasks t USING unnest($1::text[], $2::text[], $3::bigint[]) AS f(queue, task_id, lease_id) \
         WHERE t.queue = f.queue AND t.task_id = f.task_id AND t.state = 'leased' AND t.lease_id = f.lease_id \
         RETURNING t.queue, t.task_id, t.job_id",
    )
    .await?;
    let rows = tx.query(&delete, &[&queues, &ids, &leases]).await.map_err(backend)?;
    let mut done = FinishedTasks::with_capacity(rows.len());
    let mut job_successes: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for r in &rows {
        let job = r.try_get::<_, Option<String>>(2).map_err(backend)?;
        if let Some(job) = &job {
            *job_successes.entry(job.clone()).or_default() += 1;
        }
        done.insert((r.try_get::<_, String>(0).map_err(backend)?, r.try_get::<_, String>(1).map_err(backend)?), job);
    }
    let now = batch.iter().map(|j| j.now).max().unwrap_or_default();
    // Jobs in a fixed order, so concurrent batches lock them alike; each success counted
    // and recorded on its own, so a job's event stream has one event per task outcome, as
    // on SQLite, however the outcomes were batched.
    for (job, n) in &job_successes {
        for _ in 0..*n {
            job_tasks_done(&tx, job, 1, 0, "", None, Timestamp(now)).await?;
        }
    }
    // Each deleted task once, so the upsert never meets the same row twice.
    let (mut tq, mut tid, mut until) = (Vec::new(), Vec::new(), Vec::new());
    for (queue, task_id) in done.keys() {
        let expires =
            batch.iter().filter(|j| &j.queue == queue && &j.task_id == task_id).map(|j| j.tombstone_until).max();
        tq.push(queue.as_str());
        tid.push(task_id.as_str());
        until.push(expires.unwrap_or_default());
    }
    if !tq.is_empty() {
        let insert = cached(
            &tx,
            "INSERT INTO tombstones (queue, task_id, expires_at) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) \
             ON CONFLICT (queue, task_id) DO UPDATE SET expires_at = GREATEST(tombstones.expires_at, excluded.expires_at)",
        )
        .await?;
        tx.execute(&insert, &[&tq, &tid, &until]).await.map_err(backend)?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(done)
}

/// Insert a task (its name must be free of live tasks); returns 0 when the name is taken.
/// With `accepted_at`, also 0 unless its queue exists and its name is not tombstoned then.
async fn insert_task(c: &impl GenericClient, t: &Task, accepted_at: Option<Timestamp>) -> StoreResult<u64> {
    let guard = if accepted_at.is_some() {
        "WHERE EXISTS (SELECT 1 FROM queues WHERE name = $1) \
         AND NOT EXISTS (SELECT 1 FROM tombstones WHERE queue = $1 AND task_id = $2 AND expires_at > $17)"
    } else {
        ""
    };
    let statement = format!(
        "INSERT INTO tasks (queue, task_id, state, due_at, url, method, headers, body, auth_kind, auth_email, \
         auth_param, schedule_time, create_time, dispatch_deadline_us, retry_config, job_id, tag, env) \
         SELECT $1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $3, $11, $12, $13, $14, $15, $16 {guard} \
         ON CONFLICT (queue, task_id) DO NOTHING"
    );
    let (auth_kind, auth_email, auth_param) = columns::auth_columns(&t.http_request.auth);
    let (queue, headers) = (queue_name_of(&t.name), columns::encode_headers(&t.http_request.headers));
    let (deadline, retry) = (
        tasklane_core::clock::duration_micros(t.dispatch_deadline),
        t.retry_config.as_ref().map(columns::encode_retry),
    );
    let (method, env, at) = (t.http_request.method.as_str(), columns::encode_env(&t.env), accepted_at.map(|a| a.0));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &queue,
        &t.name.task,
        &t.schedule_time.0,
        &t.http_request.url,
        &method,
        &headers,
        &t.http_request.body,
        &auth_kind,
        &auth_email,
        &auth_param,
        &t.create_time.0,
        &deadline,
        &retry,
        &t.job_id,
        &t.tag,
        &env,
    ];
    if let Some(at) = &at {
        params.push(at);
    }
    c.execute(&cached(c, &statement).await?, &params).await.map_err(backend)
}

async fn dead_letter_read(c: &impl GenericClient, queue: &str, id: i64) -> StoreResult<Option<DeadLetter>> {
    let statement = format!("SELECT {} FROM dead_letters WHERE queue = $1 AND id = $2", columns::dead_letter_columns());
    let row = c.query_opt(&statement, &[&queue, &id]).await.map_err(backend)?;
    row.as_ref().map(columns::dead_letter_from).transpose()
}

async fn dead_letter_ids(c: &impl GenericClient, queue: &str, select: &DeadLetterSelect) -> StoreResult<Vec<i64>> {
    let rows = match select {
        DeadLetterSelect::All => {
            c.query("SELECT id FROM dead_letters WHERE queue = $1 ORDER BY id FOR UPDATE", &[&queue]).await
        }
        DeadLetterSelect::Ids(ids) => {
            c.query(
                "SELECT id FROM dead_letters WHERE queue = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
                &[&queue, ids],
            )
            .await
        }
    }
    .map_err(backend)?;
    rows.iter().map(|r| r.try_get(0).map_err(backend)).collect()
}

/// Jobs whose first task was just leased start running (one transaction, jobs in order).
async fn jobs_started(
    client: &mut deadpool_postgres::Object,
    leased: &[ClaimedTask],
    now: Timestamp,
) -> StoreResult<()> {
    let mut started: Vec<&str> = leased.iter().filter_map(|c| c.task.job_id.as_deref()).collect();
    if started.is_empty() {
        return Ok(());
    }
    started.sort_unstable();
    started.dedup();
    let tx = client.transaction().await.map_err(backend)?;
    for job in started {
        job_change(&tx, job, jobs::START, &[&job, &now.0], "running", now).await?;
    }
    tx.commit().await.map_err(backend)
}

/// Record an event for the change just made to `job`.
async fn job_event(c: &impl GenericClient, job: &str, now: Timestamp, kind: &str) -> StoreResult<()> {
    c.execute(jobs::EVENT_INSERT, &[&job, &now.0, &kind]).await.map_err(backend)?;
    Ok(())
}

/// Run an update that returns a row when it applied.
async fn job_update(c: &impl GenericClient, statement: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<bool> {
    Ok(c.query_opt(statement, args).await.map_err(backend)?.is_some())
}

async fn job_change(
    c: &impl GenericClient,
    job: &str,
    statement: &str,
    args: &[&(dyn ToSql + Sync)],
    kind: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let changed = job_update(c, statement, args).await?;
    if changed {
        job_event(c, job, now, kind).await?;
    }
    Ok(changed)
}

/// End a job with an update that cancels its tasks that have not started, then record `kind`.
async fn job_end(
    c: &impl GenericClient,
    job: &str,
    statement: &str,
    args: &[&(dyn ToSql + Sync)],
    kind: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let ended = job_update(c, statement, args).await?;
    if ended {
        let n = c.query(jobs::CANCEL_TASKS, &[&job]).await.map_err(backend)?.len() as i64;
        if n > 0 {
            c.execute(jobs::COUNT_CANCELLED, &[&job, &n]).await.map_err(backend)?;
        }
        job_event(c, job, now, kind).await?;
        callbacks::queue(&mut Pg(c), job, jobs::JOB_FINISHED, None, now).await?;
    }
    Ok(ended)
}

/// Tasks of `job` reached final outcomes: count them, apply fail-fast, settle the job.
async fn job_tasks_done(
    c: &impl GenericClient,
    job: &str,
    succeeded: i64,
    failed: i64,
    error: &str,
    dead_lettered: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    if let Some(task) = dead_lettered {
        callbacks::queue(&mut Pg(c), job, jobs::TASK_DEAD_LETTERED, Some(task), now).await?;
    }
    let kind = if failed > 0 { "task_failed" } else { "task_succeeded" };
    job_change(c, job, jobs::COUNT, &[&job, &succeeded, &failed], kind, now).await?;
    if failed > 0 && job_end(c, job, &jobs::fail_fast(), &[&job, &now.0, &error], "failed", now).await? {
        return Ok(());
    }
    job_settle(c, job, now).await
}

/// End `job` if every task has an outcome.
async fn job_settle(c: &impl GenericClient, job: &str, now: Timestamp) -> StoreResult<()> {
    if let Some(row) = c.query_opt(&jobs::settle(), &[&job, &now.0]).await.map_err(backend)? {
        let status: String = row.try_get(0).map_err(backend)?;
        job_event(c, job, now, &status).await?;
        callbacks::queue(&mut Pg(c), job, jobs::JOB_FINISHED, None, now).await?;
    }
    Ok(())
}

/// Delete the tasks `condition` picks (with `args`); those of jobs count as cancelled by `how`,
/// and each such job settles. Returns the jobs.
async fn tasks_remove(
    c: &impl GenericClient,
    condition: &str,
    args: &[&(dyn ToSql + Sync)],
    how: &str,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    let rows = c.query(&jobs::removed_delete(condition), args).await.map_err(backend)?;
    let mut removed = Vec::with_capacity(rows.len());
    for row in rows {
        let job: String = row.try_get(0).map_err(backend)?;
        job_removed(c, &job, row.try_get(1).map_err(backend)?, how, now).await?;
        removed.push(job);
    }
    Ok(removed)
}

/// `n` tasks of `job` were removed by `how`: they count as cancelled, and the job settles.
async fn job_removed(c: &impl GenericClient, job: &str, n: i64, how: &str, now: Timestamp) -> StoreResult<()> {
    let reason = jobs::removed_reason(n, how);
    job_change(c, job, jobs::REMOVED, &[&job, &n, &reason], jobs::TASKS_REMOVED, now).await?;
    job_settle(c, job, now).await
}

async fn job_read(c: &impl GenericClient, id: &str, now: Timestamp) -> StoreResult<Option<Job>> {
    let statement =
        format!("SELECT {} FROM jobs WHERE id = $1 AND (expires_at IS NULL OR expires_at > $2)", jobs::columns("", ""));
    let Some(row) = c.query_opt(&statement, &[&id, &now.0]).await.map_err(backend)? else { return Ok(None) };
    let mut job = jobs::job_from(&row, 0)?;
    job.running = c.query_one(jobs::RUNNING, &[&id]).await.map_err(backend)?.try_get(0).map_err(backend)?;
    Ok(Some(job))
}

async fn job_refusal(c: &impl GenericClient, id: &str, now: Timestamp) -> StoreError {
    match job_read(c, id, now).await {
        Ok(None) => StoreError::JobNotFound,
        Ok(Some(job)) if job.status.is_final() => StoreError::JobFinished(job.status),
        Ok(Some(job)) => StoreError::JobProgressBackwards(job.progress.percent.to_string()),
        Err(e) => e,
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    tx: &tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let forward = tx.clone();
    let pump = tokio::spawn(async move {
        loop {
            let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
            match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if forward.send(n.payload().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client.batch_execute(&format!("LISTEN {WAKE_CHANNEL}")).await?;
    // A wake-up may have been missed while the connection was down: wake every queue.
    let _ = tx.send(String::new());
    match pump.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// Insert one new task, or say why it was not.
async fn task_create_in(c: &impl GenericClient, p: TaskCreate) -> StoreResult<Task> {
    let t = &p.task;
    let queue = queue_name_of(&t.name);
    if insert_task(c, t, Some(p.now)).await? == 1 {
        return Ok(p.task);
    }
    let queue_exists = c.query_opt("SELECT 1 FROM queues WHERE name = $1", &[&queue]).await.map_err(backend)?.is_some();
    if !queue_exists {
        return Err(StoreError::QueueNotFound);
    }
    if tombstoned(c, &queue, &t.name.task, p.now).await? {
        return Err(StoreError::TaskTombstoned);
    }
    Err(StoreError::TaskAlreadyExists)
}

async fn tombstoned(
    client: &impl deadpool_postgres::GenericClient,
    queue: &str,
    task_id: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let row = client
        .query_opt(
            "SELECT 1 FROM tombstones WHERE queue = $1 AND task_id = $2 AND expires_at > $3",
            &[&queue, &task_id, &now.0],
        )
        .await
        .map_err(backend)?;
    Ok(row.is_some())
}

async fn tombstone_put(
    client: &impl deadpool_postgres::GenericClient,
    queue: &str,
    task_id: &str,
    until: Timestamp,
) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO tombstones (queue, task_id, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (queue, task_id) DO UPDATE SET expires_at = GREATEST(tombstones.expires_at, excluded.expires_at)",
            &[&queue, &task_id, &until.0],
        )
        .await
        .map_err(backend)?;
    Ok(())
}

/// The SET clause that leases a task at `$now` with `$grace` (parameters named by the caller).
async fn record_attempt(
    client: &impl deadpool_postgres::GenericClient,
    queue: &str,
    task_id: &str,
    lease_id: i64,
    a: &AttemptResult,
) -> StoreResult<bool> {
    let responded = i32::from(a.responded);
    let executed = i32::from(a.responded && a.http_status < 500);
    let n = client
        .execute(
            &format!(
                "UPDATE tasks SET response_count = response_count + $4, execution_count = execution_count + $5, \
                 last_http_status = $6, last_response_time = $7, last_code = $8, last_message = $9, {} \
                 WHERE queue = $1 AND task_id = $2 AND state = 'leased' AND lease_id = $3",
                columns::ATTEMPT_LOG_APPEND.replace("$LINE", "$10")
            ),
            &[
                &queue,
                &task_id,
                &lease_id,
                &responded,
                &executed,
                &i32::from(a.http_status),
                &a.response_time.0,
                &(a.status.code as i32),
                &a.status.message,
                &columns::attempt_line(a),
            ],
        )
        .await
        .map_err(backend)?;
    Ok(n == 1)
}

/// Insert a queue row (with `on_conflict` deciding what a clash does); returns the row written.
async fn queue_insert(
    client: &impl deadpool_postgres::GenericClient,
    on_conflict: &str,
    queue: &Queue,
    state: &str,
    now: Timestamp,
) -> StoreResult<Option<Row>> {
    let s = columns::queue_settings(queue);
    client
        .query_opt(
            &queue_insert_sql(on_conflict),
            &[
                &queue.name.to_string(),
                &queue.name.parent.to_string(),
                &state,
                &s.0,
                &s.1,
                &s.2,
                &s.3,
                &s.4,
                &s.5,
                &s.6,
                &s.7,
                &s.8,
                &queue.purge_time.map(|t| t.0),
                &now.0,
                &s.9,
                &queue.kind.as_str(),
            ],
        )
        .await
        .map_err(backend)
}

fn queue_insert_sql(on_conflict: &str) -> String {
    format!(
        "INSERT INTO queues (name, parent, state, max_dispatches_per_second, max_burst_size, max_concurrent_dispatches, \
         max_attempts, max_retry_duration_us, min_backoff_us, max_backoff_us, max_doublings, logging_sampling_ratio, \
         purge_time, created_at, updated_at, http_target, kind) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16) {on_conflict} RETURNING {QUEUE_COLUMNS}"
    )
}

#[async_trait]
impl Store for PgStore {
    async fn queue_create(&self, p: QueueCreate) -> StoreResult<Queue> {
        let client = self.client().await?;
        let row =
            queue_insert(&client, "ON CONFLICT (name) DO NOTHING", &p.queue, p.queue.state.as_str(), p.now).await?;
        columns::queue_from(&row.ok_or(StoreError::QueueAlreadyExists)?)
    }

    async fn queue_settings_put(&self, p: QueueSettingsPut) -> StoreResult<Queue> {
        let client = self.client().await?;
        let s = columns::queue_settings(&p.queue);
        let name = p.queue.name.to_string();
        let row = if p.create_if_missing {
            queue_insert(
                &client,
                "ON CONFLICT (name) DO UPDATE SET max_dispatches_per_second = excluded.max_dispatches_per_second, \
                 max_burst_size = excluded.max_burst_size, max_concurrent_dispatches = excluded.max_concurrent_dispatches, \
                 max_attempts = excluded.max_attempts, max_retry_duration_us = excluded.max_retry_duration_us, \
                 min_backoff_us = excluded.min_backoff_us, max_backoff_us = excluded.max_backoff_us, \
                 max_doublings = excluded.max_doublings, logging_sampling_ratio = excluded.logging_sampling_ratio, \
                 updated_at = excluded.updated_at, http_target = excluded.http_target",
                &p.queue,
                "running",
                p.now,
            )
            .await?
        } else {
            client
                .query_opt(
                    &format!(
                        "UPDATE queues SET max_dispatches_per_second = $2, max_burst_size = $3, \
                         max_concurrent_dispatches = $4, max_attempts = $5, max_retry_duration_us = $6, \
                         min_backoff_us = $7, max_backoff_us = $8, max_doublings = $9, logging_sampling_ratio = $10, \
                         updated_at = $11, http_target = $12 WHERE name = $1 RETURNING {QUEUE_COLUMNS}"
                    ),
                    &[&name, &s.0, &s.1, &s.2, &s.3, &s.4, &s.5, &s.6, &s.7, &s.8, &p.now.0, &s.9],
                )
                .await
                .map_err(backend)?
        };
        columns::queue_from(&row.ok_or(StoreError::QueueNotFound)?)
    }

    async fn queue_get(&self, name: &QueueName) -> StoreResult<Option<Queue>> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = $1"), &[&name.to_string()])
            .await
            .map_err(backend)?;
        row.as_ref().map(columns::queue_from).transpose()
    }

    async fn queue_list(&self, p: QueueList) -> StoreResult<Vec<Queue>> {
        let client = self.client().await?;
        let parent = p.parent.map(|l| l.to_string());
        let after = p.after.map(|n| n.to_string()).unwrap_or_default();
        let rows = client
            .query(
                &format!(
                    "SELECT {QUEUE_COLUMNS} FROM queues WHERE ($1::text IS NULL OR parent = $1) AND name > $2 \
                     ORDER BY name LIMIT $3"
                ),
                &[&parent, &after, &(p.limit as i64)],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(columns::queue_from).collect()
    }

    async fn queue_state_set(&self, p: QueueStateSet) -> StoreResult<Queue> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("UPDATE queues SET state = $2, updated_at = $3 WHERE name = $1 RETURNING {QUEUE_COLUMNS}"),
                &[&p.name.to_string(), &p.state.as_str(), &p.now.0],
            )
            .await
            .map_err(backend)?;
        columns::queue_from(&row.ok_or(StoreError::QueueNotFound)?)
    }

    async fn queue_purge(&self, p: QueuePurge) -> StoreResult<Purged> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let name = p.name.to_string();
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE queues SET purge_time = $2, updated_at = $2 WHERE name = $1 RETURNING {QUEUE_COLUMNS}"
                ),
                &[&name, &p.now.0],
            )
            .await
            .map_err(backend)?;
        let queue = columns::queue_from(&row.ok_or(StoreError::QueueNotFound)?)?;
        tx.execute(
            "INSERT INTO tombstones (queue, task_id, expires_at) \
             SELECT queue, task_id, $3 FROM tasks WHERE queue = $1 AND create_time <= $2 \
             ON CONFLICT (queue, task_id) DO UPDATE SET expires_at = GREATEST(tombstones.expires_at, excluded.expires_at)",
            &[&name, &p.now.0, &p.tombstone_until.0],
        )
        .await
        .map_err(backend)?;
        let jobs =
            tasks_remove(&tx, "queue = $1 AND create_time <= $2", &[&name, &p.now.0], "PurgeQueue", p.now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Purged { queue, jobs })
    }

    async fn queue_delete(&self, p: QueueDelete) -> StoreResult<Vec<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let name = p.name.to_string();
        let n = tx.execute("DELETE FROM queues WHERE name = $1", &[&name]).await.map_err(backend)?;
        if n == 0 {
            return Err(StoreError::QueueNotFound);
        }
        let jobs = tasks_remove(&tx, "queue = $1", &[&name], "DeleteQueue", p.now).await?;
        tx.execute("DELETE FROM tombstones WHERE queue = $1", &[&name]).await.map_err(backend)?;
        tx.execute("DELETE FROM queue_owners WHERE queue = $1", &[&name]).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(jobs)
    }

    async fn task_create(&self, p: TaskCreate) -> StoreResult<Task> {
        let client = self.client().await?;
        task_create_in(&client, p).await
    }

    async fn task_create_many(&self, creates: Vec<TaskCreate>) -> Vec<StoreResult<Task>> {
        let n = creates.len();
        // One transaction for all, so a crash keeps all or none; each create still succeeds
        // or fails alone (the insert skips a conflict instead of failing the transaction).
        let results = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(backend)?;
            let mut results = Vec::with_capacity(n);
            for p in creates {
                match task_create_in(&tx, p).await {
                    r @ (Ok(_)
                    | Err(
                        StoreError::QueueNotFound | StoreError::TaskTombstoned | StoreError::TaskAlreadyExists,
                    )) => results.push(r),
                    Err(e) => return Err(e),
                }
            }
            tx.commit().await.map_err(backend)?;
            Ok(results)
        }
        .await;
        match results {
            Ok(results) => results,
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn task_get(&self, name: &TaskName, now: Timestamp) -> StoreResult<TaskLookup> {
        let client = self.client().await?;
        let queue = queue_name_of(name);
        let row = client
            .query_opt(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE queue = $1 AND task_id = $2"),
                &[&queue, &name.task],
            )
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return Ok(TaskLookup::Found(Box::new(columns::task_from(&row)?)));
        }
        Ok(if tombstoned(&client, &queue, &name.task, now).await? {
            TaskLookup::Tombstoned
        } else {
            TaskLookup::Missing
        })
    }

    async fn task_list(&self, p: TaskList) -> StoreResult<Vec<Task>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE queue = $1 AND task_id > $2 ORDER BY task_id LIMIT $3"
                ),
                &[&p.queue.to_string(), &p.after.unwrap_or_default(), &(p.limit as i64)],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(columns::task_from).collect()
    }

    async fn task_delete(&self, p: TaskDelete) -> StoreResult<Option<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let queue = queue_name_of(&p.name);
        let row = tx
            .query_opt("DELETE FROM tasks WHERE queue = $1 AND task_id = $2 RETURNING job_id", &[&queue, &p.name.task])
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Err(if tombstoned(&tx, &queue, &p.name.task, p.now).await? {
                StoreError::TaskTombstoned
            } else {
                StoreError::TaskNotFound
            });
        };
        let job: Option<String> = row.try_get(0).map_err(backend)?;
        if let Some(job) = &job {
            job_removed(&tx, job, 1, "DeleteTask", p.now).await?;
        }
        tombstone_put(&tx, &queue, &p.name.task, p.tombstone_until).await?;
        tx.commit().await.map_err(backend)?;
        Ok(job)
    }

    async fn task_claim(&self, p: TaskClaim) -> StoreResult<Vec<ClaimedTask>> {
        let mut client = self.bookkeeping_client().await?;
        let sql = format!(
            "WITH due AS (SELECT id, due_at FROM tasks WHERE queue = $1 AND due_at <= $2 \
             AND EXISTS (SELECT 1 FROM queues WHERE name = $1 AND state = 'running') AND {} \
             {CLAIM_ORDER} LIMIT $3 FOR UPDATE OF tasks SKIP LOCKED) \
             UPDATE tasks t SET {} FROM due WHERE t.id = due.id RETURNING due.due_at, t.id, t.lease_id, {}",
            columns::claim_owned("$5"),
            columns::lease_set("$2", &columns::push_lease_length("$4", "t"), "t"),
            prefixed(TASK_COLUMNS, "t")
        );
        let grace = tasklane_core::clock::duration_micros(p.grace);
        let statement = cached(&client, &sql).await?;
        let rows = client
            .query(&statement, &[&p.queue.to_string(), &p.now.0, &(p.limit as i64), &grace, &p.owner])
            .await
            .map_err(backend)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let order: (i64, i64) = (row.try_get(0).map_err(backend)?, row.try_get(1).map_err(backend)?);
            let lease_id: i64 = row.try_get(2).map_err(backend)?;
            claimed.push((order, ClaimedTask { task: columns::task_from(&Shifted { row, by: 3 })?, lease_id }));
        }
        // RETURNING has no order: hand tasks out in claim order.
        claimed.sort_by_key(|(order, _)| *order);
        let claimed: Vec<ClaimedTask> = claimed.into_iter().map(|(_, c)| c).collect();
        jobs_started(&mut client, &claimed, p.now).await?;
        Ok(claimed)
    }

    async fn task_lease(&self, p: TaskLease) -> StoreResult<Vec<ClaimedTask>> {
        let mut client = self.bookkeeping_client().await?;
        let statement = format!(
            "WITH due AS (SELECT id, due_at FROM tasks WHERE queue = $1 AND due_at <= $2 \
             AND ($5::text IS NULL OR tag = $5) \
             AND EXISTS (SELECT 1 FROM queues WHERE name = $1 AND state = 'running') \
             {CLAIM_ORDER} LIMIT $3 FOR UPDATE OF tasks SKIP LOCKED) \
             UPDATE tasks t SET {} FROM due WHERE t.id = due.id RETURNING due.due_at, t.id, t.lease_id, {}",
            columns::lease_set("$2", "$4", "t"),
            prefixed(TASK_COLUMNS, "t")
        );
        let lease = tasklane_core::clock::duration_micros(p.lease);
        let statement = cached(&client, &statement).await?;
        let rows = client
            .query(&statement, &[&p.queue.to_string(), &p.now.0, &(p.limit as i64), &lease, &p.tag])
            .await
            .map_err(backend)?;
        let mut leased = Vec::with_capacity(rows.len());
        for row in &rows {
            let order: (i64, i64) = (row.try_get(0).map_err(backend)?, row.try_get(1).map_err(backend)?);
            let lease_id: i64 = row.try_get(2).map_err(backend)?;
            leased.push((order, ClaimedTask { task: columns::task_from(&Shifted { row, by: 3 })?, lease_id }));
        }
        // RETURNING has no order: hand tasks out in claim order.
        leased.sort_by_key(|(order, _)| *order);
        let leased: Vec<ClaimedTask> = leased.into_iter().map(|(_, c)| c).collect();
        jobs_started(&mut client, &leased, p.now).await?;
        Ok(leased)
    }

    async fn task_renew(&self, p: TaskRenew) -> StoreResult<bool> {
        let client = self.bookkeeping_client().await?;
        let n = client
            .execute(
                &cached(&client, columns::TASK_RENEW).await?,
                &[&queue_name_of(&p.name), &p.name.task, &p.until.0, &p.lease_id],
            )
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn task_release(&self, p: TaskRelease) -> StoreResult<bool> {
        let client = self.bookkeeping_client().await?;
        let n = client
            .execute(
                &cached(&client, columns::TASK_RELEASE).await?,
                &[&queue_name_of(&p.name), &p.name.task, &p.now.0, &p.lease_id],
            )
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn task_claim_by_name(&self, p: TaskClaimByName) -> StoreResult<ClaimedTask> {
        let client = self.client().await?;
        let queue = queue_name_of(&p.name);
        let sql = format!(
            "UPDATE tasks t SET {} WHERE t.queue = $1 AND t.task_id = $2 RETURNING t.lease_id, {}",
            columns::lease_set("$3", &columns::push_lease_length("$4", "t"), "t"),
            prefixed(TASK_COLUMNS, "t")
        );
        let grace = tasklane_core::clock::duration_micros(p.grace);
        let row = client.query_opt(&sql, &[&queue, &p.name.task, &p.now.0, &grace]).await.map_err(backend)?;
        match row {
            Some(row) => Ok(ClaimedTask {
                lease_id: row.try_get(0).map_err(backend)?,
                task: columns::task_from(&Shifted { row: &row, by: 1 })?,
            }),
            None => Err(if tombstoned(&client, &queue, &p.name.task, p.now).await? {
                StoreError::TaskTombstoned
            } else {
                StoreError::TaskNotFound
            }),
        }
    }

    async fn task_finish_job(&self, p: TaskFinish) -> StoreResult<Option<Option<String>>> {
        // A success (an acknowledgement) is one write: the finisher's delete names the job.
        if let TaskOutcome::Succeeded { tombstone_until } = &p.outcome {
            return self.finish_success(&p, *tombstone_until).await;
        }
        crate::finish_job_by_reading(self, p).await
    }

    async fn task_finish(&self, p: TaskFinish) -> StoreResult<bool> {
        if let TaskOutcome::Succeeded { tombstone_until } = &p.outcome {
            return Ok(self.finish_success(&p, *tombstone_until).await?.is_some());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let queue = queue_name_of(&p.name);
        let task_id = &p.name.task;
        let held = match &p.outcome {
            TaskOutcome::Succeeded { .. } => unreachable!("successes are group-committed above"),
            TaskOutcome::Retry { attempt, retry_at } => {
                let held = record_attempt(&tx, &queue, task_id, p.lease_id, attempt).await?;
                if held {
                    tx.execute(
                        "UPDATE tasks SET state = 'queued', due_at = $3, schedule_time = $3 WHERE queue = $1 AND task_id = $2",
                        &[&queue, task_id, &retry_at.0],
                    )
                    .await
                    .map_err(backend)?;
                }
                held
            }
            TaskOutcome::GaveUp { attempt, tombstone_until } => {
                let held = record_attempt(&tx, &queue, task_id, p.lease_id, attempt).await?;
                if held {
                    tx.execute(
                        &format!(
                            "INSERT INTO dead_letters (died_at, {TASK_COLUMNS}, attempts) \
                             SELECT $3, {TASK_COLUMNS}, attempts FROM tasks WHERE queue = $1 AND task_id = $2"
                        ),
                        &[&queue, task_id, &p.now.0],
                    )
                    .await
                    .map_err(backend)?;
                    let job: Option<String> = tx
                        .query_one(
                            "DELETE FROM tasks WHERE queue = $1 AND task_id = $2 RETURNING job_id",
                            &[&queue, task_id],
                        )
                        .await
                        .map_err(backend)?
                        .try_get(0)
                        .map_err(backend)?;
                    tombstone_put(&tx, &queue, task_id, *tombstone_until).await?;
                    if let Some(job) = job {
                        let error = format!("task {task_id} failed for good: {}", attempt.status.message);
                        job_tasks_done(&tx, &job, 0, 1, &error, Some(&p.name.to_string()), p.now).await?;
                    }
                }
                held
            }
        };
        tx.commit().await.map_err(backend)?;
        Ok(held)
    }

    async fn task_next_due(&self, queue: &QueueName) -> StoreResult<Option<Timestamp>> {
        let client = self.client().await?;
        let row = client
            .query_one(&cached(&client, "SELECT min(due_at) FROM tasks WHERE queue = $1").await?, &[&queue.to_string()])
            .await
            .map_err(backend)?;
        Ok(row.try_get::<_, Option<i64>>(0).map_err(backend)?.map(Timestamp))
    }

    async fn task_count(&self, queue: &QueueName) -> StoreResult<u64> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM tasks WHERE queue = $1", &[&queue.to_string()])
            .await
            .map_err(backend)?;
        Ok(row.try_get::<_, i64>(0).map_err(backend)?.max(0) as u64)
    }

    async fn task_lease_release(&self, queue: Option<QueueName>, now: Timestamp) -> StoreResult<u64> {
        let client = self.client().await?;
        client.execute(columns::LEASE_RELEASE, &[&now.0, &queue.map(|q| q.to_string())]).await.map_err(backend)
    }

    async fn dead_letter_list(&self, p: DeadLetterList) -> StoreResult<Vec<DeadLetter>> {
        let client = self.client().await?;
        let statement = format!(
            "SELECT {} FROM dead_letters WHERE queue = $1 AND id > $2 ORDER BY id LIMIT $3",
            columns::dead_letter_columns()
        );
        let rows = client
            .query(&statement, &[&p.queue.to_string(), &p.after.unwrap_or(0), &(p.limit as i64)])
            .await
            .map_err(backend)?;
        rows.iter().map(columns::dead_letter_from).collect()
    }

    async fn dead_letter_get(&self, queue: &QueueName, id: i64) -> StoreResult<Option<DeadLetter>> {
        let client = self.client().await?;
        dead_letter_read(&client, &queue.to_string(), id).await
    }

    async fn dead_letter_redrive(&self, p: DeadLetterRedrive) -> StoreResult<Redriven> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let queue = p.queue.to_string();
        let mut out = Redriven::default();
        for id in dead_letter_ids(&tx, &queue, &p.select).await? {
            let Some(dead) = dead_letter_read(&tx, &queue, id).await? else { continue };
            let task = columns::redriven_task(dead.task, p.now);
            tx.execute("DELETE FROM tombstones WHERE queue = $1 AND task_id = $2", &[&queue, &task.name.task])
                .await
                .map_err(backend)?;
            if insert_task(&tx, &task, None).await? == 0 {
                out.conflicts.push(id);
                continue;
            }
            tx.execute("DELETE FROM dead_letters WHERE id = $1", &[&id]).await.map_err(backend)?;
            out.tasks.push(task.name);
        }
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    async fn dead_letter_purge(&self, queue: &QueueName, select: DeadLetterSelect) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let ids = dead_letter_ids(&tx, &queue.to_string(), &select).await?;
        tx.execute("DELETE FROM dead_letters WHERE id = ANY($1)", &[&ids]).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(ids.len() as u64)
    }

    async fn dead_letter_expire(&self, before: Timestamp) -> StoreResult<u64> {
        let client = self.client().await?;
        client.execute("DELETE FROM dead_letters WHERE died_at < $1", &[&before.0]).await.map_err(backend)
    }

    async fn tombstone_expire(&self, now: Timestamp) -> StoreResult<u64> {
        let client = self.client().await?;
        let tombstones =
            client.execute("DELETE FROM tombstones WHERE expires_at <= $1", &[&now.0]).await.map_err(backend)?;
        let records = client.execute("DELETE FROM records WHERE expires_at <= $1", &[&now.0]).await.map_err(backend)?;
        let expired = client.query(jobs::EXPIRED, &[&now.0]).await.map_err(backend)?;
        for row in &expired {
            let id: String = row.try_get(0).map_err(backend)?;
            for statement in jobs::DELETE_JOB {
                client.execute(statement, &[&id]).await.map_err(backend)?;
            }
        }
        Ok(tombstones + records + expired.len() as u64)
    }

    async fn job_create(&self, p: JobCreate) -> StoreResult<JobCreated> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let job = &p.job;
        if let Some(key) = &job.idempotency_key {
            let existing =
                tx.query_opt("SELECT id FROM jobs WHERE idempotency_key = $1", &[key]).await.map_err(backend)?;
            if let Some(row) = existing {
                let id: String = row.try_get(0).map_err(backend)?;
                let job = job_read(&tx, &id, p.now).await?.ok_or(StoreError::JobNotFound)?;
                return Ok(JobCreated { job, existed: true });
            }
        }
        let queue = job.queue.to_string();
        if tx.query_opt("SELECT 1 FROM queues WHERE name = $1", &[&queue]).await.map_err(backend)?.is_none() {
            return Err(StoreError::QueueNotFound);
        }
        let inserted = tx
            .execute(
                jobs::JOB_INSERT,
                &[
                    &job.id,
                    &queue,
                    &jobs::labels_text(&job.labels),
                    &job.idempotency_key,
                    &job.policy.as_str(),
                    &job.callback_url,
                    &job.created_at.0,
                    &jobs::ttl_micros(job.result_ttl),
                    &job.total,
                ],
            )
            .await;
        match inserted {
            Ok(1) => {}
            // Another request with the same idempotency key won the race: answer with its job.
            Ok(_) => {
                drop(tx);
                let key = job.idempotency_key.clone().unwrap_or_default();
                let row = client
                    .query_one("SELECT id FROM jobs WHERE idempotency_key = $1", &[&key])
                    .await
                    .map_err(backend)?;
                let id: String = row.try_get(0).map_err(backend)?;
                let job = job_read(&client, &id, p.now).await?.ok_or(StoreError::JobNotFound)?;
                return Ok(JobCreated { job, existed: true });
            }
            Err(e) => return Err(backend(e)),
        }
        for (k, v) in &job.labels {
            tx.execute(jobs::LABEL_INSERT, &[&job.id, k, v]).await.map_err(backend)?;
        }
        tx.execute("UPDATE jobs SET seq = 1 WHERE id = $1", &[&job.id]).await.map_err(backend)?;
        job_event(&tx, &job.id, p.now, "created").await?;
        for t in &p.tasks {
            let task_queue = queue_name_of(&t.name);
            if tombstoned(&tx, &task_queue, &t.name.task, p.now).await? {
                return Err(StoreError::TaskTombstoned);
            }
            let n = insert_task(&tx, t, None).await?;
            if n == 0 {
                return Err(StoreError::TaskAlreadyExists);
            }
        }
        let created = job_read(&tx, &job.id, p.now).await?.ok_or(StoreError::JobNotFound)?;
        tx.commit().await.map_err(backend)?;
        Ok(JobCreated { job: created, existed: false })
    }

    async fn job_get(&self, id: &str, now: Timestamp) -> StoreResult<Option<Job>> {
        let client = self.client().await?;
        job_read(&client, id, now).await
    }

    async fn job_list(&self, p: JobList) -> StoreResult<Vec<Job>> {
        let client = self.client().await?;
        let (label_key, label_value) = p.label.clone().unzip();
        let (cursor_at, cursor_id) = p.after.clone().map_or((i64::MIN, String::new()), |(t, id)| (t.0, id));
        let rows = client
            .query(
                &jobs::list("::text"),
                &[
                    &p.status.map(|s| s.as_str()),
                    &p.queue.as_ref().map(|q| q.to_string()),
                    &label_key,
                    &label_value,
                    &p.created_after.map_or(i64::MIN, |t| t.0),
                    &p.created_before.map_or(i64::MAX, |t| t.0),
                    &cursor_at,
                    &cursor_id,
                    &(p.limit as i64),
                    &p.now.0,
                ],
            )
            .await
            .map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut job = jobs::job_from(row, 0)?;
            job.running =
                client.query_one(jobs::RUNNING, &[&job.id]).await.map_err(backend)?.try_get(0).map_err(backend)?;
            out.push(job);
        }
        Ok(out)
    }

    async fn job_cancel(&self, id: &str, now: Timestamp) -> StoreResult<Job> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        if !job_end(&tx, id, &jobs::cancel(), &[&id, &now.0], "cancelled", now).await? {
            return Err(job_refusal(&tx, id, now).await);
        }
        let job = job_read(&tx, id, now).await?.ok_or(StoreError::JobNotFound)?;
        tx.commit().await.map_err(backend)?;
        Ok(job)
    }

    async fn job_report(&self, p: JobReport) -> StoreResult<Job> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let (id, now) = (p.id.as_str(), p.now);
        let applied = match &p.kind {
            JobReportKind::Progress { progress: g, allow_decrease } => {
                job_change(
                    &tx,
                    id,
                    jobs::PROGRESS,
                    &[&id, &g.percent, &g.step, &g.step_number, &g.message, allow_decrease, &now.0],
                    "progress",
                    now,
                )
                .await?
            }
            JobReportKind::Result(result) => job_change(&tx, id, jobs::RESULT, &[&id, result], "result", now).await?,
            JobReportKind::Fail(error) => job_end(&tx, id, &jobs::fail(), &[&id, &now.0, error], "failed", now).await?,
        };
        if !applied {
            return Err(job_refusal(&tx, id, now).await);
        }
        let job = job_read(&tx, id, now).await?.ok_or(StoreError::JobNotFound)?;
        tx.commit().await.map_err(backend)?;
        Ok(job)
    }

    async fn job_events(&self, id: &str, after_seq: i64, limit: usize) -> StoreResult<Vec<JobEvent>> {
        let client = self.client().await?;
        let rows = client.query(&jobs::events(), &[&id, &after_seq, &(limit as i64)]).await.map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(JobEvent {
                    seq: r.try_get(0).map_err(backend)?,
                    at: Timestamp(r.try_get(1).map_err(backend)?),
                    kind: r.try_get(2).map_err(backend)?,
                    job: jobs::job_from(&Shifted { row: r, by: 3 }, 0)?,
                })
            })
            .collect()
    }

    async fn callback_claim(&self, now: Timestamp, until: Timestamp, limit: usize) -> StoreResult<Vec<Callback>> {
        callbacks::claim_due(&mut Pg(&self.client().await?), now, until, limit).await
    }

    async fn callback_record(&self, p: CallbackAttempt) -> StoreResult<()> {
        callbacks::record(&mut Pg(&self.client().await?), p).await
    }

    async fn callback_list(&self, job: &str) -> StoreResult<Vec<Callback>> {
        callbacks::list(&mut Pg(&self.client().await?), job).await
    }

    async fn record_get(&self, key: &str, now: Timestamp) -> StoreResult<Option<Record>> {
        records::get(&mut Pg(&self.client().await?), key, now).await
    }

    async fn record_list(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<Record>> {
        records::list(&mut Pg(&self.client().await?), prefix, now).await
    }

    async fn record_put(&self, p: RecordPut) -> StoreResult<Record> {
        records::put(&mut Pg(&self.client().await?), p).await
    }

    async fn record_delete(&self, key: &str) -> StoreResult<()> {
        records::delete(&mut Pg(&self.client().await?), key).await
    }

    async fn write_check(&self, now: Timestamp) -> StoreResult<()> {
        let client = self.client().await?;
        client.execute(columns::WRITE_CHECK, &[&now.0.to_string()]).await.map_err(backend)?;
        Ok(())
    }

    async fn store_maintain(&self, _now: Timestamp) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT relname::text, n_dead_tup, n_live_tup FROM pg_stat_user_tables \
                 WHERE schemaname = current_schema() AND relname = ANY($1)",
                &[&HOT_TABLES.to_vec()],
            )
            .await
            .map_err(backend)?;
        let mut done = Vec::new();
        for r in &rows {
            let table: String = r.try_get(0).map_err(backend)?;
            let dead: i64 = r.try_get(1).map_err(backend)?;
            let live: i64 = r.try_get(2).map_err(backend)?;
            if dead >= VACUUM_MIN_DEAD && dead * 10 >= live {
                // Only known table names reach here. SKIP_LOCKED: another node may be vacuuming.
                if let Some(t) = HOT_TABLES.iter().find(|t| **t == table) {
                    client.batch_execute(&format!("VACUUM (SKIP_LOCKED) {t}")).await.map_err(backend)?;
                    done.push(format!("vacuumed {t} ({dead} dead rows)"));
                }
            }
        }
        Ok(done)
    }

    async fn node_heartbeat(&self, p: NodeHeartbeat) -> StoreResult<()> {
        cluster::node_heartbeat(&mut Pg(&self.client().await?), p).await
    }

    async fn node_list(&self, alive_since: Timestamp) -> StoreResult<Vec<Node>> {
        cluster::node_list(&mut Pg(&self.client().await?), alive_since).await
    }

    async fn node_remove(&self, node_id: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        cluster::node_remove(&mut Pg(&tx), node_id).await?;
        tx.commit().await.map_err(backend)
    }

    async fn queue_owner_renew(&self, p: QueueOwnerRenew) -> StoreResult<Vec<QueueName>> {
        cluster::owner_renew(&mut Pg(&self.client().await?), p).await
    }

    async fn queue_owner_acquire(&self, p: QueueOwnerAcquire) -> StoreResult<bool> {
        cluster::owner_acquire(&mut Pg(&self.client().await?), p).await
    }

    async fn queue_owner_release(&self, p: QueueOwnerRelease) -> StoreResult<()> {
        cluster::owner_release(&mut Pg(&self.client().await?), p).await
    }

    async fn queue_owner_list(&self) -> StoreResult<Vec<QueueOwner>> {
        cluster::owner_list(&mut Pg(&self.client().await?)).await
    }
}

/// A row read from column `by` on, so the shared mapping can follow extra leading columns.
struct Shifted<'a> {
    row: &'a Row,
    by: usize,
}

impl Columns for Shifted<'_> {
    type Error = StoreError;

    fn int(&self, i: usize) -> StoreResult<i32> {
        self.row.int(i + self.by)
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i32>> {
        self.row.opt_int(i + self.by)
    }
    fn big(&self, i: usize) -> StoreResult<i64> {
        self.row.big(i + self.by)
    }
    fn opt_big(&self, i: usize) -> StoreResult<Option<i64>> {
        self.row.opt_big(i + self.by)
    }
    fn real(&self, i: usize) -> StoreResult<f64> {
        self.row.real(i + self.by)
    }
    fn text(&self, i: usize) -> StoreResult<String> {
        self.row.text(i + self.by)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        self.row.opt_text(i + self.by)
    }
    fn blob(&self, i: usize) -> StoreResult<Vec<u8>> {
        self.row.blob(i + self.by)
    }
    fn corrupt(what: &str, value: &str) -> StoreError {
        <Row as Columns>::corrupt(what, value)
    }
}

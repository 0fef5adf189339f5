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
use tokio_postgres_rustls::MakeRustlsConnect;

mod conn;
mod migrations;
mod tls;

use crate::callbacks;
use crate::cluster;
use crate::records;
use crate::{
    Callback, CallbackAttempt, ClaimedTask, DeadLetter, DeadLetterList, DeadLetterRedrive, DeadLetterSelect, JobCreate,
    JobCreated, JobEvent, JobList, JobReport, Node, NodeHeartbeat, Purged, QueueCreate, QueueDelete, QueueList,
    QueueOwner, QueueOwnerAcquire, QueueOwnerRelease, QueueOwnerRenew, QueuePurge, QueueSettingsPut, QueueStateSet,
    Record, RecordPut, Redriven, Store, StoreError, StoreResult, TaskClaim, TaskClaimByName, TaskCreate, TaskDelete,
    TaskFinish, TaskLease, TaskList, TaskLookup, TaskOutcome, TaskRelease, TaskRenew,
};
use crate::{dead_letters, jobs, queues, tasks, upkeep};
use conn::Pg;
use deadpool_postgres::GenericClient;
use tasklane_core::job::Job;

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

    /// Vacuum the hot tables once dead rows pile up; returns what was done, for the log.
    async fn vacuum_hot_tables(&self) -> StoreResult<Vec<String>> {
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
        migrations::migrate(&tx).await?;
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

    /// Terminate every connection whose `application_name` is `name` (for fault tests), or
    /// with `running_only` those of them running a statement; returns how many.
    pub async fn terminate_application(&self, name: &str, running_only: bool) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid() AND (NOT $2 OR state = 'active')",
                &[&name, &running_only],
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
    crate::sql::count_statement();
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
            jobs::tasks_done(&mut Pg(&tx), job, 1, 0, "", None, Timestamp(now)).await?;
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

/// Run `$body` with `$c` a `Conn` on one transaction of `$client`, committed if it succeeds.
macro_rules! transaction {
    ($client:expr, $c:ident => $body:expr) => {{
        let mut client = $client;
        let tx = client.transaction().await.map_err(backend)?;
        let $c = &mut Pg(&tx);
        let result = $body;
        if result.is_ok() {
            tx.commit().await.map_err(backend)?;
        }
        result
    }};
}

#[async_trait]
impl Store for PgStore {
    async fn queue_create(&self, p: QueueCreate) -> StoreResult<Queue> {
        queues::create(&mut Pg(&self.client().await?), p).await
    }

    async fn queue_settings_put(&self, p: QueueSettingsPut) -> StoreResult<Queue> {
        queues::settings_put(&mut Pg(&self.client().await?), p).await
    }

    async fn queue_get(&self, name: &QueueName) -> StoreResult<Option<Queue>> {
        queues::get(&mut Pg(&self.client().await?), name).await
    }

    async fn queue_list(&self, p: QueueList) -> StoreResult<Vec<Queue>> {
        queues::list(&mut Pg(&self.client().await?), p).await
    }

    async fn queue_state_set(&self, p: QueueStateSet) -> StoreResult<Queue> {
        queues::state_set(&mut Pg(&self.client().await?), p).await
    }

    async fn queue_purge(&self, p: QueuePurge) -> StoreResult<Purged> {
        transaction!(self.client().await?, c => queues::purge(c, p).await)
    }

    async fn queue_delete(&self, p: QueueDelete) -> StoreResult<Vec<String>> {
        transaction!(self.client().await?, c => queues::delete(c, p).await)
    }

    async fn task_create(&self, p: TaskCreate) -> StoreResult<Task> {
        tasks::create(&mut Pg(&self.client().await?), p).await
    }

    async fn task_create_many(&self, creates: Vec<TaskCreate>) -> Vec<StoreResult<Task>> {
        // One transaction for all, so a crash keeps all or none; each create still succeeds
        // or is refused alone (the insert skips a conflict instead of failing the transaction).
        let n = creates.len();
        let results = async { transaction!(self.client().await?, c => tasks::create_many(c, creates).await) }.await;
        tasks::all_failed(n, results)
    }

    async fn task_get(&self, name: &TaskName, now: Timestamp) -> StoreResult<TaskLookup> {
        tasks::get(&mut Pg(&self.client().await?), name, now).await
    }

    async fn task_list(&self, p: TaskList) -> StoreResult<Vec<Task>> {
        tasks::list(&mut Pg(&self.client().await?), p).await
    }

    async fn task_delete(&self, p: TaskDelete) -> StoreResult<Option<String>> {
        transaction!(self.client().await?, c => tasks::delete(c, p).await)
    }

    async fn task_claim(&self, p: TaskClaim) -> StoreResult<Vec<ClaimedTask>> {
        let client = self.bookkeeping_client().await?;
        let claimed = tasks::claim(&mut Pg(&client), &p).await?;
        if jobs::any_of_jobs(&claimed) {
            transaction!(client, c => jobs::started(c, &claimed, p.now).await)?;
        }
        Ok(claimed)
    }

    async fn task_lease(&self, p: TaskLease) -> StoreResult<Vec<ClaimedTask>> {
        let client = self.bookkeeping_client().await?;
        let leased = tasks::lease(&mut Pg(&client), &p).await?;
        if jobs::any_of_jobs(&leased) {
            transaction!(client, c => jobs::started(c, &leased, p.now).await)?;
        }
        Ok(leased)
    }

    async fn task_renew(&self, p: TaskRenew) -> StoreResult<bool> {
        tasks::renew(&mut Pg(&self.bookkeeping_client().await?), p).await
    }

    async fn task_release(&self, p: TaskRelease) -> StoreResult<bool> {
        tasks::release(&mut Pg(&self.bookkeeping_client().await?), p).await
    }

    async fn task_claim_by_name(&self, p: TaskClaimByName) -> StoreResult<ClaimedTask> {
        tasks::claim_by_name(&mut Pg(&self.client().await?), p).await
    }

    async fn task_finish_job(&self, p: TaskFinish) -> StoreResult<Option<Option<String>>> {
        // Successes are group-committed by the finisher; other outcomes are rarer.
        if let TaskOutcome::Succeeded { tombstone_until } = &p.outcome {
            return self.finish_success(&p, *tombstone_until).await;
        }
        transaction!(self.client().await?, c => tasks::finish(c, &p).await)
    }

    async fn task_next_due(&self, queue: &QueueName) -> StoreResult<Option<Timestamp>> {
        tasks::next_due(&mut Pg(&self.client().await?), queue).await
    }

    async fn task_count(&self, queue: &QueueName) -> StoreResult<u64> {
        tasks::count(&mut Pg(&self.client().await?), queue).await
    }

    async fn task_lease_release(&self, queue: Option<QueueName>, now: Timestamp) -> StoreResult<u64> {
        tasks::lease_release(&mut Pg(&self.client().await?), queue, now).await
    }

    async fn dead_letter_list(&self, p: DeadLetterList) -> StoreResult<Vec<DeadLetter>> {
        dead_letters::list(&mut Pg(&self.client().await?), p).await
    }

    async fn dead_letter_get(&self, queue: &QueueName, id: i64) -> StoreResult<Option<DeadLetter>> {
        dead_letters::get(&mut Pg(&self.client().await?), queue, id).await
    }

    async fn dead_letter_redrive(&self, p: DeadLetterRedrive) -> StoreResult<Redriven> {
        transaction!(self.client().await?, c => dead_letters::redrive(c, p).await)
    }

    async fn dead_letter_purge(&self, queue: &QueueName, select: DeadLetterSelect) -> StoreResult<u64> {
        transaction!(self.client().await?, c => dead_letters::purge(c, queue, select).await)
    }

    async fn dead_letter_expire(&self, before: Timestamp) -> StoreResult<u64> {
        dead_letters::expire(&mut Pg(&self.client().await?), before).await
    }

    async fn tombstone_expire(&self, now: Timestamp) -> StoreResult<u64> {
        transaction!(self.client().await?, c => upkeep::expire(c, now).await)
    }

    async fn job_create(&self, p: JobCreate) -> StoreResult<JobCreated> {
        transaction!(self.client().await?, c => jobs::create(c, &p).await)
    }

    async fn job_get(&self, id: &str, now: Timestamp) -> StoreResult<Option<Job>> {
        jobs::read(&mut Pg(&self.client().await?), id, now).await
    }

    async fn job_list(&self, p: JobList) -> StoreResult<Vec<Job>> {
        jobs::list(&mut Pg(&self.client().await?), &p).await
    }

    async fn job_cancel(&self, id: &str, now: Timestamp) -> StoreResult<Job> {
        transaction!(self.client().await?, c => jobs::cancel(c, id, now).await)
    }

    async fn job_report(&self, p: JobReport) -> StoreResult<Job> {
        transaction!(self.client().await?, c => jobs::report(c, &p).await)
    }

    async fn job_events(&self, id: &str, after_seq: i64, limit: usize) -> StoreResult<Vec<JobEvent>> {
        jobs::events(&mut Pg(&self.client().await?), id, after_seq, limit).await
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
        upkeep::write_check(&mut Pg(&self.client().await?), now).await
    }

    async fn store_maintain(&self, _now: Timestamp) -> StoreResult<Vec<String>> {
        self.vacuum_hot_tables().await
    }

    async fn node_heartbeat(&self, p: NodeHeartbeat) -> StoreResult<()> {
        cluster::node_heartbeat(&mut Pg(&self.client().await?), p).await
    }

    async fn node_list(&self, alive_since: Timestamp) -> StoreResult<Vec<Node>> {
        cluster::node_list(&mut Pg(&self.client().await?), alive_since).await
    }

    async fn node_remove(&self, node_id: &str) -> StoreResult<()> {
        transaction!(self.client().await?, c => cluster::node_remove(c, node_id).await)
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

//! The store conformance suite: every case runs against every backend.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions panic on purpose

mod cases;

use std::path::PathBuf;
use std::sync::Arc;

use tasklane_store::{PgStore, SqliteStore, Store};

/// A fresh database for one test: a SQLite file in its own directory, or a PostgreSQL schema.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    dir: Option<PathBuf>,
    pg: Option<(PgStore, String)>,
}

impl Fixture {
    pub async fn cleanup(self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((pg, schema)) = &self.pg {
            let _ = pg.drop_schema(schema).await;
        }
    }
}

pub fn fresh_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tasklane-store-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    // A directory left by an earlier run with the same process id starts empty again.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// Poll `check` until it holds, or panic after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub async fn sqlite() -> Option<Fixture> {
    let dir = fresh_dir("sqlite");
    let store = SqliteStore::open(dir.join("tasklane.db")).expect("open sqlite store");
    Some(Fixture { store: Arc::new(store), dir: Some(dir), pg: None })
}

/// The PostgreSQL backend, in a fresh schema.
pub async fn postgres() -> Option<Fixture> {
    let url = tasklane_store::test_database_url()?;
    let schema = tasklane_store::scratch_schema("t");
    let store = PgStore::connect(&url, Some(&schema)).await.unwrap_or_else(|e| {
        panic!("cannot use PostgreSQL at {url}: {e}; set TASKLANE_TEST_DATABASE_URL, or to none to skip these tests")
    });
    Some(Fixture { store: Arc::new(store.clone()), dir: None, pg: Some((store, schema)) })
}

macro_rules! conformance {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(fixture) = super::$backend().await else { return };
                    super::cases::$case(fixture.store.clone()).await;
                    fixture.cleanup().await;
                }
            )*
        }
    };
}

macro_rules! every_case {
    ($($backend:ident),*) => {
        $(conformance!($backend:
    queue_create_get_list,
    queue_create_twice_is_refused,
    queue_settings_put_keeps_state_and_upserts,
    queue_state_set_and_missing_queue,
    queue_purge_deletes_older_tasks_only,
    queue_delete_removes_tasks,
    task_create_needs_queue_and_unique_name,
    task_names_are_tombstoned_for_the_window,
    task_create_many_settles_each_create_alone,
    task_finish_job_names_the_job_of_a_recorded_outcome,
    task_list_pages_by_name,
    task_claim_takes_due_tasks_in_order,
    task_claim_respects_limit_and_leases,
    task_claims_come_due_first_then_in_creation_order,
    an_outcome_costs_a_fixed_number_of_statements,
    task_claim_takes_nothing_from_a_paused_queue,
    task_finish_is_fenced_by_lease,
    task_retry_reschedules_and_counts,
    task_expired_lease_is_claimed_again,
    task_give_up_moves_to_dead_letters,
    task_claim_by_name_ignores_schedule,
    task_delete_and_lookup,
    concurrent_creates_are_all_committed,
    concurrent_finishes_are_each_fenced,
    task_lease_release_requeues_leased_tasks_in_their_order,
    a_claim_leases_only_for_the_node_that_owns_the_queue,
    nodes_heartbeat_list_and_leave,
    queue_ownership_is_exclusive_until_the_lease_ends,
    records_are_versioned_conditional_and_expire,
    jobs_count_outcomes_and_settle_with_events_in_order,
    jobs_fail_fast_cancels_the_tasks_not_started,
    jobs_end_when_their_tasks_are_removed,
    a_job_s_concurrent_outcomes_are_each_counted_and_recorded,
    jobs_take_reports_and_cancel,
    jobs_are_created_whole_or_not_at_all_and_idempotently,
    jobs_list_by_filter_and_expire,
    dead_letters_keep_every_attempt_and_can_be_redriven_or_purged,
    large_bodies_come_back_whole_everywhere,
    callbacks_are_queued_with_the_outcome_and_delivered_once,
    pull_tasks_are_leased_by_tag_renewed_released_and_fenced,
);)*
    };
}

every_case!(sqlite, postgres);

#[tokio::test]
async fn sqlite_data_survives_reopen() {
    let dir = fresh_dir("reopen");
    let path = dir.join("tasklane.db");
    {
        let store = SqliteStore::open(&path).expect("open");
        cases::seed_queue_and_task(&store).await;
        store.close();
    }
    let store = SqliteStore::open(&path).expect("reopen");
    cases::check_seeded(&store).await;
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the previous release recorded: its schema is migration 1, which is never edited.
const PREVIOUS_VERSION: &str = "INSERT INTO meta (key, value) VALUES ('schema_version', '1')";

/// A database made by the previous release (its schema as it shipped, recording version 1,
/// with a queue and a task in it) opens on this one: the newer migrations run once, under
/// the store's lock, and its rows work. A database from a newer release is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrades_a_database_of_the_previous_release() {
    let dir = fresh_dir("upgrade");
    let path = dir.join("tasklane.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../../src/sqlite/migrations/001_first_release.sql")).unwrap();
        conn.execute_batch(include_str!("previous/sqlite_added.sql")).unwrap();
        conn.execute_batch(PREVIOUS_VERSION).unwrap();
        conn.execute_batch(&cases::PREVIOUS_ROWS.replace("{body}", "X'6869'")).unwrap();
    }
    let version = |path: &std::path::Path| -> String {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(version(&path), "1");
    let store = SqliteStore::open(&path).unwrap();
    cases::previous_release_rows_work(Arc::new(store.clone())).await;
    store.close();
    assert_eq!(version(&path), "2");
    // Opening again migrates nothing and keeps everything.
    let store = SqliteStore::open(&path).unwrap();
    assert!(
        store
            .queue_get(&tasklane_core::QueueName::parse("projects/p/locations/l/queues/old").unwrap())
            .await
            .unwrap()
            .is_some()
    );
    store.close();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'", [])
        .unwrap();
    let newer = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(newer.contains("schema version 9, newer than this tasklane knows (2)"), "{newer}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same on PostgreSQL, whose second migration also puts the claim order in the due index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrades_a_database_of_the_previous_release() {
    let Some(url) = tasklane_store::test_database_url() else { return };
    let schema = tasklane_store::scratch_schema("upgrade");
    let (raw, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    raw.batch_execute(&format!("CREATE SCHEMA {schema}; SET search_path TO {schema}")).await.unwrap();
    raw.batch_execute(include_str!("../../src/postgres/migrations/001_first_release.sql")).await.unwrap();
    raw.batch_execute(PREVIOUS_VERSION).await.unwrap();
    raw.batch_execute(&cases::PREVIOUS_ROWS.replace("{body}", "'\\x6869'")).await.unwrap();
    let version = || async {
        let row = raw.query_one("SELECT value FROM meta WHERE key = 'schema_version'", &[]).await.unwrap();
        row.get::<_, String>(0)
    };
    let due_index = || async {
        let row = raw
            .query_one(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'tasks_due'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(version().await, "1");
    assert!(due_index().await.ends_with("(queue, due_at)"), "{}", due_index().await);
    let store = PgStore::connect(&url, Some(&schema)).await.unwrap();
    cases::previous_release_rows_work(Arc::new(store.clone())).await;
    assert_eq!(version().await, "2");
    assert!(due_index().await.ends_with("(queue, due_at, id)"), "{}", due_index().await);
    // Two nodes starting at once: one migrates, the other finds nothing left to do.
    let (a, b) = tokio::join!(PgStore::connect(&url, Some(&schema)), PgStore::connect(&url, Some(&schema)));
    a.unwrap();
    b.unwrap();
    raw.batch_execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'").await.unwrap();
    let newer = PgStore::connect(&url, Some(&schema)).await.unwrap_err().to_string();
    assert!(newer.contains("schema version 9, newer than this tasklane knows (2)"), "{newer}");
    let _ = store.drop_schema(&schema).await;
}

/// Churn on PostgreSQL: rounds of tasks created, leased and finished. With maintenance
/// between rounds the hot table's size levels off instead of growing with every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_churn_does_not_grow_the_hot_table() {
    let Some(fixture) = postgres().await else { return };
    let Some((pg, _)) = fixture.pg.clone() else { unreachable!("the postgres fixture has a PgStore") };
    let sizes = cases::churn_rounds(fixture.store.clone(), 8, 2000, || {
        let pg = pg.clone();
        async move { pg.relation_size("tasks").await.unwrap() }
    })
    .await;
    eprintln!("tasks table size after each round: {sizes:?}");
    assert!(sizes[7] <= sizes[2] + sizes[2] / 2, "the hot table kept growing under churn: {sizes:?}");
    fixture.cleanup().await;
}

/// `sslmode` as libpq reads it, against the local server's own certificate: `require`
/// encrypts, `verify-full` checks chain and name, `verify-ca` the chain only, and a wrong
/// root or name is refused.
#[tokio::test]
async fn postgres_connections_use_tls_as_sslmode_asks() {
    let Some(url) = tasklane_store::test_database_url() else { return };
    let plain = PgStore::connect(&url, None).await.expect("connect");
    let (encrypted, ssl, cert_file) = plain.tls_status().await.expect("read the TLS status");
    assert!(!encrypted, "no sslmode: cleartext, as before");
    if ssl != "on" {
        eprintln!("this PostgreSQL server has ssl = {ssl}: skipping the TLS cases");
        return;
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let required = PgStore::connect(&format!("{url}{sep}sslmode=require"), None).await.expect("sslmode=require");
    assert!(required.tls_status().await.unwrap().0, "sslmode=require encrypts");

    // The local server's certificate is self-signed for localhost: it is its own root.
    let root = std::fs::read(&cert_file).map(|_| cert_file.clone());
    let Ok(root) = root else {
        eprintln!("cannot read the server's certificate {cert_file}: skipping the verify cases");
        return;
    };
    let on_localhost = url.replacen("@127.0.0.1", "@localhost", 1);
    let full = format!("{on_localhost}{sep}sslmode=verify-full&sslrootcert={root}");
    let store = PgStore::connect(&full, None).await.expect("verify-full with the server's root and name");
    assert!(store.tls_status().await.unwrap().0);
    let wrong_name = format!("{url}{sep}sslmode=verify-full&sslrootcert={root}");
    if url.contains("@127.0.0.1") {
        let Err(err) = PgStore::connect(&wrong_name, None).await else {
            panic!("127.0.0.1 is not the certificate's name: verify-full must refuse it");
        };
        assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
        let ca = format!("{url}{sep}sslmode=verify-ca&sslrootcert={root}");
        assert!(PgStore::connect(&ca, None).await.expect("verify-ca ignores the name").tls_status().await.unwrap().0);
    }
    let other_root = fresh_dir("tls").join("other.pem");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&other_root, other.cert.pem()).unwrap();
    let wrong_root = format!("{on_localhost}{sep}sslmode=verify-full&sslrootcert={}", other_root.display());
    assert!(PgStore::connect(&wrong_root, None).await.is_err(), "a certificate from another root is refused");
}

/// PostgreSQL terminating a connection (SQLSTATE 57P01, as at a restart or failover) under
/// a statement in flight is the database being unavailable, which clients retry, not an
/// internal error.
#[tokio::test]
async fn postgres_terminating_a_statement_in_flight_reads_as_unavailable() {
    let Some(url) = tasklane_store::test_database_url() else { return };
    let tag = format!("tl57_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = PgStore::connect(&format!("{url}{sep}application_name={tag}"), None).await.expect("connect");
    let admin = PgStore::connect(&url, None).await.expect("connect");
    let busy = tokio::spawn({
        let store = store.clone();
        async move { store.hold(30.0).await }
    });
    // Terminate the store's connection once it is running the statement (an idle one, left
    // in the pool by the start, would fail the next call with another error).
    eventually("the store's running statement to be terminated", std::time::Duration::from_secs(5), || async {
        admin.terminate_application(&tag, true).await.expect("terminate") > 0
    })
    .await;
    let err = busy.await.expect("join").expect_err("a terminated statement fails");
    assert!(matches!(err, tasklane_store::StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("terminating connection"), "{err}");
}

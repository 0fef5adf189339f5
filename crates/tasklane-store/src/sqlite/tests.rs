//! The embedded backend's own machinery under test: group commit, isolation of a failed
//! write, a large body kept out of the rows a claim rewrites, and the dead-letter upgrade.

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
        // As the release before AUTOINCREMENT made it: version 1, ids reused.
        conn.execute_batch(&migrations::FIRST_RELEASE.replace("PRIMARY KEY AUTOINCREMENT", "PRIMARY KEY")).unwrap();
        conn.execute_batch("INSERT INTO meta (key, value) VALUES ('schema_version', '1')").unwrap();
        let insert = "INSERT INTO dead_letters (id, died_at, queue, task_id, url, method, headers, body, \
             schedule_time, create_time, dispatch_deadline_us, dispatch_count, response_count, execution_count, \
             last_http_status) VALUES (?1, 1, 'q', ?2, 'http://x/', 'POST', '', x'', 0, 0, 0, 1, 1, 1, 500)";
        conn.execute(insert, rusqlite::params![1, "a"]).unwrap();
        conn.execute(insert, rusqlite::params![7, "b"]).unwrap();
        // The newest letter goes: without AUTOINCREMENT its id would be given again.
        conn.execute("DELETE FROM dead_letters WHERE id = 7", []).unwrap();
        conn.execute(insert, rusqlite::params![7, "c"]).unwrap();
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
    migrations::migrate(&conn).unwrap();
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
    assert!(ready(tasks::insert_task(&mut Lite(&conn), &task, None)).unwrap());
    let _: (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    let claim = TaskClaim { queue: name, limit: 10, grace: std::time::Duration::ZERO, now: Timestamp(1), owner: None };
    let claimed: Vec<Vec<u8>> =
        ready(tasks::claim(&mut Lite(&conn), &claim)).unwrap().into_iter().map(|c| c.task.http_request.body).collect();
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

//! The embedded store's migrations. Number 1 is the schema as it stood when versions began
//! to be counted; number 2 patches databases made before that, which lack columns added
//! since and reuse dead-letter ids (SQLite has no `ADD COLUMN IF NOT EXISTS`, so it looks
//! first). Each later change of the schema is a new number here, never an edit of an old one.

use rusqlite::Connection;

use super::backend;
use crate::columns::Columns;
use crate::sql::{Conn, args, ready};
use crate::{StoreError, StoreResult, schema};

use super::conn::Lite;

enum Migration {
    Sql(&'static str),
    Code(fn(&Connection) -> StoreResult<()>),
}

/// Migration 1.
pub(super) const FIRST_RELEASE: &str = include_str!("001_first_release.sql");

const MIGRATIONS: [Migration; 2] = [
    Migration::Sql(FIRST_RELEASE),
    Migration::Code(|conn| {
        add_missing_columns(conn).map_err(backend)?;
        dead_letter_ids_never_reused(conn)
    }),
];

/// Bring the database to the latest schema in one transaction. `BEGIN IMMEDIATE` takes the
/// write lock first, so two processes opening one file migrate it once.
pub(super) fn migrate(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    let result = apply(conn);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).map_err(backend)?;
    result
}

fn apply(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(schema::META).map_err(backend)?;
    let recorded = ready(Lite(conn).query_opt(schema::VERSION_GET, args![], |r| r.text(0)))?;
    let latest = MIGRATIONS.len() as u32;
    let pending = schema::pending(recorded.as_deref(), latest)?;
    if pending.is_empty() {
        return Ok(());
    }
    for n in pending {
        match &MIGRATIONS[n as usize - 1] {
            Migration::Sql(statements) => conn.execute_batch(statements).map_err(backend)?,
            Migration::Code(run) => run(conn)?,
        }
    }
    ready(Lite(conn).execute(schema::VERSION_SET, args![&latest.to_string()])).map(|_| ())
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
        "{rebuilt}; INSERT INTO dead_letters_rebuilt SELECT * FROM dead_letters; DROP TABLE dead_letters; \
         ALTER TABLE dead_letters_rebuilt RENAME TO dead_letters; \
         CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, id);"
    ))
    .map_err(backend)
}

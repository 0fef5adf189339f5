//! SQLite's side of the store's seams: `Columns` for its rows, and `Conn` over a connection
//! (the writer's, inside its batch transaction, or a reader's).

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, Row, ToSql};

use super::backend;
use crate::StoreResult;
use crate::columns::Columns;
use crate::sql::{Arg, Conn, Dialect};

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Arg::Int(v) => v.to_sql(),
            Arg::OptInt(v) => v.to_sql(),
            Arg::Big(v) => v.to_sql(),
            Arg::OptBig(v) => v.to_sql(),
            Arg::Real(v) => v.to_sql(),
            Arg::Bool(v) => v.to_sql(),
            Arg::Text(v) => v.to_sql(),
            Arg::OptText(v) => v.to_sql(),
            Arg::Blob(v) => v.to_sql(),
        }
    }
}

/// A row read through `Conn`, whose errors are the store's.
pub(crate) struct LiteRow<'r>(&'r Row<'r>);

impl Columns for LiteRow<'_> {
    type Error = crate::StoreError;

    fn int(&self, i: usize) -> StoreResult<i32> {
        self.0.get(i).map_err(backend)
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i32>> {
        self.0.get(i).map_err(backend)
    }
    fn big(&self, i: usize) -> StoreResult<i64> {
        self.0.get(i).map_err(backend)
    }
    fn opt_big(&self, i: usize) -> StoreResult<Option<i64>> {
        self.0.get(i).map_err(backend)
    }
    fn real(&self, i: usize) -> StoreResult<f64> {
        self.0.get(i).map_err(backend)
    }
    fn text(&self, i: usize) -> StoreResult<String> {
        self.0.get(i).map_err(backend)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        self.0.get(i).map_err(backend)
    }
    fn blob(&self, i: usize) -> StoreResult<Vec<u8>> {
        self.0.get(i).map_err(backend)
    }
    fn corrupt(what: &str, value: &str) -> crate::StoreError {
        crate::StoreError::Backend(format!("stored {what} {value:?} is not valid"))
    }
}

/// `Conn` over a SQLite connection. Statements are prepared once per connection (SQLite
/// reads `$n` as `?n`).
pub(crate) struct Lite<'c>(pub &'c Connection);

/// Each statement's text as SQLite reads it, converted once per process. Statement texts are
/// `'static`, so a text's address and length name it for good, and there are as many as the store has
/// statements.
static CONVERTED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<(usize, usize), &'static str>>> =
    std::sync::LazyLock::new(Default::default);

/// `sql` with `$n` placeholders written `?n`.
fn converted(sql: &'static str) -> &'static str {
    let mut texts = CONVERTED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    texts.entry((sql.as_ptr() as usize, sql.len())).or_insert_with(|| sql.replace('$', "?").leak())
}

impl Lite<'_> {
    fn prepare(&self, sql: &'static str) -> StoreResult<rusqlite::CachedStatement<'_>> {
        crate::sql::count_statement();
        self.0.prepare_cached(converted(sql)).map_err(backend)
    }
}

impl Conn for Lite<'_> {
    type Row<'r> = LiteRow<'r>;

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        let mut statement = self.prepare(sql)?;
        statement.execute(rusqlite::params_from_iter(args)).map(|n| n as u64).map_err(backend)
    }

    async fn query<T>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
        mut map: impl FnMut(&LiteRow<'_>) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut statement = self.prepare(sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(args)).map_err(backend)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(backend)? {
            out.push(map(&LiteRow(row))?);
        }
        Ok(out)
    }
}

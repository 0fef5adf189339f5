//! The seam every concern of the store is written over: `Conn`, a connection that runs a
//! statement with arguments and maps the rows it gives. A concern module (records, the
//! cluster's tables, …) writes each statement once, with PostgreSQL's `$n` placeholders
//! (SQLite reads them as `?n`), and its logic once, as an async function generic over
//! `Conn`. Each backend implements `Conn` over its own connection and decides where a call's
//! transaction begins and ends; nothing else about a database leaks into a concern.
//!
//! SQLite's statements never wait, so its `Conn` futures are ready when first polled and
//! its writer thread runs a concern with `ready`, without a runtime.

use std::future::Future;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use crate::columns::Columns;
use crate::{StoreError, StoreResult};

/// A value bound to a statement's placeholder, typed as the column it meets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(i32),
    OptInt(Option<i32>),
    Big(i64),
    OptBig(Option<i64>),
    Real(f64),
    Bool(bool),
    Text(&'a str),
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
}

impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::Int(v)
    }
}
impl From<Option<i32>> for Arg<'_> {
    fn from(v: Option<i32>) -> Self {
        Arg::OptInt(v)
    }
}
impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Big(v)
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::OptBig(v)
    }
}
impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Real(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptText(v)
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Blob(v)
    }
}

/// The arguments of a statement, each converted by `Arg::from`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        (&[$($crate::sql::Arg::from($value)),*] as &[$crate::sql::Arg<'_>])
    };
}
pub(crate) use args;

/// Which SQL a connection speaks, for the few statements whose text differs (row locks,
/// arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement written once whose text differs by dialect, built the first time each
/// dialect asks for it.
pub(crate) struct Dialects {
    sqlite: LazyLock<String>,
    postgres: LazyLock<String>,
}

impl Dialects {
    pub const fn new(sqlite: fn() -> String, postgres: fn() -> String) -> Dialects {
        Dialects { sqlite: LazyLock::new(sqlite), postgres: LazyLock::new(postgres) }
    }

    pub fn sqlite(&'static self) -> &'static str {
        &self.sqlite
    }

    /// The text for the dialect `c` speaks.
    pub fn of(&'static self, c: &impl Conn) -> &'static str {
        match c.dialect() {
            Dialect::Sqlite => &self.sqlite,
            Dialect::Postgres => &self.postgres,
        }
    }
}

/// A connection (or a transaction on one) that runs the store's statements. A statement's
/// text is fixed: it never embeds a value, so each backend can keep it prepared.
pub(crate) trait Conn {
    type Row<'r>: Columns<Error = StoreError>;

    fn dialect(&self) -> Dialect;

    /// Run a statement; how many rows it changed.
    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64>;

    /// Run a statement and map each row it gives, in the order the database gives them.
    async fn query<T>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
        map: impl FnMut(&Self::Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>>;

    /// The first row a statement gives, if any.
    async fn query_opt<T>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
        map: impl FnMut(&Self::Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        Ok(self.query(sql, args, map).await?.into_iter().next())
    }
}

static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// How many statements this process has run through the store, on either backend (every
/// statement a backend prepares to run counts; transaction control does not). Tests read it
/// before and after a call to count what the call costs.
pub fn statements_run() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

/// Count one statement; each backend calls it where it prepares one.
pub(crate) fn count_statement() {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
}

/// The result of a future that is ready when first polled, as every SQLite `Conn` call is.
pub(crate) fn ready<T>(f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(StoreError::Backend("a statement on the embedded store waited".into())),
    }
}

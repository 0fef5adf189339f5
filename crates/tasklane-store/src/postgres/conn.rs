//! PostgreSQL's side of the store's seams: `Columns` for its rows, and `Conn` over a pooled
//! connection or a transaction on one.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{backend, cached};
use crate::columns::Columns;
use crate::sql::{Arg, Conn, Dialect};
use crate::{StoreError, StoreResult};

impl Columns for Row {
    type Error = StoreError;

    fn int(&self, i: usize) -> StoreResult<i32> {
        self.try_get(i).map_err(backend)
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i32>> {
        self.try_get(i).map_err(backend)
    }
    fn big(&self, i: usize) -> StoreResult<i64> {
        self.try_get(i).map_err(backend)
    }
    fn opt_big(&self, i: usize) -> StoreResult<Option<i64>> {
        self.try_get(i).map_err(backend)
    }
    fn real(&self, i: usize) -> StoreResult<f64> {
        self.try_get(i).map_err(backend)
    }
    fn text(&self, i: usize) -> StoreResult<String> {
        self.try_get(i).map_err(backend)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        self.try_get(i).map_err(backend)
    }
    fn blob(&self, i: usize) -> StoreResult<Vec<u8>> {
        self.try_get(i).map_err(backend)
    }
    fn corrupt(what: &str, value: &str) -> StoreError {
        StoreError::Backend(format!("stored {what} {value:?} is not valid"))
    }
}

/// Each argument as the driver's parameter, typed as the column it meets.
fn params<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter()
        .map(|a| -> &(dyn ToSql + Sync) {
            match a {
                Arg::Int(v) => v,
                Arg::OptInt(v) => v,
                Arg::Big(v) => v,
                Arg::OptBig(v) => v,
                Arg::Real(v) => v,
                Arg::Bool(v) => v,
                Arg::Text(v) => v,
                Arg::OptText(v) => v,
                Arg::Blob(v) => v,
            }
        })
        .collect()
}

/// `Conn` over a PostgreSQL client or transaction. Statements come from the connection's
/// cache, so each is parsed and planned once per connection.
pub(crate) struct Pg<'c, C>(pub &'c C);

impl<C: GenericClient> Conn for Pg<'_, C> {
    type Row<'r> = Row;

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        let statement = cached(self.0, sql).await?;
        self.0.execute(&statement, &params(args)).await.map_err(backend)
    }

    async fn query<T>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
        map: impl FnMut(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let statement = cached(self.0, sql).await?;
        let rows = self.0.query(&statement, &params(args)).await.map_err(backend)?;
        rows.iter().map(map).collect()
    }
}

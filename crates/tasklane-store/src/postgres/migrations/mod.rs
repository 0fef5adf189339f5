//! PostgreSQL's migrations. Number 1 is the schema as it stood when versions began to be
//! counted (its `IF NOT EXISTS` clauses also patch databases older than that); each later
//! change of the schema is a new number here, never an edit of an old one.

use deadpool_postgres::GenericClient;

use super::backend;
use super::conn::Pg;
use crate::columns::Columns;
use crate::sql::{Conn, args};
use crate::{StoreResult, schema};

const MIGRATIONS: [&str; 2] = [include_str!("001_first_release.sql"), include_str!("002_claim_order_index.sql")];

/// Any number, as long as every tasklane uses the same one: "tasklane" in ASCII.
const MIGRATION_LOCK: i64 = 0x7461_736b_6c61_6e65;

/// Bring the database to the latest schema in `tx`, under a lock held until it ends, so
/// nodes starting together migrate it once.
pub(super) async fn migrate(tx: &deadpool_postgres::Transaction<'_>) -> StoreResult<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(backend)?;
    tx.batch_execute(schema::META).await.map_err(backend)?;
    let recorded = Pg(tx).query_opt(schema::VERSION_GET, args![], |r| r.text(0)).await?;
    let latest = MIGRATIONS.len() as u32;
    let pending = schema::pending(recorded.as_deref(), latest)?;
    if pending.is_empty() {
        return Ok(());
    }
    for n in pending {
        tx.batch_execute(MIGRATIONS[n as usize - 1]).await.map_err(backend)?;
    }
    Pg(tx).execute(schema::VERSION_SET, args![&latest.to_string()]).await.map(|_| ())
}

//! What the maintenance loop runs on every backend: expiry of tombstones, records and jobs,
//! and the small write that tells readiness the store can still write.

use tasklane_core::Timestamp;

use crate::sql::{Conn, args};
use crate::{StoreResult, jobs};

const TOMBSTONES: &str = "DELETE FROM tombstones WHERE expires_at <= $1";
const RECORDS: &str = "DELETE FROM records WHERE expires_at <= $1";
/// `$1` now, as text.
const WRITE_CHECK: &str =
    "INSERT INTO meta (key, value) VALUES ('write_check', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// Delete expired tombstones, records and jobs; how many.
pub(crate) async fn expire(c: &mut impl Conn, now: Timestamp) -> StoreResult<u64> {
    let tombstones = c.execute(TOMBSTONES, args![now.0]).await?;
    let records = c.execute(RECORDS, args![now.0]).await?;
    Ok(tombstones + records + jobs::expire(c, now).await?)
}

pub(crate) async fn write_check(c: &mut impl Conn, now: Timestamp) -> StoreResult<()> {
    c.execute(WRITE_CHECK, args![&now.0.to_string()]).await.map(|_| ())
}

//! Records: small named documents the server keeps beside the tables (IAM policies, CMEK
//! configs, batch operations, signing keys, queue-name tombstones), each write conditional
//! on the key being absent or on the version the writer read.

use tasklane_core::Timestamp;

use crate::columns::Columns;
use crate::sql::{Conn, args};
use crate::{StoreError, StoreResult};

/// A small named document the server keeps for the API edge (an IAM policy, a CMEK
/// config, a batch operation, the token signing key). The store never reads `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    /// 1 when created, one more on every write: an etag for read-modify-write.
    pub version: i64,
}

/// When a `record_put` may write. A record past its `expires_at` counts as absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCondition {
    Always,
    Absent,
    Version(i64),
}

#[derive(Debug, Clone)]
pub struct RecordPut {
    pub key: String,
    pub value: Vec<u8>,
    pub condition: RecordCondition,
    pub expires_at: Option<Timestamp>,
    pub now: Timestamp,
}

/// `record_put`, one statement per condition, in the SQL both backends speak (SQLite reads
/// `$n` as `?n`); parameters: key, value, expires_at, then now (not for `Always`) and the
/// expected version (for `Version`). Each returns the
/// new version, or no row when the condition failed. A record past its expiry counts as absent.
const RECORD_PUT_ALWAYS: &str = "INSERT INTO records (key, value, version, expires_at) VALUES ($1, $2, 1, $3) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = records.version + 1, \
     expires_at = excluded.expires_at RETURNING version";
const RECORD_PUT_ABSENT: &str = "INSERT INTO records (key, value, version, expires_at) VALUES ($1, $2, 1, $3) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = records.version + 1, \
     expires_at = excluded.expires_at WHERE records.expires_at IS NOT NULL AND records.expires_at <= $4 \
     RETURNING version";
const RECORD_PUT_VERSION: &str = "UPDATE records SET value = $2, version = version + 1, expires_at = $3 \
     WHERE key = $1 AND (expires_at IS NULL OR expires_at > $4) AND version = $5 RETURNING version";
const RECORD_GET: &str =
    "SELECT value, version FROM records WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)";
/// The live records whose key starts with `$1`, by key. The records table holds a few
/// small documents, so the prefix test needs no index.
const RECORD_LIST: &str = "SELECT key, value, version FROM records \
     WHERE substr(key, 1, length($1)) = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY key";

const RECORD_DELETE: &str = "DELETE FROM records WHERE key = $1";

pub(crate) async fn get(c: &mut impl Conn, key: &str, now: Timestamp) -> StoreResult<Option<Record>> {
    c.query_opt(RECORD_GET, args![key, now.0], |r| {
        Ok(Record { key: key.to_string(), value: r.blob(0)?, version: r.big(1)? })
    })
    .await
}

pub(crate) async fn list(c: &mut impl Conn, prefix: &str, now: Timestamp) -> StoreResult<Vec<Record>> {
    c.query(RECORD_LIST, args![prefix, now.0], |r| {
        Ok(Record { key: r.text(0)?, value: r.blob(1)?, version: r.big(2)? })
    })
    .await
}

pub(crate) async fn put(c: &mut impl Conn, p: RecordPut) -> StoreResult<Record> {
    let expires = p.expires_at.map(|t| t.0);
    let value = p.value.as_slice();
    let (statement, args) = match p.condition {
        RecordCondition::Always => (RECORD_PUT_ALWAYS, args![&p.key, value, expires]),
        RecordCondition::Absent => (RECORD_PUT_ABSENT, args![&p.key, value, expires, p.now.0]),
        RecordCondition::Version(v) => (RECORD_PUT_VERSION, args![&p.key, value, expires, p.now.0, v]),
    };
    let version = c.query_opt(statement, args, |r| r.big(0)).await?;
    let version = version.ok_or(StoreError::RecordConflict)?;
    Ok(Record { key: p.key, value: p.value, version })
}

pub(crate) async fn delete(c: &mut impl Conn, key: &str) -> StoreResult<()> {
    c.execute(RECORD_DELETE, args![key]).await.map(|_| ())
}

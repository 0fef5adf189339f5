//! Schema versions. Each backend numbers its migrations from 1 (the schema as it stood when
//! versions began to be counted) and applies, at start and under a lock, the ones a database
//! has not had, recording the highest in `meta`. A database written by a newer release is
//! refused rather than used with an older idea of its tables.

use std::ops::RangeInclusive;

use crate::{StoreError, StoreResult};

/// Where the version is kept; every migration 1 makes this table too.
pub(crate) const META: &str = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)";
pub(crate) const VERSION_GET: &str = "SELECT value FROM meta WHERE key = 'schema_version'";
/// `$1` the version now applied, as text.
pub(crate) const VERSION_SET: &str = "INSERT INTO meta (key, value) VALUES ('schema_version', $1) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// The migrations a database still needs, of `latest`, given the version it records (none:
/// a new database, or one older than the record).
pub(crate) fn pending(recorded: Option<&str>, latest: u32) -> StoreResult<RangeInclusive<u32>> {
    let current = match recorded {
        None => 0,
        Some(v) => v.trim().parse::<u32>().map_err(|_| {
            StoreError::Backend(format!("the database records schema version {v:?}, which is not a number"))
        })?,
    };
    if current > latest {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {current}, newer than this tasklane knows ({latest}); \
             run the release that wrote it, or a later one"
        )));
    }
    Ok(current + 1..=latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_needs_the_migrations_after_its_version_and_a_newer_one_is_refused() {
        assert_eq!(pending(None, 2).unwrap(), 1..=2);
        assert_eq!(pending(Some("1"), 2).unwrap(), 2..=2);
        assert!(pending(Some("2"), 2).unwrap().is_empty());
        let newer = pending(Some("3"), 2).unwrap_err().to_string();
        assert!(newer.contains("schema version 3, newer than this tasklane knows (2)"), "{newer}");
        assert!(pending(Some("two"), 2).unwrap_err().to_string().contains("\"two\", which is not a number"));
    }
}

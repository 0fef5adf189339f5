//! `Columns` for SQLite rows.

use rusqlite::Row;

use crate::columns::Columns;

impl Columns for Row<'_> {
    type Error = rusqlite::Error;

    fn int(&self, i: usize) -> rusqlite::Result<i32> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i32>> {
        self.get(i)
    }
    fn big(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_big(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn real(&self, i: usize) -> rusqlite::Result<f64> {
        self.get(i)
    }
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn blob(&self, i: usize) -> rusqlite::Result<Vec<u8>> {
        self.get(i)
    }
    fn corrupt(what: &str, value: &str) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("stored {what} {value:?} is not valid").into(),
        )
    }
}

pub fn queue_from_row(row: &Row<'_>) -> rusqlite::Result<tasklane_core::Queue> {
    crate::columns::queue_from(row)
}

pub fn task_from_row(row: &Row<'_>) -> rusqlite::Result<tasklane_core::Task> {
    crate::columns::task_from(row)
}

//! Callbacks: notifications of a job's end (and of its tasks reaching dead letters) to the
//! job's callback URL, queued in the transaction that causes them and delivered at least
//! once by the engine's sender.

use tasklane_core::Timestamp;

use crate::StoreResult;
use crate::columns::Columns;
use crate::sql::{Conn, Dialects, args};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackState {
    Pending,
    Delivered,
    /// Gave up after its attempts.
    Failed,
}

impl CallbackState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackState::Pending => "pending",
            CallbackState::Delivered => "delivered",
            CallbackState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<CallbackState> {
        [CallbackState::Pending, CallbackState::Delivered, CallbackState::Failed].into_iter().find(|c| c.as_str() == s)
    }
}

/// A notification to a job's callback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub id: i64,
    pub job_id: String,
    pub url: String,
    /// `job.finished` or `task.dead_lettered`.
    pub kind: String,
    /// The task a `task.dead_lettered` notification is about.
    pub task: Option<String>,
    pub state: CallbackState,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

/// The outcome of one delivery attempt of a callback.
#[derive(Debug, Clone)]
pub struct CallbackAttempt {
    pub id: i64,
    /// `Pending` to try again at `next_at`.
    pub state: CallbackState,
    pub next_at: Timestamp,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub now: Timestamp,
}

const COLUMNS: &str = "id, job_id, url, kind, task, state, attempts, last_status, last_error, created_at, delivered_at";

/// Queue a notification for the job's callback URL, if it has one: `$1` job, `$2` kind,
/// `$3` task (or null), `$4` now.
const QUEUE: &str = "INSERT INTO callbacks (job_id, url, kind, task, state, attempts, next_at, created_at) \
     SELECT id, callback_url, $2, $3, 'pending', 0, $4, $4 FROM jobs WHERE id = $1 AND callback_url IS NOT NULL";
/// `$1` now, `$2` leased until, `$3` limit; PostgreSQL skips rows another node is claiming.
static CLAIM: Dialects = Dialects::new(|| claim(""), || claim("FOR UPDATE SKIP LOCKED"));

fn claim(lock: &str) -> String {
    format!(
        "UPDATE callbacks SET next_at = $2 WHERE id IN (SELECT id FROM callbacks WHERE state = 'pending' \
         AND next_at <= $1 ORDER BY next_at LIMIT $3 {lock}) RETURNING {COLUMNS}"
    )
}

/// `$1` id, `$2` state, `$3` next at, `$4` HTTP status, `$5` error, `$6` delivered at.
const RECORD: &str = "UPDATE callbacks SET state = $2, attempts = attempts + 1, next_at = $3, \
     last_status = $4, last_error = $5, delivered_at = $6 WHERE id = $1";

static LIST: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM callbacks WHERE job_id = $1 ORDER BY id"));

fn callback_from<R: Columns>(row: &R) -> Result<Callback, R::Error> {
    let state = row.text(5)?;
    Ok(Callback {
        id: row.big(0)?,
        job_id: row.text(1)?,
        url: row.text(2)?,
        kind: row.text(3)?,
        task: row.opt_text(4)?,
        state: CallbackState::parse(&state).ok_or_else(|| R::corrupt("callback state", &state))?,
        attempts: row.int(6)?,
        last_status: row.opt_int(7)?,
        last_error: row.opt_text(8)?,
        created_at: Timestamp(row.big(9)?),
        delivered_at: row.opt_big(10)?.map(Timestamp),
    })
}

/// Queue a `kind` notification about `job` (and `task`), if the job has a callback URL.
pub(crate) async fn queue(
    c: &mut impl Conn,
    job: &str,
    kind: &str,
    task: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    c.execute(QUEUE, args![job, kind, task, now.0]).await.map(|_| ())
}

pub(crate) async fn claim_due(
    c: &mut impl Conn,
    now: Timestamp,
    until: Timestamp,
    limit: usize,
) -> StoreResult<Vec<Callback>> {
    let statement = CLAIM.of(c);
    c.query(statement, args![now.0, until.0, limit as i64], |r| callback_from(r)).await
}

pub(crate) async fn record(c: &mut impl Conn, p: CallbackAttempt) -> StoreResult<()> {
    let delivered = (p.state == CallbackState::Delivered).then_some(p.now.0);
    c.execute(RECORD, args![p.id, p.state.as_str(), p.next_at.0, p.http_status, p.error.as_deref(), delivered])
        .await
        .map(|_| ())
}

pub(crate) async fn list(c: &mut impl Conn, job: &str) -> StoreResult<Vec<Callback>> {
    c.query(&LIST, args![job], |r| callback_from(r)).await
}

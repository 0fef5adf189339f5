//! Jobs: one or more tasks tracked together, with a status, counts, progress reported by
//! workers, a result or an error, and labels. The rules for how a job's status follows its
//! tasks live here; the store applies them in the same transaction as each task outcome.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::name::QueueName;
use crate::status::Status;

pub const MAX_BATCH_TASKS: usize = 10_000;
pub const MAX_LABELS: usize = 64;
pub const MAX_RESULT_BYTES: usize = 256 * 1024;
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_RESULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] =
        [JobStatus::Pending, JobStatus::Running, JobStatus::Succeeded, JobStatus::Failed, JobStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|j| j.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// What a batch does when one of its tasks fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Run every task, then report: the job fails if any task failed.
    #[default]
    FinishAll,
    /// Fail the job at the first failure and cancel the tasks that have not run.
    FailFast,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FinishAll => "finish_all",
            FailurePolicy::FailFast => "fail_fast",
        }
    }

    pub fn parse(s: &str) -> Option<FailurePolicy> {
        [FailurePolicy::FinishAll, FailurePolicy::FailFast].into_iter().find(|p| p.as_str() == s)
    }
}

/// Progress as the worker last reported it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    pub percent: f64,
    pub step: String,
    pub step_number: i32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub queue: QueueName,
    pub status: JobStatus,
    pub labels: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    pub policy: FailurePolicy,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Tasks leased right now (computed when read).
    pub running: i64,
    pub progress: Progress,
    /// A JSON document the worker reported.
    pub result: Option<String>,
    pub error: Option<String>,
    pub callback_url: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// How long the job is kept after it finishes.
    pub result_ttl: Duration,
}

impl Job {
    /// Tasks that have neither run to an outcome nor been cancelled, and are not running.
    pub fn pending(&self) -> i64 {
        (self.total - self.succeeded - self.failed - self.cancelled - self.running).max(0)
    }

    /// Done over total, in percent: tasks that succeeded or failed for good.
    pub fn percentage(&self) -> f64 {
        if self.total == 0 { 100.0 } else { (self.succeeded + self.failed) as f64 * 100.0 / self.total as f64 }
    }

    /// The status a job reaches once every task has an outcome (or was cancelled).
    pub fn settled_status(succeeded_all: bool) -> JobStatus {
        if succeeded_all { JobStatus::Succeeded } else { JobStatus::Failed }
    }
}

/// Check a progress report against the job's current progress: percent within 0–100 and
/// not lower than before unless the worker says so (`allow_decrease`).
pub fn check_progress(current: &Progress, next: &Progress, allow_decrease: bool) -> Result<(), Status> {
    if !next.percent.is_finite() || !(0.0..=100.0).contains(&next.percent) {
        return Err(Status::invalid_argument(format!("percent is {}; it must be between 0 and 100", next.percent)));
    }
    if next.percent < current.percent && !allow_decrease {
        return Err(Status::failed_precondition(format!(
            "progress may not go backwards: the job is at {}% and the report says {}%; \
             send \"allow_decrease\": true to move it back on purpose",
            current.percent, next.percent
        )));
    }
    for (field, text) in [("step", &next.step), ("message", &next.message)] {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(Status::invalid_argument(format!("{field} is longer than {MAX_MESSAGE_BYTES} bytes")));
        }
    }
    Ok(())
}

/// Labels: at most `MAX_LABELS`, keys of letters, digits, `-`, `_`, `.`, `/` (1–63), values up to 256 bytes.
pub fn check_labels(labels: &[(String, String)]) -> Result<(), Status> {
    if labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!("a job may have at most {MAX_LABELS} labels")));
    }
    for (k, v) in labels {
        let ok = !k.is_empty()
            && k.len() <= 63
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !ok {
            return Err(Status::invalid_argument(format!(
                "label key \"{k}\" must be 1 to 63 letters, digits, '-', '_', '.' or '/'"
            )));
        }
        if v.len() > 256 {
            return Err(Status::invalid_argument(format!("label \"{k}\" has a value longer than 256 bytes")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_moves_forward_unless_allowed_back() {
        let at = |p: f64| Progress { percent: p, ..Default::default() };
        assert!(check_progress(&at(10.0), &at(40.0), false).is_ok());
        assert!(check_progress(&at(40.0), &at(40.0), false).is_ok());
        let e = check_progress(&at(40.0), &at(10.0), false).unwrap_err();
        assert!(e.message.contains("backwards"), "{e:?}");
        assert!(check_progress(&at(40.0), &at(10.0), true).is_ok());
        for bad in [-1.0, 100.5, f64::NAN] {
            assert!(check_progress(&at(0.0), &at(bad), true).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_labels(&[("user".into(), "42".into()), ("team/a.b_c-d".into(), String::new())]).is_ok());
        assert!(check_labels(&[(String::new(), "x".into())]).is_err());
        assert!(check_labels(&[("sp ace".into(), "x".into())]).is_err());
        assert!(check_labels(&[("k".into(), "v".repeat(257))]).is_err());
    }

    #[test]
    fn counts_and_percentage() {
        let job = Job {
            id: "j".into(),
            queue: crate::LocationName::new("p", "l").unwrap().queue("q").unwrap(),
            status: JobStatus::Running,
            labels: Vec::new(),
            idempotency_key: None,
            policy: FailurePolicy::FinishAll,
            total: 50,
            succeeded: 20,
            failed: 3,
            cancelled: 2,
            running: 5,
            progress: Progress::default(),
            result: None,
            error: None,
            callback_url: None,
            created_at: Timestamp(0),
            started_at: None,
            finished_at: None,
            result_ttl: DEFAULT_RESULT_TTL,
        };
        assert_eq!(job.pending(), 20);
        assert_eq!(job.percentage(), 46.0);
        assert!(JobStatus::Cancelled.is_final() && !JobStatus::Running.is_final());
        assert_eq!(JobStatus::parse("failed"), Some(JobStatus::Failed));
    }
}

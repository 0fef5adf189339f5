//! What an attempt came to and what to record for it: one set of rules for every way an
//! attempt ends, a push answered or not and a pull worker's failure alike. The store
//! records a `TaskOutcome`; nothing else decides one.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::queue::Queue;
use crate::status::Code;
use crate::task::{ResponseStatus, Task};

/// What came back from one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status; 504 when the deadline passed, 0 when no valid response arrived.
    pub http_status: u16,
    pub responded: bool,
    /// How long the worker asked to be left alone (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The text recorded as the attempt's status: the real service's for what a worker
    /// answered or failed to (`INTERNAL(13): HTTP status code 500`), tasklane's own for
    /// what only tasklane refuses (its egress policy, a token it could not sign) and for a
    /// pull worker's stated reason.
    pub message: String,
    /// The start of the response body, as text (lossily); without a response, why none
    /// came (`could not connect to the worker: Connection refused`).
    pub excerpt: String,
}

impl Answer {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.http_status) && self.responded
    }

    /// An attempt that got no answer, recorded as the real service records one (504 for
    /// a deadline, 0 for no answer at all); `why` is kept beside it.
    pub fn no_answer(http_status: u16, why: String) -> Answer {
        let message = attempt_code(http_status, false).attempt_message(http_status);
        Answer { http_status, responded: false, retry_after: None, message, excerpt: why }
    }

    /// A pull worker's report that it failed the task, in its own words.
    pub fn failed_by_worker(reason: String) -> Answer {
        let message = if reason.is_empty() { "the worker failed the task".to_string() } else { reason.clone() };
        Answer { http_status: 0, responded: false, retry_after: None, message, excerpt: reason }
    }
}

/// The code recorded for an attempt: the worker's answer mapped as Cloud Tasks maps it,
/// DEADLINE_EXCEEDED when the deadline passed first, UNKNOWN when nothing came back.
pub fn attempt_code(http_status: u16, responded: bool) -> Code {
    if responded {
        Code::from_worker_http_status(http_status)
    } else if http_status == 504 {
        Code::DeadlineExceeded
    } else {
        Code::Unknown
    }
}

/// A failed attempt as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// The worker's HTTP status; 504 after a deadline, 0 when it could not be reached.
    pub http_status: u16,
    /// Whether it counts toward `response_count`: an answer below 500, as the real service counts.
    pub responded: bool,
    pub status: ResponseStatus,
    pub dispatch_time: Timestamp,
    pub response_time: Timestamp,
    /// The start of the worker's response body (kept, lossily as text, with the attempt log).
    pub body_excerpt: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// A 2xx: the task leaves the queue and its name is reserved until `tombstone_until`.
    Succeeded { tombstone_until: Timestamp },
    /// A failure with retries left: the task is due again at `retry_at`.
    Retry { attempt: AttemptResult, retry_at: Timestamp },
    /// A failure with no retries left: the task moves to the dead letters.
    GaveUp { attempt: AttemptResult, tombstone_until: Timestamp },
}

/// What to record for an attempt of `task` (of `queue`) that came to `answer` at `now`,
/// by the task's retry rules (its own, or its queue's).
pub fn decide(queue: &Queue, task: &Task, answer: &Answer, now: Timestamp, tombstone_window: Duration) -> TaskOutcome {
    if answer.succeeded() {
        return TaskOutcome::Succeeded { tombstone_until: now.saturating_add(tombstone_window) };
    }
    let attempt = AttemptResult {
        http_status: answer.http_status,
        responded: answer.responded && answer.http_status < 500,
        status: ResponseStatus {
            code: attempt_code(answer.http_status, answer.responded),
            message: answer.message.clone(),
        },
        dispatch_time: task.last_attempt.as_ref().and_then(|a| a.dispatch_time).unwrap_or(now),
        response_time: now,
        body_excerpt: answer.excerpt.clone(),
    };
    let attempts = task.dispatch_count.max(1) as u32;
    let first = task.first_attempt.as_ref().and_then(|a| a.dispatch_time).unwrap_or(now);
    let retry = task.retry_config.as_ref().unwrap_or(&queue.retry_config);
    if retry.gives_up(attempts, first, now) {
        return TaskOutcome::GaveUp { attempt, tombstone_until: now.saturating_add(tombstone_window) };
    }
    let mut delay = retry.backoff(attempts);
    if let Some(after) = answer.retry_after {
        delay = delay.max(after);
    }
    TaskOutcome::Retry { attempt, retry_at: now.saturating_add(delay) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueSpec, QueueState};
    use crate::{QueueName, RetryConfig, TaskSpec};

    fn fixture(retry: RetryConfig) -> (Queue, Task) {
        let name = QueueName::parse("projects/p/locations/l/queues/q").unwrap();
        let mut queue = QueueSpec::default().resolve(name.clone(), QueueState::Running, None).unwrap();
        queue.retry_config = retry;
        let mut task = TaskSpec { url: "http://h/".into(), ..Default::default() }
            .validate(&name, Timestamp::from_secs(0), || "1".into())
            .unwrap();
        task.dispatch_count = 1;
        task.first_attempt =
            Some(crate::Attempt { dispatch_time: Some(Timestamp::from_secs(0)), ..Default::default() });
        (queue, task)
    }

    fn answer(status: u16, responded: bool, retry_after: Option<u64>) -> Answer {
        let message = attempt_code(status, responded).attempt_message(status);
        Answer {
            http_status: status,
            responded,
            retry_after: retry_after.map(Duration::from_secs),
            message,
            excerpt: String::new(),
        }
    }

    #[test]
    fn outcomes_by_answer() {
        let (queue, task) = fixture(RetryConfig { max_attempts: 2, ..RetryConfig::default() });
        let now = Timestamp::from_secs(10);
        let window = Duration::from_secs(3600);
        let decide = |task: &Task, a: Answer| decide(&queue, task, &a, now, window);
        assert!(matches!(decide(&task, answer(204, true, None)), TaskOutcome::Succeeded { .. }));
        // (answer, code, counted as a response, retry delay)
        let table = [
            (answer(500, true, None), Code::Internal, false, Duration::from_millis(100)),
            (answer(404, true, None), Code::NotFound, true, Duration::from_millis(100)),
            (answer(301, true, None), Code::Unknown, true, Duration::from_millis(100)),
            (answer(503, true, Some(30)), Code::Unavailable, false, Duration::from_secs(30)),
            (answer(504, false, None), Code::DeadlineExceeded, false, Duration::from_millis(100)),
            (answer(0, false, None), Code::Unknown, false, Duration::from_millis(100)),
            // A 2xx without a finished response is not a success.
            (answer(200, false, None), Code::Unknown, false, Duration::from_millis(100)),
        ];
        for (a, code, responded, delay) in table {
            let status = a.http_status;
            match decide(&task, a.clone()) {
                TaskOutcome::Retry { retry_at, attempt } => {
                    assert_eq!(retry_at, now.saturating_add(delay), "{status}");
                    assert_eq!((attempt.status.code, attempt.responded), (code, responded), "{status}");
                    assert_eq!(attempt.status.message, a.message);
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        let mut second = task.clone();
        second.dispatch_count = 2;
        assert!(matches!(decide(&second, answer(500, true, None)), TaskOutcome::GaveUp { .. }));
    }

    #[test]
    fn a_pull_worker_s_reason_is_its_record() {
        let (queue, task) = fixture(RetryConfig::default());
        let now = Timestamp::from_secs(10);
        let a = Answer::failed_by_worker("disk full".into());
        match decide(&queue, &task, &a, now, Duration::ZERO) {
            TaskOutcome::Retry { attempt, .. } => {
                assert_eq!((attempt.status.code, attempt.status.message.as_str()), (Code::Unknown, "disk full"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(Answer::failed_by_worker(String::new()).message, "the worker failed the task");
        let late = Answer::no_answer(504, "The worker did not answer within the dispatch deadline".into());
        assert_eq!(late.message, "DEADLINE_EXCEEDED(4): HTTP status code 504");
    }
}

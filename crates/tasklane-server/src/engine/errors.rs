//! What a store failure looks like to an API caller, for every layer above the store.

use tasklane_core::Status;
use tasklane_core::queue::texts::{NOT_FOUND, QUEUE_EXISTS, QUEUE_MISSING, TASK_EXISTS, TASK_GONE};
use tasklane_store::StoreError;

/// Map a store failure to what the caller sees.
pub fn store_status(e: StoreError) -> Status {
    use tasklane_core::throttle::Throttle;
    match e {
        StoreError::QueueNotFound => Status::not_found(QUEUE_MISSING),
        StoreError::QueueAlreadyExists => Status::already_exists(QUEUE_EXISTS),
        StoreError::TaskNotFound => Status::not_found(NOT_FOUND),
        StoreError::TaskTombstoned => Status::not_found(TASK_GONE),
        StoreError::TaskAlreadyExists => Status::already_exists(TASK_EXISTS),
        StoreError::JobNotFound => Status::not_found("Job not found."),
        StoreError::JobFinished(status) => {
            Status::failed_precondition(format!("The job is already {}; it takes no more changes.", status.as_str()))
        }
        StoreError::JobProgressBackwards(at) => Status::failed_precondition(format!(
            "Progress may not go backwards: the job is at {at}%. Send \"allow_decrease\": true to move it back on purpose."
        )),
        StoreError::RecordConflict => {
            Status::aborted("There were concurrent changes. Please retry the whole read-modify-write.")
        }
        StoreError::Unavailable(m) => Status::unavailable(format!("The service is currently unavailable: {m}")),
        StoreError::Full(m) => {
            static WARNED: Throttle = Throttle::new(std::time::Duration::from_secs(60));
            if let Some(held_back) = WARNED.allow(std::time::Instant::now()) {
                tracing::warn!(error = %m, held_back, "the store cannot write: out of space");
            }
            Status::resource_exhausted(format!(
                "tasklane's store is out of space ({m}); nothing was changed. Free space on the disk that holds \
                 its data, then try again."
            ))
        }
        StoreError::Backend(m) => {
            tracing::error!(error = %m, "store failure");
            Status::internal("Internal error encountered.")
        }
    }
}

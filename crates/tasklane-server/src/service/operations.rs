//! `BatchCreateTasks` and `BatchDeleteTasks`, and the long-running operations that report
//! them. A batch runs to the end before the call answers (at most 100 creates or 1,000
//! deletes, group-committed), so the operation it returns is already done; it is also kept
//! as a record for `GetOperation` from any node, for `OPERATION_RETENTION`.
//!
//! Not atomic, as in Cloud Tasks: each request succeeds or fails alone, and the failures
//! are listed by their index in the request.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use tasklane_core::task::TaskSpec;
use tasklane_core::{LocationName, QueueName, Status, Task, TaskName, TaskView, Timestamp};
use tasklane_store::{RecordCondition, RecordPut, StoreError};

use crate::service::proto::{convert, messages as m};
use crate::service::{CloudTasks, store_status};

pub const MAX_BATCH_CREATE: usize = 100;
pub const MAX_BATCH_DELETE: usize = 1000;
pub const OPERATION_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Create,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    Succeeded,
    PartiallySucceeded,
    Failed,
}

/// A finished batch, as both transports render it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOperation {
    /// `projects/P/locations/L/operations/ID`
    pub name: String,
    pub kind: BatchKind,
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    pub state: BatchState,
    /// Failed requests by their index in the batch.
    pub failed: BTreeMap<i32, Status>,
    /// The created tasks in request order, each in the view its request asked for.
    pub tasks: Vec<(Task, TaskView)>,
}

/// One create of a batch, as the transport read it: a malformed task fails only itself.
pub struct BatchCreateItem {
    pub parent: String,
    pub spec: Result<TaskSpec, Status>,
    pub view: TaskView,
}

fn record_key(name: &str) -> String {
    format!("operation:{name}")
}

/// The operation's name: the caller's `request_id` as its id (the real service's rule,
/// one namespace for creates and deletes), or a generated one.
fn operation_name(s: &CloudTasks, location: &LocationName, request_id: &str) -> Result<String, Status> {
    if request_id.is_empty() {
        return Ok(format!("{location}/operations/{}", s.generate_id()));
    }
    let valid =
        request_id.len() <= 100 && request_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(Status::invalid_argument(
            "request_id must be at most 100 letters, digits, hyphens or underscores (a UUID works)",
        ));
    }
    Ok(format!("{location}/operations/{request_id}"))
}

fn duplicate_request_id(request_id: &str) -> Status {
    Status::invalid_argument(format!("Duplicate operation id in the batch request: {request_id}"))
}

/// What the whole of an all-failed `BatchDeleteTasks` answers, beside its per-entry failures.
pub const NONE_DELETED: &str =
    "None of the requests succeeded, refer to BatchDeleteTasksMetadata.failed_requests for individual error details";

fn state_of(total: usize, failed: usize) -> BatchState {
    match failed {
        0 => BatchState::Succeeded,
        f if f == total => BatchState::Failed,
        _ => BatchState::PartiallySucceeded,
    }
}

/// The checks that refuse a whole `BatchCreateTasks` before anything runs, in the real
/// service's words: an entry for another queue, a task name that is malformed, in
/// another queue or used twice.
fn check_batch_create(parent: &QueueName, requests: &[BatchCreateItem]) -> Result<(), Status> {
    let mut names = std::collections::HashSet::new();
    for item in requests {
        if item.parent != parent.to_string() {
            return Err(Status::invalid_argument(format!(
                "All tasks in a batch request must target the same queue. Found task for queue {} in batch request \
                 for queue {parent}.",
                item.parent
            )));
        }
        let Ok(TaskSpec { name: Some(name), .. }) = &item.spec else { continue };
        if name.is_empty() {
            continue;
        }
        let task = TaskName::parse(name)?;
        if &task.queue != parent {
            return Err(tasklane_core::task::other_queue(parent, &task.queue));
        }
        if !names.insert(name.as_str()) {
            return Err(Status::invalid_argument(format!("Duplicate task name in the batch request: {name}")));
        }
    }
    Ok(())
}

impl CloudTasks {
    async fn operation_existing(&self, name: &str) -> Result<Option<BatchOperation>, Status> {
        match self.store().record_get(&record_key(name), self.now()).await.map_err(store_status)? {
            Some(r) => decode(&r.value).map(Some),
            None => Ok(None),
        }
    }

    async fn operation_save(&self, op: &BatchOperation) -> Result<BatchOperation, Status> {
        let request_id = op.name.rsplit('/').next().unwrap_or_default();
        let put = RecordPut {
            key: record_key(&op.name),
            value: convert::operation(op).encode_to_vec(),
            condition: RecordCondition::Absent,
            expires_at: Some(op.end_time.saturating_add(OPERATION_RETENTION)),
            now: self.now(),
        };
        match self.store().record_put(put).await {
            Ok(_) => Ok(op.clone()),
            // The same request_id ran at the same moment elsewhere.
            Err(StoreError::RecordConflict) => Err(duplicate_request_id(request_id)),
            Err(e) => Err(store_status(e)),
        }
    }

    /// Name a batch's operation, refusing a `request_id` already used.
    async fn batch_begin(&self, queue: &QueueName, request_id: &str) -> Result<String, Status> {
        let name = operation_name(self, &queue.parent, request_id)?;
        if self.operation_existing(&name).await?.is_some() {
            return Err(duplicate_request_id(request_id));
        }
        Ok(name)
    }

    pub async fn batch_create_tasks(
        &self,
        parent: &str,
        requests: Vec<BatchCreateItem>,
        request_id: &str,
    ) -> Result<BatchOperation, Status> {
        let queue = QueueName::parse(parent)?;
        match requests.len() {
            0 => return Err(Status::invalid_argument("Request must contain at least one task.")),
            n if n > MAX_BATCH_CREATE => {
                return Err(Status::invalid_argument(format!(
                    "A maximum of {MAX_BATCH_CREATE} tasks can be created in a single batch, but got {n} tasks."
                )));
            }
            _ => {}
        }
        check_batch_create(&queue, &requests)?;
        // A queue that is not there fails each entry (NOT_FOUND, from the store), not the batch.
        let target = match self.queue_target(&queue).await {
            Err(e) if e.code == tasklane_core::Code::NotFound => None,
            other => other?,
        };
        let name = self.batch_begin(&queue, request_id).await?;
        let start_time = self.now();
        let total = requests.len();
        let mut failed = BTreeMap::new();
        // Each entry is checked alone; those that pass are stored in one write, so a crash
        // keeps the batch whole or not at all.
        let mut checked = Vec::new();
        for (i, item) in requests.into_iter().enumerate() {
            let task = match item.spec {
                // An entry without a task or request says so in the batch's own words.
                Err(e) if e.message == tasklane_core::task::texts::PAYLOAD_NOT_SET => {
                    Err(Status::invalid_argument(tasklane_core::task::texts::BATCH_PAYLOAD_NOT_SET))
                }
                Err(e) => Err(e),
                Ok(spec) => self.new_task(&queue, target.as_ref(), spec, start_time).await,
            };
            match task {
                Ok(task) => checked.push((i as i32, task, item.view)),
                Err(e) => {
                    failed.insert(i as i32, e);
                }
            }
        }
        let (places, tasks): (Vec<(i32, TaskView)>, Vec<Task>) =
            checked.into_iter().map(|(i, task, view)| ((i, view), task)).unzip();
        let mut created = BTreeMap::new();
        for ((i, view), result) in places.into_iter().zip(self.store_tasks(&queue, tasks, start_time).await) {
            match result {
                Ok(task) => {
                    created.insert(i, (task.with_view(view), view));
                }
                Err(e) => {
                    failed.insert(i, e);
                }
            }
        }
        let op = BatchOperation {
            name,
            kind: BatchKind::Create,
            start_time,
            end_time: self.now(),
            state: state_of(total, failed.len()),
            failed,
            tasks: created.into_values().collect(),
        };
        self.operation_save(&op).await
    }

    pub async fn batch_delete_tasks(
        &self,
        parent: &str,
        names: Vec<String>,
        request_id: &str,
    ) -> Result<BatchOperation, Status> {
        let queue = QueueName::parse(parent)?;
        match names.len() {
            0 => return Err(Status::invalid_argument(tasklane_core::task::texts::INVALID_ARGUMENT)),
            n if n > MAX_BATCH_DELETE => {
                return Err(Status::invalid_argument(format!(
                    "A maximum of {MAX_BATCH_DELETE} tasks can be handled in a batch, but {n} were requested."
                )));
            }
            _ => {}
        }
        let name = self.batch_begin(&queue, request_id).await?;
        let start_time = self.now();
        let total = names.len();
        // Each name is deleted once; an entry repeating it shares its result, so the same
        // task named twice succeeds twice, as in the real service.
        let mut distinct: Vec<String> = names.clone();
        distinct.sort();
        distinct.dedup();
        let mut running = tokio::task::JoinSet::new();
        for task in distinct {
            let s = self.clone();
            let queue = queue.clone();
            running.spawn(async move {
                let result = match TaskName::parse(&task) {
                    Err(e) => Err(Status::invalid_argument(format!("Invalid task name: {}", e.message))),
                    Ok(t) if t.queue != queue => Err(tasklane_core::task::other_queue(&queue, &t.queue)),
                    Ok(_) => s.delete_task(&task).await,
                };
                (task, result)
            });
        }
        let mut results = std::collections::HashMap::new();
        while let Some(joined) = running.join_next().await {
            let (task, result) = joined.map_err(|e| Status::internal(format!("a batch delete stopped: {e}")))?;
            results.insert(task, result);
        }
        let mut failed = BTreeMap::new();
        for (i, task) in names.iter().enumerate() {
            if let Some(Err(e)) = results.get(task) {
                failed.insert(i as i32, e.clone());
            }
        }
        let op = BatchOperation {
            name,
            kind: BatchKind::Delete,
            start_time,
            end_time: self.now(),
            state: state_of(total, failed.len()),
            failed,
            tasks: Vec::new(),
        };
        self.operation_save(&op).await
    }

    /// `google.longrunning.Operations/GetOperation`.
    pub async fn get_operation(&self, name: &str) -> Result<BatchOperation, Status> {
        let Some((location, id)) = name.split_once("/operations/") else {
            return Err(Status::invalid_argument(format!(
                "Invalid operation name \"{name}\": expected projects/PROJECT_ID/locations/LOCATION_ID/operations/OPERATION_ID"
            )));
        };
        LocationName::parse(location)?;
        if id.is_empty() || id.contains('/') {
            return Err(Status::invalid_argument(format!("Invalid operation name \"{name}\"")));
        }
        self.operation_existing(name).await?.ok_or_else(|| Status::not_found(tasklane_core::queue::texts::NOT_FOUND))
    }
}

fn decode(bytes: &[u8]) -> Result<BatchOperation, Status> {
    let op =
        m::Operation::decode(bytes).map_err(|e| Status::internal(format!("a stored operation is unreadable: {e}")))?;
    convert::operation_from(op)
}

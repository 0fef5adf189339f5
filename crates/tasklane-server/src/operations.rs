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
use tasklane_core::{LocationName, QueueName, Status, Task, TaskView, Timestamp};
use tasklane_store::{RecordCondition, RecordPut, StoreError};

use crate::grpc::{convert, messages as m};
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

/// The operation's id: from the caller's `request_id`, so a retried request finds the
/// operation of the first one instead of running again, or generated.
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
    Ok(format!("{location}/operations/req-{request_id}"))
}

struct BatchSize {
    field: &'static str,
    entries: usize,
    max: usize,
    verb: &'static str,
}

enum Begin {
    /// An earlier request with the same id already ran.
    Done(BatchOperation),
    Run {
        queue: QueueName,
        name: String,
    },
}

fn state_of(total: usize, failed: usize) -> BatchState {
    match failed {
        0 => BatchState::Succeeded,
        f if f == total => BatchState::Failed,
        _ => BatchState::PartiallySucceeded,
    }
}

impl CloudTasks {
    async fn operation_existing(&self, name: &str) -> Result<Option<BatchOperation>, Status> {
        match self.store().record_get(&record_key(name), self.now()).await.map_err(store_status)? {
            Some(r) => decode(&r.value).map(Some),
            None => Ok(None),
        }
    }

    async fn operation_save(&self, op: &BatchOperation) -> Result<BatchOperation, Status> {
        let put = RecordPut {
            key: record_key(&op.name),
            value: convert::operation(op).encode_to_vec(),
            condition: RecordCondition::Absent,
            expires_at: Some(op.end_time.saturating_add(OPERATION_RETENTION)),
            now: self.now(),
        };
        match self.store().record_put(put).await {
            Ok(_) => Ok(op.clone()),
            // The same request_id ran at the same moment elsewhere: answer with that one.
            Err(StoreError::RecordConflict) => {
                self.operation_existing(&op.name).await?.ok_or_else(|| Status::aborted("Please retry the batch."))
            }
            Err(e) => Err(store_status(e)),
        }
    }

    /// Check a batch's parent and size, and find the operation of an earlier run of the
    /// same `request_id`.
    async fn batch_begin(&self, parent: &str, size: BatchSize, request_id: &str) -> Result<Begin, Status> {
        let queue = QueueName::parse(parent)?;
        let BatchSize { field, entries, max, verb } = size;
        if entries == 0 {
            return Err(Status::invalid_argument(format!("{field} must not be empty")));
        }
        if entries > max {
            return Err(Status::invalid_argument(format!(
                "{field} has {entries} entries; a batch may {verb} at most {max} tasks"
            )));
        }
        let name = operation_name(self, &queue.parent, request_id)?;
        Ok(match self.operation_existing(&name).await? {
            Some(op) => Begin::Done(op),
            None => Begin::Run { queue, name },
        })
    }

    pub async fn batch_create_tasks(
        &self,
        parent: &str,
        requests: Vec<BatchCreateItem>,
        request_id: &str,
    ) -> Result<BatchOperation, Status> {
        let size = BatchSize { field: "requests", entries: requests.len(), max: MAX_BATCH_CREATE, verb: "create" };
        let (queue, name) = match self.batch_begin(parent, size, request_id).await? {
            Begin::Done(op) => return Ok(op),
            Begin::Run { queue, name } => (queue, name),
        };
        let start_time = self.now();
        let queue = queue.to_string();
        let mut running = tokio::task::JoinSet::new();
        // The creates run concurrently (and are group-committed), so a name used twice in
        // one batch is settled here: the first request with it wins, as if run in order.
        let mut names = std::collections::HashSet::new();
        for (i, item) in requests.into_iter().enumerate() {
            let s = self.clone();
            let queue = queue.clone();
            let parent = if item.parent.is_empty() { parent.to_string() } else { item.parent };
            let repeated = match &item.spec {
                Ok(TaskSpec { name: Some(n), .. }) if !n.is_empty() => !names.insert(n.clone()),
                _ => false,
            };
            running.spawn(async move {
                let result = match item.spec {
                    Err(e) => Err(e),
                    Ok(_) if repeated => Err(Status::already_exists(crate::service::TASK_EXISTS)),
                    Ok(_) if parent != queue => Err(Status::invalid_argument(format!(
                        "requests[{i}].parent \"{parent}\" is not the batch's parent queue"
                    ))),
                    Ok(spec) => s.create_task(&parent, spec, item.view).await.map(|t| (t, item.view)),
                };
                (i as i32, result)
            });
        }
        let total = running.len();
        let mut created = BTreeMap::new();
        let mut failed = BTreeMap::new();
        while let Some(joined) = running.join_next().await {
            let (i, result) = joined.map_err(|e| Status::internal(format!("a batch create stopped: {e}")))?;
            match result {
                Ok(task) => {
                    created.insert(i, task);
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
        let size = BatchSize { field: "names", entries: names.len(), max: MAX_BATCH_DELETE, verb: "delete" };
        let (queue, name) = match self.batch_begin(parent, size, request_id).await? {
            Begin::Done(op) => return Ok(op),
            Begin::Run { queue, name } => (queue, name),
        };
        let start_time = self.now();
        let prefix = format!("{queue}/tasks/");
        let mut running = tokio::task::JoinSet::new();
        for (i, task) in names.into_iter().enumerate() {
            let s = self.clone();
            let in_queue = task.starts_with(&prefix);
            running.spawn(async move {
                let result = if in_queue {
                    s.delete_task(&task).await
                } else {
                    Err(Status::invalid_argument(format!(
                        "names[{i}] \"{task}\" is not a task of the batch's parent queue"
                    )))
                };
                (i as i32, result)
            });
        }
        let total = running.len();
        let mut failed = BTreeMap::new();
        while let Some(joined) = running.join_next().await {
            let (i, result) = joined.map_err(|e| Status::internal(format!("a batch delete stopped: {e}")))?;
            if let Err(e) = result {
                failed.insert(i, e);
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
        self.operation_existing(name).await?.ok_or_else(|| Status::not_found(format!("Operation {name} not found.")))
    }
}

fn decode(bytes: &[u8]) -> Result<BatchOperation, Status> {
    let op =
        m::Operation::decode(bytes).map_err(|e| Status::internal(format!("a stored operation is unreadable: {e}")))?;
    convert::operation_from(op)
}

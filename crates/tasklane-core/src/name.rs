//! Resource names: `projects/P/locations/L`, `.../queues/Q` and `.../queues/Q/tasks/T`,
//! parsed and validated by the rules of the real service.

use std::fmt;

use crate::status::{Detail, Status};

pub const MAX_QUEUE_ID_LEN: usize = 100;
pub const MAX_TASK_ID_LEN: usize = 500;
const MAX_PROJECT_ID_LEN: usize = 100;
const MAX_LOCATION_ID_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocationName {
    pub project: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName {
    pub parent: LocationName,
    pub queue: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskName {
    pub queue: QueueName,
    pub task: String,
}

fn valid_project_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PROJECT_ID_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-:.".contains(&b))
}

fn valid_location_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LOCATION_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub fn valid_queue_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_QUEUE_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub fn valid_task_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TASK_ID_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl LocationName {
    pub fn new(project: impl Into<String>, location: impl Into<String>) -> Result<Self, Status> {
        let name = LocationName { project: project.into(), location: location.into() };
        if !valid_project_id(&name.project) || !valid_location_id(&name.location) {
            return Err(Status::invalid_argument(format!(
                "Invalid location name \"{name}\": expected projects/PROJECT_ID/locations/LOCATION_ID \
                 where PROJECT_ID has letters, digits, hyphens, colons or periods and LOCATION_ID has letters, digits or hyphens"
            )));
        }
        Ok(name)
    }

    pub fn parse(s: &str) -> Result<Self, Status> {
        let bad = || {
            Status::invalid_argument(format!(
                "Invalid location name \"{s}\": expected projects/PROJECT_ID/locations/LOCATION_ID"
            ))
        };
        let rest = s.strip_prefix("projects/").ok_or_else(bad)?;
        let (project, location) = rest.split_once("/locations/").ok_or_else(bad)?;
        LocationName::new(project, location).map_err(|_| bad())
    }

    pub fn queue(&self, queue: impl Into<String>) -> Result<QueueName, Status> {
        let queue = queue.into();
        if !valid_queue_id(&queue) {
            return Err(queue_id_error(&format!("{self}/queues/{queue}")));
        }
        Ok(QueueName { parent: self.clone(), queue })
    }
}

/// The texts the real service answers a malformed name with.
pub mod texts {
    pub fn queue_id(id: &str) -> String {
        format!(
            "Queue ID \"{id}\" can contain only letters ([A-Za-z]), numbers ([0-9]), or hyphens (-). \
             Queue ID must be between 1 and 100 characters."
        )
    }

    pub fn task_id(id: &str) -> String {
        format!(
            "Task ID \"{id}\" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), or \
             underscores (_). Task ID must between 1 and 500 characters."
        )
    }

    pub const QUEUE_NAME: &str =
        "Queue name must be formatted: \"projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>\".";
    pub const TASK_NAME: &str = "Task name must be formatted: \
        \"projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>/tasks/<TASK_ID>\".";
}

const QUEUE_DOCS: &str =
    "https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#Queue.FIELDS.name";
const TASK_DOCS: &str =
    "https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks#Task.FIELDS.name";

fn queue_id_error(full: &str) -> Status {
    Status::invalid_argument(texts::queue_id(full.rsplit_once("/queues/").map_or(full, |(_, id)| id)))
        .with_detail(Detail::help("Definition of queue ID", QUEUE_DOCS))
}

fn task_id_error(full: &str) -> Status {
    Status::invalid_argument(texts::task_id(full.rsplit_once("/tasks/").map_or(full, |(_, id)| id)))
        .with_detail(Detail::help("Definition of task ID", TASK_DOCS))
}

fn malformed_queue_name() -> Status {
    Status::invalid_argument(texts::QUEUE_NAME).with_detail(Detail::help("Definition of queue name", QUEUE_DOCS))
}

fn malformed_task_name() -> Status {
    Status::invalid_argument(texts::TASK_NAME).with_detail(Detail::help("Definition of task name", TASK_DOCS))
}

impl QueueName {
    /// A queue name; a well-formed name with a bad queue ID says what an ID may hold.
    pub fn parse(s: &str) -> Result<Self, Status> {
        let (parent, queue) = s.rsplit_once("/queues/").ok_or_else(malformed_queue_name)?;
        let parent = LocationName::parse(parent).map_err(|_| malformed_queue_name())?;
        parent.queue(queue)
    }

    pub fn task(&self, task: impl Into<String>) -> Result<TaskName, Status> {
        let task = task.into();
        if !valid_task_id(&task) {
            return Err(task_id_error(&format!("{self}/tasks/{task}")));
        }
        Ok(TaskName { queue: self.clone(), task })
    }
}

impl TaskName {
    /// A task name; a well-formed name with a bad task or queue ID says what an ID may hold.
    pub fn parse(s: &str) -> Result<Self, Status> {
        let (queue, task) = s.rsplit_once("/tasks/").ok_or_else(malformed_task_name)?;
        let queue = match QueueName::parse(queue) {
            Ok(q) => q,
            Err(e) if e.message.starts_with("Queue ID") => return Err(e),
            Err(_) => return Err(malformed_task_name()),
        };
        queue.task(task)
    }
}

impl fmt::Display for LocationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/locations/{}", self.project, self.location)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/queues/{}", self.parent, self.queue)
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/tasks/{}", self.queue, self.task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_queue(input: &str, ok: bool) {
        let parsed = QueueName::parse(input);
        assert_eq!(parsed.is_ok(), ok, "{input}: {parsed:?}");
        if let Ok(name) = parsed {
            assert_eq!(name.to_string(), input);
        }
    }

    fn check_task(input: &str, ok: bool) {
        let parsed = TaskName::parse(input);
        assert_eq!(parsed.is_ok(), ok, "{input}: {parsed:?}");
        if let Ok(name) = parsed {
            assert_eq!(name.to_string(), input);
        }
    }

    #[test]
    fn queue_names() {
        check_queue("projects/p/locations/us-central1/queues/q", true);
        check_queue("projects/my-proj.example.com:app/locations/l/queues/Queue-1", true);
        check_queue(&format!("projects/p/locations/l/queues/{}", "a".repeat(100)), true);
        check_queue(&format!("projects/p/locations/l/queues/{}", "a".repeat(101)), false);
        check_queue("projects/p/locations/l/queues/", false);
        check_queue("projects/p/locations/l/queues/under_score", false);
        check_queue("projects/p/locations/l/queues/a/b", false);
        check_queue("projects//locations/l/queues/q", false);
        check_queue("projects/p/locations/l_x/queues/q", false);
        check_queue("p/locations/l/queues/q", false);
        check_queue("queues/q", false);
    }

    #[test]
    fn task_names() {
        check_task("projects/p/locations/l/queues/q/tasks/t_1-A", true);
        check_task(&format!("projects/p/locations/l/queues/q/tasks/{}", "x".repeat(500)), true);
        check_task(&format!("projects/p/locations/l/queues/q/tasks/{}", "x".repeat(501)), false);
        check_task("projects/p/locations/l/queues/q/tasks/", false);
        check_task("projects/p/locations/l/queues/q/tasks/a.b", false);
        check_task("projects/p/locations/l/queues/q_1/tasks/t", false);
        check_task("projects/p/locations/l/queues/q", false);
    }

    #[test]
    fn errors_say_what_to_fix() {
        let err = QueueName::parse("projects/p/locations/l/queues/bad_name").unwrap_err();
        assert_eq!(
            err.message,
            "Queue ID \"bad_name\" can contain only letters ([A-Za-z]), numbers ([0-9]), or hyphens (-). \
             Queue ID must be between 1 and 100 characters."
        );
        let err = QueueName::parse("projects/p/locations/l/queue/q").unwrap_err();
        assert_eq!(err.message, texts::QUEUE_NAME);
        let err = TaskName::parse("projects/p/locations/l/queues/q/tasks/a.b").unwrap_err();
        assert_eq!(
            err.message,
            "Task ID \"a.b\" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), or \
             underscores (_). Task ID must between 1 and 500 characters."
        );
        let err = TaskName::parse("projects/p/locations/l/queues/q_1/tasks/t").unwrap_err();
        assert!(err.message.starts_with("Queue ID \"q_1\""), "{err}");
        assert_eq!(TaskName::parse("projects/p/queues/q/tasks/t").unwrap_err().message, texts::TASK_NAME);
        assert_eq!(TaskName::parse("").unwrap_err().message, texts::TASK_NAME);
    }
}

//! What Google's API front end checks before a gRPC call reaches Cloud Tasks: that the
//! resource a method names is there and has the method's shape. Its refusals have their
//! own texts and details, which clients see; REST gets the same by routing (a path of the
//! wrong shape matches no route).

use tasklane_core::Status;
use tasklane_core::status::Detail;

use crate::access::Principal;

/// The shape of the resource a method names, and the permission the front end says is
/// missing when the name has another shape.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Location,
    Queue,
    Task,
    Operation,
    /// Names the front end does not check the shape of.
    Any,
}

impl Shape {
    fn fits(self, name: &str) -> bool {
        let parts: Vec<&str> = name.split('/').collect();
        let fixed = |words: &[(usize, &str)]| words.iter().all(|(i, w)| parts.get(*i) == Some(w));
        let filled = parts.iter().all(|p| !p.is_empty());
        filled
            && match self {
                Shape::Location => parts.len() == 4 && fixed(&[(0, "projects"), (2, "locations")]),
                Shape::Queue => parts.len() == 6 && fixed(&[(0, "projects"), (2, "locations"), (4, "queues")]),
                Shape::Task => {
                    parts.len() == 8 && fixed(&[(0, "projects"), (2, "locations"), (4, "queues"), (6, "tasks")])
                }
                Shape::Operation => parts.len() == 6 && fixed(&[(0, "projects"), (2, "locations"), (4, "operations")]),
                Shape::Any => true,
            }
    }
}

/// One gRPC call's resource check: its method, the shape its resource must have and the
/// permission that names, and the caller's limits.
pub struct Front {
    /// `google.cloud.tasks.v2.CloudTasks.GetQueue`
    pub method: String,
    pub shape: Shape,
    pub permission: &'static str,
    pub who: Principal,
}

const SERVICE: &str = "cloudtasks.googleapis.com";

impl Front {
    /// Check the resource `name` the call names, as the front end and then tasklane's
    /// token limits do.
    pub fn within(&self, name: &str) -> Result<(), Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("Invalid resource field value in the request.").with_detail(
                Detail::ErrorInfo {
                    reason: "RESOURCE_PROJECT_INVALID".into(),
                    domain: "googleapis.com".into(),
                    metadata: vec![("method".into(), self.method.clone()), ("service".into(), SERVICE.into())],
                },
            ));
        }
        if !name.starts_with("projects/") {
            let message = format!("Permission denied on resource project {name}.");
            return Err(Status::new(tasklane_core::Code::PermissionDenied, message.clone())
                .with_detail(Detail::ErrorInfo {
                    reason: "CONSUMER_INVALID".into(),
                    domain: "googleapis.com".into(),
                    metadata: vec![
                        ("consumer".into(), format!("projects/{name}")),
                        ("containerInfo".into(), name.into()),
                        ("service".into(), SERVICE.into()),
                    ],
                })
                .with_detail(Detail::LocalizedMessage { locale: "en-US".into(), message })
                .with_detail(Detail::help("Google developers console", "https://console.developers.google.com")));
        }
        if !self.shape.fits(name) {
            return Err(Status::new(
                tasklane_core::Code::PermissionDenied,
                format!(
                    "The principal (user or service account) lacks IAM permission \"{}\" for the resource \"{name}\" \
                     (or the resource may not exist).",
                    self.permission
                ),
            ));
        }
        self.who.within(name)
    }
}

/// The front-end check of a Cloud Tasks method: (shape, permission) by method name.
pub fn cloud_tasks(method: &str) -> (Shape, &'static str) {
    match method {
        "ListQueues" => (Shape::Location, "cloudtasks.queues.list"),
        "CreateQueue" => (Shape::Location, "cloudtasks.queues.create"),
        "GetQueue" => (Shape::Queue, "cloudtasks.queues.get"),
        "UpdateQueue" => (Shape::Queue, "cloudtasks.queues.update"),
        "DeleteQueue" => (Shape::Queue, "cloudtasks.queues.delete"),
        "PurgeQueue" => (Shape::Queue, "cloudtasks.queues.purge"),
        "PauseQueue" => (Shape::Queue, "cloudtasks.queues.pause"),
        "ResumeQueue" => (Shape::Queue, "cloudtasks.queues.resume"),
        "GetIamPolicy" | "SetIamPolicy" | "TestIamPermissions" => (Shape::Queue, "cloudtasks.queues.list"),
        "ListTasks" => (Shape::Queue, "cloudtasks.tasks.list"),
        "CreateTask" | "BatchCreateTasks" => (Shape::Queue, "cloudtasks.tasks.create"),
        "BatchDeleteTasks" => (Shape::Queue, "cloudtasks.tasks.delete"),
        "GetTask" => (Shape::Task, "cloudtasks.tasks.get"),
        "DeleteTask" => (Shape::Task, "cloudtasks.tasks.delete"),
        "RunTask" => (Shape::Task, "cloudtasks.tasks.run"),
        _ => (Shape::Any, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn front(method: &str) -> Front {
        let (shape, permission) = cloud_tasks(method);
        Front { method: format!("google.cloud.tasks.v2.CloudTasks.{method}"), shape, permission, who: Principal::Open }
    }

    #[test]
    fn the_front_end_s_refusals() {
        let e = front("GetQueue").within("").unwrap_err();
        assert_eq!(e.message, "Invalid resource field value in the request.");
        assert!(matches!(&e.details[0], Detail::ErrorInfo { reason, .. } if reason == "RESOURCE_PROJECT_INVALID"));
        let e = front("GetQueue").within("not-a-valid-name").unwrap_err();
        assert_eq!(e.code, tasklane_core::Code::PermissionDenied);
        assert_eq!(e.message, "Permission denied on resource project not-a-valid-name.");
        assert_eq!(e.details.len(), 3);
        let e = front("GetTask").within("projects/p/locations/l/queues/q/tasks").unwrap_err();
        assert_eq!(
            e.message,
            "The principal (user or service account) lacks IAM permission \"cloudtasks.tasks.get\" for the resource \
             \"projects/p/locations/l/queues/q/tasks\" (or the resource may not exist)."
        );
        assert!(front("ListQueues").within("projects/p").is_err());
        assert!(front("ListQueues").within("projects/p/locations/l").is_ok());
        // A well-shaped name with a bad ID passes here; Cloud Tasks' own check names the ID.
        assert!(front("GetQueue").within("projects/p/locations/l/queues/bad_id").is_ok());
    }
}

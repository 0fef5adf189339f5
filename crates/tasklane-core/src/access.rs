//! Who may do what: the scopes of API tokens, the actions each allows, a token's limits
//! to projects and queues, and which identities (service accounts, audiences) a task may
//! ask tasklane to sign tokens for. The texts of every refusal live here.

use crate::{Code, Status};

/// What an API token may do, from most to least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything, including tokens, identities and keys.
    Admin,
    /// Create and read tasks and jobs.
    Enqueue,
    /// Read only.
    Read,
    /// Pull workers: lease, acknowledge, fail, renew and give back tasks.
    Worker,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Admin, Scope::Enqueue, Scope::Read, Scope::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Enqueue => "enqueue",
            Scope::Read => "read",
            Scope::Worker => "worker",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, Status> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            Status::invalid_argument(format!("scope \"{s}\" must be one of admin, enqueue, read or worker"))
        })
    }

    pub fn allows(self, action: Action) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Enqueue => matches!(action, Action::Read | Action::Enqueue),
            Scope::Read => action == Action::Read,
            Scope::Worker => action == Action::Work,
        }
    }
}

/// What a request does, as far as access is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read queues, tasks, jobs, dead letters, events, operations and settings.
    Read,
    /// Create tasks and jobs, cancel jobs.
    Enqueue,
    /// Lease, acknowledge, fail, renew and give back pull tasks.
    Work,
    /// Change queues (create, update, pause, resume, purge, delete), delete or run tasks,
    /// redrive or purge dead letters, set IAM policies and CMEK configs.
    Manage,
    /// Manage API tokens, the identities tasks may use, and signing keys.
    Admin,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Action::Read => "reading",
            Action::Enqueue => "creating tasks and jobs",
            Action::Work => "leasing and settling pull tasks",
            Action::Manage => "changing queues, deleting or running tasks and managing dead letters",
            Action::Admin => "managing tokens, identities and keys",
        }
    }

    /// The narrowest scope that allows this action.
    fn needs(self) -> &'static str {
        match self {
            Action::Read => "read, enqueue or admin",
            Action::Enqueue => "enqueue or admin",
            Action::Work => "worker or admin",
            Action::Manage | Action::Admin => "admin",
        }
    }
}

/// What one API token grants: its scope, and optionally the only projects and queues it
/// may touch. A queue limit is a queue id (that queue in any allowed project) or a full
/// queue name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub scope: Scope,
    pub projects: Vec<String>,
    pub queues: Vec<String>,
}

/// The project and queue a resource name is in: `projects/P`, `projects/P/locations/L`,
/// `projects/P/locations/L/queues/Q` and anything below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource<'a> {
    pub project: &'a str,
    /// `projects/P/locations/L/queues/Q` and `Q`, when the resource is in a queue.
    pub queue: Option<(&'a str, &'a str)>,
}

impl<'a> Resource<'a> {
    /// The resource a name is in; `None` for a name that is not under `projects/`.
    pub fn of(name: &'a str) -> Option<Resource<'a>> {
        let parts: Vec<&str> = name.split('/').collect();
        if parts.len() < 2 || parts[0] != "projects" || parts[1].is_empty() {
            return None;
        }
        let queue = if parts.len() >= 6 && parts[2] == "locations" && parts[4] == "queues" {
            let end = parts[..6].iter().map(|p| p.len()).sum::<usize>() + 5;
            Some((&name[..end], parts[5]))
        } else {
            None
        };
        Some(Resource { project: parts[1], queue })
    }
}

pub const MISSING_CREDENTIAL: &str = "Request is missing required authentication credential. Expected an API token as \
     \"Authorization: Bearer <token>\"; an administrator creates one with `tasklane tokens create`.";
pub const INVALID_CREDENTIAL: &str =
    "Request had invalid authentication credentials. The API token is not known: it was mistyped or revoked.";

impl Grant {
    /// Whether this token's scope allows `action`.
    pub fn may(&self, action: Action) -> Result<(), Status> {
        if self.scope.allows(action) {
            return Ok(());
        }
        Err(Status::new(
            Code::PermissionDenied,
            format!(
                "Permission denied: the API token \"{}\" has scope {}, which does not allow {}; that needs scope {}.",
                self.name,
                self.scope.as_str(),
                action.describe(),
                action.needs()
            ),
        ))
    }

    fn limited(&self) -> bool {
        !self.projects.is_empty() || !self.queues.is_empty()
    }

    /// Whether the resource named `name` is within this token's project and queue limits.
    /// A token limited to queues may not use operations that span a project (listing its
    /// queues, its locations), since they would show the other queues.
    pub fn within(&self, name: &str) -> Result<(), Status> {
        if !self.limited() {
            return Ok(());
        }
        let refused = |why: String| {
            Status::new(
                Code::PermissionDenied,
                format!("Permission denied on \"{name}\": the API token \"{}\" {why}.", self.name),
            )
        };
        let Some(resource) = Resource::of(name) else {
            return Err(refused("is limited to some projects or queues, and this resource is in none".into()));
        };
        if !self.projects.is_empty() && !self.projects.iter().any(|p| p == resource.project) {
            return Err(refused(format!("is limited to the projects {}", self.projects.join(", "))));
        }
        if self.queues.is_empty() {
            return Ok(());
        }
        let Some((full, id)) = resource.queue else {
            return Err(refused(format!(
                "is limited to the queues {}, and this operation spans the whole project",
                self.queues.join(", ")
            )));
        };
        if self.queues.iter().any(|q| q == full || q == id) {
            Ok(())
        } else {
            Err(refused(format!("is limited to the queues {}", self.queues.join(", "))))
        }
    }
}

/// Which identities tasks may ask tokens for (Cloud Tasks' `iam.serviceAccounts.actAs`):
/// service-account emails, each exact or `*@domain`, and optionally the audiences (exact,
/// or a prefix ending in `*`) their OIDC tokens may carry. Empty lists allow nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityPolicy {
    pub service_accounts: Vec<String>,
    pub audiences: Vec<String>,
}

fn matches_pattern(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => match pattern.strip_prefix('*') {
            Some(suffix) => value.ends_with(suffix),
            None => pattern == value,
        },
    }
}

impl IdentityPolicy {
    /// Whether a task may carry a token for `email`, with `audience` for an OIDC token.
    pub fn allows(&self, email: &str, audience: Option<&str>) -> Result<(), Status> {
        if !self.service_accounts.iter().any(|p| matches_pattern(p, email)) {
            return Err(Status::new(
                Code::PermissionDenied,
                format!(
                    "Permission denied: tasks may not act as the service account \"{email}\". An administrator \
                     allows it with `tasklane identities allow {email}`."
                ),
            ));
        }
        if let Some(aud) = audience
            && !self.audiences.is_empty()
            && !self.audiences.iter().any(|p| matches_pattern(p, aud))
        {
            return Err(Status::new(
                Code::PermissionDenied,
                format!(
                    "Permission denied: OIDC tokens may not carry the audience \"{aud}\". An administrator \
                     allows it with `tasklane identities allow --audience {aud}`."
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(scope: Scope, projects: &[&str], queues: &[&str]) -> Grant {
        Grant {
            name: "t".into(),
            scope,
            projects: projects.iter().map(|s| s.to_string()).collect(),
            queues: queues.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn scopes_allow_their_actions() {
        use Action::*;
        let table = [
            (Scope::Admin, [true, true, true, true, true]),
            (Scope::Enqueue, [true, true, false, false, false]),
            (Scope::Read, [true, false, false, false, false]),
            (Scope::Worker, [false, false, true, false, false]),
        ];
        for (scope, want) in table {
            for (action, allowed) in [Read, Enqueue, Work, Manage, Admin].into_iter().zip(want) {
                assert_eq!(scope.allows(action), allowed, "{scope:?} {action:?}");
                assert_eq!(grant(scope, &[], &[]).may(action).is_ok(), allowed);
            }
        }
        let err = grant(Scope::Worker, &[], &[]).may(Action::Manage).unwrap_err();
        assert_eq!(err.code, Code::PermissionDenied);
        assert!(err.message.contains("scope worker") && err.message.contains("needs scope admin"), "{}", err.message);
        assert_eq!(Scope::parse("enqueue").unwrap(), Scope::Enqueue);
        assert!(Scope::parse("owner").unwrap_err().message.contains("admin, enqueue, read or worker"));
    }

    #[test]
    fn resources_name_their_project_and_queue() {
        let q = "projects/p/locations/l/queues/q";
        assert_eq!(Resource::of(q), Some(Resource { project: "p", queue: Some((q, "q")) }));
        assert_eq!(
            Resource::of("projects/p/locations/l/queues/q/tasks/t"),
            Some(Resource { project: "p", queue: Some((q, "q")) })
        );
        assert_eq!(Resource::of("projects/p/locations/l"), Some(Resource { project: "p", queue: None }));
        assert_eq!(Resource::of("projects/p"), Some(Resource { project: "p", queue: None }));
        assert_eq!(Resource::of("queues/q"), None);
        assert_eq!(Resource::of("projects/"), None);
    }

    #[test]
    fn limits_keep_a_token_to_its_projects_and_queues() {
        let q = "projects/p/locations/l/queues/q";
        let task = "projects/p/locations/l/queues/q/tasks/t";
        let other = "projects/p/locations/l/queues/other";
        let cases: &[(&[&str], &[&str], &str, bool)] = &[
            (&[], &[], "projects/any/locations/l", true),
            (&["p"], &[], q, true),
            (&["p"], &[], "projects/p/locations/l", true),
            (&["p"], &[], "projects/x/locations/l/queues/q", false),
            (&[], &["q"], task, true),
            (&[], &["q"], "projects/x/locations/l/queues/q", true),
            (&["p"], &["q"], "projects/x/locations/l/queues/q", false),
            (&[], &["q"], other, false),
            (&[], &[q], task, true),
            (&[], &[q], "projects/x/locations/l/queues/q", false),
            (&[], &["q"], "projects/p/locations/l", false),
            (&[], &["q"], "not-a-name", false),
        ];
        for (projects, queues, name, ok) in cases {
            let got = grant(Scope::Admin, projects, queues).within(name);
            assert_eq!(got.is_ok(), *ok, "{projects:?} {queues:?} {name}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.code, Code::PermissionDenied);
                assert!(e.message.contains(name) && e.message.contains("\"t\""), "{}", e.message);
            }
        }
    }

    #[test]
    fn identity_policy_allows_only_listed_accounts_and_audiences() {
        let policy = IdentityPolicy {
            service_accounts: vec!["invoker@p.iam.gserviceaccount.com".into(), "*@ci.example".into()],
            audiences: vec!["https://worker.example/*".into()],
        };
        assert!(policy.allows("invoker@p.iam.gserviceaccount.com", Some("https://worker.example/run")).is_ok());
        assert!(policy.allows("bot@ci.example", None).is_ok());
        let err = policy.allows("admin@p.iam.gserviceaccount.com", None).unwrap_err();
        assert_eq!(err.code, Code::PermissionDenied);
        assert!(err.message.contains("\"admin@p.iam.gserviceaccount.com\""), "{}", err.message);
        let err = policy.allows("bot@ci.example", Some("https://other.example/")).unwrap_err();
        assert!(err.message.contains("audience \"https://other.example/\""), "{}", err.message);
        assert!(IdentityPolicy::default().allows("a@b", None).is_err(), "an empty policy allows nobody");
        let any_audience = IdentityPolicy { service_accounts: vec!["a@b".into()], audiences: vec![] };
        assert!(any_audience.allows("a@b", Some("https://anything/")).is_ok());
    }
}

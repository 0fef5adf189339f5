//! Queue IAM policies, CMEK configs and locations: settings tasklane stores and returns as
//! Cloud Tasks does, so tools that manage them keep working. tasklane does not enforce
//! IAM (it has its own API tokens) and does not encrypt with Cloud KMS; both are recorded
//! as written. Policies are kept as their protobuf bytes in a store record whose version
//! is the etag.

use prost::Message;
use tasklane_core::{LocationName, QueueName, Status};
use tasklane_store::{QueueList, RecordCondition, RecordPut, StoreError};

use crate::service::proto::messages as m;
use crate::service::{CloudTasks, store_status};

fn iam_key(queue: &QueueName) -> String {
    format!("iam:{queue}")
}

fn cmek_key(location: &LocationName) -> String {
    format!("cmek:{location}")
}

/// The etag of a queue that never had a policy, as the real service answers it (`ACAB`).
const NO_POLICY_ETAG: [u8; 3] = [0x00, 0x20, 0x01];

/// A policy's etag: the version of its store record, or [`NO_POLICY_ETAG`] before the first.
pub fn etag(version: i64) -> Vec<u8> {
    if version == 0 { NO_POLICY_ETAG.to_vec() } else { version.to_be_bytes().to_vec() }
}

/// An etag as the real service quotes it in an error: C-escaped bytes (`'\000 \001'`).
fn quoted(etag: &[u8]) -> String {
    etag.iter()
        .map(|&b| match b {
            b'\\' => "\\\\".to_string(),
            b'\'' => "\\'".to_string(),
            0x20..=0x7e => (b as char).to_string(),
            _ => format!("\\{b:03o}"),
        })
        .collect()
}

fn etag_mismatch(sent: &[u8], current: &[u8]) -> Status {
    Status::aborted(format!(
        "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff. \
         The request's ETag '{}' did not match the current policy's ETag '{}'.",
        quoted(sent),
        quoted(current)
    ))
}

/// The record version an etag names, `None` for one this server never gave out.
fn etag_version(etag: &[u8]) -> Option<i64> {
    if etag == NO_POLICY_ETAG {
        return Some(0);
    }
    let bytes: [u8; 8] = etag.try_into().ok()?;
    Some(i64::from_be_bytes(bytes))
}

const MEMBER_PREFIXES: [&str; 7] =
    ["user:", "serviceAccount:", "group:", "domain:", "principal://", "principalSet://", "deleted:"];

/// The texts the real service answers a bad policy with.
mod texts {
    pub const ROLE: &str = "The role name must be in the form \"roles/{role}\", \
        \"organizations/{organization_id}/roles/{role}\", or \"projects/{project_id}/roles/{role}\".";
    pub const CONDITION: &str = "Can't set conditional policy on this resource";
    pub const NO_PERMISSIONS: &str = "At least one permission must be specified.";
    pub const CMEK_NAME: &str =
        "CMEK Config name must be formatted: \"projects/<PROJECT_ID>/locations/<LOCATION_ID>/cmekConfig\".";
    pub const CMEK_HEADERS: &str = "CMEK cannot be enabled on any project that has one or more queues with HTTP \
        Target Override headers or tasks ttl of more than 60 days.";
}

/// Check a CMEK key as the real service does: a Cloud KMS key in the config's location.
/// Another KMS resource (a key ring, a key version) is a bad argument; a key elsewhere is
/// not found; anything else is no resource name at all.
fn check_kms_key(key: &str, location: &LocationName) -> Result<(), Status> {
    let parts: Vec<&str> = key.split('/').collect();
    let kms = parts.len() >= 6
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "keyRings"
        && parts.iter().all(|p| !p.is_empty());
    if !kms {
        return Err(Status::invalid_argument(format!(
            "Resource name [{key}] does not match any known resource name pattern."
        )));
    }
    if parts.len() != 8 || parts[6] != "cryptoKeys" {
        return Err(Status::invalid_argument(tasklane_core::task::texts::INVALID_ARGUMENT));
    }
    if parts[3] != location.location {
        return Err(Status::not_found(tasklane_core::queue::texts::NOT_FOUND));
    }
    Ok(())
}

fn validate_policy(p: &m::Policy) -> Result<(), Status> {
    if ![0, 1, 3].contains(&p.version) {
        return Err(Status::invalid_argument(format!(
            "Specified policy version ({}) is not supported. For more information, please refer to \
             https://cloud.google.com/iam/help/allow-policies/versions.",
            p.version
        )));
    }
    for b in &p.bindings {
        if !b.role.starts_with("roles/") && !b.role.starts_with("projects/") && !b.role.starts_with("organizations/") {
            return Err(Status::invalid_argument(texts::ROLE));
        }
        for member in &b.members {
            let known = member == "allUsers"
                || member == "allAuthenticatedUsers"
                || MEMBER_PREFIXES.iter().any(|p| member.len() > p.len() && member.starts_with(p));
            if !known {
                return Err(Status::invalid_argument(format!(
                    "The member {member} is of an unknown type. Please set a valid type prefix for the member."
                )));
            }
        }
        if b.condition.is_some() {
            return Err(Status::invalid_argument(texts::CONDITION));
        }
    }
    Ok(())
}

/// A policy as the real service keeps it: one binding per role (in first-seen order) with
/// its members once each, no binding without members, version 1.
fn normalized(mut p: m::Policy) -> m::Policy {
    let mut bindings: Vec<m::Binding> = Vec::new();
    for b in p.bindings {
        let at = match bindings.iter().position(|have| have.role == b.role) {
            Some(i) => i,
            None => {
                bindings.push(m::Binding { role: b.role, members: Vec::new(), condition: None });
                bindings.len() - 1
            }
        };
        for member in b.members {
            if !bindings[at].members.contains(&member) {
                bindings[at].members.push(member);
            }
        }
    }
    bindings.retain(|b| !b.members.is_empty());
    p.bindings = bindings;
    p.version = 1;
    p
}

/// The permissions a queue can be tested for (a queue's own, and its tasks').
const QUEUE_PERMISSIONS: [&str; 14] = [
    "cloudtasks.queues.delete",
    "cloudtasks.queues.get",
    "cloudtasks.queues.getIamPolicy",
    "cloudtasks.queues.pause",
    "cloudtasks.queues.purge",
    "cloudtasks.queues.resume",
    "cloudtasks.queues.setIamPolicy",
    "cloudtasks.queues.update",
    "cloudtasks.tasks.create",
    "cloudtasks.tasks.delete",
    "cloudtasks.tasks.fullView",
    "cloudtasks.tasks.get",
    "cloudtasks.tasks.list",
    "cloudtasks.tasks.run",
];

/// `service.resource.verb`, each part letters only.
fn well_formed_permission(p: &str) -> bool {
    let parts: Vec<&str> = p.split('.').collect();
    parts.len() == 3 && parts.iter().all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphabetic()))
}

/// The answer of `TestIamPermissions` for a queue: every permission asked for, sorted and
/// once each, since tasklane does not enforce IAM; the first malformed or foreign one
/// refuses the request, as in the real service.
pub fn tested_permissions(permissions: Vec<String>) -> Result<Vec<String>, Status> {
    if permissions.is_empty() {
        return Err(Status::invalid_argument(texts::NO_PERMISSIONS));
    }
    for p in &permissions {
        if !well_formed_permission(p) {
            return Err(Status::invalid_argument(format!("The permission {p} is invalid.")));
        }
        if !QUEUE_PERMISSIONS.contains(&p.as_str()) {
            return Err(Status::invalid_argument(format!("Permission {p} is not valid for this resource.")));
        }
    }
    let mut granted = permissions;
    granted.sort();
    granted.dedup();
    Ok(granted)
}

impl CloudTasks {
    async fn queue_must_exist(&self, resource: &str) -> Result<QueueName, Status> {
        let name = QueueName::parse(resource)?;
        self.get_queue(resource).await?;
        Ok(name)
    }

    pub async fn get_iam_policy(&self, resource: &str) -> Result<m::Policy, Status> {
        let queue = self.queue_must_exist(resource).await?;
        match self.store().record_get(&iam_key(&queue), self.now()).await.map_err(store_status)? {
            None => Ok(m::Policy { etag: etag(0), ..Default::default() }),
            Some(r) => {
                let mut p = m::Policy::decode(r.value.as_slice())
                    .map_err(|e| Status::internal(format!("a stored policy is unreadable: {e}")))?;
                p.etag = etag(r.version);
                // Policies set before they were kept as the real service keeps them.
                p.version = 1;
                Ok(p)
            }
        }
    }

    /// `SetIamPolicy`: replaces the policy; with an etag, only if it is still current.
    /// `update_mask` may name `bindings`, `etag` and `audit_configs`; the default is bindings and etag.
    pub async fn set_iam_policy(
        &self,
        resource: &str,
        policy: Option<m::Policy>,
        mask: Option<Vec<String>>,
    ) -> Result<m::Policy, Status> {
        let queue = self.queue_must_exist(resource).await?;
        // An absent policy sets an empty one, as in the real service.
        let policy = policy.unwrap_or_default();
        validate_policy(&policy)?;
        let mut policy = normalized(policy);
        let paths = mask.unwrap_or_else(|| vec!["bindings".into(), "etag".into()]);
        if let Some(bad) =
            paths.iter().find(|p| !["bindings", "etag", "audit_configs", "auditConfigs"].contains(&p.as_str()))
        {
            return Err(Status::invalid_argument(format!(
                "update_mask path \"{bad}\" is not a field of a policy that can be set; use bindings, etag or audit_configs"
            )));
        }
        let current = self.get_iam_policy(resource).await?;
        if !paths.iter().any(|p| p == "audit_configs" || p == "auditConfigs") {
            policy.audit_configs = current.audit_configs.clone();
        }
        if !paths.iter().any(|p| p == "bindings") {
            policy.bindings = current.bindings.clone();
        }
        let condition = if policy.etag.is_empty() {
            RecordCondition::Always
        } else {
            match etag_version(&policy.etag) {
                Some(0) => RecordCondition::Absent,
                Some(v) => RecordCondition::Version(v),
                None => return Err(etag_mismatch(&policy.etag, &current.etag)),
            }
        };
        let sent_etag = std::mem::take(&mut policy.etag);
        let put = RecordPut {
            key: iam_key(&queue),
            value: policy.encode_to_vec(),
            condition,
            expires_at: None,
            now: self.now(),
        };
        let record = match self.store().record_put(put).await {
            Ok(record) => record,
            Err(StoreError::RecordConflict) => {
                let now_current = self.get_iam_policy(resource).await?;
                return Err(etag_mismatch(&sent_etag, &now_current.etag));
            }
            Err(other) => return Err(store_status(other)),
        };
        policy.etag = etag(record.version);
        Ok(policy)
    }

    pub async fn test_iam_permissions(&self, resource: &str, permissions: Vec<String>) -> Result<Vec<String>, Status> {
        self.queue_must_exist(resource).await?;
        tested_permissions(permissions)
    }

    /// Drop a deleted queue's policy, so a queue created again under the name starts clean.
    pub(crate) async fn forget_queue_policy(&self, queue: &QueueName) -> Result<(), Status> {
        self.store().record_delete(&iam_key(queue)).await.map_err(store_status)
    }

    fn cmek_location(name: &str) -> Result<LocationName, Status> {
        let bad = || Status::invalid_argument(texts::CMEK_NAME);
        let location = name.strip_suffix("/cmekConfig").ok_or_else(bad)?;
        LocationName::parse(location).map_err(|_| bad())
    }

    /// Whether any queue of `location` overrides headers (the real service will not turn
    /// CMEK on then).
    async fn location_overrides_headers(&self, location: &LocationName) -> Result<bool, Status> {
        let mut after = None;
        loop {
            let page = self
                .store()
                .queue_list(QueueList { parent: Some(location.clone()), after: after.clone(), limit: 1000 })
                .await
                .map_err(store_status)?;
            if page.iter().any(|q| q.http_target.as_ref().is_some_and(|t| !t.headers.is_empty())) {
                return Ok(true);
            }
            if page.len() < 1000 {
                return Ok(false);
            }
            after = page.last().map(|q| q.name.clone());
        }
    }

    pub async fn get_cmek_config(&self, name: &str) -> Result<m::CmekConfig, Status> {
        let location = Self::cmek_location(name)?;
        let kms_key = match self.store().record_get(&cmek_key(&location), self.now()).await.map_err(store_status)? {
            Some(r) => {
                String::from_utf8(r.value).map_err(|_| Status::internal("a stored CMEK config is unreadable"))?
            }
            None => String::new(),
        };
        Ok(m::CmekConfig { name: format!("{location}/cmekConfig"), kms_key })
    }

    /// `UpdateCmekConfig`: set or clear (empty `kms_key`) the location's key.
    pub async fn update_cmek_config(
        &self,
        config: Option<m::CmekConfig>,
        mask: Option<Vec<String>>,
    ) -> Result<m::CmekConfig, Status> {
        let Some(config) = config else {
            return Err(Status::invalid_argument("cmek_config is required"));
        };
        let location = Self::cmek_location(&config.name)?;
        if let Some(bad) = mask.iter().flatten().find(|p| *p != "kms_key" && *p != "kmsKey") {
            return Err(Status::invalid_argument(format!("update_mask path \"{bad}\" is not settable; use kms_key")));
        }
        let key = config.kms_key.trim();
        if !key.is_empty() {
            if self.location_overrides_headers(&location).await? {
                return Err(Status::failed_precondition(texts::CMEK_HEADERS).with_detail(
                    tasklane_core::status::Detail::cloud_tasks("UNSATISFIED_PRECONDITION_FOR_CMEK", &[]),
                ));
            }
            check_kms_key(key, &location)?;
        }
        let put = RecordPut {
            key: cmek_key(&location),
            value: key.as_bytes().to_vec(),
            condition: RecordCondition::Always,
            expires_at: None,
            now: self.now(),
        };
        self.store().record_put(put).await.map_err(store_status)?;
        Ok(m::CmekConfig { name: format!("{location}/cmekConfig"), kms_key: key.to_string() })
    }

    /// `GetLocation`: tasklane serves every well-formed location.
    pub async fn get_location(&self, name: &str) -> Result<LocationName, Status> {
        LocationName::parse(name)
    }

    /// `ListLocations`: the project's locations that hold queues, in name order.
    pub async fn list_locations(&self, project_name: &str) -> Result<Vec<LocationName>, Status> {
        let project =
            project_name.strip_prefix("projects/").filter(|p| !p.is_empty() && !p.contains('/')).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "Invalid project name \"{project_name}\": expected projects/PROJECT_ID"
                ))
            })?;
        let mut locations: Vec<LocationName> = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store()
                .queue_list(QueueList { parent: None, after: after.clone(), limit: 1000 })
                .await
                .map_err(store_status)?;
            let done = page.len() < 1000;
            for q in page {
                if q.name.parent.project == project && !locations.contains(&q.name.parent) {
                    locations.push(q.name.parent.clone());
                }
                after = Some(q.name);
            }
            if done {
                break;
            }
        }
        locations.sort_by_key(|l| l.to_string());
        Ok(locations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(role: &str, members: &[&str]) -> m::Binding {
        m::Binding { role: role.into(), members: members.iter().map(|m| m.to_string()).collect(), condition: None }
    }

    #[test]
    fn policies_are_kept_merged_and_at_version_1() {
        let p = m::Policy {
            version: 3,
            bindings: vec![
                binding("roles/viewer", &["user:a@x", "user:b@x"]),
                binding("roles/editor", &[]),
                binding("roles/viewer", &["user:b@x", "user:c@x"]),
            ],
            ..Default::default()
        };
        let n = normalized(p);
        assert_eq!(n.version, 1);
        assert_eq!(n.bindings, vec![binding("roles/viewer", &["user:a@x", "user:b@x", "user:c@x"])]);
    }

    #[test]
    fn bad_policies_get_the_real_texts() {
        let check = |p: m::Policy, text: &str| assert_eq!(validate_policy(&p).unwrap_err().message, text);
        check(m::Policy { bindings: vec![binding("viewer", &["user:a@x"])], ..Default::default() }, texts::ROLE);
        check(
            m::Policy { bindings: vec![binding("roles/viewer", &["robot:x@example.com"])], ..Default::default() },
            "The member robot:x@example.com is of an unknown type. Please set a valid type prefix for the member.",
        );
        check(
            m::Policy { version: 4, ..Default::default() },
            "Specified policy version (4) is not supported. For more information, please refer to \
             https://cloud.google.com/iam/help/allow-policies/versions.",
        );
        let mut conditional = binding("roles/viewer", &["user:a@x"]);
        conditional.condition = Some(m::Expr::default());
        check(m::Policy { version: 3, bindings: vec![conditional], ..Default::default() }, texts::CONDITION);
    }

    #[test]
    fn kms_keys() {
        let here = LocationName::parse("projects/p/locations/here").unwrap();
        let check = |key: &str| check_kms_key(key, &here).map_err(|e| (e.code, e.message));
        assert!(check("projects/p/locations/here/keyRings/r/cryptoKeys/k").is_ok());
        assert_eq!(
            check("not-a-key").unwrap_err().1,
            "Resource name [not-a-key] does not match any known resource name pattern."
        );
        for other in [
            "projects/p/locations/here/keyRings/r",
            "projects/p/locations/here/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
        ] {
            assert_eq!(check(other).unwrap_err().1, "Request contains an invalid argument.");
        }
        let elsewhere = check("projects/p/locations/there/keyRings/r/cryptoKeys/k").unwrap_err();
        assert_eq!(elsewhere, (tasklane_core::Code::NotFound, "Requested entity was not found.".to_string()));
    }

    #[test]
    fn etags() {
        assert_eq!(etag(0), vec![0x00, 0x20, 0x01]);
        assert_eq!(etag_version(&etag(0)), Some(0));
        assert_eq!(etag_version(&etag(7)), Some(7));
        assert_eq!(etag_version(b"junk"), None);
        assert_eq!(quoted(&[0, 0x20, 1]), "\\000 \\001");
    }

    #[test]
    fn permission_tests_are_sorted_and_checked_in_order() {
        let p = |list: &[&str]| tested_permissions(list.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            p(&["cloudtasks.tasks.create", "cloudtasks.queues.get", "cloudtasks.tasks.create"]).unwrap(),
            vec!["cloudtasks.queues.get".to_string(), "cloudtasks.tasks.create".to_string()]
        );
        assert_eq!(p(&[]).unwrap_err().message, "At least one permission must be specified.");
        for bad in ["foo", "cloudtasks.queues.", "cloudtasks.*"] {
            assert_eq!(p(&[bad]).unwrap_err().message, format!("The permission {bad} is invalid."));
        }
        for foreign in ["storage.objects.get", "cloudtasks.queues.create"] {
            assert_eq!(
                p(&[foreign]).unwrap_err().message,
                format!("Permission {foreign} is not valid for this resource.")
            );
        }
        // The first bad permission decides.
        assert_eq!(
            p(&["cloudtasks.queues.get", "x", "storage.objects.get"]).unwrap_err().message,
            "The permission x is invalid."
        );
    }
}

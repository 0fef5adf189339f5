//! Queue IAM policies, CMEK configs and locations: settings tasklane stores and returns as
//! Cloud Tasks does, so tools that manage them keep working. tasklane does not enforce
//! IAM (it has its own API tokens) and does not encrypt with Cloud KMS; both are recorded
//! as written. Policies are kept as their protobuf bytes in a store record whose version
//! is the etag.

use prost::Message;
use tasklane_core::{LocationName, QueueName, Status};
use tasklane_store::{QueueList, RecordCondition, RecordPut, StoreError};

use crate::grpc::messages as m;
use crate::service::{CloudTasks, store_status};

const ETAG_MISMATCH: &str = "There were concurrent policy changes. Please retry the whole read-modify-write \
                             with exponential backoff. The request's ETag did not match the current policy.";

fn iam_key(queue: &QueueName) -> String {
    format!("iam:{queue}")
}

fn cmek_key(location: &LocationName) -> String {
    format!("cmek:{location}")
}

pub fn etag(version: i64) -> Vec<u8> {
    version.to_be_bytes().to_vec()
}

fn etag_version(etag: &[u8]) -> Result<i64, Status> {
    let bytes: [u8; 8] = etag.try_into().map_err(|_| Status::aborted(ETAG_MISMATCH))?;
    Ok(i64::from_be_bytes(bytes))
}

const MEMBER_PREFIXES: [&str; 7] =
    ["user:", "serviceAccount:", "group:", "domain:", "principal://", "principalSet://", "deleted:"];

fn validate_policy(p: &m::Policy) -> Result<(), Status> {
    if ![0, 1, 3].contains(&p.version) {
        return Err(Status::invalid_argument(format!("policy.version is {}; it must be 1 or 3", p.version)));
    }
    for (i, b) in p.bindings.iter().enumerate() {
        if !b.role.starts_with("roles/") && !b.role.starts_with("projects/") && !b.role.starts_with("organizations/") {
            return Err(Status::invalid_argument(format!(
                "policy.bindings[{i}].role \"{}\" is not a role; roles look like roles/cloudtasks.enqueuer",
                b.role
            )));
        }
        for member in &b.members {
            let known = member == "allUsers"
                || member == "allAuthenticatedUsers"
                || MEMBER_PREFIXES.iter().any(|p| member.len() > p.len() && member.starts_with(p));
            if !known {
                return Err(Status::invalid_argument(format!(
                    "policy.bindings[{i}].members has \"{member}\"; members look like user:EMAIL, serviceAccount:EMAIL, \
                     group:EMAIL, domain:DOMAIN, allUsers or allAuthenticatedUsers"
                )));
            }
        }
        if b.condition.is_some() && p.version < 3 {
            return Err(Status::invalid_argument(format!(
                "policy.bindings[{i}] has a condition, which needs policy.version 3"
            )));
        }
    }
    Ok(())
}

/// Which permissions `TestIamPermissions` grants: every Cloud Tasks permission, since
/// tasklane does not enforce IAM.
fn grantable(permission: &str) -> bool {
    permission.starts_with("cloudtasks.")
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
        let Some(mut policy) = policy else {
            return Err(Status::invalid_argument("policy is required"));
        };
        validate_policy(&policy)?;
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
            match etag_version(&policy.etag)? {
                0 => RecordCondition::Absent,
                v => RecordCondition::Version(v),
            }
        };
        policy.etag = Vec::new();
        let put = RecordPut {
            key: iam_key(&queue),
            value: policy.encode_to_vec(),
            condition,
            expires_at: None,
            now: self.now(),
        };
        let record = self.store().record_put(put).await.map_err(|e| match e {
            StoreError::RecordConflict => Status::aborted(ETAG_MISMATCH),
            other => store_status(other),
        })?;
        policy.etag = etag(record.version);
        Ok(policy)
    }

    pub async fn test_iam_permissions(&self, resource: &str, permissions: Vec<String>) -> Result<Vec<String>, Status> {
        self.queue_must_exist(resource).await?;
        if let Some(bad) = permissions.iter().find(|p| p.contains(['*', ' '])) {
            return Err(Status::invalid_argument(format!(
                "Permission \"{bad}\" is not valid; wildcards are not allowed"
            )));
        }
        Ok(permissions.into_iter().filter(|p| grantable(p)).collect())
    }

    /// Drop a deleted queue's policy, so a queue created again under the name starts clean.
    pub(crate) async fn forget_queue_policy(&self, queue: &QueueName) -> Result<(), Status> {
        self.store().record_delete(&iam_key(queue)).await.map_err(store_status)
    }

    fn cmek_location(name: &str) -> Result<LocationName, Status> {
        let location = name.strip_suffix("/cmekConfig").ok_or_else(|| {
            Status::invalid_argument(format!(
                "Invalid CMEK config name \"{name}\": expected projects/PROJECT_ID/locations/LOCATION_ID/cmekConfig"
            ))
        })?;
        LocationName::parse(location)
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
            let parts: Vec<&str> = key.split('/').collect();
            let shaped = parts.len() == 8
                && parts[0] == "projects"
                && parts[2] == "locations"
                && parts[4] == "keyRings"
                && parts[6] == "cryptoKeys"
                && parts.iter().all(|p| !p.is_empty());
            if !shaped {
                return Err(Status::invalid_argument(format!(
                    "kms_key \"{key}\" must look like projects/PROJECT_ID/locations/LOCATION_ID/keyRings/KEY_RING/cryptoKeys/KEY"
                )));
            }
            if parts[3] != location.location {
                return Err(Status::invalid_argument(format!(
                    "kms_key is in location \"{}\"; the key must be in the queue location \"{}\"",
                    parts[3], location.location
                )));
            }
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

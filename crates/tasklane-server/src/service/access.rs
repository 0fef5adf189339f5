//! Who may call the API: API tokens (made, listed, revoked, checked on each request), the
//! identities tasks may ask tokens for, and whether the server is open without a token.
//!
//! Tokens are `tlk_` and 256 random bits in base64url, shown once; the store keeps only
//! their SHA-256 (a record `api-token:HASH`), with the token's name, scope and limits.
//! Every node keeps a snapshot of the tokens and the identity policy, read again when a
//! change is made through this node or announced by another (over the cluster's wake-up
//! channel), and at most `REFRESH_EMBEDDED` after a change made straight in an embedded
//! store (`tasklane tokens create --data-dir`), so a revoked token stops working at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tasklane_core::access::{Action, Grant, INVALID_CREDENTIAL, IdentityPolicy, MISSING_CREDENTIAL, Scope};
use tasklane_core::egress::Rule;

use crate::egress::EgressGate;
use tasklane_core::{AuthToken, Clock, Code, Status, Timestamp};
use tasklane_store::{Record, RecordCondition, RecordPut, Store};
use tokio::sync::mpsc;

use crate::engine::errors::store_status;

const TOKEN_PREFIX: &str = "tlk_";
const TOKEN_RECORD: &str = "api-token:";
/// The settings records (identities, egress), read together.
const SETTINGS_PREFIX: &str = "access:";
const IDENTITIES_RECORD: &str = "access:identities";
const EGRESS_RECORD: &str = "access:egress";
/// What other nodes are told when tokens or identities change (not a queue name).
pub use crate::engine::cluster::ACCESS_CHANGED as CHANGED_NOTICE;
/// The longest a change made straight in an embedded store (by `tasklane tokens … --data-dir`
/// while the server runs) goes unseen. Cluster nodes hear of every change, so they re-read
/// only as a safety net.
pub const REFRESH_EMBEDDED: Duration = Duration::from_secs(2);
pub const REFRESH_CLUSTER: Duration = Duration::from_secs(60);

/// An API token as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The first 12 hex digits of the token's hash: safe to show, enough to name it.
    pub id: String,
    pub grant: Grant,
    pub created_at: Timestamp,
}

/// A new token: its one showing.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub secret: String,
    pub info: TokenInfo,
}

/// Who is calling: anyone (an open server), or the holder of one token.
#[derive(Debug, Clone)]
pub enum Principal {
    Open,
    Token(Arc<Grant>),
}

impl Principal {
    pub fn may(&self, action: Action) -> Result<(), Status> {
        match self {
            Principal::Open => Ok(()),
            Principal::Token(g) => g.may(action),
        }
    }

    /// Whether the resource named `name` is within the token's limits.
    pub fn within(&self, name: &str) -> Result<(), Status> {
        match self {
            Principal::Open => Ok(()),
            Principal::Token(g) => g.within(name),
        }
    }
}

struct Snapshot {
    tokens: HashMap<String, TokenInfo>,
    identities: IdentityPolicy,
    loaded: Option<Instant>,
}

/// The egress rules kept in the store, beside the flags' (`tasklane egress …`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredEgress {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

pub struct Access {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Whether requests without a token are served while no token exists (loopback, or
    /// `--allow-unauthenticated`).
    open_without_tokens: bool,
    /// How old a snapshot may get before a request reads tokens again.
    refresh: Duration,
    snapshot: RwLock<Snapshot>,
    reload: tokio::sync::Mutex<()>,
    /// Where tasks and callbacks may be sent: the flags' rules with the store's.
    egress: EgressGate,
    notifier: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

fn token_hash(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn info_json(info: &TokenInfo) -> Value {
    json!({
        "id": info.id,
        "name": info.grant.name,
        "scope": info.grant.scope.as_str(),
        "projects": info.grant.projects,
        "queues": info.grant.queues,
        "created_at_micros": info.created_at.0,
    })
}

/// The strings of `v[key]`, a JSON list (anything else reads as none).
pub fn strings(v: &Value, key: &str) -> Vec<String> {
    v[key].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// A token record: its hash (the key's end) and what it grants; `None` if unreadable.
fn token_of(r: &Record) -> Option<(String, TokenInfo)> {
    let hash = r.key.strip_prefix(TOKEN_RECORD)?;
    let value: Value = serde_json::from_slice(&r.value).ok()?;
    Some((hash.to_string(), info_from(hash.get(..12)?, &value)?))
}

fn info_from(id: &str, v: &Value) -> Option<TokenInfo> {
    let list = |k: &str| strings(v, k);
    Some(TokenInfo {
        id: id.to_string(),
        grant: Grant {
            name: v["name"].as_str()?.to_string(),
            scope: Scope::parse(v["scope"].as_str()?).ok()?,
            projects: list("projects"),
            queues: list("queues"),
        },
        created_at: Timestamp(v["created_at_micros"].as_i64().unwrap_or(0)),
    })
}

fn egress_from(bytes: &[u8]) -> StoredEgress {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let list = |k: &str| strings(&v, k).iter().filter_map(|s| Rule::parse(s).ok()).collect();
    StoredEgress { allow: list("allow"), deny: list("deny") }
}

fn identities_from(bytes: &[u8]) -> IdentityPolicy {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    IdentityPolicy { service_accounts: strings(&v, "service_accounts"), audiences: strings(&v, "audiences") }
}

impl Access {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, open_without_tokens: bool, refresh: Duration) -> Access {
        Access {
            store,
            clock,
            open_without_tokens,
            refresh,
            snapshot: RwLock::new(Snapshot {
                tokens: HashMap::new(),
                identities: IdentityPolicy::default(),
                loaded: None,
            }),
            reload: tokio::sync::Mutex::new(()),
            notifier: Mutex::new(None),
            egress: EgressGate::open(),
        }
    }

    /// Check the targets of new tasks, queues and callbacks against `egress`.
    pub fn with_egress(mut self, egress: EgressGate) -> Self {
        self.egress = egress;
        self
    }

    /// Whether `url` (the field `field` of a request) may be a target, before any lookup.
    pub fn check_target(&self, field: &str, url: &str) -> Result<(), Status> {
        crate::egress::check_url(&self.egress.current(), field, url)
    }

    /// Whether a host name an override sets may be a target.
    pub fn check_target_host(&self, field: &str, host: &str) -> Result<(), Status> {
        self.egress.current().check_host(host).map_err(|why| {
            Status::new(Code::PermissionDenied, format!("{field} \"{host}\" is not an allowed target: {why}"))
        })
    }

    /// Announce changes to other nodes through this channel (the cluster's wake-up relay).
    pub fn announce_with(&self, notifier: mpsc::UnboundedSender<String>) {
        if let Ok(mut n) = self.notifier.lock() {
            *n = Some(notifier);
        }
    }

    /// Forget the snapshot: the next request reads tokens and identities again.
    pub fn invalidate(&self) {
        if let Ok(mut s) = self.snapshot.write() {
            s.loaded = None;
        }
    }

    /// Forget the snapshot here and tell the other nodes (tokens, identities or keys changed).
    pub fn changed(&self) {
        self.invalidate();
        if let Ok(n) = self.notifier.lock()
            && let Some(n) = n.as_ref()
        {
            let _ = n.send(CHANGED_NOTICE.to_string());
        }
    }

    async fn fresh(&self) -> Result<(), Status> {
        let stale = |s: &Snapshot| s.loaded.is_none_or(|t| t.elapsed() >= self.refresh);
        if !self.snapshot.read().map(|s| stale(&s)).unwrap_or(true) {
            return Ok(());
        }
        let _one = self.reload.lock().await;
        if !self.snapshot.read().map(|s| stale(&s)).unwrap_or(true) {
            return Ok(());
        }
        let now = self.clock.now();
        let records = self.store.record_list(TOKEN_RECORD, now).await.map_err(store_status)?;
        let mut tokens = HashMap::new();
        for r in records {
            match token_of(&r) {
                Some((hash, info)) => {
                    tokens.insert(hash, info);
                }
                None => tracing::warn!(record = %r.key, "an API token record could not be read; it is ignored"),
            }
        }
        let settings = self.store.record_list(SETTINGS_PREFIX, now).await.map_err(store_status)?;
        let setting = |key: &str| settings.iter().find(|r| r.key == key).map(|r| r.value.as_slice());
        let identities = setting(IDENTITIES_RECORD).map(identities_from).unwrap_or_default();
        let egress = setting(EGRESS_RECORD).map(egress_from).unwrap_or_default();
        self.egress.apply_stored(&egress.allow, &egress.deny);
        if let Ok(mut s) = self.snapshot.write() {
            *s = Snapshot { tokens, identities, loaded: Some(Instant::now()) };
        }
        Ok(())
    }

    /// Read tokens, identities and egress rules again now (a change was announced).
    pub async fn reload(&self) {
        self.invalidate();
        if let Err(e) = self.fresh().await {
            tracing::warn!(error = %e.message, "re-read tokens, identities and egress rules");
        }
    }

    /// The egress rules kept in the store.
    pub async fn egress_stored(&self) -> Result<StoredEgress, Status> {
        let record = self.store.record_get(EGRESS_RECORD, self.clock.now()).await.map_err(store_status)?;
        Ok(record.map(|r| egress_from(&r.value)).unwrap_or_default())
    }

    /// Replace the egress rules kept in the store; they apply at once, on every node.
    pub async fn egress_set(&self, rules: StoredEgress) -> Result<StoredEgress, Status> {
        let text = |list: &[Rule]| list.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        self.setting_put(EGRESS_RECORD, json!({ "allow": text(&rules.allow), "deny": text(&rules.deny) })).await?;
        self.egress.apply_stored(&rules.allow, &rules.deny);
        Ok(rules)
    }

    /// Write a setting record and tell every node.
    async fn setting_put(&self, key: &str, value: Value) -> Result<(), Status> {
        let put = RecordPut {
            key: key.into(),
            value: value.to_string().into_bytes(),
            condition: RecordCondition::Always,
            expires_at: None,
            now: self.clock.now(),
        };
        self.store.record_put(put).await.map_err(store_status)?;
        self.changed();
        Ok(())
    }

    /// The flags' egress rules, for showing beside the stored ones; `None` on a loopback
    /// server, which sends anywhere.
    pub fn egress_flags(&self) -> Option<(Vec<String>, Vec<String>)> {
        let flags = self.egress.flags();
        let text = |list: &[Rule]| list.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        (!flags.open).then(|| (text(&flags.allow), text(&flags.deny)))
    }

    /// Whether any API token exists.
    pub async fn has_tokens(&self) -> Result<bool, Status> {
        self.fresh().await?;
        Ok(self.snapshot.read().map(|s| !s.tokens.is_empty()).unwrap_or(true))
    }

    /// Whether requests must carry a token: always once any token exists, and with none
    /// only on a server that is not open (which refuses to start that way).
    pub async fn required(&self) -> Result<bool, Status> {
        Ok(self.has_tokens().await? || !self.open_without_tokens)
    }

    /// Who sends a request with `bearer` (the token from `Authorization: Bearer`).
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, Status> {
        if !self.required().await? {
            // An open server ignores credentials, as a client may send its own (a Google
            // access token from the official libraries).
            return Ok(Principal::Open);
        }
        let Some(secret) = bearer.filter(|b| !b.is_empty()) else {
            return Err(Status::new(Code::Unauthenticated, MISSING_CREDENTIAL));
        };
        let hash = token_hash(secret);
        if let Some(info) = self.snapshot.read().ok().and_then(|s| s.tokens.get(&hash).cloned()) {
            return Ok(Principal::Token(Arc::new(info.grant)));
        }
        // Made on another node or straight in the store since the snapshot: read it.
        let record =
            self.store.record_get(&format!("{TOKEN_RECORD}{hash}"), self.clock.now()).await.map_err(store_status)?;
        match record.as_ref().and_then(token_of) {
            Some((_, info)) => Ok(Principal::Token(Arc::new(info.grant))),
            None => Err(Status::new(Code::Unauthenticated, INVALID_CREDENTIAL)),
        }
    }

    pub async fn token_list(&self) -> Result<Vec<TokenInfo>, Status> {
        let records = self.store.record_list(TOKEN_RECORD, self.clock.now()).await.map_err(store_status)?;
        let mut out: Vec<TokenInfo> = records.iter().filter_map(token_of).map(|(_, info)| info).collect();
        out.sort_by(|a, b| a.grant.name.cmp(&b.grant.name));
        Ok(out)
    }

    /// Make a token. Its secret is in the answer and nowhere else.
    pub async fn token_create(&self, grant: Grant) -> Result<NewToken, Status> {
        if !valid_token_name(&grant.name) {
            return Err(Status::invalid_argument(format!(
                "token name \"{}\" must be 1 to 64 letters, digits, '.', '_' or '-'",
                grant.name
            )));
        }
        for q in grant.queues.iter().chain(&grant.projects) {
            if q.is_empty() || q.contains(char::is_whitespace) {
                return Err(Status::invalid_argument(format!("\"{q}\" is not a project or queue to limit a token to")));
            }
        }
        if self.token_list().await?.iter().any(|t| t.grant.name == grant.name) {
            return Err(Status::already_exists(format!(
                "A token named \"{}\" already exists; revoke it first or choose another name.",
                grant.name
            )));
        }
        let bytes: [u8; 32] = crate::engine::random_bytes("a token")?;
        let secret = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = token_hash(&secret);
        let info = TokenInfo { id: hash[..12].to_string(), grant, created_at: self.clock.now() };
        let put = RecordPut {
            key: format!("{TOKEN_RECORD}{hash}"),
            value: info_json(&info).to_string().into_bytes(),
            condition: RecordCondition::Absent,
            expires_at: None,
            now: info.created_at,
        };
        self.store.record_put(put).await.map_err(store_status)?;
        self.changed();
        Ok(NewToken { secret, info })
    }

    /// Revoke the token with this name or id; it stops working at once.
    pub async fn token_revoke(&self, name_or_id: &str) -> Result<TokenInfo, Status> {
        let records = self.store.record_list(TOKEN_RECORD, self.clock.now()).await.map_err(store_status)?;
        for r in records {
            let Some((_, info)) = token_of(&r) else { continue };
            if info.grant.name == name_or_id || info.id == name_or_id {
                self.store.record_delete(&r.key).await.map_err(store_status)?;
                self.changed();
                return Ok(info);
            }
        }
        Err(Status::not_found(format!("No API token is named \"{name_or_id}\" or has that id.")))
    }

    pub async fn identities(&self) -> Result<IdentityPolicy, Status> {
        self.fresh().await?;
        Ok(self.snapshot.read().map(|s| s.identities.clone()).unwrap_or_default())
    }

    pub async fn identities_set(&self, policy: IdentityPolicy) -> Result<IdentityPolicy, Status> {
        for p in policy.service_accounts.iter().chain(&policy.audiences) {
            if p.is_empty() || p.contains(char::is_whitespace) {
                return Err(Status::invalid_argument(format!("\"{p}\" is not a service account or audience pattern")));
            }
        }
        let value = json!({ "service_accounts": policy.service_accounts, "audiences": policy.audiences });
        self.setting_put(IDENTITIES_RECORD, value).await?;
        Ok(policy)
    }

    /// Whether a task may carry `auth` to `url`: any identity while the server is open,
    /// only the allowed ones once authentication is on.
    pub async fn check_identity(&self, auth: Option<&AuthToken>, url: &str) -> Result<(), Status> {
        let Some(auth) = auth else { return Ok(()) };
        if !self.required().await? {
            return Ok(());
        }
        let policy = self.identities().await?;
        match auth {
            AuthToken::Oidc { service_account_email, audience } => {
                policy.allows(service_account_email, Some(if audience.is_empty() { url } else { audience }))
            }
            AuthToken::OAuth { service_account_email, .. } => policy.allows(service_account_email, None),
        }
    }
}

/// Store-only token commands for the CLI (`tasklane tokens create --data-dir …`), which
/// bootstrap the first admin token before any exists.
pub fn token_json(info: &TokenInfo) -> Value {
    json!({
        "id": info.id,
        "name": info.grant.name,
        "scope": info.grant.scope.as_str(),
        "projects": info.grant.projects,
        "queues": info.grant.queues,
        "createTime": tasklane_core::clock::format_rfc3339(info.created_at),
    })
}

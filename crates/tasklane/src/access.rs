//! `tasklane tokens …` and `tasklane identities …`: API tokens and the identities tasks may
//! use. Through the API with an admin token, or straight in the store (`--data-dir` or
//! `--database-url`), which is how the first admin token is made.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tasklane_core::SystemClock;
use tasklane_core::access::{Grant, IdentityPolicy, Scope};
use tasklane_server::access::{Access, CHANGED_NOTICE, strings, token_json};
use tasklane_store::{PgStore, SqliteStore, Store};

use crate::client::{ClientArgs, Format};
use crate::output;

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Make a token; its secret is printed once and stored only as a hash.
    Create(CreateArgs),
    /// List the tokens (never their secrets).
    List(Target),
    /// Revoke a token by name or id; it stops working at once.
    Revoke(RevokeArgs),
}

#[derive(Subcommand)]
pub enum EgressCommand {
    /// Show the egress rules: the flags' and the stored ones.
    List(Target),
    /// Let pushes and callbacks reach a range (`10.0.0.0/8`) or host (`worker.internal`, `*.svc`).
    Allow(RuleArgs),
    /// Never let pushes and callbacks reach a range or host (wins over allow rules).
    Deny(RuleArgs),
    /// Remove a stored allow or deny rule.
    Remove(RuleArgs),
}

#[derive(Args)]
pub struct RuleArgs {
    /// An address range (`10.0.0.0/8`, `fd00::/8`, one address) or a host name (`worker.internal`, `*.svc`).
    rule: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Replace the token signing key and the job-token key. The old signing key stays in the
    /// JWKS for 2 hours and old job tokens keep verifying for 24 hours.
    Rotate(RotateArgs),
}

#[derive(Args)]
pub struct RotateArgs {
    #[command(flatten)]
    target: Target,
    /// With --data-dir or --database-url: the master key file the server seals keys with.
    #[arg(long)]
    secret_key_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
pub enum IdentitiesCommand {
    /// Show which service accounts and audiences tasks may ask tokens for.
    List(Target),
    /// Allow a service account (exact, or `*@domain`) and/or an audience (exact, or a prefix ending in `*`).
    Allow(IdentityArgs),
    /// Remove a service account or audience from the allowed ones.
    Disallow(IdentityArgs),
}

/// Where the change is made: the API (default), or straight in a store.
#[derive(Args)]
pub struct Target {
    #[command(flatten)]
    client: ClientArgs,
    /// Work on this embedded store directly (while its server runs, too) instead of the API.
    #[arg(long, conflicts_with = "database_url")]
    data_dir: Option<std::path::PathBuf>,
    /// Work on this PostgreSQL database directly instead of the API.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Args)]
pub struct CreateArgs {
    /// A name to know the token by: letters, digits, '.', '_' or '-'.
    name: String,
    /// admin (everything), enqueue (create and read tasks and jobs), read, or worker (pull leases and acknowledgements).
    #[arg(long)]
    scope: String,
    /// Limit the token to this project (repeatable).
    #[arg(long = "project-limit", value_name = "PROJECT")]
    projects: Vec<String>,
    /// Limit the token to this queue: an id, or a full name (repeatable).
    #[arg(long = "queue-limit", value_name = "QUEUE")]
    queues: Vec<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
pub struct RevokeArgs {
    /// The token's name or id.
    #[arg(value_name = "NAME_OR_ID")]
    which: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
pub struct IdentityArgs {
    /// A service-account email, or `*@domain`.
    service_account: Option<String>,
    /// An audience OIDC tokens may carry, or a prefix ending in `*`.
    #[arg(long)]
    audience: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// A store opened for a direct change, and how to tell running servers about it.
struct Direct {
    access: Access,
    store: Arc<dyn Store>,
    pg: Option<PgStore>,
}

impl Direct {
    async fn open(t: &Target) -> anyhow::Result<Option<Direct>> {
        let clock = Arc::new(SystemClock);
        if let Some(dir) = &t.data_dir {
            tasklane_server::secure_data_dir(dir)?;
            let store = SqliteStore::open(dir.join("tasklane.db"))
                .with_context(|| format!("open the embedded store in {}", dir.display()))?;
            let store: Arc<dyn Store> = Arc::new(store);
            let access = Access::new(store.clone(), clock, true, Duration::ZERO);
            return Ok(Some(Direct { access, store, pg: None }));
        }
        if let Some(url) = &t.database_url {
            let pg = PgStore::connect(url, None).await.context("connect to the database")?;
            let store: Arc<dyn Store> = Arc::new(pg.clone());
            let access = Access::new(store.clone(), clock, true, Duration::ZERO);
            return Ok(Some(Direct { access, store, pg: Some(pg) }));
        }
        Ok(None)
    }

    /// Running nodes on PostgreSQL re-read tokens at once; an embedded server within seconds.
    async fn announce(&self) {
        if let Some(pg) = &self.pg {
            let _ = pg.notify(&[CHANGED_NOTICE.to_string()]).await;
        }
    }
}

pub async fn run_egress(cmd: EgressCommand) -> anyhow::Result<()> {
    use tasklane_core::egress::Rule;
    use tasklane_server::access::StoredEgress;
    let text = |list: &[Rule]| list.iter().map(|r| r.to_string()).collect::<Vec<String>>();
    let (target, change) = match cmd {
        EgressCommand::List(t) => (t, None),
        EgressCommand::Allow(a) => (a.target, Some(("allow", a.rule))),
        EgressCommand::Deny(a) => (a.target, Some(("deny", a.rule))),
        EgressCommand::Remove(a) => (a.target, Some(("remove", a.rule))),
    };
    let direct = Direct::open(&target).await?;
    let mut stored = match &direct {
        Some(d) => {
            let s = d.access.egress_stored().await.map_err(|e| anyhow::anyhow!(e.message))?;
            json!({ "allow": text(&s.allow), "deny": text(&s.deny) })
        }
        None => target.client.call_url(reqwest::Method::GET, "v1/egress", None).await?,
    };
    if let Some((what, rule)) = change {
        let rule = Rule::parse(&rule).map_err(anyhow::Error::msg)?.to_string();
        for list in ["allow", "deny"] {
            let mut items = strings(&stored, list);
            items.retain(|r| *r != rule);
            if list == what {
                items.push(rule.clone());
            }
            stored[list] = json!(items);
        }
        let body = json!({ "allow": stored["allow"], "deny": stored["deny"] });
        stored = match &direct {
            Some(d) => {
                let parse = |k: &str| -> anyhow::Result<Vec<Rule>> {
                    body[k]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|r| Rule::parse(r).map_err(anyhow::Error::msg))
                        .collect()
                };
                let rules = StoredEgress { allow: parse("allow")?, deny: parse("deny")? };
                let s = d.access.egress_set(rules).await.map_err(|e| anyhow::anyhow!(e.message))?;
                d.announce().await;
                json!({ "allow": text(&s.allow), "deny": text(&s.deny) })
            }
            None => target.client.call_url(reqwest::Method::PUT, "v1/egress", Some(body)).await?,
        };
    }
    if target.client.format == Format::Json {
        output::resource(Format::Json, &stored);
        return Ok(());
    }
    let list = |v: &Value| {
        let items: Vec<&str> = v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if items.is_empty() { "(none)".to_string() } else { items.join(", ") }
    };
    if stored["open"] == json!(true) {
        println!(
            "This server listens on loopback only: pushes may go anywhere, and these rules apply once it does not."
        );
    }
    println!("allowed (stored): {}", list(&stored["allow"]));
    println!("denied (stored):  {}", list(&stored["deny"]));
    if stored["flags"].is_object() {
        println!("allowed (flags):  {}", list(&stored["flags"]["allow"]));
        println!("denied (flags):   {}", list(&stored["flags"]["deny"]));
    }
    Ok(())
}

pub async fn run_keys(cmd: KeysCommand) -> anyhow::Result<()> {
    let KeysCommand::Rotate(a) = cmd;
    let rotated = match Direct::open(&a.target).await? {
        Some(d) => {
            let sealer = match &a.secret_key_file {
                Some(p) => Some(Arc::new(tasklane_server::sealing::Sealer::from_file(p).map_err(anyhow::Error::msg)?)),
                None => None,
            };
            // The issuer is not part of a key; any value serves for rotating.
            let signer = tasklane_server::oidc::TokenSigner::new(d.store.clone(), Arc::new(SystemClock), String::new())
                .sealed_with(sealer);
            let kid = signer.rotate().await.map_err(|e| anyhow::anyhow!(e.message))?;
            d.announce().await;
            json!({ "kid": kid })
        }
        None => a.target.client.call_url(reqwest::Method::POST, "v1/keys:rotate", Some(json!({}))).await?,
    };
    if a.target.client.format == Format::Json {
        output::resource(Format::Json, &rotated);
    } else {
        println!(
            "Rotated the signing keys; tokens are now signed with key {}. The old key stays published for 2 hours.",
            output::field(&rotated, "/kid")
        );
    }
    Ok(())
}

pub async fn run_tokens(cmd: TokensCommand) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create(a) => {
            let grant = Grant {
                name: a.name.clone(),
                scope: Scope::parse(&a.scope).map_err(|e| anyhow::anyhow!(e.message))?,
                projects: a.projects.clone(),
                queues: a.queues.clone(),
            };
            let made = match Direct::open(&a.target).await? {
                Some(d) => {
                    let made = d.access.token_create(grant).await.map_err(|e| anyhow::anyhow!(e.message))?;
                    d.announce().await;
                    let mut v = token_json(&made.info);
                    v["token"] = json!(made.secret);
                    v
                }
                None => {
                    let body = json!({ "name": a.name, "scope": a.scope, "projects": a.projects, "queues": a.queues });
                    a.target.client.call_url(reqwest::Method::POST, "v1/tokens", Some(body)).await?
                }
            };
            if a.target.client.format == Format::Json {
                output::resource(Format::Json, &made);
            } else {
                eprintln!(
                    "Created token {} ({}, scope {}). It is shown only this once; keep it secret:",
                    output::field(&made, "/name"),
                    output::field(&made, "/id"),
                    output::field(&made, "/scope")
                );
                println!("{}", output::field(&made, "/token"));
            }
        }
        TokensCommand::List(t) => {
            let list = match Direct::open(&t).await? {
                Some(d) => {
                    let tokens = d.access.token_list().await.map_err(|e| anyhow::anyhow!(e.message))?;
                    json!({ "tokens": tokens.iter().map(token_json).collect::<Vec<_>>() })
                }
                None => t.client.call_url(reqwest::Method::GET, "v1/tokens", None).await?,
            };
            if t.client.format == Format::Json {
                output::resource(Format::Json, &list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list["tokens"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    let joined = |k: &str| {
                        let v: Vec<&str> =
                            t[k].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                        if v.is_empty() { "-".to_string() } else { v.join(",") }
                    };
                    vec![
                        output::field(t, "/name"),
                        output::field(t, "/id"),
                        output::field(t, "/scope"),
                        joined("projects"),
                        joined("queues"),
                        output::field(t, "/createTime"),
                    ]
                })
                .collect();
            output::table(&["NAME", "ID", "SCOPE", "PROJECTS", "QUEUES", "CREATED"], &rows);
        }
        TokensCommand::Revoke(a) => {
            let revoked = match Direct::open(&a.target).await? {
                Some(d) => {
                    let info = d.access.token_revoke(&a.which).await.map_err(|e| anyhow::anyhow!(e.message))?;
                    d.announce().await;
                    token_json(&info)
                }
                None => {
                    a.target.client.call_url(reqwest::Method::DELETE, &format!("v1/tokens/{}", a.which), None).await?
                }
            };
            if a.target.client.format == Format::Json {
                output::resource(Format::Json, &revoked);
            } else {
                println!("Revoked token {} ({}).", output::field(&revoked, "/name"), output::field(&revoked, "/id"));
            }
        }
    }
    Ok(())
}

fn policy_json(p: &IdentityPolicy) -> Value {
    json!({ "service_accounts": p.service_accounts, "audiences": p.audiences })
}

fn policy_from(v: &Value) -> IdentityPolicy {
    IdentityPolicy { service_accounts: strings(v, "service_accounts"), audiences: strings(v, "audiences") }
}

async fn policy_read(t: &Target, direct: &Option<Direct>) -> anyhow::Result<IdentityPolicy> {
    match direct {
        Some(d) => d.access.identities().await.map_err(|e| anyhow::anyhow!(e.message)),
        None => Ok(policy_from(&t.client.call_url(reqwest::Method::GET, "v1/identities", None).await?)),
    }
}

async fn policy_write(t: &Target, direct: &Option<Direct>, p: IdentityPolicy) -> anyhow::Result<IdentityPolicy> {
    match direct {
        Some(d) => {
            let p = d.access.identities_set(p).await.map_err(|e| anyhow::anyhow!(e.message))?;
            d.announce().await;
            Ok(p)
        }
        None => {
            Ok(policy_from(&t.client.call_url(reqwest::Method::PUT, "v1/identities", Some(policy_json(&p))).await?))
        }
    }
}

pub async fn run_identities(cmd: IdentitiesCommand) -> anyhow::Result<()> {
    let (target, policy) = match cmd {
        IdentitiesCommand::List(t) => {
            let direct = Direct::open(&t).await?;
            let p = policy_read(&t, &direct).await?;
            (t, p)
        }
        IdentitiesCommand::Allow(a) | IdentitiesCommand::Disallow(a)
            if a.service_account.is_none() && a.audience.is_none() =>
        {
            anyhow::bail!("name a service account, an --audience, or both");
        }
        IdentitiesCommand::Allow(a) => {
            let direct = Direct::open(&a.target).await?;
            let mut p = policy_read(&a.target, &direct).await?;
            for (list, item) in [(&mut p.service_accounts, &a.service_account), (&mut p.audiences, &a.audience)] {
                if let Some(item) = item
                    && !list.contains(item)
                {
                    list.push(item.clone());
                }
            }
            let p = policy_write(&a.target, &direct, p).await?;
            (a.target, p)
        }
        IdentitiesCommand::Disallow(a) => {
            let direct = Direct::open(&a.target).await?;
            let mut p = policy_read(&a.target, &direct).await?;
            for (list, item) in [(&mut p.service_accounts, &a.service_account), (&mut p.audiences, &a.audience)] {
                if let Some(item) = item {
                    list.retain(|x| x != item);
                }
            }
            let p = policy_write(&a.target, &direct, p).await?;
            (a.target, p)
        }
    };
    if target.client.format == Format::Json {
        output::resource(Format::Json, &policy_json(&policy));
    } else {
        let none = |v: &Vec<String>| if v.is_empty() { "(none)".to_string() } else { v.join(", ") };
        println!("service accounts: {}", none(&policy.service_accounts));
        println!(
            "audiences:        {}",
            if policy.audiences.is_empty() { "(any)".into() } else { policy.audiences.join(", ") }
        );
    }
    Ok(())
}

//! `nexus token`: API keys, created, listed and revoked directly in the store (the embedded SQLite
//! file in the data directory, or the shared PostgreSQL database), with no server running.
//!
//! A key (`nxs_<id>_<secret>`) is printed once, alone on stdout, when it is created; the store
//! keeps only its id and hash, and nothing here ever prints a hash.

use std::{collections::BTreeSet, path::PathBuf, time::SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use nexus_store::{ApiKeyRecord, AuthStore, PgStore, SqliteStore, api_key, redact_url};

use crate::render;

/// The roles a key may carry.
pub const ROLES: &[&str] = &["admin", "author", "runner", "viewer"];

/// Which store holds the keys: the one `nexus serve` uses with the same flags and environment.
#[derive(Args)]
pub struct StoreArgs {
    /// Where the embedded store lives (ignored with --database-url).
    #[arg(long, env = "NEXUS_DATA_DIR", default_value = ".nexus")]
    data_dir: PathBuf,
    /// The shared PostgreSQL store instead (postgres://user:password@host/db).
    #[arg(long, env = "NEXUS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// PostgreSQL schema of the store (its search path), with --database-url.
    #[arg(long, env = "NEXUS_DATABASE_SCHEMA")]
    database_schema: Option<String>,
}

impl StoreArgs {
    /// Where the store is, for messages (a database URL without its password).
    fn location(&self) -> String {
        match (&self.database_url, &self.database_schema) {
            (Some(url), Some(schema)) => format!("{} (schema {schema})", redact_url(url)),
            (Some(url), None) => redact_url(url),
            (None, _) => self.data_dir.display().to_string(),
        }
    }

    /// Opens the store (creating or migrating its schema if needed).
    async fn open(&self) -> anyhow::Result<Box<dyn AuthStore>> {
        Ok(match &self.database_url {
            Some(url) => Box::new(PgStore::connect(url, self.database_schema.as_deref()).await?),
            None => Box::new(SqliteStore::open(&self.data_dir).await?),
        })
    }
}

/// `nexus token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API key. The key is printed alone on stdout, this once only: store it safely.
    Create {
        /// The tenant the key acts in.
        #[arg(long)]
        tenant: String,
        /// Who the key identifies (a person or a service).
        #[arg(long)]
        subject: String,
        /// A role of the key: admin, author, runner or viewer. Repeatable.
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
        /// Machine-readable JSON output: the key's record with the key itself (`"key"`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List API keys, newest first (ids, never secrets).
    List {
        /// Machine-readable JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke an API key: calls with it are refused from now on.
    Revoke {
        /// The key's id, as `nexus token list` shows it.
        id: String,
        /// Machine-readable JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs a `nexus token` command.
pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { tenant, subject, roles, json, store } => {
            create(&store, &tenant, &subject, &roles, json).await
        }
        TokenCommand::List { json, store } => list(&store, json).await,
        TokenCommand::Revoke { id, json, store } => revoke(&store, &id, json).await,
    }
}

/// The roles, each checked against [`ROLES`], duplicates dropped, in the order given.
pub fn check_roles(roles: &[String]) -> anyhow::Result<Vec<String>> {
    if roles.is_empty() {
        bail!("give the key at least one --role ({})", ROLES.join(", "));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for role in roles {
        if !ROLES.contains(&role.as_str()) {
            bail!("unknown role `{role}` in --role: a key's roles are {}", ROLES.join(", "));
        }
        if seen.insert(role.as_str()) {
            out.push(role.clone());
        }
    }
    Ok(out)
}

/// Checks that a flag's value is not empty or blank.
fn non_empty(flag: &str, value: &str) -> anyhow::Result<()> {
    if value.trim().is_empty() {
        bail!("--{flag} must not be empty");
    }
    if value.trim() != value || value.chars().any(char::is_control) {
        bail!("--{flag} `{}` must not have spaces around it or control characters", value.escape_debug());
    }
    Ok(())
}

async fn create(store: &StoreArgs, tenant: &str, subject: &str, roles: &[String], json: bool) -> anyhow::Result<()> {
    non_empty("tenant", tenant)?;
    non_empty("subject", subject)?;
    let roles = check_roles(roles)?;
    let location = store.location();
    let db = store.open().await?;
    let (key, record) = api_key::generate(tenant, subject, &roles);
    db.insert_api_key(&record).await.with_context(|| format!("storing the new API key in {location}"))?;
    if json {
        let mut out = key_json(&record);
        out["key"] = serde_json::Value::String(key);
        println!("{out}");
        return Ok(());
    }
    println!("{key}");
    eprintln!(
        "created API key {} for {tenant}/{subject} (roles: {}) in {location}.\n\
         The key above is shown this once only: keep it secret (the store keeps only its hash). \
         Revoke it with `nexus token revoke {}`.",
        record.id,
        roles.join(", "),
        record.id
    );
    Ok(())
}

fn time(t: SystemTime) -> String {
    render::timestamp(Some(&prost_types::Timestamp::from(t)))
}

/// The keys as a table: id, tenant, subject, roles, created, revoked.
pub fn key_table(keys: &[ApiKeyRecord]) -> String {
    use std::fmt::Write;
    if keys.is_empty() {
        return "no API keys (create one with `nexus token create --tenant T --subject S --role R`)\n".into();
    }
    let w = |f: fn(&ApiKeyRecord) -> usize, title: &str| keys.iter().map(f).max().unwrap_or(0).max(title.len());
    let id_w = w(|k| k.id.len(), "ID");
    let tenant_w = w(|k| k.tenant.len(), "TENANT");
    let subject_w = w(|k| k.subject.len(), "SUBJECT");
    let roles_w = w(|k| k.roles.join(",").len(), "ROLES");
    let mut out = format!(
        "{:<id_w$}  {:<tenant_w$}  {:<subject_w$}  {:<roles_w$}  {:<20}  REVOKED\n",
        "ID", "TENANT", "SUBJECT", "ROLES", "CREATED"
    );
    for k in keys {
        let revoked = k.revoked_at.map_or_else(|| "-".to_string(), time);
        let _ = writeln!(
            out,
            "{:<id_w$}  {:<tenant_w$}  {:<subject_w$}  {:<roles_w$}  {:<20}  {revoked}",
            k.id,
            k.tenant,
            k.subject,
            k.roles.join(","),
            time(k.created_at)
        );
    }
    out
}

fn key_json(k: &ApiKeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "tenant": k.tenant,
        "subject": k.subject,
        "roles": k.roles,
        "created_at": time(k.created_at),
        "revoked_at": k.revoked_at.map(time),
    })
}

async fn list(store: &StoreArgs, json: bool) -> anyhow::Result<()> {
    let location = store.location();
    let db = store.open().await?;
    let keys = db.api_keys().await.with_context(|| format!("listing the API keys in {location}"))?;
    if json {
        println!("{}", serde_json::Value::Array(keys.iter().map(key_json).collect()));
    } else {
        print!("{}", key_table(&keys));
    }
    Ok(())
}

async fn revoke(store: &StoreArgs, id: &str, json: bool) -> anyhow::Result<()> {
    let location = store.location();
    let db = store.open().await?;
    if !db.revoke_api_key(id).await.with_context(|| format!("revoking API key {id} in {location}"))? {
        bail!("no unrevoked API key has the id `{id}` in {location} (`nexus token list` shows the keys)");
    }
    if json {
        println!("{}", serde_json::json!({"revoked": id}));
    } else {
        println!("revoked API key {id}");
    }
    Ok(())
}

/// `nexus audit`: the most recent refused calls, newest first.
pub async fn audit(store: &StoreArgs, limit: u32, json: bool) -> anyhow::Result<()> {
    let location = store.location();
    let db = store.open().await?;
    let entries = db.audit_log(limit).await.with_context(|| format!("reading the audit log in {location}"))?;
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "at": time(e.at), "tenant": e.tenant, "subject": e.subject,
                    "action": e.action, "resource": e.resource, "reason": e.reason,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if entries.is_empty() {
        println!("no refused calls in {location}");
        return Ok(());
    }
    for e in &entries {
        println!("{}  {}/{}  {}  {}  {}", time(e.at), e.tenant, e.subject, e.action, e.resource, e.reason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_checked_and_deduplicated() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_roles(&roles(&["runner", "admin", "runner"])).unwrap(), roles(&["runner", "admin"]));
        let err = check_roles(&roles(&["viewer", "wizard"])).unwrap_err().to_string();
        assert!(err.contains("`wizard`") && err.contains("admin, author, runner, viewer"), "{err}");
        assert!(check_roles(&[]).is_err());
    }

    #[test]
    fn blank_tenants_and_subjects_are_refused() {
        assert!(non_empty("tenant", "acme").is_ok());
        assert!(non_empty("tenant", "").unwrap_err().to_string().contains("--tenant"));
        assert!(non_empty("subject", "  ").unwrap_err().to_string().contains("--subject"));
        assert!(non_empty("subject", " bob").is_err());
    }
}

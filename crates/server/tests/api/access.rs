//! Who may do what: the authorization matrix (every role × every RPC × own / same-tenant /
//! other-tenant resources × visibility) on SQLite and on PostgreSQL, credentials that must be
//! refused, the audit of denials, and secrets that must never show.

#![allow(clippy::expect_used)] // test code: a panic is a failed test

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use nexus_core::pb;
use nexus_store::{AuthStore, api_key};
use tonic::Code;

use crate::common::{Client, Harness, Options, authed, eventually, execute_request, pattern, unique_email};

/// One caller of the matrix.
struct Caller {
    name: &'static str,
    tenant: &'static str,
    roles: &'static [&'static str],
}

const CALLERS: &[Caller] = &[
    // The owner of every pattern under test.
    Caller { name: "owner", tenant: "acme", roles: &["author", "runner", "viewer"] },
    Caller { name: "admin", tenant: "acme", roles: &["admin"] },
    Caller { name: "author", tenant: "acme", roles: &["author"] },
    Caller { name: "runner", tenant: "acme", roles: &["runner"] },
    Caller { name: "viewer", tenant: "acme", roles: &["viewer"] },
    Caller { name: "noroles", tenant: "acme", roles: &[] },
    Caller { name: "other_author", tenant: "globex", roles: &["author", "runner", "viewer"] },
    Caller { name: "other_admin", tenant: "globex", roles: &["admin"] },
];

const VISIBILITIES: [&str; 3] = ["private", "tenant", "public"];

/// The RPCs of the matrix that act on a pattern.
const PATTERN_RPCS: &[&str] = &[
    "GetPattern",
    "ListPatternVersions",
    "DiffPatterns",
    "ExecutePattern",
    "ExecutePatternStream",
    "RegisterPattern(new version)",
    "DeprecatePattern",
    "SetVisibility",
    "ForkPattern",
    "Star",
    "QueryGraph(lineage)",
    "ListPatterns(sees it)",
];

/// The RPCs that act on an execution started by the owner (tenant acme).
const EXECUTION_RPCS: &[&str] = &["GetExecution", "WatchExecution", "CancelExecution", "ListExecutions(sees it)"];

/// The RPCs that act on nothing in particular.
const GLOBAL_RPCS: &[&str] = &["ValidatePattern", "ListServices", "DescribeAction", "WhoAmI", "QueryGraph(impact)"];

/// The expected answer of one cell: the policy, written out independently of the server.
fn expected(c: &Caller, rpc: &str, visibility: Option<&str>) -> Code {
    let has = |r: &str| c.roles.contains(&"admin") || c.roles.contains(&r);
    let read = has("viewer") || has("runner") || has("author");
    let same_tenant = c.tenant == "acme";
    let is_owner = c.name == "owner";
    let admin_here = same_tenant && c.roles.contains(&"admin");
    let visible = match visibility {
        Some("public") => true,
        Some("tenant") => same_tenant,
        Some(_) => is_owner || admin_here,
        None => true,
    };
    let manage = is_owner || admin_here;
    let role_for = |rpc: &str| match rpc {
        "ExecutePattern" | "ExecutePatternStream" | "CancelExecution" => has("runner"),
        "RegisterPattern(new version)" | "DeprecatePattern" | "SetVisibility" | "ForkPattern" | "ValidatePattern" => {
            has("author")
        }
        "WhoAmI" => true,
        _ => read,
    };
    if !role_for(rpc) {
        // A list that needs a role refuses; the others too.
        return Code::PermissionDenied;
    }
    match rpc {
        "ListServices" | "DescribeAction" | "WhoAmI" | "ValidatePattern" | "QueryGraph(impact)" => Code::Ok,
        "GetExecution" | "WatchExecution" | "CancelExecution" => {
            if same_tenant {
                Code::Ok
            } else {
                Code::NotFound
            }
        }
        "ListExecutions(sees it)" | "ListPatterns(sees it)" => {
            let sees = if rpc.starts_with("ListExecutions") { same_tenant } else { visible };
            if sees { Code::Ok } else { Code::NotFound }
        }
        _ if !visible => {
            // A new version of a pattern one cannot see: the name is simply taken.
            if rpc == "RegisterPattern(new version)" { Code::AlreadyExists } else { Code::NotFound }
        }
        "RegisterPattern(new version)" | "DeprecatePattern" | "SetVisibility" => {
            if manage {
                Code::Ok
            } else {
                Code::PermissionDenied
            }
        }
        _ => Code::Ok,
    }
}

/// The server under test, keys for every caller, and the patterns/execution the cells act on.
struct World {
    harness: Harness,
    keys: BTreeMap<&'static str, String>,
    /// Pattern name by visibility, all owned by `owner`.
    patterns: BTreeMap<&'static str, String>,
    execution_id: String,
    store: Box<dyn AuthStore>,
    tag: String,
}

const DOC: &str = r#"
name: NAME
version: VERSION
visibility: VISIBILITY
description: a pattern of the access matrix
tags: [matrix]
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: "hello"}
"#;

fn doc(name: &str, version: &str, visibility: &str) -> Result<pb::Pattern> {
    pattern(&DOC.replace("NAME", name).replace("VERSION", version).replace("VISIBILITY", visibility))
}

async fn world(options: Options, store: Box<dyn AuthStore>) -> Result<World> {
    let harness = Harness::start_with(options).await?;
    let tag = uuid::Uuid::now_v7().simple().to_string()[20..].to_string();
    let mut keys = BTreeMap::new();
    for c in CALLERS {
        let roles: Vec<String> = c.roles.iter().map(|r| r.to_string()).collect();
        let (key, record) = api_key::generate(c.tenant, c.name, &roles);
        store.insert_api_key(&record).await?;
        keys.insert(c.name, key);
    }
    let mut client = harness.client.clone();
    let owner = keys["owner"].clone();
    let mut patterns = BTreeMap::new();
    for v in VISIBILITIES {
        let name = format!("matrix_{v}_{tag}");
        client
            .register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(doc(&name, "1.0.0", v)?) }, &owner))
            .await
            .with_context(|| format!("registering {name}"))?;
        patterns.insert(v, name);
    }
    let run = client
        .execute_pattern(authed(
            execute_request(&patterns["public"], serde_json::json!({"email": unique_email("matrix")}))?,
            &owner,
        ))
        .await
        .context("the owner runs a pattern")?;
    let execution_id = run.into_inner().execution_id;
    Ok(World { harness, keys, patterns, execution_id, store, tag })
}

/// Performs one cell and returns its code (Ok when the call succeeded and, for the "sees it"
/// cells, the resource was in the listing; NotFound when it was not).
async fn call(w: &World, client: &mut Client, caller: &str, rpc: &str, visibility: Option<&str>, n: usize) -> Code {
    let key = &w.keys[caller];
    let name = visibility.map(|v| w.patterns[v].clone()).unwrap_or_default();
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    match rpc {
        "GetPattern" => code(
            client.get_pattern(authed(pb::GetPatternRequest { name, version: String::new() }, key)).await.map(|_| ()),
        ),
        "ListPatternVersions" => {
            code(client.list_pattern_versions(authed(pb::ListPatternVersionsRequest { name }, key)).await.map(|_| ()))
        }
        "DiffPatterns" => code(
            client
                .diff_patterns(authed(
                    pb::DiffPatternsRequest {
                        name,
                        from_version: "1.0.0".into(),
                        to_version: "1.0.0".into(),
                        to_name: String::new(),
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        "ExecutePattern" => {
            let req = execute_request(&name, serde_json::json!({"email": unique_email("cell")})).unwrap_or_default();
            code(client.execute_pattern(authed(req, key)).await.map(|_| ()))
        }
        "ExecutePatternStream" => {
            let req = execute_request(&name, serde_json::json!({"email": unique_email("cell")})).unwrap_or_default();
            match client.execute_pattern_stream(authed(req, key)).await {
                // Allowed: the stream runs to its final event, a success.
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    let mut last = None;
                    while let Ok(Some(e)) = stream.message().await {
                        last = e.event;
                    }
                    match last {
                        Some(pb::execution_event::Event::Finished(f))
                            if f.status == pb::ExecutionStatus::Succeeded as i32 =>
                        {
                            Code::Ok
                        }
                        _ => Code::Internal,
                    }
                }
                Err(s) => s.code(),
            }
        }
        "RegisterPattern(new version)" => {
            // A higher version each time: only the cells that may register add one.
            let version = format!("1.{n}.0");
            let Ok(d) = doc(&name, &version, visibility.unwrap_or("private")) else { return Code::Internal };
            code(
                client.register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(d) }, key)).await.map(|_| ()),
            )
        }
        "DeprecatePattern" => code(
            client
                .deprecate_pattern(authed(
                    // Lifting a deprecation that is not there: allowed cells change nothing.
                    pb::DeprecatePatternRequest { name, version: "1.0.0".into(), reason: String::new(), undo: true },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        "SetVisibility" => code(
            client
                .set_visibility(authed(
                    pb::SetVisibilityRequest { name, visibility: visibility.unwrap_or("private").to_string() },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        "ForkPattern" => code(
            client
                .fork_pattern(authed(
                    pb::ForkPatternRequest {
                        name,
                        version: String::new(),
                        new_name: format!("fork_{n}_{caller}_{}", w.tag),
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        "Star" => code(client.star(authed(pb::StarRequest { name, unstar: false }, key)).await.map(|_| ())),
        "QueryGraph(lineage)" => code(
            client
                .query_graph(authed(
                    pb::QueryGraphRequest { query: Some(pb::query_graph_request::Query::Lineage(name)), depth: 0 },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        "ListPatterns(sees it)" => {
            let r = client
                .list_patterns(authed(
                    pb::ListPatternsRequest { query: name.clone(), page_size: 100, ..Default::default() },
                    key,
                ))
                .await;
            match r {
                Ok(r) if r.get_ref().patterns.iter().any(|p| p.name == name) => Code::Ok,
                Ok(_) => Code::NotFound,
                Err(s) => s.code(),
            }
        }
        "GetExecution" => code(
            client
                .get_execution(authed(pb::GetExecutionRequest { execution_id: w.execution_id.clone() }, key))
                .await
                .map(|_| ()),
        ),
        "WatchExecution" => code(
            client
                .watch_execution(authed(pb::WatchExecutionRequest { execution_id: w.execution_id.clone() }, key))
                .await
                .map(|_| ()),
        ),
        "CancelExecution" => code(
            client
                .cancel_execution(authed(
                    pb::CancelExecutionRequest { execution_id: w.execution_id.clone(), reason: "matrix".into() },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        "ListExecutions(sees it)" => {
            let r = client
                .list_executions(authed(pb::ListExecutionsRequest { page_size: 1000, ..Default::default() }, key))
                .await;
            match r {
                Ok(r) if r.get_ref().executions.iter().any(|e| e.id == w.execution_id) => Code::Ok,
                Ok(r) if r.get_ref().executions.iter().all(|e| e.tenant == "globex") => Code::NotFound,
                Ok(_) => Code::Internal, // another tenant's execution leaked into the list
                Err(s) => s.code(),
            }
        }
        "ValidatePattern" => {
            let Ok(d) = doc(&format!("validate_{}", w.tag), "1.0.0", "private") else { return Code::Internal };
            code(
                client.validate_pattern(authed(pb::ValidatePatternRequest { pattern: Some(d) }, key)).await.map(|_| ()),
            )
        }
        "ListServices" => code(client.list_services(authed(pb::ListServicesRequest {}, key)).await.map(|_| ())),
        "DescribeAction" => code(
            client
                .describe_action(authed(
                    pb::DescribeActionRequest { name: "demo.user.v1.UserService/CreateUser".into() },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        "WhoAmI" => code(client.who_am_i(authed(pb::WhoAmIRequest {}, key)).await.map(|_| ())),
        "QueryGraph(impact)" => {
            let r = client
                .query_graph(authed(
                    pb::QueryGraphRequest {
                        query: Some(pb::query_graph_request::Query::Impact(
                            "demo.notification.v1.NotificationService/SendEmail".into(),
                        )),
                        depth: 0,
                    },
                    key,
                ))
                .await;
            match r {
                // The impact may only list what this caller can see.
                Ok(r) => {
                    let caller = CALLERS.iter().find(|c| c.name == caller);
                    let leaked = r.get_ref().nodes.iter().any(|n| {
                        VISIBILITIES.iter().any(|v| {
                            n.id.starts_with(&format!("pattern:{}@", w.patterns[v]))
                                && caller.is_some_and(|c| expected(c, "GetPattern", Some(v)) != Code::Ok)
                        })
                    });
                    if leaked { Code::Internal } else { Code::Ok }
                }
                Err(s) => s.code(),
            }
        }
        _ => Code::Unimplemented,
    }
}

/// Runs every cell; returns the rendered matrix and the cells that differ from the policy.
async fn matrix(w: &World) -> Result<(String, Vec<String>)> {
    let mut client = w.harness.client.clone();
    let mut table = String::new();
    let mut wrong = Vec::new();
    let mut n = 0;
    let mut cells: Vec<(&str, Option<&str>)> = Vec::new();
    for rpc in PATTERN_RPCS {
        for v in VISIBILITIES {
            cells.push((rpc, Some(v)));
        }
    }
    for rpc in EXECUTION_RPCS.iter().chain(GLOBAL_RPCS) {
        cells.push((rpc, None));
    }
    let _ = write!(table, "{:<38}", "rpc / resource visibility");
    for c in CALLERS {
        let _ = write!(table, " {:>13}", c.name);
    }
    table.push('\n');
    for (rpc, visibility) in cells {
        let _ = write!(table, "{:<38}", format!("{rpc} [{}]", visibility.unwrap_or("-")));
        for c in CALLERS {
            n += 1;
            let want = expected(c, rpc, visibility);
            let got = call(w, &mut client, c.name, rpc, visibility, n).await;
            let mark = if got == want { "" } else { " ✗" };
            let _ = write!(table, " {:>13}", format!("{}{mark}", short(got)));
            if got != want {
                wrong.push(format!("{rpc} [{visibility:?}] as {}: got {got:?}, expected {want:?}", c.name));
            }
        }
        table.push('\n');
    }
    Ok((table, wrong))
}

fn short(c: Code) -> &'static str {
    match c {
        Code::Ok => "allow",
        Code::PermissionDenied => "DENIED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "TAKEN",
        Code::Unauthenticated => "UNAUTH",
        _ => "other",
    }
}

async fn run_matrix(w: World) -> Result<()> {
    let (table, wrong) = matrix(&w).await?;
    println!("{table}");
    ensure!(wrong.is_empty(), "cells that differ from the policy:\n{}\n\n{table}", wrong.join("\n"));
    // Without credentials, every RPC is refused.
    let mut client = w.harness.client.clone();
    let s = client.list_services(pb::ListServicesRequest {}).await.expect_err("no credentials");
    ensure!(s.code() == Code::Unauthenticated, "{s:?}");
    // Denials are audited (off the request path): who, what, when.
    eventually(Duration::from_secs(5), "the audit entries of the denials", async || {
        let log = w.store.audit_log(10_000).await?;
        ensure!(
            log.iter().any(|e| e.subject == "viewer" && e.action == "ExecutePattern" && e.tenant == "acme"),
            "no audit entry for the viewer's ExecutePattern: {:?}",
            log.iter().take(5).collect::<Vec<_>>()
        );
        ensure!(
            log.iter()
                .any(|e| e.subject == "other_author" && e.action == "GetPattern" && e.resource.contains("private")),
            "no audit entry for another tenant's GetPattern of a private pattern"
        );
        Ok(())
    })
    .await?;
    w.harness.stop().await;
    Ok(())
}

fn require_auth() -> nexus_server::AuthConfig {
    nexus_server::AuthConfig { require_auth: true, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_holds_on_sqlite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let options = Options { data_dir: Some(dir.path().to_path_buf()), auth: require_auth(), ..Options::default() };
    run_matrix(world(options, Box::new(store)).await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_holds_on_postgres() -> Result<()> {
    let (url, schema, _guard) = pg_schema().await?;
    let store = nexus_store::PgStore::connect(&url, Some(&schema)).await?;
    let options = Options { database: Some((url, schema)), auth: require_auth(), ..Options::default() };
    run_matrix(world(options, Box::new(store)).await?).await
}

/// A fresh schema in the test database; dropped when the guard is.
pub async fn pg_schema() -> Result<(String, String, SchemaGuard)> {
    use sqlx::Connection;
    let url =
        std::env::var("NEXUS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("nexus_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await?;
    Ok((url.clone(), schema.clone(), SchemaGuard { url, schema }))
}

pub struct SchemaGuard {
    url: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Dropped outside the test's runtime: a small runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// JWT settings of the credential tests: HS256 with a secret file, RS256 with the JWKS fixture.
fn jwt_auth(dir: &std::path::Path) -> Result<nexus_server::AuthConfig> {
    let secret = dir.join("hs256.secret");
    std::fs::write(&secret, HS256_SECRET)?;
    Ok(nexus_server::AuthConfig {
        require_auth: true,
        jwt: Some(nexus_server::JwtConfig {
            hs256_secret_file: Some(secret),
            jwks_file: Some(
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt_test_jwks.json"),
            ),
            issuer: "https://issuer.test".into(),
            audience: "nexus".into(),
            tenant_claim: None,
            roles_claim: None,
        }),
        ..Default::default()
    })
}

const HS256_SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

fn hs256(claims: &serde_json::Value, secret: &str) -> Result<String> {
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

fn rs256(claims: &serde_json::Value) -> Result<String> {
    let pem = std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt_test_rsa_private.pem"),
    )?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("test-key-1".into());
    Ok(jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_rsa_pem(&pem)?)?)
}

fn claims(exp_offset_secs: i64, iss: &str, aud: &str) -> serde_json::Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    serde_json::json!({
        "sub": "jwt-user", "tenant": "acme", "roles": ["viewer"],
        "iss": iss, "aud": aud, "exp": now + exp_offset_secs, "iat": now,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_expired_wrongly_signed_and_revoked_credentials_are_unauthenticated() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let options =
        Options { data_dir: Some(dir.path().to_path_buf()), auth: jwt_auth(dir.path())?, ..Options::default() };
    let harness = Harness::start_with(options).await?;
    let mut client = harness.client.clone();
    let (good_key, record) = api_key::generate("acme", "keyed", &["viewer".to_string()]);
    store.insert_api_key(&record).await?;
    let (revoked_key, revoked) = api_key::generate("acme", "gone", &["admin".to_string()]);
    store.insert_api_key(&revoked).await?;
    store.revoke_api_key(&revoked.id).await?;

    let who = |p: tonic::Response<pb::Principal>| {
        let p = p.into_inner();
        format!("{}/{} {:?} via {}", p.tenant, p.subject, p.roles, p.authenticated_by)
    };
    // Valid: an API key, an HS256 token, an RS256 token.
    let ok = client.who_am_i(authed(pb::WhoAmIRequest {}, &good_key)).await?;
    ensure!(who(ok) == r#"acme/keyed ["viewer"] via api_key"#);
    let hs = hs256(&claims(600, "https://issuer.test", "nexus"), HS256_SECRET)?;
    ensure!(who(client.who_am_i(authed(pb::WhoAmIRequest {}, &hs)).await?) == r#"acme/jwt-user ["viewer"] via jwt"#);
    let rs = rs256(&claims(600, "https://issuer.test", "nexus"))?;
    ensure!(who(client.who_am_i(authed(pb::WhoAmIRequest {}, &rs)).await?) == r#"acme/jwt-user ["viewer"] via jwt"#);

    let mut tampered_key = good_key.clone();
    tampered_key.pop();
    tampered_key.push(if good_key.ends_with('A') { 'B' } else { 'A' });
    let mut tampered_jwt = hs.clone();
    tampered_jwt.insert(tampered_jwt.len() / 2, 'x');
    let bad: Vec<(&str, String)> = vec![
        ("garbage", "not-a-credential".into()),
        ("malformed API key", "nxs_short".into()),
        ("unknown API key", api_key::generate("acme", "never-stored", &[]).0),
        ("API key with a wrong secret", tampered_key),
        ("revoked API key", revoked_key.clone()),
        ("expired JWT", hs256(&claims(-600, "https://issuer.test", "nexus"), HS256_SECRET)?),
        ("JWT signed with another secret", hs256(&claims(600, "https://issuer.test", "nexus"), &"z".repeat(40))?),
        ("tampered JWT", tampered_jwt),
        ("JWT from another issuer", hs256(&claims(600, "https://evil.test", "nexus"), HS256_SECRET)?),
        ("JWT for another audience", hs256(&claims(600, "https://issuer.test", "other"), HS256_SECRET)?),
    ];
    let mut messages = String::new();
    for (what, token) in &bad {
        let s = client.who_am_i(authed(pb::WhoAmIRequest {}, token)).await.expect_err(what);
        ensure!(s.code() == Code::Unauthenticated, "{what}: {s:?}");
        ensure!(!s.message().contains(token.as_str()), "{what}: the credential is in the error: {}", s.message());
        messages.push_str(s.message());
        messages.push('\n');
    }
    // A key revoked while in use stops working within the cache bound (2 s): refused by then,
    // with a little slack for the request itself.
    store.revoke_api_key(&record.id).await?;
    let bound = nexus_server::auth::KEY_CACHE_TTL + Duration::from_millis(500);
    eventually(bound, "the revoked key refused", async || {
        match client.who_am_i(authed(pb::WhoAmIRequest {}, &good_key)).await {
            Err(s) if s.code() == Code::Unauthenticated => Ok(()),
            other => bail!("answered {:?}", other.map(|r| r.into_inner())),
        }
    })
    .await?;
    ensure!(!messages.contains("nxs_") && !messages.contains(HS256_SECRET), "{messages}");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_or_errors() -> Result<()> {
    // Everything the server logs, at debug level, captured.
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug,h2=info,hyper=info,tower=info,sqlx=info"))
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber)?;

    let (url, schema, _guard) = pg_schema().await?;
    // The test database trusts local connections, so a password in the URL is accepted and
    // ignored: it must still never show.
    let password = "Sup3r-S3cret-Passw0rd";
    let url_with_password = url.replacen("postgres://postgres@", &format!("postgres://postgres:{password}@"), 1);
    ensure!(url_with_password.contains(password), "the test URL {url} has an unexpected shape");
    let dir = tempfile::tempdir()?;
    let options = Options {
        database: Some((url_with_password.clone(), schema.clone())),
        auth: jwt_auth(dir.path())?,
        ..Options::default()
    };
    let harness = Harness::start_with(options).await?;
    let store = nexus_store::PgStore::connect(&url, Some(&schema)).await?;
    let (key, record) = api_key::generate("acme", "logged", &["author".to_string(), "runner".to_string()]);
    store.insert_api_key(&record).await?;
    let token = hs256(&claims(600, "https://issuer.test", "nexus"), HS256_SECRET)?;
    let mut client = harness.client.clone();
    let mut errors = String::new();
    // Successful calls, denied calls, refused credentials.
    client.who_am_i(authed(pb::WhoAmIRequest {}, &key)).await?;
    client.who_am_i(authed(pb::WhoAmIRequest {}, &token)).await?;
    let name = format!("secret_test_{}", uuid::Uuid::now_v7().simple());
    client
        .register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(doc(&name, "1.0.0", "private")?) }, &key))
        .await?;
    for (req_token, _) in [(&token, "viewer token"), (&key, "key")] {
        if let Err(s) = client
            .deprecate_pattern(authed(
                pb::DeprecatePatternRequest { name: name.clone(), version: "9.9.9".into(), ..Default::default() },
                req_token,
            ))
            .await
        {
            errors.push_str(s.message());
        }
    }
    for bad in [format!("{key}x"), format!("{token}x")] {
        if let Err(s) = client.who_am_i(authed(pb::WhoAmIRequest {}, &bad)).await {
            errors.push_str(s.message());
        }
    }
    // A store that cannot be reached at start: the error names the URL without the password.
    let unreachable = format!("postgres://postgres:{password}@127.0.0.1:1/test");
    let config = nexus_server::Config {
        listen: "127.0.0.1:0".parse()?,
        store: nexus_server::StoreConfig { url: Some(unreachable), schema: None, ..Default::default() },
        ..nexus_server::Config::default()
    };
    match tokio::time::timeout(Duration::from_secs(30), nexus_server::Nexus::start(config)).await {
        Ok(Err(e)) => errors.push_str(&format!("{e:#}")),
        Ok(Ok(_)) => anyhow::bail!("a server started on an unreachable database"),
        Err(_) => anyhow::bail!("no answer from an unreachable database within 30 s"),
    }
    harness.stop().await;
    let logged = logs.text();
    ensure!(logged.len() > 100, "nothing was logged: {logged}");
    for (what, secret) in [
        ("the API key", key.as_str()),
        // `nxs_<id>_<secret>`, and the secret may itself hold `_` (base64url): split at the
        // first two, or a short tail of the secret can match any log line by chance.
        ("the API key's secret part", key.splitn(3, '_').nth(2).unwrap_or_default()),
        ("the JWT", token.as_str()),
        ("the JWT's signature", token.rsplit('.').next().unwrap_or_default()),
        ("the HS256 secret", HS256_SECRET),
        ("the database password", password),
    ] {
        ensure!(secret.len() >= 16, "{what} is too short to look for: {secret}");
        ensure!(!logged.contains(secret), "{what} appears in the logs");
        ensure!(!errors.contains(secret), "{what} appears in an error message: {errors}");
    }
    Ok(())
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().map(|b| b.clone()).unwrap_or_default()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_actions_need_the_role_at_registration() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let mut auth = require_auth();
    auth.restricted_actions.insert("demo.user.v1.UserService/DeleteUser".into(), vec!["admin".into()]);
    let harness =
        Harness::start_with(Options { data_dir: Some(dir.path().to_path_buf()), auth, ..Options::default() }).await?;
    let mut client = harness.client.clone();
    let (author, a) = api_key::generate("acme", "writer", &["author".to_string()]);
    let (admin, b) = api_key::generate("acme", "boss", &["admin".to_string()]);
    store.insert_api_key(&a).await?;
    store.insert_api_key(&b).await?;
    let deleting = pattern(
        r#"
name: delete_user
version: 1.0.0
steps:
  - id: del
    call: demo.user.v1.UserService/DeleteUser
    with: {user_id: "${{ input.id }}"}
"#,
    )?;
    let s = client
        .register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(deleting.clone()) }, &author))
        .await
        .expect_err("an author may not call DeleteUser");
    ensure!(s.code() == Code::InvalidArgument && s.message().contains("steps[0].call"), "{s:?}");
    ensure!(s.message().contains("restricted") && s.message().contains("admin"), "{}", s.message());
    client.register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(deleting) }, &admin)).await?;
    harness.stop().await;
    Ok(())
}

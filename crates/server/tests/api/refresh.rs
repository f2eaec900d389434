//! Schema changes: a real tonic backend (`probe`) serving gRPC server reflection of one proto,
//! then of its next version on the same address; RefreshServices reports what changed and which
//! pattern versions break (directly or through a sub-pattern), with their diagnostics' paths.
//! Start-up with the backend down uses the descriptors cached in the store by an earlier start.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result, anyhow, bail, ensure};
use nexus_core::pb;
use nexus_store::{AuthStore, api_key};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;

use crate::common::{Client, Harness, Options, authed, pattern};

/// The backend as first plugged in.
const V1: &str = r#"
    syntax = "proto3";
    package probe.v1;
    message CreateRequest { string email = 1; string display_name = 2; }
    message Account { string id = 1; string nickname = 2; }
    message Empty {}
    service Accounts {
      rpc Create(CreateRequest) returns (Account);
      rpc Delete(Account) returns (Empty);
    }
"#;

/// The next version: `display_name` renamed, `nickname` removed, `Delete` gone, `Get` new.
const V2: &str = r#"
    syntax = "proto3";
    package probe.v1;
    message CreateRequest { string email = 1; string full_name = 2; }
    message Account { string id = 1; }
    message Empty {}
    service Accounts {
      rpc Create(CreateRequest) returns (Account);
      rpc Get(Account) returns (Account);
    }
"#;

fn descriptors(proto: &str) -> Result<prost_types::FileDescriptorSet> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("probe.proto"), proto)?;
    protox::compile(["probe.proto"], [dir.path()]).map_err(|e| anyhow!("compiling the probe proto: {e}"))
}

/// A tonic server on `addr` serving only reflection (v1) of `proto`; stops when the sender drops.
async fn probe(addr: SocketAddr, proto: &str) -> Result<oneshot::Sender<()>> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(descriptors(proto)?)
        .include_reflection_service(false)
        .build_v1()?;
    // The previous server on this address may still be closing.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!("rebinding {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => bail!("cannot bind the probe to {addr}: {e}"),
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder().add_service(reflection);
    tokio::spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
        stopped.await.ok();
    }));
    Ok(stop)
}

/// Everything the server logs at info and above, from here on (nextest runs each test in a
/// process of its own, so the global subscriber is this test's).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Result<Self> {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)?;
        Ok(logs)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }
}

/// A free port on loopback (nothing listens there once this returns).
fn free_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Keys for an admin and an author of tenant `acme`, stored where the harness will look.
async fn keys(dir: &Path) -> Result<(String, String)> {
    let store = nexus_store::SqliteStore::open(dir).await?;
    let (admin, record) = api_key::generate("acme", "ops", &["admin".to_string()]);
    store.insert_api_key(&record).await?;
    let (author, record) = api_key::generate("acme", "dev", &["author".to_string(), "viewer".to_string()]);
    store.insert_api_key(&record).await?;
    Ok((admin, author))
}

fn options(dir: &Path, probe: SocketAddr, require_auth: bool) -> Options {
    Options {
        data_dir: Some(dir.to_path_buf()),
        services: vec![format!("probe=http://{probe}")],
        auth: nexus_server::AuthConfig { require_auth, ..Default::default() },
        ..Options::default()
    }
}

const USES_PROBE: &str = r#"
name: uses_probe
version: 1.0.0
input:
  type: object
  required: [email, name]
  properties:
    email: {type: string}
    name: {type: string}
steps:
  - id: account
    call: probe.v1.Accounts/Create
    with: {email: "${{ input.email }}", display_name: "${{ input.name }}"}
output:
  nick: "${{ steps.account.nickname }}"
"#;

const CALLS_SUB: &str = r#"
name: calls_sub
version: 1.0.0
input:
  type: object
  required: [email]
  properties:
    email: {type: string}
steps:
  - id: sub
    call: pattern:uses_probe@1.0.0
    with: {email: "${{ input.email }}", name: Sub}
"#;

const DEMO_ONLY: &str = r#"
name: demo_only
version: 1.0.0
input:
  type: object
  required: [email]
  properties:
    email: {type: string}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: Hi}
"#;

async fn refresh(client: &mut Client, key: &str, backend: &str, dry_run: bool) -> Result<pb::RefreshServicesResponse> {
    let req = pb::RefreshServicesRequest { backend: backend.into(), dry_run };
    Ok(client.refresh_services(authed(req, key)).await.context("RefreshServices")?.into_inner())
}

async fn probe_actions(client: &mut Client, key: &str) -> Result<(String, Vec<String>)> {
    let req = if key.is_empty() {
        tonic::Request::new(pb::ListServicesRequest {})
    } else {
        authed(pb::ListServicesRequest {}, key)
    };
    let services = client.list_services(req).await?.into_inner().services;
    let s = services
        .iter()
        .find(|s| s.name == "probe.v1.Accounts")
        .ok_or_else(|| anyhow!("probe.v1.Accounts not in ListServices"))?;
    Ok((s.source.clone(), s.actions.iter().map(|a| a.name.clone()).collect()))
}

fn paths(p: &pb::PatternImpact) -> Vec<&str> {
    p.diagnostics.iter().map(|d| d.path.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_names_the_pattern_versions_it_breaks() -> Result<()> {
    let logs = Logs::capture()?;
    let dir = tempfile::tempdir()?;
    let (admin, author) = keys(dir.path()).await?;
    let addr = free_addr()?;
    let stop_v1 = probe(addr, V1).await?;
    let h = Harness::start_with(options(dir.path(), addr, true)).await?;
    let mut c = h.client.clone();
    for doc in [USES_PROBE, CALLS_SUB, DEMO_ONLY] {
        let req = pb::RegisterPatternRequest { pattern: Some(pattern(doc)?) };
        c.register_pattern(authed(req, &admin)).await.context("registering")?;
    }

    // Nothing changed yet: nothing breaks, nothing is swapped.
    let same = refresh(&mut c, &admin, "probe", false).await?;
    ensure!(same.broken.is_empty() && !same.applied, "{same:?}");

    drop(stop_v1);
    let _stop_v2 = probe(addr, V2).await?;

    // Only admins may refresh.
    let denied = c
        .refresh_services(authed(pb::RefreshServicesRequest::default(), &author))
        .await
        .err()
        .ok_or_else(|| anyhow!("an author could refresh the catalog"))?;
    ensure!(denied.code() == Code::PermissionDenied, "{denied:?}");

    // A dry run reports and keeps the catalog.
    let dry = refresh(&mut c, &admin, "probe", true).await?;
    ensure!(!dry.applied && dry.broken.len() == 2, "{dry:?}");
    ensure!(probe_actions(&mut c, &admin).await?.1.contains(&"probe.v1.Accounts/Delete".to_string()));

    let r = refresh(&mut c, &admin, "probe", false).await?;
    ensure!(r.applied, "{r:?}");
    let [b] = r.backends.as_slice() else { bail!("one backend expected: {r:?}") };
    ensure!(b.backend == "probe" && b.source == "reflection" && b.error.is_empty(), "{b:?}");
    ensure!(b.added == ["probe.v1.Accounts/Get"], "{b:?}");
    ensure!(b.removed == ["probe.v1.Accounts/Delete"], "{b:?}");
    let [create] = b.changed.as_slice() else { bail!("one changed action expected: {b:?}") };
    ensure!(create.action == "probe.v1.Accounts/Create", "{create:?}");
    for part in
        ["field display_name removed", "field full_name added", "output probe.v1.Account: field nickname removed"]
    {
        ensure!(create.change.contains(part), "`{part}` not in {:?}", create.change);
    }

    let names: Vec<String> = r.broken.iter().map(|p| format!("{}@{}", p.name, p.version)).collect();
    ensure!(names == ["uses_probe@1.0.0", "calls_sub@1.0.0"], "broken: {names:?}");
    let uses = &r.broken[0];
    ensure!(paths(uses).contains(&"steps[0].with.display_name"), "{uses:?}");
    ensure!(paths(uses).iter().any(|p| p.starts_with("output")), "the output's steps.account.nickname: {uses:?}");
    let sub = &r.broken[1];
    ensure!(paths(sub) == ["steps[0].call"], "{sub:?}");
    ensure!(sub.diagnostics[0].message.contains("uses_probe@1.0.0"), "{sub:?}");
    let log = logs.text();
    ensure!(
        log.contains("WARN")
            && log.contains("pattern uses_probe@1.0.0 no longer type-checks")
            && log.contains("steps[0].with.display_name"),
        "the log does not name the broken version: {log}"
    );

    // The new catalog is in use: a pattern against v1 is refused now, one against v2 is taken.
    let (source, actions) = probe_actions(&mut c, &admin).await?;
    ensure!(source == "reflection" && actions.contains(&"probe.v1.Accounts/Get".to_string()), "{actions:?}");
    ensure!(!actions.contains(&"probe.v1.Accounts/Delete".to_string()), "{actions:?}");
    let v2 = USES_PROBE.replace("1.0.0", "2.0.0").replace("display_name", "full_name").replace("nickname", "id");
    c.register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(pattern(&v2)?) }, &admin))
        .await
        .context("registering against the refreshed catalog")?;

    // Refreshing every backend lists each one; an unknown name is NOT_FOUND.
    let all = refresh(&mut c, &admin, "", false).await?;
    let backends: Vec<&str> = all.backends.iter().map(|b| b.backend.as_str()).collect();
    ensure!(backends == ["demo", "probe"], "{backends:?}");
    let unknown = refresh(&mut c, &admin, "nope", false).await.err().ok_or_else(|| anyhow!("refreshed `nope`"))?;
    let status = unknown.downcast_ref::<tonic::Status>().ok_or_else(|| anyhow!("{unknown:#}"))?;
    ensure!(status.code() == Code::NotFound && status.message().contains("probe"), "{status:?}");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_at_start_is_served_from_the_cached_descriptors() -> Result<()> {
    let logs = Logs::capture()?;
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let stop = probe(addr, V1).await?;
    let h = Harness::start_with(options(dir.path(), addr, false)).await?;
    h.stop().await;
    drop(stop);

    // The backend is gone; its descriptors are in the store.
    let h = Harness::start_with(options(dir.path(), addr, false)).await.context("starting with the probe down")?;
    let mut c = h.client.clone();
    let (source, actions) = probe_actions(&mut c, "").await?;
    ensure!(source == "cache", "{source}");
    let log = logs.text();
    ensure!(
        log.contains("backend `probe`: unreachable (cannot connect") && log.contains("using descriptors cached at 20"),
        "the log does not say which source was used: {log}"
    );
    ensure!(actions == ["probe.v1.Accounts/Create", "probe.v1.Accounts/Delete"], "{actions:?}");
    c.register_pattern(pb::RegisterPatternRequest { pattern: Some(pattern(USES_PROBE)?) }).await?;
    h.stop().await;

    // Without a cache, the clear error stays.
    let fresh = tempfile::tempdir()?;
    let err = match Harness::start_with(options(fresh.path(), addr, false)).await {
        Ok(_) => bail!("started with the probe down and no cache"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains(&format!("backend `probe` (http://{addr})")) && err.contains("cannot connect"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_refresh_follows_the_backend_and_stops_with_the_server() -> Result<()> {
    let addr = free_addr()?;
    let stop_v1 = probe(addr, V1).await?;
    let mut config =
        nexus_server::Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), in_memory: true, ..Default::default() };
    config.services.push(nexus_server::ServiceConfig::from_flag(&format!("probe=http://{addr}"))?);
    config.discovery.refresh_interval = Some(Duration::from_millis(200));
    let nexus = nexus_server::Nexus::start(config).await?;
    let mut c = Client::connect(format!("http://{}", nexus.local_addr())).await?;
    ensure!(probe_actions(&mut c, "").await?.1.contains(&"probe.v1.Accounts/Delete".to_string()));

    drop(stop_v1);
    let _stop_v2 = probe(addr, V2).await?;
    crate::common::eventually(Duration::from_secs(10), "the periodic refresh picking up v2", async || {
        let actions = probe_actions(&mut c, "").await?.1;
        ensure!(actions == ["probe.v1.Accounts/Create", "probe.v1.Accounts/Get"], "{actions:?}");
        Ok(())
    })
    .await?;
    let stopped = nexus.shutdown(Duration::from_secs(5)).await;
    ensure!(stopped.tasks_left == 0, "{stopped:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_descriptor_cache_works_on_postgres_too() -> Result<()> {
    let (url, schema, _guard) = crate::access::pg_schema().await?;
    let addr = free_addr()?;
    let on_pg = || Options {
        database: Some((url.clone(), schema.clone())),
        services: vec![format!("probe=http://{addr}")],
        ..Options::default()
    };
    let stop = probe(addr, V1).await?;
    Harness::start_with(on_pg()).await?.stop().await;
    drop(stop);
    let h = Harness::start_with(on_pg()).await.context("starting on PostgreSQL with the probe down")?;
    let mut c = h.client.clone();
    let (source, actions) = probe_actions(&mut c, "").await?;
    ensure!(source == "cache" && actions.len() == 2, "{source} {actions:?}");
    h.stop().await;
    Ok(())
}

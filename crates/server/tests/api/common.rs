//! The harness every area shares: the demo backends and a Nexus server on ephemeral ports of
//! 127.0.0.1, a connected gRPC client, and helpers for documents, `Struct`s, status details and
//! waiting for a condition.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use nexus_core::{pb, value};
use nexus_demo::{DemoHandle, DemoOptions, DemoServer};
use nexus_server::{
    Config, EXECUTION_ID_HEADER, Nexus, RpcStatus, ServiceConfig, proto::nexus_service_client::NexusServiceClient,
};
use prost::Message;
use tonic::transport::Channel;

pub type Client = NexusServiceClient<Channel>;

/// A running Nexus in front of the demo services. Dropping it stops both (the servers watch the
/// guards' channels); [`Harness::stop`] also waits for Nexus to drain.
pub struct Harness {
    pub client: Client,
    pub addr: SocketAddr,
    pub demo: DemoHandle,
    nexus: Option<Nexus>,
    _demo_server: DemoServer,
}

#[derive(Default)]
pub struct Options {
    /// Keep patterns in SQLite under this directory instead of in memory.
    pub data_dir: Option<PathBuf>,
    /// More backends, in the `--service NAME=URL` form.
    pub services: Vec<String>,
    /// Start-up behaviour of the demo services (e.g. the Subscribe chunk interval).
    pub demo: DemoOptions,
    /// Authentication and authorization settings.
    pub auth: nexus_server::AuthConfig,
    /// PostgreSQL URL and schema instead of SQLite.
    pub database: Option<(String, String)>,
    /// `limits.max_in_flight_per_caller`, when set.
    pub max_in_flight: Option<usize>,
    /// `limits.cel_cost_per_expression` and `limits.cel_cost_per_execution`, when set.
    pub cel_cost: Option<(u64, u64)>,
    /// `[events]` (the in-process bus when not set).
    pub events: Option<nexus_server::EventsConfig>,
    /// `events.scheduler = false`: no scheduler runs on the system clock (tests drive their own,
    /// [`Nexus::scheduler`], with a manual clock).
    pub no_scheduler: bool,
    /// `[ai]` (no LLM provider when not set).
    pub ai: Option<nexus_server::AiConfig>,
    /// `[telemetry]` (no span export when not set).
    pub telemetry: Option<nexus_server::TelemetryConfig>,
}

impl Harness {
    pub async fn start() -> Result<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Result<Self> {
        let (demo_addr, demo, demo_server) =
            nexus_demo::spawn(options.demo.clone()).await.context("starting the demo services")?;
        let mut config = Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Config::default() };
        match (options.database, options.data_dir) {
            (Some((url, schema)), _) => {
                config.store = nexus_server::StoreConfig { url: Some(url), schema: Some(schema), ..Default::default() };
            }
            (None, Some(dir)) => config.data_dir = dir,
            (None, None) => config.in_memory = true,
        }
        config.auth = options.auth;
        if let Some(events) = options.events {
            config.events = events;
        }
        config.events.scheduler = !options.no_scheduler;
        if let Some(ai) = options.ai {
            config.ai = ai;
        }
        if let Some(telemetry) = options.telemetry {
            config.telemetry = telemetry;
        }
        if let Some(n) = options.max_in_flight {
            config.limits.max_in_flight_per_caller = n;
        }
        if let Some((per_expression, per_execution)) = options.cel_cost {
            config.limits.cel_cost_per_expression = per_expression;
            config.limits.cel_cost_per_execution = per_execution;
        }
        config.services.push(ServiceConfig::from_flag(&format!("demo=http://{demo_addr}"))?);
        for flag in &options.services {
            config.services.push(ServiceConfig::from_flag(flag)?);
        }
        let nexus = Nexus::start(config).await.context("starting nexus")?;
        let addr = nexus.local_addr();
        let client = NexusServiceClient::connect(format!("http://{addr}")).await.context("connecting to nexus")?;
        Ok(Self { client, addr, demo, nexus: Some(nexus), _demo_server: demo_server })
    }

    /// The running server (for what tests drive in-process, such as a scheduler).
    pub fn nexus(&self) -> &Nexus {
        #[allow(clippy::expect_used)] // only `stop` takes it, and `stop` consumes the harness
        self.nexus.as_ref().expect("the harness is running")
    }

    /// Stops Nexus gracefully (and then, by dropping its guard, the demo services).
    pub async fn stop(mut self) {
        if let Some(nexus) = self.nexus.take() {
            nexus.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// A pattern document from the repository's `patterns/` directory.
pub fn pattern_file(name: &str) -> Result<pb::Pattern> {
    read_pattern(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../patterns").join(format!("{name}.yaml")))
}

/// A pattern document written for these tests, from `tests/data/`.
pub fn test_pattern(name: &str) -> Result<pb::Pattern> {
    read_pattern(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(format!("{name}.yaml")))
}

fn read_pattern(path: PathBuf) -> Result<pb::Pattern> {
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    nexus_core::document::parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A pattern document written inline in a test.
pub fn pattern(yaml: &str) -> Result<pb::Pattern> {
    nexus_core::document::parse(yaml).context("parsing the test's pattern document")
}

pub async fn register(client: &mut Client, pattern: pb::Pattern) -> Result<pb::RegisterPatternResponse> {
    let name = pattern.name.clone();
    let response = client
        .register_pattern(pb::RegisterPatternRequest { pattern: Some(pattern) })
        .await
        .with_context(|| format!("registering {name}"))?;
    Ok(response.into_inner())
}

/// Registers both example patterns of the repository.
pub async fn register_examples(client: &mut Client) -> Result<()> {
    for name in ["user_creation", "subscribe_live_stream"] {
        let r = register(client, pattern_file(name)?).await?;
        ensure!(r.created, "{name} was not created: {r:?}");
    }
    Ok(())
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn to_struct(json: serde_json::Value) -> Result<prost_types::Struct> {
    value::serde_to_struct(&json).ok_or_else(|| anyhow!("{json} is not a JSON object"))
}

pub fn to_json(s: &prost_types::Struct) -> serde_json::Value {
    value::struct_to_serde(s)
}

pub fn execute_request(pattern_name: &str, input: serde_json::Value) -> Result<pb::ExecutePatternRequest> {
    Ok(pb::ExecutePatternRequest {
        pattern_name: pattern_name.to_string(),
        input: Some(to_struct(input)?),
        ..Default::default()
    })
}

/// An email no other call of this test binary uses (the demo refuses duplicate emails).
pub fn unique_email(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{tag}-{}@example.com", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Decodes `details[0]` of the `google.rpc.Status` in a gRPC error, checking its type.
pub fn status_detail<T: Message + Default>(status: &tonic::Status, type_name: &str) -> Result<T> {
    let rpc = RpcStatus::decode(status.details()).context("grpc-status-details-bin is not a google.rpc.Status")?;
    ensure!(
        rpc.code == status.code() as i32,
        "details code {} differs from the status code {:?}",
        rpc.code,
        status.code()
    );
    let any = rpc.details.first().ok_or_else(|| anyhow!("the status has no details: {status:?}"))?;
    ensure!(
        any.type_url == format!("type.googleapis.com/{type_name}"),
        "details[0] is {}, expected {type_name}",
        any.type_url
    );
    T::decode(any.value.as_slice()).with_context(|| format!("decoding {type_name}"))
}

/// The `nexus-execution-id` metadata of a response or a status.
pub fn execution_id(metadata: &tonic::metadata::MetadataMap) -> Result<String> {
    let id = metadata
        .get(EXECUTION_ID_HEADER)
        .ok_or_else(|| anyhow!("no {EXECUTION_ID_HEADER} metadata in {metadata:?}"))?
        .to_str()
        .context("execution id is not ASCII")?;
    ensure!(!id.is_empty(), "empty execution id");
    Ok(id.to_string())
}

pub async fn get_execution(client: &mut Client, id: &str) -> Result<pb::Execution> {
    Ok(client
        .get_execution(pb::GetExecutionRequest { execution_id: id.to_string() })
        .await
        .with_context(|| format!("GetExecution {id}"))?
        .into_inner())
}

pub fn step<'a>(execution: &'a pb::Execution, id: &str) -> Result<&'a pb::StepRun> {
    execution
        .steps
        .iter()
        .find(|s| s.step_id == id)
        .ok_or_else(|| anyhow!("execution {} has no step `{id}`", execution.id))
}

/// Checks the output shape of a user_creation run that had an avatar.
pub fn check_user_creation_output(output: &serde_json::Value) -> Result<()> {
    let obj = output.as_object().ok_or_else(|| anyhow!("output is not an object: {output}"))?;
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    ensure!(keys == ["avatar_url", "email_id", "user_id"], "output keys {keys:?} in {output}");
    let text = |k: &str| obj.get(k).and_then(serde_json::Value::as_str).unwrap_or_default();
    ensure!(text("user_id").starts_with("usr_") && text("user_id").len() > 4, "user_id in {output}");
    ensure!(!text("avatar_url").is_empty(), "avatar_url in {output}");
    ensure!(!text("email_id").is_empty(), "email_id in {output}");
    Ok(())
}

/// Tries `probe` every 20 ms until it succeeds and returns what it returned; after `within`, fails
/// saying that `what` never happened, with the probe's last error (what it saw instead).
pub async fn eventually<T>(within: Duration, what: &str, mut probe: impl AsyncFnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() >= deadline => bail!("{what} did not happen within {within:?}: {e:#}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// [`eventually`] for a condition with nothing to report but whether it holds.
pub async fn until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Result<()> {
    eventually(within, what, async || if condition() { Ok(()) } else { bail!("it did not hold") }).await
}

/// A second client of the harness's Nexus, on a connection of its own.
pub async fn connect(h: &Harness) -> Result<Client> {
    Client::connect(format!("http://{}", h.addr)).await.context("connecting another client")
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

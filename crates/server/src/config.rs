//! Configuration in layers: defaults → `nexus.toml` → `NEXUS_*` environment → command-line flags
//! (applied by the CLI), then [`Config::validate`] with messages that name the key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// A boolean environment variable: `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`.
fn flag(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(key, format!("`{v}`: use true or false"))),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the one port serving gRPC, gRPC-Web and Connect JSON.
    pub listen: SocketAddr,
    /// Where the embedded SQLite store lives.
    pub data_dir: PathBuf,
    /// Keep everything in memory (nothing survives a restart).
    pub in_memory: bool,
    /// Finished executions kept in memory, with their payloads, for GetExecution /
    /// ListExecutions (~10 KiB each for a 3-step pattern). Durable executions are also in the
    /// journal (their summary) for as long as `retention` says.
    pub execution_history: usize,
    /// And at most this many bytes of them (estimated from their payloads; default 256 MiB):
    /// the oldest go first when either bound is reached.
    pub execution_history_bytes: usize,
    /// How long to wait for a backend's descriptors at start.
    #[serde(with = "humantime_secs")]
    pub discovery_timeout: std::time::Duration,
    pub services: Vec<ServiceConfig>,
    /// The shared store (cluster mode); SQLite in `data_dir` when not set.
    pub store: StoreConfig,
    /// How often a replica looks for patterns registered by the others (bounds how stale
    /// `latest` can be; an unknown exact version is looked up at once).
    #[serde(with = "humantime_secs")]
    pub refresh_interval: std::time::Duration,
    /// How long a replica's claim on a durable execution lasts without a heartbeat: when a
    /// replica dies, another takes its executions over within about this long.
    #[serde(with = "humantime_secs")]
    pub lease_timeout: std::time::Duration,
    /// Finished durable executions older than this are deleted from the journal.
    #[serde(with = "humantime_secs")]
    pub retention: std::time::Duration,
    /// While the store is unreachable, a durable execution's journal write waits (retrying) this
    /// long; after that the execution is suspended: it stays journaled and resumes, here or on
    /// another replica, once the store is back. Nothing is lost either way.
    #[serde(with = "humantime_secs")]
    pub outage_wait: std::time::Duration,
    /// Graceful shutdown: how long in-flight ephemeral executions get to finish (durable ones
    /// are handed back at once).
    #[serde(with = "humantime_secs")]
    pub shutdown_grace: std::time::Duration,
    /// Identity and access.
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    /// TLS on the listener; plaintext (h2c and HTTP/1.1) when not set.
    pub tls: TlsConfig,
    /// `[discovery]`: keeping the catalog in step with the backends.
    pub discovery: DiscoveryConfig,
    /// `[events]`: the event bus, and how events meet waits.
    pub events: EventsConfig,
    /// `[ai]`: GeneratePattern's optional LLM provider.
    pub ai: AiConfig,
    /// `[telemetry]`: traces, the access log.
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: what an operator watches besides `/metrics` (always served).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// An OpenTelemetry collector: a span per execution and per step attempt is exported there
    /// (`http://127.0.0.1:4317` for OTLP/gRPC, `http://127.0.0.1:4318` for OTLP/HTTP); not set: no
    /// export (trace context is still passed on to the backends).
    pub otlp_endpoint: Option<String>,
    /// `grpc` (default) or `http` (protobuf over HTTP, `/v1/traces` appended).
    pub otlp_protocol: OtlpProtocol,
    /// The `service.name` resource attribute of exported spans.
    pub service_name: String,
    /// A log line per RPC (target `nexus::access`: method, gRPC code, duration, tenant, subject).
    pub access_log: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, otlp_protocol: OtlpProtocol::Grpc, service_name: "nexus".into(), access_log: false }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    Grpc,
    Http,
}

/// `[ai]`: an OpenAI-compatible chat-completions endpoint (a local Ollama or vLLM, or a hosted
/// one) that GeneratePattern asks for a proposal next to its own synthesis. Optional: without it
/// everything works offline. Its proposals pass the same validation as any document, with a
/// bounded validate-and-repair loop.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AiConfig {
    /// Base URL, e.g. `http://127.0.0.1:11434/v1` (`/chat/completions` is appended); empty: no
    /// provider.
    pub llm_endpoint: String,
    /// The model name sent with each request.
    pub llm_model: String,
    /// The environment variable holding the API key (sent as a bearer token); the key itself
    /// never goes in the file.
    pub llm_api_key_env: String,
    /// Deadline of one request to the provider.
    #[serde(with = "humantime_secs")]
    pub llm_timeout: std::time::Duration,
    /// Rounds of "here is what ValidatePattern says, fix it" after the first proposal.
    pub llm_max_repair_rounds: u32,
}

impl Default for AiConfig {
    fn default() -> Self {
        Self {
            llm_endpoint: String::new(),
            llm_model: String::new(),
            llm_api_key_env: String::new(),
            llm_timeout: std::time::Duration::from_secs(30),
            llm_max_repair_rounds: 2,
        }
    }
}

/// `[events]`: where events travel, and how long they are kept.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// NATS JetStream (`nats://host:4222`) for clusters; not set: the in-process bus, backed by
    /// the store (one node).
    pub url: Option<String>,
    /// JetStream stream and durable consumer names, and the subject prefix of events.
    pub stream: String,
    pub consumer: String,
    pub subject_prefix: String,
    /// A `wait_for` registered this long after its event still sees it.
    #[serde(with = "humantime_secs")]
    pub lookback: std::time::Duration,
    /// Events are kept (and de-duplicated by identity) this long.
    #[serde(with = "humantime_secs")]
    pub retention: std::time::Duration,
    /// Run the scheduler (patterns' `schedule:`) on this replica; every replica may (each tick
    /// fires on exactly one). `NEXUS_SCHEDULER=off` turns it off.
    pub scheduler: bool,
    /// JetStream: a delivery not acknowledged within this long (its replica died) is delivered
    /// again, to any replica.
    #[serde(with = "humantime_secs")]
    pub ack_wait: std::time::Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream: "NEXUS_EVENTS".into(),
            consumer: "nexus-router".into(),
            subject_prefix: "nexus.events".into(),
            lookback: std::time::Duration::from_secs(300),
            retention: std::time::Duration::from_secs(86_400),
            scheduler: true,
            ack_wait: std::time::Duration::from_secs(30),
        }
    }
}

/// `[tls]`: Nexus's own listener over TLS. The files are read again on SIGHUP and when they
/// change; a bad new pair is logged and the one in use stays.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Both files, when TLS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

/// `[discovery]`: re-discovering backends while Nexus runs (`RefreshServices` does it on demand).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Re-discover every backend this often and re-type-check the patterns using them
    /// (`"5m"`; `"off"`, the default, never).
    #[serde(with = "optional_duration")]
    pub refresh_interval: Option<std::time::Duration>,
}

mod optional_duration {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
        super::parse_optional_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A duration, or `off` (also `0` or empty) for none.
fn parse_optional_duration(s: &str) -> Result<Option<std::time::Duration>, String> {
    match s.trim() {
        "" | "off" | "0" => Ok(None),
        s => parse_duration(s).map(Some),
    }
}

/// `[limits]`: what one caller may use of a shared gateway.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Executions one caller (tenant + subject) may have in flight; more are refused with
    /// RESOURCE_EXHAUSTED. 0 = unlimited.
    pub max_in_flight_per_caller: usize,
    /// What one evaluation of one `${{ }}` expression may cost, in units (one unit: one node of a
    /// comprehension's body — `all`, `exists`, `map`, `filter` … — for one element); beyond it the
    /// step fails with RESOURCE_EXHAUSTED naming the expression. About 0.1 s of CPU per million.
    pub cel_cost_per_expression: u64,
    /// What all the expressions of one execution may cost together.
    pub cel_cost_per_execution: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_in_flight_per_caller: 10_000,
            cel_cost_per_expression: nexus_core::expr::CostLimits::DEFAULT.per_expression,
            cel_cost_per_execution: nexus_core::expr::CostLimits::DEFAULT.per_execution,
        }
    }
}

/// `[auth]`: who may call, and what they may do.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Refuse every call without valid credentials (an API key or a JWT).
    pub require_auth: bool,
    /// Allow listening on a non-loopback address without `require_auth` (everyone who can reach
    /// the port is an admin).
    pub insecure: bool,
    /// Accept JWT bearer tokens.
    pub jwt: Option<JwtConfig>,
    /// Actions only patterns registered by these roles may call, e.g.
    /// `"demo.user.v1.UserService/DeleteUser" = ["admin"]`.
    pub restricted_actions: std::collections::BTreeMap<String, Vec<String>>,
    /// Event types only these roles may publish (PublishEvent, `POST /events`) and only patterns
    /// registered by them may emit: `"billing.refund" = ["admin"]`, or every type under a prefix,
    /// `"billing.*" = ["admin"]` (the longest match applies).
    pub restricted_events: std::collections::BTreeMap<String, Vec<String>>,
}

/// `[auth.jwt]`: tokens signed with HS256 (a shared secret) or RS256 (keys from a JWKS file).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// File holding the HS256 secret (the secret itself never goes in the config file).
    pub hs256_secret_file: Option<PathBuf>,
    /// JWKS file (`{"keys": [...]}`) with the RS256 public keys.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Claim holding the tenant (default `tenant`).
    pub tenant_claim: Option<String>,
    /// Claim holding the roles, a list of strings (default `roles`).
    pub roles_claim: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://user:password@host:5432/db`.
    pub url: Option<String>,
    /// Schema (search path) to use inside the database; it must exist.
    pub schema: Option<String>,
    /// Embedded SQLite: `normal` (default; commits survive a crash of the process) or `full`
    /// (fsync at every commit: they also survive a power loss).
    pub sqlite_synchronous: SqliteSynchronous,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    #[default]
    Normal,
    Full,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from(".nexus"),
            in_memory: false,
            execution_history: 1_000,
            execution_history_bytes: nexus_engine::DEFAULT_HISTORY_BYTES,
            discovery_timeout: std::time::Duration::from_secs(10),
            services: Vec::new(),
            store: StoreConfig::default(),
            refresh_interval: std::time::Duration::from_secs(2),
            lease_timeout: std::time::Duration::from_secs(5),
            retention: std::time::Duration::from_secs(7 * 86_400),
            outage_wait: std::time::Duration::from_secs(30),
            shutdown_grace: std::time::Duration::from_secs(30),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            tls: TlsConfig::default(),
            discovery: DiscoveryConfig::default(),
            events: EventsConfig::default(),
            ai: AiConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// A backend plugged into the catalog: `[[services]]` in nexus.toml or `--service NAME=URL`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// A name for the backend (used in logs and ListServices).
    pub name: String,
    /// `http://host:port` of the backend's gRPC server, or `https://host:port` for TLS.
    pub endpoint: String,
    /// `https://` only: PEM file of the CAs to trust instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `https://` only: client certificate chain (PEM) shown to a backend that asks for one (mTLS).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// `https://` only: the client certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// `https://` only: the name sent as SNI, checked against the backend's certificate and sent
    /// as `:authority` (default: the endpoint's host), like grpc-go's authority override.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// A compiled `FileDescriptorSet` file, instead of server reflection.
    #[serde(default)]
    pub descriptor_set: Option<PathBuf>,
    /// `.proto` files to compile, instead of server reflection.
    #[serde(default)]
    pub protos: Vec<PathBuf>,
    /// Include paths for `protos` (default: each file's directory).
    #[serde(default)]
    pub include: Vec<PathBuf>,
    /// Only these services (fully qualified); default: every service the backend offers.
    #[serde(default)]
    pub services: Vec<String>,
}

impl ServiceConfig {
    /// Parses `NAME=URL` as given to `--service`.
    pub fn from_flag(s: &str) -> Result<Self, ConfigError> {
        let (name, endpoint) = s.split_once('=').ok_or_else(|| {
            invalid("--service", format!("`{s}` must be NAME=URL, e.g. users=http://127.0.0.1:50061"))
        })?;
        Ok(Self {
            name: name.trim().to_string(),
            endpoint: endpoint.trim().to_string(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_server_name: None,
            descriptor_set: None,
            protos: Vec::new(),
            include: Vec::new(),
            services: Vec::new(),
        })
    }
}

mod humantime_secs {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a duration: one or more `<number><unit>` groups, largest unit first, such as `500ms`,
/// `10s`, `1.5s`, `2m`, `1h30m`, `7d` or `1d12h`; units `ms`, `s`, `m`, `h`, `d`; a bare number is
/// seconds. The one syntax of durations in the config file, the `NEXUS_*` variables and the
/// command-line flags. Out of range (more than ~584 billion years) is an error, never a panic.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    const USAGE: &str = "a duration like 500ms, 10s, 2m, 1h30m or 7d";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("an empty value is not {USAGE}"));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let n: f64 = s.parse().map_err(|_| format!("`{s}` is not {USAGE}"))?;
        return seconds(s, n);
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = s;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let n: f64 = num.parse().map_err(|_| format!("`{s}` is not {USAGE}"))?;
        let (rank, factor) = match unit {
            "d" => (0, 86_400.0),
            "h" => (1, 3_600.0),
            "m" => (2, 60.0),
            "s" => (3, 1.0),
            "ms" => (4, 0.001),
            "" => return Err(format!("`{s}`: `{num}` has no unit (use ms, s, m, h or d)")),
            _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m, h or d)")),
        };
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(format!("`{s}`: units must go from the largest to the smallest, each once (like 1h30m)"));
        }
        last_rank = rank;
        total = total.checked_add(seconds(s, n * factor)?).ok_or_else(|| too_long(s))?;
        rest = after;
    }
    Ok(total)
}

fn seconds(s: &str, n: f64) -> Result<std::time::Duration, String> {
    if n.is_sign_negative() {
        return Err(format!("`{s}`: a duration cannot be negative"));
    }
    std::time::Duration::try_from_secs_f64(n).map_err(|_| too_long(s))
}

fn too_long(s: &str) -> String {
    format!("`{s}` is longer than the longest duration (about 584 billion years)")
}

impl Config {
    /// Defaults, overlaid with the file at `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path)
            .map_err(|cause| ConfigError::Read { path: path.display().to_string(), cause })?;
        let mut config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        // Relative files in the config are relative to the config file, not to the cwd.
        if let Some(dir) = path.parent() {
            for s in &mut config.services {
                if let Some(ds) = &mut s.descriptor_set {
                    *ds = dir.join(&*ds);
                }
                for p in s.protos.iter_mut().chain(s.include.iter_mut()) {
                    *p = dir.join(&*p);
                }
                for p in [&mut s.ca_file, &mut s.cert_file, &mut s.key_file].into_iter().flatten() {
                    *p = dir.join(&*p);
                }
            }
            for p in [&mut config.tls.cert_file, &mut config.tls.key_file].into_iter().flatten() {
                *p = dir.join(&*p);
            }
            if let Some(jwt) = &mut config.auth.jwt {
                for p in [&mut jwt.hs256_secret_file, &mut jwt.jwks_file].into_iter().flatten() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(config)
    }

    /// Applies the `NEXUS_*` environment variables: every key's variable is listed in
    /// `docs/config.md` (a test holds the two together).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("NEXUS_LISTEN") {
            self.listen = v.parse().map_err(|e| invalid("NEXUS_LISTEN", format!("`{v}`: {e}")))?;
        }
        if let Some(v) = env("NEXUS_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("NEXUS_IN_MEMORY") {
            self.in_memory = flag("NEXUS_IN_MEMORY", &v)?;
        }
        if let Some(v) = env("NEXUS_LEASE_TIMEOUT") {
            self.lease_timeout = parse_duration(&v).map_err(|e| invalid("NEXUS_LEASE_TIMEOUT", e))?;
        }
        if let Some(v) = env("NEXUS_REQUIRE_AUTH") {
            self.auth.require_auth = flag("NEXUS_REQUIRE_AUTH", &v)?;
        }
        if let Some(v) = env("NEXUS_MAX_IN_FLIGHT_PER_CALLER") {
            self.limits.max_in_flight_per_caller =
                v.parse().map_err(|e| invalid("NEXUS_MAX_IN_FLIGHT_PER_CALLER", format!("`{v}`: {e}")))?;
        }
        if let Some(v) = env("NEXUS_CEL_COST_PER_EXPRESSION") {
            self.limits.cel_cost_per_expression =
                v.parse().map_err(|e| invalid("NEXUS_CEL_COST_PER_EXPRESSION", format!("`{v}`: {e}")))?;
        }
        if let Some(v) = env("NEXUS_CEL_COST_PER_EXECUTION") {
            self.limits.cel_cost_per_execution =
                v.parse().map_err(|e| invalid("NEXUS_CEL_COST_PER_EXECUTION", format!("`{v}`: {e}")))?;
        }
        if let Some(v) = env("NEXUS_EXECUTION_HISTORY") {
            self.execution_history =
                v.parse().map_err(|e| invalid("NEXUS_EXECUTION_HISTORY", format!("`{v}`: {e}")))?;
        }
        if let Some(v) = env("NEXUS_EXECUTION_HISTORY_BYTES") {
            self.execution_history_bytes =
                v.parse().map_err(|e| invalid("NEXUS_EXECUTION_HISTORY_BYTES", format!("`{v}`: {e}")))?;
        }
        if let Some(v) = env("NEXUS_OUTAGE_WAIT") {
            self.outage_wait = parse_duration(&v).map_err(|e| invalid("NEXUS_OUTAGE_WAIT", e))?;
        }
        if let Some(v) = env("NEXUS_SHUTDOWN_GRACE") {
            self.shutdown_grace = parse_duration(&v).map_err(|e| invalid("NEXUS_SHUTDOWN_GRACE", e))?;
        }
        if let Some(v) = env("NEXUS_SQLITE_SYNCHRONOUS") {
            self.store.sqlite_synchronous = match v.as_str() {
                "normal" => SqliteSynchronous::Normal,
                "full" => SqliteSynchronous::Full,
                _ => return Err(invalid("NEXUS_SQLITE_SYNCHRONOUS", format!("`{v}`: use normal or full"))),
            };
        }
        if let Some(v) = env("NEXUS_DATABASE_SCHEMA") {
            self.store.schema = Some(v);
        }
        if let Some(v) = env("NEXUS_DATABASE_URL") {
            self.store.url = Some(v);
        }
        if let Some(v) = env("NEXUS_TLS_CERT") {
            self.tls.cert_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("NEXUS_TLS_KEY") {
            self.tls.key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("NEXUS_DISCOVERY_REFRESH_INTERVAL") {
            self.discovery.refresh_interval =
                parse_optional_duration(&v).map_err(|e| invalid("NEXUS_DISCOVERY_REFRESH_INTERVAL", e))?;
        }
        if let Some(v) = env("NEXUS_EVENTS_URL") {
            self.events.url = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = env("NEXUS_EVENTS_STREAM") {
            self.events.stream = v;
        }
        if let Some(v) = env("NEXUS_EVENTS_CONSUMER") {
            self.events.consumer = v;
        }
        if let Some(v) = env("NEXUS_EVENTS_SUBJECT_PREFIX") {
            self.events.subject_prefix = v;
        }
        if let Some(v) = env("NEXUS_EVENTS_ACK_WAIT") {
            self.events.ack_wait = parse_duration(&v).map_err(|e| invalid("NEXUS_EVENTS_ACK_WAIT", e))?;
        }
        if let Some(v) = env("NEXUS_SCHEDULER") {
            self.events.scheduler = match v.as_str() {
                "on" | "1" | "true" | "yes" => true,
                "off" | "0" | "false" | "no" => false,
                _ => return Err(invalid("NEXUS_SCHEDULER", format!("`{v}`: use on or off"))),
            };
        }
        if let Some(v) = env("NEXUS_AI_LLM_ENDPOINT") {
            self.ai.llm_endpoint = v;
        }
        if let Some(v) = env("NEXUS_AI_LLM_MODEL") {
            self.ai.llm_model = v;
        }
        if let Some(v) = env("NEXUS_AI_LLM_API_KEY_ENV") {
            self.ai.llm_api_key_env = v;
        }
        if let Some(v) = env("NEXUS_OTLP_ENDPOINT") {
            self.telemetry.otlp_endpoint = (!v.trim().is_empty()).then(|| v.trim().to_string());
        }
        if let Some(v) = env("NEXUS_OTLP_PROTOCOL") {
            self.telemetry.otlp_protocol = match v.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http" | "http/protobuf" => OtlpProtocol::Http,
                _ => return Err(invalid("NEXUS_OTLP_PROTOCOL", format!("`{v}`: use grpc or http"))),
            };
        }
        if let Some(v) = env("NEXUS_SERVICE_NAME") {
            self.telemetry.service_name = v;
        }
        if let Some(v) = env("NEXUS_ACCESS_LOG") {
            self.telemetry.access_log = flag("NEXUS_ACCESS_LOG", &v)?;
        }
        let duration = |key: &str, v: &str| parse_duration(v).map_err(|e| invalid(key, e));
        if let Some(v) = env("NEXUS_DISCOVERY_TIMEOUT") {
            self.discovery_timeout = duration("NEXUS_DISCOVERY_TIMEOUT", &v)?;
        }
        if let Some(v) = env("NEXUS_REFRESH_INTERVAL") {
            self.refresh_interval = duration("NEXUS_REFRESH_INTERVAL", &v)?;
        }
        if let Some(v) = env("NEXUS_RETENTION") {
            self.retention = duration("NEXUS_RETENTION", &v)?;
        }
        if let Some(v) = env("NEXUS_EVENTS_LOOKBACK") {
            self.events.lookback = duration("NEXUS_EVENTS_LOOKBACK", &v)?;
        }
        if let Some(v) = env("NEXUS_EVENTS_RETENTION") {
            self.events.retention = duration("NEXUS_EVENTS_RETENTION", &v)?;
        }
        if let Some(v) = env("NEXUS_INSECURE") {
            self.auth.insecure = flag("NEXUS_INSECURE", &v)?;
        }
        if let Some(v) = env("NEXUS_AI_LLM_TIMEOUT") {
            self.ai.llm_timeout = duration("NEXUS_AI_LLM_TIMEOUT", &v)?;
        }
        if let Some(v) = env("NEXUS_AI_LLM_MAX_REPAIR_ROUNDS") {
            self.ai.llm_max_repair_rounds =
                v.trim().parse().map_err(|e| invalid("NEXUS_AI_LLM_MAX_REPAIR_ROUNDS", format!("`{v}`: {e}")))?;
        }
        // Any of these turns JWTs on (as an `[auth.jwt]` section would).
        let jwt_paths = [("NEXUS_AUTH_JWT_HS256_SECRET_FILE", 0), ("NEXUS_AUTH_JWT_JWKS_FILE", 1)];
        for (key, which) in jwt_paths {
            if let Some(v) = env(key) {
                let jwt = self.auth.jwt.get_or_insert_default();
                let slot = if which == 0 { &mut jwt.hs256_secret_file } else { &mut jwt.jwks_file };
                *slot = Some(PathBuf::from(v));
            }
        }
        for key in [
            "NEXUS_AUTH_JWT_ISSUER",
            "NEXUS_AUTH_JWT_AUDIENCE",
            "NEXUS_AUTH_JWT_TENANT_CLAIM",
            "NEXUS_AUTH_JWT_ROLES_CLAIM",
        ] {
            if let Some(v) = env(key) {
                let jwt = self.auth.jwt.get_or_insert_default();
                match key {
                    "NEXUS_AUTH_JWT_ISSUER" => jwt.issuer = v,
                    "NEXUS_AUTH_JWT_AUDIENCE" => jwt.audience = v,
                    "NEXUS_AUTH_JWT_TENANT_CLAIM" => jwt.tenant_claim = Some(v),
                    _ => jwt.roles_claim = Some(v),
                }
            }
        }
        if let Some(v) = env("NEXUS_SERVICES") {
            for s in v.split(',').filter(|s| !s.trim().is_empty()) {
                self.services.push(ServiceConfig::from_flag(s)?);
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limits.cel_cost_per_expression == 0 || self.limits.cel_cost_per_execution == 0 {
            return Err(invalid(
                "limits.cel_cost_per_expression",
                "the CEL cost limits must be at least 1 (an expression without comprehensions costs nothing)",
            ));
        }
        if let Some(url) = &self.store.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "store.url",
                    format!("`{}` is not a postgres:// URL", nexus_store::redact_url(url)),
                ));
            }
            if self.in_memory {
                return Err(invalid("store.url", "give either a database URL or --in-memory, not both"));
            }
        }
        if !self.listen.ip().is_loopback() && !self.auth.require_auth && !self.auth.insecure {
            return Err(invalid(
                "listen",
                format!(
                    "{} is not a loopback address and authentication is off: anyone who can reach it would be an admin. \
                     Use --require-auth (with API keys from `nexus token create` or [auth.jwt]), or --insecure to accept that",
                    self.listen
                ),
            ));
        }
        if let Some(jwt) = &self.auth.jwt
            && jwt.hs256_secret_file.is_none()
            && jwt.jwks_file.is_none()
        {
            return Err(invalid("auth.jwt", "set hs256_secret_file or jwks_file"));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => return Err(invalid("tls.key_file", "set it together with tls.cert_file")),
            (None, Some(_)) => return Err(invalid("tls.cert_file", "set it together with tls.key_file")),
            _ => {}
        }
        if let Some(url) = &self.events.url
            && !url.starts_with("nats://")
            && !url.starts_with("tls://")
        {
            return Err(invalid("events.url", format!("`{url}` is not a nats:// URL")));
        }
        if self.events.retention < self.events.lookback {
            return Err(invalid(
                "events.retention",
                "must be at least events.lookback (a wait looks back into what is kept)",
            ));
        }
        if self.lease_timeout < std::time::Duration::from_millis(300) {
            return Err(invalid("lease_timeout", "must be at least 300ms (heartbeats run every third of it)"));
        }
        if self.discovery.refresh_interval.is_some_and(|d| d < std::time::Duration::from_millis(100)) {
            return Err(invalid("discovery.refresh_interval", "must be at least 100ms, or \"off\""));
        }
        if self.execution_history == 0 {
            return Err(invalid("execution_history", "must be at least 1"));
        }
        if self.execution_history_bytes < 1 << 20 {
            return Err(invalid("execution_history_bytes", "must be at least 1048576 (1 MiB)"));
        }
        for (i, s) in self.services.iter().enumerate() {
            let key = format!("services[{i}]");
            if s.name.is_empty() {
                return Err(invalid(format!("{key}.name"), "every service needs a name"));
            }
            if self.services[..i].iter().any(|o| o.name == s.name) {
                return Err(invalid(format!("{key}.name"), format!("service name `{}` is used twice", s.name)));
            }
            match url::Url::parse(&s.endpoint) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) | Err(_) => {
                    return Err(invalid(
                        format!("{key}.endpoint"),
                        format!("`{}` is not an http(s)://host:port URL", s.endpoint),
                    ));
                }
            }
            if s.descriptor_set.is_some() && !s.protos.is_empty() {
                return Err(invalid(key.to_string(), "give either descriptor_set or protos, not both"));
            }
            self.validate_backend_tls(&key, s)?;
        }
        Ok(())
    }

    /// A backend's TLS settings: only with `https://`, certificate and key together, a server
    /// name that is a DNS name or an IP address.
    fn validate_backend_tls(&self, key: &str, s: &ServiceConfig) -> Result<(), ConfigError> {
        let https = s.endpoint.starts_with("https://");
        let set = [
            ("ca_file", s.ca_file.is_some()),
            ("cert_file", s.cert_file.is_some()),
            ("key_file", s.key_file.is_some()),
            ("tls_server_name", s.tls_server_name.is_some()),
        ];
        if !https && let Some((name, _)) = set.iter().find(|(_, on)| *on) {
            return Err(invalid(
                format!("{key}.{name}"),
                format!("only for an https:// endpoint (`{}` is plaintext)", s.endpoint),
            ));
        }
        match (&s.cert_file, &s.key_file) {
            (Some(_), None) => return Err(invalid(format!("{key}.key_file"), "set it together with cert_file")),
            (None, Some(_)) => return Err(invalid(format!("{key}.cert_file"), "set it together with key_file")),
            _ => {}
        }
        if let Some(name) = &s.tls_server_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            return Err(invalid(format!("{key}.tls_server_name"), format!("`{name}` is not a DNS name or IP address")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of `docs/config.md`: key, variable, default.
    fn reference() -> Vec<(String, Option<String>, Option<String>)> {
        let unquote = |c: &str| c.trim().strip_prefix('`').and_then(|c| c.strip_suffix('`')).map(str::to_string);
        include_str!("../../../docs/config.md")
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').collect();
                (unquote(cells[1]).unwrap_or_default(), unquote(cells[2]), unquote(cells[3]))
            })
            .collect()
    }

    /// The keys the code accepts, from serde's own list (an unknown key in each section).
    fn accepted_keys() -> std::collections::BTreeSet<String> {
        let sections = ["", "store", "auth", "auth.jwt", "limits", "tls", "discovery", "events", "ai", "telemetry"];
        let mut keys = std::collections::BTreeSet::new();
        let dir = tempfile::tempdir().unwrap();
        for section in sections.iter().map(|s| (*s, false)).chain([("services", true)]) {
            let header = match section {
                ("", _) => String::new(),
                (s, false) => format!("[{s}]\n"),
                (s, true) => format!("[[{s}]]\n"),
            };
            let path = dir.path().join("probe.toml");
            std::fs::write(&path, format!("{header}no_such_key = 1\n")).unwrap();
            let e = Config::load(Some(&path)).unwrap_err().to_string();
            let expected = e.split("expected").nth(1).unwrap_or_else(|| panic!("{e}"));
            for key in expected.split('`').skip(1).step_by(2) {
                let prefix = if section.0.is_empty() { String::new() } else { format!("{}.", section.0) };
                // Sections are documented by their keys.
                if !sections.contains(&format!("{prefix}{key}").as_str()) {
                    keys.insert(format!("{prefix}{key}"));
                }
            }
        }
        keys
    }

    #[test]
    fn the_reference_lists_every_key_the_code_accepts_and_no_other() {
        let documented: std::collections::BTreeSet<String> = reference().into_iter().map(|(k, _, _)| k).collect();
        let accepted = accepted_keys();
        assert!(accepted.len() > 40, "{accepted:?}");
        let missing: Vec<_> = accepted.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&accepted).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "not in docs/config.md: {missing:?}; not in the code: {unknown:?}"
        );
    }

    #[test]
    fn the_reference_defaults_and_variables_are_the_codes() {
        let default = format!("{:?}", Config::default());
        let dir = tempfile::tempdir().unwrap();
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Config::default()
            .apply_env(|k| {
                asked.borrow_mut().insert(k.to_string());
                None
            })
            .unwrap();
        let asked = asked.into_inner();
        let mut documented_vars = std::collections::BTreeSet::new();
        for (key, var, value) in reference() {
            if let Some(var) = &var {
                assert!(asked.contains(var), "{var} (for {key}) is documented but never read");
                documented_vars.insert(var.clone());
            }
            // Claims' defaults are what applies when they are not set, not values of the key.
            let Some(value) = value.filter(|_| !key.starts_with("auth.jwt.")) else { continue };
            let (section, name) = key.rsplit_once('.').unwrap_or(("", &key));
            let literal = if value.parse::<u64>().is_ok() || value == "true" || value == "false" {
                value.clone()
            } else {
                format!("{value:?}")
            };
            let header = if section.is_empty() { String::new() } else { format!("[{section}]\n") };
            let path = dir.path().join("default.toml");
            std::fs::write(&path, format!("{header}{name} = {literal}\n")).unwrap();
            let from_file = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{key} = {literal}: {e}"));
            assert_eq!(format!("{from_file:?}"), default, "the documented default of {key} is not the code's");
            if let Some(var) = &var {
                let mut from_env = Config::default();
                from_env.apply_env(|k| (k == var).then(|| value.clone())).unwrap_or_else(|e| panic!("{var}: {e}"));
                assert_eq!(format!("{from_env:?}"), default, "{var}={value} is not the default");
            }
        }
        let undocumented: Vec<_> = asked.difference(&documented_vars).collect();
        assert!(undocumented.is_empty(), "read but not in docs/config.md: {undocumented:?}");
    }

    #[test]
    fn durations_have_one_syntax_and_never_overflow() {
        use std::time::Duration;
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1d12h", Duration::from_secs(129_600)),
            ("1h0m5s250ms", Duration::from_millis(3_605_250)),
            ("7d", Duration::from_secs(604_800)),
            ("30", Duration::from_secs(30)),
            (" 2m ", Duration::from_secs(120)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for (text, fragment) in [
            ("99999999999999999999d", "longer than the longest duration"),
            ("18446744073709551615s1ms", "longer than the longest duration"),
            ("", "empty"),
            ("10x", "unknown unit `x`"),
            ("30m1h", "largest to the smallest"),
            ("1m1m", "largest to the smallest"),
            ("1h30", "has no unit"),
            ("-5s", "not a duration"),
            ("inf", "not a duration"),
            ("1..5s", "not a duration"),
        ] {
            let e = parse_duration(text).expect_err(text);
            assert!(e.contains(fragment), "{text}: {e}");
        }
        // The reported panic: a retention far past the largest duration, in the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        std::fs::write(&path, "retention = \"99999999999999999999d\"\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("retention") && e.contains("longest duration"), "{e}");
    }

    #[test]
    fn loads_services_from_toml_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:6000\"\n[[services]]\nname = \"users\"\nendpoint = \"http://127.0.0.1:1\"\ndescriptor_set = \"users.bin\"\n",
        )
        .unwrap();
        let mut c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.services[0].descriptor_set.as_deref(), Some(dir.path().join("users.bin").as_path()));
        c.apply_env(|k| (k == "NEXUS_SERVICES").then(|| "a=http://127.0.0.1:2".to_string())).unwrap();
        assert_eq!(c.services.len(), 2);
        c.validate().unwrap();
    }

    #[test]
    fn loads_the_auth_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        std::fs::write(
            &path,
            r#"
listen = "0.0.0.0:6000"
[auth]
require_auth = true
restricted_actions = { "demo.user.v1.UserService/DeleteUser" = ["admin"] }
[auth.jwt]
hs256_secret_file = "jwt.secret"
issuer = "https://login.example.com"
audience = "nexus"
"#,
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        c.validate().unwrap();
        assert!(c.auth.require_auth);
        assert_eq!(c.auth.restricted_actions["demo.user.v1.UserService/DeleteUser"], ["admin"]);
        let jwt = c.auth.jwt.unwrap();
        assert_eq!(jwt.hs256_secret_file.as_deref(), Some(dir.path().join("jwt.secret").as_path()));
        // Without require_auth, a non-loopback address is refused unless insecure.
        let mut open = Config { listen: "0.0.0.0:6000".parse().unwrap(), ..Config::default() };
        let e = open.validate().unwrap_err().to_string();
        assert!(e.starts_with("listen") && e.contains("--require-auth"), "{e}");
        open.auth.insecure = true;
        open.validate().unwrap();
        open.apply_env(|k| (k == "NEXUS_SQLITE_SYNCHRONOUS").then(|| "full".to_string())).unwrap();
        assert_eq!(open.store.sqlite_synchronous, SqliteSynchronous::Full);
        let e = open.apply_env(|k| (k == "NEXUS_SQLITE_SYNCHRONOUS").then(|| "off".to_string())).unwrap_err();
        assert!(e.to_string().contains("NEXUS_SQLITE_SYNCHRONOUS"), "{e}");
    }

    #[test]
    fn backend_tls_settings_need_https_and_name_the_key() {
        let mut c = Config::default();
        c.services.push(ServiceConfig {
            ca_file: Some("ca.pem".into()),
            ..ServiceConfig::from_flag("x=http://127.0.0.1:1").unwrap()
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("services[0].ca_file: only for an https:// endpoint"), "{e}");
        c.services[0].endpoint = "https://127.0.0.1:1".into();
        c.validate().unwrap();
        c.services[0].cert_file = Some("client.pem".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("services[0].key_file: set it together with cert_file"), "{e}");
        c.services[0].key_file = Some("client.key".into());
        c.services[0].tls_server_name = Some("not a name".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("services[0].tls_server_name"), "{e}");
        c.services[0].tls_server_name = Some("backend.internal".into());
        c.validate().unwrap();
    }

    #[test]
    fn listener_tls_from_toml_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        std::fs::write(&path, "[tls]\ncert_file = \"cert.pem\"\n").unwrap();
        let mut c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.tls.cert_file.as_deref(), Some(dir.path().join("cert.pem").as_path()));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("tls.key_file"), "{e}");
        c.apply_env(|k| (k == "NEXUS_TLS_KEY").then(|| "/k.pem".to_string())).unwrap();
        c.validate().unwrap();
        assert_eq!(c.tls.files().map(|(_, k)| k.to_path_buf()), Some(PathBuf::from("/k.pem")));
    }

    #[test]
    fn discovery_refresh_interval_is_off_unless_set() {
        assert_eq!(Config::default().discovery.refresh_interval, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        std::fs::write(&path, "[discovery]\nrefresh_interval = \"5m\"\n").unwrap();
        let mut c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.discovery.refresh_interval, Some(std::time::Duration::from_secs(300)));
        c.apply_env(|k| (k == "NEXUS_DISCOVERY_REFRESH_INTERVAL").then(|| "off".to_string())).unwrap();
        assert_eq!(c.discovery.refresh_interval, None);
        c.apply_env(|k| (k == "NEXUS_DISCOVERY_REFRESH_INTERVAL").then(|| "10ms".to_string())).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("discovery.refresh_interval"), "{e}");
        let e = c.apply_env(|k| (k == "NEXUS_DISCOVERY_REFRESH_INTERVAL").then(|| "soon".to_string())).unwrap_err();
        assert!(e.to_string().starts_with("NEXUS_DISCOVERY_REFRESH_INTERVAL"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = Config::default();
        c.services.push(ServiceConfig::from_flag("x=not a url").unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("services[0].endpoint"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        std::fs::write(&path, "lisen = 1\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
    }
}

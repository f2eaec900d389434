//! Prometheus metrics, served at `GET /metrics` on the API port (OpenMetrics text format, which
//! Prometheus scrapes natively).
//!
//! Executions, steps, retries and backend errors are counted from each finished execution's
//! record ([`nexus_engine::Observer`]): the steps' path carries no instrumentation. Executions in
//! flight are read from the engine at scrape time. The journal's group commit, lease take-overs
//! and the event router report their own figures here. Every label's values are bounded: pattern
//! names and versions are registered ones, actions come from the catalog, codes are gRPC's 17,
//! methods are the ones served here (any other path is `unknown`, `access_log::UNKNOWN_METHOD`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use nexus_engine::{Engine, ExecutionRecord, Observer, code_name};
use prometheus_client::{
    encoding::{EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

/// Where Prometheus scrapes.
pub const PATH: &str = "/metrics";

type Labels<const N: usize> = [(&'static str, Value); N];

/// A label's value: a name the server holds anyway (pattern, version, action), or a constant
/// (status, code) — neither is copied per observation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Value {
    Shared(Arc<str>),
    Static(&'static str),
}

impl EncodeLabelValue for Value {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self {
            Value::Shared(s) => EncodeLabelValue::encode(&&**s, encoder),
            Value::Static(s) => EncodeLabelValue::encode(s, encoder),
        }
    }
}

fn shared(s: &Arc<str>) -> Value {
    Value::Shared(s.clone())
}

/// Latency buckets from 100 µs to ~105 s (×2 each).
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// The handles of the series one name or pair of names leads to, found by the addresses of the
/// `Arc<str>` names (which the registry, the catalog and the router hold for as long as the
/// names exist) rather than by hashing their text with the families' SipHash on every
/// observation: ~5 k instructions per execution of user_creation went to that. Each entry holds
/// its names, so an address cannot be reused by another name while it is cached; the same text
/// under another `Arc` gets an entry of its own that leads to the same series. Bounded: past
/// [`HANDLES_MAX`] entries it starts over.
struct Handles<V> {
    map: std::sync::RwLock<HandleMap<V>>,
}

/// Names' addresses → the names (held) and their handles.
type HandleMap<V> = HashMap<[usize; 2], ([Arc<str>; 2], V), foldhash::fast::FixedState>;

const HANDLES_MAX: usize = 4096;

impl<V: Clone> Handles<V> {
    fn new() -> Self {
        Self { map: std::sync::RwLock::new(HashMap::default()) }
    }

    /// The handles of `names`, made by `make` the first time.
    fn get(&self, names: [&Arc<str>; 2], make: impl FnOnce() -> V) -> V {
        let key = names.map(|n| Arc::as_ptr(n).cast::<u8>() as usize);
        if let Some((_, v)) = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return v.clone();
        }
        let v = make();
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= HANDLES_MAX {
            map.clear();
        }
        map.insert(key, (names.map(Arc::clone), v.clone()));
        v
    }
}

/// An execution's series by pattern and version: its counter for each status, its duration.
#[derive(Clone)]
struct PatternHandles {
    /// By `ExecutionStatus as usize`, made as the statuses occur.
    by_status: Arc<[std::sync::OnceLock<Counter>; STATUSES]>,
    duration: Histogram,
}

/// Statuses an execution can have (`ExecutionStatus as usize` counts them from 0).
const STATUSES: usize = nexus_engine::ExecutionStatus::ALL.len();

/// A method's series: its counter for each gRPC code (0..=16), its duration.
#[derive(Clone)]
struct MethodHandles {
    by_code: Arc<[std::sync::OnceLock<Counter>; 17]>,
    duration: Histogram,
}

/// One server's metrics.
pub struct Metrics {
    patterns: Handles<PatternHandles>,
    actions: Handles<Histogram>,
    methods: Handles<MethodHandles>,
    registry: Registry,
    executions: Family<Labels<3>, Counter>,
    execution_seconds: Family<Labels<1>, Histogram, fn() -> Histogram>,
    step_seconds: Family<Labels<1>, Histogram, fn() -> Histogram>,
    backend_errors: Family<Labels<2>, Counter>,
    retries: Family<Labels<1>, Counter>,
    in_flight: Gauge,
    journal_commit_seconds: Histogram,
    journal_batch: Histogram,
    lease_takeovers: Counter,
    event_lag_seconds: Histogram,
    rpcs: Family<Labels<2>, Counter>,
    rpc_seconds: Family<Labels<1>, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nexus");
        let executions = Family::<Labels<3>, Counter>::default();
        registry.register(
            "executions",
            "Finished executions by pattern, version and status (SUCCEEDED, FAILED, CANCELLED, COMPENSATED)",
            executions.clone(),
        );
        let execution_seconds = Family::<Labels<1>, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register_with_unit(
            "execution_duration",
            "Duration of finished executions by pattern",
            Unit::Seconds,
            execution_seconds.clone(),
        );
        let step_seconds = Family::<Labels<1>, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register_with_unit(
            "step_attempt_duration",
            "Duration of step attempts (one backend call, sub-pattern or event step each) by action",
            Unit::Seconds,
            step_seconds.clone(),
        );
        let backend_errors = Family::<Labels<2>, Counter>::default();
        registry.register(
            "backend_errors",
            "Failed step attempts by action and gRPC status code",
            backend_errors.clone(),
        );
        let retries = Family::<Labels<1>, Counter>::default();
        registry.register("step_retries", "Step attempts after the first, by action", retries.clone());
        let in_flight = Gauge::default();
        registry.register("executions_in_flight", "Executions running in this process", in_flight.clone());
        let journal_commit_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 18));
        registry.register_with_unit(
            "journal_commit_duration",
            "Duration of one journal transaction (a group commit of one or more writes)",
            Unit::Seconds,
            journal_commit_seconds.clone(),
        );
        let journal_batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "journal_commit_batch_size",
            "Journal writes committed together in one transaction",
            journal_batch.clone(),
        );
        let lease_takeovers = Counter::default();
        registry.register(
            "lease_takeovers",
            "Durable executions this replica took over after their lease ran out",
            lease_takeovers.clone(),
        );
        let event_lag_seconds = latency();
        registry.register_with_unit(
            "event_lag",
            "Time from an event's `time` to its routing here (triggers and waits)",
            Unit::Seconds,
            event_lag_seconds.clone(),
        );
        let rpcs = Family::<Labels<2>, Counter>::default();
        registry.register("rpcs", "Requests served by method and gRPC status code", rpcs.clone());
        let rpc_seconds = Family::<Labels<1>, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register_with_unit(
            "rpc_duration",
            "Duration of requests by method (until the response starts; streams until their headers)",
            Unit::Seconds,
            rpc_seconds.clone(),
        );
        Self {
            patterns: Handles::new(),
            actions: Handles::new(),
            methods: Handles::new(),
            registry,
            executions,
            execution_seconds,
            step_seconds,
            backend_errors,
            retries,
            in_flight,
            journal_commit_seconds,
            journal_batch,
            lease_takeovers,
            event_lag_seconds,
            rpcs,
            rpc_seconds,
        }
    }

    /// The OpenMetrics text of every metric, with `in_flight` executions running now.
    pub fn render(&self, in_flight: usize) -> String {
        self.in_flight.set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// One journal transaction of `writes` writes took `took`.
    pub fn journal_commit(&self, writes: usize, took: Duration) {
        self.journal_commit_seconds.observe(took.as_secs_f64());
        self.journal_batch.observe(writes as f64);
    }

    pub fn lease_takeover(&self) {
        self.lease_takeovers.inc();
    }

    /// An event is routed `lag` after its `time`.
    pub fn event_routed(&self, lag: Duration) {
        self.event_lag_seconds.observe(lag.as_secs_f64());
    }

    /// A request to `method` (`/nexus.v1.NexusService/ExecutePattern`) ended with `code`.
    pub fn rpc(&self, method: &Arc<str>, code: tonic::Code, took: Duration) {
        let handles = self.methods.get([method, method], || MethodHandles {
            by_code: Arc::new(std::array::from_fn(|_| std::sync::OnceLock::new())),
            duration: self.rpc_seconds.get_or_create(&[("method", shared(method))]).clone(),
        });
        match handles.by_code.get(code as usize) {
            Some(slot) => slot
                .get_or_init(|| {
                    self.rpcs
                        .get_or_create(&[("method", shared(method)), ("code", Value::Static(code_name(code)))])
                        .clone()
                })
                .inc(),
            None => {
                self.rpcs.get_or_create(&[("method", shared(method)), ("code", Value::Static(code_name(code)))]).inc()
            }
        };
        handles.duration.observe(took.as_secs_f64());
    }
}

impl Observer for Metrics {
    fn finished(&self, record: &Arc<ExecutionRecord>) {
        let (name, version) = (&record.pattern_name, &record.pattern_version);
        let pattern = self.patterns.get([name, version], || PatternHandles {
            by_status: Arc::new(std::array::from_fn(|_| std::sync::OnceLock::new())),
            duration: self.execution_seconds.get_or_create(&[("pattern", shared(name))]).clone(),
        });
        let count = || {
            self.executions
                .get_or_create(&[
                    ("pattern", shared(name)),
                    ("version", shared(version)),
                    ("status", Value::Static(record.status.as_str())),
                ])
                .clone()
        };
        match pattern.by_status.get(record.status as usize) {
            Some(slot) => slot.get_or_init(count).inc(),
            None => count().inc(),
        };
        pattern.duration.observe(record.duration.as_secs_f64());
        for step in &record.steps {
            if step.attempts.is_empty() {
                continue;
            }
            let action = [("action", shared(&step.call))];
            {
                let histogram =
                    self.actions.get([&step.call, &step.call], || self.step_seconds.get_or_create(&action).clone());
                for a in &step.attempts {
                    histogram.observe(a.duration.as_secs_f64());
                }
            }
            let retried = step.attempts.iter().filter(|a| a.number > 1).count();
            if retried > 0 {
                self.retries.get_or_create(&action).inc_by(retried as u64);
            }
            for a in step.attempts.iter().filter(|a| a.code != tonic::Code::Ok) {
                self.backend_errors
                    .get_or_create(&[("action", shared(&step.call)), ("code", Value::Static(code_name(a.code)))])
                    .inc();
            }
        }
    }
}

/// What `GET /metrics` needs.
#[derive(Clone)]
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    pub auth: Arc<crate::auth::Authenticator>,
    /// Read at scrape time (executions in flight). Not kept in [`Metrics`], which the engine
    /// holds as its observer: that would be a cycle.
    pub engine: Engine,
}

/// `GET /metrics`. With authentication required, the scraper needs a credential like any caller
/// (Prometheus: `authorization: {credentials: <API key>}`); metrics name patterns and actions.
pub async fn handle(
    axum::extract::State(endpoint): axum::extract::State<Endpoint>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Err(e) = endpoint.auth.authenticate(&headers).await {
        tracing::debug!(path = PATH, "refused: {e}");
        return (http::StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response();
    }
    let body = endpoint.metrics.render(endpoint.engine.in_flight());
    ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use nexus_engine::{Attempt, ExecutionStatus, StepRecord, StepStatus};

    use super::*;

    fn record(name: &str, version: &str, status: ExecutionStatus, action: &str) -> Arc<ExecutionRecord> {
        Arc::new(ExecutionRecord {
            id: Arc::from("e"),
            tenant: Arc::from("t"),
            pattern_name: Arc::from(name),
            pattern_version: Arc::from(version),
            status,
            input: cel::Value::Null.into(),
            output: None,
            error: None,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(3),
            steps: vec![StepRecord {
                step_id: Arc::from("s"),
                call: Arc::from(action),
                status: StepStatus::Succeeded,
                started_at: None,
                duration: Duration::from_millis(1),
                request: None,
                response: None,
                error: None,
                attempts: vec![Attempt {
                    number: 1,
                    span_id: 1,
                    item: None,
                    started_at: SystemTime::UNIX_EPOCH,
                    duration: Duration::from_millis(1),
                    code: tonic::Code::Ok,
                    message: String::new(),
                }],
                compensation: None,
                items: 0,
            }],
            idempotency_key: None,
            trace: None,
        })
    }

    /// Series are found by the names' addresses; the same text under other `Arc`s (a pattern
    /// registered again, a method of another connection) must still count into one series.
    #[test]
    fn the_same_names_count_into_one_series_whichever_arc_holds_them() {
        let metrics = Metrics::new();
        for status in [ExecutionStatus::Succeeded, ExecutionStatus::Succeeded, ExecutionStatus::Failed] {
            metrics.finished(&record("p", "1.0.0", status, "svc/M"));
        }
        metrics.finished(&record("p", "2.0.0", ExecutionStatus::Succeeded, "svc/N"));
        let method: Arc<str> = Arc::from("/nexus.v1.NexusService/ExecutePattern");
        metrics.rpc(&method, tonic::Code::Ok, Duration::from_millis(1));
        metrics.rpc(&Arc::from(&*method), tonic::Code::Ok, Duration::from_millis(1));
        metrics.rpc(&method, tonic::Code::NotFound, Duration::from_millis(1));
        let text = metrics.render(0);
        for line in [
            r#"nexus_executions_total{pattern="p",version="1.0.0",status="SUCCEEDED"} 2"#,
            r#"nexus_executions_total{pattern="p",version="1.0.0",status="FAILED"} 1"#,
            r#"nexus_executions_total{pattern="p",version="2.0.0",status="SUCCEEDED"} 1"#,
            r#"nexus_execution_duration_seconds_count{pattern="p"} 4"#,
            r#"nexus_step_attempt_duration_seconds_count{action="svc/M"} 3"#,
            r#"nexus_step_attempt_duration_seconds_count{action="svc/N"} 1"#,
            r#"nexus_rpcs_total{method="/nexus.v1.NexusService/ExecutePattern",code="OK"} 2"#,
            r#"nexus_rpcs_total{method="/nexus.v1.NexusService/ExecutePattern",code="NOT_FOUND"} 1"#,
            r#"nexus_rpc_duration_seconds_count{method="/nexus.v1.NexusService/ExecutePattern"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}

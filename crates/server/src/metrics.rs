//! Prometheus metrics, served at `GET /metrics` on the API port (OpenMetrics text format, which
//! Prometheus scrapes natively).
//!
//! Executions, steps, retries and backend errors are counted from each finished execution's
//! record ([`nexus_engine::Observer`]): the steps' path carries no instrumentation. Executions in
//! flight are read from the engine at scrape time. The journal's group commit, lease take-overs
//! and the event router report their own figures here. Every label's values are bounded: pattern
//! names and versions are registered ones, actions come from the catalog, codes are gRPC's 17.

use std::{sync::Arc, time::Duration};

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

/// One server's metrics.
pub struct Metrics {
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
        self.rpcs.get_or_create(&[("method", shared(method)), ("code", Value::Static(code_name(code)))]).inc();
        self.rpc_seconds.get_or_create(&[("method", shared(method))]).observe(took.as_secs_f64());
    }
}

impl Observer for Metrics {
    fn finished(&self, record: &Arc<ExecutionRecord>) {
        self.executions
            .get_or_create(&[
                ("pattern", shared(&record.pattern_name)),
                ("version", shared(&record.pattern_version)),
                ("status", Value::Static(record.status.as_str())),
            ])
            .inc();
        self.execution_seconds
            .get_or_create(&[("pattern", shared(&record.pattern_name))])
            .observe(record.duration.as_secs_f64());
        for step in &record.steps {
            if step.attempts.is_empty() {
                continue;
            }
            let action = [("action", shared(&step.call))];
            {
                let histogram = self.step_seconds.get_or_create(&action);
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

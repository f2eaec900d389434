//! OpenTelemetry traces over OTLP (gRPC or HTTP/protobuf): a span per execution and per step
//! attempt, built from each finished execution's record.
//!
//! The tree of one execution: its span (kind SERVER, child of the caller's `traceparent` span, or
//! of the calling attempt for a sub-pattern), and under it a span per step attempt (kind CLIENT;
//! the id its backend call carried as `traceparent`, so the backend's own spans hang under it) and
//! per compensation call. The engine records ids and times as it runs (see
//! [`nexus_engine::trace`]); here the records become spans, off the execution's path: the
//! observer only queues the record (dropped, and counted, when the queue is full — tracing never
//! slows or fails an execution), and one task converts and exports in batches.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use nexus_engine::{ExecutionRecord, ExecutionStatus, Observer, StepStatus, code_name};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode},
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{OtlpProtocol, TelemetryConfig};

/// Finished executions waiting to be exported; beyond it, records are dropped (and counted).
const QUEUE: usize = 4096;
/// Spans per export request.
const BATCH_SPANS: usize = 2048;
/// How long spans wait at most before they are sent.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Deadline of one export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest attribute value exported (status messages can be long).
const MAX_VALUE: usize = 1024;

/// The observer half: queues finished executions for export.
pub struct Tracer {
    queue: mpsc::Sender<Arc<ExecutionRecord>>,
    dropped: Arc<AtomicU64>,
}

impl Observer for Tracer {
    fn finished(&self, record: &Arc<ExecutionRecord>) {
        if !record.trace.as_ref().is_some_and(|t| t.sampled) {
            return;
        }
        if self.queue.try_send(record.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The exporting half: run it with [`Exporter::run`].
pub struct Exporter {
    rx: mpsc::Receiver<Arc<ExecutionRecord>>,
    target: Target,
    resource: Resource,
    dropped: Arc<AtomicU64>,
}

enum Target {
    Grpc(TraceServiceClient<tonic::transport::Channel>),
    Http { url: http::Uri },
}

/// The tracer and its exporter, when `[telemetry] otlp_endpoint` is set.
pub fn from_config(config: &TelemetryConfig) -> Result<Option<(Tracer, Exporter)>, String> {
    let Some(endpoint) = config.otlp_endpoint.as_deref() else { return Ok(None) };
    let target = match config.otlp_protocol {
        OtlpProtocol::Grpc => {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                .map_err(|e| format!("telemetry.otlp_endpoint `{endpoint}`: {e}"))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(EXPORT_TIMEOUT)
                .connect_lazy();
            Target::Grpc(TraceServiceClient::new(channel))
        }
        OtlpProtocol::Http => {
            let url: http::Uri = format!("{}/v1/traces", endpoint.trim_end_matches('/'))
                .parse()
                .map_err(|e| format!("telemetry.otlp_endpoint `{endpoint}`: {e}"))?;
            if url.scheme_str() != Some("http") {
                return Err(format!(
                    "telemetry.otlp_endpoint `{endpoint}`: OTLP/HTTP export needs an http:// URL (use a local collector)"
                ));
            }
            Target::Http { url }
        }
    };
    let (queue, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let resource = Resource {
        attributes: vec![
            attribute("service.name", &config.service_name),
            attribute("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    };
    Ok(Some((Tracer { queue, dropped: dropped.clone() }, Exporter { rx, target, resource, dropped })))
}

impl Exporter {
    /// Exports until `shutdown`, then sends what is queued and ends.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut spans: Vec<Span> = Vec::new();
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                record = self.rx.recv() => match record {
                    Some(r) => {
                        spans.extend(spans_of(&r));
                        if spans.len() >= BATCH_SPANS {
                            self.export(std::mem::take(&mut spans)).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if !spans.is_empty() {
                        self.export(std::mem::take(&mut spans)).await;
                    }
                }
            }
        }
        while let Ok(r) = self.rx.try_recv() {
            spans.extend(spans_of(&r));
        }
        if !spans.is_empty() {
            self.export(spans).await;
        }
    }

    async fn export(&mut self, spans: Vec<Span>) {
        let count = spans.len();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "nexus".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let result = match &mut self.target {
            Target::Grpc(client) => client
                .export(request)
                .await
                .map(|_| ())
                .map_err(|s| format!("{}: {}", code_name(s.code()), s.message())),
            Target::Http { url } => post(url, request.encode_to_vec()).await,
        };
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        match result {
            Ok(()) if dropped == 0 => tracing::debug!(spans = count, "exported spans"),
            Ok(()) => tracing::warn!(
                "traces: {dropped} finished execution(s) were not exported: the export queue ({QUEUE}) was full"
            ),
            Err(e) => {
                tracing::warn!(spans = count, "traces: exporting to the OTLP endpoint failed (spans dropped): {e}")
            }
        }
    }
}

/// OTLP/HTTP: one protobuf POST.
async fn post(url: &http::Uri, body: Vec<u8>) -> Result<(), String> {
    use http_body_util::{BodyExt as _, Full};
    let host = url.host().ok_or("the endpoint has no host")?;
    let port = url.port_u16().unwrap_or(80);
    let send = async {
        let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("connecting: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let connection = tokio::spawn(connection);
        let authority = url.authority().map_or(host.to_string(), ToString::to_string);
        let request = http::Request::post(url.path())
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| format!("sending: {e}"))?;
        let status = response.status();
        // The collector's answer is small; read it to free the connection, then close.
        let _ = response.into_body().collect().await;
        connection.abort();
        if status.is_success() { Ok(()) } else { Err(format!("the collector answered HTTP {status}")) }
    };
    tokio::time::timeout(EXPORT_TIMEOUT, send).await.unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

fn attribute(key: &str, value: &str) -> KeyValue {
    let value: String = if value.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &value[..end])
    } else {
        value.to_string()
    };
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    }
}

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
        ..Default::default()
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn error_status(message: &str) -> Option<Status> {
    Some(Status { code: StatusCode::Error as i32, message: message.chars().take(MAX_VALUE).collect() })
}

/// The spans of one finished execution: its own, then one per step attempt and compensation.
pub fn spans_of(record: &ExecutionRecord) -> Vec<Span> {
    let Some(trace) = record.trace.as_deref() else { return Vec::new() };
    let trace_id = trace.trace_id.to_be_bytes().to_vec();
    let flags = u32::from(trace.sampled);
    let trace_state = trace.tracestate.as_deref().unwrap_or_default().to_string();
    let start = nanos(record.started_at);
    let mut attributes = vec![
        attribute("nexus.pattern", &record.pattern_name),
        attribute("nexus.pattern.version", &record.pattern_version),
        attribute("nexus.execution.id", &record.id),
        attribute("nexus.execution.status", record.status.as_str()),
    ];
    if let Some(e) = &record.error {
        attributes.push(attribute("rpc.grpc.status", code_name(e.code)));
    }
    let succeeded = matches!(record.status, ExecutionStatus::Succeeded | ExecutionStatus::Running);
    let mut spans = vec![Span {
        trace_id: trace_id.clone(),
        span_id: trace.span_id.to_be_bytes().to_vec(),
        trace_state: trace_state.clone(),
        parent_span_id: trace.parent_span_id.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        flags,
        name: format!("execute {}", record.pattern_name),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(u64::try_from(record.duration.as_nanos()).unwrap_or(u64::MAX)),
        attributes,
        status: if succeeded { None } else { error_status(record.error.as_ref().map_or("", |e| &e.message)) },
        ..Default::default()
    }];
    let parent = trace.span_id.to_be_bytes().to_vec();
    for step in &record.steps {
        let retries = step.attempts.len().saturating_sub(1);
        for a in &step.attempts {
            let begin = nanos(a.started_at);
            let (service, method) = step.call.split_once('/').unwrap_or((&step.call, ""));
            let mut attributes = vec![
                attribute("nexus.step", &step.step_id),
                attribute("nexus.action", &step.call),
                int_attribute("nexus.step.attempt", i64::from(a.number)),
                int_attribute("nexus.step.retries", i64::try_from(retries).unwrap_or(i64::MAX)),
                attribute("rpc.system", "grpc"),
                attribute("rpc.service", service),
                attribute("rpc.method", method),
                int_attribute("rpc.grpc.status_code", a.code as i64),
            ];
            if let Some(item) = a.item {
                attributes.push(int_attribute("nexus.step.item", i64::from(item)));
            }
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: a.span_id.to_be_bytes().to_vec(),
                trace_state: trace_state.clone(),
                parent_span_id: parent.clone(),
                flags,
                name: step.call.to_string(),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: begin,
                end_time_unix_nano: begin.saturating_add(u64::try_from(a.duration.as_nanos()).unwrap_or(u64::MAX)),
                attributes,
                status: if a.code == tonic::Code::Ok {
                    None
                } else {
                    error_status(&format!("{}: {}", code_name(a.code), a.message))
                },
                ..Default::default()
            });
        }
        if let Some(c) = &step.compensation {
            let begin = nanos(c.started_at);
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: c.span_id.to_be_bytes().to_vec(),
                trace_state: trace_state.clone(),
                parent_span_id: parent.clone(),
                flags,
                name: format!("compensate {}", c.call),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: begin,
                end_time_unix_nano: begin.saturating_add(u64::try_from(c.duration.as_nanos()).unwrap_or(u64::MAX)),
                attributes: vec![attribute("nexus.step", &step.step_id), attribute("nexus.action", &c.call)],
                status: if c.status == StepStatus::Succeeded {
                    None
                } else {
                    error_status(c.error.as_ref().map_or("", |e| &e.message))
                },
                ..Default::default()
            });
        }
    }
    spans
}

//! One access-log line and one metrics observation per RPC (native gRPC, gRPC-Web and Connect
//! alike: the layer sits on the gRPC routes they all end in): method, gRPC status code, duration
//! and the caller's principal.
//!
//! The status of a gRPC response is in its trailers (or, for an immediate error, its headers),
//! so the response body is watched to its end; a caller that hangs up first is logged as
//! CANCELLED. Credentials are never logged: the principal is the authenticated subject, not the
//! key or token it was proven with.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::body::Body;
use http_body::Frame;

use crate::{auth::Principal, metrics::Metrics};

/// The `tracing` target of access-log lines (filter with `NEXUS_LOG=nexus::access=info`).
pub const TARGET: &str = "nexus::access";

#[derive(Clone)]
pub struct AccessLog {
    pub metrics: Arc<Metrics>,
    /// Whether to write a log line per RPC (the metrics are always kept).
    pub log: bool,
    /// The method names this server serves, each one `Arc` made once: the label of the RPC
    /// metrics (`Metrics::rpc` finds a method's series by its name's address) and of the log.
    methods: Arc<Methods>,
}

/// The gRPC methods served here, by path; any other path is [`UNKNOWN_METHOD`].
struct Methods {
    known: std::collections::HashMap<Box<str>, Arc<str>>,
    unknown: Arc<str>,
}

/// The method label of a path no service here has (answered UNIMPLEMENTED): one label for all
/// of them, so a caller cannot grow the metrics by inventing paths.
pub const UNKNOWN_METHOD: &str = "unknown";

impl Methods {
    fn new() -> Self {
        let mut known = std::collections::HashMap::new();
        let mut add = |path: String| {
            known.insert(path.clone().into_boxed_str(), Arc::from(path));
        };
        for service in nexus_core::descriptor_pool().services() {
            for method in service.methods() {
                add(format!("/{}/{}", service.full_name(), method.name()));
            }
        }
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            add(path.to_owned());
        }
        Self { known, unknown: Arc::from(UNKNOWN_METHOD) }
    }

    fn of(&self, path: &str) -> Arc<str> {
        self.known.get(path).unwrap_or(&self.unknown).clone()
    }
}

/// What is known of an RPC until its status arrives.
struct Pending {
    method: Arc<str>,
    started: Instant,
    principal: Option<Principal>,
    /// The caller's trace (from its `traceparent`), when it sent one.
    trace_id: Option<u128>,
    /// The execution the call started or failed (`nexus-execution-id`), once known.
    execution: Option<String>,
    state: AccessLog,
}

impl Pending {
    /// Ends the RPC: `meta` is where its status is (headers or trailers).
    fn finish(mut self, code: tonic::Code, meta: Option<&http::HeaderMap>) {
        let took = self.started.elapsed();
        self.state.metrics.rpc(&self.method, code, took);
        if !self.state.log {
            return;
        }
        let message =
            meta.and_then(|m| m.get(crate::headers::GRPC_MESSAGE)).and_then(|v| v.to_str().ok()).map(percent_decoded);
        if let Some(id) = meta.and_then(|m| m.get(crate::headers::EXECUTION_ID)).and_then(|v| v.to_str().ok()) {
            self.execution = Some(id.to_string());
        }
        log(&self, code, took, message.as_deref());
    }
}

fn log(p: &Pending, code: tonic::Code, took: Duration, message: Option<&str>) {
    let code = nexus_engine::code_name(code);
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let (tenant, subject) = p.principal.as_ref().map_or(("-", "-"), |p| (&*p.tenant, &*p.subject));
    // The status message can echo input: cut it short (it is the caller's to read in full).
    let message = message.map(|m| shortened(m, 200)).unwrap_or_default();
    let execution = p.execution.as_deref().unwrap_or("-");
    let trace_id = p.trace_id.map(|t| format!("{t:032x}")).unwrap_or_else(|| "-".into());
    tracing::info!(
        target: TARGET,
        method = &*p.method,
        code,
        duration_us = micros,
        tenant,
        subject,
        execution,
        trace_id,
        status_message = %message,
        "rpc"
    );
}

/// An RPC as it arrives: what the log line and the metrics need of its request.
pub struct Started {
    method: Arc<str>,
    started: Instant,
    trace_id: Option<u128>,
}

impl AccessLog {
    pub fn new(metrics: Arc<Metrics>, log: bool) -> Self {
        Self { metrics, log, methods: Arc::new(Methods::new()) }
    }

    /// Notes an RPC as it arrives, before anything else runs.
    pub fn start(&self, req: &axum::extract::Request) -> Started {
        let trace_id = self
            .log
            .then(|| req.headers().get(crate::headers::TRACEPARENT).and_then(|v| v.to_str().ok()))
            .flatten()
            .and_then(nexus_engine::trace::parse_traceparent)
            .map(|t| t.trace_id);
        Started { method: self.methods.of(req.uri().path()), started: Instant::now(), trace_id }
    }

    /// Ends the RPC's log entry with its response: at once for a trailers-only response (an
    /// immediate error, its status in the headers), else when the body's trailers pass.
    pub fn finish(
        &self,
        start: Started,
        principal: Option<Principal>,
        response: axum::response::Response,
    ) -> axum::response::Response {
        let (principal, execution) = if self.log {
            let execution =
                response.headers().get(crate::headers::EXECUTION_ID).and_then(|v| v.to_str().ok()).map(str::to_string);
            (principal, execution)
        } else {
            (None, None)
        };
        let Started { method, started, trace_id } = start;
        let pending = Pending { method, started, principal, trace_id, execution, state: self.clone() };
        if let Some(code) = status_of(response.headers()) {
            pending.finish(code, Some(response.headers()));
            return response;
        }
        let (parts, body) = response.into_parts();
        axum::response::Response::from_parts(parts, Body::new(Watched { inner: body, pending: Some(pending) }))
    }
}

/// `s` cut to `max` characters (with an ellipsis), control characters escaped.
fn shortened(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_debug).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let v = headers.get(crate::headers::GRPC_STATUS)?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(v))
}

fn percent_decoded(m: &str) -> String {
    percent_encoding::percent_decode_str(m).decode_utf8_lossy().into_owned()
}

/// The response body, watched for the status in its trailers.
struct Watched {
    inner: Body,
    pending: Option<Pending>,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(pending) = self.pending.take()
                {
                    let code = status_of(trailers).unwrap_or(tonic::Code::Unknown);
                    pending.finish(code, Some(trailers));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(pending) = self.pending.take() {
                    pending.finish(tonic::Code::Internal, None);
                }
            }
            // A body that ends without trailers is not gRPC (or the status was in the headers).
            Poll::Ready(None) => {
                if let Some(pending) = self.pending.take() {
                    pending.finish(tonic::Code::Ok, None);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // Not before the status is seen: one more poll reports the end (and logs it).
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // The caller went away before the status: the call was cancelled.
        if let Some(pending) = self.pending.take() {
            pending.finish(tonic::Code::Cancelled, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_label_is_a_served_method_or_unknown() {
        let methods = Methods::new();
        for path in [
            "/nexus.v1.NexusService/ExecutePattern",
            "/nexus.v1.NexusService/RegisterPattern",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            let label = methods.of(path);
            assert_eq!(&*label, path);
            // One name per method, made once: the metrics find its series by this address.
            assert!(Arc::ptr_eq(&label, &methods.of(path)), "{path}");
        }
        // Paths a caller invents all share one label.
        for path in ["/nexus.v1.NexusService/Nothing", "/x.Y/Z", "/", ""] {
            assert_eq!(&*methods.of(path), UNKNOWN_METHOD, "{path}");
        }
    }
}

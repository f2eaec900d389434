//! The engine's view of the backends: call an action with a request and get a response.

use std::time::Duration;

use futures::stream::BoxStream;
use nexus_core::Action;

use crate::record::Payload;

/// One call of an action.
#[derive(Debug, Clone)]
pub struct Call {
    pub action: Action,
    /// Encoded once, sent as is on every attempt.
    pub request: Payload,
    /// Time left for this attempt; sent to the backend as the gRPC deadline.
    pub timeout: Option<Duration>,
    /// `<execution>/<step>[/<item>]`: the same on every attempt so backends can de-duplicate.
    pub idempotency_key: String,
    /// W3C trace context (`traceparent`) of this call: its span is the step attempt's.
    pub traceparent: Option<String>,
    /// The caller's `tracestate`, passed on unchanged.
    pub tracestate: Option<std::sync::Arc<str>>,
    /// Picks which of a backend's connections carries the call, where it has several: the same
    /// for every call of one execution (its span id), so the calls it starts together are queued
    /// on one connection and leave in one write; executions, and a `for_each` step's items,
    /// spread over the connections.
    pub lane: u64,
}

/// A failed call, in gRPC terms.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CallError {
    pub code: tonic::Code,
    pub message: String,
}

impl CallError {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// A server stream's messages, each as the backend sent it (decoded by the executor).
pub type MessageStream = BoxStream<'static, Result<Payload, CallError>>;

/// Calls actions. Implemented over gRPC by the server crate, and by scripted fakes in tests.
#[async_trait::async_trait]
pub trait Invoker: Send + Sync + 'static {
    /// The response as the backend sent it: its bytes, decoded (and checked) by the executor.
    async fn unary(&self, call: Call) -> Result<Payload, CallError>;

    async fn server_streaming(&self, call: Call) -> Result<MessageStream, CallError>;
}

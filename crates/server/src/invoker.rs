//! The gRPC invoker: calls any catalog action with a `DynamicMessage`, over one pooled HTTP/2
//! channel per backend.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Buf;
use futures::StreamExt;
use http::uri::PathAndQuery;
use nexus_core::Catalog;
use nexus_engine::{Call, CallError, Invoker, MessageStream};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

/// Invokes actions over gRPC. Channels connect lazily and reconnect on their own.
pub struct GrpcInvoker {
    /// Several HTTP/2 connections per backend, used round-robin: one connection is driven by one
    /// task, and under load that task becomes the bottleneck long before the backend does.
    channels: HashMap<Arc<str>, Vec<Channel>>,
    next: std::sync::atomic::AtomicUsize,
}

/// Connections per backend (env `NEXUS_BACKEND_CONNECTIONS`, default: the number of cores).
fn connections_per_backend() -> usize {
    std::env::var("NEXUS_BACKEND_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 64)
}

impl GrpcInvoker {
    pub fn new(catalog: &Catalog) -> Result<Self, String> {
        let mut channels = HashMap::new();
        for s in catalog.services() {
            if channels.contains_key(&s.backend) {
                continue;
            }
            let endpoint = Endpoint::from_shared(s.endpoint.clone())
                .map_err(|e| format!("backend `{}`: invalid endpoint {}: {e}", s.backend, s.endpoint))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
            let pool = (0..connections_per_backend()).map(|_| endpoint.connect_lazy()).collect();
            channels.insert(s.backend.clone(), pool);
        }
        Ok(Self { channels, next: std::sync::atomic::AtomicUsize::new(0) })
    }

    fn client(&self, call: &Call) -> Result<(tonic::client::Grpc<Channel>, PathAndQuery), CallError> {
        let pool = self.channels.get(&call.action.backend).ok_or_else(|| {
            CallError::new(tonic::Code::Unavailable, format!("no channel for backend `{}`", call.action.backend))
        })?;
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % pool.len().max(1);
        let channel = pool.get(i).ok_or_else(|| {
            CallError::new(tonic::Code::Unavailable, format!("no connection to backend `{}`", call.action.backend))
        })?;
        let path = PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(call.action.path.as_bytes()))
            .map_err(|e| CallError::new(tonic::Code::Internal, format!("bad method path: {e}")))?;
        Ok((tonic::client::Grpc::new(channel.clone()), path))
    }
}

fn request(call: Call) -> tonic::Request<DynamicMessage> {
    let mut req = tonic::Request::new(call.request);
    if let Some(t) = call.timeout {
        req.set_timeout(t);
    }
    if let Ok(v) = MetadataValue::try_from(call.idempotency_key.as_str()) {
        req.metadata_mut().insert("nexus-idempotency-key", v);
    }
    if let Some(tp) = call.traceparent.as_deref().and_then(|t| MetadataValue::try_from(t).ok()) {
        req.metadata_mut().insert("traceparent", tp);
    }
    req
}

fn status_to_error(s: Status, timeout: Option<Duration>) -> CallError {
    // tonic's channel enforces the deadline it sends and reports its expiry as CANCELLED
    // "Timeout expired"; to the pattern it is a deadline, and `retry_on: [DEADLINE_EXCEEDED]`
    // must see it as one.
    if s.code() == tonic::Code::Cancelled && s.message() == "Timeout expired" {
        let within = timeout.map(|t| format!(" within {t:?}")).unwrap_or_default();
        return CallError::new(tonic::Code::DeadlineExceeded, format!("no response{within}"));
    }
    CallError::new(s.code(), s.message().to_string())
}

#[async_trait::async_trait]
impl Invoker for GrpcInvoker {
    async fn unary(&self, call: Call) -> Result<DynamicMessage, CallError> {
        let (mut grpc, path) = self.client(&call)?;
        let codec = DynamicCodec(call.action.method.output());
        let timeout = call.timeout;
        grpc.ready().await.map_err(|e| {
            CallError::new(tonic::Code::Unavailable, format!("backend `{}` unavailable: {e}", call.action.backend))
        })?;
        grpc.unary(request(call), path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| status_to_error(s, timeout))
    }

    async fn server_streaming(&self, call: Call) -> Result<MessageStream, CallError> {
        let (mut grpc, path) = self.client(&call)?;
        let codec = DynamicCodec(call.action.method.output());
        let timeout = call.timeout;
        grpc.ready().await.map_err(|e| {
            CallError::new(tonic::Code::Unavailable, format!("backend `{}` unavailable: {e}", call.action.backend))
        })?;
        let stream = grpc
            .server_streaming(request(call), path, codec)
            .await
            .map_err(|s| status_to_error(s, timeout))?
            .into_inner();
        Ok(stream.map(move |r| r.map_err(|s| status_to_error(s, timeout))).boxed())
    }
}

/// A tonic codec for messages known only at run time.
#[derive(Clone)]
pub struct DynamicCodec(pub MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.0.clone())
    }
}

pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst).map_err(|e| Status::internal(format!("encoding request: {e}")))
    }
}

pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let len = src.remaining();
        let msg = DynamicMessage::decode(self.0.clone(), src.copy_to_bytes(len))
            .map_err(|e| Status::internal(format!("decoding {} response: {e}", self.0.full_name())))?;
        Ok(Some(msg))
    }
}

//! The gRPC invoker: calls any catalog action with a `DynamicMessage`, over one pooled HTTP/2
//! channel per backend (plaintext for `http://`, TLS for `https://`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::{Buf, BufMut};
use futures::StreamExt;
use http::uri::PathAndQuery;
use nexus_core::Catalog;
use nexus_engine::{Call, CallError, Invoker, MessageStream, Payload};

use crate::{config::ServiceConfig, tls};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
};

/// Invokes actions over gRPC, on HTTP/2 connections of its own to each backend.
///
/// Not tonic's `Channel`: a `Channel` hands every request to a worker task through a queue
/// (tower's `Buffer`) and the response back, a task hop per call on the hot path. Here a call
/// goes straight to hyper's HTTP/2 `SendRequest` (cheap to clone, safe to share); a connection that
/// closes is re-established by the next call. Deadlines are enforced by the engine.
pub struct GrpcInvoker {
    /// Several HTTP/2 connections per backend, used round-robin: one connection is driven by one
    /// task, and under load that task becomes the bottleneck long before the backend does.
    backends: HashMap<Arc<str>, Vec<Arc<Connection>>>,
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

type Sender = hyper::client::conn::http2::SendRequest<tonic::body::Body>;

/// One HTTP/2 connection to a backend, opened on first use and again whenever it has closed.
pub struct Connection {
    backend: Arc<str>,
    /// `host:port` to dial.
    address: String,
    /// `http(s)://host:port`: the scheme and authority of every request.
    origin: http::Uri,
    /// TLS settings for an `https://` backend.
    tls: Option<tls::ClientTls>,
    current: std::sync::Mutex<Option<Sender>>,
    /// One dial at a time.
    dialing: tokio::sync::Mutex<()>,
}

impl Connection {
    /// `server_name` (`tls_server_name`) replaces the endpoint's host in `:authority`.
    fn new(
        backend: &Arc<str>,
        endpoint: &str,
        tls: Option<tls::ClientTls>,
        server_name: Option<&str>,
    ) -> Result<Self, String> {
        let mut origin: http::Uri =
            endpoint.parse().map_err(|e| format!("backend `{backend}`: invalid endpoint {endpoint}: {e}"))?;
        let port = match (origin.scheme_str(), &tls) {
            (Some("http"), _) => 80,
            (Some("https"), Some(_)) => 443,
            _ => {
                return Err(format!(
                    "backend `{backend}`: endpoint {endpoint} must be http://host:port or https://host:port"
                ));
            }
        };
        let authority =
            origin.authority().ok_or_else(|| format!("backend `{backend}`: endpoint {endpoint} has no host:port"))?;
        let port = authority.port_u16().unwrap_or(port);
        let address = format!("{}:{port}", authority.host());
        if let Some(name) = server_name {
            origin = format!("https://{name}:{port}")
                .parse()
                .map_err(|e| format!("backend `{backend}`: tls_server_name `{name}`: {e}"))?;
        }
        Ok(Self {
            backend: backend.clone(),
            address,
            origin,
            tls,
            current: std::sync::Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
        })
    }

    fn open(&self) -> Option<Sender> {
        let current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        current.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The connection's sender, dialing (within 5 s) if there is none or it has closed.
    async fn sender(&self) -> Result<Sender, CallError> {
        if let Some(s) = self.open() {
            return Ok(s);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(s) = self.open() {
            return Ok(s);
        }
        let unavailable = |why: String| {
            CallError::new(tonic::Code::Unavailable, format!("backend `{}` unavailable: {why}", self.backend))
        };
        let dial = async {
            // Each kind of stream gets its own HTTP/2 connection type: the plaintext one stays a
            // bare `TcpStream`, with nothing in between.
            match tls::dial(&self.address, self.tls.as_ref()).await? {
                tls::ClientStream::Plain(tcp) => self.handshake(tcp).await,
                tls::ClientStream::Tls(stream) => self.handshake(*stream).await,
            }
        };
        let sender = tokio::time::timeout(Duration::from_secs(5), dial)
            .await
            .map_err(|_| unavailable(format!("no connection to {} within 5s", self.address)))?
            .map_err(|e| unavailable(format!("connecting to {}: {e}", self.address)))?;
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    /// HTTP/2 over an open stream; the connection is driven by a task of its own.
    async fn handshake<T>(&self, io: T) -> Result<Sender, String>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        let backend = self.backend.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%backend, "connection closed: {e}");
            }
        });
        Ok(sender)
    }
}

/// A connection's sender as the tower service tonic's client drives.
#[derive(Clone)]
struct H2(Sender);

impl tower::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

impl GrpcInvoker {
    /// Connections to every backend of the catalog; `services` gives their TLS settings.
    pub fn new(catalog: &Catalog, services: &[ServiceConfig]) -> Result<Self, String> {
        let mut backends = HashMap::new();
        for s in catalog.services() {
            if backends.contains_key(&s.backend) {
                continue;
            }
            let config = services.iter().find(|c| *c.name == *s.backend);
            let tls = match config {
                Some(c) => tls::backend_tls(c)?,
                // A backend known only from the catalog: default TLS settings (system roots).
                None => tls::backend_tls(
                    &ServiceConfig::from_flag(&format!("{}={}", s.backend, s.endpoint)).map_err(|e| e.to_string())?,
                )?,
            };
            let server_name = config.and_then(|c| c.tls_server_name.as_deref());
            let pool = (0..connections_per_backend())
                .map(|_| Connection::new(&s.backend, &s.endpoint, tls.clone(), server_name).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?;
            backends.insert(s.backend.clone(), pool);
        }
        Ok(Self { backends, next: std::sync::atomic::AtomicUsize::new(0) })
    }

    /// A ready client on one of the backend's connections, and the method's path.
    async fn client(&self, call: &Call) -> Result<(tonic::client::Grpc<H2>, PathAndQuery), CallError> {
        let pool = self.backends.get(&call.action.backend).ok_or_else(|| {
            CallError::new(tonic::Code::Unavailable, format!("no connection for backend `{}`", call.action.backend))
        })?;
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % pool.len().max(1);
        let connection = pool.get(i).ok_or_else(|| {
            CallError::new(tonic::Code::Unavailable, format!("no connection to backend `{}`", call.action.backend))
        })?;
        let sender = connection.sender().await?;
        let path = PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(call.action.path.as_bytes()))
            .map_err(|e| CallError::new(tonic::Code::Internal, format!("bad method path: {e}")))?;
        let mut grpc = tonic::client::Grpc::with_origin(H2(sender), connection.origin.clone());
        grpc.ready().await.map_err(|e| {
            CallError::new(tonic::Code::Unavailable, format!("backend `{}` unavailable: {e}", call.action.backend))
        })?;
        Ok((grpc, path))
    }
}

fn request(call: Call) -> tonic::Request<Payload> {
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
    if let Some(ts) = call.tracestate.as_deref().and_then(|t| MetadataValue::try_from(t).ok()) {
        req.metadata_mut().insert("tracestate", ts);
    }
    req
}

/// Whether a call failed because its connection went away (closed, reset, or the request was
/// never sent on it): the backend is unavailable, which retry policies treat as transient — not
/// the CANCELLED that tonic reports for a request hyper dropped.
fn connection_lost(s: &Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = cause {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_canceled() || h.is_closed() || h.is_incomplete_message())
        {
            return true;
        }
        if e.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn status_to_error(s: Status, timeout: Option<Duration>) -> CallError {
    if connection_lost(&s) {
        // The causes say why (a reset, a TLS alert such as a missing client certificate).
        let mut why = s.message().to_string();
        let mut cause = std::error::Error::source(&s);
        while let Some(c) = cause {
            why.push_str(": ");
            why.push_str(&c.to_string());
            cause = c.source();
        }
        return CallError::new(tonic::Code::Unavailable, format!("the connection to the backend was lost: {why}"));
    }
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
    async fn unary(&self, call: Call) -> Result<Payload, CallError> {
        let (mut grpc, path) = self.client(&call).await?;
        let codec = PayloadCodec(call.action.method.output());
        let timeout = call.timeout;
        grpc.unary(request(call), path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| status_to_error(s, timeout))
    }

    async fn server_streaming(&self, call: Call) -> Result<MessageStream, CallError> {
        let (mut grpc, path) = self.client(&call).await?;
        let codec = PayloadCodec(call.action.method.output());
        let timeout = call.timeout;
        let stream = grpc
            .server_streaming(request(call), path, codec)
            .await
            .map_err(|s| status_to_error(s, timeout))?
            .into_inner();
        Ok(stream.map(move |r| r.map_err(|s| status_to_error(s, timeout))).boxed())
    }
}

/// The invoker's codec: requests go out as the engine encoded them, responses come back as their
/// bytes (the engine decodes them into the step's output and keeps the bytes in the record).
#[derive(Clone)]
struct PayloadCodec(MessageDescriptor);

impl Codec for PayloadCodec {
    type Encode = Payload;
    type Decode = Payload;
    type Encoder = PayloadEncoder;
    type Decoder = PayloadDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PayloadEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        PayloadDecoder(self.0.clone())
    }
}

struct PayloadEncoder;

impl Encoder for PayloadEncoder {
    type Item = Payload;
    type Error = Status;

    fn encode(&mut self, item: Payload, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.bytes());
        Ok(())
    }
}

struct PayloadDecoder(MessageDescriptor);

impl Decoder for PayloadDecoder {
    type Item = Payload;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Payload>, Status> {
        // Copied out, not split off: a slice of the connection's read buffer would keep the whole
        // buffer alive for as long as the history keeps the record.
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(Payload::new(self.0.clone(), bytes.into())))
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

//! The gRPC invoker: calls any catalog action with the request the engine encoded, over HTTP/2
//! connections of its own to each backend (plaintext for `http://`, TLS for `https://`); the
//! calls themselves are in [`call`].

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Buf;
use http::uri::PathAndQuery;
use nexus_core::Catalog;
use nexus_engine::{Call, CallError, Invoker, MessageStream, Payload};

use crate::{config::ServiceConfig, tls};

mod call;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// Invokes actions over gRPC, on HTTP/2 connections of its own to each backend.
///
/// Not tonic's `Channel`: a `Channel` hands every request to a worker task through a queue
/// (tower's `Buffer`) and the response back, a task hop per call on the hot path. Here a call
/// goes straight to hyper's HTTP/2 `SendRequest` (cheap to clone, safe to share); a connection that
/// closes is re-established by the next call. Deadlines are enforced by the engine.
pub struct GrpcInvoker {
    /// Several HTTP/2 connections per backend, one per execution ([`Call::lane`]): one
    /// connection is driven by one task, and under load that task becomes the bottleneck long
    /// before the backend does.
    backends: HashMap<Arc<str>, Vec<Arc<Connection>>>,
}

/// Connections per backend (env `NEXUS_BACKEND_CONNECTIONS`, default: the number of cores).
fn connections_per_backend() -> usize {
    std::env::var("NEXUS_BACKEND_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 64)
}

type Sender = h2::client::SendRequest<bytes::Bytes>;

/// The HTTP/2 settings of a backend connection: hyper's client defaults, which this invoker used
/// before it spoke `h2` directly (large windows, so a response of a few MiB needs no
/// WINDOW_UPDATE round trips; 16 KiB of response headers at most).
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 5 << 20;
const MAX_HEADER_LIST_SIZE: u32 = 16 << 10;
const MAX_SEND_BUFFER: usize = 1 << 20;
/// A connection is pinged after this long, idle or not, and closed when the pong does not come
/// back within [`KEEP_ALIVE_TIMEOUT`] (a backend that vanished without a FIN is noticed).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// An open connection: its sender, and whether its task has ended.
struct Open {
    sender: Sender,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

/// One HTTP/2 connection to a backend, opened on first use and again whenever it has closed.
pub struct Connection {
    backend: Arc<str>,
    /// `host:port` to dial.
    address: String,
    /// `http(s)://host:port`: the scheme and authority of every request.
    origin: http::Uri,
    /// TLS settings for an `https://` backend.
    tls: Option<tls::ClientTls>,
    current: std::sync::Mutex<Option<Open>>,
    /// One dial at a time.
    dialing: tokio::sync::Mutex<()>,
}

impl Connection {
    /// The scheme and authority of every request on this connection.
    fn origin(&self) -> &http::Uri {
        &self.origin
    }

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
        current.as_ref().filter(|o| !o.closed.load(std::sync::atomic::Ordering::Acquire)).map(|o| o.sender.clone())
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
        let open = tokio::time::timeout(Duration::from_secs(5), dial)
            .await
            .map_err(|_| unavailable(format!("no connection to {} within 5s", self.address)))?
            .map_err(|e| unavailable(format!("connecting to {}: {e}", self.address)))?;
        let sender = open.sender.clone();
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(open);
        Ok(sender)
    }

    /// HTTP/2 over an open stream; the connection is driven by a task of its own, which also
    /// pings it (see [`KEEP_ALIVE_INTERVAL`]) and marks it closed when it ends.
    async fn handshake<T>(&self, io: T) -> Result<Open, String>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, bytes::Bytes>(io)
            .await
            .map_err(|e| e.to_string())?;
        let ping = connection.ping_pong();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (backend, ended) = (self.backend.clone(), closed.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = &mut connection => if let Err(e) = r {
                    tracing::debug!(%backend, "connection closed: {e}");
                },
                why = keep_alive(ping) => tracing::info!(%backend, "connection dropped: {why}"),
            }
            ended.store(true, std::sync::atomic::Ordering::Release);
        });
        Ok(Open { sender, closed })
    }
}

/// Pings the connection every [`KEEP_ALIVE_INTERVAL`]; returns why it should be dropped.
async fn keep_alive(ping: Option<h2::PingPong>) -> String {
    let Some(mut ping) = ping else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(KEEP_ALIVE_INTERVAL).await;
        match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
            Err(_) => return format!("no answer to a keep-alive ping within {KEEP_ALIVE_TIMEOUT:?}"),
        }
    }
}

/// A request that never reached the backend: its connection was closed or refused it.
#[derive(Debug)]
struct NotSent(h2::Error);

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request not sent: {}", self.0)
    }
}

impl std::error::Error for NotSent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
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
        Ok(Self { backends })
    }

    /// The backend's connection for the call's lane.
    fn connection(&self, call: &Call) -> Result<&Arc<Connection>, CallError> {
        let pool = self.backends.get(&call.action.backend).ok_or_else(|| {
            CallError::new(tonic::Code::Unavailable, format!("no connection for backend `{}`", call.action.backend))
        })?;
        let i = (call.lane % pool.len().max(1) as u64) as usize;
        pool.get(i).ok_or_else(|| {
            CallError::new(tonic::Code::Unavailable, format!("no connection to backend `{}`", call.action.backend))
        })
    }
}

fn method_path(call: &Call) -> Result<PathAndQuery, CallError> {
    PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(call.action.path.as_bytes()))
        .map_err(|e| CallError::new(tonic::Code::Internal, format!("bad method path `{}`: {e}", call.action.path)))
}

#[async_trait::async_trait]
impl Invoker for GrpcInvoker {
    async fn unary(&self, call: Call) -> Result<Payload, CallError> {
        let connection = self.connection(&call)?;
        let sender = connection.sender().await?;
        call::unary(sender, connection, &call).await
    }

    async fn server_streaming(&self, call: Call) -> Result<MessageStream, CallError> {
        let connection = self.connection(&call)?;
        let sender = connection.sender().await?;
        call::server_streaming(sender, connection, &call).await
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

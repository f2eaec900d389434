//! Demo backend gRPC services (users, assets, notifications, broadcasts) served on one port with
//! server reflection; they back the demo, the integration tests and the benchmark.
//!
//! [`spawn`] starts everything on `127.0.0.1:0` and returns a [`DemoHandle`] to observe calls and
//! inject latency or failures, plus a [`DemoServer`] guard that stops the server when dropped.

mod asset;
mod broadcast;
mod control;
mod notification;
mod user;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::Router;

pub use control::{DemoHandle, IDEMPOTENCY_KEY_HEADER, KEPT_IDEMPOTENCY_KEYS, TRACEPARENT_HEADER};

/// Generated messages, clients and servers, one module per proto package.
pub mod pb {
    /// `demo.user.v1`
    pub mod user {
        tonic::include_proto!("demo.user.v1");
    }
    /// `demo.asset.v1`
    pub mod asset {
        tonic::include_proto!("demo.asset.v1");
    }
    /// `demo.notification.v1`
    pub mod notification {
        tonic::include_proto!("demo.notification.v1");
    }
    /// `demo.broadcast.v1`
    pub mod broadcast {
        tonic::include_proto!("demo.broadcast.v1");
    }
}

/// Encoded `FileDescriptorSet` of the demo protos and their imports, for reflection and for
/// callers that build dynamic messages.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo_descriptor.bin"));

/// Fully-qualified names of the four demo services.
pub const SERVICE_NAMES: [&str; 4] = [
    "demo.user.v1.UserService",
    "demo.asset.v1.AssetService",
    "demo.notification.v1.NotificationService",
    "demo.broadcast.v1.BroadcastService",
];

/// Method names as [`DemoHandle`] expects them: the gRPC path without the leading slash.
pub mod method {
    pub const CREATE_USER: &str = "demo.user.v1.UserService/CreateUser";
    pub const GET_USER: &str = "demo.user.v1.UserService/GetUser";
    pub const DELETE_USER: &str = "demo.user.v1.UserService/DeleteUser";
    pub const UPLOAD_ASSET: &str = "demo.asset.v1.AssetService/UploadAsset";
    pub const GET_ASSET: &str = "demo.asset.v1.AssetService/GetAsset";
    pub const SEND_EMAIL: &str = "demo.notification.v1.NotificationService/SendEmail";
    pub const SEND_PUSH: &str = "demo.notification.v1.NotificationService/SendPush";
    pub const CREATE_BROADCAST: &str = "demo.broadcast.v1.BroadcastService/CreateBroadcast";
    pub const CHECK_ACCESS: &str = "demo.broadcast.v1.BroadcastService/CheckAccess";
    pub const SUBSCRIBE: &str = "demo.broadcast.v1.BroadcastService/Subscribe";
}

/// Start-up behaviour of the demo services; [`DemoHandle`] can change injection later.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    /// Delay added to every unary call before it is answered.
    pub latency: Duration,
    /// Probability (0..=1) that a unary call fails with UNAVAILABLE.
    pub failure_rate: f64,
    /// Pause between two chunks of a Subscribe stream.
    pub chunk_interval: Duration,
    /// Users (and assets) the stores have room for from the start. Each store is a map that
    /// doubles as it fills: the rehash of a large one holds the store's lock for hundreds of
    /// milliseconds, pausing every call meanwhile — in a benchmark, in whichever phase happens
    /// to cross the power of two. 0: grow as needed.
    pub capacity: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { latency: Duration::ZERO, failure_rate: 0.0, chunk_interval: Duration::from_millis(50), capacity: 0 }
    }
}

/// Errors from running the demo server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("demo gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("building the reflection service failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("demo server task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Serves the four demo services and reflection on `listener` (plain HTTP/2) until `shutdown`
/// resolves, then drains in-flight calls.
pub async fn serve(
    listener: TcpListener,
    options: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let router = routes(&DemoHandle::new(&options))?;
    serve_router(router, listener, shutdown).await?;
    Ok(())
}

/// Starts the demo server on an ephemeral port of 127.0.0.1 in a background task. The listener is
/// bound before this returns, so clients may connect at once.
pub async fn spawn(options: DemoOptions) -> std::io::Result<(SocketAddr, DemoHandle, DemoServer)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let address = listener.local_addr()?;
    let handle = DemoHandle::new(&options);
    let router = routes(&handle).map_err(std::io::Error::other)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_router(router, listener, async {
        // A dropped sender means the guard is gone, which also asks for shutdown.
        let _ = stopped.await;
    }));
    Ok((address, handle, DemoServer { stop: Some(stop), task: Some(task) }))
}

/// Starts the demo server on connections the caller accepts (e.g. TLS streams a test set up), in
/// a background task, until the guard is dropped.
pub fn spawn_incoming<I, IO, IE>(incoming: I, options: DemoOptions) -> std::io::Result<(DemoHandle, DemoServer)>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let handle = DemoHandle::new(&options);
    let router = routes(&handle).map_err(std::io::Error::other)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    Ok((handle, DemoServer { stop: Some(stop), task: Some(task) }))
}

/// Guard for a server started by [`spawn`]. Dropping it starts a graceful shutdown in the
/// background; [`DemoServer::shutdown`] also waits until the server has stopped.
#[derive(Debug)]
pub struct DemoServer {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl DemoServer {
    /// Stops accepting connections, waits for in-flight calls (including open Subscribe streams)
    /// to finish, and reports how the server ended.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn routes(handle: &DemoHandle) -> Result<Router> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // v1alpha is still the only version many tools (older grpcurl, Postman) ask for.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(Server::builder()
        .add_service(pb::user::user_service_server::UserServiceServer::new(user::Users::new(handle.clone())))
        .add_service(pb::asset::asset_service_server::AssetServiceServer::new(asset::Assets::new(handle.clone())))
        .add_service(pb::notification::notification_service_server::NotificationServiceServer::new(
            notification::Notifications::new(handle.clone()),
        ))
        .add_service(pb::broadcast::broadcast_service_server::BroadcastServiceServer::new(broadcast::Broadcasts::new(
            handle.clone(),
        )))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

async fn serve_router(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    router
        // Small request/response messages: without TCP_NODELAY, Nagle's algorithm and delayed
        // ACKs add ~40 ms to a response written in two segments.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

//! Nexus server: configuration, wiring, and the one port that serves native gRPC, gRPC-Web and
//! Connect unary JSON (plus gRPC server reflection and `grpc.health.v1`).
//!
//! Architecture invariant: this is the only crate that reads configuration or binds sockets;
//! everything is assembled in [`Nexus::start`] by constructor injection of `Arc<dyn Trait>`.

mod api;
pub mod auth;
mod config;
mod connect;
mod convert;
mod discovery;
mod error;
mod graph;
mod invoker;
mod journal;
mod limits;
mod registry;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use nexus_engine::{Engine, History};
use nexus_store::{PgStore, SqliteStore};

/// The store as the registry, the journal and authentication see it (one object).
type Stores = (Arc<dyn registry::RegistryStore>, Arc<dyn nexus_store::JournalStore>, Arc<dyn nexus_store::AuthStore>);
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower::Layer;

pub use config::{AuthConfig, Config, ConfigError, JwtConfig, ServiceConfig, StoreConfig, parse_duration};
pub use error::EXECUTION_ID_HEADER;
pub use error::RpcStatus;
pub use invoker::{DynamicCodec, GrpcInvoker};

/// The generated NexusService server and client (messages live in `nexus_core::pb`).
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("nexus.v1");
}

#[derive(Debug, thiserror::Error)]
// Each message includes its cause, so the causes are not also `source()`s (a report walking the
// chain would print them twice).
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    #[error("building the catalog: {0}")]
    Discovery(discovery::DiscoveryError),
    #[error("{0}")]
    Store(nexus_store::Error),
    #[error("loading patterns: {0}")]
    Registry(error::ApiError),
    #[error("{0}")]
    Invoker(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: std::io::Error },
    #[error("building gRPC reflection: {0}")]
    Reflection(tonic_reflection::server::Error),
}

macro_rules! start_error_from {
    ($($from:ty => $variant:ident),* $(,)?) => {
        $(impl From<$from> for StartError {
            fn from(e: $from) -> Self {
                Self::$variant(e)
            }
        })*
    };
}

start_error_from!(
    ConfigError => Config,
    discovery::DiscoveryError => Discovery,
    nexus_store::Error => Store,
    error::ApiError => Registry,
    tonic_reflection::server::Error => Reflection,
);

/// A running Nexus server.
pub struct Nexus {
    addr: SocketAddr,
    services: usize,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    journal: Arc<dyn nexus_store::JournalStore>,
    /// This replica's name in the journal's leases.
    owner: Arc<str>,
    engine: Engine,
    /// Heartbeats, take-overs and retention.
    leases: JoinHandle<()>,
    grace: Duration,
}

impl Nexus {
    /// Builds the catalog, opens the store, loads patterns, binds the port and starts serving.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let catalog = Arc::new(discovery::build_catalog(&config.services, config.discovery_timeout).await?);
        let (store, journal_store, auth_store): Stores = match (&config.store.url, config.in_memory) {
            (Some(url), _) => {
                let s = Arc::new(PgStore::connect(url, config.store.schema.as_deref()).await?);
                (s.clone(), s.clone(), s)
            }
            (None, true) => {
                let s = Arc::new(SqliteStore::in_memory().await?);
                (s.clone(), s.clone(), s)
            }
            (None, false) => {
                let full = config.store.sqlite_synchronous == config::SqliteSynchronous::Full;
                let s = Arc::new(SqliteStore::open_with(&config.data_dir, full).await?);
                (s.clone(), s.clone(), s)
            }
        };
        let authenticator =
            Arc::new(auth::Authenticator::new(&config.auth, auth_store.clone()).map_err(StartError::Auth)?);
        let mut restricted = std::collections::BTreeMap::new();
        for (action, roles) in &config.auth.restricted_actions {
            if catalog.action(action).is_none() {
                return Err(StartError::Auth(format!("auth.restricted_actions: no action `{action}` in the catalog")));
            }
            let roles = roles
                .iter()
                .map(|r| {
                    auth::Role::parse(r).ok_or_else(|| {
                        StartError::Auth(format!(
                            "auth.restricted_actions.\"{action}\": `{r}` is not a role (admin, author, runner, viewer)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            restricted.insert(action.clone(), roles);
        }
        let registry = Arc::new(registry::Registry::load(store, catalog.clone(), restricted).await?);
        let open = !authenticator.required();
        let refresher = tokio::spawn(refresh_loop(registry.clone(), config.refresh_interval));
        let usage = tokio::spawn(usage_loop(registry.clone()));
        let invoker = Arc::new(GrpcInvoker::new(&catalog).map_err(StartError::Invoker)?);
        let owner: Arc<str> = Arc::from(format!("replica-{}", uuid::Uuid::now_v7().simple()));
        let engine = Engine::new(invoker, Arc::new(History::new(config.execution_history))).with_journal(Arc::new(
            journal::StoreBackedJournal::new(
                journal_store.clone(),
                owner.clone(),
                config.lease_timeout,
                config.outage_wait,
                if config.store.url.is_some() { 4 } else { 1 },
            ),
        ));
        let leases = tokio::spawn(journal::lease_loop(
            journal_store.clone(),
            registry.clone(),
            engine.clone(),
            owner.clone(),
            config.lease_timeout,
            config.store.url.is_none(),
            config.retention,
        ));
        let app = router(
            api::Api::new(
                registry,
                engine.clone(),
                journal_store.clone(),
                auth_store,
                config.limits.max_in_flight_per_caller,
            ),
            authenticator,
        )
        .await?;

        let listener =
            TcpListener::bind(config.listen).await.map_err(|cause| StartError::Bind { addr: config.listen, cause })?;
        let addr = listener.local_addr().map_err(|cause| StartError::Bind { addr: config.listen, cause })?;
        if open {
            tracing::warn!(
                "AUTHENTICATION IS OFF: every caller without credentials is an admin of tenant `default` \
                 (listening on {addr}; use --require-auth with API keys from `nexus token create` before exposing it)"
            );
        }
        let (tx, rx) = oneshot::channel::<()>();
        // Small messages: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to responses.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
        });
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, tower::make::Shared::new(app))
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            refresher.abort();
            usage.abort();
            served
        });
        tracing::info!(%addr, services = catalog.services().len(), "nexus listening (gRPC, gRPC-Web, Connect JSON)");
        Ok(Self {
            addr,
            services: catalog.services().len(),
            shutdown: Some(tx),
            task,
            journal: journal_store,
            owner,
            engine,
            leases,
            grace: config.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of backend services in the catalog.
    pub fn service_count(&self) -> usize {
        self.services
    }

    /// The grace period configured for [`Nexus::shutdown`] (`shutdown_grace`).
    pub fn shutdown_grace(&self) -> Duration {
        self.grace
    }

    /// Graceful shutdown: stops accepting connections and new executions, hands every durable
    /// execution running here back at once (stopped where it is, its lease released, so another
    /// replica continues it from its last journaled step — or this node after a restart), lets
    /// in-flight ephemeral executions and other requests finish within `grace`, and returns.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // No more heartbeats or take-overs from here: this replica is leaving.
        self.leases.abort();
        let handed = self.engine.suspend_durable();
        // Their tasks stop at the next await; give them a moment so no late journal write of
        // theirs lands after another replica has taken over.
        let settle = tokio::time::Instant::now() + Duration::from_millis(500);
        while !self.engine.running_durable().is_empty() && tokio::time::Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match self.journal.release_leases(&self.owner).await {
            Ok(n) if n > 0 || handed > 0 => {
                tracing::info!("handed {n} durable execution(s) back for another replica to continue")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("releasing leases: {e}"),
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            tracing::warn!("in-flight requests did not finish within {grace:?}; stopping anyway");
            self.task.abort();
        }
    }

    /// Runs until the server stops (it stops on [`Nexus::shutdown`] or a fatal error).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Picks up patterns registered by other replicas sharing the store.
async fn refresh_loop(registry: Arc<registry::Registry>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match registry.refresh_recent().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} pattern version(s) registered elsewhere are now available"),
            Err(e) => tracing::warn!("refreshing patterns from the store: {e}"),
        }
    }
}

/// Adds the executions counted in memory to the store's usage figures, every few seconds.
async fn usage_loop(registry: Arc<registry::Registry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = registry.flush_usage().await {
            tracing::warn!("recording pattern usage: {e}");
        }
    }
}

/// Sends native gRPC straight to the tonic routes and everything else (gRPC-Web, Connect JSON,
/// CORS preflights) through the translating layers. Native gRPC is the hot path: it should not
/// pay for middleware that only browsers and `curl` need.
#[derive(Clone)]
struct Dispatch {
    grpc: axum::Router,
    web: axum::Router,
}

impl tower::Service<axum::extract::Request> for Dispatch {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        // Routers are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let native = req.version() == http::Version::HTTP_2
            && req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/grpc") && !ct.starts_with("application/grpc-web"));
        let router = if native { &mut self.grpc } else { &mut self.web };
        tower::Service::call(router, req)
    }
}

async fn router(api: api::Api, auth: Arc<auth::Authenticator>) -> Result<Dispatch, StartError> {
    use proto::nexus_service_server::NexusServiceServer;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NexusServiceServer<api::Api>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nexus_core::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nexus_core::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let grpc = tonic::service::Routes::new(NexusServiceServer::new(api))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare()
        .into_axum_router()
        // Every call is authenticated here, before any service sees it.
        .layer(axum::middleware::from_fn_with_state(auth, auth::middleware));
    let grpc_web = tonic_web::GrpcWebLayer::new().layer(grpc.clone());
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([http::Method::POST, http::Method::GET, http::Method::OPTIONS])
        .allow_headers(tower_http::cors::Any)
        .expose_headers([
            http::HeaderName::from_static("grpc-status"),
            http::HeaderName::from_static("grpc-message"),
            http::HeaderName::from_static("grpc-status-details-bin"),
            http::HeaderName::from_static(EXECUTION_ID_HEADER),
        ])
        .max_age(Duration::from_secs(3600));
    let web = axum::Router::new()
        .fallback_service(grpc_web)
        .layer(axum::middleware::from_fn_with_state(grpc.clone(), connect::middleware))
        .layer(cors);
    Ok(Dispatch { grpc, web })
}

//! Nexus server: configuration, wiring, and the one port that serves native gRPC, gRPC-Web,
//! Connect unary JSON and CloudEvents over HTTP (plus gRPC server reflection and
//! `grpc.health.v1`).
//!
//! Architecture invariant: this is the only crate that reads configuration or binds sockets;
//! everything is assembled in [`Nexus::start`] by constructor injection of `Arc<dyn Trait>`.

mod access_log;
mod api;
pub mod auth;
mod cloudevents;
mod codec;
mod config;
mod connect;
mod convert;
mod discovery;
mod error;
pub mod events;
mod front;
mod graph;
mod headers;
mod invoker;
mod journal;
mod lifecycle;
mod limits;
mod llm;
pub mod metrics;
mod otel;
mod refresh;
mod registry;
pub mod schedule;
mod schemas;
pub mod tls;
mod ui;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use nexus_engine::{Engine, History};
use nexus_store::{PgStore, SqliteStore};

/// The store as the registry, the journal, authentication and the descriptor cache see it (one
/// object).
type Stores = (
    Arc<dyn registry::RegistryStore>,
    Arc<dyn nexus_store::JournalStore>,
    Arc<dyn nexus_store::AuthStore>,
    Arc<dyn nexus_store::DescriptorCache>,
    Arc<dyn nexus_store::EventStore>,
);
use tokio::{net::TcpListener, task::JoinHandle};
use tower::Layer;

pub use config::{
    AiConfig, AuthConfig, Config, ConfigError, DiscoveryConfig, EventsConfig, JwtConfig, OtlpProtocol, ServiceConfig,
    StoreConfig, TelemetryConfig, TlsConfig, parse_duration,
};
pub use error::EXECUTION_ID_HEADER;
pub use error::RpcStatus;
pub use invoker::{DynamicCodec, GrpcInvoker};
pub use nexus_engine::code_name;

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
    #[error("TLS: {0}")]
    Tls(tls::TlsError),
    #[error("events: {0}")]
    Events(nexus_engine::BusError),
    #[error("the LLM provider: {0}")]
    Llm(String),
    #[error("telemetry: {0}")]
    Telemetry(String),
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
    tls::TlsError => Tls,
);

/// A running Nexus server. Dropping it stops every part at once; [`Nexus::shutdown`] stops them
/// in order, gracefully.
pub struct Nexus {
    addr: SocketAddr,
    services: usize,
    /// Whether the listener speaks TLS.
    tls: bool,
    /// The listener's task (kept apart: past the grace period it is aborted).
    server: JoinHandle<std::io::Result<()>>,
    /// Every other long-running part, and the signals that stop each stage.
    tasks: lifecycle::Tasks,
    stages: lifecycle::Stages,
    journal: Arc<dyn nexus_store::JournalStore>,
    /// This replica's name in the journal's leases.
    owner: Arc<str>,
    engine: Engine,
    /// What a [`schedule::Scheduler`] is built from.
    registry: Arc<registry::Registry>,
    event_store: Arc<dyn nexus_store::EventStore>,
    /// Heartbeats, take-overs and retention (awaited at shutdown before leases are released).
    leases: JoinHandle<()>,
    grace: Duration,
}

impl Drop for Nexus {
    fn drop(&mut self) {
        self.stages.stop_all();
    }
}

/// What a graceful shutdown left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Tasks of this server still running when shutdown gave up waiting (0 when clean).
    pub tasks_left: usize,
}

impl Nexus {
    /// Builds the catalog, opens the store, loads patterns, binds the port and starts serving.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let llm = llm::LlmProvider::from_config(&config.ai, |k| std::env::var(k).ok()).map_err(StartError::Llm)?;
        // The listener's certificate first: a bad file should stop the start before anything else.
        let listener_cert = match config.tls.files() {
            Some((cert, key)) => {
                let cert = Arc::new(tls::ReloadingCert::load(cert, key)?);
                Some((cert.server_config()?, cert))
            }
            None => None,
        };
        let (store, journal_store, auth_store, descriptor_cache, event_store): Stores =
            match (&config.store.url, config.in_memory) {
                (Some(url), _) => {
                    let s = Arc::new(PgStore::connect(url, config.store.schema.as_deref()).await?);
                    (s.clone(), s.clone(), s.clone(), s.clone(), s)
                }
                (None, true) => {
                    let s = Arc::new(SqliteStore::in_memory().await?);
                    (s.clone(), s.clone(), s.clone(), s.clone(), s)
                }
                (None, false) => {
                    let full = config.store.sqlite_synchronous == config::SqliteSynchronous::Full;
                    let s = Arc::new(SqliteStore::open_with(&config.data_dir, full).await?);
                    (s.clone(), s.clone(), s.clone(), s.clone(), s)
                }
            };
        // The store first: a backend unreachable now is served from its cached descriptors.
        let discovered =
            discovery::discover_at_start(&config.services, config.discovery_timeout, descriptor_cache.as_ref()).await?;
        let catalog = Arc::new(discovery::catalog_of(&discovered)?);
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
        let mut restricted_events = Vec::new();
        for (pattern, roles) in &config.auth.restricted_events {
            let key = format!("auth.restricted_events.\"{pattern}\"");
            let prefix = pattern.strip_suffix(".*");
            if !nexus_core::plan::is_event_type(prefix.unwrap_or(pattern)) {
                return Err(StartError::Auth(format!(
                    "{key}: not an event type (`billing.refund`) or a prefix of types (`billing.*`)"
                )));
            }
            let roles = roles
                .iter()
                .map(|r| {
                    auth::Role::parse(r).ok_or_else(|| {
                        StartError::Auth(format!("{key}: `{r}` is not a role (admin, author, runner, viewer)"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            restricted_events.push((pattern.clone(), roles));
        }
        let registry = Arc::new(registry::Registry::load(store, catalog.clone(), restricted, restricted_events).await?);
        let backends =
            Arc::new(refresh::Discovery::new(discovered, config.discovery_timeout, descriptor_cache, registry.clone()));
        let open = !authenticator.required();
        let invoker = Arc::new(GrpcInvoker::new(&catalog, &config.services).map_err(StartError::Invoker)?);
        let owner: Arc<str> = Arc::from(format!("replica-{}", uuid::Uuid::now_v7().simple()));
        let metrics = Arc::new(metrics::Metrics::new());
        let (tracer, exporter) = match otel::from_config(&config.telemetry).map_err(StartError::Telemetry)? {
            Some((t, e)) => (Some(t), Some(e)),
            None => (None, None),
        };
        let mut observers: Vec<Arc<dyn nexus_engine::Observer>> = vec![metrics.clone()];
        observers.extend(tracer.map(|t| Arc::new(t) as Arc<dyn nexus_engine::Observer>));
        let (journal, journal_writers) = journal::StoreBackedJournal::new(
            journal_store.clone(),
            owner.clone(),
            config.lease_timeout,
            config.outage_wait,
            journal_writers(config.store.url.is_some()),
            metrics.clone(),
        );
        let (tasks, stages) = (lifecycle::Tasks::default(), lifecycle::Stages::new());
        let bus: Arc<dyn nexus_engine::EventBus> = match &config.events.url {
            Some(url) => {
                let mut o = events::nats::JetStreamOptions::new(url.clone());
                o.stream = config.events.stream.clone();
                o.consumer = config.events.consumer.clone();
                o.subject_prefix = config.events.subject_prefix.clone();
                o.ack_wait = config.events.ack_wait;
                Arc::new(events::nats::JetStreamBus::connect(o).await.map_err(StartError::Events)?)
            }
            None => Arc::new(events::local::InProcessBus::new(event_store.clone())),
        };
        let event_router = Arc::new(events::router::EventRouter::new(
            bus,
            event_store.clone(),
            journal_store.clone(),
            registry.clone(),
            tasks.clone(),
            events::router::RouterOptions {
                owner: owner.clone(),
                lease: config.lease_timeout,
                lookback: config.events.lookback,
                retention: config.events.retention,
                metrics: metrics.clone(),
            },
        ));
        let engine = Engine::new(
            invoker,
            Arc::new(History::with_byte_limit(config.execution_history, config.execution_history_bytes)),
        )
        .with_cel_limits(nexus_core::expr::CostLimits {
            per_expression: config.limits.cel_cost_per_expression,
            per_execution: config.limits.cel_cost_per_execution,
        })
        .with_journal(Arc::new(journal))
        .with_events(event_router.clone())
        .with_observer(Arc::new(Observers(observers)));
        event_router.set_engine(engine.clone());
        let cloudevents = cloudevents::Endpoint::new(
            authenticator.clone(),
            api::access::Access::new(registry.clone(), auth_store.clone()),
            event_router.clone(),
        );
        let app = router(
            api::Api::new(api::ApiParts {
                registry: registry.clone(),
                engine: engine.clone(),
                journal: journal_store.clone(),
                audit: auth_store,
                max_in_flight_per_caller: config.limits.max_in_flight_per_caller,
                tasks: tasks.clone(),
                discovery: backends.clone(),
                events: event_router.clone(),
                leaving: stages.accept.clone(),
                llm,
            }),
            authenticator,
            cloudevents,
            metrics.clone(),
            engine.clone(),
            registry.clone(),
            config.telemetry.access_log,
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
        // Everything that runs in the background, started now that nothing can fail any more.
        if let Some(exporter) = exporter {
            tasks.spawn(exporter.run(stages.background.clone()));
        }
        tasks.spawn(journal_writers.run(stages.journal.clone()));
        tasks.spawn(
            registry::PatternRefresh { registry: registry.clone(), every: config.refresh_interval }
                .run(stages.background.clone()),
        );
        tasks.spawn(registry::UsageCounts { registry: registry.clone() }.run(stages.background.clone()));
        // Events stop with the other background parts, before the journal writers.
        tasks.spawn(event_router.clone().run(stages.background.clone()));
        tasks.spawn(event_router.run_timers(stages.background.clone()));
        if let Some(every) = config.discovery.refresh_interval {
            tasks.spawn(refresh::CatalogRefresh { discovery: backends, every }.run(stages.background.clone()));
        }
        if config.events.scheduler {
            let scheduler = schedule::Scheduler::new(
                registry.clone(),
                event_store.clone(),
                journal_store.clone(),
                engine.clone(),
                Arc::new(schedule::SystemClock),
                tasks.clone(),
            );
            tasks.spawn(Arc::new(scheduler).run(stages.background.clone()));
        }
        let keeper = journal::LeaseKeeper {
            store: journal_store.clone(),
            registry: registry.clone(),
            engine: engine.clone(),
            owner: owner.clone(),
            lease: config.lease_timeout,
            take_all_at_start: config.store.url.is_none(),
            retention: config.retention,
            tasks: tasks.clone(),
            metrics: metrics.clone(),
        };
        let leases = tokio::spawn(keeper.run(stages.leases.clone()));
        let accept = stages.accept.clone();
        let tls = listener_cert.is_some();
        let server = match listener_cert {
            // Plaintext: the TCP stream goes to hyper as it is (the hot path gains no layer).
            None => {
                // Small messages: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to responses.
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY: {e}");
                    }
                });
                tokio::spawn(async move {
                    axum::serve(listener, tower::make::Shared::new(app))
                        .with_graceful_shutdown(accept.cancelled_owned())
                        .await
                })
            }
            // TLS: ALPN picks h2 (native gRPC) or HTTP/1.1 (gRPC-Web, Connect) on the one port;
            // hyper's auto builder serves both, as on the plaintext port.
            Some((server_config, cert)) => {
                tasks.spawn(cert.watch(Duration::from_secs(1), stages.background.clone()));
                let listener = tls::TlsListener::new(listener, server_config)
                    .map_err(|cause| StartError::Bind { addr: config.listen, cause })?;
                tokio::spawn(async move {
                    axum::serve(listener, tower::make::Shared::new(app))
                        .with_graceful_shutdown(accept.cancelled_owned())
                        .await
                })
            }
        };
        tracing::info!(%addr, tls, services = catalog.services().len(), "nexus listening (gRPC, gRPC-Web, Connect JSON, CloudEvents)");
        Ok(Self {
            addr,
            tls,
            services: catalog.services().len(),
            server,
            tasks,
            stages,
            journal: journal_store,
            owner,
            engine,
            registry,
            event_store,
            leases,
            grace: config.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` when the listener speaks TLS, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Number of backend services in the catalog.
    pub fn service_count(&self) -> usize {
        self.services
    }

    /// A scheduler on this server's registry, store and engine, reading `clock` — not running:
    /// call [`schedule::Scheduler::tick_once`] (tests, with a [`schedule::ManualClock`] and
    /// `events.scheduler = false` so the server's own scheduler does not compete), or `run` it.
    pub fn scheduler(&self, clock: Arc<dyn schedule::Clock>) -> Arc<schedule::Scheduler> {
        Arc::new(schedule::Scheduler::new(
            self.registry.clone(),
            self.event_store.clone(),
            self.journal.clone(),
            self.engine.clone(),
            clock,
            self.tasks.clone(),
        ))
    }

    /// The grace period configured for [`Nexus::shutdown`] (`shutdown_grace`).
    pub fn shutdown_grace(&self) -> Duration {
        self.grace
    }

    /// Graceful shutdown, in this order (ARCHITECTURE.md, "Shutdown"): stop accepting
    /// connections; stop lease heartbeats and take-overs; hand every durable execution running
    /// here back at once (stopped where it is, its lease released, so another replica continues
    /// it from its last journaled step — or this node after a restart); let in-flight ephemeral
    /// executions and other requests finish within `grace`; flush usage counts and stop the
    /// background loops; let the journal's writers commit what is queued; wait for every task.
    pub async fn shutdown(mut self, grace: Duration) -> Stopped {
        self.stages.accept.cancel();
        // No more heartbeats or take-overs from here: this replica is leaving.
        self.stages.leases.cancel();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.leases).await.is_err() {
            self.leases.abort();
        }
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
        if tokio::time::timeout(grace, &mut self.server).await.is_err() {
            tracing::warn!("in-flight requests did not finish within {grace:?}; stopping anyway");
            self.server.abort();
        }
        self.stages.background.cancel();
        // Executions still running here (past the grace period) end as their requests did.
        self.stages.journal.cancel();
        let tasks_left = self.tasks.wait(Duration::from_secs(5)).await;
        if tasks_left > 0 {
            tracing::warn!("{tasks_left} task(s) still running after shutdown");
        }
        Stopped { tasks_left }
    }

    /// Tasks of this server running now (background parts, resumed executions, streams).
    pub fn tasks_running(&self) -> usize {
        self.tasks.running()
    }

    /// Runs until the server stops (it stops on [`Nexus::shutdown`] or a fatal error).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match (&mut self.server).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Every observer of finished executions (metrics; traces when exported).
struct Observers(Vec<Arc<dyn nexus_engine::Observer>>);

impl nexus_engine::Observer for Observers {
    fn finished(&self, record: &Arc<nexus_engine::ExecutionRecord>) {
        for o in &self.0 {
            o.finished(record);
        }
    }
}

/// Sends native gRPC straight to the tonic routes and everything else (gRPC-Web, Connect JSON,
/// CORS preflights) through the translating layers. Native gRPC is the hot path: it should not
/// pay for middleware that only browsers and `curl` need.
#[derive(Clone)]
struct Dispatch {
    grpc: front::GrpcFront,
    web: axum::Router,
}

impl tower::Service<axum::extract::Request> for Dispatch {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        <front::GrpcFront as tower::Service<axum::extract::Request>>::Future,
        axum::routing::future::RouteFuture<std::convert::Infallible>,
    >;

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
        if native {
            futures::future::Either::Left(tower::Service::call(&mut self.grpc, req))
        } else {
            futures::future::Either::Right(tower::Service::call(&mut self.web, req))
        }
    }
}

async fn router(
    api: api::Api,
    auth: Arc<auth::Authenticator>,
    cloudevents: cloudevents::Endpoint,
    metrics: Arc<metrics::Metrics>,
    engine: Engine,
    registry: Arc<registry::Registry>,
    access_log: bool,
) -> Result<Dispatch, StartError> {
    use proto::nexus_service_server::NexusServiceServer;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NexusServiceServer<api::Api>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nexus_core::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nexus_core::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let others = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare()
        .into_axum_router();
    // Every call is logged and authenticated here, before any service sees it.
    let api = Arc::new(api);
    let front = front::GrpcFront {
        nexus: NexusServiceServer::from_arc(api.clone()),
        api,
        others,
        auth: auth.clone(),
        access: access_log::AccessLog::new(metrics.clone(), access_log),
    };
    // The translating layers (gRPC-Web, Connect) end in the same front.
    let grpc = axum::Router::new().fallback_service(front.clone());
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
    // `POST /events` (CloudEvents over HTTP) authenticates in its handler: its refusals are HTTP
    // statuses with JSON bodies, not gRPC statuses.
    let web = axum::Router::new()
        .route(cloudevents::PATH, axum::routing::any(cloudevents::handle))
        .with_state(Arc::new(cloudevents))
        .route(metrics::PATH, axum::routing::get(metrics::handle))
        .with_state(metrics::Endpoint { metrics, auth: auth.clone(), engine })
        .route(schemas::PATTERN_PATH, axum::routing::get(schemas::pattern))
        .route(schemas::ACTIONS_PATH, axum::routing::get(schemas::action))
        .with_state(schemas::Endpoint { registry, auth: auth.clone() })
        .route("/", axum::routing::get(ui::root))
        .route("/ui", axum::routing::get(ui::root))
        .route(ui::PATH, axum::routing::get(ui::index))
        .route("/ui/{*path}", axum::routing::get(ui::asset))
        .fallback_service(grpc_web)
        .layer(axum::middleware::from_fn_with_state(connect::Connect { grpc: grpc.clone(), auth }, connect::middleware))
        .layer(cors);
    Ok(Dispatch { grpc: front, web })
}

/// Journal transactions in flight at once: one for SQLite (a single writer anyway); on PostgreSQL
/// one too unless `NEXUS_JOURNAL_WRITERS` (1–64) says otherwise. Fewer writers make bigger batches,
/// so fewer commits and statements for the server to run; more overlap more WAL flushes. Measured
/// against a local server, 8 clients: 1 writer 869 / 930 durable executions/s, 2 writers 737 / 743,
/// 4 writers 563 / 697 (the server's CPU, not its flushes, bounds it); more writers pay off only
/// where each commit waits long on the server's disk or the network while its CPU idles.
fn journal_writers(shared_store: bool) -> usize {
    if !shared_store {
        return 1;
    }
    std::env::var("NEXUS_JOURNAL_WRITERS").ok().and_then(|v| v.parse::<usize>().ok()).map_or(1, |n| n.clamp(1, 64))
}

//! `nexus.v1.NexusService`: every RPC, thin over the registry, the engine and the catalog.
//!
//! Each handler lives with its area (`patterns`, `executions`, `catalog`), asks [`access`] who
//! may do what, and returns `Result<_, ApiError>`; the one `From<ApiError> for Status` in
//! `crate::error` picks the gRPC code. The trait impl below only delegates.

pub(crate) mod access;
mod ai;
mod catalog;
mod events;
mod executions;
mod metadata;
mod patterns;

use std::sync::Arc;

use nexus_core::pb;
use nexus_engine::Engine;
use tonic::{Request, Response, Status};

use crate::{auth::Principal, error::ApiError, proto::nexus_service_server::NexusService, registry::Registry};

pub struct Api {
    registry: Arc<Registry>,
    engine: Engine,
    /// Durable executions outlive the in-memory history: finished ones are read back from here.
    journal: Arc<dyn nexus_store::JournalStore>,
    access: access::Access,
    /// Executions in flight per caller.
    in_flight: crate::limits::InFlight,
    /// Where streamed executions run (the server waits for them at shutdown).
    tasks: crate::lifecycle::Tasks,
    /// Re-discovers backends for RefreshServices.
    discovery: Arc<crate::refresh::Discovery>,
    /// PublishEvent and SubscribeEvents.
    events: Arc<crate::events::router::EventRouter>,
    /// Cancelled when this replica starts leaving: live subscriptions end then (they would
    /// otherwise hold the shutdown for its whole grace period).
    leaving: tokio_util::sync::CancellationToken,
    /// GeneratePattern's LLM provider, when one is configured.
    llm: Option<Arc<crate::llm::LlmProvider>>,
}

/// What the API is built from (assembled once, in `Nexus::start`).
pub struct ApiParts {
    pub registry: Arc<Registry>,
    pub engine: Engine,
    pub journal: Arc<dyn nexus_store::JournalStore>,
    pub audit: Arc<dyn nexus_store::AuthStore>,
    pub max_in_flight_per_caller: usize,
    pub tasks: crate::lifecycle::Tasks,
    pub discovery: Arc<crate::refresh::Discovery>,
    pub events: Arc<crate::events::router::EventRouter>,
    pub leaving: tokio_util::sync::CancellationToken,
    pub llm: Option<Arc<crate::llm::LlmProvider>>,
}

impl Api {
    pub fn new(p: ApiParts) -> Self {
        Self {
            access: access::Access::new(p.registry.clone(), p.audit),
            registry: p.registry,
            engine: p.engine,
            journal: p.journal,
            in_flight: crate::limits::InFlight::new(p.max_in_flight_per_caller),
            tasks: p.tasks,
            discovery: p.discovery,
            events: p.events,
            leaving: p.leaving,
            llm: p.llm,
        }
    }
}

/// The caller, set by the authentication middleware on every transport.
fn principal<T>(req: &Request<T>) -> Result<Principal, ApiError> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| ApiError::Unauthenticated("no credentials".into()))
}

/// A page size as asked (0: the default), capped.
fn page_size(requested: u32) -> usize {
    match requested {
        0 => 50,
        n => (n as usize).min(1000),
    }
}

/// The trait impl: each RPC delegates to its handler (the inherent method of the same name, which
/// method resolution prefers), mapping its `ApiError` through the one conversion to `Status`.
macro_rules! delegate {
    ($($rpc:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl NexusService for Api {
            $(async fn $rpc(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                Api::$rpc(self, req).await.map(Response::new).map_err(Status::from)
            })*

            async fn execute_pattern(
                &self,
                req: Request<pb::ExecutePatternRequest>,
            ) -> Result<Response<pb::ExecutePatternResponse>, Status> {
                Api::execute_pattern(self, req).await.map_err(Status::from)
            }

            type ExecutePatternStreamStream = executions::EventStream;

            async fn execute_pattern_stream(
                &self,
                req: Request<pb::ExecutePatternRequest>,
            ) -> Result<Response<Self::ExecutePatternStreamStream>, Status> {
                Api::execute_pattern_stream(self, req).await.map(Response::new).map_err(Status::from)
            }

            type SubscribeEventsStream = events::LiveEvents;

            async fn subscribe_events(
                &self,
                req: Request<pb::SubscribeEventsRequest>,
            ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
                Api::subscribe_events(self, req).await.map(Response::new).map_err(Status::from)
            }

            type WatchExecutionStream = executions::EventStream;

            async fn watch_execution(
                &self,
                req: Request<pb::WatchExecutionRequest>,
            ) -> Result<Response<Self::WatchExecutionStream>, Status> {
                Api::watch_execution(self, req).await.map(Response::new).map_err(Status::from)
            }
        }
    };
}

delegate! {
    register_pattern(pb::RegisterPatternRequest) -> pb::RegisterPatternResponse;
    validate_pattern(pb::ValidatePatternRequest) -> pb::ValidatePatternResponse;
    get_pattern(pb::GetPatternRequest) -> pb::Pattern;
    list_patterns(pb::ListPatternsRequest) -> pb::ListPatternsResponse;
    list_pattern_versions(pb::ListPatternVersionsRequest) -> pb::ListPatternVersionsResponse;
    deprecate_pattern(pb::DeprecatePatternRequest) -> pb::DeprecatePatternResponse;
    diff_patterns(pb::DiffPatternsRequest) -> pb::DiffPatternsResponse;
    set_visibility(pb::SetVisibilityRequest) -> pb::SetVisibilityResponse;
    fork_pattern(pb::ForkPatternRequest) -> pb::RegisterPatternResponse;
    star(pb::StarRequest) -> pb::StarResponse;
    cancel_execution(pb::CancelExecutionRequest) -> pb::CancelExecutionResponse;
    get_execution(pb::GetExecutionRequest) -> pb::Execution;
    list_executions(pb::ListExecutionsRequest) -> pb::ListExecutionsResponse;
    list_services(pb::ListServicesRequest) -> pb::ListServicesResponse;
    describe_action(pb::DescribeActionRequest) -> pb::Action;
    refresh_services(pb::RefreshServicesRequest) -> pb::RefreshServicesResponse;
    query_graph(pb::QueryGraphRequest) -> pb::QueryGraphResponse;
    who_am_i(pb::WhoAmIRequest) -> pb::Principal;
    publish_event(pb::PublishEventRequest) -> pb::PublishEventResponse;
    register_event_type(pb::RegisterEventTypeRequest) -> pb::EventType;
    list_event_types(pb::ListEventTypesRequest) -> pb::ListEventTypesResponse;
    suggest_patterns(pb::SuggestPatternsRequest) -> pb::SuggestPatternsResponse;
    generate_pattern(pb::GeneratePatternRequest) -> pb::GeneratePatternResponse;
}

//! The front of every gRPC call — native gRPC, and gRPC-Web and Connect once translated: the
//! access log and metrics, authentication, and the status of an oversized request, in one layer
//! with one future per call; then NexusService directly, or the other gRPC services (health,
//! reflection) by their routes.
//!
//! One hand-written layer instead of three `axum::middleware::from_fn` layers and the router in
//! front of NexusService: each of those clones a boxed service, boxes a future and re-boxes the
//! response body on every call, which was ~9 % of Nexus's CPU per execution in the benchmark's
//! profile (bench/README.md, session 19).

use std::{convert::Infallible, pin::Pin, sync::Arc, task::Poll};

use axum::{body::Body, extract::Request, response::Response};
use tower::ServiceExt as _;

use crate::{access_log::AccessLog, api::Api, auth::Authenticator, proto::nexus_service_server::NexusServiceServer};

mod unary;

/// Paths of NexusService's methods: served without the router.
const NEXUS_SERVICE: &str = "/nexus.v1.NexusService/";
/// Health checks are exempt from authentication (load balancers probe them without credentials).
const HEALTH: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub(crate) struct GrpcFront {
    /// ExecutePattern's own path (`unary`).
    pub api: Arc<Api>,
    /// NexusService's other methods (the same `Api`).
    pub nexus: NexusServiceServer<Api>,
    /// The other gRPC services (health, reflection), by their routes; unknown services answer
    /// UNIMPLEMENTED there.
    pub others: axum::Router,
    pub auth: Arc<Authenticator>,
    pub access: AccessLog,
}

impl GrpcFront {
    async fn serve(self, mut req: Request) -> Response {
        let start = self.access.start(&req);
        let principal = if req.uri().path().starts_with(HEALTH) {
            None
        } else {
            match self.auth.authenticate(req.headers()).await {
                Ok(p) => {
                    req.extensions_mut().insert(p.clone());
                    Some(p)
                }
                Err(e) => {
                    tracing::debug!(path = %req.uri().path(), "refused: {e}");
                    return self.access.finish(start, None, tonic::Status::from(e).into_http());
                }
            }
        };
        let mut response = if unary::takes(&req) {
            unary::serve(&self.api, req).await
        } else if req.uri().path().starts_with(NEXUS_SERVICE) {
            match self.nexus.oneshot(req).await {
                Ok(r) => r.map(Body::new),
                Err(never) => match never {},
            }
        } else {
            match self.others.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        };
        crate::codec::oversize_is_resource_exhausted(response.headers_mut());
        self.access.finish(start, principal, response)
    }
}

impl tower::Service<Request> for GrpcFront {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        // NexusService and the routes are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let front = self.clone();
        Box::pin(async move { Ok(front.serve(req).await) })
    }
}

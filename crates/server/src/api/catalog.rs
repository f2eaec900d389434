//! Catalog, graph and identity RPCs: the services and actions Nexus knows, the knowledge graph,
//! and who the caller is.

use nexus_core::pb;
use tonic::Request;

use super::{
    Api,
    access::{ADMIN, Asking, READ},
    principal,
};
use crate::{convert, error::ApiError};

impl Api {
    pub(super) async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> Result<pb::ListServicesResponse, ApiError> {
        let p = principal(&req)?;
        self.access.require(Asking { caller: &p, rpc: "ListServices" }, "catalog", READ)?;
        let services = self.registry.catalog().services().iter().map(convert::service).collect();
        Ok(pb::ListServicesResponse { services })
    }

    pub(super) async fn describe_action(
        &self,
        req: Request<pb::DescribeActionRequest>,
    ) -> Result<pb::Action, ApiError> {
        let p = principal(&req)?;
        let name = req.into_inner().name;
        self.access.require(Asking { caller: &p, rpc: "DescribeAction" }, &format!("action:{name}"), READ)?;
        let catalog = self.registry.catalog();
        let action = catalog.action(&name).ok_or_else(|| {
            let hint = nexus_core::diagnostic::suggest(&name, catalog.action_names())
                .map(|s| format!(" Did you mean `{s}`?"))
                .unwrap_or_default();
            ApiError::NotFound(format!("no action `{name}` in the catalog.{hint}"))
        })?;
        Ok(convert::action(action))
    }

    /// Re-discovers backends and reports, per pattern version, what would now break
    /// (`crate::refresh`). Admins only: it changes what every caller's patterns are checked
    /// against.
    pub(super) async fn refresh_services(
        &self,
        req: Request<pb::RefreshServicesRequest>,
    ) -> Result<pb::RefreshServicesResponse, ApiError> {
        let p = principal(&req)?;
        self.access.require(Asking { caller: &p, rpc: "RefreshServices" }, "catalog", ADMIN)?;
        let r = req.into_inner();
        let backend = (!r.backend.is_empty()).then_some(r.backend.as_str());
        tracing::info!(subject = %p.subject, backend = backend.unwrap_or("*"), dry_run = r.dry_run, "catalog refresh asked");
        self.discovery.refresh(backend, r.dry_run).await
    }

    pub(super) async fn query_graph(
        &self,
        req: Request<pb::QueryGraphRequest>,
    ) -> Result<pb::QueryGraphResponse, ApiError> {
        let p = principal(&req)?;
        let asking = Asking { caller: &p, rpc: "QueryGraph" };
        self.access.require(asking, "graph", READ)?;
        let r = req.into_inner();
        let graph = crate::graph::Graph { store: self.registry.store().as_ref(), registry: &self.registry, caller: &p };
        match r.query {
            Some(pb::query_graph_request::Query::Impact(action)) => graph.impact(&action).await,
            Some(pb::query_graph_request::Query::Lineage(name)) => {
                self.access.visible(asking, &name).await?;
                graph.lineage(&name).await
            }
            Some(pb::query_graph_request::Query::Neighbourhood(node)) => {
                graph.neighbourhood(&node, r.depth.clamp(1, 3)).await
            }
            None => Err(ApiError::InvalidArgument("set one query: impact, lineage or neighbourhood".into())),
        }
    }

    pub(super) async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<pb::Principal, ApiError> {
        let p = principal(&req)?;
        Ok(pb::Principal {
            tenant: p.tenant.to_string(),
            subject: p.subject.to_string(),
            roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
            authenticated_by: p.via.to_string(),
        })
    }
}

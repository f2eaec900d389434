//! `nexus.v1.NexusService`: the RPCs, thin over the registry, the engine and the catalog.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};

use nexus_core::{pb, value};
use nexus_engine::{Engine, EngineError, Event, ExecuteRequest, ExecutionEvent, ExecutionStatus, HistoryFilter};
use tonic::{Code, Request, Response, Status, metadata::MetadataValue};

use crate::{
    auth::{Principal, Role, principal},
    convert,
    error::{ApiError, status_with_detail},
    proto::nexus_service_server::NexusService,
    registry::{Registry, manageable_by, visible_to},
};

/// Roles that may read (patterns, the catalog, executions of their tenant).
const READ: &[Role] = &[Role::Viewer, Role::Runner, Role::Author];
/// Roles that may register and fork patterns.
const AUTHOR: &[Role] = &[Role::Author];
/// Roles that may execute patterns and cancel executions.
const RUN: &[Role] = &[Role::Runner];

/// Metadata (header or trailer) naming the execution an ExecutePattern call ran.
pub const EXECUTION_ID_HEADER: &str = "nexus-execution-id";

pub struct Api {
    registry: Arc<Registry>,
    engine: Engine,
    /// Durable executions outlive the in-memory history: finished ones are read back from here.
    journal: Arc<dyn nexus_store::Journal>,
    /// Where refusals are audited.
    audit: Arc<dyn nexus_store::AuthStore>,
    /// Executions in flight per caller.
    in_flight: Arc<crate::limits::InFlight>,
}

impl Api {
    pub fn new(
        registry: Arc<Registry>,
        engine: Engine,
        journal: Arc<dyn nexus_store::Journal>,
        audit: Arc<dyn nexus_store::AuthStore>,
    ) -> Self {
        Self { registry, engine, journal, audit, in_flight: Arc::new(crate::limits::InFlight::new(0)) }
    }

    /// At most `limit` executions in flight per caller (0 = unlimited).
    pub fn with_in_flight_limit(mut self, limit: usize) -> Self {
        self.in_flight = Arc::new(crate::limits::InFlight::new(limit));
        self
    }

    /// Records a refusal (who, what, when) in the store, off the request's path.
    fn audit_denial(&self, p: &Principal, rpc: &str, resource: &str, reason: &str) {
        tracing::info!(tenant = %p.tenant, subject = %p.subject, rpc, resource, "denied: {reason}");
        let entry = nexus_store::AuditEntry {
            at: std::time::SystemTime::now(),
            tenant: p.tenant.to_string(),
            subject: p.subject.to_string(),
            action: rpc.to_string(),
            resource: resource.to_string(),
            reason: reason.to_string(),
        };
        let store = self.audit.clone();
        tokio::spawn(async move {
            if let Err(e) = store.audit(&entry).await {
                tracing::warn!("cannot write the audit log: {e}");
            }
        });
    }

    /// PERMISSION_DENIED (audited) unless the caller has one of `roles` (admins have all).
    fn require(&self, p: &Principal, rpc: &str, resource: &str, roles: &[Role]) -> Result<(), Status> {
        if p.any_of(roles) {
            return Ok(());
        }
        let mut names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        names.push("admin");
        let reason = format!("{rpc} needs the role {}", names.join(" or "));
        self.audit_denial(p, rpc, resource, &reason);
        Err(Status::permission_denied(format!(
            "{reason}; {} (tenant {}) has {}",
            p.subject,
            p.tenant,
            if p.roles.is_empty() {
                "no roles".to_string()
            } else {
                p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            }
        )))
    }

    /// The pattern's facts when the caller may see it; NOT_FOUND otherwise, worded exactly as
    /// for a pattern that does not exist (the refusal is audited).
    async fn visible(&self, p: &Principal, rpc: &str, name: &str) -> Result<nexus_store::PatternName, Status> {
        let meta = match self.registry.name(name) {
            Some(m) => Some(m),
            // Registered on another replica a moment ago.
            None => self.registry.reload_name(name).await?,
        };
        match meta {
            Some(m) if visible_to(&m, p) => Ok(m),
            found => {
                if found.is_some() {
                    self.audit_denial(p, rpc, &format!("pattern:{name}"), "not visible to the caller");
                }
                Err(Status::not_found(format!("no pattern named `{name}` (ListPatterns shows what is registered)")))
            }
        }
    }

    /// Like [`Api::visible`], and PERMISSION_DENIED unless the caller owns the pattern or is an
    /// admin of its tenant.
    async fn manageable(&self, p: &Principal, rpc: &str, name: &str) -> Result<nexus_store::PatternName, Status> {
        let meta = self.visible(p, rpc, name).await?;
        if manageable_by(&meta, p) {
            return Ok(meta);
        }
        let reason = format!(
            "pattern `{name}` belongs to {} (tenant {}): only its owner or an admin of its tenant may change it",
            meta.owner, meta.tenant
        );
        self.audit_denial(p, rpc, &format!("pattern:{name}"), &reason);
        Err(Status::permission_denied(reason))
    }

    /// An execution's tenant must be the caller's; otherwise it does not exist for them.
    fn own_execution(&self, p: &Principal, rpc: &str, id: &str, tenant: &str) -> Result<(), Status> {
        if tenant == &*p.tenant {
            return Ok(());
        }
        self.audit_denial(p, rpc, &format!("execution:{id}"), "the execution belongs to another tenant");
        Err(Status::not_found(format!("no execution `{id}`")))
    }

    /// A stored version with the server-set fields filled in (tenant, lineage, stars,
    /// deprecation, executions).
    async fn pattern_view(&self, meta: &nexus_store::PatternName, version: &str) -> Result<pb::Pattern, Status> {
        let mut doc = self.registry.get_fresh(&meta.name, version).await?.document;
        doc.tenant = meta.tenant.clone();
        doc.forked_from = meta.forked_from.clone().unwrap_or_default();
        doc.stars = meta.stars;
        doc.visibility = meta.visibility.clone();
        let versions = self.registry.store().versions(&meta.name).await.map_err(ApiError::from)?;
        if let Some(v) = versions.iter().find(|v| v.version == doc.version) {
            doc.deprecated = v.deprecated;
            doc.executions = v.executions;
        }
        Ok(doc)
    }

    /// An execution from the history, or (durable ones, after a restart) from the journal.
    async fn find_execution(&self, id: &str) -> Result<Option<pb::Execution>, Status> {
        if let Some(r) = self.engine.history().get(id) {
            return Ok(Some(convert::execution(&r, true)));
        }
        let unavailable = |e: nexus_store::Error| Status::unavailable(e.to_string());
        let finished = self.journal.finished_execution(id).await.map_err(unavailable)?;
        Ok(finished.and_then(|f| convert::execution_from_journal(&f.record)))
    }

    /// A durable execution that is still running on another replica (or waiting to be taken
    /// over after a replica left): its journaled progress so far.
    async fn find_running_elsewhere(&self, id: &str) -> Result<Option<pb::Execution>, Status> {
        let unfinished = self.journal.unfinished_execution(id).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(unfinished.map(|u| convert::running_from_journal(&u)))
    }

    /// A durable execution that used this idempotency key before a restart: wait for it (it may
    /// be resuming) and answer with its result.
    async fn durable_by_key(&self, request: &ExecuteRequest) -> Result<Option<pb::ExecutePatternResponse>, Status> {
        let Some(key) = &request.idempotency_key else { return Ok(None) };
        if request.pattern.durability != nexus_core::plan::Durability::Durable {
            return Ok(None);
        }
        let id = self
            .journal
            .execution_by_idempotency_key(&request.pattern.name, key)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let Some(id) = id else { return Ok(None) };
        let until = request.deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        loop {
            if let Some(e) = self.find_execution(&id).await? {
                if e.tenant != *request.tenant {
                    // Another tenant's key: theirs is not ours to show; run as a new execution
                    // would collide with their key, so refuse plainly.
                    return Err(Status::already_exists(
                        "this idempotency key is already used for this pattern; choose another key",
                    ));
                }
                return Ok(Some(pb::ExecutePatternResponse {
                    execution_id: e.id,
                    status: e.status,
                    output: e.output,
                    error: e.error,
                }));
            }
            if Instant::now() >= until {
                return Err(Status::deadline_exceeded(format!(
                    "execution {id} with this idempotency key is still running"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn pattern_of(p: Option<pb::Pattern>) -> Result<pb::Pattern, Status> {
    p.ok_or_else(|| Status::invalid_argument("`pattern` is required"))
}

/// The caller's deadline, from the `grpc-timeout` header (`100m`, `5S`, ...).
fn deadline<T>(req: &Request<T>) -> Option<Instant> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(Instant::now() + d)
}

fn traceparent<T>(req: &Request<T>) -> Option<String> {
    req.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Events buffered between an execution and its ExecutePatternStream caller. Small on purpose:
/// it is what lets a slow reader hold back the execution (and the backend streams it forwards).
pub const STREAM_BUFFER: usize = 16;

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExecutionEvent, Status>> + Send>>;

fn finished_stream(record: &nexus_engine::ExecutionRecord) -> EventStream {
    let event = ExecutionEvent {
        execution_id: record.id.clone(),
        time: std::time::SystemTime::now(),
        event: Event::Finished(Arc::new(record.clone())),
    };
    Box::pin(futures::stream::once(async move { Ok(convert::event(&event)) }))
}

impl Api {
    /// The engine's request, and the caller's slot among their executions in flight (held until
    /// the execution ends).
    async fn execute_request(
        &self,
        req: Request<pb::ExecutePatternRequest>,
        rpc: &str,
    ) -> Result<(ExecuteRequest, crate::limits::Slot), Status> {
        let p = principal(&req)?;
        let deadline = deadline(&req);
        let traceparent = traceparent(&req);
        let r = req.into_inner();
        if r.pattern_name.is_empty() {
            return Err(Status::invalid_argument("`pattern_name` is required"));
        }
        if !p.any_of(RUN) {
            self.require(&p, rpc, &format!("pattern:{}", r.pattern_name), RUN)?;
        }
        // The hot path: a check under the read lock, no copy of the name's facts.
        if self.registry.visible_here(&r.pattern_name, &p) != Some(true) {
            self.visible(&p, rpc, &r.pattern_name).await?;
        }
        let pattern = self.registry.executable_fresh(&r.pattern_name, &r.version).await?;
        let slot = self.in_flight.acquire(&p)?;
        self.registry.count_execution(&pattern.name, &pattern.version);
        let input = match &r.input {
            Some(s) => value::struct_to_cel(s),
            None => value::map(Default::default()),
        };
        let request = ExecuteRequest {
            pattern,
            input,
            deadline,
            idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key),
            traceparent,
            tenant: p.tenant.clone(),
        };
        Ok((request, slot))
    }
}

fn page_size(requested: u32) -> usize {
    match requested {
        0 => 50,
        n => (n as usize).min(1000),
    }
}

#[tonic::async_trait]
impl NexusService for Api {
    async fn register_pattern(
        &self,
        req: Request<pb::RegisterPatternRequest>,
    ) -> Result<Response<pb::RegisterPatternResponse>, Status> {
        let p = principal(&req)?;
        let pattern = pattern_of(req.into_inner().pattern)?;
        self.require(&p, "RegisterPattern", &format!("pattern:{}", pattern.name), AUTHOR)?;
        let r = self.registry.register(pattern, &p, None).await?;
        if r.created {
            tracing::info!(pattern = %r.name, version = %r.version, "pattern registered");
        }
        Ok(Response::new(pb::RegisterPatternResponse {
            pattern_ref: Some(pb::PatternRef { name: r.name, version: r.version }),
            diagnostics: r.warnings.iter().map(pb::Diagnostic::from).collect(),
            created: r.created,
        }))
    }

    async fn validate_pattern(
        &self,
        req: Request<pb::ValidatePatternRequest>,
    ) -> Result<Response<pb::ValidatePatternResponse>, Status> {
        let p = principal(&req)?;
        let pattern = pattern_of(req.into_inner().pattern)?;
        self.require(&p, "ValidatePattern", &format!("pattern:{}", pattern.name), AUTHOR)?;
        let (valid, diags) = match self.registry.validate(&pattern, &p) {
            Ok(w) => (true, w),
            Err(d) => (false, d),
        };
        Ok(Response::new(pb::ValidatePatternResponse {
            valid,
            diagnostics: diags.iter().map(pb::Diagnostic::from).collect(),
        }))
    }

    async fn get_pattern(&self, req: Request<pb::GetPatternRequest>) -> Result<Response<pb::Pattern>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        self.require(&p, "GetPattern", &format!("pattern:{}", r.name), READ)?;
        let meta = self.visible(&p, "GetPattern", &r.name).await?;
        Ok(Response::new(self.pattern_view(&meta, &r.version).await?))
    }

    async fn list_patterns(
        &self,
        req: Request<pb::ListPatternsRequest>,
    ) -> Result<Response<pb::ListPatternsResponse>, Status> {
        let p = principal(&req)?;
        self.require(&p, "ListPatterns", "patterns", READ)?;
        let r = req.into_inner();
        let offset: usize = if r.page_token.is_empty() {
            0
        } else {
            r.page_token
                .parse()
                .map_err(|_| Status::invalid_argument("invalid page_token (pass the one a previous page returned)"))?
        };
        let sort = match pb::PatternSort::try_from(r.sort).unwrap_or_default() {
            pb::PatternSort::Unspecified | pb::PatternSort::Relevance => nexus_store::SearchSort::Relevance,
            pb::PatternSort::Popularity => nexus_store::SearchSort::Popularity,
            pb::PatternSort::Name => nexus_store::SearchSort::Name,
            pb::PatternSort::Recent => nexus_store::SearchSort::Recent,
        };
        let limit = page_size(r.page_size);
        let page = self
            .registry
            .store()
            .search(&nexus_store::SearchQuery {
                viewer: p.viewer(),
                text: r.query,
                owner: r.owner,
                tag: r.tag,
                action: r.action,
                sort,
                offset,
                limit,
            })
            .await
            .map_err(ApiError::from)?;
        // The latest version of each (the highest when every version is deprecated). Versions
        // registered on another replica and not loaded here yet: one refresh for the page.
        let lookup = |meta: &nexus_store::PatternName| {
            self.registry.get(&meta.name, meta.latest.as_deref().unwrap_or_default()).ok().or_else(|| {
                self.registry.versions_of(&meta.name).last().and_then(|v| self.registry.get(&meta.name, v).ok())
            })
        };
        if page.names.iter().any(|m| lookup(m).is_none()) {
            self.registry.refresh().await?;
        }
        let mut patterns = Vec::with_capacity(page.names.len());
        for meta in &page.names {
            let Some(entry) = lookup(meta) else { continue };
            let mut doc = entry.document;
            doc.tenant = meta.tenant.clone();
            doc.forked_from = meta.forked_from.clone().unwrap_or_default();
            doc.stars = meta.stars;
            doc.executions = meta.executions;
            doc.visibility = meta.visibility.clone();
            doc.deprecated = meta.latest.is_none();
            patterns.push(doc);
        }
        let next_page_token = if page.more { (offset + limit).to_string() } else { String::new() };
        Ok(Response::new(pb::ListPatternsResponse { patterns, next_page_token }))
    }

    async fn execute_pattern(
        &self,
        req: Request<pb::ExecutePatternRequest>,
    ) -> Result<Response<pb::ExecutePatternResponse>, Status> {
        let (request, _slot) = self.execute_request(req, "ExecutePattern").await?;
        if let Some(previous) = self.durable_by_key(&request).await? {
            return Ok(Response::new(previous));
        }
        let record = self.engine.execute(request).await.map_err(|e| match e {
            EngineError::InvalidInput(_) => Status::invalid_argument(e.to_string()),
        })?;
        let response = convert::response(&record);
        let id = MetadataValue::try_from(&*record.id).ok();
        if record.status == ExecutionStatus::Succeeded {
            let mut resp = Response::new(response);
            if let Some(id) = id {
                resp.metadata_mut().insert(EXECUTION_ID_HEADER, id);
            }
            return Ok(resp);
        }
        let (code, message) = match &record.error {
            Some(e) => (e.code, e.message.clone()),
            None => (Code::Unknown, "the execution did not succeed".to_string()),
        };
        let mut status = status_with_detail(code, message, "nexus.v1.ExecutePatternResponse", &response);
        if let Some(id) = id {
            status.metadata_mut().insert(EXECUTION_ID_HEADER, id);
        }
        Err(status)
    }

    type ExecutePatternStreamStream = EventStream;

    async fn execute_pattern_stream(
        &self,
        req: Request<pb::ExecutePatternRequest>,
    ) -> Result<Response<Self::ExecutePatternStreamStream>, Status> {
        let (request, slot) = self.execute_request(req, "ExecutePatternStream").await?;
        self.engine.check_input(&request).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let engine = self.engine.clone();
        // The execution runs on its own task; when the caller goes away the stream (and `rx`) is
        // dropped, the engine notices and cancels the execution and its backend calls.
        tokio::spawn(async move {
            let _ = engine.execute_observed(request, tx).await;
            drop(slot);
        });
        let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(|e| Ok(convert::event(&e)));
        Ok(Response::new(Box::pin(events)))
    }

    type WatchExecutionStream = EventStream;

    async fn watch_execution(
        &self,
        req: Request<pb::WatchExecutionRequest>,
    ) -> Result<Response<Self::WatchExecutionStream>, Status> {
        let p = principal(&req)?;
        let id = req.into_inner().execution_id;
        self.require(&p, "WatchExecution", &format!("execution:{id}"), READ)?;
        let not_found = || Status::not_found(format!("no execution `{id}`"));
        let Some(running) = self.engine.running(&id) else {
            let record = self.engine.history().get(&id).ok_or_else(not_found)?;
            self.own_execution(&p, "WatchExecution", &id, &record.tenant)?;
            return Ok(Response::new(finished_stream(&record)));
        };
        self.own_execution(&p, "WatchExecution", &id, &running.tenant)?;
        let rx = running.subscribe();
        // It may have finished between the lookup and the subscription: then the history has it.
        if let Some(record) = self.engine.history().get(&id) {
            return Ok(Response::new(finished_stream(&record)));
        }
        let events = tokio_stream::wrappers::BroadcastStream::new(rx)
            // A watcher that falls behind loses events (it never slows the execution).
            .filter_map(|r| std::future::ready(r.ok()))
            .scan(false, |done, e| {
                if *done {
                    return std::future::ready(None);
                }
                *done = matches!(e.event, Event::Finished(_));
                std::future::ready(Some(Ok(convert::event(&e))))
            });
        Ok(Response::new(Box::pin(events)))
    }

    async fn cancel_execution(
        &self,
        req: Request<pb::CancelExecutionRequest>,
    ) -> Result<Response<pb::CancelExecutionResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        self.require(&p, "CancelExecution", &format!("execution:{}", r.execution_id), RUN)?;
        if let Some(running) = self.engine.running(&r.execution_id) {
            self.own_execution(&p, "CancelExecution", &r.execution_id, &running.tenant)?;
        } else if let Some(record) = self.engine.history().get(&r.execution_id) {
            self.own_execution(&p, "CancelExecution", &r.execution_id, &record.tenant)?;
        }
        if self.engine.cancel(&r.execution_id) {
            tracing::info!(execution = %r.execution_id, reason = %r.reason, "execution cancelled");
            return Ok(Response::new(pb::CancelExecutionResponse { cancelled: true }));
        }
        match self.engine.history().get(&r.execution_id) {
            Some(_) => Ok(Response::new(pb::CancelExecutionResponse { cancelled: false })),
            None => Err(Status::not_found(format!("no execution `{}`", r.execution_id))),
        }
    }

    async fn get_execution(&self, req: Request<pb::GetExecutionRequest>) -> Result<Response<pb::Execution>, Status> {
        let p = principal(&req)?;
        let id = req.into_inner().execution_id;
        self.require(&p, "GetExecution", &format!("execution:{id}"), READ)?;
        if let Some(running) = self.engine.running(&id) {
            self.own_execution(&p, "GetExecution", &id, &running.tenant)?;
        }
        match self.find_execution(&id).await? {
            Some(e) => {
                self.own_execution(&p, "GetExecution", &id, &e.tenant)?;
                Ok(Response::new(e))
            }
            None if self.engine.running(&id).is_some() => Err(Status::failed_precondition(format!(
                "execution `{id}` is still running (WatchExecution follows it live)"
            ))),
            None => match self.find_running_elsewhere(&id).await? {
                Some(e) => {
                    self.own_execution(&p, "GetExecution", &id, &e.tenant)?;
                    Ok(Response::new(e))
                }
                None => Err(Status::not_found(format!(
                    "no execution `{id}` (ephemeral executions are kept in memory: the most recent ones, until restart)"
                ))),
            },
        }
    }

    async fn list_executions(
        &self,
        req: Request<pb::ListExecutionsRequest>,
    ) -> Result<Response<pb::ListExecutionsResponse>, Status> {
        let p = principal(&req)?;
        self.require(&p, "ListExecutions", "executions", READ)?;
        let r = req.into_inner();
        let filter = HistoryFilter {
            tenant: Some(p.tenant.to_string()),
            pattern_name: (!r.pattern_name.is_empty()).then_some(r.pattern_name),
            status: convert::status_from_pb(r.status),
            before: (!r.page_token.is_empty()).then_some(r.page_token),
            limit: page_size(r.page_size),
        };
        let limit = filter.limit;
        let (records, more_here) = self.engine.history().list(&filter);
        // Durable executions are in the journal too: those of other replicas, and those from
        // before a restart. Merged with this node's history by id (newest first); the history's
        // record wins (it is the same execution, with more detail while it runs here).
        let query = nexus_store::ExecutionQuery {
            tenant: p.tenant.to_string(),
            pattern_name: filter.pattern_name.clone(),
            status: filter
                .status
                .map(|s| convert::status(s).as_str_name().trim_start_matches("EXECUTION_STATUS_").to_string()),
            before: filter.before.clone(),
            limit: limit as u32,
        };
        let journaled = match self.journal.list_executions(&query).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("listing journaled executions: {e}; listing this node's only");
                Vec::new()
            }
        };
        let more_journaled = journaled.len() >= limit;
        let mut merged: std::collections::BTreeMap<String, pb::Execution> =
            journaled.iter().map(|j| (j.id.clone(), convert::listed_from_journal(j))).collect();
        for r in &records {
            merged.insert(r.id.to_string(), convert::execution(r, false));
        }
        let total = merged.len();
        let executions: Vec<pb::Execution> = merged.into_values().rev().take(limit).collect();
        let more = more_here || more_journaled || total > limit;
        let next_page_token = match (more, executions.last()) {
            (true, Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListExecutionsResponse { executions, next_page_token }))
    }

    async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let p = principal(&req)?;
        self.require(&p, "ListServices", "catalog", READ)?;
        let services = self.registry.catalog().services().iter().map(convert::service).collect();
        Ok(Response::new(pb::ListServicesResponse { services }))
    }

    async fn describe_action(&self, req: Request<pb::DescribeActionRequest>) -> Result<Response<pb::Action>, Status> {
        let p = principal(&req)?;
        let name = req.into_inner().name;
        self.require(&p, "DescribeAction", &format!("action:{name}"), READ)?;
        let catalog = self.registry.catalog();
        let action = catalog.action(&name).ok_or_else(|| {
            let hint = nexus_core::diagnostic::suggest(&name, catalog.action_names())
                .map(|s| format!(" Did you mean `{s}`?"))
                .unwrap_or_default();
            Status::from(ApiError::NotFound(format!("no action `{name}` in the catalog.{hint}")))
        })?;
        Ok(Response::new(convert::action(action)))
    }

    async fn list_pattern_versions(
        &self,
        req: Request<pb::ListPatternVersionsRequest>,
    ) -> Result<Response<pb::ListPatternVersionsResponse>, Status> {
        let p = principal(&req)?;
        let name = req.into_inner().name;
        self.require(&p, "ListPatternVersions", &format!("pattern:{name}"), READ)?;
        let meta = self.visible(&p, "ListPatternVersions", &name).await?;
        let versions = self.registry.store().versions(&name).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListPatternVersionsResponse {
            versions: versions
                .into_iter()
                .map(|v| pb::PatternVersion {
                    version: v.version,
                    deprecated: v.deprecated,
                    deprecation_reason: v.deprecation_reason,
                    registered_at: Some(convert::timestamp(v.registered_at)),
                    executions: v.executions,
                    description: v.description,
                })
                .collect(),
            latest: meta.latest.unwrap_or_default(),
            owner: meta.owner,
            tenant: meta.tenant,
            visibility: meta.visibility,
            forked_from: meta.forked_from.unwrap_or_default(),
            stars: meta.stars,
            name,
        }))
    }

    async fn deprecate_pattern(
        &self,
        req: Request<pb::DeprecatePatternRequest>,
    ) -> Result<Response<pb::DeprecatePatternResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let resource = format!("pattern:{}@{}", r.name, r.version);
        self.require(&p, "DeprecatePattern", &resource, AUTHOR)?;
        self.manageable(&p, "DeprecatePattern", &r.name).await?;
        let latest = self
            .registry
            .store()
            .set_deprecated(&r.name, &r.version, !r.undo, &r.reason)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "pattern `{}` has no version `{}` (ListPatternVersions lists them)",
                    r.name, r.version
                ))
            })?;
        self.registry.reload_name(&r.name).await?;
        tracing::info!(pattern = %r.name, version = %r.version, undo = r.undo, "deprecation changed");
        Ok(Response::new(pb::DeprecatePatternResponse { latest: latest.unwrap_or_default() }))
    }

    async fn diff_patterns(
        &self,
        req: Request<pb::DiffPatternsRequest>,
    ) -> Result<Response<pb::DiffPatternsResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        self.require(&p, "DiffPatterns", &format!("pattern:{}", r.name), READ)?;
        let to_name = if r.to_name.is_empty() { r.name.clone() } else { r.to_name.clone() };
        self.visible(&p, "DiffPatterns", &r.name).await?;
        self.visible(&p, "DiffPatterns", &to_name).await?;
        let before = self.registry.get_fresh(&r.name, &r.from_version).await?.document;
        let after = self.registry.get_fresh(&to_name, &r.to_version).await?.document;
        Ok(Response::new(pb::DiffPatternsResponse { changes: nexus_core::diff::diff(&before, &after) }))
    }

    async fn set_visibility(
        &self,
        req: Request<pb::SetVisibilityRequest>,
    ) -> Result<Response<pb::SetVisibilityResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        self.require(&p, "SetVisibility", &format!("pattern:{}", r.name), AUTHOR)?;
        if !matches!(r.visibility.as_str(), "private" | "tenant" | "public") {
            return Err(Status::invalid_argument(format!(
                "`{}` is not a visibility: use private, tenant or public",
                r.visibility
            )));
        }
        self.manageable(&p, "SetVisibility", &r.name).await?;
        self.registry.store().set_visibility(&r.name, &r.visibility).await.map_err(ApiError::from)?;
        self.registry.reload_name(&r.name).await?;
        tracing::info!(pattern = %r.name, visibility = %r.visibility, "visibility changed");
        Ok(Response::new(pb::SetVisibilityResponse { visibility: r.visibility }))
    }

    async fn fork_pattern(
        &self,
        req: Request<pb::ForkPatternRequest>,
    ) -> Result<Response<pb::RegisterPatternResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        self.require(&p, "ForkPattern", &format!("pattern:{}", r.name), AUTHOR)?;
        if r.new_name.is_empty() {
            return Err(Status::invalid_argument("`new_name` is required: the fork's name"));
        }
        self.visible(&p, "ForkPattern", &r.name).await?;
        let mut doc = self.registry.get_fresh(&r.name, &r.version).await?.document;
        let source = format!("{}@{}", doc.name, doc.version);
        doc.name = r.new_name;
        doc.visibility = "private".into();
        let reg = self.registry.register(doc, &p, Some(source.clone())).await?;
        tracing::info!(pattern = %reg.name, version = %reg.version, from = %source, "pattern forked");
        Ok(Response::new(pb::RegisterPatternResponse {
            pattern_ref: Some(pb::PatternRef { name: reg.name, version: reg.version }),
            diagnostics: reg.warnings.iter().map(pb::Diagnostic::from).collect(),
            created: reg.created,
        }))
    }

    async fn star(&self, req: Request<pb::StarRequest>) -> Result<Response<pb::StarResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        self.require(&p, "Star", &format!("pattern:{}", r.name), READ)?;
        self.visible(&p, "Star", &r.name).await?;
        let stars = self.registry.store().star(&r.name, &p.key(), !r.unstar).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::StarResponse { stars, starred: !r.unstar }))
    }

    async fn query_graph(
        &self,
        req: Request<pb::QueryGraphRequest>,
    ) -> Result<Response<pb::QueryGraphResponse>, Status> {
        let p = principal(&req)?;
        self.require(&p, "QueryGraph", "graph", READ)?;
        let r = req.into_inner();
        let graph = crate::graph::Graph { store: self.registry.store().as_ref(), registry: &self.registry, caller: &p };
        let result = match r.query {
            Some(pb::query_graph_request::Query::Impact(action)) => graph.impact(&action).await?,
            Some(pb::query_graph_request::Query::Lineage(name)) => {
                self.visible(&p, "QueryGraph", &name).await?;
                graph.lineage(&name).await?
            }
            Some(pb::query_graph_request::Query::Neighbourhood(node)) => {
                graph.neighbourhood(&node, r.depth.clamp(1, 3)).await?
            }
            None => return Err(Status::invalid_argument("set one query: impact, lineage or neighbourhood")),
        };
        Ok(Response::new(result))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::Principal>, Status> {
        let p = principal(&req)?;
        Ok(Response::new(pb::Principal {
            tenant: p.tenant.to_string(),
            subject: p.subject.to_string(),
            roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
            authenticated_by: p.via.to_string(),
        }))
    }
}

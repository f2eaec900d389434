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
    convert,
    error::{ApiError, status_with_detail},
    proto::nexus_service_server::NexusService,
    registry::{ListFilter, Registry},
};

/// Metadata (header or trailer) naming the execution an ExecutePattern call ran.
pub const EXECUTION_ID_HEADER: &str = "nexus-execution-id";

pub struct Api {
    registry: Arc<Registry>,
    engine: Engine,
    /// Durable executions outlive the in-memory history: finished ones are read back from here.
    journal: Arc<dyn nexus_store::Journal>,
}

impl Api {
    pub fn new(registry: Arc<Registry>, engine: Engine, journal: Arc<dyn nexus_store::Journal>) -> Self {
        Self { registry, engine, journal }
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
    async fn execute_request(&self, req: Request<pb::ExecutePatternRequest>) -> Result<ExecuteRequest, Status> {
        let deadline = deadline(&req);
        let traceparent = traceparent(&req);
        let r = req.into_inner();
        if r.pattern_name.is_empty() {
            return Err(Status::invalid_argument("`pattern_name` is required"));
        }
        let pattern = self.registry.executable_fresh(&r.pattern_name, &r.version).await?;
        let input = match &r.input {
            Some(s) => value::struct_to_cel(s),
            None => value::map(Default::default()),
        };
        Ok(ExecuteRequest {
            pattern,
            input,
            deadline,
            idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key),
            traceparent,
        })
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
        let pattern = pattern_of(req.into_inner().pattern)?;
        let r = self.registry.register(pattern).await?;
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
        let pattern = pattern_of(req.into_inner().pattern)?;
        let (valid, diags) = match self.registry.validate(&pattern) {
            Ok(w) => (true, w),
            Err(d) => (false, d),
        };
        Ok(Response::new(pb::ValidatePatternResponse {
            valid,
            diagnostics: diags.iter().map(pb::Diagnostic::from).collect(),
        }))
    }

    async fn get_pattern(&self, req: Request<pb::GetPatternRequest>) -> Result<Response<pb::Pattern>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.registry.get_fresh(&r.name, &r.version).await?.document))
    }

    async fn list_patterns(
        &self,
        req: Request<pb::ListPatternsRequest>,
    ) -> Result<Response<pb::ListPatternsResponse>, Status> {
        let r = req.into_inner();
        let all = self.registry.list(&ListFilter { query: r.query, owner: r.owner, tag: r.tag });
        let start: usize = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse().map_err(|_| Status::invalid_argument("invalid page_token"))?
        };
        let size = page_size(r.page_size);
        let end = (start + size).min(all.len());
        let patterns = all.get(start..end).map(<[_]>::to_vec).unwrap_or_default();
        let next_page_token = if end < all.len() { end.to_string() } else { String::new() };
        Ok(Response::new(pb::ListPatternsResponse { patterns, next_page_token }))
    }

    async fn execute_pattern(
        &self,
        req: Request<pb::ExecutePatternRequest>,
    ) -> Result<Response<pb::ExecutePatternResponse>, Status> {
        let request = self.execute_request(req).await?;
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
        let request = self.execute_request(req).await?;
        self.engine.check_input(&request).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let engine = self.engine.clone();
        // The execution runs on its own task; when the caller goes away the stream (and `rx`) is
        // dropped, the engine notices and cancels the execution and its backend calls.
        tokio::spawn(async move {
            let _ = engine.execute_observed(request, tx).await;
        });
        let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(|e| Ok(convert::event(&e)));
        Ok(Response::new(Box::pin(events)))
    }

    type WatchExecutionStream = EventStream;

    async fn watch_execution(
        &self,
        req: Request<pb::WatchExecutionRequest>,
    ) -> Result<Response<Self::WatchExecutionStream>, Status> {
        let id = req.into_inner().execution_id;
        let not_found = || Status::not_found(format!("no execution `{id}`"));
        let Some(running) = self.engine.running(&id) else {
            let record = self.engine.history().get(&id).ok_or_else(not_found)?;
            return Ok(Response::new(finished_stream(&record)));
        };
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
        let r = req.into_inner();
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
        let id = req.into_inner().execution_id;
        match self.find_execution(&id).await? {
            Some(e) => Ok(Response::new(e)),
            None if self.engine.running(&id).is_some() => Err(Status::failed_precondition(format!(
                "execution `{id}` is still running (WatchExecution follows it live)"
            ))),
            None => match self.find_running_elsewhere(&id).await? {
                Some(e) => Ok(Response::new(e)),
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
        let r = req.into_inner();
        let filter = HistoryFilter {
            pattern_name: (!r.pattern_name.is_empty()).then_some(r.pattern_name),
            status: convert::status_from_pb(r.status),
            before: (!r.page_token.is_empty()).then_some(r.page_token),
            limit: page_size(r.page_size),
        };
        let (records, more) = self.engine.history().list(&filter);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListExecutionsResponse {
            executions: records.iter().map(|r| convert::execution(r, false)).collect(),
            next_page_token,
        }))
    }

    async fn list_services(
        &self,
        _req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let services = self.registry.catalog().services().iter().map(convert::service).collect();
        Ok(Response::new(pb::ListServicesResponse { services }))
    }

    async fn describe_action(&self, req: Request<pb::DescribeActionRequest>) -> Result<Response<pb::Action>, Status> {
        let name = req.into_inner().name;
        let catalog = self.registry.catalog();
        let action = catalog.action(&name).ok_or_else(|| {
            let hint = nexus_core::diagnostic::suggest(&name, catalog.action_names())
                .map(|s| format!(" Did you mean `{s}`?"))
                .unwrap_or_default();
            Status::from(ApiError::NotFound(format!("no action `{name}` in the catalog.{hint}")))
        })?;
        Ok(Response::new(convert::action(action)))
    }
}

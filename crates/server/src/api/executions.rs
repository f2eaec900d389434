//! Execution RPCs: run (unary and streamed), watch, cancel, read and list executions.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use nexus_core::{pb, value};
use nexus_engine::{Event, ExecuteRequest, ExecutionEvent, ExecutionStatus, HistoryFilter};
use tonic::{Request, Response, Status};

use super::{
    Api,
    access::{Asking, READ, RUN, not_found_execution},
    metadata, page_size, principal,
};
use crate::{convert, error::ApiError};

/// Events buffered between an execution and its ExecutePatternStream caller. Small on purpose:
/// it is what lets a slow reader hold back the execution (and the backend streams it forwards).
pub const STREAM_BUFFER: usize = 16;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExecutionEvent, Status>> + Send>>;

fn finished_stream(record: &nexus_engine::ExecutionRecord) -> EventStream {
    let event = ExecutionEvent {
        execution_id: record.id.clone(),
        time: std::time::SystemTime::now(),
        event: Event::Finished(Arc::new(record.clone())),
    };
    Box::pin(futures::stream::once(async move { Ok(convert::event(&event)) }))
}

impl Api {
    /// The engine's request (its input checked against the pattern), and the caller's slot among
    /// their executions in flight (held until the execution ends).
    async fn execute_request(
        &self,
        req: Request<pb::ExecutePatternRequest>,
        rpc: &'static str,
    ) -> Result<(nexus_engine::CheckedRequest, crate::limits::Slot), ApiError> {
        let p = principal(&req)?;
        let deadline = metadata::deadline(&req);
        let traceparent = metadata::traceparent(&req);
        let tracestate = metadata::tracestate(&req);
        let r = req.into_inner();
        if r.pattern_name.is_empty() {
            return Err(ApiError::InvalidArgument("`pattern_name` is required".into()));
        }
        self.access.executable(Asking { caller: &p, rpc }, &r.pattern_name).await?;
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
            tracestate,
            tenant: p.tenant.clone(),
        };
        Ok((self.engine.check(request)?, slot))
    }

    pub(crate) async fn execute_pattern(
        &self,
        req: Request<pb::ExecutePatternRequest>,
    ) -> Result<Response<pb::ExecutePatternResponse>, ApiError> {
        let (request, _slot) = self.execute_request(req, "ExecutePattern").await?;
        let record = self.engine.run_checked(request, None).await?;
        let response = convert::response(&record);
        // Waiting for an event (parked in the journal) is not a failure: RUNNING, and the id to
        // follow it with GetExecution / WatchExecution.
        let waiting = record.status == ExecutionStatus::Running && record.error.is_none();
        if record.status != ExecutionStatus::Succeeded && !waiting {
            let error = record.error.clone().unwrap_or_else(|| nexus_engine::ExecError {
                code: tonic::Code::Unknown,
                message: "the execution did not succeed".into(),
                step_id: None,
            });
            return Err(ApiError::Execution { error, response: Box::new(response) });
        }
        let mut resp = Response::new(response);
        if let Ok(mut id) = http::HeaderValue::from_str(&record.id) {
            // New on every response: an HPACK literal no table indexes (see the invoker's
            // `http_request`).
            id.set_sensitive(true);
            resp.metadata_mut().as_mut().insert(crate::headers::EXECUTION_ID, id);
        }
        Ok(resp)
    }

    pub(super) async fn execute_pattern_stream(
        &self,
        req: Request<pb::ExecutePatternRequest>,
    ) -> Result<EventStream, ApiError> {
        let (request, slot) = self.execute_request(req, "ExecutePatternStream").await?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let engine = self.engine.clone();
        // The execution runs on its own task; when the caller goes away the stream (and `rx`) is
        // dropped, the engine notices and cancels the execution and its backend calls.
        self.tasks.spawn(async move {
            if let Err(e) = engine.run_checked(request, Some(tx)).await {
                tracing::warn!("streamed execution not run: {e}");
            }
            drop(slot);
        });
        let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(|e| Ok(convert::event(&e)));
        Ok(Box::pin(events))
    }

    pub(super) async fn watch_execution(
        &self,
        req: Request<pb::WatchExecutionRequest>,
    ) -> Result<EventStream, ApiError> {
        let p = principal(&req)?;
        let id = req.into_inner().execution_id;
        let asking = Asking { caller: &p, rpc: "WatchExecution" };
        self.access.require(asking, &format!("execution:{id}"), READ)?;
        let Some(running) = self.engine.running(&id) else {
            let record = self.engine.history().get(&id).ok_or_else(|| not_found_execution(&id))?;
            self.access.own_execution(asking, &id, &record.tenant)?;
            return Ok(finished_stream(&record));
        };
        self.access.own_execution(asking, &id, &running.tenant)?;
        let rx = running.subscribe();
        // It may have finished between the lookup and the subscription: then the history has it.
        if let Some(record) = self.engine.history().get(&id) {
            return Ok(finished_stream(&record));
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
        Ok(Box::pin(events))
    }

    pub(super) async fn cancel_execution(
        &self,
        req: Request<pb::CancelExecutionRequest>,
    ) -> Result<pb::CancelExecutionResponse, ApiError> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let asking = Asking { caller: &p, rpc: "CancelExecution" };
        self.access.require(asking, &format!("execution:{}", r.execution_id), RUN)?;
        if let Some(running) = self.engine.running(&r.execution_id) {
            self.access.own_execution(asking, &r.execution_id, &running.tenant)?;
        } else if let Some(record) = self.engine.history().get(&r.execution_id) {
            self.access.own_execution(asking, &r.execution_id, &record.tenant)?;
        }
        if self.engine.cancel(&r.execution_id) {
            tracing::info!(execution = %r.execution_id, reason = %r.reason, "execution cancelled");
            return Ok(pb::CancelExecutionResponse { cancelled: true });
        }
        // Not running on this replica: a durable execution waiting for events (parked in the
        // store, or on another replica) is cancelled through its waits.
        let waits = self.events.waits_of(&r.execution_id).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
        if let Some(w) = waits.first() {
            self.access.own_execution(asking, &r.execution_id, &w.tenant)?;
            if self.events.cancel_waiting(&waits, &r.reason).await.map_err(|e| ApiError::Unavailable(e.to_string()))? {
                tracing::info!(execution = %r.execution_id, reason = %r.reason, "waiting execution cancelled");
                return Ok(pb::CancelExecutionResponse { cancelled: true });
            }
        }
        match self.engine.history().get(&r.execution_id) {
            Some(_) => Ok(pb::CancelExecutionResponse { cancelled: false }),
            None => Err(not_found_execution(&r.execution_id)),
        }
    }

    /// An execution from the history, or (durable ones, after a restart) from the journal.
    async fn find_execution(&self, id: &str) -> Result<Option<pb::Execution>, ApiError> {
        if let Some(r) = self.engine.history().get(id) {
            return Ok(Some(convert::execution(&r, true)));
        }
        let finished = self.journal.finished_execution(id).await?;
        Ok(finished.and_then(|f| convert::execution_from_journal(&f.record)))
    }

    pub(super) async fn get_execution(&self, req: Request<pb::GetExecutionRequest>) -> Result<pb::Execution, ApiError> {
        let p = principal(&req)?;
        let id = req.into_inner().execution_id;
        let asking = Asking { caller: &p, rpc: "GetExecution" };
        self.access.require(asking, &format!("execution:{id}"), READ)?;
        if let Some(running) = self.engine.running(&id) {
            self.access.own_execution(asking, &id, &running.tenant)?;
        }
        if let Some(e) = self.find_execution(&id).await? {
            self.access.own_execution(asking, &id, &e.tenant)?;
            return Ok(e);
        }
        if let Some(running) = self.engine.running(&id)
            && !running.durable
        {
            // Ephemeral, running here: what it is and since when; its steps arrive with
            // WatchExecution, and the whole record once it finishes.
            let (pattern_name, pattern_version) = running.pattern.clone().unwrap_or_default();
            return Ok(pb::Execution {
                id: id.clone(),
                pattern_name: pattern_name.to_string(),
                pattern_version: pattern_version.to_string(),
                status: pb::ExecutionStatus::Running as i32,
                started_at: Some(convert::timestamp(running.started_at)),
                tenant: running.tenant.to_string(),
                ..Default::default()
            });
        }
        // A durable execution still running on another replica (or waiting to be taken over
        // after a replica left): its journaled progress so far.
        match self.journal.unfinished_execution(&id).await? {
            Some(u) => {
                let e = convert::running_from_journal(&u);
                self.access.own_execution(asking, &id, &e.tenant)?;
                Ok(e)
            }
            None => match self.find_execution(&id).await? {
                // It finished between the first look and this one.
                Some(e) => {
                    self.access.own_execution(asking, &id, &e.tenant)?;
                    Ok(e)
                }
                None => Err(ApiError::NotFound(format!(
                    "no execution `{id}` (ephemeral executions are kept in memory: the most recent ones, until restart)"
                ))),
            },
        }
    }

    pub(super) async fn list_executions(
        &self,
        req: Request<pb::ListExecutionsRequest>,
    ) -> Result<pb::ListExecutionsResponse, ApiError> {
        let p = principal(&req)?;
        self.access.require(Asking { caller: &p, rpc: "ListExecutions" }, "executions", READ)?;
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
            status: filter.status.map(|s| s.as_str().to_string()),
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
        Ok(pb::ListExecutionsResponse { executions, next_page_token })
    }
}

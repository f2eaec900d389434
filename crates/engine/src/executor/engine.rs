//! The [`Engine`]: where executions enter (execute, observe, resume), the registry of the ones
//! running here (for watch, cancel and lease renewal), and the hand-over at shutdown.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use cel::Value as Cel;
use nexus_core::{CompiledPattern, plan::Durability, value};
use tokio::{sync::mpsc, time::Instant};
use tonic::Code;
use tracing::Instrument as _;

use super::{
    keyed::{Keyed, KeyedExecutions},
    run::{Run, RunOptions, Services},
    sooner,
};
use crate::{
    bus::EventHub,
    events::{Emitter, Event, ExecutionEvent, RunningExecution},
    history::History,
    invoker::Invoker,
    journal::{Journal, JournalError, JournalStart, decode_result},
    record::{ExecError, ExecutionRecord, ExecutionStatus, StepResponse},
    waits::LocalWaits,
};

/// Runs patterns. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Engine {
    invoker: Arc<dyn Invoker>,
    history: Arc<History>,
    journal: Option<Arc<dyn Journal>>,
    running: Arc<Mutex<HashMap<Arc<str>, Arc<RunningExecution>>>>,
    keyed: Arc<KeyedExecutions>,
    /// Set by [`Engine::suspend_durable`]: this process is leaving, durable executions are for
    /// other replicas now.
    closing: Arc<AtomicBool>,
    hub: Option<Arc<dyn EventHub>>,
    waits: Arc<LocalWaits>,
    cel: nexus_core::expr::CostLimits,
    observer: Option<Arc<dyn crate::Observer>>,
}

/// One request to run a pattern.
pub struct ExecuteRequest {
    pub pattern: Arc<CompiledPattern>,
    pub input: Cel,
    /// The caller's deadline; the pattern's own timeout applies too, whichever is sooner.
    pub deadline: Option<std::time::Instant>,
    pub idempotency_key: Option<String>,
    /// The caller's W3C `traceparent`: the execution's span is its child, and every backend
    /// call continues the trace.
    pub traceparent: Option<String>,
    /// The caller's W3C `tracestate`, passed on to the backends.
    pub tracestate: Option<String>,
    /// The caller's tenant: the execution is recorded as theirs (an opaque label to the engine).
    pub tenant: Arc<str>,
}

/// A request whose input matched the pattern's input schema ([`Engine::check`]): checked once,
/// whichever path runs it.
pub struct CheckedRequest(pub(super) ExecuteRequest);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the input does not match the pattern's input schema: {}", describe(.0))]
    InvalidInput(Vec<(String, String)>),
    /// The key was used for this pattern by another tenant: their execution is not ours to show,
    /// and running a new one would collide with it.
    #[error("this idempotency key is already used for pattern `{pattern}`; choose another key")]
    IdempotencyKeyTaken { pattern: Arc<str> },
    /// Looking the idempotency key up in the journal failed.
    #[error("looking up the idempotency key: {0}")]
    Journal(JournalError),
}

fn describe(problems: &[(String, String)]) -> String {
    problems.iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; ")
}

/// Removes a running execution from the registry however its future ends (even when dropped).
struct Registration<'a> {
    engine: &'a Engine,
    id: Arc<str>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.engine.lock_running().remove(&self.id);
    }
}

impl Engine {
    pub fn new(invoker: Arc<dyn Invoker>, history: Arc<History>) -> Self {
        let keyed = Arc::new(KeyedExecutions::new(history.capacity()));
        Self {
            invoker,
            history,
            journal: None,
            running: Arc::default(),
            keyed,
            closing: Arc::default(),
            hub: None,
            waits: Arc::default(),
            cel: nexus_core::expr::CostLimits::DEFAULT,
            observer: None,
        }
    }

    /// Tells `observer` of every finished execution (metrics, traces).
    pub fn with_observer(mut self, observer: Arc<dyn crate::Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Executions running in this process now (suspended and parked ones excluded).
    pub fn in_flight(&self) -> usize {
        self.lock_running().len()
    }

    /// What CEL evaluation may cost, per expression and per execution (default
    /// [`CostLimits::DEFAULT`](nexus_core::expr::CostLimits::DEFAULT)).
    pub fn with_cel_limits(mut self, limits: nexus_core::expr::CostLimits) -> Self {
        self.cel = limits;
        self
    }

    /// Events: `emit` steps publish through `hub`, `wait_for` steps register there.
    pub fn with_events(mut self, hub: Arc<dyn EventHub>) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Hands a wait's journaled result to the execution waiting here, if one is; false when none
    /// is (it is parked, or runs elsewhere and reads the journal when it parks).
    pub fn deliver_wait(&self, execution_id: &str, step_id: &str, result: String) -> bool {
        self.waits.deliver(execution_id, step_id, result)
    }

    /// Journals durable patterns' executions here (without a journal, durable patterns run as
    /// ephemeral ones would).
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    fn lock_running(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<RunningExecution>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A running execution (for WatchExecution and CancelExecution).
    pub fn running(&self, id: &str) -> Option<Arc<RunningExecution>> {
        self.lock_running().get(id).cloned()
    }

    /// Ids of the durable executions running here (their leases are this process's to renew).
    pub fn running_durable(&self) -> Vec<Arc<str>> {
        self.lock_running().values().filter(|r| r.durable).map(|r| r.id.clone()).collect()
    }

    /// Graceful shutdown: stops every durable execution running here where it is, without an
    /// outcome (they stay unfinished in the journal, for another replica to continue from the
    /// last journaled step), and refuses new durable executions. Ephemeral executions are not
    /// touched: they finish here. Returns how many were stopped.
    pub fn suspend_durable(&self) -> usize {
        self.closing.store(true, Ordering::Release);
        let running: Vec<_> = self.lock_running().values().filter(|r| r.durable).cloned().collect();
        running.iter().filter(|r| r.request_suspend()).count()
    }

    /// Cancels a running execution; false when it is not running (finished or unknown).
    pub fn cancel(&self, id: &str) -> bool {
        self.running(id).is_some_and(|r| r.request_cancel())
    }

    /// Checks the input against the pattern's input schema, once for every path that runs it.
    pub fn check(&self, mut req: ExecuteRequest) -> Result<CheckedRequest, EngineError> {
        if !req.pattern.input.is_empty() {
            let problems = req.pattern.input.validate(&req.input);
            if !problems.is_empty() {
                return Err(EngineError::InvalidInput(problems));
            }
            req.input = req.pattern.input.coerce(std::mem::replace(&mut req.input, Cel::Null));
        }
        Ok(CheckedRequest(req))
    }

    /// Runs an execution to its end and records it in the history. With an idempotency key
    /// already used for this pattern (here, or in the journal by any replica), returns the first
    /// execution's record instead, waiting for it if it runs here.
    pub async fn execute(&self, req: ExecuteRequest) -> Result<Arc<ExecutionRecord>, EngineError> {
        let checked = self.check(req)?;
        self.run_checked(checked, None).await
    }

    /// Like [`Engine::execute`], sending every event to `events` as it happens. The channel is
    /// bounded: a slow reader slows the execution (and the backend streams it forwards). When the
    /// receiver is dropped the execution is cancelled. A request whose key names an earlier
    /// execution gets that execution's `Finished` event only.
    pub async fn execute_observed(
        &self,
        req: ExecuteRequest,
        events: mpsc::Sender<ExecutionEvent>,
    ) -> Result<Arc<ExecutionRecord>, EngineError> {
        let checked = self.check(req)?;
        self.run_checked(checked, Some(events)).await
    }

    /// Runs a checked request, observed or not: the one path every execution takes.
    pub async fn run_checked(
        &self,
        CheckedRequest(req): CheckedRequest,
        observer: Option<mpsc::Sender<ExecutionEvent>>,
    ) -> Result<Arc<ExecutionRecord>, EngineError> {
        let Some(key) = req.idempotency_key.clone() else {
            return Ok(self.run(req, observer, Resumed::No).await);
        };
        let pattern = req.pattern.clone();
        let durable = pattern.durability == Durability::Durable;
        let slot = self.keyed.slot(&pattern.name, &key, &req.tenant)?;
        let waiter = observer.clone();
        let ran_here = AtomicBool::new(false);
        let ran = &ran_here;
        let (name, k) = (&pattern.name, &key);
        let record = slot
            .get_or_try_init(|| async move {
                // First here with this key: the journal may know it from before a restart or
                // from another replica.
                if let (true, Some(journal)) = (durable, &self.journal) {
                    match journal.keyed(name, k).await.map_err(EngineError::Journal)? {
                        Some(Keyed::Finished(record)) if record.tenant != req.tenant => {
                            return Err(EngineError::IdempotencyKeyTaken { pattern: name.clone() });
                        }
                        Some(Keyed::Finished(record)) => return Ok(record),
                        Some(Keyed::Unfinished { tenant, .. }) if tenant != req.tenant => {
                            return Err(EngineError::IdempotencyKeyTaken { pattern: name.clone() });
                        }
                        Some(Keyed::Unfinished { id, .. }) => return Ok(Arc::new(running_elsewhere(&req, id))),
                        None => {}
                    }
                }
                ran.store(true, Ordering::Relaxed);
                Ok(self.run(req, observer, Resumed::No).await)
            })
            .await?
            .clone();
        if record.status == ExecutionStatus::Running {
            // Suspended here, or running elsewhere: the journal answers for the key from now on.
            self.keyed.forget(&pattern.name, &key);
        }
        if !ran_here.load(Ordering::Relaxed)
            && let Some(tx) = waiter
        {
            let event = ExecutionEvent {
                execution_id: record.id.clone(),
                time: std::time::SystemTime::now(),
                event: Event::Finished(record.clone()),
            };
            let _ = tx.send(event).await;
        }
        Ok(record)
    }

    /// Resumes a durable execution from its journal after a restart: journaled steps keep their
    /// results and are not called again; the others run (a step that was in flight is called
    /// again with the same idempotency key). The deadline restarts from now. A request with the
    /// execution's idempotency key waits for it.
    pub async fn resume(&self, resumption: Resumption, completed: &[(String, String)]) -> Arc<ExecutionRecord> {
        let Resumption { pattern, id, input, idempotency_key, tenant, trace } = resumption;
        let mut prefilled: Vec<Option<StepResponse>> = pattern.steps.iter().map(|_| None).collect();
        for (step_id, result) in completed {
            let Some(step) = pattern.steps.iter().find(|s| &*s.id == step_id) else {
                tracing::warn!(execution = %id, step = %step_id, "journaled step is not in the pattern; ignored");
                continue;
            };
            match decode_result(result, &step.target) {
                Ok(r) => prefilled[step.index] = Some(r),
                Err(e) => {
                    tracing::warn!(execution = %id, step = %step_id, "undecodable journal entry ({e}); the step runs again")
                }
            }
        }
        let req = ExecuteRequest {
            pattern: pattern.clone(),
            input,
            deadline: None,
            idempotency_key: idempotency_key.clone(),
            traceparent: None,
            tracestate: None,
            tenant: tenant.clone(),
        };
        // The journaled context: the execution stays the span it was, in its caller's trace.
        let trace = crate::trace::TraceContext::from_journal(&trace);
        let resumed = Resumed::Yes { id, prefilled, trace };
        let Some(key) = idempotency_key else { return self.run(req, None, resumed).await };
        let slot = match self.keyed.slot(&pattern.name, &key, &tenant) {
            Ok(slot) => slot,
            // The key's slot is another tenant's: impossible for a journaled key (the journal
            // holds one execution per key); run without attaching waiters.
            Err(_) => return self.run(req, None, resumed).await,
        };
        let record = slot.get_or_init(|| self.run(req, None, resumed)).await.clone();
        if record.status == ExecutionStatus::Running {
            self.keyed.forget(&pattern.name, &key);
        }
        record
    }

    async fn run(
        &self,
        req: ExecuteRequest,
        observer: Option<mpsc::Sender<ExecutionEvent>>,
        resumed: Resumed,
    ) -> Arc<ExecutionRecord> {
        let deadline = sooner(req.deadline.map(Instant::from_std), req.pattern.timeout);
        let uuid = uuid::Uuid::now_v7();
        let (id, prefilled, resuming, journaled_trace) = match resumed {
            Resumed::Yes { id, prefilled, trace } => (id, prefilled, true, trace),
            Resumed::No => {
                (Arc::from(uuid.simple().to_string()), req.pattern.steps.iter().map(|_| None).collect(), false, None)
            }
        };
        let journal = match req.pattern.durability {
            Durability::Durable => self.journal.as_deref(),
            Durability::Ephemeral => None,
        };
        let running = Arc::new(
            RunningExecution::new(id.clone(), journal.is_some(), req.tenant.clone())
                .with_pattern(req.pattern.name.clone(), req.pattern.version.clone()),
        );
        self.lock_running().insert(id.clone(), running.clone());
        let registration = Registration { engine: self, id: id.clone() };
        let trace = Arc::new(journaled_trace.unwrap_or_else(|| {
            crate::trace::TraceContext::start(req.traceparent.as_deref(), req.tracestate.as_deref())
        }));
        // Every log line of the execution carries these (and JSON logs show them as fields).
        let span = tracing::info_span!(
            "execution",
            id = %id,
            pattern = %req.pattern.name,
            version = %req.pattern.version,
            trace_id = %format_args!("{:032x}", trace.trace_id),
        );
        let emitter = Emitter { running, direct: observer };
        // Not journaled yet, so nothing to hand over: the caller retries on another replica.
        let refused = (journal.is_some() && !resuming && self.closing.load(Ordering::Acquire)).then(|| ExecError {
            code: Code::Unavailable,
            message:
                "this Nexus replica is shutting down and takes no new durable executions; retry on another replica"
                    .into(),
            step_id: None,
        });
        let journal_start = journal.filter(|_| !resuming && refused.is_none()).map(|_| JournalStart {
            id: id.clone(),
            pattern_name: req.pattern.name.clone(),
            pattern_version: req.pattern.version.clone(),
            input: value::cel_to_json_string(&req.input),
            idempotency_key: req.idempotency_key.clone(),
            tenant: req.tenant.clone(),
            trace: trace.to_journal(),
        });
        let journals_end = journal.is_some() && refused.is_none();
        let run = Run::new(RunOptions {
            pattern: &req.pattern,
            services: Services {
                invoker: self.invoker.as_ref(),
                history: &self.history,
                hub: self.hub.as_deref(),
                waits: &self.waits,
                cel: self.cel,
                observer: self.observer.as_deref(),
            },
            id,
            input: req.input,
            deadline,
            emitter: emitter.clone(),
            trace,
            depth: 0,
            journal,
            journal_start,
            refused,
            prefilled,
        });
        let mut record = run.go().instrument(span.clone()).await;
        span.in_scope(|| {
            let took = u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX);
            tracing::debug!(status = record.status.as_str(), duration_us = took, "execution ended");
        });
        record.idempotency_key = req.idempotency_key;
        let suspended = record.status == ExecutionStatus::Running;
        if suspended {
            tracing::info!(execution = %record.id, "durable execution suspended here; it continues where it is claimed next");
        } else if let Some(j) = journal.filter(|_| journals_end)
            && let Err(e) = j.finished(&record).await
        {
            tracing::error!(execution = %record.id, "journaling the end of the execution: {e}");
        }
        let record = Arc::new(record);
        if !suspended {
            self.history.insert(record.clone());
            if let Some(o) = &self.observer {
                o.finished(&record);
            }
        }
        // Deregistered before the last event: from here on CancelExecution says "already
        // finished", and watchers hold their own receivers.
        drop(registration);
        emitter.emit(Event::Finished(record.clone())).await;
        record
    }
}

/// Whether a run continues a journaled execution.
enum Resumed {
    No,
    Yes { id: Arc<str>, prefilled: Vec<Option<StepResponse>>, trace: Option<crate::trace::TraceContext> },
}

/// A durable execution to resume ([`Engine::resume`]), as its journal holds it.
pub struct Resumption {
    pub pattern: Arc<CompiledPattern>,
    pub id: Arc<str>,
    pub input: Cel,
    pub idempotency_key: Option<String>,
    pub tenant: Arc<str>,
    /// Its journaled trace context ([`crate::trace::TraceContext::to_journal`]); empty or
    /// malformed, the execution resumes in a new trace.
    pub trace: String,
}

/// The answer for a key whose execution is journaled as unfinished and does not run here: it runs
/// on another replica, or waits to be taken over. Shaped like a suspended execution (RUNNING,
/// UNAVAILABLE naming it), so the caller retries or follows it with GetExecution.
fn running_elsewhere(req: &ExecuteRequest, id: Arc<str>) -> ExecutionRecord {
    let message = format!(
        "execution `{id}` with this idempotency key is still running (on another replica, or waiting to be \
         resumed); retry, or GetExecution `{id}` returns its result"
    );
    ExecutionRecord {
        tenant: req.tenant.clone(),
        pattern_name: req.pattern.name.clone(),
        pattern_version: req.pattern.version.clone(),
        status: ExecutionStatus::Running,
        input: Cel::Null.into(),
        output: None,
        error: Some(ExecError { code: Code::Unavailable, message, step_id: None }),
        started_at: std::time::SystemTime::now(),
        duration: std::time::Duration::ZERO,
        steps: Vec::new(),
        idempotency_key: req.idempotency_key.clone(),
        trace: None,
        id,
    }
}

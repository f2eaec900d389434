//! The executor: runs one pattern execution as a DAG of step futures.
//!
//! A step starts the moment its last dependency finishes (or is skipped); independent steps run
//! concurrently on the execution's task. The first step that fails for good fails the execution:
//! the steps still in flight are dropped, which cancels their gRPC calls, and the completed steps
//! that declare `compensate` are compensated in reverse order of completion.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use cel::{Value as Cel, objects::Key};
use futures::{StreamExt, stream::FuturesUnordered};
use nexus_core::{
    CompiledPattern, CompiledStep, Target,
    expr::Scope,
    plan::Durability,
    value::{self, message_to_cel},
};
use prost_reflect::DynamicMessage;
use rand::Rng;
use tokio::{sync::mpsc, time::Instant};
use tonic::Code;

use crate::{
    events::{Emitter, Ending, Event, ExecutionEvent, RunningExecution},
    history::History,
    invoker::{Call, CallError, Invoker},
    journal::{Journal, JournalStart, decode_result, encode_result},
    record::{
        Attempt, CompensationRecord, ExecError, ExecutionRecord, ExecutionStatus, StepRecord, StepResponse, StepStatus,
    },
};

/// Most messages a streaming step collects when it is not forwarded (`stream: false`).
pub const MAX_COLLECTED_STREAM_MESSAGES: usize = 10_000;
/// Most items a for_each step fans out to.
pub const MAX_FAN_OUT: usize = 10_000;
/// Deepest nesting of sub-pattern calls.
pub const MAX_PATTERN_DEPTH: u32 = 8;
/// Time a compensation call gets when its step declares no timeout.
pub const DEFAULT_COMPENSATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs patterns. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Engine {
    invoker: Arc<dyn Invoker>,
    history: Arc<History>,
    journal: Option<Arc<dyn Journal>>,
    running: Arc<Mutex<HashMap<Arc<str>, Arc<RunningExecution>>>>,
    idempotency: Arc<Mutex<Idempotency>>,
    /// Set by [`Engine::suspend_durable`]: this process is leaving, durable executions are for
    /// other replicas now.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

/// (pattern name, idempotency key).
type IdempotencyKey = (Arc<str>, String);
/// Set once by the first execution with a key; later requests with the key wait on it.
type FirstExecution = Arc<tokio::sync::OnceCell<Arc<ExecutionRecord>>>;

/// Executions by (pattern, idempotency key), bounded like the history.
#[derive(Default)]
struct Idempotency {
    cells: HashMap<IdempotencyKey, FirstExecution>,
    order: VecDeque<IdempotencyKey>,
}

/// One request to run a pattern.
pub struct ExecuteRequest {
    pub pattern: Arc<CompiledPattern>,
    pub input: Cel,
    /// The caller's deadline; the pattern's own timeout applies too, whichever is sooner.
    pub deadline: Option<std::time::Instant>,
    pub idempotency_key: Option<String>,
    /// The caller's W3C `traceparent`, continued by every backend call.
    pub traceparent: Option<String>,
    /// The caller's tenant: the execution is recorded as theirs (an opaque label to the engine).
    pub tenant: Arc<str>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the input does not match the pattern's input schema: {}", describe(.0))]
    InvalidInput(Vec<(String, String)>),
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
        Self {
            invoker,
            history,
            journal: None,
            running: Arc::default(),
            idempotency: Arc::default(),
            closing: Arc::default(),
        }
    }

    /// Journals durable patterns' executions here (without a journal, durable patterns run as
    /// ephemeral ones would).
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Resumes a durable execution from its journal after a restart: journaled steps keep their
    /// results and are not called again; the others run (a step that was in flight is called
    /// again with the same idempotency key). The deadline restarts from now.
    pub async fn resume(
        &self,
        pattern: Arc<CompiledPattern>,
        id: Arc<str>,
        input: Cel,
        idempotency_key: Option<String>,
        tenant: Arc<str>,
        completed: &[(String, String)],
    ) -> Arc<ExecutionRecord> {
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
        let req = ExecuteRequest { pattern, input, deadline: None, idempotency_key, traceparent: None, tenant };
        self.run_with(req, None, Some(id), prefilled).await
    }

    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<RunningExecution>>> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        self.closing.store(true, std::sync::atomic::Ordering::Release);
        let running: Vec<_> = self.lock_running().values().filter(|r| r.durable).cloned().collect();
        running.iter().filter(|r| r.request_suspend()).count()
    }

    /// Cancels a running execution; false when it is not running (finished or unknown).
    pub fn cancel(&self, id: &str) -> bool {
        self.running(id).is_some_and(|r| r.request_cancel())
    }

    /// Runs an execution to its end and records it in the history. With an idempotency key
    /// already used for this pattern, returns the first execution's record instead (waiting for
    /// it if it is still running).
    pub async fn execute(&self, req: ExecuteRequest) -> Result<Arc<ExecutionRecord>, EngineError> {
        self.check_input(&req)?;
        let Some(key) = req.idempotency_key.clone() else {
            return Ok(self.run(req, None).await);
        };
        let k = (req.pattern.name.clone(), key);
        let cell = {
            let mut idem = self.idempotency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match idem.cells.get(&k) {
                Some(c) => c.clone(),
                None => {
                    let c = Arc::new(tokio::sync::OnceCell::new());
                    idem.cells.insert(k.clone(), c.clone());
                    idem.order.push_back(k.clone());
                    while idem.order.len() > self.history.capacity() {
                        if let Some(old) = idem.order.pop_front() {
                            idem.cells.remove(&old);
                        }
                    }
                    c
                }
            }
        };
        let record = cell.get_or_init(|| self.run(req, None)).await.clone();
        if record.status == ExecutionStatus::Running {
            // Suspended here: the execution continues elsewhere and the journal answers for the
            // key from now on.
            self.idempotency.lock().unwrap_or_else(std::sync::PoisonError::into_inner).cells.remove(&k);
        }
        Ok(record)
    }

    /// Like [`Engine::execute`], sending every event to `events` as it happens. The channel is
    /// bounded: a slow reader slows the execution (and the backend streams it forwards). When the
    /// receiver is dropped the execution is cancelled.
    pub async fn execute_observed(
        &self,
        req: ExecuteRequest,
        events: mpsc::Sender<ExecutionEvent>,
    ) -> Result<Arc<ExecutionRecord>, EngineError> {
        self.check_input(&req)?;
        Ok(self.run(req, Some(events)).await)
    }

    /// Checks the input against the pattern's input schema (also done by `execute`).
    pub fn check_input(&self, req: &ExecuteRequest) -> Result<(), EngineError> {
        if !req.pattern.input.is_empty() {
            let problems = req.pattern.input.validate(&req.input);
            if !problems.is_empty() {
                return Err(EngineError::InvalidInput(problems));
            }
        }
        Ok(())
    }

    async fn run(&self, req: ExecuteRequest, direct: Option<mpsc::Sender<ExecutionEvent>>) -> Arc<ExecutionRecord> {
        let prefilled = req.pattern.steps.iter().map(|_| None).collect();
        self.run_with(req, direct, None, prefilled).await
    }

    async fn run_with(
        &self,
        req: ExecuteRequest,
        direct: Option<mpsc::Sender<ExecutionEvent>>,
        resumed_id: Option<Arc<str>>,
        prefilled: Vec<Option<StepResponse>>,
    ) -> Arc<ExecutionRecord> {
        let deadline = match (req.deadline.map(Instant::from_std), req.pattern.timeout) {
            (Some(d), Some(t)) => Some(d.min(Instant::now() + t)),
            (d, t) => d.or_else(|| t.map(|t| Instant::now() + t)),
        };
        let uuid = uuid::Uuid::now_v7();
        let resuming = resumed_id.is_some();
        let id: Arc<str> = resumed_id.unwrap_or_else(|| Arc::from(uuid.simple().to_string()));
        let journal = match req.pattern.durability {
            Durability::Durable => self.journal.as_deref(),
            Durability::Ephemeral => None,
        };
        let running = Arc::new(RunningExecution::new(id.clone(), journal.is_some(), req.tenant.clone()));
        self.lock_running().insert(id.clone(), running.clone());
        let registration = Registration { engine: self, id: id.clone() };
        let trace_id = req
            .traceparent
            .as_deref()
            .and_then(|t| t.split('-').nth(1))
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
            .unwrap_or_else(|| uuid.simple().to_string());
        let emitter = Emitter { running, direct };
        let journal_start = journal.filter(|_| !resuming).map(|_| JournalStart {
            id: id.clone(),
            pattern_name: req.pattern.name.clone(),
            pattern_version: req.pattern.version.clone(),
            input: value::cel_to_serde(&req.input),
            idempotency_key: req.idempotency_key.clone(),
            tenant: req.tenant.clone(),
        });
        let mut run = Run::new(
            &req.pattern,
            self.invoker.as_ref(),
            &self.history,
            id,
            req.input,
            deadline,
            emitter.clone(),
            trace_id,
            0,
        );
        run.journal = journal;
        run.prefilled = prefilled;
        run.journal_start = journal_start;
        let refused = journal.is_some() && !resuming && self.closing.load(std::sync::atomic::Ordering::Acquire);
        if refused {
            // Not journaled yet, so nothing to hand over: the caller retries on another replica.
            run.journal_start = None;
            run.refused = Some(ExecError {
                code: Code::Unavailable,
                message:
                    "this Nexus replica is shutting down and takes no new durable executions; retry on another replica"
                        .into(),
                step_id: None,
            });
        }
        let mut record = run.go().await;
        record.idempotency_key = req.idempotency_key;
        let suspended = record.status == ExecutionStatus::Running;
        if suspended {
            tracing::info!(execution = %record.id, "durable execution suspended here; it continues where it is claimed next");
        } else if let Some(j) = journal.filter(|_| !refused)
            && let Err(e) = j.finished(&record).await
        {
            tracing::error!(execution = %record.id, "journaling the end of the execution: {e}");
        }
        let record = Arc::new(record);
        if !suspended {
            self.history.insert(record.clone());
        }
        // Deregistered before the last event: from here on CancelExecution says "already
        // finished", and watchers hold their own receivers.
        drop(registration);
        emitter.emit(Event::Finished(record.clone())).await;
        record
    }
}

/// Maps the engine's monotonic clock to wall-clock timestamps for the record. Durations and
/// deadlines use tokio's clock (monotonic, and virtual in tests); a timestamp is the execution's
/// wall-clock start plus the monotonic offset, so a timeline never goes backwards.
#[derive(Clone, Copy)]
struct Timeline {
    origin: Instant,
    wall: SystemTime,
}

impl Timeline {
    fn start() -> Self {
        Self { origin: Instant::now(), wall: SystemTime::now() }
    }

    fn wall(&self, t: Instant) -> SystemTime {
        self.wall + t.saturating_duration_since(self.origin)
    }
}

/// What a step future hands back.
struct StepDone {
    index: usize,
    result: Result<StepResponse, CallError>,
    attempts: Vec<Attempt>,
}

type StepFuture<'a> = Pin<Box<dyn Future<Output = StepDone> + Send + 'a>>;

/// Everything a step's calls need, shared by its attempts and items. Owned (cheap clones) so the
/// step futures do not borrow the `Run`, which they run alongside.
#[derive(Clone)]
struct CallContext<'a> {
    invoker: &'a dyn Invoker,
    history: &'a History,
    depth: u32,
    step: &'a CompiledStep,
    deadline: Option<Instant>,
    timeline: Timeline,
    execution_id: Arc<str>,
    trace_id: Arc<str>,
    emitter: Emitter,
}

/// The state of one execution while it runs.
struct Run<'a> {
    pattern: &'a CompiledPattern,
    invoker: &'a dyn Invoker,
    history: &'a History,
    /// Nesting depth: 0 for a top-level execution, +1 per sub-pattern call.
    depth: u32,
    id: Arc<str>,
    input: Cel,
    execution: Cel,
    deadline: Option<Instant>,
    timeline: Timeline,
    emitter: Emitter,
    trace_id: Arc<str>,
    /// Set for durable executions.
    journal: Option<&'a dyn Journal>,
    /// Journaled at the start (a resumed execution is already journaled).
    journal_start: Option<JournalStart>,
    /// Set when the execution must not start at all (this process is shutting down).
    refused: Option<ExecError>,
    /// Results of steps completed before a restart (resume), by step index.
    prefilled: Vec<Option<StepResponse>>,
    /// When each running step started (monotonic), for its duration.
    step_started: Vec<Option<Instant>>,
    outputs: HashMap<Key, Cel>,
    skipped: Vec<bool>,
    waiting_on: Vec<usize>,
    /// Steps in the order they succeeded (compensation runs in reverse).
    completed: Vec<usize>,
    steps: Vec<StepRecord>,
}

impl<'a> Run<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        pattern: &'a CompiledPattern,
        invoker: &'a dyn Invoker,
        history: &'a History,
        id: Arc<str>,
        input: Cel,
        deadline: Option<Instant>,
        emitter: Emitter,
        trace_id: String,
        depth: u32,
    ) -> Self {
        let execution = value::map(HashMap::from([
            (value::key("id"), Cel::String(Arc::new(id.to_string()))),
            (value::key("pattern"), Cel::String(Arc::new(pattern.name.to_string()))),
            (value::key("version"), Cel::String(Arc::new(pattern.version.to_string()))),
        ]));
        let steps = pattern
            .steps
            .iter()
            .map(|s| StepRecord {
                step_id: s.id.clone(),
                call: s.call.clone(),
                status: StepStatus::Pending,
                started_at: None,
                duration: Duration::ZERO,
                request: None,
                response: None,
                error: None,
                attempts: Vec::new(),
                compensation: None,
                items: 0,
            })
            .collect();
        Self {
            pattern,
            invoker,
            history,
            depth,
            id,
            input,
            execution,
            deadline,
            timeline: Timeline::start(),
            emitter,
            trace_id: Arc::from(trace_id),
            journal: None,
            journal_start: None,
            refused: None,
            prefilled: Vec::new(),
            step_started: vec![None; pattern.steps.len()],
            outputs: HashMap::with_capacity(pattern.steps.len()),
            skipped: vec![false; pattern.steps.len()],
            waiting_on: pattern.steps.iter().map(|s| s.deps.len()).collect(),
            completed: Vec::with_capacity(pattern.steps.len()),
            steps,
        }
    }

    fn scope(&self) -> Scope<'_> {
        Scope { input: &self.input, steps: &self.outputs, item: None, index: None, execution: &self.execution }
    }

    async fn go(mut self) -> ExecutionRecord {
        let emitter = self.emitter.clone();
        let mut running: FuturesUnordered<StepFuture<'a>> = FuturesUnordered::new();
        let mut cancelled = false;
        let mut ready: Vec<usize> = self.pattern.roots.iter().rev().copied().collect();
        let mut events = Vec::new();
        let mut failure = self.refused.take();
        // A durable execution exists once its start is journaled, before any step runs.
        if let (Some(j), Some(start)) = (self.journal, self.journal_start.take())
            && let Err(e) = j.start(&start).await
        {
            failure = Some(ExecError { code: Code::Unavailable, message: e.to_string(), step_id: None });
        }
        // Announced after the journal has it: a caller that saw `started` can always find it.
        emitter
            .emit(Event::Started {
                pattern_name: self.pattern.name.clone(),
                pattern_version: self.pattern.version.clone(),
            })
            .await;
        if failure.is_none()
            && let Err(e) = self.start(&mut ready, &mut running, &mut events)
        {
            failure = Some(e);
        }
        self.flush(&mut events).await;
        let deadline = self.deadline;
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timer);
        // Created once, not per loop turn: each `cancelled()`/`closed()` future registers a waiter
        // under a lock when first polled.
        let cancel = emitter.running.cancel.clone();
        let cancelled_fut = cancel.cancelled();
        tokio::pin!(cancelled_fut);
        let closed = emitter.closed();
        tokio::pin!(closed);
        while failure.is_none() && !running.is_empty() {
            tokio::select! {
                biased;
                () = &mut cancelled_fut => {
                    // Suspended or cancelled: decided below, when the outcome is settled.
                    cancelled = true;
                    failure = Some(ExecError { code: Code::Cancelled, message: "the execution was cancelled".into(), step_id: None });
                }
                () = &mut closed => {
                    cancelled = true;
                    failure = Some(ExecError { code: Code::Cancelled, message: "the caller went away".into(), step_id: None });
                }
                Some(done) = running.next() => {
                    // Journaled before any dependant can start (finish() releases them). The
                    // last step to finish, with no dependants, is not: the execution's end, which
                    // is journaled next, records it (one commit less per execution; a crash in
                    // between calls it again with the same idempotency key, as for a step in
                    // flight).
                    let step = &self.pattern.steps[done.index];
                    let last = step.dependants.is_empty() && running.is_empty();
                    if let (Some(j), Ok(response), false) = (self.journal, &done.result, last)
                        && let Err(e) = j.step_completed(&self.id, &step.id, &encode_result(response)).await
                    {
                        // The journal still holds the execution as running: stop here without an
                        // outcome and let it resume from the journal once the store is back
                        // (failing it would need the journal too, and would lose its progress).
                        emitter.running.request_suspend();
                        failure = Some(ExecError {
                            code: Code::Unavailable,
                            message: format!("journaling the result of step `{}`: {e}", step.id),
                            step_id: Some(step.id.clone()),
                        });
                        continue;
                    }
                    if let Err(e) = self.finish(done, &mut ready, &mut events) {
                        failure = Some(e);
                    } else if let Err(e) = self.start(&mut ready, &mut running, &mut events) {
                        failure = Some(e);
                    }
                    self.flush(&mut events).await;
                }
                () = &mut timer => {
                    let in_flight: Vec<&str> = self.steps.iter()
                        .filter(|s| s.status == StepStatus::Running)
                        .map(|s| &*s.step_id)
                        .collect();
                    failure = Some(ExecError {
                        code: Code::DeadlineExceeded,
                        message: format!(
                            "the execution ran out of time after {:?}; still running: {}",
                            self.timeline.origin.elapsed(),
                            in_flight.join(", ")
                        ),
                        step_id: None,
                    });
                }
            }
        }
        // Dropping the futures cancels the calls still in flight.
        drop(running);
        // A cancellation that arrived while the last events were being delivered (or as the last
        // step finished) still counts: the outcome is decided here, atomically.
        let ending = emitter.running.begin_finishing();
        if ending == Ending::Cancelled && !cancelled {
            cancelled = true;
            failure.get_or_insert_with(|| ExecError {
                code: Code::Cancelled,
                message: "the execution was cancelled".into(),
                step_id: None,
            });
        }
        let now = Instant::now();
        for (s, started) in self.steps.iter_mut().zip(&self.step_started) {
            if s.status == StepStatus::Running {
                s.status = StepStatus::Cancelled;
                s.duration = started.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
            }
        }
        let (status, output, error) = match failure {
            // Left to whoever claims it next: no compensation, no outcome.
            _ if ending == Ending::Suspended => {
                let message = match failure {
                    Some(e) if e.code == Code::Unavailable => format!(
                        "{}; the execution stays journaled and resumes from its last completed step once the store is reachable (GetExecution `{}` returns its result)",
                        e.message, self.id
                    ),
                    _ => format!(
                        "this Nexus replica is shutting down; durable execution `{}` continues on another replica (GetExecution returns its result)",
                        self.id
                    ),
                };
                (ExecutionStatus::Running, None, Some(ExecError { code: Code::Unavailable, message, step_id: None }))
            }
            Some(e) => {
                let (compensated, compensation_error) = self.compensate().await;
                let status = match (cancelled, compensated, &compensation_error) {
                    (true, _, None) => ExecutionStatus::Cancelled,
                    (false, true, None) => ExecutionStatus::Compensated,
                    _ => ExecutionStatus::Failed,
                };
                let error = match compensation_error {
                    Some(c) => ExecError {
                        code: e.code,
                        message: format!("{}; then {}", e.message, c.message),
                        step_id: e.step_id,
                    },
                    None => e,
                };
                (status, None, Some(error))
            }
            None => match self.output() {
                Ok(out) => (ExecutionStatus::Succeeded, Some(out), None),
                Err(e) => (ExecutionStatus::Failed, None, Some(e)),
            },
        };
        ExecutionRecord {
            id: self.id,
            tenant: self.emitter.running.tenant.clone(),
            pattern_name: self.pattern.name.clone(),
            pattern_version: self.pattern.version.clone(),
            status,
            input: self.input,
            output,
            error,
            started_at: self.timeline.wall,
            duration: Instant::now().saturating_duration_since(self.timeline.origin),
            steps: self.steps,
            idempotency_key: None,
        }
    }

    /// Sends the events collected while the state was borrowed.
    async fn flush(&self, events: &mut Vec<Event>) {
        for e in events.drain(..) {
            self.emitter.emit(e).await;
        }
    }

    /// Starts every ready step (skipping those whose `when` is false, which may make more ready).
    fn start(
        &mut self,
        ready: &mut Vec<usize>,
        running: &mut FuturesUnordered<StepFuture<'a>>,
        events: &mut Vec<Event>,
    ) -> Result<(), ExecError> {
        let listening = self.emitter.listening();
        while let Some(i) = ready.pop() {
            let step: &'a CompiledStep = &self.pattern.steps[i];
            // Completed before a restart: keep the journaled result, do not call again.
            if let Some(response) = self.prefilled.get_mut(i).and_then(Option::take) {
                let output = response_to_cel(&response, &step.target);
                let record = &mut self.steps[i];
                record.status = StepStatus::Succeeded;
                record.response = Some(response);
                self.outputs.insert(step.key.clone(), output);
                self.completed.push(i);
                self.release_dependants(i, ready);
                continue;
            }
            if let Some(when) = &step.when {
                match when.eval(&self.scope()) {
                    Ok(Cel::Bool(true)) => {}
                    Ok(Cel::Bool(false)) => {
                        self.steps[i].status = StepStatus::Skipped;
                        self.skipped[i] = true;
                        // A skipped step reads as an empty object, so `has(steps.x.field)` is
                        // simply false (CEL's has() still needs `steps.x` itself to exist).
                        self.outputs.insert(step.key.clone(), value::map(HashMap::new()));
                        if listening {
                            events.push(Event::StepSkipped { step: step.id.clone() });
                        }
                        self.release_dependants(i, ready);
                        continue;
                    }
                    Ok(other) => {
                        return Err(self.fail_step(
                            i,
                            Code::InvalidArgument,
                            format!("`when` must be a bool, got {} from `{}`", value::type_name(&other), when.source()),
                        ));
                    }
                    Err(e) => return Err(self.fail_step(i, Code::InvalidArgument, format!("`when`: {e}"))),
                }
            }
            let requests = match self.build_requests(step) {
                Ok(r) => r,
                Err((code, message)) => return Err(self.fail_step(i, code, message)),
            };
            let now = Instant::now();
            self.step_started[i] = Some(now);
            let record = &mut self.steps[i];
            record.status = StepStatus::Running;
            record.started_at = Some(self.timeline.wall(now));
            if listening {
                events.push(Event::StepStarted { step: step.id.clone(), attempt: 1 });
            }
            let ctx = CallContext {
                invoker: self.invoker,
                history: self.history,
                depth: self.depth,
                step,
                deadline: self.deadline,
                timeline: self.timeline,
                execution_id: self.id.clone(),
                trace_id: self.trace_id.clone(),
                emitter: self.emitter.clone(),
            };
            match requests {
                Requests::One(request) => {
                    if let Request::Message(m) = &request {
                        self.steps[i].request = Some(m.clone());
                    }
                    running.push(Box::pin(async move {
                        let (result, attempts) = attempt(&ctx, request, None).await;
                        StepDone { index: i, result, attempts }
                    }));
                }
                Requests::Items(requests) => {
                    self.steps[i].items = requests.len() as u32;
                    running.push(Box::pin(fan_out(ctx, i, requests)));
                }
            }
        }
        Ok(())
    }

    fn build_requests(&self, step: &CompiledStep) -> Result<Requests, (Code, String)> {
        let build = |scope: &Scope<'_>| -> Result<Request, (Code, String)> {
            let v =
                step.request.eval(scope).map_err(|e| (Code::InvalidArgument, format!("building the request: {e}")))?;
            match &step.target {
                Target::Action(a) => {
                    let input = a.method.input();
                    value::to_message(&v, &input).map(Request::Message).map_err(|e| {
                        (Code::InvalidArgument, format!("building the {} request: {e}", input.full_name()))
                    })
                }
                Target::Pattern(_) => Ok(Request::Input(v)),
            }
        };
        let Some(for_each) = &step.for_each else {
            return build(&self.scope()).map(Requests::One);
        };
        let items = match for_each.eval(&self.scope()) {
            Ok(Cel::List(items)) => items,
            Ok(other) => {
                return Err((
                    Code::InvalidArgument,
                    format!("`for_each` must be a list, got {} from `{}`", value::type_name(&other), for_each.source()),
                ));
            }
            Err(e) => return Err((Code::InvalidArgument, format!("`for_each`: {e}"))),
        };
        if items.len() > MAX_FAN_OUT {
            return Err((
                Code::ResourceExhausted,
                format!("for_each has {} items; the limit is {MAX_FAN_OUT}", items.len()),
            ));
        }
        let mut requests = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let scope = Scope { item: Some(item), index: Some(index as i64), ..self.scope() };
            requests.push(build(&scope).map_err(|(c, m)| (c, format!("item {index}: {m}")))?);
        }
        Ok(Requests::Items(requests))
    }

    fn finish(&mut self, done: StepDone, ready: &mut Vec<usize>, events: &mut Vec<Event>) -> Result<(), ExecError> {
        let i = done.index;
        let step = &self.pattern.steps[i];
        let record = &mut self.steps[i];
        record.duration = self.step_started[i].map(|t| t.elapsed()).unwrap_or_default();
        record.attempts = done.attempts;
        match done.result {
            Ok(response) => {
                let output = response_to_cel(&response, &step.target);
                record.status = StepStatus::Succeeded;
                record.response = Some(response);
                if self.emitter.listening() {
                    events.push(Event::StepSucceeded { step: step.id.clone(), duration: record.duration });
                }
                self.outputs.insert(step.key.clone(), output);
                self.completed.push(i);
                self.release_dependants(i, ready);
                Ok(())
            }
            Err(e) => {
                let attempts = record.attempts.len();
                let tries = if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() };
                let duration = record.duration;
                let error = self.fail_step(
                    i,
                    e.code,
                    format!("step `{}` ({}) failed{tries}: {}: {}", step.id, step.call, code_name(e.code), e.message),
                );
                if self.emitter.listening() {
                    events.push(Event::StepFailed { step: step.id.clone(), error: error.clone(), duration });
                }
                Err(error)
            }
        }
    }

    fn release_dependants(&mut self, i: usize, ready: &mut Vec<usize>) {
        for &d in &self.pattern.steps[i].dependants {
            self.waiting_on[d] -= 1;
            if self.waiting_on[d] == 0 {
                ready.push(d);
            }
        }
    }

    fn fail_step(&mut self, i: usize, code: Code, message: String) -> ExecError {
        let step = &self.pattern.steps[i];
        let message = if message.starts_with("step `") {
            message
        } else {
            format!("step `{}` ({}): {message}", step.id, step.call)
        };
        let error = ExecError { code, message, step_id: Some(step.id.clone()) };
        let record = &mut self.steps[i];
        record.status = StepStatus::Failed;
        record.error = Some(error.clone());
        error
    }

    /// Runs the compensations of completed steps, newest first. Returns whether any ran and the
    /// first compensation failure.
    async fn compensate(&mut self) -> (bool, Option<ExecError>) {
        let mut ran = false;
        let mut first_error = None;
        let completed = std::mem::take(&mut self.completed);
        for &i in completed.iter().rev() {
            let step: &'a CompiledStep = &self.pattern.steps[i];
            let Some(comp) = &step.compensate else { continue };
            ran = true;
            let started = Instant::now();
            let result = match comp
                .request
                .eval(&self.scope())
                .map_err(|e| CallError::new(Code::InvalidArgument, e.to_string()))
                .and_then(|v| {
                    value::to_message(&v, &comp.action.method.input())
                        .map_err(|e| CallError::new(Code::InvalidArgument, e.to_string()))
                }) {
                Ok(request) => {
                    let timeout = step.timeout.unwrap_or(DEFAULT_COMPENSATION_TIMEOUT);
                    let call = Call {
                        action: comp.action.clone(),
                        request,
                        timeout: Some(timeout),
                        idempotency_key: format!("{}/{}/compensate", self.id, step.id),
                        traceparent: Some(traceparent(&self.trace_id)),
                    };
                    match tokio::time::timeout(timeout, self.invoker.unary(call)).await {
                        Ok(r) => r.map(|_| ()),
                        Err(_) => {
                            Err(CallError::new(Code::DeadlineExceeded, format!("no response within {timeout:?}")))
                        }
                    }
                }
                Err(e) => Err(e),
            };
            let duration = started.elapsed();
            let error = result.err().map(|e| ExecError {
                code: e.code,
                message: format!(
                    "compensating step `{}` ({}) failed: {}: {}",
                    step.id,
                    comp.action.name,
                    code_name(e.code),
                    e.message
                ),
                step_id: Some(step.id.clone()),
            });
            if first_error.is_none() {
                first_error.clone_from(&error);
            }
            self.emitter.emit(Event::StepCompensated { step: step.id.clone(), error: error.clone(), duration }).await;
            self.steps[i].compensation = Some(CompensationRecord {
                call: comp.action.name.clone(),
                status: if error.is_some() { StepStatus::Failed } else { StepStatus::Succeeded },
                started_at: self.timeline.wall(started),
                duration,
                error,
            });
        }
        self.completed = completed;
        (ran, first_error)
    }

    fn output(&self) -> Result<Cel, ExecError> {
        let Some(fields) = &self.pattern.output else {
            let ran = self
                .pattern
                .steps
                .iter()
                .filter(|s| !self.skipped[s.index])
                .filter_map(|s| self.outputs.get(&s.key).map(|v| (s.key.clone(), v.clone())));
            return Ok(value::map(ran.collect()));
        };
        let scope = self.scope();
        let mut out = HashMap::with_capacity(fields.len());
        for field in fields {
            // A field that reads a skipped step is left out rather than failing the execution:
            // skipping is a planned outcome, not an error.
            if field.reads_steps.iter().any(|&s| self.skipped[s]) {
                continue;
            }
            let v = field.template.eval(&scope).map_err(|e| ExecError {
                code: Code::FailedPrecondition,
                message: format!("output.{}: {e}", field.name),
                step_id: None,
            })?;
            out.insert(field.key.clone(), v);
        }
        Ok(value::map(out))
    }
}

/// One call's request: a message for an action, a CEL value (the input) for a sub-pattern.
#[derive(Clone)]
enum Request {
    Message(DynamicMessage),
    Input(Cel),
}

enum Requests {
    One(Request),
    Items(Vec<Request>),
}

fn response_to_cel(response: &StepResponse, target: &Target) -> Cel {
    match response {
        StepResponse::Message(m) => message_to_cel(m),
        StepResponse::Stream(ms) => Cel::List(Arc::new(ms.iter().map(message_to_cel).collect())),
        StepResponse::Forwarded { last, .. } => match (last, target) {
            (Some(m), _) => message_to_cel(m),
            (None, Target::Action(a)) => message_to_cel(&DynamicMessage::new(a.method.output())),
            (None, Target::Pattern(_)) => Cel::Null,
        },
        StepResponse::Items(items) => Cel::List(Arc::new(items.iter().map(|r| response_to_cel(r, target)).collect())),
        StepResponse::Pattern { output, .. } => output.clone(),
    }
}

/// A W3C trace context header continuing `trace_id` with a new span for one call.
fn traceparent(trace_id: &str) -> String {
    let span: u64 = rand::rng().random::<u64>() | 1;
    format!("00-{trace_id}-{span:016x}-01")
}

/// Runs a for_each step: every item's call, at most `concurrency` at a time (a slow item does not
/// hold a slot once others finish), outputs in item order; the first failure fails the step (and
/// drops the calls still in flight).
async fn fan_out(ctx: CallContext<'_>, index: usize, requests: Vec<Request>) -> StepDone {
    let concurrency = ctx.step.concurrency.max(1);
    let ctx = &ctx;
    let n = requests.len();
    let mut results = futures::stream::iter(requests.into_iter().enumerate())
        .map(|(item, request)| async move { (item, attempt(ctx, request, Some(item as u32)).await) })
        .buffer_unordered(concurrency);
    let mut responses: Vec<Option<StepResponse>> = (0..n).map(|_| None).collect();
    let mut attempts = Vec::new();
    while let Some((item, (result, mut a))) = results.next().await {
        attempts.append(&mut a);
        match result {
            Ok(r) => responses[item] = Some(r),
            Err(e) => {
                return StepDone {
                    index,
                    result: Err(CallError::new(e.code, format!("item {item}: {}", e.message))),
                    attempts,
                };
            }
        }
    }
    attempts.sort_by_key(|a| (a.item, a.number));
    StepDone { index, result: Ok(StepResponse::Items(responses.into_iter().flatten().collect())), attempts }
}

/// Calls a step's action, retrying per its policy within the execution's deadline.
async fn attempt(
    ctx: &CallContext<'_>,
    request: Request,
    item: Option<u32>,
) -> (Result<StepResponse, CallError>, Vec<Attempt>) {
    let step = ctx.step;
    let policy = &step.retry;
    let mut attempts = Vec::with_capacity(1);
    let mut backoff = policy.initial_backoff;
    let mut number = 0;
    let idempotency_key = match item {
        Some(i) => format!("{}/{}/{i}", ctx.execution_id, step.id),
        None => format!("{}/{}", ctx.execution_id, step.id),
    };
    loop {
        number += 1;
        let now = Instant::now();
        let remaining = ctx.deadline.map(|d| d.saturating_duration_since(now));
        let timeout = match (step.timeout, remaining) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let once = call_once(ctx, &request, timeout, &idempotency_key);
        let result = match timeout {
            Some(t) if t.is_zero() => Err(CallError::new(Code::DeadlineExceeded, "no time left before the call")),
            Some(t) => tokio::time::timeout(t, once).await.unwrap_or_else(|_| {
                // Say which limit ran out: the step's own timeout or the whole execution's.
                let by_execution = remaining.is_some_and(|r| step.timeout.is_none_or(|s| r < s));
                let what = if by_execution { "the execution's deadline" } else { "the step's timeout" };
                Err(CallError::new(Code::DeadlineExceeded, format!("no response within {t:?} ({what})")))
            }),
            None => once.await,
        };
        attempts.push(Attempt {
            number,
            item,
            started_at: ctx.timeline.wall(now),
            duration: now.elapsed(),
            code: result.as_ref().map_or_else(|e| e.code, |_| Code::Ok),
            message: result.as_ref().err().map(|e| e.message.clone()).unwrap_or_default(),
        });
        let error = match result {
            Ok(r) => return (Ok(r), attempts),
            Err(e) => e,
        };
        let retryable = number < policy.max_attempts && policy.retry_on.iter().any(|c| c == code_name(error.code));
        // Full jitter: sleep a random time up to the current backoff, so retries of many
        // executions against one recovering backend spread out instead of arriving together.
        let sleep = Duration::from_secs_f64(backoff.as_secs_f64() * rand::rng().random_range(0.5..=1.0));
        let fits = ctx.deadline.is_none_or(|d| Instant::now() + sleep < d);
        if !retryable || !fits {
            return (Err(error), attempts);
        }
        let err = ExecError { code: error.code, message: error.message.clone(), step_id: Some(step.id.clone()) };
        ctx.emitter.emit(Event::StepRetrying { step: step.id.clone(), attempt: number + 1, error: err }).await;
        tokio::time::sleep(sleep).await;
        backoff =
            Duration::from_secs_f64((backoff.as_secs_f64() * policy.multiplier).min(policy.max_backoff.as_secs_f64()));
    }
}

async fn call_once(
    ctx: &CallContext<'_>,
    request: &Request,
    timeout: Option<Duration>,
    idempotency_key: &str,
) -> Result<StepResponse, CallError> {
    let step = ctx.step;
    let (action, message) = match (&step.target, request) {
        (Target::Action(a), Request::Message(m)) => (a, m),
        (Target::Pattern(p), Request::Input(input)) => return run_pattern(ctx, p, input.clone()).await,
        _ => return Err(CallError::new(Code::Internal, "request does not match the step's target")),
    };
    let call = Call {
        action: action.clone(),
        request: message.clone(),
        timeout,
        idempotency_key: idempotency_key.to_string(),
        traceparent: Some(traceparent(&ctx.trace_id)),
    };
    if !action.is_server_streaming() {
        return ctx.invoker.unary(call).await.map(StepResponse::Message);
    }
    let mut stream = ctx.invoker.server_streaming(call).await?;
    if step.stream {
        // Forward each message as it arrives. `emit` waits for room in the caller's channel, so
        // a slow caller stops this loop, which stops reading the backend stream: HTTP/2 flow
        // control then holds the backend. Memory stays bounded by the channel and the windows.
        let mut count = 0u64;
        let mut last = None;
        while let Some(m) = stream.next().await {
            let m = m?;
            if ctx.emitter.listening()
                && !ctx.emitter.emit(Event::Message { step: step.id.clone(), index: count, message: m.clone() }).await
            {
                return Err(CallError::new(Code::Cancelled, "the caller went away"));
            }
            count += 1;
            last = Some(m);
        }
        return Ok(StepResponse::Forwarded { last, count });
    }
    let mut messages = Vec::new();
    while let Some(m) = stream.next().await {
        if messages.len() == MAX_COLLECTED_STREAM_MESSAGES {
            return Err(CallError::new(
                Code::ResourceExhausted,
                format!(
                    "the stream sent more than {MAX_COLLECTED_STREAM_MESSAGES} messages; mark the step `stream: true` and use ExecutePatternStream"
                ),
            ));
        }
        messages.push(m?);
    }
    Ok(StepResponse::Stream(messages))
}

/// Runs a registered pattern as a step, in-process: a child execution with its own id (recorded in
/// the history), the parent's trace and remaining deadline, and no event observers.
async fn run_pattern(
    ctx: &CallContext<'_>,
    callee: &Arc<CompiledPattern>,
    input: Cel,
) -> Result<StepResponse, CallError> {
    if ctx.depth + 1 > MAX_PATTERN_DEPTH {
        return Err(CallError::new(
            Code::ResourceExhausted,
            format!("sub-patterns nest deeper than {MAX_PATTERN_DEPTH} levels"),
        ));
    }
    if !callee.input.is_empty() {
        let problems = callee.input.validate(&input);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(p, m)| format!("{p}: {m}")).collect();
            return Err(CallError::new(
                Code::InvalidArgument,
                format!("input of pattern {}@{}: {}", callee.name, callee.version, list.join("; ")),
            ));
        }
    }
    let deadline = match (ctx.deadline, callee.timeout) {
        (Some(d), Some(t)) => Some(d.min(Instant::now() + t)),
        (d, t) => d.or_else(|| t.map(|t| Instant::now() + t)),
    };
    let id: Arc<str> = Arc::from(uuid::Uuid::now_v7().simple().to_string());
    // A sub-execution belongs to the caller's tenant.
    let tenant = ctx.emitter.running.tenant.clone();
    let emitter = Emitter { running: Arc::new(RunningExecution::new(id.clone(), false, tenant)), direct: None };
    let child = Run::new(
        callee,
        ctx.invoker,
        ctx.history,
        id,
        input,
        deadline,
        emitter,
        ctx.trace_id.to_string(),
        ctx.depth + 1,
    );
    let record = Arc::new(Box::pin(child.go()).await);
    ctx.history.insert(record.clone());
    match (record.status, &record.output) {
        (ExecutionStatus::Succeeded, output) => {
            Ok(StepResponse::Pattern { execution_id: record.id.clone(), output: output.clone().unwrap_or(Cel::Null) })
        }
        (status, _) => {
            let (code, message) = match &record.error {
                Some(e) => (e.code, e.message.clone()),
                None => (Code::Unknown, format!("{status:?}")),
            };
            Err(CallError::new(
                code,
                format!("pattern {}@{} (execution {}) {status:?}: {message}", callee.name, callee.version, record.id),
            ))
        }
    }
}

/// The canonical upper-case name of a gRPC code (`UNAVAILABLE`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

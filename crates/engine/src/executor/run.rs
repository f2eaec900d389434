//! One execution's state machine: steps start as their dependencies finish, results are
//! journaled (durable patterns) before dependants start, and the outcome is settled once —
//! succeeded, failed and compensated, cancelled, or suspended for another replica.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use cel::{Value as Cel, objects::Key};
use futures::{StreamExt, stream::FuturesUnordered};
use nexus_core::{
    CompiledPattern, CompiledStep, Target,
    expr::{Budget, EvalError, EvalErrorKind, ExecutionVar, Scope, Template},
    value,
    wire::Reads,
};
use tokio::time::Instant;
use tonic::Code;

use super::{
    MAX_FAN_OUT,
    fan_out::fan_out,
    step::{CallContext, Outcome, Request, Requests, attempt, response_to_cel},
};
use crate::{
    bus::{CloudEvent, EventHub, WaitRegistration},
    events::{Emitter, Ending, Event},
    history::History,
    invoker::{CallError, Invoker},
    journal::{Journal, JournalStart, encode_result},
    record::{ExecError, ExecutionRecord, ExecutionStatus, Payload, StepRecord, StepResponse, StepStatus, code_name},
    waits::{LocalWaits, correlation_key},
};

/// What every run and every call of a process shares.
#[derive(Clone, Copy)]
pub(super) struct Services<'a> {
    pub invoker: &'a dyn Invoker,
    pub history: &'a History,
    /// Events: where `emit` publishes and `wait_for` registers (none: event steps fail).
    pub hub: Option<&'a dyn EventHub>,
    pub waits: &'a LocalWaits,
    /// What CEL evaluation may cost, per expression and per execution.
    pub cel: nexus_core::expr::CostLimits,
    /// Told of every finished execution (metrics, traces).
    pub observer: Option<&'a dyn crate::Observer>,
}

/// The status of a failed evaluation: its own for a spent cost budget or a passed deadline,
/// `otherwise` for an expression that fails on its values.
pub(super) fn eval_code(e: &EvalError, otherwise: Code) -> Code {
    match e.kind {
        EvalErrorKind::CostExceeded => Code::ResourceExhausted,
        EvalErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        EvalErrorKind::Invalid => otherwise,
    }
}

/// Cost units an evaluation may spend in place, on the async worker that runs its execution: the
/// default per-expression budget, about 0.1 s of CPU at most.
const IN_PLACE_UNITS: u64 = nexus_core::expr::CostLimits::DEFAULT.per_expression;

/// Runs `eval` in place, or off the async worker when it is `costly` (an expression with a
/// comprehension) and its budget lets it run longer than [`IN_PLACE_UNITS`] allow: then the
/// worker's other tasks move to another thread meanwhile (`block_in_place`), so even an expression
/// given a large budget never stalls unrelated calls.
///
/// Why not always off the worker: moving the worker away costs the other calls more than a
/// bounded evaluation in place does. `nexus-bench --costly-background` (1-client p99 of
/// user_creation while costly executions run back to back, 2 cores): in place 0.57–0.59 ms
/// (without the background 0.78–0.95 ms); `block_in_place` 2.6–3.3 ms; a thread of its own at
/// idle priority (`SCHED_IDLE`) 4.4–4.8 ms.
pub(super) fn evaluate<T>(costly: bool, budget: &Budget, eval: impl FnOnce() -> T) -> T {
    let long = costly
        && budget.per_evaluation() > IN_PLACE_UNITS
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if long { tokio::task::block_in_place(eval) } else { eval() }
}

/// Everything a run starts from.
pub(super) struct RunOptions<'a> {
    pub pattern: &'a CompiledPattern,
    pub services: Services<'a>,
    pub id: Arc<str>,
    pub input: Cel,
    /// The sooner of the caller's deadline and the pattern's timeout.
    pub deadline: Option<Instant>,
    pub emitter: Emitter,
    /// The execution's place in its W3C trace, continued by every backend call.
    pub trace: Arc<crate::trace::TraceContext>,
    /// Nesting depth: 0 for a top-level execution, +1 per sub-pattern call.
    pub depth: u32,
    /// Set for durable executions.
    pub journal: Option<&'a dyn Journal>,
    /// Journaled at the start (a resumed execution is already journaled).
    pub journal_start: Option<JournalStart>,
    /// Set when the execution must not start at all (this process is shutting down).
    pub refused: Option<ExecError>,
    /// Results of steps completed before a restart (resume), by step index.
    pub prefilled: Vec<Option<StepResponse>>,
}

/// Maps the engine's monotonic clock to wall-clock timestamps for the record. Durations and
/// deadlines use tokio's clock (monotonic, and virtual in tests); a timestamp is the execution's
/// wall-clock start plus the monotonic offset, so a timeline never goes backwards.
#[derive(Clone, Copy)]
pub(super) struct Timeline {
    pub origin: Instant,
    pub wall: SystemTime,
}

impl Timeline {
    fn start() -> Self {
        Self { origin: Instant::now(), wall: SystemTime::now() }
    }

    pub fn wall(&self, t: Instant) -> SystemTime {
        self.wall + t.saturating_duration_since(self.origin)
    }
}

/// What a step future hands back.
pub(super) struct StepDone {
    pub index: usize,
    pub result: Result<Outcome, CallError>,
    pub attempts: Vec<crate::record::Attempt>,
}

type StepFuture<'a> = Pin<Box<dyn Future<Output = StepDone> + Send + 'a>>;

/// A step result's journal write.
type JournalWrite<'a> = Pin<Box<dyn Future<Output = Result<(), ExecError>> + Send + 'a>>;

/// Waits for a journal write while the steps in flight go on (those that finish meanwhile are
/// queued again, handled after it). Not polling them would let a step in flight that holds what
/// the write needs — the store's only connection, in memory, taken by an `emit` step — wait for
/// the write while the write waits for it, until the journal gives up (30 s).
///
/// `withdraw`: the write is a leaf step's result (no step depends on it). If every other step in
/// flight finishes, successfully, while the write still waits for a commit, it is taken back
/// (`Ok(true)`): the execution is likely to end at once, and its end records the result — one
/// commit less on the execution's path, and for the journal. Should more steps start after all,
/// the caller journals it again ([`Run::rejournal`]).
async fn write_while_running<'a>(
    mut write: JournalWrite<'a>,
    running: &mut FuturesUnordered<StepFuture<'a>>,
    withdraw: Option<(&'a dyn Journal, &str, &str)>,
) -> Result<bool, ExecError> {
    let mut meanwhile: Vec<StepDone> = Vec::new();
    let result = loop {
        tokio::select! {
            biased;
            r = &mut write => break r.map(|()| false),
            Some(done) = running.next() => {
                meanwhile.push(done);
                if running.is_empty()
                    && meanwhile.iter().all(|d| d.result.is_ok())
                    && let Some((journal, execution_id, step_id)) = withdraw
                    && journal.withdraw_step(execution_id, step_id)
                {
                    break Ok(true);
                }
            }
        }
    };
    for done in meanwhile {
        running.push(Box::pin(std::future::ready(done)));
    }
    result
}

/// The state of one execution while it runs.
pub(super) struct Run<'a> {
    pub(super) pattern: &'a CompiledPattern,
    pub(super) services: Services<'a>,
    depth: u32,
    pub(super) id: Arc<str>,
    input: Cel,
    execution: ExecutionVar,
    deadline: Option<Instant>,
    /// What this execution's CEL expressions may still cost (and its deadline, for them).
    pub(super) budget: Budget,
    pub(super) timeline: Timeline,
    pub(super) emitter: Emitter,
    pub(super) trace: Arc<crate::trace::TraceContext>,
    journal: Option<&'a dyn Journal>,
    journal_start: Option<JournalStart>,
    refused: Option<ExecError>,
    prefilled: Vec<Option<StepResponse>>,
    /// When each running step started (monotonic), for its duration.
    step_started: Vec<Option<Instant>>,
    outputs: HashMap<Key, Cel>,
    skipped: Vec<bool>,
    waiting_on: Vec<usize>,
    /// Steps in the order they succeeded (compensation runs in reverse).
    pub(super) completed: Vec<usize>,
    pub(super) steps: Vec<StepRecord>,
    /// `wait_for` steps started and not resolved yet.
    waits_pending: Vec<usize>,
    /// Of those, the ones registered in the store (only then can the execution park).
    waits_registered: Vec<usize>,
    /// Steps whose result's journal write was taken back (see [`write_while_running`]).
    withdrawn: Vec<usize>,
    /// Wait futures say here when their registration is in the store.
    /// Only for patterns with `wait_for` steps: nothing is allocated on the others' hot path.
    registered:
        Option<(tokio::sync::mpsc::UnboundedSender<usize>, Option<tokio::sync::mpsc::UnboundedReceiver<usize>>)>,
    /// The execution left memory to wait for events (parked in the store).
    parked: bool,
}

/// Why the step loop stopped early, if it did.
struct Stopped {
    failure: Option<ExecError>,
    /// Cancelled by CancelExecution, a suspension, or the caller going away.
    cancelled: bool,
}

impl<'a> Run<'a> {
    pub(super) fn new(o: RunOptions<'a>) -> Self {
        let pattern = o.pattern;
        let execution = ExecutionVar::new(o.id.clone(), pattern.name.clone(), pattern.version.clone());
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
        let n = pattern.steps.len();
        let mut prefilled = o.prefilled;
        prefilled.resize_with(n, || None);
        Self {
            pattern,
            services: o.services,
            depth: o.depth,
            id: o.id,
            input: o.input,
            execution,
            deadline: o.deadline,
            budget: Budget::new(
                o.services.cel,
                o.deadline.map(|d| std::time::Instant::now() + d.saturating_duration_since(Instant::now())),
            ),
            timeline: Timeline::start(),
            emitter: o.emitter,
            trace: o.trace,
            journal: o.journal,
            journal_start: o.journal_start,
            refused: o.refused,
            prefilled,
            step_started: vec![None; n],
            outputs: HashMap::with_capacity(n),
            skipped: vec![false; n],
            waiting_on: pattern.steps.iter().map(|s| s.deps.len()).collect(),
            completed: Vec::with_capacity(n),
            steps,
            waits_pending: Vec::new(),
            waits_registered: Vec::new(),
            withdrawn: Vec::new(),
            registered: pattern.steps.iter().any(|s| s.target.is_wait()).then(|| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (tx, Some(rx))
            }),
            parked: false,
        }
    }

    pub(super) fn scope(&self) -> Scope<'_> {
        Scope {
            input: &self.input,
            steps: &self.outputs,
            item: None,
            index: None,
            execution: &self.execution,
            event: None,
            budget: Some(&self.budget),
        }
    }

    /// Runs the execution to its outcome and returns its record.
    pub(super) async fn go(mut self) -> ExecutionRecord {
        let mut running: FuturesUnordered<StepFuture<'a>> = FuturesUnordered::new();
        let mut ready: Vec<usize> = self.pattern.roots.iter().rev().copied().collect();
        let failure = self.begin(&mut ready, &mut running).await;
        let stopped = self.drive(failure, &mut ready, &mut running).await;
        // Dropping the futures cancels the calls still in flight.
        drop(running);
        self.settle(stopped).await
    }

    /// Journals the start (durable), announces it, and starts the root steps.
    async fn begin(
        &mut self,
        ready: &mut Vec<usize>,
        running: &mut FuturesUnordered<StepFuture<'a>>,
    ) -> Option<ExecError> {
        let mut failure = self.refused.take();
        // A durable execution exists once its start is journaled, before any step runs.
        if let (Some(j), Some(start)) = (self.journal, self.journal_start.take())
            && let Err(e) = j.start(&start).await
        {
            failure = Some(ExecError { code: Code::Unavailable, message: e.to_string(), step_id: None });
        }
        // Announced after the journal has it: a caller that saw `started` can always find it.
        self.emitter
            .emit(Event::Started {
                pattern_name: self.pattern.name.clone(),
                pattern_version: self.pattern.version.clone(),
            })
            .await;
        let mut events = Vec::new();
        if failure.is_none()
            && let Err(e) = self.start(ready, running, &mut events)
        {
            failure = Some(e);
        }
        self.flush(&mut events).await;
        failure
    }

    /// Runs steps until all are done, one fails for good, the deadline passes, or the execution
    /// is cancelled, suspended or abandoned by its caller.
    async fn drive(
        &mut self,
        mut failure: Option<ExecError>,
        ready: &mut Vec<usize>,
        running: &mut FuturesUnordered<StepFuture<'a>>,
    ) -> Stopped {
        let emitter = self.emitter.clone();
        let mut cancelled = false;
        let mut events = Vec::new();
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
        let mut registered = self.registered.as_mut().and_then(|r| r.1.take());
        let next_registered = async |r: &mut Option<tokio::sync::mpsc::UnboundedReceiver<usize>>| match r {
            Some(r) => r.recv().await,
            None => std::future::pending().await,
        };
        while failure.is_none() && !running.is_empty() {
            // Nothing but registered waits left: leave memory until an event (or a timeout)
            // resumes it.
            if !self.waits_pending.is_empty()
                && running.len() == self.waits_pending.len()
                && self.waits_registered.len() == self.waits_pending.len()
            {
                match self.park().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        failure = Some(e);
                        continue;
                    }
                }
            }
            tokio::select! {
                biased;
                () = &mut cancelled_fut => {
                    // Suspended or cancelled: decided in `settle`, when the outcome is settled.
                    cancelled = true;
                    failure = Some(ExecError { code: Code::Cancelled, message: "the execution was cancelled".into(), step_id: None });
                }
                () = &mut closed => {
                    cancelled = true;
                    failure = Some(ExecError { code: Code::Cancelled, message: "the caller went away".into(), step_id: None });
                }
                Some(i) = next_registered(&mut registered) => {
                    if self.waits_pending.contains(&i) && !self.waits_registered.contains(&i) {
                        self.waits_registered.push(i);
                    }
                }
                Some(done) = running.next() => {
                    self.waits_pending.retain(|&w| w != done.index);
                    self.waits_registered.retain(|&w| w != done.index);
                    if let Some(result) = self.journal_step(&done, running.is_empty()) {
                        let step = &self.pattern.steps[done.index];
                        let withdraw =
                            self.journal.filter(|_| step.dependants.is_empty()).map(|j| (j, &*self.id, &*step.id));
                        match write_while_running(self.write_result(done.index, result), running, withdraw).await {
                            Err(e) => {
                                failure = Some(e);
                                continue;
                            }
                            Ok(true) => self.withdrawn.push(done.index),
                            Ok(false) => {}
                        }
                    }
                    let before = running.len();
                    if let Err(e) = self.finish(done, ready, &mut events) {
                        failure = Some(e);
                    } else if let Err(e) = self.start(ready, running, &mut events) {
                        failure = Some(e);
                    }
                    // More steps started: the execution goes on after all.
                    if failure.is_none()
                        && running.len() > before
                        && let Err(e) = self.rejournal(running).await
                    {
                        failure = Some(e);
                    }
                    self.flush(&mut events).await;
                }
                () = &mut timer => failure = Some(self.out_of_time()),
            }
        }
        Stopped { failure, cancelled }
    }

    /// A durable step's result to journal before any dependant can start (`finish` releases
    /// them), encoded. The last step to finish, with no dependants, is not: the execution's end,
    /// journaled next, records it (one commit less per execution; a crash in between calls it
    /// again with the same idempotency key, as for a step in flight).
    fn journal_step(&self, done: &StepDone, nothing_else_running: bool) -> Option<String> {
        let step: &'a CompiledStep = &self.pattern.steps[done.index];
        // A wait's result was journaled by whoever resolved it.
        let last = (step.dependants.is_empty() && nothing_else_running) || step.target.is_wait();
        let (Some(_), Ok(outcome), false) = (self.journal, &done.result, last) else { return None };
        Some(encode_result(&outcome.response))
    }

    /// Journals step `index`'s encoded `result`.
    fn write_result(&self, index: usize, result: String) -> JournalWrite<'a> {
        let step: &'a CompiledStep = &self.pattern.steps[index];
        let (journal, id, running) = (self.journal, self.id.clone(), self.emitter.running.clone());
        Box::pin(async move {
            let Some(j) = journal else { return Ok(()) };
            let Err(e) = j.step_completed(&id, &step.id, &result).await else { return Ok(()) };
            // The journal still holds the execution as running: stop here without an outcome and
            // let it resume from the journal once the store is back (failing it would need the
            // journal too, and would lose its progress).
            running.request_suspend();
            Err(ExecError {
                code: Code::Unavailable,
                message: format!("journaling the result of step `{}`: {e}", step.id),
                step_id: Some(step.id.clone()),
            })
        })
    }

    /// Journals the leaf results taken back by [`write_while_running`] when the execution goes
    /// on after all: a result is not left unjournaled while more steps run.
    async fn rejournal(&mut self, running: &mut FuturesUnordered<StepFuture<'a>>) -> Result<(), ExecError> {
        for index in std::mem::take(&mut self.withdrawn) {
            // Recorded by `finish`, which ran since.
            let Some(response) = &self.steps[index].response else { continue };
            let result = encode_result(response);
            write_while_running(self.write_result(index, result), running, None).await?;
        }
        Ok(())
    }

    fn out_of_time(&self) -> ExecError {
        let in_flight: Vec<&str> =
            self.steps.iter().filter(|s| s.status == StepStatus::Running).map(|s| &*s.step_id).collect();
        ExecError {
            code: Code::DeadlineExceeded,
            message: format!(
                "the execution ran out of time after {:?}; still running: {}",
                self.timeline.origin.elapsed(),
                in_flight.join(", ")
            ),
            step_id: None,
        }
    }

    /// Decides the outcome (a cancellation or suspension that raced the last step still counts),
    /// compensates if it failed, and builds the record.
    async fn settle(mut self, stopped: Stopped) -> ExecutionRecord {
        let Stopped { mut failure, mut cancelled } = stopped;
        // A wait step failed CANCELLED: CancelExecution reached the execution through the journal
        // (it was waiting, maybe parked or elsewhere). That is a cancellation, not a failure.
        if let Some(e) = &failure
            && e.code == Code::Cancelled
            && e.step_id
                .as_deref()
                .is_some_and(|id| self.pattern.steps.iter().any(|s| *s.id == *id && s.target.is_wait()))
        {
            cancelled = true;
        }
        let ending = self.emitter.running.begin_finishing();
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
            // Waiting for events, in the store: running, and nothing went wrong.
            _ if self.parked => (ExecutionStatus::Running, None, None),
            // Left to whoever claims it next: no compensation, no outcome.
            _ if ending == Ending::Suspended => (ExecutionStatus::Running, None, Some(self.suspension(failure))),
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
            input: self.input.into(),
            output: output.map(Into::into),
            error,
            started_at: self.timeline.wall,
            duration: Instant::now().saturating_duration_since(self.timeline.origin),
            steps: self.steps,
            idempotency_key: None,
            trace: Some(self.trace),
        }
    }

    /// What the caller of a suspended execution is told.
    fn suspension(&self, failure: Option<ExecError>) -> ExecError {
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
        ExecError { code: Code::Unavailable, message, step_id: None }
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
                if let StepResponse::TimedOut(message) = response {
                    return Err(self.fail_step(i, Code::DeadlineExceeded, message));
                }
                if let StepResponse::Cancelled(reason) = response {
                    return Err(self.fail_step(i, Code::Cancelled, cancelled_message(&reason)));
                }
                let output = match response_to_cel(&response, &step.target, &step.reads) {
                    Ok(output) => output,
                    Err(e) => {
                        return Err(self.fail_step(i, Code::DataLoss, format!("its journaled result: {}", e.message)));
                    }
                };
                let record = &mut self.steps[i];
                record.status = StepStatus::Succeeded;
                record.response = Some(response);
                self.outputs.insert(step.key.clone(), output);
                self.completed.push(i);
                self.release_dependants(i, ready);
                continue;
            }
            if let Some(when) = &step.when {
                match evaluate(when.is_costly(), &self.budget, || when.eval(&self.scope())) {
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
                    Err(e) => {
                        return Err(self.fail_step(i, eval_code(&e, Code::InvalidArgument), format!("`when`: {e}")));
                    }
                }
            }
            let wait = match &step.target {
                Target::Wait(_) => match self.wait_registration(step) {
                    Ok(w) => Some(w),
                    Err((code, message)) => return Err(self.fail_step(i, code, message)),
                },
                _ => None,
            };
            let requests = match wait {
                Some(_) => Requests::One(Request::Input(Cel::Null)),
                None => match self.build_requests(step) {
                    Ok(r) => r,
                    Err((code, message)) => return Err(self.fail_step(i, code, message)),
                },
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
                services: self.services,
                depth: self.depth,
                step,
                deadline: self.deadline,
                timeline: self.timeline,
                execution_id: self.id.clone(),
                trace: self.trace.clone(),
                emitter: self.emitter.clone(),
            };
            if let (Some(registration), Some(hub)) = (wait, self.services.hub) {
                self.waits_pending.push(i);
                let woken = self.services.waits.add(self.id.clone(), step.id.clone());
                let waits = self.services.waits;
                let running_execution = self.emitter.running.clone();
                let registered = self.registered.as_ref().map(|r| r.0.clone());
                running.push(Box::pin(async move {
                    let result = match hub.register_wait(&registration).await {
                        Ok(Some(text)) => {
                            waits.remove(&registration.execution_id, &registration.step_id);
                            Ok(text)
                        }
                        // The sender lives until the wait resolves here, or the run is dropped.
                        Ok(None) => {
                            if let Some(r) = &registered {
                                let _ = r.send(i);
                            }
                            woken.await.map_err(|_| CallError::new(Code::Cancelled, "the wait was abandoned"))
                        }
                        Err(e) => {
                            waits.remove(&registration.execution_id, &registration.step_id);
                            // The store is out: stay journaled and resume once it is back.
                            running_execution.request_suspend();
                            Err(CallError::new(Code::Unavailable, format!("registering the wait: {e}")))
                        }
                    };
                    let result = result.and_then(|text| wait_outcome(&text, &step.target));
                    StepDone { index: i, result, attempts: Vec::new() }
                }));
                continue;
            }
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
            if let (Target::Action(a), Some(fields), Template::Object(keys)) =
                (&step.target, &step.request_fields, &step.request)
            {
                return self.build_message(scope, &a.method.input(), keys, fields).map(Request::Message);
            }
            let template = match &step.target {
                Target::Emit(plan) => &plan.data,
                _ => &step.request,
            };
            let v = evaluate(template.is_costly(), &self.budget, || template.eval(scope))
                .map_err(|e| (eval_code(&e, Code::InvalidArgument), format!("building the request: {e}")))?;
            match &step.target {
                Target::Action(a) => {
                    let input = a.method.input();
                    Payload::from_cel(&v, input.clone()).map(Request::Message).map_err(|e| {
                        (Code::InvalidArgument, format!("building the {} request: {e}", input.full_name()))
                    })
                }
                Target::Pattern(_) => Ok(Request::Input(v)),
                Target::Emit(plan) => self.event_to_emit(step, plan, v).map(Request::Event),
                Target::Wait(_) => Ok(Request::Input(Cel::Null)),
            }
        };
        let Some(for_each) = &step.for_each else {
            return build(&self.scope()).map(Requests::One);
        };
        let items = match evaluate(for_each.is_costly(), &self.budget, || for_each.eval(&self.scope())) {
            Ok(Cel::List(items)) => items,
            Ok(other) => {
                return Err((
                    Code::InvalidArgument,
                    format!("`for_each` must be a list, got {} from `{}`", value::type_name(&other), for_each.source()),
                ));
            }
            Err(e) => return Err((eval_code(&e, Code::InvalidArgument), format!("`for_each`: {e}"))),
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

    /// A request written straight from the template's keys (`CompiledStep::request_fields`): the
    /// values evaluated in the template's order (the first failure is the one reported, as when
    /// the object is evaluated whole), then each written as its field, in field-number order,
    /// `null` left unset — the message `Payload::from_cel` writes for the object (it too puts the
    /// fields in number order), and an error where it gives one
    /// (`core/tests/wire.rs::an_object_written_field_by_field_is_the_object_written_whole`).
    fn build_message(
        &self,
        scope: &Scope<'_>,
        input: &prost_reflect::MessageDescriptor,
        keys: &[(String, Template)],
        fields: &[(usize, prost_reflect::FieldDescriptor)],
    ) -> Result<Payload, (Code, String)> {
        let costly = keys.iter().any(|(_, t)| t.is_costly());
        let values =
            evaluate(costly, &self.budget, || keys.iter().map(|(_, t)| t.eval(scope)).collect::<Result<Vec<_>, _>>())
                .map_err(|e| (eval_code(&e, Code::InvalidArgument), format!("building the request: {e}")))?;
        let mut out = Vec::with_capacity(64);
        for (i, field) in fields {
            let (Some((key, _)), Some(value)) = (keys.get(*i), values.get(*i)) else { continue };
            if matches!(value, Cel::Null) {
                continue;
            }
            nexus_core::wire::encode_field_from_cel(field, value, &mut out).map_err(|e| {
                (Code::InvalidArgument, format!("building the {} request: {key}: {}", input.full_name(), e.message))
            })?;
        }
        Ok(Payload::new(input.clone(), bytes::Bytes::from(out)))
    }

    /// The event an emit step publishes. Its identity is the execution and the step, so a
    /// durable execution that emits again after a crash publishes the same event (a duplicate
    /// the bus and the router ignore).
    fn event_to_emit(
        &self,
        step: &CompiledStep,
        plan: &nexus_core::plan::EmitPlan,
        data: Cel,
    ) -> Result<CloudEvent, (Code, String)> {
        if !matches!(data, Cel::Map(_)) {
            return Err((
                Code::InvalidArgument,
                format!("`emit.data` must be an object, got {}", value::type_name(&data)),
            ));
        }
        let subject = match &plan.subject {
            Some(t) => match evaluate(t.is_costly(), &self.budget, || t.eval(&self.scope())) {
                Ok(Cel::String(s)) => s.to_string(),
                Ok(other) => value::cel_to_serde(&other).to_string(),
                Err(e) => return Err((eval_code(&e, Code::InvalidArgument), format!("`emit.subject`: {e}"))),
            },
            None => String::new(),
        };
        Ok(CloudEvent {
            tenant: self.emitter.running.tenant.clone(),
            source: format!("nexus/patterns/{}", self.pattern.name),
            id: format!("{}/{}", self.id, step.id),
            event_type: plan.event_type.clone(),
            subject,
            time: SystemTime::now(),
            datacontenttype: "application/json".into(),
            data: value::cel_to_serde(&data),
        })
    }

    /// A `wait_for` step's registration: the context its matches read and the correlation
    /// values, evaluated now.
    fn wait_registration(&self, step: &CompiledStep) -> Result<WaitRegistration, (Code, String)> {
        let Target::Wait(plan) = &step.target else {
            return Err((Code::Internal, "not a wait_for step".into()));
        };
        if self.journal.is_none() || self.services.hub.is_none() {
            return Err((
                Code::FailedPrecondition,
                "wait_for needs the journal and the event bus; this server runs without one".into(),
            ));
        }
        let scope = self.scope();
        let mut correlations = Vec::with_capacity(plan.branches.len());
        let mut read: Vec<&str> = Vec::new();
        for b in &plan.branches {
            if let Some(m) = &b.matcher {
                read.extend(m.references().iter().filter_map(|r| r.step()));
            }
            correlations.push(match &b.correlation {
                Some(c) => {
                    let v = evaluate(c.value.is_costly(), &self.budget, || c.value.eval(&scope))
                        .map_err(|e| (eval_code(&e, Code::InvalidArgument), format!("`match`: {e}")))?;
                    Some(correlation_key(&value::cel_to_serde(&v)))
                }
                None => None,
            });
        }
        let steps: serde_json::Map<String, serde_json::Value> = read
            .into_iter()
            .filter_map(|id| self.outputs.get(&value::key(id)).map(|v| (id.to_string(), value::cel_to_serde(v))))
            .collect();
        Ok(WaitRegistration {
            execution_id: self.id.clone(),
            step_id: step.id.clone(),
            tenant: self.emitter.running.tenant.clone(),
            pattern_name: self.pattern.name.clone(),
            pattern_version: self.pattern.version.clone(),
            plan: plan.clone(),
            context: serde_json::json!({ "input": value::cel_to_serde(&self.input), "steps": steps }),
            correlations,
            deadline: SystemTime::now() + plan.timeout,
        })
    }

    /// Parks the execution (only waits left). Ok(true): parked, the run ends here. Ok(false): a
    /// wait resolved meanwhile; its result is handed to the wait, and the run goes on.
    async fn park(&mut self) -> Result<bool, ExecError> {
        let Some(hub) = self.services.hub else { return Ok(false) };
        let unavailable = |e: crate::JournalError| {
            self.emitter.running.request_suspend();
            ExecError { code: Code::Unavailable, message: format!("parking the execution: {e}"), step_id: None }
        };
        if hub.park(&self.id).await.map_err(unavailable)? {
            for &w in &self.waits_pending {
                self.services.waits.remove(&self.id, &self.pattern.steps[w].id);
            }
            self.parked = true;
            self.emitter.running.request_suspend();
            return Ok(true);
        }
        let mut delivered = false;
        for &w in &self.waits_pending {
            let step = &self.pattern.steps[w].id;
            if let Some(text) = hub.journaled(&self.id, step).await.map_err(unavailable)? {
                delivered |= self.services.waits.deliver(&self.id, step, text);
            }
        }
        if !delivered {
            // Resolved on another replica and not journaled yet where we read: look again soon.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(false)
    }

    fn finish(&mut self, done: StepDone, ready: &mut Vec<usize>, events: &mut Vec<Event>) -> Result<(), ExecError> {
        let i = done.index;
        let step = &self.pattern.steps[i];
        let record = &mut self.steps[i];
        record.duration = self.step_started[i].map(|t| t.elapsed()).unwrap_or_default();
        record.attempts = done.attempts;
        match done.result {
            Ok(Outcome { response, output }) => {
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
            let v =
                evaluate(field.template.is_costly(), &self.budget, || field.template.eval(&scope)).map_err(|e| {
                    ExecError {
                        code: eval_code(&e, Code::FailedPrecondition),
                        message: format!("output.{}: {e}", field.name),
                        step_id: None,
                    }
                })?;
            out.insert(field.key.clone(), v);
        }
        Ok(value::map(out))
    }
}

fn cancelled_message(reason: &str) -> String {
    if reason.is_empty() {
        "the execution was cancelled while it waited".to_string()
    } else {
        format!("the execution was cancelled while it waited: {reason}")
    }
}

/// A wait's journaled result as the step's outcome: the matched event, or DEADLINE_EXCEEDED.
fn wait_outcome(text: &str, target: &Target) -> Result<Outcome, CallError> {
    match crate::journal::decode_result(text, target) {
        Ok(StepResponse::TimedOut(message)) => Err(CallError::new(Code::DeadlineExceeded, message)),
        Ok(StepResponse::Cancelled(reason)) => Err(CallError::new(Code::Cancelled, cancelled_message(&reason))),
        Ok(response) => Ok(Outcome { output: response_to_cel(&response, target, &Reads::All)?, response }),
        Err(e) => Err(CallError::new(Code::Internal, format!("unreadable wait result: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use nexus_core::expr::{Budget, CostLimits};

    use super::evaluate;

    /// Whether a task spawned on the runtime runs while `evaluate` holds the only worker.
    /// (Run on the runtime's one worker.)
    async fn others_run_meanwhile(costly: bool, limits: CostLimits) -> bool {
        let on_the_worker = tokio::spawn(async move {
            let budget = Budget::new(limits, None);
            evaluate(costly, &budget, || {
                let (tx, rx) = mpsc::channel();
                tokio::spawn(async move { tx.send(()) });
                rx.recv_timeout(Duration::from_millis(500)).is_ok()
            })
        });
        on_the_worker.await.expect("the evaluation task")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn only_expressions_allowed_to_run_long_leave_the_worker() {
        let large = CostLimits { per_expression: u64::MAX / 4, per_execution: u64::MAX / 2 };
        assert!(others_run_meanwhile(true, large).await, "a costly expression with a large budget leaves the worker");
        assert!(!others_run_meanwhile(true, CostLimits::DEFAULT).await, "a bounded one runs in place");
        assert!(!others_run_meanwhile(false, large).await, "a cheap one runs in place");
    }
}

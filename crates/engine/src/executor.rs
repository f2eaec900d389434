//! The executor: runs one pattern execution as a DAG of step futures.
//!
//! A step starts the moment its last dependency finishes (or is skipped); independent steps run
//! concurrently on the execution's task. The first step that fails for good fails the execution:
//! the steps still in flight are dropped, which cancels their gRPC calls.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use cel::{Value as Cel, objects::Key};
use futures::{StreamExt, stream::FuturesUnordered};
use nexus_core::{
    CompiledPattern, CompiledStep,
    expr::Scope,
    value::{self, message_to_cel},
};
use prost_reflect::DynamicMessage;
use rand::Rng;
use tokio::time::Instant;
use tonic::Code;

use crate::{
    history::History,
    invoker::{Call, CallError, Invoker},
    record::{Attempt, ExecError, ExecutionRecord, ExecutionStatus, StepRecord, StepResponse, StepStatus},
};

/// Most messages a streaming step collects when its pattern runs through unary ExecutePattern.
pub const MAX_COLLECTED_STREAM_MESSAGES: usize = 10_000;

/// Runs patterns. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Engine {
    invoker: Arc<dyn Invoker>,
    history: Arc<History>,
}

/// One request to run a pattern.
pub struct ExecuteRequest {
    pub pattern: Arc<CompiledPattern>,
    pub input: Cel,
    /// The caller's deadline; the pattern's own timeout applies too, whichever is sooner.
    pub deadline: Option<std::time::Instant>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the input does not match the pattern's input schema: {}", describe(.0))]
    InvalidInput(Vec<(String, String)>),
}

fn describe(problems: &[(String, String)]) -> String {
    problems.iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; ")
}

impl Engine {
    pub fn new(invoker: Arc<dyn Invoker>, history: Arc<History>) -> Self {
        Self { invoker, history }
    }

    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Runs an execution to its end and records it in the history.
    pub async fn execute(&self, req: ExecuteRequest) -> Result<Arc<ExecutionRecord>, EngineError> {
        if !req.pattern.input.is_empty() {
            let problems = req.pattern.input.validate(&req.input);
            if !problems.is_empty() {
                return Err(EngineError::InvalidInput(problems));
            }
        }
        let deadline = match (req.deadline.map(Instant::from_std), req.pattern.timeout) {
            (Some(d), Some(t)) => Some(d.min(Instant::now() + t)),
            (d, t) => d.or_else(|| t.map(|t| Instant::now() + t)),
        };
        let id: Arc<str> = Arc::from(uuid::Uuid::now_v7().simple().to_string());
        let run = Run::new(&req.pattern, self.invoker.as_ref(), id, req.input, deadline);
        let mut record = run.go().await;
        record.idempotency_key = req.idempotency_key;
        let record = Arc::new(record);
        self.history.insert(record.clone());
        Ok(record)
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

/// The state of one execution while it runs.
struct Run<'a> {
    pattern: &'a CompiledPattern,
    invoker: &'a dyn Invoker,
    id: Arc<str>,
    input: Cel,
    execution: Cel,
    deadline: Option<Instant>,
    timeline: Timeline,
    /// When each running step started (monotonic), for its duration.
    step_started: Vec<Option<Instant>>,
    outputs: HashMap<Key, Cel>,
    skipped: Vec<bool>,
    waiting_on: Vec<usize>,
    steps: Vec<StepRecord>,
}

type StepFuture<'a> = Pin<Box<dyn Future<Output = (usize, Result<StepResponse, CallError>, Vec<Attempt>)> + Send + 'a>>;

impl<'a> Run<'a> {
    fn new(
        pattern: &'a CompiledPattern,
        invoker: &'a dyn Invoker,
        id: Arc<str>,
        input: Cel,
        deadline: Option<Instant>,
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
                call: s.action.name.clone(),
                status: StepStatus::Pending,
                started_at: None,
                duration: Duration::ZERO,
                request: None,
                response: None,
                error: None,
                attempts: Vec::new(),
            })
            .collect();
        Self {
            pattern,
            invoker,
            id,
            input,
            execution,
            deadline,
            timeline: Timeline::start(),
            step_started: vec![None; pattern.steps.len()],
            outputs: HashMap::with_capacity(pattern.steps.len()),
            skipped: vec![false; pattern.steps.len()],
            waiting_on: pattern.steps.iter().map(|s| s.deps.len()).collect(),
            steps,
        }
    }

    async fn go(mut self) -> ExecutionRecord {
        let mut running: FuturesUnordered<StepFuture<'a>> = FuturesUnordered::new();
        let mut failure: Option<ExecError> = None;
        let mut ready: Vec<usize> = self.pattern.roots.iter().rev().copied().collect();
        if let Err(e) = self.start(&mut ready, &mut running) {
            failure = Some(e);
        }
        let deadline = self.deadline;
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timer);
        while failure.is_none() && !running.is_empty() {
            tokio::select! {
                biased;
                Some((i, result, attempts)) = running.next() => {
                    if let Err(e) = self.finish(i, result, attempts, &mut ready) {
                        failure = Some(e);
                    } else if let Err(e) = self.start(&mut ready, &mut running) {
                        failure = Some(e);
                    }
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
        let now = Instant::now();
        for (s, started) in self.steps.iter_mut().zip(&self.step_started) {
            if s.status == StepStatus::Running {
                s.status = StepStatus::Cancelled;
                s.duration = started.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
            }
        }
        let (status, output, error) = match failure {
            Some(e) => (ExecutionStatus::Failed, None, Some(e)),
            None => match self.output() {
                Ok(out) => (ExecutionStatus::Succeeded, Some(out), None),
                Err(e) => (ExecutionStatus::Failed, None, Some(e)),
            },
        };
        ExecutionRecord {
            id: self.id,
            pattern_name: self.pattern.name.clone(),
            pattern_version: self.pattern.version.clone(),
            status,
            input: self.input,
            output,
            error,
            started_at: self.timeline.wall,
            duration: now.saturating_duration_since(self.timeline.origin),
            steps: self.steps,
            idempotency_key: None,
        }
    }

    /// Starts every ready step (skipping those whose `when` is false, which may make more ready).
    fn start(
        &mut self,
        ready: &mut Vec<usize>,
        running: &mut FuturesUnordered<StepFuture<'a>>,
    ) -> Result<(), ExecError> {
        while let Some(i) = ready.pop() {
            let step: &'a CompiledStep = &self.pattern.steps[i];
            let scope =
                Scope { input: &self.input, steps: &self.outputs, item: None, index: None, execution: &self.execution };
            if let Some(when) = &step.when {
                match when.eval(&scope) {
                    Ok(Cel::Bool(true)) => {}
                    Ok(Cel::Bool(false)) => {
                        self.steps[i].status = StepStatus::Skipped;
                        self.skipped[i] = true;
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
            let request = match step.request.eval(&scope) {
                Ok(v) => v,
                Err(e) => return Err(self.fail_step(i, Code::InvalidArgument, format!("building the request: {e}"))),
            };
            let request = match value::to_message(&request, &step.action.method.input()) {
                Ok(m) => m,
                Err(e) => {
                    return Err(self.fail_step(
                        i,
                        Code::InvalidArgument,
                        format!("building the {} request: {e}", step.action.method.input().full_name()),
                    ));
                }
            };
            let now = Instant::now();
            self.step_started[i] = Some(now);
            let record = &mut self.steps[i];
            record.status = StepStatus::Running;
            record.started_at = Some(self.timeline.wall(now));
            record.request = Some(request.clone());
            let key = format!("{}/{}", self.id, step.id);
            running.push(Box::pin(attempt_step(self.invoker, step, request, self.deadline, key, self.timeline)));
        }
        Ok(())
    }

    fn finish(
        &mut self,
        i: usize,
        result: Result<StepResponse, CallError>,
        attempts: Vec<Attempt>,
        ready: &mut Vec<usize>,
    ) -> Result<(), ExecError> {
        let step = &self.pattern.steps[i];
        let record = &mut self.steps[i];
        record.duration = self.step_started[i].map(|t| t.elapsed()).unwrap_or_default();
        record.attempts = attempts;
        match result {
            Ok(response) => {
                let output = match &response {
                    StepResponse::Message(m) => message_to_cel(m),
                    StepResponse::Stream(ms) => Cel::List(Arc::new(ms.iter().map(message_to_cel).collect())),
                };
                record.status = StepStatus::Succeeded;
                record.response = Some(response);
                self.outputs.insert(step.key.clone(), output);
                self.release_dependants(i, ready);
                Ok(())
            }
            Err(e) => {
                let attempts = record.attempts.len();
                let tries = if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() };
                Err(self.fail_step(
                    i,
                    e.code,
                    format!(
                        "step `{}` ({}) failed{tries}: {}: {}",
                        step.id,
                        step.action.name,
                        code_name(e.code),
                        e.message
                    ),
                ))
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
            format!("step `{}` ({}): {message}", step.id, step.action.name)
        };
        let error = ExecError { code, message, step_id: Some(step.id.clone()) };
        let record = &mut self.steps[i];
        record.status = StepStatus::Failed;
        record.error = Some(error.clone());
        error
    }

    fn output(&self) -> Result<Cel, ExecError> {
        let scope =
            Scope { input: &self.input, steps: &self.outputs, item: None, index: None, execution: &self.execution };
        let Some(fields) = &self.pattern.output else {
            return Ok(value::map(self.outputs.clone()));
        };
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

/// Calls a step's action, retrying per its policy within the execution's deadline.
async fn attempt_step(
    invoker: &dyn Invoker,
    step: &CompiledStep,
    request: DynamicMessage,
    deadline: Option<Instant>,
    idempotency_key: String,
    timeline: Timeline,
) -> (usize, Result<StepResponse, CallError>, Vec<Attempt>) {
    let policy = &step.retry;
    let mut attempts = Vec::with_capacity(1);
    let mut backoff = policy.initial_backoff;
    let mut number = 0;
    loop {
        number += 1;
        let now = Instant::now();
        let remaining = deadline.map(|d| d.saturating_duration_since(now));
        let timeout = match (step.timeout, remaining) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let call = Call {
            action: step.action.clone(),
            request: request.clone(),
            timeout,
            idempotency_key: idempotency_key.clone(),
        };
        let result = match timeout {
            Some(t) if t.is_zero() => Err(CallError::new(Code::DeadlineExceeded, "no time left before the call")),
            Some(t) => tokio::time::timeout(t, call_once(invoker, step.action.is_server_streaming(), call))
                .await
                .unwrap_or_else(|_| {
                    // Say which limit ran out: the step's own timeout or the whole execution's.
                    let by_execution = remaining.is_some_and(|r| step.timeout.is_none_or(|s| r < s));
                    let what = if by_execution { "the execution's deadline" } else { "the step's timeout" };
                    Err(CallError::new(Code::DeadlineExceeded, format!("no response within {t:?} ({what})")))
                }),
            None => call_once(invoker, step.action.is_server_streaming(), call).await,
        };
        attempts.push(Attempt {
            number,
            started_at: timeline.wall(now),
            duration: now.elapsed(),
            code: result.as_ref().map_or_else(|e| e.code, |_| Code::Ok),
            message: result.as_ref().err().map(|e| e.message.clone()).unwrap_or_default(),
        });
        let error = match result {
            Ok(r) => return (step.index, Ok(r), attempts),
            Err(e) => e,
        };
        let retryable = number < policy.max_attempts && policy.retry_on.iter().any(|c| c == code_name(error.code));
        // Full jitter: sleep a random time up to the current backoff, so retries of many
        // executions against one recovering backend spread out instead of arriving together.
        let sleep = Duration::from_secs_f64(backoff.as_secs_f64() * rand::rng().random_range(0.5..=1.0));
        let fits = deadline.is_none_or(|d| Instant::now() + sleep < d);
        if !retryable || !fits {
            return (step.index, Err(error), attempts);
        }
        tokio::time::sleep(sleep).await;
        backoff =
            Duration::from_secs_f64((backoff.as_secs_f64() * policy.multiplier).min(policy.max_backoff.as_secs_f64()));
    }
}

async fn call_once(invoker: &dyn Invoker, streaming: bool, call: Call) -> Result<StepResponse, CallError> {
    if !streaming {
        return invoker.unary(call).await.map(StepResponse::Message);
    }
    let mut stream = invoker.server_streaming(call).await?;
    let mut messages = Vec::new();
    while let Some(m) = stream.next().await {
        if messages.len() == MAX_COLLECTED_STREAM_MESSAGES {
            return Err(CallError::new(
                Code::ResourceExhausted,
                format!(
                    "the stream sent more than {MAX_COLLECTED_STREAM_MESSAGES} messages; use ExecutePatternStream to consume it"
                ),
            ));
        }
        messages.push(m?);
    }
    Ok(StepResponse::Stream(messages))
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

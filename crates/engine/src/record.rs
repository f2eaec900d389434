//! What an execution leaves behind: status, per-step attempts with timings, requests, responses
//! and errors. Payloads stay in their native form (messages, CEL values) and are converted to JSON
//! only when someone reads them.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use cel::Value as Cel;
use prost_reflect::DynamicMessage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Compensated,
}

impl ExecutionStatus {
    pub const ALL: [Self; 6] =
        [Self::Pending, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled, Self::Compensated];

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// The canonical upper-case name (`SUCCEEDED`), as the journal stores it and the API's enum
    /// spells it after its `EXECUTION_STATUS_` prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Compensated => "COMPENSATED",
        }
    }

    /// The status named by [`ExecutionStatus::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

/// An execution or step failure: a gRPC code and a message a person can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecError {
    pub code: tonic::Code,
    pub message: String,
    /// The step that failed; `None` for execution-level failures (deadline, bad output mapping).
    pub step_id: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub number: u32,
    /// The attempt's span in the execution's trace: its backend call's `traceparent` names it.
    pub span_id: u64,
    /// The for_each item this attempt called for.
    pub item: Option<u32>,
    pub started_at: SystemTime,
    pub duration: Duration,
    /// `Ok` or the failure's code.
    pub code: tonic::Code,
    pub message: String,
}

#[derive(Debug, Clone)]
pub enum StepResponse {
    Message(DynamicMessage),
    /// A server-streaming action's messages, collected.
    Stream(Vec<DynamicMessage>),
    /// A forwarded stream (`stream: true`): its last message and how many were forwarded.
    Forwarded {
        last: Option<DynamicMessage>,
        count: u64,
    },
    /// A for_each step: one response per item, in item order.
    Items(Vec<StepResponse>),
    /// A sub-pattern call: the child execution and its output.
    Pattern {
        execution_id: Arc<str>,
        output: Cel,
    },
    /// An `emit` step's published event, or the event a `wait_for` step matched.
    Event(Cel),
    /// A `wait_for` step that timed out (journaled, so a resumed execution fails it the same way).
    TimedOut(String),
    /// A `wait_for` step whose execution was cancelled while it waited (CancelExecution on a
    /// waiting durable execution, which may be parked or on another replica): the execution ends
    /// as cancelled, compensating what it completed.
    Cancelled(String),
}

/// The compensation of a completed step, run when its execution failed or was cancelled.
#[derive(Debug, Clone)]
pub struct CompensationRecord {
    pub call: Arc<str>,
    /// The compensation call's span in the execution's trace.
    pub span_id: u64,
    pub status: StepStatus,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub error: Option<ExecError>,
}

#[derive(Debug, Clone)]
pub struct StepRecord {
    pub step_id: Arc<str>,
    pub call: Arc<str>,
    pub status: StepStatus,
    pub started_at: Option<SystemTime>,
    pub duration: Duration,
    pub request: Option<DynamicMessage>,
    pub response: Option<StepResponse>,
    pub error: Option<ExecError>,
    pub attempts: Vec<Attempt>,
    pub compensation: Option<CompensationRecord>,
    /// Items of a for_each step.
    pub items: u32,
}

#[derive(Debug, Clone)]
pub struct ExecutionRecord {
    pub id: Arc<str>,
    /// The tenant of the caller who started it.
    pub tenant: Arc<str>,
    pub pattern_name: Arc<str>,
    pub pattern_version: Arc<str>,
    pub status: ExecutionStatus,
    pub input: Cel,
    /// The output mapping's result (a map), when the execution succeeded.
    pub output: Option<Cel>,
    pub error: Option<ExecError>,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub steps: Vec<StepRecord>,
    pub idempotency_key: Option<String>,
    /// Its place in a W3C trace (`None` for a record read back from the journal).
    pub trace: Option<Arc<crate::trace::TraceContext>>,
}

impl ExecutionRecord {
    /// What the record takes in memory, estimated: its payloads (CEL values by their contents,
    /// messages by their encoded size times the in-memory overhead of a `DynamicMessage`) plus
    /// fixed costs. Bounds the history by bytes, not only by count.
    pub fn approx_bytes(&self) -> usize {
        let mut total = 512 + cel_bytes(&self.input) + self.output.as_ref().map_or(0, cel_bytes);
        for step in &self.steps {
            total += 256 + step.attempts.len() * 96 + step.request.as_ref().map_or(0, message_bytes);
            total += step.response.as_ref().map_or(0, response_bytes);
            total += step.error.as_ref().map_or(0, |e| e.message.len());
        }
        total
    }
}

fn cel_bytes(v: &Cel) -> usize {
    match v {
        Cel::String(s) => 32 + s.len(),
        Cel::Bytes(b) => 32 + b.len(),
        Cel::List(items) => 32 + items.iter().map(cel_bytes).sum::<usize>(),
        Cel::Map(m) => {
            64 + m
                .map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        cel::objects::Key::String(s) => s.len(),
                        _ => 8,
                    };
                    48 + key + cel_bytes(v)
                })
                .sum::<usize>()
        }
        _ => 16,
    }
}

fn message_bytes(m: &DynamicMessage) -> usize {
    use prost::Message as _;
    64 + 4 * m.encoded_len()
}

fn response_bytes(r: &StepResponse) -> usize {
    match r {
        StepResponse::Message(m) => message_bytes(m),
        StepResponse::Stream(ms) => ms.iter().map(message_bytes).sum(),
        StepResponse::Forwarded { last, .. } => last.as_ref().map_or(0, message_bytes),
        StepResponse::Items(items) => items.iter().map(response_bytes).sum(),
        StepResponse::Pattern { output, .. } => cel_bytes(output),
        StepResponse::Event(e) => cel_bytes(e),
        StepResponse::TimedOut(s) | StepResponse::Cancelled(s) => s.len(),
    }
}

/// The canonical upper-case name of a gRPC code (`UNAVAILABLE`).
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

//! What an execution leaves behind: status, per-step attempts with timings, requests, responses
//! and errors. Messages stay encoded as they travelled ([`Payload`]: the request as sent, the
//! response as received) and are decoded only when someone reads them; a decoded
//! `DynamicMessage` takes ten times the memory, and the history holds a thousand records.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use cel::Value as Cel;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};

/// A protobuf message as it travelled: its type and its encoded bytes. A request is encoded once,
/// sent on every attempt and kept in the record (clones share the bytes); a response is kept as
/// the backend sent it and decoded where it is read (the step's output, GetExecution).
#[derive(Clone)]
pub struct Payload {
    descriptor: MessageDescriptor,
    bytes: Bytes,
}

impl Payload {
    /// `bytes` are trusted to be an encoding of `descriptor`'s message only as far as
    /// [`Payload::decode`] checks them.
    pub fn new(descriptor: MessageDescriptor, bytes: Bytes) -> Self {
        Self { descriptor, bytes }
    }

    pub fn encode(message: &DynamicMessage) -> Self {
        Self { descriptor: message.descriptor(), bytes: Bytes::from(message.encode_to_vec()) }
    }

    /// `value` encoded as `descriptor`'s message (straight from CEL: [`nexus_core::wire`]).
    pub fn from_cel(
        value: &cel::Value,
        descriptor: MessageDescriptor,
    ) -> Result<Self, nexus_core::value::ConvertError> {
        let bytes = nexus_core::wire::encode_from_cel(value, &descriptor)?;
        Ok(Self { descriptor, bytes: Bytes::from(bytes) })
    }

    pub fn descriptor(&self) -> &MessageDescriptor {
        &self.descriptor
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn decode(&self) -> Result<DynamicMessage, prost::DecodeError> {
        DynamicMessage::decode(self.descriptor.clone(), self.bytes.as_ref())
    }
}

/// A CEL value in a record (the input, the output, an event): as the execution produced it, or as
/// JSON text once the record is kept in the history ([`ExecutionRecord::compacted`]) if it is
/// larger than [`COMPACT_ABOVE`]. A CEL map of strings costs a few allocations per entry; its
/// JSON, a few dozen bytes — which matters for a large value, while writing a small one as JSON
/// cost more CPU per execution (~3 k instructions each for user_creation's input and output) than
/// its few hundred bytes are worth. The JSON mapping is the one every reader applies anyway
/// ([`nexus_core::value::cel_to_json_value`]: a `Struct` for the API, JSON for the journal), so
/// what a reader sees does not change.
#[derive(Clone, Debug)]
pub enum RecordValue {
    Cel(Cel),
    Json(Arc<str>),
}

impl RecordValue {
    pub fn cel(&self) -> std::borrow::Cow<'_, Cel> {
        match self {
            Self::Cel(v) => std::borrow::Cow::Borrowed(v),
            Self::Json(text) => std::borrow::Cow::Owned(
                serde_json::from_str::<serde_json::Value>(text)
                    .map_or(Cel::Null, |v| nexus_core::value::serde_to_cel(&v)),
            ),
        }
    }

    /// The form the history keeps: JSON text for a value larger than [`COMPACT_ABOVE`] (by
    /// [`RecordValue::approx_bytes`]), the value itself (shared, not copied) otherwise.
    pub fn compacted(&self) -> Self {
        match self {
            Self::Cel(v) if cel_bytes(v) > COMPACT_ABOVE => {
                Self::Json(Arc::from(nexus_core::value::cel_to_json_string(v)))
            }
            other => other.clone(),
        }
    }

    fn approx_bytes(&self) -> usize {
        match self {
            Self::Cel(v) => cel_bytes(v),
            Self::Json(text) => 16 + text.len(),
        }
    }
}

/// The estimated size past which the history keeps a CEL value as JSON text.
pub const COMPACT_ABOVE: usize = 1024;

impl From<Cel> for RecordValue {
    fn from(v: Cel) -> Self {
        Self::Cel(v)
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({}, {} bytes)", self.descriptor.full_name(), self.bytes.len())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.descriptor == other.descriptor && self.bytes == other.bytes
    }
}

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
    Message(Payload),
    /// A server-streaming action's messages, collected.
    Stream(Vec<Payload>),
    /// A forwarded stream (`stream: true`): its last message and how many were forwarded.
    Forwarded {
        last: Option<Payload>,
        count: u64,
    },
    /// A for_each step: one response per item, in item order.
    Items(Vec<StepResponse>),
    /// A sub-pattern call: the child execution and its output.
    Pattern {
        execution_id: Arc<str>,
        output: RecordValue,
    },
    /// An `emit` step's published event, or the event a `wait_for` step matched.
    Event(RecordValue),
    /// A `wait_for` step that timed out (journaled, so a resumed execution fails it the same way).
    TimedOut(String),
    /// A `wait_for` step whose execution was cancelled while it waited (CancelExecution on a
    /// waiting durable execution, which may be parked or on another replica): the execution ends
    /// as cancelled, compensating what it completed.
    Cancelled(String),
}

impl StepResponse {
    fn compacted(&self) -> Self {
        match self {
            Self::Items(items) => Self::Items(items.iter().map(Self::compacted).collect()),
            Self::Pattern { execution_id, output } => {
                Self::Pattern { execution_id: execution_id.clone(), output: output.compacted() }
            }
            Self::Event(e) => Self::Event(e.compacted()),
            other => other.clone(),
        }
    }
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
    pub request: Option<Payload>,
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
    pub input: RecordValue,
    /// The output mapping's result (a map), when the execution succeeded.
    pub output: Option<RecordValue>,
    pub error: Option<ExecError>,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub steps: Vec<StepRecord>,
    pub idempotency_key: Option<String>,
    /// Its place in a W3C trace (`None` for a record read back from the journal).
    pub trace: Option<Arc<crate::trace::TraceContext>>,
}

impl ExecutionRecord {
    /// The record as the history keeps it: CEL values as JSON text (messages are bytes already).
    pub fn compacted(&self) -> Self {
        let steps = self
            .steps
            .iter()
            .map(|s| StepRecord { response: s.response.as_ref().map(StepResponse::compacted), ..s.clone() })
            .collect();
        Self {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            pattern_name: self.pattern_name.clone(),
            pattern_version: self.pattern_version.clone(),
            status: self.status,
            input: self.input.compacted(),
            output: self.output.as_ref().map(RecordValue::compacted),
            error: self.error.clone(),
            started_at: self.started_at,
            duration: self.duration,
            steps,
            idempotency_key: self.idempotency_key.clone(),
            trace: self.trace.clone(),
        }
    }

    /// What the record takes in memory, estimated: its payloads (CEL values by their contents,
    /// messages by their encoded size) plus fixed costs. Bounds the history by bytes, not only by count.
    pub fn approx_bytes(&self) -> usize {
        let mut total = 512 + self.input.approx_bytes() + self.output.as_ref().map_or(0, RecordValue::approx_bytes);
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

fn message_bytes(m: &Payload) -> usize {
    48 + m.bytes.len()
}

fn response_bytes(r: &StepResponse) -> usize {
    match r {
        StepResponse::Message(m) => message_bytes(m),
        StepResponse::Stream(ms) => ms.iter().map(message_bytes).sum(),
        StepResponse::Forwarded { last, .. } => last.as_ref().map_or(0, message_bytes),
        StepResponse::Items(items) => items.iter().map(response_bytes).sum(),
        StepResponse::Pattern { output, .. } => output.approx_bytes(),
        StepResponse::Event(e) => e.approx_bytes(),
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

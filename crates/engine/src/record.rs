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
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
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
}

/// The compensation of a completed step, run when its execution failed or was cancelled.
#[derive(Debug, Clone)]
pub struct CompensationRecord {
    pub call: Arc<str>,
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
}

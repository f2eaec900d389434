//! What compilation produces: the plan the engine runs (`CompiledPattern`, `CompiledStep`) and the
//! small types around it. Only data and the defaults the document may leave out.

use std::{sync::Arc, time::Duration};

use cel::objects::Key;

use crate::{
    catalog::Action,
    expr::{Expr, Template},
    input::InputSchema,
    pb,
};

/// Most steps a pattern may have.
pub const MAX_STEPS: usize = 256;

/// Default and largest fan-out concurrency of a for_each step.
pub const DEFAULT_CONCURRENCY: usize = 10;
pub const MAX_CONCURRENCY: usize = 1000;

/// The prefix of a sub-pattern call: `pattern:NAME@VERSION`.
pub const PATTERN_CALL_PREFIX: &str = "pattern:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Ephemeral,
    Durable,
}

/// Retry policy of a step, with defaults filled in.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// gRPC code names that are retried.
    pub retry_on: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            retry_on: vec!["UNAVAILABLE".into(), "RESOURCE_EXHAUSTED".into(), "ABORTED".into()],
        }
    }
}

/// A validated pattern, ready to execute. Cheap to share (`Arc<CompiledPattern>`).
#[derive(Debug)]
pub struct CompiledPattern {
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub document: pb::Pattern,
    pub durability: Durability,
    pub timeout: Option<Duration>,
    pub input: InputSchema,
    pub steps: Vec<CompiledStep>,
    /// Output mapping (an object template); `None` returns every step's output.
    pub output: Option<Vec<OutputField>>,
    /// Steps with no dependencies: where execution starts.
    pub roots: Vec<usize>,
}

#[derive(Debug)]
pub struct OutputField {
    pub name: String,
    pub key: Key,
    pub template: Template,
    /// Steps whose output this field reads: when one of them was skipped the field is left out.
    pub reads_steps: Vec<usize>,
}

/// What a step calls: a backend action, or another registered pattern (run in-process).
#[derive(Debug, Clone)]
pub enum Target {
    Action(Action),
    Pattern(Arc<CompiledPattern>),
}

impl Target {
    pub fn is_server_streaming(&self) -> bool {
        matches!(self, Target::Action(a) if a.is_server_streaming())
    }
}

/// Finds registered patterns for `call: pattern:NAME@VERSION` steps.
pub trait PatternLookup {
    /// `version` is an exact semantic version or `latest`.
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<CompiledPattern>>;
}

/// No patterns (for documents checked without a registry).
pub struct NoPatterns;

impl PatternLookup for NoPatterns {
    fn lookup(&self, _: &str, _: &str) -> Option<Arc<CompiledPattern>> {
        None
    }
}

/// Splits `pattern:NAME@VERSION` (VERSION defaults to `latest`).
pub fn parse_pattern_call(call: &str) -> Option<(&str, &str)> {
    let rest = call.strip_prefix(PATTERN_CALL_PREFIX)?;
    Some(rest.split_once('@').unwrap_or((rest, "latest")))
}

#[derive(Debug)]
pub struct CompiledStep {
    pub index: usize,
    pub id: Arc<str>,
    pub key: Key,
    /// The `call` as written (resolved): an action name or `pattern:NAME@VERSION`.
    pub call: Arc<str>,
    pub target: Target,
    /// The request template; evaluates to a map converted into the action's input message.
    pub request: Template,
    pub when: Option<Expr>,
    pub deps: Vec<usize>,
    pub dependants: Vec<usize>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// Forward each message of a server-streaming action to the caller as it arrives.
    pub stream: bool,
    /// `for_each`: the step runs once per item of this list.
    pub for_each: Option<Expr>,
    /// Fan-out concurrency cap (for_each).
    pub concurrency: usize,
    pub compensate: Option<Compensation>,
}

/// The action that undoes a completed step when its execution fails.
#[derive(Debug)]
pub struct Compensation {
    pub action: Action,
    pub request: Template,
}

/// Converts a protobuf duration; `None` when it is negative.
pub fn to_duration(d: &prost_types::Duration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

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
    /// The `on:` triggers.
    pub triggers: Vec<TriggerPlan>,
    /// The `schedule:` (a cron), if any.
    pub schedule: Option<super::SchedulePlan>,
}

#[derive(Debug)]
pub struct OutputField {
    pub name: String,
    pub key: Key,
    pub template: Template,
    /// Steps whose output this field reads: when one of them was skipped the field is left out.
    pub reads_steps: Vec<usize>,
}

/// What a step does: call a backend action or another registered pattern (run in-process),
/// publish an event, or wait for one.
#[derive(Debug, Clone)]
pub enum Target {
    Action(Action),
    Pattern(Arc<CompiledPattern>),
    Emit(Arc<EmitPlan>),
    Wait(Arc<WaitPlan>),
}

/// The fields of an event as expressions read it (`event.type`, `steps.w.data.x`).
pub const EVENT_FIELDS: &[&str] = &["id", "source", "type", "subject", "time", "datacontenttype", "data", "tenant"];

/// Default and longest wait of a `wait_for` step.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(24 * 3600);
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// Most branches of a `wait_for.any`, and most triggers of a pattern.
pub const MAX_WAIT_BRANCHES: usize = 16;
pub const MAX_TRIGGERS: usize = 16;

/// An `emit` step: the event it publishes.
#[derive(Debug)]
pub struct EmitPlan {
    pub event_type: String,
    /// Evaluates to the event's `data` (an object).
    pub data: Template,
    pub subject: Option<Template>,
}

/// A `wait_for` step: one branch, or the branches of `any` (the first match wins).
#[derive(Debug)]
pub struct WaitPlan {
    pub branches: Vec<WaitBranch>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct WaitBranch {
    pub event_type: String,
    /// No `match`: any event of the type.
    pub matcher: Option<Expr>,
    /// The match is `event.PATH == VALUE` where VALUE does not read the event: events are found
    /// by (PATH, VALUE) instead of evaluating the match against every waiting execution.
    pub correlation: Option<Correlation>,
}

#[derive(Debug)]
pub struct Correlation {
    /// The path below `event` (`data.order_id`).
    pub event_path: Vec<String>,
    /// The other side, evaluated when the wait registers.
    pub value: Expr,
}

/// An `on:` trigger: an execution per matching event.
#[derive(Debug)]
pub struct TriggerPlan {
    pub event_type: String,
    pub filter: Option<Expr>,
    /// The execution input; `None`: the event's `data`.
    pub input: Option<Template>,
}

impl Target {
    pub fn is_server_streaming(&self) -> bool {
        matches!(self, Target::Action(a) if a.is_server_streaming())
    }

    pub fn is_wait(&self) -> bool {
        matches!(self, Target::Wait(_))
    }
}

/// Finds registered patterns for `call: pattern:NAME@VERSION` steps.
pub trait PatternLookup {
    /// `version` is an exact semantic version or `latest`.
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<CompiledPattern>>;

    /// The JSON Schema of an event type's `data`, when one is registered: `event.data.*` in
    /// triggers and `wait_for` matches is then checked against it (`dyn` otherwise).
    fn event_schema(&self, _event_type: &str) -> Option<InputSchema> {
        None
    }
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
    /// The `call` as written (resolved): an action name or `pattern:NAME@VERSION`; for an event
    /// step `emit:TYPE` or `wait_for:TYPE[|TYPE…]`.
    pub call: Arc<str>,
    pub target: Target,
    /// The request template; evaluates to a map converted into the action's input message.
    pub request: Template,
    /// For an action whose `with` is an object: the input message's field each key names, in
    /// field-number order, with the key's index ([`crate::wire::request_fields`]); the request is
    /// then written from the keys' values with no map in between.
    pub request_fields: Option<Vec<(usize, prost_reflect::FieldDescriptor)>>,
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
    /// What the pattern's expressions read of this step's output: a unary call's response is
    /// decoded into CEL with only those fields ([`crate::wire::decode_to_cel_reading`]).
    pub reads: crate::wire::Reads,
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

//! The executor: runs pattern executions as DAGs of step futures.
//!
//! A step starts the moment its last dependency finishes (or is skipped); independent steps run
//! concurrently on the execution's task. The first step that fails for good fails the execution:
//! the steps still in flight are dropped, which cancels their gRPC calls, and the completed steps
//! that declare `compensate` are compensated in reverse order of completion.
//!
//! - [`engine`]: the [`Engine`] — entry points, the registry of running executions, shutdown.
//! - [`keyed`]: idempotency keys — one execution per (pattern, key), on every execute path.
//! - [`run`]: one execution's state machine ([`run::Run`], built from [`run::RunOptions`]).
//! - [`step`]: one step's attempts (retries, deadlines) and its call (unary, streamed).
//! - [`fan_out`]: `for_each` steps.
//! - [`compensation`]: undoing completed steps after a failure.
//! - [`subpattern`]: a registered pattern called as a step.

mod compensation;
mod engine;
mod fan_out;
mod keyed;
mod run;
mod step;
mod subpattern;

use std::time::Duration;

pub use engine::{CheckedRequest, Engine, EngineError, ExecuteRequest, Resumption};
pub use keyed::Keyed;

/// Most messages a streaming step collects when it is not forwarded (`stream: false`).
pub const MAX_COLLECTED_STREAM_MESSAGES: usize = 10_000;
/// Most items a for_each step fans out to.
pub const MAX_FAN_OUT: usize = 10_000;
/// Deepest nesting of sub-pattern calls.
pub const MAX_PATTERN_DEPTH: u32 = 8;
/// Time a compensation call gets when its step declares no timeout.
pub const DEFAULT_COMPENSATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The sooner of a caller's deadline and `timeout` from now.
fn sooner(deadline: Option<tokio::time::Instant>, timeout: Option<Duration>) -> Option<tokio::time::Instant> {
    let own = timeout.map(|t| tokio::time::Instant::now() + t);
    match (deadline, own) {
        (Some(d), Some(t)) => Some(d.min(t)),
        (d, t) => d.or(t),
    }
}

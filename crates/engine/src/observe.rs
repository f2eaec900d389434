//! Watching executions from outside: how metrics are counted and spans exported.

use std::sync::Arc;

use crate::record::ExecutionRecord;

/// Told of every finished execution — top-level and sub-pattern, ephemeral and durable — with its
/// whole record (steps, attempts with their durations, codes and span ids, the trace context).
/// Metrics and traces are built from the record after the fact, so the steps' path carries no
/// instrumentation of its own.
pub trait Observer: Send + Sync + 'static {
    /// Called once per finished execution (not for one suspended to be resumed elsewhere), on the
    /// execution's task: it must be cheap and must not block.
    fn finished(&self, record: &Arc<ExecutionRecord>);
}

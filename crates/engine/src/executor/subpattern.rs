//! A registered pattern called as a step: a child execution in-process, with its own id (kept in
//! the history), the parent's trace and remaining deadline, and no event observers.

use std::sync::Arc;

use cel::Value as Cel;
use nexus_core::CompiledPattern;
use tonic::Code;

use super::{
    MAX_PATTERN_DEPTH,
    run::{Run, RunOptions},
    sooner,
    step::CallContext,
};
use crate::{
    events::{Emitter, RunningExecution},
    invoker::CallError,
    record::ExecutionStatus,
};

/// Runs a registered pattern as a step, in-process: a child execution with its own id (recorded in
/// the history), the parent's trace and remaining deadline, and no event observers. Returns the
/// child's id and output.
pub(super) async fn run_pattern(
    ctx: &CallContext<'_>,
    callee: &Arc<CompiledPattern>,
    input: Cel,
    span_id: u64,
) -> Result<(Arc<str>, Cel), CallError> {
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
    let input = callee.input.coerce(input);
    let deadline = sooner(ctx.deadline, callee.timeout);
    let id: Arc<str> = Arc::from(uuid::Uuid::now_v7().simple().to_string());
    // A sub-execution belongs to the caller's tenant.
    let tenant = ctx.emitter.running.tenant.clone();
    let emitter = Emitter { running: Arc::new(RunningExecution::new(id.clone(), false, tenant)), direct: None };
    let child = Run::new(RunOptions {
        pattern: callee,
        services: ctx.services,
        id,
        input,
        deadline,
        emitter,
        trace: Arc::new(ctx.trace.child(span_id)),
        depth: ctx.depth + 1,
        journal: None,
        journal_start: None,
        refused: None,
        prefilled: Vec::new(),
    });
    let record = Arc::new(Box::pin(child.go()).await);
    ctx.services.history.insert(record.clone());
    if let Some(o) = ctx.services.observer {
        o.finished(&record);
    }
    match (record.status, &record.output) {
        (ExecutionStatus::Succeeded, output) => {
            Ok((record.id.clone(), output.as_ref().map_or(Cel::Null, |o| o.cel().into_owned())))
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

//! Compensation: after a failure (or a cancellation), the completed steps that declare
//! `compensate` are undone, newest first; a compensation failure is reported, not retried.

use tokio::time::Instant;

use super::{DEFAULT_COMPENSATION_TIMEOUT, run::Run};
use crate::{
    events::Event,
    invoker::{Call, CallError},
    record::{CompensationRecord, ExecError, Payload, StepStatus, code_name},
};
use nexus_core::CompiledStep;
use tonic::Code;

impl<'a> Run<'a> {
    /// Runs the compensations of completed steps, newest first. Returns whether any ran and the
    /// first compensation failure.
    pub(super) async fn compensate(&mut self) -> (bool, Option<ExecError>) {
        let mut ran = false;
        let mut first_error = None;
        let completed = std::mem::take(&mut self.completed);
        for &i in completed.iter().rev() {
            let step: &'a CompiledStep = &self.pattern.steps[i];
            let Some(comp) = &step.compensate else { continue };
            ran = true;
            let started = Instant::now();
            let span_id = crate::trace::new_span_id();
            let result =
                match super::run::evaluate(comp.request.is_costly(), &self.budget, || comp.request.eval(&self.scope()))
                    .map_err(|e| CallError::new(super::run::eval_code(&e, Code::InvalidArgument), e.to_string()))
                    .and_then(|v| {
                        Payload::from_cel(&v, comp.action.method.input())
                            .map_err(|e| CallError::new(Code::InvalidArgument, e.to_string()))
                    }) {
                    Ok(request) => {
                        let timeout = step.timeout.unwrap_or(DEFAULT_COMPENSATION_TIMEOUT);
                        let call = Call {
                            action: comp.action.clone(),
                            request,
                            timeout: Some(timeout),
                            idempotency_key: format!("{}/{}/compensate", self.id, step.id),
                            traceparent: Some(self.trace.traceparent(span_id)),
                            tracestate: self.trace.tracestate.clone(),
                            lane: self.trace.span_id,
                        };
                        match tokio::time::timeout(timeout, self.services.invoker.unary(call)).await {
                            Ok(r) => r.map(|_| ()),
                            Err(_) => {
                                Err(CallError::new(Code::DeadlineExceeded, format!("no response within {timeout:?}")))
                            }
                        }
                    }
                    Err(e) => Err(e),
                };
            let duration = started.elapsed();
            let error = result.err().map(|e| ExecError {
                code: e.code,
                message: format!(
                    "compensating step `{}` ({}) failed: {}: {}",
                    step.id,
                    comp.action.name,
                    code_name(e.code),
                    e.message
                ),
                step_id: Some(step.id.clone()),
            });
            if first_error.is_none() {
                first_error.clone_from(&error);
            }
            self.emitter.emit(Event::StepCompensated { step: step.id.clone(), error: error.clone(), duration }).await;
            self.steps[i].compensation = Some(CompensationRecord {
                call: comp.action.name.clone(),
                span_id,
                status: if error.is_some() { StepStatus::Failed } else { StepStatus::Succeeded },
                started_at: self.timeline.wall(started),
                duration,
                error,
            });
        }
        self.completed = completed;
        (ran, first_error)
    }
}

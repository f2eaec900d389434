//! A step's execution options and their limits: fan-out concurrency, streaming, timeout, retry.

use std::time::Duration;

use crate::{diagnostic::Diagnostics, expr::Expr, pb};

use super::model::{MAX_CONCURRENCY, RetryPolicy, to_duration};

/// gRPC status code names, as written in `retry_on`.
pub const GRPC_CODES: &[&str] = &[
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Pass 6: `concurrency` and `stream` against `for_each` (the compiled one: an invalid
/// `for_each` was already reported, and is treated as absent here).
pub(super) fn check_fan_out(doc: &pb::Pattern, for_each: &[Option<Expr>], diags: &mut Diagnostics) {
    for (i, (step, for_each)) in doc.steps.iter().zip(for_each).enumerate() {
        if step.concurrency as usize > MAX_CONCURRENCY {
            diags.error(format!("steps[{i}].concurrency"), format!("at most {MAX_CONCURRENCY}"));
        }
        if step.concurrency > 0 && for_each.is_none() {
            diags.warning(format!("steps[{i}].concurrency"), "has no effect without for_each");
        }
        // A fan-out's output is the list of its items' outputs; a forwarded stream keeps only its
        // last message. The two do not combine.
        if step.stream && for_each.is_some() && step.emit.is_none() && step.wait_for.is_none() {
            diags.error(format!("steps[{i}].stream"), "a streaming step cannot also fan out with for_each");
        }
    }
}

/// Pass 8: each step's timeout (per attempt).
pub(super) fn timeouts(doc: &pb::Pattern, diags: &mut Diagnostics) -> Vec<Option<Duration>> {
    doc.steps
        .iter()
        .enumerate()
        .map(|(i, step)| match to_duration(&step.timeout?) {
            Some(t) if !t.is_zero() => Some(t),
            _ => {
                diags.error(format!("steps[{i}].timeout"), "must be a positive duration such as \"2s\"");
                None
            }
        })
        .collect()
}

/// Pass 9: each step's retry policy, defaults filled in.
pub(super) fn retry_policies(doc: &pb::Pattern, diags: &mut Diagnostics) -> Vec<RetryPolicy> {
    doc.steps.iter().enumerate().map(|(i, step)| retry_policy(i, step.retry.as_ref(), diags)).collect()
}

fn retry_policy(i: usize, r: Option<&pb::RetryPolicy>, diags: &mut Diagnostics) -> RetryPolicy {
    let mut p = RetryPolicy::default();
    let Some(r) = r else { return p };
    let path = format!("steps[{i}].retry");
    if r.max_attempts > 100 {
        diags.error(format!("{path}.max_attempts"), "at most 100 attempts");
    }
    p.max_attempts = r.max_attempts.max(1);
    if let Some(d) = r.initial_backoff.and_then(|d| to_duration(&d)) {
        p.initial_backoff = d;
    }
    if let Some(d) = r.max_backoff.and_then(|d| to_duration(&d)) {
        p.max_backoff = d;
    }
    if r.multiplier != 0.0 {
        if r.multiplier < 1.0 {
            diags.error(format!("{path}.multiplier"), "must be at least 1");
        }
        p.multiplier = r.multiplier;
    }
    if !r.retry_on.is_empty() {
        for (j, code) in r.retry_on.iter().enumerate() {
            if !GRPC_CODES.contains(&code.as_str()) {
                diags.error(
                    format!("{path}.retry_on[{j}]"),
                    format!("unknown gRPC code `{code}`; use one of {}", GRPC_CODES.join(", ")),
                );
            }
        }
        p.retry_on = r.retry_on.clone();
    }
    p
}

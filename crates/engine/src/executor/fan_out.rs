//! `for_each` steps: one call per item, a bounded number at a time, outputs in item order.

use futures::StreamExt;

use std::sync::Arc;

use cel::Value as Cel;

use super::{
    run::StepDone,
    step::{CallContext, Outcome, Request, attempt},
};
use crate::{invoker::CallError, record::StepResponse};

/// Runs a for_each step: every item's call, at most `concurrency` at a time (a slow item does not
/// hold a slot once others finish), outputs in item order; the first failure fails the step (and
/// drops the calls still in flight).
pub(super) async fn fan_out(ctx: CallContext<'_>, index: usize, requests: Vec<Request>) -> StepDone {
    let concurrency = ctx.step.concurrency.max(1);
    let ctx = &ctx;
    let n = requests.len();
    let mut results = futures::stream::iter(requests.into_iter().enumerate())
        .map(|(item, request)| async move { (item, attempt(ctx, request, Some(item as u32)).await) })
        .buffer_unordered(concurrency);
    let mut outcomes: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    let mut attempts = Vec::new();
    while let Some((item, (result, mut a))) = results.next().await {
        attempts.append(&mut a);
        match result {
            Ok(r) => outcomes[item] = Some(r),
            Err(e) => {
                return StepDone {
                    index,
                    result: Err(CallError::new(e.code, format!("item {item}: {}", e.message))),
                    attempts,
                };
            }
        }
    }
    attempts.sort_by_key(|a| (a.item, a.number));
    let (responses, outputs): (Vec<StepResponse>, Vec<Cel>) =
        outcomes.into_iter().flatten().map(|o| (o.response, o.output)).unzip();
    let outcome = Outcome { response: StepResponse::Items(responses), output: Cel::List(Arc::new(outputs)) };
    StepDone { index, result: Ok(outcome), attempts }
}

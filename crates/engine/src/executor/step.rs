//! One step's calls: attempts with retries, backoff and deadlines, and the call itself (unary,
//! a server stream collected or forwarded to the caller, or a sub-pattern).

use std::{sync::Arc, time::Duration};

use cel::Value as Cel;
use futures::StreamExt;
use nexus_core::{CompiledStep, Target, value::message_to_cel, wire::Reads};
use prost_reflect::DynamicMessage;
use rand::Rng;
use tokio::time::Instant;
use tonic::Code;

use super::{
    MAX_COLLECTED_STREAM_MESSAGES,
    run::{Services, Timeline},
    subpattern::run_pattern,
};
use crate::{
    events::{Emitter, Event},
    invoker::{Call, CallError},
    record::{Attempt, ExecError, Payload, StepResponse, code_name},
};

/// Everything a step's calls need, shared by its attempts and items. Owned (cheap clones) so the
/// step futures do not borrow the `Run`, which they run alongside.
#[derive(Clone)]
pub(super) struct CallContext<'a> {
    pub services: Services<'a>,
    pub depth: u32,
    pub step: &'a CompiledStep,
    pub deadline: Option<Instant>,
    pub timeline: Timeline,
    pub execution_id: Arc<str>,
    pub trace: Arc<crate::trace::TraceContext>,
    pub emitter: Emitter,
}

/// One call's request: a message for an action, a CEL value (the input) for a sub-pattern, the
/// event to publish for an emit step.
#[derive(Clone)]
pub(super) enum Request {
    Message(Payload),
    Input(Cel),
    Event(crate::bus::CloudEvent),
}

pub(super) enum Requests {
    One(Request),
    Items(Vec<Request>),
}

/// A completed call: its response as recorded and journaled, and its output as the pattern's
/// expressions see it (`steps.<id>`), converted once, when the response arrived.
pub(super) struct Outcome {
    pub response: StepResponse,
    pub output: Cel,
}

/// A message as the pattern sees it; a backend's bytes that are not its declared message fail
/// the call (INTERNAL, like any malformed response).
fn decoded(payload: &Payload) -> Result<DynamicMessage, CallError> {
    payload.decode().map_err(|e| {
        CallError::new(Code::Internal, format!("decoding {} response: {e}", payload.descriptor().full_name()))
    })
}

/// A message as the pattern's expressions see it, read from its bytes (no `DynamicMessage` in
/// between: [`nexus_core::wire`]); bytes that are not the declared message fail the call.
fn payload_to_cel(payload: &Payload) -> Result<Cel, CallError> {
    payload_to_cel_reading(payload, &Reads::All)
}

/// [`payload_to_cel`] of the fields the pattern reads (the step's [`CompiledStep::reads`]).
fn payload_to_cel_reading(payload: &Payload, reads: &Reads) -> Result<Cel, CallError> {
    nexus_core::wire::decode_to_cel_reading(payload.descriptor(), payload.bytes(), reads).map_err(|e| {
        CallError::new(Code::Internal, format!("decoding {} response: {e}", payload.descriptor().full_name()))
    })
}

/// A recorded response's output (a journaled one, on resume, or a wait's result); `reads`: what
/// the pattern reads of a unary call's message.
pub(super) fn response_to_cel(response: &StepResponse, target: &Target, reads: &Reads) -> Result<Cel, CallError> {
    Ok(match response {
        StepResponse::Message(m) => payload_to_cel_reading(m, reads)?,
        StepResponse::Stream(ms) => Cel::List(Arc::new(ms.iter().map(payload_to_cel).collect::<Result<_, _>>()?)),
        StepResponse::Forwarded { last, .. } => match (last, target) {
            (Some(m), _) => payload_to_cel(m)?,
            (None, Target::Action(a)) => message_to_cel(&DynamicMessage::new(a.method.output())),
            (None, _) => Cel::Null,
        },
        StepResponse::Items(items) => Cel::List(Arc::new(
            items.iter().map(|r| response_to_cel(r, target, &Reads::All)).collect::<Result<_, _>>()?,
        )),
        StepResponse::Pattern { output, .. } => output.cel().into_owned(),
        StepResponse::Event(event) => event.cel().into_owned(),
        StepResponse::TimedOut(_) | StepResponse::Cancelled(_) => Cel::Null,
    })
}

/// Calls a step's action, retrying per its policy within the execution's deadline.
pub(super) async fn attempt(
    ctx: &CallContext<'_>,
    request: Request,
    item: Option<u32>,
) -> (Result<Outcome, CallError>, Vec<Attempt>) {
    let step = ctx.step;
    let policy = &step.retry;
    let mut attempts = Vec::with_capacity(1);
    let mut backoff = policy.initial_backoff;
    let mut number = 0;
    // `<execution>/<step>[/<item>]`, written without `format!`'s machinery (once per step).
    let mut idempotency_key = String::with_capacity(ctx.execution_id.len() + step.id.len() + 12);
    idempotency_key.push_str(&ctx.execution_id);
    idempotency_key.push('/');
    idempotency_key.push_str(&step.id);
    if let Some(i) = item {
        use std::fmt::Write as _;
        let _ = write!(idempotency_key, "/{i}");
    }
    // The execution's calls share a connection; a for_each step's items spread over them.
    let lane = ctx.trace.span_id.wrapping_add(item.map_or(0, u64::from));
    loop {
        number += 1;
        let now = Instant::now();
        let remaining = ctx.deadline.map(|d| d.saturating_duration_since(now));
        let timeout = match (step.timeout, remaining) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let span_id = crate::trace::new_span_id();
        let once = call_once(ctx, &request, timeout, &idempotency_key, span_id, lane);
        let result = match timeout {
            Some(t) if t.is_zero() => Err(CallError::new(Code::DeadlineExceeded, "no time left before the call")),
            Some(t) => tokio::time::timeout(t, once).await.unwrap_or_else(|_| {
                // Say which limit ran out: the step's own timeout or the whole execution's.
                let by_execution = remaining.is_some_and(|r| step.timeout.is_none_or(|s| r < s));
                let what = if by_execution { "the execution's deadline" } else { "the step's timeout" };
                Err(CallError::new(Code::DeadlineExceeded, format!("no response within {t:?} ({what})")))
            }),
            None => once.await,
        };
        attempts.push(Attempt {
            number,
            span_id,
            item,
            started_at: ctx.timeline.wall(now),
            duration: now.elapsed(),
            code: result.as_ref().map_or_else(|e| e.code, |_| Code::Ok),
            message: result.as_ref().err().map(|e| e.message.clone()).unwrap_or_default(),
        });
        let error = match result {
            Ok(r) => return (Ok(r), attempts),
            Err(e) => e,
        };
        let retryable = number < policy.max_attempts && policy.retry_on.iter().any(|c| c == code_name(error.code));
        // Full jitter: sleep a random time up to the current backoff, so retries of many
        // executions against one recovering backend spread out instead of arriving together.
        let sleep = Duration::from_secs_f64(backoff.as_secs_f64() * rand::rng().random_range(0.5..=1.0));
        let fits = ctx.deadline.is_none_or(|d| Instant::now() + sleep < d);
        if !retryable || !fits {
            return (Err(error), attempts);
        }
        let err = ExecError { code: error.code, message: error.message.clone(), step_id: Some(step.id.clone()) };
        ctx.emitter.emit(Event::StepRetrying { step: step.id.clone(), attempt: number + 1, error: err }).await;
        tokio::time::sleep(sleep).await;
        backoff =
            Duration::from_secs_f64((backoff.as_secs_f64() * policy.multiplier).min(policy.max_backoff.as_secs_f64()));
    }
}

async fn call_once(
    ctx: &CallContext<'_>,
    request: &Request,
    timeout: Option<Duration>,
    idempotency_key: &str,
    span_id: u64,
    lane: u64,
) -> Result<Outcome, CallError> {
    let step = ctx.step;
    let (action, message) = match (&step.target, request) {
        (Target::Action(a), Request::Message(m)) => (a, m),
        (Target::Pattern(p), Request::Input(input)) => {
            let (execution_id, output) = run_pattern(ctx, p, input.clone(), span_id).await?;
            let response = StepResponse::Pattern { execution_id, output: output.clone().into() };
            return Ok(Outcome { response, output });
        }
        (Target::Emit(_), Request::Event(event)) => {
            let Some(hub) = ctx.services.hub else {
                return Err(CallError::new(Code::FailedPrecondition, "events are not configured on this server"));
            };
            let json = crate::waits::event_json(event);
            hub.emit(event.clone()).await.map_err(|e| CallError::new(Code::Unavailable, e.to_string()))?;
            let output = nexus_core::value::serde_to_cel(&json);
            return Ok(Outcome { response: StepResponse::Event(output.clone().into()), output });
        }
        _ => return Err(CallError::new(Code::Internal, "request does not match the step's target")),
    };
    let call = Call {
        action: action.clone(),
        request: message.clone(),
        timeout,
        idempotency_key: idempotency_key.to_string(),
        traceparent: Some(ctx.trace.traceparent(span_id)),
        tracestate: ctx.trace.tracestate.clone(),
        lane,
    };
    if !action.is_server_streaming() {
        let response = ctx.services.invoker.unary(call).await?;
        let output = payload_to_cel_reading(&response, &step.reads)?;
        return Ok(Outcome { response: StepResponse::Message(response), output });
    }
    let mut stream = ctx.services.invoker.server_streaming(call).await?;
    if step.stream {
        // Forward each message as it arrives. `emit` waits for room in the caller's channel, so
        // a slow caller stops this loop, which stops reading the backend stream: HTTP/2 flow
        // control then holds the backend. Memory stays bounded by the channel and the windows.
        let mut count = 0u64;
        let mut last = None;
        while let Some(m) = stream.next().await {
            let m = m?;
            let message = decoded(&m)?;
            if ctx.emitter.listening()
                && !ctx.emitter.emit(Event::Message { step: step.id.clone(), index: count, message }).await
            {
                return Err(CallError::new(Code::Cancelled, "the caller went away"));
            }
            count += 1;
            last = Some(m);
        }
        let output = match &last {
            Some(m) => payload_to_cel(m)?,
            None => message_to_cel(&DynamicMessage::new(action.method.output())),
        };
        return Ok(Outcome { response: StepResponse::Forwarded { last, count }, output });
    }
    let mut messages = Vec::new();
    while let Some(m) = stream.next().await {
        if messages.len() == MAX_COLLECTED_STREAM_MESSAGES {
            return Err(CallError::new(
                Code::ResourceExhausted,
                format!(
                    "the stream sent more than {MAX_COLLECTED_STREAM_MESSAGES} messages; mark the step `stream: true` and use ExecutePatternStream"
                ),
            ));
        }
        messages.push(m?);
    }
    let output = Cel::List(Arc::new(messages.iter().map(payload_to_cel).collect::<Result<_, _>>()?));
    Ok(Outcome { response: StepResponse::Stream(messages), output })
}

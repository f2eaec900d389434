//! Durable executions: what the engine journals and how a journaled step result is encoded.
//!
//! A durable execution journals its start, then each step's result BEFORE any dependant of that
//! step starts, then its end. After a crash, [`crate::Engine::resume`] rebuilds the execution from
//! the journal: journaled steps are not called again; a step that was in flight is called again
//! with the same idempotency key (`<execution>/<step>`), so backends can de-duplicate.

use std::sync::Arc;

use base64::Engine as _;
use cel::Value as Cel;
use nexus_core::{Target, value};
use prost_reflect::DynamicMessage;

use crate::{
    Keyed,
    record::{ExecutionRecord, Payload, StepResponse},
};

/// A journal write or read that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the execution journal is unavailable: {message}")]
pub struct JournalError {
    pub message: String,
    /// The store may accept it later (unreachable, restarting, busy); a permanent error (a
    /// constraint, a bad row) will fail the same way again.
    pub transient: bool,
}

impl JournalError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: true }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: false }
    }
}

/// The start of a durable execution, as journaled.
#[derive(Debug, Clone)]
pub struct JournalStart {
    pub id: Arc<str>,
    pub pattern_name: Arc<str>,
    pub pattern_version: Arc<str>,
    /// The execution input as JSON text.
    pub input: String,
    pub idempotency_key: Option<String>,
    pub tenant: Arc<str>,
    /// The execution's trace context ([`crate::trace::TraceContext::to_journal`]): resumed, it
    /// continues the same trace, as the same span.
    pub trace: String,
}

/// What the engine journals of durable executions, and asks of it (implemented over the store by
/// the server, whose storage-side trait is `nexus_store::JournalStore`).
#[async_trait::async_trait]
pub trait Journal: Send + Sync + 'static {
    async fn start(&self, start: &JournalStart) -> Result<(), JournalError>;

    /// Returns once the result is durable.
    async fn step_completed(&self, execution_id: &str, step_id: &str, result: &str) -> Result<(), JournalError>;

    async fn finished(&self, record: &ExecutionRecord) -> Result<(), JournalError>;

    /// Takes back the write of `step_id`'s result (a `step_completed` still awaited) if no commit
    /// has taken it yet: true when it will not be written. The engine takes back a leaf step's
    /// result when the execution's end, written next, records it anyway. A journal that cannot
    /// tell keeps the default: nothing is taken back.
    fn withdraw_step(&self, _execution_id: &str, _step_id: &str) -> bool {
        false
    }

    /// The execution that used idempotency `key` for `pattern` (on any replica, before any
    /// restart), if one did.
    async fn keyed(&self, pattern: &str, key: &str) -> Result<Option<Keyed>, JournalError>;
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A step result as journal text: protobuf bytes for messages (exact, whatever the types), JSON
/// for a sub-pattern's output.
pub fn encode_result(r: &StepResponse) -> String {
    // The common case, one message, written straight out: `{"m":"<base64>"}`.
    if let StepResponse::Message(m) = r {
        let mut text = String::with_capacity(8 + m.bytes().len().div_ceil(3) * 4);
        text.push_str("{\"m\":\"");
        B64.encode_string(m.bytes(), &mut text);
        text.push_str("\"}");
        return text;
    }
    fn enc(r: &StepResponse) -> serde_json::Value {
        let b = |m: &Payload| serde_json::Value::String(B64.encode(m.bytes()));
        match r {
            StepResponse::Message(m) => serde_json::json!({ "m": b(m) }),
            StepResponse::Stream(ms) => serde_json::json!({ "s": ms.iter().map(b).collect::<Vec<_>>() }),
            StepResponse::Forwarded { last, count } => serde_json::json!({ "f": last.as_ref().map(b), "n": count }),
            StepResponse::Items(items) => serde_json::json!({ "i": items.iter().map(enc).collect::<Vec<_>>() }),
            StepResponse::Pattern { execution_id, output } => {
                serde_json::json!({ "p": &**execution_id, "o": value::cel_to_serde(&output.cel()) })
            }
            StepResponse::Event(event) => serde_json::json!({ "v": value::cel_to_serde(&event.cel()) }),
            StepResponse::TimedOut(message) => serde_json::json!({ "t": message }),
            StepResponse::Cancelled(reason) => serde_json::json!({ "c": reason }),
        }
    }
    enc(r).to_string()
}

/// Decodes a journaled result for a step with this target.
pub fn decode_result(text: &str, target: &Target) -> Result<StepResponse, String> {
    // Checked here, so an unreadable entry makes the step run again rather than fail it.
    fn msg(v: &serde_json::Value, target: &Target) -> Result<Payload, String> {
        let Target::Action(a) = target else { return Err("a message result for a sub-pattern step".into()) };
        let bytes = B64.decode(v.as_str().ok_or("message is not a string")?).map_err(|e| e.to_string())?;
        DynamicMessage::decode(a.method.output(), bytes.as_slice()).map_err(|e| e.to_string())?;
        Ok(Payload::new(a.method.output(), bytes.into()))
    }
    fn dec(v: &serde_json::Value, target: &Target) -> Result<StepResponse, String> {
        if let Some(m) = v.get("m") {
            return msg(m, target).map(StepResponse::Message);
        }
        if let Some(s) = v.get("s").and_then(serde_json::Value::as_array) {
            return s.iter().map(|m| msg(m, target)).collect::<Result<_, _>>().map(StepResponse::Stream);
        }
        if let Some(n) = v.get("n").and_then(serde_json::Value::as_u64) {
            let last = match v.get("f") {
                Some(serde_json::Value::Null) | None => None,
                Some(m) => Some(msg(m, target)?),
            };
            return Ok(StepResponse::Forwarded { last, count: n });
        }
        if let Some(items) = v.get("i").and_then(serde_json::Value::as_array) {
            return items.iter().map(|i| dec(i, target)).collect::<Result<_, _>>().map(StepResponse::Items);
        }
        if let Some(event) = v.get("v") {
            return Ok(StepResponse::Event(value::serde_to_cel(event).into()));
        }
        if let Some(message) = v.get("t").and_then(serde_json::Value::as_str) {
            return Ok(StepResponse::TimedOut(message.to_string()));
        }
        if let Some(reason) = v.get("c").and_then(serde_json::Value::as_str) {
            return Ok(StepResponse::Cancelled(reason.to_string()));
        }
        if let Some(id) = v.get("p").and_then(serde_json::Value::as_str) {
            let output = v.get("o").map_or(Cel::Null, value::serde_to_cel);
            return Ok(StepResponse::Pattern { execution_id: Arc::from(id), output: output.into() });
        }
        Err(format!("unknown journal entry {v}"))
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    dec(&v, target)
}

//! Events as expressions see them, and the matching of `wait_for` branches: shared by a running
//! execution (registering a wait, scanning the lookback window) and the server's event router
//! (an event arriving for waits kept in the store).

use std::{collections::HashMap, sync::Arc};

use cel::Value as Cel;
use nexus_core::{
    expr::{ExecutionVar, Scope},
    plan::WaitBranch,
    value,
};

use crate::bus::CloudEvent;

/// An event as JSON (the value of `event`, of an emit or wait step's output): its CloudEvents
/// fields, `time` as RFC 3339, `data` as published.
pub fn event_json(e: &CloudEvent) -> serde_json::Value {
    let time = chrono::DateTime::<chrono::Utc>::from(e.time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!({
        "id": e.id,
        "source": e.source,
        "type": e.event_type,
        "subject": e.subject,
        "time": time,
        "datacontenttype": e.datacontenttype,
        "data": e.data,
        "tenant": &*e.tenant,
    })
}

pub fn event_cel(e: &CloudEvent) -> Cel {
    value::serde_to_cel(&event_json(e))
}

/// A value as correlation key: canonical JSON, with integral doubles written as integers (CEL's
/// `1 == 1.0` holds; the keys must agree too).
pub fn correlation_key(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// The event's value at a correlation path, as key; `None` when the path is absent.
pub fn event_key(event: &serde_json::Value, path: &[String]) -> Option<String> {
    let mut cur = event;
    for seg in path {
        cur = cur.get(seg)?;
    }
    Some(correlation_key(cur))
}

/// Whether an event satisfies a branch, given the wait's context (`{input, steps}` as JSON).
/// An evaluation error (a field the event lacks, a type mismatch) is "no match": a wait is not
/// failed by somebody else's malformed event.
pub fn branch_matches(branch: &WaitBranch, context: &Cel, event: &Cel, event_type: &str) -> bool {
    if branch.event_type != event_type {
        return false;
    }
    let Some(matcher) = &branch.matcher else { return true };
    let (input, steps) = context_parts(context);
    let scope = Scope {
        input: &input,
        steps: &steps,
        item: None,
        index: None,
        execution: &ExecutionVar::of(Cel::Null),
        event: Some(event),
        budget: None,
    };
    matches!(matcher.eval(&scope), Ok(Cel::Bool(true)))
}

fn context_parts(context: &Cel) -> (Cel, HashMap<cel::objects::Key, Cel>) {
    let Cel::Map(m) = context else { return (Cel::Null, HashMap::new()) };
    let input = m.map.get(&value::key("input")).cloned().unwrap_or(Cel::Null);
    let steps = match m.map.get(&value::key("steps")) {
        Some(Cel::Map(s)) => s.map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => HashMap::new(),
    };
    (input, steps)
}

/// The journal text of a wait resolved by `event` (also an emit step's result).
pub fn event_result(event: &serde_json::Value) -> String {
    serde_json::json!({ "v": event }).to_string()
}

/// The journal text of a wait that timed out.
pub fn timeout_result(message: &str) -> String {
    serde_json::json!({ "t": message }).to_string()
}

/// (execution, step) → the running wait's wake-up.
type Waiting = HashMap<(Arc<str>, Arc<str>), tokio::sync::oneshot::Sender<String>>;

/// Waits of executions running in this process, woken when their result is journaled here.
#[derive(Default)]
pub(crate) struct LocalWaits {
    waiting: std::sync::Mutex<Waiting>,
}

impl LocalWaits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn add(&self, execution: Arc<str>, step: Arc<str>) -> tokio::sync::oneshot::Receiver<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().insert((execution, step), tx);
        rx
    }

    pub(crate) fn remove(&self, execution: &Arc<str>, step: &Arc<str>) {
        self.lock().remove(&(execution.clone(), step.clone()));
    }

    /// Hands a journaled result to the running wait; false when none waits here.
    pub(crate) fn deliver(&self, execution: &str, step: &str, result: String) -> bool {
        let tx = self.lock().remove(&(Arc::from(execution), Arc::from(step)));
        tx.is_some_and(|tx| tx.send(result).is_ok())
    }
}

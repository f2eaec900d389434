//! Event steps and triggers: `emit` and `wait_for` steps become their targets, `on:` triggers
//! become `TriggerPlan`s. Expressions are compiled here; what they read is checked with the other
//! references (`references`), where `event` is in scope for triggers and `wait_for` matches only.

use std::{sync::Arc, time::Duration};

use crate::{diagnostic::Diagnostics, expr::Expr, input::InputSchema, pb, value};

use super::{
    model::{
        Correlation, DEFAULT_WAIT, EmitPlan, MAX_TRIGGERS, MAX_WAIT, MAX_WAIT_BRANCHES, PatternLookup, Target,
        TriggerPlan, WaitBranch, WaitPlan, to_duration,
    },
    templates::{self, single},
};

/// Longest event type.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// An event type: a letter or digit, then letters, digits, `.`, `_`, `-` (`user.created`).
pub fn is_event_type(t: &str) -> bool {
    let mut chars = t.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && t.len() <= MAX_EVENT_TYPE_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_type(t: &str, path: &str, diags: &mut Diagnostics) -> bool {
    if t.is_empty() {
        diags.error(path, "name the event type, e.g. `user.created`");
        return false;
    }
    if !is_event_type(t) {
        diags.error(
            path,
            format!(
                "`{t}` is not a valid event type: start with a letter or digit, then letters, digits, `.`, `_` or `-` (at most {MAX_EVENT_TYPE_LEN})"
            ),
        );
        return false;
    }
    true
}

/// The target of an `emit` step.
pub(super) fn emit_target(i: usize, emit: &pb::EmitEvent, diags: &mut Diagnostics) -> Option<Target> {
    let path = format!("steps[{i}].emit");
    let ok = check_type(&emit.r#type, &format!("{path}.type"), diags);
    let data_json = emit.data.as_ref().map(value::struct_to_serde).unwrap_or_else(|| serde_json::json!({}));
    let data = templates::compile(&data_json, &format!("{path}.data"), diags);
    let subject = (!emit.subject.is_empty()).then(|| {
        templates::compile(&serde_json::Value::String(emit.subject.clone()), &format!("{path}.subject"), diags)
    });
    let _ = ok; // as for wait_for: the expressions are still checked
    Some(Target::Emit(Arc::new(EmitPlan { event_type: emit.r#type.clone(), data, subject })))
}

/// The target of a `wait_for` step (durable patterns only: a waiting execution is kept in the
/// journal, not in memory).
pub(super) fn wait_target(i: usize, doc: &pb::Pattern, wait: &pb::WaitFor, diags: &mut Diagnostics) -> Option<Target> {
    let path = format!("steps[{i}].wait_for");
    let mut ok = true;
    if doc.durability != "durable" {
        diags.error(
            &path,
            "wait_for needs `durability: durable`: a waiting execution is kept in the journal, where it survives restarts and holds no memory",
        );
        ok = false;
    }
    let timeout = match wait.timeout.as_ref().map(to_duration) {
        None => DEFAULT_WAIT,
        Some(Some(t)) if !t.is_zero() && t <= MAX_WAIT => t,
        Some(_) => {
            diags.error(
                format!("{path}.timeout"),
                format!("must be a positive duration of at most {}d, such as \"1h\"", MAX_WAIT.as_secs() / 86_400),
            );
            ok = false;
            Duration::ZERO
        }
    };
    let single_given = !wait.event.is_empty() || !wait.r#match.is_empty();
    let branches: Vec<(String, &str, &str)> = match (single_given, wait.any.is_empty()) {
        (true, false) => {
            diags.error(&path, "wait for one event (`event`, `match`) or the first of several (`any`), not both");
            return None;
        }
        (false, true) => {
            diags.error(
                &path,
                "name the event to wait for (`event: TYPE`, optionally `match: ${{ … }}`), or `any: [...]`",
            );
            return None;
        }
        (true, true) => vec![(path.clone(), wait.event.as_str(), wait.r#match.as_str())],
        (false, false) => {
            if wait.any.len() > MAX_WAIT_BRANCHES {
                diags.error(
                    format!("{path}.any"),
                    format!("{} branches; the limit is {MAX_WAIT_BRANCHES}", wait.any.len()),
                );
                ok = false;
            }
            wait.any
                .iter()
                .enumerate()
                .map(|(k, b)| (format!("{path}.any[{k}]"), b.event.as_str(), b.r#match.as_str()))
                .collect()
        }
    };
    let mut plans = Vec::with_capacity(branches.len());
    for (bpath, event, matcher) in branches {
        ok &= check_type(event, &format!("{bpath}.event"), diags);
        let matcher = single(matcher, &format!("{bpath}.match"), diags);
        let correlation =
            matcher.as_ref().and_then(Expr::correlation).map(|(event_path, value)| Correlation { event_path, value });
        plans.push(WaitBranch { event_type: event.to_string(), matcher, correlation });
    }
    // Returned even when something above was wrong, so the matches' references are checked too
    // (any error stops compilation before a plan is built).
    let _ = ok;
    Some(Target::Wait(Arc::new(WaitPlan { branches: plans, timeout })))
}

/// Step options that mean nothing for an event step.
pub(super) fn check_options(i: usize, step: &pb::Step, diags: &mut Diagnostics) {
    let what = match (step.emit.is_some(), step.wait_for.is_some()) {
        (true, _) => "an emit step",
        (_, true) => "a wait_for step",
        _ => return,
    };
    let mut not = |field: &str, set: bool| {
        if set {
            diags.error(format!("steps[{i}].{field}"), format!("{what} has no `{field}`"));
        }
    };
    not("with", step.with.as_ref().is_some_and(|w| !w.fields.is_empty()));
    not("for_each", !step.for_each.is_empty());
    not("stream", step.stream);
    not("compensate", step.compensate.is_some());
    if step.wait_for.is_some() {
        not("retry", step.retry.is_some());
        if step.timeout.is_some() {
            diags.error(format!("steps[{i}].timeout"), "a wait_for step's timeout is `wait_for.timeout`");
        }
    }
}

/// The `on:` triggers. Their expressions read only `event`; the input they build must fit the
/// pattern's input schema (declared properties, every required one given).
/// `event.data.*` is checked against the schema of the trigger's event type, when one is
/// registered.
pub(super) fn triggers(
    doc: &pb::Pattern,
    input: &InputSchema,
    patterns: &dyn PatternLookup,
    diags: &mut Diagnostics,
) -> Vec<TriggerPlan> {
    if doc.on.len() > MAX_TRIGGERS {
        diags.error("on", format!("{} triggers; the limit is {MAX_TRIGGERS}", doc.on.len()));
    }
    let mut plans = Vec::new();
    for (k, t) in doc.on.iter().enumerate() {
        let path = format!("on[{k}]");
        let ok = check_type(&t.event, &format!("{path}.event"), diags);
        let filter = single(&t.filter, &format!("{path}.filter"), diags);
        let template =
            t.input.as_ref().map(|s| templates::compile(&value::struct_to_serde(s), &format!("{path}.input"), diags));
        let mut exprs: Vec<(String, &Expr)> = Vec::new();
        if let Some(f) = &filter {
            exprs.push((format!("{path}.filter"), f));
        }
        if let Some(t) = &template {
            t.expressions(&format!("{path}.input"), &mut exprs);
        }
        for (p, e) in &exprs {
            for r in e.references() {
                if r.root != "event" {
                    diags.error(
                        p,
                        format!(
                            "a trigger reads only `event` (its fields: {}); `{}` is not defined here",
                            super::model::EVENT_FIELDS.join(", "),
                            r.root
                        ),
                    );
                } else if let Some(first) = r.segments.first()
                    && !super::model::EVENT_FIELDS.contains(&first.as_str())
                {
                    diags.error(
                        p,
                        format!("an event has no `{first}`; its fields are: {}", super::model::EVENT_FIELDS.join(", ")),
                    );
                } else if ok && let Err(msg) = super::env::event_path(&r.segments, Some(&t.event), patterns) {
                    diags.error(p, msg);
                }
            }
        }
        let keys: Option<Vec<String>> = match &template {
            Some(crate::expr::Template::Object(fields)) => Some(fields.iter().map(|(k, _)| k.clone()).collect()),
            Some(crate::expr::Template::Literal(serde_json::Value::Object(o), _)) => Some(o.keys().cloned().collect()),
            _ => None,
        };
        if let Some(fields) = keys {
            for key in &fields {
                if let Err(msg) = input.resolve(std::slice::from_ref(key)) {
                    diags.error(format!("{path}.input.{key}"), msg);
                }
            }
            if let Some(required) = input.as_json().get("required").and_then(serde_json::Value::as_array) {
                for r in required.iter().filter_map(serde_json::Value::as_str) {
                    if !fields.iter().any(|k| k == r) {
                        diags.error(
                            format!("{path}.input"),
                            format!("the pattern requires input `{r}`; map it from the event"),
                        );
                    }
                }
            }
        }
        if ok {
            plans.push(TriggerPlan { event_type: t.event.clone(), filter, input: template });
        }
    }
    plans
}

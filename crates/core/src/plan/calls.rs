//! Resolving what steps call: a catalog action (`package.Service/Method`) or a registered pattern
//! (`pattern:NAME@VERSION`), and the action of each compensation.

use crate::{
    catalog::{Action, Catalog},
    diagnostic::{Diagnostics, suggest},
    pb,
};

use super::model::{PatternLookup, Target, parse_pattern_call};

/// Pass 3: each step's target, `None` where it does not resolve (already reported). Also checks
/// that `stream: true` is only asked of a server-streaming method, which needs the target.
pub(super) fn resolve(
    doc: &pb::Pattern,
    catalog: &Catalog,
    patterns: &dyn PatternLookup,
    diags: &mut Diagnostics,
) -> Vec<Option<Target>> {
    doc.steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let target = resolve_step(i, doc, step, catalog, patterns, diags);
            super::events::check_options(i, step, diags);
            if step.stream && !step.call.is_empty() && target.as_ref().is_some_and(|t| !t.is_server_streaming()) {
                diags.error(format!("steps[{i}].stream"), format!("`{}` is not a server-streaming method", step.call));
            }
            target
        })
        .collect()
}

fn resolve_step(
    i: usize,
    doc: &pb::Pattern,
    step: &pb::Step,
    catalog: &Catalog,
    patterns: &dyn PatternLookup,
    diags: &mut Diagnostics,
) -> Option<Target> {
    let path = format!("steps[{i}].call");
    let kinds =
        usize::from(!step.call.is_empty()) + usize::from(step.emit.is_some()) + usize::from(step.wait_for.is_some());
    if kinds > 1 {
        diags.error(format!("steps[{i}]"), "a step does one thing: `call`, `emit` or `wait_for`; split it into steps");
        return None;
    }
    if let Some(emit) = &step.emit {
        return super::events::emit_target(i, emit, diags);
    }
    if let Some(wait) = &step.wait_for {
        return super::events::wait_target(i, doc, wait, diags);
    }
    if step.call.is_empty() {
        diags.error(path, "every step needs a `call` (an action `package.Service/Method`), an `emit` or a `wait_for`");
        return None;
    }
    if let Some((name, version)) = parse_pattern_call(&step.call) {
        let found = patterns.lookup(name, version);
        if found.is_none() {
            diags.error(
                path,
                format!(
                    "no registered pattern {name}@{version} to call (register it first; `nexus pattern list` shows what is registered)"
                ),
            );
        }
        return found.map(Target::Pattern);
    }
    match catalog.action(&step.call) {
        Some(a) if a.is_client_streaming() => {
            diags.error(
                path,
                format!(
                    "`{}` is a client-streaming method; patterns can call unary and server-streaming methods",
                    step.call
                ),
            );
            None
        }
        Some(a) => Some(Target::Action(a.clone())),
        None => {
            let hint = did_you_mean(&step.call, catalog);
            diags.error(
                path,
                format!(
                    "unknown action `{}`: it is not in the catalog.{hint} (`nexus services` lists the actions; a pattern is called as `pattern:NAME@VERSION`)",
                    step.call
                ),
            );
            None
        }
    }
}

/// The action a compensation calls (`path` is `steps[i].compensate`). It must be a unary catalog
/// action: a compensation runs once, unattended, while its execution is failing.
pub(super) fn compensation_action(
    c: &pb::Compensation,
    path: &str,
    catalog: &Catalog,
    diags: &mut Diagnostics,
) -> Option<Action> {
    match catalog.action(&c.call) {
        Some(a) if a.is_client_streaming() || a.is_server_streaming() => {
            diags.error(
                format!("{path}.call"),
                format!("`{}` is a streaming method; compensations must be unary", c.call),
            );
            None
        }
        Some(a) => Some(a.clone()),
        None => {
            let hint = did_you_mean(&c.call, catalog);
            diags
                .error(format!("{path}.call"), format!("unknown action `{}`: it is not in the catalog.{hint}", c.call));
            None
        }
    }
}

fn did_you_mean(call: &str, catalog: &Catalog) -> String {
    suggest(call, catalog.action_names()).map(|s| format!(" Did you mean `{s}`?")).unwrap_or_default()
}

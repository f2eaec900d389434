//! Resolving the variables expressions read: every root is a known variable in scope, every
//! `input.a.b` path is declared by the input schema, every `steps.X.a.b` path exists in X's
//! output, and a step that may be skipped is only read behind `has(...)`. The `steps.X` reads are
//! also the graph's inferred edges.

use crate::{
    diagnostic::Diagnostics,
    expr::{self, Expr},
    pb,
};

use super::{
    Draft,
    env::Env,
    ids::{StepIds, unknown_step},
    model::Target,
};

/// Where an expression is evaluated, for what it may read.
#[derive(Clone, Copy)]
pub(super) struct Scope<'a> {
    /// The step the expression belongs to (it may not read its own output).
    pub(super) in_step: Option<&'a str>,
    /// `item` and `index` are defined (the request of a for_each step).
    pub(super) items: bool,
    /// `event` is defined (a `wait_for` match).
    pub(super) event: bool,
    /// The type of that event (its registered schema types `event.data.*`).
    pub(super) event_type: Option<&'a str>,
}

impl Scope<'_> {
    /// Outside any step's own request: the output mapping and compensations.
    pub(super) const OUTSIDE: Scope<'static> = Scope { in_step: None, items: false, event: false, event_type: None };
}

/// Pass 10: the references of each step's `with`, `when` and `for_each`; returns, per step, the
/// steps it reads (the inferred dependencies, in the order first read).
pub(super) fn check_steps(
    doc: &pb::Pattern,
    drafts: &[Draft],
    ids: &StepIds<'_>,
    env: &Env<'_>,
    diags: &mut Diagnostics,
) -> Vec<Vec<usize>> {
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); doc.steps.len()];
    for (i, (draft, step)) in drafts.iter().zip(&doc.steps).enumerate() {
        let mut exprs = Vec::new();
        draft.request.expressions(&format!("steps[{i}].with"), &mut exprs);
        let fan_out = draft.for_each.is_some();
        let item_scope = exprs.len();
        if let Some(w) = &draft.when {
            exprs.push((format!("steps[{i}].when"), w));
        }
        if let Some(f) = &draft.for_each {
            exprs.push((format!("steps[{i}].for_each"), f));
        }
        let event_scope = exprs.len();
        // The event type each wait match reads (indexed from `event_scope`).
        let mut event_types: Vec<&str> = Vec::new();
        match &draft.target {
            Some(Target::Emit(e)) => {
                e.data.expressions(&format!("steps[{i}].emit.data"), &mut exprs);
                if let Some(s) = &e.subject {
                    s.expressions(&format!("steps[{i}].emit.subject"), &mut exprs);
                }
            }
            Some(Target::Wait(w)) => {
                let single = step.wait_for.as_ref().is_some_and(|w| w.any.is_empty());
                for (k, b) in w.branches.iter().enumerate() {
                    if let Some(m) = &b.matcher {
                        let path = if single {
                            format!("steps[{i}].wait_for.match")
                        } else {
                            format!("steps[{i}].wait_for.any[{k}].match")
                        };
                        exprs.push((path, m));
                        event_types.push(&b.event_type);
                    }
                }
            }
            _ => {}
        }
        let is_wait = draft.target.as_ref().is_some_and(Target::is_wait);
        for (n, (path, e)) in exprs.iter().enumerate() {
            // `item` and `index` exist in the request of a for_each step only; `event` in a
            // wait_for match only.
            let event = is_wait && n >= event_scope;
            let event_type = if event { event_types.get(n - event_scope).copied() } else { None };
            let scope = Scope { in_step: Some(&step.id), items: fan_out && n < item_scope, event, event_type };
            for r in e.references() {
                let Some(target) = check_reference(r, path, ids, env, scope, diags) else { continue };
                if target == i {
                    diags.error(path.clone(), format!("step `{}` reads its own output", step.id));
                    continue;
                }
                if !deps[i].contains(&target) {
                    deps[i].push(target);
                }
                check_guard(r, e, target, doc, path, diags);
            }
        }
    }
    deps
}

/// Pass 11: the references of each compensation's `with`. They add no edges: a compensation runs
/// after its execution failed, when every step it can read has finished or never will.
pub(super) fn check_compensations(
    doc: &pb::Pattern,
    drafts: &[Draft],
    ids: &StepIds<'_>,
    env: &Env<'_>,
    diags: &mut Diagnostics,
) {
    for (i, draft) in drafts.iter().enumerate() {
        let Some(c) = &draft.compensate else { continue };
        let mut exprs = Vec::new();
        c.request.expressions(&format!("steps[{i}].compensate.with"), &mut exprs);
        for (path, e) in &exprs {
            for r in e.references() {
                // A compensation runs after its own step succeeded: it may read its output.
                if let Some(target) = check_reference(r, path, ids, env, Scope::OUTSIDE, diags)
                    && target != i
                {
                    check_guard(r, e, target, doc, path, diags);
                }
            }
        }
    }
}

/// Checks one reference; returns the index of the step it reads, if any.
pub(super) fn check_reference(
    r: &expr::Reference,
    path: &str,
    ids: &StepIds<'_>,
    env: &Env<'_>,
    scope: Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<usize> {
    if !expr::VARIABLES.contains(&r.root.as_str()) {
        diags
            .error(path, format!("unknown variable `{}`; expressions can read {}", r.root, expr::VARIABLES.join(", ")));
        return None;
    }
    match r.root.as_str() {
        "item" | "index" if !scope.items => {
            diags.error(path, format!("`{}` is only defined in the `with` of a for_each step", r.root));
            None
        }
        "steps" => {
            let Some(step) = r.step() else {
                diags.error(path, "read a step's output as `steps.<id>`");
                return None;
            };
            let Some(&target) = ids.get(step) else {
                diags.error(path, unknown_step(step, ids));
                return None;
            };
            env.note_read(target, &r.segments[1..]);
            // A step reading itself is reported once by the caller, not again as a bad path.
            if scope.in_step != Some(step)
                && let Err(msg) = env.resolve(r)
            {
                diags.error(path, msg);
            }
            Some(target)
        }
        "input" => {
            if let Err(msg) = env.resolve(r) {
                diags.error(path, msg);
            }
            None
        }
        "event" if !scope.event => {
            diags.error(
                path,
                "`event` is only defined in a trigger's `filter` and `input` and in a `wait_for` match; pass what the steps need through the trigger's `input`",
            );
            None
        }
        "event" => {
            if let Err(msg) = env.resolve_in(r, scope.event_type) {
                diags.error(path, msg);
            }
            None
        }
        _ => None,
    }
}

/// A step with `when` may be skipped and then has no output: reading it must be guarded with
/// `has(steps.X...)` somewhere in the same expression (e.g. `has(steps.x.y) ? steps.x.y : ""`).
fn check_guard(r: &expr::Reference, e: &Expr, target: usize, doc: &pb::Pattern, path: &str, diags: &mut Diagnostics) {
    let conditional = !doc.steps[target].when.is_empty();
    if !conditional || r.guarded {
        return;
    }
    let id = &doc.steps[target].id;
    let guarded = e.references().iter().any(|o| o.guarded && o.step() == Some(id.as_str()));
    if !guarded {
        diags.error(
            path,
            format!(
                "`{r}` reads step `{id}`, which has a `when` and may be skipped; guard it, e.g. `has({r}) ? {r} : ...`, or depend on it with depends_on only"
            ),
        );
    }
}

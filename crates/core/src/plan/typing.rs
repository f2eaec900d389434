//! Type-checking requests: each `with` against the input message of the action it calls (or the
//! input schema of the pattern it calls), each compensation's `with` against its action's.

use crate::{diagnostic::Diagnostics, expr::Template, typecheck};

use super::{
    Draft,
    env::Env,
    model::{CompiledPattern, Target},
};

/// Pass 12: every compensation's request against its action's input message.
pub(super) fn check_compensations(drafts: &[Draft], env: &Env<'_>, diags: &mut Diagnostics) {
    for (i, draft) in drafts.iter().enumerate() {
        if let Some(c) = &draft.compensate {
            let path = format!("steps[{i}].compensate.with");
            typecheck::check_message_template(&c.request, &c.action.method.input(), &path, env, diags);
        }
    }
}

/// Pass 14: every step's request against what it calls. A step whose call did not resolve is
/// skipped: there is no message to check against (the call itself was reported).
pub(super) fn check_requests(drafts: &[Draft], env: &Env<'_>, diags: &mut Diagnostics) {
    for (i, draft) in drafts.iter().enumerate() {
        let path = format!("steps[{i}].with");
        match &draft.target {
            Some(Target::Action(action)) => {
                typecheck::check_message_template(&draft.request, &action.method.input(), &path, env, diags)
            }
            Some(Target::Pattern(callee)) => check_pattern_input(&draft.request, callee, &path, diags),
            // `emit.data` is any object; `wait_for` sends nothing.
            Some(Target::Emit(_) | Target::Wait(_)) | None => {}
        }
    }
}

/// The `with` of a sub-pattern call must fit the callee's input schema: declared properties only
/// (unless it allows more) and every required property given.
fn check_pattern_input(t: &Template, callee: &CompiledPattern, path: &str, diags: &mut Diagnostics) {
    let keys: Vec<&str> = match t {
        Template::Object(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
        Template::Literal(serde_json::Value::Object(o), _) => o.keys().map(String::as_str).collect(),
        Template::Expr(_) => return,
        _ => {
            diags.error(path, format!("the input of pattern {} must be an object", callee.name));
            return;
        }
    };
    for k in &keys {
        if let Err(msg) = callee.input.resolve(&[k.to_string()]) {
            diags.error(format!("{path}.{k}"), format!("pattern {}@{}: {msg}", callee.name, callee.version));
        }
    }
    if let Some(required) = callee.input.as_json().get("required").and_then(serde_json::Value::as_array) {
        for r in required.iter().filter_map(serde_json::Value::as_str) {
            if !keys.contains(&r) {
                diags.error(path, format!("pattern {}@{} requires input `{r}`", callee.name, callee.version));
            }
        }
    }
}

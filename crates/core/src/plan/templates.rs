//! Compiling each step's templates and expressions (`with`, `when`, `for_each`, the
//! compensation's `with`) once, at registration; a bad expression is reported at its path and the
//! rest of the template still compiles.

use crate::{
    catalog::Catalog,
    diagnostic::Diagnostics,
    expr::{self, Expr, Template, TemplateError},
    pb, value,
};

use super::{calls, model::Compensation};

/// Pass 4: every step's request template (`with`; none is the empty object).
pub(super) fn requests(doc: &pb::Pattern, diags: &mut Diagnostics) -> Vec<Template> {
    doc.steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let with_json = step
                .with
                .as_ref()
                .map(value::struct_to_serde)
                .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
            compile(&with_json, &format!("steps[{i}].with"), diags)
        })
        .collect()
}

/// The single expressions of each step, in step order.
pub(super) struct Conditions {
    pub(super) when: Vec<Option<Expr>>,
    pub(super) for_each: Vec<Option<Expr>>,
}

/// Pass 5: `when` and `for_each`, each one expression (`None` when absent or invalid).
pub(super) fn conditions(doc: &pb::Pattern, diags: &mut Diagnostics) -> Conditions {
    let mut out = Conditions { when: Vec::new(), for_each: Vec::new() };
    for (i, step) in doc.steps.iter().enumerate() {
        out.when.push(single(&step.when, &format!("steps[{i}].when"), diags));
        out.for_each.push(single(&step.for_each, &format!("steps[{i}].for_each"), diags));
    }
    out
}

/// One `${{ }}` expression at `path` (`None` when empty or invalid, reported).
pub(super) fn single(source: &str, path: &str, diags: &mut Diagnostics) -> Option<Expr> {
    if source.is_empty() {
        return None;
    }
    match expr::parse_single(source) {
        Ok(e) => Some(e),
        Err(e) => {
            diags.error(path, e.to_string());
            None
        }
    }
}

/// Pass 7: each compensation's action and request template.
///
/// A compensation whose action does not resolve is dropped before its `with` is compiled: the
/// later passes have no input message to check that request against.
pub(super) fn compensations(
    doc: &pb::Pattern,
    catalog: &Catalog,
    diags: &mut Diagnostics,
) -> Vec<Option<Compensation>> {
    doc.steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let c = step.compensate.as_ref()?;
            let path = format!("steps[{i}].compensate");
            let action = calls::compensation_action(c, &path, catalog, diags)?;
            let with_json = c.with.as_ref().map(value::struct_to_serde).unwrap_or_else(|| serde_json::json!({}));
            let request = compile(&with_json, &format!("{path}.with"), diags);
            Some(Compensation { action, request })
        })
        .collect()
}

/// Compiles a template, reporting each expression that does not compile.
pub(super) fn compile(json: &serde_json::Value, path: &str, diags: &mut Diagnostics) -> Template {
    let mut errors = Vec::new();
    let template = Template::compile(json, path, &mut errors);
    report(errors, diags);
    template
}

fn report(errors: Vec<TemplateError>, diags: &mut Diagnostics) {
    for e in errors {
        diags.error(e.path, e.error.to_string());
    }
}

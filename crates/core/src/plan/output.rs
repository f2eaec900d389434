//! Pass 15, the output mapping: each field's template compiled and its references resolved; the
//! steps each field reads are kept so a field reading a skipped step is left out at run time.

use crate::{diagnostic::Diagnostics, pb, value};

use super::{
    env::Env,
    ids::StepIds,
    model::OutputField,
    references::{Scope, check_reference},
    templates,
};

/// `None` when the document has no `output` (the execution then returns every step's output).
pub(super) fn compile(
    doc: &pb::Pattern,
    ids: &StepIds<'_>,
    env: &Env<'_>,
    diags: &mut Diagnostics,
) -> Option<Vec<OutputField>> {
    let out = doc.output.as_ref()?;
    let mut fields = Vec::new();
    for (name, v) in &out.fields {
        let path = format!("output.{name}");
        let template = templates::compile(&value::struct_value_to_serde(v), &path, diags);
        let mut exprs = Vec::new();
        template.expressions(&path, &mut exprs);
        let mut reads_steps = Vec::new();
        for (p, e) in &exprs {
            for r in e.references() {
                // No guard is required here, unlike in requests: a field that reads a skipped step
                // is simply left out of the output.
                if let Some(t) = check_reference(r, p, ids, env, Scope::OUTSIDE, diags)
                    && !reads_steps.contains(&t)
                {
                    reads_steps.push(t);
                }
            }
        }
        fields.push(OutputField { key: value::key(name), name: name.clone(), template, reads_steps });
    }
    Some(fields)
}

//! "Correct up to renaming": two patterns are the same answer when they call the same actions
//! (as a multiset), feed the same outputs into the same fields (`CreateOrder`'s `order.id` into
//! `Charge`'s `order_id`), and make each wanted output from the same action's field (or the same
//! input). Step ids, the pattern's name and which fields are set from the input are not compared:
//! they are renamings or free choices of the author, and every candidate type-checks anyway.

use std::collections::{BTreeMap, BTreeSet};

use nexus_core::pb;

/// The comparable shape of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub calls: Vec<String>,
    /// (producer action, output path, consumer action, input field).
    pub wires: BTreeSet<(String, String, String, String)>,
    /// Output name → (action or `input`, path).
    pub outputs: BTreeMap<String, (String, String)>,
}

impl Shape {
    pub fn of(pattern: &pb::Pattern) -> Self {
        let call_of: BTreeMap<&str, &str> = pattern.steps.iter().map(|s| (s.id.as_str(), s.call.as_str())).collect();
        let mut calls: Vec<String> = pattern.steps.iter().map(|s| s.call.clone()).collect();
        calls.sort();
        let mut wires = BTreeSet::new();
        for step in &pattern.steps {
            let Some(with) = &step.with else { continue };
            for (field, value) in &with.fields {
                if let Some(prost_types::value::Kind::StringValue(text)) = &value.kind
                    && let Some((id, path)) = step_reference(text)
                    && let Some(call) = call_of.get(id)
                {
                    wires.insert((call.to_string(), path.to_string(), step.call.clone(), field.clone()));
                }
            }
        }
        let mut outputs = BTreeMap::new();
        if let Some(out) = &pattern.output {
            for (name, value) in &out.fields {
                let Some(prost_types::value::Kind::StringValue(text)) = &value.kind else { continue };
                if let Some((id, path)) = step_reference(text)
                    && let Some(call) = call_of.get(id)
                {
                    outputs.insert(name.clone(), (call.to_string(), path.to_string()));
                } else if let Some(name_in) = whole(text).and_then(|e| e.strip_prefix("input.")) {
                    outputs.insert(name.clone(), ("input".to_string(), name_in.to_string()));
                }
            }
        }
        Shape { calls, wires, outputs }
    }

    /// Whether `self` (a candidate) answers like `reference`, comparing only the outputs the goal
    /// names (all of the reference's when `wanted` is empty: then none).
    pub fn matches(&self, reference: &Shape, wanted: &[String]) -> bool {
        self.calls == reference.calls
            && self.wires == reference.wires
            && wanted.iter().all(|w| self.outputs.get(w) == reference.outputs.get(w))
    }
}

/// `${{ EXPR }}` as the whole string → `EXPR`.
fn whole(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("${{")?.strip_suffix("}}")?;
    Some(inner.trim())
}

/// `${{ steps.ID.PATH }}` → (ID, PATH).
fn step_reference(text: &str) -> Option<(&str, &str)> {
    let expr = whole(text)?.strip_prefix("steps.")?;
    let (id, path) = expr.split_once('.')?;
    let simple = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    (simple(id) && simple(path)).then_some((id, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids_and_input_wiring_do_not_matter() {
        let a = nexus_core::document::parse(
            "name: a\nversion: 1.0.0\nsteps:\n- {id: u, call: x.S/CreateUser, with: {email: '${{ input.email }}'}}\n- {id: m, call: x.S/SendEmail, with: {to: '${{ input.email }}', user_id: '${{ steps.u.user.id }}'}}\noutput: {id: '${{ steps.u.user.id }}'}\n",
        )
        .unwrap_or_default();
        let b = nexus_core::document::parse(
            "name: b\nversion: 1.0.0\nsteps:\n- {id: mail, call: x.S/SendEmail, with: {user_id: '${{ steps.create.user.id }}'}}\n- {id: create, call: x.S/CreateUser}\noutput: {id: '${{ steps.create.user.id }}'}\n",
        )
        .unwrap_or_default();
        assert!(!a.steps.is_empty() && !b.steps.is_empty());
        assert!(Shape::of(&a).matches(&Shape::of(&b), &["id".to_string()]));
        let c = nexus_core::document::parse(
            "name: c\nversion: 1.0.0\nsteps:\n- {id: u, call: x.S/CreateUser}\n- {id: m, call: x.S/SendEmail, with: {user_id: '${{ input.user_id }}'}}\noutput: {id: '${{ steps.u.user.id }}'}\n",
        )
        .unwrap_or_default();
        assert!(!Shape::of(&c).matches(&Shape::of(&a), &[]), "a missing wire is a different answer");
    }
}

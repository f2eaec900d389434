//! Pass 2, step ids: present, well-formed, unique. Every later pass refers to steps by id, so
//! this runs first and yields the id → index map the others resolve `steps.X` and `depends_on`
//! against.

use std::collections::HashMap;

use crate::{
    diagnostic::{Diagnostics, name_list, suggest},
    pb,
};

/// Step id → index of the first step with that id.
pub(super) type StepIds<'a> = HashMap<&'a str, usize>;

pub(super) fn collect<'a>(doc: &'a pb::Pattern, diags: &mut Diagnostics) -> StepIds<'a> {
    let mut ids = StepIds::new();
    for (i, step) in doc.steps.iter().enumerate() {
        let path = format!("steps[{i}].id");
        if step.id.is_empty() {
            diags.error(path, "every step needs an id");
        } else if !is_identifier(&step.id) {
            diags.error(
                path,
                format!("`{}` is not a valid id: use letters, digits and _ (so `steps.{}` reads it)", step.id, step.id),
            );
        } else if let Some(first) = ids.insert(&step.id, i) {
            // Keep the first: later references resolve to it, and the duplicate is the error.
            ids.insert(&step.id, first);
            diags.error(path, format!("duplicate id `{}` (first used by steps[{first}])", step.id));
        }
    }
    ids
}

fn is_identifier(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The message for a reference to a step that does not exist, with the closest id as a hint.
pub(super) fn unknown_step(name: &str, ids: &StepIds<'_>) -> String {
    let mut names: Vec<&str> = ids.keys().copied().collect();
    names.sort_unstable();
    let hint = suggest(name, names.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
    format!("there is no step `{name}`{hint}; the steps are: {}", name_list(names))
}

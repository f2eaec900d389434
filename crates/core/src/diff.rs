//! Step-level differences between two pattern documents (two versions of one pattern, or a fork
//! and its source), as `DiffPatterns` returns them.
//!
//! The comparison works on the document form ([`crate::document::to_json`]: proto field names,
//! default fields left out), so a field is "changed" exactly when its JSON differs.
//!
//! - Steps are matched by `id`; their order does not matter. A step only in `after` is `ADDED`
//!   (`steps.<id>`, `after` holds the step), one only in `before` is `REMOVED`, and a step in both
//!   gives one `CHANGED` per differing field (`steps.<id>.<field>`); `with` is compared key by key
//!   (`steps.<id>.with.<key>`, `ADDED` / `REMOVED` / `CHANGED`).
//! - Pattern-level fields: `description`, `durability`, `timeout`, `tags`, `input` (each as a
//!   whole, `CHANGED`) and `output` key by key (`output.<key>`). The identity (`name`,
//!   `version`), what belongs to the name rather than to a version (`visibility`: shared with
//!   SetVisibility, the same for every version) and what the server sets (`registered_at`,
//!   `owner`, `tenant`, `forked_from`, `deprecated`, `stars`, `executions`) are ignored.
//! - Values are compact JSON text. A field set on one side only is `CHANGED` with the other side
//!   empty.
//! - Order: pattern-level fields (in the order above, then any other document field), then the
//!   steps of `after` in its order, then the removed steps in `before` order.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::{document, pb};

/// Pattern-level fields compared as a whole, in this order.
const PATTERN_FIELDS: &[&str] = &["description", "durability", "timeout", "tags", "input"];

/// Pattern-level fields compared key by key, after [`PATTERN_FIELDS`].
const PATTERN_MAPS: &[&str] = &["output"];

/// Fields that are not part of what a pattern does: its identity and what the server sets.
const PATTERN_IGNORED: &[&str] = &[
    "name",
    "version",
    "visibility",
    "registered_at",
    "owner",
    "tenant",
    "forked_from",
    "deprecated",
    "stars",
    "executions",
    "steps",
];

/// Step fields in the order their changes are listed (`id` is the key; `with` goes key by key).
const STEP_FIELDS: &[&str] =
    &["call", "with", "depends_on", "when", "for_each", "concurrency", "retry", "timeout", "compensate", "stream"];

/// Step fields compared key by key.
const STEP_MAPS: &[&str] = &["with"];

/// Every change from `before` to `after`, in a deterministic order (see the module docs).
/// Identical patterns, or patterns whose steps are only reordered, give no change.
pub fn diff(before: &pb::Pattern, after: &pb::Pattern) -> Vec<pb::PatternChange> {
    let before = object(document::to_json(before));
    let after = object(document::to_json(after));
    let mut changes = Vec::new();

    let known: Vec<&str> = PATTERN_FIELDS.iter().chain(PATTERN_MAPS).chain(PATTERN_IGNORED).copied().collect();
    for field in PATTERN_FIELDS {
        compare_field(&mut changes, field.to_string(), before.get(*field), after.get(*field));
    }
    for field in PATTERN_MAPS {
        compare_map(&mut changes, field, before.get(*field), after.get(*field));
    }
    // Fields added to the document after this was written are compared too, rather than missed.
    for field in extra_fields(&before, &after, &known) {
        compare_field(&mut changes, field.to_string(), before.get(field), after.get(field));
    }

    let before_steps = steps(&before);
    let after_steps = steps(&after);
    let mut seen = HashSet::new();
    for (id, step) in &after_steps {
        if !seen.insert(*id) {
            continue; // a duplicate id (an invalid document): compared once
        }
        let path = format!("steps.{id}");
        match before_steps.iter().find(|(other, _)| other == id) {
            None => changes.push(change(pb::ChangeKind::Added, path, None, Some(step))),
            Some((_, old)) => compare_steps(&mut changes, &path, old, step),
        }
    }
    for (id, step) in &before_steps {
        if seen.insert(*id) {
            changes.push(change(pb::ChangeKind::Removed, format!("steps.{id}"), Some(step), None));
        }
    }
    changes
}

/// One step present on both sides: a change per differing field, `with` key by key.
fn compare_steps(changes: &mut Vec<pb::PatternChange>, path: &str, before: &Value, after: &Value) {
    let empty = Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let mut known: Vec<&str> = STEP_FIELDS.to_vec();
    known.push("id");
    for field in STEP_FIELDS.iter().copied().chain(extra_fields(before, after, &known)) {
        let path = format!("{path}.{field}");
        if STEP_MAPS.contains(&field) {
            compare_map(changes, &path, before.get(field), after.get(field));
        } else {
            compare_field(changes, path, before.get(field), after.get(field));
        }
    }
}

/// A field compared as a whole: `CHANGED` when it differs (an unset side is empty).
fn compare_field(changes: &mut Vec<pb::PatternChange>, path: String, before: Option<&Value>, after: Option<&Value>) {
    if before != after {
        changes.push(change(pb::ChangeKind::Changed, path, before, after));
    }
}

/// An object compared key by key: `<path>.<key>` added, removed or changed. Keys of `after` come
/// first in its order, then the removed keys in `before` order.
fn compare_map(changes: &mut Vec<pb::PatternChange>, path: &str, before: Option<&Value>, after: Option<&Value>) {
    let empty = Map::new();
    let (before_map, after_map) = match (before.map(Value::as_object), after.map(Value::as_object)) {
        (Some(None), _) | (_, Some(None)) => {
            // Not an object on one side (cannot happen for a Struct): compare as a whole.
            compare_field(changes, path.to_string(), before, after);
            return;
        }
        (b, a) => (b.flatten().unwrap_or(&empty), a.flatten().unwrap_or(&empty)),
    };
    for (key, value) in after_map {
        let key_path = format!("{path}.{key}");
        match before_map.get(key) {
            None => changes.push(change(pb::ChangeKind::Added, key_path, None, Some(value))),
            Some(old) if old != value => {
                changes.push(change(pb::ChangeKind::Changed, key_path, Some(old), Some(value)))
            }
            Some(_) => {}
        }
    }
    for (key, value) in before_map {
        if !after_map.contains_key(key) {
            changes.push(change(pb::ChangeKind::Removed, format!("{path}.{key}"), Some(value), None));
        }
    }
}

/// Fields present on either side that are not in `known`: `after`'s first, then `before`'s.
fn extra_fields<'a>(before: &'a Map<String, Value>, after: &'a Map<String, Value>, known: &[&str]) -> Vec<&'a str> {
    let mut extra: Vec<&str> = Vec::new();
    for key in after.keys().chain(before.keys()) {
        if !known.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
            extra.push(key);
        }
    }
    extra
}

/// The steps of a document as `(id, step)`, in document order.
fn steps(pattern: &Map<String, Value>) -> Vec<(&str, &Value)> {
    let Some(Value::Array(steps)) = pattern.get("steps") else {
        return Vec::new();
    };
    steps.iter().map(|s| (s.get("id").and_then(Value::as_str).unwrap_or(""), s)).collect()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn change(kind: pb::ChangeKind, path: String, before: Option<&Value>, after: Option<&Value>) -> pb::PatternChange {
    pb::PatternChange { kind: kind as i32, path, before: compact(before), after: compact(after) }
}

/// Compact JSON text; empty for an unset value.
fn compact(value: Option<&Value>) -> String {
    value.map(Value::to_string).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name: signup
version: 1.0.0
description: Sign a user up.
timeout: 30s
input: {type: object, properties: {email: {type: string}}}
steps:
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: "${{ input.email }}"}
    timeout: 2s
  - id: welcome
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: Welcome}
output:
  user_id: "${{ steps.user.user.id }}"
"#;

    fn parse(text: &str) -> pb::Pattern {
        match document::parse(text) {
            Ok(p) => p,
            Err(e) => panic!("test document does not parse: {e}\n{text}"),
        }
    }

    /// `BASE` with `from` replaced by `to` (the replacement must happen).
    fn edited(from: &str, to: &str) -> pb::Pattern {
        assert!(BASE.contains(from), "{from:?} is not in the base document");
        parse(&BASE.replacen(from, to, 1))
    }

    fn summary(changes: &[pb::PatternChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let kind = pb::ChangeKind::try_from(c.kind).map(|k| k.as_str_name()).unwrap_or("?");
                format!("{kind} {} [{}] [{}]", c.path, c.before, c.after)
            })
            .collect()
    }

    #[test]
    fn identical_patterns_have_no_changes() {
        assert!(diff(&parse(BASE), &parse(BASE)).is_empty());
    }

    #[test]
    fn ignores_identity_and_server_set_fields() {
        let mut after = parse(BASE);
        after.name = "signup_fork".into();
        after.version = "2.0.0".into();
        after.owner = "someone".into();
        after.tenant = "acme".into();
        after.forked_from = "signup@1.0.0".into();
        after.deprecated = true;
        after.stars = 7;
        after.executions = 9;
        after.registered_at = Some(prost_types::Timestamp { seconds: 1, nanos: 0 });
        assert!(diff(&parse(BASE), &after).is_empty());
    }

    #[test]
    fn reordered_steps_are_no_change() {
        let mut after = parse(BASE);
        after.steps.reverse();
        assert!(diff(&parse(BASE), &after).is_empty());
    }

    #[test]
    fn an_added_step_holds_the_step() {
        let after = edited(
            "  - id: welcome\n",
            "  - {id: audit, call: demo.audit.v1.AuditService/Record, with: {what: signup}}\n  - id: welcome\n",
        );
        assert_eq!(
            summary(&diff(&parse(BASE), &after)),
            [
                r#"CHANGE_KIND_ADDED steps.audit [] [{"id":"audit","call":"demo.audit.v1.AuditService/Record","with":{"what":"signup"}}]"#
            ]
        );
    }

    #[test]
    fn a_removed_step_holds_the_old_step() {
        let mut after = parse(BASE);
        after.steps.retain(|s| s.id != "welcome");
        let changes = diff(&parse(BASE), &after);
        assert_eq!(changes.len(), 1, "{:?}", summary(&changes));
        assert_eq!(changes[0].kind, pb::ChangeKind::Removed as i32);
        assert_eq!(changes[0].path, "steps.welcome");
        assert!(changes[0].after.is_empty());
        let old: Value = serde_json::from_str(&changes[0].before).unwrap_or_default();
        assert_eq!(old["call"], "demo.notification.v1.NotificationService/SendEmail");
    }

    #[test]
    fn with_is_compared_key_by_key() {
        let text = BASE
            .replacen(r#"display_name: "${{ input.email }}"}"#, r#"display_name: "${{ input.name }}", locale: en}"#, 1)
            .replacen(r#"with: {to: "${{ input.email }}", subject: Welcome}"#, "with: {subject: Hello}", 1);
        assert_eq!(
            summary(&diff(&parse(BASE), &parse(&text))),
            [
                r#"CHANGE_KIND_CHANGED steps.user.with.display_name ["${{ input.email }}"] ["${{ input.name }}"]"#,
                r#"CHANGE_KIND_ADDED steps.user.with.locale [] ["en"]"#,
                r#"CHANGE_KIND_CHANGED steps.welcome.with.subject ["Welcome"] ["Hello"]"#,
                r#"CHANGE_KIND_REMOVED steps.welcome.with.to ["${{ input.email }}"] []"#,
            ]
        );
    }

    #[test]
    fn changed_step_and_pattern_timeouts() {
        let after = edited("    timeout: 2s", "    timeout: 5s");
        assert_eq!(summary(&diff(&parse(BASE), &after)), [r#"CHANGE_KIND_CHANGED steps.user.timeout ["2s"] ["5s"]"#]);
        let after = edited("timeout: 30s", "timeout: 45s");
        assert_eq!(summary(&diff(&parse(BASE), &after)), [r#"CHANGE_KIND_CHANGED timeout ["30s"] ["45s"]"#]);
    }

    #[test]
    fn a_field_set_on_one_side_only_is_changed_with_the_other_side_empty() {
        let after = edited("    timeout: 2s\n", "    timeout: 2s\n    when: \"${{ true }}\"\n");
        assert_eq!(summary(&diff(&parse(BASE), &after)), [r#"CHANGE_KIND_CHANGED steps.user.when [] ["${{ true }}"]"#]);
        assert_eq!(summary(&diff(&after, &parse(BASE))), [r#"CHANGE_KIND_CHANGED steps.user.when ["${{ true }}"] []"#]);
    }

    #[test]
    fn pattern_fields_come_first_in_a_fixed_order_then_steps() {
        let text = BASE
            .replacen("timeout: 30s", "timeout: 10s\ndurability: durable\ntags: [users]", 1)
            .replacen("description: Sign a user up.", "description: Sign up.", 1)
            .replacen(
                "properties: {email: {type: string}}",
                "properties: {email: {type: string}}, required: [email]",
                1,
            )
            .replacen("user_id: \"${{ steps.user.user.id }}\"", "id: \"${{ steps.user.user.id }}\"", 1)
            .replacen("subject: Welcome", "subject: Hi", 1);
        let after = parse(&text);
        let paths: Vec<_> = diff(&parse(BASE), &after).into_iter().map(|c| c.path).collect();
        assert_eq!(
            paths,
            [
                "description",
                "durability",
                "timeout",
                "tags",
                "input",
                "output.id",
                "output.user_id",
                "steps.welcome.with.subject"
            ]
        );
    }

    #[test]
    fn steps_follow_after_order_and_removed_steps_come_last() {
        let before =
            parse("name: p\nsteps:\n  - {id: a, call: x.S/A}\n  - {id: b, call: x.S/B}\n  - {id: c, call: x.S/C}\n");
        let after =
            parse("name: p\nsteps:\n  - {id: d, call: x.S/D}\n  - {id: c, call: x.S/C2}\n  - {id: a, call: x.S/A}\n");
        assert_eq!(
            summary(&diff(&before, &after)),
            [
                r#"CHANGE_KIND_ADDED steps.d [] [{"id":"d","call":"x.S/D"}]"#,
                r#"CHANGE_KIND_CHANGED steps.c.call ["x.S/C"] ["x.S/C2"]"#,
                r#"CHANGE_KIND_REMOVED steps.b [{"id":"b","call":"x.S/B"}] []"#,
            ]
        );
    }
}

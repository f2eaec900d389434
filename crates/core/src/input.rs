//! The execution input's JSON Schema: resolving `input.*` paths at registration and validating an
//! execution's input before any backend is called.
//!
//! Supported keywords: `type`, `properties`, `required`, `items`, `enum`, `additionalProperties`.
//! Other keywords are accepted and ignored (they document, they do not constrain).

use cel::{Value as Cel, objects::KeyRef};
use serde_json::Value as Json;

use crate::value::type_name;

/// The declared input schema of a pattern (empty = anything goes).
#[derive(Debug, Clone, Default)]
pub struct InputSchema {
    root: Json,
    /// Some property is `type: number`: its integral values are made doubles ([`InputSchema::coerce`]).
    has_number: bool,
}

/// The shape an `input.*` path reads, as far as the schema says.
#[derive(Debug, Clone, PartialEq)]
pub enum InputType {
    Any,
    String,
    Integer,
    Number,
    Boolean,
    Object,
    Array,
}

impl InputSchema {
    pub fn new(root: Json) -> Self {
        let has_number = mentions_number(&root);
        Self { root, has_number }
    }

    pub fn is_empty(&self) -> bool {
        self.root.as_object().is_none_or(|o| o.is_empty())
    }

    pub fn as_json(&self) -> &Json {
        &self.root
    }

    /// Problems with the schema itself (unknown type names and the like), as `(path, message)`.
    pub fn lint(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        lint_node(&self.root, "input", &mut out);
        out
    }

    /// The type at `input.<segments>`, or a message saying why the path does not exist.
    pub fn resolve(&self, segments: &[String]) -> Result<InputType, String> {
        self.resolve_named(segments, "input", "", "the input schema")
    }

    /// The type at `<root>.<segments>` of a value this schema describes (`event.data` of an event
    /// type: `of` = `` of `user.created` ``, `schema` = "its schema"), or why the path does not
    /// exist.
    pub fn resolve_named(&self, segments: &[String], root: &str, of: &str, schema: &str) -> Result<InputType, String> {
        let mut node = &self.root;
        let mut walked = String::from(root);
        for seg in segments {
            let Some(obj) = node.as_object() else { return Ok(InputType::Any) };
            match obj.get("properties").and_then(Json::as_object) {
                Some(props) => match props.get(seg) {
                    Some(child) => node = child,
                    None if allows_additional(obj) => return Ok(InputType::Any),
                    None => {
                        let names: Vec<&str> = props.keys().map(String::as_str).collect();
                        let hint = crate::diagnostic::suggest(seg, names.iter().copied())
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                        return Err(format!(
                            "`{walked}`{of} has no property `{seg}`{hint}; {schema} declares: {}",
                            crate::diagnostic::name_list(names)
                        ));
                    }
                },
                None => {
                    if let Some(t) = node_type(obj)
                        && t != InputType::Object
                        && t != InputType::Any
                    {
                        return Err(format!("`{walked}`{of} is {t:?} in {schema}, it has no `{seg}`"));
                    }
                    return Ok(InputType::Any);
                }
            }
            walked.push('.');
            walked.push_str(seg);
        }
        Ok(node.as_object().and_then(node_type).unwrap_or(InputType::Any))
    }

    /// The input as the schema types it: a value of a `type: number` property is a double even
    /// when it is whole (`10.0` arrives as JSON `10` and would otherwise be an int, and
    /// `input.x / 4` would divide as integers). Free when no property is a number.
    pub fn coerce(&self, input: Cel) -> Cel {
        if self.has_number { coerce_node(&self.root, input) } else { input }
    }

    /// Validates an execution's input; every violation as `(path, message)`.
    pub fn validate(&self, input: &Cel) -> Vec<(String, String)> {
        let mut out = Vec::new();
        validate_node(&self.root, input, "input", &mut out);
        out
    }
}

fn mentions_number(v: &Json) -> bool {
    match v {
        Json::String(s) => s == "number",
        Json::Array(items) => items.iter().any(mentions_number),
        Json::Object(o) => o.values().any(mentions_number),
        _ => false,
    }
}

/// Whether a schema node says "a number" and not "an integer".
fn is_number(obj: &serde_json::Map<String, Json>) -> bool {
    match obj.get("type") {
        Some(Json::String(t)) => t == "number",
        Some(Json::Array(ts)) => ts.iter().any(|t| t == "number") && !ts.iter().any(|t| t == "integer"),
        _ => false,
    }
}

fn coerce_node(schema: &Json, v: Cel) -> Cel {
    let Some(obj) = schema.as_object() else { return v };
    match v {
        Cel::Int(i) if is_number(obj) => Cel::Float(i as f64),
        Cel::UInt(u) if is_number(obj) => Cel::Float(u as f64),
        Cel::Map(m) => {
            let Some(props) = obj.get("properties").and_then(Json::as_object) else { return Cel::Map(m) };
            let entries: std::collections::HashMap<cel::objects::Key, Cel> = m
                .map
                .iter()
                .map(|(k, v)| {
                    let child = match k {
                        cel::objects::Key::String(name) => props.get(name.as_str()),
                        _ => None,
                    };
                    (k.clone(), child.map_or_else(|| v.clone(), |c| coerce_node(c, v.clone())))
                })
                .collect();
            Cel::Map(cel::objects::Map { map: std::sync::Arc::new(entries) })
        }
        Cel::List(items) => match obj.get("items") {
            Some(item) => Cel::List(std::sync::Arc::new(items.iter().map(|i| coerce_node(item, i.clone())).collect())),
            None => Cel::List(items),
        },
        other => other,
    }
}

fn allows_additional(obj: &serde_json::Map<String, Json>) -> bool {
    // JSON Schema's default is to allow additional properties; a path into an undeclared
    // property is still almost always a typo, so we only allow it when the author said so.
    matches!(obj.get("additionalProperties"), Some(Json::Bool(true)) | Some(Json::Object(_)))
}

fn node_type(obj: &serde_json::Map<String, Json>) -> Option<InputType> {
    Some(match obj.get("type")?.as_str()? {
        "string" => InputType::String,
        "integer" => InputType::Integer,
        "number" => InputType::Number,
        "boolean" => InputType::Boolean,
        "object" => InputType::Object,
        "array" => InputType::Array,
        _ => InputType::Any,
    })
}

const TYPES: &[&str] = &["string", "integer", "number", "boolean", "object", "array", "null"];

fn lint_node(node: &Json, path: &str, out: &mut Vec<(String, String)>) {
    let Some(obj) = node.as_object() else {
        out.push((path.to_string(), "a JSON Schema must be an object".into()));
        return;
    };
    match obj.get("type") {
        None => {}
        Some(Json::String(t)) if TYPES.contains(&t.as_str()) => {}
        Some(Json::Array(ts)) if ts.iter().all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))) => {}
        Some(other) => {
            out.push((format!("{path}.type"), format!("unknown type {other}; use one of {}", TYPES.join(", "))))
        }
    }
    if let Some(props) = obj.get("properties") {
        match props.as_object() {
            Some(props) => {
                for (k, v) in props {
                    lint_node(v, &format!("{path}.properties.{k}"), out);
                }
            }
            None => out.push((format!("{path}.properties"), "must be an object".into())),
        }
    }
    if let Some(required) = obj.get("required") {
        let declared = obj.get("properties").and_then(Json::as_object);
        match required.as_array() {
            Some(names) => {
                for (i, n) in names.iter().enumerate() {
                    match n.as_str() {
                        Some(n) if declared.is_some_and(|d| !d.contains_key(n)) => out.push((
                            format!("{path}.required[{i}]"),
                            format!("`{n}` is required but not declared in properties"),
                        )),
                        Some(_) => {}
                        None => out.push((format!("{path}.required[{i}]"), "must be a string".into())),
                    }
                }
            }
            None => out.push((format!("{path}.required"), "must be a list of property names".into())),
        }
    }
    if let Some(items) = obj.get("items") {
        lint_node(items, &format!("{path}.items"), out);
    }
}

fn matches_type(t: &str, v: &Cel) -> bool {
    match t {
        "string" => matches!(v, Cel::String(_)),
        "integer" => matches!(v, Cel::Int(_) | Cel::UInt(_)),
        "number" => matches!(v, Cel::Int(_) | Cel::UInt(_) | Cel::Float(_)),
        "boolean" => matches!(v, Cel::Bool(_)),
        "object" => matches!(v, Cel::Map(_)),
        "array" => matches!(v, Cel::List(_)),
        "null" => matches!(v, Cel::Null),
        _ => true,
    }
}

fn validate_node(schema: &Json, v: &Cel, path: &str, out: &mut Vec<(String, String)>) {
    let Some(obj) = schema.as_object() else { return };
    let type_ok = match obj.get("type") {
        Some(Json::String(t)) => matches_type(t, v),
        Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).any(|t| matches_type(t, v)),
        _ => true,
    };
    if !type_ok {
        out.push((
            path.to_string(),
            format!("expected {}, got {}", obj.get("type").map(Json::to_string).unwrap_or_default(), type_name(v)),
        ));
        return;
    }
    if let Some(Json::Array(allowed)) = obj.get("enum") {
        let json = crate::value::cel_to_serde(v);
        if !allowed.contains(&json) {
            out.push((path.to_string(), format!("{json} is not one of {}", Json::Array(allowed.clone()))));
        }
    }
    match v {
        Cel::Map(m) => {
            if let Some(Json::Array(required)) = obj.get("required") {
                for name in required.iter().filter_map(Json::as_str) {
                    if m.get(&KeyRef::String(name)).is_none_or(|v| matches!(v, Cel::Null)) {
                        out.push((format!("{path}.{name}"), "required property is missing".into()));
                    }
                }
            }
            if let Some(props) = obj.get("properties").and_then(Json::as_object) {
                for (name, child) in props {
                    if let Some(value) = m.get(&KeyRef::String(name)) {
                        validate_node(child, value, &format!("{path}.{name}"), out);
                    }
                }
                if matches!(obj.get("additionalProperties"), Some(Json::Bool(false))) {
                    for k in m.map.keys() {
                        if let cel::objects::Key::String(k) = k
                            && !props.contains_key(k.as_str())
                        {
                            out.push((format!("{path}.{k}"), "property is not allowed by the input schema".into()));
                        }
                    }
                }
            }
        }
        Cel::List(items) => {
            if let Some(item_schema) = obj.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_node(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn whole_numbers_of_number_properties_are_doubles() {
        let schema = InputSchema::new(serde_json::json!({
            "type": "object",
            "properties": {
                "price": {"type": "number"},
                "count": {"type": "integer"},
                "either": {"type": ["number", "string"]},
                "prices": {"type": "array", "items": {"type": "number"}},
                "nested": {"type": "object", "properties": {"ratio": {"type": "number"}}}
            }
        }));
        let input = crate::value::serde_to_cel(&serde_json::json!({
            "price": 10, "count": 3, "either": 2, "prices": [1, 2.5], "nested": {"ratio": 1}, "other": 7
        }));
        let out = crate::value::cel_to_serde(&schema.coerce(input));
        let map = |v: &Cel, k: &str| match v {
            Cel::Map(m) => m.get(&cel::objects::KeyRef::String(k)).cloned(),
            _ => None,
        };
        let coerced = schema.coerce(crate::value::serde_to_cel(&serde_json::json!({"price": 10, "count": 3})));
        assert!(matches!(map(&coerced, "price"), Some(Cel::Float(f)) if f == 10.0));
        assert!(matches!(map(&coerced, "count"), Some(Cel::Int(3))));
        assert_eq!(out["prices"], serde_json::json!([1, 2.5]), "whole doubles still print as integers in JSON");
        let nested =
            schema.coerce(crate::value::serde_to_cel(&serde_json::json!({"nested": {"ratio": 1}, "either": 2})));
        assert!(matches!(map(&map(&nested, "nested").unwrap_or(Cel::Null), "ratio"), Some(Cel::Float(_))));
        assert!(matches!(map(&nested, "either"), Some(Cel::Float(_))));
        // No number in the schema: the input is returned as it is.
        let plain = InputSchema::new(serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}}));
        assert!(!plain.has_number);
    }

    use super::*;
    use serde_json::json;

    fn schema() -> InputSchema {
        InputSchema::new(json!({
            "type": "object",
            "required": ["email", "name"],
            "properties": {"email": {"type": "string"}, "name": {"type": "string"}, "age": {"type": "integer"}}
        }))
    }

    #[test]
    fn resolves_declared_paths_only() {
        assert_eq!(schema().resolve(&["email".into()]), Ok(InputType::String));
        let err = schema().resolve(&["emial".into()]).unwrap_err();
        assert!(err.contains("did you mean `email`"), "{err}");
    }

    #[test]
    fn validates_required_and_types() {
        let v = crate::value::serde_to_cel(&json!({"email": "a@b", "age": "x"}));
        let errors = schema().validate(&v);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "input.name");
        assert_eq!(errors[1].0, "input.age");
    }
}

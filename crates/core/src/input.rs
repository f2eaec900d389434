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
        Self { root }
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

    /// Validates an execution's input; every violation as `(path, message)`.
    pub fn validate(&self, input: &Cel) -> Vec<(String, String)> {
        let mut out = Vec::new();
        validate_node(&self.root, input, "input", &mut out);
        out
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

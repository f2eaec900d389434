//! The execution input's JSON Schema: resolving `input.*` paths at registration and validating an
//! execution's input before any backend is called.
//!
//! Validation is the `jsonschema` crate's, the whole of JSON Schema (draft 2020-12 unless the
//! schema's `$schema` names another; `format`s asserted): the schema is compiled once, at
//! registration, and a schema that does not compile (an unknown draft, a bad regex, a `$ref` to
//! anything outside itself) is a registration error. Typing `input.*` paths at registration reads
//! `type`, `properties` and `additionalProperties`.

use cel::Value as Cel;
use serde_json::Value as Json;

/// The declared input schema of a pattern (empty = anything goes).
#[derive(Clone, Default)]
pub struct InputSchema {
    root: Json,
    /// Some property is `type: number`: its integral values are made doubles ([`InputSchema::coerce`]).
    has_number: bool,
    /// The compiled schema (`None` when it is empty, or did not compile: see [`InputSchema::lint`]).
    validator: Option<std::sync::Arc<jsonschema::Validator>>,
    /// Why the schema did not compile.
    invalid: Option<String>,
}

impl std::fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSchema").field("root", &self.root).field("invalid", &self.invalid).finish_non_exhaustive()
    }
}

/// The most violations reported for one input (the first ones, in schema order).
pub const MAX_VIOLATIONS: usize = 20;

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
        let empty = root.as_object().is_none_or(|o| o.is_empty());
        let (validator, invalid) = if empty {
            (None, None)
        } else {
            match jsonschema::options().should_validate_formats(true).build(&root) {
                Ok(v) => (Some(std::sync::Arc::new(v)), None),
                Err(e) => (None, Some(e.to_string())),
            }
        };
        Self { root, has_number, validator, invalid }
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
        if out.is_empty()
            && let Some(e) = &self.invalid
        {
            out.push(("input".to_string(), format!("not a valid JSON Schema: {e}")));
        }
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

    /// Validates an execution's input; its violations (the first [`MAX_VIOLATIONS`]) as
    /// `(path, message)`, paths like `input.items[2].name`.
    pub fn validate(&self, input: &Cel) -> Vec<(String, String)> {
        let Some(validator) = &self.validator else { return Vec::new() };
        let instance = to_json(input);
        let mut out = Vec::new();
        for error in validator.iter_errors(&instance) {
            let path = dotted(error.instance_path().as_str());
            match error.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().map_or_else(|| property.to_string(), str::to_string);
                    out.push((format!("{path}.{name}"), "required property is missing".into()));
                }
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for k in unexpected {
                        out.push((format!("{path}.{k}"), "property is not allowed by the input schema".into()));
                    }
                }
                _ => out.push((path, shortened(&error.to_string()))),
            }
            if out.len() >= MAX_VIOLATIONS {
                out.truncate(MAX_VIOLATIONS);
                break;
            }
        }
        out
    }
}

/// A JSON Pointer into the input (`/items/2/name`) as the path documents use (`input.items[2].name`).
fn dotted(pointer: &str) -> String {
    let mut out = String::from("input");
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&segment);
            out.push(']');
        } else {
            out.push('.');
            out.push_str(&segment);
        }
    }
    out
}

/// The validator's message, with the input value it quotes cut short (an input can be large).
fn shortened(message: &str) -> String {
    const MAX: usize = 300;
    if message.chars().count() <= MAX {
        return message.to_string();
    }
    let mut s: String = message.chars().take(MAX).collect();
    s.push('…');
    s
}

/// The input as JSON for the validator: numbers keep their kind (an `Int` is a JSON integer of any
/// size, a `Float` a JSON number, a non-finite one null), bytes are base64 strings.
fn to_json(v: &Cel) -> Json {
    use base64::Engine as _;
    match v {
        Cel::Null => Json::Null,
        Cel::Bool(b) => Json::Bool(*b),
        Cel::Int(i) => Json::from(*i),
        Cel::UInt(u) => Json::from(*u),
        Cel::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Cel::String(s) => Json::String(s.as_str().to_owned()),
        Cel::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b.as_slice())),
        Cel::List(items) => Json::Array(items.iter().map(to_json).collect()),
        Cel::Map(m) => Json::Object(
            m.map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        cel::objects::Key::String(s) => s.as_str().to_owned(),
                        cel::objects::Key::Int(i) => i.to_string(),
                        cel::objects::Key::Uint(u) => u.to_string(),
                        cel::objects::Key::Bool(b) => b.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        other => Json::String(format!("{other:?}")),
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
    fn the_keywords_the_old_validator_ignored_now_constrain() {
        let schema = InputSchema::new(json!({
            "type": "object",
            "$defs": {"positive": {"type": "integer", "minimum": 1}},
            "properties": {
                "email": {"type": "string", "format": "email"},
                "code": {"type": "string", "minLength": 3, "pattern": "^[A-Z]+$"},
                "count": {"$ref": "#/$defs/positive"},
                "contact": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}}
            }
        }));
        assert!(schema.lint().is_empty(), "{:?}", schema.lint());
        let ok = crate::value::serde_to_cel(&json!({"email": "a@b.c", "code": "ABC", "count": 2, "contact": 5}));
        assert_eq!(schema.validate(&ok), Vec::<(String, String)>::new());
        let bad = crate::value::serde_to_cel(&json!({
            "email": "not an email", "code": "ab", "count": 0, "contact": true, "tags": ["ok", "toolong"]
        }));
        let errors = schema.validate(&bad);
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        for path in ["input.email", "input.code", "input.count", "input.contact", "input.tags[1]"] {
            assert!(paths.contains(&path), "{path} not in {errors:?}");
        }
        // A schema that does not compile is a registration error, with the reason.
        let broken = InputSchema::new(json!({"type": "object", "properties": {"x": {"pattern": "(unclosed"}}}));
        let lint = broken.lint();
        assert!(lint.iter().any(|(p, m)| p == "input" && m.contains("not a valid JSON Schema")), "{lint:?}");
        let remote = InputSchema::new(json!({"$ref": "https://example.com/schema.json"}));
        assert!(!remote.lint().is_empty(), "a remote $ref is never fetched");
    }

    #[test]
    fn violations_are_capped() {
        let properties: serde_json::Map<String, Json> =
            (0..100).map(|i| (format!("p{i}"), json!({"type": "string"}))).collect();
        let schema = InputSchema::new(json!({"type": "object", "properties": properties}));
        let input: serde_json::Map<String, Json> = (0..100).map(|i| (format!("p{i}"), json!(i))).collect();
        assert_eq!(schema.validate(&crate::value::serde_to_cel(&Json::Object(input))).len(), MAX_VIOLATIONS);
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

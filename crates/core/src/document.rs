//! The pattern document: YAML or JSON text in the proto3 JSON mapping of `nexus.v1.Pattern`.
//!
//! One schema, one truth: the file format is the protobuf message's JSON mapping (with proto field
//! names), so the CLI, the API and editors agree on every field.

use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::de::DeserializeSeed;

use crate::{descriptor_pool, pb};

/// Largest document accepted, in bytes (a limit against accidental or hostile input).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("the document is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("the document is not valid YAML or JSON: {0}")]
    Syntax(String),
    #[error("{path}: {message}")]
    Shape { path: String, message: String },
}

fn pattern_descriptor() -> MessageDescriptor {
    match descriptor_pool().get_message_by_name("nexus.v1.Pattern") {
        Some(desc) => desc,
        None => unreachable!("nexus.v1.Pattern is compiled into the descriptor pool"),
    }
}

/// Parses a YAML or JSON document (YAML is a superset of JSON) into a `Pattern`.
pub fn parse(text: &str) -> Result<pb::Pattern, DocumentError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge { size: text.len(), limit: MAX_DOCUMENT_BYTES });
    }
    // A byte-order mark (editors on Windows write one) is not content: without this, YAML reads
    // it as a document of its own ("more than one document").
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| DocumentError::Syntax(nesting(e.to_string())))?;
    from_json(value)
}

/// The parsers' "recursion limit exceeded" says neither that the document nests too deep nor how
/// deep it may nest: say both.
fn nesting(message: String) -> String {
    if message.contains("recursion limit") {
        format!("the document nests deeper than the limit of {MAX_NESTING} levels of objects and lists ({message})")
    } else {
        message
    }
}

/// How deep objects and lists may nest in a document (the YAML and JSON parsers' limit).
pub const MAX_NESTING: usize = 128;

/// Converts a JSON value (already parsed) into a `Pattern`, naming the path of the first field of
/// the wrong shape.
pub fn from_json(value: serde_json::Value) -> Result<pb::Pattern, DocumentError> {
    if !value.is_object() {
        return Err(DocumentError::Shape {
            path: String::new(),
            message: "a pattern document must be an object (name, version, steps, ...)".into(),
        });
    }
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let seed = MessageSeed(pattern_descriptor());
    let message = seed.deserialize(de).map_err(|e: serde_json::Error| {
        let path = track.path().to_string();
        DocumentError::Shape { path: if path == "." { String::new() } else { path }, message: e.to_string() }
    })?;
    message
        .transcode_to::<pb::Pattern>()
        .map_err(|e| DocumentError::Shape { path: String::new(), message: e.to_string() })
}

struct MessageSeed(MessageDescriptor);

impl<'de> DeserializeSeed<'de> for MessageSeed {
    type Value = DynamicMessage;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<DynamicMessage, D::Error> {
        DynamicMessage::deserialize_with_options(self.0, d, &DeserializeOptions::new())
    }
}

/// The document form of a pattern: proto field names, default fields left out.
pub fn to_json(pattern: &pb::Pattern) -> serde_json::Value {
    let mut message = DynamicMessage::new(pattern_descriptor());
    if message.transcode_from(pattern).is_err() {
        return serde_json::Value::Null;
    }
    let options = SerializeOptions::new().use_proto_field_name(true);
    message.serialize_with_options(serde_json::value::Serializer, &options).unwrap_or(serde_json::Value::Null)
}

/// The YAML text of a pattern, as an author would write it.
pub fn to_yaml(pattern: &pb::Pattern) -> String {
    serde_norway::to_string(&to_json(pattern)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_too_deep_says_so_and_names_the_limit() {
        let deep = format!("name: {}1{}", "[".repeat(200), "]".repeat(200));
        let e = parse(&deep).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("nests deeper than the limit of 128 levels"), "{e}");
    }

    #[test]
    fn a_byte_order_mark_is_not_a_document() {
        let doc = parse("\u{feff}name: bom\nversion: 1.0.0\nsteps: []\n").unwrap_or_default();
        assert_eq!(doc.name, "bom");
        let json = parse("\u{feff}{\"name\": \"bom\", \"version\": \"1.0.0\"}").unwrap_or_default();
        assert_eq!(json.name, "bom");
    }

    #[test]
    fn parses_the_design_example() {
        let doc = r#"
name: user_creation
version: 1.0.0
timeout: 30s
input: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}"}
    retry: {max_attempts: 3, initial_backoff: 0.1s}
    depends_on: []
output:
  user_id: "${{ steps.user.user.id }}"
"#;
        let p = parse(doc).unwrap();
        assert_eq!(p.name, "user_creation");
        assert_eq!(p.timeout.unwrap().seconds, 30);
        assert_eq!(p.steps[0].retry.as_ref().unwrap().max_attempts, 3);
        assert_eq!(p.steps[0].retry.as_ref().unwrap().initial_backoff.unwrap().nanos, 100_000_000);
        let back = to_json(&p);
        assert_eq!(back["steps"][0]["call"], "demo.user.v1.UserService/CreateUser");
        assert_eq!(back["timeout"], "30s");
    }

    #[test]
    fn shape_errors_name_the_path() {
        let err = parse("name: x\nsteps:\n  - id: a\n    timeout: soon\n").unwrap_err();
        let DocumentError::Shape { path, .. } = err else { panic!("{err}") };
        assert_eq!(path, "steps[0].timeout");
        let err = parse("name: x\nstepz: []\n").unwrap_err();
        assert!(err.to_string().contains("stepz"), "{err}");
    }
}

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
    /// Not YAML (nor JSON): where the parser stopped, and why.
    /// Not YAML (nor JSON), or beyond the parser's limits: where the parser stopped (the line,
    /// and the path of the field it was reading, if any), and why.
    #[error("the document is not valid YAML or JSON: {}{message}", at(*.line, path))]
    Syntax { message: String, path: String, line: Option<(u64, u64)> },
    /// A field of the wrong shape: its path (`steps[0].timeout`; empty for the document itself),
    /// and where it is in the text when the document was text.
    #[error("{}{}{message}", if path.is_empty() { "" } else { path.as_str() }, located(path, *.line))]
    Shape { path: String, message: String, line: Option<(u64, u64)> },
}

/// `line L, column C (in PATH): ` (or what of it is known).
fn at(line: Option<(u64, u64)>, path: &str) -> String {
    let inside = if path.is_empty() { String::new() } else { format!(" (in {path})") };
    match line {
        Some((l, c)) => format!("line {l}, column {c}{inside}: "),
        None if path.is_empty() => String::new(),
        None => format!("in {path}: "),
    }
}

/// What follows a field's path: ` (line L, column C): `, or `: `.
fn located(path: &str, line: Option<(u64, u64)>) -> String {
    match (path.is_empty(), line) {
        (true, Some((l, c))) => format!("line {l}, column {c}: "),
        (false, Some((l, c))) => format!(" (line {l}, column {c}): "),
        (true, None) => String::new(),
        (false, None) => ": ".into(),
    }
}

fn pattern_descriptor() -> MessageDescriptor {
    match descriptor_pool().get_message_by_name("nexus.v1.Pattern") {
        Some(desc) => desc,
        None => unreachable!("nexus.v1.Pattern is compiled into the descriptor pool"),
    }
}

/// How deep objects and lists may nest in a document (the YAML parser's limit).
pub const MAX_NESTING: usize = 64;

/// The YAML parser's limits, beyond [`MAX_DOCUMENT_BYTES`] (which bounds the text): nesting, and
/// what aliases may expand to (a "billion laughs" document is refused, not expanded). A pattern
/// of the maximum 256 steps is a few thousand parser events; the bounds leave room and no more.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_NESTING,
            max_events: 1_000_000,
            max_aliases: 10_000,
            max_anchors: 10_000,
            max_recorded_anchor_bytes: MAX_DOCUMENT_BYTES,
        },
        alias_limits: {
            let mut limits = serde_saphyr::options::AliasLimits::default();
            limits.max_total_replayed_events = 100_000;
            limits.max_replay_stack_depth = 16;
            limits.max_alias_expansions_per_anchor = 1_000;
            limits
        },
        // Messages name the line and column; the CLI prints them on one line.
        with_snippet: false,
        // YAML 1.2: `true` and `false` are booleans, `n`, `no`, `on`, `y` are strings (a property
        // named `n` in `required: [n]` stays a name).
        strict_booleans: true,
    }
}

/// Parses a YAML or JSON document (YAML is a superset of JSON) into a `Pattern`, naming the line
/// and column of a syntax error, and the path, line and column of a field of the wrong shape.
///
/// The YAML parser is serde-saphyr (pure Rust, limits on depth, events and aliases), streaming
/// straight into the protobuf message: no intermediate tree, and a scalar is read as the type
/// its field has (`version: 1.0` is the string `"1.0"`).
pub fn parse(text: &str) -> Result<pb::Pattern, DocumentError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge { size: text.len(), limit: MAX_DOCUMENT_BYTES });
    }
    // A byte-order mark (editors on Windows write one) is not content.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() || text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Err(not_an_object(None));
    }
    let mut track = serde_path_to_error::Track::new();
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |de| {
        MessageSeed(pattern_descriptor()).deserialize(serde_path_to_error::Deserializer::new(de, &mut track))
    });
    let message = parsed.map_err(|e| document_error(&e, track.path().to_string()))?;
    message.transcode_to::<pb::Pattern>().map_err(|e| DocumentError::Shape {
        path: String::new(),
        message: e.to_string(),
        line: None,
    })
}

/// What went wrong where, from the parser's error and the path the deserializer had reached.
fn document_error(e: &serde_saphyr::Error, path: String) -> DocumentError {
    use serde_saphyr::Error as E;
    let line = e.location().map(|l| (l.line(), l.column())).filter(|(l, _)| *l > 0);
    // `?` stands for a key not read yet (the error is in the key): the path is its mapping's.
    let path = path.trim_end_matches('?').trim_end_matches('.');
    let path = if path.is_empty() || path == "." { String::new() } else { shorten(path.to_string()) };
    let syntax = |message: String| DocumentError::Syntax { message, path: path.clone(), line };
    let too_large = "the aliases (`*name`) of the document expand to more than the limit of 100000 nodes";
    match e {
        // The document itself is of the wrong type (a list, a string).
        E::Unexpected { .. } | E::SerdeInvalidType { .. } if path.is_empty() => not_an_object(line),
        E::DuplicateMappingKey { key, .. } => match key {
            Some(key) => syntax(format!("the key `{}` appears twice", shorten(key.clone()))),
            None => syntax("a key appears twice".into()),
        },
        E::Budget { .. } => syntax(nesting(plain(e))),
        E::AliasReplayCounterOverflow { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => syntax(too_large.into()),
        _ if plain(e).starts_with("alias") && plain(e).contains("limit") => syntax(too_large.into()),
        // Not YAML: what the scanner and parser refused.
        E::ExternalMessage { .. }
        | E::Eof { .. }
        | E::MultipleDocuments { .. }
        | E::UnknownAnchor { .. }
        | E::AliasError { .. }
        | E::IndentationError { .. }
        | E::ContainerEndMismatch { .. }
        | E::UnexpectedSequenceEnd { .. }
        | E::UnexpectedMappingEnd { .. } => syntax(nesting(plain(e))),
        // A field of the wrong shape: a value of the wrong type, an unknown field.
        _ => DocumentError::Shape { path, message: plain(e), line },
    }
}

/// A path is as long as the document nests (`with.x[0][0]…`): its end is cut beyond 256 bytes.
fn shorten(path: String) -> String {
    shorten_to(path, 256)
}

fn shorten_to(mut path: String, max: usize) -> String {
    if path.len() > max {
        let mut end = max;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
        path.push('…');
    }
    path
}

fn not_an_object(line: Option<(u64, u64)>) -> DocumentError {
    DocumentError::Shape {
        path: String::new(),
        message: "a pattern document must be an object (name, version, steps, ...)".into(),
        line,
    }
}

/// The parser's message without the location it appends (the error says it once, in front),
/// its first line only, at most 512 bytes.
fn plain(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let text = text.lines().next().unwrap_or_default();
    let text = match text.rfind(" at line ") {
        Some(i) if text[i + 9..].starts_with(|c: char| c.is_ascii_digit()) => &text[..i],
        _ => text,
    };
    shorten_to(text.trim().to_string(), 512)
}

/// The parser's depth-budget message says neither that the document nests too deep nor how deep
/// it may nest: say both.
fn nesting(message: String) -> String {
    if message.contains("Depth") || message.contains("recursion limit") || message.contains("nesting limit") {
        format!("the document nests deeper than the limit of {MAX_NESTING} levels of objects and lists ({message})")
    } else {
        message
    }
}

/// Converts a JSON value (already parsed) into a `Pattern`, naming the path of the first field of
/// the wrong shape.
pub fn from_json(value: serde_json::Value) -> Result<pb::Pattern, DocumentError> {
    if !value.is_object() {
        return Err(not_an_object(None));
    }
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let seed = MessageSeed(pattern_descriptor());
    let message = seed.deserialize(de).map_err(|e: serde_json::Error| {
        let path = track.path().to_string();
        DocumentError::Shape {
            path: if path == "." { String::new() } else { path },
            message: e.to_string(),
            line: None,
        }
    })?;
    message.transcode_to::<pb::Pattern>().map_err(|e| DocumentError::Shape {
        path: String::new(),
        message: e.to_string(),
        line: None,
    })
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
    serde_saphyr::to_string(&to_json(pattern)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_too_deep_says_so_and_names_the_limit() {
        let deep = format!("steps: [{{id: a, with: {{x: {}1{}}}}}]", "[".repeat(200), "]".repeat(200));
        let e = parse(&deep).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("nests deeper than the limit of 64 levels"), "{e}");
        assert!(e.contains("line 1, column 87 (in steps[0].with.x[0][0]"), "{e}");
        // Far deeper: the same answer, a bounded message, and no stack overflow.
        let deeper = format!("steps: [{{id: a, with: {{x: {}1{}}}}}]", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(&deeper).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("nests deeper than the limit of 64 levels") && e.len() < 600, "{e}");
    }

    #[test]
    fn plain_scalars_follow_yaml_1_2() {
        let doc = parse(
            "name: t\nversion: 1.0\ninput: {type: object, required: [n, y, no, on, off], properties: {n: {type: string}}}\n",
        )
        .unwrap_or_default();
        assert_eq!(doc.version, "1.0", "a string field takes the text");
        let json = to_json(&doc);
        assert_eq!(json["input"]["required"], serde_json::json!(["n", "y", "no", "on", "off"]), "{json}");
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

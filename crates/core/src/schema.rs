//! JSON Schema of protobuf messages (in their proto3 JSON mapping with proto field names), served
//! to editors and the UI so they validate a `with` block as the author types. The protos' comments
//! become `description`s (when the backend's descriptors carry source info, as protoc's and
//! protox's do), and each number keeps its protobuf type in `format` (`int32`, `uint64`, `double` …)
//! so a form can say what a field takes.

use std::collections::BTreeSet;

use prost_reflect::{Cardinality, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// Schema of a message; recursive message types are cut with a `$comment` at the second visit.
pub fn message_schema(desc: &MessageDescriptor) -> Value {
    let mut seen = BTreeSet::new();
    message(desc, &mut seen)
}

/// The `$schema` of every schema served.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// JSON Schema of the pattern document, generated from the `nexus.v1.Pattern` descriptor (the
/// document *is* that message's JSON mapping): what editors validate YAML and JSON patterns with
/// (`# yaml-language-server: $schema=…`), served at `/schema/pattern.json` and committed as
/// `schema/pattern.json`.
pub fn pattern_document_schema() -> Value {
    let Some(desc) = crate::descriptor_pool().get_message_by_name("nexus.v1.Pattern") else {
        unreachable!("nexus.v1.Pattern is compiled into the descriptor pool")
    };
    let mut schema = message_schema(&desc);
    if let Value::Object(o) = &mut schema {
        o.insert("$schema".into(), Value::from(DIALECT));
        o.insert("title".into(), Value::from("Nexus pattern document (nexus.v1.Pattern)"));
    }
    schema
}

/// A served schema: the message's, with its `$schema`.
pub fn served_message_schema(desc: &MessageDescriptor) -> Value {
    let mut schema = message_schema(desc);
    if let Value::Object(o) = &mut schema {
        o.insert("$schema".into(), Value::from(DIALECT));
    }
    schema
}

fn message(desc: &MessageDescriptor, seen: &mut BTreeSet<String>) -> Value {
    if let Some(wkt) = well_known(desc.full_name()) {
        return wkt;
    }
    if !seen.insert(desc.full_name().to_string()) {
        return json!({"type": "object", "$comment": format!("recursive {}", desc.full_name())});
    }
    let file = desc.parent_file();
    let mut properties = Map::new();
    for field in desc.fields() {
        let mut schema = field_schema(&field, seen);
        if let Value::Object(o) = &mut schema {
            if let Some(text) = comment(&file, field.path()) {
                o.insert("description".into(), Value::String(text));
            }
            // JSON objects (and protobuf Structs) do not keep key order: the field number lets a
            // reader list fields as the proto declares them.
            o.insert("x-field-number".into(), Value::from(field.number()));
        }
        properties.insert(field.name().to_string(), schema);
    }
    seen.remove(desc.full_name());
    let mut schema = json!({
        "type": "object",
        "title": desc.full_name(),
        "properties": properties,
        "additionalProperties": false,
    });
    // A `oneof` holds at most one of its fields: no two of them together.
    let exclusive: Vec<Value> = desc
        .oneofs()
        .filter(|o| !o.is_synthetic())
        .flat_map(|o| {
            let names: Vec<String> = o.fields().map(|f| f.name().to_string()).collect();
            let mut pairs = Vec::new();
            for (i, a) in names.iter().enumerate() {
                for b in &names[i + 1..] {
                    pairs.push(json!({"not": {"required": [a, b]}}));
                }
            }
            pairs
        })
        .collect();
    if let Value::Object(o) = &mut schema {
        let oneofs: Vec<Value> = desc
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|o| json!({"name": o.name(), "fields": o.fields().map(|f| f.name().to_string()).collect::<Vec<_>>()}))
            .collect();
        if !oneofs.is_empty() {
            o.insert("x-oneofs".into(), Value::Array(oneofs));
        }
        if !exclusive.is_empty() {
            o.insert("allOf".into(), Value::Array(exclusive));
        }
    }
    if let (Some(text), Value::Object(o)) = (comment(&file, desc.path()), &mut schema) {
        o.insert("description".into(), Value::String(text));
    }
    schema
}

/// The comment of a message field in its proto, if the descriptors carry it.
pub fn field_comment(field: &FieldDescriptor) -> Option<String> {
    comment(&field.parent_file(), field.path())
}

/// The comment of a message in its proto, if the descriptors carry it.
pub fn message_comment(desc: &MessageDescriptor) -> Option<String> {
    comment(&desc.parent_file(), desc.path())
}

/// The comment of an RPC method in its proto, if the descriptors carry it.
pub fn method_comment(method: &prost_reflect::MethodDescriptor) -> Option<String> {
    comment(&method.parent_file(), method.path())
}

/// The comment attached to the declaration at `path` (leading, else trailing), trimmed; `None`
/// when the descriptors carry no source info or the declaration has no comment.
fn comment(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location
        .leading_comments
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .or(location.trailing_comments.as_deref())?;
    let text = text.lines().map(str::trim).collect::<Vec<_>>().join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn field_schema(field: &FieldDescriptor, seen: &mut BTreeSet<String>) -> Value {
    if field.is_map() {
        let value = match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field(),
            _ => return json!({"type": "object"}),
        };
        return json!({"type": "object", "additionalProperties": kind_schema(&value.kind(), seen)});
    }
    let item = kind_schema(&field.kind(), seen);
    if field.cardinality() == Cardinality::Repeated { json!({"type": "array", "items": item}) } else { item }
}

fn kind_schema(kind: &Kind, seen: &mut BTreeSet<String>) -> Value {
    match kind {
        Kind::Double => json!({"type": "number", "format": "double"}),
        Kind::Float => json!({"type": "number", "format": "float"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "uint32", "minimum": 0}),
        // proto3 JSON writes 64-bit integers as strings and reads both.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": ["integer", "string"], "format": "int64", "pattern": "^-?[0-9]+$"})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": ["integer", "string"], "format": "uint64", "pattern": "^[0-9]+$"})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Enum(e) => {
            // Names are what documents write; numbers are accepted too (proto3 JSON reads both), so
            // both are in `enum`; `x-enum-numbers` pairs each name with its number for forms.
            let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
            let numbers: Vec<i32> = e.values().map(|v| v.number()).collect();
            let accepted: Vec<Value> =
                names.iter().map(|n| Value::from(n.as_str())).chain(numbers.iter().map(|n| Value::from(*n))).collect();
            let file = e.parent_file();
            let comments: Vec<String> = e.values().map(|v| comment(&file, v.path()).unwrap_or_default()).collect();
            let mut schema = json!({"type": ["string", "integer"], "title": e.full_name(), "enum": accepted, "x-enum-numbers": numbers});
            if let Value::Object(o) = &mut schema {
                if comments.iter().any(|c| !c.is_empty()) {
                    o.insert("x-enum-descriptions".into(), json!(comments));
                }
                if let Some(text) = comment(&file, e.path()) {
                    o.insert("x-enum-description".into(), Value::String(text));
                }
            }
            schema
        }
        Kind::Message(m) => message(m, seen),
    }
}

fn well_known(name: &str) -> Option<Value> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "pattern": "^-?[0-9.]+s$"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": ["integer", "string"]})
        }
        _ => return None,
    })
}

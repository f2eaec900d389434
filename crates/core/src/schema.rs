//! JSON Schema of protobuf messages (in their proto3 JSON mapping with proto field names), served
//! to editors and the UI so they validate a `with` block as the author types.

use std::collections::BTreeSet;

use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// Schema of a message; recursive message types are cut with a `$comment` at the second visit.
pub fn message_schema(desc: &MessageDescriptor) -> Value {
    let mut seen = BTreeSet::new();
    message(desc, &mut seen)
}

fn message(desc: &MessageDescriptor, seen: &mut BTreeSet<String>) -> Value {
    if let Some(wkt) = well_known(desc.full_name()) {
        return wkt;
    }
    if !seen.insert(desc.full_name().to_string()) {
        return json!({"type": "object", "$comment": format!("recursive {}", desc.full_name())});
    }
    let mut properties = Map::new();
    for field in desc.fields() {
        properties.insert(field.name().to_string(), field_schema(&field, seen));
    }
    seen.remove(desc.full_name());
    json!({
        "type": "object",
        "title": desc.full_name(),
        "properties": properties,
        "additionalProperties": false,
    })
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
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer"})
        }
        // proto3 JSON writes 64-bit integers as strings and reads both.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": ["integer", "string"], "pattern": "^-?[0-9]+$"})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Enum(e) => {
            let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
            json!({"type": ["string", "integer"], "enum": names})
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

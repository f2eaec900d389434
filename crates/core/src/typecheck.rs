//! Static types of expressions and the check that a `with` block fits an action's input message.

use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value as Json;

use crate::{
    diagnostic::{Diagnostics, name_list, suggest},
    expr::Template,
    input::InputType,
};

/// What is statically known of a value's type.
#[derive(Debug, Clone)]
pub enum Ty {
    Dyn,
    Bool,
    Int,
    UInt,
    Double,
    String,
    Bytes,
    Timestamp,
    Duration,
    Message(MessageDescriptor),
    List(Box<Ty>),
    Map(Box<Ty>),
    /// An object with known keys and values of unknown type (a sub-pattern's output).
    Record(Vec<String>),
    /// An event: its CloudEvents fields (strings) and `data` (unknown).
    Event,
}

impl Ty {
    pub fn describe(&self) -> String {
        match self {
            Ty::Dyn => "dyn".into(),
            Ty::Event => "event".into(),
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::UInt => "uint".into(),
            Ty::Double => "double".into(),
            Ty::String => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Timestamp => "timestamp".into(),
            Ty::Duration => "duration".into(),
            Ty::Message(m) => format!("message {}", m.full_name()),
            Ty::List(t) => format!("list of {}", t.describe()),
            Ty::Map(t) => format!("map of {}", t.describe()),
            Ty::Record(keys) => format!("object with {}", keys.join(", ")),
        }
    }

    pub fn of_input(t: &InputType) -> Ty {
        match t {
            InputType::Any | InputType::Object => Ty::Dyn,
            InputType::String => Ty::String,
            InputType::Integer => Ty::Int,
            InputType::Number => Ty::Double,
            InputType::Boolean => Ty::Bool,
            InputType::Array => Ty::List(Box::new(Ty::Dyn)),
        }
    }

    pub fn of_field(field: &FieldDescriptor) -> Ty {
        if field.is_map()
            && let Kind::Message(entry) = field.kind()
        {
            return Ty::Map(Box::new(Ty::of_kind(&entry.map_entry_value_field().kind())));
        }
        let t = Ty::of_kind(&field.kind());
        if field.cardinality() == Cardinality::Repeated { Ty::List(Box::new(t)) } else { t }
    }

    pub fn of_kind(kind: &Kind) -> Ty {
        match kind {
            Kind::Double | Kind::Float => Ty::Double,
            Kind::Int32 | Kind::Int64 | Kind::Sint32 | Kind::Sint64 | Kind::Sfixed32 | Kind::Sfixed64 => Ty::Int,
            Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64 => Ty::UInt,
            Kind::Bool => Ty::Bool,
            Kind::String => Ty::String,
            Kind::Bytes => Ty::Bytes,
            // Enums read as their names (see value.rs).
            Kind::Enum(_) => Ty::String,
            Kind::Message(m) => Ty::of_message(m),
        }
    }

    pub fn of_message(m: &MessageDescriptor) -> Ty {
        match m.full_name() {
            "google.protobuf.Timestamp" => Ty::Timestamp,
            "google.protobuf.Duration" => Ty::Duration,
            "google.protobuf.Struct" => Ty::Map(Box::new(Ty::Dyn)),
            "google.protobuf.Value" => Ty::Dyn,
            "google.protobuf.ListValue" => Ty::List(Box::new(Ty::Dyn)),
            "google.protobuf.StringValue" => Ty::String,
            "google.protobuf.BoolValue" => Ty::Bool,
            "google.protobuf.BytesValue" => Ty::Bytes,
            "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => Ty::Double,
            "google.protobuf.Int32Value" | "google.protobuf.Int64Value" => Ty::Int,
            "google.protobuf.UInt32Value" | "google.protobuf.UInt64Value" => Ty::UInt,
            _ => Ty::Message(m.clone()),
        }
    }

    /// The type of `.segment` read from a value of this type.
    pub fn select(&self, segment: &str, walked: &str) -> Result<Ty, String> {
        match self {
            Ty::Dyn | Ty::Map(_) => Ok(match self {
                Ty::Map(v) => (**v).clone(),
                _ => Ty::Dyn,
            }),
            Ty::Message(m) => match m.get_field_by_name(segment).or_else(|| m.get_field_by_json_name(segment)) {
                Some(f) => Ok(Ty::of_field(&f)),
                None => {
                    let names: Vec<String> = m.fields().map(|f| f.name().to_string()).collect();
                    let hint = suggest(segment, names.iter().map(String::as_str))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    Err(format!(
                        "`{walked}` is a {} which has no field `{segment}`{hint}; its fields are: {}",
                        m.full_name(),
                        name_list(names.iter().map(String::as_str))
                    ))
                }
            },
            Ty::Event => match segment {
                "data" => Ok(Ty::Dyn),
                s if crate::plan::EVENT_FIELDS.contains(&s) => Ok(Ty::String),
                _ => {
                    let fields = crate::plan::EVENT_FIELDS;
                    let hint = suggest(segment, fields.iter().copied())
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    Err(format!(
                        "`{walked}` is an event, which has no `{segment}`{hint}; its fields are: {}",
                        name_list(fields.iter().copied())
                    ))
                }
            },
            Ty::Record(keys) if keys.iter().any(|k| k == segment) => Ok(Ty::Dyn),
            Ty::Record(keys) => {
                let hint = suggest(segment, keys.iter().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                Err(format!(
                    "`{walked}` has no `{segment}`{hint}; the called pattern outputs: {}",
                    name_list(keys.iter().map(String::as_str))
                ))
            }
            other => Err(format!("`{walked}` is a {}; it has no field `{segment}`", other.describe())),
        }
    }
}

/// Why a value of type `src` cannot go into a field of kind `kind`, if it cannot.
fn kind_mismatch(src: &Ty, kind: &Kind) -> Option<String> {
    let ok = match (src, kind) {
        (Ty::Dyn, _) => true,
        (Ty::String, Kind::String | Kind::Bytes | Kind::Enum(_)) => true,
        (Ty::String, Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64) => true,
        (Ty::Bool, Kind::Bool) => true,
        (Ty::Int | Ty::UInt, k) if is_integer(k) || matches!(k, Kind::Double | Kind::Float | Kind::Enum(_)) => true,
        (Ty::Double, Kind::Double | Kind::Float) => true,
        (Ty::Bytes, Kind::Bytes) => true,
        (Ty::Timestamp | Ty::String, Kind::Message(m)) if m.full_name() == "google.protobuf.Timestamp" => true,
        (Ty::Duration, Kind::Message(m)) if m.full_name() == "google.protobuf.Duration" => true,
        (_, Kind::Message(m)) if m.full_name() == "google.protobuf.Value" => true,
        (Ty::Map(_) | Ty::Record(_), Kind::Message(m)) => !is_scalar_wkt(m.full_name()),
        (Ty::Message(a), Kind::Message(b)) => a.full_name() == b.full_name(),
        (t, Kind::Message(m)) if is_scalar_wkt(m.full_name()) => {
            return kind_mismatch(t, &wrapped_kind(m)?);
        }
        _ => false,
    };
    (!ok).then(|| format!("expects {}, got {}", kind_name(kind), src.describe()))
}

fn is_integer(k: &Kind) -> bool {
    matches!(
        k,
        Kind::Int32
            | Kind::Int64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Sfixed32
            | Kind::Sfixed64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Fixed32
            | Kind::Fixed64
    )
}

fn is_scalar_wkt(name: &str) -> bool {
    name.starts_with("google.protobuf.") && name.ends_with("Value") && name != "google.protobuf.Value"
}

fn wrapped_kind(m: &MessageDescriptor) -> Option<Kind> {
    m.get_field(1).map(|f| f.kind())
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => format!("a {} object", m.full_name()),
        Kind::Enum(e) => format!("an enum {} name", e.full_name()),
        Kind::String => "a string".into(),
        Kind::Bool => "a bool".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Double | Kind::Float => "a number".into(),
        k if is_integer(k) => format!("an integer ({k:?})").to_lowercase(),
        _ => "a value".into(),
    }
}

/// Resolves the static type of an expression; `Dyn` when it is more than a path.
pub trait TypeEnv {
    fn type_of(&self, expr: &crate::expr::Expr) -> Ty;
}

/// Checks that a `with` template fits `desc`, adding a diagnostic per mismatch.
pub fn check_message_template(
    t: &Template,
    desc: &MessageDescriptor,
    path: &str,
    env: &dyn TypeEnv,
    diags: &mut Diagnostics,
) {
    // Struct and Value hold any JSON: an object with expressions in it fits them as a literal one
    // does (its keys are map keys, not fields); Value takes a list or a string too.
    match (desc.full_name(), t) {
        ("google.protobuf.Struct", Template::Object(_)) => return,
        ("google.protobuf.Value", Template::Object(_) | Template::List(_) | Template::Interpolate(_)) => return,
        _ => {}
    }
    match t {
        Template::Object(fields) => {
            for (name, child) in fields {
                let child_path = format!("{path}.{name}");
                match lookup_field(desc, name) {
                    Ok(field) => check_field_template(child, &field, &child_path, env, diags),
                    Err(msg) => diags.error(child_path, msg),
                }
            }
        }
        Template::Literal(json, _) => check_literal_message(json, desc, path, diags),
        Template::Expr(e) => {
            let ty = env.type_of(e);
            if let Some(msg) = kind_mismatch(&ty, &Kind::Message(desc.clone())) {
                diags.error(path, format!("`{}` {msg}", e.source()));
            }
        }
        Template::Interpolate(_) | Template::List(_) => {
            diags.error(path, format!("expects a {} object", desc.full_name()));
        }
    }
}

fn lookup_field(desc: &MessageDescriptor, name: &str) -> Result<FieldDescriptor, String> {
    desc.get_field_by_name(name).or_else(|| desc.get_field_by_json_name(name)).ok_or_else(|| {
        let names: Vec<String> = desc.fields().map(|f| f.name().to_string()).collect();
        let hint = suggest(name, names.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        format!(
            "unknown field `{name}` in {}{hint}; its fields are: {}",
            desc.full_name(),
            name_list(names.iter().map(String::as_str))
        )
    })
}

fn check_field_template(t: &Template, field: &FieldDescriptor, path: &str, env: &dyn TypeEnv, diags: &mut Diagnostics) {
    match t {
        Template::Literal(json, _) => check_literal_field(json, field, path, diags),
        Template::Expr(e) => {
            let ty = env.type_of(e);
            if let Some(msg) = field_mismatch(&ty, field) {
                diags.error(path, format!("field `{}` {msg} (from `{}`)", field.name(), e.source()));
            }
        }
        Template::Interpolate(_) => {
            if let Some(msg) = field_mismatch(&Ty::String, field) {
                diags.error(path, format!("field `{}` {msg} (text with ${{{{ }}}} is a string)", field.name()));
            }
        }
        Template::Object(entries) => {
            if field.is_map() {
                let Kind::Message(entry) = field.kind() else { return };
                let value_field = entry.map_entry_value_field();
                for (k, child) in entries {
                    check_field_template(child, &value_field, &format!("{path}.{k}"), env, diags);
                }
            } else if field.cardinality() == Cardinality::Repeated {
                diags.error(path, format!("field `{}` expects a list", field.name()));
            } else if let Kind::Message(m) = field.kind() {
                check_message_template(t, &m, path, env, diags);
            } else {
                diags.error(
                    path,
                    format!("field `{}` expects {}, got an object", field.name(), kind_name(&field.kind())),
                );
            }
        }
        Template::List(items) => {
            if field.cardinality() != Cardinality::Repeated || field.is_map() {
                diags.error(path, format!("field `{}` is not a list", field.name()));
                return;
            }
            for (i, item) in items.iter().enumerate() {
                check_item_template(item, field, &format!("{path}[{i}]"), env, diags);
            }
        }
    }
}

fn check_item_template(t: &Template, field: &FieldDescriptor, path: &str, env: &dyn TypeEnv, diags: &mut Diagnostics) {
    let kind = field.kind();
    match t {
        Template::Literal(json, _) => check_literal_kind(json, &kind, path, diags),
        Template::Expr(e) => {
            if let Some(msg) = kind_mismatch(&env.type_of(e), &kind) {
                diags.error(path, format!("list item {msg} (from `{}`)", e.source()));
            }
        }
        Template::Interpolate(_) => {
            if let Some(msg) = kind_mismatch(&Ty::String, &kind) {
                diags.error(path, format!("list item {msg}"));
            }
        }
        Template::Object(_) => match &kind {
            Kind::Message(m) => check_message_template(t, m, path, env, diags),
            k => diags.error(path, format!("list item {}, got an object", kind_name(k))),
        },
        Template::List(_) => diags.error(path, "nested lists are not a protobuf type"),
    }
}

fn field_mismatch(ty: &Ty, field: &FieldDescriptor) -> Option<String> {
    if matches!(ty, Ty::Dyn) {
        return None;
    }
    if field.is_map() {
        return match ty {
            Ty::Map(_) => None,
            other => Some(format!("expects a map, got {}", other.describe())),
        };
    }
    if field.cardinality() == Cardinality::Repeated {
        return match ty {
            Ty::List(item) => kind_mismatch(item, &field.kind()).map(|m| format!("items: {m}")),
            other => Some(format!("expects a list, got {}", other.describe())),
        };
    }
    kind_mismatch(ty, &field.kind())
}

// ---------------------------------------------------------------------------------------------
// Literals

fn check_literal_message(json: &Json, desc: &MessageDescriptor, path: &str, diags: &mut Diagnostics) {
    match json {
        Json::Object(o) => {
            if matches!(desc.full_name(), "google.protobuf.Struct" | "google.protobuf.Value") {
                return;
            }
            for (name, v) in o {
                let child_path = format!("{path}.{name}");
                match lookup_field(desc, name) {
                    Ok(field) => check_literal_field(v, &field, &child_path, diags),
                    Err(msg) => diags.error(child_path, msg),
                }
            }
        }
        Json::Null => {}
        other => diags.error(path, format!("expects a {} object, got {}", desc.full_name(), json_type(other))),
    }
}

fn check_literal_field(json: &Json, field: &FieldDescriptor, path: &str, diags: &mut Diagnostics) {
    if json.is_null() {
        return;
    }
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { return };
        match json {
            Json::Object(o) => {
                let vk = entry.map_entry_value_field().kind();
                for (k, v) in o {
                    check_literal_kind(v, &vk, &format!("{path}.{k}"), diags);
                }
            }
            other => diags.error(path, format!("field `{}` expects a map, got {}", field.name(), json_type(other))),
        }
        return;
    }
    if field.cardinality() == Cardinality::Repeated {
        match json {
            Json::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    check_literal_kind(v, &field.kind(), &format!("{path}[{i}]"), diags);
                }
            }
            other => diags.error(path, format!("field `{}` expects a list, got {}", field.name(), json_type(other))),
        }
        return;
    }
    check_literal_kind(json, &field.kind(), path, diags);
}

fn check_literal_kind(json: &Json, kind: &Kind, path: &str, diags: &mut Diagnostics) {
    let problem: Option<String> = match (kind, json) {
        (_, Json::Null) => None,
        (Kind::String, Json::String(_)) | (Kind::Bool, Json::Bool(_)) | (Kind::Bytes, Json::String(_)) => None,
        (Kind::Double | Kind::Float, Json::Number(_)) => None,
        (k, Json::Number(n)) if is_integer(k) => {
            let fits = match k {
                Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => n.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
                Kind::Uint32 | Kind::Fixed32 => n.as_u64().is_some_and(|v| u32::try_from(v).is_ok()),
                Kind::Uint64 | Kind::Fixed64 => n.as_u64().is_some(),
                _ => n.as_i64().is_some(),
            };
            (!fits).then(|| format!("{n} is not a valid {}", format!("{k:?}").to_lowercase()))
        }
        (Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64, Json::String(s)) => {
            s.parse::<i128>().is_err().then(|| format!("{s:?} is not an integer"))
        }
        (Kind::Enum(e), Json::String(s)) => e.get_value_by_name(s).is_none().then(|| {
            let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
            format!("{s:?} is not a value of {} (one of: {})", e.full_name(), names.join(", "))
        }),
        (Kind::Enum(_), Json::Number(n)) => n.as_i64().is_none().then(|| format!("{n} is not an enum number")),
        (Kind::Message(m), v) => match (m.full_name(), v) {
            ("google.protobuf.Timestamp", Json::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .err()
                .map(|e| format!("{s:?} is not an RFC 3339 timestamp: {e}")),
            ("google.protobuf.Duration", Json::String(s)) => (!s.ends_with('s')
                || s.trim_end_matches('s').parse::<f64>().is_err())
            .then(|| format!("{s:?} is not a duration like \"1.5s\"")),
            ("google.protobuf.Value", _) => None,
            (name, v) if is_scalar_wkt(name) => {
                if let Some(k) = wrapped_kind(m) {
                    check_literal_kind(v, &k, path, diags);
                }
                None
            }
            (_, Json::Object(_)) => {
                check_literal_message(v, m, path, diags);
                None
            }
            (_, other) => Some(format!("expects a {} object, got {}", m.full_name(), json_type(other))),
        },
        (k, other) => Some(format!("expects {}, got {}", kind_name(k), json_type(other))),
    };
    if let Some(p) = problem {
        diags.error(path, p);
    }
}

fn json_type(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("bool {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) => format!("string {s:?}"),
        Json::Array(_) => "a list".into(),
        Json::Object(_) => "an object".into(),
    }
}

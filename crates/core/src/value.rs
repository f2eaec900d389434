//! Conversions between the three value worlds of an execution: protobuf messages (what backends
//! speak), CEL values (what expressions read) and JSON / `google.protobuf.Struct` (what callers
//! send and receive).
//!
//! Numbers: JSON has only doubles, CEL has int, uint and double. A JSON number that is integral
//! and fits an i64 becomes a CEL `int` (not `uint`: `input.n * 2` must work), anything else a
//! `double`. Protobuf 64-bit integers keep their exact type both ways.

use std::{collections::HashMap, sync::Arc};

use cel::{Value as Cel, objects::Key, objects::Map as CelMap};
use prost_reflect::{
    Cardinality, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value as PValue,
};
use prost_types::value::Kind as SKind;

/// A value could not be put into a protobuf field.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConvertError {
    pub message: String,
}

fn err<T>(message: impl Into<String>) -> Result<T, ConvertError> {
    Err(ConvertError { message: message.into() })
}

/// The CEL type name of a value, for messages.
pub fn type_name(v: &Cel) -> &'static str {
    match v {
        Cel::List(_) => "list",
        Cel::Map(_) => "map",
        Cel::Function(..) => "function",
        Cel::Int(_) => "int",
        Cel::UInt(_) => "uint",
        Cel::Float(_) => "double",
        Cel::String(_) => "string",
        Cel::Bytes(_) => "bytes",
        Cel::Bool(_) => "bool",
        Cel::Duration(_) => "duration",
        Cel::Timestamp(_) => "timestamp",
        Cel::Opaque(_) => "opaque",
        Cel::Struct(_) => "struct",
        Cel::Null => "null",
    }
}

/// The CEL map key `s`.
///
/// The same few names come back on every execution — the fields of each backend response, the
/// properties of each input, the keys of each output template — and a new `Arc<String>` per key
/// was two allocations and two frees each time, the largest single source of allocations on the
/// hot path (~57 per execution of user_creation). So each thread keeps the keys it has made in a
/// set and hands out another reference to the one it holds. The set is bounded: names longer
/// than [`KEY_MAX_LEN`] are not kept, and past [`KEY_SET_MAX`] names it starts over, whatever
/// names callers send.
pub fn key(s: &str) -> Key {
    Key::String(interned(s))
}

/// Longer names are not kept (they are rarely field names).
const KEY_MAX_LEN: usize = 64;
/// Names one thread keeps at most before it forgets them all.
const KEY_SET_MAX: usize = 4096;

/// A kept key, looked up by its text.
#[derive(PartialEq, Eq, Hash)]
struct Interned(Arc<String>);

impl std::borrow::Borrow<str> for Interned {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

thread_local! {
    static KEYS: std::cell::RefCell<std::collections::HashSet<Interned, foldhash::fast::RandomState>> =
        std::cell::RefCell::new(std::collections::HashSet::default());
}

fn interned(s: &str) -> Arc<String> {
    if s.len() > KEY_MAX_LEN {
        return Arc::new(s.to_owned());
    }
    KEYS.try_with(|keys| {
        // Never re-entered (nothing here calls back into `key`); a failed borrow or a thread
        // being torn down just makes a new string.
        let mut keys = keys.try_borrow_mut().ok()?;
        if let Some(held) = keys.get(s) {
            return Some(held.0.clone());
        }
        if keys.len() >= KEY_SET_MAX {
            keys.clear();
        }
        let made = Arc::new(s.to_owned());
        keys.insert(Interned(made.clone()));
        Some(made)
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| Arc::new(s.to_owned()))
}

pub fn map(entries: HashMap<Key, Cel>) -> Cel {
    Cel::Map(CelMap { map: Arc::new(entries) })
}

// ---------------------------------------------------------------------------------------------
// protobuf -> CEL

/// A message as a CEL map keyed by proto field names. Scalar fields are always present (proto3
/// defaults included, so `steps.user.user.id` reads "" rather than failing); message fields only
/// when set, so `has(steps.x.field)` tells whether the backend sent it.
pub fn message_to_cel(msg: &DynamicMessage) -> Cel {
    if let Some(v) = well_known_to_cel(msg) {
        return v;
    }
    let desc = msg.descriptor();
    let mut out = HashMap::with_capacity(desc.fields().len());
    for field in desc.fields() {
        let present = msg.has_field(&field);
        if !present
            && (matches!(field.kind(), Kind::Message(_)) && !field.is_list() && !field.is_map()
                || field.containing_oneof().is_some())
        {
            continue;
        }
        let value = msg.get_field(&field);
        out.insert(key(field.name()), field_value_to_cel(&value, &field));
    }
    map(out)
}

fn field_value_to_cel(v: &PValue, field: &FieldDescriptor) -> Cel {
    match v {
        PValue::List(items) => Cel::List(Arc::new(items.iter().map(|i| scalar_to_cel(i, &field.kind())).collect())),
        PValue::Map(entries) => {
            let value_kind = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                k => k,
            };
            let mut out = HashMap::with_capacity(entries.len());
            for (k, v) in entries {
                let k = match k {
                    MapKey::Bool(b) => Key::Bool(*b),
                    MapKey::I32(i) => Key::Int(i64::from(*i)),
                    MapKey::I64(i) => Key::Int(*i),
                    MapKey::U32(u) => Key::Uint(u64::from(*u)),
                    MapKey::U64(u) => Key::Uint(*u),
                    MapKey::String(s) => key(s),
                };
                out.insert(k, scalar_to_cel(v, &value_kind));
            }
            map(out)
        }
        other => scalar_to_cel(other, &field.kind()),
    }
}

pub(crate) fn scalar_to_cel(v: &PValue, kind: &Kind) -> Cel {
    match v {
        PValue::Bool(b) => Cel::Bool(*b),
        PValue::I32(i) => Cel::Int(i64::from(*i)),
        PValue::I64(i) => Cel::Int(*i),
        PValue::U32(u) => Cel::UInt(u64::from(*u)),
        PValue::U64(u) => Cel::UInt(*u),
        PValue::F32(f) => Cel::Float(f64::from(*f)),
        PValue::F64(f) => Cel::Float(*f),
        PValue::String(s) => Cel::String(Arc::new(s.clone())),
        PValue::Bytes(b) => Cel::Bytes(Arc::new(b.to_vec())),
        // Enums read as their names: that is what callers see in JSON and write in documents.
        PValue::EnumNumber(n) => match kind {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(v) => Cel::String(Arc::new(v.name().to_string())),
                None => Cel::Int(i64::from(*n)),
            },
            _ => Cel::Int(i64::from(*n)),
        },
        PValue::Message(m) => message_to_cel(m),
        PValue::List(_) | PValue::Map(_) => Cel::Null,
    }
}

fn well_known_to_cel(msg: &DynamicMessage) -> Option<Cel> {
    let descriptor = msg.descriptor();
    // Every message of every response comes through here: no copy of its name to compare.
    let name = descriptor.full_name();
    if !name.starts_with("google.protobuf.") {
        return None;
    }
    match name {
        "google.protobuf.Timestamp" => {
            let ts: prost_types::Timestamp = msg.transcode_to().ok()?;
            let dt = chrono_ts(ts.seconds, ts.nanos)?;
            Some(Cel::Timestamp(dt))
        }
        "google.protobuf.Duration" => {
            let d: prost_types::Duration = msg.transcode_to().ok()?;
            cel_duration(d.seconds, d.nanos).map(Cel::Duration)
        }
        "google.protobuf.Struct" => {
            let s: prost_types::Struct = msg.transcode_to().ok()?;
            Some(struct_to_cel(&s))
        }
        "google.protobuf.Value" => {
            let v: prost_types::Value = msg.transcode_to().ok()?;
            Some(json_value_to_cel(&v))
        }
        "google.protobuf.ListValue" => {
            let l: prost_types::ListValue = msg.transcode_to().ok()?;
            Some(Cel::List(Arc::new(l.values.iter().map(json_value_to_cel).collect())))
        }
        "google.protobuf.StringValue"
        | "google.protobuf.BoolValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.BytesValue" => {
            let field = descriptor.get_field(1)?;
            Some(scalar_to_cel(&msg.get_field(&field), &field.kind()))
        }
        _ => None,
    }
}

pub(crate) fn chrono_ts(seconds: i64, nanos: i32) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let dt = chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).ok()?)?;
    Some(dt.fixed_offset())
}

/// `None` past chrono's range (±i64::MAX ms): a backend's Duration that large reads as a plain
/// `{seconds, nanos}` map rather than failing the call (or, as `Duration::seconds` would, panicking).
pub(crate) fn cel_duration(seconds: i64, nanos: i32) -> Option<chrono::Duration> {
    chrono::Duration::try_seconds(seconds)?.checked_add(&chrono::Duration::nanoseconds(i64::from(nanos)))
}

// ---------------------------------------------------------------------------------------------
// JSON / Struct -> CEL

pub fn struct_to_cel(s: &prost_types::Struct) -> Cel {
    let mut out = HashMap::with_capacity(s.fields.len());
    for (k, v) in &s.fields {
        out.insert(key(k), json_value_to_cel(v));
    }
    map(out)
}

pub fn json_value_to_cel(v: &prost_types::Value) -> Cel {
    match &v.kind {
        None | Some(SKind::NullValue(_)) => Cel::Null,
        Some(SKind::NumberValue(n)) => number_to_cel(*n),
        Some(SKind::StringValue(s)) => Cel::String(Arc::new(s.clone())),
        Some(SKind::BoolValue(b)) => Cel::Bool(*b),
        Some(SKind::StructValue(s)) => struct_to_cel(s),
        Some(SKind::ListValue(l)) => Cel::List(Arc::new(l.values.iter().map(json_value_to_cel).collect())),
    }
}

fn number_to_cel(n: f64) -> Cel {
    // 2^63 is exactly representable; anything integral below it in magnitude fits an i64.
    if n.fract() == 0.0 && n.abs() < 9.223_372_036_854_776e18 { Cel::Int(n as i64) } else { Cel::Float(n) }
}

pub fn serde_to_cel(v: &serde_json::Value) -> Cel {
    match v {
        serde_json::Value::Null => Cel::Null,
        serde_json::Value::Bool(b) => Cel::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Cel::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => Cel::List(Arc::new(a.iter().map(serde_to_cel).collect())),
        serde_json::Value::Object(o) => map(o.iter().map(|(k, v)| (key(k), serde_to_cel(v))).collect()),
    }
}

// ---------------------------------------------------------------------------------------------
// CEL -> JSON / Struct

/// Largest integer a JSON double carries exactly; larger ones are written as strings, as the
/// proto3 JSON mapping does for 64-bit integers.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

pub fn cel_to_json_value(v: &Cel) -> prost_types::Value {
    let kind = match v {
        Cel::Null => SKind::NullValue(0),
        Cel::Bool(b) => SKind::BoolValue(*b),
        Cel::Int(i) if i.abs() <= MAX_SAFE_INTEGER => SKind::NumberValue(*i as f64),
        Cel::Int(i) => SKind::StringValue(i.to_string()),
        Cel::UInt(u) if *u <= MAX_SAFE_INTEGER as u64 => SKind::NumberValue(*u as f64),
        Cel::UInt(u) => SKind::StringValue(u.to_string()),
        Cel::Float(f) if f.is_finite() => SKind::NumberValue(*f),
        // JSON has no infinity or NaN (google.protobuf.Value refuses them in its JSON form): null,
        // as in `CelJson`, so every transport shows the same output.
        Cel::Float(_) => SKind::NullValue(0),
        Cel::String(s) => SKind::StringValue(s.as_str().to_owned()),
        Cel::Bytes(b) => SKind::StringValue(base64_encode(b)),
        Cel::Duration(d) => SKind::StringValue(format_duration(d)),
        Cel::Timestamp(t) => SKind::StringValue(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Cel::List(l) => SKind::ListValue(prost_types::ListValue { values: l.iter().map(cel_to_json_value).collect() }),
        Cel::Map(m) => SKind::StructValue(map_to_struct(m)),
        Cel::Function(..) | Cel::Opaque(_) | Cel::Struct(_) => SKind::NullValue(0),
    };
    prost_types::Value { kind: Some(kind) }
}

fn map_to_struct(m: &CelMap) -> prost_types::Struct {
    let mut fields = std::collections::BTreeMap::new();
    for (k, v) in m.map.iter() {
        let k = match k {
            Key::String(s) => s.as_str().to_owned(),
            Key::Int(i) => i.to_string(),
            Key::Uint(u) => u.to_string(),
            Key::Bool(b) => b.to_string(),
        };
        fields.insert(k, cel_to_json_value(v));
    }
    prost_types::Struct { fields }
}

/// A CEL map as a `Struct`; other values are wrapped as `{"value": v}`.
pub fn cel_to_struct(v: &Cel) -> prost_types::Struct {
    match v {
        Cel::Map(m) => map_to_struct(m),
        other => {
            prost_types::Struct { fields: [("value".to_string(), cel_to_json_value(other))].into_iter().collect() }
        }
    }
}

pub fn cel_to_serde(v: &Cel) -> serde_json::Value {
    struct_value_to_serde(&cel_to_json_value(v))
}

/// A CEL value serialized straight to JSON text, as `cel_to_serde(v).to_string()` would write it
/// but without building the two intermediate trees (the durable path journals every input).
pub fn cel_to_json_string(v: &Cel) -> String {
    serde_json::to_string(&CelJson(v)).unwrap_or_else(|_| "null".to_string())
}

/// Serializes a CEL value with the JSON mapping of [`cel_to_json_value`] + [`struct_value_to_serde`]:
/// integers beyond 2^53 as strings, whole floats as integers, non-finite floats as null, bytes as
/// base64, map keys as strings in sorted order.
struct CelJson<'a>(&'a Cel);

impl serde::Serialize for CelJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Cel::Null | Cel::Function(..) | Cel::Opaque(_) | Cel::Struct(_) => ser.serialize_unit(),
            Cel::Bool(b) => ser.serialize_bool(*b),
            Cel::Int(i) if i.abs() <= MAX_SAFE_INTEGER => ser.serialize_i64(*i),
            Cel::Int(i) => ser.collect_str(i),
            Cel::UInt(u) if *u <= MAX_SAFE_INTEGER as u64 => ser.serialize_u64(*u),
            Cel::UInt(u) => ser.collect_str(u),
            Cel::Float(f) if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64 => ser.serialize_i64(*f as i64),
            Cel::Float(f) if f.is_finite() => ser.serialize_f64(*f),
            Cel::Float(_) => ser.serialize_unit(),
            Cel::String(s) => ser.serialize_str(s),
            Cel::Bytes(b) => ser.serialize_str(&base64_encode(b)),
            Cel::Duration(d) => ser.serialize_str(&format_duration(d)),
            Cel::Timestamp(t) => ser.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            Cel::List(l) => {
                let mut seq = ser.serialize_seq(Some(l.len()))?;
                for v in l.iter() {
                    seq.serialize_element(&CelJson(v))?;
                }
                seq.end()
            }
            Cel::Map(m) => {
                // Sorted by key text, string keys borrowed (only the rare non-string key is
                // written out); keys of different kinds with one text (`1` and `"1"`) are one
                // JSON key: the entry iterated last wins, as a map collected from them keeps.
                let mut sorted: Vec<(std::borrow::Cow<'_, str>, &Cel)> = m
                    .map
                    .iter()
                    .map(|(k, v)| {
                        let k = match k {
                            Key::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                            Key::Int(i) => std::borrow::Cow::Owned(i.to_string()),
                            Key::Uint(u) => std::borrow::Cow::Owned(u.to_string()),
                            Key::Bool(b) => std::borrow::Cow::Owned(b.to_string()),
                        };
                        (k, v)
                    })
                    .collect();
                // Stable: equal keys keep their iteration order, and the last of each run is kept.
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                let kept =
                    sorted.iter().enumerate().filter(|(i, (k, _))| sorted.get(i + 1).is_none_or(|next| next.0 != *k));
                let mut map = ser.serialize_map(None)?;
                for (_, (k, v)) in kept {
                    map.serialize_entry(k.as_ref(), &CelJson(v))?;
                }
                map.end()
            }
        }
    }
}

pub fn struct_value_to_serde(v: &prost_types::Value) -> serde_json::Value {
    match &v.kind {
        None | Some(SKind::NullValue(_)) => serde_json::Value::Null,
        Some(SKind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER as f64 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
            }
        }
        Some(SKind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(SKind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(SKind::StructValue(s)) => struct_to_serde(s),
        Some(SKind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(struct_value_to_serde).collect()),
    }
}

pub fn struct_to_serde(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), struct_value_to_serde(v))).collect())
}

pub fn serde_to_struct_value(v: &serde_json::Value) -> prost_types::Value {
    let kind = match v {
        serde_json::Value::Null => SKind::NullValue(0),
        serde_json::Value::Bool(b) => SKind::BoolValue(*b),
        serde_json::Value::Number(n) => SKind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => SKind::StringValue(s.clone()),
        serde_json::Value::Array(a) => {
            SKind::ListValue(prost_types::ListValue { values: a.iter().map(serde_to_struct_value).collect() })
        }
        serde_json::Value::Object(o) => SKind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), serde_to_struct_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `Struct`; `None` when the value is not an object.
pub fn serde_to_struct(v: &serde_json::Value) -> Option<prost_types::Struct> {
    match serde_to_struct_value(v).kind {
        Some(SKind::StructValue(s)) => Some(s),
        _ => None,
    }
}

/// A message in its proto3 JSON mapping (proto field names), for execution records.
pub fn message_to_serde(msg: &DynamicMessage) -> serde_json::Value {
    let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    msg.serialize_with_options(serde_json::value::Serializer, &options).unwrap_or(serde_json::Value::Null)
}

fn format_duration(d: &chrono::Duration) -> String {
    let secs = d.num_seconds();
    let nanos = (*d - chrono::Duration::seconds(secs)).num_nanoseconds().unwrap_or(0);
    if nanos == 0 {
        format!("{secs}s")
    } else {
        let frac = format!("{:09}", nanos.abs());
        format!("{secs}.{}s", frac.trim_end_matches('0'))
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// CEL -> protobuf

/// Puts `value` into `field` of `msg`, converting by the field's declared type.
pub fn set_field(msg: &mut DynamicMessage, field: &FieldDescriptor, value: &Cel) -> Result<(), ConvertError> {
    if matches!(value, Cel::Null) {
        // null means "not set", as in the proto3 JSON mapping.
        return Ok(());
    }
    let v = to_field_value(value, field)?;
    msg.set_field(field, v);
    Ok(())
}

/// Converts a CEL value to the protobuf value of `field` (list and map fields included).
pub fn to_field_value(value: &Cel, field: &FieldDescriptor) -> Result<PValue, ConvertError> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { return err("malformed map field") };
        let key_field = entry.map_entry_key_field();
        let value_field = entry.map_entry_value_field();
        let Cel::Map(m) = value else {
            return err(format!("expects a map, got {}", type_name(value)));
        };
        let mut out = HashMap::with_capacity(m.map.len());
        for (k, v) in m.map.iter() {
            let key = map_key(k, &key_field.kind())?;
            out.insert(key, to_kind_value(v, &value_field.kind())?);
        }
        return Ok(PValue::Map(out));
    }
    if field.cardinality() == Cardinality::Repeated {
        let Cel::List(items) = value else {
            return err(format!("expects a list, got {}", type_name(value)));
        };
        let kind = field.kind();
        let items = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                to_kind_value(item, &kind).map_err(|e| ConvertError { message: format!("[{i}]: {}", e.message) })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(PValue::List(items));
    }
    to_kind_value(value, &field.kind())
}

pub(crate) fn map_key(k: &Key, kind: &Kind) -> Result<MapKey, ConvertError> {
    let as_cel = match k {
        Key::Int(i) => Cel::Int(*i),
        Key::Uint(u) => Cel::UInt(*u),
        Key::Bool(b) => Cel::Bool(*b),
        Key::String(s) => Cel::String(s.clone()),
    };
    Ok(match to_kind_value(&as_cel, kind)? {
        PValue::Bool(b) => MapKey::Bool(b),
        PValue::I32(i) => MapKey::I32(i),
        PValue::I64(i) => MapKey::I64(i),
        PValue::U32(u) => MapKey::U32(u),
        PValue::U64(u) => MapKey::U64(u),
        PValue::String(s) => MapKey::String(s),
        _ => return err("unsupported map key type"),
    })
}

fn int_of(v: &Cel) -> Result<i128, ConvertError> {
    match v {
        Cel::Int(i) => Ok(i128::from(*i)),
        Cel::UInt(u) => Ok(i128::from(*u)),
        Cel::Float(f) if f.fract() == 0.0 && f.is_finite() => Ok(*f as i128),
        // proto3 JSON carries 64-bit integers as strings; accept them back.
        Cel::String(s) => s
            .trim()
            .parse::<i128>()
            .map_err(|_| ConvertError { message: format!("expects an integer, got string {s:?}") }),
        other => err(format!("expects an integer, got {}", type_name(other))),
    }
}

fn ranged<T: TryFrom<i128>>(v: &Cel, what: &str) -> Result<T, ConvertError> {
    let i = int_of(v)?;
    T::try_from(i).map_err(|_| ConvertError { message: format!("{i} does not fit {what}") })
}

/// Converts a CEL value to a single protobuf value of `kind`.
pub fn to_kind_value(value: &Cel, kind: &Kind) -> Result<PValue, ConvertError> {
    Ok(match kind {
        Kind::String => match value {
            Cel::String(s) => PValue::String(s.as_str().to_owned()),
            other => return err(format!("expects a string, got {}", type_name(other))),
        },
        Kind::Bool => match value {
            Cel::Bool(b) => PValue::Bool(*b),
            other => return err(format!("expects a bool, got {}", type_name(other))),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => PValue::I32(ranged(value, "int32")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => PValue::I64(ranged(value, "int64")?),
        Kind::Uint32 | Kind::Fixed32 => PValue::U32(ranged(value, "uint32")?),
        Kind::Uint64 | Kind::Fixed64 => PValue::U64(ranged(value, "uint64")?),
        Kind::Double | Kind::Float => {
            let f = match value {
                Cel::Float(f) => *f,
                Cel::Int(i) => *i as f64,
                Cel::UInt(u) => *u as f64,
                other => return err(format!("expects a number, got {}", type_name(other))),
            };
            if matches!(kind, Kind::Float) { PValue::F32(f as f32) } else { PValue::F64(f) }
        }
        Kind::Bytes => match value {
            Cel::Bytes(b) => PValue::Bytes(b.to_vec().into()),
            Cel::String(s) => PValue::Bytes(s.as_bytes().to_vec().into()),
            other => return err(format!("expects bytes, got {}", type_name(other))),
        },
        Kind::Enum(e) => match value {
            Cel::String(s) => match e.get_value_by_name(s) {
                Some(v) => PValue::EnumNumber(v.number()),
                None => {
                    let names: Vec<_> = e.values().map(|v| v.name().to_string()).collect();
                    return err(format!(
                        "{s:?} is not a value of enum {} (one of: {})",
                        e.full_name(),
                        names.join(", ")
                    ));
                }
            },
            Cel::Int(_) | Cel::UInt(_) => PValue::EnumNumber(ranged(value, "an enum number")?),
            other => return err(format!("expects an enum name, got {}", type_name(other))),
        },
        Kind::Message(desc) => PValue::Message(to_message(value, desc)?),
    })
}

/// Builds a message from a CEL map (or the CEL form of a well-known type).
pub fn to_message(value: &Cel, desc: &MessageDescriptor) -> Result<DynamicMessage, ConvertError> {
    match desc.full_name() {
        "google.protobuf.Timestamp" => {
            let ts = match value {
                Cel::Timestamp(t) => {
                    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
                }
                Cel::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
                    Ok(t) => {
                        prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
                    }
                    Err(e) => return err(format!("expects an RFC 3339 timestamp: {e}")),
                },
                other => return err(format!("expects a timestamp, got {}", type_name(other))),
            };
            return Ok(transcode(desc, &ts));
        }
        "google.protobuf.Duration" => {
            let d = match value {
                Cel::Duration(d) => {
                    let secs = d.num_seconds();
                    let nanos = (*d - chrono::Duration::seconds(secs)).num_nanoseconds().unwrap_or(0);
                    prost_types::Duration { seconds: secs, nanos: nanos as i32 }
                }
                other => return err(format!("expects a duration, got {}", type_name(other))),
            };
            return Ok(transcode(desc, &d));
        }
        "google.protobuf.Struct" => {
            let Cel::Map(m) = value else {
                return err(format!("expects a map, got {}", type_name(value)));
            };
            return Ok(transcode(desc, &map_to_struct(m)));
        }
        "google.protobuf.Value" => return Ok(transcode(desc, &cel_to_json_value(value))),
        _ => {}
    }
    if let Some(field) = wrapper_field(desc) {
        let mut msg = DynamicMessage::new(desc.clone());
        let v = to_kind_value(value, &field.kind())?;
        msg.set_field(&field, v);
        return Ok(msg);
    }
    let Cel::Map(m) = value else {
        return err(format!("expects a {} object, got {}", desc.full_name(), type_name(value)));
    };
    let mut msg = DynamicMessage::new(desc.clone());
    for (k, v) in m.map.iter() {
        let Key::String(name) = k else {
            return err(format!("{} field names must be strings", desc.full_name()));
        };
        let Some(field) = desc.get_field_by_name(name).or_else(|| desc.get_field_by_json_name(name)) else {
            return err(format!("{} has no field `{name}`", desc.full_name()));
        };
        set_field(&mut msg, &field, v).map_err(|e| ConvertError { message: format!("{name}: {}", e.message) })?;
    }
    Ok(msg)
}

fn wrapper_field(desc: &MessageDescriptor) -> Option<FieldDescriptor> {
    let name = desc.full_name();
    if name.starts_with("google.protobuf.") && name.ends_with("Value") && name != "google.protobuf.Value" {
        desc.get_field(1)
    } else {
        None
    }
}

fn transcode<T: prost::Message>(desc: &MessageDescriptor, value: &T) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    // Transcoding a well-known type into its own descriptor cannot fail.
    let _ = msg.transcode_from(value);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shared_and_always_equal_their_name() {
        let k = |s: &str| match key(s) {
            Key::String(a) => a,
            other => panic!("{other:?}"),
        };
        // The same name twice: one string.
        assert!(Arc::ptr_eq(&k("display_name"), &k("display_name")));
        // Names of every length up to the limit and beyond, more than one thread keeps: each key
        // is its own name, before and after the set starts over.
        let names: Vec<String> = (0..(KEY_SET_MAX + 1000))
            .map(|i| match i % 4 {
                0 => format!("f{i}"),
                1 => format!("prefix_{i}_suffix"),
                2 => format!("{}{i}", "x".repeat(i % 70)),
                _ => String::new(),
            })
            .collect();
        for round in 0..2 {
            for name in &names {
                assert_eq!(k(name).as_str(), name, "round {round}");
            }
        }
        // From another thread too (each has its own set).
        std::thread::spawn(|| assert_eq!(key("user_id"), Key::String(Arc::new("user_id".into())))).join().unwrap();
    }

    #[test]
    fn json_text_is_written_as_the_json_mapping_writes_it() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00.5Z").unwrap();
        let values = [
            Cel::Null,
            Cel::Bool(true),
            Cel::Int(-7),
            Cel::Int(9_007_199_254_740_993),
            Cel::UInt(u64::MAX),
            Cel::UInt(3),
            Cel::Float(2.0),
            Cel::Float(2.5),
            Cel::Float(f64::NAN),
            Cel::Float(1e300),
            Cel::String(Arc::new("é \"q\" \n".into())),
            Cel::Bytes(Arc::new(vec![0, 255, 7])),
            Cel::Duration(chrono::Duration::milliseconds(1500)),
            Cel::Timestamp(at),
            Cel::List(Arc::new(vec![Cel::Int(1), Cel::String(Arc::new("x".into()))])),
            map(HashMap::from([
                (key("b"), Cel::Int(2)),
                (key("a"), map(HashMap::from([(key("z"), Cel::Null), (key("y"), Cel::Float(0.25))]))),
                (Key::Int(10), Cel::Bool(false)),
            ])),
            // Keys of different kinds with one text: one JSON key.
            map(HashMap::from([
                (Key::Int(1), Cel::Int(1)),
                (key("1"), Cel::Int(2)),
                (Key::Bool(true), Cel::Int(3)),
                (key("true"), Cel::Int(4)),
                (key("0"), Cel::Null),
            ])),
            map((0..40).map(|i| (key(&format!("k{}", (i * 7) % 40)), Cel::Int(i))).collect()),
        ];
        for v in &values {
            assert_eq!(cel_to_json_string(v), cel_to_serde(v).to_string(), "{v:?}");
        }
    }

    #[test]
    fn json_integers_become_cel_ints() {
        let v = prost_types::Value { kind: Some(SKind::NumberValue(21.0)) };
        assert_eq!(json_value_to_cel(&v), Cel::Int(21));
        let v = prost_types::Value { kind: Some(SKind::NumberValue(2.5)) };
        assert_eq!(json_value_to_cel(&v), Cel::Float(2.5));
    }

    #[test]
    fn large_integers_round_trip_as_strings() {
        let big = Cel::Int(9_007_199_254_740_993);
        let json = cel_to_json_value(&big);
        assert_eq!(json.kind, Some(SKind::StringValue("9007199254740993".into())));
        assert_eq!(int_of(&Cel::String(Arc::new("9007199254740993".into()))).unwrap(), 9_007_199_254_740_993);
    }

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64_encode(b"hi!"), "aGkh");
    }
}

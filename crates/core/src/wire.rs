//! Protobuf bytes straight to CEL values, by the message's descriptor.
//!
//! A backend's response used to become a `DynamicMessage` (every field, string and list of it
//! allocated), then a CEL map (all of it allocated again, the message dropped). [`decode_to_cel`]
//! reads the wire format once into the CEL form, with the meaning [`message_to_cel`] gives a
//! decoded message — the same value for the same bytes, and an error for the bytes
//! `DynamicMessage::decode` refuses (the tests check both against prost-reflect):
//!
//! - a scalar field is always present (its default when absent, a proto2 custom default too);
//!   a singular message field and a field of a `oneof` only when set; lists and maps always;
//! - the last value of a scalar field wins; occurrences of a message field merge (each read in
//!   turn into the same fields, as the protobuf encoding defines it); a field of a `oneof` clears
//!   the others;
//! - packed and unpacked lists are both read; map entries missing a key or a value get the
//!   default; unknown fields are skipped (and checked for well-formedness);
//! - strings must be UTF-8; nesting is limited to prost's recursion limit (100).
//!
//! Well-known types (`google.protobuf.*`) and messages with proto2 groups, rare in a response,
//! are decoded by prost-reflect and converted as before.

use std::{collections::HashMap, sync::Arc};

use bytes::Buf;
use cel::{Value as Cel, objects::Key};
use prost::encoding::{DecodeContext, WireType, check_wire_type, decode_key, decode_varint, skip_field};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};

use crate::value::{ConvertError, key, map, message_to_cel, scalar_to_cel};

/// Messages nested deeper than this are refused (prost's limit).
const RECURSION_LIMIT: u32 = 100;

/// Why bytes are not an encoding of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

impl From<prost::DecodeError> for DecodeError {
    fn from(e: prost::DecodeError) -> Self {
        Self(e.to_string())
    }
}

fn malformed(what: &str) -> DecodeError {
    DecodeError(format!("failed to decode Protobuf message: {what}"))
}

/// `bytes` as `desc`'s message, in CEL form: what `message_to_cel(&DynamicMessage::decode(desc,
/// bytes)?)` gives, without the message in between.
pub fn decode_to_cel(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Cel, DecodeError> {
    decode_to_cel_reading(desc, bytes, &Reads::All)
}

/// [`decode_to_cel`] of only the fields `reads` names: the others are skipped on the wire as
/// unknown fields are (their framing checked, not their types) and absent from the value. A field of a `oneof` is always read,
/// so that a later member still clears an earlier one as the encoding defines.
pub fn decode_to_cel_reading(desc: &MessageDescriptor, bytes: &[u8], reads: &Reads) -> Result<Cel, DecodeError> {
    // As prost counts: the top-level message is not a level of nesting.
    decode_message(desc, &[bytes], RECURSION_LIMIT + 1, reads)
}

/// The fields of a message that something reads: all of them, or some, each with what is read
/// of it. Built from the paths a pattern's expressions read of a step's output
/// (`steps.user.user.id` reads `user.id` of UserService's response): a path reads every field on
/// it and all of its last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    All,
    Fields(Vec<(String, Reads)>),
}

static READS_ALL: Reads = Reads::All;

impl Reads {
    /// Nothing read yet.
    pub const NONE: Reads = Reads::Fields(Vec::new());

    /// Adds a path (field names from the message down).
    pub fn add<S: AsRef<str>>(&mut self, path: &[S]) {
        let Reads::Fields(fields) = self else { return };
        let Some((first, rest)) = path.split_first() else {
            *self = Reads::All;
            return;
        };
        let first = first.as_ref();
        let i = match fields.iter().position(|(name, _)| name == first) {
            Some(i) => i,
            None => {
                fields.push((first.to_string(), Reads::NONE));
                fields.len() - 1
            }
        };
        fields[i].1.add(rest);
    }

    /// What is read of the field `name`, if it is read.
    fn field(&self, name: &str) -> Option<&Reads> {
        match self {
            Reads::All => Some(&READS_ALL),
            Reads::Fields(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, r)| r),
        }
    }
}

/// A field's value while its message is read.
enum Slot<'b> {
    Scalar(Cel),
    List(Vec<Cel>),
    Map(HashMap<Key, Cel>),
    /// The bytes of each occurrence, decoded together (merged) at the end.
    Message(Vec<&'b [u8]>),
}

/// The fields read so far, by number (kept sorted: fields usually arrive in order).
struct Slots<'b> {
    slots: Vec<(u32, FieldDescriptor, Slot<'b>)>,
}

impl<'b> Slots<'b> {
    fn position(&self, number: u32) -> Result<usize, usize> {
        match self.slots.last() {
            Some((n, ..)) if *n < number => Err(self.slots.len()),
            _ => self.slots.binary_search_by_key(&number, |(n, ..)| *n),
        }
    }

    fn take(&mut self, number: u32) -> Option<Slot<'b>> {
        self.position(number).ok().map(|i| self.slots.remove(i).2)
    }

    /// The slot of `field`, made with `new` when it has none; a field of a `oneof` clears the
    /// other fields of its `oneof` first.
    fn entry(&mut self, field: &FieldDescriptor, new: impl FnOnce() -> Slot<'b>) -> &mut Slot<'b> {
        let number = field.number();
        let i = match self.position(number) {
            Ok(i) => i,
            Err(i) => {
                let mut i = i;
                if let Some(oneof) = field.containing_oneof() {
                    for other in oneof.fields() {
                        if other.number() != number
                            && let Ok(j) = self.position(other.number())
                        {
                            self.slots.remove(j);
                            if j < i {
                                i -= 1;
                            }
                        }
                    }
                }
                self.slots.insert(i, (number, field.clone(), new()));
                i
            }
        };
        &mut self.slots[i].2
    }
}

/// `parts`: the bytes of each occurrence of the message, read one after the other.
fn decode_message(desc: &MessageDescriptor, parts: &[&[u8]], depth: u32, reads: &Reads) -> Result<Cel, DecodeError> {
    if depth == 0 {
        return Err(malformed("recursion limit reached"));
    }
    let name = desc.full_name();
    if name.starts_with("google.protobuf.") {
        if (name == "google.protobuf.Timestamp" || name == "google.protobuf.Duration")
            && let Some(v) = seconds_and_nanos(name, parts)?
        {
            return Ok(v);
        }
        return by_prost_reflect(desc, parts);
    }
    let mut slots = Slots { slots: Vec::new() };
    for part in parts {
        let mut buf: &[u8] = part;
        while buf.has_remaining() {
            let (number, wire_type) = decode_key(&mut buf)?;
            let Some(field) = desc.get_field(number) else {
                skip_field(wire_type, number, &mut buf, DecodeContext::default())?;
                continue;
            };
            if reads.field(field.name()).is_none() && field.containing_oneof().is_none() && !field.is_group() {
                if field.is_map() {
                    // Consumed as `read_field` consumes it (a map entry's length is read whatever
                    // the wire type says), so that what decodes whole decodes read in part.
                    delimited(WireType::LengthDelimited, &mut buf)?;
                } else {
                    skip_field(wire_type, number, &mut buf, DecodeContext::default())?;
                }
                continue;
            }
            if field.is_group() {
                return by_prost_reflect(desc, parts);
            }
            read_field(&field, wire_type, &mut buf, &mut slots, depth)?;
        }
    }
    let capacity = match reads {
        Reads::All => desc.fields().len(),
        Reads::Fields(fields) => fields.len(),
    };
    let mut out = HashMap::with_capacity(capacity);
    for field in desc.fields() {
        let Some(field_reads) = reads.field(field.name()) else { continue };
        let number = field.number();
        let value = if field.is_list() {
            match slots.take(number) {
                Some(Slot::List(items)) => Cel::List(Arc::new(items)),
                _ => Cel::List(Arc::new(Vec::new())),
            }
        } else if field.is_map() {
            match slots.take(number) {
                Some(Slot::Map(entries)) => map(entries),
                _ => map(HashMap::new()),
            }
        } else {
            match slots.take(number) {
                Some(Slot::Scalar(v)) => v,
                Some(Slot::Message(parts)) => match field.kind() {
                    Kind::Message(m) => decode_message(&m, &parts, depth - 1, field_reads)?,
                    _ => continue,
                },
                Some(Slot::List(_) | Slot::Map(_)) => continue,
                None => {
                    if matches!(field.kind(), Kind::Message(_)) || field.containing_oneof().is_some() {
                        continue;
                    }
                    scalar_to_cel(&field.default_value(), &field.kind())
                }
            }
        };
        out.insert(key(field.name()), value);
    }
    Ok(map(out))
}

/// A Timestamp or Duration read from its two fields (the last of each wins); `None` for values
/// `message_to_cel` does not turn into a CEL timestamp (out of range): those go the general way.
fn seconds_and_nanos(name: &str, parts: &[&[u8]]) -> Result<Option<Cel>, DecodeError> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    for part in parts {
        let mut buf: &[u8] = part;
        while buf.has_remaining() {
            let (number, wire_type) = decode_key(&mut buf)?;
            match number {
                1 => prost::encoding::int64::merge(wire_type, &mut seconds, &mut buf, DecodeContext::default())?,
                2 => prost::encoding::int32::merge(wire_type, &mut nanos, &mut buf, DecodeContext::default())?,
                // Anything else (unknown fields, groups): as prost-reflect reads it.
                _ => return Ok(None),
            }
        }
    }
    Ok(if name == "google.protobuf.Timestamp" {
        crate::value::chrono_ts(seconds, nanos).map(Cel::Timestamp)
    } else {
        crate::value::cel_duration(seconds, nanos).map(Cel::Duration)
    })
}

fn by_prost_reflect(desc: &MessageDescriptor, parts: &[&[u8]]) -> Result<Cel, DecodeError> {
    use prost::Message as _;
    // Each occurrence merged in turn, as prost-reflect reads them: not their concatenation, in
    // which a field could run from one occurrence into the next (found by the `wire` fuzz target).
    let mut message = DynamicMessage::new(desc.clone());
    for part in parts {
        message.merge(*part)?;
    }
    Ok(message_to_cel(&message))
}

/// Whether a list of `kind` may be packed.
fn packable(kind: &Kind) -> bool {
    !matches!(kind, Kind::String | Kind::Bytes | Kind::Message(_))
}

/// The bytes of a length-delimited value.
fn delimited<'b>(wire_type: WireType, buf: &mut &'b [u8]) -> Result<&'b [u8], DecodeError> {
    check_wire_type(WireType::LengthDelimited, wire_type)?;
    let len = decode_varint(buf)?;
    if len > buf.len() as u64 {
        return Err(malformed("buffer underflow"));
    }
    let (value, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(value)
}

fn read_field<'b>(
    field: &FieldDescriptor,
    wire_type: WireType,
    buf: &mut &'b [u8],
    slots: &mut Slots<'b>,
    depth: u32,
) -> Result<(), DecodeError> {
    let kind = field.kind();
    if field.is_map() {
        let Kind::Message(entry) = &kind else { return Err(malformed("malformed map field")) };
        // prost-reflect reads a map entry's length whatever the wire type says (its
        // `merge_loop` does not check it); so do we, to accept exactly the same bytes.
        let bytes = delimited(WireType::LengthDelimited, buf)?;
        let _ = wire_type;
        let (k, v) = read_map_entry(entry, bytes, depth)?;
        if let Slot::Map(entries) = slots.entry(field, || Slot::Map(HashMap::new())) {
            entries.insert(k, v);
        }
        return Ok(());
    }
    if field.is_list() {
        let mut items = Vec::new();
        if wire_type == WireType::LengthDelimited && packable(&kind) {
            let mut packed = delimited(wire_type, buf)?;
            while packed.has_remaining() {
                items.push(read_single(&kind, kind_wire_type(&kind), &mut packed, depth)?);
            }
        } else {
            items.push(read_single(&kind, wire_type, buf, depth)?);
        }
        if let Slot::List(list) = slots.entry(field, || Slot::List(Vec::new())) {
            list.extend(items);
        }
        return Ok(());
    }
    if let Kind::Message(_) = kind {
        let bytes = delimited(wire_type, buf)?;
        match slots.entry(field, || Slot::Message(Vec::with_capacity(1))) {
            Slot::Message(parts) => parts.push(bytes),
            other => *other = Slot::Message(vec![bytes]),
        }
        return Ok(());
    }
    let value = read_scalar(&kind, wire_type, buf)?;
    *slots.entry(field, || Slot::Scalar(Cel::Null)) = Slot::Scalar(value);
    Ok(())
}

/// One value of a list (or a map entry's value): a scalar, or a whole message.
fn read_single(kind: &Kind, wire_type: WireType, buf: &mut &[u8], depth: u32) -> Result<Cel, DecodeError> {
    match kind {
        Kind::Message(m) => {
            let bytes = delimited(wire_type, buf)?;
            decode_message(m, &[bytes], depth - 1, &Reads::All)
        }
        _ => read_scalar(kind, wire_type, buf),
    }
}

fn kind_wire_type(kind: &Kind) -> WireType {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::SixtyFourBit,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::ThirtyTwoBit,
        Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
        _ => WireType::Varint,
    }
}

/// A scalar (or enum) value, read as prost reads it for the field's kind.
fn read_scalar(kind: &Kind, wire_type: WireType, buf: &mut &[u8]) -> Result<Cel, DecodeError> {
    use prost::encoding as e;
    let ctx = DecodeContext::default;
    Ok(match kind {
        Kind::Bool => {
            let mut v = false;
            e::bool::merge(wire_type, &mut v, buf, ctx())?;
            Cel::Bool(v)
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            let mut v = 0i32;
            match kind {
                Kind::Int32 => e::int32::merge(wire_type, &mut v, buf, ctx())?,
                Kind::Sint32 => e::sint32::merge(wire_type, &mut v, buf, ctx())?,
                _ => e::sfixed32::merge(wire_type, &mut v, buf, ctx())?,
            }
            Cel::Int(i64::from(v))
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            let mut v = 0i64;
            match kind {
                Kind::Int64 => e::int64::merge(wire_type, &mut v, buf, ctx())?,
                Kind::Sint64 => e::sint64::merge(wire_type, &mut v, buf, ctx())?,
                _ => e::sfixed64::merge(wire_type, &mut v, buf, ctx())?,
            }
            Cel::Int(v)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            let mut v = 0u32;
            match kind {
                Kind::Uint32 => e::uint32::merge(wire_type, &mut v, buf, ctx())?,
                _ => e::fixed32::merge(wire_type, &mut v, buf, ctx())?,
            }
            Cel::UInt(u64::from(v))
        }
        Kind::Uint64 | Kind::Fixed64 => {
            let mut v = 0u64;
            match kind {
                Kind::Uint64 => e::uint64::merge(wire_type, &mut v, buf, ctx())?,
                _ => e::fixed64::merge(wire_type, &mut v, buf, ctx())?,
            }
            Cel::UInt(v)
        }
        Kind::Float => {
            let mut v = 0f32;
            e::float::merge(wire_type, &mut v, buf, ctx())?;
            Cel::Float(f64::from(v))
        }
        Kind::Double => {
            let mut v = 0f64;
            e::double::merge(wire_type, &mut v, buf, ctx())?;
            Cel::Float(v)
        }
        Kind::String => {
            let bytes = delimited(wire_type, buf)?;
            match std::str::from_utf8(bytes) {
                Ok(s) => Cel::String(Arc::new(s.to_owned())),
                Err(_) => return Err(malformed("invalid string value: data is not UTF-8 encoded")),
            }
        }
        Kind::Bytes => Cel::Bytes(Arc::new(delimited(wire_type, buf)?.to_vec())),
        Kind::Enum(e) => {
            let mut n = 0i32;
            e::int32::merge(wire_type, &mut n, buf, ctx())?;
            match e.get_value(n) {
                Some(v) => Cel::String(Arc::new(v.name().to_owned())),
                None => Cel::Int(i64::from(n)),
            }
        }
        Kind::Message(_) => return Err(malformed("a message where a scalar was expected")),
    })
}

/// One map entry: its key and value, each the default when absent; the last of each wins.
fn read_map_entry(entry: &MessageDescriptor, bytes: &[u8], depth: u32) -> Result<(Key, Cel), DecodeError> {
    let key_field = entry.map_entry_key_field();
    let value_field = entry.map_entry_value_field();
    let key_kind = key_field.kind();
    let value_kind = value_field.kind();
    let mut k = None;
    let mut value = None;
    let mut message_parts: Vec<&[u8]> = Vec::new();
    let mut buf = bytes;
    while buf.has_remaining() {
        let (number, wire_type) = decode_key(&mut buf)?;
        match number {
            1 => k = Some(read_scalar(&key_kind, wire_type, &mut buf)?),
            2 => match &value_kind {
                Kind::Message(_) => message_parts.push(delimited(wire_type, &mut buf)?),
                _ => value = Some(read_scalar(&value_kind, wire_type, &mut buf)?),
            },
            _ => skip_field(wire_type, number, &mut buf, DecodeContext::default())?,
        }
    }
    let k = match k.unwrap_or_else(|| scalar_to_cel(&key_field.default_value(), &key_kind)) {
        Cel::Bool(b) => Key::Bool(b),
        Cel::Int(i) => Key::Int(i),
        Cel::UInt(u) => Key::Uint(u),
        Cel::String(s) => Key::String(s),
        _ => return Err(malformed("unsupported map key type")),
    };
    let value = match &value_kind {
        Kind::Message(m) => decode_message(m, &message_parts, depth - 1, &Reads::All)?,
        _ => value.unwrap_or_else(|| scalar_to_cel(&value_field.default_value(), &value_kind)),
    };
    Ok((k, value))
}

// ---------------------------------------------------------------------------------------------
// CEL -> protobuf bytes

/// `value` encoded as `desc`'s message: the bytes of `to_message(value, desc)?` (the same
/// message once decoded, fields in number order) and the same errors, without the
/// `DynamicMessage` in between. Well-known types, and a map naming one field twice (by its name
/// and its JSON name), go through `to_message`.
pub fn encode_from_cel(value: &Cel, desc: &MessageDescriptor) -> Result<Vec<u8>, ConvertError> {
    let mut out = Vec::with_capacity(64);
    encode_message(value, desc, &mut out)?;
    Ok(out)
}

/// How a request template whose top level is an object (`with: {email: …, name: …}`) is
/// written without the CEL map in between: the field each key names, in field-number order, with
/// the index of its key. `None` where such a template must go through [`encode_from_cel`]: a key
/// naming no field, two keys naming one field or members of one `oneof` (which the map's order
/// decides), a group, a well-known type.
pub fn request_fields<S: AsRef<str>>(desc: &MessageDescriptor, keys: &[S]) -> Option<Vec<(usize, FieldDescriptor)>> {
    if desc.full_name().starts_with("google.protobuf.") {
        return None;
    }
    let mut fields: Vec<(usize, FieldDescriptor)> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let key = key.as_ref();
        let field = desc.get_field_by_name(key).or_else(|| desc.get_field_by_json_name(key))?;
        let clashes = |other: &FieldDescriptor| {
            other.number() == field.number()
                || matches!((other.containing_oneof(), field.containing_oneof()), (Some(a), Some(b)) if a == b)
        };
        if field.is_group() || fields.iter().any(|(_, f)| clashes(f)) {
            return None;
        }
        fields.push((i, field));
    }
    fields.sort_by_key(|(_, f)| f.number());
    Some(fields)
}

/// One field of a message written from its CEL value, as [`encode_from_cel`] writes it (`null`
/// is for the caller to skip: it means "not set").
pub fn encode_field_from_cel(field: &FieldDescriptor, value: &Cel, out: &mut Vec<u8>) -> Result<(), ConvertError> {
    encode_field(field, value, out)
}

fn encode_message(value: &Cel, desc: &MessageDescriptor, out: &mut Vec<u8>) -> Result<(), ConvertError> {
    if desc.full_name().starts_with("google.protobuf.") {
        return by_to_message(value, desc, out);
    }
    let Cel::Map(m) = value else {
        return Err(ConvertError {
            message: format!("expects a {} object, got {}", desc.full_name(), crate::value::type_name(value)),
        });
    };
    let start = out.len();
    // Each field's bytes, where they were written: in the map's order (the order `to_message`
    // sets them, so the first error is the same), put in number order at the end.
    let mut written: Vec<(u32, usize, usize)> = Vec::with_capacity(m.map.len());
    for (k, v) in m.map.iter() {
        let Key::String(name) = k else {
            return Err(ConvertError { message: format!("{} field names must be strings", desc.full_name()) });
        };
        let Some(field) = desc.get_field_by_name(name).or_else(|| desc.get_field_by_json_name(name)) else {
            return Err(ConvertError { message: format!("{} has no field `{name}`", desc.full_name()) });
        };
        if field.is_group() {
            out.truncate(start);
            return by_to_message(value, desc, out);
        }
        if matches!(v, Cel::Null) {
            // null means "not set", as in the proto3 JSON mapping.
            continue;
        }
        let from = out.len();
        encode_field(&field, v, out).map_err(|e| ConvertError { message: format!("{name}: {}", e.message) })?;
        written.push((field.number(), from, out.len()));
    }
    if written.windows(2).all(|w| w[0].0 < w[1].0) {
        return Ok(());
    }
    written.sort_by_key(|w| w.0);
    if written.windows(2).any(|w| w[0].0 == w[1].0) {
        // One field named twice: `to_message` keeps the one set last.
        out.truncate(start);
        return by_to_message(value, desc, out);
    }
    let fields: Vec<u8> = out[start..].to_vec();
    out.truncate(start);
    for (_, from, to) in written {
        out.extend_from_slice(&fields[from - start..to - start]);
    }
    Ok(())
}

fn by_to_message(value: &Cel, desc: &MessageDescriptor, out: &mut Vec<u8>) -> Result<(), ConvertError> {
    use prost::Message as _;
    crate::value::to_message(value, desc)?.encode_raw(out);
    Ok(())
}

fn encode_field(field: &FieldDescriptor, value: &Cel, out: &mut Vec<u8>) -> Result<(), ConvertError> {
    use prost::encoding::encode_key;
    let number = field.number();
    let kind = field.kind();
    if field.is_map() {
        let Kind::Message(entry) = &kind else { return Err(ConvertError { message: "malformed map field".into() }) };
        let Cel::Map(m) = value else {
            return Err(ConvertError { message: format!("expects a map, got {}", crate::value::type_name(value)) });
        };
        let key_kind = entry.map_entry_key_field().kind();
        let value_kind = entry.map_entry_value_field().kind();
        let mut body = Vec::new();
        for (k, v) in m.map.iter() {
            body.clear();
            let key = crate::value::map_key(k, &key_kind)?;
            encode_map_key(&key, &key_kind, &mut body);
            encode_value(2, v, &value_kind, &mut body)?;
            encode_key(number, WireType::LengthDelimited, out);
            prost::encoding::encode_varint(body.len() as u64, out);
            out.extend_from_slice(&body);
        }
        return Ok(());
    }
    if field.is_list() {
        let Cel::List(items) = value else {
            return Err(ConvertError { message: format!("expects a list, got {}", crate::value::type_name(value)) });
        };
        let at = |i: usize, e: ConvertError| ConvertError { message: format!("[{i}]: {}", e.message) };
        if field.is_packed() && !items.is_empty() {
            let mut body = Vec::new();
            for (i, item) in items.iter().enumerate() {
                encode_packed_item(item, &kind, &mut body).map_err(|e| at(i, e))?;
            }
            encode_key(number, WireType::LengthDelimited, out);
            prost::encoding::encode_varint(body.len() as u64, out);
            out.extend_from_slice(&body);
        } else {
            for (i, item) in items.iter().enumerate() {
                encode_value(number, item, &kind, out).map_err(|e| at(i, e))?;
            }
        }
        return Ok(());
    }
    if !field.supports_presence() && is_default_scalar(value, &kind) {
        // As prost-reflect encodes a field without presence: not at all when it is the default.
        // (Only values that convert without error are defaults here, so no error is skipped.)
        return Ok(());
    }
    encode_value(number, value, &kind, out)
}

/// Whether `value` converts to the default of a scalar `kind` (a proto3 field without presence
/// is not encoded then, as prost-reflect does). Values that do not convert are not defaults: their
/// error comes from encoding them.
fn is_default_scalar(value: &Cel, kind: &Kind) -> bool {
    match (kind, value) {
        (Kind::String, Cel::String(s)) => s.is_empty(),
        (Kind::Bytes, Cel::Bytes(b)) => b.is_empty(),
        (Kind::Bytes, Cel::String(s)) => s.is_empty(),
        (Kind::String | Kind::Bytes | Kind::Message(_), _) => false,
        _ => crate::value::to_kind_value(value, kind).is_ok_and(|v| v.is_default(kind)),
    }
}

/// One value of `kind` with its own key (a singular field, a list item not packed, a map
/// entry's value).
fn encode_value(number: u32, value: &Cel, kind: &Kind, out: &mut Vec<u8>) -> Result<(), ConvertError> {
    use prost::encoding::{encode_key, encode_varint};
    match (kind, value) {
        (Kind::String, Cel::String(s)) => {
            encode_key(number, WireType::LengthDelimited, out);
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        (Kind::Bytes, Cel::Bytes(b)) => {
            encode_key(number, WireType::LengthDelimited, out);
            encode_varint(b.len() as u64, out);
            out.extend_from_slice(b);
        }
        (Kind::Bytes, Cel::String(s)) => {
            encode_key(number, WireType::LengthDelimited, out);
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        (Kind::Message(m), _) => {
            let mut body = Vec::new();
            encode_message(value, m, &mut body)?;
            encode_key(number, WireType::LengthDelimited, out);
            encode_varint(body.len() as u64, out);
            out.extend_from_slice(&body);
        }
        _ => {
            let v = crate::value::to_kind_value(value, kind)?;
            encode_key(number, kind_wire_type(kind), out);
            encode_scalar(&v, kind, out);
        }
    }
    Ok(())
}

/// One item of a packed list: its value alone.
fn encode_packed_item(value: &Cel, kind: &Kind, out: &mut Vec<u8>) -> Result<(), ConvertError> {
    let v = crate::value::to_kind_value(value, kind)?;
    encode_scalar(&v, kind, out);
    Ok(())
}

/// A scalar's value without its key.
fn encode_scalar(v: &prost_reflect::Value, kind: &Kind, out: &mut Vec<u8>) {
    use prost::encoding::encode_varint;
    use prost_reflect::Value as P;
    match (v, kind) {
        (P::Bool(b), _) => encode_varint(u64::from(*b), out),
        (P::I32(i), Kind::Sint32) => encode_varint(u64::from(((i << 1) ^ (i >> 31)) as u32), out),
        (P::I32(i), Kind::Sfixed32) => out.extend_from_slice(&i.to_le_bytes()),
        (P::I32(i), _) | (P::EnumNumber(i), _) => encode_varint(i64::from(*i) as u64, out),
        (P::I64(i), Kind::Sint64) => encode_varint(((i << 1) ^ (i >> 63)) as u64, out),
        (P::I64(i), Kind::Sfixed64) => out.extend_from_slice(&i.to_le_bytes()),
        (P::I64(i), _) => encode_varint(*i as u64, out),
        (P::U32(u), Kind::Fixed32) => out.extend_from_slice(&u.to_le_bytes()),
        (P::U32(u), _) => encode_varint(u64::from(*u), out),
        (P::U64(u), Kind::Fixed64) => out.extend_from_slice(&u.to_le_bytes()),
        (P::U64(u), _) => encode_varint(*u, out),
        (P::F32(f), _) => out.extend_from_slice(&f.to_le_bytes()),
        (P::F64(f), _) => out.extend_from_slice(&f.to_le_bytes()),
        (P::String(s), _) => {
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        (P::Bytes(b), _) => {
            encode_varint(b.len() as u64, out);
            out.extend_from_slice(b);
        }
        (P::Message(m), _) => {
            use prost::Message as _;
            encode_varint(m.encoded_len() as u64, out);
            m.encode_raw(out);
        }
        (P::List(_) | P::Map(_), _) => {}
    }
}

/// A map entry's key, field 1.
fn encode_map_key(key: &prost_reflect::MapKey, kind: &Kind, out: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint};
    use prost_reflect::{MapKey as K, Value as P};
    let value = match key {
        K::String(s) => {
            encode_key(1, WireType::LengthDelimited, out);
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
            return;
        }
        K::Bool(b) => P::Bool(*b),
        K::I32(i) => P::I32(*i),
        K::I64(i) => P::I64(*i),
        K::U32(u) => P::U32(*u),
        K::U64(u) => P::U64(*u),
    };
    encode_key(1, kind_wire_type(kind), out);
    encode_scalar(&value, kind, out);
}

//! Proto3 JSON → protobuf wire bytes, streamed, in memory bounded by the output.
//!
//! The Connect endpoint receives JSON and hands the gRPC service a protobuf frame. Going through
//! a `serde_json::Value` and a `DynamicMessage` costs hundreds of bytes per JSON value (a 2 MB
//! array of zeros took ~800 MiB); this module reads the JSON once to validate it and measure the
//! encoded size, then once more to write it into a buffer of exactly that size. Nothing but the
//! output (and a path for error messages) is ever allocated, so the memory a request can cause is
//! its body plus its encoded size — at most 5.5× the body (`[0,0,…]` into a `ListValue`: 2 bytes
//! of JSON become 11 of protobuf).
//!
//! The mapping is proto3's JSON mapping as `prost-reflect` implements it (field JSON names and
//! proto names, enums by name or number, 64-bit integers as numbers or strings, bytes as base64,
//! `NaN`/`Infinity`, the well-known types `Struct`, `Value`, `ListValue`, `Timestamp`,
//! `Duration`, `FieldMask`, `Empty` and the wrappers), with two deliberate differences: a field
//! given twice in one message object is refused (protobuf would merge or append where JSON readers
//! keep the last; in maps and `Struct`s the last key wins, as everywhere), and
//! `google.protobuf.Any` is refused (nothing in the Nexus API takes one).

use std::fmt::{self, Write as _};

use prost_reflect::{Kind, MessageDescriptor};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Nesting of protobuf messages the output may have; prost refuses to decode deeper.
pub const MAX_MESSAGE_DEPTH: u32 = 100;

/// Why a JSON body is not a message of the wanted type. The text names the place in the body
/// (`at input.users[3].age`) and, for syntax errors, the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TranscodeError {
    pub message: String,
}

/// The encoded size of `json` as a `desc` message; fully validates it.
pub fn encoded_len(desc: &MessageDescriptor, json: &[u8]) -> Result<usize, TranscodeError> {
    let mut counter = Counter(0);
    run(desc, json, &mut counter)?;
    Ok(counter.0)
}

/// Appends `json` encoded as a `desc` message to `out`. Call [`encoded_len`] first to reserve
/// exactly what it needs: this writes in place and never grows `out` beyond that.
pub fn encode_into(desc: &MessageDescriptor, json: &[u8], out: &mut Vec<u8>) -> Result<(), TranscodeError> {
    let mut writer = Writer(out);
    run(desc, json, &mut writer)
}

/// `json` encoded as a `desc` message, in a buffer of exactly its size.
pub fn transcode(desc: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, TranscodeError> {
    let len = encoded_len(desc, json)?;
    let mut out = Vec::with_capacity(len);
    encode_into(desc, json, &mut out)?;
    Ok(out)
}

fn run<S: Sink>(desc: &MessageDescriptor, json: &[u8], sink: &mut S) -> Result<(), TranscodeError> {
    let body: &[u8] = if json.iter().all(u8::is_ascii_whitespace) { b"{}" } else { json };
    let mut state = State { sink, path: String::new(), marks: Vec::new(), depth: 0 };
    let mut de = serde_json::Deserializer::from_slice(body);
    let target = Target { number: None, kind: Kind::Message(desc.clone()), no_null: None };
    let result = ValueSeed { st: &mut state, target: &target, top: true }.deserialize(&mut de).and_then(|()| de.end());
    result.map_err(|e| {
        let text = e.to_string();
        let message = if text.contains("recursion limit exceeded") {
            format!("the request body nests deeper than the limit of 128 levels of objects and arrays ({text})")
        } else {
            text
        };
        TranscodeError { message }
    })
}

// ---------------------------------------------------------------------------------------------
// Sinks: one counts, one writes.

trait Sink {
    fn bytes(&mut self, b: &[u8]);
    fn varint(&mut self, v: u64);
    /// Starts a length-delimited region; returns a mark for [`Sink::end`].
    fn begin(&mut self) -> usize;
    /// Ends the region started at `mark`, putting its length in front of it.
    fn end(&mut self, mark: usize);
    /// Bytes written so far.
    fn len(&self) -> usize;
}

struct Counter(usize);

impl Sink for Counter {
    fn bytes(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
    fn varint(&mut self, v: u64) {
        self.0 += varint_len(v);
    }
    fn begin(&mut self) -> usize {
        self.0
    }
    fn end(&mut self, mark: usize) {
        let len = self.0 - mark;
        self.0 += varint_len(len as u64);
    }
    fn len(&self) -> usize {
        self.0
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Sink for Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn varint(&mut self, v: u64) {
        let mut buf = [0u8; 10];
        let n = put_varint(&mut buf, v);
        self.0.extend_from_slice(&buf[..n]);
    }
    fn begin(&mut self) -> usize {
        // One byte for the length, which is enough for most regions; longer lengths shift the
        // region right when it ends (in place: the buffer was sized by the counting pass).
        self.0.push(0);
        self.0.len()
    }
    fn end(&mut self, mark: usize) {
        let len = self.0.len() - mark;
        let mut buf = [0u8; 10];
        let n = put_varint(&mut buf, len as u64);
        if n > 1 {
            let old_end = self.0.len();
            self.0.resize(old_end + n - 1, 0);
            self.0.copy_within(mark..old_end, mark + n - 1);
        }
        self.0[mark - 1..mark - 1 + n].copy_from_slice(&buf[..n]);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut [u8; 10], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn wire_type(kind: &Kind) -> u32 {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => FIXED64,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => FIXED32,
        Kind::String | Kind::Bytes | Kind::Message(_) => LEN,
        _ => VARINT,
    }
}

// ---------------------------------------------------------------------------------------------
// State: the sink, the path of the value being read (for messages), the message depth.

struct State<'s, S> {
    sink: &'s mut S,
    /// `input.users[3]`: the place in the body, for error messages.
    path: String,
    marks: Vec<usize>,
    depth: u32,
}

/// Path segments longer than this are cut (a key can be as long as the body).
const MAX_SEGMENT: usize = 64;

impl<S: Sink> State<'_, S> {
    fn push_key(&mut self, key: &str) {
        self.marks.push(self.path.len());
        if !self.path.is_empty() {
            self.path.push('.');
        }
        let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let shown: String = key.chars().take(MAX_SEGMENT).collect();
        let cut = if shown.len() < key.len() { "…" } else { "" };
        if plain {
            self.path.push_str(&shown);
            self.path.push_str(cut);
        } else {
            let _ = write!(self.path, "{:?}{cut}", shown);
        }
    }
    fn push_index(&mut self, i: usize) {
        self.marks.push(self.path.len());
        let _ = write!(self.path, "[{i}]");
    }
    fn pop(&mut self) {
        if let Some(m) = self.marks.pop() {
            self.path.truncate(m);
        }
    }
    fn error<E: de::Error>(&self, msg: impl fmt::Display) -> E {
        if self.path.is_empty() {
            return E::custom(msg);
        }
        // Deep paths are cut in front: the innermost part says the most.
        const SHOWN: usize = 240;
        let path = if self.path.len() > SHOWN {
            let mut start = self.path.len() - SHOWN;
            while !self.path.is_char_boundary(start) {
                start += 1;
            }
            format!("…{}", &self.path[start..])
        } else {
            self.path.clone()
        };
        E::custom(format_args!("at `{path}`: {msg}"))
    }
    fn tag(&mut self, number: u32, wire: u32) {
        self.sink.varint(u64::from(number << 3 | wire));
    }
    fn begin<E: de::Error>(&mut self) -> Result<usize, E> {
        self.depth += 1;
        if self.depth > MAX_MESSAGE_DEPTH {
            return Err(self.error(format_args!(
                "the message nests deeper than the limit of {MAX_MESSAGE_DEPTH} levels of protobuf messages \
                 (inside a google.protobuf.Struct each JSON object counts as three and each array as two)"
            )));
        }
        Ok(self.sink.begin())
    }
    fn end(&mut self, mark: usize) {
        self.depth -= 1;
        self.sink.end(mark);
    }
}

/// What a JSON value is read as: a field's number (`None` inside a packed list or at the top)
/// and kind.
struct Target {
    number: Option<u32>,
    kind: Kind,
    /// Why null is refused here (an element of a list, a map's value), if it is.
    no_null: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wkt {
    Value,
    Struct,
    ListValue,
    NullValue,
    Timestamp,
    Duration,
    FieldMask,
    Empty,
    Any,
    Wrapper,
}

fn wkt(full_name: &str) -> Option<Wkt> {
    let name = full_name.strip_prefix("google.protobuf.")?;
    Some(match name {
        "Value" => Wkt::Value,
        "Struct" => Wkt::Struct,
        "ListValue" => Wkt::ListValue,
        "NullValue" => Wkt::NullValue,
        "Timestamp" => Wkt::Timestamp,
        "Duration" => Wkt::Duration,
        "FieldMask" => Wkt::FieldMask,
        "Empty" => Wkt::Empty,
        "Any" => Wkt::Any,
        "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value" | "UInt32Value" | "BoolValue"
        | "StringValue" | "BytesValue" => Wkt::Wrapper,
        _ => return None,
    })
}

fn kind_wkt(kind: &Kind) -> Option<Wkt> {
    match kind {
        Kind::Message(m) => wkt(m.full_name()),
        Kind::Enum(e) => wkt(e.full_name()),
        _ => None,
    }
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => match wkt(m.full_name()) {
            Some(Wkt::Timestamp) => "an RFC 3339 timestamp string".into(),
            Some(Wkt::Duration) => "a duration string such as \"1.5s\"".into(),
            Some(Wkt::FieldMask) => "a field mask string".into(),
            Some(Wkt::Value) => "any JSON value".into(),
            Some(Wkt::ListValue) => "an array".into(),
            Some(Wkt::Wrapper) => match m.get_field(1) {
                Some(f) => kind_name(&f.kind()),
                None => format!("a {} value", m.full_name()),
            },
            _ => format!("a {} object", m.full_name()),
        },
        Kind::Enum(e) => format!("a {} name or number", e.full_name()),
        Kind::Double | Kind::Float => "a number".into(),
        Kind::Bool => "true or false".into(),
        Kind::String => "a string".into(),
        Kind::Bytes => "a base64 string".into(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "a 32-bit integer".into(),
        Kind::Uint32 | Kind::Fixed32 => "a 32-bit unsigned integer".into(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "a 64-bit integer (number or string)".into(),
        Kind::Uint64 | Kind::Fixed64 => "a 64-bit unsigned integer (number or string)".into(),
    }
}

/// A JSON scalar as serde hands it over.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'a str),
}

impl Scalar<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::I64(_) | Scalar::U64(_) | Scalar::F64(_) => "a number",
            Scalar::Str(_) => "a string",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars.

fn to_f64(v: Scalar<'_>) -> Result<f64, String> {
    match v {
        Scalar::F64(f) => Ok(f),
        Scalar::I64(i) => Ok(i as f64),
        Scalar::U64(u) => Ok(u as f64),
        Scalar::Str(s) => match s.parse::<f64>() {
            Ok(f) => Ok(f),
            Err(_) if s == "Infinity" => Ok(f64::INFINITY),
            Err(_) if s == "-Infinity" => Ok(f64::NEG_INFINITY),
            Err(_) if s == "NaN" => Ok(f64::NAN),
            Err(e) => Err(format!("{e}: {:?}", truncate(s))),
        },
        other => Err(format!("expected a number, found {}", other.describe())),
    }
}

fn to_i64(v: Scalar<'_>, min: i64, max: i64) -> Result<i64, String> {
    let value: i128 = match v {
        Scalar::I64(i) => i128::from(i),
        Scalar::U64(u) => i128::from(u),
        Scalar::F64(f) => {
            if f.fract() != 0.0 || !f.is_finite() {
                return Err(format!("expected an integer, found {f}"));
            }
            if f < min as f64 || f > max as f64 {
                return Err(format!("{f} is out of range ({min} to {max})"));
            }
            f as i128
        }
        Scalar::Str(s) => s.parse::<i128>().map_err(|e| format!("{e}: {:?}", truncate(s)))?,
        other => return Err(format!("expected an integer, found {}", other.describe())),
    };
    if value < i128::from(min) || value > i128::from(max) {
        return Err(format!("{value} is out of range ({min} to {max})"));
    }
    Ok(value as i64)
}

fn to_u64(v: Scalar<'_>, max: u64) -> Result<u64, String> {
    let value: i128 = match v {
        Scalar::I64(i) => i128::from(i),
        Scalar::U64(u) => i128::from(u),
        Scalar::F64(f) => {
            if f.fract() != 0.0 || !f.is_finite() {
                return Err(format!("expected an integer, found {f}"));
            }
            if f < 0.0 || f > max as f64 {
                return Err(format!("{f} is out of range (0 to {max})"));
            }
            f as i128
        }
        Scalar::Str(s) => s.parse::<i128>().map_err(|e| format!("{e}: {:?}", truncate(s)))?,
        other => return Err(format!("expected an unsigned integer, found {}", other.describe())),
    };
    if value < 0 || value > i128::from(max) {
        return Err(format!("{value} is out of range (0 to {max})"));
    }
    Ok(value as u64)
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= 40 { s.to_string() } else { format!("{}…", s.chars().take(40).collect::<String>()) }
}

fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
    match STANDARD.decode(s) {
        Ok(b) => Ok(b),
        Err(base64::DecodeError::InvalidByte(_, b'-' | b'_')) => {
            URL_SAFE.decode(s).map_err(|e| format!("invalid base64: {e}"))
        }
        Err(e) => Err(format!("invalid base64: {e}")),
    }
}

/// Writes the scalar `v` of `kind` (tagged with `number` when given). `Ok(false)`: `v` is null,
/// nothing written.
fn write_scalar<S: Sink>(
    st: &mut State<'_, S>,
    number: Option<u32>,
    kind: &Kind,
    v: Scalar<'_>,
) -> Result<bool, String> {
    if let Scalar::Null = v {
        match kind_wkt(kind) {
            Some(Wkt::NullValue) => {
                if let Some(n) = number {
                    st.tag(n, VARINT);
                }
                st.sink.varint(0);
                return Ok(true);
            }
            Some(Wkt::Value) => {}
            _ => return Ok(false),
        }
    }
    let tag = |st: &mut State<'_, S>| {
        if let Some(n) = number {
            st.tag(n, wire_type(kind));
        }
    };
    match kind {
        Kind::Double => {
            let f = to_f64(v)?;
            tag(st);
            st.sink.bytes(&f.to_le_bytes());
        }
        Kind::Float => {
            let f = to_f64(v)?;
            if f.is_finite() && (f < f64::from(f32::MIN) || f > f64::from(f32::MAX)) {
                return Err(format!("{f} is out of range for a 32-bit float"));
            }
            tag(st);
            st.sink.bytes(&(f as f32).to_le_bytes());
        }
        Kind::Int32 => {
            let i = to_i64(v, i64::from(i32::MIN), i64::from(i32::MAX))?;
            tag(st);
            st.sink.varint(i as u64);
        }
        Kind::Int64 => {
            let i = to_i64(v, i64::MIN, i64::MAX)?;
            tag(st);
            st.sink.varint(i as u64);
        }
        Kind::Sint32 | Kind::Sint64 => {
            let (min, max) = if matches!(kind, Kind::Sint32) {
                (i64::from(i32::MIN), i64::from(i32::MAX))
            } else {
                (i64::MIN, i64::MAX)
            };
            let i = to_i64(v, min, max)?;
            tag(st);
            st.sink.varint(((i << 1) ^ (i >> 63)) as u64);
        }
        Kind::Sfixed32 => {
            let i = to_i64(v, i64::from(i32::MIN), i64::from(i32::MAX))?;
            tag(st);
            st.sink.bytes(&(i as i32).to_le_bytes());
        }
        Kind::Sfixed64 => {
            let i = to_i64(v, i64::MIN, i64::MAX)?;
            tag(st);
            st.sink.bytes(&i.to_le_bytes());
        }
        Kind::Uint32 => {
            let u = to_u64(v, u64::from(u32::MAX))?;
            tag(st);
            st.sink.varint(u);
        }
        Kind::Uint64 => {
            let u = to_u64(v, u64::MAX)?;
            tag(st);
            st.sink.varint(u);
        }
        Kind::Fixed32 => {
            let u = to_u64(v, u64::from(u32::MAX))?;
            tag(st);
            st.sink.bytes(&(u as u32).to_le_bytes());
        }
        Kind::Fixed64 => {
            let u = to_u64(v, u64::MAX)?;
            tag(st);
            st.sink.bytes(&u.to_le_bytes());
        }
        Kind::Bool => {
            let Scalar::Bool(b) = v else { return Err(format!("expected true or false, found {}", v.describe())) };
            tag(st);
            st.sink.varint(u64::from(b));
        }
        Kind::String => {
            let Scalar::Str(s) = v else { return Err(format!("expected a string, found {}", v.describe())) };
            tag(st);
            st.sink.varint(s.len() as u64);
            st.sink.bytes(s.as_bytes());
        }
        Kind::Bytes => {
            let Scalar::Str(s) = v else { return Err(format!("expected a base64 string, found {}", v.describe())) };
            let b = decode_base64(s)?;
            tag(st);
            st.sink.varint(b.len() as u64);
            st.sink.bytes(&b);
        }
        Kind::Enum(e) => {
            let n: i32 = match v {
                Scalar::Str(s) => match e.get_value_by_name(s) {
                    Some(value) => value.number(),
                    None => {
                        let known: Vec<String> = e.values().take(8).map(|v| v.name().to_string()).collect();
                        let more = if e.values().len() > 8 { ", …" } else { "" };
                        return Err(format!(
                            "{:?} is not a value of {} (one of {}{more})",
                            truncate(s),
                            e.full_name(),
                            known.join(", ")
                        ));
                    }
                },
                Scalar::F64(f) => return Err(format!("expected an enum name or an integer, found {f}")),
                other => to_i64(other, i64::from(i32::MIN), i64::from(i32::MAX))? as i32,
            };
            tag(st);
            st.sink.varint(i64::from(n) as u64);
        }
        Kind::Message(m) => return write_wkt_scalar(st, number, m, v),
    }
    Ok(true)
}

/// A JSON scalar read as a message: the well-known types written as strings or plain values.
fn write_wkt_scalar<S: Sink>(
    st: &mut State<'_, S>,
    number: Option<u32>,
    m: &MessageDescriptor,
    v: Scalar<'_>,
) -> Result<bool, String> {
    let expected = || format!("expected {}, found {}", kind_name(&Kind::Message(m.clone())), v.describe());
    let region = |st: &mut State<'_, S>| -> Result<usize, String> {
        if let Some(n) = number {
            st.tag(n, LEN);
        }
        st.begin::<de::value::Error>().map_err(|e| e.to_string())
    };
    match wkt(m.full_name()) {
        Some(Wkt::Value) => {
            let mark = region(st)?;
            match v {
                Scalar::Null => {
                    st.tag(1, VARINT);
                    st.sink.varint(0);
                }
                Scalar::Bool(b) => {
                    st.tag(4, VARINT);
                    st.sink.varint(u64::from(b));
                }
                Scalar::Str(s) => {
                    st.tag(3, LEN);
                    st.sink.varint(s.len() as u64);
                    st.sink.bytes(s.as_bytes());
                }
                number_value => {
                    let f = to_f64(number_value)?;
                    st.tag(2, FIXED64);
                    st.sink.bytes(&f.to_le_bytes());
                }
            }
            st.end(mark);
        }
        Some(Wkt::Wrapper) => {
            let inner = m.get_field(1).ok_or_else(expected)?.kind();
            let mark = region(st)?;
            write_scalar(st, Some(1), &inner, v)?;
            st.end(mark);
        }
        Some(Wkt::Timestamp) => {
            let Scalar::Str(s) = v else { return Err(expected()) };
            // As proto3 JSON readers do: `T` and `Z` upper case, no space for the `T`.
            if s.bytes().any(|b| matches!(b, b't' | b'z' | b' ')) {
                return Err(format!(
                    "{:?} is not an RFC 3339 timestamp as protobuf writes them (such as \"2026-12-02T10:00:00Z\")",
                    truncate(s)
                ));
            }
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("{:?} is not an RFC 3339 timestamp: {e}", truncate(s)))?;
            let seconds = t.timestamp();
            // 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z, as protobuf's Timestamp requires.
            if !(-62_135_596_800..=253_402_300_799).contains(&seconds) {
                return Err(format!(
                    "{:?} is outside the range of google.protobuf.Timestamp (years 1 to 9999)",
                    truncate(s)
                ));
            }
            let nanos = t.timestamp_subsec_nanos();
            if nanos >= 1_000_000_000 {
                return Err(format!("{:?} is a leap second, which google.protobuf.Timestamp cannot hold", truncate(s)));
            }
            let mark = region(st)?;
            if seconds != 0 {
                st.tag(1, VARINT);
                st.sink.varint(seconds as u64);
            }
            if nanos != 0 {
                st.tag(2, VARINT);
                st.sink.varint(u64::from(nanos));
            }
            st.end(mark);
        }
        Some(Wkt::Duration) => {
            let Scalar::Str(s) = v else { return Err(expected()) };
            let (seconds, nanos) = parse_duration(s).ok_or_else(|| {
                format!(
                    "{:?} is not a duration: write seconds with up to 9 decimals and an `s`, such as \"1.5s\"",
                    truncate(s)
                )
            })?;
            let mark = region(st)?;
            if seconds != 0 {
                st.tag(1, VARINT);
                st.sink.varint(seconds as u64);
            }
            if nanos != 0 {
                st.tag(2, VARINT);
                st.sink.varint(i64::from(nanos) as u64);
            }
            st.end(mark);
        }
        Some(Wkt::FieldMask) => {
            let Scalar::Str(s) = v else { return Err(expected()) };
            let mark = region(st)?;
            for path in s.split(',').filter(|p| !p.is_empty()) {
                if path.contains('_') {
                    return Err(format!("field mask path {:?} must be lowerCamelCase", truncate(path)));
                }
                let snake_len: usize =
                    path.chars().map(|c| if c.is_ascii_uppercase() { 2 } else { c.len_utf8() }).sum();
                st.tag(1, LEN);
                st.sink.varint(snake_len as u64);
                let mut buf = [0u8; 4];
                for c in path.chars() {
                    if c.is_ascii_uppercase() {
                        st.sink.bytes(b"_");
                        st.sink.bytes(&[c.to_ascii_lowercase() as u8]);
                    } else {
                        st.sink.bytes(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            st.end(mark);
        }
        _ => return Err(expected()),
    }
    Ok(true)
}

/// `"-1.5s"` → (-1, -500_000_000); within protobuf's ±10,000 years.
fn parse_duration(s: &str) -> Option<(i64, i32)> {
    let body = s.strip_suffix('s')?;
    let (negative, body) = match body.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, f),
        None => (body, ""),
    };
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if body.contains('.') && frac.is_empty() {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    if seconds > 315_576_000_000 {
        return None;
    }
    let nanos: i32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    Some(if negative { (-seconds, -nanos) } else { (seconds, nanos) })
}

// ---------------------------------------------------------------------------------------------
// Structured values.

/// Reads any JSON value as `target`.
struct ValueSeed<'a, 's, S> {
    st: &'a mut State<'s, S>,
    target: &'a Target,
    /// The request itself: written without tag or length.
    top: bool,
}

impl<'de, S: Sink> DeserializeSeed<'de> for ValueSeed<'_, '_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<S: Sink> ValueSeed<'_, '_, S> {
    fn scalar<E: de::Error>(self, v: Scalar<'_>) -> Result<(), E> {
        if self.top {
            return Err(E::custom(format_args!(
                "the request body must be a JSON object ({}), found {}",
                kind_name(&self.target.kind),
                v.describe()
            )));
        }
        if let (Some(why), Scalar::Null) = (self.target.no_null, v)
            && !matches!(kind_wkt(&self.target.kind), Some(Wkt::Value | Wkt::NullValue))
        {
            return Err(self.st.error(why));
        }
        match write_scalar(self.st, self.target.number, &self.target.kind, v) {
            Ok(_) => Ok(()),
            Err(msg) => Err(self.st.error(msg)),
        }
    }
}

impl<'de, S: Sink> Visitor<'de> for ValueSeed<'_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&kind_name(&self.target.kind))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::I64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::U64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let st = self.st;
        let number = self.target.number;
        let Kind::Message(m) = &self.target.kind else {
            return Err(st.error(format_args!("expected {}, found an array", kind_name(&self.target.kind))));
        };
        match wkt(m.full_name()) {
            Some(Wkt::ListValue) if !self.top => {
                if let Some(n) = number {
                    st.tag(n, LEN);
                }
                let mark = st.begin()?;
                list_values(st, seq)?;
                st.end(mark);
                Ok(())
            }
            Some(Wkt::Value) if !self.top => {
                if let Some(n) = number {
                    st.tag(n, LEN);
                }
                let mark = st.begin()?;
                st.tag(6, LEN);
                let inner = st.begin()?;
                list_values(st, seq)?;
                st.end(inner);
                st.end(mark);
                Ok(())
            }
            _ => Err(st.error(format_args!("expected {}, found an array", kind_name(&self.target.kind)))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let st = self.st;
        let Kind::Message(m) = &self.target.kind else {
            return Err(st.error(format_args!("expected {}, found an object", kind_name(&self.target.kind))));
        };
        let open = |st: &mut State<'_, S>| -> Result<Option<usize>, A::Error> {
            if self.top {
                return Ok(None);
            }
            if let Some(n) = self.target.number {
                st.tag(n, LEN);
            }
            Ok(Some(st.begin()?))
        };
        match wkt(m.full_name()) {
            None | Some(Wkt::Empty) => {
                let mark = open(st)?;
                message_fields(st, m, map)?;
                if let Some(mark) = mark {
                    st.end(mark);
                }
                Ok(())
            }
            Some(Wkt::Struct) => {
                let mark = open(st)?;
                struct_fields(st, map)?;
                if let Some(mark) = mark {
                    st.end(mark);
                }
                Ok(())
            }
            Some(Wkt::Value) if !self.top => {
                let mark = open(st)?;
                st.tag(5, LEN);
                let inner = st.begin()?;
                struct_fields(st, map)?;
                st.end(inner);
                if let Some(mark) = mark {
                    st.end(mark);
                }
                Ok(())
            }
            Some(Wkt::Any) => Err(st.error("google.protobuf.Any is not accepted in JSON requests")),
            _ => Err(st.error(format_args!("expected {}, found an object", kind_name(&self.target.kind)))),
        }
    }
}

/// The elements of a `ListValue` (field 1, repeated `Value`).
fn list_values<'de, S: Sink, A: SeqAccess<'de>>(st: &mut State<'_, S>, mut seq: A) -> Result<(), A::Error> {
    let target = Target {
        number: Some(1),
        kind: Kind::Message(value_descriptor()),
        no_null: Some("null is not allowed in a list"),
    };
    let mut i = 0;
    loop {
        st.push_index(i);
        let next = seq.next_element_seed(ValueSeed { st: &mut *st, target: &target, top: false })?;
        st.pop();
        if next.is_none() {
            return Ok(());
        }
        i += 1;
    }
}

/// The entries of a `Struct` (field 1, `map<string, Value>`).
fn struct_fields<'de, S: Sink, A: MapAccess<'de>>(st: &mut State<'_, S>, mut map: A) -> Result<(), A::Error> {
    let target = Target { number: Some(2), kind: Kind::Message(value_descriptor()), no_null: None };
    while let Some(key) = map.next_key_seed(KeySeed)? {
        st.push_key(&key);
        st.tag(1, LEN);
        let mark = st.begin()?;
        st.tag(1, LEN);
        st.sink.varint(key.len() as u64);
        st.sink.bytes(key.as_bytes());
        map.next_value_seed(ValueSeed { st: &mut *st, target: &target, top: false })?;
        st.end(mark);
        st.pop();
    }
    Ok(())
}

fn value_descriptor() -> MessageDescriptor {
    static VALUE: std::sync::OnceLock<Option<MessageDescriptor>> = std::sync::OnceLock::new();
    match VALUE.get_or_init(|| crate::descriptor_pool().get_message_by_name("google.protobuf.Value")) {
        Some(d) => d.clone(),
        // nexus.proto imports struct.proto; the pool always has it.
        None => unreachable!("google.protobuf.Value is in the Nexus descriptor pool"),
    }
}

/// The fields of a message object.
fn message_fields<'de, S: Sink, A: MapAccess<'de>>(
    st: &mut State<'_, S>,
    desc: &MessageDescriptor,
    mut map: A,
) -> Result<(), A::Error> {
    let mut seen: Vec<u32> = Vec::new();
    let mut oneofs: Vec<(String, String)> = Vec::new();
    while let Some(key) = map.next_key_seed(KeySeed)? {
        let Some(field) = desc.get_field_by_json_name(&key).or_else(|| desc.get_field_by_name(&key)) else {
            let known: Vec<String> = desc.fields().take(12).map(|f| f.json_name().to_string()).collect();
            let more = if desc.fields().len() > 12 { ", …" } else { "" };
            return Err(st.error(format_args!(
                "unknown field {:?} in {} (its fields: {}{more})",
                truncate(&key),
                desc.full_name(),
                known.join(", ")
            )));
        };
        if seen.contains(&field.number()) {
            return Err(st.error(format_args!("the field {:?} is given twice", field.json_name())));
        }
        seen.push(field.number());
        st.push_key(&key);
        if field.is_map() {
            map.next_value_seed(MapFieldSeed { st: &mut *st, field: &field })?;
        } else if field.is_list() {
            map.next_value_seed(ListFieldSeed { st: &mut *st, field: &field })?;
        } else {
            // A null member of a oneof sets nothing; anything else claims the oneof.
            let target = Target { number: Some(field.number()), kind: field.kind(), no_null: None };
            let before = st.sink_len();
            map.next_value_seed(ValueSeed { st: &mut *st, target: &target, top: false })?;
            if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic())
                && st.sink_len() != before
            {
                if let Some((_, other)) = oneofs.iter().find(|(o, _)| o == oneof.name()) {
                    st.pop();
                    return Err(st.error(format_args!(
                        "{:?} and {:?} are both given, but they are members of the oneof `{}`: give one",
                        other,
                        field.json_name(),
                        oneof.name()
                    )));
                }
                oneofs.push((oneof.name().to_string(), field.json_name().to_string()));
            }
        }
        st.pop();
    }
    Ok(())
}

impl<S: Sink> State<'_, S> {
    /// How much has been written so far.
    fn sink_len(&self) -> usize {
        self.sink.len()
    }
}

/// A repeated field: a JSON array (or null for none).
struct ListFieldSeed<'a, 's, S> {
    st: &'a mut State<'s, S>,
    field: &'a prost_reflect::FieldDescriptor,
}

impl<'de, S: Sink> DeserializeSeed<'de> for ListFieldSeed<'_, '_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: Sink> Visitor<'de> for ListFieldSeed<'_, '_, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of {}", kind_name(&self.field.kind()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let st = self.st;
        let kind = self.field.kind();
        let packed = self.field.is_packed();
        let mark = if packed {
            st.tag(self.field.number(), LEN);
            Some(st.begin()?)
        } else {
            None
        };
        let target = Target {
            number: if packed { None } else { Some(self.field.number()) },
            kind,
            no_null: Some("null is not allowed in a list"),
        };
        let mut i = 0;
        loop {
            st.push_index(i);
            let next = seq.next_element_seed(ValueSeed { st: &mut *st, target: &target, top: false })?;
            st.pop();
            if next.is_none() {
                break;
            }
            i += 1;
        }
        if let Some(mark) = mark {
            st.end(mark);
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(self.st.error(format_args!("expected a list of {}, found an object", kind_name(&self.field.kind()))))
    }
    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<(), E> {
        Err(self.st.error(format_args!("expected a list of {}, found a boolean", kind_name(&self.field.kind()))))
    }
    fn visit_i64<E: de::Error>(self, _v: i64) -> Result<(), E> {
        Err(self.st.error(format_args!("expected a list of {}, found a number", kind_name(&self.field.kind()))))
    }
    fn visit_u64<E: de::Error>(self, _v: u64) -> Result<(), E> {
        Err(self.st.error(format_args!("expected a list of {}, found a number", kind_name(&self.field.kind()))))
    }
    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<(), E> {
        Err(self.st.error(format_args!("expected a list of {}, found a number", kind_name(&self.field.kind()))))
    }
    fn visit_str<E: de::Error>(self, _v: &str) -> Result<(), E> {
        Err(self.st.error(format_args!("expected a list of {}, found a string", kind_name(&self.field.kind()))))
    }
}

/// A map field: a JSON object (or null for none).
struct MapFieldSeed<'a, 's, S> {
    st: &'a mut State<'s, S>,
    field: &'a prost_reflect::FieldDescriptor,
}

impl<'de, S: Sink> DeserializeSeed<'de> for MapFieldSeed<'_, '_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: Sink> Visitor<'de> for MapFieldSeed<'_, '_, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let st = self.st;
        let Kind::Message(entry) = self.field.kind() else {
            return Err(st.error("a map field without an entry message"));
        };
        let key_field = entry.map_entry_key_field();
        let value_field = entry.map_entry_value_field();
        let target = Target { number: Some(2), kind: value_field.kind(), no_null: None };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            st.push_key(&key);
            let key_value = match key_field.kind() {
                Kind::Bool => match key.as_str() {
                    "true" => Scalar::Bool(true),
                    "false" => Scalar::Bool(false),
                    _ => return Err(st.error("a map key of type bool must be \"true\" or \"false\"")),
                },
                _ => Scalar::Str(&key),
            };
            st.tag(self.field.number(), LEN);
            let mark = st.begin()?;
            if let Err(msg) = write_scalar(st, Some(1), &key_field.kind(), key_value) {
                return Err(st.error(format_args!("invalid key: {msg}")));
            }
            map.next_value_seed(MapValueSeed { st: &mut *st, target: &target })?;
            st.end(mark);
            st.pop();
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        Err(self.st.error("expected an object (a map), found an array"))
    }
    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<(), E> {
        Err(self.st.error("expected an object (a map), found a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _v: i64) -> Result<(), E> {
        Err(self.st.error("expected an object (a map), found a number"))
    }
    fn visit_u64<E: de::Error>(self, _v: u64) -> Result<(), E> {
        Err(self.st.error("expected an object (a map), found a number"))
    }
    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<(), E> {
        Err(self.st.error("expected an object (a map), found a number"))
    }
    fn visit_str<E: de::Error>(self, _v: &str) -> Result<(), E> {
        Err(self.st.error("expected an object (a map), found a string"))
    }
}

/// A map's value: like any value, but null is refused unless the value type takes it.
struct MapValueSeed<'a, 's, S> {
    st: &'a mut State<'s, S>,
    target: &'a Target,
}

impl<'de, S: Sink> DeserializeSeed<'de> for MapValueSeed<'_, '_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let target = Target {
            number: self.target.number,
            kind: self.target.kind.clone(),
            no_null: Some("null is not a valid map value"),
        };
        d.deserialize_any(ValueSeed { st: self.st, target: &target, top: false })
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct KeySeed;

enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl std::ops::Deref for Key<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        self
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v.to_string()))
    }
}

#[cfg(test)]
mod tests;

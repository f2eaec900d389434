//! `wire::decode_to_cel` against prost-reflect: for random messages of every field shape, their
//! merges (two encodings one after the other) and corrupted bytes, the wire decoder must give
//! exactly what `message_to_cel(&DynamicMessage::decode(..))` gives — the same value, or an error
//! where prost-reflect refuses the bytes.

#![allow(clippy::unwrap_used, clippy::panic)] // test code: a panic is a failed test

use std::path::PathBuf;

use cel::Value as Cel;
use nexus_core::{
    value::{message_to_cel, to_message},
    wire::{Reads, decode_to_cel, decode_to_cel_reading, encode_field_from_cel, encode_from_cel, request_fields},
};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};

fn pool() -> DescriptorPool {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let fds = protox::compile(["wire.proto", "wire2.proto"], [&data]).unwrap();
    DescriptorPool::from_file_descriptor_set(fds).unwrap()
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn string(&mut self) -> String {
        let n = self.below(6);
        (0..n).map(|_| ['a', 'z', 'é', '😀', ' ', '"'][self.below(6) as usize]).collect()
    }
}

fn scalar(rng: &mut Rng, kind: &Kind, depth: u32) -> Value {
    let big = |rng: &mut Rng| if rng.chance(3) { rng.next() } else { rng.below(300) };
    match kind {
        Kind::Double => Value::F64([0.0, -1.5, 1e300, f64::INFINITY, 3.25][rng.below(5) as usize]),
        Kind::Float => Value::F32([0.0, -1.5, 1e30, 0.1][rng.below(4) as usize]),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(big(rng) as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(big(rng) as i64),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(big(rng) as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(big(rng)),
        Kind::Bool => Value::Bool(rng.chance(2)),
        Kind::String => Value::String(rng.string()),
        Kind::Bytes => Value::Bytes(rng.string().into_bytes().into()),
        // Known names, and a number no value has.
        Kind::Enum(e) => Value::EnumNumber([0, 1, 2, 7][rng.below(4) as usize].max(e.default_value().number())),
        Kind::Message(m) => Value::Message(message(rng, m, depth + 1)),
    }
}

fn map_key(rng: &mut Rng, kind: &Kind) -> MapKey {
    match scalar(rng, kind, 0) {
        Value::Bool(b) => MapKey::Bool(b),
        Value::I32(i) => MapKey::I32(i),
        Value::I64(i) => MapKey::I64(i % 4),
        Value::U32(u) => MapKey::U32(u % 4),
        Value::U64(u) => MapKey::U64(u % 4),
        Value::String(s) => MapKey::String(s),
        other => panic!("not a key: {other:?}"),
    }
}

fn field_value(rng: &mut Rng, field: &FieldDescriptor, depth: u32) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { unreachable!() };
        let (k, v) = (entry.map_entry_key_field().kind(), entry.map_entry_value_field().kind());
        let n = rng.below(4);
        return Value::Map((0..n).map(|_| (map_key(rng, &k), scalar(rng, &v, depth))).collect());
    }
    if field.is_list() {
        let n = rng.below(4);
        return Value::List((0..n).map(|_| scalar(rng, &field.kind(), depth)).collect());
    }
    scalar(rng, &field.kind(), depth)
}

fn message(rng: &mut Rng, desc: &MessageDescriptor, depth: u32) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    if depth > 3 {
        return m;
    }
    if desc.full_name() == "google.protobuf.Timestamp" || desc.full_name() == "google.protobuf.Duration" {
        // Now and then past what chrono holds: such values read as plain maps, never panic.
        let seconds = if rng.chance(8) {
            [i64::MAX, i64::MIN, 1 << 60][rng.below(3) as usize]
        } else {
            rng.below(2_000_000_000) as i64
        };
        m.set_field_by_name("seconds", Value::I64(seconds));
        m.set_field_by_name("nanos", Value::I32([0, 500, -1][rng.below(3) as usize]));
        return m;
    }
    for field in desc.fields() {
        if rng.chance(2) {
            let v = field_value(rng, &field, depth);
            m.set_field(&field, v);
        }
    }
    m
}

/// Both decoders on `bytes`: the same value, or both an error.
fn agree(desc: &MessageDescriptor, bytes: &[u8]) -> bool {
    let expected = DynamicMessage::decode(desc.clone(), bytes).map(|m| message_to_cel(&m));
    let got = decode_to_cel(desc, bytes);
    match (&expected, &got) {
        (Ok(a), Ok(b)) => assert!(same(a, b), "{}: bytes {bytes:?}\nexpected {a:?}\n     got {b:?}", desc.full_name()),
        (Err(_), Err(_)) => {}
        _ => panic!("{}: bytes {bytes:?}\nexpected {expected:?}\n     got {got:?}", desc.full_name()),
    }
    expected.is_ok()
}

/// Equality where NaN equals NaN (a corrupted double may decode to one).
fn same(a: &Cel, b: &Cel) -> bool {
    match (a, b) {
        (Cel::Float(x), Cel::Float(y)) => x == y || x.is_nan() && y.is_nan(),
        (Cel::List(x), Cel::List(y)) => x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| same(a, b)),
        (Cel::Map(x), Cel::Map(y)) => {
            x.map.len() == y.map.len() && x.map.iter().all(|(k, v)| y.map.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn descriptors() -> Vec<MessageDescriptor> {
    let pool = pool();
    ["wiretest.All", "wiretest.Inner", "wiretest2.Legacy", "wiretest2.WithGroup"]
        .iter()
        .map(|n| pool.get_message_by_name(n).unwrap())
        .collect()
}

#[test]
fn random_messages_decode_as_prost_reflect_decodes_them() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for desc in descriptors() {
        for _ in 0..400 {
            let bytes = message(&mut rng, &desc, 0).encode_to_vec();
            assert!(agree(&desc, &bytes), "{}: a valid encoding was refused", desc.full_name());
        }
    }
}

#[test]
fn merged_encodings_decode_as_prost_reflect_merges_them() {
    // Two encodings one after the other are one message: the later scalar wins, messages merge,
    // a oneof keeps its last field, lists append, maps keep the last value of a key.
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for desc in descriptors() {
        for _ in 0..300 {
            let mut bytes = message(&mut rng, &desc, 0).encode_to_vec();
            bytes.extend(message(&mut rng, &desc, 0).encode_to_vec());
            assert!(agree(&desc, &bytes));
        }
    }
}

#[test]
fn corrupted_bytes_are_refused_where_prost_reflect_refuses_them() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let (mut accepted, mut refused) = (0, 0);
    for desc in descriptors() {
        for _ in 0..4000 {
            let mut bytes = message(&mut rng, &desc, 0).encode_to_vec();
            if bytes.is_empty() {
                continue;
            }
            for _ in 0..=rng.below(3) {
                let i = rng.below(bytes.len() as u64) as usize;
                match rng.below(4) {
                    0 => bytes[i] = rng.next() as u8,
                    1 => bytes.truncate(i),
                    2 => bytes.insert(i, rng.next() as u8),
                    _ => bytes[i] ^= 0x80,
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if agree(&desc, &bytes) { accepted += 1 } else { refused += 1 }
        }
    }
    // Both outcomes were exercised.
    assert!(accepted > 100 && refused > 100, "accepted {accepted}, refused {refused}");
}

#[test]
fn strings_must_be_utf8_and_nesting_is_bounded() {
    let pool = pool();
    let inner = pool.get_message_by_name("wiretest.Inner").unwrap();
    // name = "\xff"
    assert!(!agree(&inner, &[0x0a, 0x01, 0xff]));
    // Inner.child nested n deep: prost refuses past its recursion limit, and so must we.
    for depth in [1, 50, 99, 100, 101, 150] {
        let mut bytes = Vec::new();
        for _ in 0..depth {
            let mut outer = vec![0x1a];
            prost::encoding::encode_varint(bytes.len() as u64, &mut outer);
            outer.extend(bytes);
            bytes = outer;
        }
        agree(&inner, &bytes);
    }
}

#[test]
fn absent_fields_read_as_message_to_cel_reads_them() {
    // Defaults of scalars (proto2 custom ones included), no entry for unset messages and oneofs.
    for desc in descriptors() {
        assert!(agree(&desc, &[]));
    }
    let legacy = pool().get_message_by_name("wiretest2.Legacy").unwrap();
    let Cel::Map(m) = decode_to_cel(&legacy, &[]).unwrap() else { panic!() };
    assert_eq!(m.map.get(&nexus_core::value::key("a")), Some(&Cel::Int(42)));
    assert_eq!(m.map.get(&nexus_core::value::key("k")), Some(&Cel::String(std::sync::Arc::new("TWO".into()))));
    assert!(!m.map.contains_key(&nexus_core::value::key("next")));
}

/// `encode_from_cel` against `to_message` + encode: the same message once decoded (field by
/// field, defaults left out alike), or the same error.
fn encodings_agree(desc: &MessageDescriptor, value: &Cel) -> bool {
    let expected = to_message(value, desc).map(|m| m.encode_to_vec());
    let got = encode_from_cel(value, desc);
    match (&expected, &got) {
        (Ok(a), Ok(b)) => {
            let (a, b) = (
                DynamicMessage::decode(desc.clone(), a.as_slice()),
                DynamicMessage::decode(desc.clone(), b.as_slice()),
            );
            // Not assert_eq: a DynamicMessage's Debug prints its descriptor, which for a recursive
            // message never ends.
            assert!(a.unwrap() == b.unwrap(), "{}: the messages differ, from {value:?}", desc.full_name());
            true
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.message, b.message, "{}: from {value:?}", desc.full_name());
            false
        }
        _ => panic!("{}: from {value:?}\nexpected {expected:?}\n     got {got:?}", desc.full_name()),
    }
}

/// `value` with some entries changed: a wrong type, a null, a JSON name for the field name, an
/// unknown field, a key that is not a string; in nested maps and lists too.
fn mutated(rng: &mut Rng, value: &Cel, depth: u32) -> Cel {
    use std::sync::Arc;
    match value {
        Cel::Map(m) if depth < 4 => {
            let mut entries: std::collections::HashMap<cel::objects::Key, Cel> = m
                .map
                .iter()
                .map(|(k, v)| (k.clone(), if rng.chance(3) { mutated(rng, v, depth + 1) } else { v.clone() }))
                .collect();
            if rng.chance(4) {
                let k = entries.keys().next().cloned();
                if let Some(cel::objects::Key::String(name)) = k {
                    let v = entries.remove(&cel::objects::Key::String(name.clone())).unwrap();
                    let camel: String = name
                        .split('_')
                        .enumerate()
                        .map(|(i, w)| if i == 0 { w.to_string() } else { w[..1].to_uppercase() + &w[1..] })
                        .collect();
                    entries.insert(nexus_core::value::key(&camel), v);
                }
            }
            if rng.chance(12) {
                entries.insert(nexus_core::value::key("no_such_field"), Cel::Int(1));
            }
            if rng.chance(16) {
                entries.insert(cel::objects::Key::Int(3), Cel::Int(1));
            }
            nexus_core::value::map(entries)
        }
        Cel::List(items) if depth < 4 => Cel::List(Arc::new(
            items.iter().map(|v| if rng.chance(4) { mutated(rng, v, depth + 1) } else { v.clone() }).collect(),
        )),
        _ => match rng.below(9) {
            0 => Cel::Null,
            1 => Cel::Int(-3),
            2 => Cel::UInt(u64::MAX),
            3 => Cel::Float(2.5),
            4 => Cel::Float(0.0),
            5 => Cel::String(Arc::new("RED".into())),
            6 => Cel::String(Arc::new("12".into())),
            7 => Cel::Bool(false),
            _ => value.clone(),
        },
    }
}

#[test]
fn requests_encode_as_to_message_encodes_them() {
    let mut rng = Rng(0x5151_7272_9393_b4b4);
    let (mut accepted, mut refused) = (0, 0);
    for desc in descriptors() {
        for _ in 0..1500 {
            let value = message_to_cel(&message(&mut rng, &desc, 0));
            // A message's own CEL form is accepted — unless it holds what `to_message` cannot
            // turn back (a Timestamp or Duration out of chrono's range reads as a plain map).
            if encodings_agree(&desc, &value) {
                accepted += 1;
            }
            if encodings_agree(&desc, &mutated(&mut rng, &value, 0)) { accepted += 1 } else { refused += 1 }
        }
    }
    assert!(accepted > 100 && refused > 100, "accepted {accepted}, refused {refused}");
}

#[test]
fn a_field_never_runs_from_one_occurrence_of_a_message_into_the_next() {
    // `st` (a Struct, read by prost-reflect) twice: the first occurrence ends inside an unknown
    // length-delimited field whose length reaches into the second. Each occurrence is its own
    // message to merge, so this is malformed (found by the `wire` fuzz target).
    let all = pool().get_message_by_name("wiretest.All").unwrap();
    let mut first = vec![0x12, 0x05, 0x01];
    first.extend([0x28; 2]);
    let second = [0x28; 4];
    let mut bytes = Vec::new();
    for part in [&first[..], &second[..]] {
        bytes.extend([0xa2, 0x03, part.len() as u8]);
        bytes.extend(part);
    }
    assert!(!agree(&all, &bytes));
    // The same for a message the decoder reads itself (`f_inner`, field 17).
    let mut bytes = Vec::new();
    for part in [&first[..], &second[..]] {
        bytes.extend([0x8a, 0x01, part.len() as u8]);
        bytes.extend(part);
    }
    assert!(!agree(&all, &bytes));
}

/// Random reads of `desc`: some of its fields, each read whole or in part (a message field's
/// own fields, recursively).
fn random_reads(rng: &mut Rng, desc: &MessageDescriptor, depth: u32) -> Reads {
    if depth > 3 || rng.chance(6) {
        return Reads::All;
    }
    let mut reads = Reads::NONE;
    for field in desc.fields() {
        if !rng.chance(2) {
            continue;
        }
        match field.kind() {
            Kind::Message(m) if !field.is_list() && !field.is_map() && rng.chance(2) => {
                // A path through this field into one of its own, or the field whole.
                match random_reads(rng, &m, depth + 1) {
                    Reads::All => reads.add(&[field.name()]),
                    Reads::Fields(inner) if inner.is_empty() => reads.add(&[field.name()]),
                    Reads::Fields(inner) => {
                        for (name, sub) in inner {
                            add_nested(&mut reads, &[field.name().to_string(), name], &sub);
                        }
                    }
                }
            }
            _ => reads.add(&[field.name()]),
        }
    }
    reads
}

/// Adds `prefix` followed by every path of `sub`.
fn add_nested(reads: &mut Reads, prefix: &[String], sub: &Reads) {
    match sub {
        Reads::All => reads.add(prefix),
        Reads::Fields(fields) if fields.is_empty() => reads.add(prefix),
        Reads::Fields(fields) => {
            for (name, inner) in fields {
                let mut path = prefix.to_vec();
                path.push(name.clone());
                add_nested(reads, &path, inner);
            }
        }
    }
}

/// What `decode_to_cel_reading` must give: the full decode, keeping of each message only the
/// fields read. Lists, maps and well-known types are kept whole.
fn restrict(desc: &MessageDescriptor, value: &Cel, reads: &Reads) -> Cel {
    let (Reads::Fields(fields), Cel::Map(m)) = (reads, value) else { return value.clone() };
    if desc.full_name().starts_with("google.protobuf.") {
        return value.clone();
    }
    let mut out = std::collections::HashMap::new();
    for (name, sub) in fields {
        let key = cel::objects::Key::String(std::sync::Arc::new(name.clone()));
        let Some(v) = m.map.get(&key) else { continue };
        let field = desc.get_field_by_name(name).unwrap();
        let v = match field.kind() {
            Kind::Message(inner) if !field.is_list() && !field.is_map() => restrict(&inner, v, sub),
            _ => v.clone(),
        };
        out.insert(key, v);
    }
    Cel::Map(cel::objects::Map { map: std::sync::Arc::new(out) })
}

#[test]
fn reading_some_fields_gives_those_fields_as_the_whole_decode_gives_them() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for desc in descriptors() {
        for _ in 0..400 {
            let m = message(&mut rng, &desc, 0);
            // Sometimes two encodings in a row: merged messages and a later oneof member.
            let mut bytes = m.encode_to_vec();
            if rng.chance(3) {
                bytes.extend(message(&mut rng, &desc, 0).encode_to_vec());
            }
            let reads = random_reads(&mut rng, &desc, 0);
            let whole = decode_to_cel(&desc, &bytes).unwrap();
            let got = decode_to_cel_reading(&desc, &bytes, &reads).unwrap();
            let expected = restrict(&desc, &whole, &reads);
            // A message whose bytes hold a proto2 group is decoded by prost-reflect, whole.
            let grouped = desc.fields().any(|f| f.is_group()) && same(&got, &whole);
            assert!(
                grouped || same(&expected, &got),
                "{}: reads {reads:?}\nexpected {expected:?}\n     got {got:?}",
                desc.full_name()
            );
        }
    }
    // Nothing read: an empty map; everything read: the whole decode.
    let desc = &descriptors()[0];
    let bytes = message(&mut rng, desc, 0).encode_to_vec();
    let nothing = decode_to_cel_reading(desc, &bytes, &Reads::NONE).unwrap();
    assert!(matches!(&nothing, Cel::Map(m) if m.map.is_empty()), "{nothing:?}");
    assert!(same(&decode_to_cel_reading(desc, &bytes, &Reads::All).unwrap(), &decode_to_cel(desc, &bytes).unwrap()));
}

#[test]
fn a_field_not_read_is_still_checked_for_framing() {
    let desc = &descriptors()[0];
    let mut rng = Rng(7);
    let bytes = loop {
        let b = message(&mut rng, desc, 0).encode_to_vec();
        if b.len() > 4 {
            break b;
        }
    };
    // Cut inside the last field: whatever is read, the message is refused.
    let cut = &bytes[..bytes.len() - 1];
    if decode_to_cel(desc, cut).is_err() {
        assert!(decode_to_cel_reading(desc, cut, &Reads::NONE).is_err());
    }
    // A map field (`m_str_int = 30`) under a fixed32 key: prost-reflect reads a map entry's length
    // whatever the wire type says, so the whole decode takes these bytes, and so must a read that
    // skips the field (found by the `wire` fuzz target).
    let bytes = [0xf5, 0x01, 0x00, 0x30, 0x3d];
    assert!(decode_to_cel(desc, &bytes).is_ok());
    assert!(decode_to_cel_reading(desc, &bytes, &Reads::NONE).is_ok());
}

/// A request written field by field from an object's keys (`request_fields` +
/// `encode_field_from_cel`, what the engine does for `with: {…}`): the message `encode_from_cel`
/// writes for the same object, or an error where it gives one.
#[test]
fn an_object_written_field_by_field_is_the_object_written_whole() {
    let mut rng = Rng(0x0bad_cafe_f00d_d00d);
    let (mut same_message, mut general) = (0, 0);
    for desc in descriptors() {
        for _ in 0..1500 {
            let value = message_to_cel(&message(&mut rng, &desc, 0));
            let value = if rng.chance(2) { mutated(&mut rng, &value, 0) } else { value };
            let Cel::Map(m) = &value else { continue };
            let entries: Vec<(String, Cel)> = m
                .map
                .iter()
                .filter_map(|(k, v)| match k {
                    cel::objects::Key::String(s) => Some((s.to_string(), v.clone())),
                    _ => None,
                })
                .collect();
            let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            let Some(fields) = request_fields(&desc, &keys) else {
                general += 1;
                continue;
            };
            let whole: Cel =
                nexus_core::value::map(entries.iter().map(|(k, v)| (nexus_core::value::key(k), v.clone())).collect());
            let mut out = Vec::new();
            let mut by_field = Ok(());
            for (i, field) in &fields {
                let v = &entries[*i].1;
                if matches!(v, Cel::Null) {
                    continue;
                }
                if let Err(e) = encode_field_from_cel(field, v, &mut out) {
                    by_field = Err(e);
                    break;
                }
            }
            match (by_field, encode_from_cel(&whole, &desc)) {
                (Ok(()), Ok(bytes)) => {
                    // Compared decoded: a Struct's entries are written in its hash map's order,
                    // which differs from one conversion to the next.
                    let (a, b) = (
                        DynamicMessage::decode(desc.clone(), out.as_slice()).unwrap(),
                        DynamicMessage::decode(desc.clone(), bytes.as_slice()).unwrap(),
                    );
                    assert!(a == b, "{}: the messages differ, from {whole:?}", desc.full_name());
                    same_message += 1;
                }
                // Which field's error comes first depends on the map's order in the whole path.
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{}: from {whole:?}\nby field {a:?}\n   whole {b:?}", desc.full_name()),
            }
        }
    }
    assert!(same_message > 500 && general > 10, "same message {same_message}, general path {general}");
}

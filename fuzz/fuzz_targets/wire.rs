//! Protobuf bytes to CEL and back without `DynamicMessage` (`nexus_core::wire`: how every backend
//! response is read and every request written).
//!
//! Input: byte 0 picks the message type (the demo services' responses and requests, and the core
//! wire tests' messages: every scalar kind, packed and unpacked lists, maps of every key kind,
//! oneofs, proto2 defaults and groups, well-known types, recursion); the rest is the bytes.
//!
//! Property: no panic; `decode_to_cel` gives exactly what prost-reflect's decode followed by
//! `message_to_cel` gives — the same value, or an error for both; reading one field of them
//! (`decode_to_cel_reading`) gives that field as the whole decode does; and when the bytes decode,
//! `encode_from_cel` of the value gives the message `to_message` gives (compared decoded, in CEL
//! form), or the same error.

#![no_main]

use std::sync::LazyLock;

use cel::Value as Cel;
use libfuzzer_sys::fuzz_target;
use nexus_core::{value, wire};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

static MESSAGES: LazyLock<Vec<MessageDescriptor>> = LazyLock::new(|| {
    let mut pool = DescriptorPool::new();
    for bytes in [
        &include_bytes!(concat!(env!("OUT_DIR"), "/wire.bin"))[..],
        &include_bytes!(concat!(env!("OUT_DIR"), "/demo.bin"))[..],
    ] {
        pool.decode_file_descriptor_set(bytes).expect("descriptor sets compiled by build.rs");
    }
    pool.all_messages().filter(|m| !m.is_map_entry()).collect()
});

/// Equality where NaN equals NaN.
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

/// Reading only the first field (whole): what decodes whole decodes read in part, and the field
/// read is the one the whole decode gives.
fn read_in_part_agrees(desc: &MessageDescriptor, bytes: &[u8], value: &Cel) {
    let Some(first) = desc.fields().next() else { return };
    let mut reads = wire::Reads::NONE;
    reads.add(&[first.name()]);
    let part = wire::decode_to_cel_reading(desc, bytes, &reads)
        .unwrap_or_else(|e| panic!("{}: refused read in part: {e}", desc.full_name()));
    // Well-known types are decoded whole (a wrapper is its scalar, a Struct its map).
    if desc.full_name().starts_with("google.protobuf.") {
        assert!(same(&part, value), "{}: read in part as {part:?}, whole {value:?}", desc.full_name());
        return;
    }
    let (Cel::Map(part), Cel::Map(whole)) = (&part, value) else {
        panic!("{}: read in part: {part:?}, whole {value:?}", desc.full_name());
    };
    let key = cel::objects::Key::String(std::sync::Arc::new(first.name().to_string()));
    let grouped = desc.fields().any(|f| f.is_group());
    assert!(
        grouped && part.map.len() == whole.map.len()
            || part.map.len() <= 1
                && match (part.map.get(&key), whole.map.get(&key)) {
                    (Some(a), Some(b)) => same(a, b),
                    (None, None) => true,
                    _ => false,
                },
        "{}: {first:?} read as {part:?}, whole {whole:?}",
        desc.full_name()
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else { return };
    let desc = &MESSAGES[usize::from(pick) % MESSAGES.len()];
    let expected = DynamicMessage::decode(desc.clone(), bytes).map(|m| value::message_to_cel(&m));
    let got = wire::decode_to_cel(desc, bytes);
    let value = match (expected, got) {
        (Ok(a), Ok(b)) => {
            assert!(same(&a, &b), "{}: decoded differently: {a:?} vs {b:?}", desc.full_name());
            b
        }
        (Err(_), Err(_)) => return,
        (a, b) => panic!("{}: prost-reflect {:?}, wire {:?}", desc.full_name(), a.is_ok(), b.is_ok()),
    };
    read_in_part_agrees(desc, bytes, &value);
    let by_message = value::to_message(&value, desc).map(|m| m.encode_to_vec());
    let by_wire = wire::encode_from_cel(&value, desc);
    match (by_message, by_wire) {
        (Ok(a), Ok(b)) => {
            let a = DynamicMessage::decode(desc.clone(), a.as_slice()).expect("to_message's encoding decodes");
            let b = DynamicMessage::decode(desc.clone(), b.as_slice()).expect("encode_from_cel's encoding decodes");
            // Compared in CEL form: a NaN the bytes held is not equal to itself as a message
            // field (and a DynamicMessage's Debug prints its descriptor, endless for a recursive
            // message).
            let (a, b) = (value::message_to_cel(&a), value::message_to_cel(&b));
            assert!(same(&a, &b), "{}: encoded differently from {value:?}", desc.full_name());
        }
        (Err(a), Err(b)) => assert_eq!(a.message, b.message, "{}: from {value:?}", desc.full_name()),
        (a, b) => panic!("{}: to_message {:?}, encode_from_cel {:?}", desc.full_name(), a.is_ok(), b.is_ok()),
    }
});

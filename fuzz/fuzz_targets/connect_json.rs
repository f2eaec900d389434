//! Connect JSON → protobuf (`nexus_core::transcode`), differentially against prost-reflect's
//! proto3 JSON reader (what the Connect endpoint used before).
//!
//! Byte 0 picks the request message (requests of the Nexus API that cover every field kind,
//! well-known type, repeated and oneof field there is); the rest is the JSON body.
//!
//! Properties: no panic; the counting pass and the writing pass agree (the output fills exactly
//! the reserved buffer); what we accept decodes as the message, and when prost-reflect accepts it
//! too, both read the same message. Where we accept and prost-reflect refuses, the difference must
//! be one of the documented ones (none today: we are stricter, never looser).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_core::transcode;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

const MESSAGES: &[&str] = &[
    "nexus.v1.ExecutePatternRequest",
    "nexus.v1.RegisterPatternRequest",
    "nexus.v1.Pattern",
    "nexus.v1.ListPatternsRequest",
    "nexus.v1.SuggestPatternsRequest",
    "nexus.v1.PublishEventRequest",
    "nexus.v1.GeneratePatternRequest",
    "nexus.v1.QueryGraphRequest",
];

fn canonical(m: &DynamicMessage) -> serde_json::Value {
    match m.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new()) {
        Ok(v) => v,
        Err(e) => panic!("a decoded message does not serialize: {e}"),
    }
}

fn reference(desc: &MessageDescriptor, json: &[u8]) -> Option<DynamicMessage> {
    let body: &[u8] = if json.iter().all(u8::is_ascii_whitespace) { b"{}" } else { json };
    let mut de = serde_json::Deserializer::from_slice(body);
    let m = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &DeserializeOptions::new()).ok()?;
    de.end().ok()?;
    Some(m)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, json)) = data.split_first() else { return };
    let pool = nexus_core::descriptor_pool();
    let Some(desc) = pool.get_message_by_name(MESSAGES[usize::from(pick) % MESSAGES.len()]) else {
        panic!("the message is in the pool")
    };
    let Ok(len) = transcode::encoded_len(&desc, json) else { return };
    let mut out = Vec::with_capacity(len);
    let ptr = out.as_ptr();
    if let Err(e) = transcode::encode_into(&desc, json, &mut out) {
        panic!("the counting pass accepted what the writing pass refused: {e}");
    }
    assert_eq!(out.len(), len, "the two passes disagree on the size");
    assert_eq!(out.as_ptr(), ptr, "the output grew past the reserved buffer");
    let ours = match DynamicMessage::decode(desc.clone(), out.as_slice()) {
        Ok(m) => m,
        Err(e) => panic!("our encoding does not decode: {e}"),
    };
    match reference(&desc, json) {
        Some(theirs) => assert_eq!(canonical(&ours), canonical(&theirs), "a different message from the same JSON"),
        None => panic!("we accept what prost-reflect refuses"),
    }
});

//! The pattern document parser: YAML and JSON text (`document::parse`) and an already-parsed JSON
//! value (`document::from_json`), with the round trip of what they accept.
//!
//! Property: neither path panics, and a document that parses prints (`to_yaml`) as a document
//! that parses back to an equal `pb::Pattern`. The round trip holds for every field: strings are
//! quoted by the YAML printer where they would read as something else, 64-bit integers and
//! durations/timestamps print as their proto3 JSON strings, and `google.protobuf.Value` numbers
//! are finite `f64`s (JSON has no NaN or infinity, and the YAML reader turns `.nan`/`.inf` into
//! `null` on the way into `serde_json::Value`), which the printer writes in a form that reads back
//! bit for bit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_core::{document, pb};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pattern) = document::parse(text) {
            round_trip(&pattern);
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(pattern) = document::from_json(value) {
            round_trip(&pattern);
        }
    }
});

fn round_trip(pattern: &pb::Pattern) {
    let yaml = document::to_yaml(pattern);
    let back = match document::parse(&yaml) {
        Ok(back) => back,
        Err(e) => panic!("the printed document does not parse: {e}\n--- printed ---\n{yaml}"),
    };
    assert_eq!(&back, pattern, "the printed document parses to another pattern\n--- printed ---\n{yaml}");
}

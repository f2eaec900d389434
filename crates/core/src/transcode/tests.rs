//! The transcoder against prost-reflect's JSON deserializer (the reference): same messages from
//! the same JSON, and clear errors where it refuses.

use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::json;

use super::*;

fn desc(name: &str) -> MessageDescriptor {
    crate::descriptor_pool().get_message_by_name(name).unwrap_or_else(|| panic!("{name} is in the pool"))
}

/// The message prost-reflect reads from `json`, as canonical JSON.
fn reference(desc: &MessageDescriptor, json: &str) -> Result<serde_json::Value, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    let m = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &DeserializeOptions::new())
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(canonical(&m))
}

fn canonical(m: &DynamicMessage) -> serde_json::Value {
    m.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new()).expect("serializes")
}

/// Ours, decoded and printed the same way.
fn ours(desc: &MessageDescriptor, json: &str) -> Result<serde_json::Value, String> {
    let bytes = transcode(desc, json.as_bytes()).map_err(|e| e.message)?;
    let m =
        DynamicMessage::decode(desc.clone(), bytes.as_slice()).map_err(|e| format!("our bytes do not decode: {e}"))?;
    Ok(canonical(&m))
}

#[track_caller]
fn same(name: &str, json: &str) {
    let d = desc(name);
    let expected = reference(&d, json).unwrap_or_else(|e| panic!("reference refuses {json}: {e}"));
    let got = ours(&d, json).unwrap_or_else(|e| panic!("we refuse {json}: {e}"));
    assert_eq!(got, expected, "for {json}");
}

#[track_caller]
fn refused(name: &str, json: &str, fragment: &str) -> String {
    let d = desc(name);
    let err = ours(&d, json).expect_err(json);
    assert!(err.contains(fragment), "error for {json} is {err:?}, expected it to mention {fragment:?}");
    err
}

#[test]
fn requests_with_structs_of_every_json_type_match_the_reference() {
    same("nexus.v1.ExecutePatternRequest", "{}");
    // An empty body is the empty message (Connect sends none for requests without fields).
    assert_eq!(
        ours(&desc("nexus.v1.ExecutePatternRequest"), "  "),
        reference(&desc("nexus.v1.ExecutePatternRequest"), "{}")
    );
    same(
        "nexus.v1.ExecutePatternRequest",
        r#"{"patternName":"user_creation","version":"1.0.0","input":{"email":"a@b.c","n":1,"x":-2.5,"big":1e300,
            "ok":true,"none":null,"list":[1,"two",null,false,{"deep":[[],{}]}],"obj":{"a":{"b":{"c":"d"}}},
            "unicode":"é\u0000\n\"","":"empty key"},"idempotency_key":"k"}"#,
    );
    // Both spellings of a field name.
    same("nexus.v1.ExecutePatternRequest", r#"{"pattern_name":"p","idempotencyKey":"k"}"#);
    // Null for a message or scalar field means "not set".
    same("nexus.v1.ExecutePatternRequest", r#"{"pattern_name":null,"input":null}"#);
    // A key given twice in a Struct: the last wins, as in every JSON reader.
    same("nexus.v1.ExecutePatternRequest", r#"{"input":{"a":1,"a":2}}"#);
}

#[test]
fn every_example_pattern_round_trips_through_json() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../patterns");
    let d = desc("nexus.v1.Pattern");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("patterns/") {
        let path = entry.expect("entry").path();
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Ok(pattern) = crate::document::parse(&text) else { continue };
        let dynamic = DynamicMessage::decode(d.clone(), pattern.encode_to_vec().as_slice()).expect("decodes");
        for proto_names in [false, true] {
            let json = dynamic
                .serialize_with_options(
                    serde_json::value::Serializer,
                    &SerializeOptions::new().use_proto_field_name(proto_names).stringify_64_bit_integers(proto_names),
                )
                .expect("serializes")
                .to_string();
            same("nexus.v1.Pattern", &json);
            let back = crate::pb::Pattern::decode(transcode(&d, json.as_bytes()).expect("transcodes").as_slice())
                .expect("decodes");
            assert_eq!(back, pattern, "{}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 3, "the example patterns were read ({seen})");
}

#[test]
fn scalars_enums_and_well_known_types_match_the_reference() {
    for json in [
        r#"{"name":"p","steps":[{"id":"a","call":"x.Y/Z","timeout":"1.5s","retry":{"maxAttempts":3,"initialBackoff":"0.010s","multiplier":1.5,"retryOn":["UNAVAILABLE"]},"dependsOn":["b","c"]}]}"#,
        r#"{"steps":[{"id":"a","retry":{"max_attempts":"3","initial_backoff":"-0.000000001s","multiplier":"NaN"},"depends_on":[]}]}"#,
        r#"{"steps":[{"id":"a","timeout":"315576000000s"}]}"#,
        r#"{"steps":[{"id":"a","timeout":"0s"}]}"#,
    ] {
        same("nexus.v1.Pattern", json);
    }
    same("nexus.v1.ListPatternsRequest", r#"{"sort":"PATTERN_SORT_NAME","pageSize":10}"#);
    same("nexus.v1.ListPatternsRequest", r#"{"sort":2,"pageSize":"10"}"#);
    same("nexus.v1.ListPatternsRequest", r#"{"sort":7,"page_size":1.0}"#);
    // A packed repeated enum, by name and number.
    same("nexus.v1.SuggestPatternsRequest", r#"{"kinds":["SUGGESTION_KIND_COMPOSITE",3,0]}"#);
    same("nexus.v1.SuggestPatternsRequest", r#"{"kinds":[]}"#);
    same("nexus.v1.Diagnostic", r#"{"severity":"SEVERITY_ERROR","message":"m"}"#);
    same(
        "nexus.v1.PublishEventRequest",
        r#"{"event":{"type":"t","data":{"x":[1,2]},"time":"2026-12-02T10:00:00.123456789Z"}}"#,
    );
    same("nexus.v1.PublishEventRequest", r#"{"event":{"time":"1970-01-01T00:00:00+02:00"}}"#);
}

#[test]
fn wire_encoding_covers_every_scalar_kind() {
    // google.protobuf wrappers and Duration cover each wire type; the descriptors come from the
    // pool so nothing here is hand-encoded.
    for (name, json) in [
        ("google.protobuf.DoubleValue", r#"{"value":-0.0}"#),
        ("google.protobuf.FloatValue", r#"{"value":3.4028234e38}"#),
        ("google.protobuf.FloatValue", r#"{"value":"NaN"}"#),
        ("google.protobuf.DoubleValue", r#"{"value":"-Infinity"}"#),
        ("google.protobuf.Int32Value", r#"{"value":-2147483648}"#),
        ("google.protobuf.Int64Value", r#"{"value":"-9223372036854775808"}"#),
        ("google.protobuf.UInt32Value", r#"{"value":4294967295}"#),
        ("google.protobuf.UInt64Value", r#"{"value":"18446744073709551615"}"#),
        ("google.protobuf.BoolValue", r#"{"value":true}"#),
        ("google.protobuf.StringValue", r#"{"value":"x"}"#),
        ("google.protobuf.BytesValue", r#"{"value":"aGVsbG8="}"#),
        ("google.protobuf.BytesValue", r#"{"value":"_-8"}"#),
    ] {
        if crate::descriptor_pool().get_message_by_name(name).is_some() {
            same(name, json);
        }
    }
}

#[test]
fn long_regions_are_length_prefixed_correctly() {
    // Lengths of 1, 2 and 3 varint bytes (regions are written with a one-byte placeholder and
    // shifted when longer).
    for n in [0usize, 1, 100, 127, 128, 200, 16_383, 16_384, 70_000] {
        let s = "x".repeat(n);
        same("nexus.v1.ExecutePatternRequest", &json!({"input": {"s": s, "l": [{"s": s}], "n": 1}}).to_string());
    }
}

#[test]
fn errors_name_the_place_and_the_problem() {
    let e = refused(
        "nexus.v1.ExecutePatternRequest",
        r#"{"input":{"users":[{"a":1}]},"nope":1}"#,
        "unknown field \"nope\"",
    );
    assert!(e.contains("nexus.v1.ExecutePatternRequest") && e.contains("patternName"), "{e}");
    refused(
        "nexus.v1.ExecutePatternRequest",
        r#"{"patternName":5}"#,
        "at `patternName`: expected a string, found a number",
    );
    refused(
        "nexus.v1.ExecutePatternRequest",
        r#"{"input":[1]}"#,
        "at `input`: expected a google.protobuf.Struct object, found an array",
    );
    refused(
        "nexus.v1.Pattern",
        r#"{"steps":[{"dependsOn":["a",null]}]}"#,
        "at `steps[0].dependsOn[1]`: null is not allowed in a list",
    );
    refused(
        "nexus.v1.Pattern",
        r#"{"steps":[{"dependsOn":"a"}]}"#,
        "at `steps[0].dependsOn`: expected a list of a string, found a string",
    );
    refused(
        "nexus.v1.SuggestPatternsRequest",
        r#"{"kinds":["NOPE"]}"#,
        "at `kinds[0]`: \"NOPE\" is not a value of nexus.v1.SuggestionKind",
    );
    refused("nexus.v1.ListPatternsRequest", r#"{"pageSize":1.5}"#, "at `pageSize`: expected an integer, found 1.5");
    refused("nexus.v1.ListPatternsRequest", r#"{"pageSize":4294967296}"#, "out of range");
    refused("nexus.v1.ListPatternsRequest", r#"{"sort":"NOPE"}"#, "\"NOPE\" is not a value of nexus.v1.PatternSort");
    refused("nexus.v1.ListPatternsRequest", r#"{"pageSize":1,"page_size":2}"#, "given twice");
    refused(
        "nexus.v1.Pattern",
        r#"{"steps":[{"id":"a","timeout":"1m"}]}"#,
        "at `steps[0].timeout`: \"1m\" is not a duration",
    );
    refused("nexus.v1.Pattern", r#"{"steps":[{"id":"a","timeout":"315576000001s"}]}"#, "is not a duration");
    refused(
        "nexus.v1.PublishEventRequest",
        r#"{"event":{"time":"yesterday"}}"#,
        "at `event.time`: \"yesterday\" is not an RFC 3339 timestamp",
    );
    refused("nexus.v1.ExecutePatternRequest", r#"{"input":{"a":}}"#, "line 1 column");
    refused("nexus.v1.ExecutePatternRequest", r#"{} {}"#, "trailing characters");
    refused(
        "nexus.v1.ExecutePatternRequest",
        r#"[]"#,
        "expected a nexus.v1.ExecutePatternRequest object, found an array",
    );
    refused("nexus.v1.ExecutePatternRequest", r#""x""#, "must be a JSON object");
    // Keys in paths are quoted when they are not plain, and cut when long.
    let long = "k".repeat(500);
    let e = refused(
        "nexus.v1.Pattern",
        &format!(r#"{{"steps":[{{"id":"a","with":{{"{long}":1}},"timeout":5}}]}}"#),
        "at `steps[0].timeout`: expected a duration string such as \"1.5s\", found a number",
    );
    assert!(e.len() < 400, "{e}");
}

#[test]
fn nesting_is_bounded_with_a_clear_message() {
    let deep = format!(r#"{{"input":{{"a":{}1{}}}}}"#, "[".repeat(200), "]".repeat(200));
    let e = refused(
        "nexus.v1.ExecutePatternRequest",
        &deep,
        "nests deeper than the limit of 100 levels of protobuf messages",
    );
    assert!(e.len() < 600, "the path is cut: {e}");
    let deep = format!(r#"{{"patternName":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
    refused("nexus.v1.ExecutePatternRequest", &deep, "at `patternName`: expected a string, found an array");
    let deep = format!(r#"{{"x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
    refused("nexus.v1.ExecutePatternRequest", &deep, "unknown field");
    // 40 JSON objects are 120 protobuf messages (Struct → entry → Value).
    let mut s = String::from("1");
    for _ in 0..40 {
        s = format!(r#"{{"a":{s}}}"#);
    }
    refused("nexus.v1.ExecutePatternRequest", &format!(r#"{{"input":{s}}}"#), "100 levels of protobuf messages");
}

#[test]
fn the_output_is_written_in_exactly_the_reserved_space() {
    let body = format!("{{\"input\":{{\"zeros\":[{}0]}}}}", "0,".repeat(100_000));
    let d = desc("nexus.v1.ExecutePatternRequest");
    let len = encoded_len(&d, body.as_bytes()).expect("valid");
    let mut out = Vec::with_capacity(len);
    let ptr = out.as_ptr();
    encode_into(&d, body.as_bytes(), &mut out).expect("valid");
    assert_eq!(out.len(), len);
    assert_eq!(out.as_ptr(), ptr, "the buffer never grew");
    // 2 bytes of JSON per zero, 11 bytes of protobuf: the worst ratio there is.
    assert!(len <= body.len() * 11 / 2 + 64, "{len} vs {}", body.len());
    let m = crate::pb::ExecutePatternRequest::decode(out.as_slice()).expect("decodes");
    let input = m.input.expect("input");
    let Some(prost_types::value::Kind::ListValue(list)) = &input.fields["zeros"].kind else { panic!("a list") };
    assert_eq!(list.values.len(), 100_001);
}

//! The Connect transcoder's memory: at most 8× the body, measured on the heap. dhat counts every
//! allocation; nextest runs each test in a process of its own, so each peak is its case's alone.

#![allow(clippy::expect_used)] // test code: a broken fixture panics, which fails the test

use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn request() -> MessageDescriptor {
    nexus_core::descriptor_pool().get_message_by_name("nexus.v1.ExecutePatternRequest").expect("in the pool")
}

/// The process's peak heap while transcoding `body`, as a multiple of the body's size. The peak
/// includes the body itself and whatever building it cost (so it errs on the high side).
fn transcode_peak(body: String) -> f64 {
    let profiler = dhat::Profiler::builder().testing().build();
    let bytes = body.into_bytes();
    let out = nexus_core::transcode::transcode(&request(), &bytes).expect("valid");
    let stats = dhat::HeapStats::get();
    let ratio = stats.max_bytes as f64 / bytes.len() as f64;
    println!("body {} B, encoded {} B, peak heap {:.1}× the body", bytes.len(), out.len(), ratio);
    drop(profiler);
    ratio
}

/// The same for the path the Connect endpoint took before (serde_json::Value, DynamicMessage).
fn tree_peak(body: String) -> f64 {
    let profiler = dhat::Profiler::builder().testing().build();
    let bytes = body.into_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let m = DynamicMessage::deserialize_with_options(request(), v, &DeserializeOptions::new()).expect("message");
    let stats = dhat::HeapStats::get();
    drop(m);
    drop(profiler);
    stats.max_bytes as f64 / bytes.len() as f64
}

/// The case from the issue: a million zeros (2 MB), the worst JSON-to-protobuf ratio there is
/// (2 bytes of JSON become 11 of protobuf inside a Struct).
fn zeros() -> String {
    format!("{{\"pattern_name\":\"p\",\"input\":{{\"z\":[{}0]}}}}", "0,".repeat(999_999))
}

fn wide() -> String {
    let keys: String = (0..200_000).map(|i| format!("\"k{i}\":{i},")).collect();
    format!("{{\"input\":{{{keys}\"end\":true}}}}")
}

fn nested() -> String {
    let items: String = (0..50_000).map(|i| format!("{{\"a\":[\"s{i}\",{{\"b\":null}},true,[]]}},")).collect();
    format!("{{\"input\":{{\"m\":[{items}1]}}}}")
}

#[test]
fn a_million_zeros_stay_within_eight_times_the_body() {
    let ratio = transcode_peak(zeros());
    assert!(ratio <= 8.0, "{ratio:.1}× the body");
}

#[test]
fn a_wide_object_stays_within_eight_times_the_body() {
    let ratio = transcode_peak(wide());
    assert!(ratio <= 8.0, "{ratio:.1}× the body");
}

#[test]
fn nested_objects_and_arrays_stay_within_eight_times_the_body() {
    let ratio = transcode_peak(nested());
    assert!(ratio <= 8.0, "{ratio:.1}× the body");
}

/// For the record (printed, and a sanity check that the measure sees what it should): the tree
/// the endpoint built before costs far more.
#[test]
fn the_tree_it_replaces_cost_far_more() {
    let ratio = tree_peak(nested());
    println!("nested objects through Value + DynamicMessage: {ratio:.1}× the body");
    assert!(ratio > 20.0, "{ratio:.1}×");
}

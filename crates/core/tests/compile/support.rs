//! The test harness: a catalog compiled in-process from test protos, a registry of callee
//! patterns, and `check`, which renders a document's diagnostics as text for `expect!`.

#![allow(clippy::unwrap_used)] // test code: a broken fixture panics, which fails the test

use std::{collections::HashMap, path::PathBuf, sync::Arc, sync::LazyLock};

use expect_test::Expect;
use nexus_core::{
    Catalog, CompiledPattern, Diagnostic, NoPatterns, PatternLookup, catalog::DescriptorSource, document,
};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shop test backend (`tests/data/shop.proto`) and the four demo services
/// (`proto/demo/**`), each as its own backend like the server would plug them in.
pub static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let data = manifest_dir().join("tests/data");
    let protos = manifest_dir().join("../../proto");
    let shop = protox::compile(["shop.proto"], [&data]).unwrap();
    let demo = protox::compile(
        [
            "demo/user/v1/user.proto",
            "demo/asset/v1/asset.proto",
            "demo/notification/v1/notification.proto",
            "demo/broadcast/v1/broadcast.proto",
        ],
        [&protos],
    )
    .unwrap();
    let mut builder = Catalog::builder();
    builder.add_backend("shop", "http://shop", DescriptorSource::Protos, shop, &[]).unwrap();
    builder.add_backend("demo", "http://demo", DescriptorSource::Protos, demo, &[]).unwrap();
    builder.build()
});

/// Registered patterns a step may call as `pattern:NAME@VERSION`:
/// - `cancel_order@1.0.0`: input `{order_id (required), reason}`, output `{cancelled}`;
/// - `no_output@1.0.0`: no output mapping (its output is every step's output, untyped).
///
/// and one event type with a schema (see [`Registry::event_schema`]).
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut patterns = HashMap::new();
    for doc in [
        r#"
name: cancel_order
version: 1.0.0
input:
  type: object
  required: [order_id]
  properties: {order_id: {type: string}, reason: {type: string}}
steps:
  - id: cancel
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ input.order_id }}"}
output:
  cancelled: "${{ steps.cancel.cancelled }}"
"#,
        r#"
name: no_output
version: 1.0.0
steps:
  - id: cancel
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "o-1"}
"#,
    ] {
        let pattern = document::parse(doc).unwrap();
        let (compiled, _) = nexus_core::compile(&pattern, &CATALOG, &NoPatterns).unwrap();
        patterns.insert(format!("{}@{}", compiled.name, compiled.version), Arc::new(compiled));
    }
    Registry(patterns)
});

pub struct Registry(HashMap<String, Arc<CompiledPattern>>);

impl PatternLookup for Registry {
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<CompiledPattern>> {
        let version = if version == "latest" { "1.0.0" } else { version };
        self.0.get(&format!("{name}@{version}")).cloned()
    }

    /// One registered event type: `user.created`, data `{email (required, string), age
    /// (integer), address {city}}`.
    fn event_schema(&self, event_type: &str) -> Option<nexus_core::input::InputSchema> {
        (event_type == "user.created").then(|| {
            nexus_core::input::InputSchema::new(serde_json::json!({
                "type": "object",
                "required": ["email"],
                "properties": {
                    "email": {"type": "string"},
                    "age": {"type": "integer"},
                    "address": {"type": "object", "properties": {"city": {"type": "string"}}}
                }
            }))
        })
    }
}

/// Parses and compiles `doc`; the diagnostics, one per line, must match `expect`.
///
/// A document that compiles starts with `ok` (followed by its warnings, if any); a document that
/// does not parse is one `document:` line with the parser's message.
pub fn check(doc: &str, expect: Expect) {
    expect.assert_eq(&render(doc));
}

pub fn render(doc: &str) -> String {
    let pattern = match document::parse(doc) {
        Ok(p) => p,
        Err(e) => return format!("document: {e}\n"),
    };
    let (ok, diags) = match nexus_core::compile(&pattern, &CATALOG, &*REGISTRY) {
        Ok((_, warnings)) => (true, warnings),
        Err(errors) => (false, errors),
    };
    let mut out = String::new();
    if ok {
        out.push_str("ok\n");
    }
    for d in &diags {
        out.push_str(&line(d));
    }
    out
}

/// `error: steps[1].with.owner_id: message`, the form the CLI prints.
fn line(d: &Diagnostic) -> String {
    format!("{d}\n")
}

/// Reads a document from `tests/data`.
pub fn data(name: &str) -> String {
    std::fs::read_to_string(manifest_dir().join("tests/data").join(name)).unwrap()
}

/// Reads a document from the repository's `patterns/`.
pub fn example(name: &str) -> String {
    std::fs::read_to_string(manifest_dir().join("../../patterns").join(name)).unwrap()
}

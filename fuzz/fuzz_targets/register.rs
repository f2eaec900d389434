//! Registration: a document (YAML or JSON) compiled and type checked against a fixed catalog —
//! the demo services (`proto/demo/**`) and the core tests' shop backend, each its own backend as
//! the server would plug them in — with the example patterns (`patterns/*.yaml`) registered so
//! that `pattern:NAME@VERSION` steps resolve, and one event type with a schema.
//!
//! Property: `nexus_core::compile` returns a plan or diagnostics and never panics, however wrong
//! the document (unknown actions, bad `with` blocks, cycles, bad CEL, bad schedules ...).

#![no_main]

use std::{collections::HashMap, sync::Arc, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use nexus_core::{Catalog, CompiledPattern, NoPatterns, PatternLookup, catalog::DescriptorSource, document, input};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(pattern) = document::parse(text) else { return };
    let (catalog, registry) = fixture();
    let _ = nexus_core::compile(&pattern, catalog, registry);
});

/// Patterns a step may call, keyed `name@version` (`latest` is the only version registered).
struct Registry(HashMap<String, Arc<CompiledPattern>>);

impl PatternLookup for Registry {
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<CompiledPattern>> {
        let exact = self.0.get(&format!("{name}@{version}"));
        let latest = || self.0.iter().find(|(k, _)| k.split('@').next() == Some(name)).map(|(_, v)| v);
        exact.or_else(|| if version == "latest" { latest() } else { None }).cloned()
    }

    fn event_schema(&self, event_type: &str) -> Option<input::InputSchema> {
        (event_type == "user.created").then(|| {
            input::InputSchema::new(serde_json::json!({
                "type": "object",
                "required": ["user_id"],
                "properties": {
                    "user_id": {"type": "string"},
                    "email": {"type": "string"},
                    "name": {"type": "string"},
                    "age": {"type": "integer"},
                    "address": {"type": "object", "properties": {"city": {"type": "string"}}}
                }
            }))
        })
    }
}

const EXAMPLES: &[&str] = &[
    include_str!("../../patterns/user_creation.yaml"),
    include_str!("../../patterns/subscribe_live_stream.yaml"),
    include_str!("../../patterns/welcome_series.yaml"),
];

fn fixture() -> (&'static Catalog, &'static Registry) {
    static FIXTURE: OnceLock<(Catalog, Registry)> = OnceLock::new();
    let (catalog, registry) = FIXTURE.get_or_init(|| {
        let fds = |bytes: &[u8]| match prost_types_fds(bytes) {
            Ok(fds) => fds,
            Err(e) => panic!("the descriptor set compiled by build.rs does not decode: {e}"),
        };
        let mut builder = Catalog::builder();
        let demo = fds(include_bytes!(concat!(env!("OUT_DIR"), "/demo.bin")));
        let shop = fds(include_bytes!(concat!(env!("OUT_DIR"), "/shop.bin")));
        if let Err(e) = builder.add_backend("demo", "http://demo", DescriptorSource::Protos, demo, &[]) {
            panic!("demo backend: {e}");
        }
        if let Err(e) = builder.add_backend("shop", "http://shop", DescriptorSource::Protos, shop, &[]) {
            panic!("shop backend: {e}");
        }
        let catalog = builder.build();
        let mut patterns = HashMap::new();
        for text in EXAMPLES {
            let pattern = match document::parse(text) {
                Ok(p) => p,
                Err(e) => panic!("an example pattern does not parse: {e}"),
            };
            match nexus_core::compile(&pattern, &catalog, &NoPatterns) {
                Ok((compiled, _)) => {
                    patterns.insert(format!("{}@{}", compiled.name, compiled.version), Arc::new(compiled));
                }
                // An example that calls another pattern does not compile without it: the fixture
                // simply does not offer it.
                Err(_) => {}
            }
        }
        (catalog, Registry(patterns))
    });
    (catalog, registry)
}

fn prost_types_fds(bytes: &[u8]) -> Result<prost_types::FileDescriptorSet, prost::DecodeError> {
    prost_types::FileDescriptorSet::decode(bytes)
}

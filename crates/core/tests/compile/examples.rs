//! Documents that compile: the example patterns shipped in `patterns/` against the demo protos,
//! and a test document using most features at once.

use expect_test::expect;

use crate::support::{check, data, example};

#[test]
fn user_creation() {
    check(
        &example("user_creation.yaml"),
        expect![[r#"
        ok
    "#]],
    );
}

#[test]
fn subscribe_live_stream() {
    check(
        &example("subscribe_live_stream.yaml"),
        expect![[r#"
        ok
    "#]],
    );
}

#[test]
fn every_feature() {
    check(
        &data("every_feature.yaml"),
        expect![[r#"
        ok
    "#]],
    );
}

/// What the expressions read of each step's output is known once compiled: a unary call's
/// response is then decoded with only those fields.
#[test]
fn a_step_output_is_read_as_far_as_the_expressions_read_it() {
    use nexus_core::wire::Reads;
    let compile = |doc: &str| {
        let pattern = nexus_core::document::parse(doc).unwrap();
        nexus_core::compile(&pattern, &crate::support::CATALOG, &*crate::support::REGISTRY).unwrap().0
    };
    let path = |names: &[&str]| {
        let mut reads = Reads::NONE;
        reads.add(names);
        reads
    };
    let plan = compile(&example("user_creation.yaml"));
    let reads: Vec<(&str, &Reads)> = plan.steps.iter().map(|s| (&*s.id, &s.reads)).collect();
    // `user`: its id, by the later steps, the compensation, the event and the output.
    // `avatar` and `welcome`: the fields the output maps. `announce` (an event): whole.
    assert_eq!(
        reads,
        [
            ("user", &path(&["user", "id"])),
            ("avatar", &path(&["asset", "url"])),
            ("welcome", &path(&["message_id"])),
            ("announce", &Reads::All),
        ]
    );
    // Reading a message whole (here in a comparison) reads all of it; so does a step in a
    // for_each, and every step of a pattern without an output mapping (whose output is all of
    // them).
    let doc = example("user_creation.yaml").replace(
        "avatar_url: \"${{ steps.avatar.asset.url }}\"",
        "avatar_url: \"${{ steps.avatar.asset == steps.avatar.asset ? steps.avatar.asset.url : '' }}\"",
    );
    assert_ne!(doc, example("user_creation.yaml"));
    assert_eq!(compile(&doc).steps[1].reads, path(&["asset"]));
    let unmapped = example("user_creation.yaml");
    let unmapped = &unmapped[..unmapped.find("output:").unwrap()];
    assert!(compile(unmapped).steps.iter().all(|s| s.reads == Reads::All));
}

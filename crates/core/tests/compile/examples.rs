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

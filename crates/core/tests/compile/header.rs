//! The pattern's own fields: name, version, visibility, durability, timeout, and the step limit.

use expect_test::expect;
use nexus_core::plan::MAX_STEPS;

use crate::support::check;

#[test]
fn empty_document() {
    check(
        "{}",
        expect![[r#"
        error: name: a pattern needs a name
        error: version: a pattern needs a semantic version such as 1.0.0
        error: steps: a pattern needs at least one step
    "#]],
    );
}

#[test]
fn invalid_header_fields() {
    check(
        r#"
name: Bad Name
version: "1.0"
visibility: secret
durability: forever
timeout: 0s
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
"#,
        expect![[r#"
            error: name: `Bad Name` is not a valid name: start with a lowercase letter, then lowercase letters, digits, `_`, `-` or `.` (at most 128)
            error: version: `1.0` is not a semantic version (MAJOR.MINOR.PATCH): unexpected end of input while parsing minor version number
            error: visibility: `secret` is not one of private, tenant, public
            error: durability: `forever` is not one of ephemeral, durable
            error: timeout: must be a positive duration such as "30s"
        "#]],
    );
}

#[test]
fn version_too_long() {
    let doc = format!(
        "name: t\nversion: 1.0.0-{}\nsteps:\n  - id: a\n    call: test.shop.v1.OrderService/CancelOrder\n",
        "x".repeat(100)
    );
    check(
        &doc,
        expect![[r#"
        error: version: `1.0.0-xxxxxxxxxxxxxxxxxx…` is 106 characters long; a version is at most 64
    "#]],
    );
}

#[test]
fn negative_timeout() {
    check(
        r#"
name: t
version: 1.0.0
timeout: -5s
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
"#,
        expect![[r#"
            error: timeout: must be a positive duration such as "30s"
        "#]],
    );
}

#[test]
fn too_many_steps() {
    let mut doc = String::from("name: t\nversion: 1.0.0\nsteps:\n");
    for i in 0..=MAX_STEPS {
        doc.push_str(&format!("  - {{id: s{i}, call: test.shop.v1.OrderService/CancelOrder}}\n"));
    }
    check(
        &doc,
        expect![[r#"
        error: steps: 257 steps; the limit is 256
    "#]],
    );
}

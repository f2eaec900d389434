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

#[test]
fn past_the_step_limit_nothing_else_is_checked() {
    // 20,000 steps, each calling nothing that exists: one diagnostic, not 20,001.
    let mut doc = String::from("name: t\nversion: 1.0.0\nsteps:\n");
    for i in 0..20_000 {
        doc.push_str(&format!("  - {{id: s{i}, call: no.such.Service/Nope}}\n"));
    }
    let started = std::time::Instant::now();
    check(
        &doc,
        expect![[r#"
        error: steps: 20000 steps; the limit is 256
    "#]],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn expressions_per_document_are_limited() {
    let mut doc = String::from(
        "name: t\nversion: 1.0.0\nsteps:\n  - id: a\n    call: test.shop.v1.OrderService/CancelOrder\n    with:\n",
    );
    for i in 0..2001 {
        doc.push_str(&format!("      f{i}: \"${{{{ input.x }}}}\"\n"));
    }
    check(
        &doc,
        expect![[r#"
        error: 2001 `${{ }}` expressions; a document may have at most 2000
    "#]],
    );
}

#[test]
fn description_owner_and_tags_are_bounded() {
    let doc = format!(
        "name: t\nversion: 1.0.0\ndescription: {}\nowner: {}\ntags: [{}, '', ok]\nsteps:\n  - id: a\n    call: test.shop.v1.OrderService/CancelOrder\n    with: {{order_id: x}}\n",
        "d".repeat(5000),
        "o".repeat(129),
        "t".repeat(65),
    );
    check(
        &doc,
        expect![[r#"
        error: description: 5000 bytes; a description is at most 4096
        error: owner: 129 characters; at most 128
        error: tags[0]: a tag has 1 to 64 characters; this one has 65
        error: tags[1]: a tag has 1 to 64 characters; this one has 0
    "#]],
    );
    let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    check(
        &format!(
            "name: t\nversion: 1.0.0\ntags: [{}]\nsteps:\n  - id: a\n    call: test.shop.v1.OrderService/CancelOrder\n    with: {{order_id: x}}\n",
            many.join(", ")
        ),
        expect![[r#"
        error: tags: 33 tags; at most 32
    "#]],
    );
}

#[test]
fn diagnostics_are_capped_and_each_is_bounded() {
    // 200 steps each with a problem: the first 100 are listed, then how many more there are.
    let mut doc = String::from("name: t\nversion: 1.0.0\nsteps:\n");
    for i in 0..200 {
        doc.push_str(&format!("  - {{id: s{i}, call: no.such.Service/Nope{i}}}\n"));
    }
    let Err(diags) = nexus_core::compile(
        &nexus_core::document::parse(&doc).expect("parses"),
        &crate::support::CATALOG,
        &nexus_core::NoPatterns,
    ) else {
        panic!("compiled")
    };
    assert_eq!(diags.len(), 101, "{diags:#?}");
    assert!(diags[100].message.starts_with("and 100 more problem(s) not listed (100 error(s))"), "{:?}", diags[100]);
    assert_eq!(diags[0].path, "steps[0].call");

    // A diagnostic quoting a huge value is cut.
    let long = format!("name: t\nversion: 1.0.0\nsteps:\n  - {{id: a, call: \"{}\"}}\n", "x".repeat(50_000));
    let Err(diags) = nexus_core::compile(
        &nexus_core::document::parse(&long).expect("parses"),
        &crate::support::CATALOG,
        &nexus_core::NoPatterns,
    ) else {
        panic!("compiled")
    };
    assert!(
        diags.iter().all(|d| d.message.len() < 1100),
        "{:?}",
        diags.iter().map(|d| d.message.len()).collect::<Vec<_>>()
    );
}

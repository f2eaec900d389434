//! Parse errors of the pattern document itself (document.rs), before any compilation.

use expect_test::expect;
use nexus_core::document::MAX_DOCUMENT_BYTES;

use crate::support::check;

#[test]
fn too_large() {
    let doc = format!("name: big\n# {}\n", "x".repeat(MAX_DOCUMENT_BYTES));
    check(
        &doc,
        expect![[r#"
        document: the document is 1048589 bytes; the limit is 1048576 bytes
    "#]],
    );
}

#[test]
fn not_yaml() {
    check(
        "name: [unclosed\n",
        expect![[r#"
        document: the document is not valid YAML or JSON: did not find expected ',' or ']' at line 2 column 1, while parsing a flow sequence at line 1 column 7
    "#]],
    );
}

#[test]
fn not_an_object() {
    check(
        "- name: a\n- name: b\n",
        expect![[r#"
        document: : a pattern document must be an object (name, version, steps, ...)
    "#]],
    );
}

#[test]
fn field_of_the_wrong_shape_names_its_path() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: a
    timeout: soon
"#,
        expect![[r#"
            document: steps[0].timeout: failed to parse duration
        "#]],
    );
}

#[test]
fn unknown_field() {
    check(
        "name: t\nstepz: []\n",
        expect![[r#"
        document: : unrecognized field name 'stepz'
    "#]],
    );
}

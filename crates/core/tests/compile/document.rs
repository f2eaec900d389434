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
        "name: t\nsteps: [{id: a}\n",
        expect![[r#"
            document: the document is not valid YAML or JSON: line 2, column 8 (in steps): unclosed bracket '['
        "#]],
    );
}

#[test]
fn not_an_object() {
    check(
        "- name: a\n- name: b\n",
        expect![[r#"
            document: line 1, column 1: a pattern document must be an object (name, version, steps, ...)
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
            document: steps[0].timeout (line 6, column 14): failed to parse duration
        "#]],
    );
}

#[test]
fn syntax_error_inside_a_field() {
    check(
        "name: t\nversion: 1.0.0\nsteps:\n  - id: a\n    with: {x: \"unterminated}\n",
        expect![[r#"
            document: the document is not valid YAML or JSON: line 5, column 15 (in steps[0].with): unclosed quote
        "#]],
    );
}

#[test]
fn duplicate_key() {
    check(
        "name: t\nversion: 1.0.0\nname: u\n",
        expect![[r#"
            document: the document is not valid YAML or JSON: line 3, column 1: the key `name` appears twice
        "#]],
    );
}

#[test]
fn aliases_are_bounded() {
    // A "billion laughs": each anchor ten of the one before.
    let mut doc = String::from(
        "name: t\nversion: 1.0.0\nsteps:\n  - id: a\n    with:\n      l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..9 {
        let p = i - 1;
        doc += &format!("      l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n");
    }
    check(
        &doc,
        expect![[r#"
            document: the document is not valid YAML or JSON: line 10, column 51 (in steps[0].with.l4[7][0][7][2]): the aliases (`*name`) of the document expand to more than the limit of 100000 nodes
        "#]],
    );
}

#[test]
fn unknown_field() {
    check(
        "name: t\nstepz: []\n",
        expect![[r#"
            document: unrecognized field name 'stepz'
        "#]],
    );
}

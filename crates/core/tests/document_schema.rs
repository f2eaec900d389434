//! The pattern document's JSON Schema: generated from the `nexus.v1.Pattern` descriptor,
//! committed as `schema/pattern.json` (what the examples' `yaml-language-server` line points
//! editors to), and every example pattern valid against it — checked with the `jsonschema` crate,
//! a validator we did not write.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::PathBuf;

use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const SCHEMA_LINE: &str = "# yaml-language-server: $schema=../schema/pattern.json";

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&nexus_core::schema::pattern_document_schema()).expect("the schema compiles")
}

fn errors(validator: &jsonschema::Validator, document: &Value) -> Vec<String> {
    validator.iter_errors(document).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&nexus_core::schema::pattern_document_schema()).unwrap() + "\n";
    let path = repo().join("schema/pattern.json");
    if std::env::var_os("NEXUS_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schema/pattern.json is not the schema generated from nexus.v1.Pattern: run \
         `NEXUS_UPDATE_SCHEMA=1 cargo nextest run -p nexus-core --test document_schema` and commit it"
    );
    let schema: Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    // Generated, with the proto's comments as descriptions.
    assert!(schema["properties"]["steps"]["items"]["properties"]["call"]["description"].as_str().is_some(), "{schema}");
}

#[test]
fn every_example_pattern_names_the_schema_and_is_valid_against_it() {
    let validator = validator();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("patterns")).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if path.extension().is_some_and(|e| e != "json") {
            assert_eq!(
                text.lines().next(),
                Some(SCHEMA_LINE),
                "{} does not start with the schema line",
                path.display()
            );
        }
        let document: Value = serde_saphyr::from_str(&text).unwrap();
        let problems = errors(&validator, &document);
        assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
        // And Nexus parses it (the schema is no stricter than the parser on valid documents).
        nexus_core::document::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} examples");
}

#[test]
fn mistakes_an_editor_should_underline_are_invalid() {
    let validator = validator();
    let base = || json!({"name": "p", "version": "1.0.0", "steps": [{"id": "a", "call": "x.y.S/M"}]});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("unknown key", json!({"stepz": []}), "/"),
        ("a number for a string", json!({"steps": [{"id": 1, "call": "x.y.S/M"}]}), "/steps/0/id"),
        ("a number for a duration", json!({"timeout": 5}), "/timeout"),
        ("a duration without unit", json!({"timeout": "5"}), "/timeout"),
        (
            "a negative unsigned",
            json!({"steps": [{"id": "a", "call": "c", "retry": {"max_attempts": -1}}]}),
            "/steps/0/retry/max_attempts",
        ),
        ("a list where an object goes", json!({"input": ["a"]}), "/input"),
        ("tags not strings", json!({"tags": [1]}), "/tags/0"),
        ("an unknown step key", json!({"steps": [{"id": "a", "cal": "x"}]}), "/steps/0"),
    ];
    for (what, change, at) in cases {
        let mut document = base();
        for (k, v) in change.as_object().unwrap() {
            document[k] = v.clone();
        }
        let problems = errors(&validator, &document);
        assert!(
            problems.iter().any(|p| p.starts_with(&format!("{at}:")) || (at == "/" && p.starts_with(": "))),
            "{what}: {problems:?}"
        );
    }
    assert!(errors(&validator, &base()).is_empty());
}

//! CEL templates and expressions (`nexus_core::expr`): compiled, then evaluated under a cost budget
//! and a deadline.
//!
//! Input: the first line is the source — a template string (`text ${{ expr }} text`, or one
//! `${{ expr }}`) and, read as a single-expression field (`when`, `for_each`), a bare expression;
//! the rest of the input is the JSON value bound to `input` (and, so that every variable has
//! something to read, to `item`, `event.data` and `steps.s`). When the rest is not JSON a fixed
//! value with lists, maps, strings and numbers is used.
//!
//! Property: compiling never panics; evaluating never panics and stops within the production
//! budget (`CostLimits::DEFAULT`, ~0.1 s of interpreter time per expression) or its deadline,
//! half a second away: well inside libFuzzer's 1 s `-timeout`, so an evaluation that the budget
//! does not stop is reported as a timeout.

#![no_main]

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use cel::Value as Cel;
use libfuzzer_sys::fuzz_target;
use nexus_core::{
    expr::{Budget, CostLimits, ExecutionVar, Expr, Scope, Template, parse_single},
    value,
};

const DEADLINE: Duration = Duration::from_millis(500);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (source, rest) = text.split_once('\n').unwrap_or((text, ""));
    let input = serde_json::from_str::<serde_json::Value>(rest).unwrap_or_else(|_| {
        serde_json::json!({
            "s": "hello", "n": 3, "f": 1.5, "b": true, "xs": [1, 2, 3], "ss": ["a", "b"],
            "m": {"a": 1, "b": {"c": "d"}}, "none": null
        })
    });

    let mut errors = Vec::new();
    let template = Template::compile(&serde_json::Value::String(source.to_string()), "t", &mut errors);
    // A `when`/`for_each` field: one `${{ }}` (the template's own expression: not compiled twice,
    // the CEL parser is most of the cost of an input) or a bare expression.
    let single = if source.contains("${{") {
        match &template {
            Template::Expr(e) => Some(e.clone()),
            _ => None,
        }
    } else {
        parse_single(source).ok()
    };

    let input = value::serde_to_cel(&input);
    let mut steps = HashMap::new();
    steps.insert(value::key("s"), input.clone());
    let execution = ExecutionVar::of(value::map(HashMap::from([
        (value::key("id"), Cel::String(Arc::new("exec-1".into()))),
        (value::key("attempt"), Cel::Int(1)),
    ])));
    let event = value::map(HashMap::from([
        (value::key("type"), Cel::String(Arc::new("user.created".into()))),
        (value::key("data"), input.clone()),
    ]));
    let budget = Budget::new(CostLimits::DEFAULT, Some(Instant::now() + DEADLINE));
    let scope = Scope {
        input: &input,
        steps: &steps,
        item: Some(&input),
        index: Some(0),
        execution: &execution,
        event: Some(&event),
        budget: Some(&budget),
    };

    let mut exprs = Vec::new();
    template.expressions("t", &mut exprs);
    let _ = template.is_costly();
    for (_, e) in &exprs {
        inspect(e);
    }
    if errors.is_empty() {
        if let Ok(v) = template.eval(&scope) {
            let _ = value::cel_to_serde(&v);
        }
    }
    if let Some(e) = single {
        inspect(&e);
        if let Ok(v) = e.eval(&scope) {
            let _ = value::cel_to_json_string(&v);
        }
        if let Some((_, other)) = e.correlation() {
            let _ = other.eval(&scope);
        }
    }
});

/// What registration asks of a compiled expression.
fn inspect(e: &Expr) {
    for r in e.references() {
        let _ = (r.to_string(), r.step());
    }
    let _ = (e.as_path(), e.syntax().is_some(), e.is_costly(), e.source());
}

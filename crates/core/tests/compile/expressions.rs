//! `${{ }}` expressions: compile errors (expr.rs), the variables each may read, and the paths
//! they read in steps' output messages.

use expect_test::expect;
use nexus_core::expr::MAX_EXPRESSION_BYTES;

use crate::support::check;

#[test]
fn expressions_that_do_not_compile() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ input. }}", reason: "${{ input.x"}
  - id: b
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ }}"}
    when: "x ${{ true }}"
  - id: c
    call: test.shop.v1.OrderService/CancelOrder
    when: "1 +"
    for_each: "${{ [1, }}"
"#,
        expect![[r#"
            error: steps[0].with.order_id: invalid CEL expression `input.`: at 1:7: Syntax error: no viable alternative at input '.'
            error: steps[0].with.reason: unterminated `${{`: every `${{` needs a closing `}}`
            error: steps[1].with.order_id: empty expression `${{ }}`
            error: steps[1].when: invalid CEL expression `x ${{ true }}`: must be exactly one `${{ expression }}` with no text around it
            error: steps[2].when: invalid CEL expression `1 +`: at 1:4: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}
            error: steps[2].for_each: invalid CEL expression `[1,`: at 1:4: Syntax error: missing ']' at '<EOF>'
        "#]],
    );
}

#[test]
fn expression_too_large() {
    let long = format!("'{}'", "x".repeat(MAX_EXPRESSION_BYTES));
    let doc = format!(
        "name: t\nversion: 1.0.0\nsteps:\n  - id: a\n    call: test.shop.v1.OrderService/CancelOrder\n    with: {{order_id: \"${{{{ {long} }}}}\"}}\n"
    );
    check(
        &doc,
        expect![[r#"
        error: steps[0].with.order_id: expression is 4098 bytes; the limit is 4096
    "#]],
    );
}

#[test]
fn variables_and_scopes() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ order.id }}", reason: "${{ item }}"}
  - id: b
    call: test.shop.v1.OrderService/CancelOrder
    for_each: "${{ [1, 2] }}"
    when: "${{ index > 0 }}"
    with: {order_id: "${{ string(item) + execution.id }}"}
  - id: c
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ string(steps) }}"}
"#,
        expect![[r#"
            error: steps[0].with.order_id: unknown variable `order`; expressions can read input, steps, item, index, execution, event
            error: steps[0].with.reason: `item` is only defined in the `with` of a for_each step
            error: steps[1].when: `index` is only defined in the `with` of a for_each step
            error: steps[2].with.order_id: read a step's output as `steps.<id>`
        "#]],
    );
}

#[test]
fn step_references() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: place
    call: test.shop.v1.OrderService/PlaceOrder
  - id: unknown_step
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.plac.order.id }}", reason: "${{ steps.zzzzzzzz.x }}"}
  - id: unknown_field
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.place.ordr.id }}", reason: "${{ steps.place.zzzzzzzz }}"}
  - id: scalar_field
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.place.order.id.value }}"}
  - id: own_output
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.own_output.cancelled }}"}
  - id: collected_stream
    call: test.shop.v1.OrderService/WatchOrder
  - id: reads_collected
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.collected_stream.status }}"}
"#,
        expect![[r#"
            error: steps[1].with.order_id: there is no step `plac` (did you mean `place`?); the steps are: collected_stream, own_output, place, reads_collected, scalar_field, unknown_field, unknown_step
            error: steps[1].with.reason: there is no step `zzzzzzzz`; the steps are: collected_stream, own_output, place, reads_collected, scalar_field, unknown_field, unknown_step
            error: steps[2].with.order_id: `steps.place` is a test.shop.v1.PlaceOrderResponse which has no field `ordr` (did you mean `order`?); its fields are: order
            error: steps[2].with.reason: `steps.place` is a test.shop.v1.PlaceOrderResponse which has no field `zzzzzzzz`; its fields are: order
            error: steps[3].with.order_id: `steps.place.order.id` is a string; it has no field `value`
            error: steps[4].with.order_id: step `own_output` reads its own output
            error: steps[4].with.order_id: field `order_id` expects a string, got bool (from `steps.own_output.cancelled`)
            error: steps[6].with.order_id: `steps.collected_stream` is a list of message test.shop.v1.OrderEvent; it has no field `status`
        "#]],
    );
}

#[test]
fn skipped_steps_must_be_guarded() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: maybe
    when: "${{ true }}"
    call: test.shop.v1.OrderService/PlaceOrder
  - id: unguarded
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.maybe.order.id }}"}
  - id: guarded
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ has(steps.maybe.order) ? steps.maybe.order.id : '' }}"}
  - id: ordered_only
    call: test.shop.v1.OrderService/CancelOrder
    depends_on: [maybe]
    with: {order_id: "o-1"}
"#,
        expect![[r#"
            error: steps[1].with.order_id: `steps.maybe.order.id` reads step `maybe`, which has a `when` and may be skipped; guard it, e.g. `has(steps.maybe.order.id) ? steps.maybe.order.id : ...`, or depend on it with depends_on only
        "#]],
    );
}

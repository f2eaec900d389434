//! `call: pattern:NAME@VERSION`: the `with` against the callee's input schema, `steps.X` against
//! the callee's output mapping.

use expect_test::expect;

use crate::support::check;

#[test]
fn with_fits_the_callee_input() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: sub
    call: pattern:cancel_order@1.0.0
    with: {ordr_id: x, reason: "${{ 'r' }}"}
  - id: latest
    call: pattern:cancel_order
    with: {order_id: x}
"#,
        expect![[r#"
            error: steps[0].with.ordr_id: pattern cancel_order@1.0.0: `input` has no property `ordr_id` (did you mean `order_id`?); the input schema declares: order_id, reason
            error: steps[0].with: pattern cancel_order@1.0.0 requires input `order_id`
        "#]],
    );
}

#[test]
fn reads_the_callee_output() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: sub
    call: pattern:cancel_order@1.0.0
    with: {order_id: x}
  - id: untyped
    call: pattern:no_output@1.0.0
  - id: reader
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.sub.canceled }}", reason: "${{ steps.sub.zzzzzzzz }}"}
  - id: fine
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.untyped.anything.at.all }}", reason: "${{ steps.sub.cancelled }}"}
"#,
        expect![[r#"
            error: steps[2].with.order_id: `steps.sub` has no `canceled` (did you mean `cancelled`?); the called pattern outputs: cancelled
            error: steps[2].with.reason: `steps.sub` has no `zzzzzzzz`; the called pattern outputs: cancelled
        "#]],
    );
}

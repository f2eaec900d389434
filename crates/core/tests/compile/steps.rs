//! Each step on its own: ids, what it calls, and its options (timeout, retry, for_each,
//! concurrency, stream, compensate).

use expect_test::expect;

use crate::support::check;

#[test]
fn ids() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - call: test.shop.v1.OrderService/CancelOrder
  - id: bad-id
    call: test.shop.v1.OrderService/CancelOrder
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
"#,
        expect![[r#"
            error: steps[0].id: every step needs an id
            error: steps[1].id: `bad-id` is not a valid id: use letters, digits and _ (so `steps.bad-id` reads it)
            error: steps[3].id: duplicate id `a` (first used by steps[2])
        "#]],
    );
}

#[test]
fn calls() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: no_call
  - id: misspelt
    call: test.shop.v1.OrderService/PlaceOrdr
  - id: unknown
    call: nowhere.Service/Nothing
  - id: client_streaming
    call: test.shop.v1.OrderService/UploadItems
  - id: unary_streamed
    call: test.shop.v1.OrderService/CancelOrder
    stream: true
  - id: missing_pattern
    call: pattern:missing@2.0.0
"#,
        expect![[r#"
            error: steps[0].call: every step needs a `call` (an action `package.Service/Method`), an `emit` or a `wait_for`
            error: steps[1].call: unknown action `test.shop.v1.OrderService/PlaceOrdr`: it is not in the catalog. Did you mean `test.shop.v1.OrderService/PlaceOrder`? (`nexus services` lists the actions; a pattern is called as `pattern:NAME@VERSION`)
            error: steps[2].call: unknown action `nowhere.Service/Nothing`: it is not in the catalog. (`nexus services` lists the actions; a pattern is called as `pattern:NAME@VERSION`)
            error: steps[3].call: `test.shop.v1.OrderService/UploadItems` is a client-streaming method; patterns can call unary and server-streaming methods
            error: steps[4].stream: `test.shop.v1.OrderService/CancelOrder` is not a server-streaming method
            error: steps[5].call: no registered pattern missing@2.0.0 to call (register it first; `nexus pattern list` shows what is registered)
        "#]],
    );
}

#[test]
fn timeout_and_retry() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
    timeout: 0s
    retry: {max_attempts: 101, multiplier: 0.5, retry_on: [UNAVAILABLE, UNAVAIL]}
"#,
        expect![[r#"
            error: steps[0].timeout: must be a positive duration such as "2s"
            error: steps[0].retry.max_attempts: at most 100 attempts
            error: steps[0].retry.multiplier: must be at least 1
            error: steps[0].retry.retry_on[1]: unknown gRPC code `UNAVAIL`; use one of CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED
        "#]],
    );
}

#[test]
fn fan_out_options() {
    check(
        r#"
name: t
version: 1.0.0
input: {type: object, properties: {ids: {type: array}}}
steps:
  - id: too_wide
    call: test.shop.v1.OrderService/CancelOrder
    for_each: "${{ input.ids }}"
    concurrency: 1001
    with: {order_id: "${{ item }}"}
  - id: streamed_fan_out
    call: test.shop.v1.OrderService/WatchOrder
    stream: true
    for_each: "${{ input.ids }}"
    with: {order_id: "${{ item }}"}
"#,
        expect![[r#"
            error: steps[0].concurrency: at most 1000
            error: steps[1].stream: a streaming step cannot also fan out with for_each
        "#]],
    );
}

#[test]
fn concurrency_without_for_each_is_a_warning() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
    concurrency: 5
"#,
        expect![[r#"
            ok
            warning: steps[0].concurrency: has no effect without for_each
        "#]],
    );
}

#[test]
fn compensations() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: streaming
    call: test.shop.v1.OrderService/PlaceOrder
    compensate: {call: test.shop.v1.OrderService/WatchOrder}
  - id: misspelt
    call: test.shop.v1.OrderService/PlaceOrder
    compensate: {call: test.shop.v1.OrderService/CancelOrdr}
  - id: unknown
    call: test.shop.v1.OrderService/PlaceOrder
    compensate: {call: nowhere.Service/Nothing}
  - id: bad_request
    call: test.shop.v1.OrderService/PlaceOrder
    compensate:
      call: test.shop.v1.OrderService/CancelOrder
      with: {order_id: "${{ steps.bad_request.order. }}", reason: "${{ steps.bad_request.order.id }}"}
  - id: wrong_type
    call: test.shop.v1.OrderService/PlaceOrder
    compensate:
      call: test.shop.v1.OrderService/CancelOrder
      with: {order_id: "${{ steps.wrong_type.order.total_cents }}"}
"#,
        expect![[r#"
            error: steps[0].compensate.call: `test.shop.v1.OrderService/WatchOrder` is a streaming method; compensations must be unary
            error: steps[1].compensate.call: unknown action `test.shop.v1.OrderService/CancelOrdr`: it is not in the catalog. Did you mean `test.shop.v1.OrderService/CancelOrder`?
            error: steps[2].compensate.call: unknown action `nowhere.Service/Nothing`: it is not in the catalog.
            error: steps[3].compensate.with.order_id: invalid CEL expression `steps.bad_request.order.`: at 1:25: Syntax error: no viable alternative at input '.'
            error: steps[4].compensate.with.order_id: field `order_id` expects a string, got int (from `steps.wrong_type.order.total_cents`)
        "#]],
    );
}

#[test]
fn compensation_reads_its_own_step() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: place
    call: test.shop.v1.OrderService/PlaceOrder
    compensate:
      call: test.shop.v1.OrderService/CancelOrder
      with: {order_id: "${{ steps.place.order.id }}"}
"#,
        expect![[r#"
            ok
        "#]],
    );
}

#[test]
fn every_pass_on_one_step_keeps_its_order() {
    // One step with a problem for nearly every pass: within a step the diagnostics come in the
    // order the passes run (sorting into document order is stable).
    check(
        r#"
name: t
version: 1.0.0
input: {type: object, properties: {name: {type: string}}}
steps:
  - id: a
    call: test.shop.v1.OrderService/PlaceOrder
    stream: true
    with:
      customer_id: "${{ input. }}"
      quantity: "${{ input.name }}"
      tags: ["${{ steps.maybe.order.id }}"]
      gift: "${{ steps.a.order }}"
    when: "${{ 1 + }}"
    concurrency: 2000
    compensate:
      call: test.shop.v1.OrderService/CancelOrder
      with: {order_id: "${{ steps.maybe.order.id }}", reason: "${{ input. }}", zzz: 1}
    timeout: 0s
    retry: {max_attempts: 500}
    depends_on: [a, nope]
  - id: maybe
    when: "${{ input.name == '' }}"
    call: test.shop.v1.OrderService/PlaceOrder
    depends_on: [a]
"#,
        expect![[r#"
            error: steps[0].stream: `test.shop.v1.OrderService/PlaceOrder` is not a server-streaming method
            error: steps[0].with.customer_id: invalid CEL expression `input.`: at 1:7: Syntax error: no viable alternative at input '.'
            error: steps[0].when: invalid CEL expression `1 +`: at 1:4: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}
            error: steps[0].concurrency: at most 1000
            warning: steps[0].concurrency: has no effect without for_each
            error: steps[0].compensate.with.reason: invalid CEL expression `input.`: at 1:7: Syntax error: no viable alternative at input '.'
            error: steps[0].timeout: must be a positive duration such as "2s"
            error: steps[0].retry.max_attempts: at most 100 attempts
            error: steps[0].with.gift: step `a` reads its own output
            error: steps[0].with.tags[0]: `steps.maybe.order.id` reads step `maybe`, which has a `when` and may be skipped; guard it, e.g. `has(steps.maybe.order.id) ? steps.maybe.order.id : ...`, or depend on it with depends_on only
            error: steps[0].compensate.with.order_id: `steps.maybe.order.id` reads step `maybe`, which has a `when` and may be skipped; guard it, e.g. `has(steps.maybe.order.id) ? steps.maybe.order.id : ...`, or depend on it with depends_on only
            error: steps[0].compensate.with.zzz: unknown field `zzz` in test.shop.v1.CancelOrderRequest; its fields are: order_id, reason
            error: steps[0].depends_on[0]: a step cannot depend on itself
            error: steps[0].depends_on[1]: there is no step `nope`; the steps are: a, maybe
            error: steps[0].with.gift: field `gift` expects a bool, got message test.shop.v1.Order (from `steps.a.order`)
            error: steps[0].with.quantity: field `quantity` expects an integer (int32), got string (from `input.name`)
            error: steps[0]: dependency cycle: maybe -> a -> maybe
        "#]],
    );
}

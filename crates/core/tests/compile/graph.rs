//! The step graph: explicit `depends_on`, dependencies inferred from `steps.X` reads, and cycles.

use expect_test::expect;

use crate::support::check;

#[test]
fn depends_on() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: place
    call: test.shop.v1.OrderService/PlaceOrder
    depends_on: [place, plac, zzzzzzzz]
"#,
        expect![[r#"
            error: steps[0].depends_on[0]: a step cannot depend on itself
            error: steps[0].depends_on[1]: there is no step `plac` (did you mean `place`?); the steps are: place
            error: steps[0].depends_on[2]: there is no step `zzzzzzzz`; the steps are: place
        "#]],
    );
}

#[test]
fn cycle_through_expressions() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.b.cancelled ? 'x' : 'y' }}"}
  - id: b
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.a.cancelled ? 'x' : 'y' }}"}
"#,
        expect![[r#"
            error: steps[0]: dependency cycle: b -> a -> b
        "#]],
    );
}

#[test]
fn cycles_through_depends_on_are_reported_once_each() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: root
    call: test.shop.v1.OrderService/CancelOrder
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
    depends_on: [root, c]
  - id: b
    call: test.shop.v1.OrderService/CancelOrder
    depends_on: [a]
  - id: c
    call: test.shop.v1.OrderService/CancelOrder
    depends_on: [b]
  - id: behind
    call: test.shop.v1.OrderService/CancelOrder
    depends_on: [c]
  - id: x
    call: test.shop.v1.OrderService/CancelOrder
    depends_on: [y]
  - id: y
    call: test.shop.v1.OrderService/CancelOrder
    depends_on: [x]
"#,
        expect![[r#"
            error: steps[1]: dependency cycle: b -> c -> a -> b
            error: steps[5]: dependency cycle: y -> x -> y
        "#]],
    );
}

#[test]
fn every_problem_in_one_round_trip() {
    // A cycle is reported alongside unrelated errors: validation never stops at the first.
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrdr
    depends_on: [b]
  - id: b
    call: test.shop.v1.OrderService/CancelOrder
    depends_on: [a]
    with: {order_id: 5}
output:
  x: "${{ steps.c }}"
"#,
        expect![[r#"
            error: steps[0].call: unknown action `test.shop.v1.OrderService/CancelOrdr`: it is not in the catalog. Did you mean `test.shop.v1.OrderService/CancelOrder`? (`nexus services` lists the actions; a pattern is called as `pattern:NAME@VERSION`)
            error: steps[0]: dependency cycle: b -> a -> b
            error: steps[1].with.order_id: expects a string, got number 5
            error: output.x: there is no step `c` (did you mean `a`?); the steps are: a, b
        "#]],
    );
}

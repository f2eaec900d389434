//! The input JSON Schema: problems with the schema itself (input.rs `lint`), and `input.*` paths
//! resolved against it (input.rs `resolve`).

use expect_test::expect;

use crate::support::check;

#[test]
fn schema_lint() {
    check(
        r#"
name: t
version: 1.0.0
input:
  type: objekt
  required: [a, c, 3]
  properties:
    a: {type: [string, nope]}
    b: 5
    list: {type: array, items: {type: 7}}
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
"#,
        expect![[r#"
            error: input.type: unknown type "objekt"; use one of string, integer, number, boolean, object, array, null
            error: input.properties.a.type: unknown type ["string","nope"]; use one of string, integer, number, boolean, object, array, null
            error: input.properties.b: a JSON Schema must be an object
            error: input.properties.list.items.type: unknown type 7; use one of string, integer, number, boolean, object, array, null
            error: input.required[1]: `c` is required but not declared in properties
            error: input.required[2]: must be a string
        "#]],
    );
}

#[test]
fn schema_lint_wrong_containers() {
    check(
        r#"
name: t
version: 1.0.0
input:
  type: object
  properties: 5
  required: a
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
"#,
        expect![[r#"
            error: input.properties: must be an object
            error: input.required: must be a list of property names
        "#]],
    );
}

#[test]
fn input_paths() {
    check(
        r#"
name: t
version: 1.0.0
input:
  type: object
  properties:
    order_id: {type: string}
    extra: {type: object, additionalProperties: true}
steps:
  - id: a
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ input.ordr_id }}"}
  - id: b
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ input.order_id.value }}"}
  - id: c
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ input.extra.anything }}"}
  - id: d
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ input.zzzzzzzz }}"}
"#,
        expect![[r#"
            error: steps[0].with.order_id: `input` has no property `ordr_id` (did you mean `order_id`?); the input schema declares: extra, order_id
            error: steps[1].with.order_id: `input.order_id` is String in the input schema, it has no `value`
            error: steps[3].with.order_id: `input` has no property `zzzzzzzz`; the input schema declares: extra, order_id
        "#]],
    );
}

//! `with` blocks checked against the action's input message (typecheck.rs): literal values,
//! expressions of known type, interpolated strings, nested objects and lists.

use expect_test::expect;

use crate::support::check;

/// A pattern whose single step `a` places an order with `with` (given as YAML flow mapping), after
/// a step `place` whose output (`steps.place.order`) gives values of message types.
fn place_order(with: &str) -> String {
    format!(
        r#"
name: t
version: 1.0.0
input:
  type: object
  properties: {{n: {{type: integer}}, name: {{type: string}}, ok: {{type: boolean}}}}
steps:
  - id: place
    call: test.shop.v1.OrderService/PlaceOrder
  - id: a
    call: test.shop.v1.OrderService/PlaceOrder
    with: {with}
"#
    )
}

#[test]
fn literal_scalars() {
    check(
        &place_order(
            r#"{custmer_id: x, zzzzzzzz: 1, quantity: 3000000000, seats: -1, total_cents: "12a", gift: "yes", weight: true, note: 5}"#,
        ),
        expect![[r#"
            error: steps[1].with.custmer_id: unknown field `custmer_id` in test.shop.v1.PlaceOrderRequest (did you mean `customer_id`?); its fields are: customer_id, items, tags, counts, priority, quantity, seats, total_cents, weight, gift, note, deliver_at, hold_for, metadata, max_parts, featured, extra
            error: steps[1].with.gift: expects a bool, got string "yes"
            error: steps[1].with.note: expects bytes, got number 5
            error: steps[1].with.quantity: 3000000000 is not a valid int32
            error: steps[1].with.seats: -1 is not a valid uint32
            error: steps[1].with.total_cents: "12a" is not an integer
            error: steps[1].with.weight: expects a number, got bool true
            error: steps[1].with.zzzzzzzz: unknown field `zzzzzzzz` in test.shop.v1.PlaceOrderRequest; its fields are: customer_id, items, tags, counts, priority, quantity, seats, total_cents, weight, gift, note, deliver_at, hold_for, metadata, max_parts, featured, extra
        "#]],
    );
}

#[test]
fn literal_enums_and_well_known_types() {
    check(
        &place_order(
            r#"{priority: PRIORITY_URGENT, deliver_at: yesterday, hold_for: 5 minutes, max_parts: "x", featured: 5, metadata: {any: thing}, extra: [1, {a: b}]}"#,
        ),
        expect![[r#"
            error: steps[1].with.deliver_at: "yesterday" is not an RFC 3339 timestamp: premature end of input
            error: steps[1].with.featured: expects a test.shop.v1.Item object, got number 5
            error: steps[1].with.hold_for: "5 minutes" is not a duration like "1.5s"
            error: steps[1].with.max_parts: expects an integer (int32), got string "x"
            error: steps[1].with.priority: "PRIORITY_URGENT" is not a value of test.shop.v1.Priority (one of: PRIORITY_UNSPECIFIED, PRIORITY_LOW, PRIORITY_HIGH)
        "#]],
    );
    check(
        &place_order(r#"{priority: 1.5}"#),
        expect![[r#"
        error: steps[1].with.priority: 1.5 is not an enum number
    "#]],
    );
}

#[test]
fn literal_containers() {
    check(
        &place_order(r#"{counts: 5, tags: hello, items: [{sku: 1, qty: 2}, 7], featured: {sku: [x]}}"#),
        expect![[r#"
            error: steps[1].with.counts: field `counts` expects a map, got number 5
            error: steps[1].with.featured.sku: expects a string, got a list
            error: steps[1].with.items[0].qty: unknown field `qty` in test.shop.v1.Item; its fields are: sku, quantity
            error: steps[1].with.items[0].sku: expects a string, got number 1
            error: steps[1].with.items[1]: expects a test.shop.v1.Item object, got number 7
            error: steps[1].with.tags: field `tags` expects a list, got string "hello"
        "#]],
    );
    check(
        &place_order(r#"{counts: {a: x}, customer_id: null, tags: [a, null]}"#),
        expect![[r#"
        error: steps[1].with.counts.a: expects an integer (int32), got string "x"
    "#]],
    );
}

#[test]
fn literals_that_fit() {
    check(
        &place_order(
            r#"{customer_id: c, quantity: 2, seats: 3, total_cents: "9007199254740993", weight: 1, gift: true, priority: PRIORITY_HIGH, deliver_at: "2024-01-01T00:00:00Z", hold_for: 1.5s, max_parts: 3, featured: {sku: s}, items: [{sku: s, quantity: 1}], tags: [a], counts: {a: 1}}"#,
        ),
        expect![[r#"
            ok
        "#]],
    );
}

#[test]
fn expressions_of_the_wrong_type() {
    check(
        &place_order(
            r#"{customer_id: "${{ input.n }}", counts: "${{ input.name }}", tags: "${{ input.name }}", items: "${{ steps.place.order.items }}", gift: "${{ input.name }}", weight: "${{ input.ok }}", featured: "${{ steps.place.order }}", priority: "${{ input.ok }}"}"#,
        ),
        expect![[r#"
            error: steps[1].with.counts: field `counts` expects a map, got string (from `input.name`)
            error: steps[1].with.customer_id: field `customer_id` expects a string, got int (from `input.n`)
            error: steps[1].with.featured: field `featured` expects a test.shop.v1.Item object, got message test.shop.v1.Order (from `steps.place.order`)
            error: steps[1].with.gift: field `gift` expects a bool, got string (from `input.name`)
            error: steps[1].with.priority: field `priority` expects an enum test.shop.v1.Priority name, got bool (from `input.ok`)
            error: steps[1].with.tags: field `tags` expects a list, got string (from `input.name`)
            error: steps[1].with.weight: field `weight` expects a number, got bool (from `input.ok`)
        "#]],
    );
    check(
        &place_order(r#"{tags: "${{ steps.place.order.items }}"}"#),
        expect![[r#"
        error: steps[1].with.tags: field `tags` items: expects a string, got message test.shop.v1.Item (from `steps.place.order.items`)
    "#]],
    );
}

#[test]
fn interpolation_is_a_string() {
    check(
        &place_order(r#"{gift: "yes ${{ input.name }}", customer_id: "c-${{ input.n }}"}"#),
        expect![[r#"
        error: steps[1].with.gift: field `gift` expects a bool, got string (text with ${{ }} is a string)
    "#]],
    );
}

#[test]
fn objects_in_expression_templates() {
    check(
        &place_order(
            r#"{featured: {sku: "${{ input.n }}", qty: "${{ input.n }}"}, tags: {a: "${{ input.name }}"}, quantity: {a: "${{ input.n }}"}, counts: {a: "${{ input.name }}", b: "${{ input.n }}"}}"#,
        ),
        expect![[r#"
            error: steps[1].with.counts.a: field `value` expects an integer (int32), got string (from `input.name`)
            error: steps[1].with.featured.qty: unknown field `qty` in test.shop.v1.Item; its fields are: sku, quantity
            error: steps[1].with.featured.sku: field `sku` expects a string, got int (from `input.n`)
            error: steps[1].with.quantity: field `quantity` expects an integer (int32), got an object
            error: steps[1].with.tags: field `tags` expects a list
        "#]],
    );
}

#[test]
fn lists_in_expression_templates() {
    check(
        &place_order(
            r#"{weight: ["${{ input.n }}"], tags: ["${{ input.n }}", "x ${{ input.n }}", {a: "${{ input.name }}"}, ["${{ input.name }}"]], items: ["x ${{ input.name }}", {sku: "${{ input.n }}"}, "${{ input.name }}"]}"#,
        ),
        expect![[r#"
            error: steps[1].with.items[0]: list item expects a test.shop.v1.Item object, got string
            error: steps[1].with.items[1].sku: field `sku` expects a string, got int (from `input.n`)
            error: steps[1].with.items[2]: list item expects a test.shop.v1.Item object, got string (from `input.name`)
            error: steps[1].with.tags[0]: list item expects a string, got int (from `input.n`)
            error: steps[1].with.tags[2]: list item a string, got an object
            error: steps[1].with.tags[3]: nested lists are not a protobuf type
            error: steps[1].with.weight: field `weight` is not a list
        "#]],
    );
}

#[test]
fn expressions_that_fit() {
    check(
        &place_order(
            r#"{customer_id: "${{ steps.place.order.customer_id }}", quantity: "${{ input.n }}", weight: "${{ input.n }}", total_cents: "${{ input.name }}", gift: "${{ input.ok }}", items: "${{ steps.place.order.items }}", featured: "${{ steps.place.order.items[0] }}", deliver_at: "${{ steps.place.order.placed_at }}", priority: "${{ steps.place.order.priority }}", metadata: "${{ steps.place.order.labels }}", extra: "${{ input.n }}", max_parts: "${{ input.n }}", tags: ["${{ input.name }}"]}"#,
        ),
        expect![[r#"
            ok
        "#]],
    );
}

#[test]
fn struct_field_takes_an_object_with_expressions() {
    // A `google.protobuf.Struct` holds any JSON object: its keys are map keys, not fields, whether
    // the values are literals or expressions.
    check(
        &place_order(r#"{metadata: {source: "${{ input.name }}", fixed: 1}}"#),
        expect![[r#"
        ok
    "#]],
    );
}

#[test]
fn expressions_typed_by_their_operators_and_literals() {
    check(
        &place_order(
            r#"{customer_id: "${{ 1 + 2 }}", gift: "${{ input.n > 2 }}", quantity: "${{ size(input.name) }}", note: "${{ input.ok ? 'a' : 'b' }}", total_cents: "${{ 'x' + input.name }}", weight: "${{ 2 * 3 }}", seats: "${{ input.n + 1 }}"}"#,
        ),
        expect![[r#"
            error: steps[1].with.customer_id: field `customer_id` expects a string, got int (from `1 + 2`)
        "#]],
    );
}

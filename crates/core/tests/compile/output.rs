//! The output mapping: its expressions compile and read existing steps and fields.

use expect_test::expect;

use crate::support::check;

#[test]
fn output_mapping() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: place
    call: test.shop.v1.OrderService/PlaceOrder
  - id: maybe
    when: "${{ false }}"
    call: test.shop.v1.OrderService/CancelOrder
output:
  broken: "${{ steps.place. }}"
  unknown_step: "${{ steps.plac.order }}"
  unknown_field: "${{ steps.place.order.idd }}"
  unknown_variable: "${{ item }}"
  nested: {ids: ["${{ steps.place.order.id }}", "${{ input.x }}"]}
  skipped_is_fine: "${{ steps.maybe.cancelled }}"
"#,
        expect![[r#"
            error: output.broken: invalid CEL expression `steps.place.`: at 1:13: Syntax error: no viable alternative at input '.'
            error: output.unknown_field: `steps.place.order` is a test.shop.v1.Order which has no field `idd` (did you mean `id`?); its fields are: id, customer_id, total_cents, items, priority, placed_at, labels
            error: output.unknown_step: there is no step `plac` (did you mean `place`?); the steps are: maybe, place
            error: output.unknown_variable: `item` is only defined in the `with` of a for_each step
        "#]],
    );
}

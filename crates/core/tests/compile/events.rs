//! Event steps (`emit`, `wait_for`) and `on:` triggers: what they may read, their options, and
//! that `steps.<wait>.…` is typed as an event.

use expect_test::expect;

use crate::support::{check, render};

#[test]
fn a_wait_and_an_emit_that_compile() {
    check(
        r#"
name: order_flow
version: 1.0.0
durability: durable
input: {type: object, properties: {customer: {type: string}}}
on:
  - event: cart.checked_out
    filter: "${{ event.data.total > 0 }}"
    input: {customer: "${{ event.data.customer }}"}
steps:
  - id: order
    call: test.shop.v1.OrderService/PlaceOrder
    with: {customer_id: "${{ input.customer }}"}
  - id: paid
    wait_for:
      event: payment.received
      match: "${{ event.data.order_id == steps.order.order.id }}"
      timeout: 1h
  - id: announce
    emit:
      type: order.paid
      subject: "${{ steps.order.order.id }}"
      data: {order_id: "${{ steps.order.order.id }}", amount: "${{ steps.paid.data.amount }}", by: "${{ steps.paid.source }}"}
  - id: cancel
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.announce.id }}", reason: "${{ steps.paid.type }}"}
"#,
        expect![[r#"
            document: steps[1].wait_for.timeout (line 18, column 16): failed to parse duration
        "#]],
    );
}

#[test]
fn the_correlation_of_a_match_is_found_either_way_round() {
    let doc = nexus_core::document::parse(
        r#"
name: t
version: 1.0.0
durability: durable
steps:
  - id: a
    wait_for: {event: x.y, match: "${{ input.id == event.data.id }}"}
  - id: b
    wait_for: {event: x.y, match: "${{ event.data.id == input.id && event.source == 'z' }}"}
  - id: c
    wait_for:
      any:
        - {event: x.y, match: "${{ event.subject == 'k' + input.id }}"}
        - {event: x.z}
"#,
    )
    .unwrap();
    let (p, _) = nexus_core::compile(&doc, &crate::support::CATALOG, &nexus_core::NoPatterns).unwrap();
    let wait = |i: usize| match &p.steps[i].target {
        nexus_core::Target::Wait(w) => w.clone(),
        _ => unreachable!(),
    };
    let a = wait(0);
    let c = a.branches[0].correlation.as_ref().unwrap();
    assert_eq!(c.event_path, ["data", "id"]);
    assert!(wait(1).branches[0].correlation.is_none(), "a conjunction is evaluated as a whole");
    let c = wait(2);
    assert_eq!(c.branches[0].correlation.as_ref().unwrap().event_path, ["subject"]);
    assert!(c.branches[1].matcher.is_none() && c.branches[1].correlation.is_none());
    assert_eq!(&*p.steps[2].call, "wait_for:x.y|x.z");
    assert_eq!(c.timeout, nexus_core::plan::DEFAULT_WAIT);
}

#[test]
fn event_steps_and_their_mistakes() {
    check(
        r#"
name: t
version: 1.0.0
steps:
  - id: both
    call: test.shop.v1.OrderService/CancelOrder
    emit: {type: a.b}
  - id: no_type
    emit: {data: {x: 1}}
  - id: bad_type
    emit: {type: "user created"}
  - id: options
    emit: {type: a.b}
    stream: true
    for_each: "${{ [1] }}"
    with: {x: 1}
  - id: ephemeral_wait
    wait_for: {event: a.b}
  - id: reads_event
    emit: {type: a.c, data: {x: "${{ event.id }}"}}
"#,
        expect![[r#"
            error: steps[0]: a step does one thing: `call`, `emit` or `wait_for`; split it into steps
            error: steps[1].emit.type: name the event type, e.g. `user.created`
            error: steps[2].emit.type: `user created` is not a valid event type: start with a letter or digit, then letters, digits, `.`, `_` or `-` (at most 128)
            error: steps[3].with: an emit step has no `with`
            error: steps[3].for_each: an emit step has no `for_each`
            error: steps[3].stream: an emit step has no `stream`
            error: steps[4].wait_for: wait_for needs `durability: durable`: a waiting execution is kept in the journal, where it survives restarts and holds no memory
            error: steps[5].emit.data.x: `event` is only defined in a trigger's `filter` and `input` and in a `wait_for` match; pass what the steps need through the trigger's `input`
        "#]],
    );
}

#[test]
fn wait_for_mistakes() {
    check(
        r#"
name: t
version: 1.0.0
durability: durable
steps:
  - id: nothing
    wait_for: {timeout: 1s}
  - id: both
    wait_for: {event: a.b, any: [{event: c.d}]}
  - id: bad_timeout
    wait_for: {event: a.b, timeout: 0s}
    retry: {max_attempts: 2}
    timeout: 1s
  - id: bad_match
    wait_for: {event: a.b, match: "${{ event.dta.x == 1 }}"}
  - id: reads_later
    wait_for:
      any:
        - {event: a.b, match: "${{ event.data.x == steps.nope.y }}"}
        - {event: "", match: "${{ event.data.x == input.q }}"}
  - id: typed
    call: test.shop.v1.OrderService/CancelOrder
    with: {order_id: "${{ steps.bad_match.nope }}"}
"#,
        expect![[r#"
            error: steps[0].wait_for: name the event to wait for (`event: TYPE`, optionally `match: ${{ … }}`), or `any: [...]`
            error: steps[1].wait_for: wait for one event (`event`, `match`) or the first of several (`any`), not both
            error: steps[2].wait_for.timeout: must be a positive duration of at most 366d, such as "1h"
            error: steps[2].retry: a wait_for step has no `retry`
            error: steps[2].timeout: a wait_for step's timeout is `wait_for.timeout`
            error: steps[3].wait_for.match: `event` is an event, which has no `dta` (did you mean `data`?); its fields are: id, source, type, subject, time, datacontenttype, data, tenant
            error: steps[4].wait_for.any[1].event: name the event type, e.g. `user.created`
            error: steps[4].wait_for.any[0].match: there is no step `nope`; the steps are: bad_match, bad_timeout, both, nothing, reads_later, typed
            error: steps[5].with.order_id: `steps.bad_match` is an event, which has no `nope` (did you mean `type`?); its fields are: id, source, type, subject, time, datacontenttype, data, tenant
        "#]],
    );
}

#[test]
fn triggers() {
    check(
        r#"
name: t
version: 1.0.0
input: {type: object, required: [email], properties: {email: {type: string}}}
on:
  - event: ""
  - event: user.created
    filter: "${{ input.plan == 'pro' }}"
  - event: user.created
    input: {mail: "${{ event.data.email }}"}
  - event: user.created
    filter: "${{ event.date.x }}"
    input: {email: "${{ event.data.email }}"}
steps:
  - id: s
    call: test.shop.v1.OrderService/CancelOrder
"#,
        expect![[r#"
            error: on[0].event: name the event type, e.g. `user.created`
            error: on[1].filter: a trigger reads only `event` (its fields: id, source, type, subject, time, datacontenttype, data, tenant); `input` is not defined here
            error: on[2].input.mail: `input` has no property `mail` (did you mean `email`?); the input schema declares: email
            error: on[2].input: the pattern requires input `email`; map it from the event
            error: on[3].filter: an event has no `date`; its fields are: id, source, type, subject, time, datacontenttype, data, tenant
        "#]],
    );
    // Without `input`, the event's data is the input: nothing to check at registration.
    assert_eq!(
        render(
            "name: t\nversion: 1.0.0\non: [{event: a.b}]\nsteps: [{id: s, call: test.shop.v1.OrderService/CancelOrder}]\n"
        ),
        "ok\n"
    );
}

#[test]
fn event_data_is_typed_by_a_registered_schema() {
    // `user.created` has a registered schema (see support.rs); `order.placed` has none, so its
    // `data` is `dyn`. A wait match reads its own branch's event type.
    check(
        r#"
name: welcome
version: 1.0.0
durability: durable
input: {type: object, properties: {email: {type: string}, city: {type: string}}}
on:
  - event: user.created
    filter: "${{ event.data.age > 17 && event.data.address.city != '' }}"
    input: {email: "${{ event.data.email }}", city: "${{ event.data.address.city }}"}
  - event: order.placed
    input: {email: "${{ event.data.whatever.deep }}"}
steps:
  - id: again
    wait_for:
      any:
        - {event: user.created, match: "${{ event.data.email == input.email }}"}
        - {event: order.placed, match: "${{ event.data.anything == input.email }}"}
  - id: note
    emit: {type: user.noted, data: {email: "${{ steps.again.data.whatever }}"}}
"#,
        expect![[r#"
            ok
        "#]],
    );
    check(
        r#"
name: welcome
version: 1.0.0
durability: durable
input: {type: object, properties: {email: {type: string}}}
on:
  - event: user.created
    filter: "${{ event.data.address.town != '' }}"
    input: {email: "${{ event.data.emial }}"}
steps:
  - id: again
    wait_for: {event: user.created, match: "${{ event.data.age.years > 1 && event.data.mail == input.email }}"}
"#,
        expect![[r#"
            error: on[0].filter: `event.data.address` of `user.created` has no property `town`; its schema declares: city
            error: on[0].input.email: `event.data` of `user.created` has no property `emial` (did you mean `email`?); its schema declares: email, age, address
            error: steps[0].wait_for.match: `event.data.age` of `user.created` is Integer in its schema, it has no `years`
            error: steps[0].wait_for.match: `event.data` of `user.created` has no property `mail` (did you mean `email`?); its schema declares: email, age, address
        "#]],
    );
}

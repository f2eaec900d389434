//! `schedule:` (cron): every diagnostic of the pass, and what the compiled plan answers —
//! the next tick in a time zone, and which tick is due after downtime.

#![allow(clippy::unwrap_used)] // test code: a broken fixture panics, which fails the test

use chrono::{DateTime, Utc};
use expect_test::expect;
use nexus_core::plan::{Due, Overlap};

use crate::support::{check, render};

fn compiled(schedule: &str) -> nexus_core::CompiledPattern {
    let doc = nexus_core::document::parse(&format!(
        "name: t\nversion: 1.0.0\nschedule: {schedule}\nsteps: [{{id: s, call: test.shop.v1.OrderService/CancelOrder}}]\n"
    ))
    .unwrap();
    nexus_core::compile(&doc, &crate::support::CATALOG, &nexus_core::NoPatterns).unwrap().0
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn schedules_that_compile() {
    let ok = |s: &str| {
        render(&format!(
            "name: t\nversion: 1.0.0\ninput: {{type: object, properties: {{x: {{type: string}}}}}}\nschedule: {s}\nsteps: [{{id: s, call: test.shop.v1.OrderService/CancelOrder}}]\n"
        ))
    };
    assert_eq!(ok(r#"{cron: "*/5 * * * *"}"#), "ok\n");
    assert_eq!(
        ok(r#"{cron: "0 */5 * * * *", timezone: Europe/Paris, overlap: buffer_one, catchup_window: 3600s}"#),
        "ok\n"
    );
    assert_eq!(ok(r#"{cron: "0 9 * * MON-FRI", overlap: allow_all}"#), "ok\n");
    assert_eq!(ok(r#"{cron: "@hourly"}"#), "ok\n");
}

#[test]
fn schedule_mistakes() {
    check(
        r#"
name: t
version: 1.0.0
input: {type: object, required: [email, name], properties: {email: {type: string}, name: {type: string}}}
schedule:
  cron: "61 * * * *"
  timezone: Mars/Olympus_Mons
  overlap: queue
  catchup_window: 3000000s
steps:
  - id: s
    call: test.shop.v1.OrderService/CancelOrder
"#,
        expect![[r#"
            error: schedule.cron: `61 * * * *` is not a cron expression (Number out of bounds): write 5 fields `minute hour day-of-month month day-of-week`, or 6 with `second` first
            error: schedule.timezone: `Mars/Olympus_Mons` is not an IANA time zone name such as `UTC`, `Europe/Paris` or `America/New_York`
            error: schedule.overlap: `queue` is not an overlap policy: use skip, buffer_one, allow_all
            error: schedule.catchup_window: must be a duration from 0s (missed ticks are skipped) to 31d, such as "3600s"
            error: schedule: a scheduled execution's input is `{}`, but the pattern requires `email`, `name`; make them optional or drop the schedule
        "#]],
    );
    check(
        r#"
name: t
version: 1.0.0
schedule: {cron: ""}
steps: [{id: s, call: test.shop.v1.OrderService/CancelOrder}]
"#,
        expect![[r#"
            error: schedule.cron: give a cron expression: 5 fields (`*/5 * * * *`) or 6 with seconds first (`0 */5 * * * *`)
        "#]],
    );
    check(
        r#"
name: t
version: 1.0.0
schedule: {cron: "0 0 0 * * * 2030"}
steps: [{id: s, call: test.shop.v1.OrderService/CancelOrder}]
"#,
        expect![[r#"
            error: schedule.cron: `0 0 0 * * * 2030` is not a cron expression (Pattern must have 5 or 6 fields when years are disallowed): write 5 fields `minute hour day-of-month month day-of-week`, or 6 with `second` first
        "#]],
    );
    check(
        r#"
name: t
version: 1.0.0
schedule: {cron: "0 0 30 2 *"}
steps: [{id: s, call: test.shop.v1.OrderService/CancelOrder}]
"#,
        expect![[r#"
            error: schedule.cron: `0 0 30 2 *` never matches a date
        "#]],
    );
    // Found from the fields, not by croner's search to the year 5000 (which took ~1 s: the
    // fuzzer's first finding, fuzz/regressions/register/). Loose bound: a debug build.
    let start = std::time::Instant::now();
    check(
        r#"
name: t
version: 1.0.0
schedule: {cron: "0 0 31 4,6,9,11 *"}
steps: [{id: s, call: test.shop.v1.OrderService/CancelOrder}]
"#,
        expect![[r#"
            error: schedule.cron: `0 0 31 4,6,9,11 *` never matches a date
        "#]],
    );
    assert!(start.elapsed() < std::time::Duration::from_millis(500), "{:?}", start.elapsed());
    // Leap days exist.
    check(
        r#"
name: t
version: 1.0.0
schedule: {cron: "0 0 29 2 *"}
steps: [{id: s, call: test.shop.v1.OrderService/CancelOrder}]
"#,
        expect![[r#"
            ok
        "#]],
    );
    check(
        r#"
name: t
version: 1.0.0
schedule: {cron: "* * * * *", catchup_window: -1s}
steps: [{id: s, call: test.shop.v1.OrderService/CancelOrder}]
"#,
        expect![[r#"
            error: schedule.catchup_window: must be a duration from 0s (missed ticks are skipped) to 31d, such as "3600s"
        "#]],
    );
}

#[test]
fn the_plan_has_the_defaults_and_finds_ticks_in_its_time_zone() {
    let p = compiled(r#"{cron: "*/5 * * * *"}"#);
    let s = p.schedule.as_ref().unwrap();
    assert_eq!(
        (s.timezone, s.overlap, s.catchup_window),
        (chrono_tz::Tz::UTC, Overlap::Skip, std::time::Duration::ZERO)
    );
    assert_eq!(s.next_after(at("2026-01-01T10:02:00Z")), Some(at("2026-01-01T10:05:00Z")));
    assert_eq!(s.next_after(at("2026-01-01T10:05:00Z")), Some(at("2026-01-01T10:10:00Z")), "strictly after");

    // Seconds first; 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    let p = compiled(r#"{cron: "30 0 9 * * *", timezone: Europe/Paris}"#);
    let s = p.schedule.as_ref().unwrap();
    assert_eq!(s.next_after(at("2026-01-15T12:00:00Z")), Some(at("2026-01-16T08:00:30Z")));
    assert_eq!(s.next_after(at("2026-07-15T12:00:00Z")), Some(at("2026-07-16T07:00:30Z")));
    assert!(compiled(r#"{cron: "* * * * *"}"#).triggers.is_empty());
}

#[test]
fn due_runs_the_latest_missed_tick_within_the_window_only() {
    let slack = std::time::Duration::from_secs(2);
    let no_catchup = compiled(r#"{cron: "0 * * * *"}"#);
    let s = no_catchup.schedule.as_ref().unwrap();
    let handled = at("2026-01-01T10:00:00Z");
    assert_eq!(s.due(handled, at("2026-01-01T10:59:59Z"), slack), Due::Nothing);
    assert_eq!(s.due(handled, at("2026-01-01T11:00:01Z"), slack), Due::Run(at("2026-01-01T11:00:00Z")), "on time");
    // Down from 10:30 to 13:20: 11:00, 12:00 and 13:00 were missed; without a window, skipped.
    assert_eq!(s.due(handled, at("2026-01-01T13:20:00Z"), slack), Due::Missed(at("2026-01-01T13:00:00Z")));

    let window = compiled(r#"{cron: "0 * * * *", catchup_window: 1800s}"#);
    let s = window.schedule.as_ref().unwrap();
    // 13:00 is 20 minutes old, within 30: it runs, once; 11:00 and 12:00 are skipped.
    assert_eq!(s.due(handled, at("2026-01-01T13:20:00Z"), slack), Due::Run(at("2026-01-01T13:00:00Z")));
    // 13:00 is 40 minutes old: missed too.
    assert_eq!(s.due(handled, at("2026-01-01T13:40:00Z"), slack), Due::Missed(at("2026-01-01T13:00:00Z")));
    assert_eq!(s.due(at("2026-01-01T13:00:00Z"), at("2026-01-01T13:20:00Z"), slack), Due::Nothing, "handled");
}

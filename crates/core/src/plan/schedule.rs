//! The `schedule:` of a pattern: a cron expression read in a time zone, an overlap policy and a
//! catch-up window, compiled into a [`SchedulePlan`] that answers "when is the next tick" and
//! "which tick is due now" (the scheduler in `nexus-server` does the rest).
//!
//! Cron parsing is [`croner`]'s rather than the `cron` crate's: `cron` requires the seconds
//! field (6 or 7 fields), where authors mostly write the classic 5; croner takes 5 or 6 (seconds
//! first, optional), finds the previous occurrence as well as the next (so the latest missed tick
//! after a long downtime is one lookup, not an iteration over every tick missed), is maintained,
//! and reads times in any `chrono` time zone — [`chrono_tz`] supplies the IANA database, compiled
//! in, so core still does no I/O.

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};

use crate::{diagnostic::Diagnostics, input::InputSchema, pb};

use super::model::to_duration;

/// The longest catch-up window.
pub const MAX_CATCHUP_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// What a tick does while the pattern's previous scheduled execution still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// The tick starts nothing.
    Skip,
    /// The tick waits (at most one does) and starts when the running execution ends.
    BufferOne,
    /// The tick starts another execution regardless.
    AllowAll,
}

impl Overlap {
    pub const NAMES: [&'static str; 3] = ["skip", "buffer_one", "allow_all"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "skip" => Some(Self::Skip),
            "buffer_one" => Some(Self::BufferOne),
            "allow_all" => Some(Self::AllowAll),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::BufferOne => "buffer_one",
            Self::AllowAll => "allow_all",
        }
    }
}

/// A compiled `schedule:`.
#[derive(Debug, Clone)]
pub struct SchedulePlan {
    /// The expression as written.
    pub expression: String,
    cron: croner::Cron,
    pub timezone: chrono_tz::Tz,
    pub overlap: Overlap,
    /// Zero: a missed tick is skipped.
    pub catchup_window: Duration,
}

/// What is due at one moment ([`SchedulePlan::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// No tick since the last one handled.
    Nothing,
    /// The latest tick since the last one handled, young enough to run (older ones are skipped).
    Run(DateTime<Utc>),
    /// The latest tick since the last one handled is older than the catch-up window (or the
    /// scheduler's slack when there is none): it and every older one are skipped, but it is
    /// handled (recorded as the last tick) so it is not looked at again.
    Missed(DateTime<Utc>),
}

impl SchedulePlan {
    /// The first tick strictly after `t`; `None` when there is none (an expression such as
    /// `0 0 30 2 *` that never matches, or past year 5000).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t.with_timezone(&self.timezone), false).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t.with_timezone(&self.timezone), true).ok().map(|d| d.with_timezone(&Utc))
    }

    /// What is due at `now` when every tick up to `handled` has been handled: the latest tick in
    /// (`handled`, `now`] runs when it is at most `catchup_window` old — or `slack` old, the
    /// scheduler's own lateness (its polling interval), whichever is longer — and is missed
    /// otherwise. Ticks older than the latest are skipped either way: catch-up runs one tick.
    pub fn due(&self, handled: DateTime<Utc>, now: DateTime<Utc>, slack: Duration) -> Due {
        let Some(latest) = self.latest_at_or_before(now) else { return Due::Nothing };
        if latest <= handled {
            return Due::Nothing;
        }
        let age = (now - latest).to_std().unwrap_or_default();
        if age <= self.catchup_window.max(slack) { Due::Run(latest) } else { Due::Missed(latest) }
    }
}

/// The `schedule:` of a document. A scheduled execution's input is `{}`, so the input schema may
/// require nothing.
pub(super) fn compile(doc: &pb::Pattern, input: &InputSchema, diags: &mut Diagnostics) -> Option<SchedulePlan> {
    let s = doc.schedule.as_ref()?;
    let cron = if s.cron.trim().is_empty() {
        diags.error(
            "schedule.cron",
            "give a cron expression: 5 fields (`*/5 * * * *`) or 6 with seconds first (`0 */5 * * * *`)",
        );
        None
    } else {
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build();
        match parser.parse(&s.cron) {
            Ok(c) => Some(c),
            Err(e) => {
                diags.error(
                    "schedule.cron",
                    format!(
                        "`{}` is not a cron expression ({}): write 5 fields `minute hour day-of-month month day-of-week`, or 6 with `second` first",
                        s.cron,
                        cron_error(&e)
                    ),
                );
                None
            }
        }
    };
    let timezone = if s.timezone.is_empty() {
        Some(chrono_tz::Tz::UTC)
    } else {
        match chrono_tz::Tz::from_str(&s.timezone) {
            Ok(tz) => Some(tz),
            Err(_) => {
                diags.error(
                    "schedule.timezone",
                    format!(
                        "`{}` is not an IANA time zone name such as `UTC`, `Europe/Paris` or `America/New_York`",
                        s.timezone
                    ),
                );
                None
            }
        }
    };
    let overlap = Overlap::parse(&s.overlap);
    if overlap.is_none() {
        diags.error(
            "schedule.overlap",
            format!("`{}` is not an overlap policy: use {}", s.overlap, Overlap::NAMES.join(", ")),
        );
    }
    let catchup_window = match s.catchup_window.as_ref().map(to_duration) {
        None => Some(Duration::ZERO),
        Some(Some(d)) if d <= MAX_CATCHUP_WINDOW => Some(d),
        Some(_) => {
            diags.error(
                "schedule.catchup_window",
                format!(
                    "must be a duration from 0s (missed ticks are skipped) to {}d, such as \"3600s\"",
                    MAX_CATCHUP_WINDOW.as_secs() / 86_400
                ),
            );
            None
        }
    };
    if let Some(required) = input.as_json().get("required").and_then(serde_json::Value::as_array) {
        let names: Vec<String> =
            required.iter().filter_map(serde_json::Value::as_str).map(|r| format!("`{r}`")).collect();
        if !names.is_empty() {
            diags.error(
                "schedule",
                format!(
                    "a scheduled execution's input is `{{}}`, but the pattern requires {}; make them optional or drop the schedule",
                    names.join(", ")
                ),
            );
        }
    }
    let plan = SchedulePlan {
        expression: s.cron.clone(),
        cron: cron?,
        timezone: timezone?,
        overlap: overlap?,
        catchup_window: catchup_window?,
    };
    // An expression that parses but never matches (`0 0 30 2 *`) would never fire. Impossible
    // dates are found from the fields: croner's own search goes on to the year 5000 first
    // (~1 s, at every registration).
    if !days_can_exist(&plan.cron.pattern) || plan.next_after(DateTime::<Utc>::UNIX_EPOCH).is_none() {
        diags.error("schedule.cron", format!("`{}` never matches a date", s.cron));
        return None;
    }
    Some(plan)
}

/// Whether the day-of-month and month fields name at least one real date. `false` only when the
/// days are plain numbers (no `L`, no `W`), the weekday cannot match on its own, and every day
/// named is past the end of every month named (`30 2`, `31 4,6,9,11`).
fn days_can_exist(p: &croner::CronPattern) -> bool {
    // croner's bits for `L` and `W` (its component module is private).
    const LAST_BIT: u8 = 1 << 6;
    const CLOSEST_WEEKDAY_BIT: u8 = 1 << 7;
    if p.is_dom_wildcard() || (!p.is_dow_wildcard() && !p.matches_dom_and_dow()) {
        return true;
    }
    if p.days.is_feature_enabled(LAST_BIT)
        || (1..=31).any(|d| p.days.is_bit_set(d, CLOSEST_WEEKDAY_BIT).unwrap_or(true))
    {
        return true;
    }
    const LONGEST: [u16; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=12u16).any(|m| {
        p.months.is_bit_set(m, 1).unwrap_or(true)
            && (1..=LONGEST[usize::from(m - 1)]).any(|d| p.days.is_bit_set(d, 1).unwrap_or(true))
    })
}

/// croner's messages start with their own type name ("Invalid pattern: …"); keep the part that
/// speaks about the expression.
fn cron_error(e: &croner::errors::CronError) -> String {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((_, rest)) => rest.trim_end_matches('.').to_string(),
        None => text.trim_end_matches('.').to_string(),
    }
}

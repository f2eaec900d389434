//! Human-readable output: tables, diagnostics and the step timeline of an execution.

use std::{borrow::Cow, fmt::Write};

use nexus_core::{pb, value};
use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};

/// Widest a padded column grows: longer values overflow it rather than widen the whole table
/// (and a width beyond what `format!` takes would panic).
const MAX_COLUMN: usize = 64;

/// The width of a column holding values of these lengths, at least `min`, at most [`MAX_COLUMN`].
fn column(lengths: impl Iterator<Item = usize>, min: usize) -> usize {
    lengths.max().unwrap_or(0).clamp(min, MAX_COLUMN.max(min))
}

/// Text made safe for a terminal: control characters other than newline and tab (ANSI escape
/// sequences, carriage returns, bells …) are shown escaped (`\u{1b}`), so nothing a server
/// returns — a pattern's description, an error message — can clear the screen or rewrite what
/// was printed.
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

pub fn diagnostics_report(diags: &[pb::Diagnostic]) -> String {
    let errors = diags.iter().filter(|d| d.severity != pb::Severity::Warning as i32).count();
    let mut out = format!("the pattern is invalid ({errors} problem{}):", if errors == 1 { "" } else { "s" });
    for d in diags {
        let level = if d.severity == pb::Severity::Warning as i32 { "warning" } else { "error" };
        let path = if d.path.is_empty() { "(document)" } else { &d.path };
        let _ = write!(out, "\n  {level}: {path}: {}", d.message);
    }
    out
}

pub fn pattern_table(patterns: &[pb::Pattern]) -> String {
    if patterns.is_empty() {
        return "no patterns registered (nexus pattern register FILE)\n".into();
    }
    let mut out =
        format!("{:<28} {:<10} {:<16} {:>5} {:<6} DESCRIPTION\n", "NAME", "VERSION", "OWNER", "STARS", "STEPS");
    for p in patterns {
        let _ = writeln!(
            out,
            "{:<28} {:<10} {:<16} {:>5} {:<6} {}",
            p.name,
            p.version,
            p.owner,
            p.stars,
            p.steps.len(),
            p.description
        );
    }
    out
}

/// A timestamp as RFC 3339 to the second, e.g. `2025-01-31T09:30:00Z`; `-` when unset.
pub fn timestamp(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "-".to_string(), |t| prost_types::Timestamp { seconds: t.seconds, nanos: 0 }.to_string())
}

/// The versions of a pattern: the name's facts, then one row per version.
pub fn versions(r: &pb::ListPatternVersionsResponse) -> String {
    let mut out = format!("{}\n", r.name);
    let owner = if r.tenant.is_empty() { r.owner.clone() } else { format!("{}/{}", r.tenant, r.owner) };
    let latest = if r.latest.is_empty() { "none (every version is deprecated)" } else { &r.latest };
    let _ = writeln!(out, "  owner        {owner}");
    let _ = writeln!(out, "  visibility   {}", r.visibility);
    if !r.forked_from.is_empty() {
        let _ = writeln!(out, "  forked from  {}", r.forked_from);
    }
    let _ = writeln!(out, "  stars        {}", r.stars);
    let _ = writeln!(out, "  latest       {latest}");
    let width = column(r.versions.iter().map(|v| v.version.len()), 7);
    let _ = writeln!(out, "\n{:<width$}  {:<20}  {:>10}  STATUS", "VERSION", "REGISTERED", "EXECUTIONS");
    for v in &r.versions {
        let status = match (v.deprecated, v.version == r.latest) {
            (true, _) if v.deprecation_reason.is_empty() => "deprecated".to_string(),
            (true, _) => format!("deprecated: {}", v.deprecation_reason),
            (false, true) => "latest".to_string(),
            (false, false) => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<20}  {:>10}  {status}",
            v.version,
            timestamp(v.registered_at.as_ref()),
            v.executions
        );
    }
    out
}

/// One change of a diff: `+ steps.audit`, `- steps.welcome`, `~ steps.user.timeout: "2s" -> "5s"`.
/// Added and removed steps are named only; other added or removed values are shown.
pub fn change_line(c: &pb::PatternChange) -> String {
    let whole_step = c.path.strip_prefix("steps.").is_some_and(|id| !id.contains('.'));
    let shown = |v: &str| if v.is_empty() { "(unset)".to_string() } else { v.to_string() };
    match pb::ChangeKind::try_from(c.kind) {
        Ok(pb::ChangeKind::Added) if whole_step || c.after.is_empty() => format!("+ {}", c.path),
        Ok(pb::ChangeKind::Added) => format!("+ {}: {}", c.path, c.after),
        Ok(pb::ChangeKind::Removed) if whole_step || c.before.is_empty() => format!("- {}", c.path),
        Ok(pb::ChangeKind::Removed) => format!("- {}: {}", c.path, c.before),
        Ok(pb::ChangeKind::Changed) => format!("~ {}: {} -> {}", c.path, shown(&c.before), shown(&c.after)),
        Ok(pb::ChangeKind::Unspecified) | Err(_) => {
            format!("? {}: {} -> {}", c.path, shown(&c.before), shown(&c.after))
        }
    }
}

/// The nodes of a graph answer (id, kind, deprecated), then its edges as `from -KIND-> to`.
pub fn graph(r: &pb::QueryGraphResponse) -> String {
    if r.nodes.is_empty() && r.edges.is_empty() {
        return "nothing found in the graph\n".into();
    }
    let width = column(r.nodes.iter().map(|n| n.id.len()), 4);
    let mut out = format!("{:<width$}  KIND\n", "NODE");
    for n in &r.nodes {
        let deprecated = if n.deprecated { "  deprecated" } else { "" };
        let _ = writeln!(out, "{:<width$}  {}{deprecated}", n.id, n.kind);
    }
    if !r.edges.is_empty() {
        out.push('\n');
        for e in &r.edges {
            let _ = writeln!(out, "{} -{}-> {}", e.from, e.kind, e.to);
        }
    }
    out
}

/// The identity the server sees.
pub fn principal(p: &pb::Principal) -> String {
    let roles = if p.roles.is_empty() { "(none)".to_string() } else { p.roles.join(", ") };
    format!(
        "tenant            {}\nsubject           {}\nroles             {roles}\nauthenticated by  {}\n",
        p.tenant, p.subject, p.authenticated_by
    )
}

pub fn services(services: &[pb::Service]) -> String {
    if services.is_empty() {
        return "the catalog is empty: plug backends in with `nexus serve --service NAME=URL`\n".into();
    }
    let mut out = String::new();
    for s in services {
        let _ = writeln!(out, "{}  ({} at {}, via {})", s.name, s.backend, s.endpoint, s.source);
        for a in &s.actions {
            let stream = if a.server_streaming { "stream " } else { "" };
            let _ = writeln!(out, "  {:<56} {} -> {stream}{}", a.name, a.input_type, a.output_type);
        }
    }
    out
}

/// What a catalog refresh found: per backend the actions added (`+`), removed (`-`) and changed
/// (`~`), then every pattern version that breaks with its diagnostics.
pub fn refresh(r: &pb::RefreshServicesResponse, dry_run: bool) -> String {
    let mut out = String::new();
    for b in &r.backends {
        if !b.error.is_empty() {
            let _ = writeln!(out, "{}: discovery failed, previous descriptors kept: {}", b.backend, b.error);
            continue;
        }
        if b.added.is_empty() && b.removed.is_empty() && b.changed.is_empty() {
            let _ = writeln!(out, "{}: no changes (via {})", b.backend, b.source);
            continue;
        }
        let _ = writeln!(out, "{}: (via {})", b.backend, b.source);
        for a in &b.added {
            let _ = writeln!(out, "  + {a}");
        }
        for a in &b.removed {
            let _ = writeln!(out, "  - {a}");
        }
        for c in &b.changed {
            let _ = writeln!(out, "  ~ {}: {}", c.action, c.change);
        }
    }
    let verb = if dry_run { "would break" } else { "broken" };
    for p in &r.broken {
        let _ = writeln!(out, "{verb}: {}@{}", p.name, p.version);
        for d in &p.diagnostics {
            let _ = writeln!(out, "  {}: {}", d.path, d.message);
        }
    }
    for p in &r.repaired {
        let _ = writeln!(out, "runs again: {p}");
    }
    let _ = writeln!(
        out,
        "{}",
        match (dry_run, r.applied) {
            (true, _) => "dry run: the catalog was not changed",
            (false, true) => "the refreshed catalog is in use",
            (false, false) => "nothing changed: the catalog stays as it was",
        }
    );
    out
}

fn status_name(s: i32) -> String {
    pb::ExecutionStatus::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("EXECUTION_STATUS_").to_string())
        .unwrap_or_else(|_| s.to_string())
}

fn step_status_name(s: i32) -> String {
    pb::StepStatus::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("STEP_STATUS_").to_string())
        .unwrap_or_else(|_| s.to_string())
}

fn ms(d: Option<&prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6)
}

fn ts_ms(t: Option<&prost_types::Timestamp>) -> Option<f64> {
    t.map(|t| t.seconds as f64 * 1e3 + f64::from(t.nanos) / 1e6)
}

/// The execution with each step on a time axis:
/// `✓ user   CreateUser   0.00 → 1.21 ms  ████`.
pub fn timeline(e: &pb::Execution) -> String {
    let total = ms(e.duration.as_ref()).max(0.001);
    let start = ts_ms(e.started_at.as_ref()).unwrap_or(0.0);
    let mut out = format!(
        "execution {} of {}@{}: {} in {:.2} ms\n",
        e.id,
        e.pattern_name,
        e.pattern_version,
        status_name(e.status),
        total
    );
    let width = 30.0;
    let id_w = column(e.steps.iter().map(|s| s.step_id.len()), 4);
    for s in &e.steps {
        let status = step_status_name(s.status);
        let mark = match status.as_str() {
            "SUCCEEDED" => "✓",
            "FAILED" => "✗",
            "SKIPPED" => "-",
            "CANCELLED" => "⊘",
            _ => "·",
        };
        let method = s.call.rsplit('/').next().unwrap_or(&s.call);
        match ts_ms(s.started_at.as_ref()) {
            Some(t) => {
                let from = (t - start).max(0.0);
                let to = from + ms(s.duration.as_ref());
                let lead = ((from / total) * width).round() as usize;
                let len = (((to - from) / total) * width).round().max(1.0) as usize;
                let attempts =
                    if s.attempts.len() > 1 { format!("  ({} attempts)", s.attempts.len()) } else { String::new() };
                let _ = writeln!(
                    out,
                    "  {mark} {:<id_w$}  {:<22} {:>8.2} → {:>8.2} ms  {}{}{attempts}",
                    s.step_id,
                    method,
                    from,
                    to,
                    " ".repeat(lead.min(width as usize)),
                    "█".repeat(len.min(width as usize)),
                );
            }
            None => {
                let _ = writeln!(out, "  {mark} {:<id_w$}  {:<22} {}", s.step_id, method, status.to_lowercase());
            }
        }
        if let Some(err) = &s.error {
            let _ = writeln!(out, "      {}: {}", err.code, err.message);
        }
    }
    if let Some(err) = &e.error {
        let _ = writeln!(out, "error: {}: {}", err.code, err.message);
    }
    if let Some(output) = &e.output {
        let json = value::struct_to_serde(output);
        let _ = writeln!(out, "output: {}", serde_json::to_string_pretty(&json).unwrap_or_default());
    }
    out
}

pub fn execution_table(executions: &[pb::Execution]) -> String {
    if executions.is_empty() {
        return "no executions yet\n".into();
    }
    let mut out = format!("{:<34} {:<28} {:<11} {:>10}\n", "ID", "PATTERN", "STATUS", "MS");
    for e in executions {
        let _ = writeln!(
            out,
            "{:<34} {:<28} {:<11} {:>10.2}",
            e.id,
            format!("{}@{}", e.pattern_name, e.pattern_version),
            status_name(e.status),
            ms(e.duration.as_ref())
        );
    }
    out
}

/// Any `nexus.v1` message as JSON (proto field names), through the API's descriptors.
pub fn message_json(message: &impl Message, type_name: &str) -> serde_json::Value {
    let Some(desc) = nexus_core::descriptor_pool().get_message_by_name(type_name) else {
        return serde_json::Value::Null;
    };
    let Ok(dynamic) = DynamicMessage::decode(desc, message.encode_to_vec().as_slice()) else {
        return serde_json::Value::Null;
    };
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new().use_proto_field_name(true))
        .unwrap_or(serde_json::Value::Null)
}

pub fn execution_json(e: &pb::Execution) -> String {
    message_json(e, "nexus.v1.Execution").to_string()
}

/// A pattern's events as YAML comments (so `pattern show` output stays a valid document): its
/// `on:` triggers, its schedule and the kind of each event step. Empty when it has none.
pub fn pattern_events(p: &pb::Pattern) -> String {
    // Expressions are shown on one line, whatever their layout in the document.
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let with = |word: &str, expr: &str| {
        if expr.trim().is_empty() { String::new() } else { format!(" [{word} {}]", one_line(expr)) }
    };
    let mut lines = Vec::new();
    for t in &p.on {
        let input = if t.input.is_some() { " (input mapped)" } else { "" };
        lines.push(format!("on: {}{}{input}", t.event, with("filter", &t.filter)));
    }
    if let Some(s) = &p.schedule {
        let tz = if s.timezone.is_empty() { "UTC" } else { s.timezone.as_str() };
        let overlap = if s.overlap.is_empty() { "skip" } else { s.overlap.as_str() };
        let catchup = s.catchup_window.as_ref().map(|d| format!(", catch-up {}s", d.seconds)).unwrap_or_default();
        lines.push(format!("schedule: {} ({tz}; overlap {overlap}{catchup})", one_line(&s.cron)));
    }
    for step in &p.steps {
        if let Some(e) = &step.emit {
            lines.push(format!("step {}: emit {}", step.id, e.r#type));
        }
        if let Some(w) = &step.wait_for {
            let timeout = w.timeout.as_ref().map(|d| format!(" (timeout {}s)", d.seconds)).unwrap_or_default();
            if w.any.is_empty() {
                lines.push(format!("step {}: wait_for {}{}{timeout}", step.id, w.event, with("match", &w.r#match)));
            } else {
                let branches: Vec<String> =
                    w.any.iter().map(|b| format!("{}{}", b.event, with("match", &b.r#match))).collect();
                lines.push(format!("step {}: wait_for any of {}{timeout}", step.id, branches.join(", ")));
            }
        }
    }
    lines.iter().map(|l| format!("# {l}\n")).collect()
}

/// One line per event of a followed execution.
pub fn event_line(e: &pb::ExecutionEvent) -> Option<String> {
    use pb::execution_event::Event as E;
    let err = |s: &pb::StepEvent| s.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default();
    Some(match e.event.as_ref()? {
        E::Started(s) => format!("execution {} of {}@{} started", e.execution_id, s.pattern_name, s.pattern_version),
        E::StepStarted(s) => format!("  ▶ {}", s.step_id),
        E::StepSucceeded(s) => format!("  ✓ {}  {:.2} ms", s.step_id, ms(s.duration.as_ref())),
        E::StepFailed(s) => format!("  ✗ {}  {}", s.step_id, err(s)),
        E::StepRetrying(s) => format!("  ↻ {}  attempt {} after {}", s.step_id, s.attempt, err(s)),
        E::StepSkipped(s) => format!("  - {}  skipped", s.step_id),
        E::StepCompensated(s) => match &s.error {
            Some(_) => format!("  ↶ {}  compensation failed: {}", s.step_id, err(s)),
            None => format!("  ↶ {}  compensated", s.step_id),
        },
        E::Message(m) => format!(
            "  ⤷ {} #{} {}",
            m.step_id,
            m.index,
            m.message.as_ref().map(|s| value::struct_to_serde(s).to_string()).unwrap_or_default()
        ),
        E::Finished(f) => {
            let status = status_name(f.status);
            let output = f.output.as_ref().map(|o| value::struct_to_serde(o).to_string()).unwrap_or_default();
            match &f.error {
                Some(err) => format!("{status}: {}: {}", err.code, err.message),
                None => format!("{status} {output}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: pb::ChangeKind, path: &str, before: &str, after: &str) -> String {
        change_line(&pb::PatternChange {
            kind: kind as i32,
            path: path.into(),
            before: before.into(),
            after: after.into(),
        })
    }

    #[test]
    fn diff_lines_name_steps_and_show_values() {
        use pb::ChangeKind::{Added, Changed, Removed};
        assert_eq!(change(Added, "steps.audit", "", r#"{"id":"audit"}"#), "+ steps.audit");
        assert_eq!(change(Removed, "steps.welcome", r#"{"id":"welcome"}"#, ""), "- steps.welcome");
        assert_eq!(
            change(Changed, "steps.user.timeout", r#""2s""#, r#""5s""#),
            r#"~ steps.user.timeout: "2s" -> "5s""#
        );
        assert_eq!(change(Added, "steps.user.with.locale", "", r#""en""#), r#"+ steps.user.with.locale: "en""#);
        assert_eq!(change(Removed, "output.id", r#""x""#, ""), r#"- output.id: "x""#);
        assert_eq!(
            change(Changed, "steps.a.when", "", r#""${{ true }}""#),
            r#"~ steps.a.when: (unset) -> "${{ true }}""#
        );
    }

    #[test]
    fn pattern_events_list_triggers_and_event_steps_as_comments() {
        let doc = nexus_core::document::parse(
            r#"
name: w
version: 1.0.0
on:
  - event: user.created
    filter: "${{ event.data.plan ==
      'pro' }}"
schedule: {cron: "0 */5 * * * *", timezone: Europe/Paris, overlap: buffer_one}
steps:
  - id: announce
    emit: {type: user.welcomed, data: {}}
  - id: verified
    wait_for: {event: user.verified, match: "${{ event.data.id == 'x' }}", timeout: 60s}
  - id: either
    wait_for: {any: [{event: a.done}, {event: b.done}]}
  - id: plain
    call: demo.users.v1.UserService/CreateUser
"#,
        )
        .unwrap();
        assert_eq!(
            pattern_events(&doc),
            "# on: user.created [filter ${{ event.data.plan == 'pro' }}]\n\
             # schedule: 0 */5 * * * * (Europe/Paris; overlap buffer_one)\n\
             # step announce: emit user.welcomed\n\
             # step verified: wait_for user.verified [match ${{ event.data.id == 'x' }}] (timeout 60s)\n\
             # step either: wait_for any of a.done, b.done\n"
        );
        assert_eq!(pattern_events(&pb::Pattern::default()), "");
    }

    #[test]
    fn timestamps_are_shown_to_the_second() {
        let t = prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_000_000 };
        assert_eq!(timestamp(Some(&t)), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp(None), "-");
    }
}

#[cfg(test)]
mod safety_tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_columns_stay_bounded() {
        assert_eq!(terminal_safe("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(terminal_safe("\u{1b}[2Jgone\r\u{7}"), "\\u{1b}[2Jgone\\u{d}\\u{7}");
        let r = pb::ListPatternVersionsResponse {
            name: "p".into(),
            versions: vec![pb::PatternVersion {
                version: format!("1.0.0-{}", "x".repeat(100_000)),
                ..Default::default()
            }],
            ..Default::default()
        };
        // Used to panic: "Formatting argument out of range" (a width over 65,535).
        assert!(versions(&r).contains("1.0.0-xxx"));
    }
}

/// `nexus suggest`: each suggestion with its evidence and gain.
pub fn suggestions(r: &pb::SuggestPatternsResponse, show: bool) -> String {
    let mut out = String::new();
    let took = r.took.as_ref().map_or(0.0, |d| d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6);
    if r.suggestions.is_empty() {
        out.push_str(&format!("no suggestions from {} executions ({took:.1} ms)\n", r.executions_analyzed));
        return out;
    }
    out.push_str(&format!(
        "{} suggestion(s) from {} executions ({took:.1} ms)\n",
        r.suggestions.len(),
        r.executions_analyzed
    ));
    for s in &r.suggestions {
        let kind = pb::SuggestionKind::try_from(s.kind)
            .map_or("UNKNOWN", |k| k.as_str_name())
            .trim_start_matches("SUGGESTION_KIND_")
            .to_ascii_lowercase();
        out.push_str(&format!("\n[{}] {} ({kind})\n", s.id, terminal_safe(&s.title)));
        out.push_str(&format!("  {}\n", terminal_safe(&s.rationale)));
        out.push_str(&format!("  support {} executions, confidence {:.0} %\n", s.support, s.confidence * 100.0));
        if let Some(g) = &s.gain
            && !g.summary.is_empty()
        {
            out.push_str(&format!("  gain: {}\n", terminal_safe(&g.summary)));
        }
        if !s.execution_ids.is_empty() {
            let shown: Vec<&str> = s.execution_ids.iter().take(3).map(String::as_str).collect();
            out.push_str(&format!(
                "  evidence: {}{}\n",
                shown.join(", "),
                if s.execution_ids.len() > 3 {
                    format!(" and {} more", s.execution_ids.len() - 3)
                } else {
                    String::new()
                }
            ));
        }
        for c in s.changes.iter().take(10) {
            out.push_str(&format!("  change: {}\n", terminal_safe(&c.path)));
        }
        if show {
            out.push_str("  ---\n");
            for line in s.yaml.lines() {
                out.push_str(&format!("  {}\n", terminal_safe(line)));
            }
        } else if let Some(p) = &s.pattern {
            out.push_str(&format!(
                "  pattern {} with {} step(s) (--show prints it)\n",
                terminal_safe(&p.name),
                p.steps.len()
            ));
        }
    }
    out
}

/// `nexus generate`: the candidates, best first.
pub fn generated(r: &pb::GeneratePatternResponse) -> String {
    let mut out = String::new();
    for (i, c) in r.candidates.iter().enumerate() {
        let Some(p) = &c.pattern else { continue };
        let calls: Vec<&str> = p.steps.iter().map(|s| s.call.rsplit('.').next().unwrap_or(&s.call)).collect();
        out.push_str(&format!(
            "#{} score {:.2} ({}): {}\n",
            i + 1,
            c.score,
            c.source,
            terminal_safe(&calls.join(" → "))
        ));
        for line in c.explanation.iter().take(12) {
            out.push_str(&format!("   {}\n", terminal_safe(line)));
        }
        if i == 0 {
            out.push_str("   ---\n");
            for line in c.yaml.lines() {
                out.push_str(&format!("   {}\n", terminal_safe(line)));
            }
        }
    }
    for note in &r.notes {
        out.push_str(&format!("note: {}\n", terminal_safe(note)));
    }
    out
}

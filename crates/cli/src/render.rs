//! Human-readable output: tables, diagnostics and the step timeline of an execution.

use std::fmt::Write;

use nexus_core::{pb, value};
use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};

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
    let mut out = format!("{:<28} {:<10} {:<16} {:<6} DESCRIPTION\n", "NAME", "VERSION", "OWNER", "STEPS");
    for p in patterns {
        let _ =
            writeln!(out, "{:<28} {:<10} {:<16} {:<6} {}", p.name, p.version, p.owner, p.steps.len(), p.description);
    }
    out
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
    let id_w = e.steps.iter().map(|s| s.step_id.len()).max().unwrap_or(4).max(4);
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

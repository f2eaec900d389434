//! From what mining found to complete pattern documents.
//!
//! The caller (the server) compiles each proposal against the catalog and the registry and drops
//! any that does not type-check; here they are only built. Documents are built as JSON in the
//! document format and converted with [`nexus_core::document::from_json`], so a proposal is
//! exactly what a person could have written.

use std::collections::{BTreeMap, BTreeSet};

use nexus_core::{document, pb};
use serde_json::{Map, Value, json};

use crate::mine::{Composite, Mined, SharedSequence, StepStats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Composite,
    SharedSubpattern,
    RetryPolicy,
    Parallelize,
    UnreadOutput,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Composite => "composite",
            Kind::SharedSubpattern => "shared_subpattern",
            Kind::RetryPolicy => "retry_policy",
            Kind::Parallelize => "parallelize",
            Kind::UnreadOutput => "unread_output",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Gain {
    pub calls_saved_per_run: f64,
    pub latency_saved_ms: f64,
    pub failures_avoided_per_1000: f64,
    pub summary: String,
}

#[derive(Debug, Clone)]
pub struct Proposal {
    pub kind: Kind,
    /// What it is about (for a stable id): pattern names, step ids, calls.
    pub subject: String,
    pub title: String,
    pub rationale: String,
    pub pattern: pb::Pattern,
    pub support: u64,
    pub confidence: f64,
    pub evidence: Vec<String>,
    pub based_on: Vec<String>,
    pub gain: Gain,
    /// For an improvement: the registered version it improves.
    pub improves: Option<pb::Pattern>,
}

/// The documents the caller may see, by name and version (`latest` is not resolved here).
pub trait Documents {
    fn get(&self, name: &str, version: &str) -> Option<pb::Pattern>;
    /// The latest version of each name the caller may see.
    fn latest(&self) -> Vec<pb::Pattern>;
}

/// Every proposal mining supports, best first within each kind.
pub fn proposals(mined: &Mined, docs: &dyn Documents) -> Vec<Proposal> {
    let mut out = Vec::new();
    for c in &mined.composites {
        if let Some(p) = composite(c, docs) {
            out.push(p);
        }
    }
    for s in &mined.shared {
        if let Some(p) = shared(s, docs) {
            out.push(p);
        }
    }
    for doc in docs.latest() {
        out.extend(improvements(&doc, mined));
    }
    out
}

fn identifier(name: &str) -> String {
    let mut id: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        id.insert_str(0, "p_");
    }
    id
}

fn properties(doc: &pb::Pattern) -> (Map<String, Value>, BTreeSet<String>) {
    let input = doc.input.as_ref().map(document_struct).unwrap_or(Value::Null);
    let props = input.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    let required = input
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    (props, required)
}

fn document_struct(s: &prost_types::Struct) -> Value {
    Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), prost_value(v))).collect())
}

fn prost_value(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind as K;
    match &v.kind {
        Some(K::NullValue(_)) | None => Value::Null,
        Some(K::NumberValue(n)) => json!(n),
        Some(K::StringValue(s)) => Value::String(s.clone()),
        Some(K::BoolValue(b)) => Value::Bool(*b),
        Some(K::StructValue(s)) => document_struct(s),
        Some(K::ListValue(l)) => Value::Array(l.values.iter().map(prost_value).collect()),
    }
}

fn output_keys(doc: &pb::Pattern) -> Vec<String> {
    doc.output.as_ref().map(|o| o.fields.keys().cloned().collect()).unwrap_or_default()
}

fn composite(c: &Composite, docs: &dyn Documents) -> Option<Proposal> {
    let parts: Vec<pb::Pattern> =
        c.patterns.iter().zip(&c.versions).map(|(n, v)| docs.get(n, v)).collect::<Option<_>>()?;
    let ids: Vec<String> = parts.iter().map(|p| identifier(&p.name)).collect();
    let mut properties_out = Map::new();
    let mut required_out: Vec<Value> = Vec::new();
    let mut steps = Vec::new();
    let mut output = Map::new();
    let mut skipped_optional = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let (props, required) = properties(part);
        let flowed: BTreeMap<&str, &str> = if i == 0 {
            BTreeMap::new()
        } else {
            c.flows[i - 1].iter().map(|f| (f.input.as_str(), f.output.as_str())).collect()
        };
        let mut with = Map::new();
        for (name, schema) in &props {
            if let Some(out) = flowed.get(name.as_str()) {
                with.insert(name.clone(), Value::String(format!("${{{{ steps.{}.{} }}}}", ids[i - 1], out)));
                continue;
            }
            if !required.contains(name) {
                // An optional input cannot be passed through when absent (null is not a value of
                // its type): left to the author.
                skipped_optional.push(format!("{}.{}", part.name, name));
                continue;
            }
            // The same name in two parts is one input of the composite (a user id both take).
            if !properties_out.contains_key(name) {
                properties_out.insert(name.clone(), schema.clone());
                required_out.push(Value::String(name.clone()));
            }
            with.insert(name.clone(), Value::String(format!("${{{{ input.{name} }}}}")));
        }
        let mut step = json!({"id": ids[i], "call": format!("pattern:{}@{}", part.name, part.version)});
        if !with.is_empty()
            && let Value::Object(o) = &mut step
        {
            o.insert("with".into(), Value::Object(with));
        }
        steps.push(step);
        for key in output_keys(part) {
            let name = if output.contains_key(&key) { format!("{}_{key}", ids[i]) } else { key.clone() };
            output.insert(name, Value::String(format!("${{{{ steps.{}.{key} }}}}", ids[i])));
        }
    }
    let name: String = ids.join("_then_").chars().take(120).collect();
    let doc = json!({
        "name": name,
        "version": "1.0.0",
        "description": format!("Runs {} as one pattern (suggested from usage).", c.patterns.join(" then ")).chars().take(1000).collect::<String>(),
        "durability": "ephemeral",
        "tags": ["suggested"],
        "input": {"type": "object", "required": required_out, "properties": properties_out},
        "steps": steps,
        "output": output,
    });
    let pattern = document::from_json(doc).ok()?;
    let flows: Vec<String> = c
        .flows
        .iter()
        .enumerate()
        .flat_map(|(i, fl)| fl.iter().map(move |f| (i, f)))
        .map(|(i, f)| format!("{}.{} → {}.{}", c.patterns[i], f.output, c.patterns[i + 1], f.input))
        .collect();
    let mut rationale = format!(
        "{} of {} executions of {} were followed within the window by {} taking {} ({:.0} %); the mean gap was {:.0} ms.",
        c.support,
        (f64::from(c.support) / c.confidence.max(1e-9)).round(),
        c.patterns[0],
        c.patterns[1..].join(" then "),
        flows.join(", "),
        c.confidence * 100.0,
        c.mean_gap_ms
    );
    if !skipped_optional.is_empty() {
        rationale.push_str(&format!(" Optional inputs not passed through: {}.", skipped_optional.join(", ")));
    }
    Some(Proposal {
        kind: Kind::Composite,
        subject: c.patterns.join(">"),
        title: format!("Run {} as one pattern", c.patterns.join(" then ")),
        rationale,
        pattern,
        support: u64::from(c.support),
        confidence: c.confidence,
        evidence: c.evidence.clone(),
        based_on: c.patterns.iter().zip(&c.versions).map(|(n, v)| format!("{n}@{v}")).collect(),
        gain: Gain {
            calls_saved_per_run: (c.patterns.len() - 1) as f64,
            latency_saved_ms: c.mean_gap_ms,
            failures_avoided_per_1000: 0.0,
            summary: format!(
                "{} fewer client round trip(s) per run; the client waited {:.0} ms on average between them",
                c.patterns.len() - 1,
                c.mean_gap_ms
            ),
        },
        improves: None,
    })
}

/// Every `steps.ID` that `text` names.
fn step_refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("steps.") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 6..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !id.is_empty() {
            out.push(id);
        }
    }
    out
}

/// Rewrites `steps.X` into `input.X` for every X in `outside`, in every string of `v`.
fn rewrite(v: &mut Value, outside: &BTreeSet<String>) {
    match v {
        Value::String(s) => {
            for id in step_refs(s) {
                if outside.contains(&id) {
                    *s = s
                        .replace(&format!("steps.{id}."), &format!("input.{id}."))
                        .replace(&format!("steps.{id} "), &format!("input.{id} "));
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite(i, outside)),
        Value::Object(o) => o.values_mut().for_each(|i| rewrite(i, outside)),
        _ => {}
    }
}

fn all_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| all_strings(i, out)),
        Value::Object(o) => o.values().for_each(|i| all_strings(i, out)),
        _ => {}
    }
}

fn shared(s: &SharedSequence, docs: &dyn Documents) -> Option<Proposal> {
    // The first holder whose document has the run as consecutive steps.
    let latest = docs.latest();
    let (doc, start) = s.patterns.iter().find_map(|(name, _)| {
        let doc = latest.iter().find(|d| d.name == *name)?;
        let calls: Vec<&str> = doc.steps.iter().map(|st| st.call.as_str()).collect();
        let at = calls.windows(s.calls.len()).position(|w| w.iter().zip(&s.calls).all(|(a, b)| *a == b))?;
        Some((doc.clone(), at))
    })?;
    let window = &doc.steps[start..start + s.calls.len()];
    let inside: BTreeSet<String> = window.iter().map(|st| st.id.clone()).collect();
    let full = document::to_json(&doc);
    let steps_json: Vec<Value> = full.get("steps").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut steps: Vec<Value> = steps_json[start..start + s.calls.len()].to_vec();
    let mut strings = Vec::new();
    for st in &steps {
        all_strings(st, &mut strings);
    }
    let outside: BTreeSet<String> =
        strings.iter().flat_map(|t| step_refs(t)).filter(|id| !inside.contains(id)).collect();
    let (source_props, source_required) = properties(&doc);
    let mut props = Map::new();
    let mut required = Vec::new();
    for id in &outside {
        props.insert(
            id.clone(),
            json!({"type": "object", "description": format!("the output of `{id}` in {}", doc.name)}),
        );
        required.push(Value::String(id.clone()));
    }
    for (name, schema) in &source_props {
        if strings.iter().any(|t| t.contains(&format!("input.{name}"))) {
            props.insert(name.clone(), schema.clone());
            if source_required.contains(name) {
                required.push(Value::String(name.clone()));
            }
        }
    }
    for st in &mut steps {
        rewrite(st, &outside);
        if let Value::Object(o) = st
            && let Some(Value::Array(deps)) = o.get_mut("depends_on")
        {
            deps.retain(|d| d.as_str().is_some_and(|d| inside.contains(d)));
        }
    }
    let output: Map<String, Value> =
        inside.iter().map(|id| (id.clone(), Value::String(format!("${{{{ steps.{id} }}}}")))).collect();
    let short = |c: &str| c.rsplit('/').next().unwrap_or(c).to_string();
    let name: String = format!(
        "shared_{}",
        s.calls.iter().map(|c| identifier(&short(c)).to_ascii_lowercase()).collect::<Vec<_>>().join("_")
    )
    .chars()
    .take(120)
    .collect();
    let pattern = document::from_json(json!({
        "name": name,
        "version": "1.0.0",
        "description": format!("Steps {} share (suggested from usage).", s.patterns.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join(", ")).chars().take(1000).collect::<String>(),
        "durability": "ephemeral",
        "tags": ["suggested"],
        "input": {"type": "object", "required": required, "properties": props},
        "steps": steps,
        "output": output,
    }))
    .ok()?;
    let holders: Vec<String> = s.patterns.iter().map(|p| p.0.clone()).collect();
    Some(Proposal {
        kind: Kind::SharedSubpattern,
        subject: s.calls.join(">"),
        title: format!(
            "Extract {} as a pattern {} patterns could call",
            s.calls.iter().map(|c| short(c)).collect::<Vec<_>>().join(" → "),
            holders.len()
        ),
        rationale: format!(
            "The steps {} run in this order in {} patterns ({}), {} executions in all; taken from {}.",
            s.calls.join(" → "),
            holders.len(),
            holders.join(", "),
            s.executions,
            doc.name
        ),
        pattern,
        support: s.executions,
        confidence: 1.0,
        evidence: s.evidence.clone(),
        based_on: holders.iter().map(|h| format!("{h}@latest")).collect(),
        gain: Gain {
            calls_saved_per_run: 0.0,
            latency_saved_ms: 0.0,
            failures_avoided_per_1000: 0.0,
            summary: format!("one definition of {} steps instead of {}", s.calls.len(), holders.len()),
        },
        improves: None,
    })
}

fn next_patch(version: &str) -> String {
    match semver::Version::parse(version) {
        Ok(mut v) => {
            v.patch = v.patch.saturating_add(1);
            v.pre = semver::Prerelease::EMPTY;
            v.to_string()
        }
        Err(_) => "1.0.1".into(),
    }
}

/// Verbs of methods that only read.
fn is_read(call: &str) -> bool {
    let method = call.rsplit('/').next().unwrap_or(call);
    ["Get", "List", "Search", "Check", "Describe", "Lookup", "Find", "Fetch", "Read", "Count"]
        .iter()
        .any(|v| method.starts_with(v))
}

fn improvements(doc: &pb::Pattern, mined: &Mined) -> Vec<Proposal> {
    let mut out = Vec::new();
    let runs = mined.executions.get(&doc.name).copied().unwrap_or(0);
    let stats = |step: &str| mined.steps.get(&(doc.name.clone(), step.to_string()));
    let base = |kind: Kind,
                subject: String,
                title: String,
                rationale: String,
                pattern: pb::Pattern,
                stat: Option<&StepStats>,
                gain: Gain| Proposal {
        kind,
        subject,
        title,
        rationale,
        pattern,
        support: stat.map_or(runs, |s| s.runs),
        confidence: 1.0,
        evidence: stat.map(|s| s.evidence.clone()).unwrap_or_default(),
        based_on: vec![format!("{}@{}", doc.name, doc.version)],
        gain,
        improves: Some(doc.clone()),
    };
    let mut texts: Vec<(usize, Vec<String>)> = Vec::new();
    let full = document::to_json(doc);
    if let Some(steps) = full.get("steps").and_then(Value::as_array) {
        for (i, st) in steps.iter().enumerate() {
            let mut t = Vec::new();
            all_strings(st, &mut t);
            texts.push((i, t));
        }
    }
    let mut output_texts = Vec::new();
    if let Some(o) = full.get("output") {
        all_strings(o, &mut output_texts);
    }
    for (i, step) in doc.steps.iter().enumerate() {
        let Some(stat) = stats(&step.id) else { continue };
        if stat.runs < 3 {
            continue;
        }
        // Retry policy: recovered by retries, or transient failures with no retry policy.
        let has_retry = step.retry.as_ref().is_some_and(|r| r.max_attempts > 1);
        let transient = stat.transient_failures as f64 / stat.runs as f64;
        if !has_retry && transient >= 0.01 && stat.transient_failures >= 3 {
            let mut next = doc.clone();
            next.version = next_patch(&doc.version);
            next.steps[i].retry = Some(pb::RetryPolicy {
                max_attempts: 3,
                initial_backoff: Some(prost_types::Duration { seconds: 0, nanos: 200_000_000 }),
                max_backoff: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
                ..Default::default()
            });
            out.push(base(
                Kind::RetryPolicy,
                format!("{}#{}", doc.name, step.id),
                format!("Retry step `{}` of {} on transient failures", step.id, doc.name),
                format!(
                    "{} of {} runs of `{}` ({}) failed on a transient code after a single attempt ({:.1} %); it has no retry policy.",
                    stat.transient_failures,
                    stat.runs,
                    step.id,
                    step.call,
                    transient * 100.0
                ),
                next,
                Some(stat),
                Gain {
                    failures_avoided_per_1000: transient * 1000.0,
                    summary: format!("up to {:.0} failed executions per 1,000 recovered", transient * 1000.0),
                    ..Default::default()
                },
            ));
        }
        // depends_on without a data dependency.
        for dep in &step.depends_on {
            let reads = texts.get(i).is_some_and(|(_, t)| t.iter().any(|s| step_refs(s).contains(dep)));
            if reads {
                continue;
            }
            let dep_ms = stats(dep).map_or(0.0, StepStats::mean_ms);
            let mut next = doc.clone();
            next.version = next_patch(&doc.version);
            next.steps[i].depends_on.retain(|d| d != dep);
            out.push(base(
                Kind::Parallelize,
                format!("{}#{}>{}", doc.name, dep, step.id),
                format!("Run `{}` of {} without waiting for `{}`", step.id, doc.name, dep),
                format!(
                    "`{}` waits for `{dep}` (depends_on) but reads nothing of it; `{dep}` took {dep_ms:.1} ms on average over {} runs. Keep the dependency if `{}` relies on a side effect of `{dep}`.",
                    step.id, stat.runs, step.id
                ),
                next,
                Some(stat),
                Gain { latency_saved_ms: dep_ms, summary: format!("up to {dep_ms:.1} ms per run"), ..Default::default() },
            ));
        }
        // A read whose result nothing reads.
        let is_plain_call = !step.call.is_empty() && step.emit.is_none() && step.wait_for.is_none() && !step.stream;
        let read_elsewhere =
            texts.iter().filter(|(j, _)| *j != i).any(|(_, t)| t.iter().any(|s| step_refs(s).contains(&step.id)))
                || output_texts.iter().any(|s| step_refs(s).contains(&step.id))
                || doc.steps.iter().any(|s| s.depends_on.contains(&step.id));
        if is_plain_call && is_read(&step.call) && !read_elsewhere && doc.steps.len() > 1 {
            let mut next = doc.clone();
            next.version = next_patch(&doc.version);
            next.steps.remove(i);
            let ms = stat.mean_ms();
            out.push(base(
                Kind::UnreadOutput,
                format!("{}#{}", doc.name, step.id),
                format!("Drop step `{}` of {}: nothing reads its result", step.id, doc.name),
                format!("`{}` calls {}, a read, in every run ({} runs, {ms:.1} ms on average), and no step or output reads it.", step.id, step.call, stat.runs),
                next,
                Some(stat),
                Gain { calls_saved_per_run: 1.0, latency_saved_ms: ms, summary: format!("one backend call and up to {ms:.1} ms per run"), ..Default::default() },
            ));
        }
    }
    out
}

//! SuggestPatterns and GeneratePattern: `nexus-ai` over what the caller may see.
//!
//! Both are CPU work (mining the history, searching the catalog) and run on the blocking pool,
//! never on a runtime worker that serves other calls. Both only ever propose: nothing is
//! registered, and every proposal is checked by `Registry::validate` with the caller's access
//! (sub-patterns they can see, restricted actions they may call) — a proposal that would not
//! register for this caller is never shown.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use nexus_ai::{mine, suggest};
use nexus_core::{NoPatterns, pb};
use nexus_engine::{ExecutionRecord, HistoryFilter, StepStatus};
use sha2::{Digest, Sha256};
use tonic::Request;

use super::{
    Api,
    access::{Asking, READ},
    principal,
};
use crate::{auth::Principal, convert, error::ApiError};

/// Most executions of the history one SuggestPatterns mines.
const MAX_MINED: usize = 100_000;
/// Most journaled (durable) executions added to them.
const MAX_JOURNALED: u32 = 10_000;

impl Api {
    pub(super) async fn suggest_patterns(
        &self,
        req: Request<pb::SuggestPatternsRequest>,
    ) -> Result<pb::SuggestPatternsResponse, ApiError> {
        let p = principal(&req)?;
        self.access.require(Asking { caller: &p, rpc: "SuggestPatterns" }, "executions", READ)?;
        let r = req.into_inner();
        if r.pattern_name.len() > 256 {
            return Err(ApiError::InvalidArgument("`pattern_name` is longer than 256 bytes".into()));
        }
        if !(0.0..=1.0).contains(&r.min_confidence) {
            return Err(ApiError::InvalidArgument(format!(
                "`min_confidence` is {}; it must be between 0 and 1",
                r.min_confidence
            )));
        }
        let started = Instant::now();
        let traces = self.traces(&p).await;
        let mut options = mine::MiningOptions::default();
        if r.min_support > 0 {
            options.min_support = r.min_support;
        }
        if r.min_confidence > 0.0 {
            options.min_confidence = r.min_confidence;
        }
        if let Some(w) = r.window {
            let window = Duration::new(w.seconds.max(0) as u64, w.nanos.max(0) as u32);
            if window.is_zero() || window > Duration::from_secs(7 * 24 * 3600) {
                return Err(ApiError::InvalidArgument("`window` must be more than 0 and at most 7 days".into()));
            }
            options.window_ms = window.as_millis() as u64;
        }
        let docs = Visible { registry: self.registry.clone(), caller: p.clone() };
        let analyzed = traces.len();
        let proposals = tokio::task::spawn_blocking(move || {
            let mined = mine::mine(&traces, &options);
            suggest::proposals(&mined, &docs)
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("mining stopped: {e}")))?;

        let kinds: Vec<pb::SuggestionKind> =
            r.kinds.iter().filter_map(|k| pb::SuggestionKind::try_from(*k).ok()).collect();
        let limit = match r.limit {
            0 => 20,
            n => (n as usize).min(100),
        };
        let mut suggestions = Vec::new();
        for proposal in proposals {
            let kind = kind_pb(proposal.kind);
            if !kinds.is_empty() && !kinds.contains(&kind) && !kinds.contains(&pb::SuggestionKind::Unspecified) {
                continue;
            }
            if !r.pattern_name.is_empty()
                && !proposal.based_on.iter().any(|b| b.split('@').next() == Some(r.pattern_name.as_str()))
            {
                continue;
            }
            // Only what would register for this caller.
            let Ok(warnings) = self.registry.validate(&proposal.pattern, &p) else { continue };
            suggestions.push(suggestion_pb(proposal, kind, &warnings));
            if suggestions.len() >= limit {
                break;
            }
        }
        Ok(pb::SuggestPatternsResponse {
            suggestions,
            executions_analyzed: analyzed as u64,
            took: Some(convert::duration(started.elapsed())),
        })
    }

    /// The caller's tenant's executions of patterns they may see: this node's history and the
    /// journal's durable executions (bounded).
    async fn traces(&self, p: &Principal) -> Vec<mine::Trace> {
        let filter = HistoryFilter { tenant: Some(p.tenant.to_string()), limit: MAX_MINED, ..Default::default() };
        let (records, _) = self.engine.history().list(&filter);
        let mut seen: std::collections::HashSet<String> = records.iter().map(|r| r.id.to_string()).collect();
        let mut traces: Vec<mine::Trace> = records
            .iter()
            .filter(|r| self.registry.visible_here(&r.pattern_name, p) == Some(true))
            .map(|r| trace(r))
            .collect();
        let query =
            nexus_store::ExecutionQuery { tenant: p.tenant.to_string(), limit: MAX_JOURNALED, ..Default::default() };
        match self.journal.list_executions(&query).await {
            Ok(rows) => {
                for row in rows {
                    let e = convert::listed_from_journal(&row);
                    if !seen.insert(e.id.clone()) || self.registry.visible_here(&e.pattern_name, p) != Some(true) {
                        continue;
                    }
                    traces.push(trace(&convert::record_from_journal(e)));
                }
            }
            Err(e) => {
                tracing::warn!("SuggestPatterns: listing journaled executions: {e}; mining this node's history only")
            }
        }
        traces
    }

    pub(super) async fn generate_pattern(
        &self,
        req: Request<pb::GeneratePatternRequest>,
    ) -> Result<pb::GeneratePatternResponse, ApiError> {
        let p = principal(&req)?;
        self.access.require(Asking { caller: &p, rpc: "GeneratePattern" }, "catalog", READ)?;
        let r = req.into_inner();
        let started = Instant::now();
        let field = |f: &pb::GoalField| nexus_ai::GoalField { name: f.name.clone(), ty: f.r#type.clone() };
        let goal = nexus_ai::Goal {
            text: r.goal.clone(),
            inputs: r.inputs.iter().map(field).collect(),
            outputs: r.outputs.iter().map(field).collect(),
            end_with: (!r.end_with.is_empty()).then(|| r.end_with.clone()),
            use_actions: r.use_actions.clone(),
            name: (!r.name.is_empty()).then(|| r.name.clone()),
        };
        if let Some(name) = &goal.name
            && (name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(ApiError::InvalidArgument(format!(
                "`name` `{}` is not a pattern name (letters, digits, `_` and `-`, at most 128)",
                name.chars().take(128).collect::<String>()
            )));
        }
        let index = self.registry.generation_index();
        let catalog = self.registry.catalog();
        // Actions used together by the patterns the caller can see rank such pairs higher.
        let visible = self.registry.visible_latest(&p);
        let mut together: HashMap<(String, String), u32> = HashMap::new();
        for doc in &visible {
            let calls: Vec<&str> = doc.steps.iter().map(|s| s.call.as_str()).filter(|c| !c.is_empty()).collect();
            for (i, a) in calls.iter().enumerate() {
                for b in &calls[i + 1..] {
                    let key = if a < b { (a.to_string(), b.to_string()) } else { (b.to_string(), a.to_string()) };
                    *together.entry(key).or_default() += 1;
                }
            }
        }
        let registry = self.registry.clone();
        let caller = p.clone();
        let limit = match r.limit {
            0 => 5,
            n => (n as usize).min(nexus_ai::synth::MAX_CANDIDATES),
        };
        let generated = tokio::task::spawn_blocking(move || {
            let allowed = |action: &str| registry.may_call(action, &caller);
            let options = nexus_ai::Options { limit, allowed: Some(&allowed), together: &together };
            nexus_ai::generate(&goal, &index, &catalog, &NoPatterns, &options)
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("generation stopped: {e}")))?
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;

        let mut candidates = Vec::new();
        for c in generated.candidates {
            // The caller's own check: what RegisterPattern would say for them.
            let Ok(warnings) = self.registry.validate(&c.pattern, &p) else { continue };
            let changes = self
                .registry
                .visible_document(&c.pattern.name, "latest", &p)
                .map(|before| nexus_core::diff::diff(&before, &c.pattern))
                .unwrap_or_default();
            candidates.push(pb::GeneratedCandidate {
                yaml: nexus_core::document::to_yaml(&c.pattern),
                pattern: Some(c.pattern),
                score: c.score,
                source: "synthesis".into(),
                explanation: c.explanation,
                diagnostics: warnings.iter().map(pb::Diagnostic::from).collect(),
                changes,
                repair_rounds: 0,
            });
        }
        let mut notes = vec![format!(
            "synthesis: {} candidate(s) type-checked in {:.1} ms over {} actions",
            candidates.len(),
            generated.elapsed.as_secs_f64() * 1e3,
            self.registry.generation_index().actions.len()
        )];
        if candidates.is_empty() {
            notes.push("no composition of the catalog's actions meets the goal: name the outputs it should have, an action to use (`use_actions`) or to end with (`end_with`), or the inputs it starts from".into());
        }
        match (&self.llm, r.offline) {
            (Some(llm), false) => {
                let asked = self.ask_llm(llm, &r, &p, &mut candidates).await;
                notes.push(asked);
            }
            (None, false) => {
                notes.push("no LLM provider is configured ([ai] llm_endpoint): offline synthesis only".into())
            }
            (_, true) => {}
        }
        Ok(pb::GeneratePatternResponse { candidates, took: Some(convert::duration(started.elapsed())), notes })
    }

    /// Asks the LLM provider for a document, validates it for the caller, and feeds the
    /// diagnostics back for at most `max_repair_rounds` more answers. A valid document joins the
    /// candidates (or confirms the synthesis candidate of the same shape); returns the note.
    async fn ask_llm(
        &self,
        llm: &crate::llm::LlmProvider,
        r: &pb::GeneratePatternRequest,
        p: &Principal,
        candidates: &mut Vec<pb::GeneratedCandidate>,
    ) -> String {
        let index = self.registry.generation_index();
        let actions = grounding(&index, r, candidates, |a| self.registry.may_call(a, p));
        let mut messages = vec![
            serde_json::json!({"role": "system", "content": LLM_SYSTEM}),
            serde_json::json!({"role": "user", "content": llm_goal(r, &actions)}),
        ];
        let model = llm.model().to_string();
        let mut last_problem = String::new();
        for round in 0..=llm.max_repair_rounds {
            let answer = match llm.chat(&messages).await {
                Ok(a) => a,
                Err(e) => return format!("llm ({model}): {e}"),
            };
            let problems: Vec<String> = match nexus_core::document::parse(crate::llm::extract_document(&answer)) {
                Err(e) => vec![format!("the document does not parse: {e}")],
                Ok(mut doc) => {
                    if !r.name.is_empty() {
                        doc.name = r.name.clone();
                    }
                    if doc.version.is_empty() {
                        doc.version = "1.0.0".into();
                    }
                    match self.registry.validate(&doc, p) {
                        Ok(warnings) => {
                            let shape = nexus_ai::canon::Shape::of(&doc);
                            if let Some(same) = candidates
                                .iter_mut()
                                .find(|c| c.pattern.as_ref().is_some_and(|d| nexus_ai::canon::Shape::of(d) == shape))
                            {
                                same.source = format!("{}+llm", same.source);
                                return format!(
                                    "llm ({model}): agrees with a synthesis candidate after {round} repair round(s)"
                                );
                            }
                            let changes = self
                                .registry
                                .visible_document(&doc.name, "latest", p)
                                .map(|before| nexus_core::diff::diff(&before, &doc))
                                .unwrap_or_default();
                            candidates.push(pb::GeneratedCandidate {
                                yaml: nexus_core::document::to_yaml(&doc),
                                pattern: Some(doc),
                                score: 0.0,
                                source: "llm".into(),
                                explanation: vec![format!(
                                    "proposed by {model}; validated after {round} repair round(s)"
                                )],
                                diagnostics: warnings.iter().map(pb::Diagnostic::from).collect(),
                                changes,
                                repair_rounds: round,
                            });
                            return format!("llm ({model}): 1 proposal, valid after {round} repair round(s)");
                        }
                        Err(diags) => diags.iter().take(20).map(|d| format!("{}: {}", d.path, d.message)).collect(),
                    }
                }
            };
            last_problem = problems.first().cloned().unwrap_or_default();
            messages.push(serde_json::json!({"role": "assistant", "content": answer}));
            messages.push(serde_json::json!({
                "role": "user",
                "content": format!(
                    "ValidatePattern rejected it:\n- {}\nUse only the actions and fields listed. Reply with the whole corrected document in one ```yaml block.",
                    problems.join("\n- ")
                ),
            }));
        }
        format!("llm ({model}): proposal rejected after {} repair round(s): {last_problem}", llm.max_repair_rounds)
    }
}

/// What the model is told about the document format.
const LLM_SYSTEM: &str = "You write pattern documents for Nexus, a gRPC orchestration gateway. A pattern is YAML with: \
name, version (1.0.0), description, durability: ephemeral, input (a JSON Schema object: type, required, properties), \
steps (each: id, call: one of the actions listed, with: the request's fields, each `${{ input.NAME }}` or \
`${{ steps.ID.FIELD_PATH }}` of an earlier step), and output (names mapped to `${{ ... }}`). Use only the actions \
listed and only the fields they list; a value must have the field's type. Reply with exactly one YAML document in a \
```yaml block and nothing else.";

/// The actions the model is shown: those the goal names, those synthesis used, and the ones
/// whose names share the most words with the goal (at most 40; only actions the caller may
/// call).
fn grounding(
    index: &nexus_ai::Index,
    r: &pb::GeneratePatternRequest,
    candidates: &[pb::GeneratedCandidate],
    may_call: impl Fn(&str) -> bool,
) -> Vec<String> {
    use nexus_ai::names::words;
    let mut goal_words: Vec<String> = words(&r.goal);
    for f in r.inputs.iter().chain(&r.outputs) {
        goal_words.extend(words(&f.name));
    }
    let named: Vec<&str> =
        r.use_actions.iter().map(String::as_str).chain(std::iter::once(r.end_with.as_str())).collect();
    let used: Vec<&str> = candidates
        .iter()
        .flat_map(|c| c.pattern.iter().flat_map(|p| p.steps.iter().map(|s| s.call.as_str())))
        .collect();
    let mut scored: Vec<(f64, &nexus_ai::index::ActionInfo)> = index
        .actions
        .iter()
        .filter(|a| may_call(&a.name))
        .map(|a| {
            let mut score = 0.0;
            if named.contains(&&*a.name) {
                score += 100.0;
            }
            if used.contains(&&*a.name) {
                score += 50.0;
            }
            score +=
                a.method_words.iter().chain(&a.service_words).filter(|w| goal_words.contains(w)).count() as f64 * 2.0;
            score +=
                a.offers.iter().filter(|o| goal_words.iter().any(|g| o.words.leaf.contains(g))).count() as f64 * 0.5;
            (score, a)
        })
        .filter(|(s, _)| *s > 0.0)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    scored
        .into_iter()
        .take(40)
        .map(|(_, a)| {
            let inputs: Vec<String> = a.slots.iter().map(|s| format!("{}: {}", s.name, s.ty)).collect();
            let outputs: Vec<String> = a.offers.iter().map(|o| format!("{}: {}", o.path, o.ty)).collect();
            format!("- {}({}) -> {{{}}}", a.name, inputs.join(", "), outputs.join(", "))
        })
        .collect()
}

fn llm_goal(r: &pb::GeneratePatternRequest, actions: &[String]) -> String {
    let field =
        |f: &pb::GoalField| if f.r#type.is_empty() { f.name.clone() } else { format!("{}: {}", f.name, f.r#type) };
    let mut text = String::new();
    if !r.goal.is_empty() {
        text.push_str(&format!("Goal: {}\n", r.goal));
    }
    if !r.inputs.is_empty() {
        text.push_str(&format!(
            "Inputs (exactly these): {}\n",
            r.inputs.iter().map(field).collect::<Vec<_>>().join(", ")
        ));
    }
    if !r.outputs.is_empty() {
        text.push_str(&format!(
            "Outputs (at least these names): {}\n",
            r.outputs.iter().map(field).collect::<Vec<_>>().join(", ")
        ));
    }
    if !r.use_actions.is_empty() {
        text.push_str(&format!("Must call: {}\n", r.use_actions.join(", ")));
    }
    if !r.end_with.is_empty() {
        text.push_str(&format!("The last step calls: {}\n", r.end_with));
    }
    if !r.name.is_empty() {
        text.push_str(&format!("Name: {}\n", r.name));
    }
    text.push_str("Actions (request fields) -> {response fields}:\n");
    text.push_str(&actions.join("\n"));
    text
}

/// The documents the caller may see, for the suggestion builder.
struct Visible {
    registry: Arc<crate::registry::Registry>,
    caller: Principal,
}

impl suggest::Documents for Visible {
    fn get(&self, name: &str, version: &str) -> Option<pb::Pattern> {
        self.registry.visible_document(name, version, &self.caller)
    }

    fn latest(&self) -> Vec<pb::Pattern> {
        self.registry.visible_latest(&self.caller)
    }
}

fn kind_pb(kind: suggest::Kind) -> pb::SuggestionKind {
    match kind {
        suggest::Kind::Composite => pb::SuggestionKind::Composite,
        suggest::Kind::SharedSubpattern => pb::SuggestionKind::SharedSubpattern,
        suggest::Kind::RetryPolicy => pb::SuggestionKind::RetryPolicy,
        suggest::Kind::Parallelize => pb::SuggestionKind::Parallelize,
        suggest::Kind::UnreadOutput => pb::SuggestionKind::UnreadOutput,
    }
}

fn suggestion_pb(
    p: suggest::Proposal,
    kind: pb::SuggestionKind,
    warnings: &[nexus_core::Diagnostic],
) -> pb::Suggestion {
    let id = {
        let digest = Sha256::digest(format!("{}:{}", p.kind.as_str(), p.subject).as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
    };
    let changes = p.improves.as_ref().map(|before| nexus_core::diff::diff(before, &p.pattern)).unwrap_or_default();
    pb::Suggestion {
        id,
        kind: kind as i32,
        title: p.title,
        rationale: p.rationale,
        yaml: nexus_core::document::to_yaml(&p.pattern),
        pattern: Some(p.pattern),
        support: p.support,
        confidence: p.confidence,
        execution_ids: p.evidence,
        based_on: p.based_on,
        gain: Some(pb::Gain {
            calls_saved_per_run: p.gain.calls_saved_per_run,
            latency_saved_ms: p.gain.latency_saved_ms,
            failures_avoided_per_1000: p.gain.failures_avoided_per_1000,
            summary: p.gain.summary,
        }),
        changes,
        diagnostics: warnings.iter().map(pb::Diagnostic::from).collect(),
    }
}

/// A record as mining sees it: identities of distinctive values, step outcomes.
fn trace(r: &ExecutionRecord) -> mine::Trace {
    let started_ms = r.started_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    mine::Trace {
        id: r.id.to_string(),
        tenant: r.tenant.to_string(),
        pattern: r.pattern_name.to_string(),
        version: r.pattern_version.to_string(),
        started_ms,
        ended_ms: started_ms + r.duration.as_millis() as u64,
        succeeded: r.status == nexus_engine::ExecutionStatus::Succeeded,
        input: values(&r.input.cel()),
        output: r.output.as_ref().map(|o| values(&o.cel())).unwrap_or_default(),
        steps: r
            .steps
            .iter()
            .filter(|s| s.status != StepStatus::Skipped && s.status != StepStatus::Pending)
            .map(|s| mine::StepTrace {
                step_id: s.step_id.to_string(),
                call: s.call.to_string(),
                succeeded: s.status == StepStatus::Succeeded,
                attempts: s.attempts.len().max(1) as u32,
                first_code: s.attempts.first().map_or("OK", |a| nexus_engine::code_name(a.code)).to_string(),
                duration_ms: s.duration.as_secs_f64() * 1e3,
            })
            .collect(),
    }
}

/// Top-level scalar values worth correlating, hashed. Read through the JSON mapping, so a value
/// gives the same text whether the record kept it as CEL or as JSON (the history keeps small
/// values as they are: a timestamp is its RFC 3339 text either way).
fn values(v: &cel::Value) -> Vec<(String, mine::ValueHash)> {
    let cel::Value::Map(m) = v else { return Vec::new() };
    let mut out = Vec::new();
    for (k, v) in m.map.iter() {
        let cel::objects::Key::String(k) = k else { continue };
        let text = match nexus_core::value::cel_to_serde(v) {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => continue,
        };
        if mine::correlatable(&text) {
            out.push((k.to_string(), mine::value_hash(&text)));
        }
    }
    out
}

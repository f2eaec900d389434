//! SuggestPatterns' mining: what callers really run, turned into patterns.
//!
//! - **Composites** — executions of one pattern whose input takes a value an execution of
//!   another pattern output shortly before (a `user_id` made by `user_creation` passed to
//!   `subscribe_live_stream`), in the same tenant, within a window. Each such flow is counted
//!   once per consuming execution; a pair (and a chain of three) of patterns with enough support
//!   and confidence becomes a pattern that calls them as sub-patterns, wiring the flow.
//! - **Shared sub-patterns** — step sequences (contiguous, by action) that recur in several
//!   patterns' executed steps: extracted as a pattern the others could call.
//! - **Improvements** — steps that fail and succeed on retry (or fail with a transient code and
//!   have no retry policy), `depends_on` without a data dependency, reads whose result nothing
//!   reads.
//!
//! One pass over the executions in start order with a hash map of recent output values: linear
//! in the executions (1,000,000 in well under the 10 s goal, see `nexus-eval mine`).

use std::collections::{BTreeMap, HashMap, HashSet};

/// A value compared by identity only (a hash of its canonical text), so a million executions'
/// values fit in memory.
pub type ValueHash = u64;

/// Hashes a value's canonical text (FNV-1a: fast, stable across runs and platforms).
pub fn value_hash(text: &str) -> ValueHash {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// One execution as mining sees it.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub id: String,
    pub tenant: String,
    pub pattern: String,
    pub version: String,
    /// Start and end, milliseconds since the epoch.
    pub started_ms: u64,
    pub ended_ms: u64,
    pub succeeded: bool,
    /// Top-level input fields with values worth correlating (strings of 4+ characters and
    /// integers of 4+ digits; booleans and small numbers say nothing).
    pub input: Vec<(String, ValueHash)>,
    pub output: Vec<(String, ValueHash)>,
    pub steps: Vec<StepTrace>,
}

#[derive(Debug, Clone, Default)]
pub struct StepTrace {
    pub step_id: String,
    pub call: String,
    pub succeeded: bool,
    pub attempts: u32,
    /// The gRPC code name of the first attempt (`OK`, `UNAVAILABLE` …).
    pub first_code: String,
    pub duration_ms: f64,
}

/// Whether a value is distinctive enough to correlate two executions by.
pub fn correlatable(text: &str) -> bool {
    text.len() >= 4 && !matches!(text, "true" | "false" | "null")
}

#[derive(Debug, Clone)]
pub struct MiningOptions {
    /// How long after A ends B may start and still count as its continuation.
    pub window_ms: u64,
    /// Least executions a suggestion rests on.
    pub min_support: u32,
    /// Least share of A's executions followed by B.
    pub min_confidence: f64,
    /// Evidence kept per suggestion.
    pub evidence: usize,
}

impl Default for MiningOptions {
    fn default() -> Self {
        Self { window_ms: 10 * 60 * 1000, min_support: 3, min_confidence: 0.2, evidence: 20 }
    }
}

/// A flow of one value: `from`'s output field into `to`'s input field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub output: String,
    pub input: String,
}

/// Patterns run one after another with data flowing between them.
#[derive(Debug, Clone)]
pub struct Composite {
    /// Two or three pattern names, in order.
    pub patterns: Vec<String>,
    /// The version of each seen most.
    pub versions: Vec<String>,
    /// For each link (patterns[i] → patterns[i+1]) the fields that flowed.
    pub flows: Vec<Vec<Flow>>,
    /// Consuming executions with the flow (of the last link).
    pub support: u32,
    /// support / executions of the first pattern.
    pub confidence: f64,
    pub evidence: Vec<String>,
    /// Mean time between the first's end and the last's start, ms (what running them as one
    /// saves a client in round trips and think time).
    pub mean_gap_ms: f64,
}

/// A step sequence several patterns share.
#[derive(Debug, Clone)]
pub struct SharedSequence {
    pub calls: Vec<String>,
    /// The patterns whose executed steps contain it, with the step ids where it starts.
    pub patterns: Vec<(String, usize)>,
    /// Executions that ran it.
    pub executions: u64,
    pub evidence: Vec<String>,
}

/// Per step of a pattern: how its executions went.
#[derive(Debug, Clone, Default)]
pub struct StepStats {
    pub runs: u64,
    /// Succeeded after more than one attempt.
    pub recovered_by_retry: u64,
    /// Failed on a transient code (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
    /// ABORTED) after a single attempt.
    pub transient_failures: u64,
    pub total_ms: f64,
    pub evidence: Vec<String>,
}

impl StepStats {
    pub fn mean_ms(&self) -> f64 {
        if self.runs == 0 { 0.0 } else { self.total_ms / self.runs as f64 }
    }
}

#[derive(Debug, Default)]
pub struct Mined {
    pub composites: Vec<Composite>,
    pub shared: Vec<SharedSequence>,
    /// (pattern, step id) → stats.
    pub steps: BTreeMap<(String, String), StepStats>,
    /// Executions per pattern.
    pub executions: HashMap<String, u64>,
    pub analyzed: usize,
}

/// Mines `traces` (any order; one tenant's or several — flows never cross tenants).
pub fn mine(traces: &[Trace], options: &MiningOptions) -> Mined {
    let mut order: Vec<usize> = (0..traces.len()).collect();
    order.sort_by_key(|&i| traces[i].started_ms);

    let mut mined = Mined { analyzed: traces.len(), ..Default::default() };
    for t in traces {
        *mined.executions.entry(t.pattern.clone()).or_default() += 1;
    }
    mined.composites = composites(traces, &order, options, &mined.executions);
    mined.shared = shared_sequences(traces, options);
    mined.steps = step_stats(traces, options);
    mined
}

/// Where a value was last output: (trace, field).
struct Seen {
    trace: u32,
    field: u32,
    ended_ms: u64,
}

fn composites(
    traces: &[Trace],
    order: &[usize],
    options: &MiningOptions,
    executions: &HashMap<String, u64>,
) -> Vec<Composite> {
    // Interned field names keep the hot map small.
    let mut fields: Vec<&str> = Vec::new();
    let mut field_ids: HashMap<&str, u32> = HashMap::new();
    let mut recent: HashMap<(&str, ValueHash), Seen> = HashMap::new();
    // For each consuming trace, its predecessor trace (for chains of three).
    let mut predecessor: HashMap<u32, u32> = HashMap::new();
    #[derive(Default)]
    struct Pair {
        support: u32,
        flows: BTreeMap<Flow, u32>,
        evidence: Vec<String>,
        gap_total: f64,
    }
    let mut pairs: HashMap<(&str, &str), Pair> = HashMap::new();
    let mut chains: HashMap<(&str, &str, &str), Pair> = HashMap::new();

    // Traces are visited by start; an output is visible to traces starting after it ended.
    // Pending outputs wait in a min-heap by end time.
    let mut pending: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u32)>> = std::collections::BinaryHeap::new();
    for &b in order {
        let tb = &traces[b];
        while let Some(std::cmp::Reverse((ended, a))) = pending.peek().copied() {
            if ended > tb.started_ms {
                break;
            }
            pending.pop();
            let ta = &traces[a as usize];
            for (name, value) in &ta.output {
                let field = *field_ids.entry(name.as_str()).or_insert_with(|| {
                    fields.push(name.as_str());
                    (fields.len() - 1) as u32
                });
                recent.insert((ta.tenant.as_str(), *value), Seen { trace: a, field, ended_ms: ended });
            }
        }
        // Which earlier executions fed this one, and through which fields.
        let mut fed_by: HashMap<u32, Vec<Flow>> = HashMap::new();
        for (name, value) in &tb.input {
            let Some(seen) = recent.get(&(tb.tenant.as_str(), *value)) else { continue };
            if tb.started_ms.saturating_sub(seen.ended_ms) > options.window_ms || seen.trace as usize == b {
                continue;
            }
            let flow = Flow { output: fields[seen.field as usize].to_string(), input: name.clone() };
            fed_by.entry(seen.trace).or_default().push(flow);
        }
        for (a, flows) in fed_by {
            let ta = &traces[a as usize];
            if ta.pattern == tb.pattern {
                continue;
            }
            let pair = pairs.entry((ta.pattern.as_str(), tb.pattern.as_str())).or_default();
            pair.support += 1;
            pair.gap_total += tb.started_ms.saturating_sub(ta.ended_ms) as f64;
            for f in flows {
                *pair.flows.entry(f).or_default() += 1;
            }
            if pair.evidence.len() < options.evidence {
                pair.evidence.push(tb.id.clone());
            }
            if let Some(&z) = predecessor.get(&a) {
                let tz = &traces[z as usize];
                if tz.pattern != tb.pattern {
                    let chain =
                        chains.entry((tz.pattern.as_str(), ta.pattern.as_str(), tb.pattern.as_str())).or_default();
                    chain.support += 1;
                    chain.gap_total += tb.started_ms.saturating_sub(tz.ended_ms) as f64;
                    if chain.evidence.len() < options.evidence {
                        chain.evidence.push(tb.id.clone());
                    }
                }
            }
            predecessor.insert(b as u32, a);
        }
        pending.push(std::cmp::Reverse((tb.ended_ms.max(tb.started_ms), b as u32)));
        // Forget values older than the window now and then (bounded memory).
        if recent.len() > 1_000_000 {
            let horizon = tb.started_ms.saturating_sub(options.window_ms);
            recent.retain(|_, s| s.ended_ms >= horizon);
        }
    }

    let versions = most_common_versions(traces);
    let version_of = |p: &str| versions.get(p).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for ((a, b), pair) in &pairs {
        let runs_a = executions.get(*a).copied().unwrap_or(1).max(1);
        let confidence = f64::from(pair.support) / runs_a as f64;
        if pair.support < options.min_support || confidence < options.min_confidence {
            continue;
        }
        // A field that flowed in most of the pair's executions (not a coincidence of one).
        let flows: Vec<Flow> =
            pair.flows.iter().filter(|(_, n)| **n * 2 >= pair.support).map(|(f, _)| f.clone()).collect();
        if flows.is_empty() {
            continue;
        }
        out.push(Composite {
            patterns: vec![a.to_string(), b.to_string()],
            versions: vec![version_of(a), version_of(b)],
            flows: vec![flows],
            support: pair.support,
            confidence,
            evidence: pair.evidence.clone(),
            mean_gap_ms: pair.gap_total / f64::from(pair.support),
        });
    }
    // A chain of three whose links are both composites, with most of the last link's support:
    // proposed instead of its two pairs.
    let mut subsumed: HashSet<(String, String)> = HashSet::new();
    for ((x, y, z), chain) in &chains {
        let link = |p: &str, q: &str| out.iter().find(|c| c.patterns[0] == p && c.patterns[1] == q).cloned();
        let (Some(first), Some(second)) = (link(x, y), link(y, z)) else { continue };
        if chain.support < options.min_support || f64::from(chain.support) < 0.6 * f64::from(second.support) {
            continue;
        }
        let runs_x = executions.get(*x).copied().unwrap_or(1).max(1);
        subsumed.insert((x.to_string(), y.to_string()));
        subsumed.insert((y.to_string(), z.to_string()));
        out.push(Composite {
            patterns: vec![x.to_string(), y.to_string(), z.to_string()],
            versions: vec![version_of(x), version_of(y), version_of(z)],
            flows: vec![first.flows[0].clone(), second.flows[0].clone()],
            support: chain.support,
            confidence: f64::from(chain.support) / runs_x as f64,
            evidence: chain.evidence.clone(),
            mean_gap_ms: chain.gap_total / f64::from(chain.support),
        });
    }
    out.retain(|c| c.patterns.len() == 3 || !subsumed.contains(&(c.patterns[0].clone(), c.patterns[1].clone())));
    out.sort_by(|a, b| b.support.cmp(&a.support).then_with(|| a.patterns.cmp(&b.patterns)));
    out
}

fn most_common_versions(traces: &[Trace]) -> HashMap<String, String> {
    let mut counts: HashMap<(&str, &str), u64> = HashMap::new();
    for t in traces {
        *counts.entry((t.pattern.as_str(), t.version.as_str())).or_default() += 1;
    }
    let mut best: HashMap<String, (String, u64)> = HashMap::new();
    for ((p, v), n) in counts {
        let entry = best.entry(p.to_string()).or_insert_with(|| (v.to_string(), 0));
        if n > entry.1 || (n == entry.1 && v > entry.0.as_str()) {
            *entry = (v.to_string(), n);
        }
    }
    best.into_iter().map(|(p, (v, _))| (p, v)).collect()
}

/// Longest shared run considered.
const MAX_SEQUENCE: usize = 6;

/// A run of calls and where it occurs: (pattern index, start).
type Run<'a> = (Vec<&'a str>, Vec<(usize, usize)>);

fn shared_sequences(traces: &[Trace], options: &MiningOptions) -> Vec<SharedSequence> {
    // Each pattern's usual sequence: the most common executed-call sequence of its successful
    // executions (noise and partial runs fall away).
    let mut sequences: HashMap<&str, HashMap<Vec<&str>, (u64, String)>> = HashMap::new();
    for t in traces.iter().filter(|t| t.succeeded) {
        let calls: Vec<&str> = t.steps.iter().filter(|s| s.succeeded).map(|s| s.call.as_str()).collect();
        let entry = sequences.entry(t.pattern.as_str()).or_default().entry(calls).or_insert_with(|| (0, t.id.clone()));
        entry.0 += 1;
    }
    let mut usual: Vec<(&str, Vec<&str>, u64, String)> = sequences
        .into_iter()
        .filter_map(|(p, seqs)| {
            let total: u64 = seqs.values().map(|(n, _)| n).sum();
            let (calls, (_, example)) =
                seqs.into_iter().max_by(|a, b| a.1.0.cmp(&b.1.0).then_with(|| b.0.cmp(&a.0)))?;
            Some((p, calls, total, example))
        })
        .collect();
    usual.sort_by(|a, b| a.0.cmp(b.0));

    // Every contiguous run of 2..=MAX_SEQUENCE calls → the patterns holding it.
    let mut runs: HashMap<Vec<&str>, Vec<(usize, usize)>> = HashMap::new();
    for (pi, (_, calls, _, _)) in usual.iter().enumerate() {
        let mut seen_here: HashSet<&[&str]> = HashSet::new();
        for start in 0..calls.len() {
            for len in 2..=MAX_SEQUENCE.min(calls.len() - start) {
                let run = &calls[start..start + len];
                if seen_here.insert(run) {
                    runs.entry(run.to_vec()).or_default().push((pi, start));
                }
            }
        }
    }
    let min_patterns = (options.min_support as usize).clamp(2, 3);
    let mut frequent: Vec<Run<'_>> = runs.into_iter().filter(|(_, holders)| holders.len() >= min_patterns).collect();
    // Keep the maximal runs: drop one contained in a longer frequent run held by the same
    // patterns.
    frequent.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    let mut kept: Vec<Run<'_>> = Vec::new();
    for (run, holders) in frequent {
        let holder_set: HashSet<usize> = holders.iter().map(|h| h.0).collect();
        let contained = kept.iter().any(|(longer, lh)| {
            longer.windows(run.len()).any(|w| w == run.as_slice())
                && holder_set.iter().all(|p| lh.iter().any(|h| h.0 == *p))
        });
        if !contained {
            kept.push((run, holders));
        }
    }
    kept.into_iter()
        .map(|(run, holders)| SharedSequence {
            calls: run.iter().map(|c| c.to_string()).collect(),
            executions: holders.iter().map(|h| usual[h.0].2).sum(),
            evidence: holders.iter().take(options.evidence).map(|h| usual[h.0].3.clone()).collect(),
            patterns: holders.iter().map(|h| (usual[h.0].0.to_string(), h.1)).collect(),
        })
        .collect()
}

fn step_stats(traces: &[Trace], options: &MiningOptions) -> BTreeMap<(String, String), StepStats> {
    let mut stats: HashMap<(&str, &str), StepStats> = HashMap::new();
    for t in traces {
        for s in &t.steps {
            let entry = stats.entry((t.pattern.as_str(), s.step_id.as_str())).or_default();
            entry.runs += 1;
            entry.total_ms += s.duration_ms;
            let transient =
                matches!(s.first_code.as_str(), "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "RESOURCE_EXHAUSTED" | "ABORTED");
            let noteworthy = if s.succeeded && s.attempts > 1 {
                entry.recovered_by_retry += 1;
                true
            } else if !s.succeeded && s.attempts <= 1 && transient {
                entry.transient_failures += 1;
                true
            } else {
                false
            };
            if noteworthy && entry.evidence.len() < options.evidence {
                entry.evidence.push(t.id.clone());
            }
        }
    }
    stats.into_iter().map(|((p, s), v)| ((p.to_string(), s.to_string()), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{HistorySpec, history};

    #[test]
    fn planted_composites_and_shared_sequences_are_found_among_noise() {
        let (traces, planted) = history(&HistorySpec { executions: 60_000, ..Default::default() });
        let mined = mine(&traces, &MiningOptions::default());
        let found: Vec<Vec<String>> = mined.composites.iter().map(|c| c.patterns.clone()).collect();
        let shared: Vec<Vec<String>> = mined.shared.iter().map(|s| s.calls.clone()).collect();
        let hits = planted.composites.iter().filter(|p| found.contains(p)).count()
            + planted.shared.iter().filter(|p| shared.contains(p)).count();
        let right = found.iter().filter(|f| planted.composites.contains(f)).count()
            + shared.iter().filter(|f| planted.shared.contains(f)).count();
        let recall = hits as f64 / (planted.composites.len() + planted.shared.len()) as f64;
        let precision = right as f64 / (found.len() + shared.len()).max(1) as f64;
        assert!(recall >= 0.9, "recall {recall}: found {found:?} {shared:?}");
        assert!(precision >= 0.8, "precision {precision}: found {found:?} {shared:?}");
    }

    #[test]
    fn flows_never_cross_tenants() {
        let t =
            |id: &str, tenant: &str, pattern: &str, at: u64, input: &[(&str, &str)], output: &[(&str, &str)]| Trace {
                id: id.into(),
                tenant: tenant.into(),
                pattern: pattern.into(),
                version: "1.0.0".into(),
                started_ms: at,
                ended_ms: at + 5,
                succeeded: true,
                input: input.iter().map(|(k, v)| (k.to_string(), value_hash(v))).collect(),
                output: output.iter().map(|(k, v)| (k.to_string(), value_hash(v))).collect(),
                steps: Vec::new(),
            };
        let mut traces = Vec::new();
        for i in 0..5u64 {
            let user = format!("usr_{i:04}");
            traces.push(t(&format!("a{i}"), "acme", "signup", i * 100, &[], &[("user_id", &user)]));
            // The same value, in another tenant: not a flow.
            traces.push(t(&format!("b{i}"), "other", "watch", i * 100 + 50, &[("user_id", &user)], &[]));
        }
        assert!(mine(&traces, &MiningOptions::default()).composites.is_empty());
        for trace in traces.iter_mut().filter(|t| t.tenant == "other") {
            trace.tenant = "acme".into();
        }
        let mined = mine(&traces, &MiningOptions::default());
        assert_eq!(mined.composites.len(), 1);
        assert_eq!(mined.composites[0].patterns, ["signup", "watch"]);
        assert_eq!(mined.composites[0].flows[0], [Flow { output: "user_id".into(), input: "user_id".into() }]);
    }
}

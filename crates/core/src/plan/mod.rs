//! Compiling a pattern document into an executable plan: every check of DESIGN.md §3 (actions
//! resolve, `with` fits the input message, expressions parse and their paths exist, the step graph
//! is acyclic, ids are unique), all diagnostics collected, then the DAG the engine runs.
//!
//! `compile` is a sequence of passes. Each is a small function over the whole document that adds
//! what it finds to one shared `Diagnostics`; none stops the others, so an author sees every
//! problem in one round trip. The diagnostics are sorted into document order at the end, stably,
//! so within one step they keep the order of the passes.

mod calls;
mod env;
mod events;
mod graph;
mod header;
mod ids;
mod model;
mod options;
mod output;
mod references;
mod schedule;
mod templates;
mod typing;

use std::{sync::Arc, time::Duration};

pub use events::{MAX_EVENT_TYPE_LEN, is_event_type};
pub use header::MAX_PATTERN_NAME;
pub use model::{
    Compensation, CompiledPattern, CompiledStep, Correlation, DEFAULT_CONCURRENCY, DEFAULT_WAIT, Durability,
    EVENT_FIELDS, EmitPlan, MAX_CONCURRENCY, MAX_STEPS, MAX_TRIGGERS, MAX_WAIT, MAX_WAIT_BRANCHES, NoPatterns,
    OutputField, PATTERN_CALL_PREFIX, PatternLookup, RetryPolicy, Target, TriggerPlan, WaitBranch, WaitPlan,
    parse_pattern_call, to_duration,
};
pub use options::GRPC_CODES;
pub use schedule::{Due, MAX_CATCHUP_WINDOW, Overlap, SchedulePlan};

use crate::{
    catalog::Catalog,
    diagnostic::{Diagnostic, Diagnostics},
    expr::{Expr, Template},
    input::InputSchema,
    pb, value,
    wire::Reads,
};

/// What the per-step passes made of one step, before the graph is known.
struct Draft {
    /// `None` when the call did not resolve (already reported).
    target: Option<Target>,
    request: Template,
    when: Option<Expr>,
    for_each: Option<Expr>,
    compensate: Option<Compensation>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
}

/// Compiles and validates a document against the catalog. On success also returns warnings.
pub fn compile(
    doc: &pb::Pattern,
    catalog: &Catalog,
    patterns: &dyn PatternLookup,
) -> Result<(CompiledPattern, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = Diagnostics::default();

    // Structure: the header, the input schema, and the step ids every later pass refers to.
    header::check(doc, &mut diags);
    if header::too_big(doc, &mut diags) {
        return Err(sorted(diags.into_vec()));
    }
    let input = header::input_schema(doc, &mut diags);
    let ids = ids::collect(doc, &mut diags);
    let triggers = events::triggers(doc, &input, patterns, &mut diags);
    let schedule = schedule::compile(doc, &input, &mut diags);

    // Each step on its own: what it calls, its templates and expressions, its options.
    let targets = calls::resolve(doc, catalog, patterns, &mut diags);
    let requests = templates::requests(doc, &mut diags);
    let conditions = templates::conditions(doc, &mut diags);
    options::check_fan_out(doc, &conditions.for_each, &mut diags);
    let compensations = templates::compensations(doc, catalog, &mut diags);
    let timeouts = options::timeouts(doc, &mut diags);
    let retries = options::retry_policies(doc, &mut diags);
    let drafts = drafts(targets, requests, conditions, compensations, timeouts, retries);

    // Across steps: what expressions read, whether requests fit, the graph, the output.
    let env = env::Env::new(&input, doc, &drafts, patterns);
    let mut deps = references::check_steps(doc, &drafts, &ids, &env, &mut diags);
    references::check_compensations(doc, &drafts, &ids, &env, &mut diags);
    typing::check_compensations(&drafts, &env, &mut diags);
    graph::add_depends_on(doc, &ids, &mut deps, &mut diags);
    typing::check_requests(&drafts, &env, &mut diags);
    let output = output::compile(doc, &ids, &env, &mut diags);
    graph::check_cycles(&deps, doc, &mut diags);
    let reads = env.into_reads();

    // Only a document without errors becomes a plan: the engine relies on every step having a
    // target and the graph being acyclic.
    if diags.has_errors() {
        return Err(sorted(diags.into_vec()));
    }
    let parts = Parts { input, drafts, deps, output, reads, triggers, schedule };
    Ok((assemble(doc, parts), sorted(diags.into_vec())))
}

fn drafts(
    targets: Vec<Option<Target>>,
    requests: Vec<Template>,
    conditions: templates::Conditions,
    compensations: Vec<Option<Compensation>>,
    timeouts: Vec<Option<Duration>>,
    retries: Vec<RetryPolicy>,
) -> Vec<Draft> {
    targets
        .into_iter()
        .zip(requests)
        .zip(conditions.when.into_iter().zip(conditions.for_each))
        .zip(compensations)
        .zip(timeouts.into_iter().zip(retries))
        .map(|((((target, request), (when, for_each)), compensate), (timeout, retry))| Draft {
            target,
            request,
            when,
            for_each,
            compensate,
            timeout,
            retry,
        })
        .collect()
}

/// What a document that compiled without errors is assembled from.
struct Parts {
    input: InputSchema,
    drafts: Vec<Draft>,
    deps: Vec<Vec<usize>>,
    output: Option<Vec<model::OutputField>>,
    /// What the expressions read of each step's output.
    reads: Vec<Reads>,
    triggers: Vec<model::TriggerPlan>,
    schedule: Option<SchedulePlan>,
}

/// The plan of a document that compiled without errors.
fn assemble(doc: &pb::Pattern, parts: Parts) -> CompiledPattern {
    let Parts { input, drafts, deps, output, reads, triggers, schedule } = parts;
    let dependants = graph::dependants(&deps);
    let roots = graph::roots(&deps);
    // Without an output mapping the execution's output is every step's whole output.
    let mapped = output.is_some();
    let steps = drafts
        .into_iter()
        .zip(&doc.steps)
        .zip(deps.into_iter().zip(dependants))
        .zip(reads)
        .enumerate()
        .filter_map(|(i, (((draft, step), (deps, dependants)), reads))| {
            // Only a unary call's one message is decoded by what is read of it; a list (for_each,
            // a collected stream) and a sub-pattern's or an event's output are kept whole.
            let reads = match &draft.target {
                Some(Target::Action(a)) if mapped && draft.for_each.is_none() && !a.is_server_streaming() => reads,
                _ => Reads::All,
            };
            let request_fields = match (&draft.target, &draft.request) {
                (Some(Target::Action(a)), Template::Object(keys)) => {
                    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
                    crate::wire::request_fields(&a.method.input(), &names)
                }
                _ => None,
            };
            Some(CompiledStep {
                index: i,
                id: Arc::from(step.id.as_str()),
                key: value::key(&step.id),
                call: match &draft.target {
                    Some(Target::Emit(e)) => Arc::from(format!("emit:{}", e.event_type)),
                    Some(Target::Wait(w)) => Arc::from(format!(
                        "wait_for:{}",
                        w.branches.iter().map(|b| b.event_type.as_str()).collect::<Vec<_>>().join("|")
                    )),
                    _ => Arc::from(step.call.as_str()),
                },
                // Always present: an unresolved call is an error, and errors stop before here.
                target: draft.target?,
                request: draft.request,
                request_fields,
                when: draft.when,
                deps,
                dependants,
                timeout: draft.timeout,
                retry: draft.retry,
                stream: step.stream,
                for_each: draft.for_each,
                concurrency: match step.concurrency {
                    0 => DEFAULT_CONCURRENCY,
                    n => (n as usize).min(MAX_CONCURRENCY),
                },
                compensate: draft.compensate,
                reads,
            })
        })
        .collect();
    CompiledPattern {
        name: Arc::from(doc.name.as_str()),
        version: Arc::from(doc.version.as_str()),
        document: doc.clone(),
        durability: if doc.durability == "durable" { Durability::Durable } else { Durability::Ephemeral },
        timeout: doc.timeout.and_then(|d| to_duration(&d)),
        input,
        steps,
        output,
        roots,
        triggers,
        schedule,
    }
}

/// Document order: header fields, then steps by index, then the output mapping (stable within).
/// Most diagnostics a compilation reports: past these, one more says how many were left out.
pub const MAX_DIAGNOSTICS: usize = 100;
/// Longest diagnostic message, in bytes (they may quote the document).
pub const MAX_DIAGNOSTIC_BYTES: usize = 1024;

/// The diagnostics in document order, each message at most [`MAX_DIAGNOSTIC_BYTES`], at most
/// [`MAX_DIAGNOSTICS`] of them (errors first) and then a count of the rest.
fn sorted(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut diags = in_document_order(diags);
    for d in &mut diags {
        if d.path.len() > 256 {
            let mut end = 256;
            while !d.path.is_char_boundary(end) {
                end -= 1;
            }
            d.path.truncate(end);
            d.path.push('…');
        }
        if d.message.len() > MAX_DIAGNOSTIC_BYTES {
            let mut end = MAX_DIAGNOSTIC_BYTES;
            while !d.message.is_char_boundary(end) {
                end -= 1;
            }
            let total = d.message.len();
            d.message.truncate(end);
            d.message.push_str(&format!("… ({total} bytes in all)"));
        }
    }
    if diags.len() > MAX_DIAGNOSTICS {
        // Keep errors over warnings, each group in document order.
        diags.sort_by_key(|d| !d.is_error());
        let rest = diags.len() - MAX_DIAGNOSTICS;
        let errors_left_out = diags[MAX_DIAGNOSTICS..].iter().filter(|d| d.is_error()).count();
        diags.truncate(MAX_DIAGNOSTICS);
        diags = in_document_order(diags);
        let summary = format!("and {rest} more problem(s) not listed ({errors_left_out} error(s)); fix these first");
        diags.push(if errors_left_out > 0 { Diagnostic::error("", summary) } else { Diagnostic::warning("", summary) });
    }
    diags
}

fn in_document_order(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by_key(|d| {
        if let Some(rest) = d.path.strip_prefix("steps[") {
            (1, rest.split(']').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0))
        } else if d.path.starts_with("on[") || d.path == "on" {
            (0, 1)
        } else if d.path.starts_with("schedule") {
            (0, 2)
        } else if d.path.starts_with("output") {
            (2, 0)
        } else {
            (0, 0)
        }
    });
    diags
}

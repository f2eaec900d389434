//! Compiling a pattern document into an executable plan: every check of DESIGN.md §3 (actions
//! resolve, `with` fits the input message, expressions parse and their paths exist, the step graph
//! is acyclic, ids are unique), all diagnostics collected, then the DAG the engine runs.

use std::{collections::HashMap, sync::Arc, time::Duration};

use cel::objects::Key;

use crate::{
    catalog::{Action, Catalog},
    diagnostic::{Diagnostic, Diagnostics, name_list, suggest},
    expr::{self, Expr, Template, TemplateError},
    input::InputSchema,
    pb,
    typecheck::{self, Ty, TypeEnv},
    value,
};

/// Most steps a pattern may have.
pub const MAX_STEPS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Ephemeral,
    Durable,
}

/// Retry policy of a step, with defaults filled in.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// gRPC code names that are retried.
    pub retry_on: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            retry_on: vec!["UNAVAILABLE".into(), "RESOURCE_EXHAUSTED".into(), "ABORTED".into()],
        }
    }
}

/// A validated pattern, ready to execute. Cheap to share (`Arc<CompiledPattern>`).
#[derive(Debug)]
pub struct CompiledPattern {
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub document: pb::Pattern,
    pub durability: Durability,
    pub timeout: Option<Duration>,
    pub input: InputSchema,
    pub steps: Vec<CompiledStep>,
    /// Output mapping (an object template); `None` returns every step's output.
    pub output: Option<Vec<OutputField>>,
    /// Steps with no dependencies: where execution starts.
    pub roots: Vec<usize>,
}

#[derive(Debug)]
pub struct OutputField {
    pub name: String,
    pub key: Key,
    pub template: Template,
    /// Steps whose output this field reads: when one of them was skipped the field is left out.
    pub reads_steps: Vec<usize>,
}

/// What a step calls: a backend action, or another registered pattern (run in-process).
#[derive(Debug, Clone)]
pub enum Target {
    Action(Action),
    Pattern(Arc<CompiledPattern>),
}

impl Target {
    pub fn is_server_streaming(&self) -> bool {
        matches!(self, Target::Action(a) if a.is_server_streaming())
    }
}

/// Finds registered patterns for `call: pattern:NAME@VERSION` steps.
pub trait PatternLookup {
    /// `version` is an exact semantic version or `latest`.
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<CompiledPattern>>;
}

/// No patterns (for documents checked without a registry).
pub struct NoPatterns;

impl PatternLookup for NoPatterns {
    fn lookup(&self, _: &str, _: &str) -> Option<Arc<CompiledPattern>> {
        None
    }
}

/// The prefix of a sub-pattern call: `pattern:NAME@VERSION`.
pub const PATTERN_CALL_PREFIX: &str = "pattern:";

/// Splits `pattern:NAME@VERSION` (VERSION defaults to `latest`).
pub fn parse_pattern_call(call: &str) -> Option<(&str, &str)> {
    let rest = call.strip_prefix(PATTERN_CALL_PREFIX)?;
    Some(rest.split_once('@').unwrap_or((rest, "latest")))
}

#[derive(Debug)]
pub struct CompiledStep {
    pub index: usize,
    pub id: Arc<str>,
    pub key: Key,
    /// The `call` as written (resolved): an action name or `pattern:NAME@VERSION`.
    pub call: Arc<str>,
    pub target: Target,
    /// The request template; evaluates to a map converted into the action's input message.
    pub request: Template,
    pub when: Option<Expr>,
    pub deps: Vec<usize>,
    pub dependants: Vec<usize>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// Forward each message of a server-streaming action to the caller as it arrives.
    pub stream: bool,
    /// `for_each`: the step runs once per item of this list.
    pub for_each: Option<Expr>,
    /// Fan-out concurrency cap (for_each).
    pub concurrency: usize,
    pub compensate: Option<Compensation>,
}

/// The action that undoes a completed step when its execution fails.
#[derive(Debug)]
pub struct Compensation {
    pub action: Action,
    pub request: Template,
}

/// Default and largest fan-out concurrency of a for_each step.
pub const DEFAULT_CONCURRENCY: usize = 10;
pub const MAX_CONCURRENCY: usize = 1000;

/// Compiles and validates a document against the catalog. On success also returns warnings.
pub fn compile(
    doc: &pb::Pattern,
    catalog: &Catalog,
    patterns: &dyn PatternLookup,
) -> Result<(CompiledPattern, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = Diagnostics::default();
    check_header(doc, &mut diags);
    let input = InputSchema::new(doc.input.as_ref().map(value::struct_to_serde).unwrap_or(serde_json::Value::Null));
    if !input.as_json().is_null() {
        for (path, msg) in input.lint() {
            diags.error(path, msg);
        }
    }

    // Ids first: every later check refers to steps by id.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, step) in doc.steps.iter().enumerate() {
        let path = format!("steps[{i}].id");
        if step.id.is_empty() {
            diags.error(path, "every step needs an id");
        } else if !is_identifier(&step.id) {
            diags.error(
                path,
                format!("`{}` is not a valid id: use letters, digits and _ (so `steps.{}` reads it)", step.id, step.id),
            );
        } else if let Some(first) = ids.insert(&step.id, i) {
            ids.insert(&step.id, first);
            diags.error(path, format!("duplicate id `{}` (first used by steps[{first}])", step.id));
        }
    }

    // Resolve actions and compile every template and expression.
    let mut drafts = Vec::with_capacity(doc.steps.len());
    for (i, step) in doc.steps.iter().enumerate() {
        drafts.push(draft_step(i, step, catalog, patterns, &mut diags));
    }

    // Type environment: step output types are known once actions resolve.
    let env = Env {
        input: &input,
        step_types: drafts
            .iter()
            .zip(&doc.steps)
            .filter_map(|(d, s)| {
                let ty = match d.target.as_ref()? {
                    Target::Action(action) => {
                        let out = Ty::of_message(&action.method.output());
                        // A forwarded stream keeps only its last message; a collected one is a list.
                        if action.is_server_streaming() && !s.stream { Ty::List(Box::new(out)) } else { out }
                    }
                    Target::Pattern(p) => match &p.output {
                        Some(fields) => Ty::Record(fields.iter().map(|f| f.name.clone()).collect()),
                        None => Ty::Dyn,
                    },
                };
                let ty = if d.for_each.is_some() { Ty::List(Box::new(ty)) } else { ty };
                Some((s.id.clone(), ty))
            })
            .collect(),
    };
    let conditional: Vec<bool> = doc.steps.iter().map(|s| !s.when.is_empty()).collect();

    // References: every expression's variables exist, every path resolves; edges of the graph.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); doc.steps.len()];
    for (i, (draft, step)) in drafts.iter().zip(&doc.steps).enumerate() {
        let mut exprs = Vec::new();
        draft.request.expressions(&format!("steps[{i}].with"), &mut exprs);
        let fan_out = draft.for_each.is_some();
        let item_scope = exprs.len();
        if let Some(w) = &draft.when {
            exprs.push((format!("steps[{i}].when"), w));
        }
        if let Some(f) = &draft.for_each {
            exprs.push((format!("steps[{i}].for_each"), f));
        }
        for (n, (path, e)) in exprs.iter().enumerate() {
            // `item` and `index` exist in the request of a for_each step only.
            let scope = Scope { in_step: Some(&step.id), items: fan_out && n < item_scope };
            for r in e.references() {
                if let Some(target) = check_reference(r, path, &ids, &env, scope, &mut diags) {
                    if target == i {
                        diags.error(path.clone(), format!("step `{}` reads its own output", step.id));
                        continue;
                    }
                    if !deps[i].contains(&target) {
                        deps[i].push(target);
                    }
                    check_guard(r, e, target, &conditional, doc, path, &mut diags);
                }
            }
        }
        if let Some(c) = &draft.compensate {
            let mut cexprs = Vec::new();
            c.request.expressions(&format!("steps[{i}].compensate.with"), &mut cexprs);
            for (path, e) in &cexprs {
                for r in e.references() {
                    // A compensation runs after its own step succeeded: it may read its output.
                    let scope = Scope { in_step: None, items: false };
                    if let Some(target) = check_reference(r, path, &ids, &env, scope, &mut diags)
                        && target != i
                    {
                        check_guard(r, e, target, &conditional, doc, path, &mut diags);
                    }
                }
            }
            typecheck::check_message_template(
                &c.request,
                &c.action.method.input(),
                &format!("steps[{i}].compensate.with"),
                &env,
                &mut diags,
            );
        }
        for (j, dep) in step.depends_on.iter().enumerate() {
            match ids.get(dep.as_str()) {
                Some(&t) if t == i => {
                    diags.error(format!("steps[{i}].depends_on[{j}]"), "a step cannot depend on itself")
                }
                Some(&t) => {
                    if !deps[i].contains(&t) {
                        deps[i].push(t);
                    }
                }
                None => diags.error(format!("steps[{i}].depends_on[{j}]"), unknown_step(dep, &ids)),
            }
        }
        match &draft.target {
            Some(Target::Action(action)) => typecheck::check_message_template(
                &draft.request,
                &action.method.input(),
                &format!("steps[{i}].with"),
                &env,
                &mut diags,
            ),
            Some(Target::Pattern(callee)) => {
                check_pattern_input(&draft.request, callee, &format!("steps[{i}].with"), &mut diags)
            }
            None => {}
        }
    }

    // Output mapping.
    let mut output = None;
    if let Some(out) = &doc.output {
        let mut fields = Vec::new();
        for (name, v) in &out.fields {
            let path = format!("output.{name}");
            let mut errors = Vec::new();
            let template = Template::compile(&value::struct_value_to_serde(v), &path, &mut errors);
            report_template_errors(errors, &mut diags);
            let mut exprs = Vec::new();
            template.expressions(&path, &mut exprs);
            let mut reads_steps = Vec::new();
            for (p, e) in &exprs {
                for r in e.references() {
                    let scope = Scope { in_step: None, items: false };
                    if let Some(t) = check_reference(r, p, &ids, &env, scope, &mut diags)
                        && !reads_steps.contains(&t)
                    {
                        reads_steps.push(t);
                    }
                }
            }
            fields.push(OutputField { key: value::key(name), name: name.clone(), template, reads_steps });
        }
        output = Some(fields);
    }

    // The graph is checked even when other checks failed: a cycle is independent of them, and
    // an author should see every problem in one round trip.
    check_cycles(&deps, doc, &mut diags);
    if diags.has_errors() {
        return Err(sorted(diags.into_vec()));
    }

    let mut dependants = vec![Vec::new(); doc.steps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependants[d].push(i);
        }
    }
    let roots = (0..doc.steps.len()).filter(|&i| deps[i].is_empty()).collect();
    let steps = drafts
        .into_iter()
        .zip(&doc.steps)
        .zip(deps.into_iter().zip(dependants))
        .enumerate()
        .filter_map(|(i, ((draft, step), (deps, dependants)))| {
            Some(CompiledStep {
                index: i,
                id: Arc::from(step.id.as_str()),
                key: value::key(&step.id),
                call: Arc::from(step.call.as_str()),
                target: draft.target?,
                request: draft.request,
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
            })
        })
        .collect();
    let pattern = CompiledPattern {
        name: Arc::from(doc.name.as_str()),
        version: Arc::from(doc.version.as_str()),
        document: doc.clone(),
        durability: if doc.durability == "durable" { Durability::Durable } else { Durability::Ephemeral },
        timeout: doc.timeout.and_then(|d| to_duration(&d)),
        input,
        steps,
        output,
        roots,
    };
    Ok((pattern, sorted(diags.into_vec())))
}

/// Document order: header fields, then steps by index, then the output mapping (stable within).
fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by_key(|d| {
        if let Some(rest) = d.path.strip_prefix("steps[") {
            (1, rest.split(']').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0))
        } else if d.path.starts_with("output") {
            (2, 0)
        } else {
            (0, 0)
        }
    });
    diags
}

struct Draft {
    target: Option<Target>,
    request: Template,
    when: Option<Expr>,
    for_each: Option<Expr>,
    compensate: Option<Compensation>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
}

fn draft_step(
    i: usize,
    step: &pb::Step,
    catalog: &Catalog,
    patterns: &dyn PatternLookup,
    diags: &mut Diagnostics,
) -> Draft {
    let target = if step.call.is_empty() {
        diags.error(format!("steps[{i}].call"), "every step needs a `call` (an action `package.Service/Method`)");
        None
    } else if let Some((name, version)) = parse_pattern_call(&step.call) {
        match patterns.lookup(name, version) {
            Some(p) => Some(Target::Pattern(p)),
            None => {
                diags.error(
                    format!("steps[{i}].call"),
                    format!(
                        "no registered pattern {name}@{version} to call (register it first; `nexus pattern list` shows what is registered)"
                    ),
                );
                None
            }
        }
    } else {
        match catalog.action(&step.call) {
            Some(a) if a.is_client_streaming() => {
                diags.error(
                    format!("steps[{i}].call"),
                    format!(
                        "`{}` is a client-streaming method; patterns can call unary and server-streaming methods",
                        step.call
                    ),
                );
                None
            }
            Some(a) => Some(Target::Action(a.clone())),
            None => {
                let hint = suggest(&step.call, catalog.action_names())
                    .map(|s| format!(" Did you mean `{s}`?"))
                    .unwrap_or_default();
                diags.error(
                    format!("steps[{i}].call"),
                    format!(
                        "unknown action `{}`: it is not in the catalog.{hint} (`nexus services` lists the actions; a pattern is called as `pattern:NAME@VERSION`)",
                        step.call
                    ),
                );
                None
            }
        }
    };
    if step.stream && target.as_ref().is_some_and(|t| !t.is_server_streaming()) {
        diags.error(format!("steps[{i}].stream"), format!("`{}` is not a server-streaming method", step.call));
    }
    let mut errors = Vec::new();
    let with_json =
        step.with.as_ref().map(value::struct_to_serde).unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let request = Template::compile(&with_json, &format!("steps[{i}].with"), &mut errors);
    report_template_errors(errors, diags);
    let when = (!step.when.is_empty())
        .then(|| match expr::parse_single(&step.when) {
            Ok(e) => Some(e),
            Err(e) => {
                diags.error(format!("steps[{i}].when"), e.to_string());
                None
            }
        })
        .flatten();
    let for_each = (!step.for_each.is_empty())
        .then(|| match expr::parse_single(&step.for_each) {
            Ok(e) => Some(e),
            Err(e) => {
                diags.error(format!("steps[{i}].for_each"), e.to_string());
                None
            }
        })
        .flatten();
    if step.concurrency as usize > MAX_CONCURRENCY {
        diags.error(format!("steps[{i}].concurrency"), format!("at most {MAX_CONCURRENCY}"));
    }
    if step.concurrency > 0 && for_each.is_none() {
        diags.warning(format!("steps[{i}].concurrency"), "has no effect without for_each");
    }
    if step.stream && for_each.is_some() {
        diags.error(format!("steps[{i}].stream"), "a streaming step cannot also fan out with for_each");
    }
    let compensate = step.compensate.as_ref().and_then(|c| {
        let path = format!("steps[{i}].compensate");
        let action = match catalog.action(&c.call) {
            Some(a) if a.is_client_streaming() || a.is_server_streaming() => {
                diags.error(
                    format!("{path}.call"),
                    format!("`{}` is a streaming method; compensations must be unary", c.call),
                );
                return None;
            }
            Some(a) => a.clone(),
            None => {
                let hint = suggest(&c.call, catalog.action_names())
                    .map(|s| format!(" Did you mean `{s}`?"))
                    .unwrap_or_default();
                diags.error(
                    format!("{path}.call"),
                    format!("unknown action `{}`: it is not in the catalog.{hint}", c.call),
                );
                return None;
            }
        };
        let mut errors = Vec::new();
        let with_json = c.with.as_ref().map(value::struct_to_serde).unwrap_or_else(|| serde_json::json!({}));
        let request = Template::compile(&with_json, &format!("{path}.with"), &mut errors);
        report_template_errors(errors, diags);
        Some(Compensation { action, request })
    });
    let timeout = match step.timeout {
        Some(d) => match to_duration(&d) {
            Some(t) if !t.is_zero() => Some(t),
            _ => {
                diags.error(format!("steps[{i}].timeout"), "must be a positive duration such as \"2s\"");
                None
            }
        },
        None => None,
    };
    let retry = retry_policy(i, step.retry.as_ref(), diags);
    Draft { target, request, when, for_each, compensate, timeout, retry }
}

fn retry_policy(i: usize, r: Option<&pb::RetryPolicy>, diags: &mut Diagnostics) -> RetryPolicy {
    let mut p = RetryPolicy::default();
    let Some(r) = r else { return p };
    let path = format!("steps[{i}].retry");
    if r.max_attempts > 100 {
        diags.error(format!("{path}.max_attempts"), "at most 100 attempts");
    }
    p.max_attempts = r.max_attempts.max(1);
    if let Some(d) = r.initial_backoff.and_then(|d| to_duration(&d)) {
        p.initial_backoff = d;
    }
    if let Some(d) = r.max_backoff.and_then(|d| to_duration(&d)) {
        p.max_backoff = d;
    }
    if r.multiplier != 0.0 {
        if r.multiplier < 1.0 {
            diags.error(format!("{path}.multiplier"), "must be at least 1");
        }
        p.multiplier = r.multiplier;
    }
    if !r.retry_on.is_empty() {
        for (j, code) in r.retry_on.iter().enumerate() {
            if !GRPC_CODES.contains(&code.as_str()) {
                diags.error(
                    format!("{path}.retry_on[{j}]"),
                    format!("unknown gRPC code `{code}`; use one of {}", GRPC_CODES.join(", ")),
                );
            }
        }
        p.retry_on = r.retry_on.clone();
    }
    p
}

/// gRPC status code names, as written in `retry_on`.
pub const GRPC_CODES: &[&str] = &[
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn report_template_errors(errors: Vec<TemplateError>, diags: &mut Diagnostics) {
    for e in errors {
        diags.error(e.path, e.error.to_string());
    }
}

fn check_header(doc: &pb::Pattern, diags: &mut Diagnostics) {
    if doc.name.is_empty() {
        diags.error("name", "a pattern needs a name");
    } else if !is_pattern_name(&doc.name) {
        diags.error("name", format!("`{}` is not a valid name: start with a lowercase letter, then lowercase letters, digits, `_`, `-` or `.` (at most 128)", doc.name));
    }
    if doc.version.is_empty() {
        diags.error("version", "a pattern needs a semantic version such as 1.0.0");
    } else if let Err(e) = semver::Version::parse(&doc.version) {
        diags.error("version", format!("`{}` is not a semantic version (MAJOR.MINOR.PATCH): {e}", doc.version));
    }
    if !matches!(doc.visibility.as_str(), "" | "private" | "tenant" | "public") {
        diags.error("visibility", format!("`{}` is not one of private, tenant, public", doc.visibility));
    }
    if !matches!(doc.durability.as_str(), "" | "ephemeral" | "durable") {
        diags.error("durability", format!("`{}` is not one of ephemeral, durable", doc.durability));
    }
    if let Some(t) = &doc.timeout
        && to_duration(t).is_none_or(|d| d.is_zero())
    {
        diags.error("timeout", "must be a positive duration such as \"30s\"");
    }
    if doc.steps.is_empty() {
        diags.error("steps", "a pattern needs at least one step");
    }
    if doc.steps.len() > MAX_STEPS {
        diags.error("steps", format!("{} steps; the limit is {MAX_STEPS}", doc.steps.len()));
    }
}

fn is_pattern_name(s: &str) -> bool {
    s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

fn is_identifier(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn to_duration(d: &prost_types::Duration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn unknown_step(name: &str, ids: &HashMap<&str, usize>) -> String {
    let mut names: Vec<&str> = ids.keys().copied().collect();
    names.sort_unstable();
    let hint = suggest(name, names.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
    format!("there is no step `{name}`{hint}; the steps are: {}", name_list(names))
}

struct Env<'a> {
    input: &'a InputSchema,
    step_types: HashMap<String, Ty>,
}

impl Env<'_> {
    fn resolve(&self, r: &expr::Reference) -> Result<Ty, String> {
        match r.root.as_str() {
            "input" => self.input.resolve(&r.segments).map(|t| Ty::of_input(&t)),
            "steps" => {
                let Some((step, rest)) = r.segments.split_first() else { return Ok(Ty::Dyn) };
                let Some(mut ty) = self.step_types.get(step).cloned() else { return Ok(Ty::Dyn) };
                let mut walked = format!("steps.{step}");
                for seg in rest {
                    ty = ty.select(seg, &walked)?;
                    walked.push('.');
                    walked.push_str(seg);
                }
                Ok(ty)
            }
            _ => Ok(Ty::Dyn),
        }
    }
}

impl TypeEnv for Env<'_> {
    fn type_of(&self, e: &Expr) -> Ty {
        match e.as_path() {
            Some(r) => self.resolve(r).unwrap_or(Ty::Dyn),
            None => Ty::Dyn,
        }
    }
}

/// Checks one reference; returns the index of the step it reads, if any.
/// Where an expression is evaluated, for what it may read.
#[derive(Clone, Copy)]
struct Scope<'a> {
    /// The step the expression belongs to (it may not read its own output).
    in_step: Option<&'a str>,
    /// `item` and `index` are defined (the request of a for_each step).
    items: bool,
}

fn check_reference(
    r: &expr::Reference,
    path: &str,
    ids: &HashMap<&str, usize>,
    env: &Env<'_>,
    scope: Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<usize> {
    let in_step = scope.in_step;
    if !expr::VARIABLES.contains(&r.root.as_str()) {
        diags
            .error(path, format!("unknown variable `{}`; expressions can read {}", r.root, expr::VARIABLES.join(", ")));
        return None;
    }
    match r.root.as_str() {
        "item" | "index" if !scope.items => {
            diags.error(path, format!("`{}` is only defined in the `with` of a for_each step", r.root));
            None
        }
        "steps" => {
            let Some(step) = r.step() else {
                diags.error(path, "read a step's output as `steps.<id>`");
                return None;
            };
            let Some(&target) = ids.get(step) else {
                diags.error(path, unknown_step(step, ids));
                return None;
            };
            if in_step != Some(step)
                && let Err(msg) = env.resolve(r)
            {
                diags.error(path, msg);
            }
            Some(target)
        }
        "input" => {
            if let Err(msg) = env.resolve(r) {
                diags.error(path, msg);
            }
            None
        }
        _ => None,
    }
}

/// The `with` of a sub-pattern call must fit the callee's input schema: declared properties only
/// (unless it allows more) and every required property given.
fn check_pattern_input(t: &Template, callee: &CompiledPattern, path: &str, diags: &mut Diagnostics) {
    let keys: Vec<&str> = match t {
        Template::Object(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
        Template::Literal(serde_json::Value::Object(o), _) => o.keys().map(String::as_str).collect(),
        Template::Expr(_) => return,
        _ => {
            diags.error(path, format!("the input of pattern {} must be an object", callee.name));
            return;
        }
    };
    for k in &keys {
        if let Err(msg) = callee.input.resolve(&[k.to_string()]) {
            diags.error(format!("{path}.{k}"), format!("pattern {}@{}: {msg}", callee.name, callee.version));
        }
    }
    if let Some(required) = callee.input.as_json().get("required").and_then(serde_json::Value::as_array) {
        for r in required.iter().filter_map(serde_json::Value::as_str) {
            if !keys.contains(&r) {
                diags.error(path, format!("pattern {}@{} requires input `{r}`", callee.name, callee.version));
            }
        }
    }
}

/// A step with `when` may be skipped and then has no output: reading it must be guarded with
/// `has(steps.X...)` somewhere in the same expression (e.g. `has(steps.x.y) ? steps.x.y : ""`).
fn check_guard(
    r: &expr::Reference,
    e: &Expr,
    target: usize,
    conditional: &[bool],
    doc: &pb::Pattern,
    path: &str,
    diags: &mut Diagnostics,
) {
    if !conditional[target] || r.guarded {
        return;
    }
    let id = &doc.steps[target].id;
    let guarded = e.references().iter().any(|o| o.guarded && o.step() == Some(id.as_str()));
    if !guarded {
        diags.error(
            path,
            format!(
                "`{r}` reads step `{id}`, which has a `when` and may be skipped; guard it, e.g. `has({r}) ? {r} : ...`, or depend on it with depends_on only"
            ),
        );
    }
}

fn check_cycles(deps: &[Vec<usize>], doc: &pb::Pattern, diags: &mut Diagnostics) {
    // Kahn's algorithm; whatever cannot be ordered sits on or behind a cycle.
    let n = deps.len();
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependants = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependants[d].push(i);
        }
    }
    let mut queue: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut done = vec![false; n];
    while let Some(i) = queue.pop() {
        done[i] = true;
        for &j in &dependants[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                queue.push(j);
            }
        }
    }
    // Report each cycle once, by walking dependencies from an unfinished step until one repeats.
    let mut reported = vec![false; n];
    for start in 0..n {
        if done[start] || reported[start] {
            continue;
        }
        let mut path = vec![start];
        let mut cur = start;
        while let Some(&next) = deps[cur].iter().find(|&&d| !done[d]) {
            if let Some(pos) = path.iter().position(|&p| p == next) {
                let cycle = &path[pos..];
                if cycle.iter().all(|&c| !reported[c]) {
                    let names: Vec<&str> = cycle.iter().rev().map(|&c| doc.steps[c].id.as_str()).collect();
                    let first = *cycle.iter().min().unwrap_or(&start);
                    diags.error(
                        format!("steps[{first}]"),
                        format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
                    );
                }
                for &c in cycle {
                    reported[c] = true;
                }
                break;
            }
            path.push(next);
            cur = next;
        }
        reported[start] = true;
    }
}

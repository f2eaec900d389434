//! `${{ CEL }}` expressions and the templates that hold them.
//!
//! A string that is exactly one `${{ expr }}` yields the expression's typed value; a string with
//! text around expressions is interpolation and yields a string. Expressions are compiled once at
//! registration. A plain path (`input.email`, `steps.user.user.id`) is the common case and is
//! evaluated by walking maps directly, without building a CEL context; anything else runs in the
//! CEL interpreter.
//!
//! What an evaluation may cost is bounded. The only way CEL repeats work is a comprehension
//! (`all`, `exists`, `exists_one`, `map`, `filter`): a compiled expression that has one runs a
//! *metered* copy of its syntax tree, in which each comprehension's range goes through
//! `__nexus_iterate(range, weight)` first. That call charges `len(range) × weight` cost units
//! (`weight`: the nodes of the loop body) against the evaluation's [`Budget`] — per expression and
//! per execution — and checks the deadline; once either is spent it fails, and every comprehension
//! still to start fails at once, so an over-budget evaluation stops within one loop's length.
//! Without comprehensions an expression's work is linear in its size (at most
//! [`MAX_EXPRESSION_BYTES`]) and is not metered.

use std::{
    cell::Cell,
    collections::HashMap,
    fmt,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use cel::{
    Context, Env, ExecutionError, Program, Value as Cel,
    common::ast::{CallExpr, EntryExpr, Expr as Ast, IdedExpr, LiteralValue},
    extractors::Arguments,
    objects::{Key, KeyRef},
};

use crate::value::{self, type_name};

/// Largest expression source accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;

/// The variables an expression may read.
pub const VARIABLES: &[&str] = &["input", "steps", "item", "index", "execution", "event"];

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled `${{ }}` expression.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    kind: ExprKind,
    refs: Arc<[Reference]>,
    /// The metered syntax tree evaluated instead, when the expression has a comprehension.
    metered: Option<Arc<IdedExpr>>,
}

// ---------------------------------------------------------------------------------------------
// Cost

/// How much CEL evaluation may cost, in units: one unit is one node of a comprehension's body
/// evaluated for one element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostLimits {
    /// What one evaluation of one expression may spend.
    pub per_expression: u64,
    /// What all the evaluations of one execution may spend together.
    pub per_execution: u64,
}

impl CostLimits {
    /// About 0.1 s of interpreter time per expression on one core, and ten such per execution.
    pub const DEFAULT: Self = Self { per_expression: 1_000_000, per_execution: 10_000_000 };
}

impl Default for CostLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the expressions of one execution may still spend, and when they must stop.
#[derive(Debug)]
pub struct Budget {
    remaining: AtomicU64,
    per_expression: u64,
    deadline: Option<Instant>,
}

impl Budget {
    pub fn new(limits: CostLimits, deadline: Option<Instant>) -> Self {
        Self { remaining: AtomicU64::new(limits.per_execution), per_expression: limits.per_expression, deadline }
    }

    /// Units this budget may still spend.
    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Relaxed)
    }

    /// The most one evaluation may spend now: the per-expression limit or what the execution has
    /// left, whichever is smaller.
    pub fn per_evaluation(&self) -> u64 {
        self.per_expression.min(self.remaining())
    }
}

/// Why a metered evaluation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Overrun {
    Expression(u64),
    Execution(u64),
    Deadline,
}

/// The running evaluation's meter (evaluation is synchronous: one per thread at a time).
#[derive(Clone, Copy)]
struct Meter {
    /// Units left for this evaluation (the smaller of the per-expression and execution budgets).
    left: u64,
    /// Whether `left` is the execution's remainder rather than the per-expression limit.
    execution_bound: bool,
    limit: u64,
    deadline: Option<Instant>,
    spent: u64,
    overrun: Option<Overrun>,
}

thread_local! {
    static METER: Cell<Option<Meter>> = const { Cell::new(None) };
}

/// The name of the metering function the metered tree calls.
const ITERATE: &str = "__nexus_iterate";

/// `__nexus_iterate(range, weight)`: charges the comprehension about to run over `range`, then
/// hands the range back.
fn iterate(Arguments(args): Arguments) -> Result<Cel, ExecutionError> {
    let (Some(range), Some(Cel::Int(weight))) = (args.first(), args.get(1)) else {
        return Err(ExecutionError::function_error(ITERATE, "expects (range, weight)"));
    };
    let len = match range {
        Cel::List(l) => l.len(),
        Cel::Map(m) => m.map.len(),
        _ => 0,
    };
    let cost = u64::try_from(len).unwrap_or(u64::MAX).saturating_mul(u64::try_from(*weight).unwrap_or(1)).max(1);
    let verdict = METER.with(|cell| {
        let Some(mut meter) = cell.get() else { return Ok(()) };
        let over = if meter.overrun.is_some() {
            meter.overrun
        } else if cost > meter.left {
            Some(if meter.execution_bound { Overrun::Execution(meter.limit) } else { Overrun::Expression(meter.limit) })
        } else if meter.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Overrun::Deadline)
        } else {
            meter.left -= cost;
            meter.spent += cost;
            None
        };
        meter.overrun = over;
        cell.set(Some(meter));
        match over {
            Some(_) => Err(ExecutionError::function_error(ITERATE, "stopped: over budget")),
            None => Ok(()),
        }
    });
    verdict.map(|()| range.clone())
}

/// `e` with every comprehension's range wrapped in `__nexus_iterate(range, weight)`; `None` when
/// `e` has no comprehension.
fn metered(e: &IdedExpr) -> Option<IdedExpr> {
    fn has_comprehension(e: &IdedExpr) -> bool {
        let mut found = false;
        walk(e, &mut |n| found |= matches!(n.expr, Ast::Comprehension(_)));
        found
    }
    fn nodes(e: &IdedExpr) -> i64 {
        let mut n = 0i64;
        walk(e, &mut |_| n = n.saturating_add(1));
        n
    }
    fn rewrite(e: &mut IdedExpr) {
        match &mut e.expr {
            Ast::Comprehension(c) => {
                rewrite(&mut c.iter_range);
                rewrite(&mut c.accu_init);
                rewrite(&mut c.loop_cond);
                rewrite(&mut c.loop_step);
                rewrite(&mut c.result);
                let weight = 1 + nodes(&c.loop_cond) + nodes(&c.loop_step);
                let range = std::mem::take(&mut c.iter_range);
                let id = range.id;
                c.iter_range = IdedExpr {
                    id,
                    expr: Ast::Call(CallExpr {
                        func_name: ITERATE.to_string(),
                        target: None,
                        args: vec![range, IdedExpr { id, expr: Ast::Literal(LiteralValue::Int(weight.into())) }],
                    }),
                };
            }
            Ast::Call(c) => {
                if let Some(t) = &mut c.target {
                    rewrite(t);
                }
                c.args.iter_mut().for_each(rewrite);
            }
            Ast::Select(s) => rewrite(&mut s.operand),
            Ast::List(l) => l.elements.iter_mut().for_each(rewrite),
            Ast::Map(m) => {
                for entry in &mut m.entries {
                    if let EntryExpr::MapEntry(me) = &mut entry.expr {
                        rewrite(&mut me.key);
                        rewrite(&mut me.value);
                    }
                }
            }
            Ast::Struct(s) => {
                for entry in &mut s.entries {
                    if let EntryExpr::StructField(f) = &mut entry.expr {
                        rewrite(&mut f.value);
                    }
                }
            }
            Ast::Ident(_) | Ast::Literal(_) | Ast::Unspecified => {}
        }
    }
    if !has_comprehension(e) {
        return None;
    }
    let mut copy = e.clone();
    rewrite(&mut copy);
    Some(copy)
}

/// Calls `f` on every node of `e`.
fn walk(e: &IdedExpr, f: &mut impl FnMut(&IdedExpr)) {
    f(e);
    match &e.expr {
        Ast::Comprehension(c) => {
            for part in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                walk(part, f);
            }
        }
        Ast::Call(c) => {
            if let Some(t) = &c.target {
                walk(t, f);
            }
            c.args.iter().for_each(|a| walk(a, f));
        }
        Ast::Select(s) => walk(&s.operand, f),
        Ast::List(l) => l.elements.iter().for_each(|x| walk(x, f)),
        Ast::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    walk(&me.key, f);
                    walk(&me.value, f);
                }
            }
        }
        Ast::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(fl) = &entry.expr {
                    walk(&fl.value, f);
                }
            }
        }
        Ast::Ident(_) | Ast::Literal(_) | Ast::Unspecified => {}
    }
}

#[derive(Clone)]
enum ExprKind {
    /// `root.a.b.c`: evaluated by map lookups.
    Path {
        root: Root,
        keys: Arc<[Key]>,
    },
    /// `has(root.a.b.c)`: whether the map at `root.a.b` has the key `c`, by lookups (the program
    /// is kept for static typing).
    Has {
        root: Root,
        keys: Arc<[Key]>,
        field: Key,
        program: Arc<Program>,
    },
    Cel(Arc<Program>),
    /// One side of a compiled program (a wait's correlation value).
    Node(Arc<IdedExpr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Root {
    Input,
    Steps,
    Item,
    Index,
    Execution,
    Event,
}

impl Root {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "input" => Self::Input,
            "steps" => Self::Steps,
            "item" => Self::Item,
            "index" => Self::Index,
            "execution" => Self::Execution,
            "event" => Self::Event,
            _ => return None,
        })
    }
}

/// A variable path an expression reads: `steps.user.user.id` is root `steps`, segments
/// `[user, user, id]`. `guarded` is set when the path appears inside `has(...)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub root: String,
    pub segments: Vec<String>,
    pub guarded: bool,
}

impl Reference {
    /// The step a `steps.X...` reference reads, if any.
    pub fn step(&self) -> Option<&str> {
        (self.root == "steps").then(|| self.segments.first().map(String::as_str)).flatten()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.root)?;
        for s in &self.segments {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ExprError {
    #[error("invalid CEL expression `{text}`: {message}")]
    Parse { text: String, message: String },
    #[error("expression is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("unterminated `${{{{`: every `${{{{` needs a closing `}}}}`")]
    Unterminated,
    #[error("empty expression `${{{{ }}}}`")]
    Empty,
}

/// A runtime evaluation failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("evaluating `{expression}`: {message}")]
pub struct EvalError {
    pub expression: String,
    pub message: String,
    pub kind: EvalErrorKind,
}

/// What kind of failure an [`EvalError`] is, for the status code it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalErrorKind {
    /// The expression fails on these values (a missing field, a type mismatch …).
    Invalid,
    /// Its cost budget is spent (RESOURCE_EXHAUSTED).
    CostExceeded,
    /// The execution's deadline passed while it ran (DEADLINE_EXCEEDED).
    DeadlineExceeded,
}

/// What an expression can read while it is evaluated.
pub struct Scope<'a> {
    pub input: &'a Cel,
    /// Completed steps' outputs keyed by step id.
    pub steps: &'a HashMap<Key, Cel>,
    pub item: Option<&'a Cel>,
    pub index: Option<i64>,
    pub execution: &'a ExecutionVar,
    /// The event (trigger filters and inputs, `wait_for` matches).
    pub event: Option<&'a Cel>,
    /// The execution's CEL budget and deadline; without one, each evaluation gets
    /// [`CostLimits::DEFAULT`]'s per-expression limit and no deadline.
    pub budget: Option<&'a Budget>,
}

/// The `execution` variable — `{id, pattern, version}` — made the first time an expression reads
/// it: most executions have none that does, and making the map was a dozen allocations each.
pub struct ExecutionVar {
    parts: Option<[Arc<str>; 3]>,
    value: std::sync::OnceLock<Cel>,
}

impl ExecutionVar {
    pub fn new(id: Arc<str>, pattern: Arc<str>, version: Arc<str>) -> Self {
        Self { parts: Some([id, pattern, version]), value: std::sync::OnceLock::new() }
    }

    /// A variable that is `value` (`null` where no execution runs: trigger filters, event matches).
    pub fn of(value: Cel) -> Self {
        Self { parts: None, value: std::sync::OnceLock::from(value) }
    }

    pub fn get(&self) -> &Cel {
        self.value.get_or_init(|| match &self.parts {
            Some(parts) => value::map(
                ["id", "pattern", "version"]
                    .into_iter()
                    .zip(parts)
                    .map(|(k, v)| (value::key(k), Cel::String(Arc::new(v.to_string()))))
                    .collect(),
            ),
            None => Cel::Null,
        })
    }
}

impl Expr {
    pub fn compile(source: &str) -> Result<Self, ExprError> {
        let source = source.trim();
        if source.is_empty() {
            return Err(ExprError::Empty);
        }
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(ExprError::TooLarge { size: source.len(), limit: MAX_EXPRESSION_BYTES });
        }
        let program = ENV
            .compile(source)
            .map_err(|e| ExprError::Parse { text: source.to_string(), message: clean_parse_error(&e.to_string()) })?;
        let mut refs = Vec::new();
        collect_refs(program.expression(), &mut Vec::new(), false, &mut refs);
        let metered = metered(program.expression()).map(Arc::new);
        let kind = match (plain_path(program.expression()), presence_test(program.expression())) {
            (Some((root, segments)), _) => {
                ExprKind::Path { root, keys: segments.iter().map(|s| value::key(s)).collect() }
            }
            (None, Some((root, segments, field))) => ExprKind::Has {
                root,
                keys: segments.iter().map(|s| value::key(s)).collect(),
                field: value::key(&field),
                program: Arc::new(program),
            },
            (None, None) => ExprKind::Cel(Arc::new(program)),
        };
        Ok(Self { source: Arc::from(source), kind, refs: refs.into(), metered })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn references(&self) -> &[Reference] {
        &self.refs
    }

    /// Whether evaluating this expression can cost more than its size (it has a comprehension):
    /// callers that serve other work on the same thread should evaluate it off that thread.
    pub fn is_costly(&self) -> bool {
        self.metered.is_some()
    }

    /// Whether the expression is a plain variable path (and so has a statically known type).
    pub fn as_path(&self) -> Option<&Reference> {
        match self.kind {
            ExprKind::Path { .. } => self.refs.first(),
            ExprKind::Has { .. } | ExprKind::Cel(_) | ExprKind::Node(_) => None,
        }
    }

    /// The syntax tree of an expression that is not a plain path (for static typing).
    pub fn syntax(&self) -> Option<&IdedExpr> {
        match &self.kind {
            ExprKind::Cel(program) | ExprKind::Has { program, .. } => Some(program.expression()),
            ExprKind::Node(node) => Some(node),
            ExprKind::Path { .. } => None,
        }
    }

    /// When the expression is `event.PATH == VALUE` (either way round) and VALUE does not read the
    /// event: PATH (below `event`) and VALUE as an expression of its own.
    pub fn correlation(&self) -> Option<(Vec<String>, Expr)> {
        let ExprKind::Cel(program) = &self.kind else { return None };
        let Ast::Call(call) = &program.expression().expr else { return None };
        if call.func_name != "_==_" || call.target.is_some() || call.args.len() != 2 {
            return None;
        }
        let side = |event: &IdedExpr, other: &IdedExpr| -> Option<(Vec<String>, Expr)> {
            let (Root::Event, path) = plain_path(event)? else { return None };
            let mut refs = Vec::new();
            collect_refs(other, &mut Vec::new(), false, &mut refs);
            if path.is_empty() || refs.iter().any(|r| r.root == "event") {
                return None;
            }
            let metered = metered(other).map(Arc::new);
            let kind = match plain_path(other) {
                Some((root, segments)) => {
                    ExprKind::Path { root, keys: segments.iter().map(|s| value::key(s)).collect() }
                }
                None => ExprKind::Node(Arc::new(other.clone())),
            };
            Some((path, Expr { source: self.source.clone(), kind, refs: refs.into(), metered }))
        };
        side(&call.args[0], &call.args[1]).or_else(|| side(&call.args[1], &call.args[0]))
    }

    pub fn eval(&self, scope: &Scope<'_>) -> Result<Cel, EvalError> {
        match (&self.kind, &self.metered) {
            (ExprKind::Path { root, keys }, _) => self.eval_path(*root, keys, scope),
            (ExprKind::Has { root, keys, field, .. }, _) => self.eval_has(*root, keys, field, scope),
            (_, Some(tree)) => self.eval_metered(tree, scope),
            (ExprKind::Cel(program), None) => self.eval_cel(|ctx| program.execute(ctx), scope, false),
            (ExprKind::Node(node), None) => self.eval_cel(|ctx| Cel::resolve(node, ctx), scope, false),
        }
    }

    /// Evaluates the metered tree under a meter set from the scope's budget, then charges the
    /// budget what was spent.
    fn eval_metered(&self, tree: &IdedExpr, scope: &Scope<'_>) -> Result<Cel, EvalError> {
        let (limit, remaining, deadline) = match scope.budget {
            Some(b) => (b.per_expression, b.remaining(), b.deadline),
            None => (CostLimits::DEFAULT.per_expression, u64::MAX, None),
        };
        let execution_bound = remaining < limit;
        let meter = Meter {
            left: limit.min(remaining),
            execution_bound,
            limit: if execution_bound { scope.budget.map_or(limit, |_| remaining) } else { limit },
            deadline,
            spent: 0,
            overrun: None,
        };
        let outer = METER.with(|m| m.replace(Some(meter)));
        let result = self.eval_cel(|ctx| Cel::resolve(tree, ctx), scope, true);
        let meter = METER.with(|m| m.replace(outer)).unwrap_or(meter);
        if let Some(b) = scope.budget {
            let _ =
                b.remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| Some(r.saturating_sub(meter.spent)));
        }
        match meter.overrun {
            None => result,
            Some(Overrun::Deadline) => Err(EvalError {
                expression: self.source.to_string(),
                message: "the execution's deadline passed while it was evaluated".into(),
                kind: EvalErrorKind::DeadlineExceeded,
            }),
            Some(Overrun::Expression(limit)) => Err(EvalError {
                expression: self.source.to_string(),
                message: format!(
                    "stopped after {} of its {limit} cost units (one unit: one node of a comprehension's body for one element); \
                     the limit is `limits.cel_cost_per_expression`",
                    meter.spent
                ),
                kind: EvalErrorKind::CostExceeded,
            }),
            Some(Overrun::Execution(left)) => Err(EvalError {
                expression: self.source.to_string(),
                message: format!(
                    "the execution's CEL cost budget is spent ({left} units were left); the limit is `limits.cel_cost_per_execution`"
                ),
                kind: EvalErrorKind::CostExceeded,
            }),
        }
    }

    fn eval_cel(
        &self,
        run: impl FnOnce(&Context) -> Result<Cel, cel::ExecutionError>,
        scope: &Scope<'_>,
        metered: bool,
    ) -> Result<Cel, EvalError> {
        {
            {
                let mut ctx = Context::with_env(ENV.clone());
                if metered {
                    // A name no document can declare (`__` is reserved), so this cannot fail.
                    let _ = ctx.add_function(ITERATE, iterate);
                }
                // Only the variables the expression reads: the CEL interpreter copies each one
                // whole into a form of its own (every map, list and string of it), so binding all
                // of them cost a `when: has(input.x)` a copy of every step's output (~6 % of
                // Nexus's CPU per execution of user_creation). Which ones it reads is known from
                // its syntax tree (`collect_refs`: every identifier not bound by a macro); an
                // unbound one fails as undeclared, as it would have anyway.
                let reads = |root: &str| self.refs.iter().any(|r| r.root == root);
                if reads("input") {
                    ctx.add_variable_from_value("input", scope.input.clone());
                }
                if reads("steps") {
                    ctx.add_variable_from_value("steps", value::map(self.steps_read(scope.steps)));
                }
                if reads("execution") {
                    ctx.add_variable_from_value("execution", scope.execution.get().clone());
                }
                if let Some(item) = scope.item.filter(|_| reads("item")) {
                    ctx.add_variable_from_value("item", item.clone());
                }
                if let Some(index) = scope.index.filter(|_| reads("index")) {
                    ctx.add_variable_from_value("index", Cel::Int(index));
                }
                if let Some(event) = scope.event.filter(|_| reads("event")) {
                    ctx.add_variable_from_value("event", event.clone());
                }
                run(&ctx).map_err(|e| self.error(e.to_string()))
            }
        }
    }

    /// The outputs `steps` holds for this expression: those of the steps it names
    /// (`steps.<id>…`), or all of them where it reads `steps` itself (`size(steps)`, a
    /// comprehension over it). A named step without an output is left out either way.
    fn steps_read(&self, steps: &HashMap<Key, Cel>) -> HashMap<Key, Cel> {
        let refs = self.refs.iter().filter(|r| r.root == "steps");
        if refs.clone().any(|r| r.segments.is_empty()) {
            return steps.clone();
        }
        refs.filter_map(|r| r.step())
            .filter_map(|id| steps.get_key_value(&value::key(id)).map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    /// `has(path.field)` without the CEL interpreter (which would copy every variable it binds):
    /// as in CEL, a missing value on the way to `path` fails; a present map answers.
    fn eval_has(&self, root: Root, keys: &[Key], field: &Key, scope: &Scope<'_>) -> Result<Cel, EvalError> {
        if root == Root::Steps && keys.is_empty() {
            return Ok(Cel::Bool(scope.steps.contains_key(field)));
        }
        match self.eval_path(root, keys, scope)? {
            Cel::Map(m) => Ok(Cel::Bool(m.get(&key_ref(field)).is_some())),
            other => Err(self.error(format!("cannot test for `{}` in a {}", key_str(field), type_name(&other)))),
        }
    }

    fn eval_path(&self, root: Root, keys: &[Key], scope: &Scope<'_>) -> Result<Cel, EvalError> {
        let mut rest = keys;
        let mut current: &Cel = match root {
            Root::Input => scope.input,
            Root::Execution => scope.execution.get(),
            Root::Item => scope.item.ok_or_else(|| self.error("`item` is only set inside for_each"))?,
            Root::Index => {
                return match (scope.index, keys.is_empty()) {
                    (Some(i), true) => Ok(Cel::Int(i)),
                    _ => Err(self.error("`index` is only set inside for_each")),
                };
            }
            Root::Event => scope.event.ok_or_else(|| {
                self.error("`event` is only set in a trigger's filter and input and in a wait_for match")
            })?,
            Root::Steps => {
                let Some((step, tail)) = keys.split_first() else {
                    return Ok(value::map(scope.steps.clone()));
                };
                rest = tail;
                scope.steps.get(step).ok_or_else(|| {
                    self.error(format!("step `{}` has no output (it was skipped or has not run)", key_str(step)))
                })?
            }
        };
        for k in rest {
            current = match current {
                Cel::Map(m) => m
                    .get(&key_ref(k))
                    .ok_or_else(|| self.error(format!("no field `{}` in the value read", key_str(k))))?,
                other => {
                    return Err(self.error(format!("cannot read `{}` of a {}", key_str(k), type_name(other))));
                }
            };
        }
        Ok(current.clone())
    }

    fn error(&self, message: impl Into<String>) -> EvalError {
        EvalError { expression: self.source.to_string(), message: message.into(), kind: EvalErrorKind::Invalid }
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${{{{ {} }}}}", self.source)
    }
}

/// The CEL parser's first line, without its `ERROR: <input>:` prefix and source excerpt.
fn clean_parse_error(raw: &str) -> String {
    let first = raw.trim().lines().next().unwrap_or_default();
    let first = first.trim_start_matches("ERROR: ").trim_start_matches("<input>:");
    format!("at {first}")
}

fn key_ref(k: &Key) -> KeyRef<'_> {
    match k {
        Key::String(s) => KeyRef::String(s),
        Key::Int(i) => KeyRef::Int(*i),
        Key::Uint(u) => KeyRef::Uint(*u),
        Key::Bool(b) => KeyRef::Bool(*b),
    }
}

fn key_str(k: &Key) -> String {
    match k {
        Key::String(s) => s.to_string(),
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
    }
}

fn plain_path(e: &IdedExpr) -> Option<(Root, Vec<String>)> {
    let mut segments = Vec::new();
    let mut cur = e;
    loop {
        match &cur.expr {
            Ast::Ident(name) => {
                segments.reverse();
                return Root::parse(name).map(|r| (r, segments));
            }
            Ast::Select(s) if !s.test => {
                segments.push(s.field.clone());
                cur = &s.operand;
            }
            _ => return None,
        }
    }
}

/// `has(root.a.b.c)`: the path to the map (`root`, `a`, `b`) and the field tested (`c`).
fn presence_test(e: &IdedExpr) -> Option<(Root, Vec<String>, String)> {
    let Ast::Select(s) = &e.expr else { return None };
    if !s.test {
        return None;
    }
    let (root, segments) = plain_path(&s.operand)?;
    Some((root, segments, s.field.clone()))
}

/// Collects the variable paths an expression reads. Comprehension variables (from `map`,
/// `filter`, `all`, ...) are tracked in `bound` so they are not mistaken for free variables.
fn collect_refs(e: &IdedExpr, bound: &mut Vec<String>, guarded: bool, out: &mut Vec<Reference>) {
    match &e.expr {
        Ast::Ident(name) => {
            if !bound.contains(name) {
                out.push(Reference { root: name.clone(), segments: Vec::new(), guarded });
            }
        }
        Ast::Select(s) => {
            // Walk down a select chain to its root identifier when there is one.
            let mut segments = vec![s.field.clone()];
            let mut cur = &s.operand;
            let guarded = guarded || s.test;
            loop {
                match &cur.expr {
                    Ast::Select(inner) => {
                        segments.push(inner.field.clone());
                        cur = &inner.operand;
                    }
                    Ast::Ident(name) => {
                        if !bound.contains(name) {
                            segments.reverse();
                            out.push(Reference { root: name.clone(), segments, guarded });
                        }
                        return;
                    }
                    _ => {
                        collect_refs(cur, bound, guarded, out);
                        return;
                    }
                }
            }
        }
        Ast::Call(c) => {
            if let Some(t) = &c.target {
                collect_refs(t, bound, guarded, out);
            }
            for a in &c.args {
                collect_refs(a, bound, guarded, out);
            }
        }
        Ast::Comprehension(c) => {
            collect_refs(&c.iter_range, bound, guarded, out);
            collect_refs(&c.accu_init, bound, guarded, out);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            collect_refs(&c.loop_cond, bound, guarded, out);
            collect_refs(&c.loop_step, bound, guarded, out);
            collect_refs(&c.result, bound, guarded, out);
            bound.truncate(before);
        }
        Ast::List(l) => {
            for item in &l.elements {
                collect_refs(item, bound, guarded, out);
            }
        }
        Ast::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    collect_refs(&me.key, bound, guarded, out);
                    collect_refs(&me.value, bound, guarded, out);
                }
            }
        }
        Ast::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(f) = &entry.expr {
                    collect_refs(&f.value, bound, guarded, out);
                }
            }
        }
        Ast::Literal(_) | Ast::Unspecified => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Templates

/// A JSON value in which strings may hold `${{ }}` expressions.
#[derive(Clone, Debug)]
pub enum Template {
    /// No expression anywhere inside (kept in both forms so evaluation does not convert).
    Literal(serde_json::Value, Cel),
    /// The whole string is one expression: its typed value.
    Expr(Expr),
    /// Text around expressions: a string.
    Interpolate(Vec<Segment>),
    Object(Vec<(String, Template)>),
    List(Vec<Template>),
}

#[derive(Clone, Debug)]
pub enum Segment {
    Text(String),
    Expr(Expr),
}

/// A template failed to compile at `path`.
#[derive(Debug, Clone)]
pub struct TemplateError {
    pub path: String,
    pub error: ExprError,
}

impl Template {
    /// Compiles a JSON value, collecting an error per bad expression (with its path below `path`).
    pub fn compile(value: &serde_json::Value, path: &str, errors: &mut Vec<TemplateError>) -> Self {
        match value {
            serde_json::Value::String(s) => match parse_string(s) {
                Ok(t) => t,
                Err(error) => {
                    errors.push(TemplateError { path: path.to_string(), error });
                    literal(value)
                }
            },
            serde_json::Value::Object(o) => {
                let fields: Vec<(String, Template)> =
                    o.iter().map(|(k, v)| (k.clone(), Template::compile(v, &format!("{path}.{k}"), errors))).collect();
                if fields.iter().all(|(_, t)| matches!(t, Template::Literal(..))) {
                    literal(value)
                } else {
                    Template::Object(fields)
                }
            }
            serde_json::Value::Array(a) => {
                let items: Vec<Template> =
                    a.iter().enumerate().map(|(i, v)| Template::compile(v, &format!("{path}[{i}]"), errors)).collect();
                if items.iter().all(|t| matches!(t, Template::Literal(..))) {
                    literal(value)
                } else {
                    Template::List(items)
                }
            }
            other => literal(other),
        }
    }

    /// Every expression in the template, each with its path.
    pub fn expressions<'a>(&'a self, path: &str, out: &mut Vec<(String, &'a Expr)>) {
        match self {
            Template::Literal(..) => {}
            Template::Expr(e) => out.push((path.to_string(), e)),
            Template::Interpolate(segments) => {
                for s in segments {
                    if let Segment::Expr(e) = s {
                        out.push((path.to_string(), e));
                    }
                }
            }
            Template::Object(fields) => {
                for (k, t) in fields {
                    t.expressions(&format!("{path}.{k}"), out);
                }
            }
            Template::List(items) => {
                for (i, t) in items.iter().enumerate() {
                    t.expressions(&format!("{path}[{i}]"), out);
                }
            }
        }
    }

    /// Whether any expression inside is costly (see [`Expr::is_costly`]).
    pub fn is_costly(&self) -> bool {
        match self {
            Template::Literal(..) => false,
            Template::Expr(e) => e.is_costly(),
            Template::Interpolate(segments) => segments.iter().any(|s| matches!(s, Segment::Expr(e) if e.is_costly())),
            Template::Object(fields) => fields.iter().any(|(_, t)| t.is_costly()),
            Template::List(items) => items.iter().any(Template::is_costly),
        }
    }

    pub fn eval(&self, scope: &Scope<'_>) -> Result<Cel, EvalError> {
        match self {
            Template::Literal(_, v) => Ok(v.clone()),
            Template::Expr(e) => e.eval(scope),
            Template::Interpolate(segments) => {
                let mut out = String::new();
                for s in segments {
                    match s {
                        Segment::Text(t) => out.push_str(t),
                        Segment::Expr(e) => append_display(&mut out, &e.eval(scope)?),
                    }
                }
                Ok(Cel::String(Arc::new(out)))
            }
            Template::Object(fields) => {
                let mut out = HashMap::with_capacity(fields.len());
                for (k, t) in fields {
                    out.insert(value::key(k), t.eval(scope)?);
                }
                Ok(value::map(out))
            }
            Template::List(items) => {
                Ok(Cel::List(Arc::new(items.iter().map(|t| t.eval(scope)).collect::<Result<_, _>>()?)))
            }
        }
    }
}

fn literal(v: &serde_json::Value) -> Template {
    Template::Literal(v.clone(), value::serde_to_cel(v))
}

fn append_display(out: &mut String, v: &Cel) {
    use std::fmt::Write;
    let _ = match v {
        Cel::String(s) => write!(out, "{s}"),
        Cel::Int(i) => write!(out, "{i}"),
        Cel::UInt(u) => write!(out, "{u}"),
        Cel::Float(f) => write!(out, "{f}"),
        Cel::Bool(b) => write!(out, "{b}"),
        Cel::Null => Ok(()),
        other => write!(out, "{}", value::cel_to_serde(other)),
    };
}

/// Compiles a field that holds one expression (`when`, `for_each`): either `${{ expr }}` or the
/// bare expression.
pub fn parse_single(s: &str) -> Result<Expr, ExprError> {
    if !s.contains("${{") {
        return Expr::compile(s);
    }
    match parse_string(s)? {
        Template::Expr(e) => Ok(e),
        _ => Err(ExprError::Parse {
            text: s.to_string(),
            message: "must be exactly one `${{ expression }}` with no text around it".into(),
        }),
    }
}

/// Splits a string into text and `${{ }}` expressions.
fn parse_string(s: &str) -> Result<Template, ExprError> {
    if !s.contains("${{") {
        return Ok(literal(&serde_json::Value::String(s.to_string())));
    }
    let mut segments = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            segments.push(Segment::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 3..];
        let end = find_close(after).ok_or(ExprError::Unterminated)?;
        segments.push(Segment::Expr(Expr::compile(&after[..end])?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_string()));
    }
    if let [Segment::Expr(e)] = segments.as_slice() {
        return Ok(Template::Expr(e.clone()));
    }
    Ok(Template::Interpolate(segments))
}

/// Position of the `}}` closing an expression, skipping quoted strings (CEL map literals and
/// strings may contain braces).
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope_eval(t: &Template, input: serde_json::Value) -> Cel {
        let input = value::serde_to_cel(&input);
        let steps = HashMap::new();
        let exec = ExecutionVar::of(Cel::Null);
        t.eval(&Scope {
            input: &input,
            steps: &steps,
            item: None,
            index: None,
            execution: &exec,
            event: None,
            budget: None,
        })
        .unwrap()
    }

    fn eval_with(source: &str, input: serde_json::Value, budget: Option<&Budget>) -> Result<Cel, EvalError> {
        let input = value::serde_to_cel(&input);
        let steps = HashMap::new();
        let exec = ExecutionVar::of(Cel::Null);
        Expr::compile(source).unwrap().eval(&Scope {
            input: &input,
            steps: &steps,
            item: None,
            index: None,
            execution: &exec,
            event: None,
            budget,
        })
    }

    /// Only the variables an expression reads are bound, and of `steps` only the outputs it
    /// names — unless it reads `steps` as a whole.
    #[test]
    fn expressions_see_every_variable_they_read() {
        let input = value::serde_to_cel(&serde_json::json!({"n": 1}));
        let steps: HashMap<Key, Cel> = [
            (value::key("a"), value::serde_to_cel(&serde_json::json!({"x": 1, "tags": ["p", "q"]}))),
            (value::key("b"), value::serde_to_cel(&serde_json::json!({"y": 2}))),
        ]
        .into();
        let exec = ExecutionVar::new(Arc::from("e1"), Arc::from("p"), Arc::from("1.0.0"));
        let (item, event) = (Cel::Int(7), value::serde_to_cel(&serde_json::json!({"type": "t"})));
        let scope = Scope {
            input: &input,
            steps: &steps,
            item: Some(&item),
            index: Some(3),
            execution: &exec,
            event: Some(&event),
            budget: None,
        };
        for (source, expected) in [
            ("has(input.n)", Cel::Bool(true)),
            ("size(steps)", Cel::Int(2)),
            ("steps.all(s, s != 'c')", Cel::Bool(true)),
            ("has(steps.b) && steps.a.x == 1", Cel::Bool(true)),
            ("has(steps.c)", Cel::Bool(false)),
            ("steps.a.tags.exists(t, t == 'q') && steps.b.y == 2", Cel::Bool(true)),
            ("input.n + steps.a.x + item + index", Cel::Int(12)),
            ("execution.id + '/' + event.type", Cel::String(Arc::new("e1/t".into()))),
            ("execution.pattern + '@' + execution.version", Cel::String(Arc::new("p@1.0.0".into()))),
            ("size(execution)", Cel::Int(3)),
        ] {
            let got = Expr::compile(source).unwrap().eval(&scope);
            assert_eq!(got.map_err(|e| e.to_string()), Ok(expected), "{source}");
        }
        // A name that is no variable is still undeclared.
        let err = Expr::compile("nothing + 1").unwrap().eval(&scope).unwrap_err();
        assert!(err.to_string().contains("nothing"), "{err}");
    }

    /// `has(path.field)` is answered by lookups, as the CEL interpreter answers it.
    #[test]
    fn presence_tests_answer_as_cel_does() {
        let input = value::serde_to_cel(&serde_json::json!({"n": 1, "m": {"a": {"b": true}}, "s": ""}));
        let steps: HashMap<Key, Cel> =
            [(value::key("a"), value::serde_to_cel(&serde_json::json!({"x": 1, "o": {"p": null}})))].into();
        let exec = ExecutionVar::of(Cel::Null);
        let scope = Scope {
            input: &input,
            steps: &steps,
            item: None,
            index: None,
            execution: &exec,
            event: None,
            budget: None,
        };
        for path in [
            "input.n",
            "input.zz",
            "input.s",
            "input.m.a",
            "input.m.a.b",
            "input.m.zz",
            "steps.a",
            "steps.c",
            "steps.a.x",
            "steps.a.o.p",
            "steps.a.y",
        ] {
            let fast = Expr::compile(&format!("has({path})")).unwrap();
            assert!(matches!(fast.kind, ExprKind::Has { .. }), "{path}");
            let interpreted = Expr::compile(&format!("has({path}) == true")).unwrap();
            assert_eq!(fast.eval(&scope).unwrap(), interpreted.eval(&scope).unwrap(), "has({path})");
        }
        for path in ["input.n.x", "input.zz.x", "steps.c.x", "item.x"] {
            let fast = Expr::compile(&format!("has({path})")).unwrap();
            let interpreted = Expr::compile(&format!("has({path}) == true")).unwrap();
            assert!(fast.eval(&scope).is_err() && interpreted.eval(&scope).is_err(), "has({path}) fails both ways");
        }
    }

    #[test]
    fn comprehensions_are_metered_and_give_the_same_answers() {
        let input = serde_json::json!({"xs": [1, 2, 3, 4], "m": {"a": 1, "b": 2}});
        for (source, expected) in [
            ("input.xs.all(x, x > 0)", Cel::Bool(true)),
            ("input.xs.exists(x, x > 3)", Cel::Bool(true)),
            ("input.xs.exists_one(x, x > 3)", Cel::Bool(true)),
            ("size(input.xs.filter(x, x % 2 == 0))", Cel::Int(2)),
            ("input.xs.map(x, x * 2)[3]", Cel::Int(8)),
            ("input.m.all(k, input.m[k] > 0)", Cel::Bool(true)),
            ("input.xs.all(x, input.xs.exists(y, y == x))", Cel::Bool(true)),
        ] {
            let e = Expr::compile(source).unwrap();
            assert!(e.is_costly(), "{source}");
            let budget = Budget::new(CostLimits::DEFAULT, None);
            assert_eq!(eval_with(source, input.clone(), Some(&budget)).unwrap(), expected, "{source}");
            assert!(budget.remaining() < CostLimits::DEFAULT.per_execution, "{source} charged nothing");
        }
        assert!(!Expr::compile("input.xs[0] + 1").unwrap().is_costly());
    }

    #[test]
    fn a_nested_comprehension_stops_at_the_expression_budget_quickly() {
        // 22^6 ≈ 113 M iterations unmetered (minutes); metered, it stops within the budget.
        let xs: Vec<i64> = (0..22).collect();
        let source = "input.xs.all(a, input.xs.all(b, input.xs.all(c, input.xs.all(d, input.xs.all(e, \
                      input.xs.all(f, a + b + c + d + e + f >= 0))))))";
        let started = std::time::Instant::now();
        let budget = Budget::new(CostLimits { per_expression: 100_000, per_execution: 10_000_000 }, None);
        let err = eval_with(source, serde_json::json!({"xs": xs}), Some(&budget)).unwrap_err();
        assert_eq!(err.kind, EvalErrorKind::CostExceeded, "{err}");
        assert!(err.message.contains("100000 cost units"), "{err}");
        assert!(err.message.contains("limits.cel_cost_per_expression"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
        // What it spent is charged to the execution.
        assert!(budget.remaining() <= 10_000_000 - 90_000, "{}", budget.remaining());

        // Without a budget in scope, the default per-expression limit still applies.
        let err = eval_with(source, serde_json::json!({"xs": xs}), None).unwrap_err();
        assert_eq!(err.kind, EvalErrorKind::CostExceeded, "{err}");
    }

    #[test]
    fn the_execution_budget_is_shared_by_its_evaluations() {
        let xs: Vec<i64> = (0..100).collect();
        let budget = Budget::new(CostLimits { per_expression: 200_000, per_execution: 150_000 }, None);
        let source = "input.xs.all(a, input.xs.exists(b, b == a))";
        // About 100 × (the outer body) + 100 × 100 × (the inner body) ≈ 80,000 units: inside one
        // expression's budget, but not twice inside the execution's.
        let first = eval_with(source, serde_json::json!({"xs": xs}), Some(&budget));
        assert_eq!(first.unwrap(), Cel::Bool(true));
        let err = eval_with(source, serde_json::json!({"xs": xs}), Some(&budget)).unwrap_err();
        assert_eq!(err.kind, EvalErrorKind::CostExceeded, "{err}");
        assert!(err.message.contains("limits.cel_cost_per_execution"), "{err}");
    }

    #[test]
    fn a_metered_evaluation_stops_at_the_deadline() {
        let xs: Vec<i64> = (0..22).collect();
        let deadline = std::time::Instant::now();
        let budget = Budget::new(CostLimits::DEFAULT, Some(deadline));
        let err =
            eval_with("input.xs.all(a, input.xs.all(b, a + b >= 0))", serde_json::json!({"xs": xs}), Some(&budget))
                .unwrap_err();
        assert_eq!(err.kind, EvalErrorKind::DeadlineExceeded, "{err}");
    }

    fn template(s: &str) -> Template {
        let mut errors = Vec::new();
        let t = Template::compile(&serde_json::Value::String(s.into()), "x", &mut errors);
        assert!(errors.is_empty(), "{:?}", errors.first().map(|e| e.error.to_string()));
        t
    }

    #[test]
    fn whole_expression_keeps_its_type() {
        let t = template("${{ input.n * 2 }}");
        assert_eq!(scope_eval(&t, serde_json::json!({"n": 21})), Cel::Int(42));
    }

    #[test]
    fn interpolation_yields_a_string() {
        let t = template("Welcome ${{ input.name }} (${{ input.n }})!");
        let v = scope_eval(&t, serde_json::json!({"name": "Ada", "n": 3}));
        assert_eq!(v, Cel::String(Arc::new("Welcome Ada (3)!".into())));
    }

    #[test]
    fn references_are_collected_with_guards() {
        let e = Expr::compile("has(steps.avatar.asset) ? steps.avatar.asset.url : input.x").unwrap();
        let refs: Vec<String> = e.references().iter().map(ToString::to_string).collect();
        assert_eq!(refs, ["steps.avatar.asset", "steps.avatar.asset.url", "input.x"]);
        assert!(e.references()[0].guarded);
        let e = Expr::compile("input.items.map(i, i.price).sum()")
            .unwrap_or_else(|_| Expr::compile("input.items.map(i, i.price)").unwrap());
        assert!(e.references().iter().all(|r| r.root == "input"));
    }

    #[test]
    fn braces_inside_strings_do_not_close() {
        let t = template("${{ {'a': '}}'}.a }}");
        assert_eq!(scope_eval(&t, serde_json::json!({})), Cel::String(Arc::new("}}".into())));
    }

    #[test]
    fn bad_expressions_are_reported() {
        let mut errors = Vec::new();
        Template::compile(&serde_json::json!({"a": "${{ input. }}", "b": "${{ x"}), "with", &mut errors);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].path, "with.a");
    }
}

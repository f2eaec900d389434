//! The static type environment of expressions: `input.*` from the input schema, `steps.X.*` from
//! the output message of what step X calls. Known once calls resolve; used to resolve paths and
//! to type-check requests.

use std::{cell::RefCell, collections::HashMap};

use crate::{
    expr::{self, Expr},
    input::InputSchema,
    pb,
    typecheck::{Ty, TypeEnv},
    wire::Reads,
};

use super::{
    Draft,
    model::{PatternLookup, Target},
};

pub(super) struct Env<'a> {
    input: &'a InputSchema,
    step_types: HashMap<String, Ty>,
    patterns: &'a dyn PatternLookup,
    /// What the expressions read of each step's output, noted as their references are checked
    /// (`references::check_reference`, which every `steps.X…` read passes).
    reads: RefCell<Vec<Reads>>,
}

impl<'a> Env<'a> {
    /// A step whose call did not resolve has no entry: paths into it read as `dyn`, so they add
    /// no diagnostics on top of the unresolved call.
    pub(super) fn new(
        input: &'a InputSchema,
        doc: &pb::Pattern,
        drafts: &[Draft],
        patterns: &'a dyn PatternLookup,
    ) -> Self {
        let step_types = drafts
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
                    // The event published, or the event that matched.
                    Target::Emit(_) | Target::Wait(_) => Ty::Event,
                };
                let ty = if d.for_each.is_some() { Ty::List(Box::new(ty)) } else { ty };
                Some((s.id.clone(), ty))
            })
            .collect();
        Self { input, step_types, patterns, reads: RefCell::new(vec![Reads::NONE; doc.steps.len()]) }
    }

    /// Notes that an expression reads `path` (field names below the output) of step `step`'s output.
    pub(super) fn note_read(&self, step: usize, path: &[String]) {
        if let Some(reads) = self.reads.borrow_mut().get_mut(step) {
            reads.add(path);
        }
    }

    /// What the expressions read of each step's output, by step index.
    pub(super) fn into_reads(self) -> Vec<Reads> {
        self.reads.into_inner()
    }

    /// The type a variable path reads, or why the path does not exist (`event.data` as `dyn`).
    pub(super) fn resolve(&self, r: &expr::Reference) -> Result<Ty, String> {
        self.resolve_in(r, None)
    }

    /// [`Env::resolve`] where `event` is an event of `event_type` (a `wait_for` branch's match).
    pub(super) fn resolve_in(&self, r: &expr::Reference, event_type: Option<&str>) -> Result<Ty, String> {
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
            "event" => event_path(&r.segments, event_type, self.patterns),
            _ => Ok(Ty::Dyn),
        }
    }
}

/// The type of `event.<segments>` read from an event of `event_type` (`None`: of no single
/// type): `event.data.*` against the type's registered schema, when there is one, `dyn`
/// otherwise.
pub(super) fn event_path(
    segments: &[String],
    event_type: Option<&str>,
    patterns: &dyn PatternLookup,
) -> Result<Ty, String> {
    if let (Some((first, rest)), Some(t)) = (segments.split_first(), event_type)
        && first == "data"
        && let Some(schema) = patterns.event_schema(t)
    {
        return schema.resolve_named(rest, "event.data", &format!(" of `{t}`"), "its schema").map(|t| Ty::of_input(&t));
    }
    let mut ty = Ty::Event;
    let mut walked = "event".to_string();
    for seg in segments {
        ty = ty.select(seg, &walked)?;
        walked.push('.');
        walked.push_str(seg);
    }
    Ok(ty)
}

impl TypeEnv for Env<'_> {
    fn type_of(&self, e: &Expr) -> Ty {
        match e.as_path() {
            Some(r) => self.resolve(r).unwrap_or(Ty::Dyn),
            None => e.syntax().map_or(Ty::Dyn, infer),
        }
    }
}

/// The type of an expression's result where its operators and literals say it whatever its
/// variables hold (`1 + 2` is an int, `a == b` a bool, `'x' + y` a string, `size(l)` an int);
/// `dyn` where that takes the variables' types. Catches `to: "${{ 1 + 2 }}"` at registration
/// instead of at run time.
fn infer(e: &cel::common::ast::IdedExpr) -> Ty {
    use cel::common::ast::{Expr as Ast, LiteralValue as L};
    match &e.expr {
        Ast::Literal(L::Int(_)) => Ty::Int,
        Ast::Literal(L::UInt(_)) => Ty::UInt,
        Ast::Literal(L::Double(_)) => Ty::Double,
        Ast::Literal(L::String(_)) => Ty::String,
        Ast::Literal(L::Boolean(_)) => Ty::Bool,
        Ast::Literal(L::Bytes(_)) => Ty::Bytes,
        Ast::Call(call) => {
            let args: Vec<Ty> = call.args.iter().map(infer).collect();
            match (call.func_name.as_str(), call.target.is_some(), args.as_slice()) {
                ("_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "_&&_" | "_||_" | "!_" | "@in", _, _) => Ty::Bool,
                ("has" | "startsWith" | "endsWith" | "contains" | "matches", _, _) => Ty::Bool,
                ("size", _, _) | ("int", false, _) => Ty::Int,
                ("uint", false, _) => Ty::UInt,
                ("double", false, _) => Ty::Double,
                ("string", false, _) => Ty::String,
                ("_+_", _, [Ty::String, _] | [_, Ty::String]) => Ty::String,
                ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", _, [a, b]) if same_number(a, b) => a.clone(),
                ("-_", _, [a]) if same_number(a, a) => a.clone(),
                ("_?_:_", _, [_, a, b]) if same_scalar(a, b) => a.clone(),
                _ => Ty::Dyn,
            }
        }
        _ => Ty::Dyn,
    }
}

fn same_number(a: &Ty, b: &Ty) -> bool {
    matches!((a, b), (Ty::Int, Ty::Int) | (Ty::UInt, Ty::UInt) | (Ty::Double, Ty::Double))
}

fn same_scalar(a: &Ty, b: &Ty) -> bool {
    same_number(a, b) || matches!((a, b), (Ty::String, Ty::String) | (Ty::Bool, Ty::Bool) | (Ty::Bytes, Ty::Bytes))
}

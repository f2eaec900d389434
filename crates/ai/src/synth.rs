//! GeneratePattern's offline path: type-directed synthesis over the catalog.
//!
//! A goal names what the pattern starts from (typed inputs), what it must produce (output names),
//! and which actions it must call (`end_with`, `use`, or verbs and nouns in its words). Synthesis
//! picks, for each wanted output, the actions whose responses offer a value of that name; adds
//! the actions that produce the ids those need (`order_id` ← CreateOrder's `order.id`) until every
//! reference is filled from the input or an earlier step; orders them by what feeds what; fills
//! each request field from the best-fitting value of the same type (pattern input or earlier
//! output, see [`crate::names::fit`]); and ranks the candidates — every wanted output made, every
//! reference filled, fewest steps, best name fits, actions the goal's words name, actions used
//! together in registered patterns. Each candidate is compiled against the real catalog (the
//! same `compile` as RegisterPattern): one that does not type-check is never returned.

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use nexus_core::{Catalog, Diagnostic, PatternLookup, compile, document, pb};
use serde_json::{Map, Value, json};

use crate::{
    index::{ActionInfo, Index, Offer, Slot, VTy},
    names::{FieldWords, ValueWords, canon, canonical_verb, fit, is_generic_verb, is_stop, words},
};

/// Most steps a generated pattern has.
pub const MAX_STEPS: usize = 8;
/// Most candidates returned.
pub const MAX_CANDIDATES: usize = 20;
/// Longest goal text, in bytes.
pub const MAX_GOAL_TEXT: usize = 4096;
/// Most goal inputs, outputs or `use` actions.
pub const MAX_GOAL_FIELDS: usize = 32;

/// What the pattern should do.
#[derive(Debug, Clone, Default)]
pub struct Goal {
    /// In words: "create a user and send them a welcome email".
    pub text: String,
    /// The pattern's input fields; empty: whatever the steps need becomes an input.
    pub inputs: Vec<GoalField>,
    /// Names the pattern's output must have.
    pub outputs: Vec<GoalField>,
    /// The action of the last step.
    pub end_with: Option<String>,
    /// Actions the pattern must call.
    pub use_actions: Vec<String>,
    /// The generated pattern's name (default: from the goal).
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GoalField {
    pub name: String,
    /// A proto scalar, `integer`/`number`/`boolean`, or a message/enum full name; empty: any.
    pub ty: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GoalError {
    #[error("the goal is empty: give its words, its outputs, `end_with` or `use`")]
    Empty,
    #[error("{what} is too long: {size} (the limit is {limit})")]
    TooBig { what: &'static str, size: usize, limit: usize },
    #[error("{field}: `{action}` is not an action in the catalog{hint}")]
    UnknownAction { field: &'static str, action: String, hint: String },
    #[error("{field}: `{action}` is restricted: the caller may not register a pattern that calls it")]
    Restricted { field: &'static str, action: String },
    #[error(
        "inputs[{index}].type: `{ty}` is not a proto scalar type, `integer`, `number`, `boolean` or a message or enum of the catalog"
    )]
    UnknownType { index: usize, ty: String },
    #[error("{field}: `{name}` is not a valid field name (letters, digits and `_`, starting with a letter)")]
    BadName { field: String, name: String },
}

/// Options of one generation.
pub struct Options<'a> {
    pub limit: usize,
    /// Actions the caller may use (restricted actions are left out for callers who could not
    /// register them); `None`: all.
    pub allowed: Option<&'a dyn Fn(&str) -> bool>,
    /// How often two actions are called by the same registered pattern (`(a, b)` with `a < b`).
    pub together: &'a HashMap<(String, String), u32>,
}

/// One proposed pattern.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub pattern: pb::Pattern,
    pub score: f64,
    /// Why these steps and these wires, one line each.
    pub explanation: Vec<String>,
    /// Warnings of the compiler (never errors: a candidate with errors is dropped).
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug)]
pub struct Generated {
    pub candidates: Vec<Candidate>,
    /// Candidates built and dropped because they did not type-check (should stay 0).
    pub rejected: usize,
    pub elapsed: std::time::Duration,
}

/// A source of a value: the pattern input, or a step's output.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Input(String),
    Step { step: usize, path: String },
}

struct Plan {
    /// Indexes into `Index::actions`, in execution order.
    steps: Vec<usize>,
    /// `with` of each step: field → source.
    wires: Vec<BTreeMap<String, (Source, f64)>>,
    /// Pattern inputs: name → type.
    inputs: BTreeMap<String, VTy>,
    outputs: Vec<(String, Source, f64)>,
    unfilled_references: usize,
    explanation: Vec<String>,
}

/// Actions found by one scan of the catalog, with their fit, by (action, field name).
type FitCache = std::cell::RefCell<HashMap<(usize, String), Vec<(usize, f64)>>>;

struct Ctx<'a> {
    index: &'a Index,
    goal: &'a Goal,
    allowed: Vec<bool>,
    /// The goal's typed inputs.
    inputs: Vec<(String, VTy, ValueWords)>,
    /// Whether the goal fixes the inputs (else unfilled fields become inputs).
    fixed_inputs: bool,
    text: Vec<String>,
    /// Per word of `text`: whether it may be a verb the goal orders (see [`goal_tokens`]).
    commands: Vec<bool>,
    together: &'a HashMap<(String, String), u32>,
    /// Per (consumer action, field): the actions that could make it, with their fit.
    producers: FitCache,
    /// Per goal input: the actions that take it.
    consumers: FitCache,
    /// Per (consumer action, field): the reads that offer it.
    getters: FitCache,
}

/// Proposes up to `options.limit` patterns for `goal`, best first, each type-checked against
/// `catalog` (and the registered patterns `patterns` it may call).
pub fn generate(
    goal: &Goal,
    index: &Index,
    catalog: &Catalog,
    patterns: &dyn PatternLookup,
    options: &Options<'_>,
) -> Result<Generated, GoalError> {
    let started = Instant::now();
    check_goal(goal)?;
    let allowed: Vec<bool> = index.actions.iter().map(|a| options.allowed.is_none_or(|f| f(&a.name))).collect();
    let mut inputs = Vec::new();
    for (i, field) in goal.inputs.iter().enumerate() {
        let ty = if field.ty.is_empty() {
            VTy { ty: crate::index::Ty::Str, list: false }
        } else {
            VTy::parse(&field.ty, index).ok_or_else(|| GoalError::UnknownType { index: i, ty: field.ty.clone() })?
        };
        let w = words(&field.name);
        inputs.push((field.name.clone(), ty, ValueWords { leaf: w.clone(), path: w, ..Default::default() }));
    }
    let (text, commands) = goal_tokens(&goal.text);
    let ctx = Ctx {
        index,
        goal,
        allowed,
        fixed_inputs: !goal.inputs.is_empty(),
        inputs,
        text,
        commands,
        together: options.together,
        producers: Default::default(),
        consumers: Default::default(),
        getters: Default::default(),
    };

    let mut required = Vec::new();
    if let Some(end) = &goal.end_with {
        required.push(ctx.resolve("end_with", end)?);
    }
    for action in &goal.use_actions {
        let at = ctx.resolve("use", action)?;
        if !required.contains(&at) {
            required.push(at);
        }
    }
    for at in ctx.mentioned() {
        if !required.contains(&at) {
            required.push(at);
        }
    }

    // Each wanted output no required action or input offers: its best producers, one per
    // alternative.
    let mut choices: Vec<(FieldWords, Vec<usize>)> = Vec::new();
    for out in &goal.outputs {
        let ow = FieldWords::new(&out.name, None);
        let met = ctx.inputs.iter().any(|(n, _, _)| *n == out.name)
            || required.iter().any(|&a| best_offer(&ow, &index.actions[a], None).is_some_and(|(_, f)| f >= 0.75));
        if met {
            continue;
        }
        let mut producers: Vec<(usize, f64)> = (0..index.actions.len())
            .filter(|&a| ctx.allowed[a])
            .filter_map(|a| {
                let (o, f) = best_origin(&ow, &index.actions[a], None)?;
                // An id is made by the action whose entity it is (`channel.id`), not by one
                // that holds a copy of it (some `Contract.channel_id`).
                let own = 0.1 * (is_own_id(&ow, o) as u8 as f64);
                (f >= 0.5).then(|| (a, quantize(f) + own + ctx.prior(&required, a)))
            })
            .collect();
        producers.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        producers.truncate(3);
        if !producers.is_empty() {
            choices.push((ow, producers.into_iter().map(|(a, _)| a).collect()));
        }
    }
    if required.is_empty() && choices.is_empty() {
        return Ok(Generated { candidates: Vec::new(), rejected: 0, elapsed: started.elapsed() });
    }

    // Every combination of producers (bounded), each closed over the ids it needs.
    let mut sets: Vec<Vec<usize>> = Vec::new();
    let mut combo = vec![0usize; choices.len()];
    'combos: for _ in 0..81 {
        let mut set = required.clone();
        for ((ow, c), &pick) in choices.iter().zip(&combo) {
            // An output a step already picked reports itself (NotifyCustomer's `channel` next
            // to its `notification_id`: a top-level field of its response) or makes (its
            // entity's own id) needs no producer of its own. (A field of an entity —
            // `playlist.item_count` — is state later steps may change: its producer stays.)
            let made = set.iter().any(|&a| {
                best_origin(ow, &index.actions[a], None).is_some_and(|(o, f)| {
                    f >= 0.95
                        && (is_own_id(ow, o) || !o.path.contains('.') && o.words.leaf.last().is_none_or(|w| w != "id"))
                })
            });
            if !made && !set.contains(&c[pick]) {
                set.push(c[pick]);
            }
        }
        for closed in ctx.close(set) {
            let mut key = closed.clone();
            key.sort_unstable();
            if !sets.iter().any(|s| {
                let mut k = s.clone();
                k.sort_unstable();
                k == key
            }) {
                sets.push(closed);
            }
        }
        // Next combination (odometer).
        for i in 0..combo.len() {
            combo[i] += 1;
            if combo[i] < choices[i].1.len() {
                continue 'combos;
            }
            combo[i] = 0;
        }
        break;
    }

    if debug() {
        eprintln!("sets: {} after {:?}", sets.len(), started.elapsed());
    }
    // Plans best first; only as many are compiled as are returned (compiling is the costly
    // part on a large catalog).
    let mut plans: Vec<(f64, Plan)> = sets
        .into_iter()
        .filter_map(|set| {
            let names: Vec<&str> =
                if debug() { set.iter().map(|&a| short(&index.actions[a].name)).collect() } else { Vec::new() };
            let plan = ctx.plan(set, goal.end_with.as_deref());
            if debug() && plan.is_none() {
                eprintln!("no plan: [{}]", names.join(", "));
            }
            plan
        })
        .map(|plan| (ctx.score(&plan), plan))
        .collect();
    plans.sort_by(|a, b| b.0.total_cmp(&a.0));
    if debug() {
        eprintln!("plans: {} after {:?}", plans.len(), started.elapsed());
    }
    let limit = options.limit.clamp(1, MAX_CANDIDATES);
    let mut candidates = Vec::new();
    let mut rejected = 0;
    for (score, plan) in plans {
        if candidates.len() >= limit {
            break;
        }
        if debug() {
            let steps: Vec<&str> = plan.steps.iter().map(|&a| short(&index.actions[a].name)).collect();
            eprintln!("candidate {score:.2}: [{}] {}", steps.join(", "), plan.explanation.join("; "));
        }
        let doc = ctx.document(&plan);
        match document::from_json(doc) {
            Ok(pattern) => match compile(&pattern, catalog, patterns) {
                Ok((_, warnings)) => {
                    candidates.push(Candidate { pattern, score, explanation: plan.explanation, warnings })
                }
                Err(diags) => {
                    rejected += 1;
                    if debug() {
                        eprintln!(
                            "rejected: {}",
                            diags.iter().map(|d| format!("{}: {}", d.path, d.message)).collect::<Vec<_>>().join("; ")
                        );
                    }
                }
            },
            Err(_) => rejected += 1,
        }
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(Generated { candidates, rejected, elapsed: started.elapsed() })
}

/// Fits this close to 1.0 say the same thing (`user_id` ← `user_id` or ← `user.id`).
fn quantize(f: f64) -> f64 {
    if f >= 0.95 { 1.0 } else { f }
}

/// Whether to trace the search on stderr (`NEXUS_SYNTH_DEBUG=1`).
fn debug() -> bool {
    std::env::var_os("NEXUS_SYNTH_DEBUG").is_some()
}

/// Stands for "it", "them", "its", "their" in the goal's words.
const PRONOUN: &str = "@it";

/// The goal's words, verbs canonicalized, pronouns kept as [`PRONOUN`].
#[cfg(test)]
fn goal_words(text: &str) -> Vec<String> {
    goal_tokens(text).0
}

/// Words right before which a word is not an order to do something: an article or possessive
/// makes it a noun or an adjective ("an *authorized* payment", "the *order*"), a subject or
/// relative pronoun makes it the verb of a description ("the customer who *placed* it", "the
/// order it *pays*"). Imperative goals put their verbs after punctuation, conjunctions or
/// objects, never right after these.
const DESCRIBERS: &[&str] = &[
    "a", "an", "the", "its", "their", "his", "her", "this", "these", "those", "my", "our", "your", "it", "they", "he",
    "she", "we", "who", "which", "that", "whose",
];

/// The goal's words (see [`goal_words`]) and, for each, whether it may be a verb the goal
/// orders: not when it directly follows one of the [`DESCRIBERS`] (punctuation in between
/// breaks the link: "transcode it, caption it").
fn goal_tokens(text: &str) -> (Vec<String>, Vec<bool>) {
    let mut raw: Vec<(&str, bool)> = Vec::new();
    let mut start = None;
    let mut previous: Option<&str> = None;
    let mut only_space = true;
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '\'';
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        if i < text.len() && is_word(c) {
            if start.is_none() {
                start = Some(i);
            }
            continue;
        }
        if let Some(s) = start.take() {
            let token = &text[s..i];
            let described =
                only_space && previous.is_some_and(|p| DESCRIBERS.contains(&p.to_ascii_lowercase().as_str()));
            raw.push((token, !described));
            previous = Some(token);
            only_space = true;
        }
        if i < text.len() && !c.is_whitespace() {
            only_space = false;
        }
    }
    let mut tokens: Vec<(String, bool)> = Vec::new();
    for (t, command) in raw {
        let lower = t.to_ascii_lowercase();
        if matches!(lower.as_str(), "it" | "its" | "them" | "their" | "they" | "him" | "her") {
            tokens.push((PRONOUN.to_string(), command));
        } else if !is_stop(&lower) {
            for (k, w) in words(t.trim_end_matches("'s").trim_matches('\'')).into_iter().enumerate() {
                tokens.push((w, command && k == 0));
            }
        }
    }
    // Phrasal verbs that mean "create": "sign up a viewer", "set up a stream".
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut commands: Vec<bool> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let (word, command) = &tokens[i];
        let phrasal = matches!(word.as_str(), "sign" | "set") && tokens.get(i + 1).is_some_and(|t| t.0 == "up");
        if phrasal {
            out.push("creat".to_string());
            commands.push(*command);
            i += 2;
            continue;
        }
        out.push(canonical_verb(word).map(str::to_string).unwrap_or_else(|| word.clone()));
        commands.push(*command);
        i += 1;
    }
    (out, commands)
}

fn check_goal(goal: &Goal) -> Result<(), GoalError> {
    if goal.text.trim().is_empty() && goal.outputs.is_empty() && goal.end_with.is_none() && goal.use_actions.is_empty()
    {
        return Err(GoalError::Empty);
    }
    if goal.text.len() > MAX_GOAL_TEXT {
        return Err(GoalError::TooBig { what: "the goal's text", size: goal.text.len(), limit: MAX_GOAL_TEXT });
    }
    for (what, n) in [("inputs", goal.inputs.len()), ("outputs", goal.outputs.len()), ("use", goal.use_actions.len())] {
        if n > MAX_GOAL_FIELDS {
            return Err(GoalError::TooBig { what, size: n, limit: MAX_GOAL_FIELDS });
        }
    }
    for (list, fields) in [("inputs", &goal.inputs), ("outputs", &goal.outputs)] {
        for (i, f) in fields.iter().enumerate() {
            let ok = f.name.len() <= 64
                && f.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && f.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(GoalError::BadName {
                    field: format!("{list}[{i}].name"),
                    name: f.name.chars().take(64).collect(),
                });
            }
        }
    }
    Ok(())
}

/// The offer of `action` that best fits `field` (and, when given, its type).
fn best_offer<'a>(field: &FieldWords, action: &'a ActionInfo, ty: Option<&VTy>) -> Option<(&'a Offer, f64)> {
    action
        .offers
        .iter()
        .filter_map(|o| {
            let f = typed_fit(field, o, ty);
            (f > 0.0).then_some((o, f))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// How well offer `o` fits `field` of type `ty`: by name, and — for a message of the API's own
/// (an `Address`, a `Money`; not a well-known `google.protobuf` type, which says nothing of what
/// it holds) — at least a little by type alone: a `destination` "Where the parcel goes." is an
/// `Address` an order's `shipping_address` can be, whatever their names.
fn typed_fit(field: &FieldWords, o: &Offer, ty: Option<&VTy>) -> f64 {
    let t = ty.map_or(1.0, |ty| o.ty.fits(ty));
    let f = fit(field, &o.words) * t;
    let own_message =
        ty.is_some_and(|ty| !ty.list && matches!(&ty.ty, crate::index::Ty::Msg(m) if !m.starts_with("google.")));
    if own_message && t == 1.0 { f.max(TYPE_ONLY_FIT) } else { f }
}

/// The fit [`typed_fit`] gives a value of the very message type a field wants, names aside:
/// enough to fill a required field, not an optional one (see [`enrich_least`]).
const TYPE_ONLY_FIT: f64 = 0.6;

/// The offer of `action` that best fits `field` among those that are not echoes of its own
/// request (see [`Offer::echoes`]): what an action can be added to the pattern to *make*.
fn best_origin<'a>(field: &FieldWords, action: &'a ActionInfo, ty: Option<&VTy>) -> Option<(&'a Offer, f64)> {
    action
        .offers
        .iter()
        .filter(|o| !echoes_for(o, action, field))
        .filter_map(|o| {
            let f = typed_fit(field, o, ty);
            (f > 0.0).then_some((o, f))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Whether the goal's words (see [`goal_tokens`]) name offer `o` — a role another entity holds
/// (`channel.owner_id`, not an entity's own id like `video.channel_id`) — as "the owner of a
/// channel" (the role's word, then the entity's within three words) or "the channel's owner"
/// (the entity's word right before).
fn names_role(text: &[String], o: &Offer) -> bool {
    let leaf = &o.words.leaf;
    if o.words.names_entity || leaf.len() < 2 || leaf.last().is_none_or(|w| w != "id") {
        return false;
    }
    let (Some(role), Some(entity)) = (leaf.get(leaf.len() - 2), o.words.entity.last()) else {
        return false;
    };
    text.iter().enumerate().any(|(i, t)| {
        t == role && (text[i + 1..text.len().min(i + 4)].contains(entity) || i > 0 && text[i - 1] == *entity)
    })
}

/// Whether `o` only describes another entity than the one `consumer` creates, for a field that
/// describes the new one: CreatePlaylist's `description` is the playlist's own, not a copy of
/// the channel's `channel.description` a read brought along — unless the field's comment says
/// where its value comes from (`destination` "usually the order's shipping address").
fn describes_other(consumer: &ActionInfo, slot: &Slot, o: &Offer) -> bool {
    let creates = consumer.method_words.first().is_some_and(|w| canon(w) == "creat");
    let entity = &o.words.entity;
    creates
        && !slot.is_reference
        && !entity.is_empty()
        && !entity.iter().all(|w| consumer.method_words.contains(w))
        && !entity.iter().all(|w| slot.words.comment.contains(w) || slot.words.name.contains(w))
}

/// How well a read's value must fit a field that is no reference for the read to be added to
/// fill it (and to run before the step). A message of the catalog's own (an `Address`, a
/// `Money`) is told by its type: a name that fits a little (`destination` "Delivery address,
/// usually the order's shipping address" ← `order.shipping_address`) is enough. So is a
/// required scalar whose comment says what it holds (`to` "Recipient address." ← `user.email`):
/// the call means nothing without it. An optional scalar must be named as the field.
fn enrich_least(slot: &Slot) -> f64 {
    if matches!(slot.ty.ty, crate::index::Ty::Msg(_)) || !slot.optional { 0.6 } else { 0.9 }
}

/// Whether `o` is the entity's own id wanted as `field` (`payment_id` ← `payment.id`), not a
/// copy of it another entity holds (`order.payment_id`).
fn is_own_id(field: &FieldWords, o: &Offer) -> bool {
    field.name.last().is_some_and(|w| w == "id") && o.words.leaf == ["id"]
}

/// Whether offer `o` of `action` is, for `field`, only an echo of the action's request. Not when
/// the field names what the action does to it: `translated_track_id` is TranslateCaptions' new
/// `track.id`, not the `track_id` it was given.
fn echoes_for(o: &Offer, action: &ActionInfo, field: &FieldWords) -> bool {
    o.echoes.is_some() && !action.method_words.first().is_some_and(|verb| field.name.contains(verb))
}

impl Ctx<'_> {
    fn resolve(&self, field: &'static str, action: &str) -> Result<usize, GoalError> {
        match self.index.position(action) {
            Some(at) if self.allowed[at] => Ok(at),
            Some(_) => Err(GoalError::Restricted { field, action: action.to_string() }),
            None => {
                let names = self.index.actions.iter().zip(&self.allowed).filter(|(_, ok)| **ok).map(|(a, _)| &*a.name);
                let hint = nexus_core::diagnostic::suggest(action, names)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                Err(GoalError::UnknownAction { field, action: action.to_string(), hint })
            }
        }
    }

    /// Actions the goal's words name: a verb followed closely by the method's other words
    /// ("create a user" → CreateUser, "place an order" → CreateOrder), a one-word method
    /// ("subscribe"), the second word of a method whose first only says "do it" ("transcode
    /// it" → StartTranscode), or the verb of the method's comment ("start a broadcast" →
    /// CreateBroadcast, "Starts a live broadcast"). When the method's other words are not in the
    /// text, the comment's words close after the verb may say it instead ("check that they may
    /// watch it" → CheckAccess, "Whether a user may watch …"). For each verb in the text, the
    /// best such action; the method's words closer to the verb count more, so "create a user,
    /// start a broadcast" names CreateUser, not CreateBroadcast.
    fn mentioned(&self) -> Vec<usize> {
        // Twice: a verb two look-alike actions of different APIs answer equally well ("send an
        // email") goes, the second time, to the one of the API the other named actions are of
        // (see [`strays`]).
        let first = self.mentioned_near(None);
        let names = first.iter().map(|&a| &*self.index.actions[a].name);
        match dominant_root(names) {
            Some(root) if first.len() > 1 => self.mentioned_near(Some(root)),
            _ => first,
        }
    }

    fn mentioned_near(&self, root: Option<&str>) -> Vec<usize> {
        let text = &self.text;
        let mut out = Vec::new();
        for (i, verb) in text.iter().enumerate() {
            if !self.commands.get(i).copied().unwrap_or(true) {
                continue;
            }
            let mut best: Option<(usize, f64)> = None;
            // The verb's object comes before the verb is ordered again ("open a channel for
            // an account, set up a live stream": the stream is the second create's).
            let mut end = text.len().min(i + 7);
            if let Some(again) =
                (i + 1..end).find(|&j| text[j] == *verb && self.commands.get(j).copied().unwrap_or(true))
            {
                end = again;
            }
            let window = &text[i + 1..end];
            // 2.0 right after the verb, less further away.
            let closeness = |w: &str| window.iter().position(|t| t == w).map_or(0.0, |d| 2.0 / (1.0 + 0.3 * d as f64));
            for (a, info) in self.index.actions.iter().enumerate() {
                if !self.allowed[a] || info.method_words.is_empty() {
                    continue;
                }
                let method: Vec<&str> = info.method_words.iter().map(|w| canon(w)).collect();
                let (rest, penalty) = if method[0] == verb {
                    (&method[1..], 0.0)
                } else if method.len() == 2 && method[0] != "creat" && is_generic_verb(method[0]) && method[1] == verb {
                    (&method[2..], 0.5)
                } else if info.comment_verb.as_deref() == Some(verb.as_str()) && method.len() > 1 {
                    // (A one-word method named only by its comment's verb — Subscribe, "Streams
                    // a broadcast's chunks" — has nothing else the text could confirm: "a live
                    // stream" is no call to it.)
                    (&method[1..], 0.7)
                } else {
                    continue;
                };
                // The method's other words close after the verb ("refund its payment"), or, when
                // a pronoun follows it ("scan it"), anywhere before.
                let near = rest.iter().filter(|w| window.iter().any(|t| t == *w)).count();
                let proximity: f64 = rest.iter().map(|w| closeness(w)).sum();
                let pronoun = text.get(i + 1).is_some_and(|t| t == PRONOUN);
                let before =
                    if pronoun { rest.iter().filter(|w| text[..i].iter().any(|t| t == *w)).count() } else { 0 };
                let anywhere = near.max(before);
                let mut extra = 0.0;
                if anywhere < rest.len() {
                    // The comment's words instead: two of them close after the verb ("put the
                    // stream on air" → "Puts a stream on air"), or — when the method's own verb
                    // is the goal's — one ("store their avatar from a URL" → UploadAsset,
                    // "Stores a copy of the file at `source_url`"), which counts less.
                    let described = window
                        .iter()
                        .filter(|t| *t != PRONOUN && *t != verb && info.comment_words.contains(*t))
                        .count();
                    // The one word must also name a field the action takes ("URL" →
                    // `source_url`): a stray shared word ("first") says nothing.
                    let takes = |t: &String| info.slots.iter().any(|s| s.words.name.contains(t));
                    let own_verb = penalty == 0.0
                        && anywhere == 0
                        && window.iter().any(|t| t != verb && info.comment_words.contains(t) && takes(t));
                    if described < 2 && !(own_verb && described == 1) {
                        continue;
                    }
                    extra = described as f64 * 0.5 - 1.0 - if described < 2 { 0.5 } else { 0.0 };
                }
                // More of the method named (close to the verb), and the service named too.
                let service = info.service_words.iter().filter(|w| text.contains(w)).count() as f64;
                let comment = info.comment_words.iter().filter(|w| text.contains(w)).count() as f64;
                let home = root.is_some_and(|r| info.name.split('.').next() == Some(r));
                let score = proximity + (anywhere - near) as f64 + service + 0.2 * comment + extra
                    - 0.5 * (rest.is_empty() as u8 as f64)
                    - penalty
                    + 0.3 * (home as u8 as f64);
                if best.is_none_or(|(_, s)| score > s) {
                    best = Some((a, score));
                }
            }
            if let Some((a, _)) = best
                && !out.contains(&a)
            {
                out.push(a);
            }
        }
        out
    }

    /// How much of the goal's words an action's names and comment carry.
    fn text_relevance(&self, a: usize) -> f64 {
        if self.text.is_empty() {
            return 0.0;
        }
        let info = &self.index.actions[a];
        let hits = info.method_words.iter().filter(|w| self.text.iter().any(|t| t == canon(w))).count() as f64
            + 0.5 * info.service_words.iter().filter(|w| self.text.contains(w)).count() as f64;
        hits / (info.method_words.len() as f64 + 0.5 * info.service_words.len() as f64).max(1.0)
    }

    /// Whether `a` only reads (its verb says so): reads are what a goal that gives an id and
    /// asks for facts about it wants.
    fn is_read(&self, a: usize) -> bool {
        self.index.actions[a].method_words.first().is_some_and(|w| {
            matches!(
                canon(w),
                "get"
                    | "list"
                    | "search"
                    | "check"
                    | "validat"
                    | "watch"
                    | "track"
                    | "count"
                    | "estimat"
                    | "preview"
                    | "verify"
                    | "describ"
                    | "quot"
                    | "calculat"
                    | "recommend"
            )
        })
    }

    /// Whether `a` creates an entity whose id the goal already gives (CreateOrder when the
    /// input has `order_id`): almost never what is meant.
    fn creates_given(&self, a: usize) -> bool {
        let method = &self.index.actions[a].method_words;
        method.first().is_some_and(|w| canon(w) == "creat")
            && self.inputs.iter().any(|(n, _, _)| {
                let w = words(n);
                w.last().is_some_and(|l| l == "id") && w.len() > 1 && method[1..].ends_with(&w[..w.len() - 1])
            })
    }

    /// How good a choice `a` is to make something, beyond its name's fit.
    fn prior(&self, set: &[usize], a: usize) -> f64 {
        0.3 * self.text_relevance(a) + 0.5 * (self.grounded(set, a) as u8 as f64) + 0.3 * (self.is_read(a) as u8 as f64)
            - 0.8 * (self.creates_given(a) as u8 as f64)
            - 0.1 * self.unfillable(a) as f64
    }

    /// References of `a` that neither the goal's inputs nor any other action could fill.
    fn unfillable(&self, a: usize) -> usize {
        self.index.actions[a]
            .slots
            .iter()
            .filter(|s| s.is_reference && self.input_fit(s).is_none_or(|(_, f)| f < 0.75))
            .count()
    }

    fn input_fit(&self, slot: &Slot) -> Option<(String, f64)> {
        self.inputs
            .iter()
            .map(|(n, ty, w)| (n.clone(), fit(&slot.words, w) * ty.fits(&slot.ty)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The best fit for `slot` of `consumer` among the goal's inputs and the offers of the
    /// other members of `set`.
    fn available(&self, set: &[usize], consumer: usize, slot: &Slot) -> f64 {
        let from_input = self.input_fit(slot).map_or(0.0, |(_, f)| f);
        set.iter()
            .filter(|&&b| b != consumer)
            .filter_map(|&b| best_offer(&slot.words, &self.index.actions[b], Some(&slot.ty)).map(|(_, f)| f))
            .fold(from_input, f64::max)
    }

    /// Whether every reference of `a` could be filled from the goal's inputs or `set`.
    fn grounded(&self, set: &[usize], a: usize) -> bool {
        self.index.actions[a].slots.iter().filter(|s| s.is_reference).all(|s| self.available(set, a, s) >= 0.75)
    }

    /// A reference nothing fills that the goal's words say is a role of another entity ("a
    /// playlist owned by *the owner of a channel*", "the channel's owner"): the read of that
    /// entity that offers the role (GetChannel's `channel.owner_id`). Without such words the
    /// reference is simply left to the caller.
    fn role_read(&self, set: &[usize], skipped: &[String]) -> Option<(String, Vec<usize>, bool)> {
        let actions = &self.index.actions;
        for &a in set {
            for slot in actions[a].slots.iter().filter(|s| s.is_reference) {
                let key = format!("role:{a}:{}", slot.name);
                // Filled by a member that does not itself take what `a` makes (AddVideo's
                // `playlist.owner_id` is CreatePlaylist's own, after the fact).
                let filled = self.input_fit(slot).is_some_and(|(_, f)| f >= 0.75)
                    || set.iter().filter(|&&b| b != a && !self.takes_from(b, a)).any(|&b| {
                        best_origin(&slot.words, &actions[b], Some(&slot.ty)).is_some_and(|(_, f)| f >= 0.75)
                    });
                if skipped.contains(&key) || filled {
                    continue;
                }
                let found = self.cached(&self.getters, (a, key.clone()), || {
                    (0..actions.len())
                        .filter(|&b| b != a && self.allowed[b] && self.is_plain_get(b))
                        .filter_map(|b| {
                            let (o, f) = best_origin(&slot.words, &actions[b], Some(&slot.ty))?;
                            (f >= 0.75 && names_role(&self.text, o)).then_some((b, f))
                        })
                        .collect()
                });
                let best = found
                    .into_iter()
                    .filter(|(b, _)| !set.contains(b))
                    .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)));
                if let Some((b, _)) = best {
                    return Some((key, vec![b], true));
                }
            }
        }
        None
    }

    /// Whether some reference of `b` is one `a` makes: `b` runs after `a`.
    fn takes_from(&self, b: usize, a: usize) -> bool {
        let actions = &self.index.actions;
        actions[b]
            .slots
            .iter()
            .filter(|s| s.is_reference)
            .any(|s| best_origin(&s.words, &actions[a], Some(&s.ty)).is_some_and(|(_, f)| f >= 0.75))
    }

    /// Whether `b` reads one entity by reference (`GetOrder`): what may be added to a pattern to
    /// learn something about what it already has.
    fn is_plain_get(&self, b: usize) -> bool {
        let info = &self.index.actions[b];
        !info.server_streaming
            && info.method_words.first().is_some_and(|w| canon(w) == "get")
            && info.slots.iter().any(|s| s.is_reference)
    }

    /// When the goal leaves the inputs open: whether every reference of read `a` names what
    /// some step of `set` already takes and nothing makes — a value that becomes a pattern
    /// input (GetOrder on CreateShipment's `order_id`). Reading what the caller already names
    /// adds no input the goal did not call for.
    fn on_taken(&self, set: &[usize], a: usize) -> bool {
        if self.fixed_inputs {
            return false;
        }
        let actions = &self.index.actions;
        actions[a].slots.iter().filter(|s| s.is_reference).all(|s| {
            set.iter().filter(|&&b| b != a).any(|&b| {
                actions[b].slots.iter().any(|t| {
                    let taken = ValueWords {
                        leaf: t.words.name.clone(),
                        path: t.words.name.clone(),
                        comment: t.words.comment.clone(),
                        names_entity: t.words.names_entity,
                        ..Default::default()
                    };
                    t.is_reference
                        && fit(&s.words, &taken) * t.ty.fits(&s.ty) >= 0.75
                        && self.available(set, b, t) < 0.75
                })
            })
        })
    }

    /// Whether every reference of `a` could be filled from the goal's inputs or from values
    /// other members of `set` make. Stricter than [`Ctx::grounded`]: a value a member only
    /// echoes (TrackShipment's `shipment_id`) was given to it by something else — for a read
    /// that is to feed a step, likely by the very step it would feed.
    fn made_for(&self, set: &[usize], a: usize) -> bool {
        self.index.actions[a].slots.iter().filter(|s| s.is_reference).all(|s| {
            let from_input = self.input_fit(s).map_or(0.0, |(_, f)| f);
            set.iter()
                .filter(|&&b| b != a)
                .filter_map(|&b| best_origin(&s.words, &self.index.actions[b], Some(&s.ty)).map(|(_, f)| f))
                .fold(from_input, f64::max)
                >= 0.75
        })
    }

    /// The first thing `set` lacks, and the actions that would supply it (best first). `optional`
    /// gaps may also be left as they are.
    fn gap(&self, set: &[usize], skipped: &[String]) -> Option<(String, Vec<usize>, bool)> {
        let actions = &self.index.actions;
        let rank = |mut found: Vec<(usize, f64)>, n: usize| -> Vec<usize> {
            found.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
            found.into_iter().take(n).map(|(a, _)| a).collect()
        };
        // A reference nothing fills: an action that makes it.
        for &a in set {
            for slot in actions[a].slots.iter().filter(|s| s.is_reference) {
                let key = format!("ref:{a}:{}", slot.name);
                if skipped.contains(&key) || self.available(set, a, slot) >= 0.75 {
                    continue;
                }
                let found = self.cached(&self.producers, (a, slot.name.clone()), || {
                    (0..actions.len())
                        .filter(|&b| b != a && self.allowed[b] && !actions[b].server_streaming)
                        .filter_map(|b| {
                            let (_, f) = best_origin(&slot.words, &actions[b], Some(&slot.ty))?;
                            (f >= 0.75).then_some((b, f))
                        })
                        .collect()
                });
                let producers: Vec<(usize, f64)> = found
                    .into_iter()
                    .filter(|(b, _)| !set.contains(b))
                    .map(|(b, f)| (b, f + self.prior(set, b)))
                    .collect();
                return Some((key, rank(producers, 2), slot.optional));
            }
        }
        // A goal input nothing uses: an action that takes it.
        for (name, ty, words) in &self.inputs {
            let key = format!("input:{name}");
            let used =
                set.iter().any(|&a| actions[a].slots.iter().any(|s| fit(&s.words, words) * ty.fits(&s.ty) >= 0.6));
            if used || skipped.contains(&key) {
                continue;
            }
            let found = self.cached(&self.consumers, (usize::MAX, name.clone()), || {
                (0..actions.len())
                    .filter(|&b| self.allowed[b])
                    .filter_map(|b| {
                        let f =
                            actions[b].slots.iter().map(|s| fit(&s.words, words) * ty.fits(&s.ty)).fold(0.0, f64::max);
                        (f >= 0.9).then_some((b, f))
                    })
                    .collect()
            });
            let consumers = found
                .into_iter()
                .filter(|(b, _)| !set.contains(b))
                .filter_map(|(b, f)| {
                    let mut with = set.to_vec();
                    with.push(b);
                    let grounded = self.grounded(&with, b);
                    (f >= 0.9 && grounded).then(|| (b, f + 0.3 * self.text_relevance(b) + self.inputs_used(b)))
                })
                .collect();
            return Some((key, rank(consumers, 2), true));
        }
        self.enrichment(set, skipped)
    }

    /// A field the input does not give that a grounded read of something we have does
    /// (`destination` ← GetOrder's `order.shipping_address`), and the read.
    fn enrichment(&self, set: &[usize], skipped: &[String]) -> Option<(String, Vec<usize>, bool)> {
        let actions = &self.index.actions;
        for &a in set {
            for slot in actions[a].slots.iter().filter(|s| !s.is_reference && !s.ty.list) {
                let key = format!("enrich:{a}:{}", slot.name);
                let least = enrich_least(slot);
                if skipped.contains(&key) || self.available(set, a, slot) >= 0.6 {
                    continue;
                }
                let found = self.cached(&self.getters, (a, slot.name.clone()), || {
                    (0..actions.len())
                        .filter(|&b| {
                            self.allowed[b]
                                && !actions[b].server_streaming
                                && actions[b].method_words.first().is_some_and(|w| canon(w) == "get")
                                && actions[b].slots.iter().any(|s| s.is_reference)
                        })
                        .filter_map(|b| {
                            let (_, f) = best_origin(&slot.words, &actions[b], Some(&slot.ty))?;
                            (f >= least).then_some((b, f))
                        })
                        .collect()
                });
                // Grounded without `a`: a read that needs what `a` makes runs after it and
                // cannot feed it.
                let others: Vec<usize> = set.iter().copied().filter(|&x| x != a).collect();
                let mut getters: Vec<(usize, f64)> = found
                    .into_iter()
                    .filter(|(b, _)| !set.contains(b) && (self.made_for(&others, *b) || self.on_taken(set, *b)))
                    .collect();
                getters.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
                let Some(&(best, _)) = getters.first() else {
                    continue;
                };
                return Some((key, vec![best], true));
            }
        }
        None
    }

    /// `compute()` once per `key` for this goal: the scans of the whole catalog behind a gap
    /// do not depend on the set being completed, only the filtering after them does.
    fn cached(
        &self,
        cache: &FitCache,
        key: (usize, String),
        compute: impl FnOnce() -> Vec<(usize, f64)>,
    ) -> Vec<(usize, f64)> {
        if let Some(found) = cache.borrow().get(&key) {
            return found.clone();
        }
        let found = compute();
        cache.borrow_mut().insert(key, found.clone());
        found
    }

    /// How many of the goal's inputs an action takes.
    fn inputs_used(&self, a: usize) -> f64 {
        self.inputs
            .iter()
            .filter(|(_, ty, words)| {
                self.index.actions[a].slots.iter().any(|s| fit(&s.words, words) * ty.fits(&s.ty) >= 0.6)
            })
            .count() as f64
            * 0.2
    }

    /// Completes a set of actions: what makes the ids it needs, what uses the inputs it was
    /// given, what reads the fields the input does not give — each as alternatives, bounded.
    fn close(&self, set: Vec<usize>) -> Vec<Vec<usize>> {
        let mut done: Vec<Vec<usize>> = Vec::new();
        // Breadth first: the smallest completions are found before the visit budget runs out
        // (depth first would spend it on ever longer chains of optional enrichments).
        let mut todo: std::collections::VecDeque<(Vec<usize>, Vec<String>)> =
            std::collections::VecDeque::from([(set, Vec::new())]);
        let mut visited = 0;
        while let Some((set, skipped)) = todo.pop_front() {
            visited += 1;
            if visited > 256 || done.len() >= 64 {
                break;
            }
            // With the inputs left open, whatever nothing fills becomes an input; only reads
            // grounded on what the steps already take are worth adding (see [`Ctx::on_taken`]).
            let gap = if set.len() >= MAX_STEPS {
                None
            } else if self.fixed_inputs {
                self.gap(&set, &skipped)
            } else {
                self.role_read(&set, &skipped).or_else(|| self.enrichment(&set, &skipped))
            };
            let Some((key, fillers, optional)) = gap else {
                done.push(set);
                continue;
            };
            if optional || fillers.is_empty() {
                let mut more = skipped.clone();
                more.push(key.clone());
                todo.push_back((set.clone(), more));
            }
            for b in fillers {
                let mut next = set.clone();
                next.push(b);
                todo.push_back((next, skipped.clone()));
            }
        }
        done
    }

    /// Orders a set of actions by what feeds what and wires every field it can.
    fn plan(&self, set: Vec<usize>, end_with: Option<&str>) -> Option<Plan> {
        let actions = &self.index.actions;
        // b needs a: some reference of b is best filled from a (and not from the input), or
        // another field of b that the input does not give is one a makes (GetVideo's
        // `video.source_uri` for StartTranscode's `source_uri`).
        let needs = |b: usize, a: usize| {
            actions[b].slots.iter().any(|s| {
                let least = if s.is_reference { 0.75 } else { enrich_least(s) };
                // Only what `a` makes counts: a value `a` merely echoes (StartTranscode's
                // `job.video_id`) comes from wherever `a` got it, and must not put a read
                // that feeds `a` (GetVideo, for its `source_uri`) after it.
                let offer = best_origin(&s.words, &actions[a], Some(&s.ty));
                offer.is_some_and(|(_, f)| f >= least && self.input_fit(s).is_none_or(|(_, i)| f > i))
            })
        };
        // When two steps seem to need each other, the one that needs the other's entity's own
        // id (AddVideo: CreatePlaylist's `playlist.id`) runs second: the other only seems to
        // need a field the first reports afterwards (CreatePlaylist's `owner_id` ← AddVideo's
        // `playlist.owner_id`, which CreatePlaylist set).
        let needs_id = |b: usize, a: usize| {
            actions[b].slots.iter().filter(|s| s.is_reference).any(|s| {
                best_origin(&s.words, &actions[a], Some(&s.ty)).is_some_and(|(o, f)| {
                    f >= 0.75 && o.words.leaf == ["id"] && self.input_fit(s).is_none_or(|(_, i)| f > i)
                })
            })
        };
        let blocks = |b: usize, a: usize| needs(b, a) && (!needs(a, b) || needs_id(b, a) && !needs_id(a, b));
        let mut order: Vec<usize> = Vec::new();
        let mut left = set.clone();
        // The `end_with` action goes last whatever the order says.
        let last = end_with.and_then(|e| self.index.position(e)).filter(|p| left.contains(p));
        if let Some(l) = last {
            left.retain(|&a| a != l);
        }
        while !left.is_empty() {
            let ready = left.iter().position(|&b| !left.iter().any(|&a| a != b && blocks(b, a)));
            let at = ready.unwrap_or(0);
            order.push(left.remove(at));
        }
        order.extend(last);
        // A server stream is forwarded as the pattern's stream: it can only be the last step
        // (earlier, its output would be a list of messages no field reference fits).
        if order[..order.len() - 1].iter().any(|&a| actions[a].server_streaming) {
            return None;
        }

        let mut wires: Vec<BTreeMap<String, (Source, f64)>> = Vec::new();
        let mut inputs: BTreeMap<String, VTy> = self.inputs.iter().map(|(n, t, _)| (n.clone(), t.clone())).collect();
        let mut unfilled = 0;
        let mut explanation = Vec::new();
        for (i, &a) in order.iter().enumerate() {
            let info = &actions[a];
            let mut with = BTreeMap::new();
            for slot in &info.slots {
                let from_input = self.input_fit(slot).filter(|(_, f)| *f >= 0.5);
                // Unfixed inputs: a field of the name of an input an earlier step already
                // takes is that same value.
                let from_input = from_input.or_else(|| {
                    (!self.fixed_inputs && inputs.get(&slot.name).is_some_and(|t| *t == slot.ty))
                        .then(|| (slot.name.clone(), 1.0))
                });
                let from_step = order[..i]
                    .iter()
                    .enumerate()
                    .filter_map(|(j, &p)| {
                        let (o, f) = best_offer(&slot.words, &actions[p], Some(&slot.ty))?;
                        let own = o.words.leaf == ["id"];
                        let source = self.origin(&wires, j, p, o, &slot.words);
                        // An optional field passed along as an earlier step got it (Capture's
                        // `amount` ← the authorization's `amount`) is what its default does.
                        let made = matches!(&source, Source::Step { step, path } if *step == j && *path == o.path);
                        if slot.optional && !made {
                            return None;
                        }
                        if describes_other(info, slot, o) {
                            return None;
                        }
                        Some((source, f, j, own))
                    })
                    // An optional field is only wired from a value that clearly is it: its
                    // default is what the author most likely wants otherwise.
                    .filter(|(_, f, _, _)| {
                        *f >= if slot.is_reference {
                            0.75
                        } else if slot.optional {
                            0.9
                        } else {
                            0.6
                        }
                    })
                    // An id from the step that made it: near-equal fits count as equal; an
                    // entity's own id (`payment.id`) beats a copy another entity holds
                    // (`order.payment_id`, set only once the order is paid); then the earliest
                    // wins.
                    .max_by(|x, y| quantize(x.1).total_cmp(&quantize(y.1)).then(x.3.cmp(&y.3)).then(y.2.cmp(&x.2)))
                    .map(|(src, f, j, _)| (src, f, j));
                let chosen = match (from_input, from_step) {
                    (Some((n, fi)), Some((src, fs, _))) => {
                        if fs > fi {
                            (src, fs)
                        } else {
                            (Source::Input(n), fi)
                        }
                    }
                    (Some((n, fi)), None) => (Source::Input(n), fi),
                    (None, Some((src, fs, _))) => (src, fs),
                    (None, None) => {
                        if self.fixed_inputs {
                            if slot.is_reference && !slot.optional {
                                unfilled += 1;
                                explanation.push(format!(
                                    "{}: `{}` is left unset: nothing in the input or an earlier step offers it",
                                    short(&info.name),
                                    slot.name
                                ));
                            }
                            continue;
                        }
                        // Unfixed inputs: a scalar field nothing offers becomes an input of its
                        // own name (shared by fields of the same name and type).
                        if slot.ty.list || matches!(slot.ty.ty, crate::index::Ty::Msg(_)) && !slot.is_reference {
                            continue;
                        }
                        match inputs.get(&slot.name) {
                            Some(t) if *t != slot.ty => continue,
                            _ => {
                                inputs.insert(slot.name.clone(), slot.ty.clone());
                            }
                        }
                        (Source::Input(slot.name.clone()), 1.0)
                    }
                };
                if let Source::Step { step, path } = &chosen.0 {
                    explanation.push(format!(
                        "{}.{} ← {}.{}",
                        short(&info.name),
                        slot.name,
                        short(&actions[order[*step]].name),
                        path
                    ));
                }
                with.insert(slot.name.clone(), chosen);
            }
            wires.push(with);
        }

        let mut outputs = Vec::new();
        for out in &self.goal.outputs {
            let ow = FieldWords::new(&out.name, None);
            let want = if out.ty.is_empty() { None } else { VTy::parse(&out.ty, self.index) };
            if inputs.contains_key(&out.name) && self.fixed_inputs {
                outputs.push((out.name.clone(), Source::Input(out.name.clone()), 1.0));
                continue;
            }
            // An id comes from the step that made it (the first), a state from the last step
            // that changed it; `customer.id` is as good a `customer_id` as an echoed one.
            // Among ids, an entity's own (`payment.id`) is where it comes from; a copy of it
            // held by another entity (`order.payment_id`) comes later.
            let id_like = ow.name.last().is_some_and(|w| w == "id");
            let best = order
                .iter()
                .enumerate()
                .filter_map(|(j, &a)| {
                    let (o, f) = best_offer(&ow, &actions[a], want.as_ref())?;
                    let own = id_like && o.words.leaf == ["id"];
                    Some((j, o, quantize(f), own))
                })
                .max_by(|x, y| {
                    x.2.total_cmp(&y.2).then(x.3.cmp(&y.3)).then(if id_like { y.0.cmp(&x.0) } else { x.0.cmp(&y.0) })
                })?;
            if best.2 < 0.5 {
                return None;
            }
            // A value a step only echoes comes from where that step got it.
            let source = self.origin(&wires, best.0, order[best.0], best.1, &ow);
            explanation.push(format!("output {} ← {}.{}", out.name, short(&actions[order[best.0]].name), best.1.path));
            outputs.push((out.name.clone(), source, best.2));
        }
        if self.goal.outputs.is_empty() {
            // No outputs asked for: what the last step says about its entity (its id), or its
            // top-level fields.
            let j = order.len() - 1;
            let info = &actions[order[j]];
            let ids: Vec<&Offer> = info
                .offers
                .iter()
                .filter(|o| o.words.leaf == ["id"] || o.words.leaf.last().is_some_and(|w| w == "id"))
                .collect();
            let picked: Vec<&Offer> = if ids.is_empty() {
                info.offers.iter().filter(|o| !o.path.contains('.') && !o.ty.list).take(4).collect()
            } else {
                ids.into_iter().take(1).collect()
            };
            for o in picked {
                let name = o.path.replace('.', "_");
                outputs.push((name, Source::Step { step: j, path: o.path.clone() }, 0.5));
            }
        }
        Some(Plan { steps: order, wires, inputs, outputs, unfilled_references: unfilled, explanation })
    }

    /// Where the value of offer `o` of step `j` comes from: the step itself, or — when the offer
    /// only echoes one of the step's request fields — whatever filled that field.
    fn origin(
        &self,
        wires: &[BTreeMap<String, (Source, f64)>],
        j: usize,
        a: usize,
        o: &Offer,
        field: &FieldWords,
    ) -> Source {
        o.echoes
            .as_ref()
            .filter(|_| echoes_for(o, &self.index.actions[a], field))
            .and_then(|field| wires.get(j)?.get(field))
            .map(|(src, _)| src.clone())
            .unwrap_or_else(|| Source::Step { step: j, path: o.path.clone() })
    }

    fn score(&self, plan: &Plan) -> f64 {
        let outputs: f64 = plan.outputs.iter().map(|(_, _, f)| f).sum();
        // A reference filled from a step is what makes the steps one workflow; a field filled
        // from the input is worth a little; another field copied from a step next to nothing.
        let mut wires = 0.0;
        let mut used: Vec<&str> = Vec::new();
        for (&a, with) in plan.steps.iter().zip(&plan.wires) {
            for (field, (source, f)) in with {
                let reference = self.index.actions[a].slots.iter().any(|s| s.name == *field && s.is_reference);
                wires += match source {
                    Source::Step { .. } if reference => 0.5 * f,
                    Source::Step { .. } => 0.1 * f,
                    // An input is worth using once; more steps taking it add little.
                    Source::Input(name) if used.contains(&name.as_str()) => 0.05 * f,
                    Source::Input(name) => {
                        used.push(name);
                        0.2 * f
                    }
                };
            }
        }
        let unused = self.inputs.iter().filter(|(n, _, _)| !used.contains(&n.as_str())).count() as f64;
        let text: f64 = plan.steps.iter().map(|&a| self.text_relevance(a)).sum();
        let reads = plan.steps.iter().filter(|&&a| self.is_read(a)).count() as f64;
        let recreated = plan.steps.iter().filter(|&&a| self.creates_given(a)).count() as f64;
        let mut together = 0.0;
        for (i, &a) in plan.steps.iter().enumerate() {
            for &b in &plan.steps[i + 1..] {
                let (x, y) = (&self.index.actions[a].name, &self.index.actions[b].name);
                let key = if x < y { (x.to_string(), y.to_string()) } else { (y.to_string(), x.to_string()) };
                together += (self.together.get(&key).copied().unwrap_or(0) as f64).ln_1p().min(3.0);
            }
        }
        let strays = strays(plan.steps.iter().map(|&a| &*self.index.actions[a].name));
        3.0 * outputs + wires
            - 1.5 * plan.steps.len() as f64
            - 0.4 * strays as f64
            - 1.5 * plan.unfilled_references as f64
            - 1.2 * unused
            + 1.0 * text
            + 0.3 * reads
            - 1.0 * recreated
            + 0.2 * together
    }

    fn document(&self, plan: &Plan) -> Value {
        let actions = &self.index.actions;
        let ids = step_ids(plan.steps.iter().map(|&a| &*actions[a].name));
        let expr = |s: &Source| match s {
            Source::Input(n) => format!("${{{{ input.{n} }}}}"),
            Source::Step { step, path } => format!("${{{{ steps.{}.{} }}}}", ids[*step], path),
        };
        let steps: Vec<Value> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let mut step = Map::new();
                step.insert("id".into(), Value::String(ids[i].clone()));
                step.insert("call".into(), Value::String(actions[a].name.to_string()));
                let with: Map<String, Value> =
                    plan.wires[i].iter().map(|(k, (s, _))| (k.clone(), Value::String(expr(s)))).collect();
                if !with.is_empty() {
                    step.insert("with".into(), Value::Object(with));
                }
                if actions[a].server_streaming && i + 1 == plan.steps.len() {
                    step.insert("stream".into(), Value::Bool(true));
                }
                Value::Object(step)
            })
            .collect();
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (name, ty) in &plan.inputs {
            properties.insert(name.clone(), ty.json_schema());
            required.push(Value::String(name.clone()));
        }
        let output: Map<String, Value> =
            plan.outputs.iter().map(|(k, s, _)| (k.clone(), Value::String(expr(s)))).collect();
        let name = self
            .goal
            .name
            .clone()
            .unwrap_or_else(|| default_name(self.goal, plan.steps.iter().map(|&a| &*actions[a].name)));
        let description = if self.goal.text.trim().is_empty() {
            format!(
                "Generated: {}.",
                plan.steps.iter().map(|&a| short(&actions[a].name)).collect::<Vec<_>>().join(", then ")
            )
        } else {
            self.goal.text.trim().chars().take(200).collect()
        };
        let mut doc = json!({
            "name": name,
            "version": "1.0.0",
            "description": description,
            "durability": "ephemeral",
            "input": {"type": "object", "required": required, "properties": properties},
            "steps": steps,
        });
        if !output.is_empty()
            && let Value::Object(o) = &mut doc
        {
            o.insert("output".into(), Value::Object(output));
        }
        doc
    }
}

/// How many of `calls` come from another API than most of them do — by the first component of
/// their proto package (`demo` in `demo.user.v1.UserService/CreateUser`). A gateway's catalog
/// joins the APIs of many teams or vendors, often with look-alike methods (two `SendEmail`s); a
/// workflow mostly stays within one of them, so a step from elsewhere needs a better reason.
fn strays<'a>(calls: impl Iterator<Item = &'a str>) -> usize {
    let (total, most) = roots(calls);
    total - most.map_or(0, |(_, n)| n)
}

/// The package root most of `calls` share (on a tie, the first call's).
fn dominant_root<'a>(calls: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    roots(calls).1.map(|(r, _)| r)
}

/// How many calls, and the most common package root with its count.
fn roots<'a>(calls: impl Iterator<Item = &'a str>) -> (usize, Option<(&'a str, usize)>) {
    let mut roots: Vec<(&str, usize)> = Vec::new();
    let mut total = 0;
    for call in calls {
        let root = call.split('.').next().unwrap_or(call);
        total += 1;
        match roots.iter_mut().find(|(r, _)| *r == root) {
            Some((_, n)) => *n += 1,
            None => roots.push((root, 1)),
        }
    }
    // The first of equally common roots: the one of the goal's first named action.
    let most = roots.iter().fold(None, |best: Option<(&str, usize)>, &(r, n)| match best {
        Some((_, m)) if m >= n => best,
        _ => Some((r, n)),
    });
    (total, most)
}

/// `demo.user.v1.UserService/CreateUser` → `UserService/CreateUser`.
fn short(action: &str) -> &str {
    match action.rfind('.') {
        Some(dot) => &action[dot + 1..],
        None => action,
    }
}

/// Step ids from the methods' names (`CreateUser` → `create_user`), numbered when repeated.
pub(crate) fn step_ids<'a>(calls: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    calls
        .map(|call| {
            let method = call.rsplit('/').next().unwrap_or(call);
            let base = snake(method);
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            if *n == 1 { base } else { format!("{base}_{n}") }
        })
        .collect()
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        }
    }
    if out.is_empty() || !out.starts_with(|c: char| c.is_ascii_alphabetic()) { format!("s_{out}") } else { out }
}

fn default_name<'a>(goal: &Goal, calls: impl Iterator<Item = &'a str>) -> String {
    let from_text: Vec<String> = goal
        .text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() > 2)
        .take(4)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let base = if from_text.is_empty() {
        calls.map(|c| snake(c.rsplit('/').next().unwrap_or(c))).collect::<Vec<_>>().join("_then_")
    } else {
        from_text.join("_")
    };
    let base: String = base.chars().take(60).collect();
    if base.starts_with(|c: char| c.is_ascii_alphabetic()) { base } else { format!("generated_{base}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::stem;

    #[test]
    fn phrasal_verbs_mean_create() {
        assert_eq!(goal_words("Sign up a viewer"), ["creat".to_string(), stem("viewer")]);
        assert_eq!(goal_words("set up a live stream")[0], "creat");
        assert_eq!(goal_words("set up a live stream").len(), 3);
        assert_eq!(goal_words("set the title"), words("set title"));
    }

    #[test]
    fn steps_from_another_api_are_strays() {
        let calls = ["demo.user.v1.UserService/GetUser", "demo.notification.v1.NotificationService/SendEmail"];
        assert_eq!(strays(calls.into_iter()), 0);
        let mixed = ["demo.user.v1.UserService/GetUser", "shop.notify.v1.MessagingService/SendEmail", "demo.a.v1.S/X"];
        assert_eq!(strays(mixed.into_iter()), 1);
        assert_eq!(strays(std::iter::empty()), 0);
    }

    #[test]
    fn verbs_in_descriptions_are_no_orders() {
        let (words, commands) = goal_tokens("Cancel an order and notify the customer who placed it");
        let placed = words.iter().position(|w| w == "creat").unwrap_or(usize::MAX);
        assert!(placed < words.len() && !commands[placed], "placed follows `who`");
        assert!(commands[0], "cancel is ordered");
        let (words, commands) = goal_tokens("Capture an authorized payment, then transcode it, caption it");
        let authorized = words.iter().position(|w| w == &stem("authorized")).unwrap_or(usize::MAX);
        assert!(authorized < words.len() && !commands[authorized]);
        let caption = words.iter().position(|w| w == "caption").unwrap_or(usize::MAX);
        assert!(caption < words.len() && commands[caption], "a comma breaks `it caption`");
    }

    #[test]
    fn an_own_id_is_the_entitys_not_a_copy() {
        let offer = |path: &str| {
            let leaf = words(path.rsplit('.').next().unwrap_or(path));
            Offer {
                path: path.to_string(),
                ty: VTy { ty: crate::index::Ty::Str, list: false },
                words: ValueWords { leaf, path: words(path), ..Default::default() },
                echoes: None,
            }
        };
        let payment_id = FieldWords::new("payment_id", None);
        assert!(is_own_id(&payment_id, &offer("payment.id")));
        assert!(!is_own_id(&payment_id, &offer("order.payment_id")));
        assert!(!is_own_id(&FieldWords::new("channel", None), &offer("channel.id")));
    }

    fn offer_of(path: &str, entity: &str, ty: VTy) -> Offer {
        let leaf = words(path.rsplit('.').next().unwrap_or(path));
        Offer {
            path: path.to_string(),
            ty,
            words: ValueWords { leaf, path: words(path), entity: words(entity), ..Default::default() },
            echoes: None,
        }
    }

    fn string() -> VTy {
        VTy { ty: crate::index::Ty::Str, list: false }
    }

    fn slot(name: &str, comment: Option<&str>, ty: VTy, optional: bool) -> Slot {
        let is_reference = name.ends_with("_id");
        Slot { name: name.to_string(), ty, words: FieldWords::new(name, comment), is_reference, optional }
    }

    #[test]
    fn roles_are_named_by_the_goals_words() {
        let owner = offer_of("channel.owner_id", "Channel", string());
        assert!(names_role(&goal_words("a playlist owned by the owner of a channel"), &owner));
        assert!(names_role(&goal_words("notify the channel's owner"), &owner));
        assert!(!names_role(&goal_words("create a playlist for an owner"), &owner));
        // An entity's own reference is no role.
        let mut channel = offer_of("video.channel_id", "Video", string());
        channel.words.names_entity = true;
        assert!(!names_role(&goal_words("the channel of a video"), &channel));
    }

    #[test]
    fn messages_of_the_api_fit_by_type() {
        let address = VTy { ty: crate::index::Ty::Msg("shop.common.v1.Address".into()), list: false };
        let destination = FieldWords::new("destination", Some("Where the parcel goes."));
        let shipping = offer_of("order.shipping_address", "Order", address.clone());
        assert_eq!(typed_fit(&destination, &shipping, Some(&address)), TYPE_ONLY_FIT);
        let time = VTy { ty: crate::index::Ty::Msg("google.protobuf.Timestamp".into()), list: false };
        let created = offer_of("order.created_at", "Order", time.clone());
        assert!(typed_fit(&FieldWords::new("deadline", None), &created, Some(&time)) < TYPE_ONLY_FIT);
        assert_eq!(typed_fit(&destination, &offer_of("order.note", "Order", string()), Some(&address)), 0.0);
    }

    #[test]
    fn required_fields_are_enriched_by_looser_fits() {
        assert_eq!(enrich_least(&slot("to", Some("Recipient address."), string(), false)), 0.6);
        assert_eq!(enrich_least(&slot("subject", Some("Default: none."), string(), true)), 0.9);
    }

    #[test]
    fn a_created_entity_is_not_described_by_another() {
        let create = ActionInfo {
            name: "x.v1.PlaylistService/CreatePlaylist".into(),
            method_words: words("CreatePlaylist"),
            service_words: words("Playlist"),
            comment_words: Default::default(),
            comment_verb: None,
            slots: Vec::new(),
            offers: Vec::new(),
            server_streaming: false,
        };
        let description = slot("description", None, string(), false);
        assert!(describes_other(&create, &description, &offer_of("channel.description", "Channel", string())));
        let destination = slot("destination", Some("usually the order's shipping address"), string(), false);
        assert!(!describes_other(&create, &destination, &offer_of("order.shipping_address", "Order", string())));
    }

    #[test]
    fn near_equal_fits_are_equal() {
        assert_eq!(quantize(0.95), 1.0);
        assert_eq!(quantize(0.9), 0.9);
    }
}

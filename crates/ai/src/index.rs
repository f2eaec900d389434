//! The catalog seen by synthesis: for each action, the fields a request can fill and the values
//! its response offers, with their types and words. Built once per catalog (500 actions: a few
//! milliseconds) and shared by every GeneratePattern call until the catalog changes.

use std::{collections::BTreeSet, sync::Arc};

use nexus_core::{Catalog, schema};
use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};

use crate::names::{FieldWords, ValueWords, words};

/// A value's type, as far as wiring is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ty {
    Str,
    Int,
    Uint,
    Float,
    Bool,
    Bytes,
    Enum(Arc<str>),
    Msg(Arc<str>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VTy {
    pub ty: Ty,
    pub list: bool,
}

impl VTy {
    /// How well a value of type `self` fills a field of type `field`: 1.0 the same, 0.9 another
    /// integer kind (range-checked when the request is built), 0.0 not at all.
    pub fn fits(&self, field: &VTy) -> f64 {
        if self.list != field.list {
            return 0.0;
        }
        match (&self.ty, &field.ty) {
            (a, b) if a == b => 1.0,
            (Ty::Int | Ty::Uint, Ty::Int | Ty::Uint) => 0.9,
            (Ty::Int | Ty::Uint, Ty::Float) => 0.8,
            _ => 0.0,
        }
    }

    /// The JSON Schema of a pattern input of this type.
    pub fn json_schema(&self) -> serde_json::Value {
        let item = match &self.ty {
            Ty::Str | Ty::Bytes => serde_json::json!({"type": "string"}),
            Ty::Int | Ty::Uint => serde_json::json!({"type": "integer"}),
            Ty::Float => serde_json::json!({"type": "number"}),
            Ty::Bool => serde_json::json!({"type": "boolean"}),
            Ty::Enum(name) => serde_json::json!({"type": "string", "description": format!("a {name} value")}),
            Ty::Msg(name) => serde_json::json!({"type": "object", "description": format!("a {name}")}),
        };
        if self.list { serde_json::json!({"type": "array", "items": item}) } else { item }
    }

    /// Parses a goal's type: a proto scalar (`string`, `int64` …), a JSON Schema type
    /// (`integer`, `number`, `boolean`), or a message or enum name known to the catalog.
    pub fn parse(text: &str, index: &Index) -> Option<VTy> {
        let (text, list) = match text.strip_suffix("[]") {
            Some(inner) => (inner, true),
            None => match text.strip_prefix("repeated ") {
                Some(inner) => (inner, true),
                None => (text, false),
            },
        };
        let ty = match text.trim() {
            "string" => Ty::Str,
            "int32" | "int64" | "sint32" | "sint64" | "sfixed32" | "sfixed64" | "integer" | "int" => Ty::Int,
            "uint32" | "uint64" | "fixed32" | "fixed64" => Ty::Uint,
            "double" | "float" | "number" => Ty::Float,
            "bool" | "boolean" => Ty::Bool,
            "bytes" => Ty::Bytes,
            other => index.named_type(other)?,
        };
        Some(VTy { ty, list })
    }
}

impl std::fmt::Display for VTy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.ty {
            Ty::Str => "string",
            Ty::Int => "int",
            Ty::Uint => "uint",
            Ty::Float => "double",
            Ty::Bool => "bool",
            Ty::Bytes => "bytes",
            Ty::Enum(n) | Ty::Msg(n) => n,
        };
        if self.list { write!(f, "repeated {name}") } else { f.write_str(name) }
    }
}

fn kind_ty(kind: &Kind) -> Ty {
    match kind {
        Kind::String => Ty::Str,
        Kind::Bytes => Ty::Bytes,
        Kind::Int32 | Kind::Int64 | Kind::Sint32 | Kind::Sint64 | Kind::Sfixed32 | Kind::Sfixed64 => Ty::Int,
        Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64 => Ty::Uint,
        Kind::Double | Kind::Float => Ty::Float,
        Kind::Bool => Ty::Bool,
        Kind::Enum(e) => Ty::Enum(Arc::from(e.full_name())),
        Kind::Message(m) => Ty::Msg(Arc::from(m.full_name())),
    }
}

fn field_ty(field: &FieldDescriptor) -> VTy {
    VTy { ty: kind_ty(&field.kind()), list: field.cardinality() == Cardinality::Repeated }
}

/// A request field synthesis may fill (top-level fields of the input message; maps are left to
/// the author).
#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub ty: VTy,
    pub words: FieldWords,
    /// Names another entity by id (`user_id`, `owner_id`): must be filled for the call to mean
    /// anything.
    pub is_reference: bool,
    /// The comment says the call does without it ("the current rate applies when empty",
    /// "Optional …", "(default: standard)"): left unset unless a value clearly is it.
    pub optional: bool,
}

/// A value a response offers: a top-level field, or a field of a top-level message field
/// (`user.id`).
#[derive(Debug, Clone)]
pub struct Offer {
    /// The path under `steps.<id>.`, e.g. `user.id`.
    pub path: String,
    pub ty: VTy,
    pub words: ValueWords,
    /// The request field this value merely repeats (GetVideo's `video.id` is the `video_id` it
    /// was asked for; UploadAsset's `asset.owner_id` the `owner_id` it was given): such a value
    /// cannot be where that value comes from, only a copy of it.
    pub echoes: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ActionInfo {
    pub name: Arc<str>,
    /// The method's words (`CreateUser` → create, user); the first is usually the verb.
    pub method_words: Vec<String>,
    /// The service's words without `service` (`UserService` → user).
    pub service_words: Vec<String>,
    pub comment_words: BTreeSet<String>,
    /// The verb the method's comment starts with, canonicalized ("Starts a live broadcast" →
    /// start; "Signs up a new account" → create): another word the goal may name it by.
    pub comment_verb: Option<String>,
    pub slots: Vec<Slot>,
    pub offers: Vec<Offer>,
    pub server_streaming: bool,
}

/// The catalog, indexed for synthesis.
#[derive(Debug, Default)]
pub struct Index {
    pub actions: Vec<ActionInfo>,
    types: std::collections::HashMap<String, Ty>,
}

impl Index {
    /// Indexes every unary and server-streaming action (client streams cannot be a step).
    pub fn new(catalog: &Catalog) -> Self {
        let mut index = Index::default();
        // Request fields' own comments by field name, to describe response fields of the same
        // name that have none (see below).
        let mut described: std::collections::HashMap<String, BTreeSet<String>> = Default::default();
        for action in catalog.actions() {
            if action.is_client_streaming() {
                continue;
            }
            let method = &action.method;
            let input = method.input();
            let output = method.output();
            index.remember_types(&input);
            index.remember_types(&output);
            let action_words: Vec<String> = words(method.name());
            let method_comment = schema::method_comment(method);
            let slots: Vec<Slot> = input
                .fields()
                .filter(|f| !f.is_map())
                .map(|f| {
                    let comment = schema::field_comment(&f);
                    let mut words = FieldWords::new(f.name(), comment.as_deref());
                    if comment.is_some() {
                        described.entry(f.name().to_string()).or_insert_with(|| words.comment.clone());
                    }
                    let ty = field_ty(&f);
                    let is_reference = words.name.last().is_some_and(|w| w == "id")
                        && words.name.len() > 1
                        && matches!(ty.ty, Ty::Str | Ty::Int | Ty::Uint);
                    // A reference without a comment of its own is described by its method's
                    // comment ("Starts a live broadcast owned by a user" says whose id
                    // `owner_id` is) — less the words naming the method's own entity, which is
                    // what the reference is *not* (a broadcast is not its own owner).
                    // Likewise for a commented reference of a create: the entity being created
                    // does not exist yet, so its own name in the comment ("The account that
                    // will own the channel") cannot say whose id the field holds.
                    let creates = action_words.first().is_some_and(|v| crate::names::canon(v) == "creat");
                    if is_reference && comment.is_some() && creates {
                        words.comment.retain(|w| !action_words.iter().skip(1).any(|a| a == w));
                    }
                    if is_reference && comment.is_none() {
                        words.comment = comment_words(method_comment.clone())
                            .into_iter()
                            .filter(|w| !action_words.iter().skip(1).any(|a| a == w))
                            .collect();
                    }
                    let optional = comment.as_deref().is_some_and(says_optional);
                    Slot { name: f.name().to_string(), ty, words, is_reference, optional }
                })
                .collect();
            let mut offers = Vec::new();
            for f in output.fields().filter(|f| !f.is_map()) {
                let leaf = words(f.name());
                offers.push(Offer {
                    path: f.name().to_string(),
                    ty: field_ty(&f),
                    words: ValueWords {
                        leaf: leaf.clone(),
                        path: leaf.clone(),
                        entity: Vec::new(),
                        action: action_words.clone(),
                        comment: comment_words(schema::field_comment(&f)),
                        names_entity: false,
                    },
                    echoes: None,
                });
                // One level into a message field (`user.id`), not into well-known types.
                if let Kind::Message(m) = f.kind()
                    && f.cardinality() != Cardinality::Repeated
                    && !m.full_name().starts_with("google.protobuf.")
                {
                    let entity = words(m.name());
                    for g in m.fields().filter(|g| !g.is_map()) {
                        let g_leaf = words(g.name());
                        let mut path = leaf.clone();
                        path.extend(g_leaf.iter().cloned());
                        offers.push(Offer {
                            path: format!("{}.{}", f.name(), g.name()),
                            ty: field_ty(&g),
                            words: ValueWords {
                                leaf: g_leaf,
                                path,
                                entity: entity.clone(),
                                action: action_words.clone(),
                                comment: comment_words(schema::field_comment(&g)),
                                names_entity: false,
                            },
                            echoes: None,
                        });
                    }
                }
            }
            mark_echoes(&slots, &mut offers);
            let service = method.parent_service();
            let service_words = words(service.name()).into_iter().filter(|w| w != "servic").collect();
            index.actions.push(ActionInfo {
                name: action.name.clone(),
                method_words: action_words,
                service_words,
                comment_verb: method_comment.as_deref().and_then(comment_verb),
                comment_words: comment_words(method_comment),
                slots,
                offers,
                server_streaming: action.is_server_streaming(),
            });
        }
        // Entities: messages with an `id`. A field `<entity>_id` names one of them.
        let mut entities = BTreeSet::new();
        for action in catalog.actions() {
            for desc in [action.method.input(), action.method.output()] {
                collect_entities(&desc, &mut entities, 0);
            }
        }
        for info in &mut index.actions {
            for slot in &mut info.slots {
                let head = &slot.words.name[..slot.words.name.len().saturating_sub(1)];
                slot.words.names_entity = slot.is_reference && entities.contains(&head.join(" "));
            }
            for offer in &mut info.offers {
                let leaf = &offer.words.leaf;
                offer.words.names_entity = leaf.len() > 1
                    && leaf.last().is_some_and(|w| w == "id")
                    && entities.contains(&leaf[..leaf.len() - 1].join(" "));
                // A response field without a comment means what a request field of the same
                // name says it means (`Asset.owner_id` ← UploadAssetRequest's "The user who owns
                // the asset"): APIs document a field once, where it is set.
                if offer.words.comment.is_empty()
                    && let Some(c) = offer.path.rsplit('.').next().and_then(|name| described.get(name))
                {
                    offer.words.comment = c.clone();
                }
            }
        }
        index
    }

    fn remember_types(&mut self, desc: &MessageDescriptor) {
        if self.types.contains_key(desc.full_name()) {
            return;
        }
        self.types.insert(desc.full_name().to_string(), Ty::Msg(Arc::from(desc.full_name())));
        for f in desc.fields() {
            match f.kind() {
                Kind::Message(m) => self.remember_types(&m),
                Kind::Enum(e) => {
                    self.types.insert(e.full_name().to_string(), Ty::Enum(Arc::from(e.full_name())));
                }
                _ => {}
            }
        }
    }

    /// A message or enum type by full name.
    pub fn named_type(&self, name: &str) -> Option<Ty> {
        self.types.get(name.trim_start_matches('.')).cloned()
    }

    pub fn position(&self, action: &str) -> Option<usize> {
        self.actions.iter().position(|a| &*a.name == action)
    }
}

fn collect_entities(desc: &MessageDescriptor, out: &mut BTreeSet<String>, depth: usize) {
    if depth > 3 {
        return;
    }
    if desc.get_field_by_name("id").is_some() {
        let w = words(desc.name());
        out.insert(w.join(" "));
        if let Some(last) = w.last() {
            out.insert(last.clone());
        }
    }
    for f in desc.fields() {
        if let Kind::Message(m) = f.kind() {
            collect_entities(&m, out, depth + 1);
        }
    }
}

/// Marks the offers that repeat a request field of the same action (see [`Offer::echoes`]): the
/// same type, and a name that is that field's (`video_id` ← `video.id` or `stats.video_id`).
fn mark_echoes(slots: &[Slot], offers: &mut [Offer]) {
    for offer in offers {
        offer.echoes = slots
            .iter()
            .map(|s| (s, crate::names::fit(&s.words, &offer.words) * offer.ty.fits(&s.ty)))
            .filter(|(_, f)| *f >= 0.95)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(s, _)| s.name.clone());
    }
}

/// Whether a field's comment says the field may be left out: it names what happens when the
/// field is empty, or a default. (API documentation says this in a handful of stock phrases.)
pub fn says_optional(comment: &str) -> bool {
    let c = comment.to_ascii_lowercase();
    [
        "when unset",
        "when empty",
        "if unset",
        "if empty",
        "when not set",
        "if not set",
        "when omitted",
        "if omitted",
        "if any",
        "optional",
        "(default",
        "default:",
    ]
    .iter()
    .any(|p| c.contains(p))
        || c.trim_start().starts_with("default")
}

/// The first word of a method's comment as a verb (see [`ActionInfo::comment_verb`]).
fn comment_verb(comment: &str) -> Option<String> {
    let w = words(comment);
    let first = w.first()?;
    if matches!(first.as_str(), "sign" | "set") && w.get(1).is_some_and(|s| s == "up") {
        return Some("creat".to_string());
    }
    Some(crate::names::canon(first).to_string())
}

fn comment_words(text: Option<String>) -> BTreeSet<String> {
    text.map(|t| words(&t).into_iter().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_told_by_their_comment() {
        assert!(says_optional("A quote to honour; the current rate applies when empty."));
        assert!(says_optional("Amount to collect; the whole authorized amount when unset."));
        assert!(says_optional("Wanted speed (default: standard)."));
        assert!(says_optional("Optional mobile number, E.164."));
        assert!(says_optional("The comment this one replies to, if any."));
        assert!(!says_optional("Amount to collect, usually the order total."));
        assert!(!says_optional("The order being paid."));
    }
}

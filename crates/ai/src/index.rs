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
}

/// A value a response offers: a top-level field, or a field of a top-level message field
/// (`user.id`).
#[derive(Debug, Clone)]
pub struct Offer {
    /// The path under `steps.<id>.`, e.g. `user.id`.
    pub path: String,
    pub ty: VTy,
    pub words: ValueWords,
}

#[derive(Debug, Clone)]
pub struct ActionInfo {
    pub name: Arc<str>,
    /// The method's words (`CreateUser` → create, user); the first is usually the verb.
    pub method_words: Vec<String>,
    /// The service's words without `service` (`UserService` → user).
    pub service_words: Vec<String>,
    pub comment_words: BTreeSet<String>,
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
        for action in catalog.actions() {
            if action.is_client_streaming() {
                continue;
            }
            let method = &action.method;
            let input = method.input();
            let output = method.output();
            index.remember_types(&input);
            index.remember_types(&output);
            let slots = input
                .fields()
                .filter(|f| !f.is_map())
                .map(|f| {
                    let comment = schema::field_comment(&f);
                    let words = FieldWords::new(f.name(), comment.as_deref());
                    let ty = field_ty(&f);
                    let is_reference = words.name.last().is_some_and(|w| w == "id")
                        && words.name.len() > 1
                        && matches!(ty.ty, Ty::Str | Ty::Int | Ty::Uint);
                    Slot { name: f.name().to_string(), ty, words, is_reference }
                })
                .collect();
            let action_words: Vec<String> = words(method.name());
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
                    },
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
                            },
                        });
                    }
                }
            }
            let service = method.parent_service();
            let service_words = words(service.name()).into_iter().filter(|w| w != "servic").collect();
            index.actions.push(ActionInfo {
                name: action.name.clone(),
                method_words: action_words,
                service_words,
                comment_words: comment_words(schema::method_comment(method)),
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

fn comment_words(text: Option<String>) -> BTreeSet<String> {
    text.map(|t| words(&t).into_iter().collect()).unwrap_or_default()
}

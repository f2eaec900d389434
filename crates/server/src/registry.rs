//! The pattern registry: every registered version, compiled against the catalog, in memory for
//! the hot path and in the store for durability.
//!
//! Invariant: a version is stored before it becomes executable, and never changes afterwards.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use nexus_core::input::InputSchema;
use nexus_core::{
    Catalog, CompiledPattern, Diagnostic, PatternLookup, Target, compile, document, parse_pattern_call, pb,
};
use nexus_store::{
    EventStore, MetaStore, NewVersion, PatternName, PatternStore, RegisterOutcome, StoredEventType, StoredPattern,
    VersionEvents,
};

use crate::{
    auth::{Principal, Role},
    error::ApiError,
};

/// (name, version).
type VersionKey = (Arc<str>, Arc<str>);

/// What the registry needs of the store.
pub trait RegistryStore: PatternStore + MetaStore + EventStore {}

impl<T: PatternStore + MetaStore + EventStore> RegistryStore for T {}

/// One registered version.
#[derive(Clone)]
pub struct Entry {
    pub document: pb::Pattern,
    /// `Err` when a stored version no longer type-checks against today's catalog (a backend was
    /// removed or changed): it is still listed, but executing it explains why it cannot run.
    pub compiled: Result<Arc<CompiledPattern>, Arc<[Diagnostic]>>,
}

pub struct Registry {
    store: Arc<dyn RegistryStore>,
    /// Swapped whole by a catalog refresh (`crate::refresh`). Read when compiling and listing,
    /// never on the execution path: compiled patterns hold their actions themselves.
    catalog: RwLock<Arc<Catalog>>,
    /// Registrations hold it shared, a catalog swap exclusively: a version registered while a
    /// refresh runs is either rechecked by it or compiled against the new catalog.
    catalog_change: tokio::sync::RwLock<()>,
    patterns: RwLock<HashMap<String, BTreeMap<semver::Version, Entry>>>,
    /// Owner, tenant, visibility, lineage and `latest` of every name: access checks on the hot
    /// path read them here. Refreshed from the store every `refresh_interval` (changes made on
    /// another replica show within that bound) and at once for changes made here.
    names: RwLock<HashMap<String, PatternName>>,
    /// Actions only patterns registered by these roles may call.
    restricted: BTreeMap<String, Vec<Role>>,
    /// Event types (or `prefix.*`) only these roles may publish or emit.
    restricted_events: Vec<(String, Vec<Role>)>,
    /// Executions per (name, version) not yet added to the store.
    usage: std::sync::Mutex<HashMap<VersionKey, u64>>,
    /// Registration time (ms) of the newest version loaded, for [`Registry::refresh_recent`].
    newest_ms: std::sync::atomic::AtomicI64,
    /// Registered event types by (tenant, type), with their parsed schemas: registrations and
    /// validations in that tenant type-check `event.data.*` against them. Reloaded with the
    /// names on every refresh.
    event_types: RwLock<HashMap<(String, String), (StoredEventType, InputSchema)>>,
    /// The catalog indexed for GeneratePattern, rebuilt when the catalog is swapped.
    generation_index: std::sync::Mutex<Option<(Arc<Catalog>, Arc<nexus_ai::Index>)>>,
}

/// How far back [`Registry::refresh_recent`] looks before the newest version it knows: covers
/// registrations that committed late and clocks that differ between replicas.
const RECENT_MS: i64 = 5 * 60 * 1000;

/// A pattern name's scheduled latest version ([`Registry::scheduled`]).
pub struct Scheduled {
    pub tenant: String,
    pub pattern: Arc<CompiledPattern>,
    pub registered_at: Option<SystemTime>,
}

pub struct Registered {
    pub name: String,
    pub version: String,
    pub created: bool,
    pub warnings: Vec<Diagnostic>,
}

impl Registry {
    /// Loads every stored version and compiles it against `catalog`.
    pub async fn load(
        store: Arc<dyn RegistryStore>,
        catalog: Arc<Catalog>,
        restricted: BTreeMap<String, Vec<Role>>,
        restricted_events: Vec<(String, Vec<Role>)>,
    ) -> Result<Self, ApiError> {
        let registry = Self {
            store,
            catalog: RwLock::new(catalog),
            catalog_change: tokio::sync::RwLock::new(()),
            patterns: RwLock::new(HashMap::new()),
            names: RwLock::new(HashMap::new()),
            restricted,
            restricted_events,
            usage: std::sync::Mutex::new(HashMap::new()),
            newest_ms: std::sync::atomic::AtomicI64::new(0),
            event_types: RwLock::new(HashMap::new()),
            generation_index: std::sync::Mutex::new(None),
        };
        registry.refresh().await?;
        Ok(registry)
    }

    /// Adds the versions other replicas registered since the last look (versions are immutable,
    /// so what is already known never needs reloading) and reloads the names' mutable facts.
    /// Returns how many versions were added.
    pub async fn refresh(&self) -> Result<usize, ApiError> {
        self.refresh_from(std::time::UNIX_EPOCH).await
    }

    /// The periodic refresh: names, and the versions registered in the last minutes only (a
    /// version older than that which is still unknown here — a replica whose clock is far
    /// behind — is found by the full [`Registry::refresh`] that any miss triggers).
    pub async fn refresh_recent(&self) -> Result<usize, ApiError> {
        let newest = self.newest_ms.load(std::sync::atomic::Ordering::Relaxed);
        let since =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(newest.saturating_sub(RECENT_MS).max(0) as u64);
        self.refresh_from(since).await
    }

    async fn refresh_from(&self, since: SystemTime) -> Result<usize, ApiError> {
        self.load_event_types().await?;
        let names = self.store.pattern_names().await?;
        {
            let mut map = self.names.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            *map = names.into_iter().map(|n| (n.name.clone(), n)).collect();
        }
        let stored = self.store.list_patterns_since(since).await?;
        if let Some(newest) = stored.iter().map(|s| s.registered_at).max() {
            let ms = newest.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            self.newest_ms.fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
        }
        let mut added = 0;
        for s in stored {
            if self.contains(&s.name, &s.version) {
                continue;
            }
            let json: serde_json::Value = match serde_json::from_str(&s.document) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(pattern = %s.name, version = %s.version, "stored document is not JSON: {e}");
                    continue;
                }
            };
            let mut doc = match document::from_json(json) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(pattern = %s.name, version = %s.version, "stored document does not parse: {e}");
                    continue;
                }
            };
            doc.registered_at = Some(s.registered_at.into());
            let compiled = match compile(&doc, &self.catalog(), self) {
                Ok((p, _)) => Ok(Arc::new(p)),
                Err(diags) => {
                    tracing::warn!(
                        pattern = %s.name, version = %s.version,
                        "stored pattern no longer type-checks against the catalog ({} problems); it cannot run until the catalog has what it needs",
                        diags.len()
                    );
                    Err(Arc::from(diags))
                }
            };
            self.insert(doc, compiled);
            added += 1;
        }
        Ok(added)
    }

    fn contains(&self, name: &str, version: &str) -> bool {
        let Ok(v) = semver::Version::parse(version) else { return false };
        let patterns = self.patterns.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        patterns.get(name).is_some_and(|versions| versions.contains_key(&v))
    }

    /// Like [`Registry::get`], but on a miss looks in the store first: a version registered on
    /// another replica is usable here at once.
    pub async fn get_fresh(&self, name: &str, version: &str) -> Result<Entry, ApiError> {
        match self.get(name, version) {
            Err(ApiError::NotFound(_)) => {
                self.refresh().await?;
                self.get(name, version)
            }
            other => other,
        }
    }

    /// The compiled form of a version, ready to run (looking in the store on a miss).
    pub async fn executable_fresh(&self, name: &str, version: &str) -> Result<Arc<CompiledPattern>, ApiError> {
        match self.executable(name, version) {
            Err(ApiError::NotFound(_)) => {
                self.refresh().await?;
                self.executable(name, version)
            }
            other => other,
        }
    }

    /// The catalog in use now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Re-type-checks against `catalog` every loaded version that calls an action of one of
    /// `backends` (as the current catalog or `catalog` places it), directly or through
    /// sub-patterns at any depth. Versions can only call versions registered before them, so
    /// registration order checks every callee before its callers.
    fn recheck(&self, catalog: &Catalog, backends: &HashSet<String>) -> Recheck {
        let current = self.catalog();
        let mut entries: Vec<(semver::Version, Entry)> = {
            let patterns = self.patterns.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            patterns.values().flat_map(|versions| versions.iter().map(|(v, e)| (v.clone(), e.clone()))).collect()
        };
        let registered = |e: &Entry| e.document.registered_at.map(|t| (t.seconds, t.nanos)).unwrap_or_default();
        entries.sort_by_key(|(_, e)| registered(e));
        let of_backends = |call: &str| {
            current.action(call).or_else(|| catalog.action(call)).is_some_and(|a| backends.contains(&*a.backend))
        };
        let mut rechecked: HashMap<(String, String), Option<Arc<CompiledPattern>>> = HashMap::new();
        let mut out = Recheck::default();
        for (version, entry) in entries {
            let doc = &entry.document;
            let mut sub_patterns = Vec::new();
            let mut affected = false;
            for (i, step) in doc.steps.iter().enumerate() {
                if let Some((name, v)) = parse_pattern_call(&step.call) {
                    let key = (name.to_string(), normalized(v));
                    if rechecked.contains_key(&key) {
                        affected = true;
                        sub_patterns.push((i, key));
                    }
                } else if of_backends(&step.call) {
                    affected = true;
                }
                if step.compensate.as_ref().is_some_and(|c| of_backends(&c.call)) {
                    affected = true;
                }
            }
            if !affected {
                continue;
            }
            let lookup = Rechecked { registry: self, rechecked: &rechecked };
            let result = compile(doc, catalog, &lookup).map(|(p, _)| Arc::new(p));
            let mut diags = match &result {
                Ok(_) => Vec::new(),
                Err(d) => d.clone(),
            };
            // A sub-pattern that breaks breaks its callers (their own type check used its last
            // good plan, so this is the one diagnostic that says so).
            for (i, (name, v)) in &sub_patterns {
                if rechecked.get(&(name.clone(), v.clone())).is_some_and(Option::is_none) {
                    diags.push(Diagnostic::error(
                        format!("steps[{i}].call"),
                        format!("the called pattern {name}@{v} no longer type-checks against the refreshed catalog"),
                    ));
                }
            }
            let key = (doc.name.clone(), version.to_string());
            if diags.is_empty() {
                if let (Ok(compiled), Err(_)) = (&result, &entry.compiled) {
                    out.repaired.push(format!("{}@{version}", doc.name));
                    out.repaired_plans.push((doc.name.clone(), version, compiled.clone()));
                }
                rechecked.insert(key, result.ok());
            } else {
                out.broken.push((doc.name.clone(), version.to_string(), diags));
                rechecked.insert(key, None);
            }
        }
        out
    }

    /// [`Registry::recheck`], then, when `apply`, [`Registry::swap_catalog`] — with no
    /// registration in between.
    pub async fn recheck_and_swap(&self, catalog: Catalog, backends: &HashSet<String>, apply: bool) -> Recheck {
        let _exclusive = self.catalog_change.write().await;
        let mut recheck = self.recheck(&catalog, backends);
        if apply {
            self.swap_catalog(Arc::new(catalog), std::mem::take(&mut recheck.repaired_plans));
        }
        recheck
    }

    /// Puts a refreshed catalog in use. Registered versions keep the plans they run on, except
    /// the `repaired` ones, which did not type-check before and are executable from now on.
    fn swap_catalog(&self, catalog: Arc<Catalog>, repaired: Vec<(String, semver::Version, Arc<CompiledPattern>)>) {
        *self.catalog.write().unwrap_or_else(std::sync::PoisonError::into_inner) = catalog;
        let mut patterns = self.patterns.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, version, compiled) in repaired {
            if let Some(entry) = patterns.get_mut(&name).and_then(|versions| versions.get_mut(&version)) {
                entry.compiled = Ok(compiled);
            }
        }
    }

    fn insert(&self, doc: pb::Pattern, compiled: Result<Arc<CompiledPattern>, Arc<[Diagnostic]>>) {
        let Ok(version) = semver::Version::parse(&doc.version) else { return };
        let mut patterns = self.patterns.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        patterns.entry(doc.name.clone()).or_default().insert(version, Entry { document: doc, compiled });
    }

    /// Type-checks a document without storing it, with `caller`'s access to sub-patterns and
    /// restricted actions.
    pub fn validate(&self, doc: &pb::Pattern, caller: &Principal) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
        let mut doc = doc.clone();
        let mut resolved = self.resolve_latest(&mut doc);
        let lookup = InTenant { registry: self, tenant: &caller.tenant };
        let (compiled, mut warnings) = compile(&doc, &self.catalog(), &lookup)?;
        if let Err(ApiError::InvalidPattern(d)) = self.check_access(&compiled, caller) {
            return Err(d);
        }
        warnings.append(&mut resolved);
        Ok(warnings)
    }

    /// Every loaded version of a name, lowest first.
    pub fn versions_of(&self, name: &str) -> Vec<String> {
        let patterns = self.patterns.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        patterns.get(name).map(|v| v.keys().map(ToString::to_string).collect()).unwrap_or_default()
    }

    /// Validates and stores a new immutable version owned by `caller` (a fork when
    /// `forked_from` is set: the name must then be new).
    pub async fn register(
        &self,
        mut doc: pb::Pattern,
        caller: &Principal,
        forked_from: Option<String>,
    ) -> Result<Registered, ApiError> {
        let _catalog = self.catalog_change.read().await;
        // Ownership and lineage come from the caller and the store, never from the document.
        doc.registered_at = None;
        doc.owner = caller.subject.to_string();
        doc.tenant = String::new();
        doc.forked_from = String::new();
        doc.deprecated = false;
        doc.stars = 0;
        doc.executions = 0;
        if doc.visibility.is_empty() {
            doc.visibility = "private".into();
        }
        if !matches!(doc.visibility.as_str(), "private" | "tenant" | "public") {
            return Err(ApiError::InvalidPattern(vec![Diagnostic::error(
                "visibility",
                format!("`{}` is not a visibility: use private, tenant or public", doc.visibility),
            )]));
        }
        if doc.durability.is_empty() {
            doc.durability = "ephemeral".into();
        }
        let mut resolved = self.resolve_latest(&mut doc);
        let lookup = InTenant { registry: self, tenant: &caller.tenant };
        let (compiled, mut warnings) = compile(&doc, &self.catalog(), &lookup).map_err(ApiError::InvalidPattern)?;
        self.check_access(&compiled, caller)?;
        warnings.append(&mut resolved);
        let (uses, calls, events) = dependencies(&compiled);
        let canonical = document::to_json(&doc).to_string();
        let now = SystemTime::now();
        let outcome = self
            .store
            .register_version(&NewVersion {
                pattern: StoredPattern {
                    name: doc.name.clone(),
                    version: doc.version.clone(),
                    owner: doc.owner.clone(),
                    description: doc.description.clone(),
                    document: canonical,
                    registered_at: now,
                },
                tags: doc.tags.clone(),
                tenant: caller.tenant.to_string(),
                admin: caller.is_admin(),
                visibility: doc.visibility.clone(),
                forked_from,
                uses,
                calls,
                events,
            })
            .await?;
        let created = match outcome {
            RegisterOutcome::Created => {
                let mut stored = doc.clone();
                stored.registered_at = Some(now.into());
                self.insert(stored, Ok(Arc::new(compiled)));
                self.reload_name(&doc.name).await?;
                true
            }
            RegisterOutcome::Identical => false,
            RegisterOutcome::Conflict => {
                return Err(ApiError::AlreadyExists(format!(
                    "pattern {}@{} is already registered with a different document; versions are immutable, register {} or higher",
                    doc.name,
                    doc.version,
                    next_version(&doc.version)
                )));
            }
            RegisterOutcome::NotGreater { highest } => {
                return Err(ApiError::FailedPrecondition(format!(
                    "pattern `{}` already has version {highest}; versions only grow: register {} or higher (a deprecated version no longer holds the name back)",
                    doc.name,
                    next_version(&highest)
                )));
            }
            RegisterOutcome::NotOwner { tenant, owner } => {
                // Whoever cannot see the pattern only learns that the name is taken.
                let visible = self.name(&doc.name).is_some_and(|n| visible_to(&n, caller));
                return Err(if visible {
                    ApiError::PermissionDenied(format!(
                        "pattern `{}` belongs to {owner} (tenant {tenant}): only its owner or an admin of that tenant can add versions; fork it to make your own",
                        doc.name
                    ))
                } else {
                    ApiError::AlreadyExists(format!("the pattern name `{}` is taken; choose another", doc.name))
                });
            }
            RegisterOutcome::NameTaken => {
                return Err(ApiError::AlreadyExists(format!(
                    "the pattern name `{}` is taken; choose another name for the fork",
                    doc.name
                )));
            }
        };
        Ok(Registered { name: doc.name, version: doc.version, created, warnings })
    }

    /// Every event type of the store, in place of those known.
    async fn load_event_types(&self) -> Result<(), ApiError> {
        let stored = self.store.event_types(None).await?;
        let map = stored
            .into_iter()
            .map(|t| {
                let schema = InputSchema::new(serde_json::from_str(&t.schema).unwrap_or_default());
                ((t.tenant.clone(), t.event_type.clone()), (t, schema))
            })
            .collect();
        *self.event_types.write().unwrap_or_else(std::sync::PoisonError::into_inner) = map;
        Ok(())
    }

    /// The event types of `tenant`, by name.
    pub fn event_types(&self, tenant: &str) -> Vec<StoredEventType> {
        let types = self.event_types.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<StoredEventType> =
            types.iter().filter(|((t, _), _)| t == tenant).map(|(_, (stored, _))| stored.clone()).collect();
        out.sort_by(|a, b| a.event_type.cmp(&b.event_type));
        out
    }

    /// The schema of `event_type`'s data in `tenant`, when one is registered.
    fn event_schema(&self, tenant: &str, event_type: &str) -> Option<InputSchema> {
        let types = self.event_types.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (_, schema) = types.get(&(tenant.to_string(), event_type.to_string()))?;
        (!schema.is_empty()).then(|| schema.clone())
    }

    /// Registers (or replaces) an event type of `t.tenant`; the same description and schema again
    /// changes nothing and answers the type as registered first. The caller has checked the name
    /// and the schema. Patterns already registered keep their plans.
    pub async fn register_event_type(&self, t: StoredEventType) -> Result<StoredEventType, ApiError> {
        let key = (t.tenant.clone(), t.event_type.clone());
        let known = self.event_types.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        let same = |a: &StoredEventType| {
            let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
            a.description == t.description && json(&a.schema) == json(&t.schema)
        };
        if let Some((stored, _)) = known.filter(|(k, _)| same(k)) {
            return Ok(stored);
        }
        self.store.put_event_type(&t).await?;
        let schema = InputSchema::new(serde_json::from_str(&t.schema).unwrap_or_default());
        self.event_types.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, (t.clone(), schema));
        Ok(t)
    }

    /// Sub-patterns the caller cannot see do not exist for them; restricted actions need one of
    /// their roles.
    fn check_access(&self, compiled: &CompiledPattern, caller: &Principal) -> Result<(), ApiError> {
        let mut diags = Vec::new();
        for (i, step) in compiled.steps.iter().enumerate() {
            match &step.target {
                Target::Pattern(p) => {
                    if !self.name(&p.name).is_some_and(|n| visible_to(&n, caller)) {
                        diags.push(Diagnostic::error(
                            format!("steps[{i}].call"),
                            format!("no pattern named `{}` (ListPatterns shows what is registered)", p.name),
                        ));
                    }
                }
                Target::Action(a) => self.check_restricted(&a.name, &format!("steps[{i}].call"), caller, &mut diags),
                Target::Emit(e) => {
                    if let Some(roles) = self.event_roles(&e.event_type)
                        && !caller.any_of(roles)
                    {
                        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                        diags.push(Diagnostic::error(
                            format!("steps[{i}].emit.type"),
                            format!(
                                "`{}` is restricted: only patterns registered by {} may emit it",
                                e.event_type,
                                names.join(" or ")
                            ),
                        ));
                    }
                }
                Target::Wait(_) => {}
            }
            if let Some(c) = &step.compensate {
                self.check_restricted(&c.action.name, &format!("steps[{i}].compensate.call"), caller, &mut diags);
            }
        }
        if diags.is_empty() { Ok(()) } else { Err(ApiError::InvalidPattern(diags)) }
    }

    /// The roles that may publish `event_type`, when it is restricted (the longest matching
    /// entry: an exact type, or `prefix.*`).
    pub fn event_roles(&self, event_type: &str) -> Option<&[Role]> {
        self.restricted_events
            .iter()
            .filter(|(p, _)| match p.strip_suffix(".*") {
                Some(prefix) => event_type.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.')),
                None => p == event_type,
            })
            .max_by_key(|(p, _)| p.len())
            .map(|(_, roles)| roles.as_slice())
    }

    fn check_restricted(&self, action: &str, path: &str, caller: &Principal, diags: &mut Vec<Diagnostic>) {
        if let Some(roles) = self.restricted.get(action)
            && !caller.any_of(roles)
        {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            diags.push(Diagnostic::error(
                path,
                format!("`{action}` is restricted: only patterns registered by {} may call it", names.join(" or ")),
            ));
        }
    }

    /// The catalog indexed for synthesis (built once per catalog).
    pub fn generation_index(&self) -> Arc<nexus_ai::Index> {
        let catalog = self.catalog();
        let mut cached = self.generation_index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((c, index)) = cached.as_ref()
            && Arc::ptr_eq(c, &catalog)
        {
            return index.clone();
        }
        let index = Arc::new(nexus_ai::Index::new(&catalog));
        *cached = Some((catalog, index.clone()));
        index
    }

    /// Whether `caller` could register a pattern that calls `action` (it is not restricted to
    /// roles they lack).
    pub fn may_call(&self, action: &str, caller: &Principal) -> bool {
        self.restricted.get(action).is_none_or(|roles| caller.any_of(roles))
    }

    /// The latest version of every name `caller` may see.
    pub fn visible_latest(&self, caller: &Principal) -> Vec<pb::Pattern> {
        let visible: Vec<String> = {
            let names = self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            names.iter().filter(|(_, n)| visible_to(n, caller)).map(|(k, _)| k.clone()).collect()
        };
        visible.iter().filter_map(|name| self.get(name, "latest").ok().map(|e| e.document)).collect()
    }

    /// One version's document, when `caller` may see its name.
    pub fn visible_document(&self, name: &str, version: &str, caller: &Principal) -> Option<pb::Pattern> {
        if self.visible_here(name, caller) != Some(true) {
            return None;
        }
        self.get(name, version).ok().map(|e| e.document)
    }

    /// Whether the name exists here and `caller` may see it (the hot path: no copy).
    pub fn visible_here(&self, name: &str, caller: &Principal) -> Option<bool> {
        self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).map(|n| visible_to(n, caller))
    }

    /// The mutable facts of a name (owner, tenant, visibility, latest …).
    pub fn name(&self, name: &str) -> Option<PatternName> {
        self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// Re-reads one name's facts from the store (after a change made here).
    pub async fn reload_name(&self, name: &str) -> Result<Option<PatternName>, ApiError> {
        let fresh = self.store.pattern_name(name).await?;
        let mut names = self.names.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &fresh {
            Some(n) => names.insert(name.to_string(), n.clone()),
            None => names.remove(name),
        };
        Ok(fresh)
    }

    /// The store, for the marketplace and graph RPCs.
    /// The latest version of each of `tenant`'s pattern names that has a trigger on `event_type`
    /// (an event starts patterns of its own tenant only).
    pub fn triggered_by(&self, tenant: &str, event_type: &str) -> Vec<Arc<CompiledPattern>> {
        let names = self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let patterns = self.patterns.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        names
            .values()
            .filter(|n| n.tenant == tenant)
            .filter_map(|n| {
                let latest = semver::Version::parse(n.latest.as_deref()?).ok()?;
                patterns.get(&n.name)?.get(&latest)?.compiled.as_ref().ok().cloned()
            })
            .filter(|p| p.triggers.iter().any(|t| t.event_type == event_type))
            .collect()
    }

    /// The latest version of every pattern name that has a `schedule:`, with the name's tenant
    /// (the tenant its scheduled executions run in) and the version's registration time.
    pub fn scheduled(&self) -> Vec<Scheduled> {
        let names = self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let patterns = self.patterns.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut scheduled: Vec<Scheduled> = names
            .values()
            .filter_map(|n| {
                let latest = semver::Version::parse(n.latest.as_deref()?).ok()?;
                let entry = patterns.get(&n.name)?.get(&latest)?;
                let pattern = entry.compiled.as_ref().ok()?;
                pattern.schedule.is_some().then(|| Scheduled {
                    tenant: n.tenant.clone(),
                    pattern: pattern.clone(),
                    registered_at: entry.document.registered_at.and_then(|t| SystemTime::try_from(t).ok()),
                })
            })
            .collect();
        // Name order: polls handle patterns in a stable order.
        scheduled.sort_by(|a, b| a.pattern.name.cmp(&b.pattern.name));
        scheduled
    }

    pub fn store(&self) -> &Arc<dyn RegistryStore> {
        &self.store
    }

    /// Counts one execution of a version (added to the store by [`Registry::flush_usage`]).
    pub fn count_execution(&self, name: &Arc<str>, version: &Arc<str>) {
        let mut usage = self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *usage.entry((name.clone(), version.clone())).or_insert(0) += 1;
    }

    /// Adds the executions counted since the last flush to the store.
    pub async fn flush_usage(&self) -> Result<(), ApiError> {
        let counts: Vec<(String, String, u64)> = {
            let mut usage = self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            usage.drain().map(|((n, v), c)| (n.to_string(), v.to_string(), c)).collect()
        };
        if counts.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.add_executions(&counts).await {
            // Put them back: counted at the next flush.
            let mut usage = self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (n, v, c) in counts {
                *usage.entry((Arc::from(n.as_str()), Arc::from(v.as_str()))).or_insert(0) += c;
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Rewrites `call: pattern:NAME@latest` (or without a version) to the concrete latest version,
    /// so a registered version always runs the same sub-pattern version, before and after a
    /// restart. Each rewrite is reported as a warning.
    fn resolve_latest(&self, doc: &mut pb::Pattern) -> Vec<Diagnostic> {
        let mut notes = Vec::new();
        for (i, step) in doc.steps.iter_mut().enumerate() {
            let Some((name, version)) = parse_pattern_call(&step.call) else { continue };
            if version != "latest" {
                continue;
            }
            if let Ok(entry) = self.get(name, "latest") {
                let resolved = format!("pattern:{name}@{}", entry.document.version);
                notes.push(Diagnostic::warning(
                    format!("steps[{i}].call"),
                    format!("`{}` resolved to `{resolved}`", step.call),
                ));
                step.call = resolved;
            }
        }
        notes
    }

    /// One version; `version` empty or `latest` means the highest.
    pub fn get(&self, name: &str, version: &str) -> Result<Entry, ApiError> {
        self.with_version(name, version, Entry::clone)
    }

    /// `f` of one version, under the read lock: the execution path takes only its plan, not a
    /// copy of the whole document.
    fn with_version<T>(&self, name: &str, version: &str, f: impl FnOnce(&Entry) -> T) -> Result<T, ApiError> {
        check_name_length(name)?;
        let patterns = self.patterns.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let versions = patterns.get(name).ok_or_else(|| {
            ApiError::NotFound(format!("no pattern named `{name}` (ListPatterns shows what is registered)"))
        })?;
        if version.is_empty() || version == "latest" {
            // The highest version that is not deprecated (the store keeps it per name).
            let latest = self
                .names
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(name)
                .map(|n| n.latest.clone());
            return match latest {
                Some(Some(v)) => {
                    semver::Version::parse(&v).ok().and_then(|v| versions.get(&v)).map(f).ok_or_else(|| {
                        ApiError::NotFound(format!("pattern `{name}`: its latest version {v} is not loaded yet"))
                    })
                }
                Some(None) => Err(ApiError::NotFound(format!(
                    "every version of pattern `{name}` is deprecated; run an exact version (ListPatternVersions lists them)"
                ))),
                // Not in the names yet (registered elsewhere a moment ago): the highest.
                None => versions
                    .values()
                    .next_back()
                    .map(f)
                    .ok_or_else(|| ApiError::NotFound(format!("pattern `{name}` has no versions"))),
            };
        }
        let v = semver::Version::parse(version)
            .map_err(|e| ApiError::InvalidArgument(format!("version `{version}` is not a semantic version: {e}")))?;
        versions.get(&v).map(f).ok_or_else(|| {
            let known: Vec<String> = versions.keys().map(ToString::to_string).collect();
            ApiError::NotFound(format!("pattern `{name}` has no version {version}; it has {}", known.join(", ")))
        })
    }

    /// The compiled form of a version, ready to run.
    pub fn executable(&self, name: &str, version: &str) -> Result<Arc<CompiledPattern>, ApiError> {
        let compiled =
            self.with_version(name, version, |e| e.compiled.clone().map_err(|d| (e.document.version.clone(), d)))?;
        compiled.map_err(|(version, diags)| {
            let first: Vec<String> = diags.iter().take(3).map(ToString::to_string).collect();
            ApiError::FailedPrecondition(format!(
                "pattern {name}@{version} no longer type-checks against the catalog: {}",
                first.join("; ")
            ))
        })
    }
}

/// What [`Registry::recheck`] found.
#[derive(Default)]
pub struct Recheck {
    /// (name, version, every diagnostic) of versions that no longer type-check.
    pub broken: Vec<(String, String, Vec<Diagnostic>)>,
    /// Versions that did not type-check before and now do, as NAME@VERSION.
    pub repaired: Vec<String>,
    /// Their new plans (taken by the swap).
    repaired_plans: Vec<(String, semver::Version, Arc<CompiledPattern>)>,
}

/// A version as a key: `1.0` and `1.0.0` are the same version.
fn normalized(version: &str) -> String {
    semver::Version::parse(version).map_or_else(|_| version.to_string(), |v| v.to_string())
}

/// Sub-patterns during a recheck: the rechecked plan where there is one (the last good plan
/// where the recheck broke it), the registry's otherwise.
struct Rechecked<'a> {
    registry: &'a Registry,
    rechecked: &'a HashMap<(String, String), Option<Arc<CompiledPattern>>>,
}

impl PatternLookup for Rechecked<'_> {
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<CompiledPattern>> {
        match self.rechecked.get(&(name.to_string(), normalized(version))) {
            Some(Some(p)) => Some(p.clone()),
            _ => self.registry.lookup(name, version),
        }
    }
}

/// The next version up from `v`, for hints (a bump of the last part that can grow).
fn next_version(v: &str) -> String {
    let Ok(mut v) = semver::Version::parse(v) else { return "a higher version".into() };
    v.pre = semver::Prerelease::EMPTY;
    v.build = semver::BuildMetadata::EMPTY;
    if let Some(patch) = v.patch.checked_add(1) {
        v.patch = patch;
    } else if let Some(minor) = v.minor.checked_add(1) {
        (v.minor, v.patch) = (minor, 0);
    } else if let Some(major) = v.major.checked_add(1) {
        (v.major, v.minor, v.patch) = (major, 0, 0);
    } else {
        return "a higher version (there is none above this one: deprecate it, then any version above those still in use can be registered)".into();
    }
    v.to_string()
}

/// Stored versions are loaded (and rechecked) without event schemas: they were checked against
/// them when registered, and keep their plans when a schema is replaced.
impl PatternLookup for Registry {
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<CompiledPattern>> {
        self.get(name, version).ok()?.compiled.ok()
    }
}

/// The registry as a registration in `tenant` sees it: with that tenant's event schemas.
struct InTenant<'a> {
    registry: &'a Registry,
    tenant: &'a str,
}

impl PatternLookup for InTenant<'_> {
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<CompiledPattern>> {
        self.registry.lookup(name, version)
    }

    fn event_schema(&self, event_type: &str) -> Option<InputSchema> {
        self.registry.event_schema(self.tenant, event_type)
    }
}

/// Whether `caller` may see a pattern: public ones, their tenant's `tenant` ones, their own
/// private ones (and, for a tenant admin, every one of the tenant).
pub fn visible_to(n: &PatternName, caller: &Principal) -> bool {
    match n.visibility.as_str() {
        "public" => true,
        "tenant" => *n.tenant == *caller.tenant,
        _ => *n.tenant == *caller.tenant && (*n.owner == *caller.subject || caller.is_admin()),
    }
}

/// Whether `caller` may change a pattern (new versions, deprecation, visibility): its owner, or
/// an admin of its tenant.
pub fn manageable_by(n: &PatternName, caller: &Principal) -> bool {
    *n.tenant == *caller.tenant && (*n.owner == *caller.subject || caller.is_admin())
}

/// What a compiled pattern depends on, for the knowledge graph: the actions it calls (steps and
/// compensations), the pattern versions it calls, and the event types of its triggers, emit steps
/// and wait branches (each list sorted, without repeats).
fn dependencies(p: &CompiledPattern) -> (Vec<String>, Vec<String>, VersionEvents) {
    use std::collections::BTreeSet;
    let (mut uses, mut calls) = (BTreeSet::new(), BTreeSet::new());
    let (mut emits, mut waits) = (BTreeSet::new(), BTreeSet::new());
    for step in &p.steps {
        match &step.target {
            Target::Action(a) => {
                uses.insert(a.name.to_string());
            }
            Target::Pattern(sub) => {
                calls.insert(format!("{}@{}", sub.name, sub.version));
            }
            Target::Emit(e) => {
                emits.insert(e.event_type.clone());
            }
            Target::Wait(w) => waits.extend(w.branches.iter().map(|b| b.event_type.clone())),
        }
        if let Some(c) = &step.compensate {
            uses.insert(c.action.name.to_string());
        }
    }
    let triggers: BTreeSet<String> = p.triggers.iter().map(|t| t.event_type.clone()).collect();
    let events = VersionEvents {
        triggers: triggers.into_iter().collect(),
        emits: emits.into_iter().collect(),
        waits: waits.into_iter().collect(),
    };
    (uses.into_iter().collect(), calls.into_iter().collect(), events)
}

/// Picks up patterns registered by other replicas sharing the store, every `every`.
pub struct PatternRefresh {
    pub registry: Arc<Registry>,
    pub every: std::time::Duration,
}

impl PatternRefresh {
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.every.max(std::time::Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.registry.refresh_recent().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("{n} pattern version(s) registered elsewhere are now available"),
                Err(e) => tracing::warn!("refreshing patterns from the store: {e}"),
            }
        }
    }
}

/// Adds the executions counted in memory to the store's usage figures every few seconds, and
/// once more on the way out (no count is lost at shutdown).
pub struct UsageCounts {
    pub registry: Arc<Registry>,
}

impl UsageCounts {
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                biased;
                () = shutdown.cancelled() => true,
                _ = tick.tick() => false,
            };
            if let Err(e) = self.registry.flush_usage().await {
                tracing::warn!("recording pattern usage: {e}");
            }
            if last {
                return;
            }
        }
    }
}

/// A name longer than any pattern's can name nothing: refused as the caller's mistake before it
/// is looked up anywhere (and never echoed whole).
pub fn check_name_length(name: &str) -> Result<(), ApiError> {
    if name.len() > nexus_core::MAX_PATTERN_NAME {
        return Err(ApiError::InvalidArgument(format!(
            "the pattern name is {} bytes long; a pattern name is at most {}",
            name.len(),
            nexus_core::MAX_PATTERN_NAME
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::next_version;

    #[test]
    fn the_next_version_never_overflows() {
        let max = u64::MAX;
        for (from, next) in [
            ("1.2.3", "1.2.4".to_string()),
            ("1.2.3-rc.1+b5", "1.2.4".to_string()),
            (&format!("1.2.{max}"), "1.3.0".to_string()),
            (&format!("1.{max}.{max}"), "2.0.0".to_string()),
            ("nonsense", "a higher version".to_string()),
        ] {
            assert_eq!(next_version(from), next, "{from}");
        }
        assert!(next_version(&format!("{max}.{max}.{max}")).contains("there is none above this one"));
    }
}

//! The pattern registry: every registered version, compiled against the catalog, in memory for
//! the hot path and in the store for durability.
//!
//! Invariant: a version is stored before it becomes executable, and never changes afterwards.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use nexus_core::{Catalog, CompiledPattern, Diagnostic, PatternLookup, compile, document, parse_pattern_call, pb};
use nexus_store::{InsertOutcome, PatternStore, StoredPattern};

use crate::error::ApiError;

/// One registered version.
#[derive(Clone)]
pub struct Entry {
    pub document: pb::Pattern,
    /// `Err` when a stored version no longer type-checks against today's catalog (a backend was
    /// removed or changed): it is still listed, but executing it explains why it cannot run.
    pub compiled: Result<Arc<CompiledPattern>, Arc<[Diagnostic]>>,
}

pub struct Registry {
    store: Arc<dyn PatternStore>,
    catalog: Arc<Catalog>,
    patterns: RwLock<HashMap<String, BTreeMap<semver::Version, Entry>>>,
}

pub struct Registered {
    pub name: String,
    pub version: String,
    pub created: bool,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Default)]
pub struct ListFilter {
    pub query: String,
    pub owner: String,
    pub tag: String,
}

impl Registry {
    /// Loads every stored version and compiles it against `catalog`.
    pub async fn load(store: Arc<dyn PatternStore>, catalog: Arc<Catalog>) -> Result<Self, ApiError> {
        let registry = Self { store, catalog, patterns: RwLock::new(HashMap::new()) };
        registry.refresh().await?;
        Ok(registry)
    }

    /// Adds the versions other replicas registered since the last look (versions are immutable,
    /// so what is already known never needs reloading). Returns how many were added.
    pub async fn refresh(&self) -> Result<usize, ApiError> {
        let stored = self.store.list_patterns().await?;
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
            let compiled = match compile(&doc, &self.catalog, self) {
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

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    fn insert(&self, doc: pb::Pattern, compiled: Result<Arc<CompiledPattern>, Arc<[Diagnostic]>>) {
        let Ok(version) = semver::Version::parse(&doc.version) else { return };
        let mut patterns = self.patterns.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        patterns.entry(doc.name.clone()).or_default().insert(version, Entry { document: doc, compiled });
    }

    /// Type-checks a document without storing it.
    pub fn validate(&self, doc: &pb::Pattern) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
        let mut doc = doc.clone();
        let mut resolved = self.resolve_latest(&mut doc);
        compile(&doc, &self.catalog, self).map(|(_, mut warnings)| {
            warnings.append(&mut resolved);
            warnings
        })
    }

    /// Validates and stores a new immutable version.
    pub async fn register(&self, mut doc: pb::Pattern) -> Result<Registered, ApiError> {
        doc.registered_at = None;
        if doc.visibility.is_empty() {
            doc.visibility = "private".into();
        }
        if doc.durability.is_empty() {
            doc.durability = "ephemeral".into();
        }
        let mut resolved = self.resolve_latest(&mut doc);
        let (compiled, mut warnings) = compile(&doc, &self.catalog, self).map_err(ApiError::InvalidPattern)?;
        warnings.append(&mut resolved);
        let canonical = document::to_json(&doc).to_string();
        let now = SystemTime::now();
        let outcome = self
            .store
            .insert_pattern(&StoredPattern {
                name: doc.name.clone(),
                version: doc.version.clone(),
                owner: doc.owner.clone(),
                description: doc.description.clone(),
                document: canonical,
                registered_at: now,
            })
            .await?;
        let created = match outcome {
            InsertOutcome::Created => {
                let mut stored = doc.clone();
                stored.registered_at = Some(now.into());
                self.insert(stored, Ok(Arc::new(compiled)));
                true
            }
            InsertOutcome::Identical => false,
            InsertOutcome::Conflict => {
                return Err(ApiError::AlreadyExists(format!(
                    "pattern {}@{} is already registered with a different document; versions are immutable, register {} or higher",
                    doc.name,
                    doc.version,
                    next_version(&doc.version)
                )));
            }
        };
        Ok(Registered { name: doc.name, version: doc.version, created, warnings })
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
        let patterns = self.patterns.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let versions = patterns.get(name).ok_or_else(|| {
            ApiError::NotFound(format!("no pattern named `{name}` (ListPatterns shows what is registered)"))
        })?;
        if version.is_empty() || version == "latest" {
            return versions
                .values()
                .next_back()
                .cloned()
                .ok_or_else(|| ApiError::NotFound(format!("pattern `{name}` has no versions")));
        }
        let v = semver::Version::parse(version)
            .map_err(|e| ApiError::InvalidArgument(format!("version `{version}` is not a semantic version: {e}")))?;
        versions.get(&v).cloned().ok_or_else(|| {
            let known: Vec<String> = versions.keys().map(ToString::to_string).collect();
            ApiError::NotFound(format!("pattern `{name}` has no version {version}; it has {}", known.join(", ")))
        })
    }

    /// The compiled form of a version, ready to run.
    pub fn executable(&self, name: &str, version: &str) -> Result<Arc<CompiledPattern>, ApiError> {
        let entry = self.get(name, version)?;
        entry.compiled.map_err(|diags| {
            let first: Vec<String> = diags.iter().take(3).map(ToString::to_string).collect();
            ApiError::FailedPrecondition(format!(
                "pattern {name}@{} no longer type-checks against the catalog: {}",
                entry.document.version,
                first.join("; ")
            ))
        })
    }

    /// Latest version of each pattern matching the filter, sorted by name.
    pub fn list(&self, filter: &ListFilter) -> Vec<pb::Pattern> {
        let patterns = self.patterns.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let query = filter.query.to_lowercase();
        let mut out: Vec<pb::Pattern> = patterns
            .values()
            .filter_map(|versions| versions.values().next_back())
            .map(|e| &e.document)
            .filter(|d| filter.owner.is_empty() || d.owner == filter.owner)
            .filter(|d| filter.tag.is_empty() || d.tags.iter().any(|t| t == &filter.tag))
            .filter(|d| {
                query.is_empty()
                    || d.name.to_lowercase().contains(&query)
                    || d.description.to_lowercase().contains(&query)
                    || d.tags.iter().any(|t| t.to_lowercase().contains(&query))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

fn next_version(v: &str) -> String {
    match semver::Version::parse(v) {
        Ok(mut v) => {
            v.patch += 1;
            v.pre = semver::Prerelease::EMPTY;
            v.to_string()
        }
        Err(_) => "a higher version".into(),
    }
}

impl PatternLookup for Registry {
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<CompiledPattern>> {
        self.get(name, version).ok()?.compiled.ok()
    }
}

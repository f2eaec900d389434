//! Schema changes: re-discovering backends on demand (`RefreshServices`) or every
//! `discovery.refresh_interval`, swapping the new catalog in, and re-type-checking every
//! registered pattern version that uses a refreshed backend — the knowledge graph's impact
//! query, answered by the compiler.
//!
//! Decision (ARCHITECTURE.md, "Schema changes"): the new catalog is swapped in even when
//! patterns break — the backend is what it is now, and new registrations must be checked
//! against that. Registered versions keep running on the plan they were compiled to; the answer
//! and the log name every version that would now fail to type-check, with its diagnostics.
//! `dry_run` reports the same without swapping.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use nexus_core::{Catalog, Diagnostic, pb};
use nexus_store::DescriptorCache;
use prost::Message;
use prost_reflect::{Cardinality, Kind, MessageDescriptor};

use crate::{
    config::ServiceConfig,
    discovery::{self, Discovered},
    error::ApiError,
    registry::Registry,
};

/// The backends' descriptors as last discovered, and the one way to refresh them (cheap to
/// share: the API and the periodic refresh hold the same one).
pub struct Discovery {
    timeout: Duration,
    cache: Arc<dyn DescriptorCache>,
    registry: Arc<Registry>,
    /// In config order. The lock also makes refreshes take turns.
    current: tokio::sync::Mutex<Vec<Discovered>>,
}

impl Discovery {
    pub fn new(
        discovered: Vec<Discovered>,
        timeout: Duration,
        cache: Arc<dyn DescriptorCache>,
        registry: Arc<Registry>,
    ) -> Self {
        Self { timeout, cache, registry, current: tokio::sync::Mutex::new(discovered) }
    }

    /// Re-discovers `backend` (every backend when `None`), builds the new catalog, re-type-checks
    /// the pattern versions that use a refreshed backend and, unless `dry_run`, swaps the catalog
    /// in. A named backend that cannot be discovered is UNAVAILABLE; when refreshing every
    /// backend, one that fails keeps its descriptors and its entry says why.
    pub async fn refresh(&self, backend: Option<&str>, dry_run: bool) -> Result<pb::RefreshServicesResponse, ApiError> {
        let mut current = self.current.lock().await;
        let targets: Vec<ServiceConfig> = match backend {
            Some(name) => {
                let found = current.iter().find(|d| d.service.name == name).ok_or_else(|| {
                    let names: Vec<&str> = current.iter().map(|d| d.service.name.as_str()).collect();
                    ApiError::NotFound(format!("no backend named `{name}`; the backends are: {}", names.join(", ")))
                })?;
                vec![found.service.clone()]
            }
            None => current.iter().map(|d| d.service.clone()).collect(),
        };
        let fetched = futures::future::join_all(targets.iter().map(|s| discovery::fetch(s, self.timeout))).await;
        let mut candidate = current.clone();
        let mut reports = Vec::new();
        let mut refreshed = HashSet::new();
        let mut changed = false;
        for (s, result) in targets.iter().zip(fetched) {
            match result {
                Ok(d) => {
                    if let Some(slot) = candidate.iter_mut().find(|c| c.service.name == s.name) {
                        changed |= slot.fds.encode_to_vec() != d.fds.encode_to_vec() || slot.source != d.source;
                        *slot = d;
                    }
                    refreshed.insert(s.name.clone());
                }
                Err(e) if backend.is_some() => return Err(ApiError::Unavailable(e.to_string())),
                Err(e) => reports.push((s.name.clone(), Err(e.to_string()))),
            }
        }
        let catalog = discovery::catalog_of(&candidate).map_err(|e| {
            ApiError::FailedPrecondition(format!("the refreshed descriptors do not make a catalog: {e}"))
        })?;
        // Cached only once they make a catalog: a start from the cache must be able to use them.
        if !dry_run {
            for d in candidate.iter().filter(|d| refreshed.contains(&d.service.name)) {
                discovery::save(self.cache.as_ref(), &d.service, &d.fds, d.source).await;
            }
        }
        let old = self.registry.catalog();
        for name in &refreshed {
            reports.push((name.clone(), Ok(())));
        }
        let backends: Vec<pb::BackendRefresh> = targets
            .iter()
            .filter_map(|s| reports.iter().find(|(n, _)| *n == s.name))
            .map(|(name, outcome)| match outcome {
                Ok(()) => backend_changes(name, &old, &catalog),
                Err(e) => pb::BackendRefresh {
                    backend: name.clone(),
                    source: source_of(&old, name),
                    error: e.clone(),
                    ..Default::default()
                },
            })
            .collect();
        let applied = !dry_run && changed;
        let recheck = self.registry.recheck_and_swap(catalog, &refreshed, applied).await;
        let broken: Vec<pb::PatternImpact> = recheck
            .broken
            .iter()
            .map(|(name, version, diags)| pb::PatternImpact {
                name: name.clone(),
                version: version.clone(),
                diagnostics: diags.iter().map(pb::Diagnostic::from).collect(),
            })
            .collect();
        let repaired = recheck.repaired;
        if applied {
            *current = candidate;
        }
        log(&backends, &recheck.broken, &repaired, applied, dry_run);
        Ok(pb::RefreshServicesResponse { backends, broken, repaired, applied })
    }
}

/// What the log says about a refresh: a warning naming every broken version and its problems.
fn log(
    backends: &[pb::BackendRefresh],
    broken: &[(String, String, Vec<Diagnostic>)],
    repaired: &[String],
    applied: bool,
    dry_run: bool,
) {
    for b in backends {
        if !b.error.is_empty() {
            tracing::warn!(backend = %b.backend, "refresh: discovery failed, keeping the previous descriptors: {}", b.error);
        } else if !(b.added.is_empty() && b.removed.is_empty() && b.changed.is_empty()) {
            let changed: Vec<String> = b.changed.iter().map(|c| format!("{} ({})", c.action, c.change)).collect();
            tracing::info!(
                backend = %b.backend, added = ?b.added, removed = ?b.removed, changed = ?changed,
                "refresh: the backend's schema changed"
            );
        }
    }
    let what = if dry_run { "would no longer type-check" } else { "no longer type-checks" };
    for (name, version, diags) in broken {
        let problems: Vec<String> = diags.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "refresh: pattern {name}@{version} {what} against the refreshed catalog (it keeps running on its compiled plan until a restart): {}",
            problems.join("; ")
        );
    }
    if !repaired.is_empty() {
        tracing::info!(?repaired, applied, "refresh: pattern versions that type-check again");
    }
}

fn source_of(catalog: &Catalog, backend: &str) -> String {
    catalog
        .services()
        .iter()
        .find(|s| &*s.backend == backend)
        .map(|s| s.source.as_str().to_string())
        .unwrap_or_default()
}

/// The actions of `backend` added, removed and changed between two catalogs.
fn backend_changes(backend: &str, old: &Catalog, new: &Catalog) -> pb::BackendRefresh {
    let of = |c: &Catalog| -> BTreeMap<String, prost_reflect::MethodDescriptor> {
        c.actions().filter(|a| &*a.backend == backend).map(|a| (a.name.to_string(), a.method.clone())).collect()
    };
    let (before, after) = (of(old), of(new));
    let mut out =
        pb::BackendRefresh { backend: backend.to_string(), source: source_of(new, backend), ..Default::default() };
    for (name, m) in &after {
        match before.get(name) {
            None => out.added.push(name.clone()),
            Some(was) => {
                let change = method_change(was, m);
                if !change.is_empty() {
                    out.changed.push(pb::ActionChange { action: name.clone(), change: change.join("; ") });
                }
            }
        }
    }
    out.removed = before.keys().filter(|n| !after.contains_key(*n)).cloned().collect();
    out
}

fn method_change(was: &prost_reflect::MethodDescriptor, now: &prost_reflect::MethodDescriptor) -> Vec<String> {
    let mut changes = Vec::new();
    for (side, a, b) in [("input", was.input(), now.input()), ("output", was.output(), now.output())] {
        if a.full_name() != b.full_name() {
            changes.push(format!("{side} {} → {}", a.full_name(), b.full_name()));
            continue;
        }
        let mut fields = Vec::new();
        message_change("", &a, &b, &mut BTreeSet::new(), &mut fields);
        if !fields.is_empty() {
            changes.push(format!("{side} {}: {}", a.full_name(), fields.join(", ")));
        }
    }
    if was.is_server_streaming() != now.is_server_streaming() {
        changes.push(format!("server streaming {} → {}", was.is_server_streaming(), now.is_server_streaming()));
    }
    if was.is_client_streaming() != now.is_client_streaming() {
        changes.push(format!("client streaming {} → {}", was.is_client_streaming(), now.is_client_streaming()));
    }
    changes
}

/// Field by field, into messages of the same name (each message once).
fn message_change(
    prefix: &str,
    a: &MessageDescriptor,
    b: &MessageDescriptor,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<String>,
) {
    if !seen.insert(a.full_name().to_string()) {
        return;
    }
    for fa in a.fields() {
        let path = format!("{prefix}{}", fa.name());
        let Some(fb) = b.get_field_by_name(fa.name()) else {
            out.push(format!("field {path} removed"));
            continue;
        };
        let (ta, tb) = (describe_field(&fa), describe_field(&fb));
        if ta != tb {
            out.push(format!("field {path}: {ta} → {tb}"));
        } else if let (Kind::Message(ma), Kind::Message(mb)) = (fa.kind(), fb.kind()) {
            message_change(&format!("{path}."), &ma, &mb, seen, out);
        }
    }
    for fb in b.fields() {
        if a.get_field_by_name(fb.name()).is_none() {
            out.push(format!("field {prefix}{} added ({})", fb.name(), describe_field(&fb)));
        }
    }
}

/// `repeated string = 3`, `demo.v1.User = 1` …
fn describe_field(f: &prost_reflect::FieldDescriptor) -> String {
    let kind = match f.kind() {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        k => format!("{k:?}").to_lowercase(),
    };
    let label = if f.is_map() {
        "map "
    } else {
        match f.cardinality() {
            Cardinality::Repeated => "repeated ",
            Cardinality::Required => "required ",
            Cardinality::Optional => "",
        }
    };
    format!("{label}{kind} = {}", f.number())
}

/// Refreshes every backend every `every` and logs what changed and what broke.
pub struct CatalogRefresh {
    pub discovery: Arc<Discovery>,
    pub every: Duration,
}

impl CatalogRefresh {
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A refresh stops at the shutdown signal too: discovery can take `discovery_timeout`.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                result = self.discovery.refresh(None, false) => match result {
                    Ok(r) if r.broken.is_empty() => {
                        tracing::debug!(applied = r.applied, "periodic catalog refresh done")
                    }
                    Ok(r) => tracing::warn!(
                        broken = r.broken.len(),
                        "periodic catalog refresh: {} pattern version(s) no longer type-check (listed above)",
                        r.broken.len()
                    ),
                    Err(e) => tracing::warn!("periodic catalog refresh failed: {e}"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The action diff: two versions of a backend's proto in, the lines of its report out.

    use nexus_core::catalog::DescriptorSource;

    use super::*;

    fn catalog(proto: &str) -> Catalog {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shop.proto"), proto).unwrap();
        let fds = protox::compile(["shop.proto"], [dir.path()]).unwrap();
        let mut builder = Catalog::builder();
        builder.add_backend("shop", "http://shop", DescriptorSource::Protos, fds, &[]).unwrap();
        builder.build()
    }

    fn report(before: &str, after: &str) -> Vec<String> {
        let b = backend_changes("shop", &catalog(before), &catalog(after));
        let mut lines: Vec<String> = b.added.iter().map(|a| format!("+ {a}")).collect();
        lines.extend(b.removed.iter().map(|a| format!("- {a}")));
        lines.extend(b.changed.iter().map(|c| format!("~ {}: {}", c.action, c.change)));
        lines
    }

    const BASE: &str = r#"
        syntax = "proto3";
        package shop.v1;
        enum Kind { KIND_UNSPECIFIED = 0; }
        message Item { string sku = 1; int32 count = 2; }
        message Order { string id = 1; repeated Item items = 2; map<string, string> tags = 3; Kind kind = 4; }
        message Ack {}
        service Orders {
          rpc Place(Order) returns (Ack);
          rpc Watch(Order) returns (stream Ack);
        }
    "#;

    #[test]
    fn the_same_schema_reports_nothing() {
        assert!(report(BASE, BASE).is_empty());
    }

    #[test]
    fn nested_fields_types_and_streaming_are_reported() {
        let after = BASE
            .replace("int32 count = 2;", "int64 count = 2; string note = 3;")
            .replace("map<string, string> tags = 3;", "repeated string tags = 3;")
            .replace("returns (stream Ack)", "returns (Ack)")
            .replace(
                "rpc Place(Order) returns (Ack);",
                "rpc Place(Order) returns (Ack);\n rpc Cancel(Ack) returns (Ack);",
            );
        assert_eq!(
            report(BASE, &after),
            [
                "+ shop.v1.Orders/Cancel",
                "~ shop.v1.Orders/Place: input shop.v1.Order: field items.count: int32 = 2 → int64 = 2, \
                 field items.note added (string = 3), field tags: map shop.v1.Order.TagsEntry = 3 → repeated string = 3",
                "~ shop.v1.Orders/Watch: input shop.v1.Order: field items.count: int32 = 2 → int64 = 2, \
                 field items.note added (string = 3), field tags: map shop.v1.Order.TagsEntry = 3 → repeated string = 3; \
                 server streaming true → false",
            ]
        );
    }

    #[test]
    fn a_renamed_type_and_a_removed_method() {
        let after = BASE
            .replace("message Ack {}", "message Done {}")
            .replace("Ack)", "Done)")
            .replace("rpc Watch(Order) returns (stream Done);", "");
        assert_eq!(
            report(BASE, &after),
            ["- shop.v1.Orders/Watch", "~ shop.v1.Orders/Place: output shop.v1.Ack → shop.v1.Done"]
        );
    }
}

//! Pattern RPCs: register, validate, read, search, versions, deprecation, diff, visibility,
//! forks and stars.

use nexus_core::pb;
use tonic::Request;

use super::{
    Api,
    access::{AUTHOR, Asking, READ},
    page_size, principal,
};
use crate::error::ApiError;

/// Longest search term ListPatterns takes (query, owner, tag, action): a longer one is a client
/// mistake, not something to hand to the store's LIKE.
const MAX_SEARCH_TERM: usize = 256;

fn pattern_of(p: Option<pb::Pattern>) -> Result<pb::Pattern, ApiError> {
    p.ok_or_else(|| ApiError::InvalidArgument("`pattern` is required".into()))
}

fn registered(r: crate::registry::Registered) -> pb::RegisterPatternResponse {
    pb::RegisterPatternResponse {
        pattern_ref: Some(pb::PatternRef { name: r.name, version: r.version }),
        diagnostics: r.warnings.iter().map(pb::Diagnostic::from).collect(),
        created: r.created,
    }
}

/// The server-set fields of a stored document (tenant, lineage, stars, visibility).
fn with_facts(doc: &mut pb::Pattern, meta: &nexus_store::PatternName) {
    doc.tenant = meta.tenant.clone();
    doc.forked_from = meta.forked_from.clone().unwrap_or_default();
    doc.stars = meta.stars;
    doc.visibility = meta.visibility.clone();
}

impl Api {
    pub(super) async fn register_pattern(
        &self,
        req: Request<pb::RegisterPatternRequest>,
    ) -> Result<pb::RegisterPatternResponse, ApiError> {
        let p = principal(&req)?;
        let pattern = pattern_of(req.into_inner().pattern)?;
        let asking = Asking { caller: &p, rpc: "RegisterPattern" };
        self.access.require(asking, &format!("pattern:{}", pattern.name), AUTHOR)?;
        let r = self.registry.register(pattern, &p, None).await?;
        if r.created {
            tracing::info!(pattern = %r.name, version = %r.version, "pattern registered");
        }
        Ok(registered(r))
    }

    pub(super) async fn validate_pattern(
        &self,
        req: Request<pb::ValidatePatternRequest>,
    ) -> Result<pb::ValidatePatternResponse, ApiError> {
        let p = principal(&req)?;
        let pattern = pattern_of(req.into_inner().pattern)?;
        let asking = Asking { caller: &p, rpc: "ValidatePattern" };
        self.access.require(asking, &format!("pattern:{}", pattern.name), AUTHOR)?;
        let (valid, diags) = match self.registry.validate(&pattern, &p) {
            Ok(w) => (true, w),
            Err(d) => (false, d),
        };
        Ok(pb::ValidatePatternResponse { valid, diagnostics: diags.iter().map(pb::Diagnostic::from).collect() })
    }

    pub(super) async fn get_pattern(&self, req: Request<pb::GetPatternRequest>) -> Result<pb::Pattern, ApiError> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let meta = self.access.pattern(Asking { caller: &p, rpc: "GetPattern" }, &r.name, READ).await?;
        let mut doc = self.registry.get_fresh(&meta.name, &r.version).await?.document;
        with_facts(&mut doc, &meta);
        let versions = self.registry.store().versions(&meta.name).await?;
        if let Some(v) = versions.iter().find(|v| v.version == doc.version) {
            doc.deprecated = v.deprecated;
            doc.executions = v.executions;
        }
        Ok(doc)
    }

    pub(super) async fn list_patterns(
        &self,
        req: Request<pb::ListPatternsRequest>,
    ) -> Result<pb::ListPatternsResponse, ApiError> {
        let p = principal(&req)?;
        self.access.require(Asking { caller: &p, rpc: "ListPatterns" }, "patterns", READ)?;
        let r = req.into_inner();
        for (field, value) in [("query", &r.query), ("owner", &r.owner), ("tag", &r.tag), ("action", &r.action)] {
            if value.len() > MAX_SEARCH_TERM {
                return Err(ApiError::InvalidArgument(format!(
                    "`{field}` is {} bytes long; a search term is at most {MAX_SEARCH_TERM}",
                    value.len()
                )));
            }
        }
        let offset: usize = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse().map_err(|_| {
                ApiError::InvalidArgument("invalid page_token (pass the one a previous page returned)".into())
            })?
        };
        let sort = match pb::PatternSort::try_from(r.sort).unwrap_or_default() {
            pb::PatternSort::Unspecified | pb::PatternSort::Relevance => nexus_store::SearchSort::Relevance,
            pb::PatternSort::Popularity => nexus_store::SearchSort::Popularity,
            pb::PatternSort::Name => nexus_store::SearchSort::Name,
            pb::PatternSort::Recent => nexus_store::SearchSort::Recent,
        };
        let limit = page_size(r.page_size);
        let query = nexus_store::SearchQuery {
            viewer: p.viewer(),
            text: r.query,
            owner: r.owner,
            tag: r.tag,
            action: r.action,
            sort,
            offset,
            limit,
        };
        let page = self.registry.store().search(&query).await?;
        // The latest version of each (the highest when every version is deprecated). Versions
        // registered on another replica and not loaded here yet: one refresh for the page.
        let lookup = |meta: &nexus_store::PatternName| {
            self.registry.get(&meta.name, meta.latest.as_deref().unwrap_or_default()).ok().or_else(|| {
                self.registry.versions_of(&meta.name).last().and_then(|v| self.registry.get(&meta.name, v).ok())
            })
        };
        if page.names.iter().any(|m| lookup(m).is_none()) {
            self.registry.refresh().await?;
        }
        let mut patterns = Vec::with_capacity(page.names.len());
        for meta in &page.names {
            let Some(entry) = lookup(meta) else { continue };
            let mut doc = entry.document;
            with_facts(&mut doc, meta);
            doc.executions = meta.executions;
            doc.deprecated = meta.latest.is_none();
            patterns.push(doc);
        }
        let next_page_token = if page.more { (offset + limit).to_string() } else { String::new() };
        Ok(pb::ListPatternsResponse { patterns, next_page_token })
    }

    pub(super) async fn list_pattern_versions(
        &self,
        req: Request<pb::ListPatternVersionsRequest>,
    ) -> Result<pb::ListPatternVersionsResponse, ApiError> {
        let p = principal(&req)?;
        let name = req.into_inner().name;
        let meta = self.access.pattern(Asking { caller: &p, rpc: "ListPatternVersions" }, &name, READ).await?;
        let versions = self.registry.store().versions(&name).await?;
        let starred = self.registry.store().starred(&name, &p.key()).await?;
        Ok(pb::ListPatternVersionsResponse {
            versions: versions
                .into_iter()
                .map(|v| pb::PatternVersion {
                    version: v.version,
                    deprecated: v.deprecated,
                    deprecation_reason: v.deprecation_reason,
                    registered_at: Some(crate::convert::timestamp(v.registered_at)),
                    executions: v.executions,
                    description: v.description,
                })
                .collect(),
            latest: meta.latest.unwrap_or_default(),
            owner: meta.owner,
            tenant: meta.tenant,
            visibility: meta.visibility,
            forked_from: meta.forked_from.unwrap_or_default(),
            stars: meta.stars,
            starred,
            name,
        })
    }

    pub(super) async fn deprecate_pattern(
        &self,
        req: Request<pb::DeprecatePatternRequest>,
    ) -> Result<pb::DeprecatePatternResponse, ApiError> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let resource = format!("pattern:{}@{}", r.name, r.version);
        self.access.manage(Asking { caller: &p, rpc: "DeprecatePattern" }, &r.name, &resource).await?;
        let latest =
            self.registry.store().set_deprecated(&r.name, &r.version, !r.undo, &r.reason).await?.ok_or_else(|| {
                ApiError::NotFound(format!(
                    "pattern `{}` has no version `{}` (ListPatternVersions lists them)",
                    r.name, r.version
                ))
            })?;
        self.registry.reload_name(&r.name).await?;
        tracing::info!(pattern = %r.name, version = %r.version, undo = r.undo, "deprecation changed");
        Ok(pb::DeprecatePatternResponse { latest: latest.unwrap_or_default() })
    }

    pub(super) async fn diff_patterns(
        &self,
        req: Request<pb::DiffPatternsRequest>,
    ) -> Result<pb::DiffPatternsResponse, ApiError> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let asking = Asking { caller: &p, rpc: "DiffPatterns" };
        let to_name = if r.to_name.is_empty() { r.name.clone() } else { r.to_name.clone() };
        self.access.pattern(asking, &r.name, READ).await?;
        self.access.visible(asking, &to_name).await?;
        let before = self.registry.get_fresh(&r.name, &r.from_version).await?.document;
        let after = self.registry.get_fresh(&to_name, &r.to_version).await?.document;
        Ok(pb::DiffPatternsResponse { changes: nexus_core::diff::diff(&before, &after) })
    }

    pub(super) async fn set_visibility(
        &self,
        req: Request<pb::SetVisibilityRequest>,
    ) -> Result<pb::SetVisibilityResponse, ApiError> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let asking = Asking { caller: &p, rpc: "SetVisibility" };
        let resource = format!("pattern:{}", r.name);
        self.access.require(asking, &resource, AUTHOR)?;
        if !matches!(r.visibility.as_str(), "private" | "tenant" | "public") {
            return Err(ApiError::InvalidArgument(format!(
                "`{}` is not a visibility: use private, tenant or public",
                r.visibility
            )));
        }
        self.access.manage(asking, &r.name, &resource).await?;
        self.registry.store().set_visibility(&r.name, &r.visibility).await?;
        self.registry.reload_name(&r.name).await?;
        tracing::info!(pattern = %r.name, visibility = %r.visibility, "visibility changed");
        Ok(pb::SetVisibilityResponse { visibility: r.visibility })
    }

    pub(super) async fn fork_pattern(
        &self,
        req: Request<pb::ForkPatternRequest>,
    ) -> Result<pb::RegisterPatternResponse, ApiError> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let asking = Asking { caller: &p, rpc: "ForkPattern" };
        self.access.require(asking, &format!("pattern:{}", r.name), AUTHOR)?;
        if r.new_name.is_empty() {
            return Err(ApiError::InvalidArgument("`new_name` is required: the fork's name".into()));
        }
        self.access.visible(asking, &r.name).await?;
        let mut doc = self.registry.get_fresh(&r.name, &r.version).await?.document;
        let source = format!("{}@{}", doc.name, doc.version);
        doc.name = r.new_name;
        doc.visibility = "private".into();
        let reg = self.registry.register(doc, &p, Some(source.clone())).await?;
        tracing::info!(pattern = %reg.name, version = %reg.version, from = %source, "pattern forked");
        Ok(registered(reg))
    }

    pub(super) async fn star(&self, req: Request<pb::StarRequest>) -> Result<pb::StarResponse, ApiError> {
        let p = principal(&req)?;
        let r = req.into_inner();
        self.access.pattern(Asking { caller: &p, rpc: "Star" }, &r.name, READ).await?;
        let stars = self.registry.store().star(&r.name, &p.key(), !r.unstar).await?;
        // The registry caches names' metadata (stars included) for GetPattern and versions.
        self.registry.reload_name(&r.name).await?;
        Ok(pb::StarResponse { stars, starred: !r.unstar })
    }
}

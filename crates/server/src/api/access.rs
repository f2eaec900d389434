//! Who may do what: roles per RPC, visibility of patterns, tenancy of executions, and the audit
//! of every refusal. Every handler asks here; nothing else decides access.
//!
//! Order of checks: the role first (PERMISSION_DENIED), then the resource. A pattern or an
//! execution the caller may not see answers NOT_FOUND, worded exactly as for one that does not
//! exist; the refusal is still audited.

use std::sync::Arc;

use nexus_store::{AuthStore, PatternName};

use crate::{
    auth::{Principal, Role},
    error::ApiError,
    registry::{Registry, manageable_by, visible_to},
};

/// Roles that may read (patterns, the catalog, executions of their tenant).
pub const READ: &[Role] = &[Role::Viewer, Role::Runner, Role::Author];
/// Roles that may register and fork patterns.
pub const AUTHOR: &[Role] = &[Role::Author];
/// Admins only (admins have every role, so no other role is listed).
pub const ADMIN: &[Role] = &[];
/// Roles that may execute patterns and cancel executions.
pub const RUN: &[Role] = &[Role::Runner];

pub struct Access {
    registry: Arc<Registry>,
    /// Where refusals are audited.
    audit: Arc<dyn AuthStore>,
}

/// One RPC's request for access, as the audit log records it.
#[derive(Clone, Copy)]
pub struct Asking<'a> {
    pub caller: &'a Principal,
    pub rpc: &'static str,
}

impl Access {
    pub fn new(registry: Arc<Registry>, audit: Arc<dyn AuthStore>) -> Self {
        Self { registry, audit }
    }

    /// Records a refusal (who, what, when) in the store, off the request's path.
    fn deny(&self, a: Asking<'_>, resource: &str, reason: &str) {
        let p = a.caller;
        tracing::info!(tenant = %p.tenant, subject = %p.subject, rpc = a.rpc, resource, "denied: {reason}");
        let entry = nexus_store::AuditEntry {
            at: std::time::SystemTime::now(),
            tenant: p.tenant.to_string(),
            subject: p.subject.to_string(),
            action: a.rpc.to_string(),
            resource: resource.to_string(),
            reason: reason.to_string(),
        };
        let store = self.audit.clone();
        tokio::spawn(async move {
            if let Err(e) = store.audit(&entry).await {
                tracing::warn!("cannot write the audit log: {e}");
            }
        });
    }

    /// PERMISSION_DENIED (audited) unless the caller has one of `roles` (admins have all).
    pub fn require(&self, a: Asking<'_>, resource: &str, roles: &[Role]) -> Result<(), ApiError> {
        let p = a.caller;
        if p.any_of(roles) {
            return Ok(());
        }
        let mut names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        names.push("admin");
        let reason = format!("{} needs the role {}", a.rpc, names.join(" or "));
        self.deny(a, resource, &reason);
        let has = if p.roles.is_empty() {
            "no roles".to_string()
        } else {
            p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
        };
        Err(ApiError::PermissionDenied(format!("{reason}; {} (tenant {}) has {has}", p.subject, p.tenant)))
    }

    /// Publishing an event: the `runner` role, and for a restricted type one of its roles
    /// (`[auth.restricted_events]`). Refusals are audited.
    pub fn publish(&self, a: Asking<'_>, event_type: &str) -> Result<(), ApiError> {
        let resource = format!("event:{event_type}");
        self.require(a, &resource, RUN)?;
        let Some(roles) = self.registry.event_roles(event_type) else { return Ok(()) };
        if a.caller.any_of(roles) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).chain(["admin"]).collect();
        let reason = format!("publishing `{event_type}` is restricted to the role {}", names.join(" or "));
        self.deny(a, &resource, &reason);
        Err(ApiError::PermissionDenied(format!("{reason}; {} (tenant {}) has not", a.caller.subject, a.caller.tenant)))
    }

    /// The role, then the pattern's visibility: its facts when the caller may see it.
    pub async fn pattern(&self, a: Asking<'_>, name: &str, roles: &[Role]) -> Result<PatternName, ApiError> {
        self.require(a, &format!("pattern:{name}"), roles)?;
        self.visible(a, name).await
    }

    /// The role, then the pattern's visibility, then ownership: PERMISSION_DENIED unless the
    /// caller owns the pattern or is an admin of its tenant.
    pub async fn manage(&self, a: Asking<'_>, name: &str, resource: &str) -> Result<PatternName, ApiError> {
        self.require(a, resource, AUTHOR)?;
        let meta = self.visible(a, name).await?;
        if manageable_by(&meta, a.caller) {
            return Ok(meta);
        }
        let reason = format!(
            "pattern `{name}` belongs to {} (tenant {}): only its owner or an admin of its tenant may change it",
            meta.owner, meta.tenant
        );
        self.deny(a, &format!("pattern:{name}"), &reason);
        Err(ApiError::PermissionDenied(reason))
    }

    /// The pattern's facts when the caller may see it; NOT_FOUND otherwise, worded exactly as
    /// for a pattern that does not exist (the refusal is audited).
    pub async fn visible(&self, a: Asking<'_>, name: &str) -> Result<PatternName, ApiError> {
        crate::registry::check_name_length(name)?;
        let meta = match self.registry.name(name) {
            Some(m) => Some(m),
            // Registered on another replica a moment ago.
            None => self.registry.reload_name(name).await?,
        };
        match meta {
            Some(m) if visible_to(&m, a.caller) => Ok(m),
            found => {
                if found.is_some() {
                    self.deny(a, &format!("pattern:{name}"), "not visible to the caller");
                }
                Err(ApiError::NotFound(format!("no pattern named `{name}` (ListPatterns shows what is registered)")))
            }
        }
    }

    /// May the caller run this pattern? The hot path: the role and a check under the registry's
    /// read lock, without copying the name's facts; the slow path only when that cannot tell.
    pub async fn executable(&self, a: Asking<'_>, name: &str) -> Result<(), ApiError> {
        if !a.caller.any_of(RUN) {
            self.require(a, &format!("pattern:{name}"), RUN)?;
        }
        if self.registry.visible_here(name, a.caller) != Some(true) {
            self.visible(a, name).await?;
        }
        Ok(())
    }

    /// An execution's tenant must be the caller's; otherwise it does not exist for them.
    pub fn own_execution(&self, a: Asking<'_>, id: &str, tenant: &str) -> Result<(), ApiError> {
        if tenant == &*a.caller.tenant {
            return Ok(());
        }
        self.deny(a, &format!("execution:{id}"), "the execution belongs to another tenant");
        Err(not_found_execution(id))
    }
}

/// The answer for an execution that does not exist (or is not the caller's to see).
pub fn not_found_execution(id: &str) -> ApiError {
    ApiError::NotFound(format!("no execution `{id}`"))
}

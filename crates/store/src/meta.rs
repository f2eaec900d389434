//! Ownership, versions, the marketplace, the knowledge graph, API keys and the audit log: the
//! types of [`crate::MetaStore`] and [`crate::AuthStore`].

use std::time::SystemTime;

/// A pattern name and what belongs to the name rather than to one version: who owns it, who may
/// see it, where it was forked from, its stars and executions.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternName {
    pub name: String,
    pub tenant: String,
    pub owner: String,
    /// `private` | `tenant` | `public`.
    pub visibility: String,
    /// `NAME@VERSION` this pattern was forked from.
    pub forked_from: Option<String>,
    /// Highest version (semver) that is not deprecated; `None` when every version is.
    pub latest: Option<String>,
    /// Description and tags of the latest version (for search).
    pub description: String,
    pub tags: Vec<String>,
    pub stars: u64,
    /// Executions of all versions.
    pub executions: u64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// One version's mutable facts (the document itself never changes).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    pub deprecated: bool,
    pub deprecation_reason: String,
    pub registered_at: SystemTime,
    pub executions: u64,
    pub description: String,
}

/// A version to register, with what the knowledge graph needs to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion {
    /// The document and its indexable fields (`owner` is the caller's subject).
    pub pattern: crate::StoredPattern,
    pub tags: Vec<String>,
    /// The caller's tenant.
    pub tenant: String,
    /// The caller may add versions to any pattern of their tenant (role `admin`).
    pub admin: bool,
    /// Visibility of a new name (an existing name keeps its own).
    pub visibility: String,
    /// `NAME@VERSION` for a fork: the name must then be new.
    pub forked_from: Option<String>,
    /// Actions the version calls (`package.Service/Method`), including compensations.
    pub uses: Vec<String>,
    /// Pattern versions it calls as steps (`NAME@VERSION`).
    pub calls: Vec<String>,
    /// Event types it is triggered by, emits and waits for.
    pub events: VersionEvents,
}

/// The event types a version is linked to, for the graph's `event:TYPE` nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEvents {
    /// Types of its `on:` triggers (TRIGGERED_BY).
    pub triggers: Vec<String>,
    /// Types its `emit` steps publish (EMITS).
    pub emits: Vec<String>,
    /// Types its `wait_for` steps wait for, every branch (WAITS_FOR).
    pub waits: Vec<String>,
}

/// What happened to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    Created,
    /// The identical document was already registered (an idempotent retry).
    Identical,
    /// A different document holds this name and version.
    Conflict,
    /// The name belongs to another owner (or tenant): only they, or an admin of their tenant,
    /// may add versions. Carries the name's tenant and owner.
    NotOwner {
        tenant: String,
        owner: String,
    },
    /// Versions only grow: carries the highest registered version that is not deprecated.
    NotGreater {
        highest: String,
    },
    /// A fork must take a new name; this one is taken.
    NameTaken,
}

/// Who is looking: search and listings only return what they may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub tenant: String,
    pub subject: String,
    /// Sees every pattern of their tenant, private ones included.
    pub admin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchSort {
    /// Best match first (name over description over tags); by name without text.
    #[default]
    Relevance,
    /// Stars, then executions.
    Popularity,
    Name,
    /// Most recently updated first.
    Recent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub viewer: Viewer,
    /// Case-insensitive substring of name, description or a tag.
    pub text: String,
    pub owner: String,
    /// Exact tag.
    pub tag: String,
    /// Only names whose latest version uses this action.
    pub action: String,
    pub sort: SearchSort,
    pub offset: usize,
    pub limit: usize,
}

/// One page of search results; `more` when there is a next page.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub names: Vec<PatternName>,
    pub more: bool,
}

/// A node of the knowledge graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GraphNode {
    /// `pattern:NAME@VERSION`, `action:package.Service/Method`, `service:package.Service`,
    /// `owner:TENANT/SUBJECT`.
    pub id: String,
    /// `pattern_version` | `action` | `service` | `owner`.
    pub kind: String,
    pub label: String,
    pub deprecated: bool,
}

/// An edge: `USES` (pattern version → action), `CALLS_PATTERN` (pattern version → pattern
/// version), `FORKED_FROM` (a fork's first version → its source version), `OWNED_BY` (pattern
/// version → owner), `PART_OF` (action → service).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GraphEdge {
    pub from: String,
    pub kind: String,
    pub to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Edges leaving the node.
    Out,
    /// Edges arriving at the node.
    In,
}

/// An API key as stored: never the key itself, only its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    /// The public part of the key (`nxs_<id>_<secret>`), for lookup and listing.
    pub id: String,
    /// SHA-256 of the whole key, hex.
    pub secret_hash: String,
    pub tenant: String,
    pub subject: String,
    pub roles: Vec<String>,
    pub created_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
}

/// A refused call, kept in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: SystemTime,
    pub tenant: String,
    pub subject: String,
    /// The RPC, e.g. `RegisterPattern`.
    pub action: String,
    /// What it was about, e.g. `pattern:user_creation`.
    pub resource: String,
    /// Why it was refused.
    pub reason: String,
}

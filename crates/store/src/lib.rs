//! Nexus store: where registered patterns live (and, later, the execution journal).
//!
//! One trait, [`PatternStore`], two implementations: SQLite ([`SqliteStore`], embedded default,
//! created automatically in the data directory or in memory) and PostgreSQL ([`PgStore`], shared by
//! replicas). Both pass the same conformance suite (`conformance`, behind the cargo feature of
//! that name). Migrations are embedded in the binary and applied at start.
//!
//! Modules depend on each other as a tree: `time` and `dialect` are leaves; `migrate`, `journal`,
//! `meta_sql` and `events` (which reuses the journal's step write) use them and name no store; `sqlite` and `postgres` put each store together
//! from those.

pub mod api_key;
// Test code for this crate's tests and for other crates' stores: not in a build that does not ask
// for it (`features = ["conformance"]`).
#[cfg(feature = "conformance")]
pub mod conformance;
mod dialect;
mod events;
mod journal;
pub mod meta;
mod meta_sql;
mod migrate;
mod postgres;
mod sqlite;
mod time;

use std::time::SystemTime;

pub use meta::{
    ApiKeyRecord, AuditEntry, Direction, GraphEdge, GraphNode, NewVersion, PatternName, RegisterOutcome, SearchPage,
    SearchQuery, SearchSort, VersionEvents, VersionInfo, Viewer,
};
pub use postgres::{PgStore, redact_url};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
// The messages include their cause, so the causes are not also `source()`s: a report that
// walks the chain (`{:#}`) would print each one twice.
pub enum Error {
    #[error("cannot open the store at {location}: {cause}")]
    Open { location: String, cause: sqlx::Error },
    #[error("store migration {version} failed: {cause}")]
    Migration { version: i64, cause: sqlx::Error },
    #[error("store error: {0}")]
    Database(sqlx::Error),
    /// An error of the SQLite journal's own connection ([`SqliteStore`]'s in-place writer).
    #[error("store error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl Error {
    /// Whether trying again later may succeed: the database is unreachable, restarting or busy,
    /// as opposed to a write it refuses (a constraint) or data it cannot read.
    pub fn is_transient(&self) -> bool {
        let e = match self {
            Self::Database(e) => e,
            // As sqlx classifies SQLite's errors: all but a refused write (a constraint) may
            // pass later (busy, locked, I/O).
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                return e.code != rusqlite::ErrorCode::ConstraintViolation;
            }
            Self::Sqlite(_) | Self::Open { .. } | Self::Migration { .. } => return false,
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => matches!(db.kind(), sqlx::error::ErrorKind::Other),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A registered pattern version as stored: the document in its JSON form plus indexable fields.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPattern {
    pub name: String,
    pub version: String,
    pub owner: String,
    pub description: String,
    /// The pattern document (proto3 JSON mapping, proto field names).
    pub document: String,
    pub registered_at: SystemTime,
}

/// What happened to an insert: versions are immutable, so the same name and version may only be
/// registered again with the identical document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Created,
    /// The identical document was already registered (an idempotent retry).
    Identical,
    /// A different document holds this name and version.
    Conflict,
}

#[async_trait::async_trait]
pub trait PatternStore: Send + Sync + 'static {
    async fn insert_pattern(&self, pattern: &StoredPattern) -> Result<InsertOutcome>;

    /// Every registered version, oldest registration first.
    async fn list_patterns(&self) -> Result<Vec<StoredPattern>>;

    /// The versions registered at or after `since` (registration time, by the registering
    /// replica's clock), oldest first.
    async fn list_patterns_since(&self, since: SystemTime) -> Result<Vec<StoredPattern>>;
}

/// Ownership, versions, the marketplace and the knowledge graph. Every change that touches the
/// graph (registration, fork, deprecation) updates it in the same transaction.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Registers a version, in one transaction: creates the name (tenant, owner, visibility,
    /// lineage) if new; otherwise checks the caller owns it (same tenant, and same owner or
    /// `admin`) and that the version is greater (semver) than every registered one; stores the
    /// version; recomputes `latest`, description and tags of the name; adds the graph nodes and
    /// edges (USES, CALLS_PATTERN, FORKED_FROM, OWNED_BY, PART_OF). The identical document again
    /// is `Identical` whoever asks (a retry); nothing changes on any other outcome.
    async fn register_version(&self, v: &NewVersion) -> Result<RegisterOutcome>;

    async fn pattern_name(&self, name: &str) -> Result<Option<PatternName>>;

    /// Every name (the registry keeps them in memory for access checks on the hot path).
    async fn pattern_names(&self) -> Result<Vec<PatternName>>;

    /// Every version of a name, oldest (lowest semver) first.
    async fn versions(&self, name: &str) -> Result<Vec<VersionInfo>>;

    /// Deprecates a version (or lifts it, `deprecated: false`), recomputes `latest` and marks
    /// the graph node. `Ok(None)` when the version does not exist; otherwise the new `latest`.
    async fn set_deprecated(
        &self,
        name: &str,
        version: &str,
        deprecated: bool,
        reason: &str,
    ) -> Result<Option<Option<String>>>;

    /// False when the name does not exist.
    async fn set_visibility(&self, name: &str, visibility: &str) -> Result<bool>;

    /// Stars (or unstars) a name for `who` (`TENANT/SUBJECT`); idempotent. Returns the count.
    async fn star(&self, name: &str, who: &str, on: bool) -> Result<u64>;

    /// Whether `who` starred the name.
    async fn starred(&self, name: &str, who: &str) -> Result<bool>;

    /// Adds executions per version: `(name, version, count)`.
    async fn add_executions(&self, counts: &[(String, String, u64)]) -> Result<()>;

    /// Searches the names `viewer` may see (public; their tenant's `tenant` ones; their own
    /// private ones, or all of their tenant's when admin), filtered and sorted, one page.
    async fn search(&self, q: &SearchQuery) -> Result<SearchPage>;

    /// Edges leaving (`Out`) or arriving at (`In`) a node, of the given kinds (all when empty).
    async fn graph_edges(&self, node: &str, direction: Direction, kinds: &[&str]) -> Result<Vec<GraphEdge>>;

    /// The nodes with these ids (unknown ids are left out).
    async fn graph_nodes(&self, ids: &[String]) -> Result<Vec<GraphNode>>;
}

/// One backend's descriptors as its last successful discovery found them.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedDescriptors {
    /// The name the backend is plugged in under.
    pub backend: String,
    pub endpoint: String,
    /// Where they came from: `reflection`, `descriptor_set` or `protos`.
    pub source: String,
    /// A serialized `google.protobuf.FileDescriptorSet`.
    pub descriptors: Vec<u8>,
    pub discovered_at: SystemTime,
}

/// Backends' descriptors from their last successful discovery, so a backend unreachable at
/// start can be served from them.
#[async_trait::async_trait]
pub trait DescriptorCache: Send + Sync + 'static {
    /// Replaces what is stored for `d.backend`.
    async fn save_descriptors(&self, d: &CachedDescriptors) -> Result<()>;

    /// What the last successful discovery of `backend` stored, if any.
    async fn cached_descriptors(&self, backend: &str) -> Result<Option<CachedDescriptors>>;
}

/// API keys and the audit log of refused calls.
#[async_trait::async_trait]
pub trait AuthStore: Send + Sync + 'static {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()>;

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>>;

    /// Every key, newest first (hashes only).
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>>;

    /// False when no unrevoked key has this id.
    async fn revoke_api_key(&self, id: &str) -> Result<bool>;

    async fn audit(&self, entry: &AuditEntry) -> Result<()>;

    /// The most recent entries, newest first.
    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>>;
}

/// A durable execution as journaled when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionStart {
    pub id: String,
    pub pattern_name: String,
    pub pattern_version: String,
    /// The execution input, JSON.
    pub input: String,
    pub idempotency_key: Option<String>,
    /// The tenant of the caller who started it.
    pub tenant: String,
    /// Its trace context, opaque to the store (the engine's `TraceContext::to_journal`; empty
    /// for none): resumed elsewhere, it continues the same trace.
    pub trace: String,
    pub started_at: SystemTime,
    /// The replica running it, and until when its lease holds (millisecond precision).
    pub owner: String,
    pub lease_until: SystemTime,
}

/// A durable execution that has not finished: what recovery needs to resume it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnfinishedExecution {
    pub start: ExecutionStart,
    /// Completed steps: (step id, journaled result), in completion order.
    pub steps: Vec<(String, String)>,
}

/// A finished durable execution's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedExecution {
    pub id: String,
    pub pattern_name: String,
    pub status: String,
    /// The execution record (the API's `Execution`, JSON).
    pub record: String,
}

/// Which journaled executions [`JournalStore::list_executions`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionQuery {
    pub tenant: String,
    pub pattern_name: Option<String>,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELLED`, `COMPENSATED`.
    pub status: Option<String>,
    /// Only executions with a smaller id (older: ids are time-ordered), for pagination.
    pub before: Option<String>,
    pub limit: u32,
}

/// One journaled execution as listed: the summary of a finished one, or the start of one still
/// running.
#[derive(Debug, Clone, PartialEq)]
pub struct JournaledExecution {
    pub id: String,
    pub pattern_name: String,
    pub pattern_version: String,
    pub status: String,
    /// The finished execution's summary (as in [`FinishedExecution::record`]).
    pub record: Option<String>,
    pub started_at: SystemTime,
    pub tenant: String,
    pub idempotency_key: Option<String>,
}

/// One journal write, for [`JournalStore::apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum JournalOp {
    Start(ExecutionStart),
    Step { execution_id: String, step_id: String, result: String },
    Finish(FinishedExecution),
}

/// The storage of durable executions' journal: the start, every completed step's result, the
/// end, and the leases that say which replica runs what. A write returns once it is durable
/// (committed). The engine does not see this trait: it writes through `nexus_engine::Journal`,
/// which the server implements over this one with group commit and outage retries.
#[async_trait::async_trait]
pub trait JournalStore: Send + Sync + 'static {
    async fn start_execution(&self, start: &ExecutionStart) -> Result<()>;

    async fn complete_step(&self, execution_id: &str, step_id: &str, result: &str) -> Result<()>;

    /// Marks the execution finished; its step results are compacted away (the record keeps them)
    /// and its event waits deleted (a finished execution waits for nothing).
    async fn finish_execution(&self, finished: &FinishedExecution) -> Result<()>;

    async fn unfinished_executions(&self) -> Result<Vec<UnfinishedExecution>>;

    async fn finished_execution(&self, id: &str) -> Result<Option<FinishedExecution>>;

    /// An unfinished execution (running on some replica, or waiting to be taken over) with its
    /// journaled steps.
    async fn unfinished_execution(&self, id: &str) -> Result<Option<UnfinishedExecution>>;

    /// Applies several writes in one transaction (one commit: group commit). All or none.
    async fn apply(&self, ops: &[JournalOp]) -> Result<()>;

    /// Extends `owner`'s leases on those of `running` that are unfinished; returns how many. An
    /// execution `owner` holds but no longer runs (it stopped it) is not renewed: its lease runs
    /// out and it is claimed again, by this replica or another. A parked execution
    /// ([`EventStore::park_execution`]) is not renewed either.
    async fn renew_leases(&self, owner: &str, running: &[String], until: SystemTime) -> Result<u64>;

    /// Takes over up to `limit` unfinished executions whose lease ran out before `now` (their
    /// replica died or left): they become `owner`'s until `until`. Concurrent claimers never
    /// get the same execution (`FOR UPDATE SKIP LOCKED` in PostgreSQL; SQLite has one writer).
    /// Parked executions are never claimed: resolving a wait hands them over.
    async fn claim_expired(
        &self,
        owner: &str,
        now: SystemTime,
        until: SystemTime,
        limit: u32,
    ) -> Result<Vec<UnfinishedExecution>>;

    /// Gives up `owner`'s leases at once (graceful shutdown), so another replica takes over.
    async fn release_leases(&self, owner: &str) -> Result<u64>;

    /// Deletes finished executions that started before `before` (retention); returns how many.
    async fn prune_finished(&self, before: SystemTime) -> Result<u64>;

    /// The execution that used `key` for `pattern_name`, finished or not.
    async fn execution_by_idempotency_key(&self, pattern_name: &str, key: &str) -> Result<Option<String>>;

    /// A tenant's journaled executions, newest first, filtered, at most `limit`.
    async fn list_executions(&self, q: &ExecutionQuery) -> Result<Vec<JournaledExecution>>;
}

/// An event as the store keeps it: the correlation buffer that lets a `wait_for` registered just
/// after its event still see it, and what the event router has finished processing.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub tenant: String,
    pub source: String,
    pub id: String,
    pub event_type: String,
    pub subject: String,
    /// When it happened (the publisher's word; millisecond precision).
    pub time: SystemTime,
    pub datacontenttype: String,
    /// The event's `data`, JSON.
    pub data: String,
    /// When this store first recorded it (millisecond precision).
    pub received_at: SystemTime,
}

/// A registered event type ([`EventStore::put_event_type`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEventType {
    pub tenant: String,
    pub event_type: String,
    pub description: String,
    /// The JSON Schema of the events' `data`, JSON (`{}` for none).
    pub schema: String,
    /// Millisecond precision.
    pub registered_at: SystemTime,
}

/// What [`EventStore::record_event`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRecorded {
    /// The first time this identity was seen: recorded.
    New,
    /// An event with this identity (tenant, source, id) was recorded before; nothing changed.
    /// `processed`: the router has finished with it (triggers started, waits resumed).
    Duplicate { processed: bool },
}

/// One branch of a durable execution's `wait_for` step, waiting for an event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventWait {
    pub execution_id: String,
    pub step_id: String,
    /// The branch of a `wait_for.any` (0 for a single wait).
    pub branch: u32,
    pub tenant: String,
    pub pattern_name: String,
    pub pattern_version: String,
    pub event_type: String,
    /// When the match compares one path of the event (`data.order_id`) with a value known when
    /// the wait registered: that path, and the value as canonical JSON. Candidates for an event
    /// are then found by index instead of evaluating every wait's match.
    pub correlation: Option<(String, String)>,
    /// What the match reads besides the event (`input`, `steps`), as JSON.
    pub context: String,
    /// When the wait times out (millisecond precision).
    pub deadline: SystemTime,
}

/// What [`EventStore::resolve_wait`] did.
#[derive(Debug, Clone, PartialEq)]
// One value per resolution, moved straight to its caller and never collected: a box would cost an
// allocation and save nothing.
#[allow(clippy::large_enum_variant)]
pub enum WaitResolution {
    /// The step's waits were already gone (resolved by another event or replica, timed out, or
    /// the execution ended): nothing changed.
    Gone,
    /// Resolved (waits deleted, step result journaled); the execution is not parked, so the replica
    /// running it continues with the result.
    Running,
    /// Resolved, and the execution was parked: it is now the caller's (owner and lease set, no
    /// longer parked), to resume with its journaled steps.
    Claimed(UnfinishedExecution),
}

/// Events (the correlation buffer and the router's progress) and durable executions' waits.
///
/// A parked execution (only waits left to do) runs nowhere: its lease is not renewed and
/// [`JournalStore::claim_expired`] never claims it. It is resumed by whoever resolves one of its
/// waits ([`EventStore::resolve_wait`]), with an event or a timeout.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Records an event unless its identity (tenant, source, id) is known.
    async fn record_event(&self, event: &StoredEvent) -> Result<EventRecorded>;

    /// The router has finished with this event (triggers started, waits resolved).
    async fn mark_event_processed(&self, tenant: &str, source: &str, id: &str) -> Result<()>;

    /// Recorded events the router has not finished with, oldest first (after a restart).
    async fn unprocessed_events(&self, limit: u32) -> Result<Vec<StoredEvent>>;

    /// A tenant's events of `event_type` received at or after `since`, oldest first, at most
    /// `limit` (the lookback a new wait is matched against).
    async fn recent_events(
        &self,
        tenant: &str,
        event_type: &str,
        since: SystemTime,
        limit: u32,
    ) -> Result<Vec<StoredEvent>>;

    /// Deletes events received before `before` (processed or not); returns how many. Trigger
    /// starts recorded before `before` go too ([`EventStore::record_trigger`] remembers a trigger
    /// as long as the event buffer remembers its event).
    async fn prune_events(&self, before: SystemTime) -> Result<u64>;

    /// Registers the waits of one `wait_for` step (every branch) of a running execution.
    async fn add_waits(&self, waits: &[EventWait]) -> Result<()>;

    /// The distinct correlation paths of a tenant's waits on `event_type` (usually one or two).
    async fn wait_correlation_paths(&self, tenant: &str, event_type: &str) -> Result<Vec<String>>;

    /// A tenant's waits on `event_type` that may match an event: those without a correlation, and
    /// those whose (path, value) is one of `keys` (the event's value at each path of
    /// [`EventStore::wait_correlation_paths`]). At most `limit`, oldest registration first.
    async fn candidate_waits(
        &self,
        tenant: &str,
        event_type: &str,
        keys: &[(String, String)],
        limit: u32,
    ) -> Result<Vec<EventWait>>;

    /// Parks an execution whose only work left is waiting: its lease is dropped and nobody claims
    /// it until a wait resolves. False (nothing changed, the lease stays) when it has no waits left
    /// (one resolved meanwhile: the caller reads its journaled result and goes on), or when it is
    /// not unfinished. Parking clears the owner as well as the lease.
    async fn park_execution(&self, execution_id: &str) -> Result<bool>;

    /// Resolves the waits of one step, in one transaction: deletes every branch's row, journals
    /// `result` as the step's result (as [`JournalStore::complete_step`] does) and, when the
    /// execution is parked, claims it for `owner` until `lease_until`. Of concurrent resolutions
    /// of one step, exactly one is not `Gone`. Waits left by an execution that is not unfinished
    /// are deleted (`Gone`).
    async fn resolve_wait(
        &self,
        execution_id: &str,
        step_id: &str,
        result: &str,
        owner: &str,
        lease_until: SystemTime,
    ) -> Result<WaitResolution>;

    /// Waits whose deadline is before `now`, earliest first, at most `limit`.
    async fn expired_waits(&self, now: SystemTime, limit: u32) -> Result<Vec<EventWait>>;

    /// The waits of one execution (all steps and branches).
    async fn execution_waits(&self, execution_id: &str) -> Result<Vec<EventWait>>;

    /// Records that a trigger started (or is starting) an execution of `pattern_name@version` for
    /// the event (tenant, source, id); false when one was recorded before (a redelivery).
    async fn record_trigger(
        &self,
        pattern_name: &str,
        pattern_version: &str,
        tenant: &str,
        source: &str,
        id: &str,
    ) -> Result<bool>;

    /// Schedules: advances `pattern_name`'s last handled tick from `previous` to `tick`,
    /// atomically (compare-and-set: `previous` `None` means no tick was ever handled). True for
    /// the one caller whose `previous` was still the stored value — of replicas racing for one
    /// tick, exactly one wins and fires it. Millisecond precision.
    async fn claim_tick(&self, pattern_name: &str, tick: SystemTime, previous: Option<SystemTime>) -> Result<bool>;

    /// The last tick of `pattern_name`'s schedule that was handled (fired or skipped).
    async fn last_tick(&self, pattern_name: &str) -> Result<Option<SystemTime>>;

    /// Registers an event type of its tenant, replacing one registered before under that name.
    async fn put_event_type(&self, event_type: &StoredEventType) -> Result<()>;

    /// The event types of `tenant` (of every tenant for `None`), by tenant and name.
    async fn event_types(&self, tenant: Option<&str>) -> Result<Vec<StoredEventType>>;
}

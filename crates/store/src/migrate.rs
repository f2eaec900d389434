//! Embedded, ordered schema migrations, applied once each inside a transaction.
//!
//! Each migration is written once for both databases: a [`Dialect`] renders the one difference in
//! their SQL ([`Dialect::ddl`]), and a migration that only one database needs says so
//! ([`Migration::only`]). A migration is known by its version alone (`schema_migrations` records
//! the versions applied, nothing else), so a released migration must never change what it
//! creates; the schema snapshots in `tests/schema/` hold both databases to that.

use sqlx::{PgPool, SqlitePool};

use crate::{Error, Result, dialect::Dialect, time::now_ms};

/// One schema change.
pub(crate) struct Migration {
    pub(crate) version: i64,
    /// The SQL, for [`Dialect::ddl`].
    pub(crate) sql: &'static str,
    /// The one dialect that needs this migration, if only one does. The others neither run nor
    /// record it (so PostgreSQL's `schema_migrations` has never held versions 6 and 9).
    only: Option<Dialect>,
}

/// Append only: a released migration never changes.
const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, sql: PATTERNS, only: None },
    Migration { version: 2, sql: JOURNAL, only: None },
    Migration { version: 3, sql: LEASES, only: None },
    Migration { version: 4, sql: META, only: None },
    Migration { version: 5, sql: EXECUTIONS_BY_TENANT, only: None },
    Migration { version: 6, sql: SQLITE_JOURNAL_BATCH, only: Some(Dialect::Sqlite) },
    Migration { version: 7, sql: BACKEND_DESCRIPTORS, only: None },
    Migration { version: 8, sql: EVENTS, only: None },
    Migration { version: 9, sql: SQLITE_JOURNAL_BATCH_WAITS, only: Some(Dialect::Sqlite) },
    Migration { version: 10, sql: SCHEDULE_TICKS, only: None },
    Migration { version: 11, sql: EVENT_TYPES, only: None },
    Migration { version: 12, sql: EXECUTION_TRACE, only: None },
    Migration { version: 13, sql: SQLITE_JOURNAL_BATCH_TRACE, only: Some(Dialect::Sqlite) },
    Migration { version: 14, sql: SQLITE_STEP_RESULTS_WITHOUT_ROWID, only: Some(Dialect::Sqlite) },
];

/// The migrations `d` applies, in order.
pub(crate) fn migrations(d: Dialect) -> impl Iterator<Item = &'static Migration> {
    MIGRATIONS.iter().filter(move |m| m.only.is_none_or(|only| only == d))
}

/// Registered versions (migration 4 adds the columns of the marketplace).
const PATTERNS: &str = "CREATE TABLE patterns (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        document TEXT NOT NULL,
        registered_at_ms {int} NOT NULL,
        PRIMARY KEY (name, version)
    );";

/// Durable executions (same SQL for both stores).
const JOURNAL: &str = "
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        pattern_name TEXT NOT NULL,
        pattern_version TEXT NOT NULL,
        input TEXT NOT NULL,
        idempotency_key TEXT,
        started_at_ms BIGINT NOT NULL,
        status TEXT NOT NULL DEFAULT 'RUNNING',
        record TEXT
    );
    CREATE INDEX executions_unfinished ON executions (status) WHERE status = 'RUNNING';
    CREATE UNIQUE INDEX executions_idempotency ON executions (pattern_name, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE TABLE step_results (
        execution_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (execution_id, step_id)
    );";

/// Which replica runs an unfinished durable execution, and until when (cluster mode).
const LEASES: &str = "
    ALTER TABLE executions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE executions ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;";

/// The tenant of durable executions; ownership, versions, the marketplace and the knowledge
/// graph; API keys and the audit log (same SQL for both stores; integers are `BIGINT`, which
/// SQLite stores as `INTEGER`, so both decode as `i64`; booleans are `0`/`1`).
///
/// Names registered before this migration become `pattern_names` rows of tenant `default`,
/// visibility `tenant`, owned by the owner of their first version, with `latest` NULL: the store
/// computes `latest` (semver, which SQL cannot order), description and tags in Rust when it opens
/// (`meta_sql::backfill`). The knowledge graph of those versions is not rebuilt (the store does
/// not read pattern documents); it fills as versions are registered.
const META: &str = "
    ALTER TABLE executions ADD COLUMN tenant TEXT NOT NULL DEFAULT '';

    ALTER TABLE patterns ADD COLUMN tags TEXT NOT NULL DEFAULT '';
    ALTER TABLE patterns ADD COLUMN deprecated BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE patterns ADD COLUMN deprecation_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE patterns ADD COLUMN executions BIGINT NOT NULL DEFAULT 0;

    CREATE TABLE pattern_names (
        name TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        owner TEXT NOT NULL,
        visibility TEXT NOT NULL,
        forked_from TEXT,
        latest TEXT,
        description TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '',
        stars BIGINT NOT NULL DEFAULT 0,
        executions BIGINT NOT NULL DEFAULT 0,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE INDEX pattern_names_tenant ON pattern_names (tenant);
    INSERT INTO pattern_names (name, tenant, owner, visibility, created_at_ms, updated_at_ms)
        SELECT p.name, 'default',
            (SELECT f.owner FROM patterns AS f WHERE f.name = p.name ORDER BY f.registered_at_ms, f.version LIMIT 1),
            'tenant', MIN(p.registered_at_ms), MAX(p.registered_at_ms)
        FROM patterns AS p GROUP BY p.name;

    CREATE TABLE stars (
        name TEXT NOT NULL,
        who TEXT NOT NULL,
        PRIMARY KEY (name, who)
    );

    CREATE TABLE graph_nodes (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        label TEXT NOT NULL,
        deprecated BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE graph_edges (
        src TEXT NOT NULL,
        kind TEXT NOT NULL,
        dst TEXT NOT NULL,
        PRIMARY KEY (src, kind, dst)
    );
    CREATE INDEX graph_edges_in ON graph_edges (dst, kind);

    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        tenant TEXT NOT NULL,
        subject TEXT NOT NULL,
        roles TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT
    );

    CREATE TABLE audit_log (
        id TEXT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        tenant TEXT NOT NULL,
        subject TEXT NOT NULL,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX audit_log_at ON audit_log (at_ms);";

/// ListExecutions reads a tenant's executions newest first (ids are UUIDv7: time-ordered).
const EXECUTIONS_BY_TENANT: &str = "CREATE INDEX executions_by_tenant ON executions (tenant, id);";

/// SQLite: a batch of journal writes as one statement. Inserting a row of JSON arrays into this
/// view runs the trigger, whose four statements are the batch; a statement is atomic, so no
/// transaction (and no BEGIN/COMMIT round trips to sqlx's worker thread) is needed.
const SQLITE_JOURNAL_BATCH: &str = "
    CREATE VIEW journal_batch (starts, steps, finishes) AS SELECT NULL, NULL, NULL;
    CREATE TRIGGER journal_batch_apply INSTEAD OF INSERT ON journal_batch BEGIN
        INSERT INTO executions
            (id, pattern_name, pattern_version, input, idempotency_key, tenant, started_at_ms, owner, lease_until_ms)
            SELECT value->>'id', value->>'name', value->>'version', value->>'input', value->>'key',
                value->>'tenant', value->>'started', value->>'owner', value->>'lease'
            FROM json_each(NEW.starts);
        INSERT INTO step_results (execution_id, step_id, seq, result)
            SELECT value->>'id', value->>'step', value->>'seq', value->>'result' FROM json_each(NEW.steps) WHERE true
            ON CONFLICT (execution_id, step_id) DO UPDATE SET result = excluded.result;
        UPDATE executions SET status = x.value->>'status', record = x.value->>'record'
            FROM json_each(NEW.finishes) AS x WHERE executions.id = x.value->>'id';
        DELETE FROM step_results WHERE execution_id IN (SELECT value->>'id' FROM json_each(NEW.finishes));
    END;";

/// Each backend's descriptors from its last successful discovery (a serialized
/// `FileDescriptorSet`): a backend unreachable at start is served from here.
const BACKEND_DESCRIPTORS: &str = "CREATE TABLE backend_descriptors (
        backend TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        source TEXT NOT NULL,
        descriptors {bytes} NOT NULL,
        discovered_at_ms BIGINT NOT NULL
    );";

/// Events and durable executions' waits (same SQL for both stores; booleans are `0`/`1`).
///
/// `events` is the correlation buffer (a wait registered just after its event still finds it)
/// and the router's progress (`processed`); its identity is the CloudEvent's (tenant, source,
/// id). `event_waits` holds one row per branch of a `wait_for` step; `seq` orders them by
/// registration (as `step_results.seq` orders step results). `trigger_starts` remembers which
/// events started which pattern versions, so a redelivered event starts nothing twice. A parked
/// execution (`executions.parked`) has only waits left: nobody holds or claims its lease until
/// one of its waits resolves.
const EVENTS: &str = "
    ALTER TABLE executions ADD COLUMN parked BIGINT NOT NULL DEFAULT 0;

    CREATE TABLE events (
        tenant TEXT NOT NULL,
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        subject TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        datacontenttype TEXT NOT NULL,
        data TEXT NOT NULL,
        received_at_ms BIGINT NOT NULL,
        processed BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, source, id)
    );
    CREATE INDEX events_by_type ON events (tenant, event_type, received_at_ms);
    CREATE INDEX events_unprocessed ON events (processed, received_at_ms);

    CREATE TABLE event_waits (
        execution_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        branch BIGINT NOT NULL,
        tenant TEXT NOT NULL,
        pattern_name TEXT NOT NULL,
        pattern_version TEXT NOT NULL,
        event_type TEXT NOT NULL,
        correlation_path TEXT,
        correlation_value TEXT,
        context TEXT NOT NULL,
        deadline_ms BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (execution_id, step_id, branch)
    );
    CREATE INDEX event_waits_candidates ON event_waits (tenant, event_type, correlation_path, correlation_value);
    CREATE INDEX event_waits_deadline ON event_waits (deadline_ms);

    CREATE TABLE trigger_starts (
        pattern_name TEXT NOT NULL,
        pattern_version TEXT NOT NULL,
        tenant TEXT NOT NULL,
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        started_at_ms BIGINT NOT NULL,
        PRIMARY KEY (pattern_name, pattern_version, tenant, source, id)
    );";

/// The last tick each scheduled pattern name handled (fired or skipped), in ms since the epoch:
/// replicas advance it by compare-and-set, so each tick fires on exactly one of them.
const SCHEDULE_TICKS: &str = "
    CREATE TABLE schedule_ticks (
        pattern_name TEXT PRIMARY KEY,
        last_tick_ms BIGINT NOT NULL,
        claimed_at_ms BIGINT NOT NULL
    );";

/// Registered event types per tenant: `schema` is the JSON Schema of their `data` (JSON text,
/// `{}` for none). Re-registering replaces the row.
const EVENT_TYPES: &str = "
    CREATE TABLE event_types (
        tenant TEXT NOT NULL,
        event_type TEXT NOT NULL,
        description TEXT NOT NULL,
        schema TEXT NOT NULL,
        registered_at_ms BIGINT NOT NULL,
        PRIMARY KEY (tenant, event_type)
    );";

/// SQLite: migration 6's batch trigger, which must not change, again with one more statement: a
/// finished execution waits for nothing, so its `event_waits` rows go with its step results.
/// (PostgreSQL's batch is a statement the store renders, `journal::batch_sql`.)
const SQLITE_JOURNAL_BATCH_WAITS: &str = "
    DROP TRIGGER journal_batch_apply;
    CREATE TRIGGER journal_batch_apply INSTEAD OF INSERT ON journal_batch BEGIN
        INSERT INTO executions
            (id, pattern_name, pattern_version, input, idempotency_key, tenant, started_at_ms, owner, lease_until_ms)
            SELECT value->>'id', value->>'name', value->>'version', value->>'input', value->>'key',
                value->>'tenant', value->>'started', value->>'owner', value->>'lease'
            FROM json_each(NEW.starts);
        INSERT INTO step_results (execution_id, step_id, seq, result)
            SELECT value->>'id', value->>'step', value->>'seq', value->>'result' FROM json_each(NEW.steps) WHERE true
            ON CONFLICT (execution_id, step_id) DO UPDATE SET result = excluded.result;
        UPDATE executions SET status = x.value->>'status', record = x.value->>'record'
            FROM json_each(NEW.finishes) AS x WHERE executions.id = x.value->>'id';
        DELETE FROM step_results WHERE execution_id IN (SELECT value->>'id' FROM json_each(NEW.finishes));
        DELETE FROM event_waits WHERE execution_id IN (SELECT value->>'id' FROM json_each(NEW.finishes));
    END;";

/// A durable execution's trace context (opaque to the store, empty for none): resumed on another
/// replica, it continues its caller's trace as the same span.
const EXECUTION_TRACE: &str = "ALTER TABLE executions ADD COLUMN trace TEXT NOT NULL DEFAULT '';";

/// SQLite: migration 9's batch trigger again, its start statement writing the trace context
/// (migration 12). PostgreSQL's batch is rendered by the store (`journal::batch_sql`).
const SQLITE_JOURNAL_BATCH_TRACE: &str = "
    DROP TRIGGER journal_batch_apply;
    CREATE TRIGGER journal_batch_apply INSTEAD OF INSERT ON journal_batch BEGIN
        INSERT INTO executions
            (id, pattern_name, pattern_version, input, idempotency_key, tenant, trace, started_at_ms, owner,
                lease_until_ms)
            SELECT value->>'id', value->>'name', value->>'version', value->>'input', value->>'key',
                value->>'tenant', coalesce(value->>'trace', ''), value->>'started', value->>'owner', value->>'lease'
            FROM json_each(NEW.starts);
        INSERT INTO step_results (execution_id, step_id, seq, result)
            SELECT value->>'id', value->>'step', value->>'seq', value->>'result' FROM json_each(NEW.steps) WHERE true
            ON CONFLICT (execution_id, step_id) DO UPDATE SET result = excluded.result;
        UPDATE executions SET status = x.value->>'status', record = x.value->>'record'
            FROM json_each(NEW.finishes) AS x WHERE executions.id = x.value->>'id';
        DELETE FROM step_results WHERE execution_id IN (SELECT value->>'id' FROM json_each(NEW.finishes));
        DELETE FROM event_waits WHERE execution_id IN (SELECT value->>'id' FROM json_each(NEW.finishes));
    END;";

/// SQLite: step results in a table clustered on its key (`WITHOUT ROWID`): a rowid table with a
/// TEXT primary key is two b-trees (the rows, and the key's index), so every journaled step result
/// and every finish's delete wrote a page of each. Measured with the journal's writes (a start,
/// two step results and a finish per execution, 1 to 8 per commit): 3.56 → 2.81 WAL frames per
/// commit at 1 write per commit, 5.40 → 4.65 at 8. The rows are few and small (only unfinished
/// executions' results; a finish deletes its own). Migration 13's batch trigger is dropped and
/// created again around the swap, as it was.
const SQLITE_STEP_RESULTS_WITHOUT_ROWID: &str = "
    DROP TRIGGER journal_batch_apply;
    CREATE TABLE step_results_clustered (
        execution_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (execution_id, step_id)
    ) WITHOUT ROWID;
    INSERT INTO step_results_clustered (execution_id, step_id, seq, result)
        SELECT execution_id, step_id, seq, result FROM step_results;
    DROP TABLE step_results;
    ALTER TABLE step_results_clustered RENAME TO step_results;
    CREATE TRIGGER journal_batch_apply INSTEAD OF INSERT ON journal_batch BEGIN
        INSERT INTO executions
            (id, pattern_name, pattern_version, input, idempotency_key, tenant, trace, started_at_ms, owner,
                lease_until_ms)
            SELECT value->>'id', value->>'name', value->>'version', value->>'input', value->>'key',
                value->>'tenant', coalesce(value->>'trace', ''), value->>'started', value->>'owner', value->>'lease'
            FROM json_each(NEW.starts);
        INSERT INTO step_results (execution_id, step_id, seq, result)
            SELECT value->>'id', value->>'step', value->>'seq', value->>'result' FROM json_each(NEW.steps) WHERE true
            ON CONFLICT (execution_id, step_id) DO UPDATE SET result = excluded.result;
        UPDATE executions SET status = x.value->>'status', record = x.value->>'record'
            FROM json_each(NEW.finishes) AS x WHERE executions.id = x.value->>'id';
        DELETE FROM step_results WHERE execution_id IN (SELECT value->>'id' FROM json_each(NEW.finishes));
        DELETE FROM event_waits WHERE execution_id IN (SELECT value->>'id' FROM json_each(NEW.finishes));
    END;";

/// The versions applied, and when.
const SCHEMA_MIGRATIONS: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version {int} PRIMARY KEY, applied_at_ms {int} NOT NULL)";
const APPLIED: &str = "SELECT version FROM schema_migrations WHERE version = $1";
const RECORD: &str = "INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)";

/// Runs migration `$m` on the connection `$conn` and records it, unless it is recorded already.
/// A macro rather than a function: written against sqlx's generic `Database`, the same few lines
/// would need a wall of higher-ranked bounds, and there are only the two drivers.
macro_rules! apply {
    ($conn:expr, $d:expr, $m:expr) => {{
        let (d, version): (Dialect, i64) = ($d, $m.version);
        let done: Option<(i64,)> = sqlx::query_as(&d.sql(APPLIED)).bind(version).fetch_optional(&mut *$conn).await?;
        if done.is_none() {
            sqlx::raw_sql(&d.ddl($m.sql))
                .execute(&mut *$conn)
                .await
                .map_err(|cause| Error::Migration { version, cause })?;
            sqlx::query(&d.sql(RECORD)).bind(version).bind(now_ms()).execute(&mut *$conn).await?;
        }
    }};
}

/// SQLite: each migration in a transaction of its own (SQLite has one writer at a time anyway).
pub async fn sqlite(pool: &SqlitePool) -> Result<()> {
    let d = Dialect::Sqlite;
    sqlx::query(&d.ddl(SCHEMA_MIGRATIONS)).execute(pool).await?;
    for m in migrations(d) {
        let mut tx = pool.begin().await?;
        apply!(tx, d, m);
        tx.commit().await?;
    }
    Ok(())
}

/// Arbitrary constant: the advisory lock that serialises migrations of replicas starting at once.
const MIGRATION_LOCK: i64 = 0x6e65_7875_735f_6d67;

/// PostgreSQL: every migration in one transaction, under an advisory lock, so replicas starting
/// at once apply each exactly once (DDL is transactional in PostgreSQL).
pub async fn postgres(pool: &PgPool) -> Result<()> {
    let d = Dialect::Postgres;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    sqlx::query(&d.ddl(SCHEMA_MIGRATIONS)).execute(&mut *tx).await?;
    for m in migrations(d) {
        apply!(tx, d, m);
    }
    tx.commit().await?;
    Ok(())
}

/// What the upgrade tests of both stores share (they live with each store, which depends on this
/// module, not the other way round).
#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::MetaStore;

    /// Versions registered before migration 4: two names, one with versions that sort
    /// differently as text and as semver.
    pub(crate) const OLD_ROWS: &str =
        "INSERT INTO patterns (name, version, owner, description, document, registered_at_ms)
        VALUES ('old', '1.9.0', 'first', 'old 1.9.0', '{}', 1000),
               ('old', '1.10.0', 'second', 'old 1.10.0', '{}', 3000),
               ('old', '1.2.0', 'second', 'old 1.2.0', '{}', 2000),
               ('other', '0.1.0', 'team', 'other', '{}', 5000)";

    /// The schema as the first three migrations left it, with [`OLD_ROWS`]: the
    /// `schema_migrations` table, then for each migration its SQL and its record.
    pub(crate) fn before_4(d: Dialect) -> Vec<String> {
        let mut sql = up_to(d, 3);
        sql.push(OLD_ROWS.into());
        sql
    }

    /// The statements that build the schema as migrations up to `last` left it: the
    /// `schema_migrations` table, then for each migration its SQL and its record.
    pub(crate) fn up_to(d: Dialect, last: i64) -> Vec<String> {
        let mut sql = vec![d.ddl(SCHEMA_MIGRATIONS)];
        for m in migrations(d).take_while(|m| m.version <= last) {
            sql.push(d.ddl(m.sql));
            sql.push(format!("INSERT INTO schema_migrations VALUES ({}, 0)", m.version));
        }
        sql
    }

    pub(crate) async fn check_upgraded(store: &dyn MetaStore) {
        let old = store.pattern_name("old").await.unwrap().expect("migrated");
        assert_eq!((old.tenant.as_str(), old.owner.as_str(), old.visibility.as_str()), ("default", "first", "tenant"));
        assert_eq!((old.latest.as_deref(), old.description.as_str()), (Some("1.10.0"), "old 1.10.0"));
        let ms = crate::time::ms;
        assert_eq!((ms(old.created_at), ms(old.updated_at)), (1000, 3000));
        assert_eq!(old.forked_from, None);
        let versions: Vec<String> = store.versions("old").await.unwrap().into_iter().map(|v| v.version).collect();
        assert_eq!(versions, ["1.2.0", "1.9.0", "1.10.0"]);
        assert_eq!(store.pattern_names().await.unwrap().len(), 2);
    }

    #[test]
    fn every_dialect_applies_the_shared_migrations_and_only_its_own() {
        let versions = |d| migrations(d).map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(Dialect::Sqlite), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!(versions(Dialect::Postgres), [1, 2, 3, 4, 5, 7, 8, 10, 11, 12]);
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "versions ascend: {versions:?}");
    }
}

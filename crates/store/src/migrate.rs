//! Embedded, ordered schema migrations, applied once each inside a transaction.

use sqlx::{PgPool, SqlitePool};

use crate::{Error, Result};

/// (version, SQL). Append only: a released migration never changes.
const SQLITE: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE patterns (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        document TEXT NOT NULL,
        registered_at_ms INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    );",
    ),
    (2, JOURNAL),
    (3, LEASES),
    (4, META),
    (5, EXECUTIONS_BY_TENANT),
    (6, SQLITE_JOURNAL_BATCH),
];

/// Which replica runs an unfinished durable execution, and until when (cluster mode).
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

/// ListExecutions reads a tenant's executions newest first (ids are UUIDv7: time-ordered).
const EXECUTIONS_BY_TENANT: &str = "CREATE INDEX executions_by_tenant ON executions (tenant, id);";

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

pub async fn sqlite(pool: &SqlitePool) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    for &(version, sql) in SQLITE {
        let mut tx = pool.begin().await?;
        let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM schema_migrations WHERE version = ?")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|cause| Error::Migration { version, cause })?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, ?)")
            .bind(version)
            .bind(crate::sqlite::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The same schema for PostgreSQL.
const POSTGRES: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE patterns (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        document TEXT NOT NULL,
        registered_at_ms BIGINT NOT NULL,
        PRIMARY KEY (name, version)
    );",
    ),
    (2, JOURNAL),
    (3, LEASES),
    (4, META),
    (5, EXECUTIONS_BY_TENANT),
];

/// Arbitrary constant: the advisory lock that serialises migrations of replicas starting at once.
const MIGRATION_LOCK: i64 = 0x6e65_7875_735f_6d67;

pub async fn postgres(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    for &(version, sql) in POSTGRES {
        let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|cause| Error::Migration { version, cause })?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::sqlite::now_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::Connection;

    use super::*;
    use crate::{MetaStore, PgStore, SqliteStore};

    /// Versions registered before migration 4: two names, one with versions that sort
    /// differently as text and as semver.
    const OLD_ROWS: &str = "INSERT INTO patterns (name, version, owner, description, document, registered_at_ms)
        VALUES ('old', '1.9.0', 'first', 'old 1.9.0', '{}', 1000),
               ('old', '1.10.0', 'second', 'old 1.10.0', '{}', 3000),
               ('old', '1.2.0', 'second', 'old 1.2.0', '{}', 2000),
               ('other', '0.1.0', 'team', 'other', '{}', 5000)";

    async fn check_upgraded(store: &dyn MetaStore) {
        let old = store.pattern_name("old").await.unwrap().expect("migrated");
        assert_eq!((old.tenant.as_str(), old.owner.as_str(), old.visibility.as_str()), ("default", "first", "tenant"));
        assert_eq!((old.latest.as_deref(), old.description.as_str()), (Some("1.10.0"), "old 1.10.0"));
        assert_eq!((ms_of(old.created_at), ms_of(old.updated_at)), (1000, 3000));
        assert_eq!(old.forked_from, None);
        let versions: Vec<String> = store.versions("old").await.unwrap().into_iter().map(|v| v.version).collect();
        assert_eq!(versions, ["1.2.0", "1.9.0", "1.10.0"]);
        assert_eq!(store.pattern_names().await.unwrap().len(), 2);
    }

    fn ms_of(t: std::time::SystemTime) -> i64 {
        crate::journal::ms(t)
    }

    #[tokio::test]
    async fn sqlite_upgrade_from_3_moves_names_into_pattern_names() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("nexus.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        for &(version, sql) in &SQLITE[..3] {
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            sqlx::query("INSERT INTO schema_migrations VALUES (?, 0)").bind(version).execute(&mut conn).await.unwrap();
        }
        sqlx::raw_sql(OLD_ROWS).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        check_upgraded(&SqliteStore::open(dir.path()).await.unwrap()).await;
    }

    #[tokio::test]
    async fn postgres_upgrade_from_3_moves_names_into_pattern_names() {
        let url = std::env::var("NEXUS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("nexus_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA {schema}; SET search_path TO {schema};
            CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        for &(version, sql) in &POSTGRES[..3] {
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            sqlx::query("INSERT INTO schema_migrations VALUES ($1, 0)").bind(version).execute(&mut conn).await.unwrap();
        }
        sqlx::raw_sql(OLD_ROWS).execute(&mut conn).await.unwrap();
        let store = PgStore::connect(&url, Some(&schema)).await.unwrap();
        check_upgraded(&store).await;
        store.pool.close().await;
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await.unwrap();
    }
}

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
];

/// Which replica runs an unfinished durable execution, and until when (cluster mode).
const LEASES: &str = "
    ALTER TABLE executions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE executions ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;";

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
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|source| Error::Migration { version, source })?;
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
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|source| Error::Migration { version, source })?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::sqlite::now_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

//! Embedded, ordered schema migrations, applied once each inside a transaction.

use sqlx::SqlitePool;

use crate::{Error, Result};

/// (version, SQL). Append only: a released migration never changes.
const SQLITE: &[(i64, &str)] = &[(
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
)];

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

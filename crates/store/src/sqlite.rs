//! The embedded store: one SQLite file in WAL mode (or an in-memory database).

use std::{
    path::Path,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{
    Row,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

use crate::{Error, InsertOutcome, PatternStore, Result, StoredPattern};

pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

impl SqliteStore {
    /// Opens (creating if needed) `nexus.db` in `dir`, which is created too.
    pub async fn open(dir: &Path) -> Result<Self> {
        let location = dir.join("nexus.db").display().to_string();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Open { location: location.clone(), source: sqlx::Error::Io(e) })?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("nexus.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a committed registration survives a process crash; the last
            // transactions may be lost on power failure (documented in ARCHITECTURE.md).
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| Error::Open { location: location.clone(), source })?;
        Self::init(pool).await
    }

    /// A private in-memory database (gone when the process exits).
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|source| Error::Open { location: "memory".into(), source })?;
        // Every connection to :memory: is a different database: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| Error::Open { location: "memory".into(), source })?;
        Self::init(pool).await
    }

    async fn init(pool: SqlitePool) -> Result<Self> {
        crate::migrate::sqlite(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait::async_trait]
impl PatternStore for SqliteStore {
    async fn insert_pattern(&self, p: &StoredPattern) -> Result<InsertOutcome> {
        // One atomic statement, no read-then-write transaction: two deferred transactions that
        // both read and then try to write deadlock in SQLite ("database is locked") regardless of
        // the busy timeout, while single writes simply queue behind each other.
        let inserted = sqlx::query(
            "INSERT INTO patterns (name, version, owner, description, document, registered_at_ms)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(&p.name)
        .bind(&p.version)
        .bind(&p.owner)
        .bind(&p.description)
        .bind(&p.document)
        .bind(to_ms(p.registered_at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(InsertOutcome::Created);
        }
        let (doc,): (String,) = sqlx::query_as("SELECT document FROM patterns WHERE name = ? AND version = ?")
            .bind(&p.name)
            .bind(&p.version)
            .fetch_one(&self.pool)
            .await?;
        Ok(if doc == p.document { InsertOutcome::Identical } else { InsertOutcome::Conflict })
    }

    async fn list_patterns(&self) -> Result<Vec<StoredPattern>> {
        let rows = sqlx::query(
            "SELECT name, version, owner, description, document, registered_at_ms FROM patterns ORDER BY registered_at_ms, name, version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredPattern {
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    owner: r.try_get("owner")?,
                    description: r.try_get("description")?,
                    document: r.try_get("document")?,
                    registered_at: from_ms(r.try_get("registered_at_ms")?),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(doc: &str) -> StoredPattern {
        StoredPattern {
            name: "p".into(),
            version: "1.0.0".into(),
            owner: "team".into(),
            description: String::new(),
            document: doc.into(),
            registered_at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn versions_are_immutable_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            assert_eq!(store.insert_pattern(&pattern("{}")).await.unwrap(), InsertOutcome::Created);
            assert_eq!(store.insert_pattern(&pattern("{}")).await.unwrap(), InsertOutcome::Identical);
            assert_eq!(store.insert_pattern(&pattern("{\"a\":1}")).await.unwrap(), InsertOutcome::Conflict);
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let all = store.list_patterns().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].document, "{}");
    }

    #[tokio::test]
    async fn in_memory_store_works() {
        let store = SqliteStore::in_memory().await.unwrap();
        store.insert_pattern(&pattern("{}")).await.unwrap();
        assert_eq!(store.list_patterns().await.unwrap().len(), 1);
    }
}

//! The embedded store: one SQLite file in WAL mode (or an in-memory database).

use std::{
    path::Path,
    str::FromStr,
    time::{Duration, SystemTime},
};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::{Error, Result};

pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

pub(crate) fn now_ms() -> i64 {
    crate::journal::ms(SystemTime::now())
}

impl SqliteStore {
    /// Opens (creating if needed) `nexus.db` in `dir`, which is created too; commits survive a
    /// crash of the process (WAL, `synchronous=NORMAL`).
    pub async fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, false).await
    }

    /// Like [`SqliteStore::open`]; with `fsync_every_commit`, `synchronous=FULL`: the WAL is
    /// fsynced at every commit, so commits also survive a power loss or a kernel crash (group
    /// commit spreads the cost over the writes of one transaction).
    pub async fn open_with(dir: &Path, fsync_every_commit: bool) -> Result<Self> {
        let location = dir.join("nexus.db").display().to_string();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Open { location: location.clone(), cause: sqlx::Error::Io(e) })?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("nexus.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives a process crash; the last transactions may be
            // lost on power failure. FULL: fsync per commit (documented in ARCHITECTURE.md).
            .synchronous(if fsync_every_commit { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            .busy_timeout(Duration::from_secs(5))
            // Each connection has its own page cache (SQLite's default is 2 MiB); the journal
            // appends and reads back little, so a smaller one per connection keeps the embedded
            // node's memory down without costing commits.
            .pragma("cache_size", "-512");
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|cause| Error::Open { location: location.clone(), cause })?;
        Self::init(pool).await
    }

    /// A private in-memory database (gone when the process exits).
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|cause| Error::Open { location: "memory".into(), cause })?;
        // Every connection to :memory: is a different database: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|cause| Error::Open { location: "memory".into(), cause })?;
        Self::init(pool).await
    }

    async fn init(pool: SqlitePool) -> Result<Self> {
        crate::migrate::sqlite(&pool).await?;
        let store = Self { pool };
        store.backfill_meta().await?;
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InsertOutcome, PatternStore, StoredPattern};

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

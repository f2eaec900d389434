//! The embedded store: one SQLite file in WAL mode (or an in-memory database).
//!
//! This module puts the store together: the migrations (`migrate`), and the SQL both stores share
//! (`journal`, `meta_sql`, `events`), instantiated here for SQLite. Those modules name no store, so the
//! module graph has no cycle.

use std::{
    path::Path,
    str::FromStr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::{Error, JournalOp, Result, journal::next_seq, time::ms};

pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// The journal's group commits, on a connection of their own (the same pool in memory).
    /// SQLite drops a connection's page cache when another connection has written since its
    /// last transaction: commits alternating between the pool's connections re-read the pages
    /// they touch (a `pread` each) at every commit. One writer keeps its cache warm.
    pub(crate) journal_pool: SqlitePool,
    /// On disk, the journal's group commits run on a connection of their own driven in place, on
    /// the committing task's thread: through sqlx every statement is a hop to the connection's
    /// worker thread and back, and on this kind of machine those two thread switches per commit
    /// cost more than the commit (profiled: the worker thread was a quarter of the process's CPU,
    /// three quarters of that in context switches).
    journal: Option<Arc<JournalConnection>>,
}

/// The journal's own SQLite connection (rusqlite, the same SQLite library as sqlx's).
struct JournalConnection {
    conn: Mutex<rusqlite::Connection>,
    /// `synchronous=FULL`: every commit waits for an fsync, too long to hold a runtime thread.
    fsync: bool,
    /// Commits so far. SQLite's automatic checkpoint is off on this connection
    /// (`wal_autocheckpoint=0`): it copies up to a thousand pages into the database and fsyncs,
    /// inside whichever commit crosses the mark — not work for a runtime thread. Every
    /// [`CHECKPOINT_EVERY`] commits the commit goes to a blocking thread and checkpoints there,
    /// right after it, while no other journal commit can run (a checkpoint beside a stream of
    /// commits never catches up, and the WAL would grow without end: tested).
    commits: AtomicU64,
}

/// Journal commits between two WAL checkpoints: SQLite's own default is a checkpoint once the WAL
/// holds 1,000 pages, and a journal commit appends ~7.
const CHECKPOINT_EVERY: u64 = 128;

/// How long a commit waits for another connection's write lock (it then runs off the runtime).
const JOURNAL_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl JournalConnection {
    fn open(path: &Path, fsync: bool) -> rusqlite::Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "cache_size", -512)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(Self { conn: Mutex::new(conn), fsync, commits: AtomicU64::new(0) })
    }

    /// Copies the WAL into the database (what SQLite's automatic checkpoint would do), so the
    /// next commit starts the WAL over. A failure only delays that: logged, not the commit's.
    fn checkpoint(&self) {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("checkpointing the journal's WAL: {e}");
        }
    }

    /// Commits the writes in one transaction; with `wait`, waits up to [`JOURNAL_BUSY_TIMEOUT`]
    /// for the write lock, else fails SQLITE_BUSY at once if another connection holds it. All or
    /// none: an error rolls the transaction back (the `Transaction` is dropped uncommitted).
    fn apply(&self, ops: &[JournalOp], wait: bool) -> rusqlite::Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        conn.busy_timeout(if wait { JOURNAL_BUSY_TIMEOUT } else { Duration::ZERO })?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for op in ops {
            match op {
                JournalOp::Start(s) => tx.prepare_cached(START)?.execute(rusqlite::params![
                    s.id,
                    s.pattern_name,
                    s.pattern_version,
                    s.input,
                    s.idempotency_key,
                    s.tenant,
                    s.trace,
                    ms(s.started_at),
                    s.owner,
                    ms(s.lease_until),
                ])?,
                JournalOp::Step { execution_id, step_id, result } => {
                    tx.prepare_cached(STEP)?.execute(rusqlite::params![execution_id, step_id, next_seq(), result])?
                }
                JournalOp::Finish(f) => {
                    tx.prepare_cached(FINISH)?.execute(rusqlite::params![f.id, f.status, f.record])?;
                    tx.prepare_cached(COMPACT)?.execute([&f.id])?;
                    tx.prepare_cached(UNWAIT)?.execute([&f.id])?
                }
            };
        }
        tx.commit()
    }
}

// The journal's writes on its own connection: a prepared statement per kind of write, all of a
// batch in one transaction. The same writes as the batch trigger (migration 12) that the pool's
// connections use, without the JSON arrays it needs (built here, parsed again by `json_each`:
// profiled at a fifth of the commit's CPU) — in place, a statement costs no round trip.
const START: &str = "INSERT INTO executions (id, pattern_name, pattern_version, input, idempotency_key, tenant, trace,
    started_at_ms, owner, lease_until_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const STEP: &str = "INSERT INTO step_results (execution_id, step_id, seq, result) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (execution_id, step_id) DO UPDATE SET result = excluded.result";
const FINISH: &str = "UPDATE executions SET status = ?2, record = ?3 WHERE id = ?1";
// A finished execution's step results (its record has them) and waits go with its end.
const COMPACT: &str = "DELETE FROM step_results WHERE execution_id = ?1";
const UNWAIT: &str = "DELETE FROM event_waits WHERE execution_id = ?1";

fn busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
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
            .connect_with(options.clone())
            .await
            .map_err(|cause| Error::Open { location: location.clone(), cause })?;
        crate::migrate::sqlite(&pool).await?;
        // The journal's writer: one connection for good (its page cache stays: the pages every
        // commit touches, the tables' and indexes' right edges). Opened after the migrations.
        let journal = JournalConnection::open(&dir.join("nexus.db"), fsync_every_commit).map_err(|e| Error::Open {
            location: location.clone(),
            cause: sqlx::Error::Configuration(format!("the journal's connection: {e}").into()),
        })?;
        let store = Self { journal_pool: pool.clone(), pool, journal: Some(Arc::new(journal)) };
        store.backfill_meta().await?;
        Ok(store)
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
        crate::migrate::sqlite(&pool).await?;
        Self::init(pool.clone(), pool).await
    }

    async fn init(pool: SqlitePool, journal_pool: SqlitePool) -> Result<Self> {
        let store = Self { pool, journal_pool, journal: None };
        store.backfill_meta().await?;
        Ok(store)
    }

    /// Commits journal writes on the journal's own connection, if the store has one (on disk):
    /// true once committed, false when the store has none (the caller commits them through the
    /// pool). In place when the write lock is free and commits do not fsync (a commit is then
    /// tens of microseconds of CPU, like any other work of the task); on a blocking thread when
    /// they do, or when another connection holds the lock.
    pub(crate) async fn apply_in_place(&self, ops: &[JournalOp]) -> Result<bool> {
        let Some(journal) = &self.journal else { return Ok(false) };
        let checkpoint = journal.commits.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1;
        if !journal.fsync && !checkpoint {
            match journal.apply(ops, false) {
                Err(e) if busy(&e) => {}
                r => return r.map(|()| true).map_err(Error::Sqlite),
            }
        }
        // Off the runtime, the writes move with the commit: a copy (next to an fsync or a wait
        // for another connection's lock, its cost does not show).
        let (journal, ops) = (journal.clone(), ops.to_vec());
        tokio::task::spawn_blocking(move || {
            journal.apply(&ops, true)?;
            if checkpoint {
                journal.checkpoint();
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Database(sqlx::Error::Io(std::io::Error::other(e))))?
        .map(|()| true)
        .map_err(Error::Sqlite)
    }

    /// Commits a journal batch (`sql` is `journal::batch_sql`): in place on disk, through the pool
    /// in memory.
    pub(crate) async fn apply_batch(&self, sql: &str, ops: &[JournalOp]) -> Result<()> {
        if !self.apply_in_place(ops).await? {
            Self::batch_query(sql, ops).execute(&self.journal_pool).await?;
        }
        Ok(())
    }

    /// The journal's batch statement (`journal::batch_sql`) with `ops` bound: one JSON array per
    /// kind of write.
    pub(crate) fn batch_query<'q>(
        sql: &'q str,
        ops: &[JournalOp],
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        let batch = crate::journal::Batch::of(ops);
        sqlx::query(sql).bind(batch.starts).bind(batch.steps).bind(batch.finishes)
    }

    /// A write transaction that holds SQLite's write lock from its start: a deferred one that
    /// reads and then writes deadlocks with another writer ("database is locked") whatever the
    /// busy timeout.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

crate::journal::journal_impl!(SqliteStore, sqlx::Sqlite, crate::dialect::Dialect::Sqlite);
crate::meta_sql::meta_store_impl!(SqliteStore, sqlx::Sqlite, crate::dialect::Dialect::Sqlite);
crate::events::event_store_impl!(SqliteStore, sqlx::Sqlite, crate::dialect::Dialect::Sqlite);

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use sqlx::Connection;

    use super::*;
    use crate::{ExecutionStart, InsertOutcome, JournalStore, PatternStore, StoredPattern, dialect::Dialect, migrate};

    fn start(id: &str) -> ExecutionStart {
        ExecutionStart {
            id: id.into(),
            pattern_name: "p".into(),
            pattern_version: "1.0.0".into(),
            input: "{}".into(),
            idempotency_key: Some("key".into()),
            tenant: "t".into(),
            trace: String::new(),
            started_at: SystemTime::now(),
            owner: "r".into(),
            lease_until: SystemTime::now(),
        }
    }

    /// The journal's own connection commits in place only when the write lock is free: while
    /// another connection holds it, the commit waits (off the runtime) and goes through once it
    /// is released — it neither fails nor blocks the runtime's thread.
    #[tokio::test(flavor = "current_thread")]
    async fn a_journal_commit_waits_for_another_connections_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let tx = store.write_tx().await.unwrap();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.start_execution(&start("e1")).await })
        };
        // One runtime thread: had the commit blocked it waiting for the lock, this timer (and
        // this test) would not run until the lock was released.
        let beat = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(beat.elapsed() < Duration::from_millis(1000), "the runtime's thread was blocked");
        assert!(!writer.is_finished(), "the commit went through while another connection held the write lock");
        tx.rollback().await.unwrap();
        writer.await.unwrap().unwrap();
        assert!(store.unfinished_execution("e1").await.unwrap().is_some());
    }

    /// The journal's connection leaves checkpoints to a blocking thread, but they happen: the WAL
    /// does not grow with the number of commits.
    #[tokio::test]
    async fn the_journal_wal_is_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let wal = || std::fs::metadata(dir.path().join("nexus.db-wal")).map_or(0, |m| m.len());
        let mut largest = 0;
        for n in 0..3000 {
            let mut s = start(&format!("e{n}"));
            s.idempotency_key = None;
            store.start_execution(&s).await.unwrap();
            largest = largest.max(wal());
            if n % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Without checkpoints: ~3,000 commits of a few 4 KiB frames each, over 20 MiB.
        assert!(largest < 8 << 20, "the WAL grew to {largest} bytes");
    }

    /// A write SQLite refuses (a constraint) is a permanent error, so the group commit redoes the
    /// rest of its batch without it; the same idempotency key twice is such a write.
    #[tokio::test]
    async fn a_refused_journal_write_is_permanent() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.start_execution(&start("e1")).await.unwrap();
        let e = store.start_execution(&start("e2")).await.unwrap_err();
        assert!(!e.is_transient(), "{e}");
        assert!(e.to_string().contains("UNIQUE"), "{e}");
    }

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

    /// Migration 14 rebuilds `step_results` clustered on its key: the results journaled by
    /// executions unfinished at the upgrade are all still there, in their order, for resuming.
    #[tokio::test]
    async fn upgrade_to_14_keeps_unfinished_executions_step_results() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("nexus.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for sql in migrate::tests::up_to(Dialect::Sqlite, 13) {
            sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO executions (id, pattern_name, pattern_version, input, started_at_ms, tenant)
                VALUES ('e1', 'p', '1.0.0', '{}', 1, 't');
            INSERT INTO step_results (execution_id, step_id, seq, result)
                VALUES ('e1', 'second', 20, '{\"m\":\"Ag==\"}'), ('e1', 'first', 10, '{\"m\":\"AQ==\"}');",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        let store = SqliteStore::open(dir.path()).await.unwrap();
        let e1 = store.unfinished_execution("e1").await.unwrap().expect("still unfinished");
        let steps: Vec<(&str, &str)> = e1.steps.iter().map(|(s, r)| (s.as_str(), r.as_str())).collect();
        assert_eq!(steps, [("first", r#"{"m":"AQ=="}"#), ("second", r#"{"m":"Ag=="}"#)]);
        let (table,): (String,) =
            sqlx::query_as("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'step_results'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert!(table.contains("WITHOUT ROWID"), "{table}");
        // The batch trigger (the pool's way to write the journal) was recreated and works.
        store
            .complete_step("e1", "third", r#"{"m":"Aw=="}"#)
            .await
            .expect("a step result through the store after the upgrade");
        sqlx::query("INSERT INTO journal_batch (starts, steps, finishes) VALUES (NULL, ?1, NULL)")
            .bind(r#"[{"id":"e1","step":"fourth","seq":40,"result":"x"}]"#)
            .execute(&store.pool)
            .await
            .expect("the batch trigger after the upgrade");
        assert_eq!(store.unfinished_execution("e1").await.unwrap().unwrap().steps.len(), 4);
    }

    #[tokio::test]
    async fn upgrade_from_3_moves_names_into_pattern_names() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("nexus.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for sql in migrate::tests::before_4(Dialect::Sqlite) {
            sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        migrate::tests::check_upgraded(&SqliteStore::open(dir.path()).await.unwrap()).await;
    }
}

//! The shared store: PostgreSQL, for several Nexus replicas.
//!
//! This module puts the store together: the migrations (`migrate`), and the SQL both stores share
//! (`journal`, `meta_sql`, `events`), instantiated here for PostgreSQL.

use std::{str::FromStr, time::Duration};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::{Error, Result};

pub struct PgStore {
    pub(crate) pool: PgPool,
    /// The journal's group commits: connections of their own (see [`JournalConnections`]).
    journal: JournalConnections,
}

/// Idle journal connections kept at most: one per journal writer is in use at a time, and there
/// are at most 64 writers (`NEXUS_JOURNAL_WRITERS`), so a connection is closed only after a burst
/// of other callers.
const JOURNAL_IDLE: usize = 64;

/// The journal's connections, outside sqlx's pool: a pool pings each connection it gets back
/// (a round trip to the server on a task it spawns, after every commit), and may ping it again
/// before lending it. A commit takes an idle connection (or opens one), runs the batch, and puts
/// the connection back only if the batch went through: a connection that failed is dropped, with
/// the idle ones (the server is likely gone or restarted), and the journal's retry opens new ones.
struct JournalConnections {
    options: PgConnectOptions,
    idle: std::sync::Mutex<Vec<sqlx::PgConnection>>,
}

impl JournalConnections {
    fn new(options: &PgConnectOptions) -> Self {
        // The batch is planned once per connection: its parameters are arrays whose lengths the
        // planner cannot see, so a plan made for the values is the generic plan planned again
        // for every commit. And that plan must look rows up by primary key whatever the tables'
        // statistics say: planned while the tables were empty (a new deployment, before
        // autoanalyze), it scanned `executions` and `step_results` whole at every commit for as
        // long as the connection lived — PostgreSQL's CPU per durable execution grew with the
        // table (26,041 sequential scans against 40 index scans of `executions` 10 s into a
        // benchmark).
        let options = options.clone().options([("plan_cache_mode", "force_generic_plan"), ("enable_seqscan", "off")]);
        Self { options, idle: std::sync::Mutex::new(Vec::new()) }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<sqlx::PgConnection>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection, or a new one (within 5 s).
    async fn take(&self) -> Result<sqlx::PgConnection> {
        if let Some(conn) = self.idle().pop() {
            return Ok(conn);
        }
        let connect = <sqlx::PgConnection as sqlx::Connection>::connect_with(&self.options);
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(Error::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Commits `ops` with the batch statement `sql` (`journal::batch_sql`).
    async fn apply(&self, sql: &str, ops: &[crate::JournalOp]) -> Result<()> {
        let mut conn = self.take().await?;
        match PgStore::batch_query(sql, ops).execute(&mut conn).await {
            Ok(_) => {
                let mut idle = self.idle();
                if idle.len() < JOURNAL_IDLE {
                    idle.push(conn);
                }
                Ok(())
            }
            Err(e) => {
                self.idle().clear();
                Err(e.into())
            }
        }
    }
}

/// The URL with its password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unparsable database URL)".to_string(),
    }
}

impl PgStore {
    /// Connects (within 5 s), then applies the embedded migrations. `schema`, when given, is used
    /// as the search path (it must exist), so several deployments or test runs can share a database.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self> {
        let location = redact_url(url);
        let open_err = |cause| Error::Open { location: location.clone(), cause };
        let mut options = PgConnectOptions::from_str(url).map_err(open_err)?;
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        // One connection first: the pool only reports "timed out" when it cannot connect, while
        // a direct attempt says why (refused, unknown host, authentication, no such database).
        match tokio::time::timeout(
            Duration::from_secs(5),
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
            }
            Ok(Err(cause)) => return Err(open_err(cause)),
            Err(_) => return Err(open_err(sqlx::Error::PoolTimedOut)),
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        crate::migrate::postgres(&pool).await?;
        let journal = JournalConnections::new(&options);
        let store = Self { journal, pool };
        store.backfill_meta().await?;
        Ok(store)
    }

    /// A write transaction (it locks the rows it reads with [`crate::dialect::Dialect::lock_row`]).
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

crate::journal::journal_impl!(PgStore, sqlx::Postgres, crate::dialect::Dialect::Postgres);
crate::meta_sql::meta_store_impl!(PgStore, sqlx::Postgres, crate::dialect::Dialect::Postgres);
crate::events::event_store_impl!(PgStore, sqlx::Postgres, crate::dialect::Dialect::Postgres);

impl PgStore {
    /// The journal's batch statement (`journal::batch_sql`) with `ops` bound: one array per
    /// column of each kind of write (empty arrays for a kind the batch has none of).
    pub(crate) fn batch_query<'q>(
        sql: &'q str,
        ops: &'q [crate::JournalOp],
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        use crate::{JournalOp, journal::next_seq, time::ms};
        #[derive(Default)]
        struct Starts<'a> {
            id: Vec<&'a str>,
            name: Vec<&'a str>,
            version: Vec<&'a str>,
            input: Vec<&'a str>,
            key: Vec<Option<&'a str>>,
            tenant: Vec<&'a str>,
            trace: Vec<&'a str>,
            started: Vec<i64>,
            owner: Vec<&'a str>,
            lease: Vec<i64>,
        }
        let mut s = Starts::default();
        let (mut step_execution, mut step_id, mut step_seq, mut step_result) = (vec![], vec![], vec![], vec![]);
        let (mut end_id, mut end_status, mut end_record) = (vec![], vec![], vec![]);
        for op in ops {
            match op {
                JournalOp::Start(x) => {
                    s.id.push(x.id.as_str());
                    s.name.push(x.pattern_name.as_str());
                    s.version.push(x.pattern_version.as_str());
                    s.input.push(x.input.as_str());
                    s.key.push(x.idempotency_key.as_deref());
                    s.tenant.push(x.tenant.as_str());
                    s.trace.push(x.trace.as_str());
                    s.started.push(ms(x.started_at));
                    s.owner.push(x.owner.as_str());
                    s.lease.push(ms(x.lease_until));
                }
                JournalOp::Step { execution_id, step_id: step, result } => {
                    step_execution.push(execution_id.as_str());
                    step_id.push(step.as_str());
                    step_seq.push(next_seq());
                    step_result.push(result.as_str());
                }
                JournalOp::Finish(f) => {
                    end_id.push(f.id.as_str());
                    end_status.push(f.status.as_str());
                    end_record.push(f.record.as_str());
                }
            }
        }
        sqlx::query(sql)
            .bind(s.id)
            .bind(s.name)
            .bind(s.version)
            .bind(s.input)
            .bind(s.key)
            .bind(s.tenant)
            .bind(s.trace)
            .bind(s.started)
            .bind(s.owner)
            .bind(s.lease)
            .bind(step_execution)
            .bind(step_id)
            .bind(step_seq)
            .bind(step_result)
            .bind(end_id)
            .bind(end_status)
            .bind(end_record)
    }

    /// Commits a journal batch (`sql` is `journal::batch_sql`) on the journal's own connections
    /// ([`JournalConnections`]), never through the pool.
    pub(crate) async fn apply_batch(&self, sql: &str, ops: &[crate::JournalOp]) -> Result<()> {
        self.journal.apply(sql, ops).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::Connection;

    use super::*;
    use crate::{dialect::Dialect, migrate};

    #[test]
    fn passwords_never_appear_in_redacted_urls() {
        assert_eq!(redact_url("postgres://nexus:s3cret@db:5432/nexus"), "postgres://nexus:***@db:5432/nexus");
        assert_eq!(redact_url("postgres://nexus@db/nexus"), "postgres://nexus@db/nexus");
        assert!(!redact_url("postgres://u:p%40ss@h/d").contains("p%40ss"));
    }

    /// The journal's batch, planned as its connections plan it while the tables are empty (a new
    /// deployment): every row it touches is found by primary key, never by scanning a table.
    #[tokio::test]
    async fn the_journal_batch_finds_rows_by_key_even_planned_on_empty_tables() {
        let url = std::env::var("NEXUS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("nexus_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await.unwrap();
        let store = PgStore::connect(&url, Some(&schema)).await.unwrap();
        let mut conn = store.journal.take().await.unwrap();
        let sql = crate::journal::batch_sql(Dialect::Postgres);
        sqlx::raw_sql(&format!("PREPARE batch AS {sql}")).execute(&mut conn).await.unwrap();
        // No start; a step result; an end.
        let (no_starts, step, end) =
            ("'{}', ".repeat(10), "'{e}', '{s}', '{1}', '{\"{}\"}'", "'{e}', '{SUCCEEDED}', '{\"{}\"}'");
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE batch({no_starts}{step}, {end})"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan = plan.join("\n");
        drop(conn);
        store.pool.close().await;
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut admin).await.unwrap();
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(plan.contains("executions_pkey") && plan.contains("step_results_pkey"), "{plan}");
        // Nor by reading a whole index: every index scan looks up keys (a scan without an index
        // condition reads every entry, as the first version of the finish's UPDATE did).
        let lines: Vec<&str> = plan.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("Index Scan") || line.contains("Index Only Scan") {
                let cond = lines.get(i + 1).is_some_and(|next| next.contains("Index Cond"));
                assert!(cond, "an index scan without a key to look up: {line}\n{plan}");
            }
        }
    }

    #[tokio::test]
    async fn upgrade_from_3_moves_names_into_pattern_names() {
        let url = std::env::var("NEXUS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("nexus_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}; SET search_path TO {schema}"))
            .execute(&mut conn)
            .await
            .unwrap();
        for sql in migrate::tests::before_4(Dialect::Postgres) {
            sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
        }
        let store = PgStore::connect(&url, Some(&schema)).await.unwrap();
        migrate::tests::check_upgraded(&store).await;
        store.pool.close().await;
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await.unwrap();
    }
}

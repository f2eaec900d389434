//! The SQL both stores share: patterns and the execution journal. Each statement is written once
//! with `$n` placeholders and rendered by a [`Dialect`]; the implementations are macros that each
//! store instantiates (`sqlite.rs`, `postgres.rs`), so this module names neither store.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{JournalOp, dialect::Dialect, time::ms};

/// Orders step results by completion within an execution, and event waits by registration (a
/// process-wide counter seeded by the clock, so it also grows across restarts).
static SEQ: AtomicI64 = AtomicI64::new(0);

pub(crate) fn next_seq() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let prev = SEQ.fetch_max(now, Ordering::Relaxed).max(now);
    SEQ.fetch_add(1, Ordering::Relaxed).max(prev) + 1
}

pub(crate) const COLUMNS: &str =
    "id, pattern_name, pattern_version, input, idempotency_key, tenant, trace, started_at_ms, owner, lease_until_ms";
pub(crate) const UNFINISHED: &str =
    "SELECT id, pattern_name, pattern_version, input, idempotency_key, tenant, trace, started_at_ms, owner, lease_until_ms
    FROM executions WHERE status = 'RUNNING' ORDER BY started_at_ms";
pub(crate) const PRUNE: &str = "DELETE FROM executions WHERE status <> 'RUNNING' AND started_at_ms < $1";
// A parked execution runs nowhere (`EventStore::park_execution`): no lease of it is renewed,
// released or claimed; resolving one of its waits hands it over (`EventStore::resolve_wait`).
pub(crate) const RENEW: &str =
    "UPDATE executions SET lease_until_ms = $2 WHERE owner = $1 AND status = 'RUNNING' AND parked = 0 AND id IN";
pub(crate) const RELEASE: &str =
    "UPDATE executions SET lease_until_ms = 0 WHERE owner = $1 AND status = 'RUNNING' AND parked = 0";
pub(crate) const STEPS_OF: &str = "SELECT step_id, result FROM step_results WHERE execution_id = $1 ORDER BY seq";
pub(crate) const UNFINISHED_ONE: &str =
    "SELECT id, pattern_name, pattern_version, input, idempotency_key, tenant, trace, started_at_ms, owner, lease_until_ms
    FROM executions WHERE id = $1 AND status = 'RUNNING'";
pub(crate) const FINISHED: &str =
    "SELECT id, pattern_name, status, record FROM executions WHERE id = $1 AND status <> 'RUNNING'";
pub(crate) const LIST_EXECUTIONS: &str =
    "SELECT id, pattern_name, pattern_version, status, record, started_at_ms, tenant,
    idempotency_key FROM executions
    WHERE tenant = $1 AND ($2 = '' OR pattern_name = $2) AND ($3 = '' OR status = $3) AND ($4 = '' OR id < $4)
    ORDER BY id DESC LIMIT $5";
pub(crate) const BY_KEY: &str = "SELECT id FROM executions WHERE pattern_name = $1 AND idempotency_key = $2";

pub(crate) const INSERT_PATTERN: &str =
    "INSERT INTO patterns (name, version, owner, description, document, registered_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING";
pub(crate) const PATTERN_DOCUMENT: &str = "SELECT document FROM patterns WHERE name = $1 AND version = $2";
pub(crate) const LIST_PATTERNS: &str =
    "SELECT name, version, owner, description, document, registered_at_ms FROM patterns
    WHERE registered_at_ms >= $1
    ORDER BY registered_at_ms, name, version";

/// SQLite: a batch of journal writes as one JSON array per kind, bound as a single parameter
/// each (PostgreSQL binds arrays: `postgres::batch_query`).
pub(crate) struct Batch {
    pub(crate) starts: Option<String>,
    pub(crate) steps: Option<String>,
    pub(crate) finishes: Option<String>,
}

impl Batch {
    pub(crate) fn of(ops: &[JournalOp]) -> Self {
        use serde_json::json;
        let (mut starts, mut steps, mut finishes) = (Vec::new(), Vec::new(), Vec::new());
        for op in ops {
            match op {
                JournalOp::Start(s) => starts.push(json!({
                    "id": s.id, "name": s.pattern_name, "version": s.pattern_version, "input": s.input,
                    "key": s.idempotency_key, "tenant": s.tenant, "trace": s.trace, "started": ms(s.started_at),
                    "owner": s.owner, "lease": ms(s.lease_until),
                })),
                JournalOp::Step { execution_id, step_id, result } => steps.push(json!({
                    "id": execution_id, "step": step_id, "seq": next_seq(), "result": result,
                })),
                JournalOp::Finish(f) => finishes.push(json!({"id": f.id, "status": f.status, "record": f.record})),
            }
        }
        let text = |v: Vec<serde_json::Value>| (!v.is_empty()).then(|| serde_json::Value::Array(v).to_string());
        Self { starts: text(starts), steps: text(steps), finishes: text(finishes) }
    }
}

/// The statement that applies a whole batch in one go, atomically: one round trip (for SQLite,
/// one hop to sqlx's worker thread) and no BEGIN/COMMIT, whatever the batch size. Each store binds
/// its parameters (`batch_query` of `sqlite.rs` and `postgres.rs`).
pub(crate) fn batch_sql(d: Dialect) -> String {
    match d {
        // An INSERT into the `journal_batch` view, whose INSTEAD OF trigger runs the writes
        // (migration 6; a statement and its triggers are atomic). Binds the starts, the step
        // results and the ends as JSON arrays (see [`Batch`]), or NULL.
        Dialect::Sqlite => "INSERT INTO journal_batch (starts, steps, finishes) VALUES (?1, ?2, ?3)".into(),
        Dialect::Postgres => postgres_batch_sql(),
    }
}

/// PostgreSQL: one array parameter per column — the starts' ten (`$1`–`$10`), the step results'
/// four (`$11`–`$14`), the ends' three (`$15`–`$17`) — read back as rows by `unnest`. Arrays travel
/// in binary and nothing is parsed: as JSON, each end's record (the execution's whole summary) was
/// written out as JSON text by Nexus and parsed by the server three times per commit.
fn postgres_batch_sql() -> String {
    let start = "INSERT INTO executions
            (id, pattern_name, pattern_version, input, idempotency_key, tenant, trace, started_at_ms, owner, lease_until_ms)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::int8[], $9::text[], $10::int8[])";
    let step = "INSERT INTO step_results (execution_id, step_id, seq, result)
            SELECT * FROM unnest($11::text[], $12::text[], $13::int8[], $14::text[])
            ON CONFLICT (execution_id, step_id) DO UPDATE SET result = excluded.result";
    // `executions.id = ANY ($15)` as well as the join: on `executions.id = x.id` alone, the generic
    // plan hashed the batch and read the whole primary key index to probe it (a full index scan
    // is not a sequential scan, so `enable_seqscan=off` let it through): 1,345 index entries read
    // per commit 8,000 executions into a benchmark, and the server's CPU per execution grew with
    // the table.
    let finish = "UPDATE executions SET status = x.status, record = x.record
            FROM unnest($15::text[], $16::text[], $17::text[]) AS x(id, status, record)
            WHERE executions.id = ANY ($15::text[]) AND executions.id = x.id
            RETURNING executions.id";
    let compact = "DELETE FROM step_results WHERE execution_id = ANY ($15::text[])";
    // A finished execution waits for nothing. Its waits are deleted after its row is updated (the
    // DELETE reads the UPDATE's result): rows are locked in the order `EventStore::resolve_wait`
    // locks them, the execution first, so the two cannot deadlock.
    let unwait = "DELETE FROM event_waits WHERE execution_id = ANY (ARRAY(SELECT id FROM f))";
    // The whole batch in one statement (data-modifying CTEs: one round trip, atomic). The parts
    // never touch the same rows: a batch holds at most one write per execution.
    format!("WITH s AS ({start}), t AS ({step}), f AS ({finish}), c AS ({compact}), w AS ({unwait}) SELECT 1")
}

/// Takes over unfinished executions whose lease ran out; returns them.
pub(crate) fn claim_sql(d: Dialect) -> String {
    d.sql(&format!(
        "UPDATE executions SET owner = $1, lease_until_ms = $2 WHERE id IN (
            SELECT id FROM executions WHERE status = 'RUNNING' AND parked = 0 AND lease_until_ms < $3
            ORDER BY started_at_ms LIMIT $4{})
         RETURNING {COLUMNS}",
        d.lock_unclaimed()
    ))
}

/// Extends the leases of the executions in the JSON array `$3`.
pub(crate) fn renew_sql(d: Dialect) -> String {
    d.sql(&format!("{RENEW} {}", d.strings(3)))
}

/// [`crate::PatternStore`] and [`crate::JournalStore`] for a store (`$store`, with a `pool` field) on
/// the sqlx database `$db`, in `$dialect`: the same code for both stores, but for sqlx's types
/// (which share no trait this could be written against without a wall of higher-ranked bounds).
/// The items live in an anonymous constant, so the store's module keeps its namespace.
macro_rules! journal_impl {
    ($store:ty, $db:ty, $dialect:expr) => {
        const _: () = {
            type DbRow = <$db as sqlx::Database>::Row;

            use std::time::SystemTime;

            use sqlx::Row;
            use $crate::{
                ExecutionQuery, ExecutionStart, FinishedExecution, InsertOutcome, JournalOp, JournaledExecution,
                Result, StoredPattern, UnfinishedExecution,
                dialect::Dialect,
                journal::*,
                time::{from_ms, ms},
            };

            const D: Dialect = $dialect;

            /// The statements that differ between the dialects, rendered once.
            struct Sql {
                batch: String,
                claim: String,
                renew: String,
            }

            fn rendered() -> &'static Sql {
                static SQL: std::sync::OnceLock<Sql> = std::sync::OnceLock::new();
                SQL.get_or_init(|| Sql { batch: batch_sql(D), claim: claim_sql(D), renew: renew_sql(D) })
            }

            /// Rebuilds an unfinished execution from its row and its journaled steps.
            async fn with_steps(store: &$store, r: &DbRow) -> Result<UnfinishedExecution> {
                let id: String = r.try_get("id")?;
                let steps = sqlx::query(&D.sql(STEPS_OF))
                    .bind(&id)
                    .fetch_all(&store.pool)
                    .await?
                    .into_iter()
                    .map(|s| Ok((s.try_get("step_id")?, s.try_get("result")?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(UnfinishedExecution {
                    start: ExecutionStart {
                        id,
                        pattern_name: r.try_get("pattern_name")?,
                        pattern_version: r.try_get("pattern_version")?,
                        input: r.try_get("input")?,
                        idempotency_key: r.try_get("idempotency_key")?,
                        tenant: r.try_get("tenant")?,
                        trace: r.try_get("trace")?,
                        started_at: from_ms(r.try_get("started_at_ms")?),
                        owner: r.try_get("owner")?,
                        lease_until: from_ms(r.try_get("lease_until_ms")?),
                    },
                    steps,
                })
            }

            #[async_trait::async_trait]
            impl $crate::PatternStore for $store {
                async fn insert_pattern(&self, p: &StoredPattern) -> Result<InsertOutcome> {
                    // One atomic statement, then a read: no read-then-write transaction, which in
                    // SQLite deadlocks two writers ("database is locked") whatever the busy timeout.
                    let inserted = sqlx::query(&D.sql(INSERT_PATTERN))
                        .bind(&p.name)
                        .bind(&p.version)
                        .bind(&p.owner)
                        .bind(&p.description)
                        .bind(&p.document)
                        .bind(ms(p.registered_at))
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    if inserted == 1 {
                        return Ok(InsertOutcome::Created);
                    }
                    let (doc,): (String,) = sqlx::query_as(&D.sql(PATTERN_DOCUMENT))
                        .bind(&p.name)
                        .bind(&p.version)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(if doc == p.document { InsertOutcome::Identical } else { InsertOutcome::Conflict })
                }

                async fn list_patterns(&self) -> Result<Vec<StoredPattern>> {
                    self.list_patterns_since(std::time::UNIX_EPOCH).await
                }

                async fn list_patterns_since(&self, since: SystemTime) -> Result<Vec<StoredPattern>> {
                    let rows = sqlx::query(&D.sql(LIST_PATTERNS)).bind(ms(since)).fetch_all(&self.pool).await?;
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

            #[async_trait::async_trait]
            impl $crate::JournalStore for $store {
                // The single writes are one-op batches: one code path binds each statement.
                async fn start_execution(&self, s: &ExecutionStart) -> Result<()> {
                    self.apply(&[JournalOp::Start(s.clone())]).await
                }

                async fn complete_step(&self, execution_id: &str, step_id: &str, result: &str) -> Result<()> {
                    self.apply(&[JournalOp::Step {
                        execution_id: execution_id.to_string(),
                        step_id: step_id.to_string(),
                        result: result.to_string(),
                    }])
                    .await
                }

                async fn finish_execution(&self, f: &FinishedExecution) -> Result<()> {
                    self.apply(&[JournalOp::Finish(f.clone())]).await
                }

                async fn apply(&self, ops: &[JournalOp]) -> Result<()> {
                    // Each store commits on the journal's own connections (`apply_batch`): SQLite on
                    // disk in place, PostgreSQL outside the pool. Whatever the batch size, one
                    // statement: one round trip to the database, not a few per write. One batch holds
                    // at most one write per execution (each execution awaits its writes in turn), so
                    // the order of the kinds within it does not matter.
                    self.apply_batch(&rendered().batch, ops).await
                }

                async fn unfinished_executions(&self) -> Result<Vec<UnfinishedExecution>> {
                    let rows = sqlx::query(&D.sql(UNFINISHED)).fetch_all(&self.pool).await?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in rows {
                        out.push(with_steps(self, &r).await?);
                    }
                    Ok(out)
                }

                async fn renew_leases(&self, owner: &str, running: &[String], until: SystemTime) -> Result<u64> {
                    if running.is_empty() {
                        return Ok(0);
                    }
                    // The ids travel as one JSON array parameter (no statement per id, no size-bound
                    // IN list).
                    let ids = serde_json::to_string(running).unwrap_or_else(|_| "[]".into());
                    let done = sqlx::query(&rendered().renew)
                        .bind(owner)
                        .bind(ms(until))
                        .bind(ids)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected())
                }

                async fn prune_finished(&self, before: SystemTime) -> Result<u64> {
                    let done = sqlx::query(&D.sql(PRUNE)).bind(ms(before)).execute(&self.pool).await?;
                    Ok(done.rows_affected())
                }

                async fn release_leases(&self, owner: &str) -> Result<u64> {
                    let done = sqlx::query(&D.sql(RELEASE)).bind(owner).execute(&self.pool).await?;
                    Ok(done.rows_affected())
                }

                async fn claim_expired(
                    &self,
                    owner: &str,
                    now: SystemTime,
                    until: SystemTime,
                    limit: u32,
                ) -> Result<Vec<UnfinishedExecution>> {
                    let rows = sqlx::query(&rendered().claim)
                        .bind(owner)
                        .bind(ms(until))
                        .bind(ms(now))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in rows {
                        out.push(with_steps(self, &r).await?);
                    }
                    Ok(out)
                }

                async fn finished_execution(&self, id: &str) -> Result<Option<FinishedExecution>> {
                    let row = sqlx::query(&D.sql(FINISHED)).bind(id).fetch_optional(&self.pool).await?;
                    row.map(|r| {
                        Ok(FinishedExecution {
                            id: r.try_get("id")?,
                            pattern_name: r.try_get("pattern_name")?,
                            status: r.try_get("status")?,
                            record: r.try_get::<Option<String>, _>("record")?.unwrap_or_default(),
                        })
                    })
                    .transpose()
                }

                async fn unfinished_execution(&self, id: &str) -> Result<Option<UnfinishedExecution>> {
                    match sqlx::query(&D.sql(UNFINISHED_ONE)).bind(id).fetch_optional(&self.pool).await? {
                        Some(r) => Ok(Some(with_steps(self, &r).await?)),
                        None => Ok(None),
                    }
                }

                async fn list_executions(&self, q: &ExecutionQuery) -> Result<Vec<JournaledExecution>> {
                    let rows = sqlx::query(&D.sql(LIST_EXECUTIONS))
                        .bind(&q.tenant)
                        .bind(q.pattern_name.as_deref().unwrap_or(""))
                        .bind(q.status.as_deref().unwrap_or(""))
                        .bind(q.before.as_deref().unwrap_or(""))
                        .bind(i64::from(q.limit.clamp(1, 1000)))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.into_iter()
                        .map(|r| {
                            Ok(JournaledExecution {
                                id: r.try_get("id")?,
                                pattern_name: r.try_get("pattern_name")?,
                                pattern_version: r.try_get("pattern_version")?,
                                status: r.try_get("status")?,
                                record: r.try_get("record")?,
                                started_at: from_ms(r.try_get("started_at_ms")?),
                                tenant: r.try_get("tenant")?,
                                idempotency_key: r.try_get("idempotency_key")?,
                            })
                        })
                        .collect()
                }

                async fn execution_by_idempotency_key(&self, pattern_name: &str, key: &str) -> Result<Option<String>> {
                    let row =
                        sqlx::query(&D.sql(BY_KEY)).bind(pattern_name).bind(key).fetch_optional(&self.pool).await?;
                    row.map(|r| r.try_get("id").map_err(Into::into)).transpose()
                }
            }
        };
    };
}

pub(crate) use journal_impl;

//! The SQL both stores share: patterns and the execution journal. The statements are the same but
//! for placeholder syntax (`?n` in SQLite, `$n` in PostgreSQL), so each is written once with `$n`
//! and rewritten for SQLite; the implementations are one macro instantiated for each store.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::Row;

use crate::{FinishedExecution, InsertOutcome, JournalOp, JournalStart, Result, StoredPattern, UnfinishedExecution};

/// Orders step results by completion within an execution (a process-wide counter seeded by the
/// clock, so it also grows across restarts).
static SEQ: AtomicI64 = AtomicI64::new(0);

fn next_seq() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let prev = SEQ.fetch_max(now, Ordering::Relaxed).max(now);
    SEQ.fetch_add(1, Ordering::Relaxed).max(prev) + 1
}

pub(crate) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// `$1, $2` → `?1, ?2` for SQLite (numbered, so the binding order is the same in both).
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

const START: &str = "INSERT INTO executions
    (id, pattern_name, pattern_version, input, idempotency_key, started_at_ms, owner, lease_until_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const STEP: &str = "INSERT INTO step_results (execution_id, step_id, seq, result) VALUES ($1, $2, $3, $4)
    ON CONFLICT (execution_id, step_id) DO UPDATE SET result = excluded.result";
const FINISH: &str = "UPDATE executions SET status = $2, record = $3 WHERE id = $1";
const COMPACT: &str = "DELETE FROM step_results WHERE execution_id = $1";
const COLUMNS: &str = "id, pattern_name, pattern_version, input, idempotency_key, started_at_ms, owner, lease_until_ms";
const UNFINISHED: &str =
    "SELECT id, pattern_name, pattern_version, input, idempotency_key, started_at_ms, owner, lease_until_ms
    FROM executions WHERE status = 'RUNNING' ORDER BY started_at_ms";
const PRUNE: &str = "DELETE FROM executions WHERE status <> 'RUNNING' AND started_at_ms < $1";
const RENEW: &str = "UPDATE executions SET lease_until_ms = $2 WHERE owner = $1 AND status = 'RUNNING' AND id IN";
const RELEASE: &str = "UPDATE executions SET lease_until_ms = 0 WHERE owner = $1 AND status = 'RUNNING'";
const STEPS_OF: &str = "SELECT step_id, result FROM step_results WHERE execution_id = $1 ORDER BY seq";
const UNFINISHED_ONE: &str =
    "SELECT id, pattern_name, pattern_version, input, idempotency_key, started_at_ms, owner, lease_until_ms
    FROM executions WHERE id = $1 AND status = 'RUNNING'";
const FINISHED: &str = "SELECT id, pattern_name, status, record FROM executions WHERE id = $1 AND status <> 'RUNNING'";
const BY_KEY: &str = "SELECT id FROM executions WHERE pattern_name = $1 AND idempotency_key = $2";

const INSERT_PATTERN: &str = "INSERT INTO patterns (name, version, owner, description, document, registered_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING";
const PATTERN_DOCUMENT: &str = "SELECT document FROM patterns WHERE name = $1 AND version = $2";
const LIST_PATTERNS: &str = "SELECT name, version, owner, description, document, registered_at_ms FROM patterns
    ORDER BY registered_at_ms, name, version";

macro_rules! pattern_store_impl {
    ($store:ty, $sql:expr) => {
        #[async_trait::async_trait]
        impl crate::PatternStore for $store {
            async fn insert_pattern(&self, p: &StoredPattern) -> Result<InsertOutcome> {
                // One atomic statement, then a read: no read-then-write transaction, which in
                // SQLite deadlocks two writers ("database is locked") whatever the busy timeout.
                let inserted = sqlx::query(&$sql(INSERT_PATTERN))
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
                let (doc,): (String,) = sqlx::query_as(&$sql(PATTERN_DOCUMENT))
                    .bind(&p.name)
                    .bind(&p.version)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(if doc == p.document { InsertOutcome::Identical } else { InsertOutcome::Conflict })
            }

            async fn list_patterns(&self) -> Result<Vec<StoredPattern>> {
                let rows = sqlx::query(&$sql(LIST_PATTERNS)).fetch_all(&self.pool).await?;
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
    };
}

macro_rules! journal_impl {
    ($store:ty, $sql:expr) => {
        #[async_trait::async_trait]
        impl crate::Journal for $store {
            // The single writes are one-op batches: one code path binds each statement.
            async fn start_execution(&self, s: &JournalStart) -> Result<()> {
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
                let mut tx = self.pool.begin().await?;
                for op in ops {
                    match op {
                        JournalOp::Start(s) => {
                            sqlx::query(&$sql(START))
                                .bind(&s.id)
                                .bind(&s.pattern_name)
                                .bind(&s.pattern_version)
                                .bind(&s.input)
                                .bind(&s.idempotency_key)
                                .bind(ms(s.started_at))
                                .bind(&s.owner)
                                .bind(ms(s.lease_until))
                                .execute(&mut *tx)
                                .await?;
                        }
                        JournalOp::Step { execution_id, step_id, result } => {
                            sqlx::query(&$sql(STEP))
                                .bind(execution_id)
                                .bind(step_id)
                                .bind(next_seq())
                                .bind(result)
                                .execute(&mut *tx)
                                .await?;
                        }
                        JournalOp::Finish(f) => {
                            sqlx::query(&$sql(FINISH))
                                .bind(&f.id)
                                .bind(&f.status)
                                .bind(&f.record)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query(&$sql(COMPACT)).bind(&f.id).execute(&mut *tx).await?;
                        }
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn unfinished_executions(&self) -> Result<Vec<UnfinishedExecution>> {
                let rows = sqlx::query(&$sql(UNFINISHED)).fetch_all(&self.pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(self.with_steps(&r).await?);
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
                let done = sqlx::query(&$sql(&self.renew_sql()))
                    .bind(owner)
                    .bind(ms(until))
                    .bind(ids)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn prune_finished(&self, before: SystemTime) -> Result<u64> {
                let done = sqlx::query(&$sql(PRUNE)).bind(ms(before)).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn release_leases(&self, owner: &str) -> Result<u64> {
                let done = sqlx::query(&$sql(RELEASE)).bind(owner).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn claim_expired(
                &self,
                owner: &str,
                now: SystemTime,
                until: SystemTime,
                limit: u32,
            ) -> Result<Vec<UnfinishedExecution>> {
                let rows = sqlx::query(&$sql(&self.claim_sql()))
                    .bind(owner)
                    .bind(ms(until))
                    .bind(ms(now))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(self.with_steps(&r).await?);
                }
                Ok(out)
            }

            async fn finished_execution(&self, id: &str) -> Result<Option<FinishedExecution>> {
                let row = sqlx::query(&$sql(FINISHED)).bind(id).fetch_optional(&self.pool).await?;
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
                match sqlx::query(&$sql(UNFINISHED_ONE)).bind(id).fetch_optional(&self.pool).await? {
                    Some(r) => Ok(Some(self.with_steps(&r).await?)),
                    None => Ok(None),
                }
            }

            async fn execution_by_idempotency_key(&self, pattern_name: &str, key: &str) -> Result<Option<String>> {
                let row = sqlx::query(&$sql(BY_KEY)).bind(pattern_name).bind(key).fetch_optional(&self.pool).await?;
                row.map(|r| r.try_get("id").map_err(Into::into)).transpose()
            }
        }
    };
}

/// Rebuilds an unfinished execution from its row and its journaled steps.
macro_rules! with_steps_impl {
    ($store:ty, $row:ty, $sql:expr, $claim:expr, $renew:expr) => {
        impl $store {
            async fn with_steps(&self, r: &$row) -> Result<UnfinishedExecution> {
                let id: String = r.try_get("id")?;
                let steps = sqlx::query(&$sql(STEPS_OF))
                    .bind(&id)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|s| Ok((s.try_get("step_id")?, s.try_get("result")?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(UnfinishedExecution {
                    start: JournalStart {
                        id,
                        pattern_name: r.try_get("pattern_name")?,
                        pattern_version: r.try_get("pattern_version")?,
                        input: r.try_get("input")?,
                        idempotency_key: r.try_get("idempotency_key")?,
                        started_at: from_ms(r.try_get("started_at_ms")?),
                        owner: r.try_get("owner")?,
                        lease_until: from_ms(r.try_get("lease_until_ms")?),
                    },
                    steps,
                })
            }

            fn claim_sql(&self) -> String {
                $claim
            }

            fn renew_sql(&self) -> String {
                $renew
            }
        }
    };
}

// PostgreSQL: concurrent claimers skip each other's rows instead of waiting or double-claiming.
with_steps_impl!(
    crate::PgStore,
    sqlx::postgres::PgRow,
    str::to_string,
    format!(
        "UPDATE executions SET owner = $1, lease_until_ms = $2 WHERE id IN (
            SELECT id FROM executions WHERE status = 'RUNNING' AND lease_until_ms < $3
            ORDER BY started_at_ms LIMIT $4 FOR UPDATE SKIP LOCKED)
         RETURNING {COLUMNS}"
    ),
    format!("{RENEW} (SELECT jsonb_array_elements_text($3::jsonb))")
);
// SQLite has a single writer: the UPDATE is atomic as it is.
with_steps_impl!(
    crate::SqliteStore,
    sqlx::sqlite::SqliteRow,
    sqlite_sql,
    format!(
        "UPDATE executions SET owner = $1, lease_until_ms = $2 WHERE id IN (
            SELECT id FROM executions WHERE status = 'RUNNING' AND lease_until_ms < $3
            ORDER BY started_at_ms LIMIT $4)
         RETURNING {COLUMNS}"
    ),
    format!("{RENEW} (SELECT value FROM json_each($3))")
);

pattern_store_impl!(crate::SqliteStore, sqlite_sql);
pattern_store_impl!(crate::PgStore, str::to_string);
journal_impl!(crate::SqliteStore, sqlite_sql);
journal_impl!(crate::PgStore, str::to_string);

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_rewritten_for_sqlite() {
        assert_eq!(super::sqlite_sql("a = $2 AND b = $12"), "a = ?2 AND b = ?12");
    }
}

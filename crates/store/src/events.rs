//! The SQL of [`crate::EventStore`], shared by both stores: the events buffer, durable
//! executions' waits, trigger starts, parking and schedules' last ticks. As in `journal.rs`, each statement is written
//! once with `$n` placeholders and rendered by a [`Dialect`]; the implementation is a macro that
//! each store instantiates (`sqlite.rs`, `postgres.rs`), so this module names neither store.
//!
//! Parking and resolving serialise on the execution's row: both start a write transaction
//! (`write_tx`: SQLite's `BEGIN IMMEDIATE` excludes every other writer; PostgreSQL locks the row
//! with `SELECT … FOR UPDATE`) and read the waits only once they hold it. Without that lock, a
//! PostgreSQL `park_execution` whose snapshot still saw a wait that a concurrent `resolve_wait`
//! was deleting could park an execution with nothing left to wake it. Rows are locked in one
//! order everywhere, the execution's first and then its waits (finishing an execution too, see
//! `journal::postgres_batch_sql`), so these transactions cannot deadlock.

use crate::dialect::Dialect;

pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO events (tenant, source, id, event_type, subject, time_ms, datacontenttype, data, received_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant, source, id) DO NOTHING";
pub(crate) const EVENT_PROCESSED: &str = "SELECT processed FROM events WHERE tenant = $1 AND source = $2 AND id = $3";
pub(crate) const MARK_PROCESSED: &str = "UPDATE events SET processed = 1 WHERE tenant = $1 AND source = $2 AND id = $3";
pub(crate) const UNPROCESSED: &str =
    "SELECT tenant, source, id, event_type, subject, time_ms, datacontenttype, data, received_at_ms
    FROM events WHERE processed = 0 ORDER BY received_at_ms, tenant, source, id LIMIT $1";
pub(crate) const RECENT: &str =
    "SELECT tenant, source, id, event_type, subject, time_ms, datacontenttype, data, received_at_ms
    FROM events WHERE tenant = $1 AND event_type = $2 AND received_at_ms >= $3
    ORDER BY received_at_ms, source, id LIMIT $4";
pub(crate) const PRUNE_EVENTS: &str = "DELETE FROM events WHERE received_at_ms < $1";
/// Trigger starts are forgotten with the events: once an event is pruned, its redelivery is new
/// to `record_event` anyway.
pub(crate) const PRUNE_TRIGGERS: &str = "DELETE FROM trigger_starts WHERE started_at_ms < $1";

pub(crate) const INSERT_WAIT: &str = "INSERT INTO event_waits (execution_id, step_id, branch, tenant, pattern_name,
        pattern_version, event_type, correlation_path, correlation_value, context, deadline_ms, seq)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT (execution_id, step_id, branch) DO NOTHING";
pub(crate) const CORRELATION_PATHS: &str = "SELECT DISTINCT correlation_path FROM event_waits
    WHERE tenant = $1 AND event_type = $2 AND correlation_path IS NOT NULL ORDER BY correlation_path";
pub(crate) const EXPIRED: &str = "SELECT execution_id, step_id, branch, tenant, pattern_name, pattern_version,
        event_type, correlation_path, correlation_value, context, deadline_ms, seq
    FROM event_waits WHERE deadline_ms < $1
    ORDER BY deadline_ms, seq, execution_id, step_id, branch LIMIT $2";
pub(crate) const WAITS_OF: &str = "SELECT execution_id, step_id, branch, tenant, pattern_name, pattern_version,
        event_type, correlation_path, correlation_value, context, deadline_ms, seq
    FROM event_waits WHERE execution_id = $1 ORDER BY seq, step_id, branch";

/// The unfinished execution's row, which the rest of the transaction holds (with
/// [`Dialect::lock_row`]).
pub(crate) const RUNNING_EXECUTION: &str = "SELECT parked FROM executions WHERE id = $1 AND status = 'RUNNING'";
/// Parking drops the lease: the owner is cleared too, so no replica mistakes the execution for
/// one it runs (a replica resuming "its" executions after a restart skips it).
pub(crate) const PARK: &str = "UPDATE executions SET parked = 1, owner = '', lease_until_ms = 0
    WHERE id = $1 AND EXISTS (SELECT 1 FROM event_waits WHERE execution_id = $1)";
pub(crate) const DELETE_STEP_WAITS: &str = "DELETE FROM event_waits WHERE execution_id = $1 AND step_id = $2";
pub(crate) const DELETE_EXECUTION_WAITS: &str = "DELETE FROM event_waits WHERE execution_id = $1";
pub(crate) const UNPARK: &str = "UPDATE executions SET parked = 0, owner = $2, lease_until_ms = $3 WHERE id = $1
    RETURNING id, pattern_name, pattern_version, input, idempotency_key, tenant, trace, started_at_ms, owner, lease_until_ms";

pub(crate) const INSERT_TRIGGER: &str =
    "INSERT INTO trigger_starts (pattern_name, pattern_version, tenant, source, id, started_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pattern_name, pattern_version, tenant, source, id) DO NOTHING";

/// A schedule's first tick: the row is created by the one claimer that finds none.
pub(crate) const FIRST_TICK: &str = "INSERT INTO schedule_ticks (pattern_name, last_tick_ms, claimed_at_ms)
    VALUES ($1, $2, $3) ON CONFLICT (pattern_name) DO NOTHING";
/// Every later tick: compare-and-set on the last one (one statement, so one winner per tick).
pub(crate) const NEXT_TICK: &str = "UPDATE schedule_ticks SET last_tick_ms = $2, claimed_at_ms = $3
    WHERE pattern_name = $1 AND last_tick_ms = $4";
pub(crate) const LAST_TICK: &str = "SELECT last_tick_ms FROM schedule_ticks WHERE pattern_name = $1";

pub(crate) const PUT_EVENT_TYPE: &str =
    "INSERT INTO event_types (tenant, event_type, description, schema, registered_at_ms) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (tenant, event_type) DO UPDATE
    SET description = excluded.description, schema = excluded.schema, registered_at_ms = excluded.registered_at_ms";
pub(crate) const EVENT_TYPES_OF: &str = "SELECT tenant, event_type, description, schema, registered_at_ms
    FROM event_types WHERE tenant = $1 ORDER BY tenant, event_type";
pub(crate) const ALL_EVENT_TYPES: &str = "SELECT tenant, event_type, description, schema, registered_at_ms
    FROM event_types ORDER BY tenant, event_type";

/// The waits that may match an event: those without a correlation, and those whose (path, value)
/// is one of the pairs of the JSON array `$3`. Two indexed lookups (a single `OR` would read
/// every wait on the event type), merged by registration. Binds tenant, event type, the pairs,
/// the limit.
pub(crate) fn candidates_sql(d: Dialect) -> String {
    let columns = "execution_id, step_id, branch, tenant, pattern_name, pattern_version, event_type,
        correlation_path, correlation_value, context, deadline_ms, seq";
    d.sql(&format!(
        "SELECT {columns} FROM event_waits
            WHERE tenant = $1 AND event_type = $2 AND correlation_path IS NULL
        UNION ALL
        SELECT {columns} FROM event_waits
            WHERE tenant = $1 AND event_type = $2 AND (correlation_path, correlation_value) IN {pairs}
        ORDER BY seq, execution_id, step_id, branch LIMIT $4",
        pairs = d.pairs(3),
    ))
}

/// [`crate::EventStore`] for a store (`$store`, with a `pool` field and a `write_tx()` that starts
/// a write transaction) on the sqlx database `$db`, in `$dialect` (a macro for the reason given at
/// `journal::journal_impl`). The items live in an anonymous constant, so the store's module keeps
/// its namespace.
macro_rules! event_store_impl {
    ($store:ty, $db:ty, $dialect:expr) => {
        const _: () = {
            type DbRow = <$db as sqlx::Database>::Row;

            use std::time::SystemTime;

            use sqlx::Row;
            use $crate::{
                EventRecorded, EventWait, ExecutionStart, JournalOp, Result, StoredEvent, StoredEventType,
                UnfinishedExecution, WaitResolution,
                dialect::Dialect,
                events::*,
                journal::{STEPS_OF, batch_sql, next_seq},
                time::{from_ms, ms, now_ms},
            };

            const D: Dialect = $dialect;

            /// The statements that differ between the dialects, rendered once.
            struct Sql {
                batch: String,
                candidates: String,
            }

            fn rendered() -> &'static Sql {
                static SQL: std::sync::OnceLock<Sql> = std::sync::OnceLock::new();
                SQL.get_or_init(|| Sql { batch: batch_sql(D), candidates: candidates_sql(D) })
            }

            fn event_of(r: &DbRow) -> Result<StoredEvent> {
                Ok(StoredEvent {
                    tenant: r.try_get("tenant")?,
                    source: r.try_get("source")?,
                    id: r.try_get("id")?,
                    event_type: r.try_get("event_type")?,
                    subject: r.try_get("subject")?,
                    time: from_ms(r.try_get("time_ms")?),
                    datacontenttype: r.try_get("datacontenttype")?,
                    data: r.try_get("data")?,
                    received_at: from_ms(r.try_get("received_at_ms")?),
                })
            }

            fn wait_of(r: &DbRow) -> Result<EventWait> {
                let path: Option<String> = r.try_get("correlation_path")?;
                let value: Option<String> = r.try_get("correlation_value")?;
                Ok(EventWait {
                    execution_id: r.try_get("execution_id")?,
                    step_id: r.try_get("step_id")?,
                    // Written from a u32 (`add_waits`).
                    branch: u32::try_from(r.try_get::<i64, _>("branch")?).unwrap_or(u32::MAX),
                    tenant: r.try_get("tenant")?,
                    pattern_name: r.try_get("pattern_name")?,
                    pattern_version: r.try_get("pattern_version")?,
                    event_type: r.try_get("event_type")?,
                    correlation: path.zip(value),
                    context: r.try_get("context")?,
                    deadline: from_ms(r.try_get("deadline_ms")?),
                })
            }

            fn events_of(rows: Vec<DbRow>) -> Result<Vec<StoredEvent>> {
                rows.iter().map(event_of).collect()
            }

            fn waits_of(rows: Vec<DbRow>) -> Result<Vec<EventWait>> {
                rows.iter().map(wait_of).collect()
            }

            #[async_trait::async_trait]
            impl $crate::EventStore for $store {
                async fn record_event(&self, e: &StoredEvent) -> Result<EventRecorded> {
                    // An insert that does nothing on a known identity, then a read of the known
                    // one. Should the known one be pruned in between, the insert is tried again.
                    for _ in 0..3 {
                        let inserted = sqlx::query(&D.sql(INSERT_EVENT))
                            .bind(&e.tenant)
                            .bind(&e.source)
                            .bind(&e.id)
                            .bind(&e.event_type)
                            .bind(&e.subject)
                            .bind(ms(e.time))
                            .bind(&e.datacontenttype)
                            .bind(&e.data)
                            .bind(ms(e.received_at))
                            .execute(&self.pool)
                            .await?
                            .rows_affected();
                        if inserted == 1 {
                            return Ok(EventRecorded::New);
                        }
                        let known: Option<(i64,)> = sqlx::query_as(&D.sql(EVENT_PROCESSED))
                            .bind(&e.tenant)
                            .bind(&e.source)
                            .bind(&e.id)
                            .fetch_optional(&self.pool)
                            .await?;
                        if let Some((processed,)) = known {
                            return Ok(EventRecorded::Duplicate { processed: processed != 0 });
                        }
                    }
                    Err(sqlx::Error::RowNotFound.into())
                }

                async fn mark_event_processed(&self, tenant: &str, source: &str, id: &str) -> Result<()> {
                    sqlx::query(&D.sql(MARK_PROCESSED)).bind(tenant).bind(source).bind(id).execute(&self.pool).await?;
                    Ok(())
                }

                async fn unprocessed_events(&self, limit: u32) -> Result<Vec<StoredEvent>> {
                    let rows = sqlx::query(&D.sql(UNPROCESSED)).bind(i64::from(limit)).fetch_all(&self.pool).await?;
                    events_of(rows)
                }

                async fn recent_events(
                    &self,
                    tenant: &str,
                    event_type: &str,
                    since: SystemTime,
                    limit: u32,
                ) -> Result<Vec<StoredEvent>> {
                    let rows = sqlx::query(&D.sql(RECENT))
                        .bind(tenant)
                        .bind(event_type)
                        .bind(ms(since))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                    events_of(rows)
                }

                async fn prune_events(&self, before: SystemTime) -> Result<u64> {
                    let mut tx = self.write_tx().await?;
                    let pruned =
                        sqlx::query(&D.sql(PRUNE_EVENTS)).bind(ms(before)).execute(&mut *tx).await?.rows_affected();
                    sqlx::query(&D.sql(PRUNE_TRIGGERS)).bind(ms(before)).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(pruned)
                }

                async fn add_waits(&self, waits: &[EventWait]) -> Result<()> {
                    if waits.is_empty() {
                        return Ok(());
                    }
                    // A wait registered again (a resumed execution registering its step anew)
                    // keeps its first registration: its deadline and its place in the order.
                    let mut tx = self.write_tx().await?;
                    for w in waits {
                        let (path, value) = w.correlation.clone().unzip();
                        sqlx::query(&D.sql(INSERT_WAIT))
                            .bind(&w.execution_id)
                            .bind(&w.step_id)
                            .bind(i64::from(w.branch))
                            .bind(&w.tenant)
                            .bind(&w.pattern_name)
                            .bind(&w.pattern_version)
                            .bind(&w.event_type)
                            .bind(path)
                            .bind(value)
                            .bind(&w.context)
                            .bind(ms(w.deadline))
                            .bind(next_seq())
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn wait_correlation_paths(&self, tenant: &str, event_type: &str) -> Result<Vec<String>> {
                    let rows: Vec<(String,)> = sqlx::query_as(&D.sql(CORRELATION_PATHS))
                        .bind(tenant)
                        .bind(event_type)
                        .fetch_all(&self.pool)
                        .await?;
                    Ok(rows.into_iter().map(|(p,)| p).collect())
                }

                async fn candidate_waits(
                    &self,
                    tenant: &str,
                    event_type: &str,
                    keys: &[(String, String)],
                    limit: u32,
                ) -> Result<Vec<EventWait>> {
                    // The pairs travel as one JSON array parameter, `[[path, value], …]`.
                    let pairs = serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
                    let rows = sqlx::query(&rendered().candidates)
                        .bind(tenant)
                        .bind(event_type)
                        .bind(pairs)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                    waits_of(rows)
                }

                async fn park_execution(&self, execution_id: &str) -> Result<bool> {
                    let mut tx = self.write_tx().await?;
                    let running = sqlx::query(&D.sql(&format!("{RUNNING_EXECUTION}{}", D.lock_row())))
                        .bind(execution_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if running.is_none() {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    // Read with the row held: a wait deleted by a resolution that held it first is
                    // seen gone (PostgreSQL takes a new snapshot per statement).
                    let parked = sqlx::query(&D.sql(PARK)).bind(execution_id).execute(&mut *tx).await?.rows_affected();
                    if parked == 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn resolve_wait(
                    &self,
                    execution_id: &str,
                    step_id: &str,
                    result: &str,
                    owner: &str,
                    lease_until: SystemTime,
                ) -> Result<WaitResolution> {
                    let mut tx = self.write_tx().await?;
                    let running = sqlx::query(&D.sql(&format!("{RUNNING_EXECUTION}{}", D.lock_row())))
                        .bind(execution_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(running) = running else {
                        // Finished (or never journaled): whatever waits it left wait for nothing.
                        sqlx::query(&D.sql(DELETE_EXECUTION_WAITS)).bind(execution_id).execute(&mut *tx).await?;
                        tx.commit().await?;
                        return Ok(WaitResolution::Gone);
                    };
                    let parked = running.try_get::<i64, _>("parked")? != 0;
                    // With the execution's row held, a concurrent resolution of the same step
                    // finds the rows gone once the first commits.
                    let deleted = sqlx::query(&D.sql(DELETE_STEP_WAITS))
                        .bind(execution_id)
                        .bind(step_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if deleted == 0 {
                        tx.rollback().await?;
                        return Ok(WaitResolution::Gone);
                    }
                    // The step's result, journaled by the very statement `complete_step` runs.
                    let step = [JournalOp::Step {
                        execution_id: execution_id.to_string(),
                        step_id: step_id.to_string(),
                        result: result.to_string(),
                    }];
                    <$store>::batch_query(&rendered().batch, &step).execute(&mut *tx).await?;
                    if !parked {
                        tx.commit().await?;
                        return Ok(WaitResolution::Running);
                    }
                    let r = sqlx::query(&D.sql(UNPARK))
                        .bind(execution_id)
                        .bind(owner)
                        .bind(ms(lease_until))
                        .fetch_one(&mut *tx)
                        .await?;
                    // Read in the transaction: the steps include the result just journaled (and
                    // SQLite's in-memory store has a single connection, which the transaction holds).
                    let steps = sqlx::query(&D.sql(STEPS_OF))
                        .bind(execution_id)
                        .fetch_all(&mut *tx)
                        .await?
                        .into_iter()
                        .map(|s| Ok((s.try_get("step_id")?, s.try_get("result")?)))
                        .collect::<Result<Vec<_>>>()?;
                    let claimed = UnfinishedExecution {
                        start: ExecutionStart {
                            id: r.try_get("id")?,
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
                    };
                    tx.commit().await?;
                    Ok(WaitResolution::Claimed(claimed))
                }

                async fn expired_waits(&self, now: SystemTime, limit: u32) -> Result<Vec<EventWait>> {
                    let rows =
                        sqlx::query(&D.sql(EXPIRED)).bind(ms(now)).bind(i64::from(limit)).fetch_all(&self.pool).await?;
                    waits_of(rows)
                }

                async fn execution_waits(&self, execution_id: &str) -> Result<Vec<EventWait>> {
                    let rows = sqlx::query(&D.sql(WAITS_OF)).bind(execution_id).fetch_all(&self.pool).await?;
                    waits_of(rows)
                }

                async fn record_trigger(
                    &self,
                    pattern_name: &str,
                    pattern_version: &str,
                    tenant: &str,
                    source: &str,
                    id: &str,
                ) -> Result<bool> {
                    let inserted = sqlx::query(&D.sql(INSERT_TRIGGER))
                        .bind(pattern_name)
                        .bind(pattern_version)
                        .bind(tenant)
                        .bind(source)
                        .bind(id)
                        .bind(now_ms())
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    Ok(inserted == 1)
                }

                async fn claim_tick(
                    &self,
                    pattern_name: &str,
                    tick: SystemTime,
                    previous: Option<SystemTime>,
                ) -> Result<bool> {
                    let done = match previous {
                        None => {
                            sqlx::query(&D.sql(FIRST_TICK))
                                .bind(pattern_name)
                                .bind(ms(tick))
                                .bind(now_ms())
                                .execute(&self.pool)
                                .await?
                        }
                        Some(p) => {
                            sqlx::query(&D.sql(NEXT_TICK))
                                .bind(pattern_name)
                                .bind(ms(tick))
                                .bind(now_ms())
                                .bind(ms(p))
                                .execute(&self.pool)
                                .await?
                        }
                    };
                    Ok(done.rows_affected() == 1)
                }

                async fn last_tick(&self, pattern_name: &str) -> Result<Option<SystemTime>> {
                    let row: Option<(i64,)> =
                        sqlx::query_as(&D.sql(LAST_TICK)).bind(pattern_name).fetch_optional(&self.pool).await?;
                    Ok(row.map(|(t,)| from_ms(t)))
                }

                async fn put_event_type(&self, t: &StoredEventType) -> Result<()> {
                    sqlx::query(&D.sql(PUT_EVENT_TYPE))
                        .bind(&t.tenant)
                        .bind(&t.event_type)
                        .bind(&t.description)
                        .bind(&t.schema)
                        .bind(ms(t.registered_at))
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn event_types(&self, tenant: Option<&str>) -> Result<Vec<StoredEventType>> {
                    let rows = match tenant {
                        Some(tenant) => sqlx::query(&D.sql(EVENT_TYPES_OF)).bind(tenant).fetch_all(&self.pool).await?,
                        None => sqlx::query(&D.sql(ALL_EVENT_TYPES)).fetch_all(&self.pool).await?,
                    };
                    rows.iter()
                        .map(|r| {
                            Ok(StoredEventType {
                                tenant: r.try_get("tenant")?,
                                event_type: r.try_get("event_type")?,
                                description: r.try_get("description")?,
                                schema: r.try_get("schema")?,
                                registered_at: from_ms(r.try_get("registered_at_ms")?),
                            })
                        })
                        .collect()
                }
            }
        };
    };
}

pub(crate) use event_store_impl;

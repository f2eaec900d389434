//! The engine's journal over the store, and resuming durable executions after a restart.

use std::sync::Arc;

use nexus_engine::{Engine, ExecutionRecord, Journal, JournalError, JournalStart, Keyed};
use nexus_store::{FinishedExecution, JournalOp, JournalStore};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{convert, lifecycle::Tasks, registry::Registry};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// Journals durable executions in the store (SQLite or PostgreSQL), with group commit: writes
/// queue while a transaction commits and the next transaction takes them all, so the number of
/// commits does not grow with the number of executions in flight. Each write still returns only
/// once it is committed.
pub struct StoreBackedJournal {
    queue: mpsc::Sender<Pending>,
    store: Arc<dyn JournalStore>,
    /// This replica, and how long its claim on an execution it starts lasts.
    owner: Arc<str>,
    lease: std::time::Duration,
    /// How long a write waits for an unreachable store before giving up.
    outage_wait: std::time::Duration,
}

struct Pending {
    op: JournalOp,
    /// Answered once the op is committed, or with the error and the op itself (moved, never
    /// cloned: a finish carries the execution's whole summary), to try again.
    done: oneshot::Sender<Result<(), (JournalError, JournalOp)>>,
}

/// A store error as the engine's journal error (transient or not).
pub(crate) fn journal_error(e: nexus_store::Error) -> JournalError {
    JournalError { transient: e.is_transient(), message: e.to_string() }
}

impl StoreBackedJournal {
    /// The journal handle and its writers (to run with [`JournalWriters::run`]). `writers`:
    /// transactions in flight at once (1 for SQLite, which has a single writer anyway; more for
    /// PostgreSQL, where commits wait on the server's fsync and can overlap). Each execution
    /// awaits its writes in order, so writers never reorder one execution's entries.
    pub fn new(
        store: Arc<dyn JournalStore>,
        owner: Arc<str>,
        lease: std::time::Duration,
        outage_wait: std::time::Duration,
        writers: usize,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (Self, JournalWriters) {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let writers = JournalWriters { store: store.clone(), rx, count: writers.max(1), metrics };
        (Self { queue, store, owner, lease, outage_wait }, writers)
    }

    /// Returns once `op` is committed. While the store is unreachable the write waits and tries
    /// again (backing off up to 1 s) for `outage_wait`; only then does it fail, and the engine
    /// suspends the execution (it stays journaled as running and resumes once the store is back).
    async fn write(&self, mut op: JournalOp) -> Result<(), JournalError> {
        let give_up = tokio::time::Instant::now() + self.outage_wait;
        let mut backoff = std::time::Duration::from_millis(50);
        let mut warned = false;
        loop {
            let (done, committed) = oneshot::channel();
            let pending = Pending { op, done };
            let stopped = || JournalError::permanent("the journal writer stopped");
            self.queue.send(pending).await.map_err(|_| stopped())?;
            let e = match committed.await.map_err(|_| stopped())? {
                Ok(()) => {
                    if warned {
                        tracing::info!("the store is reachable again; journal writes go through");
                    }
                    return Ok(());
                }
                Err((e, back)) => {
                    op = back;
                    e
                }
            };
            if !e.transient || tokio::time::Instant::now() + backoff > give_up {
                if e.transient {
                    return Err(JournalError::transient(format!(
                        "{} (still failing after {:?})",
                        e.message, self.outage_wait
                    )));
                }
                return Err(e);
            }
            if !warned {
                warned = true;
                tracing::warn!(
                    "journal write failed, waiting for the store (up to {:?}): {}",
                    self.outage_wait,
                    e.message
                );
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
        }
    }
}

/// The group-commit writers behind a [`StoreBackedJournal`].
pub struct JournalWriters {
    store: Arc<dyn JournalStore>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    count: usize,
    metrics: Arc<crate::metrics::Metrics>,
}

impl JournalWriters {
    /// Commits queued writes until `shutdown`, then commits what is still queued and ends (a
    /// write queued later fails: "the journal writer stopped").
    pub async fn run(self, shutdown: CancellationToken) {
        let writers = (0..self.count)
            .map(|_| group_commit(self.store.clone(), self.rx.clone(), shutdown.clone(), self.metrics.clone()));
        futures::future::join_all(writers).await;
    }
}

async fn group_commit(
    store: Arc<dyn JournalStore>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    shutdown: CancellationToken,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut ops: Vec<JournalOp> = Vec::with_capacity(MAX_BATCH);
    let mut dones = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            // Take what is queued (waiting for at least one write), then let another writer in.
            let mut rx = rx.lock().await;
            let next = tokio::select! {
                biased;
                p = rx.recv() => p,
                () = shutdown.cancelled() => {
                    rx.close();
                    rx.recv().await
                }
            };
            let Some(first) = next else { return };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        for p in batch.drain(..) {
            ops.push(p.op);
            dones.push(p.done);
        }
        let started = std::time::Instant::now();
        let applied = store.apply(&ops).await;
        metrics.journal_commit(ops.len(), started.elapsed());
        match applied {
            Ok(()) => {
                ops.clear();
                for done in dones.drain(..) {
                    let _ = done.send(Ok(()));
                }
            }
            // One bad write (say, a duplicate idempotency key) must not fail the others: redo
            // them one by one so each gets its own answer.
            // (An unreachable store fails them all alike: no point in trying one by one.)
            Err(e) if ops.len() > 1 && !e.is_transient() => {
                for (op, done) in ops.drain(..).zip(dones.drain(..)) {
                    let r = match store.apply(std::slice::from_ref(&op)).await {
                        Ok(()) => Ok(()),
                        Err(e) => Err((journal_error(e), op)),
                    };
                    let _ = done.send(r);
                }
            }
            Err(e) => {
                let e = journal_error(e);
                for (op, done) in ops.drain(..).zip(dones.drain(..)) {
                    let _ = done.send(Err((e.clone(), op)));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Journal for StoreBackedJournal {
    async fn start(&self, s: &JournalStart) -> Result<(), JournalError> {
        self.write(JournalOp::Start(nexus_store::ExecutionStart {
            id: s.id.to_string(),
            pattern_name: s.pattern_name.to_string(),
            pattern_version: s.pattern_version.to_string(),
            input: s.input.clone(),
            idempotency_key: s.idempotency_key.clone(),
            tenant: s.tenant.to_string(),
            trace: s.trace.clone(),
            started_at: std::time::SystemTime::now(),
            owner: self.owner.to_string(),
            lease_until: std::time::SystemTime::now() + self.lease,
        }))
        .await
    }

    async fn step_completed(&self, execution_id: &str, step_id: &str, result: &str) -> Result<(), JournalError> {
        self.write(JournalOp::Step {
            execution_id: execution_id.to_string(),
            step_id: step_id.to_string(),
            result: result.to_string(),
        })
        .await
    }

    async fn finished(&self, record: &ExecutionRecord) -> Result<(), JournalError> {
        self.write(JournalOp::Finish(FinishedExecution {
            id: record.id.to_string(),
            pattern_name: record.pattern_name.to_string(),
            status: record.status.as_str().to_string(),
            record: convert::execution_summary_for_journal(record),
        }))
        .await
    }

    async fn keyed(&self, pattern: &str, key: &str) -> Result<Option<Keyed>, JournalError> {
        let Some(id) = self.store.execution_by_idempotency_key(pattern, key).await.map_err(journal_error)? else {
            return Ok(None);
        };
        if let Some(f) = self.store.finished_execution(&id).await.map_err(journal_error)? {
            let record = convert::execution_from_journal(&f.record).ok_or_else(|| {
                JournalError::permanent(format!("the journaled record of execution `{id}` is unreadable"))
            })?;
            return Ok(Some(Keyed::Finished(std::sync::Arc::new(convert::record_from_journal(record)))));
        }
        match self.store.unfinished_execution(&id).await.map_err(journal_error)? {
            Some(u) => Ok(Some(Keyed::Unfinished { id: Arc::from(id), tenant: Arc::from(u.start.tenant) })),
            // Finished and pruned between the two reads, or pruned by retention: a new execution.
            None => Ok(None),
        }
    }
}

/// Keeps this replica's leases alive and takes over durable executions whose lease ran out (a
/// replica died, or this process restarted).
pub struct LeaseKeeper {
    pub store: Arc<dyn JournalStore>,
    pub registry: Arc<Registry>,
    pub engine: Engine,
    pub owner: Arc<str>,
    pub lease: std::time::Duration,
    /// With an embedded SQLite store no other replica can exist, so everything unfinished is
    /// this node's to resume at once.
    pub take_all_at_start: bool,
    pub retention: std::time::Duration,
    /// Where resumed executions run.
    pub tasks: Tasks,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl LeaseKeeper {
    pub async fn run(self, shutdown: CancellationToken) {
        use std::time::SystemTime;
        let mut first = true;
        let mut last_prune: Option<tokio::time::Instant> = None;
        // Heartbeats at a third of the lease at most; take-overs looked for at least twice a
        // second, so an execution handed back at shutdown (lease released) moves on within ~0.5 s
        // whatever the lease timeout.
        let mut tick = tokio::time::interval((self.lease / 3).min(std::time::Duration::from_millis(500)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = SystemTime::now();
            // Retention: at most once a minute, whichever replica gets there.
            if last_prune.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                last_prune = Some(tokio::time::Instant::now());
                match self.store.prune_finished(now - self.retention).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!("retention: deleted {n} finished execution(s) older than {:?}", self.retention)
                    }
                    Err(e) => tracing::warn!("retention: {e}"),
                }
            }
            let running: Vec<String> = self.engine.running_durable().iter().map(|id| id.to_string()).collect();
            if let Err(e) = self.store.renew_leases(&self.owner, &running, now + self.lease).await {
                tracing::warn!("renewing leases: {e}");
            }
            // "Expired before the far future" is everything: the embedded node's own leftovers.
            let far = now + std::time::Duration::from_secs(100 * 365 * 86_400);
            let cutoff = if first && self.take_all_at_start { far } else { now };
            first = false;
            let claimed = match self.store.claim_expired(&self.owner, cutoff, now + self.lease, 100).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("claiming expired executions: {e}");
                    continue;
                }
            };
            // Leaving: what was just claimed is released with this replica's other leases.
            if shutdown.is_cancelled() {
                return;
            }
            for u in claimed {
                self.take_over(u).await;
            }
        }
    }

    async fn take_over(&self, u: nexus_store::UnfinishedExecution) {
        self.metrics.lease_takeover();
        resume_claimed(&self.engine, &self.registry, &self.tasks, u, "taking over a durable execution").await;
    }
}

/// Resumes an execution this replica just claimed (an expired lease, or a wait resolved while
/// it was parked) on a task of its own.
pub(crate) async fn resume_claimed(
    engine: &Engine,
    registry: &Registry,
    tasks: &Tasks,
    u: nexus_store::UnfinishedExecution,
    why: &'static str,
) {
    if engine.running(&u.start.id).is_some() {
        return; // ours already (a late heartbeat let our own lease lapse)
    }
    let pattern = match registry.executable_fresh(&u.start.pattern_name, &u.start.pattern_version).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(execution = %u.start.id, "cannot resume: {e}");
            return;
        }
    };
    let input = serde_json::from_str::<serde_json::Value>(&u.start.input)
        .map(|v| nexus_core::value::serde_to_cel(&v))
        .unwrap_or(cel::Value::Null);
    tracing::info!(execution = %u.start.id, pattern = %u.start.pattern_name, completed_steps = u.steps.len(), "{why}");
    let engine = engine.clone();
    tasks.spawn(async move {
        let (id, tenant) = (Arc::from(u.start.id.as_str()), Arc::from(u.start.tenant.as_str()));
        let resumption = nexus_engine::Resumption {
            pattern,
            id,
            input,
            idempotency_key: u.start.idempotency_key,
            tenant,
            trace: u.start.trace,
        };
        engine.resume(resumption, &u.steps).await;
    });
}

//! The engine's journal over the store, and resuming durable executions after a restart.

use std::sync::Arc;

use nexus_engine::{Engine, ExecutionRecord, Journal, JournalError, JournalStart, Keyed};
use nexus_store::{FinishedExecution, JournalOp, JournalStore};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::{convert, lifecycle::Tasks, registry::Registry};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// Journals durable executions in the store (SQLite or PostgreSQL), with group commit: writes
/// queue while a transaction commits and the next transaction takes them all, so the number of
/// commits does not grow with the number of executions in flight. Each write still returns only
/// once it is committed.
pub struct StoreBackedJournal {
    group: Arc<GroupCommit>,
    store: Arc<dyn JournalStore>,
    /// This replica, and how long its claim on an execution it starts lasts.
    owner: Arc<str>,
    lease: std::time::Duration,
    /// How long a write waits for an unreachable store before giving up.
    outage_wait: std::time::Duration,
}

/// A store error as the engine's journal error (transient or not).
pub(crate) fn journal_error(e: nexus_store::Error) -> JournalError {
    JournalError { transient: e.is_transient(), message: e.to_string() }
}

fn stopped() -> JournalError {
    JournalError::permanent("the journal writer stopped")
}

/// A write's outcome: committed, or the error with the write itself (moved, never cloned: a
/// finish carries the execution's whole summary) to try again — `None` when it is lost with a
/// writer that stopped.
type Outcome = Result<(), Box<(JournalError, Option<JournalOp>)>>;

impl StoreBackedJournal {
    /// The journal handle and the task that closes it at shutdown (to run with
    /// [`JournalWriters::run`]). `writers`: transactions in flight at once (1 for SQLite, which
    /// has a single writer anyway; more for PostgreSQL, where commits wait on the server's fsync
    /// and can overlap). Each execution awaits its writes in order, so concurrent commits never
    /// reorder one execution's entries.
    pub fn new(
        store: Arc<dyn JournalStore>,
        owner: Arc<str>,
        lease: std::time::Duration,
        outage_wait: std::time::Duration,
        writers: usize,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (Self, JournalWriters) {
        let group = Arc::new(GroupCommit {
            store: store.clone(),
            metrics,
            max_leaders: writers.max(1),
            state: std::sync::Mutex::new(State::default()),
            idle: tokio::sync::Notify::new(),
        });
        (Self { group: group.clone(), store, owner, lease, outage_wait }, JournalWriters { group })
    }

    /// Returns once `op` is committed. While the store is unreachable the write waits and tries
    /// again (backing off up to 1 s) for `outage_wait`; only then does it fail, and the engine
    /// suspends the execution (it stays journaled as running and resumes once the store is back).
    async fn write(&self, mut op: JournalOp) -> Result<(), JournalError> {
        let give_up = tokio::time::Instant::now() + self.outage_wait;
        let mut backoff = std::time::Duration::from_millis(50);
        let mut warned = false;
        loop {
            let e = match self.group.write(op).await {
                Ok(()) => {
                    if warned {
                        tracing::info!("the store is reachable again; journal writes go through");
                    }
                    return Ok(());
                }
                Err(failed) => match *failed {
                    (e, Some(back)) => {
                        op = back;
                        e
                    }
                    (e, None) => return Err(e),
                },
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

/// Group commit without a writer task: the write that finds no commit in flight commits itself,
/// on its own task, with whatever queued behind the commit before it; writes that arrive while
/// `max_leaders` commits are in flight queue, and the leader that ends hands its turn to the
/// first of them, which commits them all. A writer task cost every write two thread switches
/// (the queue wakes the writer, the writer wakes the execution): at one client, four per
/// journaled step.
///
/// Once queued, a write is committed even if its writer goes away (its future dropped, a caller
/// that disconnected): a leader dropped mid-commit finishes on a task of its own, and a turn
/// handed to a writer that has gone is taken by a task.
struct GroupCommit {
    store: Arc<dyn JournalStore>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Commits in flight at most.
    max_leaders: usize,
    state: std::sync::Mutex<State>,
    /// Notified when the last commit in flight ends.
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Writes waiting for a commit; never empty without a commit in flight to take them.
    queue: std::collections::VecDeque<Pending>,
    /// Commits in flight.
    leaders: usize,
    /// Shut down: new writes fail, those queued are still committed.
    closed: bool,
}

struct Pending {
    op: JournalOp,
    done: oneshot::Sender<Signal>,
}

enum Signal {
    /// Committed in another write's transaction (or failed with it).
    Done(Outcome),
    /// This write's turn to commit, with the writes queued behind it.
    Lead(Box<Turn>),
}

/// The right to commit one batch (counted in [`State::leaders`]) and the write that got it.
/// Dropped unused — its writer went away — the write is committed all the same, on a task.
struct Turn {
    group: Arc<GroupCommit>,
    op: Option<JournalOp>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(op) = self.op.take() else { return };
        let group = self.group.clone();
        // Without a runtime (it is shutting down) nothing is left to commit for.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = group.lead(op).await;
            });
        }
    }
}

/// A leader's commit in flight. Dropped before it ends (the leader's future was dropped), it
/// finishes on a task of its own: the writes of the batch get their answers, and the next turn
/// is handed on.
struct InFlight {
    group: Arc<GroupCommit>,
    commit: Option<futures::future::BoxFuture<'static, Vec<Outcome>>>,
    /// The other writes of the batch, in the batch's order after the leader's.
    dones: Vec<oneshot::Sender<Signal>>,
}

impl InFlight {
    async fn finish(mut self) -> Outcome {
        let results = match self.commit.as_mut() {
            Some(commit) => commit.await,
            None => Vec::new(),
        };
        self.commit = None;
        let own = deliver(results, std::mem::take(&mut self.dones));
        self.group.hand_off();
        own
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(commit) = self.commit.take() else { return };
        let (group, dones) = (self.group.clone(), std::mem::take(&mut self.dones));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = deliver(commit.await, dones);
                group.hand_off();
            });
        }
    }
}

/// Answers the batch's other writes; returns the leader's own outcome (the first).
fn deliver(results: Vec<Outcome>, dones: Vec<oneshot::Sender<Signal>>) -> Outcome {
    let mut results = results.into_iter();
    let own = results.next().unwrap_or(Err(Box::new((stopped(), None))));
    for (result, done) in results.zip(dones) {
        let _ = done.send(Signal::Done(result));
    }
    own
}

impl GroupCommit {
    /// Commits `op`, in a transaction of its own writer or another's.
    async fn write(self: &Arc<Self>, op: JournalOp) -> Outcome {
        let queued = {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.closed {
                return Err(Box::new((stopped(), Some(op))));
            }
            if state.leaders < self.max_leaders {
                state.leaders += 1;
                Err(op)
            } else {
                let (done, answer) = oneshot::channel();
                state.queue.push_back(Pending { op, done });
                Ok(answer)
            }
        };
        let op = match queued {
            Err(op) => op,
            Ok(answer) => match answer.await {
                Ok(Signal::Done(outcome)) => return outcome,
                Ok(Signal::Lead(mut turn)) => match turn.op.take() {
                    Some(op) => op,
                    None => return Err(Box::new((stopped(), None))),
                },
                Err(_) => return Err(Box::new((stopped(), None))),
            },
        };
        self.lead(op).await
    }

    /// Commits `op` and what is queued (up to [`MAX_BATCH`] writes), answers them, and hands the
    /// turn on. The caller holds a turn.
    async fn lead(self: &Arc<Self>, op: JournalOp) -> Outcome {
        let mut ops = vec![op];
        let mut dones = Vec::new();
        {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = state.queue.len().min(MAX_BATCH - 1);
            for p in state.queue.drain(..n) {
                ops.push(p.op);
                dones.push(p.done);
            }
        }
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let commit = Box::pin(async move { commit(&*store, &metrics, ops).await });
        InFlight { group: self.clone(), commit: Some(commit), dones }.finish().await
    }

    /// Removes the queued write `which` picks, if no commit has taken it yet; its writer's
    /// answer is dropped (the writer stops waiting for it). Whether one was removed.
    fn withdraw(&self, which: impl Fn(&JournalOp) -> bool) -> bool {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match state.queue.iter().position(|p| which(&p.op)) {
            Some(i) => state.queue.remove(i).is_some(),
            None => false,
        }
    }

    /// Gives the turn of a commit that ended to the first queued write, or ends it.
    fn hand_off(self: &Arc<Self>) {
        let next = {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match state.queue.pop_front() {
                Some(next) => next,
                None => {
                    state.leaders -= 1;
                    if state.leaders == 0 {
                        self.idle.notify_waiters();
                    }
                    return;
                }
            }
        };
        // A writer that has gone drops the turn it is sent, which commits its write on a task.
        let _ = next.done.send(Signal::Lead(Box::new(Turn { group: self.clone(), op: Some(next.op) })));
    }
}

/// One transaction for the batch; the outcome of each write, in order.
async fn commit(store: &dyn JournalStore, metrics: &crate::metrics::Metrics, ops: Vec<JournalOp>) -> Vec<Outcome> {
    let started = std::time::Instant::now();
    let applied = store.apply(&ops).await;
    metrics.journal_commit(ops.len(), started.elapsed());
    match applied {
        Ok(()) => ops.iter().map(|_| Ok(())).collect(),
        // One bad write (say, a duplicate idempotency key) must not fail the others: redo them
        // one by one so each gets its own answer.
        // (An unreachable store fails them all alike: no point in trying one by one.)
        Err(e) if ops.len() > 1 && !e.is_transient() => {
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                outcomes.push(match store.apply(std::slice::from_ref(&op)).await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(Box::new((journal_error(e), Some(op)))),
                });
            }
            outcomes
        }
        Err(e) => {
            let e = journal_error(e);
            ops.into_iter().map(|op| Err(Box::new((e.clone(), Some(op))))).collect()
        }
    }
}

/// Closes a [`StoreBackedJournal`] at shutdown.
pub struct JournalWriters {
    group: Arc<GroupCommit>,
}

impl JournalWriters {
    /// Waits for `shutdown`, then refuses new writes ("the journal writer stopped"), lets the
    /// commits in flight and the writes queued behind them end, and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        loop {
            let idle = self.group.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let mut state = self.group.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                state.closed = true;
                if state.leaders == 0 {
                    return;
                }
            }
            idle.await;
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

    fn withdraw_step(&self, execution_id: &str, step_id: &str) -> bool {
        self.group.withdraw(
            |op| matches!(op, JournalOp::Step { execution_id: e, step_id: s, .. } if e == execution_id && s == step_id),
        )
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

#[cfg(test)]
mod group_commit_tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::{Duration, SystemTime},
    };

    use nexus_store::{
        ExecutionQuery, ExecutionStart, FinishedExecution, JournaledExecution, SqliteStore, UnfinishedExecution,
    };

    use super::*;

    /// A real (in-memory SQLite) store whose `apply` waits at a gate the test opens, and counts
    /// the transactions and the writes in each.
    struct Gated {
        inner: SqliteStore,
        gate: tokio::sync::Semaphore,
        batches: std::sync::Mutex<Vec<usize>>,
        entered: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl JournalStore for Gated {
        async fn apply(&self, ops: &[JournalOp]) -> nexus_store::Result<()> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.expect("gate open").forget();
            self.batches.lock().unwrap().push(ops.len());
            self.inner.apply(ops).await
        }
        async fn start_execution(&self, s: &ExecutionStart) -> nexus_store::Result<()> {
            self.inner.start_execution(s).await
        }
        async fn complete_step(&self, e: &str, s: &str, r: &str) -> nexus_store::Result<()> {
            self.inner.complete_step(e, s, r).await
        }
        async fn finish_execution(&self, f: &FinishedExecution) -> nexus_store::Result<()> {
            self.inner.finish_execution(f).await
        }
        async fn unfinished_executions(&self) -> nexus_store::Result<Vec<UnfinishedExecution>> {
            self.inner.unfinished_executions().await
        }
        async fn finished_execution(&self, id: &str) -> nexus_store::Result<Option<FinishedExecution>> {
            self.inner.finished_execution(id).await
        }
        async fn unfinished_execution(&self, id: &str) -> nexus_store::Result<Option<UnfinishedExecution>> {
            self.inner.unfinished_execution(id).await
        }
        async fn renew_leases(&self, o: &str, r: &[String], u: SystemTime) -> nexus_store::Result<u64> {
            self.inner.renew_leases(o, r, u).await
        }
        async fn claim_expired(
            &self,
            o: &str,
            n: SystemTime,
            u: SystemTime,
            l: u32,
        ) -> nexus_store::Result<Vec<UnfinishedExecution>> {
            self.inner.claim_expired(o, n, u, l).await
        }
        async fn release_leases(&self, o: &str) -> nexus_store::Result<u64> {
            self.inner.release_leases(o).await
        }
        async fn prune_finished(&self, b: SystemTime) -> nexus_store::Result<u64> {
            self.inner.prune_finished(b).await
        }
        async fn execution_by_idempotency_key(&self, p: &str, k: &str) -> nexus_store::Result<Option<String>> {
            self.inner.execution_by_idempotency_key(p, k).await
        }
        async fn list_executions(&self, q: &ExecutionQuery) -> nexus_store::Result<Vec<JournaledExecution>> {
            self.inner.list_executions(q).await
        }
    }

    async fn journal(writers: usize) -> (Arc<StoreBackedJournal>, JournalWriters, Arc<Gated>) {
        let store = Arc::new(Gated {
            inner: SqliteStore::in_memory().await.unwrap(),
            gate: tokio::sync::Semaphore::new(0),
            batches: Default::default(),
            entered: AtomicUsize::new(0),
        });
        let (journal, writers) = StoreBackedJournal::new(
            store.clone(),
            Arc::from("replica-test"),
            Duration::from_secs(30),
            Duration::from_secs(1),
            writers,
            Arc::new(crate::metrics::Metrics::new()),
        );
        (Arc::new(journal), writers, store)
    }

    fn start(id: &str) -> JournalStart {
        JournalStart {
            id: Arc::from(id),
            pattern_name: Arc::from("p"),
            pattern_version: Arc::from("1.0.0"),
            input: "{}".into(),
            idempotency_key: None,
            tenant: Arc::from("default"),
            trace: String::new(),
        }
    }

    /// Spawns `start(id)` on the journal.
    fn spawn_start(journal: &Arc<StoreBackedJournal>, id: &str) -> tokio::task::JoinHandle<Result<(), JournalError>> {
        let (journal, id) = (journal.clone(), id.to_string());
        tokio::spawn(async move { journal.start(&start(&id)).await })
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn journaled(store: &Gated) -> Vec<String> {
        let mut ids: Vec<String> =
            store.inner.unfinished_executions().await.unwrap().into_iter().map(|u| u.start.id).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn writes_that_arrive_during_a_commit_share_the_next_one() {
        let (journal, _writers, store) = journal(1).await;
        let first = spawn_start(&journal, "a");
        until("the first commit", || store.entered.load(Ordering::SeqCst) == 1).await;
        let rest: Vec<_> = ["b", "c", "d", "e"].iter().map(|id| spawn_start(&journal, id)).collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Queued behind the one commit in flight, none starts another.
        assert_eq!(store.entered.load(Ordering::SeqCst), 1);
        store.gate.add_permits(2);
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        assert_eq!(*store.batches.lock().unwrap(), vec![1, 4]);
        assert_eq!(journaled(&store).await, ["a", "b", "c", "d", "e"]);
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_mid_commit_still_commits_and_answers_the_others() {
        let (journal, _writers, store) = journal(1).await;
        let leader = spawn_start(&journal, "a");
        until("the first commit", || store.entered.load(Ordering::SeqCst) == 1).await;
        let follower = spawn_start(&journal, "b");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The caller disconnected: the leader's future is dropped while its commit waits.
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        store.gate.add_permits(2);
        follower.await.unwrap().unwrap();
        // The dropped leader's write was committed too, and the turn went on to the follower.
        assert_eq!(*store.batches.lock().unwrap(), vec![1, 1]);
        assert_eq!(journaled(&store).await, ["a", "b"]);
        // Nothing is stuck: the next write commits on its own.
        store.gate.add_permits(1);
        journal.start(&start("c")).await.unwrap();
        assert_eq!(journaled(&store).await, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_queued_write_whose_writer_goes_away_is_committed_and_the_queue_goes_on() {
        let (journal, _writers, store) = journal(1).await;
        let leader = spawn_start(&journal, "a");
        until("the first commit", || store.entered.load(Ordering::SeqCst) == 1).await;
        let gone = spawn_start(&journal, "b");
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        store.gate.add_permits(1);
        leader.await.unwrap().unwrap();
        // "b"'s turn, handed to a writer that has gone, is taken by a task.
        let later = spawn_start(&journal, "c");
        store.gate.add_permits(2);
        // Bounded: a turn lost with its writer would stall every later write.
        tokio::time::timeout(Duration::from_secs(10), later).await.expect("the queue went on").unwrap().unwrap();
        until("b's commit", || store.batches.lock().unwrap().iter().sum::<usize>() == 3).await;
        assert_eq!(journaled(&store).await, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn concurrent_commits_stay_within_the_writers_and_every_write_lands() {
        let (journal, _writers, store) = journal(2).await;
        let tasks: Vec<_> = (0..40).map(|i| spawn_start(&journal, &format!("e{i:02}"))).collect();
        until("two commits in flight", || store.entered.load(Ordering::SeqCst) == 2).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.entered.load(Ordering::SeqCst), 2, "at most two commits in flight");
        store.gate.add_permits(1000);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let batches = store.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 40);
        assert!(batches.len() < 40, "writes were batched: {batches:?}");
        assert_eq!(journaled(&store).await.len(), 40);
    }

    #[tokio::test]
    async fn a_queued_step_result_can_be_taken_back_but_not_one_a_commit_has_taken() {
        let (journal, _writers, store) = journal(1).await;
        let step = |step: &str| {
            let (journal, step) = (journal.clone(), step.to_string());
            tokio::spawn(async move { journal.step_completed("a", &step, "{}").await })
        };
        store.gate.add_permits(1);
        journal.start(&start("a")).await.unwrap();
        let in_flight = step("first");
        until("the commit", || store.entered.load(Ordering::SeqCst) == 2).await;
        let queued = step("second");
        let kept = step("third");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // In the commit: too late.
        assert!(!journal.withdraw_step("a", "first"));
        // Queued: taken back (and only that one; nothing matches twice).
        assert!(journal.withdraw_step("a", "second"));
        assert!(!journal.withdraw_step("a", "second"));
        assert!(!journal.withdraw_step("b", "third"));
        queued.abort();
        store.gate.add_permits(2);
        in_flight.await.unwrap().unwrap();
        kept.await.unwrap().unwrap();
        assert_eq!(*store.batches.lock().unwrap(), vec![1, 1, 1]);
        let steps: Vec<String> =
            store.inner.unfinished_executions().await.unwrap()[0].steps.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(steps, ["first", "third"]);
    }

    #[tokio::test]
    async fn shutdown_commits_what_is_queued_then_refuses_new_writes() {
        let (journal, writers, store) = journal(1).await;
        let shutdown = CancellationToken::new();
        let closing = tokio::spawn(writers.run(shutdown.clone()));
        let first = spawn_start(&journal, "a");
        until("the first commit", || store.entered.load(Ordering::SeqCst) == 1).await;
        let queued = spawn_start(&journal, "b");
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished(), "a commit is still in flight");
        let refused = journal.start(&start("c")).await.unwrap_err();
        assert_eq!(refused.message, "the journal writer stopped");
        assert!(!refused.transient);
        store.gate.add_permits(2);
        first.await.unwrap().unwrap();
        queued.await.unwrap().unwrap();
        closing.await.unwrap();
        assert_eq!(journaled(&store).await, ["a", "b"]);
    }
}

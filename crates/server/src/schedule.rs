//! The scheduler: starts the executions of patterns with a `schedule:` (cron), one per tick
//! across every replica, with the pattern's overlap policy and catch-up after downtime.
//!
//! Each poll ([`Scheduler::tick_once`]), for the latest version of every scheduled pattern name:
//! 1. read the name's last handled tick from the store (none yet: the latest version's
//!    registration time, so no tick from before the pattern existed ever fires);
//! 2. ask the plan what is due now ([`nexus_core::plan::SchedulePlan::due`]): the latest tick
//!    since, if it is young enough (the catch-up window, or the scheduler's slack); older ticks
//!    are skipped — catch-up runs one tick, the latest;
//! 3. claim that tick in the store (compare-and-set on the last tick): of all replicas exactly
//!    one wins, and only the winner goes on — a missed tick is claimed too, so it is handled once;
//! 4. apply the overlap policy against the previous scheduled executions this replica started
//!    (still running here, or — durable — still unfinished in the journal, e.g. parked on a
//!    wait): `skip` starts nothing, `buffer_one` keeps the tick (one at most) and starts it at
//!    the first poll after they end, `allow_all` starts regardless;
//! 5. start the execution with input `{}`, the pattern's tenant, and the idempotency key
//!    `schedule:<version>:<tick RFC 3339>` (a durable start is deduplicated by the journal; for
//!    an ephemeral one the claim is the only dedupe), and wait until it has started (durable:
//!    journaled).
//!
//! Time comes from a [`Clock`], so tests drive the scheduler with a [`ManualClock`] instead of
//! waiting for minutes to pass.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use chrono::{DateTime, SecondsFormat, Utc};
use nexus_core::{
    CompiledPattern,
    plan::{Due, Durability, Overlap},
    value,
};
use nexus_engine::{Engine, ExecuteRequest};
use nexus_store::{EventStore, JournalStore};
use tokio_util::sync::CancellationToken;

use crate::{lifecycle::Tasks, registry::Registry};

/// How often the scheduler looks for due ticks.
pub const POLL: Duration = Duration::from_secs(1);
/// A tick seen at most this long after its time is on time (not missed): covers the poll
/// interval and a slow store.
pub const SLACK: Duration = Duration::from_secs(10);
/// How long starting a scheduled execution may take (until journaled, for a durable one).
const START_WAIT: Duration = Duration::from_secs(30);

/// Where the scheduler's time comes from.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
    /// Returns once [`Clock::now`] is at or after `t`.
    async fn sleep_until(&self, t: SystemTime);
}

/// The system's clock (tokio's timer for sleeping).
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    async fn sleep_until(&self, t: SystemTime) {
        if let Ok(d) = t.duration_since(SystemTime::now()) {
            tokio::time::sleep(d).await;
        }
    }
}

/// A clock that moves only when told to (tests): sleepers wake when it reaches their time.
pub struct ManualClock {
    now: tokio::sync::watch::Sender<SystemTime>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Arc<Self> {
        Arc::new(Self { now: tokio::sync::watch::Sender::new(start) })
    }

    pub fn set(&self, t: SystemTime) {
        self.now.send_replace(t);
    }

    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|t| *t += by);
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.borrow()
    }

    async fn sleep_until(&self, t: SystemTime) {
        let mut rx = self.now.subscribe();
        // `Err`: the clock is gone, and with it any reason to wait.
        let _ = rx.wait_for(|now| *now >= t).await;
    }
}

/// What one poll did about one pattern's tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub pattern: String,
    pub version: String,
    pub tick: DateTime<Utc>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An execution started (its id).
    Started(String),
    /// The tick was older than the catch-up window: skipped (with every older one).
    Missed,
    /// The previous scheduled execution still runs and the policy skips (`skip`, or `buffer_one`
    /// with a tick already waiting).
    Overlapping,
    /// The previous scheduled execution still runs: the tick waits for it (`buffer_one`).
    Buffered,
    /// Another replica claimed the tick first.
    Taken,
    /// The start failed (logged); the tick is handled all the same.
    Failed(String),
}

/// What this replica knows of one pattern name's scheduled executions.
#[derive(Default)]
struct Track {
    /// Executions started for it here that may still run: (id, durable).
    running: Vec<(String, bool)>,
    /// `buffer_one`: the tick waiting for them to end.
    buffered: Option<DateTime<Utc>>,
    /// When this scheduler first saw the pattern (used only when its registration time is unknown).
    first_seen: Option<DateTime<Utc>>,
}

pub struct Scheduler {
    registry: Arc<Registry>,
    store: Arc<dyn EventStore>,
    journal: Arc<dyn JournalStore>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    tasks: Tasks,
    tracks: Mutex<HashMap<String, Track>>,
}

impl Scheduler {
    pub(crate) fn new(
        registry: Arc<Registry>,
        store: Arc<dyn EventStore>,
        journal: Arc<dyn JournalStore>,
        engine: Engine,
        clock: Arc<dyn Clock>,
        tasks: Tasks,
    ) -> Self {
        Self { registry, store, journal, engine, clock, tasks, tracks: Mutex::new(HashMap::new()) }
    }

    /// Polls every [`POLL`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            for f in self.tick_once().await {
                match &f.outcome {
                    Outcome::Started(id) => {
                        tracing::info!(pattern = %f.pattern, tick = %f.tick, execution = %id, "scheduled execution started")
                    }
                    Outcome::Failed(e) => {
                        tracing::warn!(pattern = %f.pattern, tick = %f.tick, "scheduled execution not started: {e}")
                    }
                    Outcome::Missed => {
                        tracing::info!(pattern = %f.pattern, tick = %f.tick, "missed tick skipped (older than the catch-up window)")
                    }
                    Outcome::Overlapping => {
                        tracing::info!(pattern = %f.pattern, tick = %f.tick, "tick skipped: the previous scheduled execution still runs")
                    }
                    Outcome::Buffered | Outcome::Taken => {
                        tracing::debug!(pattern = %f.pattern, tick = %f.tick, outcome = ?f.outcome, "tick")
                    }
                }
            }
            let wake = self.clock.now() + POLL;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.clock.sleep_until(wake) => {}
            }
        }
    }

    /// One poll at the clock's time: what it did, pattern by pattern (ticks claimed by another
    /// replica included; patterns with nothing due left out).
    pub async fn tick_once(&self) -> Vec<Fired> {
        let now = DateTime::<Utc>::from(self.clock.now());
        let mut fired = Vec::new();
        for s in self.registry.scheduled() {
            let registered = s.registered_at.map(DateTime::<Utc>::from);
            if let Err(e) = self.poll_pattern(&s.tenant, &s.pattern, registered, now, &mut fired).await {
                tracing::warn!(pattern = %s.pattern.name, "schedule: {e}");
            }
        }
        fired
    }

    async fn poll_pattern(
        &self,
        tenant: &str,
        pattern: &Arc<CompiledPattern>,
        registered: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        fired: &mut Vec<Fired>,
    ) -> Result<(), nexus_store::Error> {
        let Some(plan) = &pattern.schedule else { return Ok(()) };
        let name = pattern.name.to_string();
        let record =
            |tick, outcome| Fired { pattern: name.clone(), version: pattern.version.to_string(), tick, outcome };

        // A buffered tick starts once what it waited for has ended.
        let running = self.still_running(&name).await;
        if !running && let Some(tick) = self.track(&name, |t| t.buffered.take()) {
            let outcome = self.start(tenant, pattern, tick).await;
            fired.push(record(tick, outcome));
        }

        let last = self.store.last_tick(&name).await?;
        // Ticks after the last one handled and after the latest version's registration (a new
        // version with another cron does not fire the ticks of its own cron from before it).
        let handled = match (last.map(DateTime::<Utc>::from), registered) {
            (Some(l), Some(r)) => l.max(r),
            (Some(t), None) | (None, Some(t)) => t,
            // Neither (no registration time known): from when this scheduler first saw it.
            (None, None) => self.track(&name, |t| *t.first_seen.get_or_insert(now)),
        };
        let (tick, run) = match plan.due(handled, now, SLACK) {
            Due::Nothing => return Ok(()),
            Due::Missed(t) => (t, false),
            Due::Run(t) => (t, true),
        };
        if !self.store.claim_tick(&name, tick.into(), last).await? {
            fired.push(record(tick, Outcome::Taken));
            return Ok(());
        }
        if !run {
            fired.push(record(tick, Outcome::Missed));
            return Ok(());
        }
        let running = self.still_running(&name).await;
        let outcome = match (running, plan.overlap) {
            (false, _) | (true, Overlap::AllowAll) => self.start(tenant, pattern, tick).await,
            (true, Overlap::Skip) => Outcome::Overlapping,
            (true, Overlap::BufferOne) => {
                let buffered = self.track(&name, |t| match t.buffered {
                    Some(_) => false,
                    None => {
                        t.buffered = Some(tick);
                        true
                    }
                });
                if buffered { Outcome::Buffered } else { Outcome::Overlapping }
            }
        };
        fired.push(record(tick, outcome));
        Ok(())
    }

    fn track<T>(&self, name: &str, f: impl FnOnce(&mut Track) -> T) -> T {
        let mut tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        f(tracks.entry(name.to_string()).or_default())
    }

    /// Whether a scheduled execution of `name` started here still runs: in the engine here, or
    /// (durable) unfinished in the journal — parked on a wait, or continued by another replica.
    /// Forgets the ones that ended.
    async fn still_running(&self, name: &str) -> bool {
        let candidates = self.track(name, |t| t.running.clone());
        let mut alive = Vec::new();
        for (id, durable) in candidates {
            let running = self.engine.running(&id).is_some()
                || (durable && matches!(self.journal.unfinished_execution(&id).await, Ok(Some(_)) | Err(_)));
            if running {
                alive.push((id, durable));
            }
        }
        let any = !alive.is_empty();
        self.track(name, |t| t.running = alive);
        any
    }

    /// Starts the execution of one tick and waits until it has started.
    async fn start(&self, tenant: &str, pattern: &Arc<CompiledPattern>, tick: DateTime<Utc>) -> Outcome {
        let key = format!("schedule:{}:{}", pattern.version, tick.to_rfc3339_opts(SecondsFormat::Secs, true));
        let request = ExecuteRequest {
            pattern: pattern.clone(),
            input: value::serde_to_cel(&serde_json::json!({})),
            deadline: None,
            idempotency_key: Some(key),
            traceparent: None,
            tracestate: None,
            tenant: Arc::from(tenant),
        };
        let checked = match self.engine.check(request) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let (started, first) = tokio::sync::oneshot::channel::<String>();
        let engine = self.engine.clone();
        self.tasks.spawn(async move {
            if let Err(e) = engine.run_checked(checked, Some(tx)).await {
                tracing::warn!("scheduled execution not run: {e}");
            }
        });
        // Read to the end (a dropped receiver would cancel it); the first event names the
        // execution and means its start is journaled (or the key's earlier execution answered).
        self.tasks.spawn(async move {
            let mut started = Some(started);
            while let Some(event) = rx.recv().await {
                if let Some(s) = started.take() {
                    let _ = s.send(event.execution_id.to_string());
                }
            }
        });
        match tokio::time::timeout(START_WAIT, first).await {
            Ok(Ok(id)) => {
                let durable = pattern.durability == Durability::Durable;
                self.track(&pattern.name, |t| t.running.push((id.clone(), durable)));
                Outcome::Started(id)
            }
            Ok(Err(_)) => Outcome::Failed("the execution ended before it started".into()),
            Err(_) => Outcome::Failed(format!("the execution did not start within {START_WAIT:?}")),
        }
    }
}

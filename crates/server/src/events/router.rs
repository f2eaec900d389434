//! The event router: what happens when an event arrives (from the bus, on the replica that gets
//! its delivery), and the engine's [`EventHub`] (emit, wait, park).
//!
//! Routing one event, idempotent from the first line to the last so a redelivery is harmless:
//! 1. record it in the store (the lookback buffer; a processed duplicate stops here);
//! 2. start the executions of the patterns it triggers — one per (pattern version, event):
//!    durable patterns through an idempotency key derived from the event (the journal refuses a
//!    second start), ephemeral ones through a trigger row in the store; the delivery is
//!    acknowledged only once each start is journaled;
//! 3. resolve the waits it matches (the store lets one resolver win per wait) and resume the
//!    executions that were parked, or hand the result to the one running here;
//! 4. mark it processed, acknowledge the delivery.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

use cel::Value as Cel;
use futures::StreamExt;
use nexus_core::{
    Target,
    expr::{ExecutionVar, Scope},
    value,
};
use nexus_engine::{
    BusError, CloudEvent, Delivery, Engine, EventBus, EventHub, ExecuteRequest, JournalError, Published,
    WaitRegistration, waits,
};
use nexus_store::{EventStore, EventWait, JournalStore, WaitResolution};
use tokio_util::sync::CancellationToken;

use crate::{journal::journal_error, lifecycle::Tasks, registry::Registry};

/// Most waits one event is matched against.
const MAX_CANDIDATES: u32 = 10_000;
/// Most buffered events a new wait is matched against.
const MAX_LOOKBACK_EVENTS: u32 = 10_000;
/// Deliveries routed at once.
const CONCURRENCY: usize = 32;
/// How long routing waits for a triggered durable execution's start to be journaled.
const START_WAIT: Duration = Duration::from_secs(30);

pub struct RouterOptions {
    /// This replica (the owner of what it claims) and its lease.
    pub owner: Arc<str>,
    pub lease: Duration,
    /// How far back a new wait looks for an event published before it registered.
    pub lookback: Duration,
    /// How long events are kept (their identities de-duplicate publications that long).
    pub retention: Duration,
    /// Where the routing lag is reported.
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub struct EventRouter {
    bus: Arc<dyn EventBus>,
    store: Arc<dyn EventStore>,
    journal: Arc<dyn JournalStore>,
    registry: Arc<Registry>,
    /// Cleared when routing stops: the engine holds the router (as its hub), so the router
    /// holding the engine is a cycle that must be broken for either to be dropped.
    engine: std::sync::RwLock<Option<Engine>>,
    tasks: Tasks,
    options: RouterOptions,
}

impl EventRouter {
    pub fn new(
        bus: Arc<dyn EventBus>,
        store: Arc<dyn EventStore>,
        journal: Arc<dyn JournalStore>,
        registry: Arc<Registry>,
        tasks: Tasks,
        options: RouterOptions,
    ) -> Self {
        Self { bus, store, journal, registry, engine: std::sync::RwLock::new(None), tasks, options }
    }

    /// The engine the router starts and resumes executions on (it holds the router as its hub,
    /// hence set after both exist).
    pub fn set_engine(&self, engine: Engine) {
        *self.engine.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(engine);
    }

    fn engine(&self) -> Result<Engine, String> {
        self.engine
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| "the event router is stopped".to_string())
    }

    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    /// Publishes an event (from PublishEvent, the HTTP endpoint, or an emit step).
    pub async fn publish(&self, event: &CloudEvent) -> Result<Published, BusError> {
        self.bus.publish(event).await
    }

    /// Routes this replica's deliveries until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let deliveries = match self.bus.deliveries().await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("events are not routed on this replica: {e}");
                shutdown.cancelled().await;
                *self.engine.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                return;
            }
        };
        let routing = deliveries.take_until(shutdown.cancelled_owned()).for_each_concurrent(CONCURRENCY, |d| {
            let router = self.clone();
            async move { router.route(d).await }
        });
        routing.await;
        *self.engine.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    async fn route(&self, d: Delivery) {
        let Delivery { event, attempt, acker } = d;
        if attempt == 1 {
            self.options.metrics.event_routed(SystemTime::now().duration_since(event.time).unwrap_or_default());
        }
        match self.process(&event).await {
            Ok(()) => {
                if let Err(e) = acker.ack().await {
                    tracing::warn!(event = %event.id, "acknowledging an event: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(event = %event.id, source = %event.source, attempt, "routing the event failed (it is delivered again): {e}");
                if let Err(e) = acker.nack().await {
                    tracing::warn!(event = %event.id, "{e}");
                }
            }
        }
    }

    async fn process(&self, event: &CloudEvent) -> Result<(), String> {
        let recorded = self.store.record_event(&super::stored(event)).await.map_err(|e| e.to_string())?;
        if recorded == (nexus_store::EventRecorded::Duplicate { processed: true }) {
            return Ok(());
        }
        let json = waits::event_json(event);
        let cel = value::serde_to_cel(&json);
        self.start_triggered(event, &cel).await?;
        self.resolve_waits(event, &json).await?;
        self.store.mark_event_processed(&event.tenant, &event.source, &event.id).await.map_err(|e| e.to_string())
    }

    /// Starts an execution of every pattern of the event's tenant that a trigger of it matches.
    async fn start_triggered(&self, event: &CloudEvent, cel: &Cel) -> Result<(), String> {
        let engine = self.engine()?;
        for pattern in self.registry.triggered_by(&event.tenant, &event.event_type) {
            let scope = Scope {
                input: &Cel::Null,
                steps: &Default::default(),
                item: None,
                index: None,
                execution: &ExecutionVar::of(Cel::Null),
                event: Some(cel),
                budget: None,
            };
            let mut input = None;
            for t in pattern.triggers.iter().filter(|t| t.event_type == event.event_type) {
                if let Some(f) = &t.filter {
                    match f.eval(&scope) {
                        Ok(Cel::Bool(true)) => {}
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!(pattern = %pattern.name, event = %event.id, "trigger filter: {e}");
                            continue;
                        }
                    }
                }
                input = Some(match &t.input {
                    Some(template) => match template.eval(&scope) {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!(pattern = %pattern.name, event = %event.id, "trigger input: {e}");
                            continue;
                        }
                    },
                    None => value::serde_to_cel(&event.data),
                });
                break;
            }
            let Some(input) = input else { continue };
            let durable = pattern.durability == nexus_core::plan::Durability::Durable;
            if !durable
                && !self
                    .store
                    .record_trigger(&pattern.name, &pattern.version, &event.tenant, &event.source, &event.id)
                    .await
                    .map_err(|e| e.to_string())?
            {
                continue; // started for an earlier delivery
            }
            let request = ExecuteRequest {
                pattern: pattern.clone(),
                input,
                deadline: None,
                // One execution per (version, event): the journal refuses the same key twice.
                idempotency_key: Some(format!("event:{}:{}:{}", pattern.version, event.source, event.id)),
                traceparent: None,
                tracestate: None,
                tenant: event.tenant.clone(),
            };
            let checked = match engine.check(request) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(pattern = %pattern.name, event = %event.id, "the event does not start the pattern: {e}");
                    continue;
                }
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            let (started, journaled) = tokio::sync::oneshot::channel();
            let run = engine.clone();
            self.tasks.spawn(async move {
                if let Err(e) = run.run_checked(checked, Some(tx)).await {
                    tracing::warn!("triggered execution not run: {e}");
                }
            });
            // Read to the end (a dropped receiver would cancel it); the first event means the
            // start is journaled (or the key's earlier execution answered).
            self.tasks.spawn(async move {
                let mut started = Some(started);
                while rx.recv().await.is_some() {
                    if let Some(s) = started.take() {
                        let _ = s.send(());
                    }
                }
            });
            if durable {
                match tokio::time::timeout(START_WAIT, journaled).await {
                    Ok(Ok(())) => {}
                    _ => return Err(format!("the execution of {} it triggers did not start", pattern.name)),
                }
            }
            tracing::debug!(pattern = %pattern.name, event = %event.id, "event triggered an execution");
        }
        Ok(())
    }

    /// Resolves the waits this event matches.
    async fn resolve_waits(&self, event: &CloudEvent, json: &serde_json::Value) -> Result<(), String> {
        let paths =
            self.store.wait_correlation_paths(&event.tenant, &event.event_type).await.map_err(|e| e.to_string())?;
        let keys: Vec<(String, String)> = paths
            .into_iter()
            .filter_map(|p| {
                let segments: Vec<String> = p.split('.').map(str::to_string).collect();
                waits::event_key(json, &segments).map(|k| (p, k))
            })
            .collect();
        let candidates = self
            .store
            .candidate_waits(&event.tenant, &event.event_type, &keys, MAX_CANDIDATES)
            .await
            .map_err(|e| e.to_string())?;
        if candidates.is_empty() {
            return Ok(());
        }
        let cel = value::serde_to_cel(json);
        let result = waits::event_result(json);
        let mut resolved = HashSet::new();
        for w in candidates {
            if resolved.contains(&(w.execution_id.clone(), w.step_id.clone())) {
                continue;
            }
            // A correlated wait matched by its key in the query; the others evaluate their match.
            if w.correlation.is_none() && !self.matches(&w, &cel, &event.event_type) {
                continue;
            }
            resolved.insert((w.execution_id.clone(), w.step_id.clone()));
            self.resolve(&w.execution_id, &w.step_id, &result).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn matches(&self, w: &EventWait, event: &Cel, event_type: &str) -> bool {
        let Ok(pattern) = self.registry.executable(&w.pattern_name, &w.pattern_version) else { return false };
        let Some(step) = pattern.steps.iter().find(|s| *s.id == *w.step_id) else { return false };
        let Target::Wait(plan) = &step.target else { return false };
        let Some(branch) = plan.branches.get(w.branch as usize) else { return false };
        let context = serde_json::from_str(&w.context).map(|v| value::serde_to_cel(&v)).unwrap_or(Cel::Null);
        waits::branch_matches(branch, &context, event, event_type)
    }

    /// The waits of a durable execution (empty when it waits for nothing), for CancelExecution.
    pub(crate) async fn waits_of(&self, execution: &str) -> Result<Vec<EventWait>, JournalError> {
        self.store.execution_waits(execution).await.map_err(journal_error)
    }

    /// Cancels a durable execution that waits for events, wherever it is — parked in the store,
    /// waiting here, or on another replica: each waiting step's result is journaled as cancelled
    /// (one winner against a concurrent event or timeout), and the execution goes on from there to
    /// end as cancelled, compensating. True when at least one wait was still open.
    pub(crate) async fn cancel_waiting(&self, waits: &[EventWait], reason: &str) -> Result<bool, JournalError> {
        let result = nexus_engine::encode_result(&nexus_engine::StepResponse::Cancelled(reason.to_string()));
        let mut steps: Vec<(&str, &str)> =
            waits.iter().map(|w| (w.execution_id.as_str(), w.step_id.as_str())).collect();
        steps.sort_unstable();
        steps.dedup();
        let mut cancelled = false;
        for (execution, step) in steps {
            cancelled |= !matches!(self.resolve(execution, step, &result).await?, WaitResolution::Gone);
        }
        Ok(cancelled)
    }

    /// Journals a wait's result and continues its execution: handed to it when it runs here,
    /// resumed here when it was parked. Returns what the store decided.
    async fn resolve(&self, execution: &str, step: &str, result: &str) -> Result<WaitResolution, JournalError> {
        let until = SystemTime::now() + self.options.lease;
        let r = self
            .store
            .resolve_wait(execution, step, result, &self.options.owner, until)
            .await
            .map_err(journal_error)?;
        match &r {
            WaitResolution::Gone => {}
            WaitResolution::Running => {
                if let Ok(engine) = self.engine() {
                    engine.deliver_wait(execution, step, result.to_string());
                }
            }
            WaitResolution::Claimed(u) => {
                if let Ok(engine) = self.engine() {
                    crate::journal::resume_claimed(
                        &engine,
                        &self.registry,
                        &self.tasks,
                        u.clone(),
                        "an event resumed a waiting execution",
                    )
                    .await;
                }
            }
        }
        Ok(r)
    }

    /// Times out expired waits and prunes old events, until `shutdown`.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = SystemTime::now();
            if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                last_prune = Some(tokio::time::Instant::now());
                match self.store.prune_events(now - self.options.retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("events: deleted {n} older than {:?}", self.options.retention),
                    Err(e) => tracing::warn!("events: pruning: {e}"),
                }
            }
            let expired = match self.store.expired_waits(now, 500).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("events: reading expired waits: {e}");
                    continue;
                }
            };
            let mut done = HashSet::new();
            for w in expired {
                if !done.insert((w.execution_id.clone(), w.step_id.clone())) {
                    continue;
                }
                let message = format!(
                    "step `{}` waited for `{}` until {} and no event matched",
                    w.step_id,
                    w.event_type,
                    chrono::DateTime::<chrono::Utc>::from(w.deadline)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                );
                if let Err(e) = self.resolve(&w.execution_id, &w.step_id, &waits::timeout_result(&message)).await {
                    tracing::warn!(execution = %w.execution_id, "timing out a wait: {e}");
                }
            }
        }
    }

    /// The buffered events a new wait's branch may match, oldest first.
    async fn lookback(&self, wait: &WaitRegistration) -> Result<Option<String>, JournalError> {
        let since = SystemTime::now() - self.options.lookback;
        let context = value::serde_to_cel(&wait.context);
        for (k, branch) in wait.plan.branches.iter().enumerate() {
            let events = self
                .store
                .recent_events(&wait.tenant, &branch.event_type, since, MAX_LOOKBACK_EVENTS)
                .await
                .map_err(journal_error)?;
            for stored in events {
                let Some(event) = super::from_stored(&stored) else { continue };
                let json = waits::event_json(&event);
                let matched = match (&branch.correlation, wait.correlations.get(k).and_then(Option::as_ref)) {
                    (Some(c), Some(key)) => waits::event_key(&json, &c.event_path).as_deref() == Some(key.as_str()),
                    _ => waits::branch_matches(branch, &context, &value::serde_to_cel(&json), &event.event_type),
                };
                if !matched {
                    continue;
                }
                let result = waits::event_result(&json);
                let until = SystemTime::now() + self.options.lease;
                return match self
                    .store
                    .resolve_wait(&wait.execution_id, &wait.step_id, &result, &self.options.owner, until)
                    .await
                    .map_err(journal_error)?
                {
                    WaitResolution::Gone => self.journaled(&wait.execution_id, &wait.step_id).await,
                    _ => Ok(Some(result)),
                };
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl EventHub for EventRouter {
    async fn emit(&self, event: CloudEvent) -> Result<Published, BusError> {
        self.publish(&event).await
    }

    async fn register_wait(&self, wait: &WaitRegistration) -> Result<Option<String>, JournalError> {
        let rows: Vec<EventWait> = wait
            .plan
            .branches
            .iter()
            .enumerate()
            .map(|(k, b)| EventWait {
                execution_id: wait.execution_id.to_string(),
                step_id: wait.step_id.to_string(),
                branch: k as u32,
                tenant: wait.tenant.to_string(),
                pattern_name: wait.pattern_name.to_string(),
                pattern_version: wait.pattern_version.to_string(),
                event_type: b.event_type.clone(),
                correlation: match (&b.correlation, wait.correlations.get(k).and_then(Option::as_ref)) {
                    (Some(c), Some(key)) => Some((c.event_path.join("."), key.clone())),
                    _ => None,
                },
                context: wait.context.to_string(),
                deadline: wait.deadline,
            })
            .collect();
        self.store.add_waits(&rows).await.map_err(journal_error)?;
        // Registered first, then the buffer: an event published meanwhile is seen by one side
        // or the other (the router resolves it, or this scan finds it), and the store lets only
        // one of them resolve the wait.
        self.lookback(wait).await
    }

    async fn park(&self, execution_id: &str) -> Result<bool, JournalError> {
        self.store.park_execution(execution_id).await.map_err(journal_error)
    }

    async fn journaled(&self, execution_id: &str, step_id: &str) -> Result<Option<String>, JournalError> {
        let u = self.journal.unfinished_execution(execution_id).await.map_err(journal_error)?;
        Ok(u.and_then(|u| u.steps.into_iter().find(|(s, _)| s == step_id).map(|(_, r)| r)))
    }
}

//! Events on the bus (CloudEvents attributes plus the publisher's tenant) and the [`EventBus`]
//! trait: the in-process bus (embedded) and NATS JetStream (cluster) implement it in the server.
//!
//! Delivery is at least once. Everything that reacts to an event is idempotent by the event's
//! identity (tenant, `source`, `id`): trigger starts and wait resolutions are de-duplicated in the
//! store, whatever the bus's own duplicate window.

use std::{sync::Arc, time::SystemTime};

use futures::stream::BoxStream;

/// One event. Identity: (`tenant`, `source`, `id`).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub tenant: Arc<str>,
    pub source: String,
    pub id: String,
    pub event_type: String,
    pub subject: String,
    pub time: SystemTime,
    pub datacontenttype: String,
    /// `data`, JSON.
    pub data: serde_json::Value,
}

/// A bus operation that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the event bus is unavailable: {message}")]
pub struct BusError {
    pub message: String,
}

impl BusError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    New,
    /// The bus already had an event with this identity.
    Duplicate,
}

/// Tells the bus a delivery was processed (or not).
#[async_trait::async_trait]
pub trait Acker: Send + 'static {
    /// Processed: the bus does not deliver it again.
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    /// Not processed (a transient failure): the bus delivers it again later.
    async fn nack(self: Box<Self>) -> Result<(), BusError>;
}

/// One event handed to this replica's router; exactly one replica gets each delivery.
pub struct Delivery {
    pub event: CloudEvent,
    /// How many times this event has been delivered, this one included (1 the first time).
    pub attempt: u64,
    pub acker: Box<dyn Acker>,
}

/// Where events are published and from where they are routed.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes an event; returns once the bus holds it durably.
    async fn publish(&self, event: &CloudEvent) -> Result<Published, BusError>;

    /// The deliveries this replica must route (competing consumers: each event goes to one
    /// replica; unacknowledged ones are delivered again). Called once, by the router.
    async fn deliveries(&self) -> Result<BoxStream<'static, Delivery>, BusError>;

    /// Every event published from now on, on any replica (for SubscribeEvents). Lossy for a
    /// subscriber that falls behind: it is told how many it missed.
    async fn subscribe(&self) -> Result<BoxStream<'static, Live>, BusError>;
}

/// What a live subscription yields.
#[derive(Debug, Clone)]
pub enum Live {
    Event(Arc<CloudEvent>),
    /// The subscriber fell behind and this many events were dropped for it.
    Lagged(u64),
}

/// A durable execution's `wait_for` step, as registered.
pub struct WaitRegistration {
    pub execution_id: Arc<str>,
    pub step_id: Arc<str>,
    pub tenant: Arc<str>,
    pub pattern_name: Arc<str>,
    pub pattern_version: Arc<str>,
    pub plan: Arc<nexus_core::plan::WaitPlan>,
    /// What the matches read besides the event: `{input, steps}` (JSON), see [`crate::waits`].
    pub context: serde_json::Value,
    /// Per branch: the correlation value as canonical JSON, when the branch has one.
    pub correlations: Vec<Option<String>>,
    pub deadline: SystemTime,
}

/// What the engine asks of the events side of the server: publishing emitted events, and the
/// waits of durable executions (kept in the store).
#[async_trait::async_trait]
pub trait EventHub: Send + Sync + 'static {
    /// Publishes an event an `emit` step built; returns once the bus holds it.
    async fn emit(&self, event: CloudEvent) -> Result<Published, BusError>;

    /// Registers a wait (every branch), then matches it against the events of the lookback
    /// window. Returns the step's journaled result when one of them resolved it at once.
    async fn register_wait(&self, wait: &WaitRegistration) -> Result<Option<String>, crate::JournalError>;

    /// Parks an execution with only waits left: it leaves memory, and whoever resolves one of its
    /// waits resumes it. False when a wait resolved meanwhile (its result is journaled).
    async fn park(&self, execution_id: &str) -> Result<bool, crate::JournalError>;

    /// A step's journaled result, if any (a wait another replica resolved).
    async fn journaled(&self, execution_id: &str, step_id: &str) -> Result<Option<String>, crate::JournalError>;
}

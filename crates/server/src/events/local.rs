//! The in-process bus (embedded mode): events are recorded in the store when published (that is
//! the de-duplication by identity, and what survives a restart), routed by this process, and
//! broadcast to its live subscribers. Events recorded but not processed before a stop are routed
//! again at start.

use std::sync::Arc;

use futures::{StreamExt, stream::BoxStream};
use nexus_engine::{Acker, BusError, CloudEvent, Delivery, EventBus, Live, Published};
use nexus_store::{EventRecorded, EventStore};
use tokio::sync::{broadcast, mpsc};

use super::stored;

/// Deliveries queued for the router; a publisher waits when it is full (backpressure).
const QUEUE: usize = 4096;
/// Live events kept for a slow subscriber before it lags.
const LIVE: usize = 1024;
/// Unprocessed events read back at start, at most.
const RECOVER: u32 = 100_000;

pub struct InProcessBus {
    store: Arc<dyn EventStore>,
    queue: mpsc::Sender<Delivery>,
    pending: std::sync::Mutex<Option<mpsc::Receiver<Delivery>>>,
    live: broadcast::Sender<Arc<CloudEvent>>,
}

impl InProcessBus {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let (live, _) = broadcast::channel(LIVE);
        Self { store, queue, pending: std::sync::Mutex::new(Some(rx)), live }
    }
}

/// Nothing to tell: the router marks the event processed in the store itself. A nack puts it
/// back in the queue after a pause.
struct Requeue {
    delivery: Option<(CloudEvent, u64)>,
    queue: mpsc::Sender<Delivery>,
}

#[async_trait::async_trait]
impl Acker for Requeue {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        Ok(())
    }

    async fn nack(mut self: Box<Self>) -> Result<(), BusError> {
        let Some((event, attempt)) = self.delivery.take() else { return Ok(()) };
        let queue = self.queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let acker = Box::new(Requeue { delivery: Some((event.clone(), attempt + 1)), queue: queue.clone() });
            let _ = queue.send(Delivery { event, attempt: attempt + 1, acker }).await;
        });
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &CloudEvent) -> Result<Published, BusError> {
        let recorded = self.store.record_event(&stored(event)).await.map_err(|e| BusError::new(e.to_string()))?;
        if recorded != EventRecorded::New {
            return Ok(Published::Duplicate);
        }
        let _ = self.live.send(Arc::new(event.clone()));
        let acker = Box::new(Requeue { delivery: Some((event.clone(), 1)), queue: self.queue.clone() });
        self.queue
            .send(Delivery { event: event.clone(), attempt: 1, acker })
            .await
            .map_err(|_| BusError::new("the event router stopped"))?;
        Ok(Published::New)
    }

    async fn deliveries(&self) -> Result<BoxStream<'static, Delivery>, BusError> {
        let rx = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| BusError::new("the deliveries of the in-process bus are taken already"))?;
        // What was recorded but not processed before the last stop goes first.
        let left = self.store.unprocessed_events(RECOVER).await.map_err(|e| BusError::new(e.to_string()))?;
        if !left.is_empty() {
            tracing::info!("routing {} event(s) recorded before the last stop and not processed", left.len());
        }
        let queue = self.queue.clone();
        let recovered = futures::stream::iter(left.into_iter().filter_map(move |s| {
            let event = super::from_stored(&s)?;
            let acker = Box::new(Requeue { delivery: Some((event.clone(), 2)), queue: queue.clone() });
            Some(Delivery { event, attempt: 2, acker })
        }));
        Ok(recovered.chain(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed())
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, Live>, BusError> {
        let rx = self.live.subscribe();
        Ok(tokio_stream::wrappers::BroadcastStream::new(rx)
            .map(|r| match r {
                Ok(e) => Live::Event(e),
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => Live::Lagged(n),
            })
            .boxed())
    }
}

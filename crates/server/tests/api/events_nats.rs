//! The NATS JetStream event bus against a real server (`NATS_URL`, default
//! `nats://127.0.0.1:4222`): publishing and duplicates, deliveries, nacks and redelivery, dead
//! letters, competing replicas, live subscriptions and malformed payloads. Each test has its own
//! stream, subjects and consumer (a uuid suffix) and deletes its stream at the end.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::{StreamExt, stream::BoxStream};
use nexus_engine::{CloudEvent, Delivery, EventBus, Live, Published};
use nexus_server::events::nats::{JetStreamBus, JetStreamOptions, decode, subject_token};
use serde_json::json;

/// Longest wait for any one delivery or message.
const WAIT: Duration = Duration::from_secs(5);

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Options of a stream, subjects and consumer no other test uses; short waits.
fn options() -> JetStreamOptions {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    JetStreamOptions {
        stream: format!("NEXUS_TEST_{unique}"),
        subject_prefix: format!("test.{unique}.events"),
        consumer: format!("router-{unique}"),
        dead_letter_prefix: format!("test.{unique}.dead"),
        max_deliver: 3,
        ack_wait: Duration::from_secs(1),
        nack_delay: Duration::from_millis(100),
        duplicate_window: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(2),
        ..JetStreamOptions::new(nats_url())
    }
}

/// A plain client, to do what the bus does not (raw publishes, dead letters, clean-up).
async fn raw_client() -> Result<async_nats::Client> {
    async_nats::connect(nats_url()).await.context("connecting to NATS")
}

async fn delete_stream(options: &JetStreamOptions) -> Result<()> {
    let jetstream = async_nats::jetstream::new(raw_client().await?);
    jetstream.delete_stream(&options.stream).await.map_err(|e| anyhow!("deleting stream {}: {e}", options.stream))?;
    Ok(())
}

fn event(tenant: &str, id: &str) -> CloudEvent {
    CloudEvent {
        tenant: Arc::from(tenant),
        source: "https://shop.example/orders".into(),
        id: id.into(),
        event_type: "com.example.order.created".into(),
        subject: format!("orders/{id}"),
        time: SystemTime::now(),
        datacontenttype: "application/json".into(),
        data: json!({"order": id, "total": 12.5}),
    }
}

async fn next_delivery(deliveries: &mut BoxStream<'static, Delivery>) -> Result<Delivery> {
    tokio::time::timeout(WAIT, deliveries.next())
        .await
        .context("no delivery in time")?
        .context("the delivery stream ended")
}

/// Fails if a delivery arrives within `how_long`.
async fn no_delivery(deliveries: &mut BoxStream<'static, Delivery>, how_long: Duration) -> Result<()> {
    if let Ok(Some(delivery)) = tokio::time::timeout(how_long, deliveries.next()).await {
        bail!("unexpected delivery of {} (attempt {})", delivery.event.id, delivery.attempt);
    }
    Ok(())
}

#[tokio::test]
async fn nats_publish_new_then_duplicate() -> Result<()> {
    let options = options();
    let bus = JetStreamBus::connect(options.clone()).await?;
    let first = event("acme", "1");
    ensure!(bus.publish(&first).await? == Published::New);
    ensure!(bus.publish(&first).await? == Published::Duplicate, "same event again");
    // The identity is (tenant, source, id): other data does not make another event...
    let mut changed = first.clone();
    changed.data = json!({"other": true});
    ensure!(bus.publish(&changed).await? == Published::Duplicate, "same identity, other data");
    // ...another tenant or source does.
    ensure!(bus.publish(&event("globex", "1")).await? == Published::New, "other tenant");
    let mut other_source = first.clone();
    other_source.source = "https://shop.example/orders/1".into();
    ensure!(bus.publish(&other_source).await? == Published::New, "other source");
    delete_stream(&options).await
}

#[tokio::test]
async fn nats_deliveries_get_every_published_event() -> Result<()> {
    let options = options();
    let bus = JetStreamBus::connect(options.clone()).await?;
    // Tenants and types that are not subject tokens as they are.
    let mut published = Vec::new();
    for i in 0..5 {
        let mut event = event(&format!("tenant.{i} *>"), &format!("e{i}"));
        event.event_type = format!("type with spaces.{i}");
        ensure!(bus.publish(&event).await? == Published::New);
        published.push(event);
    }
    let mut deliveries = bus.deliveries().await?;
    for expected in &published {
        let delivery = next_delivery(&mut deliveries).await?;
        ensure!(&delivery.event == expected, "{:?} != {expected:?}", delivery.event);
        ensure!(delivery.attempt == 1, "attempt {}", delivery.attempt);
        delivery.acker.ack().await?;
    }
    // Acknowledged: nothing comes back once ack_wait has passed.
    no_delivery(&mut deliveries, options.ack_wait + Duration::from_millis(500)).await?;
    delete_stream(&options).await
}

#[tokio::test]
async fn nats_nack_redelivers_with_the_next_attempt() -> Result<()> {
    let options = options();
    let bus = JetStreamBus::connect(options.clone()).await?;
    let published = event("acme", "n1");
    bus.publish(&published).await?;
    let mut deliveries = bus.deliveries().await?;
    let first = next_delivery(&mut deliveries).await?;
    ensure!(first.attempt == 1 && first.event == published);
    first.acker.nack().await?;
    let second = next_delivery(&mut deliveries).await?;
    ensure!(second.attempt == 2, "attempt {}", second.attempt);
    ensure!(second.event == published);
    second.acker.ack().await?;
    no_delivery(&mut deliveries, options.ack_wait + Duration::from_millis(500)).await?;
    delete_stream(&options).await
}

#[tokio::test]
async fn nats_dead_letter_after_max_deliver() -> Result<()> {
    let options = JetStreamOptions { max_deliver: 2, ..options() };
    let bus = JetStreamBus::connect(options.clone()).await?;
    let watcher = raw_client().await?;
    let mut dead = watcher.subscribe(format!("{}.>", options.dead_letter_prefix)).await?;
    watcher.flush().await?;

    let published = event("acme", "d1");
    bus.publish(&published).await?;
    let mut deliveries = bus.deliveries().await?;
    for attempt in 1..=2 {
        let delivery = next_delivery(&mut deliveries).await?;
        ensure!(delivery.attempt == attempt, "attempt {} != {attempt}", delivery.attempt);
        delivery.acker.nack().await?;
    }
    let letter = tokio::time::timeout(WAIT, dead.next()).await.context("no dead letter")?.context("ended")?;
    let expected_subject = format!(
        "{}.{}.{}",
        options.dead_letter_prefix,
        subject_token(&published.tenant),
        subject_token(&published.event_type)
    );
    ensure!(letter.subject.as_str() == expected_subject, "dead letter on {}", letter.subject);
    ensure!(decode(&letter.payload)? == published);
    let reason = letter.headers.as_ref().and_then(|h| h.get("Nexus-Dead-Reason")).context("no reason header")?;
    ensure!(reason.as_str().contains("2 deliveries"), "reason {reason:?}");
    // Terminated: never delivered again.
    no_delivery(&mut deliveries, options.ack_wait + Duration::from_millis(500)).await?;
    delete_stream(&options).await
}

#[tokio::test]
async fn nats_replicas_compete_for_deliveries() -> Result<()> {
    let options = options();
    let replicas = [JetStreamBus::connect(options.clone()).await?, JetStreamBus::connect(options.clone()).await?];
    const EVENTS: usize = 20;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (replica, bus) in replicas.iter().enumerate() {
        let mut deliveries = bus.deliveries().await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(delivery) = deliveries.next().await {
                let id = delivery.event.id.clone();
                let acked = delivery.acker.ack().await;
                if tx.send((replica, id, acked.map_err(|e| e.to_string()))).is_err() {
                    break;
                }
            }
        }));
    }
    for i in 0..EVENTS {
        replicas[i % 2].publish(&event("acme", &format!("c{i}"))).await?;
    }
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    let mut received = 0;
    // Every event once, then a little over ack_wait to catch a second delivery.
    let quiet = options.ack_wait + Duration::from_millis(500);
    loop {
        let wait = if received < EVENTS { WAIT } else { quiet };
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some((replica, id, acked))) => {
                acked.map_err(|e| anyhow!("ack of {id} on replica {replica}: {e}"))?;
                seen.entry(id).or_default().push(replica);
                received += 1;
            }
            Ok(None) => bail!("both delivery streams ended"),
            Err(_) if received < EVENTS => bail!("only {received} of {EVENTS} deliveries arrived"),
            Err(_) => break,
        }
    }
    for task in &tasks {
        task.abort();
    }
    ensure!(seen.len() == EVENTS, "{} distinct events of {EVENTS}", seen.len());
    let twice: Vec<_> = seen.iter().filter(|(_, replicas)| replicas.len() > 1).collect();
    ensure!(twice.is_empty(), "delivered more than once: {twice:?}");
    delete_stream(&options).await
}

#[tokio::test]
async fn nats_subscribe_sees_events_from_another_instance() -> Result<()> {
    let options = options();
    let watcher = JetStreamBus::connect(options.clone()).await?;
    let publisher = JetStreamBus::connect(options.clone()).await?;
    let mut live = watcher.subscribe().await?;
    // A live subscription is best effort from the moment the server has it, which can trail
    // `subscribe()` by a moment: warm up until one event arrives, then every later one must.
    let deadline = tokio::time::Instant::now() + WAIT;
    for n in 0.. {
        publisher.publish(&event("acme", &format!("warm-{n}"))).await?;
        if let Ok(Some(Live::Event(_))) = tokio::time::timeout(Duration::from_millis(100), live.next()).await {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "the subscription never saw an event");
    }
    let published = [event("acme", "l1"), event("globex", "l2")];
    for event in &published {
        publisher.publish(event).await?;
    }
    // Both arrive (after any late warm-up events); their order across subjects is not promised.
    let mut seen = Vec::new();
    while seen.len() < published.len() {
        match tokio::time::timeout(WAIT, live.next()).await.context("no live event")?.context("ended")? {
            Live::Event(event) if event.id.starts_with("warm-") => {}
            Live::Event(event) => seen.push((*event).clone()),
            Live::Lagged(n) => bail!("lagged {n}"),
        }
    }
    seen.sort_by(|a, b| a.id.cmp(&b.id));
    ensure!(seen == published, "{seen:?} != {published:?}");
    delete_stream(&options).await
}

#[tokio::test]
async fn nats_malformed_payload_does_not_break_deliveries() -> Result<()> {
    let options = options();
    let bus = JetStreamBus::connect(options.clone()).await?;
    let raw = raw_client().await?;
    let mut dead = raw.subscribe(format!("{}.>", options.dead_letter_prefix)).await?;
    raw.flush().await?;
    let mut live = bus.subscribe().await?;

    let jetstream = async_nats::jetstream::new(raw.clone());
    let bad_subject = format!("{}.acme.bad", options.subject_prefix);
    for payload in ["not json", r#"{"specversion":"1.0"}"#] {
        jetstream
            .publish(bad_subject.clone(), payload.into())
            .await
            .map_err(|e| anyhow!("raw publish: {e}"))?
            .await
            .map_err(|e| anyhow!("raw publish ack: {e}"))?;
    }
    let good = event("acme", "g1");
    bus.publish(&good).await?;

    let mut deliveries = bus.deliveries().await?;
    let delivery = next_delivery(&mut deliveries).await?;
    ensure!(delivery.event == good, "the first delivery is the good event: {:?}", delivery.event);
    delivery.acker.ack().await?;
    match tokio::time::timeout(WAIT, live.next()).await.context("no live event")?.context("ended")? {
        Live::Event(event) => ensure!(*event == good, "live skipped the malformed ones: {event:?}"),
        Live::Lagged(n) => bail!("lagged {n}"),
    }
    // Both malformed payloads went to the dead letters, with their tokens.
    for expected in ["not json", r#"{"specversion":"1.0"}"#] {
        let letter = tokio::time::timeout(WAIT, dead.next()).await.context("no dead letter")?.context("ended")?;
        ensure!(letter.subject.as_str() == format!("{}.acme.bad", options.dead_letter_prefix));
        ensure!(letter.payload == expected.as_bytes(), "payload {:?}", letter.payload);
    }
    no_delivery(&mut deliveries, options.ack_wait + Duration::from_millis(500)).await?;
    delete_stream(&options).await
}

#[tokio::test]
async fn nats_connect_failure_names_the_url() -> Result<()> {
    let options =
        JetStreamOptions { connect_timeout: Duration::from_millis(500), ..JetStreamOptions::new("nats://127.0.0.1:1") };
    match JetStreamBus::connect(options).await {
        Ok(_) => bail!("connected to nothing"),
        Err(e) => ensure!(e.message.contains("nats://127.0.0.1:1"), "{e}"),
    }
    Ok(())
}

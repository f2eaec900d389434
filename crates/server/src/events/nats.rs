//! [`EventBus`] over NATS JetStream, for a cluster of Nexus replicas: events are stored in one
//! stream, routed through one durable pull consumer shared by every replica (competing
//! consumers), and watched live through a core NATS subscription (every replica sees every event).
//!
//! Wire format:
//! - **Subject**: `<subject prefix>.<tenant token>.<type token>`, each token made by
//!   [`subject_token`] (letters, digits, `-` and `_` kept; every other byte of the UTF-8 text
//!   percent-encoded, so `.`, `*`, `>` and whitespace never reach the subject; the empty string is
//!   `%`). The encoding is reversible ([`subject_token_text`]), but nothing reads the subject back:
//!   the payload carries the whole event.
//! - **Payload**: the event in CloudEvents JSON structured mode ([`encode`], [`decode`]), the
//!   tenant in the extension attribute `nexustenant`.
//! - **`Nats-Msg-Id`**: [`message_id`] of the event's identity (tenant, `source`, `id`), so the
//!   stream drops a re-publication inside its duplicate window ([`Published::Duplicate`]).
//!
//! A delivery that is nacked once it has been delivered `max_deliver` times, or whose payload
//! does not decode, is copied to `<dead-letter prefix>.<the same tokens>` (core NATS: operators
//! who want to keep dead letters give that prefix a stream of their own) and terminated.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_nats::{
    Client, HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, PullConsumer, pull},
        message::PublishMessage,
        stream::{self, StorageType},
    },
};
use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};
use nexus_engine::{Acker, BusError, CloudEvent, Delivery, EventBus, Live, Published};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};

/// Where the bus is and how its stream and consumer are set up.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// The NATS server(s), e.g. `nats://127.0.0.1:4222` (comma-separated for several).
    pub url: String,
    /// The JetStream stream holding the events.
    pub stream: String,
    /// Events are published on `<subject_prefix>.<tenant>.<type>`; the stream takes
    /// `<subject_prefix>.>`.
    pub subject_prefix: String,
    /// The durable pull consumer every replica shares.
    pub consumer: String,
    /// Deliveries of one event before a nack sends it to the dead letters.
    pub max_deliver: u64,
    /// How long a delivery may stay unacknowledged before the server delivers it again.
    pub ack_wait: Duration,
    /// How long a nacked delivery waits before it is delivered again.
    pub nack_delay: Duration,
    /// Dead letters are published on `<dead_letter_prefix>.<tenant>.<type>`.
    pub dead_letter_prefix: String,
    /// How long the stream remembers a `Nats-Msg-Id` to drop duplicates.
    pub duplicate_window: Duration,
    /// The longest wait for the first connection.
    pub connect_timeout: Duration,
}

impl JetStreamOptions {
    /// The defaults with this server URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "NEXUS_EVENTS".into(),
            subject_prefix: "nexus.events".into(),
            consumer: "nexus-router".into(),
            max_deliver: 10,
            ack_wait: Duration::from_secs(30),
            nack_delay: Duration::from_secs(1),
            dead_letter_prefix: "nexus.dead".into(),
            duplicate_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Refuses settings NATS would refuse later (or accept with surprising results), naming the
    /// field.
    fn validate(&self) -> Result<(), BusError> {
        let invalid = |field: &str, why: &str| Err(BusError::new(format!("NATS option `{field}` {why}")));
        if !is_valid_name(&self.stream) {
            return invalid("stream", "must be a non-empty name without '.', '*', '>', '/', '\\' or whitespace");
        }
        if !is_valid_name(&self.consumer) {
            return invalid("consumer", "must be a non-empty name without '.', '*', '>', '/', '\\' or whitespace");
        }
        if !is_literal_subject(&self.subject_prefix) {
            return invalid("subject_prefix", "must be a subject without wildcards or empty tokens");
        }
        if !is_literal_subject(&self.dead_letter_prefix) {
            return invalid("dead_letter_prefix", "must be a subject without wildcards or empty tokens");
        }
        if self.dead_letter_prefix == self.subject_prefix
            || self.dead_letter_prefix.starts_with(&format!("{}.", self.subject_prefix))
        {
            return invalid(
                "dead_letter_prefix",
                "must not be inside `subject_prefix` (dead letters would be routed again)",
            );
        }
        if self.max_deliver == 0 || i64::try_from(self.max_deliver).is_err() {
            return invalid("max_deliver", "must be at least 1");
        }
        if self.ack_wait.is_zero() {
            return invalid("ack_wait", "must be positive");
        }
        Ok(())
    }
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        Self::new("nats://127.0.0.1:4222")
    }
}

/// The event bus over NATS JetStream. Cheap to share behind an `Arc`; the connection reconnects
/// by itself.
pub struct JetStreamBus {
    client: Client,
    jetstream: jetstream::Context,
    consumer: PullConsumer,
    options: Arc<JetStreamOptions>,
}

impl std::fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBus").field("options", &self.options).finish_non_exhaustive()
    }
}

impl JetStreamBus {
    /// Connects, then creates the stream and the durable consumer unless they exist.
    ///
    /// An existing stream or consumer is used as it is (another replica may have created it); a
    /// difference from `options` that matters is logged.
    pub async fn connect(options: JetStreamOptions) -> Result<Self, BusError> {
        options.validate()?;
        let url = options.url.clone();
        let client = async_nats::ConnectOptions::new()
            .name("nexus")
            .connection_timeout(options.connect_timeout)
            .event_callback(move |event| {
                let url = url.clone();
                async move { log_connection_event(&url, event) }
            })
            .connect(options.url.as_str())
            .await
            .map_err(|e| BusError::new(format!("connecting to NATS at {}: {e}", options.url)))?;
        let jetstream = jetstream::new(client.clone());

        let stream_subjects = format!("{}.>", options.subject_prefix);
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: options.stream.clone(),
                subjects: vec![stream_subjects.clone()],
                storage: StorageType::File,
                duplicate_window: options.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                BusError::new(format!(
                    "creating or getting stream {} (subjects {stream_subjects}) at {}: {e}",
                    options.stream, options.url
                ))
            })?;
        let existing = &stream.cached_info().config;
        if !existing.subjects.contains(&stream_subjects) {
            tracing::warn!(
                stream = %options.stream, subjects = ?existing.subjects, expected = %stream_subjects,
                "the existing event stream does not take the configured subjects; publishing may fail"
            );
        }

        // `max_deliver` fits an i64: checked by `validate`.
        let max_deliver = i64::try_from(options.max_deliver).unwrap_or(i64::MAX);
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &options.consumer,
                pull::Config {
                    durable_name: Some(options.consumer.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: options.ack_wait,
                    max_deliver,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                BusError::new(format!(
                    "creating or getting durable consumer {} on stream {} at {}: {e}",
                    options.consumer, options.stream, options.url
                ))
            })?;
        let existing = &consumer.cached_info().config;
        if existing.max_deliver != max_deliver || existing.ack_wait != options.ack_wait {
            tracing::warn!(
                consumer = %options.consumer, stream = %options.stream,
                max_deliver = existing.max_deliver, ack_wait = ?existing.ack_wait,
                configured_max_deliver = max_deliver, configured_ack_wait = ?options.ack_wait,
                "the existing event consumer has other delivery settings; they stay in force"
            );
        }

        Ok(Self { client, jetstream, consumer, options: Arc::new(options) })
    }

    /// The subject an event is published on.
    pub fn subject_of(&self, event: &CloudEvent) -> String {
        event_subject(&self.options.subject_prefix, event)
    }
}

#[async_trait::async_trait]
impl EventBus for JetStreamBus {
    async fn publish(&self, event: &CloudEvent) -> Result<Published, BusError> {
        let subject = self.subject_of(event);
        let payload = encode(event).map_err(|e| BusError::new(format!("encoding event {}: {e}", describe(event))))?;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            BusError::new(format!(
                "{what} event {} on {subject} (stream {} at {}): {e}",
                describe(event),
                self.options.stream,
                self.options.url
            ))
        };
        let ack = self
            .jetstream
            .send_publish(
                subject.clone(),
                PublishMessage::build().payload(payload.into()).message_id(message_id(event)),
            )
            .await
            .map_err(|e| failed("publishing", &e))?
            .await
            .map_err(|e| failed("waiting for the acknowledgement of", &e))?;
        Ok(if ack.duplicate { Published::Duplicate } else { Published::New })
    }

    async fn deliveries(&self) -> Result<BoxStream<'static, Delivery>, BusError> {
        let messages = self.consumer.messages().await.map_err(|e| {
            BusError::new(format!(
                "pulling from consumer {} on stream {} at {}: {e}",
                self.options.consumer, self.options.stream, self.options.url
            ))
        })?;
        let state = DeliveryState { messages, client: self.client.clone(), options: self.options.clone() };
        Ok(futures::stream::unfold(state, |mut state| async move {
            let delivery = state.next().await?;
            Some((delivery, state))
        })
        .boxed())
    }

    /// Every event published on the bus's subjects from now on, by any replica.
    ///
    /// Never yields [`Live::Lagged`]: a subscriber that falls behind is handled by the NATS
    /// client, which drops messages once the subscription's buffer is full and reports a slow
    /// consumer (logged as a warning) without saying how many were dropped.
    async fn subscribe(&self) -> Result<BoxStream<'static, Live>, BusError> {
        let subject = format!("{}.>", self.options.subject_prefix);
        let failed =
            |e: &dyn std::fmt::Display| BusError::new(format!("subscribing to {subject} at {}: {e}", self.options.url));
        let subscriber = self.client.subscribe(subject.clone()).await.map_err(|e| failed(&e))?;
        // Once the server has the subscription, "from now on" holds for events published through
        // any other connection.
        self.client.flush().await.map_err(|e| failed(&e))?;
        Ok(subscriber
            .filter_map(|message| async move {
                match decode(&message.payload) {
                    Ok(event) => Some(Live::Event(Arc::new(event))),
                    Err(e) => {
                        tracing::warn!(subject = %message.subject, error = %e, "skipping an undecodable event");
                        None
                    }
                }
            })
            .boxed())
    }
}

/// The state of one `deliveries()` stream.
struct DeliveryState {
    messages: pull::Stream,
    client: Client,
    options: Arc<JetStreamOptions>,
}

impl DeliveryState {
    /// The next delivery: malformed payloads are dead-lettered on the way, transient errors are
    /// logged and waited out; `None` only when the consumer is gone for good.
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let message = match self.messages.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    use async_nats::jetstream::consumer::pull::MessagesErrorKind as Kind;
                    if matches!(e.kind(), Kind::ConsumerDeleted | Kind::PushBasedConsumer) {
                        tracing::error!(
                            consumer = %self.options.consumer, stream = %self.options.stream, error = %e,
                            "event deliveries stopped: the consumer can no longer be pulled from"
                        );
                        return None;
                    }
                    // Missed heartbeats and failed pulls (a reconnect, JetStream restarting): the
                    // pull stream issues new requests by itself; the pause keeps a lasting outage
                    // from flooding the log.
                    tracing::warn!(
                        consumer = %self.options.consumer, stream = %self.options.stream, error = %e,
                        "pulling events failed; retrying"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                None => {
                    tracing::error!(
                        consumer = %self.options.consumer, stream = %self.options.stream,
                        "event deliveries stopped: the NATS connection is closed"
                    );
                    return None;
                }
            };
            let (attempt, sequence) = match message.info() {
                Ok(info) => (u64::try_from(info.delivered).unwrap_or(1).max(1), info.stream_sequence),
                Err(e) => {
                    tracing::warn!(subject = %message.subject, error = %e, "a delivery without JetStream metadata");
                    (1, 0)
                }
            };
            let (message, acker) = message.split();
            let letter = DeadLetter {
                client: self.client.clone(),
                subject: dead_letter_subject(&self.options, &message.subject),
                payload: message.payload.clone(),
                headers: message.headers.clone(),
                sequence,
            };
            match decode(&message.payload) {
                Ok(event) => {
                    let acker = NatsAcker {
                        acker,
                        attempt,
                        max_deliver: self.options.max_deliver,
                        nack_delay: self.options.nack_delay,
                        letter,
                    };
                    return Some(Delivery { event, attempt, acker: Box::new(acker) });
                }
                Err(e) => {
                    tracing::warn!(
                        subject = %message.subject, sequence, error = %e,
                        dead_letter = %letter.subject, "an undecodable event goes to the dead letters"
                    );
                    let reason = format!("malformed payload: {e}");
                    if let Err(e) = letter.send(&reason).await {
                        // Left unacknowledged: the server delivers it again after `ack_wait`,
                        // and the next attempt to dead-letter it may succeed.
                        tracing::warn!(subject = %message.subject, error = %e, "dead-lettering failed");
                        continue;
                    }
                    if let Err(e) = acker.double_ack_with(AckKind::Term).await {
                        tracing::warn!(subject = %message.subject, error = %e, "terminating a dead letter failed");
                    }
                }
            }
        }
    }
}

/// A copy of a delivery for the dead letters.
struct DeadLetter {
    client: Client,
    subject: String,
    payload: Bytes,
    headers: Option<HeaderMap>,
    sequence: u64,
}

impl DeadLetter {
    /// Publishes the copy (the original headers, `Nats-Msg-Id` included, plus why and where from)
    /// and waits until the server has it.
    async fn send(&self, reason: &str) -> Result<(), BusError> {
        let mut headers = self.headers.clone().unwrap_or_default();
        headers.insert("Nexus-Dead-Reason", header_text(reason));
        headers.insert("Nexus-Stream-Sequence", self.sequence.to_string());
        let failed =
            |e: &dyn std::fmt::Display| BusError::new(format!("publishing a dead letter on {}: {e}", self.subject));
        self.client
            .publish_with_headers(self.subject.clone(), headers, self.payload.clone())
            .await
            .map_err(|e| failed(&e))?;
        self.client.flush().await.map_err(|e| failed(&e))
    }
}

struct NatsAcker {
    acker: jetstream::message::Acker,
    attempt: u64,
    max_deliver: u64,
    nack_delay: Duration,
    letter: DeadLetter,
}

#[async_trait::async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        // A double ack: the server confirms, so an acknowledged event is not delivered again.
        self.acker
            .double_ack()
            .await
            .map_err(|e| BusError::new(format!("acknowledging a delivery from {}: {e}", self.letter.subject)))
    }

    async fn nack(self: Box<Self>) -> Result<(), BusError> {
        if self.attempt < self.max_deliver {
            return self
                .acker
                .ack_with(AckKind::Nak(Some(self.nack_delay)))
                .await
                .map_err(|e| BusError::new(format!("nacking a delivery: {e}")));
        }
        // The server would not deliver it again: keep it in the dead letters before letting go.
        tracing::warn!(
            dead_letter = %self.letter.subject, attempts = self.attempt, sequence = self.letter.sequence,
            "an event failed on every delivery; it goes to the dead letters"
        );
        self.letter.send(&format!("not processed after {} deliveries", self.attempt)).await?;
        self.acker
            .double_ack_with(AckKind::Term)
            .await
            .map_err(|e| BusError::new(format!("terminating a dead-lettered delivery: {e}")))
    }
}

fn log_connection_event(url: &str, event: async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Connected => tracing::info!(url, "connected to NATS"),
        Event::Disconnected => tracing::warn!(url, "disconnected from NATS; reconnecting"),
        Event::SlowConsumer(sid) => {
            tracing::warn!(url, sid, "a NATS subscriber fell behind; messages were dropped for it")
        }
        Event::Closed => tracing::warn!(url, "the NATS connection is closed"),
        other => tracing::warn!(url, event = %other, "NATS connection event"),
    }
}

// ---------------------------------------------------------------------------------------------
// Subjects and identities.

/// Bytes kept as they are in subject tokens and message ids; every other byte is percent-encoded.
const TOKEN: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// A text as one subject token: letters, digits, `-` and `_` kept, every other byte of its UTF-8
/// percent-encoded (`a.b c` → `a%2Eb%20c`), the empty text `%` (no encoding produces a lone `%`).
pub fn subject_token(text: &str) -> String {
    if text.is_empty() { "%".to_owned() } else { utf8_percent_encode(text, TOKEN).to_string() }
}

/// The text a [`subject_token`] was made from; `None` if it is not one.
pub fn subject_token_text(token: &str) -> Option<String> {
    if token == "%" {
        return Some(String::new());
    }
    let text = percent_decode_str(token).decode_utf8().ok()?.into_owned();
    (subject_token(&text) == token).then_some(text)
}

/// `<prefix>.<tenant token>.<type token>`.
fn event_subject(prefix: &str, event: &CloudEvent) -> String {
    format!("{prefix}.{}.{}", subject_token(&event.tenant), subject_token(&event.event_type))
}

/// The `Nats-Msg-Id` of an event: its identity (tenant, `source`, `id`) as three
/// [`subject_token`]s joined by `/` (which a token never contains, so different identities never
/// share an id).
pub fn message_id(event: &CloudEvent) -> String {
    format!("{}/{}/{}", subject_token(&event.tenant), subject_token(&event.source), subject_token(&event.id))
}

/// The dead-letter subject of a delivery: its subject with the events' prefix replaced.
fn dead_letter_subject(options: &JetStreamOptions, subject: &str) -> String {
    match subject.strip_prefix(options.subject_prefix.as_str()).filter(|rest| rest.starts_with('.')) {
        Some(rest) => format!("{}{rest}", options.dead_letter_prefix),
        None => format!("{}.{subject}", options.dead_letter_prefix),
    }
}

/// `tenant/source/id`, for messages.
fn describe(event: &CloudEvent) -> String {
    format!("{}/{}/{}", event.tenant, event.source, event.id)
}

/// Text safe in a header value: control characters (CR and LF above all) become spaces, and the
/// whole is cut at 256 bytes.
fn header_text(text: &str) -> String {
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > 256 {
        let mut end = 256;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// A stream or consumer name NATS accepts.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
}

/// A subject without wildcards, whitespace or empty tokens.
fn is_literal_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject
            .split('.')
            .all(|token| !token.is_empty() && token != "*" && token != ">" && !token.chars().any(char::is_whitespace))
}

// ---------------------------------------------------------------------------------------------
// The payload: CloudEvents JSON structured mode.

/// Why a payload is not an event.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(String);

/// The CloudEvents attributes as written.
#[derive(Serialize)]
struct WireOut<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    subject: &'a str,
    time: String,
    datacontenttype: &'a str,
    data: &'a serde_json::Value,
    nexustenant: &'a str,
}

/// The CloudEvents attributes as read: `subject`, `datacontenttype` and `data` are optional (as
/// in the specification); `time` and `nexustenant` are not (Nexus always writes them).
#[derive(Deserialize)]
struct WireIn {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    subject: String,
    time: String,
    #[serde(default = "json_content_type")]
    datacontenttype: String,
    #[serde(default)]
    data: serde_json::Value,
    nexustenant: String,
}

fn json_content_type() -> String {
    "application/json".to_owned()
}

/// The event as a CloudEvents JSON document (`time` in RFC 3339, UTC, with as many fractional
/// digits as it needs).
pub fn encode(event: &CloudEvent) -> Result<Vec<u8>, PayloadError> {
    let time = chrono::DateTime::<chrono::Utc>::from(event.time).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    serde_json::to_vec(&WireOut {
        specversion: "1.0",
        id: &event.id,
        source: &event.source,
        event_type: &event.event_type,
        subject: &event.subject,
        time,
        datacontenttype: &event.datacontenttype,
        data: &event.data,
        nexustenant: &event.tenant,
    })
    .map_err(|e| PayloadError(e.to_string()))
}

/// The event in a CloudEvents JSON document.
pub fn decode(payload: &[u8]) -> Result<CloudEvent, PayloadError> {
    let wire: WireIn =
        serde_json::from_slice(payload).map_err(|e| PayloadError(format!("not a CloudEvents JSON event: {e}")))?;
    if wire.specversion != "1.0" {
        return Err(PayloadError(format!("specversion {:?} is not 1.0", wire.specversion)));
    }
    for (name, value) in [("id", &wire.id), ("source", &wire.source), ("type", &wire.event_type)] {
        if value.is_empty() {
            return Err(PayloadError(format!("`{name}` is empty")));
        }
    }
    let time = chrono::DateTime::parse_from_rfc3339(&wire.time)
        .map_err(|e| PayloadError(format!("time {:?} is not RFC 3339: {e}", wire.time)))?;
    Ok(CloudEvent {
        tenant: Arc::from(wire.nexustenant),
        source: wire.source,
        id: wire.id,
        event_type: wire.event_type,
        subject: wire.subject,
        time: SystemTime::from(time),
        datacontenttype: wire.datacontenttype,
        data: wire.data,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event() -> CloudEvent {
        CloudEvent {
            tenant: Arc::from("acme"),
            source: "https://shop.example/orders".into(),
            id: "42".into(),
            event_type: "com.example.order.created".into(),
            subject: "orders/42".into(),
            time: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            datacontenttype: "application/json".into(),
            data: json!({"total": 12.5, "items": ["a", "b"]}),
        }
    }

    #[test]
    fn encode_writes_structured_mode() {
        let payload = encode(&event()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            value,
            json!({
                "specversion": "1.0",
                "id": "42",
                "source": "https://shop.example/orders",
                "type": "com.example.order.created",
                "subject": "orders/42",
                "time": "2023-11-14T22:13:20.123456789Z",
                "datacontenttype": "application/json",
                "data": {"total": 12.5, "items": ["a", "b"]},
                "nexustenant": "acme",
            })
        );
    }

    #[test]
    fn decode_inverts_encode() {
        let mut whole_seconds = event();
        whole_seconds.time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        whole_seconds.subject = String::new();
        for event in [event(), whole_seconds] {
            assert_eq!(decode(&encode(&event).unwrap()).unwrap(), event);
        }
    }

    #[test]
    fn decode_applies_the_specification_defaults_and_any_offset() {
        let payload = br#"{"specversion":"1.0","id":"1","source":"s","type":"t",
            "time":"2023-11-14T23:13:20+01:00","nexustenant":"acme"}"#;
        let event = decode(payload).unwrap();
        assert_eq!(event.subject, "");
        assert_eq!(event.datacontenttype, "application/json");
        assert_eq!(event.data, serde_json::Value::Null);
        assert_eq!(event.time, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    }

    #[test]
    fn decode_refuses_what_is_not_an_event() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "not a CloudEvents JSON event"),
            (b"\xff\xfe garbage", "not a CloudEvents JSON event"),
            (br#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"2023-11-14T22:13:20Z"}"#, "nexustenant"),
            (
                br#"{"specversion":"0.3","id":"1","source":"s","type":"t","time":"2023-11-14T22:13:20Z","nexustenant":"a"}"#,
                "specversion \"0.3\" is not 1.0",
            ),
            (
                br#"{"specversion":"1.0","id":"","source":"s","type":"t","time":"2023-11-14T22:13:20Z","nexustenant":"a"}"#,
                "`id` is empty",
            ),
            (
                br#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"yesterday","nexustenant":"a"}"#,
                "not RFC 3339",
            ),
        ];
        for (payload, expected) in cases {
            let error = decode(payload).unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        }
    }

    #[test]
    fn subject_tokens_are_valid_and_reversible() {
        for (text, token) in [
            ("acme", "acme"),
            ("com.example.order.created", "com%2Eexample%2Eorder%2Ecreated"),
            ("a b\t*>", "a%20b%09%2A%3E"),
            ("my-tenant_1", "my-tenant_1"),
            ("100%", "100%25"),
            ("é", "%C3%A9"),
            ("", "%"),
        ] {
            assert_eq!(subject_token(text), token);
            assert_eq!(subject_token_text(token).as_deref(), Some(text));
        }
        assert_eq!(subject_token_text("a.b"), None);
        assert_eq!(subject_token_text("%FF"), None);
        assert_eq!(event_subject("nexus.events", &event()), "nexus.events.acme.com%2Eexample%2Eorder%2Ecreated");
    }

    #[test]
    fn message_ids_tell_identities_apart() {
        let a = event();
        let mut b = event();
        b.source = "https://shop.example/orders/42".into();
        b.id = String::new();
        assert_ne!(message_id(&a), message_id(&b));
        assert_eq!(message_id(&a), "acme/https%3A%2F%2Fshop%2Eexample%2Forders/42");
    }

    #[test]
    fn dead_letters_keep_the_tokens() {
        let options = JetStreamOptions::default();
        assert_eq!(dead_letter_subject(&options, "nexus.events.acme.t"), "nexus.dead.acme.t");
        assert_eq!(dead_letter_subject(&options, "nexus.eventsx.t"), "nexus.dead.nexus.eventsx.t");
    }

    #[test]
    fn options_are_validated_by_name() {
        assert!(JetStreamOptions::default().validate().is_ok());
        let cases = [
            (JetStreamOptions { subject_prefix: "nexus.*".into(), ..Default::default() }, "`subject_prefix`"),
            (
                JetStreamOptions { dead_letter_prefix: "nexus.events.dead".into(), ..Default::default() },
                "`dead_letter_prefix`",
            ),
            (JetStreamOptions { stream: "a.b".into(), ..Default::default() }, "`stream`"),
            (JetStreamOptions { consumer: "".into(), ..Default::default() }, "`consumer`"),
            (JetStreamOptions { max_deliver: 0, ..Default::default() }, "`max_deliver`"),
        ];
        for (options, field) in cases {
            let error = options.validate().unwrap_err().message;
            assert!(error.contains(field), "{error:?} should name {field}");
        }
    }

    #[test]
    fn header_text_is_one_bounded_line() {
        assert_eq!(header_text("a\r\nb"), "a  b");
        assert_eq!(header_text(&"é".repeat(200)).len(), 256);
    }
}

//! The CloudEvents HTTP binding, `POST /events`, so webhooks can publish events (and so trigger
//! patterns and resume waits) without speaking gRPC. Served on the one port, over HTTP/1.1 and
//! h2c, next to the gRPC routes.
//!
//! Three content modes (CloudEvents 1.0 HTTP protocol binding):
//! - structured: `Content-Type: application/cloudevents+json`, the whole event as a JSON object;
//! - binary: `Content-Type: application/json`, the attributes in `ce-*` headers, the body is `data`;
//! - batch: `Content-Type: application/cloudevents-batch+json`, a JSON array of structured events
//!   (at most [`MAX_BATCH`]); every event is checked before any is published.
//!
//! The caller is authenticated by the same [`Authenticator`] as every gRPC call and needs the
//! role `runner` (or `admin`), like PublishEvent; a refusal of the role is audited by the same
//! access module. The event's tenant is the caller's. Publishing goes through
//! [`EventRouter::publish`] after [`crate::events::validate`], so an event is idempotent by
//! (`source`, `id`) whichever way it arrives.
//!
//! Answers: 202 with `{"id", "source", "duplicate"}` (a list for a batch); 400 for any invalid
//! event, 401/403 for credentials and roles, 405 for another method, 413 beyond
//! [`MAX_BODY_BYTES`] (the body is read bounded: never more than the limit is buffered), 415 for
//! another content type, 503 when the bus is unavailable. Every error body is
//! `{"error": "…"}`, naming the field or header at fault.

use std::{sync::Arc, time::SystemTime};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use nexus_engine::{CloudEvent, Published};
use serde_json::{Map, Value, json};

use crate::{
    api::access::{Access, Asking, RUN},
    auth::{Authenticator, Principal},
    error::ApiError,
    events::router::EventRouter,
};

/// The path of the endpoint.
pub const PATH: &str = "/events";
/// Largest request body accepted (one event, or a whole batch).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most events in one batch.
pub const MAX_BATCH: usize = 100;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";
const BINARY: &str = "application/json";

/// What the endpoint needs: who is calling, whether they may, and where events go.
pub struct Endpoint {
    auth: Arc<Authenticator>,
    access: Access,
    events: Arc<EventRouter>,
}

impl Endpoint {
    pub fn new(auth: Arc<Authenticator>, access: Access, events: Arc<EventRouter>) -> Self {
        Self { auth, access, events }
    }
}

/// The axum handler of `PATH` (every method: the others answer 405 here).
pub async fn handle(State(endpoint): State<Arc<Endpoint>>, req: Request) -> Response {
    endpoint.serve(req).await.unwrap_or_else(IntoResponse::into_response)
}

/// How the request carries its event(s).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Structured,
    Binary,
    Batch,
}

impl Endpoint {
    async fn serve(&self, req: Request) -> Result<Response, Refused> {
        if req.method() != Method::POST {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} {PATH}: only POST is allowed", req.method()),
            ));
        }
        let caller = self.auth.authenticate(req.headers()).await.map_err(|e| {
            tracing::debug!(path = PATH, "refused: {e}");
            refusal(e)
        })?;
        let asking = Asking { caller: &caller, rpc: "POST /events" };
        self.access.require(asking, "events", RUN).map_err(refusal)?;
        let mode = mode_of(req.headers())?;
        let (parts, body) = req.into_parts();
        let body = read_bounded(body, &parts.headers).await?;
        let invalid = |m: String| error(StatusCode::BAD_REQUEST, m);
        match mode {
            Mode::Structured => {
                let json: Value = serde_json::from_slice(&body)
                    .map_err(|e| invalid(format!("body: not a JSON object (a structured CloudEvent): {e}")))?;
                let event = structured(json, &caller).map_err(invalid)?;
                self.access.publish(asking, &event.event_type).map_err(refusal)?;
                let published = self.publish(&event).await?;
                Ok(accepted(receipt(&event, published)))
            }
            Mode::Binary => {
                let event = binary(&parts.headers, &body, &caller).map_err(invalid)?;
                self.access.publish(asking, &event.event_type).map_err(refusal)?;
                let published = self.publish(&event).await?;
                Ok(accepted(receipt(&event, published)))
            }
            Mode::Batch => {
                let json: Value = serde_json::from_slice(&body)
                    .map_err(|e| invalid(format!("body: not a JSON array of CloudEvents: {e}")))?;
                let Value::Array(items) = json else {
                    return Err(invalid("body: a batch is a JSON array of CloudEvents".into()));
                };
                if items.len() > MAX_BATCH {
                    return Err(invalid(format!("body: {} events in the batch; at most {MAX_BATCH}", items.len())));
                }
                // Every event is checked before any is published: a 400 published nothing.
                let events = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| structured(item, &caller).map_err(|m| in_batch(i, &m)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                for event in &events {
                    self.access.publish(asking, &event.event_type).map_err(refusal)?;
                }
                let mut receipts = Vec::with_capacity(events.len());
                for (i, event) in events.iter().enumerate() {
                    let published = self.publish(event).await.map_err(|_| {
                        error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "events[{i}]: the event bus is unavailable; the events before it were published \
                                 (publishing the whole batch again is safe: events are idempotent by source and id)"
                            ),
                        )
                    })?;
                    receipts.push(receipt(event, published));
                }
                Ok(accepted(Value::Array(receipts)))
            }
        }
    }

    async fn publish(&self, event: &CloudEvent) -> Result<Published, Refused> {
        self.events.publish(event).await.map_err(|e| {
            tracing::warn!(event = %event.id, source = %event.source, "publishing an event from {PATH}: {e}");
            error(StatusCode::SERVICE_UNAVAILABLE, format!("the event bus is unavailable: {e}"))
        })
    }
}

/// The mode of a request, from its content type (parameters such as `charset` ignored).
fn mode_of(headers: &HeaderMap) -> Result<Mode, Refused> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match media.as_str() {
        STRUCTURED => Ok(Mode::Structured),
        BATCH => Ok(Mode::Batch),
        BINARY => Ok(Mode::Binary),
        _ => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-type: `{}` is not accepted: use {STRUCTURED} (structured), {BATCH} (batch), or {BINARY} \
                 with ce-* headers (binary)",
                content_type.escape_debug()
            ),
        )),
    }
}

/// The body, read to at most [`MAX_BODY_BYTES`]: a declared length beyond it is refused before
/// reading, and reading stops as soon as the limit is passed (chunked bodies included).
async fn read_bounded(body: Body, headers: &HeaderMap) -> Result<Bytes, Refused> {
    let too_large =
        || error(StatusCode::PAYLOAD_TOO_LARGE, format!("body: larger than the limit of {MAX_BODY_BYTES} bytes"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, format!("body: cannot be read: {e}"))),
    }
}

/// A structured event (a JSON object) in the caller's tenant. Messages name the attribute as
/// `event.<attribute>`, like [`crate::events::validate`]'s.
fn structured(json: Value, caller: &Principal) -> Result<CloudEvent, String> {
    let Value::Object(mut o) = json else {
        return Err("event: a CloudEvent is a JSON object".into());
    };
    // Attributes set to null are absent (CloudEvents JSON format).
    o.retain(|_, v| !v.is_null());
    match o.get("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(v) => return Err(format!("event.specversion: must be \"1.0\" (it is {})", short_json(v))),
        None => return Err("event.specversion: required (\"1.0\")".into()),
    }
    if o.contains_key("data_base64") {
        return Err("event.data_base64: binary data is not supported; send JSON in `data`".into());
    }
    let required = |o: &Map<String, Value>, name: &str| match o.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None => Err(format!("event.{name}: required")),
        Some(v) => Err(format!("event.{name}: must be a string (it is {})", short_json(v))),
    };
    let optional = |o: &Map<String, Value>, name: &str| match o.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None => Ok(String::new()),
        Some(v) => Err(format!("event.{name}: must be a string (it is {})", short_json(v))),
    };
    let time = optional(&o, "time")?;
    let datacontenttype = optional(&o, "datacontenttype")?;
    let event = CloudEvent {
        tenant: caller.tenant.clone(),
        id: required(&o, "id")?,
        source: required(&o, "source")?,
        event_type: required(&o, "type")?,
        subject: optional(&o, "subject")?,
        time: parse_time(&time).map_err(|m| format!("event.time: {m}"))?,
        datacontenttype: if datacontenttype.is_empty() { BINARY.into() } else { datacontenttype },
        data: o.remove("data").unwrap_or_else(|| json!({})),
    };
    crate::events::validate(&event)?;
    Ok(event)
}

/// A binary-mode event: attributes from the `ce-*` headers (percent-decoded, as the HTTP binding
/// encodes them), `data` from the JSON body. Messages name the header (or the body).
fn binary(headers: &HeaderMap, body: &[u8], caller: &Principal) -> Result<CloudEvent, String> {
    let header = |name: &str| -> Result<Option<String>, String> {
        let Some(v) = headers.get(name) else { return Ok(None) };
        let text = v.to_str().map_err(|_| format!("{name}: the header is not text"))?;
        let decoded = percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map_err(|_| format!("{name}: the header is not UTF-8 once percent-decoded"))?;
        Ok(Some(decoded.into_owned()))
    };
    let required = |name: &str, what: &str| match header(name)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("{name}: required header ({what})")),
    };
    match header("ce-specversion")?.as_deref() {
        Some("1.0") => {}
        Some(v) => return Err(format!("ce-specversion: must be 1.0 (it is `{}`)", v.escape_debug())),
        None => return Err("ce-specversion: required header (1.0)".into()),
    }
    let time = header("ce-time")?.unwrap_or_default();
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| format!("body: the event's data is not JSON: {e}"))?
    };
    let event = CloudEvent {
        tenant: caller.tenant.clone(),
        id: required("ce-id", "the event's id, unique within its source")?,
        source: required("ce-source", "where the event comes from, e.g. a URI")?,
        event_type: required("ce-type", "the event's type, e.g. user.created")?,
        subject: header("ce-subject")?.unwrap_or_default(),
        time: parse_time(&time).map_err(|m| format!("ce-time: {m}"))?,
        datacontenttype: BINARY.into(),
        data,
    };
    crate::events::validate(&event).map_err(|m| binary_names(&m))?;
    Ok(event)
}

/// An RFC 3339 time; now when absent.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    if text.is_empty() {
        return Ok(SystemTime::now());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(SystemTime::from)
        .map_err(|e| format!("`{}` is not an RFC 3339 time ({e})", text.escape_debug()))
}

/// [`crate::events::validate`]'s message with the attribute named as binary mode carries it.
fn binary_names(message: &str) -> String {
    let Some(rest) = message.strip_prefix("event.") else { return message.to_string() };
    let (field, tail) = rest.split_once(':').unwrap_or((rest, ""));
    let named = match field {
        "data" => "body".to_string(),
        "datacontenttype" => "content-type".to_string(),
        f => format!("ce-{f}"),
    };
    format!("{named}:{tail}")
}

/// A structured event's message inside a batch: `events[i].<attribute>: …`.
fn in_batch(index: usize, message: &str) -> String {
    match message.strip_prefix("event") {
        Some(rest) => format!("events[{index}]{rest}"),
        None => format!("events[{index}]: {message}"),
    }
}

fn receipt(event: &CloudEvent, published: Published) -> Value {
    json!({"id": event.id, "source": event.source, "duplicate": published == Published::Duplicate})
}

fn accepted(body: Value) -> Response {
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// A refused request: its status and the message of its `{"error": …}` body.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message }).to_string();
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        match self.status {
            StatusCode::METHOD_NOT_ALLOWED => {
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            StatusCode::UNAUTHORIZED => {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        r
    }
}

fn error(status: StatusCode, message: String) -> Refused {
    Refused { status, message }
}

/// An authentication or authorization refusal as HTTP.
fn refusal(e: ApiError) -> Refused {
    let status = match &e {
        ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        ApiError::Unavailable(_) | ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// At most 64 characters of a JSON value, for an error message.
fn short_json(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Principal {
        Principal::open()
    }

    #[test]
    fn a_structured_event_needs_its_attributes_and_names_the_missing_one() {
        let ok = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "user.created",
            "time": "2024-05-01T10:00:00Z", "subject": null, "data": {"a": 1}});
        let e = structured(ok.clone(), &caller()).expect("valid");
        assert_eq!((e.id.as_str(), e.event_type.as_str(), e.data["a"].as_i64()), ("1", "user.created", Some(1)));
        assert_eq!(e.datacontenttype, "application/json");
        let without = |k: &str| {
            let mut v = ok.clone();
            v.as_object_mut().map(|o| o.remove(k));
            structured(v, &caller()).err().unwrap_or_default()
        };
        assert!(without("type").starts_with("event.type:"), "{}", without("type"));
        assert!(without("id").starts_with("event.id:"));
        assert!(without("source").starts_with("event.source:"));
        assert!(without("specversion").starts_with("event.specversion:"));
        let bad_time = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "yesterday"});
        assert!(structured(bad_time, &caller()).err().unwrap_or_default().starts_with("event.time:"));
        let v03 = json!({"specversion": "0.3", "id": "1", "source": "s", "type": "t"});
        assert!(structured(v03, &caller()).err().unwrap_or_default().contains("\"0.3\""));
    }

    #[test]
    fn binary_mode_names_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "s%2Fx")] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let err = binary(&h, b"{}", &caller()).err().unwrap_or_default();
        assert!(err.starts_with("ce-type: required header"), "{err}");
        h.insert("ce-type", HeaderValue::from_static("bad type!"));
        let err = binary(&h, b"{}", &caller()).err().unwrap_or_default();
        assert!(err.starts_with("ce-type:"), "{err}");
        h.insert("ce-type", HeaderValue::from_static("user.created"));
        let e = binary(&h, b"", &caller()).expect("valid");
        assert_eq!((e.source.as_str(), e.data.clone()), ("s/x", json!({})));
        assert!(binary(&h, b"not json", &caller()).err().unwrap_or_default().starts_with("body:"));
    }

    #[test]
    fn batch_messages_name_the_index() {
        assert_eq!(in_batch(3, "event.type: required"), "events[3].type: required");
        assert_eq!(binary_names("event.data: 9 bytes"), "body: 9 bytes");
    }
}

//! Events: the buses ([`nexus_engine::EventBus`]: in-process for one node, NATS JetStream for
//! clusters), the router that turns an event into trigger starts and wait resolutions, and the
//! checks every published event passes.

pub mod local;
pub mod nats;
pub mod router;

use std::{sync::Arc, time::SystemTime};

use nexus_engine::CloudEvent;
use nexus_store::StoredEvent;

/// Limits of a published event.
pub const MAX_ID_LEN: usize = 256;
pub const MAX_SOURCE_LEN: usize = 512;
pub const MAX_SUBJECT_LEN: usize = 512;
pub const MAX_DATA_BYTES: usize = 256 * 1024;

/// Checks a event before it is published; the message names the field.
pub fn validate(e: &CloudEvent) -> Result<(), String> {
    if e.event_type.is_empty() {
        return Err("event.type: name the event type, e.g. `user.created`".into());
    }
    if !nexus_core::plan::is_event_type(&e.event_type) {
        return Err(format!(
            "event.type: `{}` is not a valid event type: start with a letter or digit, then letters, digits, `.`, `_` or `-` (at most {})",
            short(&e.event_type),
            nexus_core::plan::MAX_EVENT_TYPE_LEN
        ));
    }
    for (field, v, max) in [("id", &e.id, MAX_ID_LEN), ("source", &e.source, MAX_SOURCE_LEN)] {
        if v.is_empty() || v.len() > max {
            return Err(format!("event.{field}: must be 1 to {max} bytes (it is {})", v.len()));
        }
        if v.chars().any(char::is_control) {
            return Err(format!("event.{field}: control characters are not allowed"));
        }
    }
    if e.subject.len() > MAX_SUBJECT_LEN {
        return Err(format!("event.subject: at most {MAX_SUBJECT_LEN} bytes (it is {})", e.subject.len()));
    }
    if !matches!(e.datacontenttype.as_str(), "application/json" | "") {
        return Err(format!(
            "event.datacontenttype: `{}` is not supported; data is JSON (`application/json`)",
            short(&e.datacontenttype)
        ));
    }
    let size = e.data.to_string().len();
    if size > MAX_DATA_BYTES {
        return Err(format!("event.data: {size} bytes of JSON; the limit is {MAX_DATA_BYTES}"));
    }
    Ok(())
}

/// An event as the store records it.
pub fn stored(e: &CloudEvent) -> StoredEvent {
    StoredEvent {
        tenant: e.tenant.to_string(),
        source: e.source.clone(),
        id: e.id.clone(),
        event_type: e.event_type.clone(),
        subject: e.subject.clone(),
        time: e.time,
        datacontenttype: e.datacontenttype.clone(),
        data: e.data.to_string(),
        received_at: SystemTime::now(),
    }
}

/// An event read back from the store; `None` (logged) when its data is not JSON.
pub fn from_stored(s: &StoredEvent) -> Option<CloudEvent> {
    let data = match serde_json::from_str(&s.data) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(event = %s.id, source = %s.source, "stored event data is not JSON ({e}); skipped");
            return None;
        }
    };
    Some(CloudEvent {
        tenant: Arc::from(s.tenant.as_str()),
        source: s.source.clone(),
        id: s.id.clone(),
        event_type: s.event_type.clone(),
        subject: s.subject.clone(),
        time: s.time,
        datacontenttype: s.datacontenttype.clone(),
        data,
    })
}

/// At most 64 characters of untrusted text, for an error message.
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(64).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

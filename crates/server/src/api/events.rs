//! Event RPCs: PublishEvent (idempotent by identity) and SubscribeEvents (live, filtered, of the
//! caller's tenant only). Publishing needs the `runner` role: an event starts executions.
//! RegisterEventType (authors) and ListEventTypes: the event types of the caller's tenant, whose
//! schemas type `event.data.*` in the patterns registered after them.

use std::{pin::Pin, sync::Arc, time::SystemTime};

use futures::{Stream, StreamExt};
use nexus_core::{pb, value};
use nexus_engine::{CloudEvent, Live, Published};
use tonic::{Request, Status};

use super::{
    Api,
    access::{AUTHOR, Asking, READ},
    principal,
};
use crate::{convert, error::ApiError};

pub type LiveEvents = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

/// Most types one subscription names.
const MAX_SUBSCRIBED_TYPES: usize = 64;

/// The API's event as the engine's, in the caller's tenant (any `tenant` in the request is
/// ignored), with the defaults filled in: an id, a source naming the caller, the time of now.
pub fn from_api(e: pb::Event, tenant: Arc<str>, subject: &str) -> CloudEvent {
    CloudEvent {
        tenant,
        source: if e.source.is_empty() { format!("nexus/api/{subject}") } else { e.source },
        id: if e.id.is_empty() { uuid::Uuid::now_v7().simple().to_string() } else { e.id },
        event_type: e.r#type,
        subject: e.subject,
        time: e.time.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or_else(SystemTime::now),
        datacontenttype: if e.datacontenttype.is_empty() { "application/json".into() } else { e.datacontenttype },
        data: e.data.as_ref().map(value::struct_to_serde).unwrap_or_else(|| serde_json::json!({})),
    }
}

pub fn to_api(e: &CloudEvent) -> pb::Event {
    pb::Event {
        id: e.id.clone(),
        source: e.source.clone(),
        r#type: e.event_type.clone(),
        subject: e.subject.clone(),
        time: Some(convert::timestamp(e.time)),
        datacontenttype: e.datacontenttype.clone(),
        data: value::serde_to_struct(&e.data),
        tenant: e.tenant.to_string(),
    }
}

fn event_type_to_api(t: &nexus_store::StoredEventType) -> pb::EventType {
    let schema = serde_json::from_str::<serde_json::Value>(&t.schema).unwrap_or_else(|_| serde_json::json!({}));
    pb::EventType {
        r#type: t.event_type.clone(),
        description: t.description.clone(),
        schema: value::serde_to_struct(&schema),
        tenant: t.tenant.clone(),
        registered_at: Some(convert::timestamp(t.registered_at)),
    }
}

impl Api {
    pub async fn register_event_type(
        &self,
        req: Request<pb::RegisterEventTypeRequest>,
    ) -> Result<pb::EventType, ApiError> {
        let p = principal(&req)?;
        let t = req.into_inner().event_type.ok_or_else(|| ApiError::InvalidArgument("event_type: required".into()))?;
        let asking = Asking { caller: &p, rpc: "RegisterEventType" };
        self.access.require(asking, &format!("event_type:{}", t.r#type), AUTHOR)?;
        if !nexus_core::plan::is_event_type(&t.r#type) {
            return Err(ApiError::InvalidArgument(format!(
                "event_type.type: `{}` is not a valid event type: start with a letter or digit, then letters, digits, `.`, `_` or `-` (at most {})",
                t.r#type,
                nexus_core::plan::MAX_EVENT_TYPE_LEN
            )));
        }
        let schema = t.schema.as_ref().map(value::struct_to_serde).unwrap_or_else(|| serde_json::json!({}));
        let problems = nexus_core::input::InputSchema::new(schema.clone()).lint();
        if !problems.is_empty() {
            let named: Vec<String> = problems
                .iter()
                .map(|(path, msg)| format!("event_type.schema{}: {msg}", path.strip_prefix("input").unwrap_or(path)))
                .collect();
            return Err(ApiError::InvalidArgument(named.join("; ")));
        }
        let stored = self
            .registry
            .register_event_type(nexus_store::StoredEventType {
                tenant: p.tenant.to_string(),
                event_type: t.r#type,
                description: t.description,
                schema: schema.to_string(),
                registered_at: SystemTime::now(),
            })
            .await?;
        Ok(event_type_to_api(&stored))
    }

    pub async fn list_event_types(
        &self,
        req: Request<pb::ListEventTypesRequest>,
    ) -> Result<pb::ListEventTypesResponse, ApiError> {
        let p = principal(&req)?;
        let asking = Asking { caller: &p, rpc: "ListEventTypes" };
        self.access.require(asking, "event_types", READ)?;
        let event_types = self.registry.event_types(&p.tenant).iter().map(event_type_to_api).collect();
        Ok(pb::ListEventTypesResponse { event_types })
    }

    pub async fn publish_event(
        &self,
        req: Request<pb::PublishEventRequest>,
    ) -> Result<pb::PublishEventResponse, ApiError> {
        let p = principal(&req)?;
        let event = req.into_inner().event.ok_or_else(|| ApiError::InvalidArgument("event: required".into()))?;
        let asking = Asking { caller: &p, rpc: "PublishEvent" };
        self.access.publish(asking, &event.r#type)?;
        let event = from_api(event, p.tenant.clone(), &p.subject);
        crate::events::validate(&event).map_err(ApiError::InvalidArgument)?;
        let published = self.events.publish(&event).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(pb::PublishEventResponse {
            id: event.id,
            source: event.source,
            duplicate: published == Published::Duplicate,
        })
    }

    pub async fn subscribe_events(&self, req: Request<pb::SubscribeEventsRequest>) -> Result<LiveEvents, ApiError> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let asking = Asking { caller: &p, rpc: "SubscribeEvents" };
        self.access.require(asking, "events", READ)?;
        if r.types.len() > MAX_SUBSCRIBED_TYPES {
            return Err(ApiError::InvalidArgument(format!(
                "types: {} given; at most {MAX_SUBSCRIBED_TYPES}",
                r.types.len()
            )));
        }
        for t in &r.types {
            if !nexus_core::plan::is_event_type(t) {
                return Err(ApiError::InvalidArgument(format!(
                    "types: `{}` is not a valid event type",
                    t.escape_debug()
                )));
            }
        }
        let filter = match r.filter.as_str() {
            "" => None,
            f => {
                let e =
                    nexus_core::expr::parse_single(f).map_err(|e| ApiError::InvalidArgument(format!("filter: {e}")))?;
                if let Some(r) = e.references().iter().find(|r| r.root != "event") {
                    return Err(ApiError::InvalidArgument(format!(
                        "filter: reads `{}`; a subscription filter reads only `event`",
                        r.root
                    )));
                }
                Some(e)
            }
        };
        let live = self.events.bus().subscribe().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
        // Ends (OK) when this replica leaves; the subscriber subscribes again elsewhere.
        let live = live.take_until(self.leaving.clone().cancelled_owned());
        let tenant = p.tenant.clone();
        let types = r.types;
        let stream = live.filter_map(move |l| {
            let out = match l {
                Live::Event(e) if *e.tenant != *tenant => None,
                Live::Event(e) if !types.is_empty() && !types.contains(&e.event_type) => None,
                Live::Event(e) => {
                    let passes = filter.as_ref().is_none_or(|f| {
                        let cel = nexus_engine::waits::event_cel(&e);
                        let scope = nexus_core::expr::Scope {
                            input: &cel::Value::Null,
                            steps: &Default::default(),
                            item: None,
                            index: None,
                            execution: &nexus_core::expr::ExecutionVar::of(cel::Value::Null),
                            event: Some(&cel),
                            budget: None,
                        };
                        matches!(f.eval(&scope), Ok(cel::Value::Bool(true)))
                    });
                    passes.then(|| Ok(to_api(&e)))
                }
                // Told, not silently skipped: the subscriber knows it missed some.
                Live::Lagged(n) => Some(Err(Status::data_loss(format!(
                    "this subscriber fell behind and {n} event(s) were dropped; subscribe again"
                )))),
            };
            async move { out }
        });
        Ok(Box::pin(stream))
    }
}

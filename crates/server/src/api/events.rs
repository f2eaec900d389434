//! Event RPCs: PublishEvent and SubscribeEvents.

use std::pin::Pin;

use futures::Stream;
use nexus_core::pb;
use tonic::{Request, Status};

use super::Api;
use crate::error::ApiError;

pub type LiveEvents = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

impl Api {
    pub async fn publish_event(
        &self,
        _req: Request<pb::PublishEventRequest>,
    ) -> Result<pb::PublishEventResponse, ApiError> {
        Err(ApiError::Unavailable("events are not wired yet".into()))
    }

    pub async fn subscribe_events(&self, _req: Request<pb::SubscribeEventsRequest>) -> Result<LiveEvents, ApiError> {
        Err(ApiError::Unavailable("events are not wired yet".into()))
    }
}

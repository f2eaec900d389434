//! Nexus integration tests over real sockets: demo backends and a Nexus server on 127.0.0.1:0,
//! driven through the public API. One test binary (fast to link) with a module per area.

#[path = "api/common.rs"]
mod common;

#[path = "api/access.rs"]
mod access;
#[path = "api/ai.rs"]
mod ai;
#[path = "api/catalog.rs"]
mod catalog;
#[path = "api/cloudevents.rs"]
mod cloudevents;
#[path = "api/cost.rs"]
mod cost;
#[path = "api/events.rs"]
mod events;
#[path = "api/events_nats.rs"]
mod events_nats;
#[path = "api/execution.rs"]
mod execution;
#[path = "api/hostile.rs"]
mod hostile;
#[path = "api/interop.rs"]
mod interop;
#[path = "api/lifecycle.rs"]
mod lifecycle;
#[path = "api/marketplace.rs"]
mod marketplace;
#[path = "api/refresh.rs"]
mod refresh;
#[path = "api/schedule.rs"]
mod schedule;
#[path = "api/streams.rs"]
mod streams;
#[path = "api/telemetry.rs"]
mod telemetry;
#[path = "api/tls.rs"]
mod tls;
#[path = "api/transports.rs"]
mod transports;
#[path = "api/ui.rs"]
mod ui;
#[path = "api/validation.rs"]
mod validation;

//! The engine's [`nexus_engine::EventBus`] implementations: NATS JetStream for clusters.

pub mod nats;

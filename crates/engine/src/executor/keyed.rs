//! Idempotency keys: one execution per (pattern, key), whichever path asks (unary or stream,
//! ephemeral or durable, a fresh request or a resumed execution).
//!
//! The first request with a key takes its slot and runs (or, for a durable pattern, first asks the
//! journal whether the key was used before a restart or on another replica); later requests wait
//! on the slot — no polling — and get the same record. Slots are bounded like the history: past
//! that, durable executions are still found through the journal.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::OnceCell;

use super::engine::EngineError;
use crate::record::ExecutionRecord;

/// What the journal knows of an idempotency key.
#[derive(Debug, Clone)]
pub enum Keyed {
    /// The execution finished: its outcome (id, tenant, status, output, error).
    Finished(Arc<ExecutionRecord>),
    /// Journaled and not finished: running somewhere, or waiting to be taken over.
    Unfinished { id: Arc<str>, tenant: Arc<str> },
}

/// The first execution with a key; set once, awaited by every later request with the key.
pub(super) type Slot = Arc<OnceCell<Arc<ExecutionRecord>>>;

/// (pattern name, idempotency key).
type Key = (Arc<str>, String);

pub(super) struct KeyedExecutions {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    /// The slot and the tenant that took it (a key is never shared across tenants).
    slots: HashMap<Key, (Arc<str>, Slot)>,
    order: VecDeque<Key>,
}

impl KeyedExecutions {
    pub(super) fn new(capacity: usize) -> Self {
        Self { inner: Mutex::default(), capacity: capacity.max(1) }
    }

    /// The key's slot, taken by `tenant` if it is free. Another tenant's key is refused.
    pub(super) fn slot(&self, pattern: &Arc<str>, key: &str, tenant: &Arc<str>) -> Result<Slot, EngineError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let k = (pattern.clone(), key.to_string());
        if let Some((owner, slot)) = inner.slots.get(&k) {
            if owner != tenant {
                return Err(EngineError::IdempotencyKeyTaken { pattern: pattern.clone() });
            }
            return Ok(slot.clone());
        }
        let slot = Slot::default();
        inner.slots.insert(k.clone(), (tenant.clone(), slot.clone()));
        inner.order.push_back(k);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.slots.remove(&old);
            }
        }
        Ok(slot)
    }

    /// Lets the journal answer for the key from now on (its execution left this process).
    pub(super) fn forget(&self, pattern: &Arc<str>, key: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.slots.remove(&(pattern.clone(), key.to_string()));
    }
}

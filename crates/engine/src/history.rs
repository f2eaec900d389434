//! Finished executions kept in memory, newest first, bounded.
//!
//! Ephemeral executions are not journaled (DESIGN.md §7): their record lives here so GetExecution
//! and ListExecutions can show them, and the oldest are dropped past the capacity.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use crate::record::{ExecutionRecord, ExecutionStatus};

pub struct History {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    by_id: HashMap<Arc<str>, Arc<ExecutionRecord>>,
    /// Sorted by id, i.e. by start time, oldest first.
    order: VecDeque<Arc<str>>,
}

#[derive(Debug, Default, Clone)]
pub struct HistoryFilter {
    /// Only this tenant's executions.
    pub tenant: Option<String>,
    pub pattern_name: Option<String>,
    pub status: Option<ExecutionStatus>,
    /// Return executions older than this id (ids are time-ordered).
    pub before: Option<String>,
    pub limit: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner { by_id: HashMap::new(), order: VecDeque::new() }), capacity: capacity.max(1) }
    }

    pub fn insert(&self, record: Arc<ExecutionRecord>) {
        let mut inner = self.lock();
        // Ids are time-ordered (UUIDv7) by start; executions finish out of order, so keep `order`
        // sorted by id: listing and the `before` page cursor then agree. Most inserts land at or
        // near the end.
        let pos = inner.order.partition_point(|id| **id < *record.id);
        inner.order.insert(pos, record.id.clone());
        inner.by_id.insert(record.id.clone(), record);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn get(&self, id: &str) -> Option<Arc<ExecutionRecord>> {
        self.lock().by_id.get(id).cloned()
    }

    /// Newest first; the second value tells whether more match past `limit`.
    pub fn list(&self, filter: &HistoryFilter) -> (Vec<Arc<ExecutionRecord>>, bool) {
        let inner = self.lock();
        let limit = if filter.limit == 0 { 50 } else { filter.limit };
        let mut out = Vec::new();
        for id in inner.order.iter().rev() {
            if filter.before.as_deref().is_some_and(|b| &**id >= b) {
                continue;
            }
            let Some(rec) = inner.by_id.get(id) else { continue };
            if filter.tenant.as_deref().is_some_and(|t| &*rec.tenant != t) {
                continue;
            }
            if filter.pattern_name.as_deref().is_some_and(|p| &*rec.pattern_name != p) {
                continue;
            }
            if filter.status.is_some_and(|s| rec.status != s) {
                continue;
            }
            if out.len() == limit {
                return (out, true);
            }
            out.push(rec.clone());
        }
        (out, false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent (each operation is a
        // few inserts/removes), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

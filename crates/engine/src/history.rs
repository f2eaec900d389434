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
    /// Most bytes the records may take (estimated, [`ExecutionRecord::approx_bytes`]): a few
    /// executions with huge inputs must not hold gigabytes when the count is far from full.
    max_bytes: usize,
}

struct Inner {
    by_id: HashMap<Arc<str>, (Arc<ExecutionRecord>, usize)>,
    /// Sorted by id, i.e. by start time, oldest first.
    order: VecDeque<Arc<str>>,
    /// The estimated bytes of every record held.
    bytes: usize,
}

/// The default bound on the history's memory.
pub const DEFAULT_HISTORY_BYTES: usize = 256 << 20;

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
        Self::with_byte_limit(capacity, DEFAULT_HISTORY_BYTES)
    }

    /// At most `capacity` records and `max_bytes` of them (estimated); the oldest go first. The
    /// newest record is always kept, even alone over the byte limit (its caller may ask for it).
    pub fn with_byte_limit(capacity: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner { by_id: HashMap::new(), order: VecDeque::new(), bytes: 0 }),
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    /// The estimated bytes the records take now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Keeps `record` compacted ([`ExecutionRecord::compacted`]): its CEL values as JSON text.
    pub fn insert(&self, record: Arc<ExecutionRecord>) {
        let record = Arc::new(record.compacted());
        let mut inner = self.lock();
        // Ids are time-ordered (UUIDv7) by start; executions finish out of order, so keep `order`
        // sorted by id: listing and the `before` page cursor then agree. Most inserts land at or
        // near the end.
        let size = record.approx_bytes();
        if let Some((_, old)) = inner.by_id.insert(record.id.clone(), (record.clone(), size)) {
            // The same execution again (a durable one read back): replace, do not duplicate.
            inner.bytes -= old;
        } else {
            let pos = inner.order.partition_point(|id| **id < *record.id);
            inner.order.insert(pos, record.id.clone());
        }
        inner.bytes += size;
        while inner.order.len() > self.capacity || (inner.bytes > self.max_bytes && inner.order.len() > 1) {
            // The oldest that is not the record just inserted.
            let victim = if inner.order.front().is_some_and(|id| *id == record.id) { 1 } else { 0 };
            let Some(old) = inner.order.remove(victim) else { break };
            if let Some((_, size)) = inner.by_id.remove(&old) {
                inner.bytes -= size;
            }
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn get(&self, id: &str) -> Option<Arc<ExecutionRecord>> {
        self.lock().by_id.get(id).map(|(r, _)| r.clone())
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
            let Some((rec, _)) = inner.by_id.get(id) else { continue };
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

#[cfg(test)]
mod byte_limit_tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn record(id: &str, input_bytes: usize) -> Arc<ExecutionRecord> {
        Arc::new(ExecutionRecord {
            trace: None,
            id: Arc::from(id),
            tenant: Arc::from("t"),
            pattern_name: Arc::from("p"),
            pattern_version: Arc::from("1.0.0"),
            status: ExecutionStatus::Succeeded,
            input: cel::Value::String(Arc::new("x".repeat(input_bytes))).into(),
            output: None,
            error: None,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            steps: Vec::new(),
            idempotency_key: None,
        })
    }

    #[test]
    fn small_values_are_kept_as_they_are_and_large_ones_as_json_read_alike() {
        use cel::Value as Cel;

        use crate::record::RecordValue;
        let history = History::with_byte_limit(10, 1 << 30);
        history.insert(record("small", 10));
        history.insert(record("large", 4096));
        assert!(matches!(history.get("small").unwrap().input, RecordValue::Cel(_)));
        assert!(matches!(history.get("large").unwrap().input, RecordValue::Json(_)));
        // Whichever form is kept, a reader applying the JSON mapping sees the same value.
        let ts = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00.5Z").unwrap();
        let v = nexus_core::value::map(
            [
                ("text", Cel::String(Arc::new("é\"".into()))),
                ("big", Cel::Int(1 << 60)),
                ("whole", Cel::Float(3.0)),
                ("nan", Cel::Float(f64::NAN)),
                ("bytes", Cel::Bytes(Arc::new(vec![0, 255]))),
                ("at", Cel::Timestamp(ts)),
                ("list", Cel::List(Arc::new(vec![Cel::UInt(7), Cel::Null, Cel::Bool(true)]))),
            ]
            .into_iter()
            .map(|(k, v)| (nexus_core::value::key(k), v))
            .collect(),
        );
        let kept = RecordValue::Cel(v.clone()).compacted();
        assert!(matches!(kept, RecordValue::Cel(_)));
        let as_json = RecordValue::Json(Arc::from(nexus_core::value::cel_to_json_string(&v)));
        assert_eq!(nexus_core::value::cel_to_serde(&kept.cel()), nexus_core::value::cel_to_serde(&as_json.cel()));
    }

    #[test]
    fn the_history_is_bounded_by_bytes_as_well_as_count() {
        let history = History::with_byte_limit(1000, 3 << 20);
        for i in 0..10 {
            history.insert(record(&format!("{i:02}"), 1 << 20));
        }
        // 1 MiB inputs, 3 MiB: the two newest and the one being inserted fit... at most 3.
        let (kept, _) = history.list(&HistoryFilter { limit: 100, ..Default::default() });
        let ids: Vec<&str> = kept.iter().map(|r| &*r.id).collect();
        assert!(ids.len() <= 3 && ids.first() == Some(&"09"), "{ids:?}");
        assert!(history.bytes() <= 3 << 20, "{}", history.bytes());
        // One record over the whole limit is still kept (alone).
        history.insert(record("10", 8 << 20));
        assert!(history.get("10").is_some());
        assert!(history.get("09").is_none());
        // The same id again replaces its record and its bytes.
        history.insert(record("10", 10));
        assert!(history.bytes() < 4096, "{}", history.bytes());
        let (kept, _) = history.list(&HistoryFilter { limit: 100, ..Default::default() });
        assert_eq!(kept.len(), 1);
    }
}

//! Per-caller limits: executions in flight (RESOURCE_EXHAUSTED beyond `max_in_flight_per_caller`),
//! so one client cannot take every slot of a shared gateway.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::{auth::Principal, error::ApiError};

/// (tenant, subject).
type Caller = (Arc<str>, Arc<str>);

/// Counts each caller's executions in flight.
pub struct InFlight {
    /// 0 = unlimited.
    limit: usize,
    counts: RwLock<HashMap<Caller, Arc<AtomicUsize>>>,
}

/// One execution in flight; the count goes down when it is dropped (however the call ends).
pub struct Slot(Option<Arc<AtomicUsize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl InFlight {
    pub fn new(limit: usize) -> Self {
        Self { limit, counts: RwLock::new(HashMap::new()) }
    }

    /// Takes a slot for `who`, or RESOURCE_EXHAUSTED when they already have `limit` executions
    /// in flight.
    pub fn acquire(&self, who: &Principal) -> Result<Slot, ApiError> {
        if self.limit == 0 {
            return Ok(Slot(None));
        }
        let key = (who.tenant.clone(), who.subject.clone());
        let found = self.counts.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        let counter = match found {
            Some(c) => c,
            None => {
                self.counts.write().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_default().clone()
            }
        };
        let before = counter.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Some(counter));
        if before >= self.limit {
            return Err(ApiError::ResourceExhausted(format!(
                "{}/{} already has {} executions in flight (the limit per caller is {}, `limits.max_in_flight_per_caller`); retry when some have finished",
                who.tenant, who.subject, before, self.limit
            )));
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_over_the_limit_is_refused_until_a_slot_frees() {
        let limits = InFlight::new(2);
        let a = Principal::open();
        let b = Principal { subject: Arc::from("other"), ..Principal::open() };
        let (s1, s2) = (limits.acquire(&a).unwrap(), limits.acquire(&a).unwrap());
        let refused = limits.acquire(&a).err().unwrap();
        let refused = tonic::Status::from(refused);
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("default/local") && refused.message().contains("limit per caller is 2"));
        assert!(limits.acquire(&b).is_ok(), "another caller has slots of their own");
        drop(s1);
        let _s3 = limits.acquire(&a).unwrap();
        drop(s2);
        assert!(InFlight::new(0).acquire(&a).is_ok(), "0 means unlimited");
    }
}

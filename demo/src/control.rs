//! Observation and fault injection shared by every demo service: call counters, in-flight
//! tracking, injected latency and failures, recorded request metadata and Subscribe lifecycles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tonic::{Code, Request, Status};

use crate::DemoOptions;

/// Request metadata key whose values are recorded so tests can assert that retries reuse keys.
pub const IDEMPOTENCY_KEY_HEADER: &str = "nexus-idempotency-key";
/// W3C trace-context header whose last value is recorded per method.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Cheap, cloneable view into a running demo server: tests read counters through it and steer
/// latency and failures per method. Methods are named by their full gRPC path without the
/// leading slash, e.g. `"demo.user.v1.UserService/CreateUser"` (see [`crate::method`]).
#[derive(Clone)]
pub struct DemoHandle {
    inner: Arc<Control>,
}

struct Control {
    default_latency: Duration,
    chunk_interval: Duration,
    /// [`DemoOptions::capacity`].
    capacity: usize,
    /// Stored as `f64` bits so the hot path reads it without a lock.
    failure_rate: AtomicU64,
    methods: Mutex<HashMap<String, MethodState>>,
    subscribes_started: AtomicU64,
    subscribes_ended: AtomicU64,
}

#[derive(Default)]
struct MethodState {
    calls: u64,
    in_flight: u64,
    max_in_flight: u64,
    fail_next: u32,
    fail_code: Option<Code>,
    latency: Option<Duration>,
    /// The most recent [`KEPT_IDEMPOTENCY_KEYS`], oldest first.
    idempotency_keys: std::collections::VecDeque<String>,
    last_traceparent: Option<String>,
}

/// Idempotency keys a method remembers: enough for any test's executions (the chaos test's
/// 10,000 events, each called at most twice), bounded so that a demo left running under load —
/// or the benchmark's hundreds of thousands of calls — does not grow without end (a `Vec` of
/// every key, re-allocated and copied as it doubled, was the benchmark backend's largest cost
/// that only calls through Nexus paid: direct calls send no key).
pub const KEPT_IDEMPOTENCY_KEYS: usize = 65_536;

/// Whether the global knobs (default latency, random failure rate) apply to a call. They are
/// meant for unary calls; a stream is only affected by injection aimed at it by method name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Unary,
    Stream,
}

impl DemoHandle {
    pub(crate) fn new(options: &DemoOptions) -> Self {
        Self {
            inner: Arc::new(Control {
                default_latency: options.latency,
                chunk_interval: options.chunk_interval,
                capacity: options.capacity,
                failure_rate: AtomicU64::new(clamp_rate(options.failure_rate).to_bits()),
                methods: Mutex::new(HashMap::new()),
                subscribes_started: AtomicU64::new(0),
                subscribes_ended: AtomicU64::new(0),
            }),
        }
    }

    /// Entries the services' stores have room for from the start ([`DemoOptions::capacity`]).
    pub(crate) fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Calls received by `method`, including the ones that failed by injection or validation.
    pub fn calls(&self, method: &str) -> u64 {
        self.read(method, |state| state.calls).unwrap_or(0)
    }

    /// Calls to `method` currently being handled (for streams: until the stream ends).
    pub fn in_flight(&self, method: &str) -> u64 {
        self.read(method, |state| state.in_flight).unwrap_or(0)
    }

    /// Highest number of concurrent calls to `method` seen so far.
    pub fn max_in_flight(&self, method: &str) -> u64 {
        self.read(method, |state| state.max_in_flight).unwrap_or(0)
    }

    /// Makes the next `n` calls to `method` fail with `code`, replacing any pending injection.
    pub fn fail_next(&self, method: &str, n: u32, code: Code) {
        self.write(method, |state| {
            state.fail_next = n;
            state.fail_code = Some(code);
        });
    }

    /// Overrides the injected latency of `method`; `Duration::ZERO` disables it for that method.
    pub fn set_latency(&self, method: &str, latency: Duration) {
        self.write(method, |state| state.latency = Some(latency));
    }

    /// Sets the probability (clamped to 0..=1) that a unary call fails with UNAVAILABLE.
    pub fn set_failure_rate(&self, rate: f64) {
        self.inner.failure_rate.store(clamp_rate(rate).to_bits(), Ordering::Relaxed);
    }

    /// Values of the `nexus-idempotency-key` metadata received by `method`, in arrival order
    /// (the most recent [`KEPT_IDEMPOTENCY_KEYS`]).
    pub fn idempotency_keys(&self, method: &str) -> Vec<String> {
        self.read(method, |state| state.idempotency_keys.iter().cloned().collect()).unwrap_or_default()
    }

    /// The most recent `traceparent` metadata value received by `method`.
    pub fn last_traceparent(&self, method: &str) -> Option<String> {
        self.read(method, |state| state.last_traceparent.clone()).flatten()
    }

    /// Subscribe streams that started sending chunks.
    pub fn subscribes_started(&self) -> u64 {
        self.inner.subscribes_started.load(Ordering::SeqCst)
    }

    /// Subscribe streams that sent all their chunks or whose client went away.
    pub fn subscribes_ended(&self) -> u64 {
        self.inner.subscribes_ended.load(Ordering::SeqCst)
    }

    /// Subscribe streams started but not yet ended.
    pub fn subscribes_active(&self) -> u64 {
        // Read `ended` first so a concurrent end cannot make the difference underflow.
        let ended = self.subscribes_ended();
        self.subscribes_started().saturating_sub(ended)
    }

    pub(crate) fn chunk_interval(&self) -> Duration {
        self.inner.chunk_interval
    }

    /// Records an incoming call, then applies injected latency and failures. The returned guard
    /// keeps the call counted as in flight until it is dropped, which also covers calls whose
    /// client cancels while they sleep.
    pub(crate) async fn admit<T>(
        &self,
        method: &'static str,
        request: &Request<T>,
        kind: CallKind,
    ) -> Result<InFlight, Status> {
        let metadata = request.metadata();
        let idempotency_key = metadata_text(metadata, IDEMPOTENCY_KEY_HEADER);
        let traceparent = metadata_text(metadata, TRACEPARENT_HEADER);

        let latency = self.write(method, |state| {
            state.calls += 1;
            state.in_flight += 1;
            state.max_in_flight = state.max_in_flight.max(state.in_flight);
            if let Some(key) = idempotency_key {
                if state.idempotency_keys.len() >= KEPT_IDEMPOTENCY_KEYS {
                    state.idempotency_keys.pop_front();
                }
                state.idempotency_keys.push_back(key);
            }
            if traceparent.is_some() {
                state.last_traceparent = traceparent;
            }
            match (state.latency, kind) {
                (Some(latency), _) => latency,
                (None, CallKind::Unary) => self.inner.default_latency,
                (None, CallKind::Stream) => Duration::ZERO,
            }
        });
        let guard = InFlight { handle: self.clone(), method };

        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }

        let injected = self.write(method, |state| {
            if state.fail_next == 0 {
                return None;
            }
            state.fail_next -= 1;
            Some(state.fail_code.unwrap_or(Code::Unavailable))
        });
        if let Some(code) = injected {
            return Err(Status::new(code, format!("injected failure for {method}")));
        }
        if kind == CallKind::Unary {
            let rate = f64::from_bits(self.inner.failure_rate.load(Ordering::Relaxed));
            if rate > 0.0 && rand::random::<f64>() < rate {
                return Err(Status::unavailable(format!("injected random failure for {method}")));
            }
        }
        Ok(guard)
    }

    /// Counts a Subscribe as started and returns the lease that counts it as ended exactly once.
    pub(crate) fn start_subscription(&self) -> Arc<SubscriptionLease> {
        self.inner.subscribes_started.fetch_add(1, Ordering::SeqCst);
        Arc::new(SubscriptionLease { handle: self.clone(), ended: AtomicBool::new(false) })
    }

    fn read<R>(&self, method: &str, f: impl FnOnce(&MethodState) -> R) -> Option<R> {
        lock(&self.inner.methods).get(method).map(f)
    }

    fn write<R>(&self, method: &str, f: impl FnOnce(&mut MethodState) -> R) -> R {
        let mut methods = lock(&self.inner.methods);
        f(methods.entry(method.to_owned()).or_default())
    }
}

impl std::fmt::Debug for DemoHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoHandle")
            .field("subscribes_started", &self.subscribes_started())
            .field("subscribes_ended", &self.subscribes_ended())
            .finish_non_exhaustive()
    }
}

/// Keeps one call counted in [`DemoHandle::in_flight`] while alive.
pub(crate) struct InFlight {
    handle: DemoHandle,
    method: &'static str,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.handle.write(self.method, |state| {
            state.in_flight = state.in_flight.saturating_sub(1);
        });
    }
}

/// One Subscribe's lifecycle. Both the chunk producer (all chunks sent, or a send failed) and the
/// response stream's drop call [`SubscriptionLease::end`]; whichever comes first counts the end.
pub(crate) struct SubscriptionLease {
    handle: DemoHandle,
    ended: AtomicBool,
}

impl SubscriptionLease {
    pub(crate) fn end(&self) {
        if !self.ended.swap(true, Ordering::SeqCst) {
            self.handle.inner.subscribes_ended.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn metadata_text(metadata: &tonic::metadata::MetadataMap, key: &str) -> Option<String> {
    metadata.get(key).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) }
}

/// The counters stay meaningful after a panic elsewhere, so a poisoned lock is simply reused.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_method_keeps_its_most_recent_idempotency_keys() -> Result<(), Status> {
        let handle = DemoHandle::new(&DemoOptions::default());
        let method = crate::method::SEND_EMAIL;
        for i in 0..KEPT_IDEMPOTENCY_KEYS + 10 {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert(IDEMPOTENCY_KEY_HEADER, i.to_string().parse().map_err(|_| Status::internal("key"))?);
            drop(handle.admit(method, &request, CallKind::Unary).await?);
        }
        let keys = handle.idempotency_keys(method);
        assert_eq!(keys.len(), KEPT_IDEMPOTENCY_KEYS);
        assert_eq!(keys.first().map(String::as_str), Some("10"));
        assert_eq!(keys.last(), Some(&(KEPT_IDEMPOTENCY_KEYS + 9).to_string()));
        Ok(())
    }
}

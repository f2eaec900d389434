//! What an execution tells its observers while it runs: the caller of ExecutePatternStream (over
//! a bounded channel, so a slow reader slows the execution down: backpressure) and any number of
//! WatchExecution watchers (over a broadcast channel: a slow watcher loses events, never slows
//! the execution).

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, SystemTime},
};

use prost_reflect::DynamicMessage;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::record::{ExecError, ExecutionRecord};

#[derive(Debug, Clone)]
pub enum Event {
    Started {
        pattern_name: Arc<str>,
        pattern_version: Arc<str>,
    },
    StepStarted {
        step: Arc<str>,
        attempt: u32,
    },
    StepSucceeded {
        step: Arc<str>,
        duration: Duration,
    },
    StepFailed {
        step: Arc<str>,
        error: ExecError,
        duration: Duration,
    },
    StepRetrying {
        step: Arc<str>,
        attempt: u32,
        error: ExecError,
    },
    StepSkipped {
        step: Arc<str>,
    },
    StepCompensated {
        step: Arc<str>,
        error: Option<ExecError>,
        duration: Duration,
    },
    /// One message of a `stream: true` step.
    Message {
        step: Arc<str>,
        index: u64,
        message: DynamicMessage,
    },
    Finished(Arc<ExecutionRecord>),
}

#[derive(Debug, Clone)]
pub struct ExecutionEvent {
    pub execution_id: Arc<str>,
    pub time: SystemTime,
    pub event: Event,
}

/// Capacity of the broadcast buffer each watched execution gets.
pub const WATCH_BUFFER: usize = 1024;

/// A running execution, as the engine's registry knows it.
pub struct RunningExecution {
    pub id: Arc<str>,
    /// Journaled: its lease is renewed while it runs here, and it is suspended (not drained) at
    /// shutdown.
    pub durable: bool,
    /// The tenant of the caller who started it (only they may watch or cancel it).
    pub tenant: Arc<str>,
    pub cancel: CancellationToken,
    /// What it runs (`name`, `version`) and since when, for GetExecution while it runs.
    pub pattern: Option<(Arc<str>, Arc<str>)>,
    pub started_at: std::time::SystemTime,
    /// RUNNING, then either FINISHING (its outcome is decided) or CANCELLED: whichever of the
    /// execution and a CancelExecution gets there first wins, so a cancel is either honoured
    /// (compensation, CANCELLED) or refused (`cancelled: false`), never acknowledged and ignored.
    state: AtomicU8,
    /// Created on the first WatchExecution, so unwatched executions pay nothing for it.
    watch: OnceLock<broadcast::Sender<ExecutionEvent>>,
}

const RUNNING: u8 = 0;
const FINISHING: u8 = 1;
const CANCELLED: u8 = 2;
const SUSPENDED: u8 = 3;

/// How an execution's run ends, decided once (see [`RunningExecution::begin_finishing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Runs to its outcome (success, failure, compensation).
    Finish,
    /// A CancelExecution won: compensate, then CANCELLED.
    Cancelled,
    /// Stopped here without an outcome: a durable execution stays unfinished in the journal and
    /// continues wherever it is claimed next (this replica is shutting down, or the store is
    /// unreachable). Nothing is compensated, nothing is journaled as finished.
    Suspended,
}

impl RunningExecution {
    pub fn new(id: Arc<str>, durable: bool, tenant: Arc<str>) -> Self {
        Self {
            id,
            durable,
            tenant,
            cancel: CancellationToken::new(),
            pattern: None,
            started_at: std::time::SystemTime::now(),
            state: AtomicU8::new(RUNNING),
            watch: OnceLock::new(),
        }
    }

    /// Names the pattern it runs.
    pub fn with_pattern(mut self, name: Arc<str>, version: Arc<str>) -> Self {
        self.pattern = Some((name, version));
        self
    }

    /// Requests cancellation; false when the execution's outcome was already decided.
    pub fn request_cancel(&self) -> bool {
        let won = self.state.compare_exchange(RUNNING, CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if won {
            self.cancel.cancel();
        }
        won
    }

    /// Stops the execution here without an outcome (see [`Ending::Suspended`]); false when its
    /// outcome was already decided.
    pub fn request_suspend(&self) -> bool {
        let won = self.state.compare_exchange(RUNNING, SUSPENDED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if won {
            self.cancel.cancel();
        }
        won
    }

    /// Decides how the run ends: whichever of the execution, a cancellation and a suspension
    /// gets there first wins.
    pub(crate) fn begin_finishing(&self) -> Ending {
        match self.state.compare_exchange(RUNNING, FINISHING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) | Err(FINISHING) => Ending::Finish,
            Err(CANCELLED) => Ending::Cancelled,
            Err(_) => Ending::Suspended,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ExecutionEvent> {
        self.watch.get_or_init(|| broadcast::channel(WATCH_BUFFER).0).subscribe()
    }
}

/// Sends an execution's events to whoever listens. Cheap to clone into step futures.
#[derive(Clone)]
pub struct Emitter {
    pub(crate) running: Arc<RunningExecution>,
    pub(crate) direct: Option<mpsc::Sender<ExecutionEvent>>,
}

impl Emitter {
    /// Whether anyone could hear an event (building one is skipped otherwise).
    pub fn listening(&self) -> bool {
        self.direct.is_some() || self.running.watch.get().is_some_and(|w| w.receiver_count() > 0)
    }

    /// Delivers to the direct observer (waiting for room: backpressure) and to the watchers.
    /// Returns false when the direct observer has gone away.
    pub async fn emit(&self, event: Event) -> bool {
        if !self.listening() {
            return true;
        }
        let event = ExecutionEvent { execution_id: self.running.id.clone(), time: SystemTime::now(), event };
        if let Some(w) = self.running.watch.get() {
            let _ = w.send(event.clone());
        }
        match &self.direct {
            Some(tx) => tx.send(event).await.is_ok(),
            None => true,
        }
    }

    /// Resolves when the direct observer has gone away (never, when there is none).
    pub async fn closed(&self) {
        match &self.direct {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    }
}

//! Nexus engine: executes compiled patterns.
//!
//! One task per execution, steps as futures started as soon as their dependencies finish,
//! per-attempt and per-execution deadlines, retries with backoff and jitter. The engine talks to
//! the world only through the [`Invoker`] trait (and keeps finished executions in a [`History`]);
//! it never opens a socket itself.

mod bus;
mod events;
mod executor;
mod history;
mod invoker;
mod journal;
mod observe;
mod record;
pub mod trace;
pub mod waits;

pub use bus::{Acker, BusError, CloudEvent, Delivery, EventBus, EventHub, Live, Published, WaitRegistration};
pub use events::{Event, ExecutionEvent, RunningExecution};
pub use executor::{
    CheckedRequest, Engine, EngineError, ExecuteRequest, Keyed, MAX_COLLECTED_STREAM_MESSAGES, MAX_FAN_OUT, Resumption,
};
pub use history::{DEFAULT_HISTORY_BYTES, History, HistoryFilter};
pub use invoker::{Call, CallError, Invoker, MessageStream};
pub use journal::{Journal, JournalError, JournalStart, decode_result, encode_result};
pub use observe::Observer;
pub use record::{
    Attempt, CompensationRecord, ExecError, ExecutionRecord, ExecutionStatus, Payload, RecordValue, StepRecord,
    StepResponse, StepStatus, code_name,
};

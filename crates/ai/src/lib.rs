//! Patterns from the system itself: synthesized from a goal over the catalog (GeneratePattern)
//! and mined from what callers really run (SuggestPatterns), each a complete document that
//! type-checks, with its evidence.
//!
//! Like `nexus-core`, the library does no I/O: the server hands it the catalog, the registered
//! patterns and the executions it may see (already filtered to what the caller may see), and an
//! optional LLM's answers. The `nexus-eval` binary measures both on the evaluation set in
//! `eval/`.

pub mod canon;
pub mod index;
pub mod mine;
pub mod names;
pub mod suggest;
pub mod synth;
pub mod synthetic;

pub use index::Index;
pub use synth::{Candidate, Generated, Goal, GoalError, GoalField, Options, generate};

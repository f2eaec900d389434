//! One shape for every long-running part of a server, and the order they stop in.
//!
//! Each part is built from its options (`…::new`), then runs as `run(self, shutdown)` on a task
//! the [`Tasks`] tracker owns, until its `shutdown` token is cancelled; whoever needs to talk to
//! it holds a cheap handle (the `Registry`, the `Engine`, the `StoreBackedJournal`), never the
//! task. `Nexus::shutdown` is the one signal: it cancels the [`Stages`] in the order
//! ARCHITECTURE.md states ("Shutdown") and then waits until no task of the server is left.

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Every task a server starts, so shutdown can wait for all of them to end.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
}

impl Tasks {
    /// Runs `part` on a tracked task.
    pub fn spawn<F>(&self, part: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(part);
    }

    /// How many tracked tasks are still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits (at most `within`) for every tracked task to end; returns how many are left.
    pub async fn wait(&self, within: Duration) -> usize {
        self.tracker.close();
        let _ = tokio::time::timeout(within, self.tracker.wait()).await;
        self.tracker.len()
    }
}

/// The stop signals, one per stage, all children of one root: cancelling the root stops
/// everything at once (a dropped server), `Nexus::shutdown` cancels them in order.
#[derive(Clone, Default)]
pub struct Stages {
    root: CancellationToken,
    /// The listener: no new connections; requests in flight go on.
    pub accept: CancellationToken,
    /// Lease heartbeats and take-overs: this replica claims nothing more.
    pub leases: CancellationToken,
    /// Pattern refresh, catalog refresh and usage counts (a last flush on the way out).
    pub background: CancellationToken,
    /// The journal's writers: they drain what is queued, then end.
    pub journal: CancellationToken,
}

impl Stages {
    pub fn new() -> Self {
        let root = CancellationToken::new();
        Self {
            accept: root.child_token(),
            leases: root.child_token(),
            background: root.child_token(),
            journal: root.child_token(),
            root,
        }
    }

    /// Stops every stage at once.
    pub fn stop_all(&self) {
        self.root.cancel();
    }
}

//! The engine's journal over the store, and resuming durable executions after a restart.

use std::sync::Arc;

use nexus_engine::{Engine, ExecutionRecord, Journal, JournalError, JournalStart};
use nexus_store::{FinishedExecution, Journal as StoreJournal};

use crate::{convert, registry::Registry};

/// Journals durable executions in the store (SQLite or PostgreSQL).
pub struct StoreBackedJournal {
    pub store: Arc<dyn StoreJournal>,
}

fn err(e: nexus_store::Error) -> JournalError {
    JournalError(e.to_string())
}

#[async_trait::async_trait]
impl Journal for StoreBackedJournal {
    async fn start(&self, s: &JournalStart) -> Result<(), JournalError> {
        self.store
            .start_execution(&nexus_store::JournalStart {
                id: s.id.to_string(),
                pattern_name: s.pattern_name.to_string(),
                pattern_version: s.pattern_version.to_string(),
                input: s.input.to_string(),
                idempotency_key: s.idempotency_key.clone(),
                started_at: std::time::SystemTime::now(),
            })
            .await
            .map_err(err)
    }

    async fn step_completed(&self, execution_id: &str, step_id: &str, result: &str) -> Result<(), JournalError> {
        self.store.complete_step(execution_id, step_id, result).await.map_err(err)
    }

    async fn finished(&self, record: &ExecutionRecord) -> Result<(), JournalError> {
        let execution = convert::execution(record, true);
        let status = convert::status(record.status).as_str_name().trim_start_matches("EXECUTION_STATUS_").to_string();
        let json = convert::message_json(&execution, "nexus.v1.Execution");
        self.store
            .finish_execution(&FinishedExecution {
                id: record.id.to_string(),
                pattern_name: record.pattern_name.to_string(),
                status,
                record: json.to_string(),
            })
            .await
            .map_err(err)
    }
}

/// Resumes every durable execution a previous process left unfinished. Returns how many.
pub async fn resume_unfinished(store: &dyn StoreJournal, registry: &Registry, engine: &Engine) -> usize {
    let unfinished = match store.unfinished_executions().await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!("reading unfinished executions from the journal: {e}");
            return 0;
        }
    };
    let mut resumed = 0;
    for u in unfinished {
        let pattern = match registry.executable_fresh(&u.start.pattern_name, &u.start.pattern_version).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(execution = %u.start.id, "cannot resume: {e}");
                continue;
            }
        };
        let input = serde_json::from_str::<serde_json::Value>(&u.start.input)
            .map(|v| nexus_core::value::serde_to_cel(&v))
            .unwrap_or(cel::Value::Null);
        tracing::info!(
            execution = %u.start.id, pattern = %u.start.pattern_name, completed_steps = u.steps.len(),
            "resuming a durable execution"
        );
        let engine = engine.clone();
        tokio::spawn(async move {
            engine.resume(pattern, Arc::from(u.start.id.as_str()), input, u.start.idempotency_key, &u.steps).await;
        });
        resumed += 1;
    }
    resumed
}

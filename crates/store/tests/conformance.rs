//! The conformance suite against every store: SQLite in memory, SQLite on disk, and the real
//! PostgreSQL server (`NEXUS_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`),
//! each run in a schema of its own that is dropped afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use nexus_store::{PgStore, SqliteStore, conformance};
use sqlx::Connection;

#[tokio::test]
async fn sqlite_in_memory() {
    let store = SqliteStore::in_memory().await.unwrap();
    conformance::run_all(&store).await;
    conformance::check_journal_lifecycle(&store).await;
    conformance::check_journal_batches_are_atomic(&store).await;
    conformance::check_leases(&store).await;
}

#[tokio::test]
async fn sqlite_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    conformance::run_all(&store).await;
    conformance::check_journal_lifecycle(&store).await;
    conformance::check_journal_batches_are_atomic(&store).await;
    conformance::check_leases(&store).await;
}

pub fn database_url() -> String {
    std::env::var("NEXUS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema on the test server, dropped when the guard goes away.
pub struct Schema {
    pub name: String,
}

impl Schema {
    pub async fn create() -> Self {
        let name = format!("nexus_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&database_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is needed for this test: {e}", database_url()));
        sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&mut conn).await.unwrap();
        Self { name }
    }

    pub async fn drop_now(self) {
        let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name)).execute(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn postgres() {
    let schema = Schema::create().await;
    let store = PgStore::connect(&database_url(), Some(&schema.name)).await.unwrap();
    conformance::run_all(&store).await;
    conformance::check_journal_lifecycle(&store).await;
    conformance::check_journal_batches_are_atomic(&store).await;
    conformance::check_leases(&store).await;
    // A second replica on the same schema: migrations are idempotent and the data is shared.
    let replica = PgStore::connect(&database_url(), Some(&schema.name)).await.unwrap();
    use nexus_store::PatternStore;
    assert_eq!(replica.list_patterns().await.unwrap().len(), store.list_patterns().await.unwrap().len());
    schema.drop_now().await;
}

#[tokio::test]
async fn postgres_unreachable_is_a_clear_error_without_the_password() {
    let url = "postgres://nexus:hunter2@127.0.0.1:1/nexus";
    let err = match PgStore::connect(url, None).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("postgres://nexus:***@127.0.0.1:1/nexus"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

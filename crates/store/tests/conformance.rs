//! The conformance suite against every store: SQLite in memory, SQLite on disk, and the real
//! PostgreSQL server (`NEXUS_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`),
//! each run in a schema of its own that is dropped afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use nexus_store::{
    AuthStore, DescriptorCache, EventStore, JournalStore, MetaStore, PatternStore, PgStore, SqliteStore, conformance,
};
use sqlx::Connection;

/// The whole suite, for one store.
async fn every_check<S: PatternStore + JournalStore + MetaStore + AuthStore + DescriptorCache + EventStore>(store: &S) {
    conformance::run_all(store).await;
    conformance::check_journal_lifecycle(store).await;
    conformance::check_execution_listing(store).await;
    conformance::check_journal_batches_are_atomic(store).await;
    conformance::check_leases(store).await;
    conformance::run_meta(store).await;
    conformance::check_descriptor_cache(store).await;
    // Last: it claims every expired lease and prunes every event.
    conformance::run_events(store).await;
}

#[tokio::test]
async fn sqlite_in_memory() {
    let store = SqliteStore::in_memory().await.unwrap();
    every_check(&store).await;
}

#[tokio::test]
async fn sqlite_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    every_check(&store).await;
    drop(store);
    // Reopened, names registered through `insert_pattern` (which knows no tenant) have a row.
    let store = SqliteStore::open(dir.path()).await.unwrap();
    legacy_names_are_backfilled(&store).await;
}

/// `run_all` registers "ordered" 1.0.0, 1.1.0 and 2.0.0 through `PatternStore::insert_pattern`:
/// the store gives the name to tenant `default` when it opens, with `latest` computed.
async fn legacy_names_are_backfilled(store: &dyn MetaStore) {
    let name = store.pattern_name("ordered").await.unwrap().expect("the legacy name has a row");
    assert_eq!((name.tenant.as_str(), name.owner.as_str(), name.visibility.as_str()), ("default", "team", "tenant"));
    assert_eq!(name.latest.as_deref(), Some("2.0.0"));
    assert_eq!(name.description, "ordered 2.0.0");
    assert_eq!(store.versions("ordered").await.unwrap().len(), 3);
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
    every_check(&store).await;
    // A second replica on the same schema: migrations are idempotent and the data is shared.
    let replica = PgStore::connect(&database_url(), Some(&schema.name)).await.unwrap();
    assert_eq!(replica.list_patterns().await.unwrap().len(), store.list_patterns().await.unwrap().len());
    legacy_names_are_backfilled(&replica).await;
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

/// Search over 10,000 names, on disk (SQLite in a temporary directory, PostgreSQL in a fresh
/// schema): ~50 varied searches, p50 and p99 printed per store (`--nocapture` or nextest's output
/// of passing tests shows them); the p50 must stay under 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_over_ten_thousand_patterns_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).await.unwrap();
    // SQLite has one writer: registrations one after the other.
    let (p50, p99) = bench_search("sqlite", &sqlite, 1).await;
    assert!(p50 < 50.0, "sqlite search p50 {p50:.2} ms (p99 {p99:.2} ms)");

    let schema = Schema::create().await;
    let pg = PgStore::connect(&database_url(), Some(&schema.name)).await.unwrap();
    let (p50, p99) = bench_search("postgres", &pg, 16).await;
    drop(pg);
    schema.drop_now().await;
    assert!(p50 < 50.0, "postgres search p50 {p50:.2} ms (p99 {p99:.2} ms)");
}

const NAMES: usize = 10_000;
const WORDS: [&str; 40] = [
    "user", "order", "invoice", "payment", "refund", "shipping", "email", "sms", "report", "audit", "billing",
    "signup", "login", "cart", "stock", "price", "tax", "coupon", "review", "rating", "search", "index", "sync",
    "export", "import", "backup", "restore", "notify", "alert", "metric", "trace", "log", "queue", "batch", "stream",
    "cache", "quota", "plan", "trial", "churn",
];

/// Registers [`NAMES`] names through `register_version` (`concurrency` at a time), then times
/// searches; returns (p50, p99) in milliseconds.
async fn bench_search(label: &str, store: &dyn MetaStore, concurrency: usize) -> (f64, f64) {
    use futures::StreamExt;
    use nexus_store::{NewVersion, SearchQuery, SearchSort, StoredPattern, Viewer};
    use std::time::{Duration, Instant, SystemTime};

    let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
    let word = |i: usize| WORDS[i % WORDS.len()];
    let version = |i: usize| {
        let name = format!("{}-{}-{i:05}", word(i), word(i / 40 + 7));
        NewVersion {
            pattern: StoredPattern {
                name: name.clone(),
                version: "1.0.0".into(),
                owner: format!("u{}", i % 50),
                description: format!("Handles {} and {} (pattern {i})", word(i * 7), word(i * 13 + 3)),
                document: format!(r#"{{"name":"{name}"}}"#),
                registered_at: base + Duration::from_millis(i as u64),
            },
            tags: vec![format!("tag{}", i % 30), format!("tag{}", (i * 7) % 30)],
            tenant: format!("t{}", i % 10),
            admin: false,
            visibility: ["public", "tenant", "private"][i % 3].into(),
            forked_from: None,
            uses: vec![format!("pkg.S{}/M{}", i % 20, i % 100), format!("pkg.S{}/M{}", (i * 3) % 20, (i * 3) % 100)],
            calls: Vec::new(),
            events: Default::default(),
        }
    };

    let started = Instant::now();
    let outcomes: Vec<_> = futures::stream::iter(0..NAMES)
        .map(|i| {
            let v = version(i);
            async move { store.register_version(&v).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    assert!(outcomes.iter().all(|o| matches!(o, Ok(nexus_store::RegisterOutcome::Created))));
    let registered = started.elapsed();
    let executions: Vec<(String, String, u64)> =
        (0..NAMES).step_by(7).map(|i| (version(i).pattern.name, "1.0.0".to_string(), (i % 97) as u64)).collect();
    store.add_executions(&executions).await.unwrap();
    for i in (0..NAMES).step_by(50) {
        store.star(&version(i).pattern.name, &format!("t{}/fan{}", i % 10, i % 3), true).await.unwrap();
    }

    let sorts = [SearchSort::Relevance, SearchSort::Popularity, SearchSort::Name, SearchSort::Recent];
    let mut queries = Vec::new();
    for i in 0..52 {
        let mut q = SearchQuery {
            viewer: Viewer { tenant: format!("t{}", i % 10), subject: format!("u{}", i % 50), admin: i % 5 == 0 },
            text: String::new(),
            owner: String::new(),
            tag: String::new(),
            action: String::new(),
            sort: sorts[i % 4],
            offset: [0, 0, 20, 100, 1000][i % 5],
            limit: 20,
        };
        match i % 6 {
            0 => q.text = word(i * 3).to_string(),
            1 => q.text = format!("{:03}", i * 17),
            2 => q.tag = format!("tag{}", i % 30),
            3 => q.action = format!("pkg.S{}/M{}", i % 20, i % 100),
            4 => {
                q.text = word(i).to_uppercase();
                q.tag = format!("tag{}", i % 30);
            }
            _ if i % 4 == 1 => q.owner = format!("u{}", i % 50),
            _ => {} // everything visible, one page
        }
        queries.push(q);
    }
    store.search(&queries[0]).await.unwrap(); // warm-up (statement preparation)
    let mut times = Vec::new();
    let mut hits = 0;
    for q in &queries {
        let t = Instant::now();
        let page = store.search(q).await.unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        hits += page.names.len();
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let (p50, p99) = (pct(0.5), pct(0.99));
    println!(
        "{label}: {NAMES} names registered in {:.1} s; {} searches ({hits} results): p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
        registered.as_secs_f64(),
        times.len(),
        times[times.len() - 1],
    );
    assert!(hits > 0);
    (p50, p99)
}

/// The schema the migrations create, as each database describes it, compared with the snapshot
/// taken from the released migrations (`tests/schema/`): a migration, once released, never
/// changes what it creates, or existing databases and new ones would differ. (`UPDATE_EXPECT=1`
/// rewrites the snapshots, for a new migration only.)
mod schema {
    use super::*;

    #[tokio::test]
    async fn sqlite_schema_is_as_released() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).await.unwrap());
        let url = format!("sqlite://{}", dir.path().join("nexus.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        // The text of each CREATE as SQLite keeps it (ALTER TABLE … ADD COLUMN edits it in place).
        let objects: Vec<(String, String, String, Option<String>)> =
            sqlx::query_as("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let mut dump = String::new();
        for (kind, name, table, sql) in objects {
            dump += &format!("{kind} {name} ON {table}\n{}\n\n", sql.unwrap_or_default());
        }
        dump += &versions(
            sqlx::query_as("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&mut conn)
                .await
                .unwrap(),
        );
        expect_test::expect_file!["schema/sqlite.txt"].assert_eq(&dump);
    }

    #[tokio::test]
    async fn postgres_schema_is_as_released() {
        let schema = Schema::create().await;
        let store = PgStore::connect(&database_url(), Some(&schema.name)).await.unwrap();
        drop(store);
        let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
        let mut dump = String::new();
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, table_type::text FROM information_schema.tables WHERE table_schema = $1
            ORDER BY table_name",
        )
        .bind(&schema.name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for (name, kind) in tables {
            dump += &format!("{kind} {name}\n");
        }
        let columns: Vec<(String, i32, String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT table_name::text, ordinal_position::int, column_name::text, data_type::text, is_nullable::text,
                column_default::text
            FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, ordinal_position",
        )
        .bind(&schema.name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for (table, position, name, kind, nullable, default) in columns {
            let default = default.map(|d| format!(" DEFAULT {d}")).unwrap_or_default();
            let null = if nullable == "YES" { "" } else { " NOT NULL" };
            dump += &format!("column {table}.{position} {name} {kind}{null}{default}\n");
        }
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY tablename, indexname",
        )
        .bind(&schema.name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for (name, def) in indexes {
            dump += &format!("index {name}: {}\n", def.replace(&schema.name, "SCHEMA"));
        }
        let versions_sql = format!("SELECT version FROM {}.schema_migrations ORDER BY version", schema.name);
        dump += &versions(sqlx::query_as(&versions_sql).fetch_all(&mut conn).await.unwrap());
        schema.drop_now().await;
        expect_test::expect_file!["schema/postgres.txt"].assert_eq(&dump);
    }

    fn versions(rows: Vec<(i64,)>) -> String {
        let versions: Vec<String> = rows.into_iter().map(|(v,)| v.to_string()).collect();
        format!("migrations applied: {}\n", versions.join(", "))
    }
}

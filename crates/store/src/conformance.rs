//! The store conformance suite: one set of behaviours every [`PatternStore`] must show, run
//! against SQLite and PostgreSQL alike (see `tests/conformance.rs`).

// A check that panics is a failed check: the assertions are what this module is for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use crate::{InsertOutcome, PatternStore, StoredPattern};

fn pattern(name: &str, version: &str, document: &str, at: SystemTime) -> StoredPattern {
    StoredPattern {
        name: name.into(),
        version: version.into(),
        owner: "team".into(),
        description: format!("{name} {version}"),
        document: document.into(),
        registered_at: at,
    }
}

/// Registered versions are immutable: the identical document again is an idempotent success,
/// a different one a conflict, and the stored one never changes.
pub async fn check_versions_are_immutable(store: &dyn PatternStore) {
    let now = SystemTime::now();
    let p = pattern("immutable", "1.0.0", r#"{"name":"immutable"}"#, now);
    assert_eq!(store.insert_pattern(&p).await.unwrap(), InsertOutcome::Created);
    assert_eq!(store.insert_pattern(&p).await.unwrap(), InsertOutcome::Identical);
    let changed = pattern("immutable", "1.0.0", r#"{"name":"immutable","x":1}"#, now);
    assert_eq!(store.insert_pattern(&changed).await.unwrap(), InsertOutcome::Conflict);
    let all = store.list_patterns().await.unwrap();
    let stored: Vec<_> = all.iter().filter(|s| s.name == "immutable").collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].document, p.document);
}

/// Every version is listed with all its fields, oldest registration first; timestamps keep
/// millisecond precision.
pub async fn check_lists_every_version_in_registration_order(store: &dyn PatternStore) {
    let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    for (i, v) in ["1.0.0", "1.1.0", "2.0.0"].iter().enumerate() {
        let p = pattern("ordered", v, &format!("{{\"v\":\"{v}\"}}"), base + Duration::from_millis(i as u64));
        assert_eq!(store.insert_pattern(&p).await.unwrap(), InsertOutcome::Created);
    }
    let all = store.list_patterns().await.unwrap();
    let ordered: Vec<_> = all.iter().filter(|s| s.name == "ordered").collect();
    let versions: Vec<&str> = ordered.iter().map(|s| s.version.as_str()).collect();
    assert_eq!(versions, ["1.0.0", "1.1.0", "2.0.0"]);
    assert_eq!(ordered[0].registered_at, base);
    assert_eq!(ordered[1].owner, "team");
    assert_eq!(ordered[2].description, "ordered 2.0.0");
    assert_eq!(ordered[2].document, "{\"v\":\"2.0.0\"}");
}

/// Concurrent registrations of the same new version: exactly one creates it, the others see
/// the identical document.
pub async fn check_concurrent_registrations_create_once(store: &dyn PatternStore) {
    let p = pattern("racy", "1.0.0", r#"{"name":"racy"}"#, SystemTime::now());
    let outcomes = futures::future::join_all((0..8).map(|_| store.insert_pattern(&p))).await;
    let created = outcomes.iter().filter(|o| matches!(o, Ok(InsertOutcome::Created))).count();
    let identical = outcomes.iter().filter(|o| matches!(o, Ok(InsertOutcome::Identical))).count();
    assert_eq!((created, identical), (1, 7), "{outcomes:?}");
}

/// Documents survive byte for byte (unicode, quotes, long text).
pub async fn check_documents_round_trip_exactly(store: &dyn PatternStore) {
    let doc = format!("{{\"description\":\"naïve — “quoted” \\\\ {}\"}}", "x".repeat(100_000));
    let p = pattern("exact", "1.0.0", &doc, SystemTime::now());
    store.insert_pattern(&p).await.unwrap();
    let all = store.list_patterns().await.unwrap();
    let stored = all.iter().find(|s| s.name == "exact").unwrap();
    assert_eq!(stored.document, doc);
}

/// Runs every check on `store` (which must start empty).
pub async fn run_all(store: &dyn PatternStore) {
    check_versions_are_immutable(store).await;
    check_lists_every_version_in_registration_order(store).await;
    check_concurrent_registrations_create_once(store).await;
    check_documents_round_trip_exactly(store).await;
}

/// A durable execution's journal: start, completed steps in order, finish (which compacts the
/// step results), lookups by id and idempotency key.
pub async fn check_journal_lifecycle(journal: &dyn crate::Journal) {
    use crate::{FinishedExecution, JournalStart};
    let id = format!("exec-{}", uuid::Uuid::now_v7().simple());
    let start = JournalStart {
        id: id.clone(),
        pattern_name: "durable".into(),
        pattern_version: "1.0.0".into(),
        input: r#"{"email":"a@b.c"}"#.into(),
        idempotency_key: Some(format!("key-{id}")),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        owner: "replica-a".into(),
        lease_until: SystemTime::UNIX_EPOCH + Duration::from_millis(4_000_000_000_000),
    };
    journal.start_execution(&start).await.unwrap();
    journal.complete_step(&id, "user", r#"{"m":"AAE="}"#).await.unwrap();
    journal.complete_step(&id, "mail", r#"{"m":"AAI="}"#).await.unwrap();
    // Journaling a step again (a retried write) keeps one result.
    journal.complete_step(&id, "user", r#"{"m":"AAE="}"#).await.unwrap();

    let unfinished = journal.unfinished_executions().await.unwrap();
    let mine = unfinished.iter().find(|u| u.start.id == id).expect("the execution is unfinished");
    assert_eq!(mine.start, start);
    let steps: Vec<&str> = mine.steps.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(steps.len(), 2);
    assert!(steps.contains(&"user") && steps.contains(&"mail"), "{steps:?}");
    assert_eq!(journal.execution_by_idempotency_key("durable", &format!("key-{id}")).await.unwrap(), Some(id.clone()));
    assert!(journal.finished_execution(&id).await.unwrap().is_none());
    assert_eq!(journal.unfinished_execution(&id).await.unwrap().as_ref(), Some(mine));

    // The same idempotency key cannot start a second execution.
    let twin = JournalStart { id: format!("{id}-twin"), ..start.clone() };
    assert!(journal.start_execution(&twin).await.is_err());

    let finished = FinishedExecution {
        id: id.clone(),
        pattern_name: "durable".into(),
        status: "SUCCEEDED".into(),
        record: "{}".into(),
    };
    journal.finish_execution(&finished).await.unwrap();
    assert!(journal.unfinished_executions().await.unwrap().iter().all(|u| u.start.id != id));
    assert_eq!(journal.finished_execution(&id).await.unwrap(), Some(finished));
    assert!(journal.unfinished_execution(&id).await.unwrap().is_none());

    // Retention: finished executions older than the cutoff go, newer ones and unfinished stay.
    let cutoff = start.started_at + Duration::from_millis(1);
    journal.prune_finished(start.started_at).await.unwrap();
    assert!(journal.finished_execution(&id).await.unwrap().is_some(), "not older than the cutoff");
    assert!(journal.prune_finished(cutoff).await.unwrap() >= 1);
    assert!(journal.finished_execution(&id).await.unwrap().is_none(), "pruned");
    assert!(journal.execution_by_idempotency_key("durable", &format!("key-{id}")).await.unwrap().is_none());
}

/// A batch applies all its writes in one transaction, or none of them.
pub async fn check_journal_batches_are_atomic(journal: &dyn crate::Journal) {
    use crate::{FinishedExecution, JournalOp, JournalStart};
    let id = format!("batch-{}", uuid::Uuid::now_v7().simple());
    let start = |id: &str| JournalStart {
        id: id.to_string(),
        pattern_name: "batched".into(),
        pattern_version: "1.0.0".into(),
        input: "{}".into(),
        idempotency_key: None,
        started_at: SystemTime::now(),
        owner: "replica-a".into(),
        lease_until: SystemTime::now() + Duration::from_secs(3600),
    };
    let ops = vec![
        JournalOp::Start(start(&id)),
        JournalOp::Step { execution_id: id.clone(), step_id: "a".into(), result: "{}".into() },
    ];
    journal.apply(&ops).await.unwrap();
    let unfinished = journal.unfinished_executions().await.unwrap();
    assert_eq!(unfinished.iter().find(|u| u.start.id == id).map(|u| u.steps.len()), Some(1));

    // The second start of the same id fails, so the whole batch (with its finish) is rolled back.
    let bad = vec![
        JournalOp::Finish(FinishedExecution {
            id: id.clone(),
            pattern_name: "batched".into(),
            status: "SUCCEEDED".into(),
            record: "{}".into(),
        }),
        JournalOp::Start(start(&id)),
    ];
    assert!(journal.apply(&bad).await.is_err());
    assert!(journal.finished_execution(&id).await.unwrap().is_none(), "the failed batch left nothing behind");
}

/// Leases: only expired executions are claimed, each by one claimer; renewing and releasing
/// touch only the owner's unfinished executions.
pub async fn check_leases(journal: &dyn crate::Journal) {
    use crate::JournalStart;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
    let start = |n: usize, owner: &str, lease_until: SystemTime| JournalStart {
        id: format!("lease-{tag}-{n}"),
        pattern_name: "leased".into(),
        pattern_version: "1.0.0".into(),
        input: "{}".into(),
        idempotency_key: None,
        started_at: now,
        owner: format!("{owner}-{tag}"),
        lease_until,
    };
    let later = now + Duration::from_secs(10);
    let earlier = now - Duration::from_secs(10);
    journal.start_execution(&start(1, "alive", later)).await.unwrap();
    journal.start_execution(&start(2, "alive", later)).await.unwrap();
    for n in 3..9 {
        journal.start_execution(&start(n, "dead", earlier)).await.unwrap();
    }
    let mine = |u: &Vec<crate::UnfinishedExecution>| {
        let mut ids: Vec<String> =
            u.iter().filter(|e| e.start.id.starts_with(&format!("lease-{tag}"))).map(|e| e.start.id.clone()).collect();
        ids.sort();
        ids
    };

    // Two claimers at once split the six expired executions between them, none twice.
    let (c1, c2) = (format!("c1-{tag}"), format!("c2-{tag}"));
    let (a, b) =
        futures::join!(journal.claim_expired(&c1, now, later, 100), journal.claim_expired(&c2, now, later, 100));
    let (a, b) = (mine(&a.unwrap()), mine(&b.unwrap()));
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    let expected: Vec<String> = (3..9).map(|n| format!("lease-{tag}-{n}")).collect();
    assert_eq!(all, expected, "claimed {a:?} and {b:?}");
    assert!(mine(&journal.claim_expired(&format!("c3-{tag}"), now, later, 100).await.unwrap()).is_empty());

    // Only the executions the owner still runs are renewed (one it stopped running lapses).
    let running = [format!("lease-{tag}-1"), format!("lease-{tag}-2"), format!("lease-{tag}-3")];
    assert_eq!(journal.renew_leases(&format!("alive-{tag}"), &running[..1], later).await.unwrap(), 1);
    assert_eq!(journal.renew_leases(&format!("alive-{tag}"), &running, later).await.unwrap(), 2);
    assert_eq!(journal.renew_leases(&format!("alive-{tag}"), &[], later).await.unwrap(), 0);
    assert_eq!(journal.release_leases(&format!("alive-{tag}")).await.unwrap(), 2);
    let taken = journal.claim_expired(&format!("c3-{tag}"), now, later, 1).await.unwrap();
    assert_eq!(mine(&taken).len(), 1, "the limit is honoured");
    assert!(taken[0].start.owner == format!("c3-{tag}") && taken[0].start.lease_until == later, "{taken:?}");
}

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

/// ListExecutions over the journal: one tenant's executions only, newest first, filtered by
/// pattern and status, paginated by id.
pub async fn check_execution_listing(journal: &dyn crate::JournalStore) {
    use crate::{ExecutionQuery, ExecutionStart, FinishedExecution};
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let tenant = format!("tenant-{tag}");
    // Ids sort like their creation (UUIDv7 in production): a zero-padded counter here.
    let id = |n: usize| format!("{tag}-{n:03}");
    for n in 0..6 {
        let start = ExecutionStart {
            id: id(n),
            pattern_name: if n % 2 == 0 { "even".into() } else { "odd".into() },
            pattern_version: "1.0.0".into(),
            input: "{}".into(),
            idempotency_key: None,
            tenant: if n == 5 { format!("other-{tag}") } else { tenant.clone() },
            trace: String::new(),
            started_at: SystemTime::now(),
            owner: "r".into(),
            lease_until: SystemTime::now(),
        };
        journal.start_execution(&start).await.unwrap();
    }
    for n in [0, 1] {
        let finished = FinishedExecution {
            id: id(n),
            pattern_name: "x".into(),
            status: "SUCCEEDED".into(),
            record: format!("summary-{n}"),
        };
        journal.finish_execution(&finished).await.unwrap();
    }
    let ids = |rows: Vec<crate::JournaledExecution>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let q = ExecutionQuery { tenant: tenant.clone(), limit: 10, ..Default::default() };
    let all = journal.list_executions(&q).await.unwrap();
    assert!(all.iter().all(|e| e.tenant == tenant), "another tenant's execution was listed");
    assert_eq!(ids(all.clone()), [id(4), id(3), id(2), id(1), id(0)]);
    let first = all.iter().find(|e| e.id == id(0)).unwrap();
    assert_eq!((first.status.as_str(), first.record.as_deref()), ("SUCCEEDED", Some("summary-0")));
    assert_eq!(all[0].record, None, "a running execution has no summary yet");
    let page = ExecutionQuery { limit: 2, before: Some(id(3)), ..q.clone() };
    assert_eq!(ids(journal.list_executions(&page).await.unwrap()), [id(2), id(1)]);
    let even = ExecutionQuery { pattern_name: Some("even".into()), ..q.clone() };
    assert_eq!(ids(journal.list_executions(&even).await.unwrap()), [id(4), id(2), id(0)]);
    let running = ExecutionQuery { status: Some("RUNNING".into()), ..q.clone() };
    assert_eq!(ids(journal.list_executions(&running).await.unwrap()), [id(4), id(3), id(2)]);
}

/// A durable execution's journal: start, completed steps in order, finish (which compacts the
/// step results), lookups by id and idempotency key.
pub async fn check_journal_lifecycle(journal: &dyn crate::JournalStore) {
    use crate::{ExecutionStart, FinishedExecution};
    let id = format!("exec-{}", uuid::Uuid::now_v7().simple());
    let start = ExecutionStart {
        id: id.clone(),
        pattern_name: "durable".into(),
        pattern_version: "1.0.0".into(),
        input: r#"{"email":"a@b.c"}"#.into(),
        idempotency_key: Some(format!("key-{id}")),
        tenant: "acme".into(),
        // The engine's journaled trace context (a tracestate may hold spaces): back unchanged.
        trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 a3ce929d0e0e4736 congo=t61rcWkgMzE, rojo=1"
            .into(),
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
    let twin = ExecutionStart { id: format!("{id}-twin"), ..start.clone() };
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
pub async fn check_journal_batches_are_atomic(journal: &dyn crate::JournalStore) {
    use crate::{ExecutionStart, FinishedExecution, JournalOp};
    let id = format!("batch-{}", uuid::Uuid::now_v7().simple());
    let start = |id: &str| ExecutionStart {
        id: id.to_string(),
        pattern_name: "batched".into(),
        pattern_version: "1.0.0".into(),
        input: "{}".into(),
        idempotency_key: None,
        tenant: "globex".into(),
        trace: String::new(),
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
pub async fn check_leases(journal: &dyn crate::JournalStore) {
    use crate::ExecutionStart;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
    let start = |n: usize, owner: &str, lease_until: SystemTime| ExecutionStart {
        id: format!("lease-{tag}-{n}"),
        pattern_name: "leased".into(),
        pattern_version: "1.0.0".into(),
        input: "{}".into(),
        idempotency_key: None,
        tenant: "globex".into(),
        trace: String::new(),
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

/// A short random tag that keeps one run's names, tenants and subjects apart from another's when
/// runs share a database.
fn run_tag() -> String {
    // The last hex digits of a v7 UUID are random.
    uuid::Uuid::now_v7().simple().to_string()[20..].to_string()
}

/// A version of `name` registered by `owner` of `tenant` (visibility `tenant`, no graph).
fn new_version(name: &str, version: &str, tenant: &str, owner: &str) -> crate::NewVersion {
    crate::NewVersion {
        pattern: StoredPattern {
            name: name.into(),
            version: version.into(),
            owner: owner.into(),
            description: format!("{name} at {version}"),
            document: format!(r#"{{"name":"{name}","version":"{version}"}}"#),
            registered_at: SystemTime::now(),
        },
        tags: Vec::new(),
        tenant: tenant.into(),
        admin: false,
        visibility: "tenant".into(),
        forked_from: None,
        uses: Vec::new(),
        calls: Vec::new(),
        events: Default::default(),
    }
}

fn viewer(tenant: &str, subject: &str, admin: bool) -> crate::Viewer {
    crate::Viewer { tenant: tenant.into(), subject: subject.into(), admin }
}

/// Everything `viewer` may see whose name, description or a tag contains `text`, by name.
fn query(viewer: &crate::Viewer, text: &str) -> crate::SearchQuery {
    crate::SearchQuery {
        viewer: viewer.clone(),
        text: text.into(),
        owner: String::new(),
        tag: String::new(),
        action: String::new(),
        sort: crate::SearchSort::Name,
        offset: 0,
        limit: 1000,
    }
}

async fn found(store: &dyn crate::MetaStore, q: &crate::SearchQuery) -> Vec<String> {
    store.search(q).await.unwrap().names.into_iter().map(|n| n.name).collect()
}

/// Registration outcomes, `latest` and deprecation, versions, visibility, stars, executions and
/// search.
pub async fn check_meta(store: &dyn crate::MetaStore) {
    use crate::RegisterOutcome::*;
    let t = run_tag();
    let (acme, globex) = (format!("acme-{t}"), format!("globex-{t}"));
    let a = format!("m{t}-alpha");
    let not_alice = || NotOwner { tenant: acme.clone(), owner: "alice".into() };

    let first = new_version(&a, "1.0.0", &acme, "alice");
    assert_eq!(store.register_version(&first).await.unwrap(), Created);
    assert_eq!(store.register_version(&first).await.unwrap(), Identical);
    // The identical document is a retry whoever sends it.
    let retry = crate::NewVersion { tenant: globex.clone(), ..first.clone() };
    assert_eq!(store.register_version(&retry).await.unwrap(), Identical);
    let mut changed = first.clone();
    changed.pattern.document = r#"{"changed":true}"#.into();
    assert_eq!(store.register_version(&changed).await.unwrap(), Conflict);

    // Only the owner, or an admin of the name's tenant, adds versions.
    assert_eq!(store.register_version(&new_version(&a, "1.1.0", &acme, "bob")).await.unwrap(), not_alice());
    let foreign_admin = crate::NewVersion { admin: true, ..new_version(&a, "1.1.0", &globex, "alice") };
    assert_eq!(store.register_version(&foreign_admin).await.unwrap(), not_alice());
    let admin = crate::NewVersion { admin: true, ..new_version(&a, "1.1.0", &acme, "dave") };
    assert_eq!(store.register_version(&admin).await.unwrap(), Created);

    // Versions only grow, in semver order (1.10.0 follows 1.9.0).
    let not_greater = |highest: &str| NotGreater { highest: highest.into() };
    assert_eq!(store.register_version(&new_version(&a, "1.0.5", &acme, "alice")).await.unwrap(), not_greater("1.1.0"));
    let rc = new_version(&a, "1.1.0-rc.1", &acme, "alice");
    assert_eq!(store.register_version(&rc).await.unwrap(), not_greater("1.1.0"));
    assert_eq!(store.register_version(&new_version(&a, "1.9.0", &acme, "alice")).await.unwrap(), Created);
    let mut v1_10 = new_version(&a, "1.10.0", &acme, "alice");
    v1_10.tags = vec![format!("tag-{t}"), "billing".into()];
    v1_10.visibility = "public".into(); // an existing name keeps its visibility
    assert_eq!(store.register_version(&v1_10).await.unwrap(), Created);
    assert_eq!(store.register_version(&new_version(&a, "1.2.0", &acme, "alice")).await.unwrap(), not_greater("1.10.0"));

    // A fork takes a new name.
    let onto_existing =
        crate::NewVersion { forked_from: Some(format!("{a}@1.0.0")), ..new_version(&a, "2.0.0", &acme, "alice") };
    assert_eq!(store.register_version(&onto_existing).await.unwrap(), NameTaken);
    let fork = format!("m{t}-alpha-fork");
    let forked = crate::NewVersion {
        forked_from: Some(format!("{a}@1.0.0")),
        visibility: "private".into(),
        ..new_version(&fork, "1.0.0", &globex, "carol")
    };
    assert_eq!(store.register_version(&forked).await.unwrap(), Created);
    let f = store.pattern_name(&fork).await.unwrap().expect("the fork exists");
    assert_eq!(f.forked_from.as_deref(), Some(format!("{a}@1.0.0").as_str()));
    assert_eq!((f.tenant.as_str(), f.owner.as_str(), f.visibility.as_str()), (globex.as_str(), "carol", "private"));
    assert_eq!(f.latest.as_deref(), Some("1.0.0"));

    // The name: its owner stays (an admin's version does not change it); latest is the highest
    // version, and description and tags come from it.
    let n = store.pattern_name(&a).await.unwrap().expect("the name exists");
    assert_eq!((n.tenant.as_str(), n.owner.as_str(), n.visibility.as_str()), (acme.as_str(), "alice", "tenant"));
    assert_eq!((n.forked_from.as_deref(), n.latest.as_deref()), (None, Some("1.10.0")));
    assert_eq!(n.description, format!("{a} at 1.10.0"));
    assert_eq!(n.tags, [format!("tag-{t}"), "billing".into()]);
    assert_eq!((n.stars, n.executions), (0, 0));
    assert!(n.created_at <= n.updated_at);
    assert!(store.pattern_name(&format!("m{t}-missing")).await.unwrap().is_none());
    let all = store.pattern_names().await.unwrap();
    assert!(all.iter().any(|p| p == &n) && all.iter().any(|p| p.name == fork), "{all:?}");

    let versions = store.versions(&a).await.unwrap();
    let listed: Vec<&str> = versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(listed, ["1.0.0", "1.1.0", "1.9.0", "1.10.0"]);
    assert!(versions.iter().all(|v| !v.deprecated && v.executions == 0 && v.name == a));
    assert_eq!(versions[1].description, format!("{a} at 1.1.0"));
    assert!(store.versions(&format!("m{t}-missing")).await.unwrap().is_empty());

    // Deprecation moves `latest` down (description and tags follow) and back.
    assert_eq!(store.set_deprecated(&a, "1.10.0", true, "broken").await.unwrap(), Some(Some("1.9.0".into())));
    let n = store.pattern_name(&a).await.unwrap().unwrap();
    assert_eq!((n.latest.as_deref(), n.description.as_str()), (Some("1.9.0"), format!("{a} at 1.9.0").as_str()));
    assert!(n.tags.is_empty(), "{n:?}");
    let v = store.versions(&a).await.unwrap().pop().unwrap();
    assert!(v.deprecated && v.deprecation_reason == "broken", "{v:?}");
    assert_eq!(store.set_deprecated(&a, "3.0.0", true, "").await.unwrap(), None);
    assert_eq!(store.set_deprecated(&format!("m{t}-missing"), "1.0.0", true, "").await.unwrap(), None);
    // A deprecated version keeps its number, but new versions need only pass those still in use.
    let mut again = new_version(&a, "1.10.0", &acme, "alice");
    again.pattern.document = "{\"changed\": true}".into();
    assert_eq!(store.register_version(&again).await.unwrap(), Conflict);
    assert_eq!(store.register_version(&new_version(&a, "1.5.0", &acme, "alice")).await.unwrap(), not_greater("1.9.0"));
    assert_eq!(store.set_deprecated(&a, "1.0.0", true, "old").await.unwrap(), Some(Some("1.9.0".into())));
    assert_eq!(store.set_deprecated(&a, "1.9.0", true, "old").await.unwrap(), Some(Some("1.1.0".into())));
    assert_eq!(store.set_deprecated(&a, "1.1.0", true, "old").await.unwrap(), Some(None));
    let n = store.pattern_name(&a).await.unwrap().unwrap();
    assert_eq!(n.latest, None);
    // Every version deprecated: still listed.
    let alice = viewer(&acme, "alice", false);
    assert_eq!(found(store, &query(&alice, &a)).await, [a.as_str()]);
    assert_eq!(store.set_deprecated(&a, "1.10.0", false, "ignored").await.unwrap(), Some(Some("1.10.0".into())));
    let v = store.versions(&a).await.unwrap().pop().unwrap();
    assert!(!v.deprecated && v.deprecation_reason.is_empty(), "{v:?}");
    assert_eq!(store.pattern_name(&a).await.unwrap().unwrap().tags, [format!("tag-{t}"), "billing".into()]);

    assert!(store.set_visibility(&a, "public").await.unwrap());
    assert_eq!(store.pattern_name(&a).await.unwrap().unwrap().visibility, "public");
    assert!(!store.set_visibility(&format!("m{t}-missing"), "public").await.unwrap());

    // Stars: idempotent, counted.
    let (bob, carol) = (format!("{acme}/bob"), format!("{globex}/carol"));
    assert_eq!(store.star(&a, &bob, true).await.unwrap(), 1);
    assert_eq!(store.star(&a, &bob, true).await.unwrap(), 1);
    assert_eq!(store.star(&a, &carol, true).await.unwrap(), 2);
    assert!(store.starred(&a, &bob).await.unwrap());
    assert_eq!(store.star(&a, &bob, false).await.unwrap(), 1);
    assert_eq!(store.star(&a, &bob, false).await.unwrap(), 1);
    assert!(!store.starred(&a, &bob).await.unwrap() && store.starred(&a, &carol).await.unwrap());
    assert_eq!(store.pattern_name(&a).await.unwrap().unwrap().stars, 1);
    assert_eq!(store.star(&format!("m{t}-missing"), &bob, true).await.unwrap(), 0);
    assert!(!store.starred(&format!("m{t}-missing"), &bob).await.unwrap());

    // Executions, per version and in total (unknown versions are ignored).
    let counts = [
        (a.clone(), "1.0.0".to_string(), 3),
        (a.clone(), "1.1.0".to_string(), 2),
        (a.clone(), "1.0.0".to_string(), 1),
        (a.clone(), "7.0.0".to_string(), 100),
        (format!("m{t}-missing"), "1.0.0".to_string(), 5),
    ];
    store.add_executions(&counts).await.unwrap();
    store.add_executions(&[]).await.unwrap();
    let executions: Vec<u64> = store.versions(&a).await.unwrap().iter().map(|v| v.executions).collect();
    assert_eq!(executions, [4, 2, 0, 0]);
    assert_eq!(store.pattern_name(&a).await.unwrap().unwrap().executions, 6);

    check_search(store).await;
}

/// Search: who sees what, the text, tag, owner and action filters, the sorts and the pages.
pub async fn check_search(store: &dyn crate::MetaStore) {
    use crate::{SearchSort, Viewer};
    let t = run_tag();
    let (acme, globex) = (format!("acme-{t}"), format!("globex-{t}"));

    // Visibility: public for all, tenant for the tenant, private for the owner and its tenant's
    // admins.
    let vis = |v: &str| format!("v{t}-{v}");
    for visibility in ["public", "tenant", "private"] {
        let version = crate::NewVersion {
            visibility: visibility.into(),
            ..new_version(&vis(visibility), "1.0.0", &acme, "alice")
        };
        assert_eq!(store.register_version(&version).await.unwrap(), crate::RegisterOutcome::Created);
    }
    let sees = |v: Viewer| {
        let q = query(&v, &format!("v{t}-"));
        async move { found(store, &q).await }
    };
    let (public, tenant, private) = (vis("public"), vis("tenant"), vis("private"));
    assert_eq!(sees(viewer(&globex, "carol", false)).await, [public.as_str()]);
    assert_eq!(sees(viewer(&globex, "alice", true)).await, [public.as_str()], "an admin of another tenant");
    assert_eq!(sees(viewer(&acme, "bob", false)).await, [public.clone(), tenant.clone()]);
    assert_eq!(sees(viewer(&acme, "alice", false)).await, [private.clone(), public.clone(), tenant.clone()]);
    assert_eq!(sees(viewer(&acme, "dave", true)).await, [private.clone(), public.clone(), tenant.clone()]);

    // Text (case-insensitive, over name, description and tags), ranked by relevance.
    let word = format!("q{t}");
    let owner = format!("olga-{t}");
    let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
    let mail = format!("pkg{t}.Mail/Send");
    let exact = word.clone();
    let prefix = format!("{word}-prefix");
    let contains = format!("x-{word}");
    let in_description = format!("d{t}-description");
    let in_tag = format!("d{t}-tagged");
    let unrelated = format!("d{t}-unrelated");
    let (exact, prefix, contains, in_description, in_tag, unrelated) = (
        exact.as_str(),
        prefix.as_str(),
        contains.as_str(),
        in_description.as_str(),
        in_tag.as_str(),
        unrelated.as_str(),
    );
    for (i, name) in [exact, prefix, contains, in_description, in_tag, unrelated].into_iter().enumerate() {
        let mut v = new_version(name, "1.0.0", &acme, &owner);
        v.visibility = "public".into();
        v.pattern.registered_at = base + Duration::from_secs(i as u64);
        v.pattern.description = if name == in_description {
            format!("Mentions {} in capitals", word.to_uppercase())
        } else {
            "Something else".into()
        };
        if name == in_tag {
            v.tags = vec![format!("{word}-tag"), "other".into()];
        }
        if name == exact || name == prefix {
            v.uses = vec![mail.clone()];
        }
        assert_eq!(store.register_version(&v).await.unwrap(), crate::RegisterOutcome::Created);
    }
    let carol = viewer(&globex, "carol", false);
    let relevance = crate::SearchQuery { sort: SearchSort::Relevance, ..query(&carol, &word.to_uppercase()) };
    let ranked = [exact, prefix, contains, in_description, in_tag];
    assert_eq!(found(store, &relevance).await, ranked);
    // Wildcards are literal.
    let owned = crate::SearchQuery { owner: owner.clone(), ..query(&carol, "") };
    for text in ["%", "_", "\\"] {
        assert!(found(store, &crate::SearchQuery { text: text.into(), ..owned.clone() }).await.is_empty(), "{text}");
    }

    // Owner, tag and action filters.
    let mut by_name = vec![contains, in_description, in_tag, unrelated, exact, prefix];
    by_name.sort();
    assert_eq!(found(store, &owned).await, by_name);
    let relevance_without_text = crate::SearchQuery { sort: SearchSort::Relevance, ..owned.clone() };
    assert_eq!(found(store, &relevance_without_text).await, by_name, "by name without text");
    assert!(found(store, &crate::SearchQuery { owner: "olga".into(), ..query(&carol, "") }).await.is_empty());
    let tagged = |tag: &str| crate::SearchQuery { tag: tag.into(), ..owned.clone() };
    assert_eq!(found(store, &tagged(&format!("{word}-tag"))).await, [in_tag]);
    assert!(found(store, &tagged(&word)).await.is_empty(), "a tag matches exactly");
    assert!(found(store, &tagged(&format!("{word}-TAG"))).await.is_empty(), "a tag matches exactly");
    let using = crate::SearchQuery { action: mail.clone(), ..query(&carol, "") };
    assert_eq!(found(store, &using).await, [exact, prefix]);
    // Only the latest version counts.
    let mut without = new_version(prefix, "2.0.0", &acme, &owner);
    without.pattern.registered_at = base + Duration::from_secs(10);
    assert_eq!(store.register_version(&without).await.unwrap(), crate::RegisterOutcome::Created);
    assert_eq!(found(store, &using).await, [exact]);
    assert_eq!(store.set_deprecated(prefix, "2.0.0", true, "").await.unwrap(), Some(Some("1.0.0".into())));
    assert_eq!(found(store, &using).await, [exact, prefix]);
    assert_eq!(found(store, &crate::SearchQuery { text: word.clone(), ..using.clone() }).await, [exact, prefix]);
    assert!(found(store, &crate::SearchQuery { action: format!("pkg{t}.Mail"), ..using }).await.is_empty());

    // Sorts.
    for (name, who) in [(unrelated, "x"), (unrelated, "y"), (in_description, "x"), (in_tag, "x")] {
        store.star(name, &format!("{who}-{t}"), true).await.unwrap();
    }
    let runs = |name: &str, n| (name.to_string(), "1.0.0".to_string(), n);
    store.add_executions(&[runs(in_description, 5), runs(in_tag, 1), runs(exact, 10)]).await.unwrap();
    let popular = crate::SearchQuery { sort: SearchSort::Popularity, ..owned.clone() };
    assert_eq!(found(store, &popular).await, [unrelated, in_description, in_tag, exact, prefix, contains]);
    let recent = crate::SearchQuery { sort: SearchSort::Recent, ..owned.clone() };
    assert_eq!(found(store, &recent).await, [prefix, unrelated, in_tag, in_description, contains, exact]);

    // Pages.
    let mut pages = Vec::new();
    for offset in [0, 2, 4, 6] {
        let page = store.search(&crate::SearchQuery { offset, limit: 2, ..owned.clone() }).await.unwrap();
        pages.push((page.names.iter().map(|n| n.name.clone()).collect::<Vec<_>>(), page.more));
    }
    let expected: Vec<(Vec<String>, bool)> = vec![
        (by_name[0..2].iter().map(|s| s.to_string()).collect(), true),
        (by_name[2..4].iter().map(|s| s.to_string()).collect(), true),
        (by_name[4..6].iter().map(|s| s.to_string()).collect(), false),
        (Vec::new(), false),
    ];
    assert_eq!(pages, expected);
    let page = store.search(&owned).await.unwrap();
    assert!(!page.more && page.names.len() == 6);
    assert_eq!(page.names.iter().find(|n| n.name == unrelated).map(|n| n.stars), Some(2));
}

/// The knowledge graph of registrations: USES, PART_OF, CALLS_PATTERN, FORKED_FROM, OWNED_BY,
/// and deprecation marks.
pub async fn check_graph(store: &dyn crate::MetaStore) {
    use crate::{Direction::*, GraphEdge, GraphNode};
    let t = run_tag();
    let acme = format!("acme-{t}");
    let (a, b, c, f) = (format!("g{t}-a"), format!("g{t}-b"), format!("g{t}-c"), format!("g{t}-fork"));
    let action = format!("pkg{t}.Users/Create");
    let service = format!("pkg{t}.Users");
    let versions = [
        crate::NewVersion { uses: vec![action.clone(), action.clone()], ..new_version(&a, "1.0.0", &acme, "alice") },
        crate::NewVersion { calls: vec![format!("{a}@1.0.0")], ..new_version(&b, "1.0.0", &acme, "alice") },
        crate::NewVersion { calls: vec![format!("{b}@1.0.0")], ..new_version(&c, "1.0.0", &acme, "bob") },
        crate::NewVersion { forked_from: Some(format!("{a}@1.0.0")), ..new_version(&f, "1.0.0", &acme, "bob") },
    ];
    for v in &versions {
        assert_eq!(store.register_version(v).await.unwrap(), crate::RegisterOutcome::Created);
    }
    let node = |name: &str| format!("pattern:{name}@1.0.0");
    let edge = |from: &str, kind: &str, to: &str| GraphEdge { from: from.into(), kind: kind.into(), to: to.into() };
    let action_id = format!("action:{action}");
    let service_id = format!("service:{service}");
    let alice = format!("owner:{acme}/alice");

    assert_eq!(store.graph_edges(&action_id, In, &["USES"]).await.unwrap(), [edge(&node(&a), "USES", &action_id)]);
    assert_eq!(
        store.graph_edges(&node(&a), In, &["CALLS_PATTERN"]).await.unwrap(),
        [edge(&node(&b), "CALLS_PATTERN", &node(&a))]
    );
    assert_eq!(
        store.graph_edges(&node(&b), In, &["CALLS_PATTERN"]).await.unwrap(),
        [edge(&node(&c), "CALLS_PATTERN", &node(&b))]
    );
    assert_eq!(
        store.graph_edges(&node(&f), Out, &["FORKED_FROM"]).await.unwrap(),
        [edge(&node(&f), "FORKED_FROM", &node(&a))]
    );
    assert_eq!(
        store.graph_edges(&node(&a), In, &["FORKED_FROM", "CALLS_PATTERN"]).await.unwrap(),
        [edge(&node(&b), "CALLS_PATTERN", &node(&a)), edge(&node(&f), "FORKED_FROM", &node(&a))]
    );
    assert_eq!(
        store.graph_edges(&node(&a), Out, &[]).await.unwrap(),
        [edge(&node(&a), "OWNED_BY", &alice), edge(&node(&a), "USES", &action_id)]
    );
    assert_eq!(
        store.graph_edges(&action_id, Out, &["PART_OF"]).await.unwrap(),
        [edge(&action_id, "PART_OF", &service_id)]
    );
    let owned_by_alice = store.graph_edges(&alice, In, &["OWNED_BY"]).await.unwrap();
    assert_eq!(owned_by_alice.iter().map(|e| e.from.clone()).collect::<Vec<_>>(), [node(&a), node(&b)]);
    assert!(store.graph_edges(&action_id, In, &["CALLS_PATTERN"]).await.unwrap().is_empty());
    assert!(store.graph_edges(&format!("action:pkg{t}.None/X"), In, &[]).await.unwrap().is_empty());

    let ids = [node(&a), action_id.clone(), service_id.clone(), alice.clone(), format!("pattern:g{t}-none@1.0.0")];
    let n = |id: &str, kind: &str, label: &str, deprecated: bool| GraphNode {
        id: id.into(),
        kind: kind.into(),
        label: label.into(),
        deprecated,
    };
    let mut expected = vec![
        n(&node(&a), "pattern_version", &format!("{a}@1.0.0"), false),
        n(&action_id, "action", &action, false),
        n(&service_id, "service", &service, false),
        n(&alice, "owner", &format!("{acme}/alice"), false),
    ];
    expected.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(store.graph_nodes(&ids).await.unwrap(), expected);
    assert!(store.graph_nodes(&[]).await.unwrap().is_empty());

    store.set_deprecated(&a, "1.0.0", true, "gone").await.unwrap();
    assert_eq!(
        store.graph_nodes(&[node(&a)]).await.unwrap(),
        [n(&node(&a), "pattern_version", &format!("{a}@1.0.0"), true)]
    );
    store.set_deprecated(&a, "1.0.0", false, "").await.unwrap();
    assert!(!store.graph_nodes(&[node(&a)]).await.unwrap()[0].deprecated);

    // Events: TRIGGERED_BY, EMITS and WAITS_FOR to one shared `event:TYPE` node per type.
    let (created, verified) = (format!("user{t}.created"), format!("user{t}.verified"));
    let (emitter, listener) = (format!("g{t}-emitter"), format!("g{t}-listener"));
    let events = |triggers: &[&str], emits: &[&str], waits: &[&str]| crate::VersionEvents {
        triggers: triggers.iter().map(|s| s.to_string()).collect(),
        emits: emits.iter().map(|s| s.to_string()).collect(),
        waits: waits.iter().map(|s| s.to_string()).collect(),
    };
    for v in [
        crate::NewVersion { events: events(&[], &[&created], &[]), ..new_version(&emitter, "1.0.0", &acme, "alice") },
        crate::NewVersion {
            events: events(&[&created], &[], &[&verified, &created]),
            ..new_version(&listener, "1.0.0", &acme, "bob")
        },
    ] {
        assert_eq!(store.register_version(&v).await.unwrap(), crate::RegisterOutcome::Created);
    }
    let (created_id, verified_id) = (format!("event:{created}"), format!("event:{verified}"));
    assert_eq!(
        store.graph_edges(&created_id, In, &["TRIGGERED_BY", "EMITS", "WAITS_FOR"]).await.unwrap(),
        [
            edge(&node(&emitter), "EMITS", &created_id),
            edge(&node(&listener), "TRIGGERED_BY", &created_id),
            edge(&node(&listener), "WAITS_FOR", &created_id),
        ]
    );
    assert_eq!(
        store.graph_edges(&verified_id, In, &[]).await.unwrap(),
        [edge(&node(&listener), "WAITS_FOR", &verified_id)]
    );
    assert_eq!(
        store.graph_nodes(std::slice::from_ref(&created_id)).await.unwrap(),
        [n(&created_id, "event", &created, false)]
    );
}

/// Concurrent writes of one name serialise: one creation, one star count, no lost executions.
pub async fn check_concurrent_meta(store: &dyn crate::MetaStore) {
    use crate::RegisterOutcome::*;
    let t = run_tag();
    let tenant = format!("acme-{t}");
    let same = new_version(&format!("c{t}-same"), "1.0.0", &tenant, "alice");
    let outcomes = futures::future::join_all((0..8).map(|_| store.register_version(&same))).await;
    let created = outcomes.iter().filter(|o| matches!(o, Ok(Created))).count();
    let identical = outcomes.iter().filter(|o| matches!(o, Ok(Identical))).count();
    assert_eq!((created, identical), (1, 7), "{outcomes:?}");

    let grow = format!("c{t}-grow");
    let versions: Vec<_> = (0..8).map(|i| new_version(&grow, &format!("1.0.{i}"), &tenant, "alice")).collect();
    let outcomes = futures::future::join_all(versions.iter().map(|v| store.register_version(v))).await;
    let mut created = Vec::new();
    for (v, outcome) in versions.iter().zip(&outcomes) {
        match outcome {
            Ok(Created) => created.push(v.pattern.version.clone()),
            Ok(NotGreater { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    let listed: Vec<String> = store.versions(&grow).await.unwrap().into_iter().map(|v| v.version).collect();
    created.sort_by_key(|v| semver::Version::parse(v).unwrap());
    assert_eq!(listed, created);
    assert_eq!(store.pattern_name(&grow).await.unwrap().unwrap().latest.as_ref(), created.last());

    let name = same.pattern.name.clone();
    let who: Vec<String> = (0..8).map(|i| format!("{tenant}/s{i}")).collect();
    futures::future::join_all(who.iter().map(|w| store.star(&name, w, true))).await.into_iter().for_each(|r| {
        r.unwrap();
    });
    let counts = [(name.clone(), "1.0.0".to_string(), 1)];
    futures::future::join_all((0..8).map(|_| store.add_executions(&counts))).await.into_iter().for_each(|r| r.unwrap());
    let n = store.pattern_name(&name).await.unwrap().unwrap();
    assert_eq!((n.stars, n.executions), (8, 8));
}

/// API keys (insert, lookup, listing, revocation) and the audit log.
pub async fn check_auth(store: &dyn crate::AuthStore) {
    use crate::{AuditEntry, api_key};
    let t = run_tag();
    let tenant = format!("acme-{t}");
    let (key, mut first) = api_key::generate(&tenant, "alice", &["admin".into(), "publisher".into()]);
    first.created_at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let (_, mut second) = api_key::generate(&tenant, "bob", &[]);
    second.created_at = first.created_at + Duration::from_millis(1);
    store.insert_api_key(&first).await.unwrap();
    store.insert_api_key(&second).await.unwrap();
    assert!(store.insert_api_key(&first).await.is_err(), "ids are unique");

    let stored = store.api_key(&first.id).await.unwrap().expect("the key is stored");
    assert_eq!(stored, first);
    assert!(api_key::verify(&stored, &key));
    assert_eq!(store.api_key(&second.id).await.unwrap().unwrap().roles, Vec::<String>::new());
    assert!(store.api_key("nothere").await.unwrap().is_none());
    let listed: Vec<_> =
        store.api_keys().await.unwrap().into_iter().filter(|k| k.id == first.id || k.id == second.id).collect();
    assert_eq!(listed, [second.clone(), first.clone()], "newest first");

    assert!(store.revoke_api_key(&first.id).await.unwrap());
    assert!(!store.revoke_api_key(&first.id).await.unwrap(), "already revoked");
    assert!(!store.revoke_api_key("nothere").await.unwrap());
    let revoked = store.api_key(&first.id).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(!api_key::verify(&revoked, &key));
    assert!(store.api_key(&second.id).await.unwrap().unwrap().revoked_at.is_none());

    let now = SystemTime::now();
    let entry = |i: u64| AuditEntry {
        at: now + Duration::from_millis(i),
        tenant: tenant.clone(),
        subject: format!("s{i}"),
        action: "RegisterPattern".into(),
        resource: format!("pattern:p{i}"),
        reason: format!("not the owner {i}"),
    };
    for i in [0, 2, 1] {
        store.audit(&entry(i)).await.unwrap();
    }
    let mine: Vec<AuditEntry> =
        store.audit_log(10_000).await.unwrap().into_iter().filter(|e| e.tenant == tenant).collect();
    let expected: Vec<AuditEntry> = [2, 1, 0]
        .into_iter()
        .map(|i| AuditEntry { at: crate::time::from_ms(crate::time::ms(entry(i).at)), ..entry(i) })
        .collect();
    assert_eq!(mine, expected, "newest first");
    let two = store.audit_log(2).await.unwrap();
    assert_eq!(two.len(), 2);
    assert!(two[0].at >= two[1].at);
}

/// Runs every ownership, marketplace, graph and auth check.
pub async fn run_meta<S: crate::MetaStore + crate::AuthStore>(store: &S) {
    check_meta(store).await;
    check_graph(store).await;
    check_concurrent_meta(store).await;
    check_auth(store).await;
}

/// Each backend's descriptors: stored bytes come back exactly, a second discovery replaces the
/// first, and a backend never discovered has none.
pub async fn check_descriptor_cache(store: &dyn crate::DescriptorCache) {
    use crate::CachedDescriptors;
    assert_eq!(store.cached_descriptors("never").await.unwrap(), None);
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_321);
    // Every byte value, NUL included: the column is binary, not text.
    let first = CachedDescriptors {
        backend: "users".into(),
        endpoint: "http://127.0.0.1:50061".into(),
        source: "reflection".into(),
        descriptors: (0..=255u8).chain(0..=255u8).collect(),
        discovered_at: at,
    };
    store.save_descriptors(&first).await.unwrap();
    assert_eq!(store.cached_descriptors("users").await.unwrap().as_ref(), Some(&first));
    let second = CachedDescriptors {
        endpoint: "http://127.0.0.1:50062".into(),
        source: "protos".into(),
        descriptors: vec![0, 1, 2],
        discovered_at: at + Duration::from_secs(60),
        ..first.clone()
    };
    store.save_descriptors(&second).await.unwrap();
    assert_eq!(store.cached_descriptors("users").await.unwrap(), Some(second));
    let other = CachedDescriptors { backend: "assets".into(), ..first };
    store.save_descriptors(&other).await.unwrap();
    assert_eq!(store.cached_descriptors("assets").await.unwrap(), Some(other));
    assert_eq!(store.cached_descriptors("users").await.unwrap().map(|d| d.descriptors), Some(vec![0, 1, 2]));
}

/// An event of `tenant` received at `received_at` (its time one second earlier).
fn stored_event(tenant: &str, source: &str, id: &str, event_type: &str, received_at: SystemTime) -> crate::StoredEvent {
    crate::StoredEvent {
        tenant: tenant.into(),
        source: source.into(),
        id: id.into(),
        event_type: event_type.into(),
        subject: format!("subject-{id}"),
        time: received_at - Duration::from_secs(1),
        datacontenttype: "application/json".into(),
        data: format!(r#"{{"id":"{id}","text":"naïve “quoted”"}}"#),
        received_at,
    }
}

/// A running execution of `tenant`, held by `owner` until `lease_until`.
fn running(id: &str, tenant: &str, owner: &str, lease_until: SystemTime) -> crate::ExecutionStart {
    crate::ExecutionStart {
        id: id.into(),
        pattern_name: "waiting".into(),
        pattern_version: "1.0.0".into(),
        input: r#"{"order_id":"42"}"#.into(),
        idempotency_key: None,
        tenant: tenant.into(),
        trace: format!("00-0af7651916cd43dd8448eb211c80319c-{:016x}-01 -", id.len() + 1),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        owner: owner.into(),
        lease_until,
    }
}

/// A wait of `execution_id`'s step `step_id`, due in an hour.
fn event_wait(
    execution_id: &str,
    step_id: &str,
    branch: u32,
    tenant: &str,
    event_type: &str,
    correlation: Option<(&str, &str)>,
) -> crate::EventWait {
    crate::EventWait {
        execution_id: execution_id.into(),
        step_id: step_id.into(),
        branch,
        tenant: tenant.into(),
        pattern_name: "waiting".into(),
        pattern_version: "1.0.0".into(),
        event_type: event_type.into(),
        correlation: correlation.map(|(p, v)| (p.into(), v.into())),
        context: format!(r#"{{"input":{{"step":"{step_id}"}}}}"#),
        // Millisecond precision, as stored.
        deadline: crate::time::from_ms(crate::time::ms(SystemTime::now() + Duration::from_secs(3600))),
    }
}

/// The event buffer: an identity is recorded once (a duplicate says whether the router finished
/// with it), every field survives, recent events are one tenant's of one type since a time,
/// oldest first, unprocessed ones are listed until marked, and old ones are pruned.
pub async fn check_events(store: &dyn crate::EventStore) {
    use crate::EventRecorded::*;
    let t = run_tag();
    let (acme, globex) = (format!("acme-{t}"), format!("globex-{t}"));
    let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_650_000_000_000);
    let at = |ms: u64| base + Duration::from_millis(ms);
    let paid = |id: &str, ms: u64| stored_event(&acme, "shop", id, "order.paid", at(ms));

    let first = paid("e1", 10);
    assert_eq!(store.record_event(&first).await.unwrap(), New);
    assert_eq!(store.record_event(&first).await.unwrap(), Duplicate { processed: false });
    // The identity is (tenant, source, id): nothing else of a duplicate counts.
    let changed = crate::StoredEvent { data: "{}".into(), received_at: at(99), ..first.clone() };
    assert_eq!(store.record_event(&changed).await.unwrap(), Duplicate { processed: false });
    store.mark_event_processed(&acme, "shop", "e1").await.unwrap();
    assert_eq!(store.record_event(&first).await.unwrap(), Duplicate { processed: true });
    store.mark_event_processed(&acme, "shop", "missing").await.unwrap();
    assert_eq!(store.record_event(&crate::StoredEvent { tenant: globex.clone(), ..first.clone() }).await.unwrap(), New);
    assert_eq!(store.record_event(&crate::StoredEvent { source: "pos".into(), ..first.clone() }).await.unwrap(), New);

    // Recorded out of order; listed by reception.
    for e in [paid("e3", 30), paid("e2", 20), stored_event(&acme, "shop", "x1", "order.shipped", at(25))] {
        assert_eq!(store.record_event(&e).await.unwrap(), New);
    }
    let ids = |events: Vec<crate::StoredEvent>| {
        events.into_iter().map(|e| format!("{}/{}", e.source, e.id)).collect::<Vec<_>>()
    };
    let recent = store.recent_events(&acme, "order.paid", base, 100).await.unwrap();
    assert_eq!(recent[1], first, "every field survives");
    assert_eq!(ids(recent), ["pos/e1", "shop/e1", "shop/e2", "shop/e3"]);
    assert_eq!(ids(store.recent_events(&acme, "order.paid", at(20), 100).await.unwrap()), ["shop/e2", "shop/e3"]);
    assert_eq!(ids(store.recent_events(&acme, "order.paid", at(11), 1).await.unwrap()), ["shop/e2"]);
    assert!(store.recent_events(&acme, "order.paid", at(31), 100).await.unwrap().is_empty());
    assert_eq!(ids(store.recent_events(&acme, "order.shipped", base, 100).await.unwrap()), ["shop/x1"]);
    assert_eq!(ids(store.recent_events(&globex, "order.paid", base, 100).await.unwrap()), ["shop/e1"]);

    // Unprocessed, oldest first, until marked.
    let mine = |events: Vec<crate::StoredEvent>| {
        events.into_iter().filter(|e| e.tenant == acme).map(|e| format!("{}/{}", e.source, e.id)).collect::<Vec<_>>()
    };
    assert_eq!(mine(store.unprocessed_events(10_000).await.unwrap()), ["pos/e1", "shop/e2", "shop/x1", "shop/e3"]);
    store.mark_event_processed(&acme, "shop", "e2").await.unwrap();
    assert_eq!(mine(store.unprocessed_events(10_000).await.unwrap()), ["pos/e1", "shop/x1", "shop/e3"]);
    let one = store.unprocessed_events(1).await.unwrap();
    assert_eq!(one.len(), 1);

    // Pruning: processed or not, what was received before the cutoff goes.
    assert!(store.prune_events(at(25)).await.unwrap() >= 4);
    assert_eq!(ids(store.recent_events(&acme, "order.paid", base, 100).await.unwrap()), ["shop/e3"]);
    assert_eq!(ids(store.recent_events(&acme, "order.shipped", base, 100).await.unwrap()), ["shop/x1"]);
    assert!(store.recent_events(&globex, "order.paid", base, 100).await.unwrap().is_empty());
    assert_eq!(store.record_event(&first).await.unwrap(), New, "a pruned identity is new again");
    assert_eq!(store.prune_events(at(25)).await.unwrap(), 1);
    assert_eq!(store.prune_events(base).await.unwrap(), 0);
}

/// Waits: registered per branch (a registration again keeps the first), listed per execution,
/// found as candidates for an event by correlation (and all uncorrelated ones), in registration
/// order; expired ones earliest first; finishing an execution deletes its waits.
pub async fn check_event_waits<S: crate::JournalStore + crate::EventStore>(store: &S) {
    let t = run_tag();
    let (acme, globex) = (format!("acme-{t}"), format!("globex-{t}"));
    let x = |n: u32| format!("wait-{t}-{n}");
    let later = SystemTime::now() + Duration::from_secs(3600);
    for n in 1..=5 {
        store.start_execution(&running(&x(n), &acme, "r1", later)).await.unwrap();
    }
    let order = ("data.order_id", r#""42""#);
    let w1 = event_wait(&x(1), "pay", 0, &acme, "order.paid", None);
    let w2a = event_wait(&x(2), "pay", 0, &acme, "order.paid", Some(order));
    let w2b = event_wait(&x(2), "pay", 1, &acme, "order.paid", Some(("data.customer", r#""c7""#)));
    let w3 = event_wait(&x(3), "pay", 0, &acme, "order.paid", Some(("data.order_id", r#""43""#)));
    let w4 = event_wait(&x(4), "ship", 0, &acme, "order.shipped", None);
    let w5 = event_wait(&x(5), "pay", 0, &globex, "order.paid", Some(order));
    store.add_waits(&[]).await.unwrap();
    // Registered in this order, one step at a time.
    for step in [vec![w3.clone()], vec![w1.clone()], vec![w2a.clone(), w2b.clone()], vec![w4.clone()], vec![w5.clone()]]
    {
        store.add_waits(&step).await.unwrap();
    }
    // Registering a step again (a resumed execution) keeps the first registration.
    let again = crate::EventWait { deadline: w1.deadline + Duration::from_secs(60), ..w1.clone() };
    store.add_waits(&[again]).await.unwrap();
    assert_eq!(store.execution_waits(&x(1)).await.unwrap(), std::slice::from_ref(&w1));
    assert_eq!(store.execution_waits(&x(2)).await.unwrap(), [w2a.clone(), w2b.clone()]);
    assert!(store.execution_waits(&format!("wait-{t}-none")).await.unwrap().is_empty());

    assert_eq!(store.wait_correlation_paths(&acme, "order.paid").await.unwrap(), ["data.customer", "data.order_id"]);
    assert!(store.wait_correlation_paths(&acme, "order.shipped").await.unwrap().is_empty());
    assert_eq!(store.wait_correlation_paths(&globex, "order.paid").await.unwrap(), ["data.order_id"]);

    let key = |(p, v): (&str, &str)| (p.to_string(), v.to_string());
    let candidates = |keys: Vec<(String, String)>, limit| {
        let acme = acme.clone();
        async move { store.candidate_waits(&acme, "order.paid", &keys, limit).await.unwrap() }
    };
    assert_eq!(candidates(vec![], 100).await, std::slice::from_ref(&w1), "without keys, the uncorrelated waits");
    assert_eq!(candidates(vec![key(order)], 100).await, [w1.clone(), w2a.clone()]);
    let both = vec![key(order), key(("data.customer", r#""c7""#)), key(("data.customer", r#""c8""#))];
    assert_eq!(candidates(both.clone(), 100).await, [w1.clone(), w2a.clone(), w2b.clone()]);
    assert_eq!(candidates(both, 2).await, [w1.clone(), w2a.clone()], "the limit keeps the oldest");
    let forty_three = vec![key(order), key(("data.order_id", r#""43""#))];
    assert_eq!(candidates(forty_three, 100).await, [w3.clone(), w1.clone(), w2a.clone()], "registration order");
    // A value matches as canonical JSON text, a path exactly.
    assert_eq!(candidates(vec![key(("data.order_id", "42"))], 100).await, std::slice::from_ref(&w1));
    assert_eq!(candidates(vec![key(("data.order", r#""42""#))], 100).await, std::slice::from_ref(&w1));
    assert_eq!(
        store.candidate_waits(&globex, "order.paid", &[key(order)], 100).await.unwrap(),
        std::slice::from_ref(&w5)
    );
    assert!(store.candidate_waits(&globex, "order.shipped", &[key(order)], 100).await.unwrap().is_empty());

    // Expired waits, earliest deadline first (times long past, before any other wait's).
    let past = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms);
    let e1 = crate::EventWait { step_id: "late".into(), deadline: past(20), ..w4.clone() };
    let e2 = crate::EventWait { step_id: "early".into(), deadline: past(10), ..w4.clone() };
    store.add_waits(std::slice::from_ref(&e1)).await.unwrap();
    store.add_waits(std::slice::from_ref(&e2)).await.unwrap();
    let mine = acme.as_str();
    let expired = |now, limit| async move {
        let waits: Vec<crate::EventWait> = store.expired_waits(now, limit).await.unwrap();
        waits.into_iter().filter(|w| w.tenant == mine).collect::<Vec<_>>()
    };
    assert!(expired(past(10), 100).await.is_empty(), "a deadline equal to now has not passed");
    assert_eq!(expired(past(11), 100).await, std::slice::from_ref(&e2));
    assert_eq!(expired(past(1000), 100).await, [e2.clone(), e1.clone()]);
    assert_eq!(expired(past(1000), 1).await, std::slice::from_ref(&e2));
    assert_eq!(expired(SystemTime::now(), 10_000).await, [e2.clone(), e1.clone()]);

    // A finished execution waits for nothing.
    for n in 1..=5 {
        let finished = crate::FinishedExecution {
            id: x(n),
            pattern_name: "waiting".into(),
            status: "SUCCEEDED".into(),
            record: "{}".into(),
        };
        store.finish_execution(&finished).await.unwrap();
        assert!(store.execution_waits(&x(n)).await.unwrap().is_empty(), "{}", x(n));
    }
    assert!(candidates(vec![key(order)], 100).await.is_empty());
    assert!(expired(SystemTime::now(), 10_000).await.is_empty());
    let gone = store.resolve_wait(&x(2), "pay", "{}", "r2", later).await.unwrap();
    assert_eq!(gone, crate::WaitResolution::Gone);
}

/// Parking and resolving: only an unfinished execution with waits parks; a parked execution is
/// listed as unfinished but neither renewed nor claimed, however expired; resolving a wait of a
/// running execution journals the result (`Running`), of a parked one also hands it over
/// (`Claimed`), and of a step already resolved changes nothing (`Gone`).
pub async fn check_parking<S: crate::JournalStore + crate::EventStore>(store: &S) {
    use crate::WaitResolution::*;
    let t = run_tag();
    let tenant = format!("acme-{t}");
    let id = format!("park-{t}");
    let (r1, r2, r3) = (format!("r1-{t}"), format!("r2-{t}"), format!("r3-{t}"));
    let now = SystemTime::now();
    let until = crate::time::from_ms(crate::time::ms(now + Duration::from_secs(600)));
    store.start_execution(&running(&id, &tenant, &r1, until)).await.unwrap();
    store.complete_step(&id, "before", r#"{"m":"AA=="}"#).await.unwrap();

    // No waits: not parked, nothing changes.
    assert!(!store.park_execution(&id).await.unwrap());
    assert!(!store.park_execution(&format!("park-{t}-none")).await.unwrap());
    let held = store.unfinished_execution(&id).await.unwrap().unwrap();
    assert_eq!((held.start.owner.as_str(), held.start.lease_until), (r1.as_str(), until));

    // A wait resolved while the execution runs: the result is journaled, the lease untouched.
    let w = |step: &str, branch| event_wait(&id, step, branch, &tenant, "order.paid", None);
    store.add_waits(&[w("pay", 0), w("pay", 1)]).await.unwrap();
    assert_eq!(store.resolve_wait(&id, "pay", r#"{"paid":true}"#, &r2, until).await.unwrap(), Running);
    assert!(store.execution_waits(&id).await.unwrap().is_empty(), "every branch is deleted");
    let u = store.unfinished_execution(&id).await.unwrap().unwrap();
    assert_eq!(
        u.steps,
        [("before".to_string(), r#"{"m":"AA=="}"#.to_string()), ("pay".into(), r#"{"paid":true}"#.into())]
    );
    assert_eq!(u.start.owner, r1);
    assert_eq!(store.resolve_wait(&id, "pay", "{}", &r2, until).await.unwrap(), Gone);
    assert_eq!(store.unfinished_execution(&id).await.unwrap().unwrap().steps, u.steps, "a Gone changes nothing");
    assert_eq!(store.resolve_wait(&id, "never", "{}", &r2, until).await.unwrap(), Gone);

    // Parked: still unfinished, but nobody's, not renewed, not claimed however expired.
    store.add_waits(&[w("ship", 0)]).await.unwrap();
    assert!(store.park_execution(&id).await.unwrap());
    let parked = store.unfinished_execution(&id).await.unwrap().unwrap();
    assert_eq!(parked.start.owner, "", "parking clears the owner");
    assert!(store.unfinished_executions().await.unwrap().iter().any(|e| e.start.id == id));
    assert_eq!(store.renew_leases(&r1, std::slice::from_ref(&id), until).await.unwrap(), 0);
    assert_eq!(store.renew_leases("", std::slice::from_ref(&id), until).await.unwrap(), 0);
    let far = now + Duration::from_secs(86_400 * 365);
    let claimed = store.claim_expired(&r3, far, far, 10_000).await.unwrap();
    assert!(claimed.iter().all(|e| e.start.id != id), "a parked execution is never claimed");
    assert_eq!(store.release_leases("").await.unwrap(), 0);

    // Resolving the wait of a parked execution hands it to the resolver, with every step.
    let Claimed(resumed) = store.resolve_wait(&id, "ship", r#"{"shipped":1}"#, &r2, until).await.unwrap() else {
        panic!("the parked execution is claimed");
    };
    let mut steps = u.steps.clone();
    steps.push(("ship".into(), r#"{"shipped":1}"#.into()));
    assert_eq!(resumed.steps, steps);
    assert_eq!(resumed.start, running(&id, &tenant, &r2, until));
    assert_eq!(store.unfinished_execution(&id).await.unwrap().unwrap(), resumed);
    assert_eq!(store.renew_leases(&r2, std::slice::from_ref(&id), until).await.unwrap(), 1, "no longer parked");
    // An expired, parked execution is not claimed either (its lease is dropped, never taken).
    store.add_waits(&[w("again", 0)]).await.unwrap();
    assert!(store.park_execution(&id).await.unwrap());
    assert!(store.claim_expired(&r3, far, far, 10_000).await.unwrap().iter().all(|e| e.start.id != id));
    assert!(
        matches!(store.resolve_wait(&id, "again", "{}", &r3, until).await.unwrap(), Claimed(e) if e.start.owner == r3)
    );
    let unparked = store.claim_expired(&r3, far, far, 10_000).await.unwrap();
    assert!(unparked.iter().any(|e| e.start.id == id), "once resumed, its lease runs out like any other");

    // A finished execution does not park, and its waits are gone.
    store.add_waits(&[w("last", 0)]).await.unwrap();
    let finished = crate::FinishedExecution {
        id: id.clone(),
        pattern_name: "waiting".into(),
        status: "FAILED".into(),
        record: "{}".into(),
    };
    store.finish_execution(&finished).await.unwrap();
    assert!(!store.park_execution(&id).await.unwrap());
    assert_eq!(store.resolve_wait(&id, "last", "{}", &r2, until).await.unwrap(), Gone);
}

/// Concurrent resolutions of one step: exactly one is not `Gone` (`Claimed` for a parked
/// execution, `Running` for one that runs); and a park racing the resolution of the last wait
/// either parks before it (the resolution claims) or sees it (nothing parks).
pub async fn check_concurrent_resolutions<S: crate::JournalStore + crate::EventStore>(store: &S) {
    use crate::WaitResolution::*;
    let t = run_tag();
    let tenant = format!("acme-{t}");
    let until = SystemTime::now() + Duration::from_secs(600);
    for round in 0..6 {
        let id = format!("race-{t}-{round}");
        store.start_execution(&running(&id, &tenant, "r1", until)).await.unwrap();
        let waits = [0, 1].map(|b| event_wait(&id, "pay", b, &tenant, "order.paid", None));
        store.add_waits(&waits).await.unwrap();
        let parked = round % 2 == 0;
        if parked {
            assert!(store.park_execution(&id).await.unwrap());
        }
        let (a, b) = tokio::join!(
            store.resolve_wait(&id, "pay", r#"{"by":"a"}"#, "ra", until),
            store.resolve_wait(&id, "pay", r#"{"by":"b"}"#, "rb", until),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let winners: Vec<&crate::WaitResolution> = [&a, &b].into_iter().filter(|r| **r != Gone).collect();
        assert_eq!(winners.len(), 1, "{a:?} / {b:?}");
        let u = store.unfinished_execution(&id).await.unwrap().unwrap();
        assert_eq!(u.steps.len(), 1, "one result journaled: {:?}", u.steps);
        match winners[0] {
            Claimed(e) => {
                assert!(parked);
                let by = if e.start.owner == "ra" { r#"{"by":"a"}"# } else { r#"{"by":"b"}"# };
                assert_eq!(e.steps, [("pay".to_string(), by.to_string())]);
                assert_eq!(&u, e);
            }
            Running => assert!(!parked),
            Gone => unreachable!(),
        }
    }

    for round in 0..6 {
        let id = format!("park-race-{t}-{round}");
        store.start_execution(&running(&id, &tenant, "r1", until)).await.unwrap();
        store.add_waits(&[event_wait(&id, "pay", 0, &tenant, "order.paid", None)]).await.unwrap();
        let (parked, resolved) =
            tokio::join!(store.park_execution(&id), store.resolve_wait(&id, "pay", "{}", "r2", until));
        let owner = match (parked.unwrap(), resolved.unwrap()) {
            (true, Claimed(e)) => e.start.owner,
            (false, Running) => "r1".to_string(),
            other => panic!("an execution parked with nothing to wake it: {other:?}"),
        };
        let u = store.unfinished_execution(&id).await.unwrap().unwrap();
        assert_eq!((u.start.owner, u.steps.len()), (owner, 1));
        assert!(!store.park_execution(&id).await.unwrap(), "no waits are left");
    }
}

/// A trigger starts a pattern version once per event identity.
pub async fn check_triggers(store: &dyn crate::EventStore) {
    let t = run_tag();
    let (acme, globex) = (format!("acme-{t}"), format!("globex-{t}"));
    assert!(store.record_trigger("onboard", "1.0.0", &acme, "shop", "e1").await.unwrap());
    assert!(!store.record_trigger("onboard", "1.0.0", &acme, "shop", "e1").await.unwrap(), "a redelivery");
    assert!(store.record_trigger("onboard", "1.1.0", &acme, "shop", "e1").await.unwrap());
    assert!(store.record_trigger("welcome", "1.0.0", &acme, "shop", "e1").await.unwrap());
    assert!(store.record_trigger("onboard", "1.0.0", &globex, "shop", "e1").await.unwrap());
    assert!(store.record_trigger("onboard", "1.0.0", &acme, "pos", "e1").await.unwrap());
    assert!(store.record_trigger("onboard", "1.0.0", &acme, "shop", "e2").await.unwrap());
    assert!(!store.record_trigger("onboard", "1.1.0", &acme, "shop", "e1").await.unwrap());
    // Forgotten with the events (the store's clock stamps them): a later delivery is new again.
    store.prune_events(SystemTime::now() - Duration::from_secs(3600)).await.unwrap();
    assert!(!store.record_trigger("onboard", "1.0.0", &acme, "shop", "e1").await.unwrap());
    store.prune_events(SystemTime::now() + Duration::from_secs(1)).await.unwrap();
    assert!(store.record_trigger("onboard", "1.0.0", &acme, "shop", "e1").await.unwrap());
}

/// Runs every event check.
pub async fn run_events<S: crate::JournalStore + crate::EventStore>(store: &S) {
    check_events(store).await;
    check_event_waits(store).await;
    check_parking(store).await;
    check_concurrent_resolutions(store).await;
    check_triggers(store).await;
    check_schedule_ticks(store).await;
    check_event_types(store).await;
}

/// Event types: per tenant, replaced by a second registration, listed by name.
pub async fn check_event_types(store: &dyn crate::EventStore) {
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + s * 1000);
    let t = |tenant: &str, name: &str, schema: &str, s: u64| crate::StoredEventType {
        tenant: tenant.into(),
        event_type: name.into(),
        description: format!("{name} of {tenant}"),
        schema: schema.into(),
        registered_at: at(s),
    };
    assert_eq!(store.event_types(Some("types-a")).await.unwrap(), []);
    let created = t("types-a", "user.created", r#"{"type":"object"}"#, 1);
    store.put_event_type(&created).await.unwrap();
    store.put_event_type(&t("types-a", "order.placed", "{}", 2)).await.unwrap();
    store.put_event_type(&t("types-b", "user.created", "{}", 3)).await.unwrap();
    let listed = store.event_types(Some("types-a")).await.unwrap();
    assert_eq!(listed, [t("types-a", "order.placed", "{}", 2), created]);
    // Replaced, not added.
    let replaced = t("types-a", "user.created", r#"{"type":"object","properties":{}}"#, 4);
    store.put_event_type(&replaced).await.unwrap();
    let listed = store.event_types(Some("types-a")).await.unwrap();
    assert_eq!(listed, [t("types-a", "order.placed", "{}", 2), replaced]);
    let all = store.event_types(None).await.unwrap();
    let ours: Vec<_> = all.iter().filter(|e| e.tenant.starts_with("types-")).map(|e| e.tenant.as_str()).collect();
    assert_eq!(ours, ["types-a", "types-a", "types-b"]);
}

/// Schedules' last ticks: the first claim creates the row, each later one is a compare-and-set on
/// the previous tick, and of concurrent claims of one tick exactly one wins.
pub async fn check_schedule_ticks(store: &dyn crate::EventStore) {
    let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + s * 1000);
    assert_eq!(store.last_tick("ticking").await.unwrap(), None);
    assert!(store.claim_tick("ticking", t(0), None).await.unwrap());
    assert!(!store.claim_tick("ticking", t(5), None).await.unwrap(), "a row exists: `None` is stale");
    assert_eq!(store.last_tick("ticking").await.unwrap(), Some(t(0)));
    assert!(store.claim_tick("ticking", t(5), Some(t(0))).await.unwrap());
    assert!(!store.claim_tick("ticking", t(10), Some(t(0))).await.unwrap(), "stale previous");
    assert_eq!(store.last_tick("ticking").await.unwrap(), Some(t(5)));
    assert_eq!(store.last_tick("other").await.unwrap(), None, "per pattern name");

    // Eight replicas race for the next tick, and for the first tick of a new name.
    let claims = futures::future::join_all((0..8).map(|_| store.claim_tick("ticking", t(10), Some(t(5))))).await;
    assert_eq!(claims.iter().filter(|c| matches!(c, Ok(true))).count(), 1, "{claims:?}");
    assert!(claims.iter().all(Result::is_ok), "{claims:?}");
    let claims = futures::future::join_all((0..8).map(|_| store.claim_tick("fresh", t(1), None))).await;
    assert_eq!(claims.iter().filter(|c| matches!(c, Ok(true))).count(), 1, "{claims:?}");
    assert_eq!(store.last_tick("ticking").await.unwrap(), Some(t(10)));
    assert_eq!(store.last_tick("fresh").await.unwrap(), Some(t(1)));
}

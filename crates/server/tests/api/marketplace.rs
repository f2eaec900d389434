//! Versions, the marketplace and the knowledge graph through the API: fork and lineage, diff,
//! deprecation and `latest`, stars and search, impact through sub-patterns.

#![allow(clippy::expect_used)] // test code: a panic is a failed test

use anyhow::{Context, Result, ensure};
use nexus_core::pb;

use crate::common::{Client, Harness, pattern, register};

const BASE: &str = r#"
name: NAME
version: VERSION
visibility: public
description: Welcome a user by email
tags: [onboarding]
input: {type: object, properties: {email: {type: string}}}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: "Welcome"}
"#;

const BASE_V2: &str = r#"
name: NAME
version: VERSION
visibility: public
description: Welcome a user by email and push
tags: [onboarding]
input: {type: object, properties: {email: {type: string}}}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: "Welcome aboard"}
  - id: push
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "${{ input.email }}", title: "hi"}
"#;

fn doc(template: &str, name: &str, version: &str) -> Result<pb::Pattern> {
    pattern(&template.replace("NAME", name).replace("VERSION", version))
}

async fn lineage(client: &mut Client, name: &str) -> Result<pb::QueryGraphResponse> {
    Ok(client
        .query_graph(pb::QueryGraphRequest {
            query: Some(pb::query_graph_request::Query::Lineage(name.into())),
            depth: 0,
        })
        .await
        .with_context(|| format!("lineage of {name}"))?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_gets_a_new_version_its_source_s_lineage_shows_it_and_diff_shows_the_change() -> Result<()> {
    fork_lineage_diff(Harness::start().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_lineage_and_diff_on_postgres() -> Result<()> {
    let (url, schema, _guard) = crate::access::pg_schema().await?;
    let options = crate::common::Options { database: Some((url, schema)), ..Default::default() };
    fork_lineage_diff(Harness::start_with(options).await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impact_through_sub_patterns_on_postgres() -> Result<()> {
    let (url, schema, _guard) = crate::access::pg_schema().await?;
    let options = crate::common::Options { database: Some((url, schema)), ..Default::default() };
    impact_through_sub_patterns(Harness::start_with(options).await?).await
}

async fn fork_lineage_diff(harness: Harness) -> Result<()> {
    let mut client = harness.client.clone();
    register(&mut client, doc(BASE, "welcome", "1.0.0")?).await?;

    let fork = client
        .fork_pattern(pb::ForkPatternRequest {
            name: "welcome".into(),
            version: String::new(),
            new_name: "welcome_plus".into(),
        })
        .await?
        .into_inner();
    let r = fork.pattern_ref.clone().context("the fork's ref")?;
    ensure!(r.name == "welcome_plus" && r.version == "1.0.0" && fork.created, "{fork:?}");
    let forked =
        client.get_pattern(pb::GetPatternRequest { name: "welcome_plus".into(), version: String::new() }).await?;
    ensure!(forked.get_ref().forked_from == "welcome@1.0.0", "{:?}", forked.get_ref().forked_from);
    ensure!(forked.get_ref().visibility == "private", "a fork starts private");

    // A new version on the fork.
    register(&mut client, doc(BASE_V2, "welcome_plus", "1.1.0")?).await?;
    // Versions only grow.
    let s = client
        .register_pattern(pb::RegisterPatternRequest { pattern: Some(doc(BASE_V2, "welcome_plus", "1.0.5")?) })
        .await
        .expect_err("a lower version");
    ensure!(s.code() == tonic::Code::FailedPrecondition && s.message().contains("1.1.0"), "{s:?}");

    // The source's lineage shows the fork (both of its versions) and the FORKED_FROM edge.
    let tree = lineage(&mut client, "welcome").await?;
    let ids: Vec<&str> = tree.nodes.iter().map(|n| n.id.as_str()).collect();
    for id in ["pattern:welcome@1.0.0", "pattern:welcome_plus@1.0.0", "pattern:welcome_plus@1.1.0"] {
        ensure!(ids.contains(&id), "{id} missing from the lineage: {ids:?}");
    }
    ensure!(
        tree.edges.iter().any(|e| e.from == "pattern:welcome_plus@1.0.0"
            && e.kind == "FORKED_FROM"
            && e.to == "pattern:welcome@1.0.0"),
        "{:?}",
        tree.edges
    );
    // And the fork's lineage is the same tree, found from below.
    let from_fork = lineage(&mut client, "welcome_plus").await?;
    ensure!(from_fork.nodes.len() == tree.nodes.len(), "{from_fork:?}");

    // The diff between the fork's versions shows the step-level change.
    let diff = client
        .diff_patterns(pb::DiffPatternsRequest {
            name: "welcome_plus".into(),
            from_version: "1.0.0".into(),
            to_version: "1.1.0".into(),
            to_name: String::new(),
        })
        .await?
        .into_inner();
    let changes: Vec<(i32, &str)> = diff.changes.iter().map(|c| (c.kind, c.path.as_str())).collect();
    ensure!(changes.contains(&(pb::ChangeKind::Added as i32, "steps.push")), "{changes:?}");
    ensure!(changes.contains(&(pb::ChangeKind::Changed as i32, "steps.mail.with.subject")), "{changes:?}");
    ensure!(changes.contains(&(pb::ChangeKind::Changed as i32, "description")), "{changes:?}");
    // Across the fork: its 1.1.0 against the source.
    let across = client
        .diff_patterns(pb::DiffPatternsRequest {
            name: "welcome".into(),
            from_version: "1.0.0".into(),
            to_version: "1.1.0".into(),
            to_name: "welcome_plus".into(),
        })
        .await?
        .into_inner();
    ensure!(across.changes.len() == diff.changes.len(), "{across:?}");

    // Deprecating 1.1.0 makes 1.0.0 `latest` again; it still runs by exact version.
    let d = client
        .deprecate_pattern(pb::DeprecatePatternRequest {
            name: "welcome_plus".into(),
            version: "1.1.0".into(),
            reason: "push is noisy".into(),
            undo: false,
        })
        .await?
        .into_inner();
    ensure!(d.latest == "1.0.0", "{d:?}");
    let latest =
        client.get_pattern(pb::GetPatternRequest { name: "welcome_plus".into(), version: String::new() }).await?;
    ensure!(latest.get_ref().version == "1.0.0", "{:?}", latest.get_ref().version);
    let versions = client
        .list_pattern_versions(pb::ListPatternVersionsRequest { name: "welcome_plus".into() })
        .await?
        .into_inner();
    let listed: Vec<(&str, bool)> = versions.versions.iter().map(|v| (v.version.as_str(), v.deprecated)).collect();
    ensure!(listed == [("1.0.0", false), ("1.1.0", true)], "{listed:?}");
    ensure!(versions.forked_from == "welcome@1.0.0" && versions.latest == "1.0.0", "{versions:?}");
    let exact =
        client.get_pattern(pb::GetPatternRequest { name: "welcome_plus".into(), version: "1.1.0".into() }).await?;
    ensure!(exact.get_ref().deprecated, "1.1.0 is marked deprecated");

    // Stars and popularity.
    let starred = client.star(pb::StarRequest { name: "welcome".into(), unstar: false }).await?.into_inner();
    let again = client.star(pb::StarRequest { name: "welcome".into(), unstar: false }).await?.into_inner();
    ensure!(starred.stars == 1 && again.stars == 1, "starring is idempotent: {starred:?} {again:?}");
    let popular = client
        .list_patterns(pb::ListPatternsRequest {
            query: "welcome".into(),
            sort: pb::PatternSort::Popularity as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let names: Vec<&str> = popular.patterns.iter().map(|p| p.name.as_str()).collect();
    ensure!(names == ["welcome", "welcome_plus"], "{names:?}");
    ensure!(popular.patterns[0].stars == 1, "{:?}", popular.patterns[0]);
    // Every read agrees at once, and says whether the caller starred it.
    let got = client.get_pattern(pb::GetPatternRequest { name: "welcome".into(), version: String::new() }).await?;
    ensure!(got.get_ref().stars == 1, "GetPattern: {} stars", got.get_ref().stars);
    let versions = client.list_pattern_versions(pb::ListPatternVersionsRequest { name: "welcome".into() }).await?;
    ensure!(versions.get_ref().stars == 1 && versions.get_ref().starred, "{:?}", versions.get_ref());
    client.star(pb::StarRequest { name: "welcome".into(), unstar: true }).await?;
    let versions = client.list_pattern_versions(pb::ListPatternVersionsRequest { name: "welcome".into() }).await?;
    ensure!(versions.get_ref().stars == 0 && !versions.get_ref().starred, "{:?}", versions.get_ref());
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impact_of_an_action_goes_through_two_levels_of_sub_patterns() -> Result<()> {
    impact_through_sub_patterns(Harness::start().await?).await
}

async fn impact_through_sub_patterns(harness: Harness) -> Result<()> {
    let mut client = harness.client.clone();
    let docs = [
        // leaf uses SendPush; mid calls leaf; top calls mid; other does not use SendPush.
        r#"
name: leaf
version: 1.0.0
steps:
  - id: push
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "u", title: "t"}
"#,
        r#"
name: mid
version: 1.0.0
steps:
  - id: leaf
    call: pattern:leaf@1.0.0
    with: {}
"#,
        r#"
name: top
version: 1.0.0
steps:
  - id: mid
    call: pattern:mid@1.0.0
    with: {}
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "a@b.c"}
"#,
        r#"
name: other
version: 1.0.0
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "a@b.c"}
"#,
        r#"
name: leaf
version: 2.0.0
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "a@b.c"}
"#,
    ];
    for d in docs {
        register(&mut client, pattern(d)?).await?;
    }
    let impact = client
        .query_graph(pb::QueryGraphRequest {
            query: Some(pb::query_graph_request::Query::Impact(
                "demo.notification.v1.NotificationService/SendPush".into(),
            )),
            depth: 0,
        })
        .await?
        .into_inner();
    let mut patterns: Vec<&str> =
        impact.nodes.iter().filter(|n| n.kind == "pattern_version").map(|n| n.id.as_str()).collect();
    patterns.sort_unstable();
    ensure!(
        patterns == ["pattern:leaf@1.0.0", "pattern:mid@1.0.0", "pattern:top@1.0.0"],
        "exactly the versions that reach SendPush: {patterns:?}"
    );
    ensure!(
        impact
            .edges
            .iter()
            .any(|e| e.from == "pattern:top@1.0.0" && e.kind == "CALLS_PATTERN" && e.to == "pattern:mid@1.0.0"),
        "{:?}",
        impact.edges
    );
    // The neighbourhood of an action shows its service and the versions that use it.
    let around = client
        .query_graph(pb::QueryGraphRequest {
            query: Some(pb::query_graph_request::Query::Neighbourhood(
                "action:demo.notification.v1.NotificationService/SendEmail".into(),
            )),
            depth: 1,
        })
        .await?
        .into_inner();
    let ids: Vec<&str> = around.nodes.iter().map(|n| n.id.as_str()).collect();
    for id in [
        "service:demo.notification.v1.NotificationService",
        "pattern:top@1.0.0",
        "pattern:other@1.0.0",
        "pattern:leaf@2.0.0",
    ] {
        ensure!(ids.contains(&id), "{id} missing: {ids:?}");
    }
    // Search by action used (the latest version of each pattern).
    let by_action = client
        .list_patterns(pb::ListPatternsRequest {
            action: "demo.notification.v1.NotificationService/SendEmail".into(),
            sort: pb::PatternSort::Name as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let names: Vec<&str> = by_action.patterns.iter().map(|p| p.name.as_str()).collect();
    ensure!(names == ["leaf", "other", "top"], "{names:?}");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_counted_per_version() -> Result<()> {
    let harness = Harness::start().await?;
    let mut client = harness.client.clone();
    register(&mut client, doc(BASE, "counted", "1.0.0")?).await?;
    register(&mut client, doc(BASE_V2, "counted", "1.1.0")?).await?;
    for version in ["1.0.0", "1.1.0", "1.1.0", ""] {
        let mut req = crate::common::execute_request("counted", serde_json::json!({"email": "c@x.y"}))?;
        req.version = version.into();
        client.execute_pattern(req).await?;
    }
    // Counted in memory, added to the store every 2 s.
    crate::common::eventually(std::time::Duration::from_secs(10), "the executions counted per version", async || {
        let versions =
            client.list_pattern_versions(pb::ListPatternVersionsRequest { name: "counted".into() }).await?.into_inner();
        let counts: Vec<(String, u64)> = versions.versions.iter().map(|v| (v.version.clone(), v.executions)).collect();
        ensure!(counts == [("1.0.0".to_string(), 1), ("1.1.0".to_string(), 3)], "executions per version: {counts:?}");
        Ok(())
    })
    .await?;
    let listed = client
        .list_patterns(pb::ListPatternsRequest { query: "counted".into(), ..Default::default() })
        .await?
        .into_inner();
    ensure!(listed.patterns.first().is_some_and(|p| p.executions == 4), "{:?}", listed.patterns);
    harness.stop().await;
    Ok(())
}

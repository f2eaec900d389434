//! Registration: every mistake of a document reported at once, each at its path; dry runs store
//! nothing; versions are immutable; registered patterns survive a restart.

use anyhow::{Result, anyhow, ensure};
use nexus_core::pb;
use tonic::Code;

use crate::common::{Harness, Options, pattern, pattern_file, register, status_detail};

/// One document, one mistake per step or field. Each entry of [`EXPECTED`] names where the
/// diagnostic must point and a word its message must contain.
const MANY_MISTAKES: &str = r#"
name: many_mistakes
version: 1.0.0
input:
  type: object
  required: [email]
  properties:
    email: {type: string}
steps:
  - id: user                        # steps[0]: wrong type (a number for a string field)
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: 42}
  - id: avatar                      # steps[1]: unknown field in `with`
    call: demo.asset.v1.AssetService/UploadAsset
    with: {owner_id: "${{ steps.user.user.id }}", source_url: "https://x.example/a.png", colour: red}
  - id: mail                        # steps[2]: unknown action
    call: demo.notification.v1.NotificationService/SendEmale
    with: {to: "${{ input.email }}"}
  - id: push                        # steps[3]: reference to a missing step
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "${{ steps.nosuch.x }}", title: hi}
  - id: lookup                      # steps[4]: reference to a field the output does not have
    call: demo.user.v1.UserService/GetUser
    with: {user_id: "${{ steps.user.user.no_such_field }}"}
  - id: ping                        # steps[5] and steps[6]: a dependency cycle
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "${{ steps.pong.message_id }}"}
  - id: pong
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "${{ steps.ping.message_id }}"}
  - id: greet                       # steps[7]: a CEL expression that does not parse
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input. }}"}
"#;

const EXPECTED: &[(&str, &str)] = &[
    ("steps[0].with.display_name", "42"),
    ("steps[1].with.colour", "colour"),
    ("steps[2].call", "SendEmale"),
    ("steps[3].with.user_id", "nosuch"),
    ("steps[4].with.user_id", "no_such_field"),
    ("steps[5]", "cycle"),
    ("steps[7].with.to", "`input.`"),
];

/// Exactly one diagnostic per expected mistake, at its path, all errors.
fn check_diagnostics(diagnostics: &[pb::Diagnostic], expected: &[(&str, &str)]) -> Result<()> {
    for d in diagnostics {
        println!("  {}: {}", d.path, d.message);
    }
    for (path, word) in expected {
        let at: Vec<&pb::Diagnostic> = diagnostics.iter().filter(|d| d.path == *path).collect();
        ensure!(at.len() == 1, "expected one diagnostic at `{path}`, got {}: {diagnostics:#?}", at.len());
        ensure!(
            at[0].message.contains(word),
            "the diagnostic at `{path}` does not mention `{word}`: {}",
            at[0].message
        );
        ensure!(at[0].severity == pb::Severity::Error as i32, "not an error: {:?}", at[0]);
    }
    ensure!(
        diagnostics.len() == expected.len(),
        "expected {} diagnostics, got {}: {diagnostics:#?}",
        expected.len(),
        diagnostics.len()
    );
    Ok(())
}

async fn register_error(h: &mut Harness, doc: pb::Pattern) -> Result<tonic::Status> {
    h.client
        .register_pattern(pb::RegisterPatternRequest { pattern: Some(doc) })
        .await
        .err()
        .ok_or_else(|| anyhow!("the pattern was registered"))
}

#[tokio::test]
async fn register_reports_every_mistake_at_its_path() -> Result<()> {
    let mut h = Harness::start().await?;
    let status = register_error(&mut h, pattern(MANY_MISTAKES)?).await?;
    ensure!(status.code() == Code::InvalidArgument, "{status:?}");
    let detail: pb::ValidatePatternResponse = status_detail(&status, "nexus.v1.ValidatePatternResponse")?;
    ensure!(!detail.valid, "{detail:?}");
    println!("RegisterPattern diagnostics:");
    check_diagnostics(&detail.diagnostics, EXPECTED)?;
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn register_reports_a_dependency_cycle() -> Result<()> {
    let mut h = Harness::start().await?;
    let doc = pattern(
        r#"
name: cycle
version: 1.0.0
steps:
  - id: first
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "${{ steps.third.message_id }}"}
  - id: second
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "${{ steps.first.message_id }}"}
  - id: third
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: someone@example.com}
    depends_on: [second]
"#,
    )?;
    let status = register_error(&mut h, doc).await?;
    ensure!(status.code() == Code::InvalidArgument, "{status:?}");
    let detail: pb::ValidatePatternResponse = status_detail(&status, "nexus.v1.ValidatePatternResponse")?;
    check_diagnostics(&detail.diagnostics, &[("steps[0]", "cycle")])?;
    let message = &detail.diagnostics[0].message;
    for id in ["first", "second", "third"] {
        ensure!(message.contains(id), "the cycle message does not name `{id}`: {message}");
    }
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn validate_pattern_is_a_dry_run() -> Result<()> {
    let mut h = Harness::start().await?;

    let invalid = h
        .client
        .validate_pattern(pb::ValidatePatternRequest { pattern: Some(pattern(MANY_MISTAKES)?) })
        .await?
        .into_inner();
    ensure!(!invalid.valid, "{invalid:?}");
    println!("ValidatePattern diagnostics:");
    check_diagnostics(&invalid.diagnostics, EXPECTED)?;
    // The same diagnostics as RegisterPattern's.
    let status = register_error(&mut h, pattern(MANY_MISTAKES)?).await?;
    let registered: pb::ValidatePatternResponse = status_detail(&status, "nexus.v1.ValidatePatternResponse")?;
    ensure!(registered.diagnostics == invalid.diagnostics, "{registered:#?}\nvs\n{invalid:#?}");

    // A valid document validates, and is still not stored.
    let valid = h
        .client
        .validate_pattern(pb::ValidatePatternRequest { pattern: Some(pattern_file("user_creation")?) })
        .await?
        .into_inner();
    ensure!(valid.valid, "{valid:?}");
    ensure!(valid.diagnostics.iter().all(|d| d.severity != pb::Severity::Error as i32), "{valid:?}");
    for name in ["many_mistakes", "user_creation"] {
        let got = h.client.get_pattern(pb::GetPatternRequest { name: name.into(), version: String::new() }).await;
        ensure!(matches!(&got, Err(s) if s.code() == Code::NotFound), "{name}: {got:?}");
    }
    let listed = h.client.list_patterns(pb::ListPatternsRequest::default()).await?.into_inner();
    ensure!(listed.patterns.is_empty(), "{listed:?}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn versions_are_immutable_and_reregistering_is_idempotent() -> Result<()> {
    let mut h = Harness::start().await?;
    let doc = pattern_file("user_creation")?;
    let first = register(&mut h.client, doc.clone()).await?;
    ensure!(first.created, "{first:?}");
    let r = first.pattern_ref.as_ref().ok_or_else(|| anyhow!("no pattern_ref"))?;
    ensure!(r.name == "user_creation" && r.version == "1.0.0", "{first:?}");

    let again = register(&mut h.client, doc.clone()).await?;
    ensure!(!again.created, "re-registering the identical document must not create: {again:?}");

    let mut changed = doc.clone();
    changed.description = "Something else entirely.".into();
    let status = register_error(&mut h, changed.clone()).await?;
    ensure!(status.code() == Code::AlreadyExists, "{status:?}");
    ensure!(status.message().contains("1.0.1"), "the message should suggest the next version: {status:?}");

    // The stored version is the first one, and a new version number is accepted.
    let stored = h
        .client
        .get_pattern(pb::GetPatternRequest { name: "user_creation".into(), version: "1.0.0".into() })
        .await?
        .into_inner();
    ensure!(stored.description == doc.description, "{stored:?}");
    changed.version = "1.0.1".into();
    ensure!(register(&mut h.client, changed).await?.created, "1.0.1");
    let latest = h
        .client
        .get_pattern(pb::GetPatternRequest { name: "user_creation".into(), version: String::new() })
        .await?
        .into_inner();
    ensure!(latest.version == "1.0.1", "{latest:?}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn registered_patterns_survive_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = || Options { data_dir: Some(dir.path().to_path_buf()), ..Options::default() };

    let mut h = Harness::start_with(options()).await?;
    register(&mut h.client, pattern_file("user_creation")?).await?;
    register(&mut h.client, pattern_file("subscribe_live_stream")?).await?;
    h.stop().await;

    let mut h = Harness::start_with(options()).await?;
    let listed = h.client.list_patterns(pb::ListPatternsRequest::default()).await?.into_inner();
    let names: Vec<&str> = listed.patterns.iter().map(|p| p.name.as_str()).collect();
    ensure!(names == ["subscribe_live_stream", "user_creation"], "after restart: {names:?}");
    let stored = h
        .client
        .get_pattern(pb::GetPatternRequest { name: "user_creation".into(), version: "1.0.0".into() })
        .await?
        .into_inner();
    let original = pattern_file("user_creation")?;
    ensure!(stored.steps == original.steps && stored.output == original.output, "{stored:#?}");
    ensure!(stored.registered_at.is_some(), "{stored:?}");
    // Still executable against the (new) demo backends, and still immutable.
    let response = h
        .client
        .execute_pattern(crate::common::execute_request(
            "user_creation",
            serde_json::json!({"email": crate::common::unique_email("restart"), "name": "Grace"}),
        )?)
        .await?
        .into_inner();
    ensure!(response.status == pb::ExecutionStatus::Succeeded as i32, "{response:?}");
    let again = register(&mut h.client, pattern_file("user_creation")?).await?;
    ensure!(!again.created, "{again:?}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_overlong_search_term_is_invalid_argument_naming_the_field() -> Result<()> {
    let mut h = Harness::start().await?;
    let request = pb::ListPatternsRequest { query: "x".repeat(100_000), ..Default::default() };
    let e = h.client.list_patterns(request).await.err().ok_or_else(|| anyhow!("a 100,000-byte query was accepted"))?;
    ensure!(e.code() == Code::InvalidArgument, "{e:?}");
    ensure!(e.message() == "`query` is 100000 bytes long; a search term is at most 256", "{}", e.message());
    let request = pb::ListPatternsRequest { tag: "t".repeat(257), ..Default::default() };
    let e = h.client.list_patterns(request).await.err().ok_or_else(|| anyhow!("a 257-byte tag was accepted"))?;
    ensure!(e.code() == Code::InvalidArgument && e.message().starts_with("`tag`"), "{e:?}");
    let ok = pb::ListPatternsRequest { query: "q".repeat(256), ..Default::default() };
    h.client.list_patterns(ok).await?;
    h.stop().await;
    Ok(())
}

//! SuggestPatterns and GeneratePattern over the real API: synthesized candidates that register
//! and run, restricted actions kept from callers who could not register them, suggestions mined
//! from one tenant's executions only, and the LLM path against a local server speaking the
//! OpenAI chat-completions protocol with recorded answers (never the network).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result, ensure};
use nexus_core::pb;
use nexus_store::{AuthStore, api_key};
use serde_json::{Value, json};
use tonic::Code;

use crate::common::{Harness, Options, authed, execute_request, to_json, unique_email};

fn field(name: &str, ty: &str) -> pb::GoalField {
    pb::GoalField { name: name.into(), r#type: ty.into() }
}

fn calls(c: &pb::GeneratedCandidate) -> Vec<String> {
    c.pattern.iter().flat_map(|p| p.steps.iter().map(|s| s.call.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_pattern_type_checks_registers_and_runs() -> Result<()> {
    let harness = Harness::start().await?;
    let mut client = harness.client.clone();
    let r = client
        .generate_pattern(pb::GeneratePatternRequest {
            inputs: vec![field("email", "string"), field("name", "string")],
            outputs: vec![field("user_id", ""), field("email_id", "")],
            name: "signup_generated".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let best = r.candidates.first().context("no candidate")?;
    let best_calls = calls(best);
    ensure!(
        best_calls.contains(&"demo.user.v1.UserService/CreateUser".to_string())
            && best_calls.contains(&"demo.notification.v1.NotificationService/SendEmail".to_string()),
        "{best_calls:?}"
    );
    ensure!(best.source == "synthesis" && !best.explanation.is_empty() && !best.yaml.is_empty(), "{best:?}");
    ensure!(r.notes.iter().any(|n| n.contains("no LLM provider")), "{:?}", r.notes);
    // What it proposes is a real pattern: it registers and runs.
    client.register_pattern(pb::RegisterPatternRequest { pattern: best.pattern.clone() }).await?;
    let email = unique_email("generated");
    let out = client
        .execute_pattern(execute_request("signup_generated", json!({"email": email, "name": "Grace"}))?)
        .await?
        .into_inner();
    let output = to_json(out.output.as_ref().context("no output")?);
    ensure!(output["user_id"].as_str().is_some_and(|u| u.starts_with("usr_")), "{output}");
    ensure!(output["email_id"].as_str().is_some_and(|m| !m.is_empty()), "{output}");

    // Asked again for the same name, the answer shows what changes against what is registered.
    let again = client
        .generate_pattern(pb::GeneratePatternRequest {
            inputs: vec![field("email", "string"), field("name", "string")],
            outputs: vec![field("user_id", "")],
            use_actions: vec!["demo.notification.v1.NotificationService/SendPush".into()],
            name: "signup_generated".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let first = again.candidates.first().context("no candidate")?;
    ensure!(!first.changes.is_empty(), "a diff against signup_generated@1.0.0: {first:?}");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_goals_are_invalid_argument_naming_what_is_wrong() -> Result<()> {
    let harness = Harness::start().await?;
    let mut client = harness.client.clone();
    let cases: Vec<(pb::GeneratePatternRequest, &str)> = vec![
        (pb::GeneratePatternRequest::default(), "the goal is empty"),
        (
            pb::GeneratePatternRequest { end_with: "demo.user.v1.UserService/CreateUsr".into(), ..Default::default() },
            "did you mean `demo.user.v1.UserService/CreateUser`",
        ),
        (
            pb::GeneratePatternRequest {
                inputs: vec![field("email", "strng")],
                outputs: vec![field("user_id", "")],
                ..Default::default()
            },
            "inputs[0].type: `strng`",
        ),
        (pb::GeneratePatternRequest { outputs: vec![field("user id!", "")], ..Default::default() }, "outputs[0].name"),
        (pb::GeneratePatternRequest { goal: "x".repeat(5000), ..Default::default() }, "limit is 4096"),
    ];
    for (request, expected) in cases {
        let s = client.generate_pattern(request).await.expect_err("refused");
        ensure!(s.code() == Code::InvalidArgument && s.message().contains(expected), "{expected}: {s:?}");
    }
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_never_proposes_a_restricted_action_to_a_caller_who_could_not_register_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let mut auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    auth.restricted_actions.insert("demo.notification.v1.NotificationService/SendEmail".into(), vec!["admin".into()]);
    let harness =
        Harness::start_with(Options { data_dir: Some(dir.path().to_path_buf()), auth, ..Options::default() }).await?;
    let mut client = harness.client.clone();
    let (viewer, v) = api_key::generate("acme", "reader", &["viewer".to_string()]);
    let (admin, a) = api_key::generate("acme", "boss", &["admin".to_string()]);
    store.insert_api_key(&v).await?;
    store.insert_api_key(&a).await?;
    let goal = || pb::GeneratePatternRequest {
        goal: "create a user and send them a welcome email".into(),
        limit: 20,
        ..Default::default()
    };
    let for_viewer = client.generate_pattern(authed(goal(), &viewer)).await?.into_inner();
    ensure!(!for_viewer.candidates.is_empty(), "{:?}", for_viewer.notes);
    for c in &for_viewer.candidates {
        ensure!(!calls(c).iter().any(|c| c.ends_with("/SendEmail")), "proposed to a viewer: {:?}", calls(c));
    }
    let for_admin = client.generate_pattern(authed(goal(), &admin)).await?.into_inner();
    ensure!(
        for_admin.candidates.iter().any(|c| calls(c).iter().any(|c| c.ends_with("/SendEmail"))),
        "the admin may call SendEmail: {:?}",
        for_admin.candidates.iter().map(calls).collect::<Vec<_>>()
    );
    // Naming it is refused outright.
    let named = pb::GeneratePatternRequest {
        use_actions: vec!["demo.notification.v1.NotificationService/SendEmail".into()],
        ..Default::default()
    };
    let s = client.generate_pattern(authed(named, &viewer)).await.expect_err("restricted");
    ensure!(s.code() == Code::InvalidArgument && s.message().contains("restricted"), "{s:?}");
    // Without credentials: refused like every RPC.
    let s = client.generate_pattern(goal()).await.expect_err("no credentials");
    ensure!(s.code() == Code::Unauthenticated, "{s:?}");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggest_patterns_finds_the_composite_in_the_callers_tenant_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    let harness =
        Harness::start_with(Options { data_dir: Some(dir.path().to_path_buf()), auth, ..Options::default() }).await?;
    let mut client = harness.client.clone();
    let (acme, a) = api_key::generate("acme", "app", &["admin".to_string()]);
    let (other, o) = api_key::generate("other", "app", &["admin".to_string()]);
    store.insert_api_key(&a).await?;
    store.insert_api_key(&o).await?;
    for file in ["user_creation", "subscribe_live_stream"] {
        let doc = crate::common::pattern_file(file)?;
        client.register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(doc) }, &acme)).await?;
    }
    for i in 0..4 {
        let created = client
            .execute_pattern(authed(
                execute_request("user_creation", json!({"email": unique_email(&format!("s{i}")), "name": "Ada"}))?,
                &acme,
            ))
            .await?
            .into_inner();
        let user_id = to_json(created.output.as_ref().context("no output")?)["user_id"].clone();
        client
            .execute_pattern(authed(
                execute_request(
                    "subscribe_live_stream",
                    json!({"broadcast_id": "public-k", "user_id": user_id, "max_chunks": 1}),
                )?,
                &acme,
            ))
            .await?;
    }
    let r = client.suggest_patterns(authed(pb::SuggestPatternsRequest::default(), &acme)).await?.into_inner();
    let composite =
        r.suggestions.iter().find(|s| s.kind == pb::SuggestionKind::Composite as i32).with_context(|| {
            format!("no composite in {:?}", r.suggestions.iter().map(|s| &s.title).collect::<Vec<_>>())
        })?;
    ensure!(composite.support == 4 && composite.execution_ids.len() == 4, "{composite:?}");
    ensure!(composite.based_on == ["user_creation@1.0.0", "subscribe_live_stream@1.0.0"], "{:?}", composite.based_on);
    ensure!(composite.yaml.contains("${{ steps.user_creation.user_id }}"), "{}", composite.yaml);
    ensure!(composite.gain.as_ref().is_some_and(|g| g.calls_saved_per_run == 1.0), "{:?}", composite.gain);
    // The proposal validates and registers.
    let validated = client
        .validate_pattern(authed(pb::ValidatePatternRequest { pattern: composite.pattern.clone() }, &acme))
        .await?
        .into_inner();
    ensure!(validated.valid, "{:?}", validated.diagnostics);
    // Another tenant sees the same public patterns but none of acme's executions.
    let theirs = client.suggest_patterns(authed(pb::SuggestPatternsRequest::default(), &other)).await?.into_inner();
    ensure!(theirs.suggestions.is_empty() && theirs.executions_analyzed == 0, "{theirs:?}");
    // Filters.
    let none = client
        .suggest_patterns(authed(
            pb::SuggestPatternsRequest { kinds: vec![pb::SuggestionKind::RetryPolicy as i32], ..Default::default() },
            &acme,
        ))
        .await?
        .into_inner();
    ensure!(none.suggestions.iter().all(|s| s.kind == pb::SuggestionKind::RetryPolicy as i32), "{none:?}");
    harness.stop().await;
    Ok(())
}

/// A local server speaking OpenAI's chat-completions protocol: answers from a queue of
/// recorded contents, and keeps every request it got.
struct FakeLlm {
    url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn fake_llm(answers: Vec<String>) -> Result<FakeLlm> {
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (a, r) = (answers.clone(), requests.clone());
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (a, r) = (a.clone(), r.clone());
            async move {
                if let Ok(mut r) = r.lock() {
                    r.push(body);
                }
                let content = a.lock().ok().and_then(|mut a| if a.len() > 1 { a.pop_front() } else { a.front().cloned() });
                axum::Json(json!({
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content.unwrap_or_default()}, "finish_reason": "stop"}],
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(FakeLlm { url, requests, _task: task })
}

fn llm_options(url: &str) -> Options {
    Options {
        ai: Some(nexus_server::AiConfig {
            llm_endpoint: url.into(),
            llm_model: "recorded".into(),
            ..Default::default()
        }),
        ..Options::default()
    }
}

const WRONG_ACTION: &str = "Here it is:\n```yaml\nname: welcome_push\nversion: 1.0.0\ninput: {type: object, required: [email, name], properties: {email: {type: string}, name: {type: string}}}\nsteps:\n  - id: user\n    call: demo.user.v1.UserService/CreateUsr\n    with: {email: \"${{ input.email }}\", display_name: \"${{ input.name }}\"}\noutput: {user_id: \"${{ steps.user.user.id }}\"}\n```";
const WRONG_FIELD: &str = "```yaml\nname: welcome_push\nversion: 1.0.0\ninput: {type: object, required: [email, name], properties: {email: {type: string}, name: {type: string}}}\nsteps:\n  - id: user\n    call: demo.user.v1.UserService/CreateUser\n    with: {emial: \"${{ input.email }}\", display_name: \"${{ input.name }}\"}\noutput: {user_id: \"${{ steps.user.user.id }}\"}\n```";
const FIXED: &str = "```yaml\nname: welcome_push\nversion: 1.0.0\ninput: {type: object, required: [email, name], properties: {email: {type: string}, name: {type: string}}}\nsteps:\n  - id: user\n    call: demo.user.v1.UserService/CreateUser\n    with: {email: \"${{ input.email }}\", display_name: \"${{ input.name }}\"}\n  - id: push\n    call: demo.notification.v1.NotificationService/SendPush\n    with: {user_id: \"${{ steps.user.user.id }}\", title: \"Welcome\", body: \"${{ input.name }}\"}\noutput: {user_id: \"${{ steps.user.user.id }}\", push_id: \"${{ steps.push.message_id }}\"}\n```";

fn last_user_message(request: &Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_path_repairs_a_wrong_action_and_a_wrong_field() -> Result<()> {
    let llm = fake_llm(vec![WRONG_ACTION.into(), WRONG_FIELD.into(), FIXED.into()]).await?;
    let harness = Harness::start_with(llm_options(&llm.url)).await?;
    let mut client = harness.client.clone();
    let r = client
        .generate_pattern(pb::GeneratePatternRequest {
            goal: "create a user and send them a welcome push notification".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let requests = llm.requests.lock().map(|r| r.clone()).unwrap_or_default();
    ensure!(requests.len() == 3, "{} requests", requests.len());
    // Grounded: the catalog's actions are in the first request, the diagnostics in the repairs.
    ensure!(
        last_user_message(&requests[0]).contains("demo.user.v1.UserService/CreateUser(email: string"),
        "{}",
        last_user_message(&requests[0])
    );
    ensure!(requests[0]["model"] == "recorded", "{}", requests[0]);
    let first_repair = last_user_message(&requests[1]);
    ensure!(
        first_repair.contains("CreateUsr") && first_repair.to_lowercase().contains("did you mean"),
        "{first_repair}"
    );
    ensure!(last_user_message(&requests[2]).contains("emial"), "{}", last_user_message(&requests[2]));
    let from_llm = r.candidates.iter().find(|c| c.source.contains("llm")).with_context(|| format!("{:?}", r.notes))?;
    ensure!(r.notes.iter().any(|n| n.contains("after 2 repair round(s)")), "{:?}", r.notes);
    ensure!(calls(from_llm).iter().any(|c| c.ends_with("/SendPush")), "{from_llm:?}");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_proposal_that_stays_invalid_is_rejected_and_synthesis_still_answers() -> Result<()> {
    let llm = fake_llm(vec![WRONG_ACTION.into()]).await?;
    let harness = Harness::start_with(llm_options(&llm.url)).await?;
    let mut client = harness.client.clone();
    let goal = || pb::GeneratePatternRequest {
        goal: "create a user and send them a welcome push notification".into(),
        ..Default::default()
    };
    let r = client.generate_pattern(goal()).await?.into_inner();
    ensure!(llm.requests.lock().map(|r| r.len()).unwrap_or_default() == 3, "1 proposal + 2 repair rounds");
    ensure!(
        r.notes.iter().any(|n| n.contains("rejected after 2 repair round(s)") && n.contains("CreateUsr")),
        "{:?}",
        r.notes
    );
    ensure!(!r.candidates.is_empty() && r.candidates.iter().all(|c| c.source == "synthesis"), "{:?}", r.candidates);
    // `offline` does not ask it.
    let offline = client.generate_pattern(pb::GeneratePatternRequest { offline: true, ..goal() }).await?.into_inner();
    ensure!(llm.requests.lock().map(|r| r.len()).unwrap_or_default() == 3, "offline asked the provider");
    ensure!(!offline.candidates.is_empty(), "{offline:?}");
    harness.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_is_a_note_not_a_failure() -> Result<()> {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let harness = Harness::start_with(llm_options(&format!("http://127.0.0.1:{port}/v1"))).await?;
    let mut client = harness.client.clone();
    let r = client
        .generate_pattern(pb::GeneratePatternRequest { goal: "create a user".into(), ..Default::default() })
        .await?
        .into_inner();
    ensure!(!r.candidates.is_empty(), "{r:?}");
    ensure!(r.notes.iter().any(|n| n.contains("could not be reached")), "{:?}", r.notes);
    harness.stop().await;
    Ok(())
}

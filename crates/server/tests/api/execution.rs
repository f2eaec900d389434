//! Executions through the API: which code, status details and metadata a caller sees for each kind
//! of failure (a backend down after retries, a step timeout, a compensated failure, invalid
//! input, the in-flight limit), idempotency keys (ephemeral and durable), sub-patterns from the
//! registry, the execution history, and the invoker (steps really concurrent, a restarted backend
//! reconnected). What an execution does step by step is tested once, in the engine's traces.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use nexus_core::pb;
use nexus_demo::method;
use serde_json::json;
use tonic::Code;

use crate::common::{
    Harness, Options, eventually, execute_request, execution_id, get_execution, pattern, pattern_file, register,
    register_examples, status_detail, step, test_pattern, to_json, unique_email, until,
};

async fn execute_err(h: &mut Harness, name: &str, input: serde_json::Value) -> Result<tonic::Status> {
    h.client.execute_pattern(execute_request(name, input)?).await.err().ok_or_else(|| anyhow!("{name} succeeded"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_steps_run_concurrently() -> Result<()> {
    let mut h = Harness::start().await?;
    register(&mut h.client, test_pattern("notify_both")?).await?;
    let input = json!({"email": "a@example.com", "user_id": "usr_1"});
    // Warm up: the first call opens Nexus's channel to the backend.
    h.client.execute_pattern(execute_request("notify_both", input.clone())?).await?;

    h.demo.set_latency(method::SEND_EMAIL, Duration::from_millis(200));
    h.demo.set_latency(method::SEND_PUSH, Duration::from_millis(200));
    let started = Instant::now();
    let response = h.client.execute_pattern(execute_request("notify_both", input)?).await?.into_inner();
    let elapsed = started.elapsed();
    println!("two 200 ms steps took {elapsed:?}");
    ensure!(response.status == pb::ExecutionStatus::Succeeded as i32, "{response:?}");
    let output = to_json(response.output.as_ref().ok_or_else(|| anyhow!("no output"))?);
    ensure!(output["email_id"].is_string() && output["push_id"].is_string(), "{output}");
    ensure!(elapsed >= Duration::from_millis(200), "faster than one step: {elapsed:?}");
    ensure!(elapsed < Duration::from_millis(350), "the steps did not overlap: {elapsed:?}");
    ensure!(h.demo.calls(method::SEND_EMAIL) == 2 && h.demo.calls(method::SEND_PUSH) == 2, "calls");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_backend_down_after_retries_fails_with_unavailable() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    h.demo.fail_next(method::CREATE_USER, 5, Code::Unavailable);

    let status = execute_err(&mut h, "user_creation", json!({"email": unique_email("down"), "name": "Ada"})).await?;
    ensure!(status.code() == Code::Unavailable, "{status:?}");
    ensure!(status.message().contains("`user`"), "the message should name the step: {}", status.message());
    let id = execution_id(status.metadata())?;
    let response: pb::ExecutePatternResponse = status_detail(&status, "nexus.v1.ExecutePatternResponse")?;
    ensure!(response.execution_id == id, "{response:?} vs {id}");
    ensure!(response.status == pb::ExecutionStatus::Failed as i32, "{response:?}");
    let error = response.error.as_ref().ok_or_else(|| anyhow!("no error in {response:?}"))?;
    ensure!(error.code == "UNAVAILABLE" && error.step_id == "user", "{error:?}");

    let execution = get_execution(&mut h.client, &id).await?;
    ensure!(execution.status == pb::ExecutionStatus::Failed as i32, "{execution:?}");
    let user = step(&execution, "user")?;
    ensure!(user.status == pb::StepStatus::Failed as i32, "{user:?}");
    ensure!(user.attempts.len() == 3, "max_attempts is 3: {:#?}", user.attempts);
    for (i, a) in user.attempts.iter().enumerate() {
        ensure!(a.attempt as usize == i + 1 && a.code == "UNAVAILABLE", "{a:?}");
    }
    ensure!(h.demo.calls(method::CREATE_USER) == 3, "CreateUser called {} times", h.demo.calls(method::CREATE_USER));
    // Every attempt carries the step's idempotency key, `<execution>/<step>`.
    let keys = h.demo.idempotency_keys(method::CREATE_USER);
    let expected = format!("{id}/user");
    ensure!(keys.len() == 3 && keys.iter().all(|k| *k == expected), "keys {keys:?}, expected 3 × {expected}");
    // Nothing after the failed step ran.
    ensure!(h.demo.calls(method::SEND_EMAIL) == 0 && h.demo.calls(method::UPLOAD_ASSET) == 0, "later steps ran");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_step_slower_than_its_timeout_fails_with_deadline_exceeded() -> Result<()> {
    let mut h = Harness::start().await?;
    let doc = pattern(
        r#"
name: impatient
version: 1.0.0
steps:
  - id: push
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: usr_1, title: Hello}
    timeout: 0.1s
"#,
    )?;
    register(&mut h.client, doc).await?;
    h.demo.set_latency(method::SEND_PUSH, Duration::from_secs(1));
    let started = Instant::now();
    let status = execute_err(&mut h, "impatient", json!({})).await?;
    let elapsed = started.elapsed();
    ensure!(status.code() == Code::DeadlineExceeded, "{status:?}");
    ensure!(elapsed < Duration::from_millis(900), "the step timeout was not applied: {elapsed:?}");
    let execution = get_execution(&mut h.client, &execution_id(status.metadata())?).await?;
    let push = step(&execution, "push")?;
    ensure!(push.status == pb::StepStatus::Failed as i32, "{push:?}");
    ensure!(push.attempts.len() == 1 && push.attempts[0].code == "DEADLINE_EXCEEDED", "{push:?}");
    h.stop().await;
    Ok(())
}

/// A failed execution whose completed steps were compensated: the error carries the failing
/// step's code, its details the response with status COMPENSATED, and GetExecution shows each
/// compensation. (Which steps are compensated, in which order, is the engine's
/// `a_failure_compensates_completed_steps_in_reverse_completion_order`.)
#[tokio::test]
async fn a_compensated_failure_reports_the_step_s_code_and_each_compensation() -> Result<()> {
    let mut h = Harness::start().await?;
    register(&mut h.client, test_pattern("two_users_then_mail")?).await?;
    h.demo.fail_next(method::SEND_EMAIL, 100, Code::FailedPrecondition);

    let status = execute_err(&mut h, "two_users_then_mail", json!({"email": unique_email("comp")})).await?;
    ensure!(status.code() == Code::FailedPrecondition, "{status:?}");
    let id = execution_id(status.metadata())?;
    let response: pb::ExecutePatternResponse = status_detail(&status, "nexus.v1.ExecutePatternResponse")?;
    ensure!(response.execution_id == id, "{response:?}");
    ensure!(response.status == pb::ExecutionStatus::Compensated as i32, "{response:?}");
    let error = response.error.as_ref().ok_or_else(|| anyhow!("no error in {response:?}"))?;
    ensure!(error.code == "FAILED_PRECONDITION" && error.step_id == "mail", "{error:?}");

    let execution = get_execution(&mut h.client, &id).await?;
    ensure!(execution.status == pb::ExecutionStatus::Compensated as i32, "{execution:#?}");
    ensure!(step(&execution, "mail")?.compensation.is_none(), "a failed step is not compensated");
    for s in ["u1", "u2"] {
        let run = step(&execution, s)?;
        let comp = run.compensation.as_ref().ok_or_else(|| anyhow!("`{s}` was not compensated: {run:#?}"))?;
        ensure!(comp.call == method::DELETE_USER && comp.status == pb::StepStatus::Succeeded as i32, "{comp:?}");
    }
    // The compensations reached the backend, with their keys.
    let keys = h.demo.idempotency_keys(method::DELETE_USER);
    ensure!(keys == [format!("{id}/u2/compensate"), format!("{id}/u1/compensate")], "DeleteUser keys {keys:?}");
    h.stop().await;
    Ok(())
}

/// ExecutePattern's `idempotency_key` returns the first execution, for an ephemeral pattern (kept
/// in memory) and a durable one (kept in the journal, in the store). Concurrent duplicates are the
/// engine's `an_idempotency_key_runs_the_pattern_once`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_first_execution_ephemeral_or_durable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut h = Harness::start_with(Options { data_dir: Some(dir.path().to_path_buf()), ..Default::default() }).await?;
    let mut durable = pattern_file("user_creation")?;
    durable.name = "user_creation_durable".into();
    durable.durability = "durable".into();
    register(&mut h.client, pattern_file("user_creation")?).await?;
    register(&mut h.client, durable).await?;
    for (n, name) in (1..).zip(["user_creation", "user_creation_durable"]) {
        let mut request = execute_request(name, json!({"email": unique_email("idem"), "name": "Ada"}))?;
        request.idempotency_key = "key-1".into();
        let first = h.client.execute_pattern(request.clone()).await?.into_inner();
        let second = h.client.execute_pattern(request).await?.into_inner();
        ensure!(first.status == pb::ExecutionStatus::Succeeded as i32, "{name}: {first:?}");
        ensure!(second.execution_id == first.execution_id, "{name}: {second:?} vs {first:?}");
        ensure!(second.output == first.output, "{name}: {second:?} vs {first:?}");
        ensure!(
            h.demo.calls(method::CREATE_USER) == n,
            "{name}: CreateUser calls {}",
            h.demo.calls(method::CREATE_USER)
        );
        let execution = get_execution(&mut h.client, &first.execution_id).await?;
        ensure!(execution.idempotency_key == "key-1", "{name}: {execution:?}");
    }
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn input_that_violates_the_schema_is_invalid_argument() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    let status = execute_err(&mut h, "user_creation", json!({"name": "Ada"})).await?;
    ensure!(status.code() == Code::InvalidArgument, "{status:?}");
    ensure!(status.message().contains("input.email"), "the message should name input.email: {}", status.message());
    ensure!(h.demo.calls(method::CREATE_USER) == 0, "a backend was called with invalid input");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn list_executions_is_newest_first() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        let response = h
            .client
            .execute_pattern(execute_request(
                "user_creation",
                json!({"email": unique_email("list"), "name": format!("n{i}")}),
            )?)
            .await?;
        ids.push(response.into_inner().execution_id);
    }
    // A failed one counts too.
    let status = execute_err(&mut h, "user_creation", json!({"name": "no email"})).await?;
    ensure!(status.code() == Code::InvalidArgument, "{status:?}");
    h.demo.fail_next(method::CREATE_USER, 3, Code::Unavailable);
    let status = execute_err(&mut h, "user_creation", json!({"email": unique_email("list"), "name": "x"})).await?;
    ids.push(execution_id(status.metadata())?);

    let listed = h
        .client
        .list_executions(pb::ListExecutionsRequest { pattern_name: "user_creation".into(), ..Default::default() })
        .await?
        .into_inner();
    let listed_ids: Vec<&str> = listed.executions.iter().map(|e| e.id.as_str()).collect();
    let expected: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    ensure!(listed_ids == expected, "listed {listed_ids:?}, expected newest first {expected:?}");
    let started: Vec<_> = listed.executions.iter().map(|e| e.started_at.unwrap_or_default()).collect();
    ensure!(
        started.windows(2).all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos)),
        "started_at not descending: {started:?}"
    );
    ensure!(listed.executions[0].status == pb::ExecutionStatus::Failed as i32, "{:?}", listed.executions[0]);

    // Filtered by status, and paginated.
    let failed = h
        .client
        .list_executions(pb::ListExecutionsRequest { status: pb::ExecutionStatus::Failed as i32, ..Default::default() })
        .await?
        .into_inner();
    ensure!(failed.executions.len() == 1 && failed.executions[0].id == ids[3], "{failed:?}");
    let page =
        h.client.list_executions(pb::ListExecutionsRequest { page_size: 2, ..Default::default() }).await?.into_inner();
    let page_ids: Vec<&str> = page.executions.iter().map(|e| e.id.as_str()).collect();
    ensure!(page_ids == expected[..2] && !page.next_page_token.is_empty(), "{page:?}");
    let rest = h
        .client
        .list_executions(pb::ListExecutionsRequest {
            page_size: 2,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let rest_ids: Vec<&str> = rest.executions.iter().map(|e| e.id.as_str()).collect();
    ensure!(rest_ids == expected[2..] && rest.next_page_token.is_empty(), "{rest:?}");
    h.stop().await;
    Ok(())
}

/// Executions that overlap: the one started last is the newest, and paging visits each once.
#[tokio::test]
async fn list_executions_orders_and_pages_overlapping_executions() -> Result<()> {
    let mut h = Harness::start().await?;
    for (name, call, with) in [
        ("slow_push", "demo.notification.v1.NotificationService/SendPush", "{user_id: usr_1, title: Hi}"),
        ("quick_email", "demo.notification.v1.NotificationService/SendEmail", "{to: a@example.com}"),
    ] {
        let doc = format!("name: {name}\nversion: 1.0.0\nsteps:\n  - id: only\n    call: {call}\n    with: {with}\n");
        register(&mut h.client, pattern(&doc)?).await?;
    }
    h.demo.set_latency(method::SEND_PUSH, Duration::from_millis(400));

    // slow starts first and finishes last; quick starts second and finishes first.
    let mut client = h.client.clone();
    let slow = tokio::spawn(async move {
        client.execute_pattern(execute_request("slow_push", json!({}))?).await.map_err(anyhow::Error::from)
    });
    let demo = &h.demo;
    until(Duration::from_secs(2), "slow_push's call in flight", || demo.in_flight(method::SEND_PUSH) == 1).await?;
    let quick = h.client.execute_pattern(execute_request("quick_email", json!({}))?).await?.into_inner();
    let slow = slow.await??.into_inner();

    let newest_first = [quick.execution_id.as_str(), slow.execution_id.as_str()];
    // One per page: every execution exactly once.
    let mut paged = Vec::new();
    let mut token = String::new();
    for _ in 0..5 {
        let page = h
            .client
            .list_executions(pb::ListExecutionsRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        paged.extend(page.executions.into_iter().map(|e| e.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let mut paged_sorted = paged.clone();
    paged_sorted.sort();
    let mut all: Vec<String> = newest_first.iter().map(ToString::to_string).collect();
    all.sort();
    ensure!(paged_sorted == all, "paging with page_size 1 returned {paged:?}, expected each of {all:?} once");

    let listed = h.client.list_executions(pb::ListExecutionsRequest::default()).await?.into_inner();
    let listed_ids: Vec<&str> = listed.executions.iter().map(|e| e.id.as_str()).collect();
    println!("listed {listed_ids:?}, started newest first {newest_first:?}");
    ensure!(
        listed_ids == newest_first,
        "not newest (by start) first: listed {listed_ids:?}, expected {newest_first:?}"
    );
    h.stop().await;
    Ok(())
}

/// A registered pattern is an action: `pattern:user_creation@latest` is resolved to the concrete
/// version at registration (and stays so), type-checked against the callee, and run in-process.
#[tokio::test]
async fn a_pattern_calls_a_registered_pattern_as_a_step() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    let caller = pattern(
        r#"
name: onboarding
version: 1.0.0
input: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: account
    call: pattern:user_creation@latest
    with: {email: "${{ input.email }}", name: "New user"}
  - id: push
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "${{ steps.account.user_id }}", title: "Welcome"}
output:
  user_id: "${{ steps.account.user_id }}"
  push_id: "${{ steps.push.message_id }}"
"#,
    )?;
    let r = register(&mut h.client, caller).await?;
    ensure!(
        r.diagnostics.iter().any(|d| d.message.contains("pattern:user_creation@1.0.0")),
        "@latest is resolved and reported: {:?}",
        r.diagnostics
    );
    let stored = h
        .client
        .get_pattern(pb::GetPatternRequest { name: "onboarding".into(), version: String::new() })
        .await?
        .into_inner();
    ensure!(stored.steps[0].call == "pattern:user_creation@1.0.0", "{}", stored.steps[0].call);

    let out = h.client.execute_pattern(execute_request("onboarding", json!({"email": unique_email("sub")}))?).await?;
    let output = to_json(&out.into_inner().output.unwrap_or_default());
    ensure!(output["user_id"].as_str().is_some_and(|u| u.starts_with("usr_")), "{output}");
    ensure!(output["push_id"].as_str().is_some_and(|u| u.starts_with("msg_")), "{output}");

    // The callee's contract is checked: an unknown input and an unknown output are refused.
    let bad = pattern(
        r#"
name: onboarding_bad
version: 1.0.0
steps:
  - id: account
    call: pattern:user_creation@1.0.0
    with: {mail: "x@y.z"}
  - id: push
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "${{ steps.account.userid }}"}
"#,
    )?;
    let status = h.client.register_pattern(pb::RegisterPatternRequest { pattern: Some(bad) }).await.unwrap_err();
    ensure!(status.code() == Code::InvalidArgument, "{status:?}");
    let detail: pb::ValidatePatternResponse = status_detail(&status, "nexus.v1.ValidatePatternResponse")?;
    let paths: Vec<&str> = detail.diagnostics.iter().map(|d| d.path.as_str()).collect();
    // `mail` is not an input of user_creation; `email` and `name` are required; `userid` is not an output.
    ensure!(paths == ["steps[0].with.mail", "steps[0].with", "steps[0].with", "steps[1].with.user_id"], "{paths:?}");
    h.stop().await;
    Ok(())
}

/// ListExecutions includes durable executions from the journal: after a restart (the in-memory
/// history is empty) they are still listed, newest first, with their outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_executions_are_listed_after_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = || Options { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let harness = Harness::start_with(options()).await?;
    let mut client = harness.client.clone();
    let mut doc = pattern_file("user_creation")?;
    doc.name = "listed_durable".into();
    doc.durability = "durable".into();
    register(&mut client, doc).await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let input = serde_json::json!({"email": unique_email("listed"), "name": "L"});
        let r = client.execute_pattern(execute_request("listed_durable", input)?).await?;
        ids.push(r.into_inner().execution_id);
    }
    harness.stop().await;

    let harness = Harness::start_with(options()).await?;
    let mut client = harness.client.clone();
    let listed = client
        .list_executions(pb::ListExecutionsRequest {
            pattern_name: "listed_durable".into(),
            page_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let got: Vec<&str> = listed.executions.iter().map(|e| e.id.as_str()).collect();
    ensure!(got == newest_first[..2], "{got:?} vs {newest_first:?}");
    ensure!(
        listed.executions.iter().all(|e| e.status == pb::ExecutionStatus::Succeeded as i32 && e.steps.len() == 4),
        "{:?}",
        listed.executions
    );
    let next = client
        .list_executions(pb::ListExecutionsRequest {
            pattern_name: "listed_durable".into(),
            page_size: 2,
            page_token: listed.next_page_token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let got: Vec<&str> = next.executions.iter().map(|e| e.id.as_str()).collect();
    ensure!(got == newest_first[2..], "second page {got:?}");
    harness.stop().await;
    Ok(())
}

/// One caller may not hold more than `max_in_flight_per_caller` executions: the next one is
/// RESOURCE_EXHAUSTED, and a slot frees when an execution ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_beyond_its_in_flight_limit_is_refused() -> Result<()> {
    let harness = Harness::start_with(Options { max_in_flight: Some(2), ..Default::default() }).await?;
    let mut client = harness.client.clone();
    register(&mut client, test_pattern("notify_both")?).await?;
    harness.demo.set_latency(method::SEND_EMAIL, Duration::from_millis(800));
    let run = |client: &mut crate::common::Client| {
        let mut c = client.clone();
        async move {
            c.execute_pattern(execute_request("notify_both", json!({"email": unique_email("limit"), "user_id": "u"}))?)
                .await
                .map(|_| ())
                .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
        }
    };
    let (a, b) = (tokio::spawn(run(&mut client)), tokio::spawn(run(&mut client)));
    // Both are in flight once both their (slow) emails are.
    let demo = &harness.demo;
    until(Duration::from_secs(5), "two executions in flight", || demo.in_flight(method::SEND_EMAIL) == 2).await?;
    let refused = run(&mut client).await.expect_err("a third execution in flight");
    ensure!(
        refused.to_string().contains("ResourceExhausted") && refused.to_string().contains("limit per caller is 2"),
        "{refused}"
    );
    a.await??;
    b.await??;
    run(&mut client).await?;
    harness.stop().await;
    Ok(())
}

/// A backend that goes away makes its steps fail with UNAVAILABLE (quickly, not at the deadline),
/// and once it is back on the same address the next calls reconnect by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_backend_is_reconnected() -> Result<()> {
    let (addr, _handle, demo) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await?;
    let mut config = nexus_server::Config { listen: "127.0.0.1:0".parse()?, in_memory: true, ..Default::default() };
    config.services.push(nexus_server::ServiceConfig::from_flag(&format!("demo=http://{addr}"))?);
    let nexus = nexus_server::Nexus::start(config).await?;
    let mut client = nexus_server::proto::nexus_service_client::NexusServiceClient::connect(format!(
        "http://{}",
        nexus.local_addr()
    ))
    .await?;
    register(&mut client, test_pattern("notify_both")?).await?;
    let run = |client: &mut crate::common::Client| {
        let mut c = client.clone();
        async move {
            c.execute_pattern(execute_request("notify_both", json!({"email": "r@x.y", "user_id": "u"}))?)
                .await
                .map_err(anyhow::Error::from)
        }
    };
    run(&mut client).await?;

    demo.shutdown().await?;
    let started = Instant::now();
    let down = run(&mut client).await.expect_err("the backend is down");
    let status = down.downcast_ref::<tonic::Status>().ok_or_else(|| anyhow!("{down}"))?;
    ensure!(status.code() == Code::Unavailable, "{status:?}");
    ensure!(started.elapsed() < Duration::from_secs(5), "failed only after {:?}", started.elapsed());

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let back = tokio::spawn(nexus_demo::serve(listener, nexus_demo::DemoOptions::default(), async {
        let _ = stopped.await;
    }));
    // Calls reconnect by themselves (no restart of Nexus); one may still meet the old connection
    // as it closes, so allow a few tries within a second.
    eventually(Duration::from_secs(1), "a call reconnected to the restarted backend", async || run(&mut client).await)
        .await?;
    let _ = stop.send(());
    let _ = back.await;
    nexus.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// While an ephemeral execution runs, GetExecution answers what it runs and since when (RUNNING);
/// once it finishes, the whole record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_execution_of_a_running_ephemeral_execution_says_what_runs() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    h.demo.set_latency(method::CREATE_USER, Duration::from_millis(600));
    let mut stream = h
        .client
        .execute_pattern_stream(execute_request(
            "user_creation",
            json!({"email": unique_email("live"), "name": "Ada"}),
        )?)
        .await?
        .into_inner();
    let first = stream.message().await?.ok_or_else(|| anyhow!("no event"))?;
    let running = get_execution(&mut h.client, &first.execution_id).await?;
    ensure!(running.status == pb::ExecutionStatus::Running as i32, "{running:?}");
    ensure!(running.pattern_name == "user_creation" && running.pattern_version == "1.0.0", "{running:?}");
    ensure!(running.started_at.is_some() && running.tenant == "default", "{running:?}");
    while stream.message().await?.is_some() {}
    let done = get_execution(&mut h.client, &first.execution_id).await?;
    ensure!(done.status == pb::ExecutionStatus::Succeeded as i32 && !done.steps.is_empty(), "{done:?}");
    h.stop().await;
    Ok(())
}

//! Engine semantics end to end, against the demo services over real sockets: retries and their
//! idempotency keys, compensation in reverse completion order, for_each fan-out with a
//! concurrency cap, stream forwarding (native gRPC and gRPC-Web) with backpressure, caller
//! disconnects, CancelExecution, WatchExecution, idempotent executions, trace context
//! propagation, and the registration check on reads of skippable steps.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use nexus_core::pb::{self, execution_event::Event};
use nexus_demo::{DemoOptions, method};
use prost::Message;
use serde_json::{Value, json};
use tonic::{Code, Streaming};

use crate::{
    common::{
        Client, Harness, Options, execute_request, execution_id, get_execution, pattern, register, register_examples,
        status_detail, step, to_json, unique_email,
    },
    transports::{frame, grpc_web_status, http1_post, parse_grpc_web},
};

/// Longest wait for any single event in these tests.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A short, comparable description of an event: `started`, `step_started(user)`,
/// `message(live#3)`, `finished(SUCCEEDED)`.
fn kind(event: &pb::ExecutionEvent) -> String {
    let status_name = |s: i32| {
        pb::ExecutionStatus::try_from(s)
            .map(|s| s.as_str_name().trim_start_matches("EXECUTION_STATUS_").to_string())
            .unwrap_or_else(|_| s.to_string())
    };
    match &event.event {
        None => "none".into(),
        Some(Event::Started(_)) => "started".into(),
        Some(Event::StepStarted(s)) => format!("step_started({})", s.step_id),
        Some(Event::StepSucceeded(s)) => format!("step_succeeded({})", s.step_id),
        Some(Event::StepFailed(s)) => format!("step_failed({})", s.step_id),
        Some(Event::StepRetrying(s)) => format!("step_retrying({})", s.step_id),
        Some(Event::StepSkipped(s)) => format!("step_skipped({})", s.step_id),
        Some(Event::StepCompensated(s)) => format!("step_compensated({})", s.step_id),
        Some(Event::Message(m)) => format!("message({}#{})", m.step_id, m.index),
        Some(Event::Finished(f)) => format!("finished({})", status_name(f.status)),
    }
}

/// The next event of a stream, failing after [`EVENT_TIMEOUT`]; `None` at the end of the stream.
async fn next_event(stream: &mut Streaming<pb::ExecutionEvent>) -> Result<Option<pb::ExecutionEvent>> {
    tokio::time::timeout(EVENT_TIMEOUT, stream.message())
        .await
        .map_err(|_| anyhow!("no event within {EVENT_TIMEOUT:?}"))?
        .context("reading the event stream")
}

/// Every event up to the end of the stream.
async fn collect_events(stream: &mut Streaming<pb::ExecutionEvent>) -> Result<Vec<pb::ExecutionEvent>> {
    let mut events = Vec::new();
    while let Some(e) = next_event(stream).await? {
        events.push(e);
        ensure!(events.len() < 10_000, "the stream does not end");
    }
    Ok(events)
}

/// Reads until an event whose [`kind`] is `wanted`, returning the events read (it last).
async fn read_until(stream: &mut Streaming<pb::ExecutionEvent>, wanted: &str) -> Result<Vec<pb::ExecutionEvent>> {
    let mut seen = Vec::new();
    loop {
        let Some(e) = next_event(stream).await? else {
            bail!("the stream ended before {wanted}; saw {:?}", seen.iter().map(kind).collect::<Vec<_>>());
        };
        let done = kind(&e) == wanted;
        seen.push(e);
        if done {
            return Ok(seen);
        }
    }
}

fn finished(event: &pb::ExecutionEvent) -> Option<&pb::ExecutePatternResponse> {
    match &event.event {
        Some(Event::Finished(f)) => Some(f),
        _ => None,
    }
}

/// An integer field of a message converted to JSON. 64-bit protobuf integers may arrive as
/// numbers or (proto3 JSON mapping) as decimal strings; both are accepted.
fn int_field(value: &Value, field: &str) -> Option<i64> {
    match value.get(field)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Polls `condition` every 20 ms until it holds or `within` has passed.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GetExecution, retried until the execution is in the history (it is recorded when it ends).
async fn finished_execution(client: &mut Client, id: &str, within: Duration) -> Result<pb::Execution> {
    let deadline = Instant::now() + within;
    loop {
        match client.get_execution(pb::GetExecutionRequest { execution_id: id.to_string() }).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => bail!("GetExecution {id}: {s:?}"),
        }
    }
}

async fn connect(h: &Harness) -> Result<Client> {
    Client::connect(format!("http://{}", h.addr)).await.context("connecting a second client")
}

fn live_request(max_chunks: i64) -> Result<pb::ExecutePatternRequest> {
    execute_request(
        "subscribe_live_stream",
        json!({"broadcast_id": "public-x", "user_id": "u1", "max_chunks": max_chunks}),
    )
}

/// The events of a subscribe_live_stream run of `n` chunks, in the order they must arrive.
fn expected_live_kinds(n: u64) -> Vec<String> {
    let mut kinds: Vec<String> =
        ["started", "step_started(access)", "step_succeeded(access)", "step_started(live)"].map(String::from).into();
    kinds.extend((0..n).map(|i| format!("message(live#{i})")));
    kinds.extend(["step_succeeded(live)".to_string(), "finished(SUCCEEDED)".to_string()]);
    kinds
}

/// Checks a complete subscribe_live_stream event sequence of 5 chunks.
fn check_live_events(events: &[pb::ExecutionEvent]) -> Result<()> {
    let kinds: Vec<String> = events.iter().map(kind).collect();
    ensure!(kinds == expected_live_kinds(5), "events {kinds:?}");
    let id = &events[0].execution_id;
    ensure!(!id.is_empty(), "no execution id in {:?}", events[0]);
    ensure!(events.iter().all(|e| e.execution_id == *id), "events of several executions: {events:#?}");
    ensure!(events.iter().all(|e| e.time.is_some()), "an event without a time");
    match &events[0].event {
        Some(Event::Started(s)) => {
            ensure!(s.pattern_name == "subscribe_live_stream" && s.pattern_version == "1.0.0", "{s:?}");
        }
        other => bail!("first event {other:?}"),
    }
    let messages: Vec<&pb::StreamMessage> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Message(m)) => Some(m),
            _ => None,
        })
        .collect();
    for (i, m) in messages.iter().enumerate() {
        let body = to_json(m.message.as_ref().ok_or_else(|| anyhow!("message {i} has no body"))?);
        ensure!(m.step_id == "live" && m.index == i as u64, "{m:?}");
        ensure!(int_field(&body, "sequence") == Some(i as i64 + 1), "message {i}: sequence in {body}");
        ensure!(body["broadcast_id"] == "public-x", "message {i}: {body}");
        ensure!(body["text"] == format!("chunk {} of 5", i + 1), "message {i}: {body}");
    }
    let end = events.last().and_then(finished).ok_or_else(|| anyhow!("no finished event last"))?;
    ensure!(end.execution_id == *id, "{end:?}");
    ensure!(end.status == pb::ExecutionStatus::Succeeded as i32, "{end:?}");
    let output = to_json(end.output.as_ref().ok_or_else(|| anyhow!("no output in {end:?}"))?);
    ensure!(output["allowed"] == true, "{output}");
    ensure!(int_field(&output, "last_chunk") == Some(5), "the output is the last message: {output}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Retries.

#[tokio::test]
async fn retries_reuse_one_idempotency_key_and_are_recorded_as_attempts() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    h.demo.fail_next(method::CREATE_USER, 2, Code::Unavailable);

    let response = h
        .client
        .execute_pattern(execute_request("user_creation", json!({"email": unique_email("retry"), "name": "Ada"}))?)
        .await?;
    let id = execution_id(response.metadata())?;
    let response = response.into_inner();
    ensure!(response.status == pb::ExecutionStatus::Succeeded as i32, "{response:?}");

    let execution = get_execution(&mut h.client, &id).await?;
    let user = step(&execution, "user")?;
    ensure!(user.status == pb::StepStatus::Succeeded as i32, "{user:?}");
    let codes: Vec<(u32, &str)> = user.attempts.iter().map(|a| (a.attempt, a.code.as_str())).collect();
    ensure!(codes == [(1, "UNAVAILABLE"), (2, "UNAVAILABLE"), (3, "OK")], "attempts {codes:?}");
    ensure!(h.demo.calls(method::CREATE_USER) == 3, "CreateUser called {} times", h.demo.calls(method::CREATE_USER));
    let keys = h.demo.idempotency_keys(method::CREATE_USER);
    let expected = format!("{id}/user");
    ensure!(keys.len() == 3 && keys.iter().all(|k| *k == expected), "keys {keys:?}, expected 3 × {expected}");
    // The other steps ran once each, under their own keys.
    ensure!(h.demo.idempotency_keys(method::SEND_EMAIL) == [format!("{id}/welcome")], "welcome keys");
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Compensation.

const TWO_USERS_THEN_MAIL: &str = r#"
name: two_users_then_mail
version: 1.0.0
input:
  type: object
  required: [email]
  properties:
    email: {type: string}
steps:
  - id: u1
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: first}
    compensate:
      call: demo.user.v1.UserService/DeleteUser
      with: {user_id: "${{ steps.u1.user.id }}"}
  - id: u2
    call: demo.user.v1.UserService/CreateUser
    depends_on: [u1]
    with: {email: "second-${{ input.email }}", display_name: second}
    compensate:
      call: demo.user.v1.UserService/DeleteUser
      with: {user_id: "${{ steps.u2.user.id }}"}
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    depends_on: [u2]
    with: {to: "${{ input.email }}", subject: Welcome, body: "${{ steps.u2.user.id }}"}
"#;

#[tokio::test]
async fn a_failed_execution_compensates_completed_steps_in_reverse_order() -> Result<()> {
    let mut h = Harness::start().await?;
    register(&mut h.client, pattern(TWO_USERS_THEN_MAIL)?).await?;
    h.demo.fail_next(method::SEND_EMAIL, 100, Code::FailedPrecondition);

    let status = h
        .client
        .execute_pattern(execute_request("two_users_then_mail", json!({"email": unique_email("comp")}))?)
        .await
        .err()
        .ok_or_else(|| anyhow!("the execution succeeded although SendEmail fails"))?;
    ensure!(status.code() == Code::FailedPrecondition, "{status:?}");
    let id = execution_id(status.metadata())?;
    let response: pb::ExecutePatternResponse = status_detail(&status, "nexus.v1.ExecutePatternResponse")?;
    ensure!(response.execution_id == id, "{response:?}");
    ensure!(response.status == pb::ExecutionStatus::Compensated as i32, "{response:?}");
    let error = response.error.as_ref().ok_or_else(|| anyhow!("no error in {response:?}"))?;
    ensure!(error.code == "FAILED_PRECONDITION" && error.step_id == "mail", "{error:?}");

    let execution = get_execution(&mut h.client, &id).await?;
    ensure!(execution.status == pb::ExecutionStatus::Compensated as i32, "{execution:#?}");
    ensure!(step(&execution, "mail")?.status == pb::StepStatus::Failed as i32, "{execution:#?}");
    let mut user_ids = Vec::new();
    for s in ["u1", "u2"] {
        let run = step(&execution, s)?;
        ensure!(run.status == pb::StepStatus::Succeeded as i32, "{run:?}");
        let comp = run.compensation.as_ref().ok_or_else(|| anyhow!("`{s}` was not compensated: {run:#?}"))?;
        ensure!(comp.call == method::DELETE_USER, "{comp:?}");
        ensure!(comp.status == pb::StepStatus::Succeeded as i32, "{comp:?}");
        let response = to_json(run.response.as_ref().ok_or_else(|| anyhow!("no response of `{s}`"))?);
        let user_id = response["user"]["id"].as_str().ok_or_else(|| anyhow!("no user id in {response}"))?;
        user_ids.push(user_id.to_string());
    }
    ensure!(step(&execution, "mail")?.compensation.is_none(), "a failed step is not compensated");

    // Newest first: u2 completed after u1, so it is compensated first.
    let keys = h.demo.idempotency_keys(method::DELETE_USER);
    ensure!(keys == [format!("{id}/u2/compensate"), format!("{id}/u1/compensate")], "DeleteUser keys {keys:?}");

    // Both users are really gone.
    let mut users =
        nexus_demo::pb::user::user_service_client::UserServiceClient::connect(format!("http://{}", h.demo_addr))
            .await?;
    for user_id in &user_ids {
        let r = users.get_user(nexus_demo::pb::user::GetUserRequest { user_id: user_id.clone() }).await;
        ensure!(matches!(&r, Err(s) if s.code() == Code::NotFound), "user {user_id} still exists: {r:?}");
    }
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. for_each.

const MAIL_ALL: &str = r#"
name: mail_all
version: 1.0.0
input:
  type: object
  required: [emails]
  properties:
    emails: {type: array, items: {type: string}}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    for_each: "${{ input.emails }}"
    concurrency: 5
    with: {to: "${{ item }}", subject: "message ${{ index }}"}
output:
  ids: "${{ steps.mail.map(m, m.message_id) }}"
"#;

/// A retried item finishes last, so a fan-out that collected outputs in completion order (rather
/// than item order) would show here.
const CREATE_ALL: &str = r#"
name: create_all
version: 1.0.0
input:
  type: object
  required: [emails]
  properties:
    emails: {type: array, items: {type: string}}
steps:
  - id: users
    call: demo.user.v1.UserService/CreateUser
    for_each: "${{ input.emails }}"
    concurrency: 4
    retry: {max_attempts: 3, initial_backoff: 0.3s, max_backoff: 1s}
    with: {email: "${{ item }}", display_name: "n${{ index }}"}
output:
  emails: "${{ steps.users.map(u, u.user.email) }}"
  names: "${{ steps.users.map(u, u.user.display_name) }}"
"#;

#[tokio::test]
async fn for_each_fans_out_with_a_concurrency_cap_and_keeps_item_order() -> Result<()> {
    let mut h = Harness::start().await?;
    register(&mut h.client, pattern(MAIL_ALL)?).await?;
    register(&mut h.client, pattern(CREATE_ALL)?).await?;
    h.demo.set_latency(method::SEND_EMAIL, Duration::from_millis(30));

    let emails: Vec<String> = (0..50).map(|i| unique_email(&format!("fan{i}"))).collect();
    let started = Instant::now();
    let response = h.client.execute_pattern(execute_request("mail_all", json!({"emails": emails}))?).await?;
    let elapsed = started.elapsed();
    let id = execution_id(response.metadata())?;
    let response = response.into_inner();
    let max_in_flight = h.demo.max_in_flight(method::SEND_EMAIL);
    println!("50 items × 30 ms at concurrency 5: {elapsed:?}, max in flight {max_in_flight}");
    ensure!(response.status == pb::ExecutionStatus::Succeeded as i32, "{response:?}");
    ensure!(max_in_flight <= 5, "concurrency 5 exceeded: {max_in_flight} in flight");
    ensure!(max_in_flight >= 2, "the items did not run in parallel: max {max_in_flight} in flight");
    ensure!(h.demo.calls(method::SEND_EMAIL) == 50, "SendEmail calls {}", h.demo.calls(method::SEND_EMAIL));

    let output = to_json(response.output.as_ref().ok_or_else(|| anyhow!("no output"))?);
    let ids = output["ids"].as_array().ok_or_else(|| anyhow!("ids is not a list: {output}"))?;
    ensure!(ids.len() == 50, "{} ids: {output}", ids.len());
    let mut distinct: Vec<&str> = ids.iter().filter_map(Value::as_str).filter(|s| s.starts_with("msg_")).collect();
    distinct.sort_unstable();
    distinct.dedup();
    ensure!(distinct.len() == 50, "ids not 50 distinct message ids: {output}");

    let execution = get_execution(&mut h.client, &id).await?;
    let mail = step(&execution, "mail")?;
    ensure!(mail.status == pb::StepStatus::Succeeded as i32 && mail.items == 50, "{mail:?}");
    let mut keys = h.demo.idempotency_keys(method::SEND_EMAIL);
    keys.sort_by_key(|k| k.rsplit('/').next().and_then(|i| i.parse::<u32>().ok()));
    let expected: Vec<String> = (0..50).map(|i| format!("{id}/mail/{i}")).collect();
    ensure!(keys == expected, "idempotency keys {keys:?}");

    // Item order, with completion order made different by a retry.
    let emails: Vec<String> = (0..6).map(|i| unique_email(&format!("order{i}"))).collect();
    h.demo.fail_next(method::CREATE_USER, 1, Code::Unavailable);
    let response = h.client.execute_pattern(execute_request("create_all", json!({"emails": emails}))?).await?;
    let output = to_json(response.into_inner().output.as_ref().ok_or_else(|| anyhow!("no output"))?);
    ensure!(h.demo.calls(method::CREATE_USER) == 7, "one item was retried: {}", h.demo.calls(method::CREATE_USER));
    ensure!(output["emails"] == json!(emails), "outputs not in item order: {output}");
    let names: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
    ensure!(output["names"] == json!(names), "`index` per item: {output}");
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4–5. Stream forwarding.

#[tokio::test]
async fn execute_pattern_stream_forwards_every_message_over_grpc() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    let mut stream = h.client.execute_pattern_stream(live_request(5)?).await?.into_inner();
    let events = collect_events(&mut stream).await?;
    check_live_events(&events)?;
    ensure!(h.demo.subscribes_started() == 1, "subscribes started: {}", h.demo.subscribes_started());

    let execution = get_execution(&mut h.client, &events[0].execution_id).await?;
    ensure!(execution.status == pb::ExecutionStatus::Succeeded as i32, "{execution:#?}");
    ensure!(step(&execution, "live")?.status == pb::StepStatus::Succeeded as i32, "{execution:#?}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn execute_pattern_stream_forwards_every_message_over_grpc_web() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    let response = http1_post(
        h.addr,
        "/nexus.v1.NexusService/ExecutePatternStream",
        &[
            ("content-type", "application/grpc-web+proto"),
            ("accept", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        frame(0, &live_request(5)?.encode_to_vec()),
    )
    .await?;
    ensure!(response.status() == http::StatusCode::OK, "HTTP {}", response.status());
    let content_type = response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    ensure!(content_type.is_some_and(|c| c.starts_with("application/grpc-web")), "content-type {content_type:?}");
    let body = parse_grpc_web(response.body().clone())?;
    let status = grpc_web_status(&response, &body);
    ensure!(status.as_deref() == Some("0"), "grpc-status {status:?}, trailers {:?}", body.trailers);
    ensure!(!body.trailers.is_empty(), "no trailer frame after the data frames");
    let events = body
        .messages
        .iter()
        .map(|m| pb::ExecutionEvent::decode(m.clone()).context("decoding an ExecutionEvent frame"))
        .collect::<Result<Vec<_>>>()?;
    check_live_events(&events)?;
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. The caller going away.

#[tokio::test]
async fn a_disconnected_stream_caller_cancels_the_execution_and_the_backend_stream() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    let mut caller = connect(&h).await?;
    let mut stream = caller.execute_pattern_stream(live_request(200)?).await?.into_inner();
    let first = next_event(&mut stream).await?.ok_or_else(|| anyhow!("no first event"))?;
    let id = first.execution_id.clone();
    ensure!(!id.is_empty(), "{first:?}");
    let mut messages = 0;
    while messages < 2 {
        let e = next_event(&mut stream).await?.ok_or_else(|| anyhow!("the stream ended early"))?;
        if matches!(e.event, Some(Event::Message(_))) {
            messages += 1;
        }
    }
    ensure!(h.demo.subscribes_active() == 1, "active subscribes: {}", h.demo.subscribes_active());
    let dropped = Instant::now();
    drop(stream);
    drop(caller);

    let demo = h.demo.clone();
    let ended =
        eventually(Duration::from_secs(3), || demo.subscribes_ended() >= 1 && demo.subscribes_active() == 0).await;
    println!(
        "backend stream ended {:?} after the caller left (started {}, ended {}, active {})",
        dropped.elapsed(),
        h.demo.subscribes_started(),
        h.demo.subscribes_ended(),
        h.demo.subscribes_active()
    );
    ensure!(ended, "the backend Subscribe still runs 3 s after the caller went away");
    ensure!(eventually(Duration::from_secs(1), || demo.in_flight(method::SUBSCRIBE) == 0).await, "Subscribe in flight");

    let execution = finished_execution(&mut h.client, &id, Duration::from_secs(3)).await?;
    ensure!(execution.status == pb::ExecutionStatus::Cancelled as i32, "status {:?}", execution.status());
    let live = step(&execution, "live")?;
    ensure!(live.status == pb::StepStatus::Cancelled as i32, "{live:?}");
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7. Backpressure.

/// A broadcast id this long makes every chunk ~32 KiB, so the flow-control windows between the
/// demo, Nexus and the client hold a bounded number of chunks (a few hundred KiB to a few MiB
/// each), far fewer than the broadcast has.
fn big_broadcast_id() -> String {
    format!("public-{}", "x".repeat(32 * 1024))
}

#[tokio::test]
async fn a_slow_stream_reader_holds_back_the_backend() -> Result<()> {
    const CHUNKS: i64 = 400;
    // No pause between chunks: the demo produces as fast as it is allowed to.
    let options = Options {
        demo: DemoOptions { chunk_interval: Duration::ZERO, ..DemoOptions::default() },
        ..Options::default()
    };
    let mut h = Harness::start_with(options).await?;
    register_examples(&mut h.client).await?;
    let request = || {
        execute_request(
            "subscribe_live_stream",
            json!({"broadcast_id": big_broadcast_id(), "user_id": "u1", "max_chunks": CHUNKS}),
        )
    };

    // A fast reader: how long the whole broadcast takes when nothing holds it back.
    let started = Instant::now();
    let mut stream = h.client.execute_pattern_stream(request()?).await?.into_inner();
    let events = collect_events(&mut stream).await?;
    let fast = started.elapsed();
    let messages = events.iter().filter(|e| matches!(e.event, Some(Event::Message(_)))).count();
    println!("fast reader: {messages} chunks of ~32 KiB in {fast:?}");
    ensure!(messages as i64 == CHUNKS, "{messages} messages");
    ensure!(
        events.last().and_then(finished).is_some_and(|f| f.status == pb::ExecutionStatus::Succeeded as i32),
        "{:?}",
        events.last().map(kind)
    );
    ensure!(
        eventually(Duration::from_secs(1), || h.demo.subscribes_active() == 0).await,
        "the first broadcast did not end"
    );

    // A slow reader: one event every 200 ms for ~2 s.
    let started = Instant::now();
    let mut stream = h.client.execute_pattern_stream(request()?).await?.into_inner();
    let mut indexes = Vec::new();
    while started.elapsed() < Duration::from_secs(2) {
        let e = next_event(&mut stream).await?.ok_or_else(|| anyhow!("the stream ended early"))?;
        if let Some(Event::Message(m)) = &e.event {
            indexes.push(m.index);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    let consumed = indexes.len();
    let (started_n, ended_n, active) =
        (h.demo.subscribes_started(), h.demo.subscribes_ended(), h.demo.subscribes_active());
    println!(
        "slow reader: consumed {consumed} chunks (indexes {indexes:?}) in {elapsed:?}; \
         demo subscribes started {started_n}, ended {ended_n}, active {active}"
    );
    ensure!(indexes.iter().enumerate().all(|(i, &x)| x == i as u64), "indexes out of order: {indexes:?}");
    ensure!((5..=12).contains(&consumed), "consumed {consumed} chunks at one per 200 ms over {elapsed:?}");
    // All 400 chunks take `fast` when nobody holds them back; after 2 s of slow reading the
    // second broadcast must still be running, i.e. it produced fewer than 400 − consumed chunks
    // beyond what the reader took.
    ensure!(
        fast < Duration::from_millis(1500),
        "the fast run ({fast:?}) is too slow for this test to tell backpressure apart"
    );
    ensure!(
        active == 1 && ended_n == 1,
        "the backend finished its {CHUNKS} chunks while the reader had taken only {consumed}: no backpressure"
    );
    drop(stream);
    ensure!(
        eventually(Duration::from_secs(2), || h.demo.subscribes_active() == 0).await,
        "the second broadcast did not end after the reader left"
    );
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 8. CancelExecution.

const CREATE_THEN_SLOW_MAIL: &str = r#"
name: create_then_slow_mail
version: 1.0.0
input:
  type: object
  required: [email]
  properties:
    email: {type: string}
steps:
  - id: u1
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: cancel}
    compensate:
      call: demo.user.v1.UserService/DeleteUser
      with: {user_id: "${{ steps.u1.user.id }}"}
  - id: slow
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", body: "${{ steps.u1.user.id }}"}
"#;

#[tokio::test]
async fn cancel_execution_stops_in_flight_calls_and_compensates() -> Result<()> {
    let mut h = Harness::start().await?;
    register(&mut h.client, pattern(CREATE_THEN_SLOW_MAIL)?).await?;
    h.demo.set_latency(method::SEND_EMAIL, Duration::from_secs(5));

    let request = execute_request("create_then_slow_mail", json!({"email": unique_email("cancel")}))?;
    let mut stream = h.client.execute_pattern_stream(request).await?.into_inner();
    let first = next_event(&mut stream).await?.ok_or_else(|| anyhow!("no first event"))?;
    let id = first.execution_id.clone();
    ensure!(kind(&first) == "started", "{first:?}");
    read_until(&mut stream, "step_started(slow)").await?;
    let demo = h.demo.clone();
    ensure!(
        eventually(Duration::from_secs(2), || demo.in_flight(method::SEND_EMAIL) == 1).await,
        "SendEmail is not in flight"
    );

    let cancelled_at = Instant::now();
    let r = h
        .client
        .cancel_execution(pb::CancelExecutionRequest { execution_id: id.clone(), reason: "test".into() })
        .await?
        .into_inner();
    ensure!(r.cancelled, "{r:?}");
    let rest = collect_events(&mut stream).await?;
    let to_end = cancelled_at.elapsed();
    let kinds: Vec<String> = rest.iter().map(kind).collect();
    println!("after CancelExecution ({to_end:?} to the end): {kinds:?}");
    let end = rest.last().and_then(finished).ok_or_else(|| anyhow!("no finished event last: {kinds:?}"))?;
    ensure!(end.status == pb::ExecutionStatus::Cancelled as i32, "{end:?}");
    ensure!(kinds.iter().any(|k| k == "step_compensated(u1)"), "{kinds:?}");
    ensure!(to_end < Duration::from_secs(2), "the execution ended {to_end:?} after the cancel");
    ensure!(
        eventually(Duration::from_secs(1), || demo.in_flight(method::SEND_EMAIL) == 0).await,
        "SendEmail still in flight 1 s after the cancel (took {:?})",
        cancelled_at.elapsed()
    );
    ensure!(h.demo.calls(method::DELETE_USER) == 1, "DeleteUser calls {}", h.demo.calls(method::DELETE_USER));
    ensure!(h.demo.idempotency_keys(method::DELETE_USER) == [format!("{id}/u1/compensate")], "DeleteUser keys");

    let execution = get_execution(&mut h.client, &id).await?;
    ensure!(execution.status == pb::ExecutionStatus::Cancelled as i32, "{execution:#?}");
    ensure!(step(&execution, "slow")?.status == pb::StepStatus::Cancelled as i32, "{execution:#?}");
    let u1 = step(&execution, "u1")?;
    ensure!(u1.compensation.as_ref().is_some_and(|c| c.status == pb::StepStatus::Succeeded as i32), "{u1:?}");

    // A finished execution is not cancelled again; an unknown one is NOT_FOUND.
    let again = h
        .client
        .cancel_execution(pb::CancelExecutionRequest { execution_id: id.clone(), reason: String::new() })
        .await?
        .into_inner();
    ensure!(!again.cancelled, "{again:?}");
    let unknown = h
        .client
        .cancel_execution(pb::CancelExecutionRequest { execution_id: "nope".into(), reason: String::new() })
        .await;
    ensure!(matches!(&unknown, Err(s) if s.code() == Code::NotFound), "{unknown:?}");
    h.stop().await;
    Ok(())
}

/// CancelExecution's answer must match what happens: `cancelled: true` means the execution ends
/// CANCELLED; an execution that ends otherwise must have been answered `cancelled: false`. The
/// callers here read nothing until after the cancel, over a connection whose HTTP/2 stream window
/// is one byte, so each execution stalls in its event channel at a different point: while
/// streaming, after its last step (events still to flush), or with only `finished` left to send.
#[tokio::test]
async fn cancel_answers_true_only_for_executions_it_cancels() -> Result<()> {
    let options = Options {
        demo: DemoOptions { chunk_interval: Duration::from_millis(2), ..DemoOptions::default() },
        ..Options::default()
    };
    let h = Harness::start_with(options).await?;
    let mut client = h.client.clone();
    register_examples(&mut client).await?;
    let stalled = tonic::transport::Endpoint::from_shared(format!("http://{}", h.addr))?
        .initial_stream_window_size(Some(1))
        .connect()
        .await?;

    let run = |max_chunks: i64| {
        let (mut caller, mut client) = (Client::new(stalled.clone()), h.client.clone());
        async move {
            let mut stream = caller.execute_pattern_stream(live_request(max_chunks)?).await?.into_inner();
            let id = next_event(&mut stream).await?.ok_or_else(|| anyhow!("no first event"))?.execution_id;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let recorded = client
                .get_execution(pb::GetExecutionRequest { execution_id: id.clone() })
                .await
                .ok()
                .map(|e| e.into_inner().status());
            let cancelled = client
                .cancel_execution(pb::CancelExecutionRequest { execution_id: id.clone(), reason: "test".into() })
                .await?
                .into_inner()
                .cancelled;
            let end = collect_events(&mut stream).await?;
            let end = end.last().and_then(finished).ok_or_else(|| anyhow!("no finished event"))?.status();
            let last = get_execution(&mut client, &id).await?.status();
            Ok::<_, anyhow::Error>((max_chunks, recorded, cancelled, end, last))
        }
    };
    let results = futures::future::join_all((8..=24).map(run)).await;
    let mut wrong = Vec::new();
    for r in results {
        let (max_chunks, recorded, cancelled, end, last) = r?;
        println!(
            "max_chunks {max_chunks}: recorded before the cancel {recorded:?}, cancelled {cancelled}, ended {end:?}"
        );
        ensure!(end == last, "the finished event says {end:?}, GetExecution {last:?}");
        let expected = if cancelled { pb::ExecutionStatus::Cancelled } else { pb::ExecutionStatus::Succeeded };
        if end != expected {
            wrong.push(format!(
                "max_chunks {max_chunks}: cancelled={cancelled} but ended {end:?} (recorded before: {recorded:?})"
            ));
        }
    }
    ensure!(wrong.is_empty(), "CancelExecution's answer does not match the outcome:\n{}", wrong.join("\n"));
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 9. WatchExecution.

#[tokio::test]
async fn watch_execution_follows_a_running_execution_to_its_end() -> Result<()> {
    let mut h = Harness::start().await?;
    register(
        &mut h.client,
        pattern(
            r#"
name: slow_push
version: 1.0.0
steps:
  - id: push
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: usr_1, title: Hello}
"#,
        )?,
    )
    .await?;
    h.demo.set_latency(method::SEND_PUSH, Duration::from_millis(500));

    let mut stream = h.client.execute_pattern_stream(execute_request("slow_push", json!({}))?).await?.into_inner();
    let first = next_event(&mut stream).await?.ok_or_else(|| anyhow!("no first event"))?;
    let id = first.execution_id.clone();
    // The caller keeps reading its own stream meanwhile.
    let caller = tokio::spawn(async move { collect_events(&mut stream).await });

    let mut watcher = connect(&h).await?;
    let mut watch = watcher
        .watch_execution(pb::WatchExecutionRequest { execution_id: id.clone() })
        .await
        .context("WatchExecution of a running execution")?
        .into_inner();
    let watched = collect_events(&mut watch).await?;
    let kinds: Vec<String> = watched.iter().map(kind).collect();
    println!("watcher saw {kinds:?}");
    ensure!(watched.iter().all(|e| e.execution_id == id), "{watched:#?}");
    let end =
        watched.last().and_then(finished).ok_or_else(|| anyhow!("the watch did not end with finished: {kinds:?}"))?;
    ensure!(end.execution_id == id && end.status == pb::ExecutionStatus::Succeeded as i32, "{end:?}");
    ensure!(kinds.iter().any(|k| k == "step_succeeded(push)"), "the watcher missed the step's end: {kinds:?}");
    let caller = caller.await??;
    ensure!(caller.last().and_then(finished).is_some_and(|f| f.execution_id == id), "caller's events {caller:?}");

    // A finished execution: just its result.
    let mut watch = watcher
        .watch_execution(pb::WatchExecutionRequest { execution_id: id.clone() })
        .await
        .context("WatchExecution of a finished execution")?
        .into_inner();
    let again = collect_events(&mut watch).await?;
    ensure!(again.len() == 1, "{:?}", again.iter().map(kind).collect::<Vec<_>>());
    let end = finished(&again[0]).ok_or_else(|| anyhow!("{:?}", again[0]))?;
    ensure!(again[0].execution_id == id && end.execution_id == id, "{again:?}");
    ensure!(end.status == pb::ExecutionStatus::Succeeded as i32, "{end:?}");

    let unknown = watcher.watch_execution(pb::WatchExecutionRequest { execution_id: "nope".into() }).await;
    ensure!(matches!(&unknown, Err(s) if s.code() == Code::NotFound), "{:?}", unknown.map(|_| "a stream"));
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 10. Idempotent executions.

#[tokio::test]
async fn an_idempotency_key_returns_the_first_execution() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    let keyed = |key: &str, email: &str| -> Result<pb::ExecutePatternRequest> {
        let mut r = execute_request("user_creation", json!({"email": email, "name": "Ada"}))?;
        r.idempotency_key = key.to_string();
        Ok(r)
    };

    let email = unique_email("idem");
    let first = h.client.execute_pattern(keyed("key-1", &email)?).await?.into_inner();
    let second = h.client.execute_pattern(keyed("key-1", &email)?).await?.into_inner();
    ensure!(first.status == pb::ExecutionStatus::Succeeded as i32, "{first:?}");
    ensure!(second.execution_id == first.execution_id, "{second:?} vs {first:?}");
    ensure!(second.output == first.output, "{second:?} vs {first:?}");
    ensure!(h.demo.calls(method::CREATE_USER) == 1, "CreateUser calls {}", h.demo.calls(method::CREATE_USER));
    let execution = get_execution(&mut h.client, &first.execution_id).await?;
    ensure!(execution.idempotency_key == "key-1", "{execution:?}");

    // Concurrent requests with one key share the execution still running.
    h.demo.set_latency(method::CREATE_USER, Duration::from_millis(300));
    let email = unique_email("idem-concurrent");
    let (mut c1, mut c2) = (h.client.clone(), h.client.clone());
    let (a, b) = tokio::join!(c1.execute_pattern(keyed("key-2", &email)?), c2.execute_pattern(keyed("key-2", &email)?));
    let (a, b) = (a?.into_inner(), b?.into_inner());
    ensure!(a.execution_id == b.execution_id, "{a:?} vs {b:?}");
    ensure!(a.execution_id != first.execution_id, "another key, another execution");
    ensure!(h.demo.calls(method::CREATE_USER) == 2, "CreateUser calls {}", h.demo.calls(method::CREATE_USER));
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 11. Trace context.

fn check_traceparent(tp: &str) -> Result<[&str; 4]> {
    let parts: Vec<&str> = tp.split('-').collect();
    ensure!(tp.len() == 55 && parts.len() == 4, "malformed traceparent {tp:?}");
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ensure!(hex(parts[0], 2) && parts[0] == "00", "version in {tp:?}");
    ensure!(hex(parts[1], 32) && parts[1] != "0".repeat(32), "trace id in {tp:?}");
    ensure!(hex(parts[2], 16) && parts[2] != "0".repeat(16), "span id in {tp:?}");
    ensure!(hex(parts[3], 2), "flags in {tp:?}");
    Ok([parts[0], parts[1], parts[2], parts[3]])
}

#[tokio::test]
async fn backend_calls_continue_the_callers_trace() -> Result<()> {
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;

    let mut request =
        tonic::Request::new(execute_request("user_creation", json!({"email": unique_email("trace"), "name": "Ada"}))?);
    request.metadata_mut().insert("traceparent", CALLER.parse()?);
    h.client.execute_pattern(request).await?;
    for m in [method::CREATE_USER, method::SEND_EMAIL] {
        let tp = h.demo.last_traceparent(m).ok_or_else(|| anyhow!("{m} got no traceparent"))?;
        println!("{m}: {tp}");
        let [_, trace, span, _] = check_traceparent(&tp)?;
        ensure!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{m}: the caller's trace id is lost: {tp}");
        ensure!(trace == "4bf92f3577b34da6a3ce929d0e0e4736" && span != "00f067aa0ba902b7", "{m}: a new span: {tp}");
    }
    let user_span = h.demo.last_traceparent(method::CREATE_USER).unwrap_or_default();
    let mail_span = h.demo.last_traceparent(method::SEND_EMAIL).unwrap_or_default();
    ensure!(user_span != mail_span, "each call gets its own span: {user_span} / {mail_span}");

    // Without the header a trace starts here.
    h.client
        .execute_pattern(execute_request("user_creation", json!({"email": unique_email("trace"), "name": "Ada"}))?)
        .await?;
    let tp = h.demo.last_traceparent(method::CREATE_USER).ok_or_else(|| anyhow!("no traceparent"))?;
    println!("without a caller's trace: {tp}");
    let [_, trace, _, _] = check_traceparent(&tp)?;
    ensure!(trace != "4bf92f3577b34da6a3ce929d0e0e4736", "the previous caller's trace leaked: {tp}");
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 12. Reads of a step that may be skipped.

fn avatar_reader(body: &str) -> String {
    format!(
        r#"
name: avatar_reader
version: 1.0.0
input:
  type: object
  required: [email]
  properties:
    email: {{type: string}}
    avatar_url: {{type: string}}
steps:
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with: {{email: "${{{{ input.email }}}}", display_name: Ada}}
  - id: avatar
    when: "${{{{ has(input.avatar_url) }}}}"
    call: demo.asset.v1.AssetService/UploadAsset
    with: {{owner_id: "${{{{ steps.user.user.id }}}}", source_url: "${{{{ input.avatar_url }}}}"}}
  - id: welcome
    call: demo.notification.v1.NotificationService/SendEmail
    with:
      to: "${{{{ input.email }}}}"
      body: "{body}"
"#
    )
}

#[tokio::test]
async fn reading_a_skippable_step_needs_a_has_guard() -> Result<()> {
    let mut h = Harness::start().await?;
    let unguarded = avatar_reader("${{ steps.avatar.asset.url }}");
    let status = h
        .client
        .register_pattern(pb::RegisterPatternRequest { pattern: Some(pattern(&unguarded)?) })
        .await
        .err()
        .ok_or_else(|| anyhow!("an unguarded read of a skippable step registered"))?;
    ensure!(status.code() == Code::InvalidArgument, "{status:?}");
    let details: pb::ValidatePatternResponse = status_detail(&status, "nexus.v1.ValidatePatternResponse")?;
    for d in &details.diagnostics {
        println!("  {}: {}", d.path, d.message);
    }
    let errors: Vec<&pb::Diagnostic> =
        details.diagnostics.iter().filter(|d| d.severity == pb::Severity::Error as i32).collect();
    ensure!(errors.len() == 1, "expected one error: {details:#?}");
    ensure!(errors[0].path == "steps[2].with.body", "{:?}", errors[0]);
    ensure!(errors[0].message.contains("when"), "the diagnostic should mention `when`: {}", errors[0].message);

    let guarded = avatar_reader("${{ has(steps.avatar.asset) ? steps.avatar.asset.url : '' }}");
    let r = register(&mut h.client, pattern(&guarded)?).await?;
    ensure!(r.created, "{r:?}");

    // And the guard works at run time, with and without the avatar.
    for avatar in [None, Some("https://img.example.com/a.png")] {
        let mut input = json!({"email": unique_email("guard")});
        if let Some(url) = avatar {
            input["avatar_url"] = json!(url);
        }
        let response = h.client.execute_pattern(execute_request("avatar_reader", input)?).await?;
        let execution = get_execution(&mut h.client, &execution_id(response.metadata())?).await?;
        let welcome = step(&execution, "welcome")?;
        let request = to_json(welcome.request.as_ref().ok_or_else(|| anyhow!("no request: {welcome:?}"))?);
        let body = request.get("body").and_then(Value::as_str).unwrap_or_default();
        match avatar {
            None => ensure!(body.is_empty(), "{request}"),
            Some(_) => ensure!(body.starts_with("http"), "the uploaded asset's url: {request}"),
        }
    }
    h.stop().await;
    Ok(())
}

//! Execution events through the API, over real sockets: ExecutePatternStream over native gRPC
//! and gRPC-Web, a caller who goes away (the cancellation reaches the backend), backpressure
//! through HTTP/2 flow control, CancelExecution and WatchExecution. What an execution does (retries,
//! compensation, for_each, stream forwarding, cancellation inside the run) is tested once, in the
//! engine's traces (`crates/engine/tests/engine.rs`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use nexus_core::pb::{self, execution_event::Event};
use nexus_demo::{DemoOptions, method};
use prost::Message;
use serde_json::{Value, json};
use tonic::{Code, Streaming};

use crate::{
    common::{
        Client, Harness, Options, connect, eventually, execute_request, get_execution, pattern, register,
        register_examples, step, test_pattern, to_json, unique_email, until,
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

    let demo = &h.demo;
    until(Duration::from_secs(3), "the backend Subscribe ending after the caller went away", || {
        demo.subscribes_ended() >= 1 && demo.subscribes_active() == 0
    })
    .await?;
    println!("backend stream ended {:?} after the caller left", dropped.elapsed());
    until(Duration::from_secs(1), "no Subscribe in flight", || demo.in_flight(method::SUBSCRIBE) == 0).await?;

    // It is recorded when it ends.
    let client = &mut h.client;
    let execution =
        eventually(Duration::from_secs(3), "the execution in the history", async || get_execution(client, &id).await)
            .await?;
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
    until(Duration::from_secs(1), "the end of the first broadcast", || h.demo.subscribes_active() == 0).await?;

    // A slow reader: one event every 200 ms for ~2 s (the reader's pace is what is tested, not a
    // wait for a condition).
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
    until(Duration::from_secs(2), "the end of the second broadcast after the reader left", || {
        h.demo.subscribes_active() == 0
    })
    .await?;
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
    let demo = &h.demo;
    until(Duration::from_secs(2), "SendEmail in flight", || demo.in_flight(method::SEND_EMAIL) == 1).await?;

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
    until(Duration::from_secs(1), "the end of SendEmail at the backend after the cancel", || {
        demo.in_flight(method::SEND_EMAIL) == 0
    })
    .await?;
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
/// Each caller cancels once every broadcast has started and the shortest has been sent whole.
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

    let runs = 8..=24;
    let (demo, n) = (&h.demo, runs.clone().count() as u64);
    let run = |max_chunks: i64| {
        let (mut caller, mut client) = (Client::new(stalled.clone()), h.client.clone());
        async move {
            let mut stream = caller.execute_pattern_stream(live_request(max_chunks)?).await?.into_inner();
            let id = next_event(&mut stream).await?.ok_or_else(|| anyhow!("no first event"))?.execution_id;
            until(Duration::from_secs(5), "every broadcast started and the shortest sent whole", || {
                demo.subscribes_started() == n && demo.subscribes_ended() >= 1
            })
            .await?;
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
    let results = futures::future::join_all(runs.map(run)).await;
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
    register(&mut h.client, test_pattern("slow_push")?).await?;
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

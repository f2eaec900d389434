//! Data-driven engine tests: a pattern document and a scripted fake backend in, the trace of calls
//! and the execution record out. Time is tokio's paused clock, so latencies and timeouts are exact
//! and the traces deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::{
    collections::HashMap,
    fmt::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use expect_test::{Expect, expect};
use nexus_core::{Catalog, CompiledPattern, catalog::DescriptorSource, document, value};
use nexus_engine::{
    Call, CallError, Engine, ExecuteRequest, ExecutionRecord, History, Invoker, MessageStream, Payload, StepResponse,
    code_name,
};
use prost::Message;
use prost_reflect::DynamicMessage;
use tokio::time::Instant;
use tonic::Code;

/// What the fake backend does on one call of a method.
#[derive(Clone)]
struct Reply {
    latency: Duration,
    result: Result<serde_json::Value, Code>,
}

fn ok(latency_ms: u64, body: serde_json::Value) -> Reply {
    Reply { latency: Duration::from_millis(latency_ms), result: Ok(body) }
}

fn fail(latency_ms: u64, code: Code) -> Reply {
    Reply { latency: Duration::from_millis(latency_ms), result: Err(code) }
}

/// A backend scripted per method: each call takes the next reply (the last one repeats).
struct Script {
    replies: Mutex<HashMap<String, Vec<Reply>>>,
    log: Mutex<Vec<(Duration, String)>>,
    /// The `traceparent` of every unary call, in call order.
    traceparents: Mutex<Vec<String>>,
    /// The `lane` of every unary call, in call order.
    lanes: Mutex<Vec<u64>>,
    start: Instant,
}

impl Script {
    fn new(replies: &[(&str, Vec<Reply>)]) -> Arc<Self> {
        Arc::new(Self {
            replies: Mutex::new(replies.iter().map(|(m, r)| (m.to_string(), r.clone())).collect()),
            log: Mutex::new(Vec::new()),
            traceparents: Mutex::new(Vec::new()),
            lanes: Mutex::new(Vec::new()),
            start: Instant::now(),
        })
    }

    fn event(&self, what: String) {
        self.log.lock().unwrap().push((self.start.elapsed(), what));
    }

    /// The trace without its times, for runs whose timing is random (retry backoff has jitter).
    fn untimed_trace(&self) -> String {
        self.log.lock().unwrap().iter().map(|(_, what)| format!("{what}\n")).collect()
    }

    fn trace(&self) -> String {
        let mut out = String::new();
        for (t, what) in self.log.lock().unwrap().iter() {
            let _ = writeln!(out, "{}ms {what}", t.as_millis());
        }
        out
    }
}

/// Ends the "call" event when dropped, so a cancelled call shows in the trace.
struct CallGuard<'a> {
    script: &'a Script,
    method: String,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.script.event(format!("cancelled {}", self.method));
        }
    }
}

#[async_trait::async_trait]
impl Invoker for Script {
    async fn unary(&self, call: Call) -> Result<Payload, CallError> {
        let method = call.action.name.rsplit('/').next().unwrap_or_default().to_string();
        let request = value::message_to_serde(&call.request.decode().expect("a request the engine encoded"));
        self.event(format!(
            "call {method} {request} key={}",
            call.idempotency_key.split_once('/').map_or("", |(_, k)| k)
        ));
        self.traceparents.lock().unwrap().push(call.traceparent.clone().unwrap_or_default());
        self.lanes.lock().unwrap().push(call.lane);
        let reply = {
            let mut replies = self.replies.lock().unwrap();
            let queue = replies.get_mut(&*call.action.name).expect("scripted method");
            if queue.len() > 1 { queue.remove(0) } else { queue[0].clone() }
        };
        let mut guard = CallGuard { script: self, method: method.clone(), done: false };
        tokio::time::sleep(reply.latency).await;
        guard.done = true;
        match reply.result {
            Ok(body) => {
                self.event(format!("reply {method} ok"));
                DynamicMessage::deserialize(call.action.method.output(), body)
                    .map(|m| Payload::encode(&m))
                    .map_err(|e| CallError::new(Code::Internal, e.to_string()))
            }
            Err(code) => {
                self.event(format!("reply {method} {}", code_name(code)));
                Err(CallError::new(code, "scripted failure"))
            }
        }
    }

    /// A scripted stream: the method's replies are its messages, one per reply, each after its
    /// latency (a failed reply ends the stream with that error).
    async fn server_streaming(&self, call: Call) -> Result<MessageStream, CallError> {
        let method = call.action.name.rsplit('/').next().unwrap_or_default().to_string();
        self.event(format!(
            "call {method} {}",
            value::message_to_serde(&call.request.decode().expect("a request the engine encoded"))
        ));
        let replies = self.replies.lock().unwrap().get(&*call.action.name).cloned().expect("scripted method");
        let desc = call.action.method.output();
        let stream = futures::StreamExt::then(futures::stream::iter(replies), move |reply| {
            let desc = desc.clone();
            async move {
                tokio::time::sleep(reply.latency).await;
                match reply.result {
                    Ok(body) => DynamicMessage::deserialize(desc, body)
                        .map(|m| Payload::encode(&m))
                        .map_err(|e| CallError::new(Code::Internal, e.to_string())),
                    Err(code) => Err(CallError::new(code, "scripted stream failure")),
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

fn catalog() -> Catalog {
    let fds = prost_types::FileDescriptorSet::decode(nexus_demo::FILE_DESCRIPTOR_SET).unwrap();
    let mut b = Catalog::builder();
    b.add_backend("demo", "http://127.0.0.1:1", DescriptorSource::DescriptorSet, fds, &[]).unwrap();
    b.build()
}

const CREATE_USER: &str = "demo.user.v1.UserService/CreateUser";
const UPLOAD: &str = "demo.asset.v1.AssetService/UploadAsset";
const EMAIL: &str = "demo.notification.v1.NotificationService/SendEmail";
const PUSH: &str = "demo.notification.v1.NotificationService/SendPush";

/// A pattern document from `tests/data/`.
fn doc(name: &str) -> String {
    let path = format!("{}/tests/data/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Compiles a pattern document against the demo catalog (sub-patterns from `patterns`).
fn compile_with(doc: &str, patterns: &dyn nexus_core::PatternLookup) -> Arc<CompiledPattern> {
    let (pattern, _) = nexus_core::compile(&document::parse(doc).unwrap(), &catalog(), patterns)
        .unwrap_or_else(|d| panic!("{}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")));
    Arc::new(pattern)
}

fn compile(doc: &str) -> Arc<CompiledPattern> {
    compile_with(doc, &nexus_core::NoPatterns)
}

/// A request to run `pattern` on `input`, with no deadline, key or caller's trace.
fn request(pattern: &Arc<CompiledPattern>, input: serde_json::Value) -> ExecuteRequest {
    ExecuteRequest {
        pattern: pattern.clone(),
        input: value::serde_to_cel(&input),
        deadline: None,
        idempotency_key: None,
        traceparent: None,
        tracestate: None,
        tenant: Arc::from("t"),
    }
}

async fn run(doc: &str, script: &Arc<Script>, input: serde_json::Value) -> Arc<ExecutionRecord> {
    let engine = Engine::new(script.clone(), Arc::new(History::new(100)));
    engine.execute(request(&compile(doc), input)).await.unwrap()
}

/// Waits, on the paused clock, until `condition` holds; panics naming `what` after `within`.
async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The record, one line per step: status, attempts (code after duration) and the error.
fn summary(r: &ExecutionRecord) -> String {
    let mut out = format!("{:?}", r.status);
    if let Some(e) = &r.error {
        let _ = write!(out, " {}: {}", code_name(e.code), e.message);
    }
    out.push('\n');
    for s in &r.steps {
        let attempts: Vec<String> =
            s.attempts.iter().map(|a| format!("{}ms:{}", a.duration.as_millis(), code_name(a.code))).collect();
        let _ = write!(out, "  {} {:?} [{}]", s.step_id, s.status, attempts.join(" "));
        if let Some(StepResponse::Message(m)) = &s.response {
            let _ = write!(out, " -> {}", value::message_to_serde(&m.decode().expect("a recorded response")));
        }
        out.push('\n');
    }
    if let Some(o) = &r.output {
        let mut v = value::cel_to_serde(&o.cel());
        if let Some(m) = v.as_object_mut() {
            m.sort_keys();
        }
        let _ = writeln!(out, "output {v}");
    }
    out
}

fn check(script: &Script, record: &ExecutionRecord, trace: Expect, result: Expect) {
    trace.assert_eq(&script.trace());
    result.assert_eq(&summary(record));
}

fn user_ok() -> Reply {
    ok(10, serde_json::json!({"user": {"id": "usr_1", "email": "a@b.c"}}))
}

#[tokio::test(start_paused = true)]
async fn independent_steps_run_in_parallel_after_their_dependency() {
    let script = Script::new(&[
        (CREATE_USER, vec![user_ok()]),
        (UPLOAD, vec![ok(30, serde_json::json!({"asset": {"id": "ast_1", "url": "https://cdn/a.png"}}))]),
        (EMAIL, vec![ok(20, serde_json::json!({"message_id": "m1"}))]),
    ]);
    let input = serde_json::json!({"email": "a@b.c", "name": "Ada", "avatar_url": "https://x/a.png"});
    let record = run(&doc("user_creation"), &script, input).await;
    check(
        &script,
        &record,
        expect![[r#"
            0ms call CreateUser {"email":"a@b.c","display_name":"Ada"} key=user
            10ms reply CreateUser ok
            10ms call SendEmail {"to":"a@b.c","subject":"Welcome Ada"} key=welcome
            10ms call UploadAsset {"owner_id":"usr_1","source_url":"https://x/a.png"} key=avatar
            30ms reply SendEmail ok
            40ms reply UploadAsset ok
        "#]],
        expect![[r#"
            Succeeded
              user Succeeded [10ms:OK] -> {"user":{"id":"usr_1","email":"a@b.c"}}
              avatar Succeeded [30ms:OK] -> {"asset":{"id":"ast_1","url":"https://cdn/a.png"}}
              welcome Succeeded [20ms:OK] -> {"message_id":"m1"}
            output {"avatar_url":"https://cdn/a.png","user_id":"usr_1"}
        "#]],
    );
    assert_eq!(record.duration, Duration::from_millis(40), "two parallel branches: 10 + max(30, 20)");
}

#[tokio::test(start_paused = true)]
async fn a_false_condition_skips_the_step_and_its_output_field() {
    let script = Script::new(&[(CREATE_USER, vec![user_ok()]), (EMAIL, vec![ok(5, serde_json::json!({}))])]);
    let record = run(&doc("user_creation"), &script, serde_json::json!({"email": "a@b.c", "name": "Ada"})).await;
    check(
        &script,
        &record,
        expect![[r#"
            0ms call CreateUser {"email":"a@b.c","display_name":"Ada"} key=user
            10ms reply CreateUser ok
            10ms call SendEmail {"to":"a@b.c","subject":"Welcome Ada"} key=welcome
            15ms reply SendEmail ok
        "#]],
        expect![[r#"
            Succeeded
              user Succeeded [10ms:OK] -> {"user":{"id":"usr_1","email":"a@b.c"}}
              avatar Skipped []
              welcome Succeeded [5ms:OK] -> {}
            output {"user_id":"usr_1"}
        "#]],
    );
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_backoff_and_the_same_idempotency_key() {
    let script = Script::new(&[
        (CREATE_USER, vec![fail(1, Code::Unavailable), fail(1, Code::Unavailable), user_ok()]),
        (EMAIL, vec![ok(5, serde_json::json!({}))]),
    ]);
    let record = run(&doc("user_creation"), &script, serde_json::json!({"email": "a@b.c", "name": "Ada"})).await;
    assert_eq!(record.steps[0].attempts.len(), 3);
    // Backoff with jitter: the second attempt starts 50-100 ms after the first failure, the third
    // 100-200 ms after the second.
    let a = &record.steps[0].attempts;
    let gap1 = a[1].started_at.duration_since(a[0].started_at).unwrap();
    let gap2 = a[2].started_at.duration_since(a[1].started_at).unwrap();
    assert!(gap1 >= Duration::from_millis(50) && gap1 <= Duration::from_millis(102), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(100) && gap2 <= Duration::from_millis(202), "{gap2:?}");
    let calls: Vec<String> =
        script.trace().lines().filter(|l| l.contains("call CreateUser")).map(str::to_string).collect();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.ends_with("key=user")), "{calls:?}");
    expect![[r#"
        Succeeded
          user Succeeded [1ms:UNAVAILABLE 1ms:UNAVAILABLE 10ms:OK] -> {"user":{"id":"usr_1","email":"a@b.c"}}
          avatar Skipped []
          welcome Succeeded [5ms:OK] -> {}
        output {"user_id":"usr_1"}
    "#]]
    .assert_eq(&summary(&record));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_not_retried_and_stops_the_execution() {
    let script =
        Script::new(&[(CREATE_USER, vec![fail(3, Code::AlreadyExists)]), (EMAIL, vec![ok(5, serde_json::json!({}))])]);
    let record = run(&doc("user_creation"), &script, serde_json::json!({"email": "a@b.c", "name": "Ada"})).await;
    check(
        &script,
        &record,
        expect![[r#"
                0ms call CreateUser {"email":"a@b.c","display_name":"Ada"} key=user
                3ms reply CreateUser ALREADY_EXISTS
        "#]],
        expect![[r#"
            Failed ALREADY_EXISTS: step `user` (demo.user.v1.UserService/CreateUser) failed: ALREADY_EXISTS: scripted failure
              user Failed [3ms:ALREADY_EXISTS]
              avatar Pending []
              welcome Pending []
        "#]],
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_hits_the_step_timeout() {
    let script = Script::new(&[(CREATE_USER, vec![ok(5_000, serde_json::json!({}))])]);
    let record = run(&doc("user_creation"), &script, serde_json::json!({"email": "a@b.c", "name": "Ada"})).await;
    check(
        &script,
        &record,
        expect![[r#"
            0ms call CreateUser {"email":"a@b.c","display_name":"Ada"} key=user
            1000ms cancelled CreateUser
        "#]],
        expect![[r#"
            Failed DEADLINE_EXCEEDED: step `user` (demo.user.v1.UserService/CreateUser) failed: DEADLINE_EXCEEDED: no response within 1s (the step's timeout)
              user Failed [1000ms:DEADLINE_EXCEEDED]
              avatar Pending []
              welcome Pending []
        "#]],
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_cancels_the_steps_still_in_flight() {
    let script =
        Script::new(&[(EMAIL, vec![fail(10, Code::InvalidArgument)]), (PUSH, vec![ok(1_000, serde_json::json!({}))])]);
    let record = run(&doc("fan"), &script, serde_json::json!({})).await;
    check(
        &script,
        &record,
        expect![[r#"
            0ms call SendEmail {"to":"x@y.z"} key=email
            0ms call SendPush {"user_id":"u1"} key=push
            10ms reply SendEmail INVALID_ARGUMENT
            10ms cancelled SendPush
        "#]],
        expect![[r#"
            Failed INVALID_ARGUMENT: step `email` (demo.notification.v1.NotificationService/SendEmail) failed: INVALID_ARGUMENT: scripted failure
              email Failed [10ms:INVALID_ARGUMENT]
              push Cancelled []
        "#]],
    );
}

#[tokio::test(start_paused = true)]
async fn the_execution_deadline_bounds_every_step() {
    let script =
        Script::new(&[(EMAIL, vec![ok(5, serde_json::json!({}))]), (PUSH, vec![ok(3_000, serde_json::json!({}))])]);
    let record = run(&doc("fan"), &script, serde_json::json!({})).await;
    check(
        &script,
        &record,
        expect![[r#"
            0ms call SendEmail {"to":"x@y.z"} key=email
            0ms call SendPush {"user_id":"u1"} key=push
            5ms reply SendEmail ok
            2000ms cancelled SendPush
        "#]],
        expect![[r#"
            Failed DEADLINE_EXCEEDED: step `push` (demo.notification.v1.NotificationService/SendPush) failed: DEADLINE_EXCEEDED: no response within 2s (the execution's deadline)
              email Succeeded [5ms:OK] -> {}
              push Failed [2000ms:DEADLINE_EXCEEDED]
        "#]],
    );
}

#[tokio::test(start_paused = true)]
async fn input_that_violates_the_schema_is_refused_before_any_call() {
    let script = Script::new(&[(CREATE_USER, vec![user_ok()])]);
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let err =
        engine.execute(request(&compile(&doc("user_creation")), serde_json::json!({"name": 3}))).await.unwrap_err();
    expect![[r#"the input does not match the pattern's input schema: input.email: required property is missing; input.name: 3 is not of type "string""#]]
        .assert_eq(&err.to_string());
    assert_eq!(script.trace(), "");
}

/// A request whose value does not fit its field fails the step before any call, naming the
/// message and the key; `null` leaves a field unset.
#[tokio::test(start_paused = true)]
async fn a_request_value_that_does_not_fit_its_field_fails_before_the_call() {
    let doc = r#"
name: bad_request
version: 1.0.0
input:
  type: object
  properties:
    x: {}
steps:
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with:
      display_name: "${{ input.x }}"
      email: "a@b.c"
output:
  id: "${{ steps.user.user.id }}"
"#;
    let script = Script::new(&[(CREATE_USER, vec![user_ok()])]);
    let record = run(doc, &script, serde_json::json!({"x": [1, 2]})).await;
    assert_eq!(script.trace(), "");
    let error = record.error.as_ref().expect("failed");
    assert_eq!(error.code, Code::InvalidArgument);
    assert!(
        error.message.contains("building the demo.user.v1.CreateUserRequest request: display_name: "),
        "{}",
        error.message
    );
    let script = Script::new(&[(CREATE_USER, vec![user_ok()])]);
    let record = run(doc, &script, serde_json::json!({"x": null})).await;
    assert!(record.error.is_none(), "{:?}", record.error);
    expect![[r#"
        0ms call CreateUser {"email":"a@b.c"} key=user
        10ms reply CreateUser ok
    "#]]
    .assert_eq(&script.trace());
}

const DELETE_USER: &str = "demo.user.v1.UserService/DeleteUser";

#[tokio::test(start_paused = true)]
async fn for_each_fans_out_under_the_concurrency_cap_and_keeps_item_order() {
    let doc = r#"
name: fan_out
version: 1.0.0
input: {type: object, properties: {emails: {type: array, items: {type: string}}}}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    for_each: "${{ input.emails }}"
    concurrency: 2
    with: {to: "${{ item }}", subject: "n${{ index }}"}
output:
  ids: "${{ steps.mail.map(m, m.message_id) }}"
"#;
    // Item 0 is slow: items 1 and 2 finish first, yet the output stays in item order.
    let script = Script::new(&[(
        EMAIL,
        vec![
            ok(30, serde_json::json!({"message_id": "m0"})),
            ok(10, serde_json::json!({"message_id": "m1"})),
            ok(10, serde_json::json!({"message_id": "m2"})),
            ok(10, serde_json::json!({"message_id": "m3"})),
        ],
    )]);
    let record = run(doc, &script, serde_json::json!({"emails": ["a@x", "b@x", "c@x", "d@x"]})).await;
    check(
        &script,
        &record,
        expect![[r#"
            0ms call SendEmail {"to":"a@x","subject":"n0"} key=mail/0
            0ms call SendEmail {"to":"b@x","subject":"n1"} key=mail/1
            10ms reply SendEmail ok
            10ms call SendEmail {"to":"c@x","subject":"n2"} key=mail/2
            20ms reply SendEmail ok
            20ms call SendEmail {"to":"d@x","subject":"n3"} key=mail/3
            30ms reply SendEmail ok
            30ms reply SendEmail ok
        "#]],
        expect![[r#"
            Succeeded
              mail Succeeded [30ms:OK 10ms:OK 10ms:OK 10ms:OK]
            output {"ids":["m0","m1","m2","m3"]}
        "#]],
    );
}

/// The invoker puts calls of one lane on one connection: an execution's calls share its lane (so
/// the calls it starts together leave in one write); executions and for_each items spread.
#[tokio::test(start_paused = true)]
async fn an_executions_calls_share_a_lane_and_for_each_items_spread() {
    let script = Script::new(&[(CREATE_USER, vec![user_ok()]), (EMAIL, vec![ok(5, serde_json::json!({}))])]);
    let pattern = compile(&doc("user_creation"));
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let input = serde_json::json!({"email": "a@b.c", "name": "Ada"});
    let first = engine.execute(request(&pattern, input.clone())).await.unwrap();
    engine.execute(request(&pattern, input)).await.unwrap();
    let lanes = script.lanes.lock().unwrap().clone();
    assert_eq!(lanes.len(), 4, "{lanes:?}");
    assert_eq!(lanes[0], first.trace.as_ref().expect("a trace").span_id, "the execution's span id");
    assert!(lanes[0] == lanes[1] && lanes[2] == lanes[3] && lanes[0] != lanes[2], "{lanes:?}");

    let doc = r#"
name: fan_out_lanes
version: 1.0.0
input: {type: object, properties: {emails: {type: array, items: {type: string}}}}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    for_each: "${{ input.emails }}"
    with: {to: "${{ item }}", subject: "hi"}
"#;
    let script = Script::new(&[(EMAIL, vec![ok(5, serde_json::json!({"message_id": "m"}))])]);
    run(doc, &script, serde_json::json!({"emails": ["a@x", "b@x", "c@x"]})).await;
    let mut lanes = script.lanes.lock().unwrap().clone();
    lanes.sort_unstable();
    assert!(
        lanes[1] == lanes[0].wrapping_add(1) && lanes[2] == lanes[0].wrapping_add(2),
        "one lane per item: {lanes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_for_each_item_is_retried_alone_under_its_own_key() {
    let doc = r#"
name: create_all
version: 1.0.0
input: {type: object, properties: {emails: {type: array, items: {type: string}}}}
steps:
  - id: users
    call: demo.user.v1.UserService/CreateUser
    for_each: "${{ input.emails }}"
    retry: {max_attempts: 3, initial_backoff: 0.1s}
    with: {email: "${{ item }}", display_name: "n${{ index }}"}
output:
  names: "${{ steps.users.map(u, u.user.display_name) }}"
"#;
    // Item 1 fails once and, retried after its backoff, finishes last: the output must still be
    // in item order, and only item 1 is called again.
    let user =
        |n: u32| ok(10, serde_json::json!({"user": {"id": format!("usr_{n}"), "display_name": format!("n{n}")}}));
    let script = Script::new(&[(CREATE_USER, vec![user(0), fail(1, Code::Unavailable), user(2), user(1)])]);
    let record = run(doc, &script, serde_json::json!({"emails": ["a@x", "b@x", "c@x"]})).await;
    expect![[r#"
        call CreateUser {"email":"a@x","display_name":"n0"} key=users/0
        call CreateUser {"email":"b@x","display_name":"n1"} key=users/1
        call CreateUser {"email":"c@x","display_name":"n2"} key=users/2
        reply CreateUser UNAVAILABLE
        reply CreateUser ok
        reply CreateUser ok
        call CreateUser {"email":"b@x","display_name":"n1"} key=users/1
        reply CreateUser ok
    "#]]
    .assert_eq(&script.untimed_trace());
    expect![[r#"
        Succeeded
          users Succeeded [10ms:OK 1ms:UNAVAILABLE 10ms:OK 10ms:OK]
        output {"names":["n0","n1","n2"]}
    "#]]
    .assert_eq(&summary(&record));
    assert_eq!(record.steps[0].items, 3);
}

#[tokio::test(start_paused = true)]
async fn a_failure_compensates_completed_steps_in_reverse_completion_order() {
    let doc = r#"
name: saga
version: 1.0.0
steps:
  - id: first
    call: demo.user.v1.UserService/CreateUser
    with: {email: "one@x"}
    compensate: {call: demo.user.v1.UserService/DeleteUser, with: {user_id: "${{ steps.first.user.id }}"}}
  - id: second
    call: demo.user.v1.UserService/CreateUser
    with: {email: "two@x"}
    depends_on: [first]
    compensate: {call: demo.user.v1.UserService/DeleteUser, with: {user_id: "${{ steps.second.user.id }}"}}
  - id: notify
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ steps.second.user.email }}"}
"#;
    let script = Script::new(&[
        (
            CREATE_USER,
            vec![
                ok(5, serde_json::json!({"user": {"id": "usr_1", "email": "one@x"}})),
                ok(5, serde_json::json!({"user": {"id": "usr_2", "email": "two@x"}})),
            ],
        ),
        (EMAIL, vec![fail(5, Code::FailedPrecondition)]),
        (DELETE_USER, vec![ok(1, serde_json::json!({"deleted": true}))]),
    ]);
    let record = run(doc, &script, serde_json::json!({})).await;
    check(
        &script,
        &record,
        expect![[r#"
        0ms call CreateUser {"email":"one@x"} key=first
        5ms reply CreateUser ok
        5ms call CreateUser {"email":"two@x"} key=second
        10ms reply CreateUser ok
        10ms call SendEmail {"to":"two@x"} key=notify
        15ms reply SendEmail FAILED_PRECONDITION
        15ms call DeleteUser {"user_id":"usr_2"} key=second/compensate
        16ms reply DeleteUser ok
        16ms call DeleteUser {"user_id":"usr_1"} key=first/compensate
        17ms reply DeleteUser ok
    "#]],
        expect![[r#"
        Compensated FAILED_PRECONDITION: step `notify` (demo.notification.v1.NotificationService/SendEmail) failed: FAILED_PRECONDITION: scripted failure
          first Succeeded [5ms:OK] -> {"user":{"id":"usr_1","email":"one@x"}}
          second Succeeded [5ms:OK] -> {"user":{"id":"usr_2","email":"two@x"}}
          notify Failed [5ms:FAILED_PRECONDITION]
    "#]],
    );
    let comp: Vec<_> = record.steps.iter().map(|s| s.compensation.as_ref().map(|c| c.status)).collect();
    assert_eq!(comp, [Some(nexus_engine::StepStatus::Succeeded), Some(nexus_engine::StepStatus::Succeeded), None]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_compensation_fails_the_execution_with_both_errors() {
    let script = Script::new(&[
        (CREATE_USER, vec![user_ok()]),
        (EMAIL, vec![fail(5, Code::Internal)]),
        (DELETE_USER, vec![fail(1, Code::Unavailable)]),
    ]);
    let record = run(&doc("saga"), &script, serde_json::json!({})).await;
    expect![[r#"
        Failed INTERNAL: step `notify` (demo.notification.v1.NotificationService/SendEmail) failed: INTERNAL: scripted failure; then compensating step `first` (demo.user.v1.UserService/DeleteUser) failed: UNAVAILABLE: scripted failure
          first Succeeded [10ms:OK] -> {"user":{"id":"usr_1","email":"a@b.c"}}
          notify Failed [5ms:INTERNAL]
    "#]].assert_eq(&summary(&record));
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_in_flight_calls_and_compensates() {
    let script = Script::new(&[
        (CREATE_USER, vec![user_ok()]),
        (EMAIL, vec![ok(60_000, serde_json::json!({}))]),
        (DELETE_USER, vec![ok(1, serde_json::json!({"deleted": true}))]),
    ]);
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let request = request(&compile(&doc("saga")), serde_json::json!({}));
    let task = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute_observed(request, tx).await.unwrap() }
    });
    // Cancel once `notify`'s call has reached the backend.
    let mut id = None;
    while let Some(e) = rx.recv().await {
        id = Some(e.execution_id.clone());
        if matches!(&e.event, nexus_engine::Event::StepStarted { step, .. } if &**step == "notify") {
            eventually(Duration::from_secs(1), "the call of `notify`", || script.trace().contains("call SendEmail"))
                .await;
            assert!(engine.cancel(&e.execution_id));
        }
        if matches!(e.event, nexus_engine::Event::Finished(_)) {
            break;
        }
    }
    let record = task.await.unwrap();
    assert_eq!(Some(record.id.clone()), id);
    check(
        &script,
        &record,
        expect![[r#"
            0ms call CreateUser {"email":"one@x"} key=first
            10ms reply CreateUser ok
            10ms call SendEmail {"to":"a@b.c"} key=notify
            10ms cancelled SendEmail
            10ms call DeleteUser {"user_id":"usr_1"} key=first/compensate
            11ms reply DeleteUser ok
        "#]],
        expect![[r#"
            Cancelled CANCELLED: the execution was cancelled
              first Succeeded [10ms:OK] -> {"user":{"id":"usr_1","email":"a@b.c"}}
              notify Cancelled []
        "#]],
    );
    assert!(!engine.cancel(&record.id), "a finished execution cannot be cancelled");
}

#[tokio::test(start_paused = true)]
async fn backend_calls_continue_the_callers_trace_with_a_span_each() {
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let script = Script::new(&[(CREATE_USER, vec![user_ok()]), (EMAIL, vec![ok(5, serde_json::json!({}))])]);
    let pattern = compile(&doc("user_creation"));
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let input = serde_json::json!({"email": "a@b.c", "name": "Ada"});
    let traced = engine
        .execute(ExecuteRequest {
            traceparent: Some(CALLER.into()),
            tracestate: Some("congo=t61rcWkgMzE".into()),
            ..request(&pattern, input.clone())
        })
        .await
        .unwrap();
    engine.execute(request(&pattern, input)).await.unwrap();
    let seen = script.traceparents.lock().unwrap().clone();
    let parts: Vec<Vec<&str>> = seen.iter().map(|t| t.split('-').collect()).collect();
    assert_eq!(parts.len(), 4, "{seen:?}");
    for p in &parts {
        assert!(p.len() == 4 && p[0] == "00" && p[1].len() == 32 && p[2].len() == 16 && p[3] == "01", "{seen:?}");
    }
    // With the caller's header: its trace id, a new span per call (neither the caller's).
    assert_eq!((parts[0][1], parts[1][1]), ("4bf92f3577b34da6a3ce929d0e0e4736", "4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(parts[0][2] != parts[1][2] && !seen[..2].iter().any(|t| t.contains("00f067aa0ba902b7")), "{seen:?}");
    // Without it: a trace of the execution's own, shared by its calls.
    assert_eq!(parts[2][1], parts[3][1], "{seen:?}");
    assert_ne!(parts[2][1], "4bf92f3577b34da6a3ce929d0e0e4736");
    // The record keeps the tree: the execution's span under the caller's, each attempt's span id
    // the one its call carried.
    let trace = traced.trace.as_ref().expect("a finished execution has its trace");
    assert_eq!((trace.trace_id_hex().as_str(), trace.parent_span_id), (parts[0][1], Some(0x00f0_67aa_0ba9_02b7)));
    assert_eq!(trace.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    let attempts: Vec<String> =
        traced.steps.iter().flat_map(|s| &s.attempts).map(|a| format!("{:016x}", a.span_id)).collect();
    assert_eq!(attempts, [parts[0][2], parts[1][2]]);
    assert!(!attempts.contains(&format!("{:016x}", trace.span_id)));
}

#[tokio::test(start_paused = true)]
async fn reading_a_skippable_step_needs_a_has_guard() {
    let reader = |body: &str| {
        doc("user_creation").replace(
            "subject: \"Welcome ${{ input.name }}\"}",
            &format!("subject: \"Welcome ${{{{ input.name }}}}\", body: \"{body}\"}}"),
        )
    };
    // `avatar` may be skipped (its `when`): reading it unguarded is refused at registration.
    let unguarded = reader("${{ steps.avatar.asset.url }}");
    let errors =
        nexus_core::compile(&document::parse(&unguarded).unwrap(), &catalog(), &nexus_core::NoPatterns).unwrap_err();
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    expect![[r#"
        [
            "error: steps[2].with.body: `steps.avatar.asset.url` reads step `avatar`, which has a `when` and may be skipped; guard it, e.g. `has(steps.avatar.asset.url) ? steps.avatar.asset.url : ...`, or depend on it with depends_on only",
        ]
    "#]].assert_debug_eq(&errors);

    // Guarded, it reads the asset when the step ran and the fallback when it was skipped.
    let guarded = reader("${{ has(steps.avatar.asset) ? steps.avatar.asset.url : 'none' }}");
    let script = Script::new(&[
        (CREATE_USER, vec![user_ok()]),
        (UPLOAD, vec![ok(30, serde_json::json!({"asset": {"id": "ast_1", "url": "https://cdn/a.png"}}))]),
        (EMAIL, vec![ok(5, serde_json::json!({}))]),
    ]);
    run(&guarded, &script, serde_json::json!({"email": "a@b.c", "name": "Ada", "avatar_url": "https://x/a.png"})).await;
    run(&guarded, &script, serde_json::json!({"email": "a@b.c", "name": "Ada"})).await;
    let trace = script.untimed_trace();
    let mails: Vec<&str> = trace.lines().filter(|l| l.starts_with("call SendEmail")).collect();
    expect![[r#"
        [
            "call SendEmail {\"to\":\"a@b.c\",\"subject\":\"Welcome Ada\",\"body\":\"https://cdn/a.png\"} key=welcome",
            "call SendEmail {\"to\":\"a@b.c\",\"subject\":\"Welcome Ada\",\"body\":\"none\"} key=welcome",
        ]
    "#]]
    .assert_debug_eq(&mails);
}

/// A test registry of compiled patterns, for sub-pattern calls.
struct Registered(HashMap<String, Arc<nexus_core::CompiledPattern>>);

impl nexus_core::PatternLookup for Registered {
    fn lookup(&self, name: &str, version: &str) -> Option<Arc<nexus_core::CompiledPattern>> {
        self.0.get(&format!("{name}@{version}")).cloned()
    }
}

#[tokio::test(start_paused = true)]
async fn a_pattern_runs_another_pattern_as_a_step() {
    let callee = r#"
name: make_user
version: 1.0.0
input: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: create
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}"}
output:
  user_id: "${{ steps.create.user.id }}"
"#;
    let caller = r#"
name: onboard
version: 1.0.0
steps:
  - id: user
    call: pattern:make_user@1.0.0
    with: {email: "a@b.c"}
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "a@b.c", subject: "Hi ${{ steps.user.user_id }}"}
output:
  user: "${{ steps.user.user_id }}"
"#;
    let registry = Registered(HashMap::from([("make_user@1.0.0".to_string(), compile(callee))]));

    // The type check reaches into the callee: its input schema and its output mapping.
    let bad = caller
        .replace("{email: \"a@b.c\"}", "{mail: \"a@b.c\"}")
        .replace("steps.user.user_id }}\"}", "steps.user.userid }}\"}");
    let errors = nexus_core::compile(&document::parse(&bad).unwrap(), &catalog(), &registry).unwrap_err();
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    expect![[r#"
        [
            "error: steps[0].with.mail: pattern make_user@1.0.0: `input` has no property `mail` (did you mean `email`?); the input schema declares: email",
            "error: steps[0].with: pattern make_user@1.0.0 requires input `email`",
            "error: steps[1].with.subject: `steps.user` has no `userid` (did you mean `user_id`?); the called pattern outputs: user_id",
        ]
    "#]].assert_debug_eq(&errors);

    let pattern = compile_with(caller, &registry);
    let script = Script::new(&[(CREATE_USER, vec![user_ok()]), (EMAIL, vec![ok(5, serde_json::json!({}))])]);
    let history = Arc::new(History::new(10));
    let engine = Engine::new(script.clone(), history.clone());
    let record = engine.execute(request(&pattern, serde_json::json!({}))).await.unwrap();
    check(
        &script,
        &record,
        expect![[r#"
        0ms call CreateUser {"email":"a@b.c"} key=create
        10ms reply CreateUser ok
        10ms call SendEmail {"to":"a@b.c","subject":"Hi usr_1"} key=mail
        15ms reply SendEmail ok
    "#]],
        expect![[r#"
        Succeeded
          user Succeeded [10ms:OK]
          mail Succeeded [5ms:OK] -> {}
        output {"user":"usr_1"}
    "#]],
    );
    let (all, _) = history.list(&nexus_engine::HistoryFilter::default());
    let names: Vec<&str> = all.iter().map(|r| &*r.pattern_name).collect();
    assert_eq!(names, ["make_user", "onboard"], "the child execution is recorded too (newest first)");
}

#[tokio::test(start_paused = true)]
async fn a_streaming_step_forwards_each_message_as_it_arrives() {
    let doc = r#"
name: live
version: 1.0.0
steps:
  - id: live
    call: demo.broadcast.v1.BroadcastService/Subscribe
    stream: true
    with: {broadcast_id: "b1"}
output:
  last: "${{ steps.live.sequence }}"
"#;
    let chunk = |n: u64| ok(10, serde_json::json!({"broadcast_id": "b1", "sequence": n.to_string()}));
    let script = Script::new(&[("demo.broadcast.v1.BroadcastService/Subscribe", vec![chunk(1), chunk(2), chunk(3)])]);
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let request = request(&compile(doc), serde_json::json!({}));
    let task = tokio::spawn(async move { engine.execute_observed(request, tx).await.unwrap() });
    let start = tokio::time::Instant::now();
    let mut trace = String::new();
    while let Some(e) = rx.recv().await {
        let at = start.elapsed().as_millis();
        let line = match &e.event {
            nexus_engine::Event::Started { .. } => "started".to_string(),
            nexus_engine::Event::StepStarted { step, .. } => format!("step {step} started"),
            nexus_engine::Event::Message { step, index, message } => {
                format!("{step} #{index} {}", value::message_to_serde(message))
            }
            nexus_engine::Event::StepSucceeded { step, .. } => format!("step {step} succeeded"),
            nexus_engine::Event::Finished(r) => format!("finished {:?}", r.status),
            other => format!("{other:?}"),
        };
        let _ = writeln!(trace, "{at}ms {line}");
        // A slow reader (25 ms per event, the scripted client's behaviour, not a wait for a
        // condition): the next message is not read from the backend until this one is taken.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let record = task.await.unwrap();
    expect![[r#"
        0ms started
        25ms step live started
        50ms live #0 {"broadcast_id":"b1","sequence":"1"}
        75ms live #1 {"broadcast_id":"b1","sequence":"2"}
        100ms live #2 {"broadcast_id":"b1","sequence":"3"}
        125ms step live succeeded
        150ms finished Succeeded
    "#]]
    .assert_eq(&trace);
    expect![[r#"
        Succeeded
          live Succeeded [75ms:OK]
        output {"last":3}
    "#]]
    .assert_eq(&summary(&record));
}

#[tokio::test(start_paused = true)]
async fn an_idempotency_key_runs_the_pattern_once() {
    let script = Script::new(&[(CREATE_USER, vec![user_ok()]), (EMAIL, vec![ok(5, serde_json::json!({}))])]);
    let pattern = compile(&doc("user_creation"));
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let request = |key: &str| ExecuteRequest {
        idempotency_key: Some(key.to_string()),
        ..request(&pattern, serde_json::json!({"email": "a@b.c", "name": "Ada"}))
    };
    // Two concurrent requests and a later one with the same key share one execution.
    let (a, b) = tokio::join!(engine.execute(request("k1")), engine.execute(request("k1")));
    let c = engine.execute(request("k1")).await.unwrap();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((&a.id, &b.id), (&c.id, &c.id));
    let other = engine.execute(request("k2")).await.unwrap();
    assert_ne!(other.id, a.id);
    let creates = script.trace().lines().filter(|l| l.contains("call CreateUser")).count();
    assert_eq!(creates, 2, "one execution per key:\n{}", script.trace());
}

/// A journal in memory that can be told to refuse step writes (the store is unreachable), and
/// that knows idempotency keys from "before a restart" (`keys`).
#[derive(Default)]
struct MemJournal {
    writes: Mutex<Vec<String>>,
    fail_steps: std::sync::atomic::AtomicBool,
    keys: Mutex<HashMap<String, nexus_engine::Keyed>>,
    /// Steps whose result takes this long to commit, queued meanwhile (`withdraw_step` takes them
    /// back, like the store's group commit does a write no commit has taken yet).
    slow_steps: Mutex<HashMap<String, Duration>>,
    queued: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl nexus_engine::Journal for MemJournal {
    async fn start(&self, s: &nexus_engine::JournalStart) -> Result<(), nexus_engine::JournalError> {
        self.writes.lock().unwrap().push(format!("start {}", s.pattern_name));
        Ok(())
    }

    async fn step_completed(&self, _: &str, step_id: &str, _: &str) -> Result<(), nexus_engine::JournalError> {
        if self.fail_steps.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(nexus_engine::JournalError::transient("connection refused"));
        }
        let slow = self.slow_steps.lock().unwrap().get(step_id).copied();
        if let Some(took) = slow {
            self.queued.lock().unwrap().push(step_id.to_string());
            tokio::time::sleep(took).await;
            self.queued.lock().unwrap().retain(|s| s != step_id);
        }
        self.writes.lock().unwrap().push(format!("step {step_id}"));
        Ok(())
    }

    fn withdraw_step(&self, _: &str, step_id: &str) -> bool {
        let mut queued = self.queued.lock().unwrap();
        let Some(i) = queued.iter().position(|s| s == step_id) else { return false };
        queued.remove(i);
        self.writes.lock().unwrap().push(format!("withdrawn {step_id}"));
        true
    }

    async fn finished(&self, r: &ExecutionRecord) -> Result<(), nexus_engine::JournalError> {
        self.writes.lock().unwrap().push(format!("finished {:?}", r.status));
        Ok(())
    }

    async fn keyed(&self, _: &str, key: &str) -> Result<Option<nexus_engine::Keyed>, nexus_engine::JournalError> {
        self.writes.lock().unwrap().push(format!("keyed {key}"));
        Ok(self.keys.lock().unwrap().get(key).cloned())
    }
}

/// `saga`, durable.
fn durable_saga() -> String {
    doc("saga").replace("version: 1.0.0\n", "version: 1.0.0\ndurability: durable\n")
}

fn durable_engine(script: &Arc<Script>) -> (Engine, Arc<MemJournal>, Arc<CompiledPattern>) {
    let journal = Arc::new(MemJournal::default());
    let engine = Engine::new(script.clone(), Arc::new(History::new(10))).with_journal(journal.clone());
    (engine, journal, compile(&durable_saga()))
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_journal_suspends_the_execution_instead_of_failing_or_compensating_it() {
    let script = Script::new(&[
        (CREATE_USER, vec![ok(5, serde_json::json!({"user": {"id": "usr_1", "email": "one@x"}}))]),
        (EMAIL, vec![ok(5, serde_json::json!({}))]),
        (DELETE_USER, vec![ok(1, serde_json::json!({"deleted": true}))]),
    ]);
    let (engine, journal, pattern) = durable_engine(&script);
    journal.fail_steps.store(true, std::sync::atomic::Ordering::SeqCst);
    let record = engine.execute(request(&pattern, serde_json::json!({}))).await.unwrap();
    // Left running in the journal (the only place that could record an outcome is down): no
    // compensation, no `finished`, not in this node's history; it resumes from the journal,
    // where `first` is not recorded, so it is called again (same idempotency key).
    expect![[r#"
        0ms call CreateUser {"email":"one@x"} key=first
        5ms reply CreateUser ok
    "#]]
    .assert_eq(&script.trace());
    let id = &record.id;
    assert_eq!(
        summary(&record),
        format!(
            "Running UNAVAILABLE: journaling the result of step `first`: the execution journal is unavailable: \
             connection refused; the execution stays journaled and resumes from its last completed step once \
             the store is reachable (GetExecution `{id}` returns its result)\n  \
             first Cancelled []\n  notify Pending []\n"
        )
    );
    assert_eq!(*journal.writes.lock().unwrap(), ["start saga"]);
    assert!(engine.history().get(&record.id).is_none());
}

#[tokio::test(start_paused = true)]
async fn shutting_down_hands_durable_executions_back_and_lets_ephemeral_ones_finish() {
    let script = Script::new(&[
        (
            CREATE_USER,
            vec![
                ok(5, serde_json::json!({"user": {"id": "usr_1", "email": "one@x"}})),
                ok(5, serde_json::json!({"user": {"id": "usr_2", "email": "two@x"}})),
            ],
        ),
        (EMAIL, vec![ok(100, serde_json::json!({})), ok(100, serde_json::json!({}))]),
        (DELETE_USER, vec![ok(1, serde_json::json!({"deleted": true}))]),
    ]);
    let (engine, journal, durable) = durable_engine(&script);
    let ephemeral = compile(&doc("saga"));
    let d = tokio::spawn({
        let (engine, durable) = (engine.clone(), durable.clone());
        async move { engine.execute(request(&durable, serde_json::json!({}))).await.unwrap() }
    });
    let e = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute(request(&ephemeral, serde_json::json!({}))).await.unwrap() }
    });
    eventually(Duration::from_secs(1), "both executions in their 100 ms SendEmail", || {
        script.trace().matches("call SendEmail").count() == 2
    })
    .await;
    assert_eq!(engine.running_durable().len(), 1);
    assert_eq!(engine.suspend_durable(), 1);
    let (d, e) = (d.await.unwrap(), e.await.unwrap());
    assert_eq!(d.status, nexus_engine::ExecutionStatus::Running, "{:?}", d.error);
    assert!(d.error.as_ref().unwrap().message.contains("continues on another replica"), "{:?}", d.error);
    assert_eq!(e.status, nexus_engine::ExecutionStatus::Succeeded, "{:?}", e.error);
    assert_eq!(*journal.writes.lock().unwrap(), ["start saga", "step first"], "no outcome journaled");
    assert!(!script.trace().contains("DeleteUser"), "nothing compensated:\n{}", script.trace());
    // New durable executions are refused before anything is journaled or called.
    let calls = script.trace().lines().count();
    let refused = engine.execute(request(&durable, serde_json::json!({}))).await.unwrap();
    assert_eq!(refused.status, nexus_engine::ExecutionStatus::Failed);
    assert_eq!(refused.error.as_ref().unwrap().code, Code::Unavailable);
    assert_eq!(script.trace().lines().count(), calls);
    assert_eq!(journal.writes.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_key_is_shared_by_the_unary_and_the_stream_paths_and_never_across_tenants() {
    let script = Script::new(&[(CREATE_USER, vec![user_ok()]), (EMAIL, vec![ok(5, serde_json::json!({}))])]);
    let pattern = compile(&doc("user_creation"));
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let request = |tenant: &str| ExecuteRequest {
        idempotency_key: Some("k".to_string()),
        tenant: Arc::from(tenant),
        ..request(&pattern, serde_json::json!({"email": "a@b.c", "name": "Ada"}))
    };
    // The stream request runs it (every event); the unary one with the same key waits for it.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (streamed, unary) = tokio::join!(engine.execute_observed(request("t"), tx), engine.execute(request("t")));
    let (streamed, unary) = (streamed.unwrap(), unary.unwrap());
    assert_eq!(streamed.id, unary.id);
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        kinds.push(format!("{:?}", std::mem::discriminant(&e.event)));
    }
    assert!(kinds.len() > 2, "the first request saw the whole execution: {kinds:?}");
    // A later stream request with the key gets the first execution's end, and nothing runs.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let again = engine.execute_observed(request("t"), tx).await.unwrap();
    assert_eq!(again.id, unary.id);
    let events: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0].event, nexus_engine::Event::Finished(r) if r.id == unary.id));
    // Another tenant's request with the same key is refused, not answered with this record.
    let err = engine.execute(request("other")).await.unwrap_err();
    assert_eq!(err.to_string(), "this idempotency key is already used for pattern `user_creation`; choose another key");
    let creates = script.trace().lines().filter(|l| l.contains("call CreateUser")).count();
    assert_eq!(creates, 1, "{}", script.trace());
}

#[tokio::test(start_paused = true)]
async fn a_durable_key_from_before_a_restart_is_answered_from_the_journal() {
    let script = Script::new(&[
        (CREATE_USER, vec![ok(5, serde_json::json!({"user": {"id": "usr_1", "email": "one@x"}}))]),
        (EMAIL, vec![ok(5, serde_json::json!({}))]),
    ]);
    let (engine, journal, pattern) = durable_engine(&script);
    let keyed = |key: &str, tenant: &str| ExecuteRequest {
        idempotency_key: Some(key.to_string()),
        tenant: Arc::from(tenant),
        ..request(&pattern, serde_json::json!({}))
    };
    let mut earlier = engine.execute(keyed("fresh", "t")).await.unwrap().as_ref().clone();
    earlier.id = Arc::from("earlier");
    journal.keys.lock().unwrap().insert("done".into(), nexus_engine::Keyed::Finished(Arc::new(earlier)));
    journal.keys.lock().unwrap().insert(
        "elsewhere".into(),
        nexus_engine::Keyed::Unfinished { id: Arc::from("running-1"), tenant: Arc::from("t") },
    );
    // Finished before the restart: its record, nothing called.
    let done = engine.execute(keyed("done", "t")).await.unwrap();
    assert_eq!((&*done.id, done.status), ("earlier", nexus_engine::ExecutionStatus::Succeeded));
    // Unfinished and not running here: RUNNING, UNAVAILABLE naming it (retry, or GetExecution).
    let elsewhere = engine.execute(keyed("elsewhere", "t")).await.unwrap();
    expect![[r#"
        Running UNAVAILABLE: execution `running-1` with this idempotency key is still running (on another replica, or waiting to be resumed); retry, or GetExecution `running-1` returns its result
    "#]]
    .assert_eq(&summary(&elsewhere));
    // Another tenant's key: refused.
    let err = engine.execute(keyed("done", "u")).await.unwrap_err();
    assert!(matches!(err, nexus_engine::EngineError::IdempotencyKeyTaken { .. }), "{err}");
    let creates = script.trace().lines().filter(|l| l.contains("call CreateUser")).count();
    assert_eq!(creates, 1, "only the fresh key ran:\n{}", script.trace());
    let writes = journal.writes.lock().unwrap().clone();
    // Once per key: later requests with a key (and other tenants) are answered in memory.
    assert_eq!(writes.iter().filter(|w| w.starts_with("keyed ")).count(), 3, "{writes:?}");
}

/// `user_creation`, durable.
fn durable_user_creation() -> Arc<CompiledPattern> {
    compile(&doc("user_creation").replace("version: 1.0.0\n", "version: 1.0.0\ndurability: durable\n"))
}

#[tokio::test(start_paused = true)]
async fn a_leaf_result_still_waiting_for_a_commit_when_the_execution_ends_is_left_to_the_end() {
    let script = Script::new(&[
        (CREATE_USER, vec![user_ok()]),
        (UPLOAD, vec![ok(30, serde_json::json!({"asset": {"id": "ast_1", "url": "https://cdn/a.png"}}))]),
        (EMAIL, vec![ok(20, serde_json::json!({"message_id": "m1"}))]),
    ]);
    let journal = Arc::new(MemJournal::default());
    // `welcome` ends first; its commit takes 50 ms, and `avatar` ends 10 ms into it.
    journal.slow_steps.lock().unwrap().insert("welcome".into(), Duration::from_millis(50));
    let engine = Engine::new(script.clone(), Arc::new(History::new(10))).with_journal(journal.clone());
    let input = serde_json::json!({"email": "a@b.c", "name": "Ada", "avatar_url": "https://x/a.png"});
    let record = engine.execute(request(&durable_user_creation(), input)).await.unwrap();
    assert_eq!(
        *journal.writes.lock().unwrap(),
        ["start user_creation", "step user", "withdrawn welcome", "finished Succeeded"]
    );
    // Both results are in the end's record, and nobody waited for the withdrawn commit.
    expect![[r#"
        Succeeded
          user Succeeded [10ms:OK] -> {"user":{"id":"usr_1","email":"a@b.c"}}
          avatar Succeeded [30ms:OK] -> {"asset":{"id":"ast_1","url":"https://cdn/a.png"}}
          welcome Succeeded [20ms:OK] -> {"message_id":"m1"}
        output {"avatar_url":"https://cdn/a.png","user_id":"usr_1"}
    "#]]
    .assert_eq(&summary(&record));
    assert_eq!(record.duration, Duration::from_millis(40));
}

#[tokio::test(start_paused = true)]
async fn a_withdrawn_leaf_result_is_journaled_after_all_when_more_steps_start() {
    let doc = r#"
name: leaf_then_more
version: 1.0.0
durability: durable
input: {type: object}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: a@b.c, subject: hi, body: there}
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with: {email: a@b.c, display_name: Ada}
  - id: avatar
    call: demo.asset.v1.AssetService/UploadAsset
    with: {owner_id: "${{ steps.user.user.id }}", source_url: "https://x/a.png"}
"#;
    let script = Script::new(&[
        (EMAIL, vec![ok(5, serde_json::json!({"message_id": "m1"}))]),
        (CREATE_USER, vec![user_ok()]),
        (UPLOAD, vec![ok(10, serde_json::json!({"asset": {"id": "ast_1"}}))]),
    ]);
    let journal = Arc::new(MemJournal::default());
    journal.slow_steps.lock().unwrap().insert("mail".into(), Duration::from_millis(50));
    let engine = Engine::new(script.clone(), Arc::new(History::new(10))).with_journal(journal.clone());
    let record = engine.execute(request(&compile(doc), serde_json::json!({}))).await.unwrap();
    assert_eq!(record.status, nexus_engine::ExecutionStatus::Succeeded, "{:?}", record.error);
    // `user` ended while `mail` waited for its commit, so `mail` was taken back; but `user`'s
    // result then let `avatar` start, and `mail`'s result was journaled while it ran.
    assert_eq!(
        *journal.writes.lock().unwrap(),
        ["start leaf_then_more", "withdrawn mail", "step user", "step mail", "finished Succeeded"]
    );
}

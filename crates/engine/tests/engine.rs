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
use nexus_core::{Catalog, catalog::DescriptorSource, document, value};
use nexus_engine::{
    Call, CallError, Engine, ExecuteRequest, ExecutionRecord, History, Invoker, MessageStream, StepResponse, code_name,
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
    start: Instant,
}

impl Script {
    fn new(replies: &[(&str, Vec<Reply>)]) -> Arc<Self> {
        Arc::new(Self {
            replies: Mutex::new(replies.iter().map(|(m, r)| (m.to_string(), r.clone())).collect()),
            log: Mutex::new(Vec::new()),
            start: Instant::now(),
        })
    }

    fn event(&self, what: String) {
        self.log.lock().unwrap().push((self.start.elapsed(), what));
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
    async fn unary(&self, call: Call) -> Result<DynamicMessage, CallError> {
        let method = call.action.name.rsplit('/').next().unwrap_or_default().to_string();
        let request = value::message_to_serde(&call.request);
        self.event(format!(
            "call {method} {request} key={}",
            call.idempotency_key.split_once('/').map_or("", |(_, k)| k)
        ));
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
        self.event(format!("call {method} {}", value::message_to_serde(&call.request)));
        let replies = self.replies.lock().unwrap().get(&*call.action.name).cloned().expect("scripted method");
        let desc = call.action.method.output();
        let stream = futures::StreamExt::then(futures::stream::iter(replies), move |reply| {
            let desc = desc.clone();
            async move {
                tokio::time::sleep(reply.latency).await;
                match reply.result {
                    Ok(body) => DynamicMessage::deserialize(desc, body)
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

const USER_CREATION: &str = r#"
name: user_creation
version: 1.0.0
input: {type: object, required: [email, name], properties: {email: {type: string}, name: {type: string}, avatar_url: {type: string}}}
steps:
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: "${{ input.name }}"}
    retry: {max_attempts: 3, initial_backoff: 0.1s, multiplier: 2}
    timeout: 1s
  - id: avatar
    when: "${{ has(input.avatar_url) }}"
    call: demo.asset.v1.AssetService/UploadAsset
    with: {owner_id: "${{ steps.user.user.id }}", source_url: "${{ input.avatar_url }}"}
  - id: welcome
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: "Welcome ${{ input.name }}"}
    depends_on: [user]
output:
  user_id: "${{ steps.user.user.id }}"
  avatar_url: "${{ steps.avatar.asset.url }}"
"#;

async fn run(doc: &str, script: &Arc<Script>, input: serde_json::Value) -> Arc<ExecutionRecord> {
    let (pattern, _) = nexus_core::compile(&document::parse(doc).unwrap(), &catalog(), &nexus_core::NoPatterns)
        .unwrap_or_else(|d| panic!("{}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")));
    let engine = Engine::new(script.clone(), Arc::new(History::new(100)));
    engine
        .execute(ExecuteRequest {
            pattern: Arc::new(pattern),
            input: value::serde_to_cel(&input),
            deadline: None,
            idempotency_key: None,
            traceparent: None,
            tenant: Arc::from("t"),
        })
        .await
        .unwrap()
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
            let _ = write!(out, " -> {}", value::message_to_serde(m));
        }
        out.push('\n');
    }
    if let Some(o) = &r.output {
        let mut v = value::cel_to_serde(o);
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
    let record = run(USER_CREATION, &script, input).await;
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
    let record = run(USER_CREATION, &script, serde_json::json!({"email": "a@b.c", "name": "Ada"})).await;
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
    let record = run(USER_CREATION, &script, serde_json::json!({"email": "a@b.c", "name": "Ada"})).await;
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
    let record = run(USER_CREATION, &script, serde_json::json!({"email": "a@b.c", "name": "Ada"})).await;
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
    let record = run(USER_CREATION, &script, serde_json::json!({"email": "a@b.c", "name": "Ada"})).await;
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

const FAN: &str = r#"
name: fan
version: 1.0.0
timeout: 2s
steps:
  - id: email
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "x@y.z"}
  - id: push
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "u1"}
"#;

#[tokio::test(start_paused = true)]
async fn a_failure_cancels_the_steps_still_in_flight() {
    let script =
        Script::new(&[(EMAIL, vec![fail(10, Code::InvalidArgument)]), (PUSH, vec![ok(1_000, serde_json::json!({}))])]);
    let record = run(FAN, &script, serde_json::json!({})).await;
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
    let record = run(FAN, &script, serde_json::json!({})).await;
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
    let (pattern, _) =
        nexus_core::compile(&document::parse(USER_CREATION).unwrap(), &catalog(), &nexus_core::NoPatterns).unwrap();
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let err = engine
        .execute(ExecuteRequest {
            pattern: Arc::new(pattern),
            input: value::serde_to_cel(&serde_json::json!({"name": 3})),
            deadline: None,
            idempotency_key: None,
            traceparent: None,
            tenant: Arc::from("t"),
        })
        .await
        .unwrap_err();
    expect![[r#"the input does not match the pattern's input schema: input.email: required property is missing; input.name: expected "string", got int"#]]
        .assert_eq(&err.to_string());
    assert_eq!(script.trace(), "");
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
    let doc = r#"
name: saga
version: 1.0.0
steps:
  - id: first
    call: demo.user.v1.UserService/CreateUser
    with: {email: "one@x"}
    compensate: {call: demo.user.v1.UserService/DeleteUser, with: {user_id: "${{ steps.first.user.id }}"}}
  - id: notify
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ steps.first.user.email }}"}
"#;
    let script = Script::new(&[
        (CREATE_USER, vec![user_ok()]),
        (EMAIL, vec![fail(5, Code::Internal)]),
        (DELETE_USER, vec![fail(1, Code::Unavailable)]),
    ]);
    let record = run(doc, &script, serde_json::json!({})).await;
    expect![[r#"
        Failed INTERNAL: step `notify` (demo.notification.v1.NotificationService/SendEmail) failed: INTERNAL: scripted failure; then compensating step `first` (demo.user.v1.UserService/DeleteUser) failed: UNAVAILABLE: scripted failure
          first Succeeded [10ms:OK] -> {"user":{"id":"usr_1","email":"a@b.c"}}
          notify Failed [5ms:INTERNAL]
    "#]].assert_eq(&summary(&record));
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_in_flight_calls_and_compensates() {
    let doc = r#"
name: cancellable
version: 1.0.0
steps:
  - id: first
    call: demo.user.v1.UserService/CreateUser
    with: {email: "one@x"}
    compensate: {call: demo.user.v1.UserService/DeleteUser, with: {user_id: "${{ steps.first.user.id }}"}}
  - id: slow
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ steps.first.user.email }}"}
"#;
    let script = Script::new(&[
        (CREATE_USER, vec![user_ok()]),
        (EMAIL, vec![ok(60_000, serde_json::json!({}))]),
        (DELETE_USER, vec![ok(1, serde_json::json!({"deleted": true}))]),
    ]);
    let (pattern, _) =
        nexus_core::compile(&document::parse(doc).unwrap(), &catalog(), &nexus_core::NoPatterns).unwrap();
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let request = ExecuteRequest {
        pattern: Arc::new(pattern),
        input: value::serde_to_cel(&serde_json::json!({})),
        deadline: None,
        idempotency_key: None,
        traceparent: None,
        tenant: Arc::from("t"),
    };
    let task = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute_observed(request, tx).await.unwrap() }
    });
    // Cancel once `slow` is in flight.
    let mut id = None;
    while let Some(e) = rx.recv().await {
        id = Some(e.execution_id.clone());
        if matches!(&e.event, nexus_engine::Event::StepStarted { step, .. } if &**step == "slow") {
            tokio::time::sleep(Duration::from_millis(100)).await;
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
        10ms call SendEmail {"to":"a@b.c"} key=slow
        110ms cancelled SendEmail
        110ms call DeleteUser {"user_id":"usr_1"} key=first/compensate
        111ms reply DeleteUser ok
    "#]],
        expect![[r#"
        Cancelled CANCELLED: the execution was cancelled
          first Succeeded [10ms:OK] -> {"user":{"id":"usr_1","email":"a@b.c"}}
          slow Cancelled []
    "#]],
    );
    assert!(!engine.cancel(&record.id), "a finished execution cannot be cancelled");
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
    let (callee, _) =
        nexus_core::compile(&document::parse(callee).unwrap(), &catalog(), &nexus_core::NoPatterns).unwrap();
    let registry = Registered(HashMap::from([("make_user@1.0.0".to_string(), Arc::new(callee))]));

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

    let (pattern, _) = nexus_core::compile(&document::parse(caller).unwrap(), &catalog(), &registry).unwrap();
    let script = Script::new(&[(CREATE_USER, vec![user_ok()]), (EMAIL, vec![ok(5, serde_json::json!({}))])]);
    let history = Arc::new(History::new(10));
    let engine = Engine::new(script.clone(), history.clone());
    let record = engine
        .execute(ExecuteRequest {
            pattern: Arc::new(pattern),
            input: value::serde_to_cel(&serde_json::json!({})),
            deadline: None,
            idempotency_key: None,
            traceparent: None,
            tenant: Arc::from("t"),
        })
        .await
        .unwrap();
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
    let (pattern, _) =
        nexus_core::compile(&document::parse(doc).unwrap(), &catalog(), &nexus_core::NoPatterns).unwrap();
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let request = ExecuteRequest {
        pattern: Arc::new(pattern),
        input: value::serde_to_cel(&serde_json::json!({})),
        deadline: None,
        idempotency_key: None,
        traceparent: None,
        tenant: Arc::from("t"),
    };
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
        // A slow reader: the next message is not read from the backend until this one is taken.
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
    let (pattern, _) =
        nexus_core::compile(&document::parse(USER_CREATION).unwrap(), &catalog(), &nexus_core::NoPatterns).unwrap();
    let pattern = Arc::new(pattern);
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let request = |key: &str| ExecuteRequest {
        pattern: pattern.clone(),
        input: value::serde_to_cel(&serde_json::json!({"email": "a@b.c", "name": "Ada"})),
        deadline: None,
        idempotency_key: Some(key.to_string()),
        traceparent: None,
        tenant: Arc::from("t"),
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
        self.writes.lock().unwrap().push(format!("step {step_id}"));
        Ok(())
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

const DURABLE_SAGA: &str = r#"
name: durable_saga
version: 1.0.0
durability: durable
steps:
  - id: first
    call: demo.user.v1.UserService/CreateUser
    with: {email: "one@x"}
    compensate: {call: demo.user.v1.UserService/DeleteUser, with: {user_id: "${{ steps.first.user.id }}"}}
  - id: notify
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ steps.first.user.email }}"}
"#;

fn durable_engine(script: &Arc<Script>) -> (Engine, Arc<MemJournal>, Arc<nexus_core::CompiledPattern>) {
    let (pattern, _) =
        nexus_core::compile(&document::parse(DURABLE_SAGA).unwrap(), &catalog(), &nexus_core::NoPatterns).unwrap();
    let journal = Arc::new(MemJournal::default());
    let engine = Engine::new(script.clone(), Arc::new(History::new(10))).with_journal(journal.clone());
    (engine, journal, Arc::new(pattern))
}

fn request(pattern: &Arc<nexus_core::CompiledPattern>) -> ExecuteRequest {
    ExecuteRequest {
        pattern: pattern.clone(),
        input: value::serde_to_cel(&serde_json::json!({})),
        deadline: None,
        idempotency_key: None,
        traceparent: None,
        tenant: Arc::from("t"),
    }
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
    let record = engine.execute(request(&pattern)).await.unwrap();
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
    assert_eq!(*journal.writes.lock().unwrap(), ["start durable_saga"]);
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
    let (ephemeral, _) = nexus_core::compile(
        &document::parse(&DURABLE_SAGA.replace("durability: durable", "durability: ephemeral")).unwrap(),
        &catalog(),
        &nexus_core::NoPatterns,
    )
    .unwrap();
    let ephemeral = Arc::new(ephemeral);
    let d = tokio::spawn({
        let (engine, durable) = (engine.clone(), durable.clone());
        async move { engine.execute(request(&durable)).await.unwrap() }
    });
    let e = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute(request(&ephemeral)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await; // both are in their 100 ms SendEmail
    assert_eq!(engine.running_durable().len(), 1);
    assert_eq!(engine.suspend_durable(), 1);
    let (d, e) = (d.await.unwrap(), e.await.unwrap());
    assert_eq!(d.status, nexus_engine::ExecutionStatus::Running, "{:?}", d.error);
    assert!(d.error.as_ref().unwrap().message.contains("continues on another replica"), "{:?}", d.error);
    assert_eq!(e.status, nexus_engine::ExecutionStatus::Succeeded, "{:?}", e.error);
    assert_eq!(*journal.writes.lock().unwrap(), ["start durable_saga", "step first"], "no outcome journaled");
    assert!(!script.trace().contains("DeleteUser"), "nothing compensated:\n{}", script.trace());
    // New durable executions are refused before anything is journaled or called.
    let calls = script.trace().lines().count();
    let refused = engine.execute(request(&durable)).await.unwrap();
    assert_eq!(refused.status, nexus_engine::ExecutionStatus::Failed);
    assert_eq!(refused.error.as_ref().unwrap().code, Code::Unavailable);
    assert_eq!(script.trace().lines().count(), calls);
    assert_eq!(journal.writes.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_key_is_shared_by_the_unary_and_the_stream_paths_and_never_across_tenants() {
    let script = Script::new(&[(CREATE_USER, vec![user_ok()]), (EMAIL, vec![ok(5, serde_json::json!({}))])]);
    let (pattern, _) =
        nexus_core::compile(&document::parse(USER_CREATION).unwrap(), &catalog(), &nexus_core::NoPatterns).unwrap();
    let pattern = Arc::new(pattern);
    let engine = Engine::new(script.clone(), Arc::new(History::new(10)));
    let request = |tenant: &str| ExecuteRequest {
        pattern: pattern.clone(),
        input: value::serde_to_cel(&serde_json::json!({"email": "a@b.c", "name": "Ada"})),
        deadline: None,
        idempotency_key: Some("k".to_string()),
        traceparent: None,
        tenant: Arc::from(tenant),
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
        ..request(&pattern)
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

//! Durable executions survive kill -9: a real `nexus serve` process is killed while a 5-step
//! durable pattern runs, restarted on the same data directory, and must finish the execution
//! without calling the steps it had completed again (counted at the demo services).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nexus_core::pb;
use nexus_demo::method;
use nexus_server::proto::nexus_service_client::NexusServiceClient;
use rand::Rng;

const PATTERN: &str = r#"
name: durable_five
version: 1.0.0
durability: durable
input: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: s1
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}"}
  - id: s2
    call: demo.asset.v1.AssetService/UploadAsset
    with: {owner_id: "${{ steps.s1.user.id }}", source_url: "https://x/a.png"}
  - id: s3
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: "${{ steps.s2.asset.id }}"}
  - id: s4
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "${{ steps.s1.user.id }}", title: "${{ steps.s3.message_id }}"}
  - id: s5
    call: demo.broadcast.v1.BroadcastService/CheckAccess
    with: {broadcast_id: "public-${{ steps.s4.message_id }}", user_id: "${{ steps.s1.user.id }}"}
output:
  user: "${{ steps.s1.user.id }}"
  access: "${{ steps.s5.allowed }}"
"#;

const METHODS: [&str; 5] =
    [method::CREATE_USER, method::UPLOAD_ASSET, method::SEND_EMAIL, method::SEND_PUSH, method::CHECK_ACCESS];

/// A `nexus serve` child process; killed (SIGKILL) on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &Path, backend: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--service"])
        .arg(format!("demo=http://{backend}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env("NEXUS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("nexus printed its address").unwrap();
    let addr = line.split_whitespace().find(|w| w.starts_with("http://")).expect("an address").to_string();
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

async fn client(addr: &str) -> NexusServiceClient<tonic::transport::Channel> {
    NexusServiceClient::connect(addr.to_string()).await.unwrap()
}

fn counts(demo: &nexus_demo::DemoHandle) -> [u64; 5] {
    METHODS.map(|m| demo.calls(m))
}

/// One crash: start the execution, kill -9 Nexus `kill_after` into it (or once step 2 is done,
/// when `None`), restart, wait for the result. Returns the per-step call counts of this execution.
async fn crash_once(demo: &nexus_demo::DemoHandle, backend: &str, kill_after: Option<Duration>, n: usize) -> [u64; 5] {
    let dir = tempfile::tempdir().unwrap();
    let before = counts(demo);
    let server = serve(dir.path(), backend);
    let mut c = client(&server.addr).await;
    c.register_pattern(pb::RegisterPatternRequest { pattern: Some(nexus_core::document::parse(PATTERN).unwrap()) })
        .await
        .unwrap();
    let input = nexus_core::value::serde_to_struct(&serde_json::json!({"email": format!("crash{n}@x.y")}));
    let mut events = c
        .execute_pattern_stream(pb::ExecutePatternRequest {
            pattern_name: "durable_five".into(),
            input,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = events.message().await.unwrap().expect("the started event");
    let id = first.execution_id.clone();
    match kill_after {
        Some(delay) => tokio::time::sleep(delay).await,
        None => loop {
            let e = events.message().await.unwrap().expect("events until s2 succeeds");
            if let Some(pb::execution_event::Event::StepSucceeded(s)) = &e.event
                && s.step_id == "s2"
            {
                break;
            }
        },
    }
    drop(server); // SIGKILL
    drop(events);

    let server = serve(dir.path(), backend);
    let mut c = client(&server.addr).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let execution = loop {
        match c.get_execution(pb::GetExecutionRequest { execution_id: id.clone() }).await {
            Ok(e) if e.get_ref().status == pb::ExecutionStatus::Succeeded as i32 => break e.into_inner(),
            Ok(e) => panic!("execution {id} ended {:?}", e.into_inner()),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(s) => panic!("execution {id} was lost: {s:?}"),
        }
    };
    let output = nexus_core::value::struct_to_serde(&execution.output.unwrap_or_default());
    assert_eq!(output["access"], true, "{output}");
    let after = counts(demo);
    let mut calls = [0; 5];
    for i in 0..5 {
        calls[i] = after[i] - before[i];
    }
    // Every retried call reused the step's idempotency key.
    for (i, m) in METHODS.iter().enumerate() {
        let keys = demo.idempotency_keys(m);
        let mine: Vec<_> = keys.iter().filter(|k| k.starts_with(&id)).collect();
        assert_eq!(mine.len() as u64, calls[i], "{m}: {mine:?}");
        assert!(mine.iter().all(|k| **k == format!("{id}/s{}", i + 1)), "{m}: {mine:?}");
    }
    calls
}

fn slow_demo(demo: &nexus_demo::DemoHandle) {
    for m in METHODS {
        demo.set_latency(m, Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_execution_killed_after_step_two_completes_without_repeating_steps() {
    let (backend, demo, _guard) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await.unwrap();
    slow_demo(&demo);
    let calls = crash_once(&demo, &backend.to_string(), None, 0).await;
    assert_eq!(calls[0], 1, "s1 completed before the kill: not called again ({calls:?})");
    assert_eq!(calls[1], 1, "s2 completed before the kill: not called again ({calls:?})");
    assert!((1..=2).contains(&calls[2]), "s3 was in flight: called at most twice ({calls:?})");
    assert_eq!((calls[3], calls[4]), (1, 1), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_at_random_points_lose_nothing_and_repeat_no_completed_step() {
    let (backend, demo, _guard) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await.unwrap();
    slow_demo(&demo);
    let mut repeated = 0;
    for n in 1..=20 {
        let kill_after = Duration::from_millis(rand::rng().random_range(0..550));
        let calls = crash_once(&demo, &backend.to_string(), Some(kill_after), n).await;
        assert!(calls.iter().all(|&c| (1..=2).contains(&c)), "run {n}, kill at {kill_after:?}: {calls:?}");
        // Only the step in flight at the kill may run twice; completed ones never do.
        let twice = calls.iter().filter(|&&c| c == 2).count();
        assert!(twice <= 1, "run {n}, kill at {kill_after:?}: {calls:?}");
        repeated += twice;
        println!("run {n:>2}: killed after {:>3} ms, calls per step {calls:?}", kill_after.as_millis());
    }
    println!("20 kills: 0 executions lost, {repeated} in-flight step(s) called again, 0 completed steps re-executed");
}

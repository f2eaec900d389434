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
    serve_with(data_dir, backend, &[])
}

fn serve_with(data_dir: &Path, backend: &str, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--service"])
        .arg(format!("demo=http://{backend}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env("NEXUS_LOG", "warn")
        .envs(env.iter().copied())
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

/// Two replicas on PostgreSQL under a steady load of durable executions; one is killed with
/// SIGKILL: every execution started on it completes on the other, within the lease timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_s_executions_are_taken_over_by_another() {
    use sqlx::Connection;
    let url =
        std::env::var("NEXUS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("nexus_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await.unwrap();

    let (backend, demo, _guard) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await.unwrap();
    slow_demo(&demo);
    let backend = backend.to_string();
    let env = [
        ("NEXUS_DATABASE_URL", url.as_str()),
        ("NEXUS_DATABASE_SCHEMA", schema.as_str()),
        ("NEXUS_LEASE_TIMEOUT", "1s"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve_with(dir_a.path(), &backend, &env);
    let b = serve_with(dir_b.path(), &backend, &env);
    let mut ca = client(&a.addr).await;
    ca.register_pattern(pb::RegisterPatternRequest { pattern: Some(nexus_core::document::parse(PATTERN).unwrap()) })
        .await
        .unwrap();

    // A steady load on A: a new durable execution every 40 ms.
    let mut ids = Vec::new();
    let mut streams = Vec::new();
    for n in 0..12 {
        let input = nexus_core::value::serde_to_struct(&serde_json::json!({"email": format!("takeover{n}@x.y")}));
        let mut events = ca
            .execute_pattern_stream(pb::ExecutePatternRequest {
                pattern_name: "durable_five".into(),
                input,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(events.message().await.unwrap().unwrap().execution_id);
        streams.push(events);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    drop(a); // SIGKILL, with executions at every step
    let killed = Instant::now();
    drop(streams);

    let mut cb = client(&b.addr).await;
    let mut first_done = None;
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match cb.get_execution(pb::GetExecutionRequest { execution_id: id.clone() }).await {
                Ok(e) if e.get_ref().status == pb::ExecutionStatus::Succeeded as i32 => break,
                Ok(e) => panic!("{id} ended {:?}", e.into_inner().status),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(s) => panic!("{id} was lost: {s:?}"),
            }
        }
        first_done.get_or_insert_with(|| killed.elapsed());
    }
    let all_done = killed.elapsed();
    for (i, m) in METHODS.iter().enumerate() {
        let keys = demo.idempotency_keys(m);
        for id in &ids {
            let n = keys.iter().filter(|k| **k == format!("{id}/s{}", i + 1)).count();
            assert!((1..=2).contains(&n), "{id} step s{}: {n} calls", i + 1);
        }
    }
    println!(
        "replica killed with {} durable executions in flight: first finished on the other replica after {:?}, all after {:?} (lease timeout 1s)",
        ids.len(),
        first_done.unwrap_or_default(),
        all_done
    );
    assert!(all_done < Duration::from_secs(8), "take-over took {all_done:?}");
    drop(b);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut admin).await.unwrap();
}

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

/// Waits for the execution to succeed (it may be running, here or on another replica, or not
/// visible yet while it is being taken over); panics if it ends otherwise or is lost.
async fn succeeded(c: &mut NexusServiceClient<tonic::transport::Channel>, id: &str, within: Duration) -> pb::Execution {
    let deadline = Instant::now() + within;
    loop {
        let running = match c.get_execution(pb::GetExecutionRequest { execution_id: id.to_string() }).await {
            Ok(e) if e.get_ref().status == pb::ExecutionStatus::Succeeded as i32 => return e.into_inner(),
            Ok(e) if e.get_ref().status == pb::ExecutionStatus::Running as i32 => format!("{:?}", e.get_ref().steps),
            Ok(e) => panic!("execution {id} ended {:?}", e.into_inner()),
            Err(s) => format!("{s:?}"),
        };
        assert!(Instant::now() < deadline, "execution {id} did not finish within {within:?}: {running}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `condition` holds, checking every 10 ms; panics naming `what` after `within`.
async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    register_pattern(&mut c).await;
    let mut events = start_durable(&mut c, &format!("crash{n}@x.y")).await;
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
    let execution = succeeded(&mut c, &id, Duration::from_secs(20)).await;
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

/// An OTLP/gRPC collector: the spans it receives go to the channel.
struct Collector(tokio::sync::mpsc::UnboundedSender<opentelemetry_proto::tonic::trace::v1::Span>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        for span in request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans) {
            let _ = self.0.send(span);
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A durable execution killed mid-way and resumed by the next process stays in its caller's trace,
/// as the same span: the steps called after the restart carry the caller's trace id to the
/// backend, and the resumed process exports the execution span under the caller's span with
/// those attempts as its children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_durable_execution_continues_its_callers_trace() {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::trace_service_server::TraceServiceServer, trace::v1::span::SpanKind,
    };
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";

    let (backend, demo, _guard) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await.unwrap();
    slow_demo(&demo);
    let backend = backend.to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut spans) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &backend);
    let mut c = client(&server.addr).await;
    register_pattern(&mut c).await;
    let input = nexus_core::value::serde_to_struct(&serde_json::json!({ "email": "traced@x.y" }));
    let mut request = tonic::Request::new(pb::ExecutePatternRequest {
        pattern_name: "durable_five".into(),
        input,
        ..Default::default()
    });
    request.metadata_mut().insert("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01").parse().unwrap());
    request.metadata_mut().insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
    let mut events = c.execute_pattern_stream(request).await.unwrap().into_inner();
    let id = events.message().await.unwrap().expect("the started event").execution_id;
    loop {
        let e = events.message().await.unwrap().expect("events until s2 succeeds");
        if let Some(pb::execution_event::Event::StepSucceeded(s)) = &e.event
            && s.step_id == "s2"
        {
            break;
        }
    }
    drop(server); // SIGKILL: nothing of this process's spans is exported
    drop(events);
    // The execution's span, as the killed process journaled it.
    let journaled: String = {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("nexus.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT trace FROM executions WHERE id = ?1").bind(&id).fetch_one(&mut db).await.unwrap()
    };
    assert!(journaled.starts_with(&format!("00-{TRACE}-")), "{journaled}");
    let execution_span = journaled[36..52].to_string();

    let server = serve_with(dir.path(), &backend, &[("NEXUS_OTLP_ENDPOINT", &collector)]);
    let mut c = client(&server.addr).await;
    succeeded(&mut c, &id, Duration::from_secs(20)).await;

    // The resumed execution's span: the caller's trace and span as parent, its tracestate kept.
    // Spans come in batches, in no set order: collect until the execution's span and the attempts
    // of the steps run after the restart have all arrived.
    let mut received: Vec<opentelemetry_proto::tonic::trace::v1::Span> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let complete = |spans: &[opentelemetry_proto::tonic::trace::v1::Span]| {
        spans.iter().any(|s| s.kind == SpanKind::Server as i32)
            && [method::SEND_PUSH, method::CHECK_ACCESS].iter().all(|m| spans.iter().any(|s| s.name == *m))
    };
    while !complete(&received) {
        match tokio::time::timeout_at(deadline, spans.recv()).await {
            Ok(Some(span)) => received.push(span),
            _ => panic!("the spans did not all arrive within 10 s: {received:#?}"),
        }
    }
    let execution = received.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap();
    assert_eq!(hex(&execution.trace_id), TRACE, "{execution:?}");
    assert_eq!(hex(&execution.parent_span_id), CALLER_SPAN, "{execution:?}");
    assert_eq!(execution.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(hex(&execution.span_id), execution_span, "the resumed execution is the span it was");
    // Steps s3..s5 ran after the restart, each call carrying its attempt's span in the same trace.
    for m in [method::SEND_PUSH, method::CHECK_ACCESS] {
        let seen = demo.last_traceparent(m).expect("a traceparent");
        assert!(seen.starts_with(&format!("00-{TRACE}-")), "{m} was called outside the caller's trace: {seen}");
        let attempt = received.iter().find(|s| s.name == m).unwrap_or_else(|| panic!("no span for {m}: {received:#?}"));
        assert_eq!(hex(&attempt.trace_id), TRACE);
        assert_eq!(attempt.parent_span_id, execution.span_id, "an attempt is the execution's child");
        assert_eq!(seen, format!("00-{TRACE}-{}-01", hex(&attempt.span_id)));
    }
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

/// A schema of its own in the test database for one test (dropped by [`PgSchema::drop_now`]).
struct PgSchema {
    url: String,
    schema: String,
    admin: sqlx::PgConnection,
}

impl PgSchema {
    async fn new() -> Self {
        use sqlx::Connection;
        let url = std::env::var("NEXUS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("nexus_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await.unwrap();
        Self { url, schema, admin }
    }

    async fn drop_now(mut self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema)).execute(&mut self.admin).await.unwrap();
    }
}

async fn start_durable(
    c: &mut NexusServiceClient<tonic::transport::Channel>,
    email: &str,
) -> tonic::Streaming<pb::ExecutionEvent> {
    let input = nexus_core::value::serde_to_struct(&serde_json::json!({ "email": email }));
    c.execute_pattern_stream(pb::ExecutePatternRequest {
        pattern_name: "durable_five".into(),
        input,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// Registers the 5-step durable pattern (`tests/data/durable_five.yaml`).
async fn register_pattern(c: &mut NexusServiceClient<tonic::transport::Channel>) {
    let text = include_str!("data/durable_five.yaml");
    c.register_pattern(pb::RegisterPatternRequest { pattern: Some(nexus_core::document::parse(text).unwrap()) })
        .await
        .unwrap();
}

/// Starts `n` durable executions `gap` apart; returns their ids and event streams.
async fn start_many(
    c: &mut NexusServiceClient<tonic::transport::Channel>,
    tag: &str,
    n: usize,
    gap: Duration,
) -> (Vec<String>, Vec<tonic::Streaming<pb::ExecutionEvent>>) {
    let (mut ids, mut streams) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut events = start_durable(c, &format!("{tag}{i}@x.y")).await;
        ids.push(events.message().await.unwrap().unwrap().execution_id);
        streams.push(events);
        tokio::time::sleep(gap).await;
    }
    (ids, streams)
}

/// The `finished` event a stream ends with.
async fn final_event(events: &mut tonic::Streaming<pb::ExecutionEvent>) -> pb::ExecutePatternResponse {
    loop {
        match events.message().await {
            Ok(Some(e)) => {
                if let Some(pb::execution_event::Event::Finished(f)) = e.event {
                    return f;
                }
            }
            other => panic!("the stream ended without a final event: {other:?}"),
        }
    }
}

/// Every step of every execution was called once or twice (twice only when it was in flight at a
/// hand-over), always with that step's idempotency key.
fn assert_steps_called_once_or_twice(demo: &nexus_demo::DemoHandle, ids: &[String]) {
    for (i, m) in METHODS.iter().enumerate() {
        let keys = demo.idempotency_keys(m);
        for id in ids {
            let n = keys.iter().filter(|k| **k == format!("{id}/s{}", i + 1)).count();
            assert!((1..=2).contains(&n), "{id} step s{}: {n} calls", i + 1);
        }
    }
}

/// SIGTERM hands durable executions back at once: with a 10 s lease, the other replica finishes
/// them all long before the lease could have run out, and the stopping replica exits promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_durable_executions_to_another_replica_at_once() {
    let db = PgSchema::new().await;
    let (backend, demo, _guard) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await.unwrap();
    slow_demo(&demo);
    let backend = backend.to_string();
    let env = [
        ("NEXUS_DATABASE_URL", db.url.as_str()),
        ("NEXUS_DATABASE_SCHEMA", db.schema.as_str()),
        ("NEXUS_LEASE_TIMEOUT", "10s"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = serve_with(dir_a.path(), &backend, &env);
    let b = serve_with(dir_b.path(), &backend, &env);
    let mut ca = client(&a.addr).await;
    register_pattern(&mut ca).await;
    let (ids, streams) = start_many(&mut ca, "term", 8, Duration::from_millis(30)).await;
    let status = Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let termed = Instant::now();

    // The callers on A hear that their execution moved on (it has no outcome here).
    for mut events in streams {
        let last = final_event(&mut events).await;
        assert_eq!(last.status, pb::ExecutionStatus::Running as i32, "{last:?}");
        assert!(last.error.unwrap().message.contains("continues on another replica"));
    }
    let exit = loop {
        if let Some(s) = a.child.try_wait().unwrap() {
            break s;
        }
        assert!(termed.elapsed() < Duration::from_secs(5), "the replica did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let exited = termed.elapsed();

    let mut cb = client(&b.addr).await;
    for id in &ids {
        succeeded(&mut cb, id, Duration::from_secs(20)).await;
    }
    let all_done = termed.elapsed();
    assert_steps_called_once_or_twice(&demo, &ids);
    println!(
        "SIGTERM with {} durable executions in flight: replica exited after {exited:?}, all finished on the other after {all_done:?} (lease timeout 10s)",
        ids.len()
    );
    assert!(all_done < Duration::from_secs(3), "hand-over took {all_done:?}: the leases were not released");
    drop(b);
    db.drop_now().await;
}

/// A TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones: a
/// database outage, as the replica sees it.
struct Outage {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections refused while the database was away: the replica trying to reach it.
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Outage {
    async fn proxy(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, refused2, conns2) = (up.clone(), refused.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    refused2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    continue; // dropped: connection reset
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns2.lock().unwrap().push(h);
            }
        });
        Self { addr, up, refused, conns }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The database goes away while durable executions run, until the replica has been refused by it
/// several times (its journal writes failing and retried with backoff): the writes wait for it,
/// and every execution succeeds once it is back; nothing is lost or failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_during_operation_delays_durable_executions_but_loses_none() {
    let db = PgSchema::new().await;
    let parsed = url::Url::parse(&db.url).unwrap();
    let target = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap_or(5432));
    let outage = Outage::proxy(target).await;
    let mut proxied = parsed.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(outage.addr.port())).unwrap();
    let proxied = proxied.to_string();

    let (backend, demo, _guard) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await.unwrap();
    slow_demo(&demo);
    let env = [("NEXUS_DATABASE_URL", proxied.as_str()), ("NEXUS_DATABASE_SCHEMA", db.schema.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &backend.to_string(), &env);
    let mut c = client(&server.addr).await;
    register_pattern(&mut c).await;
    let (ids, streams) = start_many(&mut c, "outage", 6, Duration::ZERO).await;
    eventually(Duration::from_secs(5), "the first step of every execution called", || {
        demo.calls(method::CREATE_USER) >= ids.len() as u64
    })
    .await;
    outage.cut();
    let cut = Instant::now();
    // The first steps end while the database is away: their results cannot be journaled, so no
    // execution may start its second step (UploadAsset) until the database is back, however many
    // times the replica retries.
    eventually(Duration::from_secs(5), "every first step answered", || demo.in_flight(method::CREATE_USER) == 0).await;
    let (uploads, refused) = (demo.calls(method::UPLOAD_ASSET), outage.refused());
    eventually(Duration::from_secs(10), "the replica refused by the database 3 more times", || {
        outage.refused() >= refused + 3
    })
    .await;
    assert_eq!(demo.calls(method::UPLOAD_ASSET), uploads, "a step started before its dependency was journaled");
    let down = cut.elapsed();
    outage.restore();
    let restored = Instant::now();
    // Each caller's stream ends with success: the executions waited for the database.
    for (id, mut events) in ids.iter().zip(streams) {
        let last = final_event(&mut events).await;
        assert_eq!(last.status, pb::ExecutionStatus::Succeeded as i32, "{id}: {last:?}");
    }
    for id in &ids {
        succeeded(&mut c, id, Duration::from_secs(10)).await;
    }
    assert_steps_called_once_or_twice(&demo, &ids);
    println!(
        "{down:?} database outage ({} connections refused) with {} durable executions in flight: all succeeded {:?} after it ended",
        outage.refused(),
        ids.len(),
        restored.elapsed()
    );
    drop(server);
    db.drop_now().await;
}

/// Two replicas on PostgreSQL under a steady load of durable executions; one is killed with
/// SIGKILL: every execution started on it completes on the other, within the lease timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_s_executions_are_taken_over_by_another() {
    let db = PgSchema::new().await;
    let (url, schema) = (db.url.clone(), db.schema.clone());

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
    register_pattern(&mut ca).await;
    // A steady load on both replicas: a new durable execution every 40 ms on each, on B before,
    // during and after the kill of A.
    let mut cb = client(&b.addr).await;
    let load_on_b = tokio::spawn({
        let mut cb = cb.clone();
        async move { start_many(&mut cb, "steady", 60, Duration::from_millis(40)).await }
    });
    let (ids, streams) = start_many(&mut ca, "takeover", 12, Duration::from_millis(40)).await;
    drop(a); // SIGKILL, with executions at every step
    let killed = Instant::now();
    drop(streams);

    let mut first_done = None;
    for id in &ids {
        succeeded(&mut cb, id, Duration::from_secs(20)).await;
        first_done.get_or_insert_with(|| killed.elapsed());
    }
    let all_done = killed.elapsed();
    assert_steps_called_once_or_twice(&demo, &ids);
    // B's own load went on undisturbed.
    let (steady, mut streams) = load_on_b.await.unwrap();
    for (id, events) in steady.iter().zip(streams.iter_mut()) {
        let last = final_event(events).await;
        assert_eq!(last.status, pb::ExecutionStatus::Succeeded as i32, "{id}: {last:?}");
    }
    println!(
        "replica killed with {} durable executions in flight (and {} more started on the other meanwhile): first finished on the other replica after {:?}, all after {:?} (lease timeout 1s)",
        ids.len(),
        steady.len(),
        first_done.unwrap_or_default(),
        all_done
    );
    assert!(all_done < Duration::from_secs(8), "take-over took {all_done:?}");
    drop(b);
    db.drop_now().await;
}

/// Events under fire: 10,000 events (and 2,000 more publications of earlier identities: 20 %
/// duplicates) published through replica A while replica B — the other consumer of the same
/// JetStream stream, on the same PostgreSQL — is killed with SIGKILL every 2 s and restarted.
/// Each event must start exactly one durable execution, and the backend must see one distinct
/// idempotency key per event (CreateUser de-duplicates by key, and refuses a second user with the
/// same email: a second execution for one event would fail). `NEXUS_CHAOS_EVENTS` sets the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_a_consumer_replica_is_killed_trigger_exactly_once() {
    let events: usize = std::env::var("NEXUS_CHAOS_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let duplicates = events / 5;
    let db = PgSchema::new().await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("NEXUS_CHAOS_{unique}");
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let (backend, demo, _guard) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await.unwrap();
    let backend = backend.to_string();
    let (consumer, prefix) = (format!("router-{unique}"), format!("chaos.{unique}.events"));
    let env = [
        ("NEXUS_DATABASE_URL", db.url.as_str()),
        ("NEXUS_DATABASE_SCHEMA", db.schema.as_str()),
        ("NEXUS_LEASE_TIMEOUT", "1s"),
        ("NEXUS_EVENTS_URL", nats.as_str()),
        ("NEXUS_EVENTS_STREAM", stream.as_str()),
        ("NEXUS_EVENTS_CONSUMER", consumer.as_str()),
        ("NEXUS_EVENTS_SUBJECT_PREFIX", prefix.as_str()),
        ("NEXUS_EVENTS_ACK_WAIT", "2s"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve_with(dir_a.path(), &backend, &env);
    let mut ca = client(&a.addr).await;
    let doc = r#"
name: chaos_signup
version: 1.0.0
durability: durable
on: [{event: chaos.signup, input: {email: "${{ event.data.email }}"}}]
input: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: "chaos"}
"#;
    let pattern = nexus_core::document::parse(doc).unwrap();
    ca.register_pattern(pb::RegisterPatternRequest { pattern: Some(pattern) }).await.unwrap();

    // B: killed every 2 s and started again, until the publishing is done.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = std::thread::spawn({
        let (stop, backend, dir) = (stop.clone(), backend.clone(), dir_b.path().to_path_buf());
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut kills = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let b = serve_with(&dir, &backend, &env);
                std::thread::sleep(Duration::from_secs(2));
                drop(b); // SIGKILL
                kills += 1;
            }
            kills
        }
    });

    let publish = |n: usize| pb::PublishEventRequest {
        event: Some(pb::Event {
            r#type: "chaos.signup".into(),
            source: "chaos/test".into(),
            id: format!("signup-{n}"),
            data: nexus_core::value::serde_to_struct(&serde_json::json!({"email": format!("chaos-{n}@example.com")})),
            ..Default::default()
        }),
    };
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut duplicates_seen = 0usize;
    for i in 0..events + duplicates {
        // Every fifth publication repeats an earlier identity.
        let n = if i % 6 == 5 { rand::rng().random_range(0..i.min(events).max(1)) } else { i - i / 6 };
        if tasks.len() >= 16 {
            duplicates_seen += tasks.join_next().await.unwrap().unwrap();
        }
        let mut c = ca.clone();
        let request = publish(n.min(events - 1));
        tasks.spawn(async move { usize::from(c.publish_event(request).await.unwrap().into_inner().duplicate) });
    }
    while let Some(r) = tasks.join_next().await {
        duplicates_seen += r.unwrap();
    }
    let published = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.join().unwrap();

    // Every event's execution finishes (on A, or resumed after a kill), and nothing more.
    let distinct =
        || demo.idempotency_keys(method::CREATE_USER).into_iter().collect::<std::collections::HashSet<_>>().len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while distinct() < events {
        assert!(Instant::now() < deadline, "{} of {events} events reached the backend", distinct());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut succeeded = 0;
    let mut token = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = ca
            .list_executions(pb::ListExecutionsRequest {
                pattern_name: "chaos_signup".into(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for e in &page.executions {
            assert_ne!(e.status, pb::ExecutionStatus::Failed as i32, "{e:?}");
            succeeded += usize::from(e.status == pb::ExecutionStatus::Succeeded as i32);
        }
        if page.next_page_token.is_empty() {
            if succeeded == events {
                break;
            }
            assert!(Instant::now() < deadline, "{succeeded} of {events} executions succeeded");
            succeeded = 0;
            token.clear();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        token = page.next_page_token;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // a late redelivery would show now
    assert_eq!(distinct(), events, "one execution per event reached the backend");
    println!(
        "{events} events + {duplicates} duplicate publications ({duplicates_seen} answered duplicate) in {published:?} while replica B was killed {kills} times: {succeeded} executions, {} distinct idempotency keys at the backend, {} CreateUser calls",
        distinct(),
        demo.calls(method::CREATE_USER)
    );
    drop(a);
    let client = async_nats::connect(&nats).await.unwrap();
    let _ = async_nats::jetstream::new(client).delete_stream(&stream).await;
    db.drop_now().await;
}

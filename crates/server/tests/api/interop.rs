//! Interop: Nexus in front of real backends of other gRPC stacks — a Python grpcio process, a
//! Node grpc-js process and a Go grpc-go process (installed by `bash scripts/interop-setup.sh`),
//! and tonic — each
//! discovered by its stock server reflection alone (Nexus is given no descriptors) and driven
//! through the same checks: unary call, server streaming forwarded with `stream: true`, an error
//! with rich status details, the metadata and the deadline the backend received, and a retry on
//! UNAVAILABLE. Every backend implements `interop/proto/interop/v1/interop.proto`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    process::Stdio,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::{Stream, StreamExt, future::BoxFuture};
use nexus_core::pb;
use nexus_server::{
    Config, DynamicCodec, Nexus, RpcStatus, ServiceConfig, proto::nexus_service_client::NexusServiceClient,
};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, ServiceDescriptor, Value};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};
use tonic::{Status, server::NamedService, transport::Channel};

use crate::common::{Client, execute_request, get_execution, pattern, register, step, to_json};

const SERVICE: &str = "interop.v1.InteropService";
const SETUP_HINT: &str = "run `bash scripts/interop-setup.sh` first (it installs Python grpcio into .interop/venv, \
                          Node grpc-js into interop/node/node_modules and builds grpc-go into .interop/go)";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Clone, Copy, Debug)]
enum Stack {
    Grpcio,
    GrpcJs,
    GrpcGo,
    Tonic,
}

impl Stack {
    /// What the backend says it is (`EchoReply.server`); also its backend name in Nexus.
    fn server(self) -> &'static str {
        match self {
            Self::Grpcio => "grpcio",
            Self::GrpcJs => "grpc-js",
            Self::GrpcGo => "grpc-go",
            Self::Tonic => "tonic",
        }
    }
}

/// A running interop backend; dropping it stops it (the child is killed on drop, and it also
/// exits when its stdin — held here — closes).
struct Backend {
    addr: SocketAddr,
    _child: Option<Child>,
    _stop: Option<oneshot::Sender<()>>,
}

async fn start_backend(stack: Stack, extra_args: &[&str]) -> Result<Backend> {
    let root = repo_root();
    let (program, script) = match stack {
        Stack::Grpcio => {
            let python = root.join(".interop/venv/bin/python");
            ensure!(python.exists(), "{} is missing: {SETUP_HINT}", python.display());
            (python, Some(root.join("interop/python/server.py")))
        }
        Stack::GrpcJs => {
            let modules = root.join("interop/node/node_modules/@grpc/grpc-js");
            ensure!(modules.exists(), "{} is missing: {SETUP_HINT}", modules.display());
            (PathBuf::from("node"), Some(root.join("interop/node/server.js")))
        }
        Stack::GrpcGo => {
            let binary = root.join(".interop/go/interop-server");
            ensure!(binary.exists(), "{} is missing: {SETUP_HINT}", binary.display());
            (binary, None)
        }
        Stack::Tonic => return start_tonic().await,
    };
    let mut child = Command::new(&program)
        .args(&script)
        .args(extra_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} ({SETUP_HINT})", program.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut first = String::new();
    // grpcio compiles the .proto at start; allow for a slow, busy machine.
    tokio::time::timeout(Duration::from_secs(60), BufReader::new(stdout).read_line(&mut first))
        .await
        .with_context(|| format!("{} printed no port within 60s", stack.server()))??;
    let port: u16 = first
        .trim()
        .parse()
        .with_context(|| format!("{} printed {first:?} instead of its port (see its stderr above)", stack.server()))?;
    Ok(Backend { addr: SocketAddr::from(([127, 0, 0, 1], port)), _child: Some(child), _stop: None })
}

/// Nexus (embedded, in memory) with the one backend plugged in by address only.
async fn start_nexus(stack: Stack, backend: SocketAddr) -> Result<(Nexus, Client)> {
    let mut config = Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), in_memory: true, ..Config::default() };
    config.discovery_timeout = Duration::from_secs(20);
    config.services.push(ServiceConfig::from_flag(&format!("{}=http://{backend}", stack.server()))?);
    let nexus = Nexus::start(config).await.with_context(|| format!("starting nexus in front of {}", stack.server()))?;
    let client = NexusServiceClient::connect(format!("http://{}", nexus.local_addr())).await?;
    Ok((nexus, client))
}

/// Every check against one stack.
async fn check_stack(stack: Stack) -> Result<()> {
    let backend = start_backend(stack, &[]).await?;
    let (nexus, mut client) = start_nexus(stack, backend.addr).await?;
    check_discovery(&mut client, stack).await.context("discovery by reflection")?;
    check_unary(&mut client, stack).await.context("unary call")?;
    check_stream(&mut client, stack).await.context("server streaming")?;
    check_error(&mut client, stack).await.context("error with status details")?;
    check_error_details_direct(backend.addr, stack).await.context("the backend's rich status details")?;
    check_metadata_and_deadline(&mut client, stack).await.context("metadata and deadline")?;
    check_retry(&mut client, stack).await.context("retry on UNAVAILABLE")?;
    nexus.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test]
async fn interop_grpcio() -> Result<()> {
    check_stack(Stack::Grpcio).await
}

#[tokio::test]
async fn interop_grpc_js() -> Result<()> {
    check_stack(Stack::GrpcJs).await
}

#[tokio::test]
async fn interop_grpc_go() -> Result<()> {
    check_stack(Stack::GrpcGo).await
}

#[tokio::test]
async fn interop_tonic() -> Result<()> {
    check_stack(Stack::Tonic).await
}

/// What a backend answers to list_services under one reflection name: the services it lists,
/// or the status it failed with.
async fn list_services(backend: SocketAddr, reflection: &str) -> Result<std::result::Result<Vec<String>, Status>> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, ServerReflectionResponse, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };
    let channel = Channel::from_shared(format!("http://{backend}"))?.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path: http::uri::PathAndQuery = format!("/{reflection}.ServerReflection/ServerReflectionInfo").parse()?;
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    // v1 and v1alpha messages are the same on the wire.
    let codec = tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
    let first = match grpc.streaming(tonic::Request::new(futures::stream::iter([list])), path, codec).await {
        Ok(r) => r.into_inner().next().await.ok_or_else(|| anyhow!("no answer under {reflection}"))?,
        Err(e) => Err(e),
    };
    Ok(first.map(|r| match r.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        _ => Vec::new(),
    }))
}

/// Which reflection names each stack serves, so that the stack tests above prove what they
/// claim: grpcio (1.85) and Debian's grpc-go (1.33) serve only `grpc.reflection.v1alpha` — they
/// pass through the fallback — and grpc-js serves v1 (and v1alpha), the path taken first.
#[tokio::test]
async fn interop_reflection_names_each_stack_serves() -> Result<()> {
    for (stack, v1) in [(Stack::Grpcio, false), (Stack::GrpcGo, false), (Stack::GrpcJs, true)] {
        let backend = start_backend(stack, &[]).await?;
        let answer = list_services(backend.addr, "grpc.reflection.v1").await?;
        if v1 {
            ensure!(
                answer.as_ref().is_ok_and(|l| l.iter().any(|s| s == SERVICE)),
                "{}: grpc.reflection.v1 answered {answer:?}",
                stack.server()
            );
        } else {
            ensure!(
                answer.as_ref().is_err_and(|s| s.code() == tonic::Code::Unimplemented),
                "{} answered grpc.reflection.v1 with {answer:?}; if it now serves v1, the fallback needs another \
                 v1alpha-only backend to be tested with (and the README its update)",
                stack.server()
            );
        }
        let answer = list_services(backend.addr, "grpc.reflection.v1alpha").await?;
        ensure!(
            answer.as_ref().is_ok_and(|l| l.iter().any(|s| s == SERVICE)),
            "{}: grpc.reflection.v1alpha answered {answer:?}",
            stack.server()
        );
    }
    Ok(())
}

/// A backend without reflection stops Nexus with one error naming the backend, its endpoint,
/// both reflection names and what each answered.
#[tokio::test]
async fn interop_grpcio_without_reflection_fails_clearly() -> Result<()> {
    let backend = start_backend(Stack::Grpcio, &["--reflection", "none"]).await?;
    let mut config = Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), in_memory: true, ..Config::default() };
    config.services.push(ServiceConfig::from_flag(&format!("py=http://{}", backend.addr))?);
    let err = match Nexus::start(config).await {
        Ok(nexus) => {
            nexus.shutdown(Duration::from_secs(1)).await;
            bail!("nexus started against a backend without reflection");
        }
        Err(e) => e.to_string(),
    };
    for part in [
        format!("backend `py` (http://{})", backend.addr),
        "grpc.reflection.v1: UNIMPLEMENTED".to_string(),
        "grpc.reflection.v1alpha: UNIMPLEMENTED".to_string(),
        "descriptor_set".to_string(),
    ] {
        ensure!(err.contains(&part), "the error lacks `{part}`: {err}");
    }
    Ok(())
}

async fn check_discovery(client: &mut Client, stack: Stack) -> Result<()> {
    let services = client.list_services(pb::ListServicesRequest {}).await?.into_inner().services;
    let service = services
        .iter()
        .find(|s| s.name == SERVICE)
        .ok_or_else(|| anyhow!("{SERVICE} not in the catalog: {services:?}"))?;
    ensure!(service.backend == stack.server(), "backend {}", service.backend);
    ensure!(service.source == "reflection", "source {}", service.source);
    let mut actions: Vec<&str> = service.actions.iter().map(|a| a.method.as_str()).collect();
    actions.sort_unstable();
    ensure!(actions == ["Count", "Echo", "Fail", "Flaky", "Inspect"], "actions {actions:?}");
    let count = service.actions.iter().find(|a| a.method == "Count").ok_or_else(|| anyhow!("no Count"))?;
    ensure!(count.server_streaming, "Count is not server streaming: {count:?}");
    let echo = service.actions.iter().find(|a| a.method == "Echo").ok_or_else(|| anyhow!("no Echo"))?;
    ensure!(echo.input_type == "interop.v1.EchoRequest", "Echo input {}", echo.input_type);
    Ok(())
}

async fn check_unary(client: &mut Client, stack: Stack) -> Result<()> {
    let doc = pattern(
        r#"
name: interop_echo
version: 1.0.0
input: {type: object, required: [text], properties: {text: {type: string}}}
steps:
  - id: echo
    call: interop.v1.InteropService/Echo
    with:
      text: "${{ input.text }}"
      attributes: {suite: interop, n: 2}
      sent_at: "2026-01-02T03:04:05Z"
      labels: {team: nexus}
output:
  text: "${{ steps.echo.text }}"
  server: "${{ steps.echo.server }}"
  suite: "${{ steps.echo.attributes.suite }}"
  sent_at: "${{ steps.echo.sent_at }}"
  team: "${{ steps.echo.labels.team }}"
"#,
    )?;
    let registered = register(client, doc).await?;
    ensure!(registered.diagnostics.is_empty(), "diagnostics: {:?}", registered.diagnostics);
    let text = format!("hello {}", stack.server());
    let response =
        client.execute_pattern(execute_request("interop_echo", serde_json::json!({"text": text}))?).await?.into_inner();
    let output = to_json(&response.output.unwrap_or_default());
    let expected = serde_json::json!({
        "text": text, "server": stack.server(), "suite": "interop", "sent_at": "2026-01-02T03:04:05Z",
        "team": "nexus"
    });
    ensure!(output == expected, "output {output}, expected {expected}");

    // A message of 2.5 MiB each way: far beyond the 64 KiB an HTTP/2 stream may send before the
    // backend's first WINDOW_UPDATE (Nexus's request waits for the backend's window), and beyond
    // the 2 MiB window Nexus grants a response (Nexus gives it back as it reads).
    let big: String = (0..5 * 512 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let response =
        client.execute_pattern(execute_request("interop_echo", serde_json::json!({"text": big}))?).await?.into_inner();
    let output = to_json(&response.output.unwrap_or_default());
    ensure!(
        output["text"].as_str() == Some(big.as_str()),
        "a {} byte echo came back as {} bytes",
        big.len(),
        output["text"].as_str().map_or(0, str::len)
    );
    Ok(())
}

async fn check_stream(client: &mut Client, stack: Stack) -> Result<()> {
    let doc = pattern(
        r#"
name: interop_count
version: 1.0.0
input: {type: object, properties: {count: {type: integer}}}
steps:
  - id: count
    call: interop.v1.InteropService/Count
    stream: true
    with: {count: "${{ input.count }}", interval_ms: 20}
output:
  last: "${{ steps.count.text }}"
"#,
    )?;
    register(client, doc).await?;
    let mut stream = client
        .execute_pattern_stream(execute_request("interop_count", serde_json::json!({"count": 4}))?)
        .await?
        .into_inner();
    let mut texts = Vec::new();
    let mut finished = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .context("no event within 20s")?
        .transpose()?
    {
        match event.event {
            Some(pb::execution_event::Event::Message(m)) => {
                ensure!(m.step_id == "count", "message from step {}", m.step_id);
                ensure!(m.index == texts.len() as u64, "message index {} after {} messages", m.index, texts.len());
                let json = to_json(&m.message.unwrap_or_default());
                texts.push(json.get("text").and_then(|t| t.as_str()).unwrap_or_default().to_string());
            }
            Some(pb::execution_event::Event::Finished(f)) => finished = Some(f),
            _ => {}
        }
    }
    let expected: Vec<String> = (0..4).map(|i| format!("{} {i}", stack.server())).collect();
    ensure!(texts == expected, "forwarded {texts:?}, expected {expected:?}");
    let finished = finished.ok_or_else(|| anyhow!("no finished event"))?;
    ensure!(finished.status == pb::ExecutionStatus::Succeeded as i32, "{finished:?}");
    let output = to_json(&finished.output.unwrap_or_default());
    ensure!(output == serde_json::json!({"last": format!("{} 3", stack.server())}), "output {output}");
    Ok(())
}

async fn check_error(client: &mut Client, stack: Stack) -> Result<()> {
    let doc = pattern(
        r#"
name: interop_fail
version: 1.0.0
input: {type: object, properties: {message: {type: string}}}
steps:
  - id: fail
    call: interop.v1.InteropService/Fail
    with: {code: 9, message: "${{ input.message }}"}
"#,
    )?;
    register(client, doc).await?;
    let message = format!("the ledger of {} is closed", stack.server());
    let status =
        match client.execute_pattern(execute_request("interop_fail", serde_json::json!({"message": message}))?).await {
            Ok(r) => bail!("the failing pattern succeeded: {:?}", r.into_inner()),
            Err(s) => s,
        };
    ensure!(status.code() == tonic::Code::FailedPrecondition, "code {:?}: {status:?}", status.code());
    ensure!(status.message().contains(&message), "message {:?} lacks {message:?}", status.message());
    let rpc = RpcStatus::decode(status.details()).context("Nexus's status details")?;
    let any = rpc.details.first().ok_or_else(|| anyhow!("no details"))?;
    let response = pb::ExecutePatternResponse::decode(any.value.as_slice())?;
    let error = response.error.clone().ok_or_else(|| anyhow!("no error in {response:?}"))?;
    ensure!(error.code == "FAILED_PRECONDITION" && error.step_id == "fail", "{error:?}");
    ensure!(error.message.contains(&message), "{error:?}");
    Ok(())
}

/// google.rpc.ErrorInfo, for reading the backends' rich details.
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: HashMap<String, String>,
}

/// The backend itself answers Fail with a google.rpc.Status carrying an ErrorInfo in
/// `grpc-status-details-bin` — so the error Nexus mapped above really had rich details.
async fn check_error_details_direct(backend: SocketAddr, stack: Stack) -> Result<()> {
    let pool = interop_descriptors()?;
    let method = method(&pool, "Fail")?;
    let mut request = DynamicMessage::new(method.input());
    request.set_field_by_name("code", Value::I32(9));
    request.set_field_by_name("message", Value::String("direct".into()));
    let channel = Channel::from_shared(format!("http://{backend}"))?.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/interop.v1.InteropService/Fail");
    let status = match grpc.unary(tonic::Request::new(request), path, DynamicCodec(method.output())).await {
        Ok(_) => bail!("Fail succeeded"),
        Err(s) => s,
    };
    ensure!(status.code() == tonic::Code::FailedPrecondition, "{status:?}");
    let rpc = RpcStatus::decode(status.details()).context("grpc-status-details-bin is not a google.rpc.Status")?;
    ensure!(rpc.code == 9 && rpc.message == "direct", "{rpc:?}");
    let any = rpc.details.first().ok_or_else(|| anyhow!("no details in {rpc:?}"))?;
    ensure!(any.type_url == "type.googleapis.com/google.rpc.ErrorInfo", "{}", any.type_url);
    let info = ErrorInfo::decode(any.value.as_slice())?;
    ensure!(info.reason == "INTEROP_FAILURE", "{info:?}");
    ensure!(info.metadata.get("server").map(String::as_str) == Some(stack.server()), "{info:?}");
    Ok(())
}

async fn check_metadata_and_deadline(client: &mut Client, stack: Stack) -> Result<()> {
    let doc = pattern(
        r#"
name: interop_inspect
version: 1.0.0
input: {type: object}
steps:
  - id: inspect
    call: interop.v1.InteropService/Inspect
    with: {}
    timeout: 3s
output:
  idempotency_key: "${{ steps.inspect.idempotency_key }}"
  traceparent: "${{ steps.inspect.traceparent }}"
  has_deadline: "${{ steps.inspect.has_deadline }}"
  deadline_remaining_ms: "${{ steps.inspect.deadline_remaining_ms }}"
  server: "${{ steps.inspect.server }}"
"#,
    )?;
    register(client, doc).await?;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(execute_request("interop_inspect", serde_json::json!({}))?);
    request.metadata_mut().insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse()?);
    let response = client.execute_pattern(request).await?.into_inner();
    let output = to_json(&response.output.unwrap_or_default());
    let text = |k: &str| output.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    ensure!(text("server") == stack.server(), "{output}");
    ensure!(
        text("idempotency_key") == format!("{}/inspect", response.execution_id),
        "idempotency key {:?} for execution {}",
        text("idempotency_key"),
        response.execution_id
    );
    let traceparent = text("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    ensure!(
        parts.len() == 4 && parts[0] == "00" && parts[2].len() == 16 && parts[3].len() == 2,
        "traceparent {traceparent:?} is not W3C"
    );
    ensure!(parts[1] == trace_id, "traceparent {traceparent:?} does not continue the caller's trace {trace_id}");
    ensure!(output.get("has_deadline") == Some(&serde_json::json!(true)), "no deadline reached the backend: {output}");
    // An int64: a number in an output mapping (a string only beyond 2^53).
    let remaining = output
        .get("deadline_remaining_ms")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| anyhow!("no deadline_remaining_ms in {output}"))?;
    ensure!(remaining > 0 && remaining <= 3000, "the backend saw {remaining} ms left; the step timeout is 3 s");
    Ok(())
}

async fn check_retry(client: &mut Client, stack: Stack) -> Result<()> {
    let doc = pattern(
        r#"
name: interop_flaky
version: 1.0.0
input: {type: object}
steps:
  - id: flaky
    call: interop.v1.InteropService/Flaky
    with: {failures: 2}
    retry: {max_attempts: 3, initial_backoff: 0.02s, max_backoff: 0.1s}
output:
  attempts: "${{ steps.flaky.attempts }}"
  idempotency_key: "${{ steps.flaky.idempotency_key }}"
"#,
    )?;
    register(client, doc).await?;
    let response = client.execute_pattern(execute_request("interop_flaky", serde_json::json!({}))?).await?.into_inner();
    let output = to_json(&response.output.unwrap_or_default());
    ensure!(
        output == serde_json::json!({"attempts": 3, "idempotency_key": format!("{}/flaky", response.execution_id)}),
        "output {output}"
    );
    let execution = get_execution(client, &response.execution_id).await?;
    let run = step(&execution, "flaky")?;
    let codes: Vec<&str> = run.attempts.iter().map(|a| a.code.as_str()).collect();
    ensure!(codes == ["UNAVAILABLE", "UNAVAILABLE", "OK"], "attempts {codes:?}");
    let failing = format!("{}: failing call 1 of 2", stack.server());
    ensure!(
        run.attempts.first().is_some_and(|a| a.message.contains(&failing)),
        "first attempt {:?} lacks {failing:?}",
        run.attempts.first()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tonic backend: the same service, served by tonic with DynamicMessage handlers over the
// descriptors protox compiles from the same .proto, and tonic-reflection (v1) from them.

fn interop_descriptors() -> Result<DescriptorPool> {
    let dir = repo_root().join("interop/proto");
    let fds = protox::compile(["interop/v1/interop.proto"], [&dir]).context("compiling interop.proto")?;
    Ok(DescriptorPool::from_file_descriptor_set(fds)?)
}

fn method(pool: &DescriptorPool, name: &str) -> Result<MethodDescriptor> {
    pool.get_service_by_name(SERVICE)
        .and_then(|s| s.methods().find(|m| m.name() == name))
        .ok_or_else(|| anyhow!("no {SERVICE}/{name}"))
}

async fn start_tonic() -> Result<Backend> {
    let dir = repo_root().join("interop/proto");
    let fds = protox::compile(["interop/v1/interop.proto"], [&dir]).context("compiling interop.proto")?;
    let pool = DescriptorPool::from_file_descriptor_set(fds.clone())?;
    let service = pool.get_service_by_name(SERVICE).ok_or_else(|| anyhow!("no {SERVICE}"))?;
    let reflection = tonic_reflection::server::Builder::configure().register_file_descriptor_set(fds).build_v1()?;
    let interop = TonicInterop { service, calls: Arc::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder().add_service(interop).add_service(reflection).serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                stopped.await.ok();
            },
        ),
    );
    Ok(Backend { addr, _child: None, _stop: Some(stop) })
}

#[derive(Clone)]
struct TonicInterop {
    service: ServiceDescriptor,
    /// Flaky's calls per idempotency key.
    calls: Arc<Mutex<HashMap<String, i32>>>,
}

impl NamedService for TonicInterop {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<http::Request<tonic::body::Body>> for TonicInterop {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let name = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
            let Some(method) = this.service.methods().find(|m| m.name() == name) else {
                return Ok(Status::unimplemented(format!("no method {name}")).into_http());
            };
            let mut grpc = tonic::server::Grpc::new(DynamicCodec(method.input()));
            if method.is_server_streaming() {
                Ok(grpc.server_streaming(Handler { interop: this, method }, req).await)
            } else {
                Ok(grpc.unary(Handler { interop: this, method }, req).await)
            }
        })
    }
}

struct Handler {
    interop: TonicInterop,
    method: MethodDescriptor,
}

fn field_i32(m: &DynamicMessage, name: &str) -> i32 {
    m.get_field_by_name(name).and_then(|v| v.as_i32()).unwrap_or_default()
}

fn header(req: &tonic::Request<DynamicMessage>, key: &str) -> String {
    req.metadata().get(key).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// The `grpc-timeout` header (`<digits><unit>`) as a duration.
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl tonic::server::UnaryService<DynamicMessage> for Handler {
    type Response = DynamicMessage;
    type Future = BoxFuture<'static, Result<tonic::Response<DynamicMessage>, Status>>;

    fn call(&mut self, req: tonic::Request<DynamicMessage>) -> Self::Future {
        let (interop, method) = (self.interop.clone(), self.method.clone());
        Box::pin(async move {
            let mut reply = DynamicMessage::new(method.output());
            let mut set = |k: &str, v: Value| reply.set_field_by_name(k, v);
            match method.name() {
                "Echo" => {
                    let input = req.get_ref();
                    for k in ["text", "attributes", "sent_at", "labels"] {
                        if input.has_field_by_name(k)
                            && let Some(v) = input.get_field_by_name(k)
                        {
                            set(k, v.into_owned());
                        }
                    }
                    set("server", Value::String("tonic".into()));
                }
                "Fail" => {
                    let input = req.get_ref();
                    let code = field_i32(input, "code");
                    let message = input
                        .get_field_by_name("message")
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    let info = ErrorInfo {
                        reason: "INTEROP_FAILURE".into(),
                        domain: "interop.nexus".into(),
                        metadata: HashMap::from([("server".to_string(), "tonic".to_string())]),
                    };
                    let details = RpcStatus {
                        code,
                        message: message.clone(),
                        details: vec![prost_types::Any {
                            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                            value: info.encode_to_vec(),
                        }],
                    };
                    return Err(Status::with_details(
                        tonic::Code::from_i32(code),
                        message,
                        details.encode_to_vec().into(),
                    ));
                }
                "Flaky" => {
                    let key = header(&req, "nexus-idempotency-key");
                    let failures = field_i32(req.get_ref(), "failures");
                    let n = {
                        let mut calls = interop.calls.lock().map_err(|_| Status::internal("poisoned"))?;
                        let n = calls.entry(key.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    if n <= failures {
                        return Err(Status::unavailable(format!("tonic: failing call {n} of {failures}")));
                    }
                    set("attempts", Value::I32(n));
                    set("idempotency_key", Value::String(key));
                }
                "Inspect" => {
                    let timeout = grpc_timeout(&header(&req, "grpc-timeout"));
                    set("idempotency_key", Value::String(header(&req, "nexus-idempotency-key")));
                    set("traceparent", Value::String(header(&req, "traceparent")));
                    set("has_deadline", Value::Bool(timeout.is_some()));
                    let ms = timeout.map_or(0, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
                    set("deadline_remaining_ms", Value::I64(ms));
                    set("server", Value::String("tonic".into()));
                }
                other => return Err(Status::unimplemented(format!("no unary method {other}"))),
            }
            Ok(tonic::Response::new(reply))
        })
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send>>;

impl tonic::server::ServerStreamingService<DynamicMessage> for Handler {
    type Response = DynamicMessage;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<'static, Result<tonic::Response<ReplyStream>, Status>>;

    fn call(&mut self, req: tonic::Request<DynamicMessage>) -> Self::Future {
        let output = self.method.output();
        Box::pin(async move {
            let count = field_i32(req.get_ref(), "count");
            let interval = Duration::from_millis(u64::try_from(field_i32(req.get_ref(), "interval_ms")).unwrap_or(0));
            let stream = futures::stream::unfold(0, move |i| {
                let output = output.clone();
                async move {
                    if i >= count {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    let mut reply = DynamicMessage::new(output);
                    reply.set_field_by_name("index", Value::I32(i));
                    reply.set_field_by_name("text", Value::String(format!("tonic {i}")));
                    Some((Ok(reply), i + 1))
                }
            });
            Ok(tonic::Response::new(Box::pin(stream) as ReplyStream))
        })
    }
}

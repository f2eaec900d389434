//! The catalog: ListServices and DescribeAction over the demo backends, and a backend that no Nexus
//! code knows about (its proto is compiled at test time and served by a hand-written tonic
//! service), plugged in with `--service NAME=URL` and discovered by server reflection.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll},
};

use anyhow::{Context, Result, anyhow, ensure};
use nexus_core::pb;
use nexus_server::DynamicCodec;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};
use serde_json::json;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, server::NamedService};

use crate::common::{Harness, Options, execute_request, pattern, register, to_json};

#[tokio::test]
async fn list_services_shows_the_demo_services_with_schemas() -> Result<()> {
    let mut h = Harness::start().await?;
    let services = h.client.list_services(pb::ListServicesRequest {}).await?.into_inner().services;
    let mut names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    let mut expected = nexus_demo::SERVICE_NAMES.to_vec();
    expected.sort_unstable();
    ensure!(names == expected, "services {names:?}");
    for s in &services {
        ensure!(s.backend == "demo", "{}: backend {:?}", s.name, s.backend);
        ensure!(s.source == "reflection", "{}: source {:?}", s.name, s.source);
        ensure!(s.endpoint.starts_with("http://127.0.0.1:"), "{}: endpoint {:?}", s.name, s.endpoint);
        ensure!(!s.actions.is_empty(), "{} has no actions", s.name);
        for a in &s.actions {
            ensure!(a.name == format!("{}/{}", s.name, a.method), "action {} of {}", a.name, s.name);
            ensure!(a.service == s.name, "{}: service {:?}", a.name, a.service);
            let input =
                a.input_schema.as_ref().map(to_json).ok_or_else(|| anyhow!("{} has no input_schema", a.name))?;
            ensure!(input["type"] == "object" && input["properties"].is_object(), "{}: {input}", a.name);
            ensure!(a.output_schema.is_some(), "{} has no output_schema", a.name);
        }
    }

    let user = services.iter().find(|s| s.name == "demo.user.v1.UserService").ok_or_else(|| anyhow!("no users"))?;
    let create = user
        .actions
        .iter()
        .find(|a| a.name == nexus_demo::method::CREATE_USER)
        .ok_or_else(|| anyhow!("no CreateUser in {user:?}"))?;
    ensure!(create.input_type == "demo.user.v1.CreateUserRequest", "{create:?}");
    ensure!(create.output_type == "demo.user.v1.CreateUserResponse", "{create:?}");
    let schema = to_json(create.input_schema.as_ref().ok_or_else(|| anyhow!("no schema"))?);
    ensure!(schema["properties"]["email"]["type"] == "string", "{schema}");
    ensure!(schema["properties"]["roles"]["type"] == "array", "{schema}");
    // The protos' comments travel with the schemas (the demo's descriptors carry source info).
    ensure!(create.description.starts_with("Creates a user."), "{:?}", create.description);
    ensure!(
        schema["properties"]["email"]["description"] == "The new user's email address; must contain `@`.",
        "{schema}"
    );
    let push = services
        .iter()
        .flat_map(|s| &s.actions)
        .find(|a| a.name == "demo.notification.v1.NotificationService/SendPush")
        .ok_or_else(|| anyhow!("no SendPush"))?;
    let push_schema = to_json(push.input_schema.as_ref().ok_or_else(|| anyhow!("no schema"))?);
    let priority = &push_schema["properties"]["priority"];
    ensure!(
        priority["enum"]
            == serde_json::json!([
                "PRIORITY_UNSPECIFIED",
                "PRIORITY_LOW",
                "PRIORITY_NORMAL",
                "PRIORITY_HIGH",
                0,
                1,
                2,
                3
            ]),
        "{priority}"
    );
    ensure!(priority["x-enum-numbers"] == serde_json::json!([0, 1, 2, 3]), "{priority}");
    ensure!(priority["title"] == "demo.notification.v1.Priority", "{priority}");
    ensure!(priority["x-enum-descriptions"][1] == "Delivered when the device is next awake.", "{priority}");
    ensure!(priority["x-enum-description"] == "Delivery priority of a push notification.", "{priority}");
    ensure!(push_schema["properties"]["priority"]["x-field-number"] == 4.0, "{push_schema}");
    let devices = to_json(push.output_schema.as_ref().ok_or_else(|| anyhow!("no schema"))?);
    ensure!(devices["properties"]["devices"]["format"] == "int32", "{devices}");
    let subscribe = services
        .iter()
        .flat_map(|s| &s.actions)
        .find(|a| a.name == nexus_demo::method::SUBSCRIBE)
        .ok_or_else(|| anyhow!("no Subscribe"))?;
    ensure!(subscribe.server_streaming && !subscribe.client_streaming, "{subscribe:?}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn describe_action_finds_known_and_rejects_unknown_actions() -> Result<()> {
    let mut h = Harness::start().await?;
    let action = h
        .client
        .describe_action(pb::DescribeActionRequest { name: nexus_demo::method::SEND_EMAIL.into() })
        .await?
        .into_inner();
    ensure!(action.method == "SendEmail" && action.input_type == "demo.notification.v1.SendEmailRequest", "{action:?}");

    let err = h
        .client
        .describe_action(pb::DescribeActionRequest { name: "demo.user.v1.UserService/CreateUzer".into() })
        .await
        .err()
        .ok_or_else(|| anyhow!("an unknown action was described"))?;
    ensure!(err.code() == Code::NotFound, "{err:?}");
    ensure!(err.message().contains("CreateUzer"), "{err:?}");
    h.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A backend Nexus has never heard of.

const ECHO_PROTO: &str = r#"syntax = "proto3";

package test.echo.v1;

service EchoService {
  rpc Echo(EchoRequest) returns (EchoReply);
}

message EchoRequest {
  string text = 1;
  int32 times = 2;
}

message EchoReply {
  string text = 1;
}
"#;

const ECHO_PATH: &str = "/test.echo.v1.EchoService/Echo";

/// `test.echo.v1.EchoService` without generated code: requests are decoded with the descriptor
/// compiled at test time, replies built as `DynamicMessage`s.
#[derive(Clone)]
struct EchoServer {
    input: MessageDescriptor,
    output: MessageDescriptor,
    /// Every request received, as (text, times).
    seen: Arc<Mutex<Vec<(String, i32)>>>,
}

impl NamedService for EchoServer {
    const NAME: &'static str = "test.echo.v1.EchoService";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != ECHO_PATH {
                return Ok(tonic::Status::unimplemented(format!("no method {}", req.uri().path())).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(DynamicCodec(this.input.clone()));
            Ok(grpc.unary(this, req).await)
        })
    }
}

impl tonic::server::UnaryService<DynamicMessage> for EchoServer {
    type Response = DynamicMessage;
    type Future = std::future::Ready<Result<tonic::Response<DynamicMessage>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<DynamicMessage>) -> Self::Future {
        let request = request.into_inner();
        let text = request.get_field_by_name("text").and_then(|v| v.as_str().map(ToString::to_string));
        let times = request.get_field_by_name("times").and_then(|v| v.as_i32());
        let (Some(text), Some(times)) = (text, times) else {
            return std::future::ready(Err(tonic::Status::invalid_argument(format!(
                "not an EchoRequest: {request:?}"
            ))));
        };
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((text.clone(), times));
        }
        let mut reply = DynamicMessage::new(self.output.clone());
        let repeated = vec![text; usize::try_from(times).unwrap_or(0)].join(" ");
        reply.set_field_by_name("text", Value::String(repeated));
        std::future::ready(Ok(tonic::Response::new(reply)))
    }
}

/// The running echo backend; dropping it stops the server.
struct EchoBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, i32)>>>,
    _stop: oneshot::Sender<()>,
}

/// Compiles [`ECHO_PROTO`] with protox (no protoc) and serves it, with gRPC server reflection, on
/// 127.0.0.1:0.
async fn start_echo_backend() -> Result<EchoBackend> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("echo.proto"), ECHO_PROTO)?;
    let fds = protox::compile(["echo.proto"], [dir.path()]).context("compiling echo.proto")?;
    let encoded = fds.encode_to_vec();
    let pool = DescriptorPool::decode(encoded.as_slice()).context("building the descriptor pool")?;
    let message = |name: &str| pool.get_message_by_name(name).ok_or_else(|| anyhow!("no {name} in echo.proto"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let echo = EchoServer {
        input: message("test.echo.v1.EchoRequest")?,
        output: message("test.echo.v1.EchoReply")?,
        seen: seen.clone(),
    };
    let reflection =
        tonic_reflection::server::Builder::configure().register_encoded_file_descriptor_set(&encoded).build_v1()?;

    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().add_service(echo).add_service(reflection);
    tokio::spawn(server.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
        let _ = stopped.await;
    }));
    Ok(EchoBackend { addr, seen, _stop: stop })
}

#[tokio::test]
async fn a_backend_plugged_in_by_flag_is_discovered_type_checked_and_called() -> Result<()> {
    let echo = start_echo_backend().await?;
    let mut h =
        Harness::start_with(Options { services: vec![format!("echo=http://{}", echo.addr)], ..Options::default() })
            .await?;

    // Discovered over reflection, with the schema of a message no Nexus code was built with.
    let services = h.client.list_services(pb::ListServicesRequest {}).await?.into_inner().services;
    let service = services.iter().find(|s| s.name == "test.echo.v1.EchoService").ok_or_else(|| {
        anyhow!("echo is not in the catalog: {:?}", services.iter().map(|s| &s.name).collect::<Vec<_>>())
    })?;
    ensure!(service.backend == "echo" && service.source == "reflection", "{service:?}");
    ensure!(service.endpoint == format!("http://{}", echo.addr), "{service:?}");
    let action = h
        .client
        .describe_action(pb::DescribeActionRequest { name: "test.echo.v1.EchoService/Echo".into() })
        .await?
        .into_inner();
    let schema = to_json(action.input_schema.as_ref().ok_or_else(|| anyhow!("no input schema"))?);
    ensure!(schema["properties"]["text"]["type"] == "string", "{schema}");
    ensure!(schema["properties"]["times"]["type"] == "integer", "{schema}");

    // Type-checked against those descriptors.
    let bad = pattern(
        r#"
name: echo_bad
version: 1.0.0
steps:
  - id: echo
    call: test.echo.v1.EchoService/Echo
    with: {text: "hi", times: "twice", volume: 11}
"#,
    )?;
    let v = h.client.validate_pattern(pb::ValidatePatternRequest { pattern: Some(bad) }).await?.into_inner();
    let mut paths: Vec<&str> = v.diagnostics.iter().map(|d| d.path.as_str()).collect();
    paths.sort_unstable();
    ensure!(!v.valid && paths == ["steps[0].with.times", "steps[0].with.volume"], "{v:?}");

    // And called.
    let doc = pattern(
        r#"
name: echo_twice
version: 1.0.0
input:
  type: object
  required: [text]
  properties:
    text: {type: string}
steps:
  - id: echo
    call: test.echo.v1.EchoService/Echo
    with:
      text: "${{ input.text }}"
      times: 2
output:
  reply: "${{ steps.echo.text }}"
"#,
    )?;
    register(&mut h.client, doc).await?;
    let response =
        h.client.execute_pattern(execute_request("echo_twice", json!({"text": "hello"}))?).await?.into_inner();
    ensure!(response.status == pb::ExecutionStatus::Succeeded as i32, "{response:?}");
    let output = to_json(response.output.as_ref().ok_or_else(|| anyhow!("no output"))?);
    ensure!(output == json!({"reply": "hello hello"}), "{output}");
    let seen = echo.seen.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    ensure!(seen == [("hello".to_string(), 2)], "echo received {seen:?}");
    h.stop().await;
    Ok(())
}

/// `[[services]]` entries may name a descriptor set file or `.proto` files instead of relying on
/// reflection; both must produce the same catalog and a runnable pattern.
#[tokio::test]
async fn services_from_a_descriptor_set_file_or_proto_files() -> anyhow::Result<()> {
    use std::path::PathBuf;

    use nexus_server::{Config, Nexus, ServiceConfig};

    let (demo_addr, _demo, _guard) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let fds_path = dir.path().join("demo.binpb");
    std::fs::write(&fds_path, nexus_demo::FILE_DESCRIPTOR_SET)?;
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");

    let endpoint = format!("http://{demo_addr}");
    let from_set =
        ServiceConfig { descriptor_set: Some(fds_path), ..ServiceConfig::from_flag(&format!("set={endpoint}"))? };
    let from_protos = ServiceConfig {
        protos: vec![
            proto_root.join("demo/user/v1/user.proto"),
            proto_root.join("demo/notification/v1/notification.proto"),
        ],
        include: vec![proto_root.clone()],
        ..ServiceConfig::from_flag(&format!("protos={endpoint}"))?
    };
    for (service, expected_source, expected_services) in
        [(from_set, "descriptor_set", 4usize), (from_protos, "protos", 2usize)]
    {
        let config =
            Config { listen: "127.0.0.1:0".parse()?, in_memory: true, services: vec![service], ..Config::default() };
        let nexus = Nexus::start(config).await?;
        let mut client = nexus_server::proto::nexus_service_client::NexusServiceClient::connect(format!(
            "http://{}",
            nexus.local_addr()
        ))
        .await?;
        let services = client.list_services(nexus_core::pb::ListServicesRequest {}).await?.into_inner().services;
        assert_eq!(services.len(), expected_services, "{services:?}");
        assert!(services.iter().all(|s| s.source == expected_source), "{services:?}");

        let doc = crate::common::pattern(
            r#"
name: welcome_only
version: 1.0.0
steps:
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: "Someone"}
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ steps.user.user.email }}", subject: "hi"}
output: {id: "${{ steps.mail.message_id }}"}
"#,
        )?;
        crate::common::register(&mut client, doc).await?;
        let email = crate::common::unique_email(expected_source);
        let out = client
            .execute_pattern(crate::common::execute_request("welcome_only", serde_json::json!({"email": email}))?)
            .await?
            .into_inner();
        let output = crate::common::to_json(&out.output.unwrap_or_default());
        assert!(output["id"].as_str().is_some_and(|id| id.starts_with("msg_")), "{output}");
        nexus.shutdown(std::time::Duration::from_secs(5)).await;
    }
    Ok(())
}

/// Two replicas on one PostgreSQL schema: a version registered on one is executable on the other
/// at once (no restart), and `latest` follows within the refresh interval.
#[tokio::test]
async fn replicas_on_postgres_share_patterns() -> anyhow::Result<()> {
    use nexus_server::{Config, Nexus, ServiceConfig, StoreConfig};
    use sqlx::Connection;

    let url =
        std::env::var("NEXUS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("nexus_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&url).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await?;

    let (demo_addr, _demo, _guard) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await?;
    let refresh = std::time::Duration::from_millis(200);
    let replica = || Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        services: vec![ServiceConfig::from_flag(&format!("demo=http://{demo_addr}")).expect("flag")],
        store: StoreConfig { url: Some(url.clone()), schema: Some(schema.clone()), ..Default::default() },
        refresh_interval: refresh,
        ..Config::default()
    };
    let a = Nexus::start(replica()).await?;
    let b = Nexus::start(replica()).await?;
    let client = |n: &Nexus| {
        nexus_server::proto::nexus_service_client::NexusServiceClient::connect(format!("http://{}", n.local_addr()))
    };
    let (mut ca, mut cb) = (client(&a).await?, client(&b).await?);

    crate::common::register(&mut ca, crate::common::pattern_file("user_creation")?).await?;
    let email = crate::common::unique_email("replica");
    let out = cb
        .execute_pattern(crate::common::execute_request(
            "user_creation",
            serde_json::json!({"email": email, "name": "R"}),
        )?)
        .await?
        .into_inner();
    assert!(!out.execution_id.is_empty());

    // A newer version registered on A becomes B's `latest` within the refresh interval.
    let mut v2 = crate::common::pattern_file("user_creation")?;
    v2.version = "1.1.0".into();
    crate::common::register(&mut ca, v2).await?;
    crate::common::eventually(refresh * 10, "1.1.0 as the other replica's latest", async || {
        let latest = cb
            .get_pattern(nexus_core::pb::GetPatternRequest { name: "user_creation".into(), version: String::new() })
            .await?
            .into_inner();
        anyhow::ensure!(latest.version == "1.1.0", "latest is {}", latest.version);
        Ok(())
    })
    .await?;

    a.shutdown(std::time::Duration::from_secs(5)).await;
    b.shutdown(std::time::Duration::from_secs(5)).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut admin).await?;
    Ok(())
}

/// JSON Schemas for editors: the pattern document (public) and each action's input.
#[tokio::test]
async fn schemas_of_the_pattern_document_and_of_each_action_are_served() -> Result<()> {
    use crate::ui::http1_get_with;
    let h = Harness::start().await?;
    let pattern = http1_get_with(h.addr, "/schema/pattern.json", &[]).await?;
    ensure!(pattern.status() == 200, "{}", pattern.status());
    ensure!(pattern.headers()["content-type"] == "application/schema+json", "{:?}", pattern.headers());
    let served: serde_json::Value = serde_json::from_slice(pattern.body())?;
    ensure!(served == nexus_core::schema::pattern_document_schema(), "{served}");

    let push =
        http1_get_with(h.addr, "/schema/actions/demo.notification.v1.NotificationService/SendPush.json", &[]).await?;
    ensure!(push.status() == 200, "{}", push.status());
    let schema: serde_json::Value = serde_json::from_slice(push.body())?;
    ensure!(schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", "{schema}");
    ensure!(schema["title"] == "demo.notification.v1.SendPushRequest", "{schema}");
    let priority = &schema["properties"]["priority"]["enum"];
    ensure!(
        priority.as_array().is_some_and(|a| a.contains(&"PRIORITY_HIGH".into()) && a.contains(&3.into())),
        "{schema}"
    );

    let typo =
        http1_get_with(h.addr, "/schema/actions/demo.notification.v1.NotificationService/SendPsh.json", &[]).await?;
    ensure!(typo.status() == 404, "{}", typo.status());
    let body = String::from_utf8_lossy(typo.body()).into_owned();
    ensure!(body.contains("Did you mean `demo.notification.v1.NotificationService/SendPush`"), "{body}");
    h.stop().await;

    // With authentication required, action schemas need a credential; the document's does not.
    let auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    let h = Harness::start_with(crate::common::Options { auth, ..Default::default() }).await?;
    let refused = http1_get_with(h.addr, "/schema/actions/demo.user.v1.UserService/CreateUser.json", &[]).await?;
    ensure!(refused.status() == 401, "{}", refused.status());
    ensure!(http1_get_with(h.addr, "/schema/pattern.json", &[]).await?.status() == 200);
    h.stop().await;
    Ok(())
}

//! One port, three protocols: native gRPC (HTTP/2), gRPC-Web and Connect unary JSON (both over a
//! plain HTTP/1.1 connection made by hand here, as a browser or curl would), plus grpc.health.v1.

use std::{collections::HashMap, net::SocketAddr};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nexus_core::pb;
use prost::Message;
use serde_json::json;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::common::{
    Harness, check_user_creation_output, execute_request, execution_id, register_examples, to_json, unique_email,
};

const EXECUTE_PATH: &str = "/nexus.v1.NexusService/ExecutePattern";

/// One request over a fresh HTTP/1.1 connection (no HTTP/2, no upgrade), whole body collected.
pub(crate) async fn http1_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<http::Response<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.context("connecting")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP/1.1 handshake")?;
    let connection = tokio::spawn(connection);
    let mut request = http::Request::post(path).header(HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender.send_request(request.body(Full::new(body))?).await.context("sending the request")?;
    ensure!(response.version() == http::Version::HTTP_11, "answered over {:?}", response.version());
    let (parts, body) = response.into_parts();
    let body = body.collect().await.context("reading the response body")?.to_bytes();
    drop(sender);
    connection.abort();
    Ok(http::Response::from_parts(parts, body))
}

/// A gRPC(-Web) length-prefixed message frame.
pub(crate) fn frame(flag: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 5);
    b.put_u8(flag);
    b.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    b.put_slice(payload);
    b.freeze()
}

/// A gRPC-Web response body: the message frames and the trailers (from the 0x80 frame).
pub(crate) struct GrpcWebBody {
    pub(crate) messages: Vec<Bytes>,
    pub(crate) trailers: HashMap<String, String>,
}

pub(crate) fn parse_grpc_web(mut body: Bytes) -> Result<GrpcWebBody> {
    let mut out = GrpcWebBody { messages: Vec::new(), trailers: HashMap::new() };
    while body.has_remaining() {
        ensure!(body.remaining() >= 5, "truncated frame header ({} bytes left)", body.remaining());
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        ensure!(body.remaining() >= len, "frame of {len} bytes, only {} left", body.remaining());
        let payload = body.split_to(len);
        match flag {
            0 => out.messages.push(payload),
            0x80 => {
                let text = std::str::from_utf8(&payload).context("trailer frame is not UTF-8")?;
                for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                    let (k, v) = line.split_once(':').ok_or_else(|| anyhow!("bad trailer line {line:?}"))?;
                    out.trailers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            other => bail!("unexpected frame flag {other:#x}"),
        }
    }
    Ok(out)
}

/// `grpc-status` of a gRPC-Web response: in the trailer frame, or in the headers when the server
/// answered trailers-only.
pub(crate) fn grpc_web_status(response: &http::Response<Bytes>, body: &GrpcWebBody) -> Option<String> {
    body.trailers
        .get("grpc-status")
        .cloned()
        .or_else(|| response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(ToString::to_string))
}

async fn execute_grpc_web(addr: SocketAddr, request: &pb::ExecutePatternRequest) -> Result<pb::ExecutePatternResponse> {
    let response = http1_post(
        addr,
        EXECUTE_PATH,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("accept", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        frame(0, &request.encode_to_vec()),
    )
    .await?;
    ensure!(response.status() == http::StatusCode::OK, "HTTP {}", response.status());
    let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    ensure!(content_type.starts_with("application/grpc-web"), "content-type {content_type:?}");
    let id_header = response.headers().get("nexus-execution-id").cloned();
    let body = parse_grpc_web(response.body().clone())?;
    ensure!(
        grpc_web_status(&response, &body).as_deref() == Some("0"),
        "grpc-status {:?}, trailers {:?}",
        grpc_web_status(&response, &body),
        body.trailers
    );
    ensure!(body.messages.len() == 1, "{} message frames", body.messages.len());
    let decoded = pb::ExecutePatternResponse::decode(body.messages[0].clone()).context("decoding the response")?;
    if let Some(id) = id_header {
        ensure!(id.to_str().ok() == Some(decoded.execution_id.as_str()), "nexus-execution-id {id:?} vs {decoded:?}");
    }
    Ok(decoded)
}

async fn connect_post(
    addr: SocketAddr,
    method: &str,
    body: serde_json::Value,
) -> Result<(http::StatusCode, serde_json::Value)> {
    let response = http1_post(
        addr,
        &format!("/nexus.v1.NexusService/{method}"),
        &[("content-type", "application/json"), ("connect-protocol-version", "1")],
        Bytes::from(body.to_string()),
    )
    .await?;
    let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    ensure!(content_type.starts_with("application/json"), "content-type {content_type:?}");
    let json: serde_json::Value = serde_json::from_slice(response.body())
        .with_context(|| format!("body is not JSON: {:?}", String::from_utf8_lossy(response.body())))?;
    Ok((response.status(), json))
}

/// The JSON type of each output field, so the three transports can be compared by shape.
fn shape(output: &serde_json::Value) -> Vec<(String, &'static str)> {
    let mut fields: Vec<(String, &'static str)> = output
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let t = match v {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "bool",
                serde_json::Value::Number(_) => "number",
                serde_json::Value::String(_) => "string",
                serde_json::Value::Array(_) => "array",
                serde_json::Value::Object(_) => "object",
            };
            (k.clone(), t)
        })
        .collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn user_creation_runs_over_grpc_grpc_web_and_connect() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    let input =
        |tag: &str| json!({"email": unique_email(tag), "name": "Ada", "avatar_url": "https://img.example.com/ada.png"});

    // Native gRPC over HTTP/2.
    let response = h.client.execute_pattern(execute_request("user_creation", input("grpc"))?).await?;
    let grpc_id = execution_id(response.metadata())?;
    let grpc = response.into_inner();
    ensure!(grpc.execution_id == grpc_id, "metadata id {grpc_id} vs body {}", grpc.execution_id);
    ensure!(grpc.status == pb::ExecutionStatus::Succeeded as i32, "{grpc:?}");
    let grpc_output = to_json(grpc.output.as_ref().ok_or_else(|| anyhow!("no output: {grpc:?}"))?);
    check_user_creation_output(&grpc_output).context("gRPC")?;

    // gRPC-Web over HTTP/1.1.
    let web = execute_grpc_web(h.addr, &execute_request("user_creation", input("grpc-web"))?).await?;
    ensure!(web.status == pb::ExecutionStatus::Succeeded as i32, "{web:?}");
    ensure!(!web.execution_id.is_empty(), "{web:?}");
    let web_output = to_json(web.output.as_ref().ok_or_else(|| anyhow!("no output: {web:?}"))?);
    check_user_creation_output(&web_output).context("gRPC-Web")?;

    // Connect unary JSON over HTTP/1.1, request and response in the proto3 JSON mapping.
    let (status, body) =
        connect_post(h.addr, "ExecutePattern", json!({"pattern_name": "user_creation", "input": input("connect")}))
            .await?;
    ensure!(status == http::StatusCode::OK, "HTTP {status}: {body}");
    ensure!(body["execution_id"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    ensure!(body["status"] == "EXECUTION_STATUS_SUCCEEDED", "{body}");
    let connect_output = body["output"].clone();
    check_user_creation_output(&connect_output).context("Connect")?;

    println!("gRPC:     {grpc_output}\ngRPC-Web: {web_output}\nConnect:  {connect_output}");
    ensure!(shape(&grpc_output) == shape(&web_output), "gRPC {grpc_output} vs gRPC-Web {web_output}");
    ensure!(shape(&grpc_output) == shape(&connect_output), "gRPC {grpc_output} vs Connect {connect_output}");
    let mut ids = [&grpc_output["user_id"], &web_output["user_id"], &connect_output["user_id"]];
    ids.sort_by_key(|v| v.to_string());
    ensure!(ids[0] != ids[1] && ids[1] != ids[2], "three runs, three users: {ids:?}");
    ensure!(h.demo.calls(nexus_demo::method::CREATE_USER) == 3, "CreateUser calls");
    h.stop().await;
    Ok(())
}

/// A caller's `traceparent` header reaches every backend call, continued: its trace id, a span of
/// Nexus's own. (A trace without a caller's header, and a span per call, are the engine's
/// `backend_calls_continue_the_callers_trace_with_a_span_each`.)
#[tokio::test]
async fn the_callers_trace_context_reaches_the_backends() -> Result<()> {
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    let input = json!({"email": unique_email("trace"), "name": "Ada"});
    let mut request = tonic::Request::new(execute_request("user_creation", input)?);
    request.metadata_mut().insert("traceparent", CALLER.parse()?);
    h.client.execute_pattern(request).await?;
    for m in [nexus_demo::method::CREATE_USER, nexus_demo::method::SEND_EMAIL] {
        let tp = h.demo.last_traceparent(m).ok_or_else(|| anyhow!("{m} got no traceparent"))?;
        ensure!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{m}: the caller's trace id is lost: {tp}");
        ensure!(tp.len() == 55 && !tp.contains("00f067aa0ba902b7"), "{m}: not a span of Nexus's own: {tp}");
    }
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn connect_unknown_pattern_is_404_not_found() -> Result<()> {
    let h = Harness::start().await?;
    let (status, body) =
        connect_post(h.addr, "ExecutePattern", json!({"pattern_name": "no_such_pattern", "input": {}})).await?;
    ensure!(status == http::StatusCode::NOT_FOUND, "HTTP {status}: {body}");
    ensure!(body["code"] == "not_found", "{body}");
    ensure!(body["message"].as_str().is_some_and(|m| m.contains("no_such_pattern")), "{body}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn connect_invalid_pattern_is_400_with_diagnostics_in_details() -> Result<()> {
    let h = Harness::start().await?;
    let pattern = json!({
        "name": "bad_call",
        "version": "1.0.0",
        "steps": [{"id": "user", "call": "demo.user.v1.UserService/CreateUzer", "with": {"email": "a@b.c"}}],
    });
    let (status, body) = connect_post(h.addr, "RegisterPattern", json!({"pattern": pattern})).await?;
    ensure!(status == http::StatusCode::BAD_REQUEST, "HTTP {status}: {body}");
    ensure!(body["code"] == "invalid_argument", "{body}");
    let detail = &body["details"][0];
    ensure!(detail["type"] == "nexus.v1.ValidatePatternResponse", "{body}");
    ensure!(detail["value"].as_str().is_some_and(|v| !v.is_empty()), "{body}");
    let diagnostics =
        detail["debug"]["diagnostics"].as_array().ok_or_else(|| anyhow!("no debug diagnostics: {body}"))?;
    ensure!(diagnostics.len() == 1, "{body}");
    ensure!(diagnostics[0]["path"] == "steps[0].call", "{body}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn grpc_web_error_status_arrives_with_the_response() -> Result<()> {
    let h = Harness::start().await?;
    let request = execute_request("no_such_pattern", json!({}))?;
    let response = http1_post(
        h.addr,
        EXECUTE_PATH,
        &[("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")],
        frame(0, &request.encode_to_vec()),
    )
    .await?;
    ensure!(response.status() == http::StatusCode::OK, "HTTP {}", response.status());
    let body = parse_grpc_web(response.body().clone())?;
    ensure!(body.messages.is_empty(), "an error carries no message");
    let status = grpc_web_status(&response, &body);
    ensure!(status.as_deref() == Some("5"), "grpc-status {status:?} (expected NOT_FOUND = 5)");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn health_check_reports_serving() -> Result<()> {
    let h = Harness::start().await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", h.addr))?.connect().await?;
    let mut health = HealthClient::new(channel);
    for service in ["", "nexus.v1.NexusService"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await?.into_inner();
        ensure!(r.status == ServingStatus::Serving as i32, "service {service:?}: {r:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    ensure!(matches!(&unknown, Err(s) if s.code() == tonic::Code::NotFound), "{unknown:?}");
    h.stop().await;
    Ok(())
}

/// With `require_auth`, credentials travel the same way over Connect JSON and gRPC-Web: without
/// them the call is refused (Connect: HTTP 401 `unauthenticated`), with an API key it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_work_over_connect_and_grpc_web() -> Result<()> {
    use nexus_store::AuthStore;
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    let harness = Harness::start_with(crate::common::Options {
        data_dir: Some(dir.path().to_path_buf()),
        auth,
        ..Default::default()
    })
    .await?;
    let (key, record) = nexus_store::api_key::generate("acme", "web", &["viewer".to_string()]);
    store.insert_api_key(&record).await?;

    let (status, body) = connect_post(harness.addr, "WhoAmI", serde_json::json!({})).await?;
    ensure!(status == http::StatusCode::UNAUTHORIZED && body["code"] == "unauthenticated", "{status} {body}");
    let bearer = format!("Bearer {key}");
    let response = http1_post(
        harness.addr,
        "/nexus.v1.NexusService/WhoAmI",
        &[("content-type", "application/json"), ("authorization", bearer.as_str())],
        Bytes::from("{}"),
    )
    .await?;
    ensure!(response.status() == http::StatusCode::OK, "HTTP {}", response.status());
    let who: serde_json::Value = serde_json::from_slice(response.body())?;
    ensure!(who["subject"] == "web" && who["tenant"] == "acme", "{who}");

    let plain = [("content-type", "application/grpc-web+proto"), ("accept", "application/grpc-web+proto")];
    let with_key = [
        ("content-type", "application/grpc-web+proto"),
        ("accept", "application/grpc-web+proto"),
        ("authorization", bearer.as_str()),
    ];
    let refused = http1_post(harness.addr, "/nexus.v1.NexusService/WhoAmI", &plain, frame(0, &[])).await?;
    let body = parse_grpc_web(refused.body().clone())?;
    ensure!(grpc_web_status(&refused, &body).as_deref() == Some("16"), "{:?}", refused.headers());
    let allowed = http1_post(harness.addr, "/nexus.v1.NexusService/WhoAmI", &with_key, frame(0, &[])).await?;
    let body = parse_grpc_web(allowed.body().clone())?;
    ensure!(grpc_web_status(&allowed, &body).as_deref() == Some("0"), "{:?}", body.trailers);
    harness.stop().await;
    Ok(())
}

/// Requests the Connect protocol does not serve get Connect's error JSON, with the HTTP status the
/// case calls for, never an empty body: wrong content type (415, Accept-Post), a method other
/// than POST (405, Allow), a service that is not Nexus's (unimplemented).
#[tokio::test]
async fn connect_refusals_are_connect_error_json() -> Result<()> {
    let h = Harness::start().await?;
    /// Method, path, content type → HTTP status, Connect code, a fragment of the message.
    type Case = (&'static str, &'static str, Option<&'static str>, u16, &'static str, &'static str);
    let cases: &[Case] = &[
        ("POST", EXECUTE_PATH, Some("text/plain"), 415, "invalid_argument", "text/plain"),
        ("POST", EXECUTE_PATH, None, 415, "invalid_argument", "Content-Type"),
        ("GET", EXECUTE_PATH, None, 405, "unimplemented", "POST"),
        ("PUT", EXECUTE_PATH, Some("application/json"), 405, "unimplemented", "POST"),
        ("POST", "/no.such.Service/Call", Some("application/json"), 501, "unimplemented", "no.such.Service"),
        ("POST", "/nexus.v1.NexusService/NoSuchMethod", Some("application/json"), 501, "unimplemented", "NoSuchMethod"),
    ];
    for &(method, path, content_type, status, code, fragment) in cases {
        let stream = tokio::net::TcpStream::connect(h.addr).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let mut request = http::Request::builder().method(method).uri(path).header(HOST, h.addr.to_string());
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        let response = sender.send_request(request.body(Full::new(Bytes::from_static(b"{}")))?).await?;
        let got = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        connection.abort();
        let json: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("{method} {path}: not JSON: {:?}", String::from_utf8_lossy(&body)))?;
        ensure!(got == status, "{method} {path} ({content_type:?}): HTTP {got}, expected {status}: {json}");
        ensure!(json["code"] == code, "{method} {path}: {json}");
        ensure!(json["message"].as_str().is_some_and(|m| m.contains(fragment)), "{method} {path}: {json}");
        if status == 415 {
            ensure!(headers.contains_key("accept-post"), "{headers:?}");
        }
        if status == 405 {
            ensure!(headers.get("allow").is_some_and(|v| v == "POST"), "{headers:?}");
        }
    }
    h.stop().await;
    Ok(())
}

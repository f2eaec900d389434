//! Careless and hostile requests answer one clear code on every transport (issue 11's
//! regressions, table-driven): what was sent → the gRPC code (and Connect's HTTP status) and a
//! fragment of the message.

use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nexus_core::pb;
use prost::Message as _;
use serde_json::json;

use crate::{
    common::{Harness, Options, execute_request, pattern, register, to_json},
    transports::{frame, http1_post},
};

const EXECUTE: &str = "/nexus.v1.NexusService/ExecutePattern";

/// A native gRPC call over h2c with a raw payload: (grpc-status, grpc-message, message frames).
async fn grpc_raw(addr: SocketAddr, path: &str, payload: &[u8]) -> Result<(String, String, Bytes)> {
    grpc_raw_body(addr, path, &[], frame(0, payload)).await
}

/// A native gRPC call with extra headers and a body as given (framed or not).
async fn grpc_raw_body(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
    body: Bytes,
) -> Result<(String, String, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    connection.abort();
    let get = |name: &str| {
        trailers.get(name).or_else(|| headers.get(name)).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    };
    let message = percent_encoding::percent_decode_str(&get("grpc-message")).decode_utf8_lossy().into_owned();
    Ok((get("grpc-status"), message, body))
}

async fn connect_raw(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(u16, serde_json::Value)> {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let response = http1_post(addr, path, &all, body).await?;
    let json = serde_json::from_slice(response.body())
        .with_context(|| format!("not JSON: {:?}", String::from_utf8_lossy(response.body())))?;
    Ok((response.status().as_u16(), json))
}

/// A Connect POST whose answer may come before the body is all sent (a refusal that does not
/// read it): the body is written by a task that ignores a closed connection, the answer read
/// meanwhile — as curl does.
async fn connect_early(addr: SocketAddr, path: &str, body: Bytes) -> Result<(u16, serde_json::Value)> {
    let (status, _, rest) = post_early(addr, path, "application/json", body).await?;
    Ok((status, serde_json::from_str(&rest).with_context(|| format!("not JSON: {rest:?}"))?))
}

/// The status line's code, the head, and the body (by content-length; empty without one).
async fn post_early(addr: SocketAddr, path: &str, content_type: &str, body: Bytes) -> Result<(u16, String, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
        let _ = write.write_all(&body).await;
        write
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (status, head, rest) = loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), read.read(&mut chunk)).await??;
        ensure!(n > 0, "connection closed before an answer: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else { continue };
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if rest.len() < length {
            continue;
        }
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        break (status, head.to_string(), rest[..length].to_string());
    };
    writer.abort();
    Ok((status, head, rest))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_are_the_callers_error_on_every_transport() -> Result<()> {
    let h = Harness::start().await?;
    // Not a protobuf encoding of anything (a truncated length-delimited field).
    let garbage: &[u8] = &[0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let too_big = vec![0u8; 5 << 20];
    // payload → gRPC status, a fragment of its message.
    let cases: &[(&[u8], &str, &str)] = &[
        (garbage, "3", "not a valid protobuf encoding of nexus.v1.ExecutePatternRequest"),
        (&too_big, "8", "too large"),
    ];
    for (payload, code, fragment) in cases {
        let (status, message, _) = grpc_raw(h.addr, EXECUTE, payload).await.context("gRPC")?;
        ensure!(
            status == *code && message.contains(fragment),
            "gRPC: {status} {message:?}, expected {code} {fragment}"
        );
        // gRPC-Web: the refusal may come before the body is all read (the answer then arrives
        // while the client still sends), so the answer is read as it comes.
        let (_, head, body) = post_early(h.addr, EXECUTE, "application/grpc-web+proto", frame(0, payload)).await?;
        let all =
            percent_encoding::percent_decode_str(&format!("{head}\n{body}")).decode_utf8_lossy().to_ascii_lowercase();
        ensure!(
            (all.contains(&format!("grpc-status: {code}")) || all.contains(&format!("grpc-status:{code}")))
                && all.contains(&fragment.to_ascii_lowercase()),
            "gRPC-Web: {all}"
        );
    }
    // Connect: malformed JSON and a body over the limit, the same codes.
    let (status, body) =
        connect_raw(h.addr, EXECUTE, &[], Bytes::from_static(b"{\"pattern_name\": ")).await.context("Connect")?;
    ensure!(status == 400 && body["code"] == "invalid_argument", "{status} {body}");
    let deep = format!("{{\"pattern_name\": \"x\", \"input\": {{\"a\": {}1{}}}}}", "[".repeat(300), "]".repeat(300));
    let (status, body) = connect_raw(h.addr, EXECUTE, &[], Bytes::from(deep)).await.context("Connect deep")?;
    ensure!(
        status == 400
            && body["message"]
                .as_str()
                .is_some_and(|m| m.contains("nests deeper than the limit of 100 levels of protobuf messages")),
        "{status} {body}"
    );
    // Deeper than JSON's own limit (a field that is not a Struct stops at the first array).
    let deep =
        format!("{{\"pattern_name\": \"x\", \"input\": {{}}, \"version\": {}1{}}}", "[".repeat(300), "]".repeat(300));
    let (status, body) = connect_raw(h.addr, EXECUTE, &[], Bytes::from(deep)).await.context("Connect deep")?;
    ensure!(
        status == 400 && body["message"].as_str().is_some_and(|m| m.contains("at `version`: expected a string")),
        "{status} {body}"
    );
    let big = Bytes::from(format!("{{\"pattern_name\": \"{}\"}}", "x".repeat(5 << 20)));
    let (status, body) = connect_early(h.addr, EXECUTE, big).await?;
    ensure!(status == 429 && body["code"] == "resource_exhausted", "{status} {body}");
    h.stop().await;
    Ok(())
}

/// ExecutePattern's own native path reads the gRPC framing itself: each way a body can break it
/// is refused with what is wrong, as tonic refuses it on the other methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_pattern_refuses_broken_grpc_framing_with_what_is_wrong() -> Result<()> {
    let h = Harness::start().await?;
    let request = pb::ExecutePatternRequest { pattern_name: "no_such_pattern".into(), ..Default::default() };
    let message = request.encode_to_vec();
    let whole = frame(0, &message);
    let mut compressed = whole.to_vec();
    compressed[0] = 1;
    let two = [whole.clone(), whole.clone()].concat();
    // body, extra headers → gRPC status, a fragment of its message.
    type Case<'a> = (Bytes, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (whole.clone(), vec![], "5", "no_such_pattern"),
        (Bytes::new(), vec![], "13", "Missing request message"),
        (whole.slice(..whole.len() - 1), vec![], "13", "ended inside its message"),
        (whole.slice(..3), vec![], "13", "5-byte prefix"),
        (Bytes::from(compressed), vec![], "13", "compressed-flag but no grpc-encoding"),
        (Bytes::from(two), vec![], "13", "more than one request message"),
        // A declared encoding goes to tonic, which names it and lists what it accepts.
        (whole.clone(), vec![("grpc-encoding", "gzip")], "12", "gzip"),
        (whole.clone(), vec![("grpc-encoding", "identity")], "5", "no_such_pattern"),
    ];
    for (body, extra, code, fragment) in cases {
        let shown = format!("{} bytes, {extra:?}", body.len());
        let (status, message, _) = grpc_raw_body(h.addr, EXECUTE, &extra, body).await.context(shown.clone())?;
        ensure!(
            status == code && message.contains(fragment),
            "{shown}: {status} {message:?}, expected {code} {fragment}"
        );
    }
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_takes_gzip_refuses_other_encodings_and_authenticates_before_reading() -> Result<()> {
    use std::io::Write as _;
    let h = Harness::start().await?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{}")?;
    let (status, body) = connect_raw(
        h.addr,
        "/nexus.v1.NexusService/WhoAmI",
        &[("content-encoding", "gzip")],
        Bytes::from(gz.finish()?),
    )
    .await?;
    ensure!(status == 200 && body["subject"].is_string(), "{status} {body}");
    let response = http1_post(
        h.addr,
        "/nexus.v1.NexusService/WhoAmI",
        &[("content-type", "application/json"), ("content-encoding", "br")],
        Bytes::from_static(b"{}"),
    )
    .await?;
    ensure!(response.status() == 501, "{}", response.status());
    ensure!(response.headers().get("accept-encoding").is_some_and(|v| v == "gzip"), "{:?}", response.headers());
    let (status, body) = connect_raw(
        h.addr,
        "/nexus.v1.NexusService/WhoAmI",
        &[("content-encoding", "gzip")],
        Bytes::from_static(b"nope"),
    )
    .await?;
    ensure!(status == 400 && body["message"].as_str().is_some_and(|m| m.contains("gzip")), "{status} {body}");
    h.stop().await;

    // With auth required, a request without credentials is refused before its body is read: a
    // body far over the limit still answers 401, not 429.
    let auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    let h = Harness::start_with(Options { auth, ..Options::default() }).await?;
    let big = Bytes::from(format!("{{\"pattern_name\": \"{}\"}}", "x".repeat(5 << 20)));
    let (status, body) = connect_early(h.addr, EXECUTE, big).await?;
    ensure!(status == 401 && body["code"] == "unauthenticated", "{status} {body}");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_finite_number_in_an_output_is_the_same_result_on_every_transport() -> Result<()> {
    let h = Harness::start().await?;
    let mut client = h.client.clone();
    register(
        &mut client,
        pattern(
            r#"
name: infinite
version: 1.0.0
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "a@example.com", subject: "s", body: "b"}
output:
  big: "${{ 1.0 / 0.0 }}"
  id: "${{ steps.mail.message_id }}"
"#,
        )?,
    )
    .await?;
    let out = client.execute_pattern(execute_request("infinite", json!({}))?).await?.into_inner();
    let native = to_json(out.output.as_ref().context("no output")?);
    ensure!(native["id"].is_string() && native["big"].is_null(), "{native}");
    let (status, body) =
        connect_raw(h.addr, EXECUTE, &[], Bytes::from(json!({"pattern_name": "infinite"}).to_string())).await?;
    ensure!(status == 200, "Connect: {status} {body}");
    ensure!(body["output"]["id"].is_string() && body["output"]["big"].is_null(), "{body}");
    h.stop().await;
    Ok(())
}

/// One request of the table, sent as is over every transport.
struct Case {
    what: &'static str,
    method: &'static str,
    request: Vec<u8>,
    /// gRPC code, and Connect's name of it.
    code: (&'static str, &'static str),
    /// Each must appear in the status message (or, for an OK answer, in the response as JSON).
    fragments: Vec<String>,
}

fn service_path(method: &str) -> String {
    format!("/nexus.v1.NexusService/{method}")
}

/// The request as Connect JSON (proto3 JSON mapping, via prost-reflect from our descriptors).
fn as_json(method: &str, request: &[u8]) -> Result<Bytes> {
    let pool = nexus_core::descriptor_pool();
    let service = pool.get_service_by_name("nexus.v1.NexusService").context("no NexusService")?;
    let input = service.methods().find(|m| m.name() == method).context("no such method")?.input();
    let message = prost_reflect::DynamicMessage::decode(input, request)?;
    Ok(Bytes::from(serde_json::to_vec(&message)?))
}

/// The answer's text as JSON (for OK answers), decoded with the method's output type.
fn response_json(method: &str, response: &[u8]) -> Result<String> {
    let pool = nexus_core::descriptor_pool();
    let service = pool.get_service_by_name("nexus.v1.NexusService").context("no NexusService")?;
    let output = service.methods().find(|m| m.name() == method).context("no such method")?.output();
    let message = prost_reflect::DynamicMessage::decode(output, response)?;
    Ok(serde_json::to_string(&message)?)
}

/// Every status message stays small, whatever the request held: the first diagnostics, then
/// "and N more", echoed input cut short.
const MAX_MESSAGE: usize = 16 << 10;

fn check_answer(transport: &str, case: &Case, code: &str, text: &str) -> Result<()> {
    ensure!(
        code == case.code.0 || code == case.code.1,
        "{}: {transport} answered {code}, expected {:?}: {}",
        case.what,
        case.code,
        text.chars().take(600).collect::<String>()
    );
    for fragment in &case.fragments {
        ensure!(
            text.contains(fragment.as_str()),
            "{}: {transport}'s answer should say {fragment:?}: {}",
            case.what,
            text.chars().take(600).collect::<String>()
        );
    }
    if code != "0" && code != "ok" {
        ensure!(text.len() <= MAX_MESSAGE, "{}: {transport}'s message is {} bytes", case.what, text.len());
    }
    Ok(())
}

fn pattern_with(f: impl FnOnce(&mut nexus_core::pb::Pattern)) -> Result<nexus_core::pb::Pattern> {
    let mut doc = pattern(
        r#"
name: careless
version: 1.0.0
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "a@example.com", subject: "s", body: "b"}
"#,
    )?;
    f(&mut doc);
    Ok(doc)
}

fn register_request(doc: nexus_core::pb::Pattern) -> Vec<u8> {
    use prost::Message as _;
    nexus_core::pb::RegisterPatternRequest { pattern: Some(doc) }.encode_to_vec()
}

/// Issue 11's defects, table-driven: each careless or hostile request answers the same code and
/// the same clear message over native gRPC, gRPC-Web and Connect, in bounded time and size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_defect_found_by_probing_answers_one_clear_code_on_every_transport() -> Result<()> {
    use prost::Message as _;
    let h = Harness::start_with(Options { cel_cost: Some((200_000, 10_000_000)), ..Options::default() }).await?;
    let mut client = h.client.clone();
    register(
        &mut client,
        pattern(
            r#"
name: costly
version: 1.0.0
steps:
  - id: mail
    when: "${{ input.xs.all(a, input.xs.all(b, input.xs.all(c, input.xs.all(d, a + b + c + d >= 0)))) }}"
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "a@example.com", subject: "s", body: "b"}
"#,
        )?,
    )
    .await?;

    let mut cases = vec![
        Case {
            what: "20,000 bad steps",
            method: "RegisterPattern",
            request: register_request(pattern_with(|d| {
                let step = d.steps[0].clone();
                d.steps = (0..20_000)
                    .map(|i| {
                        let mut s = step.clone();
                        s.id = format!("s{i}");
                        s.call = format!("no.Such/Call{i}");
                        s
                    })
                    .collect();
            })?),
            code: ("3", "invalid_argument"),
            fragments: vec!["20000 steps; the limit is 256".into()],
        },
        Case {
            what: "3,000 expressions",
            method: "ValidatePattern",
            request: {
                let doc = pattern_with(|d| {
                    d.description = String::new();
                    let mut with = prost_types::Struct::default();
                    for i in 0..3000 {
                        with.fields.insert(
                            format!("f{i}"),
                            prost_types::Value {
                                kind: Some(prost_types::value::Kind::StringValue(format!(
                                    "${{{{ input.a{i} + '{}' }}}}",
                                    "x".repeat(200)
                                ))),
                            },
                        );
                    }
                    d.steps[0].with = Some(with);
                })?;
                nexus_core::pb::ValidatePatternRequest { pattern: Some(doc) }.encode_to_vec()
            },
            code: ("0", "ok"),
            fragments: vec!["3000".into(), "a document may have at most 2000".into()],
        },
        Case {
            what: "a version of 100,006 characters",
            method: "RegisterPattern",
            request: register_request(pattern_with(|d| d.version = format!("1.0.0-{}", "a".repeat(100_000)))?),
            code: ("3", "invalid_argument"),
            fragments: vec!["100006 characters long; a version is at most 64".into()],
        },
        Case {
            what: "a description of 900 KB",
            method: "RegisterPattern",
            request: register_request(pattern_with(|d| d.description = "d".repeat(900_000))?),
            code: ("3", "invalid_argument"),
            fragments: vec!["900000 bytes; a description is at most 4096".into()],
        },
        Case {
            what: "40 tags",
            method: "RegisterPattern",
            request: register_request(pattern_with(|d| d.tags = (0..40).map(|i| format!("t{i}")).collect())?),
            code: ("3", "invalid_argument"),
            fragments: vec!["40 tags; at most 32".into()],
        },
        Case {
            what: "an int into a string field",
            method: "RegisterPattern",
            request: register_request(pattern_with(|d| {
                if let Some(with) = d.steps[0].with.as_mut() {
                    with.fields.insert(
                        "to".into(),
                        prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("${{ 1 + 2 }}".into())) },
                    );
                }
            })?),
            code: ("3", "invalid_argument"),
            fragments: vec!["steps[0].with.to".into()],
        },
        Case {
            what: "a search term of 100,000 characters",
            method: "ListPatterns",
            request: nexus_core::pb::ListPatternsRequest { query: "x".repeat(100_000), ..Default::default() }
                .encode_to_vec(),
            code: ("3", "invalid_argument"),
            fragments: vec!["`query` is 100000 bytes long; a search term is at most 256".into()],
        },
        Case {
            what: "a costly expression",
            method: "ExecutePattern",
            request: execute_request("costly", json!({"xs": (0..40).collect::<Vec<i64>>()}))?.encode_to_vec(),
            code: ("8", "resource_exhausted"),
            fragments: vec!["`mail`".into(), "200000 cost units".into()],
        },
        Case {
            what: "an unknown pattern with a name of 100,000 characters",
            method: "ExecutePattern",
            request: execute_request(&"n".repeat(100_000), json!({}))?.encode_to_vec(),
            code: ("3", "invalid_argument"),
            fragments: vec!["a pattern name is at most 128".into()],
        },
    ];

    for case in &mut cases {
        let path = service_path(case.method);
        let started = std::time::Instant::now();
        // Native gRPC.
        let (code, message, body) = grpc_raw(h.addr, &path, &case.request).await.context(case.what)?;
        let text = if code == "0" { response_json(case.method, body.get(5..).unwrap_or_default())? } else { message };
        check_answer("gRPC", case, &code, &text)?;
        // gRPC-Web over HTTP/1.1.
        let response = http1_post(
            h.addr,
            &path,
            &[("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")],
            frame(0, &case.request),
        )
        .await
        .context(case.what)?;
        let body = crate::transports::parse_grpc_web(response.body().clone())?;
        let code = crate::transports::grpc_web_status(&response, &body).unwrap_or_default();
        let text = if code == "0" {
            response_json(case.method, body.messages.first().map(|b| &b[..]).unwrap_or_default())?
        } else {
            let raw = body
                .trailers
                .get("grpc-message")
                .cloned()
                .or_else(|| response.headers().get("grpc-message").and_then(|v| v.to_str().ok()).map(String::from))
                .unwrap_or_default();
            percent_encoding::percent_decode_str(&raw).decode_utf8_lossy().into_owned()
        };
        check_answer("gRPC-Web", case, &code, &text)?;
        // Connect unary JSON.
        let (status, body) = connect_raw(h.addr, &path, &[], as_json(case.method, &case.request)?).await?;
        let (code, text) = if status == 200 {
            ("ok".to_string(), body.to_string())
        } else {
            (body["code"].as_str().unwrap_or_default().to_string(), body["message"].as_str().unwrap_or_default().into())
        };
        check_answer("Connect", case, &code, &text)?;
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{}: three answers took {:?}",
            case.what,
            started.elapsed()
        );
    }
    ensure!(h.demo.calls(nexus_demo::method::SEND_EMAIL) == 0, "a refused request ran a step");

    // The highest version there can be does not burn the name: deprecated, it stops being the
    // latest, and the next registration is what runs.
    let top = "18446744073709551615.18446744073709551615.18446744073709551615";
    register(&mut client, pattern_with(|d| d.version = top.into())?).await?;
    let refused = client
        .register_pattern(nexus_core::pb::RegisterPatternRequest {
            pattern: Some(pattern_with(|d| d.version = "1.0.1".into())?),
        })
        .await
        .err()
        .context("a lower version was accepted")?;
    ensure!(refused.code() == tonic::Code::FailedPrecondition, "{refused:?}");
    let request = nexus_core::pb::DeprecatePatternRequest {
        name: "careless".into(),
        version: top.into(),
        reason: "registered by mistake".into(),
        undo: false,
    };
    client.deprecate_pattern(request).await?;
    register(&mut client, pattern_with(|d| d.version = "1.0.1".into())?).await?;
    let out = client.execute_pattern(execute_request("careless", json!({}))?).await?.into_inner();
    let ran = crate::common::get_execution(&mut client, &out.execution_id).await?;
    ensure!(ran.pattern_version == "1.0.1", "ran {:?}", ran.pattern_version);
    h.stop().await;
    Ok(())
}

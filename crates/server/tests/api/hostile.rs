//! Careless and hostile requests answer one clear code on every transport (issue 11's
//! regressions, table-driven): what was sent → the gRPC code (and Connect's HTTP status) and a
//! fragment of the message.

use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::{
    common::{Harness, Options, execute_request, pattern, register, to_json},
    transports::{frame, http1_post},
};

const EXECUTE: &str = "/nexus.v1.NexusService/ExecutePattern";

/// A native gRPC call over h2c with a raw payload: (grpc-status, grpc-message, message frames).
async fn grpc_raw(addr: SocketAddr, path: &str, payload: &[u8]) -> Result<(String, String, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame(0, payload)))?;
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

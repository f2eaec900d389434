//! `POST /events`, the CloudEvents HTTP binding, over hand-made HTTP/1.1 and h2c connections:
//! structured, binary and batch events trigger patterns and resume waits, duplicates are reported,
//! and every refusal has its status and a JSON error naming the field.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nexus_core::pb;
use serde_json::{Value, json};

use crate::common::*;

const STRUCTURED: &str = "application/cloudevents+json";

/// One request over a fresh HTTP/1.1 connection; the status and the body as JSON (`null` when
/// the body is not JSON).
async fn http1(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<(http::StatusCode, Value)> {
    let stream = tokio::net::TcpStream::connect(addr).await.context("connecting")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP/1.1 handshake")?;
    let connection = tokio::spawn(connection);
    let mut request = http::Request::builder().method(method).uri("/events").header(HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender.send_request(request.body(Full::new(body.into()))?).await.context("sending")?;
    let status = response.status();
    let body = response.into_body().collect().await.context("reading the response")?.to_bytes();
    connection.abort();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Result<(http::StatusCode, Value)> {
    http1(addr, "POST", headers, body).await
}

fn structured(id: &str, event_type: &str, data: Value) -> String {
    json!({"specversion": "1.0", "id": id, "source": "https://hooks.example.com", "type": event_type,
        "time": "2024-05-01T10:00:00Z", "data": data})
    .to_string()
}

async fn executions(client: &mut Client, pattern: &str) -> Result<Vec<pb::Execution>> {
    Ok(client
        .list_executions(pb::ListExecutionsRequest {
            pattern_name: pattern.into(),
            status: pb::ExecutionStatus::Unspecified as i32,
            page_size: 1000,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .executions)
}

/// A structured `user.created` starts welcome_series (once, however often it is posted); a
/// binary `user.verified` resumes its wait.
#[tokio::test]
async fn structured_and_binary_events_trigger_and_resume_a_pattern() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    register(&mut h.client, pattern_file("welcome_series")?).await?;
    let user = format!("usr_hook_{}", uuid::Uuid::now_v7().simple());
    let created = structured(
        &format!("{user}/created"),
        "user.created",
        json!({"user_id": user, "email": unique_email("hook"), "name": "Hook"}),
    );
    let (status, body) = post(h.addr, &[("content-type", STRUCTURED)], created.clone()).await?;
    ensure!(status == http::StatusCode::ACCEPTED, "{status} {body}");
    ensure!(body["id"] == format!("{user}/created") && body["source"] == "https://hooks.example.com", "{body}");
    ensure!(body["duplicate"] == false, "{body}");
    let (status, again) = post(h.addr, &[("content-type", STRUCTURED)], created).await?;
    ensure!(status == http::StatusCode::ACCEPTED && again["duplicate"] == true, "{status} {again}");

    let waiting = eventually(Duration::from_secs(5), "welcome_series started", async || {
        let all = executions(&mut h.client, "welcome_series").await?;
        ensure!(all.len() == 1, "{} executions", all.len());
        Ok(all[0].id.clone())
    })
    .await?;
    let verified_id = format!("{user}/verified");
    let data = json!({"user_id": user}).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", verified_id.as_str()),
        // Percent-encoded, as the HTTP binding encodes header values.
        ("ce-source", "https%3A%2F%2Fhooks.example.com"),
        ("ce-type", "user.verified"),
        ("ce-subject", user.as_str()),
        ("ce-time", "2024-05-01T10:05:00+02:00"),
    ];
    let (status, body) = post(h.addr, &headers, data).await?;
    ensure!(status == http::StatusCode::ACCEPTED, "{status} {body}");
    ensure!(body["source"] == "https://hooks.example.com" && body["duplicate"] == false, "{body}");
    eventually(Duration::from_secs(5), "welcome_series succeeded", async || {
        let e = get_execution(&mut h.client, &waiting).await?;
        ensure!(e.status == pb::ExecutionStatus::Succeeded as i32, "status {}", e.status);
        Ok(())
    })
    .await?;
    ensure!(executions(&mut h.client, "welcome_series").await?.len() == 1, "one execution for the event");
    h.stop().await;
    Ok(())
}

const HOOKED: &str = r#"
name: hooked
version: 1.0.0
durability: durable
on:
  - event: hook.ping
input: {type: object, required: [n], properties: {n: {type: string}}}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "hooked@example.com", subject: "${{ input.n }}"}
output:
  n: "${{ input.n }}"
"#;

/// A batch publishes each event (a duplicate inside it says so); an invalid event anywhere in a
/// batch publishes none of it. Over h2c too.
#[tokio::test]
async fn a_batch_publishes_every_event_or_none() -> Result<()> {
    let mut h = Harness::start().await?;
    register(&mut h.client, pattern(HOOKED)?).await?;
    let ping =
        |id: &str| json!({"specversion": "1.0", "id": id, "source": "batch", "type": "hook.ping", "data": {"n": id}});
    let bad = json!([ping("b1"), {"specversion": "1.0", "id": "b2", "source": "batch"}]).to_string();
    let (status, body) = post(h.addr, &[("content-type", "application/cloudevents-batch+json")], bad).await?;
    ensure!(status == http::StatusCode::BAD_REQUEST, "{status} {body}");
    ensure!(body["error"].as_str().is_some_and(|e| e.starts_with("events[1].type")), "{body}");

    let batch = json!([ping("b1"), ping("b2"), ping("b1")]).to_string();
    let (status, body) = post(h.addr, &[("content-type", "application/cloudevents-batch+json")], batch).await?;
    ensure!(status == http::StatusCode::ACCEPTED, "{status} {body}");
    let duplicates: Vec<&Value> = body.as_array().context("a list")?.iter().map(|r| &r["duplicate"]).collect();
    ensure!(duplicates == [&json!(false), &json!(false), &json!(true)], "{body}");

    // h2c (HTTP/2 without TLS, prior knowledge), as an HTTP/2 webhook sender would.
    let stream = tokio::net::TcpStream::connect(h.addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/events", h.addr))
        .header(CONTENT_TYPE, STRUCTURED)
        .body(Full::new(Bytes::from(ping("h2").to_string())))?;
    let response = sender.send_request(request).await?;
    ensure!(response.version() == http::Version::HTTP_2 && response.status() == http::StatusCode::ACCEPTED);
    connection.abort();

    eventually(Duration::from_secs(5), "three executions of hooked", async || {
        let all = executions(&mut h.client, "hooked").await?;
        let done = all.iter().filter(|e| e.status == pb::ExecutionStatus::Succeeded as i32).count();
        ensure!(all.len() == 3 && done == 3, "{} executions, {done} succeeded", all.len());
        Ok(())
    })
    .await?;
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn refusals_have_their_status_and_name_the_field() -> Result<()> {
    let h = Harness::start().await?;
    let binary = |ty: Option<&'static str>| {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "r1"),
            ("ce-source", "refusals"),
        ];
        if let Some(t) = ty {
            headers.push(("ce-type", t));
        }
        headers
    };
    let (status, body) = post(h.addr, &binary(None), "{}").await?;
    ensure!(status == http::StatusCode::BAD_REQUEST, "{status} {body}");
    ensure!(body["error"].as_str().is_some_and(|e| e.starts_with("ce-type:")), "{body}");
    let (status, body) = post(h.addr, &binary(Some("no spaces")), "{}").await?;
    ensure!(status == http::StatusCode::BAD_REQUEST && body["error"].as_str().is_some_and(|e| e.contains("ce-type")));
    let (status, body) = post(h.addr, &binary(Some("t.x")), "{not json").await?;
    ensure!(status == http::StatusCode::BAD_REQUEST && body["error"].as_str().is_some_and(|e| e.starts_with("body")));
    let no_time = json!({"specversion": "1.0", "id": "r", "source": "s", "type": "t.x", "time": "noon"}).to_string();
    let (status, body) = post(h.addr, &[("content-type", STRUCTURED)], no_time).await?;
    ensure!(status == http::StatusCode::BAD_REQUEST, "{status} {body}");
    ensure!(body["error"].as_str().is_some_and(|e| e.starts_with("event.time")), "{body}");

    // Past 1 MiB: refused (its declared length is enough; a chunked body is cut at the limit).
    let big = format!(
        r#"{{"specversion":"1.0","id":"b","source":"s","type":"t.x","data":{{"x":"{}"}}}}"#,
        "a".repeat(1 << 20)
    );
    let (status, body) = post(h.addr, &[("content-type", STRUCTURED)], big.clone()).await?;
    ensure!(status == http::StatusCode::PAYLOAD_TOO_LARGE, "{status} {body}");
    ensure!(body["error"].as_str().is_some_and(|e| e.starts_with("body")), "{body}");

    ensure!(chunked_past_the_limit(h.addr).await?.starts_with("HTTP/1.1 413"), "a chunked body past 1 MiB");

    let (status, _) = post(h.addr, &[("content-type", "text/plain")], "hello").await?;
    ensure!(status == http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "{status}");
    let (status, body) = http1(h.addr, "GET", &[], Bytes::new()).await?;
    ensure!(status == http::StatusCode::METHOD_NOT_ALLOWED && body["error"].is_string(), "{status} {body}");
    h.stop().await;
    Ok(())
}

/// A chunked body (no declared length) of 2 MiB, written by hand; the status line of the answer.
/// The server stops reading at the limit, so writing may fail once it has answered.
async fn chunked_past_the_limit(addr: SocketAddr) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {STRUCTURED}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
    for _ in 0..32 {
        if tcp.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer)).await??;
    Ok(String::from_utf8_lossy(&answer[..n]).into_owned())
}

/// With `require_auth`, the endpoint takes the same credentials as gRPC: none → 401, a viewer →
/// 403 (audited), a runner (bearer or x-api-key) → 202.
#[tokio::test]
async fn credentials_and_roles_are_those_of_grpc() -> Result<()> {
    use nexus_store::AuthStore;
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    let h =
        Harness::start_with(Options { data_dir: Some(dir.path().to_path_buf()), auth, ..Default::default() }).await?;
    let (viewer, record) = nexus_store::api_key::generate("acme", "watcher", &["viewer".to_string()]);
    store.insert_api_key(&record).await?;
    let (runner, record) = nexus_store::api_key::generate("acme", "hook", &["runner".to_string()]);
    store.insert_api_key(&record).await?;
    let event = structured("a1", "hook.ping", json!({"n": "x"}));

    let (status, body) = post(h.addr, &[("content-type", STRUCTURED)], event.clone()).await?;
    ensure!(status == http::StatusCode::UNAUTHORIZED && body["error"].is_string(), "{status} {body}");
    let bad = [("content-type", STRUCTURED), ("authorization", "Bearer nxs_nope_nope")];
    let (status, _) = post(h.addr, &bad, event.clone()).await?;
    ensure!(status == http::StatusCode::UNAUTHORIZED, "{status}");
    let bearer = format!("Bearer {viewer}");
    let (status, body) =
        post(h.addr, &[("content-type", STRUCTURED), ("authorization", &bearer)], event.clone()).await?;
    ensure!(status == http::StatusCode::FORBIDDEN, "{status} {body}");
    ensure!(body["error"].as_str().is_some_and(|e| e.contains("runner")), "{body}");
    let (status, body) = post(h.addr, &[("content-type", STRUCTURED), ("x-api-key", &runner)], event).await?;
    ensure!(status == http::StatusCode::ACCEPTED, "{status} {body}");

    let refusal = eventually(Duration::from_secs(5), "the refusal is audited", async || {
        let log = store.audit_log(100).await?;
        log.into_iter().find(|e| e.subject == "watcher").context("no audit entry for the viewer")
    })
    .await?;
    ensure!(refusal.action == "POST /events" && refusal.tenant == "acme", "{refusal:?}");
    h.stop().await;
    Ok(())
}

//! The Connect protocol's unary JSON, so `curl` and `fetch` can call Nexus:
//! `POST /nexus.v1.NexusService/ExecutePattern` with `Content-Type: application/json`.
//!
//! Rather than a second implementation of every RPC, a Connect request is translated into a gRPC
//! request (JSON → protobuf via the API's descriptors), served by the same tonic service, and the
//! gRPC response (or status) translated back. One code path serves all three transports.

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{DynamicMessage, MethodDescriptor, SerializeOptions};
use serde_json::json;
use tower::ServiceExt;

use crate::error::{RpcStatus, TYPE_URL_PREFIX};

/// Largest Connect request body accepted.
pub const MAX_BODY_BYTES: usize = 4 << 20;

const SERVICE: &str = "nexus.v1.NexusService";

/// What the Connect middleware needs: the gRPC router it translates to, and the authenticator
/// that checks credentials before a body is read.
#[derive(Clone)]
pub struct Connect {
    pub grpc: axum::Router,
    pub auth: std::sync::Arc<crate::auth::Authenticator>,
}

/// Axum middleware: Connect unary JSON requests are answered here, everything else passes on.
pub async fn middleware(State(connect): State<Connect>, req: Request, next: Next) -> Response {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let path = req.uri().path();
    // `/package.Service/Method`: an RPC path (not the UI, not /events).
    let rpc = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(service, method)| service.contains('.') && !method.is_empty() && !method.contains('/'));
    let Some((service, _)) = rpc else { return next.run(req).await };
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let grpc_type = content_type.starts_with("application/grpc");
    if !grpc_type && req.method() != http::Method::POST && req.method() != http::Method::OPTIONS {
        // Connect's GET form of idempotent calls is not served: say so, in Connect's shape.
        let mut headers = HeaderMap::new();
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        return with_status(
            connect_error(
                tonic::Code::Unimplemented,
                &format!("{} {path}: RPCs take POST (Connect unary JSON, gRPC-Web or gRPC)", req.method()),
                &[],
                headers,
            ),
            StatusCode::METHOD_NOT_ALLOWED,
        );
    }
    if req.method() == http::Method::POST && !grpc_type && !is_json {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HeaderName::from_static("accept-post"),
            HeaderValue::from_static(
                "application/json, application/grpc-web, application/grpc-web+proto, application/grpc",
            ),
        );
        let shown: String = content_type.chars().take(80).collect();
        return with_status(
            connect_error(
                tonic::Code::InvalidArgument,
                &format!(
                    "Content-Type `{shown}` is not served: send application/json (Connect), application/grpc-web (gRPC-Web) or application/grpc"
                ),
                &[],
                headers,
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        );
    }
    if req.method() != http::Method::POST || !is_json {
        return next.run(req).await;
    }
    if service != SERVICE {
        let shown: String = service.chars().take(120).collect();
        return connect_error(
            tonic::Code::Unimplemented,
            &format!("no service `{shown}` here: Connect JSON serves {SERVICE}"),
            &[],
            HeaderMap::new(),
        );
    }
    let method_name = path.rsplit('/').next().unwrap_or_default().to_string();
    let Some(method) = nexus_core::descriptor_pool()
        .get_service_by_name(SERVICE)
        .and_then(|s| s.methods().find(|m| m.name() == method_name))
    else {
        return connect_error(
            tonic::Code::Unimplemented,
            &format!("{SERVICE} has no method `{method_name}`"),
            &[],
            HeaderMap::new(),
        );
    };
    if method.is_client_streaming() || method.is_server_streaming() {
        return connect_error(
            tonic::Code::Unimplemented,
            &format!("{method_name} is a streaming method: use gRPC or gRPC-Web for it"),
            &[],
            HeaderMap::new(),
        );
    }
    // Credentials first: a caller who may not call anything costs no body read and no parse.
    // (The gRPC router authenticates again; verified keys are cached, so that is a map lookup.)
    if let Err(e) = connect.auth.authenticate(req.headers()).await {
        let status = tonic::Status::from(e);
        return connect_error(status.code(), status.message(), &[], HeaderMap::new());
    }
    match unary(connect.grpc, method, req).await {
        Ok(r) | Err(r) => r,
    }
}

async fn unary(grpc: axum::Router, method: MethodDescriptor, req: Request) -> Result<Response, Response> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        connect_error(
            tonic::Code::ResourceExhausted,
            &format!("cannot read the request body (limit {MAX_BODY_BYTES} bytes): {e}"),
            &[],
            HeaderMap::new(),
        )
    })?;
    // Connect's request compression: gzip (bounded like the body itself), or none.
    let encoding = parts.headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let body = match encoding.trim() {
        "" | "identity" => body,
        "gzip" => {
            use std::io::Read as _;
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(body.as_ref())
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    connect_error(
                        tonic::Code::InvalidArgument,
                        &format!("the body is not valid gzip: {e}"),
                        &[],
                        HeaderMap::new(),
                    )
                })?;
            if read > MAX_BODY_BYTES {
                return Err(connect_error(
                    tonic::Code::ResourceExhausted,
                    &format!("the request body is more than {MAX_BODY_BYTES} bytes once decompressed"),
                    &[],
                    HeaderMap::new(),
                ));
            }
            bytes::Bytes::from(out)
        }
        other => {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            let shown: String = other.chars().take(40).collect();
            return Err(connect_error(
                tonic::Code::Unimplemented,
                &format!("Content-Encoding `{shown}` is not supported: send gzip or an uncompressed body"),
                &[],
                headers,
            ));
        }
    };
    // JSON → protobuf without an intermediate tree: one pass validates and measures, the second
    // writes the gRPC frame in a buffer of exactly its size (memory: the body plus its encoding).
    let invalid = |e: nexus_core::transcode::TranscodeError| {
        connect_error(tonic::Code::InvalidArgument, &e.message, &[], HeaderMap::new())
    };
    let input = method.input();
    let len = nexus_core::transcode::encoded_len(&input, &body).map_err(invalid)?;
    let Ok(frame_len) = u32::try_from(len) else {
        return Err(connect_error(
            tonic::Code::ResourceExhausted,
            &format!("the request is {len} bytes once encoded, more than a gRPC frame holds"),
            &[],
            HeaderMap::new(),
        ));
    };
    let mut frame = Vec::with_capacity(len + 5);
    frame.push(0);
    frame.extend_from_slice(&frame_len.to_be_bytes());
    nexus_core::transcode::encode_into(&input, &body, &mut frame).map_err(invalid)?;
    drop(body);

    let mut grpc_req = http::Request::builder()
        .method(http::Method::POST)
        .uri(parts.uri)
        .version(http::Version::HTTP_2)
        .body(Body::from(frame))
        .map_err(|e| connect_error(tonic::Code::Internal, &e.to_string(), &[], HeaderMap::new()))?;
    let headers = grpc_req.headers_mut();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if n == "content-type"
            || n == "content-length"
            || n == "content-encoding"
            || n.starts_with("connect-")
            || n == "accept-encoding"
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(ms) = parts.headers.get("connect-timeout-ms").and_then(|v| v.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(&format!("{}m", ms.trim()))
    {
        headers.insert("grpc-timeout", v);
    }

    let response = match grpc.oneshot(grpc_req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let (rparts, rbody) = response.into_parts();
    let collected = rbody.collect().await.map_err(|e| {
        connect_error(tonic::Code::Internal, &format!("reading the response: {e}"), &[], HeaderMap::new())
    })?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    // A trailers-only response (typical for errors) carries the status in the headers.
    let lookup = |name: &str| trailers.get(name).or_else(|| rparts.headers.get(name)).and_then(|v| v.to_str().ok());
    let code = lookup("grpc-status").and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
    let mut extra = HeaderMap::new();
    for (name, value) in rparts.headers.iter().chain(trailers.iter()) {
        if name.as_str().starts_with("nexus-") {
            extra.insert(name.clone(), value.clone());
        }
    }
    if code != 0 {
        let message = lookup("grpc-message")
            .map(|m| percent_encoding::percent_decode_str(m).decode_utf8_lossy().into_owned())
            .unwrap_or_default();
        let details = lookup("grpc-status-details-bin").map(decode_details).unwrap_or_default();
        return Err(connect_error(tonic::Code::from(code), &message, &details, extra));
    }
    if data.len() < 5 {
        return Err(connect_error(tonic::Code::Internal, "the service returned no message", &[], extra));
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let bytes = data.slice(5..(5 + len).min(data.len()));
    let out = DynamicMessage::decode(method.output(), bytes).map_err(|e| {
        connect_error(tonic::Code::Internal, &format!("decoding the response: {e}"), &[], extra.clone())
    })?;
    // Straight to text, without a serde_json::Value in between.
    let mut json = Vec::new();
    out.serialize_with_options(
        &mut serde_json::Serializer::new(&mut json),
        &SerializeOptions::new().use_proto_field_name(true),
    )
    .map_err(|e| connect_error(tonic::Code::Internal, &e.to_string(), &[], extra.clone()))?;
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response();
    resp.headers_mut().extend(extra);
    Ok(resp)
}

/// Decodes `grpc-status-details-bin` into Connect error details (`type`, `value`, `debug`).
fn decode_details(b64: &str) -> Vec<serde_json::Value> {
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let Ok(bytes) = engine.decode(b64.trim_end_matches('=')) else { return Vec::new() };
    let Ok(status) = RpcStatus::decode(bytes.as_slice()) else { return Vec::new() };
    status
        .details
        .iter()
        .map(|any| {
            let type_name = any.type_url.strip_prefix(TYPE_URL_PREFIX).unwrap_or(&any.type_url);
            let debug = nexus_core::descriptor_pool()
                .get_message_by_name(type_name)
                .and_then(|desc| DynamicMessage::decode(desc, any.value.as_slice()).ok())
                .and_then(|m| {
                    m.serialize_with_options(
                        serde_json::value::Serializer,
                        &SerializeOptions::new().use_proto_field_name(true),
                    )
                    .ok()
                });
            json!({"type": type_name, "value": engine.encode(&any.value), "debug": debug})
        })
        .collect()
}

/// The Connect error body, with the HTTP status the Connect protocol assigns to each code.
/// `response` with another HTTP status (the protocol's own for the case, e.g. 415), same body.
fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

fn connect_error(code: tonic::Code, message: &str, details: &[serde_json::Value], extra: HeaderMap) -> Response {
    use tonic::Code as C;
    let http = match code {
        C::Cancelled => 499,
        C::InvalidArgument | C::FailedPrecondition | C::OutOfRange => 400,
        C::DeadlineExceeded => 504,
        C::NotFound => 404,
        C::AlreadyExists | C::Aborted => 409,
        C::PermissionDenied => 403,
        C::ResourceExhausted => 429,
        C::Unimplemented => 501,
        C::Unavailable => 503,
        C::Unauthenticated => 401,
        _ => 500,
    };
    let name = nexus_engine::code_name(code).to_lowercase().replace("cancelled", "canceled");
    let mut body = json!({"code": name, "message": message});
    if !details.is_empty() {
        body["details"] = serde_json::Value::Array(details.to_vec());
    }
    let status = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    resp.headers_mut().extend(extra);
    resp
}

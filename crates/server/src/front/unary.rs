//! ExecutePattern, the hot path, without tonic's server glue: the request's one message read from
//! the body as it arrives (no 8 KiB decode buffer, no boxed decoder and stream), the response
//! written as one frame of exactly its size, and the trailers as a header map of one entry — the
//! server-side counterpart of the invoker's hand-written client calls (`invoker/call.rs`).
//!
//! It answers what tonic answers: the same size limit (4 MiB), the same statuses for a message
//! that is not protobuf (INVALID_ARGUMENT, `codec::not_protobuf`) or too large
//! (RESOURCE_EXHAUSTED, as the front rewrites tonic's OUT_OF_RANGE), a trailers-only response
//! for every error. Compressed requests are left to tonic (see [`takes`]).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{body::Body, extract::Request, response::Response};
use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, header};
use http_body::Frame;
use http_body_util::BodyExt as _;
use nexus_core::pb;
use prost::Message as _;
use tonic::Status;

use crate::api::Api;

/// The one method served here.
pub(super) const PATH: &str = "/nexus.v1.NexusService/ExecutePattern";
/// The largest request message, tonic's server default (the other methods keep tonic's).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// A gRPC message's prefix: the compressed flag and the length, big-endian.
const PREFIX: usize = 5;

/// Whether a call takes this path: ExecutePattern with an uncompressed message. A request
/// declaring a `grpc-encoding` goes to tonic, which answers UNIMPLEMENTED naming the encoding and
/// listing what it accepts.
pub(super) fn takes(req: &Request) -> bool {
    req.uri().path() == PATH && req.headers().get(crate::headers::GRPC_ENCODING).is_none_or(|v| v == "identity")
}

/// The call's response: the execution's, or a trailers-only response carrying the refusal.
pub(super) async fn serve(api: &Api, req: Request) -> Response {
    match call(api, req).await {
        Ok(response) => response,
        Err(status) => status.into_http(),
    }
}

async fn call(api: &Api, req: Request) -> Result<Response, Status> {
    let (mut parts, body) = req.into_parts();
    let (message, trailers) = read_message(body).await?;
    let message = pb::ExecutePatternRequest::decode(message)
        .map_err(|e| crate::codec::not_protobuf::<pb::ExecutePatternRequest>(&e.to_string()))?;
    // The request's trailers (rare) join its metadata, as tonic's server does.
    if let Some(trailers) = trailers {
        parts.headers.extend(trailers);
    }
    let request = tonic::Request::from_http(http::Request::from_parts(parts, message));
    // Boxed: the execution's future is large (the engine's, inline), and this one is moved into
    // the front's box; held by pointer, the move copies a few words instead of all of it.
    let response = Box::pin(api.execute_pattern(request)).await.map_err(Status::from)?;
    let (metadata, message, _) = response.into_parts();
    let len = message.encoded_len();
    let Ok(frame_len) = u32::try_from(len) else {
        return Err(Status::resource_exhausted(format!(
            "the response is {len} bytes, more than a gRPC message can hold (4 GiB)"
        )));
    };
    let mut frame = BytesMut::with_capacity(PREFIX + len);
    frame.put_u8(0);
    frame.put_u32(frame_len);
    // The buffer has room for exactly the encoding, so encoding cannot fail.
    message.encode_raw(&mut frame);
    let mut headers = metadata.into_headers();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let mut response = Response::new(Body::new(OneMessage { data: Some(frame.freeze()), trailers: true }));
    *response.headers_mut() = headers;
    Ok(response)
}

/// The request's message (without its prefix) and the request's trailers, if it had any. Reads at
/// most one message of at most [`MAX_MESSAGE`] bytes: what is held never exceeds that plus the
/// prefix, whatever the caller sends.
async fn read_message(mut body: Body) -> Result<(Bytes, Option<HeaderMap>), Status> {
    // The common case is the whole message in one DATA frame, kept as it came (no copy); a message
    // split across frames is gathered into `gathered`.
    let mut first: Option<Bytes> = None;
    let mut gathered = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::from_error(e.into()))?;
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        match first.take() {
            None if gathered.is_empty() => first = Some(data),
            Some(held) => {
                gathered.extend_from_slice(&held);
                gathered.extend_from_slice(&data);
            }
            None => gathered.extend_from_slice(&data),
        }
        let held: &[u8] = first.as_deref().unwrap_or(&gathered[..]);
        if let Some(declared) = declared_len(held)? {
            if held.len() > PREFIX + declared {
                return Err(Status::internal(
                    "protocol error: more than one request message for the unary method ExecutePattern",
                ));
            }
            if gathered.capacity() < PREFIX + declared && first.is_none() {
                gathered.reserve(PREFIX + declared - gathered.len());
            }
        }
    }
    let mut held = match first {
        Some(data) => data,
        None => gathered.freeze(),
    };
    if held.is_empty() {
        return Err(Status::internal("Missing request message."));
    }
    match declared_len(&held)? {
        Some(declared) if held.len() == PREFIX + declared => {
            let message = held.split_off(PREFIX);
            Ok((message, trailers))
        }
        Some(declared) => Err(Status::internal(format!(
            "the request ended inside its message: {} of its {declared} bytes arrived",
            held.len() - PREFIX
        ))),
        None => Err(Status::internal(format!(
            "the request ended inside a message's 5-byte prefix ({} bytes arrived)",
            held.len()
        ))),
    }
}

/// The length a message's prefix declares, once the prefix has arrived; refuses a compressed
/// message (no `grpc-encoding` was declared) and one over the limit.
fn declared_len(held: &[u8]) -> Result<Option<usize>, Status> {
    let Some(prefix) = held.get(..PREFIX) else { return Ok(None) };
    match prefix[0] {
        0 => {}
        // https://grpc.github.io/grpc/core/md_doc_compression.html: INTERNAL, naming the flag.
        1 => {
            return Err(Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ));
        }
        f => {
            return Err(Status::internal(format!(
                "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1)"
            )));
        }
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(Status::resource_exhausted(format!(
            "the request message is too large: found {len} bytes, the limit is: {MAX_MESSAGE} bytes"
        )));
    }
    Ok(Some(len))
}

/// A response body of one message and the OK trailers.
struct OneMessage {
    data: Option<Bytes>,
    trailers: bool,
}

impl http_body::Body for OneMessage {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if std::mem::take(&mut self.trailers) {
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert(crate::headers::GRPC_STATUS, HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.trailers
    }

    // No exact `size_hint`: hyper would send it as `content-length`, and gRPC-Web (tonic-web)
    // turns the trailers into more data after the message.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(message.len() as u32).to_be_bytes());
        v.extend_from_slice(message);
        v
    }

    /// A body of the given DATA frames.
    fn body(chunks: Vec<Vec<u8>>) -> Body {
        let frames = chunks.into_iter().map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)))
    }

    #[tokio::test]
    async fn a_message_is_read_whole_or_in_pieces() {
        let message = b"hello, message".to_vec();
        let whole = framed(0, &message);
        let (read, _) = read_message(body(vec![whole.clone()])).await.unwrap();
        assert_eq!(&read[..], &message[..]);
        // Split inside the prefix, and byte by byte.
        let (read, _) = read_message(body(vec![whole[..3].to_vec(), whole[3..].to_vec()])).await.unwrap();
        assert_eq!(&read[..], &message[..]);
        let (read, _) = read_message(body(whole.iter().map(|b| vec![*b]).collect())).await.unwrap();
        assert_eq!(&read[..], &message[..]);
        // An empty message is a message.
        let (read, _) = read_message(body(vec![framed(0, b"")])).await.unwrap();
        assert!(read.is_empty());
    }

    #[tokio::test]
    async fn bad_framing_is_refused_with_what_is_wrong() {
        let cases: Vec<(Vec<Vec<u8>>, tonic::Code, &str)> = vec![
            (vec![], tonic::Code::Internal, "Missing request message"),
            (vec![vec![0, 0, 0]], tonic::Code::Internal, "inside a message's 5-byte prefix (3 bytes"),
            (vec![framed(0, b"abcdef")[..8].to_vec()], tonic::Code::Internal, "3 of its 6 bytes"),
            (vec![framed(1, b"abc")], tonic::Code::Internal, "compressed-flag but no grpc-encoding"),
            (vec![framed(7, b"abc")], tonic::Code::Internal, "invalid compression flag: 7"),
            (vec![[framed(0, b"a"), framed(0, b"b")].concat()], tonic::Code::Internal, "more than one request message"),
            (vec![framed(0, b"a"), framed(0, b"b")], tonic::Code::Internal, "more than one request message"),
            (
                vec![vec![0, 0x00, 0x50, 0x00, 0x00]],
                tonic::Code::ResourceExhausted,
                "too large: found 5242880 bytes, the limit is: 4194304 bytes",
            ),
        ];
        for (chunks, code, fragment) in cases {
            let shown = format!("{chunks:?}");
            let status = read_message(body(chunks)).await.expect_err(&shown);
            assert_eq!(status.code(), code, "{shown}: {status:?}");
            assert!(status.message().contains(fragment), "{shown}: {status:?}");
        }
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_from_its_prefix_before_its_body_arrives() {
        use futures::StreamExt as _;
        // The prefix declares 5 MiB; the body never sends it (the stream would hang if read).
        let prefix = vec![0, 0x00, 0x50, 0x00, 0x00];
        let frames = futures::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(prefix)))])
            .chain(futures::stream::pending());
        let body = Body::new(http_body_util::StreamBody::new(frames));
        let status = tokio::time::timeout(std::time::Duration::from_secs(5), read_message(body))
            .await
            .expect("answered without waiting for the body")
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn the_response_body_is_the_message_then_the_ok_trailers() {
        use http_body::Body as _;
        let mut body = OneMessage { data: Some(Bytes::from_static(b"\0\0\0\0\x01x")), trailers: true };
        // Not exact: gRPC-Web adds the trailers to the body (HTTP/1.1 would cut them off).
        assert_eq!(body.size_hint().exact(), None);
        let collected = http_body_util::BodyExt::collect(&mut body).await.unwrap();
        assert_eq!(collected.trailers().and_then(|t| t.get("grpc-status")).map(|v| v.as_bytes()), Some(&b"0"[..]));
        assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x01x");
        assert!(body.is_end_stream());
    }
}

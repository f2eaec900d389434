//! A gRPC call over `h2`, without tonic's client: the hot path of every step (unary calls) and
//! server-streaming calls alike.
//!
//! The engine has the request encoded already ([`Payload`]) and wants the response as bytes, so
//! everything tonic's generic client does in between — a body stream with an 8 KiB encode
//! buffer, collecting it back into one buffer, a decoder with a buffer of its own, metadata maps
//! converted to headers and back, a boxed future per layer — is work without a purpose here. This
//! module writes the length-prefixed message and the headers gRPC requires, and reads the answer
//! as the gRPC-over-HTTP/2 protocol defines it
//! (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>): a trailers-only answer,
//! or the messages (exactly one for a unary call) and the trailers; a missing `grpc-status`
//! inferred from the HTTP status as
//! <https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md> says.

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use nexus_engine::{Call, CallError, MessageStream, Payload};
use prost_reflect::MessageDescriptor;
use tonic::Code;

use super::{Connection, NotSent, Sender, method_path};

/// The largest response message a backend may send: tonic's default, which this invoker
/// applied before it read responses itself.
pub(super) const MAX_RESPONSE_MESSAGE: usize = 4 << 20;

/// The 5-byte prefix of a gRPC message: a compression flag and the length (big-endian).
const PREFIX: usize = 5;

/// Calls `call`'s method on `sender`'s connection; the response's bytes, or the call's error in
/// gRPC terms.
pub(super) async fn unary(sender: Sender, connection: &Connection, call: &Call) -> Result<Payload, CallError> {
    let response = send(sender, connection, call).await?;
    read_response(response, call.action.method.output()).await.map_err(|e| deadline_as_such(e, call.timeout))
}

/// Calls a server-streaming method: its messages as they come, then its status (an error
/// status ends the stream with that error).
pub(super) async fn server_streaming(
    sender: Sender,
    connection: &Connection,
    call: &Call,
) -> Result<MessageStream, CallError> {
    let timeout = call.timeout;
    let response = send(sender, connection, call).await?;
    let (parts, body) = response.into_parts();
    if let Some(status) = status_of(&parts.headers) {
        // Trailers-only: an error, or a stream of no messages.
        status.map_err(|e| deadline_as_such(e, timeout))?;
        return Ok(futures::stream::empty().boxed());
    }
    if parts.status != http::StatusCode::OK {
        return Err(from_http_status(parts.status));
    }
    let reader = StreamReader { body, frames: Frames::default(), output: call.action.method.output() };
    let messages = futures::stream::unfold(Some(reader), move |reader| async move {
        let mut reader = reader?;
        match reader.next().await {
            Ok(Some(message)) => Some((Ok(message), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(deadline_as_such(e, timeout)), None)),
        }
    });
    Ok(messages.boxed())
}

/// Opens the call's stream with its headers and its one message queued together (h2 sends both
/// in one write once the stream opens), and awaits the response's headers.
async fn send(
    sender: Sender,
    connection: &Connection,
    call: &Call,
) -> Result<http::Response<h2::RecvStream>, CallError> {
    let request = http_request(connection, call)?;
    let body = framed(call.request.bytes())?;
    let mut sender = sender.ready().await.map_err(|e| lost(&NotSent(e)))?;
    let (response, mut stream) = sender.send_request(request, false).map_err(|e| lost(&NotSent(e)))?;
    stream.send_data(body, true).map_err(|e| lost(&NotSent(e)))?;
    response.await.map_err(|e| from_h2(&e))
}

/// The messages of a server-streaming response, read as the consumer asks for them: a DATA
/// frame is read only when no whole message is buffered, so what is held is at most one message
/// (≤ [`MAX_RESPONSE_MESSAGE`]) and one frame, and a slow consumer holds the backend back by
/// the HTTP/2 window.
struct StreamReader {
    body: h2::RecvStream,
    frames: Frames,
    output: MessageDescriptor,
}

impl StreamReader {
    /// The next message; `None` once the stream ended with an OK status.
    async fn next(&mut self) -> Result<Option<Payload>, CallError> {
        loop {
            if let Some(message) = self.frames.next_message(&self.output)? {
                return Ok(Some(message));
            }
            match self.body.data().await {
                Some(data) => {
                    let data = data.map_err(|e| from_h2(&e))?;
                    let _ = self.body.flow_control().release_capacity(data.len());
                    self.frames.push(&data);
                }
                None => break,
            }
        }
        if !self.frames.is_empty() {
            return Err(CallError::new(
                Code::Internal,
                format!("the backend's {} stream ended inside a message", self.output.full_name()),
            ));
        }
        let trailers = self.body.trailers().await.map_err(|e| from_h2(&e))?;
        match trailers.as_ref().and_then(status_of) {
            Some(status) => status.map(|()| None),
            None => Err(missing_status()),
        }
    }
}

/// The bytes of a stream's DATA frames not yet cut into messages.
#[derive(Default)]
struct Frames {
    buffer: BytesMut,
}

impl Frames {
    fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The next whole message, copied out (a slice would keep the frames' buffer alive as long
    /// as the record keeps the message).
    fn next_message(&mut self, output: &MessageDescriptor) -> Result<Option<Payload>, CallError> {
        let Some(prefix) = self.buffer.get(..PREFIX) else { return Ok(None) };
        let length = read_prefix(prefix, output)?;
        if self.buffer.len() < PREFIX + length {
            self.buffer.reserve(PREFIX + length - self.buffer.len());
            return Ok(None);
        }
        let message = Bytes::copy_from_slice(&self.buffer[PREFIX..PREFIX + length]);
        bytes::Buf::advance(&mut self.buffer, PREFIX + length);
        Ok(Some(Payload::new(output.clone(), message)))
    }
}

/// A tonic backend answers a request past its `grpc-timeout` with CANCELLED "Timeout expired";
/// to the pattern it is a deadline, and `retry_on: [DEADLINE_EXCEEDED]` must see it as one.
fn deadline_as_such(e: CallError, timeout: Option<std::time::Duration>) -> CallError {
    if e.code == Code::Cancelled && e.message == "Timeout expired" {
        let within = timeout.map(|t| format!(" within {t:?}")).unwrap_or_default();
        return CallError::new(Code::DeadlineExceeded, format!("no response{within}"));
    }
    e
}

/// The request's headers: what gRPC requires, the deadline, and Nexus's own metadata.
fn http_request(connection: &Connection, call: &Call) -> Result<http::Request<()>, CallError> {
    let origin = connection.origin();
    let mut parts = http::uri::Parts::default();
    parts.scheme = origin.scheme().cloned();
    parts.authority = origin.authority().cloned();
    parts.path_and_query = Some(method_path(call)?);
    let uri = http::Uri::from_parts(parts)
        .map_err(|e| CallError::new(Code::Internal, format!("request URI for `{}`: {e}", call.action.path)))?;
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    // Values new on every call are sent as HPACK literals that no table indexes ("never
    // indexed"): indexed, each would be inserted into both ends' dynamic tables only to evict the
    // entries that do repeat (`:authority`, `content-type`, `te`), which then go in again.
    let unique = |v: &[u8]| {
        HeaderValue::from_bytes(v).ok().map(|mut v| {
            v.set_sensitive(true);
            v
        })
    };
    // The names are constants (a name made from a string is copied into a buffer of its own on
    // every call); each value is copied once, from where it is written.
    if let Some(v) = call.timeout.and_then(|t| unique(grpc_timeout_text(t).as_bytes())) {
        headers.insert(GRPC_TIMEOUT, v);
    }
    if let Some(v) = unique(call.idempotency_key.as_bytes()) {
        headers.insert(IDEMPOTENCY_KEY, v);
    }
    if let Some(v) = call.traceparent.as_deref().and_then(|t| unique(t.as_bytes())) {
        headers.insert(TRACEPARENT, v);
    }
    if let Some(v) = call.tracestate.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(TRACESTATE, v);
    }
    Ok(request)
}

/// The message with its gRPC prefix (uncompressed), in one buffer: one DATA frame.
fn framed(message: &Bytes) -> Result<Bytes, CallError> {
    let len = u32::try_from(message.len()).map_err(|_| {
        CallError::new(Code::ResourceExhausted, format!("the request message of {} bytes is too large", message.len()))
    })?;
    let mut body = BytesMut::with_capacity(PREFIX + message.len());
    body.put_u8(0);
    body.put_u32(len);
    body.put_slice(message);
    Ok(body.freeze())
}

use crate::headers::{GRPC_TIMEOUT, IDEMPOTENCY_KEY, TRACEPARENT, TRACESTATE};

/// A deadline as `grpc-timeout` writes it: at most 8 digits, in the finest unit that fits.
#[cfg(test)]
fn grpc_timeout(t: std::time::Duration) -> String {
    grpc_timeout_text(t).as_str().to_owned()
}

/// [`grpc_timeout`]'s text, written on the stack.
fn grpc_timeout_text(t: std::time::Duration) -> TimeoutText {
    const MAX: u128 = 99_999_999;
    let units = [
        (t.as_nanos(), b'n'),
        (t.as_micros(), b'u'),
        (t.as_millis(), b'm'),
        (u128::from(t.as_secs()), b'S'),
        (u128::from(t.as_secs() / 60), b'M'),
        (u128::from(t.as_secs() / 3600), b'H'),
    ];
    let (value, unit) = units.into_iter().find(|(v, _)| *v <= MAX).unwrap_or((MAX, b'H'));
    let mut text = TimeoutText { bytes: [0; 9], len: 0 };
    // At most 8 digits (value ≤ MAX), then the unit.
    let mut digits = [0u8; 8];
    let (mut v, mut n) = (value, 0);
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 || n == digits.len() {
            break;
        }
    }
    for (i, d) in digits[..n].iter().rev().enumerate() {
        text.bytes[i] = *d;
    }
    text.bytes[n] = unit;
    text.len = n + 1;
    text
}

/// Up to 8 digits and a unit letter.
struct TimeoutText {
    bytes: [u8; 9],
    len: usize,
}

impl TimeoutText {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    #[cfg(test)]
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// Reads a response: its status, and its one message when the status is OK.
async fn read_response(
    response: http::Response<h2::RecvStream>,
    output: MessageDescriptor,
) -> Result<Payload, CallError> {
    let (parts, mut body) = response.into_parts();
    // Trailers-only: the status is in the headers and there is no message.
    if let Some(status) = status_of(&parts.headers) {
        status?;
        return Err(missing_message(&output));
    }
    if parts.status != http::StatusCode::OK {
        // Not a gRPC answer (a proxy's error page, a wrong port): its body is not read.
        return Err(from_http_status(parts.status));
    }
    let mut message = Message::default();
    while let Some(data) = body.data().await {
        let data = data.map_err(|e| from_h2(&e))?;
        // The window is given back at once: what is kept is bounded by `Message::push`.
        let _ = body.flow_control().release_capacity(data.len());
        message.push(&data, &output)?;
    }
    let trailers = body.trailers().await.map_err(|e| from_h2(&e))?;
    match trailers.as_ref().and_then(status_of) {
        Some(status) => status?,
        None => return Err(missing_status()),
    }
    message.finish(output)
}

fn missing_status() -> CallError {
    CallError::new(
        Code::Unknown,
        "the backend's response ended without a grpc-status trailer (truncated by a proxy, or not a gRPC server?)",
    )
}

/// The length a message's 5-byte prefix gives, if the message is uncompressed and within the
/// limit.
fn read_prefix(prefix: &[u8], output: &MessageDescriptor) -> Result<usize, CallError> {
    let &[flag, a, b, c, d] = prefix else {
        return Err(CallError::new(Code::Internal, "a gRPC message prefix is 5 bytes"));
    };
    if flag != 0 {
        return Err(CallError::new(
            Code::Internal,
            format!(
                "the backend sent a compressed {} (compression flag {flag}), which Nexus did not ask for",
                output.full_name()
            ),
        ));
    }
    let length = u32::from_be_bytes([a, b, c, d]) as usize;
    if length > MAX_RESPONSE_MESSAGE {
        return Err(CallError::new(
            Code::ResourceExhausted,
            format!(
                "the backend's {} response is {length} bytes, over the limit of {MAX_RESPONSE_MESSAGE} bytes",
                output.full_name()
            ),
        ));
    }
    Ok(length)
}

/// The one message of a unary response, as its DATA frames bring it.
#[derive(Default)]
struct Message {
    /// The prefix and the message so far (the prefix is dropped once read).
    buffer: Vec<u8>,
    /// The message's length, once its prefix has been read.
    length: Option<usize>,
}

impl Message {
    fn push(&mut self, mut data: &[u8], output: &MessageDescriptor) -> Result<(), CallError> {
        while !data.is_empty() {
            let Some(length) = self.length else {
                let take = (PREFIX - self.buffer.len()).min(data.len());
                self.buffer.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.buffer.len() == PREFIX {
                    let length = read_prefix(&self.buffer, output)?;
                    self.buffer.clear();
                    self.buffer.reserve_exact(length);
                    self.length = Some(length);
                }
                continue;
            };
            let take = (length - self.buffer.len()).min(data.len());
            if take == 0 {
                return Err(CallError::new(
                    Code::Internal,
                    format!("the backend answered a unary call to {} with more than one message", output.full_name()),
                ));
            }
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    fn finish(self, output: MessageDescriptor) -> Result<Payload, CallError> {
        match self.length {
            Some(length) if self.buffer.len() == length => Ok(Payload::new(output, Bytes::from(self.buffer))),
            Some(length) => Err(CallError::new(
                Code::Internal,
                format!(
                    "the backend's {} response ended after {} of its {length} bytes",
                    output.full_name(),
                    self.buffer.len()
                ),
            )),
            None if self.buffer.is_empty() => Err(missing_message(&output)),
            None => Err(CallError::new(
                Code::Internal,
                format!("the backend's {} response ended inside a message's prefix", output.full_name()),
            )),
        }
    }
}

fn missing_message(output: &MessageDescriptor) -> CallError {
    CallError::new(Code::Internal, format!("the backend answered OK without a {} message", output.full_name()))
}

/// `grpc-status` (and `grpc-message`) of a header map: `Some(Ok)` for OK, `Some(Err)` for an
/// error status, `None` without one.
fn status_of(headers: &HeaderMap) -> Option<Result<(), CallError>> {
    let value = headers.get(crate::headers::GRPC_STATUS)?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32);
    if code == Code::Ok {
        return Some(Ok(()));
    }
    let message = headers
        .get(crate::headers::GRPC_MESSAGE)
        .map(|m| percent_encoding::percent_decode(m.as_bytes()).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    Some(Err(CallError::new(code, message)))
}

/// A non-200 answer without `grpc-status`, per gRPC's HTTP-to-status mapping.
fn from_http_status(status: http::StatusCode) -> CallError {
    let code = match status {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    CallError::new(code, format!("the backend answered HTTP {status} without a gRPC status"))
}

/// The connection went away (closed, reset, or the request was never sent on it): the backend
/// is unavailable, which retry policies treat as transient.
fn lost(e: &dyn std::error::Error) -> CallError {
    let mut why = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        why.push_str(": ");
        why.push_str(&c.to_string());
        cause = c.source();
    }
    CallError::new(Code::Unavailable, format!("the connection to the backend was lost: {why}"))
}

/// An `h2` error of a call under way: the connection lost, or the stream reset (mapped as
/// gRPC's HTTP/2 error table says).
fn from_h2(e: &h2::Error) -> CallError {
    if e.is_io() || e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        return lost(e);
    }
    let code = match e.reason() {
        Some(
            h2::Reason::NO_ERROR
            | h2::Reason::PROTOCOL_ERROR
            | h2::Reason::INTERNAL_ERROR
            | h2::Reason::FLOW_CONTROL_ERROR
            | h2::Reason::SETTINGS_TIMEOUT
            | h2::Reason::FRAME_SIZE_ERROR
            | h2::Reason::COMPRESSION_ERROR
            | h2::Reason::CONNECT_ERROR,
        ) => Code::Internal,
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        _ => Code::Unknown,
    };
    CallError::new(code, format!("h2 protocol error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor() -> MessageDescriptor {
        let pool = prost_reflect::DescriptorPool::decode(nexus_core::FILE_DESCRIPTOR_SET).expect("Nexus's descriptors");
        pool.all_messages().next().expect("a message")
    }

    fn prefixed(flag: u8, len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_message_split_anywhere_across_frames_reads_back_whole() {
        let d = descriptor();
        let wire = prefixed(0, 6, b"abcdef");
        for cut in 0..=wire.len() {
            for cut2 in cut..=wire.len() {
                let mut m = Message::default();
                m.push(&wire[..cut], &d).unwrap();
                m.push(&wire[cut..cut2], &d).unwrap();
                m.push(&wire[cut2..], &d).unwrap();
                assert_eq!(m.finish(d.clone()).unwrap().bytes().as_ref(), b"abcdef", "cuts {cut}, {cut2}");
            }
        }
    }

    #[test]
    fn a_stream_is_cut_into_its_messages_however_its_frames_fall() {
        let d = descriptor();
        let mut wire = prefixed(0, 3, b"abc");
        wire.extend(prefixed(0, 0, b""));
        wire.extend(prefixed(0, 5, b"defgh"));
        for size in 1..=wire.len() {
            let mut frames = Frames::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(size) {
                frames.push(chunk);
                while let Some(m) = frames.next_message(&d).unwrap() {
                    got.push(m.bytes().clone());
                }
            }
            assert!(frames.is_empty(), "frames of {size}: bytes left over");
            assert_eq!(got, [&b"abc"[..], b"", b"defgh"], "frames of {size}");
        }
        let mut frames = Frames::default();
        frames.push(&prefixed(0, 3, b"ab"));
        assert!(frames.next_message(&d).unwrap().is_none() && !frames.is_empty());
        let mut frames = Frames::default();
        frames.push(&prefixed(0, (MAX_RESPONSE_MESSAGE + 1) as u32, b""));
        assert_eq!(frames.next_message(&d).unwrap_err().code, Code::ResourceExhausted);
        let mut frames = Frames::default();
        frames.push(&prefixed(1, 1, b"a"));
        assert_eq!(frames.next_message(&d).unwrap_err().code, Code::Internal);
    }

    #[test]
    fn an_empty_message_is_a_message() {
        let d = descriptor();
        let mut m = Message::default();
        m.push(&prefixed(0, 0, b""), &d).unwrap();
        assert!(m.finish(d).unwrap().bytes().is_empty());
    }

    #[test]
    fn what_is_not_one_whole_uncompressed_message_is_refused_by_name() {
        let d = descriptor();
        let err = |wire: &[u8]| {
            let mut m = Message::default();
            match m.push(wire, &d) {
                Err(e) => e,
                Ok(()) => m.finish(d.clone()).unwrap_err(),
            }
        };
        let e = err(&prefixed(0, 3, b"ab"));
        assert!(e.code == Code::Internal && e.message.contains("after 2 of its 3 bytes"), "{e:?}");
        let e = err(&[0, 0, 0]);
        assert!(e.code == Code::Internal && e.message.contains("prefix"), "{e:?}");
        let e = err(&[]);
        assert!(e.code == Code::Internal && e.message.contains("without a"), "{e:?}");
        let e = err(&prefixed(1, 2, b"ab"));
        assert!(e.code == Code::Internal && e.message.contains("compressed"), "{e:?}");
        let mut two = prefixed(0, 1, b"a");
        two.extend(prefixed(0, 1, b"b"));
        let e = err(&two);
        assert!(e.code == Code::Internal && e.message.contains("more than one message"), "{e:?}");
        // Refused from its prefix, before a byte of it is buffered.
        let e = err(&prefixed(0, u32::MAX, b""));
        assert!(e.code == Code::ResourceExhausted && e.message.contains("4294967295 bytes"), "{e:?}");
    }

    #[test]
    fn statuses_read_from_headers_and_http_statuses() {
        let mut h = HeaderMap::new();
        assert!(status_of(&h).is_none());
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(matches!(status_of(&h), Some(Ok(()))));
        h.insert("grpc-status", HeaderValue::from_static("9"));
        h.insert("grpc-message", HeaderValue::from_static("not%20now%3A%20%E2%9C%93"));
        let e = status_of(&h).unwrap().unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (Code::FailedPrecondition, "not now: ✓"));
        h.insert("grpc-status", HeaderValue::from_static("banana"));
        assert_eq!(status_of(&h).unwrap().unwrap_err().code, Code::Unknown);
        assert_eq!(from_http_status(http::StatusCode::NOT_FOUND).code, Code::Unimplemented);
        assert_eq!(from_http_status(http::StatusCode::SERVICE_UNAVAILABLE).code, Code::Unavailable);
        assert_eq!(from_http_status(http::StatusCode::IM_A_TEAPOT).code, Code::Unknown);
    }

    #[test]
    fn a_tonic_backends_expired_deadline_is_deadline_exceeded() {
        let t = Some(std::time::Duration::from_millis(250));
        let e = deadline_as_such(CallError::new(Code::Cancelled, "Timeout expired"), t);
        assert_eq!((e.code, e.message.as_str()), (Code::DeadlineExceeded, "no response within 250ms"));
        let e = deadline_as_such(CallError::new(Code::Cancelled, "the caller went away"), t);
        assert_eq!(e.code, Code::Cancelled);
    }

    #[test]
    fn deadlines_are_written_in_at_most_eight_digits() {
        use std::time::Duration;
        assert_eq!(grpc_timeout(Duration::from_millis(30)), "30000000n");
        assert_eq!(grpc_timeout(Duration::from_secs(2)), "2000000u");
        assert_eq!(grpc_timeout(Duration::from_secs(30)), "30000000u");
        assert_eq!(grpc_timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(grpc_timeout(Duration::from_secs(400_000)), "400000S");
        assert_eq!(grpc_timeout(Duration::MAX), "99999999H");
        assert_eq!(grpc_timeout(Duration::ZERO), "0n");
        assert_eq!(grpc_timeout(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(grpc_timeout(Duration::from_nanos(100_000_000)), "100000u");
        assert_eq!(grpc_timeout(Duration::from_nanos(1_001)), "1001n");
    }
}

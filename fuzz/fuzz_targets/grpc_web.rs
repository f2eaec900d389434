//! The gRPC-Web framing: `tonic_web::GrpcWebLayer` (as the server mounts it, see
//! `crates/server/src/lib.rs::router`) in front of real tonic services — health (unary) and server
//! reflection v1 and v1alpha (bidirectional streaming: several request frames, several response
//! frames) — called in-process, without sockets, on a current-thread runtime built once.
//!
//! Input: byte 0 chooses the request (bits 0-1 the content type: `application/grpc-web`,
//! `application/grpc-web+proto`, `application/grpc-web-text` (base64), `application/grpc-web-text+proto`;
//! bits 2-3 the path; bit 4 an `accept: application/grpc-web-text` header; bit 5
//! `grpc-encoding: gzip`, which the services do not support; bits 6 and 7 both set: GET instead of
//! POST). Byte 1 is the size of the chunks the body arrives in (0: one chunk), so that frames and
//! base64 quanta straddle chunk boundaries. The rest is the body: gRPC-Web frames (a flag byte,
//! a big-endian u32 length, the message), or their base64 text.
//!
//! Property: the layer and the services answer every body (an error status is an answer) without
//! panicking, and the response body ends (collected up to a cap).

#![no_main]

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tonic::body::Body;
use tower::{Layer, ServiceExt, util::BoxCloneSyncService};

const CONTENT_TYPES: [&str; 4] = [
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
];

const PATHS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.health.v1.Health/NoSuchMethod",
];

/// Most of the response body that is read; a response is far smaller (the largest is a file
/// descriptor of the Nexus API from reflection).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

type Svc = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

struct Stack {
    runtime: tokio::runtime::Runtime,
    grpc_web: Svc,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => panic!("tokio runtime: {e}"),
        };
        let grpc_web = runtime.block_on(async {
            let (health, health_service) = tonic_health::server::health_reporter();
            health
                .set_serving::<tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>>()
                .await;
            let reflection = || {
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(nexus_core::FILE_DESCRIPTOR_SET)
            };
            let (v1, v1alpha) = match (reflection().build_v1(), reflection().build_v1alpha()) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => panic!("reflection service: {e}"),
            };
            // The path routing of `tonic::service::Routes`, by hand (without axum).
            let router = tower::service_fn(move |req: Request<Body>| {
                let (health, v1, v1alpha) = (health_service.clone(), v1.clone(), v1alpha.clone());
                async move {
                    let path = req.uri().path();
                    if path.starts_with("/grpc.reflection.v1.") {
                        v1.oneshot(req).await
                    } else if path.starts_with("/grpc.reflection.v1alpha.") {
                        v1alpha.oneshot(req).await
                    } else {
                        health.oneshot(req).await
                    }
                }
            });
            BoxCloneSyncService::new(tonic_web::GrpcWebLayer::new().layer(router))
        });
        Stack { runtime, grpc_web }
    })
}

/// A request body that arrives in the given chunks.
struct Chunks(VecDeque<Bytes>);

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|c| c.len() as u64).sum())
    }
}

fuzz_target!(|data: &[u8]| {
    let [choice, chunk, body @ ..] = data else { return };
    let body = Bytes::copy_from_slice(body);
    let chunks: VecDeque<Bytes> = match usize::from(*chunk) {
        0 => VecDeque::from([body]),
        n => (0..body.len()).step_by(n).map(|i| body.slice(i..body.len().min(i + n))).collect(),
    };
    let method = if choice & 0xc0 == 0xc0 { Method::GET } else { Method::POST };
    let mut request = Request::builder()
        .method(method)
        .uri(PATHS[usize::from((choice >> 2) & 3)])
        .header(http::header::CONTENT_TYPE, CONTENT_TYPES[usize::from(choice & 3)]);
    if choice & 0x10 != 0 {
        request = request.header(http::header::ACCEPT, "application/grpc-web-text");
    }
    if choice & 0x20 != 0 {
        request = request.header("grpc-encoding", "gzip");
    }
    let request = match request.body(Body::new(Chunks(chunks))) {
        Ok(r) => r,
        Err(e) => panic!("request: {e}"),
    };
    let stack = stack();
    stack.runtime.block_on(async {
        let Ok(response) = stack.grpc_web.clone().oneshot(request).await;
        let mut body = response.into_body();
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                read += data.len();
                if read > MAX_RESPONSE_BYTES {
                    break;
                }
            }
        }
    });
});

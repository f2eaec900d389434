//! `demo.broadcast.v1.BroadcastService`: broadcasts, access checks and a server-streaming
//! Subscribe whose producer feels client backpressure and stops when the client goes away.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::control::{CallKind, DemoHandle, InFlight, SubscriptionLease, lock};
use crate::method;
use crate::pb::broadcast::broadcast_service_server::BroadcastService;
use crate::pb::broadcast::{
    Broadcast, CheckAccessRequest, CheckAccessResponse, Chunk, CreateBroadcastRequest, CreateBroadcastResponse,
    SubscribeRequest,
};

/// Chunks of a broadcast created without a chunk count, and of an unregistered public one.
const DEFAULT_CHUNK_COUNT: i32 = 10;
/// Broadcasts whose id has this prefix exist implicitly, so demos work without CreateBroadcast.
const PUBLIC_PREFIX: &str = "public-";

pub(crate) struct Broadcasts {
    control: DemoHandle,
    schedule: Mutex<Schedule>,
}

#[derive(Default)]
struct Schedule {
    by_id: HashMap<String, Broadcast>,
    last_sequence: u64,
}

impl Broadcasts {
    pub(crate) fn new(control: DemoHandle) -> Self {
        Self { control, schedule: Mutex::new(Schedule::default()) }
    }

    fn chunk_count(&self, broadcast_id: &str) -> Option<i32> {
        lock(&self.schedule).by_id.get(broadcast_id).map(|broadcast| broadcast.chunk_count)
    }
}

#[tonic::async_trait]
impl BroadcastService for Broadcasts {
    async fn create_broadcast(
        &self,
        request: Request<CreateBroadcastRequest>,
    ) -> Result<Response<CreateBroadcastResponse>, Status> {
        let _call = self.control.admit(method::CREATE_BROADCAST, &request, CallKind::Unary).await?;
        let request = request.into_inner();
        let chunk_count = match request.chunk_count {
            0 => DEFAULT_CHUNK_COUNT,
            count if count < 0 => {
                return Err(Status::invalid_argument("chunk_count must not be negative"));
            }
            count => count,
        };

        let mut schedule = lock(&self.schedule);
        schedule.last_sequence += 1;
        let broadcast = Broadcast {
            id: format!("brd_{:06}", schedule.last_sequence),
            title: request.title,
            owner_id: request.owner_id,
            chunk_count,
        };
        schedule.by_id.insert(broadcast.id.clone(), broadcast.clone());
        Ok(Response::new(CreateBroadcastResponse { broadcast: Some(broadcast) }))
    }

    async fn check_access(
        &self,
        request: Request<CheckAccessRequest>,
    ) -> Result<Response<CheckAccessResponse>, Status> {
        let _call = self.control.admit(method::CHECK_ACCESS, &request, CallKind::Unary).await?;
        let request = request.into_inner();
        let known =
            request.broadcast_id.starts_with(PUBLIC_PREFIX) || self.chunk_count(&request.broadcast_id).is_some();
        // A denial is a successful answer, not an error: patterns branch on `allowed`.
        let response = if known {
            CheckAccessResponse {
                allowed: true,
                reason: String::new(),
                token: format!("tok_{:016x}", rand::random::<u64>()),
            }
        } else {
            CheckAccessResponse {
                allowed: false,
                reason: format!("broadcast {} does not exist", request.broadcast_id),
                token: String::new(),
            }
        };
        Ok(Response::new(response))
    }

    type SubscribeStream = ChunkStream;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<ChunkStream>, Status> {
        let call = self.control.admit(method::SUBSCRIBE, &request, CallKind::Stream).await?;
        let request = request.into_inner();
        if request.max_chunks < 0 {
            return Err(Status::invalid_argument("max_chunks must not be negative"));
        }
        let max_chunks = (request.max_chunks > 0).then_some(request.max_chunks);
        // A registered broadcast has a length that max_chunks can only shorten; a public one has
        // none, so max_chunks sets it.
        let total = match self.chunk_count(&request.broadcast_id) {
            Some(count) => max_chunks.map_or(count, |max| max.min(count)),
            None if request.broadcast_id.starts_with(PUBLIC_PREFIX) => max_chunks.unwrap_or(DEFAULT_CHUNK_COUNT),
            None => {
                return Err(Status::not_found(format!("broadcast {} not found", request.broadcast_id)));
            }
        };

        // Capacity 1: the producer can run at most one chunk ahead of what the client consumed.
        let (sender, receiver) = mpsc::channel(1);
        let lease = self.control.start_subscription();
        tokio::spawn(produce_chunks(
            sender,
            request.broadcast_id,
            total,
            self.control.chunk_interval(),
            Arc::clone(&lease),
        ));
        Ok(Response::new(ChunkStream {
            chunks: ReceiverStream::new(receiver),
            lease: SubscriptionEnd(lease),
            _call: call,
        }))
    }
}

async fn produce_chunks(
    sender: mpsc::Sender<Result<Chunk, Status>>,
    broadcast_id: String,
    total: i32,
    interval: Duration,
    lease: Arc<SubscriptionLease>,
) {
    for sequence in 1..=total {
        // The first chunk goes out at once; later ones wait for the interval unless the client
        // leaves meanwhile, so a disconnect is noticed without waiting for the next send.
        if sequence > 1 && !interval.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = sender.closed() => break,
            }
        }
        let text = format!("chunk {sequence} of {total}");
        let chunk = Chunk {
            broadcast_id: broadcast_id.clone(),
            sequence: i64::from(sequence),
            data: text.clone().into_bytes(),
            text,
        };
        if sender.send(Ok(chunk)).await.is_err() {
            tracing::debug!(%broadcast_id, sequence, "subscriber went away");
            break;
        }
    }
    lease.end();
}

/// The Subscribe response stream. It owns the call's in-flight guard and ends the subscription
/// when dropped, which tonic does when the client resets the stream or the connection closes.
pub(crate) struct ChunkStream {
    chunks: ReceiverStream<Result<Chunk, Status>>,
    lease: SubscriptionEnd,
    _call: InFlight,
}

impl Stream for ChunkStream {
    type Item = Result<Chunk, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.chunks).poll_next(cx);
        if let Poll::Ready(None) = next {
            self.lease.0.end();
        }
        next
    }
}

struct SubscriptionEnd(Arc<SubscriptionLease>);

impl Drop for SubscriptionEnd {
    fn drop(&mut self) {
        self.0.end();
    }
}

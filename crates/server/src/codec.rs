//! The protobuf codec of the NexusService: prost's, except that a request that is not a valid
//! protobuf encoding of its message is the caller's mistake — INVALID_ARGUMENT naming the
//! message — not INTERNAL (which tonic's codec answers, and which tells a caller the server broke).

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

#[derive(Debug, Clone)]
pub struct NexusCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for NexusCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for NexusCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CallerDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CallerDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

#[derive(Debug, Clone)]
pub struct CallerDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for CallerDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(
            |s| {
                if s.code() == tonic::Code::Internal { not_protobuf::<U>(s.message()) } else { s }
            },
        )
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// INVALID_ARGUMENT for a request that does not decode as `U`, naming the message and, when that is
/// the cause, the nesting limit; `detail` is the decoder's error.
pub fn not_protobuf<U>(detail: &str) -> Status {
    let name = std::any::type_name::<U>().rsplit("::").next().unwrap_or("message");
    let nesting = if detail.contains("recursion limit") {
        " (it nests messages deeper than the limit of 100 levels)"
    } else {
        ""
    };
    Status::invalid_argument(format!(
        "the message is not a valid protobuf encoding of nexus.v1.{name}{nesting}: {detail}"
    ))
}

/// tonic refuses a message over the size limit with OUT_OF_RANGE ("decoded message length too
/// large"); the caller sent too much, which gRPC calls RESOURCE_EXHAUSTED — as Connect already
/// answers (HTTP 429) for a body over its limit. Rewrites that one status of a trailers-only
/// response (the refusal comes before any message is sent), on the native and gRPC-Web paths.
pub fn oversize_is_resource_exhausted(headers: &mut http::HeaderMap) {
    let is_oversize = headers.get(crate::headers::GRPC_STATUS).is_some_and(|v| v == "11")
        && headers
            .get(crate::headers::GRPC_MESSAGE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("message%20length%20too%20large") || m.contains("message length too large"));
    if is_oversize {
        let text = headers
            .get(crate::headers::GRPC_MESSAGE)
            .and_then(|v| v.to_str().ok())
            .map(|m| percent_encoding::percent_decode_str(m).decode_utf8_lossy().into_owned())
            .unwrap_or_default();
        let detail = text.split_once(": ").map_or(text.as_str(), |(_, rest)| rest);
        let message = format!("the request message is too large: {detail}");
        let encoded = percent_encoding::utf8_percent_encode(&message, percent_encoding::NON_ALPHANUMERIC).to_string();
        headers.insert(crate::headers::GRPC_STATUS, http::HeaderValue::from_static("8"));
        if let Ok(v) = http::HeaderValue::from_str(&encoded) {
            headers.insert(crate::headers::GRPC_MESSAGE, v);
        }
    }
}

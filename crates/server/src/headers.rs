//! The header names Nexus reads and writes on every call, as constants. A lookup or an insert by
//! `&str` parses and checks the name each time (`http`'s `parse_hdr`, a walk over a byte table);
//! a `HeaderName` constant is hashed as it is. Callgrind of the benchmark counted ~4.9 k
//! instructions per execution in those parses (bench/README.md, session 21).

use http::HeaderName;

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
pub const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("nexus-idempotency-key");
pub const EXECUTION_ID: HeaderName = HeaderName::from_static(crate::error::EXECUTION_ID_HEADER);
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

#[cfg(test)]
mod tests {
    #[test]
    fn the_constants_are_the_names_they_stand_for() {
        // `from_static` panics on a name that is not lowercase token characters, at compile time
        // for a constant; this pins the spelling the rest of the code and the clients rely on.
        let names = [
            (super::GRPC_STATUS, "grpc-status"),
            (super::GRPC_MESSAGE, "grpc-message"),
            (super::GRPC_TIMEOUT, "grpc-timeout"),
            (super::GRPC_ENCODING, "grpc-encoding"),
            (super::TRACEPARENT, "traceparent"),
            (super::TRACESTATE, "tracestate"),
            (super::IDEMPOTENCY_KEY, "nexus-idempotency-key"),
            (super::EXECUTION_ID, "nexus-execution-id"),
            (super::X_API_KEY, "x-api-key"),
        ];
        for (name, text) in names {
            assert_eq!(name.as_str(), text);
            assert_eq!(name, http::HeaderName::from_bytes(text.as_bytes()).unwrap());
        }
    }
}

//! What a call's metadata tells the API: the caller's deadline (`grpc-timeout`) and trace
//! context (`traceparent`).

use std::time::{Duration, Instant};

use tonic::Request;

/// The caller's deadline, from the `grpc-timeout` header.
pub fn deadline<T>(req: &Request<T>) -> Option<Instant> {
    let v = req.metadata().as_ref().get(crate::headers::GRPC_TIMEOUT)?.to_str().ok()?;
    Some(Instant::now() + parse_timeout(v)?)
}

/// A `grpc-timeout` value: at most 8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`), per
/// the gRPC over HTTP/2 specification. Anything else is ignored as if absent.
fn parse_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    if num.is_empty() || num.len() > 8 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The caller's W3C `traceparent`, continued by every backend call.
pub fn traceparent<T>(req: &Request<T>) -> Option<String> {
    req.metadata().as_ref().get(crate::headers::TRACEPARENT).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The caller's W3C `tracestate` (several headers are one list, in order).
pub fn tracestate<T>(req: &Request<T>) -> Option<String> {
    let parts: Vec<&str> =
        req.metadata().as_ref().get_all(crate::headers::TRACESTATE).iter().filter_map(|v| v.to_str().ok()).collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_per_the_specification() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("5S", Some(Duration::from_secs(5))),
            ("100m", Some(Duration::from_millis(100))),
            ("250u", Some(Duration::from_micros(250))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789S", None), // more than 8 digits
            ("S", None),
            ("", None),
            ("-1S", None),
            ("+1S", None),
            ("10s", None), // units are case-sensitive: `s` is not one
            ("1.5S", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_timeout(text), expected, "{text:?}");
        }
    }
}

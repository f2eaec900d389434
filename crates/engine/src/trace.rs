//! W3C trace context (<https://www.w3.org/TR/trace-context/>): an execution's place in its
//! caller's trace, and the span ids of its parts.
//!
//! Every execution is a span, child of the caller's span when the caller sent a `traceparent`.
//! Every step attempt (and compensation call) is a span, child of the execution's span, and its
//! backend call carries that span's id as the parent: a backend's own spans hang under the attempt
//! that called it. Spans are recorded with the execution ([`crate::ExecutionRecord::trace`],
//! [`crate::Attempt::span_id`]) and exported, when an exporter is configured, once it finishes.

use std::{fmt::Write as _, sync::Arc};

use rand::Rng as _;

/// An execution's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, continued from the caller's `traceparent` or new.
    pub trace_id: u128,
    /// The execution's own span.
    pub span_id: u64,
    /// The span the execution is a child of: the caller's (from its `traceparent`) or, for a
    /// sub-pattern, the calling step attempt's; `None` for the root of a new trace.
    pub parent_span_id: Option<u64>,
    /// The caller's sampling decision (`trace-flags` bit 0); a new trace is sampled.
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unchanged.
    pub tracestate: Option<Arc<str>>,
}

/// Longest `tracestate` passed on (the specification's 32 members of up to 256 bytes each stay
/// far below it); a longer one is dropped, as the specification allows.
const MAX_TRACESTATE: usize = 8192;

impl TraceContext {
    /// Continues the caller's trace when `traceparent` is valid, else starts a new one (an invalid
    /// header is ignored, as the specification says, and its `tracestate` with it).
    pub fn start(traceparent: Option<&str>, tracestate: Option<&str>) -> Self {
        match traceparent.and_then(parse_traceparent) {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                span_id: new_span_id(),
                parent_span_id: Some(parent.span_id),
                sampled: parent.flags & 1 == 1,
                tracestate: tracestate
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.is_ascii())
                    .map(Arc::from),
            },
            None => Self {
                trace_id: rand::rng().random::<u128>().max(1),
                span_id: new_span_id(),
                parent_span_id: None,
                sampled: true,
                tracestate: None,
            },
        }
    }

    /// The context of an execution started by this one's span `parent` (a sub-pattern called by
    /// a step attempt): the same trace, a span of its own.
    pub fn child(&self, parent: u64) -> Self {
        Self { span_id: new_span_id(), parent_span_id: Some(parent), ..self.clone() }
    }

    /// The `traceparent` of a call made from span `span_id` of this trace.
    pub fn traceparent(&self, span_id: u64) -> String {
        // Written digit by digit: one per backend call, and `write!`'s formatting machinery cost
        // ~1,400 instructions for these 55 bytes.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        for (i, b) in out[3..35].iter_mut().enumerate() {
            *b = HEX[((self.trace_id >> (124 - 4 * i)) & 0xf) as usize];
        }
        out[35] = b'-';
        for (i, b) in out[36..52].iter_mut().enumerate() {
            *b = HEX[((span_id >> (60 - 4 * i)) & 0xf) as usize];
        }
        out[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        // Hex digits, dashes: ASCII, so always UTF-8 (the lossy path never replaces anything).
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The context as a durable execution journals it, space-separated: the execution's own
    /// `traceparent`, its parent's span id (or `-`), then the `tracestate` if any (last and taken
    /// whole: it may hold spaces).
    pub fn to_journal(&self) -> String {
        let mut s = self.traceparent(self.span_id);
        match self.parent_span_id {
            Some(p) => {
                let _ = write!(s, " {p:016x}");
            }
            None => s.push_str(" -"),
        }
        if let Some(state) = &self.tracestate {
            s.push(' ');
            s.push_str(state);
        }
        s
    }

    /// The context journaled by [`TraceContext::to_journal`]: a resumed execution (after a crash,
    /// on another replica) keeps its trace and its span, so its step attempts join the trace its
    /// caller started. `None` for an empty or malformed value (an execution journaled before
    /// traces were: it resumes in a new trace).
    pub fn from_journal(journaled: &str) -> Option<Self> {
        let mut parts = journaled.splitn(3, ' ');
        let own = parse_traceparent(parts.next()?)?;
        let parent_span_id = match parts.next()? {
            "-" => None,
            p => Some(u64::from_str_radix(p, 16).ok().filter(|p| *p != 0)?),
        };
        let tracestate = parts.next().filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE).map(Arc::from);
        Some(Self {
            trace_id: own.trace_id,
            span_id: own.span_id,
            parent_span_id,
            sampled: own.flags & 1 == 1,
            tracestate,
        })
    }
}

/// A new random span id (never 0, which is invalid).
pub fn new_span_id() -> u64 {
    rand::rng().random::<u64>().max(1)
}

/// A parsed `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

/// Parses `traceparent` per the specification: `version-traceid-parentid-flags` in lower-case
/// hex; version `ff` and all-zero ids are invalid; a future version may append fields after
/// the four it must keep.
pub fn parse_traceparent(header: &str) -> Option<TraceParent> {
    let h = header.trim();
    let b = h.as_bytes();
    if !h.is_ascii() || b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    let (version, trace, span, flags) = (&h[0..2], &h[3..35], &h[36..52], &h[53..55]);
    if !(hex(version) && hex(trace) && hex(span) && hex(flags)) || version == "ff" {
        return None;
    }
    // Version 00 is exactly 55 characters; later versions may add `-…` fields.
    if (version == "00" && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent { trace_id, span_id, flags })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_span_of_our_own() {
        let t = TraceContext::start(Some(CALLER), Some("congo=t61rcWkgMzE"));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id, Some(0x00f0_67aa_0ba9_02b7));
        assert_ne!(t.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(t.sampled);
        assert_eq!(t.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        let call = t.traceparent(0xabc);
        assert_eq!(call, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01");
        assert_eq!(parse_traceparent(&call).map(|p| p.span_id), Some(0xabc));
        // The caller's decision not to sample is kept.
        let unsampled = TraceContext::start(Some(&CALLER.replace("-01", "-00")), None);
        assert!(!unsampled.sampled);
        assert!(unsampled.traceparent(1).ends_with("-00"));
    }

    #[test]
    fn traceparent_is_written_as_the_specification_formats_it() {
        for _ in 0..200 {
            let t = TraceContext { sampled: rand::random(), ..TraceContext::start(None, None) };
            let span = rand::random::<u64>() >> (rand::random::<u32>() % 64);
            let expected = format!("00-{:032x}-{span:016x}-{:02x}", t.trace_id, u8::from(t.sampled));
            assert_eq!(t.traceparent(span), expected);
        }
    }

    #[test]
    fn a_journaled_context_comes_back_whole() {
        let caller = TraceContext::start(Some(CALLER), Some("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"));
        let root = TraceContext::start(None, None);
        let unsampled = TraceContext::start(Some(&CALLER.replace("-01", "-00")), None);
        for t in [caller, root, unsampled] {
            let journaled = t.to_journal();
            assert_eq!(TraceContext::from_journal(&journaled), Some(t), "{journaled}");
        }
        for bad in
            ["", "-", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "nonsense - x", &format!("{CALLER} 0")]
        {
            assert_eq!(TraceContext::from_journal(bad), None, "{bad}");
        }
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e47\u{e9}-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
            let t = TraceContext::start(Some(bad), Some("a=b"));
            assert_eq!((t.parent_span_id, t.tracestate), (None, None), "{bad:?}");
            assert_ne!(t.trace_id, 0);
        }
        // A later version may carry more fields after the four it keeps.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
    }

    #[test]
    fn a_sub_execution_stays_in_the_trace_under_the_calling_span() {
        let t = TraceContext::start(Some(CALLER), None);
        let sub = t.child(42);
        assert_eq!((sub.trace_id, sub.parent_span_id), (t.trace_id, Some(42)));
        assert_ne!(sub.span_id, t.span_id);
    }
}

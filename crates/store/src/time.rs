//! Timestamps as the stores keep them: milliseconds since the Unix epoch in a 64-bit integer.
//!
//! A leaf module: the migrations, the SQL of both stores and the stores themselves all convert
//! times, and none of them needs another of them to do it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch (0 before it).
pub(crate) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The inverse of [`ms`] (negative values are the epoch).
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// The current time, in milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_and_clamp_at_the_epoch() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_ms(ms(t)), t);
        assert_eq!(ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(from_ms(-5), UNIX_EPOCH);
    }
}

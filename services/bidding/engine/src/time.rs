//! Time as a value: the engine never reads a clock, it is told the time.

use serde::{Deserialize, Serialize};

use crate::limits::MAX_TIMESTAMP_MS;

/// Milliseconds since the Unix epoch (UTC). Every instant the engine sees, in
/// commands, specs and events, is one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch itself.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// Wraps milliseconds since the Unix epoch.
    pub const fn from_unix_ms(unix_ms: i64) -> Timestamp {
        Timestamp(unix_ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// Whether the instant lies in the range the engine accepts (the epoch up to the
    /// end of year 9999), which keeps every sum of a timestamp and a bounded duration
    /// far from overflow.
    pub const fn is_in_range(self) -> bool {
        self.0 >= 0 && self.0 <= MAX_TIMESTAMP_MS
    }

    /// This instant plus `duration_ms`, saturating rather than wrapping. Inputs are
    /// bounded by [`crate::limits`], so saturation never happens in practice; it is
    /// there so that an impossible overflow cannot wrap into the past.
    pub const fn saturating_add_ms(self, duration_ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_ms))
    }

    /// Milliseconds from `earlier` to `self`, saturating.
    pub const fn ms_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}ms", self.0)
    }
}

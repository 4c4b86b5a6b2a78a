//! Identifiers: Copy newtypes so that a bidder can never be passed where an auction
//! is expected. The service maps its UUIDv7s to the `u128`s one to one.

use serde::{Deserialize, Serialize};

/// A user: a bidder, a seller, an auctioneer or an admin, depending on the role the
/// command arrives with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub u128);

/// One auction (for live formats, one session of lots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuctionId(pub u128);

/// The caller's idempotency key for one command; the engine copies it into the events
/// the command produced so the service can answer a retried request from the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u128);

/// The position of a lot in a live session's running order, starting at zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LotIndex(pub u32);

impl LotIndex {
    /// The index as a `usize`, for indexing the session's lots.
    pub fn as_usize(self) -> usize {
        // A u32 always fits in a usize on the 32- and 64-bit targets we build for.
        self.0 as usize
    }
}

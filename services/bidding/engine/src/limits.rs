//! A limit on everything that grows. Each bound is far above what a real auction
//! needs and low enough that the state of one auction stays small and every
//! arithmetic step provably stays inside `i64` and `Decimal`.

/// The largest amount of money in major units (a trillion dollars, yen, ...). Keeping
/// amounts below this means a sum of two amounts and an increment can never overflow
/// a `Decimal` (whose range is about 7.9e28).
pub const MAX_AMOUNT_MAJOR_UNITS: i64 = 1_000_000_000_000;

/// The latest instant accepted: 9999-12-31T23:59:59.999Z.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// The longest duration anywhere in a spec or command (auction length, soft-close
/// window and extension, countdown, Dutch tick, sealed-bid time-to-live): 400 days.
pub const MAX_DURATION_MS: i64 = 400 * 24 * 60 * 60 * 1000;

/// The most tiers an increment table may have.
pub const MAX_INCREMENT_TIERS: usize = 64;

/// The most distinct bidders with a maximum bid in one English auction or one lot.
pub const MAX_BIDDERS_PER_BOOK: usize = 100_000;

/// The most accepted bids remembered per live lot for "undo last bid".
pub const MAX_BIDS_PER_LOT: usize = 100_000;

/// The most standing sealed bids in one sealed-bid auction.
pub const MAX_SEALED_BIDS: usize = 100_000;

/// The most lots in one live session.
pub const MAX_LOTS: usize = 10_000;

/// The most units a Dutch auction may offer.
pub const MAX_DUTCH_QUANTITY: u32 = 1_000_000;

/// The most price steps a Dutch clock may take from the start price to the floor.
pub const MAX_DUTCH_TICKS: u64 = 10_000_000;

/// The most timer firings one tick may process. Each firing retires one deadline
/// (an open, a close, a lot countdown, a sealed-bid expiry), so this is the sum of
/// everything that can be due at once, plus slack.
pub const MAX_TIMER_FIRINGS_PER_TICK: usize = MAX_SEALED_BIDS + 3 * MAX_LOTS + 16;

//! `auction-loadgen`: drives the bidding service over gRPC the way clients
//! do, and reports throughput and latency percentiles from HDR histograms.
//! It runs against `auctiond dev` (SQLite), `auctiond serve --config`
//! (PostgreSQL) or a cluster's gateway; every run is bounded in time and in
//! request count ([`MAX_DURATION_S`], [`MAX_REQUESTS`]).
//!
//! Modules:
//! - [`common`]: connections, credentials (service and bidder tokens minted
//!   from the server's key files), money and time helpers, the run budget,
//!   auction creation, and the report format.
//! - [`noop`]: `unary-noop`, `GetServerTime` as fast as possible: the ceiling
//!   of the server stack.
//! - [`bids`]: `bids`, N bidders on one hot auction or K auctions, at a fixed
//!   concurrency (closed loop) or a target rate (open loop, latency measured
//!   from the intended send time so queueing is not hidden).
//! - [`watch`]: `watch`, M `WatchAuction` streams on C connections while
//!   bidders bid; delivery latency from each bid's acknowledgement to its
//!   event on every stream (matched by auction and sequence), and the
//!   server's RSS before and after to compute memory per stream.
//! - [`sealed`]: `sealed-close`, many short sealed auctions under a bid load;
//!   close lateness = arrival of the terminal event on a watch stream minus
//!   the deadline (an upper bound: it includes delivery).
//!
//! Credentials: the load generator needs a service token (CreateAuction
//! accepts services) and bidder tokens. It reads the server's own Ed25519
//! key files (`<data_dir>/keys/` of `auctiond dev`, or of `auctiond serve`
//! with `auth.generate_missing_keys = true`) and signs them itself with
//! `auction_platform::auth::Keys`, so no account is created and no password
//! hashing runs before or during the timed part.

pub mod bids;
pub mod common;
pub mod noop;
pub mod sealed;
pub mod watch;

/// No run lasts longer than this (seconds), whatever the flags say.
pub const MAX_DURATION_S: u64 = 600;
/// No run sends more requests than this, whatever the flags say.
pub const MAX_REQUESTS: u64 = 20_000_000;
/// At most this many watch streams per run.
pub const MAX_STREAMS: usize = 20_000;
/// At most this many auctions created per run.
pub const MAX_AUCTIONS: usize = 20_000;
/// At most this many distinct bidder identities per run.
pub const MAX_BIDDERS: usize = 100_000;
/// At most this many requests in flight.
pub const MAX_CONCURRENCY: usize = 4_096;

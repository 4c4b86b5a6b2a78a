//! The bidding service over the real wire (gRPC against the whole mesh on
//! port 0), on SQLite and on PostgreSQL: bids and their rejections,
//! exactly-once retries across a restart, resumable watch streams, timers.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod list_auctions;
mod live;
mod log;
mod my_activity;
mod support;
mod update_auction;
mod wire;

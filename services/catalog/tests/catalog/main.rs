//! The catalog service over the real wire (gRPC against the whole mesh on
//! port 0), on SQLite and PostgreSQL: items, listings scheduled in the
//! bidding service over gRPC, search with facets and cursors that follows
//! bidding events, the watchlist.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod items;
mod listings;
mod live_sessions;
mod media;
mod search;
mod support;

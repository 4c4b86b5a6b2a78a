//! The whole mesh over the real wire: health, reflection, grpc-web, error
//! statuses, graceful shutdown and restart of the `auctiond` process, on
//! SQLite and on PostgreSQL.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod auth;
mod client;
mod crash;
mod email_verification;
mod feedback;
mod grpc_web_node;
mod process;
mod replay;
mod tls;
mod user_events;
mod wire;

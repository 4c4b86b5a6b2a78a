//! Shared plumbing of every service of the auction mesh, kept small on
//! purpose: the services hold the logic, this crate holds what they all
//! need the same way.
//!
//! - [`auth`]: who is calling: [`auth::Caller`], the layer that verifies
//!   access tokens on every listener, the token keys.
//! - [`config`]: layered configuration (defaults, TOML file, `AUCTION_*`
//!   environment), validated at start with errors that name the key.
//! - [`backends`]: start-up checks that the configured Redis and etcd answer.
//! - [`bus`]: the event bus between services (Redis Streams or in-process)
//!   and the transactional outbox with its relay.
//! - [`telemetry`]: the one `tracing` set-up (text or JSON).
//! - [`database`]: per-service pools and migrations for PostgreSQL and SQLite.
//! - [`shutdown`]: the shared shutdown signal and SIGTERM/ctrl-c handling.
//! - [`peers`]: lazily connected gRPC channels to the other services, with
//!   the calling service's token attached.
//! - [`error`]: service errors to `tonic::Status` with stable reasons.
//! - [`service`]: the [`MeshService`] trait every service implements, and
//!   the `main` of a service's own binary.
//! - [`server`]: the listener stack (gRPC + grpc-web, health, reflection,
//!   CORS, tracing, graceful drain).

pub mod auth;
pub mod backends;
pub mod bus;
pub mod config;
pub mod database;
pub mod error;
pub mod peers;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;

/// Every binary of the mesh (and its tests) allocates with mimalloc: a
/// stream, a bid and a commit allocate small short-lived buffers by the
/// hundred (HTTP/2 frames, protobuf messages, SQL rows), where glibc's
/// malloc took 15-20 % of the server's CPU under load (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use config::Config;
pub use database::{Database, Migrations};
pub use error::{ServiceError, to_status, unimplemented};
pub use service::{MeshService, ServiceContext, StartError, mount, run_single, service_main};
pub use shutdown::Shutdown;

/// Milliseconds since the Unix epoch by the system clock (for `*_at_ms`
/// columns and deadlines; the server's clock is the authority).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

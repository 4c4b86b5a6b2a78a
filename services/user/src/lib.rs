//! The user service: accounts, sign-in with rotating refresh tokens and optional TOTP, profiles and interests, roles, reputation, partner API keys, admin suspension.
//!
//! A library (mounted by `auctiond` next to the other services, or alone by
//! this crate's own binary) implementing [`auction_platform::MeshService`].
//!
//! - `grpc`: the `auction.v1.UserService` implementation.
//! - [`store`]: its tables on PostgreSQL or SQLite.
//! - [`demo`]: demo data for `auctiond dev`.
//!
//! Migrations: `migrations/postgres` and `migrations/sqlite`.

pub mod demo;
mod grpc;
pub mod store;

use auction_platform::{MeshService, Migrations, ServiceContext, StartError};
use auction_proto::v1::user_service_server::UserServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The user service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its configuration, database and shutdown signal.
    #[expect(dead_code, reason = "read by the RPCs that issue 7 builds")]
    context: ServiceContext,
}

impl MeshService for Service {
    const NAME: &'static str = "auction.v1.UserService";
    const SCHEMA: &'static str = "users";

    fn migrations() -> Migrations {
        Migrations {
            postgres: &POSTGRES_MIGRATIONS,
            sqlite: &SQLITE_MIGRATIONS,
        }
    }

    async fn build(context: ServiceContext) -> Result<Self, StartError> {
        if context.config.demo.seed_on_first_start {
            demo::seed(&context.database)
                .await
                .map_err(|error| StartError::Service {
                    service: Self::NAME,
                    message: auction_platform::error::DisplayChain(&error).to_string(),
                })?;
        }
        Ok(Self { context })
    }

    fn add_routes(self, routes: &mut RoutesBuilder) {
        routes.add_service(UserServiceServer::new(self));
    }
}

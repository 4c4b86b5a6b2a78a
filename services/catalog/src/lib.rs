//! The catalog service: items, media, listings, live sessions, search and discovery, watchlists.
//!
//! A library (mounted by `auctiond` next to the other services, or alone by
//! this crate's own binary) implementing [`auction_platform::MeshService`].
//!
//! - `grpc`: the `auction.v1.CatalogService` implementation.
//! - [`categories`]: the category tree in the order the API shows it.
//! - [`error`]: the service's errors and their gRPC mapping.
//! - [`store`]: its tables on PostgreSQL or SQLite.
//! - [`demo`]: demo data for `auctiond dev`.
//!
//! Migrations: `migrations/postgres` and `migrations/sqlite`.

pub mod categories;
pub mod demo;
pub mod error;
mod grpc;
pub mod store;

use auction_platform::{MeshService, Migrations, ServiceContext, StartError};
use auction_proto::v1::catalog_service_server::CatalogServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The catalog service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its configuration, database and shutdown signal.
    context: ServiceContext,
}

impl MeshService for Service {
    const NAME: &'static str = "auction.v1.CatalogService";
    const SCHEMA: &'static str = "catalog";

    fn migrations() -> Migrations {
        Migrations {
            postgres: &POSTGRES_MIGRATIONS,
            sqlite: &SQLITE_MIGRATIONS,
        }
    }

    async fn build(context: ServiceContext) -> Result<Self, StartError> {
        // The category tree is seeded whenever it is empty; demo items only
        // with demo data on.
        demo::seed(&context.database, context.config.demo.seed_on_first_start)
            .await
            .map_err(|error| StartError::Service {
                service: Self::NAME,
                message: auction_platform::error::DisplayChain(&error).to_string(),
            })?;
        Ok(Self { context })
    }

    fn add_routes(self, routes: &mut RoutesBuilder) {
        routes.add_service(CatalogServiceServer::new(self));
    }
}

//! The payment service: orders for won auctions, escrow, the double-entry ledger, disputes, payouts and reconciliation.
//!
//! A library (mounted by `auctiond` next to the other services, or alone by
//! this crate's own binary) implementing [`auction_platform::MeshService`].
//!
//! - `grpc`: the `auction.v1.PaymentService` implementation.
//!
//! Migrations: `migrations/postgres` and `migrations/sqlite`.

mod grpc;

use auction_platform::{MeshService, Migrations, ServiceContext, StartError};
use auction_proto::v1::payment_service_server::PaymentServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The payment service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its configuration, database and shutdown signal.
    #[expect(dead_code, reason = "read by the RPCs that issue 9 builds")]
    context: ServiceContext,
}

impl MeshService for Service {
    const NAME: &'static str = "auction.v1.PaymentService";
    const SCHEMA: &'static str = "payment";

    fn migrations() -> Migrations {
        Migrations {
            postgres: &POSTGRES_MIGRATIONS,
            sqlite: &SQLITE_MIGRATIONS,
        }
    }

    async fn build(context: ServiceContext) -> Result<Self, StartError> {
        Ok(Self { context })
    }

    fn add_routes(self, routes: &mut RoutesBuilder) {
        routes.add_service(PaymentServiceServer::new(self));
    }
}

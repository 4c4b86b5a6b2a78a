//! The payment service: orders for won auctions, escrow, the double-entry ledger, disputes, payouts and reconciliation.
//!
//! A library (mounted by `auctiond` next to the other services, or alone by
//! this crate's own binary) implementing [`auction_platform::MeshService`].
//! Orders come from the event bus (group `payment` on topic `auction`): one
//! per award of a sold auction, exactly once (deterministic id and a unique
//! origin key). Money moves through a payment provider into escrow and out
//! to the seller, the platform's fees or back to the buyer, each movement a
//! balanced, immutable ledger posting booked once.
//!
//! - `money`: amounts with their currency, parsed and printed exactly.
//! - `rules`: the pure order/escrow state machine and its ledger postings.
//! - `provider`: the payment-provider trait and the deterministic sandbox.
//! - `sql`, `store`: the tables on PostgreSQL or SQLite; idempotency
//!   records, conditional transitions, the ledger.
//! - `convert`: records to contract messages; order events for the bus.
//! - `payments`: charging an order and settling attempts (shared by
//!   PayOrder and the reconciler).
//! - `consumer`: auction events into orders and bidders' last amounts.
//! - `worker`: deadlines (unpaid cancellation, automatic release, offer
//!   expiry, dispute answers) and reconciliation of PENDING attempts.
//! - `grpc`: the `auction.v1.PaymentService` implementation.
//! - `error`: errors and their gRPC mapping.
//!
//! Migrations: `migrations/postgres` and `migrations/sqlite`.

mod consumer;
mod convert;
mod error;
mod grpc;
pub mod money;
mod payments;
pub mod provider;
pub mod rules;
mod sql;
mod store;
mod worker;

use std::str::FromStr;
use std::sync::Arc;

use auction_platform::bus::outbox::{Relay, RelayOptions};
use auction_platform::bus::{self, EventBus, Subscription};
use auction_platform::config::PaymentConfig;
use auction_platform::{Database, MeshService, Migrations, ServiceContext, StartError};
use auction_proto::v1::payment_service_server::PaymentServiceServer;
use rust_decimal::Decimal;
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

use crate::provider::PaymentProvider;
use crate::rules::FeeSchedule;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

pub(crate) use auction_platform::now_ms;

/// Periods and fees, from `payment.*` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Fees of new orders.
    pub fees: FeeSchedule,
    /// Time to pay.
    pub payment_due_ms: i64,
    /// Automatic release after shipping.
    pub auto_release_ms: i64,
    /// Time for the seller to answer a dispute.
    pub dispute_response_ms: i64,
    /// Background scan period.
    pub scan_interval_ms: u64,
    /// Age of a PENDING attempt before the provider is asked.
    pub attempt_reconcile_after_ms: i64,
    /// One provider call's limit.
    pub provider_timeout_ms: u64,
    /// Calls per charge.
    pub provider_max_calls: u32,
}

impl Settings {
    fn from_config(config: &PaymentConfig) -> Result<Self, String> {
        let ms = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        Ok(Self {
            fees: FeeSchedule {
                buyers_premium_bps: config.buyers_premium_bps,
                buyer_service_fee: Decimal::from_str(&config.buyer_service_fee)
                    .map_err(|error| format!("payment.buyer_service_fee: {error}"))?,
                seller_commission_bps: config.seller_commission_bps,
            },
            payment_due_ms: ms(config.payment_due_ms),
            auto_release_ms: ms(config.auto_release_ms),
            dispute_response_ms: ms(config.dispute_response_ms),
            scan_interval_ms: config.scan_interval_ms,
            attempt_reconcile_after_ms: ms(config.attempt_reconcile_after_ms),
            provider_timeout_ms: config.provider_timeout_ms,
            provider_max_calls: config.provider_max_calls,
        })
    }
}

/// What the RPCs, the consumer and the worker share.
pub struct Inner {
    /// The tables.
    database: Database,
    /// Fees and periods.
    settings: Settings,
    /// The payment provider (the sandbox for now).
    provider: Arc<dyn PaymentProvider>,
    /// Publishes staged order events soon after each commit.
    relay: Relay,
}

/// The payment service.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PaymentService")
            .finish_non_exhaustive()
    }
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
        let fail = |message: String| StartError::Service {
            service: "payment",
            message,
        };
        let settings = Settings::from_config(&context.config.payment).map_err(fail)?;
        let bus: Arc<dyn EventBus> = bus::for_process(&context.config)
            .map_err(|error| fail(format!("event bus: {error}")))?;
        let relay = Relay::spawn(
            context.database.clone(),
            Arc::clone(&bus),
            context.shutdown.clone(),
            RelayOptions::default(),
        );
        let sandbox = provider::Sandbox::new(
            i64::try_from(context.config.payment.sandbox_settle_after_ms).unwrap_or(i64::MAX),
        );
        let inner = Arc::new(Inner {
            database: context.database.clone(),
            settings,
            provider: Arc::new(sandbox),
            relay,
        });
        bus.subscribe(
            Subscription {
                group: consumer::GROUP.to_owned(),
                topics: vec![bus::TOPIC_AUCTION.to_owned()],
                shutdown: context.shutdown.clone(),
            },
            Arc::new(auction_platform::bus::Batched(consumer::Consumer {
                inner: Arc::clone(&inner),
            })),
        );
        tokio::spawn(worker::run(Arc::clone(&inner), context.shutdown.clone()));
        Ok(Self { inner })
    }

    fn add_routes(self, routes: &mut RoutesBuilder) {
        routes.add_service(PaymentServiceServer::new(self));
    }
}

//! The user service: accounts, sign-in with rotating refresh tokens and optional TOTP, profiles and interests, roles, reputation, e-mail verification, partner API keys, admin suspension.
//!
//! A library (mounted by `auctiond` next to the other services, or alone by
//! this crate's own binary) implementing [`auction_platform::MeshService`].
//!
//! - `grpc`: the `auction.v1.UserService` implementation (register, login
//!   with brute-force throttling, TOTP, rotating refresh tokens, profiles,
//!   e-mail verification, API keys, admin role changes and suspensions).
//! - `error`: its errors and their gRPC codes and reasons.
//! - `feedback`: the rules of feedback (who, when, which side) and the
//!   ListFeedback page tokens; pure.
//! - `orders`: consumes the payment service's order events (topic `order`,
//!   group `user`) into the order facts feedback is checked against.
//! - `replay`: request-id replay: the claim, the stored outcome in the
//!   same transaction as the change, sealed secrets (issue 7).
//! - `events`: the `BusUserEvent`s (topic `user`) staged in the outbox
//!   with the account changes they describe (issue 10).
//! - [`store`]: its tables on PostgreSQL or SQLite, through `sql` (one
//!   SQL text for both backends).
//! - [`secrets`]: random tokens (refresh, API key, e-mail verification)
//!   and RFC 6238 TOTP.
//! - [`demo`]: demo data for `auctiond dev`.
//! - [`ApiKeyExchanger`]: lets the gateway accept `x-api-key` in-process.
//!
//! Migrations: `migrations/postgres` and `migrations/sqlite`.

pub mod demo;
mod error;
mod events;
mod feedback;
mod grpc;
mod orders;
mod replay;
pub mod secrets;
mod sql;
pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use auction_platform::auth::{ApiKeyExchange, Clock, SystemClock};
use auction_platform::bus::outbox::{Relay, RelayOptions};
use auction_platform::bus::{self, EventBus};
use auction_platform::{MeshService, Migrations, ServiceContext, StartError};
use auction_proto::v1::user_service_server::UserServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The user service.
#[derive(Clone)]
pub struct Service {
    /// Its configuration, database, keys and shutdown signal.
    context: ServiceContext,
    /// The time source of tokens, sessions, TOTP and throttling.
    clock: Arc<dyn Clock>,
    /// An argon2id hash checked when a login names an unknown e-mail, so
    /// the answer takes as long as for a real account.
    dummy_hash: Arc<str>,
    /// Fingerprints request content and seals the secrets of replayable
    /// answers (see `replay`).
    replay_keys: Arc<replay::ReplayKeys>,
    /// Publishes the staged user events soon after each commit; `None` in
    /// the gateway's in-process API-key exchanger, which changes nothing.
    relay: Option<Relay>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Service")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// Exchanges partner API keys for access tokens in-process, for the
/// gateway's auth layer (`x-api-key`). Every call checks the key in the
/// database, so a revoked key stops working at once.
#[derive(Debug, Clone)]
pub struct ApiKeyExchanger {
    service: Service,
}

impl ApiKeyExchanger {
    /// An exchanger over the user service's database and keys.
    pub async fn new(context: ServiceContext) -> Result<Self, StartError> {
        Ok(Self {
            service: Service::with_context(context, None)?,
        })
    }
}

impl ApiKeyExchange for ApiKeyExchanger {
    fn exchange<'a>(
        &'a self,
        secret: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, tonic::Status>> + Send + 'a>> {
        Box::pin(async move {
            self.service
                .exchange(&mut sql::Pool(&self.service.context.database), secret)
                .await
                .map(|(token, _)| token.token)
                .map_err(tonic::Status::from)
        })
    }
}

impl Service {
    fn with_context(context: ServiceContext, relay: Option<Relay>) -> Result<Self, StartError> {
        let dummy_hash = store::hash_password("not a password of anyone").map_err(|error| {
            StartError::Service {
                service: Self::NAME,
                message: error.to_string(),
            }
        })?;
        // A process without the token signing key issues no tokens, so
        // has nothing to replay that needs the derived key.
        let replay_keys = replay::ReplayKeys::derive(&context.keys)
            .unwrap_or_else(|_| replay::ReplayKeys::random());
        Ok(Self {
            context,
            clock: Arc::new(SystemClock),
            dummy_hash: dummy_hash.into(),
            replay_keys: Arc::new(replay_keys),
            relay,
        })
    }
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
        // Feedback needs to know who bought and sold what, and whether it
        // was paid: the payment service says so on the bus.
        let bus: Arc<dyn EventBus> =
            bus::for_process(&context.config).map_err(|error| StartError::Service {
                service: Self::NAME,
                message: format!("event bus: {error}"),
            })?;
        orders::subscribe(&bus, context.database.clone(), context.shutdown.clone());
        // Account changes stage BusUserEvents in the outbox; the relay
        // publishes them (catalog and notification consume them).
        let relay = Relay::spawn(
            context.database.clone(),
            Arc::clone(&bus),
            context.shutdown.clone(),
            RelayOptions::default(),
        );
        tokio::spawn(replay::purge_expired(
            context.database.clone(),
            context.shutdown.clone(),
        ));
        Self::with_context(context, Some(relay))
    }

    fn add_routes(self, routes: &mut RoutesBuilder) {
        routes.add_service(UserServiceServer::new(self));
    }
}

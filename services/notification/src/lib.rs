//! The notification service: the resumable per-user stream, the inbox, preferences, partner webhooks and e-mail.
//!
//! A library (mounted by `auctiond` next to the other services, or alone by
//! this crate's own binary) implementing [`auction_platform::MeshService`].
//! It consumes the event bus (group `notification` on the topics `auction`,
//! `order`, `catalog`, `user`; see `proto/auction/v1/events.proto`), decides
//! who gets what, stores each notification in the recipient's inbox with a
//! per-user sequence, and delivers it on the channels the recipient chose.
//!
//! - `plan`: pure mapping of bus events to notifications (recipients, texts,
//!   dedupe keys) and the channel defaults of each type.
//! - `store`: the tables; one transaction per consumed event, exactly once
//!   by event id.
//! - `consumer`: the bus handler and the ending-soon scheduler.
//! - `hub`: wakes a user's open streams when the inbox grows.
//! - `grpc`: the `auction.v1.NotificationService` implementation.
//! - `webhook`: signed deliveries with retries, auto-disable, delivery log.
//! - `email`: templates and the SMTP worker (lettre).
//! - `error`: errors and their gRPC mapping.
//!
//! Migrations: `migrations/postgres` and `migrations/sqlite`.

mod consumer;
mod email;
mod error;
mod grpc;
mod hub;
pub mod plan;
mod store;
pub mod webhook;

use std::sync::Arc;

use auction_platform::bus::{self, Batched, EventBus, Subscription};
use auction_platform::config::Config;
use auction_platform::{MeshService, Migrations, ServiceContext, Shutdown, StartError};
use auction_proto::v1::notification_service_server::NotificationServiceServer;
use sqlx::migrate::Migrator;
use tokio::sync::Notify;
use tonic::service::RoutesBuilder;

pub use consumer::GROUP as CONSUMER_GROUP;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

pub(crate) use auction_platform::now_ms;

/// What the RPCs, the consumer and the workers share.
pub struct Inner {
    /// The process configuration (`notification.*` keys).
    config: Arc<Config>,
    /// The tables.
    store: store::Store,
    /// Wakes user streams.
    hub: hub::Hub,
    /// Wakes the webhook worker when deliveries are queued.
    wake_webhooks: Notify,
    /// Wakes the e-mail worker when e-mails are queued.
    wake_emails: Notify,
    /// Ends streams and workers.
    shutdown: Shutdown,
}

/// The notification service.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NotificationService")
            .finish_non_exhaustive()
    }
}

impl MeshService for Service {
    const NAME: &'static str = "auction.v1.NotificationService";
    const SCHEMA: &'static str = "notification";

    fn migrations() -> Migrations {
        Migrations {
            postgres: &POSTGRES_MIGRATIONS,
            sqlite: &SQLITE_MIGRATIONS,
        }
    }

    async fn build(context: ServiceContext) -> Result<Self, StartError> {
        let fail = |message: String| StartError::Service {
            service: "notification",
            message,
        };
        let mailer = match &context.config.notification.smtp {
            Some(smtp) => Some(email::Mailer::new(smtp).map_err(fail)?),
            None => None,
        };
        let inner = Arc::new(Inner {
            config: Arc::clone(&context.config),
            store: store::Store::new(
                context.database.clone(),
                store::StoreSettings {
                    email_enabled: mailer.is_some(),
                },
            ),
            hub: hub::Hub::default(),
            wake_webhooks: Notify::new(),
            wake_emails: Notify::new(),
            shutdown: context.shutdown.clone(),
        });
        let bus: Arc<dyn EventBus> = bus::for_process(&context.config)
            .map_err(|error| fail(format!("event bus: {error}")))?;
        bus.subscribe(
            Subscription {
                group: consumer::GROUP.to_owned(),
                topics: consumer::topics(),
                shutdown: context.shutdown.clone(),
            },
            Arc::new(Batched(consumer::Consumer {
                inner: Arc::clone(&inner),
            })),
        );
        tokio::spawn(consumer::run_ending_soon(
            Arc::clone(&inner),
            context.shutdown.clone(),
        ));
        tokio::spawn(webhook::run(Arc::clone(&inner), context.shutdown.clone()));
        if let Some(mailer) = mailer {
            tokio::spawn(email::run(
                Arc::clone(&inner),
                mailer,
                context.shutdown.clone(),
            ));
        }
        Ok(Self { inner })
    }

    fn add_routes(self, routes: &mut RoutesBuilder) {
        routes.add_service(NotificationServiceServer::new(self));
    }
}

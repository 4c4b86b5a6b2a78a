//! The catalog service: items, media, listings, live sessions, search and discovery, watchlists.
//!
//! A library (mounted by `auctiond` next to the other services, or alone by
//! this crate's own binary) implementing [`auction_platform::MeshService`].
//! It schedules, edits and cancels auctions in the bidding service over gRPC
//! (through [`auction_platform::peers`]) and follows their bidding through
//! the bus (topic `auction`), so search shows current prices and bid counts.
//!
//! - `grpc`: the `auction.v1.CatalogService` implementation (delegates).
//! - [`items`]: items, their field rules and RPCs.
//! - [`listings`]: listings and the exactly-once scheduling in bidding.
//! - [`sessions`]: live sessions (ordered lots, each a LIVE listing) and
//!   their "starting soon" notice.
//! - [`media`]: uploads streamed into the object store, sniffing,
//!   limits, thumbnails.
//! - [`uploads`]: resumable chunked uploads for grpc-web clients.
//! - [`rules`]: the format and schedule rules of a listing (pure).
//! - [`search`]: full-text search with filters, sorts, facets and cursors
//!   (PostgreSQL tsvector + GIN, SQLite FTS5).
//! - [`watchlist`]: following listings (published as `WatchlistChanged`).
//! - [`consumer`]: bidding's auction events into the browsing copies.
//! - [`money`], [`pagination`], [`idempotency`]: amounts, page tokens,
//!   request ids.
//! - [`categories`]: the category tree in the order the API shows it.
//! - [`error`]: the service's errors and their gRPC mapping.
//! - [`store`], `sql`: categories and the SQL helpers for both backends.
//! - [`demo`]: demo data for `auctiond dev`.
//!
//! Migrations: `migrations/postgres` and `migrations/sqlite`.

pub mod categories;
pub mod consumer;
pub mod demo;
pub mod error;
mod grpc;
pub mod idempotency;
pub mod items;
pub mod listings;
pub mod media;
pub mod money;
pub mod pagination;
pub mod rules;
pub mod search;
pub mod sessions;
mod sql;
pub mod store;
pub mod uploads;
pub mod watchlist;

use std::sync::Arc;
use std::time::Duration;

use auction_platform::bus::outbox::{Relay, RelayOptions};
use auction_platform::bus::{self, EventBus, Subscription};
use auction_platform::config::Config;
use auction_platform::peers::Peers;
use auction_platform::{Database, MeshService, Migrations, ServiceContext, StartError};
use auction_proto::v1::catalog_service_server::CatalogServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a listing may wait for bidding before the background task
/// finishes it for a caller who did not retry.
const PENDING_LISTING_GRACE_MS: i64 = 30_000;

/// What the RPCs, the consumer and the background tasks share.
pub struct Inner {
    /// The process configuration.
    config: Arc<Config>,
    /// The catalog's tables.
    database: Database,
    /// Channels to the bidding (and other) services.
    peers: Peers,
    /// Publishes the outbox (watchlist changes) after commits.
    relay: Relay,
    /// Where media bytes live (a local folder or a bucket).
    media: Arc<dyn object_store::ObjectStore>,
    /// Active listings per category path and when they were counted: the
    /// contract refreshes `active_listing_count` every minute.
    active_counts: tokio::sync::Mutex<Option<CountedCategories>>,
    /// Wakes the live-session notice task when a session is created (its
    /// notice may be due at once).
    notices: tokio::sync::Notify,
}

/// Active listings per category path, and when they were counted.
type CountedCategories = (std::time::Instant, Vec<(String, i64)>);

/// How long category counts are reused.
const ACTIVE_COUNTS_TTL: Duration = Duration::from_secs(60);

impl Inner {
    /// SCHEDULED, OPEN and EXTENDED listings per category path, at most a
    /// minute old.
    pub async fn active_counts_by_path(&self) -> Result<Vec<(String, i64)>, error::CatalogError> {
        let mut cached = self.active_counts.lock().await;
        if let Some((counted_at, counts)) = cached.as_ref()
            && counted_at.elapsed() < ACTIVE_COUNTS_TTL
        {
            return Ok(counts.clone());
        }
        let rows = sql::fetch_all(
            &self.database,
            "SELECT category_path, COUNT(*) AS n FROM listings \
             WHERE status IN ('scheduled', 'open', 'extended') GROUP BY category_path",
            &[],
        )
        .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in rows {
            counts.push((row.text("category_path")?, row.int("n")?));
        }
        *cached = Some((std::time::Instant::now(), counts.clone()));
        Ok(counts)
    }
}

/// The catalog service.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CatalogService")
            .field("peers", &self.inner.peers)
            .finish_non_exhaustive()
    }
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
        let fail = |message: String| StartError::Service {
            service: Self::NAME,
            message,
        };
        // The category tree is seeded whenever it is empty; demo items only
        // with demo data on.
        demo::seed(&context.database, context.config.demo.seed_on_first_start)
            .await
            .map_err(|error| fail(auction_platform::error::DisplayChain(&error).to_string()))?;
        let bus: Arc<dyn EventBus> = bus::for_process(&context.config)
            .map_err(|error| fail(format!("event bus: {error}")))?;
        let relay = Relay::spawn(
            context.database.clone(),
            Arc::clone(&bus),
            context.shutdown.clone(),
            RelayOptions::default(),
        );
        let media = media::open_store(&context.config.media).map_err(fail)?;
        let inner = Arc::new(Inner {
            config: Arc::clone(&context.config),
            database: context.database.clone(),
            peers: Peers::new(&context.config, Arc::clone(&context.keys), "catalog"),
            relay,
            media,
            active_counts: tokio::sync::Mutex::new(None),
            notices: tokio::sync::Notify::new(),
        });
        bus.subscribe(
            Subscription {
                group: consumer::GROUP.to_owned(),
                topics: consumer::topics(),
                shutdown: context.shutdown.clone(),
            },
            Arc::new(auction_platform::bus::Batched(consumer::Consumer {
                inner: Arc::clone(&inner),
            })),
        );
        tokio::spawn(run_pending_listings(
            Arc::clone(&inner),
            context.shutdown.clone(),
        ));
        tokio::spawn(sessions::run_notices(
            Arc::clone(&inner),
            context.shutdown.clone(),
        ));
        Ok(Self { inner })
    }

    fn add_routes(self, routes: &mut RoutesBuilder) {
        // Media bytes by plain GET under /media/ (when no CDN is configured).
        routes.add_service(media::MediaFiles::new(
            Arc::clone(&self.inner.media),
            self.inner.database.clone(),
        ));
        routes.add_service(CatalogServiceServer::new(self));
    }
}

/// Every few seconds, finishes listings whose caller gave up while bidding
/// was unreachable (see [`listings`]).
async fn run_pending_listings(inner: Arc<Inner>, shutdown: auction_platform::Shutdown) {
    let interval =
        Duration::from_millis(u64::try_from(PENDING_LISTING_GRACE_MS / 3).unwrap_or(10_000));
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => return,
        }
        if let Err(error) = inner.resume_pending(PENDING_LISTING_GRACE_MS).await {
            tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "resuming pending listings failed");
        }
        if let Err(error) = inner.expire_upload_sessions().await {
            tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "expiring upload sessions failed");
        }
    }
}

//! The bidding service: every auction format's bids and auctioneer controls over the pure engine, the durable shard log, timers and resumable live streams.
//!
//! A library (mounted by `auctiond` next to the other services, or alone by
//! this crate's own binary) implementing [`auction_platform::MeshService`].
//!
//! - `grpc`: the `auction.v1.BiddingService` implementation; in a cluster it
//!   forwards a command for a shard led elsewhere to that shard's leader.
//! - `cluster`: shard leadership through etcd and the routing table.
//! - `live`: live lots, the auctioneer's controls and the session rules
//!   that span a session's lots.
//! - `activity`: the per-user index (ListMyBids, WatchMyActivity).
//! - `update`: UpdateAuction's new spec from a request and the auction.
//!
//! Migrations: `migrations/postgres` and `migrations/sqlite`.

pub mod activity;
pub mod bus_events;
pub mod cluster;
pub mod convert;
pub mod demo;
pub mod error;
pub mod fanout;
mod grpc;
pub mod history;
pub mod hub;
pub mod live;
pub mod log;
pub mod market;
pub mod retention;
pub mod routing;
pub mod rpc;
pub mod shard;
pub mod update;
pub mod watch;

use auction_platform::{MeshService, Migrations, ServiceContext, StartError};
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The bidding service.
#[derive(Debug, Clone)]
pub struct Service {
    /// The shards, the log, the fan-out, the clock and the cluster the
    /// RPCs share.
    bidding: rpc::Bidding,
}

impl MeshService for Service {
    const NAME: &'static str = "auction.v1.BiddingService";
    const SCHEMA: &'static str = "bidding";

    fn migrations() -> Migrations {
        Migrations {
            postgres: &POSTGRES_MIGRATIONS,
            sqlite: &SQLITE_MIGRATIONS,
        }
    }

    async fn build(context: ServiceContext) -> Result<Self, StartError> {
        let log = log::Log::new(context.database.clone());
        let hub = std::sync::Arc::new(hub::Hub::new(
            context.config.bidding.watcher_buffer_batches as usize,
        ));
        let clock: std::sync::Arc<dyn shard::Clock> = std::sync::Arc::new(shard::SystemClock);
        let market = std::sync::Arc::new(market::MarketFeed::new(clock.now()));
        let bus = auction_platform::bus::for_process(&context.config).map_err(|error| {
            StartError::Service {
                service: Self::NAME,
                message: auction_platform::error::DisplayChain(&error).to_string(),
            }
        })?;
        let relay = std::sync::Arc::new(auction_platform::bus::outbox::Relay::spawn(
            context.database.clone(),
            bus,
            context.shutdown.clone(),
            auction_platform::bus::outbox::RelayOptions::default(),
        ));
        // Named once: random when not configured.
        let node = cluster::node_id(&context.config);
        // In a cluster with Redis, watchers on any node follow every commit
        // through Redis pub/sub (one subscription per watched auction and
        // node); alone, the in-process hub is enough.
        let fanout = match (
            &context.config.redis.url,
            context.config.etcd.endpoints.is_empty(),
        ) {
            (Some(url), false) => Some(
                fanout::Fanout::start(
                    url,
                    &context.config.redis.stream_prefix,
                    &context.config.etcd.key_prefix,
                    std::sync::Arc::clone(&hub),
                    node.clone(),
                    context.shutdown.clone(),
                )
                .map_err(|error| StartError::Service {
                    service: Self::NAME,
                    message: format!("redis.url: {error}"),
                })?,
            ),
            _ => None,
        };
        let shard_context = shard::ShardContext {
            fanout: fanout.clone(),
            log: log.clone(),
            hub: std::sync::Arc::clone(&hub),
            market: std::sync::Arc::clone(&market),
            relay,
            clock: std::sync::Arc::clone(&clock),
            shutdown: context.shutdown.clone(),
            node,
            claims: std::sync::Arc::default(),
        };
        let (shards, cluster) = if context.config.etcd.endpoints.is_empty() {
            let (shards, terms) =
                shard::start_single_node(&shard_context, context.config.bidding.shard_count)
                    .await
                    .map_err(|error| StartError::Service {
                        service: Self::NAME,
                        message: auction_platform::error::DisplayChain(&error).to_string(),
                    })?;
            // Single-node terms last as long as the process.
            drop(terms);
            (shards, None)
        } else {
            let shards = shard::Shards::new(context.config.bidding.shard_count);
            let cluster = cluster::Cluster::start(
                &context.config,
                context.local_address,
                shard_context,
                shards.clone(),
            )
            .await?;
            (shards, Some(cluster))
        };
        if context.config.demo.seed_on_first_start && cluster.is_none() {
            demo::seed(&shards, &log, clock.as_ref())
                .await
                .map_err(|error| StartError::Service {
                    service: Self::NAME,
                    message: auction_platform::error::DisplayChain(&error).to_string(),
                })?;
        }
        // Heartbeats for every WatchAuction stream, and their end at shutdown.
        tokio::spawn(std::sync::Arc::clone(&hub).run(rpc::HEARTBEAT, context.shutdown.clone()));
        // Request outcomes and activity events past their retention.
        tokio::spawn(retention::run(
            log.clone(),
            std::sync::Arc::clone(&clock),
            context.config.bidding.clone(),
            context.shutdown.clone(),
        ));
        Ok(Self {
            bidding: rpc::Bidding {
                cluster,
                fanout,
                shards,
                log,
                hub,
                market,
                clock,
                shutdown: context.shutdown,
                live: live::LiveLots::new(
                    context.database.clone(),
                    context.config.bidding.lot_finalize_ms,
                ),
            },
        })
    }

    fn add_routes(self, routes: &mut RoutesBuilder) {
        routes.add_service(watch::Routes::new(self));
    }
}

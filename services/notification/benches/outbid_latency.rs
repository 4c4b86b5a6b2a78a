//! Latency from an outbidding bid's acknowledgement to the OUTBID
//! notification on the outbid user's Subscribe stream.
//!
//! Until the bidding service stages its events in an outbox, the bid is
//! played by a producer that does exactly what bidding's `Log::append` will
//! do: commit the `BusAuctionEvent` into an outbox table (SQLite) and wake
//! its relay. The clock starts when that commit returns (the moment bidding
//! acknowledges the bid) and stops when the stream delivers the
//! notification to a gRPC client over loopback. Wiring measured:
//!
//! - `redis+postgres`: production wiring: relay -> a private Redis (AOF,
//!   fsync always) -> consumer group -> inbox on PostgreSQL -> stream.
//! - `in-process+sqlite`: the embedded default.
//!
//! Run: `cargo bench -p auction-notification --bench outbid_latency`
//! (needs the suite's PostgreSQL and `redis-server`, like the tests).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::float_arithmetic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use auction_platform::Database;
use auction_platform::Shutdown;
use auction_platform::auth::Role;
use auction_platform::bus::outbox::{self, Relay, RelayOptions};
use auction_platform::bus::redis::RedisStreamsBus;
use auction_platform::bus::{self, Envelope, EventBus, TOPIC_AUCTION};
use auction_platform::config::RedisConfig;
use auction_proto::v1 as pb;
use auction_proto::v1::notification_service_client::NotificationServiceClient;
use auction_testkit::{Backend, RedisServer, spawn_app_with, with_token};
use uuid::Uuid;

const WARMUP: usize = 200;
const SAMPLES: usize = 2_000;

fn outbid(auction_id: &str, sequence: u64, user: Uuid) -> Envelope {
    let leader = Uuid::now_v7().to_string();
    let event = pb::BusAuctionEvent {
        auction_id: auction_id.to_owned(),
        sequence,
        title: "Lamp".to_owned(),
        kind: Some(pb::bus_auction_event::Kind::BidPlaced(
            pb::BusAuctionBidPlaced {
                bidder_id: leader.clone(),
                price: Some(pb::Money {
                    currency: "USD".to_owned(),
                    amount: format!("{sequence}.00"),
                }),
                leader_id: leader,
                outbid_user_id: user.to_string(),
                ..pb::BusAuctionBidPlaced::default()
            },
        )),
        ..pb::BusAuctionEvent::default()
    };
    Envelope::new("bidding", TOPIC_AUCTION, auction_id, 0, &event)
}

async fn measure(name: &str, backend: Backend, redis: Option<&RedisServer>) {
    let redis_config = redis.map(|server| RedisConfig {
        url: Some(server.url()),
        stream_prefix: format!("bench-{}", Uuid::now_v7().simple()),
        ..RedisConfig::default()
    });
    let app_redis = redis_config.clone();
    let app = spawn_app_with(backend, move |config| {
        config.telemetry.log_filter = "warn".to_owned();
        if let Some(redis) = app_redis {
            config.redis = redis;
        }
    })
    .await;
    let bus: Arc<dyn EventBus> = match &redis_config {
        Some(config) => Arc::new(RedisStreamsBus::new(config).unwrap()),
        None => bus::for_process(&app.config).unwrap(),
    };
    let shutdown = Shutdown::new();
    let dir = tempfile::tempdir().unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("producer.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(outbox::SQLITE_MIGRATION)
        .execute(&pool)
        .await
        .unwrap();
    let relay = Relay::spawn(
        Database::Sqlite(pool.clone()),
        bus,
        shutdown.clone(),
        RelayOptions::default(),
    );

    let user = Uuid::now_v7();
    let token = app.access_token(user, &[Role::Bidder]);
    let mut client = NotificationServiceClient::new(app.channel().await);
    let mut stream = client
        .subscribe(with_token(
            pb::SubscribeRequest {
                resume_after_sequence: 0,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap(); // the snapshot
    let auction = Uuid::now_v7().to_string();
    let mut samples = Vec::with_capacity(SAMPLES);
    for index in 0..WARMUP + SAMPLES {
        let envelope = outbid(&auction, index as u64 + 1, user);
        let mut transaction = pool.begin().await.unwrap();
        outbox::stage(&mut transaction, &[envelope]).await.unwrap();
        transaction.commit().await.unwrap();
        let acknowledged = Instant::now();
        relay.wake();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("a notification within 10 s")
                .unwrap()
                .unwrap();
            if matches!(
                message.message,
                Some(pb::subscribe_response::Message::Event(_))
            ) {
                break;
            }
        }
        if index >= WARMUP {
            samples.push(acknowledged.elapsed());
        }
    }
    samples.sort();
    let at = |quantile: f64| {
        samples[((samples.len() as f64 * quantile) as usize).min(samples.len() - 1)]
    };
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.90).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
    shutdown.trigger();
    app.stop().await;
}

fn main() {
    // `cargo bench` passes --bench; test runners that list or run every
    // target (`cargo nextest run --all-targets`, `cargo test --benches`)
    // do not, and must not start a two-minute measurement.
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let redis = RedisServer::start().await;
        measure("redis+postgres", Backend::Postgres, Some(&redis)).await;
        measure("in-process+sqlite", Backend::Sqlite, None).await;
    });
}

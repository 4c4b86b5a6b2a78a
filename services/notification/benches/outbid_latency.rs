//! Latency from an outbidding bid's acknowledgement to the OUTBID
//! notification on the outbid user's Subscribe stream, through the real
//! mesh: a real English auction in the bidding service; per sample, user A
//! bids to lead, then user B outbids A with `PlaceBid`; the clock starts
//! when B's answer arrives (bidding has committed the bid and staged its
//! bus event in the same transaction) and stops when A's stream delivers
//! the OUTBID notification. Path: bidding's outbox -> relay -> bus ->
//! notification consumer group -> inbox transaction -> stream wake-up ->
//! gRPC. Wiring measured:
//!
//! - `redis+postgres`: production wiring: every service on PostgreSQL, the
//!   bus on a private Redis (AOF, fsync always).
//! - `in-process+sqlite`: the embedded default.
//!
//! Run: `cargo bench -p auction-notification --bench outbid_latency`
//! (needs the suite's PostgreSQL and `redis-server`, like the tests).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::float_arithmetic)]

use std::time::{Duration, Instant};

use auction_platform::auth::Role;
use auction_platform::config::RedisConfig;
use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_proto::v1::notification_service_client::NotificationServiceClient;
use auction_testkit::{Backend, RedisServer, spawn_app_with, with_token};
use uuid::Uuid;

const WARMUP: usize = 200;
const SAMPLES: usize = 2_000;

fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

fn place_bid(
    auction_id: &str,
    amount: pb::Money,
    token: &str,
) -> tonic::Request<pb::PlaceBidRequest> {
    with_token(
        pb::PlaceBidRequest {
            request_id: format!("bench-{}", Uuid::now_v7()),
            auction_id: auction_id.to_owned(),
            amount: Some(amount),
        },
        token,
    )
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
        // One user bidding as fast as the answers come: not what the
        // per-user rate limit is for.
        config.gateway.user_requests_per_second = 1_000_000;
        config.gateway.user_burst = 1_000_000;
        if let Some(redis) = app_redis {
            config.redis = redis;
        }
    })
    .await;
    let user = Uuid::now_v7();
    let token = app.access_token(user, &[Role::Bidder]);
    let rival = app.access_token(Uuid::now_v7(), &[Role::Bidder]);
    let admin = app.access_token(Uuid::now_v7(), &[Role::Admin]);
    let mut client = NotificationServiceClient::new(app.channel().await);
    let mut bidding = BiddingServiceClient::new(app.channel().await);
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
    let now = std::time::SystemTime::now();
    let created = bidding
        .create_auction(with_token(
            pb::CreateAuctionRequest {
                request_id: format!("bench-create-{}", Uuid::now_v7()),
                seller_id: Uuid::now_v7().to_string(),
                seller_handle: "seller".to_owned(),
                title: "Lamp".to_owned(),
                parameters: Some(pb::AuctionParameters {
                    format: pb::AuctionFormat::English as i32,
                    format_parameters: Some(pb::auction_parameters::FormatParameters::English(
                        pb::EnglishParameters {
                            starting_price: Some(usd("1.00")),
                            ..pb::EnglishParameters::default()
                        },
                    )),
                }),
                start_time: Some(prost_types::Timestamp::from(now - Duration::from_secs(1))),
                end_time: Some(prost_types::Timestamp::from(
                    now + Duration::from_secs(3_600),
                )),
                ..pb::CreateAuctionRequest::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    let auction = created.auction_id;
    let mut minimum = created.minimum_next_bid.unwrap();
    let mut samples = Vec::with_capacity(SAMPLES);
    for index in 0..WARMUP + SAMPLES {
        // A leads, then B outbids A: the clock runs from B's answer.
        let led = bidding
            .place_bid(place_bid(&auction, minimum, &token))
            .await
            .unwrap()
            .into_inner();
        let outbidding = bidding
            .place_bid(place_bid(
                &auction,
                led.state.unwrap().minimum_next_bid.unwrap(),
                &rival,
            ))
            .await
            .unwrap()
            .into_inner();
        let acknowledged = Instant::now();
        minimum = outbidding.state.unwrap().minimum_next_bid.unwrap();
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

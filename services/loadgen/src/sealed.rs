//! `sealed-close`: many short sealed auctions (opening `--lead-ms` after
//! creation, open for `--length-ms`) created at a steady pace while a bid
//! load runs on English auctions. Each sealed auction is watched from its
//! creation; a bidder places a sealed bid when it opens. Close lateness is
//! the arrival of the terminal event (closed or unsold) on the stream minus
//! the scheduled end, on the server's clock (the offset measured with
//! GetServerTime): an upper bound of the shard's lateness, since it
//! includes commit and delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use auction_proto::v1 as pb;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::bids::{BidLoad, LoadOptions};
use crate::common::{self, AuctionKind, Budget, Common, Credentials};

/// Flags of `sealed-close`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Common options (the duration bounds the background bid load).
    #[command(flatten)]
    pub common: Common,
    /// The background bid load on English auctions.
    #[command(flatten)]
    pub load: LoadOptions,
    /// Sealed auctions to create.
    #[arg(long, default_value_t = 500)]
    pub sealed_auctions: usize,
    /// Sealed auctions created per second.
    #[arg(long, default_value_t = 50)]
    pub sealed_per_second: u64,
    /// Time from creation to opening.
    #[arg(long, default_value_t = 500)]
    pub lead_ms: i64,
    /// Time from opening to the deadline.
    #[arg(long, default_value_t = 100)]
    pub length_ms: i64,
}

/// What one sealed auction measured (microseconds late; negative = early).
struct Measured {
    open_late_us: i64,
    close_late_us: i64,
    closed: bool,
}

/// Runs `sealed-close` and prints the report.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let common: &Common = &options.common;
    let channels = common::connect(&common.server, common.connections).await?;
    let credentials = Credentials::load(common)?;
    let (offset_us, round_trip_us) = common::clock_offset(channels[0].clone()).await?;
    println!("server clock offset {offset_us} µs (round trip {round_trip_us} µs)");
    let load = BidLoad::prepare(common, &options.load, &channels, &credentials).await?;
    let service = credentials.service_token()?;
    let sealed_bidder = credentials.bidder_token(uuid::Uuid::now_v7())?;
    let budget = Budget::new(common);
    let background = {
        let load = load.clone();
        let channels = channels.clone();
        let budget = budget.clone();
        let options = options.load.clone();
        tokio::spawn(
            async move { crate::bids::drive(load, &channels, budget, &options, None).await },
        )
    };
    // Sealed auctions start once the background load is warm.
    tokio::time::sleep_until(budget.measure_from.into()).await;
    let count = options.sealed_auctions.clamp(1, crate::MAX_AUCTIONS);
    let period = Duration::from_nanos(1_000_000_000 / options.sealed_per_second.max(1));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..count {
        tokio::time::sleep_until(
            (started + period * u32::try_from(index).unwrap_or(u32::MAX)).into(),
        )
        .await;
        let mut client = pb::bidding_service_client::BiddingServiceClient::new(
            channels[index % channels.len()].clone(),
        );
        let service = service.clone();
        let bidder = sealed_bidder.clone();
        let failures = failures.clone();
        let (lead_ms, length_ms) = (options.lead_ms, options.length_ms);
        tasks.spawn(async move {
            let outcome = tokio::time::timeout(
                Duration::from_secs(30),
                one_auction(
                    &mut client,
                    &service,
                    &bidder,
                    offset_us,
                    lead_ms,
                    length_ms,
                    index,
                ),
            )
            .await;
            match outcome {
                Ok(Ok(measured)) => Some(measured),
                Ok(Err(error)) => {
                    if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("sealed auction {index}: {error:#}");
                    }
                    None
                }
                Err(_) => {
                    eprintln!("sealed auction {index}: no terminal event within 30 s");
                    failures.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        });
    }
    let mut close_late = common::histogram();
    let mut open_late = common::histogram();
    let (mut early, mut closed, mut unsold) = (0_u64, 0_u64, 0_u64);
    while let Some(done) = tasks.join_next().await {
        let Some(measured) = done? else { continue };
        if measured.closed {
            closed += 1;
        } else {
            unsold += 1;
        }
        for (histogram, late_us) in [
            (&mut close_late, measured.close_late_us),
            (&mut open_late, measured.open_late_us),
        ] {
            if late_us < 0 {
                early += 1;
            }
            record_us(histogram, late_us);
        }
    }
    let sealed_took = started.elapsed();
    let tally = background.await??;
    println!(
        "sealed-close: {count} sealed auctions ({} ms open, {}/s) in {} ms; {closed} closed, {unsold} unsold, {} failed, {early} early readings (clock skew, counted as 0)",
        options.length_ms,
        options.sealed_per_second,
        sealed_took.as_millis(),
        failures.load(Ordering::Relaxed)
    );
    println!(
        "  close lateness (terminal event on the stream - deadline): {}",
        common::percentiles(&close_late)
    );
    println!(
        "  open lateness (AuctionOpened on the stream - start): {}",
        common::percentiles(&open_late)
    );
    common::print_tally("background bids acknowledged", &tally, budget.measured());
    Ok(())
}

fn record_us(histogram: &mut Histogram<u64>, late_us: i64) {
    histogram.saturating_record(u64::try_from(late_us).unwrap_or(0).max(1));
}

async fn one_auction(
    client: &mut pb::bidding_service_client::BiddingServiceClient<tonic::transport::Channel>,
    service: &common::Token,
    bidder: &common::Token,
    offset_us: i64,
    lead_ms: i64,
    length_ms: i64,
    index: usize,
) -> anyhow::Result<Measured> {
    let server_now_ms = (common::now_us() + offset_us) / 1_000;
    let start_ms = server_now_ms + lead_ms;
    let end_ms = start_ms + length_ms;
    let state = common::create_auction(
        client,
        service,
        AuctionKind::Sealed { start_ms, end_ms },
        format!("sealed #{index}"),
    )
    .await?;
    let mut stream = client
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: state.auction_id.clone(),
            resume_after_sequence: 0,
        })
        .await
        .map_err(|status| anyhow::anyhow!("WatchAuction: {}", common::reason(&status)))?
        .into_inner();
    let mut open_late_us = None;
    let mut bid: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(message) = stream.message().await? {
        let arrived_us = common::now_us() + offset_us;
        use pb::auction_event::Kind;
        match message.message {
            Some(pb::watch_auction_response::Message::Snapshot(snapshot)) => {
                let status = snapshot.state.map_or(0, |state| state.status);
                if status != pb::AuctionStatus::Scheduled as i32 {
                    anyhow::bail!("the stream opened too late (status {status}): raise --lead-ms");
                }
            }
            Some(pb::watch_auction_response::Message::Event(event)) => match event.kind {
                Some(Kind::Opened(_)) => {
                    open_late_us = Some(arrived_us - start_ms * 1_000);
                    let mut bidding = client.clone();
                    let request = bidder.request(pb::PlaceSealedBidRequest {
                        request_id: uuid::Uuid::now_v7().to_string(),
                        auction_id: state.auction_id.clone(),
                        amount: Some(common::usd(2_000)),
                        expire_time: None,
                    });
                    // Under heavy load the 100 ms may pass before the bid
                    // lands (AUCTION_CLOSED): the auction then ends unsold,
                    // which the report counts.
                    bid = Some(tokio::spawn(async move {
                        let _ = bidding.place_sealed_bid(request).await;
                    }));
                }
                Some(Kind::Closed(_)) | Some(Kind::Unsold(_)) | Some(Kind::Cancelled(_)) => {
                    if let Some(bid) = bid {
                        let _ = bid.await;
                    }
                    return Ok(Measured {
                        open_late_us: open_late_us.unwrap_or(0),
                        close_late_us: arrived_us - end_ms * 1_000,
                        closed: matches!(event.kind, Some(Kind::Closed(_))),
                    });
                }
                _ => {}
            },
            Some(pb::watch_auction_response::Message::Heartbeat(_)) | None => {}
        }
    }
    anyhow::bail!("the stream ended before the auction did")
}

//! `bids`: N bidders on one hot auction or on K auctions. Every call is a
//! durable command: an OK answer means its events were committed.
//!
//! Amounts rise by a fixed step per auction (a shared counter), a step
//! larger than any default increment, so a bid that arrives in order is
//! always acceptable; bids overtaken in flight by a higher one may be
//! refused (`BID_BELOW_MINIMUM`, `MAX_BID_TOO_LOW`): such refusals are
//! durable outcomes too and are counted apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use auction_proto::v1 as pb;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::common::{self, Budget, Common, Credentials, Tally, Token};

/// How bidders bid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `SetMaxBid`: proxy maximums (the engine bids for them).
    Max,
    /// `PlaceBid`: straight bids.
    Plain,
}

/// The bid load's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    /// Auctions the bids spread over (1 = one hot auction).
    #[arg(long, default_value_t = 1)]
    pub auctions: usize,
    /// Distinct bidder identities.
    #[arg(long, default_value_t = 64)]
    pub bidders: usize,
    /// Bids in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Target bids per second (open loop, latency from the intended send
    /// time); without it, as fast as `--concurrency` allows.
    #[arg(long)]
    pub rate: Option<u64>,
    /// `SetMaxBid` or `PlaceBid`.
    #[arg(long, value_enum, default_value_t = Kind::Max)]
    pub kind: Kind,
}

/// Flags of `bids`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Common options.
    #[command(flatten)]
    pub common: Common,
    /// The load.
    #[command(flatten)]
    pub load: LoadOptions,
}

/// Told of every acknowledged bid (for delivery latency).
pub trait AckSink: Send + Sync + 'static {
    /// The bid on auction number `auction` was acknowledged at `at`; its
    /// last event has `sequence`.
    fn acknowledged(&self, auction: usize, sequence: u64, at: Instant);
}

/// A prepared bid load: auctions, bidders, amount counters.
pub struct BidLoad {
    /// The auctions' ids.
    pub auctions: Vec<String>,
    bidders: Vec<Token>,
    /// Bids sent per auction (the amount counter).
    counters: Vec<AtomicU64>,
    /// Bids sent in total (picks auction and bidder).
    next: AtomicU64,
    kind: Kind,
}

/// The amount step: above every default increment (100.00 at 5,000.00+).
const STEP_CENTS: u64 = 100_000;

impl BidLoad {
    /// Creates the auctions and mints the bidders' tokens (before any
    /// timing starts).
    pub async fn prepare(
        common: &Common,
        options: &LoadOptions,
        channels: &[Channel],
        credentials: &Credentials,
    ) -> anyhow::Result<Arc<Self>> {
        let auctions = options.auctions.clamp(1, crate::MAX_AUCTIONS);
        let bidders = options.bidders.clamp(1, crate::MAX_BIDDERS);
        let service = credentials.service_token()?;
        let end_in_ms = i64::try_from(
            (common.warmup_s + common.duration_s).min(crate::MAX_DURATION_S) * 1_000 + 3_600_000,
        )
        .unwrap_or(i64::MAX);
        let started = Instant::now();
        let ids = common::create_english_auctions(channels, &service, auctions, end_in_ms).await?;
        println!(
            "set-up: {} English auctions created in {} ms; {bidders} bidder tokens",
            ids.len(),
            started.elapsed().as_millis()
        );
        Ok(Arc::new(Self {
            counters: ids.iter().map(|_| AtomicU64::new(0)).collect(),
            auctions: ids,
            bidders: credentials.bidders(bidders)?,
            next: AtomicU64::new(0),
            kind: options.kind,
        }))
    }

    /// Sends one bid; returns the auction's index and the answer.
    async fn bid(
        &self,
        client: &mut pb::bidding_service_client::BiddingServiceClient<Channel>,
    ) -> (usize, Result<pb::AuctionState, tonic::Status>) {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.auctions.len() as u64;
        let auction = usize::try_from(number % count).unwrap_or(0);
        let bidder = &self.bidders
            [usize::try_from((number / count) % self.bidders.len() as u64).unwrap_or(0)];
        let step = self.counters[auction].fetch_add(1, Ordering::Relaxed) + 1;
        let amount = common::usd(step * STEP_CENTS);
        let auction_id = self.auctions[auction].clone();
        let request_id = uuid::Uuid::now_v7().to_string();
        let answer = match self.kind {
            Kind::Max => client
                .set_max_bid(bidder.request(pb::SetMaxBidRequest {
                    request_id,
                    auction_id,
                    max_amount: Some(amount),
                }))
                .await
                .map(|response| response.into_inner().state),
            Kind::Plain => client
                .place_bid(bidder.request(pb::PlaceBidRequest {
                    request_id,
                    auction_id,
                    amount: Some(amount),
                }))
                .await
                .map(|response| response.into_inner().state),
        };
        let answer = answer.and_then(|state| {
            state.ok_or_else(|| tonic::Status::internal("an answer without a state"))
        });
        (auction, answer)
    }
}

/// Runs the bid load until the budget is spent; returns what the measured
/// window saw.
pub async fn drive(
    load: Arc<BidLoad>,
    channels: &[Channel],
    budget: Arc<Budget>,
    options: &LoadOptions,
    sink: Option<Arc<dyn AckSink>>,
) -> anyhow::Result<Tally> {
    let concurrency = options.concurrency.clamp(1, crate::MAX_CONCURRENCY);
    let period_ns = options
        .rate
        .filter(|rate| *rate > 0)
        .map(|rate| 1_000_000_000 / rate.max(1));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let mut client = pb::bidding_service_client::BiddingServiceClient::new(
            channels[worker % channels.len()].clone(),
        );
        let budget = budget.clone();
        let load = load.clone();
        let sink = sink.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            let mut round: u64 = 0;
            loop {
                // Open loop: this worker's k-th slot is slot k * workers +
                // worker of the whole schedule.
                let intended = match period_ns {
                    Some(period_ns) => {
                        let slot = round * concurrency as u64 + worker as u64;
                        round += 1;
                        let at = start + Duration::from_nanos(slot.saturating_mul(period_ns));
                        if at >= budget.deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                if !budget.take() {
                    break;
                }
                let (auction, answer) = load.bid(&mut client).await;
                let answered = Instant::now();
                if let (Ok(state), Some(sink)) = (&answer, &sink) {
                    sink.acknowledged(auction, state.sequence, answered);
                }
                if intended < budget.measure_from {
                    continue;
                }
                match answer {
                    Ok(_) => {
                        tally.ok += 1;
                        common::record(
                            &mut tally.latency,
                            answered.saturating_duration_since(intended),
                        );
                    }
                    Err(status) => tally.error(&status),
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = workers.join_next().await {
        total.merge(&tally?)?;
    }
    Ok(total)
}

/// Runs `bids` and prints the report.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let common = &options.common;
    let channels = common::connect(&common.server, common.connections).await?;
    let credentials = Credentials::load(common)?;
    let load = BidLoad::prepare(common, &options.load, &channels, &credentials).await?;
    let budget = Budget::new(common);
    let tally = drive(load.clone(), &channels, budget.clone(), &options.load, None).await?;
    println!(
        "bids ({:?}) on {} auction(s) by {} bidders: {} connections, {} in flight, rate {}",
        options.load.kind,
        load.auctions.len(),
        load.bidders.len(),
        channels.len(),
        options.load.concurrency,
        options.load.rate.map_or_else(
            || "unbounded (closed loop)".to_owned(),
            |rate| format!("{rate}/s (open loop)")
        ),
    );
    common::print_tally("bids acknowledged", &tally, budget.measured());
    Ok(())
}

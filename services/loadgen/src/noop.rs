//! `unary-noop`: `GetServerTime` (no shard, no storage) as fast as the
//! server answers, through the same stack as every other call: the ceiling
//! our other figures are a fraction of.

use std::time::Instant;

use auction_proto::v1 as pb;
use tokio::task::JoinSet;

use crate::common::{self, Budget, Common, Credentials, Tally};

/// Who the no-op calls come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum As {
    /// No credentials (the anonymous rate limit applies: raise it on the
    /// server for this).
    Anonymous,
    /// A bidder token: the token check and the per-user limit run, as on a
    /// bid.
    Bidder,
    /// A service token (no edge rate limit).
    Service,
}

/// Flags of `unary-noop`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Common options.
    #[command(flatten)]
    pub common: Common,
    /// Calls in flight (spread over the connections).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The caller's credentials.
    #[arg(long = "as", value_enum, default_value_t = As::Anonymous)]
    pub caller: As,
}

/// Runs `unary-noop` and prints the report.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let common = &options.common;
    let channels = common::connect(&common.server, common.connections).await?;
    let token = match options.caller {
        As::Anonymous => None,
        As::Bidder => Some(Credentials::load(common)?.bidder_token(uuid::Uuid::now_v7())?),
        As::Service => Some(Credentials::load(common)?.service_token()?),
    };
    let concurrency = options.concurrency.clamp(1, crate::MAX_CONCURRENCY);
    let budget = Budget::new(common);
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let mut client = pb::bidding_service_client::BiddingServiceClient::new(
            channels[worker % channels.len()].clone(),
        );
        let budget = budget.clone();
        let token = token.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            while budget.take() {
                let message = pb::GetServerTimeRequest::default();
                let request = match &token {
                    Some(token) => token.request(message),
                    None => tonic::Request::new(message),
                };
                let sent = Instant::now();
                let answer = client.get_server_time(request).await;
                if sent < budget.measure_from {
                    continue;
                }
                match answer {
                    Ok(_) => {
                        tally.ok += 1;
                        common::record(&mut tally.latency, sent.elapsed());
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
    println!(
        "unary-noop (GetServerTime as {:?}): {} connections x {} in flight",
        options.caller,
        channels.len(),
        concurrency
    );
    common::print_tally("GetServerTime", &total, budget.measured());
    Ok(())
}

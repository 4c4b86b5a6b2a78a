//! `auction-loadgen`: see the library's documentation for the modes.

use std::process::ExitCode;

use auction_loadgen::{bids, noop, sealed, watch};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "auction-loadgen",
    version,
    about = "Load generator for the bidding service (bounded in time and requests)"
)]
struct Arguments {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// GetServerTime as fast as possible: the ceiling of the server stack.
    UnaryNoop(noop::Options),
    /// Durable bids on one hot auction or many.
    Bids(bids::Options),
    /// WatchAuction streams while bidders bid: delivery latency, memory.
    Watch(watch::Options),
    /// Close lateness of short sealed auctions under a bid load.
    SealedClose(sealed::Options),
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("auction-loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match arguments.mode {
            Mode::UnaryNoop(options) => noop::run(options).await,
            Mode::Bids(options) => bids::run(options).await,
            Mode::Watch(options) => watch::run(options).await,
            Mode::SealedClose(options) => sealed::run(options).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("auction-loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

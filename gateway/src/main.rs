//! `auctiond`: the one binary of the auction mesh.
//!
//! - `auctiond dev`: every service and the gateway in one process on one
//!   port, SQLite files and media under `./data/`, demo data on first start.
//! - `auctiond serve --config FILE`: the same services wired to PostgreSQL
//!   (and Redis and etcd when configured), as one process.
//! - `auctiond config [--config FILE] [--dev]`: prints the configuration
//!   that would be used (secrets redacted) after validating it.
//! - Client subcommands for people, until the web app exists (see
//!   [`terminal`]): `auctiond auctions` lists the running auctions,
//!   `auctiond watch AUCTION_ID` follows one live, `auctiond bid AUCTION_ID
//!   AMOUNT --user alice [--max]` places a bid with a demo account.
//!
//! Every setting can also come from `AUCTION_*` environment variables, for
//! example `AUCTION_SERVER__LISTEN_ADDRESS=0.0.0.0:50051`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use auction_platform::config::Config;
use auction_platform::shutdown::{Shutdown, terminate_signal};
use clap::{Parser, Subcommand};

mod terminal;

#[derive(Debug, Parser)]
#[command(
    name = "auctiond",
    version,
    about = "The auction mesh: every service in one binary"
)]
struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs everything in one process with embedded defaults (SQLite under
    /// ./data, local media, in-process event bus, single-node leadership).
    Dev {
        /// Overrides `server.listen_address`.
        #[arg(long)]
        listen: Option<String>,
        /// Overrides `storage.data_dir` (and the media folder inside it).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// An optional configuration file layered over the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Runs every service with production wiring from a configuration file.
    Serve {
        /// The TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validates and prints a configuration (secrets redacted).
    Config {
        /// The TOML configuration file; without it, the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Start from the embedded (dev) defaults instead of production ones.
        #[arg(long)]
        dev: bool,
    },
    /// Lists the running auctions (title, format, price, leader, time left).
    Auctions(terminal::AuctionsFlags),
    /// Follows one auction live: a snapshot, each event as it lands, and a
    /// countdown synchronised with the server clock.
    Watch(terminal::WatchFlags),
    /// Logs in with an account (a demo one by default) and places one bid.
    Bid(terminal::BidFlags),
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    match arguments.command {
        Command::Auctions(flags) => return client(terminal::auctions(flags)),
        Command::Watch(flags) => return client(terminal::watch(flags)),
        Command::Bid(flags) => return client(terminal::bid(flags)),
        Command::Dev { .. } | Command::Serve { .. } | Command::Config { .. } => {}
    }
    let config = match load(&arguments.command) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("auctiond: {message}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config { .. } = arguments.command {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    auction_platform::telemetry::init(&config.telemetry);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("auctiond: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Arc::new(config))) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "auctiond stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}

/// Runs a client subcommand: plain output, its error on stderr, exit code
/// 1 on failure (a refused bid included).
fn client(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("auctiond: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("auctiond: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(command: &Command) -> Result<Config, String> {
    match command {
        Command::Dev {
            listen,
            data_dir,
            config,
        } => {
            let mut loaded = Config::load(Config::embedded_default(), config.as_deref())
                .map_err(|error| error.to_string())?;
            if let Some(listen) = listen {
                loaded.server.listen_address.clone_from(listen);
            }
            if let Some(data_dir) = data_dir {
                loaded.media.local_dir = data_dir.join("media");
                loaded.storage.data_dir.clone_from(data_dir);
            }
            loaded.validate().map_err(|error| error.to_string())?;
            Ok(loaded)
        }
        Command::Serve { config } => Config::load(Config::production_default(), Some(config))
            .map_err(|error| error.to_string()),
        Command::Config { config, dev } => {
            let base = if *dev {
                Config::embedded_default()
            } else {
                Config::production_default()
            };
            Config::load(base, config.as_deref()).map_err(|error| error.to_string())
        }
        Command::Auctions(_) | Command::Watch(_) | Command::Bid(_) => {
            Err("a client subcommand needs no server configuration".to_owned())
        }
    }
}

async fn run(config: Arc<Config>) -> anyhow::Result<()> {
    let listener = auction_platform::service::bind(&config).await?;
    let address = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        terminate_signal().await;
        trigger.trigger();
    });
    tracing::info!(
        %address,
        storage = ?config.storage.backend,
        data_dir = %config.storage.data_dir.display(),
        "auctiond listening: gRPC and grpc-web on http://{address} (reflection and health on)"
    );
    println!("auctiond listening on http://{address} (gRPC and grpc-web); ctrl-c to stop");
    auction_gateway::run_all(config, listener, shutdown).await?;
    Ok(())
}

//! The public edge of the mesh. [`run_all`] mounts all five services and
//! serves them on one listener (gRPC and grpc-web, health, reflection): it is
//! what `auctiond dev` and `auctiond serve` run, and what the integration
//! tests start on port 0. Authentication, rate limits and routing to remote
//! services join here with the gateway issue.

use std::sync::Arc;

use auction_platform::server::serve;
use auction_platform::{Config, Shutdown, StartError, mount};
use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;

/// The gRPC names of every service `run_all` serves.
pub const SERVICES: [&str; 5] = auction_proto::SERVICE_NAMES;

/// Runs every service in this process on `listener` until `shutdown` fires,
/// then drains in-flight calls and closes the databases.
pub async fn run_all(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    auction_platform::backends::check(&config).await?;
    let mut routes = RoutesBuilder::default();
    // The user service first: the others refer to its demo accounts.
    let databases = [
        mount::<auction_user::Service>(&config, &shutdown, &mut routes).await?,
        mount::<auction_catalog::Service>(&config, &shutdown, &mut routes).await?,
        mount::<auction_bidding::Service>(&config, &shutdown, &mut routes).await?,
        mount::<auction_payment::Service>(&config, &shutdown, &mut routes).await?,
        mount::<auction_notification::Service>(&config, &shutdown, &mut routes).await?,
    ];
    let served = serve(
        &config.server,
        listener,
        routes.routes(),
        &SERVICES,
        shutdown,
    )
    .await;
    for database in &databases {
        database.close().await;
    }
    Ok(served?)
}

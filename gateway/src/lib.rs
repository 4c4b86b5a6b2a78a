//! The public edge of the mesh. [`run_all`] mounts the five services and
//! serves them on one listener (gRPC and grpc-web, health, reflection): it
//! is what `auctiond dev` and `auctiond serve` run, and what the integration
//! tests start on port 0.
//!
//! The listener stack (see `auction_platform::server`) gives every call a
//! request id and a span and verifies its token; on top of that the gateway
//! adds, in this order:
//!
//! - `x-api-key` exchange: partner keys become short-lived access tokens
//!   through the user service (in-process, or its gRPC client when the user
//!   service runs elsewhere), checked on every call so revocation is
//!   immediate;
//! - [`rate_limit`]: per-user, per-API-key and per-source limits;
//! - [`upstream`]: services configured under `gateway.upstreams` are not
//!   mounted here but forwarded over load-balanced gRPC channels, with the
//!   caller's token and request id;
//! - the web app's static files (`gateway.static_dir`) for plain GETs.

pub mod rate_limit;
pub mod upstream;

use std::sync::Arc;

use auction_platform::auth::{ApiKeyExchange, AuthLayer, Keys};
use auction_platform::server::serve;
use auction_platform::{
    Config, Database, MeshService, ServiceContext, Shutdown, StartError, mount,
};
use tokio::net::TcpListener;
use tonic::service::{Routes, RoutesBuilder};

/// The gRPC names of every service `run_all` serves.
pub const SERVICES: [&str; 5] = auction_proto::SERVICE_NAMES;

async fn mount_or_forward<S: MeshService>(
    config: &Arc<Config>,
    shutdown: &Shutdown,
    keys: &Arc<Keys>,
    local_address: Option<std::net::SocketAddr>,
    routes: &mut RoutesBuilder,
    forwarded: &mut Vec<(&'static str, Vec<String>)>,
    local: &mut Vec<&'static str>,
) -> Result<Option<Database>, StartError> {
    if let Some(urls) = config.gateway.upstreams.get(S::NAME) {
        forwarded.push((S::NAME, urls.clone()));
        return Ok(None);
    }
    local.push(S::NAME);
    Ok(Some(
        mount::<S>(config, shutdown, keys, local_address, routes).await?,
    ))
}

/// Runs every service in this process (or forwards those configured under
/// `gateway.upstreams`) on `listener` until `shutdown` fires, then drains
/// in-flight calls and closes the databases.
pub async fn run_all(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    auction_platform::backends::check(&config).await?;
    let keys = Arc::new(Keys::load(&config)?);
    let local_address = listener.local_addr().ok();
    let mut routes = RoutesBuilder::default();
    let mut forwarded = Vec::new();
    let mut local = Vec::new();
    // On the in-process bus a message is delivered once every subscribed
    // group has handled it: no publishing until every service here has
    // subscribed (an error here shows again when a service opens the bus).
    let hold = auction_platform::bus::for_process(&config)
        .ok()
        .map(|bus| bus.hold_deliveries());
    // The user service first: the others refer to its demo accounts.
    let user_database = mount_or_forward::<auction_user::Service>(
        &config,
        &shutdown,
        &keys,
        local_address,
        &mut routes,
        &mut forwarded,
        &mut local,
    )
    .await?;
    let mut databases = vec![
        mount_or_forward::<auction_catalog::Service>(
            &config,
            &shutdown,
            &keys,
            local_address,
            &mut routes,
            &mut forwarded,
            &mut local,
        )
        .await?,
        mount_or_forward::<auction_bidding::Service>(
            &config,
            &shutdown,
            &keys,
            local_address,
            &mut routes,
            &mut forwarded,
            &mut local,
        )
        .await?,
        mount_or_forward::<auction_payment::Service>(
            &config,
            &shutdown,
            &keys,
            local_address,
            &mut routes,
            &mut forwarded,
            &mut local,
        )
        .await?,
        mount_or_forward::<auction_notification::Service>(
            &config,
            &shutdown,
            &keys,
            local_address,
            &mut routes,
            &mut forwarded,
            &mut local,
        )
        .await?,
    ];
    let exchange: Arc<dyn ApiKeyExchange> = match &user_database {
        Some(database) => Arc::new(
            auction_user::ApiKeyExchanger::new(ServiceContext {
                config: Arc::clone(&config),
                database: database.clone(),
                shutdown: shutdown.clone(),
                keys: Arc::clone(&keys),
                local_address,
            })
            .await?,
        ),
        None => Arc::new(upstream::RemoteApiKeyExchange::new(
            config
                .gateway
                .upstreams
                .get(auction_user::Service::NAME)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )?),
    };
    databases.push(user_database);
    drop(hold);
    let routes = edge_routes(&config, routes.routes(), &forwarded)?;
    let served = serve(
        &config.server,
        listener,
        routes,
        &local,
        shutdown,
        AuthLayer::new(keys).with_api_keys(exchange),
    )
    .await;
    for database in databases.iter().flatten() {
        database.close().await;
    }
    Ok(served?)
}

/// The gateway's own layers and routes around the services' routes.
fn edge_routes(
    config: &Config,
    routes: Routes,
    forwarded: &[(&'static str, Vec<String>)],
) -> Result<Routes, StartError> {
    let mut router = routes.into_axum_router();
    for (service, urls) in forwarded {
        let proxy = upstream::Upstream::new(service, urls)?;
        router = router.route_service(&format!("/{service}/{{*method}}"), proxy);
    }
    if let Some(folder) = &config.gateway.static_dir {
        router = router.fallback_service(
            tower_http::services::ServeDir::new(folder).append_index_html_on_directories(true),
        );
    }
    // Behind the auth layer (the caller is known), in front of every service.
    let router = router.layer(rate_limit::RateLimitLayer::new(&config.gateway));
    Ok(Routes::from(router))
}

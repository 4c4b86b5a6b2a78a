//! How a service plugs into a process. Every service implements
//! [`MeshService`]; the same implementation is mounted next to the others by
//! `auctiond` (all in one process), run alone by the service's own thin
//! binary through [`service_main`], and started on port 0 by the tests.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;

use crate::auth::{AuthLayer, Keys};
use crate::config::{Config, ConfigError};
use crate::database::{Database, DatabaseError, Migrations};
use crate::server::{ServeError, serve};
use crate::shutdown::{Shutdown, terminate_signal};

/// What a service gets when it is built.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    /// The process's validated configuration.
    pub config: Arc<Config>,
    /// The service's own database, migrated.
    pub database: Database,
    /// Fires when the process shuts down; long-lived work (streams, shard
    /// writers, relays) ends on it.
    pub shutdown: Shutdown,
    /// The process's token keys: the user service signs with them, every
    /// service can mint service tokens for its own outgoing calls.
    pub keys: Arc<Keys>,
    /// The address the process's listener actually bound (port 0 resolved),
    /// for services that tell peers where they are (bidding nodes in a
    /// cluster); `None` when built without a listener.
    pub local_address: Option<std::net::SocketAddr>,
}

/// A service of the mesh.
pub trait MeshService: Sized + Send + 'static {
    /// The fully qualified gRPC service name, reported through health.
    const NAME: &'static str;
    /// A short lowercase name: the SQLite file and the PostgreSQL schema.
    const SCHEMA: &'static str;

    /// The service's migrations for both backends.
    fn migrations() -> Migrations;

    /// Builds the service over its migrated database.
    fn build(context: ServiceContext) -> impl Future<Output = Result<Self, StartError>> + Send;

    /// Adds the service's gRPC server to the process's routes.
    fn add_routes(self, routes: &mut RoutesBuilder);
}

/// The process could not start, or its server failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A database could not be opened or migrated.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The listener could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The configured address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A configured backend (Redis, etcd) cannot be reached.
    #[error("configuration key `{key}`: cannot reach the server: {message}")]
    Backend {
        /// The configuration key that names the backend.
        key: &'static str,
        /// Why.
        message: String,
    },
    /// A service-specific start-up step failed.
    #[error("{service}: {message}")]
    Service {
        /// Which service.
        service: &'static str,
        /// What failed.
        message: String,
    },
}

/// Opens the service's database, builds it and adds its routes; returns the
/// database so the process can close it after the server has drained.
pub async fn mount<S: MeshService>(
    config: &Arc<Config>,
    shutdown: &Shutdown,
    keys: &Arc<Keys>,
    local_address: Option<std::net::SocketAddr>,
    routes: &mut RoutesBuilder,
) -> Result<Database, StartError> {
    let database = Database::open(&config.storage, S::SCHEMA, S::migrations()).await?;
    let context = ServiceContext {
        config: Arc::clone(config),
        database: database.clone(),
        shutdown: shutdown.clone(),
        keys: Arc::clone(keys),
        local_address,
    };
    S::build(context).await?.add_routes(routes);
    Ok(database)
}

/// Binds the configured listen address.
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    let address = config.listen_address()?;
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            address: config.server.listen_address.clone(),
            source,
        })
}

/// Runs one service alone on `listener` until `shutdown`.
pub async fn run_single<S: MeshService>(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    crate::backends::check(&config).await?;
    let keys = Arc::new(Keys::load(&config)?);
    let mut routes = RoutesBuilder::default();
    let database = mount::<S>(
        &config,
        &shutdown,
        &keys,
        listener.local_addr().ok(),
        &mut routes,
    )
    .await?;
    let served = serve(
        &config.server,
        listener,
        routes.routes(),
        &[S::NAME],
        shutdown,
        AuthLayer::new(keys),
    )
    .await;
    database.close().await;
    Ok(served?)
}

/// The whole `main` of a service's own binary: `--config FILE` (optional),
/// environment overrides, telemetry, then [`run_single`] until SIGTERM or
/// ctrl-c.
pub fn service_main<S: MeshService>() -> ExitCode {
    let mut arguments = std::env::args().skip(1);
    let mut file: Option<PathBuf> = None;
    while let Some(argument) = arguments.next() {
        match (argument.as_str(), arguments.next()) {
            ("--config", Some(path)) => file = Some(PathBuf::from(path)),
            _ => {
                eprintln!("usage: {} [--config FILE]", S::SCHEMA);
                return ExitCode::from(2);
            }
        }
    }
    let config = match Config::load(Config::production_default(), file.as_deref()) {
        Ok(config) => Arc::new(config),
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&config.telemetry);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let listener = bind(&config).await?;
        if let Ok(address) = listener.local_addr() {
            tracing::info!(service = S::NAME, %address, "listening (gRPC and grpc-web)");
        }
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            terminate_signal().await;
            trigger.trigger();
        });
        run_single::<S>(config, listener, shutdown).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %crate::error::DisplayChain(&error), "stopped with an error");
            ExitCode::FAILURE
        }
    }
}

//! The server stack every listener uses: gRPC and grpc-web on one port,
//! health (`grpc.health.v1`) and reflection (v1 and v1alpha) for every
//! service, CORS for browsers, request tracing, and a shutdown that stops
//! accepting, drains in-flight calls and gives up after a grace period.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::ServerConfig;
use crate::shutdown::Shutdown;

/// Serving failed to start or broke.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not read our descriptor set (a build problem).
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("the server failed")]
    Transport(#[from] tonic::transport::Error),
    /// A configured CORS origin is not a valid header value.
    #[error("server.cors_allowed_origins: `{0}` is not a valid origin")]
    CorsOrigin(String),
}

/// Serves `routes` on `listener` until `shutdown` fires, then drains.
/// `service_names` are reported SERVING through health until shutdown.
pub async fn serve(
    config: &ServerConfig,
    listener: TcpListener,
    routes: Routes,
    service_names: &[&'static str],
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in service_names {
        health_reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(auction_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // Python's grpcio-reflection and older grpcurl speak only v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(auction_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let cors = cors_layer(&config.cors_allowed_origins)?;

    let server = tonic::transport::Server::builder()
        // grpc-web arrives over HTTP/1.1 as well as HTTP/2.
        .accept_http1(true)
        // Dead peers must not hold streams open for ever.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // CORS outermost: a browser's preflight is answered before anything
        // tries to read it as gRPC.
        .layer(cors)
        // Translate grpc-web to gRPC for every service behind it.
        .layer(tonic_web::GrpcWebLayer::new())
        // One span per call, so every log line of a call carries its path.
        .layer(tower_http::trace::TraceLayer::new_for_grpc())
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let drain_started = shutdown.clone();
    let reporter = health_reporter.clone();
    let names: Vec<&'static str> = service_names.to_vec();
    let stop = async move {
        drain_started.wait().await;
        // Tell load balancers first, then stop accepting.
        for name in names {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        tracing::info!("shutting down: draining in-flight calls");
    };
    let serving = server.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let deadline = async {
        shutdown.wait().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serving => served?,
        () = deadline => {
            tracing::warn!(grace_ms = config.shutdown_grace_ms, "grace period over; dropping the calls still open");
        }
    }
    Ok(())
}

fn cors_layer(origins: &[String]) -> Result<CorsLayer, ServeError> {
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| {
                HeaderValue::from_str(origin).map_err(|_| ServeError::CorsOrigin(origin.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            HeaderName::from_static("content-type"),
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("authorization"),
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(3_600)))
}

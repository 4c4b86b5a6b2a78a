//! The server stack every listener uses: gRPC and grpc-web on one port,
//! health (`grpc.health.v1`) and reflection (v1 and v1alpha) for every
//! service, CORS for browsers, a request id and a tracing span per call,
//! token verification ([`crate::auth::AuthLayer`]), and a shutdown that
//! stops accepting, drains in-flight calls and gives up after a grace period.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::AuthLayer;
use crate::config::ServerConfig;
use crate::shutdown::Shutdown;

/// The header that carries a call's request id, in both directions. A
/// caller may choose it (1-128 characters of `[A-Za-z0-9._:-]`); otherwise
/// the first hop assigns a UUIDv7. Every hop logs it in the call's span and
/// [`crate::auth::forward_credentials`] passes it on.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

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
/// `service_names` are reported SERVING through health until shutdown;
/// `auth` verifies the credentials of every call.
pub async fn serve(
    config: &ServerConfig,
    listener: TcpListener,
    routes: Routes,
    service_names: &[&'static str],
    shutdown: Shutdown,
    auth: AuthLayer,
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
        // Every call gets a request id before anything logs, and echoes it
        // in its response headers.
        .layer(RequestIdLayer)
        // One span per call, so every log line of a call carries its path,
        // request id and (once verified) user id.
        .layer(
            tower_http::trace::TraceLayer::new_for_grpc()
                .make_span_with(call_span)
                // A refused bid or an unknown id is an answer, not a failure
                // of ours: at ERROR it flooded the log (one line per refusal
                // under load). Internal errors are logged by `to_status`.
                .on_failure(
                    tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
                ),
        )
        // Identity: bearer tokens verified here, on every listener, so a
        // service running alone trusts nothing it has not checked.
        .layer(auth)
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
    // TCP_NODELAY on every accepted connection: without it a response's
    // trailers wait for the client's delayed ACK (about 40 ms on Linux), which
    // the load generator measured on every answer sent after an await.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let serving = server.serve_with_incoming_shutdown(incoming, stop);
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
            HeaderName::from_static("auction-error-reason"),
            HeaderName::from_static(REQUEST_ID_HEADER),
        ])
        .max_age(Duration::from_secs(3_600)))
}

fn call_span<B>(request: &http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "call",
        path = %request.uri().path(),
        request_id = %request_id,
        user_id = tracing::field::Empty,
    )
}

/// Whether a caller-chosen request id is acceptable.
fn valid_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'))
}

/// Assigns (or keeps a valid caller-chosen) request id on the request and
/// copies it to the response headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, B, ResponseBody> tower::Service<http::Request<B>> for RequestIdService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let kept = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|value| valid_request_id(value))
            .and_then(|value| HeaderValue::from_str(value).ok());
        let request_id = match kept {
            Some(value) => value,
            None => {
                let fresh = uuid::Uuid::now_v7().to_string();
                // A UUID is always a valid header value.
                HeaderValue::from_str(&fresh).unwrap_or(HeaderValue::from_static("invalid"))
            }
        };
        request
            .headers_mut()
            .insert(REQUEST_ID_HEADER, request_id.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
            Ok(response)
        })
    }
}

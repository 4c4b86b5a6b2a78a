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
    /// A trusted proxy is not a network.
    #[error("{0}")]
    TrustedProxies(String),
    /// The TLS certificate or key cannot be read.
    #[error("server.tls: {0}")]
    Tls(String),
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
    let trusted_proxies = crate::Config::parse_trusted_proxies(&config.trusted_proxies)
        .map_err(|error| ServeError::TrustedProxies(error.to_string()))?;

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|error| ServeError::Tls(format!("{}: {error}", path.display())))
        };
        let identity =
            tonic::transport::Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let server = builder
        // grpc-web arrives over HTTP/1.1 as well as HTTP/2.
        .accept_http1(true)
        // Dead peers must not hold streams open for ever.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // CORS outermost: a browser's preflight is answered before anything
        // tries to read it as gRPC.
        .layer(cors)
        // Plain HTTP/1.1 GETs (media, the web app's files) pass the
        // grpc-web layer, which would answer them 400.
        .layer(PlainGetLayer)
        // Translate grpc-web to gRPC for every service behind it.
        .layer(tonic_web::GrpcWebLayer::new())
        // Every call gets a request id before anything logs, and echoes it
        // in its response headers.
        .layer(RequestIdLayer)
        // Who is calling, network-wise: the TCP peer, or behind a trusted
        // proxy the address it forwarded.
        .layer(ClientAddressLayer::new(trusted_proxies))
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

/// The header proxies put the client's address in (`client, proxy1, ...`).
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// The network address of the client of a call: the TCP peer, or, when the
/// peer is a trusted proxy, the rightmost address of `x-forwarded-for` that
/// is not a trusted proxy. In the request's extensions; the per-source
/// login throttle and the rate limiter key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub std::net::IpAddr);

impl ClientAddress {
    /// The client address of a gRPC call, if the server stack set one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<std::net::IpAddr> {
        request.extensions().get::<Self>().map(|address| address.0)
    }
}

/// The client's address from the TCP `peer` and the forwarded header.
pub fn client_address(
    peer: Option<std::net::IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> Option<std::net::IpAddr> {
    let peer = peer?;
    let is_trusted = |address: &std::net::IpAddr| trusted.iter().any(|net| net.contains(address));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(forwarded_for) = forwarded_for else {
        return Some(peer);
    };
    // Right to left: each trusted hop vouches for the one before it; the
    // first address not of a trusted proxy is the client. Anything further
    // left was written by the client and is not believed.
    let mut client = peer;
    for hop in forwarded_for.rsplit(',') {
        match hop.trim().parse::<std::net::IpAddr>() {
            Ok(address) => {
                client = address;
                if !is_trusted(&address) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(client)
}

/// Sets [`ClientAddress`] on every request and rewrites `x-forwarded-for`
/// to that one address, so the next hop (which trusts this process) sees
/// the client and nothing a client wrote for itself.
#[derive(Debug, Clone)]
pub struct ClientAddressLayer {
    trusted: std::sync::Arc<Vec<ipnet::IpNet>>,
}

impl ClientAddressLayer {
    /// A layer trusting `trusted` proxies.
    pub fn new(trusted: Vec<ipnet::IpNet>) -> Self {
        Self {
            trusted: std::sync::Arc::new(trusted),
        }
    }
}

impl<S> tower::Layer<S> for ClientAddressLayer {
    type Service = ClientAddressService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAddressService {
            inner,
            trusted: std::sync::Arc::clone(&self.trusted),
        }
    }
}

/// The service of [`ClientAddressLayer`].
#[derive(Debug, Clone)]
pub struct ClientAddressService<S> {
    inner: S,
    trusted: std::sync::Arc<Vec<ipnet::IpNet>>,
}

impl<S, B> tower::Service<http::Request<B>> for ClientAddressService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let extensions = request.extensions();
        let peer = extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
            .or_else(|| {
                extensions
                    .get::<tonic::transport::server::TlsConnectInfo<
                        tonic::transport::server::TcpConnectInfo,
                    >>()
                    .map(tonic::transport::server::TlsConnectInfo::get_ref)
            })
            .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
            .map(|address| address.ip());
        let forwarded = request
            .headers()
            .get_all(FORWARDED_FOR_HEADER)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let forwarded = (!forwarded.is_empty()).then_some(forwarded);
        match client_address(peer, forwarded.as_deref(), &self.trusted) {
            Some(client) => {
                request.extensions_mut().insert(ClientAddress(client));
                if let Ok(value) = HeaderValue::from_str(&client.to_string()) {
                    request.headers_mut().insert(FORWARDED_FOR_HEADER, value);
                }
            }
            None => {
                request.headers_mut().remove(FORWARDED_FOR_HEADER);
            }
        }
        self.inner.call(request)
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn nets(texts: &[&str]) -> Vec<ipnet::IpNet> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> Option<std::net::IpAddr> {
        Some(text.parse().unwrap())
    }

    // Proves the client address: the peer unless it is a trusted proxy;
    // behind trusted proxies the rightmost untrusted forwarded address;
    // what a client writes for itself is never believed.
    #[test]
    fn client_address_behind_proxies() {
        let trusted = nets(&["10.0.0.0/8", "::1/128"]);
        // An untrusted peer: its header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.7"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.7")
        );
        // A trusted peer without header is the client.
        assert_eq!(
            client_address(ip("10.1.1.1"), None, &trusted),
            ip("10.1.1.1")
        );
        // Through two trusted proxies; the leftmost entry is the client's own claim.
        assert_eq!(
            client_address(
                ip("10.1.1.1"),
                Some("6.6.6.6, 203.0.113.7, 10.2.2.2"),
                &trusted
            ),
            ip("203.0.113.7")
        );
        // Garbage stops the walk at the last address vouched for.
        assert_eq!(
            client_address(ip("::1"), Some("not-an-ip, 10.3.3.3"), &trusted),
            ip("10.3.3.3")
        );
        // No peer, no address.
        assert_eq!(client_address(None, Some("1.2.3.4"), &trusted), None);
    }
}

/// Lets plain HTTP/1.x `GET` and `HEAD` requests (media bytes, static files)
/// through tonic-web's grpc-web layer, which passes non-grpc-web requests
/// only over HTTP/2 and answers the rest 400 (hyperium/tonic#1383). gRPC
/// and grpc-web calls are always POSTs, so they are untouched; for a GET
/// the request's version field is marked HTTP/2, which only steers that
/// layer: the connection keeps speaking HTTP/1.1.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainGetLayer;

impl<S> tower::Layer<S> for PlainGetLayer {
    type Service = PlainGetService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PlainGetService { inner }
    }
}

/// The service of [`PlainGetLayer`].
#[derive(Debug, Clone)]
pub struct PlainGetService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for PlainGetService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let plain_get = matches!(*request.method(), http::Method::GET | http::Method::HEAD)
            && request.version() < http::Version::HTTP_2;
        if plain_get {
            *request.version_mut() = http::Version::HTTP_2;
        }
        self.inner.call(request)
    }
}

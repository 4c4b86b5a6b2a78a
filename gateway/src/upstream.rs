//! Services that run in other processes: the gateway forwards their calls
//! over a gRPC channel balanced across the configured instances
//! (`gateway.upstreams`). Headers travel unchanged, so the next hop sees the
//! caller's `authorization` token (which it verifies itself) and the
//! request id.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use auction_platform::auth::ApiKeyExchange;
use auction_platform::config::ConfigError;
use auction_platform::{ServiceError, StartError};
use auction_proto::v1::ExchangeApiKeyRequest;
use auction_proto::v1::user_service_client::UserServiceClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt as _;

/// An upstream instance did not answer.
#[derive(Debug, thiserror::Error)]
#[error("{service} is unavailable")]
pub struct UpstreamUnavailable {
    service: &'static str,
}

impl ServiceError for UpstreamUnavailable {
    fn code(&self) -> Code {
        Code::Unavailable
    }
    fn reason(&self) -> &'static str {
        "SERVICE_UNAVAILABLE"
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(1))
    }
}

fn balanced_channel(urls: &[String]) -> Result<Channel, StartError> {
    let endpoints = urls
        .iter()
        .map(|url| {
            Endpoint::from_shared(url.clone()).map_err(|error| {
                StartError::Config(ConfigError::Invalid {
                    key: "gateway.upstreams",
                    message: format!("`{url}`: {error}"),
                })
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Channel::balance_list(endpoints.into_iter()))
}

/// Forwards every call of one service to its instances.
#[derive(Clone, Debug)]
pub struct Upstream {
    service: &'static str,
    channel: Channel,
}

impl Upstream {
    /// A forwarder for `service` balanced over `urls`.
    pub fn new(service: &'static str, urls: &[String]) -> Result<Self, StartError> {
        Ok(Self {
            service,
            channel: balanced_channel(urls)?,
        })
    }
}

impl tower::Service<http::Request<axum::body::Body>> for Upstream {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness of the channel is awaited per call, below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<axum::body::Body>) -> Self::Future {
        let channel = self.channel.clone();
        let service = self.service;
        Box::pin(async move {
            let request = request.map(tonic::body::Body::new);
            match channel.oneshot(request).await {
                Ok(response) => Ok(response),
                Err(error) => {
                    tracing::warn!(service, error = %error, "upstream call failed");
                    Ok(auction_platform::to_status(&UpstreamUnavailable { service }).into_http())
                }
            }
        })
    }
}

/// Exchanges API keys through a remote user service.
#[derive(Clone, Debug)]
pub struct RemoteApiKeyExchange {
    client: UserServiceClient<Channel>,
}

impl RemoteApiKeyExchange {
    /// A client balanced over the user service's `urls`.
    pub fn new(urls: &[String]) -> Result<Self, StartError> {
        Ok(Self {
            client: UserServiceClient::new(balanced_channel(urls)?),
        })
    }
}

impl ApiKeyExchange for RemoteApiKeyExchange {
    fn exchange<'a>(
        &'a self,
        secret: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, tonic::Status>> + Send + 'a>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let response = client
                .exchange_api_key(ExchangeApiKeyRequest {
                    request_id: uuid::Uuid::now_v7().to_string(),
                    api_key: secret.to_owned(),
                })
                .await?;
            Ok(response.into_inner().access_token)
        })
    }
}

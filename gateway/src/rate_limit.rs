//! Per-user, per-API-key and per-source rate limits: a tower layer over
//! keyed GCRA limiters (the governor crate). It sits behind the auth layer,
//! so it keys calls by the verified [`Caller`]: a user by user id, a partner
//! by API key id, anyone else by source address. A call over the limit is
//! answered RESOURCE_EXHAUSTED, reason `RATE_LIMITED`, with a retry hint.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use auction_platform::ServiceError;
use auction_platform::auth::{Caller, CallerKind};
use auction_platform::config::GatewayConfig;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::Code;
use uuid::Uuid;

/// Forget idle keys every this many calls, so the limiters' memory stays
/// bounded by the recently active callers.
const RETAIN_EVERY_CALLS: u64 = 4_096;

/// A call refused by a limit.
#[derive(Debug, thiserror::Error)]
#[error("rate limit exceeded; retry after {retry_after:?}")]
pub struct RateLimited {
    /// When the next call would be allowed.
    pub retry_after: Duration,
}

impl ServiceError for RateLimited {
    fn code(&self) -> Code {
        Code::ResourceExhausted
    }
    fn reason(&self) -> &'static str {
        "RATE_LIMITED"
    }
    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([(
            "retry_after_ms".to_owned(),
            self.retry_after.as_millis().to_string(),
        )])
    }
    fn retry_after(&self) -> Option<Duration> {
        Some(self.retry_after)
    }
}

struct Limiters {
    users: DefaultKeyedRateLimiter<Uuid>,
    api_keys: DefaultKeyedRateLimiter<Uuid>,
    sources: DefaultKeyedRateLimiter<IpAddr>,
    calls: AtomicU64,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    // Validated non-zero by Config::validate; 1 is the floor regardless.
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

/// The layer.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiters: Arc<Limiters>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RateLimitLayer")
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// Limits from the gateway configuration.
    pub fn new(config: &GatewayConfig) -> Self {
        Self {
            limiters: Arc::new(Limiters {
                users: RateLimiter::keyed(quota(
                    config.user_requests_per_second,
                    config.user_burst,
                )),
                api_keys: RateLimiter::keyed(quota(
                    config.api_key_requests_per_second,
                    config.api_key_burst,
                )),
                sources: RateLimiter::keyed(quota(
                    config.anonymous_requests_per_second,
                    config.anonymous_burst,
                )),
                calls: AtomicU64::new(0),
            }),
        }
    }

    fn check(&self, caller: Option<&Caller>, source: Option<IpAddr>) -> Result<(), RateLimited> {
        let limiters = &self.limiters;
        if limiters
            .calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(RETAIN_EVERY_CALLS)
        {
            limiters.users.retain_recent();
            limiters.api_keys.retain_recent();
            limiters.sources.retain_recent();
        }
        let outcome = match caller.map(|caller| (&caller.kind, caller.user_id)) {
            Some((CallerKind::User, user_id)) => limiters.users.check_key(&user_id),
            Some((CallerKind::ApiKey { key_id }, _)) => limiters.api_keys.check_key(key_id),
            // The mesh's own services are not limited at the edge.
            Some((CallerKind::Service { .. }, _)) => return Ok(()),
            None => match source {
                Some(source) => limiters.sources.check_key(&source),
                None => return Ok(()),
            },
        };
        outcome.map_err(|not_until| RateLimited {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimitService<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S, B, ResponseBody> tower::Service<http::Request<B>> for RateLimitService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let caller = request.extensions().get::<Caller>();
        let source = request
            .extensions()
            .get::<auction_platform::server::ClientAddress>()
            .map(|address| address.0);
        match self.layer.check(caller, source) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(limited) => {
                tracing::info!(
                    retry_after_ms = limited.retry_after.as_millis() as u64,
                    "rate limited"
                );
                let status = auction_platform::to_status(&limited);
                Box::pin(async move { Ok(auction_platform::auth::refuse(request, status).await) })
            }
        }
    }
}

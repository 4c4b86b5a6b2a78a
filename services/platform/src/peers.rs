//! gRPC channels from one service of the mesh to another.
//!
//! Services call each other over gRPC, never through each other's code, in
//! the all-in-one process as well as when every service runs alone. Each
//! peer's URL comes from `peers.<service>` in the configuration; a service
//! left unset is reached at **this process's own listener** (the embedded
//! default, where `auctiond` serves every service on one port). The own
//! address is the one the listener actually bound: the tests and `auctiond`
//! bind port 0 or a configured port, so [`Peers::learn_local_address`] (fed
//! from the local address of any incoming call, see [`Peers::learn_from`])
//! wins over `server.listen_address`, which is only used when its port is
//! not 0.
//!
//! Channels are created lazily on first use (no connection is attempted at
//! start, so start-up order between services does not matter) and shared
//! by every call. [`ServiceCredentials`] is the interceptor that attaches a
//! service token minted with the process's service key (see
//! [`crate::auth::Keys::issue_service_token`]); calls that act for a user
//! forward the user's own token instead ([`crate::auth::forward_credentials`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::auth::{Clock as _, Keys, SystemClock};
use crate::config::{Config, PeersConfig};
use crate::error::ServiceError;

/// A service of the mesh that another one calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// `auction.v1.UserService` (`peers.user`).
    User,
    /// `auction.v1.CatalogService` (`peers.catalog`).
    Catalog,
    /// `auction.v1.BiddingService` (`peers.bidding`).
    Bidding,
    /// `auction.v1.PaymentService` (`peers.payment`).
    Payment,
    /// `auction.v1.NotificationService` (`peers.notification`).
    Notification,
}

impl Peer {
    /// The configuration key under `peers`, also the service's short name.
    pub fn key(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Catalog => "catalog",
            Self::Bidding => "bidding",
            Self::Payment => "payment",
            Self::Notification => "notification",
        }
    }

    fn configured(self, config: &PeersConfig) -> Option<&String> {
        match self {
            Self::User => config.user.as_ref(),
            Self::Catalog => config.catalog.as_ref(),
            Self::Bidding => config.bidding.as_ref(),
            Self::Payment => config.payment.as_ref(),
            Self::Notification => config.notification.as_ref(),
        }
    }
}

/// A peer could not be reached or called.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// No URL is configured and this process's own address is not known
    /// yet (port 0 and no call received so far).
    #[error("no address for the {0} service: set peers.{0}")]
    NoAddress(&'static str),
    /// The configured URL is not usable.
    #[error("peers.{peer}: `{url}` is not a valid URL")]
    BadUrl {
        /// The peer's key.
        peer: &'static str,
        /// The configured URL.
        url: String,
    },
    /// No service token could be minted (no service key in this process).
    #[error("cannot sign a service token: {0}")]
    Credentials(String),
}

impl ServiceError for PeerError {
    fn code(&self) -> Code {
        match self {
            Self::NoAddress(_) | Self::BadUrl { .. } | Self::Credentials(_) => Code::Unavailable,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::NoAddress(_) | Self::BadUrl { .. } | Self::Credentials(_) => {
                "SERVICE_UNAVAILABLE"
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}

/// The channels of one service to its peers. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

struct Inner {
    /// `peers.*` of the process.
    config: PeersConfig,
    /// `server.listen_address`, the fallback own address when its port is set.
    listen_address: Option<SocketAddr>,
    /// The address this process was reached on (learned from calls).
    local_address: OnceLock<SocketAddr>,
    /// The calling service's short name (`catalog`): the `svc` claim.
    own_name: &'static str,
    /// Signs service tokens.
    keys: Arc<Keys>,
    /// One lazily connected channel per peer.
    channels: Mutex<HashMap<Peer, Channel>>,
    /// The current service token and when it expires (ms), reused until
    /// half of its lifetime is left.
    token: Mutex<Option<(MetadataValue<tonic::metadata::Ascii>, i64)>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Peers")
            .field("own_name", &self.inner.own_name)
            .field("config", &self.inner.config)
            .field("local_address", &self.inner.local_address.get())
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// The peers of the service `own_name` (e.g. `catalog`) in the process
    /// running with `config`.
    pub fn new(config: &Config, keys: Arc<Keys>, own_name: &'static str) -> Self {
        let listen_address = config
            .listen_address()
            .ok()
            .filter(|address| address.port() != 0)
            .map(reachable);
        Self {
            inner: Arc::new(Inner {
                config: config.peers.clone(),
                listen_address,
                local_address: OnceLock::new(),
                own_name,
                keys,
                channels: Mutex::new(HashMap::new()),
                token: Mutex::new(None),
            }),
        }
    }

    /// Records the address this process's listener is reached on (the first
    /// one recorded stays).
    pub fn learn_local_address(&self, address: SocketAddr) {
        let _ = self.inner.local_address.set(reachable(address));
    }

    /// Records the local address of the connection `request` arrived on:
    /// that is this process's listener, whatever port it bound.
    pub fn learn_from<T>(&self, request: &Request<T>) {
        if self.inner.local_address.get().is_none()
            && let Some(address) = request.local_addr()
        {
            self.learn_local_address(address);
        }
    }

    /// The URL `peer` is called at.
    pub fn url(&self, peer: Peer) -> Result<String, PeerError> {
        if let Some(url) = peer.configured(&self.inner.config) {
            return Ok(url.clone());
        }
        self.inner
            .local_address
            .get()
            .copied()
            .or(self.inner.listen_address)
            .map(|address| format!("http://{address}"))
            .ok_or(PeerError::NoAddress(peer.key()))
    }

    /// The shared channel to `peer`, connected lazily (the first call
    /// connects; a broken connection is re-established by the channel).
    pub fn channel(&self, peer: Peer) -> Result<Channel, PeerError> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(&peer) {
            return Ok(channel.clone());
        }
        let url = self.url(peer)?;
        let bad_url = || PeerError::BadUrl {
            peer: peer.key(),
            url: url.clone(),
        };
        let channel = Endpoint::from_shared(url.clone())
            .map_err(|_| bad_url())?
            .connect_timeout(Duration::from_millis(self.inner.config.connect_timeout_ms))
            .timeout(Duration::from_millis(self.inner.config.request_timeout_ms))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(peer, channel.clone());
        Ok(channel)
    }

    /// The interceptor that attaches this service's token to every call.
    pub fn service_credentials(&self) -> ServiceCredentials {
        ServiceCredentials {
            inner: Arc::clone(&self.inner),
        }
    }

    /// `authorization: Bearer <service token>` for this service, minted
    /// with the process's service key and cached.
    pub fn service_authorization(
        &self,
    ) -> Result<MetadataValue<tonic::metadata::Ascii>, PeerError> {
        self.inner.authorization()
    }
}

impl Inner {
    fn authorization(&self) -> Result<MetadataValue<tonic::metadata::Ascii>, PeerError> {
        let now_ms = SystemClock.now_ms();
        let mut cached = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((value, expires_at_ms)) = cached.as_ref() {
            let half_life_ms = self.keys.access_token_ttl_ms() / 2;
            if now_ms.saturating_add(half_life_ms) < *expires_at_ms {
                return Ok(value.clone());
            }
        }
        let issued = self
            .keys
            .issue_service_token(self.own_name, now_ms)
            .map_err(|error| PeerError::Credentials(error.to_string()))?;
        let value: MetadataValue<tonic::metadata::Ascii> = format!("Bearer {}", issued.token)
            .parse()
            .map_err(|_| PeerError::Credentials("token is not a header value".to_owned()))?;
        *cached = Some((value.clone(), issued.expires_at_ms));
        Ok(value)
    }
}

/// Attaches the calling service's token to each outgoing request (a
/// `tonic` interceptor: `BiddingServiceClient::with_interceptor(channel,
/// peers.service_credentials())`). A request that already carries an
/// `authorization` header (a forwarded user token) keeps it.
#[derive(Clone)]
pub struct ServiceCredentials {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServiceCredentials")
            .field("service", &self.inner.own_name)
            .finish()
    }
}

impl tonic::service::Interceptor for ServiceCredentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if request.metadata().contains_key("authorization") {
            return Ok(request);
        }
        let value = self
            .inner
            .authorization()
            .map_err(|error| crate::error::to_status(&error))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// An address that can be dialled: a listener on every interface
/// (`0.0.0.0`, `::`) is reached through loopback.
fn reachable(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), address.port())
        }
        IpAddr::V4(_) | IpAddr::V6(_) => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(configure: impl FnOnce(&mut Config)) -> Peers {
        let mut config = Config::embedded_default();
        configure(&mut config);
        let keys = Arc::new(Keys::generate(&config.auth));
        Peers::new(&config, keys, "catalog")
    }

    // Proves a configured URL wins, and the own listener is the default.
    #[test]
    fn configured_url_then_own_listener() {
        let peers = peers(|config| {
            config.peers.bidding = Some("http://bidding.internal:50051".to_owned());
            config.server.listen_address = "0.0.0.0:6000".to_owned();
        });
        assert_eq!(
            peers.url(Peer::Bidding).unwrap(),
            "http://bidding.internal:50051"
        );
        assert_eq!(peers.url(Peer::User).unwrap(), "http://127.0.0.1:6000");
    }

    // Proves port 0 has no default until the bound address is learned.
    #[test]
    fn port_zero_waits_for_the_bound_address() {
        let peers = peers(|config| config.server.listen_address = "127.0.0.1:0".to_owned());
        assert!(matches!(
            peers.url(Peer::Bidding),
            Err(PeerError::NoAddress("bidding"))
        ));
        peers.learn_local_address("127.0.0.1:41234".parse().unwrap());
        assert_eq!(peers.url(Peer::Bidding).unwrap(), "http://127.0.0.1:41234");
    }

    // Proves the interceptor adds a service token and keeps a forwarded one.
    #[test]
    fn interceptor_adds_service_token_once() {
        use tonic::service::Interceptor as _;
        let peers = peers(|_| {});
        let mut credentials = peers.service_credentials();
        let request = credentials.call(Request::new(())).unwrap();
        let first = request.metadata().get("authorization").unwrap().clone();
        assert!(first.to_str().unwrap().starts_with("Bearer "));
        let again = credentials.call(Request::new(())).unwrap();
        assert_eq!(again.metadata().get("authorization").unwrap(), &first);
        let mut forwarded = Request::new(());
        forwarded
            .metadata_mut()
            .insert("authorization", "Bearer user-token".parse().unwrap());
        let kept = credentials.call(forwarded).unwrap();
        assert_eq!(
            kept.metadata().get("authorization").unwrap(),
            "Bearer user-token"
        );
    }
}

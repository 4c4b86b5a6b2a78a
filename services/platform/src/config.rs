//! Configuration: typed structs, layered as built-in defaults, then an
//! optional TOML file, then `AUCTION_`-prefixed environment variables
//! (`AUCTION_SERVER__LISTEN_ADDRESS=0.0.0.0:50051`: a double underscore
//! separates the levels). Unknown keys are refused, and [`Config::validate`]
//! checks every value at start so a bad one stops start-up with a message
//! that names its key. Secrets (the PostgreSQL URL carries a password) are
//! wrapped so that printing the configuration never shows them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The prefix of every environment variable that overrides a key.
pub const ENV_PREFIX: &str = "AUCTION_";

/// Everything a process of the mesh needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listener and its shutdown behaviour.
    pub server: ServerConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
    /// Where each service keeps its tables.
    pub storage: StorageConfig,
    /// Where uploaded media lives.
    pub media: MediaConfig,
    /// The Redis used for event streams and live fan-out; absent in the
    /// embedded default, which uses the in-process bus.
    pub redis: RedisConfig,
    /// The etcd cluster that elects bidding shard leaders; absent in the
    /// embedded default, which is its own single leader.
    pub etcd: EtcdConfig,
    /// Bidding shards.
    pub bidding: BiddingConfig,
    /// Demo data for newcomers.
    pub demo: DemoConfig,
    /// Access-token keys, token lifetimes and sign-in throttling.
    pub auth: AuthConfig,
    /// The public edge: rate limits, static files, remote services.
    pub gateway: GatewayConfig,
    /// Notification delivery: webhooks, e-mail, streams.
    pub notification: NotificationConfig,
    /// Orders, escrow and the ledger: fees, deadlines and the background
    /// task's pace.
    pub payment: PaymentConfig,
    /// Where this process's services reach the other services over gRPC.
    #[serde(default)]
    pub peers: PeersConfig,
}

/// The gRPC addresses of the other services (see [`crate::peers`]). A
/// service left unset is called at this process's own listener, which is
/// right when the process serves every service (`auctiond`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersConfig {
    /// URL of the user service, e.g. `http://user.internal:50051`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// URL of the catalog service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// URL of the bidding service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bidding: Option<String>,
    /// URL of the payment service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<String>,
    /// URL of the notification service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<String>,
    /// How long connecting to a peer may take.
    pub connect_timeout_ms: u64,
    /// How long one call to a peer may take.
    pub request_timeout_ms: u64,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            user: None,
            catalog: None,
            bidding: None,
            payment: None,
            notification: None,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
        }
    }
}

/// The one listener of a process: gRPC and grpc-web on the same port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on; port 0 picks a free port.
    pub listen_address: String,
    /// How long shutdown waits for in-flight calls before it gives up on them.
    pub shutdown_grace_ms: u64,
    /// Browser origins allowed to call through grpc-web (CORS); `*` allows any.
    pub cors_allowed_origins: Vec<String>,
    /// Networks (CIDR, such as `10.0.0.0/8` or `::1/128`) of the proxies and
    /// gateways in front of this listener: from them, the client's address
    /// is taken from `x-forwarded-for` (the rightmost address that is not a
    /// trusted proxy). Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// TLS on the listener (gRPC and grpc-web over HTTPS); absent: plain
    /// text (behind a TLS-terminating proxy, or on loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
}

/// The listener's certificate and key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: PathBuf,
}

/// How logs are written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info,auction_bidding=debug`; `RUST_LOG`
    /// wins when it is set.
    pub log_filter: String,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which database the services use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageBackend {
    /// One SQLite file per service under `storage.data_dir`.
    Sqlite,
    /// One PostgreSQL database, one schema per service.
    Postgres,
}

/// Where each service keeps its tables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite` (embedded default) or `postgres` (production).
    pub backend: StorageBackend,
    /// The folder of the SQLite files (and of local media by default).
    pub data_dir: PathBuf,
    /// `postgres://user:password@host:port/database`; required for `postgres`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_url: Option<Secret>,
    /// Connections per service pool.
    pub max_connections: u32,
}

/// Where uploaded media is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// The local folder used by the embedded default's object store.
    pub local_dir: PathBuf,
    /// `local` (files under `local_dir`) or `s3` (an S3-compatible bucket,
    /// `media.s3`; needs a build with the catalog's `s3` feature).
    #[serde(default)]
    pub store: MediaStoreKind,
    /// The bucket when `store = "s3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
    /// The public base URL media are served at (`<base>/<object key>`), e.g.
    /// a CDN in front of the bucket; empty = this process's own listener
    /// under `/media/` (the embedded default).
    #[serde(default)]
    pub public_base_url: String,
}

/// Which object store holds media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaStoreKind {
    /// A local folder (`media.local_dir`).
    #[default]
    Local,
    /// An S3-compatible bucket (`media.s3`).
    S3,
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Region, e.g. `eu-central-1`.
    pub region: String,
    /// Endpoint of an S3-compatible service (MinIO, R2); absent = AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Access key id; absent = the environment's credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// Allow a plain-http endpoint (a local MinIO).
    #[serde(default)]
    pub allow_http: bool,
}

/// Redis, for event streams and live fan-out between nodes. See
/// [`crate::bus`]: each topic is one stream `<stream_prefix>:<topic>` read
/// through consumer groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`; absent means the in-process bus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The prefix of every stream key, so several meshes (or tests) can
    /// share one Redis.
    pub stream_prefix: String,
    /// This process's consumer name within each consumer group; absent = a
    /// name made of the host name and the process id. Must be stable across
    /// restarts of one node for its pending messages to be resumed at once
    /// (otherwise another consumer reclaims them after `claim_idle_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_name: Option<String>,
    /// A message delivered to a consumer and not acknowledged for this long
    /// (its consumer died, or its handler keeps failing) is reclaimed by
    /// another consumer of the group.
    pub claim_idle_ms: u64,
    /// After this many deliveries without an acknowledgement a message is
    /// moved to the topic's dead-letter stream `<prefix>:<topic>:dead`.
    pub max_deliveries: u32,
    /// Streams are trimmed to about this many entries (`XADD MAXLEN ~`);
    /// consumers far enough behind lose the oldest, so keep it generous.
    pub stream_max_length: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream_prefix: "auction-mesh".to_owned(),
            consumer_name: None,
            claim_idle_ms: 30_000,
            max_deliveries: 5,
            stream_max_length: 1_000_000,
        }
    }
}

/// The notification service: streams, webhooks, e-mail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// Accept `http://` webhook URLs and private or loopback addresses (the
    /// embedded default, for local receivers); production requires https
    /// and public addresses.
    pub allow_insecure_webhook_urls: bool,
    /// PEM file of extra certificate authorities trusted for `https://`
    /// webhook endpoints, besides the system's trust store (a partner on a
    /// private CA; tests).
    pub webhook_extra_ca_file: Option<std::path::PathBuf>,
    /// Delays before the 2nd, 3rd, ... delivery attempt of a webhook; one
    /// attempt more than delays in total. Each delay gets up to 10 % of
    /// random jitter.
    pub webhook_retry_delays_ms: Vec<u64>,
    /// How long a webhook endpoint has to answer.
    pub webhook_timeout_ms: u64,
    /// Consecutive failed attempts after which a webhook is AUTO_DISABLED.
    pub webhook_auto_disable_after_failures: u32,
    /// How often the Subscribe stream sends a heartbeat.
    pub heartbeat_interval_ms: u64,
    /// The ENDING_SOON lead time of users who did not choose one.
    pub default_ending_soon_lead_ms: u64,
    /// How often auctions are checked for ENDING_SOON notifications due.
    pub ending_soon_scan_interval_ms: u64,
    /// The SMTP relay that sends e-mail; absent = no e-mail is sent (and
    /// no e-mail address can be verified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
    /// Delays between e-mail attempts; one attempt more than delays.
    pub email_retry_delays_ms: Vec<u64>,
    /// The web app's base URL, for links in e-mails: notification links
    /// append the notification's action path, the verification e-mail
    /// `/verify-email?token=...`. The default suits `auctiond dev`.
    pub web_base_url: String,
}

/// How e-mail leaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Relay host name or address.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// `none` (plain SMTP: a relay on loopback or a trusted network, and
    /// then no login), `starttls` (plain, upgraded by STARTTLS before
    /// anything else; usually port 587) or `tls` (TLS from the first byte;
    /// usually port 465). The relay's certificate is checked against the
    /// system's trust store plus `extra_ca_file`, for `host`.
    pub tls: SmtpTls,
    /// PEM file of extra certificate authorities trusted for the relay,
    /// besides the system's trust store (a relay on a private CA; tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_ca_file: Option<std::path::PathBuf>,
    /// The sender, e.g. `Auctions <no-reply@auctions.example.com>`.
    pub from_address: String,
    /// Login user, if the relay wants one. Refused with `tls = "none"`:
    /// the credentials would cross the network in clear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Login password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// How long one SMTP exchange may take.
    pub timeout_ms: u64,
}

/// Transport security of the SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP.
    None,
    /// Plain connection upgraded with STARTTLS; a relay that does not offer
    /// it is an error (never a silent fallback to plain).
    Starttls,
    /// TLS from the first byte (implicit TLS, RFC 8314).
    Tls,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            allow_insecure_webhook_urls: true,
            webhook_extra_ca_file: None,
            webhook_retry_delays_ms: vec![
                60_000, 300_000, 1_800_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000,
            ],
            webhook_timeout_ms: 10_000,
            webhook_auto_disable_after_failures: 50,
            heartbeat_interval_ms: 15_000,
            default_ending_soon_lead_ms: 15 * 60 * 1_000,
            ending_soon_scan_interval_ms: 5_000,
            smtp: None,
            email_retry_delays_ms: vec![60_000, 300_000, 1_800_000, 7_200_000],
            web_base_url: "http://127.0.0.1:50051".to_owned(),
        }
    }
}

/// The payment service: fees, the periods of the order life cycle and the
/// pace of its background task (unpaid cancellation, automatic release,
/// offer expiry, reconciliation of payment attempts with the provider).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    /// Buyer's premium in basis points of the hammer price (500 = 5 %).
    pub buyers_premium_bps: u32,
    /// Flat buyer service fee per order, a decimal in the order's currency
    /// (rounded to its minor unit); "0" = none.
    pub buyer_service_fee: String,
    /// Seller commission in basis points of the hammer price, deducted from
    /// the seller's proceeds.
    pub seller_commission_bps: u32,
    /// How long a buyer has to pay after the order is created.
    pub payment_due_ms: u64,
    /// Escrow is released automatically this long after shipping.
    pub auto_release_ms: u64,
    /// How long the seller has to answer a dispute.
    pub dispute_response_ms: u64,
    /// How often the background task looks for due deadlines.
    pub scan_interval_ms: u64,
    /// A payment attempt still PENDING this long after it started is
    /// resolved by asking the provider for its status.
    pub attempt_reconcile_after_ms: u64,
    /// How long one call to the payment provider may take before it counts
    /// as a timeout (outcome unknown).
    pub provider_timeout_ms: u64,
    /// Calls per charge before the attempt is left PENDING for
    /// reconciliation (retries reuse the attempt's idempotency key).
    pub provider_max_calls: u32,
    /// Sandbox provider: a `tok_sandbox_timeout` charge is reported
    /// SUCCEEDED this long after it was made.
    pub sandbox_settle_after_ms: u64,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        Self {
            buyers_premium_bps: 500,
            buyer_service_fee: "0".to_owned(),
            seller_commission_bps: 1_000,
            payment_due_ms: 72 * 3_600_000,
            auto_release_ms: 14 * 86_400_000,
            dispute_response_ms: 3 * 86_400_000,
            scan_interval_ms: 5_000,
            attempt_reconcile_after_ms: 10_000,
            provider_timeout_ms: 10_000,
            provider_max_calls: 2,
            sandbox_settle_after_ms: 30_000,
        }
    }
}

/// etcd, for bidding shard leadership.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs such as `http://127.0.0.1:2379`; empty means single-node
    /// leadership without etcd.
    pub endpoints: Vec<String>,
    /// The lease of a shard leader: it steps down when it cannot renew
    /// within this time. etcd counts leases in whole seconds (and enforces
    /// its own minimum, about 2 s), so this is rounded up.
    pub lease_ttl_ms: u64,
    /// The key prefix under which bidding nodes register and shard leaders
    /// are elected (one cluster per prefix).
    pub key_prefix: String,
}

/// Bidding shards.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BiddingConfig {
    /// Auctions hash onto this many shards; fixed for the life of a cluster.
    pub shard_count: u32,
    /// How many commits a `WatchAuction` stream may fall behind before it
    /// is resynced with a snapshot (bounds memory per watched auction).
    pub watcher_buffer_batches: u32,
    /// This node's name in the cluster (etcd); a random one when absent.
    pub node_id: Option<String>,
    /// The URL other bidding nodes and gateways use to reach this node's
    /// gRPC listener, such as `http://10.0.0.5:50051`. With etcd it is
    /// required unless the listen address names a concrete IP (then
    /// `http://<bound address>` is used).
    pub advertise_url: Option<String>,
    /// How long a hammered or passed live lot stays provisional (reopenable)
    /// before it becomes final, unless the session's next lot opens first.
    /// The contract says 60 s; tests shorten it. Fixed into each lot when it
    /// is created.
    #[serde(default = "default_lot_finalize_ms")]
    pub lot_finalize_ms: u64,
    /// How long a mutating request's outcome is kept for retries with the
    /// same `request_id` (the contract promises at least 24 hours).
    #[serde(default = "default_request_retention_ms")]
    pub request_retention_ms: u64,
    /// How long each user's activity log (WatchMyActivity's events) is
    /// kept; a user's last 1,000 events are kept whatever their age, and a
    /// stream resuming before what is kept gets a RESUME_TOO_OLD snapshot.
    /// ListMyBids does not depend on it.
    #[serde(default = "default_activity_retention_ms")]
    pub activity_retention_ms: u64,
    /// How often a node deletes what is past those retentions.
    #[serde(default = "default_retention_interval_ms")]
    pub retention_interval_ms: u64,
}

fn default_lot_finalize_ms() -> u64 {
    60_000
}

fn default_request_retention_ms() -> u64 {
    2 * 86_400_000
}

fn default_activity_retention_ms() -> u64 {
    7 * 86_400_000
}

fn default_retention_interval_ms() -> u64 {
    600_000
}

/// Demo data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Seed demo users, items and auctions when the databases are empty.
    pub seed_on_first_start: bool,
}

/// Access tokens and sign-in. See docs/ARCHITECTURE.md, "Authentication".
///
/// Access tokens are EdDSA (Ed25519) JWTs signed by the user service with
/// the *token signing key*; every service verifies them itself with the
/// public keys. Service-to-service tokens are signed with a separate
/// *service key*, so neither key can forge the other kind. Each key's id
/// (`kid`) is its RFC 7638 thumbprint, so nothing names keys by hand.
/// Rotation: add the next public key to `verification_key_files` on every
/// process, switch `signing_key_file` on the user service, and keep the old
/// public key listed for at least one access-token lifetime.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The `iss` claim of every token.
    pub issuer: String,
    /// The `aud` claim of user tokens (service tokens use `<audience>-internal`).
    pub audience: String,
    /// Lifetime of an access token.
    pub access_token_ttl_ms: u64,
    /// Lifetime of a session's refresh tokens, counted from the login.
    pub refresh_token_ttl_ms: u64,
    /// Private Ed25519 key (PKCS#8 PEM file) that signs access tokens; needed
    /// where the user service runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// The same key inline (for a secret injected through the environment,
    /// `AUCTION_AUTH__SIGNING_KEY_PEM`); wins over the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_pem: Option<Secret>,
    /// Further public keys (SPKI PEM files) that verify access tokens: the
    /// previous key during a rotation, or every key on a process that only
    /// verifies.
    pub verification_key_files: Vec<PathBuf>,
    /// Private Ed25519 key (PKCS#8 PEM file) of service-to-service tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_key_file: Option<PathBuf>,
    /// The same key inline; wins over the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_key_pem: Option<Secret>,
    /// Further public keys (SPKI PEM files) that verify service tokens.
    pub service_verification_key_files: Vec<PathBuf>,
    /// Generate missing keys into `<storage.data_dir>/keys/` on first start
    /// (the embedded default); production reads configured keys only.
    pub generate_missing_keys: bool,
    /// Failed logins per account within the window before login is refused.
    pub max_failed_logins_per_account: u32,
    /// Failed logins per source address within the window before login is refused.
    pub max_failed_logins_per_source: u32,
    /// The window of the two limits above.
    pub failed_login_window_ms: u64,
    /// How long an e-mail verification token (`amv_...`, mailed by Register
    /// and RequestEmailVerification) is accepted by VerifyEmail.
    pub email_verification_ttl_ms: u64,
    /// The least time between two verification e-mails to one account, so a
    /// "resend" button cannot be used to flood an inbox.
    pub email_verification_resend_interval_ms: u64,
    /// Verification e-mails one account may cause in 24 hours (Register's
    /// included).
    pub email_verifications_per_day: u32,
}

/// The public edge of the mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Calls per second a signed-in user may make (sustained).
    pub user_requests_per_second: u32,
    /// Calls a signed-in user may make in a burst.
    pub user_burst: u32,
    /// Calls per second one partner API key may make (sustained).
    pub api_key_requests_per_second: u32,
    /// Calls one partner API key may make in a burst.
    pub api_key_burst: u32,
    /// Calls per second from one source address without credentials.
    pub anonymous_requests_per_second: u32,
    /// Calls in a burst from one source address without credentials.
    pub anonymous_burst: u32,
    /// A folder served for plain HTTP GETs (the web app); absent = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<PathBuf>,
    /// Services run elsewhere: gRPC service name (`auction.v1.CatalogService`)
    /// to the URLs of its instances, balanced per call. A service listed here
    /// is not mounted in this process.
    pub upstreams: std::collections::BTreeMap<String, Vec<String>>,
}

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or parsed; the
    /// message names the key.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value was read but is not acceptable.
    #[error("configuration key `{key}`: {message}")]
    Invalid {
        /// The dotted key, as written in the file.
        key: &'static str,
        /// What is wrong with its value.
        message: String,
    },
}

impl Config {
    /// The embedded default: everything local under `./data/`.
    pub fn embedded_default() -> Self {
        let data_dir = PathBuf::from("data");
        Self {
            server: ServerConfig {
                listen_address: "127.0.0.1:50051".to_owned(),
                shutdown_grace_ms: 4_000,
                cors_allowed_origins: vec!["*".to_owned()],
                trusted_proxies: Vec::new(),
                tls: None,
            },
            telemetry: TelemetryConfig {
                log_format: LogFormat::Text,
                log_filter: "info".to_owned(),
            },
            storage: StorageConfig {
                backend: StorageBackend::Sqlite,
                data_dir: data_dir.clone(),
                postgres_url: None,
                max_connections: 8,
            },
            media: MediaConfig {
                local_dir: data_dir.join("media"),
                store: MediaStoreKind::Local,
                s3: None,
                public_base_url: String::new(),
            },
            redis: RedisConfig::default(),
            etcd: EtcdConfig {
                endpoints: Vec::new(),
                lease_ttl_ms: 3_000,
                key_prefix: "/auction/bidding".to_owned(),
            },
            bidding: BiddingConfig {
                shard_count: 64,
                watcher_buffer_batches: 256,
                node_id: None,
                advertise_url: None,
                lot_finalize_ms: default_lot_finalize_ms(),
                request_retention_ms: default_request_retention_ms(),
                activity_retention_ms: default_activity_retention_ms(),
                retention_interval_ms: default_retention_interval_ms(),
            },
            demo: DemoConfig {
                seed_on_first_start: true,
            },
            auth: AuthConfig {
                issuer: "auction-mesh".to_owned(),
                audience: "auction-mesh".to_owned(),
                access_token_ttl_ms: 15 * 60 * 1_000,
                refresh_token_ttl_ms: 30 * 24 * 60 * 60 * 1_000,
                signing_key_file: None,
                signing_key_pem: None,
                verification_key_files: Vec::new(),
                service_key_file: None,
                service_key_pem: None,
                service_verification_key_files: Vec::new(),
                generate_missing_keys: true,
                max_failed_logins_per_account: 10,
                max_failed_logins_per_source: 50,
                failed_login_window_ms: 15 * 60 * 1_000,
                email_verification_ttl_ms: 24 * 60 * 60 * 1_000,
                email_verification_resend_interval_ms: 60 * 1_000,
                email_verifications_per_day: 10,
            },
            gateway: GatewayConfig {
                user_requests_per_second: 50,
                user_burst: 100,
                api_key_requests_per_second: 20,
                api_key_burst: 40,
                anonymous_requests_per_second: 20,
                anonymous_burst: 40,
                static_dir: None,
                upstreams: std::collections::BTreeMap::new(),
            },
            notification: NotificationConfig::default(),
            payment: PaymentConfig::default(),
            peers: PeersConfig::default(),
        }
    }

    /// The production default: PostgreSQL (its URL must be configured) and
    /// no demo data; Redis and etcd are used when configured.
    pub fn production_default() -> Self {
        let mut config = Self::embedded_default();
        config.storage.backend = StorageBackend::Postgres;
        config.demo.seed_on_first_start = false;
        config.telemetry.log_format = LogFormat::Json;
        config.auth.generate_missing_keys = false;
        config.notification.allow_insecure_webhook_urls = false;
        config
    }

    /// Loads `base`, overlaid by `file` when given, then by the environment,
    /// and validates the result.
    pub fn load(base: Self, file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(base, file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn load_from(base: Self, file: Option<&Path>, environment: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(base));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    message: format!("no configuration file at {}", file.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Self = figment.merge(environment).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        self.listen_address()?;
        self.trusted_proxies()?;
        if let Some(tls) = &self.server.tls {
            for (key, path) in [
                ("server.tls.cert_file", &tls.cert_file),
                ("server.tls.key_file", &tls.key_file),
            ] {
                if !path.is_file() {
                    return Err(invalid(
                        key,
                        format!("`{}` is not a readable file", path.display()),
                    ));
                }
            }
        }
        if self.server.shutdown_grace_ms == 0 || self.server.shutdown_grace_ms > 60_000 {
            return Err(invalid(
                "server.shutdown_grace_ms",
                "must be between 1 and 60000 milliseconds",
            ));
        }
        if self.storage.max_connections == 0 || self.storage.max_connections > 1_000 {
            return Err(invalid(
                "storage.max_connections",
                "must be between 1 and 1000",
            ));
        }
        match self.storage.backend {
            StorageBackend::Sqlite => {
                if self.storage.data_dir.as_os_str().is_empty() {
                    return Err(invalid("storage.data_dir", "must not be empty"));
                }
            }
            StorageBackend::Postgres => match &self.storage.postgres_url {
                None => {
                    return Err(invalid(
                        "storage.postgres_url",
                        "is required when storage.backend = \"postgres\"",
                    ));
                }
                Some(url) => {
                    let url = url.expose();
                    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                        return Err(invalid(
                            "storage.postgres_url",
                            "must start with postgres:// or postgresql://",
                        ));
                    }
                }
            },
        }
        if let Some(url) = &self.redis.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(invalid(
                "redis.url",
                "must start with redis:// or rediss://",
            ));
        }
        for endpoint in &self.etcd.endpoints {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(invalid(
                    "etcd.endpoints",
                    format!("`{endpoint}` must start with http:// or https://"),
                ));
            }
        }
        if !(500..=60_000).contains(&self.etcd.lease_ttl_ms) {
            return Err(invalid(
                "etcd.lease_ttl_ms",
                "must be between 500 and 60000 milliseconds",
            ));
        }
        if !self.etcd.key_prefix.starts_with('/') || self.etcd.key_prefix.ends_with('/') {
            return Err(invalid(
                "etcd.key_prefix",
                "must start with `/` and not end with one",
            ));
        }
        if let Some(url) = &self.bidding.advertise_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "bidding.advertise_url",
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        if self
            .bidding
            .node_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.len() > 128 || id.contains('/'))
        {
            return Err(invalid(
                "bidding.node_id",
                "must be 1 to 128 characters without `/`",
            ));
        }
        if self.bidding.lot_finalize_ms == 0 || self.bidding.lot_finalize_ms > 3_600_000 {
            return Err(invalid(
                "bidding.lot_finalize_ms",
                "must be between 1 and 3600000",
            ));
        }
        if self.bidding.request_retention_ms < 86_400_000 {
            return Err(invalid(
                "bidding.request_retention_ms",
                "must be at least 86400000 (the contract keeps request ids 24 hours)",
            ));
        }
        if self.bidding.activity_retention_ms < 600_000 {
            return Err(invalid(
                "bidding.activity_retention_ms",
                "must be at least 600000 (streams resume over at least 10 minutes)",
            ));
        }
        if !(1_000..=86_400_000).contains(&self.bidding.retention_interval_ms) {
            return Err(invalid(
                "bidding.retention_interval_ms",
                "must be between 1000 and 86400000",
            ));
        }
        if self.bidding.shard_count == 0 || self.bidding.shard_count > 4_096 {
            return Err(invalid("bidding.shard_count", "must be between 1 and 4096"));
        }
        if self.bidding.watcher_buffer_batches == 0 || self.bidding.watcher_buffer_batches > 65_536
        {
            return Err(invalid(
                "bidding.watcher_buffer_batches",
                "must be between 1 and 65536",
            ));
        }
        if self
            .server
            .cors_allowed_origins
            .iter()
            .any(String::is_empty)
        {
            return Err(invalid(
                "server.cors_allowed_origins",
                "must not contain an empty origin",
            ));
        }
        self.validate_auth()?;
        self.validate_gateway()?;
        self.validate_bus()?;
        self.validate_notification()?;
        self.validate_payment()?;
        self.validate_peers()?;
        self.validate_media()?;
        Ok(())
    }

    fn validate_media(&self) -> Result<(), ConfigError> {
        let media = &self.media;
        let invalid = |key: &'static str, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        if !(media.public_base_url.is_empty()
            || media.public_base_url.starts_with("http://")
            || media.public_base_url.starts_with("https://"))
        {
            return Err(invalid(
                "media.public_base_url",
                "must start with http:// or https:// (or be empty)",
            ));
        }
        match (media.store, &media.s3) {
            (MediaStoreKind::Local, _) => {
                if media.local_dir.as_os_str().is_empty() {
                    return Err(invalid("media.local_dir", "must not be empty"));
                }
            }
            (MediaStoreKind::S3, None) => {
                return Err(invalid("media.s3", "is required when media.store = \"s3\""));
            }
            (MediaStoreKind::S3, Some(s3)) => {
                if s3.bucket.is_empty() || s3.region.is_empty() {
                    return Err(invalid("media.s3", "bucket and region are required"));
                }
                if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                    return Err(invalid(
                        "media.s3.access_key_id",
                        "access_key_id and secret_access_key go together",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_peers(&self) -> Result<(), ConfigError> {
        let peers = &self.peers;
        for (key, url) in [
            ("peers.user", &peers.user),
            ("peers.catalog", &peers.catalog),
            ("peers.bidding", &peers.bidding),
            ("peers.payment", &peers.payment),
            ("peers.notification", &peers.notification),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("`{url}` must start with http:// or https://"),
                });
            }
        }
        if !(100..=60_000).contains(&peers.connect_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "peers.connect_timeout_ms",
                message: "must be between 100 and 60000 milliseconds".to_owned(),
            });
        }
        if !(100..=600_000).contains(&peers.request_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "peers.request_timeout_ms",
                message: "must be between 100 and 600000 milliseconds".to_owned(),
            });
        }
        Ok(())
    }

    fn validate_bus(&self) -> Result<(), ConfigError> {
        let redis = &self.redis;
        let invalid = |key: &'static str, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        let key_safe = |text: &str| {
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'))
        };
        if redis.stream_prefix.is_empty()
            || redis.stream_prefix.len() > 100
            || !key_safe(&redis.stream_prefix)
        {
            return Err(invalid(
                "redis.stream_prefix",
                "must be 1-100 characters of [A-Za-z0-9:_.-]",
            ));
        }
        if let Some(name) = &redis.consumer_name
            && (name.is_empty() || name.len() > 100 || !key_safe(name))
        {
            return Err(invalid(
                "redis.consumer_name",
                "must be 1-100 characters of [A-Za-z0-9:_.-]",
            ));
        }
        if !(100..=3_600_000).contains(&redis.claim_idle_ms) {
            return Err(invalid(
                "redis.claim_idle_ms",
                "must be between 100 and 3600000 milliseconds",
            ));
        }
        if !(1..=100).contains(&redis.max_deliveries) {
            return Err(invalid("redis.max_deliveries", "must be between 1 and 100"));
        }
        if !(1_000..=1_000_000_000).contains(&redis.stream_max_length) {
            return Err(invalid(
                "redis.stream_max_length",
                "must be between 1000 and 1000000000",
            ));
        }
        Ok(())
    }

    fn validate_payment(&self) -> Result<(), ConfigError> {
        let payment = &self.payment;
        let invalid = |key: &'static str, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        if payment.buyers_premium_bps > 10_000 {
            return Err(invalid(
                "payment.buyers_premium_bps",
                "must be between 0 and 10000 basis points",
            ));
        }
        if payment.seller_commission_bps > 10_000 {
            return Err(invalid(
                "payment.seller_commission_bps",
                "must be between 0 and 10000 basis points",
            ));
        }
        let fee = &payment.buyer_service_fee;
        let fee_valid = !fee.is_empty()
            && fee.len() <= 20
            && fee.split_once('.').map_or_else(
                || fee.bytes().all(|byte| byte.is_ascii_digit()),
                |(whole, fraction)| {
                    !whole.is_empty()
                        && !fraction.is_empty()
                        && whole.bytes().all(|byte| byte.is_ascii_digit())
                        && fraction.bytes().all(|byte| byte.is_ascii_digit())
                },
            );
        if !fee_valid {
            return Err(invalid(
                "payment.buyer_service_fee",
                "must be a non-negative decimal such as \"1.50\"",
            ));
        }
        let periods = [
            ("payment.payment_due_ms", payment.payment_due_ms),
            ("payment.auto_release_ms", payment.auto_release_ms),
            ("payment.dispute_response_ms", payment.dispute_response_ms),
        ];
        for (key, value) in periods {
            if !(1..=365 * 86_400_000).contains(&value) {
                return Err(invalid(key, "must be between 1 ms and 365 days"));
            }
        }
        let paces = [
            ("payment.scan_interval_ms", payment.scan_interval_ms),
            (
                "payment.attempt_reconcile_after_ms",
                payment.attempt_reconcile_after_ms,
            ),
            ("payment.provider_timeout_ms", payment.provider_timeout_ms),
            (
                "payment.sandbox_settle_after_ms",
                payment.sandbox_settle_after_ms,
            ),
        ];
        for (key, value) in paces {
            if !(1..=86_400_000).contains(&value) {
                return Err(invalid(key, "must be between 1 ms and 1 day"));
            }
        }
        if !(1..=10).contains(&payment.provider_max_calls) {
            return Err(invalid(
                "payment.provider_max_calls",
                "must be between 1 and 10",
            ));
        }
        Ok(())
    }

    fn validate_notification(&self) -> Result<(), ConfigError> {
        let notification = &self.notification;
        let invalid = |key: &'static str, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        let delays_valid = |delays: &[u64]| {
            delays.len() <= 20
                && delays
                    .iter()
                    .all(|delay| (1..=7 * 86_400_000).contains(delay))
        };
        if !delays_valid(&notification.webhook_retry_delays_ms) {
            return Err(invalid(
                "notification.webhook_retry_delays_ms",
                "at most 20 delays, each between 1 ms and 7 days",
            ));
        }
        if !delays_valid(&notification.email_retry_delays_ms) {
            return Err(invalid(
                "notification.email_retry_delays_ms",
                "at most 20 delays, each between 1 ms and 7 days",
            ));
        }
        if !(100..=60_000).contains(&notification.webhook_timeout_ms) {
            return Err(invalid(
                "notification.webhook_timeout_ms",
                "must be between 100 and 60000 milliseconds",
            ));
        }
        if !(1..=10_000).contains(&notification.webhook_auto_disable_after_failures) {
            return Err(invalid(
                "notification.webhook_auto_disable_after_failures",
                "must be between 1 and 10000",
            ));
        }
        if !(10..=15_000).contains(&notification.heartbeat_interval_ms) {
            return Err(invalid(
                "notification.heartbeat_interval_ms",
                "must be between 10 and 15000 milliseconds (the contract promises one at least every 15 s)",
            ));
        }
        if !(60_000..=86_400_000).contains(&notification.default_ending_soon_lead_ms) {
            return Err(invalid(
                "notification.default_ending_soon_lead_ms",
                "must be between 60000 (1 min) and 86400000 (24 h)",
            ));
        }
        if !(10..=600_000).contains(&notification.ending_soon_scan_interval_ms) {
            return Err(invalid(
                "notification.ending_soon_scan_interval_ms",
                "must be between 10 and 600000 milliseconds",
            ));
        }
        if !(notification.web_base_url.starts_with("http://")
            || notification.web_base_url.starts_with("https://"))
        {
            return Err(invalid(
                "notification.web_base_url",
                "must start with http:// or https://",
            ));
        }
        if let Some(smtp) = &notification.smtp {
            if smtp.host.is_empty() {
                return Err(invalid("notification.smtp.host", "must not be empty"));
            }
            if smtp.port == 0 {
                return Err(invalid("notification.smtp.port", "must not be 0"));
            }
            if smtp.tls == SmtpTls::None && (smtp.username.is_some() || smtp.password.is_some()) {
                return Err(invalid(
                    "notification.smtp.tls",
                    "a relay login (notification.smtp.username/password) needs tls = \"starttls\" or \"tls\": with \"none\" the credentials would cross the network in clear",
                ));
            }
            if let Some(path) = &smtp.extra_ca_file
                && !path.is_file()
            {
                return Err(invalid(
                    "notification.smtp.extra_ca_file",
                    &format!("`{}` is not a readable file", path.display()),
                ));
            }
            if !looks_like_mailbox(&smtp.from_address) {
                return Err(invalid(
                    "notification.smtp.from_address",
                    "must be an e-mail address, optionally with a name: `Name <user@host>`",
                ));
            }
            if smtp.username.is_some() != smtp.password.is_some() {
                return Err(invalid(
                    "notification.smtp.username",
                    "username and password go together",
                ));
            }
            if !(100..=120_000).contains(&smtp.timeout_ms) {
                return Err(invalid(
                    "notification.smtp.timeout_ms",
                    "must be between 100 and 120000 milliseconds",
                ));
            }
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        let invalid = |key: &'static str, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        if auth.issuer.is_empty() {
            return Err(invalid("auth.issuer", "must not be empty"));
        }
        if auth.audience.is_empty() {
            return Err(invalid("auth.audience", "must not be empty"));
        }
        if !(10_000..=3_600_000).contains(&auth.access_token_ttl_ms) {
            return Err(invalid(
                "auth.access_token_ttl_ms",
                "must be between 10000 (10 s) and 3600000 (1 h)",
            ));
        }
        if auth.refresh_token_ttl_ms < auth.access_token_ttl_ms
            || auth.refresh_token_ttl_ms > 90 * 24 * 3_600_000
        {
            return Err(invalid(
                "auth.refresh_token_ttl_ms",
                "must be at least auth.access_token_ttl_ms and at most 90 days",
            ));
        }
        let has_token_key = auth.signing_key_file.is_some()
            || auth.signing_key_pem.is_some()
            || !auth.verification_key_files.is_empty();
        if !has_token_key && !auth.generate_missing_keys {
            return Err(invalid(
                "auth.signing_key_file",
                "no token key configured: set auth.signing_key_file (or auth.signing_key_pem, \
                 or auth.verification_key_files on a process that only verifies), or \
                 auth.generate_missing_keys = true for development",
            ));
        }
        for (key, value) in [
            (
                "auth.max_failed_logins_per_account",
                auth.max_failed_logins_per_account,
            ),
            (
                "auth.max_failed_logins_per_source",
                auth.max_failed_logins_per_source,
            ),
        ] {
            if value == 0 || value > 100_000 {
                return Err(invalid(key, "must be between 1 and 100000"));
            }
        }
        if !(1_000..=86_400_000).contains(&auth.failed_login_window_ms) {
            return Err(invalid(
                "auth.failed_login_window_ms",
                "must be between 1000 and 86400000 milliseconds",
            ));
        }
        if !(1_000..=30 * 86_400_000).contains(&auth.email_verification_ttl_ms) {
            return Err(invalid(
                "auth.email_verification_ttl_ms",
                "must be between 1000 (1 s) and 2592000000 (30 days)",
            ));
        }
        if auth.email_verification_resend_interval_ms > 86_400_000 {
            return Err(invalid(
                "auth.email_verification_resend_interval_ms",
                "must be at most 86400000 (24 h)",
            ));
        }
        if !(1..=1_000).contains(&auth.email_verifications_per_day) {
            return Err(invalid(
                "auth.email_verifications_per_day",
                "must be between 1 and 1000",
            ));
        }
        Ok(())
    }

    fn validate_gateway(&self) -> Result<(), ConfigError> {
        let gateway = &self.gateway;
        for (key, value) in [
            (
                "gateway.user_requests_per_second",
                gateway.user_requests_per_second,
            ),
            ("gateway.user_burst", gateway.user_burst),
            (
                "gateway.api_key_requests_per_second",
                gateway.api_key_requests_per_second,
            ),
            ("gateway.api_key_burst", gateway.api_key_burst),
            (
                "gateway.anonymous_requests_per_second",
                gateway.anonymous_requests_per_second,
            ),
            ("gateway.anonymous_burst", gateway.anonymous_burst),
        ] {
            if value == 0 || value > 1_000_000 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be between 1 and 1000000".to_owned(),
                });
            }
        }
        for (service, urls) in &gateway.upstreams {
            if !auction_proto::SERVICE_NAMES.contains(&service.as_str()) {
                return Err(ConfigError::Invalid {
                    key: "gateway.upstreams",
                    message: format!("`{service}` is not a service of the mesh"),
                });
            }
            if urls.is_empty()
                || urls
                    .iter()
                    .any(|url| !(url.starts_with("http://") || url.starts_with("https://")))
            {
                return Err(ConfigError::Invalid {
                    key: "gateway.upstreams",
                    message: format!(
                        "`{service}` needs at least one URL, each starting with http:// or https://"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The parsed listen address.
    /// `server.trusted_proxies`, parsed (a bare address is a single host).
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        Self::parse_trusted_proxies(&self.server.trusted_proxies)
    }

    /// Parses trusted proxy networks (a bare address is a single host).
    pub fn parse_trusted_proxies(texts: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        texts
            .iter()
            .map(|text| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        key: "server.trusted_proxies",
                        message: format!("`{text}` is not a network such as 10.0.0.0/8"),
                    })
            })
            .collect()
    }

    pub fn listen_address(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen_address
            .parse()
            .map_err(|error| ConfigError::Invalid {
                key: "server.listen_address",
                message: format!(
                    "`{}` is not host:port ({error})",
                    self.server.listen_address
                ),
            })
    }
}

/// `user@host` or `Name <user@host>`: a shape check; the mailer parses it
/// for real when it starts.
fn looks_like_mailbox(text: &str) -> bool {
    let address = match (text.find('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        (None, None) => text.trim(),
        _ => return false,
    };
    match address.split_once('@') {
        Some((user, host)) => !user.is_empty() && (host.contains('.') || host == "localhost"),
        None => false,
    }
}

/// A secret value (a URL with a password, a key): read from configuration
/// like a string, but `Debug` never shows it, so logging a configuration is
/// safe.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().expect("temporary file");
        file.write_all(text.as_bytes()).expect("write");
        Config::load_from(
            Config::embedded_default(),
            Some(file.path()),
            Env::prefixed("MESH_TEST_UNUSED_PREFIX_"),
        )
    }

    // Proves the embedded default is valid on its own.
    #[test]
    fn embedded_default_is_valid() {
        Config::embedded_default().validate().expect("valid");
    }

    // Proves a bad value stops loading with a message naming its key.
    #[test]
    fn bad_values_name_their_key() {
        let error = load_text("[server]\nlisten_address = \"nowhere\"\n").unwrap_err();
        assert!(
            error.to_string().contains("server.listen_address"),
            "{error}"
        );

        let error = load_text("[bidding]\nshard_count = 0\n").unwrap_err();
        assert!(error.to_string().contains("bidding.shard_count"), "{error}");

        let error = load_text("[storage]\nbackend = \"postgres\"\n").unwrap_err();
        assert!(
            error.to_string().contains("storage.postgres_url"),
            "{error}"
        );

        let error = load_text("[storage]\nmax_connections = \"many\"\n").unwrap_err();
        assert!(error.to_string().contains("max_connections"), "{error}");
    }

    // Proves the payment section's bad values are refused naming their key,
    // good ones load, and unknown keys are refused.
    #[test]
    fn payment_values_name_their_key() {
        for (text, key) in [
            (
                "[payment]\nbuyers_premium_bps = 10001\n",
                "payment.buyers_premium_bps",
            ),
            (
                "[payment]\nbuyer_service_fee = \"-1\"\n",
                "payment.buyer_service_fee",
            ),
            (
                "[payment]\nbuyer_service_fee = \"1.\"\n",
                "payment.buyer_service_fee",
            ),
            ("[payment]\npayment_due_ms = 0\n", "payment.payment_due_ms"),
            (
                "[payment]\nprovider_max_calls = 0\n",
                "payment.provider_max_calls",
            ),
            (
                "[payment]\nscan_interval_ms = 0\n",
                "payment.scan_interval_ms",
            ),
        ] {
            let error = load_text(text).unwrap_err();
            assert!(error.to_string().contains(key), "{text}: {error}");
        }
        let config =
            load_text("[payment]\nbuyer_service_fee = \"1.50\"\nauto_release_ms = 1000\n").unwrap();
        assert_eq!(config.payment.buyer_service_fee, "1.50");
        assert_eq!(config.payment.auto_release_ms, 1_000);
        assert!(load_text("[payment]\nunknown_key = 1\n").is_err());
    }

    // Proves the event-bus and notification keys are validated by name.
    #[test]
    fn bus_and_notification_values_name_their_key() {
        let error = load_text("[redis]\nmax_deliveries = 0\n").unwrap_err();
        assert!(
            error.to_string().contains("redis.max_deliveries"),
            "{error}"
        );
        let error = load_text("[redis]\nstream_prefix = \"has space\"\n").unwrap_err();
        assert!(error.to_string().contains("redis.stream_prefix"), "{error}");
        let error = load_text("[redis]\nclaim_idle_ms = 1\n").unwrap_err();
        assert!(error.to_string().contains("redis.claim_idle_ms"), "{error}");
        let error = load_text(
            "[notification.smtp]\nhost = \"mail\"\nport = 25\ntls = \"none\"\nfrom_address = \"a@b.c\"\nusername = \"u\"\npassword = \"p\"\ntimeout_ms = 1000\n",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("notification.smtp.tls")
                && error.to_string().contains("in clear"),
            "{error}"
        );
        load_text(
            "[notification.smtp]\nhost = \"mail\"\nport = 587\ntls = \"starttls\"\nfrom_address = \"a@b.c\"\nusername = \"u\"\npassword = \"p\"\ntimeout_ms = 1000\n",
        )
        .unwrap();
        let error = load_text("[auth]\nemail_verifications_per_day = 0\n").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("auth.email_verifications_per_day"),
            "{error}"
        );
        let error = load_text("[notification]\nheartbeat_interval_ms = 60000\n").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("notification.heartbeat_interval_ms"),
            "{error}"
        );
        let error = load_text("[peers]\nbidding = \"bidding:50051\"\n").unwrap_err();
        assert!(error.to_string().contains("peers.bidding"), "{error}");
        let error = load_text("[notification]\nwebhook_retry_delay_ms = [1]\n").unwrap_err();
        assert!(
            error.to_string().contains("webhook_retry_delay_ms"),
            "{error}"
        );
        let config =
            load_text("[redis]\nurl = \"redis://127.0.0.1:6379\"\nmax_deliveries = 7\n").unwrap();
        assert_eq!(config.redis.max_deliveries, 7);
        assert_eq!(config.redis.stream_prefix, "auction-mesh");
        assert!(
            !Config::production_default()
                .notification
                .allow_insecure_webhook_urls
        );
    }

    // Proves unknown keys are refused rather than silently ignored.
    #[test]
    fn unknown_keys_are_refused() {
        let error = load_text("[server]\nlisten_adress = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(error.to_string().contains("listen_adress"), "{error}");
    }

    // Proves the environment overrides the file, level by level.
    #[test]
    #[allow(clippy::result_large_err, reason = "figment::Jail's own signature")]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("auction.toml", "[bidding]\nshard_count = 8\n")?;
            jail.set_env("AUCTION_BIDDING__SHARD_COUNT", "16");
            let config = Config::load(Config::embedded_default(), Some(Path::new("auction.toml")))
                .map_err(|error| error.to_string())?;
            assert_eq!(config.bidding.shard_count, 16);
            Ok(())
        });
    }

    // Proves printing a configuration never shows the PostgreSQL password.
    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut config = Config::production_default();
        config.storage.postgres_url = Some(Secret::new("postgres://app:hunter2@db/auction"));
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}

//! What every mode shares: connections, credentials, money and time
//! helpers, the run budget, auction creation and the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use auction_platform::auth::{
    AccessGrant, GENERATED_SERVICE_KEY_FILE, GENERATED_TOKEN_KEY_FILE, Keys, Role,
};
use auction_proto::v1 as pb;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::{MAX_DURATION_S, MAX_REQUESTS};

/// The options every mode takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The server (gateway) URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// The folder holding the server's generated key files
    /// (`token-signing-ed25519.pem`, `service-ed25519.pem`): `<data_dir>/keys`.
    #[arg(long, default_value = "data/keys")]
    pub keys_dir: PathBuf,
    /// The token issuer the server expects (`auth.issuer`).
    #[arg(long, default_value = "auction-mesh")]
    pub issuer: String,
    /// The token audience the server expects (`auth.audience`).
    #[arg(long, default_value = "auction-mesh")]
    pub audience: String,
    /// HTTP/2 connections for the unary load.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Measured seconds (after the warm-up); capped at 600.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Unmeasured seconds before the measured part.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Stop after this many requests in total; capped at 20,000,000.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_requests: u64,
}

/// Opens `count` separate HTTP/2 connections to `server`.
pub async fn connect(server: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("`{server}` is not a URL"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {server}"))?,
        );
    }
    Ok(channels)
}

/// Tokens signed with the server's own key files.
pub struct Credentials {
    keys: Keys,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads `token-signing-ed25519.pem` and `service-ed25519.pem` from
    /// `common.keys_dir`.
    pub fn load(common: &Common) -> anyhow::Result<Self> {
        let read = |name: &str| -> anyhow::Result<String> {
            let path = common.keys_dir.join(name);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {} (point --keys-dir at the server's <data_dir>/keys)",
                    path.display()
                )
            })
        };
        let token_pem = read(GENERATED_TOKEN_KEY_FILE)?;
        let service_pem = read(GENERATED_SERVICE_KEY_FILE)?;
        let mut auth = auction_platform::Config::embedded_default().auth;
        auth.issuer.clone_from(&common.issuer);
        auth.audience.clone_from(&common.audience);
        let keys = Keys::from_pems(&auth, Some(&token_pem), Some(&service_pem), &[], &[])
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        Ok(Self { keys })
    }

    /// A service token (`loadgen`), as the catalog would send.
    pub fn service_token(&self) -> anyhow::Result<Token> {
        let issued = self
            .keys
            .issue_service_token("loadgen", now_ms())
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        Token::new(&issued.token)
    }

    /// A BIDDER token for `user_id` (the account need not exist: the bidding
    /// service knows bidders by id only).
    pub fn bidder_token(&self, user_id: Uuid) -> anyhow::Result<Token> {
        let grant = AccessGrant {
            user_id,
            session_id: Some(Uuid::now_v7()),
            roles: [Role::Bidder].into_iter().collect(),
            api_key: None,
            second_factor_verified: false,
        };
        let issued = self
            .keys
            .issue_access_token(&grant, now_ms())
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        Token::new(&issued.token)
    }

    /// `count` fresh bidder identities.
    pub fn bidders(&self, count: usize) -> anyhow::Result<Vec<Token>> {
        (0..count)
            .map(|_| self.bidder_token(Uuid::now_v7()))
            .collect()
    }
}

/// A ready `authorization` header value.
#[derive(Clone)]
pub struct Token(MetadataValue<Ascii>);

impl Token {
    fn new(token: &str) -> anyhow::Result<Self> {
        Ok(Self(
            format!("Bearer {token}")
                .parse()
                .context("a token is a header value")?,
        ))
    }

    /// `message` as a request carrying this token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        request
    }
}

/// An amount in USD from cents.
pub fn usd(cents: u64) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: format!("{}.{:02}", cents / 100, cents % 100),
    }
}

pub use auction_platform::now_ms;

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

/// A wire timestamp.
pub fn timestamp(unix_ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix_ms.div_euclid(1_000),
        nanos: i32::try_from(unix_ms.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
    }
}

/// Milliseconds since the epoch of a wire timestamp.
pub fn unix_ms(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp.seconds * 1_000 + i64::from(timestamp.nanos) / 1_000_000
}

/// The stable reason of a status (`auction-error-reason` trailer), or its
/// code when it has none.
pub fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("auction-error-reason")
        .and_then(|value| value.to_str().ok())
        .map_or_else(|| format!("{:?}", status.code()), str::to_owned)
}

/// How long a run lasts and how many requests it may send.
#[derive(Debug)]
pub struct Budget {
    /// Requests before this instant are not measured.
    pub measure_from: Instant,
    /// Nothing is sent after this instant.
    pub deadline: Instant,
    remaining: AtomicU64,
}

impl Budget {
    /// The budget of `common`, starting now; both bounds are capped.
    pub fn new(common: &Common) -> Arc<Self> {
        let start = Instant::now();
        let warmup = Duration::from_secs(common.warmup_s.min(MAX_DURATION_S));
        let measured = Duration::from_secs(common.duration_s.clamp(1, MAX_DURATION_S));
        Arc::new(Self {
            measure_from: start + warmup,
            deadline: start + warmup + measured,
            remaining: AtomicU64::new(common.max_requests.min(MAX_REQUESTS)),
        })
    }

    /// Takes one request from the budget; `false` once time or count is
    /// used up.
    pub fn take(&self) -> bool {
        Instant::now() < self.deadline
            && self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
    }

    /// The measured window actually run (until now or the deadline).
    pub fn measured(&self) -> Duration {
        Instant::now()
            .min(self.deadline)
            .saturating_duration_since(self.measure_from)
    }
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant
/// digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed` (saturated into the histogram's range).
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// What a group of workers measured.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latencies of answered calls (microseconds).
    pub latency: Histogram<u64>,
    /// Calls answered OK in the measured window.
    pub ok: u64,
    /// Refusals and failures in the measured window, by reason.
    pub errors: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Tally {
    /// Adds another worker's tally.
    pub fn merge(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latency
            .add(&other.latency)
            .map_err(|error| anyhow::anyhow!("histogram: {error:?}"))?;
        self.ok += other.ok;
        for (reason, count) in &other.errors {
            *self.errors.entry(reason.clone()).or_default() += count;
        }
        Ok(())
    }

    /// Counts a refusal or failure.
    pub fn error(&mut self, status: &tonic::Status) {
        *self.errors.entry(reason(status)).or_default() += 1;
    }

    /// Every refusal and failure.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Milliseconds with three decimals from microseconds, without floats.
pub fn ms(micros: u64) -> String {
    format!("{}.{:03}", micros / 1_000, micros % 1_000)
}

/// Per second over `window`, without floats.
pub fn per_second(count: u64, window: Duration) -> u64 {
    let micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
    count.saturating_mul(1_000_000) / micros
}

/// The percentile line of a histogram.
pub fn percentiles(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.90)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
    )
}

/// Prints the standard summary of a unary run.
pub fn print_tally(what: &str, tally: &Tally, window: Duration) {
    println!(
        "{what}: {} ok in {} ms = {} ok/s; {} refused or failed ({}/s)",
        tally.ok,
        window.as_millis(),
        per_second(tally.ok, window),
        tally.error_count(),
        per_second(tally.error_count(), window),
    );
    println!("  latency: {}", percentiles(&tally.latency));
    for (reason, count) in &tally.errors {
        println!("  {reason}: {count}");
    }
}

/// The resident set size of process `pid` in KiB (`VmRSS` of
/// `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let number = rest.trim().trim_end_matches("kB").trim();
            return number
                .parse()
                .with_context(|| format!("VmRSS `{rest}` is not a number"));
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// How to make an auction.
#[derive(Debug, Clone, Copy)]
pub enum AuctionKind {
    /// English, open now, ending `end_in_ms` from now, soft close off.
    English {
        /// Time until the end.
        end_in_ms: i64,
    },
    /// Sealed first-price, opening at `start_ms` and ending at `end_ms`.
    Sealed {
        /// Opening time (server clock, ms).
        start_ms: i64,
        /// Closing time (server clock, ms).
        end_ms: i64,
    },
}

/// Creates one auction with a service token; returns its id and state.
pub async fn create_auction(
    client: &mut pb::bidding_service_client::BiddingServiceClient<Channel>,
    service: &Token,
    kind: AuctionKind,
    title: String,
) -> anyhow::Result<pb::AuctionState> {
    use pb::auction_parameters::FormatParameters;
    let now = now_ms();
    let (format, parameters, start_ms, end_ms) = match kind {
        AuctionKind::English { end_in_ms } => (
            pb::AuctionFormat::English,
            FormatParameters::English(pb::EnglishParameters {
                starting_price: Some(usd(100)),
                // No soft close: bids near the end must not move it.
                soft_close_window: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                ..pb::EnglishParameters::default()
            }),
            now,
            now + end_in_ms,
        ),
        AuctionKind::Sealed { start_ms, end_ms } => (
            pb::AuctionFormat::SealedFirstPrice,
            FormatParameters::Sealed(pb::SealedParameters {
                start_price: Some(usd(1_000)),
                reserve_price: None,
                allow_replace: true,
            }),
            start_ms,
            end_ms,
        ),
    };
    let request = pb::CreateAuctionRequest {
        request_id: Uuid::now_v7().to_string(),
        auction_id: Uuid::now_v7().to_string(),
        item_id: Uuid::now_v7().to_string(),
        seller_id: Uuid::now_v7().to_string(),
        seller_handle: "loadgen".to_owned(),
        title,
        parameters: Some(pb::AuctionParameters {
            format: format as i32,
            format_parameters: Some(parameters),
        }),
        start_time: Some(timestamp(start_ms)),
        end_time: Some(timestamp(end_ms)),
        ..pb::CreateAuctionRequest::default()
    };
    let response = client
        .create_auction(service.request(request))
        .await
        .map_err(|status| {
            anyhow::anyhow!("CreateAuction: {} ({})", reason(&status), status.message())
        })?
        .into_inner();
    response
        .state
        .context("CreateAuction answered without a state")
}

/// Creates `count` English auctions (64 at a time) and returns their ids.
pub async fn create_english_auctions(
    channels: &[Channel],
    service: &Token,
    count: usize,
    end_in_ms: i64,
) -> anyhow::Result<Vec<String>> {
    let run = Uuid::now_v7().simple().to_string();
    let mut ids = Vec::with_capacity(count);
    let mut tasks = JoinSet::new();
    for index in 0..count {
        if tasks.len() >= 64
            && let Some(done) = tasks.join_next().await
        {
            ids.push(done??);
        }
        let mut client = pb::bidding_service_client::BiddingServiceClient::new(
            channels[index % channels.len()].clone(),
        );
        let service = service.clone();
        let title = format!("loadgen {} #{index}", &run[..8]);
        tasks.spawn(async move {
            let state = create_auction(
                &mut client,
                &service,
                AuctionKind::English { end_in_ms },
                title,
            )
            .await?;
            anyhow::Ok(state.auction_id)
        });
    }
    while let Some(done) = tasks.join_next().await {
        ids.push(done??);
    }
    ids.sort();
    Ok(ids)
}

/// The server clock's offset from ours (server = local + offset), in
/// microseconds, and the round trip of the best of five samples.
pub async fn clock_offset(channel: Channel) -> anyhow::Result<(i64, i64)> {
    let mut client = pb::bidding_service_client::BiddingServiceClient::new(channel);
    let mut best: Option<(i64, i64)> = None;
    for _ in 0..5 {
        let sent = now_us();
        let answer = client
            .get_server_time(pb::GetServerTimeRequest {
                client_send_time: Some(timestamp(sent / 1_000)),
            })
            .await?
            .into_inner();
        let received = now_us();
        let (Some(server_received), Some(server_sent)) =
            (answer.server_receive_time, answer.server_send_time)
        else {
            bail!("GetServerTime answered without times");
        };
        let t1 = unix_ms(&server_received) * 1_000;
        let t2 = unix_ms(&server_sent) * 1_000;
        let round_trip = (received - sent) - (t2 - t1);
        let offset = ((t1 - sent) + (t2 - received)) / 2;
        if best.is_none_or(|(_, best_round_trip)| round_trip < best_round_trip) {
            best = Some((offset, round_trip));
        }
    }
    best.context("no clock sample")
}

/// A shared histogram for many tasks (watch streams).
pub type SharedHistogram = Arc<Mutex<Histogram<u64>>>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // Proves amounts go out in the contract's canonical form for USD.
    #[test]
    fn usd_amounts_are_canonical() {
        assert_eq!(usd(100).amount, "1.00");
        assert_eq!(usd(100_005).amount, "1000.05");
        assert_eq!(usd(7).amount, "0.07");
        assert_eq!(usd(7).currency, "USD");
    }

    // Proves the report's integer arithmetic: rates per second and
    // milliseconds with three decimals.
    #[test]
    fn report_arithmetic() {
        assert_eq!(per_second(12_000, Duration::from_secs(10)), 1_200);
        assert_eq!(per_second(5, Duration::ZERO), 5_000_000);
        assert_eq!(ms(1_234_567), "1234.567");
        assert_eq!(ms(42), "0.042");
    }

    // Proves the budget stops at its request count.
    #[test]
    fn budget_counts_requests() {
        let common = Common {
            server: String::new(),
            keys_dir: PathBuf::new(),
            issuer: String::new(),
            audience: String::new(),
            connections: 1,
            duration_s: 60,
            warmup_s: 0,
            max_requests: 3,
        };
        let budget = Budget::new(&common);
        assert!(budget.take() && budget.take() && budget.take());
        assert!(!budget.take());
    }
}

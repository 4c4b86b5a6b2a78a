//! The terminal view for people, until the web app exists: `auctiond`'s
//! client subcommands, plain text over the public gRPC API.
//!
//! - `auctiond auctions`: the running auctions (title, format, price,
//!   leader, time left).
//! - `auctiond watch AUCTION_ID`: a snapshot, then each event as it lands,
//!   and a countdown to the end corrected by the server clock's offset
//!   (measured with `GetServerTime`, NTP-style); a dropped stream resumes
//!   after the last sequence applied.
//! - `auctiond bid AUCTION_ID AMOUNT --user alice [--max]`: logs in through
//!   `UserService.Login`, then `PlaceBid` (or `SetMaxBid`, or
//!   `PlaceSealedBid` on a sealed auction) with a fresh request id, and
//!   prints the outcome or the precise refusal (for example the minimum
//!   acceptable bid).

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use auction_proto::v1 as pb;
use pb::bidding_service_client::BiddingServiceClient;
use pb::user_service_client::UserServiceClient;
use prost::Message as _;
use tonic::transport::{Channel, Endpoint};

/// Where the client subcommands connect unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";
/// The password of the demo accounts (README).
pub const DEMO_PASSWORD: &str = "demo-password";
/// Reconnection attempts of `watch` before it gives up.
const MAX_RECONNECTS: u32 = 30;
/// Clock samples taken by `watch` (the one with the smallest round trip wins).
const CLOCK_SAMPLES: u32 = 5;

/// Flags shared by the client subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerFlag {
    /// The gateway's URL.
    #[arg(long, env = "AUCTION_SERVER_URL", default_value = DEFAULT_SERVER)]
    pub server: String,
}

/// Flags of `auctiond auctions`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuctionsFlags {
    /// The server.
    #[command(flatten)]
    pub server: ServerFlag,
    /// Also list scheduled and ended auctions.
    #[arg(long)]
    pub all: bool,
}

/// Flags of `auctiond watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchFlags {
    /// The auction to follow.
    pub auction_id: String,
    /// The server.
    #[command(flatten)]
    pub server: ServerFlag,
    /// Exit after this many events (for scripts); default: until the
    /// auction's stream ends.
    #[arg(long)]
    pub max_events: Option<u64>,
}

/// Flags of `auctiond bid`.
#[derive(Debug, Clone, clap::Args)]
pub struct BidFlags {
    /// The auction to bid on.
    pub auction_id: String,
    /// The amount in the auction's currency, e.g. `130.00`.
    pub amount: String,
    /// The account: a demo user name (`alice`, `bob`, ...) or an e-mail.
    #[arg(long)]
    pub user: String,
    /// The account's password.
    #[arg(long, env = "AUCTION_PASSWORD", default_value = DEMO_PASSWORD, hide_default_value = true, hide_env_values = true)]
    pub password: String,
    /// Sets a proxy maximum (SetMaxBid) instead of a straight bid.
    #[arg(long)]
    pub max: bool,
    /// The server.
    #[command(flatten)]
    pub server: ServerFlag,
}

async fn connect(server: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("`{server}` is not a URL"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach {server} (is `auctiond dev` running?)"))
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

fn unix_us(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp.seconds * 1_000_000 + i64::from(timestamp.nanos) / 1_000
}

fn ms_of(timestamp: Option<&prost_types::Timestamp>) -> Option<i64> {
    timestamp.map(|timestamp| unix_us(timestamp) / 1_000)
}

fn to_timestamp(unix_us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix_us.div_euclid(1_000_000),
        nanos: i32::try_from(unix_us.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

fn money(value: Option<&pb::Money>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |money| format!("{} {}", money.currency, money.amount),
    )
}

fn leader(value: Option<&pb::BidderRef>) -> String {
    value
        .filter(|bidder| !bidder.handle.is_empty())
        .map_or_else(|| "-".to_owned(), |bidder| bidder.handle.clone())
}

fn format_name(format: i32) -> &'static str {
    match pb::AuctionFormat::try_from(format) {
        Ok(pb::AuctionFormat::English) => "English",
        Ok(pb::AuctionFormat::Dutch) => "Dutch",
        Ok(pb::AuctionFormat::SealedFirstPrice) => "sealed 1st",
        Ok(pb::AuctionFormat::SealedSecondPrice) => "sealed 2nd",
        Ok(pb::AuctionFormat::Live) => "live lot",
        Ok(pb::AuctionFormat::Unspecified) | Err(_) => "?",
    }
}

fn status_name(status: i32) -> &'static str {
    match pb::AuctionStatus::try_from(status) {
        Ok(pb::AuctionStatus::Scheduled) => "SCHEDULED",
        Ok(pb::AuctionStatus::Open) => "OPEN",
        Ok(pb::AuctionStatus::Extended) => "EXTENDED",
        Ok(pb::AuctionStatus::Closed) => "CLOSED",
        Ok(pb::AuctionStatus::Unsold) => "UNSOLD",
        Ok(pb::AuctionStatus::Cancelled) => "CANCELLED",
        Ok(pb::AuctionStatus::Unspecified) | Err(_) => "?",
    }
}

fn is_terminal_status(status: i32) -> bool {
    matches!(
        pb::AuctionStatus::try_from(status),
        Ok(pb::AuctionStatus::Closed | pb::AuctionStatus::Unsold | pb::AuctionStatus::Cancelled)
    )
}

/// `1h 02m 03s`, `2m 05s`, `7s`; `ended` when not positive.
fn time_left(milliseconds: i64) -> String {
    if milliseconds <= 0 {
        return "ended".to_owned();
    }
    let seconds = (milliseconds + 999) / 1_000;
    let (hours, minutes, seconds) = (seconds / 3_600, seconds / 60 % 60, seconds % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m {seconds:02}s"),
        _ => format!("{hours}h {minutes:02}m {seconds:02}s"),
    }
}

/// The stable reason of a refusal and, when the contract gives one, the
/// minimum acceptable bid.
fn explain(status: &tonic::Status) -> String {
    let detail = tonic_types::pb::Status::decode(status.details())
        .ok()
        .and_then(|details| {
            details
                .details
                .into_iter()
                .find(|any| any.type_url == "type.googleapis.com/auction.v1.ErrorDetail")
        })
        .and_then(|any| pb::ErrorDetail::decode(any.value.as_slice()).ok());
    let reason = detail
        .as_ref()
        .map(|detail| detail.reason.clone())
        .or_else(|| {
            status
                .metadata()
                .get("auction-error-reason")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{:?}", status.code()));
    let mut text = format!("{reason}: {}", status.message());
    if let Some(minimum) = detail
        .as_ref()
        .and_then(|detail| detail.minimum_bid.as_ref())
    {
        text.push_str(&format!(
            " (minimum acceptable bid: {})",
            money(Some(minimum))
        ));
    }
    if let Some(retry) = detail
        .as_ref()
        .and_then(|detail| detail.retry_after.as_ref())
    {
        text.push_str(&format!(
            " (retry after {} ms)",
            retry.seconds * 1_000 + i64::from(retry.nanos) / 1_000_000
        ));
    }
    text
}

/// `auctiond auctions`: one line per running auction.
pub async fn auctions(flags: AuctionsFlags) -> anyhow::Result<()> {
    let mut bidding = BiddingServiceClient::new(connect(&flags.server.server).await?);
    let statuses = if flags.all {
        (1..=6).collect()
    } else {
        Vec::new()
    };
    let mut listed = Vec::new();
    let mut page_token = String::new();
    // Bounded: at most 20 pages of 100.
    for _ in 0..20 {
        let page = bidding
            .list_auctions(pb::ListAuctionsRequest {
                statuses: statuses.clone(),
                page_size: 100,
                page_token: page_token.clone(),
                ..pb::ListAuctionsRequest::default()
            })
            .await
            .map_err(|status| anyhow::anyhow!("ListAuctions refused: {}", explain(&status)))?
            .into_inner();
        listed.extend(page.auctions);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if listed.is_empty() {
        println!("no running auctions");
        return Ok(());
    }
    // Soonest end first; auctions without an end (live lots) last.
    listed.sort_by_key(|state| ms_of(state.end_time.as_ref()).unwrap_or(i64::MAX));
    println!(
        "{:<36}  {:<10}  {:<9}  {:>14}  {:<15}  {:>11}  TITLE",
        "AUCTION", "FORMAT", "STATUS", "PRICE", "LEADER", "TIME LEFT"
    );
    for state in &listed {
        // Both times are the server's: no clock offset needed here.
        let left = match (
            ms_of(state.end_time.as_ref()),
            ms_of(state.server_time.as_ref()),
        ) {
            (Some(end), Some(now)) => time_left(end - now),
            _ => "-".to_owned(),
        };
        println!(
            "{:<36}  {:<10}  {:<9}  {:>14}  {:<15}  {:>11}  {}",
            state.auction_id,
            format_name(state.format),
            status_name(state.status),
            money(state.current_price.as_ref()),
            leader(state.leader.as_ref()),
            left,
            state.title
        );
    }
    println!(
        "{} auction(s); follow one with `auctiond watch AUCTION`",
        listed.len()
    );
    Ok(())
}

/// The server clock relative to ours, from the best of a few samples.
#[derive(Debug, Clone, Copy)]
struct ClockSync {
    /// server now = local now + offset.
    offset_us: i64,
    round_trip_us: i64,
}

async fn sync_clock(bidding: &mut BiddingServiceClient<Channel>) -> anyhow::Result<ClockSync> {
    let mut best: Option<ClockSync> = None;
    for _ in 0..CLOCK_SAMPLES {
        let sent = now_us();
        let answer = bidding
            .get_server_time(pb::GetServerTimeRequest {
                client_send_time: Some(to_timestamp(sent)),
            })
            .await
            .map_err(|status| anyhow::anyhow!("GetServerTime refused: {}", explain(&status)))?
            .into_inner();
        let received = now_us();
        let (Some(t1), Some(t2)) = (
            answer.server_receive_time.as_ref(),
            answer.server_send_time.as_ref(),
        ) else {
            bail!("GetServerTime answered without its times");
        };
        let (t1, t2) = (unix_us(t1), unix_us(t2));
        let sample = ClockSync {
            round_trip_us: (received - sent) - (t2 - t1),
            offset_us: ((t1 - sent) + (t2 - received)) / 2,
        };
        if best.is_none_or(|best| sample.round_trip_us < best.round_trip_us) {
            best = Some(sample);
        }
    }
    best.context("no clock sample")
}

/// What `watch` shows, kept up to date by the events.
#[derive(Debug, Default)]
struct Board {
    title: String,
    currency: String,
    status: i32,
    price: Option<pb::Money>,
    minimum: Option<pb::Money>,
    leader: Option<pb::BidderRef>,
    end_ms: Option<i64>,
    bid_count: u32,
    sequence: u64,
}

impl Board {
    fn from_state(state: &pb::AuctionState) -> Self {
        Self {
            title: state.title.clone(),
            currency: state.currency.clone(),
            status: state.status,
            price: state.current_price.clone(),
            minimum: state.minimum_next_bid.clone(),
            leader: state.leader.clone(),
            end_ms: ms_of(state.end_time.as_ref()),
            bid_count: state.bid_count,
            sequence: state.sequence,
        }
    }

    fn countdown(&self, clock: ClockSync) -> String {
        let server_now_ms = (now_us() + clock.offset_us) / 1_000;
        let left = self.end_ms.map_or_else(
            || "no end time".to_owned(),
            |end| format!("ends in {}", time_left(end - server_now_ms)),
        );
        format!(
            "{} | {} | price {} | leader {} | bids {} | next minimum {}",
            status_name(self.status),
            left,
            money(self.price.as_ref()),
            leader(self.leader.as_ref()),
            self.bid_count,
            money(self.minimum.as_ref()),
        )
    }

    /// Applies an event and describes it in one line.
    fn apply(&mut self, event: &pb::AuctionEvent) -> String {
        use pb::auction_event::Kind;
        self.status = event.status;
        self.sequence = event.sequence;
        let text = match &event.kind {
            Some(Kind::Scheduled(_)) => "scheduled".to_owned(),
            Some(Kind::Updated(updated)) => {
                if let Some(state) = &updated.state {
                    *self = Self::from_state(state);
                }
                "parameters updated".to_owned()
            }
            Some(Kind::Opened(opened)) => {
                self.price.clone_from(&opened.current_price);
                self.minimum.clone_from(&opened.minimum_next_bid);
                if let Some(end) = ms_of(opened.end_time.as_ref()) {
                    self.end_ms = Some(end);
                }
                format!("OPEN at {}", money(opened.current_price.as_ref()))
            }
            Some(Kind::BidAccepted(bid)) => {
                self.price.clone_from(&bid.new_price);
                self.minimum.clone_from(&bid.minimum_next_bid);
                self.leader.clone_from(&bid.leader);
                self.bid_count = bid.bid_count;
                let kind = match pb::BidKind::try_from(bid.kind) {
                    Ok(pb::BidKind::Proxy) => " (proxy)",
                    Ok(pb::BidKind::Absentee) => " (absentee)",
                    _ => "",
                };
                format!(
                    "BID {} by {}{kind} -> price {}, leader {}, next minimum {}",
                    money(bid.amount.as_ref()),
                    leader(bid.bidder.as_ref()),
                    money(bid.new_price.as_ref()),
                    leader(bid.leader.as_ref()),
                    money(bid.minimum_next_bid.as_ref())
                )
            }
            Some(Kind::PriceChanged(changed)) => {
                self.price.clone_from(&changed.new_price);
                self.minimum.clone_from(&changed.minimum_next_bid);
                self.leader.clone_from(&changed.leader);
                format!(
                    "price {} (leader {})",
                    money(changed.new_price.as_ref()),
                    leader(changed.leader.as_ref())
                )
            }
            Some(Kind::Extended(extended)) => {
                self.end_ms = ms_of(extended.new_end_time.as_ref()).or(self.end_ms);
                format!(
                    "EXTENDED by soft close (extension {})",
                    extended.extension_count
                )
            }
            Some(Kind::ReserveMet(met)) => format!("reserve met at {}", money(met.price.as_ref())),
            Some(Kind::SealedBidReceived(received)) => {
                self.bid_count = received.sealed_bid_count;
                format!(
                    "sealed bid received ({} in total)",
                    received.sealed_bid_count
                )
            }
            Some(Kind::SealedBidRemoved(removed)) => {
                self.bid_count = removed.sealed_bid_count;
                format!(
                    "sealed bid {} ({} left)",
                    if removed.expired {
                        "expired"
                    } else {
                        "withdrawn"
                    },
                    removed.sealed_bid_count
                )
            }
            Some(Kind::AbsenteeBidReceived(received)) => {
                format!("absentee bid received ({})", received.absentee_bid_count)
            }
            Some(Kind::DutchClockTicked(tick)) => {
                self.price.clone_from(&tick.current_price);
                format!(
                    "clock {}{}",
                    money(tick.current_price.as_ref()),
                    if tick.at_floor { " (floor)" } else { "" }
                )
            }
            Some(Kind::UnitsSold(sold)) => format!(
                "SOLD {} unit(s) to {} at {} ({} left)",
                sold.quantity,
                leader(sold.buyer.as_ref()),
                money(sold.unit_price.as_ref()),
                sold.units_remaining
            ),
            Some(Kind::FairWarningCalled(_)) => "fair warning".to_owned(),
            Some(Kind::LotOpened(_)) => "lot opened".to_owned(),
            Some(Kind::LotHammered(hammered)) => {
                format!("hammered to {}", leader(hammered.winner.as_ref()))
            }
            Some(Kind::LotPassed(_)) => "lot passed".to_owned(),
            Some(Kind::LotReopened(_)) => "lot reopened".to_owned(),
            Some(Kind::BidRetracted(retracted)) => {
                self.price.clone_from(&retracted.new_price);
                self.leader.clone_from(&retracted.leader);
                format!("bid retracted ({})", retracted.reason)
            }
            Some(Kind::BidUndone(undone)) => {
                self.price.clone_from(&undone.new_price);
                self.leader.clone_from(&undone.leader);
                "last bid undone".to_owned()
            }
            Some(Kind::Closed(closed)) => {
                let awards: Vec<String> = closed
                    .result
                    .as_ref()
                    .map(|result| {
                        result
                            .awards
                            .iter()
                            .map(|award| {
                                format!(
                                    "{} x{} at {}",
                                    leader(award.winner.as_ref()),
                                    award.quantity,
                                    money(award.unit_price.as_ref())
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "CLOSED: {}",
                    if awards.is_empty() {
                        "-".to_owned()
                    } else {
                        awards.join(", ")
                    }
                )
            }
            Some(Kind::Unsold(unsold)) => format!(
                "UNSOLD ({})",
                pb::UnsoldReason::try_from(unsold.reason)
                    .map_or("?", |reason| reason.as_str_name())
            ),
            Some(Kind::Cancelled(cancelled)) => format!("CANCELLED: {}", cancelled.reason),
            None => "(an event this client does not know)".to_owned(),
        };
        let at = ms_of(event.event_time.as_ref()).map_or_else(String::new, clock_of_day);
        format!("{at} #{} {text}", event.sequence)
    }
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in milliseconds.
fn clock_of_day(unix_ms: i64) -> String {
    let day_ms = unix_ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1_000 % 60,
        day_ms % 1_000
    )
}

/// Writes a line above the redrawn countdown.
struct Screen {
    interactive: bool,
    countdown_shown: bool,
}

impl Screen {
    fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.interactive && self.countdown_shown {
            let _ = write!(out, "\r\x1b[2K");
            self.countdown_shown = false;
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn countdown(&mut self, text: &str, tick: u64) {
        let mut out = std::io::stdout().lock();
        if self.interactive {
            let _ = write!(out, "\r\x1b[2K{text}");
            self.countdown_shown = true;
        } else if tick.is_multiple_of(10) {
            // Piped output: a countdown line every ten seconds is enough.
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
    }
}

/// `auctiond watch`: follow one auction live until its stream ends.
pub async fn watch(flags: WatchFlags) -> anyhow::Result<()> {
    let channel = connect(&flags.server.server).await?;
    let mut bidding = BiddingServiceClient::new(channel);
    let clock = sync_clock(&mut bidding).await?;
    let mut screen = Screen {
        interactive: std::io::stdout().is_terminal(),
        countdown_shown: false,
    };
    screen.line(&format!(
        "server clock: offset {:+} ms, round trip {}.{:03} ms",
        clock.offset_us / 1_000,
        clock.round_trip_us / 1_000,
        clock.round_trip_us.rem_euclid(1_000)
    ));
    let mut board: Option<Board> = None;
    let mut events_seen: u64 = 0;
    let mut reconnects: u32 = 0;
    let mut tick: u64 = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    'connect: loop {
        let resume_after = board.as_ref().map_or(0, |board| board.sequence);
        let opened = bidding
            .watch_auction(pb::WatchAuctionRequest {
                auction_id: flags.auction_id.clone(),
                resume_after_sequence: resume_after,
            })
            .await;
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::Unknown
                ) =>
            {
                reconnects += 1;
                if reconnects > MAX_RECONNECTS {
                    bail!("the stream could not be reopened: {}", explain(&status));
                }
                screen.line(&format!(
                    "stream unavailable ({}); retrying",
                    explain(&status)
                ));
                tokio::time::sleep(Duration::from_secs(u64::from(reconnects.min(10)))).await;
                continue 'connect;
            }
            Err(status) => bail!("WatchAuction refused: {}", explain(&status)),
        };
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(message)) => {
                        reconnects = 0;
                        match message.message {
                            Some(pb::watch_auction_response::Message::Snapshot(snapshot)) => {
                                let Some(state) = snapshot.state else { continue };
                                let fresh = Board::from_state(&state);
                                screen.line(&format!(
                                    "{} ({}, {}): {} | price {} | leader {} | bids {} | reserve {} | sequence {}",
                                    fresh.title,
                                    format_name(state.format),
                                    fresh.currency,
                                    status_name(state.status),
                                    money(fresh.price.as_ref()),
                                    leader(fresh.leader.as_ref()),
                                    fresh.bid_count,
                                    pb::ReserveState::try_from(state.reserve_state).map_or("?", |reserve| reserve.as_str_name().trim_start_matches("RESERVE_STATE_")),
                                    fresh.sequence,
                                ));
                                board = Some(fresh);
                            }
                            Some(pb::watch_auction_response::Message::Event(event)) => {
                                let Some(board) = board.as_mut() else { continue };
                                if event.sequence <= board.sequence {
                                    continue; // Already applied (resume overlap).
                                }
                                let line = board.apply(&event);
                                screen.line(&line);
                                events_seen += 1;
                                if flags.max_events.is_some_and(|max| events_seen >= max) {
                                    return Ok(());
                                }
                            }
                            Some(pb::watch_auction_response::Message::Heartbeat(_)) | None => {}
                        }
                    }
                    Ok(None) => {
                        if board.as_ref().is_some_and(|board| is_terminal_status(board.status)) {
                            screen.line("the auction has ended; stream closed");
                            return Ok(());
                        }
                        screen.line("stream ended; resuming");
                        continue 'connect;
                    }
                    Err(status) => {
                        reconnects += 1;
                        if reconnects > MAX_RECONNECTS {
                            bail!("the stream keeps failing: {}", explain(&status));
                        }
                        screen.line(&format!("stream dropped ({}); resuming after #{}", explain(&status), board.as_ref().map_or(0, |board| board.sequence)));
                        tokio::time::sleep(Duration::from_secs(u64::from(reconnects.min(10)))).await;
                        continue 'connect;
                    }
                },
                _ = ticker.tick() => {
                    tick += 1;
                    if let Some(board) = &board {
                        screen.countdown(&board.countdown(clock), tick);
                    }
                }
            }
        }
    }
}

/// `message` as a request carrying the access token.
fn authorized<T>(
    authorization: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    message: T,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.clone());
    request
}

fn email_of(user: &str) -> String {
    if user.contains('@') {
        user.to_owned()
    } else {
        format!("{user}@demo.auction.local")
    }
}

/// `auctiond bid`: log in, bid once, print the outcome. A refusal is an
/// error (exit code 1) whose message carries the reason.
pub async fn bid(flags: BidFlags) -> anyhow::Result<()> {
    let channel = connect(&flags.server.server).await?;
    let mut users = UserServiceClient::new(channel.clone());
    let mut bidding = BiddingServiceClient::new(channel);
    let login = users
        .login(pb::LoginRequest {
            request_id: uuid::Uuid::now_v7().to_string(),
            email: email_of(&flags.user),
            password: flags.password.clone(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("login as {} refused: {}", flags.user, explain(&status)))?
        .into_inner();
    let token = match login.outcome {
        Some(pb::login_response::Outcome::Tokens(tokens)) => tokens.access_token,
        Some(pb::login_response::Outcome::SecondFactorChallenge(_)) => {
            bail!(
                "{} needs a second factor (TOTP); the terminal client bids only with accounts that do not",
                flags.user
            )
        }
        None => bail!("login answered without tokens"),
    };
    let authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {token}")
            .parse()
            .context("the access token is not a header value")?;
    let state = bidding
        .get_auction_state(pb::GetAuctionStateRequest {
            auction_id: flags.auction_id.clone(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("auction {}: {}", flags.auction_id, explain(&status)))?
        .into_inner()
        .state
        .context("GetAuctionState answered without a state")?;
    let amount = pb::Money {
        currency: state.currency.clone(),
        amount: flags.amount.clone(),
    };
    let request_id = uuid::Uuid::now_v7().to_string();
    let sealed = matches!(
        pb::AuctionFormat::try_from(state.format),
        Ok(pb::AuctionFormat::SealedFirstPrice | pb::AuctionFormat::SealedSecondPrice)
    );
    let (what, answer) = if flags.max {
        let answer = bidding
            .set_max_bid(authorized(
                &authorization,
                pb::SetMaxBidRequest {
                    request_id,
                    auction_id: flags.auction_id.clone(),
                    max_amount: Some(amount),
                },
            ))
            .await
            .map(|response| {
                let response = response.into_inner();
                (response.bid, response.state, response.viewer)
            });
        ("maximum", answer)
    } else if sealed {
        let answer = bidding
            .place_sealed_bid(authorized(
                &authorization,
                pb::PlaceSealedBidRequest {
                    request_id,
                    auction_id: flags.auction_id.clone(),
                    amount: Some(amount),
                    expire_time: None,
                },
            ))
            .await
            .map(|response| {
                let response = response.into_inner();
                (response.bid, response.state, response.viewer)
            });
        ("sealed bid", answer)
    } else {
        let answer = bidding
            .place_bid(authorized(
                &authorization,
                pb::PlaceBidRequest {
                    request_id,
                    auction_id: flags.auction_id.clone(),
                    amount: Some(amount),
                },
            ))
            .await
            .map(|response| {
                let response = response.into_inner();
                (response.bid, response.state, response.viewer)
            });
        ("bid", answer)
    };
    let (bid, state, viewer) =
        answer.map_err(|status| anyhow::anyhow!("{what} refused: {}", explain(&status)))?;
    let bid_status = bid
        .as_ref()
        .and_then(|bid| pb::BidStatus::try_from(bid.status).ok())
        .map_or("?", |status| {
            status.as_str_name().trim_start_matches("BID_STATUS_")
        });
    println!(
        "{what} accepted: {} {} as {} ({bid_status}){}",
        flags.amount,
        state.as_ref().map_or("", |state| state.currency.as_str()),
        bid.as_ref()
            .map_or_else(|| "-".to_owned(), |bid| leader(bid.bidder.as_ref())),
        if viewer.as_ref().is_some_and(|viewer| viewer.is_leader) {
            ", you lead"
        } else {
            ""
        },
    );
    if let Some(state) = state {
        println!(
            "auction {}: price {}, leader {}, next minimum {}, bids {}, sequence {}",
            state.auction_id,
            money(state.current_price.as_ref()),
            leader(state.leader.as_ref()),
            money(state.minimum_next_bid.as_ref()),
            state.bid_count,
            state.sequence
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the countdown text rounds up to whole seconds and says when
    // the end has passed.
    #[test]
    fn time_left_is_readable() {
        assert_eq!(time_left(0), "ended");
        assert_eq!(time_left(-5), "ended");
        assert_eq!(time_left(1), "1s");
        assert_eq!(time_left(59_001), "1m 00s");
        assert_eq!(time_left(7_200_000), "2h 00m 00s");
        assert_eq!(time_left(3_723_000), "1h 02m 03s");
    }

    // Proves demo user names become their demo e-mail and e-mails pass.
    #[test]
    fn user_names_become_emails() {
        assert_eq!(email_of("bob"), "bob@demo.auction.local");
        assert_eq!(email_of("x@example.com"), "x@example.com");
    }
}

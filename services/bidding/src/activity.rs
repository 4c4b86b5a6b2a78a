//! The per-user side of bidding: `ListMyBids` and `WatchMyActivity`.
//!
//! Users bid across every shard, and in a cluster several nodes lead those
//! shards, so nothing in one shard's memory knows "all of Alice's auctions".
//! The shard writers therefore maintain a durable per-user index in the
//! shared database, in the same transaction as the log batch that caused it
//! (see [`crate::log::Batch::activity`]):
//!
//! - `user_activity`: each user's activity log with a consecutive per-user
//!   sequence (reserved through `user_activity_heads`), each row holding the
//!   public state and the user's own position after the batch;
//! - `user_positions`: one row per auction the user bid on, for ListMyBids
//!   and the stream's snapshot.
//!
//! A stream reads its events from that log, never from memory: a live
//! stream and a resumed one send the very same rows, on any node, after any
//! restart. Commits on this node wake the user's streams at once
//! ([`Watchers`]); commits on other nodes of a cluster wake them through
//! Redis (`crate::fanout`), and a stream also polls the log every heartbeat
//! (every [`CLUSTER_POLL`] in a cluster without Redis) in case a wake-up
//! was lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auction_engine::{Auction, AuctionStatus, Event, EventKind, UserId};
use auction_platform::auth::{self, Caller, Scope};
use auction_proto::v1 as pb;
use prost::Message as _;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::convert;
use crate::error::{BiddingError, Refusal};
use crate::log::{ActivityRow, LogError, StoredActivity, StoredPosition};
use crate::rpc::Bidding;
use crate::shard::{self, Metadata};

/// Concurrent WatchMyActivity streams per user on one node.
pub const MAX_STREAMS_PER_USER: usize = 16;
/// Rows read per query by a stream.
const ACTIVITY_PAGE: u32 = 500;
/// Positions per snapshot message (the contract's limit).
const SNAPSHOT_CHUNK: usize = 500;
/// Ended auctions stay in the snapshot this long after they ended.
const ENDED_KEPT_MS: i64 = 24 * 60 * 60 * 1_000;
/// A heartbeat at least this often.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// In a cluster, how often a stream looks for rows another node committed.
pub const CLUSTER_POLL: Duration = Duration::from_secs(1);
/// ListMyBids: default and largest page.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;
/// ListMyBids reads at most this many positions per call while filtering.
const MAX_SCANNED: u32 = 1_000;
/// Page tokens expire after this long (the contract's 24 hours).
const TOKEN_TTL_MS: i64 = 24 * 60 * 60 * 1_000;

/// The WatchMyActivity streams of this node, per user: a commit that
/// touched a user's index bumps the user's counter, which wakes the user's
/// streams to read the new rows.
#[derive(Debug, Default, Clone)]
pub struct Watchers {
    users: Arc<Mutex<HashMap<Uuid, UserStreams>>>,
}

/// One user's wake-up channel and how many streams hold it.
type UserStreams = (watch::Sender<u64>, usize);

/// One stream's registration; dropping it unregisters the stream.
#[derive(Debug)]
pub struct Watching {
    user_id: Uuid,
    changes: watch::Receiver<u64>,
    watchers: Watchers,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut users = self
            .watchers
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, count)) = users.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                users.remove(&self.user_id);
            }
        }
    }
}

impl Watchers {
    /// Registers a stream of `user_id`; RESOURCE_EXHAUSTED
    /// `STREAM_LIMIT_REACHED` beyond [`MAX_STREAMS_PER_USER`].
    pub fn watch(&self, user_id: Uuid) -> Result<Watching, Status> {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (sender, count) = users
            .entry(user_id)
            .or_insert_with(|| (watch::channel(0).0, 0));
        if *count >= MAX_STREAMS_PER_USER {
            let mut refusal = Refusal::new(
                Code::ResourceExhausted,
                "STREAM_LIMIT_REACHED",
                format!("at most {MAX_STREAMS_PER_USER} activity streams per user"),
            );
            refusal
                .metadata
                .insert("limit".to_owned(), MAX_STREAMS_PER_USER.to_string());
            return Err(BiddingError::Refused(refusal).into());
        }
        *count += 1;
        Ok(Watching {
            user_id,
            changes: sender.subscribe(),
            watchers: self.clone(),
        })
    }

    /// Wakes every stream of this node (after wake-ups may have been lost:
    /// each reads its log again).
    pub fn notify_all(&self) {
        let users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (sender, _) in users.values() {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Wakes the streams of every user in `users` (after a commit).
    pub fn notify(&self, users: impl IntoIterator<Item = Uuid>) {
        let users_watched = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if users_watched.is_empty() {
            return;
        }
        for user_id in users {
            if let Some((sender, _)) = users_watched.get(&user_id) {
                sender.send_modify(|generation| *generation = generation.wrapping_add(1));
            }
        }
    }
}

/// What a batch's events mean for each user concerned, as index rows (in
/// event order). `leader_before` is the English leader before the events;
/// the state and each user's position are those after them.
pub fn rows(
    auction_id: Uuid,
    auction: &Auction,
    metadata: &Metadata,
    events: &[Event],
    leader_before: Option<UserId>,
    now: auction_engine::Timestamp,
) -> Vec<ActivityRow> {
    struct Change {
        user: UserId,
        activity: Option<pb::ActivityType>,
        bid_seq: Option<u64>,
        at_ms: i64,
        is_bid: bool,
        removed: Option<pb::BidStatus>,
        ended: bool,
    }
    fn change(user: UserId, activity: Option<pb::ActivityType>, event: &Event) -> Change {
        Change {
            user,
            activity,
            bid_seq: None,
            at_ms: event.at.unix_ms(),
            is_bid: false,
            removed: None,
            ended: false,
        }
    }
    // A bid of the user's: it moves their position to the top.
    fn bid(user: UserId, activity: pb::ActivityType, event: &Event) -> Change {
        Change {
            bid_seq: Some(event.seq),
            is_bid: true,
            ..change(user, Some(activity), event)
        }
    }
    fn removed(
        user: UserId,
        activity: pb::ActivityType,
        status: pb::BidStatus,
        event: &Event,
    ) -> Change {
        Change {
            removed: Some(status),
            ..change(user, Some(activity), event)
        }
    }
    fn ended(user: UserId, activity: Option<pb::ActivityType>, event: &Event) -> Change {
        Change {
            ended: true,
            ..change(user, activity, event)
        }
    }
    let mut changes: Vec<Change> = Vec::new();
    let mut leader = leader_before;
    let mut participants: Option<Vec<UserId>> = None;
    let mut everyone = |auction: &Auction| -> Vec<UserId> {
        participants
            .get_or_insert_with(|| auction.participants())
            .clone()
    };
    for event in events {
        match event.kind {
            EventKind::BidAccepted {
                bidder,
                leader: after,
                previous_leader,
                ..
            } => {
                changes.push(bid(bidder, pb::ActivityType::BidPlaced, event));
                if let Some(previous) = previous_leader
                    && previous != after
                    && previous != bidder
                {
                    changes.push(change(previous, Some(pb::ActivityType::Outbid), event));
                }
                if after != bidder && previous_leader != Some(after) {
                    changes.push(change(after, Some(pb::ActivityType::Winning), event));
                }
                leader = Some(after);
            }
            EventKind::BidRetracted {
                bidder,
                leader: after,
                ..
            } => {
                changes.push(removed(
                    bidder,
                    pb::ActivityType::BidRetracted,
                    pb::BidStatus::Retracted,
                    event,
                ));
                if let Some(after) = after
                    && leader != Some(after)
                {
                    changes.push(change(after, Some(pb::ActivityType::Winning), event));
                }
                leader = after;
            }
            // An absentee bid is the bidder's own news only: it outbids
            // nobody before the lot opens.
            EventKind::SealedBidPlaced { bidder, .. }
            | EventKind::AbsenteeBidPlaced { bidder, .. } => {
                changes.push(bid(bidder, pb::ActivityType::BidPlaced, event));
            }
            // The lot opened with its absentee book applied: each absentee
            // bidder learns it, their row's position saying whether they lead.
            EventKind::LotOpened { lot, .. } => {
                for user in auction.absentee_bidders(Some(lot)) {
                    changes.push(change(user, Some(pb::ActivityType::LotOpened), event));
                }
                leader = auction.leader();
            }
            // The auctioneer undid a bid: its bidder sees it retracted, and
            // whoever leads again hears it.
            EventKind::BidUndone {
                bidder,
                leader: after,
                ..
            } => {
                changes.push(removed(
                    bidder,
                    pb::ActivityType::BidRetracted,
                    pb::BidStatus::Retracted,
                    event,
                ));
                if let Some(after) = after
                    && after != bidder
                    && leader != Some(after)
                {
                    changes.push(change(after, Some(pb::ActivityType::Winning), event));
                }
                leader = after;
            }
            EventKind::SealedBidWithdrawn {
                bidder, by_admin, ..
            } => {
                changes.push(if by_admin {
                    removed(
                        bidder,
                        pb::ActivityType::BidRetracted,
                        pb::BidStatus::Retracted,
                        event,
                    )
                } else {
                    removed(
                        bidder,
                        pb::ActivityType::BidWithdrawn,
                        pb::BidStatus::Withdrawn,
                        event,
                    )
                });
            }
            EventKind::SealedBidExpired { bidder } => {
                changes.push(removed(
                    bidder,
                    pb::ActivityType::BidExpired,
                    pb::BidStatus::Expired,
                    event,
                ));
            }
            EventKind::UnitsSold { buyer, .. } => {
                changes.push(bid(buyer, pb::ActivityType::Won, event));
            }
            EventKind::Extended { .. } => {
                for user in everyone(auction) {
                    changes.push(change(user, Some(pb::ActivityType::AuctionExtended), event));
                }
            }
            EventKind::Sold {
                winner, buy_it_now, ..
            } => {
                // A buy-it-now is the buyer's bid.
                let won = if buy_it_now.is_some() {
                    bid(winner, pb::ActivityType::Won, event)
                } else {
                    change(winner, Some(pb::ActivityType::Won), event)
                };
                changes.push(Change { ended: true, ..won });
                for user in everyone(auction) {
                    if user != winner {
                        changes.push(ended(user, Some(pb::ActivityType::Lost), event));
                    }
                }
            }
            EventKind::Unsold { .. } => {
                for user in everyone(auction) {
                    changes.push(ended(user, Some(pb::ActivityType::Lost), event));
                }
            }
            EventKind::DutchEnded { .. } => {
                // Buyers heard WON when they bought; the end only closes
                // their positions.
                for user in everyone(auction) {
                    changes.push(ended(user, None, event));
                }
            }
            EventKind::Cancelled { .. } => {
                for user in everyone(auction) {
                    changes.push(ended(user, Some(pb::ActivityType::AuctionCancelled), event));
                }
            }
            // Nothing per user: public-only changes. A live lot's hammer or
            // pass is provisional (it may be reopened): its bidders hear WON
            // or LOST from the `Sold` or `Unsold` that makes it final.
            EventKind::Opened
            | EventKind::Updated
            | EventKind::BuyItNowWithdrawn
            | EventKind::ClockTicked { .. }
            | EventKind::FairWarning { .. }
            | EventKind::LotSold { .. }
            | EventKind::LotPassed { .. }
            | EventKind::LotReopened { .. }
            | EventKind::SessionEnded { .. } => {}
        }
    }
    if changes.is_empty() {
        return Vec::new();
    }
    let view = auction.view();
    let state = Arc::new(convert::state(auction_id, &view, metadata, now).encode_to_vec());
    let mut viewers: HashMap<UserId, Vec<u8>> = HashMap::new();
    changes
        .into_iter()
        .map(|change| {
            let viewer = viewers
                .entry(change.user)
                .or_insert_with(|| {
                    let facts = shard::ViewerFacts {
                        user_id: change.user.0,
                        bid_status: auction.bid_status(change.user, None),
                        own_bid: auction.own_bid(change.user, None),
                    };
                    let mut viewer = convert::viewer(&facts, &view, false);
                    viewer.status =
                        position_status(viewer.status(), view.status, change.removed) as i32;
                    viewer.encode_to_vec()
                })
                .clone();
            ActivityRow {
                user_id: Uuid::from_u128(change.user.0),
                auction_id,
                activity_type: change.activity.map(|activity| activity as i32),
                bid_id: change
                    .bid_seq
                    .map(|seq| crate::history::bid_id(auction_id, seq)),
                at_ms: change.at_ms,
                is_bid: change.is_bid,
                removed_status: change.removed.map(|status| status as i32),
                ended: change.ended,
                state: Arc::clone(&state),
                viewer,
            }
        })
        .collect()
}

/// The status a position shows: the engine's (winning, outbid, won, lost,
/// sealed) while it knows the user's bid; CANCELLED once the auction is
/// cancelled; otherwise what removed the bid (retracted, withdrawn,
/// expired).
pub fn position_status(
    engine: pb::BidStatus,
    auction: AuctionStatus,
    removed: Option<pb::BidStatus>,
) -> pb::BidStatus {
    if auction == AuctionStatus::Cancelled {
        return pb::BidStatus::Cancelled;
    }
    match (engine, removed) {
        (pb::BidStatus::Unspecified, Some(removed)) => removed,
        (engine, _) => engine,
    }
}

fn scope_check(caller: &Caller) -> Result<(), Status> {
    if caller.has_scope(Scope::Bid) {
        Ok(())
    } else {
        caller.require_scope(Scope::Read)
    }
}

fn page_token_invalid() -> Status {
    let mut refusal = Refusal::new(
        Code::InvalidArgument,
        "PAGE_TOKEN_INVALID",
        "page_token is not one we issued for these filters, or it expired",
    );
    refusal
        .metadata
        .insert("field".to_owned(), "page_token".to_owned());
    BiddingError::Refused(refusal).into()
}

/// A stable fingerprint of ListMyBids' filters (FNV-1a), bound into page
/// tokens so a token is refused with other filters.
fn filters_fingerprint(request: &pb::ListMyBidsRequest) -> u64 {
    let mut statuses = request.statuses.clone();
    statuses.sort_unstable();
    statuses.dedup();
    let mut auction_statuses = request.auction_statuses.clone();
    auction_statuses.sort_unstable();
    auction_statuses.dedup();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for value in statuses
        .iter()
        .chain(std::iter::once(&-1))
        .chain(auction_statuses.iter())
    {
        for byte in value.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// `v1.<issued ms>.<last bid sequence>.<filters>`.
fn encode_token(issued_ms: i64, cursor: i64, filters: u64) -> String {
    format!("v1.{issued_ms}.{cursor}.{filters:x}")
}

fn decode_token(token: &str, filters: u64, now_ms: i64) -> Result<i64, Status> {
    let parts: Vec<&str> = token.split('.').collect();
    let [version, issued, cursor, fingerprint] = parts.as_slice() else {
        return Err(page_token_invalid());
    };
    let issued: i64 = issued.parse().map_err(|_| page_token_invalid())?;
    let cursor: i64 = cursor.parse().map_err(|_| page_token_invalid())?;
    let fingerprint = u64::from_str_radix(fingerprint, 16).map_err(|_| page_token_invalid())?;
    if *version != "v1" || fingerprint != filters || now_ms.saturating_sub(issued) > TOKEN_TTL_MS {
        return Err(page_token_invalid());
    }
    Ok(cursor)
}

impl Bidding {
    /// The public state and the user's own position in one auction: from
    /// its shard here, or (in a cluster, when another node leads it) from
    /// that leader with the caller's own credentials.
    async fn position(
        &self,
        auction_id: Uuid,
        user_id: Uuid,
        credentials: &tonic::metadata::MetadataMap,
    ) -> Result<(pb::AuctionState, pb::ViewerState), Status> {
        let mut request = Request::new(pb::GetAuctionStateRequest {
            auction_id: auction_id.to_string(),
        });
        *request.metadata_mut() = credentials.clone();
        if let Some(mut leader) = self.forward_target(&request, &auction_id.to_string())? {
            let response = leader
                .get_auction_state(self.forwarded(request))
                .await?
                .into_inner();
            let state = response.state.ok_or_else(|| {
                Status::from(BiddingError::Internal(
                    "the leader sent no state".to_owned(),
                ))
            })?;
            return Ok((state, response.viewer.unwrap_or_default()));
        }
        let viewer = Some(convert::user_id(user_id));
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.shards.send(
            auction_id,
            shard::Request::Read {
                auction_id,
                viewer,
                reply,
            },
        )?;
        let receipt = match answer.await {
            Ok(result) => result.map_err(Status::from)?,
            Err(_) => return Err(BiddingError::ShuttingDown.into()),
        };
        let (state, viewer) = convert::receipt_state(&receipt);
        Ok((state, viewer.unwrap_or_default()))
    }

    /// A stored position as the wire shows it (the removed status filled
    /// in); `None` when the auction cannot be read now.
    async fn auction_position(
        &self,
        stored: &StoredPosition,
        user_id: Uuid,
        credentials: &tonic::metadata::MetadataMap,
    ) -> Result<pb::AuctionPosition, Status> {
        let (state, mut viewer) = self
            .position(stored.auction_id, user_id, credentials)
            .await?;
        let auction_status = match state.status() {
            pb::AuctionStatus::Cancelled => AuctionStatus::Cancelled,
            pb::AuctionStatus::Closed => AuctionStatus::Closed,
            pb::AuctionStatus::Unsold => AuctionStatus::Unsold,
            pb::AuctionStatus::Extended => AuctionStatus::Extended,
            pb::AuctionStatus::Scheduled => AuctionStatus::Scheduled,
            pb::AuctionStatus::Open | pb::AuctionStatus::Unspecified => AuctionStatus::Open,
        };
        let removed = stored
            .removed_status
            .and_then(|status| pb::BidStatus::try_from(status).ok());
        viewer.status = position_status(viewer.status(), auction_status, removed) as i32;
        viewer.is_seller = state.seller_id == user_id.to_string();
        Ok(pb::AuctionPosition {
            state: Some(state),
            viewer: Some(viewer),
        })
    }

    /// `ListMyBids`: the caller's positions, most recent own bid first,
    /// filtered by the position's status and the auction's status; page
    /// tokens carry the cursor and are bound to the filters.
    pub async fn list_my_bids(
        &self,
        request: Request<pb::ListMyBidsRequest>,
    ) -> Result<Response<pb::ListMyBidsResponse>, Status> {
        let caller = auth::caller(&request)?;
        scope_check(&caller)?;
        let credentials = request.metadata().clone();
        let request = request.into_inner();
        let now_ms = self.clock.now().unix_ms();
        let filters = filters_fingerprint(&request);
        let page_size = match request.page_size {
            size if size <= 0 => DEFAULT_PAGE,
            size => usize::try_from(size).unwrap_or(MAX_PAGE).min(MAX_PAGE),
        };
        let mut cursor = match request.page_token.as_str() {
            "" => None,
            token => Some(decode_token(token, filters, now_ms)?),
        };
        let mut positions = Vec::new();
        let mut scanned: u32 = 0;
        let read = u32::try_from(page_size).unwrap_or(20);
        let mut more = true;
        // Filtered after reading (statuses change with every bid), so a
        // page may take several reads; bounded per call, and the token
        // then resumes where the scan stopped.
        while positions.len() < page_size && scanned < MAX_SCANNED && more {
            let stored = self
                .log
                .positions(caller.user_id, cursor, None, read)
                .await
                .map_err(|error| Status::from(BiddingError::Unavailable(error)))?;
            more = stored.len() == read as usize;
            for row in stored {
                scanned += 1;
                cursor = Some(row.last_bid_seq);
                let position = self
                    .auction_position(&row, caller.user_id, &credentials)
                    .await?;
                let status_match = request.statuses.is_empty()
                    || position
                        .viewer
                        .as_ref()
                        .is_some_and(|viewer| request.statuses.contains(&viewer.status));
                let auction_match = request.auction_statuses.is_empty()
                    || position
                        .state
                        .as_ref()
                        .is_some_and(|state| request.auction_statuses.contains(&state.status));
                if status_match && auction_match {
                    positions.push(position);
                    if positions.len() == page_size {
                        break;
                    }
                }
            }
        }
        let next_page_token = match cursor {
            Some(cursor) if more || positions.len() == page_size => {
                encode_token(now_ms, cursor, filters)
            }
            Some(_) | None => String::new(),
        };
        Ok(Response::new(pb::ListMyBidsResponse {
            positions,
            next_page_token,
        }))
    }

    /// `WatchMyActivity`: a snapshot of the caller's positions (fresh start,
    /// or a resume point ahead of the log) or a heartbeat (resume), then
    /// every event of the caller's activity log after it, from the durable
    /// index.
    pub async fn watch_my_activity(
        &self,
        request: Request<pb::WatchMyActivityRequest>,
    ) -> Result<ReceiverStream<Result<pb::WatchMyActivityResponse, Status>>, Status> {
        let caller = auth::caller(&request)?;
        scope_check(&caller)?;
        let credentials = request.metadata().clone();
        let resume_after = request.get_ref().resume_after_sequence;
        // Registered before the log is read: a commit in between wakes it.
        let watching = self.hub_watchers().watch(caller.user_id)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let bidding = self.clone();
        tokio::spawn(async move {
            bidding
                .pump_activity(caller.user_id, resume_after, credentials, watching, sender)
                .await;
        });
        Ok(ReceiverStream::new(receiver))
    }

    fn hub_watchers(&self) -> &Watchers {
        &self.hub.activity
    }

    fn activity_heartbeat(&self, latest: u64) -> pb::WatchMyActivityResponse {
        pb::WatchMyActivityResponse {
            message: Some(pb::watch_my_activity_response::Message::Heartbeat(
                pb::StreamHeartbeat {
                    server_time: Some(convert::timestamp(self.clock.now())),
                    latest_sequence: latest,
                },
            )),
        }
    }

    /// Sends the caller's positions as snapshot chunks reflecting `sequence`.
    async fn activity_snapshot(
        &self,
        user_id: Uuid,
        sequence: u64,
        reason: pb::SnapshotReason,
        credentials: &tonic::metadata::MetadataMap,
        sender: &tokio::sync::mpsc::Sender<Result<pb::WatchMyActivityResponse, Status>>,
    ) -> Result<(), Status> {
        let since_ms = self.clock.now().unix_ms().saturating_sub(ENDED_KEPT_MS);
        let mut positions = Vec::new();
        let mut cursor = None;
        loop {
            let stored = self
                .log
                .positions(user_id, cursor, Some(since_ms), ACTIVITY_PAGE)
                .await
                .map_err(|error| Status::from(BiddingError::Unavailable(error)))?;
            let done = stored.len() < ACTIVITY_PAGE as usize;
            for row in stored {
                cursor = Some(row.last_bid_seq);
                positions.push(self.auction_position(&row, user_id, credentials).await?);
            }
            if done {
                break;
            }
        }
        let chunks: Vec<Vec<pb::AuctionPosition>> = if positions.is_empty() {
            vec![Vec::new()]
        } else {
            positions
                .chunks(SNAPSHOT_CHUNK)
                .map(<[pb::AuctionPosition]>::to_vec)
                .collect()
        };
        let count = chunks.len();
        for (index, positions) in chunks.into_iter().enumerate() {
            let message = pb::watch_my_activity_response::Message::Snapshot(pb::ActivitySnapshot {
                reason: reason as i32,
                sequence,
                positions,
                last_chunk: index + 1 == count,
            });
            if sender
                .send(Ok(pb::WatchMyActivityResponse {
                    message: Some(message),
                }))
                .await
                .is_err()
            {
                return Err(Status::cancelled("the client left"));
            }
        }
        Ok(())
    }

    async fn pump_activity(
        &self,
        user_id: Uuid,
        resume_after: u64,
        credentials: tonic::metadata::MetadataMap,
        watching: Watching,
        sender: tokio::sync::mpsc::Sender<Result<pb::WatchMyActivityResponse, Status>>,
    ) {
        if let Err(status) = self
            .stream_activity(user_id, resume_after, &credentials, watching, &sender)
            .await
        {
            let _ = sender.send(Err(status)).await;
        }
    }

    /// Feeds one WatchMyActivity stream until its client leaves (`Ok`) or
    /// it must end with a status (`Err`).
    async fn stream_activity(
        &self,
        user_id: Uuid,
        resume_after: u64,
        credentials: &tonic::metadata::MetadataMap,
        mut watching: Watching,
        sender: &tokio::sync::mpsc::Sender<Result<pb::WatchMyActivityResponse, Status>>,
    ) -> Result<(), Status> {
        let unavailable = |error: LogError| Status::from(BiddingError::Unavailable(error));
        let head = self.log.activity_head(user_id).await.map_err(unavailable)?;
        // A resume point whose next event is past the retention
        // (`crate::retention`) cannot be served from the log.
        let too_old = resume_after != 0
            && resume_after < head
            && self
                .log
                .activity_after(user_id, resume_after, 1)
                .await
                .map_err(unavailable)?
                .first()
                .map(|row| row.seq)
                != Some(resume_after + 1);
        // Everything up to `sent` is covered (sent, or in the snapshot).
        let mut sent = if resume_after == 0 || resume_after > head || too_old {
            let reason = if resume_after == 0 {
                pb::SnapshotReason::Initial
            } else if too_old {
                pb::SnapshotReason::ResumeTooOld
            } else {
                pb::SnapshotReason::ResumeUnknown
            };
            self.activity_snapshot(user_id, head, reason, credentials, sender)
                .await?;
            head
        } else {
            if sender
                .send(Ok(self.activity_heartbeat(head)))
                .await
                .is_err()
            {
                return Ok(());
            }
            resume_after
        };
        // Commits on other nodes wake the stream through Redis (fanout.rs)
        // when there is Redis; without it, a cluster polls the log.
        let poll = if self.cluster.is_some() && self.fanout.is_none() {
            CLUSTER_POLL
        } else {
            HEARTBEAT
        };
        let mut last_message = tokio::time::Instant::now();
        loop {
            // Drain what the log holds after `sent`.
            loop {
                let rows = self
                    .log
                    .activity_after(user_id, sent, ACTIVITY_PAGE)
                    .await
                    .map_err(unavailable)?;
                let full = rows.len() == ACTIVITY_PAGE as usize;
                let mut gap = false;
                for row in rows {
                    if row.seq != sent + 1 {
                        // What followed `sent` was pruned (a resume point
                        // or a stream older than the retention; rows are
                        // stamped by the nodes' clocks, so a pruned row
                        // may even sit between kept ones).
                        gap = true;
                        break;
                    }
                    let seq = row.seq;
                    if sender.send(Ok(activity_event(row))).await.is_err() {
                        return Ok(());
                    }
                    sent = seq;
                    last_message = tokio::time::Instant::now();
                }
                if gap {
                    // Start the stream over from a snapshot at the head.
                    let head = self.log.activity_head(user_id).await.map_err(unavailable)?;
                    self.activity_snapshot(
                        user_id,
                        head,
                        pb::SnapshotReason::ResumeTooOld,
                        credentials,
                        sender,
                    )
                    .await?;
                    sent = head;
                    last_message = tokio::time::Instant::now();
                    continue;
                }
                if !full {
                    break;
                }
            }
            let heartbeat_due = last_message + HEARTBEAT;
            tokio::select! {
                () = self.shutdown.wait() => return Err(BiddingError::ShuttingDown.into()),
                changed = watching.changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(poll) => {}
                () = tokio::time::sleep_until(heartbeat_due) => {
                    if sender.send(Ok(self.activity_heartbeat(sent))).await.is_err() {
                        return Ok(());
                    }
                    last_message = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// The wire form of a stored activity row.
fn activity_event(row: StoredActivity) -> pb::WatchMyActivityResponse {
    pb::WatchMyActivityResponse {
        message: Some(pb::watch_my_activity_response::Message::Event(
            pb::ActivityEvent {
                sequence: row.seq,
                event_time: Some(convert::timestamp(auction_engine::Timestamp::from_unix_ms(
                    row.at_ms,
                ))),
                activity_type: row.activity_type,
                auction_id: row.auction_id.to_string(),
                bid_id: row.bid_id.map(|id| id.to_string()).unwrap_or_default(),
                state: pb::AuctionState::decode(row.state.as_slice()).ok(),
                viewer: pb::ViewerState::decode(row.viewer.as_slice()).ok(),
            },
        )),
    }
}

//! The implemented RPCs of `auction.v1.BiddingService`: identity and
//! validation here, the rules in the engine behind the shards. Each mutating
//! RPC builds an [`IdempotencyKey`] from the caller, the method, the
//! `request_id` and the request's content, so a retry gets the original
//! answer and a reused key with other content gets ALREADY_EXISTS.

use std::sync::Arc;
use std::time::Duration;

use auction_engine::{Action, Actor, Event, Timestamp, UserId};
use auction_platform::auth::{self, Caller, Role, Scope};
use auction_proto::v1 as pb;
use tokio::sync::{broadcast, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert;
use crate::error::BiddingError;
use crate::hub::Hub;
use crate::log::{ListOrder, Log};
use crate::shard::{self, Clock, IdempotencyKey, Metadata, Receipt, Shards};

/// The id of the auction a `CreateAuction` names: its own, or (when empty)
/// one derived from the caller and the request id, so a retry names the
/// same auction (and lands on the same shard).
pub fn created_auction_id(
    caller: &Caller,
    request: &pb::CreateAuctionRequest,
) -> Result<Uuid, Status> {
    let request_id = convert::request_id(&request.request_id).map_err(refused)?;
    if request.auction_id.is_empty() {
        Ok(Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("{}:{request_id}", caller.user_id).as_bytes(),
        ))
    } else {
        convert::uuid("auction_id", &request.auction_id).map_err(refused)
    }
}

/// What the RPCs share.
#[derive(Debug, Clone)]
pub struct Bidding {
    /// The shard senders.
    pub shards: Shards,
    /// The log (for resuming streams and listing).
    pub log: Log,
    /// Committed events, per auction.
    pub hub: Arc<Hub>,
    /// The partners' market feed.
    pub market: Arc<crate::market::MarketFeed>,
    /// Server time.
    pub clock: Arc<dyn Clock>,
    /// Ends streams on shutdown.
    pub shutdown: auction_platform::Shutdown,
    /// Shard leadership and routing in a cluster (etcd); `None` on a single
    /// node, which leads every shard.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Cross-node live fan-out (a cluster with Redis): watchers are served
    /// on any node.
    pub fanout: Option<Arc<crate::fanout::Fanout>>,
    /// Live lots: the session table and the finalise delay.
    pub live: crate::live::LiveLots,
}

/// Messages buffered per watcher before the stream's writer waits.
const STREAM_BUFFER: usize = 64;
/// Events read per query when assembling a bid history.
const HISTORY_PAGE: u32 = 5_000;
/// A heartbeat at least this often on every stream.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(15);
/// ListAuctions: the contract's default and largest page.
const LIST_AUCTIONS_DEFAULT_PAGE: usize = 50;
const LIST_AUCTIONS_MAX_PAGE: usize = 200;
/// ListAuctions reads at most this many pages of rows per call while
/// filtering.
const LIST_AUCTIONS_READS: usize = 5;
/// Page tokens expire after this long (the contract's 24 hours).
const LIST_TOKEN_TTL_MS: i64 = 24 * 60 * 60 * 1_000;

pub(crate) fn refused(refusal: crate::error::Refusal) -> Status {
    BiddingError::Refused(refusal).into()
}

impl Bidding {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) async fn ask(
        &self,
        auction_id: Uuid,
        build: impl FnOnce(oneshot::Sender<Result<Receipt, BiddingError>>) -> shard::Request,
    ) -> Result<Receipt, Status> {
        let (reply, answer) = oneshot::channel();
        self.shards.send(auction_id, build(reply))?;
        match answer.await {
            Ok(result) => result.map_err(Status::from),
            Err(_) => Err(BiddingError::ShuttingDown.into()),
        }
    }

    /// An auction's public state from its shard: here, or from the shard's
    /// leader in a cluster.
    pub(crate) async fn public_state(&self, auction_id: Uuid) -> Result<pb::AuctionState, Status> {
        let shard = Shards::shard_of(auction_id, self.shards.count());
        if let Some(cluster) = &self.cluster
            && !self.shards.leads(shard)
            && let Some(leader) = cluster.leader(shard)
            && leader.node != cluster.node()
            && let Some(mut client) = cluster.client(&leader.url)
        {
            let mut request = Request::new(pb::GetAuctionStateRequest {
                auction_id: auction_id.to_string(),
            });
            if let Ok(node) = cluster.node().parse() {
                request
                    .metadata_mut()
                    .insert(crate::routing::FORWARDED_HEADER, node);
            }
            let response = client.get_auction_state(request).await?.into_inner();
            return response.state.ok_or_else(|| {
                BiddingError::Internal("the leader sent no state".to_owned()).into()
            });
        }
        let receipt = self
            .ask(auction_id, |reply| shard::Request::Read {
                auction_id,
                viewer: None,
                reply,
            })
            .await?;
        Ok(convert::receipt_state(&receipt).0)
    }

    /// Applies a bidder's action.
    pub(crate) async fn act(
        &self,
        caller: &Caller,
        method: &'static str,
        request_id: &str,
        auction_id: &str,
        actor: Actor,
        action: Action,
    ) -> Result<Receipt, Status> {
        let request_id = convert::request_id(request_id).map_err(refused)?;
        let auction_id = convert::uuid("auction_id", auction_id).map_err(refused)?;
        let fingerprint = serde_json::to_string(&(auction_id, actor, action))
            .map_err(|error| Status::from(BiddingError::Internal(error.to_string())))?;
        let key = IdempotencyKey {
            caller: caller.user_id,
            method,
            request_id,
            fingerprint,
        };
        self.ask(auction_id, |reply| shard::Request::Apply {
            auction_id,
            actor,
            action,
            expected_sequence: None,
            key,
            reply,
        })
        .await
    }

    fn bidder(caller: &Caller) -> Result<Actor, Status> {
        caller.require_role(Role::Bidder)?;
        caller.require_scope(Scope::Bid)?;
        Ok(Actor::bidder(convert::user_id(caller.user_id)))
    }

    fn bid_response(
        &self,
        receipt: &Receipt,
        kind: pb::BidKind,
    ) -> (
        Option<pb::Bid>,
        Option<pb::AuctionState>,
        Option<pb::ViewerState>,
    ) {
        let (state, viewer) = convert::receipt_state(receipt);
        (Some(convert::own_bid(receipt, kind)), Some(state), viewer)
    }

    /// `CreateAuction`: services (the catalog) and admins.
    pub async fn create_auction(
        &self,
        request: Request<pb::CreateAuctionRequest>,
    ) -> Result<Response<pb::CreateAuctionResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_service_or_admin()?;
        let request = request.into_inner();
        let request_id = convert::request_id(&request.request_id).map_err(refused)?;
        let auction_id = created_auction_id(&caller, &request)?;
        let seller = convert::uuid("seller_id", &request.seller_id).map_err(refused)?;
        let (mut spec, original_end_ms) =
            convert::spec(&request, auction_id, seller).map_err(refused)?;
        let live_lot = self.live.prepare(&request, &mut spec)?;
        if let Some(lot) = &live_lot {
            self.live.check_free(auction_id, lot).await?;
        }
        let metadata = Metadata {
            item_id: request.item_id.clone(),
            title: request.title.clone(),
            category_id: request.category_id.clone(),
            category_path_ids: request.category_path_ids.clone(),
            seller_handle: request.seller_handle.clone(),
            seller_id: seller.to_string(),
            original_end_ms,
            live_lot: live_lot.clone(),
        };
        let fingerprint = serde_json::to_string(&(&spec, &metadata))
            .map_err(|error| Status::from(BiddingError::Internal(error.to_string())))?;
        let key = IdempotencyKey {
            caller: caller.user_id,
            method: "CreateAuction",
            request_id,
            fingerprint,
        };
        let receipt = self
            .ask(auction_id, |reply| shard::Request::Create {
                spec: Box::new(spec),
                metadata,
                key,
                reply,
            })
            .await?;
        // After the create (a retry records it again): the session finds
        // its lots here.
        if let Some(lot) = &live_lot {
            self.live
                .register(auction_id, lot)
                .await
                .map_err(|error| Status::from(BiddingError::Unavailable(error)))?;
        }
        let (state, _) = convert::receipt_state(&receipt);
        Ok(Response::new(pb::CreateAuctionResponse {
            state: Some(state),
        }))
    }

    /// `GetAuctionState`: anyone; the viewer part for a signed-in caller.
    pub async fn get_auction_state(
        &self,
        request: Request<pb::GetAuctionStateRequest>,
    ) -> Result<Response<pb::GetAuctionStateResponse>, Status> {
        let caller = auth::optional_caller(&request);
        let viewer = caller
            .as_ref()
            .map(|caller| convert::user_id(caller.user_id));
        let auction_id =
            convert::uuid("auction_id", &request.get_ref().auction_id).map_err(refused)?;
        let receipt = self
            .ask(auction_id, |reply| shard::Request::Read {
                auction_id,
                viewer,
                reply,
            })
            .await?;
        let (mut state, viewer) = convert::receipt_state(&receipt);
        // Admins, services and the seller see who leads (the contract's
        // BidderRef.user_id rule); everyone else sees the handle only.
        let discloses = caller.as_ref().is_some_and(|caller| {
            caller.is_admin()
                || caller.is_service()
                || caller.user_id.to_string() == receipt.metadata.seller_id
        });
        if discloses
            && let Some(leader) = state.leader.as_mut()
            && let Some(user) = convert::leading_user(&receipt.view)
        {
            leader.user_id = Uuid::from_u128(user.0).to_string();
        }
        Ok(Response::new(pb::GetAuctionStateResponse {
            state: Some(state),
            viewer,
            recent_bids: Vec::new(),
        }))
    }

    /// `PlaceBid`: a straight bid, a maximum equal to its amount.
    pub async fn place_bid(
        &self,
        request: Request<pb::PlaceBidRequest>,
    ) -> Result<Response<pb::PlaceBidResponse>, Status> {
        let caller = auth::caller(&request)?;
        let actor = Self::bidder(&caller)?;
        let request = request.into_inner();
        let amount = convert::money("amount", request.amount.as_ref()).map_err(refused)?;
        let receipt = self
            .act(
                &caller,
                "PlaceBid",
                &request.request_id,
                &request.auction_id,
                actor,
                Action::PlaceBid { amount, lot: None },
            )
            .await?;
        let (bid, state, viewer) = self.bid_response(&receipt, pb::BidKind::Manual);
        Ok(Response::new(pb::PlaceBidResponse { bid, state, viewer }))
    }

    /// `SetMaxBid`: a proxy maximum.
    pub async fn set_max_bid(
        &self,
        request: Request<pb::SetMaxBidRequest>,
    ) -> Result<Response<pb::SetMaxBidResponse>, Status> {
        let caller = auth::caller(&request)?;
        let actor = Self::bidder(&caller)?;
        let request = request.into_inner();
        let max_amount =
            convert::money("max_amount", request.max_amount.as_ref()).map_err(refused)?;
        let receipt = self
            .act(
                &caller,
                "SetMaxBid",
                &request.request_id,
                &request.auction_id,
                actor,
                Action::SetMaxBid {
                    max_amount,
                    lot: None,
                },
            )
            .await?;
        let (bid, state, viewer) = self.bid_response(&receipt, pb::BidKind::Proxy);
        Ok(Response::new(pb::SetMaxBidResponse { bid, state, viewer }))
    }

    /// `PlaceSealedBid`: hidden until the close; an optional expiry.
    pub async fn place_sealed_bid(
        &self,
        request: Request<pb::PlaceSealedBidRequest>,
    ) -> Result<Response<pb::PlaceSealedBidResponse>, Status> {
        let caller = auth::caller(&request)?;
        let actor = Self::bidder(&caller)?;
        let now = self.now();
        let request = request.into_inner();
        let amount = convert::money("amount", request.amount.as_ref()).map_err(refused)?;
        let ttl_ms = match request.expire_time.as_ref() {
            None => None,
            Some(expire) => {
                let expire_at =
                    convert::from_timestamp("expire_time", Some(expire)).map_err(refused)?;
                let ttl_ms = expire_at.unix_ms() - now.unix_ms();
                if ttl_ms <= 0 {
                    return Err(refused(convert::invalid("expire_time", "is in the past")));
                }
                Some(ttl_ms)
            }
        };
        let receipt = self
            .act(
                &caller,
                "PlaceSealedBid",
                &request.request_id,
                &request.auction_id,
                actor,
                Action::PlaceSealedBid { amount, ttl_ms },
            )
            .await?;
        let (bid, state, viewer) = self.bid_response(&receipt, pb::BidKind::Sealed);
        Ok(Response::new(pb::PlaceSealedBidResponse {
            bid,
            state,
            viewer,
        }))
    }

    /// `WithdrawSealedBid`: the caller's standing sealed bid (one per bidder).
    pub async fn withdraw_sealed_bid(
        &self,
        request: Request<pb::WithdrawSealedBidRequest>,
    ) -> Result<Response<pb::WithdrawSealedBidResponse>, Status> {
        let caller = auth::caller(&request)?;
        let actor = Self::bidder(&caller)?;
        let request = request.into_inner();
        let receipt = self
            .act(
                &caller,
                "WithdrawSealedBid",
                &request.request_id,
                &request.auction_id,
                actor,
                Action::WithdrawSealedBid,
            )
            .await?;
        let (bid, state, viewer) = self.bid_response(&receipt, pb::BidKind::Sealed);
        Ok(Response::new(pb::WithdrawSealedBidResponse {
            bid,
            state,
            viewer,
        }))
    }

    /// `AcceptDutchPrice`: units at the current clock price.
    pub async fn accept_dutch_price(
        &self,
        request: Request<pb::AcceptDutchPriceRequest>,
    ) -> Result<Response<pb::AcceptDutchPriceResponse>, Status> {
        let caller = auth::caller(&request)?;
        let actor = Self::bidder(&caller)?;
        let request = request.into_inner();
        let max_unit_price =
            convert::money("max_unit_price", request.max_unit_price.as_ref()).map_err(refused)?;
        let action = Action::DutchAccept {
            quantity: request.quantity.max(1),
            max_unit_price,
        };
        let receipt = self
            .act(
                &caller,
                "AcceptDutchPrice",
                &request.request_id,
                &request.auction_id,
                actor,
                action,
            )
            .await?;
        let (bid, state, viewer) = self.bid_response(&receipt, pb::BidKind::DutchAccept);
        Ok(Response::new(pb::AcceptDutchPriceResponse {
            bid,
            state,
            viewer,
        }))
    }

    /// `BuyItNow`: at the price the buyer saw.
    pub async fn buy_it_now(
        &self,
        request: Request<pb::BuyItNowRequest>,
    ) -> Result<Response<pb::BuyItNowResponse>, Status> {
        let caller = auth::caller(&request)?;
        let actor = Self::bidder(&caller)?;
        let request = request.into_inner();
        let price =
            convert::money("expected_price", request.expected_price.as_ref()).map_err(refused)?;
        let receipt = self
            .act(
                &caller,
                "BuyItNow",
                &request.request_id,
                &request.auction_id,
                actor,
                Action::BuyItNow { price },
            )
            .await?;
        let (bid, state, viewer) = self.bid_response(&receipt, pb::BidKind::BuyItNow);
        Ok(Response::new(pb::BuyItNowResponse { bid, state, viewer }))
    }

    /// `CancelAuction`: the seller before the reserve is met, admins always
    /// (the engine decides).
    pub async fn cancel_auction(
        &self,
        request: Request<pb::CancelAuctionRequest>,
    ) -> Result<Response<pb::CancelAuctionResponse>, Status> {
        let caller = auth::caller(&request)?;
        let actor = if caller.is_admin() {
            Actor::admin(convert::user_id(caller.user_id))
        } else {
            Actor::seller(convert::user_id(caller.user_id))
        };
        let request = request.into_inner();
        let receipt = self
            .act(
                &caller,
                "CancelAuction",
                &request.request_id,
                &request.auction_id,
                actor,
                Action::Cancel,
            )
            .await?;
        let (state, _) = convert::receipt_state(&receipt);
        Ok(Response::new(pb::CancelAuctionResponse {
            state: Some(state),
        }))
    }

    /// Every committed event of an auction, in order (bounded by the
    /// engine's limits on bids per auction).
    pub(crate) async fn all_events(&self, auction_id: Uuid) -> Result<Vec<Event>, Status> {
        let mut events = Vec::new();
        loop {
            let page = self
                .log
                .events_from(auction_id, events.len() as u64, HISTORY_PAGE)
                .await
                .map_err(|error| Status::from(BiddingError::Unavailable(error)))?;
            let done = page.len() < HISTORY_PAGE as usize;
            for (seq, text) in page {
                let event: Event = serde_json::from_str(&text).map_err(|error| {
                    Status::from(BiddingError::Internal(format!("event {seq}: {error}")))
                })?;
                events.push(event);
            }
            if done {
                return Ok(events);
            }
        }
    }

    /// `ListBids`: the history, newest first; never other bidders'
    /// maximums; sealed auctions only after the close.
    pub async fn list_bids(
        &self,
        request: Request<pb::ListBidsRequest>,
    ) -> Result<Response<pb::ListBidsResponse>, Status> {
        let viewer = auth::optional_caller(&request).map(|caller| convert::user_id(caller.user_id));
        let request = request.into_inner();
        let auction_id = convert::uuid("auction_id", &request.auction_id).map_err(refused)?;
        let page_size = match request.page_size {
            size if size <= 0 => 50,
            size => size.min(200) as usize,
        };
        let before = match request.page_token.as_str() {
            "" => u64::MAX,
            token => token
                .parse::<u64>()
                .map_err(|_| refused(page_token_invalid()))?,
        };
        let receipt = self
            .ask(auction_id, |reply| shard::Request::Read {
                auction_id,
                viewer,
                reply,
            })
            .await?;
        if matches!(
            receipt.view.format,
            auction_engine::FormatView::Sealed { .. }
        ) && !receipt.view.status.is_finished()
        {
            return Err(refused(crate::error::Refusal::new(
                tonic::Code::FailedPrecondition,
                "SEALED_BIDS_HIDDEN",
                "sealed bids are shown only after the close",
            )));
        }
        let events = self.all_events(auction_id).await?;
        let all = crate::history::bids(
            auction_id,
            &events,
            &receipt.view,
            viewer,
            request.include_removed,
        );
        let bids: Vec<pb::Bid> = all
            .into_iter()
            .filter(|bid| bid.sequence < before)
            .take(page_size + 1)
            .collect();
        let (bids, next_page_token) = if bids.len() > page_size {
            let page: Vec<pb::Bid> = bids.into_iter().take(page_size).collect();
            let token = page
                .last()
                .map(|bid| bid.sequence.to_string())
                .unwrap_or_default();
            (page, token)
        } else {
            (bids, String::new())
        };
        Ok(Response::new(pb::ListBidsResponse {
            bids,
            next_page_token,
        }))
    }

    /// `RetractBid`: admins only; the bidder's maximum is cancelled and the
    /// engine recomputes price and leader from the remaining bids.
    pub async fn retract_bid(
        &self,
        request: Request<pb::RetractBidRequest>,
    ) -> Result<Response<pb::RetractBidResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_admin()?;
        let request = request.into_inner();
        let auction_id = convert::uuid("auction_id", &request.auction_id).map_err(refused)?;
        let bid = convert::uuid("bid_id", &request.bid_id).map_err(refused)?;
        let events = self.all_events(auction_id).await?;
        let bidder = crate::history::bidder_of(auction_id, &events, bid).ok_or_else(|| {
            refused(crate::error::Refusal::new(
                tonic::Code::NotFound,
                "BID_NOT_FOUND",
                format!("no bid {bid} in auction {auction_id}"),
            ))
        })?;
        let actor = Actor::admin(convert::user_id(caller.user_id));
        let receipt = self
            .act(
                &caller,
                "RetractBid",
                &request.request_id,
                &request.auction_id,
                actor,
                Action::RetractBid { bidder, lot: None },
            )
            .await?;
        let (state, _) = convert::receipt_state(&receipt);
        let retracted = receipt.events.iter().find_map(|event| match event.kind {
            auction_engine::EventKind::BidRetracted { bidder: who, .. } if who == bidder => {
                Some(pb::Bid {
                    bid_id: bid.to_string(),
                    auction_id: auction_id.to_string(),
                    bidder: Some(convert::bidder(bidder)),
                    status: pb::BidStatus::Retracted as i32,
                    place_time: Some(convert::timestamp(event.at)),
                    sequence: convert::wire_sequence(event.seq),
                    retraction_reason: request.reason.clone(),
                    ..pb::Bid::default()
                })
            }
            _ => None,
        });
        Ok(Response::new(pb::RetractBidResponse {
            bid: retracted,
            state: Some(state),
        }))
    }

    /// `GetServerTime`: for clients to measure their offset and round trip.
    pub fn get_server_time(
        &self,
        request: Request<pb::GetServerTimeRequest>,
    ) -> Response<pb::GetServerTimeResponse> {
        let received = convert::timestamp(self.now());
        let client_send_time = request.into_inner().client_send_time;
        Response::new(pb::GetServerTimeResponse {
            client_send_time,
            server_receive_time: Some(received),
            server_send_time: Some(convert::timestamp(self.now())),
        })
    }

    /// `ListAuctions`: the running auctions (or those of the statuses asked
    /// for), soonest end first (live lots by session start, then lot
    /// number), keyset-paged on that order. Filtered after reading
    /// (statuses change in memory first); bounded: a few reads per call, and
    /// the token then resumes where the scan stopped.
    pub async fn list_auctions(
        &self,
        request: Request<pb::ListAuctionsRequest>,
    ) -> Result<Response<pb::ListAuctionsResponse>, Status> {
        let request = request.into_inner();
        let now_ms = self.now().unix_ms();
        // Like ListBids and ListMyBids: 0 or less is the default.
        let page_size = match request.page_size {
            size if size <= 0 => LIST_AUCTIONS_DEFAULT_PAGE,
            size => usize::try_from(size)
                .unwrap_or(LIST_AUCTIONS_MAX_PAGE)
                .min(LIST_AUCTIONS_MAX_PAGE),
        };
        let filters = list_auctions_fingerprint(&request);
        let mut cursor = match request.page_token.as_str() {
            "" => None,
            token => Some(
                decode_list_token(token, filters, now_ms)
                    .ok_or_else(|| refused(page_token_invalid()))?,
            ),
        };
        let wanted: Vec<i32> = if request.statuses.is_empty() {
            vec![
                pb::AuctionStatus::Open as i32,
                pb::AuctionStatus::Extended as i32,
            ]
        } else {
            request.statuses.clone()
        };
        let only_live = wanted.iter().all(|status| {
            [
                pb::AuctionStatus::Open as i32,
                pb::AuctionStatus::Extended as i32,
                pb::AuctionStatus::Scheduled as i32,
            ]
            .contains(status)
        });
        // The market feed's filter: the category anywhere in the auction's
        // path (so its descendants match), the formats, the live session.
        let filter = crate::market::Filter {
            category_ids: match request.category_id.trim() {
                "" => Vec::new(),
                category => vec![category.to_owned()],
            },
            formats: request.formats.clone(),
            event_types: Vec::new(),
            live_session_id: request.live_session_id.trim().to_owned(),
        };
        let seller = request.seller_id.trim();
        let read = u32::try_from(page_size).unwrap_or(u32::MAX);
        let mut auctions = Vec::new();
        let mut more = true;
        for _ in 0..LIST_AUCTIONS_READS {
            if !more || auctions.len() >= page_size {
                break;
            }
            let rows = self
                .log
                .list_auctions(cursor, only_live, read)
                .await
                .map_err(|error| Status::from(BiddingError::Unavailable(error)))?;
            more = rows.len() == read as usize;
            for row in rows {
                cursor = Some((row.order, row.auction_id));
                let metadata: Metadata = serde_json::from_str(&row.metadata).map_err(|error| {
                    Status::from(BiddingError::Internal(format!(
                        "metadata of auction {}: {error}",
                        row.auction_id
                    )))
                })?;
                let state = self.public_state(row.auction_id).await?;
                if wanted.contains(&state.status)
                    && filter.matches_auction(&state, &metadata.category_path_ids)
                    && (seller.is_empty() || state.seller_id == seller)
                {
                    auctions.push(state);
                    if auctions.len() >= page_size {
                        break;
                    }
                }
            }
        }
        let next_page_token = match cursor {
            Some(cursor) if more || auctions.len() >= page_size => {
                encode_list_token(now_ms, cursor, filters)
            }
            Some(_) | None => String::new(),
        };
        Ok(Response::new(pb::ListAuctionsResponse {
            auctions,
            next_page_token,
        }))
    }

    /// An auction's committed state: from its shard on this node, or (with
    /// the cross-node fan-out, when another node leads it) rebuilt from the
    /// log, which holds exactly what was committed.
    pub(crate) async fn committed(
        &self,
        auction_id: Uuid,
    ) -> Result<(auction_engine::AuctionView, Arc<Metadata>), Status> {
        let shard = Shards::shard_of(auction_id, self.shards.count());
        if self.fanout.is_some() && !self.shards.leads(shard) {
            return match shard::rebuild(&self.log, auction_id).await? {
                Some((auction, metadata, _)) => Ok((auction.view(), Arc::new(metadata))),
                None => Err(shard::not_found(auction_id).into()),
            };
        }
        let receipt = self
            .ask(auction_id, |reply| shard::Request::Read {
                auction_id,
                viewer: None,
                reply,
            })
            .await?;
        Ok((receipt.view, Arc::new(receipt.metadata)))
    }

    /// `WatchMarket`: the partners' feed, filtered, resumable; a fresh start
    /// or an unknown/too-old point gets a snapshot of every matching auction
    /// still scheduled or running (in chunks), then the items after it.
    pub async fn watch_market(
        &self,
        request: Request<pb::WatchMarketRequest>,
    ) -> Result<ReceiverStream<Result<pb::WatchMarketResponse, Status>>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_scope(Scope::MarketFeed)?;
        let request = request.into_inner();
        let filter = crate::market::Filter {
            category_ids: request.category_ids.clone(),
            formats: request.formats.clone(),
            event_types: request.event_types.clone(),
            live_session_id: request.live_session_id.trim().to_owned(),
        };
        let (start, live, latest) = self.market.subscribe(request.resume_after_sequence);
        let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let bidding = self.clone();
        let reason = if request.resume_after_sequence == 0 {
            pb::SnapshotReason::Initial
        } else {
            pb::SnapshotReason::ResumeTooOld
        };
        tokio::spawn(async move {
            bidding
                .pump_market(filter, start, live, latest, reason, sender)
                .await;
        });
        Ok(ReceiverStream::new(receiver))
    }

    /// Sends every matching scheduled or running auction as snapshot chunks
    /// reflecting feed position `position`.
    async fn market_snapshot(
        &self,
        filter: &crate::market::Filter,
        position: u64,
        reason: pb::SnapshotReason,
        sender: &tokio::sync::mpsc::Sender<Result<pb::WatchMarketResponse, Status>>,
    ) -> Result<(), ()> {
        const CHUNK: usize = 100;
        let mut matching = Vec::new();
        let mut cursor = None;
        loop {
            let ids = match self.log.list_auction_ids(cursor, true, 500).await {
                Ok(ids) => ids,
                Err(error) => {
                    let _ = sender
                        .send(Err(BiddingError::Unavailable(error).into()))
                        .await;
                    return Err(());
                }
            };
            let done = ids.len() < 500;
            for auction_id in ids {
                cursor = Some(auction_id);
                let Ok(receipt) = self
                    .ask(auction_id, |reply| shard::Request::Read {
                        auction_id,
                        viewer: None,
                        reply,
                    })
                    .await
                else {
                    continue;
                };
                let (state, _) = convert::receipt_state(&receipt);
                if !receipt.view.status.is_finished()
                    && filter.matches_auction(&state, &receipt.metadata.category_path_ids)
                {
                    matching.push(state);
                }
            }
            if done {
                break;
            }
        }
        let chunks: Vec<Vec<pb::AuctionState>> = if matching.is_empty() {
            vec![Vec::new()]
        } else {
            matching
                .chunks(CHUNK)
                .map(<[pb::AuctionState]>::to_vec)
                .collect()
        };
        let count = chunks.len();
        for (index, auctions) in chunks.into_iter().enumerate() {
            let message = pb::watch_market_response::Message::Snapshot(pb::MarketSnapshot {
                reason: reason as i32,
                sequence: position,
                auctions,
                last_chunk: index + 1 == count,
            });
            if sender
                .send(Ok(pb::WatchMarketResponse {
                    message: Some(message),
                }))
                .await
                .is_err()
            {
                return Err(());
            }
        }
        Ok(())
    }

    async fn pump_market(
        &self,
        filter: crate::market::Filter,
        start: crate::market::Start,
        mut live: broadcast::Receiver<Arc<crate::market::MarketItem>>,
        latest: u64,
        reason: pb::SnapshotReason,
        sender: tokio::sync::mpsc::Sender<Result<pb::WatchMarketResponse, Status>>,
    ) {
        use pb::watch_market_response::Message;
        let event = |item: &crate::market::MarketItem| pb::WatchMarketResponse {
            message: Some(Message::Event(pb::MarketEvent {
                sequence: item.sequence,
                event_time: Some(convert::timestamp(item.at)),
                event_type: item.event_type as i32,
                state: Some(item.state.clone()),
                auction_sequence: item.auction_sequence,
            })),
        };
        let heartbeat = |position: u64, now: Timestamp| pb::WatchMarketResponse {
            message: Some(Message::Heartbeat(pb::StreamHeartbeat {
                server_time: Some(convert::timestamp(now)),
                latest_sequence: position,
            })),
        };
        // Items at or below `position` are covered (sent, filtered out, or in
        // the snapshot); the live receiver may repeat some, which are skipped.
        let mut position = latest;
        match start {
            crate::market::Start::Resync => {
                if self
                    .market_snapshot(&filter, latest, reason, &sender)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            crate::market::Start::Resume(items) => {
                if sender
                    .send(Ok(heartbeat(latest, self.now())))
                    .await
                    .is_err()
                {
                    return;
                }
                for item in items.iter().filter(|item| item.sequence <= latest) {
                    if filter.matches(item) && sender.send(Ok(event(item))).await.is_err() {
                        return;
                    }
                }
            }
        }
        loop {
            tokio::select! {
                () = self.shutdown.wait() => {
                    let _ = sender.send(Err(BiddingError::ShuttingDown.into())).await;
                    return;
                }
                received = live.recv() => match received {
                    Ok(item) => {
                        if item.sequence <= position {
                            continue;
                        }
                        position = item.sequence;
                        if filter.matches(&item) && sender.send(Ok(event(&item))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        position = self.market.latest();
                        if self.market_snapshot(&filter, position, pb::SnapshotReason::SlowConsumer, &sender).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep(HEARTBEAT) => {
                    if sender.send(Ok(heartbeat(position, self.now()))).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    pub(crate) fn snapshot(
        &self,
        auction_id: Uuid,
        view: &auction_engine::AuctionView,
        metadata: &Metadata,
        reason: pb::SnapshotReason,
    ) -> pb::AuctionSnapshot {
        pb::AuctionSnapshot {
            reason: reason as i32,
            state: Some(convert::state(auction_id, view, metadata, self.now())),
            recent_bids: Vec::new(),
        }
    }

    pub(crate) fn heartbeat(&self, latest: u64) -> pb::WatchAuctionResponse {
        pb::WatchAuctionResponse {
            message: Some(pb::watch_auction_response::Message::Heartbeat(
                pb::StreamHeartbeat {
                    server_time: Some(convert::timestamp(self.now())),
                    latest_sequence: latest,
                },
            )),
        }
    }
}

/// An engine user id for a caller (for tests and tools).
pub fn engine_user(caller: &Caller) -> UserId {
    convert::user_id(caller.user_id)
}

/// A stable fingerprint (FNV-1a) of ListAuctions' filters, bound into its
/// page tokens: the contract refuses a token with other filters.
fn list_auctions_fingerprint(request: &pb::ListAuctionsRequest) -> u64 {
    let sorted = |values: &[i32]| {
        let mut values = values.to_vec();
        values.sort_unstable();
        values.dedup();
        values
    };
    let mut bytes = Vec::new();
    for value in sorted(&request.statuses) {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes.push(0xff);
    for value in sorted(&request.formats) {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    for text in [
        request.category_id.trim(),
        request.live_session_id.trim(),
        request.seller_id.trim(),
    ] {
        // 0xff never occurs in UTF-8: the fields cannot run into each other.
        bytes.push(0xff);
        bytes.extend_from_slice(text.as_bytes());
    }
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash: u64, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `v1.<issued ms>.<end ms>.<lot number>.<auction id>.<filters>`: the last
/// auction read, in ListAuctions' order.
fn encode_list_token(
    issued_ms: i64,
    (order, auction_id): (ListOrder, Uuid),
    filters: u64,
) -> String {
    format!(
        "v1.{issued_ms}.{}.{}.{}.{filters:x}",
        order.end_ms,
        order.lot_number,
        auction_id.simple()
    )
}

/// The cursor of a ListAuctions token; `None` when it is not one we issued,
/// was issued for other filters, or expired.
fn decode_list_token(token: &str, filters: u64, now_ms: i64) -> Option<(ListOrder, Uuid)> {
    let parts: Vec<&str> = token.split('.').collect();
    let ["v1", issued, end_ms, lot_number, auction_id, fingerprint] = parts.as_slice() else {
        return None;
    };
    let issued: i64 = issued.parse().ok()?;
    let order = ListOrder {
        end_ms: end_ms.parse().ok()?,
        lot_number: lot_number.parse().ok()?,
    };
    let auction_id = Uuid::try_parse(auction_id).ok()?;
    let fingerprint = u64::from_str_radix(fingerprint, 16).ok()?;
    (fingerprint == filters && now_ms.saturating_sub(issued) <= LIST_TOKEN_TTL_MS)
        .then_some((order, auction_id))
}

fn page_token_invalid() -> crate::error::Refusal {
    let mut refusal = crate::error::Refusal::new(
        tonic::Code::InvalidArgument,
        "PAGE_TOKEN_INVALID",
        "page_token is not one we issued",
    );
    refusal
        .metadata
        .insert("field".to_owned(), "page_token".to_owned());
    refusal
}

//! The `auction.v1.BiddingService` gRPC surface. Every RPC of the contract is
//! here; the ones not built yet answer UNIMPLEMENTED (reason
//! `NOT_IMPLEMENTED`, tracking issue 5) and are listed as such in the
//! README's status table.

use auction_proto::v1::bidding_service_server::BiddingService;
use auction_proto::v1::{
    AcceptDutchPriceRequest, AcceptDutchPriceResponse, BuyItNowRequest, BuyItNowResponse,
    CallFairWarningRequest, CallFairWarningResponse, CancelAuctionRequest, CancelAuctionResponse,
    CreateAuctionRequest, CreateAuctionResponse, GetAuctionStateRequest, GetAuctionStateResponse,
    GetServerTimeRequest, GetServerTimeResponse, HammerLotRequest, HammerLotResponse,
    ListAuctionsRequest, ListAuctionsResponse, ListBidsRequest, ListBidsResponse,
    ListMyBidsRequest, ListMyBidsResponse, OpenLotRequest, OpenLotResponse, PassLotRequest,
    PassLotResponse, PlaceAbsenteeBidRequest, PlaceAbsenteeBidResponse, PlaceBidRequest,
    PlaceBidResponse, PlaceSealedBidRequest, PlaceSealedBidResponse, ReopenLotRequest,
    ReopenLotResponse, RetractBidRequest, RetractBidResponse, SetMaxBidRequest, SetMaxBidResponse,
    UndoLastBidRequest, UndoLastBidResponse, UpdateAuctionRequest, UpdateAuctionResponse,
    WatchAuctionRequest, WatchAuctionResponse, WatchMarketRequest, WatchMarketResponse,
    WatchMyActivityRequest, WatchMyActivityResponse, WithdrawSealedBidRequest,
    WithdrawSealedBidResponse,
};
use tonic::{Request, Response, Status};

use crate::Service;

/// The stream type of every server-streaming RPC of this service.
type ResponseStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves a unary call about one auction here, or forwards it to the
/// leader of the auction's shard.
macro_rules! routed {
    ($self:ident, $request:ident, $method:ident, $auction_id:expr) => {{
        let auction_id: String = $auction_id;
        match $self.bidding.forward_target(&$request, &auction_id)? {
            Some(mut leader) => leader.$method($self.bidding.forwarded($request)).await,
            None => $self.bidding.$method($request).await,
        }
    }};
}

#[tonic::async_trait]
impl BiddingService for Service {
    async fn create_auction(
        &self,
        request: Request<CreateAuctionRequest>,
    ) -> Result<Response<CreateAuctionResponse>, Status> {
        let auction_id = auction_platform::auth::caller(&request)
            .ok()
            .and_then(|caller| crate::rpc::created_auction_id(&caller, request.get_ref()).ok())
            .map(|id| id.to_string())
            .unwrap_or_default();
        routed!(self, request, create_auction, auction_id)
    }

    async fn update_auction(
        &self,
        request: Request<UpdateAuctionRequest>,
    ) -> Result<Response<UpdateAuctionResponse>, Status> {
        routed!(
            self,
            request,
            update_auction,
            request.get_ref().auction_id.clone()
        )
    }

    async fn cancel_auction(
        &self,
        request: Request<CancelAuctionRequest>,
    ) -> Result<Response<CancelAuctionResponse>, Status> {
        routed!(
            self,
            request,
            cancel_auction,
            request.get_ref().auction_id.clone()
        )
    }

    async fn get_auction_state(
        &self,
        request: Request<GetAuctionStateRequest>,
    ) -> Result<Response<GetAuctionStateResponse>, Status> {
        routed!(
            self,
            request,
            get_auction_state,
            request.get_ref().auction_id.clone()
        )
    }

    async fn list_auctions(
        &self,
        request: Request<ListAuctionsRequest>,
    ) -> Result<Response<ListAuctionsResponse>, Status> {
        self.bidding.list_auctions(request).await
    }

    async fn list_bids(
        &self,
        request: Request<ListBidsRequest>,
    ) -> Result<Response<ListBidsResponse>, Status> {
        self.bidding.list_bids(request).await
    }

    async fn list_my_bids(
        &self,
        request: Request<ListMyBidsRequest>,
    ) -> Result<Response<ListMyBidsResponse>, Status> {
        // Any node: the per-user index is in the shared database, and each
        // auction's state comes from its shard's leader.
        self.bidding.list_my_bids(request).await
    }

    async fn place_bid(
        &self,
        request: Request<PlaceBidRequest>,
    ) -> Result<Response<PlaceBidResponse>, Status> {
        routed!(
            self,
            request,
            place_bid,
            request.get_ref().auction_id.clone()
        )
    }

    async fn set_max_bid(
        &self,
        request: Request<SetMaxBidRequest>,
    ) -> Result<Response<SetMaxBidResponse>, Status> {
        routed!(
            self,
            request,
            set_max_bid,
            request.get_ref().auction_id.clone()
        )
    }

    async fn place_sealed_bid(
        &self,
        request: Request<PlaceSealedBidRequest>,
    ) -> Result<Response<PlaceSealedBidResponse>, Status> {
        routed!(
            self,
            request,
            place_sealed_bid,
            request.get_ref().auction_id.clone()
        )
    }

    async fn withdraw_sealed_bid(
        &self,
        request: Request<WithdrawSealedBidRequest>,
    ) -> Result<Response<WithdrawSealedBidResponse>, Status> {
        routed!(
            self,
            request,
            withdraw_sealed_bid,
            request.get_ref().auction_id.clone()
        )
    }

    async fn accept_dutch_price(
        &self,
        request: Request<AcceptDutchPriceRequest>,
    ) -> Result<Response<AcceptDutchPriceResponse>, Status> {
        routed!(
            self,
            request,
            accept_dutch_price,
            request.get_ref().auction_id.clone()
        )
    }

    async fn buy_it_now(
        &self,
        request: Request<BuyItNowRequest>,
    ) -> Result<Response<BuyItNowResponse>, Status> {
        routed!(
            self,
            request,
            buy_it_now,
            request.get_ref().auction_id.clone()
        )
    }

    async fn place_absentee_bid(
        &self,
        request: Request<PlaceAbsenteeBidRequest>,
    ) -> Result<Response<PlaceAbsenteeBidResponse>, Status> {
        routed!(
            self,
            request,
            place_absentee_bid,
            request.get_ref().auction_id.clone()
        )
    }

    async fn open_lot(
        &self,
        request: Request<OpenLotRequest>,
    ) -> Result<Response<OpenLotResponse>, Status> {
        routed!(
            self,
            request,
            open_lot,
            request.get_ref().auction_id.clone()
        )
    }

    async fn call_fair_warning(
        &self,
        request: Request<CallFairWarningRequest>,
    ) -> Result<Response<CallFairWarningResponse>, Status> {
        routed!(
            self,
            request,
            call_fair_warning,
            request.get_ref().auction_id.clone()
        )
    }

    async fn hammer_lot(
        &self,
        request: Request<HammerLotRequest>,
    ) -> Result<Response<HammerLotResponse>, Status> {
        routed!(
            self,
            request,
            hammer_lot,
            request.get_ref().auction_id.clone()
        )
    }

    async fn pass_lot(
        &self,
        request: Request<PassLotRequest>,
    ) -> Result<Response<PassLotResponse>, Status> {
        routed!(
            self,
            request,
            pass_lot,
            request.get_ref().auction_id.clone()
        )
    }

    async fn reopen_lot(
        &self,
        request: Request<ReopenLotRequest>,
    ) -> Result<Response<ReopenLotResponse>, Status> {
        routed!(
            self,
            request,
            reopen_lot,
            request.get_ref().auction_id.clone()
        )
    }

    async fn undo_last_bid(
        &self,
        request: Request<UndoLastBidRequest>,
    ) -> Result<Response<UndoLastBidResponse>, Status> {
        routed!(
            self,
            request,
            undo_last_bid,
            request.get_ref().auction_id.clone()
        )
    }

    async fn retract_bid(
        &self,
        request: Request<RetractBidRequest>,
    ) -> Result<Response<RetractBidResponse>, Status> {
        routed!(
            self,
            request,
            retract_bid,
            request.get_ref().auction_id.clone()
        )
    }

    async fn get_server_time(
        &self,
        request: Request<GetServerTimeRequest>,
    ) -> Result<Response<GetServerTimeResponse>, Status> {
        Ok(self.bidding.get_server_time(request))
    }

    type WatchAuctionStream = ResponseStream<WatchAuctionResponse>;
    /// Served by [`crate::watch::Routes`] with shared frames; this is the
    /// same stream as messages, for a caller of the trait itself.
    async fn watch_auction(
        &self,
        request: Request<WatchAuctionRequest>,
    ) -> Result<Response<Self::WatchAuctionStream>, Status> {
        use tokio_stream::StreamExt as _;
        let response = self.watch_frames(request).await?;
        Ok(response.map(|frames| {
            let messages: Self::WatchAuctionStream =
                Box::pin(frames.map(|frame| frame.and_then(crate::watch::Frame::into_message)));
            messages
        }))
    }

    type WatchMyActivityStream = ResponseStream<WatchMyActivityResponse>;
    async fn watch_my_activity(
        &self,
        request: Request<WatchMyActivityRequest>,
    ) -> Result<Response<Self::WatchMyActivityStream>, Status> {
        // Any node: the stream reads the caller's activity log from the
        // shared database.
        let stream = self.bidding.watch_my_activity(request).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchMarketStream = ResponseStream<WatchMarketResponse>;
    async fn watch_market(
        &self,
        request: Request<WatchMarketRequest>,
    ) -> Result<Response<Self::WatchMarketStream>, Status> {
        let stream = self.bidding.watch_market(request).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}

impl Service {
    /// `WatchAuction` as frames (see [`crate::watch`]).
    pub(crate) async fn watch_frames(
        &self,
        request: Request<WatchAuctionRequest>,
    ) -> Result<Response<crate::watch::FrameStream>, Status> {
        use tokio_stream::StreamExt as _;
        let auction_id = request.get_ref().auction_id.clone();
        // With the cross-node fan-out (Redis) any node serves a watcher;
        // without it, only the leader's hub has the live events.
        if self.bidding.fanout.is_none()
            && let Some(mut leader) = self.bidding.forward_target(&request, &auction_id)?
        {
            // A stream that breaks when leadership moves is resumed by the
            // client after its last sequence, from the log, on any node.
            let (metadata, stream, extensions) = leader
                .watch_auction(self.bidding.forwarded(request))
                .await?
                .into_parts();
            let stream: crate::watch::FrameStream =
                Box::pin(stream.map(|message| message.map(crate::watch::Frame::from)));
            return Ok(Response::from_parts(metadata, stream, extensions));
        }
        Ok(Response::new(self.bidding.watch_auction(request).await?))
    }
}

//! The `auction.v1.BiddingService` gRPC surface. Every RPC of the contract is
//! here; the ones not built yet answer UNIMPLEMENTED (reason
//! `NOT_IMPLEMENTED`, tracking issue 5) and are listed as such in the
//! README's status table.

use auction_platform::unimplemented;
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

#[tonic::async_trait]
impl BiddingService for Service {
    async fn create_auction(
        &self,
        _request: Request<CreateAuctionRequest>,
    ) -> Result<Response<CreateAuctionResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/CreateAuction", 5))
    }

    async fn update_auction(
        &self,
        _request: Request<UpdateAuctionRequest>,
    ) -> Result<Response<UpdateAuctionResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/UpdateAuction", 5))
    }

    async fn cancel_auction(
        &self,
        _request: Request<CancelAuctionRequest>,
    ) -> Result<Response<CancelAuctionResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/CancelAuction", 5))
    }

    async fn get_auction_state(
        &self,
        _request: Request<GetAuctionStateRequest>,
    ) -> Result<Response<GetAuctionStateResponse>, Status> {
        Err(unimplemented(
            "auction.v1.BiddingService/GetAuctionState",
            5,
        ))
    }

    async fn list_auctions(
        &self,
        _request: Request<ListAuctionsRequest>,
    ) -> Result<Response<ListAuctionsResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/ListAuctions", 5))
    }

    async fn list_bids(
        &self,
        _request: Request<ListBidsRequest>,
    ) -> Result<Response<ListBidsResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/ListBids", 5))
    }

    async fn list_my_bids(
        &self,
        _request: Request<ListMyBidsRequest>,
    ) -> Result<Response<ListMyBidsResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/ListMyBids", 5))
    }

    async fn place_bid(
        &self,
        _request: Request<PlaceBidRequest>,
    ) -> Result<Response<PlaceBidResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/PlaceBid", 5))
    }

    async fn set_max_bid(
        &self,
        _request: Request<SetMaxBidRequest>,
    ) -> Result<Response<SetMaxBidResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/SetMaxBid", 5))
    }

    async fn place_sealed_bid(
        &self,
        _request: Request<PlaceSealedBidRequest>,
    ) -> Result<Response<PlaceSealedBidResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/PlaceSealedBid", 5))
    }

    async fn withdraw_sealed_bid(
        &self,
        _request: Request<WithdrawSealedBidRequest>,
    ) -> Result<Response<WithdrawSealedBidResponse>, Status> {
        Err(unimplemented(
            "auction.v1.BiddingService/WithdrawSealedBid",
            5,
        ))
    }

    async fn accept_dutch_price(
        &self,
        _request: Request<AcceptDutchPriceRequest>,
    ) -> Result<Response<AcceptDutchPriceResponse>, Status> {
        Err(unimplemented(
            "auction.v1.BiddingService/AcceptDutchPrice",
            5,
        ))
    }

    async fn buy_it_now(
        &self,
        _request: Request<BuyItNowRequest>,
    ) -> Result<Response<BuyItNowResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/BuyItNow", 5))
    }

    async fn place_absentee_bid(
        &self,
        _request: Request<PlaceAbsenteeBidRequest>,
    ) -> Result<Response<PlaceAbsenteeBidResponse>, Status> {
        Err(unimplemented(
            "auction.v1.BiddingService/PlaceAbsenteeBid",
            5,
        ))
    }

    async fn open_lot(
        &self,
        _request: Request<OpenLotRequest>,
    ) -> Result<Response<OpenLotResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/OpenLot", 5))
    }

    async fn call_fair_warning(
        &self,
        _request: Request<CallFairWarningRequest>,
    ) -> Result<Response<CallFairWarningResponse>, Status> {
        Err(unimplemented(
            "auction.v1.BiddingService/CallFairWarning",
            5,
        ))
    }

    async fn hammer_lot(
        &self,
        _request: Request<HammerLotRequest>,
    ) -> Result<Response<HammerLotResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/HammerLot", 5))
    }

    async fn pass_lot(
        &self,
        _request: Request<PassLotRequest>,
    ) -> Result<Response<PassLotResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/PassLot", 5))
    }

    async fn reopen_lot(
        &self,
        _request: Request<ReopenLotRequest>,
    ) -> Result<Response<ReopenLotResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/ReopenLot", 5))
    }

    async fn undo_last_bid(
        &self,
        _request: Request<UndoLastBidRequest>,
    ) -> Result<Response<UndoLastBidResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/UndoLastBid", 5))
    }

    async fn retract_bid(
        &self,
        _request: Request<RetractBidRequest>,
    ) -> Result<Response<RetractBidResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/RetractBid", 5))
    }

    async fn get_server_time(
        &self,
        _request: Request<GetServerTimeRequest>,
    ) -> Result<Response<GetServerTimeResponse>, Status> {
        Err(unimplemented("auction.v1.BiddingService/GetServerTime", 5))
    }

    type WatchAuctionStream = ResponseStream<WatchAuctionResponse>;
    async fn watch_auction(
        &self,
        _request: Request<WatchAuctionRequest>,
    ) -> Result<Response<Self::WatchAuctionStream>, Status> {
        Err(unimplemented("auction.v1.BiddingService/WatchAuction", 5))
    }

    type WatchMyActivityStream = ResponseStream<WatchMyActivityResponse>;
    async fn watch_my_activity(
        &self,
        _request: Request<WatchMyActivityRequest>,
    ) -> Result<Response<Self::WatchMyActivityStream>, Status> {
        Err(unimplemented(
            "auction.v1.BiddingService/WatchMyActivity",
            5,
        ))
    }

    type WatchMarketStream = ResponseStream<WatchMarketResponse>;
    async fn watch_market(
        &self,
        _request: Request<WatchMarketRequest>,
    ) -> Result<Response<Self::WatchMarketStream>, Status> {
        Err(unimplemented("auction.v1.BiddingService/WatchMarket", 5))
    }
}

//! The `auction.v1.PaymentService` gRPC surface. Every RPC of the contract is
//! here; the ones not built yet answer UNIMPLEMENTED (reason
//! `NOT_IMPLEMENTED`, tracking issue 9) and are listed as such in the
//! README's status table.

use auction_platform::unimplemented;
use auction_proto::v1::payment_service_server::PaymentService;
use auction_proto::v1::{
    AcceptSecondChanceOfferRequest, AcceptSecondChanceOfferResponse, ConfirmReceiptRequest,
    ConfirmReceiptResponse, DeclineSecondChanceOfferRequest, DeclineSecondChanceOfferResponse,
    GetAccountBalanceRequest, GetAccountBalanceResponse, GetDisputeRequest, GetDisputeResponse,
    GetOrderRequest, GetOrderResponse, ListDisputesRequest, ListDisputesResponse,
    ListLedgerEntriesRequest, ListLedgerEntriesResponse, ListOrdersRequest, ListOrdersResponse,
    ListPayoutsRequest, ListPayoutsResponse, ListSecondChanceOffersRequest,
    ListSecondChanceOffersResponse, MarkShippedRequest, MarkShippedResponse,
    OfferSecondChanceRequest, OfferSecondChanceResponse, OpenDisputeRequest, OpenDisputeResponse,
    PayOrderRequest, PayOrderResponse, ReconcileLedgerRequest, ReconcileLedgerResponse,
    RefundOrderRequest, RefundOrderResponse, ResolveDisputeRequest, ResolveDisputeResponse,
    RespondToDisputeRequest, RespondToDisputeResponse,
};
use tonic::{Request, Response, Status};

use crate::Service;

#[tonic::async_trait]
impl PaymentService for Service {
    async fn get_order(
        &self,
        _request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/GetOrder", 9))
    }

    async fn list_orders(
        &self,
        _request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/ListOrders", 9))
    }

    async fn pay_order(
        &self,
        _request: Request<PayOrderRequest>,
    ) -> Result<Response<PayOrderResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/PayOrder", 9))
    }

    async fn mark_shipped(
        &self,
        _request: Request<MarkShippedRequest>,
    ) -> Result<Response<MarkShippedResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/MarkShipped", 9))
    }

    async fn confirm_receipt(
        &self,
        _request: Request<ConfirmReceiptRequest>,
    ) -> Result<Response<ConfirmReceiptResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/ConfirmReceipt", 9))
    }

    async fn refund_order(
        &self,
        _request: Request<RefundOrderRequest>,
    ) -> Result<Response<RefundOrderResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/RefundOrder", 9))
    }

    async fn open_dispute(
        &self,
        _request: Request<OpenDisputeRequest>,
    ) -> Result<Response<OpenDisputeResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/OpenDispute", 9))
    }

    async fn respond_to_dispute(
        &self,
        _request: Request<RespondToDisputeRequest>,
    ) -> Result<Response<RespondToDisputeResponse>, Status> {
        Err(unimplemented(
            "auction.v1.PaymentService/RespondToDispute",
            9,
        ))
    }

    async fn resolve_dispute(
        &self,
        _request: Request<ResolveDisputeRequest>,
    ) -> Result<Response<ResolveDisputeResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/ResolveDispute", 9))
    }

    async fn get_dispute(
        &self,
        _request: Request<GetDisputeRequest>,
    ) -> Result<Response<GetDisputeResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/GetDispute", 9))
    }

    async fn list_disputes(
        &self,
        _request: Request<ListDisputesRequest>,
    ) -> Result<Response<ListDisputesResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/ListDisputes", 9))
    }

    async fn offer_second_chance(
        &self,
        _request: Request<OfferSecondChanceRequest>,
    ) -> Result<Response<OfferSecondChanceResponse>, Status> {
        Err(unimplemented(
            "auction.v1.PaymentService/OfferSecondChance",
            9,
        ))
    }

    async fn accept_second_chance_offer(
        &self,
        _request: Request<AcceptSecondChanceOfferRequest>,
    ) -> Result<Response<AcceptSecondChanceOfferResponse>, Status> {
        Err(unimplemented(
            "auction.v1.PaymentService/AcceptSecondChanceOffer",
            9,
        ))
    }

    async fn decline_second_chance_offer(
        &self,
        _request: Request<DeclineSecondChanceOfferRequest>,
    ) -> Result<Response<DeclineSecondChanceOfferResponse>, Status> {
        Err(unimplemented(
            "auction.v1.PaymentService/DeclineSecondChanceOffer",
            9,
        ))
    }

    async fn list_second_chance_offers(
        &self,
        _request: Request<ListSecondChanceOffersRequest>,
    ) -> Result<Response<ListSecondChanceOffersResponse>, Status> {
        Err(unimplemented(
            "auction.v1.PaymentService/ListSecondChanceOffers",
            9,
        ))
    }

    async fn list_ledger_entries(
        &self,
        _request: Request<ListLedgerEntriesRequest>,
    ) -> Result<Response<ListLedgerEntriesResponse>, Status> {
        Err(unimplemented(
            "auction.v1.PaymentService/ListLedgerEntries",
            9,
        ))
    }

    async fn get_account_balance(
        &self,
        _request: Request<GetAccountBalanceRequest>,
    ) -> Result<Response<GetAccountBalanceResponse>, Status> {
        Err(unimplemented(
            "auction.v1.PaymentService/GetAccountBalance",
            9,
        ))
    }

    async fn list_payouts(
        &self,
        _request: Request<ListPayoutsRequest>,
    ) -> Result<Response<ListPayoutsResponse>, Status> {
        Err(unimplemented("auction.v1.PaymentService/ListPayouts", 9))
    }

    async fn reconcile_ledger(
        &self,
        _request: Request<ReconcileLedgerRequest>,
    ) -> Result<Response<ReconcileLedgerResponse>, Status> {
        Err(unimplemented(
            "auction.v1.PaymentService/ReconcileLedger",
            9,
        ))
    }
}

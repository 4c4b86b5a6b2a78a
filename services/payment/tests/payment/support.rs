//! Shared set-up: an app with short payment periods, actors with tokens,
//! auction events published on the app's own bus, and waiting helpers
//! (bounded, polling the served state rather than sleeping blindly).

use std::time::Duration;

use auction_platform::auth::Role;
use auction_platform::bus::{self, Envelope, TOPIC_AUCTION};
use auction_platform::config::Config;
use auction_proto::v1 as pb;
use auction_proto::v1::payment_service_client::PaymentServiceClient;
use auction_testkit::{Backend, TestApp, spawn_app_with, with_token};
use tonic::transport::Channel;
use uuid::Uuid;

/// The longest any test waits for an asynchronous change.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

/// The default settings of the tests: a fast background task, other
/// periods long unless a test shortens them, no per-user rate limit.
pub fn fast(config: &mut Config) {
    // The tests poll and retry fast from one account: the gateway's
    // per-user rate limit is not what they test.
    config.gateway.user_requests_per_second = 100_000;
    config.gateway.user_burst = 100_000;
    config.payment.scan_interval_ms = 50;
    config.payment.buyers_premium_bps = 500;
    config.payment.seller_commission_bps = 1_000;
    config.payment.buyer_service_fee = "1.50".to_owned();
}

pub struct World {
    pub app: TestApp,
    pub client: PaymentServiceClient<Channel>,
    pub seller: Uuid,
    pub seller_token: String,
    pub buyer: Uuid,
    pub buyer_token: String,
    pub admin_token: String,
    pub stranger_token: String,
}

pub async fn world(backend: Backend, configure: impl FnOnce(&mut Config)) -> World {
    let app = spawn_app_with(backend, |config| {
        fast(config);
        configure(config);
    })
    .await;
    let client = PaymentServiceClient::new(app.channel().await);
    let seller = Uuid::now_v7();
    let buyer = Uuid::now_v7();
    let admin = Uuid::now_v7();
    World {
        seller_token: app.access_token(seller, &[Role::Seller, Role::Bidder]),
        buyer_token: app.access_token(buyer, &[Role::Bidder]),
        admin_token: app.access_token(admin, &[Role::Admin]),
        stranger_token: app.access_token(Uuid::now_v7(), &[Role::Bidder]),
        app,
        client,
        seller,
        buyer,
    }
}

pub fn auction_event(
    auction_id: Uuid,
    seller: Uuid,
    sequence: u64,
    kind: pb::bus_auction_event::Kind,
) -> Envelope {
    let payload = pb::BusAuctionEvent {
        auction_id: auction_id.to_string(),
        sequence,
        event_time: Some(bus::timestamp_from_ms(auction_platform::now_ms())),
        seller_id: seller.to_string(),
        title: "A brass lamp".to_owned(),
        kind: Some(kind),
    };
    Envelope::new(
        "bidding",
        TOPIC_AUCTION,
        auction_id.to_string(),
        auction_platform::now_ms(),
        &payload,
    )
}

/// What the bidding service publishes when `bidder` bids with own amount `amount`.
pub fn bid(auction_id: Uuid, seller: Uuid, sequence: u64, bidder: Uuid, amount: &str) -> Envelope {
    auction_event(
        auction_id,
        seller,
        sequence,
        pb::bus_auction_event::Kind::BidPlaced(pb::BusAuctionBidPlaced {
            bidder_id: bidder.to_string(),
            bid_amount: Some(usd(amount)),
            ..pb::BusAuctionBidPlaced::default()
        }),
    )
}

/// What the bidding service publishes when an auction sells.
pub fn sold(
    auction_id: Uuid,
    seller: Uuid,
    sequence: u64,
    awards: &[(Uuid, &str, u32)],
) -> Envelope {
    auction_event(
        auction_id,
        seller,
        sequence,
        pb::bus_auction_event::Kind::Sold(pb::BusAuctionSold {
            awards: awards
                .iter()
                .map(|(winner, price, quantity)| pb::BusAuctionAward {
                    winner_id: winner.to_string(),
                    price: Some(usd(price)),
                    quantity: *quantity,
                })
                .collect(),
            final_price: awards.first().map(|(_, price, _)| usd(price)),
        }),
    )
}

pub async fn publish(app: &TestApp, envelopes: &[Envelope]) {
    bus::for_process(&app.config)
        .unwrap()
        .publish(envelopes)
        .await
        .unwrap();
}

/// The caller's orders (as buyer or seller).
pub async fn orders(world: &World, token: &str, auction_id: Option<Uuid>) -> Vec<pb::Order> {
    world
        .client
        .clone()
        .list_orders(with_token(
            pb::ListOrdersRequest {
                auction_id: auction_id.map(|id| id.to_string()).unwrap_or_default(),
                page_size: 100,
                ..pb::ListOrdersRequest::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .orders
}

/// Waits until `token`'s orders of `auction_id` number at least `count`.
pub async fn wait_orders(
    world: &World,
    token: &str,
    auction_id: Uuid,
    count: usize,
) -> Vec<pb::Order> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = orders(world, token, Some(auction_id)).await;
        if found.len() >= count {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no order for auction {auction_id} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Publishes a one-award close at `price` to the world's buyer and waits
/// for the order.
pub async fn new_order(world: &World, price: &str) -> pb::Order {
    let auction = Uuid::now_v7();
    publish(
        &world.app,
        &[sold(auction, world.seller, 9, &[(world.buyer, price, 1)])],
    )
    .await;
    wait_orders(world, &world.buyer_token, auction, 1)
        .await
        .remove(0)
}

pub async fn get_order(world: &World, order_id: &str) -> pb::GetOrderResponse {
    world
        .client
        .clone()
        .get_order(with_token(
            pb::GetOrderRequest {
                order_id: order_id.to_owned(),
            },
            &world.admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the order reaches `status`.
pub async fn wait_status(world: &World, order_id: &str, status: pb::OrderStatus) -> pb::Order {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let order = get_order(world, order_id).await.order.unwrap();
        if order.status == status as i32 {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {order_id} is {:?}, not {status:?}, after {WAIT:?}",
            pb::OrderStatus::try_from(order.status)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn pay_request(order: &pb::Order, token: &str, request_id: &str) -> pb::PayOrderRequest {
    pb::PayOrderRequest {
        request_id: request_id.to_owned(),
        order_id: order.order_id.clone(),
        payment_method_token: token.to_owned(),
        expected_amount: order.total_due.clone(),
    }
}

/// Pays `order` with the success card.
pub async fn pay(world: &World, order: &pb::Order) -> pb::PayOrderResponse {
    world
        .client
        .clone()
        .pay_order(with_token(
            pay_request(
                order,
                "tok_sandbox_success",
                &format!("pay-{}", Uuid::now_v7()),
            ),
            &world.buyer_token,
        ))
        .await
        .unwrap()
        .into_inner()
}

pub async fn ship(world: &World, order: &pb::Order) -> pb::Order {
    world
        .client
        .clone()
        .mark_shipped(with_token(
            pb::MarkShippedRequest {
                request_id: format!("ship-{}", Uuid::now_v7()),
                order_id: order.order_id.clone(),
                carrier: "DHL".to_owned(),
                tracking_number: "JD0123".to_owned(),
                tracking_url: "https://track.example/JD0123".to_owned(),
            },
            &world.seller_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

pub fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("auction-error-reason")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn amount(money: &Option<pb::Money>) -> String {
    money
        .as_ref()
        .map(|money| money.amount.clone())
        .unwrap_or_default()
}

pub async fn reconcile(world: &World) -> pb::ReconcileLedgerResponse {
    world
        .client
        .clone()
        .reconcile_ledger(with_token(
            pb::ReconcileLedgerRequest::default(),
            &world.admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Asserts the books balance: every currency nets to zero, every posting
/// balances, escrow equals the open holds.
pub async fn assert_balanced(world: &World) -> pb::ReconcileLedgerResponse {
    let report = reconcile(world).await;
    assert!(report.balanced, "the books do not balance: {report:#?}");
    for currency in &report.currencies {
        assert_eq!(
            currency.net.as_ref().unwrap().amount,
            "0.00",
            "{currency:#?}"
        );
        assert!(currency.postings_balanced);
        assert!(currency.escrow_matches_holds);
        assert!(currency.discrepancies.is_empty());
    }
    report
}

/// The ledger entries of one order (admin view).
pub async fn entries(world: &World, order_id: &str) -> Vec<pb::LedgerEntry> {
    world
        .client
        .clone()
        .list_ledger_entries(with_token(
            pb::ListLedgerEntriesRequest {
                order_id: order_id.to_owned(),
                ..pb::ListLedgerEntriesRequest::default()
            },
            &world.admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .entries
}

/// The balance of an account (admin view).
pub async fn balance(
    world: &World,
    account_type: pb::LedgerAccountType,
    owner: Option<Uuid>,
) -> String {
    world
        .client
        .clone()
        .get_account_balance(with_token(
            pb::GetAccountBalanceRequest {
                account: Some(pb::LedgerAccount {
                    account_type: account_type as i32,
                    owner_id: owner.map(|owner| owner.to_string()).unwrap_or_default(),
                    currency: "USD".to_owned(),
                }),
                as_of_time: None,
            },
            &world.admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap()
        .amount
}

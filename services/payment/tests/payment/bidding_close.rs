//! A real auction in the bidding service, closed by its timer, becomes
//! exactly one order; its runner-up's own maximum is the second-chance
//! price.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use auction_platform::Shutdown;
use auction_platform::auth::Role;
use auction_platform::bus::{
    self, BoxFuture, Envelope, HandleError, Handler, Subscription, TOPIC_AUCTION,
};
use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_testkit::{Backend, with_token};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::support::*;

/// Keeps the bidding service's sold events (a test consumer group).
struct SoldEvents(mpsc::UnboundedSender<Envelope>);

impl Handler for SoldEvents {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        if let Ok(event) = envelope.decode::<pb::BusAuctionEvent>()
            && matches!(event.kind, Some(pb::bus_auction_event::Kind::Sold(_)))
        {
            let _ = self.0.send(envelope.clone());
        }
        Box::pin(async { Ok(()) })
    }
}

// Proves an English auction created, bid on and closed in the bidding
// service produces exactly one order for the winner at the hammer price,
// also when the bidding service's close event is delivered again (same
// event id) and re-staged (new event id), and that after non-payment the seller's second-chance offer goes to the
// runner-up at the runner-up's own maximum.
#[tokio::test]
async fn a_real_auction_close_makes_exactly_one_order() {
    let world = world(Backend::Postgres, |config| {
        config.payment.payment_due_ms = 1_500;
    })
    .await;
    let (sender, mut sold_events) = mpsc::unbounded_channel();
    let shutdown = Shutdown::new();
    bus::for_process(&world.app.config).unwrap().subscribe(
        Subscription {
            group: "payment-test".to_owned(),
            topics: vec![TOPIC_AUCTION.to_owned()],
            shutdown: shutdown.clone(),
        },
        Arc::new(SoldEvents(sender)),
    );
    let mut bidding = BiddingServiceClient::new(world.app.channel().await);
    let carol = Uuid::now_v7();
    let carol_token = world.app.access_token(carol, &[Role::Bidder]);
    let now = SystemTime::now();
    let auction_id = Uuid::now_v7();
    bidding
        .create_auction(with_token(
            pb::CreateAuctionRequest {
                request_id: format!("create-{auction_id}"),
                auction_id: auction_id.to_string(),
                seller_id: world.seller.to_string(),
                seller_handle: "seller".to_owned(),
                title: "A real lot".to_owned(),
                parameters: Some(pb::AuctionParameters {
                    format: pb::AuctionFormat::English as i32,
                    format_parameters: Some(pb::auction_parameters::FormatParameters::English(
                        pb::EnglishParameters {
                            starting_price: Some(usd("10.00")),
                            // No soft close: the bids land near the end.
                            soft_close_window: Some(prost_types::Duration {
                                seconds: 0,
                                nanos: 0,
                            }),
                            ..pb::EnglishParameters::default()
                        },
                    )),
                }),
                start_time: Some(prost_types::Timestamp::from(now - Duration::from_secs(1))),
                end_time: Some(prost_types::Timestamp::from(now + Duration::from_secs(3))),
                ..pb::CreateAuctionRequest::default()
            },
            &world.admin_token,
        ))
        .await
        .unwrap();
    for (request_id, amount, token) in [
        ("bid-buyer", "150.00", &world.buyer_token),
        ("bid-carol", "120.00", &carol_token),
    ] {
        bidding
            .set_max_bid(with_token(
                pb::SetMaxBidRequest {
                    request_id: request_id.to_owned(),
                    auction_id: auction_id.to_string(),
                    max_amount: Some(usd(amount)),
                },
                token,
            ))
            .await
            .unwrap();
    }
    let orders = wait_orders(&world, &world.seller_token, auction_id, 1).await;
    let order = &orders[0];
    assert_eq!(order.buyer_id, world.buyer.to_string());
    assert_eq!(order.auction_id, auction_id.to_string());
    assert_eq!(order.title, "A real lot");
    let hammer = amount(&order.hammer_price);
    assert!(
        hammer.as_str() > "120.00" && hammer.as_str() <= "150.00",
        "{hammer}"
    );
    // The bidding service's own close event, delivered again and re-staged.
    let close = tokio::time::timeout(WAIT, sold_events.recv())
        .await
        .expect("the close on the bus")
        .unwrap();
    let mut restaged = close.clone();
    restaged.event_id = Uuid::now_v7();
    publish(&world.app, &[close, restaged]).await;
    // A marker close after those: when its order exists, every auction
    // event before it has been consumed.
    let marker = Uuid::now_v7();
    publish(
        &world.app,
        &[sold(marker, world.seller, 1, &[(world.buyer, "1.00", 1)])],
    )
    .await;
    wait_orders(&world, &world.seller_token, marker, 1).await;
    assert_eq!(
        super::support::orders(&world, &world.seller_token, Some(auction_id))
            .await
            .len(),
        1,
        "exactly one order for the close"
    );

    wait_status(&world, &order.order_id, pb::OrderStatus::Cancelled).await;
    let offer = world
        .client
        .clone()
        .offer_second_chance(with_token(
            pb::OfferSecondChanceRequest {
                request_id: "offer".to_owned(),
                order_id: order.order_id.clone(),
                expire_time: None,
            },
            &world.seller_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .offer
        .unwrap();
    assert_eq!(offer.recipient_id, carol.to_string());
    assert_eq!(offer.price, Some(usd("120.00")));
    shutdown.trigger();
    world.app.stop().await;
}

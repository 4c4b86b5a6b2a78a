//! Unpaid cancellation after the deadline and second-chance offers to the
//! next-highest bidders at their own last bids.

use auction_proto::v1 as pb;
use auction_testkit::{Backend, with_token};
use uuid::Uuid;

use crate::support::*;

// Proves an unpaid order is cancelled after its deadline, and the seller
// can offer the item to the next-highest bidder at that bidder's last bid;
// an accepted offer is a new order; a declined one lets the seller ask the
// next bidder; when nobody is left the offer is refused.
#[tokio::test]
async fn unpaid_order_is_cancelled_and_offered_to_the_next_bidder() {
    let world = world(Backend::Sqlite, |config| {
        config.payment.payment_due_ms = 300;
    })
    .await;
    let auction = Uuid::now_v7();
    let carol = Uuid::now_v7();
    let dave = Uuid::now_v7();
    let carol_token = world
        .app
        .access_token(carol, &[auction_platform::auth::Role::Bidder]);
    let dave_token = world
        .app
        .access_token(dave, &[auction_platform::auth::Role::Bidder]);
    publish(
        &world.app,
        &[
            bid(auction, world.seller, 2, dave, "80.00"),
            bid(auction, world.seller, 3, carol, "90.00"),
            bid(auction, world.seller, 4, world.buyer, "150.00"),
            // Carol raised her maximum; her last bid counts.
            bid(auction, world.seller, 5, carol, "110.00"),
            // An older event delivered late (same batch) changes nothing.
            bid(auction, world.seller, 1, carol, "200.00"),
            sold(auction, world.seller, 6, &[(world.buyer, "115.00", 1)]),
        ],
    )
    .await;
    let order = wait_orders(&world, &world.buyer_token, auction, 1)
        .await
        .remove(0);
    let mut client = world.client.clone();
    let offer_request = |request_id: &str| pb::OfferSecondChanceRequest {
        request_id: request_id.to_owned(),
        order_id: order.order_id.clone(),
        expire_time: None,
    };
    let cancelled = wait_status(&world, &order.order_id, pb::OrderStatus::Cancelled).await;
    assert!(cancelled.complete_time.is_some());
    let late = client
        .pay_order(with_token(
            pay_request(&order, "tok_sandbox_success", "pay-late"),
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&late), "PAYMENT_DEADLINE_PASSED");

    let by_buyer = client
        .offer_second_chance(with_token(
            offer_request("offer-by-buyer"),
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&by_buyer), "NOT_OWNER");
    let offer = client
        .offer_second_chance(with_token(offer_request("offer-1"), &world.seller_token))
        .await
        .unwrap()
        .into_inner()
        .offer
        .unwrap();
    assert_eq!(offer.recipient_id, carol.to_string());
    assert_eq!(offer.price, Some(usd("110.00")));
    assert_eq!(offer.status, pb::SecondChanceOfferStatus::Pending as i32);
    let pending = client
        .offer_second_chance(with_token(
            offer_request("offer-while-pending"),
            &world.seller_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&pending), "SECOND_CHANCE_UNAVAILABLE");
    let received = client
        .list_second_chance_offers(with_token(
            pb::ListSecondChanceOffersRequest::default(),
            &carol_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(received.offers.len(), 1);
    let not_hers = client
        .accept_second_chance_offer(with_token(
            pb::AcceptSecondChanceOfferRequest {
                request_id: "accept-by-dave".to_owned(),
                offer_id: offer.offer_id.clone(),
            },
            &dave_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&not_hers), "OFFER_NOT_FOUND");
    let accepted = client
        .accept_second_chance_offer(with_token(
            pb::AcceptSecondChanceOfferRequest {
                request_id: "accept".to_owned(),
                offer_id: offer.offer_id.clone(),
            },
            &carol_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let new_order = accepted.order.unwrap();
    assert_eq!(
        accepted.offer.unwrap().status,
        pb::SecondChanceOfferStatus::Accepted as i32
    );
    assert_eq!(new_order.buyer_id, carol.to_string());
    assert_eq!(new_order.status, pb::OrderStatus::AwaitingPayment as i32);
    assert_eq!(amount(&new_order.hammer_price), "110.00");
    assert_eq!(new_order.second_chance_offer_id, offer.offer_id);
    let twice = client
        .accept_second_chance_offer(with_token(
            pb::AcceptSecondChanceOfferRequest {
                request_id: "accept-again".to_owned(),
                offer_id: offer.offer_id.clone(),
            },
            &carol_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&twice), "OFFER_NOT_PENDING");

    // The next offer goes to Dave, who declines; then nobody is left.
    let next = client
        .offer_second_chance(with_token(offer_request("offer-2"), &world.seller_token))
        .await
        .unwrap()
        .into_inner()
        .offer
        .unwrap();
    assert_eq!(next.recipient_id, dave.to_string());
    assert_eq!(next.price, Some(usd("80.00")));
    let declined = client
        .decline_second_chance_offer(with_token(
            pb::DeclineSecondChanceOfferRequest {
                request_id: "decline".to_owned(),
                offer_id: next.offer_id.clone(),
            },
            &dave_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .offer
        .unwrap();
    assert_eq!(
        declined.status,
        pb::SecondChanceOfferStatus::Declined as i32
    );
    let none_left = client
        .offer_second_chance(with_token(offer_request("offer-3"), &world.seller_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&none_left), "SECOND_CHANCE_UNAVAILABLE");
    assert_balanced(&world).await;
    world.app.stop().await;
}

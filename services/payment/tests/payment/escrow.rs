//! Escrow: ship, confirm, automatic release, full and partial refunds.

use auction_proto::v1 as pb;
use auction_testkit::{Backend, with_token};
use tonic::Code;

use crate::support::*;

// Proves only the seller ships, shipping starts the automatic release
// clock, and the buyer's confirmation releases the proceeds to the seller
// and the fees to the platform.
#[tokio::test]
async fn ship_then_confirm_releases_to_the_seller() {
    let world = world(Backend::Sqlite, |_| {}).await;
    let order = new_order(&world, "100.00").await;
    pay(&world, &order).await;
    let mut client = world.client.clone();
    let by_buyer = client
        .mark_shipped(with_token(
            pb::MarkShippedRequest {
                request_id: "ship-by-buyer".to_owned(),
                order_id: order.order_id.clone(),
                ..pb::MarkShippedRequest::default()
            },
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(by_buyer.code(), Code::PermissionDenied);
    assert_eq!(reason(&by_buyer), "NOT_OWNER");
    let shipped = ship(&world, &order).await;
    assert_eq!(shipped.status, pb::OrderStatus::Shipped as i32);
    assert!(shipped.auto_release_time.is_some());
    assert_eq!(shipped.shipment.unwrap().tracking_number, "JD0123");

    let by_seller = client
        .confirm_receipt(with_token(
            pb::ConfirmReceiptRequest {
                request_id: "confirm-by-seller".to_owned(),
                order_id: order.order_id.clone(),
            },
            &world.seller_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&by_seller), "NOT_OWNER");
    let released = client
        .confirm_receipt(with_token(
            pb::ConfirmReceiptRequest {
                request_id: "confirm".to_owned(),
                order_id: order.order_id.clone(),
            },
            &world.buyer_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(released.status, pb::OrderStatus::Released as i32);
    assert!(released.complete_time.is_some());
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Seller, Some(world.seller)).await,
        "90.00"
    );
    assert_eq!(
        balance(&world, pb::LedgerAccountType::PlatformFees, None).await,
        "16.50"
    );
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Escrow, None).await,
        "0.00"
    );
    // The seller's payouts query shows what the platform owes them.
    let payouts = client
        .list_payouts(with_token(
            pb::ListPayoutsRequest::default(),
            &world.seller_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payouts.available_balances, vec![usd("90.00")]);
    // Shipping a released order is refused.
    let late = client
        .mark_shipped(with_token(
            pb::MarkShippedRequest {
                request_id: "ship-late".to_owned(),
                order_id: order.order_id.clone(),
                ..pb::MarkShippedRequest::default()
            },
            &world.seller_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&late), "ORDER_STATE_INVALID");
    let report = assert_balanced(&world).await;
    assert_eq!(report.currencies[0].open_hold_count, 0);
    world.app.stop().await;
}

// Proves a shipped order is released automatically once its release period
// passes (a short period set through configuration).
#[tokio::test]
async fn shipped_orders_release_automatically() {
    let world = world(Backend::Postgres, |config| {
        config.payment.auto_release_ms = 300;
    })
    .await;
    let order = new_order(&world, "100.00").await;
    pay(&world, &order).await;
    ship(&world, &order).await;
    let released = wait_status(&world, &order.order_id, pb::OrderStatus::Released).await;
    assert!(released.auto_release_time.is_none());
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Seller, Some(world.seller)).await,
        "90.00"
    );
    assert_balanced(&world).await;
    world.app.stop().await;
}

// Proves a full refund returns everything to the buyer and releases nothing.
#[tokio::test]
async fn full_refund_returns_everything() {
    let world = world(Backend::Sqlite, |_| {}).await;
    let order = new_order(&world, "100.00").await;
    pay(&world, &order).await;
    let mut client = world.client.clone();
    let by_buyer = client
        .refund_order(with_token(
            pb::RefundOrderRequest {
                request_id: "refund-by-buyer".to_owned(),
                order_id: order.order_id.clone(),
                amount: None,
                reason: "changed my mind".to_owned(),
            },
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&by_buyer), "NOT_OWNER");
    let refunded = client
        .refund_order(with_token(
            pb::RefundOrderRequest {
                request_id: "refund".to_owned(),
                order_id: order.order_id.clone(),
                amount: None,
                reason: "out of stock".to_owned(),
            },
            &world.seller_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(refunded.status, pb::OrderStatus::Refunded as i32);
    assert_eq!(amount(&refunded.refunded_amount), "106.50");
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Buyer, Some(world.buyer)).await,
        "0.00"
    );
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Seller, Some(world.seller)).await,
        "0.00"
    );
    assert_balanced(&world).await;
    world.app.stop().await;
}

// Proves a partial refund goes back to the buyer, is taken from the
// seller's proceeds first, and releases the rest at once; refunds above
// what was paid or in another currency are refused.
#[tokio::test]
async fn partial_refund_releases_the_rest() {
    let world = world(Backend::Postgres, |_| {}).await;
    let order = new_order(&world, "100.00").await;
    pay(&world, &order).await;
    ship(&world, &order).await;
    let mut client = world.client.clone();
    let refund = |request_id: &str, money: pb::Money| pb::RefundOrderRequest {
        request_id: request_id.to_owned(),
        order_id: order.order_id.clone(),
        amount: Some(money),
        reason: "scratched".to_owned(),
    };
    let too_much = client
        .refund_order(with_token(
            refund("refund-too-much", usd("106.51")),
            &world.seller_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(too_much.code(), Code::InvalidArgument);
    assert_eq!(reason(&too_much), "REFUND_EXCEEDS_PAID");
    let euros = client
        .refund_order(with_token(
            refund(
                "refund-euros",
                pb::Money {
                    currency: "EUR".to_owned(),
                    amount: "5.00".to_owned(),
                },
            ),
            &world.seller_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&euros), "CURRENCY_MISMATCH");
    let malformed = client
        .refund_order(with_token(
            refund("refund-malformed", usd("5.001")),
            &world.seller_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&malformed), "AMOUNT_INVALID");
    let partial = client
        .refund_order(with_token(
            refund("refund-30", usd("30.00")),
            &world.admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(partial.status, pb::OrderStatus::PartiallyRefunded as i32);
    assert_eq!(amount(&partial.refunded_amount), "30.00");
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Buyer, Some(world.buyer)).await,
        "-76.50"
    );
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Seller, Some(world.seller)).await,
        "60.00"
    );
    assert_eq!(
        balance(&world, pb::LedgerAccountType::PlatformFees, None).await,
        "16.50"
    );
    let report = assert_balanced(&world).await;
    assert_eq!(report.currencies[0].escrow_balance, Some(usd("0.00")));
    world.app.stop().await;
}

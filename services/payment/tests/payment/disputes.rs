//! Disputes: opened by the buyer while funds are held, answered by the
//! seller, resolved by an admin each way, every step recorded.

use auction_proto::v1 as pb;
use auction_testkit::{Backend, with_token};
use tonic::Code;

use crate::support::*;

async fn open(world: &World, order: &pb::Order, request_id: &str) -> pb::Dispute {
    world
        .client
        .clone()
        .open_dispute(with_token(
            pb::OpenDisputeRequest {
                request_id: request_id.to_owned(),
                order_id: order.order_id.clone(),
                reason: pb::DisputeReason::NotReceived as i32,
                description: "Nothing arrived after three weeks.".to_owned(),
            },
            &world.buyer_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap()
}

async fn respond(world: &World, dispute: &pb::Dispute, request_id: &str) -> pb::Dispute {
    world
        .client
        .clone()
        .respond_to_dispute(with_token(
            pb::RespondToDisputeRequest {
                request_id: request_id.to_owned(),
                dispute_id: dispute.dispute_id.clone(),
                body: "It was shipped; see the tracking.".to_owned(),
            },
            &world.seller_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap()
}

fn resolve(
    dispute: &pb::Dispute,
    request_id: &str,
    resolution: pb::DisputeResolution,
    refund: Option<&str>,
) -> pb::ResolveDisputeRequest {
    pb::ResolveDisputeRequest {
        request_id: request_id.to_owned(),
        dispute_id: dispute.dispute_id.clone(),
        resolution: resolution as i32,
        refund_amount: refund.map(usd),
        note: "Decided on the evidence.".to_owned(),
    }
}

// Proves a dispute pauses release and blocks confirmation, records each
// message with its author and time, and that an admin's REFUND, PARTIAL
// REFUND and RELEASE each end the order in the matching terminal status
// with balanced books.
#[tokio::test]
async fn disputes_resolve_each_way() {
    let world = world(Backend::Sqlite, |_| {}).await;
    let mut client = world.client.clone();
    let mut outcomes = Vec::new();
    for (index, (resolution, refund, status)) in [
        (
            pb::DisputeResolution::Refund,
            None,
            pb::OrderStatus::Refunded,
        ),
        (
            pb::DisputeResolution::PartialRefund,
            Some("40.00"),
            pb::OrderStatus::PartiallyRefunded,
        ),
        (
            pb::DisputeResolution::Release,
            None,
            pb::OrderStatus::Released,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let order = new_order(&world, "100.00").await;
        pay(&world, &order).await;
        ship(&world, &order).await;
        let dispute = open(&world, &order, &format!("open-{index}")).await;
        assert_eq!(dispute.status, pb::DisputeStatus::Open as i32);
        assert!(dispute.respond_by_time.is_some());
        let disputed = get_order(&world, &order.order_id).await;
        let disputed_order = disputed.order.unwrap();
        assert_eq!(disputed_order.status, pb::OrderStatus::Disputed as i32);
        assert!(disputed_order.auto_release_time.is_none());
        assert_eq!(
            disputed.dispute.unwrap().dispute_id,
            dispute.dispute_id,
            "GetOrder shows the dispute"
        );
        // A second dispute, and confirming while disputed, are refused.
        let second = client
            .open_dispute(with_token(
                pb::OpenDisputeRequest {
                    request_id: format!("open-again-{index}"),
                    order_id: order.order_id.clone(),
                    reason: pb::DisputeReason::NotAsDescribed as i32,
                    description: "Again.".to_owned(),
                },
                &world.buyer_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(reason(&second), "DISPUTE_EXISTS");
        let confirm = client
            .confirm_receipt(with_token(
                pb::ConfirmReceiptRequest {
                    request_id: format!("confirm-disputed-{index}"),
                    order_id: order.order_id.clone(),
                },
                &world.buyer_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(reason(&confirm), "ORDER_STATE_INVALID");

        let answered = respond(&world, &dispute, &format!("respond-{index}")).await;
        assert_eq!(answered.status, pb::DisputeStatus::Responded as i32);
        assert_eq!(answered.messages.len(), 2);
        assert_eq!(answered.messages[1].party, pb::DisputeParty::Seller as i32);
        assert_eq!(answered.messages[1].author_id, world.seller.to_string());

        let not_admin = client
            .resolve_dispute(with_token(
                resolve(
                    &dispute,
                    &format!("resolve-seller-{index}"),
                    resolution,
                    refund,
                ),
                &world.seller_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(not_admin.code(), Code::PermissionDenied);
        let resolved = client
            .resolve_dispute(with_token(
                resolve(&dispute, &format!("resolve-{index}"), resolution, refund),
                &world.admin_token,
            ))
            .await
            .unwrap()
            .into_inner();
        let resolved_dispute = resolved.dispute.unwrap();
        assert_eq!(resolved_dispute.status, pb::DisputeStatus::Resolved as i32);
        assert_eq!(resolved_dispute.resolution, resolution as i32);
        assert!(resolved_dispute.resolve_time.is_some());
        assert_eq!(resolved.order.unwrap().status, status as i32);
        let again = client
            .resolve_dispute(with_token(
                resolve(
                    &dispute,
                    &format!("resolve-again-{index}"),
                    resolution,
                    refund,
                ),
                &world.admin_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(reason(&again), "DISPUTE_STATE_INVALID");
        let read = client
            .get_dispute(with_token(
                pb::GetDisputeRequest {
                    dispute_id: dispute.dispute_id.clone(),
                },
                &world.buyer_token,
            ))
            .await
            .unwrap()
            .into_inner()
            .dispute
            .unwrap();
        assert_eq!(read.messages.len(), 2);
        outcomes.push(read);
    }
    // Refund 106.50 + partial 40.00 back to the buyer; seller gets 90 +
    // (90 - 40) from the release and partial orders.
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Buyer, Some(world.buyer)).await,
        "-173.00"
    );
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Seller, Some(world.seller)).await,
        "140.00"
    );
    let listed = client
        .list_disputes(with_token(
            pb::ListDisputesRequest::default(),
            &world.seller_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.disputes.len(), 3);
    let missing_amount = client
        .resolve_dispute(with_token(
            resolve(
                &outcomes[0],
                "resolve-bad",
                pb::DisputeResolution::PartialRefund,
                None,
            ),
            &world.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&missing_amount), "VALIDATION_FAILED");
    assert_balanced(&world).await;
    world.app.stop().await;
}

// Proves a seller's refund on a disputed order resolves the dispute, on
// PostgreSQL.
#[tokio::test]
async fn seller_refund_resolves_a_dispute() {
    let world = world(Backend::Postgres, |_| {}).await;
    let order = new_order(&world, "50.00").await;
    pay(&world, &order).await;
    let dispute = open(&world, &order, "open").await;
    let refunded = world
        .client
        .clone()
        .refund_order(with_token(
            pb::RefundOrderRequest {
                request_id: "refund-disputed".to_owned(),
                order_id: order.order_id.clone(),
                amount: None,
                reason: "Sorry about that.".to_owned(),
            },
            &world.seller_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(refunded.status, pb::OrderStatus::Refunded as i32);
    let state = get_order(&world, &order.order_id).await;
    let resolved = state.dispute.unwrap();
    assert_eq!(resolved.dispute_id, dispute.dispute_id);
    assert_eq!(resolved.status, pb::DisputeStatus::Resolved as i32);
    assert_eq!(resolved.resolution, pb::DisputeResolution::Refund as i32);
    assert_balanced(&world).await;
    world.app.stop().await;
}

// Proves only the buyer opens a dispute, and that a dispute the seller does
// not answer by its deadline moves on to the admins (RESPONDED).
#[tokio::test]
async fn unanswered_disputes_move_on_to_the_admins() {
    let world = world(Backend::Sqlite, |config| {
        config.payment.dispute_response_ms = 200;
    })
    .await;
    let order = new_order(&world, "20.00").await;
    pay(&world, &order).await;
    let by_seller = world
        .client
        .clone()
        .open_dispute(with_token(
            pb::OpenDisputeRequest {
                request_id: "open-by-seller".to_owned(),
                order_id: order.order_id.clone(),
                reason: pb::DisputeReason::NotReceived as i32,
                description: "Not mine to open.".to_owned(),
            },
            &world.seller_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&by_seller), "NOT_OWNER");
    let dispute = open(&world, &order, "open").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let current = world
            .client
            .clone()
            .get_dispute(with_token(
                pb::GetDisputeRequest {
                    dispute_id: dispute.dispute_id.clone(),
                },
                &world.admin_token,
            ))
            .await
            .unwrap()
            .into_inner()
            .dispute
            .unwrap();
        if current.status == pb::DisputeStatus::Responded as i32 {
            assert_eq!(current.messages.len(), 1, "nobody answered");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dispute stayed OPEN"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    world.app.stop().await;
}

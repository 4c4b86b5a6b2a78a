//! PayOrder through the sandbox: success, declines, a provider timeout
//! reconciled later, and retries (sequential and concurrent) that never
//! charge twice.

use auction_proto::v1 as pb;
use auction_testkit::{Backend, with_token};
use tonic::Code;

use crate::support::*;

async fn pay_succeeds(backend: Backend) {
    let world = world(backend, |_| {}).await;
    let order = new_order(&world, "100.00").await;
    assert_eq!(order.status, pb::OrderStatus::AwaitingPayment as i32);
    assert_eq!(amount(&order.total_due), "106.50");
    assert_eq!(amount(&order.seller_proceeds), "90.00");

    let request = pay_request(&order, "tok_sandbox_success", "pay-1");
    let mut client = world.client.clone();
    let paid = client
        .pay_order(with_token(request.clone(), &world.buyer_token))
        .await
        .unwrap();
    assert!(paid.metadata().get("auction-idempotent-replay").is_none());
    let paid = paid.into_inner();
    let attempt = paid.attempt.clone().unwrap();
    assert_eq!(paid.order.unwrap().status, pb::OrderStatus::Paid as i32);
    assert_eq!(attempt.status, pb::PaymentAttemptStatus::Succeeded as i32);

    // The same request again: the original answer, marked as a replay.
    let again = client
        .pay_order(with_token(request.clone(), &world.buyer_token))
        .await
        .unwrap();
    assert_eq!(
        again.metadata().get("auction-idempotent-replay").unwrap(),
        "true"
    );
    assert_eq!(again.into_inner().attempt.unwrap(), attempt);
    // The same id with other content is refused and changes nothing.
    let reused = client
        .pay_order(with_token(
            pb::PayOrderRequest {
                payment_method_token: "tok_sandbox_decline".to_owned(),
                ..request
            },
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");
    // Paying a paid order with a new id is refused.
    let twice = client
        .pay_order(with_token(
            pay_request(&order, "tok_sandbox_success", "pay-2"),
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&twice), "ORDER_STATE_INVALID");

    // Booked once: buyer -> escrow.
    let booked = entries(&world, &order.order_id).await;
    assert_eq!(booked.len(), 2);
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Buyer, Some(world.buyer)).await,
        "-106.50"
    );
    assert_eq!(
        balance(&world, pb::LedgerAccountType::Escrow, None).await,
        "106.50"
    );
    let report = assert_balanced(&world).await;
    assert_eq!(report.currencies[0].open_hold_count, 1);
    world.app.stop().await;
}

// Proves a success card pays the order into escrow once, on SQLite; a
// retry answers the original outcome, a reused id with other content is
// refused.
#[tokio::test]
async fn pay_succeeds_into_escrow_on_sqlite() {
    pay_succeeds(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn pay_succeeds_into_escrow_on_postgres() {
    pay_succeeds(Backend::Postgres).await;
}

// Proves declines are precise refusals that leave the order awaiting
// payment and book nothing, that bad input is refused before any attempt,
// and that a later payment with a new id succeeds.
#[tokio::test]
async fn declines_leave_the_order_awaiting_payment() {
    let world = world(Backend::Sqlite, |_| {}).await;
    let order = new_order(&world, "100.00").await;
    let mut client = world.client.clone();
    for (card, expected) in [
        ("tok_sandbox_decline", "PAYMENT_DECLINED"),
        ("tok_sandbox_insufficient_funds", "INSUFFICIENT_FUNDS"),
    ] {
        let request = pay_request(&order, card, &format!("pay-{card}"));
        let refused = client
            .pay_order(with_token(request.clone(), &world.buyer_token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), expected);
        // A retry gets the same refusal, and no second attempt is made.
        let again = client
            .pay_order(with_token(request, &world.buyer_token))
            .await
            .unwrap_err();
        assert_eq!(reason(&again), expected);
    }
    let state = get_order(&world, &order.order_id).await;
    assert_eq!(
        state.order.unwrap().status,
        pb::OrderStatus::AwaitingPayment as i32
    );
    assert_eq!(state.payment_attempts.len(), 2);
    assert!(
        state
            .payment_attempts
            .iter()
            .all(|attempt| attempt.status == pb::PaymentAttemptStatus::Declined as i32)
    );

    let invalid = client
        .pay_order(with_token(
            pay_request(&order, "tok_sandbox_gold", "pay-bad-token"),
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(reason(&invalid), "PAYMENT_METHOD_INVALID");
    let mut wrong_amount = pay_request(&order, "tok_sandbox_success", "pay-wrong-amount");
    wrong_amount.expected_amount = Some(usd("100.00"));
    let mismatch = client
        .pay_order(with_token(wrong_amount, &world.buyer_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&mismatch), "EXPECTED_AMOUNT_MISMATCH");
    let mut wrong_currency = pay_request(&order, "tok_sandbox_success", "pay-wrong-currency");
    wrong_currency.expected_amount = Some(pb::Money {
        currency: "EUR".to_owned(),
        amount: "106.50".to_owned(),
    });
    let currency = client
        .pay_order(with_token(wrong_currency, &world.buyer_token))
        .await
        .unwrap_err();
    assert_eq!(currency.code(), Code::InvalidArgument);
    assert_eq!(reason(&currency), "CURRENCY_MISMATCH");
    let bad_id = client
        .pay_order(with_token(
            pay_request(&order, "tok_sandbox_success", "bad id with spaces"),
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&bad_id), "REQUEST_ID_INVALID");
    // Only the buyer pays.
    let seller = client
        .pay_order(with_token(
            pay_request(&order, "tok_sandbox_success", "pay-by-seller"),
            &world.seller_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&seller), "NOT_OWNER");
    let stranger = client
        .pay_order(with_token(
            pay_request(&order, "tok_sandbox_success", "pay-by-stranger"),
            &world.stranger_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&stranger), "ORDER_NOT_FOUND");

    assert!(entries(&world, &order.order_id).await.is_empty());
    let paid = pay(&world, &order).await;
    assert_eq!(paid.order.unwrap().status, pb::OrderStatus::Paid as i32);
    assert_balanced(&world).await;
    world.app.stop().await;
}

// Proves a provider that never answers leaves the order PAYMENT_PENDING
// with a PENDING attempt (never an unknown state), refuses other attempts
// meanwhile, and that the reconciler later settles it as PAID exactly once.
#[tokio::test]
async fn timeout_then_reconcile_pays_once() {
    let world = world(Backend::Postgres, |config| {
        config.payment.provider_timeout_ms = 150;
        config.payment.provider_max_calls = 2;
        config.payment.attempt_reconcile_after_ms = 200;
        config.payment.sandbox_settle_after_ms = 1_000;
    })
    .await;
    let order = new_order(&world, "100.00").await;
    let mut client = world.client.clone();
    let request = pay_request(&order, "tok_sandbox_timeout", "pay-timeout");
    let pending = client
        .pay_order(with_token(request.clone(), &world.buyer_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pending.order.unwrap().status,
        pb::OrderStatus::PaymentPending as i32
    );
    let attempt = pending.attempt.unwrap();
    assert_eq!(attempt.status, pb::PaymentAttemptStatus::Pending as i32);
    let in_progress = client
        .pay_order(with_token(
            pay_request(&order, "tok_sandbox_success", "pay-meanwhile"),
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&in_progress), "PAYMENT_IN_PROGRESS");
    let during = reconcile(&world).await;
    assert_eq!(during.currencies[0].pending_payment_count, 1);
    assert!(during.balanced);

    wait_status(&world, &order.order_id, pb::OrderStatus::Paid).await;
    let state = get_order(&world, &order.order_id).await;
    assert_eq!(state.payment_attempts.len(), 1);
    assert_eq!(
        state.payment_attempts[0].status,
        pb::PaymentAttemptStatus::Succeeded as i32
    );
    // The retry of the timed-out request now shows the settled outcome.
    let retried = client
        .pay_order(with_token(request, &world.buyer_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.attempt.unwrap().attempt_id, attempt.attempt_id);
    assert_eq!(entries(&world, &order.order_id).await.len(), 2);
    let report = assert_balanced(&world).await;
    assert_eq!(report.currencies[0].pending_payment_count, 0);
    world.app.stop().await;
}

async fn concurrent_retries(backend: Backend) {
    let world = world(backend, |_| {}).await;
    let order = new_order(&world, "100.00").await;
    let request = pay_request(&order, "tok_sandbox_success", "pay-concurrent");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut client = world.client.clone();
        let request = with_token(request.clone(), &world.buyer_token);
        tasks.spawn(async move { client.pay_order(request).await });
    }
    let mut attempts = std::collections::HashSet::new();
    while let Some(answer) = tasks.join_next().await {
        match answer.unwrap() {
            Ok(response) => {
                attempts.insert(response.into_inner().attempt.unwrap().attempt_id);
            }
            // A retry racing the first may be told to retry (ABORTED) or
            // that the payment is in flight; never a second charge.
            Err(status) => assert!(
                matches!(status.code(), Code::Aborted),
                "unexpected {status:?}"
            ),
        }
    }
    assert_eq!(attempts.len(), 1, "one attempt for one request id");
    // Concurrent confirmations with one key release once.
    let paid = wait_status(&world, &order.order_id, pb::OrderStatus::Paid).await;
    let confirm = pb::ConfirmReceiptRequest {
        request_id: "confirm-concurrent".to_owned(),
        order_id: paid.order_id.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut client = world.client.clone();
        let request = with_token(confirm.clone(), &world.buyer_token);
        tasks.spawn(async move { client.confirm_receipt(request).await });
    }
    while let Some(answer) = tasks.join_next().await {
        let order = answer.unwrap().unwrap().into_inner().order.unwrap();
        assert_eq!(order.status, pb::OrderStatus::Released as i32);
    }
    let booked = entries(&world, &order.order_id).await;
    let postings: std::collections::HashSet<_> = booked
        .iter()
        .map(|entry| entry.posting_id.clone())
        .collect();
    assert_eq!(postings.len(), 2, "one capture and one release");
    assert_balanced(&world).await;
    world.app.stop().await;
}

// Proves concurrent retries of one PayOrder and one ConfirmReceipt (same
// request id) on PostgreSQL make one attempt, one capture and one release.
#[tokio::test]
async fn concurrent_retries_charge_and_release_once_on_postgres() {
    concurrent_retries(Backend::Postgres).await;
}

// Proves the same on SQLite.
#[tokio::test]
async fn concurrent_retries_charge_and_release_once_on_sqlite() {
    concurrent_retries(Backend::Sqlite).await;
}

// Proves buyers and sellers see only their own orders and accounts, and
// that reconciliation is for admins.
#[tokio::test]
async fn parties_see_only_their_own() {
    let world = world(Backend::Sqlite, |_| {}).await;
    let order = new_order(&world, "10.00").await;
    pay(&world, &order).await;
    let mut client = world.client.clone();
    let hidden = client
        .get_order(with_token(
            pb::GetOrderRequest {
                order_id: order.order_id.clone(),
            },
            &world.stranger_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&hidden), "ORDER_NOT_FOUND");
    let seller_view = client
        .get_order(with_token(
            pb::GetOrderRequest {
                order_id: order.order_id.clone(),
            },
            &world.seller_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seller_view.payment_attempts.len(), 1);
    let others = client
        .list_orders(with_token(
            pb::ListOrdersRequest {
                user_id: world.buyer.to_string(),
                ..pb::ListOrdersRequest::default()
            },
            &world.stranger_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&others), "NOT_OWNER");
    let ledger = client
        .list_ledger_entries(with_token(
            pb::ListLedgerEntriesRequest {
                owner_id: world.buyer.to_string(),
                ..pb::ListLedgerEntriesRequest::default()
            },
            &world.stranger_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&ledger), "NOT_OWNER");
    let own = client
        .list_ledger_entries(with_token(
            pb::ListLedgerEntriesRequest {
                owner_id: world.buyer.to_string(),
                ..pb::ListLedgerEntriesRequest::default()
            },
            &world.buyer_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.entries.len(), 1);
    let escrow = client
        .get_account_balance(with_token(
            pb::GetAccountBalanceRequest {
                account: Some(pb::LedgerAccount {
                    account_type: pb::LedgerAccountType::Escrow as i32,
                    owner_id: String::new(),
                    currency: "USD".to_owned(),
                }),
                as_of_time: None,
            },
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&escrow), "NOT_OWNER");
    let not_admin = client
        .reconcile_ledger(with_token(
            pb::ReconcileLedgerRequest::default(),
            &world.seller_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(not_admin.code(), Code::PermissionDenied);
    let token = client
        .list_orders(with_token(
            pb::ListOrdersRequest {
                page_token: "garbage".to_owned(),
                ..pb::ListOrdersRequest::default()
            },
            &world.buyer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&token), "PAGE_TOKEN_INVALID");
    world.app.stop().await;
}

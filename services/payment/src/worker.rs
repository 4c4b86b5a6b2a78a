//! The background task: every `payment.scan_interval_ms` it applies the
//! deadlines that passed — buyers are reminded 24 hours before their
//! payment deadline (`BusOrderPaymentDue`), unpaid orders are cancelled, shipped orders are
//! released after the automatic release period, pending second-chance offers
//! expire, unanswered disputes move on to the admins — and asks the provider
//! about payment attempts still PENDING. Every change is a conditional
//! UPDATE (order version, status), so several nodes may run it at once and
//! each transition still happens once. Ends on shutdown.

use std::sync::Arc;
use std::time::Duration;

use auction_platform::Shutdown;
use auction_platform::error::DisplayChain;
use auction_proto::v1 as pb;

use crate::error::PaymentError;
use crate::rules::{Action, OrderStatus};
use crate::sql::Transaction;
use crate::store::{self, OrderRecord, StoreError};
use crate::{Inner, convert, now_ms};

/// How long before the payment deadline the reminder goes out.
const PAYMENT_DUE_LEAD_MS: i64 = 24 * 3_600_000;

/// Runs until `shutdown`.
pub async fn run(inner: Arc<Inner>, shutdown: Shutdown) {
    let interval = Duration::from_millis(inner.settings.scan_interval_ms);
    loop {
        if let Err(error) = scan(&inner).await {
            tracing::warn!(error = %DisplayChain(&error), "payment deadline scan failed");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// One pass over every kind of deadline.
pub async fn scan(inner: &Inner) -> Result<(), PaymentError> {
    let now = now_ms();
    for order in store::orders_to_remind(&inner.database, now, PAYMENT_DUE_LEAD_MS).await? {
        remind(inner, &order, now).await?;
    }
    for order in store::due_orders(
        &inner.database,
        OrderStatus::AwaitingPayment,
        "payment_due_at_ms",
        now,
    )
    .await?
    {
        apply(
            inner,
            &order,
            &Action::Cancel { now_ms: now },
            "unpaid, cancelled",
        )
        .await?;
    }
    for order in store::due_orders(
        &inner.database,
        OrderStatus::Shipped,
        "auto_release_at_ms",
        now,
    )
    .await?
    {
        apply(
            inner,
            &order,
            &Action::AutoRelease { now_ms: now },
            "released automatically",
        )
        .await?;
    }
    store::expire_offers(&inner.database, now).await?;
    for dispute_id in store::overdue_disputes(&inner.database, now).await? {
        store::expire_dispute_response(&inner.database, dispute_id, now).await?;
    }
    // Never ask about an attempt whose PayOrder may still be calling the
    // provider: "unknown to the provider" means "nothing charged" only once
    // every call of the attempt has ended.
    // One call's time more covers the settling transaction after them.
    let calls_ms = i64::try_from(
        inner
            .settings
            .provider_timeout_ms
            .saturating_mul(u64::from(inner.settings.provider_max_calls) + 1),
    )
    .unwrap_or(i64::MAX);
    let quiet_ms = inner.settings.attempt_reconcile_after_ms.max(calls_ms);
    let before = now.saturating_sub(quiet_ms);
    for attempt in store::stale_attempts(&inner.database, before).await? {
        if let Err(error) = inner.reconcile_attempt(&attempt).await {
            tracing::warn!(attempt_id = %attempt.attempt_id, error = %DisplayChain(&error), "reconciliation failed");
        }
    }
    Ok(())
}

/// Stages the payment-due reminder of `order` once.
async fn remind(inner: &Inner, order: &OrderRecord, now: i64) -> Result<(), PaymentError> {
    let mut tx = Transaction::begin(&inner.database).await?;
    if !store::mark_reminded(&mut tx, order.order_id, now).await? {
        tx.rollback().await?;
        return Ok(());
    }
    tx.stage(&[convert::order_event(
        order,
        pb::bus_order_event::Kind::PaymentDue(pb::BusOrderPaymentDue {
            total_due: Some(order.money(order.pricing.total_due).to_proto()),
            payment_due_time: Some(auction_platform::bus::timestamp_from_ms(
                order.payment_due_at_ms,
            )),
        }),
        now,
    )])
    .await?;
    tx.commit().await?;
    inner.relay.wake();
    Ok(())
}

/// Applies a deadline transition once; a lost race or a rule refusal (the
/// order moved on meanwhile) is skipped.
async fn apply(
    inner: &Inner,
    order: &OrderRecord,
    action: &Action,
    label: &str,
) -> Result<(), PaymentError> {
    let now = now_ms();
    let mut tx = Transaction::begin(&inner.database).await?;
    let applied = store::transition(&mut tx, order, action, "system", label, now, |_| {}).await;
    let (next, outcome) = match applied {
        Ok(Ok(done)) => done,
        Ok(Err(_)) | Err(StoreError::Conflict) => {
            tx.rollback().await?;
            return Ok(());
        }
        Err(error) => {
            tx.rollback().await?;
            return Err(error.into());
        }
    };
    if outcome.released_now > rust_decimal::Decimal::ZERO {
        tx.stage(&[convert::order_event(
            &next,
            pb::bus_order_event::Kind::Released(pb::BusOrderReleased {
                seller_proceeds: Some(next.money(next.pricing.seller_proceeds).to_proto()),
                total_paid: Some(next.money(next.pricing.total_due).to_proto()),
            }),
            now,
        )])
        .await?;
    }
    tx.commit().await?;
    inner.relay.wake();
    tracing::info!(order_id = %order.order_id, status = next.status.as_str(), "{label}");
    Ok(())
}

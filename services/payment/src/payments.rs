//! Charging an order without ever leaving money in an unknown state.
//!
//! 1. One transaction claims the request id, moves the order to
//!    PAYMENT_PENDING and records a PENDING attempt (its id is the
//!    provider's idempotency key); the request id is marked in flight.
//! 2. The provider is called, bounded by `payment.provider_timeout_ms`, up
//!    to `payment.provider_max_calls` times with the same key (a repeat never
//!    charges twice).
//! 3. One transaction settles the attempt — conditional on it still being
//!    PENDING — and the order (PAID with its capture posting, or back to
//!    AWAITING_PAYMENT), and stores the request's outcome. When no call
//!    answered, the attempt stays PENDING and the answer says so; the worker
//!    later asks the provider ([`Inner::reconcile_attempt`]) and settles it the
//!    same way, whichever comes first winning exactly once.

use auction_platform::auth::Caller;
use auction_proto::v1 as pb;
use prost::Message as _;
use uuid::Uuid;

use crate::convert;
use crate::error::PaymentError;
use crate::money::Money;
use crate::provider::{ChargeOutcome, ChargeStatus, ProviderError};
use crate::rules::Action;
use crate::sql::Transaction;
use crate::store::{self, AttemptRecord, Claim, OrderRecord, RequestKey, StoredOutcome};
use crate::{Inner, now_ms};

/// What the provider calls established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderResult {
    /// Charged.
    Charged {
        /// Provider reference.
        reference: String,
    },
    /// Declined: nothing charged.
    Declined {
        /// Contract reason.
        reason: &'static str,
    },
    /// The provider was unreachable before any call could have charged.
    Unavailable,
    /// No call answered: the outcome is unknown until reconciled.
    Unknown,
}

/// How PayOrder ends.
pub enum PayOutcome {
    /// Answer (fresh, or a replay).
    Answer {
        /// The response.
        response: Box<pb::PayOrderResponse>,
        /// Whether it is a replay.
        replay: bool,
    },
    /// A stored refusal replayed.
    Replayed(StoredOutcome),
}

fn declined_reason(reason: &str) -> &'static str {
    if reason == "INSUFFICIENT_FUNDS" {
        "INSUFFICIENT_FUNDS"
    } else {
        "PAYMENT_DECLINED"
    }
}

impl Inner {
    /// PayOrder, end to end (see the module comment).
    pub async fn pay(
        &self,
        caller: &Caller,
        key: &RequestKey,
        request: &pb::PayOrderRequest,
        order_id: Uuid,
    ) -> Result<PayOutcome, PaymentError> {
        let now = now_ms();
        let mut tx = Transaction::begin(&self.database).await?;
        match store::claim(&mut tx, key, now).await? {
            Claim::Fresh => {}
            Claim::Reused => {
                tx.rollback().await?;
                return Err(PaymentError::IdempotencyKeyReused);
            }
            Claim::Replay(StoredOutcome::InFlight { attempt_id }) => {
                tx.rollback().await?;
                return self.current_answer(attempt_id).await;
            }
            Claim::Replay(outcome) => {
                tx.rollback().await?;
                return Ok(PayOutcome::Replayed(outcome));
            }
        }
        // As in every mutating RPC: a deterministic refusal is stored under
        // the claim this transaction holds (the attempt's writes undone), so
        // a concurrent copy of the request replays it.
        tx.execute("SAVEPOINT request_operation", &[]).await?;
        let begun = self
            .begin_payment(&mut tx, caller, request, order_id, now)
            .await;
        let attempt = match begun {
            Ok(attempt) => attempt,
            Err(error) if error.is_recorded() => {
                tx.execute("ROLLBACK TO SAVEPOINT request_operation", &[])
                    .await?;
                store::finish(&mut tx, key, &refusal(&error)).await?;
                tx.commit().await?;
                return Err(error);
            }
            Err(error) => {
                tx.rollback().await?;
                return Err(error);
            }
        };
        store::finish(
            &mut tx,
            key,
            &StoredOutcome::InFlight {
                attempt_id: attempt.attempt_id,
            },
        )
        .await?;
        tx.commit().await?;

        let result = self.charge(&attempt, &request.payment_method_token).await;
        let (order, attempt) = self.settle(&attempt, &result, Some(key)).await?;
        match result {
            ProviderResult::Charged { .. } | ProviderResult::Unknown => Ok(PayOutcome::Answer {
                response: Box::new(pb::PayOrderResponse {
                    order: Some(convert::order(&order)),
                    attempt: Some(convert::attempt(&attempt)),
                }),
                replay: false,
            }),
            ProviderResult::Declined { reason } => Err(PaymentError::Declined(reason)),
            ProviderResult::Unavailable => Err(PaymentError::ProviderUnavailable),
        }
    }

    /// Step 1 inside the claiming transaction.
    async fn begin_payment(
        &self,
        tx: &mut Transaction,
        caller: &Caller,
        request: &pb::PayOrderRequest,
        order_id: Uuid,
        now: i64,
    ) -> Result<AttemptRecord, PaymentError> {
        let order = store::load_order(tx, order_id)
            .await?
            .ok_or(PaymentError::OrderNotFound)?;
        if !caller.is_user(order.buyer_id) {
            return Err(if caller.is_user(order.seller_id) {
                PaymentError::NotOwner("buyer")
            } else {
                PaymentError::OrderNotFound
            });
        }
        let description = self
            .provider
            .describe_method(&request.payment_method_token)
            .map_err(|_| PaymentError::PaymentMethodInvalid)?;
        let expected = request
            .expected_amount
            .as_ref()
            .ok_or(PaymentError::Validation {
                field: "expected_amount",
                message: "is required",
            })
            .and_then(|money| Money::from_proto(money).map_err(PaymentError::from))?;
        let action = Action::BeginPayment {
            expected,
            now_ms: now,
        };
        let actor = caller.user_id.to_string();
        store::transition(tx, &order, &action, &actor, "pay", now, |_| {}).await??;
        let attempt = AttemptRecord {
            attempt_id: Uuid::now_v7(),
            order_id,
            amount: order.money(order.pricing.total_due),
            status: "PENDING".to_owned(),
            failure_reason: String::new(),
            provider_reference: String::new(),
            method_description: description,
            created_at_ms: now,
            completed_at_ms: None,
        };
        store::insert_attempt(tx, &attempt).await?;
        Ok(attempt)
    }

    /// Step 2: the provider calls.
    async fn charge(&self, attempt: &AttemptRecord, token: &str) -> ProviderResult {
        let key = attempt.attempt_id.to_string();
        let limit = std::time::Duration::from_millis(self.settings.provider_timeout_ms);
        let mut unanswered = false;
        for _ in 0..self.settings.provider_max_calls {
            let call = self.provider.charge(&key, attempt.amount, token, now_ms());
            match tokio::time::timeout(limit, call).await {
                Ok(Ok(ChargeOutcome::Succeeded { reference })) => {
                    return ProviderResult::Charged { reference };
                }
                Ok(Ok(ChargeOutcome::Declined { reason })) => {
                    return ProviderResult::Declined { reason };
                }
                // Unreachable: nothing charged by this call, but an earlier
                // unanswered one may have charged.
                Ok(Err(ProviderError::Unavailable)) => {
                    if !unanswered {
                        return ProviderResult::Unavailable;
                    }
                }
                Err(_elapsed) => {
                    unanswered = true;
                    tracing::warn!(attempt_id = %attempt.attempt_id, "payment provider did not answer in time");
                }
            }
        }
        ProviderResult::Unknown
    }

    /// Step 3 (and the reconciler's): settles the attempt and the order
    /// once; stores PayOrder's outcome under `key` in the same transaction.
    /// Returns the order and attempt as they now are.
    pub async fn settle(
        &self,
        attempt: &AttemptRecord,
        result: &ProviderResult,
        key: Option<&RequestKey>,
    ) -> Result<(OrderRecord, AttemptRecord), PaymentError> {
        let (status, reason, reference) = match result {
            ProviderResult::Charged { reference } => ("SUCCEEDED", "", reference.as_str()),
            ProviderResult::Declined { reason } => ("DECLINED", *reason, ""),
            ProviderResult::Unavailable => ("FAILED", "PROVIDER_UNAVAILABLE", ""),
            ProviderResult::Unknown => return self.current(attempt.attempt_id).await,
        };
        let now = now_ms();
        let mut tx = Transaction::begin(&self.database).await?;
        if !store::settle_attempt(&mut tx, attempt.attempt_id, status, reason, reference, now)
            .await?
        {
            // Settled already (the reconciler or a concurrent retry won).
            tx.rollback().await?;
            return self.current(attempt.attempt_id).await;
        }
        let order = store::load_order(&mut tx, attempt.order_id)
            .await?
            .ok_or(PaymentError::OrderNotFound)?;
        let charged = matches!(result, ProviderResult::Charged { .. });
        let action = if charged {
            Action::PaymentSucceeded
        } else {
            Action::PaymentFailed
        };
        let label = if charged {
            "payment captured"
        } else {
            "payment failed"
        };
        let (next, _) =
            store::transition(&mut tx, &order, &action, "provider", label, now, |_| {}).await??;
        let mut settled = attempt.clone();
        settled.status = status.to_owned();
        settled.failure_reason = reason.to_owned();
        settled.provider_reference = reference.to_owned();
        settled.completed_at_ms = Some(now);
        if charged {
            tx.stage(&[convert::order_event(
                &next,
                pb::bus_order_event::Kind::Paid(pb::BusOrderPaid {
                    total_paid: Some(next.money(next.pricing.total_due).to_proto()),
                }),
                now,
            )])
            .await?;
        }
        if let Some(key) = key {
            match result {
                ProviderResult::Charged { .. } => {
                    let response = pb::PayOrderResponse {
                        order: Some(convert::order(&next)),
                        attempt: Some(convert::attempt(&settled)),
                    };
                    store::finish(
                        &mut tx,
                        key,
                        &StoredOutcome::Answer(response.encode_to_vec()),
                    )
                    .await?;
                }
                ProviderResult::Declined { reason } => {
                    let error = PaymentError::Declined(reason);
                    store::finish(&mut tx, key, &refusal(&error)).await?;
                }
                // Transient: not recorded, a retry may charge.
                ProviderResult::Unavailable | ProviderResult::Unknown => {
                    store::forget(&mut tx, key).await?;
                }
            }
        }
        tx.commit().await?;
        self.relay.wake();
        if charged {
            tracing::info!(order_id = %next.order_id, attempt_id = %attempt.attempt_id, "order paid");
        }
        Ok((next, settled))
    }

    /// The order and attempt as stored.
    async fn current(
        &self,
        attempt_id: Uuid,
    ) -> Result<(OrderRecord, AttemptRecord), PaymentError> {
        let attempt = store::get_attempt(&self.database, attempt_id)
            .await?
            .ok_or(PaymentError::OrderNotFound)?;
        let order = store::get_order(&self.database, attempt.order_id)
            .await?
            .ok_or(PaymentError::OrderNotFound)?;
        Ok((order, attempt))
    }

    /// The answer to a retry of a PayOrder whose attempt was in flight.
    async fn current_answer(&self, attempt_id: Uuid) -> Result<PayOutcome, PaymentError> {
        let (order, attempt) = self.current(attempt_id).await?;
        match attempt.status.as_str() {
            "DECLINED" => Err(PaymentError::Declined(declined_reason(
                &attempt.failure_reason,
            ))),
            "FAILED" => Err(PaymentError::ProviderUnavailable),
            _ => Ok(PayOutcome::Answer {
                response: Box::new(pb::PayOrderResponse {
                    order: Some(convert::order(&order)),
                    attempt: Some(convert::attempt(&attempt)),
                }),
                replay: true,
            }),
        }
    }

    /// Asks the provider about a PENDING attempt and settles it when the
    /// outcome is known. A charge the provider never received counts as
    /// FAILED (nothing charged). Returns whether it was settled now.
    pub async fn reconcile_attempt(&self, attempt: &AttemptRecord) -> Result<bool, PaymentError> {
        let key = attempt.attempt_id.to_string();
        let status = match self.provider.status(&key, now_ms()).await {
            Ok(status) => status,
            Err(ProviderError::Unavailable) => return Ok(false),
        };
        let result = match status {
            ChargeStatus::Pending => return Ok(false),
            ChargeStatus::Unknown => ProviderResult::Unavailable,
            ChargeStatus::Settled(ChargeOutcome::Succeeded { reference }) => {
                ProviderResult::Charged { reference }
            }
            ChargeStatus::Settled(ChargeOutcome::Declined { reason }) => {
                ProviderResult::Declined { reason }
            }
        };
        let (_, settled) = self.settle(attempt, &result, None).await?;
        Ok(settled.status != "PENDING")
    }
}

/// A refusal as stored with its request id.
pub fn refusal(error: &PaymentError) -> StoredOutcome {
    use auction_platform::ServiceError as _;
    StoredOutcome::Refusal {
        code: error.code() as i32,
        reason: error.reason().to_owned(),
        message: error.to_string(),
    }
}

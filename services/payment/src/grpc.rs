//! The `auction.v1.PaymentService` surface. Each mutating RPC checks its
//! request id, runs in ONE transaction that first claims (caller, method,
//! request id) with a fingerprint of the content, applies the rules, books
//! the postings, stages its order events and stores its answer; a retry
//! gets the stored answer (trailer `auction-idempotent-replay: true`), the
//! same id with other content ALREADY_EXISTS `IDEMPOTENCY_KEY_REUSED`, and
//! a failure leaves nothing half-written. Deterministic refusals are stored
//! too; transient ones are not.

use std::sync::Arc;

use auction_platform::ServiceError;
use auction_platform::auth::{self, Caller, CallerKind, Scope};
use auction_platform::bus::{BoxFuture, Envelope, ms_from_timestamp, timestamp_from_ms};
use auction_proto::v1 as pb;
use auction_proto::v1::payment_service_server::PaymentService;
use prost::Message;
use rust_decimal::Decimal;
use sha2::Digest as _;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::consumer::{NewOrder, new_order};
use crate::convert;
use crate::error::PaymentError;
use crate::money::{Currency, Money};
use crate::payments::PayOutcome;
use crate::rules::{Action, OrderStatus, Settlement};
use crate::sql::Transaction;
use crate::store::{
    self, Claim, DisputeRecord, EntryFilter, MessageRecord, OfferRecord, OrderFilter, OrderRecord,
    RequestKey, StoredOutcome,
};
use crate::{Inner, Service, now_ms};

/// The trailer on replayed answers (common.proto).
const REPLAY_TRAILER: &str = "auction-idempotent-replay";

type Op<R> = Box<
    dyn for<'t> FnOnce(
            &'t mut Transaction,
        ) -> BoxFuture<'t, Result<(R, Vec<Envelope>), PaymentError>>
        + Send,
>;

fn status(error: PaymentError) -> Status {
    auction_platform::to_status(&error)
}

/// A refusal replayed from its stored form.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct StoredRefusal {
    code: i32,
    reason: String,
    message: String,
}

impl ServiceError for StoredRefusal {
    fn code(&self) -> Code {
        Code::from(self.code)
    }
    fn reason(&self) -> &str {
        &self.reason
    }
}

fn replayed<R: Message + Default>(outcome: StoredOutcome) -> Result<Response<R>, Status> {
    match outcome {
        StoredOutcome::Answer(bytes) => {
            let message = R::decode(bytes.as_slice()).map_err(|_| {
                status(PaymentError::Store(store::StoreError::Corrupt(
                    "stored answer",
                )))
            })?;
            let mut response = Response::new(message);
            response
                .metadata_mut()
                .insert(REPLAY_TRAILER, MetadataValue::from_static("true"));
            Ok(response)
        }
        StoredOutcome::Refusal {
            code,
            reason,
            message,
        } => {
            let mut refusal = auction_platform::to_status(&StoredRefusal {
                code,
                reason,
                message,
            });
            refusal
                .metadata_mut()
                .insert(REPLAY_TRAILER, MetadataValue::from_static("true"));
            Err(refusal)
        }
        StoredOutcome::InFlight { .. } => Err(status(PaymentError::Conflict)),
    }
}

fn check_request_id(request_id: &str) -> Result<(), PaymentError> {
    let valid = (1..=64).contains(&request_id.len())
        && request_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(PaymentError::RequestIdInvalid)
    }
}

fn caller_name(caller: &Caller) -> String {
    match &caller.kind {
        CallerKind::Service { name } => format!("service:{name}"),
        CallerKind::User | CallerKind::ApiKey { .. } => caller.user_id.to_string(),
    }
}

/// The idempotency key of a request: `without_id` is the request with its
/// request_id cleared, so the fingerprint covers every other field.
fn request_key<M: Message>(
    caller: &Caller,
    method: &'static str,
    request_id: &str,
    without_id: &M,
) -> Result<RequestKey, PaymentError> {
    check_request_id(request_id)?;
    let digest = sha2::Sha256::digest(without_id.encode_to_vec());
    Ok(RequestKey {
        caller: caller_name(caller),
        method,
        request_id: request_id.to_owned(),
        fingerprint: digest.iter().map(|byte| format!("{byte:02x}")).collect(),
    })
}

fn parse_id(field: &'static str, text: &str) -> Result<Uuid, PaymentError> {
    text.parse().map_err(|_| PaymentError::Validation {
        field,
        message: "must be a UUID",
    })
}

fn text_length(
    field: &'static str,
    text: &str,
    min: usize,
    max: usize,
) -> Result<(), PaymentError> {
    let length = text.chars().count();
    if length < min || length > max {
        return Err(PaymentError::Validation {
            field,
            message: "has the wrong length",
        });
    }
    Ok(())
}

/// (offset, limit) of a page; tokens are `o<offset>`.
fn page(size: i32, token: &str, default: i64, max: i64) -> Result<(i64, i64), PaymentError> {
    if size < 0 {
        return Err(PaymentError::Validation {
            field: "page_size",
            message: "must not be negative",
        });
    }
    let limit = if size == 0 {
        default
    } else {
        i64::from(size).min(max)
    };
    let offset = if token.is_empty() {
        0
    } else {
        token
            .strip_prefix('o')
            .and_then(|rest| rest.parse::<i64>().ok())
            .filter(|offset| *offset >= 0)
            .ok_or(PaymentError::PageTokenInvalid)?
    };
    Ok((offset, limit))
}

fn next_token(offset: i64, limit: i64, returned: usize) -> String {
    if i64::try_from(returned).unwrap_or(0) < limit {
        String::new()
    } else {
        format!("o{}", offset + limit)
    }
}

fn is_party(caller: &Caller, order: &OrderRecord) -> bool {
    caller.is_user(order.buyer_id) || caller.is_user(order.seller_id)
}

async fn order_in(
    tx: &mut Transaction,
    caller: &Caller,
    order_id: Uuid,
) -> Result<OrderRecord, PaymentError> {
    let order = store::load_order(tx, order_id)
        .await?
        .ok_or(PaymentError::OrderNotFound)?;
    if is_party(caller, &order) || caller.is_admin() {
        Ok(order)
    } else {
        Err(PaymentError::OrderNotFound)
    }
}

fn require_scope(caller: &Caller, scope: Scope) -> Result<(), Status> {
    caller.require_scope(scope)
}

fn event(order: &OrderRecord, kind: pb::bus_order_event::Kind, now: i64) -> Envelope {
    convert::order_event(order, kind, now)
}

fn settlement_events(
    order: &OrderRecord,
    refunded: Decimal,
    released: Decimal,
    now: i64,
) -> Vec<Envelope> {
    let mut events = Vec::new();
    if refunded > Decimal::ZERO {
        events.push(event(
            order,
            pb::bus_order_event::Kind::Refunded(pb::BusOrderRefunded {
                amount: Some(order.money(refunded).to_proto()),
            }),
            now,
        ));
    }
    if released > Decimal::ZERO {
        let to_seller = (order.pricing.seller_proceeds - refunded).max(Decimal::ZERO);
        events.push(event(
            order,
            pb::bus_order_event::Kind::Released(pb::BusOrderReleased {
                seller_proceeds: Some(order.money(to_seller).to_proto()),
                total_paid: Some(order.money(order.pricing.total_due).to_proto()),
            }),
            now,
        ));
    }
    events
}

fn dispute_updated(
    order: &OrderRecord,
    dispute: &DisputeRecord,
    change: &str,
    now: i64,
) -> Envelope {
    event(
        order,
        pb::bus_order_event::Kind::DisputeUpdated(pb::BusOrderDisputeUpdated {
            dispute_id: dispute.dispute_id.to_string(),
            change: change.to_owned(),
            respond_by_time: (dispute.status == "OPEN")
                .then(|| timestamp_from_ms(dispute.respond_by_ms)),
        }),
        now,
    )
}

impl Inner {
    /// Runs one mutating request (see the module comment).
    async fn mutate<R: Message + Default>(
        &self,
        key: RequestKey,
        op: Op<R>,
    ) -> Result<Response<R>, Status> {
        let now = now_ms();
        let mut tx = Transaction::begin(&self.database)
            .await
            .map_err(|error| status(error.into()))?;
        let claimed = store::claim(&mut tx, &key, now)
            .await
            .map_err(|error| status(error.into()))?;
        match claimed {
            Claim::Fresh => {}
            Claim::Reused => {
                let _ = tx.rollback().await;
                return Err(status(PaymentError::IdempotencyKeyReused));
            }
            Claim::Replay(outcome) => {
                let _ = tx.rollback().await;
                return replayed(outcome);
            }
        }
        // The operation's writes can be undone alone: a deterministic refusal
        // is then stored under the claim this transaction still holds, so a
        // concurrent copy of the request (waiting on the claim) replays the
        // refusal instead of executing in a state that changed meanwhile.
        tx.execute("SAVEPOINT request_operation", &[])
            .await
            .map_err(|error| status(error.into()))?;
        let done = match op(&mut tx).await {
            Ok((response, envelopes)) => {
                let finished = async {
                    tx.stage(&envelopes).await?;
                    store::finish(
                        &mut tx,
                        &key,
                        &StoredOutcome::Answer(response.encode_to_vec()),
                    )
                    .await?;
                    tx.commit().await
                }
                .await;
                finished.map(|()| response).map_err(PaymentError::from)
            }
            Err(error) if error.is_recorded() => {
                let recorded = async {
                    tx.execute("ROLLBACK TO SAVEPOINT request_operation", &[])
                        .await?;
                    store::finish(&mut tx, &key, &crate::payments::refusal(&error)).await?;
                    tx.commit().await
                }
                .await;
                if let Err(failure) = recorded {
                    tracing::warn!(error = %auction_platform::error::DisplayChain(&failure), "refusal not recorded");
                }
                Err(error)
            }
            Err(error) => {
                let _ = tx.rollback().await;
                Err(error)
            }
        };
        match done {
            Ok(response) => {
                self.relay.wake();
                Ok(Response::new(response))
            }
            Err(error) => Err(status(error)),
        }
    }

    async fn ship(
        &self,
        tx: &mut Transaction,
        caller: &Caller,
        request: &pb::MarkShippedRequest,
        now: i64,
    ) -> Result<(pb::MarkShippedResponse, Vec<Envelope>), PaymentError> {
        let order_id = parse_id("order_id", &request.order_id)?;
        text_length("carrier", &request.carrier, 0, 64)?;
        text_length("tracking_number", &request.tracking_number, 0, 64)?;
        text_length("tracking_url", &request.tracking_url, 0, 2_048)?;
        if !request.tracking_url.is_empty() && !request.tracking_url.starts_with("https://") {
            return Err(PaymentError::Validation {
                field: "tracking_url",
                message: "must be an https URL",
            });
        }
        let order = order_in(tx, caller, order_id).await?;
        if !caller.is_user(order.seller_id) {
            return Err(PaymentError::NotOwner("seller"));
        }
        let action = Action::Ship {
            now_ms: now,
            auto_release_ms: self.settings.auto_release_ms,
        };
        let (next, _) = store::transition(
            tx,
            &order,
            &action,
            &caller.user_id.to_string(),
            "shipped",
            now,
            |next| {
                next.carrier = Some(request.carrier.clone());
                next.tracking_number = Some(request.tracking_number.clone());
                next.tracking_url = Some(request.tracking_url.clone());
            },
        )
        .await??;
        let events = vec![event(
            &next,
            pb::bus_order_event::Kind::Shipped(pb::BusOrderShipped {
                auto_release_time: next.auto_release_at_ms.map(timestamp_from_ms),
            }),
            now,
        )];
        Ok((
            pb::MarkShippedResponse {
                order: Some(convert::order(&next)),
            },
            events,
        ))
    }

    async fn confirm(
        &self,
        tx: &mut Transaction,
        caller: &Caller,
        request: &pb::ConfirmReceiptRequest,
        now: i64,
    ) -> Result<(pb::ConfirmReceiptResponse, Vec<Envelope>), PaymentError> {
        let order_id = parse_id("order_id", &request.order_id)?;
        let order = order_in(tx, caller, order_id).await?;
        if !caller.is_user(order.buyer_id) {
            return Err(PaymentError::NotOwner("buyer"));
        }
        let (next, outcome) = store::transition(
            tx,
            &order,
            &Action::ConfirmReceipt,
            &caller.user_id.to_string(),
            "receipt confirmed",
            now,
            |_| {},
        )
        .await??;
        let events = settlement_events(&next, outcome.refunded_now, outcome.released_now, now);
        Ok((
            pb::ConfirmReceiptResponse {
                order: Some(convert::order(&next)),
            },
            events,
        ))
    }

    async fn refund(
        &self,
        tx: &mut Transaction,
        caller: &Caller,
        request: &pb::RefundOrderRequest,
        now: i64,
    ) -> Result<(pb::RefundOrderResponse, Vec<Envelope>), PaymentError> {
        let order_id = parse_id("order_id", &request.order_id)?;
        text_length("reason", &request.reason, 1, 500)?;
        let amount = request.amount.as_ref().map(Money::from_proto).transpose()?;
        let order = order_in(tx, caller, order_id).await?;
        if !(caller.is_user(order.seller_id) || caller.is_admin()) {
            return Err(PaymentError::NotOwner("seller"));
        }
        let actor = caller.user_id.to_string();
        let was_disputed = order.status == OrderStatus::Disputed;
        let (next, outcome) = store::transition(
            tx,
            &order,
            &Action::Refund { amount },
            &actor,
            "refunded",
            now,
            |_| {},
        )
        .await??;
        let mut events = settlement_events(&next, outcome.refunded_now, outcome.released_now, now);
        // A refund on a disputed order resolves its dispute.
        if was_disputed && let Some(dispute_id) = order.dispute_id {
            let resolution = if next.status == OrderStatus::Refunded {
                "REFUND"
            } else {
                "PARTIAL_REFUND"
            };
            store::resolve_dispute(
                tx,
                dispute_id,
                resolution,
                Some(next.money(outcome.refunded_now).text()),
                &request.reason,
                &actor,
                now,
            )
            .await?;
            events.push(event(
                &next,
                pb::bus_order_event::Kind::DisputeUpdated(pb::BusOrderDisputeUpdated {
                    dispute_id: dispute_id.to_string(),
                    change: "resolved by a refund".to_owned(),
                    respond_by_time: None,
                }),
                now,
            ));
        }
        Ok((
            pb::RefundOrderResponse {
                order: Some(convert::order(&next)),
            },
            events,
        ))
    }

    async fn open_dispute(
        &self,
        tx: &mut Transaction,
        caller: &Caller,
        request: &pb::OpenDisputeRequest,
        now: i64,
    ) -> Result<(pb::OpenDisputeResponse, Vec<Envelope>), PaymentError> {
        let order_id = parse_id("order_id", &request.order_id)?;
        let reason = match pb::DisputeReason::try_from(request.reason) {
            Ok(pb::DisputeReason::NotReceived) => "NOT_RECEIVED",
            Ok(pb::DisputeReason::NotAsDescribed) => "NOT_AS_DESCRIBED",
            Ok(pb::DisputeReason::Unspecified) | Err(_) => {
                return Err(PaymentError::Validation {
                    field: "reason",
                    message: "is required",
                });
            }
        };
        text_length("description", &request.description, 1, 5_000)?;
        let order = order_in(tx, caller, order_id).await?;
        if !caller.is_user(order.buyer_id) {
            return Err(PaymentError::NotOwner("buyer"));
        }
        if order.dispute_id.is_some() {
            return Err(PaymentError::Rule(crate::rules::RuleError::DisputeExists));
        }
        let dispute_id = Uuid::now_v7();
        let (next, _) = store::transition(
            tx,
            &order,
            &Action::OpenDispute { now_ms: now },
            &caller.user_id.to_string(),
            "dispute opened",
            now,
            |next| next.dispute_id = Some(dispute_id),
        )
        .await??;
        let dispute = DisputeRecord {
            dispute_id,
            order_id,
            buyer_id: order.buyer_id,
            seller_id: order.seller_id,
            reason: reason.to_owned(),
            status: "OPEN".to_owned(),
            respond_by_ms: now.saturating_add(self.settings.dispute_response_ms),
            resolution: None,
            refund_amount: None,
            resolution_note: String::new(),
            resolved_by: None,
            created_at_ms: now,
            resolved_at_ms: None,
            messages: vec![MessageRecord {
                author_id: caller.user_id.to_string(),
                party: "BUYER".to_owned(),
                body: request.description.clone(),
                created_at_ms: now,
            }],
        };
        store::insert_dispute(tx, &dispute).await?;
        let events = vec![dispute_updated(&next, &dispute, "opened", now)];
        Ok((
            pb::OpenDisputeResponse {
                dispute: Some(convert::dispute(&dispute, next.pricing.currency.code())),
                order: Some(convert::order(&next)),
            },
            events,
        ))
    }

    async fn respond(
        &self,
        tx: &mut Transaction,
        caller: &Caller,
        request: &pb::RespondToDisputeRequest,
        now: i64,
    ) -> Result<(pb::RespondToDisputeResponse, Vec<Envelope>), PaymentError> {
        let dispute_id = parse_id("dispute_id", &request.dispute_id)?;
        text_length("body", &request.body, 1, 5_000)?;
        let dispute = store::load_dispute(tx, dispute_id)
            .await?
            .ok_or(PaymentError::DisputeNotFound)?;
        let party = if caller.is_user(dispute.buyer_id) {
            "BUYER"
        } else if caller.is_user(dispute.seller_id) {
            "SELLER"
        } else if caller.is_admin() {
            "ADMIN"
        } else {
            return Err(PaymentError::DisputeNotFound);
        };
        let order = store::load_order(tx, dispute.order_id)
            .await?
            .ok_or(PaymentError::OrderNotFound)?;
        // Read again under the order's lock: a concurrent resolution wins.
        let current = store::dispute_status(tx, dispute_id).await?;
        if current.as_deref() != Some("OPEN") && current.as_deref() != Some("RESPONDED") {
            return Err(PaymentError::DisputeStateInvalid);
        }
        let mut dispute = dispute;
        dispute.status = current.unwrap_or_default();
        store::add_message(
            tx,
            dispute_id,
            &MessageRecord {
                author_id: caller.user_id.to_string(),
                party: party.to_owned(),
                body: request.body.clone(),
                created_at_ms: now,
            },
        )
        .await?;
        let mut change = "message added";
        if party == "SELLER"
            && store::set_dispute_status(tx, dispute_id, &["OPEN"], "RESPONDED", now).await?
        {
            change = "seller responded";
        }
        let mut updated = dispute.clone();
        if change == "seller responded" {
            updated.status = "RESPONDED".to_owned();
        }
        updated.messages.push(MessageRecord {
            author_id: caller.user_id.to_string(),
            party: party.to_owned(),
            body: request.body.clone(),
            created_at_ms: now,
        });
        let events = vec![dispute_updated(&order, &updated, change, now)];
        Ok((
            pb::RespondToDisputeResponse {
                dispute: Some(convert::dispute(&updated, order.pricing.currency.code())),
            },
            events,
        ))
    }

    async fn resolve(
        &self,
        tx: &mut Transaction,
        caller: &Caller,
        request: &pb::ResolveDisputeRequest,
        now: i64,
    ) -> Result<(pb::ResolveDisputeResponse, Vec<Envelope>), PaymentError> {
        if !caller.is_admin() {
            return Err(PaymentError::RoleRequired);
        }
        let dispute_id = parse_id("dispute_id", &request.dispute_id)?;
        text_length("note", &request.note, 1, 5_000)?;
        let dispute = store::load_dispute(tx, dispute_id)
            .await?
            .ok_or(PaymentError::DisputeNotFound)?;
        let order = store::load_order(tx, dispute.order_id)
            .await?
            .ok_or(PaymentError::OrderNotFound)?;
        let missing_amount = PaymentError::Validation {
            field: "refund_amount",
            message: "is required for PARTIAL_REFUND and must be unset otherwise",
        };
        let (settlement, name) = match (
            pb::DisputeResolution::try_from(request.resolution),
            &request.refund_amount,
        ) {
            (Ok(pb::DisputeResolution::Refund), None) => (Settlement::FullRefund, "REFUND"),
            (Ok(pb::DisputeResolution::Release), None) => (Settlement::Release, "RELEASE"),
            (Ok(pb::DisputeResolution::PartialRefund), Some(amount)) => {
                let amount = Money::from_proto(amount)?;
                if amount.currency != order.pricing.currency {
                    return Err(PaymentError::Rule(
                        crate::rules::RuleError::CurrencyMismatch {
                            given: amount.currency.code().to_owned(),
                            order: order.pricing.currency.code().to_owned(),
                        },
                    ));
                }
                (Settlement::PartialRefund(amount.amount), "PARTIAL_REFUND")
            }
            (Ok(pb::DisputeResolution::Unspecified) | Err(_), _) => {
                return Err(PaymentError::Validation {
                    field: "resolution",
                    message: "is required",
                });
            }
            (
                Ok(
                    pb::DisputeResolution::Refund
                    | pb::DisputeResolution::Release
                    | pb::DisputeResolution::PartialRefund,
                ),
                _,
            ) => return Err(missing_amount),
        };
        // Input first, then state (read under the order's lock): a
        // malformed request is refused the same way whatever the state.
        if store::dispute_status(tx, dispute_id).await?.as_deref() == Some("RESOLVED") {
            return Err(PaymentError::DisputeStateInvalid);
        }
        let actor = caller.user_id.to_string();
        let (next, outcome) = store::transition(
            tx,
            &order,
            &Action::ResolveDispute(settlement),
            &actor,
            "dispute resolved",
            now,
            |_| {},
        )
        .await??;
        let refund_text =
            (outcome.refunded_now > Decimal::ZERO).then(|| next.money(outcome.refunded_now).text());
        if !store::resolve_dispute(
            tx,
            dispute_id,
            name,
            refund_text.clone(),
            &request.note,
            &actor,
            now,
        )
        .await?
        {
            return Err(PaymentError::DisputeStateInvalid);
        }
        let mut resolved = dispute.clone();
        resolved.status = "RESOLVED".to_owned();
        resolved.resolution = Some(name.to_owned());
        resolved.refund_amount = refund_text;
        resolved.resolution_note = request.note.clone();
        resolved.resolved_by = Some(actor);
        resolved.resolved_at_ms = Some(now);
        let mut events = settlement_events(&next, outcome.refunded_now, outcome.released_now, now);
        events.push(dispute_updated(&next, &resolved, "resolved", now));
        Ok((
            pb::ResolveDisputeResponse {
                dispute: Some(convert::dispute(&resolved, next.pricing.currency.code())),
                order: Some(convert::order(&next)),
            },
            events,
        ))
    }

    async fn offer_second_chance(
        &self,
        tx: &mut Transaction,
        caller: &Caller,
        request: &pb::OfferSecondChanceRequest,
        now: i64,
    ) -> Result<(pb::OfferSecondChanceResponse, Vec<Envelope>), PaymentError> {
        const HOUR_MS: i64 = 3_600_000;
        let order_id = parse_id("order_id", &request.order_id)?;
        let expire_at_ms = match &request.expire_time {
            None => now + 48 * HOUR_MS,
            Some(time) => ms_from_timestamp(time),
        };
        if expire_at_ms < now + HOUR_MS || expire_at_ms > now + 7 * 24 * HOUR_MS {
            return Err(PaymentError::Validation {
                field: "expire_time",
                message: "must be 1 hour to 7 days ahead",
            });
        }
        let order = order_in(tx, caller, order_id).await?;
        if !caller.is_user(order.seller_id) {
            return Err(PaymentError::NotOwner("seller"));
        }
        if order.status != OrderStatus::Cancelled {
            return Err(PaymentError::Rule(
                crate::rules::RuleError::OrderStateInvalid(order.status.as_str()),
            ));
        }
        let offers = store::offers_of_auction(tx, &order.auction_id).await?;
        if offers
            .iter()
            .any(|offer| offer.original_order_id == order_id && offer.status == "PENDING")
        {
            return Err(PaymentError::SecondChanceUnavailable("an offer is pending"));
        }
        let winners: Vec<Uuid> = store::orders_of_auction(tx, &order.auction_id)
            .await?
            .iter()
            .map(|order| order.buyer_id)
            .collect();
        let bids = store::bids_of_auction(tx, &order.auction_id).await?;
        let next_bidder = bids.into_iter().find(|(bidder, price)| {
            *bidder != order.seller_id
                && !winners.contains(bidder)
                && !offers.iter().any(|offer| offer.recipient_id == *bidder)
                && price.currency == order.pricing.currency
        });
        let Some((recipient_id, price)) = next_bidder else {
            return Err(PaymentError::SecondChanceUnavailable(
                "no further eligible bidder",
            ));
        };
        let offer = OfferRecord {
            offer_id: Uuid::now_v7(),
            auction_id: order.auction_id.clone(),
            original_order_id: order_id,
            seller_id: order.seller_id,
            recipient_id,
            price,
            quantity: order.pricing.quantity,
            title: order.title.clone(),
            status: "PENDING".to_owned(),
            expire_at_ms,
            order_id: None,
            created_at_ms: now,
        };
        store::insert_offer(tx, &offer)
            .await
            .map_err(|error| match error {
                store::StoreError::Conflict => {
                    PaymentError::SecondChanceUnavailable("an offer is pending")
                }
                other => other.into(),
            })?;
        let events = vec![event(
            &order,
            pb::bus_order_event::Kind::SecondChanceOffered(pb::BusOrderSecondChanceOffered {
                offer_id: offer.offer_id.to_string(),
                recipient_id: recipient_id.to_string(),
                price: Some(price.to_proto()),
                expire_time: Some(timestamp_from_ms(expire_at_ms)),
            }),
            now,
        )];
        Ok((
            pb::OfferSecondChanceResponse {
                offer: Some(convert::offer(&offer)),
            },
            events,
        ))
    }

    async fn answer_offer(
        &self,
        tx: &mut Transaction,
        caller: &Caller,
        offer_id: &str,
        accept: bool,
        now: i64,
    ) -> Result<(OfferRecord, Option<OrderRecord>, Vec<Envelope>), PaymentError> {
        let offer_id = parse_id("offer_id", offer_id)?;
        let mut offer = store::load_offer(tx, offer_id)
            .await?
            .ok_or(PaymentError::OfferNotFound)?;
        if !caller.is_user(offer.recipient_id) {
            return Err(PaymentError::OfferNotFound);
        }
        if offer.status != "PENDING" || offer.expire_at_ms <= now {
            return Err(PaymentError::OfferNotPending);
        }
        let mut created = None;
        let mut events = Vec::new();
        if accept {
            let record = new_order(
                self,
                &NewOrder {
                    origin_key: format!("offer/{offer_id}"),
                    id_time_ms: now,
                    auction_id: &offer.auction_id,
                    title: &offer.title,
                    seller_id: offer.seller_id,
                    buyer_id: offer.recipient_id,
                    unit_price: offer.price,
                    quantity: offer.quantity,
                    second_chance_offer_id: Some(offer_id),
                },
                now,
            )?;
            if !store::insert_order(tx, &record).await? {
                return Err(PaymentError::OfferNotPending);
            }
            events.push(convert::created_event(&record, now));
            created = Some(record);
        }
        let status = if accept { "ACCEPTED" } else { "DECLINED" };
        let order_id = created.as_ref().map(|order| order.order_id);
        if !store::answer_offer(tx, offer_id, status, order_id, now).await? {
            return Err(PaymentError::OfferNotPending);
        }
        offer.status = status.to_owned();
        offer.order_id = order_id;
        Ok((offer, created, events))
    }
}

#[tonic::async_trait]
impl PaymentService for Service {
    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let caller = auth::caller(&request)?;
        let order_id = parse_id("order_id", &request.get_ref().order_id).map_err(status)?;
        let database = &self.inner.database;
        let order = store::get_order(database, order_id)
            .await
            .map_err(|error| status(error.into()))?
            .filter(|order| is_party(&caller, order) || caller.is_admin())
            .ok_or_else(|| status(PaymentError::OrderNotFound))?;
        let attempts = store::attempts_of(database, order_id)
            .await
            .map_err(|error| status(error.into()))?;
        let dispute = match order.dispute_id {
            Some(dispute_id) => store::get_dispute(database, dispute_id)
                .await
                .map_err(|error| status(error.into()))?,
            None => None,
        };
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(convert::order(&order)),
            payment_attempts: attempts.iter().map(convert::attempt).collect(),
            dispute: dispute
                .as_ref()
                .map(|dispute| convert::dispute(dispute, order.pricing.currency.code())),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let user = if request.user_id.is_empty() {
            caller.user_id
        } else {
            parse_id("user_id", &request.user_id).map_err(status)?
        };
        if !caller.is_user(user) && !caller.is_admin() {
            return Err(status(PaymentError::NotOwner("user")));
        }
        let (as_buyer, as_seller) = match pb::OrderRole::try_from(request.role) {
            Ok(pb::OrderRole::Buyer) => (true, false),
            Ok(pb::OrderRole::Seller) => (false, true),
            Ok(pb::OrderRole::Unspecified) | Err(_) => (true, true),
        };
        let statuses = request
            .statuses
            .iter()
            .filter_map(|value| convert::status_from_proto(*value))
            .collect();
        let filter = OrderFilter {
            user_id: Some(user),
            as_buyer,
            as_seller,
            statuses,
            auction_id: (!request.auction_id.is_empty()).then(|| request.auction_id.clone()),
        };
        let (offset, limit) =
            page(request.page_size, &request.page_token, 20, 100).map_err(status)?;
        let orders = store::list_orders(&self.inner.database, &filter, offset, limit)
            .await
            .map_err(|error| status(error.into()))?;
        Ok(Response::new(pb::ListOrdersResponse {
            next_page_token: next_token(offset, limit, orders.len()),
            orders: orders.iter().map(convert::order).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn pay_order(
        &self,
        request: Request<pb::PayOrderRequest>,
    ) -> Result<Response<pb::PayOrderResponse>, Status> {
        let caller = auth::caller(&request)?;
        require_scope(&caller, Scope::Payments)?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "PayOrder",
            &request.request_id,
            &pb::PayOrderRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let order_id = parse_id("order_id", &request.order_id).map_err(status)?;
        match self.inner.pay(&caller, &key, &request, order_id).await {
            Ok(PayOutcome::Answer { response, replay }) => {
                let mut answer = Response::new(*response);
                if replay {
                    answer
                        .metadata_mut()
                        .insert(REPLAY_TRAILER, MetadataValue::from_static("true"));
                }
                Ok(answer)
            }
            Ok(PayOutcome::Replayed(outcome)) => replayed(outcome),
            Err(error) => Err(status(error)),
        }
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn mark_shipped(
        &self,
        request: Request<pb::MarkShippedRequest>,
    ) -> Result<Response<pb::MarkShippedResponse>, Status> {
        let caller = auth::caller(&request)?;
        require_scope(&caller, Scope::Sell)?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "MarkShipped",
            &request.request_id,
            &pb::MarkShippedRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .mutate(
                key,
                Box::new(move |tx| {
                    Box::pin(async move { inner.ship(tx, &caller, &request, now_ms()).await })
                }),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn confirm_receipt(
        &self,
        request: Request<pb::ConfirmReceiptRequest>,
    ) -> Result<Response<pb::ConfirmReceiptResponse>, Status> {
        let caller = auth::caller(&request)?;
        require_scope(&caller, Scope::Payments)?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "ConfirmReceipt",
            &request.request_id,
            &pb::ConfirmReceiptRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .mutate(
                key,
                Box::new(move |tx| {
                    Box::pin(async move { inner.confirm(tx, &caller, &request, now_ms()).await })
                }),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn refund_order(
        &self,
        request: Request<pb::RefundOrderRequest>,
    ) -> Result<Response<pb::RefundOrderResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "RefundOrder",
            &request.request_id,
            &pb::RefundOrderRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .mutate(
                key,
                Box::new(move |tx| {
                    Box::pin(async move { inner.refund(tx, &caller, &request, now_ms()).await })
                }),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn open_dispute(
        &self,
        request: Request<pb::OpenDisputeRequest>,
    ) -> Result<Response<pb::OpenDisputeResponse>, Status> {
        let caller = auth::caller(&request)?;
        require_scope(&caller, Scope::Payments)?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "OpenDispute",
            &request.request_id,
            &pb::OpenDisputeRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .mutate(
                key,
                Box::new(move |tx| {
                    Box::pin(
                        async move { inner.open_dispute(tx, &caller, &request, now_ms()).await },
                    )
                }),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(dispute_id = %request.get_ref().dispute_id))]
    async fn respond_to_dispute(
        &self,
        request: Request<pb::RespondToDisputeRequest>,
    ) -> Result<Response<pb::RespondToDisputeResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "RespondToDispute",
            &request.request_id,
            &pb::RespondToDisputeRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .mutate(
                key,
                Box::new(move |tx| {
                    Box::pin(async move { inner.respond(tx, &caller, &request, now_ms()).await })
                }),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(dispute_id = %request.get_ref().dispute_id))]
    async fn resolve_dispute(
        &self,
        request: Request<pb::ResolveDisputeRequest>,
    ) -> Result<Response<pb::ResolveDisputeResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_admin()?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "ResolveDispute",
            &request.request_id,
            &pb::ResolveDisputeRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .mutate(
                key,
                Box::new(move |tx| {
                    Box::pin(async move { inner.resolve(tx, &caller, &request, now_ms()).await })
                }),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(dispute_id = %request.get_ref().dispute_id))]
    async fn get_dispute(
        &self,
        request: Request<pb::GetDisputeRequest>,
    ) -> Result<Response<pb::GetDisputeResponse>, Status> {
        let caller = auth::caller(&request)?;
        let dispute_id = parse_id("dispute_id", &request.get_ref().dispute_id).map_err(status)?;
        let dispute = store::get_dispute(&self.inner.database, dispute_id)
            .await
            .map_err(|error| status(error.into()))?
            .filter(|dispute| {
                caller.is_user(dispute.buyer_id)
                    || caller.is_user(dispute.seller_id)
                    || caller.is_admin()
            })
            .ok_or_else(|| status(PaymentError::DisputeNotFound))?;
        let order = store::get_order(&self.inner.database, dispute.order_id)
            .await
            .map_err(|error| status(error.into()))?
            .ok_or_else(|| status(PaymentError::DisputeNotFound))?;
        Ok(Response::new(pb::GetDisputeResponse {
            dispute: Some(convert::dispute(&dispute, order.pricing.currency.code())),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_disputes(
        &self,
        request: Request<pb::ListDisputesRequest>,
    ) -> Result<Response<pb::ListDisputesResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let (offset, limit) =
            page(request.page_size, &request.page_token, 20, 100).map_err(status)?;
        let statuses: Vec<String> = request
            .statuses
            .iter()
            .filter_map(|value| match pb::DisputeStatus::try_from(*value).ok()? {
                pb::DisputeStatus::Open => Some("OPEN".to_owned()),
                pb::DisputeStatus::Responded => Some("RESPONDED".to_owned()),
                pb::DisputeStatus::Resolved => Some("RESOLVED".to_owned()),
                pb::DisputeStatus::Unspecified => None,
            })
            .collect();
        let user = (!caller.is_admin()).then_some(caller.user_id);
        let disputes = store::list_disputes(&self.inner.database, user, &statuses, offset, limit)
            .await
            .map_err(|error| status(error.into()))?;
        let mut answers = Vec::with_capacity(disputes.len());
        for dispute in &disputes {
            let currency = store::get_order(&self.inner.database, dispute.order_id)
                .await
                .map_err(|error| status(error.into()))?
                .map(|order| order.pricing.currency.code().to_owned())
                .unwrap_or_default();
            answers.push(convert::dispute(dispute, &currency));
        }
        Ok(Response::new(pb::ListDisputesResponse {
            next_page_token: next_token(offset, limit, disputes.len()),
            disputes: answers,
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn offer_second_chance(
        &self,
        request: Request<pb::OfferSecondChanceRequest>,
    ) -> Result<Response<pb::OfferSecondChanceResponse>, Status> {
        let caller = auth::caller(&request)?;
        require_scope(&caller, Scope::Sell)?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "OfferSecondChance",
            &request.request_id,
            &pb::OfferSecondChanceRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .mutate(
                key,
                Box::new(move |tx| {
                    Box::pin(async move {
                        inner
                            .offer_second_chance(tx, &caller, &request, now_ms())
                            .await
                    })
                }),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(offer_id = %request.get_ref().offer_id))]
    async fn accept_second_chance_offer(
        &self,
        request: Request<pb::AcceptSecondChanceOfferRequest>,
    ) -> Result<Response<pb::AcceptSecondChanceOfferResponse>, Status> {
        let caller = auth::caller(&request)?;
        require_scope(&caller, Scope::Payments)?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "AcceptSecondChanceOffer",
            &request.request_id,
            &pb::AcceptSecondChanceOfferRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .mutate(
                key,
                Box::new(move |tx| {
                    Box::pin(async move {
                        let (offer, order, events) = inner
                            .answer_offer(tx, &caller, &request.offer_id, true, now_ms())
                            .await?;
                        Ok((
                            pb::AcceptSecondChanceOfferResponse {
                                offer: Some(convert::offer(&offer)),
                                order: order.as_ref().map(convert::order),
                            },
                            events,
                        ))
                    })
                }),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(offer_id = %request.get_ref().offer_id))]
    async fn decline_second_chance_offer(
        &self,
        request: Request<pb::DeclineSecondChanceOfferRequest>,
    ) -> Result<Response<pb::DeclineSecondChanceOfferResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let key = request_key(
            &caller,
            "DeclineSecondChanceOffer",
            &request.request_id,
            &pb::DeclineSecondChanceOfferRequest {
                request_id: String::new(),
                ..request.clone()
            },
        )
        .map_err(status)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .mutate(
                key,
                Box::new(move |tx| {
                    Box::pin(async move {
                        let (offer, _, events) = inner
                            .answer_offer(tx, &caller, &request.offer_id, false, now_ms())
                            .await?;
                        Ok((
                            pb::DeclineSecondChanceOfferResponse {
                                offer: Some(convert::offer(&offer)),
                            },
                            events,
                        ))
                    })
                }),
            )
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_second_chance_offers(
        &self,
        request: Request<pb::ListSecondChanceOffersRequest>,
    ) -> Result<Response<pb::ListSecondChanceOffersResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let (offset, limit) =
            page(request.page_size, &request.page_token, 20, 100).map_err(status)?;
        let as_seller = request.role == pb::SecondChanceRole::Seller as i32;
        let statuses: Vec<String> = request
            .statuses
            .iter()
            .filter_map(
                |value| match pb::SecondChanceOfferStatus::try_from(*value).ok()? {
                    pb::SecondChanceOfferStatus::Pending => Some("PENDING".to_owned()),
                    pb::SecondChanceOfferStatus::Accepted => Some("ACCEPTED".to_owned()),
                    pb::SecondChanceOfferStatus::Declined => Some("DECLINED".to_owned()),
                    pb::SecondChanceOfferStatus::Expired => Some("EXPIRED".to_owned()),
                    pb::SecondChanceOfferStatus::Unspecified => None,
                },
            )
            .collect();
        let offers = store::list_offers(
            &self.inner.database,
            caller.user_id,
            as_seller,
            &statuses,
            offset,
            limit,
        )
        .await
        .map_err(|error| status(error.into()))?;
        Ok(Response::new(pb::ListSecondChanceOffersResponse {
            next_page_token: next_token(offset, limit, offers.len()),
            offers: offers.iter().map(convert::offer).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let account_type = convert::account_type_name(request.account_type);
        let filter = EntryFilter {
            account_type: account_type.map(str::to_owned),
            owner_id: (!request.owner_id.is_empty()).then(|| request.owner_id.clone()),
            currency: (!request.currency.is_empty()).then(|| request.currency.clone()),
            order_id: (!request.order_id.is_empty()).then(|| request.order_id.clone()),
            posting_id: (!request.posting_id.is_empty()).then(|| request.posting_id.clone()),
            posting_type: convert::posting_type_name(request.posting_type).map(str::to_owned),
            start_ms: request.start_time.as_ref().map(ms_from_timestamp),
            end_ms: request.end_time.as_ref().map(ms_from_timestamp),
        };
        if !caller.is_admin() {
            let own_account = filter.owner_id.as_deref() == Some(&caller.user_id.to_string())
                && matches!(account_type, None | Some("BUYER" | "SELLER"));
            let own_order = match &filter.order_id {
                Some(order_id) => match order_id.parse::<Uuid>() {
                    Ok(order_id) => store::get_order(&self.inner.database, order_id)
                        .await
                        .map_err(|error| status(error.into()))?
                        .is_some_and(|order| is_party(&caller, &order)),
                    Err(_) => false,
                },
                None => false,
            };
            if !own_account && !own_order {
                return Err(status(PaymentError::NotOwner("account")));
            }
        }
        let (offset, limit) =
            page(request.page_size, &request.page_token, 100, 1_000).map_err(status)?;
        let entries = store::list_entries(&self.inner.database, &filter, offset, limit)
            .await
            .map_err(|error| status(error.into()))?;
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            next_page_token: next_token(offset, limit, entries.len()),
            entries: entries.iter().map(convert::entry).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_account_balance(
        &self,
        request: Request<pb::GetAccountBalanceRequest>,
    ) -> Result<Response<pb::GetAccountBalanceResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let invalid = |message| {
            status(PaymentError::Validation {
                field: "account",
                message,
            })
        };
        let account = request
            .account
            .clone()
            .ok_or_else(|| invalid("is required"))?;
        let type_name = convert::account_type_name(account.account_type)
            .ok_or_else(|| invalid("account_type is required"))?;
        let currency = Currency::parse(&account.currency)
            .ok_or_else(|| invalid("currency must be an ISO 4217 code"))?;
        let owned = matches!(type_name, "BUYER" | "SELLER");
        if owned == account.owner_id.is_empty() {
            return Err(invalid(
                "owner_id is required for BUYER and SELLER accounts and must be empty otherwise",
            ));
        }
        if !(caller.is_admin() || (owned && account.owner_id == caller.user_id.to_string())) {
            return Err(status(PaymentError::NotOwner("account")));
        }
        let as_of_ms = request
            .as_of_time
            .as_ref()
            .map_or_else(now_ms, ms_from_timestamp);
        let filter = EntryFilter {
            account_type: Some(type_name.to_owned()),
            owner_id: Some(account.owner_id.clone()),
            currency: Some(currency.code().to_owned()),
            end_ms: Some(as_of_ms.saturating_add(1)),
            ..EntryFilter::default()
        };
        let mut snapshot = Transaction::begin_snapshot(&self.inner.database)
            .await
            .map_err(|error| status(error.into()))?;
        let (debits, credits, count) = store::totals(&mut snapshot, &filter)
            .await
            .map_err(|error| status(error.into()))?;
        let _ = snapshot.rollback().await;
        Ok(Response::new(pb::GetAccountBalanceResponse {
            account: Some(account),
            balance: Some(Money::from_minor(currency, credits - debits).to_proto()),
            total_debits: Some(Money::from_minor(currency, debits).to_proto()),
            total_credits: Some(Money::from_minor(currency, credits).to_proto()),
            entry_count: u64::try_from(count).unwrap_or(0),
            as_of_time: Some(timestamp_from_ms(as_of_ms)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_payouts(
        &self,
        request: Request<pb::ListPayoutsRequest>,
    ) -> Result<Response<pb::ListPayoutsResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let seller = if request.seller_id.is_empty() {
            caller.user_id
        } else {
            parse_id("seller_id", &request.seller_id).map_err(status)?
        };
        if !caller.is_user(seller) && !caller.is_admin() {
            return Err(status(PaymentError::NotOwner("seller")));
        }
        page(request.page_size, &request.page_token, 20, 100).map_err(status)?;
        let mut balances = Vec::new();
        let mut snapshot = Transaction::begin_snapshot(&self.inner.database)
            .await
            .map_err(|error| status(error.into()))?;
        let currencies = store::currencies(&mut snapshot)
            .await
            .map_err(|error| status(error.into()))?;
        for code in currencies {
            let Some(currency) = Currency::parse(&code) else {
                continue;
            };
            let filter = EntryFilter {
                account_type: Some("SELLER".to_owned()),
                owner_id: Some(seller.to_string()),
                currency: Some(code),
                ..EntryFilter::default()
            };
            let (debits, credits, count) = store::totals(&mut snapshot, &filter)
                .await
                .map_err(|error| status(error.into()))?;
            if count > 0 {
                balances.push(Money::from_minor(currency, credits - debits).to_proto());
            }
        }
        let _ = snapshot.rollback().await;
        // No payout sweep runs yet, so there are no payouts to list.
        Ok(Response::new(pb::ListPayoutsResponse {
            payouts: Vec::new(),
            next_page_token: String::new(),
            available_balances: balances,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn reconcile_ledger(
        &self,
        request: Request<pb::ReconcileLedgerRequest>,
    ) -> Result<Response<pb::ReconcileLedgerResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_admin()?;
        let request = request.into_inner();
        let as_of_ms = request
            .as_of_time
            .as_ref()
            .map_or_else(now_ms, ms_from_timestamp);
        let end_ms = Some(as_of_ms.saturating_add(1));
        let internal = |error: store::StoreError| status(error.into());
        // Every figure from one snapshot: a release committing meanwhile
        // must not show up in the escrow balance but not in the holds.
        let mut snapshot = Transaction::begin_snapshot(&self.inner.database)
            .await
            .map_err(internal)?;
        let database = &mut snapshot;
        let mut codes = store::currencies(database).await.map_err(internal)?;
        if !request.currency.is_empty() {
            codes.retain(|code| *code == request.currency);
            if codes.is_empty() {
                codes.push(request.currency.clone());
            }
        }
        let mut balanced = true;
        let mut currencies = Vec::new();
        for code in codes {
            let currency = Currency::parse(&code).ok_or_else(|| {
                status(PaymentError::Validation {
                    field: "currency",
                    message: "must be an ISO 4217 code",
                })
            })?;
            let all = EntryFilter {
                currency: Some(code.clone()),
                end_ms,
                ..EntryFilter::default()
            };
            let (debits, credits, _) = store::totals(database, &all).await.map_err(internal)?;
            let escrow = EntryFilter {
                account_type: Some("ESCROW".to_owned()),
                ..all.clone()
            };
            let (escrow_debits, escrow_credits, _) =
                store::totals(database, &escrow).await.map_err(internal)?;
            let unbalanced = store::unbalanced_postings(database, &code, end_ms)
                .await
                .map_err(internal)?;
            let ledger_holds: std::collections::HashMap<String, i64> =
                store::escrow_by_order(database, &code, end_ms)
                    .await
                    .map_err(internal)?
                    .into_iter()
                    .collect();
            let orders = store::orders_in_currency(database, &code)
                .await
                .map_err(internal)?;
            let mut open_total = 0_i64;
            let mut open_count = 0_u32;
            let mut discrepancies = Vec::new();
            for order in &orders {
                let expected = order.money(order.facts().held()).minor().unwrap_or(0);
                if order.status.holds_escrow() {
                    open_total += expected;
                    open_count += 1;
                }
                let booked = ledger_holds
                    .get(&order.order_id.to_string())
                    .copied()
                    .unwrap_or(0);
                if booked != expected && discrepancies.len() < 100 {
                    discrepancies.push(pb::ReconciliationDiscrepancy {
                        order_id: order.order_id.to_string(),
                        expected_hold: Some(Money::from_minor(currency, expected).to_proto()),
                        ledger_hold: Some(Money::from_minor(currency, booked).to_proto()),
                        description: format!(
                            "order is {} but escrow holds {}",
                            order.status.as_str(),
                            Money::from_minor(currency, booked).text()
                        ),
                    });
                }
            }
            let pending = store::pending_attempt_count(database, &code)
                .await
                .map_err(internal)?;
            let escrow_balance = escrow_credits - escrow_debits;
            let net = credits - debits;
            let matches = escrow_balance == open_total && discrepancies.is_empty();
            balanced &= net == 0 && unbalanced == 0 && matches;
            currencies.push(pb::CurrencyReconciliation {
                currency: code.clone(),
                total_debits: Some(Money::from_minor(currency, debits).to_proto()),
                total_credits: Some(Money::from_minor(currency, credits).to_proto()),
                net: Some(Money::from_minor(currency, net).to_proto()),
                postings_balanced: unbalanced == 0,
                escrow_balance: Some(Money::from_minor(currency, escrow_balance).to_proto()),
                open_holds_total: Some(Money::from_minor(currency, open_total).to_proto()),
                open_hold_count: open_count,
                escrow_matches_holds: matches,
                pending_payment_count: u32::try_from(pending).unwrap_or(u32::MAX),
                discrepancies,
            });
        }
        let _ = snapshot.rollback().await;
        Ok(Response::new(pb::ReconcileLedgerResponse {
            balanced,
            currencies,
            as_of_time: Some(timestamp_from_ms(as_of_ms)),
        }))
    }
}

//! Stored records to the contract's messages, and the order events this
//! service publishes on the bus (topic `order`, key = order id).

use auction_platform::bus::{Envelope, TOPIC_ORDER, timestamp_from_ms};
use auction_proto::v1 as pb;

use crate::rules::OrderStatus;
use crate::store::{AttemptRecord, DisputeRecord, EntryRecord, OfferRecord, OrderRecord};

/// The producer name on every envelope.
pub const PRODUCER: &str = "payment";

fn time(ms: i64) -> Option<prost_types::Timestamp> {
    Some(timestamp_from_ms(ms))
}

fn opt_time(ms: Option<i64>) -> Option<prost_types::Timestamp> {
    ms.map(timestamp_from_ms)
}

/// The contract's status.
pub fn status_to_proto(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::AwaitingPayment => pb::OrderStatus::AwaitingPayment,
        OrderStatus::PaymentPending => pb::OrderStatus::PaymentPending,
        OrderStatus::Paid => pb::OrderStatus::Paid,
        OrderStatus::Shipped => pb::OrderStatus::Shipped,
        OrderStatus::Released => pb::OrderStatus::Released,
        OrderStatus::Refunded => pb::OrderStatus::Refunded,
        OrderStatus::PartiallyRefunded => pb::OrderStatus::PartiallyRefunded,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        OrderStatus::Disputed => pb::OrderStatus::Disputed,
    }
}

/// Our status from the contract's (`None` for UNSPECIFIED or unknown).
pub fn status_from_proto(value: i32) -> Option<OrderStatus> {
    match pb::OrderStatus::try_from(value).ok()? {
        pb::OrderStatus::Unspecified => None,
        pb::OrderStatus::AwaitingPayment => Some(OrderStatus::AwaitingPayment),
        pb::OrderStatus::PaymentPending => Some(OrderStatus::PaymentPending),
        pb::OrderStatus::Paid => Some(OrderStatus::Paid),
        pb::OrderStatus::Shipped => Some(OrderStatus::Shipped),
        pb::OrderStatus::Released => Some(OrderStatus::Released),
        pb::OrderStatus::Refunded => Some(OrderStatus::Refunded),
        pb::OrderStatus::PartiallyRefunded => Some(OrderStatus::PartiallyRefunded),
        pb::OrderStatus::Cancelled => Some(OrderStatus::Cancelled),
        pb::OrderStatus::Disputed => Some(OrderStatus::Disputed),
    }
}

/// An order on the wire.
pub fn order(record: &OrderRecord) -> pb::Order {
    let pricing = &record.pricing;
    let money = |amount| Some(record.money(amount).to_proto());
    let mut fees = vec![pb::Fee {
        kind: pb::FeeKind::BuyersPremium as i32,
        amount: money(pricing.buyers_premium),
        rate_bps: pricing.buyers_premium_bps,
        description: format!("Buyer's premium {} bps", pricing.buyers_premium_bps),
    }];
    if !pricing.buyer_service_fee.is_zero() {
        fees.push(pb::Fee {
            kind: pb::FeeKind::BuyerServiceFee as i32,
            amount: money(pricing.buyer_service_fee),
            rate_bps: 0,
            description: "Buyer service fee".to_owned(),
        });
    }
    fees.push(pb::Fee {
        kind: pb::FeeKind::SellerCommission as i32,
        amount: money(pricing.seller_commission),
        rate_bps: pricing.seller_commission_bps,
        description: format!("Seller commission {} bps", pricing.seller_commission_bps),
    });
    pb::Order {
        order_id: record.order_id.to_string(),
        auction_id: record.auction_id.clone(),
        item_id: record.item_id.clone(),
        title: record.title.clone(),
        seller_id: record.seller_id.to_string(),
        buyer_id: record.buyer_id.to_string(),
        status: status_to_proto(record.status) as i32,
        currency: pricing.currency.code().to_owned(),
        quantity: pricing.quantity,
        unit_price: money(pricing.unit_price),
        hammer_price: money(pricing.hammer_price),
        fees,
        total_due: money(pricing.total_due),
        seller_proceeds: money(pricing.seller_proceeds),
        refunded_amount: money(record.refunded),
        payment_due_time: time(record.payment_due_at_ms),
        auto_release_time: opt_time(record.auto_release_at_ms),
        shipment: record.shipped_at_ms.map(|shipped_at_ms| pb::Shipment {
            carrier: record.carrier.clone().unwrap_or_default(),
            tracking_number: record.tracking_number.clone().unwrap_or_default(),
            tracking_url: record.tracking_url.clone().unwrap_or_default(),
            ship_time: time(shipped_at_ms),
        }),
        dispute_id: record
            .dispute_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        second_chance_offer_id: record
            .second_chance_offer_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        create_time: time(record.created_at_ms),
        paid_time: opt_time(record.paid_at_ms),
        complete_time: opt_time(record.completed_at_ms),
        update_time: time(record.updated_at_ms),
    }
}

/// A payment attempt on the wire.
pub fn attempt(record: &AttemptRecord) -> pb::PaymentAttempt {
    let status = match record.status.as_str() {
        "PENDING" => pb::PaymentAttemptStatus::Pending,
        "SUCCEEDED" => pb::PaymentAttemptStatus::Succeeded,
        "DECLINED" => pb::PaymentAttemptStatus::Declined,
        "FAILED" => pb::PaymentAttemptStatus::Failed,
        _ => pb::PaymentAttemptStatus::Unspecified,
    };
    pb::PaymentAttempt {
        attempt_id: record.attempt_id.to_string(),
        order_id: record.order_id.to_string(),
        amount: Some(record.amount.to_proto()),
        status: status as i32,
        failure_reason: record.failure_reason.clone(),
        provider_reference: record.provider_reference.clone(),
        payment_method_description: record.method_description.clone(),
        create_time: time(record.created_at_ms),
        complete_time: opt_time(record.completed_at_ms),
    }
}

/// A dispute on the wire; `currency` is the order's.
pub fn dispute(record: &DisputeRecord, currency: &str) -> pb::Dispute {
    let reason = match record.reason.as_str() {
        "NOT_RECEIVED" => pb::DisputeReason::NotReceived,
        "NOT_AS_DESCRIBED" => pb::DisputeReason::NotAsDescribed,
        _ => pb::DisputeReason::Unspecified,
    };
    let resolution = match record.resolution.as_deref() {
        Some("REFUND") => pb::DisputeResolution::Refund,
        Some("PARTIAL_REFUND") => pb::DisputeResolution::PartialRefund,
        Some("RELEASE") => pb::DisputeResolution::Release,
        _ => pb::DisputeResolution::Unspecified,
    };
    pb::Dispute {
        dispute_id: record.dispute_id.to_string(),
        order_id: record.order_id.to_string(),
        buyer_id: record.buyer_id.to_string(),
        seller_id: record.seller_id.to_string(),
        reason: reason as i32,
        status: dispute_status(&record.status) as i32,
        messages: record
            .messages
            .iter()
            .map(|message| pb::DisputeMessage {
                author_id: message.author_id.clone(),
                party: match message.party.as_str() {
                    "BUYER" => pb::DisputeParty::Buyer,
                    "SELLER" => pb::DisputeParty::Seller,
                    "ADMIN" => pb::DisputeParty::Admin,
                    _ => pb::DisputeParty::Unspecified,
                } as i32,
                body: message.body.clone(),
                create_time: time(message.created_at_ms),
            })
            .collect(),
        respond_by_time: time(record.respond_by_ms),
        resolution: resolution as i32,
        refund_amount: record.refund_amount.as_ref().map(|amount| pb::Money {
            currency: currency.to_owned(),
            amount: amount.clone(),
        }),
        resolution_note: record.resolution_note.clone(),
        create_time: time(record.created_at_ms),
        resolve_time: opt_time(record.resolved_at_ms),
    }
}

/// The contract's dispute status from the stored name.
pub fn dispute_status(status: &str) -> pb::DisputeStatus {
    match status {
        "OPEN" => pb::DisputeStatus::Open,
        "RESPONDED" => pb::DisputeStatus::Responded,
        "RESOLVED" => pb::DisputeStatus::Resolved,
        _ => pb::DisputeStatus::Unspecified,
    }
}

/// A second-chance offer on the wire.
pub fn offer(record: &OfferRecord) -> pb::SecondChanceOffer {
    let status = match record.status.as_str() {
        "PENDING" => pb::SecondChanceOfferStatus::Pending,
        "ACCEPTED" => pb::SecondChanceOfferStatus::Accepted,
        "DECLINED" => pb::SecondChanceOfferStatus::Declined,
        "EXPIRED" => pb::SecondChanceOfferStatus::Expired,
        _ => pb::SecondChanceOfferStatus::Unspecified,
    };
    pb::SecondChanceOffer {
        offer_id: record.offer_id.to_string(),
        auction_id: record.auction_id.clone(),
        original_order_id: record.original_order_id.to_string(),
        seller_id: record.seller_id.to_string(),
        recipient_id: record.recipient_id.to_string(),
        recipient_handle: String::new(),
        price: Some(record.price.to_proto()),
        status: status as i32,
        expire_time: time(record.expire_at_ms),
        order_id: record.order_id.map(|id| id.to_string()).unwrap_or_default(),
        create_time: time(record.created_at_ms),
    }
}

/// The contract's account type from the stored name.
pub fn account_type(name: &str) -> pb::LedgerAccountType {
    match name {
        "BUYER" => pb::LedgerAccountType::Buyer,
        "ESCROW" => pb::LedgerAccountType::Escrow,
        "SELLER" => pb::LedgerAccountType::Seller,
        "PLATFORM_FEES" => pb::LedgerAccountType::PlatformFees,
        "PAYOUTS" => pb::LedgerAccountType::Payouts,
        _ => pb::LedgerAccountType::Unspecified,
    }
}

/// The stored name of a contract account type (`None` for UNSPECIFIED).
pub fn account_type_name(value: i32) -> Option<&'static str> {
    match pb::LedgerAccountType::try_from(value).ok()? {
        pb::LedgerAccountType::Unspecified => None,
        pb::LedgerAccountType::Buyer => Some("BUYER"),
        pb::LedgerAccountType::Escrow => Some("ESCROW"),
        pb::LedgerAccountType::Seller => Some("SELLER"),
        pb::LedgerAccountType::PlatformFees => Some("PLATFORM_FEES"),
        pb::LedgerAccountType::Payouts => Some("PAYOUTS"),
    }
}

/// The stored name of a contract posting type (`None` for UNSPECIFIED).
pub fn posting_type_name(value: i32) -> Option<&'static str> {
    match pb::PostingType::try_from(value).ok()? {
        pb::PostingType::Unspecified => None,
        pb::PostingType::PaymentCaptured => Some("PAYMENT_CAPTURED"),
        pb::PostingType::EscrowReleased => Some("ESCROW_RELEASED"),
        pb::PostingType::Refund => Some("REFUND"),
        pb::PostingType::Payout => Some("PAYOUT"),
        pb::PostingType::Adjustment => Some("ADJUSTMENT"),
    }
}

/// A ledger entry on the wire.
pub fn entry(record: &EntryRecord) -> pb::LedgerEntry {
    let posting_type = match record.posting_type.as_str() {
        "PAYMENT_CAPTURED" => pb::PostingType::PaymentCaptured,
        "ESCROW_RELEASED" => pb::PostingType::EscrowReleased,
        "REFUND" => pb::PostingType::Refund,
        "PAYOUT" => pb::PostingType::Payout,
        "ADJUSTMENT" => pb::PostingType::Adjustment,
        _ => pb::PostingType::Unspecified,
    };
    pb::LedgerEntry {
        entry_id: record.entry_id.clone(),
        posting_id: record.posting_id.clone(),
        posting_type: posting_type as i32,
        account: Some(pb::LedgerAccount {
            account_type: account_type(&record.account_type) as i32,
            owner_id: record.owner_id.clone(),
            currency: record.currency.clone(),
        }),
        direction: if record.direction == "DEBIT" {
            pb::EntryDirection::Debit
        } else {
            pb::EntryDirection::Credit
        } as i32,
        amount: Some(pb::Money {
            currency: record.currency.clone(),
            amount: record.amount.clone(),
        }),
        order_id: record.order_id.clone(),
        payout_id: record.payout_id.clone(),
        create_time: time(record.created_at_ms),
        description: record.description.clone(),
    }
}

/// A `BusOrderEvent` envelope about `record`.
pub fn order_event(record: &OrderRecord, kind: pb::bus_order_event::Kind, now_ms: i64) -> Envelope {
    let payload = pb::BusOrderEvent {
        order_id: record.order_id.to_string(),
        auction_id: record.auction_id.clone(),
        buyer_id: record.buyer_id.to_string(),
        seller_id: record.seller_id.to_string(),
        event_time: time(now_ms),
        title: record.title.clone(),
        kind: Some(kind),
    };
    Envelope::new(
        PRODUCER,
        TOPIC_ORDER,
        record.order_id.to_string(),
        now_ms,
        &payload,
    )
}

/// The event announcing `record`'s creation.
pub fn created_event(record: &OrderRecord, now_ms: i64) -> Envelope {
    order_event(
        record,
        pb::bus_order_event::Kind::Created(pb::BusOrderCreated {
            total_due: Some(record.money(record.pricing.total_due).to_proto()),
            payment_due_time: time(record.payment_due_at_ms),
        }),
        now_ms,
    )
}

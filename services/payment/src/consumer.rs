//! The bus consumer (group `payment`, topic `auction`): every award of a
//! sold auction becomes an order, and every bid's private amount is kept as
//! that bidder's last bid for second-chance offers. The events the bus hands
//! over together (`Batched`) are applied in one transaction: one statement
//! marks them all processed by event id and says which are new, the bids
//! go in at the end as one upsert per chunk (each bidder's latest per
//! auction); the order id is derived from
//! the award (auction, engine sequence, award index) and its origin key is
//! unique, so a close delivered twice — even re-staged under a new event id —
//! creates one order.

use std::sync::Arc;

use auction_platform::bus::{ApplyEvents, BoxFuture, Envelope, HandleError, TOPIC_AUCTION};
use auction_proto::v1 as pb;
use sha2::Digest as _;
use uuid::Uuid;

use crate::Inner;
use crate::convert;
use crate::money::Money;
use crate::rules::{self, OrderStatus};
use crate::sql::Transaction;
use crate::store::{self, OrderRecord};

/// The consumer group of the payment service.
pub const GROUP: &str = "payment";

/// A UUIDv7 with the time `at_ms` whose other bits come from `name`: the
/// same name always gives the same id, and ids still sort by time.
pub fn derived_v7(at_ms: i64, name: &str) -> Uuid {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut random = [0_u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(at_ms).unwrap_or(0), &random)
        .into_uuid()
}

/// What an order is made from.
pub struct NewOrder<'a> {
    /// Unique origin key.
    pub origin_key: String,
    /// Time for the id.
    pub id_time_ms: i64,
    /// Auction.
    pub auction_id: &'a str,
    /// Title.
    pub title: &'a str,
    /// Seller.
    pub seller_id: Uuid,
    /// Buyer.
    pub buyer_id: Uuid,
    /// Price per unit.
    pub unit_price: Money,
    /// Units.
    pub quantity: u32,
    /// The offer it came from.
    pub second_chance_offer_id: Option<Uuid>,
}

/// Builds the record of a new order, AWAITING_PAYMENT until the deadline.
pub fn new_order(
    inner: &Inner,
    order: &NewOrder<'_>,
    now_ms: i64,
) -> Result<OrderRecord, rules::RuleError> {
    let pricing = rules::price(order.unit_price, order.quantity, &inner.settings.fees)?;
    Ok(OrderRecord {
        order_id: derived_v7(order.id_time_ms, &order.origin_key),
        origin_key: order.origin_key.clone(),
        auction_id: order.auction_id.to_owned(),
        // The close event does not carry the item; the auction id is the
        // listing id.
        item_id: String::new(),
        title: order.title.to_owned(),
        seller_id: order.seller_id,
        buyer_id: order.buyer_id,
        status: OrderStatus::AwaitingPayment,
        pricing,
        refunded: rust_decimal::Decimal::ZERO,
        payment_due_at_ms: now_ms.saturating_add(inner.settings.payment_due_ms),
        auto_release_at_ms: None,
        carrier: None,
        tracking_number: None,
        tracking_url: None,
        shipped_at_ms: None,
        dispute_id: None,
        second_chance_offer_id: order.second_chance_offer_id,
        created_at_ms: now_ms,
        paid_at_ms: None,
        completed_at_ms: None,
        updated_at_ms: now_ms,
        version: 1,
    })
}

/// Consumes auction events.
pub struct Consumer {
    /// The service.
    pub inner: Arc<Inner>,
}

impl Consumer {
    /// Applies the relevant ones of `events` in order in one transaction
    /// (none when no event is relevant); wakes the relay when orders were
    /// made.
    async fn apply(
        &self,
        events: Vec<(&Envelope, &pb::BusAuctionEvent)>,
    ) -> Result<(), HandleError> {
        if events.is_empty() {
            return Ok(());
        }
        let now_ms = crate::now_ms();
        let mut tx = Transaction::begin(&self.inner.database).await?;
        let ids: Vec<String> = events
            .iter()
            .map(|(envelope, _)| envelope.event_id.to_string())
            .collect();
        // One statement marks the batch; `remove`: an event twice in one
        // batch applies once.
        let mut fresh = store::mark_processed(&mut tx, &ids, now_ms).await?;
        let mut bids = Vec::new();
        let mut created = 0;
        for ((envelope, event), event_id) in events.into_iter().zip(&ids) {
            if fresh.remove(event_id) {
                created += consume(
                    &self.inner,
                    &mut tx,
                    event,
                    envelope.occurred_at_ms,
                    now_ms,
                    &mut bids,
                )
                .await?;
            }
        }
        store::record_bids(&mut tx, &bids).await?;
        tx.commit().await?;
        if created > 0 {
            self.inner.relay.wake();
        }
        Ok(())
    }
}

/// The events of a batch the payment service acts on: bids and sales.
fn relevant<'a>(
    events: impl Iterator<Item = (&'a Envelope, &'a Option<pb::BusAuctionEvent>)>,
) -> Vec<(&'a Envelope, &'a pb::BusAuctionEvent)> {
    use pb::bus_auction_event::Kind;
    events
        .filter_map(|(envelope, event)| Some((envelope, event.as_ref()?)))
        .filter(|(_, event)| matches!(event.kind, Some(Kind::Sold(_) | Kind::BidPlaced(_))))
        .collect()
}

impl ApplyEvents for Consumer {
    /// `None`: another topic's message, not ours to judge.
    type Event = Option<pb::BusAuctionEvent>;

    fn decode(&self, envelope: &Envelope) -> Result<Self::Event, HandleError> {
        if envelope.topic != TOPIC_AUCTION {
            return Ok(None);
        }
        Ok(Some(envelope.decode()?))
    }

    fn apply_together<'a>(
        &'a self,
        events: &'a [(&'a Envelope, Self::Event)],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(self.apply(relevant(
            events.iter().map(|(envelope, event)| (*envelope, event)),
        )))
    }

    fn apply_alone<'a>(
        &'a self,
        envelope: &'a Envelope,
        event: &'a Self::Event,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(self.apply(relevant(std::iter::once((envelope, event)))))
    }
}

/// Handles one new auction event inside `tx` (a bid joins `bids`, written
/// at the end of the batch); returns the orders made.
async fn consume(
    inner: &Inner,
    tx: &mut Transaction,
    event: &pb::BusAuctionEvent,
    occurred_at_ms: i64,
    now_ms: i64,
    bids: &mut Vec<store::BidRecord>,
) -> Result<usize, HandleError> {
    use pb::bus_auction_event::Kind;
    let mut created = 0;
    match &event.kind {
        Some(Kind::BidPlaced(bid)) => {
            if let (Some(amount), Ok(bidder)) = (&bid.bid_amount, bid.bidder_id.parse::<Uuid>()) {
                match Money::from_proto(amount) {
                    Ok(amount) => bids.push(store::BidRecord {
                        auction_id: event.auction_id.clone(),
                        bidder_id: bidder,
                        amount,
                        sequence: i64::try_from(event.sequence).unwrap_or(i64::MAX),
                    }),
                    Err(error) => {
                        tracing::warn!(auction_id = %event.auction_id, %error, "bid amount ignored")
                    }
                }
            }
        }
        Some(Kind::Sold(sold)) => {
            let seller_id: Uuid = event
                .seller_id
                .parse()
                .map_err(|_| format!("sold event without a seller id: {}", event.auction_id))?;
            let id_time_ms = event
                .event_time
                .as_ref()
                .map_or(occurred_at_ms, auction_platform::bus::ms_from_timestamp);
            let mut envelopes = Vec::new();
            for (index, award) in sold.awards.iter().enumerate() {
                let buyer_id: Uuid = award
                    .winner_id
                    .parse()
                    .map_err(|_| format!("award without a winner id: {}", event.auction_id))?;
                let unit_price = award
                    .price
                    .as_ref()
                    .ok_or("award without a price")
                    .and_then(|price| {
                        Money::from_proto(price).map_err(|_| "award price invalid")
                    })?;
                let record = new_order(
                    inner,
                    &NewOrder {
                        origin_key: format!("{}/{}/{index}", event.auction_id, event.sequence),
                        id_time_ms,
                        auction_id: &event.auction_id,
                        title: &event.title,
                        seller_id,
                        buyer_id,
                        unit_price,
                        quantity: award.quantity.max(1),
                        second_chance_offer_id: None,
                    },
                    now_ms,
                )?;
                if store::insert_order(tx, &record).await? {
                    envelopes.push(convert::created_event(&record, now_ms));
                    created += 1;
                    tracing::info!(order_id = %record.order_id, auction_id = %event.auction_id, "order created");
                }
            }
            tx.stage(&envelopes).await?;
        }
        _ => {}
    }
    Ok(created)
}

//! What the user service knows of orders: the payment service's
//! `BusOrderEvent`s (topic `order`, consumed as group `user`) folded into
//! one `order_facts` row per order, which LeaveFeedback reads (buyer,
//! seller, creation time, paid).
//!
//! Delivery is at least once and not ordered across events of one order
//! (a retried handler, a claimed Redis entry), so the fold is idempotent
//! and commutative: the earliest event time is the creation time and the
//! paid flag only turns on (see [`store::upsert_order_fact`]).

use std::sync::Arc;

use auction_platform::Database;
use auction_platform::Shutdown;
use auction_platform::bus::{
    BoxFuture, Envelope, EventBus, HandleError, Handler, Subscription, TOPIC_ORDER,
    ms_from_timestamp,
};
use auction_proto::v1::{BusOrderEvent, bus_order_event};
use uuid::Uuid;

use crate::store::{self, OrderFact};

/// The consumer group of the user service.
pub const GROUP: &str = "user";

/// Starts consuming order events into `database` until `shutdown`.
pub fn subscribe(bus: &Arc<dyn EventBus>, database: Database, shutdown: Shutdown) {
    bus.subscribe(
        Subscription {
            group: GROUP.to_owned(),
            topics: vec![TOPIC_ORDER.to_owned()],
            shutdown,
        },
        Arc::new(OrderConsumer { database }),
    );
}

/// Folds order events into `order_facts`.
struct OrderConsumer {
    /// The user service's database.
    database: Database,
}

impl Handler for OrderConsumer {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let event: BusOrderEvent = envelope.decode()?;
            let fact = fact_of(&event, envelope.occurred_at_ms).map_err(|error| {
                // Retried, then dead-lettered by the bus: a malformed event
                // is the producer's bug, worth seeing in the log.
                tracing::warn!(event_id = %envelope.event_id, error, "malformed order event");
                HandleError::from(error)
            })?;
            store::upsert_order_fact(&self.database, &fact).await?;
            Ok(())
        })
    }
}

/// What `event` says about its order. `occurred_at_ms` (the envelope's
/// time) stands in for a missing `event_time`.
pub fn fact_of(event: &BusOrderEvent, occurred_at_ms: i64) -> Result<OrderFact, &'static str> {
    let id = |value: &str, what: &'static str| value.parse::<Uuid>().map_err(|_| what);
    Ok(OrderFact {
        order_id: id(&event.order_id, "order_id is not a UUID")?,
        auction_id: id(&event.auction_id, "auction_id is not a UUID")?,
        buyer_id: id(&event.buyer_id, "buyer_id is not a UUID")?,
        seller_id: id(&event.seller_id, "seller_id is not a UUID")?,
        created_at_ms: event
            .event_time
            .as_ref()
            .map_or(occurred_at_ms, ms_from_timestamp),
        paid: proves_payment(event.kind.as_ref().ok_or("no kind")?),
    })
}

/// Whether an event of this kind can only happen to a paid order.
fn proves_payment(kind: &bus_order_event::Kind) -> bool {
    use bus_order_event::Kind;
    match kind {
        // Payment moved the money into escrow; shipping, release, refunds
        // and disputes happen only to orders whose money is there.
        Kind::Paid(_)
        | Kind::Shipped(_)
        | Kind::Released(_)
        | Kind::Refunded(_)
        | Kind::DisputeUpdated(_) => true,
        // A new order, a reminder to pay, and a second chance offered after
        // the order was cancelled unpaid.
        Kind::Created(_) | Kind::PaymentDue(_) | Kind::SecondChanceOffered(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use auction_platform::bus::timestamp_from_ms;
    use auction_proto::v1::{BusOrderCreated, BusOrderPaid};

    use super::*;

    fn event(kind: bus_order_event::Kind, at_ms: Option<i64>) -> BusOrderEvent {
        BusOrderEvent {
            order_id: Uuid::now_v7().to_string(),
            auction_id: Uuid::now_v7().to_string(),
            buyer_id: Uuid::now_v7().to_string(),
            seller_id: Uuid::now_v7().to_string(),
            event_time: at_ms.map(timestamp_from_ms),
            title: "Lamp".to_owned(),
            kind: Some(kind),
        }
    }

    // Proves an event's fact carries its parties and time, a payment marks
    // it paid, the envelope's time stands in for a missing event time, and
    // malformed ids or a missing kind are refused.
    #[test]
    fn facts_of_events() {
        let created = event(
            bus_order_event::Kind::Created(BusOrderCreated::default()),
            Some(1_000),
        );
        let fact = fact_of(&created, 5).unwrap();
        assert_eq!(fact.buyer_id.to_string(), created.buyer_id);
        assert_eq!(fact.seller_id.to_string(), created.seller_id);
        assert_eq!(fact.created_at_ms, 1_000);
        assert!(!fact.paid);
        let paid = event(bus_order_event::Kind::Paid(BusOrderPaid::default()), None);
        let fact = fact_of(&paid, 7).unwrap();
        assert!(fact.paid);
        assert_eq!(fact.created_at_ms, 7);
        let mut bad = paid.clone();
        bad.buyer_id = "someone".to_owned();
        assert!(fact_of(&bad, 7).is_err());
        let mut no_kind = paid;
        no_kind.kind = None;
        assert!(fact_of(&no_kind, 7).is_err());
    }
}

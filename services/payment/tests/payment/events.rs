//! Order events on the bus (topic `order`), for notifications.

use std::sync::Arc;
use std::time::Duration;

use auction_platform::Shutdown;
use auction_platform::bus::{
    self, BoxFuture, Envelope, HandleError, Handler, Subscription, TOPIC_ORDER,
};
use auction_proto::v1 as pb;
use auction_testkit::{Backend, with_token};
use tokio::sync::mpsc;

use crate::support::*;

struct Collect(mpsc::UnboundedSender<Envelope>);

impl Handler for Collect {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        let _ = self.0.send(envelope.clone());
        Box::pin(async { Ok(()) })
    }
}

fn kind(envelope: &Envelope) -> &'static str {
    use pb::bus_order_event::Kind;
    match envelope.decode::<pb::BusOrderEvent>().unwrap().kind {
        Some(Kind::Created(_)) => "created",
        Some(Kind::PaymentDue(_)) => "payment due",
        Some(Kind::Paid(_)) => "paid",
        Some(Kind::Shipped(_)) => "shipped",
        Some(Kind::Released(_)) => "released",
        _ => "other",
    }
}

// Proves each step of an order's life is published once on topic `order`,
// in order, keyed by the order id: created, payment due (the deadline is
// within 24 hours), paid, shipped, released.
#[tokio::test]
async fn each_step_is_published_once() {
    let world = world(Backend::Sqlite, |config| {
        config.payment.payment_due_ms = 3_600_000;
    })
    .await;
    let (sender, mut received) = mpsc::unbounded_channel();
    let shutdown = Shutdown::new();
    bus::for_process(&world.app.config).unwrap().subscribe(
        Subscription {
            group: "payment-test".to_owned(),
            topics: vec![TOPIC_ORDER.to_owned()],
            shutdown: shutdown.clone(),
        },
        Arc::new(Collect(sender)),
    );
    let order = new_order(&world, "100.00").await;
    // The deadline is within 24 hours: the background task reminds the
    // buyer at once, before anything else happens to the order.
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let envelope = tokio::time::timeout(WAIT, received.recv())
            .await
            .expect("creation and reminder within the wait")
            .unwrap();
        kinds.push(kind(&envelope));
    }
    assert_eq!(kinds, vec!["created", "payment due"]);
    pay(&world, &order).await;
    ship(&world, &order).await;
    world
        .client
        .clone()
        .confirm_receipt(with_token(
            pb::ConfirmReceiptRequest {
                request_id: "confirm".to_owned(),
                order_id: order.order_id.clone(),
            },
            &world.buyer_token,
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !kinds.contains(&"released") {
        let envelope = tokio::time::timeout_at(deadline, received.recv())
            .await
            .expect("the order's events within the wait")
            .unwrap();
        assert_eq!(envelope.key, order.order_id);
        let event: pb::BusOrderEvent = envelope.decode().unwrap();
        assert_eq!(event.buyer_id, world.buyer.to_string());
        use pb::bus_order_event::Kind;
        kinds.push(match event.kind.unwrap() {
            Kind::Created(created) => {
                assert_eq!(amount(&created.total_due), "106.50");
                "created"
            }
            Kind::Paid(paid) => {
                assert_eq!(amount(&paid.total_paid), "106.50");
                "paid"
            }
            Kind::Shipped(shipped) => {
                assert!(shipped.auto_release_time.is_some());
                "shipped"
            }
            Kind::Released(released) => {
                assert_eq!(amount(&released.seller_proceeds), "90.00");
                "released"
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    // Nothing else follows.
    if let Ok(Some(envelope)) =
        tokio::time::timeout(Duration::from_millis(300), received.recv()).await
    {
        kinds.push(kind(&envelope));
    }
    assert_eq!(
        kinds,
        vec!["created", "payment due", "paid", "shipped", "released"]
    );
    shutdown.trigger();
    world.app.stop().await;
}

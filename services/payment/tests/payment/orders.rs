//! Orders from auction closes delivered on the bus: exactly once, one per
//! Dutch accept.

use auction_testkit::Backend;
use uuid::Uuid;

use crate::support::*;

async fn delivered_twice(backend: Backend) {
    let world = world(backend, |_| {}).await;
    let auction = Uuid::now_v7();
    let close = sold(auction, world.seller, 12, &[(world.buyer, "100.00", 1)]);
    // The same envelope twice (a redelivery), and the same close staged
    // again under a new event id (a producer retry).
    let mut restaged = close.clone();
    restaged.event_id = Uuid::now_v7();
    publish(&world.app, &[close.clone(), close, restaged]).await;
    let first = wait_orders(&world, &world.buyer_token, auction, 1).await;
    // A marker event after the duplicates: once its order exists, every
    // duplicate before it has been handled.
    let marker = Uuid::now_v7();
    publish(
        &world.app,
        &[sold(marker, world.seller, 1, &[(world.buyer, "1.00", 1)])],
    )
    .await;
    wait_orders(&world, &world.buyer_token, marker, 1).await;
    let orders = orders(&world, &world.buyer_token, Some(auction)).await;
    assert_eq!(orders.len(), 1, "one order for one close");
    assert_eq!(orders[0].order_id, first[0].order_id);
    assert_eq!(orders[0].seller_id, world.seller.to_string());
    assert_eq!(orders[0].title, "A brass lamp");
    let due = orders[0].payment_due_time.unwrap().seconds - orders[0].create_time.unwrap().seconds;
    assert_eq!(due, 72 * 3_600, "72 hours to pay by default");
    world.app.stop().await;
}

// Proves a close delivered twice (and re-staged under a new event id)
// creates exactly one order, on SQLite.
#[tokio::test]
async fn a_close_delivered_twice_makes_one_order_on_sqlite() {
    delivered_twice(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn a_close_delivered_twice_makes_one_order_on_postgres() {
    delivered_twice(Backend::Postgres).await;
}

// Proves a multi-unit Dutch sale makes one order per accept, each priced
// for its units, with the premium and fees on top.
#[tokio::test]
async fn dutch_accepts_make_one_order_each() {
    let world = world(Backend::Sqlite, |_| {}).await;
    let auction = Uuid::now_v7();
    let other = Uuid::now_v7();
    publish(
        &world.app,
        &[
            sold(auction, world.seller, 4, &[(world.buyer, "20.00", 2)]),
            sold(auction, world.seller, 7, &[(other, "18.00", 1)]),
            sold(auction, world.seller, 9, &[(world.buyer, "17.00", 3)]),
        ],
    )
    .await;
    let orders = wait_orders(&world, &world.seller_token, auction, 3).await;
    assert_eq!(orders.len(), 3);
    let mine = wait_orders(&world, &world.buyer_token, auction, 2).await;
    let mut hammers: Vec<String> = mine
        .iter()
        .map(|order| amount(&order.hammer_price))
        .collect();
    hammers.sort();
    assert_eq!(hammers, vec!["40.00", "51.00"]);
    let three = mine.iter().find(|order| order.quantity == 3).unwrap();
    assert_eq!(amount(&three.unit_price), "17.00");
    // 51.00 + 5 % (2.55) + 1.50 flat fee.
    assert_eq!(amount(&three.total_due), "55.05");
    assert_eq!(
        three.fees.len(),
        3,
        "premium, service fee and commission lines"
    );
    world.app.stop().await;
}

// Proves ListOrders pages newest first with a token that runs out.
#[tokio::test]
async fn orders_page_newest_first() {
    let world = world(Backend::Sqlite, |_| {}).await;
    let mut made = Vec::new();
    for price in ["10.00", "20.00", "30.00"] {
        made.push(new_order(&world, price).await.order_id);
    }
    let mut client = world.client.clone();
    let list = |token: &str| {
        auction_testkit::with_token(
            auction_proto::v1::ListOrdersRequest {
                page_size: 2,
                page_token: token.to_owned(),
                role: auction_proto::v1::OrderRole::Buyer as i32,
                ..auction_proto::v1::ListOrdersRequest::default()
            },
            &world.buyer_token,
        )
    };
    let first = client.list_orders(list("")).await.unwrap().into_inner();
    assert_eq!(first.orders.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_orders(list(&first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.orders.len(), 1);
    assert!(second.next_page_token.is_empty());
    let listed: Vec<String> = first
        .orders
        .iter()
        .chain(&second.orders)
        .map(|order| order.order_id.clone())
        .collect();
    made.reverse();
    assert_eq!(listed, made);
    world.app.stop().await;
}

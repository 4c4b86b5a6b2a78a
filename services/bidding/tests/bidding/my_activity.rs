//! The per-user RPCs over gRPC: ListMyBids and WatchMyActivity, from the
//! durable per-user index, on SQLite and PostgreSQL.

use std::time::Duration;

use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_testkit::{Backend, spawn_app, spawn_with, with_token};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::*;

fn list(token: &str, request: pb::ListMyBidsRequest) -> tonic::Request<pb::ListMyBidsRequest> {
    with_token(request, token)
}

fn ids(response: &pb::ListMyBidsResponse) -> Vec<String> {
    response
        .positions
        .iter()
        .map(|position| position.state.as_ref().unwrap().auction_id.clone())
        .collect()
}

fn statuses(response: &pb::ListMyBidsResponse) -> Vec<pb::BidStatus> {
    response
        .positions
        .iter()
        .map(|position| position.viewer.as_ref().unwrap().status())
        .collect()
}

/// English parameters without soft close, so a short auction ends on time.
fn hard_close(starting: &str) -> pb::AuctionParameters {
    let mut parameters = english(starting, None);
    if let Some(pb::auction_parameters::FormatParameters::English(english)) =
        parameters.format_parameters.as_mut()
    {
        english.soft_close_window = Some(prost_types::Duration {
            seconds: 0,
            nanos: 0,
        });
    }
    parameters
}

/// Waits (bounded) until the auction reaches a final status.
async fn until_finished(bidding: &mut BiddingServiceClient<Channel>, id: &str) -> pb::AuctionState {
    for _ in 0..100 {
        let current = state(bidding, id).await;
        if matches!(
            current.status(),
            pb::AuctionStatus::Closed | pb::AuctionStatus::Unsold | pb::AuctionStatus::Cancelled
        ) {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("auction {id} did not finish within 10 s");
}

async fn my_bids_are_listed(backend: Backend) {
    let app = spawn_app(backend).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let hour = Duration::from_secs(3_600);
    let first = create(&mut bidding, &actors, english("1.00", None), hour).await;
    // Before any bid: the starting price, no bids.
    assert_eq!(amount(&first.current_price), "1.00");
    assert_eq!(first.bid_count, 0);
    let second = create(&mut bidding, &actors, english("1.00", None), hour).await;
    let third = create(&mut bidding, &actors, english("1.00", None), hour).await;
    let short = create(
        &mut bidding,
        &actors,
        hard_close("1.00"),
        Duration::from_secs(3),
    )
    .await;
    let (a, b, c, d) = (
        first.auction_id.clone(),
        second.auction_id.clone(),
        third.auction_id.clone(),
        short.auction_id.clone(),
    );
    // Alice bids on all four (oldest bid first: d, a, b, c); Bob outbids
    // her on b and d.
    for (index, id) in [&d, &a, &b, &c].into_iter().enumerate() {
        bidding
            .set_max_bid(max_bid(
                id,
                &format!("l-a-{index}"),
                "5.00",
                &actors.alice_token,
            ))
            .await
            .unwrap();
    }
    bidding
        .set_max_bid(max_bid(&b, "l-b-1", "9.00", &actors.bob_token))
        .await
        .unwrap();
    bidding
        .set_max_bid(max_bid(&d, "l-b-2", "9.00", &actors.bob_token))
        .await
        .unwrap();
    let after = state(&mut bidding, &b).await;
    assert_eq!(after.bid_count, 2, "two accepted bids");
    assert_eq!(amount(&after.current_price), "5.50");

    // Every position, most recent own bid first, in pages of two.
    let page = bidding
        .list_my_bids(list(
            &actors.alice_token,
            pb::ListMyBidsRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&page), vec![c.clone(), b.clone()]);
    assert_eq!(
        statuses(&page),
        vec![pb::BidStatus::Winning, pb::BidStatus::Outbid]
    );
    let own = page.positions[0].viewer.as_ref().unwrap();
    assert!(own.is_leader);
    assert_eq!(amount(&own.max_bid), "5.00", "her own maximum, to her");
    assert!(!page.next_page_token.is_empty());
    let rest = bidding
        .list_my_bids(list(
            &actors.alice_token,
            pb::ListMyBidsRequest {
                page_size: 2,
                page_token: page.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&rest), vec![a.clone(), d.clone()]);
    // A token used with other filters is refused.
    let mismatched = bidding
        .list_my_bids(list(
            &actors.alice_token,
            pb::ListMyBidsRequest {
                page_size: 2,
                page_token: page.next_page_token.clone(),
                statuses: vec![pb::BidStatus::Outbid as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(mismatched.code(), Code::InvalidArgument);
    assert_eq!(reason(&mismatched), "PAGE_TOKEN_INVALID");

    // Only the caller's own bids: Bob sees b and d, winning both.
    let bobs = bidding
        .list_my_bids(list(&actors.bob_token, pb::ListMyBidsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&bobs), vec![d.clone(), b.clone()]);
    assert_eq!(
        statuses(&bobs),
        vec![pb::BidStatus::Winning, pb::BidStatus::Winning]
    );
    assert!(bobs.next_page_token.is_empty());

    // The short auction closes: Bob WON, Alice LOST; filters by position
    // status and by auction status.
    let closed = until_finished(&mut bidding, &d).await;
    assert_eq!(closed.status(), pb::AuctionStatus::Closed);
    let lost = bidding
        .list_my_bids(list(
            &actors.alice_token,
            pb::ListMyBidsRequest {
                statuses: vec![pb::BidStatus::Lost as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&lost), vec![d.clone()]);
    let outbid = bidding
        .list_my_bids(list(
            &actors.alice_token,
            pb::ListMyBidsRequest {
                statuses: vec![pb::BidStatus::Outbid as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&outbid), vec![b.clone()]);
    let won = bidding
        .list_my_bids(list(
            &actors.bob_token,
            pb::ListMyBidsRequest {
                statuses: vec![pb::BidStatus::Won as i32],
                auction_statuses: vec![pb::AuctionStatus::Closed as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&won), vec![d.clone()]);
    let running = bidding
        .list_my_bids(list(
            &actors.alice_token,
            pb::ListMyBidsRequest {
                auction_statuses: vec![pb::AuctionStatus::Open as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&running), vec![c.clone(), b.clone(), a.clone()]);

    // Without credentials: UNAUTHENTICATED.
    let anonymous = bidding
        .list_my_bids(pb::ListMyBidsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    app.stop().await;
}

// Proves ListMyBids pages the caller's own positions most recent bid first,
// with WINNING/OUTBID/WON/LOST, status and auction-status filters and
// filter-bound page tokens, plus bid_count and the starting current_price
// (SQLite).
#[tokio::test]
async fn list_my_bids_sqlite() {
    my_bids_are_listed(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn list_my_bids_postgres() {
    my_bids_are_listed(Backend::Postgres).await;
}

type Activity = tonic::Streaming<pb::WatchMyActivityResponse>;

async fn watch(bidding: &mut BiddingServiceClient<Channel>, token: &str, after: u64) -> Activity {
    bidding
        .watch_my_activity(with_token(
            pb::WatchMyActivityRequest {
                resume_after_sequence: after,
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn next(stream: &mut Activity) -> pb::watch_my_activity_response::Message {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("no error")
        .message
        .expect("a message")
}

async fn next_activity(stream: &mut Activity) -> pb::ActivityEvent {
    loop {
        match next(stream).await {
            pb::watch_my_activity_response::Message::Event(event) => return event,
            pb::watch_my_activity_response::Message::Heartbeat(_) => continue,
            pb::watch_my_activity_response::Message::Snapshot(snapshot) => {
                panic!("unexpected snapshot {snapshot:?}")
            }
        }
    }
}

fn kind(event: &pb::ActivityEvent) -> pb::ActivityType {
    event.activity_type()
}

async fn activity_is_streamed_and_resumed(backend: Backend) {
    let app = spawn_app(backend).await;
    let config = (*app.config).clone();
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let long = create(
        &mut bidding,
        &actors,
        english("1.00", None),
        Duration::from_secs(3_600),
    )
    .await;
    let short = create(
        &mut bidding,
        &actors,
        hard_close("1.00"),
        Duration::from_secs(4),
    )
    .await;
    let (x, y) = (long.auction_id.clone(), short.auction_id.clone());
    bidding
        .set_max_bid(max_bid(&x, "s-1", "5.00", &actors.alice_token))
        .await
        .unwrap();

    // A fresh stream: the snapshot lists her position, at her sequence 1.
    let mut stream = watch(&mut bidding, &actors.alice_token, 0).await;
    let pb::watch_my_activity_response::Message::Snapshot(snapshot) = next(&mut stream).await
    else {
        panic!("a snapshot first");
    };
    assert_eq!(snapshot.reason(), pb::SnapshotReason::Initial);
    assert!(snapshot.last_chunk);
    assert_eq!(snapshot.sequence, 1);
    assert_eq!(snapshot.positions.len(), 1);
    let position = &snapshot.positions[0];
    assert_eq!(position.state.as_ref().unwrap().auction_id, x);
    assert_eq!(
        position.viewer.as_ref().unwrap().status(),
        pb::BidStatus::Winning
    );

    // Bob outbids her: OUTBID, with the state and her position after it.
    bidding
        .set_max_bid(max_bid(&x, "s-2", "9.00", &actors.bob_token))
        .await
        .unwrap();
    let outbid = next_activity(&mut stream).await;
    assert_eq!(outbid.sequence, 2);
    assert_eq!(kind(&outbid), pb::ActivityType::Outbid);
    assert_eq!(outbid.auction_id, x);
    assert_eq!(
        amount(&outbid.state.as_ref().unwrap().current_price),
        "5.50"
    );
    assert_eq!(
        outbid.viewer.as_ref().unwrap().status(),
        pb::BidStatus::Outbid
    );
    // Her own bid from another device is in her stream too.
    bidding
        .set_max_bid(max_bid(&x, "s-3", "20.00", &actors.alice_token))
        .await
        .unwrap();
    let placed = next_activity(&mut stream).await;
    assert_eq!(
        (placed.sequence, kind(&placed)),
        (3, pb::ActivityType::BidPlaced)
    );
    assert!(!placed.bid_id.is_empty());
    assert_eq!(
        placed.viewer.as_ref().unwrap().status(),
        pb::BidStatus::Winning
    );

    // The short auction: she bids, Bob outbids, it closes: OUTBID then LOST
    // for her (WON for Bob, on his own stream).
    bidding
        .set_max_bid(max_bid(&y, "s-4", "5.00", &actors.alice_token))
        .await
        .unwrap();
    bidding
        .set_max_bid(max_bid(&y, "s-5", "9.00", &actors.bob_token))
        .await
        .unwrap();
    let mut seen = vec![
        (outbid.sequence, kind(&outbid)),
        (placed.sequence, kind(&placed)),
    ];
    loop {
        let event = next_activity(&mut stream).await;
        assert_eq!(event.sequence, seen.last().unwrap().0 + 1, "gap-free");
        seen.push((event.sequence, kind(&event)));
        if kind(&event) == pb::ActivityType::Lost {
            assert_eq!(event.auction_id, y);
            assert_eq!(event.viewer.as_ref().unwrap().status(), pb::BidStatus::Lost);
            assert_eq!(
                event.state.as_ref().unwrap().status(),
                pb::AuctionStatus::Closed
            );
            break;
        }
    }
    assert_eq!(
        seen.iter().map(|(_, kind)| *kind).collect::<Vec<_>>(),
        vec![
            pb::ActivityType::Outbid,
            pb::ActivityType::BidPlaced,
            pb::ActivityType::BidPlaced,
            pb::ActivityType::Outbid,
            pb::ActivityType::Lost,
        ]
    );
    let mut bobs = watch(&mut bidding, &actors.bob_token, 1).await;
    let mut bob_kinds = Vec::new();
    while bob_kinds.last() != Some(&pb::ActivityType::Won) {
        bob_kinds.push(kind(&next_activity(&mut bobs).await));
    }
    assert_eq!(
        bob_kinds,
        vec![
            pb::ActivityType::Outbid,
            pb::ActivityType::BidPlaced,
            pb::ActivityType::Won
        ],
        "after his sequence 1 (his bid on x): her 20.00 on x, his bid on y, the close"
    );
    drop(bobs);
    drop(stream);

    // Resume after S: a heartbeat, then exactly the events after S.
    let resume_after = 3;
    let mut resumed = watch(&mut bidding, &actors.alice_token, resume_after).await;
    let pb::watch_my_activity_response::Message::Heartbeat(heartbeat) = next(&mut resumed).await
    else {
        panic!("a heartbeat first when resuming");
    };
    let latest = seen.last().unwrap().0;
    assert_eq!(heartbeat.latest_sequence, latest);
    let mut replayed = Vec::new();
    while replayed.len() < seen.len() - 2 {
        let event = next_activity(&mut resumed).await;
        replayed.push((event.sequence, kind(&event)));
    }
    assert_eq!(replayed, seen[2..].to_vec());
    drop(resumed);

    // After a restart the durable index serves the same resume, and new
    // activity continues the sequence.
    let data = app.stop().await;
    let app = spawn_with(config, data).await;
    let mut bidding = client(&app).await;
    let mut resumed = watch(&mut bidding, &actors.alice_token, resume_after).await;
    let mut again = Vec::new();
    while again.len() < seen.len() - 2 {
        let event = next_activity(&mut resumed).await;
        again.push((event.sequence, kind(&event)));
    }
    assert_eq!(again, seen[2..].to_vec());
    bidding
        .set_max_bid(max_bid(&x, "s-6", "40.00", &actors.bob_token))
        .await
        .unwrap();
    let live = next_activity(&mut resumed).await;
    assert_eq!(
        (live.sequence, kind(&live)),
        (latest + 1, pb::ActivityType::Outbid)
    );
    // A resume point ahead of the log gets a resync snapshot.
    let mut ahead = watch(&mut bidding, &actors.alice_token, latest + 100).await;
    let pb::watch_my_activity_response::Message::Snapshot(resync) = next(&mut ahead).await else {
        panic!("a resync snapshot");
    };
    assert_eq!(resync.reason(), pb::SnapshotReason::ResumeUnknown);
    assert_eq!(resync.sequence, latest + 1);

    // Without credentials: UNAUTHENTICATED.
    let anonymous = bidding
        .watch_my_activity(pb::WatchMyActivityRequest {
            resume_after_sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    app.stop().await;
}

// Proves WatchMyActivity: a snapshot of the caller's positions, OUTBID when
// another user outbids, the caller's own bids, LOST/WON at the close,
// resume after S giving exactly the events after S, the same after a
// restart (durable index), a resync for an unknown point, and
// UNAUTHENTICATED without credentials (SQLite).
#[tokio::test]
async fn watch_my_activity_sqlite() {
    activity_is_streamed_and_resumed(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn watch_my_activity_postgres() {
    activity_is_streamed_and_resumed(Backend::Postgres).await;
}

async fn pruned_activity_resumes_with_a_snapshot(backend: Backend) {
    let app = spawn_app(backend).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let auction = create(
        &mut bidding,
        &actors,
        english("1.00", None),
        Duration::from_secs(3_600),
    )
    .await;
    let id = auction.auction_id.clone();
    for (request_id, amount, token) in [
        ("p-1", "5.00", &actors.alice_token),
        ("p-2", "9.00", &actors.bob_token),
        ("p-3", "12.00", &actors.alice_token),
    ] {
        bidding
            .set_max_bid(max_bid(&id, request_id, amount, token))
            .await
            .unwrap();
    }
    let mut fresh = watch(&mut bidding, &actors.alice_token, 0).await;
    let pb::watch_my_activity_response::Message::Snapshot(snapshot) = next(&mut fresh).await else {
        panic!("a snapshot first");
    };
    let head = snapshot.sequence;
    assert!(head >= 3, "her log holds several events: {head}");

    // Eight days later, keeping each user's last event only.
    let log = auction_bidding::log::Log::new(log_database(&app).await);
    let (outcomes, activity) = auction_bidding::retention::prune(
        &log,
        auction_platform::now_ms() + 8 * 86_400_000,
        &app.config.bidding,
        1,
        &auction_platform::Shutdown::new(),
    )
    .await
    .unwrap();
    assert!(outcomes >= 4, "the create and the three bids: {outcomes}");
    assert!(
        activity >= head - 1,
        "all of Alice's log but its last: {activity}"
    );

    // Resuming before what is kept: a RESUME_TOO_OLD snapshot at the head.
    let mut old = watch(&mut bidding, &actors.alice_token, 1).await;
    let pb::watch_my_activity_response::Message::Snapshot(resync) = next(&mut old).await else {
        panic!("a resync snapshot");
    };
    assert_eq!(resync.reason(), pb::SnapshotReason::ResumeTooOld);
    assert_eq!(resync.sequence, head);
    assert_eq!(resync.positions.len(), 1);
    // Resuming just before the kept event: that event.
    let mut recent = watch(&mut bidding, &actors.alice_token, head - 1).await;
    assert_eq!(next_activity(&mut recent).await.sequence, head);
    // ListMyBids does not depend on the activity log.
    let listed = bidding
        .list_my_bids(list(&actors.alice_token, pb::ListMyBidsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&listed), vec![id.clone()]);

    // A pruned row between kept ones (rows carry the nodes' clocks): a
    // stream sends what precedes the hole, then a RESUME_TOO_OLD snapshot,
    // never a skip.
    for (request_id, amount, token) in [
        ("p-4", "20.00", &actors.bob_token),
        ("p-5", "30.00", &actors.alice_token),
    ] {
        bidding
            .set_max_bid(max_bid(&id, request_id, amount, token))
            .await
            .unwrap();
    }
    let hole = i64::try_from(head + 1).unwrap();
    let deleted = match log_database(&app).await {
        auction_platform::Database::Sqlite(pool) => {
            sqlx::query("DELETE FROM user_activity WHERE user_id = ? AND seq = ?")
                .bind(actors.alice)
                .bind(hole)
                .execute(&pool)
                .await
                .map(|done| done.rows_affected())
        }
        auction_platform::Database::Postgres(pool) => {
            sqlx::query("DELETE FROM user_activity WHERE user_id = $1 AND seq = $2")
                .bind(actors.alice)
                .bind(hole)
                .execute(&pool)
                .await
                .map(|done| done.rows_affected())
        }
    };
    assert_eq!(deleted.unwrap(), 1);
    let mut across = watch(&mut bidding, &actors.alice_token, head - 1).await;
    assert_eq!(next_activity(&mut across).await.sequence, head);
    let resync = loop {
        match next(&mut across).await {
            pb::watch_my_activity_response::Message::Snapshot(snapshot) => break snapshot,
            pb::watch_my_activity_response::Message::Heartbeat(_) => {}
            pb::watch_my_activity_response::Message::Event(event) => {
                panic!("event {} sent across the hole", event.sequence)
            }
        }
    };
    assert_eq!(resync.reason(), pb::SnapshotReason::ResumeTooOld);
    assert!(resync.sequence >= head + 2, "{}", resync.sequence);
    app.stop().await;
}

/// The bidding database of a running test app.
async fn log_database(app: &auction_testkit::TestApp) -> auction_platform::Database {
    auction_platform::Database::open(
        &app.config.storage,
        <auction_bidding::Service as auction_platform::MeshService>::SCHEMA,
        <auction_bidding::Service as auction_platform::MeshService>::migrations(),
    )
    .await
    .unwrap()
}

// Proves activity events past their retention are deleted (each user's last
// ones kept), a stream resuming before what is kept gets a RESUME_TOO_OLD
// snapshot at the head, one resuming after it gets the kept events, and
// ListMyBids still lists the position, on SQLite.
#[tokio::test]
async fn pruned_activity_resumes_with_a_snapshot_sqlite() {
    pruned_activity_resumes_with_a_snapshot(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn pruned_activity_resumes_with_a_snapshot_postgres() {
    pruned_activity_resumes_with_a_snapshot(Backend::Postgres).await;
}

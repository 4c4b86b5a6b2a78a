//! The RPCs over gRPC.

use std::time::Duration;

use auction_proto::v1 as pb;
use auction_testkit::{Backend, spawn_app, spawn_with, with_token};
use tokio_stream::StreamExt;
use tonic::Code;
use uuid::Uuid;

use crate::support::*;

async fn proxy_bidding_and_rejections(backend: Backend) {
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
    assert_eq!(auction.status, pb::AuctionStatus::Open as i32);
    let id = auction.auction_id.clone();

    // Alice's maximum of 10.00 shows the starting price; Bob's 5.00 lifts it
    // to 5.00 + 0.50 (eBay's increment from 5.00) and Alice keeps the lead.
    let first = bidding
        .set_max_bid(max_bid(&id, "a-1", "10.00", &actors.alice_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(amount(&first.state.as_ref().unwrap().current_price), "1.00");
    assert!(first.viewer.as_ref().unwrap().is_leader);
    let second = bidding
        .set_max_bid(max_bid(&id, "b-1", "5.00", &actors.bob_token))
        .await
        .unwrap()
        .into_inner();
    let shown = second.state.unwrap();
    assert_eq!(amount(&shown.current_price), "5.50");
    assert!(!second.viewer.unwrap().is_leader);
    assert_eq!(amount(&shown.minimum_next_bid), "6.00");

    // Below the minimum: FAILED_PRECONDITION with the minimum acceptable amount.
    let low = bidding
        .set_max_bid(max_bid(&id, "b-2", "5.75", &actors.bob_token))
        .await
        .unwrap_err();
    assert_eq!(low.code(), Code::FailedPrecondition);
    assert_eq!(reason(&low), "BID_BELOW_MINIMUM");
    // The seller never bids on their own auction.
    let own = bidding
        .set_max_bid(max_bid(&id, "s-1", "50.00", &actors.seller_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&own), "SELF_BIDDING");
    // Malformed input: INVALID_ARGUMENT naming the problem.
    let malformed = bidding
        .set_max_bid(max_bid(&id, "b-3", "abc", &actors.bob_token))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let too_precise = bidding
        .set_max_bid(max_bid(&id, "b-4", "7.001", &actors.bob_token))
        .await
        .unwrap_err();
    assert_eq!(too_precise.code(), Code::InvalidArgument);
    let euro = bidding
        .set_max_bid(with_token(
            pb::SetMaxBidRequest {
                request_id: "b-5".to_owned(),
                auction_id: id.clone(),
                max_amount: Some(pb::Money {
                    currency: "EUR".to_owned(),
                    amount: "7.00".to_owned(),
                }),
            },
            &actors.bob_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&euro), "CURRENCY_MISMATCH");
    let bad_key = bidding
        .set_max_bid(max_bid(&id, "", "7.00", &actors.bob_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&bad_key), "REQUEST_ID_INVALID");
    // No token: UNAUTHENTICATED; unknown auction: NOT_FOUND.
    let anonymous = bidding
        .set_max_bid(pb::SetMaxBidRequest {
            request_id: "x".to_owned(),
            auction_id: id.clone(),
            max_amount: Some(usd("9.00")),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let missing = bidding
        .set_max_bid(max_bid(
            &Uuid::now_v7().to_string(),
            "b-6",
            "7.00",
            &actors.bob_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // Creating is for services and admins only.
    let denied = bidding
        .create_auction(with_token(
            pb::CreateAuctionRequest {
                request_id: "c".to_owned(),
                ..Default::default()
            },
            &actors.alice_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Nothing refused changed the auction.
    let after = state(&mut bidding, &id).await;
    assert_eq!(amount(&after.current_price), "5.50");
    assert_eq!(after.sequence, shown.sequence);
    app.stop().await;
}

// Proves proxy bidding and precise rejections over gRPC on SQLite.
#[tokio::test]
async fn proxy_bidding_sqlite() {
    proxy_bidding_and_rejections(Backend::Sqlite).await;
}

// Proves proxy bidding and precise rejections over gRPC on PostgreSQL.
#[tokio::test]
async fn proxy_bidding_postgres() {
    proxy_bidding_and_rejections(Backend::Postgres).await;
}

async fn one_request_id_on_two_shards_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let shard_count = app.config.bidding.shard_count;
    let shard = |auction: &pb::AuctionState| {
        auction_bidding::shard::Shards::shard_of(auction.auction_id.parse().unwrap(), shard_count)
    };
    let x = create(
        &mut bidding,
        &actors,
        english("1.00", None),
        Duration::from_secs(3_600),
    )
    .await;
    let y = loop {
        let y = create(
            &mut bidding,
            &actors,
            english("1.00", None),
            Duration::from_secs(3_600),
        )
        .await;
        if shard(&y) != shard(&x) {
            break y;
        }
    };
    // Alice sends each request id to both auctions at once (a client bug,
    // or a hostile one) while Bob bids on both with ids of his own.
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..40 {
        for (auction, user, request_id, token) in [
            (&x, "alice", format!("twice-{round}"), &actors.alice_token),
            (&y, "alice", format!("twice-{round}"), &actors.alice_token),
            (&x, "bob", format!("bob-x-{round}"), &actors.bob_token),
            (&y, "bob", format!("bob-y-{round}"), &actors.bob_token),
        ] {
            let mut bidding = bidding.clone();
            let request = max_bid(
                &auction.auction_id,
                &request_id,
                &format!("{}.00", 10 + round),
                token,
            );
            calls.spawn(async move {
                let answer = bidding
                    .set_max_bid(request)
                    .await
                    .map(|_| ())
                    .map_err(|status| (status.code(), reason(&status)));
                (user, round, answer)
            });
        }
    }
    let mut reused = [0; 40];
    while let Some(call) = calls.join_next().await {
        let (user, round, answer) = call.unwrap();
        match answer {
            Err((Code::AlreadyExists, reason)) if user == "alice" => {
                assert_eq!(reason, "IDEMPOTENCY_KEY_REUSED");
                reused[round] += 1;
            }
            // The engine may refuse a bid (below the price, say); nobody's
            // bid may fail because of Alice's reuse.
            Err((code, reason)) => assert!(
                matches!(code, Code::FailedPrecondition | Code::InvalidArgument),
                "{user}'s bid {round} failed: {code:?} {reason}"
            ),
            Ok(()) => {}
        }
    }
    assert_eq!(
        reused, [1; 40],
        "each reused id: one decided, one ALREADY_EXISTS"
    );
    app.stop().await;
}

// Proves one caller's request id sent to two auctions on two shards at once
// is decided once and refused once with ALREADY_EXISTS, and fails no one
// else's bid (it used to break the log's unique key and fail a whole batch
// with UNAVAILABLE), on SQLite.
#[tokio::test]
async fn one_request_id_on_two_shards_at_once_sqlite() {
    one_request_id_on_two_shards_at_once(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn one_request_id_on_two_shards_at_once_postgres() {
    one_request_id_on_two_shards_at_once(Backend::Postgres).await;
}

async fn retries_are_exactly_once_across_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let config = (*app.config).clone();
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
    let first = bidding
        .set_max_bid(max_bid(&id, "retry-1", "20.00", &actors.alice_token))
        .await
        .unwrap()
        .into_inner();
    bidding
        .set_max_bid(max_bid(&id, "retry-2", "8.00", &actors.bob_token))
        .await
        .unwrap();
    // The same key and content: the original answer, nothing doubled.
    let again = bidding
        .set_max_bid(max_bid(&id, "retry-1", "20.00", &actors.alice_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    // The same key, other content: ALREADY_EXISTS.
    let reused = bidding
        .set_max_bid(max_bid(&id, "retry-1", "25.00", &actors.alice_token))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");
    // A refusal is remembered too.
    let low = bidding
        .set_max_bid(max_bid(&id, "retry-3", "2.00", &actors.bob_token))
        .await
        .unwrap_err();
    let before = state(&mut bidding, &id).await;
    let data = app.stop().await;

    // After a restart on the same data: same state, same answers.
    let app = spawn_with(config, data).await;
    let mut bidding = client(&app).await;
    let after = state(&mut bidding, &id).await;
    assert_eq!(after.sequence, before.sequence);
    assert_eq!(after.current_price, before.current_price);
    let replayed = bidding
        .set_max_bid(max_bid(&id, "retry-1", "20.00", &actors.alice_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed, first);
    let low_again = bidding
        .set_max_bid(max_bid(&id, "retry-3", "2.00", &actors.bob_token))
        .await
        .unwrap_err();
    assert_eq!(low_again.code(), low.code());
    assert_eq!(low_again.message(), low.message());
    assert_eq!(state(&mut bidding, &id).await.sequence, before.sequence);
    app.stop().await;
}

// Proves a retried request returns the original answer, before and after a
// restart, and a reused key with other content gets ALREADY_EXISTS (SQLite).
#[tokio::test]
async fn exactly_once_sqlite() {
    retries_are_exactly_once_across_restart(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn exactly_once_postgres() {
    retries_are_exactly_once_across_restart(Backend::Postgres).await;
}

async fn next_message(
    stream: &mut tonic::Streaming<pb::WatchAuctionResponse>,
) -> pb::watch_auction_response::Message {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("no error")
        .message
        .expect("a message")
}

async fn next_event(stream: &mut tonic::Streaming<pb::WatchAuctionResponse>) -> pb::AuctionEvent {
    loop {
        match next_message(stream).await {
            pb::watch_auction_response::Message::Event(event) => return event,
            pb::watch_auction_response::Message::Heartbeat(_) => continue,
            pb::watch_auction_response::Message::Snapshot(snapshot) => {
                panic!("unexpected snapshot {snapshot:?}")
            }
        }
    }
}

/// A running English auction on a fresh SQLite app, watched from the start:
/// (app, actors, client, auction id, stream, its first snapshot).
async fn watched_english_auction() -> (
    auction_testkit::TestApp,
    Actors,
    pb::bidding_service_client::BiddingServiceClient<tonic::transport::Channel>,
    String,
    tonic::Streaming<pb::WatchAuctionResponse>,
    pb::AuctionSnapshot,
) {
    let app = spawn_app(Backend::Sqlite).await;
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
    let mut stream = bidding
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: id.clone(),
            resume_after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let pb::watch_auction_response::Message::Snapshot(snapshot) = next_message(&mut stream).await
    else {
        panic!("a snapshot first");
    };
    (app, actors, bidding, id, stream, snapshot)
}

// Proves WatchAuction sends a snapshot then every event with consecutive
// sequence numbers, and that resuming after S gives exactly the events
// after S.
#[tokio::test]
async fn watch_and_resume() {
    let (app, actors, mut bidding, id, mut stream, snapshot) = watched_english_auction().await;
    let start = snapshot.state.unwrap().sequence;
    for (index, (amount, token)) in [
        ("3.00", &actors.alice_token),
        ("6.00", &actors.bob_token),
        ("9.00", &actors.alice_token),
    ]
    .into_iter()
    .enumerate()
    {
        bidding
            .set_max_bid(max_bid(&id, &format!("w-{index}"), amount, token))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let latest = state(&mut bidding, &id).await.sequence;
    while seen.last().copied().unwrap_or(start) < latest {
        seen.push(next_event(&mut stream).await.sequence);
    }
    let expected: Vec<u64> = (start + 1..=latest).collect();
    assert_eq!(seen, expected, "gap-free and in order");
    drop(stream);

    // Resume after the first event seen: exactly the ones after it.
    let resume_after = seen[0];
    let mut resumed = bidding
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: id.clone(),
            resume_after_sequence: resume_after,
        })
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    while replayed.last().copied().unwrap_or(resume_after) < latest {
        replayed.push(next_event(&mut resumed).await.sequence);
    }
    assert_eq!(replayed, (resume_after + 1..=latest).collect::<Vec<_>>());
    // And live events keep coming on the resumed stream.
    bidding
        .set_max_bid(max_bid(&id, "w-live", "30.00", &actors.bob_token))
        .await
        .unwrap();
    assert_eq!(next_event(&mut resumed).await.sequence, latest + 1);
    app.stop().await;
}

// Proves a WatchAuction stream ends with UNAVAILABLE when the server shuts
// down (the hub closes every auction's channel), after the events it had
// not sent yet, instead of hanging the shutdown.
#[tokio::test]
async fn watch_ends_unavailable_at_shutdown() {
    let (app, actors, mut bidding, id, mut stream, snapshot) = watched_english_auction().await;
    bidding
        .set_max_bid(max_bid(&id, "s-1", "3.00", &actors.alice_token))
        .await
        .unwrap();
    let latest = state(&mut bidding, &id).await.sequence;
    assert!(latest > snapshot.state.unwrap().sequence);
    app.stop().await;
    // Every committed event first, then the end.
    let mut last = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream ends within 10 s")
        {
            Some(Ok(response)) => {
                if let Some(pb::watch_auction_response::Message::Event(event)) = response.message {
                    last = event.sequence;
                }
            }
            Some(Err(status)) => break status,
            None => panic!("the stream ended without a status"),
        }
    };
    assert_eq!(last, latest, "the events committed before the shutdown");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// Runs one 100 ms second-price sealed auction: it opens 300 ms from now,
/// both bids go in as soon as the stream shows it open; `None` when the
/// machine was too slow to bid inside the 100 ms window.
async fn sealed_round(
    app: &auction_testkit::TestApp,
    actors: &Actors,
) -> Option<(pb::AuctionClosed, i64, String)> {
    let mut bidding = client(app).await;
    let parameters = pb::AuctionParameters {
        format: pb::AuctionFormat::SealedSecondPrice as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::Sealed(
            pb::SealedParameters {
                start_price: Some(usd("1.00")),
                ..pb::SealedParameters::default()
            },
        )),
    };
    let start = std::time::SystemTime::now() + Duration::from_millis(300);
    let end = start + Duration::from_millis(100);
    let request = pb::CreateAuctionRequest {
        request_id: format!("sealed-{}", Uuid::now_v7()),
        auction_id: Uuid::now_v7().to_string(),
        seller_id: actors.seller.to_string(),
        parameters: Some(parameters),
        start_time: Some(prost_types::Timestamp::from(start)),
        end_time: Some(prost_types::Timestamp::from(end)),
        ..pb::CreateAuctionRequest::default()
    };
    let auction = bidding
        .create_auction(with_token(request, &actors.admin_token))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    let id = auction.auction_id;
    let mut stream = bidding
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: id.clone(),
            resume_after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // Wait until it is open: the snapshot may already say so (a slow
    // machine), or the Opened event comes; already closed means too slow.
    loop {
        match next_message(&mut stream).await {
            pb::watch_auction_response::Message::Snapshot(snapshot) => {
                let status = snapshot.state.unwrap().status;
                if status == pb::AuctionStatus::Open as i32 {
                    break;
                }
                if status != pb::AuctionStatus::Scheduled as i32 {
                    return None;
                }
            }
            pb::watch_auction_response::Message::Event(pb::AuctionEvent {
                kind: Some(pb::auction_event::Kind::Opened(_)),
                ..
            }) => break,
            pb::watch_auction_response::Message::Event(_)
            | pb::watch_auction_response::Message::Heartbeat(_) => {}
        }
    }
    let bid = |key: &str, amount: &str, token: &str| {
        let mut bidding = bidding.clone();
        let request = with_token(
            pb::PlaceSealedBidRequest {
                request_id: key.to_owned(),
                auction_id: id.clone(),
                amount: Some(usd(amount)),
                expire_time: None,
            },
            token,
        );
        async move { bidding.place_sealed_bid(request).await }
    };
    let (key_a, key_b) = (format!("s-a-{id}"), format!("s-b-{id}"));
    let (first, second) = tokio::join!(
        bid(&key_a, "12.00", &actors.alice_token),
        bid(&key_b, "7.50", &actors.bob_token)
    );
    if first.is_err() || second.is_err() {
        let error = first.err().or(second.err()).unwrap();
        assert_eq!(
            reason(&error),
            "AUCTION_CLOSED",
            "only lateness may refuse these bids: {error:?}"
        );
        return None;
    }
    // The close arrives on the stream without anyone asking.
    let (closed, closed_at) = loop {
        if let pb::watch_auction_response::Message::Event(pb::AuctionEvent {
            kind: Some(pb::auction_event::Kind::Closed(closed)),
            event_time,
            ..
        }) = next_message(&mut stream).await
        {
            break (closed, event_time.unwrap());
        }
    };
    let end = prost_types::Timestamp::from(end);
    let end_ms = end.seconds * 1_000 + i64::from(end.nanos) / 1_000_000;
    let closed_ms = closed_at.seconds * 1_000 + i64::from(closed_at.nanos) / 1_000_000;
    Some((closed, closed_ms - end_ms, id))
}

// Proves a 100 ms second-price sealed auction closes at its deadline with the
// right winner and price (the second-highest bid), announced on the watch
// stream, and refuses bids after the close.
#[tokio::test]
async fn hundred_millisecond_sealed_auction() {
    let app = spawn_app(Backend::Sqlite).await;
    let actors = actors(&app);
    // A machine too loaded to place two bids in 100 ms gets a few more tries.
    let mut outcome = None;
    for _ in 0..5 {
        outcome = sealed_round(&app, &actors).await;
        if outcome.is_some() {
            break;
        }
    }
    let (closed, close_offset_ms, id) =
        outcome.expect("two bids landed inside a 100 ms window in five tries");
    // The close is stamped at the deadline (the engine's timer events carry
    // the time they were due), whenever the shard woke.
    assert!(
        close_offset_ms.abs() <= 1,
        "closed {close_offset_ms} ms from the deadline"
    );
    let award = &closed.result.unwrap().awards[0];
    assert_eq!(amount(&award.unit_price), "7.50", "second price");
    let mut bidding = client(&app).await;
    let closed_state = state(&mut bidding, &id).await;
    assert_eq!(closed_state.status, pb::AuctionStatus::Closed as i32);
    let late = bidding
        .place_sealed_bid(with_token(
            pb::PlaceSealedBidRequest {
                request_id: "s-late".to_owned(),
                auction_id: id.clone(),
                amount: Some(usd("99.00")),
                expire_time: None,
            },
            &actors.bob_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&late), "AUCTION_CLOSED");
    app.stop().await;
}

// Proves the clock RPC answers with server time around the call.
#[tokio::test]
async fn server_time() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut bidding = client(&app).await;
    let sent = prost_types::Timestamp::from(std::time::SystemTime::now());
    let answer = bidding
        .get_server_time(pb::GetServerTimeRequest {
            client_send_time: Some(sent),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.client_send_time, Some(sent));
    let received = answer.server_receive_time.unwrap();
    let replied = answer.server_send_time.unwrap();
    assert!((received.seconds, received.nanos) <= (replied.seconds, replied.nanos));
    assert!(received.seconds >= sent.seconds);
    app.stop().await;
}

fn is_final(event: &pb::AuctionEvent) -> bool {
    matches!(
        event.kind,
        Some(
            pb::auction_event::Kind::Unsold(_)
                | pb::auction_event::Kind::Closed(_)
                | pb::auction_event::Kind::Cancelled(_)
        )
    )
}

// Proves a watcher that stops reading is resynced with a snapshot (reason
// SLOW_CONSUMER) instead of growing memory, while another watcher of the same
// auction keeps up and sees every event gap-free. The events come from a
// Dutch clock ticking every millisecond (about 10,000 of them in 10 s).
#[tokio::test]
async fn slow_watcher_is_resynced() {
    let data = tempfile::tempdir().unwrap();
    let mut config = auction_platform::Config::embedded_default();
    config.server.listen_address = "127.0.0.1:0".to_owned();
    config.storage.data_dir = data.path().to_owned();
    config.media.local_dir = data.path().join("media");
    config.demo.seed_on_first_start = false;
    // A small per-auction buffer: a stalled watcher overflows it quickly.
    config.bidding.watcher_buffer_batches = 4;
    let app = spawn_with(config, data).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let dutch = pb::AuctionParameters {
        format: pb::AuctionFormat::Dutch as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::Dutch(
            pb::DutchParameters {
                start_price: Some(usd("100.00")),
                price_step: Some(usd("0.01")),
                tick_interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 1_000_000,
                }),
                floor_price: Some(usd("0.01")),
                quantity: 1,
                max_units_per_buyer: 0,
            },
        )),
    };
    let auction = create(&mut bidding, &actors, dutch, Duration::from_secs(3_600)).await;
    let id = auction.auction_id.clone();

    // The slow watcher: a connection with a tiny flow-control window that
    // reads the snapshot, then nothing until the clock has run down.
    let slow_channel = tonic::transport::Endpoint::from_shared(app.url())
        .unwrap()
        .initial_stream_window_size(Some(1_024))
        .connect()
        .await
        .unwrap();
    let mut slow =
        auction_proto::v1::bidding_service_client::BiddingServiceClient::new(slow_channel)
            .watch_auction(pb::WatchAuctionRequest {
                auction_id: id.clone(),
                resume_after_sequence: 0,
            })
            .await
            .unwrap()
            .into_inner();
    assert!(matches!(
        next_message(&mut slow).await,
        pb::watch_auction_response::Message::Snapshot(_)
    ));

    // The fast watcher reads everything as it comes, to the end.
    let mut fast = bidding
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: id.clone(),
            resume_after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let pb::watch_auction_response::Message::Snapshot(snapshot) = next_message(&mut fast).await
    else {
        panic!("a snapshot first");
    };
    let start = snapshot.state.unwrap().sequence;
    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut fast).await;
        seen.push(event.sequence);
        if is_final(&event) {
            break;
        }
    }
    let latest = *seen.last().unwrap();
    assert!(latest > 500, "the clock produced only {latest} events");
    assert_eq!(
        seen,
        (start + 1..=latest).collect::<Vec<_>>(),
        "the fast watcher saw every event in order"
    );

    // The slow watcher now reads: somewhere it was resynced, and it reaches
    // the end all the same, never going backwards.
    let mut resynced = false;
    let mut last = 0;
    while last < latest {
        match next_message(&mut slow).await {
            pb::watch_auction_response::Message::Snapshot(snapshot) => {
                assert_eq!(snapshot.reason, pb::SnapshotReason::SlowConsumer as i32);
                resynced = true;
                let sequence = snapshot.state.unwrap().sequence;
                assert!(sequence >= last);
                last = sequence;
            }
            pb::watch_auction_response::Message::Event(event) => {
                assert!(event.sequence > last, "no duplicate, no regression");
                last = event.sequence;
            }
            pb::watch_auction_response::Message::Heartbeat(_) => {}
        }
    }
    assert!(resynced, "the slow watcher was resynced with a snapshot");
    app.stop().await;
}

// Proves ListBids shows the history newest first with visible amounts,
// reveals a maximum only to its own bidder, pages with a token, and that an
// admin's RetractBid recomputes the price from the remaining bids (with the
// precise refusals for a non-admin and an unknown bid).
#[tokio::test]
async fn history_and_retraction() {
    let app = spawn_app(Backend::Sqlite).await;
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
    bidding
        .set_max_bid(max_bid(&id, "h-1", "10.00", &actors.alice_token))
        .await
        .unwrap();
    bidding
        .set_max_bid(max_bid(&id, "h-2", "5.00", &actors.bob_token))
        .await
        .unwrap();
    bidding
        .set_max_bid(max_bid(&id, "h-3", "8.00", &actors.bob_token))
        .await
        .unwrap();

    let history = |token: &str| {
        with_token(
            pb::ListBidsRequest {
                auction_id: id.clone(),
                include_removed: false,
                page_size: 0,
                page_token: String::new(),
            },
            token,
        )
    };
    let seen_by_alice = bidding
        .list_bids(history(&actors.alice_token))
        .await
        .unwrap()
        .into_inner()
        .bids;
    assert_eq!(seen_by_alice.len(), 3);
    let sequences: Vec<u64> = seen_by_alice.iter().map(|bid| bid.sequence).collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] > pair[1]),
        "newest first"
    );
    // Bob's beaten bids show what they reached; Alice leads at 8.00 + 0.50.
    assert_eq!(amount(&seen_by_alice[0].amount), "8.00");
    assert_eq!(seen_by_alice[0].status, pb::BidStatus::Outbid as i32);
    assert_eq!(amount(&seen_by_alice[2].amount), "1.00");
    assert_eq!(seen_by_alice[2].status, pb::BidStatus::Winning as i32);
    // Alice sees her own maximum, never Bob's; Bob the reverse.
    assert_eq!(amount(&seen_by_alice[2].max_amount), "10.00");
    assert!(seen_by_alice[0].max_amount.is_none());
    let seen_by_bob = bidding
        .list_bids(history(&actors.bob_token))
        .await
        .unwrap()
        .into_inner()
        .bids;
    assert!(seen_by_bob[2].max_amount.is_none());
    assert_eq!(amount(&seen_by_bob[0].max_amount), "8.00");
    // Paging.
    let first_page = bidding
        .list_bids(pb::ListBidsRequest {
            auction_id: id.clone(),
            include_removed: false,
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.bids.len(), 2);
    let second_page = bidding
        .list_bids(pb::ListBidsRequest {
            auction_id: id.clone(),
            include_removed: false,
            page_size: 2,
            page_token: first_page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_page.bids.len(), 1);
    assert!(second_page.next_page_token.is_empty());
    let bad_token = bidding
        .list_bids(pb::ListBidsRequest {
            auction_id: id.clone(),
            include_removed: false,
            page_size: 2,
            page_token: "nope".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&bad_token), "PAGE_TOKEN_INVALID");

    // Retraction: only admins; Alice's maximum goes, Bob leads at his 8.00's
    // first proxy step above the start.
    let alice_bid = seen_by_alice[2].bid_id.clone();
    let retract = |token: &str, key: &str, bid: &str| {
        with_token(
            pb::RetractBidRequest {
                request_id: key.to_owned(),
                auction_id: id.clone(),
                bid_id: bid.to_owned(),
                reason: "typo".to_owned(),
            },
            token,
        )
    };
    let denied = bidding
        .retract_bid(retract(&actors.bob_token, "r-0", &alice_bid))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unknown = bidding
        .retract_bid(retract(
            &actors.admin_token,
            "r-1",
            &Uuid::now_v7().to_string(),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&unknown), "BID_NOT_FOUND");
    let retracted = bidding
        .retract_bid(retract(&actors.admin_token, "r-2", &alice_bid))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        retracted.bid.unwrap().status,
        pb::BidStatus::Retracted as i32
    );
    let state = retracted.state.unwrap();
    assert_eq!(
        state.leader.unwrap().handle,
        seen_by_alice[0].bidder.as_ref().unwrap().handle,
        "Bob leads"
    );
    let after = bidding
        .list_bids(history(&actors.bob_token))
        .await
        .unwrap()
        .into_inner()
        .bids;
    assert!(
        after
            .iter()
            .all(|bid| bid.status != pb::BidStatus::Retracted as i32),
        "removed bids hidden by default"
    );
    app.stop().await;
}

// Proves a sealed auction's bids stay hidden from ListBids until it closes.
#[tokio::test]
async fn sealed_history_is_hidden_until_close() {
    let app = spawn_app(Backend::Sqlite).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let sealed = pb::AuctionParameters {
        format: pb::AuctionFormat::SealedFirstPrice as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::Sealed(
            pb::SealedParameters {
                start_price: Some(usd("1.00")),
                ..pb::SealedParameters::default()
            },
        )),
    };
    let auction = create(&mut bidding, &actors, sealed, Duration::from_secs(3_600)).await;
    let hidden = bidding
        .list_bids(pb::ListBidsRequest {
            auction_id: auction.auction_id.clone(),
            include_removed: false,
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::FailedPrecondition);
    assert_eq!(reason(&hidden), "SEALED_BIDS_HIDDEN");
    app.stop().await;
}

async fn next_market(
    stream: &mut tonic::Streaming<pb::WatchMarketResponse>,
) -> pb::watch_market_response::Message {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("no error")
        .message
        .expect("a message")
}

async fn next_market_event(
    stream: &mut tonic::Streaming<pb::WatchMarketResponse>,
) -> pb::MarketEvent {
    loop {
        match next_market(stream).await {
            pb::watch_market_response::Message::Event(event) => return event,
            pb::watch_market_response::Message::Heartbeat(_) => {}
            pb::watch_market_response::Message::Snapshot(snapshot) => {
                assert!(snapshot.last_chunk || !snapshot.auctions.is_empty())
            }
        }
    }
}

fn sealed(starting: &str) -> pb::AuctionParameters {
    pb::AuctionParameters {
        format: pb::AuctionFormat::SealedSecondPrice as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::Sealed(
            pb::SealedParameters {
                start_price: Some(usd(starting)),
                ..pb::SealedParameters::default()
            },
        )),
    }
}

// Proves the partners' market feed delivers every new sealed auction once,
// in order, filtered by format and event type; that resuming after a
// sequence gives exactly what followed; and that a fresh start lists the
// matching running auctions in a snapshot.
#[tokio::test]
async fn market_feed_for_automated_bidders() {
    let app = spawn_app(Backend::Sqlite).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let subscribe = |resume_after_sequence: u64| {
        with_token(
            pb::WatchMarketRequest {
                formats: vec![
                    pb::AuctionFormat::SealedFirstPrice as i32,
                    pb::AuctionFormat::SealedSecondPrice as i32,
                ],
                event_types: vec![pb::MarketEventType::Opened as i32],
                resume_after_sequence,
                ..pb::WatchMarketRequest::default()
            },
            &actors.bob_token,
        )
    };
    let anonymous = bidding
        .watch_market(pb::WatchMarketRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let mut feed = bidding
        .watch_market(subscribe(0))
        .await
        .unwrap()
        .into_inner();
    let pb::watch_market_response::Message::Snapshot(first) = next_market(&mut feed).await else {
        panic!("a snapshot first");
    };
    assert!(first.auctions.is_empty() && first.last_chunk);

    let english = create(
        &mut bidding,
        &actors,
        english("1.00", None),
        Duration::from_secs(600),
    )
    .await;
    let one = create(
        &mut bidding,
        &actors,
        sealed("1.00"),
        Duration::from_secs(600),
    )
    .await;
    let two = create(
        &mut bidding,
        &actors,
        sealed("2.00"),
        Duration::from_secs(600),
    )
    .await;
    let first_event = next_market_event(&mut feed).await;
    let second_event = next_market_event(&mut feed).await;
    assert_eq!(
        first_event.state.as_ref().unwrap().auction_id,
        one.auction_id
    );
    assert_eq!(
        second_event.state.as_ref().unwrap().auction_id,
        two.auction_id
    );
    assert_eq!(first_event.event_type, pb::MarketEventType::Opened as i32);
    assert!(second_event.sequence > first_event.sequence);
    assert_ne!(english.auction_id, one.auction_id);

    // Resume after the first: only the second.
    let mut resumed = bidding
        .watch_market(subscribe(first_event.sequence))
        .await
        .unwrap()
        .into_inner();
    let again = next_market_event(&mut resumed).await;
    assert_eq!(again.sequence, second_event.sequence);
    assert_eq!(again.state.unwrap().auction_id, two.auction_id);

    // A fresh start lists the running sealed auctions, not the English one.
    let mut fresh = bidding
        .watch_market(subscribe(0))
        .await
        .unwrap()
        .into_inner();
    let pb::watch_market_response::Message::Snapshot(snapshot) = next_market(&mut fresh).await
    else {
        panic!("a snapshot first");
    };
    let mut listed: Vec<String> = snapshot
        .auctions
        .into_iter()
        .map(|state| state.auction_id)
        .collect();
    listed.sort();
    let mut expected = vec![one.auction_id.clone(), two.auction_id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    app.stop().await;
}

// Proves a bid that outbids someone reaches that person as an OUTBID
// notification on their Subscribe stream: the shard stages the event in
// its outbox in the same transaction as the log, the relay publishes it,
// the notification service delivers it.
#[tokio::test]
async fn outbid_reaches_the_outbid_bidder() {
    use auction_proto::v1::notification_service_client::NotificationServiceClient;
    let app = spawn_app(Backend::Sqlite).await;
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
    let mut notifications = NotificationServiceClient::new(app.channel().await);
    let mut stream = notifications
        .subscribe(with_token(
            pb::SubscribeRequest {
                resume_after_sequence: 0,
            },
            &actors.alice_token,
        ))
        .await
        .unwrap()
        .into_inner();
    bidding
        .set_max_bid(max_bid(&id, "n-1", "5.00", &actors.alice_token))
        .await
        .unwrap();
    bidding
        .set_max_bid(max_bid(&id, "n-2", "9.00", &actors.bob_token))
        .await
        .unwrap();
    let outbid = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a notification within 10 s")
            .expect("the stream is open")
            .expect("no error");
        if let Some(pb::subscribe_response::Message::Event(pb::InboxEvent {
            kind: Some(pb::inbox_event::Kind::Notification(notification)),
            ..
        })) = message.message
        {
            break notification;
        }
    };
    assert_eq!(
        outbid.notification_type,
        pb::NotificationType::Outbid as i32
    );
    assert_eq!(outbid.auction_id, id);
    assert_eq!(outbid.user_id, actors.alice.to_string());
    app.stop().await;
}

// Proves Dutch accepts, buy-it-now, sealed-bid withdrawal, cancellation and
// ListAuctions over gRPC, each with its precise refusals.
#[tokio::test]
async fn the_other_formats_and_controls() {
    let app = spawn_app(Backend::Sqlite).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;

    // Dutch: 2 units at the clock price; asking for more than remains is
    // refused with the units available; a stale price limit is refused.
    let dutch = pb::AuctionParameters {
        format: pb::AuctionFormat::Dutch as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::Dutch(
            pb::DutchParameters {
                start_price: Some(usd("100.00")),
                price_step: Some(usd("1.00")),
                tick_interval: Some(prost_types::Duration {
                    seconds: 3_600,
                    nanos: 0,
                }),
                floor_price: Some(usd("50.00")),
                quantity: 2,
                max_units_per_buyer: 0,
            },
        )),
    };
    let clock = create(&mut bidding, &actors, dutch, Duration::from_secs(3_600)).await;
    let accept = |key: &str, quantity: u32, limit: &str, token: &str| {
        with_token(
            pb::AcceptDutchPriceRequest {
                request_id: key.to_owned(),
                auction_id: clock.auction_id.clone(),
                quantity,
                max_unit_price: Some(usd(limit)),
                allow_partial: false,
            },
            token,
        )
    };
    let too_low = bidding
        .accept_dutch_price(accept("d-0", 1, "90.00", &actors.alice_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&too_low), "PRICE_ABOVE_LIMIT");
    let too_many = bidding
        .accept_dutch_price(accept("d-1", 3, "100.00", &actors.alice_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&too_many), "UNITS_UNAVAILABLE");
    let bought = bidding
        .accept_dutch_price(accept("d-2", 1, "100.00", &actors.alice_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bought.bid.unwrap().kind, pb::BidKind::DutchAccept as i32);
    bidding
        .accept_dutch_price(accept("d-3", 1, "100.00", &actors.bob_token))
        .await
        .unwrap();
    let sold_out = state(&mut bidding, &clock.auction_id).await;
    assert_eq!(sold_out.status, pb::AuctionStatus::Closed as i32);

    // Buy-it-now at the shown price closes the auction; a wrong price is refused.
    let mut english_with_bin = english("10.00", None);
    if let Some(pb::auction_parameters::FormatParameters::English(parameters)) =
        english_with_bin.format_parameters.as_mut()
    {
        parameters.buy_it_now_price = Some(usd("50.00"));
    }
    let bin = create(
        &mut bidding,
        &actors,
        english_with_bin,
        Duration::from_secs(3_600),
    )
    .await;
    let buy = |key: &str, price: &str| {
        with_token(
            pb::BuyItNowRequest {
                request_id: key.to_owned(),
                auction_id: bin.auction_id.clone(),
                expected_price: Some(usd(price)),
            },
            &actors.bob_token,
        )
    };
    let mismatch = bidding.buy_it_now(buy("b-0", "40.00")).await.unwrap_err();
    assert_eq!(reason(&mismatch), "EXPECTED_AMOUNT_MISMATCH");
    let bought = bidding
        .buy_it_now(buy("b-1", "50.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bought.state.unwrap().status,
        pb::AuctionStatus::Closed as i32
    );

    // A sealed bid can be withdrawn before the close; a second withdrawal finds none.
    let sealed = create(
        &mut bidding,
        &actors,
        sealed("1.00"),
        Duration::from_secs(3_600),
    )
    .await;
    bidding
        .place_sealed_bid(with_token(
            pb::PlaceSealedBidRequest {
                request_id: "s-1".to_owned(),
                auction_id: sealed.auction_id.clone(),
                amount: Some(usd("5.00")),
                expire_time: None,
            },
            &actors.alice_token,
        ))
        .await
        .unwrap();
    let withdraw = |key: &str| {
        with_token(
            pb::WithdrawSealedBidRequest {
                request_id: key.to_owned(),
                auction_id: sealed.auction_id.clone(),
                bid_id: String::new(),
            },
            &actors.alice_token,
        )
    };
    let withdrawn = bidding
        .withdraw_sealed_bid(withdraw("w-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        withdrawn.state.unwrap().format_state,
        Some(pb::auction_state::FormatState::Sealed(pb::SealedState {
            sealed_bid_count: 0,
            ..Default::default()
        }))
    );
    let again = bidding
        .withdraw_sealed_bid(withdraw("w-2"))
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "BID_NOT_FOUND");

    // Cancellation: not by a bidder; by the seller before the reserve is met;
    // after it is met only by an admin.
    let with_reserve = create(
        &mut bidding,
        &actors,
        english("1.00", Some("20.00")),
        Duration::from_secs(3_600),
    )
    .await;
    bidding
        .set_max_bid(max_bid(
            &with_reserve.auction_id,
            "c-1",
            "30.00",
            &actors.alice_token,
        ))
        .await
        .unwrap();
    let cancel = |key: &str, token: &str, auction_id: &str| {
        with_token(
            pb::CancelAuctionRequest {
                request_id: key.to_owned(),
                auction_id: auction_id.to_owned(),
                reason: "test".to_owned(),
            },
            token,
        )
    };
    let by_bidder = bidding
        .cancel_auction(cancel("x-1", &actors.bob_token, &with_reserve.auction_id))
        .await
        .unwrap_err();
    assert_eq!(by_bidder.code(), Code::PermissionDenied);
    let reserve_met = bidding
        .cancel_auction(cancel(
            "x-2",
            &actors.seller_token,
            &with_reserve.auction_id,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&reserve_met), "RESERVE_ALREADY_MET");
    let by_admin = bidding
        .cancel_auction(cancel("x-3", &actors.admin_token, &with_reserve.auction_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        by_admin.state.unwrap().status,
        pb::AuctionStatus::Cancelled as i32
    );
    let plain = create(
        &mut bidding,
        &actors,
        english("1.00", None),
        Duration::from_secs(3_600),
    )
    .await;
    let by_seller = bidding
        .cancel_auction(cancel("x-4", &actors.seller_token, &plain.auction_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        by_seller.state.unwrap().status,
        pb::AuctionStatus::Cancelled as i32
    );

    // ListAuctions: running ones by default, filters by format, pages.
    let running = bidding
        .list_auctions(pb::ListAuctionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .auctions;
    let running_ids: Vec<&str> = running
        .iter()
        .map(|auction| auction.auction_id.as_str())
        .collect();
    assert_eq!(
        running_ids,
        [sealed.auction_id.as_str()],
        "only the sealed auction is still running"
    );
    let closed = bidding
        .list_auctions(pb::ListAuctionsRequest {
            statuses: vec![pb::AuctionStatus::Closed as i32],
            formats: vec![pb::AuctionFormat::Dutch as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .auctions;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].auction_id, clock.auction_id);
    app.stop().await;
}

// Proves an auction created after its start time is recorded as open in the
// log's auctions table, not as the scheduled status it was created with
// (it used to stay "scheduled" there until its next status change).
#[tokio::test]
async fn an_auction_created_after_its_start_is_stored_open() {
    let app = spawn_app(Backend::Sqlite).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let created = create(
        &mut bidding,
        &actors,
        english("1.00", None),
        Duration::from_secs(3_600),
    )
    .await;
    assert_eq!(created.status, pb::AuctionStatus::Open as i32);
    let database = auction_platform::Database::open(
        &app.config.storage,
        <auction_bidding::Service as auction_platform::MeshService>::SCHEMA,
        <auction_bidding::Service as auction_platform::MeshService>::migrations(),
    )
    .await
    .unwrap();
    let auction_platform::Database::Sqlite(pool) = database else {
        panic!("the embedded default is SQLite");
    };
    let stored: String = sqlx::query_scalar("SELECT status FROM auctions WHERE auction_id = ?")
        .bind(Uuid::parse_str(&created.auction_id).unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, "open");
    app.stop().await;
}

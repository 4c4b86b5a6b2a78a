//! A bidding cluster of three `auction-bidding` processes on the suite's
//! real etcd, PostgreSQL and Redis: leaders killed with SIGKILL while bids
//! flow, a leader frozen with SIGSTOP past its lease, and a watcher resuming
//! across a leader change, and a live watcher on a node that does not lead.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use auction_engine::{Action, Actor, Auction, Command, RequestId, Timestamp, UserId};
use auction_proto::v1 as pb;
use harness::{Harness, LEASE_TTL, reason, usd};
use tokio_stream::StreamExt as _;
use uuid::Uuid;

/// An acknowledged answer to a bid.
#[derive(Debug, Clone)]
struct Acknowledged {
    request_id: String,
    bidder: Uuid,
    max_amount: rust_decimal::Decimal,
    /// The auction's sequence after the bid: the log's order.
    sequence: u64,
    at: Instant,
}

/// Bids from `bidder` with rising maxima until `stop`, retrying each
/// request (same request id) on any node until it gets a definite answer.
async fn bid_flow(
    harness: std::sync::Arc<Harness>,
    auction_id: String,
    bidder: Uuid,
    offset: u32,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<Acknowledged>, Vec<String>) {
    let token = harness.token(bidder, &[auction_platform::auth::Role::Bidder]);
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut step = 0u32;
    while !*stop.borrow() {
        step += 1;
        let max_amount = rust_decimal::Decimal::from(100 + 30 * step + offset);
        let request_id = format!("bid-{bidder}-{step}");
        let request = pb::SetMaxBidRequest {
            request_id: request_id.clone(),
            auction_id: auction_id.clone(),
            max_amount: Some(usd(&max_amount.to_string())),
        };
        let answer = harness
            .until_answered(step as usize + offset as usize, |mut client| {
                let request = harness::with_token(request.clone(), &token);
                async move { client.set_max_bid(request).await }
            })
            .await;
        match answer {
            Ok(response) => {
                let sequence = response
                    .into_inner()
                    .state
                    .map(|state| state.sequence)
                    .unwrap_or_default();
                accepted.push(Acknowledged {
                    request_id,
                    bidder,
                    max_amount,
                    sequence,
                    at: Instant::now(),
                });
            }
            Err(status) => refused.push(format!("{request_id}: {}", reason(&status))),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (accepted, refused)
}

// Proves: kill -9 of a shard's leader while bids flow, 20 times; another
// node leads within TTL + 1 s; every acknowledged bid is in the log; the log
// of the auction only ever moves to higher epochs, each begun by one node;
// the final outcome is the engine's over the acknowledged bids.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_twenty_times_loses_no_acknowledged_bid() {
    let harness = std::sync::Arc::new(Harness::start(3, 4).await);
    harness
        .wait_until_every_shard_is_led(Duration::from_secs(20))
        .await;
    let seller = Uuid::now_v7();
    let (created, spec) = harness
        .create_english_auction(seller, Duration::from_secs(600))
        .await;
    let auction_id = created.auction_id.clone();
    let shard = harness.shard_of(&auction_id);

    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let bidders: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let flows: Vec<_> = bidders
        .iter()
        .enumerate()
        .map(|(index, bidder)| {
            tokio::spawn(bid_flow(
                std::sync::Arc::clone(&harness),
                auction_id.clone(),
                *bidder,
                u32::try_from(index).unwrap() * 10,
                stop.clone(),
            ))
        })
        .collect();

    let mut kills = Vec::new();
    for cycle in 0..20 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let before = harness
            .leader_of(shard)
            .await
            .unwrap_or_else(|| panic!("cycle {cycle}: shard {shard} has no leader"));
        let killed_at = Instant::now();
        harness.kill(&before.node);
        let after = harness
            .wait_for_new_leader(shard, &before, LEASE_TTL + Duration::from_secs(1))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "cycle {cycle}: no other node led shard {shard} within TTL + 1 s after {} was killed",
                    before.node
                )
            });
        assert_ne!(after.node, before.node);
        assert!(after.epoch > before.epoch, "epochs rise across terms");
        kills.push((killed_at, killed_at.elapsed()));
        harness.restart(&before.node);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_sender.send(true).unwrap();
    let mut accepted = Vec::new();
    for flow in flows {
        let (mut flow_accepted, _refused) = flow.await.unwrap();
        accepted.append(&mut flow_accepted);
    }
    assert!(
        accepted.len() > 40,
        "bids flowed: {} acknowledged",
        accepted.len()
    );

    // Failover as a client sees it: from each kill to the first bid
    // acknowledged after it.
    let mut failovers: Vec<Duration> = kills
        .iter()
        .filter_map(|(killed_at, _)| {
            accepted
                .iter()
                .filter(|ack| ack.at > *killed_at)
                .map(|ack| ack.at.duration_since(*killed_at))
                .min()
        })
        .collect();
    failovers.sort();
    if let (Some(median), Some(max)) = (failovers.get(failovers.len() / 2), failovers.last()) {
        println!(
            "failover (kill -9 to the first acknowledged bid on the new leader) over {} kills: p50 {} ms, max {} ms; {} bids acknowledged",
            failovers.len(),
            median.as_millis(),
            max.as_millis(),
            accepted.len()
        );
    }

    // Every acknowledged bid is in the log.
    let database = harness.database().await;
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT request_id FROM bidding.request_outcomes WHERE auction_id = $1 AND method = 'SetMaxBid'",
    )
    .bind(Uuid::parse_str(&auction_id).unwrap())
    .fetch_all(&database)
    .await
    .unwrap();
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    for ack in &accepted {
        assert!(
            stored.contains(&ack.request_id),
            "acknowledged bid {} is missing from the log",
            ack.request_id
        );
    }

    // The auction's log only moves to higher epochs, each begun by one node.
    let epochs: Vec<i64> = sqlx::query_scalar(
        "SELECT epoch FROM bidding.auction_events WHERE auction_id = $1 ORDER BY seq",
    )
    .bind(Uuid::parse_str(&auction_id).unwrap())
    .fetch_all(&database)
    .await
    .unwrap();
    assert!(
        epochs.windows(2).all(|pair| pair[0] <= pair[1]),
        "an older epoch appended after a newer one: {epochs:?}"
    );
    let distinct: std::collections::BTreeSet<i64> = epochs.iter().copied().collect();
    assert!(
        distinct.len() > 10,
        "the log spans many terms: {distinct:?}"
    );
    for epoch in &distinct {
        let nodes: Vec<String> = sqlx::query_scalar(
            "SELECT node FROM bidding.shard_terms WHERE shard = $1 AND epoch = $2",
        )
        .bind(i32::try_from(shard).unwrap())
        .bind(epoch)
        .fetch_all(&database)
        .await
        .unwrap();
        assert_eq!(nodes.len(), 1, "epoch {epoch} was begun by {nodes:?}");
    }

    // The outcome is the engine's over the acknowledged bids, in log order.
    accepted.sort_by_key(|ack| ack.sequence);
    let mut auction = Auction::new(spec).unwrap();
    let mut events = Vec::new();
    let mut now = Timestamp::from_unix_ms(
        created.start_time.as_ref().map_or(0, |time| {
            time.seconds * 1_000 + i64::from(time.nanos / 1_000_000)
        }) + 1_000,
    );
    if auction
        .next_deadline()
        .is_some_and(|deadline| deadline <= now)
    {
        // The opening timer, as the shard fired it.
        auction.apply(Command::tick(now), now, &mut events).unwrap();
    }
    for (index, ack) in accepted.iter().enumerate() {
        now = Timestamp::from_unix_ms(now.unix_ms() + 1);
        let command = Command {
            request_id: RequestId(u128::try_from(index).unwrap()),
            actor: Actor::bidder(UserId(ack.bidder.as_u128())),
            received_at: now,
            action: Action::SetMaxBid {
                max_amount: auction_bidding::convert::money(
                    "max_amount",
                    Some(&usd(&ack.max_amount.to_string())),
                )
                .unwrap(),
                lot: None,
            },
        };
        auction
            .apply(command, now, &mut events)
            .unwrap_or_else(|rejection| {
                panic!(
                    "the engine refuses acknowledged bid {}: {rejection:?}",
                    ack.request_id
                )
            });
    }
    let view = auction.view();
    let state = harness.state(&auction_id).await;
    let leader = state
        .leader
        .as_ref()
        .map(|leader| leader.user_id.clone())
        .unwrap_or_default();
    assert_eq!(
        leader,
        harness::engine_leader(&view)
            .map(|id| id.to_string())
            .unwrap_or_default(),
        "the leader is the engine's"
    );
    assert_eq!(
        state
            .current_price
            .as_ref()
            .map(|money| money.amount.clone())
            .unwrap_or_default(),
        harness::engine_price(&view)
            .map(|price| price.to_string())
            .unwrap_or_default(),
        "the price is the engine's"
    );
    let counted: HashMap<Uuid, usize> = accepted.iter().fold(HashMap::new(), |mut counts, ack| {
        *counts.entry(ack.bidder).or_default() += 1;
        counts
    });
    assert_eq!(counted.len(), 3, "every bidder got bids in");
}

// Proves: a leader frozen (SIGSTOP) past its lease is replaced; when it
// wakes, it steps down: a bid that reached it while frozen is not applied
// under its old epoch (the database refuses it, or the node no longer
// serves the shard) and is redirected to the new leader, applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_leader_is_fenced_and_redirects() {
    let harness = std::sync::Arc::new(Harness::start(3, 4).await);
    harness
        .wait_until_every_shard_is_led(Duration::from_secs(20))
        .await;
    let seller = Uuid::now_v7();
    let (created, _) = harness
        .create_english_auction(seller, Duration::from_secs(600))
        .await;
    let auction_id = created.auction_id.clone();
    let shard = harness.shard_of(&auction_id);
    let bidder = Uuid::now_v7();
    let token = harness.token(bidder, &[auction_platform::auth::Role::Bidder]);

    let old = harness.leader_of(shard).await.expect("a leader");
    harness.signal(&old.node, "STOP");
    let new = harness
        .wait_for_new_leader(shard, &old, LEASE_TTL + Duration::from_secs(2))
        .await
        .expect("another node leads while the old one is frozen");

    // A bid sent straight to the frozen node waits in its socket.
    let mut frozen_client = harness.client_of(&old.node);
    let request = pb::SetMaxBidRequest {
        request_id: "to-the-frozen-leader".to_owned(),
        auction_id: auction_id.clone(),
        max_amount: Some(usd("150")),
    };
    let mut late = harness::with_token(request.clone(), &token);
    late.set_timeout(Duration::from_secs(20));
    let sent = tokio::spawn(async move { frozen_client.set_max_bid(late).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    harness.signal(&old.node, "CONT");
    let answer = sent.await.unwrap();
    match &answer {
        Ok(response) => {
            // Redirected: the new leader applied it.
            assert!(response.get_ref().viewer.as_ref().unwrap().is_leader);
        }
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert_eq!(reason(status), "NOT_LEADER", "{status:?}");
            // The client retries with the same request id: applied once.
            let retried = harness
                .until_answered(0, |mut client| {
                    let request = harness::with_token(request.clone(), &token);
                    async move { client.set_max_bid(request).await }
                })
                .await
                .expect("the retry is applied by the new leader");
            assert!(retried.get_ref().viewer.as_ref().unwrap().is_leader);
        }
    }
    // Nothing was appended under the old epoch after the new term began,
    // and the bid is in the log once.
    let database = harness.database().await;
    let late_old_epoch: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bidding.auction_events WHERE auction_id = $1 AND epoch = $2 AND seq > (SELECT coalesce(min(seq), 0) FROM bidding.auction_events WHERE auction_id = $1 AND epoch = $3)",
    )
    .bind(Uuid::parse_str(&auction_id).unwrap())
    .bind(i64::try_from(old.epoch).unwrap())
    .bind(i64::try_from(new.epoch).unwrap())
    .fetch_one(&database)
    .await
    .unwrap();
    assert_eq!(late_old_epoch, 0);
    let outcomes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bidding.request_outcomes WHERE request_id = 'to-the-frozen-leader'",
    )
    .fetch_one(&database)
    .await
    .unwrap();
    assert_eq!(outcomes, 1);
    // The old node no longer leads anything it led before the freeze
    // under the old term, and says why.
    let log = harness.log_of(&old.node);
    assert!(
        log.contains("stepping down") || log.contains("fenced"),
        "the frozen node's log says it stepped down:\n{log}"
    );
}

// Proves: a watcher that stops after sequence S and resumes after S on
// another node, across a leader change, receives exactly the events after
// S: no gap, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_resumes_across_a_leader_change() {
    let harness = std::sync::Arc::new(Harness::start(3, 4).await);
    harness
        .wait_until_every_shard_is_led(Duration::from_secs(20))
        .await;
    let seller = Uuid::now_v7();
    let (created, _) = harness
        .create_english_auction(seller, Duration::from_secs(600))
        .await;
    let auction_id = created.auction_id.clone();
    let shard = harness.shard_of(&auction_id);
    let bidders: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
    let place = |step: u32| {
        harness.max_bid_until_answered(
            &auction_id,
            bidders[step as usize % 2],
            format!("watch-bid-{step}"),
            100 + step * 20,
        )
    };
    for step in 1..=3 {
        place(step).await.expect("the bid is accepted");
    }
    // Watch from a snapshot and remember where we stopped.
    let mut client = harness.client(0);
    let mut stream = client
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: auction_id.clone(),
            resume_after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let resume_after = loop {
        let message = stream.next().await.unwrap().unwrap();
        if let Some(pb::watch_auction_response::Message::Snapshot(snapshot)) = message.message {
            break snapshot.state.unwrap().sequence;
        }
    };
    drop(stream);
    let leader = harness.leader_of(shard).await.unwrap();
    harness.kill(&leader.node);
    for step in 4..=6 {
        place(step).await.expect("the bid is accepted");
    }
    let final_sequence = harness.state(&auction_id).await.sequence;
    assert!(final_sequence > resume_after);
    // Resume on a node that is alive, whichever leads now.
    let survivor = harness.any_other_node(&leader.node);
    let mut client = harness.client_of(&survivor);
    let mut stream = client
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: auction_id.clone(),
            resume_after_sequence: resume_after,
        })
        .await
        .unwrap()
        .into_inner();
    let mut sequences = Vec::new();
    while sequences.last().copied().unwrap_or(resume_after) < final_sequence {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        match message.message {
            Some(pb::watch_auction_response::Message::Event(event)) => {
                sequences.push(event.sequence)
            }
            Some(pb::watch_auction_response::Message::Snapshot(_)) => {
                panic!("a resume must not resync")
            }
            _ => {}
        }
    }
    let expected: Vec<u64> = (resume_after + 1..=final_sequence).collect();
    assert_eq!(sequences, expected);
    harness.restart(&leader.node);
}

// Proves the cross-node fan-out: a watcher on a node that does not lead the
// auction's shard gets every commit live through Redis pub/sub, and its
// stream stays open and gap-free (no duplicate) while the leader is killed
// and another node takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_watcher_on_another_node_survives_the_leaders_death() {
    let harness = std::sync::Arc::new(Harness::start(3, 4).await);
    harness
        .wait_until_every_shard_is_led(Duration::from_secs(20))
        .await;
    let seller = Uuid::now_v7();
    let (created, _) = harness
        .create_english_auction(seller, Duration::from_secs(600))
        .await;
    let auction_id = created.auction_id.clone();
    let shard = harness.shard_of(&auction_id);
    let leader = harness.leader_of(shard).await.unwrap();
    let watcher_node = harness.any_other_node(&leader.node);
    let mut watcher = harness.client_of(&watcher_node);
    let mut stream = watcher
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: auction_id.clone(),
            resume_after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = match stream.next().await.unwrap().unwrap().message {
        Some(pb::watch_auction_response::Message::Snapshot(snapshot)) => {
            snapshot.state.unwrap().sequence
        }
        other => panic!("a snapshot first, not {other:?}"),
    };
    let bidders: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
    let place = |step: u32| {
        harness.max_bid_until_answered(
            &auction_id,
            bidders[step as usize % 2],
            format!("live-bid-{step}"),
            100 + step * 20,
        )
    };
    let mut sequences = Vec::new();
    let mut last = 0;
    for step in 1..=3 {
        last = place(step).await.expect("the bid is accepted").sequence;
    }
    read_until(&mut stream, first, last, &mut sequences).await;
    // The leader dies; the watcher's node may or may not take over.
    if watcher_node != leader.node {
        harness.kill(&leader.node);
    }
    for step in 4..=6 {
        last = place(step).await.expect("the bid is accepted").sequence;
    }
    read_until(&mut stream, first, last, &mut sequences).await;
    let expected: Vec<u64> = (first + 1..=last).collect();
    assert_eq!(sequences, expected, "every commit once, in order");
    harness.restart(&leader.node);
}

// Proves a WatchMyActivity stream on a node that does not lead the
// auction's shard gets the user's activity as it is committed on the leader,
// woken through Redis pub/sub: with Redis the stream polls the log only
// every heartbeat (15 s), longer than this test waits for the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activity_stream_on_another_node_is_woken_through_redis() {
    let harness = Harness::start(2, 4).await;
    harness
        .wait_until_every_shard_is_led(Duration::from_secs(20))
        .await;
    let (created, _) = harness
        .create_english_auction(Uuid::now_v7(), Duration::from_secs(600))
        .await;
    let auction_id = created.auction_id.clone();
    let leader = harness
        .leader_of(harness.shard_of(&auction_id))
        .await
        .unwrap();
    let other = harness.any_other_node(&leader.node);
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    harness
        .max_bid_until_answered(&auction_id, alice, "alice-1".to_owned(), 100)
        .await
        .expect("alice's bid");
    let alice_token = harness.token(alice, &[auction_platform::auth::Role::Bidder]);
    let mut stream = harness
        .client_of(&other)
        .watch_my_activity(harness::with_token(
            pb::WatchMyActivityRequest {
                resume_after_sequence: 0,
            },
            &alice_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let head = match stream.next().await.unwrap().unwrap().message {
        Some(pb::watch_my_activity_response::Message::Snapshot(snapshot)) => snapshot.sequence,
        other => panic!("a snapshot first, not {other:?}"),
    };
    harness
        .max_bid_until_answered(&auction_id, bob, "bob-1".to_owned(), 200)
        .await
        .expect("bob's bid");
    let event = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the outbid reaches the other node's stream before its poll")
            .expect("the stream stays open")
            .expect("no error on the stream");
        match message.message {
            Some(pb::watch_my_activity_response::Message::Event(event)) => break event,
            Some(pb::watch_my_activity_response::Message::Heartbeat(_)) => {}
            other => panic!("an event, not {other:?}"),
        }
    };
    assert_eq!(event.sequence, head + 1);
    assert_eq!(event.activity_type(), pb::ActivityType::Outbid);
}

/// Reads events from a watch stream until sequence `target`.
async fn read_until(
    stream: &mut tonic::Streaming<pb::WatchAuctionResponse>,
    first: u64,
    target: u64,
    sequences: &mut Vec<u64>,
) {
    while sequences.last().copied().unwrap_or(first) < target {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("live events arrive on the non-leader")
            .expect("the stream stays open")
            .expect("no error on the stream");
        match message.message {
            Some(pb::watch_auction_response::Message::Event(event)) => {
                sequences.push(event.sequence)
            }
            Some(pb::watch_auction_response::Message::Snapshot(_)) => panic!("no resync expected"),
            _ => {}
        }
    }
}

// Proves leadership spreads evenly and rebalances: with k nodes no node
// leads more than ceil(shards / k) + 1 once stable, when a node leaves the
// others take its shards, and when it comes back it gets a share again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_spreads_and_rebalances() {
    let shards = 16;
    let harness = Harness::start(3, shards).await;
    let balanced = |nodes: usize| shards.div_ceil(u32::try_from(nodes).unwrap()) + 1;
    harness
        .wait_until_balanced(
            &["node-0", "node-1", "node-2"],
            balanced(3),
            Duration::from_secs(20),
        )
        .await;
    harness.kill("node-1");
    harness
        .wait_until_balanced(&["node-0", "node-2"], balanced(2), Duration::from_secs(20))
        .await;
    harness.restart("node-1");
    harness
        .wait_until_balanced(
            &["node-0", "node-1", "node-2"],
            balanced(3),
            Duration::from_secs(20),
        )
        .await;
}

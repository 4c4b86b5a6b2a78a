//! `watch`: M `WatchAuction` streams on C connections while bidders bid.
//! Delivery latency is the time from a bid's acknowledgement (the OK answer
//! reaching the bidder) to the arrival of the bid's last event (same auction,
//! sequence = the answer's `state.sequence`) on each stream. An event that
//! beats the acknowledgement counts as 0 and is reported apart. Given the
//! server's pid, the server's RSS before the streams, with the streams
//! open and idle, and at the end of the load gives the memory per stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use auction_proto::v1 as pb;
use tokio::task::JoinSet;

use crate::bids::{AckSink, BidLoad, LoadOptions};
use crate::common::{self, Budget, Common, Credentials, SharedHistogram};

/// Flags of `watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Common options.
    #[command(flatten)]
    pub common: Common,
    /// The bid load.
    #[command(flatten)]
    pub load: LoadOptions,
    /// Watch streams in total, spread evenly over the auctions.
    #[arg(long, default_value_t = 1_000)]
    pub streams: usize,
    /// HTTP/2 connections carrying the streams.
    #[arg(long, default_value_t = 100)]
    pub stream_connections: usize,
    /// The server's process id, to read its RSS from /proc/<pid>/status.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Acknowledgement times by (auction index, sequence).
#[derive(Default)]
struct AckBook {
    acks: RwLock<HashMap<(usize, u64), Instant>>,
}

impl AckSink for AckBook {
    fn acknowledged(&self, auction: usize, sequence: u64, at: Instant) {
        self.acks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((auction, sequence), at);
    }
}

impl AckBook {
    fn get(&self, auction: usize, sequence: u64) -> Option<Instant> {
        self.acks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(auction, sequence))
            .copied()
    }
}

/// What `watch` reads of a `WatchAuctionResponse`: the kind, an event's
/// sequence and a snapshot's reason. prost skips every other field without
/// decoding it, so 10,000 streams cost the load generator (which shares the
/// machine with the server it measures) as little as possible.
#[derive(Clone, PartialEq, prost::Message)]
struct WatchHead {
    #[prost(oneof = "HeadKind", tags = "1, 2, 3")]
    kind: Option<HeadKind>,
}

/// The kinds of `WatchAuctionResponse`, same tags.
#[derive(Clone, PartialEq, prost::Oneof)]
enum HeadKind {
    #[prost(message, tag = "1")]
    Snapshot(SnapshotHead),
    #[prost(message, tag = "2")]
    Event(EventHead),
    #[prost(message, tag = "3")]
    Heartbeat(HeartbeatHead),
}

/// `AuctionSnapshot.reason`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
struct SnapshotHead {
    #[prost(int32, tag = "1")]
    reason: i32,
}

/// `AuctionEvent.sequence`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
struct EventHead {
    #[prost(uint64, tag = "1")]
    sequence: u64,
}

/// Nothing of `StreamHeartbeat`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
struct HeartbeatHead {}

/// Opens `WatchAuction` decoding only [`WatchHead`].
async fn watch_heads(
    channel: tonic::transport::Channel,
    request: pb::WatchAuctionRequest,
) -> Result<tonic::codec::Streaming<WatchHead>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let codec = tonic_prost::ProstCodec::<pb::WatchAuctionRequest, WatchHead>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/auction.v1.BiddingService/WatchAuction",
    );
    Ok(grpc
        .server_streaming(tonic::Request::new(request), path, codec)
        .await?
        .into_inner())
}

/// Unmatched arrivals remembered at most (memory bound of the client).
const UNMATCHED_LIMIT: usize = 5_000_000;

/// What the streams counted.
#[derive(Default)]
struct StreamCounts {
    events: AtomicU64,
    matched: AtomicU64,
    before_ack: AtomicU64,
    resyncs: AtomicU64,
    failed: AtomicU64,
}

/// Runs `watch` and prints the report.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let common: &Common = &options.common;
    let channels = common::connect(&common.server, common.connections).await?;
    let credentials = Credentials::load(common)?;
    let load = BidLoad::prepare(common, &options.load, &channels, &credentials).await?;
    let streams = options.streams.clamp(1, crate::MAX_STREAMS);
    let stream_channels =
        common::connect(&common.server, options.stream_connections.clamp(1, 1_000)).await?;
    let rss = |what: &str| -> anyhow::Result<Option<u64>> {
        match options.server_pid {
            Some(pid) => {
                let kib = common::rss_kib(pid)?;
                println!("server RSS {what}: {kib} KiB");
                Ok(Some(kib))
            }
            None => Ok(None),
        }
    };
    let before = rss("before the streams")?;

    let book = Arc::new(AckBook::default());
    let counts = Arc::new(StreamCounts::default());
    // One histogram per stream connection (merged at the end): 100,000
    // deliveries a second on one lock would make the client the bottleneck.
    let shards: Vec<SharedHistogram> = (0..stream_channels.len())
        .map(|_| Arc::new(Mutex::new(common::histogram())))
        .collect();
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let unmatched: Arc<Mutex<Vec<(usize, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut stream_tasks = JoinSet::new();
    let (opened_sender, mut opened) = tokio::sync::mpsc::channel::<()>(streams);
    let opening = Instant::now();
    for index in 0..streams {
        let auction = index % load.auctions.len();
        let auction_id = load.auctions[auction].clone();
        let channel = stream_channels[index % stream_channels.len()].clone();
        let book = book.clone();
        let counts = counts.clone();
        let delivery = shards[index % shards.len()].clone();
        let measuring = measuring.clone();
        let unmatched = unmatched.clone();
        let opened_sender = opened_sender.clone();
        stream_tasks.spawn(async move {
            let request = pb::WatchAuctionRequest {
                auction_id,
                resume_after_sequence: 0,
            };
            let mut stream = match watch_heads(channel, request).await {
                Ok(stream) => stream,
                Err(status) => {
                    eprintln!("WatchAuction: {}", common::reason(&status));
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = opened_sender.send(()).await;
                    return;
                }
            };
            let mut announced = false;
            loop {
                let message = match stream.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => return,
                    Err(_) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let arrived = Instant::now();
                match message.kind {
                    Some(HeadKind::Event(event)) => {
                        if !measuring.load(Ordering::Relaxed) {
                            continue;
                        }
                        counts.events.fetch_add(1, Ordering::Relaxed);
                        if let Some(acked) = book.get(auction, event.sequence) {
                            counts.matched.fetch_add(1, Ordering::Relaxed);
                            let mut histogram = delivery
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            common::record(
                                &mut histogram,
                                arrived.saturating_duration_since(acked),
                            );
                        } else {
                            // Not acknowledged yet, or not a bid's last
                            // event: settled after the run.
                            let mut unmatched = unmatched
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            if unmatched.len() < UNMATCHED_LIMIT {
                                unmatched.push((auction, event.sequence));
                            }
                        }
                    }
                    Some(HeadKind::Snapshot(snapshot)) => {
                        if !announced {
                            announced = true;
                            let _ = opened_sender.send(()).await;
                        } else if snapshot.reason == pb::SnapshotReason::SlowConsumer as i32 {
                            counts.resyncs.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(HeadKind::Heartbeat(_)) | None => {}
                }
            }
        });
    }
    drop(opened_sender);
    let mut open = 0;
    while open < streams {
        match tokio::time::timeout(Duration::from_secs(60), opened.recv()).await {
            Ok(Some(())) => open += 1,
            Ok(None) => break,
            Err(_) => anyhow::bail!("only {open} of {streams} streams opened within 60 s"),
        }
    }
    println!(
        "{streams} streams on {} connections over {} auction(s) opened in {} ms ({} failed)",
        stream_channels.len(),
        load.auctions.len(),
        opening.elapsed().as_millis(),
        counts.failed.load(Ordering::Relaxed)
    );
    // Let the server settle its buffers before reading the idle figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss("with the streams open, idle")?;

    measuring.store(true, Ordering::Relaxed);
    let budget = Budget::new(common);
    let tally = crate::bids::drive(
        load.clone(),
        &channels,
        budget.clone(),
        &options.load,
        Some(book.clone() as Arc<dyn AckSink>),
    )
    .await?;
    let loaded = rss("at the end of the bid load")?;
    // Deliveries still in flight after the last ack.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    stream_tasks.abort_all();
    // An event that arrived before its bid's ack was delivered in no time
    // after it: count it as 0.
    let mut delivery = common::histogram();
    for shard in &shards {
        delivery.add(
            &*shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )?;
    }
    {
        let unmatched = unmatched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (auction, sequence) in unmatched.iter() {
            if book.get(*auction, *sequence).is_some() {
                counts.matched.fetch_add(1, Ordering::Relaxed);
                counts.before_ack.fetch_add(1, Ordering::Relaxed);
                common::record(&mut delivery, Duration::ZERO);
            }
        }
    }

    println!(
        "watch: {streams} streams, bids at {}",
        options
            .load
            .rate
            .map_or_else(|| "full speed".to_owned(), |rate| format!("{rate}/s"))
    );
    common::print_tally("bids acknowledged", &tally, budget.measured());
    let window = budget.measured();
    println!(
        "delivery: {} events received ({}/s), {} matched to an acknowledged bid, {} arrived before the ack (counted as 0), {} slow-consumer resyncs, {} streams failed",
        counts.events.load(Ordering::Relaxed),
        common::per_second(counts.events.load(Ordering::Relaxed), window),
        counts.matched.load(Ordering::Relaxed),
        counts.before_ack.load(Ordering::Relaxed),
        counts.resyncs.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    println!(
        "  delivery latency after the ack: {}",
        common::percentiles(&delivery)
    );
    if let (Some(before), Some(idle), Some(loaded)) = (before, idle, loaded) {
        let per_stream =
            |after: u64| after.saturating_sub(before).saturating_mul(1_024) / streams as u64;
        println!(
            "memory per stream: {} bytes idle, {} bytes at the end of the load",
            per_stream(idle),
            per_stream(loaded)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prost::Message as _;

    use super::*;

    // Proves the partial decode reads the same kind, sequence and reason as
    // the contract's own message (the tags are written by hand).
    #[test]
    fn heads_decode_what_the_contract_encodes() {
        use pb::watch_auction_response::Message;
        let decode = |message: Message| {
            let bytes = pb::WatchAuctionResponse {
                message: Some(message),
            }
            .encode_to_vec();
            WatchHead::decode(bytes.as_slice()).unwrap().kind
        };
        let event = decode(Message::Event(pb::AuctionEvent {
            sequence: 7,
            auction_id: "an auction".to_owned(),
            ..Default::default()
        }));
        assert_eq!(event, Some(HeadKind::Event(EventHead { sequence: 7 })));
        let snapshot = decode(Message::Snapshot(pb::AuctionSnapshot {
            reason: pb::SnapshotReason::SlowConsumer as i32,
            state: Some(pb::AuctionState {
                sequence: 9,
                ..Default::default()
            }),
            recent_bids: Vec::new(),
        }));
        assert_eq!(
            snapshot,
            Some(HeadKind::Snapshot(SnapshotHead {
                reason: pb::SnapshotReason::SlowConsumer as i32
            }))
        );
        let heartbeat = decode(Message::Heartbeat(pb::StreamHeartbeat {
            server_time: None,
            latest_sequence: 3,
        }));
        assert_eq!(heartbeat, Some(HeadKind::Heartbeat(HeartbeatHead {})));
    }
}

//! In-process fan-out of committed events. A shard publishes what a batch
//! committed, once per auction; every `WatchAuction` stream of that auction
//! holds a receiver of one bounded broadcast channel (one upstream per
//! auction). A receiver that falls more than the channel's capacity behind
//! learns it from the channel (`Lagged`) and resyncs from a snapshot, so a
//! slow watcher never makes memory grow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use auction_engine::{AuctionView, Event};
use prost::bytes::Bytes;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::shard::Metadata;

/// What one commit changed in one auction.
#[derive(Debug)]
pub struct Published {
    /// The auction.
    pub auction_id: Uuid,
    /// The committed events, in sequence.
    pub events: Vec<Event>,
    /// The auction as it stands after them.
    pub view: AuctionView,
    /// The catalog's metadata.
    pub metadata: Arc<Metadata>,
    /// The events as `WatchAuction` sends them (each an encoded
    /// `WatchAuctionResponse`), converted and encoded by the first watcher
    /// that needs them and shared by every other: 10,000 watchers of one
    /// auction convert and encode each event once, not 10,000 times.
    frames: OnceLock<Vec<Bytes>>,
}

impl Published {
    /// What one commit changed in `auction_id`.
    pub fn new(
        auction_id: Uuid,
        events: Vec<Event>,
        view: AuctionView,
        metadata: Arc<Metadata>,
    ) -> Self {
        Self {
            auction_id,
            events,
            view,
            metadata,
            frames: OnceLock::new(),
        }
    }

    /// The events on the wire, in order (one per event of `events`).
    pub fn watch_frames(&self) -> &[Bytes] {
        self.frames.get_or_init(|| {
            use auction_proto::v1 as pb;
            use prost::Message as _;
            let later = crate::convert::later_bids(&self.events);
            self.events
                .iter()
                .zip(later)
                .map(|(event, later_bids)| {
                    let event = crate::convert::event(
                        self.auction_id,
                        event,
                        &self.view,
                        &self.metadata,
                        later_bids,
                    );
                    let response = pb::WatchAuctionResponse {
                        message: Some(pb::watch_auction_response::Message::Event(event)),
                    };
                    Bytes::from(response.encode_to_vec())
                })
                .collect()
        })
    }
}

/// What a watcher of an auction receives.
#[derive(Debug, Clone)]
pub enum Live {
    /// A commit of the auction.
    Commit(Arc<Published>),
    /// Time for a heartbeat: one node-wide beat reaches every watcher
    /// through its auction's channel, instead of a timer per stream.
    Beat,
}

/// The per-auction broadcast channels.
#[derive(Debug)]
pub struct Hub {
    channels: Mutex<Channels>,
    /// How many commits a watcher may fall behind before it is resynced
    /// (each channel holds one more item: room for a heartbeat).
    capacity: usize,
    /// The WatchMyActivity streams of this node, woken by the commits that
    /// touch their user's index (kept here because every shard writer and
    /// every RPC already shares the hub).
    pub activity: crate::activity::Watchers,
}

/// The channels, and whether the hub was closed (shutdown).
#[derive(Debug, Default)]
struct Channels {
    by_auction: HashMap<Uuid, broadcast::Sender<Live>>,
    closed: bool,
}

impl Hub {
    /// A hub whose watchers may fall `capacity` commits behind.
    pub fn new(capacity: usize) -> Self {
        Self {
            channels: Mutex::new(Channels::default()),
            capacity: capacity.max(1),
            activity: crate::activity::Watchers::default(),
        }
    }

    /// Subscribes to an auction's committed events.
    /// After [`Self::close`] the receiver is closed at once.
    pub fn subscribe(&self, auction_id: Uuid) -> broadcast::Receiver<Live> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if channels.closed {
            return broadcast::channel(1).1;
        }
        channels
            .by_auction
            .entry(auction_id)
            .or_insert_with(|| broadcast::channel(self.capacity + 1).0)
            .subscribe()
    }

    /// Hands a commit to the auction's watchers; drops the channel when
    /// nobody watches any more.
    pub fn publish(&self, published: Arc<Published>) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let auction_id = published.auction_id;
        if let Some(sender) = channels.by_auction.get(&auction_id)
            && sender.send(Live::Commit(published)).is_err()
        {
            // No receiver left.
            channels.by_auction.remove(&auction_id);
        }
    }

    /// Sends a heartbeat to every watcher of this node.
    pub fn beat(&self) {
        let channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for sender in channels.by_auction.values() {
            let _ = sender.send(Live::Beat);
        }
    }

    /// Closes every channel (shutdown): each watcher sees the end after
    /// what it has not read yet, and later subscriptions are closed at once.
    pub fn close(&self) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        channels.closed = true;
        channels.by_auction.clear();
    }

    /// Beats every `every` until `shutdown`, then closes the hub.
    pub async fn run(
        self: Arc<Self>,
        every: std::time::Duration,
        shutdown: auction_platform::Shutdown,
    ) {
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                _ = beats.tick() => self.beat(),
            }
        }
        self.close();
    }

    /// Drops an auction's channel when nobody holds a receiver any more (a
    /// watcher left, or a watch of an auction that does not exist).
    pub fn release(&self, auction_id: Uuid) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if channels
            .by_auction
            .get(&auction_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.by_auction.remove(&auction_id);
        }
    }

    /// How many auctions have at least one channel (for metrics and tests).
    pub fn channel_count(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_auction
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a channel is dropped once its last watcher leaves, and kept
    // while one remains.
    #[test]
    fn channels_go_with_their_last_watcher() {
        let hub = Hub::new(4);
        let auction = Uuid::now_v7();
        let first = hub.subscribe(auction);
        let second = hub.subscribe(auction);
        drop(first);
        hub.release(auction);
        assert_eq!(hub.channel_count(), 1);
        drop(second);
        hub.release(auction);
        assert_eq!(hub.channel_count(), 0);
    }

    // Proves a beat reaches every watcher and closing ends every stream,
    // including one that subscribes afterwards.
    #[test]
    fn beats_reach_every_watcher_and_close_ends_them() {
        let hub = Hub::new(4);
        let mut first = hub.subscribe(Uuid::now_v7());
        let mut second = hub.subscribe(Uuid::now_v7());
        hub.beat();
        assert!(matches!(first.try_recv(), Ok(Live::Beat)));
        assert!(matches!(second.try_recv(), Ok(Live::Beat)));
        hub.close();
        assert_eq!(hub.channel_count(), 0);
        assert!(matches!(
            first.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        let mut late = hub.subscribe(Uuid::now_v7());
        assert!(matches!(
            late.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert_eq!(hub.channel_count(), 0);
    }
}

//! In-process fan-out of committed events. A shard publishes what a batch
//! committed, once per auction; every `WatchAuction` stream of that auction
//! holds a receiver of one bounded broadcast channel (one upstream per
//! auction). A receiver that falls more than the channel's capacity behind
//! learns it from the channel (`Lagged`) and resyncs from a snapshot, so a
//! slow watcher never makes memory grow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use auction_engine::{AuctionView, Event};
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
    /// The events as `WatchAuction` sends them, converted by the first
    /// watcher that needs them and shared by every other: 10,000 watchers of
    /// one auction convert each event once, not 10,000 times.
    wire: OnceLock<Vec<auction_proto::v1::AuctionEvent>>,
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
            wire: OnceLock::new(),
        }
    }

    /// The events on the wire, in order (one per event of `events`).
    pub fn wire_events(&self) -> &[auction_proto::v1::AuctionEvent] {
        self.wire.get_or_init(|| {
            let later = crate::convert::later_bids(&self.events);
            self.events
                .iter()
                .zip(later)
                .map(|(event, later_bids)| {
                    crate::convert::event(
                        self.auction_id,
                        event,
                        &self.view,
                        &self.metadata,
                        later_bids,
                    )
                })
                .collect()
        })
    }
}

/// The per-auction broadcast channels.
#[derive(Debug)]
pub struct Hub {
    channels: Mutex<HashMap<Uuid, broadcast::Sender<Arc<Published>>>>,
    /// How many commits a watcher may fall behind before it is resynced.
    capacity: usize,
    /// The WatchMyActivity streams of this node, woken by the commits that
    /// touch their user's index (kept here because every shard writer and
    /// every RPC already shares the hub).
    pub activity: crate::activity::Watchers,
}

impl Hub {
    /// A hub whose watchers may fall `capacity` commits behind.
    pub fn new(capacity: usize) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            activity: crate::activity::Watchers::default(),
        }
    }

    /// Subscribes to an auction's committed events.
    pub fn subscribe(&self, auction_id: Uuid) -> broadcast::Receiver<Arc<Published>> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        channels
            .entry(auction_id)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
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
        if let Some(sender) = channels.get(&auction_id)
            && sender.send(published).is_err()
        {
            // No receiver left.
            channels.remove(&auction_id);
        }
    }

    /// Drops an auction's channel when nobody holds a receiver any more (a
    /// watcher left, or a watch of an auction that does not exist).
    pub fn release(&self, auction_id: Uuid) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if channels
            .get(&auction_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&auction_id);
        }
    }

    /// How many auctions have at least one channel (for metrics and tests).
    pub fn channel_count(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
}

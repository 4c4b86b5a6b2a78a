//! The partners' market feed: one global, ordered stream of what happens to
//! auctions (scheduled, opened, price changed, sealed bid count changed,
//! extended, closed, unsold, cancelled), filtered per subscriber.
//!
//! Sequences are assigned in memory at commit time, under one lock, so the
//! feed has one order on a node. The last [`RETAINED`] items are kept for
//! resuming. Sequences start at `(process start in ms) << 20`, so they keep
//! rising across restarts: a client resuming after a sequence from before a
//! restart (or older than what is retained) gets a resync snapshot of every
//! matching auction still scheduled or running, so nothing is missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use auction_engine::{Event, EventKind, Timestamp};
use auction_proto::v1 as pb;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Items kept for resuming.
pub const RETAINED: usize = 100_000;
/// Items a subscriber may fall behind before it is resynced.
const SUBSCRIBER_BUFFER: usize = 4_096;

/// One feed item.
#[derive(Debug, Clone)]
pub struct MarketItem {
    /// The global feed sequence.
    pub sequence: u64,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub event_type: pb::MarketEventType,
    /// The auction's wire sequence after the event's commit.
    pub auction_sequence: u64,
    /// The auction as of the commit.
    pub state: pb::AuctionState,
    /// The auction's category and its ancestors, for filters.
    pub category_path_ids: Vec<String>,
}

struct Ring {
    next: u64,
    first_retained: u64,
    items: VecDeque<Arc<MarketItem>>,
}

/// The feed of this node.
pub struct MarketFeed {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<MarketItem>>,
}

impl std::fmt::Debug for MarketFeed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("MarketFeed").finish_non_exhaustive()
    }
}

/// Where a subscription starts.
pub enum Start {
    /// Replay these retained items, then follow live.
    Resume(Vec<Arc<MarketItem>>),
    /// The requested point is unknown or too old: resync from a snapshot.
    Resync,
}

impl MarketFeed {
    /// A feed whose sequences start above any sequence of an earlier run.
    pub fn new(now: Timestamp) -> Self {
        let base = u64::try_from(now.unix_ms()).unwrap_or(0) << 20;
        Self {
            ring: Mutex::new(Ring {
                next: base + 1,
                first_retained: base + 1,
                items: VecDeque::new(),
            }),
            live: broadcast::channel(SUBSCRIBER_BUFFER).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Assigns sequences to `items` in order, retains and broadcasts them.
    pub fn publish(&self, items: Vec<MarketItem>) {
        if items.is_empty() {
            return;
        }
        let mut ring = self.lock();
        for mut item in items {
            item.sequence = ring.next;
            ring.next += 1;
            let item = Arc::new(item);
            ring.items.push_back(Arc::clone(&item));
            if ring.items.len() > RETAINED
                && let Some(dropped) = ring.items.pop_front()
            {
                ring.first_retained = dropped.sequence + 1;
            }
            // No subscriber is not an error.
            let _ = self.live.send(item);
        }
    }

    /// The last sequence assigned (the feed's position).
    pub fn latest(&self) -> u64 {
        self.lock().next - 1
    }

    /// Subscribes to what follows `after` (0 = a fresh start, which is a
    /// resync): the retained items after it and a live receiver, taken
    /// together under the lock so nothing falls between them.
    pub fn subscribe(&self, after: u64) -> (Start, broadcast::Receiver<Arc<MarketItem>>, u64) {
        let ring = self.lock();
        let receiver = self.live.subscribe();
        let latest = ring.next - 1;
        let start = if after == 0 || after > latest || after + 1 < ring.first_retained {
            Start::Resync
        } else {
            Start::Resume(
                ring.items
                    .iter()
                    .filter(|item| item.sequence > after)
                    .cloned()
                    .collect(),
            )
        };
        (start, receiver, latest)
    }
}

/// The market event types a committed engine event stands for.
pub fn event_type(kind: &EventKind) -> Option<pb::MarketEventType> {
    match kind {
        EventKind::Opened => Some(pb::MarketEventType::Opened),
        EventKind::Updated => Some(pb::MarketEventType::Updated),
        EventKind::BidAccepted { .. }
        | EventKind::BidRetracted { .. }
        | EventKind::ClockTicked { .. }
        | EventKind::UnitsSold { .. }
        | EventKind::BidUndone { .. } => Some(pb::MarketEventType::PriceChanged),
        EventKind::SealedBidPlaced { .. }
        | EventKind::SealedBidWithdrawn { .. }
        | EventKind::SealedBidExpired { .. } => Some(pb::MarketEventType::SealedBidCountChanged),
        EventKind::Extended { .. } => Some(pb::MarketEventType::Extended),
        EventKind::Sold { .. } | EventKind::SessionEnded { .. } => {
            Some(pb::MarketEventType::Closed)
        }
        EventKind::Unsold { .. } | EventKind::DutchEnded { .. } => {
            Some(pb::MarketEventType::Unsold)
        }
        EventKind::Cancelled { .. } => Some(pb::MarketEventType::Cancelled),
        // An absentee bid changes nothing public but the lot's absentee count.
        EventKind::AbsenteeBidPlaced { .. } => Some(pb::MarketEventType::AbsenteeBidReceived),
        EventKind::BuyItNowWithdrawn
        | EventKind::LotOpened { .. }
        | EventKind::FairWarning { .. }
        | EventKind::LotReopened { .. }
        // A live lot's hammer or pass is provisional; the feed reports the
        // `Sold` or `Unsold` that finalises it.
        | EventKind::LotSold { .. }
        | EventKind::LotPassed { .. } => None,
    }
}

/// The feed items of one auction's committed batch: one per event that
/// maps to a market event, consecutive duplicates of a type folded into one
/// (the state is as of the commit anyway).
pub fn items(
    events: &[Event],
    state: &pb::AuctionState,
    category_path_ids: &[String],
) -> Vec<MarketItem> {
    let mut items: Vec<MarketItem> = Vec::new();
    for event in events {
        let Some(event_type) = event_type(&event.kind) else {
            continue;
        };
        if items
            .last()
            .is_some_and(|last| last.event_type == event_type)
        {
            continue;
        }
        items.push(MarketItem {
            sequence: 0,
            at: event.at,
            event_type,
            auction_sequence: state.sequence,
            state: state.clone(),
            category_path_ids: category_path_ids.to_vec(),
        });
    }
    items
}

/// A subscriber's filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Categories (matching the auction's category or an ancestor); empty = any.
    pub category_ids: Vec<String>,
    /// Formats; empty = any.
    pub formats: Vec<i32>,
    /// Event types; empty = any.
    pub event_types: Vec<i32>,
    /// Only lots of this live session; empty = any auction.
    pub live_session_id: String,
}

impl Filter {
    /// Whether an auction state (and its category path) passes the filter,
    /// whatever the event.
    pub fn matches_auction(&self, state: &pb::AuctionState, category_path_ids: &[String]) -> bool {
        let category = self.category_ids.is_empty()
            || self
                .category_ids
                .iter()
                .any(|wanted| *wanted == state.category_id || category_path_ids.contains(wanted));
        let format = self.formats.is_empty() || self.formats.contains(&state.format);
        category && format && in_live_session(state, &self.live_session_id)
    }

    /// Whether an item passes the filter.
    pub fn matches(&self, item: &MarketItem) -> bool {
        let event =
            self.event_types.is_empty() || self.event_types.contains(&(item.event_type as i32));
        event && self.matches_auction(&item.state, &item.category_path_ids)
    }
}

/// Whether `state` is a lot of live session `session_id` (any auction when
/// `session_id` is empty).
pub fn in_live_session(state: &pb::AuctionState, session_id: &str) -> bool {
    session_id.is_empty()
        || matches!(
            &state.format_state,
            Some(pb::auction_state::FormatState::LiveLot(lot)) if lot.session_id == session_id
        )
}

/// The auction id of a wire state.
pub fn auction_id(state: &pb::AuctionState) -> Option<Uuid> {
    Uuid::parse_str(&state.auction_id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(event_type: pb::MarketEventType) -> MarketItem {
        MarketItem {
            sequence: 0,
            at: Timestamp::from_unix_ms(0),
            event_type,
            auction_sequence: 1,
            state: pb::AuctionState::default(),
            category_path_ids: Vec::new(),
        }
    }

    // Proves sequences rise by one, resuming replays exactly what follows,
    // and unknown or too-old points resync.
    #[test]
    fn resume_and_resync() {
        let feed = MarketFeed::new(Timestamp::from_unix_ms(1_000));
        feed.publish(vec![
            item(pb::MarketEventType::Opened),
            item(pb::MarketEventType::PriceChanged),
        ]);
        let latest = feed.latest();
        assert_eq!(latest, (1_000 << 20) + 2);
        let (start, _, _) = feed.subscribe(latest - 1);
        let Start::Resume(items) = start else {
            panic!("resume")
        };
        assert_eq!(
            items.iter().map(|item| item.sequence).collect::<Vec<_>>(),
            [latest]
        );
        assert!(matches!(feed.subscribe(0).0, Start::Resync));
        assert!(matches!(feed.subscribe(latest + 5).0, Start::Resync));
        // A later run's sequences start above this run's.
        let later = MarketFeed::new(Timestamp::from_unix_ms(2_000));
        assert!(later.latest() > latest);
        assert!(matches!(later.subscribe(latest).0, Start::Resync));
    }

    // Proves filters combine category (with ancestors), format and type.
    #[test]
    fn filters() {
        let mut sealed = item(pb::MarketEventType::Scheduled);
        sealed.state.format = pb::AuctionFormat::SealedFirstPrice as i32;
        sealed.state.category_id = "coins".to_owned();
        sealed.category_path_ids = vec!["collectibles".to_owned(), "coins".to_owned()];
        let filter = Filter {
            category_ids: vec!["collectibles".to_owned()],
            formats: vec![pb::AuctionFormat::SealedFirstPrice as i32],
            event_types: vec![pb::MarketEventType::Scheduled as i32],
            live_session_id: String::new(),
        };
        assert!(filter.matches(&sealed));
        let mut english = sealed.clone();
        english.state.format = pb::AuctionFormat::English as i32;
        assert!(!filter.matches(&english));
        let mut opened = sealed.clone();
        opened.event_type = pb::MarketEventType::Opened;
        assert!(!filter.matches(&opened));
        // A live-session filter passes that session's lots only.
        let session_filter = Filter {
            live_session_id: "session-1".to_owned(),
            ..Filter::default()
        };
        assert!(!session_filter.matches(&sealed), "not a lot");
        let mut lot = sealed.clone();
        let live_lot = |session_id: &str| {
            Some(pb::auction_state::FormatState::LiveLot(pb::LiveLotState {
                session_id: session_id.to_owned(),
                ..pb::LiveLotState::default()
            }))
        };
        lot.state.format_state = live_lot("session-1");
        assert!(session_filter.matches(&lot));
        let mut other = lot.clone();
        other.state.format_state = live_lot("session-2");
        assert!(!session_filter.matches(&other));
    }
}

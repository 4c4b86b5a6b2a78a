//! Test helpers: builders and a harness that ticks like the shard does, checks that
//! every rejection leaves the auction unchanged, and on drop checks that replaying
//! the events rebuilds the same auction (and survives a JSON round trip).

#![allow(dead_code)]

use auction_engine::*;
use rust_decimal::Decimal;

pub const SELLER: UserId = UserId(1);
pub const ALICE: UserId = UserId(10);
pub const BOB: UserId = UserId(11);
pub const CAROL: UserId = UserId(12);
pub const DAVE: UserId = UserId(13);
pub const ADMIN: UserId = UserId(100);
pub const AUCTIONEER: UserId = UserId(200);

pub fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

pub fn at(unix_ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(unix_ms)
}

pub fn spec(format: FormatSpec) -> AuctionSpec {
    AuctionSpec {
        auction_id: AuctionId(42),
        seller: SELLER,
        currency: Currency::USD,
        start_at: at(0),
        format,
    }
}

/// An English auction starting at 0 and ending at 100 s, hard close, eBay increments.
pub fn english(starting_price: Decimal) -> EnglishSpec {
    EnglishSpec {
        soft_close: None,
        ..EnglishSpec::new(starting_price, at(100_000))
    }
}

pub struct Harness {
    pub auction: Auction,
    pub events: Vec<Event>,
    next_request: u128,
}

impl Harness {
    pub fn new(spec: AuctionSpec) -> Harness {
        Harness {
            auction: Auction::new(spec).unwrap(),
            events: Vec::new(),
            next_request: 1,
        }
    }

    pub fn english(english: EnglishSpec) -> Harness {
        let mut harness = Harness::new(spec(FormatSpec::English(english)));
        harness.tick(0);
        harness
    }

    /// Delivers a tick at `now_ms`, as the shard does when a deadline is due.
    pub fn tick(&mut self, now_ms: i64) -> Vec<EventKind> {
        let before = self.events.len();
        self.auction
            .apply(Command::tick(at(now_ms)), at(now_ms), &mut self.events)
            .unwrap();
        self.events[before..]
            .iter()
            .map(|event| event.kind)
            .collect()
    }

    /// Ticks if due, then applies the command; a rejection must leave everything as it was.
    pub fn apply(
        &mut self,
        actor: Actor,
        action: Action,
        now_ms: i64,
    ) -> Result<Vec<EventKind>, Rejection> {
        self.tick(now_ms);
        let request_id = RequestId(self.next_request);
        self.next_request += 1;
        let command = Command {
            request_id,
            actor,
            received_at: at(now_ms),
            action,
        };
        let snapshot = self.auction.clone();
        let before = self.events.len();
        match self.auction.apply(command, at(now_ms), &mut self.events) {
            Ok(outcome) => {
                assert_eq!(outcome.events_emitted, self.events.len() - before);
                Ok(self.events[before..]
                    .iter()
                    .map(|event| event.kind)
                    .collect())
            }
            Err(rejection) => {
                assert_eq!(
                    self.auction, snapshot,
                    "a rejected command changed the auction"
                );
                assert_eq!(
                    self.events.len(),
                    before,
                    "a rejected command pushed events"
                );
                Err(rejection)
            }
        }
    }

    pub fn ok(&mut self, actor: Actor, action: Action, now_ms: i64) -> Vec<EventKind> {
        match self.apply(actor, action, now_ms) {
            Ok(events) => events,
            Err(rejection) => panic!("{action:?} by {actor:?} at {now_ms} rejected: {rejection:?}"),
        }
    }

    pub fn rejected(&mut self, actor: Actor, action: Action, now_ms: i64) -> Rejection {
        match self.apply(actor, action, now_ms) {
            Ok(events) => panic!("{action:?} by {actor:?} at {now_ms} accepted: {events:?}"),
            Err(rejection) => rejection,
        }
    }

    pub fn bid(
        &mut self,
        bidder: UserId,
        amount: Decimal,
        now_ms: i64,
    ) -> Result<Vec<EventKind>, Rejection> {
        self.apply(
            Actor::bidder(bidder),
            Action::PlaceBid {
                amount: usd(amount),
                lot: None,
            },
            now_ms,
        )
    }

    pub fn max_bid(
        &mut self,
        bidder: UserId,
        amount: Decimal,
        now_ms: i64,
    ) -> Result<Vec<EventKind>, Rejection> {
        self.apply(
            Actor::bidder(bidder),
            Action::SetMaxBid {
                max_amount: usd(amount),
                lot: None,
            },
            now_ms,
        )
    }

    pub fn english_view(&self) -> (Option<Decimal>, Option<UserId>, ReserveState, Money) {
        match self.auction.view().format {
            FormatView::English {
                price,
                leader,
                reserve,
                minimum_bid,
                ..
            } => (
                price.map(|price| price.amount),
                leader,
                reserve,
                minimum_bid,
            ),
            other => panic!("not English: {other:?}"),
        }
    }

    pub fn price(&self) -> Option<Decimal> {
        self.english_view().0
    }

    pub fn leader(&self) -> Option<UserId> {
        self.english_view().1
    }

    pub fn last_kind(&self) -> EventKind {
        self.events.last().unwrap().kind
    }

    /// Replaying every event from creation rebuilds this exact auction, and the
    /// auction and its events survive a JSON round trip.
    pub fn assert_replays(&self) {
        assert_replays(&self.auction, &self.events);
    }
}

pub fn assert_replays(auction: &Auction, events: &[Event]) {
    let mut replayed = Auction::new(auction.spec()).unwrap();
    for event in events {
        replayed.apply_event(event).unwrap();
    }
    assert_eq!(
        &replayed, auction,
        "replaying the events did not rebuild the auction"
    );
    let json = serde_json::to_string(auction).unwrap();
    let restored: Auction = serde_json::from_str(&json).unwrap();
    assert_eq!(&restored, auction, "the snapshot did not survive JSON");
    let json = serde_json::to_string(events).unwrap();
    let restored: Vec<Event> = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, events, "the events did not survive JSON");
}

impl Drop for Harness {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_replays();
        }
    }
}

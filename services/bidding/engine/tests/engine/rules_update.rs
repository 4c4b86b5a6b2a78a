//! Updating a scheduled auction (`Auction::update`) and the public bid count.

use auction_engine::*;
use rust_decimal_macros::dec;

use crate::support::*;

fn scheduled(start_ms: i64, end_ms: i64) -> AuctionSpec {
    AuctionSpec {
        start_at: at(start_ms),
        ..spec(FormatSpec::English(english_until(dec!(10), end_ms)))
    }
}

fn english_until(starting_price: rust_decimal::Decimal, end_ms: i64) -> EnglishSpec {
    EnglishSpec {
        soft_close: None,
        ..EnglishSpec::new(starting_price, at(end_ms))
    }
}

fn replay(spec: AuctionSpec, events: &[Event]) -> Auction {
    let mut replayed = Auction::new(spec).unwrap();
    for event in events {
        replayed.apply_event(event).unwrap();
    }
    replayed
}

// Proves a scheduled auction takes a new spec with one `Updated` event, and that
// replaying the log from the new spec rebuilds the very same state.
#[test]
fn scheduled_auction_is_updated_and_replays_from_the_new_spec() {
    let mut auction = Auction::new(scheduled(10_000, 100_000)).unwrap();
    let mut events = Vec::new();
    let new_spec = AuctionSpec {
        start_at: at(20_000),
        ..spec(FormatSpec::English(english_until(dec!(25), 200_000)))
    };
    auction
        .update(
            Actor::admin(ADMIN),
            new_spec.clone(),
            Some(0),
            at(1_000),
            &mut events,
        )
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Updated);
    assert_eq!(auction.status(), AuctionStatus::Scheduled);
    assert_eq!(auction.next_deadline(), Some(at(20_000)));
    let FormatView::English { minimum_bid, .. } = auction.view().format else {
        panic!("English")
    };
    assert_eq!(minimum_bid, usd(dec!(25)));
    // A second update; the log replays from the latest spec.
    let newest = AuctionSpec {
        start_at: at(30_000),
        ..new_spec
    };
    auction
        .update(Actor::SYSTEM, newest.clone(), None, at(2_000), &mut events)
        .unwrap();
    assert_eq!(replay(newest, &events), auction);
}

// Proves every refusal of an update, each leaving the auction untouched.
#[test]
fn updates_are_refused_precisely() {
    let mut auction = Auction::new(scheduled(10_000, 100_000)).unwrap();
    let before = auction.clone();
    let mut events = Vec::new();
    let same = scheduled(20_000, 100_000);
    let refusals = [
        (
            Actor::bidder(ALICE),
            same.clone(),
            None,
            UpdateError::NotPermitted,
        ),
        (
            Actor::admin(ADMIN),
            same.clone(),
            Some(3),
            UpdateError::VersionConflict { current: 0 },
        ),
        (
            Actor::admin(ADMIN),
            AuctionSpec {
                format: FormatSpec::Sealed(SealedSpec {
                    pricing: SealedPricing::FirstPrice,
                    starting_price: dec!(10),
                    reserve_price: None,
                    end_at: at(100_000),
                }),
                ..same.clone()
            },
            None,
            UpdateError::FormatChanged,
        ),
        (
            Actor::admin(ADMIN),
            scheduled(500, 100_000),
            None,
            UpdateError::StartNotInFuture,
        ),
        (
            Actor::admin(ADMIN),
            scheduled(20_000, 15_000),
            None,
            UpdateError::Spec(SpecError::InvalidSchedule),
        ),
    ];
    for (actor, spec, expected, error) in refusals {
        assert_eq!(
            auction.update(actor, spec, expected, at(1_000), &mut events),
            Err(error)
        );
        assert_eq!(auction, before);
        assert!(events.is_empty());
    }
    // Once open, never.
    auction
        .apply(Command::tick(at(10_000)), at(10_000), &mut events)
        .unwrap();
    assert_eq!(
        auction.update(
            Actor::admin(ADMIN),
            scheduled(50_000, 100_000),
            None,
            at(11_000),
            &mut events
        ),
        Err(UpdateError::NotEditable)
    );
}

// Proves the public bid count counts accepted bids and drops a retracted
// bidder's, and that participants lists everyone with a maximum.
#[test]
fn bid_count_and_participants() {
    let mut harness = Harness::english(english(dec!(1)));
    harness.bid(ALICE, dec!(5), 1).unwrap();
    harness.bid(BOB, dec!(6), 2).unwrap();
    harness.bid(ALICE, dec!(8), 3).unwrap();
    let count = |harness: &Harness| match harness.auction.view().format {
        FormatView::English { bid_count, .. } => bid_count,
        _ => unreachable!(),
    };
    assert!(count(&harness) >= 3);
    let before = count(&harness);
    assert_eq!(harness.auction.participants(), vec![ALICE, BOB]);
    harness
        .apply(
            Actor::admin(ADMIN),
            Action::RetractBid {
                bidder: BOB,
                lot: None,
            },
            4,
        )
        .unwrap();
    assert_eq!(count(&harness), before - 1);
    assert_eq!(harness.auction.participants(), vec![ALICE]);
}

//! Dutch (descending clock) auctions: price steps, accepts at the clock price,
//! multiple units, the floor and the unsold end.

use auction_engine::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use crate::support::*;

/// Start 10.00, step 1.50, a tick every second, floor 4.00: prices 10, 8.5, 7, 5.5, 4
/// at ticks 0..=4; the floor holds one tick, so the end is at 5 s.
fn clock(quantity: u32) -> Harness {
    let mut harness = Harness::new(spec(FormatSpec::Dutch(DutchSpec {
        start_price: dec!(10.00),
        price_step: dec!(1.50),
        tick_interval_ms: 1_000,
        floor_price: dec!(4.00),
        quantity,
    })));
    harness.tick(0);
    harness
}

fn clock_price(harness: &Harness) -> Decimal {
    match harness.auction.view().format {
        FormatView::Dutch { clock_price, .. } => clock_price.amount,
        other => panic!("not Dutch: {other:?}"),
    }
}

fn accept(quantity: u32, limit: Decimal) -> Action {
    Action::DutchAccept {
        quantity,
        max_unit_price: usd(limit),
    }
}

#[test]
fn the_clock_steps_down_to_the_floor_and_holds_one_tick() {
    // Proves the price at each tick, the floor clamp (5.5 - 1.5 would be 4.0, exactly the floor here) and the unsold end.
    let mut harness = clock(1);
    for (now_ms, price) in [
        (0, dec!(10)),
        (999, dec!(10)),
        (1_000, dec!(8.5)),
        (2_000, dec!(7)),
        (3_000, dec!(5.5)),
        (4_000, dec!(4)),
        (4_999, dec!(4)),
    ] {
        harness.tick(now_ms);
        assert_eq!(clock_price(&harness), price, "at {now_ms}");
    }
    assert_eq!(
        harness.tick(5_000),
        vec![EventKind::Unsold {
            reason: UnsoldReason::NoAccept
        }]
    );
    assert_eq!(harness.auction.status(), AuctionStatus::Unsold);
}

#[test]
fn a_clock_jump_emits_one_step_at_the_tick_it_lands_in() {
    // Proves a late tick goes straight to the current price, stamped with that tick's start.
    let mut harness = clock(1);
    let events = harness.tick(3_500);
    assert_eq!(
        events,
        vec![EventKind::ClockTicked {
            tick_index: 3,
            price: usd(dec!(5.5))
        }]
    );
    assert_eq!(harness.events.last().unwrap().at, at(3_000));
    // A jump past the end: the floor step, then the end at its due time.
    let events = harness.tick(60_000);
    assert_eq!(events.len(), 2);
    assert_eq!(harness.events.last().unwrap().at, at(5_000));
}

#[test]
fn the_floor_clamps_a_step_that_would_cross_it() {
    // Proves the price never goes below the floor even when the step does not divide the range.
    let mut harness = Harness::new(spec(FormatSpec::Dutch(DutchSpec {
        start_price: dec!(10),
        price_step: dec!(4),
        tick_interval_ms: 100,
        floor_price: dec!(3),
        quantity: 1,
    })));
    harness.tick(0);
    harness.tick(100);
    assert_eq!(clock_price(&harness), dec!(6));
    harness.tick(200);
    assert_eq!(clock_price(&harness), dec!(3));
    assert_eq!(harness.auction.next_deadline(), Some(at(300)));
}

#[test]
fn the_first_accept_wins_at_the_current_price() {
    // Proves a single-unit accept sells at the clock price and ends the auction.
    let mut harness = clock(1);
    harness.tick(2_000);
    let events = harness.ok(Actor::bidder(ALICE), accept(1, dec!(7)), 2_100);
    assert_eq!(
        events[0],
        EventKind::UnitsSold {
            request_id: RequestId(1),
            buyer: ALICE,
            quantity: 1,
            unit_price: usd(dec!(7)),
            remaining: 0
        }
    );
    assert_eq!(
        events[1],
        EventKind::DutchEnded {
            units_sold: 1,
            units_unsold: 0
        }
    );
    assert_eq!(harness.auction.status(), AuctionStatus::Closed);
    assert_eq!(
        harness.auction.bid_status(ALICE, None),
        Some(BidStatus::Won)
    );
    assert_eq!(
        harness.rejected(Actor::bidder(BOB), accept(1, dec!(7)), 2_200),
        Rejection::AuctionClosed
    );
}

#[test]
fn several_units_go_at_the_price_of_each_accept() {
    // Proves quantity > 1: each accept takes its units at the current price until none are left.
    let mut harness = clock(5);
    harness.ok(Actor::bidder(ALICE), accept(2, dec!(10)), 100);
    harness.tick(1_000);
    assert_eq!(
        harness.rejected(Actor::bidder(BOB), accept(4, dec!(10)), 1_100),
        Rejection::QuantityUnavailable { available: 3 }
    );
    assert_eq!(
        harness.rejected(Actor::bidder(BOB), accept(0, dec!(10)), 1_100),
        Rejection::InvalidQuantity
    );
    harness.ok(Actor::bidder(BOB), accept(2, dec!(8.5)), 1_100);
    harness.tick(2_000);
    let events = harness.ok(Actor::bidder(CAROL), accept(1, dec!(7)), 2_000);
    assert_eq!(
        events[1],
        EventKind::DutchEnded {
            units_sold: 5,
            units_unsold: 0
        }
    );
    let prices: Vec<(UserId, u32, Decimal)> = harness
        .events
        .iter()
        .filter_map(|event| match event.kind {
            EventKind::UnitsSold {
                buyer,
                quantity,
                unit_price,
                ..
            } => Some((buyer, quantity, unit_price.amount)),
            _ => None,
        })
        .collect();
    assert_eq!(
        prices,
        vec![
            (ALICE, 2, dec!(10)),
            (BOB, 2, dec!(8.5)),
            (CAROL, 1, dec!(7))
        ]
    );
}

#[test]
fn units_left_at_the_floor_close_with_what_was_sold() {
    // Proves the clock's end with some units sold closes the auction and reports the unsold units.
    let mut harness = clock(3);
    harness.tick(4_000);
    harness.ok(Actor::bidder(ALICE), accept(1, dec!(4)), 4_500);
    assert_eq!(
        harness.tick(5_000),
        vec![EventKind::DutchEnded {
            units_sold: 1,
            units_unsold: 2
        }]
    );
    assert_eq!(harness.auction.status(), AuctionStatus::Closed);
}

#[test]
fn accept_guards() {
    // Proves the stale-screen limit, the seller rule, currency, and that cancel is refused to the seller after a sale.
    let mut harness = clock(2);
    assert_eq!(
        harness.rejected(Actor::bidder(ALICE), accept(1, dec!(9.99)), 10),
        Rejection::PriceAboveLimit {
            current: usd(dec!(10))
        }
    );
    assert_eq!(
        harness.rejected(Actor::bidder(SELLER), accept(1, dec!(10)), 10),
        Rejection::SellerCannotBid
    );
    assert_eq!(
        harness.rejected(
            Actor::bidder(ALICE),
            Action::DutchAccept {
                quantity: 1,
                max_unit_price: Money::new(dec!(10), Currency::GBP)
            },
            10
        ),
        Rejection::WrongCurrency {
            expected: Currency::USD
        }
    );
    assert_eq!(
        harness.rejected(
            Actor::bidder(ALICE),
            Action::PlaceBid {
                amount: usd(dec!(10)),
                lot: None
            },
            10
        ),
        Rejection::UnsupportedForFormat
    );
    harness.ok(Actor::bidder(ALICE), accept(1, dec!(10)), 20);
    assert_eq!(
        harness.rejected(Actor::seller(SELLER), Action::Cancel, 30),
        Rejection::ReserveMetCannotCancel
    );
    harness.ok(Actor::admin(ADMIN), Action::Cancel, 30);
}

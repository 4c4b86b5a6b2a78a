//! Sealed-bid auctions: hidden bids, one standing bid per bidder, replacement,
//! withdrawal, time-to-live, ties, reserve, first- and second-price, and 100 ms
//! auctions.

use auction_engine::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use crate::support::*;

fn sealed(pricing: SealedPricing, reserve: Option<Decimal>, end_ms: i64) -> Harness {
    let mut harness = Harness::new(spec(FormatSpec::Sealed(SealedSpec {
        pricing,
        starting_price: dec!(10),
        reserve_price: reserve,
        end_at: at(end_ms),
    })));
    harness.tick(0);
    harness
}

fn place(amount: Decimal, ttl_ms: Option<i64>) -> Action {
    Action::PlaceSealedBid {
        amount: usd(amount),
        ttl_ms,
    }
}

fn outcome(harness: &Harness) -> (Option<UserId>, Option<Decimal>) {
    match harness.auction.view().format {
        FormatView::Sealed {
            winner,
            final_price,
            ..
        } => (winner, final_price.map(|price| price.amount)),
        other => panic!("not sealed: {other:?}"),
    }
}

#[test]
fn winner_and_price_by_pricing_rule() {
    // Proves first-price pays its bid and second-price pays max(second bid, reserve, start), table-driven.
    struct Case {
        pricing: SealedPricing,
        reserve: Option<Decimal>,
        bids: &'static [(UserId, &'static str)],
        winner: Option<UserId>,
        price: Option<&'static str>,
    }
    let cases = [
        Case {
            pricing: SealedPricing::FirstPrice,
            reserve: None,
            bids: &[(ALICE, "30"), (BOB, "50"), (CAROL, "40")],
            winner: Some(BOB),
            price: Some("50"),
        },
        Case {
            pricing: SealedPricing::SecondPrice,
            reserve: None,
            bids: &[(ALICE, "30"), (BOB, "50"), (CAROL, "40")],
            winner: Some(BOB),
            price: Some("40"),
        },
        Case {
            pricing: SealedPricing::SecondPrice,
            reserve: None,
            bids: &[(ALICE, "30")],
            winner: Some(ALICE),
            price: Some("10"),
        },
        Case {
            pricing: SealedPricing::SecondPrice,
            reserve: Some(dec!(35)),
            bids: &[(ALICE, "30"), (BOB, "50")],
            winner: Some(BOB),
            price: Some("35"),
        },
        Case {
            pricing: SealedPricing::SecondPrice,
            reserve: Some(dec!(35)),
            bids: &[(ALICE, "45"), (BOB, "50")],
            winner: Some(BOB),
            price: Some("45"),
        },
        Case {
            pricing: SealedPricing::FirstPrice,
            reserve: Some(dec!(60)),
            bids: &[(ALICE, "45"), (BOB, "50")],
            winner: None,
            price: None,
        },
        // Ties go to the earlier bid, which pays the tied amount under second-price.
        Case {
            pricing: SealedPricing::SecondPrice,
            reserve: None,
            bids: &[(ALICE, "50"), (BOB, "50")],
            winner: Some(ALICE),
            price: Some("50"),
        },
        Case {
            pricing: SealedPricing::FirstPrice,
            reserve: None,
            bids: &[(BOB, "50"), (ALICE, "50")],
            winner: Some(BOB),
            price: Some("50"),
        },
        Case {
            pricing: SealedPricing::FirstPrice,
            reserve: None,
            bids: &[],
            winner: None,
            price: None,
        },
    ];
    for (index, case) in cases.iter().enumerate() {
        let mut harness = sealed(case.pricing, case.reserve, 1_000);
        for (offset, (bidder, amount)) in case.bids.iter().enumerate() {
            harness.ok(
                Actor::bidder(*bidder),
                place(amount.parse().unwrap(), None),
                10 + offset as i64,
            );
        }
        harness.tick(1_000);
        let price = case.price.map(|price| price.parse::<Decimal>().unwrap());
        assert_eq!(outcome(&harness), (case.winner, price), "case {index}");
        let expected_status = if case.winner.is_some() {
            AuctionStatus::Closed
        } else {
            AuctionStatus::Unsold
        };
        assert_eq!(harness.auction.status(), expected_status, "case {index}");
    }
}

#[test]
fn bids_stay_hidden_until_the_close() {
    // Proves the public learns only that a bid was received; status is "sealed" until the close.
    let mut harness = sealed(SealedPricing::SecondPrice, None, 1_000);
    harness.ok(Actor::bidder(ALICE), place(dec!(123.45), None), 10);
    let public = harness.events.last().unwrap().to_public().unwrap();
    assert_eq!(
        public.kind,
        auction_engine::event::PublicEventKind::SealedBidReceived
    );
    let view = serde_json::to_string(&harness.auction.view()).unwrap();
    assert!(!view.contains("123.45"), "{view}");
    assert_eq!(
        harness.auction.bid_status(ALICE, None),
        Some(BidStatus::Sealed)
    );
    assert_eq!(
        harness.auction.own_bid(ALICE, None),
        Some(usd(dec!(123.45)))
    );
    harness.ok(Actor::bidder(ALICE), Action::WithdrawSealedBid, 20);
    assert_eq!(
        harness.events.last().unwrap().to_public(),
        None,
        "a withdrawal is not public"
    );
}

#[test]
fn a_later_bid_replaces_and_a_withdrawal_removes() {
    // Proves one standing bid per bidder: replacement (even lower), withdrawal, and NO_SUCH_BID after it.
    let mut harness = sealed(SealedPricing::FirstPrice, None, 1_000);
    harness.ok(Actor::bidder(ALICE), place(dec!(80), None), 10);
    harness.ok(Actor::bidder(BOB), place(dec!(60), None), 20);
    harness.ok(Actor::bidder(ALICE), place(dec!(50), None), 30);
    let FormatView::Sealed { bids_standing, .. } = harness.auction.view().format else {
        panic!()
    };
    assert_eq!(bids_standing, 2);
    harness.ok(Actor::bidder(BOB), Action::WithdrawSealedBid, 40);
    assert_eq!(
        harness.rejected(Actor::bidder(BOB), Action::WithdrawSealedBid, 50),
        Rejection::NoSuchBid
    );
    harness.tick(1_000);
    assert_eq!(outcome(&harness), (Some(ALICE), Some(dec!(50))));
    assert_eq!(
        harness.rejected(Actor::bidder(ALICE), Action::WithdrawSealedBid, 1_001),
        Rejection::AuctionClosed
    );
}

#[test]
fn replacing_a_bid_moves_it_behind_earlier_equal_bids() {
    // Proves the tie-break uses the time of the standing bid, so a replacement is "later".
    let mut harness = sealed(SealedPricing::FirstPrice, None, 1_000);
    harness.ok(Actor::bidder(ALICE), place(dec!(50), None), 10);
    harness.ok(Actor::bidder(BOB), place(dec!(50), None), 20);
    harness.ok(Actor::bidder(ALICE), place(dec!(50), None), 30);
    harness.tick(1_000);
    assert_eq!(outcome(&harness).0, Some(BOB));
}

#[test]
fn a_bid_with_a_time_to_live_stops_counting() {
    // Proves TTL expiry at placement + ttl (an expiry at the end does not count), and INVALID_TTL.
    let mut harness = sealed(SealedPricing::SecondPrice, None, 1_000);
    assert_eq!(
        harness.rejected(Actor::bidder(ALICE), place(dec!(90), Some(0)), 5),
        Rejection::InvalidTtl
    );
    harness.ok(Actor::bidder(ALICE), place(dec!(90), Some(500)), 10);
    harness.ok(Actor::bidder(BOB), place(dec!(70), Some(990)), 10);
    harness.ok(Actor::bidder(CAROL), place(dec!(40), None), 20);
    assert_eq!(harness.auction.next_deadline(), Some(at(510)));
    assert_eq!(
        harness.tick(510),
        vec![EventKind::SealedBidExpired { bidder: ALICE }]
    );
    assert_eq!(
        harness.rejected(Actor::bidder(ALICE), Action::WithdrawSealedBid, 600),
        Rejection::NoSuchBid
    );
    // Bob's bid expires exactly at the end: expiries at or before the end come first.
    let events = harness.tick(5_000);
    assert_eq!(events[0], EventKind::SealedBidExpired { bidder: BOB });
    assert_eq!(outcome(&harness), (Some(CAROL), Some(dec!(10))));
}

#[test]
fn a_hundred_millisecond_auction_works() {
    // Proves a 100 ms sealed auction opens, takes bids and closes on time, as partners run one per call.
    let mut harness = Harness::new(AuctionSpec {
        start_at: at(1_700_000_000_000),
        ..spec(FormatSpec::Sealed(SealedSpec {
            pricing: SealedPricing::SecondPrice,
            starting_price: dec!(0.01),
            reserve_price: None,
            end_at: at(1_700_000_000_100),
        }))
    });
    harness.tick(1_700_000_000_000);
    harness.ok(
        Actor::bidder(ALICE),
        place(dec!(0.07), None),
        1_700_000_000_030,
    );
    harness.ok(
        Actor::bidder(BOB),
        place(dec!(0.05), None),
        1_700_000_000_099,
    );
    assert_eq!(
        harness.rejected(
            Actor::bidder(CAROL),
            place(dec!(1), None),
            1_700_000_000_100
        ),
        Rejection::AuctionClosed
    );
    assert_eq!(outcome(&harness), (Some(ALICE), Some(dec!(0.05))));
}

#[test]
fn sealed_guards() {
    // Proves the starting price, the seller rule, admin retraction, and seller cancel before/after the reserve is met.
    let mut harness = sealed(SealedPricing::FirstPrice, Some(dec!(40)), 1_000);
    assert_eq!(
        harness.rejected(Actor::bidder(ALICE), place(dec!(9.99), None), 5),
        Rejection::BidBelowMinimum {
            minimum: usd(dec!(10))
        }
    );
    assert_eq!(
        harness.rejected(Actor::bidder(SELLER), place(dec!(50), None), 5),
        Rejection::SellerCannotBid
    );
    harness.ok(Actor::bidder(ALICE), place(dec!(30), None), 10);
    harness.ok(Actor::bidder(BOB), place(dec!(45), None), 10);
    assert_eq!(
        harness.rejected(Actor::seller(SELLER), Action::Cancel, 20),
        Rejection::ReserveMetCannotCancel
    );
    assert_eq!(
        harness.rejected(
            Actor::bidder(ALICE),
            Action::RetractBid {
                bidder: BOB,
                lot: None
            },
            20
        ),
        Rejection::NotAdmin
    );
    harness.ok(
        Actor::admin(ADMIN),
        Action::RetractBid {
            bidder: BOB,
            lot: None,
        },
        20,
    );
    harness.ok(Actor::seller(SELLER), Action::Cancel, 30);
    assert_eq!(
        harness.auction.bid_status(ALICE, None),
        Some(BidStatus::Lost)
    );
}

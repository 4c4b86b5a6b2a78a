//! English auctions: increments, proxy bidding (with the worked examples published
//! by eBay and others), reserve, buy-it-now, retraction, close, per-bid status.

use auction_engine::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use crate::support::*;

#[test]
fn every_boundary_of_the_ebay_increment_table() {
    // Proves each tier of eBay's US table applies from its first cent to its last.
    let table = IncrementTable::ebay_us();
    let cases = [
        (dec!(0.01), dec!(0.05)),
        (dec!(0.99), dec!(0.05)),
        (dec!(1.00), dec!(0.25)),
        (dec!(4.99), dec!(0.25)),
        (dec!(5.00), dec!(0.50)),
        (dec!(24.99), dec!(0.50)),
        (dec!(25.00), dec!(1.00)),
        (dec!(99.99), dec!(1.00)),
        (dec!(100.00), dec!(2.50)),
        (dec!(249.99), dec!(2.50)),
        (dec!(250.00), dec!(5.00)),
        (dec!(499.99), dec!(5.00)),
        (dec!(500.00), dec!(10.00)),
        (dec!(999.99), dec!(10.00)),
        (dec!(1000.00), dec!(25.00)),
        (dec!(2499.99), dec!(25.00)),
        (dec!(2500.00), dec!(50.00)),
        (dec!(4999.99), dec!(50.00)),
        (dec!(5000.00), dec!(100.00)),
        (dec!(1000000.00), dec!(100.00)),
    ];
    for (price, increment) in cases {
        assert_eq!(table.increment_at(price), increment, "increment at {price}");
    }
}

#[test]
fn minimum_next_bid_follows_the_table_at_each_boundary() {
    // Proves the engine's minimum next bid is price + increment(price) on both sides of every boundary.
    for (price, minimum) in [
        (dec!(0.99), dec!(1.04)),
        (dec!(1.00), dec!(1.25)),
        (dec!(4.99), dec!(5.24)),
        (dec!(5.00), dec!(5.50)),
        (dec!(24.99), dec!(25.49)),
        (dec!(25.00), dec!(26.00)),
        (dec!(99.99), dec!(100.99)),
        (dec!(100.00), dec!(102.50)),
        (dec!(249.99), dec!(252.49)),
        (dec!(250.00), dec!(255.00)),
        (dec!(499.99), dec!(504.99)),
        (dec!(500.00), dec!(510.00)),
        (dec!(999.99), dec!(1009.99)),
        (dec!(1000.00), dec!(1025.00)),
        (dec!(2499.99), dec!(2524.99)),
        (dec!(2500.00), dec!(2550.00)),
        (dec!(4999.99), dec!(5049.99)),
        (dec!(5000.00), dec!(5100.00)),
    ] {
        // A single bidder at the starting price makes the price exactly `price`.
        let mut harness = Harness::english(english(price));
        harness.max_bid(ALICE, price, 1).unwrap();
        assert_eq!(harness.price(), Some(price));
        assert_eq!(
            harness.english_view().3,
            usd(minimum),
            "minimum after {price}"
        );
        let below = minimum - dec!(0.01);
        assert_eq!(
            harness.max_bid(BOB, below, 2),
            Err(Rejection::BidBelowMinimum {
                minimum: usd(minimum)
            }),
            "one cent under the minimum after {price}"
        );
        harness.max_bid(BOB, minimum, 3).unwrap();
    }
}

#[test]
fn ebay_worked_example_starting_at_one_dollar() {
    // Proves eBay's help-page example of automatic bidding (paraphrased): starting price
    // $1.00; A's maximum of $10.00 shows $1.00; B bids $3.00 and A's proxy answers $3.25
    // (B's bid + the $0.25 increment); C's maximum of $15.00 leads at $10.50 (A's $10.00
    // maximum + the $0.50 increment).
    let mut harness = Harness::english(english(dec!(1.00)));
    harness.max_bid(ALICE, dec!(10.00), 1).unwrap();
    assert_eq!(
        (harness.price(), harness.leader()),
        (Some(dec!(1.00)), Some(ALICE))
    );
    harness.bid(BOB, dec!(3.00), 2).unwrap();
    assert_eq!(
        (harness.price(), harness.leader()),
        (Some(dec!(3.25)), Some(ALICE))
    );
    harness.max_bid(CAROL, dec!(15.00), 3).unwrap();
    assert_eq!(
        (harness.price(), harness.leader()),
        (Some(dec!(10.50)), Some(CAROL))
    );
    // At the end the engine, not a caller, sells to C at $10.50.
    assert_eq!(
        harness.tick(100_000),
        vec![EventKind::Sold {
            winner: CAROL,
            price: usd(dec!(10.50)),
            buy_it_now: None
        }]
    );
}

#[test]
fn published_increment_examples() {
    // Proves the examples printed next to eBay's table (dummies.com, "How to bid
    // automatically on eBay"): a high bid of $14.95 is answered with $15.45 ($0.50
    // increment) and a high bid of $200 with $202.50 ($2.50 increment).
    for (competing, answer) in [(dec!(14.95), dec!(15.45)), (dec!(200.00), dec!(202.50))] {
        let mut harness = Harness::english(english(dec!(1.00)));
        harness.max_bid(ALICE, dec!(1000.00), 1).unwrap();
        harness.bid(BOB, competing, 2).unwrap();
        assert_eq!(
            (harness.price(), harness.leader()),
            (Some(answer), Some(ALICE))
        );
    }
}

#[test]
fn proxy_examples_with_a_flat_one_dollar_increment() {
    // Proves ShopGoodwill's published proxy examples (flat $1 increment): (1) current
    // bid $3, a $6 maximum leads at $4; (2) start $3, John's $7 maximum shows $3, Jane's
    // $6 maximum is outbid at once and the price becomes $7 (capped at John's maximum).
    let flat = |start| EnglishSpec {
        increments: IncrementTable::flat(dec!(1)),
        ..english(start)
    };
    let mut first = Harness::english(flat(dec!(3.00)));
    first.bid(BOB, dec!(3.00), 1).unwrap();
    first.max_bid(ALICE, dec!(6.00), 2).unwrap();
    assert_eq!(
        (first.price(), first.leader()),
        (Some(dec!(4.00)), Some(ALICE))
    );

    let mut second = Harness::english(flat(dec!(3.00)));
    second.max_bid(BOB, dec!(7.00), 1).unwrap();
    assert_eq!(second.price(), Some(dec!(3.00)));
    second.max_bid(ALICE, dec!(6.00), 2).unwrap();
    assert_eq!(
        (second.price(), second.leader()),
        (Some(dec!(7.00)), Some(BOB))
    );
}

#[test]
fn proxy_outcome_table() {
    // Proves the challenger rules: M > L leads at min(M, L + inc(L)); M <= L leaves the
    // leader at min(L, M + inc(M)); equal maximums go to the earlier one at that amount.
    struct Case {
        leader_max: Decimal,
        challenger_max: Decimal,
        price: Decimal,
        challenger_leads: bool,
        why: &'static str,
    }
    let cases = [
        Case {
            leader_max: dec!(10),
            challenger_max: dec!(20),
            price: dec!(10.50),
            challenger_leads: true,
            why: "L + inc(L)",
        },
        Case {
            leader_max: dec!(10),
            challenger_max: dec!(10.20),
            price: dec!(10.20),
            challenger_leads: true,
            why: "capped at M",
        },
        Case {
            leader_max: dec!(10),
            challenger_max: dec!(8),
            price: dec!(8.50),
            challenger_leads: false,
            why: "M + inc(M)",
        },
        Case {
            leader_max: dec!(10),
            challenger_max: dec!(9.80),
            price: dec!(10),
            challenger_leads: false,
            why: "capped at L",
        },
        Case {
            leader_max: dec!(10),
            challenger_max: dec!(10),
            price: dec!(10),
            challenger_leads: false,
            why: "tie: earlier wins at L",
        },
        Case {
            leader_max: dec!(99.50),
            challenger_max: dec!(150),
            price: dec!(100.50),
            challenger_leads: true,
            why: "increment at L, not at M",
        },
    ];
    for case in cases {
        let mut harness = Harness::english(english(dec!(1.00)));
        harness.max_bid(ALICE, case.leader_max, 1).unwrap();
        harness.max_bid(BOB, case.challenger_max, 2).unwrap();
        let leader = if case.challenger_leads { BOB } else { ALICE };
        assert_eq!(
            (harness.price(), harness.leader()),
            (Some(case.price), Some(leader)),
            "{}",
            case.why
        );
    }
}

#[test]
fn a_plain_bid_is_a_maximum_equal_to_its_amount() {
    // Proves PlaceBid and SetMaxBid of the same amount give the same outcome.
    let mut plain = Harness::english(english(dec!(1.00)));
    let mut maximum = Harness::english(english(dec!(1.00)));
    plain.max_bid(ALICE, dec!(20), 1).unwrap();
    maximum.max_bid(ALICE, dec!(20), 1).unwrap();
    plain.bid(BOB, dec!(12), 2).unwrap();
    maximum.max_bid(BOB, dec!(12), 2).unwrap();
    assert_eq!(plain.english_view(), maximum.english_view());
    plain.bid(BOB, dec!(25), 3).unwrap();
    maximum.max_bid(BOB, dec!(25), 3).unwrap();
    assert_eq!(plain.english_view(), maximum.english_view());
    assert_eq!(plain.price(), Some(dec!(20.50)));
}

#[test]
fn a_leader_raising_their_own_maximum_does_not_raise_the_price() {
    // Proves the leader's raise keeps the price, and must exceed their own maximum.
    let mut harness = Harness::english(english(dec!(1.00)));
    harness.max_bid(ALICE, dec!(10), 1).unwrap();
    harness.bid(BOB, dec!(9.80), 2).unwrap();
    assert_eq!(harness.price(), Some(dec!(10)));
    harness.max_bid(ALICE, dec!(50), 3).unwrap();
    assert_eq!(
        (harness.price(), harness.leader()),
        (Some(dec!(10)), Some(ALICE))
    );
    assert_eq!(harness.auction.own_bid(ALICE, None), Some(usd(dec!(50))));
    // Not above the current maximum: the minimum is one cent over it.
    assert_eq!(
        harness.max_bid(ALICE, dec!(50), 4),
        Err(Rejection::BidBelowMinimum {
            minimum: usd(dec!(50.01))
        })
    );
    // Above the maximum but below the minimum next bid: the minimum is the next bid.
    let mut low = Harness::english(english(dec!(1.00)));
    low.max_bid(ALICE, dec!(1.10), 1).unwrap();
    assert_eq!(
        low.max_bid(ALICE, dec!(1.20), 2),
        Err(Rejection::BidBelowMinimum {
            minimum: usd(dec!(1.25))
        })
    );
}

#[test]
fn the_first_maximum_at_or_above_the_reserve_lifts_the_price_to_it() {
    // Proves the reserve lift, the "whichever is higher" rule and that a leader's raise lifts to the reserve.
    let with_reserve = |reserve| EnglishSpec {
        reserve_price: Some(reserve),
        ..english(dec!(1.00))
    };

    let mut lift = Harness::english(with_reserve(dec!(50)));
    lift.max_bid(ALICE, dec!(40), 1).unwrap();
    assert_eq!(
        (lift.price(), lift.english_view().2),
        (Some(dec!(1.00)), ReserveState::NotMet)
    );
    lift.max_bid(BOB, dec!(60), 2).unwrap();
    // Competing maximum + increment is 41; the reserve, 50, is higher.
    assert_eq!(
        (lift.price(), lift.leader(), lift.english_view().2),
        (Some(dec!(50)), Some(BOB), ReserveState::Met)
    );

    let mut higher = Harness::english(with_reserve(dec!(50)));
    higher.max_bid(ALICE, dec!(49), 1).unwrap();
    higher.max_bid(BOB, dec!(100), 2).unwrap();
    // 49 + 1 = 50 equals the reserve; with 55 the competing price wins.
    assert_eq!(higher.price(), Some(dec!(50)));
    higher.max_bid(CAROL, dec!(55), 3).unwrap();
    assert_eq!(
        (higher.price(), higher.leader()),
        (Some(dec!(56)), Some(BOB))
    );

    let mut raise = Harness::english(with_reserve(dec!(50)));
    raise.max_bid(ALICE, dec!(20), 1).unwrap();
    raise.max_bid(BOB, dec!(30), 2).unwrap();
    assert_eq!(raise.price(), Some(dec!(20.50)));
    raise.max_bid(BOB, dec!(45), 3).unwrap();
    assert_eq!(
        raise.price(),
        Some(dec!(20.50)),
        "a raise below the reserve keeps the price"
    );
    raise.max_bid(BOB, dec!(80), 4).unwrap();
    assert_eq!(
        raise.price(),
        Some(dec!(50)),
        "a raise meeting the reserve lifts to it"
    );
}

#[test]
fn reserve_examples_from_a_published_auto_bid_page() {
    // Proves epsauctions.com's auto-bid examples under eBay's table: start $3,000 reserve
    // $5,000, an auto-bid of $5,000 shows $5,000; a second $5,000 is refused with "at
    // least $5,100"; with a $10,000 reserve met at $10,000, a $15,000 auto-bid shows $10,100.
    let spec = EnglishSpec {
        reserve_price: Some(dec!(5000)),
        ..english(dec!(3000))
    };
    let mut harness = Harness::english(spec);
    harness.max_bid(ALICE, dec!(5000), 1).unwrap();
    assert_eq!(harness.price(), Some(dec!(5000)));
    assert_eq!(
        harness.max_bid(BOB, dec!(5000), 2),
        Err(Rejection::BidBelowMinimum {
            minimum: usd(dec!(5100))
        })
    );

    let spec = EnglishSpec {
        reserve_price: Some(dec!(10000)),
        ..english(dec!(5000))
    };
    let mut harness = Harness::english(spec);
    harness.max_bid(ALICE, dec!(5000), 1).unwrap();
    assert_eq!(
        (harness.price(), harness.english_view().2),
        (Some(dec!(5000)), ReserveState::NotMet)
    );
    harness.max_bid(ALICE, dec!(10000), 2).unwrap();
    assert_eq!(harness.price(), Some(dec!(10000)));
    harness.max_bid(BOB, dec!(15000), 3).unwrap();
    assert_eq!(
        (harness.price(), harness.leader()),
        (Some(dec!(10100)), Some(BOB))
    );
}

#[test]
fn the_reserve_amount_never_shows_and_no_sale_happens_below_it() {
    // Proves the view and public events say only "reserve not met", and the close is unsold below it.
    let spec = EnglishSpec {
        reserve_price: Some(dec!(777.77)),
        ..english(dec!(1.00))
    };
    let mut harness = Harness::english(spec);
    harness.max_bid(ALICE, dec!(500), 1).unwrap();
    harness.max_bid(BOB, dec!(600), 2).unwrap();
    let view = serde_json::to_string(&harness.auction.view()).unwrap();
    assert!(!view.contains("777"), "view leaks the reserve: {view}");
    assert!(view.contains("NotMet"));
    for event in &harness.events {
        if let Some(public) = event.to_public() {
            let json = serde_json::to_string(&public).unwrap();
            assert!(
                !json.contains("777") && !json.contains("600"),
                "public event leaks: {json}"
            );
        }
    }
    assert_eq!(
        harness.tick(100_000),
        vec![EventKind::Unsold {
            reason: UnsoldReason::ReserveNotMet
        }]
    );
    assert_eq!(harness.auction.bid_status(BOB, None), Some(BidStatus::Lost));
}

#[test]
fn buy_it_now_disappears_with_the_first_bid() {
    // Proves buy-it-now without a reserve is withdrawn by the first bid, and sells at once before that.
    let spec = EnglishSpec {
        buy_it_now_price: Some(dec!(50)),
        ..english(dec!(10))
    };
    let mut bought = Harness::english(spec.clone());
    assert_eq!(
        bought.rejected(
            Actor::bidder(ALICE),
            Action::BuyItNow {
                price: usd(dec!(40))
            },
            1
        ),
        Rejection::PriceMismatch {
            expected: usd(dec!(50))
        }
    );
    assert_eq!(
        bought.rejected(
            Actor::bidder(SELLER),
            Action::BuyItNow {
                price: usd(dec!(50))
            },
            1
        ),
        Rejection::SellerCannotBid
    );
    let events = bought.ok(
        Actor::bidder(ALICE),
        Action::BuyItNow {
            price: usd(dec!(50)),
        },
        2,
    );
    assert!(
        matches!(events[..], [EventKind::Sold { winner: ALICE, price, buy_it_now: Some(_) }] if price == usd(dec!(50)))
    );
    assert_eq!(bought.auction.status(), AuctionStatus::Closed);
    assert_eq!(bought.bid(BOB, dec!(60), 3), Err(Rejection::AuctionClosed));

    let mut withdrawn = Harness::english(spec);
    let events = withdrawn.bid(ALICE, dec!(10), 1).unwrap();
    assert_eq!(events[1], EventKind::BuyItNowWithdrawn);
    assert_eq!(
        withdrawn.rejected(
            Actor::bidder(BOB),
            Action::BuyItNow {
                price: usd(dec!(50))
            },
            2
        ),
        Rejection::BuyItNowUnavailable
    );
}

#[test]
fn with_a_reserve_buy_it_now_stays_until_the_reserve_is_met() {
    // Proves buy-it-now with a reserve survives bids below the reserve and goes once one meets it.
    let spec = EnglishSpec {
        reserve_price: Some(dec!(30)),
        buy_it_now_price: Some(dec!(50)),
        ..english(dec!(10))
    };
    let mut harness = Harness::english(spec);
    assert_eq!(harness.bid(ALICE, dec!(20), 1).unwrap().len(), 1);
    let FormatView::English {
        buy_it_now_price, ..
    } = harness.auction.view().format
    else {
        panic!()
    };
    assert_eq!(buy_it_now_price, Some(usd(dec!(50))));
    assert_eq!(
        harness.bid(BOB, dec!(30), 2).unwrap()[1],
        EventKind::BuyItNowWithdrawn
    );
    assert_eq!(
        harness.rejected(
            Actor::bidder(CAROL),
            Action::BuyItNow {
                price: usd(dec!(50))
            },
            3
        ),
        Rejection::BuyItNowUnavailable
    );
}

#[test]
fn bids_below_the_minimum_get_the_minimum_acceptable_amount() {
    // Proves the rejection carries the exact minimum: the starting price first, then price + increment.
    let mut harness = Harness::english(english(dec!(5.00)));
    assert_eq!(
        harness.bid(ALICE, dec!(4.99), 1),
        Err(Rejection::BidBelowMinimum {
            minimum: usd(dec!(5.00))
        })
    );
    harness.bid(ALICE, dec!(5.00), 2).unwrap();
    assert_eq!(
        harness.bid(BOB, dec!(5.49), 3),
        Err(Rejection::BidBelowMinimum {
            minimum: usd(dec!(5.50))
        })
    );
    let rejection = harness.bid(BOB, dec!(5.49), 3).unwrap_err();
    assert_eq!(
        (rejection.reason(), rejection.category()),
        ("BID_BELOW_MINIMUM", RejectionCategory::FailedPrecondition)
    );
}

#[test]
fn admin_retraction_recomputes_from_the_remaining_maximums() {
    // Proves retraction needs an admin, removes all of a bidder's bids, and recomputes leader and price.
    let mut harness = Harness::english(english(dec!(1.00)));
    harness.max_bid(ALICE, dec!(10), 1).unwrap();
    harness.max_bid(BOB, dec!(8), 2).unwrap();
    harness.max_bid(CAROL, dec!(30), 3).unwrap();
    assert_eq!(
        (harness.price(), harness.leader()),
        (Some(dec!(10.50)), Some(CAROL))
    );
    let retract = |bidder| Action::RetractBid { bidder, lot: None };
    assert_eq!(
        harness.rejected(Actor::bidder(ALICE), retract(CAROL), 4),
        Rejection::NotAdmin
    );
    assert_eq!(
        harness.rejected(Actor::seller(SELLER), retract(CAROL), 4),
        Rejection::NotAdmin
    );
    assert_eq!(
        harness.rejected(Actor::admin(ADMIN), retract(DAVE), 4),
        Rejection::NoSuchBid
    );
    harness.ok(Actor::admin(ADMIN), retract(CAROL), 5);
    assert_eq!(
        (harness.price(), harness.leader()),
        (Some(dec!(8.50)), Some(ALICE))
    );
    assert_eq!(harness.auction.own_bid(CAROL, None), None);
    harness.ok(Actor::admin(ADMIN), retract(ALICE), 6);
    assert_eq!(
        (harness.price(), harness.leader()),
        (Some(dec!(1.00)), Some(BOB))
    );
    harness.ok(Actor::admin(ADMIN), retract(BOB), 7);
    assert_eq!((harness.price(), harness.leader()), (None, None));
    assert_eq!(
        harness.tick(100_000),
        vec![EventKind::Unsold {
            reason: UnsoldReason::NoBids
        }]
    );
}

#[test]
fn per_bid_status_follows_the_auction() {
    // Proves winning/outbid while open and won/lost after the close.
    let mut harness = Harness::english(english(dec!(1.00)));
    harness.max_bid(ALICE, dec!(10), 1).unwrap();
    assert_eq!(
        harness.auction.bid_status(ALICE, None),
        Some(BidStatus::Winning)
    );
    harness.max_bid(BOB, dec!(20), 2).unwrap();
    assert_eq!(
        harness.auction.bid_status(ALICE, None),
        Some(BidStatus::Outbid)
    );
    assert_eq!(
        harness.auction.bid_status(BOB, None),
        Some(BidStatus::Winning)
    );
    assert_eq!(harness.auction.bid_status(CAROL, None), None);
    harness.tick(100_000);
    assert_eq!(
        harness.auction.bid_status(ALICE, None),
        Some(BidStatus::Lost)
    );
    assert_eq!(harness.auction.bid_status(BOB, None), Some(BidStatus::Won));
}

#[test]
fn public_events_never_carry_maximums() {
    // Proves the public projection of a bid shows the price and leader but not the maximum.
    let mut harness = Harness::english(english(dec!(1.00)));
    harness.max_bid(ALICE, dec!(987.65), 1).unwrap();
    let event = harness.events.last().unwrap();
    let EventKind::BidAccepted {
        max_amount,
        previous_leader: None,
        ..
    } = event.kind
    else {
        panic!()
    };
    assert_eq!(max_amount, usd(dec!(987.65)));
    let public = serde_json::to_string(&event.to_public().unwrap()).unwrap();
    assert!(!public.contains("987.65"), "{public}");
    assert!(public.contains("PriceChanged"));
}

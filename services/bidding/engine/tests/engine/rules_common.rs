//! Rules every format shares: lifecycle, seller and role checks, currency and
//! amount validation, cancellation, timers, time, spec validation, reasons.

use std::collections::HashSet;

use auction_engine::*;
use rust_decimal_macros::dec;

use crate::support::*;

#[test]
fn lifecycle_scheduled_open_closed() {
    // Proves an auction is scheduled until its start, open until its end, and closed by the engine at the end.
    let mut harness = Harness::new(AuctionSpec {
        start_at: at(1_000),
        ..spec(FormatSpec::English(english(dec!(1))))
    });
    assert_eq!(harness.auction.status(), AuctionStatus::Scheduled);
    assert_eq!(harness.auction.next_deadline(), Some(at(1_000)));
    assert!(harness.tick(999).is_empty());
    assert_eq!(
        harness.bid(ALICE, dec!(1), 999),
        Err(Rejection::AuctionNotOpen)
    );
    assert_eq!(harness.tick(1_000), vec![EventKind::Opened]);
    assert_eq!(harness.auction.status(), AuctionStatus::Open);
    harness.bid(ALICE, dec!(1), 1_001).unwrap();
    assert_eq!(harness.tick(100_000).len(), 1);
    assert_eq!(harness.auction.status(), AuctionStatus::Closed);
    assert_eq!(harness.auction.next_deadline(), None);
    assert!(
        harness.tick(1_000_000).is_empty(),
        "ticks after the close do nothing"
    );
}

#[test]
fn the_seller_never_bids_and_only_bidders_bid() {
    // Proves SELLER_CANNOT_BID whatever role the seller claims, and NOT_BIDDER for other roles.
    let mut harness = Harness::english(english(dec!(1)));
    for role in [Role::Bidder, Role::Seller, Role::Admin] {
        let actor = Actor {
            user_id: SELLER,
            role,
        };
        assert_eq!(
            harness.rejected(
                actor,
                Action::PlaceBid {
                    amount: usd(dec!(5)),
                    lot: None
                },
                1
            ),
            Rejection::SellerCannotBid
        );
    }
    for actor in [
        Actor::admin(ADMIN),
        Actor::auctioneer(AUCTIONEER),
        Actor::SYSTEM,
    ] {
        assert_eq!(
            harness.rejected(
                actor,
                Action::SetMaxBid {
                    max_amount: usd(dec!(5)),
                    lot: None
                },
                1
            ),
            Rejection::NotBidder
        );
    }
    assert_eq!(
        Rejection::SellerCannotBid.category(),
        RejectionCategory::PermissionDenied
    );
}

#[test]
fn amounts_must_be_in_the_currency_positive_and_precise() {
    // Proves WRONG_CURRENCY and INVALID_AMOUNT for zero, negative, sub-cent and absurdly large amounts.
    let mut harness = Harness::english(english(dec!(1)));
    let bid = |amount| Action::PlaceBid { amount, lot: None };
    assert_eq!(
        harness.rejected(
            Actor::bidder(ALICE),
            bid(Money::new(dec!(5), Currency::EUR)),
            1
        ),
        Rejection::WrongCurrency {
            expected: Currency::USD
        }
    );
    for amount in [dec!(0), dec!(-5), dec!(5.001), dec!(1000000000000.01)] {
        assert_eq!(
            harness.rejected(Actor::bidder(ALICE), bid(usd(amount)), 1),
            Rejection::InvalidAmount,
            "{amount}"
        );
    }
    // Trailing zeros are not extra precision.
    harness.ok(Actor::bidder(ALICE), bid(usd(dec!(5.000))), 1);
    assert_eq!(
        Rejection::InvalidAmount.category(),
        RejectionCategory::InvalidArgument
    );
}

#[test]
fn yen_auctions_use_whole_amounts() {
    // Proves the minor-unit table: JPY amounts have no decimals, and the eBay table is refused for yen.
    let yen = |increments| AuctionSpec {
        currency: Currency::JPY,
        ..spec(FormatSpec::English(EnglishSpec {
            increments,
            ..english(dec!(100))
        }))
    };
    assert!(matches!(
        Auction::new(yen(IncrementTable::ebay_us())),
        Err(SpecError::InvalidIncrementTable { .. })
    ));
    let mut auction = Auction::new(yen(IncrementTable::flat(dec!(10)))).unwrap();
    let mut events = Vec::new();
    auction
        .apply(Command::tick(at(0)), at(0), &mut events)
        .unwrap();
    let bid = |amount| Command {
        request_id: RequestId(1),
        actor: Actor::bidder(ALICE),
        received_at: at(1),
        action: Action::PlaceBid {
            amount: Money::new(amount, Currency::JPY),
            lot: None,
        },
    };
    assert_eq!(
        auction.apply(bid(dec!(100.5)), at(1), &mut events),
        Err(Rejection::InvalidAmount)
    );
    auction.apply(bid(dec!(100)), at(1), &mut events).unwrap();
}

#[test]
fn cancellation_rules() {
    // Proves the seller may cancel until a bid meets the reserve, admins always, others never, nobody after the close.
    let reserve = || EnglishSpec {
        reserve_price: Some(dec!(50)),
        ..english(dec!(1))
    };
    let mut harness = Harness::english(reserve());
    assert_eq!(
        harness.rejected(Actor::bidder(ALICE), Action::Cancel, 1),
        Rejection::NotSeller
    );
    assert_eq!(
        harness.rejected(Actor::seller(BOB), Action::Cancel, 1),
        Rejection::NotSeller,
        "another seller"
    );
    harness.bid(ALICE, dec!(40), 1).unwrap();
    let events = harness.ok(Actor::seller(SELLER), Action::Cancel, 2);
    assert!(matches!(
        events[..],
        [EventKind::Cancelled {
            by: Actor {
                user_id: SELLER,
                role: Role::Seller
            },
            ..
        }]
    ));
    assert_eq!(harness.auction.status(), AuctionStatus::Cancelled);
    assert_eq!(
        harness.bid(BOB, dec!(60), 3),
        Err(Rejection::AuctionCancelled)
    );
    assert_eq!(
        harness.rejected(Actor::admin(ADMIN), Action::Cancel, 3),
        Rejection::AuctionCancelled
    );
    assert_eq!(
        harness.auction.bid_status(ALICE, None),
        Some(BidStatus::Lost)
    );

    let mut met = Harness::english(reserve());
    met.bid(ALICE, dec!(50), 1).unwrap();
    assert_eq!(
        met.rejected(Actor::seller(SELLER), Action::Cancel, 2),
        Rejection::ReserveMetCannotCancel
    );
    met.ok(Actor::admin(ADMIN), Action::Cancel, 3);

    // Without a reserve any bid meets it.
    let mut plain = Harness::english(english(dec!(1)));
    plain.bid(ALICE, dec!(1), 1).unwrap();
    assert_eq!(
        plain.rejected(Actor::seller(SELLER), Action::Cancel, 2),
        Rejection::ReserveMetCannotCancel
    );

    let mut closed = Harness::english(english(dec!(1)));
    closed.tick(100_000);
    assert_eq!(
        closed.rejected(Actor::admin(ADMIN), Action::Cancel, 100_001),
        Rejection::AuctionClosed
    );

    let mut scheduled = Harness::new(AuctionSpec {
        start_at: at(5_000),
        ..spec(FormatSpec::English(english(dec!(1))))
    });
    scheduled.ok(Actor::seller(SELLER), Action::Cancel, 1);
    assert_eq!(scheduled.auction.next_deadline(), None);
}

#[test]
fn a_due_timer_must_be_ticked_before_any_other_command() {
    // Proves TIMER_DUE leaves the auction unchanged, so no bid is judged after the close that should have happened.
    let mut auction = Auction::new(spec(FormatSpec::English(english(dec!(1))))).unwrap();
    let mut events = Vec::new();
    let bid = Command {
        request_id: RequestId(1),
        actor: Actor::bidder(ALICE),
        received_at: at(5),
        action: Action::PlaceBid {
            amount: usd(dec!(1)),
            lot: None,
        },
    };
    let before = auction.clone();
    let rejection = auction.apply(bid, at(5), &mut events).unwrap_err();
    assert_eq!(rejection, Rejection::TimerDue { deadline: at(0) });
    assert!(rejection.is_retryable());
    assert_eq!((&auction, events.len()), (&before, 0));
    auction
        .apply(Command::tick(at(5)), at(5), &mut events)
        .unwrap();
    // The open is stamped with its due time, not the late tick's.
    assert_eq!(events[0].at, at(0));
    auction.apply(bid, at(5), &mut events).unwrap();
    assert_eq!(
        auction.apply(bid, at(100_000), &mut events),
        Err(Rejection::TimerDue {
            deadline: at(100_000)
        })
    );
    auction
        .apply(Command::tick(at(150_000)), at(150_000), &mut events)
        .unwrap();
    assert_eq!(
        events.last().unwrap().at,
        at(100_000),
        "a late tick does not move the close"
    );
    assert_eq!(
        auction.apply(bid, at(150_000), &mut events),
        Err(Rejection::AuctionClosed)
    );
}

#[test]
fn time_never_goes_backwards_and_stays_in_range() {
    // Proves TIME_WENT_BACKWARDS before the last event and TIME_OUT_OF_RANGE outside the accepted range.
    let mut harness = Harness::english(english(dec!(1)));
    harness.bid(ALICE, dec!(1), 500).unwrap();
    let mut events = Vec::new();
    assert_eq!(
        harness
            .auction
            .apply(Command::tick(at(499)), at(499), &mut events),
        Err(Rejection::TimeWentBackwards {
            last_event_at: at(500)
        })
    );
    assert_eq!(
        harness
            .auction
            .apply(Command::tick(at(-1)), at(-1), &mut events),
        Err(Rejection::TimeOutOfRange)
    );
    assert_eq!(
        harness
            .auction
            .apply(Command::tick(at(i64::MAX)), at(i64::MAX), &mut events),
        Err(Rejection::TimeOutOfRange)
    );
}

#[test]
fn commands_of_another_format_are_refused() {
    // Proves UNSUPPORTED_FOR_FORMAT for a command that belongs to another format.
    let mut harness = Harness::english(english(dec!(1)));
    for action in [
        Action::PlaceSealedBid {
            amount: usd(dec!(1)),
            ttl_ms: None,
        },
        Action::WithdrawSealedBid,
        Action::DutchAccept {
            quantity: 1,
            max_unit_price: usd(dec!(1)),
        },
        Action::Hammer,
        Action::AbsenteeBid {
            lot: LotIndex(0),
            max_amount: usd(dec!(1)),
        },
        Action::PlaceBid {
            amount: usd(dec!(1)),
            lot: Some(LotIndex(0)),
        },
    ] {
        assert_eq!(
            harness.rejected(Actor::bidder(ALICE), action, 1),
            Rejection::UnsupportedForFormat,
            "{action:?}"
        );
    }
}

#[test]
fn events_are_numbered_and_replayable_from_creation() {
    // Proves sequence numbers run 0, 1, 2, ... and that replay refuses gaps and foreign events.
    let mut harness = Harness::english(EnglishSpec {
        buy_it_now_price: Some(dec!(9)),
        ..english(dec!(1))
    });
    harness.bid(ALICE, dec!(1), 1).unwrap();
    harness.bid(BOB, dec!(2), 2).unwrap();
    let seqs: Vec<u64> = harness.events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (0..harness.events.len() as u64).collect::<Vec<_>>());
    assert_eq!(harness.auction.next_seq(), harness.events.len() as u64);
    let mut replayed = Auction::new(harness.auction.spec()).unwrap();
    assert_eq!(
        replayed.apply_event(&harness.events[1]),
        Err(ReplayError::OutOfSequence {
            expected: 0,
            got: 1
        })
    );
    let foreign = Event {
        seq: 0,
        at: at(0),
        kind: EventKind::ClockTicked {
            tick_index: 1,
            price: usd(dec!(1)),
        },
    };
    assert_eq!(
        replayed.apply_event(&foreign),
        Err(ReplayError::NotApplicable)
    );
}

#[test]
fn nonsense_specs_are_refused() {
    // Proves each spec validation rule with its stable reason.
    let english_with = |change: fn(&mut EnglishSpec)| {
        let mut english = english(dec!(10));
        change(&mut english);
        spec(FormatSpec::English(english))
    };
    let dutch = |start, floor, step, tick_ms, quantity| {
        spec(FormatSpec::Dutch(DutchSpec {
            start_price: start,
            price_step: step,
            tick_interval_ms: tick_ms,
            floor_price: floor,
            quantity,
        }))
    };
    let cases: Vec<(AuctionSpec, &str)> = vec![
        (
            english_with(|e| e.reserve_price = Some(dec!(5))),
            "RESERVE_BELOW_STARTING_PRICE",
        ),
        (
            english_with(|e| e.starting_price = dec!(0)),
            "INVALID_AMOUNT",
        ),
        (
            english_with(|e| e.starting_price = dec!(1.001)),
            "INVALID_AMOUNT",
        ),
        (
            english_with(|e| e.buy_it_now_price = Some(dec!(9))),
            "BUY_IT_NOW_TOO_LOW",
        ),
        (
            english_with(|e| {
                e.reserve_price = Some(dec!(20));
                e.buy_it_now_price = Some(dec!(15))
            }),
            "BUY_IT_NOW_TOO_LOW",
        ),
        (english_with(|e| e.end_at = at(0)), "INVALID_SCHEDULE"),
        (english_with(|e| e.end_at = at(-5)), "TIME_OUT_OF_RANGE"),
        (
            english_with(|e| {
                e.soft_close = Some(SoftClose {
                    window_ms: 0,
                    ..SoftClose::default()
                })
            }),
            "INVALID_SOFT_CLOSE",
        ),
        (
            english_with(|e| {
                e.soft_close = Some(SoftClose {
                    max_total_extension_ms: Some(-1),
                    ..SoftClose::default()
                })
            }),
            "INVALID_SOFT_CLOSE",
        ),
        (
            english_with(|e| e.increments = IncrementTable::from_tiers(vec![])),
            "INVALID_INCREMENT_TABLE",
        ),
        (
            dutch(dec!(10), dec!(10), dec!(1), 1_000, 1),
            "FLOOR_NOT_BELOW_START",
        ),
        (
            dutch(dec!(10), dec!(11), dec!(1), 1_000, 1),
            "FLOOR_NOT_BELOW_START",
        ),
        (dutch(dec!(10), dec!(1), dec!(1), 0, 1), "INVALID_CLOCK"),
        (
            dutch(dec!(1000000), dec!(0.01), dec!(0.01), 1, 1),
            "INVALID_CLOCK",
        ),
        (
            dutch(dec!(10), dec!(1), dec!(1), 1_000, 0),
            "INVALID_QUANTITY",
        ),
        (
            dutch(dec!(10), dec!(1), dec!(0), 1_000, 1),
            "INVALID_AMOUNT",
        ),
        (
            spec(FormatSpec::Sealed(SealedSpec {
                pricing: SealedPricing::SecondPrice,
                starting_price: dec!(5),
                reserve_price: Some(dec!(4)),
                end_at: at(100),
            })),
            "RESERVE_BELOW_STARTING_PRICE",
        ),
        (
            spec(FormatSpec::Live(LiveSpec::new(vec![]))),
            "INVALID_LOT_COUNT",
        ),
        (
            spec(FormatSpec::Live(LiveSpec {
                countdown_ms: 0,
                ..LiveSpec::new(vec![LotSpec::new(dec!(1))])
            })),
            "INVALID_COUNTDOWN",
        ),
    ];
    for (spec, reason) in cases {
        let error = Auction::new(spec.clone()).unwrap_err();
        assert_eq!(error.reason(), reason, "{spec:?}");
    }
}

#[test]
fn rejection_reasons_are_stable_and_distinct() {
    // Proves the machine-readable reasons the service depends on, and that no two variants share one.
    let money = usd(dec!(1));
    let all = [
        Rejection::BidBelowMinimum { minimum: money },
        Rejection::AuctionClosed,
        Rejection::AuctionCancelled,
        Rejection::AuctionNotOpen,
        Rejection::SellerCannotBid,
        Rejection::NotBidder,
        Rejection::WrongCurrency {
            expected: Currency::USD,
        },
        Rejection::InvalidAmount,
        Rejection::InvalidQuantity,
        Rejection::InvalidTtl,
        Rejection::TimeOutOfRange,
        Rejection::UnsupportedForFormat,
        Rejection::NotAuctioneer,
        Rejection::NotAdmin,
        Rejection::NotSeller,
        Rejection::ReserveMetCannotCancel,
        Rejection::QuantityUnavailable { available: 1 },
        Rejection::PriceAboveLimit { current: money },
        Rejection::PriceMismatch { expected: money },
        Rejection::BuyItNowUnavailable,
        Rejection::NoSuchBid,
        Rejection::NoSuchLot,
        Rejection::NoLotOpen,
        Rejection::LotNotOpen { open: None },
        Rejection::LotInProgress { open: LotIndex(0) },
        Rejection::LotNotPending,
        Rejection::LotNotClosed,
        Rejection::NoBids,
        Rejection::ReserveNotMet,
        Rejection::NothingToUndo,
        Rejection::TooManyBids,
        Rejection::TimerDue { deadline: at(0) },
        Rejection::TimeWentBackwards {
            last_event_at: at(0),
        },
    ];
    let reasons: HashSet<&str> = all.iter().map(Rejection::reason).collect();
    assert_eq!(reasons.len(), all.len());
    for (rejection, reason, category) in [
        (
            Rejection::BidBelowMinimum { minimum: money },
            "BID_BELOW_MINIMUM",
            RejectionCategory::FailedPrecondition,
        ),
        (
            Rejection::AuctionClosed,
            "AUCTION_CLOSED",
            RejectionCategory::FailedPrecondition,
        ),
        (
            Rejection::AuctionNotOpen,
            "AUCTION_NOT_OPEN",
            RejectionCategory::FailedPrecondition,
        ),
        (
            Rejection::SellerCannotBid,
            "SELLER_CANNOT_BID",
            RejectionCategory::PermissionDenied,
        ),
        (
            Rejection::WrongCurrency {
                expected: Currency::USD,
            },
            "WRONG_CURRENCY",
            RejectionCategory::InvalidArgument,
        ),
        (
            Rejection::InvalidAmount,
            "INVALID_AMOUNT",
            RejectionCategory::InvalidArgument,
        ),
        (
            Rejection::NotAuctioneer,
            "NOT_AUCTIONEER",
            RejectionCategory::PermissionDenied,
        ),
        (
            Rejection::NotAdmin,
            "NOT_ADMIN",
            RejectionCategory::PermissionDenied,
        ),
        (
            Rejection::ReserveMetCannotCancel,
            "RESERVE_MET_CANNOT_CANCEL",
            RejectionCategory::FailedPrecondition,
        ),
        (
            Rejection::QuantityUnavailable { available: 1 },
            "QUANTITY_UNAVAILABLE",
            RejectionCategory::FailedPrecondition,
        ),
        (
            Rejection::NoSuchBid,
            "NO_SUCH_BID",
            RejectionCategory::NotFound,
        ),
        (
            Rejection::TooManyBids,
            "TOO_MANY_BIDS",
            RejectionCategory::ResourceExhausted,
        ),
    ] {
        assert_eq!(
            (rejection.reason(), rejection.category()),
            (reason, category)
        );
    }
}

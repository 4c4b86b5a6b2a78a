//! Live sessions: lots in order, one open at a time, the countdown, the
//! auctioneer's commands, absentee bids, auto-advance.

use auction_engine::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use crate::support::*;

fn session(lots: Vec<LotSpec>, auto_advance: bool) -> Harness {
    let mut harness = Harness::new(AuctionSpec {
        start_at: at(1_000),
        ..spec(FormatSpec::Live(LiveSpec {
            lots,
            countdown_ms: 10_000,
            auto_advance,
            finalize_ms: None,
        }))
    });
    harness.tick(0);
    harness
}

fn three_lots() -> Vec<LotSpec> {
    vec![
        LotSpec::new(dec!(10)),
        LotSpec {
            reserve_price: Some(dec!(100)),
            ..LotSpec::new(dec!(20))
        },
        LotSpec::new(dec!(5)),
    ]
}

fn lot_view(harness: &Harness, lot: u32) -> LotView {
    match harness.auction.view().format {
        FormatView::Live { lots, .. } => lots[lot as usize].clone(),
        other => panic!("not live: {other:?}"),
    }
}

fn bid(
    harness: &mut Harness,
    bidder: UserId,
    amount: Decimal,
    lot: u32,
    now_ms: i64,
) -> Result<Vec<EventKind>, Rejection> {
    harness.apply(
        Actor::bidder(bidder),
        Action::PlaceBid {
            amount: usd(amount),
            lot: Some(LotIndex(lot)),
        },
        now_ms,
    )
}

fn auctioneer(
    harness: &mut Harness,
    action: Action,
    now_ms: i64,
) -> Result<Vec<EventKind>, Rejection> {
    harness.apply(Actor::auctioneer(AUCTIONEER), action, now_ms)
}

#[test]
fn the_session_opens_the_first_lot_and_the_countdown_restarts_on_each_bid() {
    // Proves auto-open at the start, the 10 s countdown restarting per accepted bid, and the sale when it runs out.
    let mut harness = session(three_lots(), true);
    assert_eq!(
        harness.tick(1_000),
        vec![
            EventKind::Opened,
            EventKind::LotOpened {
                lot: LotIndex(0),
                deadline: at(11_000),
                opening: Some(LotOpening {
                    price: None,
                    leader: None,
                    minimum_bid: usd(dec!(10)),
                }),
            }
        ]
    );
    bid(&mut harness, ALICE, dec!(10), 0, 5_000).unwrap();
    assert_eq!(harness.auction.next_deadline(), Some(at(15_000)));
    bid(&mut harness, BOB, dec!(12), 0, 14_999).unwrap();
    assert_eq!(harness.auction.next_deadline(), Some(at(24_999)));
    let events = harness.tick(24_999);
    assert_eq!(
        events[0],
        EventKind::LotSold {
            lot: LotIndex(0),
            winner: BOB,
            price: usd(dec!(10.50)),
            by_countdown: true
        }
    );
    // Auto-advance: the next lot opens at once.
    assert_eq!(
        events[1],
        EventKind::LotOpened {
            lot: LotIndex(1),
            deadline: at(34_999),
            opening: Some(LotOpening {
                price: None,
                leader: None,
                minimum_bid: usd(dec!(20)),
            }),
        }
    );
    assert_eq!(
        harness.auction.bid_status(BOB, Some(LotIndex(0))),
        Some(BidStatus::Won)
    );
    assert_eq!(
        harness.auction.bid_status(ALICE, Some(LotIndex(0))),
        Some(BidStatus::Lost)
    );
}

#[test]
fn only_the_open_lot_takes_bids() {
    // Proves LOT_NOT_OPEN for another lot (with the open one named), NO_LOT_OPEN between lots, AUCTION_NOT_OPEN before the start.
    let mut harness = session(three_lots(), false);
    assert_eq!(
        bid(&mut harness, ALICE, dec!(10), 0, 500),
        Err(Rejection::AuctionNotOpen)
    );
    harness.tick(1_000);
    assert_eq!(
        bid(&mut harness, ALICE, dec!(10), 0, 1_500),
        Err(Rejection::LotNotOpen { open: None })
    );
    assert_eq!(
        harness.apply(
            Actor::bidder(ALICE),
            Action::PlaceBid {
                amount: usd(dec!(10)),
                lot: None
            },
            1_500
        ),
        Err(Rejection::NoLotOpen)
    );
    auctioneer(&mut harness, Action::OpenLot { lot: None }, 2_000).unwrap();
    assert_eq!(
        bid(&mut harness, ALICE, dec!(20), 1, 2_500),
        Err(Rejection::LotNotOpen {
            open: Some(LotIndex(0))
        })
    );
    harness
        .apply(
            Actor::bidder(ALICE),
            Action::PlaceBid {
                amount: usd(dec!(10)),
                lot: None,
            },
            2_500,
        )
        .unwrap();
}

#[test]
fn only_the_auctioneer_drives_lots() {
    // Proves NOT_AUCTIONEER for every auctioneer command from a bidder, the seller and an admin.
    let mut harness = session(three_lots(), true);
    harness.tick(1_000);
    for actor in [
        Actor::bidder(ALICE),
        Actor::seller(SELLER),
        Actor::admin(ADMIN),
    ] {
        for action in [
            Action::OpenLot { lot: None },
            Action::FairWarning,
            Action::Hammer,
            Action::Pass,
            Action::Reopen { lot: LotIndex(0) },
            Action::UndoLastBid,
        ] {
            assert_eq!(
                harness.rejected(actor, action, 2_000),
                Rejection::NotAuctioneer,
                "{actor:?} {action:?}"
            );
        }
    }
}

#[test]
fn hammer_pass_fair_warning_and_the_reserve() {
    // Proves hammer sells to the leader, refuses without bids or below the reserve, pass closes unsold, fair warning is an event.
    let mut harness = session(three_lots(), true);
    harness.tick(1_000);
    assert_eq!(
        auctioneer(&mut harness, Action::Hammer, 1_500),
        Err(Rejection::NoBids)
    );
    bid(&mut harness, ALICE, dec!(15), 0, 2_000).unwrap();
    assert_eq!(
        auctioneer(&mut harness, Action::FairWarning, 3_000).unwrap(),
        vec![EventKind::FairWarning { lot: LotIndex(0) }]
    );
    assert_eq!(lot_view(&harness, 0).fair_warnings, 1);
    let events = auctioneer(&mut harness, Action::Hammer, 4_000).unwrap();
    assert_eq!(
        events[0],
        EventKind::LotSold {
            lot: LotIndex(0),
            winner: ALICE,
            price: usd(dec!(10)),
            by_countdown: false
        }
    );
    // Lot 1 has a reserve of 100.
    bid(&mut harness, BOB, dec!(60), 1, 5_000).unwrap();
    assert_eq!(lot_view(&harness, 1).reserve, ReserveState::NotMet);
    assert_eq!(
        auctioneer(&mut harness, Action::Hammer, 6_000),
        Err(Rejection::ReserveNotMet)
    );
    let events = auctioneer(&mut harness, Action::Pass, 7_000).unwrap();
    assert_eq!(
        events[0],
        EventKind::LotPassed {
            lot: LotIndex(1),
            reason: UnsoldReason::Passed
        }
    );
    assert_eq!(
        harness.auction.bid_status(BOB, Some(LotIndex(1))),
        Some(BidStatus::Lost)
    );
    // Lot 2 runs out with no bids: passed, and the session ends with one lot sold.
    let events = harness.tick(17_000);
    assert_eq!(
        events,
        vec![
            EventKind::LotPassed {
                lot: LotIndex(2),
                reason: UnsoldReason::NoBids
            },
            EventKind::SessionEnded { lots_sold: 1 }
        ]
    );
    assert_eq!(harness.auction.status(), AuctionStatus::Closed);
    assert_eq!(
        auctioneer(&mut harness, Action::OpenLot { lot: None }, 18_000),
        Err(Rejection::AuctionClosed)
    );
}

#[test]
fn absentee_bids_act_as_maximums_when_the_lot_opens() {
    // Proves commission bids left before the lot opens compete by proxy once it opens, and stay private until then.
    let mut harness = session(three_lots(), false);
    let absentee = |lot, amount| Action::AbsenteeBid {
        lot: LotIndex(lot),
        max_amount: usd(amount),
    };
    harness.ok(Actor::bidder(ALICE), absentee(0, dec!(30)), 500);
    harness.ok(Actor::bidder(BOB), absentee(0, dec!(25)), 600);
    assert_eq!(
        harness
            .events
            .last()
            .unwrap()
            .to_public()
            .map(|public| public.kind),
        Some(event::PublicEventKind::AbsenteeBidReceived { lot: LotIndex(0) }),
        "the public learns only that an absentee bid was received"
    );
    assert_eq!(lot_view(&harness, 0).price, None);
    assert_eq!(
        harness.rejected(Actor::bidder(SELLER), absentee(0, dec!(50)), 700),
        Rejection::SellerCannotBid
    );
    assert_eq!(
        harness.rejected(Actor::bidder(CAROL), absentee(9, dec!(50)), 700),
        Rejection::NoSuchLot
    );
    harness.tick(1_000);
    auctioneer(
        &mut harness,
        Action::OpenLot {
            lot: Some(LotIndex(0)),
        },
        1_000,
    )
    .unwrap();
    // 25 + 1.00 = 26: Alice leads on her commission bid.
    assert_eq!(
        (lot_view(&harness, 0).price, lot_view(&harness, 0).leader),
        (Some(usd(dec!(26))), Some(ALICE))
    );
    assert_eq!(
        harness.rejected(Actor::bidder(CAROL), absentee(0, dec!(50)), 1_100),
        Rejection::LotNotPending
    );
    bid(&mut harness, CAROL, dec!(40), 0, 1_200).unwrap();
    assert_eq!(
        (lot_view(&harness, 0).price, lot_view(&harness, 0).leader),
        (Some(usd(dec!(31))), Some(CAROL))
    );
}

#[test]
fn the_absentee_book_is_private_replaceable_and_applied_at_the_opening() {
    // Proves absentee bids compete with nobody while the lot is pending (no price, leader, outbid or bid count), a bidder's new absentee bid replaces theirs up or down but not below the starting price, the opening applies the book as maximums, and the book survives replay and JSON snapshots.
    let mut harness = session(three_lots(), false);
    let absentee = |amount| Action::AbsenteeBid {
        lot: LotIndex(0),
        max_amount: usd(amount),
    };
    let placed = harness
        .apply(Actor::bidder(ALICE), absentee(dec!(30)), 500)
        .unwrap();
    assert!(
        matches!(
            placed.as_slice(),
            [EventKind::AbsenteeBidPlaced { bidder, max_amount, .. }]
                if *bidder == ALICE && *max_amount == usd(dec!(30))
        ),
        "{placed:?}"
    );
    harness.ok(Actor::bidder(BOB), absentee(dec!(25)), 600);
    let pending = lot_view(&harness, 0);
    assert_eq!(
        (
            pending.price,
            pending.leader,
            pending.bid_count,
            pending.bidders
        ),
        (None, None, 0, 0)
    );
    assert_eq!(pending.absentee_bids, 2);
    assert_eq!(
        harness.auction.bid_status(ALICE, Some(LotIndex(0))),
        Some(BidStatus::Absentee)
    );
    // Alice lowers hers below Bob's; below the starting price is refused.
    harness.ok(Actor::bidder(ALICE), absentee(dec!(20)), 700);
    assert_eq!(
        harness.rejected(Actor::bidder(ALICE), absentee(dec!(9.99)), 800),
        Rejection::BidBelowMinimum {
            minimum: usd(dec!(10))
        }
    );
    assert_eq!(
        harness.auction.own_bid(ALICE, Some(LotIndex(0))),
        Some(usd(dec!(20)))
    );
    assert_eq!(
        lot_view(&harness, 0).absentee_bids,
        2,
        "a replacement is not a new bidder"
    );
    harness.assert_replays();
    harness.tick(1_000);
    auctioneer(
        &mut harness,
        Action::OpenLot {
            lot: Some(LotIndex(0)),
        },
        1_000,
    )
    .unwrap();
    // Bob's 25 against Alice's 20: 20 + 0.50 (the increment below 25) = 20.50.
    let open = lot_view(&harness, 0);
    assert_eq!(
        (open.price, open.leader, open.bid_count, open.bidders),
        (Some(usd(dec!(20.50))), Some(BOB), 2, 2)
    );
    assert_eq!(
        harness.rejected(Actor::bidder(ALICE), absentee(dec!(50)), 1_100),
        Rejection::LotNotPending
    );
    bid(&mut harness, CAROL, dec!(30), 0, 1_200).unwrap();
    assert_eq!(
        (
            lot_view(&harness, 0).price,
            lot_view(&harness, 0).leader,
            lot_view(&harness, 0).bid_count
        ),
        (Some(usd(dec!(26))), Some(CAROL), 3)
    );
    auctioneer(&mut harness, Action::UndoLastBid, 1_300).unwrap();
    assert_eq!(
        (
            lot_view(&harness, 0).leader,
            lot_view(&harness, 0).bid_count
        ),
        (Some(BOB), 2)
    );
}

#[test]
fn a_lone_absentee_bid_opens_the_lot_at_the_starting_price() {
    // Proves a single absentee bidder leads from the opening at the starting price, not at their maximum.
    let mut harness = session(three_lots(), false);
    harness.ok(
        Actor::bidder(ALICE),
        Action::AbsenteeBid {
            lot: LotIndex(0),
            max_amount: usd(dec!(50)),
        },
        500,
    );
    harness.tick(1_000);
    auctioneer(&mut harness, Action::OpenLot { lot: None }, 1_000).unwrap();
    let open = lot_view(&harness, 0);
    assert_eq!(
        (open.price, open.leader),
        (Some(usd(dec!(10))), Some(ALICE))
    );
    assert_eq!(
        harness.auction.bid_status(ALICE, Some(LotIndex(0))),
        Some(BidStatus::Winning)
    );
}

#[test]
fn undo_last_bid_restores_the_exact_state_before_it() {
    // Proves undo pops bids newest first back to the state before each, including a leader's own raise.
    let mut harness = session(three_lots(), true);
    harness.tick(1_000);
    bid(&mut harness, ALICE, dec!(10), 0, 1_100).unwrap();
    bid(&mut harness, BOB, dec!(14), 0, 1_200).unwrap();
    let before_raise = lot_view(&harness, 0);
    harness.ok(
        Actor::bidder(BOB),
        Action::SetMaxBid {
            max_amount: usd(dec!(40)),
            lot: None,
        },
        1_300,
    );
    auctioneer(&mut harness, Action::UndoLastBid, 1_400).unwrap();
    assert_eq!(lot_view(&harness, 0).price, before_raise.price);
    assert_eq!(
        harness.auction.own_bid(BOB, Some(LotIndex(0))),
        Some(usd(dec!(14)))
    );
    let events = auctioneer(&mut harness, Action::UndoLastBid, 1_500).unwrap();
    assert!(matches!(
        events[..],
        [EventKind::BidUndone {
            bidder: BOB,
            leader: Some(ALICE),
            ..
        }]
    ));
    assert_eq!(lot_view(&harness, 0).price, Some(usd(dec!(10))));
    auctioneer(&mut harness, Action::UndoLastBid, 1_600).unwrap();
    assert_eq!(lot_view(&harness, 0).price, None);
    assert_eq!(
        auctioneer(&mut harness, Action::UndoLastBid, 1_700),
        Err(Rejection::NothingToUndo)
    );
}

#[test]
fn reopen_a_disputed_hammer() {
    // Proves reopening a sold lot suspends an untouched open lot, keeps the bids, and refuses while another lot has bids.
    let mut harness = session(three_lots(), true);
    harness.tick(1_000);
    bid(&mut harness, ALICE, dec!(10), 0, 1_100).unwrap();
    auctioneer(&mut harness, Action::Hammer, 1_200).unwrap();
    assert_eq!(
        auctioneer(&mut harness, Action::Reopen { lot: LotIndex(2) }, 1_300),
        Err(Rejection::LotNotClosed)
    );
    let events = auctioneer(&mut harness, Action::Reopen { lot: LotIndex(0) }, 1_300).unwrap();
    assert_eq!(
        events,
        vec![EventKind::LotReopened {
            lot: LotIndex(0),
            suspended: Some(LotIndex(1)),
            deadline: at(11_300)
        }]
    );
    assert_eq!(lot_view(&harness, 1).status, LotStatus::Pending);
    assert_eq!(lot_view(&harness, 0).leader, Some(ALICE));
    bid(&mut harness, BOB, dec!(11), 0, 1_400).unwrap();
    let events = auctioneer(&mut harness, Action::Hammer, 1_500).unwrap();
    assert_eq!(
        events[0],
        EventKind::LotSold {
            lot: LotIndex(0),
            winner: BOB,
            price: usd(dec!(10.50)),
            by_countdown: false
        }
    );
    assert_eq!(
        events[1],
        EventKind::LotOpened {
            lot: LotIndex(1),
            deadline: at(11_500),
            opening: Some(LotOpening {
                price: None,
                leader: None,
                minimum_bid: usd(dec!(20)),
            }),
        }
    );
    bid(&mut harness, CAROL, dec!(20), 1, 1_600).unwrap();
    assert_eq!(
        auctioneer(&mut harness, Action::Reopen { lot: LotIndex(0) }, 1_700),
        Err(Rejection::LotInProgress { open: LotIndex(1) })
    );
}

#[test]
fn admin_retraction_on_a_lot() {
    // Proves a lot retraction recomputes that lot's outcome and clears its undo history.
    let mut harness = session(three_lots(), true);
    harness.tick(1_000);
    bid(&mut harness, ALICE, dec!(10), 0, 1_100).unwrap();
    harness.ok(
        Actor::bidder(BOB),
        Action::SetMaxBid {
            max_amount: usd(dec!(30)),
            lot: None,
        },
        1_200,
    );
    let retract = Action::RetractBid {
        bidder: BOB,
        lot: Some(LotIndex(0)),
    };
    assert_eq!(
        harness.rejected(Actor::auctioneer(AUCTIONEER), retract, 1_300),
        Rejection::NotAdmin
    );
    harness.ok(Actor::admin(ADMIN), retract, 1_300);
    assert_eq!(
        (lot_view(&harness, 0).price, lot_view(&harness, 0).leader),
        (Some(usd(dec!(10))), Some(ALICE))
    );
    assert_eq!(
        auctioneer(&mut harness, Action::UndoLastBid, 1_400),
        Err(Rejection::NothingToUndo)
    );
}

#[test]
fn manual_session_needs_the_auctioneer_to_open_each_lot() {
    // Proves without auto-advance nothing opens by itself, OPEN_LOT rules, and the end after the last lot.
    let mut harness = session(vec![LotSpec::new(dec!(1)), LotSpec::new(dec!(1))], false);
    assert_eq!(harness.tick(1_000), vec![EventKind::Opened]);
    assert_eq!(harness.auction.next_deadline(), None);
    auctioneer(
        &mut harness,
        Action::OpenLot {
            lot: Some(LotIndex(1)),
        },
        2_000,
    )
    .unwrap();
    assert_eq!(
        auctioneer(&mut harness, Action::OpenLot { lot: None }, 2_100),
        Err(Rejection::LotInProgress { open: LotIndex(1) })
    );
    auctioneer(&mut harness, Action::Pass, 2_200).unwrap();
    assert_eq!(
        auctioneer(
            &mut harness,
            Action::OpenLot {
                lot: Some(LotIndex(1))
            },
            2_300
        ),
        Err(Rejection::LotNotPending)
    );
    auctioneer(&mut harness, Action::OpenLot { lot: None }, 2_300).unwrap();
    let events = harness.tick(12_300);
    assert_eq!(
        events.last(),
        Some(&EventKind::SessionEnded { lots_sold: 0 })
    );
    assert_eq!(harness.auction.status(), AuctionStatus::Unsold);
}

fn single_lot(lot: LotSpec) -> Harness {
    Harness::new(AuctionSpec {
        start_at: at(1_000),
        ..spec(FormatSpec::Live(LiveSpec::single_lot(lot, 10_000, 60_000)))
    })
}

#[test]
fn a_single_lot_waits_for_its_auctioneer_and_opens_with_its_absentee_bids() {
    // Proves a single lot stays scheduled without a timer, takes absentee bids while pending, and opens (auction and lot together) with the highest absentee leading at the second maximum plus one increment.
    let mut harness = single_lot(LotSpec::new(dec!(10)));
    assert_eq!(harness.auction.next_deadline(), None);
    assert!(harness.tick(50_000).is_empty());
    assert_eq!(harness.auction.status(), AuctionStatus::Scheduled);
    let absentee = |max: Decimal| Action::AbsenteeBid {
        lot: LotIndex(0),
        max_amount: usd(max),
    };
    harness.ok(Actor::bidder(ALICE), absentee(dec!(40)), 50_000);
    harness.ok(Actor::bidder(BOB), absentee(dec!(30)), 50_001);
    // Nothing about the absentee bids is public before the lot opens.
    let pending = lot_view(&harness, 0);
    assert_eq!((pending.price, pending.leader), (None, None));
    assert_eq!(pending.absentee_bids, 2);
    assert_eq!(
        bid(&mut harness, CAROL, dec!(10), 0, 50_002),
        Err(Rejection::AuctionNotOpen)
    );
    let events = auctioneer(&mut harness, Action::OpenLot { lot: None }, 60_000).unwrap();
    assert_eq!(
        events,
        vec![
            EventKind::Opened,
            // The event records the opening position the absentee book set.
            EventKind::LotOpened {
                lot: LotIndex(0),
                deadline: at(70_000),
                opening: Some(LotOpening {
                    price: Some(usd(dec!(31))),
                    leader: Some(ALICE),
                    minimum_bid: usd(dec!(32)),
                }),
            }
        ]
    );
    let open = lot_view(&harness, 0);
    assert_eq!(open.leader, Some(ALICE));
    assert_eq!(open.price, Some(usd(dec!(31))));
    assert_eq!(
        harness.rejected(Actor::bidder(CAROL), absentee(dec!(50)), 60_001),
        Rejection::LotNotPending
    );
    harness.assert_replays();
}

#[test]
fn a_hammer_is_provisional_until_finalised_by_timer_or_command() {
    // Proves the hammer leaves the auction open with a finalise deadline 60 s later, a reopen resumes bidding from before the hammer, and finalising (by the timer or the command) closes the auction sold at the hammer price, after which a reopen is refused as final.
    let mut harness = single_lot(LotSpec::new(dec!(10)));
    auctioneer(&mut harness, Action::OpenLot { lot: None }, 2_000).unwrap();
    bid(&mut harness, ALICE, dec!(10), 0, 3_000).unwrap();
    bid(&mut harness, BOB, dec!(20), 0, 4_000).unwrap();
    auctioneer(&mut harness, Action::Hammer, 5_000).unwrap();
    assert_eq!(harness.auction.status(), AuctionStatus::Open);
    assert_eq!(lot_view(&harness, 0).finalize_at, Some(at(65_000)));
    assert_eq!(harness.auction.next_deadline(), Some(at(65_000)));
    assert_eq!(
        harness.auction.bid_status(BOB, None),
        Some(BidStatus::Winning)
    );
    // A floor dispute: reopen, a higher bid, hammer again.
    auctioneer(&mut harness, Action::Reopen { lot: LotIndex(0) }, 6_000).unwrap();
    assert_eq!(lot_view(&harness, 0).finalize_at, None);
    assert_eq!(harness.auction.next_deadline(), Some(at(16_000)));
    bid(&mut harness, ALICE, dec!(25), 0, 7_000).unwrap();
    auctioneer(&mut harness, Action::Hammer, 8_000).unwrap();
    // The timer finalises: closed, sold to Alice at Bob's 20 + 0.50.
    let events = harness.tick(68_000);
    assert_eq!(
        events,
        vec![EventKind::Sold {
            winner: ALICE,
            price: usd(dec!(20.50)),
            buy_it_now: None
        }]
    );
    assert_eq!(harness.auction.status(), AuctionStatus::Closed);
    assert_eq!(
        harness.auction.bid_status(ALICE, None),
        Some(BidStatus::Won)
    );
    assert_eq!(harness.auction.next_deadline(), None);
    assert_eq!(
        auctioneer(&mut harness, Action::Reopen { lot: LotIndex(0) }, 69_000),
        Err(Rejection::LotFinal)
    );
    assert_eq!(
        auctioneer(&mut harness, Action::FinalizeLot, 69_000),
        Err(Rejection::LotFinal)
    );
    harness.assert_replays();

    // The command finalises early; a pass ends unsold with the reason passed.
    let mut passed = single_lot(LotSpec::new(dec!(10)));
    auctioneer(&mut passed, Action::OpenLot { lot: None }, 2_000).unwrap();
    assert_eq!(
        auctioneer(&mut passed, Action::FinalizeLot, 2_500),
        Err(Rejection::LotNotClosed)
    );
    auctioneer(&mut passed, Action::Pass, 3_000).unwrap();
    assert_eq!(
        passed.ok(Actor::SYSTEM, Action::FinalizeLot, 4_000),
        vec![EventKind::Unsold {
            reason: UnsoldReason::Passed
        }]
    );
    assert_eq!(passed.auction.status(), AuctionStatus::Unsold);
    passed.assert_replays();
}

#[test]
fn fair_warning_and_undo_restart_the_countdown_and_the_countdown_passes_provisionally() {
    // Proves fair warning and undo give a full countdown again, and a countdown that runs out with no bid passes the lot provisionally (NO_BIDS), final 60 s later.
    let mut harness = single_lot(LotSpec::new(dec!(10)));
    auctioneer(&mut harness, Action::OpenLot { lot: None }, 2_000).unwrap();
    bid(&mut harness, ALICE, dec!(10), 0, 3_000).unwrap();
    auctioneer(&mut harness, Action::FairWarning, 9_000).unwrap();
    assert_eq!(harness.auction.next_deadline(), Some(at(19_000)));
    auctioneer(&mut harness, Action::UndoLastBid, 10_000).unwrap();
    assert_eq!(harness.auction.next_deadline(), Some(at(20_000)));
    assert_eq!(lot_view(&harness, 0).leader, None);
    assert_eq!(
        auctioneer(&mut harness, Action::UndoLastBid, 10_001),
        Err(Rejection::NothingToUndo)
    );
    let events = harness.tick(20_000);
    assert_eq!(
        events,
        vec![EventKind::LotPassed {
            lot: LotIndex(0),
            reason: UnsoldReason::NoBids
        }]
    );
    assert_eq!(harness.auction.status(), AuctionStatus::Open);
    assert_eq!(
        harness.tick(80_000),
        vec![EventKind::Unsold {
            reason: UnsoldReason::NoBids
        }]
    );
    harness.assert_replays();
}

#[test]
fn single_lot_specs_are_checked() {
    // Proves a single-lot spec needs exactly one lot, no auto-advance and a bounded finalise delay.
    let two = LiveSpec {
        lots: vec![LotSpec::new(dec!(1)), LotSpec::new(dec!(1))],
        ..LiveSpec::single_lot(LotSpec::new(dec!(1)), 10_000, 60_000)
    };
    let zero = LiveSpec::single_lot(LotSpec::new(dec!(1)), 10_000, 0);
    for live in [two, zero] {
        let error = Auction::new(spec(FormatSpec::Live(live))).unwrap_err();
        assert_eq!(error.reason(), "INVALID_SINGLE_LOT");
    }
}

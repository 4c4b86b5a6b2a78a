//! Soft close (anti-sniping): a bid accepted in the last N ms moves the end to the
//! bid's time + M ms, within an optional cap, each extension an event.

use auction_engine::*;
use rust_decimal_macros::dec;

use crate::support::*;

fn soft(window_ms: i64, extension_ms: i64, cap_ms: Option<i64>) -> EnglishSpec {
    EnglishSpec {
        soft_close: Some(SoftClose {
            window_ms,
            extension_ms,
            max_total_extension_ms: cap_ms,
        }),
        ..english(dec!(1.00))
    }
}

#[test]
fn defaults_are_thirty_and_sixty_seconds() {
    // Proves the defaults for N and M.
    assert_eq!(
        SoftClose::default(),
        SoftClose {
            window_ms: 30_000,
            extension_ms: 60_000,
            max_total_extension_ms: None
        }
    );
    assert_eq!(
        EnglishSpec::new(dec!(1), at(10)).soft_close,
        Some(SoftClose::default())
    );
}

#[test]
fn window_boundaries() {
    // Proves a bid exactly N before the end extends, one ms earlier does not, and the new end is bid time + M.
    let table = [
        (69_999, None),
        (70_000, Some(130_000)),
        (99_999, Some(159_999)),
    ];
    for (bid_ms, expected_end) in table {
        let mut harness = Harness::english(soft(30_000, 60_000, None));
        let events = harness.bid(ALICE, dec!(1), bid_ms).unwrap();
        match expected_end {
            None => assert_eq!(events.len(), 1, "bid at {bid_ms}"),
            Some(end_ms) => {
                assert_eq!(
                    events.last(),
                    Some(&EventKind::Extended {
                        end_at: at(end_ms),
                        total_extension_ms: end_ms - 100_000
                    })
                );
                assert_eq!(harness.auction.status(), AuctionStatus::Extended);
                assert_eq!(harness.auction.next_deadline(), Some(at(end_ms)));
            }
        }
    }
}

#[test]
fn a_short_extension_that_would_not_move_the_end_is_no_extension() {
    // Proves M < remaining time leaves the end alone (the end never moves earlier).
    let mut harness = Harness::english(soft(30_000, 5_000, None));
    assert_eq!(harness.bid(ALICE, dec!(1), 80_000).unwrap().len(), 1);
    assert_eq!(harness.auction.next_deadline(), Some(at(100_000)));
    assert!(
        matches!(harness.bid(BOB, dec!(2), 96_000).unwrap()[..], [_, EventKind::Extended { end_at, .. }] if end_at == at(101_000))
    );
}

#[test]
fn repeated_extensions_stop_at_the_cap() {
    // Proves the total extension never passes the cap, and once there no further Extended events come.
    let mut harness = Harness::english(soft(30_000, 60_000, Some(90_000)));
    let mut ends = Vec::new();
    for (bidder, amount, now) in [
        (ALICE, dec!(1), 99_000),
        (BOB, dec!(2), 158_000),
        (ALICE, dec!(3), 189_000),
    ] {
        let events = harness.bid(bidder, amount, now).unwrap();
        if let Some(EventKind::Extended {
            end_at,
            total_extension_ms,
        }) = events.last().copied()
        {
            assert!(total_extension_ms <= 90_000);
            ends.push(end_at.unix_ms());
        }
    }
    // 159,000 = 99,000 + 60,000; the second would be 218,000 but the cap holds it at
    // 190,000; the third cannot move it further.
    assert_eq!(ends, vec![159_000, 190_000]);
    assert_eq!(harness.auction.next_deadline(), Some(at(190_000)));
    assert_eq!(harness.tick(190_000).len(), 1);
    assert_eq!(harness.auction.status(), AuctionStatus::Closed);
}

#[test]
fn nothing_is_accepted_after_the_extended_end() {
    // Proves the close follows the moved end, and late bids are refused.
    let mut harness = Harness::english(soft(30_000, 60_000, None));
    harness.bid(ALICE, dec!(1), 90_000).unwrap();
    assert!(harness.tick(149_999).is_empty());
    harness.bid(BOB, dec!(2), 149_999).unwrap();
    assert_eq!(harness.tick(209_998), vec![]);
    assert_eq!(harness.tick(209_999).len(), 1);
    assert_eq!(
        harness.bid(ALICE, dec!(5), 210_001),
        Err(Rejection::AuctionClosed)
    );
}

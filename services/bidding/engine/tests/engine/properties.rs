//! Property tests: random auctions, compared step by step with the reference model
//! (accept or reject with the same reason, same price and leader, same status and
//! end), plus the invariants: the price never exceeds the winner's maximum,
//! the visible English price never decreases (except by admin retraction), the
//! winner holds the highest maximum (earliest on ties), no winner below the
//! reserve, the seller never wins, and replaying the events rebuilds the state.

use auction_engine::*;
use proptest::prelude::*;
use rust_decimal::Decimal;

use crate::scenario::{Amount, Op, run_dutch, run_english, run_sealed};
use crate::support::{SELLER, at};

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        8 => (0u32..3_000).prop_map(Amount::AboveMinimum),
        3 => (0u32..20).prop_map(Amount::AboveMinimum),
        2 => (1u32..300).prop_map(Amount::BelowMinimum),
        1 => (1u32..100_000).prop_map(Amount::Cents),
        1 => Just(Amount::SubCent),
        1 => Just(Amount::Zero),
    ]
}

fn common_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..4_000).prop_map(Op::Advance),
        1 => (0i64..200_000).prop_map(Op::Advance),
        1 => (0u8..12).prop_map(|by| Op::Cancel { by: if by == 0 { 0 } else if by == 1 { 1 } else { 2 } }),
        1 => (1u8..5).prop_map(|who| Op::WrongCurrency { who }),
        2 => (0u8..5, any::<bool>()).prop_map(|(who, by_admin)| Op::Retract { who, by_admin, lot: None }),
    ]
}

fn english_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => common_op(),
        14 => (0u8..5, any::<bool>(), amount()).prop_map(|(who, plain, amount)| Op::Bid { who, plain, amount, lot: None }),
        1 => (0u8..5, any::<bool>()).prop_map(|(who, exact)| Op::BuyItNow { who, exact }),
    ]
}

fn cents(value: i64) -> Decimal {
    Decimal::new(value, 2)
}

fn english_spec() -> impl Strategy<Value = AuctionSpec> {
    (
        1i64..5_000,
        proptest::option::of(0i64..20_000),
        proptest::option::of(0i64..20_000),
        proptest::option::of((
            1i64..40_000,
            1i64..80_000,
            proptest::option::of(0i64..100_000),
        )),
        1_000i64..120_000,
        0i64..2_000,
        any::<bool>(),
    )
        .prop_map(
            |(start, reserve, buy_it_now, soft_close, duration_ms, start_ms, flat)| {
                let reserve = reserve.map(|extra| cents(start + extra));
                let floor = reserve.unwrap_or(cents(start));
                AuctionSpec {
                    auction_id: AuctionId(1),
                    seller: SELLER,
                    currency: Currency::USD,
                    start_at: at(start_ms),
                    format: FormatSpec::English(EnglishSpec {
                        starting_price: cents(start),
                        reserve_price: reserve,
                        buy_it_now_price: buy_it_now.map(|extra| floor + cents(extra)),
                        increments: if flat {
                            IncrementTable::flat(cents(10))
                        } else {
                            IncrementTable::ebay_us()
                        },
                        end_at: at(start_ms + duration_ms),
                        soft_close: soft_close.map(
                            |(window_ms, extension_ms, max_total_extension_ms)| SoftClose {
                                window_ms,
                                extension_ms,
                                max_total_extension_ms,
                            },
                        ),
                    }),
                }
            },
        )
}

fn sealed_spec() -> impl Strategy<Value = AuctionSpec> {
    (
        1i64..5_000,
        proptest::option::of(0i64..5_000),
        100i64..20_000,
        any::<bool>(),
    )
        .prop_map(|(start, reserve, duration_ms, second)| AuctionSpec {
            auction_id: AuctionId(2),
            seller: SELLER,
            currency: Currency::USD,
            start_at: at(100),
            format: FormatSpec::Sealed(SealedSpec {
                pricing: if second {
                    SealedPricing::SecondPrice
                } else {
                    SealedPricing::FirstPrice
                },
                starting_price: cents(start),
                reserve_price: reserve.map(|extra| cents(start + extra)),
                end_at: at(100 + duration_ms),
            }),
        })
}

fn sealed_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => common_op(),
        10 => (0u8..6, amount(), proptest::option::of(-5i64..20_000)).prop_map(|(who, amount, ttl_ms)| Op::SealedBid { who, amount, ttl_ms }),
        2 => (0u8..6).prop_map(|who| Op::Withdraw { who }),
    ]
}

fn dutch_spec() -> impl Strategy<Value = AuctionSpec> {
    (100i64..10_000, 1i64..500, 1i64..3_000, 1u32..6, 0i64..100).prop_map(
        |(start, step, tick_ms, quantity, floor_share)| {
            let floor = (start * floor_share / 100).max(1).min(start - 1);
            AuctionSpec {
                auction_id: AuctionId(3),
                seller: SELLER,
                currency: Currency::USD,
                start_at: at(1_000),
                format: FormatSpec::Dutch(DutchSpec {
                    start_price: cents(start),
                    price_step: cents(step),
                    tick_interval_ms: tick_ms,
                    floor_price: cents(floor),
                    quantity,
                }),
            }
        },
    )
}

fn dutch_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..5_000).prop_map(Op::Advance),
        1 => (0i64..500_000).prop_map(Op::Advance),
        1 => (0u8..8).prop_map(|by| Op::Cancel { by }),
        6 => (0u8..5, 0u32..4, prop_oneof![Just(Amount::AboveMinimum(0)), (0u32..500).prop_map(Amount::AboveMinimum), (1u32..50).prop_map(Amount::BelowMinimum)])
            .prop_map(|(who, quantity, amount)| Op::Accept { who, quantity, amount }),
        1 => (1u8..5).prop_map(|who| Op::WrongCurrency { who }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn english_matches_the_reference_model(spec in english_spec(), ops in proptest::collection::vec(english_op(), 1..80)) {
        // Proves the English engine agrees with the reference on every step and upholds the invariants.
        if let Err(failure) = run_english(spec, &ops) {
            return Err(TestCaseError::fail(failure));
        }
    }

    #[test]
    fn sealed_matches_the_reference_model(spec in sealed_spec(), ops in proptest::collection::vec(sealed_op(), 1..60)) {
        // Proves the sealed-bid engine agrees with the reference on every step and on the outcome.
        if let Err(failure) = run_sealed(spec, &ops) {
            return Err(TestCaseError::fail(failure));
        }
    }

    #[test]
    fn dutch_matches_the_reference_model(spec in dutch_spec(), ops in proptest::collection::vec(dutch_op(), 1..60)) {
        // Proves the Dutch engine agrees with the reference clock and sales on every step.
        if let Err(failure) = run_dutch(spec, &ops) {
            return Err(TestCaseError::fail(failure));
        }
    }
}

/// One absentee placement: who, and how many cents above (or, when
/// `below`, under) the starting price.
#[derive(Clone, Copy, Debug)]
struct Placement {
    who: u8,
    cents: i64,
    below: bool,
}

fn placement() -> impl Strategy<Value = Placement> {
    (0u8..5, 0i64..5_000, prop::bool::weighted(0.1)).prop_map(|(who, cents, below)| Placement {
        who,
        cents,
        below,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_absentee_book_opens_like_the_reference(
        start_cents in 100i64..5_000,
        reserve_cents in proptest::option::of(0i64..6_000),
        placements in proptest::collection::vec(placement(), 0..20),
    ) {
        // Proves, for any absentee placements (replacements up and down included), that nothing is public before the opening and that the opening leads with the highest latest maximum (earliest on ties) at min(its max, second + increment), at least the starting price, lifted to a met reserve.
        use crate::support::{AUCTIONEER, Harness, spec, usd};
        let starting_price = cents(start_cents);
        let reserve_price = reserve_cents.map(|extra| cents(start_cents + extra));
        let lot = LotSpec { reserve_price, ..LotSpec::new(starting_price) };
        let mut harness = Harness::new(AuctionSpec {
            start_at: at(1_000),
            ..spec(FormatSpec::Live(LiveSpec::single_lot(lot.clone(), 10_000, 60_000)))
        });
        // Each bidder's latest maximum and the order it was placed in.
        let mut book: Vec<(UserId, Decimal, usize)> = Vec::new();
        for (index, placement) in placements.iter().enumerate() {
            let bidder = UserId(10 + u128::from(placement.who));
            let amount = if placement.below {
                starting_price - cents(1 + placement.cents % 99)
            } else {
                starting_price + cents(placement.cents)
            };
            let now_ms = 100 + i64::try_from(index).unwrap();
            let result = harness.apply(
                Actor::bidder(bidder),
                Action::AbsenteeBid { lot: LotIndex(0), max_amount: usd(amount) },
                now_ms,
            );
            if placement.below {
                prop_assert_eq!(result, Err(Rejection::BidBelowMinimum { minimum: usd(starting_price) }));
                continue;
            }
            prop_assert!(result.is_ok(), "{:?}", result);
            book.retain(|(other, _, _)| *other != bidder);
            book.push((bidder, amount, index));
        }
        let lot_view = |harness: &Harness| match harness.auction.view().format {
            FormatView::Live { lots, .. } => lots[0].clone(),
            other => panic!("not live: {other:?}"),
        };
        let pending = lot_view(&harness);
        prop_assert_eq!((pending.price, pending.leader, pending.bid_count), (None, None, 0));
        prop_assert_eq!(pending.absentee_bids as usize, book.len());
        let opened = harness.apply(Actor::auctioneer(AUCTIONEER), Action::OpenLot { lot: None }, 1_000);
        prop_assert!(opened.is_ok(), "{:?}", opened);
        // The reference: best maximum first, earlier placement first on ties.
        book.sort_by(|left, right| right.1.cmp(&left.1).then(left.2.cmp(&right.2)));
        let expected = book.first().map(|&(leader, leader_max, _)| {
            let price = match book.get(1) {
                None => starting_price,
                Some(&(_, second, _)) => {
                    let contested = second + lot.increments.increment_at(second);
                    leader_max.min(contested.max(starting_price))
                }
            };
            let price = match reserve_price {
                Some(reserve) if leader_max >= reserve => price.max(reserve),
                Some(_) | None => price,
            };
            (leader, price)
        });
        let open = lot_view(&harness);
        prop_assert_eq!(
            open.leader.zip(open.price.map(|price| price.amount)),
            expected
        );
        prop_assert_eq!(open.bid_count as usize, book.len());
        prop_assert_eq!(open.bidders as usize, book.len());
    }
}

//! Throughput of one hot English auction: 10,000 pre-generated commands from
//! competing bidders applied to a fresh auction per iteration, reported as
//! commands per second (`Throughput::Elements`). Run with
//! `cargo bench -p auction-engine --bench engine`.

// A benchmark fails loudly on a broken setup rather than measuring nonsense.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use auction_engine::*;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rust_decimal::Decimal;

const COMMANDS: usize = 10_000;
const BIDDERS: u128 = 4;

fn fresh_auction() -> Auction {
    let spec = AuctionSpec {
        auction_id: AuctionId(1),
        seller: UserId(1),
        currency: Currency::USD,
        start_at: Timestamp::from_unix_ms(0),
        format: FormatSpec::English(EnglishSpec {
            reserve_price: Some(Decimal::new(50_000, 2)),
            ..EnglishSpec::new(
                Decimal::new(1_00, 2),
                Timestamp::from_unix_ms(1_000_000_000),
            )
        }),
    };
    let mut auction = Auction::new(spec).expect("valid spec");
    let mut events = Vec::new();
    let now = Timestamp::from_unix_ms(0);
    auction
        .apply(Command::tick(now), now, &mut events)
        .expect("opens");
    auction
}

/// Commands that are all accepted when applied in order to `fresh_auction()`: each
/// comes from a bidder other than the leader, at or above the minimum, with a
/// maximum that sometimes takes the lead and sometimes only pushes the price up.
fn competing_commands(plain: bool) -> Vec<(Command, Timestamp)> {
    let mut scratch = fresh_auction();
    let mut events = Vec::with_capacity(4 * COMMANDS);
    let mut commands = Vec::with_capacity(COMMANDS);
    for index in 0..COMMANDS {
        let view = scratch.view();
        let FormatView::English {
            minimum_bid,
            leader,
            ..
        } = view.format
        else {
            unreachable!()
        };
        let leader = leader.map_or(0, |leader| leader.0 - 10);
        let bidder = UserId(10 + (leader + 1 + index as u128 % (BIDDERS - 1)) % BIDDERS);
        let amount = if plain {
            minimum_bid
        } else {
            // Up to 30 minimum increments above the minimum, spread so that about half the
            // bids out-bid the leader's maximum.
            let extra = Decimal::new((index as i64 * 7_919) % 3_000, 2);
            Money::new(minimum_bid.amount + extra, minimum_bid.currency)
        };
        let now = Timestamp::from_unix_ms(1 + index as i64);
        let action = if plain {
            Action::PlaceBid { amount, lot: None }
        } else {
            Action::SetMaxBid {
                max_amount: amount,
                lot: None,
            }
        };
        let command = Command {
            request_id: RequestId(index as u128),
            actor: Actor::bidder(bidder),
            received_at: now,
            action,
        };
        scratch
            .apply(command, now, &mut events)
            .expect("every generated command is accepted");
        commands.push((command, now));
    }
    commands
}

fn bench_hot_english(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("hot_english_auction");
    group.throughput(Throughput::Elements(COMMANDS as u64));
    for (name, plain) in [("competing_max_bids", false), ("plain_bids", true)] {
        let commands = competing_commands(plain);
        let prototype = fresh_auction();
        // The shard reuses one event buffer, cleared after each batch is persisted.
        let mut events = Vec::with_capacity(4 * COMMANDS);
        group.bench_function(name, |bencher| {
            bencher.iter_batched(
                || prototype.clone(),
                |mut auction| {
                    events.clear();
                    for &(command, now) in &commands {
                        let outcome = auction.apply(command, now, &mut events);
                        black_box(&outcome);
                    }
                    auction
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench_hot_english);
criterion_main!(benches);

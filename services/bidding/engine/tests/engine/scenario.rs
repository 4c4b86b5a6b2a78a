//! Random scenarios shared by the property tests and the simulator: a list of
//! operations is turned into commands, driven through the engine like the shard
//! drives it (tick first, then the command), and checked after every step against
//! the reference model and the invariants of the issue.

use auction_engine::*;
use rust_decimal::Decimal;

use crate::reference::{RefDutch, RefEnglish, RefSealed, RefStatus};
use crate::support::{ADMIN, AUCTIONEER, SELLER, assert_replays};

/// Index 0 is the seller; 1.. are bidders.
pub fn user(who: u8) -> UserId {
    if who == 0 {
        SELLER
    } else {
        UserId(10 + u128::from(who))
    }
}

/// How to choose an amount: relative to what the reference says is acceptable, so
/// that random runs are mostly accepted bids, with a share of near misses.
#[derive(Clone, Copy, Debug)]
pub enum Amount {
    AboveMinimum(u32),
    BelowMinimum(u32),
    Cents(u32),
    SubCent,
    Zero,
}

#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// Move the clock forward (large values are clock jumps).
    Advance(i64),
    Bid {
        who: u8,
        plain: bool,
        amount: Amount,
        lot: Option<u32>,
    },
    Retract {
        who: u8,
        by_admin: bool,
        lot: Option<u32>,
    },
    BuyItNow {
        who: u8,
        exact: bool,
    },
    Cancel {
        by: u8,
    },
    WrongCurrency {
        who: u8,
    },
    SealedBid {
        who: u8,
        amount: Amount,
        ttl_ms: Option<i64>,
    },
    Withdraw {
        who: u8,
    },
    Accept {
        who: u8,
        quantity: u32,
        amount: Amount,
    },
    Absentee {
        who: u8,
        lot: u32,
        amount: Amount,
    },
    /// 0 open next, 1 fair warning, 2 hammer, 3 pass, 4 reopen, 5 undo, 6 open a named lot.
    Auctioneer {
        what: u8,
        lot: u32,
    },
}

fn resolve(amount: Amount, minimum: Decimal) -> Decimal {
    let cents = |value: u32| Decimal::new(i64::from(value), 2);
    match amount {
        Amount::AboveMinimum(extra) => minimum + cents(extra),
        Amount::BelowMinimum(less) => (minimum - cents(less.max(1))).max(Decimal::new(1, 2)),
        Amount::Cents(value) => cents(value.max(1)),
        Amount::SubCent => minimum + Decimal::new(1, 3),
        Amount::Zero => Decimal::ZERO,
    }
}

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

/// Drives one auction and checks the invariants that hold for every format.
pub struct Driver {
    pub auction: Auction,
    pub events: Vec<Event>,
    pub now_ms: i64,
    request: u128,
}

pub type Checked<T> = Result<T, String>;

thread_local! {
    /// Accepted and rejected non-tick commands on this thread, so the simulator can
    /// prove its random runs mostly exercise accepted paths rather than refusals.
    pub static COMMAND_COUNTS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

impl Driver {
    pub fn new(spec: AuctionSpec) -> Driver {
        let now_ms = spec.start_at.unix_ms() - 1;
        Driver {
            auction: Auction::new(spec).unwrap(),
            events: Vec::new(),
            now_ms: now_ms.max(0),
            request: 1,
        }
    }

    fn check_new_events(&self, from: usize) -> Checked<()> {
        for index in from..self.events.len() {
            let event = &self.events[index];
            ensure!(
                event.seq == index as u64,
                "event {index} has seq {}",
                event.seq
            );
            ensure!(
                event.at.unix_ms() <= self.now_ms,
                "event {index} is in the future"
            );
            if index > 0 {
                ensure!(
                    self.events[index - 1].at <= event.at,
                    "event {index} goes back in time"
                );
            }
            match event.kind {
                EventKind::Sold { winner, .. } | EventKind::LotSold { winner, .. } => {
                    ensure!(winner != SELLER, "the seller won: {event:?}");
                }
                EventKind::UnitsSold { buyer, .. } => ensure!(buyer != SELLER, "the seller bought"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Ticks at the current time, then applies `action` by `actor`.
    pub fn step(&mut self, actor: Actor, action: Action) -> Checked<Result<(), Rejection>> {
        let now = Timestamp::from_unix_ms(self.now_ms);
        let before = self.events.len();
        self.auction
            .apply(Command::tick(now), now, &mut self.events)
            .map_err(|rejection| format!("tick rejected: {rejection:?}"))?;
        ensure!(
            self.auction
                .next_deadline()
                .is_none_or(|deadline| deadline > now),
            "a deadline is still due after a tick"
        );
        let finished = self.auction.status().is_finished();
        let snapshot = self.auction.clone();
        let after_tick = self.events.len();
        let command = Command {
            request_id: RequestId(self.request),
            actor,
            received_at: now,
            action,
        };
        self.request += 1;
        let result = self
            .auction
            .apply(command, now, &mut self.events)
            .map(|_| ());
        if action != Action::Tick {
            COMMAND_COUNTS.with(|counts| {
                let (accepted, rejected) = counts.get();
                counts.set(if result.is_ok() {
                    (accepted + 1, rejected)
                } else {
                    (accepted, rejected + 1)
                });
            });
        }
        match result {
            Ok(()) => ensure!(
                !finished || action == Action::Tick,
                "{action:?} accepted after the auction finished"
            ),
            Err(rejection) => {
                ensure!(
                    self.auction == snapshot,
                    "rejected {action:?} ({rejection:?}) changed the auction"
                );
                ensure!(
                    self.events.len() == after_tick,
                    "rejected {action:?} pushed events"
                );
            }
        }
        self.check_new_events(before)?;
        Ok(result)
    }

    pub fn finish(&mut self, far_ms: i64) -> Checked<()> {
        self.now_ms += far_ms;
        self.step(Actor::SYSTEM, Action::Tick)?
            .map_err(|rejection| format!("final tick rejected: {rejection:?}"))?;
        assert_replays(&self.auction, &self.events);
        Ok(())
    }
}

fn cancel_actor(by: u8) -> Actor {
    match by % 3 {
        0 => Actor::seller(SELLER),
        1 => Actor::admin(ADMIN),
        _ => Actor::bidder(user(1)),
    }
}

fn english_view(auction: &Auction) -> (Option<Decimal>, Option<UserId>, Timestamp) {
    match auction.view().format {
        FormatView::English {
            price,
            leader,
            end_at,
            ..
        } => (price.map(|price| price.amount), leader, end_at),
        _ => unreachable!(),
    }
}

/// An English auction against [`RefEnglish`].
pub fn run_english(spec: AuctionSpec, ops: &[Op]) -> Checked<()> {
    let seller = spec.seller;
    let FormatSpec::English(english) = &spec.format else {
        unreachable!()
    };
    let english = english.clone();
    let mut reference = RefEnglish::new(&spec);
    let mut driver = Driver::new(spec);
    let mut last_price: Option<Decimal> = None;
    for (index, op) in ops.iter().enumerate() {
        let (actor, action) = match *op {
            Op::Advance(ms) => {
                driver.now_ms += ms;
                (Actor::SYSTEM, Action::Tick)
            }
            Op::Bid {
                who, plain, amount, ..
            } => {
                let amount = usd(resolve(amount, reference.minimum_for(user(who))));
                let action = if plain {
                    Action::PlaceBid { amount, lot: None }
                } else {
                    Action::SetMaxBid {
                        max_amount: amount,
                        lot: None,
                    }
                };
                (Actor::bidder(user(who)), action)
            }
            Op::Retract { who, by_admin, .. } => {
                let actor = if by_admin {
                    Actor::admin(ADMIN)
                } else {
                    Actor::bidder(user(1))
                };
                (
                    actor,
                    Action::RetractBid {
                        bidder: user(who),
                        lot: None,
                    },
                )
            }
            Op::BuyItNow { who, exact } => {
                let price = english.buy_it_now_price.unwrap_or(Decimal::ONE)
                    + if exact { Decimal::ZERO } else { Decimal::ONE };
                (
                    Actor::bidder(user(who)),
                    Action::BuyItNow { price: usd(price) },
                )
            }
            Op::Cancel { by } => (cancel_actor(by), Action::Cancel),
            Op::WrongCurrency { who } => (
                Actor::bidder(user(who)),
                Action::PlaceBid {
                    amount: Money::new(Decimal::TEN, Currency::EUR),
                    lot: None,
                },
            ),
            _ => (Actor::bidder(user(1)), Action::WithdrawSealedBid),
        };
        let expected = reference.apply(
            &Command {
                request_id: RequestId(0),
                actor,
                received_at: Timestamp::EPOCH,
                action,
            },
            driver.now_ms,
        );
        let got = driver.step(actor, action)?;
        let got_reason = got.map_err(|rejection| rejection.reason());
        ensure!(
            got_reason == expected,
            "op {index} {op:?}: engine {got_reason:?}, reference {expected:?}"
        );
        ensure!(
            reference.status.matches(driver.auction.status()),
            "op {index}: status {:?} vs reference {:?}",
            driver.auction.status(),
            reference.status
        );
        let outcome = reference.outcome();
        let (price, leader, end_at) = english_view(&driver.auction);
        ensure!(
            (price, leader) == (outcome.price, outcome.leader),
            "op {index} {op:?}: engine {:?}, reference {:?}",
            (price, leader),
            (outcome.price, outcome.leader)
        );
        ensure!(
            end_at.unix_ms() == reference.end_ms,
            "op {index}: end {end_at} vs reference {}",
            reference.end_ms
        );
        // The price never exceeds the leader's maximum and never decreases, except
        // by an admin retraction.
        if let (Some(price), Some(leader)) = (price, leader) {
            let leader_max = driver.auction.own_bid(leader, None).map(|max| max.amount);
            ensure!(
                Some(price) <= leader_max,
                "op {index}: price {price} above the leader's maximum {leader_max:?}"
            );
        }
        let retracted = matches!(action, Action::RetractBid { .. }) && got_reason.is_ok();
        ensure!(
            retracted || price >= last_price || price.is_none() && last_price.is_none(),
            "op {index}: price fell from {last_price:?} to {price:?}"
        );
        last_price = price;
    }
    driver.finish(10_000_000)?;
    reference
        .apply(
            &Command::tick(Timestamp::from_unix_ms(driver.now_ms)),
            driver.now_ms,
        )
        .ok();
    ensure!(
        reference.status.matches(driver.auction.status()),
        "final status {:?} vs {:?}",
        driver.auction.status(),
        reference.status
    );
    if let FormatView::English {
        winner,
        final_price,
        ..
    } = driver.auction.view().format
    {
        let expected = match reference.status {
            RefStatus::Sold { winner, price } => (Some(winner), Some(price)),
            _ => (None, None),
        };
        ensure!(
            (winner, final_price.map(|price| price.amount)) == expected,
            "final outcome {winner:?} {final_price:?} vs {expected:?}"
        );
        if let (Some(winner), Some(price)) = (winner, final_price) {
            ensure!(winner != seller, "the seller won");
            let bought_now = driver.events.iter().any(|event| {
                matches!(
                    event.kind,
                    EventKind::Sold {
                        buy_it_now: Some(_),
                        ..
                    }
                )
            });
            if !bought_now {
                let outcome = reference.outcome();
                let winner_max = outcome.max_of(winner).unwrap_or_default();
                ensure!(
                    price.amount <= winner_max,
                    "price {price} above the winner's maximum {winner_max}"
                );
                // The winner holds the highest maximum, the earliest on ties.
                let mut sorted = outcome.maxes.clone();
                sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
                ensure!(
                    sorted.first().map(|entry| entry.0) == Some(winner),
                    "winner {winner:?} does not hold the best maximum {sorted:?}"
                );
                if let Some(reserve) = english.reserve_price {
                    ensure!(
                        price.amount >= reserve && winner_max >= reserve,
                        "sold below the reserve"
                    );
                }
            }
        }
    }
    Ok(())
}

/// A sealed-bid auction against [`RefSealed`].
pub fn run_sealed(spec: AuctionSpec, ops: &[Op]) -> Checked<()> {
    let FormatSpec::Sealed(sealed) = &spec.format else {
        unreachable!()
    };
    let starting_price = sealed.starting_price;
    let reserve = sealed.reserve_price;
    let mut reference = RefSealed::new(&spec);
    let mut driver = Driver::new(spec);
    for (index, op) in ops.iter().enumerate() {
        let (actor, action) = match *op {
            Op::Advance(ms) => {
                driver.now_ms += ms;
                (Actor::SYSTEM, Action::Tick)
            }
            Op::SealedBid {
                who,
                amount,
                ttl_ms,
            } => (
                Actor::bidder(user(who)),
                Action::PlaceSealedBid {
                    amount: usd(resolve(amount, starting_price)),
                    ttl_ms,
                },
            ),
            Op::Withdraw { who } => (Actor::bidder(user(who)), Action::WithdrawSealedBid),
            Op::Retract { who, by_admin, .. } => {
                let actor = if by_admin {
                    Actor::admin(ADMIN)
                } else {
                    Actor::bidder(user(1))
                };
                (
                    actor,
                    Action::RetractBid {
                        bidder: user(who),
                        lot: None,
                    },
                )
            }
            Op::Cancel { by } => (cancel_actor(by), Action::Cancel),
            Op::WrongCurrency { who } => (
                Actor::bidder(user(who)),
                Action::PlaceSealedBid {
                    amount: Money::new(Decimal::TEN, Currency::EUR),
                    ttl_ms: None,
                },
            ),
            _ => (
                Actor::bidder(user(1)),
                Action::DutchAccept {
                    quantity: 1,
                    max_unit_price: usd(Decimal::ONE),
                },
            ),
        };
        let expected = reference.apply(
            &Command {
                request_id: RequestId(0),
                actor,
                received_at: Timestamp::EPOCH,
                action,
            },
            driver.now_ms,
        );
        let got = driver
            .step(actor, action)?
            .map_err(|rejection| rejection.reason());
        ensure!(
            got == expected,
            "op {index} {op:?}: engine {got:?}, reference {expected:?}"
        );
        ensure!(
            reference.status.matches(driver.auction.status()),
            "op {index}: status {:?} vs {:?}",
            driver.auction.status(),
            reference.status
        );
        // Nothing about amounts is public before the close.
        if !driver.auction.status().is_finished() {
            for event in &driver.events {
                if let Some(public) = event.to_public() {
                    ensure!(
                        !matches!(
                            public.kind,
                            auction_engine::event::PublicEventKind::Sold { .. }
                        ),
                        "sold before the close"
                    );
                }
            }
        }
    }
    driver.finish(10_000_000)?;
    reference
        .apply(
            &Command::tick(Timestamp::from_unix_ms(driver.now_ms)),
            driver.now_ms,
        )
        .ok();
    let FormatView::Sealed {
        winner,
        final_price,
        ..
    } = driver.auction.view().format
    else {
        unreachable!()
    };
    let expected = match reference.status {
        RefStatus::Sold { winner, price } => (Some(winner), Some(price)),
        _ => (None, None),
    };
    ensure!(
        (winner, final_price.map(|price| price.amount)) == expected,
        "sealed outcome {winner:?} {final_price:?} vs {expected:?}"
    );
    if let (Some(winner), Some(price)) = (winner, final_price) {
        let bid = driver
            .auction
            .own_bid(winner, None)
            .map(|bid| bid.amount)
            .unwrap_or_default();
        ensure!(price.amount <= bid, "price above the winning bid");
        ensure!(
            reserve.is_none_or(|reserve| price.amount >= reserve),
            "sold below the reserve"
        );
    }
    Ok(())
}

/// A Dutch auction against [`RefDutch`].
pub fn run_dutch(spec: AuctionSpec, ops: &[Op]) -> Checked<()> {
    let mut reference = RefDutch::new(&spec);
    let mut driver = Driver::new(spec);
    for (index, op) in ops.iter().enumerate() {
        let (actor, action) = match *op {
            Op::Advance(ms) => {
                driver.now_ms += ms;
                (Actor::SYSTEM, Action::Tick)
            }
            Op::Accept {
                who,
                quantity,
                amount,
            } => {
                let price = reference.price_at(driver.now_ms);
                (
                    Actor::bidder(user(who)),
                    Action::DutchAccept {
                        quantity,
                        max_unit_price: usd(resolve(amount, price)),
                    },
                )
            }
            Op::Cancel { by } => (cancel_actor(by), Action::Cancel),
            Op::WrongCurrency { who } => (
                Actor::bidder(user(who)),
                Action::DutchAccept {
                    quantity: 1,
                    max_unit_price: Money::new(Decimal::TEN, Currency::EUR),
                },
            ),
            _ => (
                Actor::bidder(user(1)),
                Action::PlaceBid {
                    amount: usd(Decimal::ONE),
                    lot: None,
                },
            ),
        };
        let expected = reference.apply(
            &Command {
                request_id: RequestId(0),
                actor,
                received_at: Timestamp::EPOCH,
                action,
            },
            driver.now_ms,
        );
        let got = driver
            .step(actor, action)?
            .map_err(|rejection| rejection.reason());
        ensure!(
            got == expected,
            "op {index} {op:?} at {}: engine {got:?}, reference {expected:?}",
            driver.now_ms
        );
        ensure!(
            reference
                .status(driver.now_ms)
                .matches(driver.auction.status()),
            "op {index}: status {:?} vs {:?}",
            driver.auction.status(),
            reference.status(driver.now_ms)
        );
        if let FormatView::Dutch {
            clock_price,
            remaining,
            ..
        } = driver.auction.view().format
            && driver.auction.status() == AuctionStatus::Open
        {
            ensure!(
                clock_price.amount == reference.price_at(driver.now_ms),
                "op {index}: clock {clock_price} vs {}",
                reference.price_at(driver.now_ms)
            );
            ensure!(remaining == reference.remaining(), "op {index}: remaining");
        }
    }
    driver.finish(10_000_000)?;
    let sold: Vec<(UserId, u32, Decimal)> = driver
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
    let expected: Vec<(UserId, u32, Decimal)> = reference
        .sales()
        .iter()
        .map(|sale| (sale.0, sale.1, sale.2))
        .collect();
    ensure!(sold == expected, "sales {sold:?} vs {expected:?}");
    Ok(())
}

/// A live session, checked against the invariants (the lots reuse the proxy book
/// the English reference already covers).
pub fn run_live(spec: AuctionSpec, ops: &[Op]) -> Checked<()> {
    let FormatSpec::Live(live) = &spec.format else {
        unreachable!()
    };
    let lot_specs = live.lots.clone();
    let single_lot = live.is_single_lot();
    // Single lot: the hammer that stands (not reopened) when the auction closes.
    let mut standing_hammer: Option<(UserId, Money)> = None;
    let mut driver = Driver::new(spec);
    let mut last_prices: Vec<Option<Decimal>> = vec![None; lot_specs.len()];
    for (index, op) in ops.iter().enumerate() {
        let view = driver.auction.view();
        let FormatView::Live { lots, open_lot, .. } = view.format else {
            unreachable!()
        };
        let minimum_of = |lot: u32| {
            lots.get(lot as usize)
                .map_or(Decimal::ONE, |lot| lot.minimum_bid.amount)
        };
        let lot_count = lots.len() as u32;
        let (actor, action) = match *op {
            Op::Advance(ms) => {
                driver.now_ms += ms;
                (Actor::SYSTEM, Action::Tick)
            }
            Op::Bid {
                who,
                plain,
                amount,
                lot,
            } => {
                let target = lot.map(|lot| lot % lot_count);
                let minimum = minimum_of(target.or(open_lot.map(|open| open.0)).unwrap_or(0));
                let amount = usd(resolve(amount, minimum));
                let lot = target.map(LotIndex);
                let action = if plain {
                    Action::PlaceBid { amount, lot }
                } else {
                    Action::SetMaxBid {
                        max_amount: amount,
                        lot,
                    }
                };
                (Actor::bidder(user(who)), action)
            }
            Op::Absentee { who, lot, amount } => {
                let lot = lot % (lot_count + 1);
                (
                    Actor::bidder(user(who)),
                    Action::AbsenteeBid {
                        lot: LotIndex(lot),
                        max_amount: usd(resolve(amount, minimum_of(lot))),
                    },
                )
            }
            Op::Retract { who, by_admin, lot } => {
                let actor = if by_admin {
                    Actor::admin(ADMIN)
                } else {
                    Actor::auctioneer(AUCTIONEER)
                };
                let lot = lot.map(|lot| LotIndex(lot % lot_count)).or(open_lot);
                (
                    actor,
                    Action::RetractBid {
                        bidder: user(who),
                        lot,
                    },
                )
            }
            Op::Auctioneer { what, lot } => {
                let lot = LotIndex(lot % lot_count);
                let action = match what % 8 {
                    0 => Action::OpenLot { lot: None },
                    7 => Action::FinalizeLot,
                    1 => Action::FairWarning,
                    2 => Action::Hammer,
                    3 => Action::Pass,
                    4 => Action::Reopen { lot },
                    5 => Action::UndoLastBid,
                    _ => Action::OpenLot { lot: Some(lot) },
                };
                let actor = if what >= 200 {
                    Actor::bidder(user(1))
                } else {
                    Actor::auctioneer(AUCTIONEER)
                };
                (actor, action)
            }
            Op::Cancel { by } => (cancel_actor(by), Action::Cancel),
            Op::WrongCurrency { who } => (
                Actor::bidder(user(who)),
                Action::PlaceBid {
                    amount: Money::new(Decimal::TEN, Currency::EUR),
                    lot: None,
                },
            ),
            _ => (
                Actor::bidder(user(1)),
                Action::BuyItNow {
                    price: usd(Decimal::ONE),
                },
            ),
        };
        let before = driver.events.len();
        let result = driver.step(actor, action)?;
        let FormatView::Live { lots, open_lot, .. } = driver.auction.view().format else {
            unreachable!()
        };
        let open_count = lots
            .iter()
            .filter(|lot| lot.status == LotStatus::Open)
            .count();
        ensure!(open_count <= 1, "op {index}: {open_count} lots open");
        ensure!(
            open_count == usize::from(open_lot.is_some()),
            "op {index}: open lot {open_lot:?} disagrees with the lots"
        );
        for event in &driver.events[before..] {
            match event.kind {
                EventKind::LotSold { winner, price, .. } => {
                    standing_hammer = Some((winner, price));
                }
                EventKind::LotReopened { .. } | EventKind::LotPassed { .. } => {
                    standing_hammer = None;
                }
                EventKind::Sold { winner, price, .. } => {
                    ensure!(
                        single_lot && standing_hammer == Some((winner, price)),
                        "op {index}: closed to {winner:?} at {price} but the hammer was {standing_hammer:?}"
                    );
                }
                EventKind::Unsold { .. } => {
                    ensure!(
                        single_lot && standing_hammer.is_none(),
                        "op {index}: unsold despite the hammer {standing_hammer:?}"
                    );
                }
                _ => {}
            }
        }
        // The absentee book stays private while a lot is pending: no price, no
        // leader, no bids counted; at the opening the best maximum leads at a
        // price between the starting price and its own maximum.
        for lot in &lots {
            if lot.status == LotStatus::Pending {
                ensure!(
                    lot.price.is_none() && lot.leader.is_none() && lot.bid_count == 0,
                    "op {index}: pending lot {:?} shows {:?} led by {:?} ({} bids)",
                    lot.lot,
                    lot.price,
                    lot.leader,
                    lot.bid_count
                );
            }
        }
        for event in &driver.events[before..] {
            if let EventKind::LotOpened { lot, .. } = event.kind
                && let Some(opened) = lots.get(lot.as_usize())
                && let (Some(leader), Some(price)) = (opened.leader, opened.price)
            {
                let leader_max = driver
                    .auction
                    .own_bid(leader, Some(lot))
                    .map(|max| max.amount)
                    .unwrap_or_default();
                ensure!(
                    price.amount >= lot_specs[lot.as_usize()].starting_price
                        && price.amount <= leader_max,
                    "op {index}: lot {lot:?} opened at {price} outside [start, {leader_max}]"
                );
                for other in 1..=6 {
                    let other_max = driver
                        .auction
                        .own_bid(user(other), Some(lot))
                        .map(|max| max.amount);
                    ensure!(
                        other_max.is_none_or(|other_max| other_max <= leader_max),
                        "op {index}: lot {lot:?} opened led by {leader:?} below {:?}",
                        user(other)
                    );
                }
            }
        }
        if single_lot && driver.auction.status().is_finished() {
            ensure!(
                lots.iter().all(|lot| lot.finalize_at.is_none()),
                "op {index}: a finished lot is still provisional"
            );
        }
        let mut reset = false;
        for event in &driver.events[before..] {
            match event.kind {
                EventKind::LotSold {
                    lot, winner, price, ..
                } => {
                    let lot_spec = &lot_specs[lot.as_usize()];
                    let winner_max = driver
                        .auction
                        .own_bid(winner, Some(lot))
                        .map(|max| max.amount)
                        .unwrap_or_default();
                    ensure!(
                        price.amount <= winner_max,
                        "op {index}: lot {lot:?} sold at {price} above the maximum {winner_max}"
                    );
                    ensure!(
                        price.amount >= lot_spec.starting_price,
                        "op {index}: sold below the starting price"
                    );
                    ensure!(
                        lot_spec
                            .reserve_price
                            .is_none_or(|reserve| price.amount >= reserve && winner_max >= reserve),
                        "op {index}: sold below the reserve"
                    );
                    for other in 1..=6 {
                        let other_max = driver
                            .auction
                            .own_bid(user(other), Some(lot))
                            .map(|max| max.amount);
                        ensure!(
                            other_max.is_none_or(|other_max| other_max <= winner_max),
                            "op {index}: {winner:?} won lot {lot:?} but {:?} had a higher maximum",
                            user(other)
                        );
                    }
                }
                EventKind::BidUndone { .. }
                | EventKind::BidRetracted { .. }
                | EventKind::LotReopened { .. } => reset = true,
                _ => {}
            }
        }
        for lot in &lots {
            let slot = &mut last_prices[lot.lot.as_usize()];
            if lot.status == LotStatus::Open {
                if !reset && result.is_ok() {
                    ensure!(
                        lot.price.map(|price| price.amount) >= *slot,
                        "op {index}: lot {:?} price fell from {slot:?} to {:?}",
                        lot.lot,
                        lot.price
                    );
                }
                *slot = lot.price.map(|price| price.amount);
            }
        }
    }
    driver.finish(10_000_000)?;
    Ok(())
}

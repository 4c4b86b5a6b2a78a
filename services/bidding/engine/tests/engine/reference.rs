//! A deliberately simple reference model, written from the rules and not
//! from the engine's code: every question ("what is the price?", "who leads?",
//! "is this bid acceptable?") is answered by recomputing from the full history of
//! accepted commands, with plain loops and sorting, no incremental state.

use auction_engine::*;
use rust_decimal::Decimal;

/// The reference's own view of the lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefStatus {
    Scheduled,
    Open,
    Sold { winner: UserId, price: Decimal },
    Closed,
    Unsold,
    Cancelled,
}

impl RefStatus {
    pub fn matches(self, status: AuctionStatus) -> bool {
        match self {
            RefStatus::Scheduled => status == AuctionStatus::Scheduled,
            RefStatus::Open => matches!(status, AuctionStatus::Open | AuctionStatus::Extended),
            RefStatus::Sold { .. } | RefStatus::Closed => status == AuctionStatus::Closed,
            RefStatus::Unsold => status == AuctionStatus::Unsold,
            RefStatus::Cancelled => status == AuctionStatus::Cancelled,
        }
    }

    fn finished(self) -> Option<&'static str> {
        match self {
            RefStatus::Sold { .. } | RefStatus::Closed | RefStatus::Unsold => {
                Some("AUCTION_CLOSED")
            }
            RefStatus::Cancelled => Some("AUCTION_CANCELLED"),
            RefStatus::Scheduled | RefStatus::Open => None,
        }
    }

    fn must_be_open(self) -> Result<(), &'static str> {
        if let Some(reason) = self.finished() {
            return Err(reason);
        }
        if self == RefStatus::Scheduled {
            return Err("AUCTION_NOT_OPEN");
        }
        Ok(())
    }
}

/// The increment for `price`, read straight off the table's rows.
pub fn increment(table: &IncrementTable, price: Decimal) -> Decimal {
    let mut result = Decimal::ZERO;
    for tier in table.tiers() {
        if tier.from <= price {
            result = tier.increment;
        }
    }
    result
}

fn valid_amount(amount: Decimal, currency: Currency) -> bool {
    let places = currency.minor_units();
    amount > Decimal::ZERO
        && amount <= Decimal::from(1_000_000_000_000_i64)
        && amount.round_dp(places) == amount
}

fn check_bidder_and_money(
    seller: UserId,
    currency: Currency,
    actor: Actor,
    money: Money,
) -> Result<(), &'static str> {
    if actor.user_id == seller {
        return Err("SELLER_CANNOT_BID");
    }
    if actor.role != Role::Bidder {
        return Err("NOT_BIDDER");
    }
    if money.currency != currency {
        return Err("WRONG_CURRENCY");
    }
    if !valid_amount(money.amount, currency) {
        return Err("INVALID_AMOUNT");
    }
    Ok(())
}

fn check_cancel(
    status: RefStatus,
    seller: UserId,
    actor: Actor,
    reserve_met: bool,
) -> Result<(), &'static str> {
    if let Some(reason) = status.finished() {
        return Err(reason);
    }
    match actor.role {
        Role::Admin => Ok(()),
        Role::Seller if actor.user_id == seller => {
            if reserve_met {
                Err("RESERVE_MET_CANNOT_CANCEL")
            } else {
                Ok(())
            }
        }
        _ => Err("NOT_SELLER"),
    }
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    Bid { bidder: UserId, amount: Decimal },
    Retract { bidder: UserId },
}

/// English auction, eBay proxy semantics applied one accepted bid at a time.
#[derive(Clone, Debug)]
pub struct RefEnglish {
    spec: EnglishSpec,
    seller: UserId,
    currency: Currency,
    start_ms: i64,
    history: Vec<Entry>,
    pub status: RefStatus,
    pub end_ms: i64,
    buy_it_now_gone: bool,
}

/// The outcome recomputed from the history.
#[derive(Clone, Debug, Default)]
pub struct EnglishOutcome {
    pub leader: Option<UserId>,
    pub price: Option<Decimal>,
    /// (bidder, maximum, order of the bid that set it)
    pub maxes: Vec<(UserId, Decimal, usize)>,
}

impl EnglishOutcome {
    pub fn max_of(&self, bidder: UserId) -> Option<Decimal> {
        self.maxes
            .iter()
            .find(|entry| entry.0 == bidder)
            .map(|entry| entry.1)
    }
}

impl RefEnglish {
    pub fn new(spec: &AuctionSpec) -> RefEnglish {
        let FormatSpec::English(english) = &spec.format else {
            panic!("not English")
        };
        RefEnglish {
            spec: english.clone(),
            seller: spec.seller,
            currency: spec.currency,
            start_ms: spec.start_at.unix_ms(),
            history: Vec::new(),
            status: RefStatus::Scheduled,
            end_ms: english.end_at.unix_ms(),
            buy_it_now_gone: english.buy_it_now_price.is_none(),
        }
    }

    fn lift(&self, price: Decimal, leader_max: Decimal) -> Decimal {
        match self.spec.reserve_price {
            Some(reserve) if leader_max >= reserve => price.max(reserve),
            _ => price,
        }
    }

    pub fn outcome(&self) -> EnglishOutcome {
        let table = &self.spec.increments;
        let start = self.spec.starting_price;
        let mut outcome = EnglishOutcome::default();
        for (order, entry) in self.history.iter().enumerate() {
            match *entry {
                Entry::Bid { bidder, amount } => {
                    let leader_max = outcome.leader.and_then(|leader| outcome.max_of(leader));
                    outcome.maxes.retain(|entry| entry.0 != bidder);
                    outcome.maxes.push((bidder, amount, order));
                    match (outcome.leader, leader_max) {
                        (Some(leader), _) if leader == bidder => {}
                        (Some(_), Some(leader_max)) if amount > leader_max => {
                            outcome.leader = Some(bidder);
                            outcome.price =
                                Some(amount.min(leader_max + increment(table, leader_max)));
                        }
                        (Some(_), Some(leader_max)) => {
                            outcome.price = Some(leader_max.min(amount + increment(table, amount)));
                        }
                        _ => {
                            outcome.leader = Some(bidder);
                            outcome.price = Some(start);
                        }
                    }
                }
                Entry::Retract { bidder } => {
                    outcome.maxes.retain(|entry| entry.0 != bidder);
                    let mut sorted = outcome.maxes.clone();
                    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
                    outcome.leader = sorted.first().map(|entry| entry.0);
                    outcome.price = match sorted.len() {
                        0 => None,
                        1 => Some(start),
                        _ => Some(
                            sorted[0]
                                .1
                                .min((sorted[1].1 + increment(table, sorted[1].1)).max(start)),
                        ),
                    };
                }
            }
            if let (Some(leader), Some(price)) = (outcome.leader, outcome.price) {
                let leader_max = outcome.max_of(leader).unwrap_or_default();
                outcome.price = Some(self.lift(price, leader_max));
            }
        }
        outcome
    }

    pub fn reserve_met(&self) -> bool {
        let outcome = self.outcome();
        match (outcome.leader, self.spec.reserve_price) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(leader), Some(reserve)) => outcome.max_of(leader).unwrap_or_default() >= reserve,
        }
    }

    pub fn minimum_for(&self, bidder: UserId) -> Decimal {
        let outcome = self.outcome();
        let minimum = match outcome.price {
            None => self.spec.starting_price,
            Some(price) => price + increment(&self.spec.increments, price),
        };
        match outcome.leader {
            Some(leader) if leader == bidder => {
                minimum.max(outcome.max_of(bidder).unwrap_or_default() + Decimal::new(1, 2))
            }
            _ => minimum,
        }
    }

    fn fire(&mut self, now_ms: i64) {
        if self.status == RefStatus::Scheduled && now_ms >= self.start_ms {
            self.status = RefStatus::Open;
        }
        if self.status == RefStatus::Open && now_ms >= self.end_ms {
            let outcome = self.outcome();
            self.status = match (outcome.leader, outcome.price) {
                (Some(winner), Some(price)) if self.reserve_met() => {
                    RefStatus::Sold { winner, price }
                }
                _ => RefStatus::Unsold,
            };
        }
    }

    pub fn apply(&mut self, command: &Command, now_ms: i64) -> Result<(), &'static str> {
        self.fire(now_ms);
        let actor = command.actor;
        match command.action {
            Action::PlaceBid { amount, lot }
            | Action::SetMaxBid {
                max_amount: amount,
                lot,
            } => {
                if lot.is_some() {
                    return Err("UNSUPPORTED_FOR_FORMAT");
                }
                self.status.must_be_open()?;
                check_bidder_and_money(self.seller, self.currency, actor, amount)?;
                if amount.amount < self.minimum_for(actor.user_id) {
                    return Err("BID_BELOW_MINIMUM");
                }
                self.history.push(Entry::Bid {
                    bidder: actor.user_id,
                    amount: amount.amount,
                });
                if self.spec.reserve_price.is_none() || self.reserve_met() {
                    self.buy_it_now_gone = true;
                }
                if let Some(soft_close) = self.spec.soft_close
                    && self.end_ms - now_ms <= soft_close.window_ms
                {
                    let mut end_ms = now_ms + soft_close.extension_ms;
                    if let Some(cap_ms) = soft_close.max_total_extension_ms {
                        end_ms = end_ms.min(self.spec.end_at.unix_ms() + cap_ms);
                    }
                    self.end_ms = self.end_ms.max(end_ms);
                }
                Ok(())
            }
            Action::RetractBid { bidder, lot } => {
                if lot.is_some() {
                    return Err("UNSUPPORTED_FOR_FORMAT");
                }
                if actor.role != Role::Admin {
                    return Err("NOT_ADMIN");
                }
                if let Some(reason) = self.status.finished() {
                    return Err(reason);
                }
                if self.outcome().max_of(bidder).is_none() {
                    return Err("NO_SUCH_BID");
                }
                self.history.push(Entry::Retract { bidder });
                Ok(())
            }
            Action::BuyItNow { price } => {
                self.status.must_be_open()?;
                check_bidder_and_money(self.seller, self.currency, actor, price)?;
                let Some(buy_it_now_price) =
                    self.spec.buy_it_now_price.filter(|_| !self.buy_it_now_gone)
                else {
                    return Err("BUY_IT_NOW_UNAVAILABLE");
                };
                if price.amount != buy_it_now_price {
                    return Err("PRICE_MISMATCH");
                }
                self.status = RefStatus::Sold {
                    winner: actor.user_id,
                    price: buy_it_now_price,
                };
                Ok(())
            }
            Action::Cancel => {
                check_cancel(self.status, self.seller, actor, self.reserve_met())?;
                self.status = RefStatus::Cancelled;
                Ok(())
            }
            Action::Tick => Ok(()),
            _ => Err("UNSUPPORTED_FOR_FORMAT"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Placement {
    bidder: UserId,
    amount: Decimal,
    expires_ms: Option<i64>,
    withdrawn: bool,
}

/// Sealed-bid auction: the list of every placement; a bidder's standing bid is
/// their latest placement unless withdrawn or expired.
#[derive(Clone, Debug)]
pub struct RefSealed {
    spec: SealedSpec,
    seller: UserId,
    currency: Currency,
    start_ms: i64,
    placements: Vec<Placement>,
    pub status: RefStatus,
}

impl RefSealed {
    pub fn new(spec: &AuctionSpec) -> RefSealed {
        let FormatSpec::Sealed(sealed) = &spec.format else {
            panic!("not sealed")
        };
        RefSealed {
            spec: sealed.clone(),
            seller: spec.seller,
            currency: spec.currency,
            start_ms: spec.start_at.unix_ms(),
            placements: Vec::new(),
            status: RefStatus::Scheduled,
        }
    }

    /// Index of `bidder`'s standing bid at `at_ms`.
    fn standing(&self, bidder: UserId, at_ms: i64) -> Option<usize> {
        let index = self
            .placements
            .iter()
            .rposition(|placement| placement.bidder == bidder)?;
        let placement = self.placements[index];
        (!placement.withdrawn
            && placement
                .expires_ms
                .is_none_or(|expires_ms| expires_ms > at_ms))
        .then_some(index)
    }

    fn standing_bids(&self, at_ms: i64) -> Vec<(usize, Placement)> {
        let mut bidders: Vec<UserId> = self
            .placements
            .iter()
            .map(|placement| placement.bidder)
            .collect();
        bidders.sort();
        bidders.dedup();
        bidders
            .into_iter()
            .filter_map(|bidder| self.standing(bidder, at_ms))
            .map(|index| (index, self.placements[index]))
            .collect()
    }

    fn fire(&mut self, now_ms: i64) {
        if self.status == RefStatus::Scheduled && now_ms >= self.start_ms {
            self.status = RefStatus::Open;
        }
        let end_ms = self.spec.end_at.unix_ms();
        if self.status == RefStatus::Open && now_ms >= end_ms {
            let mut bids = self.standing_bids(end_ms);
            bids.sort_by(|a, b| b.1.amount.cmp(&a.1.amount).then(a.0.cmp(&b.0)));
            self.status = match bids.first() {
                None => RefStatus::Unsold,
                Some((_, best))
                    if self
                        .spec
                        .reserve_price
                        .is_some_and(|reserve| best.amount < reserve) =>
                {
                    RefStatus::Unsold
                }
                Some((_, best)) => {
                    let price = match self.spec.pricing {
                        SealedPricing::FirstPrice => best.amount,
                        SealedPricing::SecondPrice => {
                            let mut price = self.spec.starting_price;
                            if let Some(reserve) = self.spec.reserve_price {
                                price = price.max(reserve);
                            }
                            if let Some((_, second)) = bids.get(1) {
                                price = price.max(second.amount);
                            }
                            price
                        }
                    };
                    RefStatus::Sold {
                        winner: best.bidder,
                        price,
                    }
                }
            };
        }
    }

    pub fn apply(&mut self, command: &Command, now_ms: i64) -> Result<(), &'static str> {
        self.fire(now_ms);
        let actor = command.actor;
        match command.action {
            Action::PlaceSealedBid { amount, ttl_ms } => {
                self.status.must_be_open()?;
                check_bidder_and_money(self.seller, self.currency, actor, amount)?;
                if ttl_ms.is_some_and(|ttl_ms| ttl_ms <= 0 || ttl_ms > 400 * 24 * 3_600_000) {
                    return Err("INVALID_TTL");
                }
                if amount.amount < self.spec.starting_price {
                    return Err("BID_BELOW_MINIMUM");
                }
                self.placements.push(Placement {
                    bidder: actor.user_id,
                    amount: amount.amount,
                    expires_ms: ttl_ms.map(|ttl_ms| now_ms + ttl_ms),
                    withdrawn: false,
                });
                Ok(())
            }
            Action::WithdrawSealedBid => {
                self.status.must_be_open()?;
                let index = self.standing(actor.user_id, now_ms).ok_or("NO_SUCH_BID")?;
                self.placements[index].withdrawn = true;
                Ok(())
            }
            Action::RetractBid { bidder, lot } => {
                if lot.is_some() {
                    return Err("UNSUPPORTED_FOR_FORMAT");
                }
                if actor.role != Role::Admin {
                    return Err("NOT_ADMIN");
                }
                if let Some(reason) = self.status.finished() {
                    return Err(reason);
                }
                let index = self.standing(bidder, now_ms).ok_or("NO_SUCH_BID")?;
                self.placements[index].withdrawn = true;
                Ok(())
            }
            Action::Cancel => {
                let reserve = self.spec.reserve_price;
                let reserve_met = self
                    .standing_bids(now_ms)
                    .iter()
                    .any(|(_, bid)| reserve.is_none_or(|reserve| bid.amount >= reserve));
                check_cancel(self.status, self.seller, actor, reserve_met)?;
                self.status = RefStatus::Cancelled;
                Ok(())
            }
            Action::Tick => Ok(()),
            _ => Err("UNSUPPORTED_FOR_FORMAT"),
        }
    }
}

/// Dutch auction: the clock price is found by walking the ticks one by one.
#[derive(Clone, Debug)]
pub struct RefDutch {
    spec: DutchSpec,
    seller: UserId,
    currency: Currency,
    start_ms: i64,
    sold: Vec<(UserId, u32, Decimal, i64)>,
    cancelled: bool,
}

impl RefDutch {
    pub fn new(spec: &AuctionSpec) -> RefDutch {
        let FormatSpec::Dutch(dutch) = &spec.format else {
            panic!("not Dutch")
        };
        RefDutch {
            spec: dutch.clone(),
            seller: spec.seller,
            currency: spec.currency,
            start_ms: spec.start_at.unix_ms(),
            sold: Vec::new(),
            cancelled: false,
        }
    }

    /// The price after `ticks` steps, and the number of steps to reach the floor.
    fn walk(&self, ticks: i64) -> (Decimal, i64) {
        let mut price = self.spec.start_price;
        let mut steps = 0;
        while price > self.spec.floor_price {
            if steps == ticks {
                return (price, -1);
            }
            price = (price - self.spec.price_step).max(self.spec.floor_price);
            steps += 1;
        }
        (price, steps)
    }

    pub fn price_at(&self, now_ms: i64) -> Decimal {
        let ticks = (now_ms - self.start_ms).max(0) / self.spec.tick_interval_ms;
        self.walk(ticks).0
    }

    pub fn end_ms(&self) -> i64 {
        let (_, floor_steps) = self.walk(i64::MAX);
        self.start_ms + (floor_steps + 1) * self.spec.tick_interval_ms
    }

    pub fn remaining(&self) -> u32 {
        self.spec.quantity - self.sold.iter().map(|sale| sale.1).sum::<u32>()
    }

    pub fn sales(&self) -> &[(UserId, u32, Decimal, i64)] {
        &self.sold
    }

    pub fn status(&self, now_ms: i64) -> RefStatus {
        if self.cancelled {
            RefStatus::Cancelled
        } else if self.remaining() == 0 {
            RefStatus::Closed
        } else if now_ms < self.start_ms {
            RefStatus::Scheduled
        } else if now_ms < self.end_ms() {
            RefStatus::Open
        } else if self.sold.is_empty() {
            RefStatus::Unsold
        } else {
            RefStatus::Closed
        }
    }

    pub fn apply(&mut self, command: &Command, now_ms: i64) -> Result<(), &'static str> {
        let actor = command.actor;
        match command.action {
            Action::DutchAccept {
                quantity,
                max_unit_price,
            } => {
                self.status(now_ms).must_be_open()?;
                check_bidder_and_money(self.seller, self.currency, actor, max_unit_price)?;
                if quantity == 0 {
                    return Err("INVALID_QUANTITY");
                }
                if quantity > self.remaining() {
                    return Err("QUANTITY_UNAVAILABLE");
                }
                let price = self.price_at(now_ms);
                if price > max_unit_price.amount {
                    return Err("PRICE_ABOVE_LIMIT");
                }
                self.sold.push((actor.user_id, quantity, price, now_ms));
                Ok(())
            }
            Action::Cancel => {
                check_cancel(
                    self.status(now_ms),
                    self.seller,
                    actor,
                    !self.sold.is_empty(),
                )?;
                self.cancelled = true;
                Ok(())
            }
            Action::Tick => Ok(()),
            _ => Err("UNSUPPORTED_FOR_FORMAT"),
        }
    }
}

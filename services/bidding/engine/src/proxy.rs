//! The proxy-bidding book: every bidder's maximum, the two best maximums kept at
//! hand, and the visible price. Shared by English auctions and live lots.
//!
//! eBay semantics, step by step (each accepted bid is one step):
//!
//! * The minimum acceptable bid is the starting price while there are no bids, and
//!   otherwise the price plus the increment at the price. The leader raising their
//!   own maximum must also go above their current maximum.
//! * A challenger's maximum `M` against the leader's `L`: if `M > L` the challenger
//!   leads at `min(M, L + increment(L))`; if `M <= L` the leader stays at
//!   `min(L, M + increment(M))` (so equal maximums go to the earlier one, at `L`).
//!   Both cases are `min(first, second + increment(second))` over the new top two.
//! * The leader raising their own maximum does not move the price, except that the
//!   first maximum at or above the reserve lifts the price to the reserve (or keeps
//!   the higher competitive price).
//!
//! The price is path-dependent (a raise by the leader does not move it), so it is
//! state, not a function of the maximums. An admin retraction, where no path
//! exists any more, recomputes the outcome from the remaining maximums with the
//! competitive formula. The hot path looks at the two best maximums only; only a
//! retraction scans every bidder.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::id::UserId;
use crate::increment::IncrementTable;
use crate::money::{compare, max_amount_of, min_amount};

/// A bidder's current maximum and the sequence number of the event that set it
/// (earlier wins ties).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MaxBid {
    pub(crate) amount: Decimal,
    pub(crate) seq: u64,
}

/// One of the two best maximums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Standing {
    pub(crate) bidder: UserId,
    pub(crate) amount: Decimal,
    pub(crate) seq: u64,
}

impl Standing {
    /// Whether `self` ranks above `other`: a higher maximum, or the same maximum set
    /// earlier.
    fn beats(&self, other: &Standing) -> bool {
        match compare(self.amount, other.amount) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => self.seq < other.seq,
            std::cmp::Ordering::Less => false,
        }
    }
}

/// The pricing parameters of one English auction or lot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pricing<'a> {
    pub(crate) starting_price: Decimal,
    pub(crate) reserve_price: Option<Decimal>,
    pub(crate) increments: &'a IncrementTable,
    /// The currency's smallest unit: how much a leader must raise their own maximum by.
    pub(crate) minor_unit: Decimal,
}

impl Pricing<'_> {
    /// Whether a leading maximum of `amount` meets the reserve (always, without one).
    pub(crate) fn meets_reserve(&self, amount: Decimal) -> bool {
        self.reserve_price
            .is_none_or(|reserve| compare(amount, reserve).is_ge())
    }

    /// The competitive price over a top two, with the reserve lift.
    fn competitive_price(&self, first: &Standing, second: Option<&Standing>) -> Decimal {
        // Amounts are bounded by `limits::MAX_AMOUNT_MAJOR_UNITS`, so the sum of an
        // amount and an increment cannot come near `Decimal::MAX`; saturation is
        // never reached.
        let price = match second {
            None => self.starting_price,
            Some(second) => {
                let contested = second
                    .amount
                    .saturating_add(self.increments.increment_at(second.amount));
                min_amount(first.amount, max_amount_of(contested, self.starting_price))
            }
        };
        self.lift_to_reserve(price, first.amount)
    }

    /// The first maximum at or above the reserve lifts the price to the reserve.
    fn lift_to_reserve(&self, price: Decimal, leader_max: Decimal) -> Decimal {
        match self.reserve_price {
            Some(reserve) if compare(leader_max, reserve).is_ge() => max_amount_of(price, reserve),
            Some(_) | None => price,
        }
    }
}

/// What accepting a bid would lead to; computed without changing the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BidOutcome {
    pub(crate) price: Decimal,
    pub(crate) leader: UserId,
    pub(crate) previous_leader: Option<UserId>,
    pub(crate) reserve_met: bool,
    /// The bidder's maximum before this bid, for live "undo last bid".
    pub(crate) previous_max: Option<MaxBid>,
}

/// The exact book state before a bid, so that "undo last bid" is an exact inverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Undo {
    pub(crate) bidder: UserId,
    pub(crate) previous_max: Option<MaxBid>,
    pub(crate) first: Option<Standing>,
    pub(crate) second: Option<Standing>,
    pub(crate) price: Option<Decimal>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProxyBook {
    /// Every bidder's current maximum; read on each bid (one lookup), scanned only
    /// by a retraction.
    maxes: BTreeMap<UserId, MaxBid>,
    /// The best maximum (the leader), if any.
    first: Option<Standing>,
    /// The second-best maximum from a different bidder, if any.
    second: Option<Standing>,
    /// The visible price; `None` until the first bid.
    price: Option<Decimal>,
}

/// Inserts a maximum into a top two. Maximums only ever rise (a new bid must beat
/// the price, which is at least every non-leader's maximum, and a leader must beat
/// their own), so the bidders outside the old top two cannot enter it.
fn insert_top_two(
    first: Option<Standing>,
    second: Option<Standing>,
    new: Standing,
) -> (Standing, Option<Standing>) {
    match first {
        None => (new, None),
        Some(first) if first.bidder == new.bidder => (new, second),
        Some(first) if new.beats(&first) => (new, Some(first)),
        Some(first) => {
            let second = match second {
                Some(second) if second.bidder != new.bidder && second.beats(&new) => second,
                Some(_) | None => new,
            };
            (first, Some(second))
        }
    }
}

impl ProxyBook {
    pub(crate) fn leader(&self) -> Option<UserId> {
        self.first.map(|first| first.bidder)
    }

    pub(crate) fn price(&self) -> Option<Decimal> {
        self.price
    }

    pub(crate) fn max_of(&self, bidder: UserId) -> Option<MaxBid> {
        self.maxes.get(&bidder).copied()
    }

    pub(crate) fn bidder_count(&self) -> usize {
        self.maxes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(crate) fn reserve_met(&self, pricing: &Pricing<'_>) -> bool {
        self.first
            .is_some_and(|first| pricing.meets_reserve(first.amount))
    }

    /// The smallest bid anyone but the leader may place.
    pub(crate) fn minimum_bid(&self, pricing: &Pricing<'_>) -> Decimal {
        match self.price {
            None => pricing.starting_price,
            Some(price) => price.saturating_add(pricing.increments.increment_at(price)),
        }
    }

    /// The smallest bid `bidder` may place: the leader must also go above their own
    /// maximum.
    pub(crate) fn minimum_for(&self, bidder: UserId, pricing: &Pricing<'_>) -> Decimal {
        let minimum = self.minimum_bid(pricing);
        match self.first {
            Some(first) if first.bidder == bidder => {
                max_amount_of(minimum, first.amount.saturating_add(pricing.minor_unit))
            }
            Some(_) | None => minimum,
        }
    }

    /// What a bid of `amount` by `bidder` would do, or the minimum acceptable
    /// amount when it is too low. Does not change the book.
    pub(crate) fn evaluate(
        &self,
        bidder: UserId,
        amount: Decimal,
        seq: u64,
        pricing: &Pricing<'_>,
    ) -> Result<BidOutcome, Decimal> {
        let minimum = self.minimum_for(bidder, pricing);
        if compare(amount, minimum).is_lt() {
            return Err(minimum);
        }
        let new = Standing {
            bidder,
            amount,
            seq,
        };
        let (first, second) = insert_top_two(self.first, self.second, new);
        let previous_leader = self.leader();
        let price = match (previous_leader, self.price) {
            // The leader raising their own maximum keeps the price, except for the
            // reserve lift.
            (Some(leader), Some(price)) if leader == bidder => {
                pricing.lift_to_reserve(price, amount)
            }
            (Some(_) | None, Some(_) | None) => pricing.competitive_price(&first, second.as_ref()),
        };
        debug_assert!(
            price <= first.amount,
            "the price never exceeds the leader's maximum"
        );
        Ok(BidOutcome {
            price,
            leader: first.bidder,
            previous_leader,
            reserve_met: pricing.meets_reserve(first.amount),
            previous_max: self.max_of(bidder),
        })
    }

    /// The state before a bid by `bidder`, for the undo history.
    pub(crate) fn undo_point(&self, bidder: UserId) -> Undo {
        Undo {
            bidder,
            previous_max: self.max_of(bidder),
            first: self.first,
            second: self.second,
            price: self.price,
        }
    }

    /// Records an accepted bid (event replay): `price` is the one the decision
    /// computed and the event carries.
    pub(crate) fn accept(&mut self, bidder: UserId, amount: Decimal, seq: u64, price: Decimal) {
        self.maxes.insert(bidder, MaxBid { amount, seq });
        let (first, second) = insert_top_two(
            self.first,
            self.second,
            Standing {
                bidder,
                amount,
                seq,
            },
        );
        self.first = Some(first);
        self.second = second;
        self.price = Some(price);
    }

    /// Removes `bidder`'s maximum and recomputes the outcome from the remaining
    /// maximums (admin retraction). Scans every bidder: retractions are rare.
    pub(crate) fn retract(&mut self, bidder: UserId, pricing: &Pricing<'_>) {
        self.maxes.remove(&bidder);
        self.recompute(pricing);
    }

    /// Adds maximums that compete all at once (a live lot's absentee book at its
    /// opening) and recomputes the outcome: the best maximum leads at the
    /// competitive price over the top two (the starting price when alone), ties
    /// going to the earlier sequence. A bidder already in the book keeps the
    /// higher of the two maximums.
    pub(crate) fn merge(
        &mut self,
        maximums: impl IntoIterator<Item = (UserId, MaxBid)>,
        pricing: &Pricing<'_>,
    ) {
        for (bidder, max) in maximums {
            let keep = self
                .maxes
                .get(&bidder)
                .is_some_and(|current| compare(current.amount, max.amount).is_ge());
            if !keep {
                self.maxes.insert(bidder, max);
            }
        }
        self.recompute(pricing);
    }

    /// The top two and the price from every maximum in the book. Scans every
    /// bidder: only retractions and lot openings call it.
    fn recompute(&mut self, pricing: &Pricing<'_>) {
        let mut first: Option<Standing> = None;
        let mut second: Option<Standing> = None;
        for (&other, max) in &self.maxes {
            let candidate = Standing {
                bidder: other,
                amount: max.amount,
                seq: max.seq,
            };
            match first {
                Some(current) if !candidate.beats(&current) => {
                    if second.is_none_or(|current_second| candidate.beats(&current_second)) {
                        second = Some(candidate);
                    }
                }
                Some(_) | None => {
                    second = first;
                    first = Some(candidate);
                }
            }
        }
        self.first = first;
        self.second = second;
        self.price = first.map(|first| pricing.competitive_price(&first, second.as_ref()));
    }

    /// Restores the exact state before a bid (live "undo last bid").
    pub(crate) fn restore(&mut self, undo: &Undo) {
        match undo.previous_max {
            Some(previous) => self.maxes.insert(undo.bidder, previous),
            None => self.maxes.remove(&undo.bidder),
        };
        self.first = undo.first;
        self.second = undo.second;
        self.price = undo.price;
    }

    /// Every bidder with a maximum in the book.
    pub(crate) fn bidders(&self) -> impl Iterator<Item = UserId> + '_ {
        self.maxes.keys().copied()
    }

    /// Whether `bidder` has a maximum in the book.
    pub(crate) fn has_bidder(&self, bidder: UserId) -> bool {
        self.maxes.contains_key(&bidder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn pricing(table: &IncrementTable, reserve: Option<Decimal>) -> Pricing<'_> {
        Pricing {
            starting_price: dec!(1.00),
            reserve_price: reserve,
            increments: table,
            minor_unit: dec!(0.01),
        }
    }

    fn bid(
        book: &mut ProxyBook,
        bidder: u128,
        amount: Decimal,
        seq: u64,
        pricing: &Pricing<'_>,
    ) -> BidOutcome {
        let outcome = book.evaluate(UserId(bidder), amount, seq, pricing).unwrap();
        book.accept(UserId(bidder), amount, seq, outcome.price);
        outcome
    }

    #[test]
    fn top_two_tracks_raises_and_ties() {
        // Proves the incremental top two matches a full recomputation after raises and ties.
        let table = IncrementTable::ebay_us();
        let pricing = pricing(&table, None);
        let mut book = ProxyBook::default();
        bid(&mut book, 1, dec!(10), 0, &pricing);
        bid(&mut book, 2, dec!(10), 1, &pricing);
        assert_eq!(book.leader(), Some(UserId(1)));
        assert_eq!(book.price(), Some(dec!(10)));
        bid(&mut book, 2, dec!(20), 2, &pricing);
        assert_eq!(book.leader(), Some(UserId(2)));
        assert_eq!(book.price(), Some(dec!(10.50)));
        let mut recomputed = book.clone();
        recomputed.retract(UserId(99), &pricing);
        assert_eq!(recomputed.first, book.first);
        assert_eq!(recomputed.second, book.second);
    }

    #[test]
    fn retraction_recomputes_from_remaining_maximums() {
        // Proves removing the leader hands the lead to the next maximum at the competitive price.
        let table = IncrementTable::ebay_us();
        let pricing = pricing(&table, None);
        let mut book = ProxyBook::default();
        bid(&mut book, 1, dec!(5), 0, &pricing);
        bid(&mut book, 2, dec!(8), 1, &pricing);
        bid(&mut book, 3, dec!(30), 2, &pricing);
        book.retract(UserId(3), &pricing);
        assert_eq!(book.leader(), Some(UserId(2)));
        assert_eq!(book.price(), Some(dec!(5.50)));
        book.retract(UserId(1), &pricing);
        assert_eq!(book.price(), Some(dec!(1.00)));
        book.retract(UserId(2), &pricing);
        assert_eq!(book.price(), None);
        assert!(book.is_empty());
    }
}

//! Sealed-bid auctions, first-price and second-price (Vickrey). One standing bid
//! per bidder, replaceable and withdrawable until the close, optionally with a
//! time-to-live. Amounts stay private until the close; ties go to the earlier bid.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::auction::Common;
use crate::command::{Action, Command};
use crate::event::{Event, EventKind, UnsoldReason};
use crate::id::UserId;
use crate::limits::{MAX_DURATION_MS, MAX_SEALED_BIDS};
use crate::rejection::Rejection;
use crate::spec::{SealedPricing, SealedSpec};
use crate::time::Timestamp;
use crate::view::{AuctionStatus, BidStatus, FormatView};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SealedBid {
    amount: Decimal,
    /// The event that placed it: earlier wins ties.
    seq: u64,
    expires_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sealed {
    pub(crate) spec: SealedSpec,
    /// Standing bids by bidder; kept after the close so losers can see they lost.
    bids: BTreeMap<UserId, SealedBid>,
    /// Expiry index, so the next expiry is found without scanning every bid.
    expiries: BTreeSet<(Timestamp, UserId)>,
    result: Option<(UserId, Decimal)>,
}

pub(crate) fn accepts(kind: &EventKind) -> bool {
    match kind {
        EventKind::Updated => true,
        EventKind::Opened
        | EventKind::Cancelled { .. }
        | EventKind::Sold { .. }
        | EventKind::Unsold { .. }
        | EventKind::SealedBidPlaced { .. }
        | EventKind::SealedBidWithdrawn { .. }
        | EventKind::SealedBidExpired { .. } => true,
        EventKind::BidAccepted { .. }
        | EventKind::BuyItNowWithdrawn
        | EventKind::Extended { .. }
        | EventKind::BidRetracted { .. }
        | EventKind::ClockTicked { .. }
        | EventKind::UnitsSold { .. }
        | EventKind::DutchEnded { .. }
        | EventKind::AbsenteeBidPlaced { .. }
        | EventKind::LotOpened { .. }
        | EventKind::FairWarning { .. }
        | EventKind::LotSold { .. }
        | EventKind::LotPassed { .. }
        | EventKind::LotReopened { .. }
        | EventKind::BidUndone { .. }
        | EventKind::SessionEnded { .. } => false,
    }
}

fn emit(
    common: &mut Common,
    sealed: &mut Sealed,
    at: Timestamp,
    kind: EventKind,
    events: &mut Vec<Event>,
) {
    let event = common.stamp(at, kind);
    sealed.evolve(&event);
    events.push(event);
}

pub(crate) fn apply(
    common: &mut Common,
    sealed: &mut Sealed,
    command: Command,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    let user = command.actor.user_id;
    match command.action {
        Action::PlaceSealedBid { amount, ttl_ms } => {
            common.check_open()?;
            common.check_bidder(command.actor)?;
            common.check_money(amount)?;
            let expires_at = match ttl_ms {
                None => None,
                Some(ttl_ms) if ttl_ms > 0 && ttl_ms <= MAX_DURATION_MS => {
                    Some(now.saturating_add_ms(ttl_ms))
                }
                Some(_) => return Err(Rejection::InvalidTtl),
            };
            if amount.amount < sealed.spec.starting_price {
                return Err(Rejection::BidBelowMinimum {
                    minimum: common.money(sealed.spec.starting_price),
                });
            }
            if sealed.bids.len() >= MAX_SEALED_BIDS && !sealed.bids.contains_key(&user) {
                return Err(Rejection::TooManyBids);
            }
            let kind = EventKind::SealedBidPlaced {
                request_id: command.request_id,
                bidder: user,
                amount,
                expires_at,
                received_at: command.received_at,
            };
            emit(common, sealed, now, kind, events);
            Ok(())
        }
        Action::WithdrawSealedBid => {
            common.check_open()?;
            if !sealed.bids.contains_key(&user) {
                return Err(Rejection::NoSuchBid);
            }
            let kind = EventKind::SealedBidWithdrawn {
                request_id: command.request_id,
                bidder: user,
                by_admin: false,
            };
            emit(common, sealed, now, kind, events);
            Ok(())
        }
        Action::RetractBid { bidder, lot } => {
            if lot.is_some() {
                return Err(Rejection::UnsupportedForFormat);
            }
            common.check_admin(command.actor)?;
            common.check_not_finished()?;
            if !sealed.bids.contains_key(&bidder) {
                return Err(Rejection::NoSuchBid);
            }
            let kind = EventKind::SealedBidWithdrawn {
                request_id: command.request_id,
                bidder,
                by_admin: true,
            };
            emit(common, sealed, now, kind, events);
            Ok(())
        }
        Action::Cancel => {
            let reserve_met = sealed.bids.values().any(|bid| {
                sealed
                    .spec
                    .reserve_price
                    .is_none_or(|reserve| bid.amount >= reserve)
            });
            common.check_cancel(command.actor, reserve_met)?;
            let kind = EventKind::Cancelled {
                request_id: command.request_id,
                by: command.actor,
            };
            emit(common, sealed, now, kind, events);
            Ok(())
        }
        Action::Tick => Ok(()),
        Action::PlaceBid { .. }
        | Action::SetMaxBid { .. }
        | Action::AbsenteeBid { .. }
        | Action::BuyItNow { .. }
        | Action::DutchAccept { .. }
        | Action::OpenLot { .. }
        | Action::FairWarning
        | Action::Hammer
        | Action::Pass
        | Action::Reopen { .. }
        | Action::UndoLastBid
        | Action::FinalizeLot => Err(Rejection::UnsupportedForFormat),
    }
}

/// Opens, expires the earliest bid due (expiries at or before the end come before
/// the close), or closes.
pub(crate) fn fire(
    common: &mut Common,
    sealed: &mut Sealed,
    deadline: Timestamp,
    events: &mut Vec<Event>,
) {
    match common.status {
        AuctionStatus::Scheduled => emit(common, sealed, deadline, EventKind::Opened, events),
        AuctionStatus::Open | AuctionStatus::Extended => {
            let kind = match sealed.expiries.first() {
                Some(&(expires_at, bidder))
                    if expires_at <= deadline && expires_at <= sealed.spec.end_at =>
                {
                    EventKind::SealedBidExpired { bidder }
                }
                Some(_) | None => sealed.closing_event(common),
            };
            emit(common, sealed, deadline, kind, events);
        }
        AuctionStatus::Closed | AuctionStatus::Unsold | AuctionStatus::Cancelled => {}
    }
}

impl Sealed {
    pub(crate) fn new(spec: SealedSpec) -> Sealed {
        Sealed {
            spec,
            bids: BTreeMap::new(),
            expiries: BTreeSet::new(),
            result: None,
        }
    }

    pub(crate) fn next_deadline(&self) -> Timestamp {
        match self.expiries.first() {
            Some(&(expires_at, _)) => expires_at.min(self.spec.end_at),
            None => self.spec.end_at,
        }
    }

    /// The winner is the highest bid, earliest on ties, if it meets the reserve.
    /// First-price pays its bid; second-price pays the highest of the runner-up's
    /// bid, the reserve and the starting price.
    fn closing_event(&self, common: &Common) -> EventKind {
        let mut best: Option<(UserId, SealedBid)> = None;
        let mut runner_up: Option<Decimal> = None;
        for (&bidder, &bid) in &self.bids {
            match best {
                Some((_, current))
                    if bid.amount < current.amount
                        || (bid.amount == current.amount && bid.seq > current.seq) =>
                {
                    runner_up = Some(runner_up.map_or(bid.amount, |amount| amount.max(bid.amount)));
                }
                Some((_, current)) => {
                    runner_up =
                        Some(runner_up.map_or(current.amount, |amount| amount.max(current.amount)));
                    best = Some((bidder, bid));
                }
                None => best = Some((bidder, bid)),
            }
        }
        let Some((winner, winning)) = best else {
            return EventKind::Unsold {
                reason: UnsoldReason::NoBids,
            };
        };
        if self
            .spec
            .reserve_price
            .is_some_and(|reserve| winning.amount < reserve)
        {
            return EventKind::Unsold {
                reason: UnsoldReason::ReserveNotMet,
            };
        }
        let price = match self.spec.pricing {
            SealedPricing::FirstPrice => winning.amount,
            SealedPricing::SecondPrice => {
                let floor = self
                    .spec
                    .reserve_price
                    .unwrap_or(self.spec.starting_price)
                    .max(self.spec.starting_price);
                runner_up.map_or(floor, |amount| amount.max(floor))
            }
        };
        debug_assert!(
            price <= winning.amount,
            "the price never exceeds the winning bid"
        );
        EventKind::Sold {
            winner,
            price: common.money(price),
            buy_it_now: None,
        }
    }

    /// Every bidder with a standing bid.
    pub(crate) fn bidders(&self) -> impl Iterator<Item = UserId> + '_ {
        self.bids.keys().copied()
    }

    fn remove(&mut self, bidder: UserId) {
        if let Some(previous) = self.bids.remove(&bidder)
            && let Some(expires_at) = previous.expires_at
        {
            self.expiries.remove(&(expires_at, bidder));
        }
    }

    pub(crate) fn evolve(&mut self, event: &Event) {
        match event.kind {
            EventKind::SealedBidPlaced {
                bidder,
                amount,
                expires_at,
                ..
            } => {
                self.remove(bidder);
                self.bids.insert(
                    bidder,
                    SealedBid {
                        amount: amount.amount,
                        seq: event.seq,
                        expires_at,
                    },
                );
                if let Some(expires_at) = expires_at {
                    self.expiries.insert((expires_at, bidder));
                }
            }
            EventKind::SealedBidWithdrawn { bidder, .. }
            | EventKind::SealedBidExpired { bidder } => {
                self.remove(bidder);
            }
            EventKind::Sold { winner, price, .. } => self.result = Some((winner, price.amount)),
            EventKind::Opened
            | EventKind::Cancelled { .. }
            | EventKind::Unsold { .. }
            | EventKind::BidAccepted { .. }
            | EventKind::BuyItNowWithdrawn
            | EventKind::Updated
            | EventKind::Extended { .. }
            | EventKind::BidRetracted { .. }
            | EventKind::ClockTicked { .. }
            | EventKind::UnitsSold { .. }
            | EventKind::DutchEnded { .. }
            | EventKind::AbsenteeBidPlaced { .. }
            | EventKind::LotOpened { .. }
            | EventKind::FairWarning { .. }
            | EventKind::LotSold { .. }
            | EventKind::LotPassed { .. }
            | EventKind::LotReopened { .. }
            | EventKind::BidUndone { .. }
            | EventKind::SessionEnded { .. } => {}
        }
    }

    pub(crate) fn view(&self, common: &Common) -> FormatView {
        FormatView::Sealed {
            end_at: self.spec.end_at,
            pricing: self.spec.pricing,
            minimum_bid: common.money(self.spec.starting_price),
            bids_standing: u32::try_from(self.bids.len()).unwrap_or(u32::MAX),
            winner: self.result.map(|(winner, _)| winner),
            final_price: self.result.map(|(_, price)| common.money(price)),
        }
    }

    pub(crate) fn bid_status(&self, common: &Common, bidder: UserId) -> Option<BidStatus> {
        let has_bid = self.bids.contains_key(&bidder);
        match common.status {
            AuctionStatus::Closed => match self.result {
                Some((winner, _)) if winner == bidder => Some(BidStatus::Won),
                Some(_) | None => has_bid.then_some(BidStatus::Lost),
            },
            AuctionStatus::Unsold | AuctionStatus::Cancelled => has_bid.then_some(BidStatus::Lost),
            AuctionStatus::Scheduled | AuctionStatus::Open | AuctionStatus::Extended => {
                has_bid.then_some(BidStatus::Sealed)
            }
        }
    }

    pub(crate) fn own_bid(&self, bidder: UserId) -> Option<Decimal> {
        self.bids.get(&bidder).map(|bid| bid.amount)
    }
}

//! English (ascending) auctions: proxy bidding over a [`ProxyBook`], a hidden
//! reserve, buy-it-now until the first bid (or the reserve) is met, soft close, and
//! admin retraction.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::auction::Common;
use crate::command::{Action, Command};
use crate::event::{BidKind, Event, EventKind, UnsoldReason};
use crate::id::{LotIndex, RequestId, UserId};
use crate::limits::MAX_BIDDERS_PER_BOOK;
use crate::money::Money;
use crate::proxy::{Pricing, ProxyBook};
use crate::rejection::Rejection;
use crate::spec::EnglishSpec;
use crate::time::Timestamp;
use crate::view::{AuctionStatus, BidStatus, FormatView, ReserveState};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct English {
    pub(crate) spec: EnglishSpec,
    pub(crate) book: ProxyBook,
    /// The current end, moved by soft-close extensions.
    pub(crate) end_at: Timestamp,
    /// How far past the spec's end the auction runs now.
    pub(crate) total_extension_ms: i64,
    /// Whether buy-it-now is still offered (it never comes back once withdrawn).
    pub(crate) buy_it_now_available: bool,
    /// The winner and price, once sold.
    pub(crate) result: Option<(UserId, Decimal)>,
    /// Accepted bids per bidder: the public bid count leaves out a retracted
    /// bidder's bids. (Default for snapshots written before it existed.)
    #[serde(default)]
    pub(crate) bids_by_bidder: BTreeMap<UserId, u32>,
    /// The sum of `bids_by_bidder`, so a view does not add it up on every bid.
    #[serde(default)]
    pub(crate) bid_count: u32,
}

/// Whether an event kind can occur in an English auction.
pub(crate) fn accepts(kind: &EventKind) -> bool {
    match kind {
        EventKind::Opened
        | EventKind::Cancelled { .. }
        | EventKind::Sold { .. }
        | EventKind::Unsold { .. }
        | EventKind::BuyItNowWithdrawn
        | EventKind::Updated
        | EventKind::Extended { .. } => true,
        EventKind::BidAccepted { lot, .. } | EventKind::BidRetracted { lot, .. } => lot.is_none(),
        EventKind::ClockTicked { .. }
        | EventKind::UnitsSold { .. }
        | EventKind::DutchEnded { .. }
        | EventKind::SealedBidPlaced { .. }
        | EventKind::SealedBidWithdrawn { .. }
        | EventKind::SealedBidExpired { .. }
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
    english: &mut English,
    at: Timestamp,
    kind: EventKind,
    events: &mut Vec<Event>,
) {
    let event = common.stamp(at, kind);
    english.evolve(common, &event);
    events.push(event);
}

pub(crate) fn apply(
    common: &mut Common,
    english: &mut English,
    command: Command,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    match command.action {
        Action::PlaceBid { amount, lot } => bid(
            common,
            english,
            command,
            amount,
            lot,
            BidKind::Plain,
            now,
            events,
        ),
        Action::SetMaxBid { max_amount, lot } => bid(
            common,
            english,
            command,
            max_amount,
            lot,
            BidKind::Maximum,
            now,
            events,
        ),
        Action::BuyItNow { price } => buy_it_now(common, english, command, price, now, events),
        Action::RetractBid { bidder, lot } => {
            retract(common, english, command, bidder, lot, now, events)
        }
        Action::Cancel => {
            let reserve_met = english.book.reserve_met(&english.pricing(common));
            common.check_cancel(command.actor, reserve_met)?;
            let kind = EventKind::Cancelled {
                request_id: command.request_id,
                by: command.actor,
            };
            emit(common, english, now, kind, events);
            Ok(())
        }
        // Ticks never reach a format's `apply`; see `Auction::apply`.
        Action::Tick => Ok(()),
        Action::AbsenteeBid { .. }
        | Action::PlaceSealedBid { .. }
        | Action::WithdrawSealedBid
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

#[allow(clippy::too_many_arguments)]
fn bid(
    common: &mut Common,
    english: &mut English,
    command: Command,
    amount: Money,
    lot: Option<LotIndex>,
    bid_kind: BidKind,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    if lot.is_some() {
        return Err(Rejection::UnsupportedForFormat);
    }
    common.check_open()?;
    let bidder = command.actor.user_id;
    common.check_bidder(command.actor)?;
    common.check_money(amount)?;
    if english.book.bidder_count() >= MAX_BIDDERS_PER_BOOK && !english.book.has_bidder(bidder) {
        return Err(Rejection::TooManyBids);
    }
    let pricing = english.pricing(common);
    let outcome = english
        .book
        .evaluate(bidder, amount.amount, common.next_seq, &pricing)
        .map_err(|minimum| Rejection::BidBelowMinimum {
            minimum: common.money(minimum),
        })?;

    // Decided: from here on only events.
    let kind = EventKind::BidAccepted {
        request_id: command.request_id,
        lot: None,
        bidder,
        bid_kind,
        max_amount: amount,
        price: common.money(outcome.price),
        leader: outcome.leader,
        previous_leader: outcome.previous_leader,
        reserve_met: outcome.reserve_met,
        received_at: command.received_at,
    };
    emit(common, english, now, kind, events);
    // Buy-it-now disappears with the first bid, or with a reserve, once it is met.
    if english.buy_it_now_available && (english.spec.reserve_price.is_none() || outcome.reserve_met)
    {
        emit(common, english, now, EventKind::BuyItNowWithdrawn, events);
    }
    if let Some(end_at) = english.soft_close_end(now) {
        let total_extension_ms = end_at.ms_since(english.spec.end_at);
        emit(
            common,
            english,
            now,
            EventKind::Extended {
                end_at,
                total_extension_ms,
            },
            events,
        );
    }
    Ok(())
}

fn buy_it_now(
    common: &mut Common,
    english: &mut English,
    command: Command,
    price: Money,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    common.check_open()?;
    common.check_bidder(command.actor)?;
    common.check_money(price)?;
    let buy_it_now_price = match english.spec.buy_it_now_price {
        Some(buy_it_now_price) if english.buy_it_now_available => buy_it_now_price,
        Some(_) | None => return Err(Rejection::BuyItNowUnavailable),
    };
    if price.amount != buy_it_now_price {
        return Err(Rejection::PriceMismatch {
            expected: common.money(buy_it_now_price),
        });
    }
    let kind = EventKind::Sold {
        winner: command.actor.user_id,
        price: common.money(buy_it_now_price),
        buy_it_now: Some(command.request_id),
    };
    emit(common, english, now, kind, events);
    Ok(())
}

fn retract(
    common: &mut Common,
    english: &mut English,
    command: Command,
    bidder: UserId,
    lot: Option<LotIndex>,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    if lot.is_some() {
        return Err(Rejection::UnsupportedForFormat);
    }
    common.check_admin(command.actor)?;
    common.check_not_finished()?;
    if !english.book.has_bidder(bidder) {
        return Err(Rejection::NoSuchBid);
    }
    let pricing = english.pricing(common);
    let mut after = english.book.clone();
    after.retract(bidder, &pricing);
    let kind = retraction_event(common, command.request_id, None, bidder, &after, &pricing);
    emit(common, english, now, kind, events);
    Ok(())
}

/// The event describing a book after a retraction.
pub(crate) fn retraction_event(
    common: &Common,
    request_id: RequestId,
    lot: Option<LotIndex>,
    bidder: UserId,
    after: &ProxyBook,
    pricing: &Pricing<'_>,
) -> EventKind {
    EventKind::BidRetracted {
        request_id,
        lot,
        bidder,
        price: after.price().map(|price| common.money(price)),
        leader: after.leader(),
        reserve_met: after.reserve_met(pricing),
    }
}

/// The end of the auction has come: sold to the leader if the reserve is met.
pub(crate) fn fire(
    common: &mut Common,
    english: &mut English,
    deadline: Timestamp,
    events: &mut Vec<Event>,
) {
    let kind = match common.status {
        AuctionStatus::Scheduled => EventKind::Opened,
        AuctionStatus::Open | AuctionStatus::Extended => english.closing_event(common),
        // `next_deadline` is `None` once finished, so no timer fires then.
        AuctionStatus::Closed | AuctionStatus::Unsold | AuctionStatus::Cancelled => return,
    };
    emit(common, english, deadline, kind, events);
}

impl English {
    pub(crate) fn new(spec: EnglishSpec) -> English {
        English {
            end_at: spec.end_at,
            buy_it_now_available: spec.buy_it_now_price.is_some(),
            spec,
            book: ProxyBook::default(),
            total_extension_ms: 0,
            result: None,
            bids_by_bidder: BTreeMap::new(),
            bid_count: 0,
        }
    }

    pub(crate) fn pricing(&self, common: &Common) -> Pricing<'_> {
        Pricing {
            starting_price: self.spec.starting_price,
            reserve_price: self.spec.reserve_price,
            increments: &self.spec.increments,
            minor_unit: common.minor_unit,
        }
    }

    /// The new end if a bid accepted at `now` triggers the soft close.
    fn soft_close_end(&self, now: Timestamp) -> Option<Timestamp> {
        let soft_close = self.spec.soft_close?;
        if self.end_at.ms_since(now) > soft_close.window_ms {
            return None;
        }
        let mut end_at = now.saturating_add_ms(soft_close.extension_ms);
        if let Some(cap_ms) = soft_close.max_total_extension_ms {
            end_at = end_at.min(self.spec.end_at.saturating_add_ms(cap_ms));
        }
        (end_at > self.end_at).then_some(end_at)
    }

    fn closing_event(&self, common: &Common) -> EventKind {
        let pricing = self.pricing(common);
        match (self.book.leader(), self.book.price()) {
            (Some(winner), Some(price)) if self.book.reserve_met(&pricing) => EventKind::Sold {
                winner,
                price: common.money(price),
                buy_it_now: None,
            },
            (Some(_), Some(_)) => EventKind::Unsold {
                reason: UnsoldReason::ReserveNotMet,
            },
            (None, _) | (Some(_), None) => EventKind::Unsold {
                reason: UnsoldReason::NoBids,
            },
        }
    }

    /// Applies an event's effect on the English state (the shared lifecycle is
    /// applied by `Common`).
    pub(crate) fn evolve(&mut self, common: &Common, event: &Event) {
        match event.kind {
            EventKind::BidAccepted {
                bidder,
                max_amount,
                price,
                ..
            } => {
                self.book
                    .accept(bidder, max_amount.amount, event.seq, price.amount);
                *self.bids_by_bidder.entry(bidder).or_insert(0) += 1;
                self.bid_count = self.bid_count.saturating_add(1);
            }
            EventKind::BuyItNowWithdrawn => self.buy_it_now_available = false,
            EventKind::Extended {
                end_at,
                total_extension_ms,
            } => {
                self.end_at = end_at;
                self.total_extension_ms = total_extension_ms;
            }
            EventKind::BidRetracted { bidder, .. } => {
                let pricing = Pricing {
                    starting_price: self.spec.starting_price,
                    reserve_price: self.spec.reserve_price,
                    increments: &self.spec.increments,
                    minor_unit: common.minor_unit,
                };
                self.book.retract(bidder, &pricing);
                let removed = self.bids_by_bidder.remove(&bidder).unwrap_or(0);
                self.bid_count = self.bid_count.saturating_sub(removed);
            }
            EventKind::Sold { winner, price, .. } => {
                self.result = Some((winner, price.amount));
                self.buy_it_now_available = false;
            }
            EventKind::Unsold { .. } | EventKind::Cancelled { .. } => {
                self.buy_it_now_available = false
            }
            EventKind::Opened
            | EventKind::Updated
            | EventKind::ClockTicked { .. }
            | EventKind::UnitsSold { .. }
            | EventKind::DutchEnded { .. }
            | EventKind::SealedBidPlaced { .. }
            | EventKind::SealedBidWithdrawn { .. }
            | EventKind::SealedBidExpired { .. }
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
        let pricing = self.pricing(common);
        let reserve = match self.spec.reserve_price {
            None => ReserveState::NoReserve,
            Some(_) if self.book.reserve_met(&pricing) => ReserveState::Met,
            Some(_) => ReserveState::NotMet,
        };
        FormatView::English {
            end_at: self.end_at,
            price: self.book.price().map(|price| common.money(price)),
            minimum_bid: common.money(self.book.minimum_bid(&pricing)),
            leader: self.book.leader(),
            bidders: u32::try_from(self.book.bidder_count()).unwrap_or(u32::MAX),
            reserve,
            buy_it_now_price: self
                .spec
                .buy_it_now_price
                .filter(|_| self.buy_it_now_available)
                .map(|price| common.money(price)),
            winner: self.result.map(|(winner, _)| winner),
            final_price: self.result.map(|(_, price)| common.money(price)),
            bid_count: self.bid_count,
            increments: Some(self.spec.increments.clone()),
        }
    }

    pub(crate) fn bid_status(&self, common: &Common, bidder: UserId) -> Option<BidStatus> {
        let has_bid = self.book.has_bidder(bidder);
        match common.status {
            AuctionStatus::Closed => match self.result {
                Some((winner, _)) if winner == bidder => Some(BidStatus::Won),
                Some(_) | None => has_bid.then_some(BidStatus::Lost),
            },
            AuctionStatus::Unsold | AuctionStatus::Cancelled => has_bid.then_some(BidStatus::Lost),
            AuctionStatus::Scheduled | AuctionStatus::Open | AuctionStatus::Extended => {
                if self.book.leader() == Some(bidder) {
                    Some(BidStatus::Winning)
                } else {
                    has_bid.then_some(BidStatus::Outbid)
                }
            }
        }
    }
}

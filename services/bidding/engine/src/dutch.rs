//! Dutch (descending clock) auctions. The clock price at tick `k` is
//! `max(floor, start - k * step)`; tick `k` begins at `start_at + k * tick_interval`.
//! The price holds at the floor for one tick, then the auction ends. Each accept
//! takes the units it asks for at the current price until none are left.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::auction::Common;
use crate::command::{Action, Command};
use crate::event::{Event, EventKind, UnsoldReason};
use crate::id::UserId;
use crate::rejection::Rejection;
use crate::spec::{DutchSpec, SpecError, dutch_floor_tick};
use crate::time::Timestamp;
use crate::view::{AuctionStatus, BidStatus, FormatView};

/// One accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DutchSale {
    pub(crate) buyer: UserId,
    pub(crate) quantity: u32,
    pub(crate) unit_price: Decimal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dutch {
    pub(crate) spec: DutchSpec,
    /// The tick at which the price reaches the floor (derived from the spec).
    floor_tick: u64,
    /// The clock's current tick.
    tick_index: u64,
    /// The price at `tick_index`.
    clock_price: Decimal,
    /// Units not yet sold.
    remaining: u32,
    /// Every accept, in order; at most `quantity` of them.
    sales: Vec<DutchSale>,
}

pub(crate) fn accepts(kind: &EventKind) -> bool {
    match kind {
        EventKind::Updated => true,
        EventKind::Opened
        | EventKind::Cancelled { .. }
        | EventKind::Unsold { .. }
        | EventKind::ClockTicked { .. }
        | EventKind::UnitsSold { .. }
        | EventKind::DutchEnded { .. } => true,
        EventKind::Sold { .. }
        | EventKind::BidAccepted { .. }
        | EventKind::BuyItNowWithdrawn
        | EventKind::Extended { .. }
        | EventKind::BidRetracted { .. }
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
    dutch: &mut Dutch,
    at: Timestamp,
    kind: EventKind,
    events: &mut Vec<Event>,
) {
    let event = common.stamp(at, kind);
    dutch.evolve(&event);
    events.push(event);
}

pub(crate) fn apply(
    common: &mut Common,
    dutch: &mut Dutch,
    command: Command,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    match command.action {
        Action::DutchAccept {
            quantity,
            max_unit_price,
        } => {
            common.check_open()?;
            common.check_bidder(command.actor)?;
            common.check_money(max_unit_price)?;
            if quantity == 0 {
                return Err(Rejection::InvalidQuantity);
            }
            if quantity > dutch.remaining {
                return Err(Rejection::QuantityUnavailable {
                    available: dutch.remaining,
                });
            }
            if dutch.clock_price > max_unit_price.amount {
                return Err(Rejection::PriceAboveLimit {
                    current: common.money(dutch.clock_price),
                });
            }
            let remaining = dutch.remaining - quantity;
            let kind = EventKind::UnitsSold {
                request_id: command.request_id,
                buyer: command.actor.user_id,
                quantity,
                unit_price: common.money(dutch.clock_price),
                remaining,
            };
            emit(common, dutch, now, kind, events);
            if remaining == 0 {
                let kind = EventKind::DutchEnded {
                    units_sold: dutch.spec.quantity,
                    units_unsold: 0,
                };
                emit(common, dutch, now, kind, events);
            }
            Ok(())
        }
        Action::Cancel => {
            common.check_cancel(command.actor, !dutch.sales.is_empty())?;
            let kind = EventKind::Cancelled {
                request_id: command.request_id,
                by: command.actor,
            };
            emit(common, dutch, now, kind, events);
            Ok(())
        }
        Action::Tick => Ok(()),
        Action::PlaceBid { .. }
        | Action::SetMaxBid { .. }
        | Action::AbsenteeBid { .. }
        | Action::BuyItNow { .. }
        | Action::PlaceSealedBid { .. }
        | Action::WithdrawSealedBid
        | Action::OpenLot { .. }
        | Action::FairWarning
        | Action::Hammer
        | Action::Pass
        | Action::Reopen { .. }
        | Action::UndoLastBid
        | Action::FinalizeLot
        | Action::RetractBid { .. } => Err(Rejection::UnsupportedForFormat),
    }
}

/// Opens the clock, steps the price (straight to the tick `now` falls in, so a
/// clock jump emits one event, not one per missed tick), or ends the auction.
pub(crate) fn fire(
    common: &mut Common,
    dutch: &mut Dutch,
    deadline: Timestamp,
    now: Timestamp,
    events: &mut Vec<Event>,
) {
    match common.status {
        AuctionStatus::Scheduled => emit(common, dutch, deadline, EventKind::Opened, events),
        AuctionStatus::Open | AuctionStatus::Extended => {
            if dutch.tick_index < dutch.floor_tick {
                let interval_ms = dutch.spec.tick_interval_ms;
                let elapsed_ticks =
                    u64::try_from(now.ms_since(common.start_at) / interval_ms).unwrap_or(0);
                let tick_index = elapsed_ticks.clamp(dutch.tick_index + 1, dutch.floor_tick);
                let at = dutch.tick_at(common.start_at, tick_index);
                let kind = EventKind::ClockTicked {
                    tick_index,
                    price: common.money(dutch.price_at(tick_index)),
                };
                emit(common, dutch, at, kind, events);
            } else {
                let units_unsold = dutch.remaining;
                let units_sold = dutch.spec.quantity - units_unsold;
                let kind = if units_sold == 0 {
                    EventKind::Unsold {
                        reason: UnsoldReason::NoAccept,
                    }
                } else {
                    EventKind::DutchEnded {
                        units_sold,
                        units_unsold,
                    }
                };
                emit(common, dutch, deadline, kind, events);
            }
        }
        AuctionStatus::Closed | AuctionStatus::Unsold | AuctionStatus::Cancelled => {}
    }
}

impl Dutch {
    /// Every buyer so far (one entry per accept).
    pub(crate) fn buyers(&self) -> impl Iterator<Item = UserId> + '_ {
        self.sales.iter().map(|sale| sale.buyer)
    }

    pub(crate) fn new(spec: DutchSpec) -> Result<Dutch, SpecError> {
        let floor_tick = dutch_floor_tick(&spec).ok_or(SpecError::InvalidClock {
            reason: "too many ticks from start to floor",
        })?;
        Ok(Dutch {
            floor_tick,
            tick_index: 0,
            clock_price: spec.start_price,
            remaining: spec.quantity,
            sales: Vec::new(),
            spec,
        })
    }

    /// The clock price at tick `tick_index`, never below the floor.
    pub(crate) fn price_at(&self, tick_index: u64) -> Decimal {
        // `tick_index <= MAX_DUTCH_TICKS` and the step is a bounded amount, so the
        // product fits; on the impossible overflow the floor is the safe answer.
        Decimal::from(tick_index)
            .checked_mul(self.spec.price_step)
            .and_then(|drop| self.spec.start_price.checked_sub(drop))
            .map_or(self.spec.floor_price, |price| {
                price.max(self.spec.floor_price)
            })
    }

    fn tick_at(&self, start_at: Timestamp, tick_index: u64) -> Timestamp {
        // Validated: (floor_tick + 1) * interval is within the maximum duration.
        let offset_ms = i64::try_from(tick_index)
            .unwrap_or(i64::MAX)
            .saturating_mul(self.spec.tick_interval_ms);
        start_at.saturating_add_ms(offset_ms)
    }

    /// The next price step, or (at the floor) the end.
    pub(crate) fn next_tick_at(&self, start_at: Timestamp) -> Timestamp {
        self.tick_at(start_at, self.tick_index + 1)
    }

    pub(crate) fn evolve(&mut self, event: &Event) {
        match event.kind {
            EventKind::ClockTicked { tick_index, price } => {
                self.tick_index = tick_index;
                self.clock_price = price.amount;
            }
            EventKind::UnitsSold {
                buyer,
                quantity,
                unit_price,
                remaining,
                ..
            } => {
                debug_assert_eq!(self.remaining - quantity, remaining);
                self.remaining = remaining;
                self.sales.push(DutchSale {
                    buyer,
                    quantity,
                    unit_price: unit_price.amount,
                });
            }
            EventKind::Opened
            | EventKind::Cancelled { .. }
            | EventKind::Sold { .. }
            | EventKind::Unsold { .. }
            | EventKind::BidAccepted { .. }
            | EventKind::BuyItNowWithdrawn
            | EventKind::Updated
            | EventKind::Extended { .. }
            | EventKind::BidRetracted { .. }
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
        let open = matches!(common.status, AuctionStatus::Open | AuctionStatus::Extended);
        FormatView::Dutch {
            clock_price: common.money(self.clock_price),
            next_tick_at: open.then(|| self.next_tick_at(common.start_at)),
            at_floor: self.tick_index >= self.floor_tick,
            quantity: self.spec.quantity,
            remaining: self.remaining,
        }
    }

    pub(crate) fn bid_status(&self, bidder: UserId) -> Option<BidStatus> {
        self.sales
            .iter()
            .any(|sale| sale.buyer == bidder)
            .then_some(BidStatus::Won)
    }
}

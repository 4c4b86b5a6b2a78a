//! Live sessions run by an auctioneer: ordered lots, one open at a time, each an
//! English proxy auction with no end time. A countdown restarted by every accepted
//! bid closes the lot when it runs out; the auctioneer can open lots, give fair
//! warning, hammer, pass, reopen and undo the last bid. Absentee (commission) bids
//! left before a lot opens wait in its private absentee book, one maximum per
//! bidder (replaceable, up or down), and become maximums in its proxy book when it
//! opens.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::auction::Common;
use crate::command::{Action, Command, Role};
use crate::english::retraction_event;
use crate::event::{BidKind, Event, EventKind, LotOpening, UnsoldReason};
use crate::id::{LotIndex, UserId};
use crate::limits::{MAX_BIDDERS_PER_BOOK, MAX_BIDS_PER_LOT};
use crate::money::Money;
use crate::proxy::{MaxBid, Pricing, ProxyBook, Undo};
use crate::rejection::Rejection;
use crate::spec::{LiveSpec, LotSpec};
use crate::time::Timestamp;
use crate::view::{AuctionStatus, BidStatus, FormatView, LotStatus, LotView, ReserveState};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lot {
    status: LotStatus,
    book: ProxyBook,
    /// When the countdown runs out, while the lot is open.
    deadline: Option<Timestamp>,
    /// The book before each accepted bid, newest last, for "undo last bid". A
    /// retraction clears it: undo reaches back to the last retraction only.
    history: Vec<Undo>,
    /// Fair warnings given since the last bid.
    fair_warnings: u32,
    /// The buyer and hammer price once sold.
    result: Option<(UserId, Decimal)>,
    /// Single-lot auctions: when a hammered or passed result becomes final
    /// (unless reopened or finalised earlier); `None` otherwise.
    #[serde(default)]
    finalize_at: Option<Timestamp>,
    /// Why the lot was passed, kept for the auction's unsold reason when the
    /// pass becomes final.
    #[serde(default)]
    pass_reason: Option<UnsoldReason>,
    /// How many bidders left an absentee bid (the public count; no amounts).
    #[serde(default)]
    absentee_bidders: u32,
    /// When the lot was first opened.
    #[serde(default)]
    opened_at: Option<Timestamp>,
    /// Single-lot auctions: when the result became final (the auction's end).
    #[serde(default)]
    closed_at: Option<Timestamp>,
    /// The private absentee book: each absentee bidder's latest maximum while the
    /// lot is pending (a new absentee bid replaces it, up or down). Nothing in it
    /// competes until the lot opens, when it is merged into `book`; it is kept
    /// afterwards so the service can tell its bidders the lot opened.
    #[serde(default)]
    absentee: BTreeMap<UserId, MaxBid>,
    /// Accepted bids on the lot (absentee bids count once each from the opening),
    /// without undone ones or a retracted bidder's.
    #[serde(default)]
    bid_count: u32,
    /// Each bidder's share of `bid_count`, so a retraction removes theirs.
    #[serde(default)]
    bids_by_bidder: BTreeMap<UserId, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Live {
    pub(crate) spec: LiveSpec,
    lots: Vec<Lot>,
    open_lot: Option<LotIndex>,
    lots_sold: u32,
}

fn pricing<'a>(lot_spec: &'a LotSpec, common: &Common) -> Pricing<'a> {
    Pricing {
        starting_price: lot_spec.starting_price,
        reserve_price: lot_spec.reserve_price,
        increments: &lot_spec.increments,
        minor_unit: common.minor_unit,
    }
}

fn emit(
    common: &mut Common,
    live: &mut Live,
    at: Timestamp,
    kind: EventKind,
    events: &mut Vec<Event>,
) {
    let event = common.stamp(at, kind);
    live.evolve(common, &event);
    events.push(event);
}

/// Opens `lot`. The event records the lot's public position after the
/// opening applied its absentee book, which is known only once the event has
/// evolved the lot.
fn emit_lot_opened(
    common: &mut Common,
    live: &mut Live,
    at: Timestamp,
    lot: LotIndex,
    deadline: Timestamp,
    events: &mut Vec<Event>,
) {
    let mut event = common.stamp(
        at,
        EventKind::LotOpened {
            lot,
            deadline,
            opening: None,
        },
    );
    live.evolve(common, &event);
    if let EventKind::LotOpened { opening, .. } = &mut event.kind {
        *opening = live.opening(common, lot);
    }
    events.push(event);
}

pub(crate) fn apply(
    common: &mut Common,
    live: &mut Live,
    command: Command,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    let actor = command.actor;
    match command.action {
        Action::PlaceBid { amount, lot } => bid(
            common,
            live,
            command,
            amount,
            lot,
            BidKind::Plain,
            now,
            events,
        ),
        Action::SetMaxBid { max_amount, lot } => bid(
            common,
            live,
            command,
            max_amount,
            lot,
            BidKind::Maximum,
            now,
            events,
        ),
        Action::AbsenteeBid { lot, max_amount } => {
            common.check_not_finished()?;
            common.check_bidder(actor)?;
            let index = live.lot_index(lot)?;
            let lot_state = &live.lots[index];
            if lot_state.status != LotStatus::Pending {
                return Err(Rejection::LotNotPending);
            }
            common.check_money(max_amount)?;
            if lot_state.absentee.len() >= MAX_BIDDERS_PER_BOOK
                && !lot_state.absentee.contains_key(&actor.user_id)
            {
                return Err(Rejection::TooManyBids);
            }
            // A replacement may go up or down, but never below the opening price:
            // the book is applied at the opening as ordinary maximums.
            let starting_price = live.spec.lots[index].starting_price;
            if crate::money::compare(max_amount.amount, starting_price).is_lt() {
                return Err(Rejection::BidBelowMinimum {
                    minimum: common.money(starting_price),
                });
            }
            emit(
                common,
                live,
                now,
                EventKind::AbsenteeBidPlaced {
                    request_id: command.request_id,
                    lot,
                    bidder: actor.user_id,
                    max_amount,
                    received_at: command.received_at,
                },
                events,
            );
            Ok(())
        }
        Action::OpenLot { lot } => {
            common.check_auctioneer(actor)?;
            // A single lot's auction opens with its lot; a session opens first.
            let opens_auction =
                live.spec.is_single_lot() && common.status == AuctionStatus::Scheduled;
            if !opens_auction {
                common.check_open()?;
            }
            if let Some(open) = live.open_lot {
                return Err(Rejection::LotInProgress { open });
            }
            let lot = match lot {
                Some(lot) => {
                    let index = live.lot_index(lot)?;
                    if live.lots[index].status != LotStatus::Pending {
                        return Err(Rejection::LotNotPending);
                    }
                    lot
                }
                None => live.next_pending().ok_or(Rejection::NoSuchLot)?,
            };
            if opens_auction {
                emit(common, live, now, EventKind::Opened, events);
            }
            let deadline = now.saturating_add_ms(live.spec.countdown_ms);
            emit_lot_opened(common, live, now, lot, deadline, events);
            Ok(())
        }
        Action::FairWarning => {
            common.check_auctioneer(actor)?;
            common.check_open()?;
            let lot = live.open_lot.ok_or(Rejection::NoLotOpen)?;
            emit(common, live, now, EventKind::FairWarning { lot }, events);
            Ok(())
        }
        Action::Hammer => {
            common.check_auctioneer(actor)?;
            common.check_open()?;
            let lot = live.open_lot.ok_or(Rejection::NoLotOpen)?;
            let kind = match live.closing_event(common, lot, false) {
                EventKind::LotPassed {
                    reason: UnsoldReason::NoBids,
                    ..
                } => return Err(Rejection::NoBids),
                EventKind::LotPassed { .. } => return Err(Rejection::ReserveNotMet),
                kind => kind,
            };
            emit(common, live, now, kind, events);
            if !live.spec.is_single_lot() {
                after_lot_closed(common, live, now, events);
            }
            Ok(())
        }
        Action::Pass => {
            common.check_auctioneer(actor)?;
            common.check_open()?;
            let lot = live.open_lot.ok_or(Rejection::NoLotOpen)?;
            emit(
                common,
                live,
                now,
                EventKind::LotPassed {
                    lot,
                    reason: UnsoldReason::Passed,
                },
                events,
            );
            if !live.spec.is_single_lot() {
                after_lot_closed(common, live, now, events);
            }
            Ok(())
        }
        Action::Reopen { lot } => {
            common.check_auctioneer(actor)?;
            if live.spec.is_single_lot()
                && matches!(common.status, AuctionStatus::Closed | AuctionStatus::Unsold)
            {
                return Err(Rejection::LotFinal);
            }
            common.check_open()?;
            let index = live.lot_index(lot)?;
            match live.lots[index].status {
                LotStatus::Sold | LotStatus::Passed => {}
                LotStatus::Pending | LotStatus::Open => return Err(Rejection::LotNotClosed),
            }
            if live.spec.is_single_lot() && live.lots[index].finalize_at.is_none() {
                return Err(Rejection::LotFinal);
            }
            let suspended = match live.open_lot {
                Some(open) if !live.lots[open.as_usize()].book.is_empty() => {
                    return Err(Rejection::LotInProgress { open });
                }
                other => other,
            };
            let deadline = now.saturating_add_ms(live.spec.countdown_ms);
            emit(
                common,
                live,
                now,
                EventKind::LotReopened {
                    lot,
                    suspended,
                    deadline,
                },
                events,
            );
            Ok(())
        }
        Action::UndoLastBid => {
            common.check_auctioneer(actor)?;
            common.check_open()?;
            let lot = live.open_lot.ok_or(Rejection::NoLotOpen)?;
            let index = lot.as_usize();
            let undo = *live.lots[index]
                .history
                .last()
                .ok_or(Rejection::NothingToUndo)?;
            let lot_pricing = pricing(&live.spec.lots[index], common);
            let kind = EventKind::BidUndone {
                lot,
                bidder: undo.bidder,
                price: undo.price.map(|price| common.money(price)),
                leader: undo.first.map(|first| first.bidder),
                reserve_met: undo
                    .first
                    .is_some_and(|first| lot_pricing.meets_reserve(first.amount)),
            };
            emit(common, live, now, kind, events);
            Ok(())
        }
        Action::FinalizeLot => {
            if !live.spec.is_single_lot() {
                return Err(Rejection::UnsupportedForFormat);
            }
            match actor.role {
                Role::Auctioneer | Role::Admin | Role::System => {}
                Role::Bidder | Role::Seller => return Err(Rejection::NotAuctioneer),
            }
            match common.status {
                AuctionStatus::Closed | AuctionStatus::Unsold => return Err(Rejection::LotFinal),
                AuctionStatus::Cancelled => return Err(Rejection::AuctionCancelled),
                AuctionStatus::Scheduled => return Err(Rejection::LotNotClosed),
                AuctionStatus::Open | AuctionStatus::Extended => {}
            }
            let lot = live.provisional_lot().ok_or(Rejection::LotNotClosed)?;
            finalize(common, live, lot, now, events);
            Ok(())
        }
        Action::RetractBid { bidder, lot } => {
            common.check_admin(actor)?;
            common.check_not_finished()?;
            let lot = lot.ok_or(Rejection::NoSuchLot)?;
            let index = live.lot_index(lot)?;
            match live.lots[index].status {
                LotStatus::Pending | LotStatus::Open => {}
                LotStatus::Sold | LotStatus::Passed => {
                    return Err(Rejection::LotNotOpen {
                        open: live.open_lot,
                    });
                }
            }
            if !live.lots[index].book.has_bidder(bidder)
                && !live.lots[index].absentee.contains_key(&bidder)
            {
                return Err(Rejection::NoSuchBid);
            }
            let lot_pricing = pricing(&live.spec.lots[index], common);
            let mut after = live.lots[index].book.clone();
            after.retract(bidder, &lot_pricing);
            let kind = retraction_event(
                common,
                command.request_id,
                Some(lot),
                bidder,
                &after,
                &lot_pricing,
            );
            emit(common, live, now, kind, events);
            Ok(())
        }
        Action::Cancel => {
            let reserve_met = live.lots_sold > 0
                || live
                    .lots
                    .iter()
                    .zip(&live.spec.lots)
                    .any(|(lot, lot_spec)| {
                        let lot_pricing = pricing(lot_spec, common);
                        matches!(lot.status, LotStatus::Pending | LotStatus::Open)
                            && (lot.book.reserve_met(&lot_pricing)
                                || lot
                                    .absentee
                                    .values()
                                    .any(|max| lot_pricing.meets_reserve(max.amount)))
                    });
            common.check_cancel(actor, reserve_met)?;
            emit(
                common,
                live,
                now,
                EventKind::Cancelled {
                    request_id: command.request_id,
                    by: actor,
                },
                events,
            );
            Ok(())
        }
        Action::Tick => Ok(()),
        Action::BuyItNow { .. }
        | Action::PlaceSealedBid { .. }
        | Action::WithdrawSealedBid
        | Action::DutchAccept { .. } => Err(Rejection::UnsupportedForFormat),
    }
}

#[allow(clippy::too_many_arguments)]
fn bid(
    common: &mut Common,
    live: &mut Live,
    command: Command,
    amount: Money,
    lot: Option<LotIndex>,
    bid_kind: BidKind,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    common.check_open()?;
    let open = match (live.open_lot, lot) {
        (Some(open), None) => open,
        (Some(open), Some(lot)) if lot == open => open,
        (open, Some(_)) => return Err(Rejection::LotNotOpen { open }),
        // A single lot hammered or passed takes no more bids: for its bidders
        // the auction is over unless the auctioneer reopens it.
        (None, None) if live.provisional_lot().is_some() => return Err(Rejection::AuctionClosed),
        (None, None) => return Err(Rejection::NoLotOpen),
    };
    common.check_bidder(command.actor)?;
    common.check_money(amount)?;
    accept_bid(common, live, command, open, amount, bid_kind, now, events)
}

#[allow(clippy::too_many_arguments)]
fn accept_bid(
    common: &mut Common,
    live: &mut Live,
    command: Command,
    lot: LotIndex,
    amount: Money,
    bid_kind: BidKind,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    let bidder = command.actor.user_id;
    let index = lot.as_usize();
    let lot_state = &live.lots[index];
    if lot_state.history.len() >= MAX_BIDS_PER_LOT
        || (lot_state.book.bidder_count() >= MAX_BIDDERS_PER_BOOK
            && !lot_state.book.has_bidder(bidder))
    {
        return Err(Rejection::TooManyBids);
    }
    let lot_pricing = pricing(&live.spec.lots[index], common);
    let outcome = lot_state
        .book
        .evaluate(bidder, amount.amount, common.next_seq, &lot_pricing)
        .map_err(|minimum| Rejection::BidBelowMinimum {
            minimum: common.money(minimum),
        })?;
    let kind = EventKind::BidAccepted {
        request_id: command.request_id,
        lot: Some(lot),
        bidder,
        bid_kind,
        max_amount: amount,
        price: common.money(outcome.price),
        leader: outcome.leader,
        previous_leader: outcome.previous_leader,
        reserve_met: outcome.reserve_met,
        received_at: command.received_at,
    };
    emit(common, live, now, kind, events);
    Ok(())
}

/// After a lot closes: open the next one (auto-advance) or end the session when no
/// lot is left to offer.
fn after_lot_closed(common: &mut Common, live: &mut Live, at: Timestamp, events: &mut Vec<Event>) {
    match live.next_pending() {
        Some(lot) if live.spec.auto_advance => {
            let deadline = at.saturating_add_ms(live.spec.countdown_ms);
            emit_lot_opened(common, live, at, lot, deadline, events);
        }
        Some(_) => {}
        None => emit(
            common,
            live,
            at,
            EventKind::SessionEnded {
                lots_sold: live.lots_sold,
            },
            events,
        ),
    }
}

/// A single lot's provisional result becomes final: the auction closes sold to
/// the hammer's winner at the hammer price, or ends unsold. These are the same
/// events an English auction closes with, so everything downstream of a close
/// (orders, notifications, feeds) treats a lot like any other auction.
fn finalize(
    common: &mut Common,
    live: &mut Live,
    lot: LotIndex,
    at: Timestamp,
    events: &mut Vec<Event>,
) {
    let Some(lot_state) = live.lots.get(lot.as_usize()) else {
        return;
    };
    let kind = match (lot_state.status, lot_state.result) {
        (LotStatus::Sold, Some((winner, price))) => EventKind::Sold {
            winner,
            price: common.money(price),
            buy_it_now: None,
        },
        (LotStatus::Sold, None)
        | (LotStatus::Passed, _)
        | (LotStatus::Pending, _)
        | (LotStatus::Open, _) => EventKind::Unsold {
            reason: lot_state.pass_reason.unwrap_or(UnsoldReason::Passed),
        },
    };
    emit(common, live, at, kind, events);
}

/// Opens the session (and with auto-advance its first lot), closes the open lot
/// whose countdown ran out, or (single lot) makes a provisional result final.
pub(crate) fn fire(
    common: &mut Common,
    live: &mut Live,
    deadline: Timestamp,
    events: &mut Vec<Event>,
) {
    match common.status {
        AuctionStatus::Scheduled => {
            emit(common, live, deadline, EventKind::Opened, events);
            if live.spec.auto_advance
                && let Some(lot) = live.next_pending()
            {
                let lot_deadline = deadline.saturating_add_ms(live.spec.countdown_ms);
                emit_lot_opened(common, live, deadline, lot, lot_deadline, events);
            }
        }
        AuctionStatus::Open | AuctionStatus::Extended => {
            if let Some(lot) = live.open_lot {
                let kind = live.closing_event(common, lot, true);
                emit(common, live, deadline, kind, events);
                if !live.spec.is_single_lot() {
                    after_lot_closed(common, live, deadline, events);
                }
            } else if let Some(lot) = live.provisional_lot() {
                finalize(common, live, lot, deadline, events);
            }
        }
        AuctionStatus::Closed | AuctionStatus::Unsold | AuctionStatus::Cancelled => {}
    }
}

impl Live {
    pub(crate) fn new(spec: LiveSpec) -> Live {
        let lots = spec
            .lots
            .iter()
            .map(|_| Lot {
                status: LotStatus::Pending,
                book: ProxyBook::default(),
                deadline: None,
                history: Vec::new(),
                fair_warnings: 0,
                result: None,
                finalize_at: None,
                pass_reason: None,
                absentee_bidders: 0,
                opened_at: None,
                closed_at: None,
                absentee: BTreeMap::new(),
                bid_count: 0,
                bids_by_bidder: BTreeMap::new(),
            })
            .collect();
        Live {
            spec,
            lots,
            open_lot: None,
            lots_sold: 0,
        }
    }

    fn lot_index(&self, lot: LotIndex) -> Result<usize, Rejection> {
        let index = lot.as_usize();
        if index < self.lots.len() {
            Ok(index)
        } else {
            Err(Rejection::NoSuchLot)
        }
    }

    fn next_pending(&self) -> Option<LotIndex> {
        let index = self
            .lots
            .iter()
            .position(|lot| lot.status == LotStatus::Pending)?;
        u32::try_from(index).ok().map(LotIndex)
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        match self.open_lot {
            Some(open) => self.lots.get(open.as_usize())?.deadline,
            None => self.lots.iter().filter_map(|lot| lot.finalize_at).min(),
        }
    }

    /// A lot whose hammer or pass is still provisional (single-lot auctions).
    fn provisional_lot(&self) -> Option<LotIndex> {
        let index = self.lots.iter().position(|lot| lot.finalize_at.is_some())?;
        u32::try_from(index).ok().map(LotIndex)
    }

    /// The only lot of a single-lot auction.
    pub(crate) fn single_lot(&self) -> Option<LotIndex> {
        (self.spec.is_single_lot() && self.lots.len() == 1).then_some(LotIndex(0))
    }

    /// Sold to the leader when the reserve is met, otherwise passed.
    fn closing_event(&self, common: &Common, lot: LotIndex, by_countdown: bool) -> EventKind {
        let index = lot.as_usize();
        let (Some(lot_state), Some(lot_spec)) = (self.lots.get(index), self.spec.lots.get(index))
        else {
            return EventKind::LotPassed {
                lot,
                reason: UnsoldReason::NoBids,
            };
        };
        match (lot_state.book.leader(), lot_state.book.price()) {
            (Some(winner), Some(price))
                if lot_state.book.reserve_met(&pricing(lot_spec, common)) =>
            {
                EventKind::LotSold {
                    lot,
                    winner,
                    price: common.money(price),
                    by_countdown,
                }
            }
            (Some(_), Some(_)) => EventKind::LotPassed {
                lot,
                reason: UnsoldReason::ReserveNotMet,
            },
            (None, _) | (Some(_), None) => EventKind::LotPassed {
                lot,
                reason: UnsoldReason::NoBids,
            },
        }
    }

    /// A lot's public price, leader and minimum next bid (for the opening
    /// event; the lot has been offered, so nothing here is private).
    fn opening(&self, common: &Common, lot: LotIndex) -> Option<LotOpening> {
        let index = lot.as_usize();
        let (lot_state, lot_spec) = (self.lots.get(index)?, self.spec.lots.get(index)?);
        let lot_pricing = pricing(lot_spec, common);
        Some(LotOpening {
            price: lot_state.book.price().map(|price| common.money(price)),
            leader: lot_state.book.leader(),
            minimum_bid: common.money(lot_state.book.minimum_bid(&lot_pricing)),
        })
    }

    /// Whether a replayed event fits this session (right kind, existing lot).
    pub(crate) fn accepts(&self, kind: &EventKind) -> bool {
        let exists = |lot: &LotIndex| lot.as_usize() < self.lots.len();
        match kind {
            EventKind::Opened | EventKind::Cancelled { .. } | EventKind::SessionEnded { .. } => {
                true
            }
            EventKind::BidAccepted { lot, .. } | EventKind::BidRetracted { lot, .. } => {
                lot.as_ref().is_some_and(exists)
            }
            EventKind::AbsenteeBidPlaced { lot, .. }
            | EventKind::LotOpened { lot, .. }
            | EventKind::FairWarning { lot }
            | EventKind::LotSold { lot, .. }
            | EventKind::LotPassed { lot, .. }
            | EventKind::BidUndone { lot, .. } => exists(lot),
            EventKind::LotReopened { lot, suspended, .. } => {
                exists(lot) && suspended.as_ref().is_none_or(exists)
            }
            // A single lot closes like an English auction.
            EventKind::Sold { .. } | EventKind::Unsold { .. } => self.spec.is_single_lot(),
            EventKind::BuyItNowWithdrawn
            | EventKind::Updated
            | EventKind::Extended { .. }
            | EventKind::ClockTicked { .. }
            | EventKind::UnitsSold { .. }
            | EventKind::DutchEnded { .. }
            | EventKind::SealedBidPlaced { .. }
            | EventKind::SealedBidWithdrawn { .. }
            | EventKind::SealedBidExpired { .. } => false,
        }
    }

    pub(crate) fn evolve(&mut self, common: &Common, event: &Event) {
        let countdown_ms = self.spec.countdown_ms;
        let finalize_at = self
            .spec
            .finalize_ms
            .map(|finalize_ms| event.at.saturating_add_ms(finalize_ms));
        match event.kind {
            EventKind::BidAccepted {
                lot: Some(lot),
                bidder,
                max_amount,
                price,
                bid_kind,
                ..
            } => {
                let Some(lot_state) = self.lots.get_mut(lot.as_usize()) else {
                    return;
                };
                if bid_kind == BidKind::Absentee && !lot_state.book.has_bidder(bidder) {
                    lot_state.absentee_bidders = lot_state.absentee_bidders.saturating_add(1);
                }
                let undo = lot_state.book.undo_point(bidder);
                lot_state.history.push(undo);
                lot_state.count_bid(bidder);
                lot_state
                    .book
                    .accept(bidder, max_amount.amount, event.seq, price.amount);
                if lot_state.status == LotStatus::Open {
                    lot_state.deadline = Some(event.at.saturating_add_ms(countdown_ms));
                    lot_state.fair_warnings = 0;
                }
            }
            EventKind::BidRetracted {
                lot: Some(lot),
                bidder,
                ..
            } => {
                let index = lot.as_usize();
                let (Some(lot_state), Some(lot_spec)) =
                    (self.lots.get_mut(index), self.spec.lots.get(index))
                else {
                    return;
                };
                lot_state.book.retract(bidder, &pricing(lot_spec, common));
                lot_state.history.clear();
                let removed = lot_state.bids_by_bidder.remove(&bidder).unwrap_or(0);
                lot_state.bid_count = lot_state.bid_count.saturating_sub(removed);
                if lot_state.absentee.remove(&bidder).is_some() {
                    lot_state.absentee_bidders = lot_state.absentee_bidders.saturating_sub(1);
                }
            }
            EventKind::BidUndone { lot, bidder, .. } => {
                let Some(lot_state) = self.lots.get_mut(lot.as_usize()) else {
                    return;
                };
                if let Some(undo) = lot_state.history.pop() {
                    lot_state.book.restore(&undo);
                    lot_state.uncount_bid(bidder);
                }
                // The countdown restarts: bidders get a full count after an undo.
                if lot_state.status == LotStatus::Open {
                    lot_state.deadline = Some(event.at.saturating_add_ms(countdown_ms));
                }
            }
            EventKind::AbsenteeBidPlaced {
                lot,
                bidder,
                max_amount,
                ..
            } => {
                let Some(lot_state) = self.lots.get_mut(lot.as_usize()) else {
                    return;
                };
                let max = MaxBid {
                    amount: max_amount.amount,
                    seq: event.seq,
                };
                if lot_state.absentee.insert(bidder, max).is_none() {
                    lot_state.absentee_bidders = lot_state.absentee_bidders.saturating_add(1);
                }
            }
            EventKind::LotOpened { lot, deadline, .. } => {
                let index = lot.as_usize();
                let (Some(lot_state), Some(lot_spec)) =
                    (self.lots.get_mut(index), self.spec.lots.get(index))
                else {
                    return;
                };
                // The absentee book competes by proxy from the opening on.
                if !lot_state.absentee.is_empty() {
                    let absentee: Vec<(UserId, MaxBid)> = lot_state
                        .absentee
                        .iter()
                        .map(|(bidder, max)| (*bidder, *max))
                        .collect();
                    lot_state
                        .book
                        .merge(absentee.iter().copied(), &pricing(lot_spec, common));
                    for (bidder, _) in absentee {
                        if !lot_state.bids_by_bidder.contains_key(&bidder) {
                            lot_state.count_bid(bidder);
                        }
                    }
                }
                lot_state.status = LotStatus::Open;
                lot_state.deadline = Some(deadline);
                lot_state.fair_warnings = 0;
                lot_state.opened_at.get_or_insert(event.at);
                self.open_lot = Some(lot);
            }
            EventKind::FairWarning { lot } => {
                let Some(lot_state) = self.lots.get_mut(lot.as_usize()) else {
                    return;
                };
                lot_state.fair_warnings = lot_state.fair_warnings.saturating_add(1);
                // "Fair warning" restarts the countdown at its full length.
                if lot_state.status == LotStatus::Open {
                    lot_state.deadline = Some(event.at.saturating_add_ms(countdown_ms));
                }
            }
            EventKind::LotSold {
                lot, winner, price, ..
            } => {
                let Some(lot_state) = self.lots.get_mut(lot.as_usize()) else {
                    return;
                };
                lot_state.status = LotStatus::Sold;
                lot_state.deadline = None;
                lot_state.finalize_at = finalize_at;
                lot_state.result = Some((winner, price.amount));
                self.lots_sold += 1;
                self.open_lot = None;
            }
            EventKind::LotPassed { lot, reason } => {
                let Some(lot_state) = self.lots.get_mut(lot.as_usize()) else {
                    return;
                };
                lot_state.status = LotStatus::Passed;
                lot_state.deadline = None;
                lot_state.finalize_at = finalize_at;
                lot_state.pass_reason = Some(reason);
                self.open_lot = None;
            }
            EventKind::LotReopened {
                lot,
                suspended,
                deadline,
            } => {
                if let Some(suspended) = suspended
                    && let Some(suspended_state) = self.lots.get_mut(suspended.as_usize())
                {
                    suspended_state.status = LotStatus::Pending;
                    suspended_state.deadline = None;
                    suspended_state.fair_warnings = 0;
                }
                let Some(lot_state) = self.lots.get_mut(lot.as_usize()) else {
                    return;
                };
                if lot_state.status == LotStatus::Sold {
                    self.lots_sold = self.lots_sold.saturating_sub(1);
                }
                lot_state.status = LotStatus::Open;
                lot_state.deadline = Some(deadline);
                lot_state.result = None;
                lot_state.finalize_at = None;
                lot_state.pass_reason = None;
                lot_state.fair_warnings = 0;
                self.open_lot = Some(lot);
            }
            EventKind::SessionEnded { .. } | EventKind::Cancelled { .. } => {
                // A session only ends with no lot open; a cancellation withdraws the
                // lot on the block, which closes unsold.
                if let Some(open) = self.open_lot.take()
                    && let Some(lot_state) = self.lots.get_mut(open.as_usize())
                {
                    lot_state.status = LotStatus::Passed;
                    lot_state.deadline = None;
                }
                for lot_state in &mut self.lots {
                    lot_state.finalize_at = None;
                }
            }
            EventKind::Sold { .. } | EventKind::Unsold { .. } => {
                // A single lot's result is final: nothing is provisional any more.
                for lot_state in &mut self.lots {
                    lot_state.finalize_at = None;
                    lot_state.closed_at = Some(event.at);
                }
            }
            EventKind::BidAccepted { lot: None, .. }
            | EventKind::BidRetracted { lot: None, .. }
            | EventKind::Opened
            | EventKind::BuyItNowWithdrawn
            | EventKind::Updated
            | EventKind::Extended { .. }
            | EventKind::ClockTicked { .. }
            | EventKind::UnitsSold { .. }
            | EventKind::DutchEnded { .. }
            | EventKind::SealedBidPlaced { .. }
            | EventKind::SealedBidWithdrawn { .. }
            | EventKind::SealedBidExpired { .. } => {}
        }
    }

    pub(crate) fn view(&self, common: &Common) -> FormatView {
        let lots = self
            .lots
            .iter()
            .zip(&self.spec.lots)
            .enumerate()
            .map(|(index, (lot, lot_spec))| {
                let lot_pricing = pricing(lot_spec, common);
                // Absentee bids on a lot not yet offered stay private.
                let offered = lot.status != LotStatus::Pending;
                let reserve = match lot_spec.reserve_price {
                    None => ReserveState::NoReserve,
                    Some(_) if offered && lot.book.reserve_met(&lot_pricing) => ReserveState::Met,
                    Some(_) => ReserveState::NotMet,
                };
                LotView {
                    lot: LotIndex(u32::try_from(index).unwrap_or(u32::MAX)),
                    status: lot.status,
                    price: lot
                        .book
                        .price()
                        .filter(|_| offered)
                        .map(|price| common.money(price)),
                    minimum_bid: common.money(if offered {
                        lot.book.minimum_bid(&lot_pricing)
                    } else {
                        lot_spec.starting_price
                    }),
                    leader: lot.book.leader().filter(|_| offered),
                    reserve,
                    deadline: lot.deadline,
                    fair_warnings: lot.fair_warnings,
                    winner: lot.result.map(|(winner, _)| winner),
                    hammer_price: lot.result.map(|(_, price)| common.money(price)),
                    finalize_at: lot.finalize_at,
                    absentee_bids: lot.absentee_bidders,
                    bid_count: if offered { lot.bid_count } else { 0 },
                    bidders: if offered {
                        u32::try_from(lot.book.bidder_count()).unwrap_or(u32::MAX)
                    } else {
                        0
                    },
                    starting_price: common.money(lot_spec.starting_price),
                    opened_at: lot.opened_at,
                    closed_at: lot.closed_at,
                    pass_reason: lot.pass_reason,
                }
            })
            .collect();
        FormatView::Live {
            open_lot: self.open_lot,
            lots,
            lots_sold: self.lots_sold,
            countdown_ms: self.spec.countdown_ms,
        }
    }

    pub(crate) fn bid_status(
        &self,
        common: &Common,
        bidder: UserId,
        lot: LotIndex,
    ) -> Option<BidStatus> {
        let lot_state = self.lots.get(lot.as_usize())?;
        let has_bid = lot_state.book.has_bidder(bidder) || lot_state.absentee.contains_key(&bidder);
        if common.status == AuctionStatus::Cancelled {
            return has_bid.then_some(BidStatus::Lost);
        }
        match lot_state.status {
            // Whether an absentee bid would lead stays hidden until the opening.
            LotStatus::Pending => has_bid.then_some(BidStatus::Absentee),
            LotStatus::Open => {
                if lot_state.book.leader() == Some(bidder) {
                    Some(BidStatus::Winning)
                } else {
                    has_bid.then_some(BidStatus::Outbid)
                }
            }
            // A provisional hammer can still be reopened: not won yet.
            LotStatus::Sold if lot_state.finalize_at.is_some() => {
                if lot_state.book.leader() == Some(bidder) {
                    Some(BidStatus::Winning)
                } else {
                    has_bid.then_some(BidStatus::Outbid)
                }
            }
            LotStatus::Sold => match lot_state.result {
                Some((winner, _)) if winner == bidder => Some(BidStatus::Won),
                Some(_) | None => has_bid.then_some(BidStatus::Lost),
            },
            LotStatus::Passed => has_bid.then_some(BidStatus::Lost),
        }
    }

    pub(crate) fn own_bid(&self, bidder: UserId, lot: LotIndex) -> Option<Decimal> {
        let lot_state = self.lots.get(lot.as_usize())?;
        lot_state
            .book
            .max_of(bidder)
            .or_else(|| lot_state.absentee.get(&bidder).copied())
            .map(|max| max.amount)
    }

    /// The leader of `lot`'s book (nobody before the lot opens).
    pub(crate) fn leader(&self, lot: LotIndex) -> Option<UserId> {
        self.lots.get(lot.as_usize())?.book.leader()
    }

    /// Who left an absentee bid on `lot`, in id order (before and after it opened).
    pub(crate) fn absentee_bidders(&self, lot: LotIndex) -> Vec<UserId> {
        self.lots
            .get(lot.as_usize())
            .map(|lot_state| lot_state.absentee.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Everyone with a bid on any lot (its book or its absentee book).
    pub(crate) fn bidders(&self) -> impl Iterator<Item = UserId> + '_ {
        self.lots.iter().flat_map(|lot_state| {
            lot_state
                .book
                .bidders()
                .chain(lot_state.absentee.keys().copied())
        })
    }
}

impl Lot {
    fn count_bid(&mut self, bidder: UserId) {
        let count = self.bids_by_bidder.entry(bidder).or_insert(0);
        *count = count.saturating_add(1);
        self.bid_count = self.bid_count.saturating_add(1);
    }

    fn uncount_bid(&mut self, bidder: UserId) {
        if let Some(count) = self.bids_by_bidder.get_mut(&bidder) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.bids_by_bidder.remove(&bidder);
            }
            self.bid_count = self.bid_count.saturating_sub(1);
        }
    }
}

//! [`Auction`]: one auction's state and the two ways it changes, deciding on a
//! command ([`Auction::apply`]) and replaying an event ([`Auction::apply_event`]).
//!
//! Every change goes through events: `apply` validates the command against the
//! current state without touching it, then emits events, each applied with the
//! same code replay uses. So a replayed log rebuilds exactly the state that
//! produced it, and a rejected command cannot leave anything half done.

use serde::{Deserialize, Serialize};

use crate::command::{Actor, Command, Role};
use crate::dutch::Dutch;
use crate::english::English;
use crate::event::{Event, EventKind};
use crate::id::{AuctionId, LotIndex, UserId};
use crate::limits::MAX_TIMER_FIRINGS_PER_TICK;
use crate::live::Live;
use crate::money::{Currency, Money, validate_amount_in};
use crate::rejection::Rejection;
use crate::sealed::Sealed;
use crate::spec::{AuctionSpec, FormatSpec, SpecError};
use crate::time::Timestamp;
use crate::view::{AuctionStatus, AuctionView, BidStatus};
use crate::{dutch, english, live, sealed};

/// What an accepted command did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// How many events the command pushed (zero for a tick with nothing due).
    pub events_emitted: usize,
}

/// Why an event could not be replayed: the log does not belong to this auction or
/// is corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The event's sequence number is not the next one.
    #[error("expected event {expected}, got {got}")]
    OutOfSequence {
        /// The sequence number the auction expects.
        expected: u64,
        /// The one the event has.
        got: u64,
    },
    /// The event is earlier than the previous one.
    #[error("event time went backwards")]
    TimeWentBackwards,
    /// The event does not fit this auction's format or names a lot it lacks.
    #[error("the event does not apply to this auction")]
    NotApplicable,
}

/// Why [`Auction::update`] refused. The auction is left exactly as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// Only an admin or the service may update.
    #[error("only an admin or the catalog may update an auction")]
    NotPermitted,
    /// The auction is no longer scheduled (or is a live session).
    #[error("only a scheduled auction can be updated")]
    NotEditable,
    /// The caller's expected sequence is not the auction's.
    #[error("the auction changed: its sequence is {current}")]
    VersionConflict {
        /// The auction's [`Auction::next_seq`].
        current: u64,
    },
    /// The new spec names another auction or seller.
    #[error("the auction id and seller cannot change")]
    IdentityChanged,
    /// The new spec has another format.
    #[error("the format cannot change")]
    FormatChanged,
    /// The new opening time is not after now.
    #[error("the new start time must be in the future")]
    StartNotInFuture,
    /// The new spec is invalid.
    #[error(transparent)]
    Spec(SpecError),
}

/// The parts every format shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Common {
    pub(crate) auction_id: AuctionId,
    pub(crate) seller: UserId,
    pub(crate) currency: Currency,
    /// The currency's decimal places and smallest unit, looked up once at creation
    /// because the hot path needs them on every bid.
    pub(crate) minor_units: u32,
    pub(crate) minor_unit: rust_decimal::Decimal,
    pub(crate) start_at: Timestamp,
    pub(crate) status: AuctionStatus,
    /// The sequence number the next event gets.
    pub(crate) next_seq: u64,
    /// When the last event happened; `now` may not go below it.
    pub(crate) last_event_at: Option<Timestamp>,
}

impl Common {
    /// Stamps an event with the next sequence number. Only called when the event is
    /// about to be applied, so the counter moves only for applied events.
    pub(crate) fn stamp(&mut self, at: Timestamp, kind: EventKind) -> Event {
        let event = Event {
            seq: self.next_seq,
            at,
            kind,
        };
        self.advance(&event);
        event
    }

    fn advance(&mut self, event: &Event) {
        debug_assert_eq!(event.seq, self.next_seq);
        debug_assert!(self.last_event_at.is_none_or(|last| last <= event.at));
        self.next_seq += 1;
        self.last_event_at = Some(event.at);
        // The lifecycle transitions every format shares.
        match event.kind {
            EventKind::Opened => self.status = AuctionStatus::Open,
            EventKind::Extended { .. } => self.status = AuctionStatus::Extended,
            EventKind::Cancelled { .. } => self.status = AuctionStatus::Cancelled,
            EventKind::Sold { .. } | EventKind::DutchEnded { .. } => {
                self.status = AuctionStatus::Closed
            }
            EventKind::Unsold { .. } => self.status = AuctionStatus::Unsold,
            EventKind::SessionEnded { lots_sold } => {
                self.status = if lots_sold > 0 {
                    AuctionStatus::Closed
                } else {
                    AuctionStatus::Unsold
                };
            }
            EventKind::BidAccepted { .. }
            | EventKind::BuyItNowWithdrawn
            | EventKind::Updated
            | EventKind::BidRetracted { .. }
            | EventKind::ClockTicked { .. }
            | EventKind::UnitsSold { .. }
            | EventKind::SealedBidPlaced { .. }
            | EventKind::SealedBidWithdrawn { .. }
            | EventKind::SealedBidExpired { .. }
            | EventKind::AbsenteeBidPlaced { .. }
            | EventKind::LotOpened { .. }
            | EventKind::FairWarning { .. }
            | EventKind::LotSold { .. }
            | EventKind::LotPassed { .. }
            | EventKind::LotReopened { .. }
            | EventKind::BidUndone { .. } => {}
        }
    }

    /// Bidding is possible: open (or extended).
    pub(crate) fn check_open(&self) -> Result<(), Rejection> {
        match self.status {
            AuctionStatus::Open | AuctionStatus::Extended => Ok(()),
            AuctionStatus::Scheduled => Err(Rejection::AuctionNotOpen),
            AuctionStatus::Closed | AuctionStatus::Unsold => Err(Rejection::AuctionClosed),
            AuctionStatus::Cancelled => Err(Rejection::AuctionCancelled),
        }
    }

    /// Not yet closed or cancelled (scheduled is fine).
    pub(crate) fn check_not_finished(&self) -> Result<(), Rejection> {
        match self.status {
            AuctionStatus::Scheduled | AuctionStatus::Open | AuctionStatus::Extended => Ok(()),
            AuctionStatus::Closed | AuctionStatus::Unsold => Err(Rejection::AuctionClosed),
            AuctionStatus::Cancelled => Err(Rejection::AuctionCancelled),
        }
    }

    /// The actor may bid: never the seller, only in the bidder role.
    pub(crate) fn check_bidder(&self, actor: Actor) -> Result<(), Rejection> {
        if actor.user_id == self.seller {
            return Err(Rejection::SellerCannotBid);
        }
        match actor.role {
            Role::Bidder => Ok(()),
            Role::Seller | Role::Auctioneer | Role::Admin | Role::System => {
                Err(Rejection::NotBidder)
            }
        }
    }

    /// The amount is in the auction's currency and a valid amount in it.
    pub(crate) fn check_money(&self, money: Money) -> Result<(), Rejection> {
        if money.currency != self.currency {
            return Err(Rejection::WrongCurrency {
                expected: self.currency,
            });
        }
        validate_amount_in(money.amount, self.minor_units).map_err(|_| Rejection::InvalidAmount)
    }

    pub(crate) fn check_admin(&self, actor: Actor) -> Result<(), Rejection> {
        match actor.role {
            Role::Admin => Ok(()),
            Role::Bidder | Role::Seller | Role::Auctioneer | Role::System => {
                Err(Rejection::NotAdmin)
            }
        }
    }

    pub(crate) fn check_auctioneer(&self, actor: Actor) -> Result<(), Rejection> {
        match actor.role {
            Role::Auctioneer => Ok(()),
            Role::Bidder | Role::Seller | Role::Admin | Role::System => {
                Err(Rejection::NotAuctioneer)
            }
        }
    }

    /// Cancelling: admins until the close; the seller only until a bid meets the
    /// reserve (`reserve_met`, which each format defines).
    pub(crate) fn check_cancel(&self, actor: Actor, reserve_met: bool) -> Result<(), Rejection> {
        self.check_not_finished()?;
        match actor.role {
            Role::Admin => Ok(()),
            Role::Seller if actor.user_id == self.seller => {
                if reserve_met {
                    Err(Rejection::ReserveMetCannotCancel)
                } else {
                    Ok(())
                }
            }
            Role::Seller | Role::Bidder | Role::Auctioneer | Role::System => {
                Err(Rejection::NotSeller)
            }
        }
    }

    pub(crate) fn money(&self, amount: rust_decimal::Decimal) -> Money {
        Money::new(amount, self.currency)
    }
}

/// Each format's own state and parameters.
// One value per auction, never stored in bulk, and the English variant is the hot
// one: boxing it would add an indirection to every bid to save a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Format {
    English(English),
    Dutch(Dutch),
    Sealed(Sealed),
    Live(Live),
}

/// One auction (or live session): its spec and its state. `PartialEq` and serde
/// make it a snapshot that can be stored and compared with a replayed copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auction {
    common: Common,
    format: Format,
}

impl Auction {
    /// Creates an auction in the scheduled state after validating its spec.
    pub fn new(spec: AuctionSpec) -> Result<Auction, SpecError> {
        spec.validate()?;
        let common = Common {
            auction_id: spec.auction_id,
            seller: spec.seller,
            currency: spec.currency,
            minor_units: spec.currency.minor_units(),
            minor_unit: spec.currency.minor_unit(),
            start_at: spec.start_at,
            status: AuctionStatus::Scheduled,
            next_seq: 0,
            last_event_at: None,
        };
        let format = match spec.format {
            FormatSpec::English(english) => Format::English(English::new(english)),
            FormatSpec::Dutch(dutch) => Format::Dutch(Dutch::new(dutch)?),
            FormatSpec::Sealed(sealed) => Format::Sealed(Sealed::new(sealed)),
            FormatSpec::Live(live) => Format::Live(Live::new(live)),
        };
        Ok(Auction { common, format })
    }

    /// The spec the auction was created from.
    pub fn spec(&self) -> AuctionSpec {
        AuctionSpec {
            auction_id: self.common.auction_id,
            seller: self.common.seller,
            currency: self.common.currency,
            start_at: self.common.start_at,
            format: match &self.format {
                Format::English(english) => FormatSpec::English(english.spec.clone()),
                Format::Dutch(dutch) => FormatSpec::Dutch(dutch.spec.clone()),
                Format::Sealed(sealed) => FormatSpec::Sealed(sealed.spec.clone()),
                Format::Live(live) => FormatSpec::Live(live.spec.clone()),
            },
        }
    }

    /// The auction's id.
    pub fn auction_id(&self) -> AuctionId {
        self.common.auction_id
    }

    /// The lifecycle status.
    pub fn status(&self) -> AuctionStatus {
        self.common.status
    }

    /// The sequence number the next event will get (the number of events so far).
    pub fn next_seq(&self) -> u64 {
        self.common.next_seq
    }

    /// When the last event happened; `now` must not be earlier.
    pub fn last_event_at(&self) -> Option<Timestamp> {
        self.common.last_event_at
    }

    /// When the shard must next deliver [`crate::Action::Tick`]: the start, the end,
    /// the next Dutch price step, the open lot's countdown, or the next sealed-bid
    /// expiry. `None` when nothing is scheduled (finished, or a live session waiting
    /// for its auctioneer).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        match self.common.status {
            // A single lot waits for its auctioneer, not for a start time.
            AuctionStatus::Scheduled => match &self.format {
                Format::Live(live) if live.spec.is_single_lot() => None,
                Format::English(_) | Format::Dutch(_) | Format::Sealed(_) | Format::Live(_) => {
                    Some(self.common.start_at)
                }
            },
            AuctionStatus::Closed | AuctionStatus::Unsold | AuctionStatus::Cancelled => None,
            AuctionStatus::Open | AuctionStatus::Extended => match &self.format {
                Format::English(english) => Some(english.end_at),
                Format::Dutch(dutch) => Some(dutch.next_tick_at(self.common.start_at)),
                Format::Sealed(sealed) => Some(sealed.next_deadline()),
                Format::Live(live) => live.next_deadline(),
            },
        }
    }

    /// Decides on `command` at `now`. On `Ok` the command's events have been
    /// applied and pushed onto `events`; on `Err` nothing changed and nothing was
    /// pushed.
    pub fn apply(
        &mut self,
        command: Command,
        now: Timestamp,
        events: &mut Vec<Event>,
    ) -> Result<Outcome, Rejection> {
        let before = events.len();
        if !now.is_in_range() {
            return Err(Rejection::TimeOutOfRange);
        }
        if let Some(last_event_at) = self.common.last_event_at
            && now < last_event_at
        {
            return Err(Rejection::TimeWentBackwards { last_event_at });
        }
        match command.action {
            crate::command::Action::Tick => self.fire_due(now, events),
            _ => {
                if let Some(deadline) = self.next_deadline()
                    && deadline <= now
                {
                    return Err(Rejection::TimerDue { deadline });
                }
                match &mut self.format {
                    Format::English(english) => {
                        english::apply(&mut self.common, english, command, now, events)?
                    }
                    Format::Dutch(dutch) => {
                        dutch::apply(&mut self.common, dutch, command, now, events)?
                    }
                    Format::Sealed(sealed) => {
                        sealed::apply(&mut self.common, sealed, command, now, events)?
                    }
                    Format::Live(live) => {
                        live::apply(&mut self.common, live, command, now, events)?
                    }
                }
            }
        }
        Ok(Outcome {
            events_emitted: events.len() - before,
        })
    }

    /// Fires every timer due at `now`, earliest first, each stamped with the instant
    /// it was due.
    fn fire_due(&mut self, now: Timestamp, events: &mut Vec<Event>) {
        for _ in 0..MAX_TIMER_FIRINGS_PER_TICK {
            let Some(deadline) = self.next_deadline() else {
                return;
            };
            if deadline > now {
                return;
            }
            let seq_before = self.common.next_seq;
            match &mut self.format {
                Format::English(english) => {
                    english::fire(&mut self.common, english, deadline, events)
                }
                Format::Dutch(dutch) => dutch::fire(&mut self.common, dutch, deadline, now, events),
                Format::Sealed(sealed) => sealed::fire(&mut self.common, sealed, deadline, events),
                Format::Live(live) => live::fire(&mut self.common, live, deadline, events),
            }
            // Invariant: every firing emits at least one event and so retires its
            // deadline; otherwise this loop would spin to its bound without progress.
            assert!(
                self.common.next_seq > seq_before,
                "a due timer fired without effect"
            );
        }
        // Invariant: `MAX_TIMER_FIRINGS_PER_TICK` exceeds everything that can be due
        // at once, so the loop above always returns first.
        debug_assert!(false, "timer firings exceeded their bound");
    }

    /// Replays one event from the log. Events must come in sequence order, starting
    /// from the auction's creation.
    pub fn apply_event(&mut self, event: &Event) -> Result<(), ReplayError> {
        if event.seq != self.common.next_seq {
            return Err(ReplayError::OutOfSequence {
                expected: self.common.next_seq,
                got: event.seq,
            });
        }
        if self
            .common
            .last_event_at
            .is_some_and(|last| event.at < last)
        {
            return Err(ReplayError::TimeWentBackwards);
        }
        let applicable = match &self.format {
            Format::English(_) => english::accepts(&event.kind),
            Format::Dutch(_) => dutch::accepts(&event.kind),
            Format::Sealed(_) => sealed::accepts(&event.kind),
            Format::Live(live) => live.accepts(&event.kind),
        };
        if !applicable {
            return Err(ReplayError::NotApplicable);
        }
        self.common.advance(event);
        match &mut self.format {
            Format::English(english) => english.evolve(&self.common, event),
            Format::Dutch(dutch) => dutch.evolve(event),
            Format::Sealed(sealed) => sealed.evolve(event),
            Format::Live(live) => live.evolve(&self.common, event),
        }
        Ok(())
    }

    /// What anyone may see: no reserve amount, no other bidder's maximum, no sealed
    /// amount before the close.
    pub fn view(&self) -> AuctionView {
        let format = match &self.format {
            Format::English(english) => english.view(&self.common),
            Format::Dutch(dutch) => dutch.view(&self.common),
            Format::Sealed(sealed) => sealed.view(&self.common),
            Format::Live(live) => live.view(&self.common),
        };
        AuctionView {
            auction_id: self.common.auction_id,
            status: self.common.status,
            currency: self.common.currency,
            start_at: self.common.start_at,
            next_seq: self.common.next_seq,
            format,
        }
    }

    /// Where `bidder` stands: winning, outbid, won, lost, or (sealed) standing with
    /// the outcome hidden. `lot` names the live lot and is ignored otherwise; a
    /// single-lot auction needs none.
    pub fn bid_status(&self, bidder: UserId, lot: Option<LotIndex>) -> Option<BidStatus> {
        match &self.format {
            Format::English(english) => english.bid_status(&self.common, bidder),
            Format::Dutch(dutch) => dutch.bid_status(bidder),
            Format::Sealed(sealed) => sealed.bid_status(&self.common, bidder),
            Format::Live(live) => {
                live.bid_status(&self.common, bidder, lot.or_else(|| live.single_lot())?)
            }
        }
    }

    /// Who left an absentee bid on a live lot (`lot`, or the single lot), in id
    /// order; empty for the other formats. Private: for telling those bidders
    /// that the lot opened, never for showing anyone else.
    pub fn absentee_bidders(&self, lot: Option<LotIndex>) -> Vec<UserId> {
        match &self.format {
            Format::Live(live) => lot
                .or_else(|| live.single_lot())
                .map(|lot| live.absentee_bidders(lot))
                .unwrap_or_default(),
            Format::English(_) | Format::Dutch(_) | Format::Sealed(_) => Vec::new(),
        }
    }

    /// The leader now: English, or a single-lot live auction's (absentee bids
    /// lead nobody before the lot opens); `None` for the other formats.
    pub fn leader(&self) -> Option<UserId> {
        match &self.format {
            Format::English(english) => english.book.leader(),
            Format::Live(live) => live.single_lot().and_then(|lot| live.leader(lot)),
            Format::Dutch(_) | Format::Sealed(_) => None,
        }
    }

    /// Everyone with a bid that still counts (English maximums, standing sealed
    /// bids, Dutch buyers), in id order without repeats: who an end, an
    /// extension or a cancellation concerns. Live: every bidder on any lot,
    /// absentee bidders included.
    pub fn participants(&self) -> Vec<UserId> {
        let mut users: Vec<UserId> = match &self.format {
            Format::English(english) => english.book.bidders().collect(),
            Format::Sealed(sealed) => sealed.bidders().collect(),
            Format::Dutch(dutch) => dutch.buyers().collect(),
            Format::Live(live) => live.bidders().collect(),
        };
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Replaces the spec of a SCHEDULED auction (new parameters or schedule, same
    /// format) and emits [`EventKind::Updated`]. Only an admin (or the service
    /// acting for the catalog, [`Role::System`]) may; the new spec is validated
    /// like a new auction's and must open after `now`. `expected_next_seq`, when
    /// given, must equal [`Auction::next_seq`] (optimistic concurrency). On `Err`
    /// nothing changed.
    ///
    /// The event carries no spec: the caller stores the new spec in place of the
    /// old one, and replaying the log from that spec gives this same state (a
    /// scheduled auction has no events but `Updated` ones).
    pub fn update(
        &mut self,
        actor: Actor,
        spec: AuctionSpec,
        expected_next_seq: Option<u64>,
        now: Timestamp,
        events: &mut Vec<Event>,
    ) -> Result<(), UpdateError> {
        match actor.role {
            Role::Admin | Role::System => {}
            Role::Bidder | Role::Seller | Role::Auctioneer => {
                return Err(UpdateError::NotPermitted);
            }
        }
        if let Some(expected) = expected_next_seq
            && expected != self.common.next_seq
        {
            return Err(UpdateError::VersionConflict {
                current: self.common.next_seq,
            });
        }
        match (&self.format, self.common.status) {
            (Format::Live(_), _) => return Err(UpdateError::NotEditable),
            (_, AuctionStatus::Scheduled) => {}
            (
                _,
                AuctionStatus::Open
                | AuctionStatus::Extended
                | AuctionStatus::Closed
                | AuctionStatus::Unsold
                | AuctionStatus::Cancelled,
            ) => return Err(UpdateError::NotEditable),
        }
        if spec.auction_id != self.common.auction_id || spec.seller != self.common.seller {
            return Err(UpdateError::IdentityChanged);
        }
        let same_format = matches!(
            (&self.format, &spec.format),
            (Format::English(_), FormatSpec::English(_))
                | (Format::Dutch(_), FormatSpec::Dutch(_))
                | (Format::Live(_), FormatSpec::Live(_))
        ) || matches!(
            (&self.format, &spec.format),
            (Format::Sealed(old), FormatSpec::Sealed(new)) if old.spec.pricing == new.pricing
        );
        if !same_format {
            return Err(UpdateError::FormatChanged);
        }
        if !now.is_in_range() {
            return Err(UpdateError::Spec(SpecError::TimeOutOfRange {
                field: "now",
            }));
        }
        let floor = self.common.last_event_at.map_or(now, |last| last.max(now));
        if spec.start_at <= floor {
            return Err(UpdateError::StartNotInFuture);
        }
        let mut next = Auction::new(spec).map_err(UpdateError::Spec)?;
        next.common.next_seq = self.common.next_seq;
        next.common.last_event_at = self.common.last_event_at;
        let event = next.common.stamp(floor, EventKind::Updated);
        *self = next;
        events.push(event);
        Ok(())
    }

    /// `bidder`'s own maximum (English, live lot) or sealed bid: private to that
    /// bidder, for showing them what they have left with the engine.
    pub fn own_bid(&self, bidder: UserId, lot: Option<LotIndex>) -> Option<Money> {
        let amount = match &self.format {
            Format::English(english) => english.book.max_of(bidder).map(|max| max.amount),
            Format::Dutch(_) => None,
            Format::Sealed(sealed) => sealed.own_bid(bidder),
            Format::Live(live) => live.own_bid(bidder, lot.or_else(|| live.single_lot())?),
        }?;
        Some(self.common.money(amount))
    }
}

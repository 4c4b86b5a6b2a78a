//! Events: what happened, in order. They are the durable log: the bidding service
//! appends them, and [`crate::Auction::apply_event`] replays them to rebuild an
//! auction. They carry everything, including proxy maximums and sealed amounts, so
//! the log is private; [`Event::to_public`] projects the part anyone may see.

use serde::{Deserialize, Serialize};

use crate::command::Actor;
use crate::id::{LotIndex, RequestId, UserId};
use crate::money::Money;
use crate::time::Timestamp;

/// One thing that happened to one auction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The per-auction sequence number, assigned by the engine: 0, 1, 2, ...
    pub seq: u64,
    /// When it happened: the command's `now`, or for timers the instant the timer
    /// was due (so a late tick does not move a close).
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

/// A live lot's public position as it opened: public, since the opening shows
/// who leads at what price; the absentee maximums behind it stay private.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotOpening {
    /// The price the absentee book set; `None` without absentee bids (the lot
    /// stands at its starting price).
    pub price: Option<Money>,
    /// The leading absentee bidder; `None` without absentee bids.
    pub leader: Option<UserId>,
    /// The smallest acceptable first floor bid.
    pub minimum_bid: Money,
}

/// How a bid reached a proxy book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BidKind {
    /// A plain bid: a maximum equal to its amount.
    Plain,
    /// A proxy maximum.
    Maximum,
    /// A live commission bid left before the lot opened, accepted straight into the
    /// proxy book. Only logs written before absentee bids had their own event
    /// ([`EventKind::AbsenteeBidPlaced`]) hold it; it stays so they replay.
    Absentee,
}

/// Why something closed without a sale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnsoldReason {
    /// Nobody bid.
    NoBids,
    /// The best bid was below the reserve.
    ReserveNotMet,
    /// The Dutch clock reached its floor without any accept.
    NoAccept,
    /// The auctioneer passed the lot.
    Passed,
    /// A live session ended without selling any lot.
    NothingSold,
}

/// What happened. Amounts are full-precision and unredacted; see [`PublicEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Bidding opened (the live session opened).
    Opened,
    /// The auction was cancelled by the seller or an admin.
    Cancelled {
        /// The cancelling request.
        request_id: RequestId,
        /// Who cancelled, in which role.
        by: Actor,
    },
    /// English or sealed: the auction closed with a winner at a price.
    Sold {
        /// The winner.
        winner: UserId,
        /// What the winner pays.
        price: Money,
        /// The buy-it-now request, when the sale was a buy-it-now.
        buy_it_now: Option<RequestId>,
    },
    /// English or sealed or Dutch: the auction closed without a sale.
    Unsold {
        /// Why.
        reason: UnsoldReason,
    },
    /// English or live: a bid (plain, maximum or absentee) was accepted into the proxy
    /// book; `price` and `leader` are the outcome after it.
    BidAccepted {
        /// The bid's request.
        request_id: RequestId,
        /// The live lot, `None` for English.
        lot: Option<LotIndex>,
        /// Who bid.
        bidder: UserId,
        /// Plain, maximum or absentee.
        bid_kind: BidKind,
        /// The bidder's new maximum (private).
        max_amount: Money,
        /// The visible price after the bid.
        price: Money,
        /// The leader after the bid.
        leader: UserId,
        /// The leader before the bid, so the service can tell them they were outbid.
        previous_leader: Option<UserId>,
        /// Whether the leader's maximum meets the reserve after the bid.
        reserve_met: bool,
        /// When the gateway received the bid.
        received_at: Timestamp,
    },
    /// English: buy-it-now is no longer offered.
    BuyItNowWithdrawn,
    /// A scheduled auction's parameters or schedule were replaced
    /// ([`crate::Auction::update`]). The new spec is stored next to the log by
    /// the service (the auction's spec row), so the event carries nothing:
    /// replaying the log from the latest spec rebuilds the same state.
    Updated,
    /// English: a late bid moved the end (soft close).
    Extended {
        /// The new end.
        end_at: Timestamp,
        /// How far past the original end the auction now runs.
        total_extension_ms: i64,
    },
    /// English, live: an admin retracted a bidder's bids; the outcome was recomputed.
    BidRetracted {
        /// The admin's request.
        request_id: RequestId,
        /// The live lot, `None` for English.
        lot: Option<LotIndex>,
        /// Whose bids were removed.
        bidder: UserId,
        /// The price after recomputation, `None` when no bid is left.
        price: Option<Money>,
        /// The leader after recomputation.
        leader: Option<UserId>,
        /// Whether the reserve is met after recomputation.
        reserve_met: bool,
    },
    /// Dutch: the clock moved to a lower price.
    ClockTicked {
        /// Ticks since the start (0 is the start price).
        tick_index: u64,
        /// The new price.
        price: Money,
    },
    /// Dutch: a bidder took units at the clock price.
    UnitsSold {
        /// The accepting request.
        request_id: RequestId,
        /// The buyer.
        buyer: UserId,
        /// Units taken.
        quantity: u32,
        /// The price per unit.
        unit_price: Money,
        /// Units left afterwards.
        remaining: u32,
    },
    /// Dutch: the auction closed having sold at least one unit (sold out, or the
    /// clock ran out with units left).
    DutchEnded {
        /// Units sold in total.
        units_sold: u32,
        /// Units left unsold.
        units_unsold: u32,
    },
    /// Sealed: a bid was placed or replaced (private; the public learns only that
    /// a bid was received).
    SealedBidPlaced {
        /// The bid's request.
        request_id: RequestId,
        /// Who bid.
        bidder: UserId,
        /// The sealed amount.
        amount: Money,
        /// When it stops counting, if it has a time-to-live.
        expires_at: Option<Timestamp>,
        /// When the gateway received the bid.
        received_at: Timestamp,
    },
    /// Sealed: a standing bid was withdrawn by its bidder, or retracted by an admin.
    SealedBidWithdrawn {
        /// The withdrawing request.
        request_id: RequestId,
        /// Whose bid.
        bidder: UserId,
        /// Whether an admin retracted it.
        by_admin: bool,
    },
    /// Sealed: a bid's time-to-live ran out.
    SealedBidExpired {
        /// Whose bid.
        bidder: UserId,
    },
    /// Live: an absentee (commission) bid was placed or replaced on a pending lot.
    /// It goes into the lot's private absentee book, not its proxy book: nobody
    /// competes with it, nobody is outbid by it, and the public learns only that an
    /// absentee bid was received. The book is applied when the lot opens.
    AbsenteeBidPlaced {
        /// The bid's request.
        request_id: RequestId,
        /// The pending lot.
        lot: LotIndex,
        /// Who bid.
        bidder: UserId,
        /// The bidder's maximum, replacing any earlier one on the lot (private).
        max_amount: Money,
        /// When the gateway received the bid.
        received_at: Timestamp,
    },
    /// Live: a lot opened for bidding. Its absentee book, if any, was applied as
    /// maximums: the best leads at the competitive price over the top two.
    LotOpened {
        /// The lot.
        lot: LotIndex,
        /// When its countdown runs out unless a bid restarts it.
        deadline: Timestamp,
        /// The lot's public price, leader and minimum next bid right after the
        /// opening (the absentee book applied), so a replayed opening shows
        /// what it opened at rather than where the lot stands later. Derived:
        /// replaying ignores it. `None` in logs written before it was recorded.
        #[serde(default)]
        opening: Option<LotOpening>,
    },
    /// Live: the auctioneer gave fair warning.
    FairWarning {
        /// The lot.
        lot: LotIndex,
    },
    /// Live: a lot was sold.
    LotSold {
        /// The lot.
        lot: LotIndex,
        /// The buyer.
        winner: UserId,
        /// The hammer price.
        price: Money,
        /// Whether the countdown ran out (rather than the auctioneer's hammer).
        by_countdown: bool,
    },
    /// Live: a lot closed unsold.
    LotPassed {
        /// The lot.
        lot: LotIndex,
        /// Why.
        reason: UnsoldReason,
    },
    /// Live: a closed lot was reopened; its bids stand.
    LotReopened {
        /// The reopened lot.
        lot: LotIndex,
        /// A lot that was open without bids and went back to waiting.
        suspended: Option<LotIndex>,
        /// The reopened lot's new countdown deadline.
        deadline: Timestamp,
    },
    /// Live: the auctioneer undid the most recent bid on the open lot.
    BidUndone {
        /// The lot.
        lot: LotIndex,
        /// Whose bid was undone.
        bidder: UserId,
        /// The price after the undo, `None` when no bid is left.
        price: Option<Money>,
        /// The leader after the undo.
        leader: Option<UserId>,
        /// Whether the reserve is met after the undo.
        reserve_met: bool,
    },
    /// Live: the session ended (every lot sold or passed).
    SessionEnded {
        /// How many lots sold.
        lots_sold: u32,
    },
}

/// The part of an [`Event`] anyone may see: no proxy maximums, no reserve amount, no
/// sealed amounts or sealed bidders before the close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicEvent {
    /// The event's sequence number (gaps are events the public does not see).
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// What happened, redacted.
    pub kind: PublicEventKind,
}

/// Redacted event kinds; see [`EventKind`] for the meaning of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum PublicEventKind {
    Opened,
    Cancelled,
    Sold {
        winner: UserId,
        price: Money,
    },
    Unsold {
        reason: UnsoldReason,
    },
    /// A bid was accepted; the bidder's maximum stays private.
    PriceChanged {
        lot: Option<LotIndex>,
        bidder: UserId,
        price: Money,
        leader: UserId,
        reserve_met: bool,
    },
    BuyItNowWithdrawn,
    Updated,
    Extended {
        end_at: Timestamp,
    },
    BidRetracted {
        lot: Option<LotIndex>,
        price: Option<Money>,
        leader: Option<UserId>,
        reserve_met: bool,
    },
    ClockTicked {
        price: Money,
    },
    UnitsSold {
        buyer: UserId,
        quantity: u32,
        unit_price: Money,
        remaining: u32,
    },
    DutchEnded {
        units_sold: u32,
        units_unsold: u32,
    },
    /// A sealed bid was received; nothing else about it is public.
    SealedBidReceived,
    /// An absentee bid was placed on a pending lot; nothing else about it is public.
    AbsenteeBidReceived {
        lot: LotIndex,
    },
    LotOpened {
        lot: LotIndex,
        deadline: Timestamp,
        opening: Option<LotOpening>,
    },
    FairWarning {
        lot: LotIndex,
    },
    LotSold {
        lot: LotIndex,
        winner: UserId,
        price: Money,
    },
    LotPassed {
        lot: LotIndex,
    },
    LotReopened {
        lot: LotIndex,
        deadline: Timestamp,
    },
    BidUndone {
        lot: LotIndex,
        price: Option<Money>,
        leader: Option<UserId>,
        reserve_met: bool,
    },
    SessionEnded {
        lots_sold: u32,
    },
}

impl Event {
    /// The public projection, or `None` for events the public must not see at all
    /// (sealed withdrawals and expiries, which would reveal who bid).
    pub fn to_public(&self) -> Option<PublicEvent> {
        let kind = match self.kind {
            EventKind::Opened => PublicEventKind::Opened,
            EventKind::Cancelled { .. } => PublicEventKind::Cancelled,
            EventKind::Sold { winner, price, .. } => PublicEventKind::Sold { winner, price },
            EventKind::Unsold { reason } => PublicEventKind::Unsold { reason },
            EventKind::BidAccepted {
                lot,
                bidder,
                price,
                leader,
                reserve_met,
                bid_kind,
                ..
            } => match bid_kind {
                // An absentee bid on a lot not yet open is private until the lot
                // opens; the price then shows in the lot's view.
                BidKind::Absentee => return None,
                BidKind::Plain | BidKind::Maximum => PublicEventKind::PriceChanged {
                    lot,
                    bidder,
                    price,
                    leader,
                    reserve_met,
                },
            },
            EventKind::BuyItNowWithdrawn => PublicEventKind::BuyItNowWithdrawn,
            EventKind::Updated => PublicEventKind::Updated,
            EventKind::Extended { end_at, .. } => PublicEventKind::Extended { end_at },
            EventKind::BidRetracted {
                lot,
                price,
                leader,
                reserve_met,
                ..
            } => PublicEventKind::BidRetracted {
                lot,
                price,
                leader,
                reserve_met,
            },
            EventKind::ClockTicked { price, .. } => PublicEventKind::ClockTicked { price },
            EventKind::UnitsSold {
                buyer,
                quantity,
                unit_price,
                remaining,
                ..
            } => PublicEventKind::UnitsSold {
                buyer,
                quantity,
                unit_price,
                remaining,
            },
            EventKind::DutchEnded {
                units_sold,
                units_unsold,
            } => PublicEventKind::DutchEnded {
                units_sold,
                units_unsold,
            },
            EventKind::SealedBidPlaced { .. } => PublicEventKind::SealedBidReceived,
            EventKind::SealedBidWithdrawn { .. } | EventKind::SealedBidExpired { .. } => {
                return None;
            }
            EventKind::AbsenteeBidPlaced { lot, .. } => {
                PublicEventKind::AbsenteeBidReceived { lot }
            }
            EventKind::LotOpened {
                lot,
                deadline,
                opening,
            } => PublicEventKind::LotOpened {
                lot,
                deadline,
                opening,
            },
            EventKind::FairWarning { lot } => PublicEventKind::FairWarning { lot },
            EventKind::LotSold {
                lot, winner, price, ..
            } => PublicEventKind::LotSold { lot, winner, price },
            EventKind::LotPassed { lot, .. } => PublicEventKind::LotPassed { lot },
            EventKind::LotReopened { lot, deadline, .. } => {
                PublicEventKind::LotReopened { lot, deadline }
            }
            EventKind::BidUndone {
                lot,
                price,
                leader,
                reserve_met,
                ..
            } => PublicEventKind::BidUndone {
                lot,
                price,
                leader,
                reserve_met,
            },
            EventKind::SessionEnded { lots_sold } => PublicEventKind::SessionEnded { lots_sold },
        };
        Some(PublicEvent {
            seq: self.seq,
            at: self.at,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a LotOpened stored before the opening position was recorded
    // still reads (as no opening), and a new one keeps it.
    #[test]
    fn lot_opened_reads_with_and_without_its_opening() {
        let old = r#"{"LotOpened":{"lot":0,"deadline":70000}}"#;
        let kind: EventKind = serde_json::from_str(old).unwrap();
        assert_eq!(
            kind,
            EventKind::LotOpened {
                lot: LotIndex(0),
                deadline: Timestamp::from_unix_ms(70_000),
                opening: None,
            }
        );
        let new = EventKind::LotOpened {
            lot: LotIndex(0),
            deadline: Timestamp::from_unix_ms(70_000),
            opening: Some(LotOpening {
                price: None,
                leader: Some(UserId(7)),
                minimum_bid: Money::new(rust_decimal::Decimal::TEN, crate::money::Currency::USD),
            }),
        };
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<EventKind>(&text).unwrap(), new);
    }
}

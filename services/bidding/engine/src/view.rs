//! What the public and each bidder may see. A view never contains the reserve
//! amount (only whether it is met), another bidder's maximum, or a sealed amount
//! before the close.

use serde::{Deserialize, Serialize};

use crate::id::{AuctionId, LotIndex, UserId};
use crate::increment::IncrementTable;
use crate::money::{Currency, Money};
use crate::spec::SealedPricing;
use crate::time::Timestamp;

/// The lifecycle: scheduled → open → (extended) → closed / unsold / cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuctionStatus {
    /// Created; bidding has not started.
    Scheduled,
    /// Accepting bids.
    Open,
    /// Accepting bids past the original end after a soft-close extension.
    Extended,
    /// Finished with a sale (for Dutch and live, at least one unit or lot sold).
    Closed,
    /// Finished without a sale.
    Unsold,
    /// Cancelled by the seller or an admin.
    Cancelled,
}

impl AuctionStatus {
    /// Whether nothing more can happen.
    pub fn is_finished(self) -> bool {
        match self {
            AuctionStatus::Closed | AuctionStatus::Unsold | AuctionStatus::Cancelled => true,
            AuctionStatus::Scheduled | AuctionStatus::Open | AuctionStatus::Extended => false,
        }
    }
}

/// The reserve as the public may know it: whether there is one and whether it is
/// met, never its amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReserveState {
    /// The auction has no reserve.
    NoReserve,
    /// "Reserve not met".
    NotMet,
    /// "Reserve met".
    Met,
}

/// Where one bidder stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BidStatus {
    /// Leading an open auction or lot (check the reserve state too).
    Winning,
    /// Someone else leads.
    Outbid,
    /// Won at the close.
    Won,
    /// Did not win (closed to someone else, unsold or cancelled).
    Lost,
    /// A sealed bid stands; the outcome is hidden until the close.
    Sealed,
    /// An absentee bid stands on a live lot not opened yet; whether it would
    /// lead is hidden until the lot opens.
    Absentee,
}

/// A live lot's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LotStatus {
    /// Not offered yet; takes absentee bids.
    Pending,
    /// Being offered.
    Open,
    /// Hammered (or counted down) to the leader.
    Sold,
    /// Closed unsold.
    Passed,
}

/// The public state of one auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionView {
    /// Which auction.
    pub auction_id: AuctionId,
    /// Lifecycle status.
    pub status: AuctionStatus,
    /// The auction's currency.
    pub currency: Currency,
    /// When bidding opens.
    pub start_at: Timestamp,
    /// The number of events so far; a subscriber that saw event `next_seq - 1` is
    /// up to date with this view.
    pub next_seq: u64,
    /// Format-specific state.
    pub format: FormatView,
}

/// Format-specific public state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FormatView {
    /// English.
    English {
        /// The current end (after extensions).
        end_at: Timestamp,
        /// The visible price; `None` before the first bid.
        price: Option<Money>,
        /// The smallest bid a non-leader may place now.
        minimum_bid: Money,
        /// The leader.
        leader: Option<UserId>,
        /// How many bidders have a maximum in the book.
        bidders: u32,
        /// Reserve met or not, never the amount.
        reserve: ReserveState,
        /// The buy-it-now price while it is offered.
        buy_it_now_price: Option<Money>,
        /// The winner once sold.
        winner: Option<UserId>,
        /// The price once sold.
        final_price: Option<Money>,
        /// Accepted bids, without a retracted bidder's.
        #[serde(default)]
        bid_count: u32,
        /// The increment table in force, so a caller can tell the minimum
        /// next bid after any price (a bid event's). Not serialised: stored
        /// answers do not need it and stay small.
        #[serde(skip)]
        increments: Option<IncrementTable>,
    },
    /// Dutch.
    Dutch {
        /// The current clock price.
        clock_price: Money,
        /// When the price next drops (or, at the floor, the clock ends).
        next_tick_at: Option<Timestamp>,
        /// Whether the clock is at its floor.
        at_floor: bool,
        /// Units offered.
        quantity: u32,
        /// Units left.
        remaining: u32,
    },
    /// Sealed.
    Sealed {
        /// When bidding closes.
        end_at: Timestamp,
        /// First- or second-price.
        pricing: SealedPricing,
        /// The smallest acceptable bid (the starting price).
        minimum_bid: Money,
        /// How many bids stand (withdrawn and expired ones do not).
        bids_standing: u32,
        /// The winner once closed.
        winner: Option<UserId>,
        /// The price once closed.
        final_price: Option<Money>,
    },
    /// Live session.
    Live {
        /// The lot being offered.
        open_lot: Option<LotIndex>,
        /// Every lot in running order.
        lots: Vec<LotView>,
        /// How many lots have sold.
        lots_sold: u32,
        /// The per-lot countdown.
        countdown_ms: i64,
    },
}

/// The public state of one live lot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotView {
    /// Which lot.
    pub lot: LotIndex,
    /// Its lifecycle status.
    pub status: LotStatus,
    /// The visible price once offered.
    pub price: Option<Money>,
    /// The smallest bid a non-leader may place.
    pub minimum_bid: Money,
    /// The leader once offered.
    pub leader: Option<UserId>,
    /// Reserve met or not.
    pub reserve: ReserveState,
    /// When the countdown runs out, while open.
    pub deadline: Option<Timestamp>,
    /// Fair warnings given since the last bid.
    pub fair_warnings: u32,
    /// The buyer once sold.
    pub winner: Option<UserId>,
    /// The hammer price once sold.
    pub hammer_price: Option<Money>,
    /// Single-lot auctions: when a hammered or passed result becomes final.
    pub finalize_at: Option<Timestamp>,
    /// How many bidders left an absentee bid (never the amounts).
    pub absentee_bids: u32,
    /// Accepted bids once offered (absentee bids count from the opening, one
    /// each), without undone ones or a retracted bidder's.
    #[serde(default)]
    pub bid_count: u32,
    /// How many bidders have a maximum in the lot's book once offered.
    #[serde(default)]
    pub bidders: u32,
    /// The opening asking price.
    pub starting_price: Money,
    /// When the lot was first opened.
    pub opened_at: Option<Timestamp>,
    /// Single-lot auctions: when the result became final.
    pub closed_at: Option<Timestamp>,
    /// Why the lot was passed, once passed.
    pub pass_reason: Option<crate::event::UnsoldReason>,
}

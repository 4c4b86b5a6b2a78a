//! Why a command was refused, with a stable machine-readable reason and a category
//! the service maps to a gRPC status code in one place.

use crate::id::LotIndex;
use crate::money::{Currency, Money};
use crate::time::Timestamp;

/// The kind of refusal, mapped by the service to gRPC codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectionCategory {
    /// The command is malformed whatever the state (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The command is well formed but the auction's state forbids it
    /// (`FAILED_PRECONDITION`).
    FailedPrecondition,
    /// The actor's role may not do this (`PERMISSION_DENIED`).
    PermissionDenied,
    /// The bid or lot named does not exist (`NOT_FOUND`).
    NotFound,
    /// A per-auction limit is reached (`RESOURCE_EXHAUSTED`).
    ResourceExhausted,
}

/// A refused command. The auction is left exactly as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The bid is below the smallest acceptable amount, which is given.
    #[error("bid below the minimum acceptable amount of {minimum}")]
    BidBelowMinimum {
        /// The smallest amount that would have been accepted.
        minimum: Money,
    },
    /// The auction (or session) has closed, sold or unsold.
    #[error("the auction is closed")]
    AuctionClosed,
    /// The auction was cancelled.
    #[error("the auction was cancelled")]
    AuctionCancelled,
    /// The auction has not opened yet.
    #[error("the auction is not open yet")]
    AuctionNotOpen,
    /// The seller tried to bid on their own auction.
    #[error("the seller cannot bid on their own auction")]
    SellerCannotBid,
    /// Only bidders bid; an admin or auctioneer acting as such may not.
    #[error("only a bidder may bid")]
    NotBidder,
    /// The amount is in another currency than the auction's.
    #[error("wrong currency, the auction is in {expected}")]
    WrongCurrency {
        /// The auction's currency.
        expected: Currency,
    },
    /// The amount is not positive, too precise for the currency, or too large.
    #[error("invalid amount")]
    InvalidAmount,
    /// A quantity of zero.
    #[error("invalid quantity")]
    InvalidQuantity,
    /// A sealed bid's time-to-live is not positive or too long.
    #[error("invalid time-to-live")]
    InvalidTtl,
    /// The command's time is out of range.
    #[error("time out of range")]
    TimeOutOfRange,
    /// The command does not apply to this auction's format.
    #[error("not supported by this auction's format")]
    UnsupportedForFormat,
    /// Only the auctioneer drives live lots.
    #[error("only the auctioneer may do this")]
    NotAuctioneer,
    /// Only an admin may do this.
    #[error("only an admin may do this")]
    NotAdmin,
    /// Only the auction's seller or an admin may cancel.
    #[error("only the seller or an admin may cancel")]
    NotSeller,
    /// The seller may not cancel once a bid meets the reserve.
    #[error("a bid meets the reserve; only an admin may cancel")]
    ReserveMetCannotCancel,
    /// The Dutch lot has fewer units left than asked for.
    #[error("only {available} units are available")]
    QuantityUnavailable {
        /// Units still available.
        available: u32,
    },
    /// The Dutch clock price is above the bidder's limit.
    #[error("the current price {current} is above the bidder's limit")]
    PriceAboveLimit {
        /// The current clock price.
        current: Money,
    },
    /// The buy-it-now price given differs from the auction's.
    #[error("the buy-it-now price is {expected}")]
    PriceMismatch {
        /// The auction's buy-it-now price.
        expected: Money,
    },
    /// Buy-it-now is not (or no longer) offered.
    #[error("buy-it-now is not available")]
    BuyItNowUnavailable,
    /// The named bidder has no bid here (or it expired).
    #[error("no such bid")]
    NoSuchBid,
    /// The named lot does not exist.
    #[error("no such lot")]
    NoSuchLot,
    /// No lot is open.
    #[error("no lot is open")]
    NoLotOpen,
    /// The lot named is not the one open.
    #[error("that lot is not open")]
    LotNotOpen {
        /// The lot open now, if any.
        open: Option<LotIndex>,
    },
    /// Another lot is open and has bids.
    #[error("another lot is in progress")]
    LotInProgress {
        /// The lot open now.
        open: LotIndex,
    },
    /// The lot has already been offered (absentee bids and opening need a pending lot).
    #[error("the lot has already been offered")]
    LotNotPending,
    /// Only a sold or passed lot can be reopened.
    #[error("the lot is not closed")]
    LotNotClosed,
    /// A single-lot auction's result is final: it can no longer be reopened.
    #[error("the lot's result is final")]
    LotFinal,
    /// Hammer with no bid on the lot.
    #[error("the lot has no bids")]
    NoBids,
    /// Hammer below the reserve (pass the lot instead).
    #[error("the reserve is not met")]
    ReserveNotMet,
    /// Undo with no bid left to undo.
    #[error("no bid to undo")]
    NothingToUndo,
    /// Too many bidders or bids for one auction or lot.
    #[error("this auction has reached its limit of bids")]
    TooManyBids,
    /// A timer is due; the caller must deliver [`crate::Action::Tick`] first.
    #[error("a timer is due at {deadline}; deliver a tick first")]
    TimerDue {
        /// The deadline that is due.
        deadline: Timestamp,
    },
    /// `now` is before the last event.
    #[error("time went backwards; the last event was at {last_event_at}")]
    TimeWentBackwards {
        /// The time of the last event.
        last_event_at: Timestamp,
    },
}

impl Rejection {
    /// A stable machine-readable reason; never changes once shipped.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BidBelowMinimum { .. } => "BID_BELOW_MINIMUM",
            Rejection::AuctionClosed => "AUCTION_CLOSED",
            Rejection::AuctionCancelled => "AUCTION_CANCELLED",
            Rejection::AuctionNotOpen => "AUCTION_NOT_OPEN",
            Rejection::SellerCannotBid => "SELLER_CANNOT_BID",
            Rejection::NotBidder => "NOT_BIDDER",
            Rejection::WrongCurrency { .. } => "WRONG_CURRENCY",
            Rejection::InvalidAmount => "INVALID_AMOUNT",
            Rejection::InvalidQuantity => "INVALID_QUANTITY",
            Rejection::InvalidTtl => "INVALID_TTL",
            Rejection::TimeOutOfRange => "TIME_OUT_OF_RANGE",
            Rejection::UnsupportedForFormat => "UNSUPPORTED_FOR_FORMAT",
            Rejection::NotAuctioneer => "NOT_AUCTIONEER",
            Rejection::NotAdmin => "NOT_ADMIN",
            Rejection::NotSeller => "NOT_SELLER",
            Rejection::ReserveMetCannotCancel => "RESERVE_MET_CANNOT_CANCEL",
            Rejection::QuantityUnavailable { .. } => "QUANTITY_UNAVAILABLE",
            Rejection::PriceAboveLimit { .. } => "PRICE_ABOVE_LIMIT",
            Rejection::PriceMismatch { .. } => "PRICE_MISMATCH",
            Rejection::BuyItNowUnavailable => "BUY_IT_NOW_UNAVAILABLE",
            Rejection::NoSuchBid => "NO_SUCH_BID",
            Rejection::NoSuchLot => "NO_SUCH_LOT",
            Rejection::NoLotOpen => "NO_LOT_OPEN",
            Rejection::LotNotOpen { .. } => "LOT_NOT_OPEN",
            Rejection::LotInProgress { .. } => "LOT_IN_PROGRESS",
            Rejection::LotNotPending => "LOT_NOT_PENDING",
            Rejection::LotNotClosed => "LOT_NOT_CLOSED",
            Rejection::LotFinal => "LOT_FINAL",
            Rejection::NoBids => "NO_BIDS",
            Rejection::ReserveNotMet => "RESERVE_NOT_MET",
            Rejection::NothingToUndo => "NOTHING_TO_UNDO",
            Rejection::TooManyBids => "TOO_MANY_BIDS",
            Rejection::TimerDue { .. } => "TIMER_DUE",
            Rejection::TimeWentBackwards { .. } => "TIME_WENT_BACKWARDS",
        }
    }

    /// The category the service maps to a gRPC status code.
    pub fn category(&self) -> RejectionCategory {
        match self {
            Rejection::WrongCurrency { .. }
            | Rejection::InvalidAmount
            | Rejection::InvalidQuantity
            | Rejection::InvalidTtl
            | Rejection::TimeOutOfRange
            | Rejection::UnsupportedForFormat => RejectionCategory::InvalidArgument,
            Rejection::BidBelowMinimum { .. }
            | Rejection::AuctionClosed
            | Rejection::AuctionCancelled
            | Rejection::AuctionNotOpen
            | Rejection::ReserveMetCannotCancel
            | Rejection::QuantityUnavailable { .. }
            | Rejection::PriceAboveLimit { .. }
            | Rejection::PriceMismatch { .. }
            | Rejection::BuyItNowUnavailable
            | Rejection::NoLotOpen
            | Rejection::LotNotOpen { .. }
            | Rejection::LotInProgress { .. }
            | Rejection::LotNotPending
            | Rejection::LotNotClosed
            | Rejection::LotFinal
            | Rejection::NoBids
            | Rejection::ReserveNotMet
            | Rejection::NothingToUndo
            | Rejection::TimerDue { .. }
            | Rejection::TimeWentBackwards { .. } => RejectionCategory::FailedPrecondition,
            Rejection::SellerCannotBid
            | Rejection::NotBidder
            | Rejection::NotAuctioneer
            | Rejection::NotAdmin
            | Rejection::NotSeller => RejectionCategory::PermissionDenied,
            Rejection::NoSuchBid | Rejection::NoSuchLot => RejectionCategory::NotFound,
            Rejection::TooManyBids => RejectionCategory::ResourceExhausted,
        }
    }

    /// Whether the same command could succeed later without the caller changing it:
    /// only a due timer (the shard ticks and retries) qualifies.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Rejection::TimerDue { .. })
    }
}

//! Commands: what a caller asks the engine to do. Each carries who asks (with the
//! role the service has verified), the caller's request id and when it arrived.

use serde::{Deserialize, Serialize};

use crate::id::{LotIndex, RequestId, UserId};
use crate::money::Money;
use crate::time::Timestamp;

/// The role a command is made in. The service verifies it (a token's claims, the
/// auctioneer's console); the engine enforces what each role may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Places bids, accepts Dutch prices, buys it now.
    Bidder,
    /// Owns the auction; may cancel until the reserve is met, may never bid.
    Seller,
    /// Drives a live session's lots.
    Auctioneer,
    /// Retracts bids and cancels at any time before the close.
    Admin,
    /// The service itself, for timer ticks.
    System,
}

/// Who is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The user making the request.
    pub user_id: UserId,
    /// The verified role the request is made in.
    pub role: Role,
}

impl Actor {
    /// A bidder.
    pub const fn bidder(user_id: UserId) -> Actor {
        Actor {
            user_id,
            role: Role::Bidder,
        }
    }
    /// The seller.
    pub const fn seller(user_id: UserId) -> Actor {
        Actor {
            user_id,
            role: Role::Seller,
        }
    }
    /// An auctioneer.
    pub const fn auctioneer(user_id: UserId) -> Actor {
        Actor {
            user_id,
            role: Role::Auctioneer,
        }
    }
    /// An admin.
    pub const fn admin(user_id: UserId) -> Actor {
        Actor {
            user_id,
            role: Role::Admin,
        }
    }
    /// The service's own timer.
    pub const SYSTEM: Actor = Actor {
        user_id: UserId(0),
        role: Role::System,
    };
}

/// One request to the engine. `Copy` and allocation-free, so the hot path never
/// touches the heap to carry a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The caller's idempotency key, copied into the resulting events.
    pub request_id: RequestId,
    /// Who asks, in which role.
    pub actor: Actor,
    /// When the gateway received the request; recorded in events for audit and
    /// latency measurement. Rules use the `now` given to [`crate::Auction::apply`].
    pub received_at: Timestamp,
    /// What is asked.
    pub action: Action,
}

impl Command {
    /// A timer tick from the service at `now`.
    pub const fn tick(now: Timestamp) -> Command {
        Command {
            request_id: RequestId(0),
            actor: Actor::SYSTEM,
            received_at: now,
            action: Action::Tick,
        }
    }
}

/// What a command asks for. Each variant says which formats accept it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// English or live: bid exactly `amount` (a maximum equal to the amount). For a
    /// live session `lot` names the lot the bidder saw open; `None` means "the lot
    /// open now". Must be `None` for an English auction.
    PlaceBid {
        /// The bid.
        amount: Money,
        /// The live lot the bid is for.
        lot: Option<LotIndex>,
    },
    /// English or live: set (or raise) a proxy maximum; the engine bids on the
    /// bidder's behalf up to it.
    SetMaxBid {
        /// The most the bidder is willing to pay.
        max_amount: Money,
        /// The live lot the bid is for (see [`Action::PlaceBid`]).
        lot: Option<LotIndex>,
    },
    /// Live: a commission bid left before `lot` opens; it acts as a maximum bid.
    AbsenteeBid {
        /// The lot, which must not have opened yet.
        lot: LotIndex,
        /// The most the absentee bidder is willing to pay.
        max_amount: Money,
    },
    /// English: buy at the buy-it-now price while it is offered. `price` is the
    /// price the buyer agreed to and must equal the auction's.
    BuyItNow {
        /// The price the buyer saw.
        price: Money,
    },
    /// Sealed: place or replace this bidder's standing bid.
    PlaceSealedBid {
        /// The bid.
        amount: Money,
        /// After this long the bid no longer counts; `None` for until the close.
        ttl_ms: Option<i64>,
    },
    /// Sealed: withdraw this bidder's standing bid before the close.
    WithdrawSealedBid,
    /// Dutch: take `quantity` units at the current clock price, provided that price
    /// is at most `max_unit_price` (what the bidder saw; protects against a stale
    /// screen).
    DutchAccept {
        /// Units wanted.
        quantity: u32,
        /// The highest unit price the bidder agrees to.
        max_unit_price: Money,
    },
    /// Live, auctioneer: open `lot`, or the next lot not yet offered.
    OpenLot {
        /// The lot to open; `None` for the next in running order.
        lot: Option<LotIndex>,
    },
    /// Live, auctioneer: "fair warning", the last call before the hammer.
    FairWarning,
    /// Live, auctioneer: sell the open lot to the leader at the current price.
    Hammer,
    /// Live, auctioneer: close the open lot unsold.
    Pass,
    /// Live, auctioneer: reopen a closed lot (a disputed hammer); its bids stand.
    Reopen {
        /// The lot to reopen.
        lot: LotIndex,
    },
    /// Live, auctioneer: undo the most recent accepted bid on the open lot.
    UndoLastBid,
    /// Single-lot live auction, auctioneer, admin or the service: make a
    /// provisional hammer or pass final now (the next lot of the session opens)
    /// instead of at its finalise deadline. The auction closes sold or unsold.
    FinalizeLot,
    /// Admin: retract all of `bidder`'s bids (in `lot`, for a live session); the proxy
    /// outcome is recomputed from the remaining maximums.
    RetractBid {
        /// Whose bids to remove.
        bidder: UserId,
        /// The live lot; `None` for other formats.
        lot: Option<LotIndex>,
    },
    /// Seller (until the reserve is met) or admin: cancel the auction.
    Cancel,
    /// Fire whatever is due at `now`: open, close, Dutch price steps, live
    /// countdowns, sealed-bid expiries. Harmless when nothing is due.
    Tick,
}

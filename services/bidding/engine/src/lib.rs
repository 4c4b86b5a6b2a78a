//! The pure auction engine: every auction format's rules as
//! `(state, command, now) -> (new state, events)` or a typed [`Rejection`].
//!
//! Nothing in this crate performs I/O, reads a clock or draws random numbers: time
//! arrives as an argument ([`Timestamp`]), money is exact ([`rust_decimal::Decimal`]
//! plus a [`Currency`]), and every change of state is an [`Event`] that the bidding
//! service appends to its durable log. Replaying those events with
//! [`Auction::apply_event`] from [`Auction::new`] rebuilds an identical state, which is
//! how a shard recovers an auction after a restart or a fail-over.
//!
//! # How the bidding service drives an auction
//!
//! ```
//! use auction_engine::*;
//! use rust_decimal::Decimal;
//!
//! let seller = UserId(1);
//! let bidder = UserId(2);
//! let spec = AuctionSpec {
//!     auction_id: AuctionId(7),
//!     seller,
//!     currency: Currency::USD,
//!     start_at: Timestamp::from_unix_ms(0),
//!     format: FormatSpec::English(EnglishSpec::new(Decimal::ONE, Timestamp::from_unix_ms(60_000))),
//! };
//! let mut auction = Auction::new(spec).unwrap();
//! let mut events = Vec::new();
//!
//! // The shard delivers a timer tick whenever `next_deadline()` is due ...
//! let now = Timestamp::from_unix_ms(0);
//! auction.apply(Command::tick(now), now, &mut events).unwrap();
//!
//! // ... and then the bidders' commands, each with the time it is applied at.
//! let now = Timestamp::from_unix_ms(1_000);
//! let bid = Command {
//!     request_id: RequestId(1),
//!     actor: Actor::bidder(bidder),
//!     received_at: now,
//!     action: Action::SetMaxBid { max_amount: Money::new(Decimal::TEN, Currency::USD), lot: None },
//! };
//! auction.apply(bid, now, &mut events).unwrap();
//! assert_eq!(auction.view().status, AuctionStatus::Open);
//!
//! // Every event goes to the durable log; replaying it rebuilds the same state.
//! let mut replayed = Auction::new(auction.spec()).unwrap();
//! for event in &events {
//!     replayed.apply_event(event).unwrap();
//! }
//! assert_eq!(replayed, auction);
//! ```
//!
//! # Contract with the caller
//!
//! * [`Auction::apply`] either accepts a command, pushes its events and returns
//!   `Ok`, or returns a [`Rejection`] and leaves the auction exactly as it was (not
//!   even the event sequence counter moves).
//! * Timers are commands too: when [`Auction::next_deadline`] is at or before `now`
//!   the shard must deliver [`Action::Tick`] first. Any other command sent while a
//!   timer is due is rejected with `TIMER_DUE`, so that no bid is ever judged against
//!   a clock that should already have closed the auction, ticked the Dutch price or
//!   expired a sealed bid. Timer events carry the time they were due, not the time
//!   the tick arrived, so a late tick does not move the close.
//! * `now` never goes backwards relative to the last event (`TIME_WENT_BACKWARDS`);
//!   a shard taking over with a slower clock clamps `now` to
//!   [`Auction::last_event_at`].
//! * The winner and the price are decided here, at the close, never by a caller.
//!
//! # Module map
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`id`] | `UserId`, `AuctionId`, `RequestId`, `LotIndex`: Copy newtypes over integers |
//! | [`time`] | `Timestamp`, milliseconds since the Unix epoch |
//! | [`money`] | `Currency`, `Money`, amount validation against the currency's minor unit |
//! | [`increment`] | the tiered bid increment table, eBay's US table by default |
//! | [`spec`] | `AuctionSpec` and each format's parameters, validated into `SpecError`s |
//! | [`command`] | `Command`, `Actor`, `Role`, `Action`: what callers ask for |
//! | [`event`] | `Event`, `EventKind`: what happened, the durable log; `PublicEvent` for broadcast |
//! | [`rejection`] | `Rejection` with stable reason strings and a gRPC-like category |
//! | [`auction`] | `Auction`: `new`, `apply`, `apply_event`, `next_deadline`, `view` |
//! | `proxy` | the proxy-bidding book shared by English auctions and live lots |
//! | `english`, `dutch`, `sealed`, `live` | each format's decisions and state changes |
//! | [`view`] | `AuctionView` and `BidStatus`: what the public and each bidder may see |
//! | [`limits`] | the bound on everything that grows |

pub mod auction;
pub mod command;
mod dutch;
mod english;
pub mod event;
pub mod id;
pub mod increment;
pub mod limits;
mod live;
pub mod money;
mod proxy;
pub mod rejection;
mod sealed;
pub mod spec;
pub mod time;
pub mod view;

pub use auction::{Auction, Outcome, ReplayError, UpdateError};
pub use command::{Action, Actor, Command, Role};
pub use event::{BidKind, Event, EventKind, LotOpening, PublicEvent, UnsoldReason};
pub use id::{AuctionId, LotIndex, RequestId, UserId};
pub use increment::{IncrementTable, IncrementTier};
pub use money::{AmountError, Currency, CurrencyError, Money};
pub use rejection::{Rejection, RejectionCategory};
pub use spec::{
    AuctionSpec, DutchSpec, EnglishSpec, FormatSpec, LiveSpec, LotSpec, SealedPricing, SealedSpec,
    SoftClose, SpecError,
};
pub use time::Timestamp;
pub use view::{
    AuctionStatus, AuctionView, BidStatus, FormatView, LotStatus, LotView, ReserveState,
};

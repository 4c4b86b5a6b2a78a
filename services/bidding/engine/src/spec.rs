//! What an auction is, fixed at creation: the seller, the currency, when it starts,
//! and the format with its parameters. [`AuctionSpec::validate`] turns nonsense
//! (a reserve below the starting price, a Dutch floor at or above the start price,
//! an end before the start) into a typed [`SpecError`] before any state exists.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::id::{AuctionId, UserId};
use crate::increment::IncrementTable;
use crate::limits::{MAX_DURATION_MS, MAX_DUTCH_QUANTITY, MAX_DUTCH_TICKS, MAX_LOTS};
use crate::money::{Currency, validate_amount};
use crate::time::Timestamp;

/// Everything about an auction that does not change once it is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionSpec {
    /// The auction's identity, copied into views.
    pub auction_id: AuctionId,
    /// The seller, who may never bid and may cancel only until the reserve is met.
    pub seller: UserId,
    /// The one currency every amount in this auction is in.
    pub currency: Currency,
    /// When bidding opens (for live sessions, when the session opens).
    pub start_at: Timestamp,
    /// The format and its parameters.
    pub format: FormatSpec,
}

/// The auction format and its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FormatSpec {
    /// Ascending auction with proxy bidding, reserve, buy-it-now and soft close.
    English(EnglishSpec),
    /// Descending clock, one or more identical units.
    Dutch(DutchSpec),
    /// Sealed bids, first-price or second-price (Vickrey).
    Sealed(SealedSpec),
    /// A live session of lots driven by an auctioneer.
    Live(LiveSpec),
}

/// Anti-sniping: a bid accepted within the last `window_ms` before the end moves the
/// end to the bid's time plus `extension_ms`, never beyond the original end plus
/// `max_total_extension_ms` when a cap is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftClose {
    /// How close to the end a bid must be to extend the auction.
    pub window_ms: i64,
    /// How long after the bid the auction then ends.
    pub extension_ms: i64,
    /// The most the end may move past the original end in total; `None` for no cap.
    pub max_total_extension_ms: Option<i64>,
}

impl Default for SoftClose {
    /// The defaults: a bid in the last 30 s moves the end to bid time + 60 s,
    /// without a cap.
    fn default() -> SoftClose {
        SoftClose {
            window_ms: 30_000,
            extension_ms: 60_000,
            max_total_extension_ms: None,
        }
    }
}

/// An English (ascending) auction with eBay proxy-bidding semantics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnglishSpec {
    /// The smallest first bid, and the price while there is only one bidder.
    pub starting_price: Decimal,
    /// The hidden reserve: no sale below it. Never shown to the public.
    pub reserve_price: Option<Decimal>,
    /// A fixed price that ends the auction at once, offered until the first bid (or,
    /// with a reserve, until a bid meets the reserve).
    pub buy_it_now_price: Option<Decimal>,
    /// The tiered increment table (eBay's US table by default).
    pub increments: IncrementTable,
    /// The scheduled end, before any soft-close extension.
    pub end_at: Timestamp,
    /// Anti-sniping rule; `None` for a hard close.
    pub soft_close: Option<SoftClose>,
}

impl EnglishSpec {
    /// An English auction with the defaults: eBay's increments, the default soft
    /// close, no reserve and no buy-it-now.
    pub fn new(starting_price: Decimal, end_at: Timestamp) -> EnglishSpec {
        EnglishSpec {
            starting_price,
            reserve_price: None,
            buy_it_now_price: None,
            increments: IncrementTable::ebay_us(),
            end_at,
            soft_close: Some(SoftClose::default()),
        }
    }
}

/// A Dutch (descending clock) auction: the price starts at `start_price` and drops by
/// `price_step` every `tick_interval_ms` until it reaches `floor_price`, where it
/// stays for one more tick before the auction ends unsold (or with what was sold).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DutchSpec {
    /// The clock's first price.
    pub start_price: Decimal,
    /// How much the price drops each tick.
    pub price_step: Decimal,
    /// How long each price holds.
    pub tick_interval_ms: i64,
    /// The lowest price; it must be below the start price.
    pub floor_price: Decimal,
    /// How many identical units are offered.
    pub quantity: u32,
}

/// How a sealed-bid winner pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealedPricing {
    /// The winner pays their own bid.
    FirstPrice,
    /// Vickrey: the winner pays the highest of the second-highest bid, the reserve
    /// and the starting price.
    SecondPrice,
}

/// A sealed-bid auction: bids are hidden until the close.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSpec {
    /// First-price or second-price.
    pub pricing: SealedPricing,
    /// The smallest acceptable bid.
    pub starting_price: Decimal,
    /// The hidden reserve.
    pub reserve_price: Option<Decimal>,
    /// When bidding closes and the winner is decided.
    pub end_at: Timestamp,
}

/// One lot of a live session: an English proxy auction without an end time, closed
/// by the auctioneer's hammer or the countdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotSpec {
    /// The smallest first bid.
    pub starting_price: Decimal,
    /// The hidden reserve.
    pub reserve_price: Option<Decimal>,
    /// The lot's increment table.
    pub increments: IncrementTable,
}

impl LotSpec {
    /// A lot with eBay's increments and no reserve.
    pub fn new(starting_price: Decimal) -> LotSpec {
        LotSpec {
            starting_price,
            reserve_price: None,
            increments: IncrementTable::ebay_us(),
        }
    }
}

/// A live session run by an auctioneer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSpec {
    /// The lots in running order.
    pub lots: Vec<LotSpec>,
    /// The per-lot countdown, restarted by every accepted bid; when it runs out the
    /// lot is sold to the leader (reserve met) or passed.
    pub countdown_ms: i64,
    /// Whether the next lot opens by itself when one closes (and the first when the
    /// session opens); otherwise the auctioneer opens each lot.
    pub auto_advance: bool,
    /// `None`: a whole session in one auction, each lot's hammer or pass final at
    /// once. `Some`: one lot of a session run as its own auction (the bidding
    /// service's live lots): exactly one lot, no auto-advance, the auction stays
    /// scheduled until the auctioneer opens the lot, and a hammer or pass is
    /// provisional for this long (reopenable) before the auction closes (sold) or
    /// ends unsold. An explicit finalise ends the wait early.
    #[serde(default)]
    pub finalize_ms: Option<i64>,
}

impl LiveSpec {
    /// The default countdown, "going once, going twice": 10 s.
    pub const DEFAULT_COUNTDOWN_MS: i64 = 10_000;

    /// A session of `lots` with the default countdown and auto-advance.
    pub fn new(lots: Vec<LotSpec>) -> LiveSpec {
        LiveSpec {
            lots,
            countdown_ms: LiveSpec::DEFAULT_COUNTDOWN_MS,
            auto_advance: true,
            finalize_ms: None,
        }
    }

    /// One lot run as its own auction, opened by the auctioneer, its result
    /// provisional for `finalize_ms` (see [`LiveSpec::finalize_ms`]).
    pub fn single_lot(lot: LotSpec, countdown_ms: i64, finalize_ms: i64) -> LiveSpec {
        LiveSpec {
            lots: vec![lot],
            countdown_ms,
            auto_advance: false,
            finalize_ms: Some(finalize_ms),
        }
    }

    /// Whether this is one lot run as its own auction with provisional results.
    pub fn is_single_lot(&self) -> bool {
        self.finalize_ms.is_some()
    }
}

/// Why a spec was refused. Each variant has a stable machine-readable reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A price is not a positive amount in the auction's currency.
    #[error("{field} must be a positive amount in the auction's currency")]
    InvalidAmount {
        /// The offending field.
        field: &'static str,
    },
    /// The reserve is below the starting price.
    #[error("the reserve price is below the starting price")]
    ReserveBelowStartingPrice,
    /// Buy-it-now is below the starting price or the reserve.
    #[error("the buy-it-now price is below the starting price or the reserve")]
    BuyItNowTooLow,
    /// A timestamp is before the epoch or after year 9999.
    #[error("{field} is out of range")]
    TimeOutOfRange {
        /// The offending field.
        field: &'static str,
    },
    /// The end is not after the start, or the auction runs longer than the limit.
    #[error("the end must be after the start and within the maximum duration")]
    InvalidSchedule,
    /// A soft-close window, extension or cap is not positive or too long.
    #[error("invalid soft close: {reason}")]
    InvalidSoftClose {
        /// What is wrong.
        reason: &'static str,
    },
    /// The increment table is malformed.
    #[error("invalid increment table: {reason}")]
    InvalidIncrementTable {
        /// What is wrong.
        reason: &'static str,
    },
    /// The Dutch floor is at or above the start price.
    #[error("the Dutch floor price must be below the start price")]
    FloorNotBelowStart,
    /// The Dutch tick interval is not positive or too long, or the clock would take
    /// too many ticks to reach the floor.
    #[error("invalid Dutch clock: {reason}")]
    InvalidClock {
        /// What is wrong.
        reason: &'static str,
    },
    /// The Dutch quantity is zero or above the limit.
    #[error("the quantity must be between 1 and the limit")]
    InvalidQuantity,
    /// A live session without lots, or with too many.
    #[error("a live session needs between 1 and the limit of lots")]
    InvalidLotCount,
    /// The live countdown is not positive or too long.
    #[error("the live countdown must be positive and within the maximum duration")]
    InvalidCountdown,
    /// A single-lot auction with more than one lot, auto-advance, or a finalise
    /// delay that is not positive or too long.
    #[error("invalid single-lot auction: {reason}")]
    InvalidSingleLot {
        /// What is wrong.
        reason: &'static str,
    },
}

impl SpecError {
    /// A stable machine-readable reason; never changes once shipped.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::InvalidAmount { .. } => "INVALID_AMOUNT",
            SpecError::ReserveBelowStartingPrice => "RESERVE_BELOW_STARTING_PRICE",
            SpecError::BuyItNowTooLow => "BUY_IT_NOW_TOO_LOW",
            SpecError::TimeOutOfRange { .. } => "TIME_OUT_OF_RANGE",
            SpecError::InvalidSchedule => "INVALID_SCHEDULE",
            SpecError::InvalidSoftClose { .. } => "INVALID_SOFT_CLOSE",
            SpecError::InvalidIncrementTable { .. } => "INVALID_INCREMENT_TABLE",
            SpecError::FloorNotBelowStart => "FLOOR_NOT_BELOW_START",
            SpecError::InvalidClock { .. } => "INVALID_CLOCK",
            SpecError::InvalidQuantity => "INVALID_QUANTITY",
            SpecError::InvalidLotCount => "INVALID_LOT_COUNT",
            SpecError::InvalidCountdown => "INVALID_COUNTDOWN",
            SpecError::InvalidSingleLot { .. } => "INVALID_SINGLE_LOT",
        }
    }
}

fn check_amount(amount: Decimal, currency: Currency, field: &'static str) -> Result<(), SpecError> {
    validate_amount(amount, currency).map_err(|_| SpecError::InvalidAmount { field })
}

fn check_duration(duration_ms: i64) -> bool {
    duration_ms > 0 && duration_ms <= MAX_DURATION_MS
}

fn check_schedule(start_at: Timestamp, end_at: Timestamp) -> Result<(), SpecError> {
    if !end_at.is_in_range() {
        return Err(SpecError::TimeOutOfRange { field: "end_at" });
    }
    if !check_duration(end_at.ms_since(start_at)) {
        return Err(SpecError::InvalidSchedule);
    }
    Ok(())
}

fn check_reserve(
    starting_price: Decimal,
    reserve_price: Option<Decimal>,
    currency: Currency,
) -> Result<(), SpecError> {
    check_amount(starting_price, currency, "starting_price")?;
    if let Some(reserve_price) = reserve_price {
        check_amount(reserve_price, currency, "reserve_price")?;
        if reserve_price < starting_price {
            return Err(SpecError::ReserveBelowStartingPrice);
        }
    }
    Ok(())
}

impl AuctionSpec {
    /// Checks every parameter; [`crate::Auction::new`] calls this, so no auction
    /// exists with an invalid spec.
    pub fn validate(&self) -> Result<(), SpecError> {
        let currency = self.currency;
        if !self.start_at.is_in_range() {
            return Err(SpecError::TimeOutOfRange { field: "start_at" });
        }
        match &self.format {
            FormatSpec::English(english) => {
                check_reserve(english.starting_price, english.reserve_price, currency)?;
                english.increments.validate(currency)?;
                check_schedule(self.start_at, english.end_at)?;
                if let Some(buy_it_now_price) = english.buy_it_now_price {
                    check_amount(buy_it_now_price, currency, "buy_it_now_price")?;
                    let floor = english.reserve_price.unwrap_or(english.starting_price);
                    if buy_it_now_price < floor || buy_it_now_price < english.starting_price {
                        return Err(SpecError::BuyItNowTooLow);
                    }
                }
                if let Some(soft_close) = english.soft_close {
                    if !check_duration(soft_close.window_ms) {
                        return Err(SpecError::InvalidSoftClose {
                            reason: "window_ms must be positive and bounded",
                        });
                    }
                    if !check_duration(soft_close.extension_ms) {
                        return Err(SpecError::InvalidSoftClose {
                            reason: "extension_ms must be positive and bounded",
                        });
                    }
                    if let Some(cap_ms) = soft_close.max_total_extension_ms
                        && !(0..=MAX_DURATION_MS).contains(&cap_ms)
                    {
                        return Err(SpecError::InvalidSoftClose {
                            reason: "max_total_extension_ms must be non-negative and bounded",
                        });
                    }
                }
                Ok(())
            }
            FormatSpec::Dutch(dutch) => {
                check_amount(dutch.start_price, currency, "start_price")?;
                check_amount(dutch.floor_price, currency, "floor_price")?;
                check_amount(dutch.price_step, currency, "price_step")?;
                if dutch.floor_price >= dutch.start_price {
                    return Err(SpecError::FloorNotBelowStart);
                }
                if !check_duration(dutch.tick_interval_ms) {
                    return Err(SpecError::InvalidClock {
                        reason: "tick_interval_ms must be positive and bounded",
                    });
                }
                if dutch.quantity == 0 || dutch.quantity > MAX_DUTCH_QUANTITY {
                    return Err(SpecError::InvalidQuantity);
                }
                let floor_tick = dutch_floor_tick(dutch).ok_or(SpecError::InvalidClock {
                    reason: "too many ticks from start to floor",
                })?;
                // The clock ends one tick after it reaches the floor; that instant must
                // stay within the maximum duration and the timestamp range.
                let clock_ms = (i128::from(floor_tick) + 1) * i128::from(dutch.tick_interval_ms);
                if clock_ms > i128::from(MAX_DURATION_MS) {
                    return Err(SpecError::InvalidClock {
                        reason: "the clock runs longer than the maximum duration",
                    });
                }
                Ok(())
            }
            FormatSpec::Sealed(sealed) => {
                check_reserve(sealed.starting_price, sealed.reserve_price, currency)?;
                check_schedule(self.start_at, sealed.end_at)
            }
            FormatSpec::Live(live) => {
                if live.lots.is_empty() || live.lots.len() > MAX_LOTS {
                    return Err(SpecError::InvalidLotCount);
                }
                if !check_duration(live.countdown_ms) {
                    return Err(SpecError::InvalidCountdown);
                }
                if let Some(finalize_ms) = live.finalize_ms {
                    if live.lots.len() != 1 {
                        return Err(SpecError::InvalidSingleLot {
                            reason: "exactly one lot",
                        });
                    }
                    if live.auto_advance {
                        return Err(SpecError::InvalidSingleLot {
                            reason: "no auto-advance",
                        });
                    }
                    if !check_duration(finalize_ms) {
                        return Err(SpecError::InvalidSingleLot {
                            reason: "finalize_ms must be positive and bounded",
                        });
                    }
                }
                for lot in &live.lots {
                    check_reserve(lot.starting_price, lot.reserve_price, currency)?;
                    lot.increments.validate(currency)?;
                }
                Ok(())
            }
        }
    }
}

/// The tick index at which a Dutch clock reaches its floor:
/// `ceil((start - floor) / step)`, or `None` when that exceeds [`MAX_DUTCH_TICKS`].
pub(crate) fn dutch_floor_tick(dutch: &DutchSpec) -> Option<u64> {
    let span = dutch.start_price.checked_sub(dutch.floor_price)?;
    let ticks = span.checked_div(dutch.price_step)?.ceil().to_u64()?;
    (ticks <= MAX_DUTCH_TICKS).then_some(ticks)
}

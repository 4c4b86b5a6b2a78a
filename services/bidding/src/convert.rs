//! Between the wire (`auction.v1` messages) and the engine's types. Amounts
//! are parsed exactly, checked against the currency's minor unit and brought
//! to that scale (the engine's fast comparisons rely on it); a malformed field
//! is INVALID_ARGUMENT naming the field.

use std::str::FromStr;

use auction_engine::{
    AuctionSpec, AuctionStatus, AuctionView, BidStatus, Currency, DutchSpec, EnglishSpec, Event,
    FormatSpec, FormatView, IncrementTable, IncrementTier, LiveSpec, LotSpec, LotStatus, LotView,
    Money, PublicEvent, ReserveState, SealedPricing, SealedSpec, SoftClose, Timestamp, UserId,
};
use auction_proto::v1 as pb;
use rust_decimal::Decimal;
use tonic::Code;
use uuid::Uuid;

use crate::error::Refusal;
use crate::shard::{Metadata, Receipt, ViewerFacts};

/// The wire sequence of an engine event. The engine numbers an auction's
/// events from 0; the contract numbers them from 1, so that
/// `resume_after_sequence = 0` means "from the start" and a state's
/// `sequence` is the number of events so far.
pub fn wire_sequence(engine_seq: u64) -> u64 {
    engine_seq + 1
}

/// A malformed request field.
pub fn invalid(field: &str, message: impl Into<String>) -> Refusal {
    let mut refusal = Refusal::new(
        Code::InvalidArgument,
        "VALIDATION_FAILED",
        format!("{field}: {}", message.into()),
    );
    refusal
        .metadata
        .insert("field".to_owned(), field.to_owned());
    refusal
}

/// Parses a UUID field.
pub fn uuid(field: &str, text: &str) -> Result<Uuid, Refusal> {
    Uuid::parse_str(text).map_err(|_| invalid(field, format!("`{text}` is not a UUID")))
}

/// Checks a request id: 1-64 characters of `[A-Za-z0-9._:-]`.
pub fn request_id(text: &str) -> Result<String, Refusal> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(text.to_owned())
    } else {
        let mut refusal = Refusal::new(
            Code::InvalidArgument,
            "REQUEST_ID_INVALID",
            "request_id must be 1-64 characters of [A-Za-z0-9._:-]",
        );
        refusal
            .metadata
            .insert("field".to_owned(), "request_id".to_owned());
        Err(refusal)
    }
}

/// An engine user id from a UUID.
pub fn user_id(id: Uuid) -> UserId {
    UserId(id.as_u128())
}

/// Parses a required amount: exact decimal, the currency's minor unit at
/// most, positive, brought to the currency's scale.
pub fn money(field: &str, value: Option<&pb::Money>) -> Result<Money, Refusal> {
    let value = value.ok_or_else(|| invalid(field, "is required"))?;
    let currency = Currency::from_code(&value.currency).map_err(|_| {
        invalid(
            &format!("{field}.currency"),
            format!("`{}` is not an ISO 4217 code", value.currency),
        )
    })?;
    let mut amount = Decimal::from_str(&value.amount).map_err(|_| {
        invalid(
            &format!("{field}.amount"),
            format!("`{}` is not a decimal amount", value.amount),
        )
    })?;
    if amount.scale() > currency.minor_units() {
        return Err(invalid(
            &format!("{field}.amount"),
            format!(
                "{} has more decimals than {} allows ({})",
                value.amount,
                value.currency,
                currency.minor_units()
            ),
        ));
    }
    if amount <= Decimal::ZERO {
        return Err(invalid(&format!("{field}.amount"), "must be positive"));
    }
    amount.rescale(currency.minor_units());
    Ok(Money::new(amount, currency))
}

/// Parses an optional amount (absent or empty = none).
pub fn optional_money(field: &str, value: Option<&pb::Money>) -> Result<Option<Money>, Refusal> {
    match value {
        Some(value) if !value.amount.is_empty() => money(field, Some(value)).map(Some),
        Some(_) | None => Ok(None),
    }
}

/// The wire form of an amount.
pub fn money_to_proto(money: Money) -> pb::Money {
    let mut amount = money.amount;
    amount.rescale(money.currency.minor_units());
    pb::Money {
        currency: money.currency.code().to_owned(),
        amount: amount.to_string(),
    }
}

/// A wire timestamp from engine time.
pub fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    let unix_ms = at.unix_ms();
    prost_types::Timestamp {
        seconds: unix_ms.div_euclid(1_000),
        nanos: i32::try_from(unix_ms.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
    }
}

/// Engine time from a required wire timestamp.
pub fn from_timestamp(
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Timestamp, Refusal> {
    let value = value.ok_or_else(|| invalid(field, "is required"))?;
    let unix_ms = value
        .seconds
        .checked_mul(1_000)
        .and_then(|ms| ms.checked_add(i64::from(value.nanos) / 1_000_000))
        .ok_or_else(|| invalid(field, "out of range"))?;
    let at = Timestamp::from_unix_ms(unix_ms);
    if at.is_in_range() {
        Ok(at)
    } else {
        Err(invalid(field, "out of range"))
    }
}

fn duration_ms(field: &str, value: Option<&prost_types::Duration>) -> Result<Option<i64>, Refusal> {
    match value {
        None => Ok(None),
        Some(duration) => {
            let ms = duration
                .seconds
                .checked_mul(1_000)
                .and_then(|ms| ms.checked_add(i64::from(duration.nanos) / 1_000_000))
                .filter(|ms| *ms >= 0)
                .ok_or_else(|| invalid(field, "must be a non-negative duration"))?;
            Ok(Some(ms))
        }
    }
}

fn same_currency(field: &str, currency: Currency, money: Money) -> Result<Decimal, Refusal> {
    if money.currency == currency {
        Ok(money.amount)
    } else {
        let mut refusal = Refusal::new(
            Code::InvalidArgument,
            "CURRENCY_MISMATCH",
            format!(
                "{field} is in {}, the auction in {}",
                money.currency.code(),
                currency.code()
            ),
        );
        refusal
            .metadata
            .insert("field".to_owned(), field.to_owned());
        Err(refusal)
    }
}

fn increments(currency: Currency, tiers: &[pb::IncrementTier]) -> Result<IncrementTable, Refusal> {
    if tiers.is_empty() {
        return Ok(IncrementTable::ebay_us());
    }
    let mut parsed = Vec::with_capacity(tiers.len());
    for (index, tier) in tiers.iter().enumerate() {
        // The first tier starts at zero, so `from_price` may be zero.
        let from_field = format!("increment_tiers[{index}].from_price");
        let from = match tier.from_price.as_ref() {
            Some(price) if Decimal::from_str(&price.amount).ok() == Some(Decimal::ZERO) => {
                Decimal::ZERO
            }
            price => same_currency(&from_field, currency, money(&from_field, price)?)?,
        };
        let increment = same_currency(
            "increment_tiers.increment",
            currency,
            money(
                &format!("increment_tiers[{index}].increment"),
                tier.increment.as_ref(),
            )?,
        )?;
        parsed.push(IncrementTier { from, increment });
    }
    Ok(IncrementTable::from_tiers(parsed))
}

/// The engine spec of a `CreateAuction` request.
pub fn spec(
    request: &pb::CreateAuctionRequest,
    auction_id: Uuid,
    seller: Uuid,
) -> Result<(AuctionSpec, Option<i64>), Refusal> {
    let parameters = request
        .parameters
        .as_ref()
        .ok_or_else(|| invalid("parameters", "is required"))?;
    use pb::auction_parameters::FormatParameters;
    // A live lot opens when its auctioneer says so; its start time (the
    // session's start, shown while pending) is optional.
    let start_at = match (
        parameters.format_parameters.as_ref(),
        request.start_time.as_ref(),
    ) {
        (Some(FormatParameters::LiveLot(_)), None) => Timestamp::from_unix_ms(0),
        (_, start_time) => from_timestamp("start_time", start_time)?,
    };
    let (currency, format, original_end) = match parameters.format_parameters.as_ref() {
        Some(FormatParameters::English(english)) => {
            let starting = money(
                "parameters.english.starting_price",
                english.starting_price.as_ref(),
            )?;
            let currency = starting.currency;
            let end_at = from_timestamp("end_time", request.end_time.as_ref())?;
            let reserve = optional_money(
                "parameters.english.reserve_price",
                english.reserve_price.as_ref(),
            )?
            .map(|reserve| same_currency("reserve_price", currency, reserve))
            .transpose()?;
            let buy_it_now = optional_money(
                "parameters.english.buy_it_now_price",
                english.buy_it_now_price.as_ref(),
            )?
            .map(|price| same_currency("buy_it_now_price", currency, price))
            .transpose()?;
            let defaults = SoftClose::default();
            let window_ms = duration_ms(
                "parameters.english.soft_close_window",
                english.soft_close_window.as_ref(),
            )?;
            let extension_ms = duration_ms(
                "parameters.english.soft_close_extension",
                english.soft_close_extension.as_ref(),
            )?;
            let max_total_ms = duration_ms(
                "parameters.english.max_total_extension",
                english.max_total_extension.as_ref(),
            )?;
            // A zero window turns soft close off.
            let soft_close = match window_ms {
                Some(0) => None,
                _ => Some(SoftClose {
                    window_ms: window_ms.unwrap_or(defaults.window_ms),
                    extension_ms: extension_ms.unwrap_or(defaults.extension_ms),
                    max_total_extension_ms: max_total_ms.filter(|ms| *ms > 0),
                }),
            };
            let spec = EnglishSpec {
                starting_price: starting.amount,
                reserve_price: reserve,
                buy_it_now_price: buy_it_now,
                increments: increments(currency, &english.increment_tiers)?,
                end_at,
                soft_close,
            };
            (currency, FormatSpec::English(spec), Some(end_at.unix_ms()))
        }
        Some(FormatParameters::Dutch(dutch)) => {
            let start = money("parameters.dutch.start_price", dutch.start_price.as_ref())?;
            let currency = start.currency;
            let step = same_currency(
                "price_step",
                currency,
                money("parameters.dutch.price_step", dutch.price_step.as_ref())?,
            )?;
            let floor = same_currency(
                "floor_price",
                currency,
                money("parameters.dutch.floor_price", dutch.floor_price.as_ref())?,
            )?;
            let tick_interval_ms = duration_ms(
                "parameters.dutch.tick_interval",
                dutch.tick_interval.as_ref(),
            )?
            .ok_or_else(|| invalid("parameters.dutch.tick_interval", "is required"))?;
            let spec = DutchSpec {
                start_price: start.amount,
                price_step: step,
                tick_interval_ms,
                floor_price: floor,
                quantity: dutch.quantity.max(1),
            };
            (currency, FormatSpec::Dutch(spec), None)
        }
        Some(FormatParameters::Sealed(sealed)) => {
            let pricing = match parameters.format() {
                pb::AuctionFormat::SealedFirstPrice => SealedPricing::FirstPrice,
                pb::AuctionFormat::SealedSecondPrice => SealedPricing::SecondPrice,
                other => {
                    return Err(invalid(
                        "parameters.format",
                        format!(
                            "sealed parameters need a sealed format, not {}",
                            other.as_str_name()
                        ),
                    ));
                }
            };
            let start = money("parameters.sealed.start_price", sealed.start_price.as_ref())?;
            let currency = start.currency;
            let reserve = optional_money(
                "parameters.sealed.reserve_price",
                sealed.reserve_price.as_ref(),
            )?
            .map(|reserve| same_currency("reserve_price", currency, reserve))
            .transpose()?;
            let end_at = from_timestamp("end_time", request.end_time.as_ref())?;
            let spec = SealedSpec {
                pricing,
                starting_price: start.amount,
                reserve_price: reserve,
                end_at,
            };
            (currency, FormatSpec::Sealed(spec), Some(end_at.unix_ms()))
        }
        Some(FormatParameters::LiveLot(live_lot)) => {
            let (currency, spec) = live_lot_spec(request, parameters, live_lot)?;
            (currency, FormatSpec::Live(spec), None)
        }
        None => return Err(invalid("parameters.format_parameters", "is required")),
    };
    let spec = AuctionSpec {
        auction_id: auction_engine::AuctionId(auction_id.as_u128()),
        seller: user_id(seller),
        currency,
        start_at,
        format,
    };
    Ok((spec, original_end))
}

/// The finalise delay a lot gets from [`spec`]; the service replaces it with
/// its configured `bidding.lot_finalize_ms`.
pub const DEFAULT_LOT_FINALIZE_MS: i64 = 60_000;
/// The contract's lot countdown: 10 s unless set, 3 s to 5 min.
const DEFAULT_LOT_COUNTDOWN_MS: i64 = 10_000;
const LOT_COUNTDOWN_RANGE_MS: std::ops::RangeInclusive<i64> = 3_000..=300_000;

/// INVALID_ARGUMENT `PARAMETERS_INVALID` naming the field.
fn parameters_invalid(field: &str, message: impl Into<String>) -> Refusal {
    let mut refusal = Refusal::new(
        Code::InvalidArgument,
        "PARAMETERS_INVALID",
        format!("{field}: {}", message.into()),
    );
    refusal
        .metadata
        .insert("field".to_owned(), field.to_owned());
    refusal
}

/// A malformed field of a live lot's parameters is PARAMETERS_INVALID (the
/// contract's reason for CreateAuction), not the generic VALIDATION_FAILED.
fn as_parameters_invalid(mut refusal: Refusal) -> Refusal {
    if refusal.reason == "VALIDATION_FAILED" {
        refusal.reason = "PARAMETERS_INVALID".to_owned();
    }
    refusal
}

/// The live-lot part of a `CreateAuction`: one lot run as its own auction
/// (see [`LiveSpec::single_lot`]), with its session, number and auctioneer.
fn live_lot_spec(
    request: &pb::CreateAuctionRequest,
    parameters: &pb::AuctionParameters,
    live_lot: &pb::LiveLotParameters,
) -> Result<(Currency, LiveSpec), Refusal> {
    if parameters.format() != pb::AuctionFormat::Live {
        return Err(parameters_invalid(
            "parameters.format",
            "live_lot parameters need the LIVE format",
        ));
    }
    if request.end_time.is_some() {
        let mut refusal = Refusal::new(
            Code::InvalidArgument,
            "SCHEDULE_INVALID",
            "end_time must be unset for a live lot",
        );
        refusal
            .metadata
            .insert("field".to_owned(), "end_time".to_owned());
        return Err(refusal);
    }
    live_lot_identity(request)?;
    let starting = money(
        "parameters.live_lot.starting_price",
        live_lot.starting_price.as_ref(),
    )
    .map_err(as_parameters_invalid)?;
    let currency = starting.currency;
    let reserve = optional_money(
        "parameters.live_lot.reserve_price",
        live_lot.reserve_price.as_ref(),
    )
    .map_err(as_parameters_invalid)?
    .map(|reserve| same_currency("reserve_price", currency, reserve))
    .transpose()?;
    let countdown_ms = duration_ms(
        "parameters.live_lot.lot_countdown",
        live_lot.lot_countdown.as_ref(),
    )
    .map_err(as_parameters_invalid)?
    .unwrap_or(DEFAULT_LOT_COUNTDOWN_MS);
    if !LOT_COUNTDOWN_RANGE_MS.contains(&countdown_ms) {
        return Err(parameters_invalid(
            "parameters.live_lot.lot_countdown",
            "must be between 3 s and 5 min",
        ));
    }
    let lot = LotSpec {
        starting_price: starting.amount,
        reserve_price: reserve,
        increments: increments(currency, &live_lot.increment_tiers)
            .map_err(as_parameters_invalid)?,
    };
    Ok((
        currency,
        LiveSpec::single_lot(lot, countdown_ms, DEFAULT_LOT_FINALIZE_MS),
    ))
}

/// A live lot's session, number and auctioneer, checked.
pub fn live_lot_identity(
    request: &pb::CreateAuctionRequest,
) -> Result<crate::live::LiveLotMetadata, Refusal> {
    let session_id = request.live_session_id.trim();
    if session_id.is_empty() || session_id.len() > 128 {
        return Err(parameters_invalid(
            "live_session_id",
            "a live lot needs its session id (1-128 characters)",
        ));
    }
    if request.lot_number == 0 {
        return Err(parameters_invalid("lot_number", "lot numbers start at 1"));
    }
    let auctioneer = Uuid::parse_str(&request.auctioneer_id).map_err(|_| {
        parameters_invalid("auctioneer_id", "a live lot needs its auctioneer's user id")
    })?;
    Ok(crate::live::LiveLotMetadata {
        session_id: session_id.to_owned(),
        lot_number: request.lot_number,
        auctioneer_id: auctioneer.to_string(),
    })
}

/// The auction's wire format.
pub fn format_of(view: &AuctionView) -> pb::AuctionFormat {
    match &view.format {
        FormatView::English { .. } => pb::AuctionFormat::English,
        FormatView::Dutch { .. } => pb::AuctionFormat::Dutch,
        FormatView::Sealed {
            pricing: SealedPricing::FirstPrice,
            ..
        } => pb::AuctionFormat::SealedFirstPrice,
        FormatView::Sealed {
            pricing: SealedPricing::SecondPrice,
            ..
        } => pb::AuctionFormat::SealedSecondPrice,
        FormatView::Live { .. } => pb::AuctionFormat::Live,
    }
}

/// The wire status.
pub fn status(status: AuctionStatus) -> pb::AuctionStatus {
    match status {
        AuctionStatus::Scheduled => pb::AuctionStatus::Scheduled,
        AuctionStatus::Open => pb::AuctionStatus::Open,
        AuctionStatus::Extended => pb::AuctionStatus::Extended,
        AuctionStatus::Closed => pb::AuctionStatus::Closed,
        AuctionStatus::Unsold => pb::AuctionStatus::Unsold,
        AuctionStatus::Cancelled => pb::AuctionStatus::Cancelled,
    }
}

fn reserve(state: ReserveState) -> pb::ReserveState {
    match state {
        ReserveState::NoReserve => pb::ReserveState::NoReserve,
        ReserveState::NotMet => pb::ReserveState::NotMet,
        ReserveState::Met => pb::ReserveState::Met,
    }
}

/// The wire bid status.
pub fn bid_status(status: BidStatus) -> pb::BidStatus {
    match status {
        BidStatus::Winning => pb::BidStatus::Winning,
        BidStatus::Outbid => pb::BidStatus::Outbid,
        BidStatus::Won => pb::BidStatus::Won,
        BidStatus::Lost => pb::BidStatus::Lost,
        BidStatus::Sealed => pb::BidStatus::Sealed,
        BidStatus::Absentee => pb::BidStatus::Pending,
    }
}

/// A bidder's public, pseudonymous reference: a stable handle that does
/// not reveal the account.
pub fn bidder(user: UserId) -> pb::BidderRef {
    let id = Uuid::from_u128(user.0);
    let handle = Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes())
        .simple()
        .to_string();
    pb::BidderRef {
        handle: format!("bidder-{}", &handle[..8]),
        user_id: String::new(),
    }
}

/// The bidder `state.leader` refers to in `view`, if any.
pub fn leading_user(view: &AuctionView) -> Option<UserId> {
    match &view.format {
        FormatView::English { leader, .. } => *leader,
        FormatView::Live { lots, .. } => lots.first().and_then(|lot| lot.leader),
        FormatView::Dutch { .. } | FormatView::Sealed { .. } => None,
    }
}

/// The wire state of a live lot.
fn lot_state(lot: &LotView) -> pb::LotState {
    match lot.status {
        LotStatus::Pending => pb::LotState::Pending,
        LotStatus::Open if lot.fair_warnings > 0 => pb::LotState::FairWarning,
        LotStatus::Open => pb::LotState::Open,
        LotStatus::Sold => pb::LotState::Hammered,
        LotStatus::Passed => pb::LotState::Passed,
    }
}

fn duration(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms.div_euclid(1_000),
        nanos: i32::try_from(ms.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
    }
}

/// The wire state of an auction.
pub fn state(
    auction_id: Uuid,
    view: &AuctionView,
    metadata: &Metadata,
    now: Timestamp,
) -> pb::AuctionState {
    let currency = view.currency;
    let mut state = pb::AuctionState {
        auction_id: auction_id.to_string(),
        item_id: metadata.item_id.clone(),
        seller_id: metadata.seller_id.clone(),
        seller_handle: metadata.seller_handle.clone(),
        title: metadata.title.clone(),
        category_id: metadata.category_id.clone(),
        format: format_of(view) as i32,
        status: status(view.status) as i32,
        currency: currency.code().to_owned(),
        start_time: Some(timestamp(view.start_at)),
        sequence: view.next_seq,
        server_time: Some(timestamp(now)),
        original_end_time: metadata
            .original_end_ms
            .map(|ms| timestamp(Timestamp::from_unix_ms(ms))),
        ..pb::AuctionState::default()
    };
    match &view.format {
        FormatView::English {
            end_at,
            price,
            minimum_bid,
            leader,
            bidders,
            reserve: reserve_state,
            buy_it_now_price,
            winner,
            final_price,
            bid_count,
            ..
        } => {
            // The contract: the highest visible bid, or the starting price
            // while there is none (the minimum bid is exactly that then).
            state.current_price = Some(money_to_proto(price.unwrap_or(*minimum_bid)));
            state.bid_count = *bid_count;
            state.minimum_next_bid = Some(money_to_proto(*minimum_bid));
            state.leader = leader.map(bidder);
            state.bidder_count = *bidders;
            state.reserve_state = reserve(*reserve_state) as i32;
            state.end_time = Some(timestamp(*end_at));
            state.buy_it_now_price = buy_it_now_price.map(money_to_proto);
            if let (Some(winner), Some(price)) = (winner, final_price) {
                state.result = Some(result(*winner, *price, 1, *end_at));
            }
            state.format_state = Some(pb::auction_state::FormatState::English(
                pb::EnglishState::default(),
            ));
        }
        FormatView::Dutch {
            clock_price,
            next_tick_at,
            at_floor,
            quantity,
            remaining,
        } => {
            state.current_price = Some(money_to_proto(*clock_price));
            state.format_state = Some(pb::auction_state::FormatState::Dutch(pb::DutchState {
                next_tick_time: next_tick_at.map(timestamp),
                units_total: *quantity,
                units_remaining: *remaining,
                at_floor: *at_floor,
                ..pb::DutchState::default()
            }));
        }
        FormatView::Sealed {
            end_at,
            minimum_bid,
            bids_standing,
            winner,
            final_price,
            ..
        } => {
            // The contract: the start price until close, then the price paid
            // (unset when unsold or cancelled).
            state.current_price = if view.status.is_finished() {
                final_price.map(money_to_proto)
            } else {
                Some(money_to_proto(*minimum_bid))
            };
            state.bid_count = *bids_standing;
            state.minimum_next_bid = Some(money_to_proto(*minimum_bid));
            state.end_time = Some(timestamp(*end_at));
            if let (Some(winner), Some(price)) = (winner, final_price) {
                state.result = Some(result(*winner, *price, 1, *end_at));
            }
            state.format_state = Some(pb::auction_state::FormatState::Sealed(pb::SealedState {
                sealed_bid_count: *bids_standing,
                ..pb::SealedState::default()
            }));
        }
        FormatView::Live {
            lots, countdown_ms, ..
        } => {
            // One lot per auction (the service never creates a session of
            // several lots in one auction).
            if let Some(lot) = lots.first() {
                state.current_price = Some(money_to_proto(lot.price.unwrap_or(lot.starting_price)));
                if lot.status == LotStatus::Open {
                    state.minimum_next_bid = Some(money_to_proto(lot.minimum_bid));
                }
                state.leader = lot.leader.map(bidder);
                state.bid_count = lot.bid_count;
                state.bidder_count = lot.bidders;
                state.reserve_state = reserve(lot.reserve) as i32;
                state.start_time = match (lot.opened_at, view.start_at.unix_ms()) {
                    (Some(opened_at), _) => Some(timestamp(opened_at)),
                    (None, 0) => None,
                    (None, _) => Some(timestamp(view.start_at)),
                };
                if view.status == AuctionStatus::Unsold {
                    state.result = Some(pb::AuctionResult {
                        unsold_reason: lot.pass_reason.map_or(pb::UnsoldReason::Passed, unsold)
                            as i32,
                        end_time: lot.closed_at.map(timestamp),
                        ..pb::AuctionResult::default()
                    });
                }
                if view.status == AuctionStatus::Closed
                    && let (Some(winner), Some(price)) = (lot.winner, lot.hammer_price)
                {
                    state.result = Some(result(
                        winner,
                        price,
                        1,
                        lot.closed_at.unwrap_or(view.start_at),
                    ));
                }
                let identity = metadata.live_lot.clone().unwrap_or_default();
                state.format_state =
                    Some(pb::auction_state::FormatState::LiveLot(pb::LiveLotState {
                        session_id: identity.session_id,
                        lot_number: identity.lot_number,
                        lot_state: lot_state(lot) as i32,
                        starting_price: Some(money_to_proto(lot.starting_price)),
                        lot_countdown: Some(duration(*countdown_ms)),
                        countdown_end_time: lot.deadline.map(timestamp),
                        finalize_time: lot.finalize_at.map(timestamp),
                        absentee_bid_count: lot.absentee_bids,
                        auctioneer_id: identity.auctioneer_id,
                        ..pb::LiveLotState::default()
                    }));
            }
        }
    }
    state
}

fn result(winner: UserId, price: Money, quantity: u32, end_at: Timestamp) -> pb::AuctionResult {
    pb::AuctionResult {
        awards: vec![pb::Award {
            winner: Some(bidder(winner)),
            unit_price: Some(money_to_proto(price)),
            quantity,
            total_price: Some(money_to_proto(price)),
            ..pb::Award::default()
        }],
        end_time: Some(timestamp(end_at)),
        ..pb::AuctionResult::default()
    }
}

/// The caller's own position.
pub fn viewer(facts: &ViewerFacts, view: &AuctionView, seller: bool) -> pb::ViewerState {
    let leader = match &view.format {
        FormatView::English { leader, .. } => *leader == Some(UserId(facts.user_id)),
        FormatView::Live { .. } => leading_user(view) == Some(UserId(facts.user_id)),
        FormatView::Dutch { .. } | FormatView::Sealed { .. } => false,
    };
    let own = facts.own_bid.map(money_to_proto);
    let sealed = matches!(view.format, FormatView::Sealed { .. });
    let status = facts
        .bid_status
        .map_or(pb::BidStatus::Unspecified, bid_status);
    // On a pending lot the caller's maximum is an absentee bid, and whether
    // it would lead stays hidden until the lot opens (it would tell them
    // about the others' maximums).
    if let FormatView::Live { lots, .. } = &view.format
        && lots
            .first()
            .is_some_and(|lot| lot.status == LotStatus::Pending)
    {
        return pb::ViewerState {
            status: if own.is_some() {
                pb::BidStatus::Pending
            } else {
                pb::BidStatus::Unspecified
            } as i32,
            absentee_bid: own,
            is_seller: seller,
            ..pb::ViewerState::default()
        };
    }
    pb::ViewerState {
        is_leader: leader,
        status: status as i32,
        max_bid: if sealed { None } else { own.clone() },
        sealed_bid: if sealed { own } else { None },
        is_seller: seller,
        ..pb::ViewerState::default()
    }
}

/// The wire form of a receipt's state and viewer, as of the time the
/// request was applied.
pub fn receipt_state(receipt: &Receipt) -> (pb::AuctionState, Option<pb::ViewerState>) {
    let state = state(
        receipt.auction_id,
        &receipt.view,
        &receipt.metadata,
        Timestamp::from_unix_ms(receipt.at_ms),
    );
    let viewer = receipt
        .viewer
        .as_ref()
        .map(|facts| viewer(facts, &receipt.view, false));
    (state, viewer)
}

/// The wire form of a committed event; events the public may not see (a
/// proxy maximum, a sealed amount) keep their sequence number and time but
/// carry no content, so streams stay gap-free. `view` is the auction after
/// the event or later; `later_bids` is how many visible bids were accepted
/// after the event up to `view` (so a bid event's count is its own).
pub fn event(
    auction_id: Uuid,
    event: &Event,
    view: &AuctionView,
    metadata: &Metadata,
    later_bids: u32,
) -> pb::AuctionEvent {
    use auction_engine::event::PublicEventKind as Kind;
    use pb::auction_event::Kind as Wire;
    let mut wire = pb::AuctionEvent {
        sequence: wire_sequence(event.seq),
        event_time: Some(timestamp(event.at)),
        auction_id: auction_id.to_string(),
        status: status(view.status) as i32,
        kind: None,
    };
    let Some(PublicEvent { kind, .. }) = event.to_public() else {
        return wire;
    };
    wire.kind = match kind {
        Kind::Opened => Some(Wire::Opened(pb::AuctionOpened::default())),
        Kind::Cancelled => Some(Wire::Cancelled(pb::AuctionCancelled::default())),
        Kind::Sold { winner, price } => Some(Wire::Closed(pb::AuctionClosed {
            result: Some(result(winner, price, 1, event.at)),
        })),
        Kind::Unsold { reason } => Some(Wire::Unsold(pb::AuctionUnsold {
            reason: unsold(reason) as i32,
        })),
        Kind::PriceChanged { .. } => Some(Wire::BidAccepted(bid_accepted(
            auction_id, event, view, later_bids,
        ))),
        Kind::BuyItNowWithdrawn => None,
        Kind::Updated => Some(Wire::Updated(pb::AuctionUpdated {
            state: Some(state(auction_id, view, metadata, event.at)),
        })),
        Kind::Extended { end_at } => Some(Wire::Extended(pb::AuctionExtended {
            new_end_time: Some(timestamp(end_at)),
            ..pb::AuctionExtended::default()
        })),
        Kind::BidRetracted {
            price,
            leader,
            reserve_met,
            ..
        } => Some(Wire::BidRetracted(pb::BidRetracted {
            new_price: price.map(money_to_proto),
            leader: leader.map(bidder),
            reserve_state: if reserve_met {
                pb::ReserveState::Met as i32
            } else {
                pb::ReserveState::Unspecified as i32
            },
            ..pb::BidRetracted::default()
        })),
        Kind::ClockTicked { price } => Some(Wire::DutchClockTicked(pb::DutchClockTicked {
            current_price: Some(money_to_proto(price)),
            ..pb::DutchClockTicked::default()
        })),
        Kind::UnitsSold {
            buyer,
            quantity,
            unit_price,
            remaining,
        } => Some(Wire::UnitsSold(pb::UnitsSold {
            buyer: Some(bidder(buyer)),
            quantity,
            unit_price: Some(money_to_proto(unit_price)),
            units_remaining: remaining,
            ..pb::UnitsSold::default()
        })),
        Kind::DutchEnded { .. } => None,
        Kind::SealedBidReceived => Some(Wire::SealedBidReceived(pb::SealedBidReceived {
            sealed_bid_count: match view.format {
                FormatView::Sealed { bids_standing, .. } => bids_standing,
                _ => 0,
            },
        })),
        Kind::AbsenteeBidReceived { lot } => {
            Some(Wire::AbsenteeBidReceived(pb::AbsenteeBidReceived {
                absentee_bid_count: live_lot(view, lot).map_or(0, |lot| lot.absentee_bids),
            }))
        }
        Kind::LotOpened {
            lot,
            deadline,
            opening,
        } => {
            let lot_view = live_lot(view, lot);
            let identity = metadata.live_lot.clone().unwrap_or_default();
            // What the lot opened at, from the event itself: `view` may be
            // much later (a replay). Events logged before the opening was
            // recorded fall back to the view.
            let (current_price, minimum_next_bid, leader) = match (opening, lot_view) {
                (Some(opening), _) => (
                    opening
                        .price
                        .or_else(|| lot_view.map(|lot| lot.starting_price))
                        .map(money_to_proto),
                    Some(money_to_proto(opening.minimum_bid)),
                    opening.leader.map(bidder),
                ),
                (None, Some(lot)) => (
                    Some(money_to_proto(lot.price.unwrap_or(lot.starting_price))),
                    Some(money_to_proto(lot.minimum_bid)),
                    lot.leader.map(bidder),
                ),
                (None, None) => (None, None, None),
            };
            Some(Wire::LotOpened(pb::LotOpened {
                session_id: identity.session_id,
                lot_number: identity.lot_number,
                current_price,
                minimum_next_bid,
                leader,
                countdown_end_time: Some(timestamp(deadline)),
            }))
        }
        Kind::FairWarning { lot } => {
            let lot_view = live_lot(view, lot);
            Some(Wire::FairWarningCalled(pb::FairWarningCalled {
                countdown_end_time: lot_view.and_then(|lot| lot.deadline).map(timestamp),
                current_price: lot_view.and_then(|lot| lot.price).map(money_to_proto),
                leader: lot_view.and_then(|lot| lot.leader).map(bidder),
            }))
        }
        Kind::LotSold { winner, price, .. } => {
            let automatic = matches!(
                event.kind,
                auction_engine::EventKind::LotSold {
                    by_countdown: true,
                    ..
                }
            );
            Some(Wire::LotHammered(pb::LotHammered {
                winner: Some(bidder(winner)),
                hammer_price: Some(money_to_proto(price)),
                finalize_time: finalize_time(view, event),
                automatic,
            }))
        }
        Kind::LotPassed { .. } => {
            let (reason, automatic) = match event.kind {
                auction_engine::EventKind::LotPassed { reason, .. } => {
                    (reason, reason != auction_engine::UnsoldReason::Passed)
                }
                _ => (auction_engine::UnsoldReason::Passed, false),
            };
            Some(Wire::LotPassed(pb::LotPassed {
                reason: unsold(reason) as i32,
                finalize_time: finalize_time(view, event),
                automatic,
                ..pb::LotPassed::default()
            }))
        }
        Kind::LotReopened { lot, deadline } => {
            let lot_view = live_lot(view, lot);
            Some(Wire::LotReopened(pb::LotReopened {
                current_price: lot_view.and_then(|lot| lot.price).map(money_to_proto),
                leader: lot_view.and_then(|lot| lot.leader).map(bidder),
                minimum_next_bid: lot_view.map(|lot| money_to_proto(lot.minimum_bid)),
                countdown_end_time: Some(timestamp(deadline)),
                ..pb::LotReopened::default()
            }))
        }
        Kind::BidUndone {
            lot, price, leader, ..
        } => {
            let lot_view = live_lot(view, lot);
            let undone = match event.kind {
                auction_engine::EventKind::BidUndone { bidder: who, .. } => Some(bidder(who)),
                _ => None,
            };
            Some(Wire::BidUndone(pb::BidUndone {
                bidder: undone,
                new_price: price.map(money_to_proto),
                leader: leader.map(bidder),
                minimum_next_bid: lot_view.map(|lot| money_to_proto(lot.minimum_bid)),
                countdown_end_time: lot_view.and_then(|lot| lot.deadline).map(timestamp),
                ..pb::BidUndone::default()
            }))
        }
        Kind::SessionEnded { .. } => None,
    };
    wire
}

/// A live lot in the view (the state after the event being converted; for
/// a replayed event, the current one).
fn live_lot(view: &AuctionView, lot: auction_engine::LotIndex) -> Option<&LotView> {
    match &view.format {
        FormatView::Live { lots, .. } => lots.get(lot.as_usize()),
        FormatView::English { .. } | FormatView::Dutch { .. } | FormatView::Sealed { .. } => None,
    }
}

/// When a hammer or pass becomes final: the configured delay after it,
/// read off the lot while it is provisional.
fn finalize_time(view: &AuctionView, event: &Event) -> Option<prost_types::Timestamp> {
    match &view.format {
        FormatView::Live { lots, .. } => lots
            .first()
            .and_then(|lot| lot.finalize_at)
            .filter(|finalize_at| *finalize_at >= event.at)
            .map(timestamp),
        FormatView::English { .. } | FormatView::Dutch { .. } | FormatView::Sealed { .. } => None,
    }
}

/// A `BidAccepted` with everything the contract names: the bid's id and
/// visible amount (the price it stands at when it leads, else the amount it
/// reached, as the bid history shows it), its kind, and the minimum next bid
/// and bid count after it.
fn bid_accepted(
    auction_id: Uuid,
    event: &Event,
    view: &AuctionView,
    later_bids: u32,
) -> pb::BidAccepted {
    let auction_engine::EventKind::BidAccepted {
        bidder: who,
        bid_kind,
        max_amount,
        price,
        leader,
        ..
    } = event.kind
    else {
        return pb::BidAccepted::default();
    };
    let visible = if leader == who { price } else { max_amount };
    let kind = match bid_kind {
        auction_engine::BidKind::Plain => pb::BidKind::Manual,
        auction_engine::BidKind::Maximum => pb::BidKind::Proxy,
        auction_engine::BidKind::Absentee => pb::BidKind::Absentee,
    };
    let (minimum_next_bid, bid_count, buy_it_now_available) = match &view.format {
        FormatView::English {
            increments,
            bid_count,
            buy_it_now_price,
            ..
        } => (
            increments.as_ref().map(|table| {
                money_to_proto(Money::new(
                    price
                        .amount
                        .saturating_add(table.increment_at(price.amount)),
                    price.currency,
                ))
            }),
            bid_count.saturating_sub(later_bids),
            buy_it_now_price.is_some(),
        ),
        // A live lot counts its bids like an English auction.
        FormatView::Live { lots, .. } => (
            None,
            lots.first()
                .map_or(0, |lot| lot.bid_count.saturating_sub(later_bids)),
            false,
        ),
        FormatView::Dutch { .. } | FormatView::Sealed { .. } => (None, 0, false),
    };
    pb::BidAccepted {
        bid_id: crate::history::bid_id(auction_id, event.seq).to_string(),
        bidder: Some(bidder(who)),
        amount: Some(money_to_proto(visible)),
        kind: kind as i32,
        new_price: Some(money_to_proto(price)),
        leader: Some(bidder(leader)),
        minimum_next_bid,
        bid_count,
        buy_it_now_available,
    }
}

/// How many visible bids each of `events` has after it in the slice (for
/// [`event`]'s `later_bids`).
pub fn later_bids(events: &[Event]) -> Vec<u32> {
    let mut later = vec![0_u32; events.len()];
    let mut count = 0_u32;
    for (index, event) in events.iter().enumerate().rev() {
        later[index] = count;
        if is_visible_bid(event) {
            count = count.saturating_add(1);
        }
    }
    later
}

/// How many visible bids `events` holds.
pub fn visible_bids(events: &[Event]) -> u32 {
    let count = events.iter().filter(|event| is_visible_bid(event)).count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

fn is_visible_bid(event: &Event) -> bool {
    matches!(
        event.kind,
        auction_engine::EventKind::BidAccepted {
            bid_kind: auction_engine::BidKind::Plain | auction_engine::BidKind::Maximum,
            ..
        }
    )
}

fn unsold(reason: auction_engine::UnsoldReason) -> pb::UnsoldReason {
    match reason {
        auction_engine::UnsoldReason::NoBids | auction_engine::UnsoldReason::NoAccept => {
            pb::UnsoldReason::NoBids
        }
        auction_engine::UnsoldReason::ReserveNotMet => pb::UnsoldReason::ReserveNotMet,
        auction_engine::UnsoldReason::Passed | auction_engine::UnsoldReason::NothingSold => {
            pb::UnsoldReason::Passed
        }
    }
}

/// The wire `Bid` of the caller's latest bid, from the receipt.
pub fn own_bid(receipt: &Receipt, kind: pb::BidKind) -> pb::Bid {
    let now = Timestamp::from_unix_ms(receipt.at_ms);
    let facts = receipt.viewer.as_ref();
    pb::Bid {
        auction_id: receipt.auction_id.to_string(),
        bidder: facts.map(|facts| bidder(UserId(facts.user_id))),
        max_amount: facts.and_then(|facts| facts.own_bid).map(money_to_proto),
        kind: kind as i32,
        status: facts
            .and_then(|facts| facts.bid_status)
            .map_or(pb::BidStatus::Unspecified, bid_status) as i32,
        place_time: Some(timestamp(
            receipt.events.last().map_or(now, |event| event.at),
        )),
        sequence: receipt
            .events
            .last()
            .map_or(0, |event| wire_sequence(event.seq)),
        ..pb::Bid::default()
    }
}

//! The rules a listing's format parameters and schedule must follow before
//! the catalog asks the bidding service to schedule its auction: pure
//! functions of the request and the current time, so every refusal is an
//! INVALID_ARGUMENT with the field and the reason, decided here.

use std::time::Duration;

use auction_proto::v1::{
    AuctionFormat, AuctionParameters, DutchParameters, EnglishParameters, IncrementTier,
    LiveLotParameters, SealedParameters, auction_parameters::FormatParameters,
};
use rust_decimal::Decimal;

use crate::money::{self, Amount, AmountError};

/// How far in the past a start time may be (clock skew of the caller).
pub const START_PAST_TOLERANCE_MS: i64 = 60_000;
/// How far ahead a listing may start.
pub const START_AHEAD_MAX_MS: i64 = 90 * 86_400_000;
/// Shortest auction.
pub const DURATION_MIN_MS: i64 = 60_000;
/// Longest auction.
pub const DURATION_MAX_MS: i64 = 30 * 86_400_000;
/// Most increment tiers (the engine's bound).
pub const MAX_INCREMENT_TIERS: usize = 64;
/// Most Dutch units.
pub const MAX_DUTCH_QUANTITY: u32 = 100_000;

/// Which kind of rule a listing broke; each maps to its own reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    /// `PARAMETERS_INVALID`.
    Parameters,
    /// `SCHEDULE_INVALID`.
    Schedule,
    /// `CURRENCY_MISMATCH`.
    Currency,
    /// `AMOUNT_INVALID`.
    Amount,
}

/// A broken rule: which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    /// The reason family.
    pub kind: RuleKind,
    /// The request field, e.g. `parameters.english.reserve_price`.
    pub field: String,
    /// What is wrong, for people.
    pub message: String,
}

fn rule(kind: RuleKind, field: &str, message: impl Into<String>) -> RuleError {
    RuleError {
        kind,
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A listing whose parameters and schedule passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidListing {
    /// The format.
    pub format: AuctionFormat,
    /// The currency of every amount.
    pub currency: String,
    /// The first asking price (Dutch: the clock's start price).
    pub starting_price: Amount,
    /// Whether a reserve exists.
    pub has_reserve: bool,
    /// The buy-it-now price, if any.
    pub buy_it_now_price: Option<Amount>,
    /// Dutch units; 0 otherwise.
    pub quantity: u32,
    /// When bidding opens.
    pub start_at_ms: i64,
    /// When it ends.
    pub end_at_ms: i64,
}

/// Checks `parameters` (not LIVE: live lots come with a session) and the
/// schedule at `now_ms`. `start_ms` unset = now.
pub fn validate_listing(
    parameters: Option<&AuctionParameters>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    now_ms: i64,
) -> Result<ValidListing, RuleError> {
    let parameters = parameters.ok_or_else(|| {
        rule(
            RuleKind::Parameters,
            "parameters",
            "is required (a format and its parameters)",
        )
    })?;
    let format = AuctionFormat::try_from(parameters.format).unwrap_or(AuctionFormat::Unspecified);
    let checked = match (format, parameters.format_parameters.as_ref()) {
        (AuctionFormat::Live, _) => {
            return Err(rule(
                RuleKind::Parameters,
                "parameters.format",
                "live lots are created with CreateLiveSession",
            ));
        }
        (AuctionFormat::Unspecified, _) => {
            return Err(rule(
                RuleKind::Parameters,
                "parameters.format",
                "a format is required",
            ));
        }
        (AuctionFormat::English, Some(FormatParameters::English(english))) => {
            english_rules(english)?
        }
        (AuctionFormat::Dutch, Some(FormatParameters::Dutch(dutch))) => dutch_rules(dutch)?,
        (
            AuctionFormat::SealedFirstPrice | AuctionFormat::SealedSecondPrice,
            Some(FormatParameters::Sealed(sealed)),
        ) => sealed_rules(sealed)?,
        (
            AuctionFormat::English
            | AuctionFormat::Dutch
            | AuctionFormat::SealedFirstPrice
            | AuctionFormat::SealedSecondPrice,
            _,
        ) => {
            return Err(rule(
                RuleKind::Parameters,
                "parameters.format_parameters",
                format!(
                    "{} needs its own parameters ({})",
                    format.as_str_name(),
                    match format {
                        AuctionFormat::English => "english",
                        AuctionFormat::Dutch => "dutch",
                        _ => "sealed",
                    }
                ),
            ));
        }
    };
    let (start_at_ms, end_at_ms) = schedule_rules(start_ms, end_ms, now_ms)?;
    Ok(ValidListing {
        format,
        currency: checked.starting_price.currency.clone(),
        starting_price: checked.starting_price,
        has_reserve: checked.has_reserve,
        buy_it_now_price: checked.buy_it_now_price,
        quantity: checked.quantity,
        start_at_ms,
        end_at_ms,
    })
}

/// What the format rules give back.
struct Checked {
    starting_price: Amount,
    has_reserve: bool,
    buy_it_now_price: Option<Amount>,
    quantity: u32,
}

/// Checks the start and end: start at most 1 minute past and 90 days ahead,
/// end 1 minute to 30 days after the start.
pub fn schedule_rules(
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    now_ms: i64,
) -> Result<(i64, i64), RuleError> {
    let start_at_ms = start_ms.unwrap_or(now_ms);
    if start_at_ms < now_ms - START_PAST_TOLERANCE_MS {
        return Err(rule(
            RuleKind::Schedule,
            "start_time",
            "is in the past (more than 1 minute ago)",
        ));
    }
    if start_at_ms > now_ms + START_AHEAD_MAX_MS {
        return Err(rule(
            RuleKind::Schedule,
            "start_time",
            "is more than 90 days ahead",
        ));
    }
    let end_at_ms = end_ms.ok_or_else(|| rule(RuleKind::Schedule, "end_time", "is required"))?;
    if end_at_ms <= start_at_ms {
        return Err(rule(
            RuleKind::Schedule,
            "end_time",
            "must be after start_time",
        ));
    }
    let length_ms = end_at_ms - start_at_ms;
    if length_ms < DURATION_MIN_MS {
        return Err(rule(
            RuleKind::Schedule,
            "end_time",
            "must be at least 1 minute after start_time",
        ));
    }
    if length_ms > DURATION_MAX_MS {
        return Err(rule(
            RuleKind::Schedule,
            "end_time",
            "must be at most 30 days after start_time",
        ));
    }
    Ok((start_at_ms, end_at_ms))
}

fn amount_rule(field: &str, error: AmountError) -> RuleError {
    let kind = match error {
        AmountError::Missing => RuleKind::Parameters,
        AmountError::Currency(_)
        | AmountError::Syntax(_)
        | AmountError::TooPrecise { .. }
        | AmountError::OutOfRange => RuleKind::Amount,
    };
    rule(kind, field, error.to_string())
}

/// A required positive amount in `currency` (when known).
fn positive(
    field: &str,
    money: Option<&auction_proto::v1::Money>,
    currency: Option<&str>,
) -> Result<Amount, RuleError> {
    let amount = money::parse_positive(money).map_err(|error| amount_rule(field, error))?;
    same_currency(field, &amount, currency)?;
    Ok(amount)
}

fn same_currency(field: &str, amount: &Amount, currency: Option<&str>) -> Result<(), RuleError> {
    match currency {
        Some(currency) if currency != amount.currency => Err(rule(
            RuleKind::Currency,
            field,
            format!("is in {} but the listing is in {currency}", amount.currency),
        )),
        Some(_) | None => Ok(()),
    }
}

fn duration_ms(field: &str, duration: &prost_types::Duration) -> Result<i64, RuleError> {
    if duration.seconds < 0 || duration.nanos < 0 || duration.nanos >= 1_000_000_000 {
        return Err(rule(
            RuleKind::Parameters,
            field,
            "must be a non-negative duration",
        ));
    }
    Ok(duration
        .seconds
        .saturating_mul(1_000)
        .saturating_add(i64::from(duration.nanos / 1_000_000)))
}

fn duration_in(
    field: &str,
    duration: Option<&prost_types::Duration>,
    range: std::ops::RangeInclusive<Duration>,
) -> Result<(), RuleError> {
    let Some(duration) = duration else {
        return Ok(());
    };
    let ms = duration_ms(field, duration)?;
    let low = i64::try_from(range.start().as_millis()).unwrap_or(i64::MAX);
    let high = i64::try_from(range.end().as_millis()).unwrap_or(i64::MAX);
    if !(low..=high).contains(&ms) {
        return Err(rule(
            RuleKind::Parameters,
            field,
            format!("must be between {} s and {} s", low / 1_000, high / 1_000),
        ));
    }
    Ok(())
}

/// Increment tiers: first from 0, strictly ascending, increments > 0, same
/// currency, at most 64.
fn tier_rules(field: &str, tiers: &[IncrementTier], currency: &str) -> Result<(), RuleError> {
    if tiers.len() > MAX_INCREMENT_TIERS {
        return Err(rule(
            RuleKind::Parameters,
            field,
            format!("at most {MAX_INCREMENT_TIERS} tiers"),
        ));
    }
    let mut previous: Option<Decimal> = None;
    for (index, tier) in tiers.iter().enumerate() {
        let from_field = format!("{field}[{index}].from_price");
        let from = money::parse(
            tier.from_price
                .as_ref()
                .ok_or_else(|| rule(RuleKind::Parameters, &from_field, "is required"))?,
        )
        .map_err(|error| amount_rule(&from_field, error))?;
        same_currency(&from_field, &from, Some(currency))?;
        match previous {
            None if !from.value.is_zero() => {
                return Err(rule(
                    RuleKind::Parameters,
                    &from_field,
                    "the first tier must start at 0",
                ));
            }
            Some(previous) if from.value <= previous => {
                return Err(rule(
                    RuleKind::Parameters,
                    &from_field,
                    "tiers must be strictly ascending",
                ));
            }
            None | Some(_) => {}
        }
        previous = Some(from.value);
        positive(
            &format!("{field}[{index}].increment"),
            tier.increment.as_ref(),
            Some(currency),
        )?;
    }
    Ok(())
}

fn english_rules(english: &EnglishParameters) -> Result<Checked, RuleError> {
    let starting = positive(
        "parameters.english.starting_price",
        english.starting_price.as_ref(),
        None,
    )?;
    let currency = starting.currency.clone();
    tier_rules(
        "parameters.english.increment_tiers",
        &english.increment_tiers,
        &currency,
    )?;
    let reserve = english
        .reserve_price
        .as_ref()
        .map(|reserve| {
            positive(
                "parameters.english.reserve_price",
                Some(reserve),
                Some(&currency),
            )
        })
        .transpose()?;
    if let Some(reserve) = &reserve
        && reserve.value < starting.value
    {
        return Err(rule(
            RuleKind::Parameters,
            "parameters.english.reserve_price",
            "must be at least the starting price",
        ));
    }
    let buy_it_now = english
        .buy_it_now_price
        .as_ref()
        .map(|price| {
            positive(
                "parameters.english.buy_it_now_price",
                Some(price),
                Some(&currency),
            )
        })
        .transpose()?;
    if let Some(price) = &buy_it_now {
        if price.value <= starting.value {
            return Err(rule(
                RuleKind::Parameters,
                "parameters.english.buy_it_now_price",
                "must be above the starting price",
            ));
        }
        if let Some(reserve) = &reserve
            && price.value < reserve.value
        {
            return Err(rule(
                RuleKind::Parameters,
                "parameters.english.buy_it_now_price",
                "must be at least the reserve price",
            ));
        }
    }
    duration_in(
        "parameters.english.soft_close_window",
        english.soft_close_window.as_ref(),
        Duration::ZERO..=Duration::from_secs(3_600),
    )?;
    duration_in(
        "parameters.english.soft_close_extension",
        english.soft_close_extension.as_ref(),
        Duration::from_secs(1)..=Duration::from_secs(3_600),
    )?;
    if let Some(cap) = english.max_total_extension.as_ref() {
        duration_ms("parameters.english.max_total_extension", cap)?;
    }
    Ok(Checked {
        starting_price: starting,
        has_reserve: reserve.is_some(),
        buy_it_now_price: buy_it_now,
        quantity: 0,
    })
}

fn dutch_rules(dutch: &DutchParameters) -> Result<Checked, RuleError> {
    let start = positive(
        "parameters.dutch.start_price",
        dutch.start_price.as_ref(),
        None,
    )?;
    let currency = start.currency.clone();
    let floor = positive(
        "parameters.dutch.floor_price",
        dutch.floor_price.as_ref(),
        Some(&currency),
    )?;
    if floor.value >= start.value {
        return Err(rule(
            RuleKind::Parameters,
            "parameters.dutch.floor_price",
            "must be below the start price",
        ));
    }
    let step = positive(
        "parameters.dutch.price_step",
        dutch.price_step.as_ref(),
        Some(&currency),
    )?;
    if step.value > start.value - floor.value {
        return Err(rule(
            RuleKind::Parameters,
            "parameters.dutch.price_step",
            "must not exceed the distance from the start price to the floor",
        ));
    }
    if dutch.tick_interval.is_none() {
        return Err(rule(
            RuleKind::Parameters,
            "parameters.dutch.tick_interval",
            "is required",
        ));
    }
    duration_in(
        "parameters.dutch.tick_interval",
        dutch.tick_interval.as_ref(),
        Duration::from_secs(1)..=Duration::from_secs(86_400),
    )?;
    if !(1..=MAX_DUTCH_QUANTITY).contains(&dutch.quantity) {
        return Err(rule(
            RuleKind::Parameters,
            "parameters.dutch.quantity",
            format!("must be between 1 and {MAX_DUTCH_QUANTITY}"),
        ));
    }
    if dutch.max_units_per_buyer > dutch.quantity {
        return Err(rule(
            RuleKind::Parameters,
            "parameters.dutch.max_units_per_buyer",
            "must not exceed the quantity",
        ));
    }
    Ok(Checked {
        starting_price: start,
        has_reserve: false,
        buy_it_now_price: None,
        quantity: dutch.quantity,
    })
}

fn sealed_rules(sealed: &SealedParameters) -> Result<Checked, RuleError> {
    let start = positive(
        "parameters.sealed.start_price",
        sealed.start_price.as_ref(),
        None,
    )?;
    let currency = start.currency.clone();
    let reserve = sealed
        .reserve_price
        .as_ref()
        .map(|reserve| {
            positive(
                "parameters.sealed.reserve_price",
                Some(reserve),
                Some(&currency),
            )
        })
        .transpose()?;
    if let Some(reserve) = &reserve
        && reserve.value < start.value
    {
        return Err(rule(
            RuleKind::Parameters,
            "parameters.sealed.reserve_price",
            "must be at least the start price",
        ));
    }
    Ok(Checked {
        starting_price: start,
        has_reserve: reserve.is_some(),
        buy_it_now_price: None,
        quantity: 0,
    })
}

/// Soonest a live session may start (the contract: 5 minutes ahead).
pub const SESSION_START_AHEAD_MIN_MS: i64 = 5 * 60_000;
/// Most lots in one live session.
pub const MAX_LOTS_PER_SESSION: usize = 500;

/// A live lot whose parameters passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidLot {
    /// The opening asking price.
    pub starting_price: Amount,
    /// Whether a reserve exists.
    pub has_reserve: bool,
}

/// Checks a live session's start: 5 minutes to 90 days ahead of `now_ms`.
pub fn session_start_rules(start_ms: Option<i64>, now_ms: i64) -> Result<i64, RuleError> {
    let start_at_ms =
        start_ms.ok_or_else(|| rule(RuleKind::Schedule, "start_time", "is required"))?;
    if start_at_ms < now_ms + SESSION_START_AHEAD_MIN_MS {
        return Err(rule(
            RuleKind::Schedule,
            "start_time",
            "must be at least 5 minutes ahead",
        ));
    }
    if start_at_ms > now_ms + START_AHEAD_MAX_MS {
        return Err(rule(
            RuleKind::Schedule,
            "start_time",
            "is more than 90 days ahead",
        ));
    }
    Ok(start_at_ms)
}

/// Checks one lot's parameters (`field` names it in the request, e.g.
/// `lots[2].parameters`): a positive starting price in the session's
/// `currency`, sound increment tiers, a reserve at least the starting price,
/// a countdown of 3 s - 5 min.
pub fn live_lot_rules(
    field: &str,
    parameters: Option<&LiveLotParameters>,
    currency: &str,
) -> Result<ValidLot, RuleError> {
    let parameters = parameters.ok_or_else(|| rule(RuleKind::Parameters, field, "is required"))?;
    let starting = positive(
        &format!("{field}.starting_price"),
        parameters.starting_price.as_ref(),
        Some(currency),
    )?;
    tier_rules(
        &format!("{field}.increment_tiers"),
        &parameters.increment_tiers,
        currency,
    )?;
    let reserve_field = format!("{field}.reserve_price");
    let reserve = parameters
        .reserve_price
        .as_ref()
        .map(|reserve| positive(&reserve_field, Some(reserve), Some(currency)))
        .transpose()?;
    if let Some(reserve) = &reserve
        && reserve.value < starting.value
    {
        return Err(rule(
            RuleKind::Parameters,
            &reserve_field,
            "must be at least the starting price",
        ));
    }
    duration_in(
        &format!("{field}.lot_countdown"),
        parameters.lot_countdown.as_ref(),
        Duration::from_secs(3)..=Duration::from_secs(300),
    )?;
    Ok(ValidLot {
        starting_price: starting,
        has_reserve: reserve.is_some(),
    })
}

/// `parameters` without the reserve, for callers other than the seller
/// and admins.
pub fn without_reserve(mut parameters: AuctionParameters) -> AuctionParameters {
    match parameters.format_parameters.as_mut() {
        Some(FormatParameters::English(english)) => english.reserve_price = None,
        Some(FormatParameters::Sealed(sealed)) => sealed.reserve_price = None,
        Some(FormatParameters::LiveLot(live)) => live.reserve_price = None,
        Some(FormatParameters::Dutch(_)) | None => {}
    }
    parameters
}

#[cfg(test)]
mod tests {
    use super::*;
    use auction_proto::v1::Money;

    const NOW_MS: i64 = 1_800_000_000_000;
    const HOUR_MS: i64 = 3_600_000;

    fn usd(amount: &str) -> Option<Money> {
        Some(Money {
            currency: "USD".to_owned(),
            amount: amount.to_owned(),
        })
    }

    fn english(english: EnglishParameters) -> AuctionParameters {
        AuctionParameters {
            format: AuctionFormat::English as i32,
            format_parameters: Some(FormatParameters::English(english)),
        }
    }

    fn check(parameters: &AuctionParameters) -> Result<ValidListing, RuleError> {
        validate_listing(Some(parameters), None, Some(NOW_MS + HOUR_MS), NOW_MS)
    }

    // Proves a sound English listing passes with its derived values.
    #[test]
    fn english_listing_passes() {
        let valid = check(&english(EnglishParameters {
            starting_price: usd("10"),
            reserve_price: usd("50"),
            buy_it_now_price: usd("80"),
            ..EnglishParameters::default()
        }))
        .unwrap();
        assert_eq!(valid.currency, "USD");
        assert!(valid.has_reserve);
        assert_eq!(valid.start_at_ms, NOW_MS);
        assert_eq!(valid.end_at_ms, NOW_MS + HOUR_MS);
    }

    // Proves each English rule refuses with its own field and reason.
    #[test]
    fn english_rules_refuse() {
        let reserve_below = check(&english(EnglishParameters {
            starting_price: usd("10"),
            reserve_price: usd("5"),
            ..EnglishParameters::default()
        }))
        .unwrap_err();
        assert_eq!(reserve_below.kind, RuleKind::Parameters);
        assert_eq!(reserve_below.field, "parameters.english.reserve_price");

        let buy_now_below_reserve = check(&english(EnglishParameters {
            starting_price: usd("10"),
            reserve_price: usd("50"),
            buy_it_now_price: usd("40"),
            ..EnglishParameters::default()
        }))
        .unwrap_err();
        assert_eq!(
            buy_now_below_reserve.field,
            "parameters.english.buy_it_now_price"
        );

        let euro_reserve = check(&english(EnglishParameters {
            starting_price: usd("10"),
            reserve_price: Some(Money {
                currency: "EUR".to_owned(),
                amount: "50".to_owned(),
            }),
            ..EnglishParameters::default()
        }))
        .unwrap_err();
        assert_eq!(euro_reserve.kind, RuleKind::Currency);

        let too_precise = check(&english(EnglishParameters {
            starting_price: usd("10.001"),
            ..EnglishParameters::default()
        }))
        .unwrap_err();
        assert_eq!(too_precise.kind, RuleKind::Amount);

        let tiers = check(&english(EnglishParameters {
            starting_price: usd("10"),
            increment_tiers: vec![
                IncrementTier {
                    from_price: usd("0"),
                    increment: usd("1"),
                },
                IncrementTier {
                    from_price: usd("0"),
                    increment: usd("2"),
                },
            ],
            ..EnglishParameters::default()
        }))
        .unwrap_err();
        assert_eq!(
            tiers.field,
            "parameters.english.increment_tiers[1].from_price"
        );

        let zero_increment = check(&english(EnglishParameters {
            starting_price: usd("10"),
            increment_tiers: vec![IncrementTier {
                from_price: usd("0"),
                increment: usd("0"),
            }],
            ..EnglishParameters::default()
        }))
        .unwrap_err();
        assert_eq!(
            zero_increment.field,
            "parameters.english.increment_tiers[0].increment"
        );
    }

    // Proves the Dutch floor must sit below the start and the step fit between.
    #[test]
    fn dutch_rules_refuse() {
        let dutch = |start: &str, floor: &str, step: &str| AuctionParameters {
            format: AuctionFormat::Dutch as i32,
            format_parameters: Some(FormatParameters::Dutch(DutchParameters {
                start_price: usd(start),
                floor_price: usd(floor),
                price_step: usd(step),
                tick_interval: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                quantity: 3,
                max_units_per_buyer: 0,
            })),
        };
        assert!(check(&dutch("100", "10", "5")).is_ok());
        assert_eq!(
            check(&dutch("100", "100", "5")).unwrap_err().field,
            "parameters.dutch.floor_price"
        );
        assert_eq!(
            check(&dutch("100", "10", "95")).unwrap_err().field,
            "parameters.dutch.price_step"
        );
    }

    // Proves the schedule: not in the past, end after start, 1 min - 30 days.
    #[test]
    fn schedule_rules_refuse() {
        let parameters = english(EnglishParameters {
            starting_price: usd("10"),
            ..EnglishParameters::default()
        });
        let past = validate_listing(
            Some(&parameters),
            Some(NOW_MS - 2 * 60_000),
            Some(NOW_MS + HOUR_MS),
            NOW_MS,
        )
        .unwrap_err();
        assert_eq!(
            (past.kind, past.field.as_str()),
            (RuleKind::Schedule, "start_time")
        );
        let before = validate_listing(
            Some(&parameters),
            Some(NOW_MS + HOUR_MS),
            Some(NOW_MS),
            NOW_MS,
        )
        .unwrap_err();
        assert_eq!(before.field, "end_time");
        let too_long = validate_listing(
            Some(&parameters),
            None,
            Some(NOW_MS + 31 * 86_400_000),
            NOW_MS,
        )
        .unwrap_err();
        assert_eq!(too_long.kind, RuleKind::Schedule);
        let missing_end = validate_listing(Some(&parameters), None, None, NOW_MS).unwrap_err();
        assert_eq!(missing_end.field, "end_time");
    }

    // Proves LIVE and mismatched parameters are refused as PARAMETERS_INVALID.
    #[test]
    fn format_must_match_its_parameters() {
        let live = AuctionParameters {
            format: AuctionFormat::Live as i32,
            format_parameters: None,
        };
        assert_eq!(check(&live).unwrap_err().kind, RuleKind::Parameters);
        let mismatch = AuctionParameters {
            format: AuctionFormat::Dutch as i32,
            format_parameters: Some(FormatParameters::English(EnglishParameters::default())),
        };
        assert_eq!(
            check(&mismatch).unwrap_err().field,
            "parameters.format_parameters"
        );
    }
}

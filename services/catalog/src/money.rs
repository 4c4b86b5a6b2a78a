//! Amounts as the contract writes them (`auction.v1.Money`: an ISO 4217 code
//! and a decimal string), parsed into exact decimals, and their fixed-point
//! form for filters and sorting (units of 0.0001, which every currency's
//! minor unit divides).

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;

/// The largest amount accepted, in major units (the bidding engine's bound).
pub const MAX_AMOUNT_MAJOR_UNITS: i64 = 1_000_000_000_000;

/// Fixed-point scale of stored prices: 10^4 units per major unit.
const FIXED_POINT_SCALE: i64 = 10_000;

/// An exact amount in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    /// Three upper-case letters.
    pub currency: String,
    /// Positive (or zero where a field allows it), at most the currency's
    /// minor-unit digits.
    pub value: Decimal,
}

/// Why an amount is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The field is required.
    #[error("is required")]
    Missing,
    /// Not three upper-case letters.
    #[error("currency `{0}` is not an ISO 4217 code")]
    Currency(String),
    /// Not a plain decimal string.
    #[error("`{0}` is not a decimal amount")]
    Syntax(String),
    /// More decimal places than the currency has.
    #[error("`{amount}` has more decimal places than {currency} allows ({minor_units})")]
    TooPrecise {
        /// The amount as given.
        amount: String,
        /// Its currency.
        currency: String,
        /// The currency's minor-unit digits.
        minor_units: u32,
    },
    /// Zero or negative where a positive amount is required, or too large.
    #[error("must be greater than 0 and at most {MAX_AMOUNT_MAJOR_UNITS}")]
    OutOfRange,
}

/// How many decimal places `currency`'s minor unit has (ISO 4217; the same
/// table as the bidding engine).
pub fn minor_units(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// Parses a required, positive amount.
pub fn parse_positive(money: Option<&auction_proto::v1::Money>) -> Result<Amount, AmountError> {
    let amount = parse(money.ok_or(AmountError::Missing)?)?;
    if amount.value <= Decimal::ZERO {
        return Err(AmountError::OutOfRange);
    }
    Ok(amount)
}

/// Parses an amount (zero allowed).
pub fn parse(money: &auction_proto::v1::Money) -> Result<Amount, AmountError> {
    let currency = money.currency.as_str();
    if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return Err(AmountError::Currency(currency.to_owned()));
    }
    let text = money.amount.as_str();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 16
        || !digits(whole)
        || !digits(fraction)
        || (text.contains('.') && fraction.is_empty())
        || fraction.len() > 28
    {
        return Err(AmountError::Syntax(text.to_owned()));
    }
    let value: Decimal = text
        .parse()
        .map_err(|_| AmountError::Syntax(text.to_owned()))?;
    let minor = minor_units(currency);
    if value.scale() > minor && value.normalize().scale() > minor {
        return Err(AmountError::TooPrecise {
            amount: text.to_owned(),
            currency: currency.to_owned(),
            minor_units: minor,
        });
    }
    if value > Decimal::from(MAX_AMOUNT_MAJOR_UNITS) {
        return Err(AmountError::OutOfRange);
    }
    Ok(Amount {
        currency: currency.to_owned(),
        value,
    })
}

impl Amount {
    /// The canonical decimal string: exactly the currency's minor-unit digits.
    pub fn canonical(&self) -> String {
        let mut value = self.value;
        value.rescale(minor_units(&self.currency));
        value.to_string()
    }

    /// As the contract's message, in canonical form.
    pub fn to_proto(&self) -> auction_proto::v1::Money {
        auction_proto::v1::Money {
            currency: self.currency.clone(),
            amount: self.canonical(),
        }
    }

    /// The amount in units of 0.0001 (exact: every minor unit divides it).
    pub fn fixed_point(&self) -> i64 {
        fixed_point(self.value)
    }
}

/// `value` in units of 0.0001, saturating (amounts are bounded well below).
pub fn fixed_point(value: Decimal) -> i64 {
    value
        .checked_mul(Decimal::from(FIXED_POINT_SCALE))
        .and_then(|scaled| scaled.trunc().to_i64())
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(currency: &str, amount: &str) -> auction_proto::v1::Money {
        auction_proto::v1::Money {
            currency: currency.to_owned(),
            amount: amount.to_owned(),
        }
    }

    // Proves amounts parse exactly, respect the minor unit and print canonically.
    #[test]
    fn parse_and_canonical_form() {
        let amount = parse(&money("USD", "12.5")).unwrap();
        assert_eq!(amount.canonical(), "12.50");
        assert_eq!(amount.fixed_point(), 125_000);
        assert_eq!(parse(&money("JPY", "1000")).unwrap().canonical(), "1000");
        assert!(matches!(
            parse(&money("JPY", "10.5")),
            Err(AmountError::TooPrecise { .. })
        ));
        assert_eq!(parse(&money("USD", "12.500")).unwrap().canonical(), "12.50");
        for bad in ["", "1e5", "-1", "+1", "1.", ".5", "1,000", " 1"] {
            assert!(
                matches!(parse(&money("USD", bad)), Err(AmountError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&money("usd", "1")),
            Err(AmountError::Currency(_))
        ));
        assert_eq!(
            parse_positive(Some(&money("USD", "0"))),
            Err(AmountError::OutOfRange)
        );
    }
}

//! Money at the edge of the payment service: an exact `rust_decimal`
//! amount and the currency it is in, parsed from and written to the
//! contract's `Money` (canonical form: exactly the currency's minor-unit
//! digits). Pure: no I/O.

use std::fmt;

use auction_proto::v1 as pb;
use rust_decimal::Decimal;

/// The largest amount accepted anywhere (major units), so that every
/// amount and every sum of amounts fits a 64-bit count of minor units.
pub const MAX_AMOUNT_MAJOR_UNITS: i64 = 1_000_000_000_000;

/// An ISO 4217 code: three upper-case ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// United States dollar (tests and examples).
    pub const USD: Currency = Currency(*b"USD");

    /// Parses `"USD"`; `None` unless three upper-case ASCII letters.
    pub fn parse(code: &str) -> Option<Self> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|byte| byte.is_ascii_uppercase()) => {
                Some(Self([*a, *b, *c]))
            }
            _ => None,
        }
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // Only `parse` builds one, from ASCII letters: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Decimal places of the minor unit (ISO 4217; two when not listed).
    pub fn minor_units(self) -> u32 {
        match &self.0 {
            b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG"
            | b"RWF" | b"UGX" | b"UYI" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
            b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
            _ => 2,
        }
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code())
    }
}

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The currency is not three upper-case letters.
    #[error("currency `{0}` is not an ISO 4217 code")]
    Currency(String),
    /// The amount is not a plain decimal with at most the minor-unit digits.
    #[error("amount `{0}` is not a valid decimal for its currency")]
    Amount(String),
    /// The amount is negative or too large.
    #[error("amount `{0}` is out of range")]
    Range(String),
}

/// An exact amount in a currency.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Money {
    /// The currency.
    pub currency: Currency,
    /// The amount, never with more fractional digits than the currency has.
    pub amount: Decimal,
}

impl fmt::Debug for Money {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.text(), self.currency)
    }
}

impl Money {
    /// `amount` in `currency` (the caller ensures the scale fits).
    pub fn new(currency: Currency, amount: Decimal) -> Self {
        Self { currency, amount }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self::new(currency, Decimal::ZERO)
    }

    /// Parses the contract's form: a non-negative plain decimal with at most
    /// the currency's minor-unit digits, at most [`MAX_AMOUNT_MAJOR_UNITS`].
    pub fn parse(currency: &str, amount: &str) -> Result<Self, MoneyError> {
        let currency =
            Currency::parse(currency).ok_or_else(|| MoneyError::Currency(currency.to_owned()))?;
        let amount = parse_decimal(amount, currency.minor_units())?;
        Ok(Self { currency, amount })
    }

    /// Parses a contract `Money`.
    pub fn from_proto(money: &pb::Money) -> Result<Self, MoneyError> {
        Self::parse(&money.currency, &money.amount)
    }

    /// The canonical text: exactly the currency's minor-unit digits.
    pub fn text(&self) -> String {
        let mut amount = self.amount;
        amount.rescale(self.currency.minor_units());
        amount.to_string()
    }

    /// The contract's `Money`, canonical.
    pub fn to_proto(self) -> pb::Money {
        pb::Money {
            currency: self.currency.code().to_owned(),
            amount: self.text(),
        }
    }

    /// The amount as a count of minor units (cents), exact.
    pub fn minor(&self) -> Option<i64> {
        let mut amount = self.amount;
        amount.rescale(self.currency.minor_units());
        if amount.scale() != self.currency.minor_units() {
            return None;
        }
        i64::try_from(amount.mantissa()).ok()
    }

    /// From a count of minor units.
    pub fn from_minor(currency: Currency, minor: i64) -> Self {
        Self::new(currency, Decimal::new(minor, currency.minor_units()))
    }
}

/// Parses a plain decimal ("12", "12.5", "12.50"; no sign, exponent or
/// separators) with at most `minor_units` fractional digits.
pub fn parse_decimal(text: &str, minor_units: u32) -> Result<Decimal, MoneyError> {
    let invalid = || MoneyError::Amount(text.to_owned());
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 13
        || !digits_only(whole)
        || !digits_only(fraction)
        || (text.contains('.') && fraction.is_empty())
        || fraction.len() > usize::try_from(minor_units).unwrap_or(0)
    {
        return Err(invalid());
    }
    let value: Decimal = text.parse().map_err(|_| invalid())?;
    if value > Decimal::from(MAX_AMOUNT_MAJOR_UNITS) {
        return Err(MoneyError::Range(text.to_owned()));
    }
    Ok(value)
}

/// `value * bps / 10_000`, rounded half-up to `minor_units` places (the one
/// place the service rounds: percentage fees).
pub fn basis_points(value: Decimal, bps: u32, minor_units: u32) -> Option<Decimal> {
    let product = value.checked_mul(Decimal::from(bps))?;
    let fraction = product.checked_div(Decimal::from(10_000))?;
    Some(fraction.round_dp_with_strategy(
        minor_units,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // Proves amounts parse only in the contract's plain form and print canonically.
    #[test]
    fn parses_and_prints_canonically() {
        let money = Money::parse("USD", "12.5").unwrap();
        assert_eq!(money.text(), "12.50");
        assert_eq!(money.minor(), Some(1_250));
        assert_eq!(Money::parse("JPY", "1000").unwrap().text(), "1000");
        for bad in ["12.555", "-1", "+1", "1e3", "", ".5", "5.", "1,000"] {
            assert!(Money::parse("USD", bad).is_err(), "{bad}");
        }
        assert!(Money::parse("usd", "1").is_err());
        assert!(Money::parse("JPY", "1.5").is_err());
        assert_eq!(Money::from_minor(Currency::USD, 1_250), money);
    }

    // Proves percentage fees round half away from zero to the minor unit.
    #[test]
    fn basis_points_round_to_the_minor_unit() {
        let value: Decimal = "10.05".parse().unwrap();
        assert_eq!(
            basis_points(value, 500, 2).unwrap(),
            "0.50".parse::<Decimal>().unwrap()
        );
        assert_eq!(
            basis_points("0.10".parse().unwrap(), 500, 2).unwrap(),
            "0.01".parse::<Decimal>().unwrap()
        );
    }
}

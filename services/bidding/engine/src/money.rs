//! Money: an exact decimal amount and the currency it is in.
//!
//! Amounts are `rust_decimal::Decimal`, serialized as strings. An amount the engine
//! accepts is positive, no larger than [`MAX_AMOUNT_MAJOR_UNITS`], and has no more
//! decimal places than its currency's minor unit (two for USD, zero for JPY, three
//! for KWD), so no rounding ever happens inside the engine.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::MAX_AMOUNT_MAJOR_UNITS;

/// An ISO 4217 currency code: three upper-case ASCII letters, stored inline so the
/// type is `Copy` and costs nothing to carry with every amount.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

/// Why a currency code was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("currency code must be three upper-case ASCII letters, got {code:?}")]
pub struct CurrencyError {
    /// The code as it was given, for the error message.
    pub code: String,
}

impl Currency {
    /// United States dollar.
    pub const USD: Currency = Currency(*b"USD");
    /// Euro.
    pub const EUR: Currency = Currency(*b"EUR");
    /// Pound sterling.
    pub const GBP: Currency = Currency(*b"GBP");
    /// Japanese yen (no minor unit).
    pub const JPY: Currency = Currency(*b"JPY");

    /// Parses a three-letter upper-case code such as `"USD"`.
    pub fn from_code(code: &str) -> Result<Currency, CurrencyError> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|byte| byte.is_ascii_uppercase()) => {
                Ok(Currency([*a, *b, *c]))
            }
            _ => Err(CurrencyError {
                code: code.to_owned(),
            }),
        }
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // Only constructors that check for ASCII upper-case letters exist, so the
        // bytes are always valid UTF-8; the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// How many decimal places the currency's minor unit has (ISO 4217). Currencies
    /// not listed have two, which is right for the large majority.
    pub fn minor_units(self) -> u32 {
        match &self.0 {
            b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG"
            | b"RWF" | b"UGX" | b"UYI" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
            b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
            _ => 2,
        }
    }

    /// The smallest positive amount in this currency (0.01 for USD, 1 for JPY).
    pub fn minor_unit(self) -> Decimal {
        Decimal::new(1, self.minor_units())
    }
}

impl std::fmt::Debug for Currency {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.code())
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Currency, D::Error> {
        let code = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount in a currency. Commands and events always carry the currency, and the
/// engine checks it against the auction's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The exact amount in major units (dollars, not cents).
    pub amount: Decimal,
    /// The currency the amount is in.
    pub currency: Currency,
}

impl Money {
    /// Pairs an amount with its currency; no validation (see [`validate_amount`]).
    pub const fn new(amount: Decimal, currency: Currency) -> Money {
        Money { amount, currency }
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.amount, self.currency)
    }
}

/// Why an amount was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Zero or negative.
    #[error("amount must be positive")]
    NotPositive,
    /// More decimal places than the currency's minor unit.
    #[error("amount has more decimal places than the currency allows ({minor_units})")]
    TooPrecise {
        /// The currency's number of decimal places.
        minor_units: u32,
    },
    /// Above [`MAX_AMOUNT_MAJOR_UNITS`].
    #[error("amount exceeds the engine's maximum")]
    TooLarge,
}

/// Orders two amounts. `Decimal`'s own comparison rescales on every call, which
/// dominated the hot path; amounts of one auction almost always share a scale (the
/// currency's), and then comparing the integer mantissas is exact and much cheaper.
#[inline]
pub(crate) fn compare(left: Decimal, right: Decimal) -> std::cmp::Ordering {
    if left.scale() == right.scale() {
        left.mantissa().cmp(&right.mantissa())
    } else {
        left.cmp(&right)
    }
}

/// The smaller of two amounts, via [`compare`].
#[inline]
pub(crate) fn min_amount(left: Decimal, right: Decimal) -> Decimal {
    if compare(left, right).is_le() {
        left
    } else {
        right
    }
}

/// The larger of two amounts, via [`compare`].
#[inline]
pub(crate) fn max_amount_of(left: Decimal, right: Decimal) -> Decimal {
    if compare(left, right).is_ge() {
        left
    } else {
        right
    }
}

/// The largest amount the engine accepts, as a `Decimal`.
pub fn max_amount() -> Decimal {
    Decimal::from(MAX_AMOUNT_MAJOR_UNITS)
}

/// Checks that `amount` is positive, not above the engine's maximum and representable
/// exactly in `currency`'s minor unit. Trailing zeros are fine (`10.50` and `10.5` are
/// the same amount).
pub fn validate_amount(amount: Decimal, currency: Currency) -> Result<(), AmountError> {
    validate_amount_in(amount, currency.minor_units())
}

/// [`validate_amount`] with the currency's minor units already looked up (the hot
/// path keeps them per auction).
pub(crate) fn validate_amount_in(amount: Decimal, minor_units: u32) -> Result<(), AmountError> {
    if amount.is_sign_negative() || amount.is_zero() {
        return Err(AmountError::NotPositive);
    }
    // The bound as an integer at the amount's own scale, to stay off `Decimal`'s
    // rescaling comparison on the hot path (scales above 16 are absurd but valid).
    let too_large = match 10_i128.checked_pow(amount.scale()) {
        Some(unit) if amount.scale() <= 16 => {
            amount.mantissa() > i128::from(MAX_AMOUNT_MAJOR_UNITS) * unit
        }
        Some(_) | None => compare(amount, max_amount()).is_gt(),
    };
    if too_large {
        return Err(AmountError::TooLarge);
    }
    // Checking the scale first avoids `normalize` (a division loop) on the hot path.
    if amount.scale() > minor_units && amount.normalize().scale() > minor_units {
        return Err(AmountError::TooPrecise { minor_units });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_parse_and_round_trip() {
        // Proves codes are validated and serialize as their three letters.
        assert_eq!(Currency::from_code("USD"), Ok(Currency::USD));
        assert!(Currency::from_code("usd").is_err());
        assert!(Currency::from_code("US").is_err());
        assert!(Currency::from_code("USDT").is_err());
        let json = serde_json::to_string(&Currency::EUR).unwrap();
        assert_eq!(json, "\"EUR\"");
        assert_eq!(
            serde_json::from_str::<Currency>(&json).unwrap(),
            Currency::EUR
        );
        assert!(serde_json::from_str::<Currency>("\"eur\"").is_err());
    }

    #[test]
    fn amounts_respect_the_minor_unit() {
        // Proves the decimal-places rule per currency, with trailing zeros allowed.
        assert_eq!(
            validate_amount(Decimal::new(1050, 2), Currency::USD),
            Ok(())
        );
        assert_eq!(
            validate_amount(Decimal::new(10500, 3), Currency::USD),
            Ok(())
        );
        assert_eq!(
            validate_amount(Decimal::new(10501, 3), Currency::USD),
            Err(AmountError::TooPrecise { minor_units: 2 })
        );
        assert_eq!(
            validate_amount(Decimal::new(105, 1), Currency::JPY),
            Err(AmountError::TooPrecise { minor_units: 0 })
        );
        assert_eq!(
            validate_amount(Decimal::new(1001, 3), Currency::from_code("KWD").unwrap()),
            Ok(())
        );
        assert_eq!(
            validate_amount(Decimal::ZERO, Currency::USD),
            Err(AmountError::NotPositive)
        );
        assert_eq!(
            validate_amount(Decimal::new(-1, 0), Currency::USD),
            Err(AmountError::NotPositive)
        );
        assert_eq!(validate_amount(max_amount(), Currency::USD), Ok(()));
        assert_eq!(
            validate_amount(max_amount() + Decimal::new(1, 2), Currency::USD),
            Err(AmountError::TooLarge)
        );
    }
}

//! The tiered bid increment table: how much the next bid must exceed the current
//! price by, depending on the price.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::limits::MAX_INCREMENT_TIERS;
use crate::money::{Currency, compare, validate_amount};
use crate::spec::SpecError;

/// One row of the table: from `from` (inclusive) up to the next tier's `from`
/// (exclusive), the increment is `increment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementTier {
    /// The lowest price this tier applies to, in major units.
    pub from: Decimal,
    /// The increment for prices in this tier, in major units.
    pub increment: Decimal,
}

/// A validated increment table: the first tier starts at zero, thresholds strictly
/// ascend, and every increment is a positive amount in the auction's currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<IncrementTier>", into = "Vec<IncrementTier>")]
pub struct IncrementTable {
    /// Sorted by `from`, never empty once validated (validation runs again in
    /// [`crate::Auction::new`], so a deserialized table is checked before use).
    tiers: Vec<IncrementTier>,
    /// The thresholds as integer mantissas when they all share one scale, derived
    /// from `tiers`: the lookup runs on every bid, and comparing integers is several
    /// times cheaper than comparing `Decimal`s.
    thresholds: Option<(u32, Vec<i128>)>,
}

impl From<Vec<IncrementTier>> for IncrementTable {
    fn from(tiers: Vec<IncrementTier>) -> IncrementTable {
        let scale = tiers.first().map_or(0, |tier| tier.from.scale());
        let thresholds = tiers
            .iter()
            .all(|tier| tier.from.scale() == scale)
            .then(|| {
                (
                    scale,
                    tiers.iter().map(|tier| tier.from.mantissa()).collect(),
                )
            });
        IncrementTable { tiers, thresholds }
    }
}

impl From<IncrementTable> for Vec<IncrementTier> {
    fn from(table: IncrementTable) -> Vec<IncrementTier> {
        table.tiers
    }
}

impl IncrementTable {
    /// eBay's published US bid increment table:
    ///
    /// | current price | increment |
    /// | --- | --- |
    /// | 0.01 – 0.99 | 0.05 |
    /// | 1.00 – 4.99 | 0.25 |
    /// | 5.00 – 24.99 | 0.50 |
    /// | 25.00 – 99.99 | 1.00 |
    /// | 100.00 – 249.99 | 2.50 |
    /// | 250.00 – 499.99 | 5.00 |
    /// | 500.00 – 999.99 | 10.00 |
    /// | 1000.00 – 2499.99 | 25.00 |
    /// | 2500.00 – 4999.99 | 50.00 |
    /// | 5000.00 and up | 100.00 |
    pub fn ebay_us() -> IncrementTable {
        let tier = |from_cents: i64, increment_cents: i64| IncrementTier {
            from: Decimal::new(from_cents, 2),
            increment: Decimal::new(increment_cents, 2),
        };
        IncrementTable::from(vec![
            tier(0, 5),
            tier(100, 25),
            tier(500, 50),
            tier(2_500, 100),
            tier(10_000, 250),
            tier(25_000, 500),
            tier(50_000, 1_000),
            tier(100_000, 2_500),
            tier(250_000, 5_000),
            tier(500_000, 10_000),
        ])
    }

    /// A single increment for every price.
    pub fn flat(increment: Decimal) -> IncrementTable {
        IncrementTable::from(vec![IncrementTier {
            from: Decimal::ZERO,
            increment,
        }])
    }

    /// A custom table; checked by [`IncrementTable::validate`] when the auction is
    /// created (the currency is only known then).
    pub fn from_tiers(tiers: Vec<IncrementTier>) -> IncrementTable {
        IncrementTable::from(tiers)
    }

    /// The tiers, lowest first.
    pub fn tiers(&self) -> &[IncrementTier] {
        &self.tiers
    }

    /// Checks the table for `currency`: between one and [`MAX_INCREMENT_TIERS`] tiers,
    /// the first starting at zero, thresholds strictly ascending and representable in
    /// the currency, increments positive and representable.
    pub fn validate(&self, currency: Currency) -> Result<(), SpecError> {
        let invalid = |reason: &'static str| Err(SpecError::InvalidIncrementTable { reason });
        match self.tiers.first() {
            None => return invalid("the table has no tiers"),
            Some(first) if !first.from.is_zero() => {
                return invalid("the first tier must start at zero");
            }
            Some(_) => {}
        }
        if self.tiers.len() > MAX_INCREMENT_TIERS {
            return invalid("the table has too many tiers");
        }
        for pair in self.tiers.windows(2) {
            if pair[1].from <= pair[0].from {
                return invalid("tier thresholds must strictly ascend");
            }
        }
        for tier in &self.tiers {
            if validate_amount(tier.increment, currency).is_err() {
                return invalid("increments must be positive amounts in the auction's currency");
            }
            if !tier.from.is_zero() && validate_amount(tier.from, currency).is_err() {
                return invalid("thresholds must be amounts in the auction's currency");
            }
        }
        Ok(())
    }

    /// The increment that applies at `price`: the tier with the largest threshold at
    /// or below the price.
    pub fn increment_at(&self, price: Decimal) -> Decimal {
        // The table is validated non-empty with a first tier at zero, and prices are
        // positive, so at least the first tier matches; the zero fallback for an
        // empty table is unreachable. Binary search: the comparisons are the cost.
        let matching = match &self.thresholds {
            Some((scale, thresholds)) if *scale == price.scale() => {
                let price = price.mantissa();
                thresholds.partition_point(|&threshold| threshold <= price)
            }
            Some(_) | None => self
                .tiers
                .partition_point(|tier| compare(tier.from, price).is_le()),
        };
        self.tiers
            .get(matching.saturating_sub(1))
            .map_or(Decimal::ZERO, |tier| tier.increment)
    }
}

impl Default for IncrementTable {
    fn default() -> IncrementTable {
        IncrementTable::ebay_us()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_malformed_tables() {
        // Proves each malformed-table rule is enforced and eBay's table passes.
        assert_eq!(IncrementTable::ebay_us().validate(Currency::USD), Ok(()));
        assert!(
            IncrementTable::from_tiers(vec![])
                .validate(Currency::USD)
                .is_err()
        );
        let tier = |from: i64, increment: i64| IncrementTier {
            from: Decimal::new(from, 2),
            increment: Decimal::new(increment, 2),
        };
        assert!(
            IncrementTable::from_tiers(vec![tier(100, 5)])
                .validate(Currency::USD)
                .is_err()
        );
        assert!(
            IncrementTable::from_tiers(vec![tier(0, 5), tier(0, 10)])
                .validate(Currency::USD)
                .is_err()
        );
        assert!(
            IncrementTable::from_tiers(vec![tier(0, 5), tier(500, 10), tier(100, 20)])
                .validate(Currency::USD)
                .is_err()
        );
        assert!(
            IncrementTable::from_tiers(vec![tier(0, 0)])
                .validate(Currency::USD)
                .is_err()
        );
        assert!(
            IncrementTable::from_tiers(vec![tier(0, -5)])
                .validate(Currency::USD)
                .is_err()
        );
        // Five cents cannot be expressed in yen.
        assert!(IncrementTable::ebay_us().validate(Currency::JPY).is_err());
        assert_eq!(
            IncrementTable::flat(Decimal::new(100, 0)).validate(Currency::JPY),
            Ok(())
        );
        let too_many = (0..=MAX_INCREMENT_TIERS as i64)
            .map(|index| tier(index * 100, 5))
            .collect();
        assert!(
            IncrementTable::from_tiers(too_many)
                .validate(Currency::USD)
                .is_err()
        );
    }
}

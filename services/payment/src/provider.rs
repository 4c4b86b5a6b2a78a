//! Payment providers behind one trait, and the deterministic sandbox.
//!
//! A charge is identified by an idempotency key (the attempt id): calling
//! [`PaymentProvider::charge`] again with the same key never charges twice,
//! it answers the first outcome, so the service may retry a call that timed
//! out. When no call answered, [`PaymentProvider::status`] later tells what
//! happened (the reconciliation of PENDING attempts).

use std::collections::HashMap;
use std::sync::Mutex;

use auction_platform::bus::BoxFuture;

use crate::money::Money;

/// What a charge call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged.
    Succeeded {
        /// The provider's reference.
        reference: String,
    },
    /// Declined; nothing charged. `reason` is a contract reason
    /// (`PAYMENT_DECLINED`, `INSUFFICIENT_FUNDS`).
    Declined {
        /// Why.
        reason: &'static str,
    },
}

/// What a status query answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    /// Known outcome.
    Settled(ChargeOutcome),
    /// Still being processed: ask again later.
    Pending,
    /// The provider never received the charge: nothing was charged.
    Unknown,
}

/// A provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the connection before receiving anything:
    /// nothing was charged.
    #[error("the payment provider is unavailable")]
    Unavailable,
}

/// A payment-method token the provider does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payment method token")]
pub struct InvalidMethod;

/// A payment provider.
pub trait PaymentProvider: Send + Sync + 'static {
    /// Checks a payment-method token before any attempt is made; answers a
    /// display description of the method.
    fn describe_method(&self, token: &str) -> Result<String, InvalidMethod>;

    /// Charges `amount` with `token` under idempotency key `key`. Repeating
    /// a key answers the first outcome and never charges again. May never
    /// answer: callers bound it with a timeout.
    fn charge<'a>(
        &'a self,
        key: &'a str,
        amount: Money,
        token: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>>;

    /// The outcome of the charge with key `key`.
    fn status<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<ChargeStatus, ProviderError>>;
}

/// The sandbox's test cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestCard {
    Success,
    Decline,
    InsufficientFunds,
    Timeout,
}

impl TestCard {
    fn parse(token: &str) -> Option<Self> {
        match token {
            "tok_sandbox_success" => Some(Self::Success),
            "tok_sandbox_decline" => Some(Self::Decline),
            "tok_sandbox_insufficient_funds" => Some(Self::InsufficientFunds),
            "tok_sandbox_timeout" => Some(Self::Timeout),
            _ => None,
        }
    }
}

/// The deterministic sandbox (see payment.proto): `tok_sandbox_success`
/// charges, `tok_sandbox_decline` and `tok_sandbox_insufficient_funds`
/// decline, `tok_sandbox_timeout` never answers the charge call and is
/// reported SUCCEEDED by `status` `settle_after_ms` after the charge.
/// Charges are remembered in memory per process, like a provider's own
/// records: a key it never saw is `Unknown` (nothing charged).
#[derive(Debug)]
pub struct Sandbox {
    settle_after_ms: i64,
    charges: Mutex<HashMap<String, (TestCard, i64)>>,
}

impl Sandbox {
    /// A sandbox whose timed-out charges settle after `settle_after_ms`.
    pub fn new(settle_after_ms: i64) -> Self {
        Self {
            settle_after_ms,
            charges: Mutex::new(HashMap::new()),
        }
    }

    fn remember(&self, key: &str, card: TestCard, now_ms: i64) -> (TestCard, i64) {
        let mut charges = self
            .charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *charges.entry(key.to_owned()).or_insert((card, now_ms))
    }

    fn outcome(card: TestCard, key: &str) -> ChargeOutcome {
        match card {
            TestCard::Success | TestCard::Timeout => ChargeOutcome::Succeeded {
                reference: format!("sandbox_{key}"),
            },
            TestCard::Decline => ChargeOutcome::Declined {
                reason: "PAYMENT_DECLINED",
            },
            TestCard::InsufficientFunds => ChargeOutcome::Declined {
                reason: "INSUFFICIENT_FUNDS",
            },
        }
    }
}

impl PaymentProvider for Sandbox {
    fn describe_method(&self, token: &str) -> Result<String, InvalidMethod> {
        match TestCard::parse(token) {
            Some(TestCard::Success) => Ok("sandbox: success".to_owned()),
            Some(TestCard::Decline) => Ok("sandbox: decline".to_owned()),
            Some(TestCard::InsufficientFunds) => Ok("sandbox: insufficient funds".to_owned()),
            Some(TestCard::Timeout) => Ok("sandbox: timeout".to_owned()),
            None => Err(InvalidMethod),
        }
    }

    fn charge<'a>(
        &'a self,
        key: &'a str,
        _amount: Money,
        token: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>> {
        Box::pin(async move {
            let Some(card) = TestCard::parse(token) else {
                return Ok(ChargeOutcome::Declined {
                    reason: "PAYMENT_DECLINED",
                });
            };
            // The first call with a key decides; repeats answer the same.
            let (card, _) = self.remember(key, card, now_ms);
            if card == TestCard::Timeout {
                // The provider took the charge but never answers.
                std::future::pending::<()>().await;
            }
            Ok(Self::outcome(card, key))
        })
    }

    fn status<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<ChargeStatus, ProviderError>> {
        Box::pin(async move {
            let charge = self
                .charges
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(key)
                .copied();
            Ok(match charge {
                None => ChargeStatus::Unknown,
                Some((TestCard::Timeout, charged_at_ms))
                    if now_ms < charged_at_ms.saturating_add(self.settle_after_ms) =>
                {
                    ChargeStatus::Pending
                }
                Some((card, _)) => ChargeStatus::Settled(Self::outcome(card, key)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::money::Currency;

    // Proves the same key never charges twice and a timed-out charge
    // settles after the configured delay.
    #[tokio::test]
    async fn sandbox_is_idempotent_and_settles_timeouts() {
        let sandbox = Sandbox::new(1_000);
        let amount = Money::from_minor(Currency::USD, 100);
        let first = sandbox
            .charge("k1", amount, "tok_sandbox_success", 0)
            .await
            .unwrap();
        let again = sandbox
            .charge("k1", amount, "tok_sandbox_decline", 5)
            .await
            .unwrap();
        assert_eq!(first, again);
        let timed_out = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            sandbox.charge("k2", amount, "tok_sandbox_timeout", 0),
        )
        .await;
        assert!(timed_out.is_err());
        assert_eq!(
            sandbox.status("k2", 999).await.unwrap(),
            ChargeStatus::Pending
        );
        assert!(matches!(
            sandbox.status("k2", 1_000).await.unwrap(),
            ChargeStatus::Settled(ChargeOutcome::Succeeded { .. })
        ));
        assert_eq!(
            sandbox.status("never", 0).await.unwrap(),
            ChargeStatus::Unknown
        );
        assert!(sandbox.describe_method("tok_sandbox_other").is_err());
    }
}

//! The payment service's errors, each with its gRPC code and stable reason
//! (from payment.proto and common.proto), turned into a `tonic::Status` in
//! one place ([`auction_platform::to_status`]).

use auction_platform::ServiceError;
use tonic::{Code, Status};

use crate::money::MoneyError;
use crate::rules::RuleError;
use crate::store::StoreError;

/// Why a payment-service call failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// A field is malformed.
    #[error("{field}: {message}")]
    Validation {
        /// The request field.
        field: &'static str,
        /// What is wrong.
        message: &'static str,
    },
    /// The request id is missing or malformed.
    #[error("request_id must be 1-64 characters of [A-Za-z0-9._:-]")]
    RequestIdInvalid,
    /// Same request id, different content.
    #[error("request_id was used for a different request")]
    IdempotencyKeyReused,
    /// A page token we did not issue.
    #[error("page_token is not valid")]
    PageTokenInvalid,
    /// An amount is malformed.
    #[error("{0}")]
    AmountInvalid(MoneyError),
    /// No such order, or not the caller's.
    #[error("no such order")]
    OrderNotFound,
    /// No such dispute, or not the caller's.
    #[error("no such dispute")]
    DisputeNotFound,
    /// No such offer, or not the caller's.
    #[error("no such second-chance offer")]
    OfferNotFound,
    /// A party of the order, but not the one who may do this.
    #[error("only the {0} of the order may do this")]
    NotOwner(&'static str),
    /// Admins only.
    #[error("this needs the ADMIN role (with a second factor)")]
    RoleRequired,
    /// A rule refused the transition.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The provider declined (`PAYMENT_DECLINED`, `INSUFFICIENT_FUNDS`).
    #[error("the payment was declined ({0})")]
    Declined(&'static str),
    /// Unknown payment-method token.
    #[error("payment_method_token is not a valid payment method")]
    PaymentMethodInvalid,
    /// The provider could not be reached; nothing was charged.
    #[error("the payment provider is unavailable; nothing was charged")]
    ProviderUnavailable,
    /// The dispute is resolved.
    #[error("the dispute is resolved")]
    DisputeStateInvalid,
    /// The offer was already answered or expired.
    #[error("the offer is not pending")]
    OfferNotPending,
    /// No further bidder, or an offer is pending.
    #[error("no second-chance offer is possible: {0}")]
    SecondChanceUnavailable(&'static str),
    /// Lost a race with a concurrent change; retry.
    #[error("the order changed concurrently; retry")]
    Conflict,
    /// Storage failed.
    #[error("payment store")]
    Store(#[source] StoreError),
}

impl From<StoreError> for PaymentError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => Self::Conflict,
            StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::Outbox(_) => {
                Self::Store(error)
            }
        }
    }
}

impl From<MoneyError> for PaymentError {
    fn from(error: MoneyError) -> Self {
        Self::AmountInvalid(error)
    }
}

impl From<PaymentError> for Status {
    fn from(error: PaymentError) -> Self {
        auction_platform::to_status(&error)
    }
}

impl PaymentError {
    /// Whether the outcome is deterministic and kept with the request id
    /// (common.proto: transient failures are not recorded).
    pub fn is_recorded(&self) -> bool {
        !matches!(
            self.code(),
            Code::Unavailable
                | Code::ResourceExhausted
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::Internal
                | Code::AlreadyExists
        )
    }
}

impl ServiceError for PaymentError {
    fn code(&self) -> Code {
        match self {
            Self::Validation { .. }
            | Self::RequestIdInvalid
            | Self::PageTokenInvalid
            | Self::AmountInvalid(_)
            | Self::PaymentMethodInvalid => Code::InvalidArgument,
            Self::IdempotencyKeyReused => Code::AlreadyExists,
            Self::OrderNotFound | Self::DisputeNotFound | Self::OfferNotFound => Code::NotFound,
            Self::NotOwner(_) | Self::RoleRequired => Code::PermissionDenied,
            Self::Rule(rule) => match rule {
                RuleError::CurrencyMismatch { .. } | RuleError::RefundExceedsPaid { .. } => {
                    Code::InvalidArgument
                }
                RuleError::OrderStateInvalid(_)
                | RuleError::PaymentInProgress
                | RuleError::PaymentDeadlinePassed
                | RuleError::ExpectedAmountMismatch { .. }
                | RuleError::DisputeExists
                | RuleError::DisputeWindowClosed
                | RuleError::NotDue => Code::FailedPrecondition,
                RuleError::InvalidAward => Code::InvalidArgument,
                RuleError::Overflow => Code::Internal,
            },
            Self::Declined(_)
            | Self::DisputeStateInvalid
            | Self::OfferNotPending
            | Self::SecondChanceUnavailable(_) => Code::FailedPrecondition,
            Self::ProviderUnavailable => Code::Unavailable,
            Self::Conflict => Code::Aborted,
            Self::Store(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Validation { .. } => "VALIDATION_FAILED",
            Self::RequestIdInvalid => "REQUEST_ID_INVALID",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::PageTokenInvalid => "PAGE_TOKEN_INVALID",
            Self::AmountInvalid(_) => "AMOUNT_INVALID",
            Self::OrderNotFound => "ORDER_NOT_FOUND",
            Self::DisputeNotFound => "DISPUTE_NOT_FOUND",
            Self::OfferNotFound => "OFFER_NOT_FOUND",
            Self::NotOwner(_) => "NOT_OWNER",
            Self::RoleRequired => "ROLE_REQUIRED",
            Self::Rule(rule) => match rule {
                RuleError::OrderStateInvalid(_) | RuleError::NotDue => "ORDER_STATE_INVALID",
                RuleError::PaymentInProgress => "PAYMENT_IN_PROGRESS",
                RuleError::PaymentDeadlinePassed => "PAYMENT_DEADLINE_PASSED",
                RuleError::ExpectedAmountMismatch { .. } => "EXPECTED_AMOUNT_MISMATCH",
                RuleError::CurrencyMismatch { .. } => "CURRENCY_MISMATCH",
                RuleError::RefundExceedsPaid { .. } => "REFUND_EXCEEDS_PAID",
                RuleError::DisputeExists => "DISPUTE_EXISTS",
                RuleError::DisputeWindowClosed => "DISPUTE_WINDOW_CLOSED",
                RuleError::InvalidAward => "VALIDATION_FAILED",
                RuleError::Overflow => "INTERNAL_ERROR",
            },
            Self::Declined(reason) => reason,
            Self::PaymentMethodInvalid => "PAYMENT_METHOD_INVALID",
            Self::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            Self::DisputeStateInvalid => "DISPUTE_STATE_INVALID",
            Self::OfferNotPending => "OFFER_NOT_PENDING",
            Self::SecondChanceUnavailable(_) => "SECOND_CHANCE_UNAVAILABLE",
            Self::Conflict => "VERSION_CONFLICT",
            Self::Store(_) => "INTERNAL_ERROR",
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        if matches!(self, Self::ProviderUnavailable) {
            Some(std::time::Duration::from_secs(5))
        } else if matches!(self, Self::Conflict) {
            Some(std::time::Duration::from_millis(50))
        } else {
            None
        }
    }
}

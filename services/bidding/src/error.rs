//! The bidding service's errors, mapped once to gRPC statuses with the
//! contract's stable reasons. Engine rejections become a [`Refusal`]: a
//! serialisable record of the exact status, so a retried request with the
//! same `request_id` gets the very same answer back from the log.

use std::collections::BTreeMap;
use std::time::Duration;

use auction_engine::{Rejection, RejectionCategory};
use auction_platform::ServiceError;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::log::LogError;

/// A deterministic business refusal, as remembered for idempotent replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The gRPC code, as its number.
    pub code: i32,
    /// The contract's reason (an `ErrorReason` name without its prefix).
    pub reason: String,
    /// For people.
    pub message: String,
    /// Facts a program can act on (`minimum_bid` with `currency` for
    /// `BID_BELOW_MINIMUM`, ...).
    pub metadata: BTreeMap<String, String>,
}

impl Refusal {
    /// A refusal with no extras.
    pub fn new(code: Code, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            reason: reason.to_owned(),
            message: message.into(),
            metadata: BTreeMap::new(),
        }
    }
}

impl From<&Rejection> for Refusal {
    fn from(rejection: &Rejection) -> Self {
        let code = match rejection.category() {
            RejectionCategory::InvalidArgument => Code::InvalidArgument,
            RejectionCategory::FailedPrecondition => Code::FailedPrecondition,
            RejectionCategory::PermissionDenied => Code::PermissionDenied,
            RejectionCategory::NotFound => Code::NotFound,
            RejectionCategory::ResourceExhausted => Code::ResourceExhausted,
        };
        // The contract's reason where it names the same thing differently;
        // the engine's own reason otherwise (kept in metadata too).
        let reason = match rejection {
            Rejection::WrongCurrency { .. } => "CURRENCY_MISMATCH",
            Rejection::InvalidAmount => "AMOUNT_INVALID",
            Rejection::SellerCannotBid => "SELF_BIDDING",
            Rejection::QuantityUnavailable { .. } => "UNITS_UNAVAILABLE",
            Rejection::NoSuchBid => "BID_NOT_FOUND",
            Rejection::UnsupportedForFormat => "WRONG_FORMAT",
            Rejection::NotAuctioneer | Rejection::NotAdmin | Rejection::NotBidder => {
                "ROLE_REQUIRED"
            }
            Rejection::NotSeller => "NOT_OWNER",
            Rejection::ReserveMetCannotCancel => "RESERVE_ALREADY_MET",
            Rejection::PriceMismatch { .. } => "EXPECTED_AMOUNT_MISMATCH",
            Rejection::NoSuchLot
            | Rejection::NoLotOpen
            | Rejection::LotNotOpen { .. }
            | Rejection::LotInProgress { .. }
            | Rejection::LotNotClosed
            | Rejection::LotFinal
            | Rejection::NoBids
            | Rejection::ReserveNotMet => "LOT_STATE_INVALID",
            Rejection::InvalidQuantity | Rejection::InvalidTtl | Rejection::TimeOutOfRange => {
                "VALIDATION_FAILED"
            }
            Rejection::BidBelowMinimum { .. }
            | Rejection::AuctionClosed
            | Rejection::AuctionCancelled
            | Rejection::AuctionNotOpen
            | Rejection::PriceAboveLimit { .. }
            | Rejection::BuyItNowUnavailable
            | Rejection::LotNotPending
            | Rejection::NothingToUndo
            | Rejection::TooManyBids
            | Rejection::TimerDue { .. }
            | Rejection::TimeWentBackwards { .. } => rejection.reason(),
        };
        let mut refusal = Refusal::new(code, reason, rejection.to_string());
        refusal
            .metadata
            .insert("engine_reason".to_owned(), rejection.reason().to_owned());
        match rejection {
            Rejection::BidBelowMinimum { minimum } => {
                refusal
                    .metadata
                    .insert("minimum_bid".to_owned(), minimum.amount.to_string());
                refusal
                    .metadata
                    .insert("currency".to_owned(), minimum.currency.code().to_owned());
            }
            Rejection::WrongCurrency { expected } => {
                refusal
                    .metadata
                    .insert("currency".to_owned(), expected.code().to_owned());
            }
            _ => {}
        }
        refusal
    }
}

impl ServiceError for Refusal {
    fn code(&self) -> Code {
        Code::from_i32(self.code)
    }

    fn reason(&self) -> &str {
        &self.reason
    }

    fn metadata(&self) -> std::collections::HashMap<String, String> {
        self.metadata.clone().into_iter().collect()
    }

    fn describe(&self, detail: &mut auction_proto::v1::ErrorDetail) {
        if self.reason == "VERSION_CONFLICT"
            && let Some(current) = self
                .metadata
                .get("current_sequence")
                .and_then(|current| current.parse().ok())
        {
            detail.current_sequence = current;
        }
        if let (Some(amount), Some(currency)) = (
            self.metadata.get("minimum_bid"),
            self.metadata.get("currency"),
        ) && self.reason == "BID_BELOW_MINIMUM"
        {
            detail.minimum_bid = Some(auction_proto::v1::Money {
                currency: currency.clone(),
                amount: amount.clone(),
            });
        }
    }
}

/// Why a bidding call failed.
#[derive(Debug, thiserror::Error)]
pub enum BiddingError {
    /// A deterministic refusal (remembered for idempotent replays).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The same request id was used with different content.
    #[error("request_id {0} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// The shard's queue is full: back off and retry with the same request id.
    #[error("shard {shard} is busy; retry after {retry_after_ms} ms")]
    ShardBusy {
        /// The shard.
        shard: u32,
        /// How long to wait.
        retry_after_ms: u64,
    },
    /// This node no longer leads the shard (a newer epoch appended).
    #[error("not the leader of shard {shard}")]
    NotLeader {
        /// The shard.
        shard: u32,
    },
    /// The log could not be written or read; nothing was acknowledged.
    #[error("the bidding log is unavailable")]
    Unavailable(#[source] LogError),
    /// The process is shutting down.
    #[error("the bidding service is shutting down")]
    ShuttingDown,
    /// A stored value is unreadable: a bug or corruption.
    #[error("internal: {0}")]
    Internal(String),
}

impl ServiceError for BiddingError {
    fn code(&self) -> Code {
        match self {
            Self::Refused(refusal) => refusal.code(),
            Self::IdempotencyKeyReused(_) => Code::AlreadyExists,
            Self::ShardBusy { .. } => Code::ResourceExhausted,
            Self::NotLeader { .. } | Self::Unavailable(_) | Self::ShuttingDown => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Refused(refusal) => refusal.reason(),
            Self::IdempotencyKeyReused(_) => "IDEMPOTENCY_KEY_REUSED",
            Self::ShardBusy { .. } => "SHARD_QUEUE_FULL",
            Self::NotLeader { .. } => "NOT_LEADER",
            Self::Unavailable(_) | Self::ShuttingDown => "SERVICE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL_ERROR",
        }
    }

    fn metadata(&self) -> std::collections::HashMap<String, String> {
        match self {
            Self::Refused(refusal) => refusal.metadata(),
            Self::ShardBusy { shard, .. } | Self::NotLeader { shard } => {
                std::collections::HashMap::from([("shard".to_owned(), shard.to_string())])
            }
            Self::IdempotencyKeyReused(_)
            | Self::Unavailable(_)
            | Self::ShuttingDown
            | Self::Internal(_) => std::collections::HashMap::new(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::ShardBusy { retry_after_ms, .. } => Some(Duration::from_millis(*retry_after_ms)),
            Self::NotLeader { .. } | Self::Unavailable(_) | Self::ShuttingDown => {
                Some(Duration::from_millis(200))
            }
            Self::Refused(_) | Self::IdempotencyKeyReused(_) | Self::Internal(_) => None,
        }
    }

    fn describe(&self, detail: &mut auction_proto::v1::ErrorDetail) {
        match self {
            Self::Refused(refusal) => refusal.describe(detail),
            Self::NotLeader { shard } => {
                detail.leader_hint = Some(auction_proto::v1::LeaderHint {
                    shard: *shard,
                    ..auction_proto::v1::LeaderHint::default()
                });
            }
            Self::IdempotencyKeyReused(_)
            | Self::ShardBusy { .. }
            | Self::Unavailable(_)
            | Self::ShuttingDown
            | Self::Internal(_) => {}
        }
    }
}

impl From<BiddingError> for tonic::Status {
    fn from(error: BiddingError) -> Self {
        auction_platform::to_status(&error)
    }
}

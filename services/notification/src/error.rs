//! The service's errors and their one mapping to gRPC statuses.

use std::time::Duration;

use auction_platform::ServiceError;
use tonic::Code;

/// What can go wrong in an RPC of the notification service.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// A request field is not acceptable.
    #[error("invalid request: {0}")]
    Validation(String),
    /// `request_id` missing or malformed.
    #[error("request_id must be 1-64 characters of [A-Za-z0-9._:-]")]
    RequestIdInvalid,
    /// The same `request_id` came with other content.
    #[error("request_id was already used with different content")]
    IdempotencyKeyReused,
    /// A page token that this server did not issue for these filters.
    #[error("page token is not valid for this request")]
    PageTokenInvalid,
    /// A notification id that is not in the caller's inbox.
    #[error("notification {0} not found")]
    NotificationNotFound(String),
    /// A webhook that does not exist or is not the caller's.
    #[error("webhook {0} not found")]
    WebhookNotFound(String),
    /// A webhook URL that may not be used.
    #[error("webhook URL not allowed: {0}")]
    WebhookUrlInvalid(String),
    /// The caller has 10 webhooks already.
    #[error("at most 10 webhooks per user")]
    WebhookLimitReached,
    /// The caller has 50 streams open already.
    #[error("at most 50 concurrent streams per user")]
    StreamLimitReached,
    /// The database failed.
    #[error("notification database")]
    Database(#[from] sqlx::Error),
    /// Stored data could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

impl ServiceError for NotificationError {
    fn code(&self) -> Code {
        match self {
            Self::Validation(_)
            | Self::RequestIdInvalid
            | Self::PageTokenInvalid
            | Self::WebhookUrlInvalid(_) => Code::InvalidArgument,
            Self::IdempotencyKeyReused => Code::AlreadyExists,
            Self::NotificationNotFound(_) | Self::WebhookNotFound(_) => Code::NotFound,
            Self::WebhookLimitReached | Self::StreamLimitReached => Code::ResourceExhausted,
            Self::Database(error) => match error {
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                    Code::Unavailable
                }
                _ => Code::Internal,
            },
            Self::Corrupt(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Validation(_) => "VALIDATION_FAILED",
            Self::RequestIdInvalid => "REQUEST_ID_INVALID",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::PageTokenInvalid => "PAGE_TOKEN_INVALID",
            Self::NotificationNotFound(_) => "NOTIFICATION_NOT_FOUND",
            Self::WebhookNotFound(_) => "WEBHOOK_NOT_FOUND",
            Self::WebhookUrlInvalid(_) => "WEBHOOK_URL_INVALID",
            Self::WebhookLimitReached => "WEBHOOK_LIMIT_REACHED",
            Self::StreamLimitReached => "STREAM_LIMIT_REACHED",
            Self::Database(_) => match self.code() {
                Code::Unavailable => "SERVICE_UNAVAILABLE",
                _ => "INTERNAL_ERROR",
            },
            Self::Corrupt(_) => "INTERNAL_ERROR",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self.code() {
            Code::Unavailable => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl From<NotificationError> for tonic::Status {
    fn from(error: NotificationError) -> Self {
        auction_platform::to_status(&error)
    }
}

//! The user service's errors, each with its gRPC code and stable reason,
//! turned into a `tonic::Status` in one place ([`auction_platform::to_status`]).

use std::collections::HashMap;
use std::time::Duration;

use auction_platform::ServiceError;
use auction_proto::v1::{ErrorDetail, FieldViolation};
use tonic::{Code, Status};

use crate::replay::Refused;
use crate::store::StoreError;

/// Why a user-service call failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
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
    /// The password is too short or too long.
    #[error("the password must have 10 to 256 characters")]
    WeakPassword,
    /// The e-mail is in use.
    #[error("an account with this e-mail exists")]
    EmailTaken,
    /// The handle is in use.
    #[error("this handle is taken")]
    HandleTaken,
    /// Wrong e-mail or password (never says which).
    #[error("wrong e-mail or password")]
    InvalidCredentials,
    /// The account is suspended.
    #[error("the account is suspended")]
    AccountSuspended {
        /// RFC 3339 end of a temporary suspension.
        until: Option<String>,
    },
    /// Too many failed attempts.
    #[error("too many failed attempts; try again later")]
    TooManyAttempts {
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// Unknown or expired refresh token, or its session ended.
    #[error("the refresh token is not valid")]
    RefreshTokenInvalid,
    /// A spent refresh token was presented again: the session is revoked.
    #[error("the refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    /// Unknown, expired, used or burned challenge.
    #[error("the second-factor challenge is not valid")]
    ChallengeInvalid,
    /// Wrong, expired or replayed TOTP or recovery code.
    #[error("the code is not valid")]
    TotpInvalid,
    /// TOTP is already on.
    #[error("TOTP is already enabled")]
    TotpAlreadyEnabled,
    /// TOTP is off, or no pending enrollment.
    #[error("TOTP is not enabled (or the enrollment expired)")]
    TotpNotEnabled,
    /// No such user.
    #[error("no such user")]
    UserNotFound,
    /// No such API key (or not the caller's).
    #[error("no such API key")]
    ApiKeyNotFound,
    /// Unknown, revoked or expired API key.
    #[error("the API key is not valid")]
    ApiKeyInvalid,
    /// Too many active keys.
    #[error("at most 20 active API keys per user")]
    ApiKeyLimitReached,
    /// Suspending a suspended user, or lifting a suspension that is not there.
    #[error("the account is {0}")]
    SuspensionStateInvalid(&'static str),
    /// An admin changing their own admin role or suspending themselves.
    #[error("admins cannot remove their own ADMIN role or suspend themselves")]
    SelfAdminChange,
    /// The order is unknown, or the caller is neither its buyer nor its
    /// seller (others' orders are not revealed).
    #[error("no such order")]
    OrderNotFound,
    /// The order is not paid, or its feedback window has closed.
    #[error("feedback is not allowed: {0}")]
    FeedbackNotAllowed(&'static str),
    /// The caller's side already left feedback on the order.
    #[error("feedback on this order was already left by this side")]
    FeedbackExists,
    /// The request id was used before with other content.
    #[error("this request_id was already used with other content")]
    IdempotencyKeyReused,
    /// A page token that is not one of ours, for other filters, or expired.
    #[error("the page token is not valid for this list")]
    PageTokenInvalid,
    /// RequestEmailVerification for an address already verified.
    #[error("the e-mail address is already verified")]
    EmailAlreadyVerified,
    /// Too many verification e-mails for the account lately.
    #[error("a verification e-mail was sent recently; try again later")]
    VerificationRateLimited {
        /// When the next one is allowed.
        retry_after: Duration,
    },
    /// No verification token with this value.
    #[error("no such verification token")]
    VerificationTokenNotFound,
    /// The verification token's time has passed.
    #[error("the verification token has expired; request a new one")]
    VerificationExpired,
    /// The verification token was used (or retired when another was).
    #[error("the verification token was already used")]
    VerificationTokenUsed,
    /// The token was mailed to an address the account no longer has.
    #[error("the verification token is for another e-mail address than the account's")]
    VerificationEmailChanged,
    /// Storage failed.
    #[error("user store")]
    Store(#[source] StoreError),
    /// A token could not be signed.
    #[error("token signing")]
    Signing(#[source] auction_platform::auth::AuthError),
}

impl From<StoreError> for UserError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::HandleTaken => Self::HandleTaken,
            StoreError::Database(_) | StoreError::Hash | StoreError::Invalid(_) => {
                Self::Store(error)
            }
        }
    }
}

impl UserError {
    /// What a claimed request does with this refusal (see
    /// [`crate::replay::Refused`]). Exhaustive on purpose: a new error must
    /// say whether a retry with the same request id may execute again.
    pub fn refused(&self) -> Refused {
        match self {
            // The same request would be refused again: remember the answer.
            Self::Validation { .. }
            | Self::WeakPassword
            | Self::EmailTaken
            | Self::HandleTaken
            | Self::TotpAlreadyEnabled
            | Self::TotpNotEnabled
            | Self::UserNotFound
            | Self::ApiKeyNotFound
            | Self::SuspensionStateInvalid(_)
            | Self::SelfAdminChange
            | Self::OrderNotFound
            | Self::FeedbackNotAllowed(_)
            | Self::FeedbackExists
            | Self::PageTokenInvalid
            | Self::EmailAlreadyVerified
            | Self::VerificationTokenNotFound
            | Self::VerificationExpired
            | Self::VerificationTokenUsed
            | Self::VerificationEmailChanged => Refused::Recorded,
            // Credentials are checked on every try; what a refusal wrote (a
            // counted failure, a family revoked for reuse) stays.
            Self::InvalidCredentials
            | Self::RefreshTokenInvalid
            | Self::RefreshTokenReused
            | Self::ChallengeInvalid
            | Self::TotpInvalid
            | Self::ApiKeyInvalid
            | Self::AccountSuspended { .. } => Refused::KeepWrites,
            // RESOURCE_EXHAUSTED and INTERNAL are transient (common.proto);
            // the last two never reach a claimed request.
            Self::TooManyAttempts { .. }
            | Self::ApiKeyLimitReached
            | Self::VerificationRateLimited { .. }
            | Self::Store(_)
            | Self::Signing(_)
            | Self::RequestIdInvalid
            | Self::IdempotencyKeyReused => Refused::Transient,
        }
    }
}

impl From<UserError> for Status {
    fn from(error: UserError) -> Self {
        auction_platform::to_status(&error)
    }
}

impl ServiceError for UserError {
    fn code(&self) -> Code {
        match self {
            Self::Validation { .. }
            | Self::RequestIdInvalid
            | Self::WeakPassword
            | Self::PageTokenInvalid => Code::InvalidArgument,
            Self::EmailTaken
            | Self::HandleTaken
            | Self::FeedbackExists
            | Self::IdempotencyKeyReused => Code::AlreadyExists,
            Self::InvalidCredentials
            | Self::RefreshTokenInvalid
            | Self::RefreshTokenReused
            | Self::ChallengeInvalid
            | Self::TotpInvalid
            | Self::ApiKeyInvalid => Code::Unauthenticated,
            Self::AccountSuspended { .. } => Code::PermissionDenied,
            Self::TooManyAttempts { .. }
            | Self::ApiKeyLimitReached
            | Self::VerificationRateLimited { .. } => Code::ResourceExhausted,
            Self::TotpAlreadyEnabled
            | Self::TotpNotEnabled
            | Self::SuspensionStateInvalid(_)
            | Self::SelfAdminChange
            | Self::FeedbackNotAllowed(_)
            | Self::EmailAlreadyVerified
            | Self::VerificationExpired
            | Self::VerificationTokenUsed
            | Self::VerificationEmailChanged => Code::FailedPrecondition,
            Self::UserNotFound
            | Self::ApiKeyNotFound
            | Self::OrderNotFound
            | Self::VerificationTokenNotFound => Code::NotFound,
            Self::Store(_) | Self::Signing(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "VALIDATION_FAILED",
            Self::RequestIdInvalid => "REQUEST_ID_INVALID",
            Self::WeakPassword => "WEAK_PASSWORD",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::HandleTaken => "HANDLE_TAKEN",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::AccountSuspended { .. } => "ACCOUNT_SUSPENDED",
            Self::TooManyAttempts { .. } => "TOO_MANY_ATTEMPTS",
            Self::RefreshTokenInvalid => "REFRESH_TOKEN_INVALID",
            Self::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            Self::ChallengeInvalid => "CHALLENGE_INVALID",
            Self::TotpInvalid => "TOTP_INVALID",
            Self::TotpAlreadyEnabled => "TOTP_ALREADY_ENABLED",
            Self::TotpNotEnabled => "TOTP_NOT_ENABLED",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::ApiKeyNotFound => "API_KEY_NOT_FOUND",
            Self::ApiKeyInvalid => "API_KEY_INVALID",
            Self::ApiKeyLimitReached => "API_KEY_LIMIT_REACHED",
            Self::SuspensionStateInvalid(_) => "SUSPENSION_STATE_INVALID",
            Self::SelfAdminChange => "SELF_ADMIN_CHANGE",
            Self::OrderNotFound => "ORDER_NOT_FOUND",
            Self::FeedbackNotAllowed(_) => "FEEDBACK_NOT_ALLOWED",
            Self::FeedbackExists => "FEEDBACK_EXISTS",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::PageTokenInvalid => "PAGE_TOKEN_INVALID",
            Self::EmailAlreadyVerified => "EMAIL_ALREADY_VERIFIED",
            Self::VerificationRateLimited { .. } => "VERIFICATION_RATE_LIMITED",
            Self::VerificationTokenNotFound => "VERIFICATION_TOKEN_NOT_FOUND",
            Self::VerificationExpired => "VERIFICATION_EXPIRED",
            Self::VerificationTokenUsed => "VERIFICATION_TOKEN_USED",
            Self::VerificationEmailChanged => "VERIFICATION_EMAIL_CHANGED",
            Self::Store(_) | Self::Signing(_) => "INTERNAL_ERROR",
        }
    }

    fn metadata(&self) -> HashMap<String, String> {
        match self {
            Self::AccountSuspended { until: Some(until) } => {
                HashMap::from([("suspended_until".to_owned(), until.clone())])
            }
            _ => HashMap::new(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyAttempts { retry_after }
            | Self::VerificationRateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    fn describe(&self, detail: &mut ErrorDetail) {
        if let Self::Validation { field, message } = self {
            detail.field_violations.push(FieldViolation {
                field: (*field).to_owned(),
                description: (*message).to_owned(),
            });
        }
    }
}

//! The catalog service's errors and their gRPC mapping (one place, every
//! variant matched).

use std::time::Duration;

use auction_platform::ServiceError;
use auction_platform::peers::PeerError;
use tonic::Code;

use crate::rules::{RuleError, RuleKind};
use crate::store::StoreError;

/// Why a catalog call failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A request field is malformed.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// `request_id` is missing or malformed.
    #[error("request_id must be 1-64 characters of [A-Za-z0-9._:-]")]
    RequestIdInvalid,
    /// The same request id came with different content.
    #[error("request_id was already used with different content")]
    IdempotencyKeyReused,
    /// A page token is not one this RPC gave out for these filters.
    #[error("page_token is not valid for this request")]
    PageTokenInvalid,
    /// A listing parameter or schedule broke a rule.
    #[error("{0}")]
    Rule(RuleError),
    /// The category does not exist (ListCategories' root).
    #[error("no category with id {0}")]
    CategoryNotFound(String),
    /// A category named in a request does not exist.
    #[error("{field}: no category with id {id}")]
    CategoryUnknown {
        /// The request field.
        field: &'static str,
        /// The id given.
        id: String,
    },
    /// No such item (or not visible to the caller).
    #[error("no item with id {0}")]
    ItemNotFound(String),
    /// No such listing.
    #[error("no listing with id {0}")]
    ListingNotFound(String),
    /// No such live session (or not visible yet).
    #[error("no live session with id {0}")]
    SessionNotFound(String),
    /// The caller does not own it.
    #[error("only the seller (or an admin) may do this")]
    NotOwner,
    /// The item has a listing that is scheduled or running.
    #[error("the item has an active listing {0}; cancel it first")]
    ItemHasActiveListing(String),
    /// The listing (or item) can no longer be edited.
    #[error("{0}")]
    NotEditable(String),
    /// `expected_version` did not match.
    #[error("version is {current}, not {expected}")]
    VersionConflict {
        /// What the caller expected.
        expected: i64,
        /// What is stored.
        current: i64,
    },
    /// The caller watches too many listings.
    #[error("a watchlist holds at most {0} listings")]
    WatchlistFull(u32),
    /// The content type is not accepted, or the bytes are not what was declared.
    #[error("{0}")]
    MediaTypeUnsupported(String),
    /// The declared or received size is wrong.
    #[error("{0}")]
    MediaSizeInvalid(String),
    /// The upload does not check out (checksum).
    #[error("{0}")]
    UploadInvalid(String),
    /// The item has as many media as allowed.
    #[error("an item holds at most {0} media")]
    MediaLimitReached(i64),
    /// No such media.
    #[error("no media with id {0}")]
    MediaNotFound(String),
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(String),
    /// Another service could not be reached.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RuleError> for CatalogError {
    fn from(error: RuleError) -> Self {
        Self::Rule(error)
    }
}

impl ServiceError for CatalogError {
    fn code(&self) -> Code {
        match self {
            Self::Invalid { .. }
            | Self::RequestIdInvalid
            | Self::PageTokenInvalid
            | Self::Rule(_)
            | Self::CategoryUnknown { .. }
            | Self::MediaTypeUnsupported(_)
            | Self::MediaSizeInvalid(_) => Code::InvalidArgument,
            Self::UploadInvalid(_) => Code::FailedPrecondition,
            Self::MediaLimitReached(_) => Code::ResourceExhausted,
            Self::MediaNotFound(_) => Code::NotFound,
            Self::ObjectStore(_) => Code::Unavailable,
            Self::IdempotencyKeyReused => Code::AlreadyExists,
            Self::CategoryNotFound(_)
            | Self::ItemNotFound(_)
            | Self::ListingNotFound(_)
            | Self::SessionNotFound(_) => Code::NotFound,
            Self::NotOwner => Code::PermissionDenied,
            Self::ItemHasActiveListing(_) | Self::NotEditable(_) => Code::FailedPrecondition,
            Self::VersionConflict { .. } => Code::Aborted,
            Self::WatchlistFull(_) => Code::ResourceExhausted,
            Self::Peer(error) => error.code(),
            Self::Store(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Invalid { .. } => "VALIDATION_FAILED",
            Self::RequestIdInvalid => "REQUEST_ID_INVALID",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::PageTokenInvalid => "PAGE_TOKEN_INVALID",
            Self::Rule(error) => match error.kind {
                RuleKind::Parameters => "PARAMETERS_INVALID",
                RuleKind::Schedule => "SCHEDULE_INVALID",
                RuleKind::Currency => "CURRENCY_MISMATCH",
                RuleKind::Amount => "AMOUNT_INVALID",
            },
            Self::CategoryNotFound(_) | Self::CategoryUnknown { .. } => "CATEGORY_NOT_FOUND",
            Self::ItemNotFound(_) => "ITEM_NOT_FOUND",
            Self::ListingNotFound(_) => "LISTING_NOT_FOUND",
            Self::SessionNotFound(_) => "SESSION_NOT_FOUND",
            Self::NotOwner => "NOT_OWNER",
            Self::ItemHasActiveListing(_) => "ITEM_HAS_ACTIVE_LISTING",
            Self::NotEditable(_) => "LISTING_NOT_EDITABLE",
            Self::VersionConflict { .. } => "VERSION_CONFLICT",
            Self::WatchlistFull(_) => "WATCHLIST_FULL",
            Self::MediaTypeUnsupported(_) => "MEDIA_TYPE_UNSUPPORTED",
            Self::MediaSizeInvalid(_) => "MEDIA_SIZE_INVALID",
            Self::UploadInvalid(_) => "UPLOAD_INVALID",
            Self::MediaLimitReached(_) => "MEDIA_LIMIT_REACHED",
            Self::MediaNotFound(_) => "MEDIA_NOT_FOUND",
            Self::ObjectStore(_) => "SERVICE_UNAVAILABLE",
            Self::Peer(error) => error.reason(),
            Self::Store(_) => "INTERNAL_ERROR",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Peer(error) => error.retry_after(),
            Self::ObjectStore(_) => Some(Duration::from_secs(1)),
            Self::MediaTypeUnsupported(_)
            | Self::MediaSizeInvalid(_)
            | Self::UploadInvalid(_)
            | Self::MediaLimitReached(_)
            | Self::MediaNotFound(_) => None,
            Self::Invalid { .. }
            | Self::RequestIdInvalid
            | Self::IdempotencyKeyReused
            | Self::PageTokenInvalid
            | Self::Rule(_)
            | Self::CategoryNotFound(_)
            | Self::CategoryUnknown { .. }
            | Self::ItemNotFound(_)
            | Self::ListingNotFound(_)
            | Self::SessionNotFound(_)
            | Self::NotOwner
            | Self::ItemHasActiveListing(_)
            | Self::NotEditable(_)
            | Self::VersionConflict { .. }
            | Self::WatchlistFull(_)
            | Self::Store(_) => None,
        }
    }

    fn describe(&self, detail: &mut auction_proto::v1::ErrorDetail) {
        let violation = |field: &str, description: String| auction_proto::v1::FieldViolation {
            field: field.to_owned(),
            description,
        };
        match self {
            Self::Invalid { field, message } => {
                detail
                    .field_violations
                    .push(violation(field, message.clone()));
            }
            Self::Rule(error) => {
                detail
                    .field_violations
                    .push(violation(&error.field, error.message.clone()));
            }
            Self::CategoryUnknown { field, id } => {
                detail
                    .field_violations
                    .push(violation(field, format!("no category with id {id}")));
            }
            Self::MediaTypeUnsupported(_)
            | Self::MediaSizeInvalid(_)
            | Self::UploadInvalid(_)
            | Self::MediaLimitReached(_)
            | Self::MediaNotFound(_)
            | Self::ObjectStore(_)
            | Self::RequestIdInvalid
            | Self::IdempotencyKeyReused
            | Self::PageTokenInvalid
            | Self::CategoryNotFound(_)
            | Self::ItemNotFound(_)
            | Self::ListingNotFound(_)
            | Self::SessionNotFound(_)
            | Self::NotOwner
            | Self::ItemHasActiveListing(_)
            | Self::NotEditable(_)
            | Self::VersionConflict { .. }
            | Self::WatchlistFull(_)
            | Self::Peer(_)
            | Self::Store(_) => {}
        }
    }
}

impl From<CatalogError> for tonic::Status {
    fn from(error: CatalogError) -> Self {
        auction_platform::to_status(&error)
    }
}

impl From<StoreError> for tonic::Status {
    fn from(error: StoreError) -> Self {
        auction_platform::to_status(&CatalogError::Store(error))
    }
}

//! The catalog service's errors and their gRPC mapping.

use auction_platform::ServiceError;
use tonic::Code;

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
    /// The category does not exist.
    #[error("no category with id {0}")]
    CategoryNotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError for CatalogError {
    fn code(&self) -> Code {
        match self {
            Self::Invalid { .. } => Code::InvalidArgument,
            Self::CategoryNotFound(_) => Code::NotFound,
            Self::Store(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Invalid { .. } => "VALIDATION_FAILED",
            Self::CategoryNotFound(_) => "CATEGORY_NOT_FOUND",
            Self::Store(_) => "INTERNAL_ERROR",
        }
    }

    fn describe(&self, detail: &mut auction_proto::v1::ErrorDetail) {
        match self {
            Self::Invalid { field, message } => {
                detail
                    .field_violations
                    .push(auction_proto::v1::FieldViolation {
                        field: (*field).to_owned(),
                        description: message.clone(),
                    });
            }
            Self::CategoryNotFound(_) | Self::Store(_) => {}
        }
    }
}

impl From<CatalogError> for tonic::Status {
    fn from(error: CatalogError) -> Self {
        auction_platform::to_status(&error)
    }
}

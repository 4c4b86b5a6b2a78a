//! Errors become gRPC statuses in exactly one place. Every service error
//! implements [`ServiceError`]: its gRPC code, a stable machine-readable
//! reason (never changed once shipped, e.g. `BID_BELOW_MINIMUM`), optional
//! metadata (the minimum acceptable amount, the leader to retry on), typed
//! extras for `auction.v1.ErrorDetail` and a retry hint. [`to_status`] turns
//! it into a `tonic::Status` the way `common.proto` promises: the
//! `grpc-status-details-bin` trailer holds a `google.rpc.Status` with a
//! `google.rpc.ErrorInfo`, a `google.rpc.RetryInfo` when a retry can help and
//! an `auction.v1.ErrorDetail`; the `auction-error-reason` trailer repeats the
//! reason for grpc-web clients. Internal errors are logged here with their
//! whole chain and reach the caller only as a generic message.

use std::collections::HashMap;
use std::time::Duration;

use auction_proto::v1::{ErrorDetail, ErrorReason};
use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// The `ErrorInfo.domain` of every error we send.
pub const ERROR_DOMAIN: &str = "auction.v1";

/// The trailer that repeats the reason for clients that do not decode
/// status details.
pub const REASON_TRAILER: &str = "auction-error-reason";

/// An error that knows how it looks on the wire.
pub trait ServiceError: std::error::Error {
    /// The gRPC status code.
    fn code(&self) -> Code;
    /// A stable reason such as `AUCTION_CLOSED`: an `ErrorReason` value name
    /// without its `ERROR_REASON_` prefix.
    fn reason(&self) -> &str;
    /// Key/value facts a program can act on (`minimum_amount`, `leader`).
    fn metadata(&self) -> HashMap<String, String> {
        HashMap::new()
    }
    /// When a retry can help, how long to wait first.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// Sets the typed extras of `auction.v1.ErrorDetail` (the minimum bid,
    /// the leader hint, field violations); reason, metadata and retry hint
    /// are filled in by [`to_status`].
    fn describe(&self, _detail: &mut ErrorDetail) {}
}

/// Converts a service error into the status sent to the caller.
pub fn to_status<E: ServiceError + ?Sized>(error: &E) -> Status {
    let code = error.code();
    let message = match code {
        // A bug or a broken dependency: the caller learns nothing of our
        // insides; the log keeps the whole chain.
        Code::Internal | Code::Unknown | Code::DataLoss => {
            tracing::error!(error = %DisplayChain(error), reason = error.reason(), "internal error");
            "internal error; it has been logged".to_owned()
        }
        Code::Ok
        | Code::Cancelled
        | Code::InvalidArgument
        | Code::DeadlineExceeded
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unavailable
        | Code::Unauthenticated => error.to_string(),
    };
    let mut detail = ErrorDetail::default();
    error.describe(&mut detail);
    status_with_details(
        code,
        message,
        error.reason(),
        error.metadata(),
        error.retry_after(),
        detail,
    )
}

/// The status of an RPC that is part of the contract but not built yet. The
/// README's status table lists every such RPC.
pub fn unimplemented(rpc: &'static str, issue: u32) -> Status {
    let metadata = HashMap::from([
        ("rpc".to_owned(), rpc.to_owned()),
        ("tracking_issue".to_owned(), issue.to_string()),
    ]);
    status_with_details(
        Code::Unimplemented,
        format!("{rpc} is not implemented yet (tracked by issue {issue})"),
        "NOT_IMPLEMENTED",
        metadata,
        None,
        ErrorDetail::default(),
    )
}

fn status_with_details(
    code: Code,
    message: String,
    reason: &str,
    metadata: HashMap<String, String>,
    retry_after: Option<Duration>,
    mut detail: ErrorDetail,
) -> Status {
    detail.reason = reason.to_owned();
    detail.reason_code = ErrorReason::from_str_name(&format!("ERROR_REASON_{reason}"))
        .map_or(0, |reason_code| reason_code as i32);
    detail.metadata.clone_from(&metadata);
    let retry_delay = retry_after.and_then(|delay| prost_types::Duration::try_from(delay).ok());
    detail.retry_after = retry_delay;

    let mut details = vec![any(
        "google.rpc.ErrorInfo",
        &tonic_types::pb::ErrorInfo {
            reason: reason.to_owned(),
            domain: ERROR_DOMAIN.to_owned(),
            metadata,
        },
    )];
    if let Some(retry_delay) = retry_delay {
        details.push(any(
            "google.rpc.RetryInfo",
            &tonic_types::pb::RetryInfo {
                retry_delay: Some(retry_delay),
            },
        ));
    }
    details.push(any("auction.v1.ErrorDetail", &detail));
    let status = tonic_types::pb::Status {
        code: code as i32,
        message: message.clone(),
        details,
    };
    let mut trailers = MetadataMap::new();
    // Reasons are ASCII names; one that is not (a bug) just goes without the trailer.
    if let Ok(value) = MetadataValue::try_from(reason) {
        trailers.insert(REASON_TRAILER, value);
    }
    Status::with_details_and_metadata(code, message, status.encode_to_vec().into(), trailers)
}

fn any(type_name: &str, message: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value: message.encode_to_vec(),
    }
}

/// Formats an error with its sources, `outer: inner: root`.
pub struct DisplayChain<'a, E: ?Sized>(pub &'a E);

impl<E: std::error::Error + ?Sized> std::fmt::Display for DisplayChain<'_, E> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(formatter, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Example {
        #[error("bid below the minimum of {minimum}")]
        BelowMinimum { minimum: String },
        #[error("database broke")]
        Broken,
    }

    impl ServiceError for Example {
        fn code(&self) -> Code {
            match self {
                Self::BelowMinimum { .. } => Code::FailedPrecondition,
                Self::Broken => Code::Internal,
            }
        }
        fn reason(&self) -> &str {
            match self {
                Self::BelowMinimum { .. } => "BID_BELOW_MINIMUM",
                Self::Broken => "INTERNAL",
            }
        }
        fn metadata(&self) -> HashMap<String, String> {
            match self {
                Self::BelowMinimum { minimum } => {
                    HashMap::from([("minimum_amount".to_owned(), minimum.clone())])
                }
                Self::Broken => HashMap::new(),
            }
        }
    }

    // Proves the reason and metadata travel as a decodable ErrorInfo.
    #[test]
    fn status_carries_reason_and_metadata() {
        let status = to_status(&Example::BelowMinimum {
            minimum: "12.50".to_owned(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "bid below the minimum of 12.50");
        let info = tonic_types::StatusExt::get_details_error_info(&status).expect("error info");
        assert_eq!(info.reason, "BID_BELOW_MINIMUM");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("minimum_amount").map(String::as_str),
            Some("12.50")
        );
        let trailer = status
            .metadata()
            .get(REASON_TRAILER)
            .expect("reason trailer");
        assert_eq!(trailer.to_str().expect("ascii"), "BID_BELOW_MINIMUM");
        let details = tonic_types::pb::Status::decode(status.details()).expect("google.rpc.Status");
        let detail = details
            .details
            .iter()
            .find(|any| any.type_url.ends_with("auction.v1.ErrorDetail"))
            .map(|any| ErrorDetail::decode(any.value.as_slice()).expect("ErrorDetail"))
            .expect("an ErrorDetail");
        assert_eq!(detail.reason, "BID_BELOW_MINIMUM");
        assert_eq!(detail.reason_code, ErrorReason::BidBelowMinimum as i32);
    }

    // Proves an internal error never shows its text to the caller.
    #[test]
    fn internal_errors_are_generic() {
        let status = to_status(&Example::Broken);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("database"));
    }
}

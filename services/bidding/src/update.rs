//! `UpdateAuction`: the new spec of a scheduled auction, built from the
//! request and the auction as it stands (unset times keep theirs, empty
//! parameters keep theirs), then judged by the engine
//! ([`auction_engine::Auction::update`]). The shard does this while it holds
//! the auction, so two updates never build on a stale copy.

use auction_engine::{
    Actor, Auction, AuctionSpec, AuctionStatus, Event, FormatSpec, SpecError, Timestamp,
    UpdateError,
};
use auction_proto::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::convert;
use crate::error::Refusal;
use crate::shard::Metadata;

/// What an UpdateAuction request asks to change.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// New parameters (same format), replacing the old ones; `None` keeps them.
    pub parameters: Option<pb::AuctionParameters>,
    /// New opening time; `None` keeps it.
    pub start_at: Option<Timestamp>,
    /// New end time; `None` keeps it.
    pub end_at: Option<Timestamp>,
    /// New title; `None` keeps it.
    pub title: Option<String>,
    /// Apply only if the auction's sequence is this.
    pub expected_sequence: Option<u64>,
}

/// The patch of a request, its malformed fields refused (INVALID_ARGUMENT).
pub fn patch(request: &pb::UpdateAuctionRequest) -> Result<Patch, Refusal> {
    let time = |field: &str, value: Option<&prost_types::Timestamp>| {
        value
            .map(|value| convert::from_timestamp(field, Some(value)))
            .transpose()
            .map_err(schedule_invalid)
    };
    Ok(Patch {
        parameters: request.parameters.clone(),
        start_at: time("start_time", request.start_time.as_ref())?,
        end_at: time("end_time", request.end_time.as_ref())?,
        title: (!request.title.is_empty()).then(|| request.title.clone()),
        expected_sequence: (request.expected_sequence != 0).then_some(request.expected_sequence),
    })
}

fn schedule_invalid(refusal: Refusal) -> Refusal {
    Refusal {
        reason: "SCHEDULE_INVALID".to_owned(),
        ..refusal
    }
}

fn parameters_invalid(refusal: Refusal) -> Refusal {
    // A malformed field of the new parameters is PARAMETERS_INVALID, as
    // the contract names it for this RPC (the field stays in metadata);
    // a currency mismatch keeps its own reason.
    if refusal.reason == "VALIDATION_FAILED" {
        let schedule = refusal
            .metadata
            .get("field")
            .is_some_and(|field| field == "start_time" || field == "end_time");
        Refusal {
            reason: if schedule {
                "SCHEDULE_INVALID"
            } else {
                "PARAMETERS_INVALID"
            }
            .to_owned(),
            ..refusal
        }
    } else {
        refusal
    }
}

fn end_of(spec: &AuctionSpec) -> Option<Timestamp> {
    match &spec.format {
        FormatSpec::English(english) => Some(english.end_at),
        FormatSpec::Sealed(sealed) => Some(sealed.end_at),
        FormatSpec::Dutch(_) | FormatSpec::Live(_) => None,
    }
}

/// The refusal for an engine's [`UpdateError`], as the contract names it.
pub fn refusal(error: &UpdateError) -> Refusal {
    let (code, reason) = match error {
        UpdateError::NotPermitted => (Code::PermissionDenied, "ROLE_REQUIRED"),
        UpdateError::NotEditable => (Code::FailedPrecondition, "LISTING_NOT_EDITABLE"),
        UpdateError::VersionConflict { .. } => (Code::Aborted, "VERSION_CONFLICT"),
        UpdateError::IdentityChanged | UpdateError::FormatChanged => {
            (Code::InvalidArgument, "PARAMETERS_INVALID")
        }
        UpdateError::StartNotInFuture
        | UpdateError::Spec(SpecError::InvalidSchedule | SpecError::TimeOutOfRange { .. }) => {
            (Code::InvalidArgument, "SCHEDULE_INVALID")
        }
        UpdateError::Spec(_) => (Code::InvalidArgument, "PARAMETERS_INVALID"),
    };
    let mut refusal = Refusal::new(code, reason, error.to_string());
    match error {
        UpdateError::VersionConflict { current } => {
            refusal
                .metadata
                .insert("current_sequence".to_owned(), current.to_string());
        }
        UpdateError::Spec(spec) => {
            refusal
                .metadata
                .insert("engine_reason".to_owned(), spec.reason().to_owned());
        }
        UpdateError::NotPermitted
        | UpdateError::NotEditable
        | UpdateError::IdentityChanged
        | UpdateError::FormatChanged
        | UpdateError::StartNotInFuture => {}
    }
    refusal
}

/// Applies `patch` to `auction` (pushing its `Updated` event) and returns
/// the new metadata; on `Err` nothing changed.
pub fn apply(
    auction_id: Uuid,
    auction: &mut Auction,
    metadata: &Metadata,
    actor: Actor,
    patch: &Patch,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<Metadata, Refusal> {
    // The state first: a running auction is not editable whatever the
    // request says.
    if auction.status() != AuctionStatus::Scheduled {
        return Err(refusal(&UpdateError::NotEditable));
    }
    let current = auction.spec();
    let start_at = patch.start_at.unwrap_or(current.start_at);
    let end_at = patch.end_at.or_else(|| end_of(&current));
    let (spec, original_end_ms) = match &patch.parameters {
        Some(parameters) => {
            let request = pb::CreateAuctionRequest {
                parameters: Some(parameters.clone()),
                start_time: Some(convert::timestamp(start_at)),
                end_time: end_at.map(convert::timestamp),
                ..pb::CreateAuctionRequest::default()
            };
            let seller = Uuid::from_u128(current.seller.0);
            convert::spec(&request, auction_id, seller).map_err(parameters_invalid)?
        }
        None => {
            let mut spec = current.clone();
            spec.start_at = start_at;
            if let Some(end_at) = end_at {
                match &mut spec.format {
                    FormatSpec::English(english) => english.end_at = end_at,
                    FormatSpec::Sealed(sealed) => sealed.end_at = end_at,
                    FormatSpec::Dutch(_) | FormatSpec::Live(_) => {}
                }
            }
            let original_end_ms = end_of(&spec).map(Timestamp::unix_ms);
            (spec, original_end_ms)
        }
    };
    auction
        .update(actor, spec, patch.expected_sequence, now, events)
        .map_err(|error| refusal(&error))?;
    let mut metadata = metadata.clone();
    if let Some(title) = &patch.title {
        metadata.title = title.clone();
    }
    metadata.original_end_ms = original_end_ms;
    Ok(metadata)
}

impl crate::rpc::Bidding {
    /// `UpdateAuction`: the catalog service (its UpdateListing) or an admin;
    /// idempotent with `request_id`.
    pub async fn update_auction(
        &self,
        request: tonic::Request<pb::UpdateAuctionRequest>,
    ) -> Result<tonic::Response<pb::UpdateAuctionResponse>, tonic::Status> {
        use prost::Message as _;
        let caller = auction_platform::auth::caller(&request)?;
        caller.require_service_or_admin()?;
        let request = request.into_inner();
        let refused =
            |refusal: Refusal| tonic::Status::from(crate::error::BiddingError::Refused(refusal));
        let request_id = convert::request_id(&request.request_id).map_err(refused)?;
        let auction_id = convert::uuid("auction_id", &request.auction_id).map_err(refused)?;
        let patch = patch(&request).map_err(refused)?;
        // The content without the id, as stable bytes.
        let fingerprint = {
            let mut content = request.clone();
            content.request_id.clear();
            content
                .encode_to_vec()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        };
        let key = crate::shard::IdempotencyKey {
            caller: caller.user_id,
            method: "UpdateAuction",
            request_id,
            fingerprint,
        };
        let actor = if caller.is_service() {
            Actor::SYSTEM
        } else {
            Actor::admin(convert::user_id(caller.user_id))
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.shards.send(
            auction_id,
            crate::shard::Request::Update {
                auction_id,
                actor,
                patch: Box::new(patch),
                key,
                reply,
            },
        )?;
        let receipt = match answer.await {
            Ok(result) => result.map_err(tonic::Status::from)?,
            Err(_) => return Err(crate::error::BiddingError::ShuttingDown.into()),
        };
        let (state, _) = convert::receipt_state(&receipt);
        Ok(tonic::Response::new(pb::UpdateAuctionResponse {
            state: Some(state),
        }))
    }
}

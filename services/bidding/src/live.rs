//! Live lots: the auctioneer's controls and absentee bids.
//!
//! Each lot of a live session is its own auction: the engine's single-lot
//! live format ([`auction_engine::LiveSpec::single_lot`]), on the shard its
//! id hashes to. The engine decides everything about one lot (absentee bids
//! applied at opening, the countdown, fair warning, the provisional hammer
//! or pass, reopen, undo, the finalisation that closes the auction). What
//! spans lots of a session lives here:
//!
//! - the `live_lots` table maps a session to its lots (and their
//!   auctioneer), written when a lot is created;
//! - `OpenLot` refuses while another lot of the session is open and
//!   finalises the session's provisional hammers and passes first, under a
//!   per-session lock (also taken by `ReopenLot`, so a reopen cannot slip in
//!   between the check and the opening).
//!
//! Who may drive a lot: its `auctioneer_id` or an admin (NOT_OWNER /
//! ROLE_REQUIRED otherwise), checked here against the lot's metadata before
//! the command reaches the shard.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use auction_engine::{Action, Actor, EventKind, LotIndex};
use auction_platform::auth::{self, Caller, Role, Scope};
use auction_platform::{Database, on_pool};
use auction_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Row};
use tokio::sync::oneshot;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::convert;
use crate::error::{BiddingError, Refusal};
use crate::log::LogError;
use crate::rpc::Bidding;
use crate::shard::{self, IdempotencyKey, Receipt, Shards};

/// A live lot's place in its session, from `CreateAuction`; kept in the
/// auction's metadata (and in `live_lots`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveLotMetadata {
    /// The catalog's live session.
    pub session_id: String,
    /// 1-based position in the session.
    pub lot_number: u32,
    /// The user allowed to drive the lot (besides admins).
    pub auctioneer_id: String,
}

/// The session table and the settings of live lots.
#[derive(Debug, Clone)]
pub struct LiveLots {
    /// The bidding database (`live_lots`).
    database: Database,
    /// How long a hammer or pass stays provisional
    /// (`bidding.lot_finalize_ms`), fixed into each lot at creation.
    finalize_ms: i64,
}

/// ABORTED `VERSION_CONFLICT`: the lot moved on since the auctioneer saw it.
pub fn version_conflict(expected: u64, current: u64) -> Refusal {
    let mut refusal = Refusal::new(
        Code::Aborted,
        "VERSION_CONFLICT",
        format!("the lot is at sequence {current}, not {expected}"),
    );
    refusal
        .metadata
        .insert("current_sequence".to_owned(), current.to_string());
    refusal
}

fn lot_state_invalid(message: impl Into<String>) -> Refusal {
    Refusal::new(Code::FailedPrecondition, "LOT_STATE_INVALID", message)
}

fn refused(refusal: Refusal) -> Status {
    BiddingError::Refused(refusal).into()
}

/// The engine's reasons for "not in a state for this control", reported
/// to the auctioneer as the contract's LOT_STATE_INVALID (the engine's own
/// reason stays in the metadata).
fn as_control_refusal(error: BiddingError) -> BiddingError {
    match error {
        BiddingError::Refused(mut refusal)
            if matches!(
                refusal.reason.as_str(),
                "LOT_NOT_PENDING" | "AUCTION_NOT_OPEN" | "AUCTION_CLOSED"
            ) =>
        {
            refusal.reason = "LOT_STATE_INVALID".to_owned();
            BiddingError::Refused(refusal)
        }
        other => other,
    }
}

/// One lock per session held while a lot of it opens or reopens, so "one
/// open lot per session" is checked and acted on atomically on this node.
static SESSION_LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

async fn lock_session(session_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
    let lock = {
        let mut locks = SESSION_LOCKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget sessions nobody holds, so the map stays as small as the
        // number of sessions being driven right now.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(locks.entry(session_id.to_owned()).or_default())
    };
    lock.lock_owned().await
}

impl LiveLots {
    /// The table on `database`, lots provisional for `finalize_ms`.
    pub fn new(database: Database, finalize_ms: u64) -> Self {
        Self {
            database,
            finalize_ms: i64::try_from(finalize_ms).unwrap_or(i64::MAX),
        }
    }

    /// For a live lot's `CreateAuction`: fixes the configured finalise delay
    /// into the spec and returns the lot's session identity; `None` for
    /// other formats.
    pub fn prepare(
        &self,
        request: &pb::CreateAuctionRequest,
        spec: &mut auction_engine::AuctionSpec,
    ) -> Result<Option<LiveLotMetadata>, Status> {
        let auction_engine::FormatSpec::Live(live) = &mut spec.format else {
            return Ok(None);
        };
        live.finalize_ms = Some(self.finalize_ms);
        convert::live_lot_identity(request)
            .map(Some)
            .map_err(refused)
    }

    /// Refuses a lot number the session already gave another auction.
    pub async fn check_free(&self, auction_id: Uuid, lot: &LiveLotMetadata) -> Result<(), Status> {
        let taken = self
            .lot_at(&lot.session_id, lot.lot_number)
            .await
            .map_err(|error| Status::from(BiddingError::Unavailable(error)))?;
        match taken {
            Some(other) if other != auction_id => {
                let mut refusal = Refusal::new(
                    Code::InvalidArgument,
                    "PARAMETERS_INVALID",
                    format!(
                        "lot {} of session {} is auction {other}",
                        lot.lot_number, lot.session_id
                    ),
                );
                refusal
                    .metadata
                    .insert("field".to_owned(), "lot_number".to_owned());
                Err(refused(refusal))
            }
            Some(_) | None => Ok(()),
        }
    }

    /// Records a created lot in its session (idempotent: a retried create
    /// records it again harmlessly).
    pub async fn register(&self, auction_id: Uuid, lot: &LiveLotMetadata) -> Result<(), LogError> {
        let auctioneer = Uuid::parse_str(&lot.auctioneer_id)
            .map_err(|_| LogError::Corrupt("auctioneer id".to_owned()))?;
        let _turn = self.database.write_turn().await;
        on_pool!(&self.database, pool => {
            QueryBuilder::new("INSERT INTO live_lots (auction_id, session_id, lot_number, auctioneer_id) VALUES (")
                .push_bind(auction_id)
                .push(", ")
                .push_bind(&lot.session_id)
                .push(", ")
                .push_bind(i64::from(lot.lot_number))
                .push(", ")
                .push_bind(auctioneer)
                .push(") ON CONFLICT DO NOTHING")
                .build()
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn lot_at(&self, session_id: &str, lot_number: u32) -> Result<Option<Uuid>, LogError> {
        let found = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT auction_id FROM live_lots WHERE session_id = ")
                .push_bind(session_id)
                .push(" AND lot_number = ")
                .push_bind(i64::from(lot_number))
                .build_query_scalar::<Uuid>()
                .fetch_optional(pool)
                .await?
        });
        Ok(found)
    }

    /// Every lot of a session, in lot order (bounded by the catalog's 500
    /// lots per session).
    async fn lots_of(&self, session_id: &str) -> Result<Vec<(Uuid, u32)>, LogError> {
        let rows = on_pool!(&self.database, pool => {
            let rows = QueryBuilder::new("SELECT auction_id, lot_number FROM live_lots WHERE session_id = ")
                .push_bind(session_id)
                .push(" ORDER BY lot_number LIMIT 1000")
                .build()
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    let lot_number: i64 = row.try_get("lot_number")?;
                    Ok((row.try_get::<Uuid, _>("auction_id")?, u32::try_from(lot_number).unwrap_or(0)))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }
}

/// The lot state of a wire state (UNSPECIFIED when it is not a live lot).
fn lot_state_of(state: &pb::AuctionState) -> pb::LotState {
    match &state.format_state {
        Some(pb::auction_state::FormatState::LiveLot(lot)) => lot.lot_state(),
        _ => pb::LotState::Unspecified,
    }
}

/// Which control a request is, with what the engine needs.
struct Control {
    method: &'static str,
    request_id: String,
    auction_id: String,
    action: Action,
    expected_sequence: u64,
}

impl Bidding {
    /// Reads a live lot (NOT_FOUND, or WRONG_FORMAT when it is no lot).
    async fn read_lot(&self, auction_id: Uuid) -> Result<(Receipt, LiveLotMetadata), Status> {
        let receipt = self
            .ask(auction_id, |reply| shard::Request::Read {
                auction_id,
                viewer: None,
                reply,
            })
            .await?;
        let lot = receipt.metadata.live_lot.clone().ok_or_else(|| {
            refused(Refusal::new(
                Code::FailedPrecondition,
                "WRONG_FORMAT",
                format!("auction {auction_id} is not a live lot"),
            ))
        })?;
        Ok((receipt, lot))
    }

    /// The actor for a lot's controls: its auctioneer or an admin.
    fn auctioneer(caller: &Caller, lot: &LiveLotMetadata) -> Result<Actor, Status> {
        let actor = Actor::auctioneer(convert::user_id(caller.user_id));
        if caller.is_admin() {
            return Ok(actor);
        }
        caller.require_role(Role::Auctioneer)?;
        let owner = Uuid::parse_str(&lot.auctioneer_id).unwrap_or_default();
        caller.require_owner_or_admin(owner)?;
        Ok(actor)
    }

    /// Sends a command (with its optional sequence guard) to the lot's shard.
    async fn apply_to_lot(
        &self,
        caller: &Caller,
        control: &Control,
        auction_id: Uuid,
        actor: Actor,
    ) -> Result<Receipt, Status> {
        let request_id = convert::request_id(&control.request_id).map_err(refused)?;
        let expected_sequence =
            (control.expected_sequence != 0).then_some(control.expected_sequence);
        let fingerprint =
            serde_json::to_string(&(auction_id, actor, control.action, expected_sequence))
                .map_err(|error| Status::from(BiddingError::Internal(error.to_string())))?;
        let key = IdempotencyKey {
            caller: caller.user_id,
            method: control.method,
            request_id,
            fingerprint,
        };
        let (reply, answer) = oneshot::channel();
        self.shards.send(
            auction_id,
            shard::Request::Apply {
                auction_id,
                actor,
                action: control.action,
                expected_sequence,
                key,
                reply,
            },
        )?;
        match answer.await {
            Ok(result) => result.map_err(|error| Status::from(as_control_refusal(error))),
            Err(_) => Err(BiddingError::ShuttingDown.into()),
        }
    }

    /// A control on one lot: authorise, apply, answer the state after it.
    async fn control(
        &self,
        caller: &Caller,
        control: Control,
    ) -> Result<(Receipt, pb::AuctionState), Status> {
        let auction_id = convert::uuid("auction_id", &control.auction_id).map_err(refused)?;
        if !caller.is_admin() {
            caller.require_role(Role::Auctioneer)?;
        }
        let (_, lot) = self.read_lot(auction_id).await?;
        let actor = Self::auctioneer(caller, &lot)?;
        // Reopening makes a lot open again: checked like an opening.
        let _session = match control.action {
            Action::Reopen { .. } => Some(lock_session(&lot.session_id).await),
            _ => None,
        };
        if matches!(control.action, Action::Reopen { .. }) {
            self.refuse_if_sibling_open(auction_id, &lot).await?;
        }
        let receipt = self
            .apply_to_lot(caller, &control, auction_id, actor)
            .await?;
        let (state, _) = convert::receipt_state(&receipt);
        Ok((receipt, state))
    }

    /// FAILED_PRECONDITION LOT_STATE_INVALID when another lot of the
    /// session is open; returns the session's other lots' states.
    async fn refuse_if_sibling_open(
        &self,
        auction_id: Uuid,
        lot: &LiveLotMetadata,
    ) -> Result<Vec<(Uuid, pb::AuctionState)>, Status> {
        let siblings = self
            .live
            .lots_of(&lot.session_id)
            .await
            .map_err(|error| Status::from(BiddingError::Unavailable(error)))?;
        let mut states = Vec::with_capacity(siblings.len());
        for (sibling, lot_number) in siblings {
            if sibling == auction_id {
                continue;
            }
            let state = self.public_state(sibling).await?;
            if matches!(
                lot_state_of(&state),
                pb::LotState::Open | pb::LotState::FairWarning
            ) {
                let mut refusal = lot_state_invalid(format!(
                    "lot {lot_number} of session {} is open",
                    lot.session_id
                ));
                refusal
                    .metadata
                    .insert("open_lot_auction_id".to_owned(), sibling.to_string());
                return Err(refused(refusal));
            }
            states.push((sibling, state));
        }
        Ok(states)
    }

    /// `PlaceAbsenteeBid`: a secret maximum on a pending lot.
    pub async fn place_absentee_bid(
        &self,
        request: Request<pb::PlaceAbsenteeBidRequest>,
    ) -> Result<Response<pb::PlaceAbsenteeBidResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_role(Role::Bidder)?;
        caller.require_scope(Scope::Bid)?;
        let actor = Actor::bidder(convert::user_id(caller.user_id));
        let request = request.into_inner();
        let max_amount =
            convert::money("max_amount", request.max_amount.as_ref()).map_err(refused)?;
        let receipt = self
            .act(
                &caller,
                "PlaceAbsenteeBid",
                &request.request_id,
                &request.auction_id,
                actor,
                Action::AbsenteeBid {
                    lot: LotIndex(0),
                    max_amount,
                },
            )
            .await?;
        let (state, viewer) = convert::receipt_state(&receipt);
        let mut bid = convert::own_bid(&receipt, pb::BidKind::Absentee);
        bid.status = pb::BidStatus::Pending as i32;
        if let Some(event) = receipt.events.last() {
            bid.bid_id = crate::history::bid_id(receipt.auction_id, event.seq).to_string();
        }
        Ok(Response::new(pb::PlaceAbsenteeBidResponse {
            bid: Some(bid),
            state: Some(state),
            viewer,
        }))
    }

    /// `OpenLot`: one open lot per session; the session's provisional
    /// hammers and passes are finalised first.
    pub async fn open_lot(
        &self,
        request: Request<pb::OpenLotRequest>,
    ) -> Result<Response<pb::OpenLotResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let auction_id = convert::uuid("auction_id", &request.auction_id).map_err(refused)?;
        if !caller.is_admin() {
            caller.require_role(Role::Auctioneer)?;
        }
        let (receipt, lot) = self.read_lot(auction_id).await?;
        let actor = Self::auctioneer(&caller, &lot)?;
        let control = Control {
            method: "OpenLot",
            request_id: request.request_id,
            auction_id: request.auction_id,
            action: Action::OpenLot { lot: None },
            expected_sequence: 0,
        };
        let _session = lock_session(&lot.session_id).await;
        // Only a pending lot needs its session checked; any other answer
        // (a retry's original one, or LOT_STATE_INVALID) comes from the shard.
        let pending = {
            let (state, _) = convert::receipt_state(&receipt);
            lot_state_of(&state) == pb::LotState::Pending
                && receipt.view.status == auction_engine::AuctionStatus::Scheduled
        };
        if pending {
            let siblings = self.refuse_if_sibling_open(auction_id, &lot).await?;
            for (sibling, state) in siblings {
                if matches!(
                    lot_state_of(&state),
                    pb::LotState::Hammered | pb::LotState::Passed
                ) && state.status == pb::AuctionStatus::Open as i32
                {
                    self.finalize_sibling(&caller, actor, auction_id, sibling)
                        .await?;
                }
            }
        }
        let receipt = self
            .apply_to_lot(&caller, &control, auction_id, actor)
            .await?;
        let (state, _) = convert::receipt_state(&receipt);
        Ok(Response::new(pb::OpenLotResponse { state: Some(state) }))
    }

    /// Makes a sibling's provisional result final now. A sibling whose
    /// shard this node does not lead (a cluster) is left to its own
    /// finalise timer: see docs/ARCHITECTURE.md, "Live lots".
    async fn finalize_sibling(
        &self,
        caller: &Caller,
        actor: Actor,
        opening: Uuid,
        sibling: Uuid,
    ) -> Result<(), Status> {
        if !self
            .shards
            .leads(Shards::shard_of(sibling, self.shards.count()))
        {
            return Ok(());
        }
        let control = Control {
            method: "FinalizeLot",
            // One key per (opening lot, sibling): a retried OpenLot finds
            // the finalisation already done.
            request_id: format!("{opening}>{sibling}"),
            auction_id: sibling.to_string(),
            action: Action::FinalizeLot,
            expected_sequence: 0,
        };
        let request_id = control.request_id.clone();
        let fingerprint = sibling.to_string();
        let key = IdempotencyKey {
            caller: caller.user_id,
            method: control.method,
            request_id,
            fingerprint,
        };
        let (reply, answer) = oneshot::channel();
        self.shards.send(
            sibling,
            shard::Request::Apply {
                auction_id: sibling,
                actor,
                action: Action::FinalizeLot,
                expected_sequence: None,
                key,
                reply,
            },
        )?;
        match answer.await {
            Ok(Ok(_)) => Ok(()),
            // Final already (its timer fired, or a retry): nothing to do.
            Ok(Err(BiddingError::Refused(refusal))) if refusal.reason == "LOT_STATE_INVALID" => {
                // Reopened meanwhile? Then it is open, and this lot may not open.
                let state = self.public_state(sibling).await?;
                if matches!(
                    lot_state_of(&state),
                    pb::LotState::Open | pb::LotState::FairWarning
                ) {
                    return Err(refused(lot_state_invalid(format!(
                        "lot auction {sibling} of the session is open"
                    ))));
                }
                Ok(())
            }
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(BiddingError::ShuttingDown.into()),
        }
    }

    /// `CallFairWarning`.
    pub async fn call_fair_warning(
        &self,
        request: Request<pb::CallFairWarningRequest>,
    ) -> Result<Response<pb::CallFairWarningResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let (_, state) = self
            .control(
                &caller,
                Control {
                    method: "CallFairWarning",
                    request_id: request.request_id,
                    auction_id: request.auction_id,
                    action: Action::FairWarning,
                    expected_sequence: request.expected_sequence,
                },
            )
            .await?;
        Ok(Response::new(pb::CallFairWarningResponse {
            state: Some(state),
        }))
    }

    /// `HammerLot`: provisional until finalised.
    pub async fn hammer_lot(
        &self,
        request: Request<pb::HammerLotRequest>,
    ) -> Result<Response<pb::HammerLotResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let (_, state) = self
            .control(
                &caller,
                Control {
                    method: "HammerLot",
                    request_id: request.request_id,
                    auction_id: request.auction_id,
                    action: Action::Hammer,
                    expected_sequence: request.expected_sequence,
                },
            )
            .await?;
        Ok(Response::new(pb::HammerLotResponse { state: Some(state) }))
    }

    /// `PassLot`: provisional until finalised, then UNSOLD.
    pub async fn pass_lot(
        &self,
        request: Request<pb::PassLotRequest>,
    ) -> Result<Response<pb::PassLotResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        check_reason(&request.reason)?;
        let (_, state) = self
            .control(
                &caller,
                Control {
                    method: "PassLot",
                    request_id: request.request_id,
                    auction_id: request.auction_id,
                    action: Action::Pass,
                    expected_sequence: request.expected_sequence,
                },
            )
            .await?;
        Ok(Response::new(pb::PassLotResponse { state: Some(state) }))
    }

    /// `ReopenLot`: only while the hammer or pass is provisional.
    pub async fn reopen_lot(
        &self,
        request: Request<pb::ReopenLotRequest>,
    ) -> Result<Response<pb::ReopenLotResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        check_reason(&request.reason)?;
        let (_, state) = self
            .control(
                &caller,
                Control {
                    method: "ReopenLot",
                    request_id: request.request_id,
                    auction_id: request.auction_id,
                    action: Action::Reopen { lot: LotIndex(0) },
                    expected_sequence: 0,
                },
            )
            .await?;
        Ok(Response::new(pb::ReopenLotResponse { state: Some(state) }))
    }

    /// `UndoLastBid`: the most recent accepted bid becomes RETRACTED.
    pub async fn undo_last_bid(
        &self,
        request: Request<pb::UndoLastBidRequest>,
    ) -> Result<Response<pb::UndoLastBidResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        check_reason(&request.reason)?;
        let (receipt, state) = self
            .control(
                &caller,
                Control {
                    method: "UndoLastBid",
                    request_id: request.request_id,
                    auction_id: request.auction_id,
                    action: Action::UndoLastBid,
                    expected_sequence: request.expected_sequence,
                },
            )
            .await?;
        let undone_bid = self.undone_bid(&receipt, &request.reason).await?;
        Ok(Response::new(pb::UndoLastBidResponse {
            undone_bid: Some(undone_bid),
            state: Some(state),
        }))
    }

    /// The bid an undo removed: the latest accepted bid not undone before,
    /// found by walking the lot's log up to the undo.
    async fn undone_bid(&self, receipt: &Receipt, reason: &str) -> Result<pb::Bid, Status> {
        let auction_id = receipt.auction_id;
        let Some(undo) = receipt
            .events
            .iter()
            .rev()
            .find(|event| matches!(event.kind, EventKind::BidUndone { .. }))
        else {
            return Err(BiddingError::Internal("an undo without its event".to_owned()).into());
        };
        let events = self.all_events(auction_id).await?;
        let mut stack = Vec::new();
        for event in events.iter().take_while(|event| event.seq < undo.seq) {
            match event.kind {
                EventKind::BidAccepted { .. } => stack.push(event),
                EventKind::BidUndone { .. } => {
                    stack.pop();
                }
                EventKind::BidRetracted { .. } => stack.clear(),
                _ => {}
            }
        }
        let mut bid = pb::Bid {
            auction_id: auction_id.to_string(),
            status: pb::BidStatus::Retracted as i32,
            quantity: 1,
            sequence: convert::wire_sequence(undo.seq),
            retraction_reason: reason.to_owned(),
            ..pb::Bid::default()
        };
        if let Some(accepted) = stack.pop()
            && let EventKind::BidAccepted {
                bidder,
                bid_kind,
                max_amount,
                price,
                leader,
                ..
            } = accepted.kind
        {
            bid.bid_id = crate::history::bid_id(auction_id, accepted.seq).to_string();
            bid.bidder = Some(convert::bidder(bidder));
            bid.place_time = Some(convert::timestamp(accepted.at));
            bid.kind = match bid_kind {
                auction_engine::BidKind::Plain => pb::BidKind::Manual,
                auction_engine::BidKind::Maximum => pb::BidKind::Proxy,
                auction_engine::BidKind::Absentee => pb::BidKind::Absentee,
            } as i32;
            // The visible amount only: a plain bid is its amount; a maximum
            // shows as the price it set while leading, never itself.
            bid.amount = match bid_kind {
                auction_engine::BidKind::Plain => Some(convert::money_to_proto(max_amount)),
                auction_engine::BidKind::Maximum | auction_engine::BidKind::Absentee => {
                    (leader == bidder).then(|| convert::money_to_proto(price))
                }
            };
        }
        Ok(bid)
    }
}

/// The announcement a pass, reopen or undo carries: 0-200 characters.
fn check_reason(reason: &str) -> Result<(), Status> {
    if reason.chars().count() > 200 {
        return Err(refused(convert::invalid(
            "reason",
            "at most 200 characters",
        )));
    }
    Ok(())
}

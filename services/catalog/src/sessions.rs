//! Live sessions: an auctioneer's ordered lots, each a listing of format
//! LIVE whose auction the bidding service runs (opened, hammered and passed
//! there by the auctioneer).
//!
//! CreateLiveSession is exactly-once like CreateListing (see
//! [`crate::listings`]), lot by lot:
//!
//! 1. the whole request is checked first ([`crate::rules`]): title, start
//!    (5 minutes to 90 days ahead), currency, 1-500 lots and each lot's
//!    parameters, so bidding has no reason left to refuse;
//! 2. one transaction claims the idempotency key with a fresh session id,
//!    checks every item (the caller's, or anyone's for an admin; none with
//!    an active listing) and inserts the session and one `pending` listing
//!    per lot (the partial unique index keeps one active listing per item);
//! 3. each lot is scheduled in bidding with a request id derived from its
//!    listing id, in running order, and its state recorded;
//! 4. the last transaction stores the response under the key.
//!
//! A retry finds the key in flight and resumes at step 3. A definite
//! refusal by bidding cancels the lots already scheduled (with the caller's
//! own token: bidding applies the seller's or admin's rights), removes the
//! pending ones, marks the session `failed` (never shown) and releases the
//! key. A transient failure leaves everything for the retry; lots left
//! pending are finished by [`Inner::resume_pending`].
//!
//! The session's status is derived from its lots' statuses, which follow
//! bidding's events (see [`refresh_status`]), so listing by status pages in
//! SQL.
//!
//! The "live session starting" notice (`BusLiveSessionStarting`, topic
//! `catalog`, key = session id) goes to the watchers of the lots and their
//! absentee bidders 15 minutes before the start (at once for a session
//! created later than that). Its due time is stored with the session;
//! [`run_notices`] stages the event in the outbox in the same transaction
//! that marks it sent, so it is published once per session whatever the
//! restarts (the relay's at-least-once redelivery keeps the event id, and
//! the notification service deduplicates per user and session).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use auction_platform::auth::{self, Caller, Role};
use auction_platform::bus::{Envelope, TOPIC_CATALOG, ms_from_timestamp, timestamp_from_ms};
use auction_platform::{Database, Shutdown};
use auction_proto::v1::{
    AuctionFormat, AuctionParameters, AuctionStatus, BusCatalogEvent, BusLiveSessionStarting,
    CancelAuctionRequest, CreateLiveSessionRequest, CreateLiveSessionResponse,
    GetLiveSessionRequest, GetLiveSessionResponse, ListLiveSessionsRequest,
    ListLiveSessionsResponse, LiveLot, LiveSession, LiveSessionStatus, Media, Money,
    auction_parameters::FormatParameters, bus_catalog_event,
};
use prost::Message as _;
use tonic::metadata::Ascii;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Inner;
use crate::error::CatalogError;
use crate::idempotency::{self, IdempotencyKey, Prior};
use crate::items::{self, parse_id};
use crate::listings::{
    self, ListingRecord, format_name, is_definite, listing_columns, mirror_state, status_from_name,
};
use crate::money;
use crate::pagination;
use crate::rules::{self, RuleError, RuleKind, ValidLot};
use crate::sql::{self, Arg, Row, Transaction};
use crate::store::StoreError;

/// How long before its start a session's "starting" notice goes out.
pub const NOTICE_LEAD_MS: i64 = 15 * 60_000;
/// Most recipients of one notice (watchers and absentee bidders): a bound
/// on the event's size.
pub const MAX_NOTICE_RECIPIENTS: usize = 50_000;
/// Most notices published per pass of [`run_notices`].
const NOTICES_PER_PASS: i64 = 100;
/// Longest sleep of [`run_notices`] (it also wakes when a session is made).
const NOTICE_IDLE_MS: i64 = 60_000;
/// Pause of [`run_notices`] after a storage failure.
const NOTICE_RETRY_MS: u64 = 5_000;
/// Longest title.
const MAX_TITLE_CHARS: usize = 120;
/// Longest description.
const MAX_DESCRIPTION_CHARS: usize = 5_000;

/// A session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub id: Uuid,
    /// Who runs it.
    pub auctioneer_id: Uuid,
    /// Their handle (empty when the user service did not answer).
    pub auctioneer_handle: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Currency of every lot.
    pub currency: String,
    /// Announced start.
    pub start_at_ms: i64,
    /// Storage name of the status (`pending` and `failed` included).
    pub status: String,
    /// The open lot, else the last closed; 0 before the first opens.
    pub current_lot_number: i64,
    /// Creation time.
    pub created_at_ms: i64,
}

const SESSION_COLUMNS: &str = "id, auctioneer_id, auctioneer_handle, title, description, currency, \
     start_at_ms, status, current_lot_number, created_at_ms";

impl SessionRecord {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.uuid("id")?,
            auctioneer_id: row.uuid("auctioneer_id")?,
            auctioneer_handle: row.text("auctioneer_handle")?,
            title: row.text("title")?,
            description: row.text("description")?,
            currency: row.text("currency")?,
            start_at_ms: row.int("start_at_ms")?,
            status: row.text("status")?,
            current_lot_number: row.int("current_lot_number")?,
            created_at_ms: row.int("created_at_ms")?,
        })
    }

    /// Whether readers may see it (not being created, not failed).
    fn visible(&self) -> bool {
        !matches!(self.status.as_str(), "pending" | "failed")
    }

    /// As the contract's message, with `lots` in running order.
    fn to_proto(&self, lots: &[ListingRecord], thumbnails: &HashMap<Uuid, String>) -> LiveSession {
        LiveSession {
            session_id: self.id.to_string(),
            auctioneer_id: self.auctioneer_id.to_string(),
            auctioneer_handle: self.auctioneer_handle.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            start_time: Some(timestamp_from_ms(self.start_at_ms)),
            status: status_from_storage(&self.status) as i32,
            currency: self.currency.clone(),
            lots: lots
                .iter()
                .map(|lot| live_lot(lot, thumbnails.get(&lot.item_id)))
                .collect(),
            current_lot_number: u32::try_from(self.current_lot_number).unwrap_or(0),
            create_time: Some(timestamp_from_ms(self.created_at_ms)),
        }
    }
}

/// The contract's status of a storage name (`pending` shows as SCHEDULED,
/// though pending sessions are never shown).
fn status_from_storage(name: &str) -> LiveSessionStatus {
    match name {
        "live" => LiveSessionStatus::Live,
        "ended" => LiveSessionStatus::Ended,
        "cancelled" => LiveSessionStatus::Cancelled,
        _ => LiveSessionStatus::Scheduled,
    }
}

/// The storage name of a contract status; `None` for UNSPECIFIED.
fn status_to_storage(status: LiveSessionStatus) -> Option<&'static str> {
    match status {
        LiveSessionStatus::Unspecified => None,
        LiveSessionStatus::Scheduled => Some("scheduled"),
        LiveSessionStatus::Live => Some("live"),
        LiveSessionStatus::Ended => Some("ended"),
        LiveSessionStatus::Cancelled => Some("cancelled"),
    }
}

fn live_lot(listing: &ListingRecord, thumbnail_url: Option<&String>) -> LiveLot {
    let money = |amount: &str| Money {
        currency: listing.currency.clone(),
        amount: amount.to_owned(),
    };
    let starting_price = match listing.parameters.format_parameters.as_ref() {
        Some(FormatParameters::LiveLot(live)) => live
            .starting_price
            .as_ref()
            .and_then(|price| money::parse(price).ok())
            .map(|price| price.to_proto()),
        Some(
            FormatParameters::English(_) | FormatParameters::Dutch(_) | FormatParameters::Sealed(_),
        )
        | None => None,
    };
    let status = status_from_name(&listing.status);
    LiveLot {
        lot_number: u32::try_from(listing.lot_number).unwrap_or(0),
        listing_id: listing.id.to_string(),
        item_id: listing.item_id.to_string(),
        title: listing.title.clone(),
        thumbnail_url: thumbnail_url.cloned().unwrap_or_default(),
        status: status as i32,
        starting_price,
        // The sold price is the listing's final price (from bidding's
        // AuctionClosed); a hammer becomes final when the next lot opens.
        hammer_price: (status == AuctionStatus::Closed).then(|| money(&listing.current_price)),
    }
}

/// The status and current lot of a session whose lots are `(lot number,
/// listing status)`: pure, so the rules are tested on their own.
pub fn derive_status(lots: &[(i64, String)]) -> (&'static str, i64) {
    if lots.is_empty() || lots.iter().any(|(_, status)| status == "pending") {
        return ("pending", 0);
    }
    let final_status = |status: &str| matches!(status, "closed" | "unsold" | "cancelled");
    let open = lots
        .iter()
        .filter(|(_, status)| matches!(status.as_str(), "open" | "extended"))
        .map(|(number, _)| *number)
        .max();
    let last_closed = lots
        .iter()
        .filter(|(_, status)| matches!(status.as_str(), "closed" | "unsold"))
        .map(|(number, _)| *number)
        .max();
    let current = open.or(last_closed).unwrap_or(0);
    let status = if lots.iter().all(|(_, status)| status == "cancelled") {
        "cancelled"
    } else if lots.iter().all(|(_, status)| final_status(status)) {
        "ended"
    } else if open.is_some() || last_closed.is_some() {
        "live"
    } else {
        "scheduled"
    };
    (status, current)
}

/// Recomputes a session's status and current lot from its lots (inside the
/// transaction that changed a lot). A failed session stays failed.
pub async fn refresh_status(
    transaction: &mut Transaction,
    session_id: Uuid,
    now_ms: i64,
) -> Result<(), StoreError> {
    let rows = transaction
        .fetch_all(
            "SELECT lot_number, status FROM listings WHERE live_session_id = $1",
            &[Arg::Uuid(session_id)],
        )
        .await?;
    let mut lots = Vec::with_capacity(rows.len());
    for row in &rows {
        lots.push((row.int("lot_number")?, row.text("status")?));
    }
    let (status, current) = derive_status(&lots);
    transaction
        .execute(
            "UPDATE live_sessions SET status = $1, current_lot_number = $2, updated_at_ms = $3 \
             WHERE id = $4 AND status <> 'failed' AND (status <> $1 OR current_lot_number <> $2)",
            &[
                Arg::Text(status.to_owned()),
                Arg::Int(current),
                Arg::Int(now_ms),
                Arg::Uuid(session_id),
            ],
        )
        .await?;
    Ok(())
}

/// The auctioneer of a session, if it exists.
pub async fn auctioneer_of(
    transaction: &mut Transaction,
    session_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    transaction
        .fetch_optional(
            "SELECT auctioneer_id FROM live_sessions WHERE id = $1",
            &[Arg::Uuid(session_id)],
        )
        .await?
        .map(|row| row.uuid("auctioneer_id"))
        .transpose()
}

/// Marks a session failed (a lot was refused by bidding): never shown, no
/// notice.
pub async fn mark_failed(database: &Database, session_id: Uuid) -> Result<(), StoreError> {
    sql::execute(
        database,
        "UPDATE live_sessions SET status = 'failed', updated_at_ms = $1 WHERE id = $2",
        &[Arg::Int(auction_platform::now_ms()), Arg::Uuid(session_id)],
    )
    .await?;
    Ok(())
}

/// A session request that passed every rule that needs no storage.
struct ValidSession {
    start_at_ms: i64,
    /// Per lot in running order: the item and the checked parameters.
    lots: Vec<(Uuid, ValidLot)>,
}

fn invalid(field: &'static str, message: &str) -> CatalogError {
    CatalogError::Invalid {
        field,
        message: message.to_owned(),
    }
}

fn parameters_rule(field: String, message: &str) -> CatalogError {
    CatalogError::Rule(RuleError {
        kind: RuleKind::Parameters,
        field,
        message: message.to_owned(),
    })
}

/// Checks a CreateLiveSession request at `now_ms`.
fn validate(request: &CreateLiveSessionRequest, now_ms: i64) -> Result<ValidSession, CatalogError> {
    let title_chars = request.title.trim().chars().count();
    if title_chars == 0 || request.title.chars().count() > MAX_TITLE_CHARS {
        return Err(invalid("title", "must be 1-120 characters"));
    }
    if request.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid("description", "must be at most 5000 characters"));
    }
    let currency = request.currency.as_str();
    if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return Err(invalid("currency", "must be an ISO 4217 code such as USD"));
    }
    let start_at_ms =
        rules::session_start_rules(request.start_time.as_ref().map(ms_from_timestamp), now_ms)?;
    if request.lots.is_empty() {
        return Err(parameters_rule(
            "lots".to_owned(),
            "a session needs at least one lot",
        ));
    }
    if request.lots.len() > rules::MAX_LOTS_PER_SESSION {
        return Err(parameters_rule(
            "lots".to_owned(),
            "a session holds at most 500 lots",
        ));
    }
    let mut seen = HashSet::with_capacity(request.lots.len());
    let mut lots = Vec::with_capacity(request.lots.len());
    for (index, lot) in request.lots.iter().enumerate() {
        let item_id = parse_id("lots.item_id", &lot.item_id)?;
        if !seen.insert(item_id) {
            return Err(parameters_rule(
                format!("lots[{index}].item_id"),
                "an item may be offered once per session",
            ));
        }
        let valid = rules::live_lot_rules(
            &format!("lots[{index}].parameters"),
            lot.parameters.as_ref(),
            currency,
        )?;
        lots.push((item_id, valid));
    }
    Ok(ValidSession { start_at_ms, lots })
}

/// The URL of the 480 px thumbnail of each item's primary media, if any.
fn primary_thumbnails(media: &HashMap<Uuid, Vec<Media>>) -> HashMap<Uuid, String> {
    media
        .iter()
        .filter_map(|(item_id, media)| {
            let url = media
                .iter()
                .min_by_key(|media| media.position)?
                .thumbnails
                .iter()
                .find(|thumbnail| thumbnail.width.max(thumbnail.height) == 480)?
                .url
                .clone();
            Some((*item_id, url))
        })
        .collect()
}

/// The lots of `session_ids`, by session, in running order.
async fn lots_of(
    database: &Database,
    session_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<ListingRecord>>, CatalogError> {
    let mut by_session: HashMap<Uuid, Vec<ListingRecord>> = HashMap::new();
    if session_ids.is_empty() {
        return Ok(by_session);
    }
    let placeholders: Vec<String> = (1..=session_ids.len()).map(|n| format!("${n}")).collect();
    let rows = sql::fetch_all(
        database,
        &format!(
            "SELECT {} FROM listings l WHERE l.live_session_id IN ({}) ORDER BY l.lot_number",
            listing_columns("l"),
            placeholders.join(", ")
        ),
        &session_ids
            .iter()
            .map(|id| Arg::Uuid(*id))
            .collect::<Vec<_>>(),
    )
    .await?;
    for row in &rows {
        let lot = ListingRecord::from_row(row)?;
        if let Some(session_id) = lot.live_session_id {
            by_session.entry(session_id).or_default().push(lot);
        }
    }
    Ok(by_session)
}

async fn load_session(
    database: &Database,
    session_id: Uuid,
) -> Result<Option<SessionRecord>, CatalogError> {
    Ok(sql::fetch_all(
        database,
        &format!("SELECT {SESSION_COLUMNS} FROM live_sessions WHERE id = $1"),
        &[Arg::Uuid(session_id)],
    )
    .await?
    .first()
    .map(SessionRecord::from_row)
    .transpose()?)
}

impl Inner {
    /// Sessions as the contract shows them, lots and thumbnails included.
    async fn session_views(
        &self,
        sessions: &[SessionRecord],
    ) -> Result<Vec<LiveSession>, CatalogError> {
        let ids: Vec<Uuid> = sessions.iter().map(|session| session.id).collect();
        let lots = lots_of(&self.database, &ids).await?;
        let item_ids: Vec<Uuid> = lots.values().flatten().map(|lot| lot.item_id).collect();
        let thumbnails = primary_thumbnails(&self.media_of(&item_ids).await?);
        Ok(sessions
            .iter()
            .map(|session| {
                session.to_proto(
                    lots.get(&session.id).map_or(&[][..], Vec::as_slice),
                    &thumbnails,
                )
            })
            .collect())
    }

    /// `CreateLiveSession`: validates, records the session with pending
    /// lots, schedules each lot in bidding, records the outcome. Exactly
    /// once per request id.
    pub async fn create_live_session(
        &self,
        request: Request<CreateLiveSessionRequest>,
    ) -> Result<Response<CreateLiveSessionResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_role(Role::Auctioneer)?;
        caller.require_scope(auth::Scope::Sell)?;
        let authorization = request.metadata().get("authorization").cloned();
        let request = request.into_inner();
        let now_ms = auction_platform::now_ms();
        let valid = validate(&request, now_ms)?;
        let key = IdempotencyKey::new(
            &caller,
            "CreateLiveSession",
            &request.request_id,
            idempotency::fingerprint(
                &CreateLiveSessionRequest {
                    request_id: String::new(),
                    ..request.clone()
                }
                .encode_to_vec(),
                &[],
            ),
        )?;
        let new_id = Uuid::now_v7();
        // Asked before the transaction: no network wait holds a lock.
        let handle = self.seller_handle(caller.user_id).await;
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        let session_id = match key
            .claim(&mut transaction, Some(&new_id.to_string()), now_ms)
            .await?
        {
            Prior::Replay(bytes) => return Ok(idempotency::replayed(idempotency::decode(&bytes)?)),
            Prior::InFlight(resource) => {
                // A retry of a call that did not finish: resume it.
                let id = resource
                    .as_deref()
                    .and_then(|text| Uuid::parse_str(text).ok())
                    .ok_or(CatalogError::Store(StoreError::Corrupt(
                        "in-flight session id",
                    )))?;
                transaction.commit().await.map_err(CatalogError::from)?;
                id
            }
            Prior::Fresh => {
                record_session(
                    &mut transaction,
                    &caller,
                    new_id,
                    &handle,
                    &request,
                    &valid,
                    now_ms,
                )
                .await?;
                transaction.commit().await.map_err(CatalogError::from)?;
                new_id
            }
        };
        // Step 3: each pending lot, in running order.
        let lots = lots_of(&self.database, &[session_id])
            .await?
            .remove(&session_id)
            .unwrap_or_default();
        for lot in lots.iter().filter(|lot| lot.status == "pending") {
            match self.schedule(lot).await {
                Ok(state) => {
                    let mut transaction = Transaction::begin_write(&self.database)
                        .await
                        .map_err(CatalogError::from)?;
                    mirror_state(&mut transaction, &state, auction_platform::now_ms()).await?;
                    transaction.commit().await.map_err(CatalogError::from)?;
                }
                Err(status) if is_definite(status.code()) => {
                    tracing::warn!(live_session_id = %session_id, auction_id = %lot.id, code = ?status.code(), message = status.message(), "bidding refused a live lot; undoing the session");
                    self.undo_session(session_id, authorization.as_ref())
                        .await?;
                    let mut transaction = Transaction::begin_write(&self.database)
                        .await
                        .map_err(CatalogError::from)?;
                    key.forget(&mut transaction).await?;
                    transaction.commit().await.map_err(CatalogError::from)?;
                    return Err(status);
                }
                Err(status) => return Err(status),
            }
        }
        // Step 4.
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        refresh_status(&mut transaction, session_id, auction_platform::now_ms())
            .await
            .map_err(CatalogError::from)?;
        transaction.commit().await.map_err(CatalogError::from)?;
        let session = load_session(&self.database, session_id)
            .await?
            .ok_or(CatalogError::Store(StoreError::Corrupt("created session")))?;
        let response = CreateLiveSessionResponse {
            session: self.session_views(&[session]).await?.pop(),
        };
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        key.complete(&mut transaction, &response).await?;
        transaction.commit().await.map_err(CatalogError::from)?;
        *self.active_counts.lock().await = None;
        // Its notice may be due at once (a start less than 15 minutes away).
        self.notices.notify_one();
        tracing::info!(live_session_id = %session_id, user_id = %caller.user_id, lots = request.lots.len(), "live session scheduled");
        Ok(Response::new(response))
    }

    /// Undoes a session bidding refused a lot of: lots already scheduled
    /// are cancelled in bidding with the caller's own token (best effort:
    /// logged when it fails), pending lots are removed, the session is
    /// marked failed.
    async fn undo_session(
        &self,
        session_id: Uuid,
        authorization: Option<&MetadataValue<Ascii>>,
    ) -> Result<(), CatalogError> {
        let lots = lots_of(&self.database, &[session_id])
            .await?
            .remove(&session_id)
            .unwrap_or_default();
        for lot in lots
            .iter()
            .filter(|lot| matches!(lot.status.as_str(), "scheduled" | "open"))
        {
            let mut outgoing = Request::new(CancelAuctionRequest {
                request_id: format!("undo:{}", lot.id),
                auction_id: lot.id.to_string(),
                reason: "the live session could not be created".to_owned(),
            });
            if let Some(authorization) = authorization {
                outgoing
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
            }
            match self.bidding()?.cancel_auction(outgoing).await {
                Ok(response) => {
                    if let Some(state) = response.into_inner().state {
                        let mut transaction = Transaction::begin_write(&self.database).await?;
                        mirror_state(&mut transaction, &state, auction_platform::now_ms()).await?;
                        transaction.commit().await?;
                    }
                }
                Err(status) => {
                    tracing::error!(live_session_id = %session_id, auction_id = %lot.id, code = ?status.code(), message = status.message(), "a lot of a failed live session could not be cancelled in bidding");
                }
            }
        }
        let mut transaction = Transaction::begin_write(&self.database).await?;
        transaction
            .execute(
                "DELETE FROM listings WHERE live_session_id = $1 AND status = 'pending'",
                &[Arg::Uuid(session_id)],
            )
            .await?;
        transaction
            .execute(
                "UPDATE live_sessions SET status = 'failed', updated_at_ms = $1 WHERE id = $2",
                &[Arg::Int(auction_platform::now_ms()), Arg::Uuid(session_id)],
            )
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// `GetLiveSession`: anyone.
    pub async fn get_live_session(
        &self,
        request: Request<GetLiveSessionRequest>,
    ) -> Result<Response<GetLiveSessionResponse>, Status> {
        let session_id = parse_id("session_id", &request.get_ref().session_id)?;
        let session = load_session(&self.database, session_id)
            .await?
            .filter(SessionRecord::visible)
            .ok_or_else(|| CatalogError::SessionNotFound(session_id.to_string()))?;
        Ok(Response::new(GetLiveSessionResponse {
            session: self.session_views(&[session]).await?.pop(),
        }))
    }

    /// `ListLiveSessions`: soonest start first, lots included; anyone.
    pub async fn list_live_sessions(
        &self,
        request: Request<ListLiveSessionsRequest>,
    ) -> Result<Response<ListLiveSessionsResponse>, Status> {
        let request = request.into_inner();
        let mut statuses: Vec<&'static str> = Vec::new();
        for status in &request.statuses {
            match LiveSessionStatus::try_from(*status) {
                Ok(status) => statuses.extend(status_to_storage(status)),
                Err(_) => {
                    return Err(CatalogError::Invalid {
                        field: "statuses",
                        message: format!("{status} is not a live session status"),
                    }
                    .into());
                }
            }
        }
        if statuses.is_empty() {
            statuses = vec!["scheduled", "live"];
        }
        statuses.sort_unstable();
        statuses.dedup();
        let auctioneer = match request.auctioneer_id.as_str() {
            "" => None,
            text => Some(parse_id("auctioneer_id", text)?),
        };
        let start_after_ms = request.start_after_time.as_ref().map(ms_from_timestamp);
        let page_size = pagination::page_size(request.page_size, 20, 100);
        let binding = format!(
            "live_sessions:{}:{}:{}",
            statuses.join(","),
            auctioneer.map(|id| id.to_string()).unwrap_or_default(),
            start_after_ms.map(|ms| ms.to_string()).unwrap_or_default()
        );
        let after = pagination::decode(&request.page_token, &binding)?;
        let mut args = Vec::new();
        let mut placeholders = Vec::new();
        for status in &statuses {
            args.push(Arg::Text((*status).to_owned()));
            placeholders.push(format!("${}", args.len()));
        }
        let mut query = format!(
            "SELECT {SESSION_COLUMNS} FROM live_sessions WHERE status IN ({})",
            placeholders.join(", ")
        );
        if let Some(auctioneer) = auctioneer {
            args.push(Arg::Uuid(auctioneer));
            query.push_str(&format!(" AND auctioneer_id = ${}", args.len()));
        }
        if let Some(start_after_ms) = start_after_ms {
            args.push(Arg::Int(start_after_ms));
            query.push_str(&format!(" AND start_at_ms >= ${}", args.len()));
        }
        if let Some(cursor) = &after {
            let (start, id) = pagination::time_and_id(cursor)?;
            args.push(Arg::Int(start));
            let start_at = args.len();
            args.push(Arg::Uuid(id));
            query.push_str(&format!(
                " AND (start_at_ms > ${start_at} OR (start_at_ms = ${start_at} AND id > ${}))",
                args.len()
            ));
        }
        query.push_str(&format!(
            " ORDER BY start_at_ms, id LIMIT {}",
            page_size + 1
        ));
        let rows = sql::fetch_all(&self.database, &query, &args)
            .await
            .map_err(CatalogError::from)?;
        let mut sessions = rows
            .iter()
            .map(SessionRecord::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(CatalogError::from)?;
        let next_page_token = if sessions.len() > page_size {
            sessions.truncate(page_size);
            sessions
                .last()
                .map(|last| {
                    pagination::encode(
                        &binding,
                        &[last.start_at_ms.to_string(), last.id.to_string()],
                    )
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListLiveSessionsResponse {
            sessions: self.session_views(&sessions).await?,
            next_page_token,
        }))
    }

    /// Publishes every "starting" notice due at `now_ms` (each in the
    /// transaction that marks it sent) and returns when the next is due.
    pub async fn publish_due_notices(&self, now_ms: i64) -> Result<Option<i64>, CatalogError> {
        let due = sql::fetch_all(
            &self.database,
            &format!(
                "SELECT id FROM live_sessions WHERE notice_sent_at_ms IS NULL AND notice_due_at_ms <= $1 \
                 AND status <> 'pending' ORDER BY notice_due_at_ms LIMIT {NOTICES_PER_PASS}"
            ),
            &[Arg::Int(now_ms)],
        )
        .await?;
        let mut staged = false;
        for row in &due {
            staged |= self.publish_notice(row.uuid("id")?, now_ms).await?;
        }
        if staged {
            self.relay.wake();
        }
        let next = sql::fetch_all(
            &self.database,
            "SELECT MIN(notice_due_at_ms) AS due FROM live_sessions \
             WHERE notice_sent_at_ms IS NULL AND status <> 'pending'",
            &[],
        )
        .await?;
        Ok(match next.first() {
            Some(row) => row.opt_int("due")?,
            None => None,
        })
    }

    /// Marks one session's notice sent and, for a session still scheduled
    /// and not yet started, stages the event to its lots' watchers and
    /// absentee bidders. Whoever marks it first publishes it (several
    /// catalog processes may share the database).
    async fn publish_notice(&self, session_id: Uuid, now_ms: i64) -> Result<bool, CatalogError> {
        let mut transaction = Transaction::begin_write(&self.database).await?;
        let claimed = transaction
            .execute(
                "UPDATE live_sessions SET notice_sent_at_ms = $1 WHERE id = $2 AND notice_sent_at_ms IS NULL",
                &[Arg::Int(now_ms), Arg::Uuid(session_id)],
            )
            .await?;
        if claimed != 1 {
            return Ok(false);
        }
        let session = transaction
            .fetch_optional(
                &format!("SELECT {SESSION_COLUMNS} FROM live_sessions WHERE id = $1"),
                &[Arg::Uuid(session_id)],
            )
            .await?
            .map(|row| SessionRecord::from_row(&row))
            .transpose()?
            .ok_or(CatalogError::Store(StoreError::Corrupt("live session")))?;
        if session.status != "scheduled" || now_ms >= session.start_at_ms {
            // Failed, cancelled or already started: nobody is told it
            // starts soon.
            transaction.commit().await?;
            tracing::info!(live_session_id = %session_id, status = %session.status, "live session starting notice skipped");
            return Ok(false);
        }
        let rows = transaction
            .fetch_all(
                &format!(
                    "SELECT w.user_id AS user_id FROM watchlist w JOIN listings l ON l.id = w.listing_id \
                     WHERE l.live_session_id = $1 \
                     UNION SELECT a.user_id AS user_id FROM listing_activity a JOIN listings l ON l.id = a.listing_id \
                     WHERE l.live_session_id = $1 AND a.kind IN ('absentee', 'bid') AND a.user_id IS NOT NULL \
                     ORDER BY user_id LIMIT {}",
                    MAX_NOTICE_RECIPIENTS + 1
                ),
                &[Arg::Uuid(session_id)],
            )
            .await?;
        let mut recipient_ids = Vec::with_capacity(rows.len());
        for row in &rows {
            recipient_ids.push(row.uuid("user_id")?.to_string());
        }
        if recipient_ids.len() > MAX_NOTICE_RECIPIENTS {
            tracing::warn!(live_session_id = %session_id, limit = MAX_NOTICE_RECIPIENTS, "live session notice truncated to its recipient limit");
            recipient_ids.truncate(MAX_NOTICE_RECIPIENTS);
        }
        let recipients = recipient_ids.len();
        let event = BusCatalogEvent {
            event_time: Some(timestamp_from_ms(now_ms)),
            kind: Some(bus_catalog_event::Kind::LiveSessionStarting(
                BusLiveSessionStarting {
                    live_session_id: session_id.to_string(),
                    title: session.title.clone(),
                    start_time: Some(timestamp_from_ms(session.start_at_ms)),
                    recipient_ids,
                },
            )),
        };
        transaction
            .stage(&[Envelope::new(
                "catalog",
                TOPIC_CATALOG,
                session_id.to_string(),
                now_ms,
                &event,
            )])
            .await?;
        transaction.commit().await?;
        tracing::info!(live_session_id = %session_id, recipients, "live session starting notice staged");
        Ok(true)
    }
}

/// Records a fresh session and its pending lots (step 2), checking every
/// item: it exists, the caller owns it (admins: anyone's), it has no
/// active listing.
async fn record_session(
    transaction: &mut Transaction,
    caller: &Caller,
    session_id: Uuid,
    auctioneer_handle: &str,
    request: &CreateLiveSessionRequest,
    valid: &ValidSession,
    now_ms: i64,
) -> Result<(), CatalogError> {
    let lot_count = i64::try_from(valid.lots.len()).unwrap_or(i64::MAX);
    transaction
        .execute(
            "INSERT INTO live_sessions (id, auctioneer_id, auctioneer_handle, title, description, currency, \
             start_at_ms, status, lot_count, current_lot_number, notice_due_at_ms, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, 0, $9, $10, $10)",
            &[
                Arg::Uuid(session_id),
                Arg::Uuid(caller.user_id),
                Arg::Text(auctioneer_handle.to_owned()),
                Arg::Text(request.title.clone()),
                Arg::Text(request.description.clone()),
                Arg::Text(request.currency.clone()),
                Arg::Int(valid.start_at_ms),
                Arg::Int(lot_count),
                Arg::Int((valid.start_at_ms - NOTICE_LEAD_MS).max(now_ms)),
                Arg::Int(now_ms),
            ],
        )
        .await?;
    for (index, ((item_id, lot), spec)) in valid.lots.iter().zip(&request.lots).enumerate() {
        let item = items::load(transaction, *item_id)
            .await?
            .ok_or_else(|| CatalogError::ItemNotFound(item_id.to_string()))?;
        if !(caller.is_user(item.seller_id) || caller.is_admin()) {
            return Err(CatalogError::NotOwner);
        }
        if let Some((active, _)) = items::active_listing(transaction, *item_id).await? {
            return Err(CatalogError::ItemHasActiveListing(active.to_string()));
        }
        let category_path = items::category_path(transaction, item.category_id)
            .await?
            .unwrap_or_default();
        let listing = ListingRecord {
            id: Uuid::now_v7(),
            item_id: *item_id,
            seller_id: item.seller_id,
            seller_handle: if item.seller_id == caller.user_id {
                auctioneer_handle.to_owned()
            } else {
                String::new()
            },
            title: item.title.clone(),
            description: item.description.clone(),
            category_id: item.category_id,
            category_path,
            condition: item.condition.clone(),
            format: format_name(AuctionFormat::Live).to_owned(),
            parameters: AuctionParameters {
                format: AuctionFormat::Live as i32,
                format_parameters: spec.parameters.clone().map(FormatParameters::LiveLot),
            },
            currency: request.currency.clone(),
            current_price: lot.starting_price.canonical(),
            buy_it_now_price: None,
            bid_count: 0,
            watcher_count: 0,
            reserve_state: if lot.has_reserve { "not_met" } else { "none" }.to_owned(),
            status: "pending".to_owned(),
            start_at_ms: valid.start_at_ms,
            end_at_ms: None,
            // Live lots sort by their session's start ("ending soonest").
            current_end_at_ms: valid.start_at_ms,
            live_session_id: Some(session_id),
            lot_number: i64::try_from(index + 1).unwrap_or(i64::MAX),
            units_remaining: 0,
            last_sequence: 0,
            cancel_reason: String::new(),
            version: 1,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        };
        match listings::insert(
            transaction,
            &listing,
            &item.attributes_text(),
            lot.starting_price.fixed_point(),
        )
        .await
        {
            Ok(()) => {}
            // Another listing of the item won the race to be active.
            Err(error) if error.is_unique_violation() => {
                return Err(CatalogError::ItemHasActiveListing(item_id.to_string()));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Publishes the "live session starting" notices as they fall due: at
/// start (notices that fell due while the process was down), whenever a
/// session is created, and at the next due time (at most a minute apart).
pub async fn run_notices(inner: Arc<Inner>, shutdown: Shutdown) {
    loop {
        let now_ms = auction_platform::now_ms();
        let wait_ms = match inner.publish_due_notices(now_ms).await {
            Ok(Some(due_ms)) => (due_ms - now_ms).clamp(0, NOTICE_IDLE_MS),
            Ok(None) => NOTICE_IDLE_MS,
            Err(error) => {
                tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "publishing live session notices failed");
                i64::try_from(NOTICE_RETRY_MS).unwrap_or(NOTICE_IDLE_MS)
            }
        };
        let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.notices.notified() => {}
            () = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lots(statuses: &[&str]) -> Vec<(i64, String)> {
        statuses
            .iter()
            .enumerate()
            .map(|(index, status)| (i64::try_from(index + 1).unwrap(), (*status).to_owned()))
            .collect()
    }

    // Proves a session's status follows its lots as the contract defines it.
    #[test]
    fn status_follows_the_lots() {
        assert_eq!(
            derive_status(&lots(&["pending", "scheduled"])),
            ("pending", 0)
        );
        assert_eq!(
            derive_status(&lots(&["scheduled", "scheduled"])),
            ("scheduled", 0)
        );
        assert_eq!(derive_status(&lots(&["open", "scheduled"])), ("live", 1));
        assert_eq!(
            derive_status(&lots(&["closed", "open", "scheduled"])),
            ("live", 2)
        );
        assert_eq!(
            derive_status(&lots(&["closed", "unsold", "scheduled"])),
            ("live", 2)
        );
        assert_eq!(
            derive_status(&lots(&["closed", "unsold", "cancelled"])),
            ("ended", 2)
        );
        assert_eq!(
            derive_status(&lots(&["cancelled", "cancelled"])),
            ("cancelled", 0)
        );
        // A cancelled lot alone does not start the session.
        assert_eq!(
            derive_status(&lots(&["cancelled", "scheduled"])),
            ("scheduled", 0)
        );
        assert_eq!(derive_status(&[]), ("pending", 0));
    }

    fn request(lot_count: usize) -> CreateLiveSessionRequest {
        CreateLiveSessionRequest {
            request_id: "r".to_owned(),
            title: "Evening sale".to_owned(),
            description: String::new(),
            start_time: Some(timestamp_from_ms(NOW_MS + 3_600_000)),
            currency: "USD".to_owned(),
            lots: (0..lot_count)
                .map(|_| auction_proto::v1::LiveLotSpec {
                    item_id: Uuid::now_v7().to_string(),
                    parameters: Some(auction_proto::v1::LiveLotParameters {
                        starting_price: Some(Money {
                            currency: "USD".to_owned(),
                            amount: "10".to_owned(),
                        }),
                        ..auction_proto::v1::LiveLotParameters::default()
                    }),
                })
                .collect(),
        }
    }

    const NOW_MS: i64 = 1_800_000_000_000;

    fn reason(error: CatalogError) -> String {
        use auction_platform::ServiceError as _;
        error.reason().to_owned()
    }

    // Proves each invalid session is refused with its own reason.
    #[test]
    fn invalid_sessions_are_refused_with_a_reason() {
        assert!(validate(&request(3), NOW_MS).is_ok());
        let mut empty = request(0);
        assert_eq!(
            reason(validate(&empty, NOW_MS).err().unwrap()),
            "PARAMETERS_INVALID"
        );
        empty = request(1);
        empty.start_time = Some(timestamp_from_ms(NOW_MS + 60_000));
        assert_eq!(
            reason(validate(&empty, NOW_MS).err().unwrap()),
            "SCHEDULE_INVALID"
        );
        let mut euro = request(1);
        euro.currency = "EUR".to_owned();
        assert_eq!(
            reason(validate(&euro, NOW_MS).err().unwrap()),
            "CURRENCY_MISMATCH"
        );
        let mut twice = request(2);
        let first = twice.lots[0].item_id.clone();
        twice.lots[1].item_id = first;
        assert_eq!(
            reason(validate(&twice, NOW_MS).err().unwrap()),
            "PARAMETERS_INVALID"
        );
        let mut countdown = request(1);
        if let Some(parameters) = countdown.lots[0].parameters.as_mut() {
            parameters.lot_countdown = Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            });
        }
        assert_eq!(
            reason(validate(&countdown, NOW_MS).err().unwrap()),
            "PARAMETERS_INVALID"
        );
        let mut untitled = request(1);
        untitled.title = "  ".to_owned();
        assert_eq!(
            reason(validate(&untitled, NOW_MS).err().unwrap()),
            "VALIDATION_FAILED"
        );
    }
}

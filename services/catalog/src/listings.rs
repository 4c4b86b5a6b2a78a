//! Listings: an item offered in an auction. The listing id is the bidding
//! service's auction id; the catalog schedules, edits and cancels the
//! auction there over gRPC and keeps a browsing copy of its state.
//!
//! CreateListing is exactly-once across retries and crashes:
//!
//! 1. the request is validated against the format's rules ([`crate::rules`]);
//! 2. one transaction claims the idempotency key with a fresh listing id and
//!    inserts the listing as `pending` (a partial unique index allows one
//!    active listing per item);
//! 3. bidding's `CreateAuction` is called with a request id derived from the
//!    listing id, so any number of calls schedule one auction;
//! 4. a second transaction marks the listing with the auction's state and
//!    stores the response under the key.
//!
//! A retry of the same request finds the key in flight and resumes at step
//! 3 with the stored listing. A definite refusal by bidding removes the
//! pending listing and releases the key; a failure that may be transient
//! (bidding unreachable) leaves both for the retry, and [`Inner::resume_pending`]
//! finishes listings whose caller never came back.

use auction_platform::auth::{self, Caller, Role};
use auction_platform::bus::{ms_from_timestamp, timestamp_from_ms};
use auction_platform::peers::{Peer, ServiceCredentials};
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_proto::v1::user_service_client::UserServiceClient;
use auction_proto::v1::{
    AuctionFormat, AuctionParameters, AuctionState, AuctionStatus, CancelAuctionRequest,
    CancelListingRequest, CancelListingResponse, CreateAuctionRequest, CreateListingRequest,
    CreateListingResponse, GetAuctionStateRequest, GetListingRequest, GetListingResponse,
    GetProfileRequest, ListListingsRequest, ListListingsResponse, Listing, ListingSummary,
    ReserveState, UpdateAuctionRequest, UpdateListingRequest, UpdateListingResponse,
    auction_parameters::FormatParameters,
};
use prost::Message as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::Inner;
use crate::error::CatalogError;
use crate::idempotency::{self, IdempotencyKey, Prior};
use crate::items::{self, parse_id};
use crate::money::{self, Amount};
use crate::pagination;
use crate::rules;
use crate::sql::{self, Arg, Row, Transaction};
use crate::store::StoreError;

/// The bidding client with this service's token attached.
pub type BiddingClient = BiddingServiceClient<InterceptedService<Channel, ServiceCredentials>>;

/// Storage name of a status.
pub fn status_name(status: AuctionStatus) -> &'static str {
    match status {
        AuctionStatus::Unspecified | AuctionStatus::Scheduled => "scheduled",
        AuctionStatus::Open => "open",
        AuctionStatus::Extended => "extended",
        AuctionStatus::Closed => "closed",
        AuctionStatus::Unsold => "unsold",
        AuctionStatus::Cancelled => "cancelled",
    }
}

/// Status of a storage name (`pending` shows as SCHEDULED).
pub fn status_from_name(name: &str) -> AuctionStatus {
    match name {
        "open" => AuctionStatus::Open,
        "extended" => AuctionStatus::Extended,
        "closed" => AuctionStatus::Closed,
        "unsold" => AuctionStatus::Unsold,
        "cancelled" => AuctionStatus::Cancelled,
        _ => AuctionStatus::Scheduled,
    }
}

/// Storage name of a format.
pub fn format_name(format: AuctionFormat) -> &'static str {
    match format {
        AuctionFormat::Unspecified => "unspecified",
        AuctionFormat::English => "english",
        AuctionFormat::Dutch => "dutch",
        AuctionFormat::SealedFirstPrice => "sealed_first_price",
        AuctionFormat::SealedSecondPrice => "sealed_second_price",
        AuctionFormat::Live => "live",
    }
}

/// Format of a storage name.
pub fn format_from_name(name: &str) -> AuctionFormat {
    match name {
        "english" => AuctionFormat::English,
        "dutch" => AuctionFormat::Dutch,
        "sealed_first_price" => AuctionFormat::SealedFirstPrice,
        "sealed_second_price" => AuctionFormat::SealedSecondPrice,
        "live" => AuctionFormat::Live,
        _ => AuctionFormat::Unspecified,
    }
}

/// Storage name of a reserve state.
pub fn reserve_name(state: ReserveState) -> &'static str {
    match state {
        ReserveState::Unspecified | ReserveState::NoReserve => "none",
        ReserveState::NotMet => "not_met",
        ReserveState::Met => "met",
    }
}

fn reserve_from_name(name: &str) -> ReserveState {
    match name {
        "not_met" => ReserveState::NotMet,
        "met" => ReserveState::Met,
        _ => ReserveState::NoReserve,
    }
}

/// A listing row.
#[derive(Debug, Clone, PartialEq)]
pub struct ListingRecord {
    /// Listing (= auction) id.
    pub id: Uuid,
    /// The item.
    pub item_id: Uuid,
    /// The seller.
    pub seller_id: Uuid,
    /// The seller's handle (empty until the user service shares it).
    pub seller_handle: String,
    /// Item title.
    pub title: String,
    /// Item description.
    pub description: String,
    /// Item category.
    pub category_id: Uuid,
    /// Its slug path.
    pub category_path: String,
    /// Item condition (storage name).
    pub condition: String,
    /// Format (storage name).
    pub format: String,
    /// The full parameters (reserve included).
    pub parameters: AuctionParameters,
    /// Currency of every amount.
    pub currency: String,
    /// Current price, canonical decimal.
    pub current_price: String,
    /// Buy-it-now price while available.
    pub buy_it_now_price: Option<String>,
    /// Accepted bids.
    pub bid_count: i64,
    /// Watchers.
    pub watcher_count: i64,
    /// Reserve state (storage name).
    pub reserve_state: String,
    /// Status (storage name, `pending` included).
    pub status: String,
    /// When bidding opens.
    pub start_at_ms: i64,
    /// The scheduled end.
    pub end_at_ms: Option<i64>,
    /// The current end (with extensions).
    pub current_end_at_ms: i64,
    /// Live session, if a lot.
    pub live_session_id: Option<Uuid>,
    /// Lot number, if a lot.
    pub lot_number: i64,
    /// Dutch units left.
    pub units_remaining: i64,
    /// Newest engine sequence mirrored.
    pub last_sequence: i64,
    /// Why it was cancelled.
    pub cancel_reason: String,
    /// Optimistic-concurrency version.
    pub version: i64,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
}

/// The columns [`ListingRecord::from_row`] reads, with a table alias.
pub fn listing_columns(alias: &str) -> String {
    [
        "id",
        "item_id",
        "seller_id",
        "seller_handle",
        "title",
        "description",
        "category_id",
        "category_path",
        "condition",
        "format",
        "parameters",
        "currency",
        "current_price",
        "buy_it_now_price",
        "bid_count",
        "watcher_count",
        "reserve_state",
        "status",
        "start_at_ms",
        "end_at_ms",
        "current_end_at_ms",
        "live_session_id",
        "lot_number",
        "units_remaining",
        "last_sequence",
        "cancel_reason",
        "version",
        "created_at_ms",
        "updated_at_ms",
    ]
    .iter()
    .map(|column| format!("{alias}.{column}"))
    .collect::<Vec<_>>()
    .join(", ")
}

impl ListingRecord {
    /// Reads a row selected with [`listing_columns`].
    pub fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.uuid("id")?,
            item_id: row.uuid("item_id")?,
            seller_id: row.uuid("seller_id")?,
            seller_handle: row.text("seller_handle")?,
            title: row.text("title")?,
            description: row.text("description")?,
            category_id: row.uuid("category_id")?,
            category_path: row.text("category_path")?,
            condition: row.text("condition")?,
            format: row.text("format")?,
            parameters: AuctionParameters::decode(row.bytes("parameters")?.as_slice())
                .map_err(|_| StoreError::Corrupt("listing parameters"))?,
            currency: row.text("currency")?,
            current_price: row.text("current_price")?,
            buy_it_now_price: row.opt_text("buy_it_now_price")?,
            bid_count: row.int("bid_count")?,
            watcher_count: row.int("watcher_count")?,
            reserve_state: row.text("reserve_state")?,
            status: row.text("status")?,
            start_at_ms: row.int("start_at_ms")?,
            end_at_ms: row.opt_int("end_at_ms")?,
            current_end_at_ms: row.int("current_end_at_ms")?,
            live_session_id: row.opt_uuid("live_session_id")?,
            lot_number: row.int("lot_number")?,
            units_remaining: row.int("units_remaining")?,
            last_sequence: row.int("last_sequence")?,
            cancel_reason: row.text("cancel_reason")?,
            version: row.int("version")?,
            created_at_ms: row.int("created_at_ms")?,
            updated_at_ms: row.int("updated_at_ms")?,
        })
    }

    fn money(&self, amount: &str) -> auction_proto::v1::Money {
        auction_proto::v1::Money {
            currency: self.currency.clone(),
            amount: amount.to_owned(),
        }
    }

    /// As the contract's `Listing`; the reserve only when `reveal_reserve`.
    pub fn to_listing(&self, reveal_reserve: bool) -> Listing {
        let parameters = if reveal_reserve {
            self.parameters.clone()
        } else {
            rules::without_reserve(self.parameters.clone())
        };
        Listing {
            listing_id: self.id.to_string(),
            item_id: self.item_id.to_string(),
            seller_id: self.seller_id.to_string(),
            seller_handle: self.seller_handle.clone(),
            title: self.title.clone(),
            category_id: self.category_id.to_string(),
            parameters: Some(parameters),
            currency: self.currency.clone(),
            start_time: Some(timestamp_from_ms(self.start_at_ms)),
            end_time: self.end_at_ms.map(timestamp_from_ms),
            status: status_from_name(&self.status) as i32,
            reserve_state: reserve_from_name(&self.reserve_state) as i32,
            live_session_id: self
                .live_session_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            lot_number: u32::try_from(self.lot_number).unwrap_or(0),
            version: self.version,
            create_time: Some(timestamp_from_ms(self.created_at_ms)),
            update_time: Some(timestamp_from_ms(self.updated_at_ms)),
            cancel_reason: self.cancel_reason.clone(),
        }
    }

    /// As the contract's browsing summary.
    pub fn to_summary(&self) -> ListingSummary {
        let live = format_from_name(&self.format) == AuctionFormat::Live;
        ListingSummary {
            listing_id: self.id.to_string(),
            item_id: self.item_id.to_string(),
            title: self.title.clone(),
            thumbnail_url: String::new(),
            category_id: self.category_id.to_string(),
            condition: items::condition_from_name(&self.condition) as i32,
            format: format_from_name(&self.format) as i32,
            status: status_from_name(&self.status) as i32,
            current_price: Some(self.money(&self.current_price)),
            bid_count: u32::try_from(self.bid_count).unwrap_or(0),
            start_time: Some(timestamp_from_ms(self.start_at_ms)),
            end_time: (!live).then(|| timestamp_from_ms(self.current_end_at_ms)),
            reserve_state: reserve_from_name(&self.reserve_state) as i32,
            buy_it_now_price: self
                .buy_it_now_price
                .as_deref()
                .map(|price| self.money(price)),
            seller_id: self.seller_id.to_string(),
            seller_handle: self.seller_handle.clone(),
            seller_positive_bps: 0,
            live_session_id: self
                .live_session_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            lot_number: u32::try_from(self.lot_number).unwrap_or(0),
            watcher_count: u32::try_from(self.watcher_count).unwrap_or(0),
            units_remaining: u32::try_from(self.units_remaining).unwrap_or(0),
            create_time: Some(timestamp_from_ms(self.created_at_ms)),
        }
    }
}

/// The listing `id` (any status).
pub async fn load(
    transaction: &mut Transaction,
    id: Uuid,
) -> Result<Option<ListingRecord>, StoreError> {
    transaction
        .fetch_optional(
            &format!(
                "SELECT {} FROM listings l WHERE l.id = $1",
                listing_columns("l")
            ),
            &[Arg::Uuid(id)],
        )
        .await?
        .map(|row| ListingRecord::from_row(&row))
        .transpose()
}

/// Whether `caller` sees the reserve and non-public states of a listing.
fn privileged(caller: Option<&Caller>, listing: &ListingRecord) -> bool {
    caller.is_some_and(|caller| caller.is_user(listing.seller_id) || caller.is_admin())
}

/// The category ids from the root down to the category with `path`.
async fn category_path_ids(
    transaction: &mut Transaction,
    path: &str,
) -> Result<Vec<String>, StoreError> {
    let mut prefixes = Vec::new();
    let mut end = 0;
    for (index, character) in path.char_indices() {
        if character == '/' {
            prefixes.push(&path[..index]);
        }
        end = index + character.len_utf8();
    }
    prefixes.push(&path[..end]);
    let mut ids = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        if let Some(row) = transaction
            .fetch_optional(
                "SELECT id FROM categories WHERE path = $1",
                &[Arg::Text(prefix.to_owned())],
            )
            .await?
        {
            ids.push(row.uuid("id")?.to_string());
        }
    }
    Ok(ids)
}

/// What bidding needs to schedule the auction of `listing`; the same
/// content every time for one listing, so retries are idempotent there.
/// A live lot carries its session, lot number and the session's
/// `auctioneer_id`, and no end.
fn create_auction_request(
    listing: &ListingRecord,
    category_path_ids: Vec<String>,
    auctioneer_id: Option<Uuid>,
) -> CreateAuctionRequest {
    CreateAuctionRequest {
        request_id: format!("listing:{}", listing.id),
        auction_id: listing.id.to_string(),
        item_id: listing.item_id.to_string(),
        seller_id: listing.seller_id.to_string(),
        seller_handle: listing.seller_handle.clone(),
        title: listing.title.clone(),
        category_id: listing.category_id.to_string(),
        category_path_ids,
        parameters: Some(listing.parameters.clone()),
        start_time: Some(timestamp_from_ms(listing.start_at_ms)),
        end_time: listing.end_at_ms.map(timestamp_from_ms),
        live_session_id: listing
            .live_session_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        lot_number: u32::try_from(listing.lot_number).unwrap_or(0),
        auctioneer_id: auctioneer_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// Whether a refusal by bidding is final (retrying the same request cannot
/// succeed), as opposed to a failure a retry may get past.
pub(crate) fn is_definite(code: Code) -> bool {
    match code {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::NotFound
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated => true,
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => false,
    }
}

/// Writes the bidding state of an auction into its listing (newer
/// sequences only; a pending listing becomes what bidding says).
pub async fn mirror_state(
    transaction: &mut Transaction,
    state: &AuctionState,
    now_ms: i64,
) -> Result<(), CatalogError> {
    let id = parse_id("auction_id", &state.auction_id)?;
    let status = AuctionStatus::try_from(state.status).unwrap_or(AuctionStatus::Scheduled);
    let price = state
        .current_price
        .as_ref()
        .and_then(|price| money::parse(price).ok());
    let buy_it_now = state
        .buy_it_now_price
        .as_ref()
        .and_then(|price| money::parse(price).ok())
        .map(|price| price.canonical());
    let end_ms = state.end_time.as_ref().map(ms_from_timestamp);
    let sequence = i64::try_from(state.sequence).unwrap_or(i64::MAX);
    let reserve = reserve_name(
        ReserveState::try_from(state.reserve_state).unwrap_or(ReserveState::Unspecified),
    );
    let mut statement = String::from(
        "UPDATE listings SET status = $1, bid_count = $2, reserve_state = $3, buy_it_now_price = $4, \
         last_sequence = $5, cancel_reason = $6, updated_at_ms = $7",
    );
    let mut args = vec![
        Arg::Text(status_name(status).to_owned()),
        Arg::Int(i64::from(state.bid_count)),
        Arg::Text(reserve.to_owned()),
        Arg::OptText(buy_it_now),
        Arg::Int(sequence),
        Arg::Text(state.cancel_reason.clone()),
        Arg::Int(now_ms),
    ];
    if let Some(price) = &price {
        args.push(Arg::Text(price.canonical()));
        statement.push_str(&format!(", current_price = ${}", args.len()));
        args.push(Arg::Int(price.fixed_point()));
        statement.push_str(&format!(", current_price_e4 = ${}", args.len()));
    }
    if let Some(end_ms) = end_ms {
        args.push(Arg::Int(end_ms));
        statement.push_str(&format!(", current_end_at_ms = ${}", args.len()));
    }
    args.push(Arg::Uuid(id));
    statement.push_str(&format!(" WHERE id = ${}", args.len()));
    args.push(Arg::Int(sequence));
    statement.push_str(&format!(
        " AND (status = 'pending' OR last_sequence <= ${})",
        args.len()
    ));
    transaction.execute(&statement, &args).await?;
    // A lot's change may change its session's status.
    if let Some(row) = transaction
        .fetch_optional(
            "SELECT live_session_id FROM listings WHERE id = $1",
            &[Arg::Uuid(id)],
        )
        .await?
        && let Some(session_id) = row.opt_uuid("live_session_id")?
    {
        crate::sessions::refresh_status(transaction, session_id, now_ms).await?;
    }
    Ok(())
}

impl Inner {
    /// A bidding client carrying this service's token.
    pub fn bidding(&self) -> Result<BiddingClient, CatalogError> {
        Ok(BiddingServiceClient::with_interceptor(
            self.peers.channel(Peer::Bidding)?,
            self.peers.service_credentials(),
        ))
    }

    /// `CreateListing`: validates, records a pending listing, schedules the
    /// auction in bidding, records the outcome. Exactly once per request id.
    pub async fn create_listing(
        &self,
        request: Request<CreateListingRequest>,
    ) -> Result<Response<CreateListingResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_role(Role::Seller)?;
        caller.require_scope(auth::Scope::Sell)?;
        let request = request.into_inner();
        let item_id = parse_id("item_id", &request.item_id)?;
        let now_ms = auction_platform::now_ms();
        let valid = rules::validate_listing(
            request.parameters.as_ref(),
            request.start_time.as_ref().map(ms_from_timestamp),
            request.end_time.as_ref().map(ms_from_timestamp),
            now_ms,
        )
        .map_err(CatalogError::from)?;
        let key = IdempotencyKey::new(
            &caller,
            "CreateListing",
            &request.request_id,
            idempotency::fingerprint(
                &CreateListingRequest {
                    request_id: String::new(),
                    ..request.clone()
                }
                .encode_to_vec(),
                &[],
            ),
        )?;
        let listing_id = Uuid::now_v7();
        // Asked before the transaction: no network wait holds a lock.
        let seller_handle = self.seller_handle(caller.user_id).await;
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        let listing = match key
            .claim(&mut transaction, Some(&listing_id.to_string()), now_ms)
            .await?
        {
            Prior::Replay(bytes) => return Ok(idempotency::replayed(idempotency::decode(&bytes)?)),
            Prior::InFlight(resource) => {
                // A retry of a call that did not finish: resume it.
                let id = resource
                    .as_deref()
                    .and_then(|text| Uuid::parse_str(text).ok())
                    .ok_or(CatalogError::Store(StoreError::Corrupt(
                        "in-flight listing id",
                    )))?;
                let listing = load(&mut transaction, id)
                    .await
                    .map_err(CatalogError::from)?
                    .ok_or(CatalogError::Store(StoreError::Corrupt(
                        "in-flight listing",
                    )))?;
                transaction.commit().await.map_err(CatalogError::from)?;
                listing
            }
            Prior::Fresh => {
                let item = items::load(&mut transaction, item_id)
                    .await
                    .map_err(CatalogError::from)?
                    .ok_or_else(|| CatalogError::ItemNotFound(item_id.to_string()))?;
                if !caller.is_user(item.seller_id) {
                    return Err(CatalogError::NotOwner.into());
                }
                if let Some((active, _)) = items::active_listing(&mut transaction, item_id)
                    .await
                    .map_err(CatalogError::from)?
                {
                    return Err(CatalogError::ItemHasActiveListing(active.to_string()).into());
                }
                let category_path = items::category_path(&mut transaction, item.category_id)
                    .await
                    .map_err(CatalogError::from)?
                    .unwrap_or_default();
                let listing = ListingRecord {
                    id: listing_id,
                    item_id,
                    seller_id: item.seller_id,
                    seller_handle: seller_handle.clone(),
                    title: item.title.clone(),
                    description: item.description.clone(),
                    category_id: item.category_id,
                    category_path,
                    condition: item.condition.clone(),
                    format: format_name(valid.format).to_owned(),
                    parameters: request.parameters.clone().unwrap_or_default(),
                    currency: valid.currency.clone(),
                    current_price: valid.starting_price.canonical(),
                    buy_it_now_price: valid.buy_it_now_price.as_ref().map(Amount::canonical),
                    bid_count: 0,
                    watcher_count: 0,
                    reserve_state: if valid.has_reserve { "not_met" } else { "none" }.to_owned(),
                    status: "pending".to_owned(),
                    start_at_ms: valid.start_at_ms,
                    end_at_ms: Some(valid.end_at_ms),
                    current_end_at_ms: valid.end_at_ms,
                    live_session_id: None,
                    lot_number: 0,
                    units_remaining: i64::from(valid.quantity),
                    last_sequence: 0,
                    cancel_reason: String::new(),
                    version: 1,
                    created_at_ms: now_ms,
                    updated_at_ms: now_ms,
                };
                let inserted = insert(
                    &mut transaction,
                    &listing,
                    &item.attributes_text(),
                    valid.starting_price.fixed_point(),
                )
                .await;
                match inserted {
                    Ok(()) => {}
                    // Another listing of the item won the race to be active.
                    Err(error) if error.is_unique_violation() => {
                        return Err(CatalogError::ItemHasActiveListing(item_id.to_string()).into());
                    }
                    Err(error) => return Err(CatalogError::from(error).into()),
                }
                transaction.commit().await.map_err(CatalogError::from)?;
                listing
            }
        };
        let state = match self.schedule(&listing).await {
            Ok(state) => state,
            Err(status) if is_definite(status.code()) => {
                // Bidding refused for good: free the item and the key.
                let mut transaction = Transaction::begin_write(&self.database)
                    .await
                    .map_err(CatalogError::from)?;
                transaction
                    .execute(
                        "DELETE FROM listings WHERE id = $1 AND status = 'pending'",
                        &[Arg::Uuid(listing.id)],
                    )
                    .await
                    .map_err(CatalogError::from)?;
                key.forget(&mut transaction).await?;
                transaction.commit().await.map_err(CatalogError::from)?;
                return Err(status);
            }
            Err(status) => return Err(status),
        };
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        mirror_state(&mut transaction, &state, auction_platform::now_ms()).await?;
        let stored = load(&mut transaction, listing.id)
            .await
            .map_err(CatalogError::from)?
            .ok_or(CatalogError::Store(StoreError::Corrupt(
                "scheduled listing",
            )))?;
        let response = CreateListingResponse {
            listing: Some(stored.to_listing(true)),
        };
        key.complete(&mut transaction, &response).await?;
        transaction.commit().await.map_err(CatalogError::from)?;
        // A new active listing: category counts are recounted on next read.
        *self.active_counts.lock().await = None;
        tracing::info!(auction_id = %listing.id, user_id = %caller.user_id, "listing scheduled");
        Ok(Response::new(response))
    }

    /// The seller's public handle from the user service (over gRPC, with
    /// this service's token); empty when it cannot be had within a second
    /// (the listing does not wait on the user service).
    pub(crate) async fn seller_handle(&self, user_id: Uuid) -> String {
        let Ok(channel) = self.peers.channel(Peer::User) else {
            return String::new();
        };
        let mut users =
            UserServiceClient::with_interceptor(channel, self.peers.service_credentials());
        let lookup = users.get_profile(GetProfileRequest {
            user_id: user_id.to_string(),
        });
        match tokio::time::timeout(std::time::Duration::from_secs(1), lookup).await {
            Ok(Ok(response)) => response
                .into_inner()
                .user
                .and_then(|user| user.public_profile)
                .map(|profile| profile.handle)
                .unwrap_or_default(),
            Ok(Err(status)) => {
                tracing::debug!(user_id = %user_id, code = ?status.code(), "no seller handle from the user service");
                String::new()
            }
            Err(_) => {
                tracing::warn!(user_id = %user_id, "the user service did not answer within 1 s; listing without a handle");
                String::new()
            }
        }
    }

    /// Schedules the auction of a pending listing in bidding (idempotent),
    /// adopting an auction that already exists under the listing's id.
    pub(crate) async fn schedule(&self, listing: &ListingRecord) -> Result<AuctionState, Status> {
        let mut bidding = self.bidding()?;
        let mut transaction = Transaction::begin(&self.database)
            .await
            .map_err(CatalogError::from)?;
        let path_ids = category_path_ids(&mut transaction, &listing.category_path)
            .await
            .map_err(CatalogError::from)?;
        let auctioneer_id = match listing.live_session_id {
            Some(session_id) => Some(
                crate::sessions::auctioneer_of(&mut transaction, session_id)
                    .await
                    .map_err(CatalogError::from)?
                    .ok_or(CatalogError::Store(StoreError::Corrupt(
                        "live lot without its session",
                    )))?,
            ),
            None => None,
        };
        transaction.commit().await.map_err(CatalogError::from)?;
        let created = bidding
            .create_auction(create_auction_request(listing, path_ids, auctioneer_id))
            .await;
        match created {
            Ok(response) => response
                .into_inner()
                .state
                .ok_or_else(|| Status::internal("bidding answered without a state")),
            // The auction exists under our id (created by an earlier call
            // whose content differed, e.g. an item edit in between): adopt it.
            Err(status) if status.code() == Code::AlreadyExists => bidding
                .get_auction_state(GetAuctionStateRequest {
                    auction_id: listing.id.to_string(),
                })
                .await?
                .into_inner()
                .state
                .ok_or_else(|| Status::internal("bidding answered without a state")),
            Err(status) => Err(status),
        }
    }

    /// Finishes listings left pending for longer than `older_than_ms` (their
    /// caller gave up after bidding was unreachable): schedules them, or
    /// removes them when bidding refuses for good.
    pub async fn resume_pending(&self, older_than_ms: i64) -> Result<usize, CatalogError> {
        let cutoff = auction_platform::now_ms() - older_than_ms;
        let rows = sql::fetch_all(
            &self.database,
            &format!(
                "SELECT {} FROM listings l WHERE l.status = 'pending' AND l.created_at_ms < $1 LIMIT 100",
                listing_columns("l")
            ),
            &[Arg::Int(cutoff)],
        )
        .await?;
        let mut finished = 0;
        for row in rows {
            let listing = ListingRecord::from_row(&row)?;
            match self.schedule(&listing).await {
                Ok(state) => {
                    let mut transaction = Transaction::begin_write(&self.database).await?;
                    mirror_state(&mut transaction, &state, auction_platform::now_ms()).await?;
                    transaction.commit().await?;
                    finished += 1;
                }
                Err(status) if is_definite(status.code()) => {
                    sql::execute(
                        &self.database,
                        "DELETE FROM listings WHERE id = $1 AND status = 'pending'",
                        &[Arg::Uuid(listing.id)],
                    )
                    .await?;
                    // A session missing a lot is not the one its auctioneer
                    // asked for: it is never shown.
                    if let Some(session_id) = listing.live_session_id {
                        crate::sessions::mark_failed(&self.database, session_id).await?;
                    }
                    tracing::warn!(auction_id = %listing.id, code = ?status.code(), message = status.message(), "pending listing refused by bidding; removed");
                    finished += 1;
                }
                Err(status) => {
                    tracing::debug!(auction_id = %listing.id, code = ?status.code(), "pending listing still waits for bidding");
                }
            }
        }
        Ok(finished)
    }

    /// `GetListing`: anyone; the reserve only for the seller and admins.
    pub async fn get_listing(
        &self,
        request: Request<GetListingRequest>,
    ) -> Result<Response<GetListingResponse>, Status> {
        let caller = auth::optional_caller(&request);
        let id = parse_id("listing_id", &request.get_ref().listing_id)?;
        let mut transaction = Transaction::begin(&self.database)
            .await
            .map_err(CatalogError::from)?;
        let listing = load(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?
            .filter(|listing| listing.status != "pending")
            .ok_or_else(|| CatalogError::ListingNotFound(id.to_string()))?;
        let item = items::load_any(&mut transaction, listing.item_id)
            .await
            .map_err(CatalogError::from)?;
        let active = items::active_listing(&mut transaction, listing.item_id)
            .await
            .map_err(CatalogError::from)?;
        let watching = match &caller {
            Some(caller) if !caller.is_service() => transaction
                .fetch_optional(
                    "SELECT listing_id FROM watchlist WHERE user_id = $1 AND listing_id = $2",
                    &[Arg::Uuid(caller.user_id), Arg::Uuid(id)],
                )
                .await
                .map_err(CatalogError::from)?
                .is_some(),
            Some(_) | None => false,
        };
        transaction.commit().await.map_err(CatalogError::from)?;
        Ok(Response::new(GetListingResponse {
            listing: Some(listing.to_listing(privileged(caller.as_ref(), &listing))),
            item: match item {
                Some(item) => {
                    let mut proto = item.to_proto(active.map(|(id, _)| id));
                    proto.media = self
                        .media_of(&[item.id])
                        .await?
                        .remove(&item.id)
                        .unwrap_or_default();
                    Some(proto)
                }
                None => None,
            },
            summary: Some(listing.to_summary()),
            watching,
        }))
    }

    /// `ListListings`: a seller's listings, newest first; anyone.
    pub async fn list_listings(
        &self,
        request: Request<ListListingsRequest>,
    ) -> Result<Response<ListListingsResponse>, Status> {
        let caller = if request.get_ref().seller_id.is_empty() {
            Some(auth::caller(&request)?)
        } else {
            auth::optional_caller(&request)
        };
        let request = request.into_inner();
        let seller_id = match (request.seller_id.as_str(), &caller) {
            ("", Some(caller)) => caller.user_id,
            (text, _) => parse_id("seller_id", text)?,
        };
        let mut statuses: Vec<&'static str> = Vec::new();
        for status in &request.statuses {
            match AuctionStatus::try_from(*status) {
                Ok(AuctionStatus::Unspecified) => {}
                Ok(status) => statuses.push(status_name(status)),
                Err(_) => {
                    return Err(CatalogError::Invalid {
                        field: "statuses",
                        message: format!("{status} is not an auction status"),
                    }
                    .into());
                }
            }
        }
        statuses.sort_unstable();
        statuses.dedup();
        let page_size = pagination::page_size(request.page_size, 20, 100);
        let binding = format!("listings:{seller_id}:{}", statuses.join(","));
        let after = pagination::decode(&request.page_token, &binding)?;
        let mut query = format!(
            "SELECT {} FROM listings l WHERE l.seller_id = $1 AND l.status <> 'pending'",
            listing_columns("l")
        );
        let mut args = vec![Arg::Uuid(seller_id)];
        if !statuses.is_empty() {
            let mut placeholders = Vec::new();
            for status in &statuses {
                args.push(Arg::Text((*status).to_owned()));
                placeholders.push(format!("${}", args.len()));
            }
            query.push_str(&format!(" AND l.status IN ({})", placeholders.join(", ")));
        }
        if let Some(cursor) = &after {
            let (created, id) = pagination::time_and_id(cursor)?;
            args.push(Arg::Int(created));
            let created_at = args.len();
            args.push(Arg::Uuid(id));
            query.push_str(&format!(
                " AND (l.created_at_ms < ${created_at} OR (l.created_at_ms = ${created_at} AND l.id < ${}))",
                args.len()
            ));
        }
        query.push_str(&format!(
            " ORDER BY l.created_at_ms DESC, l.id DESC LIMIT {}",
            page_size + 1
        ));
        let rows = sql::fetch_all(&self.database, &query, &args)
            .await
            .map_err(CatalogError::from)?;
        let mut listings = rows
            .iter()
            .map(ListingRecord::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(CatalogError::from)?;
        let next_page_token = if listings.len() > page_size {
            listings.truncate(page_size);
            listings
                .last()
                .map(|last| {
                    pagination::encode(
                        &binding,
                        &[last.created_at_ms.to_string(), last.id.to_string()],
                    )
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListListingsResponse {
            listings: listings
                .iter()
                .map(|listing| listing.to_listing(privileged(caller.as_ref(), listing)))
                .collect(),
            next_page_token,
        }))
    }

    /// `CancelListing`: by bidding's rules (the engine decides), acting with
    /// the caller's own credentials; idempotent through bidding's key.
    pub async fn cancel_listing(
        &self,
        request: Request<CancelListingRequest>,
    ) -> Result<Response<CancelListingResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_scope(auth::Scope::Sell)?;
        let authorization = request.metadata().get("authorization").cloned();
        let request = request.into_inner();
        idempotency::check_request_id(&request.request_id)?;
        let id = parse_id("listing_id", &request.listing_id)?;
        let length = request.reason.chars().count();
        if !(1..=500).contains(&length) {
            return Err(CatalogError::Invalid {
                field: "reason",
                message: "must be 1-500 characters".to_owned(),
            }
            .into());
        }
        let mut transaction = Transaction::begin(&self.database)
            .await
            .map_err(CatalogError::from)?;
        let listing = load(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?
            .filter(|listing| listing.status != "pending")
            .ok_or_else(|| CatalogError::ListingNotFound(id.to_string()))?;
        transaction.commit().await.map_err(CatalogError::from)?;
        if !(caller.is_user(listing.seller_id) || caller.is_admin()) {
            return Err(CatalogError::NotOwner.into());
        }
        // The caller's own token: bidding applies the seller's or the
        // admin's cancellation rights, and keys the retry by the caller.
        let mut outgoing = Request::new(CancelAuctionRequest {
            request_id: request.request_id.clone(),
            auction_id: id.to_string(),
            reason: request.reason.clone(),
        });
        if let Some(authorization) = authorization {
            outgoing
                .metadata_mut()
                .insert("authorization", authorization);
        }
        let state = self
            .bidding()?
            .cancel_auction(outgoing)
            .await?
            .into_inner()
            .state
            .ok_or_else(|| Status::internal("bidding answered without a state"))?;
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        mirror_state(&mut transaction, &state, auction_platform::now_ms()).await?;
        transaction
            .execute(
                "UPDATE listings SET version = version + 1, \
                 cancel_reason = CASE WHEN cancel_reason = '' THEN $1 ELSE cancel_reason END WHERE id = $2",
                &[Arg::Text(request.reason.clone()), Arg::Uuid(id)],
            )
            .await
            .map_err(CatalogError::from)?;
        let stored = load(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::ListingNotFound(id.to_string()))?;
        transaction.commit().await.map_err(CatalogError::from)?;
        *self.active_counts.lock().await = None;
        tracing::info!(auction_id = %id, user_id = %caller.user_id, "listing cancelled");
        Ok(Response::new(CancelListingResponse {
            listing: Some(stored.to_listing(true)),
        }))
    }

    /// `UpdateListing`: parameters and schedule of a SCHEDULED listing
    /// before its start, same format; checked here, applied by bidding's
    /// `UpdateAuction`, then recorded.
    pub async fn update_listing(
        &self,
        request: Request<UpdateListingRequest>,
    ) -> Result<Response<UpdateListingResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_scope(auth::Scope::Sell)?;
        let request = request.into_inner();
        let id = parse_id("listing_id", &request.listing_id)?;
        let paths: Vec<String> = request
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(CatalogError::Invalid {
                field: "update_mask",
                message: "name at least one field to update".to_owned(),
            }
            .into());
        }
        let update = request.listing.clone().unwrap_or_default();
        let key = IdempotencyKey::new(
            &caller,
            "UpdateListing",
            &request.request_id,
            idempotency::fingerprint(
                &UpdateListingRequest {
                    request_id: String::new(),
                    ..request.clone()
                }
                .encode_to_vec(),
                &[],
            ),
        )?;
        let now_ms = auction_platform::now_ms();
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        match key
            .claim(&mut transaction, Some(&id.to_string()), now_ms)
            .await?
        {
            Prior::Replay(bytes) => return Ok(idempotency::replayed(idempotency::decode(&bytes)?)),
            // A retry of a call that did not finish does it again: bidding's
            // key (derived from ours) makes that safe.
            Prior::InFlight(_) | Prior::Fresh => {}
        }
        let listing = load(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?
            .filter(|listing| listing.status != "pending")
            .ok_or_else(|| CatalogError::ListingNotFound(id.to_string()))?;
        if !(caller.is_user(listing.seller_id) || caller.is_admin()) {
            return Err(CatalogError::NotOwner.into());
        }
        if request.expected_version != 0 && request.expected_version != listing.version {
            return Err(CatalogError::VersionConflict {
                expected: request.expected_version,
                current: listing.version,
            }
            .into());
        }
        if listing.status != "scheduled" || now_ms >= listing.start_at_ms {
            return Err(CatalogError::NotEditable(format!(
                "listing {id} is {} and can no longer be edited",
                status_from_name(&listing.status).as_str_name()
            ))
            .into());
        }
        let mut parameters = listing.parameters.clone();
        let mut start_ms = listing.start_at_ms;
        let mut end_ms = listing.end_at_ms;
        for path in &paths {
            match path.as_str() {
                "parameters" => {
                    let new = update
                        .parameters
                        .clone()
                        .ok_or_else(|| CatalogError::Invalid {
                            field: "listing.parameters",
                            message: "is required when named in update_mask".to_owned(),
                        })?;
                    if new.format != parameters.format {
                        return Err(CatalogError::Rule(rules::RuleError {
                            kind: rules::RuleKind::Parameters,
                            field: "listing.parameters.format".to_owned(),
                            message: "the format cannot change; cancel and list again".to_owned(),
                        })
                        .into());
                    }
                    parameters = new;
                }
                "start_time" => {
                    start_ms = update
                        .start_time
                        .as_ref()
                        .map(ms_from_timestamp)
                        .ok_or_else(|| CatalogError::Invalid {
                            field: "listing.start_time",
                            message: "is required when named in update_mask".to_owned(),
                        })?;
                }
                "end_time" => end_ms = update.end_time.as_ref().map(ms_from_timestamp),
                other => {
                    return Err(CatalogError::Invalid {
                        field: "update_mask",
                        message: format!("`{other}` is not an updatable field"),
                    }
                    .into());
                }
            }
        }
        let valid = rules::validate_listing(Some(&parameters), Some(start_ms), end_ms, now_ms)
            .map_err(CatalogError::from)?;
        if valid.currency != listing.currency {
            return Err(CatalogError::Rule(rules::RuleError {
                kind: rules::RuleKind::Currency,
                field: "listing.parameters".to_owned(),
                message: format!("the listing is in {}", listing.currency),
            })
            .into());
        }
        transaction.commit().await.map_err(CatalogError::from)?;
        let outcome = self
            .bidding()?
            .update_auction(UpdateAuctionRequest {
                request_id: update_request_id(id, &request.request_id),
                auction_id: id.to_string(),
                parameters: Some(parameters.clone()),
                start_time: Some(timestamp_from_ms(valid.start_at_ms)),
                end_time: Some(timestamp_from_ms(valid.end_at_ms)),
                title: String::new(),
                expected_sequence: 0,
            })
            .await;
        let state = match outcome {
            Ok(response) => response.into_inner().state,
            Err(status) => {
                if is_definite(status.code()) {
                    let mut transaction = Transaction::begin_write(&self.database)
                        .await
                        .map_err(CatalogError::from)?;
                    key.forget(&mut transaction).await?;
                    transaction.commit().await.map_err(CatalogError::from)?;
                }
                return Err(status);
            }
        };
        let mut transaction = Transaction::begin_write(&self.database)
            .await
            .map_err(CatalogError::from)?;
        transaction
            .execute(
                "UPDATE listings SET parameters = $1, start_at_ms = $2, end_at_ms = $3, current_end_at_ms = $4, \
                 current_price = $5, current_price_e4 = $6, buy_it_now_price = $7, reserve_state = $8, \
                 units_remaining = $9, version = version + 1, updated_at_ms = $10 WHERE id = $11",
                &[
                    Arg::Bytes(parameters.encode_to_vec()),
                    Arg::Int(valid.start_at_ms),
                    Arg::Int(valid.end_at_ms),
                    Arg::Int(valid.end_at_ms),
                    Arg::Text(valid.starting_price.canonical()),
                    Arg::Int(valid.starting_price.fixed_point()),
                    Arg::OptText(valid.buy_it_now_price.as_ref().map(Amount::canonical)),
                    Arg::Text(if valid.has_reserve { "not_met" } else { "none" }.to_owned()),
                    Arg::Int(i64::from(valid.quantity)),
                    Arg::Int(auction_platform::now_ms()),
                    Arg::Uuid(id),
                ],
            )
            .await
            .map_err(CatalogError::from)?;
        if let Some(state) = &state {
            mirror_state(&mut transaction, state, auction_platform::now_ms()).await?;
        }
        let stored = load(&mut transaction, id)
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::ListingNotFound(id.to_string()))?;
        let response = UpdateListingResponse {
            listing: Some(stored.to_listing(true)),
        };
        key.complete(&mut transaction, &response).await?;
        transaction.commit().await.map_err(CatalogError::from)?;
        Ok(Response::new(response))
    }
}

/// Inserts a listing row (its search text copied from the item).
pub async fn insert(
    transaction: &mut Transaction,
    listing: &ListingRecord,
    attributes_text: &str,
    price_fixed_point: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "INSERT INTO listings (id, item_id, seller_id, seller_handle, title, description, attributes_text, \
             category_id, category_path, condition, format, parameters, currency, current_price, current_price_e4, \
             buy_it_now_price, bid_count, watcher_count, reserve_state, status, start_at_ms, end_at_ms, \
             current_end_at_ms, live_session_id, lot_number, units_remaining, last_sequence, cancel_reason, \
             version, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31)",
            &[
                Arg::Uuid(listing.id),
                Arg::Uuid(listing.item_id),
                Arg::Uuid(listing.seller_id),
                Arg::Text(listing.seller_handle.clone()),
                Arg::Text(listing.title.clone()),
                Arg::Text(listing.description.clone()),
                Arg::Text(attributes_text.to_owned()),
                Arg::Uuid(listing.category_id),
                Arg::Text(listing.category_path.clone()),
                Arg::Text(listing.condition.clone()),
                Arg::Text(listing.format.clone()),
                Arg::Bytes(listing.parameters.encode_to_vec()),
                Arg::Text(listing.currency.clone()),
                Arg::Text(listing.current_price.clone()),
                Arg::Int(price_fixed_point),
                Arg::OptText(listing.buy_it_now_price.clone()),
                Arg::Int(listing.bid_count),
                Arg::Int(listing.watcher_count),
                Arg::Text(listing.reserve_state.clone()),
                Arg::Text(listing.status.clone()),
                Arg::Int(listing.start_at_ms),
                Arg::OptInt(listing.end_at_ms),
                Arg::Int(listing.current_end_at_ms),
                Arg::OptUuid(listing.live_session_id),
                Arg::Int(listing.lot_number),
                Arg::Int(listing.units_remaining),
                Arg::Int(listing.last_sequence),
                Arg::Text(listing.cancel_reason.clone()),
                Arg::Int(listing.version),
                Arg::Int(listing.created_at_ms),
                Arg::Int(listing.updated_at_ms),
            ],
        )
        .await?;
    Ok(())
}

/// Whether a format has a buy-it-now (used by search's filter).
pub fn has_buy_it_now(parameters: &AuctionParameters) -> bool {
    matches!(
        parameters.format_parameters.as_ref(),
        Some(FormatParameters::English(english)) if english.buy_it_now_price.is_some()
    )
}

/// Bidding's request id for an edit: stable for the caller's request id, so
/// a retried UpdateListing is a replay in bidding too, and within bidding's
/// 64-character limit (the caller's own id may already use all 64).
fn update_request_id(listing_id: Uuid, request_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{listing_id}:{request_id}"));
    let hex: String = digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("update:{hex}")
}

//! The notification service's tables on PostgreSQL or SQLite (the same SQL
//! text for both through `on_pool!`).
//!
//! The consumer's whole handling of one bus event happens in ONE
//! transaction ([`Store::consume`]; events the bus hands over together
//! share one, [`Store::consume_batch`]): the event id is recorded in `processed_events`
//! (a second delivery finds it and changes nothing), the local view of
//! auctions, watchers, contacts and interests is updated, the planned
//! notifications are stored (each recipient's inbox sequence raised by
//! exactly one per in-app notification, so streams see no gap) and the
//! e-mail and webhook jobs are queued. Either all of it commits or none.

use auction_platform::bus::{ms_from_timestamp, timestamp_from_ms};
use auction_platform::database::{BeginWrite as _, Writer};
use auction_platform::{Database, on_pool};
use auction_proto::v1::{
    BusAuctionEvent, BusCatalogEvent, BusOrderEvent, BusUserEvent, InboxEvent, Notification,
    NotificationType, NotificationsRead, bus_auction_event, bus_catalog_event, bus_user_event,
    inbox_event,
};
use prost::Message;
use sqlx::{QueryBuilder, Row};

use crate::error::NotificationError;
use crate::plan::{self, AuctionAudience, Planned};

/// At most this many NEW_AUCTION_MATCHING_INTERESTS per user per day.
pub const MAX_INTEREST_NOTIFICATIONS_PER_DAY: i64 = 20;

/// A decoded bus event to consume.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// Topic "auction".
    Auction(BusAuctionEvent),
    /// Topic "order".
    Order(BusOrderEvent),
    /// Topic "catalog".
    Catalog(BusCatalogEvent),
    /// Topic "user".
    User(BusUserEvent),
}

/// The participants of one auction owed ENDING_SOON (see
/// [`Store::ending_soon_due`]).
#[derive(Debug, Clone)]
pub struct EndingSoon {
    /// The auction.
    pub auction_id: String,
    /// Its title.
    pub title: String,
    /// Its end (Unix ms).
    pub end_ms: i64,
    /// Its current price, if any.
    pub price: Option<auction_proto::v1::Money>,
    /// The participants to tell now.
    pub users: Vec<String>,
}

/// What a committed consumption produced, for wake-ups after the commit.
#[derive(Debug, Default)]
pub struct Produced {
    /// (user, new inbox sequence) per in-app notification.
    pub inbox: Vec<(String, u64)>,
    /// Whether e-mail jobs were queued.
    pub emails: bool,
    /// Whether webhook jobs were queued.
    pub webhooks: bool,
}

/// Settings the store needs from the configuration.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Queue e-mail jobs (an SMTP relay is configured).
    pub email_enabled: bool,
}

/// A stored webhook.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    /// Id.
    pub webhook_id: String,
    /// Owner.
    pub user_id: String,
    /// Endpoint.
    pub url: String,
    /// Label.
    pub description: String,
    /// Type filter bits (1 << type); 0 = by preferences.
    pub types: i64,
    /// `WebhookState` value.
    pub state: i32,
    /// Failures since the last success.
    pub consecutive_failures: i64,
    /// Current signing secret.
    pub secret: String,
    /// Previous secret, valid until `previous_secret_expires_ms`.
    pub previous_secret: Option<String>,
    /// See above.
    pub previous_secret_expires_ms: Option<i64>,
    /// Created.
    pub created_at_ms: i64,
    /// Last state or secret change.
    pub updated_at_ms: i64,
    /// Last success.
    pub last_success_ms: Option<i64>,
    /// Last failure.
    pub last_failure_ms: Option<i64>,
}

/// A webhook delivery due.
#[derive(Debug, Clone)]
pub struct WebhookJob {
    /// The webhook.
    pub webhook: WebhookRow,
    /// The notification to deliver.
    pub notification: Notification,
    /// This attempt's number, 1-based.
    pub attempt_number: i64,
}

/// One attempt's record for the delivery log.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// Attempt id.
    pub delivery_id: String,
    /// Webhook.
    pub webhook_id: String,
    /// Notification.
    pub notification_id: String,
    /// Its type.
    pub notification_type: i32,
    /// Attempt number.
    pub attempt_number: i64,
    /// When sent.
    pub attempt_time_ms: i64,
    /// HTTP status or 0.
    pub status_code: i64,
    /// Error text.
    pub error: String,
    /// `DeliveryOutcome` value.
    pub outcome: i32,
    /// Next retry when retrying.
    pub next_retry_ms: Option<i64>,
    /// Latency.
    pub latency_ms: i64,
    /// Start of the response body.
    pub response_excerpt: String,
}

/// An e-mail due.
#[derive(Debug, Clone)]
pub struct EmailJob {
    /// The notification.
    pub notification: Notification,
    /// Attempts so far.
    pub attempts: i64,
    /// The recipient's address; empty = none known.
    pub email: String,
    /// The recipient's display name.
    pub display_name: String,
}

/// A verification e-mail due (BusUserEmailVerificationRequested).
#[derive(Clone)]
pub struct VerificationEmailJob {
    /// The bus event it came from (its key).
    pub event_id: String,
    /// The address to verify.
    pub email: String,
    /// For the greeting.
    pub display_name: String,
    /// The token of the link.
    pub token: String,
    /// When the token stops being accepted.
    pub expires_at_ms: i64,
    /// Attempts so far.
    pub attempts: i64,
}

impl std::fmt::Debug for VerificationEmailJob {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        formatter
            .debug_struct("VerificationEmailJob")
            .field("event_id", &self.event_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The user's settings row.
#[derive(Debug, Clone, Default)]
pub struct UserSettings {
    /// Chosen lead time.
    pub ending_soon_lead_ms: Option<i64>,
    /// Keywords.
    pub interest_keywords: Vec<String>,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
    settings: StoreSettings,
    /// The consumer's connection on SQLite, kept warm between batches
    /// (see [`Writer`]).
    consumer_writer: std::sync::Arc<tokio::sync::Mutex<Writer>>,
}

fn to_u64(value: i64) -> Result<u64, NotificationError> {
    u64::try_from(value).map_err(|_| NotificationError::Corrupt(format!("negative value {value}")))
}

fn to_i64(value: u64) -> Result<i64, NotificationError> {
    i64::try_from(value)
        .map_err(|_| NotificationError::Validation(format!("{value} is out of range")))
}

fn split_keywords(text: &str) -> Vec<String> {
    text.split('\n')
        .filter(|keyword| !keyword.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Decodes a stored notification and applies its read state.
fn decode_notification(
    bytes: &[u8],
    read_at_ms: Option<i64>,
) -> Result<Notification, NotificationError> {
    let mut notification = Notification::decode(bytes)
        .map_err(|error| NotificationError::Corrupt(error.to_string()))?;
    notification.read_time = read_at_ms.map(timestamp_from_ms);
    Ok(notification)
}

/// Stores planned notifications inside an open transaction `$tx`; evaluates
/// to `Result<(), NotificationError>` and records wake-ups in `$produced`.
macro_rules! deliver_planned {
    ($tx:expr, $planned:expr, $now_ms:expr, $settings:expr, $produced:expr) => {{
        let result: Result<(), NotificationError> = async {
            for planned in $planned {
                let planned: &Planned = planned;
                if planned.user_id.is_empty() {
                    continue;
                }
                // Duplicates suppressed: the same fact for the same user once.
                let existing: Option<String> = QueryBuilder::new("SELECT notification_id FROM notifications WHERE user_id = ")
                    .push_bind(planned.user_id.clone())
                    .push(" AND dedupe_key = ")
                    .push_bind(planned.dedupe_key.clone())
                    .build_query_scalar()
                    .fetch_optional(&mut *$tx)
                    .await?;
                if existing.is_some() {
                    continue;
                }
                let type_value = planned.notification_type as i32;
                if planned.notification_type == NotificationType::NewAuctionMatchingInterests {
                    let recent: i64 = QueryBuilder::new("SELECT COUNT(*) FROM notifications WHERE user_id = ")
                        .push_bind(planned.user_id.clone())
                        .push(" AND notification_type = ")
                        .push_bind(type_value)
                        .push(" AND created_at_ms > ")
                        .push_bind($now_ms - 86_400_000)
                        .build_query_scalar()
                        .fetch_one(&mut *$tx)
                        .await?;
                    if recent >= MAX_INTEREST_NOTIFICATIONS_PER_DAY {
                        continue;
                    }
                }
                let stored: Option<i64> = QueryBuilder::new("SELECT channels FROM preferences WHERE user_id = ")
                    .push_bind(planned.user_id.clone())
                    .push(" AND notification_type = ")
                    .push_bind(type_value)
                    .build_query_scalar()
                    .fetch_optional(&mut *$tx)
                    .await?;
                let channels = plan::effective_channels(planned.notification_type, stored);
                let in_app = channels & plan::IN_APP != 0;
                let sequence: i64 = if in_app {
                    QueryBuilder::new("INSERT INTO inbox_heads (user_id, last_sequence) VALUES (")
                        .push_bind(planned.user_id.clone())
                        .push(", 1) ON CONFLICT (user_id) DO UPDATE SET last_sequence = inbox_heads.last_sequence + 1 RETURNING last_sequence")
                        .build_query_scalar()
                        .fetch_one(&mut *$tx)
                        .await?
                } else {
                    0
                };
                let notification = Notification {
                    notification_id: uuid::Uuid::now_v7().to_string(),
                    user_id: planned.user_id.clone(),
                    notification_type: type_value,
                    title: planned.title.clone(),
                    body: planned.body.clone(),
                    action_path: planned.action_path.clone(),
                    auction_id: planned.auction_id.clone(),
                    order_id: planned.order_id.clone(),
                    dispute_id: planned.dispute_id.clone(),
                    live_session_id: planned.live_session_id.clone(),
                    offer_id: planned.offer_id.clone(),
                    amount: planned.amount.clone(),
                    deadline_time: planned.deadline_time,
                    create_time: Some(timestamp_from_ms($now_ms)),
                    read_time: None,
                    sequence: u64::try_from(sequence).unwrap_or(0),
                };
                QueryBuilder::new("INSERT INTO notifications (notification_id, user_id, notification_type, dedupe_key, in_app, sequence, notification, created_at_ms) VALUES (")
                    .push_bind(notification.notification_id.clone())
                    .push(", ")
                    .push_bind(planned.user_id.clone())
                    .push(", ")
                    .push_bind(type_value)
                    .push(", ")
                    .push_bind(planned.dedupe_key.clone())
                    .push(", ")
                    .push_bind(in_app)
                    .push(", ")
                    .push_bind(sequence)
                    .push(", ")
                    .push_bind(notification.encode_to_vec())
                    .push(", ")
                    .push_bind($now_ms)
                    .push(")")
                    .build()
                    .execute(&mut *$tx)
                    .await?;
                if in_app {
                    let event = InboxEvent {
                        sequence: notification.sequence,
                        event_time: Some(timestamp_from_ms($now_ms)),
                        kind: Some(inbox_event::Kind::Notification(notification.clone())),
                    };
                    QueryBuilder::new("INSERT INTO inbox_events (user_id, sequence, event) VALUES (")
                        .push_bind(planned.user_id.clone())
                        .push(", ")
                        .push_bind(sequence)
                        .push(", ")
                        .push_bind(event.encode_to_vec())
                        .push(")")
                        .build()
                        .execute(&mut *$tx)
                        .await?;
                    $produced.inbox.push((planned.user_id.clone(), notification.sequence));
                }
                if channels & plan::EMAIL != 0 && $settings.email_enabled {
                    QueryBuilder::new("INSERT INTO email_jobs (notification_id, user_id, attempts, due_at_ms) VALUES (")
                        .push_bind(notification.notification_id.clone())
                        .push(", ")
                        .push_bind(planned.user_id.clone())
                        .push(", 0, ")
                        .push_bind($now_ms)
                        .push(")")
                        .build()
                        .execute(&mut *$tx)
                        .await?;
                    $produced.emails = true;
                }
                let hooks = QueryBuilder::new("SELECT webhook_id, types FROM webhooks WHERE user_id = ")
                    .push_bind(planned.user_id.clone())
                    .push(" AND deleted = ")
                    .push_bind(false)
                    .push(" AND state = ")
                    .push_bind(auction_proto::v1::WebhookState::Enabled as i32)
                    .build()
                    .fetch_all(&mut *$tx)
                    .await?;
                for hook in hooks {
                    let types: i64 = hook.try_get("types")?;
                    let wanted = if types == 0 {
                        channels & plan::WEBHOOK != 0
                    } else {
                        types & (1_i64 << type_value) != 0
                    };
                    if !wanted {
                        continue;
                    }
                    let webhook_id: String = hook.try_get("webhook_id")?;
                    QueryBuilder::new("INSERT INTO webhook_jobs (webhook_id, notification_id, attempt_number, due_at_ms) VALUES (")
                        .push_bind(webhook_id)
                        .push(", ")
                        .push_bind(notification.notification_id.clone())
                        .push(", 1, ")
                        .push_bind($now_ms)
                        .push(")")
                        .build()
                        .execute(&mut *$tx)
                        .await?;
                    $produced.webhooks = true;
                }
            }
            Ok(())
        }
        .await;
        result
    }};
}

/// The users whose interests match an opened auction, inside a transaction.
macro_rules! interested_users {
    ($tx:expr, $path:expr, $title:expr) => {{
        let mut candidates: Vec<String> = Vec::new();
        if !$path.is_empty() {
            let mut query = QueryBuilder::new(
                "SELECT DISTINCT user_id FROM user_interest_categories WHERE category_id IN (",
            );
            let mut separated = query.separated(", ");
            for category in &$path {
                separated.push_bind(category.clone());
            }
            separated.push_unseparated(")");
            candidates = query.build_query_scalar().fetch_all(&mut *$tx).await?;
        }
        let keyword_users: Vec<String> =
            QueryBuilder::new("SELECT user_id FROM user_settings WHERE interest_keywords <> ''")
                .build_query_scalar()
                .fetch_all(&mut *$tx)
                .await?;
        for user in keyword_users {
            if !candidates.contains(&user) {
                candidates.push(user);
            }
        }
        let mut interested = Vec::new();
        for user in candidates {
            let categories: Vec<String> = QueryBuilder::new(
                "SELECT category_id FROM user_interest_categories WHERE user_id = ",
            )
            .push_bind(user.clone())
            .build_query_scalar()
            .fetch_all(&mut *$tx)
            .await?;
            let keywords: Option<String> =
                QueryBuilder::new("SELECT interest_keywords FROM user_settings WHERE user_id = ")
                    .push_bind(user.clone())
                    .build_query_scalar()
                    .fetch_optional(&mut *$tx)
                    .await?;
            if plan::matches_interests(
                &categories,
                &split_keywords(&keywords.unwrap_or_default()),
                &$path,
                &$title,
            ) {
                interested.push(user);
            }
        }
        interested
    }};
}

/// The participants of an auction inside a transaction.
macro_rules! audience_of {
    ($tx:expr, $auction_id:expr) => {{
        let rows =
            QueryBuilder::new("SELECT user_id, role FROM auction_participants WHERE auction_id = ")
                .push_bind($auction_id.to_owned())
                .push(" ORDER BY user_id")
                .build()
                .fetch_all(&mut *$tx)
                .await?;
        let mut audience = AuctionAudience::default();
        for row in rows {
            let user: String = row.try_get("user_id")?;
            let role: String = row.try_get("role")?;
            if role == "bidder" {
                audience.bidders.push(user);
            } else {
                audience.watchers.push(user);
            }
        }
        audience
    }};
}

/// Handles one bus event inside the open transaction `$tx` (see the module
/// comment); evaluates to `Result<Option<Produced>, NotificationError>`,
/// `None` (nothing written) when the event had been handled before.
macro_rules! consume_in {
    ($tx:expr, $settings:expr, $event_id:expr, $topic:expr, $incoming:expr, $now_ms:expr) => {{
        let (settings, event_id, topic, incoming, now_ms): (&StoreSettings, &str, &str, &Incoming, i64) =
            ($settings, $event_id, $topic, $incoming, $now_ms);
        let result: Result<Option<Produced>, NotificationError> = async {
            let inserted = QueryBuilder::new("INSERT INTO processed_events (event_id, topic, processed_at_ms) VALUES (")
                .push_bind(event_id.to_owned())
                .push(", ")
                .push_bind(topic.to_owned())
                .push(", ")
                .push_bind(now_ms)
                .push(") ON CONFLICT (event_id) DO NOTHING")
                .build()
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if inserted == 0 {
                return Ok(None);
            }
            let mut produced = Produced::default();
            let planned: Vec<Planned> = match incoming {
                Incoming::Auction(event) => {
                    let auction_id = event.auction_id.as_str();
                    let end_ms = |time: &Option<prost_types::Timestamp>| time.as_ref().map(ms_from_timestamp);
                    let (end_time_ms, price, finished) = match &event.kind {
                        Some(bus_auction_event::Kind::Opened(opened)) => (end_ms(&opened.end_time), opened.starting_price.clone(), false),
                        Some(bus_auction_event::Kind::BidPlaced(bid)) => (end_ms(&bid.end_time), bid.price.clone(), false),
                        Some(bus_auction_event::Kind::Extended(extended)) => (end_ms(&extended.end_time), None, false),
                        Some(bus_auction_event::Kind::Sold(sold)) => (None, sold.final_price.clone(), true),
                        Some(bus_auction_event::Kind::Unsold(_) | bus_auction_event::Kind::Cancelled(_)) => (None, None, true),
                        None => (None, None, false),
                    };
                    QueryBuilder::new("INSERT INTO auctions (auction_id, seller_id, title, end_time_ms, price_currency, price_amount, finished) VALUES (")
                        .push_bind(auction_id.to_owned())
                        .push(", ")
                        .push_bind(event.seller_id.clone())
                        .push(", ")
                        .push_bind(event.title.clone())
                        .push(", ")
                        .push_bind(end_time_ms)
                        .push(", ")
                        .push_bind(price.as_ref().map(|money| money.currency.clone()).unwrap_or_default())
                        .push(", ")
                        .push_bind(price.as_ref().map(|money| money.amount.clone()).unwrap_or_default())
                        .push(", ")
                        .push_bind(finished)
                        .push(") ON CONFLICT (auction_id) DO UPDATE SET ")
                        .push("seller_id = CASE WHEN excluded.seller_id = '' THEN auctions.seller_id ELSE excluded.seller_id END, ")
                        .push("title = CASE WHEN excluded.title = '' THEN auctions.title ELSE excluded.title END, ")
                        .push("end_time_ms = COALESCE(excluded.end_time_ms, auctions.end_time_ms), ")
                        .push("price_currency = CASE WHEN excluded.price_amount = '' THEN auctions.price_currency ELSE excluded.price_currency END, ")
                        .push("price_amount = CASE WHEN excluded.price_amount = '' THEN auctions.price_amount ELSE excluded.price_amount END, ")
                        .push("finished = (auctions.finished OR excluded.finished)")
                        .build()
                        .execute(&mut *$tx)
                        .await?;
                    if let Some(bus_auction_event::Kind::BidPlaced(bid)) = &event.kind
                        && !bid.bidder_id.is_empty()
                    {
                        QueryBuilder::new("INSERT INTO auction_participants (auction_id, user_id, role) VALUES (")
                            .push_bind(auction_id.to_owned())
                            .push(", ")
                            .push_bind(bid.bidder_id.clone())
                            .push(", 'bidder') ON CONFLICT DO NOTHING")
                            .build()
                            .execute(&mut *$tx)
                            .await?;
                    }
                    let mut audience = if plan::needs_audience(event) {
                        audience_of!($tx, auction_id)
                    } else {
                        AuctionAudience::default()
                    };
                    if let Some(bus_auction_event::Kind::Opened(opened)) = &event.kind {
                        audience.interested = interested_users!($tx, opened.category_path_ids, event.title);
                    }
                    plan::plan_auction(event, &audience)
                }
                Incoming::Order(event) => plan::plan_order(event, event_id),
                Incoming::Catalog(event) => {
                    if let Some(bus_catalog_event::Kind::WatchlistChanged(change)) = &event.kind {
                        if change.watching {
                            QueryBuilder::new("INSERT INTO auction_participants (auction_id, user_id, role) VALUES (")
                                .push_bind(change.auction_id.clone())
                                .push(", ")
                                .push_bind(change.user_id.clone())
                                .push(", 'watcher') ON CONFLICT DO NOTHING")
                                .build()
                                .execute(&mut *$tx)
                                .await?;
                        } else {
                            QueryBuilder::new("DELETE FROM auction_participants WHERE role = 'watcher' AND auction_id = ")
                                .push_bind(change.auction_id.clone())
                                .push(" AND user_id = ")
                                .push_bind(change.user_id.clone())
                                .build()
                                .execute(&mut *$tx)
                                .await?;
                        }
                    }
                    plan::plan_catalog(event)
                }
                Incoming::User(event) => {
                    match &event.kind {
                        Some(bus_user_event::Kind::ContactChanged(contact)) => {
                            QueryBuilder::new("INSERT INTO user_settings (user_id, email, display_name) VALUES (")
                                .push_bind(event.user_id.clone())
                                .push(", ")
                                .push_bind(contact.email.clone())
                                .push(", ")
                                .push_bind(contact.display_name.clone())
                                .push(") ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, display_name = excluded.display_name")
                                .build()
                                .execute(&mut *$tx)
                                .await?;
                        }
                        // Transactional: no inbox entry, no preferences;
                        // queued only where e-mail can leave at all.
                        Some(bus_user_event::Kind::EmailVerificationRequested(request)) if settings.email_enabled => {
                            QueryBuilder::new("INSERT INTO verification_emails (event_id, user_id, email, display_name, token, expires_at_ms, attempts, due_at_ms) VALUES (")
                                .push_bind(event_id.to_owned())
                                .push(", ")
                                .push_bind(event.user_id.clone())
                                .push(", ")
                                .push_bind(request.email.clone())
                                .push(", ")
                                .push_bind(request.display_name.clone())
                                .push(", ")
                                .push_bind(request.token.clone())
                                .push(", ")
                                .push_bind(request.expire_time.as_ref().map_or(now_ms, ms_from_timestamp))
                                .push(", 0, ")
                                .push_bind(now_ms)
                                .push(")")
                                .build()
                                .execute(&mut *$tx)
                                .await?;
                            produced.emails = true;
                        }
                        // Without a relay the address cannot be verified:
                        // nothing to keep.
                        Some(bus_user_event::Kind::EmailVerificationRequested(_)) => {}
                        Some(bus_user_event::Kind::InterestsChanged(interests)) => {
                            QueryBuilder::new("DELETE FROM user_interest_categories WHERE user_id = ")
                                .push_bind(event.user_id.clone())
                                .build()
                                .execute(&mut *$tx)
                                .await?;
                            for category in interests.category_ids.iter().take(50) {
                                QueryBuilder::new("INSERT INTO user_interest_categories (user_id, category_id) VALUES (")
                                    .push_bind(event.user_id.clone())
                                    .push(", ")
                                    .push_bind(category.clone())
                                    .push(") ON CONFLICT DO NOTHING")
                                    .build()
                                    .execute(&mut *$tx)
                                    .await?;
                            }
                        }
                        None => {}
                    }
                    Vec::new()
                }
            };
            deliver_planned!($tx, &planned, now_ms, settings, produced)?;
            Ok(Some(produced))
        }
        .await;
        result
    }};
}

impl Store {
    /// The store over the service's migrated database.
    pub fn new(database: Database, settings: StoreSettings) -> Self {
        Self {
            database,
            settings,
            consumer_writer: std::sync::Arc::default(),
        }
    }

    /// Handles one bus event exactly once (see the module comment). Returns
    /// `None` when the event had been handled before.
    pub async fn consume(
        &self,
        event_id: &str,
        topic: &str,
        incoming: &Incoming,
        now_ms: i64,
    ) -> Result<Option<Produced>, NotificationError> {
        on_pool!(&self.database, pool => {
            let mut tx = pool.begin().await?;
            let produced = consume_in!(tx, &self.settings, event_id, topic, incoming, now_ms)?;
            tx.commit().await?;
            Ok(produced)
        })
    }

    /// Handles several bus events (event id, topic, event), in order, each
    /// exactly once, in ONE transaction: a rush costs one commit per batch
    /// instead of one per event. One entry per event (`None`: handled
    /// before). An error commits nothing; the caller can retry the events
    /// one by one to find the one at fault.
    pub async fn consume_batch(
        &self,
        events: &[(&str, &str, &Incoming)],
        now_ms: i64,
    ) -> Result<Vec<Option<Produced>>, NotificationError> {
        // Only SQLite has one writer at a time anyway; on PostgreSQL the
        // topics' consumers keep committing side by side.
        let mut kept = match &self.database {
            Database::Sqlite(_) => Some(self.consumer_writer.lock().await),
            Database::Postgres(_) => None,
        };
        let mut unused = Writer::default();
        let writer: &mut Writer = match kept.as_deref_mut() {
            Some(writer) => writer,
            None => &mut unused,
        };
        let consumed: Result<Vec<Option<Produced>>, NotificationError> = on_pool!(&self.database, pool => {
            let mut tx = pool.begin_write(writer).await?;
            let mut produced = Vec::with_capacity(events.len());
            for &(event_id, topic, incoming) in events {
                produced.push(consume_in!(tx, &self.settings, event_id, topic, incoming, now_ms)?);
            }
            tx.commit().await?;
            Ok(produced)
        });
        if consumed.is_err() {
            writer.release();
        }
        consumed
    }

    /// The participants owed ENDING_SOON now, by auction: open auctions
    /// ending within `horizon_ms` after `now_ms` whose end minus the user's
    /// lead time (`default_lead_ms` when unset) has come, without the
    /// users already notified. One query per scan: once everyone due has
    /// been told, a scan reads nothing (it used to read every participant's
    /// settings and look up every notification each time).
    pub async fn ending_soon_due(
        &self,
        now_ms: i64,
        horizon_ms: i64,
        default_lead_ms: i64,
    ) -> Result<Vec<EndingSoon>, NotificationError> {
        let rows = on_pool!(&self.database, pool => {
            QueryBuilder::new(
                "SELECT DISTINCT a.auction_id, a.title, a.end_time_ms, a.price_currency, a.price_amount, p.user_id \
                 FROM auctions a JOIN auction_participants p ON p.auction_id = a.auction_id \
                 LEFT JOIN user_settings s ON s.user_id = p.user_id WHERE a.finished = ",
            )
            .push_bind(false)
            .push(" AND a.end_time_ms > ")
            .push_bind(now_ms)
            .push(" AND a.end_time_ms <= ")
            .push_bind(now_ms.saturating_add(horizon_ms))
            .push(" AND a.end_time_ms - COALESCE(s.ending_soon_lead_ms, ")
            .push_bind(default_lead_ms)
            .push(") <= ")
            .push_bind(now_ms)
            .push(" AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.user_id = p.user_id AND n.dedupe_key = ")
            .push_bind(plan::ENDING_SOON_KEY_PREFIX)
            .push(" || a.auction_id) ORDER BY a.end_time_ms, a.auction_id, p.user_id")
            .build()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                let currency: String = row.try_get("price_currency")?;
                let amount: String = row.try_get("price_amount")?;
                Ok((
                    EndingSoon {
                        auction_id: row.try_get("auction_id")?,
                        title: row.try_get("title")?,
                        end_ms: row.try_get("end_time_ms")?,
                        price: (!amount.is_empty()).then_some(auction_proto::v1::Money { currency, amount }),
                        users: Vec::new(),
                    },
                    row.try_get::<String, _>("user_id")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        let mut due: Vec<EndingSoon> = Vec::new();
        for (auction, user_id) in rows {
            match due.last_mut() {
                Some(last) if last.auction_id == auction.auction_id => last.users.push(user_id),
                _ => due.push(EndingSoon {
                    users: vec![user_id],
                    ..auction
                }),
            }
        }
        Ok(due)
    }

    /// Sends ENDING_SOON for one auction to the users found due (each once
    /// per auction: a user told meanwhile is skipped).
    pub async fn deliver_ending_soon(
        &self,
        due: &EndingSoon,
        now_ms: i64,
    ) -> Result<Produced, NotificationError> {
        let settings = &self.settings;
        let planned: Vec<Planned> = due
            .users
            .iter()
            .map(|user| {
                plan::plan_ending_soon(
                    user,
                    &due.auction_id,
                    &due.title,
                    timestamp_from_ms(due.end_ms),
                    due.price.clone(),
                )
            })
            .collect();
        on_pool!(&self.database, pool => {
            let mut tx = pool.begin().await?;
            let mut produced = Produced::default();
            deliver_planned!(tx, &planned, now_ms, settings, produced)?;
            tx.commit().await?;
            Ok(produced)
        })
    }

    /// The last sequence of `user_id`'s inbox (0 when empty).
    pub async fn head(&self, user_id: &str) -> Result<u64, NotificationError> {
        let head: Option<i64> = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT last_sequence FROM inbox_heads WHERE user_id = ")
                .push_bind(user_id.to_owned())
                .build_query_scalar()
                .fetch_optional(pool)
                .await?
        });
        to_u64(head.unwrap_or(0))
    }

    /// Up to `limit` inbox events after `after`, in order.
    pub async fn inbox_after(
        &self,
        user_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<InboxEvent>, NotificationError> {
        let after = to_i64(after)?;
        let events: Vec<Vec<u8>> = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT event FROM inbox_events WHERE user_id = ")
                .push_bind(user_id.to_owned())
                .push(" AND sequence > ")
                .push_bind(after)
                .push(" ORDER BY sequence LIMIT ")
                .push_bind(i64::from(limit))
                .build_query_scalar()
                .fetch_all(pool)
                .await?
        });
        events
            .iter()
            .map(|bytes| {
                InboxEvent::decode(bytes.as_slice())
                    .map_err(|error| NotificationError::Corrupt(error.to_string()))
            })
            .collect()
    }

    /// Unread in-app notifications of `user_id`.
    pub async fn unread_count(&self, user_id: &str) -> Result<u32, NotificationError> {
        let count: i64 = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT COUNT(*) FROM notifications WHERE user_id = ")
                .push_bind(user_id.to_owned())
                .push(" AND in_app = ")
                .push_bind(true)
                .push(" AND read_at_ms IS NULL")
                .build_query_scalar()
                .fetch_one(pool)
                .await?
        });
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// In-app notifications newest first: those with sequence below `before`
    /// (when given), optionally only unread ones and only some types.
    pub async fn list(
        &self,
        user_id: &str,
        unread_only: bool,
        types: &[i32],
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Notification>, NotificationError> {
        let before = before.map(to_i64).transpose()?;
        let rows = on_pool!(&self.database, pool => {
            let mut query = QueryBuilder::new("SELECT notification, read_at_ms FROM notifications WHERE user_id = ");
            query.push_bind(user_id.to_owned()).push(" AND in_app = ").push_bind(true);
            if unread_only {
                query.push(" AND read_at_ms IS NULL");
            }
            if !types.is_empty() {
                query.push(" AND notification_type IN (");
                let mut separated = query.separated(", ");
                for notification_type in types {
                    separated.push_bind(*notification_type);
                }
                separated.push_unseparated(")");
            }
            if let Some(before) = before {
                query.push(" AND sequence < ").push_bind(before);
            }
            query.push(" ORDER BY sequence DESC LIMIT ").push_bind(i64::from(limit));
            query
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok((row.try_get::<Vec<u8>, _>("notification")?, row.try_get::<Option<i64>, _>("read_at_ms")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        rows.iter()
            .map(|(bytes, read)| decode_notification(bytes, *read))
            .collect()
    }

    /// Marks notifications read; appends a NotificationsRead inbox event
    /// when anything changed. Returns the unread count after and the new
    /// sequence (if an event was appended).
    pub async fn mark_read(
        &self,
        user_id: &str,
        ids: &[String],
        up_to_sequence: u64,
        now_ms: i64,
    ) -> Result<(u32, Option<u64>), NotificationError> {
        let up_to = to_i64(up_to_sequence)?;
        on_pool!(&self.database, pool => {
            let mut tx = pool.begin().await?;
            if !ids.is_empty() {
                let mut query = QueryBuilder::new("SELECT notification_id FROM notifications WHERE in_app = ");
                query.push_bind(true).push(" AND user_id = ").push_bind(user_id.to_owned()).push(" AND notification_id IN (");
                let mut separated = query.separated(", ");
                for id in ids {
                    separated.push_bind(id.clone());
                }
                separated.push_unseparated(")");
                let found: Vec<String> = query.build_query_scalar().fetch_all(&mut *tx).await?;
                if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
                    tx.rollback().await?;
                    return Err(NotificationError::NotificationNotFound(missing.clone()));
                }
            }
            let mut changed_ids: Vec<String> = Vec::new();
            if !ids.is_empty() {
                let mut query = QueryBuilder::new("UPDATE notifications SET read_at_ms = ");
                query.push_bind(now_ms).push(" WHERE user_id = ").push_bind(user_id.to_owned())
                    .push(" AND read_at_ms IS NULL AND notification_id IN (");
                let mut separated = query.separated(", ");
                for id in ids {
                    separated.push_bind(id.clone());
                }
                separated.push_unseparated(") RETURNING notification_id");
                changed_ids = query.build_query_scalar().fetch_all(&mut *tx).await?;
            }
            let mut changed_up_to = 0_u64;
            if up_to > 0 {
                let changed = QueryBuilder::new("UPDATE notifications SET read_at_ms = ")
                    .push_bind(now_ms)
                    .push(" WHERE user_id = ")
                    .push_bind(user_id.to_owned())
                    .push(" AND in_app = ")
                    .push_bind(true)
                    .push(" AND read_at_ms IS NULL AND sequence <= ")
                    .push_bind(up_to)
                    .build()
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                changed_up_to = changed;
            }
            let unread: i64 = QueryBuilder::new("SELECT COUNT(*) FROM notifications WHERE user_id = ")
                .push_bind(user_id.to_owned())
                .push(" AND in_app = ")
                .push_bind(true)
                .push(" AND read_at_ms IS NULL")
                .build_query_scalar()
                .fetch_one(&mut *tx)
                .await?;
            let unread = u32::try_from(unread).unwrap_or(u32::MAX);
            if changed_ids.is_empty() && changed_up_to == 0 {
                tx.commit().await?;
                return Ok((unread, None));
            }
            let sequence: i64 = QueryBuilder::new("INSERT INTO inbox_heads (user_id, last_sequence) VALUES (")
                .push_bind(user_id.to_owned())
                .push(", 1) ON CONFLICT (user_id) DO UPDATE SET last_sequence = inbox_heads.last_sequence + 1 RETURNING last_sequence")
                .build_query_scalar()
                .fetch_one(&mut *tx)
                .await?;
            let event = InboxEvent {
                sequence: to_u64(sequence)?,
                event_time: Some(timestamp_from_ms(now_ms)),
                kind: Some(inbox_event::Kind::NotificationsRead(NotificationsRead {
                    notification_ids: changed_ids,
                    up_to_sequence: if changed_up_to > 0 { up_to_sequence } else { 0 },
                    unread_count: unread,
                })),
            };
            QueryBuilder::new("INSERT INTO inbox_events (user_id, sequence, event) VALUES (")
                .push_bind(user_id.to_owned())
                .push(", ")
                .push_bind(sequence)
                .push(", ")
                .push_bind(event.encode_to_vec())
                .push(")")
                .build()
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok((unread, Some(to_u64(sequence)?)))
        })
    }

    /// Stored channel choices of `user_id`: (type, channels).
    pub async fn preferences(
        &self,
        user_id: &str,
    ) -> Result<(Vec<(i32, i64)>, UserSettings), NotificationError> {
        on_pool!(&self.database, pool => {
            let rows = QueryBuilder::new("SELECT notification_type, channels FROM preferences WHERE user_id = ")
                .push_bind(user_id.to_owned())
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok((row.try_get::<i32, _>("notification_type")?, row.try_get::<i64, _>("channels")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let settings = QueryBuilder::new("SELECT ending_soon_lead_ms, interest_keywords FROM user_settings WHERE user_id = ")
                .push_bind(user_id.to_owned())
                .build()
                .fetch_optional(pool)
                .await?
                .map(|row| -> Result<UserSettings, sqlx::Error> {
                    Ok(UserSettings {
                        ending_soon_lead_ms: row.try_get("ending_soon_lead_ms")?,
                        interest_keywords: split_keywords(&row.try_get::<String, _>("interest_keywords")?),
                    })
                })
                .transpose()?
                .unwrap_or_default();
            Ok((rows, settings))
        })
    }

    /// Replaces the channels of the given types, and the lead time and
    /// keywords when given.
    pub async fn update_preferences(
        &self,
        user_id: &str,
        changes: &[(i32, i64)],
        lead_ms: Option<i64>,
        keywords: Option<&[String]>,
    ) -> Result<(), NotificationError> {
        on_pool!(&self.database, pool => {
            let mut tx = pool.begin().await?;
            for (notification_type, channels) in changes {
                QueryBuilder::new("INSERT INTO preferences (user_id, notification_type, channels) VALUES (")
                    .push_bind(user_id.to_owned())
                    .push(", ")
                    .push_bind(*notification_type)
                    .push(", ")
                    .push_bind(*channels)
                    .push(") ON CONFLICT (user_id, notification_type) DO UPDATE SET channels = excluded.channels")
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            QueryBuilder::new("INSERT INTO user_settings (user_id) VALUES (")
                .push_bind(user_id.to_owned())
                .push(") ON CONFLICT (user_id) DO NOTHING")
                .build()
                .execute(&mut *tx)
                .await?;
            if let Some(lead_ms) = lead_ms {
                QueryBuilder::new("UPDATE user_settings SET ending_soon_lead_ms = ")
                    .push_bind(lead_ms)
                    .push(" WHERE user_id = ")
                    .push_bind(user_id.to_owned())
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(keywords) = keywords {
                QueryBuilder::new("UPDATE user_settings SET interest_keywords = ")
                    .push_bind(keywords.join("\n"))
                    .push(" WHERE user_id = ")
                    .push_bind(user_id.to_owned())
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The remembered answer of (user, method, request id): (fingerprint, response).
    pub async fn outcome(
        &self,
        user_id: &str,
        method: &str,
        request_id: &str,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, NotificationError> {
        let row = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT fingerprint, response FROM request_outcomes WHERE user_id = ")
                .push_bind(user_id.to_owned())
                .push(" AND method = ")
                .push_bind(method.to_owned())
                .push(" AND request_id = ")
                .push_bind(request_id.to_owned())
                .build()
                .fetch_optional(pool)
                .await?
                .map(|row| Ok::<_, sqlx::Error>((row.try_get::<Vec<u8>, _>("fingerprint")?, row.try_get::<Vec<u8>, _>("response")?)))
                .transpose()?
        });
        Ok(row)
    }

    /// Remembers an answer; a concurrent identical request that stored first wins.
    pub async fn remember(
        &self,
        user_id: &str,
        method: &str,
        request_id: &str,
        fingerprint: &[u8],
        response: &[u8],
        now_ms: i64,
    ) -> Result<(), NotificationError> {
        on_pool!(&self.database, pool => {
            QueryBuilder::new("INSERT INTO request_outcomes (user_id, method, request_id, fingerprint, response, created_at_ms) VALUES (")
                .push_bind(user_id.to_owned())
                .push(", ")
                .push_bind(method.to_owned())
                .push(", ")
                .push_bind(request_id.to_owned())
                .push(", ")
                .push_bind(fingerprint.to_vec())
                .push(", ")
                .push_bind(response.to_vec())
                .push(", ")
                .push_bind(now_ms)
                .push(") ON CONFLICT DO NOTHING")
                .build()
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    // ----- webhooks -----

    /// Live (not deleted) webhooks of `user_id`, newest first.
    pub async fn webhooks(&self, user_id: &str) -> Result<Vec<WebhookRow>, NotificationError> {
        let rows = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT * FROM webhooks WHERE deleted = ")
                .push_bind(false)
                .push(" AND user_id = ")
                .push_bind(user_id.to_owned())
                .push(" ORDER BY webhook_id DESC")
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(webhook_row)
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// One live webhook.
    pub async fn webhook(&self, webhook_id: &str) -> Result<Option<WebhookRow>, NotificationError> {
        let row = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT * FROM webhooks WHERE deleted = ")
                .push_bind(false)
                .push(" AND webhook_id = ")
                .push_bind(webhook_id.to_owned())
                .build()
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(webhook_row)
                .transpose()?
        });
        Ok(row)
    }

    /// Stores a new webhook.
    pub async fn insert_webhook(&self, webhook: &WebhookRow) -> Result<(), NotificationError> {
        on_pool!(&self.database, pool => {
            QueryBuilder::new("INSERT INTO webhooks (webhook_id, user_id, url, description, types, state, consecutive_failures, secret, created_at_ms, updated_at_ms) VALUES (")
                .push_bind(webhook.webhook_id.clone())
                .push(", ")
                .push_bind(webhook.user_id.clone())
                .push(", ")
                .push_bind(webhook.url.clone())
                .push(", ")
                .push_bind(webhook.description.clone())
                .push(", ")
                .push_bind(webhook.types)
                .push(", ")
                .push_bind(webhook.state)
                .push(", 0, ")
                .push_bind(webhook.secret.clone())
                .push(", ")
                .push_bind(webhook.created_at_ms)
                .push(", ")
                .push_bind(webhook.updated_at_ms)
                .push(")")
                .build()
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Sets a webhook's state (enabling resets its failure counter).
    pub async fn set_webhook_state(
        &self,
        webhook_id: &str,
        state: i32,
        now_ms: i64,
    ) -> Result<(), NotificationError> {
        let enabled = state == auction_proto::v1::WebhookState::Enabled as i32;
        on_pool!(&self.database, pool => {
            let mut query = QueryBuilder::new("UPDATE webhooks SET state = ");
            query.push_bind(state).push(", updated_at_ms = ").push_bind(now_ms);
            if enabled {
                query.push(", consecutive_failures = 0");
            }
            query.push(" WHERE webhook_id = ").push_bind(webhook_id.to_owned()).build().execute(pool).await?;
        });
        Ok(())
    }

    /// Replaces a webhook's secret; the old one stays valid until `previous_expires_ms`.
    pub async fn rotate_secret(
        &self,
        webhook_id: &str,
        secret: &str,
        previous: &str,
        previous_expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), NotificationError> {
        on_pool!(&self.database, pool => {
            QueryBuilder::new("UPDATE webhooks SET secret = ")
                .push_bind(secret.to_owned())
                .push(", previous_secret = ")
                .push_bind(previous.to_owned())
                .push(", previous_secret_expires_ms = ")
                .push_bind(previous_expires_ms)
                .push(", updated_at_ms = ")
                .push_bind(now_ms)
                .push(" WHERE webhook_id = ")
                .push_bind(webhook_id.to_owned())
                .build()
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Deletes a webhook and drops its pending deliveries.
    pub async fn delete_webhook(
        &self,
        webhook_id: &str,
        now_ms: i64,
    ) -> Result<(), NotificationError> {
        on_pool!(&self.database, pool => {
            let mut tx = pool.begin().await?;
            QueryBuilder::new("UPDATE webhooks SET deleted = ")
                .push_bind(true)
                .push(", updated_at_ms = ")
                .push_bind(now_ms)
                .push(" WHERE webhook_id = ")
                .push_bind(webhook_id.to_owned())
                .build()
                .execute(&mut *tx)
                .await?;
            QueryBuilder::new("DELETE FROM webhook_jobs WHERE webhook_id = ")
                .push_bind(webhook_id.to_owned())
                .build()
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<(), NotificationError>(())
        })
    }

    /// Deliveries due at `now_ms` (at most `limit`), with their webhook and
    /// notification; jobs of webhooks no longer enabled are returned too, so
    /// the worker can close them as FAILED.
    pub async fn due_webhook_jobs(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<WebhookJob>, NotificationError> {
        let rows = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT w.*, j.attempt_number, n.notification, n.read_at_ms FROM webhook_jobs j JOIN webhooks w ON w.webhook_id = j.webhook_id JOIN notifications n ON n.notification_id = j.notification_id WHERE j.due_at_ms <= ")
                .push_bind(now_ms)
                .push(" ORDER BY j.due_at_ms LIMIT ")
                .push_bind(i64::from(limit))
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(WebhookJob {
                        webhook: webhook_row(row)?,
                        attempt_number: row.try_get("attempt_number")?,
                        notification: decode_notification(&row.try_get::<Vec<u8>, _>("notification")?, None)?,
                    })
                })
                .collect::<Result<Vec<_>, NotificationError>>()?
        });
        Ok(rows)
    }

    /// Records an attempt; schedules the next one (`next_retry_ms`) or ends
    /// the job; updates the webhook's counters and auto-disables it after
    /// `auto_disable_after` consecutive failures.
    pub async fn record_attempt(
        &self,
        record: &DeliveryRecord,
        succeeded: bool,
        auto_disable_after: u32,
    ) -> Result<(), NotificationError> {
        on_pool!(&self.database, pool => {
            let mut tx = pool.begin().await?;
            QueryBuilder::new("INSERT INTO webhook_deliveries (delivery_id, webhook_id, notification_id, notification_type, attempt_number, attempt_time_ms, status_code, error, outcome, next_retry_ms, latency_ms, response_excerpt) VALUES (")
                .push_bind(record.delivery_id.clone()).push(", ")
                .push_bind(record.webhook_id.clone()).push(", ")
                .push_bind(record.notification_id.clone()).push(", ")
                .push_bind(record.notification_type).push(", ")
                .push_bind(record.attempt_number).push(", ")
                .push_bind(record.attempt_time_ms).push(", ")
                .push_bind(record.status_code).push(", ")
                .push_bind(record.error.clone()).push(", ")
                .push_bind(record.outcome).push(", ")
                .push_bind(record.next_retry_ms).push(", ")
                .push_bind(record.latency_ms).push(", ")
                .push_bind(record.response_excerpt.clone()).push(")")
                .build()
                .execute(&mut *tx)
                .await?;
            match record.next_retry_ms {
                Some(next) => {
                    QueryBuilder::new("UPDATE webhook_jobs SET attempt_number = ")
                        .push_bind(record.attempt_number + 1)
                        .push(", due_at_ms = ")
                        .push_bind(next)
                        .push(" WHERE webhook_id = ")
                        .push_bind(record.webhook_id.clone())
                        .push(" AND notification_id = ")
                        .push_bind(record.notification_id.clone())
                        .build()
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    QueryBuilder::new("DELETE FROM webhook_jobs WHERE webhook_id = ")
                        .push_bind(record.webhook_id.clone())
                        .push(" AND notification_id = ")
                        .push_bind(record.notification_id.clone())
                        .build()
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if record.status_code >= 0 && !record.error.starts_with("webhook not enabled") {
                if succeeded {
                    QueryBuilder::new("UPDATE webhooks SET consecutive_failures = 0, last_success_ms = ")
                        .push_bind(record.attempt_time_ms)
                        .push(" WHERE webhook_id = ")
                        .push_bind(record.webhook_id.clone())
                        .build()
                        .execute(&mut *tx)
                        .await?;
                } else {
                    let failures: i64 = QueryBuilder::new("UPDATE webhooks SET consecutive_failures = consecutive_failures + 1, last_failure_ms = ")
                        .push_bind(record.attempt_time_ms)
                        .push(" WHERE webhook_id = ")
                        .push_bind(record.webhook_id.clone())
                        .push(" RETURNING consecutive_failures")
                        .build_query_scalar::<i64>()
                        .fetch_one(&mut *tx)
                        .await?;
                    if failures >= i64::from(auto_disable_after) {
                        QueryBuilder::new("UPDATE webhooks SET state = ")
                            .push_bind(auction_proto::v1::WebhookState::AutoDisabled as i32)
                            .push(", updated_at_ms = ")
                            .push_bind(record.attempt_time_ms)
                            .push(" WHERE state = ")
                            .push_bind(auction_proto::v1::WebhookState::Enabled as i32)
                            .push(" AND webhook_id = ")
                            .push_bind(record.webhook_id.clone())
                            .build()
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok::<(), NotificationError>(())
        })
    }

    /// A webhook's delivery log, newest first, after the cursor `before`
    /// (a delivery id; UUIDv7 sort by time).
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        outcomes: &[i32],
        notification_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, NotificationError> {
        let rows = on_pool!(&self.database, pool => {
            let mut query = QueryBuilder::new("SELECT * FROM webhook_deliveries WHERE webhook_id = ");
            query.push_bind(webhook_id.to_owned());
            if !outcomes.is_empty() {
                query.push(" AND outcome IN (");
                let mut separated = query.separated(", ");
                for outcome in outcomes {
                    separated.push_bind(*outcome);
                }
                separated.push_unseparated(")");
            }
            if !notification_id.is_empty() {
                query.push(" AND notification_id = ").push_bind(notification_id.to_owned());
            }
            if let Some(before) = before {
                query.push(" AND delivery_id < ").push_bind(before.to_owned());
            }
            query.push(" ORDER BY delivery_id DESC LIMIT ").push_bind(i64::from(limit));
            query.build().fetch_all(pool).await?
            .iter()
            .map(|row| {
                Ok(DeliveryRecord {
                    delivery_id: row.try_get("delivery_id")?,
                    webhook_id: row.try_get("webhook_id")?,
                    notification_id: row.try_get("notification_id")?,
                    notification_type: row.try_get("notification_type")?,
                    attempt_number: row.try_get("attempt_number")?,
                    attempt_time_ms: row.try_get("attempt_time_ms")?,
                    status_code: row.try_get("status_code")?,
                    error: row.try_get("error")?,
                    outcome: row.try_get("outcome")?,
                    next_retry_ms: row.try_get("next_retry_ms")?,
                    latency_ms: row.try_get("latency_ms")?,
                    response_excerpt: row.try_get("response_excerpt")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// When the next webhook job is due, if any.
    pub async fn next_webhook_due(&self) -> Result<Option<i64>, NotificationError> {
        let due: Option<i64> = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT MIN(due_at_ms) FROM webhook_jobs").build_query_scalar().fetch_one(pool).await?
        });
        Ok(due)
    }

    // ----- e-mail -----

    /// E-mails due at `now_ms`.
    pub async fn due_emails(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<EmailJob>, NotificationError> {
        let rows = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT j.attempts, n.notification, COALESCE(s.email, '') AS email, COALESCE(s.display_name, '') AS display_name FROM email_jobs j JOIN notifications n ON n.notification_id = j.notification_id LEFT JOIN user_settings s ON s.user_id = j.user_id WHERE j.sent_at_ms IS NULL AND j.due_at_ms <= ")
                .push_bind(now_ms)
                .push(" ORDER BY j.due_at_ms LIMIT ")
                .push_bind(i64::from(limit))
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(EmailJob {
                        attempts: row.try_get("attempts")?,
                        notification: decode_notification(&row.try_get::<Vec<u8>, _>("notification")?, None)?,
                        email: row.try_get("email")?,
                        display_name: row.try_get("display_name")?,
                    })
                })
                .collect::<Result<Vec<_>, NotificationError>>()?
        });
        Ok(rows)
    }

    /// Records an e-mail attempt: sent (`next_due_ms` None and no error),
    /// retry later, or given up (`next_due_ms` None with an error).
    pub async fn record_email(
        &self,
        notification_id: &str,
        now_ms: i64,
        next_due_ms: Option<i64>,
        error: &str,
    ) -> Result<(), NotificationError> {
        on_pool!(&self.database, pool => {
            let mut query = QueryBuilder::new("UPDATE email_jobs SET attempts = attempts + 1, last_error = ");
            query.push_bind(error.to_owned());
            match next_due_ms {
                Some(due) => {
                    query.push(", due_at_ms = ").push_bind(due);
                }
                None => {
                    query.push(", sent_at_ms = ").push_bind(now_ms);
                }
            }
            query.push(" WHERE notification_id = ").push_bind(notification_id.to_owned()).build().execute(pool).await?;
        });
        Ok(())
    }

    /// When the next e-mail (notification or verification) is due, if any.
    pub async fn next_email_due(&self) -> Result<Option<i64>, NotificationError> {
        let (notification, verification): (Option<i64>, Option<i64>) = on_pool!(&self.database, pool => {
            (
                QueryBuilder::new("SELECT MIN(due_at_ms) FROM email_jobs WHERE sent_at_ms IS NULL").build_query_scalar().fetch_one(pool).await?,
                QueryBuilder::new("SELECT MIN(due_at_ms) FROM verification_emails WHERE sent_at_ms IS NULL").build_query_scalar().fetch_one(pool).await?,
            )
        });
        Ok(match (notification, verification) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Verification e-mails due at `now_ms`.
    pub async fn due_verification_emails(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<VerificationEmailJob>, NotificationError> {
        let rows = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT event_id, email, display_name, token, expires_at_ms, attempts FROM verification_emails WHERE sent_at_ms IS NULL AND due_at_ms <= ")
                .push_bind(now_ms)
                .push(" ORDER BY due_at_ms LIMIT ")
                .push_bind(i64::from(limit))
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(VerificationEmailJob {
                        event_id: row.try_get("event_id")?,
                        email: row.try_get("email")?,
                        display_name: row.try_get("display_name")?,
                        token: row.try_get("token")?,
                        expires_at_ms: row.try_get("expires_at_ms")?,
                        attempts: row.try_get("attempts")?,
                    })
                })
                .collect::<Result<Vec<_>, NotificationError>>()?
        });
        Ok(rows)
    }

    /// Records a verification e-mail attempt like [`Self::record_email`];
    /// once sent or given up the token is blanked (kept no longer than
    /// needed).
    pub async fn record_verification_email(
        &self,
        event_id: &str,
        now_ms: i64,
        next_due_ms: Option<i64>,
        error: &str,
    ) -> Result<(), NotificationError> {
        on_pool!(&self.database, pool => {
            let mut query = QueryBuilder::new("UPDATE verification_emails SET attempts = attempts + 1, last_error = ");
            query.push_bind(error.to_owned());
            match next_due_ms {
                Some(due) => {
                    query.push(", due_at_ms = ").push_bind(due);
                }
                None => {
                    query.push(", token = '', sent_at_ms = ").push_bind(now_ms);
                }
            }
            query.push(" WHERE event_id = ").push_bind(event_id.to_owned()).build().execute(pool).await?;
        });
        Ok(())
    }
}

fn webhook_row<R: Row>(row: &R) -> Result<WebhookRow, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(WebhookRow {
        webhook_id: row.try_get("webhook_id")?,
        user_id: row.try_get("user_id")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        types: row.try_get("types")?,
        state: row.try_get("state")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_secret_expires_ms: row.try_get("previous_secret_expires_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        last_success_ms: row.try_get("last_success_ms")?,
        last_failure_ms: row.try_get("last_failure_ms")?,
    })
}

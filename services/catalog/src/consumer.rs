//! The bus consumer: bidding's auction events keep the listings' browsing
//! copies current (status, price, bid count, end, reserve state) and feed the
//! activity behind trending; the user service's interest changes feed
//! recommendations. Each event is applied together with its id in
//! `processed_events`, in the transaction of its batch (`Batched`: the
//! events the bus hands over together commit at once), so a redelivery
//! changes nothing.

use auction_platform::bus::{
    ApplyEvents, BoxFuture, Envelope, HandleError, TOPIC_AUCTION, TOPIC_USER, ms_from_timestamp,
};
use auction_platform::database;
use auction_proto::v1::{BusAuctionEvent, BusUserEvent, bus_auction_event, bus_user_event};
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

use crate::Inner;
use crate::error::CatalogError;
use crate::money;
use crate::sql::{Arg, Transaction};

/// The consumer group of the catalog service.
pub const GROUP: &str = "catalog";

/// The topics the catalog consumes.
pub fn topics() -> Vec<String> {
    [TOPIC_AUCTION, TOPIC_USER].map(str::to_owned).to_vec()
}

/// Consumes bus events into the catalog's tables.
pub struct Consumer {
    /// The service.
    pub inner: Arc<Inner>,
}

/// A decoded bus event.
pub enum Incoming {
    /// From bidding.
    Auction(BusAuctionEvent),
    /// From the user service.
    User(BusUserEvent),
    /// A topic we did not subscribe to: not ours to judge.
    Other,
}

impl Consumer {
    /// Applies `events` in order in one write transaction: one statement
    /// marks the whole batch processed (and says which events are new),
    /// a bid costs one UPDATE, and the activity rows go in at the end in a
    /// few multi-row INSERTs. (Before: five statements per bid, a quarter
    /// of the statements of the embedded server under a bid load.)
    async fn apply<'a>(
        &self,
        events: impl Iterator<Item = (&'a Envelope, &'a Incoming)>,
    ) -> Result<(), CatalogError> {
        let now_ms = auction_platform::now_ms();
        let events: Vec<(String, &Incoming)> = events
            .filter(|(_, incoming)| recorded(incoming))
            .map(|(envelope, incoming)| (envelope.event_id.to_string(), incoming))
            .collect();
        let mut transaction = Transaction::begin_write(&self.inner.database).await?;
        let ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
        let mut fresh = first_times(&mut transaction, &ids, now_ms).await?;
        let mut activity = Vec::new();
        for (event_id, incoming) in &events {
            // `remove`: an event twice in one batch applies once.
            if !fresh.remove(event_id) {
                continue;
            }
            match incoming {
                Incoming::Auction(event) => {
                    self.inner
                        .apply_auction_event(&mut transaction, event, now_ms, &mut activity)
                        .await?;
                }
                Incoming::User(event) => {
                    self.inner.apply_user_event(&mut transaction, event).await?;
                }
                Incoming::Other => {}
            }
        }
        insert_activity(&mut transaction, &activity).await?;
        transaction.commit().await?;
        Ok(())
    }
}

/// Whether the catalog applies (and records the id of) an event: auction
/// events with a well-formed auction id, users' interest changes.
fn recorded(incoming: &Incoming) -> bool {
    match incoming {
        Incoming::Auction(event) => {
            let valid = Uuid::parse_str(&event.auction_id).is_ok();
            if !valid {
                tracing::warn!(auction_id = %event.auction_id, "auction event with a malformed id skipped");
            }
            valid
        }
        Incoming::User(event) => {
            matches!(event.kind, Some(bus_user_event::Kind::InterestsChanged(_)))
                && Uuid::parse_str(&event.user_id).is_ok()
        }
        Incoming::Other => false,
    }
}

/// A `listing_activity` row.
pub struct Activity {
    listing_id: Uuid,
    user_id: Option<Uuid>,
    kind: &'static str,
    at_ms: i64,
}

impl ApplyEvents for Consumer {
    type Event = Incoming;

    fn decode(&self, envelope: &Envelope) -> Result<Incoming, HandleError> {
        Ok(match envelope.topic.as_str() {
            TOPIC_AUCTION => Incoming::Auction(envelope.decode()?),
            TOPIC_USER => Incoming::User(envelope.decode()?),
            _ => Incoming::Other,
        })
    }

    fn apply_together<'a>(
        &'a self,
        events: &'a [(&'a Envelope, Incoming)],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            self.apply(
                events
                    .iter()
                    .map(|(envelope, incoming)| (*envelope, incoming)),
            )
            .await?;
            Ok(())
        })
    }

    fn apply_alone<'a>(
        &'a self,
        envelope: &'a Envelope,
        incoming: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            self.apply(std::iter::once((envelope, incoming))).await?;
            Ok(())
        })
    }
}

/// Marks `event_ids` processed; returns those that were not yet.
async fn first_times(
    transaction: &mut Transaction,
    event_ids: &[&str],
    now_ms: i64,
) -> Result<HashSet<String>, CatalogError> {
    let mut fresh = HashSet::with_capacity(event_ids.len());
    let unique: Vec<&str> = {
        let mut seen = HashSet::with_capacity(event_ids.len());
        event_ids
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .collect()
    };
    for chunk in database::fixed_size_chunks(&unique) {
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|id| [Arg::Text((*id).to_owned()), Arg::Int(now_ms)])
            .collect();
        let inserted = transaction
            .fetch_all(
                &format!(
                    "INSERT INTO processed_events (event_id, processed_at_ms) VALUES {} \
                     ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                    database::values_list(chunk.len(), 2)
                ),
                &args,
            )
            .await?;
        for row in inserted {
            fresh.insert(row.text("event_id")?);
        }
    }
    Ok(fresh)
}

/// Appends the batch's `listing_activity` rows.
async fn insert_activity(
    transaction: &mut Transaction,
    activity: &[Activity],
) -> Result<(), CatalogError> {
    for chunk in database::fixed_size_chunks(activity) {
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|row| {
                [
                    Arg::Uuid(row.listing_id),
                    Arg::OptUuid(row.user_id),
                    Arg::Text(row.kind.to_owned()),
                    Arg::Int(row.at_ms),
                ]
            })
            .collect();
        transaction
            .execute(
                &format!(
                    "INSERT INTO listing_activity (listing_id, user_id, kind, at_ms) VALUES {}",
                    database::values_list(chunk.len(), 4)
                ),
                &args,
            )
            .await?;
    }
    Ok(())
}

impl Inner {
    /// Applies one auction event to its listing inside `transaction` (a
    /// listing the catalog does not know, e.g. a demo auction made by
    /// bidding itself, is skipped); its activity rows go to `activity`.
    pub async fn apply_auction_event(
        &self,
        transaction: &mut Transaction,
        event: &BusAuctionEvent,
        now_ms: i64,
        activity: &mut Vec<Activity>,
    ) -> Result<(), CatalogError> {
        let Ok(auction_id) = Uuid::parse_str(&event.auction_id) else {
            return Ok(());
        };
        let sequence = i64::try_from(event.sequence).unwrap_or(i64::MAX);
        let event_ms = event.event_time.as_ref().map_or(now_ms, ms_from_timestamp);
        let live_session_id = if let Some(bus_auction_event::Kind::BidPlaced(bid)) = &event.kind {
            apply_bid(
                transaction,
                auction_id,
                sequence,
                bid,
                event_ms,
                now_ms,
                activity,
            )
            .await?
        } else {
            let session = transaction
                .fetch_optional(
                    "SELECT live_session_id FROM listings WHERE id = $1",
                    &[Arg::Uuid(auction_id)],
                )
                .await?
                .map(|row| row.opt_uuid("live_session_id"))
                .transpose()?
                .flatten();
            apply_change(transaction, auction_id, sequence, event, now_ms).await?;
            session
        };
        // Live lots: the session's status follows its lots.
        if let Some(session_id) = live_session_id {
            crate::sessions::refresh_status(transaction, session_id, now_ms).await?;
        }
        Ok(())
    }

    /// Applies one user event (interest categories) inside `transaction`.
    pub async fn apply_user_event(
        &self,
        transaction: &mut Transaction,
        event: &BusUserEvent,
    ) -> Result<(), CatalogError> {
        let Some(bus_user_event::Kind::InterestsChanged(interests)) = &event.kind else {
            return Ok(());
        };
        let Ok(user_id) = Uuid::parse_str(&event.user_id) else {
            return Ok(());
        };
        transaction
            .execute(
                "DELETE FROM user_interests WHERE user_id = $1",
                &[Arg::Uuid(user_id)],
            )
            .await?;
        for category in interests.category_ids.iter().take(100) {
            if let Ok(category_id) = Uuid::parse_str(category) {
                transaction
                    .execute(
                        "INSERT INTO user_interests (user_id, category_id) VALUES ($1, $2) \
                         ON CONFLICT (user_id, category_id) DO NOTHING",
                        &[Arg::Uuid(user_id), Arg::Uuid(category_id)],
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// An accepted bid: one UPDATE counts it and, when the event is at least as
/// new as what the listing shows (several bus events may share one engine
/// sequence), moves price, end and reserve state; returns the listing's
/// live session. A lot that has not opened takes only absentee bids, whose
/// maximums are secret: the UPDATE skips it, the price it implies and the
/// count stay private until the lot opens, and the bidder is remembered for
/// the session's starting notice.
async fn apply_bid(
    transaction: &mut Transaction,
    auction_id: Uuid,
    sequence: i64,
    bid: &auction_proto::v1::BusAuctionBidPlaced,
    event_ms: i64,
    now_ms: i64,
    activity: &mut Vec<Activity>,
) -> Result<Option<Uuid>, CatalogError> {
    let newer = "last_sequence <= $2";
    let mut args = vec![
        Arg::Uuid(auction_id),
        Arg::Int(sequence),
        Arg::Int(now_ms),
        Arg::Text(if bid.reserve_met { "met" } else { "not_met" }.to_owned()),
    ];
    // Every right-hand side reads the row as it was: the CASEs all see the
    // old `last_sequence`.
    let mut set = format!(
        "bid_count = bid_count + 1, updated_at_ms = $3, \
         reserve_state = CASE WHEN {newer} AND reserve_state <> 'none' THEN $4 ELSE reserve_state END, \
         buy_it_now_price = CASE WHEN {newer} AND (reserve_state = 'none' OR $4 = 'met') THEN NULL ELSE buy_it_now_price END"
    );
    if let Some(price) = bid
        .price
        .as_ref()
        .and_then(|price| money::parse(price).ok())
    {
        args.push(Arg::Text(price.canonical()));
        set.push_str(&format!(
            ", current_price = CASE WHEN {newer} THEN ${} ELSE current_price END",
            args.len()
        ));
        args.push(Arg::Int(price.fixed_point()));
        set.push_str(&format!(
            ", current_price_e4 = CASE WHEN {newer} THEN ${} ELSE current_price_e4 END",
            args.len()
        ));
    }
    if let Some(end) = &bid.end_time {
        args.push(Arg::Int(ms_from_timestamp(end)));
        set.push_str(&format!(
            ", current_end_at_ms = CASE WHEN {newer} THEN ${} ELSE current_end_at_ms END",
            args.len()
        ));
    }
    let bidder = Uuid::parse_str(&bid.bidder_id).ok();
    let updated = transaction
        .fetch_optional(
            &format!(
                "UPDATE listings SET {set}, last_sequence = CASE WHEN {newer} THEN $2 ELSE last_sequence END \
                 WHERE id = $1 AND (live_session_id IS NULL OR status NOT IN ('pending', 'scheduled')) \
                 RETURNING live_session_id"
            ),
            &args,
        )
        .await?;
    let (kind, session) = match updated {
        Some(row) => ("bid", row.opt_uuid("live_session_id")?),
        // A lot not open yet, or a listing the catalog does not know (its
        // activity counts all the same).
        None => match transaction
            .fetch_optional(
                "SELECT live_session_id, status FROM listings WHERE id = $1",
                &[Arg::Uuid(auction_id)],
            )
            .await?
        {
            Some(row) => {
                let session = row.opt_uuid("live_session_id")?;
                let pending = matches!(row.text("status")?.as_str(), "pending" | "scheduled");
                let kind = if session.is_some() && pending {
                    "absentee"
                } else {
                    "bid"
                };
                (kind, session)
            }
            None => ("bid", None),
        },
    };
    activity.push(Activity {
        listing_id: auction_id,
        user_id: bidder,
        kind,
        at_ms: event_ms,
    });
    Ok(session)
}

/// Applies an auction event other than a bid to its listing.
async fn apply_change(
    transaction: &mut Transaction,
    auction_id: Uuid,
    sequence: i64,
    event: &BusAuctionEvent,
    now_ms: i64,
) -> Result<(), CatalogError> {
    // Values that only move forward apply only from events at least as new
    // as what the listing shows (several bus events may share one engine
    // sequence).
    let newer = "AND last_sequence <= $2";
    match &event.kind {
        Some(bus_auction_event::Kind::Opened(opened)) => {
            let mut args = vec![Arg::Uuid(auction_id), Arg::Int(sequence), Arg::Int(now_ms)];
            let mut set = String::from(
                "status = CASE WHEN status IN ('pending', 'scheduled') THEN 'open' ELSE status END",
            );
            if let Some(end) = &opened.end_time {
                args.push(Arg::Int(ms_from_timestamp(end)));
                set.push_str(&format!(", current_end_at_ms = ${}", args.len()));
            }
            transaction
                .execute(
                    &format!(
                        "UPDATE listings SET {set}, last_sequence = $2, updated_at_ms = $3 WHERE id = $1 {newer}"
                    ),
                    &args,
                )
                .await?;
        }
        Some(bus_auction_event::Kind::Extended(extended)) => {
            let end_ms = extended.end_time.as_ref().map(ms_from_timestamp);
            if let Some(end_ms) = end_ms {
                transaction
                        .execute(
                            &format!(
                                "UPDATE listings SET status = 'extended', current_end_at_ms = $3, last_sequence = $2 \
                                 WHERE id = $1 {newer}"
                            ),
                            &[Arg::Uuid(auction_id), Arg::Int(sequence), Arg::Int(end_ms)],
                        )
                        .await?;
            }
        }
        Some(bus_auction_event::Kind::Sold(sold)) => {
            let mut args = vec![Arg::Uuid(auction_id), Arg::Int(sequence)];
            let mut set = String::from("status = 'closed', buy_it_now_price = NULL");
            if let Some(price) = sold
                .final_price
                .as_ref()
                .and_then(|price| money::parse(price).ok())
            {
                args.push(Arg::Text(price.canonical()));
                set.push_str(&format!(", current_price = ${}", args.len()));
                args.push(Arg::Int(price.fixed_point()));
                set.push_str(&format!(", current_price_e4 = ${}", args.len()));
            }
            transaction
                .execute(
                    &format!("UPDATE listings SET {set}, last_sequence = $2 WHERE id = $1 {newer}"),
                    &args,
                )
                .await?;
        }
        Some(bus_auction_event::Kind::Unsold(_)) => {
            transaction
                    .execute(
                        &format!(
                            "UPDATE listings SET status = 'unsold', buy_it_now_price = NULL, last_sequence = $2 \
                             WHERE id = $1 {newer}"
                        ),
                        &[Arg::Uuid(auction_id), Arg::Int(sequence)],
                    )
                    .await?;
        }
        Some(bus_auction_event::Kind::Cancelled(_)) => {
            // Terminal: applies whatever the sequence.
            transaction
                    .execute(
                        "UPDATE listings SET status = 'cancelled', buy_it_now_price = NULL, \
                         last_sequence = CASE WHEN last_sequence < $2 THEN $2 ELSE last_sequence END WHERE id = $1",
                        &[Arg::Uuid(auction_id), Arg::Int(sequence)],
                    )
                    .await?;
        }
        Some(bus_auction_event::Kind::BidPlaced(_)) | None => {}
    }
    Ok(())
}

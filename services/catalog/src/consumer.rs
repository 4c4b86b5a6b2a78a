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
use auction_proto::v1::{BusAuctionEvent, BusUserEvent, bus_auction_event, bus_user_event};
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
    /// Applies `events` in order in one write transaction.
    async fn apply<'a>(
        &self,
        events: impl Iterator<Item = (&'a Envelope, &'a Incoming)>,
    ) -> Result<(), CatalogError> {
        let mut transaction = Transaction::begin_write(&self.inner.database).await?;
        for (envelope, incoming) in events {
            let event_id = envelope.event_id.to_string();
            match incoming {
                Incoming::Auction(event) => {
                    self.inner
                        .apply_auction_event(&mut transaction, &event_id, event)
                        .await?;
                }
                Incoming::User(event) => {
                    self.inner
                        .apply_user_event(&mut transaction, &event_id, event)
                        .await?;
                }
                Incoming::Other => {}
            }
        }
        transaction.commit().await?;
        Ok(())
    }
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

/// Marks `event_id` processed; false when it already was.
async fn first_time(
    transaction: &mut Transaction,
    event_id: &str,
    now_ms: i64,
) -> Result<bool, CatalogError> {
    let inserted = transaction
        .execute(
            "INSERT INTO processed_events (event_id, processed_at_ms) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
            &[Arg::Text(event_id.to_owned()), Arg::Int(now_ms)],
        )
        .await?;
    Ok(inserted == 1)
}

impl Inner {
    /// Applies one auction event to its listing inside `transaction` (a
    /// listing the catalog does not know, e.g. a demo auction made by
    /// bidding itself, is skipped).
    pub async fn apply_auction_event(
        &self,
        transaction: &mut Transaction,
        event_id: &str,
        event: &BusAuctionEvent,
    ) -> Result<(), CatalogError> {
        let Ok(auction_id) = Uuid::parse_str(&event.auction_id) else {
            tracing::warn!(auction_id = %event.auction_id, "auction event with a malformed id skipped");
            return Ok(());
        };
        let now_ms = auction_platform::now_ms();
        let sequence = i64::try_from(event.sequence).unwrap_or(i64::MAX);
        let event_ms = event.event_time.as_ref().map_or(now_ms, ms_from_timestamp);
        if !first_time(transaction, event_id, now_ms).await? {
            return Ok(());
        }
        // Live lots: the session's status follows its lots, and a lot that
        // has not opened takes only absentee bids, whose maximums are secret.
        let (live_session_id, lot_pending) = match transaction
            .fetch_optional(
                "SELECT live_session_id, status FROM listings WHERE id = $1",
                &[Arg::Uuid(auction_id)],
            )
            .await?
        {
            Some(row) => {
                let session = row.opt_uuid("live_session_id")?;
                let status = row.text("status")?;
                (
                    session,
                    session.is_some() && matches!(status.as_str(), "pending" | "scheduled"),
                )
            }
            None => (None, false),
        };
        // Values that only move forward apply only from events at least as
        // new as what the listing shows (several bus events may share one
        // engine sequence).
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
            Some(bus_auction_event::Kind::BidPlaced(bid)) if lot_pending => {
                // An absentee bid on a lot not yet open: the price it implies
                // and the count stay private until the lot opens; the bidder
                // is remembered for the session's starting notice.
                let bidder = Uuid::parse_str(&bid.bidder_id).ok();
                transaction
                    .execute(
                        "INSERT INTO listing_activity (listing_id, user_id, kind, at_ms) VALUES ($1, $2, 'absentee', $3)",
                        &[Arg::Uuid(auction_id), Arg::OptUuid(bidder), Arg::Int(event_ms)],
                    )
                    .await?;
            }
            Some(bus_auction_event::Kind::BidPlaced(bid)) => {
                // Every accepted bid counts once (the event id makes it once).
                transaction
                    .execute(
                        "UPDATE listings SET bid_count = bid_count + 1, updated_at_ms = $2 WHERE id = $1",
                        &[Arg::Uuid(auction_id), Arg::Int(now_ms)],
                    )
                    .await?;
                let mut args = vec![
                    Arg::Uuid(auction_id),
                    Arg::Int(sequence),
                    Arg::Text(if bid.reserve_met { "met" } else { "not_met" }.to_owned()),
                ];
                let mut set = String::from(
                    "reserve_state = CASE WHEN reserve_state = 'none' THEN 'none' ELSE $3 END, \
                     buy_it_now_price = CASE WHEN reserve_state = 'none' OR $3 = 'met' THEN NULL ELSE buy_it_now_price END",
                );
                if let Some(price) = bid
                    .price
                    .as_ref()
                    .and_then(|price| money::parse(price).ok())
                {
                    args.push(Arg::Text(price.canonical()));
                    set.push_str(&format!(", current_price = ${}", args.len()));
                    args.push(Arg::Int(price.fixed_point()));
                    set.push_str(&format!(", current_price_e4 = ${}", args.len()));
                }
                if let Some(end) = &bid.end_time {
                    args.push(Arg::Int(ms_from_timestamp(end)));
                    set.push_str(&format!(", current_end_at_ms = ${}", args.len()));
                }
                transaction
                    .execute(
                        &format!(
                            "UPDATE listings SET {set}, last_sequence = $2 WHERE id = $1 {newer}"
                        ),
                        &args,
                    )
                    .await?;
                let bidder = Uuid::parse_str(&bid.bidder_id).ok();
                transaction
                    .execute(
                        "INSERT INTO listing_activity (listing_id, user_id, kind, at_ms) VALUES ($1, $2, 'bid', $3)",
                        &[Arg::Uuid(auction_id), Arg::OptUuid(bidder), Arg::Int(event_ms)],
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
                        &format!(
                            "UPDATE listings SET {set}, last_sequence = $2 WHERE id = $1 {newer}"
                        ),
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
            None => {}
        }
        if let Some(session_id) = live_session_id {
            crate::sessions::refresh_status(transaction, session_id, now_ms).await?;
        }
        Ok(())
    }

    /// Applies one user event (interest categories) inside `transaction`.
    pub async fn apply_user_event(
        &self,
        transaction: &mut Transaction,
        event_id: &str,
        event: &BusUserEvent,
    ) -> Result<(), CatalogError> {
        let Some(bus_user_event::Kind::InterestsChanged(interests)) = &event.kind else {
            return Ok(());
        };
        let Ok(user_id) = Uuid::parse_str(&event.user_id) else {
            return Ok(());
        };
        let now_ms = auction_platform::now_ms();
        if !first_time(transaction, event_id, now_ms).await? {
            return Ok(());
        }
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

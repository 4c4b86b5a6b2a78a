//! The watchlist: users follow listings. Each change is published on the
//! bus (`WatchlistChanged`, topic `catalog`, key = the user) through the
//! outbox in the same transaction, so the notification service learns who
//! watches what; it also counts as watching activity for trending.

use auction_platform::auth;
use auction_platform::bus::{Envelope, TOPIC_CATALOG, timestamp_from_ms};
use auction_proto::v1::{
    AddToWatchlistRequest, AddToWatchlistResponse, BusCatalogEvent, BusWatchlistChanged,
    ListWatchlistRequest, ListWatchlistResponse, RemoveFromWatchlistRequest,
    RemoveFromWatchlistResponse, WatchlistEntry, bus_catalog_event,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Inner;
use crate::error::CatalogError;
use crate::idempotency;
use crate::items::parse_id;
use crate::listings::{ListingRecord, listing_columns};
use crate::pagination;
use crate::sql::{self, Arg, Transaction};

/// Most listings one user may watch.
pub const MAX_WATCHED: u32 = 1_000;

fn changed(user: Uuid, listing: Uuid, watching: bool, now_ms: i64) -> Envelope {
    let event = BusCatalogEvent {
        event_time: Some(timestamp_from_ms(now_ms)),
        kind: Some(bus_catalog_event::Kind::WatchlistChanged(
            BusWatchlistChanged {
                user_id: user.to_string(),
                auction_id: listing.to_string(),
                watching,
            },
        )),
    };
    Envelope::new("catalog", TOPIC_CATALOG, user.to_string(), now_ms, &event)
}

impl Inner {
    /// `AddToWatchlist`: adding a watched listing returns the existing entry.
    pub async fn add_to_watchlist(
        &self,
        request: Request<AddToWatchlistRequest>,
    ) -> Result<Response<AddToWatchlistResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        idempotency::check_request_id(&request.request_id)?;
        let listing_id = parse_id("listing_id", &request.listing_id)?;
        let user = caller.user_id;
        let now_ms = auction_platform::now_ms();
        let mut transaction = Transaction::begin_write(&self.database).await?;
        let inserted = transaction
            .execute(
                "INSERT INTO watchlist (user_id, listing_id, added_at_ms) \
                 SELECT $1, id, $2 FROM listings WHERE id = $3 AND status <> 'pending' \
                 ON CONFLICT (user_id, listing_id) DO NOTHING",
                &[Arg::Uuid(user), Arg::Int(now_ms), Arg::Uuid(listing_id)],
            )
            .await?;
        if inserted == 1 {
            let watched = transaction
                .fetch_optional(
                    "SELECT COUNT(*) AS n FROM watchlist WHERE user_id = $1",
                    &[Arg::Uuid(user)],
                )
                .await?
                .map(|row| row.int("n"))
                .transpose()?
                .unwrap_or(0);
            if watched > i64::from(MAX_WATCHED) {
                return Err(CatalogError::WatchlistFull(MAX_WATCHED).into());
            }
            transaction
                .execute(
                    "UPDATE listings SET watcher_count = watcher_count + 1 WHERE id = $1",
                    &[Arg::Uuid(listing_id)],
                )
                .await?;
            transaction
                .execute(
                    "INSERT INTO listing_activity (listing_id, user_id, kind, at_ms) VALUES ($1, $2, 'watch', $3)",
                    &[Arg::Uuid(listing_id), Arg::Uuid(user), Arg::Int(now_ms)],
                )
                .await?;
            transaction
                .stage(&[changed(user, listing_id, true, now_ms)])
                .await?;
        }
        let row = transaction
            .fetch_optional(
                &format!(
                    "SELECT {}, w.added_at_ms FROM watchlist w JOIN listings l ON l.id = w.listing_id \
                     WHERE w.user_id = $1 AND w.listing_id = $2",
                    listing_columns("l")
                ),
                &[Arg::Uuid(user), Arg::Uuid(listing_id)],
            )
            .await?
            .ok_or_else(|| CatalogError::ListingNotFound(listing_id.to_string()))?;
        let entry = WatchlistEntry {
            listing: Some(ListingRecord::from_row(&row)?.to_summary()),
            add_time: Some(timestamp_from_ms(row.int("added_at_ms")?)),
        };
        transaction.commit().await?;
        if inserted == 1 {
            self.relay.wake();
        }
        Ok(Response::new(AddToWatchlistResponse { entry: Some(entry) }))
    }

    /// `RemoveFromWatchlist`: removing an unwatched listing succeeds.
    pub async fn remove_from_watchlist(
        &self,
        request: Request<RemoveFromWatchlistRequest>,
    ) -> Result<Response<RemoveFromWatchlistResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        idempotency::check_request_id(&request.request_id)?;
        let listing_id = parse_id("listing_id", &request.listing_id)?;
        let now_ms = auction_platform::now_ms();
        let mut transaction = Transaction::begin_write(&self.database).await?;
        let removed = transaction
            .execute(
                "DELETE FROM watchlist WHERE user_id = $1 AND listing_id = $2",
                &[Arg::Uuid(caller.user_id), Arg::Uuid(listing_id)],
            )
            .await?;
        if removed == 1 {
            transaction
                .execute(
                    "UPDATE listings SET watcher_count = watcher_count - 1 WHERE id = $1 AND watcher_count > 0",
                    &[Arg::Uuid(listing_id)],
                )
                .await?;
            transaction
                .stage(&[changed(caller.user_id, listing_id, false, now_ms)])
                .await?;
        }
        transaction.commit().await?;
        if removed == 1 {
            self.relay.wake();
        }
        Ok(Response::new(RemoveFromWatchlistResponse {
            removed: removed == 1,
        }))
    }

    /// `ListWatchlist`: most recently added first.
    pub async fn list_watchlist(
        &self,
        request: Request<ListWatchlistRequest>,
    ) -> Result<Response<ListWatchlistResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let page_size = pagination::page_size(request.page_size, 20, 100);
        let binding = format!("watchlist:{}:{}", caller.user_id, request.include_ended);
        let after = pagination::decode(&request.page_token, &binding)?;
        let mut query = format!(
            "SELECT {}, w.added_at_ms FROM watchlist w JOIN listings l ON l.id = w.listing_id WHERE w.user_id = $1",
            listing_columns("l")
        );
        let mut args = vec![Arg::Uuid(caller.user_id)];
        if !request.include_ended {
            query.push_str(" AND l.status IN ('scheduled', 'open', 'extended')");
        }
        if let Some(cursor) = &after {
            let (added, id) = pagination::time_and_id(cursor)?;
            args.push(Arg::Int(added));
            args.push(Arg::Uuid(id));
            query.push_str(
                " AND (w.added_at_ms < $2 OR (w.added_at_ms = $2 AND w.listing_id < $3))",
            );
        }
        query.push_str(&format!(
            " ORDER BY w.added_at_ms DESC, w.listing_id DESC LIMIT {}",
            page_size + 1
        ));
        let rows = sql::fetch_all(&self.database, &query, &args).await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            entries.push((ListingRecord::from_row(row)?, row.int("added_at_ms")?));
        }
        let next_page_token = if entries.len() > page_size {
            entries.truncate(page_size);
            entries
                .last()
                .map(|(listing, added)| {
                    pagination::encode(&binding, &[added.to_string(), listing.id.to_string()])
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListWatchlistResponse {
            entries: entries
                .iter()
                .map(|(listing, added)| WatchlistEntry {
                    listing: Some(listing.to_summary()),
                    add_time: Some(timestamp_from_ms(*added)),
                })
                .collect(),
            next_page_token,
        }))
    }
}

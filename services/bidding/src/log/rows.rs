//! The statements of a group commit, per backend.
//!
//! PostgreSQL gets one statement per table whose text never changes: the
//! rows travel as arrays (`UNNEST`), so each statement is parsed and planned
//! once per connection and then costs one round trip. (A multi-row `VALUES`
//! list has a new text for every row count: sqlx prepared it anew each time,
//! a second round trip, and PostgreSQL planned hundreds of parameters on
//! every group.) SQLite runs in-process, where a multi-row `VALUES` list is
//! the cheapest form; its statements are capped at [`ROWS_PER_INSERT`] rows.

use sqlx::{PgConnection, QueryBuilder, Row, SqliteConnection};
use uuid::Uuid;

use super::{
    ActivityRow, EventRow, ListOrderChange, NewAuction, OutcomeRow, PositionChange, Snapshot,
};

/// At most this many rows per multi-row INSERT on SQLite (it allows 32,766
/// bound parameters per statement).
pub(super) const ROWS_PER_INSERT: usize = 500;

/// Writes the rows of a group in an open transaction (`&mut *transaction`).
/// Every slice is in the order its rows must be locked in.
pub(super) trait GroupRows {
    /// Raises each `(shard, epoch)` fence that no higher epoch holds;
    /// returns the shards raised.
    async fn raise_fences(&mut self, rows: &[(i64, i64)]) -> Result<Vec<i64>, sqlx::Error>;
    /// `(shard, auction)`.
    async fn insert_auctions(&mut self, rows: &[(i64, &NewAuction)]) -> Result<(), sqlx::Error>;
    /// `(shard, epoch, seq, event)`.
    async fn insert_events(
        &mut self,
        rows: &[(i64, i64, i64, &EventRow)],
    ) -> Result<(), sqlx::Error>;
    /// Moves auctions in ListAuctions' order (in batch order: a later change
    /// of the same auction wins).
    async fn update_list_orders(&mut self, rows: &[&ListOrderChange]) -> Result<(), sqlx::Error>;
    /// `(seq, snapshot)`, one per auction.
    async fn upsert_snapshots(&mut self, rows: &[(i64, &Snapshot)]) -> Result<(), sqlx::Error>;
    /// Outcomes, sorted by key.
    async fn insert_outcomes(&mut self, rows: &[&OutcomeRow]) -> Result<(), sqlx::Error>;
    /// Adds `(user, count)` to each user's activity head (sorted by user);
    /// returns each user's new last sequence.
    async fn reserve_activity(
        &mut self,
        counts: &[(Uuid, i64)],
    ) -> Result<Vec<(Uuid, i64)>, sqlx::Error>;
    /// `(seq, activity type, row)`.
    async fn insert_activity(
        &mut self,
        rows: &[(i64, i32, &ActivityRow)],
    ) -> Result<(), sqlx::Error>;
    /// Position changes, sorted by (user, auction).
    async fn upsert_positions(&mut self, rows: &[PositionChange]) -> Result<(), sqlx::Error>;
}

const FENCE_CONFLICT: &str = " ON CONFLICT (shard) DO UPDATE SET epoch = excluded.epoch WHERE shard_epochs.epoch <= excluded.epoch RETURNING CAST(shard AS BIGINT)";
const SNAPSHOT_CONFLICT: &str =
    " ON CONFLICT (auction_id) DO UPDATE SET seq = excluded.seq, state = excluded.state";
const HEAD_CONFLICT: &str = " ON CONFLICT (user_id) DO UPDATE SET last_seq = user_activity_heads.last_seq + excluded.last_seq RETURNING user_id, last_seq";
const POSITION_CONFLICT: &str = " ON CONFLICT (user_id, auction_id) DO UPDATE SET \
     last_bid_seq = COALESCE(excluded.last_bid_seq, user_positions.last_bid_seq), \
     removed_status = CASE WHEN excluded.last_bid_seq IS NOT NULL THEN excluded.removed_status \
       ELSE COALESCE(excluded.removed_status, user_positions.removed_status) END, \
     ended = (user_positions.ended OR excluded.ended), \
     updated_at_ms = excluded.updated_at_ms";

impl GroupRows for PgConnection {
    async fn raise_fences(&mut self, rows: &[(i64, i64)]) -> Result<Vec<i64>, sqlx::Error> {
        let (shards, epochs): (Vec<i64>, Vec<i64>) = rows.iter().copied().unzip();
        sqlx::query_scalar(&format!(
            "INSERT INTO shard_epochs (shard, epoch) SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[]){FENCE_CONFLICT}"
        ))
        .bind(shards)
        .bind(epochs)
        .fetch_all(self)
        .await
    }

    async fn insert_auctions(&mut self, rows: &[(i64, &NewAuction)]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = rows.iter().map(|(_, row)| row.auction_id).collect();
        let shards: Vec<i64> = rows.iter().map(|(shard, _)| *shard).collect();
        let specs: Vec<&str> = rows.iter().map(|(_, row)| row.spec.as_str()).collect();
        let metadata: Vec<&str> = rows.iter().map(|(_, row)| row.metadata.as_str()).collect();
        let statuses: Vec<&str> = rows.iter().map(|(_, row)| row.status).collect();
        let finished: Vec<bool> = rows.iter().map(|(_, row)| row.finished).collect();
        let created: Vec<i64> = rows.iter().map(|(_, row)| row.created_at_ms).collect();
        sqlx::query(
            "INSERT INTO auctions (auction_id, shard, spec, metadata, status, finished, created_at_ms) \
             SELECT * FROM UNNEST($1::UUID[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BOOLEAN[], $7::BIGINT[])",
        )
        .bind(ids)
        .bind(shards)
        .bind(specs)
        .bind(metadata)
        .bind(statuses)
        .bind(finished)
        .bind(created)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn insert_events(
        &mut self,
        rows: &[(i64, i64, i64, &EventRow)],
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = rows.iter().map(|(_, _, _, row)| row.auction_id).collect();
        let seqs: Vec<i64> = rows.iter().map(|(_, _, seq, _)| *seq).collect();
        let shards: Vec<i64> = rows.iter().map(|(shard, _, _, _)| *shard).collect();
        let epochs: Vec<i64> = rows.iter().map(|(_, epoch, _, _)| *epoch).collect();
        let at: Vec<i64> = rows.iter().map(|(_, _, _, row)| row.at_ms).collect();
        let events: Vec<&str> = rows
            .iter()
            .map(|(_, _, _, row)| row.event.as_str())
            .collect();
        sqlx::query(
            "INSERT INTO auction_events (auction_id, seq, shard, epoch, at_ms, event) \
             SELECT * FROM UNNEST($1::UUID[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[])",
        )
        .bind(ids)
        .bind(seqs)
        .bind(shards)
        .bind(epochs)
        .bind(at)
        .bind(events)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn update_list_orders(&mut self, rows: &[&ListOrderChange]) -> Result<(), sqlx::Error> {
        // One row per auction in an UPDATE ... FROM: the latest change wins
        // (a group after a restart can carry tens of thousands: no scan per
        // row).
        let mut slots: std::collections::HashMap<Uuid, usize> =
            std::collections::HashMap::with_capacity(rows.len());
        let mut latest: Vec<&ListOrderChange> = Vec::with_capacity(rows.len());
        for row in rows {
            match slots.get(&row.auction_id) {
                Some(&slot) => {
                    if let Some(kept) = latest.get_mut(slot) {
                        *kept = row;
                    }
                }
                None => {
                    slots.insert(row.auction_id, latest.len());
                    latest.push(row);
                }
            }
        }
        if latest.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = latest.iter().map(|row| row.auction_id).collect();
        let ends: Vec<i64> = latest.iter().map(|row| row.order.end_ms).collect();
        let lots: Vec<i64> = latest.iter().map(|row| row.order.lot_number).collect();
        sqlx::query(
            "UPDATE auctions SET list_end_ms = moved.end_ms, list_lot_number = moved.lot_number \
             FROM UNNEST($1::UUID[], $2::BIGINT[], $3::BIGINT[]) AS moved (auction_id, end_ms, lot_number) \
             WHERE auctions.auction_id = moved.auction_id",
        )
        .bind(ids)
        .bind(ends)
        .bind(lots)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn upsert_snapshots(&mut self, rows: &[(i64, &Snapshot)]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = rows.iter().map(|(_, row)| row.auction_id).collect();
        let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
        let states: Vec<&str> = rows.iter().map(|(_, row)| row.state.as_str()).collect();
        sqlx::query(&format!(
            "INSERT INTO auction_snapshots (auction_id, seq, state) \
             SELECT * FROM UNNEST($1::UUID[], $2::BIGINT[], $3::TEXT[]){SNAPSHOT_CONFLICT}"
        ))
        .bind(ids)
        .bind(seqs)
        .bind(states)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn insert_outcomes(&mut self, rows: &[&OutcomeRow]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let callers: Vec<Uuid> = rows.iter().map(|row| row.caller).collect();
        let methods: Vec<&str> = rows.iter().map(|row| row.method.as_str()).collect();
        let request_ids: Vec<&str> = rows.iter().map(|row| row.request_id.as_str()).collect();
        let auctions: Vec<Uuid> = rows.iter().map(|row| row.auction_id).collect();
        let fingerprints: Vec<&str> = rows.iter().map(|row| row.fingerprint.as_str()).collect();
        let outcomes: Vec<&str> = rows.iter().map(|row| row.outcome.as_str()).collect();
        let at: Vec<i64> = rows.iter().map(|row| row.at_ms).collect();
        sqlx::query(
            "INSERT INTO request_outcomes (caller, method, request_id, auction_id, fingerprint, outcome, at_ms) \
             SELECT * FROM UNNEST($1::UUID[], $2::TEXT[], $3::TEXT[], $4::UUID[], $5::TEXT[], $6::TEXT[], $7::BIGINT[])",
        )
        .bind(callers)
        .bind(methods)
        .bind(request_ids)
        .bind(auctions)
        .bind(fingerprints)
        .bind(outcomes)
        .bind(at)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn reserve_activity(
        &mut self,
        counts: &[(Uuid, i64)],
    ) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        let (users, added): (Vec<Uuid>, Vec<i64>) = counts.iter().copied().unzip();
        sqlx::query_as(&format!(
            "INSERT INTO user_activity_heads (user_id, last_seq) \
             SELECT * FROM UNNEST($1::UUID[], $2::BIGINT[]){HEAD_CONFLICT}"
        ))
        .bind(users)
        .bind(added)
        .fetch_all(self)
        .await
    }

    async fn insert_activity(
        &mut self,
        rows: &[(i64, i32, &ActivityRow)],
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let users: Vec<Uuid> = rows.iter().map(|(_, _, row)| row.user_id).collect();
        let seqs: Vec<i64> = rows.iter().map(|(seq, _, _)| *seq).collect();
        let auctions: Vec<Uuid> = rows.iter().map(|(_, _, row)| row.auction_id).collect();
        let types: Vec<i32> = rows.iter().map(|(_, kind, _)| *kind).collect();
        let bids: Vec<Option<Uuid>> = rows.iter().map(|(_, _, row)| row.bid_id).collect();
        let at: Vec<i64> = rows.iter().map(|(_, _, row)| row.at_ms).collect();
        let states: Vec<&[u8]> = rows
            .iter()
            .map(|(_, _, row)| row.state.as_slice())
            .collect();
        let viewers: Vec<&[u8]> = rows
            .iter()
            .map(|(_, _, row)| row.viewer.as_slice())
            .collect();
        sqlx::query(
            "INSERT INTO user_activity (user_id, seq, auction_id, activity_type, bid_id, at_ms, state, viewer) \
             SELECT * FROM UNNEST($1::UUID[], $2::BIGINT[], $3::UUID[], $4::INTEGER[], $5::UUID[], $6::BIGINT[], $7::BYTEA[], $8::BYTEA[])",
        )
        .bind(users)
        .bind(seqs)
        .bind(auctions)
        .bind(types)
        .bind(bids)
        .bind(at)
        .bind(states)
        .bind(viewers)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn upsert_positions(&mut self, rows: &[PositionChange]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let users: Vec<Uuid> = rows.iter().map(|row| row.user_id).collect();
        let auctions: Vec<Uuid> = rows.iter().map(|row| row.auction_id).collect();
        let last_bids: Vec<Option<i64>> = rows.iter().map(|row| row.last_bid_seq).collect();
        let removed: Vec<Option<i32>> = rows.iter().map(|row| row.removed_status).collect();
        let ended: Vec<bool> = rows.iter().map(|row| row.ended).collect();
        let updated: Vec<i64> = rows.iter().map(|row| row.updated_at_ms).collect();
        sqlx::query(&format!(
            "INSERT INTO user_positions (user_id, auction_id, last_bid_seq, removed_status, ended, updated_at_ms) \
             SELECT * FROM UNNEST($1::UUID[], $2::UUID[], $3::BIGINT[], $4::INTEGER[], $5::BOOLEAN[], $6::BIGINT[]){POSITION_CONFLICT}"
        ))
        .bind(users)
        .bind(auctions)
        .bind(last_bids)
        .bind(removed)
        .bind(ended)
        .bind(updated)
        .execute(self)
        .await?;
        Ok(())
    }
}

impl GroupRows for SqliteConnection {
    async fn raise_fences(&mut self, rows: &[(i64, i64)]) -> Result<Vec<i64>, sqlx::Error> {
        let mut raised = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut upsert = QueryBuilder::new("INSERT INTO shard_epochs (shard, epoch) ");
            upsert.push_values(chunk, |mut row, (shard, epoch)| {
                row.push_bind(*shard).push_bind(*epoch);
            });
            upsert.push(FENCE_CONFLICT);
            raised.extend(
                upsert
                    .build_query_scalar::<i64>()
                    .fetch_all(&mut *self)
                    .await?,
            );
        }
        Ok(raised)
    }

    async fn insert_auctions(&mut self, rows: &[(i64, &NewAuction)]) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO auctions (auction_id, shard, spec, metadata, status, finished, created_at_ms) ",
            );
            insert.push_values(chunk, |mut row, (shard, auction)| {
                row.push_bind(auction.auction_id)
                    .push_bind(*shard)
                    .push_bind(&auction.spec)
                    .push_bind(&auction.metadata)
                    .push_bind(auction.status)
                    .push_bind(auction.finished)
                    .push_bind(auction.created_at_ms);
            });
            insert.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn insert_events(
        &mut self,
        rows: &[(i64, i64, i64, &EventRow)],
    ) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO auction_events (auction_id, seq, shard, epoch, at_ms, event) ",
            );
            insert.push_values(chunk, |mut row, (shard, epoch, seq, event)| {
                row.push_bind(event.auction_id)
                    .push_bind(*seq)
                    .push_bind(*shard)
                    .push_bind(*epoch)
                    .push_bind(event.at_ms)
                    .push_bind(&event.event);
            });
            insert.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn update_list_orders(&mut self, rows: &[&ListOrderChange]) -> Result<(), sqlx::Error> {
        for change in rows {
            sqlx::query(
                "UPDATE auctions SET list_end_ms = ?, list_lot_number = ? WHERE auction_id = ?",
            )
            .bind(change.order.end_ms)
            .bind(change.order.lot_number)
            .bind(change.auction_id)
            .execute(&mut *self)
            .await?;
        }
        Ok(())
    }

    async fn upsert_snapshots(&mut self, rows: &[(i64, &Snapshot)]) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut upsert =
                QueryBuilder::new("INSERT INTO auction_snapshots (auction_id, seq, state) ");
            upsert.push_values(chunk, |mut row, (seq, snapshot)| {
                row.push_bind(snapshot.auction_id)
                    .push_bind(*seq)
                    .push_bind(&snapshot.state);
            });
            upsert.push(SNAPSHOT_CONFLICT);
            upsert.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn insert_outcomes(&mut self, rows: &[&OutcomeRow]) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO request_outcomes (caller, method, request_id, auction_id, fingerprint, outcome, at_ms) ",
            );
            insert.push_values(chunk, |mut row, outcome| {
                row.push_bind(outcome.caller)
                    .push_bind(&outcome.method)
                    .push_bind(&outcome.request_id)
                    .push_bind(outcome.auction_id)
                    .push_bind(&outcome.fingerprint)
                    .push_bind(&outcome.outcome)
                    .push_bind(outcome.at_ms);
            });
            insert.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn reserve_activity(
        &mut self,
        counts: &[(Uuid, i64)],
    ) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        let mut heads = Vec::with_capacity(counts.len());
        for chunk in counts.chunks(ROWS_PER_INSERT) {
            let mut upsert =
                QueryBuilder::new("INSERT INTO user_activity_heads (user_id, last_seq) ");
            upsert.push_values(chunk, |mut row, (user_id, count)| {
                row.push_bind(*user_id).push_bind(*count);
            });
            upsert.push(HEAD_CONFLICT);
            for head in upsert.build().fetch_all(&mut *self).await? {
                heads.push((head.try_get("user_id")?, head.try_get("last_seq")?));
            }
        }
        Ok(heads)
    }

    async fn insert_activity(
        &mut self,
        rows: &[(i64, i32, &ActivityRow)],
    ) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO user_activity (user_id, seq, auction_id, activity_type, bid_id, at_ms, state, viewer) ",
            );
            insert.push_values(chunk, |mut values, (seq, activity_type, row)| {
                values
                    .push_bind(row.user_id)
                    .push_bind(*seq)
                    .push_bind(row.auction_id)
                    .push_bind(*activity_type)
                    .push_bind(row.bid_id)
                    .push_bind(row.at_ms)
                    .push_bind(row.state.as_slice())
                    .push_bind(row.viewer.as_slice());
            });
            insert.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn upsert_positions(&mut self, rows: &[PositionChange]) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut upsert = QueryBuilder::new(
                "INSERT INTO user_positions (user_id, auction_id, last_bid_seq, removed_status, ended, updated_at_ms) ",
            );
            upsert.push_values(chunk, |mut values, change| {
                values
                    .push_bind(change.user_id)
                    .push_bind(change.auction_id)
                    .push_bind(change.last_bid_seq)
                    .push_bind(change.removed_status)
                    .push_bind(change.ended)
                    .push_bind(change.updated_at_ms);
            });
            upsert.push(POSITION_CONFLICT);
            upsert.build().execute(&mut *self).await?;
        }
        Ok(())
    }
}

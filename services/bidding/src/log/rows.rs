//! The statements of a group commit, per backend.
//!
//! PostgreSQL gets one statement per table whose text never changes: the
//! rows travel as arrays (`UNNEST`), so each statement is parsed and planned
//! once per connection and then costs one round trip. (A multi-row `VALUES`
//! list has a new text for every row count: sqlx prepared it anew each time,
//! a second round trip, and PostgreSQL planned hundreds of parameters on
//! every group.) Those statements are chained in one statement of
//! data-modifying CTEs ([`TOGETHER`]), so a group costs two statements and
//! the commit instead of eight round trips; the statements one by one are
//! the path for a group some fence or row refuses. SQLite runs in-process,
//! where a multi-row `VALUES` list is the cheapest form; its statements are
//! capped at [`ROWS_PER_INSERT`] rows.

use std::borrow::Cow;
use std::sync::LazyLock;

use auction_platform::bus::{Envelope, outbox};
use sqlx::{PgConnection, QueryBuilder, Row, SqliteConnection};
use uuid::Uuid;

use super::{
    ActivityRow, EventRow, ListOrderChange, NewAuction, OutcomeRow, PositionChange, Snapshot,
};

/// At most this many rows per multi-row INSERT on SQLite (it allows 32,766
/// bound parameters per statement).
pub(super) const ROWS_PER_INSERT: usize = 500;

/// The rows of a group's accepted batches, per table, in the order each
/// table's rows must be locked in.
#[derive(Debug, Default)]
pub(super) struct GroupParts<'a> {
    /// `(shard, auction)`.
    pub auctions: Vec<(i64, &'a NewAuction)>,
    /// `(shard, epoch, seq, event)`.
    pub events: Vec<(i64, i64, i64, &'a EventRow)>,
    /// `(seq, snapshot)`, one per auction.
    pub snapshots: Vec<(i64, &'a Snapshot)>,
    /// Outcomes, sorted by key.
    pub outcomes: Vec<&'a OutcomeRow>,
    /// Envelopes for the outbox.
    pub outbox: Cow<'a, [Envelope]>,
    /// The per-user index rows, in order.
    pub activity: Vec<&'a ActivityRow>,
    /// `(user, rows)` of the numbered activity rows, sorted by user.
    pub head_counts: Vec<(Uuid, i64)>,
}

/// What [`GroupRows::write_together`] wrote: the shards whose fence it
/// raised and each user's activity head after it (`(user, last seq)`).
#[derive(Debug, Default)]
pub(super) struct Together {
    pub raised: Vec<i64>,
    pub heads: Vec<(Uuid, i64)>,
}

/// Writes the rows of a group in an open transaction (`&mut *transaction`).
/// Every slice is in the order its rows must be locked in.
pub(super) trait GroupRows {
    /// Raises the fences and writes `parts` but the activity rows in one
    /// statement, where the backend can ([`TOGETHER`] on PostgreSQL);
    /// `None` where it cannot (SQLite runs in-process: a statement costs no
    /// round trip). Rows are written even for a shard whose fence it did
    /// not raise: the caller rolls back then.
    async fn write_together(
        &mut self,
        fences: &[(i64, i64)],
        parts: &GroupParts<'_>,
    ) -> Result<Option<Together>, sqlx::Error>;
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
    /// `(seq, activity type, row)` and the position changes (sorted by
    /// (user, auction)).
    async fn insert_activity_and_positions(
        &mut self,
        activity: &[(i64, i32, &ActivityRow)],
        positions: &[PositionChange],
    ) -> Result<(), sqlx::Error>;
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

/// A PostgreSQL statement with its parameters bound so far.
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// `UNNEST($first::T1[], $first+1::T2[], ...)`.
fn unnest(first: usize, types: &[&str]) -> String {
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(index, kind)| format!("${}::{kind}[]", first + index))
        .collect();
    format!("UNNEST({})", arrays.join(", "))
}

// Each table's PostgreSQL INSERT, with its parameters numbered from `first`
// so that [`TOGETHER`] can chain them in one statement, and the binder of
// those parameters (in the same order).

const FENCE_TYPES: &[&str] = &["BIGINT", "BIGINT"];
fn fence_insert(first: usize) -> String {
    format!(
        "INSERT INTO shard_epochs (shard, epoch) SELECT * FROM {}{FENCE_CONFLICT} AS shard",
        unnest(first, FENCE_TYPES)
    )
}
fn bind_fences<'q>(query: PgQuery<'q>, rows: &[(i64, i64)]) -> PgQuery<'q> {
    let (shards, epochs): (Vec<i64>, Vec<i64>) = rows.iter().copied().unzip();
    query.bind(shards).bind(epochs)
}

const AUCTION_TYPES: &[&str] = &[
    "UUID", "BIGINT", "TEXT", "TEXT", "TEXT", "BOOLEAN", "BIGINT",
];
fn auction_insert(first: usize) -> String {
    format!(
        "INSERT INTO auctions (auction_id, shard, spec, metadata, status, finished, created_at_ms) SELECT * FROM {}",
        unnest(first, AUCTION_TYPES)
    )
}
fn bind_auctions<'q>(query: PgQuery<'q>, rows: &[(i64, &'q NewAuction)]) -> PgQuery<'q> {
    let ids: Vec<Uuid> = rows.iter().map(|(_, row)| row.auction_id).collect();
    let shards: Vec<i64> = rows.iter().map(|(shard, _)| *shard).collect();
    let specs: Vec<&str> = rows.iter().map(|(_, row)| row.spec.as_str()).collect();
    let metadata: Vec<&str> = rows.iter().map(|(_, row)| row.metadata.as_str()).collect();
    let statuses: Vec<&str> = rows.iter().map(|(_, row)| row.status).collect();
    let finished: Vec<bool> = rows.iter().map(|(_, row)| row.finished).collect();
    let created: Vec<i64> = rows.iter().map(|(_, row)| row.created_at_ms).collect();
    query
        .bind(ids)
        .bind(shards)
        .bind(specs)
        .bind(metadata)
        .bind(statuses)
        .bind(finished)
        .bind(created)
}

const EVENT_TYPES: &[&str] = &["UUID", "BIGINT", "BIGINT", "BIGINT", "BIGINT", "TEXT"];
fn event_insert(first: usize) -> String {
    format!(
        "INSERT INTO auction_events (auction_id, seq, shard, epoch, at_ms, event) SELECT * FROM {}",
        unnest(first, EVENT_TYPES)
    )
}
fn bind_events<'q>(query: PgQuery<'q>, rows: &[(i64, i64, i64, &'q EventRow)]) -> PgQuery<'q> {
    let ids: Vec<Uuid> = rows.iter().map(|(_, _, _, row)| row.auction_id).collect();
    let seqs: Vec<i64> = rows.iter().map(|(_, _, seq, _)| *seq).collect();
    let shards: Vec<i64> = rows.iter().map(|(shard, _, _, _)| *shard).collect();
    let epochs: Vec<i64> = rows.iter().map(|(_, epoch, _, _)| *epoch).collect();
    let at: Vec<i64> = rows.iter().map(|(_, _, _, row)| row.at_ms).collect();
    let events: Vec<&str> = rows
        .iter()
        .map(|(_, _, _, row)| row.event.as_str())
        .collect();
    query
        .bind(ids)
        .bind(seqs)
        .bind(shards)
        .bind(epochs)
        .bind(at)
        .bind(events)
}

const SNAPSHOT_TYPES: &[&str] = &["UUID", "BIGINT", "TEXT"];
fn snapshot_upsert(first: usize) -> String {
    format!(
        "INSERT INTO auction_snapshots (auction_id, seq, state) SELECT * FROM {}{SNAPSHOT_CONFLICT}",
        unnest(first, SNAPSHOT_TYPES)
    )
}
fn bind_snapshots<'q>(query: PgQuery<'q>, rows: &[(i64, &'q Snapshot)]) -> PgQuery<'q> {
    let ids: Vec<Uuid> = rows.iter().map(|(_, row)| row.auction_id).collect();
    let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
    let states: Vec<&str> = rows.iter().map(|(_, row)| row.state.as_str()).collect();
    query.bind(ids).bind(seqs).bind(states)
}

const OUTCOME_TYPES: &[&str] = &["UUID", "TEXT", "TEXT", "UUID", "TEXT", "TEXT", "BIGINT"];
fn outcome_insert(first: usize) -> String {
    format!(
        "INSERT INTO request_outcomes (caller, method, request_id, auction_id, fingerprint, outcome, at_ms) SELECT * FROM {}",
        unnest(first, OUTCOME_TYPES)
    )
}
fn bind_outcomes<'q>(query: PgQuery<'q>, rows: &[&'q OutcomeRow]) -> PgQuery<'q> {
    let callers: Vec<Uuid> = rows.iter().map(|row| row.caller).collect();
    let methods: Vec<&str> = rows.iter().map(|row| row.method.as_str()).collect();
    let request_ids: Vec<&str> = rows.iter().map(|row| row.request_id.as_str()).collect();
    let auctions: Vec<Uuid> = rows.iter().map(|row| row.auction_id).collect();
    let fingerprints: Vec<&str> = rows.iter().map(|row| row.fingerprint.as_str()).collect();
    let outcomes: Vec<&str> = rows.iter().map(|row| row.outcome.as_str()).collect();
    let at: Vec<i64> = rows.iter().map(|row| row.at_ms).collect();
    query
        .bind(callers)
        .bind(methods)
        .bind(request_ids)
        .bind(auctions)
        .bind(fingerprints)
        .bind(outcomes)
        .bind(at)
}

const HEAD_TYPES: &[&str] = &["UUID", "BIGINT"];
fn head_upsert(first: usize) -> String {
    format!(
        "INSERT INTO user_activity_heads (user_id, last_seq) SELECT * FROM {}{HEAD_CONFLICT}",
        unnest(first, HEAD_TYPES)
    )
}
fn bind_heads<'q>(query: PgQuery<'q>, counts: &[(Uuid, i64)]) -> PgQuery<'q> {
    let (users, added): (Vec<Uuid>, Vec<i64>) = counts.iter().copied().unzip();
    query.bind(users).bind(added)
}

const ACTIVITY_TYPES: &[&str] = &[
    "UUID", "BIGINT", "UUID", "INTEGER", "UUID", "BIGINT", "BYTEA", "BYTEA",
];
fn activity_insert(first: usize) -> String {
    format!(
        "INSERT INTO user_activity (user_id, seq, auction_id, activity_type, bid_id, at_ms, state, viewer) SELECT * FROM {}",
        unnest(first, ACTIVITY_TYPES)
    )
}
fn bind_activity<'q>(query: PgQuery<'q>, rows: &[(i64, i32, &'q ActivityRow)]) -> PgQuery<'q> {
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
    query
        .bind(users)
        .bind(seqs)
        .bind(auctions)
        .bind(types)
        .bind(bids)
        .bind(at)
        .bind(states)
        .bind(viewers)
}

const POSITION_TYPES: &[&str] = &["UUID", "UUID", "BIGINT", "INTEGER", "BOOLEAN", "BIGINT"];
fn position_upsert(first: usize) -> String {
    format!(
        "INSERT INTO user_positions (user_id, auction_id, last_bid_seq, removed_status, ended, updated_at_ms) SELECT * FROM {}{POSITION_CONFLICT}",
        unnest(first, POSITION_TYPES)
    )
}
fn bind_positions<'q>(query: PgQuery<'q>, rows: &[PositionChange]) -> PgQuery<'q> {
    let users: Vec<Uuid> = rows.iter().map(|row| row.user_id).collect();
    let auctions: Vec<Uuid> = rows.iter().map(|row| row.auction_id).collect();
    let last_bids: Vec<Option<i64>> = rows.iter().map(|row| row.last_bid_seq).collect();
    let removed: Vec<Option<i32>> = rows.iter().map(|row| row.removed_status).collect();
    let ended: Vec<bool> = rows.iter().map(|row| row.ended).collect();
    let updated: Vec<i64> = rows.iter().map(|row| row.updated_at_ms).collect();
    query
        .bind(users)
        .bind(auctions)
        .bind(last_bids)
        .bind(removed)
        .bind(ended)
        .bind(updated)
}

/// One statement text per table, numbered from `$1`.
macro_rules! single {
    ($name:ident, $text:expr) => {
        static $name: LazyLock<String> = LazyLock::new(|| $text);
    };
}
single!(FENCES, fence_insert(1));
single!(AUCTIONS, auction_insert(1));
single!(EVENTS, event_insert(1));
single!(SNAPSHOTS, snapshot_upsert(1));
single!(OUTCOMES, outcome_insert(1));
single!(HEADS, head_upsert(1));
single!(ACTIVITY, activity_insert(1));
single!(POSITIONS, position_upsert(1));

/// A whole group's fences, new auctions, events, snapshots, outcomes,
/// outbox rows and activity heads in ONE statement of data-modifying CTEs
/// (one round trip instead of seven; measured on this machine under load, a
/// statement's round trip is about half a millisecond). PostgreSQL runs
/// every CTE to completion whether read or not, and checks the foreign keys
/// of the events at the end of the statement, after the auctions' INSERT.
/// Returns the fences raised (`shard`) and the heads (`user_id`, `last_seq`).
static TOGETHER: LazyLock<String> = LazyLock::new(|| {
    let mut first = 1;
    let mut next = |count: usize| {
        let at = first;
        first += count;
        at
    };
    let fences = fence_insert(next(FENCE_TYPES.len()));
    let auctions = auction_insert(next(AUCTION_TYPES.len()));
    let events = event_insert(next(EVENT_TYPES.len()));
    let snapshots = snapshot_upsert(next(SNAPSHOT_TYPES.len()));
    let outcomes = outcome_insert(next(OUTCOME_TYPES.len()));
    let outbox = outbox::postgres_stage_statement(next(outbox::POSTGRES_STAGE_PARAMETERS));
    let heads = head_upsert(next(HEAD_TYPES.len()));
    format!(
        "WITH fence AS ({fences}), new_auctions AS ({auctions}), events AS ({events}), \
         snapshots AS ({snapshots}), outcomes AS ({outcomes}), outbox AS ({outbox}), heads AS ({heads}) \
         SELECT shard, NULL::UUID AS user_id, NULL::BIGINT AS last_seq FROM fence \
         UNION ALL SELECT NULL::BIGINT, user_id, last_seq FROM heads"
    )
});

/// A user's activity rows and position changes in one statement.
static ACTIVITY_AND_POSITIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH positions AS ({}) {}",
        position_upsert(1 + ACTIVITY_TYPES.len()),
        activity_insert(1)
    )
});

impl GroupRows for PgConnection {
    async fn write_together(
        &mut self,
        fences: &[(i64, i64)],
        parts: &GroupParts<'_>,
    ) -> Result<Option<Together>, sqlx::Error> {
        let query = bind_fences(sqlx::query(&TOGETHER), fences);
        let query = bind_auctions(query, &parts.auctions);
        let query = bind_events(query, &parts.events);
        let query = bind_snapshots(query, &parts.snapshots);
        let query = bind_outcomes(query, &parts.outcomes);
        let query = outbox::bind_postgres_stage(query, &parts.outbox);
        let query = bind_heads(query, &parts.head_counts);
        let mut together = Together::default();
        for row in query.fetch_all(self).await? {
            if let Some(shard) = row.try_get::<Option<i64>, _>("shard")? {
                together.raised.push(shard);
            } else {
                together
                    .heads
                    .push((row.try_get("user_id")?, row.try_get("last_seq")?));
            }
        }
        Ok(Some(together))
    }

    async fn raise_fences(&mut self, rows: &[(i64, i64)]) -> Result<Vec<i64>, sqlx::Error> {
        bind_fences(sqlx::query(&FENCES), rows)
            .fetch_all(self)
            .await?
            .iter()
            .map(|row| row.try_get("shard"))
            .collect()
    }

    async fn insert_auctions(&mut self, rows: &[(i64, &NewAuction)]) -> Result<(), sqlx::Error> {
        if !rows.is_empty() {
            bind_auctions(sqlx::query(&AUCTIONS), rows)
                .execute(self)
                .await?;
        }
        Ok(())
    }

    async fn insert_events(
        &mut self,
        rows: &[(i64, i64, i64, &EventRow)],
    ) -> Result<(), sqlx::Error> {
        if !rows.is_empty() {
            bind_events(sqlx::query(&EVENTS), rows)
                .execute(self)
                .await?;
        }
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
        if !rows.is_empty() {
            bind_snapshots(sqlx::query(&SNAPSHOTS), rows)
                .execute(self)
                .await?;
        }
        Ok(())
    }

    async fn insert_outcomes(&mut self, rows: &[&OutcomeRow]) -> Result<(), sqlx::Error> {
        if !rows.is_empty() {
            bind_outcomes(sqlx::query(&OUTCOMES), rows)
                .execute(self)
                .await?;
        }
        Ok(())
    }

    async fn reserve_activity(
        &mut self,
        counts: &[(Uuid, i64)],
    ) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        bind_heads(sqlx::query(&HEADS), counts)
            .fetch_all(self)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("user_id")?, row.try_get("last_seq")?)))
            .collect()
    }

    async fn insert_activity_and_positions(
        &mut self,
        activity: &[(i64, i32, &ActivityRow)],
        positions: &[PositionChange],
    ) -> Result<(), sqlx::Error> {
        let query = match (activity.is_empty(), positions.is_empty()) {
            (true, true) => return Ok(()),
            (false, true) => bind_activity(sqlx::query(&ACTIVITY), activity),
            (true, false) => bind_positions(sqlx::query(&POSITIONS), positions),
            (false, false) => bind_positions(
                bind_activity(sqlx::query(&ACTIVITY_AND_POSITIONS), activity),
                positions,
            ),
        };
        query.execute(self).await?;
        Ok(())
    }
}

impl GroupRows for SqliteConnection {
    async fn write_together(
        &mut self,
        _fences: &[(i64, i64)],
        _parts: &GroupParts<'_>,
    ) -> Result<Option<Together>, sqlx::Error> {
        Ok(None)
    }

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

    async fn insert_activity_and_positions(
        &mut self,
        activity: &[(i64, i32, &ActivityRow)],
        positions: &[PositionChange],
    ) -> Result<(), sqlx::Error> {
        for chunk in activity.chunks(ROWS_PER_INSERT) {
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
        for chunk in positions.chunks(ROWS_PER_INSERT) {
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

//! The transactional outbox: publish events without losing any.
//!
//! A producing service keeps an `event_outbox` table (create it with
//! [`POSTGRES_MIGRATION`] / [`SQLITE_MIGRATION`] as one of its own
//! migrations). Inside the transaction that changes its state it calls
//! [`stage`] (or [`stage_postgres`] / [`stage_sqlite`]) with the envelopes
//! of what happened; they commit or roll back with the state change. A
//! [`Relay`] task reads committed, unpublished rows in position order,
//! publishes them to the bus and marks them published; when the bus is
//! down it retries with a capped back-off, so an outage delays events but
//! loses none. A crash between publishing and marking publishes a row again:
//! delivery is at least once and consumers deduplicate by event id.
//!
//! Order: rows are published in position order. On PostgreSQL a position is
//! taken at insert time, so two transactions committing concurrently may be
//! published in the other order; rows of one key (an auction) are ordered as
//! long as one writer at a time produces them (a bidding shard's single
//! writer does). Several processes may run a relay over one PostgreSQL
//! schema: each batch is taken under a transaction-scoped advisory lock, so
//! only one publishes at a time.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Postgres, QueryBuilder, Row, Sqlite};
use tokio::sync::Notify;

use super::{BusError, Envelope, EventBus};
use crate::database::Database;
use crate::on_pool;
use crate::shutdown::Shutdown;

/// The outbox table on PostgreSQL: copy into a migration of the service.
pub const POSTGRES_MIGRATION: &str = "\
CREATE TABLE event_outbox (
    position BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    envelope BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    published_at_ms BIGINT
);
CREATE INDEX event_outbox_unpublished ON event_outbox (position) WHERE published_at_ms IS NULL;
";

/// The outbox table on SQLite: copy into a migration of the service.
pub const SQLITE_MIGRATION: &str = "\
CREATE TABLE event_outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    envelope BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    published_at_ms INTEGER
);
CREATE INDEX event_outbox_unpublished ON event_outbox (position) WHERE published_at_ms IS NULL;
";

/// Rows per multi-row INSERT on SQLite (four parameters each).
const ROWS_PER_INSERT: usize = 500;

use crate::now_ms;

/// Stages `envelopes` in a PostgreSQL transaction of the producing service;
/// they are published after the transaction commits.
///
/// One statement whose text never changes, the rows as arrays: prepared
/// once per connection, one round trip per batch whatever its size (a
/// multi-row `VALUES` list is a new statement for every row count).
pub async fn stage_postgres(
    transaction: &mut sqlx::Transaction<'_, Postgres>,
    envelopes: &[Envelope],
) -> Result<(), sqlx::Error> {
    let event_ids: Vec<String> = envelopes
        .iter()
        .map(|envelope| envelope.event_id.to_string())
        .collect();
    let topics: Vec<&str> = envelopes
        .iter()
        .map(|envelope| envelope.topic.as_str())
        .collect();
    let bodies: Vec<Vec<u8>> = envelopes.iter().map(Envelope::to_bytes).collect();
    sqlx::query(
        "INSERT INTO event_outbox (event_id, topic, envelope, created_at_ms) \
         SELECT event_id, topic, envelope, $4 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BYTEA[]) \
         AS staged (event_id, topic, envelope) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_ids)
    .bind(topics)
    .bind(bodies)
    .bind(now_ms())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Stages `envelopes` in a SQLite transaction of the producing service.
pub async fn stage_sqlite(
    transaction: &mut sqlx::Transaction<'_, Sqlite>,
    envelopes: &[Envelope],
) -> Result<(), sqlx::Error> {
    let created_at_ms = now_ms();
    for chunk in envelopes.chunks(ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::new(
            "INSERT INTO event_outbox (event_id, topic, envelope, created_at_ms) ",
        );
        insert.push_values(chunk, |mut row, envelope| {
            row.push_bind(envelope.event_id.to_string())
                .push_bind(envelope.topic.clone())
                .push_bind(envelope.to_bytes())
                .push_bind(created_at_ms);
        });
        // Staging the same event twice (a retried batch) is a no-op.
        insert.push(" ON CONFLICT (event_id) DO NOTHING");
        insert.build().execute(&mut **transaction).await?;
    }
    Ok(())
}

/// A transaction envelopes can be staged in: either backend's, so code
/// written once inside [`crate::on_pool!`] can call [`stage`].
pub trait OutboxTransaction: Send {
    /// See [`stage`].
    fn stage_envelopes<'a>(
        &'a mut self,
        envelopes: &'a [Envelope],
    ) -> super::BoxFuture<'a, Result<(), sqlx::Error>>;
}

impl OutboxTransaction for sqlx::Transaction<'_, Postgres> {
    fn stage_envelopes<'a>(
        &'a mut self,
        envelopes: &'a [Envelope],
    ) -> super::BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(stage_postgres(self, envelopes))
    }
}

impl OutboxTransaction for sqlx::Transaction<'_, Sqlite> {
    fn stage_envelopes<'a>(
        &'a mut self,
        envelopes: &'a [Envelope],
    ) -> super::BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(stage_sqlite(self, envelopes))
    }
}

/// Stages `envelopes` in `transaction` (PostgreSQL or SQLite):
///
/// ```text
/// on_pool!(&database, pool => {
///     let mut transaction = pool.begin().await?;
///     // ... the state change ...
///     outbox::stage(&mut transaction, &envelopes).await?;
///     transaction.commit().await?;
/// });
/// relay.wake();
/// ```
pub async fn stage<T: OutboxTransaction + ?Sized>(
    transaction: &mut T,
    envelopes: &[Envelope],
) -> Result<(), sqlx::Error> {
    if envelopes.is_empty() {
        return Ok(());
    }
    transaction.stage_envelopes(envelopes).await
}

/// Rows staged and not yet published.
pub async fn unpublished_count(database: &Database) -> Result<i64, sqlx::Error> {
    on_pool!(database, pool => {
        QueryBuilder::new("SELECT COUNT(*) FROM event_outbox WHERE published_at_ms IS NULL")
            .build_query_scalar::<i64>()
            .fetch_one(pool)
            .await
    })
}

/// How a relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Rows published per round.
    pub batch_size: u32,
    /// How often the table is looked at when nobody calls [`Relay::wake`].
    pub poll_interval: Duration,
    /// Published rows are deleted after this long.
    pub retention: Duration,
    /// The longest pause between retries while the bus is down.
    pub max_backoff: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch_size: 256,
            poll_interval: Duration::from_millis(200),
            retention: Duration::from_secs(3_600),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// The handle of a running relay.
#[derive(Debug, Clone)]
pub struct Relay {
    wake: Arc<Notify>,
}

impl Relay {
    /// Starts relaying `database`'s outbox to `bus` until `shutdown`.
    pub fn spawn(
        database: Database,
        bus: Arc<dyn EventBus>,
        shutdown: Shutdown,
        options: RelayOptions,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let relay = Self {
            wake: Arc::clone(&wake),
        };
        tokio::spawn(async move {
            tokio::select! {
                () = run(database, bus, wake, options) => {}
                () = shutdown.wait() => {}
            }
        });
        relay
    }

    /// Publishes soon: call after committing staged rows, so they do not
    /// wait for the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Reads up to `$batch_size` unpublished rows through `$executor`,
/// publishes them and marks them published; evaluates to the count.
macro_rules! publish_rows {
    ($database:expr, $executor:expr, $bus:expr, $batch_size:expr) => {{
        let rows = QueryBuilder::new(
            "SELECT position, envelope FROM event_outbox WHERE published_at_ms IS NULL ORDER BY position LIMIT ",
        )
        .push_bind(i64::from($batch_size))
        .build()
        .fetch_all($executor)
        .await?;
        if rows.is_empty() {
            0
        } else {
            let mut positions = Vec::with_capacity(rows.len());
            let mut envelopes = Vec::with_capacity(rows.len());
            for row in &rows {
                positions.push(row.try_get::<i64, _>("position")?);
                let bytes: Vec<u8> = row.try_get("envelope")?;
                match Envelope::from_bytes(&bytes) {
                    Ok(envelope) => envelopes.push(envelope),
                    // A row we wrote ourselves cannot be undecodable unless
                    // the table was tampered with: skip it rather than
                    // block the rest.
                    Err(error) => tracing::error!(%error, "outbox relay: undecodable row skipped"),
                }
            }
            $bus.publish(&envelopes).await?;
            // SQLite: in turn with the service's other writers.
            let _turn = $database.write_turn().await;
            let mut update = QueryBuilder::new("UPDATE event_outbox SET published_at_ms = ");
            update.push_bind(now_ms()).push(" WHERE position IN (");
            let mut separated = update.separated(", ");
            for position in &positions {
                separated.push_bind(*position);
            }
            separated.push_unseparated(")");
            update.build().execute($executor).await?;
            positions.len() as u64
        }
    }};
}

async fn run(database: Database, bus: Arc<dyn EventBus>, wake: Arc<Notify>, options: RelayOptions) {
    let mut backoff = Duration::from_millis(50);
    let mut failing = false;
    let mut last_cleanup = tokio::time::Instant::now();
    loop {
        match relay_batch(&database, bus.as_ref(), options.batch_size).await {
            Ok(published) => {
                if failing {
                    tracing::info!("outbox relay: publishing again");
                    failing = false;
                }
                backoff = Duration::from_millis(50);
                if published == u64::from(options.batch_size) {
                    continue;
                }
                if last_cleanup.elapsed() > Duration::from_secs(60) {
                    last_cleanup = tokio::time::Instant::now();
                    if let Err(error) = cleanup(&database, options.retention).await {
                        tracing::warn!(%error, "outbox relay: cleanup failed");
                    }
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(options.poll_interval) => {}
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(error = %crate::error::DisplayChain(&error), "outbox relay: cannot publish; retrying");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.max_backoff);
            }
        }
    }
}

/// Publishes one batch; returns how many rows it published.
async fn relay_batch(
    database: &Database,
    bus: &dyn EventBus,
    batch_size: u32,
) -> Result<u64, BusError> {
    match database {
        // PostgreSQL: one relay at a time per schema, across processes,
        // through a transaction-scoped advisory lock held while publishing.
        Database::Postgres(pool) => {
            let mut transaction = pool.begin().await?;
            let locked: bool = QueryBuilder::new(
                "SELECT pg_try_advisory_xact_lock(hashtext('event_outbox:' || current_schema()))",
            )
            .build_query_scalar()
            .fetch_one(&mut *transaction)
            .await?;
            if !locked {
                transaction.rollback().await?;
                return Ok(0);
            }
            let published = publish_rows!(database, &mut *transaction, bus, batch_size);
            transaction.commit().await?;
            Ok(published)
        }
        // SQLite: one process owns the file and its writers are serialised,
        // so no lock is needed; and no transaction is held while publishing
        // (it would block the producer's writers during a bus outage).
        Database::Sqlite(pool) => Ok(publish_rows!(database, pool, bus, batch_size)),
    }
}

async fn cleanup(database: &Database, retention: Duration) -> Result<(), sqlx::Error> {
    let before = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let _turn = database.write_turn().await;
    on_pool!(database, pool => {
        QueryBuilder::new("DELETE FROM event_outbox WHERE published_at_ms IS NOT NULL AND published_at_ms < ")
            .push_bind(before)
            .build()
            .execute(pool)
            .await?;
    });
    Ok(())
}

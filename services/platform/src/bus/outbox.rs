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
//! On SQLite the marks are deferred: the relay remembers in memory how far
//! it has published and marks those rows at most once per
//! [`RelayOptions::mark_interval`] while rows keep coming, at once when it
//! goes idle (a poll interval without new rows), and at shutdown (best
//! effort: a stop that does not wait for it re-publishes those rows).
//! Marking after every round cost the producer a second write
//! transaction, and so a second `fsync`, for each of its own commits, and
//! the producer's next commit waited for it on SQLite's one write lock. A
//! crash re-publishes at most the last interval's rows. PostgreSQL marks
//! in the round's own transaction: several processes may relay one schema
//! there, and none of them could see another's memory.
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
    static STATEMENT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| postgres_stage_statement(1));
    bind_postgres_stage(sqlx::query(&STATEMENT), envelopes)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// The number of parameters of [`postgres_stage_statement`].
pub const POSTGRES_STAGE_PARAMETERS: usize = 4;

/// The PostgreSQL INSERT of [`stage_postgres`] with its four parameters
/// numbered from `first`, for a producer that stages envelopes inside a
/// larger statement of its own (the bidding log writes a whole group
/// commit in one); bind them with [`bind_postgres_stage`].
pub fn postgres_stage_statement(first: usize) -> String {
    let [ids, topics, bodies, created] = [first, first + 1, first + 2, first + 3];
    format!(
        "INSERT INTO event_outbox (event_id, topic, envelope, created_at_ms) \
         SELECT event_id, topic, envelope, ${created} FROM UNNEST(${ids}::TEXT[], ${topics}::TEXT[], ${bodies}::BYTEA[]) \
         AS staged (event_id, topic, envelope) \
         ON CONFLICT (event_id) DO NOTHING"
    )
}

/// Binds the four parameters of [`postgres_stage_statement`].
pub fn bind_postgres_stage<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    envelopes: &'q [Envelope],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let event_ids: Vec<String> = envelopes
        .iter()
        .map(|envelope| envelope.event_id.to_string())
        .collect();
    let topics: Vec<&str> = envelopes
        .iter()
        .map(|envelope| envelope.topic.as_str())
        .collect();
    let bodies: Vec<Vec<u8>> = envelopes.iter().map(Envelope::to_bytes).collect();
    query
        .bind(event_ids)
        .bind(topics)
        .bind(bodies)
        .bind(now_ms())
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

/// Rows staged and not yet marked published (on SQLite the relay marks a
/// published row within about a second; see the module documentation).
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
    /// SQLite: the longest time published rows stay unmarked while rows
    /// keep coming (see the module's documentation).
    pub mark_interval: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch_size: 256,
            poll_interval: Duration::from_millis(200),
            retention: Duration::from_secs(3_600),
            max_backoff: Duration::from_secs(2),
            mark_interval: Duration::from_secs(1),
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
            let mut marks = Marks::default();
            tokio::select! {
                () = run(&database, bus, wake, &options, &mut marks) => {}
                () = shutdown.wait() => {}
            }
            // Rows published but not yet marked (SQLite) are marked now, so
            // that a stop that lets this finish re-publishes nothing.
            if let Err(error) = marks.mark(&database).await {
                tracing::warn!(%error, "outbox relay: marking published rows at shutdown failed");
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

/// Reads up to `$batch_size` unpublished rows after position `$after`
/// through `$executor` and publishes them; evaluates to their positions.
macro_rules! publish_rows {
    ($executor:expr, $bus:expr, $after:expr, $batch_size:expr) => {{
        let rows = QueryBuilder::new(
            "SELECT position, envelope FROM event_outbox WHERE published_at_ms IS NULL AND position > ",
        )
        .push_bind($after)
        .push(" ORDER BY position LIMIT ")
        .push_bind(i64::from($batch_size))
        .build()
        .fetch_all($executor)
        .await?;
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
        if !envelopes.is_empty() {
            $bus.publish(&envelopes).await?;
        }
        positions
    }};
}

/// How far a SQLite relay has published, and what it has not marked yet.
#[derive(Debug, Default)]
struct Marks {
    /// The last position published by this relay (0 before the first).
    published: i64,
    /// Published rows up to this position may still be unmarked.
    unmarked_through: Option<i64>,
    /// When rows were last marked.
    last_mark: Option<tokio::time::Instant>,
}

impl Marks {
    /// Whether the mark interval has passed since the last mark.
    fn due(&self, interval: Duration) -> bool {
        self.unmarked_through.is_some()
            && self.last_mark.is_none_or(|last| last.elapsed() >= interval)
    }

    /// Marks every row published so far (SQLite; nothing to do otherwise).
    async fn mark(&mut self, database: &Database) -> Result<(), sqlx::Error> {
        let (Database::Sqlite(pool), Some(through)) = (database, self.unmarked_through) else {
            return Ok(());
        };
        // In turn with the service's other writers.
        let _turn = database.write_turn().await;
        QueryBuilder::new("UPDATE event_outbox SET published_at_ms = ")
            .push_bind(now_ms())
            .push(" WHERE published_at_ms IS NULL AND position <= ")
            .push_bind(through)
            .build()
            .execute(pool)
            .await?;
        self.unmarked_through = None;
        self.last_mark = Some(tokio::time::Instant::now());
        Ok(())
    }
}

async fn run(
    database: &Database,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
    options: &RelayOptions,
    marks: &mut Marks,
) {
    let mut backoff = Duration::from_millis(50);
    let mut failing = false;
    let mut last_cleanup = tokio::time::Instant::now();
    loop {
        match relay_batch(database, bus.as_ref(), options, marks).await {
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
                    if let Err(error) = cleanup(database, options.retention).await {
                        tracing::warn!(%error, "outbox relay: cleanup failed");
                    }
                }
                let idle = tokio::select! {
                    () = wake.notified() => false,
                    () = tokio::time::sleep(options.poll_interval) => true,
                };
                // A whole poll interval without new rows: the producer is
                // quiet, so marking now delays none of its commits.
                if idle && let Err(error) = marks.mark(database).await {
                    tracing::warn!(%error, "outbox relay: marking published rows failed");
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
    options: &RelayOptions,
    marks: &mut Marks,
) -> Result<u64, BusError> {
    let batch_size = options.batch_size;
    match database {
        // PostgreSQL: one relay at a time per schema, across processes,
        // through a transaction-scoped advisory lock held while publishing;
        // the rows are marked in the same transaction.
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
            let positions = publish_rows!(&mut *transaction, bus, 0_i64, batch_size);
            if !positions.is_empty() {
                let mut update = QueryBuilder::new("UPDATE event_outbox SET published_at_ms = ");
                update.push_bind(now_ms()).push(" WHERE position = ANY(");
                update.push_bind(&positions).push(")");
                update.build().execute(&mut *transaction).await?;
            }
            transaction.commit().await?;
            Ok(positions.len() as u64)
        }
        // SQLite: one process owns the file and its writers are serialised,
        // so no lock is needed; and no transaction is held while publishing
        // (it would block the producer's writers during a bus outage). The
        // rows are marked later (see the module's documentation).
        Database::Sqlite(pool) => {
            let positions = publish_rows!(pool, bus, marks.published, batch_size);
            if let Some(&last) = positions.last() {
                marks.published = last;
                marks.unmarked_through = Some(last);
                // The rows are published whatever happens to the mark: a
                // failed mark is tried again later, not treated as a failed
                // publish (whose back-off would slow publishing down).
                if marks.due(options.mark_interval)
                    && let Err(error) = marks.mark(database).await
                {
                    tracing::warn!(%error, "outbox relay: marking published rows failed; trying again later");
                }
            }
            Ok(positions.len() as u64)
        }
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

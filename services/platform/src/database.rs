//! Database pools and migrations. Each service owns its tables: with SQLite
//! (the embedded default) one file per service under `storage.data_dir`;
//! with PostgreSQL one schema per service in the configured database. Each
//! service ships two migration folders, `migrations/postgres` and
//! `migrations/sqlite`, applied at start by [`Database::open`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{StorageBackend, StorageConfig};

/// Runs the same code against whichever pool a [`Database`] holds, so a
/// query written once (with `sqlx::QueryBuilder`, whose `push_bind` writes
/// each backend's own placeholder) serves both backends:
///
/// ```no_run
/// # async fn example(database: auction_platform::Database) -> Result<i64, sqlx::Error> {
/// let count: i64 = auction_platform::on_pool!(&database, pool => {
///     sqlx::QueryBuilder::new("SELECT COUNT(*) FROM auctions").build_query_scalar().fetch_one(pool).await
/// })?;
/// # Ok(count)
/// # }
/// ```
#[macro_export]
macro_rules! on_pool {
    ($database:expr, $pool:ident => $body:expr) => {
        match $database {
            $crate::database::Database::Postgres($pool) => $body,
            $crate::database::Database::Sqlite($pool) => $body,
        }
    };
}

/// A SQLite connection one writing task keeps from one transaction to the
/// next (see [`BeginWrite`]). SQLite drops a connection's whole page cache
/// when another connection has written since its last transaction, and the
/// pool hands its connections out in turn: a task that began each
/// transaction on any pooled connection found it stale and read every page
/// of the indexes it touched back in (the bidding log's group committer at
/// 300 bids/s: `sqlite3_step` a quarter of the process, much of it copying
/// pages back; +12 % durable bids over 1,000 auctions once it kept its own).
/// The connection is opened with the pool's options but outside the pool:
/// it takes none of the pool's `max_connections` (a small pool would starve
/// its readers) and closing the pool does not wait for it. Unused on
/// PostgreSQL, whose server keeps one shared cache.
#[derive(Debug, Default)]
pub struct Writer {
    sqlite: Option<sqlx::SqliteConnection>,
}

impl Writer {
    /// Drops the connection (after a failed transaction: the connection
    /// may be what failed); the next transaction opens a new one.
    pub fn release(&mut self) {
        self.sqlite = None;
    }
}

/// Opens a writing transaction: on SQLite on the [`Writer`]'s connection
/// (opened the first time), on PostgreSQL on any pooled one.
/// Use it inside `on_pool!` like `pool.begin()`.
pub trait BeginWrite {
    /// The pool's database.
    type Db: sqlx::Database;

    /// Begins the transaction.
    fn begin_write<'c>(
        &self,
        writer: &'c mut Writer,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'c, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;

    async fn begin_write<'c>(
        &self,
        _writer: &'c mut Writer,
    ) -> Result<sqlx::Transaction<'c, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;

    async fn begin_write<'c>(
        &self,
        writer: &'c mut Writer,
    ) -> Result<sqlx::Transaction<'c, sqlx::Sqlite>, sqlx::Error> {
        let connection = match &mut writer.sqlite {
            Some(connection) => connection,
            empty => {
                empty.insert(sqlx::SqliteConnection::connect_with(&self.connect_options()).await?)
            }
        };
        connection.begin().await
    }
}

/// The migrations of one service, for both backends.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// Applied in the service's PostgreSQL schema.
    pub postgres: &'static Migrator,
    /// Applied in the service's SQLite file.
    pub sqlite: &'static Migrator,
}

/// A service's connection pool.
#[derive(Debug, Clone)]
pub enum Database {
    /// PostgreSQL, with `search_path` set to the service's schema.
    Postgres(PgPool),
    /// SQLite, in WAL mode with full fsync so an acknowledged write survives
    /// a crash.
    Sqlite(SqlitePool),
}

/// Opening or migrating a database failed.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The configuration is not usable.
    #[error("storage configuration: {0}")]
    Config(String),
    /// The server or file could not be reached.
    #[error("cannot connect to the {service} database")]
    Connect {
        /// The service whose database failed.
        service: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("cannot migrate the {service} database")]
    Migrate {
        /// The service whose migration failed.
        service: &'static str,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The data folder could not be created.
    #[error("cannot create the data folder {path}")]
    DataDir {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The write turns of the SQLite files open in this process, by path.
type WriteTurns = std::sync::Mutex<
    std::collections::HashMap<std::path::PathBuf, std::sync::Weak<tokio::sync::Mutex<()>>>,
>;

fn write_turns() -> &'static WriteTurns {
    static TURNS: std::sync::OnceLock<WriteTurns> = std::sync::OnceLock::new();
    TURNS.get_or_init(Default::default)
}

impl Database {
    /// Waits for this process's turn to write to the SQLite file, and holds
    /// it until the guard drops; `None` (at once) on PostgreSQL.
    ///
    /// SQLite admits one writer at a time. Two writers of one file that
    /// collide do not queue: the loser sleeps in SQLite's busy handler (1,
    /// 2, 5, 10, 15 ms... then tries again), which put tens of milliseconds
    /// on a bid's acknowledgement whenever the outbox relay's update met
    /// the bidding log's commit. Writers that take this turn first queue in
    /// order (a fair lock) instead. Reads need no turn (WAL mode).
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let Database::Sqlite(pool) = self else {
            return None;
        };
        let path = pool.connect_options().get_filename().to_path_buf();
        let turn = {
            let mut turns = write_turns()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            turns.retain(|_, turn| turn.strong_count() > 0);
            match turns.get(&path).and_then(std::sync::Weak::upgrade) {
                Some(turn) => turn,
                None => {
                    let turn = std::sync::Arc::new(tokio::sync::Mutex::new(()));
                    turns.insert(path, std::sync::Arc::downgrade(&turn));
                    turn
                }
            }
        };
        Some(turn.lock_owned().await)
    }

    /// Connects to the service's database (creating the SQLite file or the
    /// PostgreSQL schema when missing) and applies its migrations.
    /// `service` is a short lowercase name: it names the file and schema.
    pub async fn open(
        storage: &StorageConfig,
        service: &'static str,
        migrations: Migrations,
    ) -> Result<Self, DatabaseError> {
        debug_assert!(service.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        let connect = |source| DatabaseError::Connect { service, source };
        let database = match storage.backend {
            StorageBackend::Sqlite => {
                std::fs::create_dir_all(&storage.data_dir).map_err(|source| {
                    DatabaseError::DataDir {
                        path: storage.data_dir.display().to_string(),
                        source,
                    }
                })?;
                let options = SqliteConnectOptions::new()
                    .filename(storage.data_dir.join(format!("{service}.db")))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a commit is on disk before we acknowledge it.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(storage.max_connections)
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                migrations
                    .sqlite
                    .run(&pool)
                    .await
                    .map_err(|source| DatabaseError::Migrate { service, source })?;
                Self::Sqlite(pool)
            }
            StorageBackend::Postgres => {
                let url = storage.postgres_url.as_ref().ok_or_else(|| {
                    DatabaseError::Config("storage.postgres_url is required".into())
                })?;
                let base = PgConnectOptions::from_str(url.expose()).map_err(|error| {
                    DatabaseError::Config(format!("storage.postgres_url: {error}"))
                })?;
                create_schema(&base, service).await.map_err(connect)?;
                // Every execution planned with its own values (sqlx keeps
                // statements prepared, so this costs no round trip). With
                // the default, PostgreSQL may settle on a generic plan made
                // while a table was new and unanalysed, and keep it: the
                // bidding log's outcome lookup (keys as an array) kept a
                // hash join over a sequential scan and took 10-50 ms per
                // call within seconds of a fresh start (measured: durable
                // bids fell from ~3,300/s to ~1,000/s).
                let options = base.options([
                    ("search_path", service),
                    ("plan_cache_mode", "force_custom_plan"),
                ]);
                let pool = PgPoolOptions::new()
                    .max_connections(storage.max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                migrations
                    .postgres
                    .run(&pool)
                    .await
                    .map_err(|source| DatabaseError::Migrate { service, source })?;
                Self::Postgres(pool)
            }
        };
        tracing::info!(service, backend = database.backend_name(), "database ready");
        Ok(database)
    }

    /// `postgres` or `sqlite`, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

/// Creates the service's schema. Several services start at once against one
/// database, so a concurrent creation of the same schema is not an error.
async fn create_schema(options: &PgConnectOptions, schema: &str) -> Result<(), sqlx::Error> {
    let mut connection = sqlx::postgres::PgConnection::connect_with(options).await?;
    let statement = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    let created = sqlx::query(&statement).execute(&mut connection).await;
    let outcome = match created {
        Ok(_) => Ok(()),
        // 23505 unique_violation / 42P06 duplicate_schema: another service
        // process created it between our check and our insert.
        Err(sqlx::Error::Database(error))
            if matches!(error.code().as_deref(), Some("23505") | Some("42P06")) =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    };
    connection.close().await?;
    outcome
}

/// The sizes [`fixed_size_chunks`] cuts rows into, largest first.
const CHUNK_SIZES: [usize; 4] = [64, 16, 4, 1];

/// `rows` cut into chunks of 64, 16, 4 and 1 rows (largest first), so a
/// multi-row statement has one of four texts (in the `$n` form of
/// [`values_list`], for both backends) whatever the batch size: each
/// stays prepared in the connection's statement cache instead of a new
/// text (a new prepare, a new plan) for every row count.
pub fn fixed_size_chunks<T>(rows: &[T]) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut rest = rows;
    for size in CHUNK_SIZES {
        while rest.len() >= size {
            let (chunk, tail) = rest.split_at(size);
            chunks.push(chunk);
            rest = tail;
        }
    }
    chunks
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values.
pub fn values_list(rows: usize, columns: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|row| {
            let values: Vec<String> = (1..=columns)
                .map(|column| format!("${}", row * columns + column))
                .collect();
            format!("({})", values.join(", "))
        })
        .collect();
    rows.join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    // Proves every row lands in exactly one chunk, in order, and chunks
    // take only the fixed sizes.
    #[test]
    fn chunks_have_fixed_sizes_and_keep_every_row() {
        for count in 0..300 {
            let rows: Vec<usize> = (0..count).collect();
            let chunks = fixed_size_chunks(&rows);
            assert!(
                chunks
                    .iter()
                    .all(|chunk| CHUNK_SIZES.contains(&chunk.len()))
            );
            assert_eq!(chunks.concat(), rows);
        }
        let sizes: Vec<usize> = fixed_size_chunks(&[0; 87])
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [64, 16, 4, 1, 1, 1]);
    }

    #[test]
    fn values_list_numbers_in_order() {
        assert_eq!(values_list(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values_list(1, 1), "($1)");
    }

    fn sqlite(path: &std::path::Path) -> Database {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Database::Sqlite(SqlitePoolOptions::new().connect_lazy_with(options))
    }

    // Proves two handles on one SQLite file share one write turn (the
    // second waits for the first to end), while another file's is free.
    #[tokio::test]
    async fn writers_of_one_sqlite_file_take_turns() {
        let folder = tempfile::tempdir().unwrap();
        let one = sqlite(&folder.path().join("one.db"));
        let same = sqlite(&folder.path().join("one.db"));
        let other = sqlite(&folder.path().join("other.db"));
        let first = one.write_turn().await.expect("SQLite has a turn");
        let waiting = same.write_turn();
        tokio::pin!(waiting);
        assert!(
            futures::poll!(&mut waiting).is_pending(),
            "a second writer of the file waits"
        );
        assert!(other.write_turn().await.is_some(), "another file is free");
        drop(first);
        assert!(waiting.await.is_some(), "the turn passes on");
    }
}

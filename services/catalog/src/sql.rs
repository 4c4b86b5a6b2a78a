//! One SQL text for both backends. Queries use `$1, $2, ...` placeholders
//! numbered in order of first appearance (PostgreSQL reads them as
//! positions, SQLite as named parameters indexed in the same order), and
//! values go through [`Arg`] so that ids are UUIDs on PostgreSQL and text
//! on SQLite. [`Row`] reads columns back the same way.

use auction_platform::Database;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::store::StoreError;

/// A bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    /// An id: UUID on PostgreSQL, canonical text on SQLite.
    Uuid(Uuid),
    /// An optional id.
    OptUuid(Option<Uuid>),
    /// Text.
    Text(String),
    /// Optional text.
    OptText(Option<String>),
    /// A 64-bit integer (milliseconds, counters).
    Int(i64),
    /// An optional integer.
    OptInt(Option<i64>),
    /// A boolean.
    Bool(bool),
    /// A double (ranks).
    Float(f64),
    /// Bytes (BYTEA / BLOB).
    Bytes(Vec<u8>),
    /// Optional bytes.
    OptBytes(Option<Vec<u8>>),
}

/// A row of either backend.
pub enum Row {
    /// PostgreSQL.
    Postgres(PgRow),
    /// SQLite.
    Sqlite(SqliteRow),
}

impl Row {
    /// An id column.
    pub fn uuid(&self, column: &str) -> Result<Uuid, StoreError> {
        match self {
            Self::Postgres(row) => Ok(row.try_get::<Uuid, _>(column)?),
            Self::Sqlite(row) => row
                .try_get::<String, _>(column)?
                .parse()
                .map_err(|_| StoreError::Corrupt("stored id")),
        }
    }

    /// An optional id column.
    pub fn opt_uuid(&self, column: &str) -> Result<Option<Uuid>, StoreError> {
        match self {
            Self::Postgres(row) => Ok(row.try_get::<Option<Uuid>, _>(column)?),
            Self::Sqlite(row) => row
                .try_get::<Option<String>, _>(column)?
                .map(|text| text.parse().map_err(|_| StoreError::Corrupt("stored id")))
                .transpose(),
        }
    }

    /// A text column.
    pub fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(match self {
            Self::Postgres(row) => row.try_get(column)?,
            Self::Sqlite(row) => row.try_get(column)?,
        })
    }

    /// An optional text column.
    pub fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(match self {
            Self::Postgres(row) => row.try_get(column)?,
            Self::Sqlite(row) => row.try_get(column)?,
        })
    }

    /// An integer column.
    pub fn int(&self, column: &str) -> Result<i64, StoreError> {
        Ok(match self {
            Self::Postgres(row) => row.try_get(column)?,
            Self::Sqlite(row) => row.try_get(column)?,
        })
    }

    /// An optional integer column.
    pub fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            Self::Postgres(row) => row.try_get(column)?,
            Self::Sqlite(row) => row.try_get(column)?,
        })
    }

    /// A bytes column.
    pub fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(match self {
            Self::Postgres(row) => row.try_get(column)?,
            Self::Sqlite(row) => row.try_get(column)?,
        })
    }

    /// An optional bytes column.
    pub fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(match self {
            Self::Postgres(row) => row.try_get(column)?,
            Self::Sqlite(row) => row.try_get(column)?,
        })
    }

    /// A floating-point column (ranks).
    pub fn float(&self, column: &str) -> Result<f64, StoreError> {
        Ok(match self {
            Self::Postgres(row) => row.try_get(column)?,
            Self::Sqlite(row) => row.try_get(column)?,
        })
    }

    /// A boolean column.
    pub fn bool(&self, column: &str) -> Result<bool, StoreError> {
        Ok(match self {
            Self::Postgres(row) => row.try_get(column)?,
            Self::Sqlite(row) => row.try_get(column)?,
        })
    }
}

macro_rules! bind_all {
    ($query:expr, $args:expr, $backend:ident) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Uuid(value) => bind_all!(@uuid query, value, $backend),
                Arg::OptUuid(value) => bind_all!(@opt_uuid query, value, $backend),
                Arg::Text(value) => query.bind(value.clone()),
                Arg::OptText(value) => query.bind(value.clone()),
                Arg::Int(value) => query.bind(*value),
                Arg::OptInt(value) => query.bind(*value),
                Arg::Bool(value) => query.bind(*value),
                Arg::Float(value) => query.bind(*value),
                Arg::Bytes(value) => query.bind(value.clone()),
                Arg::OptBytes(value) => query.bind(value.clone()),
            };
        }
        query
    }};
    (@uuid $query:ident, $value:ident, postgres) => { $query.bind(*$value) };
    (@uuid $query:ident, $value:ident, sqlite) => { $query.bind($value.to_string()) };
    (@opt_uuid $query:ident, $value:ident, postgres) => { $query.bind(*$value) };
    (@opt_uuid $query:ident, $value:ident, sqlite) => { $query.bind($value.map(|id| id.to_string())) };
}

/// A transaction on either backend.
pub enum Transaction {
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// SQLite.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Transaction {
    /// Begins a transaction.
    pub async fn begin(database: &Database) -> Result<Self, StoreError> {
        Ok(match database {
            Database::Postgres(pool) => Self::Postgres(pool.begin().await?),
            Database::Sqlite(pool) => Self::Sqlite(pool.begin().await?),
        })
    }

    /// Begins a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`): a deferred transaction that reads
    /// first and writes later fails with SQLITE_BUSY at once when another
    /// writer committed in between (WAL snapshots), instead of waiting.
    pub async fn begin_write(database: &Database) -> Result<Self, StoreError> {
        Ok(match database {
            Database::Postgres(pool) => Self::Postgres(pool.begin().await?),
            Database::Sqlite(pool) => Self::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// Commits it.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(transaction) => transaction.commit().await?,
            Self::Sqlite(transaction) => transaction.commit().await?,
        }
        Ok(())
    }

    /// Stages bus envelopes in the outbox, published after the commit.
    pub async fn stage(
        &mut self,
        envelopes: &[auction_platform::bus::Envelope],
    ) -> Result<(), StoreError> {
        match self {
            Self::Postgres(transaction) => {
                auction_platform::bus::outbox::stage(transaction, envelopes).await?;
            }
            Self::Sqlite(transaction) => {
                auction_platform::bus::outbox::stage(transaction, envelopes).await?;
            }
        }
        Ok(())
    }

    /// Runs a statement; returns the rows affected.
    pub async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        Ok(match self {
            Self::Postgres(transaction) => bind_all!(sqlx::query(sql), args, postgres)
                .execute(&mut **transaction)
                .await?
                .rows_affected(),
            Self::Sqlite(transaction) => bind_all!(sqlx::query(sql), args, sqlite)
                .execute(&mut **transaction)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query; returns every row.
    pub async fn fetch_all(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, StoreError> {
        Ok(match self {
            Self::Postgres(transaction) => bind_all!(sqlx::query(sql), args, postgres)
                .fetch_all(&mut **transaction)
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect(),
            Self::Sqlite(transaction) => bind_all!(sqlx::query(sql), args, sqlite)
                .fetch_all(&mut **transaction)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
        })
    }

    /// Runs a query; returns the first row, if any.
    pub async fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }
}

/// Runs one statement outside an explicit transaction.
pub async fn execute(database: &Database, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
    Ok(match database {
        Database::Postgres(pool) => bind_all!(sqlx::query(sql), args, postgres)
            .execute(pool)
            .await?
            .rows_affected(),
        Database::Sqlite(pool) => bind_all!(sqlx::query(sql), args, sqlite)
            .execute(pool)
            .await?
            .rows_affected(),
    })
}

/// Runs one query outside an explicit transaction; returns every row.
pub async fn fetch_all(
    database: &Database,
    sql: &str,
    args: &[Arg],
) -> Result<Vec<Row>, StoreError> {
    Ok(match database {
        Database::Postgres(pool) => bind_all!(sqlx::query(sql), args, postgres)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(Row::Postgres)
            .collect(),
        Database::Sqlite(pool) => bind_all!(sqlx::query(sql), args, sqlite)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(Row::Sqlite)
            .collect(),
    })
}

//! One SQL text for both backends (the user service's pattern): queries use
//! `$1, $2, ...` placeholders in order of first appearance, values go
//! through [`Arg`], rows come back as [`Row`]. Ids and exact decimal
//! amounts are stored as text on both backends; ledger sums use the
//! amounts' minor units (64-bit integers), so every total is exact.

use auction_platform::Database;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::store::StoreError;

/// A bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    /// Text (ids, decimal amounts, names).
    Text(String),
    /// Optional text.
    OptText(Option<String>),
    /// A 64-bit integer (milliseconds, minor units, counters).
    Int(i64),
    /// An optional integer.
    OptInt(Option<i64>),
    /// Bytes (stored answers).
    Bytes(Vec<u8>),
}

impl Arg {
    /// An id as text.
    pub fn id(id: Uuid) -> Self {
        Self::Text(id.to_string())
    }

    /// An optional id as text.
    pub fn opt_id(id: Option<Uuid>) -> Self {
        Self::OptText(id.map(|id| id.to_string()))
    }

    /// Text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }
}

/// A row of either backend.
pub enum Row {
    /// PostgreSQL.
    Postgres(PgRow),
    /// SQLite.
    Sqlite(SqliteRow),
}

impl Row {
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

    /// An id column.
    pub fn id(&self, column: &str) -> Result<Uuid, StoreError> {
        self.text(column)?
            .parse()
            .map_err(|_| StoreError::Corrupt("stored id"))
    }

    /// An optional id column.
    pub fn opt_id(&self, column: &str) -> Result<Option<Uuid>, StoreError> {
        self.opt_text(column)?
            .filter(|text| !text.is_empty())
            .map(|text| text.parse().map_err(|_| StoreError::Corrupt("stored id")))
            .transpose()
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

    /// An optional bytes column.
    pub fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(match self {
            Self::Postgres(row) => row.try_get(column)?,
            Self::Sqlite(row) => row.try_get(column)?,
        })
    }
}

macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Text(value) => query.bind(value.clone()),
                Arg::OptText(value) => query.bind(value.clone()),
                Arg::Int(value) => query.bind(*value),
                Arg::OptInt(value) => query.bind(*value),
                Arg::Bytes(value) => query.bind(value.clone()),
            };
        }
        query
    }};
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

    /// Begins a read-only transaction whose reads all see one snapshot
    /// (REPEATABLE READ on PostgreSQL; a SQLite read transaction in WAL
    /// mode keeps its first read's snapshot), for reports such as the
    /// reconciliation that must not mix states.
    pub async fn begin_snapshot(database: &Database) -> Result<Self, StoreError> {
        let mut transaction = Self::begin(database).await?;
        if let Self::Postgres(inner) = &mut transaction {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut **inner)
                .await?;
        }
        Ok(transaction)
    }

    /// Whether this is PostgreSQL (row locks with `FOR UPDATE`).
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Commits it.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(transaction) => transaction.commit().await?,
            Self::Sqlite(transaction) => transaction.commit().await?,
        }
        Ok(())
    }

    /// Rolls it back.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(transaction) => transaction.rollback().await?,
            Self::Sqlite(transaction) => transaction.rollback().await?,
        }
        Ok(())
    }

    /// Stages bus envelopes in the outbox of this transaction.
    pub async fn stage(
        &mut self,
        envelopes: &[auction_platform::bus::Envelope],
    ) -> Result<(), StoreError> {
        match self {
            Self::Postgres(transaction) => {
                auction_platform::bus::outbox::stage(transaction, envelopes)
                    .await
                    .map_err(StoreError::Outbox)?;
            }
            Self::Sqlite(transaction) => {
                auction_platform::bus::outbox::stage(transaction, envelopes)
                    .await
                    .map_err(StoreError::Outbox)?;
            }
        }
        Ok(())
    }

    /// Runs a statement; returns the rows affected.
    pub async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        Ok(match self {
            Self::Postgres(transaction) => bind_all!(sqlx::query(sql), args)
                .execute(&mut **transaction)
                .await?
                .rows_affected(),
            Self::Sqlite(transaction) => bind_all!(sqlx::query(sql), args)
                .execute(&mut **transaction)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query; returns every row.
    pub async fn fetch_all(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, StoreError> {
        Ok(match self {
            Self::Postgres(transaction) => bind_all!(sqlx::query(sql), args)
                .fetch_all(&mut **transaction)
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect(),
            Self::Sqlite(transaction) => bind_all!(sqlx::query(sql), args)
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

/// Runs one query outside an explicit transaction; returns every row.
pub async fn fetch_all(
    database: &Database,
    sql: &str,
    args: &[Arg],
) -> Result<Vec<Row>, StoreError> {
    Ok(match database {
        Database::Postgres(pool) => bind_all!(sqlx::query(sql), args)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(Row::Postgres)
            .collect(),
        Database::Sqlite(pool) => bind_all!(sqlx::query(sql), args)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(Row::Sqlite)
            .collect(),
    })
}

/// Runs one query outside an explicit transaction; returns the first row.
pub async fn fetch_optional(
    database: &Database,
    sql: &str,
    args: &[Arg],
) -> Result<Option<Row>, StoreError> {
    Ok(fetch_all(database, sql, args).await?.into_iter().next())
}

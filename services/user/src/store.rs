//! The user service's tables, on PostgreSQL or SQLite.

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use auction_platform::Database;
use uuid::Uuid;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("user store")]
    Database(#[from] sqlx::Error),
    /// Hashing a password failed.
    #[error("cannot hash the password")]
    Hash,
    /// A value was not acceptable.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// An account to create; `password` is hashed with argon2id before storing.
pub struct NewUser {
    /// UUIDv7.
    pub id: Uuid,
    /// Unique e-mail.
    pub email: String,
    /// Unique login name.
    pub username: String,
    /// The clear password; only its hash is stored.
    pub password: String,
    /// Shown to other users.
    pub display_name: String,
    /// `bidder`, `seller`, `auctioneer`, `admin`.
    pub roles: Vec<String>,
}

/// Milliseconds since the Unix epoch, for `*_at_ms` columns.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Hashes a password into an argon2id PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|_| StoreError::Hash)
}

/// How many accounts exist.
pub async fn count_users(database: &Database) -> Result<i64, StoreError> {
    let count = match database {
        Database::Postgres(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(pool)
                .await?
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(pool)
                .await?
        }
    };
    Ok(count)
}

/// Creates an account and its roles in one transaction.
pub async fn insert_user(
    database: &Database,
    user: &NewUser,
    now_ms: i64,
) -> Result<(), StoreError> {
    let hash = hash_password(&user.password)?;
    match database {
        Database::Postgres(pool) => {
            let mut transaction = pool.begin().await?;
            sqlx::query(
                "INSERT INTO users (id, email, username, password_hash, display_name, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(user.id)
            .bind(&user.email)
            .bind(&user.username)
            .bind(&hash)
            .bind(&user.display_name)
            .bind(now_ms)
            .execute(&mut *transaction)
            .await?;
            for role in &user.roles {
                sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                    .bind(user.id)
                    .bind(role)
                    .execute(&mut *transaction)
                    .await?;
            }
            transaction.commit().await?;
        }
        Database::Sqlite(pool) => {
            let mut transaction = pool.begin().await?;
            sqlx::query(
                "INSERT INTO users (id, email, username, password_hash, display_name, created_at_ms, updated_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )
            .bind(user.id.to_string())
            .bind(&user.email)
            .bind(&user.username)
            .bind(&hash)
            .bind(&user.display_name)
            .bind(now_ms)
            .execute(&mut *transaction)
            .await?;
            for role in &user.roles {
                sqlx::query("INSERT INTO user_roles (user_id, role) VALUES (?1, ?2)")
                    .bind(user.id.to_string())
                    .bind(role)
                    .execute(&mut *transaction)
                    .await?;
            }
            transaction.commit().await?;
        }
    }
    Ok(())
}

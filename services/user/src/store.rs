//! The user service's tables, on PostgreSQL or SQLite (one SQL text for
//! both, see [`crate::sql`]). Secrets are never stored: passwords as
//! argon2id PHC strings, refresh tokens, API keys and recovery codes as
//! SHA-256 hashes (they are long random strings, so a fast hash suffices).

use std::collections::BTreeSet;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use auction_platform::Database;
use auction_platform::auth::{Role, Scope};
use uuid::Uuid;

use crate::sql::{self, Arg, Executor, Row, Transaction};

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
    /// The e-mail belongs to another account.
    #[error("the e-mail is taken")]
    EmailTaken,
    /// The handle belongs to another account.
    #[error("the handle is taken")]
    HandleTaken,
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

pub use auction_platform::now_ms;

/// Hashes a password into an argon2id PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|_| StoreError::Hash)
}

/// Whether `password` matches the stored PHC string.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// SHA-256 of a high-entropy secret (refresh token, API key, recovery
/// code), hex.
pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// How many accounts exist.
pub async fn count_users(database: &Database) -> Result<i64, StoreError> {
    let row = sql::fetch_optional(database, "SELECT COUNT(*) AS n FROM users", &[]).await?;
    row.map_or(Ok(0), |row| row.int("n"))
}

fn map_unique(error: StoreError) -> StoreError {
    if let StoreError::Database(sqlx::Error::Database(database_error)) = &error
        && database_error.is_unique_violation()
    {
        let message = database_error.message().to_owned();
        let constraint = database_error.constraint().unwrap_or_default().to_owned();
        if message.contains("email") || constraint.contains("email") {
            return StoreError::EmailTaken;
        }
        if message.contains("username") || constraint.contains("username") {
            return StoreError::HandleTaken;
        }
    }
    error
}

/// Creates an account, its roles and interests in one transaction.
pub async fn insert_user(
    database: &Database,
    user: &NewUser,
    now_ms: i64,
) -> Result<(), StoreError> {
    let hash = hash_password(&user.password)?;
    let mut transaction = Transaction::begin(database).await?;
    insert_user_with(&mut transaction, user, &hash, &[], "", now_ms).await?;
    transaction.commit().await
}

/// [`insert_user`] inside a transaction, with the password already hashed
/// (hashing is slow; it is done before the transaction holds locks), with
/// interests and a country. `user.password` is not read.
pub async fn insert_user_with(
    transaction: &mut Transaction,
    user: &NewUser,
    password_hash: &str,
    interests: &[String],
    country: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "INSERT INTO users (id, email, username, password_hash, display_name, location, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                Arg::Uuid(user.id),
                Arg::Text(user.email.clone()),
                Arg::Text(user.username.clone()),
                Arg::Text(password_hash.to_owned()),
                Arg::Text(user.display_name.clone()),
                Arg::Text(country.to_owned()),
                Arg::Int(now_ms),
                Arg::Int(now_ms),
            ],
        )
        .await
        .map_err(map_unique)?;
    for role in &user.roles {
        transaction
            .execute(
                "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
                &[Arg::Uuid(user.id), Arg::Text(role.clone())],
            )
            .await?;
    }
    for interest in interests {
        transaction
            .execute(
                "INSERT INTO user_interests (user_id, category_slug) VALUES ($1, $2)",
                &[Arg::Uuid(user.id), Arg::Text(interest.clone())],
            )
            .await?;
    }
    Ok(())
}

/// An account as stored.
#[derive(Clone)]
pub struct UserRecord {
    /// Id.
    pub id: Uuid,
    /// Login e-mail (lowercase).
    pub email: String,
    /// The address the user proved they read, if any; `email` is verified
    /// while it equals this one.
    pub verified_email: Option<String>,
    /// Public handle.
    pub handle: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Display name.
    pub display_name: String,
    /// ISO 3166-1 alpha-2 country, or empty.
    pub country: String,
    /// Bio.
    pub bio: String,
    /// BCP 47 tag.
    pub locale: String,
    /// ISO 4217 code or empty.
    pub preferred_currency: String,
    /// Whether suspended.
    pub suspended: bool,
    /// Why.
    pub suspension_reason: Option<String>,
    /// Since when.
    pub suspended_at_ms: Option<i64>,
    /// Until when (None = indefinite).
    pub suspended_until_ms: Option<i64>,
    /// By whom.
    pub suspended_by: Option<Uuid>,
    /// Confirmed TOTP secret (base32).
    pub totp_secret: Option<String>,
    /// Pending TOTP secret.
    pub totp_pending_secret: Option<String>,
    /// Pending until.
    pub totp_pending_expires_at_ms: Option<i64>,
    /// Registration time.
    pub created_at_ms: i64,
    /// Last profile change.
    pub updated_at_ms: i64,
    /// Roles.
    pub roles: BTreeSet<Role>,
    /// Interest category ids.
    pub interests: Vec<String>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password hash or TOTP secrets.
        formatter
            .debug_struct("UserRecord")
            .field("id", &self.id)
            .field("handle", &self.handle)
            .field("suspended", &self.suspended)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    /// Whether the account is suspended at `now_ms`.
    pub fn is_suspended(&self, now_ms: i64) -> bool {
        self.suspended && self.suspended_until_ms.is_none_or(|until| until > now_ms)
    }

    /// Whether the account's current address is verified.
    pub fn email_verified(&self) -> bool {
        self.verified_email.as_deref() == Some(self.email.as_str())
    }

    /// The address notifications may use: the e-mail if verified, else
    /// empty (BusUserContactChanged.email).
    pub fn contact_email(&self) -> &str {
        if self.email_verified() {
            &self.email
        } else {
            ""
        }
    }
}

const USER_COLUMNS: &str = "id, email, verified_email, username, password_hash, display_name, location, bio, locale, \
     preferred_currency, suspended, suspension_reason, suspended_at_ms, suspended_until_ms, \
     suspended_by, totp_secret, totp_pending_secret, totp_pending_expires_at_ms, created_at_ms, updated_at_ms";

async fn user_from_row(conn: &mut impl Executor, row: &Row) -> Result<UserRecord, StoreError> {
    let id = row.uuid("id")?;
    let roles = conn
        .rows(
            "SELECT role FROM user_roles WHERE user_id = $1",
            &[Arg::Uuid(id)],
        )
        .await?
        .iter()
        .map(|row| row.text("role"))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .filter_map(|name| Role::from_storage_name(name))
        .collect();
    let interests = conn
        .rows(
            "SELECT category_slug FROM user_interests WHERE user_id = $1 ORDER BY category_slug",
            &[Arg::Uuid(id)],
        )
        .await?
        .iter()
        .map(|row| row.text("category_slug"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UserRecord {
        id,
        email: row.text("email")?,
        verified_email: row.opt_text("verified_email")?,
        handle: row.text("username")?,
        password_hash: row.text("password_hash")?,
        display_name: row.text("display_name")?,
        country: row.text("location")?,
        bio: row.text("bio")?,
        locale: row.text("locale")?,
        preferred_currency: row.text("preferred_currency")?,
        suspended: row.bool("suspended")?,
        suspension_reason: row.opt_text("suspension_reason")?,
        suspended_at_ms: row.opt_int("suspended_at_ms")?,
        suspended_until_ms: row.opt_int("suspended_until_ms")?,
        suspended_by: row.opt_uuid("suspended_by")?,
        totp_secret: row.opt_text("totp_secret")?,
        totp_pending_secret: row.opt_text("totp_pending_secret")?,
        totp_pending_expires_at_ms: row.opt_int("totp_pending_expires_at_ms")?,
        created_at_ms: row.int("created_at_ms")?,
        updated_at_ms: row.int("updated_at_ms")?,
        roles,
        interests,
    })
}

/// The account with this (lowercase) e-mail.
pub async fn find_user_by_email(
    conn: &mut impl Executor,
    email: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let row = conn
        .row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"),
            &[Arg::Text(email.to_owned())],
        )
        .await?;
    match row {
        Some(row) => Ok(Some(user_from_row(conn, &row).await?)),
        None => Ok(None),
    }
}

/// The account with this id.
pub async fn find_user(
    conn: &mut impl Executor,
    id: Uuid,
) -> Result<Option<UserRecord>, StoreError> {
    let row = conn
        .row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
            &[Arg::Uuid(id)],
        )
        .await?;
    match row {
        Some(row) => Ok(Some(user_from_row(conn, &row).await?)),
        None => Ok(None),
    }
}

/// Accounts, newest first, optionally filtered by a substring of e-mail,
/// handle or display name; at most `limit`, skipping `offset`.
pub async fn list_users(
    database: &Database,
    query: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<UserRecord>, StoreError> {
    let pattern = format!("%{}%", query.to_lowercase());
    let rows = sql::fetch_all(
        database,
        &format!(
            "SELECT {USER_COLUMNS} FROM users WHERE LOWER(email) LIKE $1 OR LOWER(username) LIKE $1 \
             OR LOWER(display_name) LIKE $1 ORDER BY created_at_ms DESC, id DESC LIMIT $2 OFFSET $3"
        ),
        &[Arg::Text(pattern), Arg::Int(limit), Arg::Int(offset)],
    )
    .await?;
    let mut users = Vec::with_capacity(rows.len());
    for row in &rows {
        users.push(user_from_row(&mut sql::Pool(database), row).await?);
    }
    Ok(users)
}

/// Replaces the roles of an account.
pub async fn set_roles(
    transaction: &mut Transaction,
    user_id: Uuid,
    roles: &BTreeSet<Role>,
    now_ms: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "UPDATE users SET updated_at_ms = $1 WHERE id = $2",
            &[Arg::Int(now_ms), Arg::Uuid(user_id)],
        )
        .await?;
    transaction
        .execute(
            "DELETE FROM user_roles WHERE user_id = $1",
            &[Arg::Uuid(user_id)],
        )
        .await?;
    for role in roles {
        transaction
            .execute(
                "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
                &[
                    Arg::Uuid(user_id),
                    Arg::Text(role.storage_name().to_owned()),
                ],
            )
            .await?;
    }
    Ok(())
}

/// The profile fields UpdateProfile may change; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct ProfileChange {
    /// New handle.
    pub handle: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New bio.
    pub bio: Option<String>,
    /// New country.
    pub country: Option<String>,
    /// New preferred currency.
    pub preferred_currency: Option<String>,
    /// New locale.
    pub locale: Option<String>,
    /// New interests (replacing the list).
    pub interests: Option<Vec<String>>,
}

/// Applies a profile change in one transaction.
pub async fn update_profile(
    transaction: &mut Transaction,
    user_id: Uuid,
    change: &ProfileChange,
    now_ms: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "UPDATE users SET username = COALESCE($1, username), display_name = COALESCE($2, display_name), \
             bio = COALESCE($3, bio), location = COALESCE($4, location), \
             preferred_currency = COALESCE($5, preferred_currency), locale = COALESCE($6, locale), \
             updated_at_ms = $7 WHERE id = $8",
            &[
                Arg::OptText(change.handle.clone()),
                Arg::OptText(change.display_name.clone()),
                Arg::OptText(change.bio.clone()),
                Arg::OptText(change.country.clone()),
                Arg::OptText(change.preferred_currency.clone()),
                Arg::OptText(change.locale.clone()),
                Arg::Int(now_ms),
                Arg::Uuid(user_id),
            ],
        )
        .await
        .map_err(map_unique)?;
    if let Some(interests) = &change.interests {
        transaction
            .execute(
                "DELETE FROM user_interests WHERE user_id = $1",
                &[Arg::Uuid(user_id)],
            )
            .await?;
        for interest in interests {
            transaction
                .execute(
                    "INSERT INTO user_interests (user_id, category_slug) VALUES ($1, $2)",
                    &[Arg::Uuid(user_id), Arg::Text(interest.clone())],
                )
                .await?;
        }
    }
    Ok(())
}

/// Replaces the password hash.
pub async fn set_password(
    conn: &mut impl Executor,
    user_id: Uuid,
    password_hash: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let hash = password_hash.to_owned();
    conn.run(
        "UPDATE users SET password_hash = $1, updated_at_ms = $2 WHERE id = $3",
        &[Arg::Text(hash), Arg::Int(now_ms), Arg::Uuid(user_id)],
    )
    .await?;
    Ok(())
}

/// Suspends an account and revokes its sessions; false if it already was.
pub async fn suspend(
    transaction: &mut Transaction,
    user_id: Uuid,
    reason: &str,
    until_ms: Option<i64>,
    by: Uuid,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let changed = transaction
        .execute(
            "UPDATE users SET suspended = $1, suspension_reason = $2, suspended_at_ms = $3, \
             suspended_until_ms = $4, suspended_by = $5, updated_at_ms = $3 \
             WHERE id = $6 AND (suspended = $7 OR (suspended_until_ms IS NOT NULL AND suspended_until_ms <= $3))",
            &[
                Arg::Bool(true),
                Arg::Text(reason.to_owned()),
                Arg::Int(now_ms),
                Arg::OptInt(until_ms),
                Arg::Uuid(by),
                Arg::Uuid(user_id),
                Arg::Bool(false),
            ],
        )
        .await?;
    if changed == 1 {
        transaction
            .execute(
                "UPDATE sessions SET revoked_at_ms = $1, revoke_reason = $2 \
                 WHERE user_id = $3 AND revoked_at_ms IS NULL",
                &[
                    Arg::Int(now_ms),
                    Arg::Text("suspended".to_owned()),
                    Arg::Uuid(user_id),
                ],
            )
            .await?;
    }
    Ok(changed == 1)
}

/// Lifts a suspension; false if the account was not suspended.
pub async fn unsuspend(
    conn: &mut impl Executor,
    user_id: Uuid,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let changed = conn.run("UPDATE users SET suspended = $1, suspension_reason = NULL, suspended_at_ms = NULL, \
         suspended_until_ms = NULL, suspended_by = NULL, updated_at_ms = $2 WHERE id = $3 AND suspended = $4",
        &[
            Arg::Bool(false),
            Arg::Int(now_ms),
            Arg::Uuid(user_id),
            Arg::Bool(true),
        ],
    )
    .await?;
    Ok(changed == 1)
}

// ----- sessions and refresh tokens -----

/// A session as stored.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Session (family) id.
    pub id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// Whether it was opened with a second factor.
    pub second_factor: bool,
    /// Refresh tokens stop working at this time.
    pub expires_at_ms: i64,
    /// Set once revoked.
    pub revoked_at_ms: Option<i64>,
}

/// Opens a session and stores the hash of its first refresh token.
pub async fn create_session(
    transaction: &mut Transaction,
    session_id: Uuid,
    user_id: Uuid,
    second_factor: bool,
    refresh_token: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "INSERT INTO sessions (id, user_id, second_factor, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                Arg::Uuid(session_id),
                Arg::Uuid(user_id),
                Arg::Bool(second_factor),
                Arg::Int(now_ms),
                Arg::Int(expires_at_ms),
            ],
        )
        .await?;
    transaction
        .execute(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at_ms) VALUES ($1, $2, $3)",
            &[
                Arg::Text(secret_hash(refresh_token)),
                Arg::Uuid(session_id),
                Arg::Int(now_ms),
            ],
        )
        .await?;
    Ok(())
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// The token was current: it is now spent and `next` is stored.
    Rotated(SessionRecord),
    /// The token was already spent: theft assumed, the family is revoked.
    Reused {
        /// The revoked session.
        session_id: Uuid,
    },
    /// The session is revoked or expired.
    SessionEnded,
    /// No such token.
    Unknown,
}

fn session_from_row(row: &Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: row.uuid("id")?,
        user_id: row.uuid("user_id")?,
        second_factor: row.bool("second_factor")?,
        expires_at_ms: row.int("expires_at_ms")?,
        revoked_at_ms: row.opt_int("revoked_at_ms")?,
    })
}

/// Spends `presented` and stores `next` in its place, or detects reuse and
/// revokes the whole family. The spend is one conditional UPDATE, so two
/// concurrent uses of the same token cannot both succeed.
pub async fn rotate_refresh_token(
    transaction: &mut Transaction,
    presented: &str,
    next: &str,
    now_ms: i64,
) -> Result<Rotation, StoreError> {
    let presented_hash = secret_hash(presented);
    // Write first: SQLite then holds the write lock for the whole transaction.
    let spent = transaction
        .execute(
            "UPDATE refresh_tokens SET used_at_ms = $1 WHERE token_hash = $2 AND used_at_ms IS NULL",
            &[Arg::Int(now_ms), Arg::Text(presented_hash.clone())],
        )
        .await?;
    let Some(row) = transaction
        .fetch_optional(
            "SELECT s.id, s.user_id, s.second_factor, s.expires_at_ms, s.revoked_at_ms \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
            &[Arg::Text(presented_hash)],
        )
        .await?
    else {
        return Ok(Rotation::Unknown);
    };
    let session = session_from_row(&row)?;
    if spent == 0 {
        // Already spent: whoever holds it now is not the rightful client.
        transaction
            .execute(
                "UPDATE sessions SET revoked_at_ms = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at_ms IS NULL",
                &[
                    Arg::Int(now_ms),
                    Arg::Text("refresh token reused".to_owned()),
                    Arg::Uuid(session.id),
                ],
            )
            .await?;
        return Ok(Rotation::Reused {
            session_id: session.id,
        });
    }
    if session.revoked_at_ms.is_some() || session.expires_at_ms <= now_ms {
        return Ok(Rotation::SessionEnded);
    }
    transaction
        .execute(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at_ms) VALUES ($1, $2, $3)",
            &[
                Arg::Text(secret_hash(next)),
                Arg::Uuid(session.id),
                Arg::Int(now_ms),
            ],
        )
        .await?;
    Ok(Rotation::Rotated(session))
}

/// The session a refresh token belongs to.
pub async fn session_of_refresh_token(
    conn: &mut impl Executor,
    token: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    let row = conn
        .row(
            "SELECT s.id, s.user_id, s.second_factor, s.expires_at_ms, s.revoked_at_ms \
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
            &[Arg::Text(secret_hash(token))],
        )
        .await?;
    row.as_ref().map(session_from_row).transpose()
}

/// Revokes one session; returns how many were revoked (0 or 1).
pub async fn revoke_session(
    conn: &mut impl Executor,
    session_id: Uuid,
    reason: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    conn.run("UPDATE sessions SET revoked_at_ms = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at_ms IS NULL",
        &[
            Arg::Int(now_ms),
            Arg::Text(reason.to_owned()),
            Arg::Uuid(session_id),
        ],
    )
    .await
}

/// Revokes every session of a user except `keep`; returns how many.
pub async fn revoke_user_sessions(
    conn: &mut impl Executor,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    conn.run(
        "UPDATE sessions SET revoked_at_ms = $1, revoke_reason = $2 \
         WHERE user_id = $3 AND revoked_at_ms IS NULL AND ($4 IS NULL OR id <> $4)",
        &[
            Arg::Int(now_ms),
            Arg::Text(reason.to_owned()),
            Arg::Uuid(user_id),
            Arg::OptUuid(keep),
        ],
    )
    .await
}

// ----- e-mail verification -----

/// The verification e-mails an account caused recently, for the rate limit.
#[derive(Debug, Clone, Copy)]
pub struct VerificationsSent {
    /// How many since the start of the window.
    pub count: i64,
    /// The oldest of them (when the window frees a place).
    pub oldest_ms: Option<i64>,
    /// The newest of them (for the resend interval).
    pub newest_ms: Option<i64>,
}

/// Takes the account's row lock for the rest of the transaction (a no-op
/// update), so two concurrent requests of one account are counted one after
/// the other. SQLite has one writer anyway.
pub async fn lock_user(conn: &mut impl Executor, user_id: Uuid) -> Result<(), StoreError> {
    conn.run(
        "UPDATE users SET updated_at_ms = updated_at_ms WHERE id = $1",
        &[Arg::Uuid(user_id)],
    )
    .await?;
    Ok(())
}

/// The verification e-mails of `user_id` created after `since_ms`.
pub async fn verifications_sent(
    conn: &mut impl Executor,
    user_id: Uuid,
    since_ms: i64,
) -> Result<VerificationsSent, StoreError> {
    let row = conn
        .row(
            "SELECT COUNT(*) AS n, MIN(created_at_ms) AS oldest, MAX(created_at_ms) AS newest \
             FROM email_verifications WHERE user_id = $1 AND created_at_ms > $2",
            &[Arg::Uuid(user_id), Arg::Int(since_ms)],
        )
        .await?;
    match row {
        Some(row) => Ok(VerificationsSent {
            count: row.int("n")?,
            oldest_ms: row.opt_int("oldest")?,
            newest_ms: row.opt_int("newest")?,
        }),
        None => Ok(VerificationsSent {
            count: 0,
            oldest_ms: None,
            newest_ms: None,
        }),
    }
}

/// Stores a verification token (its hash) for `email`.
pub async fn insert_email_verification(
    conn: &mut impl Executor,
    token_hash: &str,
    user_id: Uuid,
    email: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    conn.run(
        "INSERT INTO email_verifications (token_hash, user_id, email, created_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            Arg::Text(token_hash.to_owned()),
            Arg::Uuid(user_id),
            Arg::Text(email.to_owned()),
            Arg::Int(now_ms),
            Arg::Int(expires_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// A stored verification token.
#[derive(Debug, Clone)]
pub struct EmailVerificationRecord {
    /// The account.
    pub user_id: Uuid,
    /// The address it was mailed to.
    pub email: String,
    /// When it stops being accepted.
    pub expires_at_ms: i64,
    /// When it was used (or retired by another token's use).
    pub used_at_ms: Option<i64>,
}

/// The token with this hash.
pub async fn find_email_verification(
    conn: &mut impl Executor,
    token_hash: &str,
) -> Result<Option<EmailVerificationRecord>, StoreError> {
    let row = conn
        .row(
            "SELECT user_id, email, expires_at_ms, used_at_ms FROM email_verifications WHERE token_hash = $1",
            &[Arg::Text(token_hash.to_owned())],
        )
        .await?;
    row.map(|row| {
        Ok(EmailVerificationRecord {
            user_id: row.uuid("user_id")?,
            email: row.text("email")?,
            expires_at_ms: row.int("expires_at_ms")?,
            used_at_ms: row.opt_int("used_at_ms")?,
        })
    })
    .transpose()
}

/// Marks `email` verified for `user_id` and retires every unused token of
/// the account (the one presented included). Returns false if the token
/// `token_hash` was used meanwhile (a concurrent VerifyEmail won).
pub async fn mark_email_verified(
    conn: &mut impl Executor,
    user_id: Uuid,
    email: &str,
    token_hash: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let claimed = conn
        .run(
            "UPDATE email_verifications SET used_at_ms = $1 WHERE token_hash = $2 AND used_at_ms IS NULL",
            &[Arg::Int(now_ms), Arg::Text(token_hash.to_owned())],
        )
        .await?;
    if claimed == 0 {
        return Ok(false);
    }
    conn.run(
        "UPDATE email_verifications SET used_at_ms = $1 WHERE user_id = $2 AND used_at_ms IS NULL",
        &[Arg::Int(now_ms), Arg::Uuid(user_id)],
    )
    .await?;
    conn.run(
        "UPDATE users SET verified_email = $1, updated_at_ms = $2 WHERE id = $3",
        &[
            Arg::Text(email.to_owned()),
            Arg::Int(now_ms),
            Arg::Uuid(user_id),
        ],
    )
    .await?;
    Ok(true)
}

/// Deletes verification rows that can matter no more: expired for a week
/// and older than the rate limit's day.
pub async fn purge_email_verifications(
    database: &Database,
    now_ms: i64,
) -> Result<u64, StoreError> {
    const WEEK_MS: i64 = 7 * 86_400_000;
    sql::execute(
        database,
        "DELETE FROM email_verifications WHERE expires_at_ms <= $1 AND created_at_ms <= $2",
        &[Arg::Int(now_ms - WEEK_MS), Arg::Int(now_ms - 86_400_000)],
    )
    .await
}

// ----- sign-in throttling -----

/// Failed logins for `email` and from `source` since `since_ms`, and the
/// oldest of each (to compute when the window frees up).
#[derive(Debug, Clone, Copy)]
pub struct FailureCounts {
    /// Failures for the account.
    pub email: i64,
    /// Oldest failure for the account in the window.
    pub email_oldest_ms: Option<i64>,
    /// Failures from the source.
    pub source: i64,
    /// Oldest failure from the source in the window.
    pub source_oldest_ms: Option<i64>,
}

/// Counts recent failed logins.
pub async fn count_login_failures(
    database: &Database,
    email: &str,
    source: &str,
    since_ms: i64,
) -> Result<FailureCounts, StoreError> {
    let by_email = sql::fetch_optional(
        database,
        "SELECT COUNT(*) AS n, MIN(at_ms) AS oldest FROM login_failures WHERE email = $1 AND at_ms > $2",
        &[Arg::Text(email.to_owned()), Arg::Int(since_ms)],
    )
    .await?;
    let by_source = sql::fetch_optional(
        database,
        "SELECT COUNT(*) AS n, MIN(at_ms) AS oldest FROM login_failures WHERE source = $1 AND at_ms > $2",
        &[Arg::Text(source.to_owned()), Arg::Int(since_ms)],
    )
    .await?;
    let read = |row: Option<Row>| -> Result<(i64, Option<i64>), StoreError> {
        match row {
            Some(row) => Ok((row.int("n")?, row.opt_int("oldest")?)),
            None => Ok((0, None)),
        }
    };
    let (email_count, email_oldest_ms) = read(by_email)?;
    let (source_count, source_oldest_ms) = read(by_source)?;
    Ok(FailureCounts {
        email: email_count,
        email_oldest_ms,
        source: source_count,
        source_oldest_ms,
    })
}

/// Records a failed login, and forgets failures older than `forget_before_ms`.
pub async fn record_login_failure(
    conn: &mut impl Executor,
    email: &str,
    source: &str,
    now_ms: i64,
    forget_before_ms: i64,
) -> Result<(), StoreError> {
    conn.run(
        "INSERT INTO login_failures (id, email, source, at_ms) VALUES ($1, $2, $3, $4)",
        &[
            Arg::Uuid(Uuid::now_v7()),
            Arg::Text(email.to_owned()),
            Arg::Text(source.to_owned()),
            Arg::Int(now_ms),
        ],
    )
    .await?;
    conn.run(
        "DELETE FROM login_failures WHERE at_ms <= $1",
        &[Arg::Int(forget_before_ms)],
    )
    .await?;
    Ok(())
}

/// Forgets an account's failed logins after a successful one.
pub async fn clear_login_failures(conn: &mut impl Executor, email: &str) -> Result<(), StoreError> {
    conn.run(
        "DELETE FROM login_failures WHERE email = $1",
        &[Arg::Text(email.to_owned())],
    )
    .await?;
    Ok(())
}

// ----- TOTP -----

/// Stores a pending TOTP secret until `expires_at_ms`.
pub async fn set_pending_totp(
    conn: &mut impl Executor,
    user_id: Uuid,
    secret: &str,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    conn.run(
        "UPDATE users SET totp_pending_secret = $1, totp_pending_expires_at_ms = $2 WHERE id = $3",
        &[
            Arg::Text(secret.to_owned()),
            Arg::Int(expires_at_ms),
            Arg::Uuid(user_id),
        ],
    )
    .await?;
    Ok(())
}

/// Accepts a TOTP step for a user only if it is later than every step
/// accepted before (a code works once). Returns whether it was accepted.
pub async fn accept_totp_step(
    conn: &mut impl Executor,
    user_id: Uuid,
    step: i64,
) -> Result<bool, StoreError> {
    let changed = conn.run("UPDATE users SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        &[Arg::Int(step), Arg::Uuid(user_id)],
    )
    .await?;
    Ok(changed == 1)
}

/// Activates the pending secret and stores recovery-code hashes.
pub async fn confirm_totp(
    transaction: &mut Transaction,
    user_id: Uuid,
    recovery_codes: &[String],
    now_ms: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "UPDATE users SET totp_secret = totp_pending_secret, totp_pending_secret = NULL, \
             totp_pending_expires_at_ms = NULL, updated_at_ms = $1 WHERE id = $2",
            &[Arg::Int(now_ms), Arg::Uuid(user_id)],
        )
        .await?;
    transaction
        .execute(
            "DELETE FROM recovery_codes WHERE user_id = $1",
            &[Arg::Uuid(user_id)],
        )
        .await?;
    for code in recovery_codes {
        transaction
            .execute(
                "INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)",
                &[Arg::Uuid(user_id), Arg::Text(secret_hash(code))],
            )
            .await?;
    }
    Ok(())
}

/// Turns TOTP off.
pub async fn disable_totp(
    transaction: &mut Transaction,
    user_id: Uuid,
    now_ms: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "UPDATE users SET totp_secret = NULL, totp_pending_secret = NULL, \
             totp_pending_expires_at_ms = NULL, updated_at_ms = $1 WHERE id = $2",
            &[Arg::Int(now_ms), Arg::Uuid(user_id)],
        )
        .await?;
    transaction
        .execute(
            "DELETE FROM recovery_codes WHERE user_id = $1",
            &[Arg::Uuid(user_id)],
        )
        .await?;
    Ok(())
}

/// Consumes a recovery code; returns whether it was unused and valid.
pub async fn consume_recovery_code(
    conn: &mut impl Executor,
    user_id: Uuid,
    code: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let changed = conn.run("UPDATE recovery_codes SET used_at_ms = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at_ms IS NULL",
        &[
            Arg::Int(now_ms),
            Arg::Uuid(user_id),
            Arg::Text(secret_hash(code)),
        ],
    )
    .await?;
    Ok(changed == 1)
}

/// Unused recovery codes left.
pub async fn recovery_codes_remaining(
    conn: &mut impl Executor,
    user_id: Uuid,
) -> Result<i64, StoreError> {
    let row = conn
        .row(
            "SELECT COUNT(*) AS n FROM recovery_codes WHERE user_id = $1 AND used_at_ms IS NULL",
            &[Arg::Uuid(user_id)],
        )
        .await?;
    row.map_or(Ok(0), |row| row.int("n"))
}

/// A second-factor challenge.
#[derive(Debug, Clone)]
pub struct ChallengeRecord {
    /// Its user.
    pub user_id: Uuid,
    /// Deadline.
    pub expires_at_ms: i64,
    /// Wrong codes so far.
    pub failed_attempts: i64,
    /// Set once it produced tokens.
    pub used_at_ms: Option<i64>,
}

/// Stores a challenge.
pub async fn create_challenge(
    conn: &mut impl Executor,
    challenge_id: Uuid,
    user_id: Uuid,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    conn.run(
        "INSERT INTO second_factor_challenges (id, user_id, expires_at_ms) VALUES ($1, $2, $3)",
        &[
            Arg::Uuid(challenge_id),
            Arg::Uuid(user_id),
            Arg::Int(expires_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Reads a challenge.
pub async fn find_challenge(
    conn: &mut impl Executor,
    challenge_id: Uuid,
) -> Result<Option<ChallengeRecord>, StoreError> {
    let row = conn.row("SELECT user_id, expires_at_ms, failed_attempts, used_at_ms FROM second_factor_challenges WHERE id = $1",
        &[Arg::Uuid(challenge_id)],
    )
    .await?;
    row.map(|row| {
        Ok(ChallengeRecord {
            user_id: row.uuid("user_id")?,
            expires_at_ms: row.int("expires_at_ms")?,
            failed_attempts: row.int("failed_attempts")?,
            used_at_ms: row.opt_int("used_at_ms")?,
        })
    })
    .transpose()
}

/// Counts a wrong code against a challenge.
pub async fn fail_challenge(
    conn: &mut impl Executor,
    challenge_id: Uuid,
) -> Result<(), StoreError> {
    conn.run(
        "UPDATE second_factor_challenges SET failed_attempts = failed_attempts + 1 WHERE id = $1",
        &[Arg::Uuid(challenge_id)],
    )
    .await?;
    Ok(())
}

/// Marks a challenge used; false if it already was.
pub async fn use_challenge(
    conn: &mut impl Executor,
    challenge_id: Uuid,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let changed = conn.run("UPDATE second_factor_challenges SET used_at_ms = $1 WHERE id = $2 AND used_at_ms IS NULL",
        &[Arg::Int(now_ms), Arg::Uuid(challenge_id)],
    )
    .await?;
    Ok(changed == 1)
}

// ----- API keys -----

/// An API key as stored (never its secret).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    /// Key id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Label.
    pub name: String,
    /// First 12 characters of the secret.
    pub prefix: String,
    /// Scopes.
    pub scopes: BTreeSet<Scope>,
    /// Creation.
    pub created_at_ms: i64,
    /// Expiry.
    pub expires_at_ms: Option<i64>,
    /// Last exchange.
    pub last_used_at_ms: Option<i64>,
    /// Revocation.
    pub revoked_at_ms: Option<i64>,
}

const API_KEY_COLUMNS: &str = "id, user_id, name, prefix, scopes, created_at_ms, expires_at_ms, last_used_at_ms, revoked_at_ms";

fn api_key_from_row(row: &Row) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: row.uuid("id")?,
        user_id: row.uuid("user_id")?,
        name: row.text("name")?,
        prefix: row.text("prefix")?,
        scopes: row
            .text("scopes")?
            .split(',')
            .filter_map(Scope::from_claim_name)
            .collect(),
        created_at_ms: row.int("created_at_ms")?,
        expires_at_ms: row.opt_int("expires_at_ms")?,
        last_used_at_ms: row.opt_int("last_used_at_ms")?,
        revoked_at_ms: row.opt_int("revoked_at_ms")?,
    })
}

/// Stores a new key (its secret's hash only).
pub async fn insert_api_key(
    conn: &mut impl Executor,
    key: &ApiKeyRecord,
    secret: &str,
) -> Result<(), StoreError> {
    let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.claim_name()).collect();
    conn.run("INSERT INTO api_keys (id, user_id, name, prefix, secret_hash, scopes, created_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            Arg::Uuid(key.id),
            Arg::Uuid(key.user_id),
            Arg::Text(key.name.clone()),
            Arg::Text(key.prefix.clone()),
            Arg::Text(secret_hash(secret)),
            Arg::Text(scopes.join(",")),
            Arg::Int(key.created_at_ms),
            Arg::OptInt(key.expires_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Active (not revoked, not expired) keys of a user.
pub async fn count_active_api_keys(
    conn: &mut impl Executor,
    user_id: Uuid,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let row = conn
        .row(
            "SELECT COUNT(*) AS n FROM api_keys WHERE user_id = $1 AND revoked_at_ms IS NULL \
         AND (expires_at_ms IS NULL OR expires_at_ms > $2)",
            &[Arg::Uuid(user_id), Arg::Int(now_ms)],
        )
        .await?;
    row.map_or(Ok(0), |row| row.int("n"))
}

/// A user's keys, newest first.
pub async fn list_api_keys(
    database: &Database,
    user_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    sql::fetch_all(
        database,
        &format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at_ms DESC, id DESC LIMIT $2 OFFSET $3"
        ),
        &[Arg::Uuid(user_id), Arg::Int(limit), Arg::Int(offset)],
    )
    .await?
    .iter()
    .map(api_key_from_row)
    .collect()
}

/// A key by id.
pub async fn find_api_key(
    conn: &mut impl Executor,
    id: Uuid,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    conn.row(
        &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"),
        &[Arg::Uuid(id)],
    )
    .await?
    .as_ref()
    .map(api_key_from_row)
    .transpose()
}

/// A key by its secret.
pub async fn find_api_key_by_secret(
    conn: &mut impl Executor,
    secret: &str,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    conn.row(
        &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1"),
        &[Arg::Text(secret_hash(secret))],
    )
    .await?
    .as_ref()
    .map(api_key_from_row)
    .transpose()
}

/// Revokes a key (idempotent).
pub async fn revoke_api_key(
    conn: &mut impl Executor,
    id: Uuid,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.run(
        "UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        &[Arg::Int(now_ms), Arg::Uuid(id)],
    )
    .await?;
    Ok(())
}

/// Records a use, at one-minute precision (so a busy key does not write
/// on every call).
pub async fn touch_api_key(
    conn: &mut impl Executor,
    id: Uuid,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.run("UPDATE api_keys SET last_used_at_ms = $1 WHERE id = $2 AND (last_used_at_ms IS NULL OR last_used_at_ms < $3)",
        &[Arg::Int(now_ms), Arg::Uuid(id), Arg::Int(now_ms - 60_000)],
    )
    .await?;
    Ok(())
}

// ----- feedback -----

/// What a user's reputation is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackCounts {
    /// Positive feedback received since the given time.
    pub positive: i64,
    /// Neutral feedback received since the given time.
    pub neutral: i64,
    /// Negative feedback received since the given time.
    pub negative: i64,
    /// Over the whole account life: positive minus negative, counting at
    /// most one feedback per counterpart per calendar week (Monday to
    /// Sunday, UTC): that counterpart's first of the week.
    pub lifetime_score: i64,
}

/// Milliseconds from a Monday 00:00 UTC to the Unix epoch (a Thursday):
/// `(at_ms + WEEK_OFFSET_MS) / WEEK_MS` numbers calendar weeks.
const WEEK_OFFSET_MS: i64 = 3 * 86_400_000;
const WEEK_MS: i64 = 7 * 86_400_000;

/// Feedback received by `user_id` (on `side`, or both): counts since
/// `since_ms` and the lifetime score.
pub async fn feedback_counts(
    conn: &mut impl Executor,
    user_id: Uuid,
    side: Option<&str>,
    since_ms: i64,
) -> Result<FeedbackCounts, StoreError> {
    let rows = conn.rows("SELECT rating, COUNT(*) AS n FROM feedback WHERE subject_user_id = $1 AND created_at_ms > $2 \
         AND ($3 IS NULL OR side = $3) GROUP BY rating",
        &[
            Arg::Uuid(user_id),
            Arg::Int(since_ms),
            Arg::OptText(side.map(str::to_owned)),
        ],
    )
    .await?;
    let mut counts = FeedbackCounts::default();
    for row in &rows {
        let n = row.int("n")?;
        match row.text("rating")?.as_str() {
            "positive" => counts.positive = n,
            "neutral" => counts.neutral = n,
            "negative" => counts.negative = n,
            _ => return Err(StoreError::Invalid("stored rating")),
        }
    }
    // Each counterpart's first feedback of each calendar week (ties on the
    // millisecond broken by id), over all time: one sort of the subject's
    // feedback, not a lookup per row.
    let weekly = conn
        .rows(
            "SELECT rating, COUNT(*) AS n FROM (SELECT rating, ROW_NUMBER() OVER ( \
                 PARTITION BY author_user_id, (created_at_ms + $3) / $4 \
                 ORDER BY created_at_ms, id) AS nth \
             FROM feedback WHERE subject_user_id = $1 AND ($2 IS NULL OR side = $2)) AS weekly \
             WHERE nth = 1 GROUP BY rating",
            &[
                Arg::Uuid(user_id),
                Arg::OptText(side.map(str::to_owned)),
                Arg::Int(WEEK_OFFSET_MS),
                Arg::Int(WEEK_MS),
            ],
        )
        .await?;
    for row in &weekly {
        let n = row.int("n")?;
        match row.text("rating")?.as_str() {
            "positive" => counts.lifetime_score += n,
            "negative" => counts.lifetime_score -= n,
            "neutral" => {}
            _ => return Err(StoreError::Invalid("stored rating")),
        }
    }
    Ok(counts)
}

// ----- orders (from the payment service's events) -----

/// What one `BusOrderEvent` says about its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFact {
    /// The order.
    pub order_id: Uuid,
    /// The auction it came from.
    pub auction_id: Uuid,
    /// The buyer.
    pub buyer_id: Uuid,
    /// The seller.
    pub seller_id: Uuid,
    /// When the order was created: the earliest event time seen for it.
    pub created_at_ms: i64,
    /// Whether it has been paid (never cleared once set).
    pub paid: bool,
}

/// Merges one event's fact into the order's row: the earliest time wins
/// and `paid` only ever turns on, so applying the same facts again, or in
/// another order, leaves the same row.
pub async fn upsert_order_fact(database: &Database, fact: &OrderFact) -> Result<(), StoreError> {
    sql::execute(
        database,
        "INSERT INTO order_facts (order_id, auction_id, buyer_id, seller_id, created_at_ms, paid) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (order_id) DO UPDATE SET \
         created_at_ms = CASE WHEN excluded.created_at_ms < order_facts.created_at_ms \
         THEN excluded.created_at_ms ELSE order_facts.created_at_ms END, \
         paid = (order_facts.paid OR excluded.paid)",
        &[
            Arg::Uuid(fact.order_id),
            Arg::Uuid(fact.auction_id),
            Arg::Uuid(fact.buyer_id),
            Arg::Uuid(fact.seller_id),
            Arg::Int(fact.created_at_ms),
            Arg::Bool(fact.paid),
        ],
    )
    .await?;
    Ok(())
}

/// What the service knows of an order, if it has seen any of its events.
pub async fn find_order_fact(
    database: &Database,
    order_id: Uuid,
) -> Result<Option<OrderFact>, StoreError> {
    sql::fetch_optional(
        database,
        "SELECT order_id, auction_id, buyer_id, seller_id, created_at_ms, paid \
         FROM order_facts WHERE order_id = $1",
        &[Arg::Uuid(order_id)],
    )
    .await?
    .map(|row| {
        Ok(OrderFact {
            order_id: row.uuid("order_id")?,
            auction_id: row.uuid("auction_id")?,
            buyer_id: row.uuid("buyer_id")?,
            seller_id: row.uuid("seller_id")?,
            created_at_ms: row.int("created_at_ms")?,
            paid: row.bool("paid")?,
        })
    })
    .transpose()
}

// ----- feedback entries -----

/// A feedback entry as stored, with its author's current handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackRecord {
    /// UUIDv7.
    pub id: Uuid,
    /// The order it is about.
    pub order_id: Uuid,
    /// The order's auction.
    pub auction_id: Uuid,
    /// Who left it.
    pub author_user_id: Uuid,
    /// The author's handle (read from `users`, so it follows handle changes).
    pub author_handle: String,
    /// Who it is about.
    pub subject_user_id: Uuid,
    /// `from_buyer` or `from_seller`.
    pub side: String,
    /// `positive`, `neutral` or `negative`.
    pub rating: String,
    /// At most 500 characters.
    pub comment: String,
    /// When it was left.
    pub created_at_ms: i64,
}

const FEEDBACK_SELECT: &str = "SELECT f.id, f.order_id, f.auction_id, f.author_user_id, \
     u.username AS author_handle, f.subject_user_id, f.side, f.rating, f.comment, f.created_at_ms \
     FROM feedback f JOIN users u ON u.id = f.author_user_id";

fn feedback_from_row(row: &Row) -> Result<FeedbackRecord, StoreError> {
    Ok(FeedbackRecord {
        id: row.uuid("id")?,
        order_id: row.uuid("order_id")?,
        auction_id: row.uuid("auction_id")?,
        author_user_id: row.uuid("author_user_id")?,
        author_handle: row.text("author_handle")?,
        subject_user_id: row.uuid("subject_user_id")?,
        side: row.text("side")?,
        rating: row.text("rating")?,
        comment: row.text("comment")?,
        created_at_ms: row.int("created_at_ms")?,
    })
}

/// The feedback `author` left with `request_id`, if any.
pub async fn find_feedback_by_request(
    database: &Database,
    author: Uuid,
    request_id: &str,
) -> Result<Option<FeedbackRecord>, StoreError> {
    sql::fetch_optional(
        database,
        &format!("{FEEDBACK_SELECT} WHERE f.author_user_id = $1 AND f.request_id = $2"),
        &[Arg::Uuid(author), Arg::Text(request_id.to_owned())],
    )
    .await?
    .as_ref()
    .map(feedback_from_row)
    .transpose()
}

/// Whether `side` has left feedback on `order_id`.
pub async fn feedback_exists(
    database: &Database,
    order_id: Uuid,
    side: &str,
) -> Result<bool, StoreError> {
    let row = sql::fetch_optional(
        database,
        "SELECT COUNT(*) AS n FROM feedback WHERE order_id = $1 AND side = $2",
        &[Arg::Uuid(order_id), Arg::Text(side.to_owned())],
    )
    .await?;
    Ok(row.map_or(Ok(0), |row| row.int("n"))? > 0)
}

/// Stores a feedback entry with the request id that made it. Returns
/// false, storing nothing, when a unique key is taken: that side already
/// left feedback on the order, or the author already used the request id
/// (the caller tells which by looking again).
pub async fn insert_feedback(
    database: &Database,
    feedback: &FeedbackRecord,
    request_id: &str,
) -> Result<bool, StoreError> {
    let inserted = sql::execute(
        database,
        "INSERT INTO feedback (id, order_id, auction_id, author_user_id, subject_user_id, side, \
         rating, comment, created_at_ms, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            Arg::Uuid(feedback.id),
            Arg::Uuid(feedback.order_id),
            Arg::Uuid(feedback.auction_id),
            Arg::Uuid(feedback.author_user_id),
            Arg::Uuid(feedback.subject_user_id),
            Arg::Text(feedback.side.clone()),
            Arg::Text(feedback.rating.clone()),
            Arg::Text(feedback.comment.clone()),
            Arg::Int(feedback.created_at_ms),
            Arg::Text(request_id.to_owned()),
        ],
    )
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(StoreError::Database(sqlx::Error::Database(error))) if error.is_unique_violation() => {
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// Which feedback of a subject to list, and from where.
#[derive(Debug, Clone)]
pub struct FeedbackQuery {
    /// Whose received feedback.
    pub subject_user_id: Uuid,
    /// Only this side (`from_buyer`, `from_seller`), or both.
    pub side: Option<String>,
    /// Only this rating, or all.
    pub rating: Option<String>,
    /// Only entries strictly older than this `(created_at_ms, id)`, the
    /// last entry of the previous page; `None` from the newest.
    pub before: Option<(i64, Uuid)>,
    /// At most this many.
    pub limit: i64,
}

/// Feedback received by a user, newest first (`created_at_ms`, then id,
/// both descending, so pages never skip or repeat an entry).
pub async fn list_feedback(
    database: &Database,
    query: &FeedbackQuery,
) -> Result<Vec<FeedbackRecord>, StoreError> {
    // The first page starts after the largest possible position, so one
    // SQL text serves every page.
    let (before_ms, before_id) = query.before.unwrap_or((i64::MAX, Uuid::max()));
    sql::fetch_all(
        database,
        &format!(
            "{FEEDBACK_SELECT} WHERE f.subject_user_id = $1 \
             AND ($2 IS NULL OR f.side = $2) AND ($3 IS NULL OR f.rating = $3) \
             AND (f.created_at_ms < $4 OR (f.created_at_ms = $4 AND f.id < $5)) \
             ORDER BY f.created_at_ms DESC, f.id DESC LIMIT $6"
        ),
        &[
            Arg::Uuid(query.subject_user_id),
            Arg::OptText(query.side.clone()),
            Arg::OptText(query.rating.clone()),
            Arg::Int(before_ms),
            Arg::Uuid(before_id),
            Arg::Int(query.limit),
        ],
    )
    .await?
    .iter()
    .map(feedback_from_row)
    .collect()
}

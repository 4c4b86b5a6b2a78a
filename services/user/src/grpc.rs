//! The `auction.v1.UserService` gRPC surface: every RPC of the contract,
//! each built (the README's status table notes what each leaves out).
//!
//! Feedback: `leave` validates, loads the order fact (from the bus, see
//! `orders`), checks the rules of `feedback` and stores the entry with its
//! request id.
//!
//! Identity comes only from [`auction_platform::auth::caller`] (verified by
//! the listener's auth layer); roles are checked here, in the service that
//! owns accounts.

use std::collections::BTreeSet;
use std::time::Duration;

use auction_platform::auth::{AccessGrant, Role, Scope, caller, optional_caller};
use auction_proto::v1::user_service_server::UserService;
use auction_proto::v1::{
    AccountStatus, ApiKey, ApiKeyStatus, AuthTokens, ChangePasswordRequest, ChangePasswordResponse,
    ConfirmTotpRequest, ConfirmTotpResponse, CreateApiKeyRequest, CreateApiKeyResponse,
    DisableTotpRequest, DisableTotpResponse, EnrollTotpRequest, EnrollTotpResponse,
    ExchangeApiKeyRequest, ExchangeApiKeyResponse, Feedback, GetProfileRequest, GetProfileResponse,
    GetPublicKeysRequest, GetPublicKeysResponse, GetReputationRequest, GetReputationResponse,
    LeaveFeedbackRequest, LeaveFeedbackResponse, ListApiKeysRequest, ListApiKeysResponse,
    ListFeedbackRequest, ListFeedbackResponse, ListUsersRequest, ListUsersResponse, LoginRequest,
    LoginResponse, LogoutRequest, LogoutResponse, PrivateProfile, PublicKey, PublicProfile,
    RefreshRequest, RefreshResponse, RegisterRequest, RegisterResponse, Reputation,
    RequestEmailVerificationRequest, RequestEmailVerificationResponse, RevokeApiKeyRequest,
    RevokeApiKeyResponse, SecondFactorChallenge, SecondFactorMethod, SetRolesRequest,
    SetRolesResponse, SuspendUserRequest, SuspendUserResponse, Suspension, UnsuspendUserRequest,
    UnsuspendUserResponse, UpdateProfileRequest, UpdateProfileResponse, User, VerifyEmailRequest,
    VerifyEmailResponse, VerifySecondFactorRequest, VerifySecondFactorResponse, login_response,
    verify_second_factor_request,
};
use prost::Message as _;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Service;
use crate::error::UserError;
use crate::events;
use crate::feedback::{self, FeedbackContent, ListFilters, Rating, Side};
use crate::replay::{
    self, Attempt, Begun, LONG_WINDOW_MS, REPLAY_TRAILER, Replayable, RequestKey, SHORT_WINDOW_MS,
};
use crate::secrets;
use crate::sql::{Executor, Pool, Transaction};
use crate::store::{
    self, ApiKeyRecord, FeedbackQuery, FeedbackRecord, NewUser, ProfileChange, Rotation, UserRecord,
};

/// How long a second-factor challenge lives.
const CHALLENGE_TTL_MS: i64 = 5 * 60 * 1_000;
/// Wrong codes a challenge allows before it is burned.
const CHALLENGE_MAX_FAILURES: i64 = 5;
/// How long a pending TOTP enrollment lives.
const TOTP_ENROLLMENT_TTL_MS: i64 = 10 * 60 * 1_000;
/// Active API keys per user.
const MAX_ACTIVE_API_KEYS: i64 = 20;
/// How long clients may cache the JWKS.
const PUBLIC_KEYS_CACHE_MS: i64 = 5 * 60 * 1_000;
/// A day, the window of `auth.email_verifications_per_day`.
const DAY_MS: i64 = 24 * 3_600 * 1_000;
/// A year, for reputation windows.
const YEAR_MS: i64 = 365 * 24 * 3_600 * 1_000;

pub(crate) fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: i32::try_from(ms.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
    }
}

fn timestamp_ms(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1_000)
        .saturating_add(i64::from(timestamp.nanos / 1_000_000))
}

/// The content of a request for its fingerprint: every field but the
/// request id (common.proto).
macro_rules! without_request_id {
    ($message:expr) => {{
        let mut content = $message.clone();
        content.request_id = String::new();
        content.encode_to_vec()
    }};
}

/// Claims a request's key; returns the stored answer from the enclosing
/// handler when it is a replay.
macro_rules! claim {
    ($service:expr, $key:expr) => {
        match replay::begin(
            &$service.context.database,
            &$service.replay_keys,
            $key,
            $service.now_ms(),
        )
        .await?
        {
            Begun::Fresh(attempt) => attempt,
            Begun::Replay(stored) => return replay::replayed(stored),
        }
    };
}

fn check_request_id(request_id: &str) -> Result<(), UserError> {
    let valid = (1..=64).contains(&request_id.len())
        && request_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(UserError::RequestIdInvalid)
    }
}

fn parse_id(field: &'static str, value: &str) -> Result<Uuid, UserError> {
    value.parse().map_err(|_| UserError::Validation {
        field,
        message: "must be a UUID",
    })
}

fn normalize_email(email: &str) -> Result<String, UserError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(UserError::Validation {
            field: "email",
            message: "must be an e-mail address",
        })
    }
}

fn check_handle(handle: &str) -> Result<String, UserError> {
    let handle = handle.to_lowercase();
    if (3..=30).contains(&handle.len())
        && handle
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    {
        Ok(handle)
    } else {
        Err(UserError::Validation {
            field: "handle",
            message: "must be 3-30 characters of [a-z0-9_]",
        })
    }
}

fn check_password(password: &str) -> Result<(), UserError> {
    if (10..=256).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(UserError::WeakPassword)
    }
}

fn check_country(country: &str) -> Result<String, UserError> {
    let country = country.to_uppercase();
    if country.is_empty() || (country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()))
    {
        Ok(country)
    } else {
        Err(UserError::Validation {
            field: "country",
            message: "must be an ISO 3166-1 alpha-2 code or empty",
        })
    }
}

fn check_interests(interests: &[String]) -> Result<Vec<String>, UserError> {
    if interests.len() > 50 {
        return Err(UserError::Validation {
            field: "interest_category_ids",
            message: "at most 50 interests",
        });
    }
    let mut unique: Vec<String> = interests
        .iter()
        .map(|id| parse_id("interest_category_ids", id).map(|id| id.to_string()))
        .collect::<Result<_, _>>()?;
    unique.sort();
    unique.dedup();
    Ok(unique)
}

fn page_offset(page_token: &str) -> Result<i64, UserError> {
    if page_token.is_empty() {
        return Ok(0);
    }
    page_token
        .strip_prefix("o")
        .and_then(|offset| offset.parse::<i64>().ok())
        .filter(|offset| *offset >= 0)
        .ok_or(UserError::Validation {
            field: "page_token",
            message: "not a token from this list",
        })
}

fn page_size(requested: i32, default: i64, maximum: i64) -> i64 {
    match i64::from(requested) {
        size if size <= 0 => default,
        size => size.min(maximum),
    }
}

/// The client's network address (behind trusted proxies, the one they
/// forwarded), for the per-source login throttle.
fn source_of<T>(request: &Request<T>) -> String {
    auction_platform::server::ClientAddress::of(request)
        .or_else(|| request.remote_addr().map(|address| address.ip()))
        .map_or_else(|| "unknown".to_owned(), |address| address.to_string())
}

impl Service {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn reputation(counts: store::FeedbackCounts) -> Reputation {
        let store::FeedbackCounts {
            positive,
            neutral,
            negative,
            lifetime_score,
        } = counts;
        let rated = positive + negative;
        Reputation {
            positive_count: u32::try_from(positive).unwrap_or(u32::MAX),
            neutral_count: u32::try_from(neutral).unwrap_or(u32::MAX),
            negative_count: u32::try_from(negative).unwrap_or(u32::MAX),
            positive_bps: if rated == 0 {
                0
            } else {
                u32::try_from(positive * 10_000 / rated).unwrap_or(0)
            },
            lifetime_score,
        }
    }

    /// The pool as an [`Executor`], for reads and writes outside a request
    /// transaction.
    fn pool(&self) -> Pool<'_> {
        Pool(&self.context.database)
    }

    /// The key of a request scoped to `scope` (see `replay`).
    fn request_key(
        &self,
        method: &'static str,
        scope: String,
        request_id: &str,
        content: &[u8],
        window_ms: i64,
        client_secret: &str,
    ) -> RequestKey {
        RequestKey {
            scope,
            method,
            request_id: request_id.to_owned(),
            fingerprint: self.replay_keys.fingerprint(method, content),
            window_ms,
            client_secret: client_secret.as_bytes().to_vec(),
        }
    }

    /// Wakes the outbox relay after a commit that staged events.
    fn publish_soon(&self) {
        if let Some(relay) = &self.relay {
            relay.wake();
        }
    }

    /// VerifyEmail's work, in one transaction: the token is retired, the
    /// address marked verified and the ContactChanged event carrying it
    /// staged together, or nothing happens. No request id: presenting the
    /// token again answers VERIFICATION_TOKEN_USED.
    async fn verify_email_in(&self, token: &str) -> Result<VerifyEmailResponse, UserError> {
        let now_ms = self.now_ms();
        let token_hash = store::secret_hash(token);
        let mut transaction = Transaction::begin(&self.context.database).await?;
        let outcome = async {
            let record = store::find_email_verification(&mut transaction, &token_hash)
                .await?
                .ok_or(UserError::VerificationTokenNotFound)?;
            if record.used_at_ms.is_some() {
                return Err(UserError::VerificationTokenUsed);
            }
            if record.expires_at_ms <= now_ms {
                return Err(UserError::VerificationExpired);
            }
            store::lock_user(&mut transaction, record.user_id).await?;
            let user = self.load_user_in(&mut transaction, record.user_id).await?;
            // A token proves the address it was mailed to, never another.
            if user.email != record.email {
                return Err(UserError::VerificationEmailChanged);
            }
            let won = store::mark_email_verified(
                &mut transaction,
                user.id,
                &record.email,
                &token_hash,
                now_ms,
            )
            .await?;
            if !won {
                return Err(UserError::VerificationTokenUsed);
            }
            transaction
                .stage(&[events::contact_changed(
                    user.id,
                    &user.display_name,
                    &record.email,
                    now_ms,
                )])
                .await?;
            Ok(VerifyEmailResponse {
                user_id: user.id.to_string(),
                email: record.email,
            })
        }
        .await;
        match outcome {
            Ok(response) => {
                transaction.commit().await?;
                tracing::info!(user_id = %response.user_id, "e-mail address verified");
                Ok(response)
            }
            Err(error) => {
                transaction.rollback().await?;
                Err(error)
            }
        }
    }

    async fn user_message(
        &self,
        conn: &mut impl Executor,
        user: &UserRecord,
        private: bool,
    ) -> Result<User, UserError> {
        let now_ms = self.now_ms();
        let overall = store::feedback_counts(conn, user.id, None, now_ms - YEAR_MS).await?;
        let suspended = user.is_suspended(now_ms);
        let public_profile = PublicProfile {
            user_id: user.id.to_string(),
            handle: user.handle.clone(),
            display_name: user.display_name.clone(),
            bio: user.bio.clone(),
            country: user.country.clone(),
            roles: user
                .roles
                .iter()
                .map(|role| role.to_proto() as i32)
                .collect(),
            create_time: Some(timestamp(user.created_at_ms)),
            reputation: Some(Self::reputation(overall)),
            suspended,
        };
        let private_profile = private.then(|| PrivateProfile {
            email: user.email.clone(),
            email_verified: user.email_verified(),
            status: if suspended {
                AccountStatus::Suspended
            } else {
                AccountStatus::Active
            } as i32,
            suspension: suspended.then(|| Suspension {
                reason: user.suspension_reason.clone().unwrap_or_default(),
                start_time: user.suspended_at_ms.map(timestamp),
                end_time: user.suspended_until_ms.map(timestamp),
                suspended_by_user_id: user
                    .suspended_by
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
            }),
            interest_category_ids: user.interests.clone(),
            totp_enabled: user.totp_secret.is_some(),
            preferred_currency: user.preferred_currency.clone(),
            locale: user.locale.clone(),
            update_time: Some(timestamp(user.updated_at_ms)),
        });
        Ok(User {
            public_profile: Some(public_profile),
            private_profile,
        })
    }

    fn suspended_error(user: &UserRecord) -> UserError {
        UserError::AccountSuspended {
            until: user.suspended_until_ms.map(|until| {
                let seconds = until.div_euclid(1_000);
                // RFC 3339 without a date library: seconds since the epoch in UTC.
                format_rfc3339(seconds)
            }),
        }
    }

    async fn open_session(
        &self,
        transaction: &mut Transaction,
        user: &UserRecord,
        second_factor: bool,
        now_ms: i64,
    ) -> Result<AuthTokens, UserError> {
        let session_id = Uuid::now_v7();
        let refresh_token = secrets::new_refresh_token();
        let refresh_expires_at_ms = now_ms.saturating_add(
            i64::try_from(self.context.config.auth.refresh_token_ttl_ms).unwrap_or(i64::MAX),
        );
        store::create_session(
            transaction,
            session_id,
            user.id,
            second_factor,
            &refresh_token,
            now_ms,
            refresh_expires_at_ms,
        )
        .await?;
        let access = self
            .context
            .keys
            .issue_access_token(
                &AccessGrant {
                    user_id: user.id,
                    session_id: Some(session_id),
                    roles: user.roles.clone(),
                    api_key: None,
                    second_factor_verified: second_factor,
                },
                now_ms,
            )
            .map_err(UserError::Signing)?;
        tracing::info!(user_id = %user.id, session_id = %session_id, second_factor, "session opened");
        Ok(AuthTokens {
            access_token: access.token,
            access_token_expire_time: Some(timestamp(access.expires_at_ms)),
            refresh_token,
            refresh_token_expire_time: Some(timestamp(refresh_expires_at_ms)),
            session_id: session_id.to_string(),
        })
    }

    async fn load_user(&self, user_id: Uuid) -> Result<UserRecord, UserError> {
        self.load_user_in(&mut self.pool(), user_id).await
    }

    async fn load_user_in(
        &self,
        conn: &mut impl Executor,
        user_id: Uuid,
    ) -> Result<UserRecord, UserError> {
        store::find_user(conn, user_id)
            .await?
            .ok_or(UserError::UserNotFound)
    }

    /// Checks a TOTP code against the user's confirmed secret, accepting
    /// each step once.
    async fn check_totp(
        &self,
        conn: &mut impl Executor,
        user: &UserRecord,
        code: &str,
        now_ms: i64,
    ) -> Result<(), UserError> {
        let secret = user
            .totp_secret
            .as_deref()
            .ok_or(UserError::TotpNotEnabled)?;
        let step =
            secrets::matching_totp_step(secret, code, now_ms).ok_or(UserError::TotpInvalid)?;
        if store::accept_totp_step(conn, user.id, step).await? {
            Ok(())
        } else {
            // The code was valid but already used: a replay.
            Err(UserError::TotpInvalid)
        }
    }

    /// The throttle on failed logins, per account and per source.
    async fn login_throttle(&self, email: &str, source: &str) -> Result<(), UserError> {
        let auth = &self.context.config.auth;
        let window_ms = i64::try_from(auth.failed_login_window_ms).unwrap_or(i64::MAX);
        let now_ms = self.now_ms();
        let counts =
            store::count_login_failures(&self.context.database, email, source, now_ms - window_ms)
                .await?;
        let blocked_until = [
            (counts.email >= i64::from(auth.max_failed_logins_per_account))
                .then_some(counts.email_oldest_ms)
                .flatten(),
            (counts.source >= i64::from(auth.max_failed_logins_per_source))
                .then_some(counts.source_oldest_ms)
                .flatten(),
        ]
        .into_iter()
        .flatten()
        .map(|oldest| oldest + window_ms)
        .max();
        match blocked_until {
            Some(until) => {
                tracing::warn!(source, "login refused: too many failed attempts");
                Err(UserError::TooManyAttempts {
                    retry_after: Duration::from_millis(
                        u64::try_from((until - now_ms).max(1_000)).unwrap_or(1_000),
                    ),
                })
            }
            None => Ok(()),
        }
    }

    /// Exchanges an API key secret for an access token.
    pub(crate) async fn exchange(
        &self,
        conn: &mut impl Executor,
        secret: &str,
    ) -> Result<(auction_platform::auth::IssuedToken, ApiKeyRecord), UserError> {
        let now_ms = self.now_ms();
        let key = store::find_api_key_by_secret(conn, secret)
            .await?
            .ok_or(UserError::ApiKeyInvalid)?;
        if key.revoked_at_ms.is_some() || key.expires_at_ms.is_some_and(|at| at <= now_ms) {
            return Err(UserError::ApiKeyInvalid);
        }
        let owner = self.load_user_in(conn, key.user_id).await?;
        if owner.is_suspended(now_ms) {
            return Err(Self::suspended_error(&owner));
        }
        store::touch_api_key(conn, key.id, now_ms).await?;
        let token = self
            .context
            .keys
            .issue_access_token(
                &AccessGrant {
                    user_id: owner.id,
                    session_id: None,
                    roles: owner.roles.clone(),
                    api_key: Some((key.id, key.scopes.clone())),
                    second_factor_verified: false,
                },
                now_ms,
            )
            .map_err(UserError::Signing)?;
        Ok((token, key))
    }
}

fn api_key_message(key: &ApiKeyRecord, now_ms: i64) -> ApiKey {
    let status = if key.revoked_at_ms.is_some() {
        ApiKeyStatus::Revoked
    } else if key.expires_at_ms.is_some_and(|at| at <= now_ms) {
        ApiKeyStatus::Expired
    } else {
        ApiKeyStatus::Active
    };
    ApiKey {
        api_key_id: key.id.to_string(),
        user_id: key.user_id.to_string(),
        name: key.name.clone(),
        prefix: key.prefix.clone(),
        scopes: key
            .scopes
            .iter()
            .map(|scope| scope.to_proto() as i32)
            .collect(),
        status: status as i32,
        create_time: Some(timestamp(key.created_at_ms)),
        expire_time: key.expires_at_ms.map(timestamp),
        last_used_time: key.last_used_at_ms.map(timestamp),
        revoke_time: key.revoked_at_ms.map(timestamp),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the Unix epoch (civil-from-days,
/// H. Hinnant's algorithm).
fn format_rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

/// The contract's Feedback message of a stored entry.
fn feedback_message(record: &FeedbackRecord) -> Result<Feedback, UserError> {
    let side = Side::from_storage_name(&record.side)
        .ok_or(UserError::Store(store::StoreError::Invalid("stored side")))?;
    let rating = Rating::from_storage_name(&record.rating).ok_or(UserError::Store(
        store::StoreError::Invalid("stored rating"),
    ))?;
    Ok(Feedback {
        feedback_id: record.id.to_string(),
        order_id: record.order_id.to_string(),
        auction_id: record.auction_id.to_string(),
        author_user_id: record.author_user_id.to_string(),
        author_handle: record.author_handle.clone(),
        subject_user_id: record.subject_user_id.to_string(),
        side: side.to_proto() as i32,
        rating: rating.to_proto() as i32,
        comment: record.comment.clone(),
        create_time: Some(timestamp(record.created_at_ms)),
    })
}

impl Service {
    /// LeaveFeedback once its request is valid: validate, load, check,
    /// persist. Returns the stored feedback and whether it is a replay of
    /// an earlier request with the same id and content.
    async fn leave(
        &self,
        author: Uuid,
        request_id: &str,
        content: &FeedbackContent,
    ) -> Result<(FeedbackRecord, bool), UserError> {
        let database = &self.context.database;
        // A replay first: it gets the stored answer even once the window
        // has closed or the order's other rules would now refuse it.
        if let Some(stored) = self.replay(author, request_id, content).await? {
            return Ok((stored, true));
        }
        let order = store::find_order_fact(database, content.order_id)
            .await?
            .ok_or(UserError::OrderNotFound)?;
        let side = feedback::side_of(&order, author)?;
        let now_ms = self.now_ms();
        feedback::check_window(&order, now_ms)?;
        if store::feedback_exists(database, order.order_id, side.storage_name()).await? {
            return Err(UserError::FeedbackExists);
        }
        let author_record = self.load_user(author).await?;
        if author_record.is_suspended(now_ms) {
            return Err(Self::suspended_error(&author_record));
        }
        let subject = feedback::subject_of(&order, side);
        // The subject must be an account here (the feedback table refers
        // to it); an order never names anyone else.
        self.load_user(subject).await?;
        let record = FeedbackRecord {
            id: Uuid::now_v7(),
            order_id: order.order_id,
            auction_id: order.auction_id,
            author_user_id: author,
            author_handle: author_record.handle,
            subject_user_id: subject,
            side: side.storage_name().to_owned(),
            rating: content.rating.storage_name().to_owned(),
            comment: content.comment.clone(),
            created_at_ms: now_ms,
        };
        if store::insert_feedback(database, &record, request_id).await? {
            tracing::info!(order_id = %order.order_id, side = side.storage_name(), "feedback left");
            return Ok((record, false));
        }
        // Lost a race on a unique key: a concurrent copy of this request
        // (a replay), another request id of the same side, or this request
        // id with other content.
        match self.replay(author, request_id, content).await? {
            Some(stored) => Ok((stored, true)),
            None => Err(UserError::FeedbackExists),
        }
    }

    /// The feedback `author` already left with `request_id`: `Some` when
    /// `content` is the same, IDEMPOTENCY_KEY_REUSED when it differs.
    async fn replay(
        &self,
        author: Uuid,
        request_id: &str,
        content: &FeedbackContent,
    ) -> Result<Option<FeedbackRecord>, UserError> {
        match store::find_feedback_by_request(&self.context.database, author, request_id).await? {
            Some(stored) if content.matches(&stored) => Ok(Some(stored)),
            Some(_) => Err(UserError::IdempotencyKeyReused),
            None => Ok(None),
        }
    }
}

/// The work of each replayable RPC inside its claimed transaction
/// (`replay`): every write goes through `attempt.tx()`, "now" is the
/// claim's time, and the answer returned is what a retry will get.
impl Service {
    async fn register_in(
        &self,
        attempt: &mut Attempt,
        user: &NewUser,
        password_hash: &str,
        interests: &[String],
        country: &str,
    ) -> Result<RegisterResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        store::insert_user_with(transaction, user, password_hash, interests, country, now_ms)
            .await?;
        let record = self.load_user_in(transaction, user.id).await?;
        let tokens = self
            .open_session(transaction, &record, false, now_ms)
            .await?;
        transaction
            .stage(&[
                events::contact_changed(
                    record.id,
                    &record.display_name,
                    record.contact_email(),
                    now_ms,
                ),
                events::interests_changed(record.id, &record.interests, now_ms),
            ])
            .await?;
        // The first verification e-mail, in the account's own transaction:
        // no account exists without its link on the way.
        self.issue_email_verification(transaction, &record, now_ms)
            .await?;
        tracing::info!(user_id = %record.id, "account registered");
        Ok(RegisterResponse {
            user: Some(self.user_message(transaction, &record, true).await?),
            tokens: Some(tokens),
        })
    }

    /// Creates a verification token for the account's current address and
    /// stages the event that mails it, in `transaction`. Returns the
    /// token's expiry. The token itself leaves only on the bus.
    async fn issue_email_verification(
        &self,
        transaction: &mut Transaction,
        user: &UserRecord,
        now_ms: i64,
    ) -> Result<i64, UserError> {
        let ttl_ms =
            i64::try_from(self.context.config.auth.email_verification_ttl_ms).unwrap_or(i64::MAX);
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let token = secrets::new_email_verification_token();
        store::insert_email_verification(
            transaction,
            &store::secret_hash(&token),
            user.id,
            &user.email,
            now_ms,
            expires_at_ms,
        )
        .await?;
        transaction
            .stage(&[events::email_verification_requested(
                user.id,
                &user.email,
                &user.display_name,
                &token,
                expires_at_ms,
                now_ms,
            )])
            .await?;
        tracing::info!(user_id = %user.id, "e-mail verification requested");
        Ok(expires_at_ms)
    }

    async fn request_email_verification_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
    ) -> Result<RequestEmailVerificationResponse, UserError> {
        let now_ms = attempt.now_ms();
        let auth = &self.context.config.auth;
        let interval_ms =
            i64::try_from(auth.email_verification_resend_interval_ms).unwrap_or(i64::MAX);
        let per_day = i64::from(auth.email_verifications_per_day);
        let transaction = attempt.tx();
        // Counted under the account's row lock: two concurrent requests of
        // one account cannot both pass the limit.
        store::lock_user(transaction, user_id).await?;
        let user = self.load_user_in(transaction, user_id).await?;
        if user.email_verified() {
            return Err(UserError::EmailAlreadyVerified);
        }
        let sent = store::verifications_sent(transaction, user_id, now_ms - DAY_MS).await?;
        let interval_free_ms = sent
            .newest_ms
            .map_or(now_ms, |newest| newest.saturating_add(interval_ms));
        let day_free_ms = if sent.count >= per_day {
            sent.oldest_ms
                .map_or(now_ms, |oldest| oldest.saturating_add(DAY_MS))
        } else {
            now_ms
        };
        let allowed_at_ms = interval_free_ms.max(day_free_ms);
        if allowed_at_ms > now_ms {
            let wait_ms = u64::try_from(allowed_at_ms - now_ms).unwrap_or(1);
            return Err(UserError::VerificationRateLimited {
                retry_after: Duration::from_millis(wait_ms),
            });
        }
        let expires_at_ms = self
            .issue_email_verification(transaction, &user, now_ms)
            .await?;
        // The next allowed: one interval from now, or when the day frees a
        // place if this one filled it.
        let next_interval_ms = now_ms.saturating_add(interval_ms);
        let next_day_ms = if sent.count.saturating_add(1) >= per_day {
            sent.oldest_ms.unwrap_or(now_ms).saturating_add(DAY_MS)
        } else {
            now_ms
        };
        Ok(RequestEmailVerificationResponse {
            email: user.email,
            expire_time: Some(timestamp(expires_at_ms)),
            resend_after_time: Some(timestamp(next_interval_ms.max(next_day_ms))),
        })
    }

    async fn login_in(
        &self,
        attempt: &mut Attempt,
        email: &str,
        password: &str,
        source: &str,
    ) -> Result<LoginResponse, UserError> {
        let now_ms = attempt.now_ms();
        self.login_throttle(email, source).await?;
        let transaction = attempt.tx();
        let user = store::find_user_by_email(transaction, email).await?;
        let verified = match &user {
            Some(user) => store::verify_password(&user.password_hash, password),
            None => {
                // Spend the same time as for a real account, so timing does
                // not tell which e-mails exist.
                let _ = store::verify_password(&self.dummy_hash, password);
                false
            }
        };
        let Some(user) = user.filter(|_| verified) else {
            let window_ms =
                i64::try_from(self.context.config.auth.failed_login_window_ms).unwrap_or(i64::MAX);
            store::record_login_failure(transaction, email, source, now_ms, now_ms - window_ms)
                .await?;
            tracing::info!(source, "login failed");
            return Err(UserError::InvalidCredentials);
        };
        store::clear_login_failures(transaction, email).await?;
        if user.is_suspended(now_ms) {
            return Err(Self::suspended_error(&user));
        }
        if user.totp_secret.is_some() {
            let challenge_id = Uuid::now_v7();
            let expires_at_ms = now_ms + CHALLENGE_TTL_MS;
            store::create_challenge(transaction, challenge_id, user.id, expires_at_ms).await?;
            return Ok(LoginResponse {
                outcome: Some(login_response::Outcome::SecondFactorChallenge(
                    SecondFactorChallenge {
                        challenge_id: challenge_id.to_string(),
                        expire_time: Some(timestamp(expires_at_ms)),
                        methods: vec![
                            SecondFactorMethod::Totp as i32,
                            SecondFactorMethod::RecoveryCode as i32,
                        ],
                    },
                )),
                user: None,
            });
        }
        let tokens = self.open_session(transaction, &user, false, now_ms).await?;
        Ok(LoginResponse {
            outcome: Some(login_response::Outcome::Tokens(tokens)),
            user: Some(self.user_message(transaction, &user, true).await?),
        })
    }

    async fn verify_second_factor_in(
        &self,
        attempt: &mut Attempt,
        challenge_id: Uuid,
        code: Option<&verify_second_factor_request::Code>,
    ) -> Result<VerifySecondFactorResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        let challenge = store::find_challenge(transaction, challenge_id)
            .await?
            .ok_or(UserError::ChallengeInvalid)?;
        if challenge.used_at_ms.is_some() || challenge.expires_at_ms <= now_ms {
            return Err(UserError::ChallengeInvalid);
        }
        if challenge.failed_attempts >= CHALLENGE_MAX_FAILURES {
            return Err(UserError::TooManyAttempts {
                retry_after: Duration::from_secs(1),
            });
        }
        let user = self.load_user_in(transaction, challenge.user_id).await?;
        let proven = match code {
            Some(verify_second_factor_request::Code::TotpCode(code)) => {
                self.check_totp(transaction, &user, code, now_ms).await
            }
            Some(verify_second_factor_request::Code::RecoveryCode(code)) => {
                if store::consume_recovery_code(transaction, user.id, code.trim(), now_ms).await? {
                    Ok(())
                } else {
                    Err(UserError::TotpInvalid)
                }
            }
            None => Err(UserError::Validation {
                field: "code",
                message: "a TOTP code or a recovery code is required",
            }),
        };
        if let Err(error) = proven {
            if matches!(error, UserError::TotpInvalid) {
                // Kept: a refused code is not undone with the request.
                store::fail_challenge(transaction, challenge_id).await?;
            }
            return Err(error);
        }
        if !store::use_challenge(transaction, challenge_id, now_ms).await? {
            return Err(UserError::ChallengeInvalid);
        }
        if user.is_suspended(now_ms) {
            return Err(Self::suspended_error(&user));
        }
        let tokens = self.open_session(transaction, &user, true, now_ms).await?;
        let remaining = store::recovery_codes_remaining(transaction, user.id).await?;
        Ok(VerifySecondFactorResponse {
            tokens: Some(tokens),
            user: Some(self.user_message(transaction, &user, true).await?),
            recovery_codes_remaining: u32::try_from(remaining).unwrap_or(0),
        })
    }

    async fn refresh_in(
        &self,
        attempt: &mut Attempt,
        presented: &str,
    ) -> Result<RefreshResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        let next = secrets::new_refresh_token();
        let session = match store::rotate_refresh_token(transaction, presented, &next, now_ms)
            .await?
        {
            Rotation::Rotated(session) => session,
            Rotation::Reused { session_id } => {
                // Kept: the family's revocation commits with the refusal.
                tracing::warn!(session_id = %session_id, "refresh token reused: session revoked");
                return Err(UserError::RefreshTokenReused);
            }
            Rotation::SessionEnded | Rotation::Unknown => {
                return Err(UserError::RefreshTokenInvalid);
            }
        };
        let user = self.load_user_in(transaction, session.user_id).await?;
        if user.is_suspended(now_ms) {
            return Err(Self::suspended_error(&user));
        }
        // Roles are read afresh: SetRoles takes effect at the next refresh.
        let access = self
            .context
            .keys
            .issue_access_token(
                &AccessGrant {
                    user_id: user.id,
                    session_id: Some(session.id),
                    roles: user.roles.clone(),
                    api_key: None,
                    second_factor_verified: session.second_factor,
                },
                now_ms,
            )
            .map_err(UserError::Signing)?;
        Ok(RefreshResponse {
            tokens: Some(AuthTokens {
                access_token: access.token,
                access_token_expire_time: Some(timestamp(access.expires_at_ms)),
                refresh_token: next,
                refresh_token_expire_time: Some(timestamp(session.expires_at_ms)),
                session_id: session.id.to_string(),
            }),
        })
    }

    async fn change_password_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
        current_password: &str,
        new_hash: &str,
        second_factor: bool,
    ) -> Result<ChangePasswordResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        let user = self.load_user_in(transaction, user_id).await?;
        if !store::verify_password(&user.password_hash, current_password) {
            return Err(UserError::InvalidCredentials);
        }
        store::set_password(transaction, user.id, new_hash, now_ms).await?;
        store::revoke_user_sessions(transaction, user.id, None, "password changed", now_ms).await?;
        let tokens = self
            .open_session(transaction, &user, second_factor, now_ms)
            .await?;
        Ok(ChangePasswordResponse {
            tokens: Some(tokens),
        })
    }

    async fn enroll_totp_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
        password: &str,
    ) -> Result<EnrollTotpResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        let user = self.load_user_in(transaction, user_id).await?;
        if !store::verify_password(&user.password_hash, password) {
            return Err(UserError::InvalidCredentials);
        }
        if user.totp_secret.is_some() {
            return Err(UserError::TotpAlreadyEnabled);
        }
        let secret = secrets::new_totp_secret();
        let expires_at_ms = now_ms + TOTP_ENROLLMENT_TTL_MS;
        store::set_pending_totp(transaction, user.id, &secret, expires_at_ms).await?;
        let otpauth_uri = format!(
            "otpauth://totp/Auction%20Mesh:{}?secret={secret}&issuer=Auction%20Mesh&algorithm=SHA1&digits=6&period=30",
            user.handle
        );
        Ok(EnrollTotpResponse {
            secret_base32: secret,
            otpauth_uri,
            expire_time: Some(timestamp(expires_at_ms)),
        })
    }

    async fn confirm_totp_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
        totp_code: &str,
    ) -> Result<ConfirmTotpResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        let user = self.load_user_in(transaction, user_id).await?;
        if user.totp_secret.is_some() {
            return Err(UserError::TotpAlreadyEnabled);
        }
        let pending = user
            .totp_pending_secret
            .as_deref()
            .filter(|_| {
                user.totp_pending_expires_at_ms
                    .is_some_and(|at| at > now_ms)
            })
            .ok_or(UserError::TotpNotEnabled)?;
        let step = secrets::matching_totp_step(pending, totp_code, now_ms)
            .ok_or(UserError::TotpInvalid)?;
        if !store::accept_totp_step(transaction, user.id, step).await? {
            return Err(UserError::TotpInvalid);
        }
        let codes: Vec<String> = (0..10).map(|_| secrets::new_recovery_code()).collect();
        store::confirm_totp(transaction, user.id, &codes, now_ms).await?;
        tracing::info!(user_id = %user.id, "TOTP enabled");
        Ok(ConfirmTotpResponse {
            recovery_codes: codes,
        })
    }

    async fn disable_totp_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
        password: &str,
        code: Option<&auction_proto::v1::disable_totp_request::Code>,
    ) -> Result<DisableTotpResponse, UserError> {
        use auction_proto::v1::disable_totp_request::Code;
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        let user = self.load_user_in(transaction, user_id).await?;
        if !store::verify_password(&user.password_hash, password) {
            return Err(UserError::InvalidCredentials);
        }
        if user.totp_secret.is_none() {
            return Err(UserError::TotpNotEnabled);
        }
        match code {
            Some(Code::TotpCode(code)) => self.check_totp(transaction, &user, code, now_ms).await?,
            Some(Code::RecoveryCode(code)) => {
                if !store::consume_recovery_code(transaction, user.id, code.trim(), now_ms).await? {
                    return Err(UserError::TotpInvalid);
                }
            }
            None => return Err(UserError::TotpInvalid),
        }
        store::disable_totp(transaction, user.id, now_ms).await?;
        Ok(DisableTotpResponse {
            totp_enabled: false,
        })
    }

    async fn update_profile_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
        change: &ProfileChange,
    ) -> Result<UpdateProfileResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        store::update_profile(transaction, user_id, change, now_ms).await?;
        let user = self.load_user_in(transaction, user_id).await?;
        let mut changes = Vec::new();
        if change.display_name.is_some() {
            changes.push(events::contact_changed(
                user.id,
                &user.display_name,
                user.contact_email(),
                now_ms,
            ));
        }
        if change.interests.is_some() {
            changes.push(events::interests_changed(user.id, &user.interests, now_ms));
        }
        transaction.stage(&changes).await?;
        Ok(UpdateProfileResponse {
            user: Some(self.user_message(transaction, &user, true).await?),
        })
    }

    async fn create_api_key_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
        name: String,
        scopes: BTreeSet<Scope>,
        expires_at_ms: Option<i64>,
    ) -> Result<CreateApiKeyResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        let user = self.load_user_in(transaction, user_id).await?;
        if user.is_suspended(now_ms) {
            return Err(Self::suspended_error(&user));
        }
        if store::count_active_api_keys(transaction, user.id, now_ms).await? >= MAX_ACTIVE_API_KEYS
        {
            return Err(UserError::ApiKeyLimitReached);
        }
        let secret = secrets::new_api_key_secret();
        let key = ApiKeyRecord {
            id: Uuid::now_v7(),
            user_id: user.id,
            name,
            prefix: secret.chars().take(12).collect(),
            scopes,
            created_at_ms: now_ms,
            expires_at_ms,
            last_used_at_ms: None,
            revoked_at_ms: None,
        };
        store::insert_api_key(transaction, &key, &secret).await?;
        tracing::info!(api_key_id = %key.id, user_id = %user.id, "API key created");
        Ok(CreateApiKeyResponse {
            api_key: Some(api_key_message(&key, now_ms)),
            secret,
        })
    }

    async fn set_roles_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
        roles: &BTreeSet<Role>,
    ) -> Result<SetRolesResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        self.load_user_in(transaction, user_id).await?;
        store::set_roles(transaction, user_id, roles, now_ms).await?;
        let user = self.load_user_in(transaction, user_id).await?;
        Ok(SetRolesResponse {
            user: Some(self.user_message(transaction, &user, true).await?),
        })
    }

    async fn suspend_user_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
        reason: &str,
        until_ms: Option<i64>,
        by: Uuid,
    ) -> Result<SuspendUserResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        self.load_user_in(transaction, user_id).await?;
        if !store::suspend(transaction, user_id, reason, until_ms, by, now_ms).await? {
            return Err(UserError::SuspensionStateInvalid("already suspended"));
        }
        let user = self.load_user_in(transaction, user_id).await?;
        Ok(SuspendUserResponse {
            user: Some(self.user_message(transaction, &user, true).await?),
        })
    }

    async fn unsuspend_user_in(
        &self,
        attempt: &mut Attempt,
        user_id: Uuid,
    ) -> Result<UnsuspendUserResponse, UserError> {
        let now_ms = attempt.now_ms();
        let transaction = attempt.tx();
        self.load_user_in(transaction, user_id).await?;
        if !store::unsuspend(transaction, user_id, now_ms).await? {
            return Err(UserError::SuspensionStateInvalid("not suspended"));
        }
        let user = self.load_user_in(transaction, user_id).await?;
        Ok(UnsuspendUserResponse {
            user: Some(self.user_message(transaction, &user, true).await?),
        })
    }
}

/// The access and refresh tokens of an answer are its secrets.
fn take_tokens(tokens: &mut Option<AuthTokens>) -> Vec<String> {
    tokens.as_mut().map_or_else(Vec::new, |tokens| {
        vec![
            std::mem::take(&mut tokens.access_token),
            std::mem::take(&mut tokens.refresh_token),
        ]
    })
}

fn put_tokens(tokens: &mut Option<AuthTokens>, secrets: Vec<String>) -> bool {
    match (tokens.as_mut(), <[String; 2]>::try_from(secrets)) {
        (Some(tokens), Ok([access_token, refresh_token])) => {
            tokens.access_token = access_token;
            tokens.refresh_token = refresh_token;
            true
        }
        (None, Err(secrets)) => secrets.is_empty(),
        _ => false,
    }
}

impl Replayable for RegisterResponse {
    fn take_secrets(&mut self) -> Vec<String> {
        take_tokens(&mut self.tokens)
    }
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        put_tokens(&mut self.tokens, secrets)
    }
}

impl Replayable for LoginResponse {
    fn take_secrets(&mut self) -> Vec<String> {
        match &mut self.outcome {
            Some(login_response::Outcome::Tokens(tokens)) => {
                let mut taken = Some(std::mem::take(tokens));
                let secrets = take_tokens(&mut taken);
                *tokens = taken.unwrap_or_default();
                secrets
            }
            Some(login_response::Outcome::SecondFactorChallenge(_)) | None => Vec::new(),
        }
    }
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        match &mut self.outcome {
            Some(login_response::Outcome::Tokens(tokens)) => {
                let mut put = Some(std::mem::take(tokens));
                let fits = put_tokens(&mut put, secrets);
                *tokens = put.unwrap_or_default();
                fits
            }
            Some(login_response::Outcome::SecondFactorChallenge(_)) | None => secrets.is_empty(),
        }
    }
}

impl Replayable for VerifySecondFactorResponse {
    fn take_secrets(&mut self) -> Vec<String> {
        take_tokens(&mut self.tokens)
    }
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        put_tokens(&mut self.tokens, secrets)
    }
}

impl Replayable for RefreshResponse {
    fn take_secrets(&mut self) -> Vec<String> {
        take_tokens(&mut self.tokens)
    }
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        put_tokens(&mut self.tokens, secrets)
    }
}

impl Replayable for ChangePasswordResponse {
    fn take_secrets(&mut self) -> Vec<String> {
        take_tokens(&mut self.tokens)
    }
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        put_tokens(&mut self.tokens, secrets)
    }
}

impl Replayable for EnrollTotpResponse {
    fn take_secrets(&mut self) -> Vec<String> {
        vec![
            std::mem::take(&mut self.secret_base32),
            std::mem::take(&mut self.otpauth_uri),
        ]
    }
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        match <[String; 2]>::try_from(secrets) {
            Ok([secret_base32, otpauth_uri]) => {
                self.secret_base32 = secret_base32;
                self.otpauth_uri = otpauth_uri;
                true
            }
            Err(_) => false,
        }
    }
}

impl Replayable for ConfirmTotpResponse {
    fn take_secrets(&mut self) -> Vec<String> {
        std::mem::take(&mut self.recovery_codes)
    }
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        self.recovery_codes = secrets;
        true
    }
}

impl Replayable for CreateApiKeyResponse {
    fn take_secrets(&mut self) -> Vec<String> {
        vec![std::mem::take(&mut self.secret)]
    }
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        match <[String; 1]>::try_from(secrets) {
            Ok([secret]) => {
                self.secret = secret;
                true
            }
            Err(_) => false,
        }
    }
}

impl Replayable for ExchangeApiKeyResponse {
    fn take_secrets(&mut self) -> Vec<String> {
        vec![std::mem::take(&mut self.access_token)]
    }
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        match <[String; 1]>::try_from(secrets) {
            Ok([access_token]) => {
                self.access_token = access_token;
                true
            }
            Err(_) => false,
        }
    }
}

// Answers without secrets are stored whole.
impl Replayable for DisableTotpResponse {}
impl Replayable for RequestEmailVerificationResponse {}
impl Replayable for UpdateProfileResponse {}
impl Replayable for SetRolesResponse {}
impl Replayable for SuspendUserResponse {}
impl Replayable for UnsuspendUserResponse {}

#[tonic::async_trait]
impl UserService for Service {
    #[tracing::instrument(skip_all)]
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let email = normalize_email(&message.email)?;
        check_password(&message.password)?;
        let handle = check_handle(&message.handle)?;
        if message.display_name.chars().count() > 64 {
            return Err(UserError::Validation {
                field: "display_name",
                message: "at most 64 characters",
            }
            .into());
        }
        let country = check_country(&message.country)?;
        let interests = check_interests(&message.interest_category_ids)?;
        let key = self.request_key(
            "Register",
            self.replay_keys.subject_scope("email", &email),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            &message.password,
        );
        // Hashing is slow: done before the claim holds any lock.
        let password_hash = store::hash_password(&message.password).map_err(UserError::from)?;
        let user = NewUser {
            id: Uuid::now_v7(),
            email,
            username: handle,
            password: String::new(),
            display_name: message.display_name,
            roles: vec![
                Role::Bidder.storage_name().to_owned(),
                Role::Seller.storage_name().to_owned(),
            ],
        };
        let mut attempt = claim!(self, key);
        let result = self
            .register_in(&mut attempt, &user, &password_hash, &interests, &country)
            .await;
        let response = attempt.finish(result).await?;
        self.publish_soon();
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let source = source_of(&request);
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let email = message.email.trim().to_lowercase();
        let key = self.request_key(
            "Login",
            self.replay_keys.subject_scope("email", &email),
            &message.request_id,
            &without_request_id!(message),
            SHORT_WINDOW_MS,
            &message.password,
        );
        let mut attempt = claim!(self, key);
        let result = self
            .login_in(&mut attempt, &email, &message.password, &source)
            .await;
        Ok(Response::new(attempt.finish(result).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn verify_second_factor(
        &self,
        request: Request<VerifySecondFactorRequest>,
    ) -> Result<Response<VerifySecondFactorResponse>, Status> {
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let challenge_id: Uuid = message
            .challenge_id
            .parse()
            .map_err(|_| UserError::ChallengeInvalid)?;
        let code_secret = match &message.code {
            Some(verify_second_factor_request::Code::TotpCode(code))
            | Some(verify_second_factor_request::Code::RecoveryCode(code)) => code.clone(),
            None => String::new(),
        };
        let key = self.request_key(
            "VerifySecondFactor",
            self.replay_keys
                .subject_scope("challenge", &challenge_id.to_string()),
            &message.request_id,
            &without_request_id!(message),
            SHORT_WINDOW_MS,
            &code_secret,
        );
        let mut attempt = claim!(self, key);
        let result = self
            .verify_second_factor_in(&mut attempt, challenge_id, message.code.as_ref())
            .await;
        Ok(Response::new(attempt.finish(result).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        // The subject is the presented token: a retry with the same request
        // id and the same (now retired) token is a replay, not a reuse.
        let key = self.request_key(
            "Refresh",
            self.replay_keys
                .subject_scope("refresh_token", &message.refresh_token),
            &message.request_id,
            &without_request_id!(message),
            SHORT_WINDOW_MS,
            &message.refresh_token,
        );
        let mut attempt = claim!(self, key);
        let result = self.refresh_in(&mut attempt, &message.refresh_token).await;
        Ok(Response::new(attempt.finish(result).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let identity = optional_caller(&request);
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let now_ms = self.now_ms();
        let revoked = if message.all_sessions {
            let identity = identity.ok_or_else(|| {
                auction_platform::to_status(&auction_platform::auth::AuthError::TokenMissing)
            })?;
            store::revoke_user_sessions(&mut self.pool(), identity.user_id, None, "logout", now_ms)
                .await
                .map_err(UserError::from)?
        } else {
            let session = store::session_of_refresh_token(&mut self.pool(), &message.refresh_token)
                .await
                .map_err(UserError::from)?
                .ok_or(UserError::RefreshTokenInvalid)?;
            store::revoke_session(&mut self.pool(), session.id, "logout", now_ms)
                .await
                .map_err(UserError::from)?
        };
        Ok(Response::new(LogoutResponse {
            revoked_session_count: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let identity = caller(&request)?;
        if identity.kind != auction_platform::auth::CallerKind::User {
            return Err(auction_platform::to_status(
                &auction_platform::auth::AuthError::TokenMissing,
            ));
        }
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        check_password(&message.new_password)?;
        let key = self.request_key(
            "ChangePassword",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            &message.current_password,
        );
        let new_hash = store::hash_password(&message.new_password).map_err(UserError::from)?;
        let mut attempt = claim!(self, key);
        let result = self
            .change_password_in(
                &mut attempt,
                identity.user_id,
                &message.current_password,
                &new_hash,
                identity.second_factor_verified,
            )
            .await;
        Ok(Response::new(attempt.finish(result).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn enroll_totp(
        &self,
        request: Request<EnrollTotpRequest>,
    ) -> Result<Response<EnrollTotpResponse>, Status> {
        let identity = caller(&request)?;
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        if identity.kind != auction_platform::auth::CallerKind::User {
            return Err(UserError::InvalidCredentials.into());
        }
        let key = self.request_key(
            "EnrollTotp",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            &message.password,
        );
        let mut attempt = claim!(self, key);
        let result = self
            .enroll_totp_in(&mut attempt, identity.user_id, &message.password)
            .await;
        Ok(Response::new(attempt.finish(result).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn confirm_totp(
        &self,
        request: Request<ConfirmTotpRequest>,
    ) -> Result<Response<ConfirmTotpResponse>, Status> {
        let identity = caller(&request)?;
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let key = self.request_key(
            "ConfirmTotp",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            "",
        );
        let mut attempt = claim!(self, key);
        let result = self
            .confirm_totp_in(&mut attempt, identity.user_id, &message.totp_code)
            .await;
        Ok(Response::new(attempt.finish(result).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn disable_totp(
        &self,
        request: Request<DisableTotpRequest>,
    ) -> Result<Response<DisableTotpResponse>, Status> {
        let identity = caller(&request)?;
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        if identity.kind != auction_platform::auth::CallerKind::User {
            return Err(UserError::InvalidCredentials.into());
        }
        let key = self.request_key(
            "DisableTotp",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            &message.password,
        );
        let mut attempt = claim!(self, key);
        let result = self
            .disable_totp_in(
                &mut attempt,
                identity.user_id,
                &message.password,
                message.code.as_ref(),
            )
            .await;
        Ok(Response::new(attempt.finish(result).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn request_email_verification(
        &self,
        request: Request<RequestEmailVerificationRequest>,
    ) -> Result<Response<RequestEmailVerificationResponse>, Status> {
        let identity = caller(&request)?;
        // Own account only, and not through a partner's API key: the mail
        // goes to the account's owner.
        if identity.kind != auction_platform::auth::CallerKind::User {
            return Err(auction_platform::to_status(
                &auction_platform::auth::AuthError::TokenMissing,
            ));
        }
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let key = self.request_key(
            "RequestEmailVerification",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            "",
        );
        let mut attempt = claim!(self, key);
        let result = self
            .request_email_verification_in(&mut attempt, identity.user_id)
            .await;
        let response = attempt.finish(result).await?;
        self.publish_soon();
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn verify_email(
        &self,
        request: Request<VerifyEmailRequest>,
    ) -> Result<Response<VerifyEmailResponse>, Status> {
        let message = request.into_inner();
        if !secrets::is_email_verification_token(&message.token) {
            return Err(UserError::Validation {
                field: "token",
                message: "must be amv_ followed by 43 base64url characters",
            }
            .into());
        }
        let response = self.verify_email_in(&message.token).await?;
        self.publish_soon();
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn get_profile(
        &self,
        request: Request<GetProfileRequest>,
    ) -> Result<Response<GetProfileResponse>, Status> {
        let identity = optional_caller(&request);
        let message = request.into_inner();
        let user_id = if message.user_id.is_empty() {
            caller_or_missing(identity.as_ref())?.user_id
        } else {
            parse_id("user_id", &message.user_id)?
        };
        let user = self.load_user(user_id).await?;
        let private = identity
            .as_ref()
            .is_some_and(|identity| identity.is_user(user_id) || identity.is_admin());
        Ok(Response::new(GetProfileResponse {
            user: Some(self.user_message(&mut self.pool(), &user, private).await?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateProfileResponse>, Status> {
        let identity = caller(&request)?;
        if !(identity.has_scope(Scope::Sell) || identity.has_scope(Scope::Bid)) {
            identity.require_scope(Scope::Bid)?;
        }
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let profile = message.profile.clone().unwrap_or_default();
        let paths = message
            .update_mask
            .clone()
            .map(|mask| mask.paths)
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(UserError::Validation {
                field: "update_mask",
                message: "name at least one field",
            }
            .into());
        }
        let mut change = ProfileChange::default();
        for path in &paths {
            match path.as_str() {
                "handle" => change.handle = Some(check_handle(&profile.handle)?),
                "display_name" => {
                    if profile.display_name.chars().count() > 64 {
                        return Err(UserError::Validation {
                            field: "profile.display_name",
                            message: "at most 64 characters",
                        }
                        .into());
                    }
                    change.display_name = Some(profile.display_name.clone());
                }
                "bio" => {
                    if profile.bio.chars().count() > 1_000 {
                        return Err(UserError::Validation {
                            field: "profile.bio",
                            message: "at most 1000 characters",
                        }
                        .into());
                    }
                    change.bio = Some(profile.bio.clone());
                }
                "country" => change.country = Some(check_country(&profile.country)?),
                "interest_category_ids" => {
                    change.interests = Some(check_interests(&profile.interest_category_ids)?);
                }
                "preferred_currency" => {
                    let currency = profile.preferred_currency.to_uppercase();
                    if !(currency.is_empty()
                        || (currency.len() == 3
                            && currency.bytes().all(|b| b.is_ascii_uppercase())))
                    {
                        return Err(UserError::Validation {
                            field: "profile.preferred_currency",
                            message: "must be an ISO 4217 code or empty",
                        }
                        .into());
                    }
                    change.preferred_currency = Some(currency);
                }
                "locale" => {
                    let locale = if profile.locale.is_empty() {
                        "en".to_owned()
                    } else {
                        profile.locale.clone()
                    };
                    if locale.len() > 35 {
                        return Err(UserError::Validation {
                            field: "profile.locale",
                            message: "must be a BCP 47 tag",
                        }
                        .into());
                    }
                    change.locale = Some(locale);
                }
                _ => {
                    return Err(UserError::Validation {
                        field: "update_mask",
                        message: "unknown path",
                    }
                    .into());
                }
            }
        }
        let key = self.request_key(
            "UpdateProfile",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            "",
        );
        let mut attempt = claim!(self, key);
        let result = self
            .update_profile_in(&mut attempt, identity.user_id, &change)
            .await;
        let response = attempt.finish(result).await?;
        self.publish_soon();
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn get_reputation(
        &self,
        request: Request<GetReputationRequest>,
    ) -> Result<Response<GetReputationResponse>, Status> {
        let user_id = parse_id("user_id", &request.get_ref().user_id)?;
        let user = self.load_user(user_id).await?;
        let since_ms = self.now_ms() - YEAR_MS;
        let database = &mut self.pool();
        let as_seller = store::feedback_counts(database, user.id, Some("from_buyer"), since_ms)
            .await
            .map_err(UserError::from)?;
        let as_buyer = store::feedback_counts(database, user.id, Some("from_seller"), since_ms)
            .await
            .map_err(UserError::from)?;
        let overall = store::feedback_counts(database, user.id, None, since_ms)
            .await
            .map_err(UserError::from)?;
        Ok(Response::new(GetReputationResponse {
            as_seller: Some(Self::reputation(as_seller)),
            as_buyer: Some(Self::reputation(as_buyer)),
            overall: Some(Self::reputation(overall)),
        }))
    }

    // The listener's span already carries `user_id` and `request_id`.
    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn leave_feedback(
        &self,
        request: Request<LeaveFeedbackRequest>,
    ) -> Result<Response<LeaveFeedbackResponse>, Status> {
        let identity = caller(&request)?;
        if identity.kind != auction_platform::auth::CallerKind::User {
            // Feedback speaks for a person: not a partner key, not a service.
            return Err(auction_platform::to_status(
                &auction_platform::auth::AuthError::TokenMissing,
            ));
        }
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let content = FeedbackContent::parse(&message.order_id, message.rating, message.comment)?;
        let (feedback, replay) = self
            .leave(identity.user_id, &message.request_id, &content)
            .await?;
        let mut response = Response::new(LeaveFeedbackResponse {
            feedback: Some(feedback_message(&feedback)?),
        });
        if replay {
            response
                .metadata_mut()
                .insert(REPLAY_TRAILER, MetadataValue::from_static("true"));
        }
        Ok(response)
    }

    #[tracing::instrument(skip_all)]
    async fn list_feedback(
        &self,
        request: Request<ListFeedbackRequest>,
    ) -> Result<Response<ListFeedbackResponse>, Status> {
        let message = request.into_inner();
        let user_id = parse_id("user_id", &message.user_id)?;
        let filters = ListFilters {
            subject_user_id: user_id,
            side: Side::filter_from_proto(message.side)?,
            rating: Rating::filter_from_proto(message.rating)?,
        };
        let now_ms = self.now_ms();
        let before = feedback::read_page_token(&message.page_token, &filters, now_ms)?;
        self.load_user(user_id).await?;
        let size = page_size(message.page_size, 20, 100);
        let mut entries = store::list_feedback(
            &self.context.database,
            &FeedbackQuery {
                subject_user_id: user_id,
                side: filters.side.map(|side| side.storage_name().to_owned()),
                rating: filters
                    .rating
                    .map(|rating| rating.storage_name().to_owned()),
                before,
                // One more than the page tells whether another page follows.
                limit: size + 1,
            },
        )
        .await
        .map_err(UserError::from)?;
        let more = i64::try_from(entries.len()).unwrap_or(i64::MAX) > size;
        entries.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next_page_token = match entries.last() {
            Some(last) if more => {
                feedback::page_token(&filters, (last.created_at_ms, last.id), now_ms)
            }
            _ => String::new(),
        };
        Ok(Response::new(ListFeedbackResponse {
            feedback: entries
                .iter()
                .map(feedback_message)
                .collect::<Result<_, _>>()?,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let identity = caller(&request)?;
        if identity.kind != auction_platform::auth::CallerKind::User {
            return Err(identity.require_role(Role::Admin).err().unwrap_or_else(|| {
                auction_platform::to_status(&auction_platform::auth::AuthError::TokenMissing)
            }));
        }
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let name = message.name.trim().to_owned();
        if !(1..=64).contains(&name.chars().count()) {
            return Err(UserError::Validation {
                field: "name",
                message: "must have 1-64 characters",
            }
            .into());
        }
        let scopes: BTreeSet<Scope> = message
            .scopes
            .iter()
            .map(|value| {
                Scope::from_proto(*value).ok_or(UserError::Validation {
                    field: "scopes",
                    message: "unknown scope",
                })
            })
            .collect::<Result<_, _>>()?;
        if scopes.is_empty() {
            return Err(UserError::Validation {
                field: "scopes",
                message: "grant at least one scope",
            }
            .into());
        }
        let now_ms = self.now_ms();
        let expires_at_ms = message.expire_time.as_ref().map(timestamp_ms);
        if expires_at_ms.is_some_and(|at| at <= now_ms) {
            return Err(UserError::Validation {
                field: "expire_time",
                message: "must be in the future",
            }
            .into());
        }
        let key = self.request_key(
            "CreateApiKey",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            "",
        );
        let mut attempt = claim!(self, key);
        let result = self
            .create_api_key_in(&mut attempt, identity.user_id, name, scopes, expires_at_ms)
            .await;
        Ok(Response::new(attempt.finish(result).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let identity = caller(&request)?;
        let message = request.into_inner();
        let owner = if message.user_id.is_empty() {
            identity.user_id
        } else {
            parse_id("user_id", &message.user_id)?
        };
        identity.require_owner_or_admin(owner)?;
        let size = page_size(message.page_size, 20, 100);
        let offset = page_offset(&message.page_token)?;
        let mut keys = store::list_api_keys(&self.context.database, owner, size + 1, offset)
            .await
            .map_err(UserError::from)?;
        let more = i64::try_from(keys.len()).unwrap_or(i64::MAX) > size;
        keys.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let now_ms = self.now_ms();
        Ok(Response::new(ListApiKeysResponse {
            api_keys: keys
                .iter()
                .map(|key| api_key_message(key, now_ms))
                .collect(),
            next_page_token: if more {
                format!("o{}", offset + size)
            } else {
                String::new()
            },
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        let identity = caller(&request)?;
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let key_id = parse_id("api_key_id", &message.api_key_id)?;
        let key = store::find_api_key(&mut self.pool(), key_id)
            .await
            .map_err(UserError::from)?
            // Someone else's key is reported as missing: ids are not probed.
            .filter(|key| identity.is_user(key.user_id) || identity.is_admin())
            .ok_or(UserError::ApiKeyNotFound)?;
        let now_ms = self.now_ms();
        store::revoke_api_key(&mut self.pool(), key.id, now_ms)
            .await
            .map_err(UserError::from)?;
        let key = store::find_api_key(&mut self.pool(), key.id)
            .await
            .map_err(UserError::from)?
            .ok_or(UserError::ApiKeyNotFound)?;
        tracing::info!(api_key_id = %key.id, "API key revoked");
        Ok(Response::new(RevokeApiKeyResponse {
            api_key: Some(api_key_message(&key, now_ms)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn exchange_api_key(
        &self,
        request: Request<ExchangeApiKeyRequest>,
    ) -> Result<Response<ExchangeApiKeyResponse>, Status> {
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let secret = message.api_key.trim();
        let key = self.request_key(
            "ExchangeApiKey",
            self.replay_keys.subject_scope("api_key", secret),
            &message.request_id,
            &without_request_id!(message),
            SHORT_WINDOW_MS,
            secret,
        );
        let mut attempt = claim!(self, key);
        let now_ms = attempt.now_ms();
        let result = self
            .exchange(attempt.tx(), secret)
            .await
            .map(|(token, key)| ExchangeApiKeyResponse {
                access_token: token.token,
                access_token_expire_time: Some(timestamp(token.expires_at_ms)),
                api_key: Some(api_key_message(&key, now_ms)),
            });
        Ok(Response::new(attempt.finish(result).await?))
    }

    async fn get_public_keys(
        &self,
        _request: Request<GetPublicKeysRequest>,
    ) -> Result<Response<GetPublicKeysResponse>, Status> {
        let keys = &self.context.keys;
        Ok(Response::new(GetPublicKeysResponse {
            keys: keys
                .public_keys()
                .into_iter()
                .map(|key| PublicKey {
                    key_id: key.key_id,
                    algorithm: key.algorithm.to_owned(),
                    jwk_json: key.jwk_json,
                    public_key_pem: key.public_key_pem,
                    activate_time: None,
                    retire_time: None,
                })
                .collect(),
            issuer: keys.issuer().to_owned(),
            audience: keys.audience().to_owned(),
            cache_until: Some(timestamp(self.now_ms() + PUBLIC_KEYS_CACHE_MS)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        caller(&request)?.require_admin()?;
        let message = request.into_inner();
        let size = page_size(message.page_size, 50, 200);
        let offset = page_offset(&message.page_token)?;
        let role_filter = Role::from_proto(message.role);
        let status_filter =
            AccountStatus::try_from(message.status).unwrap_or(AccountStatus::Unspecified);
        let now_ms = self.now_ms();
        let users = store::list_users(&self.context.database, &message.query, size + 1, offset)
            .await
            .map_err(UserError::from)?;
        let more = i64::try_from(users.len()).unwrap_or(i64::MAX) > size;
        let mut out = Vec::new();
        for user in users
            .iter()
            .take(usize::try_from(size).unwrap_or(usize::MAX))
        {
            let role_matches = role_filter.is_none_or(|role| user.roles.contains(&role));
            let status_matches = match status_filter {
                AccountStatus::Unspecified => true,
                AccountStatus::Active => !user.is_suspended(now_ms),
                AccountStatus::Suspended => user.is_suspended(now_ms),
            };
            if role_matches && status_matches {
                out.push(self.user_message(&mut self.pool(), user, true).await?);
            }
        }
        Ok(Response::new(ListUsersResponse {
            users: out,
            next_page_token: if more {
                format!("o{}", offset + size)
            } else {
                String::new()
            },
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_roles(
        &self,
        request: Request<SetRolesRequest>,
    ) -> Result<Response<SetRolesResponse>, Status> {
        let identity = caller(&request)?;
        identity.require_admin()?;
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let user_id = parse_id("user_id", &message.user_id)?;
        let roles: BTreeSet<Role> = message
            .roles
            .iter()
            .map(|value| {
                Role::from_proto(*value).ok_or(UserError::Validation {
                    field: "roles",
                    message: "unknown role",
                })
            })
            .collect::<Result<_, _>>()?;
        if user_id == identity.user_id && !roles.contains(&Role::Admin) {
            return Err(UserError::SelfAdminChange.into());
        }
        let key = self.request_key(
            "SetRoles",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            "",
        );
        let mut attempt = claim!(self, key);
        let result = self.set_roles_in(&mut attempt, user_id, &roles).await;
        let response = attempt.finish(result).await?;
        tracing::info!(user_id = %user_id, by = %identity.user_id, "roles set");
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn suspend_user(
        &self,
        request: Request<SuspendUserRequest>,
    ) -> Result<Response<SuspendUserResponse>, Status> {
        let identity = caller(&request)?;
        identity.require_admin()?;
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let user_id = parse_id("user_id", &message.user_id)?;
        if user_id == identity.user_id {
            return Err(UserError::SelfAdminChange.into());
        }
        if !(1..=500).contains(&message.reason.chars().count()) {
            return Err(UserError::Validation {
                field: "reason",
                message: "must have 1-500 characters",
            }
            .into());
        }
        let now_ms = self.now_ms();
        let until_ms = message.end_time.as_ref().map(timestamp_ms);
        if until_ms.is_some_and(|until| until <= now_ms) {
            return Err(UserError::Validation {
                field: "end_time",
                message: "must be in the future",
            }
            .into());
        }
        let key = self.request_key(
            "SuspendUser",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            "",
        );
        let mut attempt = claim!(self, key);
        let result = self
            .suspend_user_in(
                &mut attempt,
                user_id,
                &message.reason,
                until_ms,
                identity.user_id,
            )
            .await;
        let response = attempt.finish(result).await?;
        tracing::info!(user_id = %user_id, by = %identity.user_id, "account suspended");
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn unsuspend_user(
        &self,
        request: Request<UnsuspendUserRequest>,
    ) -> Result<Response<UnsuspendUserResponse>, Status> {
        let identity = caller(&request)?;
        identity.require_admin()?;
        let message = request.into_inner();
        check_request_id(&message.request_id)?;
        let user_id = parse_id("user_id", &message.user_id)?;
        let key = self.request_key(
            "UnsuspendUser",
            identity.user_id.to_string(),
            &message.request_id,
            &without_request_id!(message),
            LONG_WINDOW_MS,
            "",
        );
        let mut attempt = claim!(self, key);
        let result = self.unsuspend_user_in(&mut attempt, user_id).await;
        let response = attempt.finish(result).await?;
        tracing::info!(user_id = %user_id, by = %identity.user_id, "suspension lifted");
        Ok(Response::new(response))
    }
}

fn caller_or_missing(
    identity: Option<&auction_platform::auth::Caller>,
) -> Result<&auction_platform::auth::Caller, Status> {
    identity.ok_or_else(|| {
        auction_platform::to_status(&auction_platform::auth::AuthError::TokenMissing)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the RFC 3339 formatting of suspension ends is right.
    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
    }
}

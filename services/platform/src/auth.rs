//! Who is calling: the identity every service reads, and the layer that
//! establishes it on every listener.
//!
//! - [`Caller`] is the verified identity of a call: a user (with roles and
//!   whether a second factor was verified), a partner API key acting for its
//!   owner (with scopes), or another service. [`caller`] and
//!   [`optional_caller`] read it from a `tonic::Request`.
//! - [`AuthLayer`] runs in every listener's stack (see [`crate::server`]):
//!   it verifies `authorization: Bearer <JWT>` itself, offline, with the
//!   public keys of [`Keys`], and puts the [`Caller`] into the request's
//!   extensions. A request without credentials passes through without a
//!   caller (RPCs that anyone may call still work); a request with bad
//!   credentials is answered UNAUTHENTICATED at once (`TOKEN_INVALID`,
//!   `TOKEN_EXPIRED`). Nothing else establishes identity: no service trusts a
//!   bare user-id header.
//! - [`Keys`] holds the Ed25519 key material: the token signing key (used by
//!   the user service), the service key (service-to-service tokens, a
//!   separate pair so neither can forge the other), and every public key
//!   that verifies. Key ids are RFC 7638 thumbprints.
//!
//! Token claims follow `user.proto`: `iss`, `aud`, `sub` (user id), `sid`
//! (session), `roles` (`["BIDDER","SELLER"]`), `scope` (API-key tokens),
//! `iat`, `exp`, plus `akid` (the API key id), `amr` (`["pwd","otp"]` when a
//! second factor was verified, RFC 8176) and, on service tokens only, `svc`.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tonic::{Code, Request, Status};
use uuid::Uuid;

use crate::config::{AuthConfig, Config, ConfigError};
use crate::error::{ServiceError, to_status};

/// The request header of user and service tokens.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// The request header of partner API keys (exchanged at the gateway).
pub const API_KEY_HEADER: &str = "x-api-key";

/// A role of a user account (`auction.v1.Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// May bid, buy, pay, watch.
    Bidder,
    /// May create items and listings, ship, refund.
    Seller,
    /// May run live sessions and drive their lots.
    Auctioneer,
    /// May do everything; acts as admin only with a verified second factor.
    Admin,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 4] = [Role::Bidder, Role::Seller, Role::Auctioneer, Role::Admin];

    /// The name in tokens' `roles` claim (`BIDDER`).
    pub fn claim_name(self) -> &'static str {
        match self {
            Self::Bidder => "BIDDER",
            Self::Seller => "SELLER",
            Self::Auctioneer => "AUCTIONEER",
            Self::Admin => "ADMIN",
        }
    }

    /// The role of a `roles` claim entry.
    pub fn from_claim_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.claim_name() == name)
    }

    /// The lowercase name stored in databases (`bidder`).
    pub fn storage_name(self) -> &'static str {
        match self {
            Self::Bidder => "bidder",
            Self::Seller => "seller",
            Self::Auctioneer => "auctioneer",
            Self::Admin => "admin",
        }
    }

    /// The role of a stored name.
    pub fn from_storage_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|role| role.storage_name() == name)
    }

    /// The `auction.v1.Role` wire value.
    pub fn to_proto(self) -> auction_proto::v1::Role {
        match self {
            Self::Bidder => auction_proto::v1::Role::Bidder,
            Self::Seller => auction_proto::v1::Role::Seller,
            Self::Auctioneer => auction_proto::v1::Role::Auctioneer,
            Self::Admin => auction_proto::v1::Role::Admin,
        }
    }

    /// The role of an `auction.v1.Role` wire value; `None` for UNSPECIFIED
    /// and unknown values.
    pub fn from_proto(value: i32) -> Option<Self> {
        match auction_proto::v1::Role::try_from(value).ok()? {
            auction_proto::v1::Role::Unspecified => None,
            auction_proto::v1::Role::Bidder => Some(Self::Bidder),
            auction_proto::v1::Role::Seller => Some(Self::Seller),
            auction_proto::v1::Role::Auctioneer => Some(Self::Auctioneer),
            auction_proto::v1::Role::Admin => Some(Self::Admin),
        }
    }
}

/// What a partner API key may do (`auction.v1.ApiKeyScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read-only calls.
    Read,
    /// Bidding calls.
    Bid,
    /// Selling calls.
    Sell,
    /// The partner market feed.
    MarketFeed,
    /// Buyer payment calls.
    Payments,
    /// Notifications and webhooks.
    Notifications,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 6] = [
        Scope::Read,
        Scope::Bid,
        Scope::Sell,
        Scope::MarketFeed,
        Scope::Payments,
        Scope::Notifications,
    ];

    /// The name in tokens' `scope` claim (`BID`).
    pub fn claim_name(self) -> &'static str {
        match self {
            Self::Read => "READ",
            Self::Bid => "BID",
            Self::Sell => "SELL",
            Self::MarketFeed => "MARKET_FEED",
            Self::Payments => "PAYMENTS",
            Self::Notifications => "NOTIFICATIONS",
        }
    }

    /// The scope of a `scope` claim entry.
    pub fn from_claim_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.claim_name() == name)
    }

    /// The `auction.v1.ApiKeyScope` wire value.
    pub fn to_proto(self) -> auction_proto::v1::ApiKeyScope {
        use auction_proto::v1::ApiKeyScope as Wire;
        match self {
            Self::Read => Wire::Read,
            Self::Bid => Wire::Bid,
            Self::Sell => Wire::Sell,
            Self::MarketFeed => Wire::MarketFeed,
            Self::Payments => Wire::Payments,
            Self::Notifications => Wire::Notifications,
        }
    }

    /// The scope of a wire value; `None` for UNSPECIFIED and unknown values.
    pub fn from_proto(value: i32) -> Option<Self> {
        use auction_proto::v1::ApiKeyScope as Wire;
        match Wire::try_from(value).ok()? {
            Wire::Unspecified => None,
            Wire::Read => Some(Self::Read),
            Wire::Bid => Some(Self::Bid),
            Wire::Sell => Some(Self::Sell),
            Wire::MarketFeed => Some(Self::MarketFeed),
            Wire::Payments => Some(Self::Payments),
            Wire::Notifications => Some(Self::Notifications),
        }
    }
}

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// A user with an access token from Login, VerifySecondFactor or Refresh.
    User,
    /// A partner API key acting for its owner, limited to its scopes and
    /// never with AUCTIONEER or ADMIN power.
    ApiKey {
        /// The key's id.
        key_id: Uuid,
    },
    /// Another service of the mesh (a service token).
    Service {
        /// The calling service, e.g. `catalog`.
        name: String,
    },
}

/// The verified identity of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user the call acts for; the nil UUID for a service.
    pub user_id: Uuid,
    /// The roles in the token (API keys: without AUCTIONEER and ADMIN).
    pub roles: BTreeSet<Role>,
    /// User, API key or service.
    pub kind: CallerKind,
    /// The API key's scopes; empty for users and services, which are not
    /// limited by scopes.
    pub scopes: BTreeSet<Scope>,
    /// Whether the session was opened with a verified TOTP second factor.
    /// Admin power needs it.
    pub second_factor_verified: bool,
    /// The session (refresh-token family) the token belongs to, if any.
    pub session_id: Option<Uuid>,
    /// When the token expires, milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

impl Caller {
    /// Whether the caller may act with `role`. ADMIN counts only with a
    /// verified second factor, and never through an API key.
    pub fn has_role(&self, role: Role) -> bool {
        match role {
            Role::Admin => self.is_admin(),
            Role::Bidder | Role::Seller | Role::Auctioneer => self.roles.contains(&role),
        }
    }

    /// Whether the caller acts as an admin: a user token (not an API key)
    /// holding ADMIN from a session with a verified second factor.
    pub fn is_admin(&self) -> bool {
        self.kind == CallerKind::User
            && self.roles.contains(&Role::Admin)
            && self.second_factor_verified
    }

    /// Whether this is a service-to-service call.
    pub fn is_service(&self) -> bool {
        matches!(self.kind, CallerKind::Service { .. })
    }

    /// Whether the caller is the user `user_id` (a user or their API key).
    pub fn is_user(&self, user_id: Uuid) -> bool {
        !self.is_service() && self.user_id == user_id
    }

    /// Whether the caller may use `scope`: users and services always, API
    /// keys when granted.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match self.kind {
            CallerKind::User | CallerKind::Service { .. } => true,
            CallerKind::ApiKey { .. } => self.scopes.contains(&scope),
        }
    }

    /// PERMISSION_DENIED (`ROLE_REQUIRED`, or `SECOND_FACTOR_REQUIRED` for an
    /// admin without a verified second factor) unless [`Self::has_role`].
    pub fn require_role(&self, role: Role) -> Result<(), Status> {
        if self.has_role(role) {
            return Ok(());
        }
        if role == Role::Admin && self.kind == CallerKind::User && self.roles.contains(&Role::Admin)
        {
            return Err(to_status(&AuthError::SecondFactorRequired));
        }
        Err(to_status(&AuthError::RoleRequired(role)))
    }

    /// [`Self::require_role`] for ADMIN.
    pub fn require_admin(&self) -> Result<(), Status> {
        self.require_role(Role::Admin)
    }

    /// PERMISSION_DENIED `NOT_OWNER` unless the caller is `owner` or an admin.
    pub fn require_owner_or_admin(&self, owner: Uuid) -> Result<(), Status> {
        if self.is_user(owner) || self.is_admin() {
            Ok(())
        } else {
            Err(to_status(&AuthError::NotOwner))
        }
    }

    /// PERMISSION_DENIED `API_KEY_SCOPE_MISSING` unless [`Self::has_scope`].
    pub fn require_scope(&self, scope: Scope) -> Result<(), Status> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(to_status(&AuthError::ScopeMissing(scope)))
        }
    }

    /// PERMISSION_DENIED `ROLE_REQUIRED` unless the caller is a service (or
    /// an admin): for RPCs documented as "internal".
    pub fn require_service_or_admin(&self) -> Result<(), Status> {
        if self.is_service() || self.is_admin() {
            Ok(())
        } else {
            Err(to_status(&AuthError::ServiceRequired))
        }
    }
}

/// The verified caller of `request`, or UNAUTHENTICATED `TOKEN_MISSING`.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    optional_caller(request).ok_or_else(|| to_status(&AuthError::TokenMissing))
}

/// The verified caller of `request`, if it sent credentials.
pub fn optional_caller<T>(request: &Request<T>) -> Option<Caller> {
    request.extensions().get::<Caller>().cloned()
}

/// Copies the caller's credentials and the request id onto an outgoing
/// request to another service, so identity travels with internal calls
/// (the next hop verifies the same token itself).
pub fn forward_credentials<T, U>(incoming: &Request<T>, outgoing: &mut Request<U>) {
    for name in [AUTHORIZATION_HEADER, crate::server::REQUEST_ID_HEADER] {
        if let Some(value) = incoming.metadata().get(name) {
            outgoing.metadata_mut().insert(name, value.clone());
        }
    }
}

/// Authentication and authorization failures, as the wire shows them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials on an RPC that needs them.
    #[error("this call needs an access token (authorization: Bearer ...)")]
    TokenMissing,
    /// Malformed, forged, signed by an unknown key, or for another audience.
    #[error("the access token is not valid")]
    TokenInvalid,
    /// Past its `exp`.
    #[error("the access token has expired; refresh it")]
    TokenExpired,
    /// An unknown, revoked or expired API key.
    #[error("the API key is not valid")]
    ApiKeyInvalid,
    /// The caller lacks a role.
    #[error("this call needs the {} role", .0.claim_name())]
    RoleRequired(Role),
    /// An admin whose session has no verified second factor.
    #[error("admin actions need a session opened with a second factor (TOTP)")]
    SecondFactorRequired,
    /// The caller does not own the resource.
    #[error("only the owner (or an admin) may do this")]
    NotOwner,
    /// The API key lacks a scope.
    #[error("the API key lacks the {} scope", .0.claim_name())]
    ScopeMissing(Scope),
    /// Internal RPC called by a user.
    #[error("only services of the mesh (or admins) may call this")]
    ServiceRequired,
    /// The account is suspended.
    #[error("the account is suspended")]
    AccountSuspended,
    /// A token could not be signed (no signing key in this process, or a bug).
    #[error("cannot sign a token: {0}")]
    Signing(String),
}

impl ServiceError for AuthError {
    fn code(&self) -> Code {
        match self {
            Self::TokenMissing | Self::TokenInvalid | Self::TokenExpired | Self::ApiKeyInvalid => {
                Code::Unauthenticated
            }
            Self::RoleRequired(_)
            | Self::SecondFactorRequired
            | Self::NotOwner
            | Self::ScopeMissing(_)
            | Self::ServiceRequired
            | Self::AccountSuspended => Code::PermissionDenied,
            Self::Signing(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::TokenMissing => "TOKEN_MISSING",
            Self::TokenInvalid => "TOKEN_INVALID",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::ApiKeyInvalid => "API_KEY_INVALID",
            Self::RoleRequired(_) | Self::ServiceRequired => "ROLE_REQUIRED",
            Self::SecondFactorRequired => "SECOND_FACTOR_REQUIRED",
            Self::NotOwner => "NOT_OWNER",
            Self::ScopeMissing(_) => "API_KEY_SCOPE_MISSING",
            Self::AccountSuspended => "ACCOUNT_SUSPENDED",
            Self::Signing(_) => "INTERNAL_ERROR",
        }
    }

    fn metadata(&self) -> HashMap<String, String> {
        match self {
            Self::RoleRequired(role) => {
                HashMap::from([("role".to_owned(), role.claim_name().to_owned())])
            }
            Self::ScopeMissing(scope) => {
                HashMap::from([("scope".to_owned(), scope.claim_name().to_owned())])
            }
            Self::TokenMissing
            | Self::TokenInvalid
            | Self::TokenExpired
            | Self::ApiKeyInvalid
            | Self::SecondFactorRequired
            | Self::NotOwner
            | Self::ServiceRequired
            | Self::AccountSuspended
            | Self::Signing(_) => HashMap::new(),
        }
    }
}

/// The claims of every token we sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (`auth.issuer`).
    pub iss: String,
    /// Audience (`auth.audience`, or `<audience>-internal` for services).
    pub aud: String,
    /// The user id; the service name for service tokens.
    pub sub: String,
    /// Session (refresh-token family) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Role names (`BIDDER`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// API-key scopes (`BID`); present only on API-key tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Vec<String>>,
    /// The API key id; present only on API-key tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akid: Option<String>,
    /// Authentication methods (RFC 8176): `pwd`, `otp`, `key`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The calling service; present only on service tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc: Option<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
}

/// What an access token grants; the user service builds one per login,
/// refresh or API-key exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    /// The user.
    pub user_id: Uuid,
    /// The session, for user tokens.
    pub session_id: Option<Uuid>,
    /// The user's roles (API keys: AUCTIONEER and ADMIN are dropped here).
    pub roles: BTreeSet<Role>,
    /// For API-key tokens: the key id and its scopes.
    pub api_key: Option<(Uuid, BTreeSet<Scope>)>,
    /// Whether the session passed a TOTP second factor.
    pub second_factor_verified: bool,
}

/// A signed token and its expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IssuedToken")
            .field("token", &"[redacted]")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// A public key as published by `GetPublicKeys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// RFC 7638 thumbprint; the `kid` of tokens signed with it.
    pub key_id: String,
    /// Always `EdDSA`.
    pub algorithm: &'static str,
    /// The JWK JSON object.
    pub jwk_json: String,
    /// SPKI PEM.
    pub public_key_pem: String,
}

struct VerifyingKey {
    decoding: DecodingKey,
    info: PublicKeyInfo,
}

struct SigningKey {
    key_id: String,
    encoding: EncodingKey,
}

/// Which set a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyUse {
    UserTokens,
    ServiceTokens,
}

/// The key material of a process: what it may sign with and what it
/// accepts. Built once at start ([`Keys::load`]) and shared.
pub struct Keys {
    issuer: String,
    audience: String,
    service_audience: String,
    access_token_ttl_ms: i64,
    token_signer: Option<SigningKey>,
    service_signer: Option<SigningKey>,
    verifiers: HashMap<String, (KeyUse, VerifyingKey)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Keys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "token_signing_key_id",
                &self.token_signer.as_ref().map(|key| &key.key_id),
            )
            .field(
                "service_key_id",
                &self.service_signer.as_ref().map(|key| &key.key_id),
            )
            .field(
                "verifying_key_ids",
                &self.verifiers.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The file names of generated keys under `<storage.data_dir>/keys/`.
pub const GENERATED_TOKEN_KEY_FILE: &str = "token-signing-ed25519.pem";
/// See [`GENERATED_TOKEN_KEY_FILE`].
pub const GENERATED_SERVICE_KEY_FILE: &str = "service-ed25519.pem";

fn key_error(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Keys {
    /// Loads the configured keys, generating missing ones into
    /// `<storage.data_dir>/keys/` when `auth.generate_missing_keys` is set.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let auth = &config.auth;
        let generated_dir = config.storage.data_dir.join("keys");
        let token_pem = private_pem(
            "auth.signing_key_file",
            auth.signing_key_pem
                .as_ref()
                .map(|pem| pem.expose().to_owned()),
            auth.signing_key_file.as_deref(),
            auth.generate_missing_keys
                .then(|| generated_dir.join(GENERATED_TOKEN_KEY_FILE)),
        )?;
        let service_pem = private_pem(
            "auth.service_key_file",
            auth.service_key_pem
                .as_ref()
                .map(|pem| pem.expose().to_owned()),
            auth.service_key_file.as_deref(),
            auth.generate_missing_keys
                .then(|| generated_dir.join(GENERATED_SERVICE_KEY_FILE)),
        )?;
        let read_public = |key: &'static str, files: &[PathBuf]| {
            files
                .iter()
                .map(|file| {
                    std::fs::read_to_string(file).map_err(|error| {
                        key_error(key, format!("cannot read {}: {error}", file.display()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let token_public =
            read_public("auth.verification_key_files", &auth.verification_key_files)?;
        let service_public = read_public(
            "auth.service_verification_key_files",
            &auth.service_verification_key_files,
        )?;
        let keys = Self::from_pems(
            auth,
            token_pem.as_deref(),
            service_pem.as_deref(),
            &token_public,
            &service_public,
        )?;
        tracing::info!(keys = ?keys, "token keys loaded");
        Ok(keys)
    }

    /// Builds the key set from PEM texts: optional private keys (PKCS#8)
    /// and further public keys (SPKI) for each use.
    pub fn from_pems(
        auth: &AuthConfig,
        token_signing_pem: Option<&str>,
        service_signing_pem: Option<&str>,
        token_public_pems: &[String],
        service_public_pems: &[String],
    ) -> Result<Self, ConfigError> {
        let mut keys = Self {
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            service_audience: format!("{}-internal", auth.audience),
            access_token_ttl_ms: i64::try_from(auth.access_token_ttl_ms).unwrap_or(900_000),
            token_signer: None,
            service_signer: None,
            verifiers: HashMap::new(),
        };
        if let Some(pem) = token_signing_pem {
            let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|_| {
                key_error(
                    "auth.signing_key_file",
                    "not an Ed25519 PKCS#8 PEM private key",
                )
            })?;
            keys.token_signer =
                Some(keys.add_signer(KeyUse::UserTokens, &signing, "auth.signing_key_file")?);
        }
        if let Some(pem) = service_signing_pem {
            let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|_| {
                key_error(
                    "auth.service_key_file",
                    "not an Ed25519 PKCS#8 PEM private key",
                )
            })?;
            keys.service_signer =
                Some(keys.add_signer(KeyUse::ServiceTokens, &signing, "auth.service_key_file")?);
        }
        for (key_use, pems, config_key) in [
            (
                KeyUse::UserTokens,
                token_public_pems,
                "auth.verification_key_files",
            ),
            (
                KeyUse::ServiceTokens,
                service_public_pems,
                "auth.service_verification_key_files",
            ),
        ] {
            for pem in pems {
                let public = ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
                    .map_err(|_| key_error(config_key, "not an Ed25519 SPKI PEM public key"))?;
                keys.add_verifier(key_use, &public, config_key)?;
            }
        }
        if keys.token_signer.is_some()
            && keys.service_signer.as_ref().map(|key| &key.key_id)
                == keys.token_signer.as_ref().map(|key| &key.key_id)
        {
            return Err(key_error(
                "auth.service_key_file",
                "must be a different key from auth.signing_key_file",
            ));
        }
        Ok(keys)
    }

    /// A fresh in-memory key set with both signing keys (tests, tools).
    pub fn generate(auth: &AuthConfig) -> Self {
        let token = generate_pem();
        let service = generate_pem();
        // Both PEMs were produced just above by the same library.
        #[allow(clippy::expect_used)]
        Self::from_pems(auth, Some(&token), Some(&service), &[], &[])
            .expect("freshly generated keys load")
    }

    fn add_signer(
        &mut self,
        key_use: KeyUse,
        signing: &ed25519_dalek::SigningKey,
        config_key: &'static str,
    ) -> Result<SigningKey, ConfigError> {
        let der = signing
            .to_pkcs8_der()
            .map_err(|_| key_error(config_key, "cannot encode the private key"))?;
        let key_id = self.add_verifier(key_use, &signing.verifying_key(), config_key)?;
        Ok(SigningKey {
            key_id,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
        })
    }

    fn add_verifier(
        &mut self,
        key_use: KeyUse,
        public: &ed25519_dalek::VerifyingKey,
        config_key: &'static str,
    ) -> Result<String, ConfigError> {
        let x = URL_SAFE_NO_PAD.encode(public.as_bytes());
        // RFC 7638: members in lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let key_id = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(thumbprint_input.as_bytes()));
        if let Some((existing_use, _)) = self.verifiers.get(&key_id) {
            if *existing_use != key_use {
                return Err(key_error(
                    config_key,
                    "the same key is configured for user tokens and for service tokens",
                ));
            }
            return Ok(key_id);
        }
        let public_key_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| key_error(config_key, "cannot encode the public key"))?;
        let jwk_json = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"{key_id}","alg":"EdDSA","use":"sig"}}"#
        );
        self.verifiers.insert(
            key_id.clone(),
            (
                key_use,
                VerifyingKey {
                    decoding: DecodingKey::from_ed_der(public.as_bytes()),
                    info: PublicKeyInfo {
                        key_id: key_id.clone(),
                        algorithm: "EdDSA",
                        jwk_json,
                        public_key_pem,
                    },
                },
            ),
        );
        Ok(key_id)
    }

    /// The `iss` claim.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` claim of user tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Access-token lifetime.
    pub fn access_token_ttl_ms(&self) -> i64 {
        self.access_token_ttl_ms
    }

    /// The public keys that verify user access tokens (the JWKS of
    /// `GetPublicKeys`), sorted by key id. Service keys are not published.
    pub fn public_keys(&self) -> Vec<PublicKeyInfo> {
        let mut keys: Vec<PublicKeyInfo> = self
            .verifiers
            .values()
            .filter(|(key_use, _)| *key_use == KeyUse::UserTokens)
            .map(|(_, key)| key.info.clone())
            .collect();
        keys.sort_by(|left, right| left.key_id.cmp(&right.key_id));
        keys
    }

    /// The PEM of the token signing key's public part (to hand to processes
    /// that only verify), if this process signs.
    pub fn signing_public_key_pem(&self) -> Option<String> {
        let signer = self.token_signer.as_ref()?;
        self.verifiers
            .get(&signer.key_id)
            .map(|(_, key)| key.info.public_key_pem.clone())
    }

    /// Signs an access token for `grant`, valid from `now_ms` for the
    /// configured lifetime.
    pub fn issue_access_token(
        &self,
        grant: &AccessGrant,
        now_ms: i64,
    ) -> Result<IssuedToken, AuthError> {
        let expires_at_ms = now_ms.saturating_add(self.access_token_ttl_ms);
        let mut roles: Vec<String> = grant
            .roles
            .iter()
            .filter(|role| {
                // API keys never carry AUCTIONEER or ADMIN power.
                grant.api_key.is_none() || matches!(role, Role::Bidder | Role::Seller)
            })
            .map(|role| role.claim_name().to_owned())
            .collect();
        roles.dedup();
        let mut amr = vec![
            if grant.api_key.is_some() {
                "key"
            } else {
                "pwd"
            }
            .to_owned(),
        ];
        if grant.second_factor_verified && grant.api_key.is_none() {
            amr.push("otp".to_owned());
        }
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: grant.user_id.to_string(),
            sid: grant.session_id.map(|id| id.to_string()),
            roles,
            scope: grant.api_key.as_ref().map(|(_, scopes)| {
                scopes
                    .iter()
                    .map(|scope| scope.claim_name().to_owned())
                    .collect()
            }),
            akid: grant.api_key.as_ref().map(|(id, _)| id.to_string()),
            amr,
            svc: None,
            iat: now_ms.div_euclid(1_000),
            exp: expires_at_ms.div_euclid(1_000),
        };
        let signer = self
            .token_signer
            .as_ref()
            .ok_or_else(|| AuthError::Signing("no token signing key in this process".into()))?;
        Ok(IssuedToken {
            token: sign(signer, &claims)?,
            expires_at_ms: claims.exp.saturating_mul(1_000),
        })
    }

    /// Signs arbitrary claims with the token signing key: for tests that
    /// need an expired or otherwise unusual token.
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, AuthError> {
        let signer = self
            .token_signer
            .as_ref()
            .ok_or_else(|| AuthError::Signing("no token signing key in this process".into()))?;
        sign(signer, claims)
    }

    /// Signs a service token for `service` (e.g. `catalog`), valid from
    /// `now_ms` for the access-token lifetime.
    pub fn issue_service_token(
        &self,
        service: &str,
        now_ms: i64,
    ) -> Result<IssuedToken, AuthError> {
        let signer = self
            .service_signer
            .as_ref()
            .ok_or_else(|| AuthError::Signing("no service key in this process".into()))?;
        let expires_at_ms = now_ms.saturating_add(self.access_token_ttl_ms);
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.service_audience.clone(),
            sub: service.to_owned(),
            sid: None,
            roles: Vec::new(),
            scope: None,
            akid: None,
            amr: Vec::new(),
            svc: Some(service.to_owned()),
            iat: now_ms.div_euclid(1_000),
            exp: expires_at_ms.div_euclid(1_000),
        };
        Ok(IssuedToken {
            token: sign(signer, &claims)?,
            expires_at_ms: claims.exp.saturating_mul(1_000),
        })
    }

    /// Verifies a compact JWT at `now_ms` and returns its caller.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::TokenInvalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::TokenInvalid);
        }
        let key_id = header.kid.ok_or(AuthError::TokenInvalid)?;
        let (key_use, key) = self.verifiers.get(&key_id).ok_or(AuthError::TokenInvalid)?;
        let audience = match key_use {
            KeyUse::UserTokens => &self.audience,
            KeyUse::ServiceTokens => &self.service_audience,
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["iss", "aud", "sub", "exp"]);
        // Expiry is checked below against our own clock, not the library's.
        validation.validate_exp = false;
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|_| AuthError::TokenInvalid)?
            .claims;
        let now_s = now_ms.div_euclid(1_000);
        if claims.exp <= now_s {
            return Err(AuthError::TokenExpired);
        }
        // A token issued in the future beyond clock skew was not made by us.
        if claims.iat > now_s + 60 {
            return Err(AuthError::TokenInvalid);
        }
        let expires_at_ms = claims.exp.saturating_mul(1_000);
        match key_use {
            KeyUse::ServiceTokens => {
                let name = claims.svc.ok_or(AuthError::TokenInvalid)?;
                Ok(Caller {
                    user_id: Uuid::nil(),
                    roles: BTreeSet::new(),
                    kind: CallerKind::Service { name },
                    scopes: BTreeSet::new(),
                    second_factor_verified: false,
                    session_id: None,
                    expires_at_ms,
                })
            }
            KeyUse::UserTokens => {
                if claims.svc.is_some() {
                    return Err(AuthError::TokenInvalid);
                }
                let user_id: Uuid = claims.sub.parse().map_err(|_| AuthError::TokenInvalid)?;
                let session_id = match &claims.sid {
                    Some(sid) => Some(sid.parse().map_err(|_| AuthError::TokenInvalid)?),
                    None => None,
                };
                // Unknown role or scope names (from a newer issuer) grant nothing.
                let mut roles: BTreeSet<Role> = claims
                    .roles
                    .iter()
                    .filter_map(|name| Role::from_claim_name(name))
                    .collect();
                let (kind, scopes) = match &claims.akid {
                    Some(key_id) => {
                        let key_id = key_id.parse().map_err(|_| AuthError::TokenInvalid)?;
                        roles.retain(|role| matches!(role, Role::Bidder | Role::Seller));
                        let scopes = claims
                            .scope
                            .iter()
                            .flatten()
                            .filter_map(|name| Scope::from_claim_name(name))
                            .collect();
                        (CallerKind::ApiKey { key_id }, scopes)
                    }
                    None => (CallerKind::User, BTreeSet::new()),
                };
                let second_factor_verified =
                    kind == CallerKind::User && claims.amr.iter().any(|method| method == "otp");
                Ok(Caller {
                    user_id,
                    roles,
                    kind,
                    scopes,
                    second_factor_verified,
                    session_id,
                    expires_at_ms,
                })
            }
        }
    }
}

fn sign(signer: &SigningKey, claims: &Claims) -> Result<String, AuthError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(signer.key_id.clone());
    jsonwebtoken::encode(&header, claims, &signer.encoding)
        .map_err(|error| AuthError::Signing(error.to_string()))
}

/// A new Ed25519 private key as PKCS#8 PEM.
pub fn generate_pem() -> String {
    use rand::RngCore as _;
    let mut seed = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    // Encoding a valid 32-byte key cannot fail.
    #[allow(clippy::expect_used)]
    let pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 key encodes as PKCS#8");
    pem.to_string()
}

/// Reads a private key: inline secret, else file, else the generated file
/// (created on first use with mode 0600).
fn private_pem(
    config_key: &'static str,
    inline: Option<String>,
    file: Option<&Path>,
    generated: Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    if let Some(pem) = inline {
        return Ok(Some(pem));
    }
    if let Some(file) = file {
        return std::fs::read_to_string(file).map(Some).map_err(|error| {
            key_error(
                config_key,
                format!("cannot read {}: {error}", file.display()),
            )
        });
    }
    let Some(path) = generated else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(pem) => return Ok(Some(pem)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(key_error(
                config_key,
                format!("cannot read {}: {error}", path.display()),
            ));
        }
    }
    let pem = generate_pem();
    write_private(&path, &pem).map_err(|error| {
        key_error(
            config_key,
            format!("cannot write {}: {error}", path.display()),
        )
    })?;
    tracing::info!(path = %path.display(), "generated a new Ed25519 key");
    Ok(Some(pem))
}

fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()
}

/// The time source of token checks; tests inject a manual one.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::now_ms()
    }
}

/// Turns a partner API key into an access token. The gateway installs one
/// (the user service in-process, or its gRPC client) so that `x-api-key`
/// works on every RPC; the key is checked on every call, so a revoked key
/// stops working at once.
pub trait ApiKeyExchange: Send + Sync + 'static {
    /// The access token for `secret`, or UNAUTHENTICATED `API_KEY_INVALID`
    /// / PERMISSION_DENIED `ACCOUNT_SUSPENDED`.
    fn exchange<'a>(
        &'a self,
        secret: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, Status>> + Send + 'a>>;
}

/// The tower layer that establishes the [`Caller`] of every call.
#[derive(Clone)]
pub struct AuthLayer {
    keys: Arc<Keys>,
    clock: Arc<dyn Clock>,
    api_keys: Option<Arc<dyn ApiKeyExchange>>,
    verified: Arc<VerifiedTokens>,
}

/// Tokens this process has verified, with their callers, so a client that
/// sends the same token on every call (all of them) pays for the signature
/// check once per token rather than once per call. Only valid tokens enter;
/// expiry is still checked on every use; the key set never changes in a
/// process, so a cached verdict cannot go stale other than by expiry.
#[derive(Debug, Default)]
struct VerifiedTokens {
    callers: std::sync::Mutex<HashMap<Box<str>, Caller>>,
}

/// Verified tokens kept per process; beyond it the cache starts over.
const VERIFIED_TOKENS_CAPACITY: usize = 65_536;

impl VerifiedTokens {
    fn verify(&self, keys: &Keys, token: &str, now_ms: i64) -> Result<Caller, AuthError> {
        {
            let mut callers = self
                .callers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(caller) = callers.get(token) {
                if caller.expires_at_ms > now_ms {
                    return Ok(caller.clone());
                }
                callers.remove(token);
                return Err(AuthError::TokenExpired);
            }
        }
        let caller = keys.verify(token, now_ms)?;
        let mut callers = self
            .callers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if callers.len() >= VERIFIED_TOKENS_CAPACITY {
            callers.clear();
        }
        callers.insert(token.into(), caller.clone());
        Ok(caller)
    }
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthLayer")
            .field("keys", &self.keys)
            .field("api_keys", &self.api_keys.is_some())
            .finish()
    }
}

impl AuthLayer {
    /// Verifies bearer tokens with `keys` on the system clock.
    pub fn new(keys: Arc<Keys>) -> Self {
        Self {
            keys,
            clock: Arc::new(SystemClock),
            api_keys: None,
            verified: Arc::new(VerifiedTokens::default()),
        }
    }

    /// Uses `clock` for expiry checks.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Also accepts `x-api-key`, exchanged through `exchange` on every call.
    pub fn with_api_keys(mut self, exchange: Arc<dyn ApiKeyExchange>) -> Self {
        self.api_keys = Some(exchange);
        self
    }

    /// The key set.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, ResponseBody> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            match authenticate(&layer, request.headers_mut()).await {
                Ok(Some(caller)) => {
                    if caller.user_id != Uuid::nil() {
                        tracing::Span::current()
                            .record("user_id", tracing::field::display(caller.user_id));
                    }
                    request.extensions_mut().insert(caller);
                }
                Ok(None) => {}
                Err(status) => return Ok(refuse(request, status).await),
            }
            inner.call(request).await
        })
    }
}

/// Answers a call refused before its body was read. Over HTTP/1.1
/// (grpc-web) the body is read first (at most 64 KiB, within a second): a
/// client still writing its request when the server answers and drops the
/// connection sees a broken pipe instead of the status (Node's HTTP client
/// did, as INTERNAL), and a drained connection stays usable. A larger or
/// slower body gets the answer with `connection: close`.
pub async fn refuse<B, ResponseBody>(
    request: http::Request<B>,
    status: Status,
) -> http::Response<ResponseBody>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResponseBody: Default,
{
    let mut response = status.into_http();
    if request.version() < http::Version::HTTP_2 {
        let body = http_body_util::Limited::new(request.into_body(), 64 * 1024);
        let drained = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            http_body_util::BodyExt::collect(body),
        )
        .await;
        if !matches!(drained, Ok(Ok(_))) {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
    response
}

async fn authenticate(
    layer: &AuthLayer,
    headers: &mut http::HeaderMap,
) -> Result<Option<Caller>, Status> {
    if let Some(value) = headers.get(API_KEY_HEADER) {
        let Some(exchange) = &layer.api_keys else {
            return Err(to_status(&AuthError::ApiKeyInvalid));
        };
        let secret = value
            .to_str()
            .map_err(|_| to_status(&AuthError::ApiKeyInvalid))?
            .trim()
            .to_owned();
        let token = exchange.exchange(&secret).await?;
        // The key itself goes no further than this hop; the next hops see
        // the short-lived token, which they verify themselves.
        headers.remove(API_KEY_HEADER);
        let bearer = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| to_status(&AuthError::Signing("token is not a header value".into())))?;
        headers.insert(AUTHORIZATION_HEADER, bearer);
    }
    let Some(value) = headers.get(AUTHORIZATION_HEADER) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| to_status(&AuthError::TokenInvalid))?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(to_status(&AuthError::TokenInvalid)),
    };
    layer
        .verified
        .verify(&layer.keys, token, layer.clock.now_ms())
        .map(Some)
        .map_err(|error| to_status(&error))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    fn auth_config() -> AuthConfig {
        Config::embedded_default().auth
    }

    fn grant(roles: &[Role], second_factor_verified: bool) -> AccessGrant {
        AccessGrant {
            user_id: Uuid::now_v7(),
            session_id: Some(Uuid::now_v7()),
            roles: roles.iter().copied().collect(),
            api_key: None,
            second_factor_verified,
        }
    }

    const NOW_MS: i64 = 1_800_000_000_000;

    // Proves a signed token verifies into the same identity it was issued for.
    #[test]
    fn issued_tokens_verify() {
        let keys = Keys::generate(&auth_config());
        let grant = grant(&[Role::Bidder, Role::Seller], false);
        let issued = keys.issue_access_token(&grant, NOW_MS).unwrap();
        let caller = keys.verify(&issued.token, NOW_MS + 1_000).unwrap();
        assert_eq!(caller.user_id, grant.user_id);
        assert_eq!(caller.session_id, grant.session_id);
        assert_eq!(caller.roles, grant.roles);
        assert_eq!(caller.kind, CallerKind::User);
        assert!(caller.has_role(Role::Bidder));
        assert!(!caller.has_role(Role::Auctioneer));
        assert_eq!(issued.expires_at_ms, NOW_MS + 900_000);
    }

    // Proves the verified-token cache answers like a fresh verification:
    // the same caller while valid, expired once past its expiry, and a
    // tampered token (never cached) refused.
    #[test]
    fn cached_verdicts_still_expire() {
        let keys = Keys::generate(&auth_config());
        let verified = VerifiedTokens::default();
        let grant = grant(&[Role::Bidder], false);
        let issued = keys.issue_access_token(&grant, NOW_MS).unwrap();
        let first = verified.verify(&keys, &issued.token, NOW_MS).unwrap();
        let second = verified
            .verify(&keys, &issued.token, NOW_MS + 1_000)
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(verified.callers.lock().unwrap().len(), 1);
        assert!(matches!(
            verified.verify(&keys, &issued.token, issued.expires_at_ms),
            Err(AuthError::TokenExpired)
        ));
        let mut tampered = issued.token.clone();
        tampered.push('x');
        assert!(matches!(
            verified.verify(&keys, &tampered, NOW_MS),
            Err(AuthError::TokenInvalid)
        ));
        assert!(verified.callers.lock().unwrap().is_empty());
    }

    // Proves expired, forged, wrong-key and tampered tokens are refused with
    // the reason the contract names.
    #[test]
    fn bad_tokens_are_refused() {
        let keys = Keys::generate(&auth_config());
        let other = Keys::generate(&auth_config());
        let issued = keys
            .issue_access_token(&grant(&[Role::Bidder], false), NOW_MS)
            .unwrap();
        assert_eq!(
            keys.verify(&issued.token, NOW_MS + 900_000),
            Err(AuthError::TokenExpired)
        );
        let foreign = other
            .issue_access_token(&grant(&[Role::Admin], true), NOW_MS)
            .unwrap();
        assert_eq!(
            keys.verify(&foreign.token, NOW_MS),
            Err(AuthError::TokenInvalid)
        );
        // Same kid, payload swapped: the signature no longer matches.
        let mut parts: Vec<&str> = issued.token.split('.').collect();
        let elevated = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
                .unwrap()
                .replace("BIDDER", "ADMIN"),
        );
        parts[1] = &elevated;
        assert_eq!(
            keys.verify(&parts.join("."), NOW_MS),
            Err(AuthError::TokenInvalid)
        );
        // "alg": "none" never passes.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{header}.{}.", issued.token.split('.').nth(1).unwrap());
        assert_eq!(keys.verify(&unsigned, NOW_MS), Err(AuthError::TokenInvalid));
        assert_eq!(keys.verify("garbage", NOW_MS), Err(AuthError::TokenInvalid));
    }

    // Proves admin power needs a verified second factor and never comes from
    // an API key.
    #[test]
    fn admin_needs_second_factor() {
        let keys = Keys::generate(&auth_config());
        let without = keys
            .verify(
                &keys
                    .issue_access_token(&grant(&[Role::Admin], false), NOW_MS)
                    .unwrap()
                    .token,
                NOW_MS,
            )
            .unwrap();
        assert!(!without.is_admin());
        let status = without.require_admin().unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.metadata().get(crate::error::REASON_TRAILER).unwrap(),
            "SECOND_FACTOR_REQUIRED"
        );
        let with = keys
            .verify(
                &keys
                    .issue_access_token(&grant(&[Role::Admin], true), NOW_MS)
                    .unwrap()
                    .token,
                NOW_MS,
            )
            .unwrap();
        assert!(with.is_admin());
        let mut key_grant = grant(&[Role::Admin, Role::Bidder], true);
        key_grant.api_key = Some((Uuid::now_v7(), [Scope::Bid].into_iter().collect()));
        let key_caller = keys
            .verify(
                &keys.issue_access_token(&key_grant, NOW_MS).unwrap().token,
                NOW_MS,
            )
            .unwrap();
        assert!(!key_caller.is_admin());
        assert_eq!(key_caller.roles, [Role::Bidder].into_iter().collect());
        assert!(key_caller.has_scope(Scope::Bid));
        assert!(!key_caller.has_scope(Scope::Sell));
    }

    // Proves service tokens and user tokens cannot stand in for each other.
    #[test]
    fn service_tokens_are_distinct() {
        let keys = Keys::generate(&auth_config());
        let service = keys.issue_service_token("catalog", NOW_MS).unwrap();
        let caller = keys.verify(&service.token, NOW_MS).unwrap();
        assert_eq!(
            caller.kind,
            CallerKind::Service {
                name: "catalog".to_owned()
            }
        );
        assert!(caller.require_service_or_admin().is_ok());
        // A user token claiming "svc" is refused.
        let mut claims = Claims {
            iss: keys.issuer().to_owned(),
            aud: keys.audience().to_owned(),
            sub: Uuid::now_v7().to_string(),
            sid: None,
            roles: vec![],
            scope: None,
            akid: None,
            amr: vec![],
            svc: Some("catalog".to_owned()),
            iat: NOW_MS / 1_000,
            exp: NOW_MS / 1_000 + 60,
        };
        let forged = keys.sign_claims(&claims).unwrap();
        assert_eq!(keys.verify(&forged, NOW_MS), Err(AuthError::TokenInvalid));
        // A user token for the internal audience is refused too.
        claims.svc = None;
        claims.aud = format!("{}-internal", keys.audience());
        let wrong_audience = keys.sign_claims(&claims).unwrap();
        assert_eq!(
            keys.verify(&wrong_audience, NOW_MS),
            Err(AuthError::TokenInvalid)
        );
    }

    // Proves a rotation works: a process that lists the old public key keeps
    // accepting tokens signed with it after switching to a new signing key.
    #[test]
    fn rotation_by_key_id() {
        let config = auth_config();
        let old_pem = generate_pem();
        let new_pem = generate_pem();
        let old = Keys::from_pems(&config, Some(&old_pem), None, &[], &[]).unwrap();
        let old_public = old.signing_public_key_pem().unwrap();
        let token = old
            .issue_access_token(&grant(&[Role::Bidder], false), NOW_MS)
            .unwrap();
        let rotated = Keys::from_pems(&config, Some(&new_pem), None, &[old_public], &[]).unwrap();
        assert!(rotated.verify(&token.token, NOW_MS).is_ok());
        assert_eq!(rotated.public_keys().len(), 2);
        let verify_only = Keys::from_pems(
            &config,
            None,
            None,
            &[rotated.signing_public_key_pem().unwrap()],
            &[],
        )
        .unwrap();
        let fresh = rotated
            .issue_access_token(&grant(&[Role::Bidder], false), NOW_MS)
            .unwrap();
        assert!(verify_only.verify(&fresh.token, NOW_MS).is_ok());
        assert_eq!(
            verify_only.verify(&token.token, NOW_MS),
            Err(AuthError::TokenInvalid)
        );
    }

    // Proves keys are generated once into the data folder and reused on the
    // next start (dev), and that production refuses to start without keys.
    #[test]
    fn generated_keys_persist() {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::embedded_default();
        config.storage.data_dir = data.path().to_owned();
        let first = Keys::load(&config).unwrap();
        let second = Keys::load(&config).unwrap();
        assert_eq!(first.public_keys(), second.public_keys());
        assert!(
            data.path()
                .join("keys")
                .join(GENERATED_TOKEN_KEY_FILE)
                .is_file()
        );
        let mut production = Config::production_default();
        production.storage.postgres_url = Some(crate::config::Secret::new("postgres://x@y/z"));
        let error = production.validate().unwrap_err();
        assert!(
            error.to_string().contains("auth.signing_key_file"),
            "{error}"
        );
    }
}

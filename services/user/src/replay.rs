//! Request-id replay (common.proto, IDEMPOTENCY) for the user service.
//!
//! Every RPC the contract calls idempotent with `request_id` runs in ONE
//! transaction whose first write claims (scope, method, request id) in
//! `request_replays` with a fingerprint of the request's content; the
//! state change follows in the same transaction, and its outcome is stored
//! under the claim before the commit (the payment service's pattern). So:
//!
//! - a retry with the same id and content gets the stored answer (trailer
//!   `auction-idempotent-replay: true`) without executing again; in
//!   particular a retried Refresh with the already rotated token is
//!   recognised as a replay and never trips reuse detection;
//! - the same id with other content fails with ALREADY_EXISTS
//!   `IDEMPOTENCY_KEY_REUSED`;
//! - a concurrent copy waits on the claim's row lock (PostgreSQL) or the
//!   write lock (SQLite) and then replays what the first one committed;
//! - deterministic refusals are stored too (with the request's writes
//!   rolled back to a savepoint); refused credentials are not (a retry
//!   checks again, and counts against the throttle again); transient
//!   failures roll back everything, the claim included.
//!
//! Secrets and replay. The answers of Register, Login, VerifySecondFactor,
//! Refresh, ChangePassword, EnrollTotp, ConfirmTotp, CreateApiKey and
//! ExchangeApiKey carry secrets (tokens, TOTP secrets, recovery codes, API
//! keys) that the service otherwise keeps only as hashes. The stored answer
//! has those fields blanked; the secrets are kept beside it SEALED:
//! encrypted with a key derived from the service's replay key and the
//! claim's identity and, where the request carries one, the caller's own
//! secret (the password, the presented refresh token or API key). Only a
//! caller presenting that secret again within the window can have them
//! unsealed, and a copy of the database alone reveals nothing. Rows are
//! deleted once their window has passed.
//!
//! The cipher is ChaCha20-Poly1305 (RFC 8439, the RustCrypto crate) with a
//! random 96-bit nonce stored in front of the ciphertext; the sealing key
//! is derived per claim (it includes the claim time and identity), so a
//! key seals one answer, and the nonce is random besides.
//!
//! The replay key is derived from the access-token signing key (a
//! deterministic Ed25519 signature over a fixed label, hashed), so every
//! instance of the service shares it without new configuration, and it is
//! as secret as the key that already guards every session. Rotating the
//! signing key changes it: answers sealed before cannot be replayed (a
//! retry across the rotation gets INTERNAL) and their fingerprints no
//! longer match (IDEMPOTENCY_KEY_REUSED) until the window passes.

use std::sync::Arc;

use auction_platform::ServiceError;
use auction_platform::auth::{Claims, Keys};
use chacha20poly1305::aead::{Aead as _, KeyInit as _};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::{Digest as _, Sha256};
use tonic::metadata::MetadataValue;
use tonic::{Code, Response, Status};

use crate::error::UserError;
use auction_platform::Database;

use crate::sql::{Arg, Transaction};
use crate::store::StoreError;

/// The trailer on replayed answers (common.proto).
pub const REPLAY_TRAILER: &str = "auction-idempotent-replay";
/// How long the token-issuing RPCs remember a request id.
pub const SHORT_WINDOW_MS: i64 = 5 * 60 * 1_000;
/// How long the other RPCs remember a request id.
pub const LONG_WINDOW_MS: i64 = 24 * 3_600 * 1_000;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in parts {
        // Length-prefixed, so no two different part lists collide.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The service's replay key (see the module comment).
pub struct ReplayKeys {
    key: [u8; 32],
}

impl std::fmt::Debug for ReplayKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ReplayKeys(..)")
    }
}

impl ReplayKeys {
    /// Derives the key from the access-token signing key: Ed25519
    /// signatures are deterministic (RFC 8032), so signing a fixed label
    /// gives every instance with that key the same, unguessable bytes.
    /// The label is never a token anyone is issued (its subject is not a
    /// user id and it expired in 1970).
    pub fn derive(keys: &Keys) -> Result<Self, auction_platform::auth::AuthError> {
        let label = Claims {
            iss: "auction-mesh user service".to_owned(),
            aud: "request replay".to_owned(),
            sub: "request replay key v1".to_owned(),
            sid: None,
            roles: Vec::new(),
            scope: None,
            akid: None,
            amr: Vec::new(),
            svc: None,
            iat: 0,
            exp: 0,
        };
        let token = keys.sign_claims(&label)?;
        let signature = token.rsplit('.').next().unwrap_or_default();
        Ok(Self {
            key: Sha256::new()
                .chain_update(b"auction-mesh user replay key v1")
                .chain_update(signature.as_bytes())
                .finalize()
                .into(),
        })
    }

    /// A random key: for a process that cannot sign tokens (and so issues
    /// nothing worth replaying).
    pub fn random() -> Self {
        use rand::RngCore as _;
        let mut key = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self { key }
    }

    /// The fingerprint of a request's content: a MAC, since the content
    /// may hold a password or a token.
    pub fn fingerprint(&self, method: &str, content: &[u8]) -> String {
        hex(&mac(
            &self.key,
            &[b"fingerprint", method.as_bytes(), content],
        ))
    }

    /// The scope of an unauthenticated RPC's key: its subject (an e-mail,
    /// a challenge, a refresh token, an API key), keyed-hashed so the
    /// table names no subject.
    pub fn subject_scope(&self, kind: &str, subject: &str) -> String {
        format!(
            "{kind}:{}",
            hex(&mac(
                &self.key,
                &[b"scope", kind.as_bytes(), subject.as_bytes()]
            ))
        )
    }

    fn sealing_key(&self, key: &RequestKey, created_at_ms: i64) -> [u8; 32] {
        mac(
            &self.key,
            &[
                b"seal v1",
                key.scope.as_bytes(),
                key.method.as_bytes(),
                key.request_id.as_bytes(),
                &created_at_ms.to_be_bytes(),
                &key.client_secret,
            ],
        )
    }

    /// Encrypts `secrets` for the claim of `key` made at `created_at_ms`:
    /// nonce (12 bytes), then ciphertext with its tag.
    pub fn seal(&self, key: &RequestKey, created_at_ms: i64, secrets: &[String]) -> Vec<u8> {
        let sealing = self.sealing_key(key, created_at_ms);
        let mut plain = Vec::new();
        for secret in secrets {
            plain.extend_from_slice(&(secret.len() as u32).to_be_bytes());
            plain.extend_from_slice(secret.as_bytes());
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&sealing));
        let nonce: [u8; NONCE_BYTES] = rand::random();
        // Encryption fails only past 256 GiB of plaintext.
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Self::seal`] made; `None` if it was not made for
    /// this claim, key and caller secret.
    pub fn unseal(
        &self,
        key: &RequestKey,
        created_at_ms: i64,
        sealed: &[u8],
    ) -> Option<Vec<String>> {
        let sealing = self.sealing_key(key, created_at_ms);
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_BYTES)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&sealing));
        let plain = cipher.decrypt(Nonce::from_slice(nonce), ciphertext).ok()?;
        let mut secrets = Vec::new();
        let mut rest = plain.as_slice();
        while !rest.is_empty() {
            let (length, tail) = rest.split_at_checked(4)?;
            let length = usize::try_from(u32::from_be_bytes(length.try_into().ok()?)).ok()?;
            let (secret, tail) = tail.split_at_checked(length)?;
            secrets.push(String::from_utf8(secret.to_vec()).ok()?);
            rest = tail;
        }
        Some(secrets)
    }
}

/// ChaCha20-Poly1305's nonce length.
const NONCE_BYTES: usize = 12;

/// The idempotency key of one request.
pub struct RequestKey {
    /// The caller's user id, or a subject scope (see
    /// [`ReplayKeys::subject_scope`]).
    pub scope: String,
    /// The RPC.
    pub method: &'static str,
    /// The client's request id.
    pub request_id: String,
    /// See [`ReplayKeys::fingerprint`].
    pub fingerprint: String,
    /// How long the key is remembered.
    pub window_ms: i64,
    /// The caller's own secret in the request (password, refresh token,
    /// API key), mixed into the sealing key; empty when there is none.
    pub client_secret: Vec<u8>,
}

impl std::fmt::Debug for RequestKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client secret.
        formatter
            .debug_struct("RequestKey")
            .field("method", &self.method)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// An answer that may hold secrets: they are stored sealed, apart from
/// the rest of the answer.
pub trait Replayable: Message + Default + Clone {
    /// Moves the secrets out of the answer, in a fixed order.
    fn take_secrets(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Puts back what [`Self::take_secrets`] took; false if they do not fit.
    fn put_secrets(&mut self, secrets: Vec<String>) -> bool {
        secrets.is_empty()
    }
}

/// What a request id already produced. Not `Debug`: it holds secrets.
pub enum Stored {
    /// The encoded answer and its unsealed secrets.
    Answer {
        /// The answer with its secrets blanked.
        response: Vec<u8>,
        /// The secrets, in [`Replayable::take_secrets`] order.
        secrets: Vec<String>,
    },
    /// A deterministic refusal.
    Refusal {
        /// gRPC code.
        code: i32,
        /// Stable reason.
        reason: String,
        /// Message.
        message: String,
    },
}

/// How a claimed request ended when it did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A deterministic refusal: the request's writes are undone and the
    /// refusal is stored for retries.
    Recorded,
    /// A refused credential: its writes (a counted failure, a revoked
    /// session) stay, the claim goes, so a retry checks again.
    KeepWrites,
    /// Transient or a bug: nothing of the request stays.
    Transient,
}

/// A request replayed from its stored outcome.
pub fn replayed<R: Replayable>(stored: Stored) -> Result<Response<R>, Status> {
    match stored {
        Stored::Answer { response, secrets } => {
            let mut message = R::decode(response.as_slice()).map_err(|_| {
                Status::from(UserError::Store(StoreError::Invalid("stored answer")))
            })?;
            if !message.put_secrets(secrets) {
                return Err(UserError::Store(StoreError::Invalid("sealed secrets")).into());
            }
            let mut response = Response::new(message);
            response
                .metadata_mut()
                .insert(REPLAY_TRAILER, MetadataValue::from_static("true"));
            Ok(response)
        }
        Stored::Refusal {
            code,
            reason,
            message,
        } => {
            let mut status = auction_platform::to_status(&StoredRefusal {
                code,
                reason,
                message,
            });
            status
                .metadata_mut()
                .insert(REPLAY_TRAILER, MetadataValue::from_static("true"));
            Err(status)
        }
    }
}

/// A refusal replayed from its stored form.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct StoredRefusal {
    code: i32,
    reason: String,
    message: String,
}

impl ServiceError for StoredRefusal {
    fn code(&self) -> Code {
        Code::from(self.code)
    }
    fn reason(&self) -> &str {
        &self.reason
    }
}

/// What claiming a key found.
pub enum Begun {
    /// A new request: run it in the attempt's transaction.
    Fresh(Attempt),
    /// Seen with the same content within the window: answer this.
    Replay(Stored),
}

/// A claimed request: its transaction holds the claim.
pub struct Attempt {
    transaction: Transaction,
    key: RequestKey,
    created_at_ms: i64,
    keys: Arc<ReplayKeys>,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Attempt")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Begins a request's transaction and claims its key as the first write;
/// replays the stored outcome if the key was already used with the same
/// content within its window (IDEMPOTENCY_KEY_REUSED if with other content).
pub async fn begin(
    database: &Database,
    keys: &Arc<ReplayKeys>,
    key: RequestKey,
    now_ms: i64,
) -> Result<Begun, UserError> {
    let mut transaction = Transaction::begin(database).await?;
    let claimed = transaction
        .execute(
            "INSERT INTO request_replays (scope, method, request_id, fingerprint, outcome, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, 'claimed', $5, $6) \
             ON CONFLICT (scope, method, request_id) DO UPDATE SET fingerprint = excluded.fingerprint, \
             outcome = 'claimed', response = NULL, sealed = NULL, error_code = NULL, \
             error_reason = NULL, error_message = NULL, created_at_ms = excluded.created_at_ms, \
             expires_at_ms = excluded.expires_at_ms \
             WHERE request_replays.expires_at_ms <= $5",
            &[
                Arg::Text(key.scope.clone()),
                Arg::Text(key.method.to_owned()),
                Arg::Text(key.request_id.clone()),
                Arg::Text(key.fingerprint.clone()),
                Arg::Int(now_ms),
                Arg::Int(now_ms.saturating_add(key.window_ms)),
            ],
        )
        .await?;
    // One row: a new key, or one whose window has passed (reused afresh,
    // as common.proto allows).
    if claimed == 1 {
        transaction
            .execute("SAVEPOINT request_operation", &[])
            .await?;
        return Ok(Begun::Fresh(Attempt {
            transaction,
            key,
            created_at_ms: now_ms,
            keys: Arc::clone(keys),
        }));
    }
    let row = transaction
        .fetch_optional(
            "SELECT fingerprint, outcome, response, sealed, error_code, error_reason, error_message, created_at_ms \
             FROM request_replays WHERE scope = $1 AND method = $2 AND request_id = $3",
            &[
                Arg::Text(key.scope.clone()),
                Arg::Text(key.method.to_owned()),
                Arg::Text(key.request_id.clone()),
            ],
        )
        .await?;
    transaction.rollback().await?;
    // The row was there a moment ago; gone now means the purge took it
    // under a concurrent request: a retry starts afresh.
    let row = row.ok_or(UserError::Store(StoreError::Invalid("vanished claim")))?;
    if row.text("fingerprint")? != key.fingerprint {
        return Err(UserError::IdempotencyKeyReused);
    }
    let created_at_ms = row.int("created_at_ms")?;
    match row.text("outcome")?.as_str() {
        "ok" => {
            let secrets = match row.opt_bytes("sealed")? {
                Some(sealed) => keys
                    .unseal(&key, created_at_ms, &sealed)
                    .ok_or(UserError::Store(StoreError::Invalid("sealed secrets")))?,
                None => Vec::new(),
            };
            Ok(Begun::Replay(Stored::Answer {
                response: row.opt_bytes("response")?.unwrap_or_default(),
                secrets,
            }))
        }
        "error" => Ok(Begun::Replay(Stored::Refusal {
            code: i32::try_from(row.opt_int("error_code")?.unwrap_or(2)).unwrap_or(2),
            reason: row.opt_text("error_reason")?.unwrap_or_default(),
            message: row.opt_text("error_message")?.unwrap_or_default(),
        })),
        // A claim commits only with its outcome; seeing one is a bug.
        _ => Err(UserError::Store(StoreError::Invalid("replay outcome"))),
    }
}

/// How often rows past their window are deleted.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Deletes rows past their window every [`PURGE_INTERVAL`] until
/// `shutdown`. Apart from requests, so a request never waits on the purge
/// (and two purges in two requests cannot deadlock on PostgreSQL).
pub async fn purge_expired(database: Database, shutdown: auction_platform::shutdown::Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(PURGE_INTERVAL) => {}
        }
        let purged = crate::sql::execute(
            &database,
            "DELETE FROM request_replays WHERE expires_at_ms <= $1",
            &[Arg::Int(auction_platform::now_ms())],
        )
        .await;
        if let Err(error) = purged {
            tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "request replays not purged");
        }
        // Verification tokens past any use (expired, and outside the rate
        // limit's day) go in the same round.
        let purged =
            crate::store::purge_email_verifications(&database, auction_platform::now_ms()).await;
        if let Err(error) = purged {
            tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "e-mail verifications not purged");
        }
    }
}

impl Attempt {
    /// The request's transaction: every write of the request goes here.
    pub fn tx(&mut self) -> &mut Transaction {
        &mut self.transaction
    }

    /// When the claim was made (the request's "now").
    pub fn now_ms(&self) -> i64 {
        self.created_at_ms
    }

    /// Ends the request: stores its outcome under the claim and commits,
    /// or undoes it (see [`Refused`]).
    pub async fn finish<R: Replayable>(self, result: Result<R, UserError>) -> Result<R, UserError> {
        let Self {
            mut transaction,
            key,
            created_at_ms,
            keys,
        } = self;
        let key_args = [
            Arg::Text(key.scope.clone()),
            Arg::Text(key.method.to_owned()),
            Arg::Text(key.request_id.clone()),
        ];
        match result {
            Ok(response) => {
                let mut stored = response.clone();
                let secrets = stored.take_secrets();
                let sealed =
                    (!secrets.is_empty()).then(|| keys.seal(&key, created_at_ms, &secrets));
                let mut args = vec![
                    Arg::OptBytes(Some(stored.encode_to_vec())),
                    Arg::OptBytes(sealed),
                ];
                args.extend(key_args);
                transaction
                    .execute(
                        "UPDATE request_replays SET outcome = 'ok', response = $1, sealed = $2 \
                         WHERE scope = $3 AND method = $4 AND request_id = $5",
                        &args,
                    )
                    .await?;
                transaction.commit().await?;
                Ok(response)
            }
            Err(error) => {
                let kept = match error.refused() {
                    Refused::Recorded => {
                        let recorded = async {
                            transaction
                                .execute("ROLLBACK TO SAVEPOINT request_operation", &[])
                                .await?;
                            let mut args = vec![
                                Arg::Int(i64::from(i32::from(error.code()))),
                                Arg::Text(error.reason().to_owned()),
                                Arg::Text(error.to_string()),
                            ];
                            args.extend(key_args);
                            transaction
                                .execute(
                                    "UPDATE request_replays SET outcome = 'error', error_code = $1, \
                                     error_reason = $2, error_message = $3 \
                                     WHERE scope = $4 AND method = $5 AND request_id = $6",
                                    &args,
                                )
                                .await?;
                            transaction.commit().await
                        };
                        recorded.await
                    }
                    Refused::KeepWrites => {
                        let kept = async {
                            transaction
                                .execute(
                                    "DELETE FROM request_replays \
                                     WHERE scope = $1 AND method = $2 AND request_id = $3",
                                    &key_args,
                                )
                                .await?;
                            transaction.commit().await
                        };
                        kept.await
                    }
                    Refused::Transient => transaction.rollback().await,
                };
                if let Err(failure) = kept {
                    tracing::warn!(
                        error = %auction_platform::error::DisplayChain(&failure),
                        "the outcome of a refused request was not stored"
                    );
                }
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(secret: &str) -> RequestKey {
        RequestKey {
            scope: "user".to_owned(),
            method: "Refresh",
            request_id: "r1".to_owned(),
            fingerprint: String::new(),
            window_ms: SHORT_WINDOW_MS,
            client_secret: secret.as_bytes().to_vec(),
        }
    }

    // Proves sealed secrets come back only for the same claim, replay key
    // and caller secret, and that the sealed bytes do not hold them.
    #[test]
    fn seal_round_trip() {
        let keys = ReplayKeys::random();
        let secrets = vec![
            "amr_0123456789abcdef0123456789abcdef0123456".to_owned(),
            String::new(),
            "x".repeat(100),
        ];
        let sealed = keys.seal(&key("old token"), 7, &secrets);
        assert_eq!(
            keys.unseal(&key("old token"), 7, &sealed),
            Some(secrets.clone())
        );
        assert_eq!(keys.unseal(&key("other token"), 7, &sealed), None);
        assert_eq!(keys.unseal(&key("old token"), 8, &sealed), None);
        assert_eq!(
            ReplayKeys::random().unseal(&key("old token"), 7, &sealed),
            None
        );
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert_eq!(keys.unseal(&key("old token"), 7, &tampered), None);
        assert!(
            !sealed
                .windows(8)
                .any(|window| window == &secrets[0].as_bytes()[..8])
        );
        assert_eq!(keys.unseal(&key("old token"), 7, &sealed[..10]), None);
    }

    // Proves fingerprints and scopes are keyed: another replay key gives
    // other values, the same key the same.
    #[test]
    fn fingerprints_are_keyed() {
        let keys = ReplayKeys::random();
        assert_eq!(
            keys.fingerprint("Login", b"password"),
            keys.fingerprint("Login", b"password")
        );
        assert_ne!(
            keys.fingerprint("Login", b"password"),
            ReplayKeys::random().fingerprint("Login", b"password")
        );
        assert_ne!(
            keys.fingerprint("Login", b"password"),
            keys.fingerprint("Register", b"password")
        );
        assert!(keys.subject_scope("email", "a@b.c").starts_with("email:"));
    }
}

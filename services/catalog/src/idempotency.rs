//! Idempotency keys of mutating RPCs (see IDEMPOTENCY in common.proto):
//! `(caller, method, request_id)` is claimed inside the transaction of the
//! state change, with a fingerprint of the request's content, and the
//! encoded response is stored in the same transaction. A retry gets the
//! stored response; the same key with other content is refused
//! (`IDEMPOTENCY_KEY_REUSED`). An operation that needs another service
//! (CreateListing) commits its claim with the created resource's id before
//! the call, so a retry resumes it rather than starting over.

use auction_platform::auth::Caller;
use sha2::{Digest as _, Sha256};

use crate::error::CatalogError;
use crate::sql::{Arg, Transaction};

/// The response trailer that marks a replayed answer.
pub const REPLAY_HEADER: &str = "auction-idempotent-replay";

/// One claimed key.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    caller: String,
    method: &'static str,
    request_id: String,
    fingerprint: String,
}

/// What a key held before this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prior {
    /// Nothing: this call claimed it and must do the work.
    Fresh,
    /// The operation completed: its encoded response.
    Replay(Vec<u8>),
    /// The operation started and did not finish; the resource it created.
    InFlight(Option<String>),
}

/// Checks the shape of a request id: 1-64 characters of `[A-Za-z0-9._:-]`.
pub fn check_request_id(request_id: &str) -> Result<(), CatalogError> {
    let valid = (1..=64).contains(&request_id.len())
        && request_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(CatalogError::RequestIdInvalid)
    }
}

/// A stable fingerprint of a request: its encoding with `request_id`
/// cleared, plus the entries of its map fields in key order (protobuf map
/// encoding order is not stable across processes).
pub fn fingerprint(encoded: &[u8], sorted_maps: &[(&str, &str)]) -> String {
    let mut hash = Sha256::new();
    hash.update(encoded);
    for (key, value) in sorted_maps {
        hash.update((key.len() as u64).to_be_bytes());
        hash.update(key.as_bytes());
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value.as_bytes());
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

impl IdempotencyKey {
    /// The key of `caller`'s `method` call with `request_id` (checked).
    pub fn new(
        caller: &Caller,
        method: &'static str,
        request_id: &str,
        fingerprint: String,
    ) -> Result<Self, CatalogError> {
        check_request_id(request_id)?;
        let caller = match &caller.kind {
            auction_platform::auth::CallerKind::Service { name } => format!("service:{name}"),
            auction_platform::auth::CallerKind::User
            | auction_platform::auth::CallerKind::ApiKey { .. } => caller.user_id.to_string(),
        };
        Ok(Self {
            caller,
            method,
            request_id: request_id.to_owned(),
            fingerprint,
        })
    }

    /// Claims the key in `transaction` (the write comes first, so SQLite
    /// takes its write lock at once and PostgreSQL serialises duplicates on
    /// the primary key), or reports what it already holds.
    pub async fn claim(
        &self,
        transaction: &mut Transaction,
        resource_id: Option<&str>,
        now_ms: i64,
    ) -> Result<Prior, CatalogError> {
        let inserted = transaction
            .execute(
                "INSERT INTO idempotency_keys (caller_id, method, request_id, fingerprint, resource_id, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (caller_id, method, request_id) DO NOTHING",
                &[
                    Arg::Text(self.caller.clone()),
                    Arg::Text(self.method.to_owned()),
                    Arg::Text(self.request_id.clone()),
                    Arg::Text(self.fingerprint.clone()),
                    Arg::OptText(resource_id.map(str::to_owned)),
                    Arg::Int(now_ms),
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(Prior::Fresh);
        }
        let row = transaction
            .fetch_optional(
                "SELECT fingerprint, response, resource_id FROM idempotency_keys \
                 WHERE caller_id = $1 AND method = $2 AND request_id = $3",
                &[
                    Arg::Text(self.caller.clone()),
                    Arg::Text(self.method.to_owned()),
                    Arg::Text(self.request_id.clone()),
                ],
            )
            .await?
            .ok_or(crate::store::StoreError::Corrupt("idempotency key"))?;
        if row.text("fingerprint")? != self.fingerprint {
            return Err(CatalogError::IdempotencyKeyReused);
        }
        Ok(match row.opt_bytes("response")? {
            Some(response) => Prior::Replay(response),
            None => Prior::InFlight(row.opt_text("resource_id")?),
        })
    }

    /// Stores the response of the claimed key (same transaction as the
    /// state change).
    pub async fn complete(
        &self,
        transaction: &mut Transaction,
        response: &impl prost::Message,
    ) -> Result<(), CatalogError> {
        transaction
            .execute(
                "UPDATE idempotency_keys SET response = $1 \
                 WHERE caller_id = $2 AND method = $3 AND request_id = $4",
                &[
                    Arg::Bytes(response.encode_to_vec()),
                    Arg::Text(self.caller.clone()),
                    Arg::Text(self.method.to_owned()),
                    Arg::Text(self.request_id.clone()),
                ],
            )
            .await?;
        Ok(())
    }

    /// Releases the key (the operation was refused for good, so a retry
    /// should be judged afresh).
    pub async fn forget(&self, transaction: &mut Transaction) -> Result<(), CatalogError> {
        transaction
            .execute(
                "DELETE FROM idempotency_keys WHERE caller_id = $1 AND method = $2 AND request_id = $3",
                &[
                    Arg::Text(self.caller.clone()),
                    Arg::Text(self.method.to_owned()),
                    Arg::Text(self.request_id.clone()),
                ],
            )
            .await?;
        Ok(())
    }
}

/// `message` as a response marked as a replay.
pub fn replayed<T>(message: T) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    response.metadata_mut().insert(
        REPLAY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    response
}

/// Decodes a stored response.
pub fn decode<T: prost::Message + Default>(bytes: &[u8]) -> Result<T, CatalogError> {
    T::decode(bytes)
        .map_err(|_| CatalogError::Store(crate::store::StoreError::Corrupt("stored response")))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves request ids are checked by the contract's shape.
    #[test]
    fn request_id_shape() {
        assert!(check_request_id("019ab000-0000-7000-8000-00000000a11c").is_ok());
        assert!(check_request_id("a.b_c:d-e").is_ok());
        assert!(check_request_id("").is_err());
        assert!(check_request_id("has space").is_err());
        assert!(check_request_id(&"x".repeat(65)).is_err());
    }

    // Proves the fingerprint depends on map entries but not their order of arrival.
    #[test]
    fn fingerprint_is_order_free_for_maps() {
        let mut entries = [("b", "2"), ("a", "1")];
        entries.sort_unstable();
        let sorted = fingerprint(b"x", &entries);
        assert_eq!(sorted, fingerprint(b"x", &[("a", "1"), ("b", "2")]));
        assert_ne!(sorted, fingerprint(b"x", &[("a", "1"), ("b", "3")]));
    }
}

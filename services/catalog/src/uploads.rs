//! Resumable chunked uploads, the unary alternative to the `UploadMedia`
//! client stream for grpc-web clients: `BeginMediaUpload` opens a session
//! (24 hours), `UploadMediaChunk` stores each chunk at its offset as its own
//! object (a retry of a received chunk with identical bytes is a no-op),
//! `CompleteMediaUpload` streams the chunks in order through the same
//! [`crate::media::Assembler`] as a streamed upload (sniffing, size,
//! checksum, multipart parts) into the media object, records the media and
//! removes the chunks. Memory stays bounded by one chunk plus the parts in
//! flight.

use auction_platform::auth;
use auction_platform::bus::timestamp_from_ms;
use auction_proto::v1::{
    BeginMediaUploadRequest, BeginMediaUploadResponse, CompleteMediaUploadRequest,
    CompleteMediaUploadResponse, MediaUploadMetadata, UploadMediaChunkRequest,
    UploadMediaChunkResponse,
};
use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use prost::Message as _;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Inner;
use crate::error::CatalogError;
use crate::idempotency::{self, IdempotencyKey, Prior};
use crate::items::parse_id;
use crate::media::{self, Assembler, MAX_CHUNK_BYTES};
use crate::sql::{self, Arg, Transaction};
use crate::store::StoreError;

/// How long an upload session may take.
pub const SESSION_TTL_MS: i64 = 24 * 3_600_000;

/// An upload session row.
struct Session {
    caller_id: Uuid,
    metadata: MediaUploadMetadata,
    received_bytes: i64,
    media_id: Option<Uuid>,
    expires_at_ms: i64,
}

fn chunk_key(upload: Uuid, offset: i64) -> String {
    format!("uploads/{upload}/{offset:020}")
}

fn upload_invalid(message: impl Into<String>) -> CatalogError {
    CatalogError::UploadInvalid(message.into())
}

impl Inner {
    async fn load_session(&self, id: Uuid, caller: &auth::Caller) -> Result<Session, CatalogError> {
        let row = sql::fetch_all(
            &self.database,
            "SELECT caller_id, metadata, received_bytes, media_id, expires_at_ms FROM upload_sessions WHERE id = $1",
            &[Arg::Uuid(id)],
        )
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| upload_invalid(format!("no upload session {id} (unknown or expired)")))?;
        let session = Session {
            caller_id: row.uuid("caller_id")?,
            metadata: MediaUploadMetadata::decode(row.bytes("metadata")?.as_slice())
                .map_err(|_| StoreError::Corrupt("upload metadata"))?,
            received_bytes: row.int("received_bytes")?,
            media_id: row.opt_uuid("media_id")?,
            expires_at_ms: row.int("expires_at_ms")?,
        };
        if session.caller_id != caller.user_id || caller.is_service() {
            return Err(CatalogError::NotOwner);
        }
        if session.media_id.is_none() && session.expires_at_ms < auction_platform::now_ms() {
            return Err(upload_invalid(format!("upload session {id} expired")));
        }
        Ok(session)
    }

    /// `BeginMediaUpload`: same checks as `UploadMedia`; a replay answers the
    /// same session with the bytes received so far.
    pub async fn begin_media_upload(
        &self,
        request: Request<BeginMediaUploadRequest>,
    ) -> Result<Response<BeginMediaUploadResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_scope(auth::Scope::Sell)?;
        let request = request.into_inner();
        let metadata = request.metadata.clone().unwrap_or_default();
        let declared = media::check_metadata(&metadata)?;
        let key = IdempotencyKey::new(
            &caller,
            "BeginMediaUpload",
            &request.request_id,
            idempotency::fingerprint(&metadata.encode_to_vec(), &[]),
        )?;
        let upload_id = Uuid::now_v7();
        let now_ms = auction_platform::now_ms();
        let mut transaction = Transaction::begin_write(&self.database).await?;
        match key
            .claim(&mut transaction, Some(&upload_id.to_string()), now_ms)
            .await?
        {
            Prior::Replay(bytes) => {
                drop(transaction);
                let mut response: BeginMediaUploadResponse = idempotency::decode(&bytes)?;
                let id = parse_id("upload_id", &response.upload_id)?;
                if let Ok(session) = self.load_session(id, &caller).await {
                    response.received_bytes = u64::try_from(session.received_bytes).unwrap_or(0);
                }
                return Ok(idempotency::replayed(response));
            }
            Prior::InFlight(_) => {
                return Err(
                    CatalogError::Store(StoreError::Corrupt("in-flight upload session")).into(),
                );
            }
            Prior::Fresh => {}
        }
        self.check_media_slot(&mut transaction, &caller, declared.item_id)
            .await?;
        let expires_at_ms = now_ms + SESSION_TTL_MS;
        transaction
            .execute(
                "INSERT INTO upload_sessions (id, caller_id, item_id, metadata, received_bytes, expires_at_ms, created_at_ms) \
                 VALUES ($1, $2, $3, $4, 0, $5, $6)",
                &[
                    Arg::Uuid(upload_id),
                    Arg::Uuid(caller.user_id),
                    Arg::Uuid(declared.item_id),
                    Arg::Bytes(metadata.encode_to_vec()),
                    Arg::Int(expires_at_ms),
                    Arg::Int(now_ms),
                ],
            )
            .await?;
        let response = BeginMediaUploadResponse {
            upload_id: upload_id.to_string(),
            max_chunk_bytes: u32::try_from(MAX_CHUNK_BYTES).unwrap_or(u32::MAX),
            received_bytes: 0,
            expire_time: Some(timestamp_from_ms(expires_at_ms)),
        };
        key.complete(&mut transaction, &response).await?;
        transaction.commit().await?;
        Ok(Response::new(response))
    }

    /// `UploadMediaChunk`: appends at `offset` = bytes received so far; a
    /// chunk already received is accepted again only with identical bytes.
    pub async fn upload_media_chunk(
        &self,
        request: Request<UploadMediaChunkRequest>,
    ) -> Result<Response<UploadMediaChunkResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        idempotency::check_request_id(&request.request_id)?;
        let id = parse_id("upload_id", &request.upload_id)?;
        let session = self.load_session(id, &caller).await?;
        if session.media_id.is_some() {
            return Err(upload_invalid("the upload is already complete").into());
        }
        if request.data.is_empty() || request.data.len() > MAX_CHUNK_BYTES {
            return Err(CatalogError::MediaSizeInvalid(format!(
                "a chunk must be 1-{MAX_CHUNK_BYTES} bytes"
            ))
            .into());
        }
        let offset =
            i64::try_from(request.offset).map_err(|_| upload_invalid("offset out of range"))?;
        let length = request.data.len() as i64;
        let declared = i64::try_from(session.metadata.size_bytes).unwrap_or(i64::MAX);
        if offset + length > declared {
            return Err(CatalogError::MediaSizeInvalid(format!(
                "bytes beyond the declared size {declared}"
            ))
            .into());
        }
        if offset < session.received_bytes {
            // A retry: the same bytes at the same offset are fine.
            let stored = self
                .media
                .get(&ObjectPath::from(chunk_key(id, offset)))
                .await
                .map_err(|_| upload_invalid(format!("no chunk starts at offset {offset}")))?
                .bytes()
                .await
                .map_err(|error| CatalogError::ObjectStore(error.to_string()))?;
            if stored.as_ref() != request.data.as_slice() {
                return Err(upload_invalid(format!(
                    "different bytes at the received offset {offset}"
                ))
                .into());
            }
            return Ok(Response::new(UploadMediaChunkResponse {
                received_bytes: u64::try_from(session.received_bytes).unwrap_or(0),
            }));
        }
        if offset > session.received_bytes {
            return Err(upload_invalid(format!(
                "offset {offset} leaves a gap: {} bytes received",
                session.received_bytes
            ))
            .into());
        }
        self.media
            .put(
                &ObjectPath::from(chunk_key(id, offset)),
                request.data.into(),
            )
            .await
            .map_err(|error| CatalogError::ObjectStore(error.to_string()))?;
        let advanced = sql::execute(
            &self.database,
            "UPDATE upload_sessions SET received_bytes = $1 WHERE id = $2 AND received_bytes = $3",
            &[Arg::Int(offset + length), Arg::Uuid(id), Arg::Int(offset)],
        )
        .await?;
        if advanced == 0 {
            return Err(CatalogError::UploadInvalid(
                "another chunk at this offset was received at the same time; resume from received_bytes".to_owned(),
            )
            .into());
        }
        Ok(Response::new(UploadMediaChunkResponse {
            received_bytes: u64::try_from(offset + length).unwrap_or(0),
        }))
    }

    /// `CompleteMediaUpload`: assembles the chunks into the media; a second
    /// call answers the same media.
    pub async fn complete_media_upload(
        &self,
        request: Request<CompleteMediaUploadRequest>,
    ) -> Result<Response<CompleteMediaUploadResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        idempotency::check_request_id(&request.request_id)?;
        let id = parse_id("upload_id", &request.upload_id)?;
        let session = self.load_session(id, &caller).await?;
        let declared = media::check_metadata(&session.metadata)?;
        if let Some(media_id) = session.media_id {
            let media = self
                .media_of(&[declared.item_id])
                .await?
                .remove(&declared.item_id)
                .unwrap_or_default()
                .into_iter()
                .find(|media| media.media_id == media_id.to_string())
                .ok_or_else(|| CatalogError::MediaNotFound(media_id.to_string()))?;
            return Ok(idempotency::replayed(CompleteMediaUploadResponse {
                media: Some(media),
            }));
        }
        if u64::try_from(session.received_bytes).unwrap_or(0) != declared.size_bytes {
            return Err(upload_invalid(format!(
                "{} of {} bytes received",
                session.received_bytes, declared.size_bytes
            ))
            .into());
        }
        let prefix = ObjectPath::from(format!("uploads/{id}"));
        let mut chunks: Vec<ObjectPath> = self
            .media
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|error| CatalogError::ObjectStore(error.to_string()))?;
        chunks.sort();
        let media_id = Uuid::now_v7();
        let object_key = format!("items/{}/{media_id}/original", declared.item_id);
        let mut assembler = Assembler::start(&self.media, &declared, &object_key).await?;
        let mut expected_offset: i64 = 0;
        for chunk in &chunks {
            let offset: i64 = chunk
                .filename()
                .and_then(|name| name.parse().ok())
                .ok_or(StoreError::Corrupt("chunk name"))?;
            let bytes = match self.media.get(chunk).await {
                Ok(found) => found.bytes().await,
                Err(error) => Err(error),
            };
            let pushed = match bytes {
                Ok(bytes) if offset == expected_offset => {
                    expected_offset += bytes.len() as i64;
                    assembler.push(bytes.to_vec()).await
                }
                Ok(_) => Err(upload_invalid(format!(
                    "chunks are not contiguous at {offset}"
                ))),
                Err(error) => Err(CatalogError::ObjectStore(error.to_string())),
            };
            if let Err(error) = pushed {
                assembler.abort().await;
                return Err(error.into());
            }
        }
        let sha256 = assembler.finish().await?;
        let media = self
            .record_media(
                &caller,
                &declared,
                media_id,
                &object_key,
                sha256,
                None,
                Some(id),
            )
            .await?;
        for chunk in &chunks {
            if let Err(error) = self.media.delete(chunk).await {
                tracing::warn!(%error, "deleting an upload chunk failed");
            }
        }
        Ok(Response::new(CompleteMediaUploadResponse {
            media: Some(media),
        }))
    }

    /// Removes sessions (and their chunks) that expired unfinished.
    pub async fn expire_upload_sessions(&self) -> Result<usize, CatalogError> {
        let rows = sql::fetch_all(
            &self.database,
            "SELECT id FROM upload_sessions WHERE media_id IS NULL AND expires_at_ms < $1 LIMIT 100",
            &[Arg::Int(auction_platform::now_ms())],
        )
        .await?;
        let mut removed = 0;
        for row in rows {
            let id = row.uuid("id")?;
            let prefix = ObjectPath::from(format!("uploads/{id}"));
            let chunks: Vec<ObjectPath> = self
                .media
                .list(Some(&prefix))
                .map_ok(|meta| meta.location)
                .try_collect()
                .await
                .map_err(|error| CatalogError::ObjectStore(error.to_string()))?;
            for chunk in &chunks {
                self.media
                    .delete(chunk)
                    .await
                    .map_err(|error| CatalogError::ObjectStore(error.to_string()))?;
            }
            sql::execute(
                &self.database,
                "DELETE FROM upload_sessions WHERE id = $1",
                &[Arg::Uuid(id)],
            )
            .await?;
            removed += 1;
        }
        Ok(removed)
    }
}

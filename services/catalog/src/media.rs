//! Media of items: uploads streamed into the object store, content sniffed
//! and checked against an allow-list with a size limit per type, thumbnails
//! made in the background, URLs to fetch them.
//!
//! An upload never holds the file in memory: each chunk (at most 1 MiB) is
//! hashed, sniffed while the first bytes arrive, and handed to a multipart
//! upload that writes 5 MiB parts with at most two in flight, waiting for
//! capacity before it takes the next chunk from the stream (back-pressure
//! to the client through gRPC flow control). So a 200 MiB video costs a few
//! MiB of memory, whatever the store (a local folder in dev, an
//! S3-compatible bucket in production).

use std::collections::HashMap;
use std::sync::Arc;

use auction_platform::Database;
use auction_platform::auth::{self, Caller};
use auction_platform::bus::timestamp_from_ms;
use auction_platform::config::{MediaConfig, MediaStoreKind};
use auction_proto::v1::{
    DeleteMediaRequest, DeleteMediaResponse, Media, MediaKind, MediaStatus, MediaUploadMetadata,
    Thumbnail, UploadMediaRequest, UploadMediaResponse, upload_media_request::Payload,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::Inner;
use crate::error::CatalogError;
use crate::idempotency::{self, IdempotencyKey, Prior};
use crate::items::{self, parse_id};
use crate::sql::{self, Arg, Transaction};
use crate::store::StoreError;

/// Largest chunk of an upload.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest image.
pub const MAX_IMAGE_BYTES: u64 = 20 * 1024 * 1024;
/// Largest video.
pub const MAX_VIDEO_BYTES: u64 = 200 * 1024 * 1024;
/// Most media per item.
pub const MAX_MEDIA_PER_ITEM: i64 = 24;
/// Size of a multipart part (S3 wants at least 5 MiB for all but the last).
pub const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts uploading at once.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Longest edge of each thumbnail.
pub const THUMBNAIL_EDGES: [u32; 3] = [160, 480, 1024];
/// Bytes looked at to recognise the content.
const SNIFF_BYTES: usize = 4_096;
/// Images larger than this many pixels on a side are not decoded.
const MAX_IMAGE_EDGE: u32 = 16_384;

/// The kind and size limit of an allowed content type.
pub fn allowed(content_type: &str) -> Option<(MediaKind, u64)> {
    match content_type {
        "image/jpeg" | "image/png" | "image/webp" | "image/gif" => {
            Some((MediaKind::Image, MAX_IMAGE_BYTES))
        }
        "video/mp4" | "video/webm" => Some((MediaKind::Video, MAX_VIDEO_BYTES)),
        _ => None,
    }
}

/// The content type the bytes really are (by their magic numbers).
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    infer::get(head).map(|kind| kind.mime_type())
}

/// Opens the configured object store.
pub fn open_store(config: &MediaConfig) -> Result<Arc<dyn ObjectStore>, String> {
    match config.store {
        MediaStoreKind::Local => {
            std::fs::create_dir_all(&config.local_dir).map_err(|error| {
                format!("media.local_dir {}: {error}", config.local_dir.display())
            })?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&config.local_dir)
                .map_err(|error| format!("media.local_dir: {error}"))?;
            Ok(Arc::new(store))
        }
        MediaStoreKind::S3 => open_s3(config),
    }
}

#[cfg(feature = "s3")]
fn open_s3(config: &MediaConfig) -> Result<Arc<dyn ObjectStore>, String> {
    let s3 = config
        .s3
        .as_ref()
        .ok_or_else(|| "media.s3 is required".to_owned())?;
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_allow_http(s3.allow_http);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let (Some(key), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
        builder = builder
            .with_access_key_id(key)
            .with_secret_access_key(secret.expose());
    }
    let store = builder
        .build()
        .map_err(|error| format!("media.s3: {error}"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "s3"))]
fn open_s3(_config: &MediaConfig) -> Result<Arc<dyn ObjectStore>, String> {
    Err(
        "media.store = \"s3\" needs a build with the catalog's `s3` feature \
         (cargo build --features auction-catalog/s3)"
            .to_owned(),
    )
}

fn size_invalid(message: impl Into<String>) -> CatalogError {
    CatalogError::MediaSizeInvalid(message.into())
}

/// Checked metadata of an upload.
pub(crate) struct Declared {
    pub(crate) kind: MediaKind,
    pub(crate) content_type: String,
    pub(crate) filename: String,
    pub(crate) size_bytes: u64,
    pub(crate) sha256: Option<String>,
    pub(crate) item_id: Uuid,
}

pub(crate) fn check_metadata(metadata: &MediaUploadMetadata) -> Result<Declared, CatalogError> {
    let item_id = parse_id("metadata.item_id", &metadata.item_id)?;
    // Display only: keep the last path component.
    let filename = metadata
        .filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let length = filename.chars().count();
    if !(1..=255).contains(&length) || filename.chars().any(char::is_control) {
        return Err(CatalogError::Invalid {
            field: "metadata.filename",
            message: "must be 1-255 characters without control characters".to_owned(),
        });
    }
    let (kind, limit) = allowed(&metadata.content_type).ok_or_else(|| {
        CatalogError::MediaTypeUnsupported(format!(
            "`{}` is not accepted; send image/jpeg, image/png, image/webp, image/gif, video/mp4 or video/webm",
            metadata.content_type
        ))
    })?;
    if metadata.size_bytes == 0 || metadata.size_bytes > limit {
        return Err(size_invalid(format!(
            "size_bytes must be 1-{limit} for {}",
            metadata.content_type
        )));
    }
    let sha256 = match metadata.sha256.as_str() {
        "" => None,
        text if text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Some(text.to_owned())
        }
        _ => {
            return Err(CatalogError::Invalid {
                field: "metadata.sha256",
                message: "must be 64 lower-case hex digits".to_owned(),
            });
        }
    };
    Ok(Declared {
        kind,
        content_type: metadata.content_type.clone(),
        filename,
        size_bytes: metadata.size_bytes,
        sha256,
        item_id,
    })
}

/// Writes an upload's chunks, in order, into one object: counts, hashes
/// and sniffs them, and hands them to a multipart upload with bounded
/// parts in flight (so memory does not grow with the file).
pub(crate) struct Assembler<'a> {
    declared: &'a Declared,
    object_key: String,
    writer: WriteMultipart,
    hasher: Sha256,
    received: u64,
    head: Vec<u8>,
    sniffed: bool,
}

impl<'a> Assembler<'a> {
    /// Starts the multipart upload of `object_key`.
    pub(crate) async fn start(
        store: &Arc<dyn ObjectStore>,
        declared: &'a Declared,
        object_key: &str,
    ) -> Result<Self, CatalogError> {
        let upload = store
            .put_multipart(&ObjectPath::from(object_key))
            .await
            .map_err(|error| CatalogError::ObjectStore(error.to_string()))?;
        Ok(Self {
            declared,
            object_key: object_key.to_owned(),
            writer: WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
            hasher: Sha256::new(),
            received: 0,
            head: Vec::with_capacity(SNIFF_BYTES),
            sniffed: false,
        })
    }

    /// Adds the next chunk.
    pub(crate) async fn push(&mut self, chunk: Vec<u8>) -> Result<(), CatalogError> {
        if chunk.is_empty() || chunk.len() > MAX_CHUNK_BYTES {
            return Err(size_invalid(format!(
                "a chunk must be 1-{MAX_CHUNK_BYTES} bytes"
            )));
        }
        self.received += chunk.len() as u64;
        if self.received > self.declared.size_bytes {
            return Err(size_invalid(format!(
                "more bytes than the declared {}",
                self.declared.size_bytes
            )));
        }
        self.hasher.update(&chunk);
        if !self.sniffed {
            let take = (SNIFF_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            if self.head.len() >= SNIFF_BYTES || self.received == self.declared.size_bytes {
                check_sniffed(&self.head, &self.declared.content_type)?;
                self.sniffed = true;
            }
        }
        self.writer
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|error| CatalogError::ObjectStore(error.to_string()))?;
        self.writer.put(bytes::Bytes::from(chunk));
        Ok(())
    }

    /// Checks size, type and checksum, then completes the object; returns
    /// the SHA-256. On a refusal the upload is aborted.
    pub(crate) async fn finish(self) -> Result<String, Status> {
        let checked = (|| {
            if self.received != self.declared.size_bytes {
                return Err(size_invalid(format!(
                    "received {} bytes, declared {}",
                    self.received, self.declared.size_bytes
                )));
            }
            if !self.sniffed {
                check_sniffed(&self.head, &self.declared.content_type)?;
            }
            let sha256: String = self
                .hasher
                .clone()
                .finalize()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            if let Some(expected) = &self.declared.sha256
                && *expected != sha256
            {
                return Err(CatalogError::UploadInvalid(format!(
                    "the bytes hash to {sha256}, not the declared {expected}"
                )));
            }
            Ok(sha256)
        })();
        match checked {
            Ok(sha256) => {
                self.writer
                    .finish()
                    .await
                    .map_err(|error| CatalogError::ObjectStore(error.to_string()))?;
                Ok(sha256)
            }
            Err(error) => {
                self.abort().await;
                Err(error.into())
            }
        }
    }

    /// Abandons the upload (nothing becomes visible).
    pub(crate) async fn abort(self) {
        if let Err(error) = self.writer.abort().await {
            tracing::warn!(%error, object_key = %self.object_key, "aborting a refused upload failed");
        }
    }
}

/// A thumbnail as stored (JSON in the media row).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StoredThumbnail {
    width: u32,
    height: u32,
    key: String,
}

/// A media row.
#[derive(Debug, Clone)]
pub struct MediaRecord {
    id: Uuid,
    item_id: Uuid,
    kind: String,
    content_type: String,
    filename: String,
    size_bytes: i64,
    sha256: String,
    object_key: String,
    status: String,
    position: i64,
    width: i64,
    height: i64,
    thumbnails: Vec<StoredThumbnail>,
    created_at_ms: i64,
}

const MEDIA_COLUMNS: &str = "id, item_id, kind, content_type, filename, size_bytes, sha256, object_key, status, position, width, height, thumbnails, created_at_ms";

impl MediaRecord {
    fn from_row(row: &sql::Row) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.uuid("id")?,
            item_id: row.uuid("item_id")?,
            kind: row.text("kind")?,
            content_type: row.text("content_type")?,
            filename: row.text("filename")?,
            size_bytes: row.int("size_bytes")?,
            sha256: row.text("sha256")?,
            object_key: row.text("object_key")?,
            status: row.text("status")?,
            position: row.int("position")?,
            width: row.int("width")?,
            height: row.int("height")?,
            thumbnails: serde_json::from_str(&row.text("thumbnails")?)
                .map_err(|_| StoreError::Corrupt("media thumbnails"))?,
            created_at_ms: row.int("created_at_ms")?,
        })
    }

    fn to_proto(&self, base_url: &str) -> Media {
        Media {
            media_id: self.id.to_string(),
            item_id: self.item_id.to_string(),
            kind: if self.kind == "video" {
                MediaKind::Video
            } else {
                MediaKind::Image
            } as i32,
            content_type: self.content_type.clone(),
            filename: self.filename.clone(),
            size_bytes: u64::try_from(self.size_bytes).unwrap_or(0),
            sha256: self.sha256.clone(),
            url: format!("{base_url}/{}", self.object_key),
            thumbnails: self
                .thumbnails
                .iter()
                .map(|thumbnail| Thumbnail {
                    width: thumbnail.width,
                    height: thumbnail.height,
                    url: format!("{base_url}/{}", thumbnail.key),
                    content_type: "image/webp".to_owned(),
                })
                .collect(),
            status: match self.status.as_str() {
                "ready" => MediaStatus::Ready,
                "failed" => MediaStatus::Failed,
                _ => MediaStatus::Processing,
            } as i32,
            position: u32::try_from(self.position).unwrap_or(0),
            width: u32::try_from(self.width).unwrap_or(0),
            height: u32::try_from(self.height).unwrap_or(0),
            video_length: None,
            create_time: Some(timestamp_from_ms(self.created_at_ms)),
        }
    }
}

/// Drains what is left of a stream (a replayed upload's bytes are discarded).
async fn drain(stream: &mut Streaming<UploadMediaRequest>) -> Result<(), Status> {
    while stream.message().await?.is_some() {}
    Ok(())
}

impl Inner {
    /// Where media URLs point: the configured public base, or this
    /// process's own listener under `/media`.
    pub fn media_base_url(&self) -> String {
        if !self.config.media.public_base_url.is_empty() {
            return self
                .config
                .media
                .public_base_url
                .trim_end_matches('/')
                .to_owned();
        }
        match self.peers.url(auction_platform::peers::Peer::Catalog) {
            Ok(url) => format!("{url}/media"),
            Err(_) => "/media".to_owned(),
        }
    }

    /// The media of items, by item, in display order.
    pub async fn media_of(
        &self,
        item_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<Media>>, CatalogError> {
        let mut by_item: HashMap<Uuid, Vec<Media>> = HashMap::new();
        if item_ids.is_empty() {
            return Ok(by_item);
        }
        let placeholders: Vec<String> = (1..=item_ids.len()).map(|n| format!("${n}")).collect();
        let rows = sql::fetch_all(
            &self.database,
            &format!(
                "SELECT {MEDIA_COLUMNS} FROM media WHERE item_id IN ({}) ORDER BY position",
                placeholders.join(", ")
            ),
            &item_ids.iter().map(|id| Arg::Uuid(*id)).collect::<Vec<_>>(),
        )
        .await?;
        let base = self.media_base_url();
        for row in &rows {
            let media = MediaRecord::from_row(row)?;
            by_item
                .entry(media.item_id)
                .or_default()
                .push(media.to_proto(&base));
        }
        Ok(by_item)
    }

    /// The media of one item as `transaction` sees them, in display order.
    pub async fn media_in(
        &self,
        transaction: &mut Transaction,
        item_id: Uuid,
    ) -> Result<Vec<Media>, CatalogError> {
        let rows = transaction
            .fetch_all(
                &format!("SELECT {MEDIA_COLUMNS} FROM media WHERE item_id = $1 ORDER BY position"),
                &[Arg::Uuid(item_id)],
            )
            .await?;
        let base = self.media_base_url();
        rows.iter()
            .map(|row| Ok(MediaRecord::from_row(row)?.to_proto(&base)))
            .collect()
    }

    /// `UploadMedia`: the client stream, start then chunks.
    pub async fn upload_media(
        &self,
        request: Request<Streaming<UploadMediaRequest>>,
    ) -> Result<Response<UploadMediaResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_scope(auth::Scope::Sell)?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| CatalogError::Invalid {
                field: "payload",
                message: "the stream is empty; send `start` first".to_owned(),
            })?;
        let Some(Payload::Start(start)) = first.payload else {
            return Err(CatalogError::Invalid {
                field: "payload",
                message: "the first message must be `start`".to_owned(),
            }
            .into());
        };
        let metadata = start.metadata.clone().unwrap_or_default();
        let declared = check_metadata(&metadata)?;
        let key = IdempotencyKey::new(
            &caller,
            "UploadMedia",
            &start.request_id,
            idempotency::fingerprint(&metadata.encode_to_vec(), &[]),
        )?;
        let media_id = Uuid::now_v7();
        let now_ms = auction_platform::now_ms();
        let mut transaction = Transaction::begin_write(&self.database).await?;
        let media_id = match key
            .claim(&mut transaction, Some(&media_id.to_string()), now_ms)
            .await?
        {
            Prior::Replay(bytes) => {
                drop(transaction);
                drain(&mut stream).await?;
                return Ok(idempotency::replayed(idempotency::decode(&bytes)?));
            }
            // An upload cut short before: do it again under the same id.
            Prior::InFlight(resource) => resource
                .as_deref()
                .and_then(|text| Uuid::parse_str(text).ok())
                .unwrap_or(media_id),
            Prior::Fresh => media_id,
        };
        self.check_media_slot(&mut transaction, &caller, declared.item_id)
            .await?;
        transaction.commit().await?;

        let object_key = format!("items/{}/{media_id}/original", declared.item_id);
        let stored = self.receive(&mut stream, &declared, &object_key).await;
        if let Err(error) = stored {
            let mut transaction = Transaction::begin_write(&self.database).await?;
            key.forget(&mut transaction).await?;
            transaction.commit().await?;
            return Err(error);
        }
        let sha256 = stored?;

        let media = self
            .record_media(
                &caller,
                &declared,
                media_id,
                &object_key,
                sha256,
                Some(&key),
                None,
            )
            .await?;
        Ok(Response::new(UploadMediaResponse { media: Some(media) }))
    }

    /// Records a stored upload as a media of its item (slot checked again,
    /// positions appended), completes `key` or marks `session` done in the
    /// same transaction, and starts thumbnails for images.
    #[allow(clippy::too_many_arguments, reason = "one call site per upload path")]
    pub(crate) async fn record_media(
        &self,
        caller: &Caller,
        declared: &Declared,
        media_id: Uuid,
        object_key: &str,
        sha256: String,
        key: Option<&IdempotencyKey>,
        session: Option<Uuid>,
    ) -> Result<Media, Status> {
        let mut transaction = Transaction::begin_write(&self.database).await?;
        // Checked again: another upload may have taken the last slot.
        self.check_media_slot(&mut transaction, caller, declared.item_id)
            .await?;
        let position = transaction
            .fetch_optional(
                "SELECT COUNT(*) AS n FROM media WHERE item_id = $1",
                &[Arg::Uuid(declared.item_id)],
            )
            .await?
            .map(|row| row.int("n"))
            .transpose()?
            .unwrap_or(0);
        let record = MediaRecord {
            id: media_id,
            item_id: declared.item_id,
            kind: if declared.kind == MediaKind::Video {
                "video"
            } else {
                "image"
            }
            .to_owned(),
            content_type: declared.content_type.clone(),
            filename: declared.filename.clone(),
            size_bytes: i64::try_from(declared.size_bytes).unwrap_or(i64::MAX),
            sha256,
            object_key: object_key.to_owned(),
            // Videos get no poster frames (no video decoder in the build):
            // they are ready as stored.
            status: if declared.kind == MediaKind::Video {
                "ready"
            } else {
                "processing"
            }
            .to_owned(),
            position,
            width: 0,
            height: 0,
            thumbnails: Vec::new(),
            created_at_ms: auction_platform::now_ms(),
        };
        transaction
            .execute(
                &format!(
                    "INSERT INTO media ({MEDIA_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    Arg::Uuid(record.id),
                    Arg::Uuid(record.item_id),
                    Arg::Text(record.kind.clone()),
                    Arg::Text(record.content_type.clone()),
                    Arg::Text(record.filename.clone()),
                    Arg::Int(record.size_bytes),
                    Arg::Text(record.sha256.clone()),
                    Arg::Text(record.object_key.clone()),
                    Arg::Text(record.status.clone()),
                    Arg::Int(record.position),
                    Arg::Int(0),
                    Arg::Int(0),
                    Arg::Text("[]".to_owned()),
                    Arg::Int(record.created_at_ms),
                ],
            )
            .await?;
        transaction
            .execute(
                "UPDATE items SET version = version + 1, updated_at_ms = $1 WHERE id = $2",
                &[Arg::Int(record.created_at_ms), Arg::Uuid(record.item_id)],
            )
            .await?;
        let media = record.to_proto(&self.media_base_url());
        if let Some(key) = key {
            key.complete(
                &mut transaction,
                &UploadMediaResponse {
                    media: Some(media.clone()),
                },
            )
            .await?;
        }
        if let Some(session) = session {
            transaction
                .execute(
                    "UPDATE upload_sessions SET media_id = $1 WHERE id = $2",
                    &[Arg::Uuid(media_id), Arg::Uuid(session)],
                )
                .await?;
        }
        transaction.commit().await?;
        tracing::info!(item_id = %record.item_id, media_id = %media_id, size_bytes = declared.size_bytes, "media stored");
        if declared.kind == MediaKind::Image {
            tokio::spawn(make_thumbnails(
                Arc::clone(&self.media),
                self.database.clone(),
                record,
            ));
        }
        Ok(media)
    }

    /// The item exists, the caller owns it, it has room for one more media.
    pub(crate) async fn check_media_slot(
        &self,
        transaction: &mut Transaction,
        caller: &Caller,
        item_id: Uuid,
    ) -> Result<(), CatalogError> {
        let item = items::load(transaction, item_id)
            .await?
            .ok_or_else(|| CatalogError::ItemNotFound(item_id.to_string()))?;
        if !caller.is_user(item.seller_id) {
            return Err(CatalogError::NotOwner);
        }
        let count = transaction
            .fetch_optional(
                "SELECT COUNT(*) AS n FROM media WHERE item_id = $1",
                &[Arg::Uuid(item_id)],
            )
            .await?
            .map(|row| row.int("n"))
            .transpose()?
            .unwrap_or(0);
        if count >= MAX_MEDIA_PER_ITEM {
            return Err(CatalogError::MediaLimitReached(MAX_MEDIA_PER_ITEM));
        }
        Ok(())
    }

    /// Streams the chunks into the object store; returns the SHA-256.
    async fn receive(
        &self,
        stream: &mut Streaming<UploadMediaRequest>,
        declared: &Declared,
        object_key: &str,
    ) -> Result<String, Status> {
        let mut assembler = Assembler::start(&self.media, declared, object_key).await?;
        let outcome = async {
            while let Some(message) = stream.message().await? {
                match message.payload {
                    Some(Payload::Chunk(chunk)) => assembler.push(chunk).await?,
                    Some(Payload::Start(_)) | None => {
                        return Err(Status::from(CatalogError::Invalid {
                            field: "payload",
                            message: "only the first message may be `start`; then `chunk` messages"
                                .to_owned(),
                        }));
                    }
                }
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => assembler.finish().await,
            Err(status) => {
                assembler.abort().await;
                Err(status)
            }
        }
    }

    /// `DeleteMedia`: owner or admin, while no listing of the item runs.
    pub async fn delete_media(
        &self,
        request: Request<DeleteMediaRequest>,
    ) -> Result<Response<DeleteMediaResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_scope(auth::Scope::Sell)?;
        let request = request.into_inner();
        idempotency::check_request_id(&request.request_id)?;
        let media_id = parse_id("media_id", &request.media_id)?;
        let now_ms = auction_platform::now_ms();
        let mut transaction = Transaction::begin_write(&self.database).await?;
        let media = transaction
            .fetch_optional(
                &format!("SELECT {MEDIA_COLUMNS} FROM media WHERE id = $1"),
                &[Arg::Uuid(media_id)],
            )
            .await?
            .map(|row| MediaRecord::from_row(&row))
            .transpose()?
            .ok_or_else(|| CatalogError::MediaNotFound(media_id.to_string()))?;
        let item = items::load(&mut transaction, media.item_id)
            .await?
            .ok_or_else(|| CatalogError::MediaNotFound(media_id.to_string()))?;
        if !(caller.is_user(item.seller_id) || caller.is_admin()) {
            return Err(CatalogError::NotOwner.into());
        }
        if let Some((listing_id, status)) = items::active_listing(&mut transaction, item.id).await?
            && (status == "open" || status == "extended")
        {
            return Err(CatalogError::NotEditable(format!(
                "listing {listing_id} of this item is running"
            ))
            .into());
        }
        transaction
            .execute("DELETE FROM media WHERE id = $1", &[Arg::Uuid(media_id)])
            .await?;
        transaction
            .execute(
                "UPDATE media SET position = position - 1 WHERE item_id = $1 AND position > $2",
                &[Arg::Uuid(item.id), Arg::Int(media.position)],
            )
            .await?;
        transaction
            .execute(
                "UPDATE items SET version = version + 1, updated_at_ms = $1 WHERE id = $2",
                &[Arg::Int(now_ms), Arg::Uuid(item.id)],
            )
            .await?;
        let active = items::active_listing(&mut transaction, item.id).await?;
        let mut item_proto = item.to_proto(active.map(|(id, _)| id));
        item_proto.version += 1;
        transaction.commit().await?;
        // The rows are gone; the objects follow (a leftover object is only
        // storage, never shown).
        for key in std::iter::once(media.object_key.clone()).chain(
            media
                .thumbnails
                .iter()
                .map(|thumbnail| thumbnail.key.clone()),
        ) {
            if let Err(error) = self.media.delete(&ObjectPath::from(key.as_str())).await {
                tracing::warn!(%error, key, "deleting a media object failed");
            }
        }
        item_proto.media = self
            .media_of(&[item.id])
            .await?
            .remove(&item.id)
            .unwrap_or_default();
        Ok(Response::new(DeleteMediaResponse {
            item: Some(item_proto),
        }))
    }
}

/// Serves stored media over plain HTTP GET at `/media/<object key>` on the
/// process's own listener (the URL of `Media` when `media.public_base_url`
/// is empty): originals with their verified content type, thumbnails as
/// WebP, streamed from the object store, cacheable for a year (keys never
/// change content).
#[derive(Clone)]
pub struct MediaFiles {
    store: Arc<dyn ObjectStore>,
    database: Database,
}

impl std::fmt::Debug for MediaFiles {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("MediaFiles").finish_non_exhaustive()
    }
}

impl MediaFiles {
    /// Files of `store`, content types from `database`.
    pub fn new(store: Arc<dyn ObjectStore>, database: Database) -> Self {
        Self { store, database }
    }

    async fn respond(
        self,
        method: tonic::codegen::http::Method,
        path: String,
    ) -> tonic::codegen::http::Response<tonic::body::Body> {
        use tonic::codegen::http::{Method, Response as HttpResponse, StatusCode, header};
        let plain = |status: StatusCode| {
            let mut response = HttpResponse::new(tonic::body::Body::empty());
            *response.status_mut() = status;
            response
        };
        if method != Method::GET && method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(key) = path.strip_prefix("/media/") else {
            return plain(StatusCode::NOT_FOUND);
        };
        // Only keys we write: items/<uuid>/<uuid>/<name>.
        let parts: Vec<&str> = key.split('/').collect();
        let well_formed = matches!(parts.as_slice(), ["items", item, media, name]
            if Uuid::parse_str(item).is_ok() && Uuid::parse_str(media).is_ok()
                && (*name == "original" || (name.starts_with("thumb-") && name.ends_with(".webp"))));
        if !well_formed {
            return plain(StatusCode::NOT_FOUND);
        }
        let content_type = if key.ends_with(".webp") {
            "image/webp".to_owned()
        } else {
            let row = sql::fetch_all(
                &self.database,
                "SELECT content_type FROM media WHERE object_key = $1",
                &[Arg::Text(key.to_owned())],
            )
            .await;
            match row
                .ok()
                .and_then(|rows| rows.into_iter().next())
                .map(|row| row.text("content_type"))
            {
                Some(Ok(content_type)) => content_type,
                Some(Err(_)) | None => return plain(StatusCode::NOT_FOUND),
            }
        };
        let found = match self.store.get(&ObjectPath::from(key)).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return plain(StatusCode::NOT_FOUND),
            Err(error) => {
                tracing::warn!(%error, key, "reading a media object failed");
                return plain(StatusCode::SERVICE_UNAVAILABLE);
            }
        };
        let length = found.meta.size;
        let body = if method == Method::HEAD {
            tonic::body::Body::empty()
        } else {
            use futures::StreamExt as _;
            let frames = found
                .into_stream()
                .map(|chunk| chunk.map(http_body::Frame::data));
            tonic::body::Body::new(http_body_util::StreamBody::new(frames))
        };
        let mut response = HttpResponse::new(body);
        let headers = response.headers_mut();
        if let Ok(value) = content_type.parse() {
            headers.insert(header::CONTENT_TYPE, value);
        }
        if let Ok(value) = length.to_string().parse() {
            headers.insert(header::CONTENT_LENGTH, value);
        }
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            header::HeaderValue::from_static("nosniff"),
        );
        response
    }
}

impl tonic::server::NamedService for MediaFiles {
    // Routed as `/media/*`.
    const NAME: &'static str = "media";
}

impl<B: Send + 'static> tonic::codegen::Service<tonic::codegen::http::Request<B>> for MediaFiles {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        let files = self.clone();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        Box::pin(async move { Ok(files.respond(method, path).await) })
    }
}

fn check_sniffed(head: &[u8], declared: &str) -> Result<(), CatalogError> {
    match sniff(head) {
        Some(actual) if actual == declared => Ok(()),
        Some(actual) => Err(CatalogError::MediaTypeUnsupported(format!(
            "declared {declared} but the content is {actual}"
        ))),
        None => Err(CatalogError::MediaTypeUnsupported(format!(
            "declared {declared} but the content is not a recognised image or video"
        ))),
    }
}

/// An image's size and its thumbnails (width, height, WebP bytes).
type Rendered = (u32, u32, Vec<(u32, u32, Vec<u8>)>);

/// Decodes an image and renders its thumbnails (CPU work, off the runtime).
#[allow(
    clippy::float_arithmetic,
    reason = "pixel scaling, not money: the workspace lint guards amounts"
)]
fn render_thumbnails(bytes: &[u8]) -> Result<Rendered, String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|error| error.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_EDGE);
    limits.max_image_height = Some(MAX_IMAGE_EDGE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|error| error.to_string())?;
    let (width, height) = (decoded.width(), decoded.height());
    let mut rendered = Vec::new();
    for edge in THUMBNAIL_EDGES {
        let longest = width.max(height).max(1);
        let scale = f64::from(edge.min(longest)) / f64::from(longest);
        let target_width = ((f64::from(width) * scale).round() as u32).max(1);
        let target_height = ((f64::from(height) * scale).round() as u32).max(1);
        let thumbnail = decoded.thumbnail(target_width, target_height).to_rgba8();
        let mut encoded = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut encoded)
            .encode(
                thumbnail.as_raw(),
                thumbnail.width(),
                thumbnail.height(),
                image::ExtendedColorType::Rgba8,
            )
            .map_err(|error| error.to_string())?;
        rendered.push((thumbnail.width(), thumbnail.height(), encoded));
    }
    Ok((width, height, rendered))
}

/// Makes an image's thumbnails and marks it READY (or FAILED when it does
/// not decode).
async fn make_thumbnails(store: Arc<dyn ObjectStore>, database: Database, record: MediaRecord) {
    let outcome: Result<(u32, u32, Vec<StoredThumbnail>), String> = async {
        let bytes = store
            .get(&ObjectPath::from(record.object_key.as_str()))
            .await
            .map_err(|error| error.to_string())?
            .bytes()
            .await
            .map_err(|error| error.to_string())?;
        let (width, height, rendered) =
            tokio::task::spawn_blocking(move || render_thumbnails(&bytes))
                .await
                .map_err(|error| error.to_string())??;
        let prefix = record.object_key.trim_end_matches("original");
        let mut thumbnails = Vec::new();
        for (edge, (thumb_width, thumb_height, encoded)) in THUMBNAIL_EDGES.iter().zip(rendered) {
            let key = format!("{prefix}thumb-{edge}.webp");
            store
                .put(&ObjectPath::from(key.as_str()), encoded.into())
                .await
                .map_err(|error| error.to_string())?;
            thumbnails.push(StoredThumbnail {
                width: thumb_width,
                height: thumb_height,
                key,
            });
        }
        Ok((width, height, thumbnails))
    }
    .await;
    let update = match outcome {
        Ok((width, height, thumbnails)) => sql::execute(
            &database,
            "UPDATE media SET status = 'ready', width = $1, height = $2, thumbnails = $3 WHERE id = $4",
            &[
                Arg::Int(i64::from(width)),
                Arg::Int(i64::from(height)),
                Arg::Text(serde_json::to_string(&thumbnails).unwrap_or_else(|_| "[]".to_owned())),
                Arg::Uuid(record.id),
            ],
        )
        .await,
        Err(error) => {
            tracing::warn!(media_id = %record.id, %error, "media did not decode; marked FAILED");
            sql::execute(
                &database,
                "UPDATE media SET status = 'failed' WHERE id = $1",
                &[Arg::Uuid(record.id)],
            )
            .await
        }
    };
    if let Err(error) = update {
        tracing::warn!(media_id = %record.id, error = %auction_platform::error::DisplayChain(&error), "recording thumbnails failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the allow-list, its limits and sniffing by magic numbers.
    #[test]
    fn allow_list_and_sniffing() {
        assert_eq!(
            allowed("image/png"),
            Some((MediaKind::Image, MAX_IMAGE_BYTES))
        );
        assert_eq!(
            allowed("video/mp4"),
            Some((MediaKind::Video, MAX_VIDEO_BYTES))
        );
        assert_eq!(allowed("application/pdf"), None);
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), Some("image/jpeg"));
        assert_eq!(sniff(b"%PDF-1.7 rest"), Some("application/pdf"));
        assert!(check_sniffed(b"%PDF-1.7 rest", "image/png").is_err());
    }

    // Proves thumbnails keep the aspect ratio and never upscale.
    #[test]
    fn thumbnails_are_scaled_down_webp() {
        let image = image::RgbImage::from_pixel(200, 100, image::Rgb([200, 10, 10]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(image)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let (width, height, rendered) = render_thumbnails(&png).unwrap();
        assert_eq!((width, height), (200, 100));
        let sizes: Vec<(u32, u32)> = rendered.iter().map(|(w, h, _)| (*w, *h)).collect();
        assert_eq!(sizes, [(160, 80), (200, 100), (200, 100)]);
        assert_eq!(sniff(&rendered[0].2), Some("image/webp"));
    }
}

-- Resumable chunked uploads (BeginMediaUpload / UploadMediaChunk /
-- CompleteMediaUpload, for grpc-web clients that cannot client-stream).
-- Chunks are staged as objects `uploads/<id>/<offset, 20 digits>` and
-- assembled into the media object on completion.
CREATE TABLE upload_sessions (
    id             TEXT PRIMARY KEY,
    caller_id      TEXT NOT NULL,
    item_id        TEXT NOT NULL,
    -- auction.v1.MediaUploadMetadata, protobuf-encoded.
    metadata       BLOB NOT NULL,
    received_bytes INTEGER NOT NULL DEFAULT 0,
    -- Set once completed: a later Complete answers this media.
    media_id       TEXT,
    expires_at_ms  INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL
);
CREATE INDEX upload_sessions_expiry ON upload_sessions (expires_at_ms);

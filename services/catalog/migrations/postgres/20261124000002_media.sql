-- Images and videos of items. The bytes live in the object store under
-- `object_key`; thumbnails under `<object_key minus "original">thumb-<edge>.webp`.
CREATE TABLE media (
    id            UUID PRIMARY KEY,
    item_id       UUID NOT NULL REFERENCES items (id),
    kind          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    filename      TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    -- processing, ready, failed
    status        TEXT NOT NULL,
    position      BIGINT NOT NULL,
    width         BIGINT NOT NULL DEFAULT 0,
    height        BIGINT NOT NULL DEFAULT 0,
    -- JSON array of {edge, width, height, key}.
    thumbnails    TEXT NOT NULL DEFAULT '[]',
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX media_item ON media (item_id, position);

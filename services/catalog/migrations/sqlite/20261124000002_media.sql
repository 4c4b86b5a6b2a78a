-- Images and videos of items. The bytes live in the object store under
-- `object_key`; thumbnails under `<object_key minus "original">thumb-<edge>.webp`.
CREATE TABLE media (
    id            TEXT PRIMARY KEY,
    item_id       TEXT NOT NULL REFERENCES items (id),
    kind          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    filename      TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    -- processing, ready, failed
    status        TEXT NOT NULL,
    position      INTEGER NOT NULL,
    width         INTEGER NOT NULL DEFAULT 0,
    height        INTEGER NOT NULL DEFAULT 0,
    -- JSON array of {edge, width, height, key}.
    thumbnails    TEXT NOT NULL DEFAULT '[]',
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX media_item ON media (item_id, position);

-- Items gain what the contract shows (shipping country, version) and a
-- soft delete: an item with past listings stays for order history.
ALTER TABLE items ADD COLUMN ship_from_country TEXT NOT NULL DEFAULT '';
ALTER TABLE items ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE items ADD COLUMN deleted_at_ms INTEGER;
CREATE INDEX items_seller_newest ON items (seller_id, created_at_ms DESC, id DESC);

-- Outcomes of mutating RPCs by (caller, method, request_id).
CREATE TABLE idempotency_keys (
    caller_id     TEXT NOT NULL,
    method        TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    response      BLOB,
    resource_id   TEXT,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (caller_id, method, request_id)
);

-- See the PostgreSQL migration for the meaning of each column. `row_key`
-- is a stable integer key for the FTS5 index (an implicit rowid may change
-- on VACUUM).
CREATE TABLE listings (
    row_key            INTEGER PRIMARY KEY,
    id                 TEXT NOT NULL UNIQUE,
    item_id            TEXT NOT NULL REFERENCES items (id),
    seller_id          TEXT NOT NULL,
    seller_handle      TEXT NOT NULL DEFAULT '',
    title              TEXT NOT NULL,
    description        TEXT NOT NULL,
    attributes_text    TEXT NOT NULL,
    category_id        TEXT NOT NULL,
    category_path      TEXT NOT NULL,
    condition          TEXT NOT NULL,
    format             TEXT NOT NULL,
    parameters         BLOB NOT NULL,
    currency           TEXT NOT NULL,
    current_price      TEXT NOT NULL,
    current_price_e4   INTEGER NOT NULL,
    buy_it_now_price   TEXT,
    bid_count          INTEGER NOT NULL DEFAULT 0,
    watcher_count      INTEGER NOT NULL DEFAULT 0,
    reserve_state      TEXT NOT NULL,
    status             TEXT NOT NULL,
    start_at_ms        INTEGER NOT NULL,
    end_at_ms          INTEGER,
    current_end_at_ms  INTEGER NOT NULL,
    live_session_id    TEXT,
    lot_number         INTEGER NOT NULL DEFAULT 0,
    units_remaining    INTEGER NOT NULL DEFAULT 0,
    last_sequence      INTEGER NOT NULL DEFAULT 0,
    cancel_reason      TEXT NOT NULL DEFAULT '',
    version            INTEGER NOT NULL DEFAULT 1,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL
);
CREATE UNIQUE INDEX listings_one_active_per_item ON listings (item_id)
    WHERE status IN ('pending', 'scheduled', 'open', 'extended');
CREATE INDEX listings_seller_newest ON listings (seller_id, created_at_ms DESC, id DESC);
CREATE INDEX listings_active_ending ON listings (current_end_at_ms, id)
    WHERE status IN ('scheduled', 'open', 'extended');
CREATE INDEX listings_category_path ON listings (category_path);
CREATE INDEX listings_price ON listings (currency, current_price_e4);

-- Full-text index over title, attribute values and description (porter
-- stemming, like PostgreSQL's 'english' configuration), kept by triggers.
CREATE VIRTUAL TABLE listings_fts USING fts5(
    title, attributes_text, description,
    content = 'listings', content_rowid = 'row_key', tokenize = 'porter unicode61'
);
CREATE TRIGGER listings_fts_insert AFTER INSERT ON listings BEGIN
    INSERT INTO listings_fts (rowid, title, attributes_text, description)
    VALUES (new.row_key, new.title, new.attributes_text, new.description);
END;
CREATE TRIGGER listings_fts_delete AFTER DELETE ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, title, attributes_text, description)
    VALUES ('delete', old.row_key, old.title, old.attributes_text, old.description);
END;
CREATE TRIGGER listings_fts_update AFTER UPDATE OF title, attributes_text, description ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, title, attributes_text, description)
    VALUES ('delete', old.row_key, old.title, old.attributes_text, old.description);
    INSERT INTO listings_fts (rowid, title, attributes_text, description)
    VALUES (new.row_key, new.title, new.attributes_text, new.description);
END;

CREATE TABLE watchlist (
    user_id     TEXT NOT NULL,
    listing_id  TEXT NOT NULL REFERENCES listings (id),
    added_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, listing_id)
);
CREATE INDEX watchlist_user_newest ON watchlist (user_id, added_at_ms DESC, listing_id DESC);
CREATE INDEX watchlist_listing ON watchlist (listing_id);

CREATE TABLE processed_events (
    event_id        TEXT PRIMARY KEY,
    processed_at_ms INTEGER NOT NULL
);

CREATE TABLE listing_activity (
    listing_id TEXT NOT NULL,
    user_id    TEXT,
    kind       TEXT NOT NULL,
    at_ms      INTEGER NOT NULL
);
CREATE INDEX listing_activity_recent ON listing_activity (at_ms);
CREATE INDEX listing_activity_user ON listing_activity (user_id, at_ms);

CREATE TABLE user_interests (
    user_id     TEXT NOT NULL,
    category_id TEXT NOT NULL,
    PRIMARY KEY (user_id, category_id)
);

CREATE TABLE event_outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    envelope BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    published_at_ms INTEGER
);
CREATE INDEX event_outbox_unpublished ON event_outbox (position) WHERE published_at_ms IS NULL;

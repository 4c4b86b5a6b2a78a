-- Items gain what the contract shows (shipping country, version) and a
-- soft delete: an item with past listings stays for order history.
ALTER TABLE items ADD COLUMN ship_from_country TEXT NOT NULL DEFAULT '';
ALTER TABLE items ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE items ADD COLUMN deleted_at_ms BIGINT;
CREATE INDEX items_seller_newest ON items (seller_id, created_at_ms DESC, id DESC);

-- Outcomes of mutating RPCs by (caller, method, request_id): a retry gets
-- the stored response; other content under the same key is refused.
CREATE TABLE idempotency_keys (
    caller_id     TEXT NOT NULL,
    method        TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    -- The encoded response; NULL while the operation is in flight
    -- (a listing waiting for the bidding service).
    response      BYTEA,
    -- What the operation created (a listing id), so a retry of an operation
    -- still in flight resumes it.
    resource_id   TEXT,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (caller_id, method, request_id)
);

-- An item offered in an auction; the id is the bidding service's auction id.
-- Bidding values (price, bids, status, end) are copies kept up to date from
-- the bus; item values are copied so search needs no join.
CREATE TABLE listings (
    id                 UUID PRIMARY KEY,
    item_id            UUID NOT NULL REFERENCES items (id),
    seller_id          UUID NOT NULL,
    seller_handle      TEXT NOT NULL DEFAULT '',
    title              TEXT NOT NULL,
    description        TEXT NOT NULL,
    -- Attribute values joined by spaces, for full-text search.
    attributes_text    TEXT NOT NULL,
    category_id        UUID NOT NULL,
    -- The category's slug path ("electronics/cameras"): a subtree is a prefix.
    category_path      TEXT NOT NULL,
    condition          TEXT NOT NULL,
    format             TEXT NOT NULL,
    -- auction.v1.AuctionParameters, protobuf-encoded (reserve included).
    parameters         BYTEA NOT NULL,
    currency           TEXT NOT NULL,
    current_price      TEXT NOT NULL,
    -- The current price in units of 0.0001, for filters and sorting.
    current_price_e4   BIGINT NOT NULL,
    -- While buy-it-now is available; NULL otherwise.
    buy_it_now_price   TEXT,
    bid_count          BIGINT NOT NULL DEFAULT 0,
    watcher_count      BIGINT NOT NULL DEFAULT 0,
    reserve_state      TEXT NOT NULL,
    -- pending (bidding not yet confirmed), scheduled, open, extended,
    -- closed, unsold, cancelled.
    status             TEXT NOT NULL,
    start_at_ms        BIGINT NOT NULL,
    -- The scheduled (original) end; NULL for live lots.
    end_at_ms          BIGINT,
    -- The current end including extensions (live lots: the session start);
    -- the key of "ending soonest".
    current_end_at_ms  BIGINT NOT NULL,
    live_session_id    UUID,
    lot_number         BIGINT NOT NULL DEFAULT 0,
    units_remaining    BIGINT NOT NULL DEFAULT 0,
    -- The newest engine sequence applied from the bus.
    last_sequence      BIGINT NOT NULL DEFAULT 0,
    cancel_reason      TEXT NOT NULL DEFAULT '',
    version            BIGINT NOT NULL DEFAULT 1,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    search_vector      tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', attributes_text), 'B')
        || setweight(to_tsvector('english', description), 'C')
    ) STORED
);
-- One active listing per item, enforced by the database.
CREATE UNIQUE INDEX listings_one_active_per_item ON listings (item_id)
    WHERE status IN ('pending', 'scheduled', 'open', 'extended');
CREATE INDEX listings_search ON listings USING GIN (search_vector);
CREATE INDEX listings_seller_newest ON listings (seller_id, created_at_ms DESC, id DESC);
CREATE INDEX listings_active_ending ON listings (current_end_at_ms, id)
    WHERE status IN ('scheduled', 'open', 'extended');
CREATE INDEX listings_category_path ON listings (category_path text_pattern_ops);
CREATE INDEX listings_price ON listings (currency, current_price_e4);

-- Who follows which listing.
CREATE TABLE watchlist (
    user_id     UUID NOT NULL,
    listing_id  UUID NOT NULL REFERENCES listings (id),
    added_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, listing_id)
);
CREATE INDEX watchlist_user_newest ON watchlist (user_id, added_at_ms DESC, listing_id DESC);
CREATE INDEX watchlist_listing ON watchlist (listing_id);

-- Bus events already applied (consumers are idempotent by event id).
CREATE TABLE processed_events (
    event_id        TEXT PRIMARY KEY,
    processed_at_ms BIGINT NOT NULL
);

-- Bidding and watching activity per listing: trending and recommendations.
CREATE TABLE listing_activity (
    listing_id UUID NOT NULL,
    user_id    UUID,
    kind       TEXT NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX listing_activity_recent ON listing_activity (at_ms);
CREATE INDEX listing_activity_user ON listing_activity (user_id, at_ms);

-- Users' interest categories (from the user service's bus events).
CREATE TABLE user_interests (
    user_id     UUID NOT NULL,
    category_id UUID NOT NULL,
    PRIMARY KEY (user_id, category_id)
);

CREATE TABLE event_outbox (
    position BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    envelope BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    published_at_ms BIGINT
);
CREATE INDEX event_outbox_unpublished ON event_outbox (position) WHERE published_at_ms IS NULL;

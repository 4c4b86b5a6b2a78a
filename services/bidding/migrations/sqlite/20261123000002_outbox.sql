-- The transactional outbox (auction_platform::bus::outbox): the shard stages
-- its events' envelopes here in the same transaction as the log append; the
-- relay publishes them to the event bus.
CREATE TABLE event_outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    envelope BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    published_at_ms INTEGER
);
CREATE INDEX event_outbox_unpublished ON event_outbox (position) WHERE published_at_ms IS NULL;

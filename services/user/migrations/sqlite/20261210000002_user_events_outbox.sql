-- Issue 10: BusUserEvent (topic "user") is staged here in the transaction
-- of the account change and published by the outbox relay.
CREATE TABLE event_outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    envelope BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    published_at_ms INTEGER
);
CREATE INDEX event_outbox_unpublished ON event_outbox (position) WHERE published_at_ms IS NULL;

-- The transactional outbox (auction_platform::bus::outbox): the shard stages
-- its events' envelopes here in the same transaction as the log append; the
-- relay publishes them to the event bus.
CREATE TABLE event_outbox (
    position BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    envelope BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    published_at_ms BIGINT
);
CREATE INDEX event_outbox_unpublished ON event_outbox (position) WHERE published_at_ms IS NULL;

-- Fencing: the highest leadership epoch that has appended to each shard's log.
-- An append carries its leader's epoch and raises this row in the same
-- transaction; an append with a lower epoch finds no row to raise and is
-- refused, so a deposed leader can never extend the log.
CREATE TABLE shard_epochs (
    shard INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL
);

-- Every auction the service runs: the engine's spec (JSON) and the catalog's
-- metadata (JSON); `finished` mirrors the engine's status so recovery loads
-- only live auctions.
CREATE TABLE auctions (
    auction_id    UUID PRIMARY KEY,
    shard         INTEGER NOT NULL,
    spec          TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    status        TEXT NOT NULL,
    finished      BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX auctions_live_by_shard ON auctions (shard) WHERE NOT finished;

-- The durable log: every engine event of every auction, in sequence.
CREATE TABLE auction_events (
    auction_id UUID NOT NULL REFERENCES auctions (auction_id),
    seq        BIGINT NOT NULL,
    shard      INTEGER NOT NULL,
    epoch      BIGINT NOT NULL,
    at_ms      BIGINT NOT NULL,
    event      TEXT NOT NULL,
    PRIMARY KEY (auction_id, seq)
);

-- The engine state of an auction after event `seq`, so recovery replays only
-- what came after.
CREATE TABLE auction_snapshots (
    auction_id UUID PRIMARY KEY REFERENCES auctions (auction_id),
    seq        BIGINT NOT NULL,
    state      TEXT NOT NULL
);

-- Exactly-once: the outcome of every mutating request, keyed as the contract
-- scopes request ids (caller, method). `fingerprint` is the request's content
-- without its request id; `outcome` is the answer given (JSON).
CREATE TABLE request_outcomes (
    caller      UUID NOT NULL,
    method      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    auction_id  UUID NOT NULL,
    fingerprint TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (caller, method, request_id)
);
CREATE INDEX request_outcomes_age ON request_outcomes (at_ms);

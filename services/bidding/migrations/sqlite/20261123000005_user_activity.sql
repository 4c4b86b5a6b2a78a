-- The per-user index (ListMyBids, WatchMyActivity), written by the shards in
-- the same transaction as the log batch that caused it, so it holds exactly
-- what was committed, on whichever node led the shard.

-- Each user's activity log position: the per-user sequence is consecutive
-- although any shard (on any node) may append for the user; the row lock
-- taken by the batch's upsert orders concurrent appends for one user.
CREATE TABLE user_activity_heads (
    user_id  TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);

-- The per-user activity log: one row per event concerning the user, with
-- the public state and the user's own position after the batch (encoded
-- auction.v1.AuctionState / ViewerState), so a resumed stream replays
-- exactly what a live one sent.
CREATE TABLE user_activity (
    user_id       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    auction_id    TEXT NOT NULL,
    activity_type INTEGER NOT NULL,
    bid_id        TEXT,
    at_ms         INTEGER NOT NULL,
    state         BLOB NOT NULL,
    viewer        BLOB NOT NULL,
    PRIMARY KEY (user_id, seq)
);

-- One row per (user, auction) the user bid on: ListMyBids pages through it
-- most recent own bid first (by the per-user sequence of that bid, which
-- orders a user's bids exactly); the activity snapshot lists the positions not
-- ended or ended lately. `removed_status` remembers a retracted, withdrawn or
-- expired bid (the engine no longer holds it); a new bid clears it.
CREATE TABLE user_positions (
    user_id        TEXT NOT NULL,
    auction_id     TEXT NOT NULL,
    last_bid_seq   INTEGER,
    removed_status INTEGER,
    ended          INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (user_id, auction_id)
);
CREATE INDEX user_positions_by_last_bid ON user_positions (user_id, last_bid_seq DESC);

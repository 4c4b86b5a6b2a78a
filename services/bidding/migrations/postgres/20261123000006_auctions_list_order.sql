-- ListAuctions' order, "soonest end first (live lots: by session start, then
-- lot number)", as a keyset: `list_end_ms` is the current end (English and
-- sealed, soft-close extensions included), a live lot's session start, or the
-- largest BIGINT when there is none (Dutch, a lot without a session start);
-- `list_lot_number` is a live lot's number (0 otherwise); the auction id
-- breaks ties. The shard writes both with the auction and rewrites them in
-- the batch that moves them.
ALTER TABLE auctions ADD COLUMN list_end_ms BIGINT NOT NULL DEFAULT 9223372036854775807;
ALTER TABLE auctions ADD COLUMN list_lot_number BIGINT NOT NULL DEFAULT 0;

-- Existing rows: the original end and the lot number from the metadata. An
-- extended auction's current end and a lot's session start are not there;
-- a shard rewrites both columns with the first batch it commits for an
-- auction it loaded, so a running auction catches up at its next event.
UPDATE auctions
SET list_end_ms = COALESCE((metadata::jsonb ->> 'original_end_ms')::BIGINT, list_end_ms),
    list_lot_number = COALESCE((metadata::jsonb -> 'live_lot' ->> 'lot_number')::BIGINT, 0);

CREATE INDEX auctions_list_order ON auctions (list_end_ms, list_lot_number, auction_id);

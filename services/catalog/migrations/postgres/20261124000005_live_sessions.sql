-- Live sessions (issue 8): an auctioneer's ordered lots, each a listing of
-- format LIVE (listings.live_session_id, listings.lot_number) scheduled in
-- the bidding service like any other listing.
CREATE TABLE live_sessions (
    id                 UUID PRIMARY KEY,
    auctioneer_id      UUID NOT NULL,
    auctioneer_handle  TEXT NOT NULL DEFAULT '',
    title              TEXT NOT NULL,
    description        TEXT NOT NULL,
    currency           TEXT NOT NULL,
    start_at_ms        BIGINT NOT NULL,
    -- pending (lots not yet confirmed by bidding), scheduled, live, ended,
    -- cancelled; failed (bidding refused a lot; never shown). Derived from
    -- the lots' statuses whenever one changes.
    status             TEXT NOT NULL,
    lot_count          BIGINT NOT NULL,
    -- The open lot, else the last one closed; 0 before the first opens.
    current_lot_number BIGINT NOT NULL DEFAULT 0,
    -- When the "live session starting" notice is due (15 minutes before the
    -- start, or at creation when that is sooner) and when it was staged in
    -- the outbox: set once, in the transaction that stages it.
    notice_due_at_ms   BIGINT NOT NULL,
    notice_sent_at_ms  BIGINT,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL
);
CREATE INDEX live_sessions_soonest ON live_sessions (start_at_ms, id);
CREATE INDEX live_sessions_notice_due ON live_sessions (notice_due_at_ms)
    WHERE notice_sent_at_ms IS NULL;
CREATE INDEX listings_live_session ON listings (live_session_id, lot_number)
    WHERE live_session_id IS NOT NULL;

-- The lots of each live session: every lot is its own auction, and this is
-- where one lot finds its siblings (one open lot per session; opening a lot
-- finalises the session's provisional hammers). The auctioneer is kept here
-- too so a session's controls can be checked without loading each lot.
CREATE TABLE live_lots (
    auction_id    TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL,
    lot_number    INTEGER NOT NULL,
    auctioneer_id TEXT NOT NULL,
    UNIQUE (session_id, lot_number)
);

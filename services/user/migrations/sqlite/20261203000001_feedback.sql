-- Issue 7: feedback after a completed sale.
--
-- The user service learns orders from the payment service's BusOrderEvent
-- (topic `order`, group `user`): one row per order, upserted by every event
-- of that order, so a redelivery changes nothing and a Paid that arrives
-- before its Created still yields the same row.
CREATE TABLE order_facts (
    order_id        TEXT PRIMARY KEY,
    auction_id      TEXT NOT NULL,
    buyer_id        TEXT NOT NULL,
    seller_id       TEXT NOT NULL,
    -- The earliest event time seen: the Created event's once it arrived.
    created_at_ms   INTEGER NOT NULL,
    -- Set by Paid, Shipped, Released, Refunded and DisputeUpdated (each
    -- only happens to a paid order); never cleared.
    paid            INTEGER NOT NULL DEFAULT 0
);

-- LeaveFeedback is idempotent with request_id: the key is stored with the
-- feedback it made, scoped to its author. Feedback from before this column
-- has none (NULLs do not collide in a unique index).
ALTER TABLE feedback ADD COLUMN request_id TEXT;
CREATE UNIQUE INDEX feedback_by_request ON feedback (author_user_id, request_id);

-- ListFeedback pages newest first by (created_at_ms, id).
DROP INDEX feedback_by_subject;
CREATE INDEX feedback_by_subject ON feedback (subject_user_id, created_at_ms, id);

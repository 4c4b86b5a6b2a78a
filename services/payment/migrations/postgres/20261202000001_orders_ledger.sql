-- Orders, payment attempts, disputes, second-chance offers, the
-- double-entry ledger and the idempotency records of issue 9. Ids and
-- decimal amounts are text (exact, the same on SQLite); ledger lines also
-- keep their amount in minor units so sums are exact integers.

CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    -- What produced it: "<auction>/<sequence>/<award index>" for a close,
    -- "offer/<offer id>" for an accepted second-chance offer. Unique, so a
    -- close delivered twice creates one order.
    origin_key TEXT NOT NULL UNIQUE,
    auction_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    title TEXT NOT NULL,
    seller_id TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    unit_price TEXT NOT NULL,
    hammer_price TEXT NOT NULL,
    buyers_premium TEXT NOT NULL,
    buyers_premium_bps BIGINT NOT NULL,
    buyer_service_fee TEXT NOT NULL,
    seller_commission TEXT NOT NULL,
    seller_commission_bps BIGINT NOT NULL,
    total_due TEXT NOT NULL,
    seller_proceeds TEXT NOT NULL,
    refunded_amount TEXT NOT NULL,
    payment_due_at_ms BIGINT NOT NULL,
    -- When the "payment due soon" event was staged (once per order).
    payment_due_reminded_at_ms BIGINT,
    auto_release_at_ms BIGINT,
    carrier TEXT,
    tracking_number TEXT,
    tracking_url TEXT,
    shipped_at_ms BIGINT,
    dispute_id TEXT,
    second_chance_offer_id TEXT,
    created_at_ms BIGINT NOT NULL,
    paid_at_ms BIGINT,
    completed_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL,
    -- Raised by every transition; transitions are conditional on it, so two
    -- nodes (or a worker and an RPC) never apply one twice.
    version BIGINT NOT NULL
);
CREATE INDEX orders_buyer ON orders (buyer_id, order_id);
CREATE INDEX orders_seller ON orders (seller_id, order_id);
CREATE INDEX orders_auction ON orders (auction_id);
CREATE INDEX orders_due ON orders (status, payment_due_at_ms);
CREATE INDEX orders_release ON orders (status, auto_release_at_ms);

-- Who did what to an order, and when.
CREATE TABLE order_history (
    order_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (order_id, version)
);

CREATE TABLE payment_attempts (
    attempt_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    failure_reason TEXT NOT NULL,
    provider_reference TEXT NOT NULL,
    method_description TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    completed_at_ms BIGINT
);
CREATE INDEX payment_attempts_order ON payment_attempts (order_id, attempt_id);
CREATE INDEX payment_attempts_pending ON payment_attempts (status, created_at_ms);

CREATE TABLE disputes (
    dispute_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    buyer_id TEXT NOT NULL,
    seller_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    respond_by_ms BIGINT NOT NULL,
    resolution TEXT,
    refund_amount TEXT,
    resolution_note TEXT NOT NULL,
    resolved_by TEXT,
    created_at_ms BIGINT NOT NULL,
    resolved_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX disputes_status ON disputes (status, created_at_ms);

CREATE TABLE dispute_messages (
    dispute_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    author_id TEXT NOT NULL,
    party TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (dispute_id, position)
);

CREATE TABLE second_chance_offers (
    offer_id TEXT PRIMARY KEY,
    auction_id TEXT NOT NULL,
    original_order_id TEXT NOT NULL,
    seller_id TEXT NOT NULL,
    recipient_id TEXT NOT NULL,
    price TEXT NOT NULL,
    currency TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    expire_at_ms BIGINT NOT NULL,
    order_id TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
-- At most one pending offer per cancelled order.
CREATE UNIQUE INDEX second_chance_one_pending ON second_chance_offers (original_order_id) WHERE status = 'PENDING';
CREATE INDEX second_chance_recipient ON second_chance_offers (recipient_id, offer_id);
CREATE INDEX second_chance_seller ON second_chance_offers (seller_id, offer_id);

-- Each bidder's last own amount per auction (from BusAuctionBidPlaced), for
-- second-chance offers.
CREATE TABLE auction_bids (
    auction_id TEXT NOT NULL,
    bidder_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (auction_id, bidder_id)
);

-- Bus events already handled (consumers are idempotent by event id).
CREATE TABLE processed_events (
    event_id TEXT PRIMARY KEY,
    processed_at_ms BIGINT NOT NULL
);

-- Idempotency: (caller, method, request id) -> fingerprint and outcome.
-- outcome: 'inflight' (a payment attempt is with the provider), 'ok'
-- (response holds the encoded answer) or 'error' (a deterministic refusal).
CREATE TABLE idempotency_keys (
    caller_id TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    response BYTEA,
    error_code BIGINT,
    error_reason TEXT,
    error_message TEXT,
    attempt_id TEXT,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (caller_id, method, request_id)
);

-- The ledger. A posting is one movement; movement_key makes each movement
-- happen at most once ("capture:<order>", "release:<order>", ...).
CREATE TABLE ledger_postings (
    posting_id TEXT PRIMARY KEY,
    movement_key TEXT NOT NULL UNIQUE,
    posting_type TEXT NOT NULL,
    order_id TEXT,
    payout_id TEXT,
    currency TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE ledger_entries (
    entry_id TEXT PRIMARY KEY,
    posting_id TEXT NOT NULL REFERENCES ledger_postings (posting_id),
    posting_type TEXT NOT NULL,
    account_type TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    amount TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    order_id TEXT NOT NULL,
    payout_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    description TEXT NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_type, owner_id, currency, entry_id);
CREATE INDEX ledger_entries_order ON ledger_entries (order_id);
CREATE INDEX ledger_entries_posting ON ledger_entries (posting_id);

-- Entries and postings are immutable: corrections are new postings.
CREATE FUNCTION ledger_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are immutable';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();
CREATE TRIGGER ledger_postings_immutable BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();

CREATE TABLE payouts (
    payout_id TEXT PRIMARY KEY,
    seller_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    order_ids TEXT NOT NULL,
    posting_id TEXT,
    created_at_ms BIGINT NOT NULL,
    paid_at_ms BIGINT,
    failure_reason TEXT NOT NULL
);
CREATE INDEX payouts_seller ON payouts (seller_id, payout_id);

CREATE TABLE event_outbox (
    position BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    envelope BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    published_at_ms BIGINT
);
CREATE INDEX event_outbox_unpublished ON event_outbox (position) WHERE published_at_ms IS NULL;

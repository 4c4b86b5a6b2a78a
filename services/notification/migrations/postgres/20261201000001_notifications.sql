-- Issue 10: inbox, preferences, webhooks, e-mail, and what the consumer of the
-- event bus remembers. Ids are UUID strings; times are ms since the Unix epoch.

-- Bus events already handled (consumers are idempotent by event id).
CREATE TABLE processed_events (
    event_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    processed_at_ms BIGINT NOT NULL
);

-- Per user: the last inbox sequence given out.
CREATE TABLE inbox_heads (
    user_id TEXT PRIMARY KEY,
    last_sequence BIGINT NOT NULL
);

-- Every notification produced; `in_app` ones are in the inbox and its stream.
-- `notification` is the encoded auction.v1.Notification (without read_time).
CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    notification_type INTEGER NOT NULL,
    dedupe_key TEXT NOT NULL,
    in_app BOOLEAN NOT NULL,
    sequence BIGINT NOT NULL,
    notification BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    read_at_ms BIGINT,
    UNIQUE (user_id, dedupe_key)
);
CREATE INDEX notifications_inbox ON notifications (user_id, in_app, sequence);

-- The per-user inbox log the Subscribe stream replays: encoded InboxEvent.
CREATE TABLE inbox_events (
    user_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    event BYTEA NOT NULL,
    PRIMARY KEY (user_id, sequence)
);

-- Channel choices per type (bits: 1 IN_APP, 2 EMAIL, 4 WEBHOOK); absent = default.
CREATE TABLE preferences (
    user_id TEXT NOT NULL,
    notification_type INTEGER NOT NULL,
    channels BIGINT NOT NULL,
    PRIMARY KEY (user_id, notification_type)
);

-- Per user settings and contact details (from UserService events).
CREATE TABLE user_settings (
    user_id TEXT PRIMARY KEY,
    ending_soon_lead_ms BIGINT,
    interest_keywords TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL DEFAULT ''
);

CREATE TABLE user_interest_categories (
    user_id TEXT NOT NULL,
    category_id TEXT NOT NULL,
    PRIMARY KEY (user_id, category_id)
);
CREATE INDEX user_interest_categories_by_category ON user_interest_categories (category_id);

-- Auctions as far as notifications need them.
CREATE TABLE auctions (
    auction_id TEXT PRIMARY KEY,
    seller_id TEXT NOT NULL,
    title TEXT NOT NULL,
    end_time_ms BIGINT,
    price_currency TEXT NOT NULL DEFAULT '',
    price_amount TEXT NOT NULL DEFAULT '',
    finished BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX auctions_open_by_end ON auctions (finished, end_time_ms);

-- Bidders and watchers of an auction.
CREATE TABLE auction_participants (
    auction_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (auction_id, user_id, role)
);

-- Remembered answers of mutating RPCs (idempotency keys).
CREATE TABLE request_outcomes (
    user_id TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint BYTEA NOT NULL,
    response BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, method, request_id)
);

CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    types BIGINT NOT NULL,
    state INTEGER NOT NULL,
    consecutive_failures BIGINT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    last_success_ms BIGINT,
    last_failure_ms BIGINT,
    deleted BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX webhooks_by_user ON webhooks (user_id, deleted);

-- Deliveries still to attempt.
CREATE TABLE webhook_jobs (
    webhook_id TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    attempt_number BIGINT NOT NULL,
    due_at_ms BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, notification_id)
);
CREATE INDEX webhook_jobs_due ON webhook_jobs (due_at_ms);

-- The delivery log partners read (ListWebhookDeliveries).
CREATE TABLE webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    notification_type INTEGER NOT NULL,
    attempt_number BIGINT NOT NULL,
    attempt_time_ms BIGINT NOT NULL,
    status_code BIGINT NOT NULL,
    error TEXT NOT NULL,
    outcome INTEGER NOT NULL,
    next_retry_ms BIGINT,
    latency_ms BIGINT NOT NULL,
    response_excerpt TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, delivery_id);

-- E-mails still to send.
CREATE TABLE email_jobs (
    notification_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    due_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX email_jobs_due ON email_jobs (sent_at_ms, due_at_ms);

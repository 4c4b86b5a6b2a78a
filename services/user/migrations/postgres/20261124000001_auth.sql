-- Issue 7: sessions with rotating refresh tokens, TOTP, suspension details,
-- API keys, sign-in throttling, feedback.

ALTER TABLE users ADD COLUMN bio TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN locale TEXT NOT NULL DEFAULT 'en';
ALTER TABLE users ADD COLUMN preferred_currency TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN suspension_reason TEXT;
ALTER TABLE users ADD COLUMN suspended_at_ms BIGINT;
ALTER TABLE users ADD COLUMN suspended_until_ms BIGINT;
ALTER TABLE users ADD COLUMN suspended_by UUID;
-- Base32 TOTP secret once confirmed; the pending one until ConfirmTotp.
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_pending_secret TEXT;
ALTER TABLE users ADD COLUMN totp_pending_expires_at_ms BIGINT;
-- The last accepted 30-second step: a code is accepted only once.
ALTER TABLE users ADD COLUMN totp_last_step BIGINT;

-- A session is a refresh-token family.
CREATE TABLE sessions (
    id                  UUID PRIMARY KEY,
    user_id             UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    second_factor       BOOLEAN NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    expires_at_ms       BIGINT NOT NULL,
    revoked_at_ms       BIGINT,
    revoke_reason       TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- Only SHA-256 hashes of refresh tokens are stored.
CREATE TABLE refresh_tokens (
    token_hash      TEXT PRIMARY KEY,
    session_id      UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at_ms    BIGINT NOT NULL,
    used_at_ms      BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE second_factor_challenges (
    id              UUID PRIMARY KEY,
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at_ms   BIGINT NOT NULL,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    used_at_ms      BIGINT
);

CREATE TABLE recovery_codes (
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    used_at_ms  BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- Partner API keys: only a SHA-256 hash of the secret is stored.
CREATE TABLE api_keys (
    id              UUID PRIMARY KEY,
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    prefix          TEXT NOT NULL,
    secret_hash     TEXT NOT NULL UNIQUE,
    scopes          TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT,
    last_used_at_ms BIGINT,
    revoked_at_ms   BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);

-- Failed logins, per account (e-mail) and per source address, for throttling.
CREATE TABLE login_failures (
    id          UUID PRIMARY KEY,
    email       TEXT NOT NULL,
    source      TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX login_failures_by_email ON login_failures (email, at_ms);
CREATE INDEX login_failures_by_source ON login_failures (source, at_ms);

-- One feedback per side per order.
CREATE TABLE feedback (
    id              UUID PRIMARY KEY,
    order_id        UUID NOT NULL,
    auction_id      UUID NOT NULL,
    author_user_id  UUID NOT NULL REFERENCES users (id),
    subject_user_id UUID NOT NULL REFERENCES users (id),
    side            TEXT NOT NULL CHECK (side IN ('from_buyer', 'from_seller')),
    rating          TEXT NOT NULL CHECK (rating IN ('positive', 'neutral', 'negative')),
    comment         TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    UNIQUE (order_id, side)
);
CREATE INDEX feedback_by_subject ON feedback (subject_user_id, created_at_ms);

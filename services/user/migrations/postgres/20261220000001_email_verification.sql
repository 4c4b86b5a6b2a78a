-- E-mail verification. The address a user proved they read (by opening the
-- link of a verification e-mail); the account's address counts as verified
-- while it equals this one, so a changed address is unverified at once.
ALTER TABLE users ADD COLUMN verified_email TEXT;

-- Verification tokens: only the SHA-256 (hex) of the token is stored. Each
-- names the address it was mailed to; it verifies that address only. Rows
-- also count the mails sent per account for the rate limit, so they outlive
-- their token by a day at least (see replay::purge_expired).
CREATE TABLE email_verifications (
    token_hash      TEXT PRIMARY KEY,
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email           TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    used_at_ms      BIGINT
);
CREATE INDEX email_verifications_by_user ON email_verifications (user_id, created_at_ms);

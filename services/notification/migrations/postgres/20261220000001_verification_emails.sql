-- Verification e-mails (BusUserEmailVerificationRequested): transactional,
-- not inbox notifications, sent whatever the user's preferences. One row per
-- bus event (exactly once by event id, like every consumed event). The token
-- is kept only until the e-mail is sent or given up, then blanked.
CREATE TABLE verification_emails (
    event_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    due_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX verification_emails_due ON verification_emails (sent_at_ms, due_at_ms);

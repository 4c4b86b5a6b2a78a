-- Issue 7: request_id replay. One row per (scope, method, request_id): the
-- scope is the caller's user id, or for the unauthenticated RPCs a keyed
-- hash of their subject (e-mail, challenge, refresh token, API key). The
-- row is claimed as the first write of the request's transaction and
-- holds its outcome when that transaction commits, so a request and its
-- remembered answer are never apart. Secrets never appear here in clear:
-- `response` is the encoded answer with its secret fields blanked, and
-- `sealed` holds those secrets encrypted (see src/replay.rs).
CREATE TABLE request_replays (
    scope           TEXT NOT NULL,
    method          TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    -- Keyed MAC of every request field but request_id (passwords and
    -- tokens are among them, so a plain hash would be guessable).
    fingerprint     TEXT NOT NULL,
    -- 'claimed' (only ever seen inside its own transaction), 'ok', 'error'.
    outcome         TEXT NOT NULL,
    response        BLOB,
    sealed          BLOB,
    error_code      INTEGER,
    error_reason    TEXT,
    error_message   TEXT,
    created_at_ms   INTEGER NOT NULL,
    -- End of the replay window (5 minutes for the token-issuing RPCs,
    -- 24 hours for the others); then the key may be used afresh.
    expires_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (scope, method, request_id)
);
CREATE INDEX request_replays_by_expiry ON request_replays (expires_at_ms);

-- Live lots stored before 20261123000006 have no `original_end_ms` in their
-- metadata, so that backfill left them at the end of ListAuctions; a lot
-- waiting for its session has no timer and no event to correct it. Their
-- place is the session start (the spec's `start_at`; 0 = none: last).
UPDATE auctions
SET list_end_ms = CASE
        WHEN COALESCE((spec::jsonb ->> 'start_at')::BIGINT, 0) = 0 THEN 9223372036854775807
        ELSE (spec::jsonb ->> 'start_at')::BIGINT
    END
WHERE jsonb_typeof(metadata::jsonb -> 'live_lot') = 'object';

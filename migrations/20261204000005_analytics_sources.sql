-- Analytics that agree with the platform:
-- - a reply the Send API refused keeps the platform's code and message, so the delivery funnel
--   counts it (as `refused`) beside the receipts;
-- - blocks count messages (a message matched by two blocking rules is one block), rules apart;
-- - active users come from one source, the messages: one row per user and day.
ALTER TABLE outbox ADD COLUMN error_code BIGINT, ADD COLUMN error_title TEXT;

CREATE TABLE rollup_blocks (
    day        DATE NOT NULL REFERENCES rollup_days(day) ON DELETE CASCADE,
    tenant_id  BIGINT NOT NULL,
    channel_id BIGINT,
    country    TEXT NOT NULL,
    action     TEXT NOT NULL,
    messages   BIGINT NOT NULL
);
CREATE INDEX rollup_blocks_day ON rollup_blocks (day);

CREATE TABLE rollup_active (
    day        DATE NOT NULL REFERENCES rollup_days(day) ON DELETE CASCADE,
    tenant_id  BIGINT NOT NULL,
    channel_id BIGINT NOT NULL,
    country    TEXT NOT NULL,
    user_id    BIGINT NOT NULL
);
CREATE INDEX rollup_active_day ON rollup_active (day);

-- Every day is rolled up again, with the new tables.
DELETE FROM rollup_days;

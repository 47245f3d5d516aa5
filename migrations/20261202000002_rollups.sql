-- Daily rollups for the analytics: one row per day and fine-grained group, computed once for
-- days at least two days old (see services/admin/src/rollup.rs), so a month of analytics reads a
-- few thousand rows instead of every message. Days newer than that are computed from the
-- messages at query time. A late change to an old day (a delivery receipt, a user's data
-- deleted) deletes that day's `rollup_days` row, and with it the day's rollups; the next query
-- computes them again.

-- A latency value as stored in the histograms: exact below 64 ms, above that the value with all
-- but its 6 highest bits cleared (at most 1/32, about 3%, below the value).
CREATE FUNCTION herd_bucket(v INT) RETURNS INT LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN v < 64 THEN v
                ELSE (v >> (27 - position('1' IN v::bit(32)::text))) << (27 - position('1' IN v::bit(32)::text)) END
$$;

CREATE TABLE rollup_days (
    day          DATE PRIMARY KEY,
    computed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE rollup_volume (
    day            DATE NOT NULL REFERENCES rollup_days(day) ON DELETE CASCADE,
    tenant_id      BIGINT NOT NULL,
    channel_id     BIGINT NOT NULL,
    country        TEXT NOT NULL,
    messages_in    BIGINT NOT NULL,
    messages_out   BIGINT NOT NULL,
    conversations  BIGINT NOT NULL,
    active_users   BIGINT NOT NULL
);
CREATE INDEX rollup_volume_day ON rollup_volume (day);

CREATE TABLE rollup_latency (
    day         DATE NOT NULL REFERENCES rollup_days(day) ON DELETE CASCADE,
    tenant_id   BIGINT NOT NULL,
    channel_id  BIGINT NOT NULL,
    metric      TEXT NOT NULL,
    bucket      INT NOT NULL,
    n           BIGINT NOT NULL
);
CREATE INDEX rollup_latency_day ON rollup_latency (day);

CREATE TABLE rollup_replies (
    day            DATE NOT NULL REFERENCES rollup_days(day) ON DELETE CASCADE,
    tenant_id      BIGINT NOT NULL,
    channel_id     BIGINT NOT NULL,
    replies        BIGINT NOT NULL,
    balanced       BIGINT NOT NULL,
    tokens_in      BIGINT NOT NULL,
    tokens_out     BIGINT NOT NULL,
    generation_ms  BIGINT NOT NULL,
    measured       BIGINT NOT NULL
);
CREATE INDEX rollup_replies_day ON rollup_replies (day);

CREATE TABLE rollup_policy (
    day         DATE NOT NULL REFERENCES rollup_days(day) ON DELETE CASCADE,
    tenant_id   BIGINT NOT NULL,
    channel_id  BIGINT,
    country     TEXT NOT NULL,
    pack        TEXT NOT NULL,
    rule        TEXT NOT NULL,
    category    TEXT NOT NULL,
    action      TEXT NOT NULL,
    shadow      BOOLEAN NOT NULL,
    n           BIGINT NOT NULL
);
CREATE INDEX rollup_policy_day ON rollup_policy (day);

CREATE TABLE rollup_delivery (
    day          DATE NOT NULL REFERENCES rollup_days(day) ON DELETE CASCADE,
    tenant_id    BIGINT NOT NULL,
    channel_id   BIGINT NOT NULL,
    state        TEXT NOT NULL,
    error_code   BIGINT,
    error_title  TEXT NOT NULL,
    n            BIGINT NOT NULL
);
CREATE INDEX rollup_delivery_day ON rollup_delivery (day);

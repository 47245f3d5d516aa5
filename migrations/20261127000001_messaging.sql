-- Tenants, channels, users, conversations, messages, the reply outbox and deliveries.

CREATE TABLE tenants (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE channels (
    id            BIGSERIAL PRIMARY KEY,
    tenant_id     BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    platform      TEXT NOT NULL CHECK (platform IN ('whatsapp', 'messenger', 'instagram')),
    external_id   TEXT NOT NULL,           -- phone_number_id, Page id or Instagram account id
    app_secret    TEXT NOT NULL,
    verify_token  TEXT NOT NULL,
    access_token  TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (platform, external_id)
);

CREATE TABLE users (
    id           BIGSERIAL PRIMARY KEY,
    tenant_id    BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    platform     TEXT NOT NULL,
    external_id  TEXT NOT NULL,            -- wa_id / business-scoped user id, PSID, IGSID
    name         TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, platform, external_id)
);

CREATE TABLE conversations (
    id               BIGSERIAL PRIMARY KEY,
    channel_id       BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_id          BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_message_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (channel_id, user_id)
);

-- Inbound (direction 'in') and outbound ('out') messages.
-- Inbound status: pending → answered | failed | skipped; rate_limited and ignored are final.
CREATE TABLE messages (
    id                   BIGSERIAL PRIMARY KEY,
    conversation_id      BIGINT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    channel_id           BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    direction            TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    platform_message_id  TEXT,
    kind                 TEXT NOT NULL,
    body                 TEXT NOT NULL,
    payload              JSONB,
    status               TEXT NOT NULL,
    reply_to             BIGINT REFERENCES messages(id) ON DELETE CASCADE,
    part                 INT,              -- outbound: index of the piece of a split reply
    tokens_in            INT,
    tokens_out           INT,
    queue_wait_ms        INT,
    ttft_ms              INT,
    generation_ms        INT,
    send_ms              INT,
    end_to_end_ms        INT,
    platform_ts          TIMESTAMPTZ,
    stream_ms            BIGINT,           -- inbound: position in the turn stream (arrival order)
    stream_seq           BIGINT,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX messages_inbound_platform_id ON messages (channel_id, platform_message_id) WHERE direction = 'in';
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE INDEX messages_pending ON messages (conversation_id, platform_ts, stream_ms, stream_seq, id) WHERE direction = 'in' AND status = 'pending';

-- One row per inbound message herd answers: sending is idempotent per inbound id.
-- state: sending → sent | failed | expired (outside the 24-hour window).
CREATE TABLE outbox (
    inbound_id   BIGINT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    state        TEXT NOT NULL,
    reply        TEXT NOT NULL,
    attempts     INT NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the platform says about each message herd sent; states only move forward.
CREATE TABLE deliveries (
    platform_message_id  TEXT PRIMARY KEY,
    channel_id           BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    message_id           BIGINT REFERENCES messages(id) ON DELETE CASCADE,
    state                TEXT NOT NULL,
    state_rank           SMALLINT NOT NULL,
    error_code           BIGINT,
    error_title          TEXT,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Admin API: keys, tenant policy settings, policy pack versions, the audit log, engine expert
-- counts and daily rollups for analytics.

-- API keys: only a SHA-256 hash of the key is stored; `prefix` (the key's first characters) lets an
-- operator tell keys apart.
CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'analyst')),
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

-- A tenant's policy settings (what herd-policies calls a Tenant). `managed_by` is 'settings' while
-- the settings file owns them (seeding updates them), 'admin' once changed through the admin API.
ALTER TABLE tenants
    ADD COLUMN principal_place_of_business TEXT NOT NULL DEFAULT 'US',
    ADD COLUMN default_country TEXT,
    ADD COLUMN packs JSONB NOT NULL DEFAULT '["llama4-license", "meta-ai-rollout", "balanced-moderation"]',
    ADD COLUMN overrides JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN meta_license_granted BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN mau_attested_at TIMESTAMPTZ,
    ADD COLUMN mau_attested_by TEXT,
    ADD COLUMN multimodal BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'settings',
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- Uploaded policy pack versions (the TOML as sent) and which one is active per pack. Packs without
-- an active row here run as shipped (or from `policies.packs_dir`).
CREATE TABLE policy_pack_versions (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL,
    version     INT NOT NULL,
    source      TEXT NOT NULL,
    created_by  BIGINT REFERENCES api_keys(id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);

-- Every activation, newest last: the active version of a pack is its latest row; a rollback adds a
-- row for the version active before.
CREATE TABLE policy_pack_activations (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,
    version       INT NOT NULL,
    activated_by  BIGINT REFERENCES api_keys(id) ON DELETE SET NULL,
    activated_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (name, version) REFERENCES policy_pack_versions (name, version)
);
CREATE INDEX policy_pack_activations_name ON policy_pack_activations (name, id);

-- Every change made through the admin API.
CREATE TABLE audit_log (
    id           BIGSERIAL PRIMARY KEY,
    actor_key_id BIGINT,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target_type  TEXT NOT NULL,
    target_id    TEXT NOT NULL,
    before       JSONB,
    after        JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_log_time ON audit_log (created_at);
CREATE INDEX audit_log_target ON audit_log (target_type, target_id);

-- Tokens routed to each expert of each MoE layer per day (UTC). The engine counts them; workers
-- add what was counted since their last reply. Batches mix tenants, so this is per model only.
CREATE TABLE expert_usage (
    day        DATE NOT NULL,
    layer      INT NOT NULL,
    expert     INT NOT NULL,
    tokens     BIGINT NOT NULL,
    PRIMARY KEY (day, layer, expert)
);

-- Analytics: the user of a conversation's country (for volume by country), and indexes for the
-- time-range queries.
ALTER TABLE conversations ADD COLUMN country TEXT;
CREATE INDEX messages_channel_time ON messages (channel_id, created_at);
CREATE INDEX messages_time ON messages (created_at);
CREATE INDEX deliveries_channel_time ON deliveries (channel_id, updated_at);
CREATE INDEX policy_decisions_time ON policy_decisions (created_at);

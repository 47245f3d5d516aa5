-- Every policy decision that matched a rule, enforced or in shadow mode, for analytics and audit.
CREATE TABLE policy_decisions (
    id               BIGSERIAL PRIMARY KEY,
    message_id       BIGINT REFERENCES messages(id) ON DELETE CASCADE,
    conversation_id  BIGINT REFERENCES conversations(id) ON DELETE CASCADE,
    tenant_id        BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    stage            TEXT NOT NULL CHECK (stage IN ('input', 'output')),
    pack             TEXT NOT NULL,
    pack_version     INT NOT NULL,
    rule             TEXT NOT NULL,
    category         TEXT,
    action           TEXT NOT NULL,
    shadow           BOOLEAN NOT NULL,
    country          TEXT,
    classifier       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX policy_decisions_tenant_time ON policy_decisions (tenant_id, created_at);

-- How an outbound reply was made: standard, balanced (debated topic), balanced_regenerated,
-- policy_message (a pack's message, nothing generated).
ALTER TABLE messages ADD COLUMN prompt_mode TEXT;

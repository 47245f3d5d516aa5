-- Users whose data was erased (POST /admin/v1/privacy/delete-user). A message of theirs sent or
-- accepted before `erased_at` is never recorded or answered again: a turn in flight at the
-- erasure is cancelled, and a platform redelivery of an old message is dropped. New messages
-- (sent after the erasure) are served as from a new user. The user is named by a hash, as in the
-- audit log; rows older than the dedup window are pruned by the next erasure.
CREATE TABLE erasures (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   BIGINT REFERENCES tenants(id) ON DELETE CASCADE,   -- NULL: every tenant
    platform    TEXT NOT NULL CHECK (platform IN ('whatsapp', 'messenger', 'instagram')),
    user_hash   TEXT NOT NULL,                                    -- hex sha256 of 'platform:external_id'
    erased_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX erasures_user ON erasures (platform, user_hash);

-- Synthetic conversations for the analytics benchmark: $1 messages over the 30 days before $2
-- (a date), half inbound and half replies, in one tenant with three channels and messages/40
-- users. Replies carry latencies, tokens and a delivery state; 5% of inbound messages carry a
-- policy decision.
WITH t AS (
    INSERT INTO tenants (name) VALUES ('bench-' || md5(random()::text)) RETURNING id
), ch AS (
    INSERT INTO channels (tenant_id, platform, external_id, app_secret, verify_token, access_token)
    SELECT t.id, p, 'bench-' || p || '-' || t.id, 's', 'v', 'a' FROM t, unnest(ARRAY['whatsapp', 'messenger', 'instagram']) AS p
    RETURNING id, tenant_id
), chs AS (
    SELECT array_agg(id ORDER BY id) AS ids, min(tenant_id) AS tenant_id FROM ch
), u AS (
    INSERT INTO users (tenant_id, platform, external_id)
    SELECT chs.tenant_id, 'whatsapp', 'bench-user-' || g FROM chs, generate_series(1, greatest($1 / 40, 1)) AS g
    RETURNING id
)
INSERT INTO conversations (channel_id, user_id, country)
SELECT chs.ids[1 + (u.id % 3)], u.id, (ARRAY['US', 'FR', 'BR', 'IN', 'DE', 'MX'])[1 + (u.id % 6)] FROM u, chs;

-- Messages for the conversations of the newest bench tenant (see bench_seed.sql).
WITH convs AS (
    SELECT c.id, c.channel_id, row_number() OVER (ORDER BY c.id) - 1 AS n, count(*) OVER () AS total
    FROM conversations c JOIN channels ch ON ch.id = c.channel_id
    WHERE ch.tenant_id = (SELECT max(id) FROM tenants WHERE name LIKE 'bench-%')
), pairs AS (
    SELECT g, c.id AS conversation_id, c.channel_id,
           ($2::date - 30 + (g % 30)::int) + make_interval(secs => ((g * 7919) % 86400)::int) AS at
    FROM generate_series(0, $1 / 2 - 1) AS g JOIN convs c ON c.n = g % c.total
), ins AS (
    INSERT INTO messages (conversation_id, channel_id, direction, platform_message_id, kind, body, status, created_at)
    SELECT conversation_id, channel_id, 'in', 'bench-in-' || g, 'text', 'hello', 'answered', at FROM pairs
    RETURNING id, conversation_id, channel_id, created_at, platform_message_id
)
INSERT INTO messages (conversation_id, channel_id, direction, platform_message_id, kind, body, status, reply_to, part,
    tokens_in, tokens_out, queue_wait_ms, ttft_ms, generation_ms, send_ms, end_to_end_ms, prompt_mode, created_at)
SELECT conversation_id, channel_id, 'out', 'bench-out-' || id, 'text', 'hi', 'sent', id, 0,
       20 + id % 200, 5 + id % 120, id % 50, 40 + id % 400, 100 + id % 3000, 20 + id % 300, 200 + id % 4000,
       CASE WHEN id % 10 = 0 THEN 'balanced' ELSE 'standard' END, created_at + interval '2 seconds'
FROM ins;

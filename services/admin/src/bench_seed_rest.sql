-- Deliveries for every bench reply and policy decisions for 5% of bench inbound messages.
INSERT INTO deliveries (platform_message_id, channel_id, message_id, state, state_rank, error_code, error_title)
SELECT m.platform_message_id, m.channel_id, m.id, s.state, s.rank, CASE WHEN s.state = 'failed' THEN 131047 END,
       CASE WHEN s.state = 'failed' THEN 'Re-engagement message' END
FROM messages m, LATERAL (SELECT (ARRAY['sent', 'delivered', 'read', 'read', 'failed'])[1 + m.id % 5] AS state,
                                 (ARRAY[1, 2, 3, 3, 4])[1 + m.id % 5]::SMALLINT AS rank) s
WHERE m.direction = 'out' AND m.platform_message_id LIKE 'bench-out-%';
INSERT INTO policy_decisions (message_id, conversation_id, tenant_id, stage, pack, pack_version, rule, category, action, shadow, country, classifier, created_at)
SELECT m.id, m.conversation_id, ch.tenant_id, 'input', 'balanced-moderation', 1,
       (ARRAY['violent-crimes', 'debated', 'eu-multimodal'])[1 + m.id % 3], (ARRAY['S1', 'debated', NULL])[1 + m.id % 3],
       (ARRAY['refuse', 'balanced', 'blocked_feature'])[1 + m.id % 3], m.id % 7 = 0, c.country, 'rules', m.created_at
FROM messages m JOIN channels ch ON ch.id = m.channel_id JOIN conversations c ON c.id = m.conversation_id
WHERE m.direction = 'in' AND m.platform_message_id LIKE 'bench-in-%' AND m.id % 20 = 1;
INSERT INTO expert_usage (day, layer, expert, tokens)
SELECT $1::date - d, l, e, 1000 + (l * 31 + e * 17 + d) % 500 FROM generate_series(0, 29) d, generate_series(0, 7) l, generate_series(0, 15) e
ON CONFLICT DO NOTHING;
ANALYZE;

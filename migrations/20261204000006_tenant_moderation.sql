-- Which classifier decides a tenant's messages: the built-in one, the guard model, or the built-in
-- one first and the guard on what it lets through (herd_policies::tenant::Moderation).
-- NULL: the guard model when one is loaded, else the built-in classifier.
ALTER TABLE tenants ADD COLUMN moderation TEXT
    CHECK (moderation IN ('builtin', 'guard', 'builtin_then_guard'));

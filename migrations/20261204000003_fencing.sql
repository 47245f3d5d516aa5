-- A conversation's fencing token. Each worker that takes the conversation's lock takes the next
-- token; a reply is started, and an answered message's status written, only under the newest
-- token, so a worker that lost the lock (paused, cut off from Redis, taken for dead) cannot write
-- after its successor began. The token lives here, not in Redis, so it survives Redis losing data.
ALTER TABLE conversations ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;

-- Issue 21: busy_reply positions. The pool a chat waits for a seat in, so
-- that its place is counted in that pool's line; and the place each chat
-- was told, so that no later chat is told a number that a chat still
-- waiting ahead of it was told.
ALTER TABLE queue ADD COLUMN waiting_pool TEXT;
CREATE INDEX queue_waiting_pool ON queue (waiting_pool) WHERE waiting_pool IS NOT NULL;
ALTER TABLE busy_replies ADD COLUMN pool TEXT;
ALTER TABLE busy_replies ADD COLUMN position INTEGER;

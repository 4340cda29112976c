-- Issue 24: what measuring routing needs, kept per chat with its history
-- row (pruned with it; a close erases none of it). Each fact is set once,
-- the first time it is seen, and never overwritten:
--   assigned_at, assigned_agent (a name, or `#<id>`), assigned_by: the
--     chat's first assignment; 'assignd' for its own, 'other' when learned
--     from `chat.assigned` or reconciliation with no call of assignd's
--     to that agent;
--   first_reply_at, first_reply_agent: the first agent reply
--     (`message.chat.agent`).
-- `arrival` says where `arrived_at` comes from: 'decided' (the worker
-- decided the chat: its queue row's enqueue time, as before), 'queued' (a
-- fact came first: the enqueue time of the row waiting for a decision),
-- 'seen' (no row: when its first fact was seen, a chat that arrived before
-- assignd saw it). `simulate --history` replays decided chats only; the
-- report counts chats whose arrival is known.
ALTER TABLE chat_history ADD COLUMN arrival TEXT NOT NULL DEFAULT 'decided'
    CHECK (arrival IN ('decided', 'queued', 'seen'));
ALTER TABLE chat_history ADD COLUMN assigned_at INTEGER;
ALTER TABLE chat_history ADD COLUMN assigned_agent TEXT;
ALTER TABLE chat_history ADD COLUMN assigned_by TEXT
    CHECK (assigned_by IN ('assignd', 'other'));
ALTER TABLE chat_history ADD COLUMN first_reply_at INTEGER;
ALTER TABLE chat_history ADD COLUMN first_reply_agent TEXT;

-- Chats recorded before: their first assignment by assignd, from the
-- outcomes still kept. Their first reply is not known (`chat_answers`
-- keeps each agent's latest answer), so it stays empty.
UPDATE chat_history
   SET assigned_at = (SELECT o.at FROM outcomes o
                       WHERE o.chat_id = chat_history.chat_id AND o.result = 'assigned'
                       ORDER BY o.at, o.id LIMIT 1),
       assigned_agent = (SELECT o.agent FROM outcomes o
                          WHERE o.chat_id = chat_history.chat_id AND o.result = 'assigned'
                          ORDER BY o.at, o.id LIMIT 1),
       assigned_by = 'assignd'
 WHERE EXISTS (SELECT 1 FROM outcomes o
                WHERE o.chat_id = chat_history.chat_id AND o.result = 'assigned');

-- An agent's message that is assignd's own reply (a rule's `reply`) is not
-- an agent reply: the replies assignd sent to a chat are found by chat.
CREATE INDEX outbox_by_chat ON outbox (chat_id);

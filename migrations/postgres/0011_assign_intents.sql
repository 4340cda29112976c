-- Issue 21: an assignment call whose answer is not known. Written, with the
-- claim confirmed, before every `PUT /chats/assignee`; removed in the
-- transaction that records the answer. A row left here means the call may
-- have been applied: the seat stays taken, and the chat is read before
-- anything else is decided for it (a snapshot never outranks what assignd
-- itself did).
CREATE TABLE assign_intents (
    chat_id  BIGINT PRIMARY KEY,
    agent    TEXT    NOT NULL,
    agent_id BIGINT NOT NULL,
    rule     TEXT,
    pool     TEXT,
    route    TEXT,
    -- The queue row, or NULL for a reassignment hop (its follow-up).
    queue_id BIGINT,
    owner    TEXT    NOT NULL,
    at       BIGINT NOT NULL
);

-- A seat reserved for a chat that is open with another agent (a hop, a
-- hand-back, a reassignment) keeps that agent's seat counted too until the
-- call's answer is known: a failed move gives the chat back to them.
ALTER TABLE open_chats ADD COLUMN previous_agent TEXT;

-- Chats assigned through a pool with `reassign_after`: when to check
-- whether the assignee answered, and who has had the chat so far.
CREATE TABLE followups (
    chat_id     INTEGER PRIMARY KEY,
    pool        TEXT    NOT NULL,
    rule        TEXT,
    agent       TEXT    NOT NULL,     -- the current assignee
    hops        INTEGER NOT NULL DEFAULT 0,
    tried       TEXT    NOT NULL,     -- JSON array of the agents who had it
    due_at      INTEGER NOT NULL,
    answered_at INTEGER                -- set when an agent's answer is seen
);
CREATE INDEX followups_due ON followups (due_at);

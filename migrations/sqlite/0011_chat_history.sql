-- `simulate --history`: the chats this daemon really saw, as it first
-- decided them (arrival, snapshot, attrs, priority), and when each was seen
-- closed (the `chat.closed` webhook, or load reconciliation). The first
-- arrival of a chat wins. Pruned with the other history.
CREATE TABLE chat_history (
    chat_id    INTEGER PRIMARY KEY,
    arrived_at INTEGER NOT NULL,
    snapshot   TEXT,
    attrs      TEXT,
    priority   INTEGER NOT NULL DEFAULT 0,
    closed_at  INTEGER
);
CREATE INDEX chat_history_arrived ON chat_history (arrived_at);

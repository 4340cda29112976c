-- `simulate --history`: the chats this daemon really saw, as it first
-- decided them (arrival, snapshot, attrs, priority), and when each was seen
-- closed (the `chat.closed` webhook, or load reconciliation). The first
-- arrival of a chat wins. Pruned with the other history.
CREATE TABLE chat_history (
    chat_id    BIGINT PRIMARY KEY,
    arrived_at BIGINT NOT NULL,
    snapshot   TEXT,
    attrs      TEXT,
    priority   BIGINT NOT NULL DEFAULT 0,
    closed_at  BIGINT
);
CREATE INDEX chat_history_arrived ON chat_history (arrived_at);

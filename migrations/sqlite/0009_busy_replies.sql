-- Issue 14: a pool's `busy_reply` goes to a chat once. A chat that got one
-- is remembered here (written with the reply's outbox row, fenced by the
-- claim); rows are pruned with the other history.
CREATE TABLE busy_replies (
    chat_id INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL
);

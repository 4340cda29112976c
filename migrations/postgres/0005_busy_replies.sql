-- Issue 14: a pool's `busy_reply` goes to a chat once. A chat that got one
-- is remembered here (written with the reply's outbox row, fenced by the
-- claim); rows are pruned with the other history.
CREATE TABLE busy_replies (
    chat_id BIGINT PRIMARY KEY,
    at      BIGINT NOT NULL
);

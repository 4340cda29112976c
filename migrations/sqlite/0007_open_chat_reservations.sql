-- Issue 14: reconciliation merges HelpCrunch's open chats into ours instead
-- of replacing them. A seat reserved by a decision whose PUT is still in
-- flight (`reserved = 1`, written under the routing lock on PostgreSQL)
-- and a chat opened after a reconciliation's search started stay counted;
-- a chat closed after it started stays closed (`closed_chats`).
ALTER TABLE open_chats ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;

CREATE TABLE closed_chats (
    chat_id   INTEGER PRIMARY KEY,
    closed_at INTEGER NOT NULL
);

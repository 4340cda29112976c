-- Open chats by chat id rather than counters per agent: closing or
-- reassigning a chat is then exact and idempotent, and counts cannot drift.
CREATE TABLE open_chats (
    chat_id     INTEGER PRIMARY KEY,
    agent       TEXT    NOT NULL,
    assigned_at INTEGER NOT NULL
);
CREATE INDEX open_chats_by_agent ON open_chats (agent);

-- Smooth weighted round-robin: each member's current weight per pool.
CREATE TABLE wrr_state (
    pool    TEXT    NOT NULL,
    agent   TEXT    NOT NULL,
    current INTEGER NOT NULL,
    PRIMARY KEY (pool, agent)
);

-- For `sticky`: who last had a chat of each customer.
CREATE TABLE customer_agent (
    customer TEXT PRIMARY KEY,   -- "id:<customer id>" or "email:<address>"
    agent    TEXT    NOT NULL,
    at       INTEGER NOT NULL
);

-- `assignd agent away NAME [--until]`; a row means away.
CREATE TABLE agent_away (
    agent TEXT PRIMARY KEY,
    until INTEGER,               -- NULL: until marked back
    since INTEGER NOT NULL
);

-- Notes and replies to post after an assignment. They are sent on their
-- own, so a failed note never undoes or repeats the assignment.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id         INTEGER NOT NULL,
    queue_id        INTEGER,
    kind            TEXT    NOT NULL CHECK (kind IN ('private', 'message')),
    agent_id        INTEGER,
    text            TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';

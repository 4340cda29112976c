-- Shadow mode and experiments (SPEC §14): an outcome may be `shadow` (what
-- assignd would have done, nothing written to HelpCrunch), and every
-- outcome records its arm. SQLite cannot change a CHECK constraint in
-- place: the table is rebuilt, its rows and ids kept.
CREATE TABLE outcomes_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id     INTEGER NOT NULL,
    queue_id    INTEGER,
    at          INTEGER NOT NULL,
    rule        TEXT,
    pool        TEXT,
    strategy    TEXT,
    agent       TEXT,
    agent_id    INTEGER,
    result      TEXT NOT NULL
                CHECK (result IN ('assigned', 'skipped', 'no_match', 'no_agent', 'failed', 'retry', 'shadow')),
    http_status INTEGER,
    error_code  TEXT,
    latency_ms  REAL,
    reason      TEXT,
    route       TEXT CHECK (route IN ('escalated', 'handed_back', 'reassigned')),
    arm         TEXT NOT NULL DEFAULT 'a' CHECK (arm IN ('a', 'b', 'shadow', 'left'))
);
INSERT INTO outcomes_new (id, chat_id, queue_id, at, rule, pool, strategy, agent, agent_id,
                          result, http_status, error_code, latency_ms, reason, route)
    SELECT id, chat_id, queue_id, at, rule, pool, strategy, agent, agent_id,
           result, http_status, error_code, latency_ms, reason, route FROM outcomes;
DROP TABLE outcomes;
ALTER TABLE outcomes_new RENAME TO outcomes;
CREATE INDEX outcomes_by_time ON outcomes (at);
CREATE INDEX outcomes_by_chat ON outcomes (chat_id);
CREATE INDEX outcomes_by_queue ON outcomes (queue_id);

-- Each chat's arm, taken at its first decision and kept for good: a
-- change of share or rules never moves a chat between arms.
CREATE TABLE chat_arms (
    chat_id INTEGER PRIMARY KEY,
    arm     TEXT    NOT NULL CHECK (arm IN ('a', 'b', 'left')),
    at      INTEGER NOT NULL
);
CREATE INDEX chat_arms_by_time ON chat_arms (at);

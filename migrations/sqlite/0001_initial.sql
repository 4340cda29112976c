-- Times are Unix milliseconds (UTC). Defaults use julianday() so that any
-- SQLite version a producer's shell may have can fill them in.

CREATE TABLE queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id         INTEGER NOT NULL,
    attrs           TEXT,                -- JSON object, for attr.* matches
    snapshot        TEXT,                -- JSON chat object, saves a GET
    priority        INTEGER NOT NULL DEFAULT 0,   -- higher first
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,   -- not before this time
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_error      TEXT,                -- why it failed, or why it waits
    enqueued_at     INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    updated_at      INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);

-- At most one active row per chat. The trigger makes a producer's repeated
-- INSERT a silent no-op instead of an error; the index is the guarantee.
CREATE UNIQUE INDEX queue_one_active_per_chat ON queue (chat_id) WHERE state IN ('pending', 'leased');

CREATE TRIGGER queue_ignore_duplicate_active
BEFORE INSERT ON queue
WHEN COALESCE(NEW.state, 'pending') IN ('pending', 'leased')
 AND EXISTS (SELECT 1 FROM queue WHERE chat_id = NEW.chat_id AND state IN ('pending', 'leased'))
BEGIN
    SELECT RAISE(IGNORE);
END;

CREATE INDEX queue_claimable ON queue (priority DESC, id) WHERE state = 'pending';
CREATE INDEX queue_leases ON queue (lease_until) WHERE state = 'leased';
CREATE INDEX queue_finished ON queue (updated_at) WHERE state = 'done';

CREATE TABLE outcomes (
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
                CHECK (result IN ('assigned', 'skipped', 'no_match', 'no_agent', 'failed', 'retry')),
    http_status INTEGER,
    error_code  TEXT,
    latency_ms  REAL,
    reason      TEXT
);

CREATE INDEX outcomes_by_time ON outcomes (at);
CREATE INDEX outcomes_by_chat ON outcomes (chat_id);

-- Round-robin: who got each pool's last chat, by name.
CREATE TABLE rr_state (
    pool       TEXT PRIMARY KEY,
    last_agent TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- What the running daemon reports about itself, for `assignd status`.
CREATE TABLE daemon_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The daemons on this database, for the guard and `assignd status`: each
-- running `assignd run` keeps its row's heartbeat fresh.
CREATE TABLE daemons (
    owner        TEXT PRIMARY KEY,    -- the lease owner key, `<pid>-<random>`
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

-- Named leases with a fencing epoch: `daemon` (SQLite: the one daemon that
-- works this file) and `leader` (PostgreSQL: the daemon that runs the
-- periodic jobs). The epoch grows each time the holder changes.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    since      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
